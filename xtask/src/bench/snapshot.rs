//! Baseline snapshots: our own self-contained JSON format (`"schema": 1`).
//!
//! A snapshot holds, per benchmark, criterion's mean and median estimates and the raw
//! sample (`iters`, `times`), so a comparison can be recomputed anywhere: it survives
//! `cargo clean`, can be committed, and travels between machines. Saved snapshots live at
//! `<target>/bench-baselines/NAME.json`; `--export FILE` writes one anywhere.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// The snapshot format version this code reads and writes.
pub const SCHEMA: u32 = 1;

/// The criterion version whose output files this code parses (pinned in the workspace).
pub const CRITERION_VERSION: &str = "0.8.2";

/// A named set of benchmark results with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version; always [`SCHEMA`].
    pub schema: u32,
    /// The baseline's name (`--save NAME`, or the export file's stem, or `current`).
    pub name: String,
    /// When the snapshot was taken, in seconds since the Unix epoch.
    pub created: u64,
    /// The machine that measured it.
    pub host: Host,
    /// `git rev-parse --short HEAD` of the workspace, with `-dirty` if it had changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// The criterion version whose files were read.
    pub criterion: String,
    /// One record per benchmark, sorted by id.
    pub benchmarks: Vec<BenchRecord>,
}

/// Cheap facts about the measuring machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// CPU model name (from `/proc/cpuinfo`), if known.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Logical cores available to the process, if known.
    #[serde(default)]
    pub cores: Option<usize>,
    /// Operating system (`std::env::consts::OS`).
    pub os: String,
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: String,
}

/// One benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Criterion's `full_id`, e.g. `group/function/value`.
    pub id: String,
    /// Criterion's estimate of the mean time per iteration, in nanoseconds.
    pub mean: Estimate,
    /// Criterion's estimate of the median time per iteration, in nanoseconds.
    pub median: Estimate,
    /// The raw measurements.
    pub sample: Sample,
}

/// A point estimate with its bootstrap confidence interval (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The point estimate.
    pub point: f64,
    /// Lower bound of the confidence interval.
    pub lower: f64,
    /// Upper bound of the confidence interval.
    pub upper: f64,
    /// Confidence level of the interval, e.g. 0.95.
    pub confidence_level: f64,
    /// Standard error of the estimate.
    pub standard_error: f64,
}

/// Criterion's raw sample: `times[i]` nanoseconds for `iters[i]` iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Criterion's sampling mode (`Linear` or `Flat`), kept for information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_mode: Option<String>,
    /// Iteration count of each measurement.
    pub iters: Vec<f64>,
    /// Total time of each measurement, in nanoseconds.
    pub times: Vec<f64>,
}

impl Sample {
    /// Checks the sample is usable: equal lengths, at least two measurements, positive
    /// finite iteration counts, non-negative finite times. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.iters.len() == self.times.len(),
            "field `iters` has {} entries but `times` has {}",
            self.iters.len(),
            self.times.len()
        );
        ensure!(
            self.times.len() >= 2,
            "field `times` has {} entries; at least 2 are needed",
            self.times.len()
        );
        for (i, &n) in self.iters.iter().enumerate() {
            ensure!(
                n.is_finite() && n > 0.0,
                "field `iters[{i}]` is {n}: expected a positive iteration count"
            );
        }
        for (i, &t) in self.times.iter().enumerate() {
            ensure!(
                t.is_finite() && t >= 0.0,
                "field `times[{i}]` is {t}: expected a non-negative time in nanoseconds"
            );
        }
        Ok(())
    }

    /// Time per iteration of each measurement (`times[i] / iters[i]`), in nanoseconds.
    pub fn per_iteration(&self) -> Vec<f64> {
        self.iters
            .iter()
            .zip(&self.times)
            .map(|(n, t)| t / n)
            .collect()
    }
}

impl Snapshot {
    /// A snapshot of `benchmarks` taken now on this machine, of the workspace at `root`.
    pub fn capture(name: &str, mut benchmarks: Vec<BenchRecord>, root: &Path) -> Snapshot {
        benchmarks.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            schema: SCHEMA,
            name: name.to_string(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            host: Host::current(),
            git: git_describe(root),
            criterion: CRITERION_VERSION.to_string(),
            benchmarks,
        }
    }

    /// Writes the snapshot as pretty JSON to `path`, creating parent directories; the
    /// file is replaced atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory `{}`", parent.display()))?;
        }
        let mut text = serde_json::to_string_pretty(self).context("cannot serialize snapshot")?;
        text.push('\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, text).with_context(|| format!("cannot write `{}`", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// Reads and validates a snapshot file. Errors name the file and, where it applies,
    /// the benchmark and field.
    pub fn read(path: &Path) -> Result<Snapshot> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read snapshot `{}`", path.display()))?;
        Self::parse(&text).with_context(|| format!("malformed snapshot `{}`", path.display()))
    }

    /// Parses and validates a snapshot from JSON text.
    pub fn parse(text: &str) -> Result<Snapshot> {
        let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
        match value.get("schema") {
            Some(v) if v.as_u64() == Some(u64::from(SCHEMA)) => {}
            Some(v) => bail!("field `schema` is {v}: this xtask reads schema {SCHEMA}"),
            None => bail!("field `schema` is missing (not a `cargo xtask bench` snapshot?)"),
        }
        let snapshot: Snapshot = serde_json::from_value(value)?;
        let mut seen = BTreeSet::new();
        for b in &snapshot.benchmarks {
            ensure!(seen.insert(&b.id), "benchmark `{}` appears twice", b.id);
            b.sample
                .validate()
                .with_context(|| format!("benchmark `{}`: `sample`", b.id))?;
        }
        Ok(snapshot)
    }

    /// The record of benchmark `id`, if present.
    pub fn get(&self, id: &str) -> Option<&BenchRecord> {
        self.benchmarks.iter().find(|b| b.id == id)
    }
}

