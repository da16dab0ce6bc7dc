//! The graph behind an index, and its compact read-only copy.
//!
//! [`Graph`] is one `hnsw_rs` graph (inserts, searches, the reachability self-search);
//! [`Frozen`] is a copy of it made by [`crate::flat`], which searches several times faster
//! and repairs points `hnsw_rs` left without an incoming link. The index keeps both: adds go
//! to the graph, searches go to the latest copy plus an exact check of the few points added
//! since it was made (see [`crate::index`]).
//!
//! Under `--cfg loom` both are replaced by small exact models (a list of points searched by
//! brute force) with the same methods, so the loom models in `tests/loom_index.rs` explore
//! the index's own bookkeeping (id map, tombstones, replay log, swaps, the copy's delta)
//! without `hnsw_rs`, whose threads and locks loom cannot see.

#[cfg(not(loom))]
pub(crate) use real::{Frozen, Graph};

#[cfg(loom)]
pub(crate) use model::{Frozen, Graph};

/// Results a reachability self-search asks for (more than 1, to see past duplicates).
#[cfg(not(loom))]
const VERIFY_K: usize = 8;

/// The `ef` of a reachability self-search. Small: a reachable point is nearly always found
/// by a search for its own vector at once (on the bench's data 0.4 % were not at ef 16, none
/// at ef 64, which is tried next).
pub(crate) const VERIFY_EF: usize = 16;

