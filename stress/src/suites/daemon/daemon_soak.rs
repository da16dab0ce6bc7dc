//! Suite `daemon-soak`: the daemon under sustained load does not leak memory, threads or
//! file descriptors, and keeps its latency across load changes.
//!
//! The daemon runs as its own OS process. An open-loop create/show/list mix (seeded) drives
//! it through three back-to-back phases at R, 2R, R ops/s (x1000 → x2000 → x1000 in the quick
//! and full profiles) over a pool of daemon connections; every connection is replaced by a
//! fresh one after a fixed number of calls, so accept and close run all along too (an fd or
//! thread leaked per connection shows up as growth). A resource sampler reads the DAEMON
//! process's RSS, threads and fds from `/proc` all along.
//!
//! What it proves:
//! - RSS does not grow after the warmup: Theil–Sen slope ≤ [`RSS_LEAK_MB_PER_H`] MB/h, or a
//!   projected growth over the steady part within [`RSS_NOISE_MB`] MB (the noise floor of
//!   allocator and SQLite page-cache warmup, which a short run cannot tell from a leak);
//! - threads and fds do not grow beyond a small bound across the steady part;
//! - the daemon is alive and answers at the end, and no acknowledged create is missing;
//! - no error other than a client-side timeout (those, drops and a missed rate make the run
//!   INCONCLUSIVE: the machine, not the daemon, may be the limit).
//!
//! It reports per phase: target and achieved rate, p50/p99/max, errors; charts of the
//! daemon's RSS (and threads, fds) over time and of p99 per phase. A one-minute run cannot
//! prove the absence of a slow leak: the full profile (30 minutes) is the real soak.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use collector::generator::{GeneratorConfig, Measured, OpenLoop};
use collector::resources::{leak_check, series, Sampler};
use collector::shape::Phase;
use collector::target::{BoxFuture, Target};
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use rpc_daemon::client::{Client, ClientError};
use rpc_daemon::model::{CreateArgs, ListArgs, Op};

use crate::daemon_harness::daemon_client;
use crate::daemon_target::{create_batch, weighted_index, DaemonTarget, PoolConfig, Workload};
use crate::harness::new_result;
use crate::harness::seed::splitmix64;
use crate::suites::daemon::common::start_daemon;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonSoak;

/// Daemon connections in the pool; operation `seq` uses connection `seq % POOL`.
const POOL: usize = 16;
/// Client-side bound of one call (and of a connect).
const CALL_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Longest an operation waits for its pooled connection.
const LOCK_BOUND: Duration = Duration::from_millis(1_500);
/// The generator's bound of one operation: above lock + connect + call, so the generator
/// never cancels a call in the middle in practice (and if it does, the client is dropped).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Issues created before the phases, for `show` to read.
const SEED_ISSUES: usize = 200;
/// `limit` of the mix's `list`.
const LIST_LIMIT: u32 = 20;
/// The mix: action and weight in percent.
const MIX: [(&str, u64); 3] = [("create", 30), ("show", 50), ("list", 20)];
/// RSS growth per hour above which the daemon leaks: 50 MB/h is 1.2 GB a day, which a
/// long-lived daemon on a developer machine cannot afford, and well above what the full
/// 30-minute run can resolve (its noise floor over 25 steady minutes is 8 MB / 0.42 h ≈
/// 19 MB/h).
const RSS_LEAK_MB_PER_H: f64 = 50.0;
/// Projected RSS growth over the steady part that is still noise: SQLite's page caches (about
/// 2 MB for each of the daemon's 5 connections) and the allocator's arenas fill as the file
/// grows and the load doubles. A short run's slope is extrapolated from seconds, so it only
/// counts as a leak when the growth it projects over the run is above this too.
const RSS_NOISE_MB: f64 = 8.0;
/// Most thread growth across the steady part (medians of its first and last tenth).
const THREAD_GROWTH_BOUND: f64 = 2.0;
/// Most fd growth across the steady part: a few connections may be mid-replacement.
const FD_GROWTH_BOUND: f64 = 4.0;
/// A phase that achieves less than this share of its rate makes the run inconclusive.
const ACHIEVED_MIN: f64 = 0.95;
/// A phase with more than this share of timeouts, pool waits and drops is inconclusive.
const SHORTFALL_MAX: f64 = 0.01;

