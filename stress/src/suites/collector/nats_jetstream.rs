//! Suite `nats-jetstream`: the max-RPS finder against the trial's own `nats-server -js` (a
//! server no one here wrote), with seed 001's messages workload: each operation publishes a
//! message on a file-backed stream, awaits its PubAck (E1 = publish→ack, the `ack` mark)
//! and awaits its delivery to a durable pull consumer that acks it (E2 = publish→delivery,
//! the operation's own latency, action `deliver`). The SLO is on E2 p99 and on the growth
//! of the consumer's pending count over each hold (the backlog signal of seed 001). Then the
//! finder against core NATS request-reply (`nats://`), answered by
//! [`targets::serve_nats`] over `noop` in this process.
//!
//! Drive → judge → report. [`judge`] is a pure function of [`Observations`]: FAIL when
//! either finder has no answer, when a message stored in the stream was never delivered
//! (lost) after a bounded drain, when a message was delivered twice, or when a step *below*
//! the knee was INCONCLUSIVE (the generator, not the server, was the limit there);
//! INCONCLUSIVE when no `nats-server` can be found. Deliveries whose operation had already
//! timed out are counted (`unclaimed`), not lost.
//!
//! The report: the knee, E1 and E2 p50/p99 per step, the consumer-pending series sampled
//! every [`SAMPLE_EVERY`] over the whole run with every step's end marked, and the
//! request-reply answer. `NATS_URL` is ignored: the stream and consumer are created fresh
//! on a server of the trial's own, so nothing else publishes into them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use collector::finder::{find, FinderConfig, FinderReport, Phase, StepRow};
use collector::generator::{GeneratorConfig, OpenLoop};
use collector::shape::StepTiming;
use collector::slo::{Slo, StepStatus};
use collector::target::Target;
use collector::{Line, Metric, Series, Status, SuiteResult, Table, Verdict};
use targets::jetstream::{DeliveryStats, JetStreamTarget};
use targets::nats::NatsTarget;
use targets::TargetOptions;

use crate::maxrps::to_result;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct NatsJetStream;

/// The stream the suite creates.
const STREAM: &str = "HERDLAB_NJ";
/// The subject published on.
const SUBJECT: &str = "herdlab.nj.msgs";
/// The durable consumer.
const CONSUMER: &str = "herdlab-nj-reader";
/// The request-reply subject.
const RR_SUBJECT: &str = "herdlab.nj.echo";
/// The payload of every message (a small JSON, as a chat message would be).
const BODY: &str = r#"{"room":"r-{rand}","seq":{seq},"text":"hello from herdlab"}"#;
/// How often the consumer's pending count is sampled for the chart.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The most pending samples kept (a full run at [`SAMPLE_EVERY`] takes far fewer).
const MAX_SAMPLES: usize = 20_000;
/// Longest the suite waits after the finder for the consumer to catch up.
const DRAIN_BOUND: Duration = Duration::from_secs(15);
/// Poll interval of that wait.
const DRAIN_POLL: Duration = Duration::from_millis(50);

struct Settings {
    js_steps: Vec<u64>,
    rr_steps: Vec<u64>,
    timing: StepTiming,
    refine: usize,
    precision_pct: f64,
    deliver_p99_ms: f64,
    rr_p99_ms: f64,
    max_backlog_growth: u64,
}

fn settings(profile: Profile) -> Settings {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 0);
    match profile {
        Profile::Smoke => Settings {
            js_steps: vec![1000, 4000, 16000],
            rr_steps: vec![2000, 8000, 32000],
            timing: t(250, 1000),
            refine: 2,
            precision_pct: 20.0,
            deliver_p99_ms: 20.0,
            rr_p99_ms: 10.0,
            max_backlog_growth: 2000,
        },
        Profile::Quick => Settings {
            js_steps: vec![1000, 2000, 4000, 8000, 16000, 32000],
            rr_steps: vec![2000, 4000, 8000, 16000, 32000, 64000],
            timing: t(1000, 3000),
            refine: 5,
            precision_pct: 5.0,
            deliver_p99_ms: 20.0,
            rr_p99_ms: 10.0,
            max_backlog_growth: 2000,
        },
        Profile::Full => Settings {
            js_steps: vec![1000, 2000, 4000, 8000, 16000, 32000, 64000],
            rr_steps: vec![2000, 4000, 8000, 16000, 32000, 64000, 128000],
            timing: t(2000, 10_000),
            refine: 8,
            precision_pct: 2.0,
            deliver_p99_ms: 20.0,
            rr_p99_ms: 10.0,
            max_backlog_growth: 5000,
        },
    }
}

