//! Weighted scenario mixes: closed-loop workers that each pick a scenario by weight, run its
//! steps against the system under test, and record both every step and the whole scenario.
//!
//! A [`Scenario`] is a named, weighted sequence of named steps (`search`, `email`,
//! `validate`...). Its [`Scenario::run`] calls [`ScenarioCtx::step`] for each step that
//! touches a target; the step is timed, bounded by the step timeout and recorded as its own
//! recorder action `"<scenario>/<step>"`. Checks done inside the scenario (a validator, a
//! "no overlap" check) fail the run with [`ScenarioFailure::validation`]. A [`Mix`] is a
//! checked set of scenarios; [`run_mix`] drives it and returns a [`MixReport`]: per scenario
//! runs, fail %, p50/p95/p99/max of the whole scenario and failures by reason, the per-step
//! [`StepData`], and scenarios per second.
//!
//! # Determinism
//!
//! Runs are numbered `0, 1, 2...` (`seq`) across all workers. Run `seq` picks its scenario
//! with an RNG seeded from `(seed, seq)` ([`Mix::pick`]) and hands the scenario a second RNG
//! seeded from `(seed, seq)` ([`ScenarioCtx::rng`]). Which worker runs which `seq`, and when,
//! depends on timing; what run `seq` does does not: the same seed replays the same choice
//! sequence and the same per-run random inputs.
//!
//! # Time bounds
//!
//! No run starts after `start + duration`, nor once `max_runs` runs have started (so a mix
//! with `max_runs` that ends before its deadline ran exactly `max_runs` scenarios). Every
//! step is bounded by `step_timeout` (past it: error kind `timeout`). Every run is bounded
//! by `run_timeout` too, so a scenario that awaits something outside a step (a watch, a
//! channel) cannot hang the mix: past it the run is cancelled and fails as
//! `"(run): timeout"`. A run that panics fails as `"(run): panic"` and its worker goes on.
//! Hence `run_mix` returns at most about `duration + run_timeout` after it started.
//!
//! # Recording, and why this way
//!
//! Steps go into a [`Recorder`] whose actions are every scenario's steps (registered up front,
//! in mix order); its [`StepData`] is returned as is. Whole-scenario latency goes into a
//! second [`Recorder`] whose actions are the scenario names (a failed run is recorded with
//! error kind `failed`). A second recorder rather than per-worker histograms because memory
//! then grows with the recorder's shards (at most 16), not with the concurrency: per-worker
//! histograms for 10 000 workers and 6 scenarios would start at 16 KiB each, about 1 GiB.
//! Workers record into their own shard (`worker % shards`), so the locks are uncontended.
//! Each run executes as its own tokio task, which is what lets a panic or a run timeout be
//! caught and counted without losing the worker.
//!
//! Failure reasons (`"<step>: <reason>"`, the reason of a failed step being its error kind)
//! are counted per scenario under a mutex taken once per failed run, at most
//! [`MAX_FAILURE_REASONS`] distinct keys of at most [`MAX_REASON_BYTES`] bytes each; further
//! keys count under [`OTHER_REASON`]. Memory is therefore bounded whatever the scenarios
//! report.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::recorder::{ActionId, Epoch, Recorder, RecorderError, Sample, StepData, MAX_ACTIONS};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};
use crate::target::{BoxFuture, OpError};
use crate::Table;

/// Distinct failure reasons kept per scenario; further reasons count as [`OTHER_REASON`].
pub const MAX_FAILURE_REASONS: usize = 32;
/// Longest failure reason key kept, in bytes; a longer key is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 128;
/// The key that counts the failure reasons beyond [`MAX_FAILURE_REASONS`].
pub const OTHER_REASON: &str = "other";
/// The step name of failures of a run as a whole: `"(run): timeout"`, `"(run): panic"`.
pub const RUN_STEP: &str = "(run)";
/// The most concurrent workers a mix may have.
pub const MAX_CONCURRENCY: u64 = 100_000;
/// The longest a mix may run.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The error kind recorded for a failed run in the whole-scenario recorder.
const FAILED_KIND: &str = "failed";
/// Shards of the step and scenario recorders, at most.
const MAX_SHARDS: u64 = 16;
/// How long to wait for a cancelled run's task to be dropped.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// One kind of user journey: a named, weighted sequence of named steps.
///
/// Object-safe: a mix holds `Arc<dyn Scenario>`. `name`, `weight` and `steps` are read once,
/// by [`Mix::new`].
pub trait Scenario: Send + Sync + 'static {
    /// The scenario's name: non-empty, without `/`, unique in its mix.
    fn name(&self) -> &str;

    /// Its relative weight in the mix (> 0): a scenario of weight 35 in a mix of total
    /// weight 100 runs 35% of the time.
    fn weight(&self) -> u32;

    /// The names of its steps (at least one; each non-empty, without `/`, not `"(run)"`,
    /// unique within the scenario), recorded as actions `"<scenario>/<step>"`.
    fn steps(&self) -> Vec<String>;

    /// Runs the scenario once: each step through [`ScenarioCtx::step`], validations as
    /// [`ScenarioFailure::validation`]. Random inputs should come from [`ScenarioCtx::rng`]
    /// so that a seed replays them.
    fn run<'a>(&'a self, ctx: &'a mut ScenarioCtx) -> BoxFuture<'a, Result<(), ScenarioFailure>>;
}

/// Why a scenario run failed: at which step, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step:?} failed: {reason}")]
pub struct ScenarioFailure {
    /// The step that failed (a step name, a validation name, or [`RUN_STEP`]).
    pub step: String,
    /// Why: the error kind of a failed step (`timeout`, `overload`...), or a validation's
    /// reason. Failures are counted by `"<step>: <reason>"`, so keep reasons to a small,
    /// stable set (no ids or timings in them).
    pub reason: String,
}

impl ScenarioFailure {
    /// A check inside the scenario failed: `validation("no_overlap", "swap returned an
    /// excluded id")`.
    pub fn validation(step: impl Into<String>, reason: impl Into<String>) -> Self {
        ScenarioFailure {
            step: step.into(),
            reason: reason.into(),
        }
    }

