//! Cost of recording one sample into a [`Recorder`]: every operation of every load generator
//! pays it, so it must stay far below the time between operations (target: ≤ 50 ns median
//! with two threads recording at once).
//!
//! - `record/one_thread`: one thread records, nothing else runs.
//! - `record/two_threads`: a second thread records into another shard at the same time, as
//!   the generator's tasks do (each with its own shard hint).
//! - `record/two_threads_same_shard`: both threads share a shard, to show what sharding saves.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use collector::recorder::{ActionId, Recorder, Sample};
use criterion::{criterion_group, criterion_main, Criterion};

/// A cheap stream of latencies spread over 1 µs .. ~1 s (xorshift), so that recording
/// touches many histogram slots as real traffic does.
struct Latencies(u64);

impl Latencies {
    #[inline]
    fn next_us(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        // Mostly 0..1 ms, one in 16 up to ~1 s.
        if x & 0xf == 0 {
            (x >> 44) + 1
        } else {
            ((x >> 4) & 0x3ff) + 1
        }
    }
}

fn sample(action: ActionId, v: u64) -> Sample<'static> {
    Sample {
        action,
        latency_us: v,
        service_us: v / 2,
        error: if v % 97 == 0 { Some("timeout") } else { None },
    }
}

/// Runs a second thread that records on `shard` until the returned guard is dropped.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Background {
    fn start(rec: &Arc<Recorder>, shard: usize, action: ActionId) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (rec, stop) = (Arc::clone(rec), Arc::clone(&stop));
            thread::spawn(move || {
                let mut lat = Latencies(0x2545_f491_4f6c_dd1d);
                let mut n = 0u64;
                let epoch = rec.epoch();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        rec.record(shard, epoch, &sample(action, lat.next_us()));
                    }
                    n += 64;
                }
                n
            })
        };
        Background {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // Shows that the second thread really recorded while the first was measured.
            match h.join() {
                Ok(n) => eprintln!("(second thread recorded {n} samples meanwhile)"),
                Err(_) => eprintln!("(second thread panicked)"),
            }
        }
    }
}

fn bench_record(c: &mut Criterion) {
    let rec = Arc::new(Recorder::new(&["get", "put"], 4).expect("valid recorder"));
    let get = rec.action("get").expect("known action");
    let put = rec.action("put").expect("known action");
    let epoch = rec.epoch();
    let mut g = c.benchmark_group("record");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    let mut lat = Latencies(0x9e37_79b9_7f4a_7c15);
    g.bench_function("one_thread", |b| {
        b.iter(|| rec.record(0, epoch, black_box(&sample(get, lat.next_us()))))
    });

    {
        let _bg = Background::start(&rec, 1, put);
        g.bench_function("two_threads", |b| {
            b.iter(|| rec.record(0, epoch, black_box(&sample(get, lat.next_us()))))
        });
    }
    {
        let _bg = Background::start(&rec, 0, put);
        g.bench_function("two_threads_same_shard", |b| {
            b.iter(|| rec.record(0, epoch, black_box(&sample(get, lat.next_us()))))
        });
    }
    g.finish();
    // Keep the recorded data alive and observable, so nothing above is optimized out.
    black_box(rec.reset());
}

criterion_group!(benches, bench_record);
criterion_main!(benches);
