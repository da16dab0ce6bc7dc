//! A compact, read-only copy of an `hnsw_rs` graph, searched with a tight loop.
//!
//! `hnsw_rs` 0.3.5 stores each point as an `Arc<Point>` whose neighbour lists sit behind a
//! `parking_lot::RwLock` and hold further `Arc`s; its search takes a lock per expanded node,
//! clones an `Arc` and allocates two more per accepted neighbour, and keeps the visited set
//! in a `HashMap`. [`FlatGraph`] copies the same graph once into flat arrays and searches it
//! with none of that:
//!
//! - every point gets a dense `u32` number; `points` maps it back to the point number (the
//!   graph's data id), `index_of` the other way;
//! - `vectors` holds each point's vector as an `Arc<[f32]>`: normally the very `Arc` the index
//!   keeps in its own map (no second copy), else a copy of `hnsw_rs`'s own vector;
//! - layer 0 is one CSR table (`offsets`, `links`); each upper layer is a CSR table over that
//!   layer's members. Dense numbers are given highest level first, so the members of layer
//!   `l` are exactly the dense numbers `0..members(l)`, and an upper layer needs no map;
//! - the visited set is a thread-local vector of generation stamps, grown to the graph's size
//!   once per thread and never cleared between searches (a fresh stamp per search).
//!
//! The search is standard HNSW: a greedy descent (beam 1, repeated until no neighbour is
//! nearer) from the entry point through the upper layers, then a beam search of width `ef`
//! in layer 0, with the same acceptance and stopping rule as `hnsw_rs`'s `search_layer`.
//! Distances are `DistL2::eval` (the `simdeez_f` code `hnsw_rs` itself uses, dispatched at
//! run time to AVX2 or, where the CPU has it, AVX-512), so every reported distance is
//! bit-identical to the one `hnsw_rs` would report. Before computing the distances to a
//! node's unvisited neighbours, the search starts the loads of all their vectors
//! (`_mm_prefetch`, x86_64 only): nearly all the time of a search goes to reading vectors.
//!
//! Measured single-threaded (30,000 clustered vectors of dimension 768, m 16,
//! `ef_construction` 200, k 10): 2.3–2.9× the QPS of `hnsw_rs`'s `search` on the same graph
//! at `ef` 16–128, recall equal within ±0.02 (it walks the same graph; an unrepaired copy
//! with `hnsw_rs`'s one-scan-per-layer descent gives `hnsw_rs`'s very answers). Without the
//! prefetch the gain was 2.0–2.4×.
//!
//! **Repair.** `hnsw_rs` prunes a neighbour's list by plain distance when a new point links
//! back, so a new point can end up with no incoming layer-0 link: no search can reach it.
//! After copying, every such point (other than the entry) that has outgoing links is appended
//! to the layer-0 lists of its [`REPAIR_LINKS`] nearest out-neighbours ([`FlatGraph::repaired`]
//! counts the links added). A point with no outgoing layer-0 link at all cannot be linked in
//! this way; it is listed in [`FlatGraph::isolated`] for the caller to check exactly.
//!
//! **Input is not trusted.** The graph may be inserted into while it is copied, so nothing
//! read from it is assumed consistent: neighbours that are not copied points are dropped,
//! as are self-links and duplicate links; a point whose vector has the wrong length or a
//! non-finite value is not copied (its vector would make `DistL2` panic); a second point
//! with an already-seen data id is not copied; an empty graph gives an empty copy. Points
//! are read a layer at a time through `get_layer_iterator` (one short read lock each), never
//! through `IntoIterator for &PointIndexation`, which unwraps the entry point (a panic on a
//! graph whose first insert is still running) and takes its layer lock recursively (a
//! deadlock under `parking_lot`'s fair `RwLock` when an insert is waiting for it).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use hnsw_rs::prelude::{DistL2, Distance, Hnsw, Point};

/// Layer-0 in-links the repair gives a point that has none: from its this many nearest
/// out-neighbours.
pub const REPAIR_LINKS: usize = 2;

/// Cache lines of a vector prefetched before its distance is computed (1, 2, 4 and 8 measured
/// within noise of each other at dimensions 96 and 768).
#[cfg(target_arch = "x86_64")]
const PREFETCH_LINES: usize = 2;

/// Outgoing links of the nodes of one layer, in compressed sparse row form: node `i`'s
/// neighbours are `links[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Default)]
struct Csr {
    offsets: Vec<u32>,
    links: Vec<u32>,
}

impl Csr {
    /// Packs `lists` (node `i`'s neighbours at `lists[i]`). Should the links outnumber
    /// `u32::MAX` (16 GiB of links: never in practice), the lists that do not fit are left
    /// empty rather than panicking.
    fn from_lists(lists: &[Vec<u32>]) -> Csr {
        let total: usize = lists.iter().map(Vec::len).sum();
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        let mut links = Vec::with_capacity(total.min(u32::MAX as usize));
        offsets.push(0);
        for list in lists {
            if u32::try_from(links.len() + list.len()).is_ok() {
                links.extend_from_slice(list);
            }
            // Fits: links.len() <= u32::MAX by the check above.
            offsets.push(u32::try_from(links.len()).unwrap_or(u32::MAX));
        }
        Csr { offsets, links }
    }

