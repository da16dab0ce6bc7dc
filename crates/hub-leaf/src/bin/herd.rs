//! `herd`: the thundering-herd trial of hub-leaf. One hub, `HERD_AGENTS` leaves, one
//! `nats-server` (ours, or `NATS_URL`), all under one temp dir; prints the seed's summary
//! block and the checks, and exits 1 if a check failed (2 if the run could not start).
//!
//! ```text
//! cargo run --release -p hub-leaf --bin herd
//! HERD_AGENTS=64 HERD_TASKS_PER_AGENT=30 cargo run --release -p hub-leaf --bin herd
//! cargo run --release -p hub-leaf --bin herd -- --agents 8 --overlap 0.5 --json out.json
//! ```
//!
//! Spans go over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see
//! `hub_leaf::telemetry`), nowhere otherwise.

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    app::main()
}

/// Not built under `--cfg loom` (the loom models cover the coalescer only).
#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
mod app {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use anyhow::{bail, Context as _, Result};
    use clap::Parser;
    use hub_leaf::herd::{self, Faults, HerdConfig, KillLeaf};
    use hub_leaf::workload::WorkloadConfig;

    /// The herd trial. Every knob is a flag and an environment variable; flags win.
    #[derive(Debug, Parser)]
    #[command(name = "herd", version, about)]
    struct Args {
        /// Agents (leaves).
        #[arg(long, env = "HERD_AGENTS", default_value_t = 16)]
        agents: usize,
        /// Tasks each agent runs.
        #[arg(long, env = "HERD_TASKS_PER_AGENT", default_value_t = 30)]
        tasks_per_agent: usize,
        /// Master seed; slot i uses seed + i. Same seed, same workload.
        #[arg(long, env = "HERD_SEED", default_value_t = 1)]
        seed: u64,
        /// Mean think time before each task in milliseconds (0 = tight loop).
        #[arg(long, env = "HERD_THINK_MS", default_value_t = 0)]
        think_ms: u64,
        /// Fraction of tasks drawn from a shared pool (0 = each agent owns slot-i/).
        #[arg(long, env = "HERD_OVERLAP", default_value_t = 0.0)]
        overlap: f64,
        /// An existing NATS server or cluster; unset, the trial starts its own nats-server.
        #[arg(long, env = "NATS_URL")]
        nats_url: Option<String>,
        /// Claim TTL in milliseconds (a dead holder's claim expires after it).
        #[arg(long, default_value_t = 2000)]
        claim_ttl_ms: u64,
        /// Fork retries per task before it is fork unrecoverable.
        #[arg(long, default_value_t = 32)]
        fork_retry_limit: u32,
        /// How long the hub keeps the trunk for a forked leaf's retry, in milliseconds (0 turns
        /// fork grants off: forked leaves race again).
        #[arg(long, default_value_t = 500)]
        grant_timeout_ms: u64,
        /// Bound on the whole run, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Where to make the trial's temp dir (default: the system temp dir).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Keep the trial's temp dir (repositories, worktrees, NATS store) for inspection.
        #[arg(long)]
        keep_dir: bool,
        /// Restart nats-server once the hub has this many commits (needs our own server).
        #[arg(long)]
        restart_nats_after: Option<u64>,
        /// Kill leaf SLOT in the middle of its task TASK (0-based), as `SLOT:TASK`.
        #[arg(long, value_parser = parse_kill)]
        kill_leaf: Option<KillLeaf>,
        /// Also write the whole report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    }

    fn parse_kill(s: &str) -> Result<KillLeaf, String> {
        let bad = || format!("invalid --kill-leaf {s:?}: expected SLOT:TASK, like 1:5");
        let (slot, task) = s.split_once(':').ok_or_else(bad)?;
        Ok(KillLeaf {
            slot: slot.trim().parse().map_err(|_| bad())?,
            after_tasks: task.trim().parse().map_err(|_| bad())?,
        })
    }

    pub(crate) fn main() -> ExitCode {
        match real_main() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("herd: {e:#}");
                ExitCode::from(2)
            }
        }
    }

    fn real_main() -> Result<bool> {
        let args = Args::parse();
        let telemetry = hub_leaf::telemetry::init("herd-hub-leaf").context("telemetry")?;
        if args.claim_ttl_ms == 0 || args.timeout_s == 0 {
            bail!(
                "--claim-ttl-ms {} and --timeout-s {}: expected both above 0",
                args.claim_ttl_ms,
                args.timeout_s
            );
        }
        let config = HerdConfig {
            workload: WorkloadConfig {
                agents: args.agents,
                tasks_per_agent: args.tasks_per_agent,
                seed: args.seed,
                think_ms: args.think_ms,
                overlap: args.overlap,
            },
            work_dir: args.work_dir,
            keep_dir: args.keep_dir,
            nats_url: args.nats_url,
            claim_ttl: Duration::from_millis(args.claim_ttl_ms),
            fork_retry_limit: args.fork_retry_limit,
            grant_timeout: Duration::from_millis(args.grant_timeout_ms),
            run_timeout: Duration::from_secs(args.timeout_s),
            faults: Faults {
                restart_nats_after_commits: args.restart_nats_after,
                kill_leaf: args.kill_leaf,
            },
            ..HerdConfig::default()
        };
        eprintln!(
            "herd: seed {} (agents {}, tasks {}, think {} ms, overlap {})",
            config.workload.seed,
            config.workload.agents,
            config.workload.tasks_per_agent,
            config.workload.think_ms,
            config.workload.overlap
        );
        let report = herd::run(&config)?;
        print!("{}", report.summary());
        println!();
        for c in &report.checks {
            println!(
                "{} {}: {}",
                if c.passed { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if config.keep_dir {
            println!("kept: {}", report.dir.display());
        }
        if let Some(path) = args.json {
            let body = serde_json::to_vec_pretty(&report).context("report as JSON")?;
            std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
        }
        drop(telemetry);
        Ok(report.passed())
    }
}
