//! Loom models of the recorder's shard and reset protocol: recording concurrently with
//! `peek` and `reset` loses no sample, counts none twice, and puts each in the step in which
//! it was scheduled (or counts it as a straggler), in every interleaving.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p collector
//! --test loom_recorder` (`cargo xtask test` does, in `target/loom`).

#![cfg(loom)]

use collector::recorder::{ActionId, Epoch, Recorder, Sample, StepData};
use loom::sync::Arc;
use loom::thread;

fn sample(latency_us: u64) -> Sample<'static> {
    Sample {
        action: ActionId(0),
        latency_us,
        service_us: latency_us,
        error: None,
    }
}

/// Records one sample per `(shard hint, latency)`, reading the epoch when it "schedules"
/// each; returns the epoch each sample carried.
fn recorder_thread(
    rec: &Arc<Recorder>,
    ops: [(usize, u64); 2],
) -> thread::JoinHandle<Vec<(Epoch, u64)>> {
    let rec = Arc::clone(rec);
    thread::spawn(move || {
        ops.iter()
            .map(|&(hint, latency_us)| {
                let epoch = rec.epoch();
                rec.record(hint, epoch, &sample(latency_us));
                (epoch, latency_us)
            })
            .collect()
    })
}

fn count(step: &StepData, latency_us: u64) -> u64 {
    step.actions["a"].latency.count_at(latency_us)
}

#[test]
fn record_with_concurrent_peek_and_reset_counts_every_sample_once() {
    loom::model(|| {
        let rec = Arc::new(Recorder::new(&["a"], 2).expect("valid recorder"));
        // Distinct latencies (exact below 2048 µs at 3 digits) identify the samples; each
        // thread writes to both shards, in opposite orders.
        let t1 = recorder_thread(&rec, [(0, 10), (1, 20)]);
        let t2 = recorder_thread(&rec, [(1, 30), (0, 40)]);

        let peek = rec.peek();
        let step0 = rec.reset();
        let mut samples = t1.join().expect("recording thread");
        samples.extend(t2.join().expect("recording thread"));
        let step1 = rec.reset();

        assert_eq!(peek.epoch, Epoch(0));
        assert_eq!(step0.epoch, Epoch(0));
        assert_eq!(step1.epoch, Epoch(1));
        assert_eq!(rec.epoch(), Epoch(2));
        assert_eq!(step0.stragglers, 0, "no step before 0");
        assert_eq!(rec.unknown_actions(), 0);

        let mut late_epoch0 = 0;
        for &(epoch, v) in &samples {
            let (in0, in1, in_peek) = (count(&step0, v), count(&step1, v), count(&peek, v));
            assert!(in0 + in1 <= 1, "sample {v} counted twice");
            assert!(
                in_peek <= in0,
                "sample {v} in the peek of step 0 but not in step 0"
            );
            match epoch {
                Epoch(0) => {
                    assert_eq!(in1, 0, "sample {v} of step 0 leaked into step 1");
                    if in0 == 0 {
                        late_epoch0 += 1;
                    }
                }
                Epoch(1) => {
                    assert_eq!(in0, 0, "sample {v} of step 1 in step 0");
                    assert_eq!(in1, 1, "sample {v} of step 1 lost");
                }
                other => panic!("sample {v} carries epoch {other:?}, never current"),
            }
        }
        // Samples of step 0 that missed it are exactly the stragglers of step 1.
        assert_eq!(step1.stragglers, late_epoch0);
        for step in [&peek, &step0, &step1] {
            let a = &step.actions["a"];
            assert_eq!(a.ok, a.latency.len());
            assert_eq!(a.service.len(), a.latency.len());
        }
        let total = step0.total().completed() + step1.total().completed() + step1.stragglers;
        assert_eq!(total, 4, "every sample counted exactly once");
    });
}

#[test]
fn counters_with_concurrent_reset_are_exact() {
    loom::model(|| {
        let rec = Arc::new(Recorder::new(&["a"], 2).expect("valid recorder"));
        let worker = {
            let rec = Arc::clone(&rec);
            thread::spawn(move || {
                let e1 = rec.epoch();
                rec.record_late(0, e1, ActionId(0));
                let e2 = rec.epoch();
                rec.record_dropped(1, e2, ActionId(0));
                let e3 = rec.epoch();
                rec.record(
                    0,
                    e3,
                    &Sample {
                        action: ActionId(0),
                        latency_us: 5,
                        service_us: 5,
                        error: Some("timeout"),
                    },
                );
                [e1, e2, e3]
            })
        };
        let step0 = rec.reset();
        let epochs = worker.join().expect("recording thread");
        let step1 = rec.reset();

        let (a0, a1) = (&step0.actions["a"], &step1.actions["a"]);
        // Epochs are read in program order, so they never go backwards.
        assert!(epochs.windows(2).all(|w| w[0] <= w[1]));
        let in_step = |e: Epoch, step0: u64, step1: u64| match e {
            Epoch(0) => step1 == 0,
            Epoch(1) => step0 == 0 && step1 == 1,
            _ => false,
        };
        assert!(in_step(epochs[0], a0.late, a1.late));
        assert!(in_step(epochs[1], a0.dropped, a1.dropped));
        assert!(in_step(epochs[2], a0.timeouts(), a1.timeouts()));
        let events = a0.late + a0.dropped + a0.timeouts() + a1.late + a1.dropped + a1.timeouts();
        assert_eq!(
            events + step1.stragglers,
            3,
            "every event counted exactly once"
        );
        assert_eq!(a0.completed(), a0.latency.len());
        assert_eq!(a1.completed(), a1.latency.len());
    });
}
