//! The index through its public API: every validation error with its message, the search
//! guarantees against a brute-force model over random add/remove/re-add sequences, the
//! degenerate indices, cosine, rebuilds, and a loose recall check on clustered data.

use std::collections::{HashMap, HashSet};

use vector_index::{Hit, Id, Index, IndexParams, Metric, VectorError};

/// Small, fast graph parameters for debug-build tests.
fn params(dim: usize, metric: Metric) -> IndexParams {
    IndexParams {
        m: 8,
        ef_construction: 32,
        ef_search: 32,
        ..IndexParams::new(dim, metric)
    }
}

fn random_vector(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// `n` points around `n / 50 + 1` random centres.
fn clustered(rng: &mut fastrand::Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..n / 50 + 1).map(|_| random_vector(rng, dim)).collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.usize(..centres.len())];
            c.iter()
                .map(|x| x + (rng.f32() + rng.f32() + rng.f32() - 1.5) * 0.15)
                .collect()
        })
        .collect()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn err_message<T: std::fmt::Debug>(r: Result<T, VectorError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.to_string(),
    }
}

/// Checks the guarantees every answer must meet against `model` (id → vector).
fn check_answer(
    hits: &[Hit],
    k: usize,
    exclude: &[Id],
    model: &HashMap<Id, Vec<f32>>,
    query: &[f32],
    what: &str,
) {
    let excluded: HashSet<Id> = exclude.iter().copied().collect();
    let eligible = model.keys().filter(|id| !excluded.contains(id)).count();
    assert_eq!(hits.len(), k.min(eligible), "{what}: length");
    let mut seen = HashSet::new();
    for w in hits.windows(2) {
        assert!(
            w[0].distance <= w[1].distance,
            "{what}: not sorted: {hits:?}"
        );
    }
    for h in hits {
        assert!(seen.insert(h.id), "{what}: id {} twice", h.id);
        assert!(!excluded.contains(&h.id), "{what}: excluded id {}", h.id);
        let v = model
            .get(&h.id)
            .unwrap_or_else(|| panic!("{what}: id {} is not live", h.id));
        let d = l2(query, v);
        assert!(
            (h.distance - d).abs() <= 1e-4 * (1.0 + d),
            "{what}: id {} distance {} but the model says {d}",
            h.id,
            h.distance
        );
    }
}

