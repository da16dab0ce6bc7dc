//! Suite `daemon-timeouts`: a request stalled on purpose does not block other clients, and
//! deadlines are honoured within a stated margin.
//!
//! The stall is the honest one: a plain `rusqlite` connection to the daemon's database holds
//! `BEGIN IMMEDIATE`, so the daemon's single writer waits on SQLite's write lock exactly as
//! it would behind another process. While the lock is held:
//!
//! 1. reads from other clients (`show`, `list`, `ready`, `stats`) keep being answered: their
//!    p99 during the stall must stay within [`READ_FACTOR`] × their p99 before it (or
//!    [`READ_FLOOR_MS`], whichever is larger), and none may fail;
//! 2. creates sent with `deadline_ms` D ∈ {100, 300, 1000} ms (one client each, sent at
//!    seeded offsets) are all answered `deadline_exceeded`, never before D and at most
//!    the margin after it (answer time − D, measured on the client);
//! 3. on ONE raw connection, a stalled create is followed by reads: the reads are answered
//!    while the create waits, before its answer (responses out of order, PROTOCOL.md §4).
//!
//! After the lock is released, new creates succeed, and none of the creates answered
//! `deadline_exceeded` is in the database (checked by title with a plain SQLite connection
//! once the daemon has stopped, so any late commit would be visible).
//!
//! The margin is `WRITER_BUSY_SLICE` (50 ms) + [`SCHED_ALLOWANCE_MS`] (100 ms) = 150 ms.
//! Why, from `server.rs`: a write that is not yet claimed by the writer is answered by its
//! own request task when its deadline timer fires; a claimed write sits in the writer's
//! group, which retries `BEGIN IMMEDIATE` with a busy timeout of one slice and answers the
//! writes whose deadline passed after each attempt. So a write waits at most one slice past
//! its deadline; the 100 ms on top cover the socket round trip and scheduling on 2 shared
//! cores (the `timer` suite saw single events 0.4 ms late; 100 ms is generous on purpose,
//! a writer that ignored deadlines would overshoot by the whole stall).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use rpc_daemon::client::{Client, ClientConfig};
use rpc_daemon::error::Code;
use rpc_daemon::model::{CreateArgs, ListArgs, Op};
use rpc_daemon::proto::{
    read_frame, write_frame, Hello, HelloFrame, Request, Response, WelcomeFrame, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use rpc_daemon::server::WRITER_BUSY_SLICE;
use tokio::net::UnixStream;

use crate::daemon_harness::{daemon_client, daemon_config};
use crate::harness::new_result;
use crate::harness::seed::derive;
use crate::harness::stats::{ms, p50_p99_max, quantile, quantile_cells, slowest_per_window};
use crate::suites::daemon::common::{
    counters_missing, note_unclean_stop, start_daemon, stop_for_counters,
};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonTimeouts;

/// The deadlines the stalled creates ask for, milliseconds.
const DEADLINES_MS: [u64; 3] = [100, 300, 1000];
/// What the margin allows on top of the writer's busy slice: round trip and scheduling.
const SCHED_ALLOWANCE_MS: f64 = 100.0;
/// Reads during the stall may be this many times slower (p99) than before it…
const READ_FACTOR: f64 = 5.0;
/// …or this slow, whichever is larger (a read that waited for the writer would take the
/// whole stall: seconds).
const READ_FLOOR_MS: f64 = 50.0;
/// Client-side bound of every call beyond its deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SQLite may take to give our connection the write lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Pause between two reads of one reader.
const READ_PAUSE: Duration = Duration::from_millis(2);
/// Most read samples one reader keeps.
const MAX_READ_SAMPLES: usize = 1_000_000;
/// Period of the timer that measures this machine's scheduling noise during the stall.
const TICK: Duration = Duration::from_millis(5);
/// Width of the windows of the read-latency chart.
const WINDOW_S: f64 = 0.1;

struct Settings {
    per_deadline: usize,
    readers: usize,
    seed_issues: usize,
    baseline_ms: u64,
    spread_ms: u64,
    after_ms: u64,
    post_creates: usize,
    pipeline_reads: usize,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            per_deadline: 2,
            readers: 2,
            seed_issues: 10,
            baseline_ms: 400,
            spread_ms: 200,
            after_ms: 200,
            post_creates: 4,
            pipeline_reads: 5,
        },
        Profile::Quick => Settings {
            per_deadline: 20,
            readers: 4,
            seed_issues: 50,
            baseline_ms: 2_000,
            spread_ms: 1_000,
            after_ms: 1_000,
            post_creates: 20,
            pipeline_reads: 20,
        },
        Profile::Full => Settings {
            per_deadline: 200,
            readers: 8,
            seed_issues: 200,
            baseline_ms: 5_000,
            spread_ms: 3_000,
            after_ms: 2_000,
            post_creates: 100,
            pipeline_reads: 100,
        },
    }
}

