//! Cost of the index's operations on a few thousand clustered vectors, generated here from
//! a fixed seed (4,000 base vectors and 200 queries of dimension 96, around 60 centres).
//!
//! - `index/search_k10/ef{16,64,256}`: one search, k = 10, no exclusions.
//! - `index/search_k10_exclude10/ef64`: one search excluding the query's 10 exact nearest, so
//!   every exclusion bites and the graph must reach past them.
//! - `index/exact_search_k10`: brute force over the 4,000 points.
//! - `index/add`: one `add` of a fresh id into the index (run last: the index grows by the
//!   number of iterations, a few thousand).
//!
//! Before measuring, it prints recall@10 of each searched `ef` against exact search, so a
//! speed change can be read next to what it buys.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
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
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as Id, v))
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
    }
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
