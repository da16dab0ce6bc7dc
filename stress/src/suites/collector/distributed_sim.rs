//! Suite `distributed-sim`: the max-RPS finder spread over three `stress worker` processes
//! through the trial's own nats-server, against a `sim:` of known capacity that none of
//! them reaches alone.
//!
//! The system is `sim:servers=6,service_us=1000` (6,000 ops/s); each worker simulates its
//! `servers/3` share (the one-system rule: the answer is the system's capacity, not three
//! times it) and is capped at `--max-rate 2600`. Drive: (1) the finder over the three
//! workers with raw latency logs on, so every step's merged histogram can be compared with
//! the histogram of all samples recorded into one; (2) a second run whose worker `w2` is
//! killed (`kill -9`) in the middle of a step's hold; (3) one in-process generator at the
//! per-worker rate of a ramp step, side by side, for issue lateness.
//!
//! Judge ([`judge`], pure): FAIL unless the answer lies within 90–102% of the capacity,
//! every merge is exact, the interval log was written, the step with the killed worker is
//! INCONCLUSIVE naming it (never PASS), the worker is dropped and the next step runs on the
//! other two. INCONCLUSIVE when the answer was not confirmed, a step's coordination
//! (setup and merge) took over 100 ms, the workers issued later than the single generator
//! (p99), or the kill landed after the step's hold (then the kill check did not run).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use collector::finder::FinderConfig;
use collector::generator::{GeneratorConfig, OpenLoop};
use collector::schedule::Pacing;
use collector::shape::StepTiming;
use collector::sim::SimTarget;
use collector::slo::{Slo, StepStatus};
use collector::{Metric, SuiteResult, Table, Verdict};
use distributed::coordinator::{Coordinator, CoordinatorConfig, DistStep, MIN_LEAD};
use distributed::judge::check_merge_exact;
use distributed::worker::unix_now_ns;
use hub_leaf::nats::NatsServer;

use crate::suites::{Plan, Profile, RunContext, Suite};
use proc_guard::Guarded;

use crate::daemon_harness::spawn_child;
use crate::dist::{self, DistReport};
use crate::maxrps::{finder_expected_s, steps_text, to_result};

/// The suite.
pub struct DistributedSim;

const SERVERS: u64 = 6;
const SERVICE_US: u64 = 1_000;
const WORKERS: usize = 3;
/// Each worker's cap: below the capacity alone (and two of them together).
const MAX_RATE: u64 = 2_600;
/// The answer must lie within these shares of the true capacity.
const LOW: f64 = 0.90;
const HIGH: f64 = 1.02;
/// A step's coordination (setup + merge) above this is a doubt.
const OVERHEAD_LIMIT_MS: f64 = 100.0;
/// Workers' issue lateness p99 may exceed the single generator's by this factor and margin
/// before it is a doubt (p99 of a few thousand timer wakeups on 2 shared cores moves by
/// tens of µs run to run).
const LATENESS_FACTOR: f64 = 1.5;
const LATENESS_MARGIN_US: u64 = 200;
/// The worker killed in the second run.
const KILLED: &str = "w2";
/// The per-operation timeout of every worker (bounds the wait for a killed one).
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pacing of the workers and of the single generator they are compared with.
const PACING: Pacing = Pacing::TimerOnly;

struct Settings {
    steps: Vec<u64>,
    timing: StepTiming,
    p99_ms: f64,
    precision_pct: f64,
    /// The ramp step whose per-worker rate the single generator runs at.
    lateness_step: u64,
    /// The two steps of the kill run.
    kill_rate: u64,
    kill_timing: StepTiming,
}

fn settings(profile: Profile) -> Settings {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 0);
    match profile {
        Profile::Smoke => Settings {
            steps: vec![3000, 7000],
            timing: t(250, 1000),
            p99_ms: 10.0,
            precision_pct: 5.0,
            lateness_step: 3000,
            kill_rate: 3000,
            kill_timing: t(250, 1000),
        },
        Profile::Quick => Settings {
            steps: vec![2000, 4000, 7000],
            timing: t(1000, 3000),
            p99_ms: 50.0,
            precision_pct: 5.0,
            lateness_step: 4000,
            kill_rate: 3000,
            kill_timing: t(500, 2000),
        },
        Profile::Full => Settings {
            steps: vec![1000, 2000, 4000, 7000],
            timing: t(2000, 10_000),
            p99_ms: 50.0,
            precision_pct: 2.0,
            lateness_step: 4000,
            kill_rate: 3000,
            kill_timing: t(1000, 4000),
        },
    }
}

