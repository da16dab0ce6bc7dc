//! Suite `herd-sweep`: the hub-leaf trial at a rising number of agents, one trial per N in
//! turn, to find the envelope: the largest N at which every task landed (every check of the
//! trial passed) with the P99 commit latency within [`SLO_P99_MS`], every smaller N too.
//!
//! Full profile: 4, 8, 16, 32, 64 and 128 agents × 30 tasks; quick: 4, 8, 16 × 10; smoke:
//! 2, 4 × 3. Tight loop (no think time), disjoint slots. `NATS_URL`, when set, names the
//! server every trial uses; otherwise each starts its own.
//!
//! FAIL if any N failed a check of its trial (a task not committed, a file lost or wrong, a
//! leaf off the hub's tip, ...) or could not run: the issue wants 100% at 64 and 128 agents
//! too. A P99 above the SLO is not a FAIL by itself (it marks the envelope's edge); it is
//! recorded. The seed's original ceiling and the redesign's numbers are findings, not pass
//! criteria.

use std::time::Duration;

use anyhow::Result;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use hub_leaf::herd::HerdReport;

use super::common::{
    check_failures, commits_per_s, completion_pct, config, env_nats_url, finite, run_timeout,
    run_trial, Shape, SLO_P99_MS,
};
use crate::harness::new_result;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct HerdSweep;

struct Settings {
    agents: Vec<usize>,
    tasks: usize,
    expected_s: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            agents: vec![2, 4],
            tasks: 3,
            expected_s: 1,
        },
        Profile::Quick => Settings {
            agents: vec![4, 8, 16],
            tasks: 10,
            // 280 commits: 1.8 s on 2 cores.
            expected_s: 3,
        },
        Profile::Full => Settings {
            agents: vec![4, 8, 16, 32, 64, 128],
            tasks: 30,
            // 7,560 commits at ~200 commits/s through one hub, slower with 128 leaf threads.
            expected_s: 90,
        },
    }
}

/// The seed's original design (one repository, every agent pulling every commit): P50
/// commit at 4, 8 and 12 agents; it aborted from 13 agents on.
const SEED_P50_MS: [(usize, f64); 3] = [(4, 49.0), (8, 3_600.0), (12, 10_500.0)];

/// One N of the sweep, as the envelope sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Agents.
    agents: usize,
    /// Every check of its trial passed (every task landed, nothing lost).
    passed: bool,
    /// P99 commit latency, ms.
    p99_ms: f64,
}

impl Point {
    fn within(&self, slo_ms: f64) -> bool {
        self.passed && self.p99_ms.is_finite() && self.p99_ms <= slo_ms
    }
}

/// The envelope: the largest N such that it and every smaller N of the sweep passed every
/// check with a P99 within `slo_ms`. `None` when the smallest N already misses. (An N past a
/// miss that happens to be within again does not extend the envelope: a herd that breaks
/// at 32 agents is not safe at 64.)
fn envelope(points: &[Point], slo_ms: f64) -> Option<usize> {
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.agents);
    sorted
        .iter()
        .take_while(|p| p.within(slo_ms))
        .last()
        .map(|p| p.agents)
}

/// One N: its report, or why its trial could not run.
struct Row {
    agents: usize,
    outcome: Result<HerdReport, String>,
}

impl Row {
    fn point(&self) -> Point {
        match &self.outcome {
            Ok(rep) => Point {
                agents: self.agents,
                passed: rep.passed(),
                p99_ms: rep.commit.p99_ms,
            },
            Err(_) => Point {
                agents: self.agents,
                passed: false,
                p99_ms: f64::INFINITY,
            },
        }
    }
}

