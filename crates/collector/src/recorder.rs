//! Per-action latency recorder: histograms and counters that many tasks and threads record
//! into at once without a global lock, reset exactly between the steps of a trial, and
//! serialized so that the steps of several processes merge.
//!
//! # What is recorded
//!
//! A [`Recorder`] knows a fixed list of actions (named when it is built; [`ActionId`] is an
//! index into that list). For each action, one step holds ([`ActionData`]):
//!
//! - `latency`: an `hdrhistogram` of the time from the operation's *intended* start (its slot
//!   in the open-loop schedule) to its completion, so time spent waiting behind a late
//!   generator counts (no coordinated omission);
//! - `service`: the time from the operation's *actual* start to its completion;
//! - `ok`, and `errors` by kind (`"timeout"`, `"overload"`, ...; [`ActionData::timeouts`]);
//! - `late`: operations that started later than their intended time by more than the
//!   generator's slack, and `dropped`: operations that never started (in-flight limit
//!   reached). Together they are the generator-shortfall signal: a step with many of them
//!   measured the generator, not the target.
//!
//! Every completed operation, ok or failed, is in both histograms, so
//! `latency.len() == completed()`. Values are microseconds, clamped to
//! `1..=3_600_000_000` (one hour; a 0 becomes 1, anything longer than an hour becomes an
//! hour), kept at 3 significant digits. No input value panics.
//!
//! # Steps and epochs: the accounting rule
//!
//! A trial runs in steps (a rate, a ramp stage). The step in progress has a number, its
//! [`Epoch`], given by [`Recorder::epoch`]; [`Recorder::reset`] closes it, returns what it
//! holds and starts the next. The rule is:
//!
//! > **A sample counts in the step in which its operation was scheduled.** The generator reads
//! > [`Recorder::epoch`] when it *schedules* an operation and passes that epoch to
//! > [`Recorder::record`] (or [`Recorder::record_late`], [`Recorder::record_dropped`]) when
//! > the operation completes. If the step of that epoch is still open on the shard the call
//! > lands on, the event goes into the step's data; if the step has been closed by a reset
//! > in the meantime, the event is a **straggler**: it is counted in the `stragglers` of the
//! > step during which it arrived, and in nothing else. A straggler never enters the
//! > histograms or counters of a later step.
//!
//! An operation scheduled while a reset is in progress (it read the old epoch) counts in the
//! old step or as a straggler, never in the new step.
//!
//! # Why every event is counted exactly once
//!
//! The recorder has `shards` slots, each a mutex over `(epoch e, live data L, straggler count
//! S)`. Only three code paths touch a shard, each within one critical section of its mutex:
//! a `record*` call (if its epoch equals `e`, add the event to `L`, otherwise add 1 to `S`);
//! [`Recorder::peek`] (read `L` and `S`); and [`Recorder::reset`] (move `L` and `S` out,
//! leaving empty ones, and set `e` to the next epoch, all in one critical section).
//!
//! 1. Each `record*` call runs exactly one critical section on exactly one shard and adds its
//!    event to exactly one of `L` or `S` of that shard. (An [`ActionId`] that is not an index
//!    of this recorder's actions is the one exception: it is counted in
//!    [`Recorder::unknown_actions`] instead.)
//! 2. The critical sections on one mutex are totally ordered, so the reset's critical section
//!    splits the events of that shard in two: those added before are in what the reset moves
//!    out, those added after stay in the shard for the next reset. What is moved out is
//!    replaced by empty data, so no event is taken twice; all of it is merged into the
//!    returned [`StepData`], so none is lost.
//! 3. Between two resets `e` does not change, so what `L` holds when the reset from `E` to
//!    `E + 1` moves it out was all recorded with epoch `E`: a step's data holds exactly the
//!    events of its own epoch that arrived in time, and stragglers never leak into a later
//!    step.
//! 4. Resets are serialized, and a reset publishes the new epoch to [`Recorder::epoch`]
//!    (a release store) only after every shard is at the new epoch. A generator that reads
//!    `E + 1` (an acquire load) therefore finds every shard at `E + 1` or later: an event of
//!    the newest epoch is never mistaken for a straggler by a shard that lags behind. (The
//!    shard mutexes alone already give this order; the release/acquire pair states it. An
//!    epoch that was never current, e.g. one from another recorder, differs from `e` and is
//!    counted once, as a straggler.)
//! 5. [`Recorder::peek`] reads under the same locks and moves nothing, so it changes no count;
//!    it is serialized with resets, so every shard is at the same epoch while it reads, and
//!    what it reports for epoch `E` is part of what the reset that closes `E` returns.
//!
//! Hence, over the life of a recorder, the events in the data of all the steps returned by
//! `reset`, plus all the stragglers, plus the events still held, plus `unknown_actions`,
//! equals the number of `record*` calls, each counted once. The loom model in
//! `tests/loom_recorder.rs` checks this, and the placement of each sample, in every
//! interleaving of two recording threads with a peek and a reset.
//!
//! # Cost
//!
//! A `record*` call locks only its own shard (`shard_hint % shards`; give each thread or task
//! its own hint to keep the lock uncontended), does no allocation once the shard's histograms
//! have grown to the largest value seen (an error kind allocates on its first occurrence in a
//! shard), and touches no memory shared with other shards: each shard sits on its own cache
//! lines. `reset` holds each shard's lock only to swap two vectors; the merging happens
//! outside the lock, and the swapped-out data is cleared and kept as the shard's spare, so
//! the next step starts without allocating. `peek` merges under each shard's lock (tens of
//! microseconds per action and shard).
//!
//! # Memory
//!
//! Bounded: each (shard, action) holds two histograms that grow with the largest value
//! recorded, from 16 KiB to 184 KiB each (one hour at 3 significant digits), twice (the
//! live set and the spare); at most [`MAX_ERROR_KINDS`] error kinds of at most
//! [`MAX_ERROR_KIND_BYTES`] bytes each are kept apart per action and shard, the rest are
//! counted under [`OTHER_ERROR_KIND`]. A [`StepData`] holds two full-range histograms (about
//! 184 KiB each) per action.
//!
//! # Serialized form
//!
//! [`StepData::to_bytes`] writes JSON: `{"format": "herdlab-step-data", "schema": 1, "epoch",
//! "stragglers", "actions": {name: {"ok", "errors", "late", "dropped", "latency", "service"}},
//! "marks": [name, …]}` (`marks` only when there are any: data without it reads as none),
//! where each histogram is the base64 (standard alphabet, padded) of its HdrHistogram V2 +
//! deflate encoding, readable by any HdrHistogram implementation. [`StepData::from_bytes`]
//! checks all of it, including the histogram encodings, before trusting any of it; on bad
//! input it returns an error saying where and what, never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// The largest value a histogram keeps, in µs: one hour. Larger values are recorded as this.
pub const MAX_VALUE_US: u64 = 3_600_000_000;
/// Significant decimal digits the histograms keep.
pub const SIGFIG: u8 = 3;
/// The most shards a recorder may have.
pub const MAX_SHARDS: usize = 1024;
/// The most actions a recorder may have.
pub const MAX_ACTIONS: usize = 1024;
/// Distinct error kinds kept apart per action and shard; further kinds count as
/// [`OTHER_ERROR_KIND`].
pub const MAX_ERROR_KINDS: usize = 32;
/// Longest error kind kept, in bytes; a longer kind is cut (at a character boundary).
pub const MAX_ERROR_KIND_BYTES: usize = 64;
/// The error kind that counts the kinds beyond [`MAX_ERROR_KINDS`].
pub const OTHER_ERROR_KIND: &str = "other";
/// The error kind of a timeout, counted by [`ActionData::timeouts`].
pub const TIMEOUT_ERROR_KIND: &str = "timeout";
/// The `format` field of the serialized form.
pub const STEP_DATA_FORMAT: &str = "herdlab-step-data";
/// The `schema` version of the serialized form this code writes and reads.
pub const STEP_DATA_SCHEMA: u32 = 1;
/// The largest serialized step [`StepData::from_bytes`] accepts.
pub const MAX_STEP_DATA_BYTES: usize = 64 << 20;

