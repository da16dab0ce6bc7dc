//! Concurrency stress: writers, removers, re-adders of one id, searchers and forced rebuilds
//! on one index at once, small (length 0/1 transitions) and larger. Every thread's work is a
//! bounded number of operations; the checks are the search guarantees, that no id removed
//! before a search started comes back from it, and that a writer's vector is found by itself
//! right after its add while it is live. A panic anywhere fails the test.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vector_index::{Hit, Id, Index, IndexParams, Metric};

fn random_vector(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn check_shape(hits: &[Hit], k: usize) {
    assert!(hits.len() <= k, "{} hits for k {k}", hits.len());
    let mut seen = HashSet::new();
    for h in hits {
        assert!(h.distance.is_finite() && h.distance >= 0.0, "{hits:?}");
        assert!(seen.insert(h.id), "id {} twice: {hits:?}", h.id);
    }
    for w in hits.windows(2) {
        assert!(w[0].distance <= w[1].distance, "not sorted: {hits:?}");
    }
}

/// Ids removed for good (never added again), shared by all threads.
#[derive(Default)]
struct Dead(Mutex<HashSet<Id>>);

impl Dead {
    fn add(&self, id: Id) {
        self.0.lock().unwrap().insert(id);
    }
    fn snapshot(&self) -> HashSet<Id> {
        self.0.lock().unwrap().clone()
    }
}

const REUSED_ID: Id = 999_999;

/// Runs the mixed workload on `index`; `preloaded` ids `0..preloaded` exist already and the
/// removers take theirs from that range.
fn hammer(index: &Index, dim: usize, preloaded: u64, ops_per_thread: usize, seed: u64) {
    let dead = Dead::default();
    let self_checks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // Writers: add a fresh id, find it by itself, sometimes remove it for good.
        for w in 0..2u64 {
            let (dead, self_checks) = (&dead, &self_checks);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (100 + w));
                for i in 0..ops_per_thread as u64 {
                    let id = 1_000_000 * (w + 1) + i;
                    let v = random_vector(&mut rng, dim);
                    index.add(id, &v).unwrap();
                    let hits = index.search(&v, 1, None, &[]).unwrap();
                    assert_eq!(hits.len(), 1, "writer {w}: {id} live, nothing found");
                    assert_eq!(
                        hits[0].id, id,
                        "writer {w}: {id} not found by itself: {hits:?}"
                    );
                    assert!(hits[0].distance < 1e-4, "{hits:?}");
                    self_checks.fetch_add(1, Ordering::Relaxed);
                    if rng.bool() {
                        assert!(index.remove(id));
                        dead.add(id);
                        let hits = index.search(&v, 3, None, &[]).unwrap();
                        assert!(hits.iter().all(|h| h.id != id), "{id} removed, still found");
                    }
                }
            });
        }
        // Re-adders of one id, from several threads at once.
        for r in 0..2u64 {
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (200 + r));
                for _ in 0..ops_per_thread {
                    index.add(REUSED_ID, &random_vector(&mut rng, dim)).unwrap();
                }
            });
        }
        // A remover: the re-added id, and preloaded ids for good.
        {
            let dead = &dead;
            s.spawn(move || {
                let mut next = 0;
                for i in 0..ops_per_thread {
                    if i % 2 == 0 {
                        index.remove(REUSED_ID);
                    } else if next < preloaded / 2 {
                        assert!(index.remove(next));
                        dead.add(next);
                        next += 1;
                    }
                }
            });
        }
        // Searchers.
        for q in 0..2u64 {
            let dead = &dead;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (300 + q));
                for _ in 0..ops_per_thread {
                    let gone = dead.snapshot();
                    let k = 1 + rng.usize(..8);
                    let exclude: Vec<Id> = vec![REUSED_ID, rng.u64(..preloaded.max(1))];
                    let query = random_vector(&mut rng, dim);
                    let hits = if rng.u8(..4) == 0 {
                        index.exact_search(&query, k, &exclude).unwrap()
                    } else {
                        index
                            .search(&query, k, Some(rng.usize(..100)), &exclude)
                            .unwrap()
                    };
                    check_shape(&hits, k);
                    for h in &hits {
                        assert!(!gone.contains(&h.id), "removed id {} found", h.id);
                        assert!(!exclude.contains(&h.id), "excluded id {} found", h.id);
                    }
                }
            });
        }
        // Forced rebuilds.
        s.spawn(move || {
            for _ in 0..4 {
                index.rebuild();
                std::thread::yield_now();
            }
        });
    });
    assert_eq!(self_checks.load(Ordering::Relaxed), 2 * ops_per_thread);
    let stats = index.stats();
    assert_eq!(stats.live, index.ids().len());
    assert_eq!(stats.live + stats.tombstones, stats.graph_points);
    assert!(stats.rebuilds >= 4, "{stats:?}");
    // Once quiet, every answer is exact in length again.
    let hits = index.search(&vec![0.0; dim], 5, None, &[]).unwrap();
    assert_eq!(hits.len(), 5.min(stats.live));
}

