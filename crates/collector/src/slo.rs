//! SLO verdicts per step: PASS, TRIP or INCONCLUSIVE, always with reasons.
//!
//! Order matters. TRIP is checked first: latency percentiles (overall and per action),
//! error rate (dropped operations count as failures), backlog growth over the hold, and
//! operations still running after the measure deadline. Only a healthy step can be
//! INCONCLUSIVE: nothing completed, or the generator fell short of the target rate
//! (achieved < (1 − tolerance) × target), which means the generator, not the target, was
//! the limit. A step that is neither is a PASS. INCONCLUSIVE is never a pass.

use std::collections::BTreeMap;
use std::fmt;

use crate::generator::{Measured, Mode};

/// The verdict of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// Every threshold held.
    Pass,
    /// A threshold was crossed.
    Trip,
    /// Could not decide (the generator fell short, or nothing completed).
    Inconclusive,
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepStatus::Pass => "PASS",
            StepStatus::Trip => "TRIP",
            StepStatus::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// A status with its reasons, e.g. `p99=612ms > 500`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepVerdict {
    /// PASS / TRIP / INCONCLUSIVE.
    pub status: StepStatus,
    /// Why.
    pub reasons: Vec<String>,
}

/// Why an SLO could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SloError {
    /// A threshold is not a positive finite number.
    #[error("invalid {what} {value}: expected a number above 0")]
    Threshold {
        /// Which threshold.
        what: String,
        /// The value given.
        value: String,
    },
    /// A fraction is out of range.
    #[error("invalid {what} {value}: expected {expected}")]
    Range {
        /// Which setting.
        what: String,
        /// The value given.
        value: String,
        /// The range.
        expected: String,
    },
    /// A per-action threshold list is malformed or names an unknown action.
    #[error("invalid {flag} {text:?}: {message}")]
    ActionList {
        /// The flag, e.g. `--action-p95-ms`.
        flag: String,
        /// The whole list.
        text: String,
        /// What is wrong.
        message: String,
    },
}

/// The thresholds a step is judged by.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// Overall p95 latency limit, ms.
    pub p95_ms: Option<f64>,
    /// Overall p99 latency limit, ms.
    pub p99_ms: Option<f64>,
    /// Per-action p95 limits, ms.
    pub action_p95_ms: BTreeMap<String, f64>,
    /// Per-action p99 limits, ms.
    pub action_p99_ms: BTreeMap<String, f64>,
    /// Largest allowed share of failed operations, 0..=1.
    pub max_error_rate: f64,
    /// Largest allowed backlog growth over a hold, if the target reports a backlog.
    pub max_backlog_growth: Option<u64>,
    /// Share of the target rate the generator may fall short by before the step is
    /// INCONCLUSIVE, in (0, 1).
    pub shortfall_tolerance: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            p95_ms: None,
            p99_ms: None,
            action_p95_ms: BTreeMap::new(),
            action_p99_ms: BTreeMap::new(),
            max_error_rate: 0.01,
            max_backlog_growth: None,
            shortfall_tolerance: 0.05,
        }
    }
}

fn positive(what: &str, v: f64) -> Result<f64, SloError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(SloError::Threshold {
            what: what.into(),
            value: v.to_string(),
        })
    }
}

/// Parses `send:80,search:300` into per-action limits; every name must be one of `known`.
pub fn parse_action_limits(
    flag: &str,
    text: &str,
    known: &[String],
) -> Result<BTreeMap<String, f64>, SloError> {
    let err = |message: String| SloError::ActionList {
        flag: flag.into(),
        text: text.into(),
        message,
    };
    let mut out = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| err(format!("{part:?} is not action:ms, like send:80")))?;
        let name = name.trim();
        if !known.iter().any(|k| k == name) {
            return Err(err(format!(
                "unknown action {name:?}: expected one of {}",
                known.join(", ")
            )));
        }
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| err(format!("{value:?} for {name} is not a number of ms")))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(err(format!(
                "{v} for {name}: expected a number of ms above 0"
            )));
        }
        if out.insert(name.to_string(), v).is_some() {
            return Err(err(format!("{name} appears twice")));
        }
    }
    if out.is_empty() {
        return Err(err(
            "expected at least one action:ms pair, like send:80".into()
        ));
    }
    Ok(out)
}

impl Slo {
    /// Checks every threshold is usable.
    pub fn validate(&self) -> Result<(), SloError> {
        if let Some(v) = self.p95_ms {
            positive("p95 threshold (ms)", v)?;
        }
        if let Some(v) = self.p99_ms {
            positive("p99 threshold (ms)", v)?;
        }
        for (name, v) in self.action_p95_ms.iter().chain(&self.action_p99_ms) {
            positive(&format!("threshold for action {name} (ms)"), *v)?;
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            return Err(SloError::Range {
                what: "max error rate".into(),
                value: self.max_error_rate.to_string(),
                expected: "a fraction from 0 to 1, like 0.01 for 1%".into(),
            });
        }
        let t = self.shortfall_tolerance;
        if !(t.is_finite() && t > 0.0 && t < 1.0) {
            return Err(SloError::Range {
                what: "shortfall tolerance".into(),
                value: t.to_string(),
                expected: "a fraction above 0 and below 1, like 0.05".into(),
            });
        }
        Ok(())
    }