impl Suite for DistributedSim {
    fn name(&self) -> &'static str {
        "distributed-sim"
    }

    fn description(&self) -> &'static str {
        "max-RPS finder over 3 stress worker processes via NATS against sim:servers=6 (6,000 ops/s, split as one system): answer within 90-102%, merge exact, a killed worker INCONCLUSIVE"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let kill_s = 2.0 * (s.kill_timing.warmup + s.kill_timing.hold).as_secs_f64()
            + OP_TIMEOUT.as_secs_f64()
            + 5.0;
        let single_s = (s.timing.warmup + s.timing.hold).as_secs_f64();
        Plan {
            scale: format!(
                "{WORKERS} workers ≤ {MAX_RATE}/s · steps {} · hold {} s · p99 ≤ {} ms · ±{}% · kill {KILLED} mid-step",
                steps_text(&s.steps),
                s.timing.hold.as_secs_f64(),
                s.p99_ms,
                s.precision_pct
            ),
            expected_s: (finder_expected_s(&s.steps, s.timing) + kill_s + single_s + 10.0).ceil()
                as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let capacity = SimTarget::new(SERVERS, SERVICE_US, None)?.capacity_per_s();
        let cfg = FinderConfig {
            steps: s.steps.clone(),
            timing: s.timing,
            precision_pct: s.precision_pct,
            max_refine_steps: 8,
            slo: Slo {
                p99_ms: Some(s.p99_ms),
                ..Slo::default()
            },
        };
        let rt = crate::harness::runtime()?;
        let nats = rt
            .block_on(NatsServer::start(&ctx.work_dir.join("nats")))
            .context("starting the trial's nats-server")?;
        let url = nats.url().to_string();
        let hlog = ctx.work_dir.join("distributed.hlog");

        // (1) The finder over three workers.
        let mut workers = spawn_workers(&ctx.work_dir, &url, "find")?;
        let found = rt.block_on(async {
            let coord = dist::start(&coordinator(&url, "find", true)).await?;
            dist::find(coord, &cfg, true, Some(&hlog)).await
        })?;
        println!("{}", found.report.answer_line());
        for w in &mut workers {
            let _ = w.wait_or_kill(Duration::from_secs(10));
        }

        // (2) A run with one worker killed mid-step.
        let workers = spawn_workers(&ctx.work_dir, &url, "kill")?;
        let kill = rt.block_on(kill_run(&url, workers, &s))?;

        // (3) One generator in this process at the per-worker rate of a ramp step.
        let single_rate = s.lateness_step / WORKERS as u64;
        let single = rt.block_on(single_lateness(single_rate, s.timing))?;
        drop(nats);
        rt.shutdown_timeout(Duration::from_secs(1));

        let observed = observe(&found, &kill, &s, capacity, single, &hlog);
        let mut r = to_result(
            self.name(),
            &ctx.profile.to_string(),
            &self.plan(ctx.profile).scale,
            ctx.seed,
            &cfg,
            &found.report,
        );
        dist::add_to_result(&mut r, &found);
        report(&mut r, &observed, &kill);
        r.verdict = judge(&observed);
        Ok(r)
    }
}

fn coordinator(url: &str, group: &str, raw_log: bool) -> CoordinatorConfig {
    let settings = dist::DistSettings {
        url: url.to_string(),
        workers: WORKERS,
        group: group.to_string(),
        join_wait: Duration::from_secs(30),
    };
    let generator = GeneratorConfig {
        op_timeout: OP_TIMEOUT,
        pacing: PACING,
        ..GeneratorConfig::default()
    };
    let spec = format!("sim:servers={SERVERS},service_us={SERVICE_US}");
    settings.coordinator(
        &spec,
        targets::TargetOptions::default(),
        generator,
        raw_log,
        raw_log,
    )
}

/// Three `stress worker` processes of this binary joining `group`, each run once, killed
/// with the suite.
fn spawn_workers(dir: &Path, url: &str, group: &str) -> Result<Vec<Guarded>> {
    let exe = std::env::current_exe().context("finding the stress binary")?;
    (0..WORKERS)
        .map(|i| {
            let name = format!("w{i}");
            let mut cmd = Command::new(&exe);
            cmd.args(["worker", "--nats", url, "--name", &name, "--group", group])
                .args(["--max-rate", &MAX_RATE.to_string()])
                .args(["--runs", "1", "--idle-timeout", "60s"]);
            spawn_child(
                cmd,
                &format!("worker {name}"),
                &dir.join(format!("worker-{group}-{name}.log")),
            )
        })
        .collect()
}