fn max_deadline_ms() -> u64 {
    DEADLINES_MS.iter().copied().max().unwrap_or(1_000)
}

fn overshoot_limit_ms() -> f64 {
    WRITER_BUSY_SLICE.as_secs_f64() * 1e3 + SCHED_ALLOWANCE_MS
}

/// One read of a background reader.
struct ReadSample {
    /// Start, seconds since the run began.
    start_s: f64,
    latency_ms: f64,
    /// The error code, if the read failed.
    error: Option<String>,
}

/// One create sent while the lock was held.
struct StalledWrite {
    deadline_ms: u64,
    title: String,
    answer_ms: f64,
    /// `ok`, an error code, `timeout`, …
    outcome: String,
}

/// The single-connection check: a stalled create followed by reads on the same connection.
#[derive(Default)]
struct Pipeline {
    title: String,
    deadline_ms: u64,
    reads_sent: usize,
    /// Reads answered before the create's answer.
    reads_before_write: usize,
    read_latencies_ms: Vec<f64>,
    write_outcome: String,
    write_answer_ms: f64,
    /// What went wrong on the wire, if anything.
    problem: Option<String>,
}

struct Run {
    lock_at_s: f64,
    release_at_s: f64,
    reads: Vec<ReadSample>,
    stalled: Vec<StalledWrite>,
    pipeline: Pipeline,
    /// (title, outcome) of the creates after the release.
    post: Vec<(String, String)>,
    /// How late a 5 ms timer of this process woke up while the lock was held, ms: the
    /// machine's scheduling noise during the stall.
    timer_late_ms: Vec<f64>,
}