struct Settings {
    /// R: phases run at R, 2R, R.
    rate: u64,
    /// Length of each phase.
    phase: Duration,
    /// Resource sampling interval.
    sample_every: Duration,
    /// Calls a pooled connection carries before it is replaced by a fresh one (a few
    /// hundred to a few thousand connections in all, so a per-connection fd or thread leak
    /// is far above the growth bounds).
    churn_every: u64,
}

impl Settings {
    /// The phases' rates in words: `R/s -> 2R/s -> R/s`.
    fn rates(&self) -> String {
        format!("{}/s -> {}/s -> {}/s", self.rate, 2 * self.rate, self.rate)
    }
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            rate: 200,
            phase: Duration::from_secs(2),
            sample_every: Duration::from_millis(100),
            churn_every: 20,
        },
        Profile::Quick => Settings {
            rate: 1_000,
            phase: Duration::from_secs(20),
            sample_every: Duration::from_millis(250),
            churn_every: 200,
        },
        Profile::Full => Settings {
            rate: 1_000,
            phase: Duration::from_secs(600),
            sample_every: Duration::from_secs(2),
            churn_every: 1_000,
        },
    }
}

/// The soak's create/show/list mix, run by a [`DaemonTarget`] over its pool.
struct SoakMix {
    seed: u64,
    /// Ids `show` picks from.
    ids: Vec<String>,
    creates_sent: AtomicU64,
    creates_acked: AtomicU64,
}

impl SoakMix {
    async fn run_op(
        &self,
        client: &mut Client,
        action: usize,
        seq: u64,
    ) -> Result<(), ClientError> {
        match action {
            0 => {
                self.creates_sent.fetch_add(1, Ordering::Relaxed);
                let title = format!("soak-{:x}-{seq}", self.seed);
                client
                    .create(CreateArgs {
                        title,
                        ..CreateArgs::default()
                    })
                    .await
                    .map(|_| {
                        self.creates_acked.fetch_add(1, Ordering::Relaxed);
                    })
            }
            1 => {
                let id = &self.ids[(splitmix64(self.seed ^ seq) % self.ids.len() as u64) as usize];
                client.show(id.clone()).await.map(|_| ())
            }
            _ => client
                .list(ListArgs {
                    limit: Some(LIST_LIMIT),
                    ..ListArgs::default()
                })
                .await
                .map(|_| ()),
        }
    }
}

impl Workload for SoakMix {
    fn actions(&self) -> Vec<String> {
        MIX.iter().map(|(name, _)| name.to_string()).collect()
    }