fn small_params(dim: usize, exact_below: usize) -> IndexParams {
    IndexParams {
        m: 8,
        ef_construction: 32,
        ef_search: 32,
        exact_below,
        rebuild_ratio: 0.5,
        ..IndexParams::new(dim, Metric::L2)
    }
}

#[test]
fn small_index_under_concurrent_churn_through_the_graph() {
    // exact_below 0: even an index of 0 or 1 live points goes through the graph path.
    let index = Index::new(small_params(8, 0)).unwrap();
    hammer(&index, 8, 0, 150, 1);
}

#[test]
fn small_index_under_concurrent_churn_with_exact_answers() {
    let index = Index::new(small_params(8, 256)).unwrap();
    hammer(&index, 8, 0, 150, 2);
}

#[test]
fn larger_index_under_concurrent_churn() {
    let dim = 16;
    let index = Index::new(IndexParams {
        rebuild_ratio: 0.1,
        ..small_params(dim, 64)
    })
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let preload: Vec<(Id, Vec<f32>)> = (0..600)
        .map(|i| (i, random_vector(&mut rng, dim)))
        .collect();
    index.add_batch(&preload).unwrap();
    hammer(&index, dim, 600, 100, 3);
    assert!(index.stats().graph_searches > 0);
}

#[test]
fn one_id_re_added_from_many_threads_at_once() {
    for exact_below in [0, 256] {
        let index = Index::new(small_params(4, exact_below)).unwrap();
        let added = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let (index, added) = (&index, &added);
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    for _ in 0..100 {
                        let v = random_vector(&mut rng, 4);
                        index.add(1, &v).unwrap();
                        added.lock().unwrap().push(v);
                        let hits = index.search(&[0.0; 4], 3, None, &[]).unwrap();
                        assert_eq!(hits.len(), 1, "{hits:?}");
                        assert_eq!(hits[0].id, 1);
                    }
                });
            }
        });
        assert_eq!(index.len(), 1);
        let stored = index.get(1).unwrap();
        assert!(added.lock().unwrap().contains(&stored));
        let hits = index.search(&stored, 5, None, &[]).unwrap();
        assert_eq!(
            hits,
            vec![Hit {
                id: 1,
                distance: 0.0
            }]
        );
    }
}

/// A fixed live set searched while rebuilds swap graphs under it: every answer must be exact
/// in length and hold only ids of the set.
#[test]
fn rebuild_swaps_while_searching_keep_answers_whole() {
    let dim = 8;
    let index = Arc::new(Index::new(small_params(dim, 32)).unwrap());
    let mut rng = fastrand::Rng::with_seed(21);
    let live: Vec<(Id, Vec<f32>)> = (0..400)
        .map(|i| (i, random_vector(&mut rng, dim)))
        .collect();
    index.add_batch(&live).unwrap();
    // Tombstones to drop: a removed range the searchers must never see.
    for i in 400..600 {
        index.add(i, &random_vector(&mut rng, dim)).unwrap();
    }
    for i in 400..600 {
        assert!(index.remove(i));
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..5 {
                index.rebuild();
            }
        });
        for t in 0..3u64 {
            let index = &index;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + t);
                for _ in 0..300 {
                    let k = 1 + rng.usize(..20);
                    let exclude = [rng.u64(..400), rng.u64(..400)];
                    let hits = index
                        .search(&random_vector(&mut rng, dim), k, None, &exclude)
                        .unwrap();
                    let eligible = if exclude[0] == exclude[1] { 399 } else { 398 };
                    assert_eq!(hits.len(), k.min(eligible));
                    check_shape(&hits, k);
                    assert!(hits.iter().all(|h| h.id < 400 && !exclude.contains(&h.id)));
                }
            });
        }
    });
    let stats = index.stats();
    assert_eq!((stats.live, stats.tombstones), (400, 0), "{stats:?}");
    assert!(stats.rebuilds >= 5);
}