/// The exact answer's distances, from the model.
fn model_distances(
    model: &HashMap<Id, Vec<f32>>,
    query: &[f32],
    k: usize,
    exclude: &[Id],
) -> Vec<f32> {
    let mut d: Vec<f32> = model
        .iter()
        .filter(|(id, _)| !exclude.contains(id))
        .map(|(_, v)| l2(query, v))
        .collect();
    d.sort_by(f32::total_cmp);
    d.truncate(k);
    d
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn wrong_dimension_is_an_error_everywhere() {
    let index = Index::new(IndexParams::new(128, Metric::L2)).unwrap();
    let e = index.add(1, &[1.0, 2.0, 3.0]).unwrap_err();
    assert_eq!(
        e,
        VectorError::WrongDimension {
            expected: 128,
            got: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "vector has 3 components: expected 128 (the index's dimension)"
    );
    assert!(matches!(
        index.search(&[0.0; 127], 1, None, &[]),
        Err(VectorError::WrongDimension {
            expected: 128,
            got: 127
        })
    ));
    assert!(matches!(
        index.exact_search(&[0.0; 129], 1, &[]),
        Err(VectorError::WrongDimension {
            expected: 128,
            got: 129
        })
    ));
    assert!(matches!(
        index.add(1, &[]),
        Err(VectorError::WrongDimension {
            expected: 128,
            got: 0
        })
    ));
    assert!(index.is_empty());
}

#[test]
fn non_finite_components_are_errors_naming_position_and_value() {
    let index = Index::new(IndexParams::new(4, Metric::L2)).unwrap();
    assert_eq!(
        err_message(index.add(1, &[0.0, 1.0, f32::NAN, 2.0])),
        "vector component 2 is NaN: expected a finite number"
    );
    assert_eq!(
        err_message(index.add(1, &[f32::INFINITY, 1.0, 0.0, 2.0])),
        "vector component 0 is inf: expected a finite number"
    );
    assert_eq!(
        err_message(index.search(&[0.0, 0.0, 0.0, f32::NEG_INFINITY], 1, None, &[])),
        "vector component 3 is -inf: expected a finite number"
    );
    match index.exact_search(&[0.0, f32::NAN, 0.0, 0.0], 1, &[]) {
        Err(VectorError::NonFinite { position, value }) => {
            assert_eq!(position, 1);
            assert!(value.is_nan());
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert!(index.is_empty());
}

#[test]
fn zero_vector_is_an_error_under_cosine_only() {
    let cosine = Index::new(IndexParams::new(3, Metric::Cosine)).unwrap();
    let e = cosine.add(1, &[0.0, 0.0, 0.0]).unwrap_err();
    assert_eq!(e, VectorError::ZeroVector);
    assert_eq!(
        e.to_string(),
        "vector is all zeros: expected at least one non-zero component \
         (the cosine metric cannot normalise a zero vector)"
    );
    assert_eq!(
        cosine.search(&[0.0; 3], 1, None, &[]).unwrap_err(),
        VectorError::ZeroVector
    );
    let l2 = Index::new(IndexParams::new(3, Metric::L2)).unwrap();
    l2.add(1, &[0.0, 0.0, 0.0]).unwrap();
    assert_eq!(l2.search(&[0.0; 3], 1, None, &[]).unwrap()[0].id, 1);
}

#[test]
fn invalid_parameters_are_errors_naming_value_and_range() {
    let base = IndexParams::new(16, Metric::L2);
    let huge = format!("invalid exact_below {}: expected 0..=16777216", usize::MAX);
    let cases: Vec<(IndexParams, &str)> = vec![
        (
            IndexParams {
                dim: 0,
                ..base.clone()
            },
            "invalid dim 0: expected 1..=65536",
        ),
        (
            IndexParams {
                dim: 65_537,
                ..base.clone()
            },
            "invalid dim 65537: expected 1..=65536",
        ),
        (
            IndexParams {
                m: 1,
                ..base.clone()
            },
            "invalid m 1: expected 2..=128 (connections per node)",
        ),
        (
            IndexParams {
                m: 300,
                ..base.clone()
            },
            "invalid m 300: expected 2..=128 (connections per node)",
        ),
        (
            IndexParams {
                m: 256,
                ..base.clone()
            },
            "invalid m 256: expected 2..=128 (connections per node)",
        ),
        (
            IndexParams {
                ef_construction: 1,
                ..base.clone()
            },
            "invalid ef_construction 1: expected 16..=10000 (at least m and at least 8)",
        ),
        (
            IndexParams {
                m: 4,
                ef_construction: 0,
                ..base.clone()
            },
            "invalid ef_construction 0: expected 8..=10000 (at least m and at least 8)",
        ),
        (
            IndexParams {
                ef_construction: 20_000,
                ..base.clone()
            },
            "invalid ef_construction 20000: expected 16..=10000 (at least m and at least 8)",
        ),
        (
            IndexParams {
                ef_search: 0,
                ..base.clone()
            },
            "invalid ef_search 0: expected 1..=10000",
        ),
        (
            IndexParams {
                exact_below: usize::MAX,
                ..base.clone()
            },
            &huge,
        ),
        (
            IndexParams {
                rebuild_ratio: f64::NAN,
                ..base.clone()
            },
            "invalid rebuild_ratio NaN: expected a finite number in (0, 100]",
        ),
        (
            IndexParams {
                rebuild_ratio: 0.0,
                ..base.clone()
            },
            "invalid rebuild_ratio 0: expected a finite number in (0, 100]",
        ),
    ];
    for (p, message) in cases {
        let e = Index::new(p.clone()).unwrap_err();
        assert!(
            matches!(e, VectorError::InvalidParameter { .. }),
            "{p:?}: {e:?}"
        );
        assert_eq!(e.to_string(), message);
        assert_eq!(p.validate().unwrap_err(), e);
    }
    assert!(base.validate().is_ok());
}

#[test]
fn k_zero_and_ef_over_the_cap_are_errors_and_small_ef_is_raised() {
    let index = Index::new(params(2, Metric::L2)).unwrap();
    for i in 0..10 {
        index.add(i, &[i as f32, 0.0]).unwrap();
    }
    assert_eq!(
        err_message(index.search(&[0.0, 0.0], 0, None, &[])),
        "invalid k 0: expected at least 1"
    );
    assert_eq!(
        err_message(index.exact_search(&[0.0, 0.0], 0, &[])),
        "invalid k 0: expected at least 1"
    );
    assert_eq!(
        err_message(index.search(&[0.0, 0.0], 1, Some(10_001), &[])),
        "invalid ef 10001: expected at most 10000 (values below k are raised to k)"
    );
    // ef below k (even 0) is raised to k.
    let hits = index.search(&[0.0, 0.0], 5, Some(0), &[]).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let hits = index.search(&[0.0, 0.0], 3, Some(10_000), &[]).unwrap();
    assert_eq!(hits.len(), 3);
    // A huge k is fine: it means "all of them".
    assert_eq!(
        index
            .search(&[0.0, 0.0], usize::MAX, None, &[])
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn a_bad_batch_item_is_named_and_nothing_is_added() {
    let index = Index::new(params(2, Metric::L2)).unwrap();
    index.add(100, &[5.0, 5.0]).unwrap();
    let batch = vec![
        (1, vec![0.0, 1.0]),
        (2, vec![0.0, 2.0]),
        (3, vec![0.0, f32::NAN]),
        (4, vec![0.0]),
    ];
    let e = index.add_batch(&batch).unwrap_err();
    match &e {
        VectorError::BatchItem { index, id, error } => {
            assert_eq!((*index, *id), (2, 3));
            assert!(matches!(
                **error,
                VectorError::NonFinite { position: 1, .. }
            ));
        }
        other => panic!("expected BatchItem, got {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "batch item 2 (id 3): vector component 1 is NaN: expected a finite number"
    );
    assert_eq!(index.len(), 1);
    assert_eq!(index.ids(), vec![100]);

    let e = index.add_batch(&[(7, vec![1.0, 2.0, 3.0])]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "batch item 0 (id 7): vector has 3 components: expected 2 (the index's dimension)"
    );
    let cosine = Index::new(params(2, Metric::Cosine)).unwrap();
    let e = cosine
        .add_batch(&[(1, vec![1.0, 0.0]), (9, vec![0.0, 0.0])])
        .unwrap_err();
    assert_eq!(
        e,
        VectorError::BatchItem {
            index: 1,
            id: 9,
            error: Box::new(VectorError::ZeroVector)
        }
    );
    assert!(cosine.is_empty());
}

#[test]
fn metric_parses_and_names_a_bad_value() {
    assert_eq!("l2".parse::<Metric>().unwrap(), Metric::L2);
    assert_eq!("Cosine".parse::<Metric>().unwrap(), Metric::Cosine);
    assert_eq!(Metric::L2.to_string(), "l2");
    assert_eq!(Metric::Cosine.to_string(), "cosine");
    assert_eq!(
        "dot".parse::<Metric>().unwrap_err().to_string(),
        "invalid metric \"dot\": expected \"l2\" or \"cosine\""
    );
}

// ---------------------------------------------------------------------------------------
// Search guarantees

/// Random adds, removes, re-adds, batches and rebuilds against a brute-force model; after
/// every step, random searches (random k, ef, exclusions) must meet every guarantee, and
/// `exact_search` must equal the model's answer.
#[test]
fn search_guarantees_hold_over_random_operation_sequences() {
    let mut graph_searches = 0;
    for seed in 0..16u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dim = 1 + rng.usize(..8);
        let exact_below = [0, 0, 8, 64, 256][rng.usize(..5)];
        let p = IndexParams {
            exact_below,
            rebuild_ratio: [0.1, 0.5, 2.0][rng.usize(..3)],
            ..params(dim, Metric::L2)
        };
        let index = Index::new(p).unwrap();
        let mut model: HashMap<Id, Vec<f32>> = HashMap::new();
        let id_bound = [10, 100, 1000][rng.usize(..3)];
        let id_space = 1 + rng.u64(..id_bound);
        for step in 0..120 {
            match rng.u32(..100) {
                0..=39 => {
                    let id = rng.u64(..id_space);
                    let v = random_vector(&mut rng, dim);
                    index.add(id, &v).unwrap();
                    model.insert(id, v);
                }
                40..=64 => {
                    let id = rng.u64(..id_space);
                    assert_eq!(index.remove(id), model.remove(&id).is_some());
                }
                65..=84 => {
                    let n = rng.usize(..80);
                    let batch: Vec<(Id, Vec<f32>)> = (0..n)
                        .map(|_| (rng.u64(..id_space), random_vector(&mut rng, dim)))
                        .collect();
                    index.add_batch(&batch).unwrap();
                    for (id, v) in batch {
                        model.insert(id, v); // last wins, as in the index
                    }
                }
                85..=89 => index.rebuild(),
                _ => {
                    // Remove everything, sometimes adding one back.
                    for id in model.keys() {
                        assert!(index.remove(*id));
                    }
                    model.clear();
                    if rng.bool() {
                        let v = random_vector(&mut rng, dim);
                        index.add(7, &v).unwrap();
                        model.insert(7, v);
                    }
                }
            }
            assert_eq!(index.len(), model.len(), "seed {seed} step {step}");
            for _ in 0..3 {
                let query = random_vector(&mut rng, dim);
                let k = 1 + rng.usize(..12);
                let ef = [None, Some(0), Some(1), Some(16), Some(200)][rng.usize(..5)];
                let exclude_bound = [3, 20][rng.usize(..2)];
                let n_exclude = rng.usize(..exclude_bound);
                let mut exclude: Vec<Id> = (0..n_exclude).map(|_| rng.u64(..id_space)).collect();
                if let Some(&dup) = exclude.first() {
                    exclude.push(dup);
                }
                let what = format!("seed {seed} step {step} k {k} ef {ef:?} exclude {exclude:?}");
                let hits = index.search(&query, k, ef, &exclude).unwrap();
                check_answer(&hits, k, &exclude, &model, &query, &what);
                let exact = index.exact_search(&query, k, &exclude).unwrap();
                check_answer(&exact, k, &exclude, &model, &query, &what);
                let want = model_distances(&model, &query, k, &exclude);
                let got: Vec<f32> = exact.iter().map(|h| h.distance).collect();
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w),
                        "{what}: exact {got:?} vs model {want:?}"
                    );
                }
            }
            for (id, v) in model.iter().take(2) {
                assert_eq!(index.get(*id).as_deref(), Some(v.as_slice()));
                assert!(index.contains(*id));
            }
        }
        let stats = index.stats();
        graph_searches += stats.graph_searches;
        assert_eq!(stats.live, model.len());
        assert_eq!(stats.live + stats.tombstones, stats.graph_points);
        let mut ids = index.ids();
        ids.sort_unstable();
        let mut want: Vec<Id> = model.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(ids, want, "seed {seed}");
    }
    assert!(
        graph_searches > 500,
        "the graph path ran {graph_searches} times"
    );
}

/// Tombstones crowding the query's neighbourhood make the graph answer short; the search
/// widens once, then answers exactly.
#[test]
fn short_graph_answers_fall_back_to_exact() {
    let dim = 2;
    let index = Index::new(IndexParams {
        exact_below: 0,
        rebuild_ratio: 100.0,
        ..params(dim, Metric::L2)
    })
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut model = HashMap::new();
    for id in 0..1000 {
        index
            .add(id, &[rng.f32() * 0.01, rng.f32() * 0.01])
            .unwrap();
    }
    for id in 1000..1300 {
        let v = vec![10.0 + rng.f32(), 10.0 + rng.f32()];
        index.add(id, &v).unwrap();
        model.insert(id, v);
    }
    for id in 0..1000 {
        assert!(index.remove(id));
    }
    // A fresh copy, so no point is checked exactly beside it: only the graph can answer.
    index.freeze();
    assert_eq!(index.stats().copy_delta, 0, "{:?}", index.stats());
    let hits = index.search(&[0.0, 0.0], 10, None, &[]).unwrap();
    check_answer(&hits, 10, &[], &model, &[0.0, 0.0], "fallback");
    let stats = index.stats();
    assert_eq!(stats.fallbacks, 1, "{stats:?}");
    assert_eq!(stats.graph_searches, 1, "{stats:?}");
}

#[test]
fn graph_answers_have_good_recall_on_clustered_data() {
    let mut rng = fastrand::Rng::with_seed(42);
    let dim = 16;
    let data = clustered(&mut rng, 1500, dim);
    let index = Index::new(IndexParams {
        ef_construction: 100,
        ..IndexParams::new(dim, Metric::L2)
    })
    .unwrap();
    let batch: Vec<(Id, Vec<f32>)> = data
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as Id, v))
        .collect();
    index.add_batch(&batch).unwrap();
    let queries = clustered(&mut rng, 100, dim);
    let (mut found, mut total) = (0usize, 0usize);
    for q in &queries {
        let exact: HashSet<Id> = index
            .exact_search(q, 10, &[])
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let approx = index.search(q, 10, Some(64), &[]).unwrap();
        assert_eq!(approx.len(), 10);
        found += approx.iter().filter(|h| exact.contains(&h.id)).count();
        total += 10;
    }
    let recall = found as f64 / total as f64;
    assert!(recall >= 0.9, "recall@10 at ef 64 is {recall}");
    let stats = index.stats();
    assert!(stats.graph_searches >= 100, "{stats:?}");
}

#[test]
fn exclusions_are_honoured_on_the_graph_path() {
    let mut rng = fastrand::Rng::with_seed(3);
    let dim = 8;
    let data = clustered(&mut rng, 600, dim);
    let index = Index::new(IndexParams {
        exact_below: 0,
        ..params(dim, Metric::L2)
    })
    .unwrap();
    let batch: Vec<(Id, Vec<f32>)> = data
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as Id, v))
        .collect();
    index.add_batch(&batch).unwrap();
    let model: HashMap<Id, Vec<f32>> = batch.into_iter().collect();
    for q in data.iter().take(30) {
        let first = index.search(q, 10, None, &[]).unwrap();
        let exclude: Vec<Id> = first.iter().map(|h| h.id).collect();
        let second = index.search(q, 10, None, &exclude).unwrap();
        check_answer(&second, 10, &exclude, &model, q, "swap");
        assert!(second.iter().all(|h| !exclude.contains(&h.id)));
    }
    // Excluding all but three leaves exactly three.
    let keep = [5, 77, 300];
    let exclude: Vec<Id> = (0..600).filter(|i| !keep.contains(i)).collect();
    let hits = index.search(&data[0], 10, None, &exclude).unwrap();
    let mut ids: Vec<Id> = hits.iter().map(|h| h.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, keep);
}

