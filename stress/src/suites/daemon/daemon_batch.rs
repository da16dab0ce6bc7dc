//! Suite `daemon-batch`: a batch is all or nothing. A batch that fails at operation k
//! leaves no trace and says `batch_failed` with `index` k; a batch that succeeds is there
//! entirely.
//!
//! Several clients (one connection each, so their batches share the daemon's group
//! commits) send seeded batches of 1 to N operations on issues each client owns: creates,
//! updates, closes, dep_add, dep_remove, show. Half of the batches carry one injected
//! failure at a seeded index k: an update or close of an id that does not exist, a create
//! with priority 9 or a blank title, an update with 33 labels, a self-dependency, a `blocks`
//! edge that closes a cycle with an edge the same batch added just before, a dep_remove of
//! an edge that does not exist. Every operation of batch b carries b's marks: creates the
//! title `bt<token>-<b>-<i>` and the label `bl-<b>`, updates the assignee `bu-<b>`, closes
//! the reason `bc-<b>`.
//!
//! Checked: a failing batch answers `batch_failed` with `index` == k, and right away (through
//! the daemon) no issue carries its label or assignee; a successful batch answers one
//! result per operation, each what the client's model predicts. At the end, from the file
//! (read directly after the daemon stopped), every issue and edge equals the model of the
//! successful batches, no mark of a failed batch is anywhere, the ids are dense (failed
//! creates gave their numbers back), and issues/open/in_progress/closed/deps/events/ready
//! are exactly the model's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use hdrhistogram::Histogram;
use rpc_daemon::client::{Client, ClientError};
use rpc_daemon::error::Code;
use rpc_daemon::model::{CreateArgs, Dep, DepKind, ListArgs, Op, Reply, Status, UpdateArgs};

use super::model::{stats_table, MIssue, Model};
use crate::daemon_harness::daemon_client;
use crate::harness::seed::{seed_token, Rng};
use crate::harness::stats::{hist_cells, new_hist, q_ms, record_us};
use crate::harness::{first_joined, new_result};
use crate::suites::daemon::common::{
    daemon_stats, dump_file, report_grouping, start_daemon, stop_for_counters, unclean_stop,
};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonBatch;

struct Settings {
    batches: u64,
    clients: u64,
    /// Operations per batch: 1 to this many.
    max_ops: u64,
    expected_s: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            batches: 80,
            clients: 4,
            max_ops: 12,
            expected_s: 2,
        },
        Profile::Quick => Settings {
            batches: 500,
            clients: 4,
            max_ops: 12,
            expected_s: 3,
        },
        Profile::Full => Settings {
            // ~30 s on 2 cores: the daemon's `list --label`/`--assignee` that look for a
            // failed batch's marks scan every issue, and the database grows to ~20k.
            batches: 10_000,
            clients: 8,
            max_ops: 20,
            expected_s: 40,
        },
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The share of batches that carry an injected failure.
const FAIL_SHARE: f64 = 0.5;
/// Problem messages kept per client (all are counted).
const KEEP: usize = 10;

/// The injected failures, each with the code the failing operation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    UpdateMissing,
    CloseMissing,
    CreateBadPriority,
    CreateBlankTitle,
    UpdateTooManyLabels,
    DepSelf,
    DepCycle,
    DepRemoveMissing,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::UpdateMissing,
        Fault::CloseMissing,
        Fault::CreateBadPriority,
        Fault::CreateBlankTitle,
        Fault::UpdateTooManyLabels,
        Fault::DepSelf,
        Fault::DepCycle,
        Fault::DepRemoveMissing,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::UpdateMissing => "update of a missing id (not_found)",
            Fault::CloseMissing => "close of a missing id (not_found)",
            Fault::CreateBadPriority => "create with priority 9 (invalid_field)",
            Fault::CreateBlankTitle => "create with a blank title (invalid_field)",
            Fault::UpdateTooManyLabels => "update with 33 labels (invalid_field)",
            Fault::DepSelf => "dep_add of an issue on itself (conflict)",
            Fault::DepCycle => "blocks edge closing a cycle with the batch's own edge (conflict)",
            Fault::DepRemoveMissing => "dep_remove of a missing edge (not_found)",
        }
    }
}

