//! Cost of the index's operations on a few thousand clustered vectors, generated here from
//! a fixed seed (4,000 base vectors and 200 queries of dimension 96, around 60 centres).
//!
//! - `index/search_k10/ef{16,64,256}`: one search, k = 10, no exclusions.
//! - `index/search_k10_exclude10/ef64`: one search excluding the query's 10 exact nearest, so
//!   every exclusion bites and the graph must reach past them.
//! - `index/exact_search_k10`: brute force over the 4,000 points.
//! - `index/hnsw_search_k10/ef{16,64}` and `index/flat_search_k10/ef{16,64}`, side by side:
//!   one raw `hnsw_rs` search, and one search of a [`FlatGraph`] copied from that same graph
//!   (an `Hnsw` built here directly over the base vectors, not the index's own graph).
//! - `index/add`: one `add` of a fresh id into the index (run last: the index grows by the
//!   number of iterations, a few thousand).
//!
//! Before measuring, it prints recall@10 of each searched `ef` against exact search (for the
//! index, raw `hnsw_rs` and the flat copy), so a speed change can be read next to what it
//! buys.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hnsw_rs::prelude::{DistL2, Hnsw};
use vector_index::flat::FlatGraph;
use vector_index::params::MAX_LAYER;
use vector_index::{Id, Index, IndexParams, Metric};

const DIM: usize = 96;
const BASE: usize = 4_000;
const QUERIES: usize = 200;
const CENTRES: usize = 60;

/// Points around `CENTRES` random centres (Gaussian-ish noise from a sum of uniforms).
fn clustered(rng: &mut fastrand::Rng, centres: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let c = &centres[rng.usize(..centres.len())];
            c.iter()
                .map(|x| x + (rng.f32() + rng.f32() + rng.f32() - 1.5) * 0.5)
                .collect()
        })
        .collect()
}

struct Fixture {
    index: Index,
    queries: Vec<Vec<f32>>,
    /// Each query's 10 exact nearest ids.
    truth: Vec<Vec<Id>>,
    /// Vectors for `add`, cycled.
    fresh: Vec<Vec<f32>>,
    /// The base vectors; vector `i` has id `i`.
    base: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let mut rng = fastrand::Rng::with_seed(20_251_122);
    let centres: Vec<Vec<f32>> = (0..CENTRES)
        .map(|_| (0..DIM).map(|_| rng.f32() * 2.0 - 1.0).collect())
        .collect();
    let base = clustered(&mut rng, &centres, BASE);
    let queries = clustered(&mut rng, &centres, QUERIES);
    let fresh = clustered(&mut rng, &centres, 1_000);
    let index = Index::new(IndexParams::new(DIM, Metric::L2)).expect("valid parameters");
    let items: Vec<(Id, Vec<f32>)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as Id, v.clone()))
        .collect();
    index.add_batch(&items).expect("valid vectors");
    let truth = queries
        .iter()
        .map(|q| {
            index
                .exact_search(q, 10, &[])
                .expect("valid query")
                .iter()
                .map(|h| h.id)
                .collect()
        })
        .collect();
    Fixture {
        index,
        queries,
        truth,
        fresh,
        base,
    }
}

/// A raw `hnsw_rs` graph over the base vectors (vector `i` under data id `i`), built with
/// the index's parameters and its way (the first 1,024 inserts one at a time, the rest
/// rayon-parallel), and a [`FlatGraph`] copied from it, sharing the vectors.
fn raw_graphs(f: &Fixture) -> (Hnsw<'static, f32, DistL2>, FlatGraph) {
    let params = IndexParams::new(DIM, Metric::L2);
    let hnsw = Hnsw::new(params.m, BASE, MAX_LAYER, params.ef_construction, DistL2);
    let slices: Vec<(&[f32], usize)> = f
        .base
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_slice(), i))
        .collect();
    let (first, rest) = slices.split_at(slices.len().min(1024));
    for &item in first {
        hnsw.insert_slice(item);
    }
    hnsw.parallel_insert_slice(&rest.to_vec());
    let vectors: Vec<Arc<[f32]>> = f.base.iter().map(|v| Arc::from(v.as_slice())).collect();
    let flat = FlatGraph::from_hnsw(&hnsw, |point| vectors.get(point).cloned());
    (hnsw, flat)
}

