//! The index: an `hnsw_rs` graph behind a map of live ids, with tombstones, a rebuild that
//! swaps in a fresh graph without blocking searches, a compact read-only copy of the graph
//! that searches run on, exact answers for small indices and a fallback that keeps every
//! answer's length exact.
//!
//! State, all under one `RwLock` held only for map updates and result filtering (never for a
//! graph insert or a search, except the short final replay of a rebuild):
//!
//! - `live`: id → (point, vector). A *point* is the id a vector has inside the graph; every
//!   insert gets a fresh one (a `usize` counter, never reused), so a re-added id leaves its old
//!   point behind as a tombstone instead of a duplicate data id the graph could return.
//! - `points`: point → id for every point of the current graph, live or tombstoned. A graph
//!   hit is live when `live[id].point == point`.
//! - `graph`: `Arc` of the current graph. Adds insert into it after releasing the lock.
//! - `copy`: `Arc` of the latest compact copy of `graph` ([`crate::flat`]), which searches
//!   several times faster than `hnsw_rs` and links back points `hnsw_rs` left unreachable.
//!   Searches clone the `Arc` and search without any lock of ours.
//! - `delta`: points of `graph` the copy cannot be trusted to return (added after the copy
//!   began, isolated in it, or orphans it does not find). A search of the copy checks them
//!   exactly. A new copy is made in the background once the delta grows past
//!   `max(128, live / 512)` points; while it exceeds `max(256, live / 256)` searches use the
//!   graph itself.
//! - `rebuild_log`: while a rebuild builds, the (point, vector) of every add, replayed onto
//!   the new graph before the swap. Removes need no log: liveness lives in `live`.
//! - `orphans`: points of the current graph that a search for their own vector did not find
//!   right after their insert; every search of the graph itself checks them exactly.
//! - `pending`: points registered whose graph insert has not finished; every search of the
//!   graph itself checks them exactly (the copy has them in its delta).
//!
//! A graph hit on a point whose id has since been re-added stands for the id's current
//! vector, measured exactly, so a search racing a re-add finds the id at its old or its new
//! vector, never neither.
//!
//! Points keep their number across a rebuild, so a hit from an old graph still maps to the
//! right id (or to nothing, if its point is gone) after a swap. A search that finds the graph
//! or the copy swapped between its search and its filtering searches again.
//!
//! Lock order: `maintenance`, then `state`, then a graph's insert gate. Nothing runs rayon
//! work while holding `state` (a rayon worker could be a searcher waiting for it).
//!
//! Under `--cfg loom` the locks and atomics are loom's ([`crate::sync`]), the graph and its
//! copy are exact models ([`crate::graph`]) and no background thread is started; the models
//! in `tests/loom_index.rs` drive [`Index::rebuild`] and [`Index::freeze`] themselves.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use hnsw_rs::prelude::{DistL2, Distance};
use serde::Serialize;

use crate::error::VectorError;
use crate::graph::{Frozen, Graph, VERIFY_EF};
use crate::params::{IndexParams, Metric, MAX_EF};
use crate::sync::{
    lock, read, try_lock, write, AtomicBool, AtomicU64, Mutex, Ordering as AtomicOrdering, RwLock,
};

/// The caller's id of a vector.
pub type Id = u64;

/// Most points one graph may hold (live plus tombstones). `hnsw_rs` numbers the points of a
/// layer with an `i32`; this stays far below that.
pub const MAX_POINTS: usize = 1 << 30;

/// Rounds of off-lock replay before a rebuild's final, locked replay.
const REPLAY_ROUNDS_MAX: usize = 8;

/// A replay batch this small is left for the final, locked round.
const REPLAY_LOCKED_MAX: usize = 64;

/// Rebuilds or copies one background thread runs back to back at most.
const MAINTENANCE_ROUNDS_MAX: usize = 4;

/// A batch at least this large makes its copy before `add_batch` returns.
const COPY_AFTER_BATCH_MIN: usize = 256;

/// Each copy audits one in this many older points (see `copy_graph`).
const AUDIT_SHARDS: usize = 8;

/// Delta points that start a new copy: `max(COPY_DELTA_MIN, live / COPY_DELTA_DIV)` more
/// than right after the last copy.
const COPY_DELTA_MIN: usize = 128;
const COPY_DELTA_DIV: usize = 512;

