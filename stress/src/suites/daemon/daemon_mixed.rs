//! Suite `daemon-mixed`: agents mixing every operation through one daemon, while readers
//! race atomic batches, never see half of a batch, and the file ends up exactly as the
//! acknowledged writes say.
//!
//! Writers (one task and one connection each) run a seeded mix of create, update, close,
//! show, list, ready, dep_add, dep_remove and batches, on issues each owns (so every writer
//! keeps an exact model of what its acknowledged writes did). A batch comes in two atomic
//! steps, announced to the readers *before* it is sent:
//! 1. K creates sharing a fresh label `L`;
//! 2. a relabel of the K issues to `L + C` (a second fresh label) and a `blocks` chain
//!    between them (each depends on the one created before it).
//!
//! Readers (their own connections) pick announced batches and check that `list --label L`
//! and `list --label C` return 0 or K issues, never in between, and that `show` of one of
//! the K issues has label `C` if and only if its chain edges are there; once a batch was
//! acknowledged before the read was sent, they must see all K. Writers check every reply
//! against their model (a `show` of an own issue must match it exactly; a `list` must match
//! its filter; a `ready` issue must be ready).
//!
//! At the end the daemon's `stats` (before it stops) and the file (read directly after it
//! stopped: every issue, every edge) must equal the union of the writers' models: issue
//! fields, dependency edges, and the counts issues/open/in_progress/closed/deps/events/ready.
//! No fault is injected, so any error reply is a FAIL too.
//!
//! The model of acknowledged writes is [`super::model::Model`], shared with `daemon-batch`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use hdrhistogram::Histogram;
use rpc_daemon::client::Client;
use rpc_daemon::model::{CreateArgs, Dep, DepKind, Issue, ListArgs, Op, Reply, Status, UpdateArgs};

use super::model::{stats_table, MIssue, Model};
use crate::daemon_harness::daemon_client;
use crate::harness::seed::{seed_token, Rng};
use crate::harness::stats::{hist_cells, new_hist, q_ms, record_us};
use crate::harness::{first_joined, new_result};
use crate::suites::daemon::common::{
    daemon_stats, dump_file, id_num, report_grouping, start_daemon, stop_for_counters, unclean_stop,
};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonMixed;

struct Settings {
    writers: u64,
    readers: u64,
    duration: Duration,
    /// Issues per batch: 2 to this many.
    max_k: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            writers: 4,
            readers: 2,
            duration: Duration::from_secs(2),
            max_k: 6,
        },
        Profile::Quick => Settings {
            writers: 8,
            readers: 2,
            duration: Duration::from_secs(20),
            max_k: 10,
        },
        Profile::Full => Settings {
            writers: 16,
            readers: 4,
            duration: Duration::from_secs(300),
            max_k: 20,
        },
    }
}

/// Per-call client timeout: generous, no fault is injected.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeline bucket.
const BUCKET_S: f64 = 0.5;
/// Violation messages kept (all are counted).
const KEEP_MESSAGES: usize = 20;

// ---------------------------------------------------------------------------------------
// Shared run state

/// A batch announced to the readers before it is sent.
struct Watched {
    /// The label every issue of the batch carries once the batch applied.
    label: String,
    k: usize,
    /// Step 2: the ids (in creation order) and the label `L` they keep beside `label`.
    chain: Option<Vec<String>>,
    acked: AtomicBool,
}

#[derive(Default)]
struct Violations {
    count: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl Violations {
    fn push(&self, m: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut v = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        if v.len() < KEEP_MESSAGES {
            v.push(m);
        }
    }
}

struct Shared {
    started: Instant,
    deadline: Instant,
    /// Every acknowledged issue id (anyone may `show` it).
    ids: Mutex<Vec<String>>,
    watch: Mutex<VecDeque<Arc<Watched>>>,
    violations: Violations,
}

const WATCH_CAP: usize = 64;

impl Shared {
    fn announce(&self, w: Arc<Watched>) {
        let mut q = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= WATCH_CAP {
            q.pop_front();
        }
        q.push_back(w);
    }

    fn publish(&self, ids: impl IntoIterator<Item = String>) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    fn random_id(&self, rng: &mut Rng) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        (!ids.is_empty()).then(|| ids[rng.index(ids.len())].clone())
    }

    /// Where in the run an operation completed: its timeline bucket, and 0 in the first
    /// quarter of the run, 1 in the last quarter.
    fn when(&self) -> When {
        let t = self.started.elapsed().as_secs_f64();
        let total = (self.deadline - self.started).as_secs_f64();
        When {
            bucket: (t / BUCKET_S) as usize,
            quarter: if t < total / 4.0 {
                Some(0)
            } else if t > total * 3.0 / 4.0 {
                Some(1)
            } else {
                None
            },
        }
    }
}