impl Host {
    /// Facts about the machine this runs on.
    pub fn current() -> Host {
        Host {
            cpu: crate::host::cpu_model(),
            cores: std::thread::available_parallelism().ok().map(|n| n.get()),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// A one-line description, e.g. `AMD EPYC 7B13, 2 cores, linux/x86_64`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cpu) = &self.cpu {
            parts.push(cpu.clone());
        }
        if let Some(cores) = self.cores {
            parts.push(format!("{cores} cores"));
        }
        parts.push(format!("{}/{}", self.os, self.arch));
        parts.join(", ")
    }
}

/// The short commit (12 hex digits), plus `-dirty` if the tree had changes; `None` if git or
/// a commit is unavailable.
fn git_describe(root: &Path) -> Option<String> {
    let (commit, dirty) = crate::host::git_state(root)?;
    let short: String = commit.chars().take(12).collect();
    Some(if dirty {
        format!("{short}-dirty")
    } else {
        short
    })
}

/// Checks a `--save` name: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ensure!(
        ok,
        "invalid baseline name `{name}`: use letters, digits, '.', '_' and '-' (not starting with '.')"
    );
    Ok(())
}

/// Where a saved baseline named `name` lives.
pub fn saved_path(baseline_dir: &Path, name: &str) -> PathBuf {
    baseline_dir.join(format!("{name}.json"))
}

/// Resolves `--compare X`: X is a file path if such a file exists (a committed export),
/// else the name of a baseline saved under `baseline_dir`. Neither is an error naming
/// both places looked.
pub fn resolve_compare(arg: &str, baseline_dir: &Path) -> Result<PathBuf> {
    let as_file = Path::new(arg);
    if as_file.is_file() {
        return Ok(as_file.to_path_buf());
    }
    let saved = validate_name(arg)
        .ok()
        .map(|()| saved_path(baseline_dir, arg));
    if let Some(saved) = &saved {
        if saved.is_file() {
            return Ok(saved.clone());
        }
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let saved_msg = match saved {
        Some(p) => format!("no saved baseline `{}`", p.display()),
        None => format!(
            "it is not a valid baseline name to look for under `{}`",
            baseline_dir.display()
        ),
    };
    bail!(
        "baseline `{arg}` not found: no file `{arg}` (relative to `{cwd}`), and {saved_msg}; \
         save one with `cargo xtask bench --save NAME` or `--export FILE`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> BenchRecord {
        let e = Estimate {
            point: 2.5,
            lower: 2.0,
            upper: 3.0,
            confidence_level: 0.95,
            standard_error: 0.25,
        };
        BenchRecord {
            id: id.to_string(),
            mean: e,
            median: e,
            sample: Sample {
                sampling_mode: Some("Flat".into()),
                iters: vec![1.0, 2.0],
                times: vec![2.0, 6.0],
            },
        }
    }

    #[test]
    fn write_then_read_round_trips() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let snap = Snapshot::capture("x", vec![record("b"), record("a")], tmp.path());
        assert_eq!(snap.benchmarks[0].id, "a", "sorted by id");
        let path = tmp.path().join("deep/dir/x.json");
        snap.write(&path)?;
        assert_eq!(Snapshot::read(&path)?, snap);
        Ok(())
    }

    #[test]
    fn wrong_schema_and_bad_samples_are_named() {
        let err = |text: &str| {
            Snapshot::parse(text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(err(r#"{"schema":2}"#).contains("field `schema` is 2"));
        assert!(err(r#"{"name":"x"}"#).contains("field `schema` is missing"));
        let mut snap = Snapshot::capture("x", vec![record("a")], Path::new("/nonexistent"));
        snap.benchmarks[0].sample.iters[1] = 0.0;
        let text = serde_json::to_string(&snap).unwrap_or_default();
        let msg = err(&text);
        assert!(msg.contains("benchmark `a`"), "{msg}");
        assert!(msg.contains("`iters[1]` is 0"), "{msg}");
        snap.benchmarks[0].sample.iters[1] = 1.0;
        snap.benchmarks.push(record("a"));
        let text = serde_json::to_string(&snap).unwrap_or_default();
        assert!(err(&text).contains("appears twice"));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("main-2024.01_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "../x"] {
            let msg = validate_name(bad).err().map(|e| e.to_string());
            assert!(
                msg.is_some_and(|m| m.contains(&format!("`{bad}`"))),
                "{bad}"
            );
        }
    }

    #[test]
    fn compare_resolves_file_then_saved_name() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("baselines");
        let snap = Snapshot::capture("a", vec![record("a")], tmp.path());
        snap.write(&saved_path(&dir, "a"))?;
        assert_eq!(resolve_compare("a", &dir)?, dir.join("a.json"));
        let file = tmp.path().join("export.json");
        snap.write(&file)?;
        let file_arg = file.display().to_string();
        assert_eq!(resolve_compare(&file_arg, &dir)?, file);

        let msg = format!(
            "{:#}",
            resolve_compare("nope", &dir).err().context("fails")?
        );
        assert!(msg.contains("no file `nope`"), "{msg}");
        assert!(
            msg.contains(&dir.join("nope.json").display().to_string()),
            "{msg}"
        );
        Ok(())
    }
}
