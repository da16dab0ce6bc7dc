//! What the `daemon-*` suites share: the seeded generator, starting the daemon in the run's
//! work dir, the daemon's counters from its log, a complete dump of the database file,
//! latency summaries (histograms and plain samples) for tables and metrics, and the result
//! boilerplate.
//!
//! Process plumbing (spawning the daemon and agents, daemon clients) is in
//! [`crate::daemon_harness`]; the daemon as a collector target is [`crate::daemon_target`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use collector::{Metric, SuiteResult};
use hdrhistogram::Histogram;
use rpc_daemon::client::ClientError;
use rpc_daemon::error::Code;
use rpc_daemon::model::{Dep, Issue, Op, Reply, Stats};
use rpc_daemon::server::ServerStats;

use super::{RunContext, Suite};
use crate::daemon_harness::{daemon_client, direct_client, DaemonProc};

// ---------------------------------------------------------------------------------------
// Setup

/// An empty result for `suite` under the run's profile and seed, with the plan's scale.
pub(super) fn new_result(suite: &dyn Suite, ctx: &RunContext) -> SuiteResult {
    SuiteResult::new(
        suite.name(),
        ctx.profile.to_string(),
        suite.plan(ctx.profile).scale,
        ctx.seed,
    )
}

/// Starts `stress __daemon` on the database `file` in the run's work dir with the `extra`
/// flags, and waits (bounded) until it answers; returns the database path and the daemon.
pub(super) fn start_daemon(
    ctx: &RunContext,
    file: &str,
    extra: &[&str],
) -> Result<(PathBuf, DaemonProc)> {
    let db = ctx.work_dir.join(file);
    let daemon = DaemonProc::start(&db, extra)?;
    Ok((db, daemon))
}

// ---------------------------------------------------------------------------------------
// Seeded workload

/// A small seeded generator (SplitMix64): every workload choice of the daemon suites.
pub(super) struct Rng(u64);

/// SplitMix64: a cheap, well-mixed hash of a 64-bit value; the step of [`Rng`].
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of `stream` under `seed`: independent streams for agents, batches.
    pub(super) fn new(seed: u64, stream: u64) -> Rng {
        Rng(splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5EED))))
    }

    /// The generator of `stream` under `seed` without the stream offset of [`Rng::new`]:
    /// the `daemon-crash` suite's streams (kept, so its seeds replay as before).
    pub(super) fn unsalted(seed: u64, stream: u64) -> Rng {
        Rng(splitmix64(seed ^ splitmix64(stream)))
    }

    /// The next value.
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform index into a slice of length `n` (0 when empty).
    pub(super) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A token derived from the seed that every title of a run carries.
pub(super) fn seed_token(seed: u64) -> String {
    format!("{:08x}", splitmix64(seed) as u32)
}

// ---------------------------------------------------------------------------------------
// Plain latency samples (ms)

/// The `q` quantile (0..=1) of `v` by the nearest-rank method; 0 for an empty slice.
pub(super) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// p50, p99 and max of `v` (nearest rank; zeros for an empty slice).
pub(super) fn p50_p99_max(v: &[f64]) -> (f64, f64, f64) {
    (quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0))
}

/// p50, p99 and max of `v` as table cells (two decimals).
pub(super) fn quantile_cells(v: &[f64]) -> [String; 3] {
    let (p50, p99, max) = p50_p99_max(v);
    [p50, p99, max].map(|x| format!("{x:.2}"))
}

/// `d` in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The slowest of `(start_s, latency_ms)` samples per window of `window_s`, by start time:
/// `[window start s, max latency ms]` points for a chart.
pub(super) fn slowest_per_window(
    samples: impl IntoIterator<Item = (f64, f64)>,
    window_s: f64,
) -> Vec<[f64; 2]> {
    let mut by: BTreeMap<u64, f64> = BTreeMap::new();
    for (start_s, latency_ms) in samples {
        let w = (start_s / window_s).floor().max(0.0) as u64;
        let e = by.entry(w).or_insert(0.0);
        *e = e.max(latency_ms);
    }
    by.into_iter()
        .map(|(w, v)| [w as f64 * window_s, v])
        .collect()
}

// ---------------------------------------------------------------------------------------
// Latency histograms (µs)

