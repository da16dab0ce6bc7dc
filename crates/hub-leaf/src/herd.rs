//! The `herd` trial: one hub, `HERD_AGENTS` leaves in a tight loop (or with think time),
//! one `nats-server`, all under one temp dir; the seed's summary block, counted in-process,
//! and the checks that fail the trial.
//!
//! [`run`] starts (or, with a URL, uses) `nats-server`, starts the [`Hub`](crate::hub::Hub)
//! on its own thread, runs each leaf on its own thread with its own connection, repository
//! and worktree, injects the configured [`Faults`], waits for every task (bounded by
//! [`HerdConfig::run_timeout`]), drains every leaf, and checks:
//!
//! - hub commits = completed tasks = distinct tasks (`agents × tasks` with disjoint slots);
//! - every leaf's final tip equals the hub's;
//! - every file's final content equals what the seed's workload implies (own slots), or is
//!   one of the writes of its shared tasks;
//! - broadcasts pulled + skipped = broadcasts received, on every leaf;
//! - no `SQLITE_BUSY` anywhere;
//! - no fork unrecoverable, no failed task, no commit lost at teardown.

#![cfg(not(loom))]

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadConfig;

/// Faults injected into a run (the `herd-faults` suite).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Restart `nats-server` (SIGINT, then start again on the same port and store) once the
    /// hub has this many commits. Needs a server of our own (not `NATS_URL`).
    pub restart_nats_after_commits: Option<u64>,
    /// Kill one leaf in the middle of a task: after it has won the claim of its task number
    /// `after_tasks` (0-based), it stops dead without committing, releasing or draining, as
    /// a crashed agent would. Its claim then expires, and a replacement agent takes over the
    /// slot's remaining tasks, including the one in flight.
    pub kill_leaf: Option<KillLeaf>,
}

/// Which leaf to kill, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillLeaf {
    /// The slot of the leaf.
    pub slot: usize,
    /// The task index (0-based) in whose middle it dies.
    pub after_tasks: usize,
}

/// A trial's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HerdConfig {
    /// The workload knobs (`HERD_*`).
    pub workload: WorkloadConfig,
    /// Where the trial's temp dir is made (`None`: the system temp dir). Everything the trial
    /// writes (NATS store, hub and leaf repositories, worktrees) is under it and removed at
    /// the end unless [`HerdConfig::keep_dir`].
    pub work_dir: Option<PathBuf>,
    /// Keep the trial's temp dir (its path is in [`HerdReport::dir`]).
    pub keep_dir: bool,
    /// An existing NATS server or cluster (`NATS_URL`); `None` starts our own.
    pub nats_url: Option<String>,
    /// The claim TTL: a dead holder's claim expires this long after its last refresh.
    #[serde(with = "duration_ms")]
    pub claim_ttl: Duration,
    /// Fork retries per task before it is fork unrecoverable.
    pub fork_retry_limit: u32,
    /// How long the hub keeps the trunk for a leaf it just answered with a fork (its retry
    /// goes first); other pushes wait meanwhile. Zero turns fork grants off.
    pub grant_timeout: Duration,
    /// Bound on one push or pull request; a request lost to a server restart is sent again
    /// after it.
    #[serde(with = "duration_ms")]
    pub request_timeout: Duration,
    /// Bound on the whole run; past it the trial stops and fails.
    #[serde(with = "duration_ms")]
    pub run_timeout: Duration,
    /// Faults to inject.
    pub faults: Faults,
}

impl Default for HerdConfig {
    fn default() -> Self {
        HerdConfig {
            workload: WorkloadConfig::default(),
            work_dir: None,
            keep_dir: false,
            nats_url: None,
            claim_ttl: Duration::from_secs(2),
            fork_retry_limit: 32,
            grant_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            run_timeout: Duration::from_secs(600),
            faults: Faults::default(),
        }
    }
}