/// What the kill run saw.
#[derive(Debug, Clone)]
struct KillRun {
    /// The step during which the worker was killed, and the one after.
    steps: Vec<StepSeen>,
    /// When the kill happened, coordinator clock, ns since the epoch (0: never).
    killed_unix_ns: u64,
    /// Why the coordinator dropped the killed worker (`None`: it did not).
    dropped: Option<String>,
}

/// One step as the judge needs it.
#[derive(Debug, Clone)]
struct StepSeen {
    status: StepStatus,
    reasons: Vec<String>,
    /// Workers given a share.
    workers: Vec<String>,
    /// The end of the step's hold, coordinator clock, ns since the epoch.
    hold_end_unix_ns: u64,
}

impl StepSeen {
    fn of(step: &DistStep, timing: StepTiming) -> StepSeen {
        StepSeen {
            status: step.judged.verdict.status,
            reasons: step.judged.verdict.reasons.clone(),
            workers: step.judged.workers.iter().map(|w| w.name.clone()).collect(),
            hold_end_unix_ns: step.start_unix_ns + (timing.warmup + timing.hold).as_nanos() as u64,
        }
    }
}

/// Two steps at `s.kill_rate`; `KILLED` is killed halfway through the first one's hold.
async fn kill_run(url: &str, workers: Vec<Guarded>, s: &Settings) -> Result<KillRun> {
    let mut coord = Coordinator::start(&coordinator(url, "kill", false), |l| println!("{l}"))
        .await
        .context("starting the kill run")?;
    let slo = Slo::default();
    let timing = s.kill_timing;
    let killed_at = Arc::new(Mutex::new(0u64));
    let mut victims: Vec<Guarded> = workers;
    let victim = victims.pop().context("three workers")?;
    // The start lead is MIN_LEAD on loopback: the kill lands halfway through the hold.
    let when = MIN_LEAD + timing.warmup + timing.hold / 2;
    let stamp = killed_at.clone();
    let killer = tokio::spawn(async move {
        let mut victim = victim;
        tokio::time::sleep(when).await;
        victim.kill();
        if let Ok(mut t) = stamp.lock() {
            *t = unix_now_ns();
        }
    });
    let first = coord.step(s.kill_rate, timing, &slo).await;
    let _ = killer.await;
    let second = match &first {
        Ok(_) => Some(coord.step(s.kill_rate, timing, &slo).await),
        Err(_) => None,
    };
    let dropped = coord
        .workers()
        .iter()
        .find(|w| w.name == KILLED)
        .and_then(|w| w.dropped.clone());
    coord.end("the kill run is done").await;
    let mut steps = vec![StepSeen::of(&first?, timing)];
    if let Some(second) = second {
        steps.push(StepSeen::of(&second?, timing));
    }
    for (i, st) in steps.iter().enumerate() {
        println!(
            "kill run step {i}: {} — {}",
            st.status,
            st.reasons.join("; ")
        );
    }
    drop(victims);
    let killed_unix_ns = killed_at.lock().map(|t| *t).unwrap_or(0);
    Ok(KillRun {
        steps,
        killed_unix_ns,
        dropped,
    })
}

/// Issue lateness p99 (µs) of one in-process generator at `rate` against the per-worker
/// share of the system.
async fn single_lateness(rate: u64, timing: StepTiming) -> Result<u64> {
    let target = Arc::new(SimTarget::new(SERVERS / WORKERS as u64, SERVICE_US, None)?);
    let mut gen = OpenLoop::new(
        target,
        GeneratorConfig {
            op_timeout: OP_TIMEOUT,
            pacing: PACING,
            ..GeneratorConfig::default()
        },
    )?;
    let m = gen.step(rate, timing).await?;
    let p99 = m.issue_lateness_us.value_at_quantile(0.99);
    println!("single generator at {rate}/s: issue lateness p99 {p99} µs");
    Ok(p99)
}

