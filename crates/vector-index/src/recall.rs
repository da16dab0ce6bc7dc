//! Recall, measured the ann-benchmarks way: exact brute-force ground truth, recall@k, and an
//! `ef` sweep giving recall against queries per second and per-query latency.
//!
//! Anything that answers k-nearest-neighbour queries can be measured through the
//! [`Searcher`] trait: the [`Index`](crate::Index), the [`ExactSearcher`] reference, or a peer
//! library in a comparison suite. Ids are row numbers of the base [`Dataset`].

use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{DataError, Dataset};
use crate::params::Metric;

/// Something that answers k-nearest-neighbour queries, for [`sweep`].
pub trait Searcher: Sync {
    /// The ids of (about) the `k` nearest vectors to `query`, nearest first, searching with
    /// candidate list size `ef`. A searcher that fails returns an empty list (every miss
    /// then counts against its recall).
    fn search_ids(&self, query: &[f32], k: usize, ef: usize) -> Vec<u64>;
}

impl Searcher for crate::Index {
    /// [`Index::search`](crate::Index::search) with no exclusions; an error gives an empty
    /// list.
    fn search_ids(&self, query: &[f32], k: usize, ef: usize) -> Vec<u64> {
        match self.search(query, k, Some(ef), &[]) {
            Ok(hits) => hits.into_iter().map(|hit| hit.id).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Exact search by brute force over a [`Dataset`] (ids are row numbers); `ef` is ignored.
/// The reference [`ground_truth`] is computed with.
#[derive(Debug)]
pub struct ExactSearcher<'a> {
    base: &'a Dataset,
    metric: Metric,
    /// Euclidean norms of the rows (cosine only).
    norms: Vec<f32>,
}

impl<'a> ExactSearcher<'a> {
    /// A brute-force searcher over `base` under `metric`.
    pub fn new(base: &'a Dataset, metric: Metric) -> ExactSearcher<'a> {
        let norms = match metric {
            Metric::L2 => Vec::new(),
            Metric::Cosine => base.rows().map(|row| dot(row, row).sqrt()).collect(),
        };
        ExactSearcher {
            base,
            metric,
            norms,
        }
    }

    /// The `k` nearest rows to `query` with their distances (squared euclidean under L2,
    /// `1 − cos` under cosine), nearest first, ties broken by the smaller row number.
    /// A query of the wrong dimension is compared over the common prefix only; callers
    /// check dimensions first (as [`ground_truth`] does).
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(f32, u64)> {
        let mut top = TopK::new(k);
        if k == 0 {
            return Vec::new();
        }
        match self.metric {
            Metric::L2 => {
                for (i, row) in self.base.rows().enumerate() {
                    top.offer(squared_l2(row, query), i as u64);
                }
            }
            Metric::Cosine => {
                let query_norm = dot(query, query).sqrt();
                for (i, row) in self.base.rows().enumerate() {
                    let denominator = self.norms[i] * query_norm;
                    let cos = if denominator > 0.0 {
                        dot(row, query) / denominator
                    } else {
                        0.0 // a zero vector has no direction: treat it as orthogonal
                    };
                    top.offer(1.0 - cos, i as u64);
                }
            }
        }
        top.into_sorted()
    }
}

impl Searcher for ExactSearcher<'_> {
    fn search_ids(&self, query: &[f32], k: usize, _ef: usize) -> Vec<u64> {
        self.nearest(query, k)
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }
}

/// The exact `k` nearest base rows (by row number) of every query, nearest first: squared
/// euclidean distance under L2, `1 − cos` (on normalised vectors) under cosine, ties broken
/// by the smaller row number so the answer is deterministic. Queries are spread over
/// `threads` threads (at least 1). Errors if the dimensions of `base` and `queries` differ.
pub fn ground_truth(
    base: &Dataset,
    queries: &Dataset,
    k: usize,
    metric: Metric,
    threads: usize,
) -> Result<Vec<Vec<u64>>, DataError> {
    if base.dim != queries.dim {
        return Err(DataError::DimensionMismatch {
            base: base.dim,
            queries: queries.dim,
        });
    }
    let exact = ExactSearcher::new(base, metric);
    Ok(parallel_map(queries.len(), threads, |i| {
        exact.search_ids(queries.row(i), k, 0)
    }))
}

/// Mean over queries of |found ∩ truth| / min(k, |truth|), looking at the first `k` ids of
/// each list; an id found twice counts once. A query with nothing to find (empty truth or
/// `k` = 0) counts as fully recalled; a missing `found` list counts as nothing found. No
/// queries: 0.
pub fn recall_at_k(truth: &[Vec<u64>], found: &[Vec<u64>], k: usize) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let mut total = 0.0;
    for (i, expected) in truth.iter().enumerate() {
        let expected = &expected[..expected.len().min(k)];
        if expected.is_empty() {
            total += 1.0;
            continue;
        }
        let got = found.get(i).map(|f| &f[..f.len().min(k)]).unwrap_or(&[]);
        let mut distinct: Vec<u64> = got.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let hits = distinct.iter().filter(|id| expected.contains(id)).count();
        total += hits as f64 / expected.len() as f64;
    }
    total / truth.len() as f64
}

/// One point of the recall-vs-speed curve: every query run once at one `ef`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The candidate list size searched with.
    pub ef: usize,
    /// Recall@k against the exact ground truth, in [0, 1].
    pub recall: f64,
    /// Queries per second: number of queries / wall time of the whole batch.
    pub qps: f64,
    /// Median per-query latency, microseconds.
    pub p50_us: f64,
    /// 95th-percentile per-query latency, microseconds.
    pub p95_us: f64,
    /// 99th-percentile per-query latency, microseconds.
    pub p99_us: f64,
    /// Slowest query, microseconds.
    pub max_us: f64,
}

