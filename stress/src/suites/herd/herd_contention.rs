//! Suite `herd-contention`: the hub-leaf trial with agents racing for the same tasks and the
//! same files. The same N × T runs at overlap 0 (disjoint slots), 0.3 and 0.6: with overlap
//! `p` each task is, with probability `p`, one of a shared pool whose files live under
//! `shared/`, so agents lose claims to each other and their pushes fork.
//!
//! Full profile: 16 agents × 30 tasks; quick: 4 × 8; smoke: 2 × 4. Tight loop. `NATS_URL`,
//! when set, names the server every trial uses.
//!
//! FAIL unless every trial passed its checks (among them: no file content lost — a shared
//! file holds one of its tasks' writes, an own-slot file exactly the last write), no task
//! was fork unrecoverable at any overlap, overlap 0 lost no claim, and the highest overlap
//! lost more claims than overlap 0. Fork retries are recorded, not judged: the hub's fork
//! grants hold them to about one per contended commit, so they need not rise strictly.
//! INCONCLUSIVE if the seed's workload at the highest overlap drew no shared task twice
//! (nothing to race for; a claim lost then is not expected).

use std::time::Duration;

use anyhow::Result;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use hub_leaf::herd::HerdReport;

use super::common::{check_failures, config, env_nats_url, finite, run_timeout, run_trial, Shape};
use crate::harness::new_result;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct HerdContention;

/// The overlaps run, lowest first; the first must be 0 (the baseline without contention).
const OVERLAPS: [f64; 3] = [0.0, 0.3, 0.6];

struct Settings {
    agents: usize,
    tasks: usize,
    expected_s: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            agents: 2,
            tasks: 4,
            expected_s: 2,
        },
        Profile::Quick => Settings {
            agents: 4,
            tasks: 8,
            expected_s: 3,
        },
        Profile::Full => Settings {
            agents: 16,
            tasks: 30,
            expected_s: 15,
        },
    }
}

/// What the contention verdict looks at, per overlap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Contention {
    overlap: f64,
    passed: bool,
    claims_lost: u64,
    fork_unrecoverable: u64,
    /// Task draws that repeat an id already drawn (`total − distinct`): each must lose its
    /// claim, so it is the contention the workload guarantees.
    repeated_draws: usize,
}

impl Contention {
    fn of(overlap: f64, rep: &HerdReport) -> Contention {
        Contention {
            overlap,
            passed: rep.passed(),
            claims_lost: rep.claims_lost,
            fork_unrecoverable: rep.fork_unrecoverable,
            repeated_draws: rep.total.saturating_sub(rep.distinct_tasks),
        }
    }
}

/// The contention rules over the runs (lowest overlap first): `(failures, doubts)`. The
/// failed checks themselves are listed apart (see [`check_failures`]); here a failed trial
/// is one line naming its overlap.
fn judge(runs: &[Contention]) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut doubts = Vec::new();
    let failed: Vec<String> = runs
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.overlap.to_string())
        .collect();
    if !failed.is_empty() {
        failures.push(format!(
            "the trial failed its checks at overlap {}",
            failed.join(", ")
        ));
    }
    for c in runs.iter().filter(|c| c.fork_unrecoverable > 0) {
        failures.push(format!(
            "overlap {}: {} tasks fork unrecoverable (expected 0: a contended push must land within its fork retries)",
            c.overlap, c.fork_unrecoverable
        ));
    }
    let (Some(base), Some(top)) = (runs.first(), runs.last()) else {
        failures.push("no trial ran".into());
        return (failures, doubts);
    };
    if base.overlap != 0.0 {
        failures.push(format!(
            "the baseline ran at overlap {} (expected 0)",
            base.overlap
        ));
    } else if base.claims_lost != 0 {
        failures.push(format!(
            "overlap 0 lost {} claims (expected 0: every agent owns its tasks)",
            base.claims_lost
        ));
    }
    if runs.len() < 2 {
        failures.push("only one overlap ran: nothing to compare".into());
    } else if top.repeated_draws == 0 {
        doubts.push(format!(
            "at overlap {} the seed's workload drew no shared task twice: nothing to race for, so no lost claim is expected",
            top.overlap
        ));
    } else if top.claims_lost <= base.claims_lost {
        failures.push(format!(
            "overlap {} lost {} claims, not more than overlap {} ({}), though {} task draws repeat an id already drawn",
            top.overlap, top.claims_lost, base.overlap, base.claims_lost, top.repeated_draws
        ));
    }
    (failures, doubts)
}