/// Everything the judge looks at.
#[derive(Debug, Clone)]
struct Observed {
    capacity: f64,
    answer: Option<u64>,
    /// The finder's own doubts (an unconfirmed answer).
    finder_doubts: Vec<String>,
    /// Per step: its number and the merge check (`Ok(actions checked)`); steps with a
    /// gone worker are left out (their merge is partial by design).
    merges: Vec<(u32, Result<Vec<String>, String>)>,
    /// Per step: setup and merge, ms.
    overhead_ms: Vec<(u32, f64, f64)>,
    /// Intervals in the interval log (merged ones).
    hlog_intervals: usize,
    /// Workers' worst issue lateness p99 at the lateness step, and the single generator's.
    lateness_us: Option<(u64, u64)>,
    kill: KillRun,
}

fn observe(
    found: &DistReport,
    kill: &KillRun,
    s: &Settings,
    capacity: f64,
    single_p99: u64,
    hlog: &Path,
) -> Observed {
    let merges = found
        .steps
        .iter()
        .filter(|st| st.reports.iter().all(Option::is_some))
        .map(|st| (st.step, check_merge_exact(&st.judged.measured.data)))
        .collect();
    let workers_p99 = found
        .steps
        .iter()
        .find(|st| st.rate == s.lateness_step)
        .and_then(|st| st.judged.workers.iter().map(|w| w.issue_late_p99_us).max());
    let doubts = match &found.report.answer {
        collector::finder::Answer::Found {
            confirmed: false,
            confirm_reasons,
            ..
        } => confirm_reasons.clone(),
        _ => Vec::new(),
    };
    Observed {
        capacity,
        answer: found.report.rate(),
        finder_doubts: doubts,
        merges,
        overhead_ms: found
            .steps
            .iter()
            .map(|st| (st.step, st.setup_ms, st.merge_ms))
            .collect(),
        hlog_intervals: merged_intervals(hlog),
        lateness_us: workers_p99.map(|w| (w, single_p99)),
        kill: kill.clone(),
    }
}

/// Merged interval lines of the log at `path`: tagged with an action alone, not a
/// worker's `wI/` nor `.service` (0 if unreadable).
fn merged_intervals(path: &Path) -> usize {
    let merged = |line: &str| {
        line.split(',')
            .next()
            .and_then(|t| t.strip_prefix("Tag="))
            .is_some_and(|tag| !tag.contains('/') && !tag.ends_with(".service"))
    };
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| merged(l)).count())
        .unwrap_or(0)
}

/// The verdict (pure; see the module doc).
fn judge(o: &Observed) -> Verdict {
    let mut failures = Vec::new();
    let mut doubts = o.finder_doubts.clone();
    // Workers that issued late are the generator being the limit: a missing or low answer
    // then says nothing about the finder (as a local run's INCONCLUSIVE), so it is a doubt.
    let late = o.lateness_us.and_then(|(w, single)| {
        let limit = (single as f64 * LATENESS_FACTOR) as u64 + LATENESS_MARGIN_US;
        (w > limit).then(|| format!(
            "workers issued later than one generator at the same per-worker rate: p99 {w} µs against {single} µs (limit {limit} µs)"
        ))
    });
    let answer_problem = match o.answer {
        Some(rate) => {
            let share = rate as f64 / o.capacity;
            (!(LOW..=HIGH).contains(&share)).then(|| format!(
                "answer {rate}/s is {:.1}% of the system's capacity {:.0}/s: expected {:.0}% to {:.0}%",
                share * 100.0,
                o.capacity,
                LOW * 100.0,
                HIGH * 100.0
            ))
        }
        None => Some("no step passed, so there is no answer to check".to_string()),
    };
    match (answer_problem, late.is_some()) {
        (Some(p), true) => doubts.push(format!("{p}; the workers were the limit (see below)")),
        (Some(p), false) => failures.push(p),
        (None, _) => {}
    }
    if o.merges.is_empty() {
        failures.push("no step had every worker's report: no merge was checked".into());
    }
    for (step, m) in &o.merges {
        if let Err(e) = m {
            failures.push(format!("step {step}: the merge is not exact: {e}"));
        }
    }
    if o.hlog_intervals == 0 {
        failures.push("the interval log holds no merged interval".into());
    }
    for &(step, setup, merge) in &o.overhead_ms {
        if setup + merge > OVERHEAD_LIMIT_MS {
            doubts.push(format!(
                "step {step}: coordination took {setup:.1} ms setup + {merge:.1} ms merge, over {OVERHEAD_LIMIT_MS} ms"
            ));
        }
    }
    if o.lateness_us.is_none() {
        doubts.push("the lateness step did not run: lateness not compared".into());
    }
    doubts.extend(late);
    judge_kill(&o.kill, &mut failures, &mut doubts);
    Verdict::from_checks(failures, doubts)
}