// ---------------------------------------------------------------------------------------
// Degenerate indices

#[test]
fn degenerate_indices_answer_exactly() {
    for exact_below in [0, 256] {
        let index = Index::new(IndexParams {
            exact_below,
            ..params(3, Metric::L2)
        })
        .unwrap();
        // Empty.
        assert!(index
            .search(&[1.0, 2.0, 3.0], 5, None, &[])
            .unwrap()
            .is_empty());
        assert!(index
            .exact_search(&[1.0, 2.0, 3.0], 5, &[])
            .unwrap()
            .is_empty());
        assert!(!index.remove(1));
        assert_eq!(index.get(1), None);
        // One point.
        index.add(1, &[1.0, 0.0, 0.0]).unwrap();
        let hits = index.search(&[0.0, 0.0, 0.0], 5, None, &[]).unwrap();
        assert_eq!(
            hits,
            vec![Hit {
                id: 1,
                distance: 1.0
            }]
        );
        assert!(index
            .search(&[0.0, 0.0, 0.0], 5, None, &[1])
            .unwrap()
            .is_empty());
        // Remove then re-add the same id, many times.
        for round in 0..50 {
            assert!(index.remove(1));
            assert!(index
                .search(&[0.0, 0.0, 0.0], 1, None, &[])
                .unwrap()
                .is_empty());
            index.add(1, &[round as f32, 0.0, 0.0]).unwrap();
            let hits = index
                .search(&[round as f32, 0.0, 0.0], 3, None, &[])
                .unwrap();
            assert_eq!(
                hits,
                vec![Hit {
                    id: 1,
                    distance: 0.0
                }],
                "round {round}"
            );
        }
        // The same id re-added without removal: one live id, the latest vector.
        for round in 0..50 {
            index.add(1, &[0.0, round as f32, 0.0]).unwrap();
        }
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(1), Some(vec![0.0, 49.0, 0.0]));
        let hits = index.search(&[0.0, 49.0, 0.0], 10, None, &[]).unwrap();
        assert_eq!(
            hits,
            vec![Hit {
                id: 1,
                distance: 0.0
            }]
        );
        // Everything removed, then one added.
        for i in 10..60 {
            index.add(i, &[i as f32, 1.0, 1.0]).unwrap();
        }
        for i in (10..60).chain([1]) {
            assert!(index.remove(i));
        }
        assert!(index.is_empty());
        assert!(index
            .search(&[0.0, 0.0, 0.0], 3, None, &[])
            .unwrap()
            .is_empty());
        index.add(99, &[0.0, 0.0, 2.0]).unwrap();
        let hits = index.search(&[0.0, 0.0, 0.0], 3, None, &[]).unwrap();
        assert_eq!(
            hits,
            vec![Hit {
                id: 99,
                distance: 2.0
            }]
        );
        index.rebuild();
        let stats = index.stats();
        assert_eq!(
            (stats.live, stats.tombstones, stats.graph_points),
            (1, 0, 1),
            "{stats:?}"
        );
        assert_eq!(index.search(&[0.0, 0.0, 0.0], 3, None, &[]).unwrap(), hits);
    }
}