/// A duration as whole milliseconds in JSON (`"claim_ttl": 2000`).
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Commit latency quantiles, in milliseconds (one sample per committed task: from the
/// task's files read back from the worktree to the push accepted, fork retries included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// One verification of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked, e.g. `hub commits = completed tasks = distinct tasks`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// Everything a run counted, in-process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HerdReport {
    /// Agents.
    pub agents: usize,
    /// Tasks per agent.
    pub tasks_per_agent: usize,
    /// `agents × tasks_per_agent`.
    pub total: usize,
    /// Distinct task ids (`total` with disjoint slots; fewer with overlap).
    pub distinct_tasks: usize,
    /// The seed.
    pub seed: u64,
    /// The overlap.
    pub overlap: f64,
    /// The mean think time.
    pub think_ms: u64,
    /// Commits on the hub's trunk at the end.
    pub hub_commits: u64,
    /// Tasks whose commit is on the trunk, as the leaves counted them.
    pub completed_tasks: u64,
    /// Pushes answered with a fork (each one a fork retry).
    pub fork_retries: u64,
    /// Tasks that ran out of fork retries.
    pub fork_unrecoverable: u64,
    /// Claims won (a task is counted once per leaf that won it: a killed leaf's claim and
    /// its taker's both count).
    pub claims_won: u64,
    /// Claim attempts lost (held by another agent, or the task already done).
    pub claims_lost: u64,
    /// Tasks won after a lost attempt: their holder died and its claim expired (or gave the
    /// task up).
    pub tasks_taken_over: u64,
    /// Tasks claimed again after their claim was lost under them (push fenced).
    pub reclaims: u64,
    /// Accepted commits a leaf's repository could not take at once (caught up later).
    pub land_failures: u64,
    /// Times a leaf's tip watch was opened again.
    pub watch_reopened: u64,
    /// Pushes the hub fenced (stale token).
    pub fenced: u64,
    /// Pushes answered `Duplicate` (task already on the trunk).
    pub duplicates: u64,
    /// Tasks that failed for any reason (fork unrecoverable included).
    pub failed_tasks: u64,
    /// Tip broadcasts the leaves received.
    pub broadcasts_received: u64,
    /// Broadcasts served by a pull (started for it or already in flight).
    pub broadcasts_pulled: u64,
    /// Broadcasts whose tip the leaf already had.
    pub broadcasts_skipped: u64,
    /// Pull requests the leaves sent because of broadcasts (the network cost).
    pub broadcast_pull_requests: u64,
    /// Broadcast pull requests per hub commit per leaf (≤ 1: no N² storm).
    pub broadcast_pulls_per_commit_per_leaf: f64,
    /// `SQLITE_BUSY` (or `SQLITE_LOCKED`) errors seen anywhere.
    pub sqlite_busy: u64,
    /// Pushes the hub parked behind another leaf's fork retry.
    pub hub_parked: u64,
    /// Fork grants that expired without the leaf's retry.
    pub hub_grants_expired: u64,
    /// Pull requests the hub served.
    pub hub_pulls: u64,
    /// Push requests the hub served.
    pub hub_pushes: u64,
    /// Mean time from a fork reply to the forked leaf's retry reaching the hub's queue, ms.
    pub hub_fork_turnaround_ms: f64,
    /// Mean time the hub spent deciding one push (SQLite included), ms.
    pub hub_decide_ms: f64,
    /// NATS requests the leaves retried after a timeout or a lost connection.
    pub request_retries: u64,
    /// nats-server restarts done.
    pub nats_restarts: u64,
    /// Leaves killed.
    pub leaves_killed: u64,
    /// Commit latency.
    pub commit: Latency,
    /// Wall time of the whole run, setup and drain included.
    pub runtime_s: f64,
    /// Wall time from the first task to the last commit.
    pub tasks_s: f64,
    /// The hub's trunk tip at the end (`#seq hash`).
    pub hub_tip: String,
    /// The trial's temp dir.
    pub dir: PathBuf,
    /// The NATS URL used.
    pub nats_url: String,
    /// The verifications.
    pub checks: Vec<Check>,
}

impl HerdReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// The seed's summary block, every line counted in-process.
    pub fn summary(&self) -> String {
        format!(
            "herd-hub-leaf trial: agents={} tasks={} total={}\n\
             hub commits: {}\n\
             fork retries: {}\n\
             fork unrecoverable: {}\n\
             claims won: {}\n\
             claims lost: {}\n\
             broadcasts pulled: {}\n\
             broadcasts skipped (idempotent): {}\n\
             P50/P99 commit ms: {:.1} / {:.1}\n\
             total runtime: {:.1}s\n",
            self.agents,
            self.tasks_per_agent,
            self.total,
            self.hub_commits,
            self.fork_retries,
            self.fork_unrecoverable,
            self.claims_won,
            self.claims_lost,
            self.broadcasts_pulled,
            self.broadcasts_skipped,
            self.commit.p50_ms,
            self.commit.p99_ms,
            self.runtime_s,
        )
    }
}