fn judge_kill(k: &KillRun, failures: &mut Vec<String>, doubts: &mut Vec<String>) {
    let Some(first) = k.steps.first() else {
        failures.push("the kill run ran no step".into());
        return;
    };
    if k.killed_unix_ns == 0 || k.killed_unix_ns >= first.hold_end_unix_ns {
        doubts.push(format!(
            "worker {KILLED} was not killed within the step's hold: the kill check did not run"
        ));
        return;
    }
    if first.status == StepStatus::Pass {
        failures.push(format!(
            "the step with worker {KILLED} killed mid-step PASSED: expected INCONCLUSIVE"
        ));
    } else if first.status != StepStatus::Inconclusive {
        failures.push(format!(
            "the step with worker {KILLED} killed mid-step was {}: expected INCONCLUSIVE",
            first.status
        ));
    }
    if !first.reasons.iter().any(|r| r.contains(KILLED)) {
        failures.push(format!(
            "the step with worker {KILLED} killed does not name it: {}",
            first.reasons.join("; ")
        ));
    }
    if k.dropped.is_none() {
        failures.push(format!("worker {KILLED} was not dropped from the run"));
    }
    match k.steps.get(1) {
        None => failures.push("no step ran after the kill".into()),
        Some(next) if next.workers.iter().any(|w| w == KILLED) => failures.push(format!(
            "the step after the kill still gave worker {KILLED} a share"
        )),
        Some(next) if next.workers.len() != WORKERS - 1 => failures.push(format!(
            "the step after the kill ran on {} workers: expected {}",
            next.workers.len(),
            WORKERS - 1
        )),
        Some(_) => {}
    }
}

