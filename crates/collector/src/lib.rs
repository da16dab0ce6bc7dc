//! `collector`: the measuring side of herdlab.
//!
//! - [`result`]: the trial result model every suite writes ([`SuiteResult`]).
//! - [`schedule`]: open-loop schedules and the pacing strategies that try to keep them.
//! - [`summary`]: percentile summaries of `hdrhistogram` histograms.

pub mod result;
pub mod schedule;
pub mod summary;

pub use result::{
    Better, Line, Metric, ResultError, Series, Status, SuiteResult, Table, Verdict, SCHEMA_VERSION,
};