#[derive(Clone, Copy)]
struct When {
    bucket: usize,
    quarter: Option<usize>,
}

/// What one task measured.
#[derive(Default)]
struct Tally {
    hists: BTreeMap<&'static str, Histogram<u64>>,
    /// The same in the first and the last quarter of the run.
    quarters: BTreeMap<(&'static str, usize), Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    /// Per timeline bucket: (writes, reads) completed.
    timeline: Vec<[u64; 2]>,
    /// Reader observations.
    seen_zero: u64,
    seen_all: u64,
    seen_partial: u64,
    /// Observations sent while the batch was not yet acknowledged.
    in_flight_reads: u64,
    in_flight_saw_all: u64,
    show_checks: u64,
    /// `show`s of a chain step that saw its label without its edges or the reverse.
    show_partial: u64,
    batches: u64,
}

impl Tally {
    fn record(&mut self, op: &'static str, write: bool, us: u64, when: When) {
        record_us(self.hists.entry(op).or_insert_with(new_hist), us);
        if let Some(q) = when.quarter {
            record_us(self.quarters.entry((op, q)).or_insert_with(new_hist), us);
        }
        let bucket = when.bucket;
        if bucket < 100_000 {
            if self.timeline.len() <= bucket {
                self.timeline.resize(bucket + 1, [0, 0]);
            }
            self.timeline[bucket][usize::from(!write)] += 1;
        }
    }

    fn error(&mut self, op: &str, code: &str) {
        *self.errors.entry(format!("{op}: {code}")).or_default() += 1;
    }

    fn absorb(&mut self, o: Tally) {
        for (k, h) in o.hists {
            let _ = self.hists.entry(k).or_insert_with(new_hist).add(&h);
        }
        for (k, h) in o.quarters {
            let _ = self.quarters.entry(k).or_insert_with(new_hist).add(&h);
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), [0, 0]);
        }
        for (i, b) in o.timeline.iter().enumerate() {
            self.timeline[i][0] += b[0];
            self.timeline[i][1] += b[1];
        }
        self.seen_zero += o.seen_zero;
        self.seen_all += o.seen_all;
        self.seen_partial += o.seen_partial;
        self.in_flight_reads += o.in_flight_reads;
        self.in_flight_saw_all += o.in_flight_saw_all;
        self.show_checks += o.show_checks;
        self.show_partial += o.show_partial;
        self.batches += o.batches;
    }
}

// ---------------------------------------------------------------------------------------
// Writers

struct Writer {
    idx: u64,
    token: String,
    rng: Rng,
    c: Client,
    shared: Arc<Shared>,
    model: Model,
    /// Own issues outside batches, in creation order (their numbers increase).
    plain: Vec<u64>,
    n: u64,
    max_k: u64,
    tally: Tally,
}

const LABELS: [&str; 3] = ["api", "db", "ui"];
const PEOPLE: [&str; 2] = ["alice", "bob"];

impl Writer {
    fn violation(&self, m: String) {
        self.shared
            .violations
            .push(format!("writer {}: {m}", self.idx));
    }

    fn random_labels(&mut self) -> Vec<String> {
        LABELS
            .iter()
            .filter(|_| self.rng.chance(0.4))
            .map(|s| s.to_string())
            .collect()
    }

    fn random_assignee(&mut self) -> Option<String> {
        let i = self.rng.index(PEOPLE.len() + 1);
        PEOPLE.get(i).map(|s| s.to_string())
    }

    /// One call, timed and recorded; `None` on error (counted as a violation: no fault is
    /// injected here).
    async fn call(&mut self, name: &'static str, op: Op) -> Option<Reply> {
        let write = op.is_write();
        let t = Instant::now();
        let r = self.c.call(op).await;
        let us = t.elapsed().as_micros() as u64;
        let when = self.shared.when();
        match r {
            Ok(reply) => {
                self.tally.record(name, write, us, when);
                Some(reply)
            }
            Err(e) => {
                self.tally.error(name, e.code());
                self.violation(format!("{name} failed: {e}"));
                None
            }
        }
    }

    fn check_issue(&self, what: &str, got: &Issue, want: &MIssue) {
        let got = MIssue::of(got);
        if got != *want {
            self.violation(format!(
                "{what}: answered {got:?}, the acknowledged writes say {want:?}"
            ));
        }
    }

