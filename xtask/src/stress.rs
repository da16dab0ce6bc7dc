//! `cargo xtask stress` and `cargo xtask list`: build the `stress` binary once, run the
//! selected suites as bounded child processes, and render the dated trial report.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use collector::{Status, SuiteResult};
use indicatif::{ProgressBar, ProgressStyle};
use reports::trials::{self, TrialLabel};
use reports::{RenderOptions, Trial};
use serde::Deserialize;

use crate::host;
use crate::runner::{run_bounded, Outcome};

/// Profiles `stress` understands.
pub const PROFILES: [&str; 3] = ["smoke", "quick", "full"];

/// Arguments of `cargo xtask stress`.
#[derive(clap::Args, Debug, Clone)]
pub struct StressArgs {
    /// Scale of every suite: smoke (seconds), quick (minutes, the default) or full.
    #[arg(long, default_value = "quick", value_parser = clap::builder::PossibleValuesParser::new(PROFILES))]
    pub profile: String,
    /// Run only this suite (repeatable; `all` for every suite). Default: every suite,
    /// unless plans are given.
    #[arg(long = "suite", value_name = "NAME")]
    pub suites: Vec<String>,
    /// Run this plan file (repeatable; see examples/plans/) into the trial, after the
    /// suites. With `--plan` and no `--suite`, the trial holds only the plans.
    #[arg(long = "plan", value_name = "FILE.toml")]
    pub plans: Vec<PathBuf>,
    /// Seed every suite generates its workload from; the same seed replays the same trial.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The trial's date, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub date: Option<String>,
    /// Write the trial here instead of docs/trials/DATE (must not already hold a trial).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Percent a headline metric may move the wrong way before the report marks it.
    #[arg(long, default_value_t = reports::compare::DEFAULT_TOLERANCE_PCT)]
    pub tolerance: f64,
}

/// One suite as `stress list --json` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    /// Name.
    pub name: String,
    /// One line.
    pub description: String,
    /// (profile, plan) pairs.
    pub plans: Vec<(String, Plan)>,
}

/// Scale and expected duration under one profile.
#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    /// Scale in words.
    pub scale: String,
    /// Expected seconds.
    pub expected_s: u64,
}

impl CatalogEntry {
    /// The plan for `profile`.
    pub fn plan(&self, profile: &str) -> Result<&Plan> {
        self.plans
            .iter()
            .find(|(p, _)| p == profile)
            .map(|(_, plan)| plan)
            .with_context(|| format!("suite {} has no plan for profile {profile}", self.name))
    }
}

/// One child run of a trial: a suite, or a plan file.
struct Job {
    name: String,
    scale: String,
    expected_s: u64,
    /// `stress` arguments before `--out FILE`.
    args: Vec<std::ffi::OsString>,
}

/// What `stress plan FILE --check` prints.
#[derive(Debug, Deserialize)]
struct PlanCheck {
    name: String,
    scale: String,
    expected_s: u64,
}

/// Checks each plan (`stress plan FILE --check`) before anything slow runs.
fn plan_jobs(stress: &Path, plans: &[PathBuf], seed: u64) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    for file in plans {
        let out = Command::new(stress)
            .arg("plan")
            .arg(file)
            .arg("--check")
            .output()
            .with_context(|| format!("running {} plan --check", stress.display()))?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let c: PlanCheck = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing `stress plan {} --check`", file.display()))?;
        if jobs.iter().any(|j| j.name == c.name) {
            bail!(
                "two plans are named {:?}: expected a unique name per plan",
                c.name
            );
        }
        jobs.push(Job {
            name: c.name,
            scale: c.scale,
            expected_s: c.expected_s,
            args: vec![
                "plan".into(),
                file.clone().into_os_string(),
                "--seed".into(),
                seed.to_string().into(),
            ],
        });
    }
    Ok(jobs)
}

/// The time bound of a suite expected to take `expected_s`: three times that plus a minute,
/// so a slow machine is not mistaken for a hang but a hang always ends.
pub fn bound_for(expected_s: u64) -> Duration {
    Duration::from_secs(expected_s.saturating_mul(3).saturating_add(60))
}

/// Builds `stress` in release and returns the path of the binary cargo reports.
pub fn build_stress(root: &Path) -> Result<PathBuf> {
    eprintln!("building stress (release)…");
    let out = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--package",
            "stress",
            "--bin",
            "stress",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build --release -p stress failed ({})", out.status);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "stress" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo build did not report the stress executable")
}