    /// Checks every per-action threshold names one of `actions`.
    pub fn check_actions(&self, actions: &[String]) -> Result<(), SloError> {
        for (flag, map) in [
            ("--action-p95-ms", &self.action_p95_ms),
            ("--action-p99-ms", &self.action_p99_ms),
        ] {
            for name in map.keys() {
                if !actions.contains(name) {
                    return Err(SloError::ActionList {
                        flag: flag.into(),
                        text: name.clone(),
                        message: format!(
                            "unknown action {name:?}: expected one of {}",
                            actions.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A short description for reports: `p99 ≤ 50 ms, errors ≤ 1%`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.p95_ms {
            parts.push(format!("p95 ≤ {v} ms"));
        }
        if let Some(v) = self.p99_ms {
            parts.push(format!("p99 ≤ {v} ms"));
        }
        for (n, v) in &self.action_p95_ms {
            parts.push(format!("{n} p95 ≤ {v} ms"));
        }
        for (n, v) in &self.action_p99_ms {
            parts.push(format!("{n} p99 ≤ {v} ms"));
        }
        parts.push(format!("errors ≤ {}%", self.max_error_rate * 100.0));
        if let Some(b) = self.max_backlog_growth {
            parts.push(format!("backlog growth ≤ {b}"));
        }
        parts.join(", ")
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}ms")
    } else if v >= 10.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

/// Judges one measured step against `slo`.
pub fn evaluate(m: &Measured, slo: &Slo) -> StepVerdict {
    let mut trips = Vec::new();
    let total = m.data.total();
    let window = m.window_s;
    let sum = total.summary(window);
    let dropped = total.dropped;
    let failed = total.error_count() + dropped;
    let attempted = total.completed() + dropped;
    let check = |trips: &mut Vec<String>, label: &str, value: f64, limit: Option<f64>| {
        if let Some(limit) = limit {
            if value > limit {
                trips.push(format!("{label}={} > {limit}", ms(value)));
            }
        }
    };
    if total.completed() > 0 {
        check(&mut trips, "p95", sum.p95_ms, slo.p95_ms);
        check(&mut trips, "p99", sum.p99_ms, slo.p99_ms);
    }
    for (name, data) in &m.data.actions {
        if data.completed() == 0 {
            continue;
        }
        let s = data.summary(window);
        check(
            &mut trips,
            &format!("{name} p95"),
            s.p95_ms,
            slo.action_p95_ms.get(name).copied(),
        );
        check(
            &mut trips,
            &format!("{name} p99"),
            s.p99_ms,
            slo.action_p99_ms.get(name).copied(),
        );
    }
    if attempted > 0 {
        let rate = failed as f64 / attempted as f64;
        if rate > slo.max_error_rate {
            let mut kinds: Vec<String> = total
                .errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            if dropped > 0 {
                kinds.push(format!("dropped={dropped} (in-flight limit)"));
            }
            trips.push(format!(
                "error rate={:.2}% > {}% ({})",
                rate * 100.0,
                slo.max_error_rate * 100.0,
                kinds.join(", ")
            ));
        }
    }
    if let (Some(limit), Some(growth)) = (slo.max_backlog_growth, m.backlog_growth()) {
        if growth > 0 && growth as u64 > limit {
            trips.push(format!("backlog grew by {growth} > {limit} over the hold"));
        }
    }
    if !m.drained {
        trips.push("operations still running after the measure deadline (timeout + 1 s)".into());
    }
    if !trips.is_empty() {
        return StepVerdict {
            status: StepStatus::Trip,
            reasons: trips,
        };
    }
    let mut doubts = Vec::new();
    if total.completed() == 0 {
        doubts.push("zero operations completed".into());
    }
    if let Mode::OpenLoop { target_per_s } = m.mode {
        let achieved = m.achieved_per_s();
        if achieved < (1.0 - slo.shortfall_tolerance) * target_per_s {
            doubts.push(format!(
                "achieved {achieved:.0}/s < {:.0}% of target {target_per_s:.0}/s: the generator was the limit, not the target",
                (1.0 - slo.shortfall_tolerance) * 100.0
            ));
        }
    }
    if !doubts.is_empty() {
        return StepVerdict {
            status: StepStatus::Inconclusive,
            reasons: doubts,
        };
    }
    StepVerdict {
        status: StepStatus::Pass,
        reasons: Vec::new(),
    }
}
