//! Suite `daemon-overload`: more connections than the limit are refused at once, and the
//! daemon stays responsive to the connections it holds.
//!
//! The daemon runs with `--max-connections 16`. Sixteen clients connect and stay; one of
//! them runs a ping/create loop for the whole suite. Then:
//!
//! 1. **storm**: many more connection attempts, at most 32 in flight at a time (below the
//!    64 refusals the daemon writes at once); every one must be refused with `overloaded`
//!    (the frame sent instead of a welcome, PROTOCOL.md §3), within [`REFUSAL_LIMIT`] (1 s,
//!    "at once": a fifth of the 5 s client timeout), and none may be welcomed;
//! 2. **burst**: as many attempts released at one instant; each must be refused within the
//!    same bound and none welcomed. The daemon writes at most 64 `overloaded` frames at once
//!    and closes further over-limit connections without one (`MAX_REJECTING` in
//!    `server.rs`); a refusal without the frame is counted and reported, as PROTOCOL.md does
//!    not mention it;
//! 3. the loop on the held connection keeps being answered: no error, and its p99 during
//!    the storm and burst within max([`LOOP_FACTOR`] × its p99 before, [`LOOP_FLOOR_MS`]);
//! 4. after the held connections are released the slots come back: sixteen new clients
//!    connect and ping, and a seventeenth is refused again.
//!
//! At the end `stats` must count exactly the creates the loop had acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use rpc_daemon::client::{Client, ClientConfig, ClientError, Mode};
use rpc_daemon::error::Code;
use rpc_daemon::model::CreateArgs;

use crate::daemon_harness::daemon_config;
use crate::harness::new_result;
use crate::harness::seed::derive;
use crate::harness::stats::{ms, p50_p99_max, quantile, quantile_cells, slowest_per_window};
use crate::suites::daemon::common::{
    counters_missing, note_unclean_stop, start_daemon, stop_for_counters,
};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonOverload;

/// The daemon's connection limit in this suite.
const LIMIT: usize = 16;
/// Client-side bound of a connection attempt and of every call.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// "At once": every refusal must arrive within this.
const REFUSAL_LIMIT: Duration = Duration::from_secs(1);
/// The held loop's p99 during the storm may be this many times its p99 before…
const LOOP_FACTOR: f64 = 10.0;
/// …or this, whichever is larger.
const LOOP_FLOOR_MS: f64 = 100.0;
/// Pause between two calls of the loop.
const LOOP_PAUSE: Duration = Duration::from_millis(2);
/// How long getting a free slot may take (a closed connection frees its slot when the
/// daemon has read its end: not instantly).
const SLOT_WAIT: Duration = Duration::from_secs(3);
/// Most loop samples kept.
const MAX_LOOP_SAMPLES: usize = 1_000_000;
/// Window of the loop-latency chart.
const WINDOW_S: f64 = 0.1;

struct Settings {
    storm: usize,
    in_flight: usize,
    burst: usize,
    baseline_ms: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            storm: 20,
            in_flight: 8,
            burst: 20,
            baseline_ms: 300,
        },
        Profile::Quick => Settings {
            storm: 1_000,
            in_flight: 32,
            burst: 200,
            baseline_ms: 1_000,
        },
        Profile::Full => Settings {
            storm: 10_000,
            in_flight: 32,
            burst: 1_000,
            baseline_ms: 3_000,
        },
    }
}

/// How a connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Attempt {
    /// Refused with the `overloaded` frame.
    Overloaded,
    /// Welcomed: over the limit, this is a violation.
    Welcomed,
    /// The client fell back to opening the database file: PROTOCOL.md §3 forbids that
    /// when a daemon refuses.
    FellBack,
    /// Closed without a frame.
    ClosedBare,
    /// No answer within the client timeout.
    Timeout,
    /// Anything else (the client's error code).
    Other(String),
}

impl Attempt {
    fn name(&self) -> String {
        match self {
            Attempt::Overloaded => "overloaded".into(),
            Attempt::Welcomed => "welcomed".into(),
            Attempt::FellBack => "fell back to direct mode".into(),
            Attempt::ClosedBare => "closed without a frame".into(),
            Attempt::Timeout => "no answer".into(),
            Attempt::Other(c) => c.clone(),
        }
    }
}

