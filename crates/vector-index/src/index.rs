//! The index: an `hnsw_rs` graph behind a map of live ids, with tombstones, a rebuild that
//! swaps in a fresh graph without blocking searches, exact answers for small indices and a
//! fallback that keeps every answer's length exact.
//!
//! State, all under one `RwLock` held only for map updates and result filtering (never for a
//! graph insert, except the short final replay of a rebuild):
//!
//! - `live`: id → (point, vector). A *point* is the id a vector has inside the graph; every
//!   insert gets a fresh one (a `usize` counter, never reused), so a re-added id leaves its old
//!   point behind as a tombstone instead of a duplicate data id the graph could return.
//! - `points`: point → id for every point of the current graph, live or tombstoned. A graph
//!   hit is live when `live[id].point == point`.
//! - `graph`: `Arc` of the current graph. Adds insert into it after releasing the lock;
//!   searches clone the `Arc` and search without any lock of ours.
//! - `rebuild_log`: while a rebuild builds, the (point, vector) of every add, replayed onto
//!   the new graph before the swap. Removes need no log: liveness lives in `live`.
//! - `orphans`: points of the current graph that a search for their own vector did not find
//!   right after their insert; every graph search checks them exactly.
//!
//! Points keep their number across a rebuild, so a hit from an old graph still maps to the
//! right id (or to nothing, if its point is gone) after a swap.
//!
//! Lock order: `rebuild_lock`, then `state`, then a graph's insert gate. Nothing runs rayon
//! work while holding `state` (a rayon worker could be a searcher waiting for it).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hnsw_rs::prelude::{DistL2, Distance, Hnsw};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::VectorError;
use crate::params::{IndexParams, Metric, MAX_EF, MAX_LAYER};

/// The caller's id of a vector.
pub type Id = u64;

/// Most points one graph may hold (live plus tombstones). `hnsw_rs` numbers the points of a
/// layer with an `i32`; this stays far below that.
pub const MAX_POINTS: usize = 1 << 30;

/// Batches at least this large are inserted with `hnsw_rs`'s rayon-parallel insert.
const PARALLEL_INSERT_MIN: usize = 256;

/// A graph's first this many inserts run one at a time (see [`Graph`]).
const SEQUENTIAL_PREFIX: usize = 1024;

/// Results a reachability self-search asks for (more than 1, to see past duplicates).
const VERIFY_K: usize = 8;

/// The `ef` of a reachability self-search.
const VERIFY_EF: usize = 16;

/// Rounds of off-lock replay before a rebuild's final, locked replay.
const REPLAY_ROUNDS_MAX: usize = 8;

/// A replay batch this small is left for the final, locked round.
const REPLAY_LOCKED_MAX: usize = 64;

/// Rebuilds one background scheduling runs back to back at most (when churn outpaces it).
const BACKGROUND_REBUILDS_MAX: usize = 3;

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// The vector's id.
    pub id: Id,
    /// Its distance to the query: euclidean under L2, `1 − cos` under cosine.
    pub distance: f32,
}

/// Counters and sizes of an index, read at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IndexStats {
    /// Live ids.
    pub live: usize,
    /// Graph points that are no longer live (removed or replaced ids).
    pub tombstones: usize,
    /// Points of the current graph: `live + tombstones`.
    pub graph_points: usize,
    /// Rebuilds completed (forced or triggered by the tombstone threshold).
    pub rebuilds: u64,
    /// Searches answered by brute force (small index, large k, or [`Index::exact_search`]).
    pub exact_searches: u64,
    /// Searches answered through the graph (fallbacks included).
    pub graph_searches: u64,
    /// Graph searches that came up short of `min(k, live non-excluded)` twice and were
    /// answered exactly instead.
    pub fallbacks: u64,
    /// Graph points a search for their own vector did not find right after their insert
    /// (live or not). Every search checks them exactly, on top of the graph.
    pub orphans: usize,
}