#[cfg(not(loom))]
mod real {
    use std::mem::ManuallyDrop;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};

    use hnsw_rs::prelude::{DistL2, Hnsw};
    use rayon::prelude::*;

    use super::{VERIFY_EF, VERIFY_K};

    /// Links [`Frozen::link_in`] gives a point a search for its own vector misses.
    const LINK_IN: usize = 3;

    /// The beam of the search that picks where those links come from.
    const LINK_IN_EF: usize = 64;
    use crate::flat::FlatGraph;
    use crate::params::{IndexParams, MAX_LAYER};

    /// Batches at least this large are inserted with `hnsw_rs`'s rayon-parallel insert.
    const PARALLEL_INSERT_MIN: usize = 256;

    /// A graph's first this many inserts run one at a time (see [`Graph`]).
    const SEQUENTIAL_PREFIX: usize = 1024;

    /// One `hnsw_rs` graph, with a gate that makes its first inserts one at a time.
    ///
    /// `hnsw_rs` races on an empty graph (read in its `insert_slice`): when two first inserts
    /// overlap, the one numbered 1 can see the other already set as entry point and return
    /// early, without a single link: unreachable for good. Racing inserts into a graph of a
    /// few points also build a poorer skeleton (recall on clustered test data dropped from
    /// 0.97 to 0.86–0.97 with a parallel build from empty). So until `SEQUENTIAL_PREFIX`
    /// inserts have *completed*, inserts take the gate.
    pub(crate) struct Graph {
        /// Dropped on the drop pool (see `Drop for Graph`), never by whoever lets go last.
        hnsw: ManuallyDrop<Hnsw<'static, f32, DistL2>>,
        completed: AtomicUsize,
        gate: Mutex<()>,
    }

    /// A one-thread rayon pool that frees old graphs. `hnsw_rs` frees a graph with a
    /// rayon-parallel loop; run on the global pool, that waits for whatever the global pool
    /// is doing, such as another index's parallel build: in `vector-concurrent` (full) a
    /// re-add into a small index that let go of its old graph last waited 31 s for a large
    /// index's rebuild. On this pool the free neither waits for nor blocks anyone.
    fn drop_pool() -> Option<&'static rayon::ThreadPool> {
        static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
        POOL.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "vector-index-drop".to_string())
                .build()
                .ok()
        })
        .as_ref()
    }

    impl Drop for Graph {
        fn drop(&mut self) {
            // SAFETY: `hnsw` is taken exactly once, here, and `self` is not used after.
            let hnsw = unsafe { ManuallyDrop::take(&mut self.hnsw) };
            match drop_pool() {
                Some(pool) => pool.spawn(move || drop(hnsw)),
                // No pool to be had: free it here, as before.
                None => drop(hnsw),
            }
        }
    }

    impl Graph {
        pub(crate) fn new(params: &IndexParams, expected_points: usize) -> Graph {
            // Every value here was validated by `IndexParams::validate`: m in 2..=128
            // (hnsw_rs exits above 256), max_layer fixed at 16 (it aborts at 0),
            // ef_construction >= max(m, 8).
            Graph {
                hnsw: ManuallyDrop::new(Hnsw::new(
                    params.m,
                    expected_points.max(1024),
                    MAX_LAYER,
                    params.ef_construction,
                    DistL2,
                )),
                completed: AtomicUsize::new(0),
                gate: Mutex::new(()),
            }
        }

        pub(crate) fn insert(&self, vector: &[f32], point: usize) {
            if self.completed.load(Ordering::Acquire) < SEQUENTIAL_PREFIX {
                let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
                self.hnsw.insert_slice((vector, point));
            } else {
                self.hnsw.insert_slice((vector, point));
            }
            self.completed.fetch_add(1, Ordering::Release);
        }

        /// Inserts one at a time through the gate while it is closed, then rayon-parallel.
        pub(crate) fn insert_all(&self, items: &[(usize, Arc<[f32]>)]) {
            let mut rest = items;
            while let Some(((point, vector), tail)) = rest.split_first() {
                if self.completed.load(Ordering::Acquire) >= SEQUENTIAL_PREFIX {
                    break;
                }
                self.insert(vector, *point);
                rest = tail;
            }
            if rest.len() >= PARALLEL_INSERT_MIN {
                let slices: Vec<(&[f32], usize)> = rest.iter().map(|(p, v)| (&v[..], *p)).collect();
                self.hnsw.parallel_insert_slice(&slices);
                self.completed.fetch_add(rest.len(), Ordering::Release);
            } else {
                for (point, vector) in rest {
                    self.insert(vector, *point);
                }
            }
        }

        /// The `knbn` nearest points found with beam width `ef`: (point, euclidean distance).
        pub(crate) fn search(&self, query: &[f32], knbn: usize, ef: usize) -> Vec<(usize, f32)> {
            self.hnsw
                .search(query, knbn, ef)
                .into_iter()
                .map(|n| (n.d_id, n.distance))
                .collect()
        }

        /// The points of `items` a search for their own vector does not find; rayon-parallel
        /// when `parallel` and there are many (never call it under the index's lock with
        /// `parallel`: a rayon worker could be waiting for that lock).
        pub(crate) fn unreachable(
            &self,
            items: &[(usize, Arc<[f32]>)],
            ef: usize,
            parallel: bool,
        ) -> Vec<usize> {
            points_where(items, parallel, |p, v| {
                !finds(|q, k, ef| self.search(q, k, ef), v, p, ef)
            })
        }

        /// Copies the graph into its compact, read-only search form. `vector_of` lends the
        /// vectors the index holds (shared, not copied).
        pub(crate) fn freeze(&self, vector_of: impl Fn(usize) -> Option<Arc<[f32]>>) -> Frozen {
            Frozen {
                flat: FlatGraph::from_hnsw(&self.hnsw, vector_of),
            }
        }
    }

    /// True if `search` (query, k, ef) finds `point` for its own `vector`: with `ef`, then
    /// 4 × `ef`. The reachability test of the graph and of its copy alike.
    fn finds(
        search: impl Fn(&[f32], usize, usize) -> Vec<(usize, f32)>,
        vector: &[f32],
        point: usize,
        ef: usize,
    ) -> bool {
        [ef, ef.saturating_mul(4)]
            .into_iter()
            .any(|ef| search(vector, VERIFY_K, ef).iter().any(|n| n.0 == point))
    }

    /// The points of `items` for which `keep(point, vector)` holds, rayon-parallel when
    /// `parallel` and there are at least `PARALLEL_INSERT_MIN`.
    fn points_where(
        items: &[(usize, Arc<[f32]>)],
        parallel: bool,
        keep: impl Fn(usize, &[f32]) -> bool + Sync,
    ) -> Vec<usize> {
        if parallel && items.len() >= PARALLEL_INSERT_MIN {
            items
                .par_iter()
                .filter(|(p, v)| keep(*p, v))
                .map(|(p, _)| *p)
                .collect()
        } else {
            items
                .iter()
                .filter(|(p, v)| keep(*p, v))
                .map(|(p, _)| *p)
                .collect()
        }
    }

    /// A compact, read-only copy of a [`Graph`] (see [`FlatGraph`]).
    pub(crate) struct Frozen {
        flat: FlatGraph,
    }

    impl Frozen {
        /// The `knbn` nearest points found with beam width `ef`: (point, euclidean distance).
        pub(crate) fn search(&self, query: &[f32], knbn: usize, ef: usize) -> Vec<(usize, f32)> {
            self.flat.search(query, knbn, ef)
        }

        /// True if the copy holds `point`.
        pub(crate) fn contains(&self, point: usize) -> bool {
            self.flat.contains(point)
        }

        /// Points of the copy with no outgoing link: no search can reach past them.
        pub(crate) fn isolated(&self) -> &[usize] {
            self.flat.isolated()
        }

        /// Points copied.
        pub(crate) fn len(&self) -> usize {
            self.flat.len()
        }

        /// The points of `items` the copy holds but a search of it for their own vector
        /// misses; rayon-parallel when there are many (never call it under the index's lock).
        pub(crate) fn misses(&self, items: &[(usize, Arc<[f32]>)]) -> Vec<usize> {
            points_where(items, true, |p, v| {
                self.contains(p) && !finds(|q, k, ef| self.search(q, k, ef), v, p, VERIFY_EF)
            })
        }

        /// Links each of `targets` in from the nearest points a search for it finds (see
        /// [`FlatGraph::link_in`]).
        pub(crate) fn link_in(&mut self, targets: &[usize]) -> usize {
            self.flat.link_in(targets, LINK_IN, LINK_IN_EF)
        }

        /// Incoming links the copy added to points `hnsw_rs` left unreachable.
        pub(crate) fn repaired(&self) -> usize {
            self.flat.repaired()
        }
    }
}

