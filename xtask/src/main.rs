//! `cargo xtask`: herdlab's orchestration. It builds, runs suites as child processes,
//! renders reports and compares benchmark baselines; it measures nothing itself.

mod bench;
mod host;
mod runner;
mod stress;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "herdlab orchestration", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stress suites and write a dated trial report under docs/trials/.
    Stress(stress::StressArgs),
    /// List every suite with its scale and expected duration per profile.
    List,
    /// Re-render a trial report from its results.json without re-running anything.
    Report(stress::ReportArgs),
    /// Run criterion benches and compare against a saved baseline (exit 1 on a regression).
    Bench(bench::BenchArgs),
    /// The project's test command: fmt, clippy, tests, loom, and a smoke run of every suite.
    Test(test::TestArgs),
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = workspace_root();
    let result: Result<ExitCode> = match &cli.command {
        Command::Stress(args) => stress::run(&root, args),
        Command::List => stress::list(&root),
        Command::Report(args) => stress::report(&root, args),
        Command::Bench(args) => bench::run(args, &root),
        Command::Test(args) => test::run(&root, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
