//! Suite `daemon-maxrps`: the highest rate the rpc-daemon sustains under a p99 SLO, found by
//! the collector's max-RPS finder (step up, bisect, confirm), once for creates only
//! (`daemon:op=create`) and once for an agent-like mix of create / update / show / list /
//! ready (`daemon:op=mix`). Each op gets its own daemon, a separate OS process
//! (`stress __daemon`) on a fresh database in the suite's temp dir, loaded open-loop through
//! a pool of daemon connections.
//!
//! It also measures the issue's two targets (reported, not asserted): the p50 latency of
//! one client creating back to back (target ≤ 100 µs; each such measurement on a fresh
//! daemon of its own, whose counters say how many writes took the lone-client path), and,
//! on the create daemon before its finder runs, the aggregate create rate of 8 concurrent agents, each with its own
//! connection, creating back to back (target ≥ 20,000 creates/s; the seed daemon managed
//! ~376). The agents are tasks of this process; to the daemon, 8 connections are 8 agents.
//! The one client is a plain [`Client`] on a current-thread runtime, as an agent would
//! use it, measured twice: with the default settings (which busy-poll for a quick reply,
//! [`ClientConfig::busy_poll`]) and with polling off. Beside them the suite measures this
//! machine's floor: a blocking round trip of a small message over a Unix socket to an echo
//! process (`stress __echo`), which is two process wake-ups and no work at all.
//!
//! Verdict: PASS when both finders found a confirmed answer. FAIL when no step of an op
//! passed (the daemon missed the SLO even at the lowest rate), when the daemon stopped
//! answering, or when the database holds fewer issues than creates were acknowledged.
//! INCONCLUSIVE when the run could not decide: the generator fell short of a rate above the
//! answer, no step tripped (the maximum is above the top step), or the answer did not hold
//! in its confirmation step.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use collector::finder::{Answer, FinderConfig, FinderReport, Phase};
use collector::generator::{closed_loop, GeneratorConfig};
use collector::recorder::ActionSummary;
use collector::shape::StepTiming;
use collector::slo::{Slo, StepStatus};
use collector::{Metric, SuiteResult, Table, Verdict};
use rpc_daemon::client::{Client, ClientConfig, DEFAULT_BUSY_POLL};
use rpc_daemon::model::CreateArgs;

use crate::daemon_harness::{daemon_client, daemon_config, socket_round_trips, DaemonProc};
use crate::daemon_target::{DaemonOp, DaemonTarget, MIX, READ_LIMIT, SEED_ISSUES};
use crate::harness::stats::{new_hist, q_ms, record_us};
use crate::maxrps::{run_finder, to_result};
use crate::suites::daemon::common::stop_for_counters;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonMaxRps;

/// Connections of the finder's target.
const POOL: usize = 32;
/// The SLO every step is judged by (quick and full).
const SLO_P99_MS: f64 = 50.0;
/// The smoke SLO: a 0.4 s hold at 1k/s has 400 samples, so its p99 is the fourth worst,
/// which one scheduling stall on a busy 2-core machine decides; smoke only has to tell a
/// working daemon (p99 ≈ 4 ms there) from a broken one.
const SMOKE_SLO_P99_MS: f64 = 250.0;
/// Issue target: one client's create p50, µs.
const TARGET_P50_US: f64 = 100.0;
/// Issue target: 8 concurrent agents' aggregate creates per second.
const TARGET_AGENTS_PER_S: f64 = 20_000.0;
/// Concurrent agents of that target.
const AGENTS: u64 = 8;
/// What the seed daemon did: aggregate creates/s with 8 agents.
const SEED_AGENTS_PER_S: f64 = 376.0;
/// How long the host's CPU use is sampled before and after the run.
const BUSY_WINDOW: Duration = Duration::from_millis(500);
/// Above this share of busy CPU (other work) the result says the host was busy.
const BUSY_FINDING_PCT: f64 = 20.0;
/// Round trips of the floor measurement.
const FLOOR_ROUND_TRIPS: usize = 20_000;
/// How long a daemon gets to shut down gracefully at the end.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// Bound of every generator operation.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

struct Settings {
    steps: Vec<u64>,
    p99_ms: f64,
    timing: StepTiming,
    precision_pct: f64,
    max_refine: usize,
    /// Length of each closed-loop measurement (1 client, 8 clients).
    closed: Duration,
}

