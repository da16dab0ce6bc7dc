//! The SQLite store: schema, id allocation, every operation, batches and group commits.
//!
//! - WAL, `busy_timeout`, foreign keys on; every write runs in an IMMEDIATE transaction, so
//!   writers queue on SQLite's lock instead of failing half-way with `SQLITE_BUSY`.
//! - Ids look like `hl-42`. The number comes from `UPDATE counters SET next = next + 1 …
//!   RETURNING` inside the same transaction that inserts the issue: the write lock makes
//!   it unique across any number of connections, processes and restarts, and a rolled-back
//!   insert gives its number back with everything else. Never `MAX()+1`, never a counter in
//!   memory.
//! - Durability: `synchronous=NORMAL` by default (a commit survives a process crash; the last
//!   commits may be lost on power loss), `FULL` with [`Durability::Full`]. A reply is sent
//!   only after the commit returned, so "acknowledged" always means committed.
//! - A batch applies inside a savepoint: all of its operations or none. A group commit runs
//!   many independent requests in one transaction, each in its own savepoint, so one
//!   failing request rolls back only itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::{ApiError, Code};
use crate::model::*;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// The id prefix of new issues.
pub const ID_PREFIX: &str = "hl";

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a crash of the process, not necessarily of the machine.
    Normal,
    /// `synchronous=FULL`: every commit is fsynced.
    Full,
}

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Commit durability.
    pub durability: Durability,
    /// How long a connection waits for SQLite's lock before `busy`.
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS issues (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('open', 'in_progress', 'closed')),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
    assignee TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    closed_at INTEGER,
    close_reason TEXT
);
CREATE INDEX IF NOT EXISTS issues_status_priority ON issues (status, priority, seq);
CREATE INDEX IF NOT EXISTS issues_assignee ON issues (assignee, seq);
CREATE INDEX IF NOT EXISTS issues_status_seq ON issues (status, seq);
CREATE TABLE IF NOT EXISTS labels (
    issue_id TEXT NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (issue_id, label)
);
CREATE INDEX IF NOT EXISTS labels_label ON labels (label);
CREATE TABLE IF NOT EXISTS deps (
    issue TEXT NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('blocks', 'related', 'parent-child')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issue, depends_on, kind)
);
CREATE INDEX IF NOT EXISTS deps_depends_on ON deps (depends_on);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    issue_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn pragmas(conn: &Connection, cfg: &StoreConfig) -> Result<(), ApiError> {
    conn.busy_timeout(cfg.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let sync = match cfg.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(())
}

/// The canonical absolute path of a database file (its directory must exist); this is what
/// the hello compares, so two spellings of one file are the same database.
pub fn canonical_db_path(path: &Path) -> Result<PathBuf, ApiError> {
    let name = path.file_name().ok_or_else(|| {
        ApiError::invalid(format!(
            "database path {:?} has no file name",
            path.display().to_string()
        ))
    })?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let dir = dir.canonicalize().map_err(|e| {
        ApiError::invalid(format!(
            "database directory {:?}: {e}",
            dir.display().to_string()
        ))
    })?;
    Ok(dir.join(name))
}

/// A read-write connection: what the daemon's single writer and every direct-mode client use.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A read-only connection for the daemon's readers.
pub struct ReadStore {
    conn: Connection,
}

impl Store {
    /// Opens (and on first use creates) the database at `path`.
    pub fn open(path: &Path, cfg: &StoreConfig) -> Result<Store, ApiError> {
        let path = canonical_db_path(path)?;
        let conn = Connection::open(&path)
            .map_err(|e| ApiError::internal(format!("opening {}: {e}", path.display())))?;
        pragmas(&conn, cfg)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ApiError::internal(format!(
                "{}: journal mode is {mode}, expected wal",
                path.display()
            )));
        }
        let mut store = Store { conn, path };
        store.init_schema()?;
        Ok(store)
    }

    /// Sets how long this connection waits for SQLite's write lock before `busy`.
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), ApiError> {
        self.conn.busy_timeout(timeout)?;
        Ok(())
    }

    /// Takes the WAL checkpoint off the commit: SQLite's automatic checkpoint (run inside
    /// whichever commit pushes the log past 1,000 pages, and taking milliseconds) is turned
    /// off for this connection; instead `due` is set when a commit leaves `pages` pages or
    /// more in the log, and the owner calls [`Store::checkpoint`] where a pause does no harm.
    pub fn defer_checkpoints(&mut self, pages: u32, due: Arc<AtomicBool>) -> Result<(), ApiError> {
        let pages = i32::try_from(pages).unwrap_or(i32::MAX);
        self.conn
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: i32| {
                if n >= pages {
                    due.store(true, Ordering::Release);
                }
                Ok(())
            }))?;
        Ok(())
    }

    /// Runs a PASSIVE checkpoint (it never waits for readers or writers) and returns how
    /// many pages the log holds and how many of them are now in the database file.
    pub fn checkpoint(&mut self) -> Result<(i64, i64), ApiError> {
        let (log, done) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?;
        Ok((log, done))
    }

    /// The canonical path of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init_schema(&mut self) -> Result<(), ApiError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            None => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO counters (name, next) VALUES ('issue', 1)",
                    [],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(ApiError::internal(format!(
                    "{}: schema version {v}, this build reads {SCHEMA_VERSION}",
                    self.path.display()
                )))
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Applies one operation in its own IMMEDIATE transaction (reads need none).
    pub fn apply(&mut self, op: &Op) -> Result<Reply, ApiError> {
        if !op.is_write() {
            return read(&self.conn, op);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let reply = apply_in(&tx, op, 0)?;
        check_reply_size(&reply)?; // an unsendable reply must not leave a commit behind
        tx.commit()?;
        Ok(reply)
    }

    /// Applies many independent write operations in ONE transaction (a group commit), each
    /// inside its own savepoint so a failing one rolls back only itself. The per-operation
    /// results are valid only if the outer `Ok` is returned: an `Err` means the commit
    /// itself failed and nothing was applied.
    pub fn apply_group(&mut self, ops: &[&Op]) -> Result<Vec<Result<Reply, ApiError>>, ApiError> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let sp = tx.savepoint()?;
            match apply_in(&sp, op, 0).and_then(|r| check_reply_size(&r).map(|()| r)) {
                Ok(reply) => {
                    sp.commit()?;
                    results.push(Ok(reply));
                }
                Err(e) => {
                    drop(sp); // rolls back to the savepoint
                    results.push(Err(e));
                }
            }
        }
        tx.commit()?;
        Ok(results)
    }
}

