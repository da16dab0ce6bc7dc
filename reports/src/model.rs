//! The trial model: every suite's result plus the provenance a reviewer needs to trust
//! them, as stored in `docs/trials/<dir>/results.json`.

use std::path::Path;

use collector::result::{parse_versioned, write_atomic, ResultError, SCHEMA_VERSION};
use collector::{Status, SuiteResult};
use serde::{Deserialize, Serialize};

/// Where and how a trial ran.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `git rev-parse HEAD`, or `unknown` outside a checkout.
    pub commit: String,
    /// Whether the work tree had uncommitted changes.
    pub dirty: bool,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical cores available to the process.
    pub cores: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The exact command that produced the trial.
    pub command: String,
    /// When the trial started, UTC, RFC 3339.
    pub started_utc: String,
    /// Wall time of the whole trial, seconds.
    pub wall_s: f64,
}

/// One trial: its date, profile, seed, provenance and every suite's result.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// The trial's date, `YYYY-MM-DD`.
    pub date: String,
    /// The directory name under `docs/trials/` (the date, with `-2`, `-3`… for later runs that day).
    pub label: String,
    /// The profile every suite ran under.
    pub profile: String,
    /// The base seed.
    pub seed: u64,
    /// Where and how it ran.
    pub provenance: Provenance,
    /// The suites' results, in the order they ran.
    pub suites: Vec<SuiteResult>,
}

impl Trial {
    /// How many suites ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.suites
            .iter()
            .filter(|s| s.verdict.status == status)
            .count()
    }

    /// Whether any suite FAILED.
    pub fn any_failed(&self) -> bool {
        self.count(Status::Fail) > 0
    }

    /// Validates every suite's result; errors name `path` and the field under `suites[i]`.
    fn validate(&self, path: &Path) -> Result<(), ResultError> {
        for (i, suite) in self.suites.iter().enumerate() {
            suite.validate().map_err(|inv| ResultError::Field {
                path: path.to_path_buf(),
                field: format!("suites[{i}].{}", inv.field),
                message: inv.message,
            })?;
        }
        Ok(())
    }

    /// Reads and validates `results.json`; errors name the file and the field.
    pub fn read(path: &Path) -> Result<Self, ResultError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let trial: Trial = parse_versioned(&text, path)?;
        trial.validate(path)?;
        Ok(trial)
    }

    /// Writes `results.json` (validated, through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> Result<(), ResultError> {
        self.validate(path)?;
        let json = serde_json::to_string_pretty(self).map_err(|e| ResultError::Field {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            message: e.to_string(),
        })?;
        write_atomic(path, json.as_bytes())
    }

    /// A trial with no suites yet.
    pub fn new(
        date: impl Into<String>,
        label: impl Into<String>,
        profile: impl Into<String>,
        seed: u64,
        provenance: Provenance,
    ) -> Self {
        Trial {
            schema: SCHEMA_VERSION,
            date: date.into(),
            label: label.into(),
            profile: profile.into(),
            seed,
            provenance,
            suites: Vec::new(),
        }
    }
}
