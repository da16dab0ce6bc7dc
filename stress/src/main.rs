//! `stress`: runs one herdlab stress suite and writes its result as JSON.
//!
//! `stress list [--json]` shows the registered suites; `stress run SUITE --profile P
//! --seed N --out FILE` runs one. `cargo xtask stress` drives this binary, one child
//! process per suite, and renders the report. `stress maxrps --target SPEC` finds the max
//! rate of any target; `stress plan FILE.toml` runs a plan file; `stress serve SPEC` serves
//! a model of known capacity over HTTP or NATS.

mod daemon_harness;
mod daemon_target;
mod dist;
mod harness;
mod hlog_file;
mod maxrps;
mod nginx;
mod plan;
mod plan_mix;
mod plan_run;
mod serve;
mod suites;
mod target_flags;

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
    /// Run a plan file (targets, scenario mix, shape, SLOs, processes) and write its result.
    Plan {
        /// The plan, TOML (see examples/plans/).
        file: PathBuf,
        /// Where to write the result JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the plan's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Write an HdrHistogram interval log here (overrides the plan's `hlog`).
        #[arg(long)]
        hlog: Option<PathBuf>,
        /// Only check the plan and print its name, scale and expected seconds as JSON.
        #[arg(long)]
        check: bool,
    },
    /// Serve a model of known capacity (`sim:`, `usl:`) over HTTP or NATS request-reply.
    Serve(serve::ServeArgs),
    /// Join a distributed run (`stress maxrps --distributed`) over NATS and generate this
    /// worker's share of each step.
    Worker(dist::WorkerArgs),
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
        Command::Maxrps(args) => maxrps_command(&args),
        Command::Plan {
            file,
            out,
            seed,
            hlog,
            check,
        } => plan_command(&file, out.as_deref(), seed, hlog, check),
        Command::Serve(args) => {
            serve::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => dist::worker_command(&args),
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

fn maxrps_command(args: &maxrps::MaxRpsArgs) -> Result<ExitCode> {
    if let Some(d) = args.dist.settings()? {
        return maxrps_distributed(args, &d);
    }
    let rt = harness::runtime()?;
    let opts = args
        .target_flags
        .options(args.seed, std::path::Path::new("."))?;
    // A private daemon (no `db=`) lives inside the target: killed when it drops.
    let target = target_flags::resolve(&rt, &args.target, &opts)?;
    let (cfg, generator) = args.config(&target.actions())?;
    println!("{}", maxrps::header_line(&target.describe(), &cfg));
    let started = Instant::now();
    let report = rt.block_on(maxrps::find_on(
        target.clone(),
        &cfg,
        generator,
        true,
        args.hlog.as_deref(),
    ))?;
    maxrps_outputs(args, &cfg, &report, None, started)
}

/// `stress maxrps --distributed`: the target is opened by each worker, not here.
fn maxrps_distributed(args: &maxrps::MaxRpsArgs, d: &dist::DistSettings) -> Result<ExitCode> {
    // Every flag but the per-action limits (which need the target's actions) is checked
    // before waiting for workers.
    let unchecked = maxrps::MaxRpsArgs {
        action_p95_ms: None,
        action_p99_ms: None,
        ..args.clone()
    };
    let (_, generator) = unchecked.config(&[])?;
    let opts = args
        .target_flags
        .options(args.seed, std::path::Path::new("."))?;
    let rt = harness::runtime()?;
    let ccfg = d.coordinator(&args.target, opts, generator, false, args.hlog.is_some());
    let started = Instant::now();
    let dist = rt.block_on(dist::run_finder(
        &ccfg,
        |actions| Ok(args.config(actions)?.0),
        args.hlog.as_deref(),
    ))?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let (cfg, dist) = dist;
    maxrps_outputs(args, &cfg, &dist.report, Some(&dist), started)
}

/// The CSV, the result JSON and the answer line of a finder run.
fn maxrps_outputs(
    args: &maxrps::MaxRpsArgs,
    cfg: &collector::finder::FinderConfig,
    report: &collector::finder::FinderReport,
    dist: Option<&dist::DistReport>,
    started: Instant,
) -> Result<ExitCode> {
    if let Some(path) = &args.csv {
        collector::result::write_atomic(path, report.csv().as_bytes())?;
        println!("csv written to {}", path.display());
    }
    if let Some(path) = &args.json {
        let mut result = maxrps::to_result("maxrps", "custom", &args.steps, 0, cfg, report);
        if let Some(d) = dist {
            dist::add_to_result(&mut result, d);
        }
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

fn plan_command(
    file: &std::path::Path,
    out: Option<&std::path::Path>,
    seed: Option<u64>,
    hlog: Option<PathBuf>,
    check: bool,
) -> Result<ExitCode> {
    let plan = plan::read(file)?;
    if check {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan_run::entry(&plan)?)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let started = Instant::now();
    let mut result = plan_run::run(&plan, dir, seed, hlog)?;
    result.wall_s = started.elapsed().as_secs_f64();
    println!(
        "{}: {} — {}",
        result.suite, result.verdict.status, result.headline
    );
    for reason in &result.verdict.reasons {
        println!("  - {reason}");
    }
    if let Some(path) = out {
        result.write(path)?;
        println!("result written to {}", path.display());
    }
    Ok(if result.verdict.status == Status::Fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
