//! Suite `daemon-crash`: "acknowledged" always means committed, through `kill -9`.
//!
//! The daemon runs as its own OS process with the default durability (`synchronous=NORMAL`:
//! a commit is in the WAL, in the OS page cache, before it is acknowledged; a process kill
//! does not lose the page cache, so a committed write must survive it). Agents (tokio tasks
//! of this process, each with its own daemon connection) create issues without pause, some
//! one by one and some in batches of K creates sharing a unique label, while the suite
//! `kill -9`s the daemon at seeded instants and restarts it on the same file. The agents
//! are never killed: after each kill they reconnect and go on. After the last kill the
//! load stops, the daemon is killed once more (so the file is read exactly as a crash
//! leaves it) and every issue is read back from the file in direct mode.
//!
//! What it proves, as a Jepsen-style set tally over the create titles (all unique):
//! - **lost** = acknowledged but absent: must be 0 (an acknowledgement sent before the
//!   commit was durable would show up here);
//! - **unexpected** = present but never attempted, or present twice: must be 0;
//! - **recovered** = present but never acknowledged (the reply was lost in the kill): allowed;
//! - every acknowledged create is present with the id it was acknowledged with, and no id
//!   was acknowledged to two different creates (ids are never reused across restarts);
//! - no batch is partial: 0 or K of its issues are present (an acknowledged batch: K);
//! - a create refused with a definite error reply is absent (`PROTOCOL.md` §7).
//!
//! It also reports kills, restart time (kill to the daemon answering a ping again), the
//! creates acknowledged, and a chart of acknowledged creates over time with the kills marked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use rpc_daemon::client::{Client, ClientError};
use rpc_daemon::error::Code;
use rpc_daemon::model::{CreateArgs, ListArgs, Op, Reply};

use crate::daemon_harness::{daemon_client, direct_client};
use crate::harness::new_result;
use crate::harness::seed::{splitmix64, Rng};
use crate::suites::daemon::common::{id_num, start_daemon};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct DaemonCrash;

/// Client-side bound on every call of an agent.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two reconnect attempts while the daemon is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// An agent that cannot reconnect for this long gives up (the run is then inconclusive).
const RECONNECT_BOUND: Duration = Duration::from_secs(30);
/// Most calls per second of one creating agent between bursts: with the batching agents, at
/// most about 4,000 creates/s, so the full profile's file and tallies stay in the hundreds
/// of thousands.
const CREATOR_CALLS_PER_S: f64 = 500.0;
/// Most batches per second of one batching agent.
const BATCHER_CALLS_PER_S: f64 = 100.0;
/// Before each kill the agents drop their rate cap for this long: the kill then lands on a
/// daemon busy with group commits and requests in flight on every connection (a capped agent
/// is idle most of the time, and a kill of an idle daemon tests little).
const BURST: Duration = Duration::from_millis(150);
/// Bucket of the acknowledged-creates chart.
const CHART_BUCKET_S: f64 = 0.1;

struct Settings {
    kills: usize,
    /// The daemon's uptime before each kill is drawn from this range, ms.
    uptime_ms: (u64, u64),
    /// Agents creating one issue per call.
    creators: usize,
    /// Agents creating batches.
    batchers: usize,
    /// Batch size K is drawn from this range.
    batch_k: (u64, u64),
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            kills: 2,
            uptime_ms: (300, 600),
            creators: 4,
            batchers: 1,
            batch_k: (2, 6),
        },
        Profile::Quick => Settings {
            kills: 5,
            uptime_ms: (400, 1200),
            creators: 6,
            batchers: 2,
            batch_k: (2, 8),
        },
        Profile::Full => Settings {
            kills: 50,
            uptime_ms: (400, 1500),
            creators: 6,
            batchers: 2,
            batch_k: (2, 8),
        },
    }
}

/// One batch an agent sent.
struct BatchRec {
    label: String,
    k: u64,
    acked: bool,
}