/// Largest decoded V2 payload accepted for one histogram: a full-range histogram at 3 digits
/// has 23 552 counts, each at most 9 bytes.
const MAX_HISTOGRAM_PAYLOAD_BYTES: usize = 1 << 20;
/// The V2 header: cookie, payload length, normalizing offset, digits (4 bytes each), lowest,
/// highest value and integer-to-double ratio (8 bytes each).
const V2_HEADER_BYTES: usize = 40;
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// Errors of building a recorder and of merging, encoding and decoding step data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// `Recorder::new` was given no action names.
    #[error("no action names: expected at least one, like [\"get\", \"put\"]")]
    NoActions,
    /// More action names than [`MAX_ACTIONS`].
    #[error("{count} action names: expected at most {max}")]
    TooManyActions {
        /// Names given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An action name is the empty string.
    #[error("action name #{index} is empty: expected a non-empty name")]
    EmptyActionName {
        /// Position of the name in the list.
        index: usize,
    },
    /// An action name appears twice.
    #[error("duplicate action name {name:?}: expected each name once")]
    DuplicateAction {
        /// The repeated name.
        name: String,
    },
    /// The shard count is out of range.
    #[error("invalid shard count {shards}: expected 1..={max}")]
    InvalidShards {
        /// The count given.
        shards: usize,
        /// The limit.
        max: usize,
    },
    /// A mark index is not one of the recorder's actions.
    #[error("mark #{index} is not an action: the recorder has {actions} actions")]
    UnknownMark {
        /// The index given.
        index: usize,
        /// How many actions there are.
        actions: usize,
    },
    /// Every action was declared a mark, so no operation would be counted.
    #[error("every action is a mark: expected at least one action that is an operation")]
    AllMarks,
    /// Two histograms cannot be merged.
    #[error("cannot merge {what}: {reason}")]
    Merge {
        /// Which histogram.
        what: String,
        /// Why not.
        reason: String,
    },
    /// Step data could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What failed to encode.
        what: String,
        /// Why.
        reason: String,
    },
    /// Serialized step data is too large to read.
    #[error("step data is {len} bytes: expected at most {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Serialized step data is invalid.
    #[error("invalid step data at {at}: {reason}")]
    Decode {
        /// Where in the input: a JSON path such as `actions.get.latency`, or `(document)`.
        at: String,
        /// What is wrong.
        reason: String,
    },
}

fn decode_err(at: impl Into<String>, reason: impl Into<String>) -> RecorderError {
    RecorderError::Decode {
        at: at.into(),
        reason: reason.into(),
    }
}

/// A step of a trial: the value of [`Recorder::epoch`] while the step is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// An action of a [`Recorder`]: the index of its name in [`Recorder::actions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ActionId(pub usize);

/// One completed operation.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// Which action.
    pub action: ActionId,
    /// Time from the operation's intended start (its slot in the schedule) to completion, µs.
    pub latency_us: u64,
    /// Time from the operation's actual start to completion, µs.
    pub service_us: u64,
    /// `None` if it succeeded, else the kind of error: `Some("timeout")`, `Some("overload")`...
    pub error: Option<&'a str>,
}

/// A histogram of µs values `1..=MAX_VALUE_US` at [`SIGFIG`] digits, fixed range.
fn micros_histogram() -> Histogram<u64> {
    // Constant, valid bounds: `new_with_bounds` cannot fail here (checked by a unit test).
    Histogram::new_with_bounds(1, MAX_VALUE_US, SIGFIG).expect("constant bounds are valid")
}

/// A histogram of the same precision that starts small (16 KiB) and grows to the largest
/// value recorded, up to [`MAX_VALUE_US`].
fn growing_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 2, SIGFIG).expect("constant bounds are valid");
    h.auto(true);
    h
}

/// Records `value_us`, clamped to `1..=MAX_VALUE_US`. Never fails, never panics.
#[inline]
fn record_value(h: &mut Histogram<u64>, value_us: u64) {
    let v = value_us.clamp(1, MAX_VALUE_US);
    if h.record(v).is_err() {
        // Only a fixed-range histogram gets here (a growing one grows); clamp to its range.
        h.saturating_record(v);
    }
}

/// Whether `add(dst, src)` cannot fail.
fn fits(dst: &Histogram<u64>, src: &Histogram<u64>) -> bool {
    src.is_empty() || dst.is_auto_resize() || src.max() <= dst.highest_equivalent(dst.high())
}

/// Adds `src` to `dst`; values beyond `dst`'s range are clamped to it. Never fails.
fn add_histogram(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dst.add(src).is_err() {
        for v in src.iter_recorded() {
            dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

fn add_error(errors: &mut BTreeMap<String, u64>, kind: &str, count: u64) {
    match errors.get_mut(kind) {
        Some(c) => *c = c.saturating_add(count),
        None => {
            errors.insert(kind.to_string(), count);
        }
    }
}

/// `kind` cut to at most [`MAX_ERROR_KIND_BYTES`] bytes, at a character boundary.
fn truncate_kind(kind: &str) -> &str {
    if kind.len() <= MAX_ERROR_KIND_BYTES {
        return kind;
    }
    let mut end = MAX_ERROR_KIND_BYTES;
    while !kind.is_char_boundary(end) {
        end -= 1;
    }
    &kind[..end]
}

/// What one action holds in one step: histograms and counters.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionData {
    /// Latency from the intended start, µs, of every completed operation (ok or failed).
    pub latency: Histogram<u64>,
    /// Service time from the actual start, µs, of every completed operation.
    pub service: Histogram<u64>,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed, by kind of error.
    pub errors: BTreeMap<String, u64>,
    /// Operations that started later than intended by more than the generator's slack.
    pub late: u64,
    /// Operations that never started (in-flight limit reached).
    pub dropped: u64,
    /// Every latency value recorded, µs as recorded (clamped), in no particular order: empty
    /// unless the recorder keeps a raw log ([`Recorder::with_raw_log`]), and shorter than
    /// `latency.len()` if the log's bound was reached. Checks that merged percentiles equal
    /// those of all samples in one histogram ([`ActionData::raw_histogram`]).
    pub raw_latency_us: Vec<u64>,
}

impl Default for ActionData {
    fn default() -> Self {
        Self::new()
    }
}

impl ActionData {
    /// Empty data, with histograms of µs values `1..=MAX_VALUE_US` at [`SIGFIG`] digits.
    pub fn new() -> ActionData {
        ActionData {
            latency: micros_histogram(),
            service: micros_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            late: 0,
            dropped: 0,
            raw_latency_us: Vec::new(),
        }
    }

    /// The raw log recorded into one fresh histogram, if the log holds every completed
    /// operation (`None` when it is empty or was cut at its bound).
    pub fn raw_histogram(&self) -> Option<Histogram<u64>> {
        if self.raw_latency_us.is_empty() || self.raw_latency_us.len() as u64 != self.latency.len()
        {
            return None;
        }
        let mut h = micros_histogram();
        for &v in &self.raw_latency_us {
            record_value(&mut h, v);
        }
        Some(h)
    }

    /// Operations that completed, ok or failed.
    pub fn completed(&self) -> u64 {
        self.ok.saturating_add(self.error_count())
    }

    /// Operations that failed, all kinds together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Operations that failed with a timeout (`errors["timeout"]`).
    pub fn timeouts(&self) -> u64 {
        self.errors.get(TIMEOUT_ERROR_KIND).copied().unwrap_or(0)
    }

    /// Count, rate over a window of `window_s` seconds, error rate and percentiles in ms.
    ///
    /// A window that is not a positive finite number gives a rate of 0; empty data gives
    /// zeros throughout.
    pub fn summary(&self, window_s: f64) -> ActionSummary {
        let count = self.completed();
        let errors = self.error_count();
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let max_ms = if self.latency.is_empty() {
            0.0
        } else {
            self.latency.max() as f64 / 1000.0
        };
        ActionSummary {
            count,
            rate_per_s: if window_s.is_finite() && window_s > 0.0 {
                count as f64 / window_s
            } else {
                0.0
            },
            ok: self.ok,
            errors,
            error_rate: if count == 0 {
                0.0
            } else {
                errors as f64 / count as f64
            },
            p50_ms: ms(&self.latency, 0.50),
            p90_ms: ms(&self.latency, 0.90),
            p95_ms: ms(&self.latency, 0.95),
            p99_ms: ms(&self.latency, 0.99),
            p999_ms: ms(&self.latency, 0.999),
            max_ms,
            service_p50_ms: ms(&self.service, 0.50),
            service_p99_ms: ms(&self.service, 0.99),
        }
    }

    /// Adds `other` to `self`: histograms and counters (counters saturate).
    ///
    /// Fails, changing nothing, if a histogram of `other` holds values beyond the range of
    /// the matching histogram of `self` (never the case for data from a [`Recorder`] or
    /// [`StepData::from_bytes`]).
    pub fn merge(&mut self, other: &ActionData) -> Result<(), RecorderError> {
        self.check_merge(other, "")?;
        self.merge_unchecked(other);
        Ok(())
    }

    fn check_merge(&self, other: &ActionData, name: &str) -> Result<(), RecorderError> {
        for (what, dst, src) in [
            ("latency", &self.latency, &other.latency),
            ("service", &self.service, &other.service),
        ] {
            if !fits(dst, src) {
                let what = if name.is_empty() {
                    format!("{what} histogram")
                } else {
                    format!("{what} histogram of action {name:?}")
                };
                return Err(RecorderError::Merge {
                    what,
                    reason: format!(
                        "it holds values up to {} µs, beyond the {} µs this histogram can hold",
                        src.max(),
                        dst.high()
                    ),
                });
            }
        }
        Ok(())
    }

    fn merge_unchecked(&mut self, other: &ActionData) {
        add_histogram(&mut self.latency, &other.latency);
        add_histogram(&mut self.service, &other.service);
        self.ok = self.ok.saturating_add(other.ok);
        for (kind, &count) in &other.errors {
            add_error(&mut self.errors, kind, count);
        }
        self.late = self.late.saturating_add(other.late);
        self.dropped = self.dropped.saturating_add(other.dropped);
        self.raw_latency_us.extend_from_slice(&other.raw_latency_us);
    }

    fn absorb(&mut self, shard: &ShardAction) {
        add_histogram(&mut self.latency, &shard.latency);
        add_histogram(&mut self.service, &shard.service);
        self.ok = self.ok.saturating_add(shard.ok);
        for (kind, count) in &shard.errors {
            if *count > 0 {
                add_error(&mut self.errors, kind, *count);
            }
        }
        self.late = self.late.saturating_add(shard.late);
        self.dropped = self.dropped.saturating_add(shard.dropped);
        self.raw_latency_us.extend_from_slice(&shard.raw);
    }
}

/// Count, rate, errors and latency percentiles of one action in one step, as reports print
/// them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ActionSummary {
    /// Operations completed, ok or failed.
    pub count: u64,
    /// `count` per second of the window.
    pub rate_per_s: f64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// `errors / count`, 0 when nothing completed.
    pub error_rate: f64,
    /// Median latency from the intended start, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile latency, ms.
    pub p999_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Median service time from the actual start, ms.
    pub service_p50_ms: f64,
    /// 99th percentile service time, ms.
    pub service_p99_ms: f64,
}

/// What one step holds: per-action data and the count of stragglers that arrived during it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepData {
    /// The step.
    pub epoch: Epoch,
    /// Data per action name. A recorder's steps hold every action, recorded into or not.
    pub actions: BTreeMap<String, ActionData>,
    /// `record*` calls that arrived during this step carrying the epoch of an earlier step
    /// (see the module doc); they are in no histogram or counter.
    pub stragglers: u64,
    /// Actions that are *marks*: a second latency of other actions' operations (a JetStream
    /// publish's ack, when the operation ends at delivery). Each is reported on its own but
    /// kept out of [`StepData::total`], so totals count every operation once.
    pub marks: BTreeSet<String>,
}