/// Quick steps come from a first measurement on the 2-core reference machine, idle: creates
/// tripped between 15.6k and 16.3k ops/s, the mix between 7.8k and 8.8k ops/s; with a
/// compiler running beside it, creates tripped at 5k and the mix at 2k. So the ramp starts
/// at 1k, where "no step passed" means the daemon is broken rather than the machine busy,
/// and doubles past both knees.
fn settings(profile: Profile) -> Settings {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 0);
    match profile {
        // One low step that must pass, one far above the knee that must trip, and the
        // confirmation: every path of the suite in a few seconds (bisection is the
        // finder's own path, which `maxrps-sim` checks).
        Profile::Smoke => Settings {
            steps: vec![1_000, 40_000],
            p99_ms: SMOKE_SLO_P99_MS,
            timing: t(200, 400),
            precision_pct: 50.0,
            max_refine: 0,
            closed: Duration::from_millis(300),
        },
        Profile::Quick => Settings {
            steps: vec![1_000, 3_000, 6_000, 12_000, 24_000, 48_000],
            p99_ms: SLO_P99_MS,
            timing: t(1_000, 3_000),
            precision_pct: 5.0,
            max_refine: 6,
            closed: Duration::from_secs(2),
        },
        Profile::Full => Settings {
            steps: vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000],
            p99_ms: SLO_P99_MS,
            timing: t(2_000, 10_000),
            precision_pct: 2.0,
            max_refine: 8,
            closed: Duration::from_secs(10),
        },
    }
}

fn finder_config(s: &Settings) -> FinderConfig {
    FinderConfig {
        steps: s.steps.clone(),
        timing: s.timing,
        precision_pct: s.precision_pct,
        max_refine_steps: s.max_refine,
        slo: Slo {
            p99_ms: Some(s.p99_ms),
            ..Slo::default()
        },
    }
}

/// What one closed-loop run of creates measured.
struct Closed {
    creates_per_s: f64,
    summary: ActionSummary,
}

/// `clients` clients, each on its own connection, creating back to back for `duration`.
fn closed_creates(db: &Path, clients: u64, duration: Duration, seed: u64) -> Result<Closed> {
    let target = Arc::new(DaemonTarget::new(
        DaemonOp::Create,
        db,
        clients as usize,
        seed,
    )?);
    let rt = crate::harness::runtime()?;
    let m = rt.block_on(closed_loop(
        target,
        clients,
        Duration::ZERO,
        duration,
        OP_TIMEOUT,
    ))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    let summary = m.data.total().summary(m.window_s);
    Ok(Closed {
        creates_per_s: if m.window_s > 0.0 {
            summary.ok as f64 / m.window_s
        } else {
            0.0
        },
        summary,
    })
}

/// One client creating back to back.
struct OneClient {
    p50_us: f64,
    p99_us: f64,
    creates_per_s: f64,
    count: u64,
    errors: u64,
    /// Of the daemon's writes, how many took the lone-client path (from its counters,
    /// `None` when it did not print them), and how many writes it counted in all.
    inline_writes: Option<(u64, u64)>,
}

/// [`one_client`] against a daemon of its own: a fresh database in `dir`, started for this
/// measurement and stopped after it, so each measurement starts from the same state and
/// the daemon's counters say which write path served it.
fn one_client_on_own_daemon(
    dir: &Path,
    duration: Duration,
    busy_poll: Duration,
) -> Result<OneClient> {
    std::fs::create_dir_all(dir)?;
    let mut daemon = DaemonProc::start(&dir.join("issues.db"), &[])?;
    let mut one = one_client(&daemon.db, duration, busy_poll)?;
    let (_, stats) = stop_for_counters(&mut daemon);
    one.inline_writes = stats.map(|s| (s.inline_writes, s.grouped_writes));
    Ok(one)
}

impl OneClient {
    /// "N of M writes took the lone-client path", or why that is unknown.
    fn path_note(&self) -> String {
        match self.inline_writes {
            Some((inline, all)) => format!("{inline} of {all} writes took the lone-client path"),
            None => "the daemon's counters were unavailable".to_string(),
        }
    }
}

