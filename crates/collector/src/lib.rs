//! `collector`: the measuring side of herdlab.
//!
//! - [`result`]: the trial result model every suite writes ([`SuiteResult`]).
//! - [`schedule`]: open-loop schedules and the pacing strategies that try to keep them.
//! - [`summary`]: percentile summaries of `hdrhistogram` histograms.
//! - [`recorder`]: per-action latency histograms and counters, sharded, with exact step resets.
//! - [`target`]: what a generator drives; [`sim`]: simulated targets with a known capacity.
//! - [`shape`]: load shapes and their parsers; [`generator`]: open-loop steps, phases,
//!   bursts and closed-loop workers.
//! - [`slo`]: PASS / TRIP / INCONCLUSIVE per step; [`finder`]: the max-RPS finder.
//! - [`usl`]: Universal Scalability Law fit; [`resources`]: /proc sampler and leak check.
//! - [`scenario`]: weighted scenario mixes.
//! - [`hlog`]: HdrHistogram interval logs (one histogram per action and second).

pub mod finder;
pub mod generator;
pub mod hlog;
pub mod recorder;
pub mod resources;
pub mod result;
pub mod scenario;
pub mod schedule;
pub mod shape;
pub mod sim;
pub mod slo;
pub mod summary;
pub(crate) mod sync;
pub mod target;
pub mod usl;

pub use result::{
    Better, Line, Metric, ResultError, Series, Status, SuiteResult, Table, Verdict, SCHEMA_VERSION,
};
