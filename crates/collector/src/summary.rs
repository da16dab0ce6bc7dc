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
}
