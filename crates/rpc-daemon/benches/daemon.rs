//! The daemon against direct mode, side by side in one run.
//!
//! - `daemon_latency/{create,update,show,list}/{daemon,direct}`: one operation at a time;
//!   `ping/daemon` is the floor of a daemon call (a round trip that touches no SQLite).
//!   `daemon` is a [`Client`] talking to an in-process [`Server`] (its own runtime, its own
//!   database file) over the Unix socket; `direct` is what a separate agent without a daemon
//!   does: its own [`Store`] on the file and `apply` in-process. `create/direct_open` also
//!   opens the store for every create, as a one-command-per-process CLI agent would.
//!   The daemon client has the default settings, so it busy-polls for a quick reply
//!   ([`ClientConfig::busy_poll`]: waking a sleeping thread is a large part of a round trip
//!   on a VM); `{ping,create}/daemon_no_poll` is the same client with polling off.
//! - `daemon_batch100/{daemon,direct}`: one `batch` of 100 creates (one transaction).
//! - `daemon_aggregate_create/{daemon,direct}/N`, N = 1, 2, 4, 8, 16 agents creating at
//!   once; throughput in creates per second (criterion's `Throughput::Elements`). `direct`:
//!   every agent a thread with its own `Store` on the same file (SQLite's write lock
//!   serialises them); `daemon`: every agent its own `Client` connection, so the daemon
//!   commits their creates together (group commit). The agents run on a multi-thread
//!   runtime, where clients never busy-poll.
//!
//! Targets from the issue: create p50 through the daemon ≤ 100 µs; 8 agents ≥ 20,000
//! creates/s aggregate. The seed implementation took 2.41 ms per create through its daemon
//! and 4.65 ms direct. Measurement times are short (the whole bench runs in about a
//! minute and a half): compare runs with `cargo xtask bench`, not single numbers.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rpc_daemon::client::{Client, ClientConfig, Mode};
use rpc_daemon::model::{CreateArgs, ListArgs, Op, Status, UpdateArgs};
use rpc_daemon::server::{Server, ServerConfig, ShutdownHandle};
use rpc_daemon::store::{Store, StoreConfig};
use tokio::runtime::Runtime;

/// Issues created in every fresh database, for update and show to work on.
const SEEDED: usize = 1_000;
/// `limit` of the list benchmark.
const LIST_LIMIT: u32 = 20;
/// Agent counts of the aggregate group.
const AGENTS: [usize; 5] = [1, 2, 4, 8, 16];

/// A daemon on its own runtime in this process, shut down (and awaited) on drop.
struct InProcessDaemon {
    rt: Option<Runtime>,
    handle: ShutdownHandle,
    run: Option<tokio::task::JoinHandle<()>>,
    db: PathBuf,
}

impl InProcessDaemon {
    fn start(db: &Path) -> InProcessDaemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("daemon")
            .build()
            .expect("daemon runtime");
        let server = rt
            .block_on(Server::bind(ServerConfig::new(db.to_path_buf())))
            .expect("binding the daemon");
        let handle = server.shutdown_handle();
        let db = server.db_path().to_path_buf();
        let run = rt.spawn(async move {
            if let Err(e) = server.run().await {
                eprintln!("daemon: {e}");
            }
        });
        InProcessDaemon {
            rt: Some(rt),
            handle,
            run: Some(run),
            db,
        }
    }

    /// A daemon-only client with the default settings, connected on `rt` (the client's own
    /// runtime).
    fn client(&self, rt: &Runtime) -> Client {
        self.client_with(rt, ClientConfig::new(self.db.clone()).busy_poll)
    }

    /// The same with polling off.
    fn client_no_poll(&self, rt: &Runtime) -> Client {
        self.client_with(rt, Duration::ZERO)
    }

    /// A daemon-only client that busy-polls for quick replies for up to `busy_poll`.
    fn client_with(&self, rt: &Runtime, busy_poll: Duration) -> Client {
        let cfg = ClientConfig {
            mode: Mode::DaemonOnly,
            timeout: Duration::from_secs(30),
            busy_poll,
            ..ClientConfig::new(self.db.clone())
        };
        rt.block_on(Client::connect(cfg))
            .expect("connecting to the daemon")
    }
}

