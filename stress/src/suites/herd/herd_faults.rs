//! Suite `herd-faults`: the hub-leaf trial survives its broker restarting and an agent
//! dying mid-task. One trial with two faults injected by [`hub_leaf::herd::run`]:
//!
//! - `nats-server` is restarted (SIGINT, then started again on the same port and store) once
//!   the hub has a third of the tasks committed; leaves retry the requests it cut;
//! - the leaf of slot 1 dies in the middle of its task `tasks / 2` (after winning the claim,
//!   before committing or releasing); its claim expires after the claim TTL (2 s) and a
//!   replacement agent takes over the slot's remaining tasks, the one in flight included.
//!
//! The trial needs a server of its own to restart, so `NATS_URL` is ignored here (and the
//! result says so when it is set). A short think time (2 ms in smoke, 5 ms otherwise) keeps
//! the run going long enough for both faults to land while tasks are in flight.
//!
//! Full profile: 16 agents × 30 tasks; quick: 4 × 10; smoke: 3 × 6.
//!
//! FAIL unless every check of the trial passed (every task committed once, no file lost,
//! every leaf at the hub's tip), the server was restarted exactly once, exactly one leaf was
//! killed, at least one task was taken over from it, and no task was fork unrecoverable.

use std::time::Duration;

use anyhow::Result;
use collector::{Metric, SuiteResult, Table, Verdict};
use hub_leaf::herd::{Faults, HerdConfig, HerdReport, KillLeaf};

use super::common::{
    check_failures, checks_table, config, env_nats_url, run_timeout, run_trial, scale_of,
    summary_metrics, summary_table, Shape,
};
use crate::harness::new_result;
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct HerdFaults;

/// The slot of the leaf that is killed.
const KILLED_SLOT: usize = 1;
/// The claim TTL: how long after its last refresh a dead holder's claim expires.
const CLAIM_TTL: Duration = Duration::from_secs(2);

struct Settings {
    agents: usize,
    tasks: usize,
    think_ms: u64,
    expected_s: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            agents: 3,
            tasks: 6,
            think_ms: 2,
            // Dominated by the fault waits: the claim TTL and a request cut by the restart.
            expected_s: 12,
        },
        Profile::Quick => Settings {
            agents: 4,
            tasks: 10,
            think_ms: 5,
            expected_s: 13,
        },
        Profile::Full => Settings {
            agents: 16,
            tasks: 30,
            think_ms: 5,
            expected_s: 20,
        },
    }
}

/// The faults of a trial of `agents × tasks`: restart the server after a third of the
/// commits, kill slot [`KILLED_SLOT`] in its task `tasks / 2`.
fn faults(agents: usize, tasks: usize) -> Faults {
    Faults {
        restart_nats_after_commits: Some(((agents * tasks) / 3).max(1) as u64),
        kill_leaf: Some(KillLeaf {
            slot: KILLED_SLOT,
            after_tasks: tasks / 2,
        }),
    }
}

/// The fault rules beyond the trial's own checks.
fn judge(rep: &HerdReport) -> Vec<String> {
    let mut failures = Vec::new();
    if rep.nats_restarts != 1 {
        failures.push(format!(
            "nats-server was restarted {} times (expected exactly 1)",
            rep.nats_restarts
        ));
    }
    if rep.leaves_killed != 1 {
        failures.push(format!(
            "{} leaves were killed (expected exactly 1)",
            rep.leaves_killed
        ));
    }
    if rep.tasks_taken_over < 1 {
        failures.push(format!(
            "no task was taken over from the killed leaf (expected at least 1: its in-flight task's claim must expire and be won again); {} claims lost",
            rep.claims_lost
        ));
    }
    if rep.fork_unrecoverable != 0 {
        failures.push(format!(
            "{} tasks fork unrecoverable (expected 0)",
            rep.fork_unrecoverable
        ));
    }
    failures
}

fn faults_table(cfg: &HerdConfig, rep: &HerdReport) -> Table {
    let mut t = Table::new(
        "Faults: configured and observed",
        &["fault", "configured", "observed"],
    );
    t.push_row([
        "nats-server restart".to_string(),
        cfg.faults
            .restart_nats_after_commits
            .map_or("none".into(), |n| format!("once, after {n} hub commits")),
        format!(
            "{} restarts; {} requests retried by the leaves",
            rep.nats_restarts, rep.request_retries
        ),
    ]);
    t.push_row([
        "leaf killed mid-task".to_string(),
        cfg.faults.kill_leaf.map_or("none".into(), |k| {
            format!(
                "slot {} in its task {} (claim TTL {} s)",
                k.slot,
                k.after_tasks,
                cfg.claim_ttl.as_secs_f64()
            )
        }),
        format!(
            "{} killed; {} tasks taken over; {} pushes fenced, {} duplicates",
            rep.leaves_killed, rep.tasks_taken_over, rep.fenced, rep.duplicates
        ),
    ]);
    t
}