fn report(r: &mut SuiteResult, o: &Observed, kill: &KillRun) {
    r.config
        .insert("true_capacity_per_s".into(), o.capacity.into());
    r.config.insert(
        "system".into(),
        format!("sim:servers={SERVERS},service_us={SERVICE_US}, each of {WORKERS} workers simulating servers={} (one system)", SERVERS / WORKERS as u64).into(),
    );
    r.config.insert("worker_max_rate".into(), MAX_RATE.into());
    if let Some(rate) = o.answer {
        r.metrics.push(
            Metric::new(
                "answer_pct_of_capacity",
                rate as f64 / o.capacity * 100.0,
                "%",
            )
            .headline(),
        );
    }
    let exact = o.merges.iter().filter(|(_, m)| m.is_ok()).count();
    r.metrics
        .push(Metric::new("merges_exact", exact as f64, ""));
    r.metrics
        .push(Metric::new("merges_checked", o.merges.len() as f64, ""));
    r.metrics.push(Metric::new(
        "hlog_merged_intervals",
        o.hlog_intervals as f64,
        "",
    ));
    if let Some((w, single)) = o.lateness_us {
        r.metrics
            .push(Metric::new("worker_issue_late_p99_us", w as f64, "µs").lower_is_better());
        r.metrics
            .push(Metric::new("single_issue_late_p99_us", single as f64, "µs"));
    }
    let mut t = Table::new(
        format!("Worker {KILLED} killed (kill -9) halfway through the first step's hold"),
        &["step", "workers", "status", "reasons"],
    );
    for (i, st) in kill.steps.iter().enumerate() {
        t.push_row([
            i.to_string(),
            st.workers.join(", "),
            st.status.to_string(),
            st.reasons.join("; "),
        ]);
    }
    r.tables.push(t);
    let mut m = Table::new(
        "Merge check: merged histogram against all raw samples in one",
        &["step", "result"],
    );
    for (step, res) in &o.merges {
        m.push_row([
            step.to_string(),
            match res {
                Ok(actions) => format!("exact ({})", actions.join(", ")),
                Err(e) => format!("NOT EXACT: {e}"),
            },
        ]);
    }
    r.tables.push(m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::Status;

    fn seen(status: StepStatus, reasons: &[&str], workers: &[&str]) -> StepSeen {
        StepSeen {
            status,
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
            workers: workers.iter().map(|s| s.to_string()).collect(),
            hold_end_unix_ns: 2_000,
        }
    }

    fn good() -> Observed {
        Observed {
            capacity: 6000.0,
            answer: Some(5860),
            finder_doubts: Vec::new(),
            merges: vec![(0, Ok(vec!["op: 6000 samples".into()]))],
            overhead_ms: vec![(0, 41.0, 3.0)],
            hlog_intervals: 12,
            lateness_us: Some((90, 80)),
            kill: KillRun {
                steps: vec![
                    seen(
                        StepStatus::Inconclusive,
                        &["worker w2 gone mid-step: no reply"],
                        &["w0", "w1", "w2"],
                    ),
                    seen(StepStatus::Pass, &[], &["w0", "w1"]),
                ],
                killed_unix_ns: 1_000,
                dropped: Some("step 0: no reply".into()),
            },
        }
    }

    fn status(o: &Observed) -> (Status, String) {
        let v = judge(o);
        (v.status, v.reasons.join(" | "))
    }

    #[test]
    fn a_good_run_passes() {
        assert_eq!(status(&good()).0, Status::Pass, "{}", status(&good()).1);
    }

    #[test]
    fn an_answer_off_the_capacity_fails() {
        for answer in [Some(5000), Some(6300), None] {
            let o = Observed { answer, ..good() };
            assert_eq!(status(&o).0, Status::Fail, "{answer:?}");
        }
    }

    #[test]
    fn no_answer_from_late_workers_is_inconclusive_but_an_inexact_merge_still_fails() {
        let late = Observed {
            answer: None,
            lateness_us: Some((6103, 2034)),
            ..good()
        };
        let (st, why) = status(&late);
        assert_eq!(st, Status::Inconclusive, "{why}");
        assert!(
            why.contains("no step passed") && why.contains("issued later"),
            "{why}"
        );
        let mut broken = late.clone();
        broken.merges = vec![(0, Err("count 5999 != 6000".into()))];
        assert_eq!(status(&broken).0, Status::Fail);
    }

    #[test]
    fn an_inexact_merge_fails() {
        let mut o = good();
        o.merges
            .push((3, Err("merged p99 = 1200 µs, all samples = 1100 µs".into())));
        let (s, why) = status(&o);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("step 3") && why.contains("not exact"), "{why}");
        let o = Observed {
            merges: Vec::new(),
            ..good()
        };
        assert_eq!(status(&o).0, Status::Fail);
        let o = Observed {
            hlog_intervals: 0,
            ..good()
        };
        assert_eq!(status(&o).0, Status::Fail);
    }

    #[test]
    fn a_killed_worker_step_that_passed_fails() {
        let mut o = good();
        o.kill.steps[0] = seen(StepStatus::Pass, &[], &["w0", "w1", "w2"]);
        let (s, why) = status(&o);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("PASSED"), "{why}");
        // A verdict that does not name the worker, a worker not dropped, a next step that
        // still counts on it: each FAILs.
        let mut o = good();
        o.kill.steps[0].reasons = vec!["a worker is gone".into()];
        assert_eq!(status(&o).0, Status::Fail);
        let mut o = good();
        o.kill.dropped = None;
        assert_eq!(status(&o).0, Status::Fail);
        let mut o = good();
        o.kill.steps[1].workers.push("w2".into());
        assert_eq!(status(&o).0, Status::Fail);
        let mut o = good();
        o.kill.steps.truncate(1);
        assert_eq!(status(&o).0, Status::Fail);
    }

    #[test]
    fn a_kill_after_the_hold_is_a_doubt_not_a_pass_or_fail() {
        let mut o = good();
        o.kill.killed_unix_ns = 5_000;
        o.kill.steps[0] = seen(StepStatus::Pass, &[], &["w0", "w1", "w2"]);
        assert_eq!(status(&o).0, Status::Inconclusive);
    }

    #[test]
    fn slow_coordination_and_late_workers_are_doubts() {
        let o = Observed {
            overhead_ms: vec![(2, 90.0, 20.0)],
            ..good()
        };
        assert_eq!(status(&o).0, Status::Inconclusive);
        let o = Observed {
            lateness_us: Some((900, 80)),
            ..good()
        };
        let (s, why) = status(&o);
        assert_eq!(s, Status::Inconclusive);
        assert!(why.contains("900 µs"), "{why}");
        let o = Observed {
            finder_doubts: vec!["the confirming hold tripped".into()],
            ..good()
        };
        assert_eq!(status(&o).0, Status::Inconclusive);
    }
}
