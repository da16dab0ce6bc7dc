//! `cargo xtask bench`: run the workspace's criterion benches, compare them against a
//! saved baseline with criterion's own statistical rule, and fail on a real regression.
//!
//! Criterion itself never fails the process on a regression; this command does (exit 1).
//! Submodules: [`criterion`] reads criterion 0.8.2's output tree, [`snapshot`] is our
//! portable baseline format, [`stats`] the bootstrap statistics, [`compare`] the
//! verdicts, [`report`] the text and markdown tables.

mod compare;
mod criterion;
mod report;
mod snapshot;
mod stats;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};

use self::compare::Row;
use self::snapshot::Snapshot;

const AFTER_HELP: &str = "\
Runs `cargo bench --workspace --bench '*' -- --noplot [CRITERION_ARGS]`, then reads every
benchmark's results (`new/benchmark.json`, `estimates.json`, `sample.json`) from criterion's
output directory. With --compare it prints one row per benchmark: baseline and new mean time
per iteration, change of the mean, its 95% confidence interval, p-value and verdict.

Verdict (criterion's rule, recomputed from both snapshots' raw samples, so it works across
machines): `regressed` if p < 0.05 and the whole 95% CI of the change of the mean lies above
+threshold; `improved` if p < 0.05 and it lies below -threshold; otherwise `within noise`.
Benchmarks only in the baseline are `missing`, only in this run `new`; neither fails.

Exit status: 0 if nothing regressed, 1 if any benchmark regressed, 2 on error.

Files: --save writes <target>/bench-baselines/NAME.json; every run writes
<target>/bench-report.md. <target> is $CARGO_TARGET_DIR, else <workspace>/target.

Examples:
  cargo xtask bench --save main
  cargo xtask bench --compare main
  cargo xtask bench --export benches/baseline.json
  cargo xtask bench --compare benches/baseline.json -- result_model
  cargo xtask bench --no-run --compare main --threshold 10";

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Save this run as baseline NAME (<target>/bench-baselines/NAME.json).
    #[arg(long, value_name = "NAME")]
    pub save: Option<String>,

    /// Compare this run against a baseline: X is a snapshot file if one exists at that
    /// path (e.g. a committed --export), else the NAME of a --save'd baseline.
    #[arg(long, value_name = "X")]
    pub compare: Option<String>,

    /// Write this run's snapshot to FILE: self-contained JSON (estimates and raw samples)
    /// that survives `cargo clean`, can be committed, and compares on any machine.
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,

    /// Noise threshold in percent: a change counts only if its whole 95% CI lies beyond
    /// ±PCT. Criterion's own default is 1%; ours is 5% because these machines are 2 shared,
    /// noisy cores.
    #[arg(
        long,
        value_name = "PCT",
        default_value = "5",
        value_parser = parse_threshold,
        allow_negative_numbers = true
    )]
    pub threshold: f64,

    /// Don't run `cargo bench`; use the results already under the criterion directory.
    #[arg(long)]
    pub no_run: bool,

    /// Criterion's output directory [default: $CRITERION_HOME, else <target>/criterion].
    #[arg(long, value_name = "DIR")]
    pub criterion_dir: Option<PathBuf>,

    /// Directory of --save'd baselines [default: <target>/bench-baselines].
    #[arg(long, value_name = "DIR")]
    pub baseline_dir: Option<PathBuf>,

    /// Passed to the criterion benches after `--noplot`, e.g. a benchmark filter.
    #[arg(last = true, value_name = "CRITERION_ARGS", conflicts_with = "no_run")]
    pub criterion_args: Vec<String>,
}

/// Parses `--threshold`: a percentage strictly between 0 and 100.
fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v < 100.0 => Ok(v),
        _ => Err(format!(
            "invalid threshold {s}: expected a percentage in (0, 100)"
        )),
    }
}

