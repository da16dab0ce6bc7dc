//! Comparing a new snapshot against a baseline: one row and one verdict per benchmark.
//!
//! The verdict is criterion's rule: a benchmark **regressed** if the change of its mean
//! is statistically significant (`p < 0.05`) *and* the whole 95% confidence interval of
//! that change lies above `+threshold`; **improved** if significant and the whole
//! interval lies below `−threshold`; otherwise it is **within noise**. Benchmarks only in
//! the baseline are **missing**, those only in the new run are **new**; neither fails.

use std::collections::BTreeSet;
use std::fmt;

use super::snapshot::{BenchRecord, Snapshot};
use super::stats::{self, Change, SIGNIFICANCE};

/// The outcome for one benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Significantly faster, beyond the noise threshold.
    Improved,
    /// Significantly slower, beyond the noise threshold: fails the run.
    Regressed,
    /// No change that is both significant and beyond the noise threshold.
    WithinNoise,
    /// In the baseline, absent from the new run.
    Missing,
    /// In the new run, absent from the baseline.
    New,
}

impl Verdict {
    /// The word printed in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::WithinNoise => "within noise",
            Verdict::Missing => "missing",
            Verdict::New => "new",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Applies criterion's rule to a change; `threshold` is a fraction (0.05 for 5%).
pub fn verdict(change: &Change, threshold: f64) -> Verdict {
    let significant = change.p_value < SIGNIFICANCE;
    let ci = change.mean;
    if significant && ci.lower > threshold && ci.upper > threshold {
        Verdict::Regressed
    } else if significant && ci.lower < -threshold && ci.upper < -threshold {
        Verdict::Improved
    } else {
        Verdict::WithinNoise
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Benchmark id.
    pub id: String,
    /// Mean time per iteration in the baseline (ns), if the baseline has it.
    pub base_mean: Option<f64>,
    /// Mean time per iteration in the new run (ns), if the new run has it.
    pub new_mean: Option<f64>,
    /// The statistics, when both sides have the benchmark.
    pub change: Option<Change>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Compares every benchmark of `new` against `base` with `threshold` as a fraction,
/// using `resamples` bootstrap resamples. Rows are sorted by benchmark id.
pub fn compare(base: &Snapshot, new: &Snapshot, threshold: f64, resamples: usize) -> Vec<Row> {
    let ids: BTreeSet<&str> = base
        .benchmarks
        .iter()
        .chain(&new.benchmarks)
        .map(|b| b.id.as_str())
        .collect();
    ids.into_iter()
        .map(|id| match (base.get(id), new.get(id)) {
            (Some(b), Some(n)) => compare_one(b, n, threshold, resamples),
            (Some(b), None) => Row {
                id: id.to_string(),
                base_mean: Some(stats::mean(&b.sample.per_iteration())),
                new_mean: None,
                change: None,
                verdict: Verdict::Missing,
            },
            (None, n) => Row {
                id: id.to_string(),
                base_mean: None,
                new_mean: n.map(|n| stats::mean(&n.sample.per_iteration())),
                change: None,
                verdict: Verdict::New,
            },
        })
        .collect()
}

fn compare_one(base: &BenchRecord, new: &BenchRecord, threshold: f64, resamples: usize) -> Row {
    let base_times = base.sample.per_iteration();
    let new_times = new.sample.per_iteration();
    let change = stats::compare(&new_times, &base_times, resamples, seed_for(&new.id));
    Row {
        id: new.id.clone(),
        base_mean: Some(stats::mean(&base_times)),
        new_mean: Some(stats::mean(&new_times)),
        change: Some(change),
        verdict: verdict(&change, threshold),
    }
}

/// A fixed seed per benchmark (FNV-1a of its id), so each row is reproducible and
/// independent of which other benchmarks exist.
fn seed_for(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the run must fail: true if any row regressed.
pub fn any_regressed(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.verdict == Verdict::Regressed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bench::criterion::{fixture_dir, read_all};
    use crate::bench::snapshot::{Estimate, Sample};
    use crate::bench::stats::RESAMPLES;

    const THRESHOLD: f64 = 0.05;

    /// A criterion-like linear sample: `n` measurements of 1..=n × `step` iterations whose
    /// per-iteration times are `mean_ns` × (1 + noise), noise uniform in ±`spread`.
    fn sample(seed: u64, n: usize, mean_ns: f64, spread: f64) -> Sample {
        let mut rng = fastrand::Rng::with_seed(seed);
        let iters: Vec<f64> = (1..=n).map(|i| (i * 10) as f64).collect();
        let times = iters
            .iter()
            .map(|&it| it * mean_ns * (1.0 + spread * (2.0 * rng.f64() - 1.0)))
            .collect();
        Sample {
            sampling_mode: Some("Linear".into()),
            iters,
            times,
        }
    }

    fn scaled(s: &Sample, factor: f64) -> Sample {
        Sample {
            times: s.times.iter().map(|t| t * factor).collect(),
            ..s.clone()
        }
    }

    fn record(id: &str, sample: Sample) -> BenchRecord {
        let m = stats::mean(&sample.per_iteration());
        let e = Estimate {
            point: m,
            lower: m,
            upper: m,
            confidence_level: 0.95,
            standard_error: 0.0,
        };
        BenchRecord {
            id: id.into(),
            mean: e,
            median: e,
            sample,
        }
    }

    fn snapshot(name: &str, records: Vec<BenchRecord>) -> Snapshot {
        Snapshot::capture(name, records, Path::new("/nonexistent"))
    }

    fn one(base: Sample, new: Sample, threshold: f64) -> Row {
        let rows = compare(
            &snapshot("base", vec![record("b", base)]),
            &snapshot("new", vec![record("b", new)]),
            threshold,
            RESAMPLES,
        );
        assert_eq!(rows.len(), 1);
        rows[0].clone()
    }

    fn change(row: &Row) -> Change {
        row.change
            .unwrap_or_else(|| panic!("{} has no change", row.id))
    }

    #[test]
    fn identical_samples_are_within_noise() {
        let s = sample(1, 100, 1000.0, 0.05);
        let row = one(s.clone(), s, THRESHOLD);
        assert_eq!(row.verdict, Verdict::WithinNoise);
        let c = change(&row);
        assert_eq!(c.mean.point, 0.0);
        assert!(c.p_value > 0.9, "{c:?}");
        assert!(c.mean.lower < 0.0 && c.mean.upper > 0.0, "{c:?}");
    }

    #[test]
    fn thirty_percent_slower_is_regressed() {
        let base = sample(2, 100, 1000.0, 0.05);
        let new = scaled(&sample(3, 100, 1000.0, 0.05), 1.3);
        let row = one(base, new, THRESHOLD);
        assert_eq!(row.verdict, Verdict::Regressed);
        let c = change(&row);
        assert!(c.p_value < 0.001, "{c:?}");
        assert!((c.mean.point - 0.3).abs() < 0.03, "{c:?}");
        assert!(c.mean.lower > 0.25 && c.mean.upper < 0.35, "{c:?}");
        assert!((c.median.point - 0.3).abs() < 0.05, "{c:?}");
        assert!(any_regressed(&[row]));
    }

    #[test]
    fn thirty_percent_faster_is_improved() {
        let base = sample(4, 100, 1000.0, 0.05);
        let new = scaled(&sample(5, 100, 1000.0, 0.05), 0.7);
        let row = one(base, new, THRESHOLD);
        assert_eq!(row.verdict, Verdict::Improved);
        let c = change(&row);
        assert!(c.mean.upper < -0.25, "{c:?}");
        assert!(!any_regressed(&[row]));
    }

    #[test]
    fn a_significant_change_inside_the_threshold_is_within_noise() {
        // +2% with ±0.5% noise: clearly significant, but the CI lies inside ±5%.
        let base = sample(6, 100, 1000.0, 0.005);
        let new = scaled(&sample(7, 100, 1000.0, 0.005), 1.02);
        let row = one(base.clone(), new.clone(), THRESHOLD);
        let c = change(&row);
        assert!(c.p_value < SIGNIFICANCE, "the change is significant: {c:?}");
        assert!(c.mean.lower > 0.01 && c.mean.upper < 0.03, "{c:?}");
        assert_eq!(row.verdict, Verdict::WithinNoise);
        // The threshold is what decided: at criterion's own 1% it is a regression.
        assert_eq!(one(base, new, 0.01).verdict, Verdict::Regressed);
    }

    #[test]
    fn a_noisy_ten_percent_change_with_a_wide_ci_is_within_noise() {
        // ±90% noise on 30 measurements: the mean moves +10% but the CI straddles the
        // threshold, so it is not called a regression.
        let base = sample(8, 30, 1000.0, 0.9);
        let new_raw = sample(9, 30, 1000.0, 0.9);
        let factor =
            1.1 * stats::mean(&base.per_iteration()) / stats::mean(&new_raw.per_iteration());
        let row = one(base, scaled(&new_raw, factor), THRESHOLD);
        let c = change(&row);
        assert!((c.mean.point - 0.1).abs() < 1e-9, "{c:?}");
        assert!(c.mean.lower < THRESHOLD && c.mean.upper > 0.2, "{c:?}");
        assert_eq!(row.verdict, Verdict::WithinNoise);
    }

    #[test]
    fn missing_and_new_benchmarks_are_listed_and_do_not_fail() {
        let s = sample(10, 50, 500.0, 0.02);
        let base = snapshot(
            "base",
            vec![record("kept", s.clone()), record("gone", s.clone())],
        );
        let new = snapshot(
            "new",
            vec![record("kept", s.clone()), record("added", scaled(&s, 2.0))],
        );
        let rows = compare(&base, &new, THRESHOLD, RESAMPLES);
        let summary: Vec<(&str, Verdict, bool, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.verdict,
                    r.base_mean.is_some(),
                    r.new_mean.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("added", Verdict::New, false, true),
                ("gone", Verdict::Missing, true, false),
                ("kept", Verdict::WithinNoise, true, true),
            ]
        );
        assert!(rows[0].change.is_none() && rows[1].change.is_none());
        assert!(!any_regressed(&rows));
    }

    #[test]
    fn a_fixture_benchmark_made_slower_regresses_and_fails_the_run() -> anyhow::Result<()> {
        let records: Vec<BenchRecord> = read_all(&fixture_dir())?
            .into_iter()
            .map(|f| f.record)
            .collect();
        let base = snapshot("base", records.clone());
        let slowed = records
            .into_iter()
            .map(|mut r| {
                if r.id == "result_model/from_json" {
                    r.sample = scaled(&r.sample, 1.5);
                }
                r
            })
            .collect();
        let rows = compare(&base, &snapshot("new", slowed), THRESHOLD, RESAMPLES);
        let verdicts: Vec<(&str, Verdict)> =
            rows.iter().map(|r| (r.id.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("result_model/from_json", Verdict::Regressed),
                ("result_model/to_json", Verdict::WithinNoise),
                ("vec ops/sum/64", Verdict::WithinNoise),
            ]
        );
        let c = change(&rows[0]);
        assert!((c.mean.point - 0.5).abs() < 1e-9, "{c:?}");
        assert!(any_regressed(&rows));
        assert_eq!(
            super::super::exit_code(&rows),
            std::process::ExitCode::from(1)
        );
        Ok(())
    }

    #[test]
    fn verdict_needs_both_significance_and_the_whole_ci_beyond_the_threshold() {
        let c = |p_value, lower, upper| Change {
            mean: stats::RelativeChange {
                point: (lower + upper) / 2.0,
                lower,
                upper,
            },
            median: stats::RelativeChange {
                point: 0.0,
                lower: 0.0,
                upper: 0.0,
            },
            p_value,
        };
        assert_eq!(verdict(&c(0.01, 0.06, 0.2), 0.05), Verdict::Regressed);
        assert_eq!(verdict(&c(0.06, 0.06, 0.2), 0.05), Verdict::WithinNoise);
        assert_eq!(verdict(&c(0.01, 0.04, 0.2), 0.05), Verdict::WithinNoise);
        assert_eq!(verdict(&c(0.01, -0.2, -0.06), 0.05), Verdict::Improved);
        assert_eq!(verdict(&c(0.01, -0.2, -0.04), 0.05), Verdict::WithinNoise);
    }

    #[test]
    fn seeds_differ_per_benchmark_and_are_stable() {
        assert_eq!(seed_for("a"), seed_for("a"));
        assert_ne!(seed_for("a"), seed_for("b"));
        assert_eq!(seed_for(""), 0xcbf2_9ce4_8422_2325);
    }
}