/// Most delta points a search of the copy checks exactly: `max(SEARCH_DELTA_MIN, live /
/// SEARCH_DELTA_DIV)`; beyond it, searches use the graph.
const SEARCH_DELTA_MIN: usize = 256;
const SEARCH_DELTA_DIV: usize = 256;

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
    /// Compact copies of the graph made (see [`Index::freeze`]).
    pub copies: u64,
    /// Points of the current copy.
    pub copy_points: usize,
    /// Points a search of the copy checks exactly (added since it was made, or not reachable
    /// in it).
    pub copy_delta: usize,
    /// Searches answered by brute force (small index, large k, or [`Index::exact_search`]).
    pub exact_searches: u64,
    /// Searches answered through the graph or its copy (fallbacks included).
    pub graph_searches: u64,
    /// Of `graph_searches`, those answered through the copy.
    pub copy_searches: u64,
    /// Graph searches that came up short of `min(k, live non-excluded)` twice and were
    /// answered exactly instead.
    pub fallbacks: u64,
    /// Graph points a search for their own vector did not find right after their insert
    /// (live or not). Every search of the graph checks them exactly.
    pub orphans: usize,
    /// Incoming links the current copy added to points `hnsw_rs` left without one.
    pub copy_repairs: usize,
}

/// A graph point and its vector.
type Item = (usize, Arc<[f32]>);

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
    copy: Option<Arc<Frozen>>,
    delta: Vec<usize>,
    /// `delta.len()` right after the copy was installed (the part a new copy will not shrink).
    delta_floor: usize,
    /// Points below this number were checked (found by their own vector, or linked in) by a
    /// copy of the current graph; the next copy checks the rest.
    checked_below: usize,
    /// The audit shard the next copy checks (see `copy_graph`).
    audit: usize,
    /// Points of the current graph its own search did not find right after their insert
    /// (`hnsw_rs` can drop every link to a new point while pruning its neighbours' lists).
    orphans: HashSet<usize>,
    /// Points registered whose graph insert has not finished: every search of the graph
    /// itself checks them exactly (the copy has them in its delta), so an add in flight
    /// never hides both the id's old vector (already replaced) and its new one.
    pending: HashSet<usize>,
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

    /// True when the delta has grown enough since the last copy to make a new one.
    fn needs_copy(&self, params: &IndexParams) -> bool {
        let live = self.live.len();
        live >= params.exact_below
            && (self.copy.is_none()
                || self.delta.len().saturating_sub(self.delta_floor)
                    > COPY_DELTA_MIN.max(live / COPY_DELTA_DIV))
    }

    /// True when searches should use the copy (it exists and its delta is small).
    fn copy_usable(&self) -> bool {
        self.copy.is_some()
            && self.delta.len() <= SEARCH_DELTA_MIN.max(self.live.len() / SEARCH_DELTA_DIV)
    }

    /// Gives `vector` a fresh point under `id`; returns the point and whether an older
    /// vector of `id` was replaced.
    fn register(&mut self, id: Id, vector: &Arc<[f32]>) -> (usize, bool) {
        let point = self.next_point;
        self.next_point += 1;
        self.points.insert(point, id);
        self.delta.push(point);
        self.pending.insert(point);
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

    /// The live vector of `point`, if `point` is its id's current point.
    fn live_vector(&self, point: usize) -> Option<(Id, &Arc<[f32]>)> {
        let id = *self.points.get(&point)?;
        let entry = self.live.get(&id)?;
        (entry.point == point).then_some((id, &entry.vector))
    }

    /// (point, vector) of every live id.
    fn live_items(&self) -> impl Iterator<Item = Item> + '_ {
        self.live.values().map(|e| (e.point, Arc::clone(&e.vector)))
    }
}

/// A copy of a graph and the points a search of it must check exactly (those of
/// `vectors` it does not hold, its isolated points, and the orphans it does not find).
struct Copy {
    frozen: Arc<Frozen>,
    uncovered: Vec<usize>,
    /// Points a search of the copy missed before they were linked in: orphans from now on.
    missed: Vec<usize>,
}