    /// Node `node`'s neighbours; empty for a node the table does not cover.
    #[inline]
    fn neighbours(&self, node: u32) -> &[u32] {
        let node = node as usize;
        match (self.offsets.get(node), self.offsets.get(node + 1)) {
            (Some(&start), Some(&end)) => {
                self.links.get(start as usize..end as usize).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    fn heap_bytes(&self) -> usize {
        (self.offsets.capacity() + self.links.capacity()) * std::mem::size_of::<u32>()
    }
}

/// A read-only copy of an `hnsw_rs` graph (see the [module documentation](self)).
/// `Send + Sync`; immutable once built.
#[derive(Debug)]
pub struct FlatGraph {
    /// Components per vector (every copied vector has exactly this many).
    dim: usize,
    /// Dense number → point number (`hnsw_rs` data id).
    points: Vec<usize>,
    /// Point number → dense number.
    index_of: HashMap<usize, u32>,
    /// Dense number → vector.
    vectors: Vec<Arc<[f32]>>,
    /// Dense number → level (highest layer the point belongs to); non-increasing.
    levels: Vec<u8>,
    /// Layer 0 over every point.
    layer0: Csr,
    /// `upper[l - 1]` is layer `l`, over its members: the dense numbers whose level is at
    /// least `l`, which come first.
    upper: Vec<Csr>,
    /// Where every search starts: a point of the highest layer. `None` when empty.
    entry: Option<u32>,
    /// Point numbers with no outgoing layer-0 link (the entry excepted).
    isolated: Vec<usize>,
    /// Layer-0 in-links added by the repair.
    repaired: usize,
}

/// A node with its distance to the query, ordered by distance then dense number.
#[derive(Debug, Clone, Copy)]
struct Scored {
    distance: f32,
    node: u32,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// Beam width of a search in layer 1; every node it ends with seeds the layer-0 search.
/// Standard HNSW walks layer 1 greedily (width 1) and enters layer 0 at one node; on data
/// of many tight clusters that one node can sit in the wrong cluster, with no layer-0 link
/// out of it. Measured on the `multitier` corpus at 100,000 × 768 (420 clusters): a fill
/// search found fewer than two of its cluster's workers in 0.29 % of runs with width 1.
const LAYER1_EF: usize = 16;

/// How a search goes down the upper layers to its layer-0 starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Descent {
    /// In each layer, move to the nearest neighbour while one is nearer (standard HNSW).
    Greedy,
    /// In each layer, scan the current node's neighbours once and move to the nearest if
    /// it is nearer: what `hnsw_rs` 0.3.5's `search` does (tests use it to check that the
    /// copy walks exactly the graph `hnsw_rs` walks).
    OnePass,
}

/// Per-thread search state, reused from search to search.
#[derive(Default)]
struct Scratch {
    /// `visited[node] == stamp`: visited by the current search.
    visited: Vec<u32>,
    stamp: u32,
    /// Nodes to expand, nearest on top.
    candidates: BinaryHeap<Reverse<Scored>>,
    /// The best `ef` found so far, farthest on top.
    results: BinaryHeap<Scored>,
    /// The unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

impl Scratch {
    /// Starts a search over `n` nodes: grows the marks if needed and takes a fresh stamp
    /// (clearing every mark only when the stamp wraps).
    fn begin(&mut self, n: usize) {
        if self.visited.len() < n {
            self.visited.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.fill(0);
            self.stamp = 1;
        }
        self.candidates.clear();
        self.results.clear();
        self.fresh.clear();
    }

    /// Marks `node` visited; false if it already was (or is out of range).
    #[inline]
    fn visit(&mut self, node: u32) -> bool {
        match self.visited.get_mut(node as usize) {
            Some(mark) if *mark != self.stamp => {
                *mark = self.stamp;
                true
            }
            _ => false,
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Whether `v` can be searched: `dim` components (at least one), all finite.
fn usable(v: &[f32], dim: usize) -> bool {
    dim > 0 && v.len() == dim && v.iter().all(|x| x.is_finite())
}

/// What [`repair`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Repair {
    /// In-links added.
    added: usize,
    /// Nodes with no outgoing link (the entry excepted), ascending.
    isolated: Vec<u32>,
}

/// Gives every node of `adjacency` (other than `entry`) that has no incoming link but has
/// outgoing ones an in-link from each of its [`REPAIR_LINKS`] nearest out-neighbours
/// (`distance(a, b)` between nodes; ties by the smaller node), and reports the nodes with no
/// outgoing link. In-degrees are counted once, before any link is added. Out-of-range node
/// numbers in a list are ignored.
fn repair(
    adjacency: &mut [Vec<u32>],
    entry: Option<u32>,
    distance: impl Fn(u32, u32) -> f32,
) -> Repair {
    let n = adjacency.len();
    let mut in_degree = vec![0u32; n];
    for list in adjacency.iter() {
        for &j in list {
            if let Some(d) = in_degree.get_mut(j as usize) {
                *d = d.saturating_add(1);
            }
        }
    }
    // Judged on the lists as given, before the repair extends any.
    let isolated = (0..n)
        .filter_map(|i| u32::try_from(i).ok())
        .filter(|&node| {
            Some(node) != entry && adjacency.get(node as usize).is_some_and(Vec::is_empty)
        })
        .collect();
    let mut out = Repair { added: 0, isolated };
    let mut nearest: Vec<Scored> = Vec::new();
    for (i, &degree) in in_degree.iter().enumerate() {
        let Ok(node) = u32::try_from(i) else { break };
        if degree > 0 || Some(node) == entry {
            continue;
        }
        // Untouched so far: the repair only extends the lists of nodes with in-links.
        let Some(list) = adjacency.get(i) else { break };
        if list.is_empty() {
            continue; // isolated
        }
        nearest.clear();
        nearest.extend(
            list.iter()
                .filter(|&&j| j != node && (j as usize) < n)
                .map(|&j| Scored {
                    distance: distance(node, j),
                    node: j,
                }),
        );
        nearest.sort_unstable();
        nearest.dedup_by_key(|s| s.node);
        for s in nearest.iter().take(REPAIR_LINKS) {
            if let Some(target) = adjacency.get_mut(s.node as usize) {
                if !target.contains(&node) {
                    target.push(node);
                    out.added += 1;
                }
            }
        }
    }
    out
}

/// A point read from `hnsw_rs` and copied, with its (capped) level.
struct Copied {
    point: Arc<Point<'static, f32>>,
    level: u8,
}

impl FlatGraph {
    /// Copies `hnsw`'s graph. `vector_of(point)` gives the vector to keep for a point (an
    /// `Arc` shared with the index's own map, so no second copy); when it returns `None` (a
    /// tombstoned point the index no longer holds), or a vector of the wrong length or with
    /// a non-finite value, the vector is copied from `hnsw_rs`'s point (`Point::get_v`). A
    /// point neither gives a usable vector for is not copied. The dimension is that of the
    /// first point read (highest layer first).
    ///
    /// Safe to call while `hnsw` is being inserted into: a point whose insert is under way
    /// is copied with whatever links it has so far (or none: then it is
    /// [`isolated`](FlatGraph::isolated)), links to points inserted after their layer was
    /// read are dropped, and levels above the entry point's are ignored.
    pub fn from_hnsw(
        hnsw: &Hnsw<'static, f32, DistL2>,
        vector_of: impl Fn(usize) -> Option<Arc<[f32]>>,
    ) -> FlatGraph {
        FlatGraph::build(hnsw, vector_of, true)
    }

    /// [`FlatGraph::from_hnsw`], with the repair only if `repair_links` (tests compare the
    /// unrepaired copy with `hnsw_rs` itself).
    fn build(
        hnsw: &Hnsw<'static, f32, DistL2>,
        vector_of: impl Fn(usize) -> Option<Arc<[f32]>>,
        repair_links: bool,
    ) -> FlatGraph {
        let indexation = hnsw.get_point_indexation();
        // Highest layer first, one layer's read lock at a time (only long enough to clone
        // its `Arc`s). `get_max_level` is the number of layers hnsw_rs allocated.
        let mut read: Vec<Arc<Point<'static, f32>>> = Vec::with_capacity(hnsw.get_nb_point());
        for layer in (0..hnsw.get_max_level()).rev() {
            if indexation.get_layer_nb_point(layer) > 0 {
                read.extend(indexation.get_layer_iterator(layer));
            }
        }
        // Read after the layers: a level above the entry point's belongs to an insert under
        // way (the entry is raised at the end of an insert); such a point is treated as
        // belonging to the entry's level at most. Capping keeps `levels` non-increasing.
        let observed = hnsw.get_max_level_observed();

        let mut dim = 0usize;
        let mut points = Vec::with_capacity(read.len());
        let mut index_of = HashMap::with_capacity(read.len());
        let mut vectors: Vec<Arc<[f32]>> = Vec::with_capacity(read.len());
        let mut levels = Vec::with_capacity(read.len());
        let mut copied = Vec::with_capacity(read.len());
        for point in read {
            let origin = point.get_origin_id();
            if index_of.contains_key(&origin) {
                continue; // a duplicate data id: the first copy (higher level) is kept
            }
            if dim == 0 {
                dim = point.get_v().len();
            }
            let vector = match vector_of(origin) {
                Some(v) if usable(&v, dim) => v,
                _ if usable(point.get_v(), dim) => Arc::from(point.get_v()),
                _ => continue,
            };
            let Ok(dense) = u32::try_from(points.len()) else {
                break;
            };
            let level = point.get_point_id().0.min(observed);
            points.push(origin);
            index_of.insert(origin, dense);
            vectors.push(vector);
            levels.push(level);
            copied.push(Copied { point, level });
        }

        // Neighbour lists, filtered to copied points.
        let top = levels.first().copied().unwrap_or(0);
        let mut layer0: Vec<Vec<u32>> = Vec::with_capacity(copied.len());
        let mut upper: Vec<Vec<Vec<u32>>> = (0..top).map(|_| Vec::new()).collect();
        for (i, c) in copied.iter().enumerate() {
            let node = i as u32; // < points.len(), which fits in u32
            let hood = c.point.get_neighborhood_id();
            for layer in 0..=c.level {
                let mut list: Vec<u32> = Vec::new();
                if let Some(neighbours) = hood.get(usize::from(layer)) {
                    list.reserve(neighbours.len());
                    for n in neighbours {
                        let Some(&j) = index_of.get(&n.d_id) else {
                            continue;
                        };
                        // A link in layer l may lead to a point below l (hnsw_rs links a point
                        // that raises the top level to the old entry point in the new
                        // layers): kept, as hnsw_rs follows it; that point has no list in
                        // layer l here (it is past the layer's rows), so a search only
                        // moves onto it.
                        if j != node && !list.contains(&j) {
                            list.push(j);
                        }
                    }
                }
                if layer == 0 {
                    layer0.push(list);
                } else if let Some(lists) = upper.get_mut(usize::from(layer) - 1) {
                    // Members of a layer come first in dense order, so `lists[i]` is node i.
                    lists.push(list);
                }
            }
        }
        drop(copied);

        // The entry: a member of the top layer, preferring one with links (a point of the
        // top level whose insert is still under way may have none yet).
        let members_top = levels.iter().take_while(|&&l| l == top).count();
        let has_links = |i: usize| {
            let top_list = match top {
                0 => layer0.get(i),
                t => upper.get(usize::from(t) - 1).and_then(|lists| lists.get(i)),
            };
            top_list.is_some_and(|l| !l.is_empty()) || layer0.get(i).is_some_and(|l| !l.is_empty())
        };
        let entry = (0..members_top)
            .find(|&i| has_links(i))
            .or(if members_top > 0 { Some(0) } else { None })
            .map(|i| i as u32);

        let pair_distance =
            |a: u32, b: u32| match (vectors.get(a as usize), vectors.get(b as usize)) {
                (Some(va), Some(vb)) => DistL2.eval(va, vb),
                _ => f32::INFINITY,
            };
        let repaired = if repair_links {
            repair(&mut layer0, entry, pair_distance)
        } else {
            // The same isolated points; no link added.
            Repair {
                added: 0,
                ..repair(&mut layer0.clone(), entry, pair_distance)
            }
        };
        let isolated = repaired
            .isolated
            .iter()
            .filter_map(|&i| points.get(i as usize).copied())
            .collect();

        FlatGraph {
            dim,
            points,
            index_of,
            vectors,
            levels,
            layer0: Csr::from_lists(&layer0),
            upper: upper.iter().map(|lists| Csr::from_lists(lists)).collect(),
            entry,
            isolated,
            repaired: repaired.added,
        }
    }

    /// Links each of `targets` (point numbers) in from the `links` nearest other points a
    /// search of this copy with beam `ef` finds for the target's own vector: the target is
    /// appended to their layer-0 lists. For points that have incoming links but that a search
    /// for their own vector still misses (the search settles among those nearest points, so
    /// a link from them leads it on). Targets not in the copy are skipped; links already
    /// present are not added twice. Returns the links added (also counted in
    /// [`FlatGraph::repaired`]).
    pub fn link_in(&mut self, targets: &[usize], links: usize, ef: usize) -> usize {
        let mut wanted: Vec<(u32, u32)> = Vec::new();
        for &target in targets {
            let Some(&to) = self.index_of.get(&target) else {
                continue;
            };
            let Some(vector) = self.vectors.get(to as usize).map(Arc::clone) else {
                continue;
            };
            let found = self.search(&vector, links.saturating_add(1), ef);
            wanted.extend(
                found
                    .iter()
                    .filter(|(point, _)| *point != target)
                    .filter_map(|(point, _)| self.index_of.get(point).map(|&from| (from, to)))
                    .take(links),
            );
        }
        if wanted.is_empty() {
            return 0;
        }
        let n = self.points.len();
        let mut lists: Vec<Vec<u32>> = (0..n)
            .map(|node| {
                u32::try_from(node)
                    .map_or_else(|_| Vec::new(), |node| self.layer0.neighbours(node).to_vec())
            })
            .collect();
        let mut added = 0;
        for (from, to) in wanted {
            if let Some(list) = lists.get_mut(from as usize) {
                if !list.contains(&to) {
                    list.push(to);
                    added += 1;
                }
            }
        }
        self.layer0 = Csr::from_lists(&lists);
        self.repaired += added;
        added
    }

    /// The `k` nearest points to `query` found with beam width `ef` (clamped to at least
    /// `k`), nearest first (ties by the order of copying), as (point number, euclidean
    /// distance exactly as `DistL2::eval` returns it). Never the same point twice; at most
    /// `min(k, len())` results (fewer only when the graph does not connect enough points).
    /// An empty graph, `k == 0`, or a query whose length is not the graph's dimension or
    /// that holds a non-finite value gives an empty vector.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        self.search_with(query, k, ef, Descent::Greedy)
    }

    /// [`FlatGraph::search`] with a choice of descent through the upper layers.
    fn search_with(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        descent: Descent,
    ) -> Vec<(usize, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if k == 0 || !usable(query, self.dim) {
            return Vec::new();
        }
        let ef = ef.max(k);
        let top = self.levels.get(entry as usize).copied().unwrap_or(0);
        // Greedy: a beam in layer 1 (when there is one) whose results all seed layer 0.
        let wide = descent == Descent::Greedy && top >= 1;
        let lowest = if wide { 2 } else { 1 };
        let Some((start, start_distance)) = self.descend(query, entry, descent, lowest) else {
            return Vec::new();
        };
        let run = |scratch: &mut Scratch| {
            let mut seeds = vec![Scored {
                distance: start_distance,
                node: start,
            }];
            if let (true, Some(layer1)) = (wide, self.upper.first()) {
                self.beam(layer1, query, &seeds, LAYER1_EF, scratch);
                seeds = std::mem::take(&mut scratch.results).into_vec();
            }
            self.beam(&self.layer0, query, &seeds, ef, scratch);
            let mut found = std::mem::take(&mut scratch.results).into_sorted_vec();
            found.truncate(k);
            let out = found
                .iter()
                .filter_map(|s| Some((*self.points.get(s.node as usize)?, s.distance)))
                .collect();
            // Give the heap's allocation back for the next search.
            found.clear();
            scratch.results = BinaryHeap::from(found);
            out
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => run(&mut scratch),
            // Not reachable (nothing here re-enters); a fresh scratch keeps it panic-free.
            Err(_) => run(&mut Scratch::default()),
        })
    }

    /// Distance from `query` to node `node`'s vector; `None` for a node with no vector.
    #[inline]
    fn distance(&self, query: &[f32], node: u32) -> Option<f32> {
        self.vectors
            .get(node as usize)
            .map(|v| DistL2.eval(query, v))
    }

    /// Descent from `entry` through the upper layers (see [`Descent`]). Returns the layer-0
    /// starting node and its distance.
    fn descend(
        &self,
        query: &[f32],
        entry: u32,
        descent: Descent,
        lowest: usize,
    ) -> Option<(u32, f32)> {
        let mut current = entry;
        let mut current_distance = self.distance(query, entry)?;
        let top = self.levels.get(entry as usize).copied().unwrap_or(0);
        for layer in (lowest.max(1)..=usize::from(top)).rev() {
            let Some(csr) = self.upper.get(layer - 1) else {
                continue;
            };
            loop {
                let mut best = current;
                for &n in csr.neighbours(current) {
                    if let Some(d) = self.distance(query, n) {
                        if d < current_distance {
                            current_distance = d;
                            best = n;
                        }
                    }
                }
                let moved = best != current;
                current = best;
                if !moved || descent == Descent::OnePass {
                    break;
                }
            }
        }
        Some((current, current_distance))
    }

    /// The beam search of one layer from `seeds`: leaves the best `ef` nodes found in
    /// `scratch.results`.
    fn beam(&self, layer: &Csr, query: &[f32], seeds: &[Scored], ef: usize, scratch: &mut Scratch) {
        scratch.begin(self.points.len());
        scratch.candidates.clear();
        scratch.results.clear();
        for &seed in seeds {
            if scratch.visit(seed.node) {
                scratch.candidates.push(Reverse(seed));
                scratch.results.push(seed);
                if scratch.results.len() > ef {
                    scratch.results.pop();
                }
            }
        }
        while let Some(Reverse(nearest)) = scratch.candidates.pop() {
            let worst = scratch.results.peek().map_or(f32::INFINITY, |s| s.distance);
            if nearest.distance > worst && scratch.results.len() >= ef {
                break;
            }
            // First the neighbours not visited yet, marked and their vectors' loads started
            // (measured: +35-45 % QPS at dimension 768 over no prefetch, +10-15 % over
            // prefetching one neighbour ahead); then their distances.
            let mut fresh = std::mem::take(&mut scratch.fresh);
            fresh.clear();
            for &n in layer.neighbours(nearest.node) {
                if scratch.visit(n) {
                    self.prefetch(n);
                    fresh.push(n);
                }
            }
            for &n in &fresh {
                let Some(distance) = self.distance(query, n) else {
                    continue;
                };
                let full = scratch.results.len() >= ef;
                let worst = scratch.results.peek().map_or(f32::INFINITY, |s| s.distance);
                if !full || distance < worst {
                    let s = Scored { distance, node: n };
                    scratch.candidates.push(Reverse(s));
                    scratch.results.push(s);
                    if scratch.results.len() > ef {
                        scratch.results.pop();
                    }
                }
            }
            scratch.fresh = fresh;
        }
    }

    /// Asks the CPU to start loading the first [`PREFETCH_LINES`] cache lines of node
    /// `node`'s vector (the hardware prefetcher follows on from there).
    #[inline(always)]
    fn prefetch(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self.vectors.get(node as usize) {
            let floats_per_line = 64 / std::mem::size_of::<f32>();
            for line in 0..PREFETCH_LINES.min(v.len().div_ceil(floats_per_line)) {
                prefetch_read(v.as_ptr().wrapping_add(line * floats_per_line));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = node;
    }

    /// Points copied.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point was copied.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Whether point number `point` was copied.
    pub fn contains(&self, point: usize) -> bool {
        self.index_of.contains_key(&point)
    }

    /// Points that had no outgoing layer-0 link (the entry point excepted), in the order of
    /// copying: the repair cannot link them in (it links a point from its own
    /// out-neighbours), so the caller should check them exactly. Typically a point whose
    /// insert was under way during the copy; a complete `hnsw_rs` graph rarely has any.
    pub fn isolated(&self) -> &[usize] {
        &self.isolated
    }

    /// Layer-0 in-links added by the repair (see the [module documentation](self)).
    pub fn repaired(&self) -> usize {
        self.repaired
    }

    /// Approximate heap bytes of everything but the vectors' contents: the link tables, the
    /// point maps, the levels and the vectors' `Arc` pointers.
    pub fn adjacency_bytes(&self) -> usize {
        let csr: usize =
            self.layer0.heap_bytes() + self.upper.iter().map(Csr::heap_bytes).sum::<usize>();
        // hashbrown: a (key, value) slot plus one control byte per bucket.
        let map = self.index_of.capacity() * (std::mem::size_of::<(usize, u32)>() + 1);
        csr + map
            + self.points.capacity() * std::mem::size_of::<usize>()
            + self.vectors.capacity() * std::mem::size_of::<Arc<[f32]>>()
            + self.levels.capacity()
            + self.isolated.capacity() * std::mem::size_of::<usize>()
    }
}

/// A hint to load the cache line at `p` into all cache levels. Never faults, whatever `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_read(p: *const f32) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint; it does not dereference `p` architecturally and cannot
    // fault. SSE (which the intrinsic needs) is part of the x86_64 baseline.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{self, Dataset};

    const DIM: usize = 32;
    const N: usize = 2_000;
    const SEED: u64 = 7;
    const QUERIES: usize = 100;

    /// An hnsw_rs graph (m 16, ef_construction 200) over `data`'s rows, row `i` under data
    /// id `i`, inserted one at a time.
    fn graph(data: &Dataset) -> Hnsw<'static, f32, DistL2> {
        let hnsw = Hnsw::new(16, data.len().max(1), 16, 200, DistL2);
        for (i, row) in data.rows().enumerate() {
            hnsw.insert_slice((row, i));
        }
        hnsw
    }

    fn shared(data: &Dataset) -> Vec<Arc<[f32]>> {
        data.rows().map(Arc::from).collect()
    }

    /// The exact `k` nearest rows, by `DistL2`, ties by row.
    fn brute_force(data: &Dataset, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = data
            .rows()
            .enumerate()
            .map(|(i, row)| (i, DistL2.eval(query, row)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    fn fixture() -> (Dataset, Dataset, Hnsw<'static, f32, DistL2>) {
        let base = data::synthetic(N, DIM, SEED).expect("valid sizes");
        let queries = data::synthetic_queries(SEED, N, QUERIES, DIM).expect("valid sizes");
        let hnsw = graph(&base);
        (base, queries, hnsw)
    }

    /// Checks one answer's shape against the data: sorted, no duplicate, every distance
    /// exactly `DistL2.eval`, `min(k, n)` long.
    fn check_answer(data: &Dataset, query: &[f32], k: usize, answer: &[(usize, f32)]) {
        assert_eq!(answer.len(), k.min(data.len()), "answer length");
        for pair in answer.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "not sorted: {answer:?}");
        }
        let mut ids: Vec<usize> = answer.iter().map(|h| h.0).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), answer.len(), "duplicates in {answer:?}");
        for &(point, distance) in answer {
            let row = data.get(point).expect("a point of the data");
            assert_eq!(distance.to_bits(), DistL2.eval(query, row).to_bits());
        }
    }

    /// Fraction of queries whose top-10 ids equal brute force's.
    fn exact_fraction(
        data: &Dataset,
        queries: &Dataset,
        search: impl Fn(&[f32]) -> Vec<(usize, f32)>,
    ) -> f64 {
        let mut same = 0;
        for q in queries.rows() {
            let answer = search(q);
            check_answer(data, q, 10, &answer);
            let want: Vec<usize> = brute_force(data, q, 10).iter().map(|h| h.0).collect();
            let got: Vec<usize> = answer.iter().map(|h| h.0).collect();
            same += usize::from(want == got);
        }
        same as f64 / queries.len() as f64
    }

    fn recall(data: &Dataset, queries: &Dataset, search: impl Fn(&[f32]) -> Vec<usize>) -> f64 {
        let mut found = 0;
        for q in queries.rows() {
            let want: Vec<usize> = brute_force(data, q, 10).iter().map(|h| h.0).collect();
            found += search(q).iter().filter(|p| want.contains(p)).count();
        }
        found as f64 / (10 * queries.len()) as f64
    }

    #[test]
    fn flat_search_at_ef_200_is_exact() {
        let (base, queries, hnsw) = fixture();
        let vectors = shared(&base);
        let flat = FlatGraph::from_hnsw(&hnsw, |p| vectors.get(p).cloned());
        assert_eq!(flat.len(), N);
        assert!((0..N).all(|p| flat.contains(p)));
        assert!(!flat.contains(N));
        // The vectors are the shared Arcs, not copies.
        assert!(flat
            .points
            .iter()
            .zip(&flat.vectors)
            .all(|(&p, v)| Arc::ptr_eq(v, &vectors[p])));
        let exact = exact_fraction(&base, &queries, |q| flat.search(q, 10, 200));
        assert!(exact >= 0.99, "top-10 exact for {exact} of the queries");
    }

    #[test]
    fn flat_recall_matches_hnsw_rs_on_the_same_graph() {
        let (base, queries, hnsw) = fixture();
        let vectors = shared(&base);
        let flat = FlatGraph::from_hnsw(&hnsw, |p| vectors.get(p).cloned());
        for ef in [16, 64] {
            let flat_recall = recall(&base, &queries, |q| {
                flat.search(q, 10, ef).iter().map(|h| h.0).collect()
            });
            let hnsw_recall = recall(&base, &queries, |q| {
                hnsw.search(q, 10, ef).iter().map(|n| n.d_id).collect()
            });
            assert!(
                flat_recall >= hnsw_recall - 0.01,
                "ef {ef}: flat recall {flat_recall} < hnsw_rs recall {hnsw_recall} - 0.01"
            );
        }
    }

    #[test]
    fn unrepaired_copy_with_hnsw_rs_descent_answers_exactly_as_hnsw_rs() {
        // Same graph, same walk: the copy without its repair, descending the upper layers
        // the way hnsw_rs does (one scan per layer), must give hnsw_rs's very answers.
        let (_, queries, hnsw) = fixture();
        let flat = FlatGraph::build(&hnsw, |_| None, false);
        assert_eq!(flat.repaired(), 0);
        for ef in [10, 16, 64] {
            for q in queries.rows() {
                let want: Vec<(usize, f32)> = hnsw
                    .search(q, 10, ef)
                    .iter()
                    .map(|n| (n.d_id, n.distance))
                    .collect();
                let got = flat.search_with(q, 10, ef, Descent::OnePass);
                assert_eq!(got, want, "ef {ef}");
            }
        }
        // The greedy descent (the default) starts at least as near in layer 0.
        let flat = FlatGraph::from_hnsw(&hnsw, |_| None);
        for q in queries.rows() {
            let Some(entry) = flat.entry else {
                panic!("no entry point")
            };
            let greedy = flat.descend(q, entry, Descent::Greedy, 1).map(|s| s.1);
            let one_pass = flat.descend(q, entry, Descent::OnePass, 1).map(|s| s.1);
            assert!(greedy <= one_pass, "{greedy:?} > {one_pass:?}");
        }
        // Upper layers: the members of layer l are the dense numbers 0..members(l).
        assert!(flat.levels.windows(2).all(|w| w[0] >= w[1]));
        for (l, csr) in flat.upper.iter().enumerate() {
            let members = flat
                .levels
                .iter()
                .filter(|&&level| usize::from(level) > l)
                .count();
            assert_eq!(csr.offsets.len(), members + 1, "layer {}", l + 1);
            assert!(csr.links.iter().all(|&j| (j as usize) < flat.len()));
        }
    }

    #[test]
    fn vectors_missing_from_vector_of_are_copied_from_hnsw_rs() {
        let (base, queries, hnsw) = fixture();
        let vectors = shared(&base);
        // Odd points are "tombstones" the index no longer holds; point 2 gives a vector
        // of the wrong length, which must not be kept either.
        let flat = FlatGraph::from_hnsw(&hnsw, |p| match p {
            2 => Some(Arc::from(&[1.0f32, 2.0][..])),
            p if p % 2 == 1 => None,
            p => vectors.get(p).cloned(),
        });
        assert_eq!(flat.len(), N);
        for (&p, v) in flat.points.iter().zip(&flat.vectors) {
            assert_eq!(&v[..], base.row(p), "point {p}");
            assert_eq!(
                Arc::ptr_eq(v, &vectors[p]),
                p % 2 == 0 && p != 2,
                "point {p}"
            );
        }
        let exact = exact_fraction(&base, &queries, |q| flat.search(q, 10, 200));
        assert!(exact >= 0.99, "top-10 exact for {exact} of the queries");
    }

    #[test]
    fn tiny_graphs() {
        // Empty.
        let empty = Dataset {
            dim: 4,
            data: Vec::new(),
        };
        let flat = FlatGraph::from_hnsw(&graph(&empty), |_| None);
        assert_eq!(flat.len(), 0);
        assert!(flat.is_empty());
        assert!(flat.search(&[0.0; 4], 10, 16).is_empty());
        assert!(flat.isolated().is_empty());
        assert_eq!(flat.repaired(), 0);
        assert!(!flat.contains(0));

        for n in [1usize, 2, 5] {
            let data = data::synthetic(n, 4, 3).expect("valid sizes");
            let flat = FlatGraph::from_hnsw(&graph(&data), |_| None);
            assert_eq!(flat.len(), n);
            assert!(flat.isolated().is_empty(), "n {n}: {:?}", flat.isolated());
            for q in data.rows() {
                for k in [1, n, 10] {
                    let answer = flat.search(q, k, 1);
                    check_answer(&data, q, k, &answer);
                    assert_eq!(answer, brute_force(&data, q, k), "n {n}, k {k}");
                }
                assert!(flat.search(q, 0, 16).is_empty());
                // Wrong dimension or non-finite: empty, not a panic.
                assert!(flat.search(&q[..3], 1, 16).is_empty());
                assert!(flat.search(&[f32::NAN, 0.0, 0.0, 0.0], 1, 16).is_empty());
            }
        }
    }

    #[test]
    fn repair_links_an_unreachable_node_from_its_two_nearest_out_neighbours() {
        // Nodes on a line at x = node number; node 0 is the entry.
        let distance = |a: u32, b: u32| (a as f32 - b as f32).abs();
        let mut adjacency: Vec<Vec<u32>> = vec![
            vec![1, 2],    // 0: the entry; in-degree 0, but left alone
            vec![2],       // 1
            vec![1],       // 2
            vec![2, 1, 0], // 3: in-degree 0; nearest out-neighbours 2 then 1 (not 0)
            vec![],        // 4: no out-link: isolated
            vec![2],       // 5: in-degree 0; one out-neighbour, 2
            vec![],        // 6: no out-link (though 7 links to it): isolated
            vec![6, 9],    // 7: in-degree 0; 9 does not exist (ignored)
        ];
        let out = repair(&mut adjacency, Some(0), distance);
        assert_eq!(out.isolated, vec![4, 6]);
        assert_eq!(adjacency[0], vec![1, 2]);
        assert_eq!(adjacency[1], vec![2, 3]);
        assert_eq!(adjacency[2], vec![1, 3, 5]);
        assert_eq!(adjacency[6], vec![7]);
        assert_eq!(out.added, 4);
        // The entry gained no in-link: only node 3 links to it, as before.
        assert_eq!(adjacency.iter().filter(|list| list.contains(&0)).count(), 1);

        // The entry is not isolated even with no out-link; in-degrees are counted before
        // any link is added.
        let mut adjacency = vec![vec![1], vec![], vec![1]];
        let out = repair(&mut adjacency, Some(1), distance);
        assert!(out.isolated.is_empty());
        assert_eq!(adjacency, vec![vec![1], vec![0, 2], vec![1]]);
        assert_eq!(out.added, 2);
        // Without an entry, the same node is isolated.
        let mut adjacency = vec![vec![1], vec![], vec![1]];
        assert_eq!(repair(&mut adjacency, None, distance).isolated, vec![1]);
    }

    #[test]
    fn repair_makes_hnsw_rs_unreachable_points_reachable() {
        // A sparse graph (m 4, ef_construction 32) over 3,000 points of dimension 8:
        // hnsw_rs leaves some points with no layer-0 in-link (21 with this seed).
        let n = 3_000;
        let base = data::synthetic(n, 8, 1).expect("valid sizes");
        let hnsw = Hnsw::new(4, n, 16, 32, DistL2);
        for (i, row) in base.rows().enumerate() {
            hnsw.insert_slice((row, i));
        }
        let raw = FlatGraph::build(&hnsw, |_| None, false);
        let flat = FlatGraph::from_hnsw(&hnsw, |_| None);
        assert!(flat.repaired() > 0);
        assert!(flat.isolated().is_empty());
        // With ef >= n nothing is ever pruned: a search returns every point reachable from
        // where it starts in layer 0.
        let unreachable = |g: &FlatGraph, q: &[f32]| n - g.search(q, n, n).len();
        for q in base.rows().take(5) {
            assert!(
                unreachable(&raw, q) > 0,
                "the unrepaired graph reaches every point"
            );
            assert_eq!(unreachable(&flat, q), 0);
        }
    }

    #[test]
    fn copying_while_inserting_never_panics() {
        let base = data::synthetic(3_000, 16, 5).expect("valid sizes");
        let hnsw = Hnsw::new(16, 3_000, 16, 64, DistL2);
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, row) in base.rows().enumerate() {
                    hnsw.insert_slice((row, i));
                }
            });
            let mut last = 0;
            while last < base.len() {
                let flat = FlatGraph::from_hnsw(&hnsw, |_| None);
                assert!(flat.len() >= last);
                last = flat.len();
                if let Some(q) = base.get(last.saturating_sub(1)) {
                    let answer = flat.search(q, 10, 32);
                    assert!(answer.len() <= 10.min(flat.len()));
                    assert!(answer.iter().all(|h| flat.contains(h.0)));
                }
            }
        });
    }

    #[test]
    fn flat_graph_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FlatGraph>();
    }
}