impl Suite for HerdSweep {
    fn name(&self) -> &'static str {
        "herd-sweep"
    }

    fn description(&self) -> &'static str {
        "the hub-leaf trial at rising agent counts (full 4..128 x 30, tight loop): completion, P99 commit against N, the envelope (largest N at 100% with P99 <= 50 ms) vs the seed's ceiling"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{:?} agents x {} tasks, one trial per N, tight loop",
                s.agents, s.tasks
            ),
            expected_s: s.expected_s,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures = Vec::new();
        let nats_url = env_nats_url();
        let timeout = run_timeout(ctx.profile, Duration::from_secs(1800));
        let shape = |agents| Shape {
            agents,
            tasks: s.tasks,
            think_ms: 0,
            overlap: 0.0,
        };
        let mut rows: Vec<Row> = Vec::with_capacity(s.agents.len());
        for (i, &n) in s.agents.iter().enumerate() {
            let cfg = config(shape(n), ctx.seed, timeout, nats_url.clone());
            match run_trial(&cfg) {
                Ok(rep) => rows.push(Row {
                    agents: n,
                    outcome: Ok(rep),
                }),
                // The first trial not running is the environment (no nats-server, ...):
                // the suite cannot run. A later one is a result about that N.
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    println!("{n} agents: {e:#}");
                    rows.push(Row {
                        agents: n,
                        outcome: Err(format!("{e:#}")),
                    });
                }
            }
        }

        let mut table = Table::new(
            format!(
                "One trial per N: agents × {} tasks, tight loop (SLO: P99 commit ≤ {SLO_P99_MS} ms)",
                s.tasks
            ),
            &[
                "agents",
                "total",
                "completed",
                "completion %",
                "P50 commit ms",
                "P99 commit ms",
                "runtime s",
                "fork retries",
                "broadcast pulls / commit / leaf",
                "hub parked",
                "passed",
            ],
        );
        let (mut p50_line, mut p99_line, mut slo_line, mut rate_line) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut over_slo = Vec::new();
        for row in &rows {
            let n = row.agents;
            let rep = match &row.outcome {
                Ok(rep) => rep,
                Err(e) => {
                    failures.push(format!("{n} agents: the trial could not run: {e}"));
                    table.push_row([
                        n.to_string(),
                        (n * s.tasks).to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "NO (did not run)".into(),
                    ]);
                    continue;
                }
            };
            failures.extend(check_failures(&format!("{n} agents: "), rep));
            let pct = completion_pct(rep);
            let c = &rep.commit;
            table.push_row([
                n.to_string(),
                rep.total.to_string(),
                rep.completed_tasks.to_string(),
                format!("{pct:.1}"),
                format!("{:.1}", c.p50_ms),
                format!("{:.1}", c.p99_ms),
                format!("{:.1}", rep.runtime_s),
                rep.fork_retries.to_string(),
                format!("{:.2}", rep.broadcast_pulls_per_commit_per_leaf),
                rep.hub_parked.to_string(),
                if rep.passed() { "yes" } else { "NO" }.to_string(),
            ]);
            if rep.passed() && c.p99_ms > SLO_P99_MS {
                over_slo.push(format!("{n} agents ({:.1} ms)", c.p99_ms));
            }
            let x = n as f64;
            p50_line.push([x, finite(c.p50_ms).max(0.001)]);
            p99_line.push([x, finite(c.p99_ms).max(0.001)]);
            slo_line.push([x, SLO_P99_MS]);
            rate_line.push([x, finite(commits_per_s(rep))]);
            r.metrics.push(
                Metric::new(format!("commit_p99_ms_at_{n}"), finite(c.p99_ms), "ms")
                    .lower_is_better(),
            );
            r.metrics.push(
                Metric::new(format!("commit_p50_ms_at_{n}"), finite(c.p50_ms), "ms")
                    .lower_is_better(),
            );
            r.metrics.push(
                Metric::new(format!("completion_pct_at_{n}"), finite(pct), "%").higher_is_better(),
            );
            r.metrics.push(
                Metric::new(
                    format!("commits_per_s_at_{n}"),
                    finite(commits_per_s(rep)),
                    "ops/s",
                )
                .higher_is_better(),
            );
            r.metrics.push(
                Metric::new(
                    format!("broadcast_pulls_per_commit_per_leaf_at_{n}"),
                    finite(rep.broadcast_pulls_per_commit_per_leaf),
                    "",
                )
                .lower_is_better(),
            );
        }

        let points: Vec<Point> = rows.iter().map(Row::point).collect();
        let env = envelope(&points, SLO_P99_MS);
        r.metrics.push(
            Metric::new("envelope_agents", env.unwrap_or(0) as f64, "")
                .higher_is_better()
                .headline(),
        );
        let largest = s.agents.iter().copied().max().unwrap_or(0);
        match env {
            Some(n) => r.findings.push(format!(
                "envelope: {n} agents — the largest N with every task committed and every check passed, P99 commit ≤ {SLO_P99_MS} ms, at it and at every smaller N (largest tried: {largest})"
            )),
            None => r.findings.push(format!(
                "envelope: none — already at {} agents a check failed or the P99 commit was above {SLO_P99_MS} ms",
                s.agents.first().copied().unwrap_or(0)
            )),
        }
        if let Some(n) = env {
            let beyond: Vec<String> = points
                .iter()
                .filter(|p| p.agents > n && p.within(SLO_P99_MS))
                .map(|p| p.agents.to_string())
                .collect();
            if !beyond.is_empty() {
                r.findings.push(format!(
                    "past the envelope's edge, {} agents were within the SLO again (noise at the edge, or a knee that is not monotonic)",
                    beyond.join(", ")
                ));
            }
        }
        if !over_slo.is_empty() {
            r.findings.push(format!(
                "P99 commit above the {SLO_P99_MS} ms SLO with every check passing (the envelope's edge, not a FAIL): {}",
                over_slo.join(", ")
            ));
        }

        // The seed, side by side (findings, not pass criteria).
        let ours = |n: usize| {
            rows.iter()
                .find(|row| row.agents == n)
                .and_then(|row| row.outcome.as_ref().ok())
        };
        let mut seed_cmp = Vec::new();
        for (n, seed_ms) in SEED_P50_MS {
            if let Some(rep) = ours(n) {
                seed_cmp.push(format!(
                    "at {n} agents P50 {:.1} ms against the seed's {seed_ms:.0} ms ({:.3}x)",
                    rep.commit.p50_ms,
                    rep.commit.p50_ms / seed_ms
                ));
            }
        }
        r.findings.push(format!(
            "the seed's original design aborted from 13 agents on (P50 commit 49 ms at 4 agents, 3.6 s at 8, 10.5 s at 12); its redesign measured P99 1–12 ms up to 32 agents and 979/1000 tasks at 100 agents{}",
            if seed_cmp.is_empty() {
                String::from(" (this sweep has none of the seed's agent counts)")
            } else {
                format!("; this run: {}", seed_cmp.join("; "))
            }
        ));
        if let Some(rep) = ours(largest) {
            r.findings.push(format!(
                "at the largest N, {largest} agents: {}/{} tasks committed, P99 commit {:.1} ms, {:.0} commits/s",
                rep.completed_tasks,
                rep.distinct_tasks,
                rep.commit.p99_ms,
                commits_per_s(rep)
            ));
        }
        if let Some(rep) = ours(largest).filter(|rep| commits_per_s(rep) > 0.0) {
            // Little's law: N pushes always in flight through one trunk.
            let queue_ms = largest as f64 / commits_per_s(rep) * 1e3;
            r.findings.push(format!(
                "in a tight loop every leaf always has a task in flight, so its push waits behind the other leaves' at the hub's one trunk: at {largest} agents, {largest} / {:.0} commits/s = {queue_ms:.0} ms a task cycle, against a measured mean commit of {:.1} ms (the rest of the cycle is the claim) — the latency at large N is the hub's throughput shared by N leaves (all on 2 shared cores here)",
                commits_per_s(rep),
                rep.commit.mean_ms
            ));
        }

        r.tables.push(table);
        if !p99_line.is_empty() {
            r.series.push(Series {
                id: "commit-latency-agents".into(),
                title: "Commit latency against agents (tight loop)".into(),
                x_label: "agents".into(),
                y_label: "commit latency (ms, log scale)".into(),
                lines: vec![
                    Line {
                        name: "p50".into(),
                        points: p50_line,
                    },
                    Line {
                        name: "p99".into(),
                        points: p99_line,
                    },
                    Line {
                        name: format!("SLO {SLO_P99_MS} ms"),
                        points: slo_line,
                    },
                ],
                log_y: true,
            });
            r.series.push(Series {
                id: "commit-rate-agents".into(),
                title: "Hub commits per second against agents (tight loop)".into(),
                x_label: "agents".into(),
                y_label: "commits/s".into(),
                lines: vec![Line {
                    name: "commits/s".into(),
                    points: rate_line,
                }],
                log_y: false,
            });
        }

        let template = config(shape(s.agents[0]), ctx.seed, timeout, nats_url);
        r.config
            .insert("agents".into(), serde_json::to_value(&s.agents)?);
        r.config
            .insert("herd_config".into(), serde_json::to_value(&template)?);
        r.config.insert(
            "herd_config_note".into(),
            "one trial per N: herd_config with workload.agents set to each N in turn".into(),
        );
        r.config.insert("slo_p99_ms".into(), SLO_P99_MS.into());
        r.config.insert(
            "seed_use".into(),
            "HerdConfig.workload.seed of every trial: slot i's tasks, files and contents from seed + i".into(),
        );
        let passed = rows
            .iter()
            .filter(|row| row.outcome.as_ref().is_ok_and(HerdReport::passed))
            .count();
        r.headline = format!(
            "{:?} agents × {} tasks: {passed} of {} trials passed every check; envelope {} (P99 commit ≤ {SLO_P99_MS} ms){}",
            s.agents,
            s.tasks,
            rows.len(),
            env.map_or("none".to_string(), |n| format!("{n} agents")),
            ours(largest).map_or(String::new(), |rep| format!(
                "; at {largest} agents {}/{} committed, P99 {:.1} ms",
                rep.completed_tasks, rep.distinct_tasks, rep.commit.p99_ms
            ))
        );
        r.verdict = Verdict::from_checks(failures, Vec::new());
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(agents: usize, passed: bool, p99_ms: f64) -> Point {
        Point {
            agents,
            passed,
            p99_ms,
        }
    }

    #[test]
    fn the_envelope_is_the_largest_n_of_an_unbroken_run_from_below() {
        // Everything within: the largest N.
        let all = [pt(4, true, 2.0), pt(8, true, 5.0), pt(16, true, 50.0)];
        assert_eq!(envelope(&all, 50.0), Some(16));
        // P99 over the SLO at the top: the N below it.
        let top = [pt(4, true, 2.0), pt(8, true, 5.0), pt(16, true, 50.1)];
        assert_eq!(envelope(&top, 50.0), Some(8));
        // A failed check in the middle ends it there, even if a larger N is within again.
        let mid = [
            pt(4, true, 2.0),
            pt(8, false, 5.0),
            pt(16, true, 9.0),
            pt(32, true, 12.0),
        ];
        assert_eq!(envelope(&mid, 50.0), Some(4));
        // Unsorted input is sorted by N first.
        let unsorted = [pt(16, true, 80.0), pt(4, true, 2.0), pt(8, true, 5.0)];
        assert_eq!(envelope(&unsorted, 50.0), Some(8));
    }

    #[test]
    fn no_n_within_means_no_envelope() {
        assert_eq!(envelope(&[], 50.0), None);
        let none = [pt(4, false, 2.0), pt(8, true, 5.0)];
        assert_eq!(envelope(&none, 50.0), None);
        let slow = [pt(4, true, 60.0), pt(8, true, 70.0)];
        assert_eq!(envelope(&slow, 50.0), None);
        // A trial that did not run has no latency.
        assert_eq!(envelope(&[pt(2, false, f64::INFINITY)], 50.0), None);
        assert_eq!(envelope(&[pt(2, true, f64::NAN)], 50.0), None);
    }

    #[test]
    fn plans_grow_with_the_profile() {
        let (smoke, quick, full) = (
            settings(Profile::Smoke),
            settings(Profile::Quick),
            settings(Profile::Full),
        );
        assert_eq!(full.agents, vec![4, 8, 16, 32, 64, 128]);
        assert!(smoke.agents.len() < quick.agents.len() && quick.agents.len() < full.agents.len());
        for s in [smoke, quick, full] {
            assert!(s.agents.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