fn js_config(s: &Settings) -> FinderConfig {
    let mut slo = Slo {
        max_backlog_growth: Some(s.max_backlog_growth),
        ..Slo::default()
    };
    slo.action_p99_ms.insert("deliver".into(), s.deliver_p99_ms);
    FinderConfig {
        steps: s.js_steps.clone(),
        timing: s.timing,
        precision_pct: s.precision_pct,
        max_refine_steps: s.refine,
        slo,
    }
}

fn rr_config(s: &Settings) -> FinderConfig {
    FinderConfig {
        steps: s.rr_steps.clone(),
        timing: s.timing,
        precision_pct: s.precision_pct,
        max_refine_steps: s.refine,
        slo: Slo {
            p99_ms: Some(s.rr_p99_ms),
            ..Slo::default()
        },
    }
}

/// What the drive saw, for [`judge`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Why `nats-server` could not be started, when it could not be found.
    pub nats_missing: Option<String>,
    /// The JetStream finder's answer (ops/s).
    pub js_answer: Option<u64>,
    /// The request-reply finder's answer (ops/s).
    pub rr_answer: Option<u64>,
    /// Every step of both finders: (which, target rate, status).
    pub steps: Vec<(&'static str, u64, StepStatus)>,
    /// Messages stored in the stream during the run.
    pub stored: u64,
    /// What the consumer saw, after the drain.
    pub delivery: DeliveryStats,
    /// Whether the consumer's pending count reached 0 within [`DRAIN_BOUND`].
    pub drained: bool,
}

impl Observations {
    /// Stored messages never delivered.
    pub fn lost(&self) -> u64 {
        self.stored.saturating_sub(self.delivery.first_deliveries)
    }
}

/// The verdict (see the module doc). Pure.
pub fn judge(o: &Observations) -> Verdict {
    if let Some(why) = &o.nats_missing {
        return Verdict::from_checks(Vec::new(), vec![why.clone()]);
    }
    let mut failures = Vec::new();
    let mut doubts = Vec::new();
    for (which, answer) in [("jetstream", o.js_answer), ("request-reply", o.rr_answer)] {
        match answer {
            None => failures.push(format!("{which}: no step passed, so there is no answer")),
            Some(knee) => {
                for (w, rate, status) in &o.steps {
                    if *w == which && *rate < knee && *status == StepStatus::Inconclusive {
                        failures.push(format!(
                            "{which}: step {rate}/s below the knee {knee}/s was INCONCLUSIVE: the generator, not the server, was the limit"
                        ));
                    }
                }
            }
        }
    }
    if o.lost() > 0 {
        failures.push(format!(
            "{} of {} messages stored in the stream were never delivered to the consumer",
            o.lost(),
            o.stored
        ));
    }
    if o.delivery.redeliveries > 0 {
        failures.push(format!(
            "{} messages were delivered more than once",
            o.delivery.redeliveries
        ));
    }
    if !o.drained && o.lost() == 0 {
        doubts.push(format!(
            "the consumer's pending count did not reach 0 within {DRAIN_BOUND:?} after the run"
        ));
    }
    Verdict::from_checks(failures, doubts)
}