impl Suite for HerdFaults {
    fn name(&self) -> &'static str {
        "herd-faults"
    }

    fn description(&self) -> &'static str {
        "the hub-leaf trial with nats-server restarted mid-run and a leaf killed mid-task (full 16 x 30): every task lands once, the dead leaf's task is taken over, nothing lost"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let f = faults(s.agents, s.tasks);
        Plan {
            scale: format!(
                "{} agents x {} tasks, think {} ms; nats-server restart after {} commits, slot {KILLED_SLOT} killed in task {}",
                s.agents,
                s.tasks,
                s.think_ms,
                f.restart_nats_after_commits.unwrap_or(0),
                s.tasks / 2
            ),
            expected_s: s.expected_s,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        // The restart needs a server of our own: NATS_URL is ignored on purpose.
        let ignored_url = env_nats_url();
        let mut cfg = config(
            Shape {
                agents: s.agents,
                tasks: s.tasks,
                think_ms: s.think_ms,
                overlap: 0.0,
            },
            ctx.seed,
            run_timeout(ctx.profile, Duration::from_secs(600)),
            None,
        );
        cfg.claim_ttl = CLAIM_TTL;
        cfg.faults = faults(s.agents, s.tasks);
        let rep = run_trial(&cfg)?;
        let mut failures = check_failures("", &rep);
        failures.extend(judge(&rep));

        r.metrics.extend(summary_metrics(&rep));
        r.metrics.push(
            Metric::new("tasks_taken_over", rep.tasks_taken_over as f64, "").higher_is_better(),
        );
        r.metrics
            .push(Metric::new("nats_restarts", rep.nats_restarts as f64, ""));
        r.metrics
            .push(Metric::new("leaves_killed", rep.leaves_killed as f64, ""));
        r.metrics
            .push(Metric::new("fenced_pushes", rep.fenced as f64, ""));
        r.metrics
            .push(Metric::new("duplicate_pushes", rep.duplicates as f64, ""));
        r.tables.push(faults_table(&cfg, &rep));
        r.tables.push(checks_table(
            format!("Checks of the {} trial with faults", scale_of(&cfg)),
            &rep,
        ));
        r.tables.push(summary_table(
            "The seed's summary block (with faults)",
            &rep,
        ));
        if let Some(u) = &ignored_url {
            r.findings.push(format!(
                "NATS_URL is set ({u}) but ignored: restarting the broker needs a nats-server of the trial's own ({})",
                rep.nats_url
            ));
        }
        if rep.request_retries > 0 {
            r.findings.push(format!(
                "{} NATS requests were retried; the slowest commit took {:.0} ms (P99 {:.0} ms): a request cut by the broker's restart is retried only once the leaf's request timeout has passed, so a few commits carry that wait",
                rep.request_retries, rep.commit.max_ms, rep.commit.p99_ms
            ));
        }
        r.findings.push(format!(
            "the run's wall time includes waiting out the dead leaf's claim (TTL {} s) before the takeover, and the broker's restart",
            CLAIM_TTL.as_secs_f64()
        ));
        r.config
            .insert("herd_config".into(), serde_json::to_value(&cfg)?);
        r.config.insert(
            "seed_use".into(),
            "HerdConfig.workload.seed: slot i's tasks, files, contents and think times from seed + i".into(),
        );
        r.headline = format!(
            "{} agents × {} tasks with nats-server restarted and slot {KILLED_SLOT} killed: {}/{} committed, {} restarts, {} killed, {} tasks taken over, {} request retries, {} unrecoverable; P99 commit {:.1} ms, runtime {:.1} s",
            rep.agents,
            rep.tasks_per_agent,
            rep.hub_commits,
            rep.distinct_tasks,
            rep.nats_restarts,
            rep.leaves_killed,
            rep.tasks_taken_over,
            rep.request_retries,
            rep.fork_unrecoverable,
            rep.commit.p99_ms,
            rep.runtime_s
        );
        r.verdict = Verdict::from_checks(failures, Vec::new());
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_sit_inside_the_run() {
        for p in Profile::ALL {
            let s = settings(p);
            let f = faults(s.agents, s.tasks);
            let restart = f.restart_nats_after_commits.unwrap();
            assert!(restart >= 1 && restart < (s.agents * s.tasks) as u64, "{p}");
            let k = f.kill_leaf.unwrap();
            assert!(k.slot < s.agents, "{p}");
            assert!(k.after_tasks < s.tasks, "{p}");
            assert!(s.think_ms > 0, "{p}");
        }
        assert_eq!(
            faults(4, 10),
            Faults {
                restart_nats_after_commits: Some(13),
                kill_leaf: Some(KillLeaf {
                    slot: 1,
                    after_tasks: 5
                }),
            }
        );
    }

    #[test]
    fn each_fault_rule_fails_on_its_own() {
        let ok = HerdReport {
            nats_restarts: 1,
            leaves_killed: 1,
            tasks_taken_over: 1,
            ..HerdReport::default()
        };
        assert!(judge(&ok).is_empty());
        type Spoil = fn(&mut HerdReport);
        let cases: [(Spoil, &str); 4] = [
            (|r| r.nats_restarts = 0, "restarted 0 times"),
            (|r| r.leaves_killed = 2, "2 leaves were killed"),
            (|r| r.tasks_taken_over = 0, "no task was taken over"),
            (|r| r.fork_unrecoverable = 1, "1 tasks fork unrecoverable"),
        ];
        for (spoil, expect) in cases {
            let mut r = ok.clone();
            spoil(&mut r);
            let f = judge(&r);
            assert_eq!(f.len(), 1, "{f:?}");
            assert!(f[0].contains(expect), "{f:?}");
        }
    }
}