impl Suite for DaemonTimeouts {
    fn name(&self) -> &'static str {
        "daemon-timeouts"
    }

    fn description(&self) -> &'static str {
        "rpc-daemon with SQLite's write lock held by another connection: reads keep being answered, writes with deadline_ms 100/300/1000 are answered deadline_exceeded within 150 ms of it and never applied"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let stall_ms = s.spread_ms + max_deadline_ms() + 300;
        let total_ms = s.baseline_ms + stall_ms + s.after_ms;
        Plan {
            scale: format!(
                "{} stalled creates ({} per deadline of {:?} ms) over a {:.1} s lock, {} readers, {} pipelined reads",
                s.per_deadline * DEADLINES_MS.len(),
                s.per_deadline,
                DEADLINES_MS,
                stall_ms as f64 / 1e3,
                s.readers,
                s.pipeline_reads
            ),
            expected_s: total_ms.div_ceil(1000) + 3,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let clients = s.per_deadline * DEADLINES_MS.len() + s.readers + 32;
        let max_connections = clients.max(256).to_string();
        let (db, mut daemon) =
            start_daemon(ctx, "issues.db", &["--max-connections", &max_connections])?;
        println!(
            "daemon pid {} on {} · {} stalled creates, {} readers",
            daemon.pid(),
            daemon.socket.display(),
            s.per_deadline * DEADLINES_MS.len(),
            s.readers
        );
        let rt = crate::harness::runtime()?;
        let run = rt.block_on(drive(&db, &daemon.socket, &s, ctx.seed))?;
        drop(rt);
        // A graceful stop makes the daemon print its counters, and leaves the file quiet
        // for the title check: a timed-out write committed late would be visible now.
        let (clean_stop, server_stats) = stop_for_counters(&mut daemon);
        let titles = titles_in(&db)?;

        let mut failures = Vec::new();
        let mut doubts = Vec::new();
        let limit = overshoot_limit_ms();

        // Stalled writes: outcome, earliness, overshoot per deadline.
        let mut table = Table::new(
            "Creates sent while SQLite's write lock was held (answer time − deadline, measured on the client)",
            &[
                "deadline ms",
                "sent",
                "deadline_exceeded",
                "other outcomes",
                "early",
                "overshoot p50 ms",
                "overshoot p99 ms",
                "overshoot max ms",
            ],
        );
        let mut all_over = Vec::new();
        let mut curve_lines = Vec::new();
        for d in DEADLINES_MS {
            let of_d: Vec<&StalledWrite> =
                run.stalled.iter().filter(|w| w.deadline_ms == d).collect();
            let exceeded: Vec<&&StalledWrite> = of_d
                .iter()
                .filter(|w| w.outcome == Code::DeadlineExceeded.as_str())
                .collect();
            let mut others: BTreeMap<&str, usize> = BTreeMap::new();
            for w in &of_d {
                if w.outcome != Code::DeadlineExceeded.as_str() {
                    *others.entry(w.outcome.as_str()).or_default() += 1;
                }
            }
            let over: Vec<f64> = exceeded.iter().map(|w| w.answer_ms - d as f64).collect();
            let early = over.iter().filter(|o| **o < 0.0).count();
            let (p50, p99, max) = p50_p99_max(&over);
            table.push_row([
                d.to_string(),
                of_d.len().to_string(),
                exceeded.len().to_string(),
                if others.is_empty() {
                    "none".to_string()
                } else {
                    others
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                early.to_string(),
                format!("{p50:.1}"),
                format!("{p99:.1}"),
                format!("{max:.1}"),
            ]);
            r.metrics
                .push(Metric::new(format!("overshoot_d{d}_p99_ms"), p99, "ms").lower_is_better());
            if !others.is_empty() {
                failures.push(format!(
                    "deadline {d} ms: {} of {} creates sent during the stall were not answered deadline_exceeded ({})",
                    of_d.len() - exceeded.len(),
                    of_d.len(),
                    others
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if early > 0 {
                let worst = over.iter().copied().fold(f64::INFINITY, f64::min);
                failures.push(format!(
                    "deadline {d} ms: {early} creates were answered deadline_exceeded before their deadline (earliest {:.1} ms before it)",
                    -worst
                ));
            }
            let mut sorted = over.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            curve_lines.push(Line {
                name: format!("deadline {d} ms"),
                points: sorted
                    .iter()
                    .enumerate()
                    .map(|(i, o)| [(i + 1) as f64 / n * 100.0, *o])
                    .collect(),
            });
            all_over.extend(over);
        }
        r.tables.push(table);
        curve_lines.push(Line {
            name: format!("margin {limit:.0} ms"),
            points: vec![[0.0, limit], [100.0, limit]],
        });
        r.series.push(Series {
            id: "overshoot".into(),
            title: "How long after its deadline each stalled create was answered (sorted)".into(),
            x_label: "share of creates (%)".into(),
            y_label: "answer time − deadline (ms)".into(),
            lines: curve_lines,
            log_y: false,
        });
        let (o50, o99, omax) = p50_p99_max(&all_over);
        r.metrics
            .push(Metric::new("stalled_creates", run.stalled.len() as f64, ""));
        r.metrics
            .push(Metric::new("overshoot_p50_ms", o50, "ms").lower_is_better());
        r.metrics.push(
            Metric::new("overshoot_p99_ms", o99, "ms")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("overshoot_max_ms", omax, "ms").lower_is_better());
        r.metrics
            .push(Metric::new("overshoot_limit_ms", limit, "ms"));
        let late_max = quantile(&run.timer_late_ms, 1.0);
        r.metrics
            .push(Metric::new("timer_late_max_during_stall_ms", late_max, "ms").lower_is_better());
        if all_over.is_empty() {
            failures.push("no stalled create was answered deadline_exceeded".into());
        } else if omax > limit {
            let why = format!(
                "a stalled create was answered {omax:.1} ms after its deadline > margin {limit:.0} ms (busy slice {} ms + {SCHED_ALLOWANCE_MS:.0} ms); p99 {o99:.1} ms",
                WRITER_BUSY_SLICE.as_millis()
            );
            // Only the machine can excuse it: if a timer of this process was itself late by
            // enough to explain the excess, the run could not decide.
            if omax - late_max <= limit {
                doubts.push(format!(
                    "{why}, but this machine's scheduler was late by up to {late_max:.1} ms during the stall (a {} ms timer): rerun on a quieter machine",
                    TICK.as_millis()
                ));
            } else {
                failures.push(why);
            }
        }
        let slice_ms = ms(WRITER_BUSY_SLICE);
        let past_slice = all_over.iter().filter(|o| **o > slice_ms + 10.0).count();
        if !all_over.is_empty() {
            r.findings.push(format!(
                "Overshoot p50 {o50:.1} ms, p99 {o99:.1} ms, max {omax:.1} ms over {} answers; {past_slice} were more than the busy slice + 10 ms ({:.0} ms) late. A claimed write is answered after the writer's current attempt at SQLite's lock, which lasts up to one {slice_ms:.0} ms slice, so overshoots spread over 0–{slice_ms:.0} ms are the design, not noise.",
                all_over.len(),
                slice_ms + 10.0
            ));
        }

        // Reads before, during and after the stall.
        let phase = |s: &ReadSample| {
            if s.start_s < run.lock_at_s {
                0
            } else if s.start_s < run.release_at_s {
                1
            } else {
                2
            }
        };
        let lat = |p: usize| -> Vec<f64> {
            run.reads
                .iter()
                .filter(|s| phase(s) == p && s.error.is_none())
                .map(|s| s.latency_ms)
                .collect()
        };
        let (before, during, after) = (lat(0), lat(1), lat(2));
        let mut read_errors: BTreeMap<String, usize> = BTreeMap::new();
        for s in &run.reads {
            if let Some(e) = &s.error {
                *read_errors.entry(e.clone()).or_default() += 1;
            }
        }
        let mut reads_table = Table::new(
            "Reads of other clients (show/list/ready/stats, closed loop) around the stall",
            &["phase", "reads", "p50 ms", "p99 ms", "max ms"],
        );
        for (name, v) in [
            ("before", &before),
            ("during the stall", &during),
            ("after", &after),
        ] {
            let [p50, p99, max] = quantile_cells(v);
            reads_table.push_row([name.to_string(), v.len().to_string(), p50, p99, max]);
        }
        r.tables.push(reads_table);
        let (p99_before, p99_during) = (quantile(&before, 0.99), quantile(&during, 0.99));
        let read_limit = (p99_before * READ_FACTOR).max(READ_FLOOR_MS);
        r.metrics
            .push(Metric::new("read_p99_before_ms", p99_before, "ms").lower_is_better());
        r.metrics.push(
            Metric::new("read_p99_during_stall_ms", p99_during, "ms")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("read_p99_after_ms", quantile(&after, 0.99), "ms").lower_is_better());
        r.metrics
            .push(Metric::new("reads_during_stall", during.len() as f64, ""));
        let errors: usize = read_errors.values().sum();
        r.metrics
            .push(Metric::new("read_errors", errors as f64, ""));
        if errors > 0 {
            failures.push(format!(
                "{errors} reads of other clients failed ({read_errors:?}): reads must keep being answered"
            ));
        }
        if during.is_empty() {
            doubts.push(
                "no read of another client completed during the stall: nothing to compare".into(),
            );
        } else if p99_during > read_limit {
            failures.push(format!(
                "reads during the stall: p99 {p99_during:.1} ms > {read_limit:.1} ms (max of {READ_FACTOR} × p99 before = {:.1} ms and {READ_FLOOR_MS} ms): the stalled writer slows other clients down",
                p99_before * READ_FACTOR
            ));
        }
        r.series.push(Series {
            id: "reads".into(),
            title: format!(
                "Slowest read of other clients per {:.0} ms (SQLite's write lock held from {:.1} s to {:.1} s)",
                WINDOW_S * 1e3,
                run.lock_at_s,
                run.release_at_s
            ),
            x_label: "time since the readers started (s)".into(),
            y_label: "read latency, max per window (ms)".into(),
            lines: vec![Line {
                name: "reads".into(),
                points: slowest_per_window(run.reads.iter().map(|s| (s.start_s, s.latency_ms)), WINDOW_S),
            }],
            log_y: false,
        });

        // The pipeline on one connection.
        let p = &run.pipeline;
        let pipe_max = quantile(&p.read_latencies_ms, 1.0);
        r.metrics
            .push(Metric::new("pipeline_read_max_ms", pipe_max, "ms").lower_is_better());
        r.metrics.push(Metric::new(
            "pipeline_write_answer_ms",
            p.write_answer_ms,
            "ms",
        ));
        let mut pipe_table = Table::new(
            "One connection: a create stalled behind the lock, then reads on the same connection",
            &["what", "value"],
        );
        pipe_table.push_row(["create deadline ms".to_string(), p.deadline_ms.to_string()]);
        pipe_table.push_row([
            "create answered".to_string(),
            format!("{} after {:.1} ms", p.write_outcome, p.write_answer_ms),
        ]);
        pipe_table.push_row(["reads sent behind it".to_string(), p.reads_sent.to_string()]);
        pipe_table.push_row([
            "reads answered before the create".to_string(),
            p.reads_before_write.to_string(),
        ]);
        pipe_table.push_row([
            "read latency p50 / max ms".to_string(),
            format!("{:.2} / {pipe_max:.2}", quantile(&p.read_latencies_ms, 0.5)),
        ]);
        r.tables.push(pipe_table);
        if let Some(problem) = &p.problem {
            failures.push(format!("pipeline on one connection: {problem}"));
        }
        if p.reads_before_write < p.reads_sent {
            failures.push(format!(
                "pipeline on one connection: only {} of {} reads were answered before the stalled create on the same connection",
                p.reads_before_write, p.reads_sent
            ));
        }
        if p.write_outcome != Code::DeadlineExceeded.as_str() {
            failures.push(format!(
                "pipeline on one connection: the stalled create was answered {} (expected deadline_exceeded)",
                p.write_outcome
            ));
        }

        // After the release: new creates succeed, nothing timed out was applied.
        let post_ok = run.post.iter().filter(|(_, o)| o == "ok").count();
        r.metrics
            .push(Metric::new("post_release_creates_ok", post_ok as f64, ""));
        if post_ok < run.post.len() {
            failures.push(format!(
                "after the release only {post_ok} of {} new creates succeeded ({:?})",
                run.post.len(),
                run.post
                    .iter()
                    .filter(|(_, o)| o != "ok")
                    .map(|(_, o)| o)
                    .collect::<Vec<_>>()
            ));
        }
        let missing = run
            .post
            .iter()
            .filter(|(t, o)| o == "ok" && !titles.contains(t))
            .count();
        if missing > 0 {
            failures.push(format!(
                "{missing} acknowledged creates after the release are not in the database"
            ));
        }
        let mut timed_out: Vec<&str> = run
            .stalled
            .iter()
            .filter(|w| w.outcome == Code::DeadlineExceeded.as_str())
            .map(|w| w.title.as_str())
            .collect();
        if p.write_outcome == Code::DeadlineExceeded.as_str() {
            timed_out.push(&p.title);
        }
        let applied: Vec<&str> = timed_out
            .iter()
            .copied()
            .filter(|t| titles.contains(*t))
            .collect();
        r.metrics.push(
            Metric::new("timed_out_writes_applied", applied.len() as f64, "")
                .lower_is_better()
                .headline(),
        );
        if !applied.is_empty() {
            failures.push(format!(
                "{} of {} creates answered deadline_exceeded are in the database (e.g. {:?}): deadline_exceeded must mean not applied",
                applied.len(),
                timed_out.len(),
                &applied[..applied.len().min(3)]
            ));
        }

        match server_stats {
            Some(st) => {
                r.metrics.push(Metric::new(
                    "daemon_deadline_exceeded",
                    st.deadline_exceeded as f64,
                    "",
                ));
                if st.deadline_exceeded != timed_out.len() as u64 {
                    r.findings.push(format!(
                        "the daemon counted {} deadline_exceeded answers; the clients received {}",
                        st.deadline_exceeded,
                        timed_out.len()
                    ));
                }
            }
            None => r.findings.push(counters_missing(&daemon.log, clean_stop)),
        }
        note_unclean_stop(&mut r, clean_stop);

        r.headline = format!(
            "{} creates stalled behind SQLite's lock all answered deadline_exceeded {o50:.0}/{o99:.0}/{omax:.0} ms (p50/p99/max) past their deadline (margin {limit:.0}); reads p99 {p99_before:.1} → {p99_during:.1} ms during the stall; {} applied",
            run.stalled.len(),
            applied.len()
        );
        r.config
            .insert("deadlines_ms".into(), serde_json::json!(DEADLINES_MS));
        r.config
            .insert("creates_per_deadline".into(), s.per_deadline.into());
        r.config.insert("readers".into(), s.readers.into());
        r.config
            .insert("stall_s".into(), (run.release_at_s - run.lock_at_s).into());
        r.config.insert("send_spread_ms".into(), s.spread_ms.into());
        r.config
            .insert("writer_busy_slice_ms".into(), slice_ms.into());
        r.config.insert("overshoot_limit_ms".into(), limit.into());
        r.config.insert(
            "seed_use".into(),
            "send offsets of the stalled creates, the readers' operation mix".into(),
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}

/// Every title in the database, read with a plain SQLite connection.
fn titles_in(db: &Path) -> Result<BTreeSet<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {} read-only", db.display()))?;
    conn.busy_timeout(LOCK_WAIT)?;
    let mut stmt = conn.prepare("SELECT title FROM issues")?;
    let titles = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<BTreeSet<_>>>()?;
    Ok(titles)
}

/// Holds SQLite's write lock on `db` from another connection until told to release it (or
/// `bound` passed, or the sender is gone), then rolls back.
fn hold_write_lock(
    db: PathBuf,
    locked: tokio::sync::oneshot::Sender<Result<(), String>>,
    release: std::sync::mpsc::Receiver<()>,
    bound: Duration,
) {
    let lock = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&db)?;
        conn.busy_timeout(LOCK_WAIT)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(conn)
    };
    let conn = match lock() {
        Ok(c) => c,
        Err(e) => {
            let _ = locked.send(Err(format!(
                "taking SQLite's write lock on {}: {e}",
                db.display()
            )));
            return;
        }
    };
    let _ = locked.send(Ok(()));
    let _ = release.recv_timeout(bound);
    let _ = conn.execute_batch("ROLLBACK");
}

async fn drive(db: &Path, socket: &Path, s: &Settings, seed: u64) -> Result<Run> {
    let t0 = Instant::now();
    let since = move |t: Instant| t.duration_since(t0).as_secs_f64();

    // Something to read.
    let mut seeder = daemon_client(db, CALL_TIMEOUT).await?;
    for i in 0..s.seed_issues {
        seeder
            .create(CreateArgs {
                title: format!("seed-{seed}-{i}"),
                ..CreateArgs::default()
            })
            .await
            .with_context(|| format!("seeding issue {i}"))?;
    }
    drop(seeder);

    // Readers run from now until after the release.
    let stop = Arc::new(AtomicBool::new(false));
    let read_bound =
        Duration::from_millis(s.baseline_ms + s.spread_ms + s.after_ms + max_deadline_ms())
            + CALL_TIMEOUT * 4;
    let mut readers = Vec::new();
    for r in 0..s.readers {
        let mut client = daemon_client(db, CALL_TIMEOUT).await?;
        let mut rng = fastrand::Rng::with_seed(derive(seed, 0x7EAD_0000 + r as u64));
        let stop = Arc::clone(&stop);
        let issues = s.seed_issues.max(1);
        readers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let until = Instant::now() + read_bound;
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < until
                && out.len() < MAX_READ_SAMPLES
            {
                let op = match rng.u8(0..4) {
                    0 => Op::Show {
                        id: format!("hl-{}", rng.usize(1..=issues)),
                    },
                    1 => Op::List(ListArgs {
                        limit: Some(20),
                        ..ListArgs::default()
                    }),
                    2 => Op::Ready { limit: Some(10) },
                    _ => Op::Stats {},
                };
                let started = Instant::now();
                let res = client.call(op).await;
                out.push(ReadSample {
                    start_s: since(started),
                    latency_ms: ms(started.elapsed()),
                    error: res.err().map(|e| e.code().to_string()),
                });
                tokio::time::sleep(READ_PAUSE).await;
            }
            out
        }));
    }

    // Connect the stalled writers before the stall (one client each: the Rust client is
    // one call at a time).
    let mut rng = fastrand::Rng::with_seed(derive(seed, 0x7E1E));
    let mut writers = Vec::new();
    for i in 0..s.per_deadline * DEADLINES_MS.len() {
        let d = DEADLINES_MS[i % DEADLINES_MS.len()];
        let cfg = ClientConfig {
            deadline: Some(Duration::from_millis(d)),
            ..daemon_config(db, Duration::from_millis(d) + CALL_TIMEOUT)
        };
        let client = Client::connect(cfg)
            .await
            .with_context(|| format!("connecting stalled writer {i}"))?;
        let offset = Duration::from_millis(rng.u64(0..s.spread_ms.max(1)));
        writers.push((client, d, format!("stalled-{seed}-{i}"), offset));
    }

    tokio::time::sleep(Duration::from_millis(s.baseline_ms)).await;

    // Take the lock.
    let stall_bound = Duration::from_millis(s.spread_ms + max_deadline_ms()) + CALL_TIMEOUT * 3;
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let db = db.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-lock-holder".into())
            .spawn(move || hold_write_lock(db, locked_tx, release_rx, stall_bound))
            .context("starting the lock holder thread")?
    };
    let locked = tokio::time::timeout(LOCK_WAIT + Duration::from_secs(2), locked_rx).await;
    match locked {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("{e}"),
        Ok(Err(_)) => bail!("the lock holder thread ended without a word"),
        Err(_) => bail!("SQLite's write lock was not taken within {LOCK_WAIT:?}"),
    }
    let lock_at = Instant::now();
    let ticking = Arc::new(AtomicBool::new(true));
    let ticker = {
        let ticking = Arc::clone(&ticking);
        tokio::spawn(async move {
            let mut late = Vec::new();
            let until = Instant::now() + stall_bound;
            while ticking.load(Ordering::Relaxed) && Instant::now() < until {
                let t = Instant::now();
                tokio::time::sleep(TICK).await;
                late.push(ms(t.elapsed().saturating_sub(TICK)));
            }
            late
        })
    };
    println!(
        "write lock held by another connection at {:.2} s",
        since(lock_at)
    );

    let mut stalled = Vec::new();
    for (mut client, d, title, offset) in writers {
        stalled.push(tokio::spawn(async move {
            tokio::time::sleep_until((lock_at + offset).into()).await;
            let started = Instant::now();
            let res = client
                .create(CreateArgs {
                    title: title.clone(),
                    ..CreateArgs::default()
                })
                .await;
            StalledWrite {
                deadline_ms: d,
                title,
                answer_ms: ms(started.elapsed()),
                outcome: match res {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.code().to_string(),
                },
            }
        }));
    }
    let pipeline = {
        let db = db.to_path_buf();
        let socket = socket.to_path_buf();
        let reads = s.pipeline_reads;
        let title = format!("pipeline-{seed}");
        let at = lock_at + Duration::from_millis(s.spread_ms / 2);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            pipeline_check(&db, &socket, title, max_deadline_ms(), reads).await
        })
    };
    let mut writes = Vec::new();
    for h in stalled {
        writes.push(h.await.context("a stalled writer task panicked")?);
    }
    let pipeline = pipeline.await.context("the pipeline task panicked")?;
    ticking.store(false, Ordering::Relaxed);
    let timer_late_ms = ticker.await.context("the timer task panicked")?;

    // Release the lock and wait until it is really released.
    let _ = release_tx.send(());
    tokio::task::spawn_blocking(move || holder.join())
        .await
        .context("joining the lock holder")?
        .map_err(|_| anyhow!("the lock holder thread panicked"))?;
    let release_at = Instant::now();
    println!(
        "write lock released at {:.2} s after {:.2} s",
        since(release_at),
        release_at.duration_since(lock_at).as_secs_f64()
    );

    // New creates succeed.
    let mut post = Vec::new();
    let mut posters = Vec::new();
    let per = s.post_creates.div_ceil(4);
    for c in 0..4 {
        let db = db.to_path_buf();
        let titles: Vec<String> = (0..per)
            .map(|i| c * per + i)
            .filter(|i| *i < s.post_creates)
            .map(|i| format!("after-{seed}-{i}"))
            .collect();
        posters.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut client = match daemon_client(&db, CALL_TIMEOUT).await {
                Ok(c) => c,
                Err(e) => {
                    return titles
                        .into_iter()
                        .map(|t| (t, format!("connect: {e:#}")))
                        .collect();
                }
            };
            for t in titles {
                let res = client
                    .create(CreateArgs {
                        title: t.clone(),
                        ..CreateArgs::default()
                    })
                    .await;
                out.push((
                    t,
                    match res {
                        Ok(_) => "ok".to_string(),
                        Err(e) => e.code().to_string(),
                    },
                ));
            }
            out
        }));
    }
    for h in posters {
        post.extend(h.await.context("a post-release writer task panicked")?);
    }

    let remaining = Duration::from_millis(s.after_ms).saturating_sub(release_at.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = Vec::new();
    for h in readers {
        reads.extend(h.await.context("a reader task panicked")?);
    }
    Ok(Run {
        lock_at_s: since(lock_at),
        release_at_s: since(release_at),
        reads,
        stalled: writes,
        pipeline,
        post,
        timer_late_ms,
    })
}

