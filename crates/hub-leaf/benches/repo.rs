//! Cost of the repository model's hot paths, each on a SQLite file in a temp dir
//! (WAL, `synchronous=NORMAL`):
//!
//! - `repo/blob_hash/{1KiB,64KiB}`: [`hash_blob`] of that many bytes.
//! - `repo/blob_store_1KiB`: [`Repo::commit`] of one new 1 KiB file (hash, store the blob,
//!   the commit row and the tree entry, one IMMEDIATE transaction).
//! - `repo/hub_apply_if_tip`: the hub's side of a push, [`Repo::apply_if_tip`] of a 3-file
//!   commit (1 KiB each) prepared on the current tip: verify the commit and blob hashes,
//!   compare-and-swap, store. The leaf's `prepare` is not timed.
//! - `repo/pull_apply/{10,100}`: a leaf pull of K commits (3 files of 1 KiB each) as on the
//!   wire, without the network: the hub's [`Repo::commits_after`], the reply encoded and
//!   decoded (JSON, blobs in base64), and the leaf's [`Repo::apply`] into an empty replica
//!   (created untimed for each iteration).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hub_leaf::proto::{self, PullReply};
use hub_leaf::repo::{hash_blob, NewCommit, Repo};

/// A 3-file commit of 1 KiB files whose content depends on `n`.
fn three_files(n: u64, rng: &mut fastrand::Rng) -> NewCommit {
    let files = (0..3)
        .map(|f| {
            let content: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
            (format!("slot-{}/file-{f}.txt", n % 16), Some(content))
        })
        .collect();
    NewCommit {
        author: format!("agent-{}", n % 16),
        message: format!("task {n}"),
        created_ms: 1_700_000_000_000 + n,
        files,
    }
}

fn bench_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("repo/blob_hash");
    for (name, len) in [("1KiB", 1024usize), ("64KiB", 64 * 1024)] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| hash_blob(black_box(bytes)))
        });
    }
    g.finish();
}

fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut repo = Repo::open(&dir.path().join("store.db")).expect("open");
    let mut rng = fastrand::Rng::with_seed(1);
    let mut n = 0u64;
    c.bench_function("repo/blob_store_1KiB", |b| {
        b.iter(|| {
            n += 1;
            let content: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
            let nc = NewCommit {
                author: "bench".into(),
                message: format!("store {n}"),
                created_ms: n,
                files: vec![(format!("f/{}", n % 64), Some(content))],
            };
            repo.commit(&nc).expect("commit")
        })
    });
}

fn bench_cas(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = Repo::open(&dir.path().join("hub.db")).expect("open");
    let mut rng = fastrand::Rng::with_seed(2);
    let mut n = 0u64;
    c.bench_function("repo/hub_apply_if_tip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let tip = hub.tip().expect("tip");
                let (commit, blobs) =
                    Repo::prepare(tip.as_ref(), &three_files(n, &mut rng)).expect("prepare");
                let start = Instant::now();
                let applied = hub
                    .apply_if_tip(tip.as_ref(), &commit, &blobs)
                    .expect("apply_if_tip");
                total += start.elapsed();
                black_box(applied);
            }
            total
        })
    });
}

fn bench_pull(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = Repo::open(&dir.path().join("hub.db")).expect("open");
    let mut rng = fastrand::Rng::with_seed(3);
    for n in 1..=100 {
        hub.commit(&three_files(n, &mut rng)).expect("commit");
    }
    let mut g = c.benchmark_group("repo/pull_apply");
    let mut leaf_no = 0u64;
    for k in [10usize, 100] {
        g.throughput(Throughput::Elements(k as u64));
        g.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, &k| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    leaf_no += 1;
                    let path = dir.path().join(format!("leaf-{leaf_no}.db"));
                    let mut leaf = Repo::open_replica(&path).expect("open leaf");
                    let start = Instant::now();
                    let pull = hub.commits_after(0, k, usize::MAX).expect("pull");
                    let body = proto::encode(&PullReply::Commits {
                        tip: pull.last(),
                        pull,
                    });
                    let PullReply::Commits { pull, .. } =
                        proto::decode("pull reply", &body).expect("decode")
                    else {
                        panic!("not commits")
                    };
                    let n = leaf.apply(&pull.commits, &pull.blobs).expect("apply");
                    total += start.elapsed();
                    assert_eq!(n, k);
                    drop(leaf);
                    remove_db(&path);
                }
                total
            })
        });
    }
    g.finish();
}

/// Removes a repository file and its WAL companions (best effort: the temp dir goes anyway).
fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    targets = bench_hash, bench_store, bench_cas, bench_pull
}
criterion_main!(benches);
