//! `vector-index`: an HNSW vector index over `hnsw_rs` that never panics, never aborts and
//! never exits, whatever it is fed and however many threads feed it; with recall measured
//! against exact search.
//!
//! # Using it
//!
//! ```
//! use vector_index::{Index, IndexParams, Metric};
//!
//! let index = Index::new(IndexParams::new(3, Metric::L2))?;
//! index.add(1, &[0.0, 0.0, 1.0])?;
//! index.add(2, &[0.0, 1.0, 0.0])?;
//! let hits = index.search(&[0.0, 0.1, 0.9], 1, None, &[])?;
//! assert_eq!(hits[0].id, 1);
//! assert!(index.add(3, &[1.0, 2.0]).is_err()); // wrong dimension: an error, not a panic
//! # Ok::<(), vector_index::VectorError>(())
//! ```
//!
//! # Design
//!
//! [`Index`] wraps one `hnsw_rs` graph at a time behind a map of live ids (see
//! [`index`] for the state and its lock). Every method takes `&self`; adds,
//! removes and searches run concurrently.
//!
//! **`hnsw_rs` builds, a compact copy searches.** `hnsw_rs` builds the graph (inserts, link
//! selection, pruning), but its search pays for an `Arc` and a `parking_lot` lock per visited
//! node and allocates per accepted neighbour. So searches run on a read-only copy of the same
//! graph in flat arrays ([`flat::FlatGraph`]): 2.3–2.9× the QPS of `hnsw_rs`'s own search on
//! the same graph at the same recall (30,000 × 768). The copy shares the index's vectors (no
//! second copy), is made in the background once enough points were added since the last one
//! (and at the end of a large `add_batch`), and a search of it also checks exactly the few
//! points added since (its *delta*). While the delta is large (during a bulk load of single
//! adds, say) searches use `hnsw_rs`'s graph itself.
//!
//! **Tombstones and rebuilds.** `hnsw_rs` cannot delete. A removed id leaves its graph point
//! behind as a *tombstone*, filtered out of every answer. Re-adding an id gives the new vector
//! a fresh internal point (never a reused one: the graph would keep both under one data id)
//! and tombstones the old. When tombstones pass `rebuild_ratio × live` (and `exact_below`), a
//! background thread builds a fresh graph from a snapshot of the live vectors, off-lock:
//! searches go on against the old graph meanwhile. Adds made during the build are logged and
//! replayed onto the new graph (mostly off-lock, the last few under a short write lock), then
//! the new graph is swapped in. One rebuild runs at a time; [`Index::rebuild`] forces one.
//!
//! **Exact answers where approximation would show.** Below `exact_below` live points a search
//! is brute force: it is cheap there, and it makes the degenerate indices (empty, one point,
//! everything removed then one added, one id re-added by many threads at once) answer
//! exactly, which is where the seed's HNSW library crashed. Above it, the graph is asked for
//! `k` plus the live excluded ids plus headroom for tombstones; a filtered answer that comes
//! up short is retried once wider and then answered by brute force, so every answer holds
//! exactly `min(k, live ids not excluded)` hits (fallbacks are counted in [`IndexStats`]).
//! `hnsw_rs`'s `search_filter` is not used: it is several times slower than searching wider.
//!
//! **Every vector found by itself after its add.** `hnsw_rs` prunes a neighbour's link list
//! by plain distance when a new point links back, so a new point far from its neighbours can
//! lose every incoming link and become unreachable (seen in `tests/concurrent.rs`). Each insert
//! is followed by a cheap search for its own vector; a point it does not find is kept as an
//! *orphan* that every graph search checks exactly (counted in [`IndexStats::orphans`]; a
//! rebuild re-checks all). The copy repairs what it can: a point with no incoming link is
//! linked from its nearest out-neighbours, and an orphan that a search of the copy still
//! misses is linked in from the points where that search ends; what remains is checked
//! exactly beside the copy. And a graph's first 1,024 inserts run one at a time: concurrent
//! first inserts into an empty `hnsw_rs` graph can leave one of them with no link at all.
//!
//! **What a concurrent search sees.** Each add and remove is seen either done or not yet
//! done. An id being re-added is found at its old or its new vector, never neither (a graph
//! hit on a replaced point is measured against the id's current vector), and an id that
//! `contains` reports is found by a search for its vector even before its graph insert has
//! run (points in flight are checked exactly). The loom models in `tests/loom_index.rs`
//! check this, and the replay and the copy's delta, in every interleaving of small cases.
//!
//! **SIMD.** `hnsw_rs` is built with its `simdeez_f` feature (runtime-detected AVX2 or
//! AVX-512, scalar otherwise; the copy's search uses the same distance code), measured with `benches/index.rs` on this machine's 2 shared cores (dimension
//! 96): search 19–29 % faster, `add` 25 %, exact search 65 %. Its other feature, `stdsimd`,
//! needs a nightly compiler.
//!
//! # The `hnsw_rs` 0.3.5 hazards, and the fence around each
//!
//! | hazard in `hnsw_rs` | fence |
//! | --- | --- |
//! | NaN in a vector panics in `DistL2` (and in its heap ordering) | every vector and query is checked for NaN and ±inf first ([`VectorError::NonFinite`]) |
//! | `DistDot` panics on rounding for normalised vectors | cosine never uses it: vectors are normalised (in `f64`) and the graph uses `DistL2`; `1 − cos = ‖a − b‖²/2` |
//! | `max_layer = 0` panics inside `Drop` (an abort) | `max_layer` is not a parameter: always 16 |
//! | `max_nb_connection > 256` exits the process (and 256 wraps to 0 in a `u8` cast) | `m` must be in `2..=128` |
//! | wrong dimension is silently truncated | every vector and query is checked ([`VectorError::WrongDimension`]) |
//! | `ef_construction` of 0 or 1 leaves points unreachable | `ef_construction` must be at least `max(m, 8)` |
//! | duplicate data ids are both stored | data ids are internal points, fresh on every insert |
//! | a truncated dump file exits the process on load | its dump format is never used: [`persist`] writes and checks its own |
//! | a point number per layer is an `i32` | at most [`index::MAX_POINTS`] (2^30) graph points |
//! | a huge `ef` or `k` allocates that much up front | `ef` is capped at 10,000 and `k` at the graph's size |
//! | reverse-link pruning can leave a new point with no incoming link | a self-search after each insert; unreachable points are searched exactly |
//! | concurrent first inserts into an empty graph can leave a point with no link | a graph's first 1,024 inserts are serialised |
//! | iterating `&PointIndexation` unwraps the entry point (a panic on an empty graph) and re-takes its layer lock (a deadlock when an insert waits to write) | the copy reads one layer at a time with `get_layer_iterator` |
//! | a linked point can still be missed by a search for its own vector (1.1 % of 30,000 × 768 at ef 16–64) | the copy links it in from where that search ends; the rest are checked exactly |
//!
//! `catch_unwind` is no substitute for these checks: it cannot catch an abort or an exit.
//!
//! # Modules
//!
//! - [`index`]: the index; [`params`]: its parameters; [`error`]: the one error type.
//! - [`flat`]: the compact copy of a graph that searches run on.
//! - [`registry`]: indices by name; [`persist`]: the file format.
//! - [`data`]: synthetic and file data sets; [`recall`]: recall and the `ef` sweep.

pub mod data;
pub mod error;
pub mod flat;
mod graph;
pub mod index;
pub mod params;
pub mod persist;
pub mod recall;
pub mod registry;
mod sync;

pub use error::VectorError;
pub use index::{Hit, Id, Index, IndexStats};
pub use params::{IndexParams, Metric};
pub use registry::Registry;
