//! The rpc-daemon as a collector [`Target`]: what `stress maxrps --target daemon:…` and the
//! `daemon-maxrps` suite load.
//!
//! Spec: `daemon:op=create|mix[,db=PATH][,pool=N][,seed=N]`.
//!
//! - `op=create`: every operation creates an issue.
//! - `op=mix`: an agent-like mix of create / update / show / list / ready (see [`MIX`]),
//!   chosen per operation from its sequence number and the seed, so a seed replays the same
//!   mix. Before the run, [`SEED_ISSUES`] issues are created in one batch for update and
//!   show to work on.
//! - `db=PATH`: load the daemon already serving `PATH` (it must be running). Without it, a
//!   private daemon is started in a temp dir ([`DaemonProc::start`]) and killed, its dir
//!   removed, when the target is dropped.
//! - `pool=N` (default [`DEFAULT_POOL`]): N daemon connections, each its own [`Client`]
//!   behind an async mutex; operation `seq` uses connection `seq % N`. A connection carries
//!   one request at a time, so N bounds the requests in flight at the daemon; operations
//!   waiting for their connection queue in the mutex, and that wait counts in their latency.
//!
//! A call the generator cancels (its timeout) drops the client it was using, so a reply that
//! arrives later can never be read as the answer to another request; the next operation on
//! that slot connects afresh.
//!
//! The same pool serves other mixes: [`DaemonTarget::with_workload`] takes any [`Workload`]
//! and a [`PoolConfig`] (wait bound, connection replacement, what a failed call does), which
//! is how `daemon-soak` drives its create/show/list mix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use collector::target::{parse_params, BoxFuture, OpError, SpecError, Target};
use rpc_daemon::client::{Client, ClientError};
use rpc_daemon::model::{CreateArgs, ListArgs, Op, Reply, Status, UpdateArgs};
use tokio::sync::Mutex;

use crate::daemon_harness::{daemon_config, DaemonProc};
use crate::harness::seed::splitmix64;

/// The spec grammar, for error messages and help.
pub const SPEC_HELP: &str = "daemon:op=create|mix[,db=PATH][,pool=N][,seed=N]";
/// Connections unless `pool=` says otherwise.
pub const DEFAULT_POOL: usize = 32;
/// Most connections a target opens (the daemon's default limit is 256).
pub const MAX_POOL: usize = 128;
/// Issues created before a mix run, for update and show to pick from.
pub const SEED_ISSUES: usize = 1_000;
/// `limit` of the mix's list and ready.
pub const READ_LIMIT: u32 = 20;
/// Client-side bound of every call (the generator's own timeout is usually shorter).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The mix: action names and their weights in percent (they add up to 100).
pub const MIX: [(&str, u64); 5] = [
    ("create", 20),
    ("update", 20),
    ("show", 30),
    ("list", 15),
    ("ready", 15),
];

/// Which operations a target performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonOp {
    /// Only creates.
    Create,
    /// The [`MIX`].
    Mix,
}

impl DaemonOp {
    /// `create` or `mix`.
    pub fn name(&self) -> &'static str {
        match self {
            DaemonOp::Create => "create",
            DaemonOp::Mix => "mix",
        }
    }
}

/// A parsed `daemon:` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// What to do.
    pub op: DaemonOp,
    /// A running daemon's database; `None` starts a private daemon.
    pub db: Option<PathBuf>,
    /// Connections.
    pub pool: usize,
    /// Seed of the mix and of the generated fields.
    pub seed: u64,
}

fn invalid(spec: &str, message: String) -> SpecError {
    SpecError::Invalid {
        spec: spec.into(),
        message,
    }
}