/// A latency histogram in µs (3 significant digits, resizing).
pub(super) fn new_hist() -> Histogram<u64> {
    match Histogram::<u64>::new(3) {
        Ok(h) => h,
        // `new` fails only for more than 5 significant digits: a constant here.
        Err(e) => unreachable!("3 significant digits are valid: {e}"),
    }
}

/// Records `us` (clamped into the histogram's range).
pub(super) fn record_us(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 3_600_000_000));
}

/// The `q` quantile in ms (0 for an empty histogram).
pub(super) fn q_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The maximum in ms (0 for an empty histogram).
pub(super) fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// p50, p99 and max of `h` as table cells (ms, two decimals).
pub(super) fn hist_cells(h: &Histogram<u64>) -> [String; 3] {
    [q_ms(h, 0.5), q_ms(h, 0.99), max_ms(h)].map(|v| format!("{v:.2}"))
}

// ---------------------------------------------------------------------------------------
// The daemon's counters and log

/// The daemon's own counters: the last line of its log that parses as [`ServerStats`]
/// (`stress __daemon` prints them when it stops cleanly).
pub(super) fn server_stats_from_log(log: &Path) -> Option<ServerStats> {
    server_stats_in(&std::fs::read_to_string(log).ok()?)
}

/// The last line of the log text `log` that parses as [`ServerStats`].
pub(super) fn server_stats_in(log: &str) -> Option<ServerStats> {
    log.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<ServerStats>(l.trim()).ok())
}

/// Group commit as the daemon counted it: a finding and metrics.
pub(super) fn report_grouping(
    r: &mut SuiteResult,
    stats: Option<ServerStats>,
    clean_stop: bool,
    log: &Path,
) {
    match stats {
        Some(s) => {
            let per_group = if s.groups > 0 {
                s.grouped_writes as f64 / s.groups as f64
            } else {
                0.0
            };
            r.metrics
                .push(Metric::new("daemon_groups", s.groups as f64, ""));
            r.metrics
                .push(Metric::new("daemon_grouped_writes", s.grouped_writes as f64, ""));
            r.metrics
                .push(Metric::new("writes_per_group", per_group, "").higher_is_better());
            r.metrics
                .push(Metric::new("daemon_requests", s.requests as f64, ""));
            r.metrics
                .push(Metric::new("daemon_connections", s.connections as f64, ""));
            r.findings.push(format!(
                "group commit: the daemon committed {} writes in {} transactions ({per_group:.2} writes per commit) over {} requests on {} connections; {} connections refused, {} requests past their deadline",
                s.grouped_writes, s.groups, s.requests, s.connections, s.rejected_connections, s.deadline_exceeded
            ));
        }
        None => r.findings.push(format!(
            "the daemon's counters are unavailable (clean stop: {clean_stop}; nothing parsable in {})",
            log.display()
        )),
    }
}

/// How long a suite waits for the daemon's graceful stop (SIGTERM) before it kills it.
pub(super) const STOP_BOUND: Duration = Duration::from_secs(20);

/// Stops the daemon gracefully within [`STOP_BOUND`] (which makes it print its counters);
/// returns whether it exited cleanly, and its counters from its log.
pub(super) fn stop_for_counters(daemon: &mut DaemonProc) -> (bool, Option<ServerStats>) {
    let clean_stop = daemon.stop(STOP_BOUND);
    (clean_stop, server_stats_from_log(&daemon.log))
}

/// The failure reason for a daemon that did not stop cleanly, with the end of its `log`.
pub(super) fn unclean_stop(log: &Path) -> String {
    format!(
        "the daemon did not stop cleanly within {} s: {}",
        STOP_BOUND.as_secs(),
        log_tail(log, 5)
    )
}

/// The finding for counters that were not in the daemon's `log`.
pub(super) fn counters_missing(log: &Path, clean_stop: bool) -> String {
    format!(
        "the daemon's counters were not found in its log {} (graceful stop: {clean_stop})",
        log.display()
    )
}

/// Adds the finding for a daemon that did not exit cleanly, unless `clean_stop`.
pub(super) fn note_unclean_stop(r: &mut SuiteResult, clean_stop: bool) {
    if !clean_stop {
        r.findings.push(format!(
            "the daemon did not exit cleanly on SIGTERM within {} s",
            STOP_BOUND.as_secs()
        ));
    }
}

/// The daemon's `stats` now, through a new daemon-only client (`None` if that fails).
pub(super) async fn daemon_stats(db: &Path, timeout: Duration) -> Option<Stats> {
    match daemon_client(db, timeout).await {
        Ok(mut c) => c.stats().await.ok(),
        Err(_) => None,
    }
}