#[test]
fn duplicate_ids_in_a_batch_keep_the_last_vector() {
    let index = Index::new(params(2, Metric::L2)).unwrap();
    index
        .add_batch(&[
            (1, vec![1.0, 1.0]),
            (2, vec![2.0, 2.0]),
            (1, vec![3.0, 3.0]),
        ])
        .unwrap();
    assert_eq!(index.len(), 2);
    assert_eq!(index.get(1), Some(vec![3.0, 3.0]));
    index.add_batch(&[]).unwrap();
    assert_eq!(index.len(), 2);
}

#[test]
fn identical_vectors_under_many_ids_all_come_back() {
    let index = Index::new(IndexParams {
        exact_below: 0,
        ..params(4, Metric::L2)
    })
    .unwrap();
    for id in 0..300 {
        index.add(id, &[1.0, 1.0, 1.0, 1.0]).unwrap();
    }
    let hits = index.search(&[1.0, 1.0, 1.0, 1.0], 50, None, &[]).unwrap();
    assert_eq!(hits.len(), 50);
    assert!(hits.iter().all(|h| h.distance == 0.0));
    let unique: HashSet<Id> = hits.iter().map(|h| h.id).collect();
    assert_eq!(unique.len(), 50);
}

#[test]
fn extreme_finite_values_do_not_panic() {
    let index = Index::new(IndexParams {
        exact_below: 0,
        ..params(2, Metric::L2)
    })
    .unwrap();
    index.add(1, &[f32::MAX, -f32::MAX]).unwrap();
    index.add(2, &[-f32::MAX, f32::MAX]).unwrap();
    index.add(3, &[f32::MIN_POSITIVE, 0.0]).unwrap();
    index.add(4, &[1e-45, 0.0]).unwrap();
    let hits = index.search(&[f32::MAX, f32::MAX], 4, None, &[]).unwrap();
    assert_eq!(hits.len(), 4);
    let cosine = Index::new(params(2, Metric::Cosine)).unwrap();
    cosine.add(1, &[f32::MAX, f32::MAX]).unwrap();
    cosine.add(2, &[1e-45, 0.0]).unwrap();
    let hits = cosine.search(&[1.0, 1.0], 2, None, &[]).unwrap();
    assert_eq!(hits[0].id, 1);
    assert!(hits[0].distance.abs() < 1e-6);
}

