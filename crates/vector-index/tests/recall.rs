//! Recall measurement: ground truth and recall@k against hand-checked examples, and the
//! `ef` sweep over a reference searcher, a deliberately poor one and the real index.

use vector_index::data::{synthetic, synthetic_queries, DataError, Dataset};
use vector_index::recall::{
    ground_truth, recall_at_k, rss_bytes, sweep, ExactSearcher, Searcher, SweepPoint,
};
use vector_index::{Index, IndexParams, Metric};

fn points(dim: usize, values: &[f32]) -> Dataset {
    Dataset {
        dim,
        data: values.to_vec(),
    }
}

#[test]
fn recall_at_k_matches_a_hand_checked_example() {
    let truth = vec![vec![1, 2, 3], vec![4, 5, 6]];
    // Query 0 finds 2 of 3, query 1 finds 1 of 3: (2/3 + 1/3) / 2.
    let found = vec![vec![1, 2, 9], vec![6, 7, 8]];
    assert!((recall_at_k(&truth, &found, 3) - 0.5).abs() < 1e-12);
    // At k = 1 only the first id of each list counts: query 0 hit, query 1 missed.
    assert!((recall_at_k(&truth, &found, 1) - 0.5).abs() < 1e-12);
    // Order within the top k does not matter.
    let shuffled = vec![vec![3, 1, 2], vec![6, 4, 5]];
    assert!((recall_at_k(&truth, &shuffled, 3) - 1.0).abs() < 1e-12);
}

#[test]
fn recall_at_k_edge_cases() {
    let truth = vec![vec![1, 2, 3]];
    // An id returned three times counts once.
    assert!((recall_at_k(&truth, &[vec![1, 1, 1]], 3) - 1.0 / 3.0).abs() < 1e-12);
    // Extra ids beyond k are ignored.
    assert!((recall_at_k(&truth, &[vec![7, 8, 9, 1, 2, 3]], 3)).abs() < 1e-12);
    // A missing result list counts as nothing found.
    assert_eq!(recall_at_k(&[vec![1], vec![2]], &[vec![1]], 1), 0.5);
    // Fewer true neighbours than k (a tiny base): divide by what exists.
    assert_eq!(recall_at_k(&[vec![4, 5]], &[vec![5, 4]], 10), 1.0);
    // Nothing to find counts as found; no queries at all is 0.
    assert_eq!(recall_at_k(&[vec![]], &[vec![]], 10), 1.0);
    assert_eq!(recall_at_k(&[], &[], 10), 0.0);
}

#[test]
fn ground_truth_l2_is_exact_with_ties_broken_by_smaller_id() {
    // Points 0, 1, ..., 9 on a line.
    let base = points(1, &(0..10).map(|i| i as f32).collect::<Vec<_>>());
    // 3.4: 3, 4, 2, 5; 2.5: 2 and 3 tie, then 1 and 4 tie; 100: from the top down.
    let queries = points(1, &[3.4, 2.5, 100.0]);
    let truth = ground_truth(&base, &queries, 4, Metric::L2, 2).expect("same dimension");
    assert_eq!(
        truth,
        vec![vec![3, 4, 2, 5], vec![2, 3, 1, 4], vec![9, 8, 7, 6]]
    );
    // k beyond the base returns every row; k = 0 returns nothing.
    let all = ground_truth(&base, &queries, 50, Metric::L2, 1).expect("same dimension");
    assert!(all.iter().all(|ids| ids.len() == 10));
    let none = ground_truth(&base, &queries, 0, Metric::L2, 1).expect("same dimension");
    assert!(none.iter().all(|ids| ids.is_empty()));
}

#[test]
fn ground_truth_cosine_ranks_by_angle_not_length() {
    let base = points(
        2,
        &[
            10.0, 0.0, // 0: along x, long
            0.0, 1.0, // 1: along y
            1.0, 1.0, // 2: 45 degrees
            -1.0, 0.0, // 3: opposite x
            0.1, 0.01, // 4: almost along x, short
        ],
    );
    let queries = points(2, &[2.0, 0.0]);
    let truth = ground_truth(&base, &queries, 5, Metric::Cosine, 1).expect("same dimension");
    // 0 (cos 1) ties with nothing, 4 (cos ≈ 0.995), 2 (0.707), 1 (0), 3 (-1).
    assert_eq!(truth, vec![vec![0, 4, 2, 1, 3]]);
    // Under L2 the short vector 4 wins instead.
    let l2 = ground_truth(&base, &queries, 2, Metric::L2, 1).expect("same dimension");
    assert_eq!(l2, vec![vec![2, 4]]);
}

