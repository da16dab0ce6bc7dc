//! Latency summaries for tables and metrics: plain samples in ms and histograms in µs.
//! There is one quantile definition, nearest rank ([`collector::summary::nearest_rank`]),
//! the one `hdrhistogram`'s `value_at_quantile` uses, so a p99 of samples and a p99 of a
//! histogram of the same samples agree (to the histogram's precision).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The `q` quantile (0..=1) of `v` by the nearest-rank method; 0 for an empty slice.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    collector::summary::nearest_rank(&s, q)
}

/// p50, p99 and max of `v` (nearest rank; zeros for an empty slice).
pub(crate) fn p50_p99_max(v: &[f64]) -> (f64, f64, f64) {
    (quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1.0))
}

/// p50, p99 and max of `v` as table cells (two decimals).
pub(crate) fn quantile_cells(v: &[f64]) -> [String; 3] {
    let (p50, p99, max) = p50_p99_max(v);
    [p50, p99, max].map(|x| format!("{x:.2}"))
}

/// `d` in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The slowest of `(start_s, latency_ms)` samples per window of `window_s`, by start time:
/// `[window start s, max latency ms]` points for a chart.
pub(crate) fn slowest_per_window(
    samples: impl IntoIterator<Item = (f64, f64)>,
    window_s: f64,
) -> Vec<[f64; 2]> {
    let mut by: BTreeMap<u64, f64> = BTreeMap::new();
    for (start_s, latency_ms) in samples {
        let w = (start_s / window_s).floor().max(0.0) as u64;
        let e = by.entry(w).or_insert(0.0);
        *e = e.max(latency_ms);
    }
    by.into_iter()
        .map(|(w, v)| [w as f64 * window_s, v])
        .collect()
}

/// A latency histogram in µs, 1 µs to one hour at 3 significant digits
/// ([`collector::summary::micros_histogram`]).
pub(crate) fn new_hist() -> Histogram<u64> {
    collector::summary::micros_histogram()
}

/// Records `us` (clamped into the histogram's range).
pub(crate) fn record_us(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 3_600_000_000));
}

/// The `q` quantile in ms (0 for an empty histogram).
pub(crate) fn q_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// The maximum in ms (0 for an empty histogram).
pub(crate) fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

/// p50, p99 and max of `h` as table cells (ms, two decimals).
pub(crate) fn hist_cells(h: &Histogram<u64>) -> [String; 3] {
    [q_ms(h, 0.5), q_ms(h, 0.99), max_ms(h)].map(|v| format!("{v:.2}"))
}