    async fn step(&mut self) {
        let roll = self.rng.below(100);
        let have = self.plain.len();
        match roll {
            _ if have < 2 => self.create().await,
            0..=19 => self.create().await,
            20..=37 => self.update().await,
            38..=42 => self.close().await,
            43..=51 => self.dep_add().await,
            52..=54 => self.dep_remove().await,
            55..=69 => self.show().await,
            70..=79 => self.list().await,
            80..=87 => self.ready().await,
            _ => self.batch_pair().await,
        }
    }

    async fn create(&mut self) {
        self.n += 1;
        let a = CreateArgs {
            title: format!("mx{}-w{}-{}", self.token, self.idx, self.n),
            description: String::new(),
            priority: Some(self.rng.below(5) as u8),
            assignee: self.random_assignee(),
            labels: self.random_labels(),
        };
        let want = MIssue::created(&a);
        if let Some(reply) = self.call("create", Op::Create(a)).await {
            match reply {
                Reply::Issue { issue } => {
                    self.check_issue("create", &issue, &want);
                    match self.model.created(&issue) {
                        Ok(()) => {
                            if let Some(k) = id_num(&issue.id) {
                                self.plain.push(k);
                            }
                            self.shared.publish([issue.id]);
                        }
                        Err(m) => self.violation(m),
                    }
                }
                other => self.violation(format!("create answered {other:?}")),
            }
        }
    }

    fn pick_plain(&mut self) -> u64 {
        self.plain[self.rng.index(self.plain.len())]
    }

    async fn update(&mut self) {
        let k = self.pick_plain();
        let mut a = UpdateArgs {
            id: format!("hl-{k}"),
            ..UpdateArgs::default()
        };
        for _ in 0..1 + self.rng.below(2) {
            match self.rng.below(4) {
                0 => a.priority = Some(self.rng.below(5) as u8),
                1 => a.assignee = Some(self.random_assignee()),
                2 => {
                    a.status = Some(if self.rng.chance(0.5) {
                        Status::InProgress
                    } else {
                        Status::Open
                    })
                }
                _ => a.labels = Some(self.random_labels()),
            }
        }
        let mut next = self.model.clone_issue_model(k);
        let want = match next.update(&a) {
            Ok(w) => w,
            Err(m) => return self.violation(m),
        };
        if let Some(reply) = self.call("update", Op::Update(a.clone())).await {
            match reply {
                Reply::Issue { issue } => {
                    self.check_issue("update", &issue, &want);
                    if let Err(m) = self.model.update(&a) {
                        self.violation(m);
                    }
                }
                other => self.violation(format!("update answered {other:?}")),
            }
        }
    }

    async fn close(&mut self) {
        let k = self.pick_plain();
        let id = format!("hl-{k}");
        let reason = Some(format!("done by writer {}", self.idx));
        let op = Op::Close {
            id: id.clone(),
            reason: reason.clone(),
        };
        if let Some(reply) = self.call("close", op).await {
            match (reply, self.model.close(&id, &reason)) {
                (Reply::Issue { issue }, Ok(want)) => self.check_issue("close", &issue, &want),
                (_, Err(m)) => self.violation(m),
                (other, _) => self.violation(format!("close answered {other:?}")),
            }
        }
    }

    async fn dep_add(&mut self) {
        // Edges always point from a later issue to an earlier one: no cycle can form.
        let j = 1 + self.rng.index(self.plain.len() - 1);
        let i = self.rng.index(j);
        let d = Dep {
            issue: format!("hl-{}", self.plain[j]),
            depends_on: format!("hl-{}", self.plain[i]),
            kind: if self.rng.chance(0.5) {
                DepKind::Blocks
            } else {
                DepKind::Related
            },
        };
        if let Some(reply) = self.call("dep_add", Op::DepAdd(d.clone())).await {
            match reply {
                Reply::Dep { dep } if dep == d => self.model.dep_add(&d),
                other => self.violation(format!("dep_add answered {other:?}")),
            }
        }
    }

    async fn dep_remove(&mut self) {
        let plain: BTreeSet<u64> = self.plain.iter().copied().collect();
        let own: Vec<Dep> = self
            .model
            .deps
            .iter()
            .filter(|d| id_num(&d.issue).is_some_and(|k| plain.contains(&k)))
            .cloned()
            .collect();
        if own.is_empty() {
            return self.dep_add().await;
        }
        let d = own[self.rng.index(own.len())].clone();
        if let Some(reply) = self.call("dep_remove", Op::DepRemove(d.clone())).await {
            match reply {
                Reply::Dep { dep } if dep == d => {
                    if !self.model.dep_remove(&d) {
                        self.violation(format!(
                            "dep_remove of {d:?} succeeded but was not in the model"
                        ));
                    }
                }
                other => self.violation(format!("dep_remove answered {other:?}")),
            }
        }
    }