// ---------------------------------------------------------------------------------------
// Cosine, rebuilds, stats

#[test]
fn cosine_normalises_and_reports_one_minus_cos() {
    for exact_below in [0, 256] {
        let index = Index::new(IndexParams {
            exact_below,
            ..params(2, Metric::Cosine)
        })
        .unwrap();
        index.add(1, &[3.0, 4.0]).unwrap();
        index.add(2, &[-3.0, -4.0]).unwrap();
        index.add(3, &[4.0, -3.0]).unwrap();
        let stored = index.get(1).unwrap();
        assert!((stored[0] - 0.6).abs() < 1e-6 && (stored[1] - 0.8).abs() < 1e-6);
        let hits = index.search(&[30.0, 40.0], 3, None, &[]).unwrap();
        let ids: Vec<Id> = hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        let want = [0.0, 1.0, 2.0];
        for (h, w) in hits.iter().zip(want) {
            assert!((h.distance - w).abs() < 1e-5, "{hits:?}");
        }
        assert_eq!(index.exact_search(&[30.0, 40.0], 3, &[]).unwrap(), hits);
    }
}

#[test]
fn forced_rebuild_drops_tombstones_and_keeps_answers() {
    let mut rng = fastrand::Rng::with_seed(11);
    let dim = 6;
    let index = Index::new(IndexParams {
        exact_below: 0,
        rebuild_ratio: 100.0,
        ..params(dim, Metric::L2)
    })
    .unwrap();
    let mut model = HashMap::new();
    for id in 0..400 {
        let v = random_vector(&mut rng, dim);
        index.add(id, &v).unwrap();
        model.insert(id, v);
    }
    for id in (0..400).step_by(3) {
        assert!(index.remove(id));
        model.remove(&id);
    }
    for id in (1..400).step_by(7) {
        let v = random_vector(&mut rng, dim);
        index.add(id, &v).unwrap();
        model.insert(id, v);
    }
    let before = index.stats();
    assert!(before.tombstones > 0);
    assert_eq!(before.rebuilds, 0);
    index.rebuild();
    let after = index.stats();
    assert_eq!(after.tombstones, 0);
    assert_eq!(after.live, model.len());
    assert_eq!(after.graph_points, model.len());
    assert_eq!(after.rebuilds, 1);
    for _ in 0..20 {
        let q = random_vector(&mut rng, dim);
        let hits = index.search(&q, 10, None, &[]).unwrap();
        check_answer(&hits, 10, &[], &model, &q, "after rebuild");
    }
}