/// One `hnsw_rs` graph, with a gate that makes its first inserts one at a time.
///
/// `hnsw_rs` races on an empty graph (read in its `insert_slice`): when two first inserts
/// overlap, the one numbered 1 can see the other already set as entry point and return
/// early, without a single link: unreachable for good. Racing inserts into a graph of a few
/// points also build a poorer skeleton (recall on clustered test data dropped from 0.97 to
/// 0.86–0.97 with a parallel build from empty). So until `SEQUENTIAL_PREFIX` inserts have
/// *completed*, inserts take the gate.
struct Graph {
    hnsw: Hnsw<'static, f32, DistL2>,
    completed: AtomicUsize,
    gate: Mutex<()>,
}

impl Graph {
    fn new(params: &IndexParams, expected_points: usize) -> Graph {
        // Every value here was validated by `IndexParams::validate`: m in 2..=128 (hnsw_rs
        // exits above 256), max_layer fixed at 16 (it aborts at 0), ef_construction >=
        // max(m, 8).
        Graph {
            hnsw: Hnsw::new(
                params.m,
                expected_points.max(1024),
                MAX_LAYER,
                params.ef_construction,
                DistL2,
            ),
            completed: AtomicUsize::new(0),
            gate: Mutex::new(()),
        }
    }

    fn insert(&self, vector: &[f32], point: usize) {
        if self.completed.load(AtomicOrdering::Acquire) < SEQUENTIAL_PREFIX {
            let _gate = lock(&self.gate);
            self.hnsw.insert_slice((vector, point));
            self.completed.fetch_add(1, AtomicOrdering::Release);
        } else {
            self.hnsw.insert_slice((vector, point));
            self.completed.fetch_add(1, AtomicOrdering::Release);
        }
    }

    /// Inserts one at a time through the gate while it is closed, then rayon-parallel.
    fn insert_all(&self, items: &[(usize, Arc<[f32]>)]) {
        let mut rest = items;
        while let Some(((point, vector), tail)) = rest.split_first() {
            if self.completed.load(AtomicOrdering::Acquire) >= SEQUENTIAL_PREFIX {
                break;
            }
            self.insert(vector, *point);
            rest = tail;
        }
        if rest.len() >= PARALLEL_INSERT_MIN {
            let slices: Vec<(&[f32], usize)> = rest.iter().map(|(p, v)| (&v[..], *p)).collect();
            self.hnsw.parallel_insert_slice(&slices);
            self.completed
                .fetch_add(rest.len(), AtomicOrdering::Release);
        } else {
            for (point, vector) in rest {
                self.insert(vector, *point);
            }
        }
    }

    /// True if a search for `vector` finds `point`: it is reachable from the entry point.
    /// Searches with `ef`, then (rarely needed) 4 × `ef` before saying no.
    fn finds(&self, vector: &[f32], point: usize, ef: usize) -> bool {
        [ef, ef.saturating_mul(4)].into_iter().any(|ef| {
            self.hnsw
                .search(vector, VERIFY_K, ef)
                .iter()
                .any(|n| n.d_id == point)
        })
    }

    /// The points of `items` a search for their own vector does not find; rayon-parallel
    /// when `parallel` and there are many (never under our lock: a rayon worker could be
    /// waiting for it).
    fn unreachable(&self, items: &[(usize, Arc<[f32]>)], ef: usize, parallel: bool) -> Vec<usize> {
        if parallel && items.len() >= PARALLEL_INSERT_MIN {
            items
                .par_iter()
                .filter(|(p, v)| !self.finds(v, *p, ef))
                .map(|(p, _)| *p)
                .collect()
        } else {
            items
                .iter()
                .filter(|(p, v)| !self.finds(v, *p, ef))
                .map(|(p, _)| *p)
                .collect()
        }
    }
}

/// A live id's current point and vector.
struct Entry {
    point: usize,
    vector: Arc<[f32]>,
}

/// Everything the `RwLock` guards (see the module doc).
struct State {
    live: HashMap<Id, Entry>,
    points: HashMap<usize, Id>,
    graph: Arc<Graph>,
    /// Points of the current graph its own search did not find right after their insert
    /// (`hnsw_rs` can drop every link to a new point while pruning its neighbours' lists).
    /// Searches check them exactly, so every vector is found by itself after its add.
    orphans: HashSet<usize>,
    next_point: usize,
    rebuild_log: Option<Vec<(usize, Arc<[f32]>)>>,
}

impl State {
    fn tombstones(&self) -> usize {
        self.points.len().saturating_sub(self.live.len())
    }

