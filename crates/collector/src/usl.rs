//! Universal Scalability Law fit: why the knee of a closed-loop sweep is where it is.
//!
//! A closed-loop sweep measures throughput `X(N)` at several concurrencies `N`. The USL
//! models it as
//!
//! ```text
//! X(N) = λ·N / (1 + σ·(N−1) + κ·N·(N−1))
//! ```
//!
//! where `λ` is the throughput of one client without interference, `σ` (contention) is the
//! share of the work that is serialised (a lock, a single writer), and `κ` (coherency) is the
//! cost of keeping `N` clients in agreement pairwise (cache lines, retries, crosstalk). With
//! `κ > 0` and `σ < 1` throughput peaks at `N* = √((1−σ)/κ)` and then falls; with `κ = 0` it
//! only plateaus towards `λ/σ` (Amdahl's law).
//!
//! [`fit`] minimises the squared error in `X` (not in a transformed space). For a fixed `λ`
//! the model is linear in `(σ, κ)` after the transform `N·λ/X − 1 = σ·(N−1) + κ·N·(N−1)`;
//! that linear problem is solved as a non-negative least-squares problem on two unknowns,
//! weighted so that its residuals approximate residuals in `X` (and re-weighted a few times
//! with the model's own predictions). The outer search over `λ` is a log-spaced grid over a
//! bracket around `max X(N)/N` followed by a golden-section refinement, scoring every
//! candidate by its true squared error in `X`. Every loop has a fixed bound.

use serde::{Deserialize, Serialize};

/// One measured point of a closed-loop sweep.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct UslPoint {
    /// Number of concurrent clients (`N`), at least 1.
    pub concurrency: f64,
    /// Measured throughput at that concurrency, in the caller's unit (e.g. requests/s).
    pub throughput: f64,
}

/// The fitted USL parameters and what they predict.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct UslFit {
    /// Throughput of a single client without interference, in the points' throughput unit.
    pub lambda: f64,
    /// Contention: the serialised share of the work (0 = none). Never negative.
    pub sigma: f64,
    /// Coherency: the pairwise crosstalk cost (0 = none). Never negative.
    pub kappa: f64,
    /// Coefficient of determination of the fit in throughput space (1 = perfect).
    pub r_squared: f64,
    /// Concurrency at which the model's throughput peaks, `√((1−σ)/κ)`, when `κ > 0` and
    /// `σ < 1`; `None` when there is no retrograde region (throughput keeps rising or
    /// plateaus). It can lie outside the measured range, and below 1 when throughput is
    /// already falling at `N = 1`.
    pub peak_concurrency: Option<f64>,
    /// The model's throughput at [`UslFit::peak_concurrency`].
    pub peak_throughput: Option<f64>,
    /// Concurrency of the highest measured throughput (the first one on a tie).
    pub measured_peak_concurrency: f64,
    /// The highest measured throughput.
    pub measured_peak_throughput: f64,
    /// The largest measured concurrency: a predicted peak beyond it is an extrapolation.
    pub max_measured_concurrency: f64,
}

impl UslFit {
    /// The model's throughput at concurrency `n`. Returns NaN for a non-finite `n`.
    pub fn predict(&self, n: f64) -> f64 {
        usl(self.lambda, self.sigma, self.kappa, n)
    }

    /// One sentence saying what limits scaling, e.g. "contention σ=0.031 serialises 3.1% of
    /// the work; coherency κ=0.0021 makes throughput fall past N≈21".
    pub fn explain(&self) -> String {
        let fit = format!("(λ={}, R²={:.3})", sig(self.lambda, 3), self.r_squared);
        let contention = if self.sigma > 0.0 {
            format!(
                "contention σ={} serialises {}% of the work",
                sig(self.sigma, 2),
                sig(self.sigma * 100.0, 2)
            )
        } else {
            "no contention (σ=0)".to_string()
        };
        match (
            self.kappa > 0.0,
            self.peak_concurrency,
            self.peak_throughput,
        ) {
            (true, Some(n), Some(x)) if n >= 1.0 => {
                let beyond = if n > self.max_measured_concurrency {
                    format!(
                        ", beyond the largest measured N={}",
                        sig(self.max_measured_concurrency, 3)
                    )
                } else {
                    String::new()
                };
                format!(
                    "{contention}; coherency κ={} makes throughput fall past N≈{:.0} \
                     (peak ≈{}{beyond}) {fit}",
                    sig(self.kappa, 2),
                    n,
                    sig(x, 3)
                )
            }
            (true, _, _) => format!(
                "{contention}; coherency κ={} makes throughput fall from the first client on {fit}",
                sig(self.kappa, 2)
            ),
            (false, _, _) if self.sigma > 0.0 => format!(
                "{contention} and there is no coherency cost (κ=0), so throughput plateaus \
                 towards λ/σ≈{} instead of falling {fit}",
                sig(self.lambda / self.sigma, 3)
            ),
            (false, _, _) => format!(
                "no contention or coherency cost (σ=κ=0): throughput scales linearly, \
                 ≈{} per client {fit}",
                sig(self.lambda, 3)
            ),
        }
    }
}

