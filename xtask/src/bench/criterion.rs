//! Reading criterion's output tree (`target/criterion/**/new/*.json`).
//!
//! Criterion's JSON files are not a stable interface, which is why the workspace pins
//! criterion at `=0.8.2`. This module reads exactly what that version writes, field by
//! field, so a change of layout fails loudly with the file and the field named instead
//! of being misread. Layout per benchmark (its `directory_name` may span several path
//! components, e.g. `group/function/value`):
//!
//! ```text
//! <criterion dir>/<directory_name>/new/benchmark.json  {"full_id": "...", ...}
//! <criterion dir>/<directory_name>/new/estimates.json  {"mean": {"point_estimate", "standard_error",
//!                                                        "confidence_interval": {"confidence_level",
//!                                                        "lower_bound", "upper_bound"}}, "median": ...}
//! <criterion dir>/<directory_name>/new/sample.json     {"sampling_mode", "iters": [..], "times": [..]}
//! ```
//!
//! Times are in nanoseconds, `times[i]` being the total for `iters[i]` iterations.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::snapshot::{BenchRecord, Estimate, Sample};

/// One benchmark's results as found under the criterion directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// The benchmark's record (id, estimates, raw sample).
    pub record: BenchRecord,
    /// The `new/` directory it was read from.
    pub dir: PathBuf,
    /// When `new/benchmark.json` was last written (criterion writes it last).
    pub modified: SystemTime,
}

/// Finds and parses every benchmark under `root` (each directory `new/` holding a
/// `benchmark.json`), sorted by benchmark id.
///
/// A missing `root` is an error; so is a malformed file (naming the file and field) and
/// two directories claiming the same `full_id`.
pub fn read_all(root: &Path) -> Result<Vec<Found>> {
    if !root.is_dir() {
        bail!(
            "no criterion results: `{}` is not a directory (run the benches first, or pass --criterion-dir)",
            root.display()
        );
    }
    let mut dirs = Vec::new();
    find_new_dirs(root, &mut dirs)?;
    let mut by_id: BTreeMap<String, Found> = BTreeMap::new();
    for dir in dirs {
        let found = read_one(&dir)?;
        if let Some(previous) = by_id.get(&found.record.id) {
            bail!(
                "benchmark id `{}` appears twice: in `{}` and in `{}`",
                found.record.id,
                previous.dir.display(),
                found.dir.display()
            );
        }
        by_id.insert(found.record.id.clone(), found);
    }
    Ok(by_id.into_values().collect())
}

/// Collects every directory named `new` that directly holds a `benchmark.json`.
fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list directory `{}`", dir.display()))?;
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list directory `{}`", dir.display()))?;
        let file_type = entry
            .file_type()
            .with_context(|| format!("cannot stat `{}`", entry.path().display()))?;
        // Symlinks are not followed: criterion never writes them and they could loop.
        if file_type.is_dir() {
            children.push(entry.path());
        }
    }
    children.sort();
    for child in children {
        if child.file_name().is_some_and(|n| n == "new") && child.join("benchmark.json").is_file() {
            out.push(child.clone());
        }
        find_new_dirs(&child, out)?;
    }
    Ok(())
}

/// Parses one benchmark's `new/` directory.
pub fn read_one(new_dir: &Path) -> Result<Found> {
    let benchmark_path = new_dir.join("benchmark.json");
    let benchmark = load_json(&benchmark_path)?;
    let id = string_field(&benchmark, &["full_id"], &benchmark_path)?;
    let modified = fs::metadata(&benchmark_path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot stat `{}`", benchmark_path.display()))?;

    let estimates_path = new_dir.join("estimates.json");
    let estimates = load_json(&estimates_path)?;
    let mean = estimate_field(&estimates, "mean", &estimates_path)?;
    let median = estimate_field(&estimates, "median", &estimates_path)?;

    let sample_path = new_dir.join("sample.json");
    let sample_json = load_json(&sample_path)?;
    let sampling_mode = match lookup(&sample_json, &["sampling_mode"]) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let sample = Sample {
        sampling_mode,
        iters: number_array(&sample_json, "iters", &sample_path)?,
        times: number_array(&sample_json, "times", &sample_path)?,
    };
    sample
        .validate()
        .with_context(|| format!("malformed criterion file `{}`", sample_path.display()))?;

    Ok(Found {
        record: BenchRecord {
            id,
            mean,
            median,
            sample,
        },
        dir: new_dir.to_path_buf(),
        modified,
    })
}

fn load_json(path: &Path) -> Result<Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "malformed criterion file `{}`: not valid JSON",
            path.display()
        )
    })
}

