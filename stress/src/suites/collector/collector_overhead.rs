//! Suite `collector-overhead`: what the measuring instrument itself costs.
//!
//! 1. Recording cost: nanoseconds per recorded sample with one thread, and with two
//!    threads recording at once (the sharded recorder should not serialise them).
//! 2. Generator accuracy: the open-loop generator against a no-op target at 1k, 10k and
//!    50k ops/s: achieved rate, and the latency it adds by itself (latency from the intended
//!    start of an operation that does nothing). Every issued operation must be recorded
//!    exactly once: a count mismatch is a FAIL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use collector::generator::{GeneratorConfig, OpenLoop};
use collector::recorder::{ActionId, Recorder, Sample};
use collector::resources::{leak_check, series, Sampler};
use collector::shape::StepTiming;
use collector::target::NoopTarget;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};

use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct CollectorOverhead;

const RATES: [u64; 3] = [1_000, 10_000, 50_000];
/// Targets from the issue: at 50k ops/s, achieved ≥ 99% and self-added p99 ≤ 200 µs.
const HELD_PCT: f64 = 99.0;
const SELF_P99_LIMIT_US: f64 = 200.0;

fn settings(profile: Profile) -> (u64, StepTiming) {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 100);
    match profile {
        Profile::Smoke => (200_000, t(200, 500)),
        Profile::Quick => (2_000_000, t(500, 3_000)),
        Profile::Full => (10_000_000, t(1_000, 10_000)),
    }
}