/// A planned batch: its operations, the model after it (creates excepted), and the fault.
struct Planned {
    ops: Vec<Op>,
    after: Model,
    fault: Option<(usize, Fault)>,
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed_as_injected: u64,
    wrong_answers: u64,
    traces: u64,
    unexpected_errors: BTreeMap<String, u64>,
    problems: Vec<String>,
    problem_count: u64,
    /// Per fault: (batches, answered correctly).
    faults: BTreeMap<Fault, (u64, u64)>,
    ok_latency: Option<Histogram<u64>>,
    failed_latency: Option<Histogram<u64>>,
    /// Successful batch latency by operation count.
    by_size: BTreeMap<usize, Histogram<u64>>,
    ops_applied: u64,
    failed_batches: Vec<u64>,
    /// Latency of the `list`s that look for a failed batch's marks.
    check_latency: Option<Histogram<u64>>,
}

impl Tally {
    fn problem(&mut self, m: String) {
        self.problem_count += 1;
        if self.problems.len() < KEEP {
            self.problems.push(m);
        }
    }

    fn absorb(&mut self, o: Tally) {
        self.ok += o.ok;
        self.failed_as_injected += o.failed_as_injected;
        self.wrong_answers += o.wrong_answers;
        self.traces += o.traces;
        for (k, v) in o.unexpected_errors {
            *self.unexpected_errors.entry(k).or_default() += v;
        }
        self.problem_count += o.problem_count;
        for p in o.problems {
            if self.problems.len() < KEEP * 2 {
                self.problems.push(p);
            }
        }
        for (k, (a, b)) in o.faults {
            let e = self.faults.entry(k).or_default();
            e.0 += a;
            e.1 += b;
        }
        merge(&mut self.ok_latency, o.ok_latency);
        merge(&mut self.failed_latency, o.failed_latency);
        merge(&mut self.check_latency, o.check_latency);
        for (k, h) in o.by_size {
            let _ = self.by_size.entry(k).or_insert_with(new_hist).add(&h);
        }
        self.ops_applied += o.ops_applied;
        self.failed_batches.extend(o.failed_batches);
    }
}

fn merge(into: &mut Option<Histogram<u64>>, from: Option<Histogram<u64>>) {
    if let Some(h) = from {
        let _ = into.get_or_insert_with(new_hist).add(&h);
    }
}

fn id(k: u64) -> String {
    format!("hl-{k}")
}

/// An id number no issue will have in a run of this size.
const MISSING: &str = "hl-999999999";

/// Plans batch `b` on the client's `model`. Only issues that exist before the batch are
/// referenced (a batch cannot name the ids its own creates will get).
fn plan(b: u64, token: &str, rng: &mut Rng, model: &Model, max_ops: u64) -> Planned {
    let n = 1 + rng.below(max_ops) as usize;
    let fault = rng
        .chance(FAIL_SHARE)
        .then(|| (rng.index(n), Fault::ALL[rng.index(Fault::ALL.len())]));
    let own: Vec<u64> = model.issues.keys().copied().collect();
    let mut after = model.clone();
    let mut ops = Vec::with_capacity(n);
    // The blocks edge added most recently in this batch, for a cycle fault.
    let mut last_blocks: Option<Dep> = None;
    let mut i = 0usize;
    while i < n {
        if let Some((k, f)) = fault {
            if k == i {
                ops.push(fault_op(f, rng, &own, &last_blocks));
                i += 1;
                continue;
            }
            // A cycle fault needs an edge of this batch just before it.
            if f == Fault::DepCycle && k == i + 1 && own.len() >= 2 {
                let (a, bb) = pick_pair(rng, &own);
                let d = Dep {
                    issue: id(a),
                    depends_on: id(bb),
                    kind: DepKind::Blocks,
                };
                after.dep_add(&d);
                last_blocks = Some(d.clone());
                ops.push(Op::DepAdd(d));
                i += 1;
                continue;
            }
        }
        let roll = rng.below(100);
        let op = if own.is_empty() || roll < 40 {
            Op::Create(CreateArgs {
                title: format!("bt{token}-{b}-{i}"),
                description: String::new(),
                priority: Some(rng.below(5) as u8),
                assignee: None,
                labels: vec![format!("bl-{b}")],
            })
        } else if roll < 65 {
            let mut a = UpdateArgs {
                id: id(own[rng.index(own.len())]),
                assignee: Some(Some(format!("bu-{b}"))),
                ..UpdateArgs::default()
            };
            match rng.below(3) {
                0 => a.priority = Some(rng.below(5) as u8),
                1 => {
                    a.status = Some(if rng.chance(0.5) {
                        Status::InProgress
                    } else {
                        Status::Open
                    })
                }
                _ => {}
            }
            let _ = after.update(&a);
            Op::Update(a)
        } else if roll < 75 {
            let target = id(own[rng.index(own.len())]);
            let reason = Some(format!("bc-{b}"));
            let _ = after.close(&target, &reason);
            Op::Close { id: target, reason }
        } else if roll < 88 && own.len() >= 2 {
            let (a, bb) = pick_pair(rng, &own);
            let d = Dep {
                issue: id(a),
                depends_on: id(bb),
                kind: if rng.chance(0.5) {
                    DepKind::Blocks
                } else {
                    DepKind::Related
                },
            };
            after.dep_add(&d);
            if d.kind == DepKind::Blocks {
                last_blocks = Some(d.clone());
            }
            Op::DepAdd(d)
        } else if roll < 95 && !after.deps.is_empty() {
            let all: Vec<&Dep> = after.deps.iter().collect();
            let d = all[rng.index(all.len())].clone();
            after.dep_remove(&d);
            if last_blocks.as_ref() == Some(&d) {
                last_blocks = None;
            }
            Op::DepRemove(d)
        } else {
            Op::Show {
                id: id(own[rng.index(own.len())]),
            }
        };
        ops.push(op);
        i += 1;
    }
    Planned { ops, after, fault }
}