/// One [`Client`] on a current-thread runtime creating back to back for `duration`, each
/// call timed from its start to its reply.
fn one_client(db: &Path, duration: Duration, busy_poll: Duration) -> Result<OneClient> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut hist = new_hist();
    let (count, errors, elapsed) = rt.block_on(async {
        let cfg = ClientConfig {
            busy_poll,
            ..daemon_config(db, OP_TIMEOUT)
        };
        let mut client = Client::connect(cfg)
            .await
            .with_context(|| format!("connecting to the daemon of {}", db.display()))?;
        let (mut count, mut errors) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < duration {
            let args = CreateArgs {
                title: format!("one client {count}"),
                ..CreateArgs::default()
            };
            let t = Instant::now();
            let ok = client.create(args).await.is_ok();
            record_us(&mut hist, t.elapsed().as_micros() as u64);
            count += 1;
            errors += u64::from(!ok);
        }
        anyhow::Ok((count, errors, start.elapsed()))
    })?;
    Ok(OneClient {
        p50_us: q_ms(&hist, 0.5) * 1000.0,
        p99_us: q_ms(&hist, 0.99) * 1000.0,
        creates_per_s: (count - errors) as f64 / elapsed.as_secs_f64().max(1e-9),
        count,
        errors,
        inline_writes: None,
    })
}

/// This machine's floor for a daemon round trip: p50 µs of blocking round trips of a
/// 64-byte message to an echo process (each way wakes a sleeping process).
fn socket_floor_p50_us(dir: &Path, round_trips: usize) -> Result<f64> {
    let mut hist = new_hist();
    for us in socket_round_trips(dir, round_trips, 64)? {
        record_us(&mut hist, us);
    }
    Ok(q_ms(&hist, 0.5) * 1000.0)
}

/// The daemon's issue count, and whether it answered at all (bounded).
fn issue_count(db: &Path) -> Result<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = daemon_client(db, Duration::from_secs(5)).await?;
        let stats = c.stats().await.context("asking the daemon for its stats")?;
        anyhow::Ok(stats.issues)
    })
}

/// `(busy, total)` jiffies of all CPUs from Linux `/proc/stat`, if readable.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total.saturating_sub(v[3] + v[4]), total))
}

/// How busy the host's CPUs are over `window` while this suite does nothing, percent.
fn host_busy_pct(window: Duration) -> Option<f64> {
    let (b0, t0) = cpu_jiffies()?;
    std::thread::sleep(window);
    let (b1, t1) = cpu_jiffies()?;
    (t1 > t0).then(|| b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0)
}

/// One finder run against a fresh daemon: the report, and the creates acknowledged during
/// the holds against the issues in the database afterwards (an error if it did not answer).
struct OpRun {
    report: FinderReport,
    acked_creates: u64,
    issues_after: Result<u64>,
    seeded: u64,
}

fn run_op(op: DaemonOp, daemon: &DaemonProc, cfg: &FinderConfig, seed: u64) -> Result<OpRun> {
    let target = Arc::new(DaemonTarget::new(op, &daemon.db, POOL, seed)?);
    println!(
        "{}: {}",
        op.name(),
        collector::target::Target::describe(target.as_ref())
    );
    let generator = GeneratorConfig {
        op_timeout: OP_TIMEOUT,
        ..GeneratorConfig::default()
    };
    let report = run_finder(target, cfg, generator, true)?;
    println!("{}", report.answer_line());
    let acked_creates = report
        .rows
        .iter()
        .flat_map(|r| r.actions.iter())
        .filter(|(name, _)| name == "create")
        .map(|(_, s)| s.ok)
        .sum();
    Ok(OpRun {
        report,
        acked_creates,
        issues_after: issue_count(&daemon.db),
        seeded: if op == DaemonOp::Mix {
            SEED_ISSUES as u64
        } else {
            0
        },
    })
}