impl DaemonSpec {
    /// Parses `spec`; `Ok(None)` when it is not a `daemon` spec at all.
    pub fn parse(spec: &str) -> Result<Option<DaemonSpec>, SpecError> {
        let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
        if kind.trim() != "daemon" {
            return Ok(None);
        }
        let mut op = None;
        let mut db = None;
        let mut pool = DEFAULT_POOL;
        let mut seed = 1;
        for (k, v) in parse_params(spec, params)? {
            match k.as_str() {
                "op" => {
                    op = Some(match v.as_str() {
                        "create" => DaemonOp::Create,
                        "mix" => DaemonOp::Mix,
                        other => {
                            return Err(invalid(
                                spec,
                                format!("unknown op {other:?}: expected create or mix"),
                            ))
                        }
                    })
                }
                "db" if v.is_empty() => {
                    return Err(invalid(spec, "db is empty: expected a path".into()))
                }
                "db" => db = Some(PathBuf::from(v)),
                "pool" => {
                    pool = match v.parse::<usize>() {
                        Ok(n) if (1..=MAX_POOL).contains(&n) => n,
                        _ => {
                            return Err(invalid(
                                spec,
                                format!("pool {v:?}: expected a number from 1 to {MAX_POOL}"),
                            ))
                        }
                    }
                }
                "seed" => {
                    seed = v.parse::<u64>().map_err(|_| {
                        invalid(spec, format!("seed {v:?}: expected a whole number"))
                    })?
                }
                other => {
                    return Err(invalid(
                        spec,
                        format!("unknown parameter {other:?}: expected op, db, pool or seed"),
                    ))
                }
            }
        }
        let Some(op) = op else {
            return Err(invalid(
                spec,
                "missing op: expected op=create or op=mix".into(),
            ));
        };
        Ok(Some(DaemonSpec { op, db, pool, seed }))
    }
}

/// Resolves a `stress maxrps --target` spec: a `daemon:` spec to a [`DaemonTarget`] (starting
/// a private daemon unless `db=` names a running one), anything else through
/// [`collector::target::from_spec`]. Must not be called inside a tokio runtime.
pub fn resolve(spec: &str) -> Result<Arc<dyn Target>> {
    if let Some(d) = DaemonSpec::parse(spec)? {
        return Ok(Arc::new(DaemonTarget::from_spec(&d)?));
    }
    match collector::target::from_spec(spec) {
        Ok(t) => Ok(t),
        Err(SpecError::UnknownKind { spec, known }) => {
            bail!("unknown target {spec:?}: expected one of {known}, {SPEC_HELP}")
        }
        Err(e) => Err(e.into()),
    }
}

/// What a target keeps alive for as long as it lives: its private daemon, then its dir.
struct Owned {
    _daemon: DaemonProc,
    _dir: tempfile::TempDir,
}

/// What a [`DaemonTarget`] does with each operation: the built-in [`DaemonOp`] workloads,
/// or a suite's own mix (`daemon-soak`) over the same connection pool.
pub trait Workload: Send + Sync {
    /// The action names, in index order.
    fn actions(&self) -> Vec<String>;
    /// The action of operation `seq` (deterministic in `seq` and the workload's seed).
    fn pick(&self, seq: u64) -> usize;
    /// Operation `seq` as action `action` on `client`.
    fn run<'a>(
        &'a self,
        client: &'a mut Client,
        action: usize,
        seq: u64,
    ) -> BoxFuture<'a, Result<(), ClientError>>;
}

/// How a [`DaemonTarget`]'s connection pool treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections; operation `seq` uses connection `seq % size`.
    pub size: usize,
    /// Client-side bound of every call and connect.
    pub call_timeout: Duration,
    /// Longest an operation waits for its connection before it fails as `pool_busy`;
    /// `None`: as long as the generator lets the operation run (the wait is latency).
    pub lock_bound: Option<Duration>,
    /// Calls a connection carries before it is replaced by a fresh one (so accept and close
    /// run all along); `None`: a connection is kept until a call on it is cancelled.
    pub churn_every: Option<u64>,
    /// Whether a call that failed other than with an error reply drops its connection (the
    /// next call on that slot connects afresh); if not, the connection is kept.
    pub drop_failed: bool,
    /// The error kind a failed connect is reported as; `None`: the client error's own code.
    pub connect_kind: Option<&'static str>,
}

impl PoolConfig {
    /// What `stress maxrps` and `daemon-maxrps` use: `size` connections, [`CALL_TIMEOUT`],
    /// no wait bound, no replacement, connections kept after failed calls.
    pub fn new(size: usize) -> PoolConfig {
        PoolConfig {
            size,
            call_timeout: CALL_TIMEOUT,
            lock_bound: None,
            churn_every: None,
            drop_failed: false,
            connect_kind: None,
        }
    }
}

/// One pooled connection.
struct Slot {
    /// `None` until first used, after a replacement, and after a call was cancelled or
    /// could not connect (or failed, with [`PoolConfig::drop_failed`]).
    client: Mutex<Option<Client>>,
    /// Calls that took this slot.
    calls: AtomicU64,
}