/// Two distinct own issues, the later first: every planned `blocks` edge points from a
/// later issue to an earlier one, so none closes a cycle unless a fault means it to.
fn pick_pair(rng: &mut Rng, own: &[u64]) -> (u64, u64) {
    let j = 1 + rng.index(own.len() - 1);
    let i = rng.index(j);
    (own[j], own[i])
}

fn fault_op(f: Fault, rng: &mut Rng, own: &[u64], last_blocks: &Option<Dep>) -> Op {
    let missing_update = || {
        Op::Update(UpdateArgs {
            id: MISSING.into(),
            priority: Some(1),
            ..UpdateArgs::default()
        })
    };
    match f {
        Fault::UpdateMissing => missing_update(),
        Fault::CloseMissing => Op::Close {
            id: MISSING.into(),
            reason: None,
        },
        Fault::CreateBadPriority => Op::Create(CreateArgs {
            title: "bad priority".into(),
            priority: Some(9),
            ..CreateArgs::default()
        }),
        Fault::CreateBlankTitle => Op::Create(CreateArgs {
            title: "   ".into(),
            ..CreateArgs::default()
        }),
        Fault::UpdateTooManyLabels if !own.is_empty() => Op::Update(UpdateArgs {
            id: id(own[rng.index(own.len())]),
            labels: Some((0..33).map(|i| format!("l{i}")).collect()),
            ..UpdateArgs::default()
        }),
        Fault::DepSelf if !own.is_empty() => {
            let a = id(own[rng.index(own.len())]);
            Op::DepAdd(Dep {
                issue: a.clone(),
                depends_on: a,
                kind: DepKind::Blocks,
            })
        }
        Fault::DepCycle => match last_blocks {
            Some(d) => Op::DepAdd(Dep {
                issue: d.depends_on.clone(),
                depends_on: d.issue.clone(),
                kind: DepKind::Blocks,
            }),
            None => missing_update(),
        },
        Fault::DepRemoveMissing if own.len() >= 2 => {
            // No planned edge is ever parent-child.
            let (a, b) = pick_pair(rng, own);
            Op::DepRemove(Dep {
                issue: id(a),
                depends_on: id(b),
                kind: DepKind::ParentChild,
            })
        }
        _ => missing_update(),
    }
}

/// The fault a planned batch really carries (a fault whose preconditions were missing fell
/// back to an update of a missing id).
fn effective_fault(f: Fault, op: &Op) -> Fault {
    match (f, op) {
        (
            Fault::UpdateTooManyLabels | Fault::DepSelf | Fault::DepCycle | Fault::DepRemoveMissing,
            Op::Update(a),
        ) if a.id == MISSING => Fault::UpdateMissing,
        _ => f,
    }
}

struct ClientRun {
    c: Client,
    model: Model,
    tally: Tally,
}