    /// The key the failure is counted under: `"<step>: <reason>"`, cut to
    /// [`MAX_REASON_BYTES`].
    pub fn key(&self) -> String {
        let mut key = format!("{}: {}", self.step, self.reason);
        if key.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            key.truncate(end);
        }
        key
    }
}

/// A scenario of a mix, with what was read from it once.
struct Entry {
    scenario: Arc<dyn Scenario>,
    name: String,
    weight: u32,
    steps: Vec<String>,
    /// The step recorder's `ActionId` of `steps[0]`; step `j` is `first_action + j`.
    first_action: usize,
}

struct MixInner {
    entries: Vec<Arc<Entry>>,
    /// `cumulative[i]` = sum of the weights of entries `0..=i`.
    cumulative: Vec<u64>,
    total_weight: u64,
}

/// A checked set of weighted scenarios. Cheap to clone.
#[derive(Clone)]
pub struct Mix {
    inner: Arc<MixInner>,
}

impl std::fmt::Debug for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_map();
        for e in &self.inner.entries {
            d.entry(&e.name, &(e.weight, &e.steps));
        }
        d.finish()
    }
}

/// Why a mix could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixError {
    /// The mix has no scenarios.
    #[error("no scenarios: expected at least one")]
    NoScenarios,
    /// A scenario has weight 0.
    #[error("scenario {scenario:?} has weight 0: expected a weight of at least 1")]
    ZeroWeight {
        /// The scenario.
        scenario: String,
    },
    /// Two scenarios have the same name.
    #[error("duplicate scenario name {name:?}: expected each name once")]
    DuplicateScenario {
        /// The repeated name.
        name: String,
    },
    /// A scenario names a step twice.
    #[error("scenario {scenario:?} names step {step:?} twice: expected each step once")]
    DuplicateStep {
        /// The scenario.
        scenario: String,
        /// The repeated step.
        step: String,
    },
    /// A scenario has no steps.
    #[error("scenario {scenario:?} has no steps: expected at least one step name")]
    NoSteps {
        /// The scenario.
        scenario: String,
    },
    /// A scenario or step name is empty, contains `/`, or is reserved.
    #[error("invalid {what} name {name:?}: expected {expected}")]
    InvalidName {
        /// `scenario` or `step of scenario "x"`.
        what: String,
        /// The name.
        name: String,
        /// What a name must be.
        expected: String,
    },
    /// More steps in all than a recorder holds.
    #[error("{count} steps in all: expected at most {max}")]
    TooManySteps {
        /// Steps of all scenarios together.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A [`MixConfig`] field is out of range.
    #[error("invalid {field} {value}: expected {expected}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A recorder could not be built.
    #[error(transparent)]
    Recorder(#[from] RecorderError),
}

fn check_name(what: impl Into<String>, name: &str) -> Result<(), MixError> {
    let bad = |expected: &str| {
        Err(MixError::InvalidName {
            what: what.into(),
            name: name.to_string(),
            expected: expected.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a non-empty name");
    }
    if name.contains('/') {
        return bad("a name without '/' (it separates scenario and step in action names)");
    }
    Ok(())
}

/// SplitMix64's finalizer: a bijection on `u64` that mixes every bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_4d1c_e4e5_b9b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of stream `stream` of run `seq` under `seed`. Distinct `seq` give distinct seeds.
fn run_seed(seed: u64, seq: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(seed ^ stream) ^ seq)
}

const PICK_STREAM: u64 = 0x7069_636b; // "pick"
const CTX_STREAM: u64 = 0x0063_7478; // "ctx"

impl Mix {
    /// Checks and builds a mix. Fails on no scenarios, a zero weight, a repeated scenario
    /// name, a scenario without steps or naming a step twice, an empty name or one with `/`
    /// (or a step named `"(run)"`), and more than [`MAX_ACTIONS`] steps in all.
    pub fn new(scenarios: Vec<Arc<dyn Scenario>>) -> Result<Mix, MixError> {
        if scenarios.is_empty() {
            return Err(MixError::NoScenarios);
        }
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(scenarios.len());
        let mut cumulative = Vec::with_capacity(scenarios.len());
        let mut total_weight = 0u64;
        let mut actions = 0usize;
        for scenario in scenarios {
            let name = scenario.name().to_string();
            check_name("scenario", &name)?;
            if entries.iter().any(|e| e.name == name) {
                return Err(MixError::DuplicateScenario { name });
            }
            let weight = scenario.weight();
            if weight == 0 {
                return Err(MixError::ZeroWeight { scenario: name });
            }
            let steps = scenario.steps();
            if steps.is_empty() {
                return Err(MixError::NoSteps { scenario: name });
            }
            for (j, step) in steps.iter().enumerate() {
                let what = format!("step of scenario {name:?}");
                check_name(what.clone(), step)?;
                if step == RUN_STEP {
                    return Err(MixError::InvalidName {
                        what,
                        name: step.clone(),
                        expected: format!("a name other than {RUN_STEP:?} (reserved)"),
                    });
                }
                if steps[..j].contains(step) {
                    return Err(MixError::DuplicateStep {
                        scenario: name,
                        step: step.clone(),
                    });
                }
            }
            let first_action = actions;
            actions = actions.saturating_add(steps.len());
            if actions > MAX_ACTIONS {
                return Err(MixError::TooManySteps {
                    count: actions,
                    max: MAX_ACTIONS,
                });
            }
            // At most MAX_ACTIONS weights of at most u32::MAX: no overflow.
            total_weight += u64::from(weight);
            cumulative.push(total_weight);
            entries.push(Arc::new(Entry {
                scenario,
                name,
                weight,
                steps,
                first_action,
            }));
        }
        Ok(Mix {
            inner: Arc::new(MixInner {
                entries,
                cumulative,
                total_weight,
            }),
        })
    }

    /// The scenario names, in mix order.
    pub fn names(&self) -> Vec<&str> {
        self.inner.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u64 {
        self.inner.total_weight
    }

    /// The step recorder's action names, `"<scenario>/<step>"`, in mix order.
    pub fn step_actions(&self) -> Vec<String> {
        self.inner
            .entries
            .iter()
            .flat_map(|e| e.steps.iter().map(move |s| format!("{}/{}", e.name, s)))
            .collect()
    }

    /// Which scenario (index into [`Mix::names`]) run `seq` runs under `seed`: a weighted
    /// choice from an RNG seeded from `(seed, seq)`, so the same seed gives the same sequence.
    pub fn pick(&self, seed: u64, seq: u64) -> usize {
        let total = self.inner.total_weight.max(1);
        let r = fastrand::Rng::with_seed(run_seed(seed, seq, PICK_STREAM)).u64(0..total);
        // First entry whose cumulative weight exceeds r; r < total, so one exists.
        let i = self.inner.cumulative.partition_point(|&c| c <= r);
        i.min(self.inner.entries.len().saturating_sub(1))
    }
}

/// What a scenario run can use: its sequence number, a seeded RNG, and timed steps.
pub struct ScenarioCtx {
    seq: u64,
    worker: u64,
    rng: fastrand::Rng,
    entry: Arc<Entry>,
    recorder: Arc<Recorder>,
    epoch: Epoch,
    step_timeout: Duration,
}

impl std::fmt::Debug for ScenarioCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScenarioCtx")
            .field("scenario", &self.entry.name)
            .field("seq", &self.seq)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ScenarioCtx {
    /// The run's sequence number, unique in the mix (0, 1, 2... in start order).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The index of the worker running it (`0..concurrency`).
    pub fn worker(&self) -> u64 {
        self.worker
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &str {
        &self.entry.name
    }

    /// An RNG seeded from the mix seed and [`ScenarioCtx::seq`]: the same seed replays the
    /// same values in run `seq`.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// Runs step `name`: awaits `f`, bounded by the step timeout (past it `f` is dropped
    /// and the step fails with kind `timeout`), and records it as action
    /// `"<scenario>/<name>"` with its latency and error kind. A failed step is returned as
    /// a [`ScenarioFailure`] whose reason is the error kind. A `name` that is not one of
    /// the scenario's [`Scenario::steps`] fails without running `f` and without recording.
    pub async fn step<T, F>(&mut self, name: &str, f: F) -> Result<T, ScenarioFailure>
    where
        F: Future<Output = Result<T, OpError>>,
    {
        let Some(j) = self.entry.steps.iter().position(|s| s == name) else {
            return Err(ScenarioFailure::validation(
                name,
                format!(
                    "unknown step: expected one of the scenario's steps {:?}",
                    self.entry.steps
                ),
            ));
        };
        let action = ActionId(self.entry.first_action + j);
        let began = Instant::now();
        let result = match tokio::time::timeout(self.step_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(OpError::timeout()),
        };
        let us = micros(began.elapsed());
        self.recorder.record(
            shard_hint(self.worker),
            self.epoch,
            &Sample {
                action,
                latency_us: us,
                service_us: us,
                error: result.as_ref().err().map(|e| e.kind.as_ref()),
            },
        );
        result.map_err(|e| ScenarioFailure::validation(name, e.kind.into_owned()))
    }
}

fn shard_hint(worker: u64) -> usize {
    // Only the value modulo the shard count (at most 16) matters.
    (worker % MAX_SHARDS) as usize
}

/// How to drive a mix.
#[derive(Debug, Clone, Copy)]
pub struct MixConfig {
    /// Closed-loop workers (1..=[`MAX_CONCURRENCY`]).
    pub concurrency: u64,
    /// No run starts after this much time (positive, at most [`MAX_DURATION`]).
    pub duration: Duration,
    /// Stop after this many runs (at least 1), if given.
    pub max_runs: Option<u64>,
    /// Every step is bounded by this (positive); past it the step fails with `timeout`.
    pub step_timeout: Duration,
    /// Every run is bounded by this (positive); past it the run is cancelled and fails as
    /// `"(run): timeout"`.
    pub run_timeout: Duration,
    /// Seeds the scenario choice and every run's RNG.
    pub seed: u64,
}

impl Default for MixConfig {
    /// 50 workers for 10 s, no run limit, 5 s per step, 60 s per run, seed 0.
    fn default() -> Self {
        MixConfig {
            concurrency: 50,
            duration: Duration::from_secs(10),
            max_runs: None,
            step_timeout: Duration::from_secs(5),
            run_timeout: Duration::from_secs(60),
            seed: 0,
        }
    }
}

impl MixConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), MixError> {
        let bad = |field, value: String, expected: &str| {
            Err(MixError::Config {
                field,
                value,
                expected: expected.to_string(),
            })
        };
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(
                "concurrency",
                self.concurrency.to_string(),
                &format!("1..={MAX_CONCURRENCY} workers"),
            );
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(
                "duration",
                format!("{:?}", self.duration),
                &format!("a positive duration of at most {MAX_DURATION:?}"),
            );
        }
        if self.max_runs == Some(0) {
            return bad("max_runs", "0".into(), "at least 1, or no limit");
        }
        if self.step_timeout.is_zero() {
            return bad(
                "step_timeout",
                format!("{:?}", self.step_timeout),
                "a positive duration",
            );
        }
        if self.run_timeout.is_zero() {
            return bad(
                "run_timeout",
                format!("{:?}", self.run_timeout),
                "a positive duration",
            );
        }
        Ok(())
    }
}

/// What one scenario did over a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioStats {
    /// The scenario.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Runs completed, ok or failed.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// `100 * failures / runs`, 0 when it never ran.
    pub fail_pct: f64,
    /// Median latency of the whole scenario, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Failures by `"<step>: <reason>"` (at most [`MAX_FAILURE_REASONS`] keys plus
    /// [`OTHER_REASON`]); the counts add up to `failures`.
    pub failures_by_reason: BTreeMap<String, u64>,
}