impl ReadStore {
    /// Opens a read-only connection to an existing database (created by [`Store::open`]).
    pub fn open(path: &Path, cfg: &StoreConfig) -> Result<ReadStore, ApiError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| ApiError::internal(format!("opening {} read-only: {e}", path.display())))?;
        conn.busy_timeout(cfg.busy_timeout)?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(ReadStore { conn })
    }

    /// Answers a read operation (`ping`, `show`, `list`, `ready`, `stats`).
    pub fn read(&self, op: &Op) -> Result<Reply, ApiError> {
        if op.is_write() {
            return Err(ApiError::internal(format!(
                "{} is a write; a reader cannot apply it",
                op.name()
            )));
        }
        // One read transaction so a multi-statement answer is a consistent snapshot.
        self.conn.execute_batch("BEGIN")?;
        let r = read(&self.conn, op);
        let end = self.conn.execute_batch("COMMIT");
        let reply = r?;
        end?;
        Ok(reply)
    }
}

/// The largest reply a write may produce: a frame less room for the response envelope.
pub const MAX_REPLY_BYTES: usize = crate::proto::MAX_FRAME_BYTES as usize - 1024;

/// The most bytes one issue can take in JSON: every text field at its cap, each byte
/// escaped to six (`\u0000`), plus room for the field names, numbers and punctuation.
const MAX_ISSUE_JSON_BYTES: usize =
    6 * (2 * MAX_TITLE_BYTES + MAX_DESCRIPTION_BYTES + (MAX_LABELS + 2) * MAX_NAME_BYTES) + 1024;
// A reply of one issue (or one edge) always fits a frame, so only batches need measuring.
const _: () = assert!(MAX_ISSUE_JSON_BYTES + 1024 <= MAX_REPLY_BYTES);

/// Refuses a write whose reply could not be sent in one frame, before it commits: an error
/// reply must always mean nothing was applied. Only a batch can be that large (see
/// [`MAX_ISSUE_JSON_BYTES`]); other replies are not serialized here.
fn check_reply_size(reply: &Reply) -> Result<(), ApiError> {
    if !matches!(reply, Reply::Batch { .. }) {
        return Ok(());
    }
    let len = serde_json::to_vec(reply)
        .map_err(|e| ApiError::internal(format!("encoding the reply: {e}")))?
        .len();
    if len > MAX_REPLY_BYTES {
        return Err(ApiError::new(
            Code::TooLarge,
            format!(
                "the reply would be {len} bytes, over the {MAX_REPLY_BYTES}-byte limit; nothing was applied: send fewer operations per batch"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Validation

fn check_text(field: &str, v: &str, max: usize, allow_empty: bool) -> Result<(), ApiError> {
    if !allow_empty && v.trim().is_empty() {
        return Err(ApiError::invalid(format!(
            "{field} is empty: expected some text"
        )));
    }
    if v.len() > max {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes: expected at most {max}",
            v.len()
        )));
    }
    Ok(())
}

fn check_title(v: &str) -> Result<(), ApiError> {
    check_text("title", v, MAX_TITLE_BYTES, false)?;
    if v.contains(['\n', '\r']) {
        return Err(ApiError::invalid(
            "title contains a line break: expected one line",
        ));
    }
    Ok(())
}

fn check_priority(p: u8) -> Result<(), ApiError> {
    if p > 4 {
        return Err(ApiError::invalid(format!(
            "priority {p}: expected 0 (most urgent) to 4"
        )));
    }
    Ok(())
}

fn check_name(field: &str, v: &str) -> Result<(), ApiError> {
    check_text(field, v, MAX_NAME_BYTES, false)?;
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} {v:?} contains a control character"
        )));
    }
    Ok(())
}