impl Suite for NatsJetStream {
    fn name(&self) -> &'static str {
        "nats-jetstream"
    }

    fn description(&self) -> &'static str {
        "max-RPS finder against the trial's own nats-server -js: publish + durable consumer (SLO on publish->delivery p99 and consumer-pending growth), then core request-reply; no message lost or duplicated"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let step_s = (s.timing.warmup + s.timing.hold).as_secs_f64();
        // Ramp up to the first trip (about all steps at worst), the refinements, one
        // confirmation; each step also drains its in-flight operations.
        let js = (s.js_steps.len() + s.refine + 1) as f64;
        let rr = (s.rr_steps.len() + s.refine + 1) as f64;
        Plan {
            scale: format!(
                "jetstream steps {} · request-reply steps {} · hold {} s · deliver p99 ≤ {} ms, backlog growth ≤ {} · rr p99 ≤ {} ms",
                join(&s.js_steps),
                join(&s.rr_steps),
                s.timing.hold.as_secs_f64(),
                s.deliver_p99_ms,
                s.max_backlog_growth,
                s.rr_p99_ms
            ),
            expected_s: ((js + rr) * step_s * 1.15 + 3.0).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let scale = self.plan(ctx.profile).scale;
        let rt = crate::harness::runtime()?;
        let drive = rt.block_on(drive(ctx, &s));
        rt.shutdown_timeout(Duration::from_secs(1));
        let d = match drive? {
            Ok(d) => d,
            Err(missing) => {
                let mut r = SuiteResult::new(self.name(), ctx.profile.to_string(), scale, ctx.seed);
                r.headline = format!("INCONCLUSIVE: {missing}");
                r.verdict = judge(&Observations {
                    nats_missing: Some(missing),
                    ..Observations::default()
                });
                return Ok(r);
            }
        };
        Ok(report(self.name(), ctx, &scale, &s, &d))
    }
}

fn join(v: &[u64]) -> String {
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything the drive measured.
struct Drive {
    js: FinderReport,
    rr: FinderReport,
    /// (seconds since the JetStream finder started, pending).
    pending: Vec<[f64; 2]>,
    /// (seconds since the JetStream finder started, the step that ended then).
    step_ends: Vec<(f64, Phase, u64)>,
    obs: Observations,
    server_version: String,
}

/// Starts the server and runs both finders. `Ok(Err(why))` when no nats-server exists.
async fn drive(ctx: &RunContext, s: &Settings) -> Result<std::result::Result<Drive, String>> {
    let server = match hub_leaf::nats::NatsServer::start(&ctx.work_dir.join("nats")).await {
        Ok(server) => server,
        Err(e @ hub_leaf::nats::NatsError::NotFound { .. }) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e).context("starting the trial's nats-server"),
    };
    let port = server.port();
    let server_version = server_version();
    let js_spec = format!("jetstream://127.0.0.1:{port}/{STREAM}/{SUBJECT}");
    let opts = TargetOptions {
        consumer: Some(CONSUMER.into()),
        body: Some(BODY.into()),
        seed: ctx.seed,
        ..TargetOptions::default()
    };
    let js_target = Arc::new(JetStreamTarget::open(&js_spec, &opts).await?);
    let (js, pending, step_ends) = js_finder(js_target.clone(), &js_config(s)).await?;
    println!("jetstream: {}", js.answer_line());
    let drained = drain(&js_target).await;
    let stored = js_target.stored_since_open().await?;
    let delivery = js_target.delivery_stats();
    drop(js_target);

    let serve = targets::serve_nats::start(
        Arc::new(collector::target::NoopTarget),
        server.url(),
        RR_SUBJECT,
    )
    .await?;
    let rr_spec = format!("nats://127.0.0.1:{port}/{RR_SUBJECT}");
    let rr_target: Arc<dyn Target> = Arc::new(NatsTarget::open(&rr_spec, &opts_rr(ctx)).await?);
    let rr = run_finder(rr_target, &rr_config(s), |_| {}).await?;
    println!("request-reply: {}", rr.answer_line());
    serve.shutdown().await;
    drop(server);

    let mut steps: Vec<(&'static str, u64, StepStatus)> = Vec::new();
    steps.extend(
        js.rows
            .iter()
            .map(|r| ("jetstream", r.target_per_s, r.verdict.status)),
    );
    steps.extend(
        rr.rows
            .iter()
            .map(|r| ("request-reply", r.target_per_s, r.verdict.status)),
    );
    let obs = Observations {
        nats_missing: None,
        js_answer: js.rate(),
        rr_answer: rr.rate(),
        steps,
        stored,
        delivery,
        drained,
    };
    Ok(Ok(Drive {
        js,
        rr,
        pending,
        step_ends,
        obs,
        server_version,
    }))
}

fn opts_rr(ctx: &RunContext) -> TargetOptions {
    TargetOptions {
        body: Some(BODY.into()),
        seed: ctx.seed,
        ..TargetOptions::default()
    }
}

/// The JetStream finder, with the pending count sampled alongside and every step's end
/// time noted.
async fn js_finder(
    target: Arc<JetStreamTarget>,
    cfg: &FinderConfig,
) -> Result<(FinderReport, Vec<[f64; 2]>, Vec<(f64, Phase, u64)>)> {
    let start = Instant::now();
    let samples: Arc<Mutex<Vec<[f64; 2]>>> = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (target, samples) = (target.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            for _ in 0..MAX_SAMPLES {
                tick.tick().await;
                if let (Some(p), Ok(mut v)) = (target.pending(), samples.lock()) {
                    v.push([start.elapsed().as_secs_f64(), p as f64]);
                }
            }
        })
    };
    let mut ends = Vec::new();
    let report = run_finder(target, cfg, |row| {
        ends.push((start.elapsed().as_secs_f64(), row.phase, row.target_per_s))
    })
    .await;
    sampler.abort();
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((report?, samples, ends))
}

