//! The repository model: one SQLite file per repository, with exactly one writer.
//!
//! - **Blobs** are content-addressed: the key is the lowercase hex [`blake3`] hash of the
//!   bytes ([`hash_blob`]).
//! - **Commits** form one linear trunk: commit `n` has sequence number `n` and the commit
//!   `n - 1` as its parent (none for commit 1). A commit carries an author, a message, a
//!   creation time given by the caller (never read from the clock, so the same input gives
//!   the same hash everywhere) and a *manifest change*: paths set to a blob or deleted. The
//!   commit hash covers all of that in a canonical encoding (see [`Commit::compute_hash`]).
//! - **The tip** is the commit with the highest sequence number; the tree at the tip (path →
//!   blob hash) is kept in its own table, updated by every commit.
//!
//! A [`Repo`] owns one `rusqlite` connection: it is `Send` but not `Sync`, so exactly one
//! thread (a leaf's actor, the hub's actor) writes a repository, and a leaf's commit can
//! never race its own pull. Every write is ONE `IMMEDIATE` transaction: all or nothing.
//! Re-applying a blob or a commit that is already stored is a no-op. An `SQLITE_BUSY`
//! (possible only if something else opened the file) is never retried beyond a short
//! [`BUSY_TIMEOUT`]; it surfaces as [`RepoError::Busy`] so callers can count it.
//!
//! How the pieces are meant to be used:
//!
//! - A leaf prepares a commit on top of its tip with [`Repo::prepare`] (nothing stored),
//!   pushes it; the hub applies it with [`Repo::apply_if_tip`] (a compare-and-swap on the
//!   tip); on success the leaf stores it with [`Repo::apply`]; on
//!   [`RepoError::TipMoved`] the leaf pulls, prepares the same [`NewCommit`] again on the
//!   new tip and retries.
//! - A pull is [`Repo::commits_after`] at the hub (bounded in commits and bytes) and
//!   [`Repo::apply`] at the leaf, repeated while [`Pull::more`] is set.
//! - [`Repo::commit`] prepares and stores in one step, for a repository that is its own
//!   trunk (tests, benches, a hub seeding itself).
//!
//! Everything that travels ([`Tip`], [`Change`], [`Commit`], [`Pull`], [`Applied`]) is
//! serde-serialisable; blob bytes travel as base64 strings in JSON ([`blobs_serde`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for SQLite's lock before failing with [`RepoError::Busy`].
/// With one writer per repository nothing ever waits; this only bounds the damage if
/// something else opened the file.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(50);

/// The longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The longest author, in bytes.
pub const MAX_AUTHOR_BYTES: usize = 256;
/// The longest commit message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The most path changes one commit may carry.
pub const MAX_CHANGES: usize = 10_000;
/// The largest blob, in bytes.
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;

/// The blake3 key-derivation context of commit hashes (changing it changes every hash).
const COMMIT_CONTEXT: &str = "herdlab hub-leaf 2026-11 commit v1";
/// The blake3 key-derivation context of manifest hashes.
const MANIFEST_CONTEXT: &str = "herdlab hub-leaf 2026-11 manifest v1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    parent TEXT,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    changes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    blob TEXT NOT NULL
);
";

/// A position on the trunk: a commit's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tip {
    /// The sequence number (1 for the first commit).
    pub seq: u64,
    /// The commit hash (64 lowercase hex digits).
    pub hash: String,
}

impl fmt::Display for Tip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.seq, self.hash)
    }
}

/// Shows an optional tip, "empty" for none.
fn show_tip(tip: &Option<Tip>) -> String {
    match tip {
        Some(t) => t.to_string(),
        None => "empty".to_string(),
    }
}

/// One path in a commit's manifest change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The path: relative, `/`-separated (see [`validate_path`]).
    pub path: String,
    /// The blob hash the path now holds, `None` if the commit deletes it.
    pub blob: Option<String>,
}

/// A commit on the trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The commit hash, [`Commit::compute_hash`] of the other fields.
    pub hash: String,
    /// The previous commit's hash; `None` only for commit 1.
    pub parent: Option<String>,
    /// The sequence number: the parent's plus one, 1 for the first commit.
    pub seq: u64,
    /// Who made it.
    pub author: String,
    /// Why.
    pub message: String,
    /// When, in milliseconds since the Unix epoch, as given by whoever made it.
    pub created_ms: u64,
    /// The manifest change, sorted by path, each path at most once.
    pub changes: Vec<Change>,
}