    fn needs_rebuild(&self, params: &IndexParams) -> bool {
        let tombstones = self.tombstones();
        tombstones > params.exact_below
            && tombstones as f64 > params.rebuild_ratio * self.live.len() as f64
    }

    /// Gives `vector` a fresh point under `id`; returns the point and whether an older
    /// vector of `id` was replaced.
    fn register(&mut self, id: Id, vector: &Arc<[f32]>) -> (usize, bool) {
        let point = self.next_point;
        self.next_point += 1;
        self.points.insert(point, id);
        let old = self.live.insert(
            id,
            Entry {
                point,
                vector: Arc::clone(vector),
            },
        );
        if let Some(log) = self.rebuild_log.as_mut() {
            log.push((point, Arc::clone(vector)));
        }
        (point, old.is_some())
    }
}

/// What the index shares with its background rebuild thread.
struct Inner {
    params: IndexParams,
    state: RwLock<State>,
    /// Held for the whole of a rebuild: one at a time.
    rebuild_lock: Mutex<()>,
    /// A background rebuild thread exists (so mutations do not spawn another).
    rebuild_scheduled: AtomicBool,
    rebuilds: AtomicU64,
    exact_searches: AtomicU64,
    graph_searches: AtomicU64,
    fallbacks: AtomicU64,
}

/// An HNSW index of `f32` vectors under caller-chosen ids. `Send + Sync`: share it (e.g. in
/// an `Arc`) and call every method from any thread.
pub struct Index {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("params", &self.inner.params)
            .field("stats", &self.stats())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A candidate result ordered by (distance, id), with a total order on `f32`.
#[derive(Clone, Copy)]
struct Candidate {
    distance: f32,
    id: Id,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
}

/// The excluded ids, sorted and deduplicated.
struct Excluded(Vec<Id>);

impl Excluded {
    fn new(ids: &[Id]) -> Excluded {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        Excluded(ids)
    }

    fn contains(&self, id: Id) -> bool {
        self.0.binary_search(&id).is_ok()
    }

