//! Golden-file tests: rendering a fixed trial gives exactly the committed report and chart.
//! After an intended change to the template or the charts, regenerate the golden files with
//! `UPDATE_GOLDEN=1 cargo test -p reports --test golden` and review the diff.

use std::path::{Path, PathBuf};

use reports::{render, write_trial, RenderOptions, Trial};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn load(name: &str) -> Trial {
    Trial::read(&dir().join("fixtures").join(name)).unwrap()
}

fn check_golden(name: &str, actual: &str) {
    let path = dir().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from its golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(if intended: UPDATE_GOLDEN=1 cargo test -p reports --test golden)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn report_matches_its_golden_file() {
    let trial = load("trial.json");
    let previous = load("previous.json");
    let rendered = render(&trial, Some(&previous), &RenderOptions::default()).unwrap();
    check_golden("trial-report.md", &rendered.markdown);
    assert_eq!(rendered.charts.len(), 1);
    assert_eq!(rendered.charts[0].0, "timer-lateness-p99.svg");
    check_golden("timer-lateness-p99.svg", &rendered.charts[0].1);
    // Rendering twice gives the same bytes.
    assert_eq!(
        render(&trial, Some(&previous), &RenderOptions::default()).unwrap(),
        rendered
    );
}

#[test]
fn report_marks_regressions_against_the_previous_trial() {
    let trial = load("trial.json");
    let previous = load("previous.json");
    let md = render(&trial, Some(&previous), &RenderOptions::default())
        .unwrap()
        .markdown;
    // p99 15 -> 21 µs is +40%: worse. max_rps 4000 -> 0: worse. achieved % steady.
    assert!(
        md.contains("| `timer` | hybrid_50k_lateness_p99_us | 15 µs | 21 µs | +40.0% | ⚠ worse |"),
        "{md}"
    );
    assert!(
        md.contains("| `doubtful` | max_rps | 4,000 ops/s | 0 ops/s | -100.0% | ⚠ worse |"),
        "{md}"
    );
    assert!(
        md.contains("| `timer` | hybrid_50k_achieved_pct | 99.99% | 99.98% | -0.01% |  |"),
        "{md}"
    );
    assert!(
        md.contains("| `timer` | fresh_metric_ms | — | 3 ms | new |  |"),
        "{md}"
    );
    assert!(
        md.contains("2 headline metrics moved the wrong way"),
        "{md}"
    );
    // A wide tolerance forgives the latency move but not the collapse.
    let md = render(
        &trial,
        Some(&previous),
        &RenderOptions {
            tolerance_pct: 50.0,
        },
    )
    .unwrap()
    .markdown;
    assert!(md.contains("1 headline metric moved the wrong way"), "{md}");
    // Without a previous trial the section says so.
    let md = render(&trial, None, &RenderOptions::default())
        .unwrap()
        .markdown;
    assert!(md.contains("No earlier trial"), "{md}");
}

#[test]
fn write_trial_writes_every_file_and_replaces_stale_charts() {
    let out = tempfile::tempdir().unwrap();
    let trial = load("trial.json");
    std::fs::create_dir_all(out.path().join("charts")).unwrap();
    std::fs::write(out.path().join("charts/stale.svg"), "<svg/>").unwrap();
    write_trial(out.path(), &trial, None, &RenderOptions::default()).unwrap();
    assert!(out.path().join("trial-report.md").is_file());
    assert!(out.path().join("charts/timer-lateness-p99.svg").is_file());
    assert!(!out.path().join("charts/stale.svg").exists());
    assert_eq!(
        Trial::read(&out.path().join("results.json")).unwrap(),
        trial
    );
}

#[test]
fn bad_results_files_name_the_file_and_field() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("results.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("fixtures/trial.json")).unwrap())
            .unwrap();
    v["suites"][0]["verdict"]["status"] = "MAYBE".into();
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Trial::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("results.json: field `suites[0].verdict.status`"),
        "{e}"
    );

    v["suites"][0]["verdict"]["status"] = "PASS".into();
    v["suites"][0]["tables"][0]["rows"][0] = serde_json::json!(["one"]);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Trial::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("field `suites[0].tables[0].rows[0]`: 1 cells (expected 3"),
        "{e}"
    );

    v["schema"] = 9.into();
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Trial::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("field `schema`: version 9 is not supported (expected 1)"),
        "{e}"
    );
}