impl Commit {
    /// The trunk position this commit makes.
    pub fn tip(&self) -> Tip {
        Tip {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// The hash the other fields imply: blake3 (in key-derivation mode, so it cannot collide
    /// with a blob hash) over the parent, the sequence number, author, message, creation
    /// time and the changes in their order, every string length-prefixed.
    pub fn compute_hash(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key(COMMIT_CONTEXT);
        match &self.parent {
            None => {
                h.update(&[0]);
            }
            Some(p) => {
                h.update(&[1]);
                put_str(&mut h, p);
            }
        }
        h.update(&self.seq.to_le_bytes());
        put_str(&mut h, &self.author);
        put_str(&mut h, &self.message);
        h.update(&self.created_ms.to_le_bytes());
        h.update(&(self.changes.len() as u64).to_le_bytes());
        for c in &self.changes {
            put_str(&mut h, &c.path);
            match &c.blob {
                None => {
                    h.update(&[0]);
                }
                Some(b) => {
                    h.update(&[1]);
                    put_str(&mut h, b);
                }
            }
        }
        h.finalize().to_hex().to_string()
    }

    /// Checks everything a commit received from elsewhere must satisfy: well-formed hashes,
    /// sequence number and parent consistent (commit 1 has no parent, later ones have one),
    /// sizes within the limits, valid paths sorted and unique, and a hash that matches.
    pub fn verify(&self) -> Result<(), RepoError> {
        check_hash("commit", &self.hash)?;
        let invalid = |why: String| RepoError::InvalidCommit {
            commit: self.hash.clone(),
            why,
        };
        if self.seq == 0 {
            return Err(invalid("sequence number 0 (the first commit is 1)".into()));
        }
        if i64::try_from(self.seq).is_err() {
            return Err(invalid(format!(
                "sequence number {} above {}",
                self.seq,
                i64::MAX
            )));
        }
        match (&self.parent, self.seq) {
            (None, 1) => {}
            (Some(_), 1) => return Err(invalid("commit 1 has a parent".into())),
            (None, s) => return Err(invalid(format!("commit {s} has no parent"))),
            (Some(p), _) => check_hash("parent commit", p)?,
        }
        check_fields(
            &self.author,
            &self.message,
            self.created_ms,
            self.changes.len(),
        )
        .map_err(invalid)?;
        for (i, c) in self.changes.iter().enumerate() {
            validate_path(&c.path)?;
            if let Some(b) = &c.blob {
                check_hash("blob", b)?;
            }
            if i > 0 && self.changes[i - 1].path.as_str() >= c.path.as_str() {
                return Err(invalid(format!(
                    "changes not sorted by path or a path twice: {:?} then {:?}",
                    shown(&self.changes[i - 1].path),
                    shown(&c.path)
                )));
            }
        }
        let actual = self.compute_hash();
        if actual != self.hash {
            return Err(RepoError::BadHash {
                what: "commit",
                claimed: self.hash.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Whether this commit goes directly on top of `tip` (`None` = empty repository).
    pub fn extends(&self, tip: Option<&Tip>) -> bool {
        match tip {
            None => self.seq == 1 && self.parent.is_none(),
            Some(t) => {
                t.seq.checked_add(1) == Some(self.seq) && self.parent.as_ref() == Some(&t.hash)
            }
        }
    }
}

/// Checks the fields common to [`NewCommit`] and [`Commit`]; the error says why.
fn check_fields(
    author: &str,
    message: &str,
    created_ms: u64,
    changes: usize,
) -> Result<(), String> {
    if author.len() > MAX_AUTHOR_BYTES {
        return Err(format!(
            "author of {} bytes, at most {MAX_AUTHOR_BYTES}",
            author.len()
        ));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes, at most {MAX_MESSAGE_BYTES}",
            message.len()
        ));
    }
    if i64::try_from(created_ms).is_err() {
        return Err(format!("created_ms {created_ms} above {}", i64::MAX));
    }
    if changes > MAX_CHANGES {
        return Err(format!("{changes} changes, at most {MAX_CHANGES}"));
    }
    Ok(())
}

fn put_str(h: &mut blake3::Hasher, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// A blob as it travels: `(hash, bytes)`, the hash being [`hash_blob`] of the bytes.
pub type Blob = (String, Vec<u8>);

/// A change a leaf wants to commit, before it is placed on a tip.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewCommit {
    /// Who makes it.
    pub author: String,
    /// Why.
    pub message: String,
    /// When, in milliseconds since the Unix epoch (the caller's clock; part of the hash).
    pub created_ms: u64,
    /// Paths and their new content, `None` to delete; each path at most once, any order.
    pub files: Vec<(String, Option<Vec<u8>>)>,
}

/// A bounded range of commits after some sequence number, with the blobs they introduce.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pull {
    /// Consecutive commits in sequence order.
    pub commits: Vec<Commit>,
    /// `(hash, bytes)` of every blob the commits' changes refer to, each once.
    #[serde(with = "blobs_serde")]
    pub blobs: Vec<Blob>,
    /// Whether commits remain after the last one here.
    pub more: bool,
}

impl Pull {
    /// The tip after the last commit here, if any.
    pub fn last(&self) -> Option<Tip> {
        self.commits.last().map(Commit::tip)
    }

    /// Bytes of blob payload carried.
    pub fn blob_bytes(&self) -> usize {
        self.blobs.iter().map(|(_, b)| b.len()).sum()
    }
}

/// What [`Repo::apply_if_tip`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The tip afterwards.
    pub tip: Tip,
    /// `true` if the commit was stored now, `false` if it was already there (a retried push).
    pub new: bool,
}

/// What can go wrong in a repository; every variant names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// SQLite answered `SQLITE_BUSY` or `SQLITE_LOCKED`: something else holds the file.
    /// Never retried here; count it.
    #[error("repository {}: SQLite busy: {detail}", .path.display())]
    Busy {
        /// The repository file.
        path: PathBuf,
        /// SQLite's message.
        detail: String,
    },
    /// Any other SQLite failure.
    #[error("repository {}: sqlite: {source}", .path.display())]
    Sqlite {
        /// The repository file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file holds a schema version this build does not read.
    #[error("repository {}: schema version {found}, this build reads {SCHEMA_VERSION}", .path.display())]
    Schema {
        /// The repository file.
        path: PathBuf,
        /// The `user_version` found.
        found: i64,
    },
    /// The file is not usable as a repository (wrong journal mode, corrupt rows).
    #[error("repository {}: {why}", .path.display())]
    Unusable {
        /// The repository file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A compare-and-swap found another tip than expected; nothing was written.
    #[error("the tip moved: it is now {}", show_tip(.current))]
    TipMoved {
        /// The tip now.
        current: Option<Tip>,
    },
    /// A commit neither extends the tip nor is already stored at its sequence number.
    #[error("commit {commit} (#{seq}, parent {}) does not extend the tip {}",
        .parent.as_deref().unwrap_or("none"), show_tip(.tip))]
    NotOnTip {
        /// The commit's hash.
        commit: String,
        /// Its sequence number.
        seq: u64,
        /// Its parent.
        parent: Option<String>,
        /// The tip it had to extend.
        tip: Option<Tip>,
    },
    /// Content does not hash to the hash it came with.
    #[error("{what} hash mismatch: claimed {claimed}, the content hashes to {actual}")]
    BadHash {
        /// `"blob"` or `"commit"`.
        what: &'static str,
        /// The hash it came with.
        claimed: String,
        /// The hash of the content.
        actual: String,
    },
    /// A hash that is not 64 lowercase hex digits.
    #[error("{what} hash {value:?} is not 64 lowercase hex digits")]
    InvalidHash {
        /// What it was meant to name.
        what: &'static str,
        /// The value (shortened if long).
        value: String,
    },
    /// A commit refers to a blob that was neither supplied nor stored.
    #[error("commit {commit}: blob {blob} of {path:?} was neither supplied nor stored")]
    MissingBlob {
        /// The commit.
        commit: String,
        /// The path that refers to the blob.
        path: String,
        /// The blob hash.
        blob: String,
    },
    /// A path that is not relative, clean and `/`-separated, or that clashes with the tree.
    #[error("invalid path {path:?}: {why}")]
    InvalidPath {
        /// The path (shortened if long).
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A commit (or new commit, named `new`) with an invalid field.
    #[error("invalid commit {commit}: {why}")]
    InvalidCommit {
        /// The commit's hash, or `new` for a [`NewCommit`].
        commit: String,
        /// What is wrong.
        why: String,
    },
    /// A blob too large to store.
    #[error("blob {blob} of {len} bytes, at most {MAX_BLOB_BYTES}")]
    BlobTooLarge {
        /// Its hash, or the path it was for.
        blob: String,
        /// Its size.
        len: usize,
    },
    /// An argument out of range.
    #[error("invalid {what}: {value}")]
    InvalidLimit {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
    },
}

impl RepoError {
    /// Whether this is [`RepoError::Busy`] (what the herd counts as `SQLITE_BUSY`).
    pub fn is_busy(&self) -> bool {
        matches!(self, RepoError::Busy { .. })
    }
}

/// Attaches the repository path to rusqlite results, mapping busy and locked to
/// [`RepoError::Busy`].
trait At<T> {
    fn at(self, path: &Path) -> Result<T, RepoError>;
}

impl<T> At<T> for rusqlite::Result<T> {
    fn at(self, path: &Path) -> Result<T, RepoError> {
        self.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                RepoError::Busy {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            }
            _ => RepoError::Sqlite {
                path: path.to_path_buf(),
                source: e,
            },
        })
    }
}

