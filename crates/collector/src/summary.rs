//! Percentile summaries of `hdrhistogram` histograms, in the units the report prints.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Count and percentiles of a histogram of microsecond values.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest sample, µs.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarizes a histogram whose values are microseconds. An empty histogram gives zeros.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                max_us: 0.0,
            };
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        LatencySummary {
            count: h.len(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: h.max() as f64,
        }
    }
}

/// The `q` quantile (0..=1) of ascending `sorted` samples by the nearest-rank method: the
/// smallest sample with at least `q` of the samples at or below it (the definition
/// `hdrhistogram`'s `value_at_quantile` uses). 0 for no samples; `q` is clamped to 0..=1.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A histogram for microsecond values up to one hour at 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_known_values() {
        let mut h = micros_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(LatencySummary::of(&micros_histogram()).count, 0);
    }

    #[test]
    fn nearest_rank_agrees_with_the_histogram() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let mut h = micros_histogram();
        for x in &v {
            h.record(*x as u64).unwrap();
        }
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(nearest_rank(&v, q), h.value_at_quantile(q) as f64, "q {q}");
        }
        // Even counts: the median is the lower middle sample, not an interpolation.
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
        assert_eq!(nearest_rank(&[5.0], 7.0), 5.0);
    }
}