fn config(db: &Path) -> ClientConfig {
    daemon_config(db, CLIENT_TIMEOUT)
}

/// One connection attempt in [`Mode::Auto`] (so that a wrong fallback to the file would
/// show): how it ended, how long it took, and the client if welcomed.
async fn attempt(db: PathBuf) -> (Attempt, f64, Option<Client>) {
    let started = Instant::now();
    let res = Client::connect(ClientConfig {
        mode: Mode::Auto,
        ..config(&db)
    })
    .await;
    let took = ms(started.elapsed());
    match res {
        Ok(c) if c.is_direct() => (Attempt::FellBack, took, Some(c)),
        Ok(c) => (Attempt::Welcomed, took, Some(c)),
        Err(ClientError::Handshake(e)) if e.code == Code::Overloaded => {
            (Attempt::Overloaded, took, None)
        }
        Err(ClientError::Timeout { .. }) => (Attempt::Timeout, took, None),
        // The daemon closed (or reset) the connection instead of answering the hello.
        Err(ClientError::Protocol(m)) if m.contains("closed the connection") => {
            (Attempt::ClosedBare, took, None)
        }
        Err(ClientError::Io(_)) => (Attempt::ClosedBare, took, None),
        Err(e) => (Attempt::Other(e.code().to_string()), took, None),
    }
}

/// Connects, retrying while the daemon answers `overloaded` (a slot just released may not
/// be free yet), bounded by [`SLOT_WAIT`]. Returns the client and the refusals seen.
async fn connect_when_free(db: &Path) -> Result<(Client, u64)> {
    let until = Instant::now() + SLOT_WAIT;
    let mut refused = 0;
    loop {
        match Client::connect(config(db)).await {
            Ok(c) => return Ok((c, refused)),
            Err(e) if e.api_code() == Some(Code::Overloaded) && Instant::now() < until => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connecting within the limit of {LIMIT} ({refused} refusals before)")
                })
            }
        }
    }
}

/// One call of the loop on a held connection.
struct LoopSample {
    start_s: f64,
    latency_ms: f64,
    create: bool,
    error: Option<String>,
}

struct Run {
    storm: Vec<(Attempt, f64)>,
    burst: Vec<(Attempt, f64)>,
    storm_s: (f64, f64),
    burst_s: (f64, f64),
    loop_samples: Vec<LoopSample>,
    acked_creates: u64,
    held_refusals: u64,
    /// New clients that connected and pinged after the release, and refusals meanwhile.
    slots_back: usize,
    slots_back_ms: f64,
    slots_refusals: u64,
    /// How the attempt past the limit after the release ended.
    over_again: Attempt,
    /// `stats.issues` at the end (`None`: no client could connect to ask).
    final_issues: Option<u64>,
}