/// A value shortened for an error message (at most about 100 bytes).
fn shown(s: &str) -> String {
    const MAX: usize = 100;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// The content hash of a blob: blake3, 64 lowercase hex digits.
pub fn hash_blob(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Whether `s` looks like a hash: 64 lowercase hex digits.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(what: &'static str, s: &str) -> Result<(), RepoError> {
    if is_hash(s) {
        Ok(())
    } else {
        Err(RepoError::InvalidHash {
            what,
            value: shown(s),
        })
    }
}

/// Checks a path: non-empty, at most [`MAX_PATH_BYTES`], relative (no leading `/`),
/// `/`-separated with no empty, `.` or `..` component, no NUL and no backslash.
pub fn validate_path(path: &str) -> Result<(), RepoError> {
    let bad = |why: String| {
        Err(RepoError::InvalidPath {
            path: shown(path),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return bad(format!("{} bytes, at most {MAX_PATH_BYTES}", path.len()));
    }
    if path.starts_with('/') {
        return bad("absolute (leading '/'); paths are relative".into());
    }
    if path.contains('\0') {
        return bad("contains NUL".into());
    }
    if path.contains('\\') {
        return bad("contains '\\'; the separator is '/'".into());
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("empty component ('//' or a trailing '/')".into()),
            "." | ".." => return bad(format!("component {comp:?}")),
            _ => {}
        }
    }
    Ok(())
}

/// Supplied blobs by hash, each checked against its content.
fn blob_map(blobs: &[Blob]) -> Result<HashMap<&str, &[u8]>, RepoError> {
    let mut map = HashMap::with_capacity(blobs.len());
    for (hash, bytes) in blobs {
        check_hash("blob", hash)?;
        if bytes.len() > MAX_BLOB_BYTES {
            return Err(RepoError::BlobTooLarge {
                blob: hash.clone(),
                len: bytes.len(),
            });
        }
        let actual = hash_blob(bytes);
        if actual != *hash {
            return Err(RepoError::BadHash {
                what: "blob",
                claimed: hash.clone(),
                actual,
            });
        }
        map.insert(hash.as_str(), bytes.as_slice());
    }
    Ok(map)
}

/// A commit row as stored.
struct Row {
    seq: i64,
    hash: String,
    parent: Option<String>,
    author: String,
    message: String,
    created_ms: i64,
    changes: String,
}

const COMMIT_COLUMNS: &str = "seq, hash, parent, author, message, created_ms, changes";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        seq: r.get(0)?,
        hash: r.get(1)?,
        parent: r.get(2)?,
        author: r.get(3)?,
        message: r.get(4)?,
        created_ms: r.get(5)?,
        changes: r.get(6)?,
    })
}

