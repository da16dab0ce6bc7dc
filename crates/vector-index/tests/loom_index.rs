//! Loom models of the index's own bookkeeping: the id map, tombstones, the rebuild's replay
//! log and swap, and the compact copy with its delta. The graph and its copy are exact
//! stand-ins under `--cfg loom` (see `src/graph.rs`), so every answer short of a live id,
//! or holding a removed one, is the bookkeeping's fault, in some interleaving loom found.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p
//! vector-index --test loom_index` (`cargo xtask test` does, in `target/loom`).

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use vector_index::{Id, Index, IndexParams, Metric};

/// Graph path from the first point on: no exact search below a size threshold.
fn index() -> Index {
    let mut params = IndexParams::new(2, Metric::L2);
    params.exact_below = 0;
    Index::new(params).expect("valid parameters")
}

fn v(x: f32) -> Vec<f32> {
    vec![x, 1.0]
}

/// Every live id is the one answer (k = 1: the graph path while 2 or more are live) to its
/// own vector, at distance 0; no dead id is live.
fn check(index: &Index, live: &[(Id, f32)], dead: &[Id]) {
    assert_eq!(index.len(), live.len(), "{:?}", index.stats());
    for &(id, x) in live {
        assert!(index.contains(id));
        let hits = index.search(&v(x), 1, None, &[]).expect("valid search");
        assert_eq!(hits.len(), 1, "{hits:?} {:?}", index.stats());
        assert_eq!(hits[0].id, id, "{hits:?} {:?}", index.stats());
        assert_eq!(hits[0].distance, 0.0);
    }
    assert!(dead.iter().all(|id| !index.contains(*id)));
}

#[test]
fn adds_during_a_rebuild_are_replayed_onto_the_new_graph() {
    loom::model(|| {
        let index = Arc::new(index());
        index.add(1, &v(0.0)).expect("valid add");
        index.remove(1);
        index.add(2, &v(10.0)).expect("valid add");
        let rebuilder = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.rebuild())
        };
        index.add(3, &v(20.0)).expect("valid add");
        rebuilder.join().expect("rebuild thread");
        check(&index, &[(2, 10.0), (3, 20.0)], &[1]);
        let stats = index.stats();
        assert_eq!(stats.rebuilds, 1);
    });
}

#[test]
fn adds_during_a_copy_stay_in_its_delta() {
    loom::model(|| {
        let index = Arc::new(index());
        index.add(1, &v(0.0)).expect("valid add");
        let copier = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.freeze())
        };
        index.add(2, &v(10.0)).expect("valid add");
        copier.join().expect("copy thread");
        check(&index, &[(1, 0.0), (2, 10.0)], &[]);
        assert!(index.stats().copies >= 1);
    });
}

#[test]
fn re_adding_and_removing_one_id_across_a_rebuild_and_a_copy() {
    loom::model(|| {
        let index = Arc::new(index());
        index.add(1, &v(0.0)).expect("valid add");
        index.add(2, &v(10.0)).expect("valid add");
        index.add(3, &v(20.0)).expect("valid add");
        let writer = {
            let index = Arc::clone(&index);
            thread::spawn(move || {
                index.add(1, &v(5.0)).expect("valid add");
                index.remove(2);
            })
        };
        let maintainer = {
            let index = Arc::clone(&index);
            thread::spawn(move || {
                index.rebuild();
                index.freeze();
            })
        };
        // A search racing both (the graph path: 2 or 3 live, k = 1) answers one live id,
        // at its current vector's distance: 1 at 0.0 or 5.0, 2 at 10.0, 3 at 20.0.
        let hits = index.search(&v(0.0), 1, None, &[]).expect("valid search");
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!(
            matches!((hits[0].id, hits[0].distance), (1, 0.0) | (1, 5.0)),
            "{hits:?} {:?}",
            index.stats()
        );
        writer.join().expect("writer thread");
        maintainer.join().expect("maintenance thread");
        check(&index, &[(1, 5.0), (3, 20.0)], &[2]);
        let stats = index.stats();
        assert_eq!(stats.live, 2);
        assert_eq!((stats.rebuilds, stats.fallbacks), (1, 0), "{stats:?}");
    });
}

#[test]
fn an_id_that_is_visible_is_findable_while_its_add_is_in_flight() {
    loom::model(|| {
        let index = Arc::new(index());
        index.add(1, &v(0.0)).expect("valid add");
        index.add(2, &v(10.0)).expect("valid add");
        let writer = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.add(3, &v(20.0)).expect("valid add"))
        };
        // Once `contains` sees the add, a search for its vector must find it, even while its
        // graph insert has not run yet.
        if index.contains(3) {
            let hits = index.search(&v(20.0), 1, None, &[]).expect("valid search");
            assert_eq!(hits.len(), 1);
            assert_eq!((hits[0].id, hits[0].distance), (3, 0.0), "{hits:?}");
        }
        writer.join().expect("writer thread");
        check(&index, &[(1, 0.0), (2, 10.0), (3, 20.0)], &[]);
    });
}
