//! The trial result model: what one stress suite reports about one run.
//!
//! A [`SuiteResult`] is written by a suite as JSON (`"schema": 1`), read back by
//! `xtask` and rendered by `reports`. Reading is strict: a malformed file, a file
//! of another schema version, or a value that cannot be rendered honestly (a
//! non-finite number, a table row of the wrong width) is an error that names the
//! file and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The schema version this crate writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The outcome of a suite, in the order a reader cares about.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Every invariant held and every target was met.
    Pass,
    /// An invariant was violated or a target was missed; the reasons say which.
    Fail,
    /// The run could not decide (the measuring side was the limit, not the system under test).
    Inconclusive,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// A status with the reasons that led to it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// PASS, FAIL or INCONCLUSIVE.
    pub status: Status,
    /// One line per reason, e.g. `p99=612ms > 500`.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Verdict {
    /// A verdict from a list of failures and a list of doubts: any failure makes it FAIL,
    /// else any doubt makes it INCONCLUSIVE, else PASS. The reasons keep that order.
    pub fn from_checks(failures: Vec<String>, doubts: Vec<String>) -> Self {
        if !failures.is_empty() {
            let mut reasons = failures;
            reasons.extend(doubts);
            Verdict {
                status: Status::Fail,
                reasons,
            }
        } else if !doubts.is_empty() {
            Verdict {
                status: Status::Inconclusive,
                reasons: doubts,
            }
        } else {
            Verdict {
                status: Status::Pass,
                reasons: Vec::new(),
            }
        }
    }

    /// A FAIL verdict with one reason.
    pub fn fail(reason: impl Into<String>) -> Self {
        Verdict {
            status: Status::Fail,
            reasons: vec![reason.into()],
        }
    }
}

/// Which way a metric should move between trials.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Larger is better (throughput, recall).
    Higher,
    /// Smaller is better (latency, memory).
    Lower,
    /// No direction (a configuration echo, a count that only describes).
    #[default]
    Neither,
}

/// One named number with its unit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Name with the unit last, e.g. `latency_p99_ms`.
    pub name: String,
    /// The value; always finite.
    pub value: f64,
    /// The unit as a reader should see it (`ms`, `ops/s`, `bytes`, `%`, or empty).
    pub unit: String,
    /// Which way is an improvement.
    #[serde(default)]
    pub better: Better,
    /// Headline metrics are compared with the previous trial in the report.
    #[serde(default)]
    pub headline: bool,
}

impl Metric {
    /// A metric with no direction that is not a headline.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            better: Better::Neither,
            headline: false,
        }
    }

    /// Marks larger values as better.
    pub fn higher_is_better(mut self) -> Self {
        self.better = Better::Higher;
        self
    }

    /// Marks smaller values as better.
    pub fn lower_is_better(mut self) -> Self {
        self.better = Better::Lower;
        self
    }

    /// Marks the metric as a headline, compared with the previous trial.
    pub fn headline(mut self) -> Self {
        self.headline = true;
        self
    }
}

/// A table of text cells; every row has as many cells as there are columns.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// What the table shows.
    pub title: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells, already formatted.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with the given headers.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row. Its width is checked by [`SuiteResult::validate`].
    pub fn push_row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

/// One line of a chart: named (x, y) points.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Legend entry.
    pub name: String,
    /// Points as `[x, y]`, all finite.
    pub points: Vec<[f64; 2]>,
}

/// A time series (or any x/y relation) that the report draws as a chart.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// File-name-safe identifier, unique within the suite: `[a-z0-9-]+`.
    pub id: String,
    /// Chart title.
    pub title: String,
    /// X axis label with its unit.
    pub x_label: String,
    /// Y axis label with its unit.
    pub y_label: String,
    /// The lines drawn.
    pub lines: Vec<Line>,
    /// Draw the y axis on a log scale (for latencies spanning orders of magnitude). Ignored
    /// when any y value is zero or negative.
    #[serde(default)]
    pub log_y: bool,
}

/// Everything one suite reports about one run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteResult {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The suite's registered name, e.g. `timer`.
    pub suite: String,
    /// One line a reader sees in the "At a glance" table.
    pub headline: String,
    /// PASS / FAIL / INCONCLUSIVE with reasons.
    pub verdict: Verdict,
    /// The profile it ran under (`smoke`, `quick`, `full`).
    pub profile: String,
    /// A short description of the scale, e.g. `3 rates x 2 s`.
    pub scale: String,
    /// The seed every workload was generated from.
    pub seed: u64,
    /// The configuration the suite actually used.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Wall time of the run in seconds.
    pub wall_s: f64,
    /// Named numbers.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Tables for the report.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// Series drawn as charts.
    #[serde(default)]
    pub series: Vec<Series>,
    /// Anomalies worth a reader's eye.
    #[serde(default)]
    pub findings: Vec<String>,
}

