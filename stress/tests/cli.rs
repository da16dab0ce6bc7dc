//! The `stress` binary as `cargo xtask` and a person use it.

use std::process::Command;

fn stress() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stress"))
}

#[test]
fn unknown_suite_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = stress()
        .args(["run", "no-such-suite", "--profile", "smoke", "--out"])
        .arg(dir.path().join("r.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown suite \"no-such-suite\": expected one of timer"),
        "{err}"
    );
    assert!(!dir.path().join("r.json").exists());
}

#[test]
fn unknown_profile_is_refused() {
    let out = stress()
        .args(["run", "timer", "--profile", "huge", "--out", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'huge'"), "{err}");
    assert!(err.contains("smoke, quick, full"), "{err}");
}

#[test]
fn list_json_describes_every_profile() {
    let out = stress().args(["list", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timer = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "timer")
        .unwrap();
    let profiles: Vec<&str> = timer["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["smoke", "quick", "full"]);
    assert!(timer["plans"][1][1]["expected_s"].as_u64().unwrap() > 0);
}

#[test]
fn a_smoke_run_writes_a_valid_result_with_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timer.json");
    let out = stress()
        .args([
            "run",
            "timer",
            "--profile",
            "smoke",
            "--seed",
            "42",
            "--out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("suite: timer · profile: smoke · seed: 42"),
        "{stdout}"
    );
    let r = collector::SuiteResult::read(&path).unwrap();
    assert_eq!(r.suite, "timer");
    assert_eq!(r.seed, 42);
    assert_eq!(r.profile, "smoke");
    assert!(r.wall_s > 0.0);
    // Exit status follows the verdict: 1 only for FAIL.
    let fail = r.verdict.status == collector::Status::Fail;
    assert_eq!(
        out.status.code(),
        Some(if fail { 1 } else { 0 }),
        "{stdout}"
    );
}
