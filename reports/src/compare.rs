//! Headline metrics of one trial against the previous one: the change in percent, and a
//! mark when a metric moved the wrong way by more than the tolerance.

use collector::Better;

use crate::format::number;
use crate::model::Trial;

/// The default tolerance, in percent, before a wrong-way move is marked.
pub const DEFAULT_TOLERANCE_PCT: f64 = 10.0;

/// How a headline metric moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// Moved the right way by more than the tolerance.
    Better,
    /// Moved the wrong way by more than the tolerance: marked in the report.
    Worse,
    /// Within the tolerance either way, or a metric with no direction.
    Steady,
    /// Not in the previous trial.
    New,
    /// The previous value was zero, so no percentage exists.
    NoBase,
}

/// One row of the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Suite name.
    pub suite: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// The previous value, if the previous trial had it.
    pub previous: Option<f64>,
    /// The current value.
    pub current: f64,
    /// Change in percent of the previous value.
    pub change_pct: Option<f64>,
    /// The classification.
    pub movement: Movement,
}

impl Comparison {
    /// The "Change" cell: `+12.3%`, `new`, or `n/a`.
    pub fn change_cell(&self) -> String {
        match (self.movement, self.change_pct) {
            (Movement::New, _) => "new".into(),
            // Small moves keep a second decimal so they do not read as "-0.0%".
            (_, Some(p)) if p.abs() < 0.1 => format!("{p:+.2}%"),
            (_, Some(p)) => format!("{p:+.1}%"),
            (_, None) => "n/a".into(),
        }
    }

    /// The mark cell: `⚠ worse`, `better`, or empty.
    pub fn mark_cell(&self) -> &'static str {
        match self.movement {
            Movement::Worse => "⚠ worse",
            Movement::Better => "better",
            _ => "",
        }
    }

    /// The previous value formatted, or `—`.
    pub fn previous_cell(&self) -> String {
        self.previous
            .map(|v| number(v, &self.unit))
            .unwrap_or_else(|| "—".into())
    }
}

/// Compares every headline metric of `current` with the same suite and metric in `previous`.
pub fn compare(current: &Trial, previous: &Trial, tolerance_pct: f64) -> Vec<Comparison> {
    let mut rows = Vec::new();
    for suite in &current.suites {
        let before = previous.suites.iter().find(|s| s.suite == suite.suite);
        for m in suite.metrics.iter().filter(|m| m.headline) {
            let prev = before.and_then(|b| b.metric(&m.name)).map(|p| p.value);
            let change_pct = prev
                .filter(|p| *p != 0.0)
                .map(|p| (m.value - p) / p.abs() * 100.0);
            let movement = match (prev, change_pct) {
                (None, _) => Movement::New,
                (Some(_), None) => {
                    if m.value == 0.0 {
                        Movement::Steady
                    } else {
                        Movement::NoBase
                    }
                }
                (Some(_), Some(c)) => classify(m.better, c, tolerance_pct),
            };
            rows.push(Comparison {
                suite: suite.suite.clone(),
                metric: m.name.clone(),
                unit: m.unit.clone(),
                previous: prev,
                current: m.value,
                change_pct,
                movement,
            });
        }
    }
    rows
}

fn classify(better: Better, change_pct: f64, tolerance_pct: f64) -> Movement {
    let up = change_pct > tolerance_pct;
    let down = change_pct < -tolerance_pct;
    match better {
        Better::Higher if down => Movement::Worse,
        Better::Higher if up => Movement::Better,
        Better::Lower if up => Movement::Worse,
        Better::Lower if down => Movement::Better,
        _ => Movement::Steady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Provenance;
    use collector::{Metric, SuiteResult};

    fn trial(metrics: &[(&str, f64, Better)]) -> Trial {
        let prov = Provenance {
            commit: "c".into(),
            dirty: false,
            cpu_model: "cpu".into(),
            cores: 2,
            memory_bytes: 1,
            kernel: "k".into(),
            rustc: "r".into(),
            command: "cmd".into(),
            started_utc: "t".into(),
            wall_s: 1.0,
        };
        let mut t = Trial::new("2026-11-22", "2026-11-22", "quick", 1, prov);
        let mut s = SuiteResult::new("timer", "quick", "s", 1);
        for (name, v, b) in metrics {
            let mut m = Metric::new(*name, *v, "ms").headline();
            m.better = *b;
            s.metrics.push(m);
        }
        s.metrics.push(Metric::new("not_headline", 1.0, ""));
        t.suites.push(s);
        t
    }

    #[test]
    fn marks_wrong_way_moves_beyond_tolerance() {
        let prev = trial(&[
            ("p99_ms", 10.0, Better::Lower),
            ("rate", 100.0, Better::Higher),
            ("lat_ok", 10.0, Better::Lower),
            ("echo", 5.0, Better::Neither),
            ("zero", 0.0, Better::Lower),
        ]);
        let cur = trial(&[
            ("p99_ms", 12.0, Better::Lower), // +20% latency: worse
            ("rate", 120.0, Better::Higher), // +20% rate: better
            ("lat_ok", 10.5, Better::Lower), // +5%: steady
            ("echo", 50.0, Better::Neither), // no direction: steady
            ("zero", 3.0, Better::Lower),    // from zero: no percentage
            ("fresh", 1.0, Better::Lower),   // new metric
        ]);
        let rows = compare(&cur, &prev, 10.0);
        let by = |n: &str| rows.iter().find(|r| r.metric == n).unwrap();
        assert_eq!(rows.len(), 6, "non-headline metrics are not compared");
        assert_eq!(by("p99_ms").movement, Movement::Worse);
        assert_eq!(by("p99_ms").change_cell(), "+20.0%");
        assert_eq!(by("p99_ms").mark_cell(), "⚠ worse");
        assert_eq!(by("rate").movement, Movement::Better);
        assert_eq!(by("lat_ok").movement, Movement::Steady);
        assert_eq!(by("echo").movement, Movement::Steady);
        assert_eq!(by("zero").movement, Movement::NoBase);
        assert_eq!(by("zero").change_cell(), "n/a");
        assert_eq!(by("fresh").movement, Movement::New);
        assert_eq!(by("fresh").previous_cell(), "—");
        // A throughput drop is worse too.
        let cur = trial(&[("rate", 80.0, Better::Higher)]);
        assert_eq!(compare(&cur, &prev, 10.0)[0].movement, Movement::Worse);
        // A wider tolerance forgives it.
        assert_eq!(compare(&cur, &prev, 25.0)[0].movement, Movement::Steady);
    }
}
