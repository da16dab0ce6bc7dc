//! Plan files: a load test of someone's own service as a TOML file, run by
//! `stress plan FILE.toml` (and by `cargo xtask stress --plan FILE.toml` into a trial).
//!
//! A plan names its targets (any spec `stress maxrps --target` takes, with the same
//! settings as keys), a weighted mix of scenarios whose steps are requests to those
//! targets ([`crate::plan_mix`]), a shape (`find`: the max-RPS finder; `phases`; `soak`;
//! `burst`; `closed`), SLOs overall and per action, processes to sample for RSS, threads
//! and file descriptors, and optionally an interval log. Its result is a `SuiteResult`
//! named after the plan, so trials compare plan runs as they compare suites.
//!
//! Every key is checked: an unknown key is refused with its path (`targets.api.methd`),
//! a bad value with its path and what was expected. Relative paths (`body_file`, `hlog`,
//! `pidfile`) are relative to the plan file's directory. See `examples/plans/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The largest plan file read, bytes.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;

/// A whole plan file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The result's suite name, `[a-z0-9-]+`.
    pub name: String,
    /// One line for the report.
    #[serde(default)]
    pub description: String,
    /// Seeds `{rand}` and the scenario choice (`stress plan --seed` overrides it).
    #[serde(default = "one")]
    pub seed: u64,
    /// Write an HdrHistogram interval log here.
    #[serde(default)]
    pub hlog: Option<PathBuf>,
    /// The services, by name.
    pub targets: BTreeMap<String, TargetDef>,
    /// The weighted mix; may be left out when there is exactly one target.
    #[serde(default)]
    pub scenarios: Vec<ScenarioDef>,
    /// How load is applied.
    pub shape: ShapeDef,
    /// What a step must hold to pass.
    #[serde(default)]
    pub slo: SloDef,
    /// Timeouts and bounds of the generator.
    #[serde(default)]
    pub generator: GeneratorDef,
    /// Processes sampled for RSS, threads and file descriptors while the plan runs.
    #[serde(default)]
    pub processes: Vec<ProcessDef>,
    /// Run the finder over `stress worker` processes joined at this NATS URL (`find` shape,
    /// one target, no scenarios); `"env"` takes the URL from `NATS_URL`.
    #[serde(default)]
    pub distributed: Option<String>,
    /// How many workers a distributed plan needs.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The group workers join.
    #[serde(default)]
    pub group: Option<String>,
    /// Longest to wait for the workers, e.g. `"60s"`.
    #[serde(default)]
    pub join_wait: Option<String>,
}

fn one() -> u64 {
    1
}

/// One target: a spec and the settings `stress maxrps` takes as flags.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetDef {
    /// `http://…`, `nats://…`, `jetstream://…`, `unix:…`, `exec:…`, `sim:…`, …
    pub spec: String,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP or NATS headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template, inline.
    pub body: Option<String>,
    /// Body template, from a file.
    pub body_file: Option<PathBuf>,
    /// Pool size, or processes at once for `exec:`.
    pub conns: Option<usize>,
    /// `u32be` or `line` (`unix:`).
    pub framing: Option<String>,
    /// Preamble frame (`unix:`).
    pub hello: Option<String>,
    /// Text the preamble's reply must hold (`unix:`).
    pub hello_reply: Option<String>,
    /// Durable consumer (`jetstream://`).
    pub consumer: Option<String>,
}

/// One scenario of the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDef {
    /// The recorded action: non-empty, without `/`.
    pub name: String,
    /// Relative weight, at least 1.
    #[serde(default = "weight_one")]
    pub weight: u32,
    /// Requests in order.
    pub steps: Vec<StepDef>,
}

fn weight_one() -> u32 {
    1
}

/// One request of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Name, unique in the scenario (default: the target's name).
    pub name: Option<String>,
    /// A key of `[targets]`.
    pub target: String,
    /// One of the target's actions (default: the target's own choice).
    pub action: Option<String>,
}

/// A rate: `2000` or `"2k"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RateDef {
    /// Operations per second.
    Number(u64),
    /// With a k suffix.
    Text(String),
}

impl RateDef {
    /// Operations per second.
    pub fn per_s(&self) -> Result<u64> {
        Ok(match self {
            RateDef::Number(n) => collector::shape::parse_rate(&n.to_string())?,
            RateDef::Text(t) => collector::shape::parse_rate(t)?,
        })
    }
}