#[test]
fn ground_truth_is_the_same_on_any_number_of_threads() {
    let base = synthetic(600, 12, 11).expect("valid sizes");
    let queries = synthetic_queries(11, 600, 40, 12).expect("valid sizes");
    let one = ground_truth(&base, &queries, 10, Metric::L2, 1).expect("same dimension");
    let many = ground_truth(&base, &queries, 10, Metric::L2, 5).expect("same dimension");
    assert_eq!(one, many);
    assert_eq!(one.len(), 40);
    assert!(one
        .iter()
        .all(|ids| ids.len() == 10 && ids.iter().all(|&id| id < 600)));
}

#[test]
fn ground_truth_rejects_mismatched_dimensions() {
    let base = points(2, &[0.0, 1.0]);
    let queries = points(3, &[0.0, 1.0, 2.0]);
    let err = ground_truth(&base, &queries, 1, Metric::L2, 1).expect_err("2 vs 3");
    assert_eq!(
        err,
        DataError::DimensionMismatch {
            base: 2,
            queries: 3
        }
    );
    assert!(err.to_string().contains("dimension 3"), "{err}");
}

/// A searcher that finds the right answers for even queries and nothing for odd ones.
struct HalfBlind<'a> {
    exact: ExactSearcher<'a>,
    queries: &'a Dataset,
}

impl Searcher for HalfBlind<'_> {
    fn search_ids(&self, query: &[f32], k: usize, ef: usize) -> Vec<u64> {
        let index = self.queries.rows().position(|q| q == query).unwrap_or(0);
        if index % 2 == 0 {
            self.exact.search_ids(query, k, ef)
        } else {
            Vec::new()
        }
    }
}

fn check_point_shape(p: &SweepPoint) {
    assert!((0.0..=1.0).contains(&p.recall), "{p:?}");
    assert!(p.qps > 0.0, "{p:?}");
    assert!(
        p.p50_us <= p.p95_us && p.p95_us <= p.p99_us && p.p99_us <= p.max_us,
        "{p:?}"
    );
}

#[test]
fn sweep_of_the_exact_searcher_has_full_recall_at_every_ef() {
    let base = synthetic(500, 8, 21).expect("valid sizes");
    let queries = synthetic_queries(21, 500, 30, 8).expect("valid sizes");
    let truth = ground_truth(&base, &queries, 5, Metric::L2, 2).expect("same dimension");
    let exact = ExactSearcher::new(&base, Metric::L2);
    let curve = sweep(&exact, &queries, &truth, 5, &[8, 32, 128], 2);
    assert_eq!(
        curve.iter().map(|p| p.ef).collect::<Vec<_>>(),
        vec![8, 32, 128]
    );
    for p in &curve {
        check_point_shape(p);
        assert_eq!(p.recall, 1.0, "{p:?}");
    }
    let json = serde_json::to_value(&curve[0]).expect("serialisable");
    for field in [
        "ef", "recall", "qps", "p50_us", "p95_us", "p99_us", "max_us",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    assert!(sweep(&exact, &queries, &truth, 5, &[], 2).is_empty());
}

#[test]
fn sweep_counts_what_a_poor_searcher_misses() {
    let base = synthetic(300, 6, 5).expect("valid sizes");
    let queries = synthetic_queries(5, 300, 20, 6).expect("valid sizes");
    let truth = ground_truth(&base, &queries, 3, Metric::L2, 1).expect("same dimension");
    let poor = HalfBlind {
        exact: ExactSearcher::new(&base, Metric::L2),
        queries: &queries,
    };
    let curve = sweep(&poor, &queries, &truth, 3, &[10], 3);
    assert_eq!(curve.len(), 1);
    assert!((curve[0].recall - 0.5).abs() < 1e-12, "{:?}", curve[0]);
}

#[test]
fn sweep_of_the_index_gives_recall_between_0_and_1_rising_with_ef() {
    let base = synthetic(2_000, 16, 9).expect("valid sizes");
    let queries = synthetic_queries(9, 2_000, 50, 16).expect("valid sizes");
    let index = Index::new(IndexParams::new(16, Metric::L2)).expect("default parameters");
    let items: Vec<(u64, Vec<f32>)> = base
        .rows()
        .enumerate()
        .map(|(i, row)| (i as u64, row.to_vec()))
        .collect();
    index.add_batch(&items).expect("valid vectors");
    let truth = ground_truth(&base, &queries, 10, Metric::L2, 2).expect("same dimension");
    let curve = sweep(&index, &queries, &truth, 10, &[16, 128], 2);
    for p in &curve {
        check_point_shape(p);
    }
    // Loose: a larger candidate list does not find much less, and ef 128 over 2,000 clustered
    // points finds most true neighbours.
    assert!(curve[1].recall + 0.05 >= curve[0].recall, "{curve:?}");
    assert!(curve[1].recall >= 0.8, "{curve:?}");
}

#[test]
fn rss_is_reported_on_linux() {
    if cfg!(target_os = "linux") {
        let rss = rss_bytes().expect("VmRSS on Linux");
        assert!(rss > 1 << 20, "{rss} bytes is implausibly small");
    }
}