impl StepData {
    /// A step with no actions, e.g. to merge the steps of several processes into.
    pub fn new(epoch: Epoch) -> StepData {
        StepData {
            epoch,
            actions: BTreeMap::new(),
            stragglers: 0,
            marks: BTreeSet::new(),
        }
    }

    /// All actions merged into one, marks left out (each operation counts once).
    pub fn total(&self) -> ActionData {
        let mut total = ActionData::new();
        for (_, a) in self
            .actions
            .iter()
            .filter(|(n, _)| !self.marks.contains(*n))
        {
            // Infallible: values beyond the range (only in hand-made data) are clamped.
            total.merge_unchecked(a);
        }
        total
    }

    /// Adds `other` to `self`, action by action (actions only in `other` are added);
    /// stragglers add up and `self.epoch` is kept (the epochs of different processes are
    /// independent counters).
    ///
    /// Fails, changing nothing, if a histogram of `other` does not fit the matching one of
    /// `self` (see [`ActionData::merge`]).
    pub fn merge(&mut self, other: &StepData) -> Result<(), RecorderError> {
        for (name, theirs) in &other.actions {
            if let Some(ours) = self.actions.get(name) {
                ours.check_merge(theirs, name)?;
            }
        }
        for (name, theirs) in &other.actions {
            match self.actions.get_mut(name) {
                Some(ours) => ours.merge_unchecked(theirs),
                None => {
                    self.actions.insert(name.clone(), theirs.clone());
                }
            }
        }
        self.stragglers = self.stragglers.saturating_add(other.stragglers);
        self.marks.extend(other.marks.iter().cloned());
        Ok(())
    }

    /// The serialized form: versioned JSON with histograms as base64 of their HdrHistogram
    /// V2 + deflate encoding (see the module doc).
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecorderError> {
        let mut actions = BTreeMap::new();
        let mut buf = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut encode = |h: &Histogram<u64>, what: String| {
            buf.clear();
            serializer
                .serialize(h, &mut buf)
                .map_err(|e| RecorderError::Encode {
                    what,
                    reason: e.to_string(),
                })?;
            Ok::<_, RecorderError>(base64::engine::general_purpose::STANDARD.encode(&buf))
        };
        for (name, a) in &self.actions {
            actions.insert(
                name.clone(),
                WireAction {
                    ok: a.ok,
                    errors: a.errors.clone(),
                    late: a.late,
                    dropped: a.dropped,
                    latency: encode(&a.latency, format!("latency histogram of action {name:?}"))?,
                    service: encode(&a.service, format!("service histogram of action {name:?}"))?,
                    raw_latency_us: a.raw_latency_us.clone(),
                },
            );
        }
        let wire = WireStep {
            format: STEP_DATA_FORMAT.to_string(),
            schema: STEP_DATA_SCHEMA,
            epoch: self.epoch.0,
            stragglers: self.stragglers,
            actions,
            marks: self.marks.clone(),
        };
        serde_json::to_vec(&wire).map_err(|e| RecorderError::Encode {
            what: "step data".into(),
            reason: e.to_string(),
        })
    }

    /// Reads what [`StepData::to_bytes`] wrote. Checks everything, the histogram encodings
    /// included; on bad input returns an error naming where and what is wrong.
    pub fn from_bytes(b: &[u8]) -> Result<StepData, RecorderError> {
        if b.len() > MAX_STEP_DATA_BYTES {
            return Err(RecorderError::TooLarge {
                len: b.len(),
                max: MAX_STEP_DATA_BYTES,
            });
        }
        // First the envelope, so that a file of another kind or version gets a clear message.
        let head: WireHead = serde_json::from_slice(b).map_err(|e| {
            decode_err(
                "(document)",
                format!("not a JSON object with \"format\" and \"schema\" fields: {e}"),
            )
        })?;
        match head.format.as_deref() {
            Some(STEP_DATA_FORMAT) => {}
            Some(other) => {
                return Err(decode_err(
                    "format",
                    format!("found {other:?}, expected {STEP_DATA_FORMAT:?}"),
                ))
            }
            None => {
                return Err(decode_err(
                    "format",
                    format!("missing, expected {STEP_DATA_FORMAT:?}"),
                ))
            }
        }
        match head.schema {
            Some(s) if s == u64::from(STEP_DATA_SCHEMA) => {}
            Some(s) => {
                return Err(decode_err(
                    "schema",
                    format!("found version {s}, expected {STEP_DATA_SCHEMA}"),
                ))
            }
            None => {
                return Err(decode_err(
                    "schema",
                    format!("missing, expected {STEP_DATA_SCHEMA}"),
                ))
            }
        }
        let de = &mut serde_json::Deserializer::from_slice(b);
        let wire: WireStep = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            decode_err(at, e.into_inner().to_string())
        })?;
        let mut actions = BTreeMap::new();
        for (name, w) in wire.actions {
            let at = |field: &str| format!("actions.{name}.{field}");
            let latency = decode_histogram(&w.latency).map_err(|r| decode_err(at("latency"), r))?;
            let service = decode_histogram(&w.service).map_err(|r| decode_err(at("service"), r))?;
            if w.raw_latency_us.len() as u64 > latency.len() {
                return Err(decode_err(
                    at("raw_latency_us"),
                    format!(
                        "{} raw values, more than the {} the latency histogram holds",
                        w.raw_latency_us.len(),
                        latency.len()
                    ),
                ));
            }
            actions.insert(
                name,
                ActionData {
                    latency,
                    service,
                    ok: w.ok,
                    errors: w.errors,
                    late: w.late,
                    dropped: w.dropped,
                    raw_latency_us: w.raw_latency_us,
                },
            );
        }
        if let Some(name) = wire.marks.iter().find(|m| !actions.contains_key(*m)) {
            return Err(decode_err(
                "marks",
                format!("mark {name:?} is not one of the actions"),
            ));
        }
        Ok(StepData {
            epoch: Epoch(wire.epoch),
            actions,
            stragglers: wire.stragglers,
            marks: wire.marks,
        })
    }
}