/// Copies `graph` (off-lock). `vectors`: point → vector of the points that were live when
/// the copy began; `orphans`: the graph's orphans then. Checked, by a search of the copy for
/// their own vector: the orphans, the live points numbered `check_from` or more (those no
/// earlier copy of this graph checked), and the audit shard `audit` (every point whose number
/// is `audit` modulo [`AUDIT_SHARDS`]: later inserts can prune the links that made an older
/// point findable). Those the search misses are linked in from where it ends (and become
/// orphans, so every later copy links them in again); if still missed, they are checked
/// exactly beside the copy.
fn copy_graph(
    graph: &Graph,
    vectors: &HashMap<usize, Arc<[f32]>>,
    orphans: &HashSet<usize>,
    check_from: usize,
    audit: usize,
) -> Copy {
    let mut frozen = graph.freeze(|point| vectors.get(&point).map(Arc::clone));
    let to_check: Vec<(usize, Arc<[f32]>)> = vectors
        .iter()
        .filter(|(p, _)| **p >= check_from || **p % AUDIT_SHARDS == audit || orphans.contains(p))
        .map(|(p, v)| (*p, Arc::clone(v)))
        .collect();
    let missed_first = frozen.misses(&to_check);
    let mut missed = Vec::new();
    if !missed_first.is_empty() {
        frozen.link_in(&missed_first);
        let again: Vec<(usize, Arc<[f32]>)> = missed_first
            .iter()
            .filter_map(|p| vectors.get(p).map(|v| (*p, Arc::clone(v))))
            .collect();
        missed = frozen.misses(&again);
    }
    let mut uncovered: Vec<usize> = vectors
        .keys()
        .filter(|p| !frozen.contains(**p))
        .copied()
        .collect();
    uncovered.extend(frozen.isolated().iter().filter(|p| vectors.contains_key(p)));
    uncovered.extend(missed);
    uncovered.sort_unstable();
    uncovered.dedup();
    Copy {
        frozen: Arc::new(frozen),
        uncovered,
        missed: missed_first,
    }
}

/// What the index shares with its background maintenance thread.
struct Inner {
    params: IndexParams,
    state: RwLock<State>,
    /// Held for the whole of a rebuild or a copy: one at a time.
    maintenance: Mutex<()>,
    /// A background maintenance thread exists (so mutations do not spawn another).
    maintenance_scheduled: AtomicBool,
    rebuilds: AtomicU64,
    copies: AtomicU64,
    exact_searches: AtomicU64,
    graph_searches: AtomicU64,
    copy_searches: AtomicU64,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("params", &self.inner.params)
            .field("stats", &self.stats())
            .finish()
    }
}

/// An HNSW index of `f32` vectors under caller-chosen ids. `Send + Sync`: share it (e.g. in
/// an `Arc`) and call every method from any thread.
pub struct Index {
    inner: Arc<Inner>,
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

/// Which structure a search walks.
enum Walk {
    Graph(Arc<Graph>),
    Copy(Arc<Frozen>),
}

impl Walk {
    fn search(&self, query: &[f32], knbn: usize, ef: usize) -> Vec<(usize, f32)> {
        match self {
            Walk::Graph(graph) => graph.search(query, knbn, ef),
            Walk::Copy(copy) => copy.search(query, knbn, ef),
        }
    }

    /// True if `state` still holds this graph or copy (and, for a copy, its delta).
    fn is_current(&self, state: &State) -> bool {
        match self {
            Walk::Graph(graph) => Arc::ptr_eq(graph, &state.graph),
            Walk::Copy(copy) => state
                .copy
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(copy, current)),
        }
    }