/// The cargo that invoked us, or `cargo`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Asks the binary for its suites.
pub fn catalog(stress: &Path) -> Result<Vec<CatalogEntry>> {
    let out = Command::new(stress)
        .args(["list", "--json"])
        .output()
        .with_context(|| format!("running {} list --json", stress.display()))?;
    if !out.status.success() {
        bail!(
            "{} list --json failed: {}",
            stress.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing `stress list --json`")
}

/// The suites to run: all, or the requested ones in catalog order. Unknown names are an
/// error that lists the known ones.
pub fn select<'a>(
    catalog: &'a [CatalogEntry],
    requested: &[String],
) -> Result<Vec<&'a CatalogEntry>> {
    if requested.iter().any(|r| r == "all") {
        return Ok(catalog.iter().collect());
    }
    let unknown: Vec<&String> = requested
        .iter()
        .filter(|r| !catalog.iter().any(|c| &c.name == *r))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown suite{} {}: expected one of {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            catalog
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(catalog
        .iter()
        .filter(|c| requested.is_empty() || requested.contains(&c.name))
        .collect())
}

/// `cargo xtask list`.
pub fn list(root: &Path) -> Result<ExitCode> {
    let stress = build_stress(root)?;
    let catalog = catalog(&stress)?;
    println!("{:<20} {:<8} {:<36} expected", "suite", "profile", "scale");
    for c in &catalog {
        println!("{:<20} {}", c.name, c.description);
        for (profile, plan) in &c.plans {
            println!(
                "{:<20} {:<8} {:<36} ~{} s (bound {} s)",
                "",
                profile,
                plan.scale,
                plan.expected_s,
                bound_for(plan.expected_s).as_secs()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the trial goes and what it is called.
fn trial_dir(root: &Path, args: &StressArgs, date: &str) -> Result<PathBuf> {
    match &args.out {
        Some(dir) => {
            if dir.join("results.json").exists() {
                bail!(
                    "{} already holds a trial (results.json): choose another --out or remove it",
                    dir.display()
                );
            }
            Ok(dir.clone())
        }
        None => Ok(trials::next_dir(&root.join("docs/trials"), date)),
    }
}

/// The previous trial for a trial written to `dir`: the latest strictly earlier one beside it
/// when its name is a trial label, else the latest under `docs/trials`.
pub fn previous_for(root: &Path, dir: &Path) -> Option<Trial> {
    let label = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(TrialLabel::parse);
    let path = match (label, dir.parent()) {
        (Some(label), Some(parent)) => trials::previous(parent, &label),
        _ => trials::latest(&root.join("docs/trials")).map(|d| d.join("results.json")),
    }?;
    match Trial::read(&path) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("warning: not comparing with the previous trial: {e}");
            None
        }
    }
}

/// `cargo xtask stress`.
pub fn run(root: &Path, args: &StressArgs) -> Result<ExitCode> {
    if !(args.tolerance > 0.0 && args.tolerance < 1000.0) {
        bail!(
            "invalid tolerance {}: expected a percentage above 0, like 10",
            args.tolerance
        );
    }
    let started_unix = host::now_unix();
    let (today, started_utc) = host::utc(started_unix);
    let date = match &args.date {
        Some(d) if trials::is_date(d) => d.clone(),
        Some(d) => bail!("invalid date {d:?}: expected YYYY-MM-DD, like 2026-11-22"),
        None => today,
    };
    // Provenance before anything is written, so "dirty" describes the code that ran.
    let mut provenance = host::provenance(root, host::command_line(), started_utc);
    let stress = build_stress(root)?;
    let catalog = catalog(&stress)?;
    let selected = if args.plans.is_empty() || !args.suites.is_empty() {
        select(&catalog, &args.suites)?
    } else {
        Vec::new()
    };
    let mut jobs = Vec::new();
    for suite in &selected {
        let plan = suite.plan(&args.profile)?;
        jobs.push(Job {
            name: suite.name.clone(),
            scale: plan.scale.clone(),
            expected_s: plan.expected_s,
            args: vec![
                "run".into(),
                suite.name.clone().into(),
                "--profile".into(),
                args.profile.clone().into(),
                "--seed".into(),
                args.seed.to_string().into(),
            ],
        });
    }
    for job in plan_jobs(&stress, &args.plans, args.seed)? {
        if jobs.iter().any(|j| j.name == job.name) {
            bail!(
                "plan {:?} has the name of a suite: rename the plan",
                job.name
            );
        }
        jobs.push(job);
    }
    let dir = trial_dir(root, args, &date)?;
    let label = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("trial")
        .to_string();
    let work = root.join("target/stress-work").join(&label);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }

    let expected: u64 = jobs.iter().map(|j| j.expected_s).sum();
    eprintln!(
        "trial {label}: {} suite{} · profile {} · seed {} · expected ~{} s · writing {}",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        args.profile,
        args.seed,
        expected,
        dir.display()
    );

    let t0 = Instant::now();
    let mut trial = Trial::new(
        date,
        label.clone(),
        args.profile.clone(),
        args.seed,
        provenance.clone(),
    );
    for (i, job) in jobs.iter().enumerate() {
        let bound = bound_for(job.expected_s);
        let next = jobs.get(i + 1).map(|j| j.name.as_str()).unwrap_or("report");
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let header = format!(
            "[{}/{}] {} ({}, ~{} s, bound {} s)",
            i + 1,
            jobs.len(),
            job.name,
            job.scale,
            job.expected_s,
            bound.as_secs()
        );
        eprintln!("{header} …");
        let result_path = work.join(format!("{}.json", job.name));
        let log = work.join(format!("{}.log", job.name));
        let mut cmd = Command::new(&stress);
        cmd.args(&job.args).arg("--out").arg(&result_path);
        let (ending, wall) = run_bounded(cmd, &log, bound, |elapsed| {
            bar.set_message(format!(
                "{header}: {} s elapsed · next: {next}",
                elapsed.as_secs()
            ));
            bar.tick();
        })?;
        bar.finish_and_clear();
        let outcome = Outcome {
            suite: &job.name,
            profile: &args.profile,
            scale: &job.scale,
            seed: args.seed,
            bound,
            result_path: &result_path,
            log: &log,
        };
        let result = outcome.result(&ending, wall);
        print_outcome(&result, wall);
        trial.suites.push(result);
    }
    provenance.wall_s = t0.elapsed().as_secs_f64();
    trial.provenance = provenance;

    let previous = previous_for(root, &dir);
    let opts = RenderOptions {
        tolerance_pct: args.tolerance,
    };
    reports::write_trial(&dir, &trial, previous.as_ref(), &opts)?;
    eprintln!(
        "report: {} ({} PASS, {} FAIL, {} INCONCLUSIVE; logs in {})",
        dir.join("trial-report.md").display(),
        trial.count(Status::Pass),
        trial.count(Status::Fail),
        trial.count(Status::Inconclusive),
        work.display()
    );
    Ok(if trial.any_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_outcome(r: &SuiteResult, wall: Duration) {
    eprintln!(
        "      {} {} in {:.1} s — {}",
        r.suite,
        r.verdict.status,
        wall.as_secs_f64(),
        r.headline
    );
    for reason in &r.verdict.reasons {
        eprintln!("        - {reason}");
    }
}

/// Arguments of `cargo xtask report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The trial directory to re-render (default: the latest under docs/trials).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Percent a headline metric may move the wrong way before the report marks it.
    #[arg(long, default_value_t = reports::compare::DEFAULT_TOLERANCE_PCT)]
    pub tolerance: f64,
}

/// `cargo xtask report`: re-renders a trial from its `results.json` without re-running.
pub fn report(root: &Path, args: &ReportArgs) -> Result<ExitCode> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => trials::latest(&root.join("docs/trials")).context(
            "no trial under docs/trials has a results.json; run `cargo xtask stress` first",
        )?,
    };
    let trial = Trial::read(&dir.join("results.json"))?;
    let previous = previous_for(root, &dir);
    let opts = RenderOptions {
        tolerance_pct: args.tolerance,
    };
    reports::write_trial(&dir, &trial, previous.as_ref(), &opts)?;
    eprintln!("report: {}", dir.join("trial-report.md").display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(names: &[&str]) -> Vec<CatalogEntry> {
        names
            .iter()
            .map(|n| CatalogEntry {
                name: n.to_string(),
                description: String::new(),
                plans: vec![(
                    "quick".into(),
                    Plan {
                        scale: "s".into(),
                        expected_s: 5,
                    },
                )],
            })
            .collect()
    }

    #[test]
    fn selection_keeps_catalog_order_and_rejects_unknown_names() {
        let c = cat(&["timer", "maxrps-sim", "herd"]);
        let all = select(&c, &[]).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(select(&c, &["all".into()]).unwrap().len(), 3);
        let some = select(&c, &["herd".into(), "timer".into()]).unwrap();
        assert_eq!(
            some.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["timer", "herd"]
        );
        let e = select(&c, &["nope".into(), "timer".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown suite \"nope\": expected one of timer, maxrps-sim, herd"
        );
        assert!(c[0].plan("full").is_err());
    }

    #[test]
    fn bounds_leave_room_but_end() {
        assert_eq!(bound_for(10), Duration::from_secs(90));
        assert_eq!(bound_for(u64::MAX), Duration::from_secs(u64::MAX));
    }
}