    async fn show(&mut self) {
        // Half the time an own issue (exact check), else anybody's (must exist).
        let own = self.rng.chance(0.5);
        let id = if own {
            format!("hl-{}", self.pick_plain())
        } else {
            match self.shared.random_id(&mut self.rng) {
                Some(id) => id,
                None => return,
            }
        };
        if let Some(reply) = self.call("show", Op::Show { id: id.clone() }).await {
            match reply {
                Reply::Detail { issue, deps } => {
                    if issue.id != id {
                        return self.violation(format!("show {id} answered {}", issue.id));
                    }
                    if let Some(want) = id_num(&id).and_then(|k| self.model.issues.get(&k)) {
                        self.check_issue(&format!("show {id}"), &issue, want);
                        let mine: BTreeSet<Dep> = self
                            .model
                            .deps
                            .iter()
                            .filter(|d| d.issue == id || d.depends_on == id)
                            .cloned()
                            .collect();
                        let got: BTreeSet<Dep> = deps.into_iter().collect();
                        if got != mine {
                            self.violation(format!(
                                "show {id}: edges {got:?}, acknowledged {mine:?}"
                            ));
                        }
                    }
                }
                other => self.violation(format!("show answered {other:?}")),
            }
        }
    }

    async fn list(&mut self) {
        let mut a = ListArgs {
            limit: Some(50),
            ..ListArgs::default()
        };
        match self.rng.below(4) {
            0 => {
                a.status =
                    Some([Status::Open, Status::InProgress, Status::Closed][self.rng.index(3)])
            }
            1 => a.label = Some(LABELS[self.rng.index(LABELS.len())].to_string()),
            2 => a.assignee = Some(PEOPLE[self.rng.index(PEOPLE.len())].to_string()),
            _ => a.priority = Some(self.rng.below(5) as u8),
        }
        if let Some(reply) = self.call("list", Op::List(a.clone())).await {
            match reply {
                Reply::Issues { issues } => {
                    for i in &issues {
                        let ok = a.status.is_none_or(|s| i.status == s)
                            && a.priority.is_none_or(|p| i.priority == p)
                            && a.assignee
                                .as_ref()
                                .is_none_or(|w| i.assignee.as_ref() == Some(w))
                            && a.label.as_ref().is_none_or(|l| i.labels.contains(l));
                        if !ok {
                            self.violation(format!(
                                "list {a:?} returned {} which does not match",
                                i.id
                            ));
                        }
                    }
                    if issues.len() > 50 {
                        self.violation(format!("list with limit 50 returned {}", issues.len()));
                    }
                }
                other => self.violation(format!("list answered {other:?}")),
            }
        }
    }

    async fn ready(&mut self) {
        if let Some(reply) = self.call("ready", Op::Ready { limit: Some(50) }).await {
            match reply {
                Reply::Issues { issues } => {
                    for i in &issues {
                        if i.status != Status::Open {
                            self.violation(format!(
                                "ready listed {} with status {:?}",
                                i.id, i.status
                            ));
                        }
                        // An own issue the model says is blocked must not be listed. (Its
                        // blockers are own issues too, so the model is exact.)
                        if let Some(k) = id_num(&i.id) {
                            if self.model.issues.contains_key(&k) && !self.model.is_ready(k) {
                                self.violation(format!(
                                    "ready listed {}, which the acknowledged writes block",
                                    i.id
                                ));
                            }
                        }
                    }
                }
                other => self.violation(format!("ready answered {other:?}")),
            }
        }
    }