#[derive(Deserialize)]
struct WireHead {
    format: Option<String>,
    schema: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStep {
    format: String,
    schema: u32,
    epoch: u64,
    stragglers: u64,
    actions: BTreeMap<String, WireAction>,
    /// Absent in data written before marks existed: none.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    marks: BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAction {
    ok: u64,
    errors: BTreeMap<String, u64>,
    late: u64,
    dropped: u64,
    latency: String,
    service: String,
    /// Only when the recorder kept a raw log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    raw_latency_us: Vec<u64>,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Decodes a base64 V2 + deflate histogram, after checking everything the `hdrhistogram`
/// deserializer trusts: the sizes it allocates, the range, and the count encoding (an
/// encoded `i64::MIN` would overflow a negation inside it).
/// A µs histogram as the serialized form writes one: base64 of its V2 + deflate encoding
/// (for histograms that travel beside step data, like a generator's issue lateness).
pub fn histogram_to_base64(h: &Histogram<u64>) -> Result<String, RecorderError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| RecorderError::Encode {
            what: "histogram".into(),
            reason: e.to_string(),
        })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&buf))
}

/// Reads what [`histogram_to_base64`] wrote, with every check [`StepData::from_bytes`]
/// makes of a histogram; the error says what is wrong.
pub fn histogram_from_base64(b64: &str) -> Result<Histogram<u64>, String> {
    decode_histogram(b64)
}

fn decode_histogram(b64: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("invalid base64: {e}"))?;
    check_v2_deflate(&bytes)?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("invalid histogram encoding: {e}"))?;
    let top = h.highest_equivalent(MAX_VALUE_US);
    if h.max() > top {
        return Err(format!(
            "histogram holds a value of {} µs: expected at most {MAX_VALUE_US}",
            h.max()
        ));
    }
    Ok(h)
}