impl ClientRun {
    async fn batch(&mut self, b: u64, token: &str, seed: u64, max_ops: u64) {
        let mut rng = Rng::new(seed, b);
        let planned = plan(b, token, &mut rng, &self.model, max_ops);
        let n = planned.ops.len();
        let started = Instant::now();
        let result = self.c.batch(planned.ops.clone()).await;
        let us = started.elapsed().as_micros() as u64;
        match (planned.fault, result) {
            (None, Ok(results)) => {
                record_us(self.tally.ok_latency.get_or_insert_with(new_hist), us);
                record_us(self.tally.by_size.entry(n).or_insert_with(new_hist), us);
                self.apply_success(b, planned, results);
            }
            (Some((k, f)), Err(ClientError::Api(e))) => {
                record_us(self.tally.failed_latency.get_or_insert_with(new_hist), us);
                let f = effective_fault(f, &planned.ops[k]);
                let entry = self.tally.faults.entry(f).or_default();
                entry.0 += 1;
                if e.code == Code::BatchFailed && e.index == Some(k) {
                    entry.1 += 1;
                    self.tally.failed_as_injected += 1;
                } else {
                    self.tally.wrong_answers += 1;
                    self.tally.problem(format!(
                        "batch {b}: injected {} at index {k} of {n}, answered {:?} with index {:?}: {}",
                        f.name(),
                        e.code,
                        e.index,
                        e.message
                    ));
                }
                self.tally.failed_batches.push(b);
                self.check_no_trace(b, &planned.ops).await;
            }
            (Some((k, f)), Ok(_)) => {
                // The batch applied although one operation must fail: a broken batch. The
                // model can no longer be trusted; the final comparison will show the damage.
                self.tally.wrong_answers += 1;
                self.tally.problem(format!(
                    "batch {b}: injected {} at index {k} of {n}, but the batch succeeded",
                    f.name()
                ));
                self.tally.failed_batches.push(b);
            }
            (_, Err(e)) => {
                *self
                    .tally
                    .unexpected_errors
                    .entry(e.code().to_string())
                    .or_default() += 1;
                self.tally.problem(format!(
                    "batch {b} ({n} operations, fault {:?}): unexpected error {e}",
                    planned.fault
                ));
            }
        }
    }

    fn apply_success(&mut self, b: u64, planned: Planned, results: Vec<Reply>) {
        let n = planned.ops.len();
        if results.len() != n {
            self.tally.wrong_answers += 1;
            return self.tally.problem(format!(
                "batch {b}: {n} operations answered {} results",
                results.len()
            ));
        }
        let mut after = planned.after;
        let mut bad = Vec::new();
        for (i, (op, reply)) in planned.ops.iter().zip(&results).enumerate() {
            match (op, reply) {
                (Op::Create(a), Reply::Issue { issue }) => {
                    if MIssue::of(issue) != MIssue::created(a) {
                        bad.push(format!("op {i}: create answered {issue:?}"));
                    }
                    if let Err(m) = after.created(issue) {
                        bad.push(format!("op {i}: {m}"));
                    }
                }
                (Op::Update(a), Reply::Issue { issue }) => {
                    // The state after the whole batch is in `after`; a reply shows the state
                    // after its own operation, so only the fields this update set are checked.
                    let ok = issue.id == a.id
                        && a.assignee.as_ref().is_none_or(|w| issue.assignee == *w)
                        && a.priority.is_none_or(|p| issue.priority == p)
                        && a.status.is_none_or(|s| issue.status == s);
                    if !ok {
                        bad.push(format!("op {i}: update {a:?} answered {issue:?}"));
                    }
                }
                (Op::Close { id, .. }, Reply::Issue { issue }) => {
                    if issue.id != *id || issue.status != Status::Closed {
                        bad.push(format!("op {i}: close {id} answered {issue:?}"));
                    }
                }
                (Op::DepAdd(d) | Op::DepRemove(d), Reply::Dep { dep }) => {
                    if dep != d {
                        bad.push(format!("op {i}: {} answered {dep:?}", op.name()));
                    }
                }
                (Op::Show { id }, Reply::Detail { issue, .. }) => {
                    if issue.id != *id {
                        bad.push(format!("op {i}: show {id} answered {}", issue.id));
                    }
                }
                (op, reply) => bad.push(format!("op {i}: {} answered {reply:?}", op.name())),
            }
        }
        if !bad.is_empty() {
            self.tally.wrong_answers += 1;
            self.tally.problem(format!(
                "batch {b}: {}",
                bad.into_iter().take(3).collect::<Vec<_>>().join("; ")
            ));
        }
        self.tally.ok += 1;
        self.tally.ops_applied += n as u64;
        self.model = after;
    }