fn clean_labels(labels: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::with_capacity(labels.len());
    for l in labels {
        check_name("label", l)?;
        out.push(l.trim().to_string());
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_LABELS {
        return Err(ApiError::invalid(format!(
            "{} labels: expected at most {MAX_LABELS}",
            out.len()
        )));
    }
    Ok(out)
}

fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::invalid(format!(
            "limit 0: expected 1 to {MAX_LIMIT}"
        ))),
        Some(n) if n > MAX_LIMIT => Err(ApiError::invalid(format!(
            "limit {n}: expected 1 to {MAX_LIMIT}"
        ))),
        Some(n) => Ok(n),
    }
}

// ---------------------------------------------------------------------------------------
// Reads

const ISSUE_COLUMNS: &str =
    "id, title, description, status, priority, assignee, created_at, updated_at, closed_at, close_reason";

fn issue_from_row(conn: &Connection, r: &rusqlite::Row<'_>) -> rusqlite::Result<Issue> {
    let id: String = r.get(0)?;
    let status: String = r.get(3)?;
    let mut labels_stmt =
        conn.prepare_cached("SELECT label FROM labels WHERE issue_id = ?1 ORDER BY label")?;
    let labels = labels_stmt
        .query_map([&id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Issue {
        title: r.get(1)?,
        description: r.get(2)?,
        status: Status::parse(&status).unwrap_or(Status::Open),
        priority: r.get(4)?,
        assignee: r.get(5)?,
        labels,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        closed_at: r.get(8)?,
        close_reason: r.get(9)?,
        id,
    })
}

fn get_issue(conn: &Connection, id: &str) -> Result<Issue, ApiError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE id = ?1"))?;
    stmt.query_row([id], |r| issue_from_row(conn, r))
        .optional()?
        .ok_or_else(|| ApiError::not_found(id))
}