impl Drop for InProcessDaemon {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let (Some(rt), Some(run)) = (self.rt.take(), self.run.take()) {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), run).await });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn client_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

fn create(title: String) -> CreateArgs {
    CreateArgs {
        title,
        ..CreateArgs::default()
    }
}

/// A fresh database at `dir/name` with [`SEEDED`] issues `hl-1` .. `hl-1000`.
fn fresh_db(dir: &Path, name: &str) -> PathBuf {
    let db = dir.join(name);
    let mut store = Store::open(&db, &StoreConfig::default()).expect("opening the store");
    let ops = (0..SEEDED)
        .map(|i| Op::Create(create(format!("seeded {i}"))))
        .collect();
    store.apply(&Op::Batch { ops }).expect("seeding");
    db
}

fn update_args(i: u64) -> UpdateArgs {
    UpdateArgs {
        id: format!("hl-{}", 1 + i % SEEDED as u64),
        // A new assignee every time, so every update writes.
        assignee: Some(Some(format!("agent-{i}"))),
        ..UpdateArgs::default()
    }
}

fn list_args() -> ListArgs {
    ListArgs {
        status: Some(Status::Open),
        limit: Some(LIST_LIMIT),
        ..ListArgs::default()
    }
}

fn batch(n: usize, tag: u64) -> Vec<Op> {
    (0..n)
        .map(|i| Op::Create(create(format!("batch {tag} {i}"))))
        .collect()
}

fn bench_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = InProcessDaemon::start(&fresh_db(dir.path(), "daemon.db"));
    let direct_db = fresh_db(dir.path(), "direct.db");
    let mut store = Store::open(&direct_db, &StoreConfig::default()).expect("direct store");
    let rt = client_rt();
    let mut client = daemon.client(&rt);
    let mut no_poll = daemon.client_no_poll(&rt);
    let mut n = 0u64;

    let mut g = c.benchmark_group("daemon_latency");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(30);

    // The floor of every daemon call: a round trip that touches no SQLite.
    g.bench_function(BenchmarkId::new("ping", "daemon"), |b| {
        b.iter(|| rt.block_on(client.ping()).expect("ping"))
    });
    g.bench_function(BenchmarkId::new("create", "daemon"), |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(client.create(create(format!("bench {n}"))))
                .expect("create")
        })
    });
    // The same with the client sleeping until its reply comes (busy_poll off).
    g.bench_function(BenchmarkId::new("ping", "daemon_no_poll"), |b| {
        b.iter(|| rt.block_on(no_poll.ping()).expect("ping"))
    });
    g.bench_function(BenchmarkId::new("create", "daemon_no_poll"), |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(no_poll.create(create(format!("bench {n}"))))
                .expect("create")
        })
    });
    g.bench_function(BenchmarkId::new("create", "direct"), |b| {
        b.iter(|| {
            n += 1;
            store
                .apply(&Op::Create(create(format!("bench {n}"))))
                .expect("create")
        })
    });
    g.bench_function(BenchmarkId::new("create", "direct_open"), |b| {
        b.iter(|| {
            n += 1;
            let mut s = Store::open(&direct_db, &StoreConfig::default()).expect("open");
            s.apply(&Op::Create(create(format!("bench {n}"))))
                .expect("create")
        })
    });
    g.bench_function(BenchmarkId::new("update", "daemon"), |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(client.update(update_args(n))).expect("update")
        })
    });
    g.bench_function(BenchmarkId::new("update", "direct"), |b| {
        b.iter(|| {
            n += 1;
            store.apply(&Op::Update(update_args(n))).expect("update")
        })
    });
    g.bench_function(BenchmarkId::new("show", "daemon"), |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(client.show(format!("hl-{}", 1 + n % SEEDED as u64)))
                .expect("show")
        })
    });
    g.bench_function(BenchmarkId::new("show", "direct"), |b| {
        b.iter(|| {
            n += 1;
            store
                .apply(&Op::Show {
                    id: format!("hl-{}", 1 + n % SEEDED as u64),
                })
                .expect("show")
        })
    });
    g.bench_function(BenchmarkId::new("list", "daemon"), |b| {
        b.iter(|| rt.block_on(client.list(list_args())).expect("list"))
    });
    g.bench_function(BenchmarkId::new("list", "direct"), |b| {
        b.iter(|| store.apply(&Op::List(list_args())).expect("list"))
    });
    g.finish();

    let mut g = c.benchmark_group("daemon_batch100");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .throughput(Throughput::Elements(100));
    g.bench_function("daemon", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(client.batch(batch(100, n))).expect("batch")
        })
    });
    g.bench_function("direct", |b| {
        b.iter(|| {
            n += 1;
            store
                .apply(&Op::Batch { ops: batch(100, n) })
                .expect("batch")
        })
    });
    g.finish();
    drop(client);
    drop(daemon);
}