fn lookup<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn present<'a>(value: &'a Value, path: &[&str], file: &Path) -> Result<&'a Value> {
    lookup(value, path).with_context(|| {
        format!(
            "malformed criterion file `{}`: field `{}` is missing",
            file.display(),
            path.join(".")
        )
    })
}

fn string_field(value: &Value, path: &[&str], file: &Path) -> Result<String> {
    match present(value, path, file)? {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        other => bail!(
            "malformed criterion file `{}`: field `{}` should be a non-empty string, found {}",
            file.display(),
            path.join("."),
            describe(other)
        ),
    }
}

fn number_field(value: &Value, path: &[&str], file: &Path) -> Result<f64> {
    match present(value, path, file)? {
        Value::Number(n) => n.as_f64().with_context(|| {
            format!(
                "malformed criterion file `{}`: field `{}` is not representable as f64",
                file.display(),
                path.join(".")
            )
        }),
        other => bail!(
            "malformed criterion file `{}`: field `{}` should be a number, found {}",
            file.display(),
            path.join("."),
            describe(other)
        ),
    }
}

fn estimate_field(value: &Value, statistic: &str, file: &Path) -> Result<Estimate> {
    Ok(Estimate {
        point: number_field(value, &[statistic, "point_estimate"], file)?,
        lower: number_field(
            value,
            &[statistic, "confidence_interval", "lower_bound"],
            file,
        )?,
        upper: number_field(
            value,
            &[statistic, "confidence_interval", "upper_bound"],
            file,
        )?,
        confidence_level: number_field(
            value,
            &[statistic, "confidence_interval", "confidence_level"],
            file,
        )?,
        standard_error: number_field(value, &[statistic, "standard_error"], file)?,
    })
}

fn number_array(value: &Value, field: &str, file: &Path) -> Result<Vec<f64>> {
    let items = match present(value, &[field], file)? {
        Value::Array(items) => items,
        other => bail!(
            "malformed criterion file `{}`: field `{field}` should be an array of numbers, found {}",
            file.display(),
            describe(other)
        ),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_f64().with_context(|| {
                format!(
                    "malformed criterion file `{}`: field `{field}[{i}]` should be a number, found {}",
                    file.display(),
                    describe(item)
                )
            })
        })
        .collect()
}