/// Why a set of points cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UslError {
    /// Fewer than 3 points.
    #[error("USL fit needs at least 3 points, got {count}")]
    TooFewPoints {
        /// Number of points given.
        count: usize,
    },
    /// Fewer than 3 distinct concurrencies (three unknowns need three distinct `N`).
    #[error("USL fit needs at least 3 distinct concurrencies, got {distinct}")]
    TooFewConcurrencies {
        /// Number of distinct concurrencies given.
        distinct: usize,
    },
    /// A value is NaN or infinite.
    #[error("point {index}: {field} is {value}, expected a finite number")]
    NonFinite {
        /// Index of the point.
        index: usize,
        /// `concurrency` or `throughput`.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A throughput is zero or negative.
    #[error("point {index}: throughput is {value}, expected a positive number")]
    NonPositiveThroughput {
        /// Index of the point.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A concurrency is below 1.
    #[error("point {index}: concurrency is {value}, expected at least 1")]
    ConcurrencyBelowOne {
        /// Index of the point.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// The values are so extreme that the fit overflowed.
    #[error("USL fit did not converge to finite parameters: {detail}")]
    Numerical {
        /// What came out non-finite.
        detail: String,
    },
}

/// Number of log-spaced `λ` candidates tried before the golden-section refinement.
const GRID_POINTS: usize = 256;
/// Bound on golden-section iterations (the bracket shrinks by 0.618 each time).
const GOLDEN_ITERATIONS: usize = 200;
/// Re-weighting passes of the inner linear fit.
const REWEIGHT_PASSES: usize = 4;

/// Fits the USL to measured points (order does not matter; repeated concurrencies are fine).
pub fn fit(points: &[UslPoint]) -> Result<UslFit, UslError> {
    validate(points)?;

    // Work in units of the largest per-client throughput so that squares stay moderate.
    let mut scale = 0.0_f64;
    let mut measured_peak = points[0];
    for p in points {
        scale = scale.max(p.throughput / p.concurrency);
        if p.throughput > measured_peak.throughput {
            measured_peak = *p;
        }
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(UslError::Numerical {
            detail: format!("max throughput/concurrency is {scale}"),
        });
    }
    let data: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.concurrency, p.throughput / scale))
        .collect();

    // λ (scaled) is bracketed around 1 = max X/N. When the smallest measured N is large,
    // contention already lowers X/N there, so the upper end grows with it.
    let min_n = data.iter().map(|d| d.0).fold(f64::INFINITY, f64::min);
    let lo = 0.5_f64;
    let hi = (2.0 * min_n).max(4.0);
    let (ln_lo, ln_hi) = (lo.ln(), hi.ln());
    let grid = |i: usize| (ln_lo + (ln_hi - ln_lo) * i as f64 / (GRID_POINTS - 1) as f64).exp();

    let mut best_i = 0;
    let mut best_err = f64::INFINITY;
    for i in 0..GRID_POINTS {
        let err = inner(&data, grid(i)).sse;
        if err < best_err {
            best_err = err;
            best_i = i;
        }
    }
    let a = grid(best_i.saturating_sub(1));
    let b = grid((best_i + 1).min(GRID_POINTS - 1));
    let lambda_scaled = golden(&data, a, b, grid(best_i), best_err);

    let mut inner_fit = inner(&data, lambda_scaled);
    // A term that changes the prediction at the largest measured N by less than one part in
    // 10⁹ is rounding noise, not a finding: report it as exactly 0 (so exact linear data has
    // no peak).
    let max_n = data.iter().map(|d| d.0).fold(1.0, f64::max);
    if inner_fit.sigma * (max_n - 1.0) < 1e-9 {
        inner_fit.sigma = 0.0;
    }
    if inner_fit.kappa * max_n * (max_n - 1.0) < 1e-9 {
        inner_fit.kappa = 0.0;
    }
    inner_fit.sse = sse(&data, lambda_scaled, inner_fit.sigma, inner_fit.kappa);
    let lambda = lambda_scaled * scale;
    let (sigma, kappa) = (inner_fit.sigma, inner_fit.kappa);
    if !(lambda.is_finite() && sigma.is_finite() && kappa.is_finite() && inner_fit.sse.is_finite())
    {
        return Err(UslError::Numerical {
            detail: format!("λ={lambda}, σ={sigma}, κ={kappa}"),
        });
    }

    let mean = data.iter().map(|d| d.1).sum::<f64>() / data.len() as f64;
    let sst: f64 = data.iter().map(|d| (d.1 - mean).powi(2)).sum();
    let r_squared = if sst > 1e-300 {
        1.0 - inner_fit.sse / sst
    } else if inner_fit.sse <= 1e-24 {
        1.0
    } else {
        0.0
    };

    let peak_concurrency = (kappa > 0.0 && sigma < 1.0).then(|| ((1.0 - sigma) / kappa).sqrt());
    let peak_throughput = peak_concurrency.map(|n| usl(lambda, sigma, kappa, n));
    Ok(UslFit {
        lambda,
        sigma,
        kappa,
        r_squared,
        peak_concurrency,
        peak_throughput,
        measured_peak_concurrency: measured_peak.concurrency,
        measured_peak_throughput: measured_peak.throughput,
        max_measured_concurrency: max_n,
    })
}

