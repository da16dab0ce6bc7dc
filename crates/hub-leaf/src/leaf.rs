//! A leaf: one agent's repository, worktree and task loop.
//!
//! Each leaf runs on a thread of its own with a single-threaded runtime and its own NATS
//! connection, like a separate process. One task owns the repository, so the leaf's own
//! commits and its broadcast-driven pulls happen one after the other and never race on
//! SQLite (the seed's `SQLITE_BUSY`). The tip watch runs beside it and only decides, through
//! the [`PullCoalescer`]; the owner does the pulls, between task steps and while it thinks.
//!
//! A task goes Open → Claim → Commit → Close:
//!
//! - **Open**: skip the task if it is marked done (another agent finished it).
//! - **Claim**: win the task's claim ([`Claims::claim`]); if another agent holds it, wait
//!   (bounded by three claim TTLs and more) until it is done or the claim is free (its
//!   holder died and the claim expired). The claim is refreshed every third of its TTL
//!   while the task runs.
//! - **Commit**: write the task's files into the worktree, read them back, prepare a commit
//!   on the local tip and push it. A fork reply names the hub's tip; the leaf re-applies its
//!   change on top of it and pushes again at once (a fork retry), up to
//!   [`LeafConfig::fork_retry_limit`] times, after which the task is fork unrecoverable.
//!   Once the push is in, the leaf pulls the commits it skipped. The local repository takes
//!   a commit only once the hub accepted it, so it never holds anything off the trunk. A
//!   push fenced because the claim was lost under the task (a long outage) is claimed and
//!   committed again, at most [`MAX_RECLAIMS`] times.
//! - **Close**: mark the task done, then release the claim.
//!
//! The worktree is a sparse checkout: the paths under [`LeafConfig::scope`] (the agent's own
//! slot and the shared directory), kept equal to the repository at the leaf's tip.

#![cfg(not(loom))]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{info_span, warn, Instrument as _};

use crate::claims::{Claim, ClaimError, Claims, DoneMarks};
use crate::nats::connect;
use crate::proto::{self, PullReply, PullRequest, PushReply, PushRequest};
use crate::repo::{Blob, Commit, NewCommit, Pull, Repo, RepoError, Tip};
use crate::tip::{Counters, Decision, PullCoalescer, TipWatch};
use crate::workload::Task;

/// How often an owed pull that failed is tried again while the leaf waits.
pub const OWED_PULL_RETRY: Duration = Duration::from_millis(200);

/// Watch errors in a row after which the tip watch is opened again.
pub const WATCH_REOPEN_AFTER: u32 = 10;

/// Most pushes of one task (fork retries and retryable refusals together): a bound over
/// [`LeafConfig::fork_retry_limit`] and the retry bound.
pub const MAX_PUSHES_PER_TASK: u32 = 10_000;

/// Most times one task is claimed again after its claim was lost under it (fenced).
pub const MAX_RECLAIMS: u32 = 3;

/// How a leaf runs.
#[derive(Debug, Clone)]
pub struct LeafConfig {
    /// The agent's name: claim holder and commit author.
    pub name: String,
    /// The slot whose tasks it runs.
    pub slot: usize,
    /// Its directory: `repo.db` and `worktree/` go here.
    pub dir: PathBuf,
    /// Path prefixes checked out in the worktree.
    pub scope: Vec<String>,
    /// The NATS URL.
    pub nats_url: String,
    /// The hub's subject prefix.
    pub prefix: String,
    /// The tip bucket.
    pub tip_bucket: String,
    /// The claims bucket.
    pub claims_bucket: String,
    /// The claim TTL (must match the bucket's).
    pub claim_ttl: Duration,
    /// The done-marks bucket.
    pub done_bucket: String,
    /// Fork retries per task before it is fork unrecoverable.
    pub fork_retry_limit: u32,
    /// Bound on one request (a push may wait behind others' fork retries).
    pub request_timeout: Duration,
    /// How long an operation is retried across NATS outages before the task fails.
    pub retry_bound: Duration,
    /// Die in the middle of this task (0-based index in the task list): after the claim is
    /// won and the files written, before the push; no release, no drain.
    pub kill_at_task: Option<usize>,
}

/// What a leaf tells its owner while it runs.
#[derive(Debug)]
pub enum LeafEvent {
    /// Every task is done (or failed); the leaf now serves broadcasts until told to stop.
    TasksDone {
        /// The leaf.
        name: String,
    },
    /// The leaf died mid-task (an injected fault): `remaining` are its unfinished tasks,
    /// the one in flight first.
    Killed {
        /// The leaf.
        name: String,
        /// The slot.
        slot: usize,
        /// Its unfinished tasks.
        remaining: Vec<Task>,
    },
}