/// Judges one finder run: failures and doubts, each naming the op and the numbers.
fn judge(op: &str, run: &OpRun, p99_ms: f64, failures: &mut Vec<String>, doubts: &mut Vec<String>) {
    let report = &run.report;
    match &report.answer {
        Answer::NonePassed { first } => {
            let first_rate = report.rows.first().map(|r| r.target_per_s).unwrap_or(0);
            if report
                .rows
                .iter()
                .any(|r| r.verdict.status == StepStatus::Trip)
            {
                failures.push(format!(
                    "{op}: no step passed: the daemon missed p99 ≤ {p99_ms} ms already at {first_rate}/s (first step {}: {})",
                    first.status,
                    first.reasons.join("; ")
                ));
            } else {
                doubts.push(format!(
                    "{op}: no step passed and none tripped: the generator could not drive even {first_rate}/s ({})",
                    first.reasons.join("; ")
                ));
            }
        }
        Answer::Found {
            rate,
            confirmed,
            confirm_reasons,
            first_trip,
            ..
        } => {
            let short: Vec<String> = report
                .rows
                .iter()
                .filter(|r| {
                    r.phase != Phase::Confirm
                        && r.target_per_s > *rate
                        && r.verdict.status == StepStatus::Inconclusive
                })
                .map(|r| format!("{}/s (achieved {:.0}/s)", r.target_per_s, r.achieved_per_s))
                .collect();
            if !short.is_empty() {
                doubts.push(format!(
                    "{op}: the generator was the limit above the answer {rate}/s: INCONCLUSIVE at {}",
                    short.join(", ")
                ));
            } else if first_trip.is_none() {
                doubts.push(format!(
                    "{op}: every step passed up to {rate}/s: the maximum is higher than the top step"
                ));
            }
            if !confirmed {
                doubts.push(format!(
                    "{op}: the answer {rate}/s did not hold in its confirmation: {}",
                    confirm_reasons.join("; ")
                ));
            }
        }
    }
    match &run.issues_after {
        Err(e) => failures.push(format!(
            "{op}: the daemon did not answer after the run: {e:#}"
        )),
        Ok(issues) if *issues < run.acked_creates + run.seeded => failures.push(format!(
            "{op}: the database holds {issues} issues but {} creates were acknowledged during the holds (+{} seeded)",
            run.acked_creates, run.seeded
        )),
        Ok(_) => {}
    }
}

/// The finder assumes the target does not change while it searches. A step that tripped at
/// a rate no higher than one that passed earlier says the daemon got slower during the run
/// (its database grows with every create): the finding names both steps.
fn got_slower(op: &str, run: &OpRun) -> Option<String> {
    let rows = &run.report.rows;
    let issues = match &run.issues_after {
        Ok(n) => format!("{n} issues at the end"),
        Err(_) => "issue count unknown".into(),
    };
    rows.iter().enumerate().find_map(|(i, late)| {
        if late.verdict.status != StepStatus::Trip {
            return None;
        }
        let early = rows[..i].iter().find(|e| {
            e.verdict.status == StepStatus::Pass && e.target_per_s >= late.target_per_s
        })?;
        Some(format!(
            "{op}: the daemon got slower during the run: {} {}/s passed with p99 {:.1} ms, a later {} step at {}/s tripped with p99 {:.1} ms (p50 {:.1} ms); the finder assumes a steady target, so the answer reflects the database as it was late in the run ({issues})",
            early.phase.name(),
            early.target_per_s,
            early.total.p99_ms,
            late.phase.name(),
            late.target_per_s,
            late.total.p99_ms,
            late.total.p50_ms,
        ))
    })
}