/// For each `ef` in `efs`: runs every query (spread over `threads` threads, at least 1)
/// through `searcher` asking for `k` ids, and reports recall@k against `truth`, QPS (queries
/// / wall time) and per-query latency percentiles (from an HDR histogram, 3 significant
/// digits).
pub fn sweep(
    searcher: &dyn Searcher,
    queries: &Dataset,
    truth: &[Vec<u64>],
    k: usize,
    efs: &[usize],
    threads: usize,
) -> Vec<SweepPoint> {
    let mut points = Vec::with_capacity(efs.len());
    for &ef in efs {
        let started = Instant::now();
        let results = parallel_map(queries.len(), threads, |i| {
            let t = Instant::now();
            let ids = searcher.search_ids(queries.row(i), k, ef);
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            (ids, ns)
        });
        let wall_s = started.elapsed().as_secs_f64();
        let (found, latencies_ns): (Vec<Vec<u64>>, Vec<u64>) = results.into_iter().unzip();
        let [p50, p95, p99, max] = quantiles_ns(&latencies_ns, [0.5, 0.95, 0.99, 1.0]);
        let qps = if wall_s > 0.0 {
            queries.len() as f64 / wall_s
        } else {
            0.0
        };
        points.push(SweepPoint {
            ef,
            recall: recall_at_k(truth, &found, k),
            qps,
            p50_us: p50 as f64 / 1_000.0,
            p95_us: p95 as f64 / 1_000.0,
            p99_us: p99 as f64 / 1_000.0,
            max_us: max as f64 / 1_000.0,
        });
    }
    points
}

/// Resident set size of this process (`VmRSS` in `/proc/self/status`), bytes; `None` where
/// there is no such file (off Linux) or it cannot be parsed.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Quantiles of latencies in nanoseconds, through an HDR histogram (1 ns to 1 h, 3
/// significant digits); all 0 for no samples.
fn quantiles_ns<const N: usize>(samples: &[u64], quantiles: [f64; N]) -> [u64; N] {
    let mut out = [0u64; N];
    if samples.is_empty() {
        return out;
    }
    match hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3) {
        Ok(mut histogram) => {
            for &ns in samples {
                histogram.saturating_record(ns.max(1));
            }
            for (o, q) in out.iter_mut().zip(quantiles) {
                *o = if q >= 1.0 {
                    histogram.max()
                } else {
                    histogram.value_at_quantile(q)
                };
            }
        }
        Err(_) => {
            // Cannot happen with constant bounds; exact quantiles by sorting instead.
            let mut sorted = samples.to_vec();
            sorted.sort_unstable();
            for (o, q) in out.iter_mut().zip(quantiles) {
                let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
                *o = sorted[rank.min(sorted.len()) - 1];
            }
        }
    }
    out
}