/// A leaf's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeafStats {
    /// Tasks whose commit this leaf put on the trunk.
    pub completed: u64,
    /// Pushes answered with a fork.
    pub fork_retries: u64,
    /// Tasks that ran out of fork retries.
    pub fork_unrecoverable: u64,
    /// Claims won.
    pub claims_won: u64,
    /// Tasks whose first claim attempt was lost (held by another, or already done).
    pub claims_lost: u64,
    /// Tasks won after a lost attempt: the holder died and its claim expired, or it gave
    /// the task up.
    pub taken_over: u64,
    /// Pushes fenced.
    pub fenced: u64,
    /// Pushes answered `Duplicate`.
    pub duplicates: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Tip broadcasts received by the watch.
    pub broadcasts_received: u64,
    /// The coalescer's counts.
    pub coalescer: Counters,
    /// Pull requests sent because of broadcasts.
    pub broadcast_pull_requests: u64,
    /// Pull requests sent to catch up after a fork, or to drain.
    pub other_pull_requests: u64,
    /// `SQLITE_BUSY` errors.
    pub busy: u64,
    /// Requests retried after a timeout or a lost connection.
    pub request_retries: u64,
    /// Tasks claimed again after their claim was lost under them (the push fenced).
    pub reclaims: u64,
    /// Accepted commits the local repository could not take at once (caught up later).
    pub land_failures: u64,
    /// Watch entries that were not tips.
    pub undecodable_broadcasts: u64,
    /// Times the tip watch was opened again.
    pub watch_reopened: u64,
    /// Pulls still owed at the end (should be 0 after the drain).
    pub owed_at_end: u64,
}

/// How a leaf ended.
#[derive(Debug, Clone, Default)]
pub struct LeafOutcome {
    /// The leaf.
    pub name: String,
    /// The slot.
    pub slot: usize,
    /// Its counters.
    pub stats: LeafStats,
    /// Commit latency of each committed task, in milliseconds.
    pub commit_ms: Vec<f64>,
    /// The commits it put on the trunk (sequence number, hash).
    pub pushed: Vec<Tip>,
    /// Its tip at the end.
    pub tip: Option<Tip>,
    /// Its tree's manifest hash at the end.
    pub manifest_hash: String,
    /// Worktree paths that differ from the repository at the end (should be none).
    pub worktree_mismatches: Vec<String>,
    /// Errors that failed a task or the leaf, in order.
    pub errors: Vec<String>,
    /// Died by an injected fault.
    pub killed: bool,
    /// Its repository file.
    pub repo_path: PathBuf,
}

/// A running leaf.
#[derive(Debug)]
pub struct LeafHandle {
    name: String,
    thread: Option<std::thread::JoinHandle<LeafOutcome>>,
}

impl LeafHandle {
    /// The leaf's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the leaf to end (it ends after its tasks once `stop` is set, or when
    /// killed).
    pub fn join(mut self) -> LeafOutcome {
        self.join_inner()
    }

    /// [`LeafHandle::join`] bounded by `deadline`: `None` if the leaf is still running then
    /// (its thread is left to end by itself; a thread cannot be killed).
    pub fn join_by(mut self, deadline: std::time::Instant) -> Option<LeafOutcome> {
        loop {
            let finished = self.thread.as_ref().is_none_or(|t| t.is_finished());
            if finished {
                return Some(self.join_inner());
            }
            if std::time::Instant::now() >= deadline {
                drop(self.thread.take());
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join_inner(&mut self) -> LeafOutcome {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(outcome)) => outcome,
            Some(Err(p)) => LeafOutcome {
                name: self.name.clone(),
                errors: vec![format!(
                    "leaf thread panicked: {}",
                    crate::hub::panic_message(&p)
                )],
                ..LeafOutcome::default()
            },
            None => LeafOutcome::default(),
        }
    }
}

impl Drop for LeafHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join_inner();
        }
    }
}

/// Starts a leaf on its own thread, running `tasks` in order. It reports on `events`, then
/// serves broadcasts until `stop` turns `true`, drains (pulls up to the hub's tip) and ends.
/// A `stop` before its tasks are done makes it skip the rest (they count as failed).
pub fn spawn(
    config: LeafConfig,
    tasks: Vec<Task>,
    stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<LeafEvent>,
) -> std::io::Result<LeafHandle> {
    let name = config.name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("leaf-{}", config.name))
        .spawn(move || {
            let mut outcome = LeafOutcome {
                name: config.name.clone(),
                slot: config.slot,
                repo_path: config.dir.join("repo.db"),
                ..LeafOutcome::default()
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    outcome.errors.push(format!("runtime: {e}"));
                    let _ = events.send(LeafEvent::TasksDone {
                        name: config.name.clone(),
                    });
                    return outcome;
                }
            };
            rt.block_on(run(config, tasks, stop, events, outcome))
        })?;
    Ok(LeafHandle {
        name,
        thread: Some(thread),
    })
}

