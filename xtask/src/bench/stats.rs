//! The statistics of a comparison, reimplementing criterion 0.8.2's rule on raw samples.
//!
//! Inputs are per-iteration times (`times[i] / iters[i]`) of the new run and of the
//! baseline. As criterion does (`analysis/compare.rs`):
//!
//! - **p-value**: Welch's t statistic of new vs. baseline; its null distribution is
//!   bootstrapped by resampling *both* groups from the pooled sample; two-tailed
//!   `p = 2 · min(#{t* < t}, #{t* ≥ t}) / #t*` over the finite `t*`.
//! - **relative change** of the mean and of the median (`new / base − 1`): point estimate
//!   from the samples, 95% confidence interval from the percentiles of a bootstrap that
//!   resamples each side independently.
//!
//! Resampling uses a seeded [`fastrand::Rng`], so the same inputs always give the same
//! output, and [`RESAMPLES`] resamples (criterion uses 100,000 in optimized code; xtask
//! runs unoptimized, and 10,000 resolves p to about 0.0002, ample for a 0.05 cut-off).

/// Bootstrap resamples per statistic.
pub const RESAMPLES: usize = 10_000;

/// Significance level: a change counts only if `p` is below it (criterion's default).
pub const SIGNIFICANCE: f64 = 0.05;

/// Confidence level of the intervals (criterion's default).
pub const CONFIDENCE: f64 = 0.95;

/// A relative change (`new / base − 1`; +0.1 is 10% slower) with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelativeChange {
    /// Point estimate from the two samples.
    pub point: f64,
    /// Lower bound of the [`CONFIDENCE`] interval.
    pub lower: f64,
    /// Upper bound of the [`CONFIDENCE`] interval.
    pub upper: f64,
}

/// The statistics of one benchmark's new sample against its baseline sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// Relative change of the mean time per iteration (the verdict uses this).
    pub mean: RelativeChange,
    /// Relative change of the median time per iteration.
    pub median: RelativeChange,
    /// Two-tailed p-value of "the means differ" (bootstrapped Welch t-test).
    pub p_value: f64,
}

/// Compares per-iteration times `new` against `base`, resampling with a generator seeded
/// by `seed`. Both samples need at least two values (see `Sample::validate`); with fewer,
/// the change is NaN and `p` is 1, which no verdict counts as a change.
pub fn compare(new: &[f64], base: &[f64], resamples: usize, seed: u64) -> Change {
    if new.len() < 2 || base.len() < 2 {
        let nan = RelativeChange {
            point: f64::NAN,
            lower: f64::NAN,
            upper: f64::NAN,
        };
        return Change {
            mean: nan,
            median: nan,
            p_value: 1.0,
        };
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let p_value = t_test(new, base, resamples, &mut rng);
    let (mean, median) = relative_change(new, base, resamples, &mut rng);
    Change {
        mean,
        median,
        p_value,
    }
}

/// Arithmetic mean (NaN for an empty slice).
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Unbiased sample variance around `mean` (divides by `n − 1`, as criterion does).
fn variance(x: &[f64], mean: f64) -> f64 {
    x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// Welch's t statistic of `a` against `b`: `(ā − b̄) / sqrt(s²a/na + s²b/nb)`.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let se = (variance(a, ma) / a.len() as f64 + variance(b, mb) / b.len() as f64).sqrt();
    (ma - mb) / se
}

/// Median with criterion's interpolation (mean of the two middle values for even `n`).
/// Reorders `x`. NaN for an empty slice.
fn median_in_place(x: &mut [f64]) -> f64 {
    let n = x.len();
    if n == 0 {
        return f64::NAN;
    }
    let k = n / 2;
    let (left, &mut upper, _) = x.select_nth_unstable_by(k, f64::total_cmp);
    if n % 2 == 1 {
        upper
    } else {
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lower + (upper - lower) * 0.5
    }
}

/// Median of `x` (see [`median_in_place`]).
pub fn median(x: &[f64]) -> f64 {
    median_in_place(&mut x.to_vec())
}

/// The `p`-th percentile (0..=100) of an ascending `sorted` slice, interpolated as
/// criterion's `Percentiles::at` does. NaN for an empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    if p >= 100.0 {
        return sorted[last];
    }
    let rank = (p.max(0.0) / 100.0) * last as f64;
    let low = rank.floor();
    let i = low as usize;
    let floor = sorted[i];
    let ceiling = sorted.get(i + 1).copied().unwrap_or(floor);
    floor + (ceiling - floor) * (rank - low)
}

/// Fills `dst` with values drawn uniformly, with replacement, from `src` (non-empty).
fn resample_into(rng: &mut fastrand::Rng, src: &[f64], dst: &mut [f64]) {
    let n = src.len();
    for d in dst.iter_mut() {
        *d = src[rng.usize(0..n)];
    }
}

