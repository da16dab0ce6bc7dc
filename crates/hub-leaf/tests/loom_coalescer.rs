//! Loom models of the leaf's pull coalescer: two threads deliver broadcasts, one completes
//! pulls. Every interleaving must keep at most one pull in flight, count every broadcast
//! exactly once, and leave no announced tip unpulled once pulls finish.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p hub-leaf --test loom_coalescer --release`
//! (`cargo xtask test` does).
#![cfg(loom)]

use hub_leaf::tip::{Decision, PullCoalescer};
use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

/// What the threads share: the coalescer, the hub's trunk tip, and the bookkeeping of the
/// pull worker.
struct World {
    coalescer: PullCoalescer,
    /// The hub's trunk tip: what a pull started now would bring.
    hub: AtomicU64,
    /// Pulls requested by broadcast threads (`Decision::Pull`).
    requested: AtomicU64,
    /// Pulls currently in flight, as the threads see them.
    in_flight: AtomicU64,
    /// Broadcast threads finished.
    done: AtomicU64,
}

impl World {
    fn new() -> World {
        World {
            coalescer: PullCoalescer::new(0),
            hub: AtomicU64::new(0),
            requested: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// The hub moved to `seq` and broadcast it; this leaf receives the broadcast.
    fn broadcast(&self, seq: u64) {
        self.hub.fetch_max(seq, SeqCst);
        if self.coalescer.on_broadcast(seq) == Decision::Pull {
            let before = self.in_flight.fetch_add(1, SeqCst);
            assert_eq!(before, 0, "a second pull started while one was in flight");
            self.requested.fetch_add(1, SeqCst);
        }
    }

    /// The leaf's own commit moved the trunk to `seq` (its push succeeded).
    fn local_commit(&self, seq: u64) {
        self.hub.fetch_max(seq, SeqCst);
        self.coalescer.on_local(seq);
    }

    /// The pull worker: serves every requested pull, and each follow-up pull the
    /// coalescer asks for, until the broadcast threads are done and nothing is pending.
    fn pull_worker(&self, broadcasters: u64) {
        let mut served = 0;
        loop {
            if self.requested.load(SeqCst) > served {
                served += 1;
                loop {
                    // A pull brings the leaf to the hub's tip as of now.
                    let local = self.hub.load(SeqCst);
                    self.in_flight.fetch_sub(1, SeqCst);
                    if !self.coalescer.on_pull_done(local) {
                        break;
                    }
                    let before = self.in_flight.fetch_add(1, SeqCst);
                    assert_eq!(before, 0, "a follow-up pull overlapped another pull");
                }
                continue;
            }
            if self.done.load(SeqCst) == broadcasters && self.requested.load(SeqCst) == served {
                return;
            }
            thread::yield_now();
        }
    }

    fn check_end(&self, broadcasts: u64) {
        let c = self.coalescer.counters();
        assert_eq!(c.broadcasts, broadcasts);
        assert_eq!(
            c.pulled + c.coalesced + c.skipped,
            c.broadcasts,
            "every broadcast counted exactly once: {c:?}"
        );
        assert_eq!(c.broadcasts_pulled(), c.pulled + c.coalesced);
        assert!(c.pulls_started >= c.pulled);
        assert!(!self.coalescer.in_flight(), "a pull left in flight");
        assert_eq!(self.in_flight.load(SeqCst), 0);
        let hub = self.hub.load(SeqCst);
        assert!(
            self.coalescer.local() >= self.coalescer.announced(),
            "an announced tip was left unpulled: local {} < announced {}",
            self.coalescer.local(),
            self.coalescer.announced()
        );
        assert_eq!(
            self.coalescer.local(),
            hub,
            "the leaf ends at the hub's tip"
        );
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    // `LOOM_MAX_PREEMPTIONS` (set by `cargo xtask test`) wins; 3 otherwise.
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[test]
fn loom_two_broadcasters_one_puller() {
    model(|| {
        let world = Arc::new(World::new());
        let a = {
            let w = world.clone();
            thread::spawn(move || {
                w.broadcast(1);
                w.broadcast(3);
                w.done.fetch_add(1, SeqCst);
            })
        };
        let b = {
            let w = world.clone();
            thread::spawn(move || {
                w.broadcast(2);
                w.done.fetch_add(1, SeqCst);
            })
        };
        world.pull_worker(2);
        a.join().unwrap();
        b.join().unwrap();
        world.check_end(3);
    });
}

#[test]
fn loom_local_commit_and_its_broadcast_race_a_pull() {
    model(|| {
        let world = Arc::new(World::new());
        // This leaf commits seq 1 itself, then receives the broadcast of its own commit
        // (a skip unless a pull raced it) and then another leaf's seq 2.
        let a = {
            let w = world.clone();
            thread::spawn(move || {
                w.local_commit(1);
                w.broadcast(1);
                w.done.fetch_add(1, SeqCst);
            })
        };
        let b = {
            let w = world.clone();
            thread::spawn(move || {
                w.broadcast(2);
                w.broadcast(2); // a duplicate delivery
                w.done.fetch_add(1, SeqCst);
            })
        };
        world.pull_worker(2);
        a.join().unwrap();
        b.join().unwrap();
        world.check_end(3);
    });
}