/// Shared between the owner and the watch task.
struct Shared {
    coalescer: PullCoalescer,
    wake: Notify,
    /// Entries the watch delivered (tips and undecodable values).
    received: AtomicU64,
    /// Entries that were not tips.
    undecodable: AtomicU64,
    /// Times the watch was opened again.
    reopened: AtomicU64,
}

struct Leaf {
    config: LeafConfig,
    client: async_nats::Client,
    claims: Claims,
    done: DoneMarks,
    repo: Repo,
    worktree: PathBuf,
    shared: Arc<Shared>,
    out: LeafOutcome,
}

/// How one task ended.
enum TaskEnd {
    Done,
    Killed,
}

/// How a task's commit step ended.
enum CommitEnd {
    /// On the trunk.
    Landed,
    /// Another claim of the task put it on the trunk.
    DoneByOther,
    /// The push was fenced: the claim was lost under the task.
    Fenced(String),
    /// Fork unrecoverable.
    GaveUp(String),
}

async fn run(
    config: LeafConfig,
    tasks: Vec<Task>,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<LeafEvent>,
    mut outcome: LeafOutcome,
) -> LeafOutcome {
    let name = config.name.clone();
    let mut leaf = match Leaf::open(config).await {
        Ok(l) => l,
        Err(e) => {
            outcome
                .errors
                .push(format!("leaf {name} did not start: {e}"));
            outcome.stats.failed = tasks.len() as u64;
            let _ = events.send(LeafEvent::TasksDone { name });
            return outcome;
        }
    };
    leaf.out = outcome;
    let watch = match TipWatch::open(
        &async_nats::jetstream::new(leaf.client.clone()),
        &leaf.config.tip_bucket,
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            leaf.out.errors.push(format!("tip watch: {e}"));
            leaf.out.stats.failed = tasks.len() as u64;
            let _ = events.send(LeafEvent::TasksDone { name });
            return leaf.finish().await;
        }
    };
    let watcher = tokio::spawn(watch_tips(
        watch,
        async_nats::jetstream::new(leaf.client.clone()),
        leaf.config.tip_bucket.clone(),
        Arc::clone(&leaf.shared),
        leaf.config.name.clone(),
    ));
    for (i, task) in tasks.iter().enumerate() {
        if *stop.borrow() {
            leaf.out.stats.failed += (tasks.len() - i) as u64;
            leaf.out
                .errors
                .push(format!("stopped with {} tasks left", tasks.len() - i));
            break;
        }
        leaf.think(task.think).await;
        leaf.serve_pulls().await;
        match leaf.run_task(task, i).await {
            TaskEnd::Done => {}
            TaskEnd::Killed => {
                watcher.abort();
                leaf.out.killed = true;
                leaf.out.stats.broadcasts_received = leaf.shared.received.load(Ordering::Relaxed);
                leaf.out.stats.coalescer = leaf.shared.coalescer.counters();
                let _ = events.send(LeafEvent::Killed {
                    name: name.clone(),
                    slot: leaf.config.slot,
                    remaining: tasks[i..].to_vec(),
                });
                // Dead: no release, no drain, no final pull.
                return std::mem::take(&mut leaf.out);
            }
        }
    }
    let _ = events.send(LeafEvent::TasksDone { name });
    // Serve broadcasts until told to stop (bounded by the owner's run bound).
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { break },
            _ = leaf.shared.wake.notified() => leaf.serve_pulls().await,
            // A pull that failed stays owed: try it again now and then.
            _ = tokio::time::sleep(OWED_PULL_RETRY) => leaf.serve_pulls().await,
        }
    }
    watcher.abort();
    leaf.drain().await;
    leaf.finish().await
}