impl Row {
    fn into_commit(self, path: &Path) -> Result<Commit, RepoError> {
        let unusable = |why: String| RepoError::Unusable {
            path: path.to_path_buf(),
            why,
        };
        let seq = u64::try_from(self.seq).map_err(|_| {
            unusable(format!(
                "commit {} has sequence number {}",
                self.hash, self.seq
            ))
        })?;
        let created_ms = u64::try_from(self.created_ms).map_err(|_| {
            unusable(format!(
                "commit {} has created_ms {}",
                self.hash, self.created_ms
            ))
        })?;
        let changes: Vec<Change> = serde_json::from_str(&self.changes)
            .map_err(|e| unusable(format!("commit {}: changes: {e}", self.hash)))?;
        Ok(Commit {
            hash: self.hash,
            parent: self.parent,
            seq,
            author: self.author,
            message: self.message,
            created_ms,
            changes,
        })
    }
}

/// Converts a sequence number for SQLite (values above `i64::MAX` clamp: no row has them).
fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The tip as seen through `conn` (a transaction or the connection).
fn read_tip(conn: &Connection, path: &Path) -> Result<Option<Tip>, RepoError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM commits ORDER BY seq DESC LIMIT 1")
        .at(path)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .at(path)?;
    match row {
        None => Ok(None),
        Some((seq, hash)) => match u64::try_from(seq) {
            Ok(seq) => Ok(Some(Tip { seq, hash })),
            Err(_) => Err(RepoError::Unusable {
                path: path.to_path_buf(),
                why: format!("tip commit {hash} has sequence number {seq}"),
            }),
        },
    }
}

/// The hash of the commit stored at `seq`, if any.
fn hash_at(conn: &Connection, path: &Path, seq: u64) -> Result<Option<String>, RepoError> {
    conn.prepare_cached("SELECT hash FROM commits WHERE seq = ?1")
        .at(path)?
        .query_row([sql_seq(seq)], |r| r.get(0))
        .optional()
        .at(path)
}