/// `f(0), …, f(n - 1)` computed on `threads` threads (the calling thread is one of them),
/// which take indices from a shared counter. If a helper thread cannot be spawned, the
/// others do its share.
fn parallel_map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    let work = || {
        let mut mine = Vec::new();
        for _ in 0..n {
            let i = next.fetch_add(1, AtomicOrdering::Relaxed);
            if i >= n {
                break;
            }
            mine.push((i, f(i)));
        }
        // A poisoned lock means another worker panicked; keep what it left.
        let mut all = done.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(mine);
    };
    let helpers = threads.max(1).min(n.max(1)) - 1;
    std::thread::scope(|scope| {
        for h in 0..helpers {
            // Spawn failure is tolerated: the remaining workers share the queue.
            let _ = std::thread::Builder::new()
                .name(format!("recall-{h}"))
                .spawn_scoped(scope, work);
        }
        work();
    });
    let mut all = done.into_inner().unwrap_or_else(|e| e.into_inner());
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// The `k` smallest `(distance, id)` pairs offered, ordered by distance then id.
struct TopK {
    k: usize,
    /// Sorted ascending by (distance, id); at most `k` long.
    items: Vec<(f32, u64)>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            items: Vec::with_capacity(k.min(4096) + 1),
        }
    }

    fn offer(&mut self, distance: f32, id: u64) {
        if self.k == 0 {
            return;
        }
        if self.items.len() == self.k {
            if let Some(&(worst_d, worst_id)) = self.items.last() {
                if order(distance, id, worst_d, worst_id) != Ordering::Less {
                    return;
                }
            }
            self.items.pop();
        }
        let at = self
            .items
            .partition_point(|&(d, i)| order(d, i, distance, id) == Ordering::Less);
        self.items.insert(at, (distance, id));
    }

    fn into_sorted(self) -> Vec<(f32, u64)> {
        self.items
    }
}

/// Total order on (distance, id): distance first (`total_cmp`), then the smaller id.
fn order(d1: f32, id1: u64, d2: f32, id2: u64) -> Ordering {
    d1.total_cmp(&d2).then(id1.cmp(&id2))
}

/// Lanes of the distance loops (lets the compiler vectorise them).
const LANES: usize = 8;

/// Squared euclidean distance.
fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Dot product.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn top_k_keeps_the_smallest_with_ties_by_id() {
        let mut top = TopK::new(3);
        for (d, id) in [(5.0, 0), (1.0, 1), (1.0, 2), (0.5, 3), (1.0, 4), (9.0, 5)] {
            top.offer(d, id);
        }
        assert_eq!(top.into_sorted(), vec![(0.5, 3), (1.0, 1), (1.0, 2)]);
        let mut none = TopK::new(0);
        none.offer(1.0, 1);
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn distance_kernels_match_the_plain_formulas() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 3.0 - i as f32).collect();
        let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((squared_l2(&a, &b) - l2).abs() <= 1e-3 * l2.abs());
        assert!((dot(&a, &b) - d).abs() <= 1e-3 * d.abs());
    }

    #[test]
    fn parallel_map_keeps_order_whatever_the_thread_count() {
        for threads in [0, 1, 3, 64] {
            let out = parallel_map(10, threads, |i| i * i);
            assert_eq!(out, (0..10).map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(parallel_map(0, 4, |i| i).is_empty());
    }

    #[test]
    fn quantiles_of_nothing_are_zero_and_of_samples_are_close() {
        assert_eq!(quantiles_ns(&[], [0.5, 1.0]), [0, 0]);
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let [p50, max] = quantiles_ns(&samples, [0.5, 1.0]);
        assert!((499_000..=501_000).contains(&p50), "p50 {p50}");
        assert!((999_000..=1_001_000).contains(&max), "max {max}");
    }
}
