//! End-to-end tests of `cargo xtask bench` on a copy of real criterion 0.8.2 output
//! (`tests/fixtures/criterion`), with `--no-run` so no benches are run. Every run gets a
//! temporary `CARGO_TARGET_DIR`, so nothing is written into the repository's target.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const TO_JSON: &str = "result_model_to_json";

/// A temporary target directory and a private copy of the criterion fixture.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Result<Env> {
        let tmp = tempfile::tempdir()?;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/criterion");
        copy_tree(&fixture, &tmp.path().join("criterion"))?;
        Ok(Env { tmp })
    }

    fn target(&self) -> PathBuf {
        self.tmp.path().join("target")
    }

    fn criterion(&self) -> PathBuf {
        self.tmp.path().join("criterion")
    }

    /// Runs `xtask bench --no-run --criterion-dir <copy> ARGS`.
    fn bench(&self, args: &[&str]) -> Result<Run> {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("bench")
            .arg("--no-run")
            .arg("--criterion-dir")
            .arg(self.criterion())
            .args(args)
            .env("CARGO_TARGET_DIR", self.target())
            .env_remove("CRITERION_HOME")
            .current_dir(self.tmp.path())
            .output()?;
        Ok(Run::from(output))
    }

    /// Multiplies every sample time of one benchmark by `factor`.
    fn scale_times(&self, bench_dir: &str, factor: f64) -> Result {
        let path = self.criterion().join(bench_dir).join("new/sample.json");
        let mut sample: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
        let times = sample
            .get_mut("times")
            .and_then(Value::as_array_mut)
            .ok_or("fixture sample.json has no `times` array")?;
        for t in times.iter_mut() {
            let v = t.as_f64().ok_or("non-numeric time")?;
            *t = Value::from(v * factor);
        }
        fs::write(&path, serde_json::to_string(&sample)?)?;
        Ok(())
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The table row of benchmark `id`.
    fn row(&self, id: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_default()
            .to_string()
    }

    fn dump(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

#[test]
fn save_then_compare_unchanged_passes_and_a_slowdown_fails() -> Result {
    let env = Env::new()?;
    let save = env.bench(&["--save", "base"])?;
    assert_eq!(save.code, Some(0), "{}", save.dump());
    let saved = env.target().join("bench-baselines/base.json");
    assert!(saved.is_file(), "{}", save.dump());
    let snapshot: Value = serde_json::from_str(&fs::read_to_string(&saved)?)?;
    assert_eq!(snapshot["schema"], 1);
    assert_eq!(snapshot["name"], "base");
    assert_eq!(snapshot["benchmarks"].as_array().map(Vec::len), Some(3));
    // Without --compare it prints the current estimates.
    assert!(
        save.row("result_model/to_json").contains("66.85 µs"),
        "{}",
        save.dump()
    );

    let same = env.bench(&["--compare", "base"])?;
    assert_eq!(same.code, Some(0), "{}", same.dump());
    for id in [
        "result_model/from_json",
        "result_model/to_json",
        "vec ops/sum/64",
    ] {
        let row = same.row(id);
        assert!(row.ends_with("within noise"), "{id}: {}", same.dump());
        assert!(row.contains("+0.00%"), "{id}: {}", same.dump());
    }

    env.scale_times(TO_JSON, 1.5)?;
    let slower = env.bench(&["--compare", "base"])?;
    assert_eq!(slower.code, Some(1), "{}", slower.dump());
    let row = slower.row("result_model/to_json");
    assert!(row.ends_with("regressed"), "{}", slower.dump());
    assert!(row.contains("+50.00%"), "{}", slower.dump());
    assert!(
        row.contains("66.85 µs") && row.contains("100.3 µs"),
        "{row}"
    );
    assert!(slower
        .row("result_model/from_json")
        .ends_with("within noise"));
    assert!(slower.stdout.contains("1 regressed"), "{}", slower.dump());

    let report = fs::read_to_string(env.target().join("bench-report.md"))?;
    assert!(report.contains("| result_model/to_json |"), "{report}");
    assert!(report.contains("| regressed |"), "{report}");
    assert!(report.contains("±5%"), "{report}");
    assert!(report.contains("| name | base | current |"), "{report}");
    Ok(())
}

#[test]
fn an_exported_file_is_a_baseline_too() -> Result {
    let env = Env::new()?;
    let file = env.tmp.path().join("exports/committed.json");
    let export = env.bench(&["--export", &file.display().to_string()])?;
    assert_eq!(export.code, Some(0), "{}", export.dump());
    assert!(file.is_file(), "{}", export.dump());
    assert!(
        !env.target().join("bench-baselines").exists(),
        "--export alone saves nothing under target"
    );

    let same = env.bench(&["--compare", &file.display().to_string()])?;
    assert_eq!(same.code, Some(0), "{}", same.dump());

    env.scale_times(TO_JSON, 1.5)?;
    // A relative path works as well (resolved against the current directory).
    let slower = env.bench(&["--compare", "exports/committed.json"])?;
    assert_eq!(slower.code, Some(1), "{}", slower.dump());
    assert!(slower.row("result_model/to_json").ends_with("regressed"));

    // A big enough threshold turns the same +50% into noise.
    let lenient = env.bench(&["--compare", "exports/committed.json", "--threshold", "60"])?;
    assert_eq!(lenient.code, Some(0), "{}", lenient.dump());
    assert!(lenient
        .row("result_model/to_json")
        .ends_with("within noise"));
    Ok(())
}

#[test]
fn faster_missing_and_new_benchmarks_do_not_fail() -> Result {
    let env = Env::new()?;
    assert_eq!(env.bench(&["--save", "base"])?.code, Some(0));

    env.scale_times(TO_JSON, 0.5)?;
    fs::remove_dir_all(env.criterion().join("vec ops"))?;
    let bench_json = env
        .criterion()
        .join("result_model_from_json/new/benchmark.json");
    let renamed = fs::read_to_string(&bench_json)?.replace(
        "\"full_id\":\"result_model/from_json\"",
        "\"full_id\":\"result_model/from_json_v2\"",
    );
    fs::write(&bench_json, renamed)?;

    let run = env.bench(&["--compare", "base"])?;
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert!(
        run.row("result_model/to_json").ends_with("improved"),
        "{}",
        run.dump()
    );
    assert!(
        run.row("vec ops/sum/64").ends_with("missing"),
        "{}",
        run.dump()
    );
    assert!(
        run.row("result_model/from_json").ends_with("missing"),
        "{}",
        run.dump()
    );
    assert!(
        run.row("result_model/from_json_v2").ends_with("new"),
        "{}",
        run.dump()
    );
    Ok(())
}

#[test]
fn a_missing_baseline_names_both_places_looked() -> Result {
    let env = Env::new()?;
    let run = env.bench(&["--compare", "nope"])?;
    assert_eq!(run.code, Some(2), "{}", run.dump());
    let saved = env.target().join("bench-baselines/nope.json");
    assert!(run.stderr.contains("no file `nope`"), "{}", run.dump());
    assert!(
        run.stderr.contains(&saved.display().to_string()),
        "{}",
        run.dump()
    );
    Ok(())
}

#[test]
fn bad_input_is_named() -> Result {
    let env = Env::new()?;
    let run = env.bench(&["--threshold", "-3"])?;
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert!(
        run.stderr
            .contains("invalid threshold -3: expected a percentage in (0, 100)"),
        "{}",
        run.dump()
    );

    let run = env.bench(&["--save", "../escape"])?;
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert!(run.stderr.contains("invalid baseline name `../escape`"));

    let estimates = env.criterion().join(TO_JSON).join("new/estimates.json");
    fs::write(&estimates, r#"{"mean":{"point_estimate":1.0}}"#)?;
    let run = env.bench(&[])?;
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert!(
        run.stderr.contains(&estimates.display().to_string()),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr
            .contains("field `mean.confidence_interval.lower_bound` is missing"),
        "{}",
        run.dump()
    );
    Ok(())
}

#[test]
fn help_explains_the_threshold_and_exit_status() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Criterion's own default is 1%"), "{help}");
    assert!(help.contains("[default: 5]"), "{help}");
    assert!(help.contains("1 if any benchmark regressed"), "{help}");
    Ok(())
}