/// Stores a verified commit that extends the tip: its blobs (from `supplied` or already
/// stored), its row, and its changes to the tree (deletions first, then additions, each
/// addition checked against the tree so no path is both a file and a directory).
fn store_commit(
    conn: &Connection,
    path: &Path,
    c: &Commit,
    supplied: &HashMap<&str, &[u8]>,
) -> Result<(), RepoError> {
    {
        let mut has = conn
            .prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")
            .at(path)?;
        let mut put = conn
            .prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")
            .at(path)?;
        for ch in &c.changes {
            let Some(blob) = &ch.blob else { continue };
            if let Some(bytes) = supplied.get(blob.as_str()) {
                put.execute(params![blob, bytes]).at(path)?;
            } else if !has.exists([blob]).at(path)? {
                return Err(RepoError::MissingBlob {
                    commit: c.hash.clone(),
                    path: ch.path.clone(),
                    blob: blob.clone(),
                });
            }
        }
    }
    let changes = serde_json::to_string(&c.changes).map_err(|e| RepoError::Unusable {
        path: path.to_path_buf(),
        why: format!("encoding the changes of commit {}: {e}", c.hash),
    })?;
    conn.prepare_cached(
        "INSERT INTO commits (seq, hash, parent, author, message, created_ms, changes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .at(path)?
    .execute(params![
        sql_seq(c.seq),
        c.hash,
        c.parent,
        c.author,
        c.message,
        sql_seq(c.created_ms),
        changes
    ])
    .at(path)?;
    {
        let mut del = conn
            .prepare_cached("DELETE FROM files WHERE path = ?1")
            .at(path)?;
        for ch in c.changes.iter().filter(|ch| ch.blob.is_none()) {
            del.execute([&ch.path]).at(path)?;
        }
    }
    let mut is_file = conn
        .prepare_cached("SELECT 1 FROM files WHERE path = ?1")
        .at(path)?;
    let mut under = conn
        .prepare_cached("SELECT path FROM files WHERE path >= ?1 AND path < ?2 LIMIT 1")
        .at(path)?;
    let mut put = conn
        .prepare_cached(
            "INSERT INTO files (path, blob) VALUES (?1, ?2)
             ON CONFLICT (path) DO UPDATE SET blob = excluded.blob",
        )
        .at(path)?;
    for ch in &c.changes {
        let Some(blob) = &ch.blob else { continue };
        for (i, _) in ch.path.match_indices('/') {
            let dir = &ch.path[..i];
            if is_file.exists([dir]).at(path)? {
                return Err(RepoError::InvalidPath {
                    path: shown(&ch.path),
                    why: format!(
                        "commit {} puts it under {:?}, which is a file",
                        c.hash,
                        shown(dir)
                    ),
                });
            }
        }
        // Paths strictly under `path/` sort in [`path/`, `path0`): '0' follows '/'.
        let inside: Option<String> = under
            .query_row([format!("{}/", ch.path), format!("{}0", ch.path)], |r| {
                r.get(0)
            })
            .optional()
            .at(path)?;
        if let Some(inside) = inside {
            return Err(RepoError::InvalidPath {
                path: shown(&ch.path),
                why: format!(
                    "commit {} makes it a file, but it is a directory holding {:?}",
                    c.hash,
                    shown(&inside)
                ),
            });
        }
        put.execute(params![ch.path, blob]).at(path)?;
    }
    Ok(())
}

/// One repository: one SQLite file, one connection, one writer.
///
/// `Send` but not `Sync`: own it from one thread (or one async task at a time).
pub struct Repo {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo").field("path", &self.path).finish()
    }
}

impl Repo {
    /// Opens the repository at `path`, creating the file (not its directory) and the schema
    /// if missing. WAL journal, `synchronous=NORMAL` (a commit survives a crash of the
    /// process), [`BUSY_TIMEOUT`].
    pub fn open(path: &Path) -> Result<Repo, RepoError> {
        Repo::open_with(path, "NORMAL")
    }

    /// Opens a leaf's replica: as [`Repo::open`] but `synchronous=OFF`, so its WAL
    /// checkpoints never wait for the disk. Safe for a replica: everything in it is on the
    /// hub, so losing its tail in a power cut costs a re-pull, never a commit (a leaf takes
    /// its own commit only after the hub accepted it).
    pub fn open_replica(path: &Path) -> Result<Repo, RepoError> {
        Repo::open_with(path, "OFF")
    }