#[test]
fn the_tombstone_threshold_starts_a_background_rebuild() {
    let dim = 4;
    let mut rng = fastrand::Rng::with_seed(5);
    let index = Index::new(IndexParams {
        exact_below: 16,
        rebuild_ratio: 0.25,
        ..params(dim, Metric::L2)
    })
    .unwrap();
    for id in 0..200 {
        index.add(id, &random_vector(&mut rng, dim)).unwrap();
    }
    for id in 0..100 {
        index.remove(id);
    }
    // Bounded wait for the background thread (no speed is asserted: the bound is generous).
    let mut stats = index.stats();
    for _ in 0..3000 {
        if stats.rebuilds > 0 && stats.tombstones == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        stats = index.stats();
    }
    assert!(stats.rebuilds >= 1, "{stats:?}");
    assert_eq!(stats.tombstones, 0, "{stats:?}");
    assert_eq!(stats.live, 100);
}

#[test]
fn stats_count_exact_graph_and_fallback_searches() {
    let index = Index::new(IndexParams {
        exact_below: 10,
        ..params(2, Metric::L2)
    })
    .unwrap();
    for i in 0..5 {
        index.add(i, &[i as f32, 0.0]).unwrap();
    }
    index.search(&[0.0, 0.0], 1, None, &[]).unwrap();
    assert_eq!(index.stats().exact_searches, 1);
    for i in 5..50 {
        index.add(i, &[i as f32, 0.0]).unwrap();
    }
    index.search(&[0.0, 0.0], 1, None, &[]).unwrap();
    let s = index.stats();
    assert_eq!((s.exact_searches, s.graph_searches), (1, 1), "{s:?}");
    index.exact_search(&[0.0, 0.0], 1, &[]).unwrap();
    assert_eq!(index.stats().exact_searches, 2);
    assert!(format!("{index:?}").contains("live: 50"));
}