    fn pick(&self, seq: u64) -> usize {
        weighted_index(
            &MIX,
            splitmix64(self.seed.rotate_left(17) ^ splitmix64(seq)) % 100,
        )
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

/// The soak's pool: [`POOL`] connections, each replaced every `churn_every` calls; a call
/// waits at most [`LOCK_BOUND`] for its connection (`pool_busy` past it); a failed call
/// (other than an error reply) drops its connection, and a failed connect is `connect`.
fn pool_config(churn_every: u64) -> PoolConfig {
    PoolConfig {
        size: POOL,
        call_timeout: CALL_TIMEOUT,
        lock_bound: Some(LOCK_BOUND),
        churn_every: Some(churn_every),
        drop_failed: true,
        connect_kind: Some("connect"),
    }
}

/// Creates the issues `show` reads, in one batch; returns their ids.
async fn seed_issues(db: &std::path::Path, seed: u64) -> Result<Vec<String>> {
    let mut c = daemon_client(db, Duration::from_secs(10)).await?;
    let ops = (0..SEED_ISSUES)
        .map(|i| {
            Op::Create(CreateArgs {
                title: format!("soak-seed-{seed:x}-{i}"),
                ..CreateArgs::default()
            })
        })
        .collect();
    create_batch(&mut c, ops, "seeding issues").await
}

/// Median of the values of `points[range]`.
fn median_of(points: &[(f64, f64)]) -> Option<f64> {
    let mut v: Vec<f64> = points.iter().map(|p| p.1).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Growth of a series across its steady part: the median of the last tenth (at least 3
/// samples) minus the median of the first tenth. Robust to a connection mid-replacement.
fn growth(points: &[(f64, f64)], warmup_s: f64) -> Option<(f64, f64, f64)> {
    let steady: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= warmup_s).collect();
    let k = (steady.len() / 10).max(3);
    if steady.len() < 2 * k {
        return None;
    }
    let first = median_of(&steady[..k])?;
    let last = median_of(&steady[steady.len() - k..])?;
    let peak = steady.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    Some((first, last, peak))
}

fn fmt_errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Suite for DaemonSoak {
    fn name(&self) -> &'static str {
        "daemon-soak"
    }

    fn description(&self) -> &'static str {
        "sustained create/show/list phases R -> 2R -> R against the daemon process: no RSS, thread or fd growth; latency per phase"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let phase_s = s.phase.as_secs();
        Plan {
            scale: format!("{} x {phase_s} s each, {POOL} connections", s.rates()),
            expected_s: 3 * phase_s + 3,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures: Vec<String> = Vec::new();
        let mut doubts: Vec<String> = Vec::new();

        let (db, mut daemon) = start_daemon(ctx, "soak.db", &[])?;
        let pid = daemon.pid();
        let rt = crate::harness::runtime()?;
        let ids = rt.block_on(seed_issues(&db, ctx.seed))?;
        let mix = Arc::new(SoakMix {
            seed: ctx.seed,
            ids,
            creates_sent: AtomicU64::new(0),
            creates_acked: AtomicU64::new(0),
        });
        let weights: Vec<String> = MIX.iter().map(|(n, w)| format!("{n} {w}%")).collect();
        let target = Arc::new(DaemonTarget::with_workload(
            &db,
            mix.clone(),
            pool_config(s.churn_every),
            format!(
                "rpc-daemon over {POOL} pooled connections (each replaced every {} calls): {}",
                s.churn_every,
                weights.join(", ")
            ),
        )?);
        let phases = [
            Phase {
                rate_per_s: s.rate,
                duration: s.phase,
            },
            Phase {
                rate_per_s: 2 * s.rate,
                duration: s.phase,
            },
            Phase {
                rate_per_s: s.rate,
                duration: s.phase,
            },
        ];
        let total = s.phase * 3;
        let max_samples =
            (total.as_secs_f64() / s.sample_every.as_secs_f64()).ceil() as usize * 2 + 100;
        let sampler = Sampler::start(vec![pid], s.sample_every, max_samples)?;
        let started = Instant::now();
        let cfg = GeneratorConfig {
            op_timeout: OP_TIMEOUT,
            ..GeneratorConfig::default()
        };
        let dyn_target: Arc<dyn Target> = target.clone();
        let measured: Vec<Measured> = rt.block_on(async {
            let mut gen = OpenLoop::new(dyn_target, cfg)?;
            gen.phases(&phases).await
        })?;
        let run_s = started.elapsed().as_secs_f64();
        let samples = sampler.stop();

        // The daemon must still answer, and hold every acknowledged create.
        let end = rt.block_on(async {
            let mut c = daemon_client(&db, Duration::from_secs(5)).await?;
            c.ping().await?;
            anyhow::Ok(c.stats().await?)
        });
        let sent = mix.creates_sent.load(Ordering::Relaxed);
        let acked = mix.creates_acked.load(Ordering::Relaxed);
        match &end {
            Ok(stats) => {
                let seeded = SEED_ISSUES as u64;
                if stats.issues < seeded + acked {
                    failures.push(format!(
                        "{} issues in the daemon after the run, fewer than the {seeded} seeded + {acked} creates acknowledged: {} lost",
                        stats.issues,
                        seeded + acked - stats.issues
                    ));
                }
                if stats.issues > seeded + sent {
                    failures.push(format!(
                        "{} issues in the daemon after the run, more than the {seeded} seeded + {sent} creates sent",
                        stats.issues
                    ));
                }
            }
            Err(e) => failures.push(format!("the daemon does not answer after the run: {e:#}")),
        }
        let clean_stop = daemon.stop(Duration::from_secs(15));
        drop(daemon);

        // ---- per phase ---------------------------------------------------------------
        let mut table = Table::new(
            "Phases (open loop; latency from the intended start, service from the actual start, ms)",
            &[
                "phase",
                "target /s",
                "achieved /s",
                "ok",
                "errors",
                "p50",
                "p99",
                "max",
                "service p99",
                "create p99",
                "show p99",
                "list p99",
                "dropped",
                "late",
            ],
        );
        let mut p99_lines: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
        let mut t0 = 0.0;
        let mut errors_total = 0u64;
        for (i, m) in measured.iter().enumerate() {
            let total = m.data.total();
            let sum = total.summary(m.window_s);
            let rate = phases[i].rate_per_s as f64;
            let achieved = m.achieved_per_s();
            let action_p99 = |name: &str| {
                m.data
                    .actions
                    .get(name)
                    .map(|a| a.summary(m.window_s).p99_ms)
                    .unwrap_or(0.0)
            };
            table.push_row([
                (i + 1).to_string(),
                phases[i].rate_per_s.to_string(),
                format!("{achieved:.0}"),
                sum.ok.to_string(),
                fmt_errors(&total.errors),
                format!("{:.2}", sum.p50_ms),
                format!("{:.2}", sum.p99_ms),
                format!("{:.1}", sum.max_ms),
                format!("{:.2}", sum.service_p99_ms),
                format!("{:.2}", action_p99("create")),
                format!("{:.2}", action_p99("show")),
                format!("{:.2}", action_p99("list")),
                total.dropped.to_string(),
                total.late.to_string(),
            ]);
            if sum.p99_ms > 5.0 * sum.service_p99_ms.max(0.1) && total.late > 0 {
                r.findings.push(format!(
                    "Phase {} ({rate:.0}/s): p99 {:.1} ms from the intended start but {:.2} ms from the actual start: most of the tail is operations starting late ({} late, issue lateness p99 {:.1} ms), i.e. the load generator or the shared machine, not the daemon's service time.",
                    i + 1,
                    sum.p99_ms,
                    sum.service_p99_ms,
                    total.late,
                    m.issue_lateness_us.value_at_quantile(0.99) as f64 / 1e3
                ));
            }
            let mid = t0 + m.window_s / 2.0;
            t0 += m.window_s;
            p99_lines
                .entry("all".into())
                .or_default()
                .push([mid, sum.p99_ms.max(0.001)]);
            for (name, _) in MIX {
                p99_lines
                    .entry(name.to_string())
                    .or_default()
                    .push([mid, action_p99(name).max(0.001)]);
            }
            let phase_no = i + 1;
            r.metrics.push(
                Metric::new(format!("phase{phase_no}_achieved_per_s"), achieved, "ops/s")
                    .higher_is_better(),
            );
            let mut p99 =
                Metric::new(format!("phase{phase_no}_p99_ms"), sum.p99_ms, "ms").lower_is_better();
            if phase_no == 2 {
                p99 = p99.headline();
            }
            r.metrics.push(p99);
            r.metrics.push(
                Metric::new(format!("phase{phase_no}_p50_ms"), sum.p50_ms, "ms").lower_is_better(),
            );
            errors_total += total.error_count();
            let hard: Vec<String> = total
                .errors
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "timeout" | "pool_busy"))
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !hard.is_empty() {
                failures.push(format!(
                    "phase {phase_no} ({rate:.0}/s): errors from the daemon or its connections: {}",
                    hard.join(", ")
                ));
            }
            let shortfall = total.timeouts()
                + total.errors.get("pool_busy").copied().unwrap_or(0)
                + total.dropped;
            if m.scheduled > 0 && shortfall as f64 > SHORTFALL_MAX * m.scheduled as f64 {
                doubts.push(format!(
                    "phase {phase_no} ({rate:.0}/s): {shortfall} of {} operations timed out, waited too long for a connection or were dropped (> {:.0}%)",
                    m.scheduled,
                    SHORTFALL_MAX * 100.0
                ));
            }
            if achieved < ACHIEVED_MIN * rate {
                doubts.push(format!(
                    "phase {phase_no}: achieved {achieved:.0}/s < {:.0}% of {rate:.0}/s: the load was not applied as planned",
                    ACHIEVED_MIN * 100.0
                ));
            }
            if !m.drained {
                doubts.push(format!(
                    "phase {phase_no}: operations still in flight past the generator's bound"
                ));
            }
        }
        r.tables.push(table);
        r.metrics
            .push(Metric::new("errors", errors_total as f64, "").lower_is_better());

        // ---- resources -----------------------------------------------------------------
        let warmup_s = s.phase.as_secs_f64() / 2.0;
        let rss = series(&samples, pid, |p| p.rss_bytes as f64 / 1e6);
        let threads = series(&samples, pid, |p| p.threads as f64);
        let fds = series(&samples, pid, |p| p.fds as f64);
        let last_t = rss.last().map_or(0.0, |p| p.0);
        if last_t + 5.0 * s.sample_every.as_secs_f64() < run_s.min(total.as_secs_f64()) {
            failures.push(format!(
                "the daemon (pid {pid}) stopped being sampleable at {last_t:.1} s of a {run_s:.1} s run: it exited"
            ));
        }
        let window = (rss.len() / 20).max(3);
        let steady_h = (last_t - warmup_s).max(0.0) / 3600.0;
        let mut rss_summary = None;
        match leak_check(&rss, warmup_s, RSS_LEAK_MB_PER_H, window, "rss", "MB") {
            Ok(lc) => {
                let projected = lc.slope_per_hour * steady_h;
                rss_summary = Some(format!(
                    "{projected:+.1} MB over {:.0} steady s ({:+.0} MB/h)",
                    steady_h * 3600.0,
                    lc.slope_per_hour
                ));
                r.metrics.push(
                    Metric::new("rss_slope_mb_per_h", lc.slope_per_hour, "MB/h")
                        .lower_is_better()
                        .headline(),
                );
                r.metrics.push(
                    Metric::new("rss_projected_growth_mb", projected, "MB").lower_is_better(),
                );
                r.findings.push(format!(
                    "Daemon RSS after a {warmup_s:.0} s warmup: Theil–Sen slope {:+.1} MB/h, {projected:+.2} MB projected over the {:.0} s steady part, rolling-mean envelope {:.1}–{:.1} MB ({} samples).",
                    lc.slope_per_hour,
                    steady_h * 3600.0,
                    lc.envelope_min,
                    lc.envelope_max,
                    lc.samples_used
                ));
                if lc.leaking && projected > RSS_NOISE_MB {
                    failures.push(format!(
                        "RSS grows {:+.1} MB/h > {RSS_LEAK_MB_PER_H} MB/h ({projected:+.1} MB over the steady part, above the {RSS_NOISE_MB} MB noise floor)",
                        lc.slope_per_hour
                    ));
                } else if lc.leaking {
                    r.findings.push(format!(
                        "The RSS slope is above {RSS_LEAK_MB_PER_H} MB/h but projects only {projected:+.2} MB over this run, within the {RSS_NOISE_MB} MB noise floor: not a leak verdict at this length."
                    ));
                }
            }
            Err(e) => doubts.push(format!("no RSS leak check: {e}")),
        }
        if let Some(peak) = rss.iter().map(|p| p.1).reduce(f64::max) {
            r.metrics
                .push(Metric::new("rss_peak_mb", peak, "MB").lower_is_better());
        }
        for (what, points, bound) in [
            ("threads", &threads, THREAD_GROWTH_BOUND),
            ("fds", &fds, FD_GROWTH_BOUND),
        ] {
            match growth(points, warmup_s) {
                Some((first, last, peak)) => {
                    let grew = last - first;
                    r.metrics
                        .push(Metric::new(format!("{what}_growth"), grew, "").lower_is_better());
                    r.metrics
                        .push(Metric::new(format!("{what}_peak"), peak, ""));
                    if grew > bound {
                        failures.push(format!(
                            "{what} grew from {first:.0} to {last:.0} across the steady part (+{grew:.0} > {bound:.0}; peak {peak:.0})"
                        ));
                    }
                }
                None => doubts.push(format!(
                    "too few samples of {what} after the {warmup_s:.0} s warmup for a growth check"
                )),
            }
        }
        let connects = target.connects();
        r.metrics
            .push(Metric::new("connections_opened", connects as f64, ""));
        r.metrics
            .push(Metric::new("creates_acknowledged", acked as f64, ""));

        let pts = |v: &[(f64, f64)]| v.iter().map(|(t, y)| [*t, *y]).collect::<Vec<_>>();
        r.series.push(Series {
            id: "rss".into(),
            title: format!(
                "Daemon RSS over time (phases {}/s, {}/s, {}/s of {} s each)",
                s.rate,
                2 * s.rate,
                s.rate,
                s.phase.as_secs()
            ),
            x_label: "time (s)".into(),
            y_label: "RSS (MB)".into(),
            lines: vec![Line {
                name: "rpc-daemon".into(),
                points: pts(&rss),
            }],
            log_y: false,
        });
        r.series.push(Series {
            id: "threads-fds".into(),
            title: "Daemon threads and open fds over time".into(),
            x_label: "time (s)".into(),
            y_label: "count".into(),
            lines: vec![
                Line {
                    name: "threads".into(),
                    points: pts(&threads),
                },
                Line {
                    name: "fds".into(),
                    points: pts(&fds),
                },
            ],
            log_y: false,
        });
        r.series.push(Series {
            id: "p99-per-phase".into(),
            title: "p99 latency per phase (x = the phase's middle)".into(),
            x_label: "time (s)".into(),
            y_label: "p99 from intended start (ms, log scale)".into(),
            lines: p99_lines
                .into_iter()
                .map(|(name, points)| Line { name, points })
                .collect(),
            log_y: true,
        });

        r.findings.push(format!(
            "A {:.0}-second run cannot prove the absence of a slow leak: over {:.0} steady seconds the {RSS_NOISE_MB} MB noise floor is {:.0} MB/h, so only growth faster than that is visible; the full profile (30 minutes) is the real soak.",
            total.as_secs_f64(),
            steady_h * 3600.0,
            if steady_h > 0.0 { RSS_NOISE_MB / steady_h } else { 0.0 }
        ));
        if !clean_stop {
            r.findings.push(
                "The daemon did not exit cleanly within 15 s of SIGTERM after the soak.".into(),
            );
        }

        r.config.insert("rate_r_per_s".into(), s.rate.into());
        r.config.insert(
            "phases".into(),
            format!("{}, {} s each, back to back", s.rates(), s.phase.as_secs()).into(),
        );
        r.config.insert("target".into(), target.describe().into());
        r.config.insert("pool".into(), POOL.into());
        r.config.insert(
            "connection_replaced_every_calls".into(),
            s.churn_every.into(),
        );
        r.config.insert("seed_issues".into(), SEED_ISSUES.into());
        r.config.insert(
            "sample_interval_ms".into(),
            (s.sample_every.as_millis() as u64).into(),
        );
        r.config.insert("leak_warmup_s".into(), warmup_s.into());
        r.config.insert(
            "rss_leak_threshold".into(),
            format!("{RSS_LEAK_MB_PER_H} MB/h and more than {RSS_NOISE_MB} MB projected over the steady part").into(),
        );
        r.config.insert(
            "growth_bounds".into(),
            format!("threads +{THREAD_GROWTH_BOUND}, fds +{FD_GROWTH_BOUND} (median of the steady part's last tenth minus its first)").into(),
        );
        r.config.insert(
            "durability".into(),
            "synchronous=NORMAL (the default)".into(),
        );
        r.config.insert(
            "seed_use".into(),
            "the action of each operation, the issue each show reads".into(),
        );

        let p2 = r.metric("phase2_p99_ms").map_or(0.0, |m| m.value);
        r.headline = format!(
            "{} for {:.0} s: daemon RSS {}, threads {}, fds {}; p99 at 2R {p2:.2} ms, {errors_total} errors",
            s.rates(),
            total.as_secs_f64(),
            rss_summary.unwrap_or_else(|| "unchecked".into()),
            r.metric("threads_growth")
                .map_or("unchecked".into(), |m| format!("{:+.0}", m.value)),
            r.metric("fds_growth")
                .map_or("unchecked".into(), |m| format!("{:+.0}", m.value)),
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