/// The finder on the current runtime, printing each step.
async fn run_finder(
    target: Arc<dyn Target>,
    cfg: &FinderConfig,
    mut on_step: impl FnMut(&StepRow),
) -> Result<FinderReport> {
    let mut gen = OpenLoop::new(target, GeneratorConfig::default())?;
    print!("{}", FinderReport::header());
    let report = find(&mut gen, cfg, |row| {
        print!("{}", collector::finder::console_row(row));
        on_step(row);
    })
    .await?;
    Ok(report)
}

/// Waits (at most [`DRAIN_BOUND`]) until the consumer has nothing pending and has seen
/// every stored message; whether it got there.
async fn drain(target: &JetStreamTarget) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
    loop {
        let stored = target.stored_since_open().await.unwrap_or(u64::MAX);
        let caught_up =
            target.pending() == Some(0) && target.delivery_stats().first_deliveries >= stored;
        if caught_up {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

fn server_version() -> String {
    let out = hub_leaf::nats::find_binary().ok().and_then(|bin| {
        std::process::Command::new(bin)
            .arg("--version")
            .output()
            .ok()
    });
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The summary of `action` in `row`, if recorded.
fn action<'a>(row: &'a StepRow, name: &str) -> Option<&'a collector::recorder::ActionSummary> {
    row.actions.iter().find(|(n, _)| n == name).map(|(_, a)| a)
}

fn report(name: &str, ctx: &RunContext, scale: &str, s: &Settings, d: &Drive) -> SuiteResult {
    let cfg = js_config(s);
    let mut r = to_result(name, &ctx.profile.to_string(), scale, ctx.seed, &cfg, &d.js);
    r.metrics.retain(|m| m.name != "max_rps");
    r.verdict = judge(&d.obs);
    r.headline = format!(
        "{}: jetstream knee {} ops/s (publish→delivery p99 ≤ {} ms, backlog growth ≤ {}); request-reply {} ops/s; {} lost, {} duplicated, {} delivered after their operation timed out",
        r.verdict.status,
        d.obs.js_answer.map_or("none".into(), |a| a.to_string()),
        s.deliver_p99_ms,
        s.max_backlog_growth,
        d.obs.rr_answer.map_or("none".into(), |a| a.to_string()),
        d.obs.lost(),
        d.obs.delivery.redeliveries,
        d.obs.delivery.unclaimed,
    );
    r.config
        .insert("nats_server".into(), d.server_version.clone().into());
    r.config.insert("stream".into(), STREAM.into());
    r.config.insert("consumer".into(), CONSUMER.into());
    r.config
        .insert("request_reply_target".into(), d.rr.target.clone().into());
    r.config.insert(
        "request_reply_slo".into(),
        rr_config(s).slo.describe().into(),
    );
    r.config.insert("payload_template".into(), BODY.into());
    r.config.insert(
        "seed_use".into(),
        "the {rand} of every payload is drawn from the seed".into(),
    );
    r.tables.push(e1_e2_table(&d.js));
    r.tables.push(rr_table(&d.rr));
    r.series.push(pending_series(d));
    push_metrics(&mut r, d);
    r
}

fn e1_e2_table(js: &FinderReport) -> Table {
    let mut t = Table::new(
        "JetStream per step: E1 = publish→ack, E2 = publish→delivery (ms, from the intended start)",
        &[
            "phase",
            "target /s",
            "achieved /s",
            "E1 p50",
            "E1 p99",
            "E2 p50",
            "E2 p99",
            "backlog growth",
            "verdict",
        ],
    );
    for row in &js.rows {
        let e1 = action(row, "ack");
        let e2 = action(row, "deliver");
        let ms = |a: Option<&collector::recorder::ActionSummary>, p99: bool| {
            a.map_or("-".into(), |a| {
                format!("{:.2}", if p99 { a.p99_ms } else { a.p50_ms })
            })
        };
        t.push_row([
            row.phase.name().to_string(),
            row.target_per_s.to_string(),
            format!("{:.0}", row.achieved_per_s),
            ms(e1, false),
            ms(e1, true),
            ms(e2, false),
            ms(e2, true),
            row.backlog_growth.map_or("-".into(), |g| g.to_string()),
            row.verdict.status.to_string(),
        ]);
    }
    t
}

fn rr_table(rr: &FinderReport) -> Table {
    let mut t = Table::new(
        "Core NATS request-reply per step (ms, from the intended start)",
        &[
            "phase",
            "target /s",
            "achieved /s",
            "p50",
            "p99",
            "errors",
            "verdict",
            "reasons",
        ],
    );
    for row in &rr.rows {
        t.push_row([
            row.phase.name().to_string(),
            row.target_per_s.to_string(),
            format!("{:.0}", row.achieved_per_s),
            format!("{:.2}", row.total.p50_ms),
            format!("{:.2}", row.total.p99_ms),
            format!("{:.2}%", row.total.error_rate * 100.0),
            row.verdict.status.to_string(),
            row.verdict.reasons.join("; "),
        ]);
    }
    t
}

fn pending_series(d: &Drive) -> Series {
    let top = d.pending.iter().map(|p| p[1]).fold(1.0, f64::max);
    let mut lines = vec![Line {
        name: "consumer pending (num_pending + num_ack_pending)".into(),
        points: d.pending.clone(),
    }];
    // Each step's end as a vertical tick, so the chart reads per step.
    for (at, phase, rate) in &d.step_ends {
        lines.push(Line {
            name: format!("end of {} {rate}/s", phase.name()),
            points: vec![[*at, 0.0], [*at, top]],
        });
    }
    Series {
        id: "consumer-pending".into(),
        title: "Consumer pending over the JetStream finder, each step's end marked".into(),
        x_label: "seconds since the first step".into(),
        y_label: "messages pending".into(),
        lines,
        log_y: false,
    }
}

fn push_metrics(r: &mut SuiteResult, d: &Drive) {
    if let Some(knee) = d.obs.js_answer {
        r.metrics.push(
            Metric::new("jetstream_knee_per_s", knee as f64, "ops/s")
                .higher_is_better()
                .headline(),
        );
        // E1/E2 at the knee: the passing step at the answer's rate.
        let at =
            d.js.rows
                .iter()
                .rev()
                .find(|row| row.target_per_s == knee && row.verdict.status == StepStatus::Pass);
        if let Some(row) = at {
            for (label, name) in [("e1_ack", "ack"), ("e2_deliver", "deliver")] {
                if let Some(a) = action(row, name) {
                    r.metrics.push(
                        Metric::new(format!("{label}_p50_at_knee_ms"), a.p50_ms, "ms")
                            .lower_is_better(),
                    );
                    r.metrics.push(
                        Metric::new(format!("{label}_p99_at_knee_ms"), a.p99_ms, "ms")
                            .lower_is_better(),
                    );
                }
            }
        }
    }
    if let Some(rr) = d.obs.rr_answer {
        r.metrics.push(
            Metric::new("request_reply_max_per_s", rr as f64, "ops/s")
                .higher_is_better()
                .headline(),
        );
    }
    let o = &d.obs;
    for (name, v) in [
        ("messages_stored", o.stored),
        ("messages_lost", o.lost()),
        ("messages_duplicated", o.delivery.redeliveries),
        ("deliveries_after_timeout", o.delivery.unclaimed),
        ("consumer_stream_errors", o.delivery.stream_errors),
    ] {
        r.metrics.push(Metric::new(name, v as f64, ""));
    }
    if r.verdict.status == Status::Pass && d.js.rows.iter().any(|row| row.phase == Phase::Confirm) {
        r.findings
            .push("the JetStream knee was confirmed by a repeat step".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Observations {
        Observations {
            nats_missing: None,
            js_answer: Some(8000),
            rr_answer: Some(30000),
            steps: vec![
                ("jetstream", 4000, StepStatus::Pass),
                ("jetstream", 8000, StepStatus::Pass),
                ("jetstream", 16000, StepStatus::Trip),
                ("request-reply", 30000, StepStatus::Pass),
                ("request-reply", 64000, StepStatus::Inconclusive),
            ],
            stored: 1000,
            delivery: DeliveryStats {
                acked: 990,
                first_deliveries: 1000,
                claimed: 990,
                unclaimed: 10,
                ..DeliveryStats::default()
            },
            drained: true,
        }
    }

    #[test]
    fn a_clean_run_passes_and_inconclusive_above_the_knee_is_fine() {
        let v = judge(&good());
        assert_eq!(v.status, Status::Pass, "{v:?}");
    }

    #[test]
    fn lost_duplicated_or_unanswered_runs_fail() {
        let mut o = good();
        o.delivery.first_deliveries = 997;
        let v = judge(&o);
        assert_eq!(v.status, Status::Fail);
        assert!(v.reasons[0].contains("3 of 1000"), "{v:?}");

        let mut o = good();
        o.delivery.redeliveries = 2;
        let v = judge(&o);
        assert!(
            v.status == Status::Fail
                && v.reasons[0].contains("2 messages were delivered more than once"),
            "{v:?}"
        );

        let mut o = good();
        o.js_answer = None;
        let v = judge(&o);
        assert!(
            v.status == Status::Fail && v.reasons[0].contains("jetstream: no step passed"),
            "{v:?}"
        );

        let mut o = good();
        o.rr_answer = None;
        assert_eq!(judge(&o).status, Status::Fail);
    }

    #[test]
    fn inconclusive_below_the_knee_fails() {
        let mut o = good();
        o.steps[0].2 = StepStatus::Inconclusive;
        let v = judge(&o);
        assert!(
            v.status == Status::Fail && v.reasons[0].contains("step 4000/s below the knee 8000/s"),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_server_or_an_undrained_consumer_is_inconclusive() {
        let o = Observations {
            nats_missing: Some("nats-server not found on PATH: install it".into()),
            ..Observations::default()
        };
        let v = judge(&o);
        assert_eq!(v.status, Status::Inconclusive);
        assert!(v.reasons[0].contains("install"), "{v:?}");
        let mut o = good();
        o.drained = false;
        assert_eq!(judge(&o).status, Status::Inconclusive);
    }

    #[test]
    fn plans_are_honest_sized() {
        let smoke = NatsJetStream.plan(Profile::Smoke).expected_s;
        assert!(smoke <= 25, "smoke runs in CI: {smoke} s");
        assert!(NatsJetStream.plan(Profile::Quick).expected_s <= 240);
    }
}