fn check_v2_deflate(bytes: &[u8]) -> Result<(), String> {
    let cookie = be_u32(bytes, 0).ok_or("histogram encoding shorter than its 8-byte header")?;
    if cookie != V2_DEFLATE_COOKIE {
        return Err(format!(
            "histogram encoding starts with {cookie:#010x}: expected the V2 + deflate cookie \
             {V2_DEFLATE_COOKIE:#010x}"
        ));
    }
    let compressed_len =
        be_u32(bytes, 4).ok_or("histogram encoding shorter than its 8-byte header")? as usize;
    let compressed = bytes.get(8..).unwrap_or_default();
    if compressed_len > compressed.len() {
        return Err(format!(
            "histogram encoding truncated: header announces {compressed_len} compressed bytes, \
             {} present",
            compressed.len()
        ));
    }
    let limit = V2_HEADER_BYTES + MAX_HISTOGRAM_PAYLOAD_BYTES;
    let mut inner = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..compressed_len])
        .take(limit as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|e| format!("histogram encoding does not inflate: {e}"))?;
    if inner.len() > limit {
        return Err(format!(
            "histogram encoding inflates to more than {limit} bytes"
        ));
    }
    let short = || {
        format!(
            "inflated histogram is {} bytes, shorter than its header",
            inner.len()
        )
    };
    let inner_cookie = be_u32(&inner, 0).ok_or_else(short)?;
    let payload_len = be_u32(&inner, 4).ok_or_else(short)? as usize;
    let offset = be_u32(&inner, 8).ok_or_else(short)?;
    let digits = be_u32(&inner, 12).ok_or_else(short)?;
    let low = be_u64(&inner, 16).ok_or_else(short)?;
    let high = be_u64(&inner, 24).ok_or_else(short)?;
    let ratio = f64::from_bits(be_u64(&inner, 32).ok_or_else(short)?);
    if inner_cookie != V2_COOKIE {
        return Err(format!(
            "inflated histogram starts with {inner_cookie:#010x}: expected the V2 cookie \
             {V2_COOKIE:#010x}"
        ));
    }
    if offset != 0 || ratio != 1.0 {
        return Err(format!(
            "histogram has normalizing offset {offset} and ratio {ratio}: expected 0 and 1"
        ));
    }
    if (low, high, digits) != (1, MAX_VALUE_US, u32::from(SIGFIG)) {
        return Err(format!(
            "histogram covers {low}..={high} at {digits} digits: expected 1..={MAX_VALUE_US} at \
             {SIGFIG} digits"
        ));
    }
    let payload = inner
        .get(V2_HEADER_BYTES..V2_HEADER_BYTES.saturating_add(payload_len))
        .ok_or_else(|| {
            format!(
                "histogram truncated: header announces {payload_len} payload bytes, {} present",
                inner.len().saturating_sub(V2_HEADER_BYTES)
            )
        })?;
    // The counts: zig-zag LEB128 varints of at most 9 bytes (the 9th holds 8 bits); a
    // negative number is a run of zero counts.
    let slots = micros_histogram().distinct_values();
    let mut index: usize = 0;
    let mut at = 0;
    while at < payload.len() {
        let mut value: u64 = 0;
        let mut i = 0;
        loop {
            let Some(&b) = payload.get(at + i) else {
                return Err("histogram counts end in the middle of a number".into());
            };
            if i == 8 {
                value |= u64::from(b) << 56;
                i += 1;
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        at += i;
        let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
        if n < 0 {
            let zeros = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
            index = index.saturating_add(zeros);
        } else {
            index = index.saturating_add(1);
        }
        if index > slots {
            return Err(format!(
                "histogram counts run past the {slots} slots of its range"
            ));
        }
    }
    Ok(())
}

/// One action's data within one shard.
#[derive(Debug)]
struct ShardAction {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    /// At most `MAX_ERROR_KINDS + 1` entries (the last one [`OTHER_ERROR_KIND`]); kinds with
    /// a count of 0 were seen in the previous step and are kept to avoid allocating again.
    errors: Vec<(Box<str>, u64)>,
    late: u64,
    dropped: u64,
    /// The raw latency log of this step, at most the recorder's `raw_cap` values.
    raw: Vec<u64>,
}

impl ShardAction {
    fn new() -> ShardAction {
        ShardAction {
            latency: growing_histogram(),
            service: growing_histogram(),
            ok: 0,
            errors: Vec::new(),
            late: 0,
            dropped: 0,
            raw: Vec::new(),
        }
    }

    #[inline]
    fn count_error(&mut self, kind: &str) {
        let kind = truncate_kind(kind);
        if let Some((_, c)) = self.errors.iter_mut().find(|(k, _)| &**k == kind) {
            *c = c.saturating_add(1);
            return;
        }
        let kind = if self.errors.len() < MAX_ERROR_KINDS {
            kind
        } else {
            if let Some((_, c)) = self
                .errors
                .iter_mut()
                .find(|(k, _)| &**k == OTHER_ERROR_KIND)
            {
                *c = c.saturating_add(1);
                return;
            }
            OTHER_ERROR_KIND
        };
        self.errors.push((kind.into(), 1));
    }

    /// Empties the data, keeping the histograms' size and the error kinds seen in the last
    /// step.
    fn clear(&mut self) {
        self.latency.reset();
        self.service.reset();
        self.ok = 0;
        self.errors.retain(|(_, c)| *c > 0);
        for (_, c) in &mut self.errors {
            *c = 0;
        }
        self.late = 0;
        self.dropped = 0;
        self.raw.clear();
    }
}

/// The state of one shard; see the module doc for the protocol.
#[derive(Debug)]
struct Shard {
    /// The epoch whose events `live` holds.
    epoch: u64,
    /// Per action, indexed by `ActionId`.
    live: Vec<ShardAction>,
    /// Cleared data swapped in at the next reset (empty while a reset is merging it).
    spare: Vec<ShardAction>,
    /// Events of an epoch other than `epoch` that arrived since the last reset.
    stragglers: u64,
}

/// A shard on cache lines of its own, so that recording on one never slows another.
#[repr(align(128))]
struct Slot(Mutex<Shard>);

fn shard_actions(n: usize) -> Vec<ShardAction> {
    (0..n).map(|_| ShardAction::new()).collect()
}

/// Per-action latency histograms and counters, recorded into by many threads and tasks at
/// once and reset exactly between steps. Share it as `Arc<Recorder>`; see the module doc.
pub struct Recorder {
    names: Vec<String>,
    /// The current epoch; written only by `reset`, under `control`, after every shard moved.
    epoch: AtomicU64,
    shards: Box<[Slot]>,
    /// Serializes `reset` and `peek`.
    control: Mutex<()>,
    /// Events whose `ActionId` is not one of this recorder's.
    unknown: AtomicU64,
    /// The names of the actions that are marks (see [`StepData::marks`]).
    marks: BTreeSet<String>,
    /// Raw latency values kept per shard, action and step (0: none).
    raw_cap: usize,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("actions", &self.names)
            .field("shards", &self.shards.len())
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder of the given actions, with `shards` independently locked shards (give each
    /// recording thread or task its own `shard_hint`, e.g. its index).
    ///
    /// Fails on an empty list, an empty or repeated name, more than [`MAX_ACTIONS`] names,
    /// or `shards` outside `1..=MAX_SHARDS`.
    pub fn new(actions: &[&str], shards: usize) -> Result<Recorder, RecorderError> {
        if actions.is_empty() {
            return Err(RecorderError::NoActions);
        }
        if actions.len() > MAX_ACTIONS {
            return Err(RecorderError::TooManyActions {
                count: actions.len(),
                max: MAX_ACTIONS,
            });
        }
        if shards == 0 || shards > MAX_SHARDS {
            return Err(RecorderError::InvalidShards {
                shards,
                max: MAX_SHARDS,
            });
        }
        for (index, name) in actions.iter().enumerate() {
            if name.is_empty() {
                return Err(RecorderError::EmptyActionName { index });
            }
            if actions[..index].contains(name) {
                return Err(RecorderError::DuplicateAction {
                    name: name.to_string(),
                });
            }
        }
        let slots = (0..shards)
            .map(|_| {
                Slot(Mutex::new(Shard {
                    epoch: 0,
                    live: shard_actions(actions.len()),
                    spare: shard_actions(actions.len()),
                    stragglers: 0,
                }))
            })
            .collect();
        Ok(Recorder {
            names: actions.iter().map(|s| s.to_string()).collect(),
            epoch: AtomicU64::new(0),
            shards: slots,
            control: Mutex::new(()),
            unknown: AtomicU64::new(0),
            marks: BTreeSet::new(),
            raw_cap: 0,
        })
    }

    /// Also keeps every latency value as recorded, at most `cap_per_shard` per shard, action
    /// and step, in [`ActionData::raw_latency_us`] (0: no raw log, the default). For checks
    /// of the histograms' merge and encoding against the samples themselves; it costs a
    /// push per sample and 8 bytes per value, so the bound also bounds its memory.
    pub fn with_raw_log(mut self, cap_per_shard: usize) -> Recorder {
        self.raw_cap = cap_per_shard;
        self
    }

    /// Declares `marks` (indices into the actions) to be marks: second latencies of other
    /// actions' operations, kept out of [`StepData::total`]. Fails on an index that is not
    /// an action, or if every action would be a mark.
    pub fn with_marks(mut self, marks: &[ActionId]) -> Result<Recorder, RecorderError> {
        for m in marks {
            let Some(name) = self.names.get(m.0) else {
                return Err(RecorderError::UnknownMark {
                    index: m.0,
                    actions: self.names.len(),
                });
            };
            self.marks.insert(name.clone());
        }
        if self.marks.len() == self.names.len() {
            return Err(RecorderError::AllMarks);
        }
        Ok(self)
    }

    /// The names of the actions that are marks.
    pub fn marks(&self) -> &BTreeSet<String> {
        &self.marks
    }

    /// The id of the action called `name`.
    pub fn action(&self, name: &str) -> Option<ActionId> {
        self.names.iter().position(|n| n == name).map(ActionId)
    }

    /// The action names, in `ActionId` order.
    pub fn actions(&self) -> &[String] {
        &self.names
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The current step. The generator reads it when it *schedules* an operation and passes
    /// it to `record*` when the operation completes.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Events recorded with an `ActionId` that is not one of this recorder's (ignored).
    pub fn unknown_actions(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Runs `f` on the data of `action` in shard `shard_hint % shards` if that shard is at
    /// `epoch`; otherwise counts a straggler.
    #[inline]
    fn with_action(
        &self,
        shard_hint: usize,
        epoch: Epoch,
        action: ActionId,
        f: impl FnOnce(&mut ShardAction),
    ) {
        // `shards` is never empty (checked in `new`), so neither `%` nor `get` fails.
        let Some(slot) = self.shards.get(shard_hint % self.shards.len()) else {
            return;
        };
        let mut shard = lock(&slot.0);
        if shard.epoch != epoch.0 {
            shard.stragglers = shard.stragglers.saturating_add(1);
            return;
        }
        match shard.live.get_mut(action.0) {
            Some(a) => f(a),
            None => {
                drop(shard);
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records a completed operation scheduled in `epoch` (an older epoch: counted as a
    /// straggler only). Locks only shard `shard_hint % shards`.
    #[inline]
    pub fn record(&self, shard_hint: usize, epoch: Epoch, sample: &Sample<'_>) {
        let raw_cap = self.raw_cap;
        self.with_action(shard_hint, epoch, sample.action, |a| {
            record_value(&mut a.latency, sample.latency_us);
            if a.raw.len() < raw_cap {
                a.raw.push(sample.latency_us.clamp(1, MAX_VALUE_US));
            }
            record_value(&mut a.service, sample.service_us);
            match sample.error {
                None => a.ok = a.ok.saturating_add(1),
                Some(kind) => a.count_error(kind),
            }
        });
    }

    /// Counts an operation scheduled in `epoch` that started later than its intended time by
    /// more than the generator's slack. (Its completion is recorded by [`Recorder::record`].)
    pub fn record_late(&self, shard_hint: usize, epoch: Epoch, action: ActionId) {
        self.with_action(shard_hint, epoch, action, |a| {
            a.late = a.late.saturating_add(1)
        });
    }

    /// Counts an operation scheduled in `epoch` that never started (in-flight limit reached).
    pub fn record_dropped(&self, shard_hint: usize, epoch: Epoch, action: ActionId) {
        self.with_action(shard_hint, epoch, action, |a| {
            a.dropped = a.dropped.saturating_add(1)
        });
    }

    fn empty_step(&self) -> Vec<ActionData> {
        self.names.iter().map(|_| ActionData::new()).collect()
    }

    fn step_data(&self, epoch: u64, data: Vec<ActionData>, stragglers: u64) -> StepData {
        StepData {
            epoch: Epoch(epoch),
            actions: self.names.iter().cloned().zip(data).collect(),
            stragglers,
            marks: self.marks.clone(),
        }
    }

    /// Closes the current step: advances the epoch and returns exactly what was recorded in
    /// the old one (see the module doc for the rule and why it is exact).
    pub fn reset(&self) -> StepData {
        let _control = lock(&self.control);
        let old = self.epoch.load(Ordering::Relaxed);
        let new = old.wrapping_add(1);
        let mut data = self.empty_step();
        let mut stragglers = 0u64;
        for slot in self.shards.iter() {
            let (mut taken, s) = {
                let mut shard = lock(&slot.0);
                let next = if shard.spare.len() == self.names.len() {
                    std::mem::take(&mut shard.spare)
                } else {
                    // Only after a panic in the middle of a reset.
                    shard_actions(self.names.len())
                };
                let taken = std::mem::replace(&mut shard.live, next);
                shard.epoch = new;
                (taken, std::mem::take(&mut shard.stragglers))
            };
            stragglers = stragglers.saturating_add(s);
            for (out, a) in data.iter_mut().zip(taken.iter_mut()) {
                out.absorb(a);
                a.clear();
            }
            lock(&slot.0).spare = taken;
        }
        self.epoch.store(new, Ordering::Release);
        self.step_data(old, data, stragglers)
    }

    /// What the current step holds so far, without closing it.
    pub fn peek(&self) -> StepData {
        let _control = lock(&self.control);
        let epoch = self.epoch.load(Ordering::Relaxed);
        let mut data = self.empty_step();
        let mut stragglers = 0u64;
        for slot in self.shards.iter() {
            let shard = lock(&slot.0);
            stragglers = stragglers.saturating_add(shard.stragglers);
            for (out, a) in data.iter_mut().zip(shard.live.iter()) {
                out.absorb(a);
            }
        }
        self.step_data(epoch, data, stragglers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::Arc;

    fn ok(action: ActionId, latency_us: u64) -> Sample<'static> {
        Sample {
            action,
            latency_us,
            service_us: latency_us / 2,
            error: None,
        }
    }

    fn failed(action: ActionId, latency_us: u64, kind: &str) -> Sample<'_> {
        Sample {
            action,
            latency_us,
            service_us: latency_us,
            error: Some(kind),
        }
    }

    /// Deterministic xorshift for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn a_raw_log_keeps_every_value_as_recorded_up_to_its_bound_and_travels() {
        let r = Recorder::new(&["op"], 1).unwrap().with_raw_log(3);
        let e = r.epoch();
        for v in [0u64, 250, 9_000, MAX_VALUE_US + 5] {
            r.record(
                0,
                e,
                &Sample {
                    action: ActionId(0),
                    latency_us: v,
                    service_us: v,
                    error: None,
                },
            );
        }
        let step = r.reset();
        let a = &step.actions["op"];
        // Clamped as the histogram clamps; the fourth value is past the bound.
        assert_eq!(a.raw_latency_us, [1, 250, 9_000]);
        assert!(a.raw_histogram().is_none(), "a cut log is not comparable");
        let back = StepData::from_bytes(&step.to_bytes().unwrap()).unwrap();
        assert_eq!(back, step);
        // Without a raw log nothing is kept and the wire form has no such field.
        let plain = Recorder::new(&["op"], 1).unwrap();
        let bytes = plain.reset().to_bytes().unwrap();
        assert!(!String::from_utf8(bytes).unwrap().contains("raw_latency_us"));
        // A complete log gives the same histogram as the recorder's.
        let r = Recorder::new(&["op"], 2).unwrap().with_raw_log(100);
        let e = r.epoch();
        for (i, v) in [5u64, 70, 70, 1_234].into_iter().enumerate() {
            r.record(
                i,
                e,
                &Sample {
                    action: ActionId(0),
                    latency_us: v,
                    service_us: v,
                    error: None,
                },
            );
        }
        let a = r.reset().actions["op"].clone();
        assert_eq!(a.raw_histogram().unwrap(), a.latency);
    }

    #[test]
    fn constant_histograms_are_valid() {
        let h = micros_histogram();
        assert_eq!((h.low(), h.high(), h.sigfig()), (1, MAX_VALUE_US, SIGFIG));
        assert!(!h.is_auto_resize());
        let g = growing_histogram();
        assert!(g.is_auto_resize());
        assert_eq!(g.sigfig(), SIGFIG);
        // The sizes the module doc quotes: 16 KiB growing to 184 KiB.
        assert_eq!(g.distinct_values() * 8, 16 << 10);
        assert_eq!(h.distinct_values() * 8, 184 << 10);
    }

    #[test]
    fn recorder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Recorder>();
        check::<StepData>();
    }

    #[test]
    fn new_rejects_bad_arguments() {
        assert!(matches!(
            Recorder::new(&[], 1),
            Err(RecorderError::NoActions)
        ));
        assert!(matches!(
            Recorder::new(&["a", ""], 1),
            Err(RecorderError::EmptyActionName { index: 1 })
        ));
        let e = Recorder::new(&["a", "b", "a"], 1).unwrap_err();
        assert!(matches!(e, RecorderError::DuplicateAction { ref name } if name == "a"));
        assert!(e.to_string().contains("\"a\""), "{e}");
        for shards in [0, MAX_SHARDS + 1] {
            let e = Recorder::new(&["a"], shards).unwrap_err();
            assert!(matches!(e, RecorderError::InvalidShards { .. }));
            assert!(e.to_string().contains(&shards.to_string()), "{e}");
        }
        let many: Vec<String> = (0..=MAX_ACTIONS).map(|i| format!("a{i}")).collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        assert!(matches!(
            Recorder::new(&many, 1),
            Err(RecorderError::TooManyActions { .. })
        ));
        let r = Recorder::new(&["get", "put"], MAX_SHARDS).unwrap();
        assert_eq!(r.shards(), MAX_SHARDS);
        assert_eq!(r.actions(), ["get", "put"]);
        assert_eq!(r.action("put"), Some(ActionId(1)));
        assert_eq!(r.action("del"), None);
        assert_eq!(r.epoch(), Epoch(0));
    }

    #[test]
    fn records_counts_and_resets_exactly() {
        let r = Recorder::new(&["get", "put"], 3).unwrap();
        let (get, put) = (ActionId(0), ActionId(1));
        let e = r.epoch();
        for i in 0..100u64 {
            r.record(i as usize, e, &ok(get, 1000 + i));
        }
        r.record(5, e, &failed(get, 5_000, "timeout"));
        r.record(6, e, &failed(get, 7_000, "timeout"));
        r.record(7, e, &failed(put, 100, "overload"));
        r.record_late(8, e, get);
        r.record_dropped(9, e, put);
        r.record_dropped(10, e, put);

        let s = r.reset();
        assert_eq!(s.epoch, Epoch(0));
        assert_eq!(r.epoch(), Epoch(1));
        assert_eq!(s.stragglers, 0);
        let g = &s.actions["get"];
        assert_eq!(
            (g.ok, g.error_count(), g.timeouts(), g.completed()),
            (100, 2, 2, 102)
        );
        assert_eq!(g.latency.len(), 102);
        assert_eq!(g.service.len(), 102);
        assert_eq!((g.late, g.dropped), (1, 0));
        let p = &s.actions["put"];
        assert_eq!((p.ok, p.timeouts(), p.error_count()), (0, 0, 1));
        assert_eq!(p.errors["overload"], 1);
        assert_eq!((p.late, p.dropped), (0, 2));
        let t = s.total();
        assert_eq!((t.completed(), t.late, t.dropped), (103, 1, 2));
        assert_eq!(t.latency.len(), 103);

        // The next step starts empty, and the one after that too (spares are reused).
        for expect in [1, 2] {
            let s = r.reset();
            assert_eq!(s.epoch, Epoch(expect));
            assert_eq!(s.actions.len(), 2);
            assert!(s.actions.values().all(|a| a.completed() == 0
                && a.latency.is_empty()
                && a.errors.is_empty()
                && a.late == 0
                && a.dropped == 0));
        }
    }

    #[test]
    fn steps_after_reuse_hold_only_their_own_samples() {
        let r = Recorder::new(&["a"], 2).unwrap();
        let a = ActionId(0);
        for step in 0..5u64 {
            let e = r.epoch();
            for i in 0..=step {
                r.record(i as usize, e, &ok(a, 10u64.pow(step as u32 + 1) + i));
                r.record(
                    0,
                    e,
                    &failed(a, 3, if step % 2 == 0 { "even" } else { "odd" }),
                );
            }
            let s = r.reset();
            let d = &s.actions["a"];
            assert_eq!(d.ok, step + 1);
            assert_eq!(d.error_count(), step + 1);
            assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
            assert_eq!(d.latency.len(), 2 * (step + 1));
            assert_eq!(d.latency.min(), 3);
            assert!(d.latency.max() >= 10u64.pow(step as u32 + 1));
        }
    }

    #[test]
    fn peek_shows_the_open_step_without_closing_it() {
        let r = Recorder::new(&["a"], 2).unwrap();
        let e = r.epoch();
        r.record(0, e, &ok(ActionId(0), 10));
        r.record(1, e, &ok(ActionId(0), 20));
        let p = r.peek();
        assert_eq!(p.epoch, Epoch(0));
        assert_eq!(p.actions["a"].ok, 2);
        assert_eq!(r.epoch(), Epoch(0));
        r.record(1, e, &ok(ActionId(0), 30));
        let s = r.reset();
        assert_eq!(s.actions["a"].ok, 3);
        assert_eq!(s.actions["a"].latency.len(), 3);
    }

    #[test]
    fn an_old_epoch_counts_as_a_straggler_only() {
        let r = Recorder::new(&["a"], 2).unwrap();
        let old = r.epoch();
        r.record(0, old, &ok(ActionId(0), 10));
        let s0 = r.reset();
        assert_eq!(s0.actions["a"].ok, 1);
        r.record(0, old, &ok(ActionId(0), 10));
        r.record_late(1, old, ActionId(0));
        r.record_dropped(1, old, ActionId(0));
        // An epoch that was never current is not recorded either.
        r.record(1, Epoch(99), &ok(ActionId(0), 10));
        let new = r.epoch();
        r.record(1, new, &ok(ActionId(0), 20));
        let s1 = r.reset();
        assert_eq!(s1.stragglers, 4);
        let a = &s1.actions["a"];
        assert_eq!((a.ok, a.late, a.dropped, a.latency.len()), (1, 0, 0, 1));
        assert_eq!(a.latency.min(), 20);
        assert_eq!(r.reset().stragglers, 0);
    }

    #[test]
    fn unknown_actions_are_ignored_and_counted() {
        let r = Recorder::new(&["a"], 1).unwrap();
        let e = r.epoch();
        r.record(0, e, &ok(ActionId(1), 10));
        r.record_late(0, e, ActionId(usize::MAX));
        r.record_dropped(usize::MAX, e, ActionId(7));
        assert_eq!(r.unknown_actions(), 3);
        let s = r.reset();
        assert_eq!(s.total().completed(), 0);
        assert_eq!(s.stragglers, 0);
    }

    #[test]
    fn extreme_values_are_clamped_not_panicking() {
        let r = Recorder::new(&["a"], 1).unwrap();
        let e = r.epoch();
        for v in [0, 1, MAX_VALUE_US, MAX_VALUE_US + 1, u64::MAX] {
            r.record(
                usize::MAX,
                e,
                &Sample {
                    action: ActionId(0),
                    latency_us: v,
                    service_us: v,
                    error: None,
                },
            );
        }
        let s = r.reset();
        let a = &s.actions["a"];
        assert_eq!(a.latency.len(), 5);
        assert_eq!(a.latency.min(), 1);
        assert_eq!(a.latency.count_at(1), 2);
        assert!(a.latency.max() <= a.latency.highest_equivalent(MAX_VALUE_US));
        assert!(a.latency.max() >= MAX_VALUE_US);
        // And it survives serialization.
        let back = StepData::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn error_kinds_are_bounded_and_cut() {
        let r = Recorder::new(&["a"], 1).unwrap();
        let e = r.epoch();
        for i in 0..100 {
            r.record(0, e, &failed(ActionId(0), 5, &format!("kind{i}")));
        }
        // "é" is two bytes; the cut must fall on a character boundary.
        let long = format!("x{}", "é".repeat(100));
        r.record(0, e, &failed(ActionId(0), 5, &long));
        r.record(0, e, &failed(ActionId(0), 5, ""));
        let s = r.reset();
        let a = &s.actions["a"];
        assert_eq!(a.error_count(), 102);
        assert_eq!(a.errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(a.errors[OTHER_ERROR_KIND], 102 - MAX_ERROR_KINDS as u64);
        assert_eq!(truncate_kind(&long).len(), MAX_ERROR_KIND_BYTES - 1);
        assert!(long.starts_with(truncate_kind(&long)));
        assert_eq!(truncate_kind("timeout"), "timeout");
    }

    #[test]
    fn summary_of_known_values() {
        let r = Recorder::new(&["a"], 4).unwrap();
        let e = r.epoch();
        for v in 1..=1000u64 {
            let s = if v % 10 == 0 {
                failed(ActionId(0), v * 1000, "timeout")
            } else {
                ok(ActionId(0), v * 1000)
            };
            r.record(v as usize, e, &s);
        }
        let sum = r.reset().actions["a"].summary(10.0);
        assert_eq!((sum.count, sum.ok, sum.errors), (1000, 900, 100));
        assert_eq!(sum.rate_per_s, 100.0);
        assert_eq!(sum.error_rate, 0.1);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        assert!(close(sum.p50_ms, 500.0), "{sum:?}");
        assert!(close(sum.p90_ms, 900.0), "{sum:?}");
        assert!(close(sum.p95_ms, 950.0), "{sum:?}");
        assert!(close(sum.p99_ms, 990.0), "{sum:?}");
        assert!(close(sum.p999_ms, 999.0), "{sum:?}");
        assert!(close(sum.max_ms, 1000.0), "{sum:?}");
        assert!(
            close(sum.service_p50_ms, 250.0) || sum.service_p50_ms > 249.0,
            "{sum:?}"
        );
        assert!(sum.service_p99_ms <= sum.p99_ms, "{sum:?}");
    }

    #[test]
    fn summary_of_empty_data_and_bad_windows_is_zero() {
        let empty = ActionData::new().summary(1.0);
        assert_eq!(empty.count, 0);
        assert_eq!(empty.error_rate, 0.0);
        assert_eq!(empty.p99_ms, 0.0);
        assert_eq!(empty.max_ms, 0.0);
        let mut d = ActionData::new();
        d.ok = 10;
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(d.summary(w).rate_per_s, 0.0);
        }
        assert!(serde_json::to_string(&d.summary(f64::NAN)).is_ok());
    }

    #[test]
    fn merged_serialized_steps_equal_recording_everything_in_one() {
        // Two "processes" and one recorder that sees all samples.
        let names = ["get", "put", "scan"];
        let p1 = Recorder::new(&names, 3).unwrap();
        let p2 = Recorder::new(&names, 2).unwrap();
        let all = Recorder::new(&names, 1).unwrap();
        let kinds = ["timeout", "overload", "io"];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for i in 0..20_000usize {
            let x = rng.next();
            let action = ActionId((x % 2) as usize); // "scan" stays empty
            let latency_us = match x % 5 {
                0 => x >> 30, // up to hours: clamped
                1 => (x >> 40) % 2_000_000,
                _ => (x >> 20) % 5_000,
            };
            let error = (x % 13 == 0).then(|| kinds[(x >> 8) as usize % 3]);
            let s = Sample {
                action,
                latency_us,
                service_us: latency_us / 3,
                error,
            };
            let p = if i % 3 == 0 { &p1 } else { &p2 };
            p.record(i, p.epoch(), &s);
            all.record(0, all.epoch(), &s);
            if x % 17 == 0 {
                p.record_late(i, p.epoch(), action);
                all.record_late(0, all.epoch(), action);
            }
            if x % 19 == 0 {
                p.record_dropped(i, p.epoch(), action);
                all.record_dropped(0, all.epoch(), action);
            }
        }
        let b1 = p1.reset().to_bytes().unwrap();
        let b2 = p2.reset().to_bytes().unwrap();
        let mut merged = StepData::new(Epoch(0));
        merged.merge(&StepData::from_bytes(&b1).unwrap()).unwrap();
        merged.merge(&StepData::from_bytes(&b2).unwrap()).unwrap();
        let want = all.reset();
        assert_eq!(merged, want);
        assert_eq!(merged.total(), want.total());
        assert_eq!(
            merged.actions["get"].summary(1.0),
            want.actions["get"].summary(1.0)
        );
        assert_eq!(
            want.total().completed(),
            20_000,
            "every sample is in the reference"
        );
    }

    #[test]
    fn step_merge_adds_missing_actions_and_keeps_epoch() {
        let a = Recorder::new(&["x"], 1).unwrap();
        let b = Recorder::new(&["y", "x"], 1).unwrap();
        a.record(0, a.epoch(), &ok(ActionId(0), 10));
        b.record(0, b.epoch(), &ok(ActionId(0), 20));
        b.record(0, b.epoch(), &ok(ActionId(1), 30));
        b.record(0, Epoch(7), &ok(ActionId(1), 30));
        let mut sa = a.reset();
        let _ = a.reset();
        let sb = b.reset();
        sa.epoch = Epoch(3);
        sa.merge(&sb).unwrap();
        assert_eq!(sa.epoch, Epoch(3));
        assert_eq!(sa.actions["x"].ok, 2);
        assert_eq!(sa.actions["y"].ok, 1);
        assert_eq!(sa.stragglers, 1);
    }

    #[test]
    fn merge_out_of_range_fails_and_changes_nothing() {
        let mut wide = ActionData::new();
        wide.latency = Histogram::new_with_bounds(1, 100 * MAX_VALUE_US, 3).unwrap();
        wide.latency.record(10 * MAX_VALUE_US).unwrap();
        wide.ok = 1;
        let mut d = ActionData::new();
        d.ok = 5;
        let before = d.clone();
        let e = d.merge(&wide).unwrap_err();
        assert!(e.to_string().contains("latency"), "{e}");
        assert_eq!(d, before);
        let mut step = StepData::new(Epoch(0));
        step.actions.insert("a".into(), d.clone());
        let mut other = StepData::new(Epoch(0));
        other.actions.insert("a".into(), wide.clone());
        other.stragglers = 3;
        let step_before = step.clone();
        assert!(step.merge(&other).is_err());
        assert_eq!(step, step_before);
        // `total` clamps instead of failing.
        let t = other.total();
        assert_eq!(t.latency.len(), 1);
        assert!(t.latency.max() <= t.latency.highest_equivalent(MAX_VALUE_US));
    }

    #[test]
    fn to_bytes_round_trips_and_is_self_describing() {
        let r = Recorder::new(&["get", "put"], 2).unwrap();
        let e = r.epoch();
        r.record(0, e, &ok(ActionId(0), 1234));
        r.record(1, e, &failed(ActionId(1), 99, "timeout"));
        r.record_dropped(0, e, ActionId(1));
        let _ = r.reset();
        r.record(0, Epoch(0), &ok(ActionId(0), 1));
        let s = r.reset();
        let bytes = s.to_bytes().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["format"], STEP_DATA_FORMAT);
        assert_eq!(v["schema"], STEP_DATA_SCHEMA);
        assert_eq!(v["epoch"], 1);
        assert_eq!(v["stragglers"], 1);
        assert!(v["actions"]["get"]["latency"].is_string());
        let back = StepData::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);

        let s0 = {
            let r = Recorder::new(&["get", "put"], 2).unwrap();
            r.record(0, Epoch(0), &ok(ActionId(0), 1234));
            r.record(1, Epoch(0), &failed(ActionId(1), 99, "timeout"));
            r.record_dropped(0, Epoch(0), ActionId(1));
            r.reset()
        };
        let back = StepData::from_bytes(&s0.to_bytes().unwrap()).unwrap();
        assert_eq!(back, s0);
        assert_eq!(back.actions["put"].timeouts(), 1);
        assert_eq!(back.actions["put"].dropped, 1);
        assert_eq!(back.actions["get"].latency.count_at(1234), 1);
    }

    fn valid_bytes() -> Vec<u8> {
        let r = Recorder::new(&["get"], 1).unwrap();
        for v in [1, 10, 100, 1000, 10_000, 3_000_000] {
            r.record(0, Epoch(0), &ok(ActionId(0), v));
        }
        r.record(0, Epoch(0), &failed(ActionId(0), 7, "timeout"));
        r.reset().to_bytes().unwrap()
    }

    fn decode_error(b: &[u8]) -> String {
        match StepData::from_bytes(b) {
            Ok(_) => panic!("accepted invalid input {:?}", String::from_utf8_lossy(b)),
            Err(e) => e.to_string(),
        }
    }

    fn with_field(path: &[&str], value: serde_json::Value) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&valid_bytes()).unwrap();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn from_bytes_names_what_is_wrong() {
        let e = decode_error(b"");
        assert!(e.contains("(document)"), "{e}");
        let e = decode_error(b"\x00\xffgarbage");
        assert!(e.contains("not a JSON object"), "{e}");
        let e = decode_error(b"[1,2]");
        assert!(e.contains("(document)"), "{e}");
        let e = decode_error(&with_field(&["schema"], 2.into()));
        assert!(e.contains("schema") && e.contains("version 2"), "{e}");
        let e = decode_error(&with_field(&["format"], "suite-result".into()));
        assert!(e.contains("suite-result"), "{e}");
        let e = decode_error(br#"{"schema": 1}"#);
        assert!(e.contains("format") && e.contains("missing"), "{e}");
        let e = decode_error(&with_field(&["actions", "get", "ok"], "many".into()));
        assert!(e.contains("actions.get.ok"), "{e}");
        let e = decode_error(&with_field(&["actions", "get", "latency"], "@@@".into()));
        assert!(
            e.contains("actions.get.latency") && e.contains("base64"),
            "{e}"
        );
        let e = decode_error(&with_field(&["actions", "get", "service"], "AAAA".into()));
        assert!(e.contains("actions.get.service"), "{e}");
        let e = decode_error(&with_field(&["extra"], 1.into()));
        assert!(e.contains("extra"), "{e}");
        let big = vec![b' '; MAX_STEP_DATA_BYTES + 1];
        assert!(matches!(
            StepData::from_bytes(&big),
            Err(RecorderError::TooLarge { .. })
        ));
    }

    #[test]
    fn from_bytes_never_panics_on_truncated_or_corrupted_input() {
        let good = valid_bytes();
        for len in 0..good.len() {
            assert!(StepData::from_bytes(&good[..len]).is_err(), "prefix {len}");
        }
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.next() % 3 {
                let i = (rng.next() % b.len() as u64) as usize;
                b[i] = rng.next() as u8;
            }
            let _ = StepData::from_bytes(&b);
        }
    }

    /// A V2 + deflate encoding with the given header fields and raw counts payload.
    fn encode_raw(low: u64, high: u64, digits: u32, payload_len: u32, payload: &[u8]) -> String {
        let mut inner = Vec::new();
        inner.extend_from_slice(&V2_COOKIE.to_be_bytes());
        inner.extend_from_slice(&payload_len.to_be_bytes());
        inner.extend_from_slice(&0u32.to_be_bytes());
        inner.extend_from_slice(&digits.to_be_bytes());
        inner.extend_from_slice(&low.to_be_bytes());
        inner.extend_from_slice(&high.to_be_bytes());
        inner.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        inner.extend_from_slice(payload);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let compressed = z.finish().unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&V2_DEFLATE_COOKIE.to_be_bytes());
        out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        out.extend_from_slice(&compressed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    #[test]
    fn from_bytes_rejects_hostile_histograms() {
        let latency = |h: String| with_field(&["actions", "get", "latency"], h.into());
        // A well-formed hand-made encoding is accepted: counts 1 at index 0 and 2 at index 1.
        let fine = decode_error_or_ok(&latency(encode_raw(1, MAX_VALUE_US, 3, 2, &[2, 4])));
        assert!(fine.is_ok(), "{fine:?}");
        let h = &fine.unwrap().actions["get"].latency;
        assert_eq!((h.count_at(0), h.count_at(1)), (1, 2));

        // Zig-zag of u64::MAX is i64::MIN, whose negation overflows inside hdrhistogram.
        let min = [0xff; 9];
        let e = decode_error(&latency(encode_raw(1, MAX_VALUE_US, 3, 9, &min)));
        assert!(e.contains("slots"), "{e}");
        // A payload length far beyond the data (hdrhistogram would allocate it).
        let e = decode_error(&latency(encode_raw(1, MAX_VALUE_US, 3, u32::MAX, &[2])));
        assert!(e.contains("truncated"), "{e}");
        // Other bounds or precision.
        let e = decode_error(&latency(encode_raw(1, u64::MAX / 4, 5, 1, &[2])));
        assert!(e.contains("expected 1..=3600000000 at 3 digits"), "{e}");
        // A number cut in the middle.
        let e = decode_error(&latency(encode_raw(1, MAX_VALUE_US, 3, 1, &[0x80])));
        assert!(e.contains("middle"), "{e}");
        // Counts beyond the range.
        let mut beyond = Vec::new();
        let zeros = 30_000u64 * 2 - 1; // zig-zag of -30000
        let mut z = zeros;
        while z >= 0x80 {
            beyond.push((z as u8) | 0x80);
            z >>= 7;
        }
        beyond.push(z as u8);
        beyond.push(2);
        let e = decode_error(&latency(encode_raw(
            1,
            MAX_VALUE_US,
            3,
            beyond.len() as u32,
            &beyond,
        )));
        assert!(e.contains("slots"), "{e}");
        // Inflates to a lot: rejected without inflating it all.
        let huge = vec![0u8; 4 << 20];
        let e = decode_error(&latency(encode_raw(
            1,
            MAX_VALUE_US,
            3,
            huge.len() as u32,
            &huge,
        )));
        assert!(e.contains("inflates to more than"), "{e}");
        // Wrong cookies, short headers.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let e = decode_error(&latency(b64(&[0x1c, 0x84, 0x93, 0x13, 0, 0, 0, 0])));
        assert!(e.contains("cookie"), "{e}");
        let e = decode_error(&latency(b64(&[0x1c, 0x84])));
        assert!(e.contains("header"), "{e}");
        let mut not_zlib = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        not_zlib.extend_from_slice(&[0, 0, 0, 4, 1, 2, 3, 4]);
        let e = decode_error(&latency(b64(&not_zlib)));
        assert!(e.contains("inflate"), "{e}");
    }

    #[test]
    fn histogram_decoding_never_panics_on_corrupted_encodings() {
        use hdrhistogram::serialization::V2Serializer;
        let mut h = micros_histogram();
        let mut rng = Rng(7);
        for _ in 0..500 {
            h.record(1 + rng.next() % MAX_VALUE_US).unwrap();
        }
        let mut inner = Vec::new();
        V2Serializer::new().serialize(&h, &mut inner).unwrap();
        let wrap = |inner: &[u8]| {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(inner).unwrap();
            let compressed = z.finish().unwrap();
            let mut out = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
            out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            out.extend_from_slice(&compressed);
            base64::engine::general_purpose::STANDARD.encode(out)
        };
        assert_eq!(decode_histogram(&wrap(&inner)).unwrap(), h);
        for len in 0..inner.len() {
            let _ = decode_histogram(&wrap(&inner[..len]));
        }
        for _ in 0..3000 {
            let mut b = inner.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() % b.len() as u64) as usize;
                b[i] = rng.next() as u8;
            }
            if let Ok(d) = decode_histogram(&wrap(&b)) {
                assert!(d.max() <= d.highest_equivalent(MAX_VALUE_US));
            }
        }
    }

    fn decode_error_or_ok(b: &[u8]) -> Result<StepData, String> {
        StepData::from_bytes(b).map_err(|e| e.to_string())
    }

    #[test]
    fn concurrent_recording_and_resets_count_every_sample_once() {
        const THREADS: usize = 4;
        const PER_THREAD: u64 = 20_000;
        let r = Arc::new(Recorder::new(&["a", "b"], 2).unwrap());
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let e = r.epoch();
                        r.record(t, e, &ok(ActionId(t % 2), i % 5000));
                    }
                })
            })
            .collect();
        let mut counted = 0u64;
        let mut last = None;
        for _ in 0..50 {
            let p = r.peek();
            let s = r.reset();
            assert_eq!(p.epoch, s.epoch);
            assert!(p.total().completed() <= s.total().completed());
            if let Some(last) = last {
                assert_eq!(s.epoch, Epoch(last + 1));
            }
            last = Some(s.epoch.0);
            counted += s.total().completed() + s.stragglers;
            std::thread::yield_now();
        }
        for w in workers {
            w.join().unwrap();
        }
        let s = r.reset();
        counted += s.total().completed() + s.stragglers;
        assert_eq!(counted, THREADS as u64 * PER_THREAD);
    }
}