/// Copies one op's finder result (tables, charts, metrics, config) into the suite's,
/// prefixed with the op.
fn merge(into: &mut SuiteResult, op: &str, part: SuiteResult) {
    for mut t in part.tables {
        t.title = format!("{op}: {}", t.title);
        into.tables.push(t);
    }
    for mut s in part.series {
        s.id = format!("{op}-{}", s.id);
        s.title = format!("daemon {op}: {}", s.title);
        into.series.push(s);
    }
    for mut m in part.metrics {
        m.name = format!("{op}_{}", m.name);
        into.metrics.push(m);
    }
    for (k, v) in part.config {
        into.config.insert(format!("{op}_{k}"), v);
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

impl Suite for DaemonMaxRps {
    fn name(&self) -> &'static str {
        "daemon-maxrps"
    }

    fn description(&self) -> &'static str {
        "max-RPS finder against the rpc-daemon (creates; agent mix) under p99 ≤ 50 ms, plus 1-client create p50 and 8-agent create rate"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let step_s = (s.timing.warmup + s.timing.hold).as_secs_f64();
        // Per op: the ramp up to its first trip (five steps at most so far), about four
        // refinements at ±5%, one confirmation, the drain after overloaded steps; then two
        // closed loops and two daemon starts.
        let ramp = s.steps.len().min(5) as f64;
        let per_op = (ramp + s.max_refine.min(4) as f64 + 1.0) * step_s + 1.5;
        let total = 2.0 * per_op + 2.0 * s.closed.as_secs_f64() + 2.0;
        Plan {
            scale: format!(
                "create and mix · steps {} · warmup {} s, hold {} s · p99 ≤ {} ms · ±{}% · pool {POOL}; 1 and {AGENTS} clients × {} s",
                s.steps
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                s.timing.warmup.as_secs_f64(),
                s.timing.hold.as_secs_f64(),
                s.p99_ms,
                s.precision_pct,
                s.closed.as_secs_f64()
            ),
            expected_s: (total * 1.2).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let cfg = finder_config(&s);
        let profile = ctx.profile.to_string();
        let scale = self.plan(ctx.profile).scale;
        let mut r = SuiteResult::new(self.name(), &profile, &scale, ctx.seed);
        let mut failures = Vec::new();
        let mut doubts = Vec::new();
        // Other work on the host lowers every rate here: look before starting anything.
        let busy_before = host_busy_pct(BUSY_WINDOW);

        // ---- creates: issue targets on a fresh database, then the finder ----
        let dir = ctx.work_dir.join("create");
        std::fs::create_dir_all(&dir)?;
        let floor_us = socket_floor_p50_us(&dir, FLOOR_ROUND_TRIPS)?;
        // Each single-client measurement gets a daemon of its own (the previous client's
        // connection must not linger, and each starts on an empty database).
        let sleeping =
            one_client_on_own_daemon(&dir.join("one-no-poll"), s.closed, Duration::ZERO)?;
        let one = one_client_on_own_daemon(&dir.join("one"), s.closed, DEFAULT_BUSY_POLL)?;
        let mut daemon = DaemonProc::start(&dir.join("issues.db"), &[])?;
        println!("create daemon: pid {}", daemon.pid());
        let agents = closed_creates(&daemon.db, AGENTS, s.closed, ctx.seed ^ 0xa6e7)?;
        let one_p50_us = one.p50_us;
        println!(
            "1 client: {:.0} creates/s, p50 {one_p50_us:.0} µs, p99 {:.0} µs; polling off p50 {:.0} µs; socket floor p50 {floor_us:.0} µs · {AGENTS} clients: {:.0} creates/s, p99 {:.2} ms",
            one.creates_per_s,
            one.p99_us,
            sleeping.p50_us,
            agents.creates_per_s,
            agents.summary.p99_ms
        );
        let create = run_op(DaemonOp::Create, &daemon, &cfg, ctx.seed)?;
        let create_clean = daemon.stop(STOP_BOUND);
        drop(daemon);

        // ---- the mix, on its own fresh daemon ----
        let dir = ctx.work_dir.join("mix");
        std::fs::create_dir_all(&dir)?;
        let mut daemon = DaemonProc::start(&dir.join("issues.db"), &[])?;
        println!("mix daemon: pid {}", daemon.pid());
        let mix = run_op(DaemonOp::Mix, &daemon, &cfg, ctx.seed)?;
        let mix_clean = daemon.stop(STOP_BOUND);
        drop(daemon);
        for (op, clean) in [("create", create_clean), ("mix", mix_clean)] {
            if !clean {
                r.findings.push(format!(
                    "{op}: the daemon did not exit cleanly within {} s of SIGTERM (killed)",
                    STOP_BOUND.as_secs()
                ));
            }
        }

        judge("create", &create, s.p99_ms, &mut failures, &mut doubts);
        judge("mix", &mix, s.p99_ms, &mut failures, &mut doubts);

        // ---- result ----
        for (op, run) in [("create", &create), ("mix", &mix)] {
            let part = to_result(self.name(), &profile, &scale, ctx.seed, &cfg, &run.report);
            merge(&mut r, op, part);
            if let Some(m) = r
                .metrics
                .iter_mut()
                .find(|m| m.name == format!("{op}_max_rps"))
            {
                m.name = format!("{op}_max_ops_per_s");
            }
            r.config
                .insert(format!("{op}_answer"), run.report.answer_line().into());
        }
        r.config.insert("pool".into(), POOL.into());
        r.config.insert("slo_p99_ms".into(), s.p99_ms.into());
        r.config.insert(
            "mix".into(),
            MIX.iter()
                .map(|(n, w)| format!("{n} {w}%"))
                .collect::<Vec<_>>()
                .join(", ")
                .into(),
        );
        r.config
            .insert("mix_seed_issues".into(), SEED_ISSUES.into());
        r.config.insert("mix_read_limit".into(), READ_LIMIT.into());
        r.config.insert(
            "daemon".into(),
            "separate process (stress __daemon), default ServerConfig, synchronous=NORMAL, fresh database per op"
                .into(),
        );
        r.config.insert(
            "seed_use".into(),
            "the mix's action per operation, its issue picks and field values".into(),
        );

        r.metrics.push(
            Metric::new("single_client_create_latency_p50_us", one_p50_us, "µs")
                .lower_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("single_client_create_latency_p99_us", one.p99_us, "µs").lower_is_better(),
        );
        r.metrics.push(
            Metric::new(
                "single_client_no_poll_create_latency_p50_us",
                sleeping.p50_us,
                "µs",
            )
            .lower_is_better(),
        );
        r.metrics
            .push(Metric::new("socket_round_trip_floor_p50_us", floor_us, "µs").lower_is_better());
        r.metrics.push(
            Metric::new("single_client_creates_per_s", one.creates_per_s, "ops/s")
                .higher_is_better(),
        );
        r.metrics.push(
            Metric::new("agents8_creates_per_s", agents.creates_per_s, "ops/s")
                .higher_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("agents8_create_latency_p99_ms", agents.summary.p99_ms, "ms")
                .lower_is_better(),
        );
        r.metrics.push(Metric::new(
            "agents8_vs_seed_x",
            agents.creates_per_s / SEED_AGENTS_PER_S,
            "x",
        ));
        for (name, c) in [
            ("single_client", &one),
            ("single_client_no_poll", &sleeping),
        ] {
            if c.errors > 0 {
                r.findings.push(format!(
                    "{name}: {} of {} creates failed",
                    c.errors, c.count
                ));
            }
            r.findings.push(format!(
                "{name}: {} creates on a daemon of its own, p50 {:.0} µs, p99 {:.0} µs; {}",
                c.count,
                c.p50_us,
                c.p99_us,
                c.path_note()
            ));
        }
        if agents.summary.errors > 0 {
            r.findings.push(format!(
                "agents8: {} of {} creates failed",
                agents.summary.errors, agents.summary.count
            ));
        }

        let mut targets = Table::new(
            "Issue targets (measured, not asserted; closed loop, latency from each call's start)",
            &["measure", "measured", "target", "status", "seed daemon"],
        );
        targets.push_row([
            "1 client (default settings), create p50".to_string(),
            format!("{one_p50_us:.0} µs"),
            format!("≤ {TARGET_P50_US:.0} µs"),
            met(one_p50_us <= TARGET_P50_US).to_string(),
            "2.41 ms per create".to_string(),
        ]);
        targets.push_row([
            "1 client with busy_poll off, create p50 (for comparison)".to_string(),
            format!("{:.0} µs", sleeping.p50_us),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
        ]);
        targets.push_row([
            "floor: blocking Unix-socket round trip to an echo process, p50".to_string(),
            format!("{floor_us:.0} µs"),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
        ]);
        targets.push_row([
            format!("{AGENTS} agents, aggregate creates"),
            format!("{:.0} /s", agents.creates_per_s),
            format!("≥ {TARGET_AGENTS_PER_S:.0} /s"),
            met(agents.creates_per_s >= TARGET_AGENTS_PER_S).to_string(),
            format!("~{SEED_AGENTS_PER_S:.0} /s"),
        ]);
        r.tables.insert(0, targets);

        let mut answers = Table::new(
            format!(
                "Max sustainable rate under p99 ≤ {} ms (open loop, pool {POOL})",
                s.p99_ms
            ),
            &["op", "max ops/s", "first trip /s", "confirmed", "steps"],
        );
        for (op, run) in [("create", &create), ("mix", &mix)] {
            let (rate, trip, confirmed) = match &run.report.answer {
                Answer::Found {
                    rate,
                    confirmed,
                    first_trip,
                    ..
                } => (
                    rate.to_string(),
                    first_trip
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    if *confirmed { "yes" } else { "no" },
                ),
                Answer::NonePassed { .. } => ("none".into(), "-".into(), "-"),
            };
            answers.push_row([
                op.to_string(),
                rate,
                trip,
                confirmed.to_string(),
                run.report.rows.len().to_string(),
            ]);
        }
        r.tables.insert(0, answers);

        // The mix per action, at the confirmation step (the answer's rate).
        if let Some(row) = mix
            .report
            .rows
            .iter()
            .find(|row| row.phase == Phase::Confirm)
        {
            let mut t = Table::new(
                format!(
                    "mix: per action at the answer ({}/s, confirmation step {})",
                    row.target_per_s, row.verdict.status
                ),
                &["action", "ops/s", "p50 ms", "p99 ms", "max ms", "errors"],
            );
            for (name, a) in &row.actions {
                t.push_row([
                    name.clone(),
                    format!("{:.0}", a.rate_per_s),
                    format!("{:.2}", a.p50_ms),
                    format!("{:.2}", a.p99_ms),
                    format!("{:.2}", a.max_ms),
                    a.errors.to_string(),
                ]);
            }
            r.tables.push(t);
        }

        for (op, run) in [("create", &create), ("mix", &mix)] {
            if let Some(f) = got_slower(op, run) {
                r.findings.push(f);
            }
            let inconclusive = run
                .report
                .rows
                .iter()
                .filter(|row| row.verdict.status == StepStatus::Inconclusive)
                .count();
            if inconclusive > 0 {
                r.findings.push(format!(
                    "{op}: {inconclusive} step(s) INCONCLUSIVE (the generator fell short of the target rate)"
                ));
            }
            if let Ok(issues) = &run.issues_after {
                r.metrics.push(Metric::new(
                    format!("{op}_issues_after"),
                    *issues as f64,
                    "",
                ));
            }
        }
        let busy_after = host_busy_pct(BUSY_WINDOW);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        r.config.insert("host_cores".into(), cores.into());
        let mut busy_seen = Vec::new();
        for (when, busy) in [("before", busy_before), ("after", busy_after)] {
            let Some(busy) = busy else { continue };
            r.metrics
                .push(Metric::new(format!("host_busy_{when}_pct"), busy, "%"));
            busy_seen.push((when, busy));
        }
        if busy_seen.iter().any(|(_, b)| *b > BUSY_FINDING_PCT) {
            r.findings.push(format!(
                "the host's CPUs were busy with other work ({}; {cores} cores): the daemon and the generator shared the CPU with it, so the rates here are lower, and the p99s higher, than on an idle machine",
                busy_seen
                    .iter()
                    .map(|(when, b)| format!(
                        "{b:.0}% in the {} s {when} the run",
                        BUSY_WINDOW.as_secs_f64()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        r.findings.push(format!(
            "1-client create p50 {one_p50_us:.0} µs: {} the ≤ {TARGET_P50_US:.0} µs target (seed daemon: 2.41 ms per create)",
            met(one_p50_us <= TARGET_P50_US)
        ));
        r.findings.push(format!(
            "{AGENTS} agents: {:.0} creates/s aggregate = {:.0}× the seed daemon's ~{SEED_AGENTS_PER_S:.0}/s; {} the ≥ {TARGET_AGENTS_PER_S:.0}/s target",
            agents.creates_per_s,
            agents.creates_per_s / SEED_AGENTS_PER_S,
            met(agents.creates_per_s >= TARGET_AGENTS_PER_S)
        ));

        let rate = |run: &OpRun| {
            run.report
                .rate()
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "none".into())
        };
        r.headline = format!(
            "max under p99 ≤ {} ms: create {} ops/s, mix {} ops/s; 1-client create p50 {one_p50_us:.0} µs (target ≤ {TARGET_P50_US:.0}); {AGENTS} agents {:.0} creates/s (target ≥ {TARGET_AGENTS_PER_S:.0}, seed ~{SEED_AGENTS_PER_S:.0})",
            s.p99_ms,
            rate(&create),
            rate(&mix),
            agents.creates_per_s
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