fn validate(points: &[UslPoint]) -> Result<(), UslError> {
    if points.len() < 3 {
        return Err(UslError::TooFewPoints {
            count: points.len(),
        });
    }
    for (index, p) in points.iter().enumerate() {
        if !p.concurrency.is_finite() {
            return Err(UslError::NonFinite {
                index,
                field: "concurrency",
                value: p.concurrency,
            });
        }
        if !p.throughput.is_finite() {
            return Err(UslError::NonFinite {
                index,
                field: "throughput",
                value: p.throughput,
            });
        }
        if p.concurrency < 1.0 {
            return Err(UslError::ConcurrencyBelowOne {
                index,
                value: p.concurrency,
            });
        }
        if p.throughput <= 0.0 {
            return Err(UslError::NonPositiveThroughput {
                index,
                value: p.throughput,
            });
        }
    }
    let mut ns: Vec<f64> = points.iter().map(|p| p.concurrency).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    if ns.len() < 3 {
        return Err(UslError::TooFewConcurrencies { distinct: ns.len() });
    }
    Ok(())
}

fn usl(lambda: f64, sigma: f64, kappa: f64, n: f64) -> f64 {
    lambda * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
}

/// Squared error in throughput space; NaN counts as infinitely bad.
fn sse(data: &[(f64, f64)], lambda: f64, sigma: f64, kappa: f64) -> f64 {
    let e: f64 = data
        .iter()
        .map(|&(n, x)| (x - usl(lambda, sigma, kappa, n)).powi(2))
        .sum();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

#[derive(Clone, Copy)]
struct Inner {
    sigma: f64,
    kappa: f64,
    sse: f64,
}

/// Best non-negative `(σ, κ)` for a fixed `λ`, scored by squared error in throughput.
fn inner(data: &[(f64, f64)], lambda: f64) -> Inner {
    // Residual in X ≈ residual in the transformed space × X²/(λN): weight by its square.
    let mut weights: Vec<f64> = data
        .iter()
        .map(|&(n, x)| (x * x / (lambda * n)).powi(2))
        .collect();
    let mut best = Inner {
        sigma: 0.0,
        kappa: 0.0,
        sse: sse(data, lambda, 0.0, 0.0),
    };
    for _ in 0..REWEIGHT_PASSES {
        let (sigma, kappa) = nnls2(data, lambda, &weights);
        let e = sse(data, lambda, sigma, kappa);
        if e < best.sse {
            best = Inner {
                sigma,
                kappa,
                sse: e,
            };
        }
        for (w, &(n, _)) in weights.iter_mut().zip(data) {
            let xh = usl(lambda, sigma, kappa, n);
            if xh.is_finite() && xh > 0.0 {
                *w = (xh * xh / (lambda * n)).powi(2);
            }
        }
    }
    best
}

/// Weighted non-negative least squares of `y = σ·a + κ·b` with
/// `y = N·λ/X − 1`, `a = N−1`, `b = N·(N−1)`.
fn nnls2(data: &[(f64, f64)], lambda: f64, weights: &[f64]) -> (f64, f64) {
    let (mut saa, mut sab, mut sbb, mut say, mut sby) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&(n, x), &w) in data.iter().zip(weights) {
        let y = n * lambda / x - 1.0;
        let a = n - 1.0;
        let b = n * (n - 1.0);
        saa += w * a * a;
        sab += w * a * b;
        sbb += w * b * b;
        say += w * a * y;
        sby += w * b * y;
    }
    let objective = |s: f64, k: f64| -> f64 {
        data.iter()
            .zip(weights)
            .map(|(&(n, x), &w)| {
                let y = n * lambda / x - 1.0;
                w * (y - s * (n - 1.0) - k * n * (n - 1.0)).powi(2)
            })
            .sum()
    };

    // Unconstrained solution, with the columns scaled to unit norm for a stable determinant.
    if saa > 0.0 && sbb > 0.0 {
        let (da, db) = (saa.sqrt(), sbb.sqrt());
        let r = sab / (da * db);
        let det = 1.0 - r * r;
        if det > 1e-12 {
            let (ua, ub) = (say / da, sby / db);
            let sigma = (ua - r * ub) / det / da;
            let kappa = (ub - r * ua) / det / db;
            if sigma >= 0.0 && kappa >= 0.0 && sigma.is_finite() && kappa.is_finite() {
                return (sigma, kappa);
            }
        }
    }
    // Otherwise the constrained optimum lies on a face: pin one coefficient at 0.
    let candidates = [
        (if saa > 0.0 { (say / saa).max(0.0) } else { 0.0 }, 0.0),
        (0.0, if sbb > 0.0 { (sby / sbb).max(0.0) } else { 0.0 }),
        (0.0, 0.0),
    ];
    let mut best = (0.0, 0.0);
    let mut best_obj = f64::INFINITY;
    for (s, k) in candidates {
        let o = objective(s, k);
        if s.is_finite() && k.is_finite() && o < best_obj {
            best_obj = o;
            best = (s, k);
        }
    }
    best
}