    fn live_count(&self, state: &State) -> usize {
        self.0
            .iter()
            .filter(|id| state.live.contains_key(id))
            .count()
    }
}

impl Inner {
    /// Validates a vector (dimension, finiteness, non-zero under cosine) and returns what the
    /// index stores: the vector itself, or its normalised form under cosine.
    fn prepare(&self, vector: &[f32]) -> Result<Arc<[f32]>, VectorError> {
        if vector.len() != self.params.dim {
            return Err(VectorError::WrongDimension {
                expected: self.params.dim,
                got: vector.len(),
            });
        }
        if let Some((position, &value)) = vector.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(VectorError::NonFinite { position, value });
        }
        match self.params.metric {
            Metric::L2 => Ok(Arc::from(vector)),
            Metric::Cosine => {
                // f64 so that neither huge components overflow nor tiny ones underflow.
                let norm = vector
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    return Err(VectorError::ZeroVector);
                }
                Ok(vector
                    .iter()
                    .map(|&x| (f64::from(x) / norm) as f32)
                    .collect())
            }
        }
    }

    /// Turns a graph (euclidean) distance into the metric's distance. Under cosine the
    /// vectors are unit length, where `1 − cos = ‖a − b‖² / 2` (and more accurate near 0).
    fn report(&self, graph_distance: f32) -> f32 {
        match self.params.metric {
            Metric::L2 => graph_distance,
            Metric::Cosine => graph_distance * graph_distance / 2.0,
        }
    }

    fn exact(&self, state: &State, query: &[f32], k: usize, excluded: &Excluded) -> Vec<Hit> {
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        for (&id, entry) in &state.live {
            if excluded.contains(id) {
                continue;
            }
            let candidate = Candidate {
                distance: DistL2.eval(query, &entry.vector),
                id,
            };
            if heap.len() < k {
                heap.push(candidate);
            } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                heap.pop();
                heap.push(candidate);
            }
        }
        heap.into_sorted_vec()
            .into_iter()
            .map(|c| Hit {
                id: c.id,
                distance: self.report(c.distance),
            })
            .collect()
    }

    /// The `ef` of the self-search that checks a new point is reachable. Small: a reachable
    /// point is nearly always found by a search for its own vector at once (on the bench's
    /// data 0.4 % were not at ef 16, none at ef 64, which `Graph::finds` tries next).
    fn verify_ef(&self) -> usize {
        VERIFY_EF
    }

    /// Checks that `graph` finds each of `items` by its own vector; records those it does not
    /// as orphans, if `graph` is still the current one (a rebuild checks its own graph).
    fn check_reachable(&self, graph: &Arc<Graph>, items: &[(usize, Arc<[f32]>)]) {
        let unreachable = graph.unreachable(items, self.verify_ef(), true);
        if unreachable.is_empty() {
            return;
        }
        let mut state = write(&self.state);
        if Arc::ptr_eq(&state.graph, graph) {
            state.orphans.extend(unreachable);
        }
    }

    fn schedule_rebuild(self: &Arc<Inner>) {
        if self.rebuild_scheduled.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vector-index-rebuild".to_string())
            .spawn(move || {
                // Cleared however the thread ends, so a later mutation can schedule again.
                struct Unschedule<'a>(&'a AtomicBool);
                impl Drop for Unschedule<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, AtomicOrdering::Release);
                    }
                }
                let _unschedule = Unschedule(&inner.rebuild_scheduled);
                for _ in 0..BACKGROUND_REBUILDS_MAX {
                    if !read(&inner.state).needs_rebuild(&inner.params) {
                        break;
                    }
                    inner.rebuild_now();
                }
            });
        if spawned.is_err() {
            // No thread to be had: the next mutation over the threshold tries again.
            self.rebuild_scheduled.store(false, AtomicOrdering::Release);
        }
    }

    /// Builds a fresh graph from the live vectors off-lock, replays the adds made meanwhile,
    /// and swaps it in. One at a time (`rebuild_lock`).
    fn rebuild_now(&self) {
        let _one_at_a_time = lock(&self.rebuild_lock);
        let snapshot: Vec<(usize, Arc<[f32]>)> = {
            let mut state = write(&self.state);
            state.rebuild_log = Some(Vec::new());
            state
                .live
                .values()
                .map(|e| (e.point, Arc::clone(&e.vector)))
                .collect()
        };
        // Should anything below unwind, stop logging adds for a rebuild that will not finish.
        struct StopLog<'a>(&'a RwLock<State>, bool);
        impl Drop for StopLog<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    write(self.0).rebuild_log = None;
                }
            }
        }
        let mut stop_log = StopLog(&self.state, false);

        let graph = Graph::new(&self.params, snapshot.len());
        let verify_ef = self.verify_ef();
        let mut inserted: Vec<usize> = snapshot.iter().map(|(p, _)| *p).collect();
        graph.insert_all(&snapshot);
        let mut orphans = graph.unreachable(&snapshot, verify_ef, true);
        drop(snapshot);

        for _ in 0..REPLAY_ROUNDS_MAX {
            let batch = {
                let mut state = write(&self.state);
                match state.rebuild_log.as_mut() {
                    Some(log) if log.len() > REPLAY_LOCKED_MAX => std::mem::take(log),
                    _ => break,
                }
            };
            inserted.extend(batch.iter().map(|(p, _)| *p));
            graph.insert_all(&batch);
            orphans.extend(graph.unreachable(&batch, verify_ef, true));
        }

        let mut state = write(&self.state);
        let rest = state.rebuild_log.take().unwrap_or_default();
        stop_log.1 = true;
        for (point, vector) in &rest {
            graph.insert(vector, *point);
            inserted.push(*point);
        }
        orphans.extend(graph.unreachable(&rest, verify_ef, false));
        let mut points = HashMap::with_capacity(inserted.len());
        for point in inserted {
            // Every inserted point is still in `points`: only a swap removes any.
            if let Some(&id) = state.points.get(&point) {
                points.insert(point, id);
            }
        }
        state.points = points;
        state.orphans = orphans.into_iter().collect();
        let old = std::mem::replace(&mut state.graph, Arc::new(graph));
        drop(state);
        // The old graph is freed here (or by the last search still holding it), off-lock.
        drop(old);
        self.rebuilds.fetch_add(1, AtomicOrdering::Relaxed);
    }
}

