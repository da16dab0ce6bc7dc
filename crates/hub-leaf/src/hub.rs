//! The hub: the trunk's one writer, serving pushes and pulls over NATS request-reply
//! (see [`crate::proto`] for why NATS and for the subjects).
//!
//! The hub runs on a thread of its own with a single-threaded runtime, so its repository has
//! exactly one writer and every push is handled in arrival order, one at a time:
//!
//! - **Push**: a compare-and-swap on the trunk tip ([`Repo::apply_if_tip`]), after the
//!   fencing check: the pusher's token must be the task's live claim
//!   ([`Claims::live_until`], read concurrently as pushes arrive; an answer older than one
//!   claim TTL or about to run out when the push's turn comes is not trusted, and the leaf
//!   sends again), and never lower than a token already seen live for the task. A task already on the trunk gets [`PushReply::Duplicate`] (or `Accepted` with
//!   `new: false` for a retry of the same commit). On a mismatch the hub answers
//!   [`PushReply::Forked`] with the current tip only, so the leaf re-applies its change on
//!   top and retries at once; it pulls the commits it lacks once its push is in. The fork
//!   reply is small and quick to make, and the pull is served while the hub would
//!   otherwise wait for the retry.
//! - **Fork grants**: after a fork reply the hub keeps the trunk for that leaf's retry for
//!   up to [`HubConfig::grant_timeout`], parking other pushes meanwhile (FIFO, one place per
//!   leaf: a re-sent push takes its earlier copy's place; bounded by
//!   [`HubConfig::max_parked`]). Without it, N leaves in a tight loop all race for each
//!   commit: one wins, N−1 rebase for nothing, and the waste grows with N² while a loser
//!   can lose any number of times. With it, a leaf forks about once per contended commit,
//!   turns are first come first served, and the rebase work done is the work kept.
//! - **Pull**: exactly the commits after the leaf's sequence number, at most
//!   [`MAX_PULL_COMMITS`] commits and about [`MAX_PULL_BYTES`] of blobs per reply (`more`
//!   says to ask again): no negotiation, nothing to run out of rounds. Recent commits are
//!   served from memory (the last [`HubConfig::cache_commits`]), older ones from SQLite.
//! - **Tip broadcast**: each new tip is put in the tip bucket by a publisher task that
//!   always publishes the latest, at most once per [`HubConfig::tip_interval`] (tips made
//!   meanwhile coalesce).

#![cfg(not(loom))]

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use tokio::time::Instant;
use tracing::{info_span, warn};

use crate::claims::Claims;
use crate::nats::{connect, NatsError};
use crate::proto::{
    self, PullReply, PullRequest, PushReply, PushRequest, MAX_PULL_BYTES, MAX_PULL_COMMITS,
};
use crate::repo::{Blob, Commit, Pull, Repo, RepoError, Tip};
use crate::tip::TipBroadcast;

/// Longest wait for the hub to be up (connected, subscribed, repository open).
pub const START_BOUND: Duration = Duration::from_secs(30);

/// How long before a claim's end a cached fencing answer stops being trusted.
pub const FENCE_MARGIN: Duration = Duration::from_millis(100);

/// Most fencing checks in flight at once; pushes beyond it are refused as overloaded.
pub const MAX_CHECKS_IN_FLIGHT: u64 = 4096;

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The subject prefix (see [`crate::proto`]).
    pub prefix: String,
    /// The tip bucket.
    pub tip_bucket: String,
    /// The claims bucket and its TTL, for the fencing check; `None` turns fencing off.
    pub claims: Option<(String, Duration)>,
    /// How long a fork grant keeps the trunk for the forked leaf's retry; zero turns grants
    /// off (every push is decided as it arrives, so forked leaves race again).
    pub grant_timeout: Duration,
    /// Most pushes parked behind a grant.
    pub max_parked: usize,
    /// Recent commits kept in memory for pulls.
    pub cache_commits: usize,
    /// Least time between two tip broadcasts: tips made meanwhile coalesce and only the
    /// latest is put. Every leaf wakes for every broadcast, so in a tight loop this is what
    /// keeps broadcast traffic from growing as commits × leaves.
    pub tip_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            prefix: "herd.hub".to_string(),
            tip_bucket: "herd_tip".to_string(),
            claims: None,
            grant_timeout: Duration::from_millis(500),
            max_parked: 8192,
            cache_commits: 4096,
            tip_interval: Duration::from_millis(2),
        }
    }
}

