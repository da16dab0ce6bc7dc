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

fn maxrps(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "maxrps",
        "--target",
        "sim:servers=4,service_us=1000",
        "--steps",
        "2k,8k",
        "--warmup",
        "0s",
        "--hold",
        "300ms",
        "--slo-p99-ms",
        "20",
    ];
    // Later flags override earlier ones.
    args.extend_from_slice(extra);
    stress().args(&args).output().unwrap()
}

#[test]
fn maxrps_refuses_bad_input_naming_the_value() {
    for (extra, needle) in [
        (&["--steps", ""][..], "invalid step \"\""),
        (&["--steps", "0"], "invalid step \"0\""),
        (&["--steps", "-5"], "invalid step \"-5\""),
        (
            &["--steps", "1x"],
            "invalid step \"1x\": expected a number with an optional k suffix, like 500 or 2k",
        ),
        (
            &["--steps", "2k,1k"],
            "1000 does not exceed the step before it (2000)",
        ),
        (
            &["--slo-p99-ms", "0"],
            "invalid p99 threshold (ms) 0: expected a number above 0",
        ),
        (&["--slo-p99-ms", "-3"], "invalid p99 threshold (ms) -3"),
        (
            &["--hold", "0s"],
            "invalid hold \"0s\": expected a duration above 0",
        ),
        (&["--hold", "-1s"], "invalid hold \"-1s\""),
        (&["--precision", "0"], "invalid precision 0"),
        (
            &["--precision", "60"],
            "invalid precision 60: expected a percentage above 0 and at most 50",
        ),
        (
            &["--target", "mysql:x"],
            "unknown target \"mysql:x\": expected one of http://",
        ),
        (&["--target", "sim:servers=0,service_us=1"], "servers=\"0\""),
        (
            &["--action-p95-ms", "send:80"],
            "unknown action \"send\": expected one of op",
        ),
        (&["--max-error-rate", "1.5"], "invalid max error rate 1.5"),
    ] {
        let out = maxrps(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

#[test]
fn maxrps_writes_csv_json_and_an_answer_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("steps.csv");
    let json = dir.path().join("result.json");
    let out = maxrps(&[
        "--precision",
        "50",
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("ANSWER: "), "{stdout}");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("phase,target_per_s,achieved_per_s,"));
    assert!(lines.next().unwrap().starts_with("ramp,2000,"), "{csv}");
    let r = collector::SuiteResult::read(&json).unwrap();
    assert_eq!(r.headline, last);
    assert!(!r.tables[0].rows.is_empty());
}