/// Why a result file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON at all.
    #[error("{path}: not valid JSON: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A field is missing, of the wrong type, or has a value that is not allowed.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field's path, e.g. `verdict.status` or `metrics[2].value`.
        field: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The file was written by another schema version.
    #[error("{path}: field `schema`: version {found} is not supported (expected {expected})")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The version this build reads.
        expected: u32,
    },
}

/// A problem found by [`SuiteResult::validate`]: the field and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The field's path, e.g. `tables[0].rows[3]`.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl SuiteResult {
    /// A fresh result with an INCONCLUSIVE verdict and no data yet.
    pub fn new(
        suite: impl Into<String>,
        profile: impl Into<String>,
        scale: impl Into<String>,
        seed: u64,
    ) -> Self {
        SuiteResult {
            schema: SCHEMA_VERSION,
            suite: suite.into(),
            headline: String::new(),
            verdict: Verdict {
                status: Status::Inconclusive,
                reasons: vec!["the suite set no verdict".to_string()],
            },
            profile: profile.into(),
            scale: scale.into(),
            seed,
            config: BTreeMap::new(),
            wall_s: 0.0,
            metrics: Vec::new(),
            tables: Vec::new(),
            series: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// Looks up a metric by name.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Checks what serde cannot: schema version, non-empty names, finite numbers,
    /// table widths, unique file-safe series ids.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |field: String, message: String| Err(Invalid { field, message });
        if self.schema != SCHEMA_VERSION {
            return bad(
                "schema".into(),
                format!(
                    "{} is not supported (expected {SCHEMA_VERSION})",
                    self.schema
                ),
            );
        }
        if self.suite.trim().is_empty() {
            return bad("suite".into(), "empty (expected the suite's name)".into());
        }
        if !self.wall_s.is_finite() || self.wall_s < 0.0 {
            return bad(
                "wall_s".into(),
                format!("{} (expected a finite number of seconds >= 0)", self.wall_s),
            );
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.name.trim().is_empty() {
                return bad(
                    format!("metrics[{i}].name"),
                    "empty (expected a name)".into(),
                );
            }
            if !m.value.is_finite() {
                return bad(
                    format!("metrics[{i}].value"),
                    format!("{} for `{}` (expected a finite number)", m.value, m.name),
                );
            }
        }
        for (t, table) in self.tables.iter().enumerate() {
            for (r, row) in table.rows.iter().enumerate() {
                if row.len() != table.columns.len() {
                    return bad(
                        format!("tables[{t}].rows[{r}]"),
                        format!(
                            "{} cells (expected {}, one per column of `{}`)",
                            row.len(),
                            table.columns.len(),
                            table.title
                        ),
                    );
                }
            }
        }
        for (s, series) in self.series.iter().enumerate() {
            let id_ok = !series.id.is_empty()
                && series
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return bad(
                    format!("series[{s}].id"),
                    format!(
                        "{:?} (expected lowercase letters, digits and '-')",
                        series.id
                    ),
                );
            }
            if self.series[..s].iter().any(|o| o.id == series.id) {
                return bad(
                    format!("series[{s}].id"),
                    format!("{:?} appears twice (expected unique ids)", series.id),
                );
            }
            for (l, line) in series.lines.iter().enumerate() {
                for (p, [x, y]) in line.points.iter().enumerate() {
                    if !x.is_finite() || !y.is_finite() {
                        return bad(
                            format!("series[{s}].lines[{l}].points[{p}]"),
                            format!("[{x}, {y}] (expected finite numbers)"),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Serializes to pretty JSON after validating.
    pub fn to_json(&self) -> Result<String, Invalid> {
        self.validate()?;
        serde_json::to_string_pretty(self).map_err(|e| Invalid {
            field: "(top level)".into(),
            message: e.to_string(),
        })
    }

    /// Parses and validates JSON text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, ResultError> {
        let value: SuiteResult = parse_versioned(text, origin)?;
        value.validate().map_err(|inv| ResultError::Field {
            path: origin.to_path_buf(),
            field: inv.field,
            message: inv.message,
        })?;
        Ok(value)
    }

    /// Reads and validates a result file.
    pub fn read(path: &Path) -> Result<Self, ResultError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Validates and writes the result to `path` (through a temporary file and a rename,
    /// so a reader never sees half a file).
    pub fn write(&self, path: &Path) -> Result<(), ResultError> {
        let json = self.to_json().map_err(|inv| ResultError::Field {
            path: path.to_path_buf(),
            field: inv.field,
            message: inv.message,
        })?;
        write_atomic(path, json.as_bytes())
    }
}

/// Parses a JSON document that carries a top-level `"schema"` version: the version is
/// checked first (so a newer file gets a version error, not a confusing field error),
/// then the document is deserialized with the path of any bad field in the error.
pub fn parse_versioned<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, ResultError> {
    let path = origin.to_path_buf();
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ResultError::Syntax {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let Some(object) = value.as_object() else {
        return Err(ResultError::Field {
            path,
            field: "(top level)".into(),
            message: "expected a JSON object".into(),
        });
    };
    match object.get("schema") {
        None => {
            return Err(ResultError::Field {
                path,
                field: "schema".into(),
                message: format!("missing (expected {SCHEMA_VERSION})"),
            })
        }
        Some(v) => match v.as_u64() {
            Some(found) if found == u64::from(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(ResultError::Version {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
            None => {
                return Err(ResultError::Field {
                    path,
                    field: "schema".into(),
                    message: format!("{v} (expected the number {SCHEMA_VERSION})"),
                })
            }
        },
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ResultError::Field {
            path,
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Writes `bytes` to `path` through a sibling temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultError> {
    let io = |source| ResultError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SuiteResult {
        let mut r = SuiteResult::new("timer", "quick", "3 rates x 2 s", 7);
        r.headline = "50k/s held at 99.9%".into();
        r.verdict = Verdict::from_checks(vec![], vec![]);
        r.wall_s = 12.5;
        r.config
            .insert("rates".into(), serde_json::json!([1000, 10000]));
        r.metrics.push(
            Metric::new("lateness_p99_us", 80.0, "µs")
                .lower_is_better()
                .headline(),
        );
        let mut t = Table::new("rates", &["rate", "achieved"]);
        t.push_row(["1000", "999.8"]);
        r.tables.push(t);
        r.series.push(Series {
            id: "lateness".into(),
            title: "Lateness".into(),
            x_label: "rate (ops/s)".into(),
            y_label: "p99 (µs)".into(),
            lines: vec![Line {
                name: "hybrid".into(),
                points: vec![[1000.0, 5.0], [10000.0, 9.0]],
            }],
            log_y: false,
        });
        r.findings.push("none".into());
        r
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timer.json");
        let r = sample();
        r.write(&path).unwrap();
        assert_eq!(SuiteResult::read(&path).unwrap(), r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"schema\": 1"), "{text}");
        assert!(text.contains("\"status\": \"PASS\""), "{text}");
    }

    fn err_of(text: &str) -> String {
        SuiteResult::from_json(text, Path::new("x/timer.json"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn not_json_names_the_file() {
        let e = err_of("{ nope");
        assert!(e.starts_with("x/timer.json: not valid JSON"), "{e}");
    }

    #[test]
    fn wrong_version_names_schema() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema"] = 2.into();
        let e = err_of(&v.to_string());
        assert_eq!(
            e,
            "x/timer.json: field `schema`: version 2 is not supported (expected 1)"
        );
        v.as_object_mut().unwrap().remove("schema");
        assert!(err_of(&v.to_string()).contains("field `schema`: missing"));
        v["schema"] = "1".into();
        assert!(err_of(&v.to_string()).contains("field `schema`: \"1\""));
    }

    #[test]
    fn bad_field_is_named_with_its_path() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["verdict"]["status"] = "GREAT".into();
        let e = err_of(&v.to_string());
        assert!(e.contains("field `verdict.status`"), "{e}");
        assert!(e.contains("unknown variant `GREAT`"), "{e}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["metrics"][0]["value"] = "fast".into();
        let e = err_of(&v.to_string());
        assert!(e.contains("field `metrics[0].value`"), "{e}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("headline");
        let e = err_of(&v.to_string());
        assert!(e.contains("missing field `headline`"), "{e}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = 1.into();
        let e = err_of(&v.to_string());
        assert!(e.contains("unknown field `surprise`"), "{e}");
    }

    #[test]
    fn validation_catches_what_serde_cannot() {
        let mut r = sample();
        r.tables[0].push_row(["only one"]);
        let e = r.validate().unwrap_err();
        assert_eq!(e.field, "tables[0].rows[1]");

        let mut r = sample();
        r.metrics[0].value = f64::NAN;
        assert_eq!(r.validate().unwrap_err().field, "metrics[0].value");
        let dir = tempfile::tempdir().unwrap();
        let err = r.write(&dir.path().join("a.json")).unwrap_err().to_string();
        assert!(err.contains("metrics[0].value"), "{err}");

        let mut r = sample();
        r.series[0].id = "Bad Id".into();
        assert_eq!(r.validate().unwrap_err().field, "series[0].id");

        let mut r = sample();
        r.series.push(r.series[0].clone());
        assert_eq!(r.validate().unwrap_err().field, "series[1].id");
    }

    #[test]
    fn missing_file_names_the_file() {
        let e = SuiteResult::read(Path::new("/nonexistent/herdlab.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/herdlab.json: "), "{e}");
    }

    #[test]
    fn verdict_from_checks_orders_fail_before_doubt() {
        let v = Verdict::from_checks(vec!["lost=1".into()], vec!["short".into()]);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.reasons, vec!["lost=1", "short"]);
        let v = Verdict::from_checks(vec![], vec!["short".into()]);
        assert_eq!(v.status, Status::Inconclusive);
        assert_eq!(Verdict::from_checks(vec![], vec![]).status, Status::Pass);
    }
}