/// The first `n` of `items`, joined by ` | `: the examples a failure reason quotes.
pub(super) fn first_joined(items: &[String], n: usize) -> String {
    items
        .iter()
        .take(n)
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The last lines of a log, for a failure reason.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

// ---------------------------------------------------------------------------------------
// The database file

/// The number of an id `hl-N`.
pub(super) fn id_num(id: &str) -> Option<u64> {
    id.strip_prefix("hl-")?.parse().ok()
}

/// Everything in the database file, read through a direct-mode client.
pub(super) struct FileDump {
    /// `stats` of the file.
    pub stats: Stats,
    /// Every issue found, by id number.
    pub issues: BTreeMap<u64, Issue>,
    /// Every dependency edge found.
    pub deps: BTreeSet<Dep>,
    /// Id numbers in `1..=max(stats.issues, hint)` with no issue.
    pub missing: Vec<u64>,
}

const SHOWS_PER_BATCH: u64 = 1_000;

/// Opens `db` directly (the daemon must be stopped) and reads every issue `hl-1..` up to
/// `max(stats.issues, hint)` plus a margin, with their dependency edges, by batches of
/// `show`s; an id with no issue is recorded as missing.
pub(super) async fn dump_file(db: &Path, hint: u64) -> Result<FileDump> {
    let mut c = direct_client(db).await?;
    let stats = c
        .stats()
        .await
        .map_err(|e| anyhow::anyhow!("stats of {}: {e}", db.display()))?;
    let top = hint.max(stats.issues);
    let upto = top + 16;
    let mut dump = FileDump {
        stats,
        issues: BTreeMap::new(),
        deps: BTreeSet::new(),
        missing: Vec::new(),
    };
    let mut n = 1u64;
    let mut rounds = 0u64;
    while n <= upto {
        rounds += 1;
        if rounds > 2 * upto + 10 {
            bail!("reading the file made no progress at hl-{n}");
        }
        let end = (n + SHOWS_PER_BATCH).min(upto + 1);
        match show_range(&mut c, n, end, &mut dump).await {
            Ok(()) => n = end,
            Err(ClientError::Api(e)) if e.code == Code::BatchFailed => {
                let Some(i) = e.index else {
                    bail!("a batch of shows failed without an index: {e}");
                };
                let bad = n + i as u64;
                if bad <= top {
                    dump.missing.push(bad);
                }
                if bad > n {
                    show_range(&mut c, n, bad, &mut dump)
                        .await
                        .map_err(|e| anyhow::anyhow!("reading hl-{n}..hl-{bad}: {e}"))?;
                }
                n = bad + 1;
            }
            Err(e) => bail!("reading hl-{n}..hl-{end}: {e}"),
        }
    }
    Ok(dump)
}

async fn show_range(
    c: &mut rpc_daemon::client::Client,
    from: u64,
    to: u64,
    dump: &mut FileDump,
) -> Result<(), ClientError> {
    let ops = (from..to)
        .map(|k| Op::Show {
            id: format!("hl-{k}"),
        })
        .collect();
    for reply in c.batch(ops).await? {
        match reply {
            Reply::Detail { issue, deps } => {
                dump.deps.extend(deps);
                if let Some(k) = id_num(&issue.id) {
                    dump.issues.insert(k, issue);
                }
            }
            other => return Err(ClientError::Protocol(format!("a show answered {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_bounded() {
        let mut a = Rng::new(7, 1);
        let mut b = Rng::new(7, 1);
        let mut c = Rng::new(7, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn server_stats_are_read_from_the_last_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.log");
        std::fs::write(
            &log,
            "serving x on y\n{\"connections\":1,\"requests\":2,\"groups\":3,\"grouped_writes\":4,\"rejected_connections\":0,\"deadline_exceeded\":0}\nserving x on y\n{\"connections\":5,\"requests\":6,\"groups\":7,\"grouped_writes\":8,\"rejected_connections\":0,\"deadline_exceeded\":0}\n",
        )
        .unwrap();
        let s = server_stats_from_log(&log).unwrap();
        assert_eq!((s.groups, s.grouped_writes), (7, 8));
        assert!(server_stats_from_log(&dir.path().join("none")).is_none());
        assert_eq!(id_num("hl-42"), Some(42));
        assert_eq!(id_num("x-1"), None);
    }
}