    /// The points checked exactly beside this walk.
    fn beside<'a>(&self, state: &'a State) -> Box<dyn Iterator<Item = usize> + 'a> {
        match self {
            Walk::Graph(_) => Box::new(state.orphans.union(&state.pending).copied()),
            Walk::Copy(_) => Box::new(state.delta.iter().copied()),
        }
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

    /// After `items` were inserted into `graph`: checks that it finds each by its own vector,
    /// records those it does not as orphans (and as delta points of the copy) if `graph` is
    /// still the current one (a rebuild checks its own graph), and ends their pending state.
    fn finish_inserts(&self, graph: &Arc<Graph>, items: &[(usize, Arc<[f32]>)]) {
        let unreachable = graph.unreachable(items, VERIFY_EF, true);
        let mut state = write(&self.state);
        for (point, _) in items {
            state.pending.remove(point);
        }
        if !unreachable.is_empty() && Arc::ptr_eq(&state.graph, graph) {
            state.delta.extend(unreachable.iter().copied());
            state.orphans.extend(unreachable);
        }
    }

    /// True when a rebuild or a new copy is due.
    fn maintenance_due(&self) -> bool {
        let state = read(&self.state);
        state.needs_rebuild(&self.params) || state.needs_copy(&self.params)
    }

    /// Starts a background thread that rebuilds and copies the graph while either is due (at
    /// most `MAINTENANCE_ROUNDS_MAX` rounds), unless one exists. Under loom, does nothing:
    /// the models call [`Index::rebuild`] and [`Index::freeze`] themselves.
    fn schedule_maintenance(self: &Arc<Inner>) {
        if cfg!(loom)
            || self
                .maintenance_scheduled
                .swap(true, AtomicOrdering::AcqRel)
        {
            return;
        }
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vector-index-maintenance".to_string())
            .spawn(move || {
                // Cleared however the thread ends, so a later mutation can schedule again.
                struct Unschedule<'a>(&'a AtomicBool);
                impl Drop for Unschedule<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, AtomicOrdering::Release);
                    }
                }
                let _unschedule = Unschedule(&inner.maintenance_scheduled);
                for _ in 0..MAINTENANCE_ROUNDS_MAX {
                    let (rebuild, copy) = {
                        let state = read(&inner.state);
                        (
                            state.needs_rebuild(&inner.params),
                            state.needs_copy(&inner.params),
                        )
                    };
                    if rebuild {
                        inner.rebuild_now();
                    } else if copy {
                        inner.copy_now();
                    } else {
                        break;
                    }
                }
            });
        if spawned.is_err() {
            // No thread to be had: the next mutation that finds work due tries again.
            self.maintenance_scheduled
                .store(false, AtomicOrdering::Release);
        }
    }

    /// Makes a fresh copy of the current graph off-lock and installs it, unless a rebuild
    /// swapped the graph meanwhile. One maintenance job at a time.
    fn copy_now(&self) {
        let _one_at_a_time = lock(&self.maintenance);
        self.copy_locked();
    }

    fn copy_locked(&self) {
        let (graph, cut, vectors, orphans, check_from, audit) = {
            let state = read(&self.state);
            (
                Arc::clone(&state.graph),
                state.next_point,
                state.live_items().collect::<HashMap<_, _>>(),
                state.orphans.clone(),
                state.checked_below,
                state.audit,
            )
        };
        let copy = copy_graph(&graph, &vectors, &orphans, check_from, audit);
        drop(vectors);
        let mut state = write(&self.state);
        if !Arc::ptr_eq(&state.graph, &graph) {
            return;
        }
        // Points registered since the copy began, and orphans found since, stay in the delta.
        let mut delta = copy.uncovered;
        delta.extend(state.delta.iter().filter(|&&p| p >= cut));
        delta.extend(state.orphans.iter().filter(|p| !orphans.contains(p)));
        delta.sort_unstable();
        delta.dedup();
        state.delta_floor = delta.len();
        state.delta = delta;
        state.checked_below = cut;
        state.audit = (audit + 1) % AUDIT_SHARDS;
        state.orphans.extend(copy.missed);
        let old = state.copy.replace(copy.frozen);
        drop(state);
        drop(old);
        self.copies.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// Builds a fresh graph from the live vectors off-lock, replays the adds made meanwhile,
    /// copies it, and swaps both in. One maintenance job at a time.
    fn rebuild_now(&self) {
        let _one_at_a_time = lock(&self.maintenance);
        let (snapshot, cut): (Vec<Item>, usize) = {
            let mut state = write(&self.state);
            state.rebuild_log = Some(Vec::new());
            let snapshot = state.live_items().collect();
            (snapshot, state.next_point)
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

        let graph = Arc::new(Graph::new(&self.params, snapshot.len()));
        graph.insert_all(&snapshot);
        let mut orphans = graph.unreachable(&snapshot, VERIFY_EF, true);
        let mut inserted: HashMap<usize, Arc<[f32]>> = snapshot.into_iter().collect();

        for _ in 0..REPLAY_ROUNDS_MAX {
            let batch = {
                let mut state = write(&self.state);
                let mut batch = match state.rebuild_log.as_mut() {
                    Some(log) if log.len() > REPLAY_LOCKED_MAX => std::mem::take(log),
                    _ => break,
                };
                // Points replaced or removed since need no place in the new graph (one id
                // re-added a thousand times during a rebuild is replayed once).
                batch.retain(|(point, _)| state.live_vector(*point).is_some());
                batch
            };
            graph.insert_all(&batch);
            orphans.extend(graph.unreachable(&batch, VERIFY_EF, true));
            inserted.extend(batch);
        }
        let mut orphans: HashSet<usize> = orphans.into_iter().collect();
        let copy = copy_graph(&graph, &inserted, &orphans, 0, 0);
        orphans.extend(copy.missed.iter().copied());

        let mut state = write(&self.state);
        let mut rest = state.rebuild_log.take().unwrap_or_default();
        rest.retain(|(point, _)| state.live_vector(*point).is_some());
        stop_log.1 = true;
        for (point, vector) in &rest {
            graph.insert(vector, *point);
        }
        orphans.extend(graph.unreachable(&rest, VERIFY_EF, false));
        let mut delta = copy.uncovered;
        delta.extend(rest.iter().map(|(p, _)| *p));
        let mut points = HashMap::with_capacity(inserted.len() + rest.len());
        for point in inserted.keys().copied().chain(rest.iter().map(|(p, _)| *p)) {
            // Every inserted point is still in `points`: only a swap removes any.
            if let Some(&id) = state.points.get(&point) {
                points.insert(point, id);
            }
        }
        delta.sort_unstable();
        delta.dedup();
        state.points = points;
        state.orphans = orphans;
        state.delta_floor = delta.len();
        state.delta = delta;
        state.checked_below = cut;
        let old_copy = state.copy.replace(copy.frozen);
        let old = std::mem::replace(&mut state.graph, graph);
        drop(state);
        // The old graph and copy are freed here (or by the last search holding them).
        drop(old);
        drop(old_copy);
        drop(inserted);
        self.rebuilds.fetch_add(1, AtomicOrdering::Relaxed);
        self.copies.fetch_add(1, AtomicOrdering::Relaxed);
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
                    copy: None,
                    delta: Vec::new(),
                    delta_floor: 0,
                    checked_below: 0,
                    audit: 0,
                    orphans: HashSet::new(),
                    pending: HashSet::new(),
                    next_point: 0,
                    rebuild_log: None,
                }),
                maintenance: Mutex::new(()),
                maintenance_scheduled: AtomicBool::new(false),
                rebuilds: AtomicU64::new(0),
                copies: AtomicU64::new(0),
                exact_searches: AtomicU64::new(0),
                graph_searches: AtomicU64::new(0),
                copy_searches: AtomicU64::new(0),
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
        let (graph, point, due) = {
            let mut state = write(&self.inner.state);
            if state.points.len() >= MAX_POINTS {
                return Err(too_many_points(state.points.len(), 1));
            }
            let (point, replaced) = state.register(id, &vector);
            let due = (replaced && state.needs_rebuild(&self.inner.params))
                || state.needs_copy(&self.inner.params);
            (Arc::clone(&state.graph), point, due)
        };
        graph.insert(&vector, point);
        self.inner.finish_inserts(&graph, &[(point, vector)]);
        if due {
            self.inner.schedule_maintenance();
        }
        Ok(())
    }

    /// Adds many vectors: validates every item first (on error nothing is added and the error
    /// is [`VectorError::BatchItem`], naming the item's position and id), then inserts them
    /// in parallel. An id present twice in the batch gets its last vector. A batch of 256
    /// or more makes a fresh copy of the graph before returning (unless a rebuild is under
    /// way), so the searches after a bulk load are fast at once.
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
        self.inner.finish_inserts(&graph, &to_insert);
        if !rebuild && to_insert.len() >= COPY_AFTER_BATCH_MIN {
            if let Some(_one_at_a_time) = try_lock(&self.inner.maintenance) {
                if read(&self.inner.state).needs_copy(&self.inner.params) {
                    self.inner.copy_locked();
                }
            }
        }
        if self.inner.maintenance_due() {
            self.inner.schedule_maintenance();
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
            self.inner.schedule_maintenance();
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
    /// graph's compact copy (or, while that is stale, the graph) is searched for `k` plus the
    /// live excluded ids plus headroom for tombstones, and the points it may not reach are
    /// checked exactly; if the filtered answer is short it is retried once wider, then
    /// answered exactly (counted in [`IndexStats::fallbacks`]).
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

        let mut knbn = {
            let state = read(&inner.state);
            let live = state.live.len();
            let want = k.saturating_add(excluded.live_count(&state));
            if live < inner.params.exact_below || want >= live {
                inner.exact_searches.fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(inner.exact(&state, &query, k, &excluded));
            }
            // Headroom for tombstones, in proportion to their share of the graph.
            let headroom = (want as f64 * state.tombstones() as f64 / live as f64).ceil();
            ((want as f64 + headroom + 2.0).min(state.points.len() as f64) as usize).max(1)
        };
        inner.graph_searches.fetch_add(1, AtomicOrdering::Relaxed);
        let mut ef = ef.max(knbn);
        for attempt in 0..3 {
            let walk = {
                let state = read(&inner.state);
                match &state.copy {
                    Some(copy) if state.copy_usable() => Walk::Copy(Arc::clone(copy)),
                    _ => Walk::Graph(Arc::clone(&state.graph)),
                }
            };
            if attempt == 0 && matches!(walk, Walk::Copy(_)) {
                inner.copy_searches.fetch_add(1, AtomicOrdering::Relaxed);
            }
            let neighbours = walk.search(&query, knbn, ef);
            let state = read(&inner.state);
            if !walk.is_current(&state) {
                // Swapped between the search and now: the points to check beside it changed.
                continue;
            }
            let target = k.min(state.live.len() - excluded.live_count(&state));
            let mut hits = Vec::with_capacity(neighbours.len().min(k) + 8);
            for &(point, distance) in &neighbours {
                let Some(&id) = state.points.get(&point) else {
                    continue;
                };
                let Some(entry) = state.live.get(&id) else {
                    continue;
                };
                if excluded.contains(id) {
                    continue;
                }
                // A point of a re-added id stands for the id's current vector, measured
                // exactly: the walk may have run before the re-add and missed the new point.
                let distance = if entry.point == point {
                    distance
                } else {
                    DistL2.eval(&query, &entry.vector)
                };
                hits.push(Hit {
                    id,
                    distance: inner.report(distance),
                });
            }
            for point in walk.beside(&state) {
                if let Some((id, vector)) = state.live_vector(point) {
                    if !excluded.contains(id) {
                        hits.push(Hit {
                            id,
                            distance: inner.report(DistL2.eval(&query, vector)),
                        });
                    }
                }
            }
            sort_hits(&mut hits);
            // A point checked beside the walk may also have been found by it: each id once.
            let mut seen = HashSet::with_capacity(hits.len());
            hits.retain(|h| seen.insert(h.id));
            if hits.len() >= target {
                hits.truncate(k);
                return Ok(hits);
            }
            let graph_points = state.points.len();
            if knbn >= graph_points {
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
    /// (and a copy of it) in. Searches, adds and removes go on meanwhile (adds are replayed
    /// onto the new graph before the swap). If a rebuild or copy is running, waits for it
    /// first.
    pub fn rebuild(&self) {
        self.inner.rebuild_now();
    }

    /// Makes a fresh compact copy of the graph now and has searches use it. This happens by
    /// itself in the background once enough points were added since the last copy, and at
    /// the end of a large [`Index::add_batch`]; call it to have the next searches fast at
    /// once after a run of single adds. Searches and mutations go on meanwhile. If a rebuild
    /// or copy is running, waits for it first.
    pub fn freeze(&self) {
        self.inner.copy_now();
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
            copies: inner.copies.load(AtomicOrdering::Relaxed),
            copy_points: state.copy.as_ref().map_or(0, |c| c.len()),
            copy_delta: state.delta.len(),
            exact_searches: inner.exact_searches.load(AtomicOrdering::Relaxed),
            graph_searches: inner.graph_searches.load(AtomicOrdering::Relaxed),
            copy_searches: inner.copy_searches.load(AtomicOrdering::Relaxed),
            fallbacks: inner.fallbacks.load(AtomicOrdering::Relaxed),
            orphans: state.orphans.len(),
            copy_repairs: state.copy.as_ref().map_or(0, |c| c.repaired()),
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