/// One phase of `phases`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    /// Operations per second.
    pub rate: RateDef,
    /// How long, e.g. `"30s"`.
    #[serde(rename = "for")]
    pub duration: String,
}

/// How load is applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ShapeDef {
    /// The max-RPS finder: step up through `steps`, bisect, confirm.
    Find {
        /// Increasing rates, `"1k,2k,4k"`.
        steps: String,
        /// Unmeasured load before each hold.
        #[serde(default = "d1s")]
        warmup: String,
        /// Measured part of each step.
        #[serde(default = "d3s")]
        hold: String,
        /// Pause after each step.
        #[serde(default = "d0s")]
        cooldown: String,
        /// Stop refining within this many percent.
        #[serde(default = "five")]
        precision: f64,
        /// At most this many refinement steps.
        #[serde(default = "eight")]
        max_refine: usize,
    },
    /// Back-to-back open-loop phases, each measured and judged on its own.
    Phases {
        /// In order.
        phases: Vec<PhaseDef>,
    },
    /// One long open-loop phase; the sampled processes are checked for leaks.
    Soak {
        /// Operations per second.
        rate: RateDef,
        /// How long.
        #[serde(rename = "for")]
        duration: String,
        /// RSS growth per hour above which a process counts as leaking, MB.
        #[serde(default = "leak_mb")]
        leak_mb_per_hour: f64,
    },
    /// `ops` operations released at once (a thundering herd).
    Burst {
        /// How many.
        ops: u64,
    },
    /// `workers` closed-loop workers, each waiting for its operation, then thinking.
    Closed {
        /// Workers.
        workers: u64,
        /// Pause after each operation.
        #[serde(default = "d0s")]
        think: String,
        /// How long.
        #[serde(rename = "for")]
        duration: String,
    },
}

fn d0s() -> String {
    "0s".into()
}
fn d1s() -> String {
    "1s".into()
}
fn d3s() -> String {
    "3s".into()
}
fn five() -> f64 {
    5.0
}
fn eight() -> usize {
    8
}
fn leak_mb() -> f64 {
    64.0
}

/// SLOs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloDef {
    /// Overall p95, ms.
    pub p95_ms: Option<f64>,
    /// Overall p99, ms.
    pub p99_ms: Option<f64>,
    /// Largest share of failed operations.
    #[serde(default = "error_rate")]
    pub max_error_rate: f64,
    /// Largest backlog growth over a hold.
    pub max_backlog_growth: Option<u64>,
    /// Share of the rate the generator may miss before a step is INCONCLUSIVE.
    #[serde(default = "shortfall")]
    pub shortfall_tolerance: f64,
    /// Per action (a scenario's name, or a mark such as `publish/ack`).
    #[serde(default)]
    pub actions: BTreeMap<String, ActionSloDef>,
}

impl Default for SloDef {
    fn default() -> Self {
        SloDef {
            p95_ms: None,
            p99_ms: None,
            max_error_rate: error_rate(),
            max_backlog_growth: None,
            shortfall_tolerance: shortfall(),
            actions: BTreeMap::new(),
        }
    }
}

fn error_rate() -> f64 {
    0.01
}
fn shortfall() -> f64 {
    0.05
}

/// Per-action limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSloDef {
    /// p95, ms.
    pub p95_ms: Option<f64>,
    /// p99, ms.
    pub p99_ms: Option<f64>,
}

/// Generator bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorDef {
    /// Per-operation timeout.
    #[serde(default = "d5s")]
    pub timeout: String,
    /// Most operations in flight.
    #[serde(default = "in_flight")]
    pub max_in_flight: u32,
    /// `hybrid` (default) or `timer`, as `stress maxrps --pacing`.
    #[serde(default)]
    pub pacing: Option<String>,
}

impl Default for GeneratorDef {
    fn default() -> Self {
        GeneratorDef {
            timeout: d5s(),
            max_in_flight: in_flight(),
            pacing: None,
        }
    }
}

fn d5s() -> String {
    "5s".into()
}
fn in_flight() -> u32 {
    10_000
}

/// A process to sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessDef {
    /// Name in the report.
    pub name: String,
    /// Its pid.
    pub pid: Option<u32>,
    /// A file holding its pid (read when the plan starts).
    pub pidfile: Option<PathBuf>,
}