/// ns per sample recording `n` samples on `threads` threads at once.
fn record_cost(n: u64, threads: usize) -> Result<f64> {
    let rec = Arc::new(Recorder::new(&["op"], 16)?);
    let epoch = rec.epoch();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let rec = rec.clone();
            s.spawn(move || {
                for i in 0..n {
                    rec.record(
                        t,
                        epoch,
                        &Sample {
                            action: ActionId(0),
                            latency_us: 100 + (i % 5000),
                            service_us: 50 + (i % 1000),
                            error: None,
                        },
                    );
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let recorded = rec.reset().total().completed();
    anyhow::ensure!(
        recorded == n * threads as u64,
        "recorded {recorded} samples, expected {}",
        n * threads as u64
    );
    Ok(elapsed.as_nanos() as f64 / n as f64)
}

impl Suite for CollectorOverhead {
    fn name(&self) -> &'static str {
        "collector-overhead"
    }

    fn description(&self) -> &'static str {
        "cost of recording a sample (1 and 2 threads) and open-loop generator accuracy at 1k/10k/50k ops/s against a no-op target"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let (n, t) = settings(profile);
        let step = (t.warmup + t.hold + t.cooldown).as_secs_f64();
        Plan {
            scale: format!(
                "{} samples/thread · 3 rates x {} s hold",
                n,
                t.hold.as_secs_f64()
            ),
            expected_s: (RATES.len() as f64 * step + n as f64 * 3.0 * 1e-7).ceil() as u64 + 2,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let (n, timing) = settings(ctx.profile);
        let mut r = SuiteResult::new(
            self.name(),
            ctx.profile.to_string(),
            self.plan(ctx.profile).scale,
            ctx.seed,
        );
        let mut failures = Vec::new();
        let mut doubts = Vec::new();

        let one = record_cost(n, 1)?;
        let two = record_cost(n, 2)?;
        println!("record: {one:.1} ns/sample (1 thread), {two:.1} ns/sample per thread (2 threads at once)");
        r.metrics
            .push(Metric::new("record_1_thread_ns", one, "ns").lower_is_better());
        r.metrics.push(
            Metric::new("record_2_threads_ns", two, "ns")
                .lower_is_better()
                .headline(),
        );

        // Sample this process while the generator runs: the instrument must not grow either.
        let sampler = Sampler::start(vec![0], Duration::from_millis(100), 100_000)?;
        let sampled_from = Instant::now();
        let rt = crate::harness::runtime()?;
        let mut table = Table::new(
            "Open-loop generator against a no-op target (latency = what the generator adds)",
            &[
                "target /s",
                "achieved /s",
                "achieved %",
                "p50 µs",
                "p99 µs",
                "max µs",
                "issue late p99 µs",
                "late",
                "dropped",
                "issued",
                "recorded",
            ],
        );
        let mut p99_line = Vec::new();
        for rate in RATES {
            let m = rt.block_on(async {
                let mut gen = OpenLoop::new(Arc::new(NoopTarget), GeneratorConfig::default())?;
                gen.step(rate, timing).await
            })?;
            let total = m.data.total();
            let s = total.summary(m.window_s);
            let pct = m.achieved_per_s() / rate as f64 * 100.0;
            let (p50, p99, max) = (s.p50_ms * 1e3, s.p99_ms * 1e3, s.max_ms * 1e3);
            let issue_p99 = m.issue_lateness_us.value_at_quantile(0.99) as f64;
            println!("{rate:>6}/s: achieved {pct:.2}% · self-added p50 {p50:.0} µs p99 {p99:.0} µs max {max:.0} µs");
            table.push_row([
                rate.to_string(),
                format!("{:.0}", m.achieved_per_s()),
                format!("{pct:.2}"),
                format!("{p50:.0}"),
                format!("{p99:.0}"),
                format!("{max:.0}"),
                format!("{issue_p99:.0}"),
                total.late.to_string(),
                total.dropped.to_string(),
                m.issued.to_string(),
                total.completed().to_string(),
            ]);
            let k = rate / 1000;
            let top = rate == RATES[RATES.len() - 1];
            let mut achieved =
                Metric::new(format!("gen_{k}k_achieved_pct"), pct, "%").higher_is_better();
            let mut self_p99 =
                Metric::new(format!("gen_{k}k_self_p99_us"), p99, "µs").lower_is_better();
            if top {
                achieved = achieved.headline();
                self_p99 = self_p99.headline();
            }
            r.metrics.push(achieved);
            r.metrics.push(self_p99);
            r.metrics
                .push(Metric::new(format!("gen_{k}k_self_p50_us"), p50, "µs").lower_is_better());
            p99_line.push([rate as f64, p99.max(1.0)]);
            if total.completed() != m.issued || total.error_count() > 0 || !m.drained {
                failures.push(format!(
                    "{rate}/s: {} issued but {} recorded ({} errors, drained={}): every issued operation must be recorded exactly once",
                    m.issued,
                    total.completed(),
                    total.error_count(),
                    m.drained
                ));
            }
            if top && pct < HELD_PCT {
                doubts.push(format!("{rate}/s: achieved {pct:.2}% < {HELD_PCT}%"));
            }
            if top && p99 > SELF_P99_LIMIT_US {
                doubts.push(format!(
                    "{rate}/s: self-added p99={p99:.0}µs > {SELF_P99_LIMIT_US:.0}"
                ));
            }
        }
        drop(rt);
        let warmup_s = timing.warmup.as_secs_f64();
        let samples = sampler.stop();
        let rss_mb = series(&samples, 0, |p| p.rss_bytes as f64 / 1e6);
        let threads = series(&samples, 0, |p| p.threads as f64);
        if let Some(peak) = rss_mb.iter().map(|(_, v)| *v).reduce(f64::max) {
            r.metrics
                .push(Metric::new("generator_peak_rss_mb", peak, "MB").lower_is_better());
        }
        if let Some(peak) = threads.iter().map(|(_, v)| *v).reduce(f64::max) {
            r.metrics
                .push(Metric::new("generator_peak_threads", peak, ""));
        }
        match leak_check(&rss_mb, warmup_s, 100.0, 10, "rss", "MB") {
            Ok(leak) => r.findings.push(format!(
                "RSS of the generator process over {:.0} s: Theil–Sen slope {:+.1} MB/h after {warmup_s} s of warmup, rolling-mean envelope {:.1}–{:.1} MB ({} samples). The load changes rate three times, so this is a trend to watch, not a leak verdict.",
                sampled_from.elapsed().as_secs_f64(),
                leak.slope_per_hour,
                leak.envelope_min,
                leak.envelope_max,
                leak.samples_used
            )),
            Err(e) => r.findings.push(format!("no leak check: {e}")),
        }
        r.series.push(Series {
            id: "rss".into(),
            title: "Generator process RSS while it runs".into(),
            x_label: "time (s)".into(),
            y_label: "RSS (MB)".into(),
            lines: vec![Line {
                name: "stress (this process)".into(),
                points: rss_mb.iter().map(|(t, v)| [*t, *v]).collect(),
            }],
            log_y: false,
        });
        r.tables.push(table);
        r.series.push(Series {
            id: "self-p99".into(),
            title: "Latency the generator adds (p99) against rate".into(),
            x_label: "target rate (ops/s)".into(),
            y_label: "p99 from intended start (µs, log scale)".into(),
            lines: vec![Line {
                name: "no-op target".into(),
                points: p99_line,
            }],
            log_y: true,
        });
        let top = RATES[RATES.len() - 1] / 1000;
        let achieved = r
            .metric(&format!("gen_{top}k_achieved_pct"))
            .map(|m| m.value)
            .unwrap_or(0.0);
        let self_p99 = r
            .metric(&format!("gen_{top}k_self_p99_us"))
            .map(|m| m.value)
            .unwrap_or(0.0);
        r.headline = format!(
            "record {two:.0} ns/sample with 2 threads; at {}k ops/s the generator achieves {achieved:.2}% and adds p99 {self_p99:.0} µs",
            top
        );
        r.config.insert("samples_per_thread".into(), n.into());
        r.config
            .insert("hold_s".into(), timing.hold.as_secs_f64().into());
        r.config.insert(
            "seed_use".into(),
            "none: the schedule is deterministic".into(),
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