    /// Two atomic batches, each announced to the readers before it is sent.
    async fn batch_pair(&mut self) {
        self.n += 1;
        let k = 2 + self.rng.below(self.max_k - 1) as usize;
        let l = format!("bl{}-w{}-{}", self.token, self.idx, self.n);
        let creates: Vec<CreateArgs> = (0..k)
            .map(|i| CreateArgs {
                title: format!("mx{}-w{}-b{}-{i}", self.token, self.idx, self.n),
                priority: Some(self.rng.below(5) as u8),
                labels: vec![l.clone()],
                ..CreateArgs::default()
            })
            .collect();
        let w = Arc::new(Watched {
            label: l.clone(),
            k,
            chain: None,
            acked: AtomicBool::new(false),
        });
        self.shared.announce(w.clone());
        let ops = creates.iter().cloned().map(Op::Create).collect();
        let Some(reply) = self.call("batch", Op::Batch { ops }).await else {
            return;
        };
        self.tally.batches += 1;
        let Reply::Batch { results } = reply else {
            return self.violation(format!("batch answered {reply:?}"));
        };
        let mut ids = Vec::new();
        for (r, a) in results.iter().zip(&creates) {
            match r {
                Reply::Issue { issue } => {
                    self.check_issue("batch create", issue, &MIssue::created(a));
                    match self.model.created(issue) {
                        Ok(()) => ids.push(issue.id.clone()),
                        Err(m) => self.violation(m),
                    }
                }
                other => self.violation(format!("batch create answered {other:?}")),
            }
        }
        w.acked.store(true, Ordering::Release);
        if results.len() != k || ids.len() != k {
            return self.violation(format!(
                "batch of {k} creates answered {} results",
                results.len()
            ));
        }
        self.shared.publish(ids.iter().cloned());

        // Step 2: relabel all and chain them, atomically.
        let c = format!("bc{}-w{}-{}", self.token, self.idx, self.n);
        let mut ops = Vec::new();
        let mut updates = Vec::new();
        for id in &ids {
            let a = UpdateArgs {
                id: id.clone(),
                labels: Some(vec![l.clone(), c.clone()]),
                ..UpdateArgs::default()
            };
            updates.push(a.clone());
            ops.push(Op::Update(a));
        }
        let edges: Vec<Dep> = ids
            .windows(2)
            .map(|p| Dep {
                issue: p[1].clone(),
                depends_on: p[0].clone(),
                kind: DepKind::Blocks,
            })
            .collect();
        ops.extend(edges.iter().cloned().map(Op::DepAdd));
        let w2 = Arc::new(Watched {
            label: c,
            k,
            chain: Some(ids.clone()),
            acked: AtomicBool::new(false),
        });
        self.shared.announce(w2.clone());
        let Some(reply) = self.call("batch", Op::Batch { ops }).await else {
            return;
        };
        self.tally.batches += 1;
        let Reply::Batch { results } = reply else {
            return self.violation(format!("batch answered {reply:?}"));
        };
        if results.len() != k + edges.len() {
            return self.violation(format!(
                "chain batch of {} operations answered {} results",
                k + edges.len(),
                results.len()
            ));
        }
        for (a, r) in updates.iter().zip(&results) {
            match (self.model.update(a), r) {
                (Ok(want), Reply::Issue { issue }) => {
                    self.check_issue("batch update", issue, &want)
                }
                (Err(m), _) => self.violation(m),
                (_, other) => self.violation(format!("batch update answered {other:?}")),
            }
        }
        for d in &edges {
            self.model.dep_add(d);
        }
        w2.acked.store(true, Ordering::Release);
    }

    async fn run(mut self) -> (Model, Tally) {
        let mut steps = 0u64;
        // Bounded by time and by a step cap far above what the machine can do.
        while Instant::now() < self.shared.deadline && steps < 10_000_000 {
            self.step().await;
            steps += 1;
        }
        (self.model, self.tally)
    }
}

// ---------------------------------------------------------------------------------------
// Readers

