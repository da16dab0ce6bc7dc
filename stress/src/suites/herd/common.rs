//! What the `herd*` suites share: a [`HerdConfig`] from the profile and the seed, one
//! bounded trial through [`hub_leaf::herd::run`], and the trial's [`HerdReport`] turned into
//! tables, metrics and verdict reasons.
//!
//! Every trial runs in its own temp dir under the system temp dir (`work_dir: None`), and
//! its `nats-server` (when it starts one) dies with it.

use std::time::Duration;

use anyhow::{Context, Result};
use collector::{Metric, Table};
use hub_leaf::herd::{self, HerdConfig, HerdReport};
use hub_leaf::workload::WorkloadConfig;

use crate::suites::Profile;

/// The commit-latency target: P99 commit at most this many ms
/// ("16 × 30: 480/480 with P99 commit ≤ 50 ms").
pub(super) const SLO_P99_MS: f64 = 50.0;

/// Broadcast pull requests per hub commit per leaf above this is the N² pull storm the
/// coalescer exists to prevent.
pub(super) const MAX_PULLS_PER_COMMIT_PER_LEAF: f64 = 1.0;

/// The bound on one trial: `full` in the full profile, 300 s in quick, 120 s in smoke.
pub(super) fn run_timeout(profile: Profile, full: Duration) -> Duration {
    match profile {
        Profile::Smoke => Duration::from_secs(120),
        Profile::Quick => Duration::from_secs(300),
        Profile::Full => full,
    }
}

