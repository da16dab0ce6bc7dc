//! `stress`: runs one herdlab stress suite and writes its result as JSON.
//!
//! `stress list [--json]` shows the registered suites; `stress run SUITE --profile P
//! --seed N --out FILE` runs one. `cargo xtask stress` drives this binary, one child
//! process per suite, and renders the report.

mod daemon_harness;
mod daemon_target;
mod maxrps;
mod suites;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use collector::Status;

use suites::{Profile, RunContext};

#[derive(Parser)]
#[command(name = "stress", about = "Run herdlab stress suites", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the suites with their scale and expected duration per profile.
    List {
        /// Print JSON (what `cargo xtask` reads) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find the max sustainable rate of a target under an SLO (step up, bisect, confirm).
    /// A flag given twice takes its last value.
    #[command(args_override_self = true)]
    Maxrps(Box<maxrps::MaxRpsArgs>),
    /// (internal) Run the rpc-daemon under test; the daemon-* suites start it as a child.
    #[command(name = "__daemon", hide = true)]
    Daemon(daemon_harness::DaemonArgs),
    /// (internal) One agent process creating issues through the daemon.
    #[command(name = "__agent", hide = true)]
    Agent(daemon_harness::AgentArgs),
    /// (internal) Echo every byte read on a Unix socket back to it until the peer closes:
    /// the far end of `daemon-maxrps`'s round-trip floor.
    #[command(name = "__echo", hide = true)]
    Echo {
        /// The socket to connect to.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Run one suite and write its SuiteResult JSON.
    Run {
        /// Suite name (see `stress list`).
        suite: String,
        /// Scale: smoke (seconds, for tests), quick (minutes), full (as long as it takes).
        #[arg(long, default_value = "quick")]
        profile: Profile,
        /// Seed every workload is generated from; the same seed replays the same workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the result JSON.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes `value` as pretty JSON to `path` (through a temporary file and a rename).
pub fn write_json_file<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)?;
    collector::result::write_atomic(path, &json)?;
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&suites::catalog())?);
            } else {
                print!("{}", suites::catalog_table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Maxrps(args) => {
            // A private daemon (no `db=`) lives inside the target: killed when it drops.
            let target = daemon_target::resolve(&args.target)?;
            let (cfg, generator) = args.config(target.as_ref())?;
            println!(
                "max-rps: target {} · steps {:?} · SLO {} · precision ±{}%",
                target.describe(),
                cfg.steps,
                cfg.slo.describe(),
                cfg.precision_pct
            );
            let started = Instant::now();
            let report = maxrps::run_finder(target, &cfg, generator, true)?;
            if let Some(path) = &args.csv {
                collector::result::write_atomic(path, report.csv().as_bytes())?;
                println!("csv written to {}", path.display());
            }
            if let Some(path) = &args.json {
                let mut result =
                    maxrps::to_result("maxrps", "custom", &args.steps, 0, &cfg, &report);
                result.wall_s = started.elapsed().as_secs_f64();
                result.write(path)?;
                println!("result written to {}", path.display());
            }
            println!("{}", report.answer_line());
            Ok(if report.rate().is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Daemon(args) => {
            daemon_harness::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            daemon_harness::agent(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Echo { socket } => {
            daemon_harness::echo(&socket)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            suite,
            profile,
            seed,
            out,
        } => {
            let suite = suites::find(&suite)?;
            println!(
                "suite: {} · profile: {profile} · seed: {seed}",
                suite.name()
            );
            let work = tempfile::Builder::new()
                .prefix(&format!("herdlab-{}-", suite.name()))
                .tempdir()
                .context("creating the suite's temp dir")?;
            let ctx = RunContext {
                profile,
                seed,
                work_dir: work.path().to_path_buf(),
            };
            let started = Instant::now();
            let mut result = suite
                .run(&ctx)
                .with_context(|| format!("suite `{}` failed to run", suite.name()))?;
            result.wall_s = started.elapsed().as_secs_f64();
            result
                .write(&out)
                .with_context(|| format!("writing the result of `{}`", suite.name()))?;
            println!(
                "{}: {} — {}",
                suite.name(),
                result.verdict.status,
                result.headline
            );
            for reason in &result.verdict.reasons {
                println!("  - {reason}");
            }
            println!("result written to {}", out.display());
            Ok(if result.verdict.status == Status::Fail {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