/// The daemon under load. See the module doc.
pub struct DaemonTarget {
    workload: Arc<dyn Workload>,
    db: PathBuf,
    pool: PoolConfig,
    slots: Vec<Slot>,
    /// Connections opened (first use, replacements, reconnects).
    connects: AtomicU64,
    describe: String,
    // Dropped after the clients: the private daemon is killed, then its dir removed.
    owned: Option<Owned>,
}

impl DaemonTarget {
    /// A target for the daemon already serving `db`, with `pool` connections. For
    /// [`DaemonOp::Mix`] it first creates [`SEED_ISSUES`] issues there. Must not be called
    /// inside a tokio runtime (it runs the seeding on its own).
    pub fn new(op: DaemonOp, db: &Path, pool: usize, seed: u64) -> Result<DaemonTarget> {
        check_pool(pool)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            bail!("DaemonTarget::new runs its own runtime: call it outside one");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the seeding runtime")?;
        let ids = rt.block_on(async {
            let mut client = connect(db, CALL_TIMEOUT).await.with_context(|| {
                format!(
                    "no daemon answers for {} (start one with `rpc-daemon serve --db {}`, or leave out db= for a private one)",
                    db.display(),
                    db.display()
                )
            })?;
            client
                .ping()
                .await
                .with_context(|| format!("pinging the daemon of {}", db.display()))?;
            match op {
                DaemonOp::Create => anyhow::Ok(Vec::new()),
                DaemonOp::Mix => seed_issues(&mut client, seed).await,
            }
        })?;
        let describe = format!(
            "daemon:op={},pool={pool},seed={seed},db={}",
            op.name(),
            db.display()
        );
        DaemonTarget::with_workload(
            db,
            Arc::new(OpWorkload { op, seed, ids }),
            PoolConfig::new(pool),
            describe,
        )
    }

    /// A target running `workload` against the daemon serving `db` over a pool configured
    /// by `pool`, described as `describe`. Connects lazily, on each slot's first call.
    pub fn with_workload(
        db: &Path,
        workload: Arc<dyn Workload>,
        pool: PoolConfig,
        describe: String,
    ) -> Result<DaemonTarget> {
        check_pool(pool.size)?;
        Ok(DaemonTarget {
            workload,
            db: db.to_path_buf(),
            pool,
            slots: (0..pool.size)
                .map(|_| Slot {
                    client: Mutex::new(None),
                    calls: AtomicU64::new(0),
                })
                .collect(),
            connects: AtomicU64::new(0),
            describe,
            owned: None,
        })
    }

    /// A target from a parsed spec: `db=` must name a running daemon; without it a private
    /// daemon is started in a new temp dir and lives as long as the target.
    pub fn from_spec(spec: &DaemonSpec) -> Result<DaemonTarget> {
        if let Some(db) = &spec.db {
            return DaemonTarget::new(spec.op, db, spec.pool, spec.seed);
        }
        let dir = tempfile::Builder::new()
            .prefix("herdlab-maxrps-daemon-")
            .tempdir()
            .context("creating a temp dir for the private daemon")?;
        let daemon = DaemonProc::start(&dir.path().join("issues.db"), &[])
            .context("starting the private daemon")?;
        let mut t = DaemonTarget::new(spec.op, &daemon.db, spec.pool, spec.seed)?;
        t.describe = format!(
            "daemon:op={},pool={},seed={} (private daemon, pid {})",
            spec.op.name(),
            spec.pool,
            spec.seed,
            daemon.pid()
        );
        t.owned = Some(Owned {
            _daemon: daemon,
            _dir: dir,
        });
        Ok(t)
    }