/// Two-tailed p-value of Welch's t of `new` vs `base`, against a null distribution
/// bootstrapped from the pooled sample (criterion's `mixed::bootstrap`).
fn t_test(new: &[f64], base: &[f64], resamples: usize, rng: &mut fastrand::Rng) -> f64 {
    let t = welch_t(new, base);
    if t.is_nan() {
        // Both samples constant and equal: no evidence of any difference.
        return 1.0;
    }
    let pooled: Vec<f64> = new.iter().chain(base).copied().collect();
    let mut resample = vec![0.0; pooled.len()];
    let (mut total, mut below) = (0usize, 0usize);
    for _ in 0..resamples {
        resample_into(rng, &pooled, &mut resample);
        let (a, b) = resample.split_at(new.len());
        let t_star = welch_t(a, b);
        // Criterion drops non-finite t* (constant resamples).
        if t_star.is_finite() {
            total += 1;
            if t_star < t {
                below += 1;
            }
        }
    }
    if total == 0 {
        return 1.0;
    }
    2.0 * below.min(total - below) as f64 / total as f64
}

/// Relative change of the mean and of the median, each with its bootstrap confidence
/// interval; both sides are resampled independently.
fn relative_change(
    new: &[f64],
    base: &[f64],
    resamples: usize,
    rng: &mut fastrand::Rng,
) -> (RelativeChange, RelativeChange) {
    let mut new_star = vec![0.0; new.len()];
    let mut base_star = vec![0.0; base.len()];
    let mut means = Vec::with_capacity(resamples);
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        resample_into(rng, new, &mut new_star);
        resample_into(rng, base, &mut base_star);
        means.push(mean(&new_star) / mean(&base_star) - 1.0);
        medians.push(median_in_place(&mut new_star) / median_in_place(&mut base_star) - 1.0);
    }
    let interval = |mut dist: Vec<f64>, point: f64| {
        dist.sort_unstable_by(f64::total_cmp);
        RelativeChange {
            point,
            lower: percentile(&dist, 50.0 * (1.0 - CONFIDENCE)),
            upper: percentile(&dist, 50.0 * (1.0 + CONFIDENCE)),
        }
    };
    (
        interval(means, mean(new) / mean(base) - 1.0),
        interval(medians, median(new) / median(base) - 1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_criterion() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&x, 0.0), 1.0);
        assert_eq!(percentile(&x, 50.0), 2.5);
        assert_eq!(percentile(&x, 100.0), 4.0);
        assert!((percentile(&x, 2.5) - 1.075).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn median_handles_odd_and_even_lengths() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0, 5.0]), 5.0);
    }

    #[test]
    fn welch_t_matches_a_hand_computation() {
        // a: mean 2, var 1; b: mean 5, var 1 → t = −3 / sqrt(1/3 + 1/3).
        let t = welch_t(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((t - (-3.0 / (2.0f64 / 3.0).sqrt())).abs() < 1e-12, "{t}");
    }

    #[test]
    fn p_value_is_small_for_separated_samples_and_large_for_equal_ones() {
        let a: Vec<f64> = (0..50).map(|i| 100.0 + (i % 10) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.2).collect();
        let mut rng = fastrand::Rng::with_seed(7);
        assert!(t_test(&b, &a, 2000, &mut rng) < 0.001);
        assert!(t_test(&a, &a, 2000, &mut rng) > 0.9);
    }

    #[test]
    fn constant_samples_do_not_produce_nan() {
        let same = compare(&[5.0; 10], &[5.0; 10], 500, 1);
        assert_eq!(same.p_value, 1.0);
        assert_eq!(same.mean.point, 0.0);
        let doubled = compare(&[10.0; 10], &[5.0; 10], 500, 1);
        assert_eq!(doubled.p_value, 0.0);
        assert_eq!((doubled.mean.lower, doubled.mean.upper), (1.0, 1.0));
    }

    #[test]
    fn too_small_samples_do_not_panic() {
        let c = compare(&[1.0], &[], 100, 1);
        assert_eq!(c.p_value, 1.0);
        assert!(c.mean.point.is_nan() && c.mean.lower.is_nan());
    }

    #[test]
    fn seeded_comparison_is_deterministic() {
        let a: Vec<f64> = (0..30).map(|i| 10.0 + (i * 7 % 11) as f64).collect();
        let b: Vec<f64> = (0..30).map(|i| 11.0 + (i * 5 % 13) as f64).collect();
        assert_eq!(compare(&b, &a, 1000, 42), compare(&b, &a, 1000, 42));
    }
}