#[cfg(loom)]
mod model {
    //! Exact stand-ins: the graph is a list of (point, vector) under a loom mutex, searched
    //! by brute force, so any answer short of a live id is the index's bookkeeping at fault.

    use loom::sync::{Arc as LoomArc, Mutex};
    use std::sync::Arc;

    use hnsw_rs::prelude::{DistL2, Distance};

    use crate::params::IndexParams;

    pub(crate) struct Graph {
        points: LoomArc<Mutex<Vec<(usize, Arc<[f32]>)>>>,
    }

    fn nearest(points: &[(usize, Arc<[f32]>)], query: &[f32], knbn: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = points
            .iter()
            .map(|(p, v)| (*p, DistL2.eval(query, v)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(knbn);
        all
    }

    impl Graph {
        pub(crate) fn new(_params: &IndexParams, _expected_points: usize) -> Graph {
            Graph {
                points: LoomArc::new(Mutex::new(Vec::new())),
            }
        }

        pub(crate) fn insert(&self, vector: &[f32], point: usize) {
            let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
            points.push((point, Arc::from(vector)));
        }

        pub(crate) fn insert_all(&self, items: &[(usize, Arc<[f32]>)]) {
            for (point, vector) in items {
                self.insert(vector, *point);
            }
        }

        pub(crate) fn search(&self, query: &[f32], knbn: usize, _ef: usize) -> Vec<(usize, f32)> {
            let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
            nearest(&points, query, knbn)
        }

        pub(crate) fn unreachable(
            &self,
            _items: &[(usize, Arc<[f32]>)],
            _ef: usize,
            _parallel: bool,
        ) -> Vec<usize> {
            Vec::new()
        }

        pub(crate) fn freeze(&self, vector_of: impl Fn(usize) -> Option<Arc<[f32]>>) -> Frozen {
            let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
            Frozen {
                points: points
                    .iter()
                    .map(|(p, v)| (*p, vector_of(*p).unwrap_or_else(|| Arc::clone(v))))
                    .collect(),
            }
        }
    }

    pub(crate) struct Frozen {
        points: Vec<(usize, Arc<[f32]>)>,
    }

    impl Frozen {
        pub(crate) fn search(&self, query: &[f32], knbn: usize, _ef: usize) -> Vec<(usize, f32)> {
            nearest(&self.points, query, knbn)
        }

        pub(crate) fn contains(&self, point: usize) -> bool {
            self.points.iter().any(|(p, _)| *p == point)
        }

        pub(crate) fn isolated(&self) -> &[usize] {
            &[]
        }

        pub(crate) fn len(&self) -> usize {
            self.points.len()
        }

        pub(crate) fn link_in(&mut self, _targets: &[usize]) -> usize {
            0
        }

        pub(crate) fn misses(&self, _items: &[(usize, Arc<[f32]>)]) -> Vec<usize> {
            Vec::new()
        }

        pub(crate) fn repaired(&self) -> usize {
            0
        }
    }
}