/// `NATS_URL` if it is set and not empty: the server the trials use instead of their own.
pub(super) fn env_nats_url() -> Option<String> {
    std::env::var(hub_leaf::nats::NATS_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// The shape of one trial's workload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Agents.
    pub agents: usize,
    /// Tasks per agent.
    pub tasks: usize,
    /// Mean think time before each task, ms (0: a tight loop).
    pub think_ms: u64,
    /// Fraction of tasks drawn from the shared pool.
    pub overlap: f64,
}

/// A trial of `shape` under `seed`, bounded by `run_timeout`, against `nats_url` (`None`:
/// its own server); everything else at [`HerdConfig::default`].
pub(super) fn config(
    shape: Shape,
    seed: u64,
    run_timeout: Duration,
    nats_url: Option<String>,
) -> HerdConfig {
    HerdConfig {
        workload: WorkloadConfig {
            agents: shape.agents,
            tasks_per_agent: shape.tasks,
            seed,
            think_ms: shape.think_ms,
            overlap: shape.overlap,
        },
        nats_url,
        run_timeout,
        ..HerdConfig::default()
    }
}

/// `agents × tasks` of a config, for messages.
pub(super) fn scale_of(config: &HerdConfig) -> String {
    format!(
        "{} × {}",
        config.workload.agents, config.workload.tasks_per_agent
    )
}

/// Runs one trial; an error means it could not run (its setup failed), and says which
/// trial it was.
pub(super) fn run_trial(config: &HerdConfig) -> Result<HerdReport> {
    let w = &config.workload;
    println!(
        "herd trial: {} agents × {} tasks · seed {} · think {} ms · overlap {} · bound {} s",
        w.agents,
        w.tasks_per_agent,
        w.seed,
        w.think_ms,
        w.overlap,
        config.run_timeout.as_secs()
    );
    let report = herd::run(config).with_context(|| {
        format!(
            "the herd trial of {} agents × {} tasks (seed {}, overlap {}) could not run",
            w.agents, w.tasks_per_agent, w.seed, w.overlap
        )
    })?;
    print!("{}", report.summary());
    for c in report.failures() {
        println!("  check failed: {}: {}", c.name, c.detail);
    }
    Ok(report)
}

/// One verdict reason per failed check of `report`, each prefixed with `label` (e.g.
/// `16 agents: `); a report without checks is a failure too (nothing was verified).
pub(super) fn check_failures(label: &str, report: &HerdReport) -> Vec<String> {
    if report.checks.is_empty() {
        return vec![format!(
            "{label}the trial reported no checks: nothing was verified"
        )];
    }
    report
        .failures()
        .into_iter()
        .map(|c| format!("{label}check failed: {}: {}", c.name, c.detail))
        .collect()
}

/// The checks of `report` as a table: check, passed, detail.
pub(super) fn checks_table(title: impl Into<String>, report: &HerdReport) -> Table {
    let mut t = Table::new(title, &["check", "passed", "detail"]);
    for c in &report.checks {
        t.push_row([
            c.name.clone(),
            if c.passed { "yes" } else { "NO" }.to_string(),
            c.detail.clone(),
        ]);
    }
    t
}

/// The seed's summary block of `report`, one table row per line (a report renders a
/// table cell per line; a finding would run the lines together).
pub(super) fn summary_table(title: impl Into<String>, report: &HerdReport) -> Table {
    let mut t = Table::new(
        title,
        &["summary line (the seed's format, counted in-process)"],
    );
    for line in report.summary().lines().filter(|l| !l.trim().is_empty()) {
        t.push_row([line.to_string()]);
    }
    t
}

/// Completed tasks as a percentage of the distinct tasks (100 when every task landed).
pub(super) fn completion_pct(report: &HerdReport) -> f64 {
    if report.distinct_tasks == 0 {
        0.0
    } else {
        report.completed_tasks as f64 * 100.0 / report.distinct_tasks as f64
    }
}

/// Hub commits per second of the task phase (0 when it took no measurable time).
pub(super) fn commits_per_s(report: &HerdReport) -> f64 {
    if report.tasks_s > 0.0 {
        report.hub_commits as f64 / report.tasks_s
    } else {
        0.0
    }
}

/// `v`, or 0 when it is not finite (a result's metrics must be finite).
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Every line of the seed's summary block as a metric, and the counters beside it.
pub(super) fn summary_metrics(report: &HerdReport) -> Vec<Metric> {
    let count = |name: &str, v: u64| Metric::new(name, v as f64, "");
    let c = &report.commit;
    vec![
        count("hub_commits", report.hub_commits),
        count("completed_tasks", report.completed_tasks),
        count("fork_retries", report.fork_retries),
        count("fork_unrecoverable", report.fork_unrecoverable).lower_is_better(),
        count("claims_won", report.claims_won),
        count("claims_lost", report.claims_lost),
        count("broadcasts_pulled", report.broadcasts_pulled),
        count("broadcasts_skipped", report.broadcasts_skipped),
        Metric::new("commit_p50_ms", finite(c.p50_ms), "ms").lower_is_better(),
        Metric::new("commit_p90_ms", finite(c.p90_ms), "ms").lower_is_better(),
        Metric::new("commit_p99_ms", finite(c.p99_ms), "ms")
            .lower_is_better()
            .headline(),
        Metric::new("commit_max_ms", finite(c.max_ms), "ms").lower_is_better(),
        Metric::new("runtime_s", finite(report.runtime_s), "s").lower_is_better(),
        Metric::new("tasks_s", finite(report.tasks_s), "s"),
        Metric::new("commits_per_s", finite(commits_per_s(report)), "ops/s").higher_is_better(),
        Metric::new(
            "broadcast_pulls_per_commit_per_leaf",
            finite(report.broadcast_pulls_per_commit_per_leaf),
            "",
        )
        .lower_is_better(),
        count("sqlite_busy", report.sqlite_busy).lower_is_better(),
        count("hub_parked", report.hub_parked),
        count("hub_grants_expired", report.hub_grants_expired),
        count("request_retries", report.request_retries),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_leaf::herd::Check;

    fn check(name: &str, passed: bool) -> Check {
        Check {
            name: name.into(),
            passed,
            detail: format!("{name} detail"),
        }
    }

    #[test]
    fn failed_checks_become_labelled_reasons_and_no_checks_is_a_failure() {
        let mut r = HerdReport::default();
        assert_eq!(
            check_failures("4 agents: ", &r),
            vec!["4 agents: the trial reported no checks: nothing was verified".to_string()]
        );
        r.checks = vec![check("a", true), check("b", false)];
        assert_eq!(
            check_failures("", &r),
            vec!["check failed: b: b detail".to_string()]
        );
        let t = checks_table("t", &r);
        assert_eq!(t.rows[1], vec!["b", "NO", "b detail"]);
    }

    #[test]
    fn the_summary_block_is_one_row_per_line() {
        let r = HerdReport {
            agents: 2,
            tasks_per_agent: 3,
            total: 6,
            ..HerdReport::default()
        };
        let t = summary_table("s", &r);
        assert_eq!(t.rows.len(), r.summary().lines().count());
        assert_eq!(
            t.rows[0][0],
            "herd-hub-leaf trial: agents=2 tasks=3 total=6"
        );
    }

    #[test]
    fn ratios_of_an_empty_report_are_zero() {
        let r = HerdReport::default();
        assert_eq!(completion_pct(&r), 0.0);
        assert_eq!(commits_per_s(&r), 0.0);
        assert_eq!(finite(f64::NAN), 0.0);
        assert!(summary_metrics(&r).iter().all(|m| m.value.is_finite()));
    }
}