/// Parses a plan; unknown keys and bad values are refused with their path. `origin` names
/// the file in messages.
pub fn parse(text: &str, origin: &Path) -> Result<PlanFile> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!("invalid plan {}: {e}", origin.display()))?;
    let plan: PlanFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_string();
        anyhow::anyhow!("invalid plan {}: at `{path}`: {message}", origin.display())
    })?;
    check(&plan).with_context(|| format!("invalid plan {}", origin.display()))?;
    Ok(plan)
}

/// Reads and parses the plan at `path` (at most [`MAX_PLAN_BYTES`]).
pub fn read(path: &Path) -> Result<PlanFile> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading plan {}", path.display()))?
        .len();
    if len > MAX_PLAN_BYTES {
        bail!(
            "invalid plan {}: {len} bytes, expected at most {MAX_PLAN_BYTES}",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan {} (expected UTF-8 TOML)", path.display()))?;
    parse(&text, path)
}

/// Checks what serde cannot: names, references between sections, value ranges.
fn check(plan: &PlanFile) -> Result<()> {
    let file_safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !file_safe(&plan.name) {
        bail!(
            "at `name`: {:?} is not a suite name: expected lowercase letters, digits and -",
            plan.name
        );
    }
    if plan.targets.is_empty() {
        bail!("at `targets`: expected at least one target, like [targets.api] spec = \"http://127.0.0.1:8080/\"");
    }
    if plan.scenarios.is_empty() && plan.targets.len() > 1 {
        bail!(
            "at `scenarios`: {} targets need [[scenarios]] saying how to mix them",
            plan.targets.len()
        );
    }
    let mut seen = Vec::new();
    for (i, s) in plan.scenarios.iter().enumerate() {
        if s.name.is_empty() || s.name.contains('/') || seen.contains(&&s.name) {
            bail!("at `scenarios[{i}].name`: {:?}: expected a non-empty name without `/`, unique in the plan", s.name);
        }
        seen.push(&s.name);
        if s.weight == 0 {
            bail!("at `scenarios[{i}].weight`: 0: expected at least 1");
        }
        if s.steps.is_empty() {
            bail!("at `scenarios[{i}].steps`: expected at least one step");
        }
        let mut names = Vec::new();
        for (j, step) in s.steps.iter().enumerate() {
            if !plan.targets.contains_key(&step.target) {
                bail!(
                    "at `scenarios[{i}].steps[{j}].target`: no target {:?}: expected one of {}",
                    step.target,
                    plan.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            let name = step.name.clone().unwrap_or_else(|| step.target.clone());
            if name.is_empty() || name.contains('/') || names.contains(&name) {
                bail!("at `scenarios[{i}].steps[{j}]`: step name {name:?} is empty, holds `/` or repeats: give each step a unique `name`");
            }
            names.push(name);
        }
    }
    for (i, p) in plan.processes.iter().enumerate() {
        if p.pid.is_some() == p.pidfile.is_some() {
            bail!("at `processes[{i}]`: expected exactly one of `pid` and `pidfile`");
        }
    }
    check_distributed(plan)
}

/// A distributed plan runs the finder on one target; the keys need `distributed`.
fn check_distributed(plan: &PlanFile) -> Result<()> {
    if plan.distributed.is_none() {
        for (key, given) in [
            ("workers", plan.workers.is_some()),
            ("group", plan.group.is_some()),
            ("join_wait", plan.join_wait.is_some()),
        ] {
            if given {
                bail!("at `{key}`: only a distributed plan takes it: add `distributed = \"nats://HOST:PORT\"`");
            }
        }
        return Ok(());
    }
    if !matches!(plan.shape, ShapeDef::Find { .. }) {
        bail!("at `distributed`: a distributed plan runs the finder: expected `shape.kind = \"find\"`");
    }
    if !plan.scenarios.is_empty() || plan.targets.len() != 1 {
        bail!("at `distributed`: a distributed plan loads one target without [[scenarios]] (a mix runs inside one process)");
    }
    if plan.workers.is_none() {
        bail!("at `workers`: a distributed plan needs the number of workers, like `workers = 3`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
name = "my-api"
seed = 3
[targets.api]
spec = "http://127.0.0.1:8080/items"
method = "POST"
headers = { "content-type" = "application/json" }
body = '{"id": {seq}}'
conns = 16
[[scenarios]]
name = "create"
weight = 3
steps = [{ target = "api" }]
[shape]
kind = "find"
steps = "1k,2k,4k"
hold = "2s"
[slo]
p99_ms = 50
[slo.actions.create]
p99_ms = 80
[[processes]]
name = "api"
pid = 1
"#;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text, Path::new("t.toml")).unwrap_err())
    }

    #[test]
    fn a_valid_plan_parses() {
        let p = parse(VALID, Path::new("t.toml")).unwrap();
        assert_eq!(p.name, "my-api");
        assert_eq!(p.seed, 3);
        assert_eq!(p.targets["api"].conns, Some(16));
        assert_eq!(p.scenarios[0].weight, 3);
        assert!(
            matches!(&p.shape, ShapeDef::Find { hold, warmup, .. } if hold == "2s" && warmup == "1s")
        );
        assert_eq!(p.slo.actions["create"].p99_ms, Some(80.0));
        assert_eq!(p.generator.timeout, "5s");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let e = err(&VALID.replace("method = \"POST\"", "methd = \"POST\""));
        assert!(e.contains("targets.api"), "{e}");
        assert!(e.contains("methd"), "{e}");
        let e = err(&VALID.replace("hold = \"2s\"", "hodl = \"2s\""));
        assert!(e.contains("shape") && e.contains("hodl"), "{e}");
        let e = err(&format!("{VALID}\n[extra]\nx = 1\n"));
        assert!(e.contains("extra"), "{e}");
        let e = err(&VALID.replace("p99_ms = 80", "p99 = 80"));
        assert!(e.contains("slo.actions.create") && e.contains("p99"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_path() {
        let e = err(&VALID.replace("conns = 16", "conns = \"many\""));
        assert!(e.contains("targets.api.conns"), "{e}");
        let e = err(&VALID.replace("kind = \"find\"", "kind = \"ramp\""));
        assert!(e.contains("ramp"), "{e}");
        let e = err(&VALID.replace("target = \"api\"", "target = \"apx\""));
        assert!(
            e.contains("scenarios[0].steps[0].target") && e.contains("apx"),
            "{e}"
        );
        let e = err(&VALID.replace("name = \"my-api\"", "name = \"My API\""));
        assert!(e.contains("My API"), "{e}");
        let e = err(&VALID.replace("weight = 3", "weight = 0"));
        assert!(e.contains("scenarios[0].weight"), "{e}");
        let e = err(&VALID.replace("pid = 1", "pid = 1\npidfile = \"x\""));
        assert!(e.contains("processes[0]"), "{e}");
        let e = err("name = \"x\"\n[targets.api]\nspec = \"noop\"\n");
        assert!(e.contains("shape"), "{e}");
        let e = err("not toml ===");
        assert!(e.contains("t.toml"), "{e}");
    }

    #[test]
    fn several_targets_need_a_mix() {
        let text = r#"
name = "two"
[targets.a]
spec = "noop"
[targets.b]
spec = "noop"
[shape]
kind = "burst"
ops = 10
"#;
        assert!(err(text).contains("scenarios"));
    }

    #[test]
    fn distributed_keys_are_checked() {
        let find = "[targets.a]\nspec = \"sim:servers=4,service_us=1000\"\n[shape]\nkind = \"find\"\nsteps = \"1k,2k\"\n";
        let e = err(&format!("name = \"d\"\nworkers = 2\n{find}"));
        assert!(
            e.contains("at `workers`") && e.contains("distributed"),
            "{e}"
        );
        let e = err(&format!(
            "name = \"d\"\ndistributed = \"nats://127.0.0.1:4222\"\n{find}"
        ));
        assert!(e.contains("at `workers`"), "{e}");
        let burst = "[targets.a]\nspec = \"noop\"\n[shape]\nkind = \"burst\"\nops = 10\n";
        let e = err(&format!(
            "name = \"d\"\ndistributed = \"nats://127.0.0.1:4222\"\nworkers = 2\n{burst}"
        ));
        assert!(e.contains("runs the finder"), "{e}");
        let ok = parse(
            &format!("name = \"d\"\ndistributed = \"nats://127.0.0.1:4222\"\nworkers = 2\n{find}"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(ok.workers, Some(2));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// Every plan under examples/plans/ parses, so the examples cannot rot.
    #[test]
    fn every_example_plan_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plans");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let plan = read(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                crate::plan_run::entry(&plan).unwrap();
                n += 1;
            }
        }
        assert!(n >= 6, "expected a plan per target kind, found {n}");
    }
}