    /// Right after a failed batch, through the daemon: nothing carries its marks.
    async fn check_no_trace(&mut self, b: u64, ops: &[Op]) {
        let creates = ops.iter().any(|o| matches!(o, Op::Create(_)));
        let updates = ops
            .iter()
            .any(|o| matches!(o, Op::Update(a) if a.assignee.is_some()));
        let mut queries = Vec::new();
        if creates {
            queries.push(ListArgs {
                label: Some(format!("bl-{b}")),
                limit: Some(100),
                ..ListArgs::default()
            });
        }
        if updates {
            queries.push(ListArgs {
                assignee: Some(format!("bu-{b}")),
                limit: Some(100),
                ..ListArgs::default()
            });
        }
        for q in queries {
            let started = Instant::now();
            let r = self.c.list(q.clone()).await;
            record_us(
                self.tally.check_latency.get_or_insert_with(new_hist),
                started.elapsed().as_micros() as u64,
            );
            match r {
                Ok(found) if found.is_empty() => {}
                Ok(found) => {
                    self.tally.traces += found.len() as u64;
                    self.tally.problem(format!(
                        "failed batch {b} left {} issues behind ({q:?}), e.g. {}",
                        found.len(),
                        found[0].id
                    ));
                }
                Err(e) => {
                    *self
                        .tally
                        .unexpected_errors
                        .entry(format!("list: {}", e.code()))
                        .or_default() += 1;
                    self.tally
                        .problem(format!("checking failed batch {b}: list failed: {e}"));
                }
            }
        }
    }
}

/// The marks in an issue that name a batch: (title batch, label batches, assignee batch,
/// close-reason batch).
fn marks(issue: &MIssue, token: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let num = |s: &str| s.split('-').next().and_then(|x| x.parse::<u64>().ok());
    if let Some(rest) = issue.title.strip_prefix(&format!("bt{token}-")) {
        out.extend(num(rest));
    }
    for l in &issue.labels {
        if let Some(rest) = l.strip_prefix("bl-") {
            out.extend(num(rest));
        }
    }
    if let Some(rest) = issue
        .assignee
        .as_deref()
        .and_then(|a| a.strip_prefix("bu-"))
    {
        out.extend(num(rest));
    }
    if let Some(rest) = issue
        .close_reason
        .as_deref()
        .and_then(|a| a.strip_prefix("bc-"))
    {
        out.extend(num(rest));
    }
    out
}