async fn reader(idx: u64, seed: u64, db: std::path::PathBuf, shared: Arc<Shared>) -> Tally {
    let mut rng = Rng::new(seed, 0xBEAD_0000 + idx);
    let mut t = Tally::default();
    let mut c = match daemon_client(&db, CALL_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            shared
                .violations
                .push(format!("reader {idx} could not connect: {e:#}"));
            return t;
        }
    };
    let mut steps = 0u64;
    while Instant::now() < shared.deadline && steps < 10_000_000 {
        steps += 1;
        // Prefer batches still in flight: that is where a half-applied batch would show.
        let w = {
            let q = shared.watch.lock().unwrap_or_else(PoisonError::into_inner);
            let pending: Vec<&Arc<Watched>> = q
                .iter()
                .filter(|w| !w.acked.load(Ordering::Acquire))
                .collect();
            if !pending.is_empty() && rng.chance(0.8) {
                Some(pending[rng.index(pending.len())].clone())
            } else if !q.is_empty() {
                Some(q[rng.index(q.len())].clone())
            } else {
                None
            }
        };
        let Some(w) = w else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let acked_before = w.acked.load(Ordering::Acquire);
        let op = Op::List(ListArgs {
            label: Some(w.label.clone()),
            limit: Some(1_000),
            ..ListArgs::default()
        });
        let started = Instant::now();
        let r = c.call(op).await;
        t.record(
            "reader list",
            false,
            started.elapsed().as_micros() as u64,
            shared.when(),
        );
        let n = match r {
            Ok(Reply::Issues { issues }) => issues.len(),
            Ok(other) => {
                shared
                    .violations
                    .push(format!("reader {idx}: list answered {other:?}"));
                continue;
            }
            Err(e) => {
                t.error("reader list", e.code());
                shared.violations.push(format!(
                    "reader {idx}: list --label {} failed: {e}",
                    w.label
                ));
                continue;
            }
        };
        if !acked_before {
            t.in_flight_reads += 1;
            if n == w.k {
                t.in_flight_saw_all += 1;
            }
        }
        if n == 0 {
            t.seen_zero += 1;
        } else if n == w.k {
            t.seen_all += 1;
        } else {
            t.seen_partial += 1;
            shared.violations.push(format!(
                "reader {idx}: half-applied batch: list --label {} saw {n} of its {} issues",
                w.label, w.k
            ));
        }
        if acked_before && n != w.k {
            shared.violations.push(format!(
                "reader {idx}: batch {} was acknowledged before the read was sent, but list saw {n} of {}",
                w.label, w.k
            ));
        }
        // Step 2: one issue's label C and its chain edges come together or not at all.
        if let Some(ids) = &w.chain {
            let j = rng.index(ids.len());
            let acked_before = w.acked.load(Ordering::Acquire);
            let started = Instant::now();
            let r = c.call(Op::Show { id: ids[j].clone() }).await;
            t.record(
                "reader show",
                false,
                started.elapsed().as_micros() as u64,
                shared.when(),
            );
            match r {
                Ok(Reply::Detail { issue, deps }) => {
                    t.show_checks += 1;
                    let has_c = issue.labels.contains(&w.label);
                    let mut want = Vec::new();
                    if j > 0 {
                        want.push((ids[j].clone(), ids[j - 1].clone()));
                    }
                    if j + 1 < ids.len() {
                        want.push((ids[j + 1].clone(), ids[j].clone()));
                    }
                    let present = want
                        .iter()
                        .filter(|(a, b)| {
                            deps.iter().any(|d| {
                                d.issue == *a && d.depends_on == *b && d.kind == DepKind::Blocks
                            })
                        })
                        .count();
                    let whole = has_c && present == want.len();
                    let none = !has_c && present == 0;
                    if !whole && !none {
                        t.show_partial += 1;
                        shared.violations.push(format!(
                            "reader {idx}: half-applied batch {}: show {} has label: {has_c}, {present} of its {} chain edges",
                            w.label, ids[j], want.len()
                        ));
                    }
                    if acked_before && !whole {
                        shared.violations.push(format!(
                            "reader {idx}: batch {} acknowledged before the read, but show {} lacks it",
                            w.label, ids[j]
                        ));
                    }
                }
                Ok(other) => shared
                    .violations
                    .push(format!("reader {idx}: show answered {other:?}")),
                Err(e) => {
                    t.error("reader show", e.code());
                    shared
                        .violations
                        .push(format!("reader {idx}: show {} failed: {e}", ids[j]));
                }
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------
// The suite

impl Suite for DaemonMixed {
    fn name(&self) -> &'static str {
        "daemon-mixed"
    }

    fn description(&self) -> &'static str {
        "agents mix create/update/close/show/list/ready/dep/batch through one daemon while readers race atomic batches: never half a batch, final state equals the acknowledged writes"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{} writers + {} readers x {} s, batches of 2-{}",
                s.writers,
                s.readers,
                s.duration.as_secs(),
                s.max_k
            ),
            // The file check at the end reads every issue: ~1 s per 15k on 2 cores.
            expected_s: s.duration.as_secs() + 3 + s.duration.as_secs() / 10,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures = Vec::new();
        let mut doubts = Vec::new();
        let token = seed_token(ctx.seed);
        let (db, mut daemon) = start_daemon(ctx, "issues.db", &[])?;
        let log = daemon.log.clone();
        println!(
            "daemon pid {}; {} writers + {} readers for {:?}",
            daemon.pid(),
            s.writers,
            s.readers,
            s.duration
        );
        let rt = crate::harness::runtime()?;
        let started = Instant::now();
        let shared = Arc::new(Shared {
            started,
            deadline: started + s.duration,
            ids: Mutex::new(Vec::new()),
            watch: Mutex::new(VecDeque::new()),
            violations: Violations::default(),
        });
        let join_bound = s.duration + Duration::from_secs(60);
        let (models, tally, via_daemon) = rt.block_on(async {
            let mut writers = Vec::new();
            for w in 0..s.writers {
                let c = daemon_client(&db, CALL_TIMEOUT).await?;
                let writer = Writer {
                    idx: w,
                    token: token.clone(),
                    rng: Rng::new(ctx.seed, w),
                    c,
                    shared: shared.clone(),
                    model: Model::default(),
                    plain: Vec::new(),
                    n: 0,
                    max_k: s.max_k,
                    tally: Tally::default(),
                };
                writers.push(tokio::spawn(writer.run()));
            }
            let mut readers = Vec::new();
            for i in 0..s.readers {
                readers.push(tokio::spawn(reader(
                    i,
                    ctx.seed,
                    db.clone(),
                    shared.clone(),
                )));
            }
            let mut model = Model::default();
            let mut tally = Tally::default();
            for h in writers {
                match tokio::time::timeout(join_bound, h).await {
                    Ok(Ok((m, t))) => {
                        model.absorb(m);
                        tally.absorb(t);
                    }
                    Ok(Err(e)) => anyhow::bail!("a writer task failed: {e}"),
                    Err(_) => anyhow::bail!("a writer ran past {join_bound:?}"),
                }
            }
            for h in readers {
                match tokio::time::timeout(join_bound, h).await {
                    Ok(Ok(t)) => tally.absorb(t),
                    Ok(Err(e)) => anyhow::bail!("a reader task failed: {e}"),
                    Err(_) => anyhow::bail!("a reader ran past {join_bound:?}"),
                }
            }
            let via_daemon = daemon_stats(&db, CALL_TIMEOUT).await;
            anyhow::Ok((model, tally, via_daemon))
        })?;
        let run_s = started.elapsed().as_secs_f64();
        let (clean_stop, server_stats) = stop_for_counters(&mut daemon);
        drop(daemon);
        let max_id = models.issues.keys().next_back().copied().unwrap_or(0);
        let dump = rt.block_on(dump_file(&db, max_id))?;

        let violations = shared.violations.count.load(Ordering::Relaxed);
        let messages = shared
            .violations
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if violations > 0 {
            failures.push(format!(
                "{violations} violations during the run (half-applied batches seen: {}), first: {}",
                tally.seen_partial + tally.show_partial,
                first_joined(&messages, 5)
            ));
        }
        let want = models.stats();
        match &via_daemon {
            Some(st) if *st != want => failures.push(format!(
                "daemon stats before stopping {st:?} != acknowledged {want:?}"
            )),
            Some(_) => {}
            None => failures.push("stats through the daemon after the run failed".into()),
        }
        let (mismatches, mism_msgs) = models.compare(&dump);
        if mismatches > 0 {
            failures.push(format!(
                "the file differs from the acknowledged writes in {mismatches} ways, first: {}",
                first_joined(&mism_msgs, 5)
            ));
        }
        if !clean_stop {
            failures.push(unclean_stop(&log));
        }
        let observations = tally.seen_zero + tally.seen_all + tally.seen_partial;
        if tally.batches == 0 || observations == 0 {
            doubts.push(format!(
                "too little to judge atomicity: {} batches, {observations} reader observations",
                tally.batches
            ));
        }
        if tally.in_flight_reads == 0 && observations > 0 {
            doubts.push(
                "no read raced a batch in flight: atomicity was not exercised under concurrency"
                    .into(),
            );
        }

        // Numbers.
        let mut ops_total = 0u64;
        let mut table = Table::new(
            "Operations (latency from send to answer, per connection, closed loop)",
            &[
                "operation",
                "ok",
                "errors",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p50 ms first quarter",
                "p50 ms last quarter",
            ],
        );
        let mut slower = Vec::new();
        let mut errors_by_op: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &tally.errors {
            let op = k.split(':').next().unwrap_or(k).to_string();
            *errors_by_op.entry(op).or_default() += v;
        }
        for (op, h) in &tally.hists {
            ops_total += h.len();
            let early = tally.quarters.get(&(*op, 0)).map(|h| q_ms(h, 0.5));
            let late = tally.quarters.get(&(*op, 1)).map(|h| q_ms(h, 0.5));
            if let (Some(e), Some(l)) = (early, late) {
                if l > 2.0 * e && l > 1.0 {
                    slower.push(format!("{op} {e:.2} -> {l:.2} ms"));
                }
            }
            let cell = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
            let [p50, p99, max] = hist_cells(h);
            table.push_row([
                op.to_string(),
                h.len().to_string(),
                errors_by_op.get(*op).copied().unwrap_or(0).to_string(),
                p50,
                p99,
                max,
                cell(early),
                cell(late),
            ]);
        }
        if !slower.is_empty() {
            r.findings.push(format!(
                "median latency more than doubled from the first to the last quarter of the run while the database grew to {} issues and {} edges: {}",
                dump.stats.issues,
                dump.stats.deps,
                slower.join(", ")
            ));
        }
        let ops_per_s = ops_total as f64 / s.duration.as_secs_f64();
        let write_p99 = {
            let mut h = new_hist();
            for op in [
                "create",
                "update",
                "close",
                "dep_add",
                "dep_remove",
                "batch",
            ] {
                if let Some(x) = tally.hists.get(op) {
                    let _ = h.add(x);
                }
            }
            q_ms(&h, 0.99)
        };
        let batch_p99 = tally
            .hists
            .get("batch")
            .map(|h| q_ms(h, 0.99))
            .unwrap_or(0.0);
        r.metrics.push(
            Metric::new("ops_per_s", ops_per_s, "ops/s")
                .higher_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new(
                "half_applied_batches_seen",
                (tally.seen_partial + tally.show_partial) as f64,
                "",
            )
            .lower_is_better()
            .headline(),
        );
        r.metrics
            .push(Metric::new("violations", violations as f64, "").lower_is_better());
        r.metrics.push(
            Metric::new("final_mismatches", mismatches as f64, "")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("write_latency_p99_ms", write_p99, "ms").lower_is_better());
        r.metrics.push(
            Metric::new("batch_latency_p99_ms", batch_p99, "ms")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("batches_acked", tally.batches as f64, ""));
        r.metrics.push(Metric::new(
            "atomicity_observations",
            observations as f64,
            "",
        ));
        r.metrics.push(Metric::new(
            "in_flight_observations",
            tally.in_flight_reads as f64,
            "",
        ));
        r.metrics
            .push(Metric::new("issues_at_end", dump.stats.issues as f64, ""));
        r.metrics.push(Metric::new("run_s", run_s, "s"));
        report_grouping(&mut r, server_stats, clean_stop, &log);
        r.tables.push(table);
        let mut atom = Table::new(
            "Readers racing batches (list --label: 0 or K, never between; show: label and chain edges together)",
            &["observation", "count"],
        );
        for (k, v) in [
            ("list saw none of the batch", tally.seen_zero),
            ("list saw all K", tally.seen_all),
            ("list saw part of it (violation)", tally.seen_partial),
            (
                "sent while the batch was unacknowledged",
                tally.in_flight_reads,
            ),
            (
                "... of which saw all K (raced the commit)",
                tally.in_flight_saw_all,
            ),
            ("show checks of a chain step", tally.show_checks),
            (
                "show saw label and edges apart (violation)",
                tally.show_partial,
            ),
        ] {
            atom.push_row([k.to_string(), v.to_string()]);
        }
        r.tables.push(atom);
        r.tables.push(stats_table(
            "Final counts: acknowledged vs the daemon (before stopping) vs the file (after)",
            &want,
            via_daemon.as_ref(),
            &dump.stats,
        ));
        if tally.in_flight_reads > 0 {
            r.findings.push(format!(
                "{} reads were sent while their batch was unacknowledged; {} of them already saw the whole batch (the commit landed first), the rest saw none of it",
                tally.in_flight_reads, tally.in_flight_saw_all
            ));
        }
        let points = |i: usize| -> Vec<[f64; 2]> {
            tally
                .timeline
                .iter()
                .enumerate()
                .map(|(b, v)| [(b as f64 + 1.0) * BUCKET_S, v[i] as f64 / BUCKET_S])
                .filter(|p| p[0] <= s.duration.as_secs_f64() + BUCKET_S)
                .collect()
        };
        if tally.timeline.len() >= 2 {
            r.series.push(Series {
                id: "mixed-throughput".into(),
                title: "Completed operations per second (writes include batches; reads include the racing readers)".into(),
                x_label: "time (s)".into(),
                y_label: "ops/s".into(),
                lines: vec![
                    Line {
                        name: "writes".into(),
                        points: points(0),
                    },
                    Line {
                        name: "reads".into(),
                        points: points(1),
                    },
                ],
                log_y: false,
            });
        }
        r.config.insert("writers".into(), s.writers.into());
        r.config.insert("readers".into(), s.readers.into());
        r.config
            .insert("duration_s".into(), s.duration.as_secs().into());
        r.config.insert("max_batch_issues".into(), s.max_k.into());
        r.config.insert(
            "checked".into(),
            "replies against each writer's model during the run; daemon stats before stopping; every issue and edge of the file through a direct-mode client after it stopped".into(),
        );
        r.config.insert(
            "seed_use".into(),
            "every writer's and reader's choices (one stream each) and the title token".into(),
        );
        r.headline = format!(
            "{} writers + {} readers: {ops_per_s:.0} ops/s (both), {} batches, {} half-applied seen in {} racing reads, {mismatches} final mismatches",
            s.writers,
            s.readers,
            tally.batches,
            tally.seen_partial + tally.show_partial,
            observations + tally.show_checks
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