impl Suite for DaemonOverload {
    fn name(&self) -> &'static str {
        "daemon-overload"
    }

    fn description(&self) -> &'static str {
        "rpc-daemon at --max-connections 16 with 16 held: a storm and a burst of extra connections are each refused overloaded within 1 s while a held ping/create loop keeps being answered; released slots come back"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{LIMIT} held + {} refused ({} in flight) + a burst of {}",
                s.storm, s.in_flight, s.burst
            ),
            expected_s: (s.baseline_ms * 2 + (s.storm + s.burst) as u64 * 2).div_ceil(1000) + 3,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let limit = LIMIT.to_string();
        let (db, mut daemon) = start_daemon(ctx, "issues.db", &["--max-connections", &limit])?;
        println!("daemon pid {} · limit {LIMIT} connections", daemon.pid());
        let rt = crate::harness::runtime()?;
        let run = rt.block_on(drive(&db, &s, ctx.seed))?;
        drop(rt);
        let (clean_stop, server_stats) = stop_for_counters(&mut daemon);

        let mut failures = Vec::new();
        let doubts: Vec<String> = Vec::new();
        let refusal_ms = ms(REFUSAL_LIMIT);

        let mut table = Table::new(
            format!(
                "Connection attempts past the limit of {LIMIT} (client timeout {} s)",
                CLIENT_TIMEOUT.as_secs()
            ),
            &[
                "phase",
                "attempts",
                "outcomes",
                "latency p50 ms",
                "p99 ms",
                "max ms",
            ],
        );
        let mut cdf = Vec::new();
        for (phase, attempts) in [("storm", &run.storm), ("burst", &run.burst)] {
            let mut outcomes: BTreeMap<Attempt, usize> = BTreeMap::new();
            for (a, _) in attempts.iter() {
                *outcomes.entry(a.clone()).or_default() += 1;
            }
            let lat: Vec<f64> = attempts.iter().map(|(_, l)| *l).collect();
            let (p50, p99, max) = p50_p99_max(&lat);
            table.push_row([
                phase.to_string(),
                attempts.len().to_string(),
                outcomes
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", k.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                format!("{max:.2}"),
            ]);
            let mut m50 =
                Metric::new(format!("{phase}_refusal_p50_ms"), p50, "ms").lower_is_better();
            let mut m99 =
                Metric::new(format!("{phase}_refusal_p99_ms"), p99, "ms").lower_is_better();
            if phase == "storm" {
                m50 = m50.headline();
                m99 = m99.headline();
            }
            r.metrics.push(m50);
            r.metrics.push(m99);
            r.metrics
                .push(Metric::new(format!("{phase}_refusal_max_ms"), max, "ms").lower_is_better());
            let overloaded = outcomes.get(&Attempt::Overloaded).copied().unwrap_or(0);
            let bare = outcomes.get(&Attempt::ClosedBare).copied().unwrap_or(0);
            r.metrics.push(Metric::new(
                format!("{phase}_overloaded"),
                overloaded as f64,
                "",
            ));
            let welcomed = outcomes.get(&Attempt::Welcomed).copied().unwrap_or(0);
            if welcomed > 0 {
                failures.push(format!(
                    "{phase}: {welcomed} of {} connections past the limit of {LIMIT} were welcomed",
                    attempts.len()
                ));
            }
            let fell_back = outcomes.get(&Attempt::FellBack).copied().unwrap_or(0);
            if fell_back > 0 {
                failures.push(format!(
                    "{phase}: {fell_back} of {} refused clients (mode auto) opened the database file instead: a refusal must never fall back to direct mode",
                    attempts.len()
                ));
            }
            let unanswered: usize = outcomes
                .iter()
                .filter(|(k, _)| matches!(k, Attempt::Timeout | Attempt::Other(_)))
                .map(|(_, v)| *v)
                .sum();
            if unanswered > 0 {
                failures.push(format!(
                    "{phase}: {unanswered} of {} connection attempts were neither refused nor welcomed ({})",
                    attempts.len(),
                    outcomes
                        .iter()
                        .map(|(k, v)| format!("{}: {v}", k.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if phase == "storm" && bare > 0 {
                failures.push(format!(
                    "storm ({} in flight at most): {bare} of {} attempts were closed without the overloaded frame",
                    s.in_flight,
                    attempts.len()
                ));
            }
            if phase == "burst" && bare > 0 {
                r.findings.push(format!(
                    "burst of {}: {bare} attempts were closed without an overloaded frame ({overloaded} got it). The daemon writes at most 64 refusals at once (MAX_REJECTING in server.rs) and closes the rest bare; PROTOCOL.md §3 says every over-limit connection gets `overloaded`, so a client sees a protocol error instead. Either document the bare close or keep writing the frame.",
                    attempts.len()
                ));
            }
            if max > refusal_ms {
                failures.push(format!(
                    "{phase}: the slowest refusal took {max:.0} ms > {refusal_ms:.0} ms (p99 {p99:.1} ms): over-limit connections must be refused at once"
                ));
            }
            let mut sorted = lat.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            cdf.push(Line {
                name: phase.to_string(),
                points: sorted
                    .iter()
                    .enumerate()
                    .map(|(i, v)| [(i + 1) as f64 / n * 100.0, v.max(0.001)])
                    .collect(),
            });
        }
        r.tables.push(table);
        r.series.push(Series {
            id: "refusals".into(),
            title: "Time to be refused, per attempt past the limit (sorted)".into(),
            x_label: "share of attempts (%)".into(),
            y_label: "connect + hello until refused (ms, log scale)".into(),
            lines: cdf,
            log_y: true,
        });

        // The held connection's loop.
        let in_window = |t: f64| {
            (t >= run.storm_s.0 && t < run.storm_s.1) || (t >= run.burst_s.0 && t < run.burst_s.1)
        };
        let before: Vec<f64> = run
            .loop_samples
            .iter()
            .filter(|x| x.start_s < run.storm_s.0 && x.error.is_none())
            .map(|x| x.latency_ms)
            .collect();
        let during: Vec<f64> = run
            .loop_samples
            .iter()
            .filter(|x| in_window(x.start_s) && x.error.is_none())
            .map(|x| x.latency_ms)
            .collect();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for x in &run.loop_samples {
            if let Some(e) = &x.error {
                *errors.entry(e.clone()).or_default() += 1;
            }
        }
        let (p99_before, p99_during) = (quantile(&before, 0.99), quantile(&during, 0.99));
        let loop_limit = (p99_before * LOOP_FACTOR).max(LOOP_FLOOR_MS);
        let mut loop_table = Table::new(
            "Ping/create loop on a held connection",
            &[
                "phase", "calls", "creates", "p50 ms", "p99 ms", "max ms", "errors",
            ],
        );
        let count_creates = |f: &dyn Fn(f64) -> bool| {
            run.loop_samples
                .iter()
                .filter(|x| f(x.start_s) && x.create)
                .count()
        };
        let before_f = |t: f64| t < run.storm_s.0;
        let during_f = |t: f64| in_window(t);
        for (name, v, f) in [
            ("before", &before, &before_f as &dyn Fn(f64) -> bool),
            (
                "during storm and burst",
                &during,
                &during_f as &dyn Fn(f64) -> bool,
            ),
        ] {
            let errs = run
                .loop_samples
                .iter()
                .filter(|x| f(x.start_s) && x.error.is_some())
                .count();
            let [p50, p99, max] = quantile_cells(v);
            loop_table.push_row([
                name.to_string(),
                v.len().to_string(),
                count_creates(f).to_string(),
                p50,
                p99,
                max,
                errs.to_string(),
            ]);
        }
        r.tables.push(loop_table);
        r.metrics
            .push(Metric::new("loop_p99_before_ms", p99_before, "ms").lower_is_better());
        r.metrics.push(
            Metric::new("loop_p99_during_storm_ms", p99_during, "ms")
                .lower_is_better()
                .headline(),
        );
        r.metrics.push(Metric::new(
            "loop_calls_during_storm",
            during.len() as f64,
            "",
        ));
        let loop_errors: usize = errors.values().sum();
        r.metrics
            .push(Metric::new("loop_errors", loop_errors as f64, "").lower_is_better());
        if loop_errors > 0 {
            failures.push(format!(
                "the held connection's loop got {loop_errors} errors ({errors:?}): the daemon must keep serving the connections it holds"
            ));
        }
        if during.is_empty() {
            failures.push("the held connection's loop completed no call during the storm".into());
        } else if p99_during > loop_limit {
            failures.push(format!(
                "the held connection's loop: p99 {p99_during:.1} ms during the storm > {loop_limit:.1} ms (max of {LOOP_FACTOR} × p99 before = {:.1} ms and {LOOP_FLOOR_MS} ms)",
                p99_before * LOOP_FACTOR
            ));
        }
        r.series.push(Series {
            id: "held-loop".into(),
            title: format!(
                "Slowest ping/create of a held connection per {:.0} ms (storm {:.1}–{:.1} s, burst {:.1}–{:.1} s)",
                WINDOW_S * 1e3,
                run.storm_s.0,
                run.storm_s.1,
                run.burst_s.0,
                run.burst_s.1
            ),
            x_label: "time since the loop started (s)".into(),
            y_label: "latency, max per window (ms)".into(),
            lines: vec![Line {
                name: "held connection".into(),
                points: slowest_per_window(run.loop_samples.iter().map(|s| (s.start_s, s.latency_ms)), WINDOW_S),
            }],
            log_y: false,
        });

        // Slots come back.
        r.metrics
            .push(Metric::new("slots_back", run.slots_back as f64, "").higher_is_better());
        r.metrics
            .push(Metric::new("slots_back_ms", run.slots_back_ms, "ms").lower_is_better());
        if run.slots_back < LIMIT {
            failures.push(format!(
                "after releasing the held connections only {} of {LIMIT} new clients could connect and ping",
                run.slots_back
            ));
        }
        if run.over_again != Attempt::Overloaded {
            failures.push(format!(
                "with the {LIMIT} slots taken again, one more connection was {} (expected overloaded)",
                run.over_again.name()
            ));
        }
        match run.final_issues {
            Some(n) if n == run.acked_creates => {}
            Some(n) => failures.push(format!(
                "stats counts {n} issues; the loop had {} creates acknowledged",
                run.acked_creates
            )),
            None => failures.push("no client could connect after the release to read stats".into()),
        }
        r.metrics
            .push(Metric::new("acked_creates", run.acked_creates as f64, ""));

        let refused_by_us = run.storm.len() + run.burst.len();
        let refused_total = refused_by_us as u64
            + run.held_refusals
            + run.slots_refusals
            + u64::from(run.over_again != Attempt::Welcomed);
        match server_stats {
            Some(st) => {
                r.metrics.push(Metric::new(
                    "daemon_rejected_connections",
                    st.rejected_connections as f64,
                    "",
                ));
                if st.rejected_connections != refused_total {
                    r.findings.push(format!(
                        "the daemon counted {} rejected connections; the clients saw {refused_total} refusals",
                        st.rejected_connections
                    ));
                }
            }
            None => r.findings.push(counters_missing(&daemon.log, clean_stop)),
        }
        note_unclean_stop(&mut r, clean_stop);
        if run.held_refusals > 0 {
            r.findings.push(format!(
                "opening the {LIMIT} held connections met {} overloaded refusals first: the start-up probe's slot was not free yet",
                run.held_refusals
            ));
        }

        let storm_p99 = r.metric("storm_refusal_p99_ms").map_or(0.0, |m| m.value);
        let storm_max = r.metric("storm_refusal_max_ms").map_or(0.0, |m| m.value);
        let burst_max = r.metric("burst_refusal_max_ms").map_or(0.0, |m| m.value);
        let burst_bare = run
            .burst
            .iter()
            .filter(|(a, _)| *a == Attempt::ClosedBare)
            .count();
        r.headline = format!(
            "at {LIMIT} connections, {} extra attempts refused overloaded in p99 {storm_p99:.1} ms (max {storm_max:.1}); a burst of {} refused within {burst_max:.1} ms ({burst_bare} without the frame); held loop p99 {p99_before:.1} → {p99_during:.1} ms; {}/{LIMIT} slots back",
            run.storm.len(),
            run.burst.len(),
            run.slots_back
        );
        r.config.insert("max_connections".into(), LIMIT.into());
        r.config.insert("storm_attempts".into(), s.storm.into());
        r.config
            .insert("storm_in_flight".into(), s.in_flight.into());
        r.config.insert("burst_attempts".into(), s.burst.into());
        r.config
            .insert("client_timeout_s".into(), CLIENT_TIMEOUT.as_secs().into());
        r.config
            .insert("refusal_limit_ms".into(), refusal_ms.into());
        r.config.insert(
            "seed_use".into(),
            "pauses between storm launches, titles".into(),
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}

async fn drive(db: &Path, s: &Settings, seed: u64) -> Result<Run> {
    // The held connections.
    let mut held = Vec::with_capacity(LIMIT);
    let mut held_refusals = 0;
    for _ in 0..LIMIT {
        let (c, refused) = connect_when_free(db).await?;
        held_refusals += refused;
        held.push(c);
    }
    let mut looper = held.pop().context("no held connection")?;

    // The loop on one of them.
    let t0 = Instant::now();
    let since = move |t: Instant| t.duration_since(t0).as_secs_f64();
    let stop = Arc::new(AtomicBool::new(false));
    let loop_bound = Duration::from_millis(s.baseline_ms * 2)
        + CLIENT_TIMEOUT * 2
        + REFUSAL_LIMIT * ((s.storm + s.burst) as u32 + 10);
    let looping = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut acked = 0u64;
            let until = Instant::now() + loop_bound;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < until
                && out.len() < MAX_LOOP_SAMPLES
            {
                let create = i % 2 == 1;
                let started = Instant::now();
                let error = if create {
                    match looper
                        .create(CreateArgs {
                            title: format!("loop-{seed}-{i}"),
                            ..CreateArgs::default()
                        })
                        .await
                    {
                        Ok(_) => {
                            acked += 1;
                            None
                        }
                        Err(e) => Some(e.code().to_string()),
                    }
                } else {
                    looper.ping().await.err().map(|e| e.code().to_string())
                };
                out.push(LoopSample {
                    start_s: since(started),
                    latency_ms: ms(started.elapsed()),
                    create,
                    error,
                });
                i += 1;
                tokio::time::sleep(LOOP_PAUSE).await;
            }
            (out, acked, looper)
        })
    };
    tokio::time::sleep(Duration::from_millis(s.baseline_ms)).await;

    // Storm: at most `in_flight` attempts at a time, launched with seeded pauses.
    let storm_from = since(Instant::now());
    let mut rng = fastrand::Rng::with_seed(derive(seed, 0x0E4D));
    let mut storm = Vec::with_capacity(s.storm);
    let mut set = tokio::task::JoinSet::new();
    let mut welcomed = Vec::new();
    for _ in 0..s.storm {
        while set.len() >= s.in_flight {
            if let Some(res) = set.join_next().await {
                let (a, l, c): (Attempt, f64, Option<Client>) =
                    res.context("a storm attempt panicked")?;
                storm.push((a, l));
                welcomed.extend(c);
            }
        }
        set.spawn(attempt(db.to_path_buf()));
        tokio::time::sleep(Duration::from_micros(rng.u64(0..500))).await;
    }
    while let Some(res) = set.join_next().await {
        let (a, l, c) = res.context("a storm attempt panicked")?;
        storm.push((a, l));
        welcomed.extend(c);
    }
    let storm_to = since(Instant::now());

    // Burst: all at once.
    tokio::time::sleep(Duration::from_millis(s.baseline_ms / 2)).await;
    let burst_from = since(Instant::now());
    let gate = Arc::new(tokio::sync::Barrier::new(s.burst + 1));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..s.burst {
        let gate = Arc::clone(&gate);
        let db = db.to_path_buf();
        set.spawn(async move {
            gate.wait().await;
            attempt(db).await
        });
    }
    gate.wait().await;
    let mut burst = Vec::with_capacity(s.burst);
    while let Some(res) = set.join_next().await {
        let (a, l, c) = res.context("a burst attempt panicked")?;
        burst.push((a, l));
        welcomed.extend(c);
    }
    let burst_to = since(Instant::now());
    tokio::time::sleep(Duration::from_millis(s.baseline_ms / 2)).await;

    stop.store(true, Ordering::Relaxed);
    let (loop_samples, acked_creates, looper) = looping.await.context("the loop task panicked")?;

    // Release every held connection (and any that was wrongly welcomed); the slots must
    // come back.
    drop(welcomed);
    drop(looper);
    drop(held);
    let released = Instant::now();
    let mut fresh = Vec::with_capacity(LIMIT);
    let mut slots_refusals = 0;
    for _ in 0..LIMIT {
        match connect_when_free(db).await {
            Ok((mut c, refused)) => {
                slots_refusals += refused;
                if c.ping().await.is_ok() {
                    fresh.push(c);
                }
            }
            Err(e) => {
                println!("a slot did not come back: {e:#}");
                break;
            }
        }
    }
    let slots_back_ms = ms(released.elapsed());
    let slots_back = fresh.len();
    let (over_again, _, extra) = attempt(db.to_path_buf()).await;
    drop(extra);
    let final_issues = match fresh.first_mut() {
        Some(c) => Some(c.stats().await.context("stats after the storm")?.issues),
        None => None,
    };
    drop(fresh);
    Ok(Run {
        storm,
        burst,
        storm_s: (storm_from, storm_to),
        burst_s: (burst_from, burst_to),
        loop_samples,
        acked_creates,
        held_refusals,
        slots_back,
        slots_back_ms,
        slots_refusals,
        over_again,
        final_issues,
    })
}