/// `hnsw_rs` frees a graph with a rayon-parallel loop. Freed on the global pool, letting go
/// of an index would wait for whatever the global pool is doing (another index's parallel
/// build: a 31 s stall in `vector-concurrent`). With every global worker held, dropping an
/// index must still return.
#[test]
fn letting_go_of_an_index_does_not_wait_for_the_global_rayon_pool() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    let workers = rayon::current_num_threads();
    let (release, held) = mpsc::channel::<()>();
    let held = Arc::new(Mutex::new(held));
    let busy = Arc::new(AtomicUsize::new(0));
    for _ in 0..workers {
        let held = Arc::clone(&held);
        let busy = Arc::clone(&busy);
        rayon::spawn(move || {
            busy.fetch_add(1, Ordering::SeqCst);
            let held = held.lock().unwrap_or_else(|e| e.into_inner());
            let _ = held.recv_timeout(Duration::from_secs(60));
        });
    }
    for _ in 0..6_000 {
        if busy.load(Ordering::SeqCst) == workers {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        busy.load(Ordering::SeqCst),
        workers,
        "the global pool never filled up"
    );

    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        // Single adds: no rayon work of our own on the way.
        let index = Index::new(params(4, Metric::L2)).unwrap();
        for id in 0..50u64 {
            let x = id as f32;
            index.add(id, &[x, 1.0, -x, 2.0]).unwrap();
        }
        drop(index);
        let _ = done.send(());
    });
    let result = finished.recv_timeout(Duration::from_secs(20));
    for _ in 0..workers {
        let _ = release.send(());
    }
    assert!(
        result.is_ok(),
        "dropping the index waited for the busy global rayon pool"
    );
}