/// Everything one agent did, returned when it stops.
#[derive(Default)]
struct AgentLog {
    /// Titles of every create sent (or about to be sent).
    attempted: Vec<String>,
    /// `(title, id, t_s)` of acknowledged creates.
    acked: Vec<(String, String, f64)>,
    /// Titles whose request got a definite error (an API error reply, or no connection):
    /// nothing of them may be present.
    refused: Vec<String>,
    /// Times of requests without a definite answer (the connection broke after sending).
    in_doubt_at: Vec<f64>,
    /// Errors by code.
    errors: BTreeMap<String, u64>,
    batches: Vec<BatchRec>,
    /// Reconnect attempts that failed (the daemon was down).
    connect_failures: u64,
    /// Replies that do not match the request.
    anomalies: Vec<String>,
    /// Why the agent stopped early, if it did.
    gave_up: Option<String>,
}

/// Whether a failed call may have been applied.
fn in_doubt(e: &ClientError) -> bool {
    match e.api_code() {
        // §7: an `internal` error may mean "whether the write was applied is unknown".
        Some(Code::Internal) => true,
        Some(_) => false,
        // Connect: the request was never sent. Timeout, io, protocol: it may have been.
        None => e.code() != "connect",
    }
}

struct AgentSpec {
    db: PathBuf,
    prefix: String,
    batch_k: Option<(u64, u64)>,
    seed: u64,
    stop: Arc<AtomicBool>,
    burst: Arc<AtomicBool>,
    origin: Instant,
    hard_deadline: Instant,
}