impl Index {
    /// Creates an empty index after validating `params` (see [`IndexParams::validate`]).
    pub fn new(params: IndexParams) -> Result<Index, VectorError> {
        params.validate()?;
        let graph = Arc::new(Graph::new(&params, 0));
        Ok(Index {
            inner: Arc::new(Inner {
                params,
                state: RwLock::new(State {
                    live: HashMap::new(),
                    points: HashMap::new(),
                    graph,
                    orphans: HashSet::new(),
                    next_point: 0,
                    rebuild_log: None,
                }),
                rebuild_lock: Mutex::new(()),
                rebuild_scheduled: AtomicBool::new(false),
                rebuilds: AtomicU64::new(0),
                exact_searches: AtomicU64::new(0),
                graph_searches: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
            }),
        })
    }

    /// The parameters the index was created with.
    pub fn params(&self) -> &IndexParams {
        &self.inner.params
    }

    /// Adds `vector` under `id`, replacing the vector `id` had (its old graph point becomes a
    /// tombstone). Errors, before anything is stored: wrong dimension, a NaN or infinite
    /// component, an all-zero vector under cosine, an index at [`MAX_POINTS`].
    ///
    /// When this returns, a search for `vector` finds `id`: the insert is followed by a
    /// search for the vector, and a point that search misses is checked exactly by every
    /// search from then on (see [`IndexStats::orphans`]).
    pub fn add(&self, id: Id, vector: &[f32]) -> Result<(), VectorError> {
        let vector = self.inner.prepare(vector)?;
        let (graph, point, rebuild) = {
            let mut state = write(&self.inner.state);
            if state.points.len() >= MAX_POINTS {
                return Err(too_many_points(state.points.len(), 1));
            }
            let (point, replaced) = state.register(id, &vector);
            let rebuild = replaced && state.needs_rebuild(&self.inner.params);
            (Arc::clone(&state.graph), point, rebuild)
        };
        graph.insert(&vector, point);
        self.inner.check_reachable(&graph, &[(point, vector)]);
        if rebuild {
            self.inner.schedule_rebuild();
        }
        Ok(())
    }

    /// Adds many vectors: validates every item first (on error nothing is added and the error
    /// is [`VectorError::BatchItem`], naming the item's position and id), then inserts them
    /// in parallel. An id present twice in the batch gets its last vector.
    pub fn add_batch(&self, items: &[(Id, Vec<f32>)]) -> Result<(), VectorError> {
        let mut prepared = Vec::with_capacity(items.len());
        for (index, (id, vector)) in items.iter().enumerate() {
            let vector = self
                .inner
                .prepare(vector)
                .map_err(|error| VectorError::BatchItem {
                    index,
                    id: *id,
                    error: Box::new(error),
                })?;
            prepared.push((*id, vector));
        }
        self.insert_prepared(prepared)
    }

    /// Registers and inserts validated, prepared vectors (the second half of `add_batch`).
    fn insert_prepared(&self, prepared: Vec<(Id, Arc<[f32]>)>) -> Result<(), VectorError> {
        let mut last: HashMap<Id, usize> = HashMap::with_capacity(prepared.len());
        for (i, (id, _)) in prepared.iter().enumerate() {
            last.insert(*id, i);
        }
        let (graph, to_insert, rebuild) = {
            let mut state = write(&self.inner.state);
            if state.points.len().saturating_add(last.len()) > MAX_POINTS {
                return Err(too_many_points(state.points.len(), last.len()));
            }
            let mut to_insert = Vec::with_capacity(last.len());
            let mut replaced_any = false;
            for (i, (id, vector)) in prepared.into_iter().enumerate() {
                if last.get(&id) != Some(&i) {
                    continue;
                }
                let (point, replaced) = state.register(id, &vector);
                replaced_any |= replaced;
                to_insert.push((point, vector));
            }
            let rebuild = replaced_any && state.needs_rebuild(&self.inner.params);
            (Arc::clone(&state.graph), to_insert, rebuild)
        };
        graph.insert_all(&to_insert);
        self.inner.check_reachable(&graph, &to_insert);
        if rebuild {
            self.inner.schedule_rebuild();
        }
        Ok(())
    }

