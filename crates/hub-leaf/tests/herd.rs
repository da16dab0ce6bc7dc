//! Whole `herd` runs, small: disjoint slots in a tight loop, overlapping tasks (claims lost,
//! shared files), and the faults (nats-server restarted mid-run, a leaf killed mid-task whose
//! claim expires and whose task another agent finishes). Each run starts its own
//! `nats-server` in its own temp dir and is bounded by its `run_timeout`.
#![cfg(not(loom))]

use std::time::Duration;

use hub_leaf::herd::{run, Faults, HerdConfig, HerdError, KillLeaf};
use hub_leaf::workload::WorkloadConfig;

fn config(
    agents: usize,
    tasks: usize,
    seed: u64,
    overlap: f64,
    dir: &std::path::Path,
) -> HerdConfig {
    HerdConfig {
        workload: WorkloadConfig {
            agents,
            tasks_per_agent: tasks,
            seed,
            think_ms: 0,
            overlap,
        },
        work_dir: Some(dir.to_path_buf()),
        nats_url: None,
        claim_ttl: Duration::from_secs(1),
        run_timeout: Duration::from_secs(120),
        ..HerdConfig::default()
    }
}

fn assert_passed(r: &hub_leaf::herd::HerdReport) {
    assert!(
        r.passed(),
        "failed checks: {:#?}\n{}",
        r.failures(),
        r.summary()
    );
}

#[test]
fn disjoint_slots_commit_every_task_once_and_every_leaf_ends_at_the_hub_tip() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&config(4, 6, 7, 0.0, dir.path())).unwrap();
    assert_passed(&r);
    assert_eq!((r.total, r.hub_commits, r.completed_tasks), (24, 24, 24));
    assert_eq!((r.claims_won, r.claims_lost), (24, 0));
    assert_eq!(r.fork_unrecoverable, 0);
    assert_eq!(
        r.broadcasts_pulled + r.broadcasts_skipped,
        r.broadcasts_received
    );
    assert!(r.commit.count == 24 && r.commit.p50_ms > 0.0 && r.commit.p99_ms >= r.commit.p50_ms);
    let summary = r.summary();
    for line in [
        "herd-hub-leaf trial: agents=4 tasks=6 total=24",
        "hub commits: 24",
        "fork unrecoverable: 0",
        "claims won: 24",
        "claims lost: 0",
        "broadcasts pulled: ",
        "broadcasts skipped (idempotent): ",
        "P50/P99 commit ms: ",
        "total runtime: ",
    ] {
        assert!(summary.contains(line), "{line:?} missing from\n{summary}");
    }
    // The temp dir is gone unless kept.
    assert!(!r.dir.exists(), "{} left behind", r.dir.display());
}

#[test]
fn overlapping_tasks_lose_claims_but_nothing_is_done_twice_or_lost() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&config(4, 10, 3, 0.6, dir.path())).unwrap();
    assert_passed(&r);
    assert!(
        r.distinct_tasks < r.total,
        "the seed drew no shared task twice"
    );
    assert_eq!(r.hub_commits, r.distinct_tasks as u64);
    assert_eq!(r.claims_won, r.distinct_tasks as u64);
    assert!(r.claims_lost > 0, "{}", r.summary());
    assert_eq!(r.fork_unrecoverable, 0);
}

#[test]
fn a_killed_leaf_s_task_is_finished_by_another_and_a_nats_restart_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(3, 6, 1, 0.0, dir.path());
    c.workload.think_ms = 20;
    c.faults = Faults {
        restart_nats_after_commits: Some(5),
        kill_leaf: Some(KillLeaf {
            slot: 1,
            after_tasks: 2,
        }),
    };
    let r = run(&c).unwrap();
    assert_passed(&r);
    assert_eq!(r.hub_commits, 18);
    assert_eq!((r.leaves_killed, r.nats_restarts), (1, 1));
    assert!(r.tasks_taken_over >= 1);
    assert!(r
        .checks
        .iter()
        .any(|c| c.name.contains("killed leaf") && c.passed));
}

#[test]
fn bad_configurations_are_refused_with_the_value_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(2, 2, 1, 0.0, dir.path());
    c.faults.kill_leaf = Some(KillLeaf {
        slot: 5,
        after_tasks: 0,
    });
    let e = run(&c).unwrap_err();
    assert!(matches!(e, HerdError::Config(_)), "{e}");
    assert!(e.to_string().contains("slot 5"), "{e}");

    let mut c = config(2, 2, 1, 0.0, dir.path());
    c.claim_ttl = Duration::from_millis(10);
    assert!(run(&c).unwrap_err().to_string().contains("claim_ttl 10ms"));

    let mut c = config(2, 2, 1, 0.0, dir.path());
    c.nats_url = Some("nats://127.0.0.1:1".into());
    c.faults.restart_nats_after_commits = Some(1);
    assert!(run(&c).unwrap_err().to_string().contains("NATS_URL"));

    let c = config(0, 2, 1, 0.0, dir.path());
    assert!(run(&c).unwrap_err().to_string().contains("HERD_AGENTS = 0"));
    // Nothing was left in the work dir by the refused runs.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