    /// Connections opened so far (first uses, replacements and reconnects).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Operation `seq` as action `action` on its pooled connection.
    async fn op(&self, action: usize, seq: u64) -> Result<(), OpError> {
        let n = self.slots.len().max(1) as u64;
        let i = (seq % n) as usize;
        let Some(slot) = self.slots.get(i) else {
            return Err(OpError::new("error", "empty connection pool"));
        };
        let mut guard = match self.pool.lock_bound {
            None => slot.client.lock().await,
            Some(bound) => tokio::time::timeout(bound, slot.client.lock())
                .await
                .map_err(|_| {
                    OpError::new(
                        "pool_busy",
                        format!("connection {i} stayed busy for {bound:?}"),
                    )
                })?,
        };
        let calls = slot.calls.fetch_add(1, Ordering::Relaxed);
        let replace = self
            .pool
            .churn_every
            .is_some_and(|every| every > 0 && calls > 0 && calls % every == 0);
        // Taken out for the call: if the generator cancels it, the client is dropped with
        // it (a late reply can never answer another request) and the slot reconnects next
        // time.
        let mut client = match guard.take() {
            Some(c) if !replace => c,
            old => {
                drop(old);
                self.connects.fetch_add(1, Ordering::Relaxed);
                connect(&self.db, self.pool.call_timeout)
                    .await
                    .map_err(|e| match self.pool.connect_kind {
                        Some(kind) => OpError::new(
                            kind,
                            format!(
                                "connecting to the daemon of {}: {}",
                                self.db.display(),
                                e.message()
                            ),
                        ),
                        None => op_error(e),
                    })?
            }
        };
        let r = self.workload.run(&mut client, action, seq).await;
        // An error reply leaves the connection usable.
        let keep =
            !self.pool.drop_failed || r.as_ref().err().is_none_or(|e| e.api_code().is_some());
        if keep {
            *guard = Some(client);
        }
        r.map_err(op_error)
    }
}

fn check_pool(pool: usize) -> Result<()> {
    if !(1..=MAX_POOL).contains(&pool) {
        bail!("invalid pool {pool}: expected 1 to {MAX_POOL}");
    }
    Ok(())
}

impl Target for DaemonTarget {
    fn actions(&self) -> Vec<String> {
        self.workload.actions()
    }

    fn pick(&self, seq: u64) -> usize {
        self.workload.pick(seq)
    }