/// Reconnects until it works, the run stops, or [`RECONNECT_BOUND`] passes.
async fn reconnect(spec: &AgentSpec, log: &mut AgentLog) -> Option<Client> {
    let since = Instant::now();
    while !spec.stop.load(Ordering::Relaxed) && Instant::now() < spec.hard_deadline {
        match daemon_client(&spec.db, CALL_TIMEOUT).await {
            Ok(c) => return Some(c),
            Err(_) => log.connect_failures += 1,
        }
        if since.elapsed() > RECONNECT_BOUND {
            log.gave_up = Some(format!(
                "{}: no connection to the daemon for {RECONNECT_BOUND:?}",
                spec.prefix
            ));
            return None;
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    None
}

/// One agent: creates (one by one, or in batches when `batch_k` is set) until stopped.
async fn agent(spec: AgentSpec) -> AgentLog {
    let mut log = AgentLog::default();
    let mut rng = Rng::unsalted(spec.seed, 0xBA7C);
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    let period = Duration::from_secs_f64(
        1.0 / if spec.batch_k.is_some() {
            BATCHER_CALLS_PER_S
        } else {
            CREATOR_CALLS_PER_S
        },
    );
    let mut next = tokio::time::Instant::now();
    while !spec.stop.load(Ordering::Relaxed) && Instant::now() < spec.hard_deadline {
        // A rate cap, not a schedule: no catching up after a kill; none during a burst.
        if !spec.burst.load(Ordering::Relaxed) {
            tokio::time::sleep_until(next).await;
        }
        next = tokio::time::Instant::now() + period;
        let c = match client.as_mut() {
            Some(c) => c,
            None => match reconnect(&spec, &mut log).await {
                Some(c) => client.insert(c),
                None => break,
            },
        };
        let (titles, label, result) = match spec.batch_k {
            None => {
                let title = format!("{}-{n}", spec.prefix);
                log.attempted.push(title.clone());
                let r = c
                    .create(CreateArgs {
                        title: title.clone(),
                        ..CreateArgs::default()
                    })
                    .await
                    .map(|issue| vec![issue]);
                (vec![title], None, r)
            }
            Some((lo, hi)) => {
                let k = rng.range(lo, hi);
                let label = format!("{}-{n}", spec.prefix);
                let titles: Vec<String> = (0..k).map(|i| format!("{label}-{i}")).collect();
                log.attempted.extend(titles.iter().cloned());
                log.batches.push(BatchRec {
                    label: label.clone(),
                    k,
                    acked: false,
                });
                let ops = titles
                    .iter()
                    .map(|t| {
                        Op::Create(CreateArgs {
                            title: t.clone(),
                            labels: vec![label.clone()],
                            ..CreateArgs::default()
                        })
                    })
                    .collect();
                let r = c.batch(ops).await.map(|replies| {
                    replies
                        .into_iter()
                        .filter_map(|r| match r {
                            Reply::Issue { issue } => Some(issue),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                });
                (titles, Some(label), r)
            }
        };
        n += 1;
        let t = spec.origin.elapsed().as_secs_f64();
        match result {
            Ok(issues) => {
                if issues.len() != titles.len()
                    || issues.iter().zip(&titles).any(|(i, t)| i.title != *t)
                {
                    log.anomalies.push(format!(
                        "the reply to {} carries {} issues ({:?}…), expected {} with titles {:?}…",
                        label
                            .as_deref()
                            .or(titles.first().map(String::as_str))
                            .unwrap_or("?"),
                        issues.len(),
                        issues.first().map(|i| &i.title),
                        titles.len(),
                        titles.first()
                    ));
                    continue;
                }
                for issue in issues {
                    log.acked.push((issue.title, issue.id, t));
                }
                if let Some(b) = log.batches.last_mut().filter(|_| label.is_some()) {
                    b.acked = true;
                }
            }
            Err(e) => {
                *log.errors.entry(e.code().to_string()).or_default() += 1;
                if in_doubt(&e) {
                    log.in_doubt_at.push(t);
                } else {
                    log.refused.extend(titles);
                }
                if e.api_code().is_none() {
                    client = None; // the connection is gone or in doubt: reconnect
                }
            }
        }
    }
    log
}

/// What the file holds after the last kill.
#[derive(Default)]
struct Present {
    /// Title → ids of the issues with that title.
    by_title: HashMap<String, Vec<String>>,
    /// Label → issues carrying it.
    by_label: HashMap<String, u64>,
    /// Issues found.
    issues: u64,
    /// `stats.issues`.
    stats_issues: u64,
    /// The highest id number.
    max_n: u64,
    /// Numbers in `1..=max_n` with no issue.
    gaps: u64,
    /// Seconds the read took.
    read_s: f64,
}

/// Reads every issue of `db` in direct mode (the daemon must be down): `show` of every id
/// from `hl-1` to the highest, which `list` returns first. `max_scan` bounds the scan.
async fn read_all(db: &Path, max_scan: u64) -> Result<Present> {
    let started = Instant::now();
    let mut c = direct_client(db).await?;
    let mut p = Present {
        stats_issues: c.stats().await.context("stats")?.issues,
        ..Present::default()
    };
    let newest = c
        .list(ListArgs {
            limit: Some(1),
            ..ListArgs::default()
        })
        .await
        .context("listing the newest issue")?;
    if let Some(issue) = newest.first() {
        p.max_n =
            id_num(&issue.id).with_context(|| format!("issue id {:?} is not hl-N", issue.id))?;
    }
    if p.max_n > max_scan {
        bail!(
            "the highest id is hl-{}, above the {max_scan} creates that could have made it: ids were skipped or invented",
            p.max_n
        );
    }
    for n in 1..=p.max_n {
        match c.show(format!("hl-{n}")).await {
            Ok((issue, _)) => {
                p.issues += 1;
                for l in &issue.labels {
                    *p.by_label.entry(l.clone()).or_default() += 1;
                }
                p.by_title.entry(issue.title).or_default().push(issue.id);
            }
            Err(e) if e.api_code() == Some(Code::NotFound) => p.gaps += 1,
            Err(e) => return Err(e).with_context(|| format!("reading hl-{n}")),
        }
    }
    p.read_s = started.elapsed().as_secs_f64();
    Ok(p)
}

/// One kill: when, and how long until the daemon answered again.
struct Kill {
    at_s: f64,
    uptime_ms: u64,
    restart_ms: Option<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn some_of(items: &[String], n: usize) -> String {
    let shown: Vec<&str> = items.iter().take(n).map(String::as_str).collect();
    if items.len() > n {
        format!("{}, … ({} in all)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

impl Suite for DaemonCrash {
    fn name(&self) -> &'static str {
        "daemon-crash"
    }

    fn description(&self) -> &'static str {
        "kill -9 the daemon repeatedly under create load and restart it: every acknowledged create present once, no partial batch, no id reused"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let mean_up_s = (s.uptime_ms.0 + s.uptime_ms.1) as f64 / 2000.0;
        // Each cycle: the uptime plus a restart (~0.2 s); then a tail, the read-back and setup.
        let load_s = (s.kills as f64 + 1.0) * (mean_up_s + 0.2);
        let read_s = load_s * 0.3;
        Plan {
            scale: format!(
                "{} kills, uptime {}-{} ms each, {} creating + {} batching agents (K {}-{})",
                s.kills,
                s.uptime_ms.0,
                s.uptime_ms.1,
                s.creators,
                s.batchers,
                s.batch_k.0,
                s.batch_k.1
            ),
            expected_s: (load_s + read_s + 2.0).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let plan = self.plan(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures: Vec<String> = Vec::new();
        let mut doubts: Vec<String> = Vec::new();
        let mut rng = Rng::unsalted(ctx.seed, 0xC2A5);

        let (db, mut daemon) = start_daemon(ctx, "crash.db", &[])?;
        let rt = crate::harness::runtime()?;
        let stop = Arc::new(AtomicBool::new(false));
        let burst = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let hard_deadline = origin + Duration::from_secs(plan.expected_s * 3 + 120);
        let tag = format!("s{:x}", ctx.seed);
        let mut handles = Vec::new();
        for a in 0..s.creators + s.batchers {
            let batching = a >= s.creators;
            let spec = AgentSpec {
                db: db.clone(),
                prefix: if batching {
                    format!("{tag}-b{a}")
                } else {
                    format!("{tag}-c{a}")
                },
                batch_k: batching.then_some(s.batch_k),
                seed: splitmix64(ctx.seed ^ a as u64),
                stop: stop.clone(),
                burst: burst.clone(),
                origin,
                hard_deadline,
            };
            handles.push(rt.spawn(agent(spec)));
        }

        // The kills, from this (non-runtime) thread: the agents run on the runtime's workers.
        let mut kills: Vec<Kill> = Vec::new();
        for k in 0..s.kills {
            let uptime_ms = rng.range(s.uptime_ms.0, s.uptime_ms.1);
            let uptime = Duration::from_millis(uptime_ms);
            std::thread::sleep(uptime.saturating_sub(BURST));
            burst.store(true, Ordering::Relaxed);
            std::thread::sleep(uptime.min(BURST));
            let at_s = origin.elapsed().as_secs_f64();
            daemon.kill9();
            let killed = Instant::now();
            let restart = daemon.restart();
            let restart_ms = killed.elapsed().as_secs_f64() * 1e3;
            burst.store(false, Ordering::Relaxed);
            println!(
                "kill {}/{} at {at_s:.2} s: restart {}",
                k + 1,
                s.kills,
                match &restart {
                    Ok(()) => format!("{restart_ms:.0} ms"),
                    Err(e) => format!("failed: {e:#}"),
                }
            );
            kills.push(Kill {
                at_s,
                uptime_ms,
                restart_ms: restart.is_ok().then_some(restart_ms),
            });
            if let Err(e) = restart {
                failures.push(format!(
                    "after kill {} the daemon did not come back: {e:#}",
                    k + 1
                ));
                break;
            }
        }
        if failures.is_empty() {
            // A last uptime with load, so the final restart is exercised too.
            std::thread::sleep(Duration::from_millis(
                rng.range(s.uptime_ms.0, s.uptime_ms.1),
            ));
        }
        stop.store(true, Ordering::Relaxed);
        let load_s = origin.elapsed().as_secs_f64();
        let logs: Vec<AgentLog> = rt.block_on(async {
            let bound = CALL_TIMEOUT + RECONNECT_PAUSE + Duration::from_secs(5);
            let mut logs = Vec::new();
            for h in handles {
                match tokio::time::timeout(bound, h).await {
                    Ok(Ok(log)) => logs.push(log),
                    Ok(Err(e)) => bail!("an agent task failed: {e}"),
                    Err(_) => bail!("an agent did not stop within {bound:?} of the end"),
                }
            }
            Ok(logs)
        })?;
        // A final kill: the file is read exactly as a crash leaves it.
        daemon.kill9();
        let attempted_total: u64 = logs.iter().map(|l| l.attempted.len() as u64).sum();
        let present = rt.block_on(read_all(&db, attempted_total + 1));
        drop(daemon);

        // ---- the tally -------------------------------------------------------------
        let mut attempted: HashSet<&str> = HashSet::new();
        let mut acked: HashMap<&str, &str> = HashMap::new();
        let mut acked_ids: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut refused: HashSet<&str> = HashSet::new();
        let mut ack_times: Vec<f64> = Vec::new();
        let mut in_doubt_at: Vec<f64> = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut anomalies: Vec<String> = Vec::new();
        let mut connect_failures = 0u64;
        let mut batches: Vec<&BatchRec> = Vec::new();
        for log in &logs {
            attempted.extend(log.attempted.iter().map(String::as_str));
            for (title, id, t) in &log.acked {
                acked.insert(title, id);
                acked_ids.entry(id).or_default().push(title);
                ack_times.push(*t);
            }
            refused.extend(log.refused.iter().map(String::as_str));
            in_doubt_at.extend(&log.in_doubt_at);
            for (k, v) in &log.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            anomalies.extend(log.anomalies.iter().cloned());
            connect_failures += log.connect_failures;
            batches.extend(&log.batches);
            if let Some(why) = &log.gave_up {
                doubts.push(format!("an agent gave up: {why}"));
            }
        }
        if !anomalies.is_empty() {
            failures.push(format!(
                "{} replies did not match their request: {}",
                anomalies.len(),
                some_of(&anomalies, 3)
            ));
        }
        let reused: Vec<String> = acked_ids
            .iter()
            .filter(|(_, titles)| titles.len() > 1)
            .map(|(id, titles)| format!("{id} acknowledged to {}", titles.join(" and ")))
            .collect();
        if !reused.is_empty() {
            failures.push(format!(
                "{} ids were acknowledged to two creates (reused across a restart): {}",
                reused.len(),
                some_of(&reused, 5)
            ));
        }

        let p = match present {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!(
                    "the database could not be read back after the last kill: {e:#}"
                ));
                r.verdict = Verdict::from_checks(failures, doubts);
                r.headline = format!("{} kills: the database could not be read back", kills.len());
                return Ok(r);
            }
        };

        let mut lost: Vec<String> = Vec::new();
        let mut wrong_id: Vec<String> = Vec::new();
        let mut ok = 0u64;
        for (title, id) in &acked {
            match p.by_title.get(*title) {
                None => lost.push(title.to_string()),
                Some(ids) if ids.len() == 1 && ids[0] == *id => ok += 1,
                Some(ids) if !ids.iter().any(|i| i == id) => {
                    wrong_id.push(format!("{title} acknowledged as {id}, present as {ids:?}"))
                }
                Some(_) => ok += 1, // present with its id, and more copies: counted below
            }
        }
        lost.sort();
        wrong_id.sort();
        let mut recovered = 0u64;
        let mut unexpected = 0u64;
        let mut never_attempted: Vec<String> = Vec::new();
        let mut duplicated: Vec<String> = Vec::new();
        let mut refused_present: Vec<String> = Vec::new();
        for (title, ids) in &p.by_title {
            if !attempted.contains(title.as_str()) {
                unexpected += ids.len() as u64;
                never_attempted.push(format!("{title} ({})", ids.join(", ")));
                continue;
            }
            if ids.len() > 1 {
                unexpected += ids.len() as u64 - 1;
                duplicated.push(format!("{title} x{} ({})", ids.len(), ids.join(", ")));
            }
            if refused.contains(title.as_str()) {
                refused_present.push(title.clone());
            } else if !acked.contains_key(title.as_str()) {
                recovered += 1;
            }
        }
        never_attempted.sort();
        duplicated.sort();
        refused_present.sort();

        let mut partial: Vec<String> = Vec::new();
        let mut acked_batches = 0u64;
        let mut applied_batches = 0u64;
        let mut absent_batches = 0u64;
        for b in &batches {
            let n = p.by_label.get(&b.label).copied().unwrap_or(0);
            if b.acked {
                acked_batches += 1;
            }
            if n == b.k {
                applied_batches += 1;
            }
            if n == 0 {
                absent_batches += 1;
            }
            if n != 0 && n != b.k {
                partial.push(format!("{} ({n} of {})", b.label, b.k));
            } else if b.acked && n != b.k {
                partial.push(format!("{} (acknowledged, {n} of {})", b.label, b.k));
            }
        }

        if !lost.is_empty() {
            failures.push(format!(
                "lost = {}: acknowledged creates absent after the kills: {}",
                lost.len(),
                some_of(&lost, 8)
            ));
        }
        if !wrong_id.is_empty() {
            failures.push(format!(
                "{} acknowledged creates are present under another id: {}",
                wrong_id.len(),
                some_of(&wrong_id, 5)
            ));
        }
        if unexpected > 0 {
            let mut all = never_attempted.clone();
            all.extend(duplicated.iter().cloned());
            failures.push(format!(
                "unexpected = {unexpected}: present but never attempted, or present twice: {}",
                some_of(&all, 8)
            ));
        }
        if !refused_present.is_empty() {
            failures.push(format!(
                "{} creates answered with a definite error are present (an error reply must mean nothing was applied): {}",
                refused_present.len(),
                some_of(&refused_present, 8)
            ));
        }
        if !partial.is_empty() {
            failures.push(format!(
                "{} batches are partial (a batch is all or nothing): {}",
                partial.len(),
                some_of(&partial, 8)
            ));
        }
        if p.stats_issues != p.issues {
            failures.push(format!(
                "stats counts {} issues but hl-1..hl-{} hold {}: some issue has an id outside the range",
                p.stats_issues, p.max_n, p.issues
            ));
        }
        let restarts_ok: Vec<f64> = {
            let mut v: Vec<f64> = kills.iter().filter_map(|k| k.restart_ms).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        if acked.is_empty() {
            doubts.push("no create was acknowledged: nothing to check".into());
        }
        // Each kill's share of replies lost: attributed to the last kill before the error.
        let mut doubt_per_kill = vec![0u64; kills.len()];
        for t in &in_doubt_at {
            if let Some(i) = kills.iter().rposition(|k| k.at_s <= *t) {
                doubt_per_kill[i] += 1;
            }
        }
        if !kills.is_empty() && doubt_per_kill.iter().all(|&n| n == 0) {
            doubts.push(format!(
                "none of the {} kills interrupted a request in flight: the window between commit and reply was not exercised",
                kills.len()
            ));
        }

        // ---- report ------------------------------------------------------------------
        let acked_n = acked.len() as u64;
        let restart_p50 = percentile(&restarts_ok, 0.5);
        let restart_max = restarts_ok.last().copied().unwrap_or(0.0);
        let creates_per_s = if load_s > 0.0 {
            acked_n as f64 / load_s
        } else {
            0.0
        };
        let in_doubt_n = in_doubt_at.len() as u64;
        println!(
            "{} kills · restart p50 {restart_p50:.0} ms max {restart_max:.0} ms · attempted {} acked {acked_n} lost {} recovered {recovered} unexpected {unexpected} · batches {} ({} acked, {} partial)",
            kills.len(),
            attempted.len(),
            lost.len(),
            batches.len(),
            acked_batches,
            partial.len()
        );

        let m = |name: &str, v: f64, unit: &str| Metric::new(name, v, unit);
        r.metrics.extend([
            m("lost_creates", lost.len() as f64, "")
                .lower_is_better()
                .headline(),
            m("unexpected_creates", unexpected as f64, "")
                .lower_is_better()
                .headline(),
            m("partial_batches", partial.len() as f64, "").lower_is_better(),
            m("kills", kills.len() as f64, ""),
            m("restart_p50_ms", restart_p50, "ms")
                .lower_is_better()
                .headline(),
            m("restart_max_ms", restart_max, "ms").lower_is_better(),
            m("creates_attempted", attempted.len() as f64, ""),
            m("creates_acknowledged", acked_n as f64, ""),
            m("creates_recovered", recovered as f64, ""),
            m("replies_in_doubt", in_doubt_n as f64, ""),
            m("creates_per_s", creates_per_s, "ops/s"),
            m("batches_attempted", batches.len() as f64, ""),
            m("batches_acknowledged", acked_batches as f64, ""),
            m("id_gaps", p.gaps as f64, ""),
            m("load_s", load_s, "s"),
            m("read_back_s", p.read_s, "s"),
        ]);

        let mut tally = Table::new(
            "Set tally over create titles (Jepsen style)",
            &["outcome", "creates", "meaning", "allowed"],
        );
        let rows: [(&str, u64, &str, &str); 8] = [
            (
                "attempted",
                attempted.len() as u64,
                "sent to the daemon (or about to be, when its connection failed)",
                "-",
            ),
            ("acknowledged", acked_n, "the daemon answered ok", "-"),
            (
                "present as acknowledged",
                ok,
                "acknowledged and in the file once, with the acknowledged id",
                "-",
            ),
            (
                "lost",
                lost.len() as u64,
                "acknowledged but absent",
                "0 only",
            ),
            (
                "recovered",
                recovered,
                "present but never acknowledged: the reply was lost in a kill",
                "yes",
            ),
            (
                "unexpected",
                unexpected,
                "present but never attempted, or present twice",
                "0 only",
            ),
            (
                "refused but present",
                refused_present.len() as u64,
                "answered with a definite error, yet applied",
                "0 only",
            ),
            (
                "absent, never acknowledged",
                (attempted.len() as u64)
                    .saturating_sub(acked_n + recovered + refused_present.len() as u64),
                "refused, or in flight at a kill and not committed",
                "yes",
            ),
        ];
        for (o, n, meaning, allowed) in rows {
            tally.push_row([
                o.to_string(),
                n.to_string(),
                meaning.to_string(),
                allowed.to_string(),
            ]);
        }
        r.tables.push(tally);

        let mut bt = Table::new(
            "Batches (K creates sharing one label, one transaction)",
            &[
                "batches",
                "acknowledged",
                "applied whole",
                "absent",
                "partial",
            ],
        );
        bt.push_row([
            batches.len().to_string(),
            acked_batches.to_string(),
            applied_batches.to_string(),
            absent_batches.to_string(),
            partial.len().to_string(),
        ]);
        r.tables.push(bt);

        let mut kt = Table::new(
            "Kills (restart = kill until the new daemon answers a ping)",
            &[
                "kill",
                "at s",
                "uptime before ms",
                "restart ms",
                "replies lost",
            ],
        );
        for (i, k) in kills.iter().enumerate() {
            kt.push_row([
                (i + 1).to_string(),
                format!("{:.2}", k.at_s),
                k.uptime_ms.to_string(),
                k.restart_ms
                    .map_or("did not restart".into(), |v| format!("{v:.0}")),
                doubt_per_kill[i].to_string(),
            ]);
        }
        r.tables.push(kt);

        if !errors.is_empty() {
            let mut et = Table::new("Agent errors by code", &["code", "count", "outcome"]);
            for (code, n) in &errors {
                let outcome = match code.as_str() {
                    "connect" => "not sent: not applied",
                    "io" | "timeout" | "protocol" | "internal" => {
                        "no definite answer: may be applied"
                    }
                    _ => "error reply: not applied",
                };
                et.push_row([code.clone(), n.to_string(), outcome.to_string()]);
            }
            r.tables.push(et);
        }

        // Acknowledged creates over time, with the kills as spikes.
        ack_times.sort_by(f64::total_cmp);
        let buckets = (load_s / CHART_BUCKET_S).ceil() as usize + 1;
        let mut cumulative = Vec::with_capacity(buckets);
        let mut seen = 0usize;
        for b in 0..buckets {
            let t = b as f64 * CHART_BUCKET_S;
            while seen < ack_times.len() && ack_times[seen] <= t {
                seen += 1;
            }
            cumulative.push([t, seen as f64]);
        }
        let top = acked_n as f64;
        let mut spikes = Vec::with_capacity(kills.len() * 3);
        for k in &kills {
            spikes.extend([[k.at_s, 0.0], [k.at_s, top], [k.at_s, 0.0]]);
        }
        r.series.push(Series {
            id: "acked-over-time".into(),
            title: "Acknowledged creates over time; spikes are kill -9 instants".into(),
            x_label: "time (s)".into(),
            y_label: "acknowledged creates (cumulative)".into(),
            lines: vec![
                Line {
                    name: "acknowledged".into(),
                    points: cumulative,
                },
                Line {
                    name: "kill -9".into(),
                    points: spikes,
                },
            ],
            log_y: false,
        });

        r.findings.push(format!(
            "{in_doubt_n} requests lost their reply in a kill; {recovered} of the creates they carried were committed anyway (\"recovered\", allowed: the commit happened, the reply did not)."
        ));
        if p.gaps > 0 {
            r.findings.push(format!(
                "{} id numbers in hl-1..hl-{} have no issue: a committed create's number was skipped (not a reuse, but ids are meant to be given back on rollback).",
                p.gaps, p.max_n
            ));
        }
        if restart_max > 2.0 * restart_p50.max(1.0) && restarts_ok.len() > 2 {
            r.findings.push(format!(
                "restart time varies: p50 {restart_p50:.0} ms, max {restart_max:.0} ms"
            ));
        }
        r.findings.push(format!(
            "{connect_failures} reconnect attempts failed while the daemon was down (agents retry every {} ms).",
            RECONNECT_PAUSE.as_millis()
        ));

        r.config.insert(
            "durability".into(),
            "synchronous=NORMAL (the default): a process kill, not a power loss, so every committed write must survive".into(),
        );
        r.config.insert("kills".into(), s.kills.into());
        r.config.insert(
            "uptime_before_kill_ms".into(),
            format!("{}-{} (seeded)", s.uptime_ms.0, s.uptime_ms.1).into(),
        );
        r.config.insert(
            "agents".into(),
            format!(
                "{} creating one issue per call (at most {CREATOR_CALLS_PER_S} calls/s each) + {} creating batches of K={}-{} (seeded) with a shared label (at most {BATCHER_CALLS_PER_S} batches/s each), uncapped for the last {} ms before each kill; tokio tasks of the suite process, one daemon connection each, never killed, reconnecting after each kill",
                s.creators,
                s.batchers,
                s.batch_k.0,
                s.batch_k.1,
                BURST.as_millis()
            )
            .into(),
        );
        r.config.insert(
            "client_timeout_ms".into(),
            (CALL_TIMEOUT.as_millis() as u64).into(),
        );
        r.config.insert(
            "verification".into(),
            "after the load a final kill -9, then every id hl-1..hl-max read from the file in direct mode".into(),
        );
        r.config.insert(
            "seed_use".into(),
            "uptime before each kill, batch sizes, title prefix".into(),
        );

        r.headline = format!(
            "{} kills, restart p50 {restart_p50:.0} ms: {acked_n} creates acknowledged, lost {}, unexpected {unexpected}, recovered {recovered}, partial batches {}",
            kills.len(),
            lost.len(),
            partial.len()
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