fn deps_of(conn: &Connection, id: &str) -> Result<Vec<Dep>, ApiError> {
    let mut stmt = conn.prepare_cached(
        "SELECT issue, depends_on, kind FROM deps WHERE issue = ?1 OR depends_on = ?1 ORDER BY issue, depends_on, kind",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            let kind: String = r.get(2)?;
            Ok(Dep {
                issue: r.get(0)?,
                depends_on: r.get(1)?,
                kind: DepKind::parse(&kind).unwrap_or(DepKind::Related),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn query_issues(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Issue>, ApiError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(args, |r| issue_from_row(conn, r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

const READY_WHERE: &str = "i.status = 'open' AND NOT EXISTS (
    SELECT 1 FROM deps d JOIN issues b ON b.id = d.depends_on
    WHERE d.issue = i.id AND d.kind = 'blocks' AND b.status != 'closed')";

fn read(conn: &Connection, op: &Op) -> Result<Reply, ApiError> {
    match op {
        Op::Ping {} => Ok(Reply::Pong { pong: true }),
        Op::Show { id } => Ok(Reply::Detail {
            issue: get_issue(conn, id)?,
            deps: deps_of(conn, id)?,
        }),
        Op::List(a) => {
            let n = limit(a.limit)?;
            if let Some(p) = a.priority {
                check_priority(p)?;
            }
            // Only the filters given appear in the SQL, so SQLite can use the index of the
            // one that narrows most (a label lookup starts from `labels_label`). At most 16
            // distinct statements, all cached.
            let status = a.status.map(|s| s.as_str());
            let mut clauses: Vec<&str> = Vec::new();
            let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
            let mut from = "issues i".to_string();
            if let Some(label) = &a.label {
                from = "labels l JOIN issues i ON i.id = l.issue_id".into();
                clauses.push("l.label = ?");
                args.push(label);
            }
            if let Some(st) = &status {
                clauses.push("i.status = ?");
                args.push(st);
            }
            if let Some(who) = &a.assignee {
                clauses.push("i.assignee = ?");
                args.push(who);
            }
            if let Some(p) = &a.priority {
                clauses.push("i.priority = ?");
                args.push(p);
            }
            let filter = if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            };
            args.push(&n);
            let columns = ISSUE_COLUMNS
                .split(", ")
                .map(|c| format!("i.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT {columns} FROM {from} {filter} ORDER BY i.seq DESC LIMIT ?");
            Ok(Reply::Issues {
                issues: query_issues(conn, &sql, &args)?,
            })
        }
        Op::Ready { limit: l } => {
            let n = limit(*l)?;
            let sql = format!("SELECT {ISSUE_COLUMNS} FROM issues i WHERE {READY_WHERE} ORDER BY priority, seq LIMIT ?1");
            Ok(Reply::Issues {
                issues: query_issues(conn, &sql, &[&n])?,
            })
        }
        Op::Stats {} => {
            let count = |sql: &str| -> Result<u64, ApiError> {
                Ok(conn
                    .prepare_cached(sql)?
                    .query_row([], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(Reply::Stats {
                stats: Stats {
                    issues: count("SELECT COUNT(*) FROM issues")?,
                    open: count("SELECT COUNT(*) FROM issues WHERE status = 'open'")?,
                    in_progress: count("SELECT COUNT(*) FROM issues WHERE status = 'in_progress'")?,
                    closed: count("SELECT COUNT(*) FROM issues WHERE status = 'closed'")?,
                    deps: count("SELECT COUNT(*) FROM deps")?,
                    events: count("SELECT COUNT(*) FROM events")?,
                    ready: count(&format!(
                        "SELECT COUNT(*) FROM issues i WHERE {READY_WHERE}"
                    ))?,
                },
            })
        }
        other => Err(ApiError::internal(format!(
            "{} is not a read",
            other.name()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Writes (always inside a transaction or savepoint the caller owns)

fn event(
    conn: &Connection,
    issue: &str,
    kind: &str,
    detail: serde_json::Value,
    at: i64,
) -> Result<(), ApiError> {
    conn.prepare_cached("INSERT INTO events (issue_id, kind, detail, at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![issue, kind, detail.to_string(), at])?;
    Ok(())
}

fn set_labels(conn: &Connection, id: &str, labels: &[String]) -> Result<(), ApiError> {
    conn.prepare_cached("DELETE FROM labels WHERE issue_id = ?1")?
        .execute([id])?;
    insert_labels(conn, id, labels)
}

/// Adds labels to an issue that has none of them yet (a new one, or after `set_labels`
/// cleared them).
fn insert_labels(conn: &Connection, id: &str, labels: &[String]) -> Result<(), ApiError> {
    let mut ins = conn.prepare_cached("INSERT INTO labels (issue_id, label) VALUES (?1, ?2)")?;
    for l in labels {
        ins.execute(params![id, l])?;
    }
    Ok(())
}

fn create(conn: &Connection, a: &CreateArgs) -> Result<Reply, ApiError> {
    check_title(&a.title)?;
    check_text("description", &a.description, MAX_DESCRIPTION_BYTES, true)?;
    let priority = a.priority.unwrap_or(2);
    check_priority(priority)?;
    if let Some(who) = &a.assignee {
        check_name("assignee", who)?;
    }
    let labels = clean_labels(&a.labels)?;
    let n: i64 = conn
        .prepare_cached(
            "UPDATE counters SET next = next + 1 WHERE name = 'issue' RETURNING next - 1",
        )?
        .query_row([], |r| r.get(0))?;
    let id = format!("{ID_PREFIX}-{n}");
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO issues (id, seq, title, description, status, priority, assignee, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?7)",
    )?
    .execute(params![id, n, a.title, a.description, priority, a.assignee, now])?;
    insert_labels(conn, &id, &labels)?;
    event(
        conn,
        &id,
        "created",
        serde_json::json!({"title": a.title}),
        now,
    )?;
    // Exactly the row just inserted (a test compares it with `show`): no need to read it.
    Ok(Reply::Issue {
        issue: Issue {
            id,
            title: a.title.clone(),
            description: a.description.clone(),
            status: Status::Open,
            priority,
            assignee: a.assignee.clone(),
            labels,
            created_at: now,
            updated_at: now,
            closed_at: None,
            close_reason: None,
        },
    })
}

fn update(conn: &Connection, a: &UpdateArgs) -> Result<Reply, ApiError> {
    let before = get_issue(conn, &a.id)?;
    let mut after = before.clone();
    if let Some(t) = &a.title {
        check_title(t)?;
        after.title = t.clone();
    }
    if let Some(d) = &a.description {
        check_text("description", d, MAX_DESCRIPTION_BYTES, true)?;
        after.description = d.clone();
    }
    if let Some(p) = a.priority {
        check_priority(p)?;
        after.priority = p;
    }
    if let Some(who) = &a.assignee {
        if let Some(w) = who {
            check_name("assignee", w)?;
        }
        after.assignee = who.clone();
    }
    if let Some(l) = &a.labels {
        after.labels = clean_labels(l)?;
    }
    let now = now_ms();
    if let Some(s) = a.status {
        if s != before.status {
            after.status = s;
            if s == Status::Closed {
                after.closed_at = Some(now);
            } else {
                after.closed_at = None;
                after.close_reason = None;
            }
        }
    }
    write_issue(conn, &before, after, now)
}

/// Stores `after` if it differs from `before`, with an event naming what changed.
fn write_issue(
    conn: &Connection,
    before: &Issue,
    mut after: Issue,
    now: i64,
) -> Result<Reply, ApiError> {
    if after == *before {
        return Ok(Reply::Issue { issue: after });
    }
    after.updated_at = now;
    conn.prepare_cached(
        "UPDATE issues SET title = ?2, description = ?3, status = ?4, priority = ?5, assignee = ?6,
            updated_at = ?7, closed_at = ?8, close_reason = ?9 WHERE id = ?1",
    )?
    .execute(params![
        after.id,
        after.title,
        after.description,
        after.status.as_str(),
        after.priority,
        after.assignee,
        after.updated_at,
        after.closed_at,
        after.close_reason
    ])?;
    if after.labels != before.labels {
        set_labels(conn, &after.id, &after.labels)?;
    }
    let mut changed = serde_json::Map::new();
    let b = serde_json::to_value(before).map_err(|e| ApiError::internal(e.to_string()))?;
    let a = serde_json::to_value(&after).map_err(|e| ApiError::internal(e.to_string()))?;
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (k, v) in a {
            if k != "updated_at" && b.get(k) != Some(v) {
                changed.insert(k.clone(), v.clone());
            }
        }
    }
    let kind = if after.status == Status::Closed && before.status != Status::Closed {
        "closed"
    } else {
        "updated"
    };
    event(
        conn,
        &after.id,
        kind,
        serde_json::Value::Object(changed),
        now,
    )?;
    Ok(Reply::Issue { issue: after })
}

fn close(conn: &Connection, id: &str, reason: &Option<String>) -> Result<Reply, ApiError> {
    if let Some(r) = reason {
        check_text("reason", r, MAX_TITLE_BYTES, true)?;
    }
    let before = get_issue(conn, id)?;
    if before.status == Status::Closed {
        // Closing twice is harmless: the first close stands.
        return Ok(Reply::Issue { issue: before });
    }
    let now = now_ms();
    let mut after = before.clone();
    after.status = Status::Closed;
    after.closed_at = Some(now);
    after.close_reason = reason.clone();
    write_issue(conn, &before, after, now)
}

/// Whether `from` reaches `to` by following `blocks` edges (issue → depends_on).
fn blocks_path(conn: &Connection, from: &str, to: &str) -> Result<bool, ApiError> {
    let found: Option<i64> = conn
        .prepare_cached(
            "WITH RECURSIVE reach(id) AS (
                SELECT ?1 UNION
                SELECT d.depends_on FROM deps d JOIN reach r ON d.issue = r.id WHERE d.kind = 'blocks')
             SELECT 1 FROM reach WHERE id = ?2 LIMIT 1",
        )?
        .query_row([from, to], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

fn dep_add(conn: &Connection, d: &Dep) -> Result<Reply, ApiError> {
    if d.issue == d.depends_on {
        return Err(ApiError::new(
            Code::Conflict,
            format!("{} cannot depend on itself", d.issue),
        ));
    }
    get_issue(conn, &d.issue)?;
    get_issue(conn, &d.depends_on)?;
    if d.kind == DepKind::Blocks && blocks_path(conn, &d.depends_on, &d.issue)? {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "{} blocks {} would close a cycle: {} already depends on {} through blockers",
                d.depends_on, d.issue, d.depends_on, d.issue
            ),
        ));
    }
    let now = now_ms();
    let added = conn
        .prepare_cached("INSERT OR IGNORE INTO deps (issue, depends_on, kind, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![d.issue, d.depends_on, d.kind.as_str(), now])?;
    if added > 0 {
        event(
            conn,
            &d.issue,
            "dep_added",
            serde_json::json!({"depends_on": d.depends_on, "kind": d.kind}),
            now,
        )?;
    }
    Ok(Reply::Dep { dep: d.clone() })
}

fn dep_remove(conn: &Connection, d: &Dep) -> Result<Reply, ApiError> {
    let removed = conn
        .prepare_cached("DELETE FROM deps WHERE issue = ?1 AND depends_on = ?2 AND kind = ?3")?
        .execute(params![d.issue, d.depends_on, d.kind.as_str()])?;
    if removed == 0 {
        return Err(ApiError::new(
            Code::NotFound,
            format!(
                "no {} dependency of {} on {}",
                d.kind.as_str(),
                d.issue,
                d.depends_on
            ),
        ));
    }
    event(
        conn,
        &d.issue,
        "dep_removed",
        serde_json::json!({"depends_on": d.depends_on, "kind": d.kind}),
        now_ms(),
    )?;
    Ok(Reply::Dep { dep: d.clone() })
}

/// Applies `op` on a connection that is inside a transaction owned by the caller. `depth`
/// is the batch nesting (a batch inside a batch is refused).
fn apply_in(conn: &Connection, op: &Op, depth: usize) -> Result<Reply, ApiError> {
    match op {
        Op::Create(a) => create(conn, a),
        Op::Update(a) => update(conn, a),
        Op::Close { id, reason } => close(conn, id, reason),
        Op::DepAdd(d) => dep_add(conn, d),
        Op::DepRemove(d) => dep_remove(conn, d),
        Op::Batch { ops } => {
            if depth > 0 {
                return Err(ApiError::new(
                    Code::BadRequest,
                    "a batch cannot contain a batch",
                ));
            }
            if ops.len() > MAX_BATCH_OPS {
                return Err(ApiError::new(
                    Code::TooLarge,
                    format!(
                        "batch of {} operations: expected at most {MAX_BATCH_OPS}",
                        ops.len()
                    ),
                ));
            }
            if let Some(i) = ops.iter().position(|o| matches!(o, Op::Batch { .. })) {
                return Err(ApiError {
                    code: Code::BadRequest,
                    message: format!("operation {i} is a batch: batches cannot be nested"),
                    index: Some(i),
                });
            }
            // The whole batch runs in a savepoint: on the first failure everything it did is
            // rolled back, whatever the caller does with the error.
            conn.execute_batch("SAVEPOINT batch")?;
            let mut results = Vec::with_capacity(ops.len());
            for (i, o) in ops.iter().enumerate() {
                match apply_in(conn, o, depth + 1) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        conn.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                        return Err(ApiError {
                            code: Code::BatchFailed,
                            message: format!(
                                "operation {i} ({}) failed, nothing was applied: {e}",
                                o.name()
                            ),
                            index: Some(i),
                        });
                    }
                }
            }
            conn.execute_batch("RELEASE batch")?;
            Ok(Reply::Batch { results })
        }
        read_op => read(conn, read_op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("issues.db"), &StoreConfig::default()).unwrap();
        (dir, s)
    }

    fn create_op(title: &str) -> Op {
        Op::Create(CreateArgs {
            title: title.into(),
            ..CreateArgs::default()
        })
    }

    fn issue(r: Reply) -> Issue {
        match r {
            Reply::Issue { issue } => issue,
            other => panic!("{other:?}"),
        }
    }

    fn ids(r: Reply) -> Vec<String> {
        match r {
            Reply::Issues { issues } => issues.into_iter().map(|i| i.id).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_create_replies_exactly_what_show_reads_back() {
        let (_d, mut s) = store();
        for args in [
            CreateArgs {
                title: "plain".into(),
                ..CreateArgs::default()
            },
            CreateArgs {
                title: "full \u{e9}".into(),
                description: "two\nlines".into(),
                priority: Some(0),
                assignee: Some("agent-7".into()),
                labels: vec![" zeta".into(), "Alpha".into(), "beta".into(), "zeta".into()],
            },
        ] {
            let created = issue(s.apply(&Op::Create(args)).unwrap());
            let shown = match s
                .apply(&Op::Show {
                    id: created.id.clone(),
                })
                .unwrap()
            {
                Reply::Detail { issue, .. } => issue,
                other => panic!("{other:?}"),
            };
            assert_eq!(created, shown);
        }
    }

    #[test]
    fn ids_count_up_and_survive_reopening() {
        let (dir, mut s) = store();
        assert_eq!(issue(s.apply(&create_op("a")).unwrap()).id, "hl-1");
        assert_eq!(issue(s.apply(&create_op("b")).unwrap()).id, "hl-2");
        drop(s);
        let mut s = Store::open(&dir.path().join("issues.db"), &StoreConfig::default()).unwrap();
        assert_eq!(issue(s.apply(&create_op("c")).unwrap()).id, "hl-3");
        // A failed batch gives its numbers back with everything else.
        let bad = Op::Batch {
            ops: vec![create_op("d"), create_op("")],
        };
        let e = s.apply(&bad).unwrap_err();
        assert_eq!((e.code, e.index), (Code::BatchFailed, Some(1)));
        assert!(e.message.contains("title is empty"), "{e}");
        assert_eq!(issue(s.apply(&create_op("e")).unwrap()).id, "hl-4");
    }

    #[test]
    fn fields_are_validated_with_the_value_named() {
        let (_d, mut s) = store();
        for (op, needle) in [
            (create_op(" "), "title is empty"),
            (create_op("two\nlines"), "line break"),
            (
                create_op(&"x".repeat(501)),
                "title is 501 bytes: expected at most 500",
            ),
            (
                Op::Create(CreateArgs {
                    title: "t".into(),
                    priority: Some(7),
                    ..CreateArgs::default()
                }),
                "priority 7: expected 0 (most urgent) to 4",
            ),
            (
                Op::Create(CreateArgs {
                    title: "t".into(),
                    labels: vec!["".into()],
                    ..CreateArgs::default()
                }),
                "label is empty",
            ),
            (
                Op::List(ListArgs {
                    limit: Some(0),
                    ..ListArgs::default()
                }),
                "limit 0",
            ),
        ] {
            let e = s.apply(&op).unwrap_err();
            assert_eq!(e.code, Code::InvalidField, "{op:?}");
            assert!(e.message.contains(needle), "{e}");
        }
        let e = s.apply(&Op::Show { id: "hl-99".into() }).unwrap_err();
        assert_eq!(e.code, Code::NotFound);
    }

    #[test]
    fn update_close_and_events() {
        let (_d, mut s) = store();
        let a = issue(s.apply(&create_op("a")).unwrap());
        let up = Op::Update(UpdateArgs {
            id: a.id.clone(),
            status: Some(Status::InProgress),
            assignee: Some(Some("agent-1".into())),
            labels: Some(vec!["b".into(), "a".into(), "a".into()]),
            ..UpdateArgs::default()
        });
        let b = issue(s.apply(&up).unwrap());
        assert_eq!(b.status, Status::InProgress);
        assert_eq!(b.labels, ["a", "b"]);
        let clear = Op::Update(UpdateArgs {
            id: a.id.clone(),
            assignee: Some(None),
            ..UpdateArgs::default()
        });
        assert_eq!(issue(s.apply(&clear).unwrap()).assignee, None);
        let c = issue(
            s.apply(&Op::Close {
                id: a.id.clone(),
                reason: Some("done".into()),
            })
            .unwrap(),
        );
        assert_eq!(c.status, Status::Closed);
        assert!(c.closed_at.is_some());
        // Closing again changes nothing.
        assert_eq!(
            issue(
                s.apply(&Op::Close {
                    id: a.id.clone(),
                    reason: None
                })
                .unwrap()
            ),
            c
        );
        let reopen = Op::Update(UpdateArgs {
            id: a.id.clone(),
            status: Some(Status::Open),
            ..UpdateArgs::default()
        });
        let r = issue(s.apply(&reopen).unwrap());
        assert_eq!((r.closed_at, r.close_reason), (None, None));
        match s.apply(&Op::Stats {}).unwrap() {
            Reply::Stats { stats } => {
                assert_eq!(stats.issues, 1);
                assert_eq!(
                    stats.events, 5,
                    "created, updated, updated, closed, updated"
                );
            }
            other => panic!("{other:?}"),
        }
        let lbl = Op::List(ListArgs {
            label: Some("a".into()),
            ..ListArgs::default()
        });
        assert_eq!(ids(s.apply(&lbl).unwrap()), vec![a.id.clone()]);
    }

    #[test]
    fn list_filters_combine() {
        let (_d, mut s) = store();
        for (i, (label, who, prio)) in
            [("x", "a", 1u8), ("x", "b", 1), ("y", "a", 1), ("x", "a", 3)]
                .iter()
                .enumerate()
        {
            s.apply(&Op::Create(CreateArgs {
                title: format!("t{i}"),
                priority: Some(*prio),
                assignee: Some(who.to_string()),
                labels: vec![label.to_string()],
                ..CreateArgs::default()
            }))
            .unwrap();
        }
        s.apply(&Op::Close {
            id: "hl-1".into(),
            reason: None,
        })
        .unwrap();
        let list = |s: &mut Store, a: ListArgs| ids(s.apply(&Op::List(a)).unwrap());
        assert_eq!(
            list(
                &mut s,
                ListArgs {
                    label: Some("x".into()),
                    ..ListArgs::default()
                }
            ),
            ["hl-4", "hl-2", "hl-1"]
        );
        let a = ListArgs {
            label: Some("x".into()),
            assignee: Some("a".into()),
            ..ListArgs::default()
        };
        assert_eq!(list(&mut s, a), ["hl-4", "hl-1"]);
        let a = ListArgs {
            label: Some("x".into()),
            status: Some(Status::Open),
            priority: Some(1),
            ..ListArgs::default()
        };
        assert_eq!(list(&mut s, a), ["hl-2"]);
        let a = ListArgs {
            assignee: Some("a".into()),
            limit: Some(1),
            ..ListArgs::default()
        };
        assert_eq!(list(&mut s, a), ["hl-4"]);
        assert!(list(
            &mut s,
            ListArgs {
                label: Some("none".into()),
                ..ListArgs::default()
            }
        )
        .is_empty());
    }

    #[test]
    fn ready_follows_blockers_and_priority() {
        let (_d, mut s) = store();
        let mk = |s: &mut Store, t: &str, p: u8| {
            issue(
                s.apply(&Op::Create(CreateArgs {
                    title: t.into(),
                    priority: Some(p),
                    ..CreateArgs::default()
                }))
                .unwrap(),
            )
            .id
        };
        let a = mk(&mut s, "a", 2);
        let b = mk(&mut s, "b", 0);
        let c = mk(&mut s, "c", 1);
        let dep = |i: &str, on: &str, kind| {
            Op::DepAdd(Dep {
                issue: i.into(),
                depends_on: on.into(),
                kind,
            })
        };
        s.apply(&dep(&b, &a, DepKind::Blocks)).unwrap();
        s.apply(&dep(&c, &a, DepKind::Related)).unwrap();
        assert_eq!(
            ids(s.apply(&Op::Ready { limit: None }).unwrap()),
            [c.clone(), a.clone()]
        );
        s.apply(&Op::Close {
            id: a.clone(),
            reason: None,
        })
        .unwrap();
        assert_eq!(
            ids(s.apply(&Op::Ready { limit: None }).unwrap()),
            [b.clone(), c.clone()]
        );
        // Cycles of blockers and self-dependencies are conflicts.
        let e = s.apply(&dep(&a, &b, DepKind::Blocks)).unwrap_err();
        assert_eq!(e.code, Code::Conflict, "{e}");
        assert_eq!(
            s.apply(&dep(&a, &a, DepKind::Related)).unwrap_err().code,
            Code::Conflict
        );
        assert_eq!(
            s.apply(&dep(&a, "hl-99", DepKind::Related))
                .unwrap_err()
                .code,
            Code::NotFound
        );
        // Removing works once.
        s.apply(&Op::DepRemove(Dep {
            issue: b.clone(),
            depends_on: a.clone(),
            kind: DepKind::Blocks,
        }))
        .unwrap();
        let e = s
            .apply(&Op::DepRemove(Dep {
                issue: b,
                depends_on: a,
                kind: DepKind::Blocks,
            }))
            .unwrap_err();
        assert_eq!(e.code, Code::NotFound);
    }

    #[test]
    fn batches_are_all_or_nothing_and_not_nested() {
        let (_d, mut s) = store();
        let ok = Op::Batch {
            ops: vec![
                create_op("a"),
                create_op("b"),
                Op::Show { id: "hl-1".into() },
            ],
        };
        match s.apply(&ok).unwrap() {
            Reply::Batch { results } => assert_eq!(results.len(), 3),
            other => panic!("{other:?}"),
        }
        let bad = Op::Batch {
            ops: vec![
                create_op("c"),
                Op::Close {
                    id: "hl-77".into(),
                    reason: None,
                },
            ],
        };
        let e = s.apply(&bad).unwrap_err();
        assert_eq!((e.code, e.index), (Code::BatchFailed, Some(1)));
        assert!(e.message.contains("operation 1 (close) failed"), "{e}");
        assert_eq!(
            ids(s.apply(&Op::List(ListArgs::default())).unwrap()),
            ["hl-2", "hl-1"]
        );
        let nested = Op::Batch {
            ops: vec![create_op("x"), Op::Batch { ops: vec![] }],
        };
        let e = s.apply(&nested).unwrap_err();
        assert_eq!((e.code, e.index), (Code::BadRequest, Some(1)));
        let huge = Op::Batch {
            ops: vec![Op::Ping {}; MAX_BATCH_OPS + 1],
        };
        assert_eq!(s.apply(&huge).unwrap_err().code, Code::TooLarge);
    }

    #[test]
    fn a_write_whose_reply_cannot_be_sent_is_not_applied() {
        let (_d, mut s) = store();
        let big = |i: usize| {
            Op::Create(CreateArgs {
                title: format!("t{i}"),
                description: "d".repeat(2000),
                ..CreateArgs::default()
            })
        };
        let batch = Op::Batch {
            ops: (0..600).map(big).collect(),
        };
        let e = s.apply(&batch).unwrap_err();
        assert_eq!(e.code, Code::TooLarge, "{e}");
        let refs = [&batch];
        let results = s.apply_group(&refs).unwrap();
        assert_eq!(results[0].as_ref().unwrap_err().code, Code::TooLarge);
        match s.apply(&Op::Stats {}).unwrap() {
            Reply::Stats { stats } => assert_eq!(stats.issues, 0, "nothing was applied"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_group_commit_isolates_failures() {
        let (dir, mut s) = store();
        let ops = [
            create_op("a"),
            create_op(""),
            Op::Batch {
                ops: vec![create_op("b"), create_op("\n")],
            },
            create_op("c"),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let results = s.apply_group(&refs).unwrap();
        assert!(
            results[0].is_ok() && results[1].is_err() && results[2].is_err() && results[3].is_ok()
        );
        let reader =
            ReadStore::open(&dir.path().join("issues.db"), &StoreConfig::default()).unwrap();
        assert_eq!(
            ids(reader.read(&Op::List(ListArgs::default())).unwrap()),
            ["hl-2", "hl-1"]
        );
        assert!(
            reader.read(&create_op("x")).is_err(),
            "a reader refuses writes"
        );
    }

    #[test]
    fn two_connections_never_collide_on_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issues.db");
        Store::open(&path, &StoreConfig::default()).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = Store::open(&path, &StoreConfig::default()).unwrap();
                    (0..50)
                        .map(|i| issue(s.apply(&create_op(&format!("t{i}"))).unwrap()).id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<String> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!((n, all.len()), (200, 200));
    }
}
