//! What the `daemon-*` suites share: starting the daemon in the run's work dir, the
//! daemon's counters from its log, and a complete dump of the database file.
//!
//! Process plumbing (spawning the daemon and agents, daemon clients) is in
//! [`crate::daemon_harness`]; the daemon as a collector target is [`crate::daemon_target`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use collector::{Metric, SuiteResult};
use rpc_daemon::client::ClientError;
use rpc_daemon::error::Code;
use rpc_daemon::model::{Dep, Issue, Op, Reply, Stats};
use rpc_daemon::server::ServerStats;

use crate::daemon_harness::{daemon_client, direct_client, DaemonProc};
use crate::harness::log_tail;
use crate::suites::RunContext;

/// Starts `stress __daemon` on the database `file` in the run's work dir with the `extra`
/// flags, and waits (bounded) until it answers; returns the database path and the daemon.
pub(crate) fn start_daemon(
    ctx: &RunContext,
    file: &str,
    extra: &[&str],
) -> Result<(PathBuf, DaemonProc)> {
    let db = ctx.work_dir.join(file);
    let daemon = DaemonProc::start(&db, extra)?;
    Ok((db, daemon))
}

/// The daemon's own counters: the last line of its log that parses as [`ServerStats`]
/// (`stress __daemon` prints them when it stops cleanly).
pub(crate) fn server_stats_from_log(log: &Path) -> Option<ServerStats> {
    server_stats_in(&std::fs::read_to_string(log).ok()?)
}

/// The last line of the log text `log` that parses as [`ServerStats`].
pub(crate) fn server_stats_in(log: &str) -> Option<ServerStats> {
    log.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<ServerStats>(l.trim()).ok())
}

/// Group commit as the daemon counted it: a finding and metrics.
pub(crate) fn report_grouping(
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
pub(crate) const STOP_BOUND: Duration = Duration::from_secs(20);

/// Stops the daemon gracefully within [`STOP_BOUND`] (which makes it print its counters);
/// returns whether it exited cleanly, and its counters from its log.
pub(crate) fn stop_for_counters(daemon: &mut DaemonProc) -> (bool, Option<ServerStats>) {
    let clean_stop = daemon.stop(STOP_BOUND);
    (clean_stop, server_stats_from_log(&daemon.log))
}

/// The failure reason for a daemon that did not stop cleanly, with the end of its `log`.
pub(crate) fn unclean_stop(log: &Path) -> String {
    format!(
        "the daemon did not stop cleanly within {} s: {}",
        STOP_BOUND.as_secs(),
        log_tail(log, 5)
    )
}

/// The finding for counters that were not in the daemon's `log`.
pub(crate) fn counters_missing(log: &Path, clean_stop: bool) -> String {
    format!(
        "the daemon's counters were not found in its log {} (graceful stop: {clean_stop})",
        log.display()
    )
}

/// Adds the finding for a daemon that did not exit cleanly, unless `clean_stop`.
pub(crate) fn note_unclean_stop(r: &mut SuiteResult, clean_stop: bool) {
    if !clean_stop {
        r.findings.push(format!(
            "the daemon did not exit cleanly on SIGTERM within {} s",
            STOP_BOUND.as_secs()
        ));
    }
}

/// The daemon's `stats` now, through a new daemon-only client (`None` if that fails).
pub(crate) async fn daemon_stats(db: &Path, timeout: Duration) -> Option<Stats> {
    match daemon_client(db, timeout).await {
        Ok(mut c) => c.stats().await.ok(),
        Err(_) => None,
    }
}

/// The number of an id `hl-N`.
pub(crate) fn id_num(id: &str) -> Option<u64> {
    id.strip_prefix("hl-")?.parse().ok()
}

/// Everything in the database file, read through a direct-mode client.
pub(crate) struct FileDump {
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
pub(crate) async fn dump_file(db: &Path, hint: u64) -> Result<FileDump> {
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