impl Suite for HerdContention {
    fn name(&self) -> &'static str {
        "herd-contention"
    }

    fn description(&self) -> &'static str {
        "the hub-leaf trial with agents racing for shared tasks and files (overlap 0, 0.3, 0.6; full 16 x 30): claims lost, fork retries, nothing unrecoverable, no file content lost"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{} agents x {} tasks at overlap {:?}, tight loop",
                s.agents, s.tasks, OVERLAPS
            ),
            expected_s: s.expected_s,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures = Vec::new();
        let nats_url = env_nats_url();
        let timeout = run_timeout(ctx.profile, Duration::from_secs(600));
        let shape = |overlap| Shape {
            agents: s.agents,
            tasks: s.tasks,
            think_ms: 0,
            overlap,
        };
        let mut reports = Vec::with_capacity(OVERLAPS.len());
        for overlap in OVERLAPS {
            let cfg = config(shape(overlap), ctx.seed, timeout, nats_url.clone());
            reports.push((overlap, run_trial(&cfg)?));
        }

        let mut table = Table::new(
            format!(
                "{} agents × {} tasks, tight loop, per overlap",
                s.agents, s.tasks
            ),
            &[
                "overlap",
                "claims won",
                "claims lost",
                "repeated draws",
                "fork retries",
                "fork unrecoverable",
                "completed",
                "distinct tasks",
                "hub commits",
                "P99 commit ms",
                "hub parked",
                "passed",
            ],
        );
        let (mut lost_line, mut retries_line) = (Vec::new(), Vec::new());
        let mut runs = Vec::with_capacity(reports.len());
        for (overlap, rep) in &reports {
            failures.extend(check_failures(&format!("overlap {overlap}: "), rep));
            let c = Contention::of(*overlap, rep);
            runs.push(c);
            table.push_row([
                format!("{overlap}"),
                rep.claims_won.to_string(),
                rep.claims_lost.to_string(),
                c.repeated_draws.to_string(),
                rep.fork_retries.to_string(),
                rep.fork_unrecoverable.to_string(),
                rep.completed_tasks.to_string(),
                rep.distinct_tasks.to_string(),
                rep.hub_commits.to_string(),
                format!("{:.1}", rep.commit.p99_ms),
                rep.hub_parked.to_string(),
                if rep.passed() { "yes" } else { "NO" }.to_string(),
            ]);
            let pct = (overlap * 100.0).round() as u64;
            r.metrics.push(Metric::new(
                format!("claims_lost_overlap_{pct}pct"),
                rep.claims_lost as f64,
                "",
            ));
            r.metrics.push(Metric::new(
                format!("fork_retries_overlap_{pct}pct"),
                rep.fork_retries as f64,
                "",
            ));
            let mut p99 = Metric::new(
                format!("commit_p99_ms_overlap_{pct}pct"),
                finite(rep.commit.p99_ms),
                "ms",
            )
            .lower_is_better();
            if Some(overlap) == OVERLAPS.last() {
                p99 = p99.headline();
            }
            r.metrics.push(p99);
            lost_line.push([*overlap, rep.claims_lost as f64]);
            retries_line.push([*overlap, rep.fork_retries as f64]);
        }
        let (rule_failures, doubts) = judge(&runs);
        failures.extend(rule_failures);
        let unrecoverable: u64 = runs.iter().map(|c| c.fork_unrecoverable).sum();
        r.metrics.push(
            Metric::new("fork_unrecoverable_total", unrecoverable as f64, "")
                .lower_is_better()
                .headline(),
        );
        r.tables.push(table);
        r.series.push(Series {
            id: "contention-overlap".into(),
            title: format!(
                "Claims lost and fork retries against overlap ({} × {})",
                s.agents, s.tasks
            ),
            x_label: "overlap (fraction of tasks from the shared pool)".into(),
            y_label: "count".into(),
            lines: vec![
                Line {
                    name: "claims lost".into(),
                    points: lost_line,
                },
                Line {
                    name: "fork retries".into(),
                    points: retries_line,
                },
            ],
            log_y: false,
        });
        r.findings.push(
            "repeated draws = total − distinct tasks: task draws whose id was already drawn (by another agent or by the same one), each of which must lose its claim; claims lost above it are races lost to a holder still at work".into(),
        );
        r.findings.push(
            "fork retries are recorded, not judged: the hub's fork grants let the forked leaf retry first, so they stay near one per contended commit rather than rising with overlap".into(),
        );

        let template = config(shape(0.0), ctx.seed, timeout, nats_url);
        r.config
            .insert("overlaps".into(), serde_json::to_value(OVERLAPS)?);
        r.config
            .insert("herd_config".into(), serde_json::to_value(&template)?);
        r.config.insert(
            "herd_config_note".into(),
            "one trial per overlap: herd_config with workload.overlap set to each in turn".into(),
        );
        r.config.insert(
            "seed_use".into(),
            "HerdConfig.workload.seed of every trial: slot i's tasks and its shared draws from seed + i, a shared task's files from the seed and its number".into(),
        );
        let summary: Vec<String> = reports
            .iter()
            .map(|(o, rep)| {
                format!(
                    "overlap {o}: {} lost, {} retries, P99 {:.1} ms",
                    rep.claims_lost, rep.fork_retries, rep.commit.p99_ms
                )
            })
            .collect();
        r.headline = format!(
            "{} agents × {} tasks: {}; {unrecoverable} fork unrecoverable",
            s.agents,
            s.tasks,
            summary.join("; ")
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(overlap: f64, claims_lost: u64, repeated_draws: usize) -> Contention {
        Contention {
            overlap,
            passed: true,
            claims_lost,
            fork_unrecoverable: 0,
            repeated_draws,
        }
    }

    #[test]
    fn more_claims_lost_at_the_top_than_none_at_zero_passes() {
        let (f, d) = judge(&[c(0.0, 0, 0), c(0.3, 2, 2), c(0.6, 9, 7)]);
        assert!(f.is_empty() && d.is_empty(), "{f:?} {d:?}");
        // The middle overlap need not be monotonic.
        let (f, _) = judge(&[c(0.0, 0, 0), c(0.3, 12, 2), c(0.6, 9, 7)]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let (f, _) = judge(&[c(0.0, 1, 0), c(0.6, 9, 7)]);
        assert!(f[0].contains("overlap 0 lost 1 claims"), "{f:?}");
        let (f, _) = judge(&[c(0.0, 0, 0), c(0.6, 0, 7)]);
        assert!(f[0].contains("not more than overlap 0"), "{f:?}");
        let mut bad = c(0.3, 3, 2);
        bad.fork_unrecoverable = 2;
        let (f, _) = judge(&[c(0.0, 0, 0), bad, c(0.6, 9, 7)]);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("overlap 0.3: 2 tasks fork unrecoverable"),
            "{f:?}"
        );
        let mut failed = c(0.6, 9, 7);
        failed.passed = false;
        let (f, _) = judge(&[c(0.0, 0, 0), failed]);
        assert_eq!(
            f,
            vec!["the trial failed its checks at overlap 0.6".to_string()]
        );
        let (f, _) = judge(&[]);
        assert_eq!(f, vec!["no trial ran".to_string()]);
        let (f, _) = judge(&[c(0.0, 0, 0)]);
        assert!(f[0].contains("only one overlap"), "{f:?}");
    }

    #[test]
    fn a_workload_without_repeats_is_inconclusive_not_failed() {
        let (f, d) = judge(&[c(0.0, 0, 0), c(0.6, 0, 0)]);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("drew no shared task twice"), "{d:?}");
    }

    #[test]
    fn the_baseline_is_disjoint() {
        assert_eq!(OVERLAPS[0], 0.0);
        assert!(OVERLAPS.windows(2).all(|w| w[0] < w[1]));
    }
}