/// Runs `cargo xtask bench` for the workspace at `root`: exit code 1 if any benchmark
/// regressed against the `--compare` baseline, success otherwise.
pub fn run(args: &BenchArgs, root: &Path) -> Result<ExitCode> {
    let target = target_dir(root)?;
    let criterion_dir = match &args.criterion_dir {
        Some(dir) => absolute(dir)?,
        None => match std::env::var_os("CRITERION_HOME").filter(|v| !v.is_empty()) {
            Some(home) => absolute(Path::new(&home))?,
            None => target.join("criterion"),
        },
    };
    let baseline_dir = match &args.baseline_dir {
        Some(dir) => absolute(dir)?,
        None => target.join("bench-baselines"),
    };

    // Check everything that can fail cheaply before spending minutes on benches.
    if let Some(name) = &args.save {
        snapshot::validate_name(name)?;
    }
    let baseline = match &args.compare {
        Some(x) => {
            let path = snapshot::resolve_compare(x, &baseline_dir)?;
            Some((Snapshot::read(&path)?, path))
        }
        None => None,
    };

    let found = if args.no_run {
        criterion::read_all(&criterion_dir)?
    } else {
        let started = SystemTime::now();
        run_benches(root, &target, &criterion_dir, &args.criterion_args)?;
        fresh_only(criterion::read_all(&criterion_dir)?, started)
    };
    ensure!(
        !found.is_empty(),
        "no criterion results under `{}`",
        criterion_dir.display()
    );

    let name = args
        .save
        .clone()
        .or_else(|| {
            args.export
                .as_ref()
                .and_then(|f| f.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "current".to_string());
    let current = Snapshot::capture(&name, found.into_iter().map(|f| f.record).collect(), root);

    if let Some(name) = &args.save {
        let path = snapshot::saved_path(&baseline_dir, name);
        current.write(&path)?;
        eprintln!(
            "saved baseline `{name}` ({} benchmarks) to {}",
            current.benchmarks.len(),
            path.display()
        );
    }
    if let Some(file) = &args.export {
        current.write(file)?;
        eprintln!(
            "exported snapshot `{}` ({} benchmarks) to {}",
            current.name,
            current.benchmarks.len(),
            file.display()
        );
    }

    let (markdown, code) = match baseline {
        Some((base, path)) => {
            let rows = compare::compare(&base, &current, args.threshold / 100.0, stats::RESAMPLES);
            println!(
                "\ncomparing against baseline `{}` ({}, {}):\n",
                base.name,
                path.display(),
                report::utc_datetime(base.created)
            );
            print!("{}", report::comparison_text(&rows, args.threshold));
            (
                report::comparison_markdown(&rows, &base, &current, args.threshold),
                exit_code(&rows),
            )
        }
        None => {
            println!("\ncurrent estimates (time per iteration):\n");
            print!("{}", report::estimates_text(&current));
            (report::estimates_markdown(&current), ExitCode::SUCCESS)
        }
    };
    let report_path = target.join("bench-report.md");
    fs::create_dir_all(&target)
        .with_context(|| format!("cannot create directory `{}`", target.display()))?;
    fs::write(&report_path, markdown)
        .with_context(|| format!("cannot write `{}`", report_path.display()))?;
    eprintln!("report written to {}", report_path.display());
    Ok(code)
}

/// The process exit code for a comparison: 1 if any benchmark regressed, else 0.
fn exit_code(rows: &[Row]) -> ExitCode {
    if compare::any_regressed(rows) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the current directory, as
/// cargo reads it) or `<root>/target`.
fn target_dir(root: &Path) -> Result<PathBuf> {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => absolute(Path::new(&dir)),
        None => Ok(root.join("target")),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(path))
}

/// Runs the workspace's criterion benches, writing into `criterion_dir`.
fn run_benches(root: &Path, target: &Path, criterion_dir: &Path, extra: &[String]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    // `--bench '*'` selects bench targets only: libtest harnesses reject criterion's flags.
    cmd.current_dir(root)
        .args(["bench", "--workspace", "--bench", "*", "--", "--noplot"])
        .args(extra)
        .env("CRITERION_HOME", criterion_dir);
    if std::env::var_os("CARGO_TARGET_DIR").is_some_and(|v| !v.is_empty()) {
        // Made absolute, since the child runs in `root` rather than our directory.
        cmd.env("CARGO_TARGET_DIR", target);
    }
    eprintln!(
        "running: cargo bench --workspace --bench '*' -- --noplot{}{}",
        if extra.is_empty() { "" } else { " " },
        extra.join(" ")
    );
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", cargo.to_string_lossy()))?;
    ensure!(
        status.success(),
        "`cargo bench` failed ({status}); nothing was saved or compared"
    );
    Ok(())
}

/// Keeps the benchmarks this run wrote, dropping stale results of benchmarks that were
/// filtered out, renamed or deleted (criterion never removes old directories).
fn fresh_only(found: Vec<criterion::Found>, started: SystemTime) -> Vec<criterion::Found> {
    // A little slack for file systems with coarse timestamps.
    let since = started
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(started);
    let (fresh, stale): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.modified >= since);
    if !stale.is_empty() {
        let ids: Vec<&str> = stale.iter().map(|f| f.record.id.as_str()).collect();
        eprintln!(
            "note: ignoring {} stale result(s) not written by this run: {}",
            stale.len(),
            ids.join(", ")
        );
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, String> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|c| c.bench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn threshold_defaults_to_five_and_rejects_bad_values() {
        assert_eq!(parse(&[]).map(|a| a.threshold), Ok(5.0));
        assert_eq!(parse(&["--threshold", "2.5"]).map(|a| a.threshold), Ok(2.5));
        for bad in ["-3", "0", "100", "abc"] {
            let err = parse(&["--threshold", bad]).err().unwrap_or_default();
            assert!(
                err.contains(&format!(
                    "invalid threshold {bad}: expected a percentage in (0, 100)"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn trailing_args_go_to_criterion_and_conflict_with_no_run() {
        let args = parse(&["--compare", "a", "--", "result_model", "--quick"]);
        assert_eq!(
            args.map(|a| a.criterion_args),
            Ok(vec!["result_model".to_string(), "--quick".to_string()])
        );
        assert!(parse(&["--no-run", "--", "x"]).is_err());
    }

    #[test]
    fn stale_results_are_dropped() -> Result<()> {
        let found = criterion::read_all(&criterion::fixture_dir())?;
        let n = found.len();
        let long_ago = SystemTime::UNIX_EPOCH;
        assert_eq!(fresh_only(found.clone(), long_ago).len(), n);
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert!(fresh_only(found, future).is_empty());
        Ok(())
    }
}