    /// Removes `id`; true if it was live. Its graph point stays as a tombstone until a
    /// rebuild, which starts in the background once tombstones exceed
    /// `rebuild_ratio × live` and `exact_below`.
    pub fn remove(&self, id: Id) -> bool {
        let (removed, rebuild) = {
            let mut state = write(&self.inner.state);
            let removed = state.live.remove(&id).is_some();
            (removed, removed && state.needs_rebuild(&self.inner.params))
        };
        if rebuild {
            self.inner.schedule_rebuild();
        }
        removed
    }

    /// True if `id` is live.
    pub fn contains(&self, id: Id) -> bool {
        read(&self.inner.state).live.contains_key(&id)
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        read(&self.inner.state).live.len()
    }

    /// True if no id is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored vector of `id` (normalised under cosine), if live.
    pub fn get(&self, id: Id) -> Option<Vec<f32>> {
        read(&self.inner.state)
            .live
            .get(&id)
            .map(|e| e.vector.to_vec())
    }

    /// The live ids, in no particular order.
    pub fn ids(&self) -> Vec<Id> {
        read(&self.inner.state).live.keys().copied().collect()
    }

    /// The `k` nearest live ids to `query`, nearest first, skipping the ids in `exclude`.
    ///
    /// Guarantees: sorted by distance ascending (ties by id), no removed or excluded id, no
    /// id twice, exactly `min(k, live ids not excluded)` hits. `ef` (`None`: the index's
    /// `ef_search`) below `k` is raised to `k`; above 10,000 it is an error, as is `k = 0`
    /// and a query that is not a valid vector for the index.
    ///
    /// Below `exact_below` live points the answer is exact (brute force). Otherwise the
    /// graph is searched for `k` plus the live excluded ids plus headroom for tombstones;
    /// if the filtered answer is short it is retried once wider, then answered exactly
    /// (counted in [`IndexStats::fallbacks`]).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        exclude: &[Id],
    ) -> Result<Vec<Hit>, VectorError> {
        check_k(k)?;
        let ef = ef.unwrap_or(self.inner.params.ef_search);
        if ef > MAX_EF {
            return Err(VectorError::param(
                "ef",
                ef,
                format!("at most {MAX_EF} (values below k are raised to k)"),
            ));
        }
        let query = self.inner.prepare(query)?;
        let excluded = Excluded::new(exclude);
        let inner = &self.inner;

        let (graph, mut knbn) = {
            let state = read(&inner.state);
            let live = state.live.len();
            let excluded_live = excluded.live_count(&state);
            let want = k.saturating_add(excluded_live);
            if live < inner.params.exact_below || want >= live {
                inner.exact_searches.fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(inner.exact(&state, &query, k, &excluded));
            }
            // Headroom for tombstones, in proportion to their share of the graph.
            let headroom = (want as f64 * state.tombstones() as f64 / live as f64).ceil();
            let knbn = (want as f64 + headroom + 2.0).min(state.points.len() as f64) as usize;
            (Arc::clone(&state.graph), knbn.max(1))
        };
        inner.graph_searches.fetch_add(1, AtomicOrdering::Relaxed);
        let mut ef = ef.max(knbn);
        for attempt in 0..2 {
            let neighbours = graph.hnsw.search(&query, knbn, ef);
            let state = read(&inner.state);
            let target = k.min(state.live.len() - excluded.live_count(&state));
            let mut hits = Vec::with_capacity(neighbours.len().min(k));
            for n in &neighbours {
                let point = n.d_id;
                let Some(&id) = state.points.get(&point) else {
                    continue;
                };
                let current = state.live.get(&id).is_some_and(|e| e.point == point);
                if current && !excluded.contains(id) {
                    hits.push(Hit {
                        id,
                        distance: inner.report(n.distance),
                    });
                }
            }
            for &point in &state.orphans {
                let Some(&id) = state.points.get(&point) else {
                    continue;
                };
                if let Some(entry) = state.live.get(&id) {
                    if entry.point == point && !excluded.contains(id) {
                        hits.push(Hit {
                            id,
                            distance: inner.report(DistL2.eval(&query, &entry.vector)),
                        });
                    }
                }
            }
            sort_hits(&mut hits);
            // An orphan may have become reachable since: keep each id once (its nearest).
            let mut seen = HashSet::with_capacity(hits.len());
            hits.retain(|h| seen.insert(h.id));
            if hits.len() >= target {
                hits.truncate(k);
                return Ok(hits);
            }
            let graph_points = state.points.len();
            if attempt == 0 && knbn >= graph_points {
                break;
            }
            knbn = knbn
                .saturating_mul(2)
                .saturating_add(16)
                .min(graph_points)
                .max(1);
            ef = ef.saturating_mul(2).max(knbn);
        }
        inner.fallbacks.fetch_add(1, AtomicOrdering::Relaxed);
        let state = read(&inner.state);
        Ok(inner.exact(&state, &query, k, &excluded))
    }

    /// The exact `k` nearest live ids to `query` by brute force, with the same guarantees
    /// and errors as [`Index::search`].
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        exclude: &[Id],
    ) -> Result<Vec<Hit>, VectorError> {
        check_k(k)?;
        let query = self.inner.prepare(query)?;
        let excluded = Excluded::new(exclude);
        self.inner
            .exact_searches
            .fetch_add(1, AtomicOrdering::Relaxed);
        let state = read(&self.inner.state);
        Ok(self.inner.exact(&state, &query, k, &excluded))
    }

    /// Rebuilds the graph now from the live vectors, dropping every tombstone, and swaps it
    /// in. Searches, adds and removes go on meanwhile (adds are replayed onto the new graph
    /// before the swap). If another rebuild is running, waits for it first.
    pub fn rebuild(&self) {
        self.inner.rebuild_now();
    }

    /// Sizes and counters at this instant.
    pub fn stats(&self) -> IndexStats {
        let inner = &self.inner;
        let state = read(&inner.state);
        IndexStats {
            live: state.live.len(),
            tombstones: state.tombstones(),
            graph_points: state.points.len(),
            rebuilds: inner.rebuilds.load(AtomicOrdering::Relaxed),
            exact_searches: inner.exact_searches.load(AtomicOrdering::Relaxed),
            graph_searches: inner.graph_searches.load(AtomicOrdering::Relaxed),
            fallbacks: inner.fallbacks.load(AtomicOrdering::Relaxed),
            orphans: state.orphans.len(),
        }
    }

    /// Writes the index to `path` (see [`crate::persist`] for the format): to a temporary file
    /// in the same directory, fsynced, then renamed into place.
    pub fn save(&self, path: &Path) -> Result<(), VectorError> {
        let snapshot = {
            let state = read(&self.inner.state);
            let live: Vec<(Id, Arc<[f32]>)> = state
                .live
                .iter()
                .map(|(&id, e)| (id, Arc::clone(&e.vector)))
                .collect();
            let tombstones: Vec<Id> = state
                .points
                .iter()
                .filter(|(&point, id)| state.live.get(id).is_none_or(|e| e.point != point))
                .map(|(_, &id)| id)
                .collect();
            crate::persist::Snapshot {
                params: self.inner.params.clone(),
                live,
                tombstones,
            }
        };
        crate::persist::save(&snapshot, path)
    }

    /// Reads an index written by [`Index::save`], checking magic, version, length, checksum
    /// and every value before building a fresh graph from the vectors. A damaged file gives
    /// [`VectorError::Corrupt`]; a missing or unreadable one [`VectorError::Io`].
    pub fn load(path: &Path) -> Result<Index, VectorError> {
        let snapshot = crate::persist::load(path)?;
        let corrupt = |e: VectorError| VectorError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let index = Index::new(snapshot.params).map_err(corrupt)?;
        let mut prepared = Vec::with_capacity(snapshot.live.len());
        for (id, vector) in snapshot.live {
            // Under cosine this renormalises (the file holds normalised vectors already).
            prepared.push((id, index.inner.prepare(&vector).map_err(corrupt)?));
        }
        index.insert_prepared(prepared).map_err(corrupt)?;
        Ok(index)
    }
}

fn check_k(k: usize) -> Result<(), VectorError> {
    if k == 0 {
        return Err(VectorError::param("k", k, "at least 1"));
    }
    Ok(())
}

fn too_many_points(points: usize, adding: usize) -> VectorError {
    VectorError::param(
        "index size",
        format!("{points} graph points + {adding}"),
        format!(
            "at most {MAX_POINTS} graph points (live + tombstones; a rebuild drops tombstones)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn index_is_send_and_sync() {
        assert_send_sync::<Index>();
    }
}