/// Recall@10 of `search` (point numbers = ids) against the fixture's truth.
fn raw_recall(f: &Fixture, search: impl Fn(&[f32]) -> Vec<usize>) -> f64 {
    let mut found = 0;
    for (q, truth) in f.queries.iter().zip(&f.truth) {
        found += search(q)
            .iter()
            .filter(|&&p| truth.contains(&(p as Id)))
            .count();
    }
    found as f64 / (10 * f.queries.len()) as f64
}

fn recall(f: &Fixture, ef: usize, exclude_truth: bool) -> f64 {
    let mut found = 0;
    for (q, truth) in f.queries.iter().zip(&f.truth) {
        let (exclude, want): (&[Id], HashSet<Id>) = if exclude_truth {
            let next = f
                .index
                .exact_search(q, 10, truth)
                .expect("valid query")
                .iter()
                .map(|h| h.id)
                .collect();
            (truth, next)
        } else {
            (&[], truth.iter().copied().collect())
        };
        let hits = f
            .index
            .search(q, 10, Some(ef), exclude)
            .expect("valid query");
        found += hits.iter().filter(|h| want.contains(&h.id)).count();
    }
    found as f64 / (10 * f.queries.len()) as f64
}

fn bench_index(c: &mut Criterion) {
    let f = fixture();
    for ef in [16, 64, 256] {
        eprintln!("recall@10 at ef {ef}: {:.3}", recall(&f, ef, false));
    }
    eprintln!(
        "recall@10 at ef 64, 10 nearest excluded: {:.3}",
        recall(&f, 64, true)
    );
    let (hnsw, flat) = raw_graphs(&f);
    for ef in [16, 64] {
        let raw = raw_recall(&f, |q| {
            hnsw.search(q, 10, ef).iter().map(|n| n.d_id).collect()
        });
        let copy = raw_recall(&f, |q| flat.search(q, 10, ef).iter().map(|h| h.0).collect());
        eprintln!("recall@10 at ef {ef}: raw hnsw_rs {raw:.3}, flat copy {copy:.3}");
    }
    eprintln!(
        "flat copy: {} points, {} links repaired, {} isolated, {} adjacency bytes",
        flat.len(),
        flat.repaired(),
        flat.isolated().len(),
        flat.adjacency_bytes()
    );

    let mut g = c.benchmark_group("index");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);

    for ef in [16, 64, 256] {
        let mut i = 0;
        g.bench_with_input(
            BenchmarkId::new("search_k10", format!("ef{ef}")),
            &ef,
            |b, &ef| {
                b.iter(|| {
                    i = (i + 1) % f.queries.len();
                    black_box(
                        f.index
                            .search(&f.queries[i], 10, Some(ef), &[])
                            .expect("valid query"),
                    )
                })
            },
        );
    }

    let mut i = 0;
    g.bench_function("search_k10_exclude10/ef64", |b| {
        b.iter(|| {
            i = (i + 1) % f.queries.len();
            black_box(
                f.index
                    .search(&f.queries[i], 10, Some(64), &f.truth[i])
                    .expect("valid query"),
            )
        })
    });

    let mut i = 0;
    g.bench_function("exact_search_k10", |b| {
        b.iter(|| {
            i = (i + 1) % f.queries.len();
            black_box(
                f.index
                    .exact_search(&f.queries[i], 10, &[])
                    .expect("valid query"),
            )
        })
    });
    for ef in [16, 64] {
        let mut i = 0;
        g.bench_with_input(
            BenchmarkId::new("hnsw_search_k10", format!("ef{ef}")),
            &ef,
            |b, &ef| {
                b.iter(|| {
                    i = (i + 1) % f.queries.len();
                    black_box(hnsw.search(&f.queries[i], 10, ef))
                })
            },
        );
        let mut i = 0;
        g.bench_with_input(
            BenchmarkId::new("flat_search_k10", format!("ef{ef}")),
            &ef,
            |b, &ef| {
                b.iter(|| {
                    i = (i + 1) % f.queries.len();
                    black_box(flat.search(&f.queries[i], 10, ef))
                })
            },
        );
    }

    // Last: it grows the index the other benches search.
    let mut next_id = BASE as Id;
    g.bench_function("add", |b| {
        b.iter(|| {
            let v = &f.fresh[next_id as usize % f.fresh.len()];
            f.index.add(next_id, black_box(v)).expect("valid vector");
            next_id += 1;
        })
    });

    g.finish();
    let stats = f.index.stats();
    eprintln!("index after the benches: {stats:?}");
}

criterion_group!(benches, bench_index);
criterion_main!(benches);
