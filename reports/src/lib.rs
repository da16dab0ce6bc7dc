//! `reports`: turns trial results into a reviewable report.
//!
//! - [`model`]: the trial (`results.json`): every suite's result plus provenance.
//! - [`trials`]: dated trial directories: the next free one, the previous one.
//! - [`compare`]: headline metrics against the previous trial.
//! - [`render`]: `trial-report.md` from the tera template in `templates/`, and the charts.
//! - [`chart`]: SVG line charts (plotters, no system fonts).
//! - [`format`]: stable number formatting.

pub mod chart;
pub mod compare;
pub mod format;
pub mod model;
pub mod render;
pub mod trials;

pub use model::{Provenance, Trial};
pub use render::{render, write_trial, RenderError, RenderOptions, Rendered};