/// The committed copy of real criterion 0.8.2 output (see its README).
#[cfg(test)]
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/criterion")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_criterion_0_8_2_fixture() -> Result<()> {
        let found = read_all(&fixture_dir())?;
        let ids: Vec<&str> = found.iter().map(|f| f.record.id.as_str()).collect();
        // Sorted by id; `base/` copies are ignored; nested directory names are found.
        assert_eq!(
            ids,
            [
                "result_model/from_json",
                "result_model/to_json",
                "vec ops/sum/64"
            ]
        );

        let to_json = &found[1].record;
        assert_eq!(to_json.mean.point, 66845.95388880535);
        assert_eq!(to_json.mean.lower, 66330.6758666433);
        assert_eq!(to_json.mean.upper, 67374.04241047802);
        assert_eq!(to_json.mean.confidence_level, 0.95);
        assert_eq!(to_json.mean.standard_error, 266.5437224303929);
        assert_eq!(to_json.median.point, 66037.4913609782);
        assert_eq!(to_json.sample.sampling_mode.as_deref(), Some("Linear"));
        assert_eq!(to_json.sample.iters.len(), 100);
        assert_eq!(to_json.sample.times.len(), 100);
        assert_eq!(&to_json.sample.iters[..2], &[6.0, 12.0]);
        assert_eq!(&to_json.sample.times[..2], &[429750.0, 837843.0]);
        assert!(found[1].dir.ends_with("result_model_to_json/new"));

        let sum = &found[2].record;
        assert_eq!(sum.sample.sampling_mode.as_deref(), Some("Flat"));
        assert_eq!(sum.sample.iters.len(), 20);
        assert!(sum.sample.iters.iter().all(|&i| i == 89837337.0));
        assert_eq!(sum.sample.times[0], 48759927.0);
        assert_eq!(sum.mean.point, 0.5478391595690331);
        assert_eq!(sum.median.point, 0.5473790034537644);
        assert!(found[2].dir.ends_with("vec ops/sum/64/new"));
        Ok(())
    }

    #[test]
    fn the_mean_estimate_is_the_mean_of_per_iteration_times() -> Result<()> {
        // Ties the raw sample to criterion's own point estimate, so a misread sample is caught.
        for f in read_all(&fixture_dir())? {
            let s = &f.record.sample;
            let per_iter: Vec<f64> = s.iters.iter().zip(&s.times).map(|(i, t)| t / i).collect();
            let mean = per_iter.iter().sum::<f64>() / per_iter.len() as f64;
            let rel = (mean - f.record.mean.point).abs() / f.record.mean.point;
            assert!(
                rel < 1e-9,
                "{}: {mean} vs {}",
                f.record.id,
                f.record.mean.point
            );
        }
        Ok(())
    }

    fn write_tree(files: &[(&str, &str)]) -> Result<tempfile::TempDir> {
        let tmp = tempfile::tempdir()?;
        for (path, text) in files {
            let path = tmp.path().join(path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, text)?;
        }
        Ok(tmp)
    }

    const BENCHMARK: &str = r#"{"full_id":"b"}"#;
    const SAMPLE: &str = r#"{"sampling_mode":"Flat","iters":[1.0,1.0],"times":[2.0,3.0]}"#;
    const EST: &str = r#"{"point_estimate":1.0,"standard_error":0.1,
        "confidence_interval":{"confidence_level":0.95,"lower_bound":0.9,"upper_bound":1.1}}"#;

    #[test]
    fn a_malformed_file_is_named_with_its_field() -> Result<()> {
        let bad_estimates = format!(r#"{{"mean":{EST},"median":{{"point_estimate":"fast"}}}}"#);
        let tmp = write_tree(&[
            ("b/new/benchmark.json", BENCHMARK),
            ("b/new/estimates.json", &bad_estimates),
            ("b/new/sample.json", SAMPLE),
        ])?;
        let err = format!("{:#}", read_all(tmp.path()).err().context("should fail")?);
        assert!(err.contains("estimates.json"), "{err}");
        assert!(err.contains("`median.point_estimate`"), "{err}");
        assert!(err.contains("found a string"), "{err}");
        Ok(())
    }

    #[test]
    fn a_missing_field_and_a_bad_sample_are_named() -> Result<()> {
        let estimates = format!(r#"{{"mean":{EST},"median":{EST}}}"#);
        let tmp = write_tree(&[
            ("b/new/benchmark.json", r#"{"id":"b"}"#),
            ("b/new/estimates.json", &estimates),
            ("b/new/sample.json", SAMPLE),
        ])?;
        let err = format!("{:#}", read_all(tmp.path()).err().context("should fail")?);
        assert!(err.contains("benchmark.json"), "{err}");
        assert!(err.contains("`full_id` is missing"), "{err}");

        let tmp = write_tree(&[
            ("b/new/benchmark.json", BENCHMARK),
            ("b/new/estimates.json", &estimates),
            (
                "b/new/sample.json",
                r#"{"iters":[1.0,1.0,1.0],"times":[2.0,3.0]}"#,
            ),
        ])?;
        let err = format!("{:#}", read_all(tmp.path()).err().context("should fail")?);
        assert!(err.contains("sample.json"), "{err}");
        assert!(err.contains("`iters`"), "{err}");
        Ok(())
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = read_all(Path::new("/nonexistent/criterion")).err();
        let msg = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(msg.contains("/nonexistent/criterion"), "{msg}");
    }
}