/// Golden-section search for the `λ` minimising the throughput error on `[a, b]`, which
/// brackets the best grid point `x0` (error `e0`). Never returns worse than `x0`.
fn golden(data: &[(f64, f64)], mut a: f64, mut b: f64, x0: f64, e0: f64) -> f64 {
    const INV_PHI: f64 = 0.618_033_988_749_894_8;
    let f = |l: f64| inner(data, l).sse;
    let mut c = b - INV_PHI * (b - a);
    let mut d = a + INV_PHI * (b - a);
    let mut fc = f(c);
    let mut fd = f(d);
    for _ in 0..GOLDEN_ITERATIONS {
        if (b - a) <= 1e-13 * b.abs().max(1e-300) {
            break;
        }
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - INV_PHI * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + INV_PHI * (b - a);
            fd = f(d);
        }
    }
    let (x, e) = if fc < fd { (c, fc) } else { (d, fd) };
    if e <= e0 {
        x
    } else {
        x0
    }
}

/// Formats `x` with `digits` significant digits (never scientific notation).
fn sig(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWEEP: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0];

    fn points(lambda: f64, sigma: f64, kappa: f64, noise: impl Fn(usize) -> f64) -> Vec<UslPoint> {
        SWEEP
            .iter()
            .enumerate()
            .map(|(i, &n)| UslPoint {
                concurrency: n,
                throughput: usl(lambda, sigma, kappa, n) * (1.0 + noise(i)),
            })
            .collect()
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn recovers_exact_parameters() {
        let fit = fit(&points(1000.0, 0.05, 0.001, |_| 0.0)).unwrap();
        assert!(close(fit.lambda, 1000.0, 0.01), "{fit:?}");
        assert!(close(fit.sigma, 0.05, 0.01), "{fit:?}");
        assert!(close(fit.kappa, 0.001, 0.01), "{fit:?}");
        assert!(fit.r_squared > 0.999_999, "{fit:?}");
        let n_star = (0.95_f64 / 0.001).sqrt();
        assert!(
            close(fit.peak_concurrency.unwrap(), n_star, 0.01),
            "{fit:?}"
        );
        assert!(close(
            fit.peak_throughput.unwrap(),
            usl(1000.0, 0.05, 0.001, n_star),
            0.01
        ));
        assert_eq!(fit.measured_peak_concurrency, 32.0);
        assert!(close(
            fit.predict(10.0),
            usl(1000.0, 0.05, 0.001, 10.0),
            0.01
        ));
        let text = fit.explain();
        assert!(text.contains("σ=0.050"), "{text}");
        assert!(text.contains("κ=0.0010"), "{text}");
        assert!(text.contains("N≈31"), "{text}");
        assert!(!text.contains("beyond"), "{text}");
        assert_eq!(fit.max_measured_concurrency, 64.0);
    }

    #[test]
    fn recovers_parameters_without_the_first_client() {
        // λ must be extrapolated when N=1 was not measured.
        let pts: Vec<UslPoint> = [4.0, 8.0, 16.0, 32.0, 64.0]
            .iter()
            .map(|&n| UslPoint {
                concurrency: n,
                throughput: usl(250.0, 0.2, 0.0005, n),
            })
            .collect();
        let fit = fit(&pts).unwrap();
        assert!(close(fit.lambda, 250.0, 0.01), "{fit:?}");
        assert!(close(fit.sigma, 0.2, 0.01), "{fit:?}");
        assert!(close(fit.kappa, 0.0005, 0.01), "{fit:?}");
    }

    #[test]
    fn recovers_parameters_from_noisy_points() {
        // ±3% deterministic noise, alternating in sign and varying in size.
        let noise =
            |i: usize| 0.03 * if i % 2 == 0 { 1.0 } else { -1.0 } * ((i % 3) as f64 + 1.0) / 3.0;
        let fit = fit(&points(1000.0, 0.05, 0.001, noise)).unwrap();
        assert!(close(fit.lambda, 1000.0, 0.05), "{fit:?}");
        assert!(close(fit.sigma, 0.05, 0.2), "{fit:?}");
        assert!(close(fit.kappa, 0.001, 0.15), "{fit:?}");
        assert!(close(fit.peak_concurrency.unwrap(), 30.8, 0.1), "{fit:?}");
        assert!(close(
            fit.peak_throughput.unwrap(),
            usl(1000.0, 0.05, 0.001, 30.8),
            0.05
        ));
        assert!(fit.r_squared > 0.95, "{fit:?}");
    }

    #[test]
    fn pure_linear_scaling_has_no_peak() {
        let fit = fit(&points(500.0, 0.0, 0.0, |_| 0.0)).unwrap();
        assert!(close(fit.lambda, 500.0, 0.001), "{fit:?}");
        assert_eq!((fit.sigma, fit.kappa), (0.0, 0.0), "{fit:?}");
        assert_eq!(fit.peak_concurrency, None);
        assert_eq!(fit.peak_throughput, None);
        let text = fit.explain();
        assert!(!text.is_empty());
    }

    #[test]
    fn exactly_linear_points_give_zero_coefficients_and_no_peak() {
        let pts: Vec<UslPoint> = SWEEP
            .iter()
            .map(|&n| UslPoint {
                concurrency: n,
                throughput: 500.0 * n,
            })
            .collect();
        let fit = fit(&pts).unwrap();
        assert_eq!((fit.sigma, fit.kappa), (0.0, 0.0), "{fit:?}");
        assert_eq!(fit.peak_concurrency, None);
        assert_eq!(fit.peak_throughput, None);
        assert!(fit.explain().contains("linearly"), "{}", fit.explain());
    }

    #[test]
    fn amdahl_only_plateaus_without_peak() {
        let fit = fit(&points(1000.0, 0.1, 0.0, |_| 0.0)).unwrap();
        assert!(close(fit.lambda, 1000.0, 0.01), "{fit:?}");
        assert!(close(fit.sigma, 0.1, 0.01), "{fit:?}");
        assert_eq!(fit.kappa, 0.0, "{fit:?}");
        assert_eq!(fit.peak_concurrency, None);
        assert!(fit.explain().contains("plateaus"), "{}", fit.explain());
    }

    #[test]
    fn order_and_repeats_do_not_matter() {
        let mut pts = points(1000.0, 0.05, 0.001, |_| 0.0);
        pts.extend(points(1000.0, 0.05, 0.001, |_| 0.0));
        pts.reverse();
        let fit = fit(&pts).unwrap();
        assert!(close(fit.sigma, 0.05, 0.01), "{fit:?}");
    }

    #[test]
    fn rejects_bad_input_naming_the_value() {
        let p = |n: f64, x: f64| UslPoint {
            concurrency: n,
            throughput: x,
        };
        assert_eq!(
            fit(&[p(1.0, 1.0), p(2.0, 2.0)]),
            Err(UslError::TooFewPoints { count: 2 })
        );
        assert_eq!(
            fit(&[p(1.0, 1.0), p(2.0, 2.0), p(2.0, 2.1), p(1.0, 1.1)]),
            Err(UslError::TooFewConcurrencies { distinct: 2 })
        );
        let e = fit(&[p(1.0, 1.0), p(f64::NAN, 2.0), p(3.0, 3.0)]).unwrap_err();
        assert!(matches!(
            e,
            UslError::NonFinite {
                index: 1,
                field: "concurrency",
                ..
            }
        ));
        assert!(e.to_string().contains("NaN"), "{e}");
        let e = fit(&[p(1.0, 1.0), p(2.0, f64::INFINITY), p(3.0, 3.0)]).unwrap_err();
        assert!(matches!(
            e,
            UslError::NonFinite {
                index: 1,
                field: "throughput",
                ..
            }
        ));
        assert_eq!(
            fit(&[p(1.0, 1.0), p(2.0, 2.0), p(3.0, 0.0)]),
            Err(UslError::NonPositiveThroughput {
                index: 2,
                value: 0.0
            })
        );
        let e = fit(&[p(1.0, -5.0), p(2.0, 2.0), p(3.0, 3.0)]).unwrap_err();
        assert!(e.to_string().contains("-5"), "{e}");
        assert_eq!(
            fit(&[p(0.5, 1.0), p(2.0, 2.0), p(3.0, 3.0)]),
            Err(UslError::ConcurrencyBelowOne {
                index: 0,
                value: 0.5
            })
        );
        assert!(fit(&[p(0.5, 1.0), p(2.0, 2.0), p(3.0, 3.0)])
            .unwrap_err()
            .to_string()
            .contains("0.5"));
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let p = |n: f64, x: f64| UslPoint {
            concurrency: n,
            throughput: x,
        };
        for pts in [
            vec![p(1.0, 1e-300), p(2.0, 1e300), p(3.0, 1e-300)],
            vec![p(1.0, 1.0), p(1e150, 1.0), p(1e300, 1.0)],
            vec![p(1.0, f64::MAX), p(2.0, f64::MAX), p(3.0, f64::MAX)],
            vec![p(1.0, 5.0), p(2.0, 5.0), p(3.0, 5.0)],
        ] {
            if let Ok(fit) = fit(&pts) {
                assert!(fit.lambda.is_finite() && fit.sigma >= 0.0 && fit.kappa >= 0.0);
                let _ = fit.explain();
            }
        }
    }

    #[test]
    fn retrograde_from_the_start_is_explained() {
        let fit = UslFit {
            lambda: 100.0,
            sigma: 0.5,
            kappa: 2.0,
            r_squared: 1.0,
            peak_concurrency: Some(0.5),
            peak_throughput: Some(40.0),
            measured_peak_concurrency: 1.0,
            measured_peak_throughput: 100.0,
            max_measured_concurrency: 8.0,
        };
        assert!(fit.explain().contains("from the first client"));
        let far = UslFit {
            peak_concurrency: Some(500.0),
            kappa: 0.000004,
            sigma: 0.0,
            ..fit
        };
        let text = far.explain();
        assert!(text.contains("N≈500"), "{text}");
        assert!(text.contains("beyond the largest measured N=8"), "{text}");
    }
}
