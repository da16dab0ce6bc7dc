//! `cargo xtask test`: the project's one test command, the same on a laptop and in CI:
//! formatting, clippy, the workspace tests, the loom models, and a smoke run of every suite.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::stress::{self, cargo, StressArgs};

/// Arguments of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip the smoke run of the suites (faster while iterating; CI never skips it).
    #[arg(long)]
    pub no_smoke: bool,
}

fn run_step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> {name}: {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn has_nextest(root: &Path) -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every `(package, test target)` whose test target's name starts with `loom`.
fn loom_targets(root: &Path) -> Result<Vec<(String, String)>> {
    let out = Command::new(cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut found = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        for target in pkg["targets"].as_array().into_iter().flatten() {
            let is_test = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            let name = target["name"].as_str().unwrap_or_default();
            if is_test && name.starts_with("loom") {
                found.push((
                    pkg["name"].as_str().unwrap_or_default().to_string(),
                    name.to_string(),
                ));
            }
        }
    }
    Ok(found)
}

/// hub-leaf's tests and suites start `nats-server -js` themselves: fail at once, saying how
/// to get it, rather than after the build with a test failure. Looked for where hub-leaf
/// looks: `$NATS_SERVER_BIN`, then `PATH`, then `/usr/sbin` and `/usr/local/sbin`.
fn nats_server_present() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        let bin = std::path::PathBuf::from(bin);
        anyhow::ensure!(
            executable(&bin),
            "NATS_SERVER_BIN={} is not an executable file",
            bin.display()
        );
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|p| executable(p));
    match found {
        Some(p) => {
            eprintln!("==> nats-server: {}", p.display());
            Ok(())
        }
        None => anyhow::bail!(
            "nats-server not found on PATH, /usr/sbin or /usr/local/sbin: hub-leaf's tests start it \
             themselves. Install it with `apt-get install nats-server` (Debian: 2.9.10), or set \
             NATS_SERVER_BIN to its path"
        ),
    }
}

/// `cargo xtask test`.
pub fn run(root: &Path, args: &TestArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut done: Vec<(String, f64)> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let t = Instant::now();
        f()?;
        done.push((name.to_string(), t.elapsed().as_secs_f64()));
        Ok(())
    };
    let c = || {
        let mut c = Command::new(cargo());
        c.current_dir(root);
        c
    };

    step("nats-server", &mut || nats_server_present())?;
    step("fmt", &mut || {
        run_step("fmt", c().args(["fmt", "--all", "--check"]))
    })?;
    step("clippy", &mut || {
        run_step(
            "clippy",
            c().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    step("tests", &mut || {
        if has_nextest(root) {
            // nextest does not run doctests; run them first so that nextest's summary is
            // the last test-runner line in the log.
            run_step("doctests", c().args(["test", "--workspace", "--doc"]))?;
            run_step(
                "tests (nextest)",
                c().args(["nextest", "run", "--workspace", "--no-fail-fast"]),
            )
        } else {
            eprintln!("(cargo-nextest not found: using cargo test)");
            run_step("tests", c().args(["test", "--workspace", "--no-fail-fast"]))
        }
    })?;
    step("loom", &mut || {
        let targets = loom_targets(root)?;
        if targets.is_empty() {
            eprintln!("\n==> loom: no test target named loom* in the workspace");
        }
        for (pkg, test) in targets {
            // A separate target dir, so the cfg change does not invalidate the main build.
            run_step(
                &format!("loom {pkg}/{test}"),
                c().args(["test", "--release", "-p", &pkg, "--test", &test])
                    .env("RUSTFLAGS", "--cfg loom")
                    .env("LOOM_MAX_PREEMPTIONS", "2")
                    .env("CARGO_TARGET_DIR", root.join("target/loom")),
            )?;
        }
        Ok(())
    })?;
    if !args.no_smoke {
        step("smoke", &mut || {
            let out = root.join("target/xtask-smoke/smoke-trial");
            if out.exists() {
                std::fs::remove_dir_all(&out)
                    .with_context(|| format!("clearing {}", out.display()))?;
            }
            eprintln!(
                "\n==> smoke: every suite at its smallest scale, and examples/plans/sim.toml, into {}",
                out.display()
            );
            let code = stress::run(
                root,
                &StressArgs {
                    profile: "smoke".into(),
                    suites: vec!["all".into()],
                    plans: vec![root.join("examples/plans/sim.toml")],
                    seed: 1,
                    date: None,
                    out: Some(out),
                    tolerance: reports::compare::DEFAULT_TOLERANCE_PCT,
                },
            )?;
            if code != ExitCode::SUCCESS {
                bail!("a suite FAILED in the smoke run (see the report above)");
            }
            Ok(())
        })?;
    }
    eprintln!();
    for (name, secs) in &done {
        eprintln!("  ok  {name:<8} {secs:>7.1} s");
    }
    eprintln!(
        "xtask test: {} steps passed in {:.0} s",
        done.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