/// The watch task: counts each broadcast, lets the coalescer decide, wakes the owner when a
/// pull is due. Errors (missed heartbeats while the server restarts) are paced; after
/// [`WATCH_REOPEN_AFTER`] in a row, or when the watch ends, it is opened again (it resumes
/// from the latest tip, and a pull fetches everything after the leaf's own sequence, so no
/// commit is missed). Ends when the owner aborts it.
async fn watch_tips(
    mut watch: TipWatch,
    js: async_nats::jetstream::Context,
    bucket: String,
    shared: Arc<Shared>,
    leaf: String,
) {
    let mut errors = 0u32;
    let mut pause = Duration::from_millis(20);
    loop {
        let next = watch.next().await;
        let reopen = match next {
            None => true,
            Some(Err(crate::tip::TipError::BadValue { .. })) => {
                // Received, but not a tip: counted so that the books show it.
                shared.received.fetch_add(1, Ordering::Relaxed);
                shared.undecodable.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(Err(e)) => {
                errors += 1;
                if errors % 50 == 1 {
                    warn!(leaf = %leaf, error = %e, "tip watch");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                errors >= WATCH_REOPEN_AFTER
            }
            Some(Ok(seen)) => {
                errors = 0;
                pause = Duration::from_millis(20);
                shared.received.fetch_add(1, Ordering::Relaxed);
                let decision = shared.coalescer.on_broadcast(seen.tip.seq);
                let _span = info_span!(
                    "broadcast",
                    leaf = %leaf,
                    seq = seen.tip.seq,
                    skipped_idempotent = decision == Decision::Skip,
                    pull_started = decision == Decision::Pull,
                    coalesced = decision == Decision::Coalesced,
                )
                .entered();
                if decision == Decision::Pull {
                    shared.wake.notify_one();
                }
                false
            }
        };
        if reopen {
            match TipWatch::open(&js, &bucket).await {
                Ok(w) => {
                    watch = w;
                    errors = 0;
                    shared.reopened.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    warn!(leaf = %leaf, error = %e, "reopening the tip watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Leaf {
    async fn open(config: LeafConfig) -> Result<Leaf, String> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| format!("create {}: {e}", config.dir.display()))?;
        let worktree = config.dir.join("worktree");
        std::fs::create_dir_all(&worktree)
            .map_err(|e| format!("create {}: {e}", worktree.display()))?;
        let repo = Repo::open_replica(&config.dir.join("repo.db")).map_err(|e| e.to_string())?;
        let local = repo.tip().map_err(|e| e.to_string())?.map_or(0, |t| t.seq);
        let client = connect(&config.nats_url).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client.clone());
        let claims = Claims::open(&js, &config.claims_bucket, config.claim_ttl)
            .await
            .map_err(|e| e.to_string())?;
        let done = DoneMarks::open(&js, &config.done_bucket)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Leaf {
            config,
            client,
            claims,
            done,
            repo,
            worktree,
            shared: Arc::new(Shared {
                coalescer: PullCoalescer::new(local),
                wake: Notify::new(),
                received: AtomicU64::new(0),
                undecodable: AtomicU64::new(0),
                reopened: AtomicU64::new(0),
            }),
            out: LeafOutcome::default(),
        })
    }

    fn local_tip(&mut self) -> Option<Tip> {
        match self.repo.tip() {
            Ok(t) => t,
            Err(e) => {
                self.note_repo_error(&e);
                None
            }
        }
    }

    fn note_repo_error(&mut self, e: &RepoError) {
        if e.is_busy() {
            self.out.stats.busy += 1;
        }
        self.out.errors.push(e.to_string());
    }

    /// Thinks for `d`, doing the pulls that come due meanwhile.
    async fn think(&mut self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = self.shared.wake.notified() => self.serve_pulls().await,
                _ = tokio::time::sleep(OWED_PULL_RETRY) => self.serve_pulls().await,
            }
        }
    }

    /// Does the pulls the coalescer has due: until the leaf has every announced tip, or a
    /// pull fails (it stays due and is retried at the next chance).
    async fn serve_pulls(&mut self) {
        for _ in 0..1000 {
            if !self.shared.coalescer.in_flight() {
                return;
            }
            let local = self.local_tip().map_or(0, |t| t.seq);
            let ok = if self.shared.coalescer.announced() > local {
                let span = info_span!(
                    "pull",
                    leaf = %self.config.name,
                    after_seq = local,
                    success = tracing::field::Empty,
                    commits = tracing::field::Empty,
                    manifest_hash = tracing::field::Empty,
                );
                let r = self.pull_to_end(true).instrument(span.clone()).await;
                span.record("success", r.is_ok());
                if let Ok(n) = r {
                    span.record("commits", n);
                    if !span.is_disabled() {
                        if let Ok(h) = self.repo.manifest_hash() {
                            span.record("manifest_hash", h.as_str());
                        }
                    }
                }
                r.is_ok()
            } else {
                true
            };
            let local = self.local_tip().map_or(0, |t| t.seq);
            if !self.shared.coalescer.on_pull_done(local) {
                return;
            }
            if !ok {
                // Still due; try again at the next chance rather than spin.
                return;
            }
        }
    }

    /// Pulls until the hub says nothing more (bounded); returns the commits applied.
    async fn pull_to_end(&mut self, broadcast: bool) -> Result<usize, String> {
        let mut applied = 0;
        for _ in 0..100_000 {
            let after = self.local_tip().map_or(0, |t| t.seq);
            if broadcast {
                self.out.stats.broadcast_pull_requests += 1;
            } else {
                self.out.stats.other_pull_requests += 1;
            }
            let req = PullRequest {
                leaf: self.config.name.clone(),
                after_seq: after,
            };
            let subject = proto::pull_subject(&self.config.prefix);
            let body = self.request(&subject, proto::encode(&req)).await?;
            match proto::decode::<PullReply>("pull reply", &body).map_err(|e| e.to_string())? {
                PullReply::Failed { error } => return Err(format!("pull: {error}")),
                PullReply::Commits { pull, .. } => {
                    let more = pull.more;
                    applied += self.apply_pull(&pull)?;
                    if !more {
                        return Ok(applied);
                    }
                }
            }
        }
        Err("pull did not end within 100,000 replies".to_string())
    }

    /// Applies pulled commits to the repository and the worktree.
    fn apply_pull(&mut self, pull: &Pull) -> Result<usize, String> {
        if pull.commits.is_empty() {
            return Ok(0);
        }
        let n = match self.repo.apply(&pull.commits, &pull.blobs) {
            Ok(n) => n,
            Err(e) => {
                self.note_repo_error(&e);
                return Err(e.to_string());
            }
        };
        if let Some(last) = pull.last() {
            self.shared.coalescer.on_local(last.seq);
        }
        self.checkout_changes(&pull.commits)?;
        Ok(n)
    }

    /// After an accepted push: applies the leaf's own commit if it goes on the local tip,
    /// else pulls up to the hub's tip, which brings the commits a fork skipped and the
    /// leaf's own.
    async fn land(
        &mut self,
        parent: Option<&Tip>,
        own: &Commit,
        own_blobs: &[Blob],
    ) -> Result<(), String> {
        if self.local_tip().as_ref() == parent {
            if let Err(e) = self.repo.apply(std::slice::from_ref(own), own_blobs) {
                self.note_repo_error(&e);
                return Err(e.to_string());
            }
            self.checkout_changes(std::slice::from_ref(own))?;
        } else {
            self.pull_to_end(false).await?;
        }
        let local = self.local_tip().map_or(0, |t| t.seq);
        self.shared.coalescer.on_local(local);
        Ok(())
    }

    /// Brings the worktree's in-scope paths touched by `commits` to the local tip.
    fn checkout_changes(&mut self, commits: &[Commit]) -> Result<(), String> {
        let paths: Vec<String> = commits
            .iter()
            .flat_map(|c| c.changes.iter().map(|ch| ch.path.clone()))
            .filter(|p| self.in_scope(p))
            .collect();
        for p in paths {
            self.checkout(&p)?;
        }
        Ok(())
    }

    fn in_scope(&self, path: &str) -> bool {
        self.config.scope.iter().any(|p| path.starts_with(p))
    }

    /// Makes the worktree's `path` what the repository holds at its tip.
    fn checkout(&mut self, path: &str) -> Result<(), String> {
        let file = self.worktree.join(path);
        match self.repo.file(path) {
            Ok(Some(bytes)) => write_file(&file, &bytes),
            Ok(None) => match std::fs::remove_file(&file) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("remove {}: {e}", file.display())),
            },
            Err(e) => {
                self.note_repo_error(&e);
                Err(e.to_string())
            }
        }
    }

    /// One request, retried on timeouts and lost connections until `retry_bound`.
    async fn request(&mut self, subject: &str, body: bytes::Bytes) -> Result<Vec<u8>, String> {
        let (client, timeout) = (self.client.clone(), self.config.request_timeout);
        let op = || {
            let (client, body) = (client.clone(), body.clone());
            async move {
                match tokio::time::timeout(timeout, client.request(subject.to_string(), body)).await
                {
                    Ok(Ok(msg)) => Ok(msg.payload.to_vec()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no reply within {timeout:?}")),
                }
            }
        };
        let what = format!("request to {subject}");
        retrying(
            &what,
            self.config.retry_bound,
            &mut self.out.stats.request_retries,
            |_| true,
            op,
        )
        .await
    }

    /// A claims or done-marks operation, retried on NATS errors until `retry_bound`.
    async fn retry_claims<T, F, Fut>(&mut self, what: &str, op: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClaimError>>,
    {
        let transient = |e: &ClaimError| matches!(e, ClaimError::Nats { .. });
        retrying(
            what,
            self.config.retry_bound,
            &mut self.out.stats.request_retries,
            transient,
            op,
        )
        .await
    }

    fn fail(&mut self, task: &Task, why: String) -> TaskEnd {
        self.out.stats.failed += 1;
        self.out.errors.push(format!("task {}: {why}", task.id));
        TaskEnd::Done
    }

    /// Open → Claim → Commit → Close. A claim lost under the task (its push fenced: a long
    /// outage kept the leaf from refreshing it) is claimed again, at most [`MAX_RECLAIMS`]
    /// times.
    async fn run_task(&mut self, task: &Task, index: usize) -> TaskEnd {
        for attempt in 0..=MAX_RECLAIMS {
            let first = attempt == 0;
            // Open and Claim.
            let claim = match self.claim(task, first).await {
                Ok(Some(c)) => c,
                Ok(None) => return TaskEnd::Done,
                Err(e) => return self.fail(task, e),
            };
            if !first {
                self.out.stats.reclaims += 1;
            }
            let refreshing = Arc::new(AtomicBool::new(true));
            let current = Arc::new(Mutex::new(claim.clone()));
            let refresher = tokio::spawn(refresh_claim(
                self.claims.clone(),
                Arc::clone(&current),
                Arc::clone(&refreshing),
            ));
            // Write the task's files into the worktree.
            for f in &task.files {
                if let Err(e) = write_file(&self.worktree.join(&f.path), &f.content) {
                    refresher.abort();
                    self.release(&current, &claim).await;
                    return self.fail(task, e);
                }
            }
            if first && self.config.kill_at_task == Some(index) {
                refresher.abort();
                return TaskEnd::Killed;
            }
            let end = self.commit(task, &claim).await;
            refreshing.store(false, Ordering::Relaxed);
            refresher.abort();
            let why = match end {
                Ok(CommitEnd::Landed) | Ok(CommitEnd::DoneByOther) => {
                    // Close: done first, then release.
                    let (id, name) = (task.id.clone(), self.config.name.clone());
                    let done = self.done.clone();
                    let marked = self
                        .retry_claims("mark done", || done.mark(&id, &name))
                        .await;
                    self.release(&current, &claim).await;
                    if let Err(e) = marked {
                        // The commit is on the trunk; only the mark is missing.
                        self.out
                            .errors
                            .push(format!("task {}: committed but {e}", task.id));
                    }
                    return TaskEnd::Done;
                }
                Ok(CommitEnd::Fenced(why)) if attempt < MAX_RECLAIMS => {
                    self.restore(task);
                    self.release(&current, &claim).await;
                    warn!(task = %task.id, why = %why, "fenced; claiming again");
                    continue;
                }
                Ok(CommitEnd::Fenced(why)) | Ok(CommitEnd::GaveUp(why)) | Err(why) => why,
            };
            // Not on the trunk: put the worktree back as the repository has it, and release
            // the claim so that another agent can do the task.
            self.restore(task);
            self.release(&current, &claim).await;
            return self.fail(task, why);
        }
        TaskEnd::Done
    }

    /// Puts the worktree's copy of the task's files back to the repository's.
    fn restore(&mut self, task: &Task) {
        for f in &task.files {
            if let Err(e) = self.checkout(&f.path) {
                self.out.errors.push(e);
            }
        }
    }

    /// Releases the claim (its latest revision); a claim that expired meanwhile needs none.
    async fn release(&mut self, current: &Mutex<Claim>, claim: &Claim) {
        let c = current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| claim.clone());
        match self.claims.release(&c).await {
            Ok(()) => {}
            Err(ClaimError::Lost { .. }) => {
                // A refresh applied but unacknowledged moved the revision: adopt it once.
                if let Ok(Some(now)) = self.claims.adopt(&c).await {
                    let _ = self.claims.release(&now).await;
                }
            }
            Err(e) => warn!(task = %c.task, error = %e, "release"),
        }
    }

    /// Open and Claim: `Ok(None)` when the task is done by someone else. `first`: the first
    /// claim of the task by this leaf (a re-claim after a fence is not counted again).
    ///
    /// The done mark is read after the claim is won (a finisher marks done before it
    /// releases, so a claim won afterwards sees the mark) and after each lost attempt: one
    /// round trip per task when nobody else is at it.
    async fn claim(&mut self, task: &Task, first: bool) -> Result<Option<Claim>, String> {
        let until = Instant::now() + self.config.claim_ttl * 3 + self.config.retry_bound;
        let mut lost_once = false;
        loop {
            let (id, name) = (task.id.clone(), self.config.name.clone());
            let done = self.done.clone();
            let claims = self.claims.clone();
            let won = self
                .retry_claims("claim", || claims.claim(&id, &name))
                .await?;
            let finished = self
                .retry_claims("read done mark", || done.done_by(&id))
                .await?
                .is_some();
            match won {
                Some(claim) if finished => {
                    // Done before we won it (its finisher released): not ours.
                    let _ = self.claims.release(&claim).await;
                }
                Some(claim) => {
                    if first {
                        self.out.stats.claims_won += 1;
                        if lost_once {
                            self.out.stats.taken_over += 1;
                        }
                    }
                    return Ok(Some(claim));
                }
                None => {}
            }
            if first && !lost_once {
                self.out.stats.claims_lost += 1;
            }
            lost_once = true;
            if finished {
                return Ok(None);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "claim of {:?} still held by another agent after {:?}",
                    task.id,
                    self.config.claim_ttl * 3 + self.config.retry_bound
                ));
            }
            // Wait for the holder to finish or its claim to expire, pulling meanwhile.
            let pause = (self.config.claim_ttl / 10)
                .clamp(Duration::from_millis(10), Duration::from_millis(200));
            self.think(pause).await;
            self.serve_pulls().await;
        }
    }

    /// Commit: prepare on the local tip, push, fork-retry.
    async fn commit(&mut self, task: &Task, claim: &Claim) -> Result<CommitEnd, String> {
        let span = info_span!(
            "commit",
            leaf = %self.config.name,
            task = %task.id,
            seq = tracing::field::Empty,
            fork_retried = false,
            fork_retries = 0u32,
            fork_retried_succeeded = false,
            manifest_hash = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let mut files = Vec::with_capacity(task.files.len());
        for f in &task.files {
            let path = self.worktree.join(&f.path);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
            files.push((f.path.clone(), Some(bytes)));
        }
        let change = NewCommit {
            author: self.config.name.clone(),
            message: task.id.clone(),
            created_ms: now_ms(),
            files,
        };
        let mut forks = 0u32;
        let subject = proto::push_subject(&self.config.prefix);
        // The tip the change goes on. After a fork it is the hub's tip, which the local
        // repository may not have yet: the commits in between are pulled once the push is
        // in, so a fork retry goes out at once.
        let mut parent = self.local_tip();
        for _ in 0..MAX_PUSHES_PER_TASK {
            let (commit, blobs) =
                Repo::prepare(parent.as_ref(), &change).map_err(|e| e.to_string())?;
            let req = PushRequest {
                leaf: self.config.name.clone(),
                task: task.id.clone(),
                token: claim.token,
                expected: parent.clone(),
                commit: commit.clone(),
                blobs: blobs.clone(),
            };
            let push_span = info_span!(
                parent: &span,
                "push",
                leaf = %self.config.name,
                seq = commit.seq,
                outcome = tracing::field::Empty
            );
            let body = self
                .request(&subject, proto::encode(&req))
                .instrument(push_span.clone())
                .await?;
            let reply =
                proto::decode::<PushReply>("push reply", &body).map_err(|e| e.to_string())?;
            match reply {
                PushReply::Accepted { .. } => {
                    push_span.record("outcome", "accepted");
                    // On the trunk: counted now, whatever happens to the local copy.
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    self.out.commit_ms.push(ms);
                    self.out.pushed.push(commit.tip());
                    self.out.stats.completed += 1;
                    span.record("seq", commit.seq);
                    span.record("fork_retried", forks > 0);
                    span.record("fork_retries", forks);
                    span.record("fork_retried_succeeded", forks > 0);
                    if let Err(e) = self.land(parent.as_ref(), &commit, &blobs).await {
                        // The local copy catches up at the next pull or the drain.
                        self.out.stats.land_failures += 1;
                        warn!(task = %task.id, error = %e, "landing an accepted commit locally");
                    } else if !span.is_disabled() {
                        if let Ok(h) = self.repo.manifest_hash() {
                            span.record("manifest_hash", h.as_str());
                        }
                    }
                    return Ok(CommitEnd::Landed);
                }
                PushReply::Forked { tip } => {
                    push_span.record("outcome", "forked");
                    forks += 1;
                    span.record("fork_retried", true);
                    span.record("fork_retries", forks);
                    if forks > self.config.fork_retry_limit {
                        self.out.stats.fork_unrecoverable += 1;
                        return Ok(CommitEnd::GaveUp(format!(
                            "fork unrecoverable after {} fork retries",
                            self.config.fork_retry_limit
                        )));
                    }
                    self.out.stats.fork_retries += 1;
                    parent = tip;
                }
                PushReply::Duplicate { seq } => {
                    // Another claim of the task committed it (its done mark lagged).
                    push_span.record("outcome", "duplicate");
                    self.out.stats.duplicates += 1;
                    warn!(task = %task.id, seq, "already on the trunk");
                    return Ok(CommitEnd::DoneByOther);
                }
                PushReply::Fenced { why } => {
                    push_span.record("outcome", "fenced");
                    self.out.stats.fenced += 1;
                    return Ok(CommitEnd::Fenced(format!("fenced: {why}")));
                }
                PushReply::Failed { error, retryable } => {
                    push_span.record("outcome", "failed");
                    if !retryable || started.elapsed() > self.config.retry_bound {
                        return Err(format!("push refused: {error}"));
                    }
                    self.out.stats.request_retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(format!("no verdict after {MAX_PUSHES_PER_TASK} pushes"))
    }

    /// Pulls up to the hub's tip (the hub no longer moves when this is called).
    async fn drain(&mut self) {
        for _ in 0..3 {
            match self.pull_to_end(false).await {
                Ok(_) => break,
                Err(e) => {
                    self.out.errors.push(format!("drain: {e}"));
                }
            }
        }
        let local = self.local_tip().map_or(0, |t| t.seq);
        self.shared.coalescer.on_local(local);
        if self.shared.coalescer.in_flight() {
            self.shared.coalescer.on_pull_done(local);
        }
    }

    /// Final counters, tip and worktree check.
    async fn finish(mut self) -> LeafOutcome {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        self.out.stats.broadcasts_received = self.shared.received.load(Ordering::Relaxed);
        self.out.stats.undecodable_broadcasts = self.shared.undecodable.load(Ordering::Relaxed);
        self.out.stats.watch_reopened = self.shared.reopened.load(Ordering::Relaxed);
        self.out.stats.coalescer = self.shared.coalescer.counters();
        let c = &self.shared.coalescer;
        self.out.stats.owed_at_end = u64::from(c.in_flight() || c.local() < c.announced());
        self.out.tip = self.local_tip();
        match self.repo.manifest_hash() {
            Ok(h) => self.out.manifest_hash = h,
            Err(e) => self.note_repo_error(&e),
        }
        match self.repo.files() {
            Ok(files) => {
                let scoped: Vec<String> = files
                    .into_iter()
                    .map(|(p, _)| p)
                    .filter(|p| self.in_scope(p))
                    .collect();
                for path in &scoped {
                    let want = match self.repo.file(path) {
                        Ok(w) => w,
                        Err(e) => {
                            self.note_repo_error(&e);
                            None
                        }
                    };
                    let have = std::fs::read(self.worktree.join(path)).ok();
                    if want != have {
                        self.out.worktree_mismatches.push(path.clone());
                    }
                }
                // Files in the worktree that the repository does not have.
                let mut stray = Vec::new();
                list_files(&self.worktree, &self.worktree, 0, &mut stray);
                for path in stray {
                    if !scoped.contains(&path) {
                        self.out
                            .worktree_mismatches
                            .push(format!("{path} (not in the repository)"));
                    }
                }
            }
            Err(e) => self.note_repo_error(&e),
        }
        self.out
    }
}

/// Runs `op` until it succeeds, fails in a way `transient` says a retry cannot fix, or
/// `bound` has passed; between tries it waits 20 ms, doubling up to 500 ms, and counts each
/// retry in `retries`.
async fn retrying<T, E, F, Fut>(
    what: &str,
    bound: Duration,
    retries: &mut u64,
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let until = Instant::now() + bound;
    let mut delay = Duration::from_millis(20);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !transient(&e) => return Err(format!("{what}: {e}")),
            Err(e) if Instant::now() + delay >= until => {
                return Err(format!("{what} failed for {bound:?}: {e}"))
            }
            Err(_) => {
                *retries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Refreshes the claim every third of its TTL while `refreshing`; stops once it is lost (the
/// hub then fences the push).
async fn refresh_claim(claims: Claims, current: Arc<Mutex<Claim>>, refreshing: Arc<AtomicBool>) {
    let every = claims.ttl() / 3;
    while refreshing.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        if !refreshing.load(Ordering::Relaxed) {
            break;
        }
        let claim = match current.lock() {
            Ok(c) => c.clone(),
            Err(_) => break,
        };
        match claims.refresh(&claim).await {
            Ok(c) => {
                if let Ok(mut g) = current.lock() {
                    *g = c;
                }
            }
            Err(ClaimError::Lost { .. }) => {
                // Perhaps our own refresh was applied and its acknowledgement lost (a server
                // restart): if the claim is still ours, go on from its current revision.
                match claims.adopt(&claim).await {
                    Ok(Some(c)) => {
                        if let Ok(mut g) = current.lock() {
                            *g = c;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            Err(_) => {} // an outage: try again next time
        }
    }
}

/// Every file under `dir`, as paths relative to `root` with `/` separators (at most 16
/// levels deep; the worktree's paths are two).
fn list_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            list_files(root, &path, depth + 1, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))
}