/// What can stop the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// NATS could not be reached.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// A NATS operation failed at start.
    #[error("hub {op}: {detail}")]
    Setup {
        /// What was being done.
        op: &'static str,
        /// The error.
        detail: String,
    },
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The hub did not come up in time.
    #[error("the hub did not come up within {0:?}")]
    StartTimeout(Duration),
    /// The hub's thread panicked.
    #[error("the hub's thread panicked: {0}")]
    Panicked(String),
}

/// The hub's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Commits on the trunk (the tip's sequence number).
    pub commits: u64,
    /// Push requests received.
    pub pushes: u64,
    /// Pushes stored.
    pub accepted: u64,
    /// Pushes of a commit already stored (retries), answered `Accepted { new: false }`.
    pub retried: u64,
    /// Pushes answered with a fork.
    pub forks: u64,
    /// Pushes parked behind a grant.
    pub parked: u64,
    /// Parked pushes replaced by the same leaf's newer push (a re-send after a timeout).
    pub parked_replaced: u64,
    /// Grants that expired without the leaf's retry.
    pub grants_expired: u64,
    /// Pushes fenced.
    pub fenced: u64,
    /// Pushes answered `Duplicate`.
    pub duplicates: u64,
    /// Pushes that failed (bad commit, overload, storage error).
    pub failed: u64,
    /// Pull requests served.
    pub pulls: u64,
    /// Pulls served from memory.
    pub pulls_cached: u64,
    /// `SQLITE_BUSY` errors.
    pub busy: u64,
    /// Tips published.
    pub tips_published: u64,
    /// Fork grants used by the forked leaf's retry.
    pub grants_used: u64,
    /// Total time from a fork reply to the forked leaf's retry reaching the queue, in
    /// microseconds (the leaf's rebase plus two network hops and the fencing check).
    pub grant_wait_us: u64,
    /// Total time spent deciding pushes (SQLite included), in microseconds.
    pub decide_us: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    pushes: AtomicU64,
    accepted: AtomicU64,
    retried: AtomicU64,
    forks: AtomicU64,
    parked: AtomicU64,
    parked_replaced: AtomicU64,
    grants_expired: AtomicU64,
    fenced: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    pulls: AtomicU64,
    pulls_cached: AtomicU64,
    busy: AtomicU64,
    tips_published: AtomicU64,
    grants_used: AtomicU64,
    grant_wait_us: AtomicU64,
    decide_us: AtomicU64,
    checks_in_flight: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> HubStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HubStats {
            commits: g(&self.commits),
            pushes: g(&self.pushes),
            accepted: g(&self.accepted),
            retried: g(&self.retried),
            forks: g(&self.forks),
            parked: g(&self.parked),
            parked_replaced: g(&self.parked_replaced),
            grants_expired: g(&self.grants_expired),
            fenced: g(&self.fenced),
            duplicates: g(&self.duplicates),
            failed: g(&self.failed),
            pulls: g(&self.pulls),
            pulls_cached: g(&self.pulls_cached),
            busy: g(&self.busy),
            tips_published: g(&self.tips_published),
            grants_used: g(&self.grants_used),
            grant_wait_us: g(&self.grant_wait_us),
            decide_us: g(&self.decide_us),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A running hub. Dropping it stops it (as [`Hub::stop`] does, ignoring the result).
#[derive(Debug)]
pub struct Hub {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<Result<(), HubError>>>,
    counters: Arc<Counters>,
    tip: Arc<Mutex<Option<Tip>>>,
    repo_path: PathBuf,
}

impl Hub {
    /// Starts the hub on its own thread: connects to `url`, opens (or creates) the
    /// repository at `repo_path`, the tip bucket and the claims bucket, and subscribes.
    /// Returns once it serves requests (bounded by [`START_BOUND`]).
    pub fn start(url: &str, repo_path: &Path, config: HubConfig) -> Result<Hub, HubError> {
        let counters = Arc::new(Counters::default());
        let tip = Arc::new(Mutex::new(None));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), HubError>>();
        let thread = {
            let url = url.to_string();
            let repo_path = repo_path.to_path_buf();
            let counters = Arc::clone(&counters);
            let tip = Arc::clone(&tip);
            std::thread::Builder::new()
                .name("hub".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| HubError::Setup {
                            op: "runtime",
                            detail: e.to_string(),
                        })?;
                    rt.block_on(serve(
                        url, repo_path, config, counters, tip, stop_rx, ready_tx,
                    ))
                })
                .map_err(|e| HubError::Setup {
                    op: "spawn thread",
                    detail: e.to_string(),
                })?
        };
        let mut hub = Hub {
            stop: Some(stop_tx),
            thread: Some(thread),
            counters,
            tip,
            repo_path: repo_path.to_path_buf(),
        };
        match ready_rx.recv_timeout(START_BOUND) {
            Ok(Ok(())) => Ok(hub),
            Ok(Err(e)) => {
                let _ = hub.shutdown();
                Err(e)
            }
            Err(_) => match hub.shutdown() {
                Err(e) => Err(e),
                Ok(()) => Err(HubError::StartTimeout(START_BOUND)),
            },
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> HubStats {
        self.counters.snapshot()
    }

    /// The trunk tip.
    pub fn tip(&self) -> Option<Tip> {
        self.tip.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The repository file.
    pub fn repo_path(&self) -> &Path {
        &self.repo_path
    }

    /// Stops serving, waits for the thread and returns the final counters.
    pub fn stop(mut self) -> Result<HubStats, HubError> {
        self.shutdown()?;
        Ok(self.counters.snapshot())
    }

    fn shutdown(&mut self) -> Result<(), HubError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        match self.thread.take() {
            None => Ok(()),
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(p) => Err(HubError::Panicked(panic_message(&p))),
            },
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

/// A fencing answer: `Ok(Some(t))` = live until `t`; `Ok(None)` = not the live claim;
/// `Err((why, retryable))` = the check itself failed.
type Fence = Result<Option<SystemTime>, (String, bool)>;

/// A push waiting for its turn, its fencing check done.
#[derive(Debug)]
struct Pending {
    req: PushRequest,
    reply: Option<async_nats::Subject>,
    /// The fencing check: `Ok(Some(t))` = the token is the live claim, which nobody else
    /// can win before `t` unless its holder releases it.
    fence: Fence,
    /// When the fencing answer was read.
    checked_at: Instant,
    /// Arrival order at the hub (a later copy of a leaf's push replaces an earlier one).
    arrival: u64,
}

/// The trunk kept for one leaf's fork retry.
#[derive(Debug)]
struct Grant {
    leaf: String,
    task: String,
    token: u64,
    /// The forked push's fencing answer: live until then.
    live_until: Option<SystemTime>,
    /// When that answer was read.
    checked_at: Instant,
    since: Instant,
    deadline: Instant,
}

/// A commit with the blobs it refers to, as served to pulls.
#[derive(Debug)]
struct Cached {
    commit: Commit,
    blobs: Vec<Blob>,
}

struct State {
    repo: Repo,
    client: async_nats::Client,
    config: HubConfig,
    counters: Arc<Counters>,
    tip_shared: Arc<Mutex<Option<Tip>>>,
    tip_tx: tokio::sync::watch::Sender<Option<Tip>>,
    tip: Option<Tip>,
    cache: VecDeque<Cached>,
    /// Task id → (sequence number, commit hash) of its commit on the trunk.
    task_commits: HashMap<String, (u64, String)>,
    /// Task id → highest fencing token accepted.
    max_token: HashMap<String, u64>,
    grant: Option<Grant>,
    parked: VecDeque<Pending>,
    /// Pushes received so far (numbers their arrival).
    arrivals: u64,
}

async fn serve(
    url: String,
    repo_path: PathBuf,
    config: HubConfig,
    counters: Arc<Counters>,
    tip_shared: Arc<Mutex<Option<Tip>>>,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<(), HubError>>,
) -> Result<(), HubError> {
    let setup = async {
        let client = connect(&url).await?;
        let js = async_nats::jetstream::new(client.clone());
        let broadcast = TipBroadcast::open(&js, &config.tip_bucket)
            .await
            .map_err(|e| HubError::Setup {
                op: "open tip bucket",
                detail: e.to_string(),
            })?;
        let claims =
            match &config.claims {
                None => None,
                Some((bucket, ttl)) => Some(Claims::open(&js, bucket, *ttl).await.map_err(
                    |e| HubError::Setup {
                        op: "open claims bucket",
                        detail: e.to_string(),
                    },
                )?),
            };
        let repo = Repo::open(&repo_path)?;
        let push_sub = client
            .subscribe(proto::push_subject(&config.prefix))
            .await
            .map_err(|e| HubError::Setup {
                op: "subscribe to pushes",
                detail: e.to_string(),
            })?;
        let pull_sub = client
            .subscribe(proto::pull_subject(&config.prefix))
            .await
            .map_err(|e| HubError::Setup {
                op: "subscribe to pulls",
                detail: e.to_string(),
            })?;
        client.flush().await.map_err(|e| HubError::Setup {
            op: "flush subscriptions",
            detail: e.to_string(),
        })?;
        Ok::<_, HubError>((client, broadcast, claims, repo, push_sub, pull_sub))
    };
    let (client, broadcast, claims, repo, mut push_sub, mut pull_sub) = match setup.await {
        Ok(parts) => parts,
        Err(e) => {
            let _ = ready.send(Err(HubError::Setup {
                op: "start",
                detail: e.to_string(),
            }));
            return Ok(());
        }
    };
    let tip = repo.tip()?;
    let (tip_tx, tip_rx) = tokio::sync::watch::channel(tip.clone());
    let mut state = State {
        repo,
        client: client.clone(),
        config: config.clone(),
        counters: Arc::clone(&counters),
        tip_shared,
        tip_tx,
        tip: None,
        cache: VecDeque::new(),
        task_commits: HashMap::new(),
        max_token: HashMap::new(),
        grant: None,
        parked: VecDeque::new(),
        arrivals: 0,
    };
    state.load()?;
    let publisher = tokio::spawn(publish_tips(
        broadcast,
        tip_rx,
        Arc::clone(&counters),
        config.tip_interval,
    ));
    let (checked_tx, mut checked_rx) = tokio::sync::mpsc::unbounded_channel::<Pending>();
    let _ = ready.send(Ok(()));
    loop {
        let deadline = state.grant.as_ref().map(|g| g.deadline);
        tokio::select! {
            biased;
            _ = stop_rx.changed() => break,
            Some(p) = checked_rx.recv() => state.on_push(p).await,
            _ = sleep_until_some(deadline) => state.on_grant_expired().await,
            msg = push_sub.next() => {
                let Some(msg) = msg else { break };
                bump(&counters.pushes);
                state.receive_push(msg, claims.as_ref(), &checked_tx).await;
            }
            msg = pull_sub.next() => {
                let Some(msg) = msg else { break };
                state.on_pull(msg).await;
            }
        }
    }
    // Stop: answer nothing more; let the publisher put the last tip (bounded).
    drop(state);
    let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    Ok(())
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Puts the latest tip in the bucket each time it changes; a put that fails is retried
/// (bounded) and then left to the next change.
async fn publish_tips(
    broadcast: TipBroadcast,
    mut rx: tokio::sync::watch::Receiver<Option<Tip>>,
    counters: Arc<Counters>,
    min_interval: Duration,
) {
    while rx.changed().await.is_ok() {
        let Some(tip) = rx.borrow_and_update().clone() else {
            continue;
        };
        for attempt in 0..50u32 {
            match broadcast.publish(tip.seq, &tip.hash).await {
                Ok(_) => {
                    bump(&counters.tips_published);
                    // Tips that come meanwhile wait, and only the latest goes out next.
                    tokio::time::sleep(min_interval).await;
                    break;
                }
                Err(e) => {
                    if attempt == 49 {
                        warn!(seq = tip.seq, error = %e, "tip not published after 50 attempts");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl State {
    /// Reads the trunk: the tip, the task of every commit (its message), and the last
    /// [`HubConfig::cache_commits`] commits with their blobs for the cache.
    fn load(&mut self) -> Result<(), HubError> {
        let tip = self.repo.tip()?;
        let task_commits = &mut self.task_commits;
        self.repo.each_commit(|c| {
            task_commits.insert(c.message, (c.seq, c.hash));
        })?;
        let tip_seq = tip.as_ref().map_or(0, |t| t.seq);
        let mut after = tip_seq.saturating_sub(self.config.cache_commits as u64);
        while after < tip_seq {
            let pull = self
                .repo
                .commits_after(after, MAX_PULL_COMMITS, MAX_PULL_BYTES)?;
            let Some(last) = pull.last() else { break };
            let blobs: HashMap<&str, &Vec<u8>> =
                pull.blobs.iter().map(|(h, b)| (h.as_str(), b)).collect();
            for c in &pull.commits {
                let own = commit_blobs(c, |h| blobs.get(h).map(|b| (*b).clone()));
                self.remember(c.clone(), own);
            }
            after = last.seq;
        }
        self.set_tip(tip);
        Ok(())
    }

    /// How old a fencing answer may be when its push is decided: one claim TTL.
    fn fence_max_age(&self) -> Duration {
        self.config
            .claims
            .as_ref()
            .map_or(Duration::from_secs(3600), |(_, ttl)| *ttl)
    }

    fn set_tip(&mut self, tip: Option<Tip>) {
        self.counters
            .commits
            .store(tip.as_ref().map_or(0, |t| t.seq), Ordering::Relaxed);
        *self.tip_shared.lock().unwrap_or_else(|p| p.into_inner()) = tip.clone();
        self.tip = tip.clone();
        if tip.is_some() {
            let _ = self.tip_tx.send(tip);
        }
    }

    fn remember(&mut self, commit: Commit, blobs: Vec<Blob>) {
        self.cache.push_back(Cached { commit, blobs });
        while self.cache.len() > self.config.cache_commits.max(1) {
            self.cache.pop_front();
        }
    }

    /// Starts the fencing check of a push that just arrived; the push joins the queue when
    /// it is done.
    async fn receive_push(
        &mut self,
        msg: async_nats::Message,
        claims: Option<&Claims>,
        checked: &tokio::sync::mpsc::UnboundedSender<Pending>,
    ) {
        self.arrivals += 1;
        let arrival = self.arrivals;
        let req: PushRequest = match proto::decode("push request", &msg.payload) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.failed);
                self.reply(
                    &msg.reply,
                    &PushReply::Failed {
                        error: e.to_string(),
                        retryable: false,
                    },
                )
                .await;
                return;
            }
        };
        let Some(claims) = claims else {
            let _ = checked.send(Pending {
                req,
                reply: msg.reply,
                fence: Ok(Some(SystemTime::now() + Duration::from_secs(3600))),
                checked_at: Instant::now(),
                arrival,
            });
            return;
        };
        // The retry of a push just forked: the check of the forked push still holds while
        // the claim it saw cannot have been won by anyone else (the holder is busy retrying,
        // so it has not released it). Saves a round trip on the trunk's critical path.
        if let Some(g) = &self.grant {
            let fresh = g
                .live_until
                .is_some_and(|t| SystemTime::now() + FENCE_MARGIN < t);
            if fresh && g.leaf == req.leaf && g.task == req.task && g.token == req.token {
                let _ = checked.send(Pending {
                    fence: Ok(g.live_until),
                    req,
                    reply: msg.reply,
                    checked_at: g.checked_at,
                    arrival,
                });
                return;
            }
        }
        let in_flight = &self.counters.checks_in_flight;
        if in_flight.load(Ordering::Relaxed) >= MAX_CHECKS_IN_FLIGHT {
            bump(&self.counters.failed);
            self.reply(
                &msg.reply,
                &PushReply::Failed {
                    error: format!(
                        "hub overloaded: {MAX_CHECKS_IN_FLIGHT} fencing checks in flight"
                    ),
                    retryable: true,
                },
            )
            .await;
            return;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let claims = claims.clone();
        let checked = checked.clone();
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            let fence = claims
                .live_until(&req.task, &req.leaf, req.token)
                .await
                .map_err(|e| {
                    let retryable = matches!(e, crate::claims::ClaimError::Nats { .. });
                    (e.to_string(), retryable)
                });
            counters.checks_in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = checked.send(Pending {
                req,
                reply: msg.reply,
                fence,
                checked_at: Instant::now(),
                arrival,
            });
        });
    }

    async fn on_push(&mut self, p: Pending) {
        // A live answer for a token fences every older token of the task from now on.
        if let Ok(Some(_)) = p.fence {
            let max = self.max_token.entry(p.req.task.clone()).or_insert(0);
            *max = (*max).max(p.req.token);
        }
        let Some(g) = &self.grant else {
            self.process(p).await;
            self.drain_parked().await;
            return;
        };
        if g.leaf == p.req.leaf {
            bump(&self.counters.grants_used);
            self.counters
                .grant_wait_us
                .fetch_add(g.since.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.grant = None;
            self.process(p).await;
        } else if Instant::now() < g.deadline {
            self.park(p).await;
            return;
        } else {
            // Expired: the pushes parked before this one go first.
            bump(&self.counters.grants_expired);
            self.grant = None;
            self.park(p).await;
        }
        self.drain_parked().await;
    }

    /// Parks `p` behind the grant: one place per leaf (a later copy of its push, sent again
    /// after a timeout, takes the earlier one's place and answers the live request; an
    /// earlier copy arriving late is dropped), bounded by `max_parked`.
    async fn park(&mut self, p: Pending) {
        if let Some(slot) = self.parked.iter_mut().find(|q| q.req.leaf == p.req.leaf) {
            if p.arrival > slot.arrival {
                *slot = p;
            }
            bump(&self.counters.parked_replaced);
        } else if self.parked.len() >= self.config.max_parked {
            bump(&self.counters.failed);
            let error = format!("hub overloaded: {} pushes parked", self.parked.len());
            self.reply(
                &p.reply,
                &PushReply::Failed {
                    error,
                    retryable: true,
                },
            )
            .await;
        } else {
            bump(&self.counters.parked);
            self.parked.push_back(p);
        }
    }

    async fn on_grant_expired(&mut self) {
        if self
            .grant
            .as_ref()
            .is_some_and(|g| Instant::now() >= g.deadline)
        {
            bump(&self.counters.grants_expired);
            self.grant = None;
            self.drain_parked().await;
        }
    }

    /// Handles parked pushes in order until one of them is granted a fork retry.
    async fn drain_parked(&mut self) {
        while self.grant.is_none() {
            let Some(p) = self.parked.pop_front() else {
                break;
            };
            self.process(p).await;
        }
    }

    async fn process(&mut self, p: Pending) {
        // A fencing answer read long ago, or about to run out, is not trusted: the leaf
        // sends its push again and it is checked afresh.
        let fresh = match &p.fence {
            Ok(Some(t)) => {
                SystemTime::now() + FENCE_MARGIN < *t
                    && p.checked_at.elapsed() < self.fence_max_age()
            }
            _ => true,
        };
        if !fresh {
            bump(&self.counters.failed);
            let reply = PushReply::Failed {
                error: format!(
                    "the fencing answer for task {:?} is stale (read {:?} ago); send again",
                    p.req.task,
                    p.checked_at.elapsed()
                ),
                retryable: true,
            };
            self.reply(&p.reply, &reply).await;
            return;
        }
        let checked_at = p.checked_at;
        let reply = self.decide(p.req, p.fence, checked_at);
        self.reply(&p.reply, &reply).await;
    }

    /// The fencing verdict: `Some(reply)` when the push must be refused.
    fn decide_fenced(&self, req: &PushRequest, fence: &Fence) -> Option<PushReply> {
        match fence {
            Err((e, retryable)) => Some(PushReply::Failed {
                error: format!("fencing check of {:?}: {e}", req.task),
                retryable: *retryable,
            }),
            Ok(None) => Some(PushReply::Fenced {
                why: format!(
                    "token {} of {:?} is not the live claim of task {:?}",
                    req.token, req.leaf, req.task
                ),
            }),
            Ok(Some(_)) => match self.max_token.get(&req.task) {
                Some(&max) if req.token < max => Some(PushReply::Fenced {
                    why: format!(
                        "token {} of {:?} for task {:?} is older than token {max} already seen",
                        req.token, req.leaf, req.task
                    ),
                }),
                _ => None,
            },
        }
    }

    /// The push's fate (duplicate, fenced, accepted or forked, with the grant that goes
    /// with a fork), in a `hub.push` span.
    fn decide(&mut self, req: PushRequest, fence: Fence, checked_at: Instant) -> PushReply {
        let span = info_span!(
            "hub.push",
            leaf = %req.leaf,
            task = %req.task,
            seq = req.commit.seq,
            outcome = tracing::field::Empty
        );
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let reply = self.decide_inner(req, fence, checked_at);
        self.counters
            .decide_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        span.record("outcome", outcome_name(&reply));
        reply
    }

    fn decide_inner(&mut self, req: PushRequest, fence: Fence, checked_at: Instant) -> PushReply {
        if let Some((seq, hash)) = self.task_commits.get(&req.task) {
            if *hash == req.commit.hash {
                bump(&self.counters.retried);
                if let Some(tip) = &self.tip {
                    return PushReply::Accepted {
                        tip: tip.clone(),
                        new: false,
                    };
                }
            }
            bump(&self.counters.duplicates);
            return PushReply::Duplicate { seq: *seq };
        }
        if let Some(reply) = self.decide_fenced(&req, &fence) {
            match reply {
                PushReply::Fenced { .. } => bump(&self.counters.fenced),
                _ => bump(&self.counters.failed),
            }
            return reply;
        }
        match self
            .repo
            .apply_if_tip(req.expected.as_ref(), &req.commit, &req.blobs)
        {
            Ok(applied) => {
                if applied.new {
                    bump(&self.counters.accepted);
                    self.task_commits
                        .insert(req.task.clone(), (req.commit.seq, req.commit.hash.clone()));
                    let max = self.max_token.entry(req.task.clone()).or_insert(0);
                    *max = (*max).max(req.token);
                    let supplied: HashMap<&str, &Vec<u8>> =
                        req.blobs.iter().map(|(h, b)| (h.as_str(), b)).collect();
                    let repo = &self.repo;
                    let own = commit_blobs(&req.commit, |h| {
                        supplied
                            .get(h)
                            .map(|b| (*b).clone())
                            .or_else(|| repo.blob(h).ok().flatten())
                    });
                    self.remember(req.commit, own);
                    self.set_tip(Some(applied.tip.clone()));
                } else {
                    bump(&self.counters.retried);
                }
                PushReply::Accepted {
                    tip: applied.tip,
                    new: applied.new,
                }
            }
            Err(RepoError::TipMoved { current }) => {
                bump(&self.counters.forks);
                let now = Instant::now();
                if !self.config.grant_timeout.is_zero() {
                    self.grant = Some(Grant {
                        leaf: req.leaf,
                        task: req.task,
                        token: req.token,
                        live_until: fence.ok().flatten(),
                        checked_at,
                        since: now,
                        deadline: now + self.config.grant_timeout,
                    });
                }
                PushReply::Forked { tip: current }
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&self, e: RepoError) -> PushReply {
        if e.is_busy() {
            bump(&self.counters.busy);
        }
        bump(&self.counters.failed);
        PushReply::Failed {
            retryable: e.is_busy(),
            error: e.to_string(),
        }
    }

    async fn on_pull(&mut self, msg: async_nats::Message) {
        bump(&self.counters.pulls);
        let reply = match proto::decode::<PullRequest>("pull request", &msg.payload) {
            Err(e) => PullReply::Failed {
                error: e.to_string(),
            },
            Ok(req) => {
                let span = info_span!("hub.pull", leaf = %req.leaf, after_seq = req.after_seq);
                let _enter = span.enter();
                match self.after(req.after_seq) {
                    Ok(pull) => PullReply::Commits {
                        tip: self.tip.clone(),
                        pull,
                    },
                    Err(e) => {
                        if e.is_busy() {
                            bump(&self.counters.busy);
                        }
                        PullReply::Failed {
                            error: e.to_string(),
                        }
                    }
                }
            }
        };
        self.reply(&msg.reply, &reply).await;
    }

    /// The commits after `seq`, bounded: from memory when the cache reaches back far
    /// enough, else from SQLite.
    fn after(&self, seq: u64) -> Result<Pull, RepoError> {
        let tip_seq = self.tip.as_ref().map_or(0, |t| t.seq);
        if seq >= tip_seq {
            return Ok(Pull::default());
        }
        let first = match self.cache.front() {
            Some(c) if c.commit.seq <= seq + 1 => c.commit.seq,
            _ => {
                return self
                    .repo
                    .commits_after(seq, MAX_PULL_COMMITS, MAX_PULL_BYTES)
            }
        };
        bump(&self.counters.pulls_cached);
        let start = usize::try_from(seq + 1 - first).unwrap_or(usize::MAX);
        let mut pull = Pull::default();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut bytes = 0usize;
        for (i, c) in self.cache.iter().skip(start).enumerate() {
            if i == MAX_PULL_COMMITS {
                pull.more = true;
                break;
            }
            let fresh: Vec<&Blob> = c
                .blobs
                .iter()
                .filter(|(h, _)| !seen.contains(h.as_str()))
                .collect();
            let cost: usize = fresh.iter().map(|(_, b)| b.len()).sum();
            if i > 0 && bytes.saturating_add(cost) > MAX_PULL_BYTES {
                pull.more = true;
                break;
            }
            bytes += cost;
            for (h, b) in fresh {
                if seen.insert(h.as_str()) {
                    pull.blobs.push((h.clone(), b.clone()));
                }
            }
            pull.commits.push(c.commit.clone());
        }
        Ok(pull)
    }

    async fn reply<T: serde::Serialize>(&self, to: &Option<async_nats::Subject>, body: &T) {
        if let Some(to) = to {
            if let Err(e) = self.client.publish(to.clone(), proto::encode(body)).await {
                warn!(error = %e, "hub reply not sent");
            }
        }
    }
}

/// The blobs `commit`'s changes refer to, each once, looked up with `get`.
fn commit_blobs(commit: &Commit, get: impl Fn(&str) -> Option<Vec<u8>>) -> Vec<Blob> {
    let mut out: Vec<Blob> = Vec::new();
    for ch in &commit.changes {
        let Some(h) = &ch.blob else { continue };
        if out.iter().any(|(x, _)| x == h) {
            continue;
        }
        if let Some(b) = get(h) {
            out.push((h.clone(), b));
        }
    }
    out
}

fn outcome_name(reply: &PushReply) -> &'static str {
    match reply {
        PushReply::Accepted { new: true, .. } => "accepted",
        PushReply::Accepted { new: false, .. } => "accepted_again",
        PushReply::Forked { .. } => "forked",
        PushReply::Duplicate { .. } => "duplicate",
        PushReply::Fenced { .. } => "fenced",
        PushReply::Failed { .. } => "failed",
    }
}