    fn call(&self, action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(self.op(action, seq))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// The built-in workloads: [`DaemonOp::Create`] and the [`MIX`].
struct OpWorkload {
    op: DaemonOp,
    seed: u64,
    /// Issues update and show pick from (mix only).
    ids: Vec<String>,
}

impl OpWorkload {
    fn hash(&self, seq: u64) -> u64 {
        splitmix64(self.seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    async fn run_op(
        &self,
        client: &mut Client,
        action: usize,
        seq: u64,
    ) -> Result<(), ClientError> {
        let h = self.hash(seq);
        let name = match self.op {
            DaemonOp::Create => "create",
            DaemonOp::Mix => MIX.get(action).map(|(n, _)| *n).unwrap_or("create"),
        };
        // `ids` is never empty for the mix (checked when seeding).
        let id = || {
            self.ids
                .get((h % self.ids.len().max(1) as u64) as usize)
                .cloned()
                .unwrap_or_else(|| "hl-1".into())
        };
        match name {
            "update" => {
                client
                    .update(UpdateArgs {
                        id: id(),
                        status: Some(if h & 1 == 0 {
                            Status::Open
                        } else {
                            Status::InProgress
                        }),
                        priority: Some(((h >> 8) % 5) as u8),
                        assignee: Some(Some(format!("agent-{}", (h >> 16) % 16))),
                        ..UpdateArgs::default()
                    })
                    .await?;
            }
            "show" => {
                client.show(id()).await?;
            }
            "list" => {
                client
                    .list(ListArgs {
                        status: Some(Status::Open),
                        limit: Some(READ_LIMIT),
                        ..ListArgs::default()
                    })
                    .await?;
            }
            "ready" => {
                client.ready(Some(READ_LIMIT)).await?;
            }
            _ => {
                client
                    .create(CreateArgs {
                        title: format!("maxrps {} {seq}", self.seed),
                        priority: Some((h % 5) as u8),
                        ..CreateArgs::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

impl Workload for OpWorkload {
    fn actions(&self) -> Vec<String> {
        match self.op {
            DaemonOp::Create => vec!["create".into()],
            DaemonOp::Mix => MIX.iter().map(|(n, _)| n.to_string()).collect(),
        }
    }

    fn pick(&self, seq: u64) -> usize {
        match self.op {
            DaemonOp::Create => 0,
            DaemonOp::Mix => {
                // A different stream than the fields' hash, so the action and its fields
                // are independent.
                weighted_index(
                    &MIX,
                    splitmix64(self.hash(seq) ^ 0x5851_f42d_4c95_7f2d) % 100,
                )
            }
        }
    }

    fn run<'a>(
        &'a self,
        client: &'a mut Client,
        action: usize,
        seq: u64,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        Box::pin(self.run_op(client, action, seq))
    }
}

/// The index of the action `roll` (in `0..100`) falls on in `mix`, whose weights are
/// percentages adding up to 100; 0 past the end.
pub fn weighted_index(mix: &[(&str, u64)], roll: u64) -> usize {
    let mut r = roll;
    for (i, (_, w)) in mix.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    0
}

fn op_error(e: ClientError) -> OpError {
    OpError::new(e.code(), e.message())
}

/// A daemon-only client of `db` (never direct mode: a run against the file would not be a
/// run against the daemon).
async fn connect(db: &Path, timeout: Duration) -> Result<Client, ClientError> {
    Client::connect(daemon_config(db, timeout)).await
}

/// Creates [`SEED_ISSUES`] issues in one batch; returns their ids.
async fn seed_issues(client: &mut Client, seed: u64) -> Result<Vec<String>> {
    let ops = (0..SEED_ISSUES)
        .map(|i| {
            Op::Create(CreateArgs {
                title: format!("mix seed {seed} {i}"),
                priority: Some((splitmix64(seed ^ i as u64) % 5) as u8),
                ..CreateArgs::default()
            })
        })
        .collect();
    create_batch(client, ops, "creating the mix's seed issues").await
}

/// Sends the creates `ops` in one batch and returns the ids of the issues they made, in
/// order; `what` names the batch in an error, which it is too when the batch answers fewer
/// issues than it was sent.
pub async fn create_batch(client: &mut Client, ops: Vec<Op>, what: &str) -> Result<Vec<String>> {
    let sent = ops.len();
    let replies = client.batch(ops).await.context(what.to_string())?;
    let ids: Vec<String> = replies
        .into_iter()
        .filter_map(|r| match r {
            Reply::Issue { issue } => Some(issue.id),
            _ => None,
        })
        .collect();
    if ids.len() != sent {
        bail!(
            "{what}: the batch answered {} issues, expected {sent}",
            ids.len()
        );
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        DaemonSpec::parse(spec)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn specs_parse_and_bad_values_are_named() {
        assert_eq!(DaemonSpec::parse("sim:servers=1").ok(), Some(None));
        let d = DaemonSpec::parse("daemon:op=mix,db=/x/i.db,pool=8,seed=3")
            .ok()
            .flatten();
        assert_eq!(
            d,
            Some(DaemonSpec {
                op: DaemonOp::Mix,
                db: Some("/x/i.db".into()),
                pool: 8,
                seed: 3
            })
        );
        let d = DaemonSpec::parse("daemon:op=create").ok().flatten();
        assert_eq!(
            d.map(|d| (d.op, d.db, d.pool)),
            Some((DaemonOp::Create, None, 32))
        );
        assert!(err("daemon:op=delete").contains("unknown op \"delete\""));
        assert!(err("daemon:op=create,speed=9").contains("unknown parameter \"speed\""));
        assert!(err("daemon:op=create,pool=0").contains("pool \"0\""));
        assert!(err("daemon:op=create,pool=x").contains("pool \"x\""));
        assert!(err("daemon:op=create,seed=-1").contains("seed \"-1\""));
        assert!(err("daemon:pool=4").contains("missing op"));
        assert!(err("daemon").contains("missing op"));
        assert!(err("daemon:op=create,op=mix").contains("given twice"));
    }

    #[test]
    fn unknown_kinds_mention_the_daemon() {
        let e = resolve("postgres://x").err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("unknown target \"postgres://x\""), "{e}");
        assert!(e.contains("noop") && e.contains(SPEC_HELP), "{e}");
    }

    #[test]
    fn the_mix_is_deterministic_and_near_its_weights() {
        let t = OpWorkload {
            op: DaemonOp::Mix,
            seed: 7,
            ids: vec!["hl-1".into()],
        };
        assert_eq!(MIX.iter().map(|(_, w)| w).sum::<u64>(), 100);
        let mut counts = [0u64; MIX.len()];
        for seq in 0..100_000 {
            let a = t.pick(seq);
            assert_eq!(a, t.pick(seq));
            counts[a] += 1;
        }
        for (i, (name, w)) in MIX.iter().enumerate() {
            let pct = counts[i] as f64 / 1_000.0;
            assert!((pct - *w as f64).abs() < 1.0, "{name}: {pct}% vs {w}%");
        }
    }
}