/// `agents` threads, each with its own store on `db`, each creating `per_agent` issues;
/// returns the wall time of the whole round.
fn direct_round(stores: &mut [Store], per_agent: u64, round: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for (a, store) in stores.iter_mut().enumerate() {
            s.spawn(move || {
                for i in 0..per_agent {
                    let op = Op::Create(create(format!("agg {round} {a} {i}")));
                    black_box(store.apply(&op).expect("direct create"));
                }
            });
        }
    });
    start.elapsed()
}

/// The same through the daemon: every agent a task with its own connection.
fn daemon_round(rt: &Runtime, clients: &mut Vec<Client>, per_agent: u64, round: u64) -> Duration {
    let start = Instant::now();
    let taken: Vec<Client> = std::mem::take(clients);
    *clients = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (a, mut client) in taken.into_iter().enumerate() {
            set.spawn(async move {
                for i in 0..per_agent {
                    black_box(
                        client
                            .create(create(format!("agg {round} {a} {i}")))
                            .await
                            .expect("daemon create"),
                    );
                }
                client
            });
        }
        let mut back = Vec::new();
        while let Some(r) = set.join_next().await {
            back.push(r.expect("agent task"));
        }
        back
    });
    start.elapsed()
}

fn bench_aggregate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = InProcessDaemon::start(&fresh_db(dir.path(), "daemon.db"));
    let direct_db = fresh_db(dir.path(), "direct.db");
    // The agents' own runtime, as separate agents would have (two workers: the cores).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("agents runtime");
    let mut round = 0u64;

    let mut g = c.benchmark_group("daemon_aggregate_create");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat);
    for agents in AGENTS {
        // One iteration = one create by every agent.
        g.throughput(Throughput::Elements(agents as u64));
        let mut clients: Vec<Client> = (0..agents).map(|_| daemon.client(&rt)).collect();
        g.bench_function(BenchmarkId::new("daemon", agents), |b| {
            b.iter_custom(|iters| {
                round += 1;
                daemon_round(&rt, &mut clients, iters, round)
            })
        });
        drop(clients);
        let mut stores: Vec<Store> = (0..agents)
            .map(|_| Store::open(&direct_db, &StoreConfig::default()).expect("direct store"))
            .collect();
        g.bench_function(BenchmarkId::new("direct", agents), |b| {
            b.iter_custom(|iters| {
                round += 1;
                direct_round(&mut stores, iters, round)
            })
        });
    }
    g.finish();
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(daemon);
}

criterion_group!(benches, bench_latency, bench_aggregate);
criterion_main!(benches);