    fn open_with(path: &Path, synchronous: &str) -> Result<Repo, RepoError> {
        let conn = Connection::open(path).at(path)?;
        conn.busy_timeout(BUSY_TIMEOUT).at(path)?;
        conn.set_prepared_statement_cache_capacity(32);
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .at(path)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(RepoError::Unusable {
                path: path.to_path_buf(),
                why: format!("journal mode is {mode:?}, expected \"wal\""),
            });
        }
        conn.pragma_update(None, "synchronous", synchronous)
            .at(path)?;
        let mut repo = Repo {
            conn,
            path: path.to_path_buf(),
        };
        repo.init_schema()?;
        Ok(repo)
    }

    fn init_schema(&mut self) -> Result<(), RepoError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .at(path)?;
        match version {
            0 => {
                tx.execute_batch(SCHEMA).at(path)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .at(path)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(RepoError::Schema {
                    path: path.clone(),
                    found,
                })
            }
        }
        tx.commit().at(path)
    }

    /// The repository file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trunk tip, `None` for an empty repository.
    pub fn tip(&self) -> Result<Option<Tip>, RepoError> {
        read_tip(&self.conn, &self.path)
    }

    /// Builds, without storing anything, the commit `c` makes on top of `parent` (`None` =
    /// an empty repository), and the blobs it introduces (each once). Paths are validated;
    /// a path given twice is an error.
    pub fn prepare(parent: Option<&Tip>, c: &NewCommit) -> Result<(Commit, Vec<Blob>), RepoError> {
        check_fields(&c.author, &c.message, c.created_ms, c.files.len()).map_err(|why| {
            RepoError::InvalidCommit {
                commit: "new".into(),
                why,
            }
        })?;
        let seq = match parent {
            None => 1,
            Some(t) => match t.seq.checked_add(1).filter(|s| i64::try_from(*s).is_ok()) {
                Some(s) => s,
                None => {
                    return Err(RepoError::InvalidCommit {
                        commit: "new".into(),
                        why: format!("no sequence number after {}", t.seq),
                    })
                }
            },
        };
        let mut changes = Vec::with_capacity(c.files.len());
        let mut blobs: Vec<Blob> = Vec::new();
        let mut seen = HashSet::new();
        for (p, content) in &c.files {
            validate_path(p)?;
            let blob = match content {
                None => None,
                Some(bytes) => {
                    if bytes.len() > MAX_BLOB_BYTES {
                        return Err(RepoError::BlobTooLarge {
                            blob: format!("for {:?}", shown(p)),
                            len: bytes.len(),
                        });
                    }
                    let h = hash_blob(bytes);
                    if seen.insert(h.clone()) {
                        blobs.push((h.clone(), bytes.clone()));
                    }
                    Some(h)
                }
            };
            changes.push(Change {
                path: p.clone(),
                blob,
            });
        }
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = changes.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(RepoError::InvalidPath {
                path: shown(&w[0].path),
                why: "given twice in one commit".into(),
            });
        }
        let mut commit = Commit {
            hash: String::new(),
            parent: parent.map(|t| t.hash.clone()),
            seq,
            author: c.author.clone(),
            message: c.message.clone(),
            created_ms: c.created_ms,
            changes,
        };
        commit.hash = commit.compute_hash();
        Ok((commit, blobs))
    }

    /// Makes `c` a commit on top of the current tip and stores it with its blobs, advancing
    /// the tip: one IMMEDIATE transaction.
    pub fn commit(&mut self, c: &NewCommit) -> Result<Commit, RepoError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let tip = read_tip(&tx, path)?;
        let (commit, blobs) = Repo::prepare(tip.as_ref(), c)?;
        let supplied: HashMap<&str, &[u8]> = blobs
            .iter()
            .map(|(h, b)| (h.as_str(), b.as_slice()))
            .collect();
        store_commit(&tx, path, &commit, &supplied)?;
        tx.commit().at(path)?;
        Ok(commit)
    }

    /// Applies commits received from elsewhere (a pull at a leaf, a push at the hub), in
    /// order. Each must either be stored already (same hash at its sequence number: skipped)
    /// or extend the tip; each commit's and each supplied blob's hash is verified, and every
    /// blob a new commit refers to must be supplied or stored. One IMMEDIATE transaction,
    /// all or nothing. Returns how many commits were new.
    pub fn apply(&mut self, commits: &[Commit], blobs: &[Blob]) -> Result<usize, RepoError> {
        for c in commits {
            c.verify()?;
        }
        let supplied = blob_map(blobs)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let mut tip = read_tip(&tx, path)?;
        let mut new = 0;
        for c in commits {
            match hash_at(&tx, path, c.seq)? {
                Some(h) if h == c.hash => continue,
                Some(_) => {}
                None if c.extends(tip.as_ref()) => {
                    store_commit(&tx, path, c, &supplied)?;
                    tip = Some(c.tip());
                    new += 1;
                    continue;
                }
                None => {}
            }
            return Err(RepoError::NotOnTip {
                commit: c.hash.clone(),
                seq: c.seq,
                parent: c.parent.clone(),
                tip,
            });
        }
        tx.commit().at(path)?;
        Ok(new)
    }

    /// Compare-and-swap, for the hub: stores `commit` only if the tip is `expected` (`None` =
    /// empty) and `commit` extends it. If the tip is anything else, fails with
    /// [`RepoError::TipMoved`] carrying the current tip, writing nothing. A commit already
    /// stored at its sequence number (a retried push whose reply was lost) is not an error:
    /// `Applied { new: false }` with the current tip. One IMMEDIATE transaction.
    pub fn apply_if_tip(
        &mut self,
        expected: Option<&Tip>,
        commit: &Commit,
        blobs: &[Blob],
    ) -> Result<Applied, RepoError> {
        commit.verify()?;
        let supplied = blob_map(blobs)?;
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let current = read_tip(&tx, path)?;
        if hash_at(&tx, path, commit.seq)?.as_deref() == Some(commit.hash.as_str()) {
            if let Some(tip) = current {
                return Ok(Applied { tip, new: false });
            }
        }
        if current.as_ref() != expected {
            return Err(RepoError::TipMoved { current });
        }
        if !commit.extends(current.as_ref()) {
            return Err(RepoError::NotOnTip {
                commit: commit.hash.clone(),
                seq: commit.seq,
                parent: commit.parent.clone(),
                tip: current,
            });
        }
        store_commit(&tx, path, commit, &supplied)?;
        tx.commit().at(path)?;
        Ok(Applied {
            tip: commit.tip(),
            new: true,
        })
    }

    /// The commits after `after_seq` in sequence order with the blobs their changes refer to:
    /// at most `max_commits` commits (at least 1) and no more than about `max_bytes` of blob
    /// payload, except that the first commit is always included whole; `more` says whether
    /// commits remain. Read in one snapshot.
    pub fn commits_after(
        &self,
        after_seq: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> Result<Pull, RepoError> {
        if max_commits == 0 {
            return Err(RepoError::InvalidLimit {
                what: "max_commits (at least 1)",
                value: 0,
            });
        }
        let path = &self.path;
        // A deferred read transaction: one snapshot for the commits and their blobs.
        let tx = self.conn.unchecked_transaction().at(path)?;
        let mut pull = Pull::default();
        let mut included: HashSet<String> = HashSet::new();
        let mut bytes = 0usize;
        {
            let mut rows_stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COMMIT_COLUMNS} FROM commits WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .at(path)?;
            let mut blob_stmt = tx
                .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")
                .at(path)?;
            let limit = i64::try_from(max_commits.saturating_add(1)).unwrap_or(i64::MAX);
            let mut rows = rows_stmt
                .query(params![sql_seq(after_seq), limit])
                .at(path)?;
            while let Some(r) = rows.next().at(path)? {
                if pull.commits.len() == max_commits {
                    pull.more = true;
                    break;
                }
                let c = read_row(r).at(path)?.into_commit(path)?;
                let mut fresh = Vec::new();
                let mut cost = 0usize;
                for ch in &c.changes {
                    let Some(h) = &ch.blob else { continue };
                    if included.contains(h) || fresh.iter().any(|(f, _)| f == h) {
                        continue;
                    }
                    let data: Option<Vec<u8>> =
                        blob_stmt.query_row([h], |r| r.get(0)).optional().at(path)?;
                    let Some(data) = data else {
                        return Err(RepoError::Unusable {
                            path: path.clone(),
                            why: format!(
                                "commit {} refers to blob {h} of {:?}, which is not stored",
                                c.hash, ch.path
                            ),
                        });
                    };
                    cost += data.len();
                    fresh.push((h.clone(), data));
                }
                if !pull.commits.is_empty() && bytes.saturating_add(cost) > max_bytes {
                    pull.more = true;
                    break;
                }
                bytes += cost;
                for (h, data) in fresh {
                    included.insert(h.clone());
                    pull.blobs.push((h, data));
                }
                pull.commits.push(c);
            }
        }
        tx.finish().at(path)?;
        Ok(pull)
    }

    /// The commit at sequence number `seq`, if stored.
    pub fn commit_at(&self, seq: u64) -> Result<Option<Commit>, RepoError> {
        let path = &self.path;
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COMMIT_COLUMNS} FROM commits WHERE seq = ?1"
            ))
            .at(path)?
            .query_row([sql_seq(seq)], read_row)
            .optional()
            .at(path)?;
        row.map(|r| r.into_commit(path)).transpose()
    }

    /// The content of `path` at the tip, `None` if no such file.
    pub fn file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        validate_path(path)?;
        let db = &self.path;
        self.conn
            .prepare_cached(
                "SELECT b.data FROM files f JOIN blobs b ON b.hash = f.blob WHERE f.path = ?1",
            )
            .at(db)?
            .query_row([path], |r| r.get(0))
            .optional()
            .at(db)
    }

    /// Every file at the tip as `(path, blob hash)`, sorted by path.
    pub fn files(&self) -> Result<Vec<(String, String)>, RepoError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, blob FROM files ORDER BY path")
            .at(path)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .at(path)?;
        rows.map(|r| r.at(path)).collect()
    }

    /// A hash of the tree at the tip (every path and blob hash, in path order): equal trees,
    /// equal hashes, so a leaf and the hub compare trees cheaply.
    pub fn manifest_hash(&self) -> Result<String, RepoError> {
        let mut h = blake3::Hasher::new_derive_key(MANIFEST_CONTEXT);
        for (p, b) in self.files()? {
            put_str(&mut h, &p);
            put_str(&mut h, &b);
        }
        Ok(h.finalize().to_hex().to_string())
    }

    /// The bytes of blob `hash`, if stored.
    pub fn blob(&self, hash: &str) -> Result<Option<Vec<u8>>, RepoError> {
        check_hash("blob", hash)?;
        let path = &self.path;
        self.conn
            .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")
            .at(path)?
            .query_row([hash], |r| r.get(0))
            .optional()
            .at(path)
    }

    /// Calls `f` with every commit in sequence order, without their blobs: one statement,
    /// read row by row (a whole history need not fit in memory).
    pub fn each_commit(&self, mut f: impl FnMut(Commit)) -> Result<(), RepoError> {
        let path = &self.path;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COMMIT_COLUMNS} FROM commits ORDER BY seq"
            ))
            .at(path)?;
        let mut rows = stmt.query([]).at(path)?;
        while let Some(r) = rows.next().at(path)? {
            f(read_row(r).at(path)?.into_commit(path)?);
        }
        Ok(())
    }

    /// How many commits are stored (equal to the tip's sequence number).
    pub fn commit_count(&self) -> Result<u64, RepoError> {
        let path = &self.path;
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM commits", [], |r| r.get(0))
            .at(path)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

pub mod blobs_serde {
    //! Serde for a list of `(hash, bytes)` blobs, for `#[serde(with = "…")]`: a sequence of
    //! `{"hash": "…", "data": "<standard base64, padded>"}`, so JSON carries blobs in 4/3 of
    //! their size instead of a list of numbers.

    use base64::Engine as _;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Out<'a> {
        hash: &'a str,
        data: String,
    }

    #[derive(Deserialize)]
    struct In {
        hash: String,
        data: String,
    }

    /// Serialises blobs as `{"hash", "data"}` records, the data in base64.
    pub fn serialize<S: Serializer>(blobs: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(blobs.iter().map(|(hash, bytes)| Out {
            hash,
            data: encode(bytes),
        }))
    }

    /// Reads what [`serialize`] wrote; bad base64 is an error naming the blob.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let records = Vec::<In>::deserialize(d)?;
        records
            .into_iter()
            .map(|r| match decode(&r.data) {
                Ok(bytes) => Ok((r.hash, bytes)),
                Err(e) => Err(D::Error::custom(format!(
                    "blob {}: base64: {e}",
                    super::shown(&r.hash)
                ))),
            })
            .collect()
    }

    /// Standard base64 with `=` padding.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Decodes what [`encode`] produces; the error says where the input is wrong.
    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::blobs_serde::{decode, encode};
    use super::*;

    #[test]
    fn base64_round_trips_every_length_and_matches_known_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes, "length {len}");
        }
    }

    #[test]
    fn base64_rejects_bad_input_with_the_reason() {
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
        assert!(decode("Zm9*").unwrap_err().contains("offset 3"));
    }

    #[test]
    fn paths_are_validated_and_the_error_names_them() {
        for ok in ["a", "a/b.txt", "slot-1/file-2", "x/.hidden", "a..b/c"] {
            validate_path(ok).unwrap();
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a/../b", "\"..\""),
            ("./a", "\".\""),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\0b", "NUL"),
            ("a\\b", "separator"),
            (long.as_str(), "1025 bytes"),
        ] {
            let e = validate_path(bad).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, RepoError::InvalidPath { .. }), "{bad:?}: {msg}");
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains(&format!("{:?}", shown(bad))), "{msg}");
        }
        validate_path(&"a".repeat(MAX_PATH_BYTES)).unwrap();
    }

    #[test]
    fn a_repo_can_move_to_its_owner_thread() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Repo>();
        send_sync::<RepoError>();
    }

    #[test]
    fn hashes_are_64_lowercase_hex() {
        assert!(is_hash(&hash_blob(b"x")));
        assert!(!is_hash(&hash_blob(b"x").to_uppercase()));
        assert!(!is_hash("abc"));
        assert!(!is_hash(&"g".repeat(64)));
        assert_eq!(
            hash_blob(b""),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn commit_hash_covers_every_field() {
        let (c, _) = Repo::prepare(
            None,
            &NewCommit {
                author: "a".into(),
                message: "m".into(),
                created_ms: 5,
                files: vec![("p".into(), Some(b"x".to_vec())), ("q".into(), None)],
            },
        )
        .unwrap();
        c.verify().unwrap();
        type Mutation = Box<dyn Fn(&mut Commit)>;
        let variants: Vec<Mutation> = vec![
            Box::new(|c: &mut Commit| c.author.push('!')),
            Box::new(|c: &mut Commit| c.message.push('!')),
            Box::new(|c: &mut Commit| c.created_ms += 1),
            Box::new(|c: &mut Commit| c.changes[0].path.push('!')),
            Box::new(|c: &mut Commit| c.changes[1].blob = Some(hash_blob(b"y"))),
            Box::new(|c: &mut Commit| {
                c.changes.pop();
            }),
            Box::new(|c: &mut Commit| {
                c.seq = 2;
                c.parent = Some(hash_blob(b"parent"));
            }),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut d = c.clone();
            change(&mut d);
            assert_ne!(d.compute_hash(), c.hash, "variant {i}");
            assert!(
                matches!(d.verify(), Err(RepoError::BadHash { .. })),
                "variant {i}"
            );
        }
        // The length prefixes keep field boundaries: moving a byte between author and
        // message changes the hash.
        let mut d = c.clone();
        d.author = "am".into();
        d.message = String::new();
        assert_ne!(d.compute_hash(), c.hash);
    }
}