/// On one raw connection: a create with `deadline_ms` (stalled behind the lock), then
/// `reads` `stats` requests one after the other, each answered while the create waits.
async fn pipeline_check(
    db: &Path,
    socket: &Path,
    title: String,
    deadline_ms: u64,
    reads: usize,
) -> Pipeline {
    let mut p = Pipeline {
        title,
        deadline_ms,
        reads_sent: reads,
        write_outcome: "no answer".into(),
        ..Pipeline::default()
    };
    let bound = Duration::from_millis(deadline_ms) + CALL_TIMEOUT;
    match tokio::time::timeout(bound, pipeline_exchange(db, socket, &mut p, reads)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => p.problem = Some(format!("{e:#}")),
        Err(_) => p.problem = Some(format!("no end within {bound:?}")),
    }
    p
}

async fn send(stream: &mut UnixStream, value: &impl serde::Serialize) -> Result<()> {
    let body = serde_json::to_vec(value)?;
    write_frame(stream, &body).await?;
    Ok(())
}

async fn recv(stream: &mut UnixStream) -> Result<Vec<u8>> {
    read_frame(stream, MAX_FRAME_BYTES)
        .await?
        .ok_or_else(|| anyhow!("the daemon closed the connection"))
}

async fn pipeline_exchange(db: &Path, socket: &Path, p: &mut Pipeline, reads: usize) -> Result<()> {
    let canonical = rpc_daemon::store::canonical_db_path(db).map_err(|e| anyhow!("{e}"))?;
    let mut stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    send(
        &mut stream,
        &HelloFrame {
            hello: Hello {
                protocol: PROTOCOL_VERSION,
                db: canonical.to_string_lossy().into_owned(),
                client: Some("daemon-timeouts/pipeline".into()),
            },
        },
    )
    .await?;
    let welcome: WelcomeFrame = serde_json::from_slice(&recv(&mut stream).await?)?;
    if let Some(e) = welcome.error {
        bail!("the hello was refused: {e}");
    }
    let started = Instant::now();
    send(
        &mut stream,
        &Request {
            id: 1,
            deadline_ms: Some(p.deadline_ms),
            body: Op::Create(CreateArgs {
                title: p.title.clone(),
                ..CreateArgs::default()
            }),
        },
    )
    .await?;
    let mut write_answered = false;
    let take_write = |resp: Response, p: &mut Pipeline| {
        p.write_answer_ms = ms(started.elapsed());
        p.write_outcome = match resp.into_result() {
            Ok(_) => "ok".into(),
            Err(e) => e.code.as_str().into(),
        };
    };
    for i in 0..reads {
        let id = i as u64 + 2;
        let sent = Instant::now();
        send(
            &mut stream,
            &Request {
                id,
                deadline_ms: None,
                body: Op::Stats {},
            },
        )
        .await?;
        loop {
            let resp: Response = serde_json::from_slice(&recv(&mut stream).await?)?;
            match resp.id {
                Some(1) => {
                    take_write(resp, p);
                    write_answered = true;
                }
                Some(x) if x == id => {
                    if let Err(e) = resp.into_result() {
                        bail!("read {id} was answered {e}");
                    }
                    p.read_latencies_ms.push(ms(sent.elapsed()));
                    if !write_answered {
                        p.reads_before_write += 1;
                    }
                    break;
                }
                other => bail!("unexpected response id {other:?} (waiting for {id})"),
            }
        }
    }
    if !write_answered {
        let resp: Response = serde_json::from_slice(&recv(&mut stream).await?)?;
        if resp.id != Some(1) {
            bail!("unexpected response id {:?} (waiting for 1)", resp.id);
        }
        take_write(resp, p);
    }
    Ok(())
}