impl ScenarioStats {
    /// The most frequent failure reason and its count (the first in key order on a tie).
    pub fn top_failure(&self) -> Option<(&str, u64)> {
        let mut top: Option<(&str, u64)> = None;
        for (k, &c) in &self.failures_by_reason {
            if top.is_none_or(|(_, t)| c > t) {
                top = Some((k, c));
            }
        }
        top
    }
}

/// What a mix did.
#[derive(Debug, Clone)]
pub struct MixReport {
    /// Seconds from the start until the last run ended.
    pub window_s: f64,
    /// Per scenario, in mix order.
    pub scenarios: Vec<ScenarioStats>,
    /// Per step: actions `"<scenario>/<step>"` with latencies, ok and error kinds.
    pub steps: StepData,
    /// Runs of all scenarios.
    pub total_runs: u64,
    /// `total_runs / window_s`.
    pub scenarios_per_s: f64,
}

impl MixReport {
    /// The per-scenario table: scenario, weight, runs, fail %, p50/p95/p99/max ms, top
    /// failure; then a `TOTAL` row.
    pub fn table(&self) -> Table {
        let mut t = Table::new(
            format!(
                "Scenarios ({} runs, {:.1} scenarios/s over {:.1} s; latency of the whole scenario)",
                self.total_runs, self.scenarios_per_s, self.window_s
            ),
            &[
                "scenario",
                "weight",
                "runs",
                "fail %",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "top failure",
            ],
        );
        let ms = |v: f64| format!("{v:.2}");
        let mut failures = 0u64;
        let mut weight = 0u64;
        for s in &self.scenarios {
            failures = failures.saturating_add(s.failures);
            weight = weight.saturating_add(u64::from(s.weight));
            t.push_row([
                s.name.clone(),
                s.weight.to_string(),
                s.runs.to_string(),
                format!("{:.1}", s.fail_pct),
                ms(s.p50_ms),
                ms(s.p95_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                s.top_failure()
                    .map_or_else(|| "-".to_string(), |(k, c)| format!("{k} ({c})")),
            ]);
        }
        t.push_row([
            "TOTAL".to_string(),
            weight.to_string(),
            self.total_runs.to_string(),
            format!("{:.1}", pct(failures, self.total_runs)),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        t
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Failure counts by key, at most [`MAX_FAILURE_REASONS`] keys plus [`OTHER_REASON`].
#[derive(Default)]
struct Reasons(BTreeMap<String, u64>);

impl Reasons {
    fn add(&mut self, key: String) {
        let key = if self.0.contains_key(&key) || self.0.len() < MAX_FAILURE_REASONS {
            key
        } else {
            OTHER_REASON.to_string()
        };
        let c = self.0.entry(key).or_insert(0);
        *c = c.saturating_add(1);
    }
}

/// State shared by the workers of one mix.
struct Shared {
    mix: Mix,
    cfg: MixConfig,
    deadline: Instant,
    next_seq: AtomicU64,
    steps: Arc<Recorder>,
    steps_epoch: Epoch,
    runs: Recorder,
    runs_epoch: Epoch,
    /// Per scenario, in mix order.
    reasons: Vec<Mutex<Reasons>>,
}

/// Runs one scenario run as its own task, bounded by the run timeout.
async fn run_once(shared: &Shared, worker: u64, seq: u64) {
    let index = shared.mix.pick(shared.cfg.seed, seq);
    let Some(entry) = shared.mix.inner.entries.get(index).cloned() else {
        return; // unreachable: pick returns an index of the mix
    };
    let ctx = ScenarioCtx {
        seq,
        worker,
        rng: fastrand::Rng::with_seed(run_seed(shared.cfg.seed, seq, CTX_STREAM)),
        entry: entry.clone(),
        recorder: shared.steps.clone(),
        epoch: shared.steps_epoch,
        step_timeout: shared.cfg.step_timeout,
    };
    let began = Instant::now();
    let scenario = entry.scenario.clone();
    let mut handle = tokio::spawn(async move {
        let mut ctx = ctx;
        scenario.run(&mut ctx).await
    });
    let outcome = match tokio::time::timeout(shared.cfg.run_timeout, &mut handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ScenarioFailure::validation(
            RUN_STEP,
            if e.is_panic() { "panic" } else { "cancelled" },
        )),
        Err(_) => {
            handle.abort();
            // The task is dropped at its next yield; wait for that, boundedly, so that
            // nothing of this run is recorded after the mix returns.
            let _ = tokio::time::timeout(ABORT_WAIT, handle).await;
            Err(ScenarioFailure::validation(RUN_STEP, "timeout"))
        }
    };
    let us = micros(began.elapsed());
    shared.runs.record(
        shard_hint(worker),
        shared.runs_epoch,
        &Sample {
            action: ActionId(index),
            latency_us: us,
            service_us: us,
            error: outcome.is_err().then_some(FAILED_KIND),
        },
    );
    if let Err(f) = outcome {
        if let Some(r) = shared.reasons.get(index) {
            lock(r).add(f.key());
        }
    }
}

/// One closed-loop worker: runs scenarios back to back until the deadline or `max_runs`.
async fn worker(shared: Arc<Shared>, worker: u64) {
    // Bounded: every iteration starts before the deadline and takes at most the run
    // timeout (plus the abort wait); no iteration starts after the deadline.
    while Instant::now() < shared.deadline {
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        if shared.cfg.max_runs.is_some_and(|max| seq >= max) {
            break;
        }
        run_once(&shared, worker, seq).await;
    }
}

/// Drives `mix` with `cfg.concurrency` closed-loop workers (see the module doc) and reports
/// per scenario and per step. Fails only on an invalid `cfg`.
pub async fn run_mix(mix: &Mix, cfg: &MixConfig) -> Result<MixReport, MixError> {
    cfg.validate()?;
    let shards = cfg.concurrency.min(MAX_SHARDS) as usize;
    let step_names = mix.step_actions();
    let step_refs: Vec<&str> = step_names.iter().map(String::as_str).collect();
    let steps = Arc::new(Recorder::new(&step_refs, shards)?);
    let runs = Recorder::new(&mix.names(), shards)?;
    let start = Instant::now();
    // `duration` is at most MAX_DURATION: no overflow.
    let deadline = start + cfg.duration;
    let shared = Arc::new(Shared {
        mix: mix.clone(),
        cfg: *cfg,
        deadline,
        next_seq: AtomicU64::new(0),
        steps_epoch: steps.epoch(),
        steps,
        runs_epoch: runs.epoch(),
        runs,
        reasons: mix
            .inner
            .entries
            .iter()
            .map(|_| Mutex::new(Reasons::default()))
            .collect(),
    });
    let handles: Vec<_> = (0..cfg.concurrency)
        .map(|w| tokio::spawn(worker(shared.clone(), w)))
        .collect();
    for h in handles {
        // A worker cannot panic (a run's panic stays in the run's task); if it did, the
        // runs it completed are recorded already.
        let _ = h.await;
    }
    let window_s = start.elapsed().as_secs_f64();
    let step_data = shared.steps.reset();
    let run_data = shared.runs.reset();
    let mut scenarios = Vec::with_capacity(mix.inner.entries.len());
    let mut total_runs = 0u64;
    for (i, e) in mix.inner.entries.iter().enumerate() {
        let summary = run_data
            .actions
            .get(&e.name)
            .map(|a| a.summary(window_s))
            .unwrap_or_else(|| crate::recorder::ActionData::new().summary(window_s));
        let failures_by_reason = shared
            .reasons
            .get(i)
            .map(|r| std::mem::take(&mut lock(r).0))
            .unwrap_or_default();
        total_runs = total_runs.saturating_add(summary.count);
        scenarios.push(ScenarioStats {
            name: e.name.clone(),
            weight: e.weight,
            runs: summary.count,
            failures: summary.errors,
            fail_pct: pct(summary.errors, summary.count),
            p50_ms: summary.p50_ms,
            p95_ms: summary.p95_ms,
            p99_ms: summary.p99_ms,
            max_ms: summary.max_ms,
            failures_by_reason,
        });
    }
    Ok(MixReport {
        window_s,
        scenarios,
        steps: step_data,
        total_runs,
        scenarios_per_s: if window_s > 0.0 {
            total_runs as f64 / window_s
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    type RunFn =
        dyn Fn(&mut ScenarioCtx) -> BoxFuture<'_, Result<(), ScenarioFailure>> + Send + Sync;

    /// A test scenario built from a closure.
    struct Sc {
        name: String,
        weight: u32,
        steps: Vec<String>,
        run: Box<RunFn>,
    }

    impl Scenario for Sc {
        fn name(&self) -> &str {
            &self.name
        }
        fn weight(&self) -> u32 {
            self.weight
        }
        fn steps(&self) -> Vec<String> {
            self.steps.clone()
        }
        fn run<'a>(
            &'a self,
            ctx: &'a mut ScenarioCtx,
        ) -> BoxFuture<'a, Result<(), ScenarioFailure>> {
            (self.run)(ctx)
        }
    }

    fn sc<F>(name: &str, weight: u32, steps: &[&str], run: F) -> Arc<dyn Scenario>
    where
        F: Fn(&mut ScenarioCtx) -> BoxFuture<'_, Result<(), ScenarioFailure>>
            + Send
            + Sync
            + 'static,
    {
        Arc::new(Sc {
            name: name.into(),
            weight,
            steps: steps.iter().map(|s| s.to_string()).collect(),
            run: Box::new(run),
        })
    }

    /// A scenario whose one step `op` succeeds at once.
    fn ok_sc(name: &str, weight: u32) -> Arc<dyn Scenario> {
        sc(name, weight, &["op"], |ctx| {
            Box::pin(async move { ctx.step("op", async { Ok(()) }).await })
        })
    }

    fn cfg(concurrency: u64, max_runs: Option<u64>) -> MixConfig {
        MixConfig {
            concurrency,
            duration: Duration::from_secs(60),
            max_runs,
            step_timeout: Duration::from_secs(5),
            run_timeout: Duration::from_secs(30),
            seed: 42,
        }
    }

    fn stats<'a>(r: &'a MixReport, name: &str) -> &'a ScenarioStats {
        r.scenarios.iter().find(|s| s.name == name).unwrap()
    }

    fn six() -> Mix {
        Mix::new(vec![
            ok_sc("cold_search_email", 35),
            ok_sc("surge_fill_validate", 15),
            ok_sc("profile_swap", 15),
            ok_sc("repeat_cache", 15),
            ok_sc("sms_validate", 10),
            ok_sc("playbook_record_replay", 10),
        ])
        .unwrap()
    }

    #[test]
    fn weighted_choice_matches_weights_and_replays_by_seed() {
        let mix = six();
        const N: u64 = 10_000;
        let picks = |seed| (0..N).map(|seq| mix.pick(seed, seq)).collect::<Vec<_>>();
        let a = picks(7);
        let mut counts = [0u64; 6];
        for &i in &a {
            counts[i] += 1;
        }
        for (i, w) in [35.0, 15.0, 15.0, 15.0, 10.0, 10.0].iter().enumerate() {
            let got = 100.0 * counts[i] as f64 / N as f64;
            // The standard deviation of a share of 35% over 10 000 picks is 0.48 points.
            assert!((got - w).abs() < 2.5, "scenario {i}: {got}% vs weight {w}%");
        }
        assert_eq!(a, picks(7), "the same seed replays the same choices");
        let b = picks(8);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(
            differ > 1000,
            "another seed gives other choices ({differ} differ)"
        );
    }

    #[test]
    fn a_single_scenario_is_always_picked() {
        let mix = Mix::new(vec![ok_sc("only", 1)]).unwrap();
        assert!((0..1000).all(|seq| mix.pick(u64::MAX, seq) == 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_follow_the_pick_sequence_and_their_rng_replays() {
        type Log = Arc<StdMutex<BTreeMap<u64, (String, u64)>>>;
        let make = |log: Log| {
            let scenarios = ["a", "b", "c"]
                .iter()
                .zip([5u32, 3, 2])
                .map(|(name, w)| {
                    let log = log.clone();
                    sc(name, w, &["op"], move |ctx| {
                        let log = log.clone();
                        Box::pin(async move {
                            let v = ctx.rng().u64(..);
                            let name = ctx.scenario().to_string();
                            log.lock().unwrap().insert(ctx.seq(), (name, v));
                            ctx.step("op", async { Ok(()) }).await
                        })
                    })
                })
                .collect();
            Mix::new(scenarios).unwrap()
        };
        let run = |seed| async move {
            let log: Log = Arc::default();
            let mix = make(log.clone());
            let c = MixConfig {
                seed,
                ..cfg(4, Some(300))
            };
            let r = run_mix(&mix, &c).await.unwrap();
            assert_eq!(r.total_runs, 300);
            let log = std::mem::take(&mut *log.lock().unwrap());
            assert_eq!(
                log.keys().copied().collect::<Vec<_>>(),
                (0..300).collect::<Vec<_>>()
            );
            for (seq, (name, _)) in &log {
                assert_eq!(mix.names()[mix.pick(seed, *seq)], name, "seq {seq}");
            }
            log
        };
        let first = run(3).await;
        assert_eq!(
            first,
            run(3).await,
            "same seed, same choices and same RNG values"
        );
        assert_ne!(first, run(4).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validation_failures_are_counted_with_their_reason() {
        let flaky = sc("flaky", 1, &["search", "check"], |ctx| {
            Box::pin(async move {
                ctx.step("search", async { Ok(()) }).await?;
                ctx.step("check", async { Ok(()) }).await?;
                if ctx.seq() % 4 == 0 {
                    return Err(ScenarioFailure::validation(
                        "no_overlap",
                        "swap returned an excluded id",
                    ));
                }
                Ok(())
            })
        });
        let mix = Mix::new(vec![flaky, ok_sc("fine", 1)]).unwrap();
        let r = run_mix(&mix, &cfg(5, Some(2_000))).await.unwrap();
        let picks: Vec<usize> = (0..2_000).map(|s| mix.pick(42, s)).collect();
        let flaky_runs = picks.iter().filter(|&&i| i == 0).count() as u64;
        let flaky_fails = (0..2_000u64)
            .filter(|&s| picks[s as usize] == 0 && s % 4 == 0)
            .count() as u64;
        let s = stats(&r, "flaky");
        assert_eq!(s.runs, flaky_runs);
        assert_eq!(s.failures, flaky_fails);
        assert!((s.fail_pct - 25.0).abs() < 5.0, "{}", s.fail_pct);
        assert_eq!(
            s.failures_by_reason,
            BTreeMap::from([(
                "no_overlap: swap returned an excluded id".to_string(),
                flaky_fails
            )])
        );
        assert_eq!(
            s.top_failure(),
            Some(("no_overlap: swap returned an excluded id", flaky_fails))
        );
        let f = stats(&r, "fine");
        assert_eq!(
            (f.runs, f.failures, f.fail_pct),
            (2_000 - flaky_runs, 0, 0.0)
        );
        assert!(f.failures_by_reason.is_empty());
        // Validation failures are not step errors: both steps of every run succeeded.
        assert_eq!(r.steps.actions["flaky/check"].ok, flaky_runs);
        assert_eq!(r.steps.actions["flaky/check"].error_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_step_times_out_and_the_mix_ends_by_itself() {
        let hang = sc("hang", 1, &["prepare", "stuck"], |ctx| {
            Box::pin(async move {
                ctx.step("prepare", async { Ok(()) }).await?;
                ctx.step("stuck", std::future::pending::<Result<(), OpError>>())
                    .await
            })
        });
        let mix = Mix::new(vec![hang]).unwrap();
        let c = MixConfig {
            duration: Duration::from_millis(500),
            step_timeout: Duration::from_millis(50),
            ..cfg(3, None)
        };
        let r = tokio::time::timeout(Duration::from_secs(600), run_mix(&mix, &c))
            .await
            .expect("the mix ends by itself")
            .unwrap();
        let s = stats(&r, "hang");
        assert!(s.runs >= 3, "{}", s.runs);
        assert_eq!(s.failures, s.runs);
        assert_eq!(
            s.failures_by_reason,
            BTreeMap::from([("stuck: timeout".to_string(), s.runs)])
        );
        let stuck = &r.steps.actions["hang/stuck"];
        assert_eq!(stuck.timeouts(), s.runs);
        assert_eq!(stuck.ok, 0);
        assert_eq!(r.steps.actions["hang/prepare"].ok, s.runs);
        // Each run takes the step timeout (virtual time): 3 workers, 500 ms, 50 ms per run.
        assert_eq!(s.runs, 30);
        assert!(s.p50_ms >= 50.0 && s.max_ms < 60.0, "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_hangs_outside_any_step_is_cancelled_at_the_run_timeout() {
        let hang = sc("hang", 1, &["op"], |ctx| {
            Box::pin(async move {
                ctx.step("op", async { Ok(()) }).await?;
                std::future::pending::<()>().await;
                Ok(())
            })
        });
        let mix = Mix::new(vec![hang]).unwrap();
        let c = MixConfig {
            duration: Duration::from_secs(1),
            run_timeout: Duration::from_millis(300),
            ..cfg(2, None)
        };
        let r = tokio::time::timeout(Duration::from_secs(600), run_mix(&mix, &c))
            .await
            .expect("the mix ends by itself")
            .unwrap();
        let s = stats(&r, "hang");
        // Runs start at 0, 300, 600 and 900 ms on each of the two workers.
        assert_eq!(s.runs, 8);
        assert_eq!(
            s.failures_by_reason,
            BTreeMap::from([("(run): timeout".to_string(), 8)])
        );
        assert_eq!(r.steps.actions["hang/op"].ok, 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_run_is_a_failure_and_the_mix_goes_on() {
        let boom = sc("boom", 1, &["op"], |ctx| {
            Box::pin(async move {
                ctx.step("op", async { Ok(()) }).await?;
                if ctx.seq() % 2 == 0 {
                    panic!("scenario bug (expected by this test)");
                }
                Ok(())
            })
        });
        let mix = Mix::new(vec![boom]).unwrap();
        let r = run_mix(&mix, &cfg(2, Some(20))).await.unwrap();
        let s = stats(&r, "boom");
        assert_eq!((s.runs, s.failures), (20, 10));
        assert_eq!(
            s.failures_by_reason,
            BTreeMap::from([("(run): panic".to_string(), 10)])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steps_are_recorded_per_action_with_their_error_kinds() {
        let three = sc("three", 1, &["a", "b", "c"], |ctx| {
            Box::pin(async move {
                let n = ctx.step("a", async { Ok(7u32) }).await?;
                assert_eq!(n, 7);
                let seq = ctx.seq();
                ctx.step("b", async move {
                    if seq % 10 == 0 {
                        Err(OpError::new("overload", "queue full"))
                    } else {
                        Ok(())
                    }
                })
                .await?;
                if seq % 2 == 1 {
                    ctx.step("c", async { Ok(()) }).await?;
                }
                Ok(())
            })
        });
        let mix = Mix::new(vec![three, ok_sc("other", 1)]).unwrap();
        let r = run_mix(&mix, &cfg(3, Some(400))).await.unwrap();
        let seqs: Vec<u64> = (0..400).filter(|&s| mix.pick(42, s) == 0).collect();
        let runs = seqs.len() as u64;
        let overloads = seqs.iter().filter(|&&s| s % 10 == 0).count() as u64;
        let odd = seqs.iter().filter(|&&s| s % 2 == 1).count() as u64;
        assert_eq!(
            r.steps.actions.keys().collect::<Vec<_>>(),
            ["other/op", "three/a", "three/b", "three/c"]
        );
        assert_eq!(r.steps.actions["three/a"].ok, runs);
        let b = &r.steps.actions["three/b"];
        assert_eq!(
            (b.ok, b.errors.get("overload").copied()),
            (runs - overloads, Some(overloads))
        );
        assert_eq!(r.steps.actions["three/c"].completed(), odd);
        assert_eq!(r.steps.actions["other/op"].ok, 400 - runs);
        let s = stats(&r, "three");
        assert_eq!(
            s.failures_by_reason,
            BTreeMap::from([("b: overload".to_string(), overloads)])
        );
        assert_eq!(r.steps.stragglers, 0);
    }

    #[tokio::test]
    async fn an_unknown_step_fails_naming_it_and_runs_nothing() {
        let ran = Arc::new(AtomicU64::new(0));
        let ran2 = ran.clone();
        let typo = sc("typo", 1, &["search"], move |ctx| {
            let ran = ran2.clone();
            Box::pin(async move {
                ctx.step("serach", async move {
                    ran.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .await
            })
        });
        let mix = Mix::new(vec![typo]).unwrap();
        let r = run_mix(&mix, &cfg(1, Some(5))).await.unwrap();
        let s = stats(&r, "typo");
        assert_eq!(s.failures, 5);
        let (key, n) = s.top_failure().unwrap();
        assert_eq!(n, 5);
        assert!(
            key.starts_with("serach: unknown step") && key.contains("search"),
            "{key}"
        );
        assert_eq!(ran.load(Ordering::Relaxed), 0);
        assert_eq!(r.steps.actions["typo/search"].completed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn scenario_latency_and_the_table() {
        let slow = sc("slow", 1, &["x", "y"], |ctx| {
            Box::pin(async move {
                for step in ["x", "y"] {
                    ctx.step(step, async {
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        Ok(())
                    })
                    .await?;
                }
                Ok(())
            })
        });
        let fast = sc("fast", 1, &["x"], |ctx| {
            Box::pin(async move {
                ctx.step("x", async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(())
                })
                .await?;
                Err(ScenarioFailure::validation("check", "bad"))
            })
        });
        let mix = Mix::new(vec![slow, fast]).unwrap();
        let r = run_mix(&mix, &cfg(4, Some(200))).await.unwrap();
        let (s, f) = (stats(&r, "slow"), stats(&r, "fast"));
        assert_eq!(s.runs + f.runs, 200);
        assert!((30.0..33.0).contains(&s.p50_ms) && s.max_ms < 33.0, "{s:?}");
        assert!((10.0..12.0).contains(&f.p99_ms), "{f:?}");
        assert_eq!(f.fail_pct, 100.0);
        let step_x = r.steps.actions["slow/x"].summary(r.window_s);
        assert!((15.0..17.0).contains(&step_x.p50_ms), "{step_x:?}");
        assert!(r.window_s > 0.0);
        assert!((r.scenarios_per_s - 200.0 / r.window_s).abs() < 1e-9);

        let t = r.table();
        assert_eq!(t.columns.len(), 9);
        assert_eq!(t.columns[8], "top failure");
        assert_eq!(t.rows.len(), 3);
        assert!(t.rows.iter().all(|row| row.len() == t.columns.len()));
        assert_eq!(t.rows[0][0], "slow");
        assert_eq!(t.rows[0][8], "-");
        assert_eq!(t.rows[1][3], "100.0");
        assert_eq!(t.rows[1][8], format!("check: bad ({})", f.runs));
        assert_eq!(t.rows[2][0], "TOTAL");
        assert_eq!(t.rows[2][2], "200");
    }

    #[tokio::test(start_paused = true)]
    async fn no_run_starts_after_the_deadline() {
        let mix = Mix::new(vec![sc("s", 1, &["wait"], |ctx| {
            Box::pin(async move {
                ctx.step("wait", async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok(())
                })
                .await
            })
        })])
        .unwrap();
        let c = MixConfig {
            duration: Duration::from_millis(100),
            ..cfg(1, None)
        };
        let r = run_mix(&mix, &c).await.unwrap();
        // Runs start at about 0, 30, 60 and 90 ms; the one due at 120 ms never starts.
        assert_eq!(r.total_runs, 4);
        assert!(r.window_s >= 0.12 && r.window_s < 0.13, "{}", r.window_s);
    }

    #[tokio::test]
    async fn failure_reasons_are_capped() {
        let many = sc("many", 1, &["op"], |ctx| {
            Box::pin(async move {
                ctx.step("op", async { Ok(()) }).await?;
                Err(ScenarioFailure::validation(
                    "v",
                    format!("reason {}", ctx.seq() % 100),
                ))
            })
        });
        let mix = Mix::new(vec![many]).unwrap();
        let r = run_mix(&mix, &cfg(1, Some(300))).await.unwrap();
        let s = stats(&r, "many");
        assert_eq!(s.failures, 300);
        assert_eq!(s.failures_by_reason.len(), MAX_FAILURE_REASONS + 1);
        assert_eq!(s.failures_by_reason.values().sum::<u64>(), 300);
        // One worker runs seq 0, 1, 2... in order: reasons 0..32 are kept, 3 times each.
        assert_eq!(s.failures_by_reason["v: reason 0"], 3);
        assert_eq!(
            s.failures_by_reason[OTHER_REASON],
            300 - 3 * MAX_FAILURE_REASONS as u64
        );
        let long = ScenarioFailure::validation("é".repeat(100), "x").key();
        assert!(long.len() <= MAX_REASON_BYTES && long.starts_with('é'));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_runs_stops_at_exactly_that_many() {
        let yielding = sc("y", 3, &["op"], |ctx| {
            Box::pin(async move {
                ctx.step("op", async {
                    tokio::task::yield_now().await;
                    Ok(())
                })
                .await
            })
        });
        let mix = Mix::new(vec![yielding, ok_sc("z", 1)]).unwrap();
        for (workers, max) in [(1, 1), (7, 1_000), (64, 5)] {
            let r = run_mix(&mix, &cfg(workers, Some(max))).await.unwrap();
            assert_eq!(r.total_runs, max, "{workers} workers");
            assert_eq!(r.scenarios.iter().map(|s| s.runs).sum::<u64>(), max);
            assert_eq!(r.steps.total().completed(), max);
        }
    }

    fn err(scenarios: Vec<Arc<dyn Scenario>>) -> String {
        Mix::new(scenarios).unwrap_err().to_string()
    }

    fn noop(ctx: &mut ScenarioCtx) -> BoxFuture<'_, Result<(), ScenarioFailure>> {
        let _ = ctx;
        Box::pin(async { Ok(()) })
    }

    #[test]
    fn every_mix_error_names_the_problem() {
        assert!(matches!(Mix::new(vec![]), Err(MixError::NoScenarios)));
        let e = err(vec![ok_sc("a", 1), ok_sc("b", 0)]);
        assert_eq!(
            e,
            "scenario \"b\" has weight 0: expected a weight of at least 1"
        );
        let e = err(vec![ok_sc("a", 1), ok_sc("a", 2)]);
        assert_eq!(e, "duplicate scenario name \"a\": expected each name once");
        let e = err(vec![sc("a", 1, &["x", "y", "x"], noop)]);
        assert_eq!(
            e,
            "scenario \"a\" names step \"x\" twice: expected each step once"
        );
        let e = err(vec![ok_sc("a/b", 1)]);
        assert!(
            e.starts_with("invalid scenario name \"a/b\": expected a name without '/'"),
            "{e}"
        );
        let e = err(vec![sc("a", 1, &["x/y"], noop)]);
        assert!(
            e.starts_with(
                "invalid step of scenario \"a\" name \"x/y\": expected a name without '/'"
            ),
            "{e}"
        );
        let e = err(vec![ok_sc("", 1)]);
        assert_eq!(e, "invalid scenario name \"\": expected a non-empty name");
        let e = err(vec![sc("a", 1, &[""], noop)]);
        assert!(e.contains("expected a non-empty name"), "{e}");
        let e = err(vec![sc("a", 1, &[RUN_STEP], noop)]);
        assert!(e.contains("reserved"), "{e}");
        let e = err(vec![sc("a", 1, &[], noop)]);
        assert_eq!(
            e,
            "scenario \"a\" has no steps: expected at least one step name"
        );
        let steps: Vec<String> = (0..MAX_ACTIONS).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = steps.iter().map(String::as_str).collect();
        let e = err(vec![sc("a", 1, &refs, noop), ok_sc("b", 1)]);
        assert_eq!(
            e,
            format!(
                "{} steps in all: expected at most {MAX_ACTIONS}",
                MAX_ACTIONS + 1
            )
        );
        // u32::MAX weights do not overflow.
        let mix = Mix::new(vec![ok_sc("a", u32::MAX), ok_sc("b", u32::MAX)]).unwrap();
        assert_eq!(mix.total_weight(), 2 * u64::from(u32::MAX));
        assert!(mix.pick(1, 1) < 2);
    }

    #[tokio::test]
    async fn every_config_error_names_the_field() {
        let mix = Mix::new(vec![ok_sc("a", 1)]).unwrap();
        let cases = [
            (
                MixConfig {
                    concurrency: 0,
                    ..cfg(1, None)
                },
                "invalid concurrency 0: expected 1..=100000 workers",
            ),
            (
                MixConfig {
                    concurrency: MAX_CONCURRENCY + 1,
                    ..cfg(1, None)
                },
                "invalid concurrency 100001",
            ),
            (
                MixConfig {
                    duration: Duration::ZERO,
                    ..cfg(1, None)
                },
                "invalid duration 0ns: expected a positive duration",
            ),
            (
                MixConfig {
                    duration: Duration::MAX,
                    ..cfg(1, None)
                },
                "invalid duration",
            ),
            (
                cfg(1, Some(0)),
                "invalid max_runs 0: expected at least 1, or no limit",
            ),
            (
                MixConfig {
                    step_timeout: Duration::ZERO,
                    ..cfg(1, None)
                },
                "invalid step_timeout 0ns",
            ),
            (
                MixConfig {
                    run_timeout: Duration::ZERO,
                    ..cfg(1, None)
                },
                "invalid run_timeout 0ns",
            ),
        ];
        for (c, want) in cases {
            let e = run_mix(&mix, &c).await.unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
        assert!(MixConfig::default().validate().is_ok());
    }
}