/// What stops a run before it can report.
#[derive(Debug, thiserror::Error)]
pub enum HerdError {
    /// A workload knob is out of range.
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid herd configuration: {0}")]
    Config(String),
    /// NATS could not be started or reached.
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    /// The hub could not start or failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// The hub's repository could not be read for the checks.
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    /// Setting up the run failed (temp dir, threads).
    #[error("{what}: {detail}")]
    Setup {
        /// What was being done.
        what: String,
        /// The error.
        detail: String,
    },
}

#[cfg(not(loom))]
pub use runner::run;

#[cfg(not(loom))]
mod runner {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Instant;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::claims::MIN_TTL;
    use crate::hub::{Hub, HubConfig};
    use crate::leaf::{self, LeafConfig, LeafEvent, LeafHandle, LeafOutcome};
    use crate::nats::Nats;
    use crate::repo::Repo;
    use crate::workload::{Task, Workload};

    fn setup(what: impl Into<String>, e: impl std::fmt::Display) -> HerdError {
        HerdError::Setup {
            what: what.into(),
            detail: e.to_string(),
        }
    }

    fn validate(config: &HerdConfig) -> Result<(), HerdError> {
        config.workload.validate()?;
        let w = &config.workload;
        if config.claim_ttl < MIN_TTL {
            return Err(HerdError::Config(format!(
                "claim_ttl {:?} is below the shortest the server honours, {MIN_TTL:?}",
                config.claim_ttl
            )));
        }
        if config.fork_retry_limit == 0 {
            return Err(HerdError::Config(
                "fork_retry_limit 0: expected at least 1".to_string(),
            ));
        }
        for (name, d) in [
            ("run_timeout", config.run_timeout),
            ("request_timeout", config.request_timeout),
        ] {
            if d.is_zero() {
                return Err(HerdError::Config(format!(
                    "{name} 0: expected a positive duration"
                )));
            }
        }
        if let Some(k) = config.faults.kill_leaf {
            if k.slot >= w.agents || k.after_tasks >= w.tasks_per_agent {
                return Err(HerdError::Config(format!(
                    "kill_leaf slot {} after {} tasks: expected slot < {} agents and a task \
                     index < {} tasks per agent",
                    k.slot, k.after_tasks, w.agents, w.tasks_per_agent
                )));
            }
        }
        if config.faults.restart_nats_after_commits.is_some()
            && config
                .nats_url
                .as_deref()
                .is_some_and(|u| !u.trim().is_empty())
        {
            return Err(HerdError::Config(
                "restart_nats_after_commits needs a nats-server of our own, not NATS_URL"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// Names shared by the hub and the leaves of one run, unique so that runs can share a
    /// server.
    struct Names {
        prefix: String,
        tip: String,
        claims: String,
        done: String,
    }

    /// Runs the trial. Returns the report (check [`HerdReport::passed`]); `Err` only when
    /// the run could not be set up.
    pub fn run(config: &HerdConfig) -> Result<HerdReport, HerdError> {
        validate(config)?;
        let workload = Workload::new(config.workload.clone())?;
        let started = Instant::now();
        let base = config.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base)
            .map_err(|e| setup(format!("create {}", base.display()), e))?;
        let tmp = tempfile::Builder::new()
            .prefix("herd-")
            .tempdir_in(&base)
            .map_err(|e| setup(format!("temp dir in {}", base.display()), e))?;
        let dir = tmp.path().to_path_buf();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup("runtime", e))?;
        let mut nats = rt.block_on(Nats::from_url_or_start(
            config.nats_url.as_deref(),
            &dir.join("nats"),
        ))?;
        let url = nats.url().to_string();
        let id = format!("{:08x}", fastrand::u32(..));
        let names = Names {
            prefix: format!("herd.{id}"),
            tip: format!("herd_tip_{id}"),
            claims: format!("herd_claims_{id}"),
            done: format!("herd_done_{id}"),
        };
        let hub_dir = dir.join("hub");
        std::fs::create_dir_all(&hub_dir).map_err(|e| setup("create hub dir", e))?;
        let hub_repo = hub_dir.join("repo.db");
        let hub = Hub::start(
            &url,
            &hub_repo,
            HubConfig {
                prefix: names.prefix.clone(),
                tip_bucket: names.tip.clone(),
                claims: Some((names.claims.clone(), config.claim_ttl)),
                grant_timeout: config.grant_timeout,
                ..HubConfig::default()
            },
        )?;

        let leaf_config = |name: String, slot: usize, kill: Option<usize>| LeafConfig {
            dir: dir.join("leaves").join(&name),
            name,
            slot,
            scope: vec![format!("slot-{slot}/"), "shared/".to_string()],
            nats_url: url.clone(),
            prefix: names.prefix.clone(),
            tip_bucket: names.tip.clone(),
            claims_bucket: names.claims.clone(),
            claim_ttl: config.claim_ttl,
            done_bucket: names.done.clone(),
            fork_retry_limit: config.fork_retry_limit,
            request_timeout: config.request_timeout,
            retry_bound: std::time::Duration::from_secs(30),
            kill_at_task: kill,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let mut handles: Vec<LeafHandle> = Vec::new();
        let agents = config.workload.agents;
        let tasks_started = Instant::now();
        for slot in 0..agents {
            let kill = config
                .faults
                .kill_leaf
                .filter(|k| k.slot == slot)
                .map(|k| k.after_tasks);
            let tasks: Vec<Task> = workload.tasks(slot).to_vec();
            let h = leaf::spawn(
                leaf_config(format!("agent-{slot}"), slot, kill),
                tasks,
                stop_rx.clone(),
                ev_tx.clone(),
            )
            .map_err(|e| setup("spawn leaf thread", e))?;
            handles.push(h);
        }

        // Wait for every leaf's tasks, injecting the faults meanwhile.
        let deadline = tokio::time::Instant::from_std(started + config.run_timeout);
        let mut pending = agents;
        let mut nats_restarts = 0u64;
        let mut leaves_killed = 0u64;
        let mut killed_tasks: Vec<(String, String)> = Vec::new();
        let mut restart_errors: Vec<String> = Vec::new();
        let timed_out = rt.block_on(async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
            while pending > 0 {
                tokio::select! {
                    ev = ev_rx.recv() => match ev {
                        None => break,
                        Some(LeafEvent::TasksDone { .. }) => pending -= 1,
                        Some(LeafEvent::Killed { name, slot, remaining }) => {
                            leaves_killed += 1;
                            if let Some(t) = remaining.first() {
                                killed_tasks.push((name.clone(), t.id.clone()));
                            }
                            match leaf::spawn(
                                leaf_config(format!("{name}-takeover"), slot, None),
                                remaining,
                                stop_rx.clone(),
                                ev_tx.clone(),
                            ) {
                                Ok(h) => handles.push(h),
                                Err(e) => {
                                    restart_errors.push(format!("spawn takeover leaf: {e}"));
                                    pending -= 1;
                                }
                            }
                        }
                    },
                    _ = tick.tick() => {
                        if let Some(n) = config.faults.restart_nats_after_commits {
                            if nats_restarts == 0 && hub.stats().commits >= n {
                                nats_restarts += 1;
                                if let Some(server) = nats.server_mut() {
                                    if let Err(e) = server.restart().await {
                                        restart_errors.push(format!("nats-server restart: {e}"));
                                    }
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return true,
                }
            }
            false
        });
        let tasks_s = tasks_started.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        // Leaves drain and end; bounded (a minute past the run bound at most).
        let join_deadline =
            Instant::now().max(started + config.run_timeout) + std::time::Duration::from_secs(60);
        let mut outcomes: Vec<LeafOutcome> = Vec::new();
        let mut hung: Vec<String> = Vec::new();
        for h in handles {
            let name = h.name().to_string();
            match h.join_by(join_deadline) {
                Some(o) => outcomes.push(o),
                None => hung.push(name),
            }
        }
        let hub_stats = hub.stop()?;
        drop(nats);

        let hub_repo = Repo::open(&hub_repo)?;
        let mut report = HerdReport {
            agents,
            tasks_per_agent: config.workload.tasks_per_agent,
            total: agents * config.workload.tasks_per_agent,
            distinct_tasks: workload.distinct_tasks(),
            seed: config.workload.seed,
            overlap: config.workload.overlap,
            think_ms: config.workload.think_ms,
            hub_commits: hub_repo.commit_count()?,
            hub_parked: hub_stats.parked,
            hub_grants_expired: hub_stats.grants_expired,
            hub_pulls: hub_stats.pulls,
            hub_pushes: hub_stats.pushes,
            hub_fork_turnaround_ms: hub_stats.grant_wait_us as f64
                / 1000.0
                / hub_stats.grants_used.max(1) as f64,
            hub_decide_ms: hub_stats.decide_us as f64 / 1000.0 / hub_stats.pushes.max(1) as f64,
            nats_restarts,
            leaves_killed,
            tasks_s,
            nats_url: url,
            ..HerdReport::default()
        };
        let mut samples: Vec<f64> = Vec::new();
        for o in &outcomes {
            let s = &o.stats;
            report.completed_tasks += s.completed;
            report.fork_retries += s.fork_retries;
            report.fork_unrecoverable += s.fork_unrecoverable;
            report.claims_won += s.claims_won;
            report.claims_lost += s.claims_lost;
            report.tasks_taken_over += s.taken_over;
            report.fenced += s.fenced;
            report.duplicates += s.duplicates;
            report.failed_tasks += s.failed;
            report.broadcasts_received += s.broadcasts_received;
            report.broadcasts_pulled += s.coalescer.broadcasts_pulled();
            report.broadcasts_skipped += s.coalescer.skipped;
            report.broadcast_pull_requests += s.broadcast_pull_requests;
            report.sqlite_busy += s.busy;
            report.request_retries += s.request_retries;
            report.reclaims += s.reclaims;
            report.land_failures += s.land_failures;
            report.watch_reopened += s.watch_reopened;
            samples.extend_from_slice(&o.commit_ms);
        }
        report.sqlite_busy += hub_stats.busy;
        report.commit = latency(&mut samples);
        let live = outcomes.iter().filter(|o| !o.killed).count().max(1);
        report.broadcast_pulls_per_commit_per_leaf = if report.hub_commits == 0 {
            0.0
        } else {
            report.broadcast_pull_requests as f64 / (report.hub_commits as f64 * live as f64)
        };
        let hub_tip = hub_repo.tip()?;
        report.hub_tip = hub_tip.as_ref().map_or("empty".into(), |t| t.to_string());
        report.checks = checks(
            config,
            &workload,
            &hub_repo,
            hub_tip.as_ref(),
            &outcomes,
            &report,
            timed_out,
            &killed_tasks,
            &restart_errors,
            &hung,
        )?;
        report.runtime_s = started.elapsed().as_secs_f64();
        report.dir = if config.keep_dir { tmp.keep() } else { dir };
        Ok(report)
    }

    /// Nearest-rank quantiles of the samples (sorted here).
    fn latency(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Latency {
            count: samples.len() as u64,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: samples[samples.len() - 1],
            mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }

    fn check(name: &str, passed: bool, detail: String) -> Check {
        Check {
            name: name.to_string(),
            passed,
            detail,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn checks(
        config: &HerdConfig,
        workload: &Workload,
        hub: &Repo,
        hub_tip: Option<&crate::repo::Tip>,
        outcomes: &[LeafOutcome],
        r: &HerdReport,
        timed_out: bool,
        killed_tasks: &[(String, String)],
        setup_errors: &[String],
        hung: &[String],
    ) -> Result<Vec<Check>, HerdError> {
        let mut out = Vec::new();
        out.push(check(
            "the run ended within its bound and every leaf stopped",
            !timed_out && hung.is_empty(),
            format!(
                "bound {:?}; tasks took {:.1}s; leaves still running: {}",
                config.run_timeout,
                r.tasks_s,
                first_few(hung)
            ),
        ));
        out.push(check(
            "hub commits = completed tasks = distinct tasks",
            r.hub_commits == r.completed_tasks && r.completed_tasks == r.distinct_tasks as u64,
            format!(
                "hub commits {}, completed {}, distinct tasks {} ({} × {})",
                r.hub_commits, r.completed_tasks, r.distinct_tasks, r.agents, r.tasks_per_agent
            ),
        ));
        // Every distinct task has exactly one commit on the trunk.
        let mut by_task: BTreeMap<String, u32> = BTreeMap::new();
        let mut authors: BTreeMap<String, String> = BTreeMap::new();
        // Path → the task of the last commit on the trunk that wrote it.
        let mut last_writer: BTreeMap<String, String> = BTreeMap::new();
        hub.each_commit(|c| {
            *by_task.entry(c.message.clone()).or_default() += 1;
            for ch in c.changes {
                last_writer.insert(ch.path, c.message.clone());
            }
            authors.insert(c.message, c.author);
        })?;
        let wanted: BTreeSet<String> = (0..workload.config().agents)
            .flat_map(|s| workload.tasks(s))
            .map(|t| t.id.clone())
            .collect();
        let twice: Vec<&String> = by_task
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(t, _)| t)
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|t| !by_task.contains_key(*t))
            .collect();
        let stray: Vec<&String> = by_task.keys().filter(|t| !wanted.contains(*t)).collect();
        out.push(check(
            "every task committed exactly once",
            twice.is_empty() && missing.is_empty() && stray.is_empty(),
            format!(
                "{} tasks on the trunk; twice: {}; missing: {}; unknown: {}",
                by_task.len(),
                first_few(&twice),
                first_few(&missing),
                first_few(&stray)
            ),
        ));
        let hub_manifest = hub.manifest_hash()?;
        let live: Vec<&LeafOutcome> = outcomes.iter().filter(|o| !o.killed).collect();
        let behind: Vec<String> = live
            .iter()
            .filter(|o| o.tip.as_ref() != hub_tip || o.manifest_hash != hub_manifest)
            .map(|o| {
                format!(
                    "{} at {}",
                    o.name,
                    o.tip.as_ref().map_or("empty".into(), |t| t.to_string())
                )
            })
            .collect();
        out.push(check(
            "every leaf's final tip equals the hub's after draining",
            behind.is_empty(),
            format!(
                "{} leaves at hub tip {}; differing: {}",
                live.len() - behind.len(),
                hub_tip.map_or("empty".into(), |t| t.to_string()),
                first_few(&behind)
            ),
        ));
        // File contents: own-slot files exactly as the workload's order implies; every file
        // exactly as the task that last wrote it on the trunk wrote it.
        let expected = workload.expected_files();
        let mut writes: BTreeMap<(&str, &str), &[u8]> = BTreeMap::new();
        let mut shared_paths: BTreeSet<&str> = BTreeSet::new();
        for t in (0..workload.config().agents).flat_map(|s| workload.tasks(s)) {
            for f in &t.files {
                writes.insert((t.id.as_str(), f.path.as_str()), f.content.as_slice());
                if t.shared.is_some() {
                    shared_paths.insert(f.path.as_str());
                }
            }
        }
        let mut wrong: Vec<String> = Vec::new();
        let files = hub.files()?;
        for (path, want) in &expected {
            match hub.file(path)? {
                Some(have) if have == *want => {}
                Some(_) => wrong.push(format!("{path}: other content")),
                None => wrong.push(format!("{path}: missing")),
            }
        }
        for (path, _) in &files {
            let Some(task) = last_writer.get(path) else {
                wrong.push(format!("{path}: on the trunk but written by no commit"));
                continue;
            };
            match writes.get(&(task.as_str(), path.as_str())) {
                None => wrong.push(format!("{path}: its last writer {task} does not write it")),
                Some(want) => {
                    if hub.file(path)?.as_deref() != Some(*want) {
                        wrong.push(format!("{path}: not what its last writer {task} wrote"));
                    }
                }
            }
        }
        for path in &shared_paths {
            if !files.iter().any(|(p, _)| p == path) {
                wrong.push(format!("{path}: missing"));
            }
        }
        let worktree: Vec<String> = live
            .iter()
            .flat_map(|o| {
                o.worktree_mismatches
                    .iter()
                    .map(move |p| format!("{}:{p}", o.name))
            })
            .collect();
        out.push(check(
            "every file's final content is what the workload implies",
            wrong.is_empty() && worktree.is_empty(),
            format!(
                "{} files on the trunk ({} own-slot files, {} shared paths), each as its last \
                 writer wrote it; wrong: {}; worktrees differing from their repository: {}",
                files.len(),
                expected.len(),
                shared_paths.len(),
                first_few(&wrong),
                first_few(&worktree)
            ),
        ));
        let uneven: Vec<String> = outcomes
            .iter()
            .filter(|o| {
                let c = &o.stats.coalescer;
                c.broadcasts_pulled() + c.skipped != o.stats.broadcasts_received
                    || (!o.killed && o.stats.owed_at_end != 0)
            })
            .map(|o| {
                let c = &o.stats.coalescer;
                format!(
                    "{}: pulled {} + skipped {} vs received {} ({} not tips), pull owed at \
                     the end: {}",
                    o.name,
                    c.broadcasts_pulled(),
                    c.skipped,
                    o.stats.broadcasts_received,
                    o.stats.undecodable_broadcasts,
                    o.stats.owed_at_end
                )
            })
            .collect();
        out.push(check(
            "broadcasts pulled + skipped = broadcasts received, and no pull owed after the drain",
            uneven.is_empty(),
            format!(
                "pulled {} + skipped {} = {}, received {}; {}",
                r.broadcasts_pulled,
                r.broadcasts_skipped,
                r.broadcasts_pulled + r.broadcasts_skipped,
                r.broadcasts_received,
                first_few(&uneven)
            ),
        ));
        out.push(check(
            "no SQLITE_BUSY anywhere",
            r.sqlite_busy == 0,
            format!("{} busy errors (hub and leaves)", r.sqlite_busy),
        ));
        let mut lost: Vec<String> = Vec::new();
        let mut pushed = 0usize;
        for o in outcomes {
            for t in &o.pushed {
                pushed += 1;
                if hub.commit_at(t.seq)?.map(|c| c.hash) != Some(t.hash.clone()) {
                    lost.push(format!("{} {t}", o.name));
                }
            }
        }
        out.push(check(
            "nothing lost at teardown: every accepted push is on the hub's trunk",
            lost.is_empty(),
            format!(
                "{pushed} accepted pushes; not on the trunk: {}",
                first_few(&lost)
            ),
        ));
        let errors: Vec<String> = outcomes
            .iter()
            .flat_map(|o| o.errors.iter().map(move |e| format!("{}: {e}", o.name)))
            .chain(setup_errors.iter().cloned())
            .collect();
        out.push(check(
            "no fork unrecoverable and no failed task",
            r.fork_unrecoverable == 0 && r.failed_tasks == 0 && errors.is_empty(),
            format!(
                "fork unrecoverable {}, failed {}, errors {}: {}",
                r.fork_unrecoverable,
                r.failed_tasks,
                errors.len(),
                first_few(&errors)
            ),
        ));
        if config.faults.restart_nats_after_commits.is_some() {
            out.push(check(
                "nats-server restarted mid-run",
                r.nats_restarts == 1 && setup_errors.is_empty(),
                format!("{} restarts", r.nats_restarts),
            ));
        }
        if config.faults.kill_leaf.is_some() {
            let finished: Vec<String> = killed_tasks
                .iter()
                .map(|(dead, task)| match authors.get(task) {
                    Some(a) if a != dead => format!("{task} by {a}"),
                    Some(a) => format!("{task} by the dead {a}!"),
                    None => format!("{task} not on the trunk"),
                })
                .collect();
            let ok = r.leaves_killed == 1
                && killed_tasks.len() == 1
                && killed_tasks
                    .iter()
                    .all(|(dead, task)| authors.get(task).is_some_and(|a| a != dead))
                && r.tasks_taken_over >= 1;
            out.push(check(
                "the killed leaf's task was finished by another after its claim expired",
                ok,
                format!(
                    "{} killed; {}; tasks taken over after a lost claim: {}",
                    r.leaves_killed,
                    first_few(&finished),
                    r.tasks_taken_over
                ),
            ));
        }
        Ok(out)
    }

    fn first_few<T: std::fmt::Display>(items: &[T]) -> String {
        if items.is_empty() {
            return "none".to_string();
        }
        let shown: Vec<String> = items.iter().take(5).map(|i| i.to_string()).collect();
        if items.len() > 5 {
            format!("{} and {} more", shown.join(", "), items.len() - 5)
        } else {
            shown.join(", ")
        }
    }
}