impl Suite for DaemonBatch {
    fn name(&self) -> &'static str {
        "daemon-batch"
    }

    fn description(&self) -> &'static str {
        "seeded batches with an injected failure at operation k leave no trace and answer batch_failed with index k; successful batches apply entirely"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{} batches of 1-{} operations from {} clients, half with an injected failure",
                s.batches, s.max_ops, s.clients
            ),
            expected_s: s.expected_s,
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
            "daemon pid {}; {} batches from {} clients",
            daemon.pid(),
            s.batches,
            s.clients
        );
        let rt = crate::harness::runtime()?;
        let bound = Duration::from_secs(120 + s.batches / 10);
        let started = Instant::now();
        let token = Arc::new(token);
        let (model, tally, via_daemon) = rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..s.clients {
                let c = daemon_client(&db, CALL_TIMEOUT).await?;
                let token = token.clone();
                let (batches, max_ops, seed, clients) = (s.batches, s.max_ops, ctx.seed, s.clients);
                handles.push(tokio::spawn(async move {
                    let mut run = ClientRun {
                        c,
                        model: Model::default(),
                        tally: Tally::default(),
                    };
                    let mut b = t;
                    while b < batches {
                        run.batch(b, &token, seed, max_ops).await;
                        b += clients;
                    }
                    (run.model, run.tally)
                }));
            }
            let mut model = Model::default();
            let mut tally = Tally::default();
            for h in handles {
                match tokio::time::timeout(bound, h).await {
                    Ok(Ok((m, t))) => {
                        model.absorb(m);
                        tally.absorb(t);
                    }
                    Ok(Err(e)) => anyhow::bail!("a client task failed: {e}"),
                    Err(_) => anyhow::bail!("a client ran past {bound:?}"),
                }
            }
            let via_daemon = daemon_stats(&db, CALL_TIMEOUT).await;
            anyhow::Ok((model, tally, via_daemon))
        })?;
        let run_s = started.elapsed().as_secs_f64();
        let (clean_stop, server_stats) = stop_for_counters(&mut daemon);
        drop(daemon);
        let max_id = model.issues.keys().next_back().copied().unwrap_or(0);
        let dump = rt.block_on(dump_file(&db, max_id))?;

        // No mark of a failed batch anywhere in the file.
        let failed: BTreeSet<u64> = tally.failed_batches.iter().copied().collect();
        let mut file_traces = Vec::new();
        for (k, issue) in &dump.issues {
            let m = MIssue::of(issue);
            for b in marks(&m, &token) {
                if failed.contains(&b) {
                    file_traces.push(format!("hl-{k} carries a mark of failed batch {b}: {m:?}"));
                }
            }
        }
        let (mismatches, mism_msgs) = model.compare(&dump);

        if tally.problem_count > 0 {
            failures.push(format!(
                "{} problems during the run ({} wrong answers, {} traces of failed batches seen through the daemon, {} unexpected errors), first: {}",
                tally.problem_count,
                tally.wrong_answers,
                tally.traces,
                tally.unexpected_errors.values().sum::<u64>(),
                first_joined(&tally.problems, 4)
            ));
        }
        if !file_traces.is_empty() {
            failures.push(format!(
                "{} issues in the file carry marks of failed batches, e.g. {}",
                file_traces.len(),
                first_joined(&file_traces, 3)
            ));
        }
        if mismatches > 0 {
            failures.push(format!(
                "the file differs from the successful batches in {mismatches} ways, first: {}",
                first_joined(&mism_msgs, 4)
            ));
        }
        let want = model.stats();
        match &via_daemon {
            Some(st) if *st != want => failures.push(format!(
                "daemon stats before stopping {st:?} != the successful batches' {want:?}"
            )),
            Some(_) => {}
            None => failures.push("stats through the daemon after the run failed".into()),
        }
        if !clean_stop {
            failures.push(unclean_stop(&log));
        }
        let injected: u64 = tally.faults.values().map(|(a, _)| a).sum();
        if tally.ok == 0 || injected == 0 {
            doubts.push(format!(
                "nothing to judge: {} successful and {injected} failing batches",
                tally.ok
            ));
        }

        // Numbers.
        let batches_per_s = (tally.ok + injected) as f64 / run_s;
        let ok_h = tally.ok_latency.clone().unwrap_or_else(new_hist);
        let failed_h = tally.failed_latency.clone().unwrap_or_else(new_hist);
        r.metrics.push(
            Metric::new("batches_per_s", batches_per_s, "batches/s")
                .higher_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new(
                "failed_batch_traces",
                (tally.traces + file_traces.len() as u64) as f64,
                "",
            )
            .lower_is_better()
            .headline(),
        );
        r.metrics.push(
            Metric::new("wrong_answers", tally.wrong_answers as f64, "")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("final_mismatches", mismatches as f64, "").lower_is_better());
        r.metrics
            .push(Metric::new("batches_ok", tally.ok as f64, ""));
        r.metrics
            .push(Metric::new("batches_failed_injected", injected as f64, ""));
        r.metrics.push(Metric::new(
            "batches_failed_as_injected",
            tally.failed_as_injected as f64,
            "",
        ));
        r.metrics
            .push(Metric::new("ops_applied", tally.ops_applied as f64, ""));
        r.metrics
            .push(Metric::new("ok_batch_latency_p50_ms", q_ms(&ok_h, 0.5), "ms").lower_is_better());
        r.metrics.push(
            Metric::new("ok_batch_latency_p99_ms", q_ms(&ok_h, 0.99), "ms")
                .lower_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("failed_batch_latency_p99_ms", q_ms(&failed_h, 0.99), "ms")
                .lower_is_better(),
        );
        r.metrics
            .push(Metric::new("issues_at_end", dump.stats.issues as f64, ""));
        r.metrics.push(Metric::new("run_s", run_s, "s"));
        report_grouping(&mut r, server_stats, clean_stop, &log);

        let mut ft = Table::new(
            "Injected failures: batch_failed with index k, nothing applied",
            &[
                "failure at operation k",
                "batches",
                "batch_failed with index k",
            ],
        );
        for (f, (n, ok)) in &tally.faults {
            ft.push_row([f.name().to_string(), n.to_string(), ok.to_string()]);
        }
        r.tables.push(ft);
        let mut lt = Table::new(
            "Latency (send to answer)",
            &["call", "calls", "p50 ms", "p99 ms", "max ms"],
        );
        let check_h = tally.check_latency.clone().unwrap_or_else(new_hist);
        for (name, h) in [
            ("batch applied", &ok_h),
            ("batch failed as injected", &failed_h),
            ("list looking for a failed batch's marks", &check_h),
        ] {
            let [p50, p99, max] = hist_cells(h);
            lt.push_row([name.to_string(), h.len().to_string(), p50, p99, max]);
        }
        r.tables.push(lt);
        r.tables.push(stats_table(
            "Final counts: the successful batches vs the daemon (before stopping) vs the file (after)",
            &want,
            via_daemon.as_ref(),
            &dump.stats,
        ));
        let curve: Vec<[f64; 2]> = tally
            .by_size
            .iter()
            .filter(|(_, h)| h.len() >= 3)
            .map(|(k, h)| [*k as f64, q_ms(h, 0.5)])
            .collect();
        if curve.len() >= 2 {
            r.series.push(Series {
                id: "batch-latency-by-size".into(),
                title: "Median latency of an applied batch by its number of operations".into(),
                x_label: "operations in the batch".into(),
                y_label: "p50 latency (ms)".into(),
                lines: vec![Line {
                    name: format!("{} concurrent clients", s.clients),
                    points: curve,
                }],
                log_y: false,
            });
        }
        r.config.insert("batches".into(), s.batches.into());
        r.config.insert("clients".into(), s.clients.into());
        r.config
            .insert("max_ops_per_batch".into(), s.max_ops.into());
        r.config.insert("failing_share".into(), FAIL_SHARE.into());
        r.config.insert(
            "checked".into(),
            "each answer against the client's model; failed batches' marks through the daemon right after; daemon stats before stopping; every issue and edge of the file through a direct-mode client after it stopped".into(),
        );
        r.config.insert(
            "seed_use".into(),
            "every batch (size, operations, whether and where it fails, how) from its own stream"
                .into(),
        );
        r.headline = format!(
            "{} batches ({} applied, {injected} with an injected failure): {} answered batch_failed at the right index, {} traces left, {mismatches} final mismatches; {batches_per_s:.0} batches/s",
            tally.ok + injected,
            tally.ok,
            tally.failed_as_injected,
            tally.traces + file_traces.len() as u64
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_seeded_and_faults_sit_at_their_index() {
        let mut model = Model::default();
        for k in 1..=5u64 {
            model.issues.insert(
                k,
                MIssue::created(&CreateArgs {
                    title: format!("t{k}"),
                    ..CreateArgs::default()
                }),
            );
        }
        let mut seen_fault = 0;
        for b in 0..200 {
            let a = plan(b, "x", &mut Rng::new(3, b), &model, 12);
            let again = plan(b, "x", &mut Rng::new(3, b), &model, 12);
            assert_eq!(a.ops, again.ops);
            assert!(!a.ops.is_empty() && a.ops.len() <= 12);
            if let Some((k, f)) = a.fault {
                seen_fault += 1;
                assert!(k < a.ops.len());
                if effective_fault(f, &a.ops[k]) == Fault::DepCycle {
                    // The edge it reverses was added by the operation just before.
                    let (Op::DepAdd(prev), Op::DepAdd(cyc)) = (&a.ops[k - 1], &a.ops[k]) else {
                        panic!("{:?}", a.ops);
                    };
                    assert_eq!(
                        (&prev.issue, &prev.depends_on),
                        (&cyc.depends_on, &cyc.issue)
                    );
                }
            }
        }
        assert!(seen_fault > 50, "{seen_fault}");
    }

    #[test]
    fn marks_name_their_batch() {
        let m = MIssue {
            title: "btx-17-3".into(),
            description: String::new(),
            status: Status::Closed,
            priority: 2,
            assignee: Some("bu-4".into()),
            labels: vec!["bl-17".into()],
            close_reason: Some("bc-9".into()),
        };
        assert_eq!(marks(&m, "x"), vec![17, 17, 4, 9]);
    }
}
