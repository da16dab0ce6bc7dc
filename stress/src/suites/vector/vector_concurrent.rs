//! Suite `vector-concurrent`: writers, removers, re-adders and readers hammering a small and
//! a large index at once, with forced rebuilds, checking every answer against what is known
//! to be live.
//!
//! Three indices, all driven at the same time from OS threads under `std::thread::scope`:
//!
//! - `small-exact`: default parameters (exact search below 256 live points). Two *flippers*
//!   each own one id and alternate add (fresh vector) and remove, so the index keeps passing
//!   through length 0 and 1 (delete-then-add, everything removed then one added); three
//!   *re-adders* add one shared id from every thread at once (single adds and duplicate-id
//!   batches, from a fixed set of four vectors) and now and then remove it; one reader.
//! - `small-graph`: the same, with `exact_below = 0`, so the graph path itself sees the
//!   degenerate sizes (this is where the seed's HNSW library dereferenced nil).
//! - `large`: pre-loaded with stable clustered vectors that are never touched; writers add
//!   fresh ids, a remover removes them, a re-adder re-adds removed ids with new vectors,
//!   writers also re-add one shared id, readers search with random `k`, `ef` and
//!   exclusions. A rebuild thread forces `rebuild()` on all three every few hundred ms, on
//!   top of the rebuilds the tombstone threshold triggers.
//!
//! # What is known to be live
//!
//! Each non-shared id has one owner at a time, which records its phase in one atomic word:
//! `ADDING` before `add`, `LIVE` after it returned, `REMOVING` before `remove`, `DEAD` after
//! it returned, each stamped with a global clock tick. A reader reads the clock before it
//! searches and each id's word after: an id `DEAD` since before the search began was removed
//! (and not re-added) for the whole search and must not be returned; an id `LIVE` since then
//! was live throughout and counts toward the length the answer must have. This is exact,
//! without locks around the index, so every check below is a hard invariant:
//!
//! - no answer contains an id twice, an excluded id, an id removed for the whole search, or
//!   an id never added; answers are sorted by distance;
//! - an answer holds `min(k, live)` hits: exactly `k` on the large index (its stable ids
//!   outnumber any `k` asked), and between `min(k, live throughout)` and the ids that could
//!   have been live on the small ones;
//! - every vector is findable by itself while live: after its `add` returned, its owner's
//!   `k = 1` search returns its id at distance ≈ 0 (a miss is re-checked with exact search
//!   to say whether the id was lost or only missed by the graph); after `remove` returned,
//!   its owner's search does not return it; `remove` of an id its owner knows is live
//!   returns true;
//! - a hit on a shared id is at the distance of one of that id's known vectors (no torn or
//!   foreign vector);
//! - at the end, with all threads joined: `len`, `contains` and `ids` agree with the owners'
//!   records, and every live vector of the large index is found by itself.
//!
//! Panics are counted with `catch_unwind` around each operation, only as a detector: the
//! index itself must not panic, and a panic is a FAIL.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use collector::{Metric, SuiteResult, Table, Verdict};
use hdrhistogram::Histogram;
use vector_index::data::{synthetic, Mixture};
use vector_index::{Hit, Index, IndexParams, IndexStats, Metric as VMetric};

use super::common::{build_rows, check_hit_list, gauss};
use crate::harness::new_result;
use crate::harness::seed::Rng;
use crate::harness::stats::{max_ms, new_hist, q_ms, record_us};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct VectorConcurrent;

const SMALL_DIM: usize = 16;
const LARGE_DIM: usize = 32;
/// Owned ids start here (slot `s` is id `SLOT_BASE + s`); stable ids are below it.
const SLOT_BASE: u64 = 1 << 32;
/// The id every re-adder of an index adds.
const SHARED_ID: u64 = 1 << 40;
/// Distance under which a vector counts as found by itself.
const SELF_EPS: f32 = 1e-3;
/// Live ids the large index's writers keep queued for the remover, at most.
const LIVE_QUEUE_MAX: usize = 2_000;
/// Examples of violations kept.
const EXAMPLES_MAX: usize = 20;
/// Live vectors of the large index re-checked at the end, at most.
const FINAL_SELF_CHECKS_MAX: usize = 5_000;

const DEAD: u64 = 0;
const ADDING: u64 = 1;
const LIVE: u64 = 2;
const REMOVING: u64 = 3;

struct Settings {
    /// Operations in all (the issue: quick 100k, full 1M).
    total_ops: u64,
    /// Stable vectors pre-loaded into the large index.
    stable: usize,
    /// Interval of the forced rebuilds.
    rebuild_every: Duration,
    /// The run ends here even if operations remain (then INCONCLUSIVE).
    bound: Duration,
    expected_s: u64,
}

fn settings(profile: Profile) -> Settings {
    match profile {
        Profile::Smoke => Settings {
            total_ops: 10_000,
            stable: 1_000,
            rebuild_every: Duration::from_millis(100),
            bound: Duration::from_secs(30),
            expected_s: 4,
        },
        Profile::Quick => Settings {
            total_ops: 100_000,
            stable: 5_000,
            rebuild_every: Duration::from_millis(300),
            bound: Duration::from_secs(150),
            expected_s: 40,
        },
        Profile::Full => Settings {
            total_ops: 1_000_000,
            stable: 20_000,
            rebuild_every: Duration::from_secs(1),
            bound: Duration::from_secs(3_600),
            expected_s: 600,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Bookkeeping

/// Phase words of owned ids: `(clock << 2) | phase`.
struct Slots {
    words: Vec<AtomicU64>,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            words: (0..n).map(|_| AtomicU64::new(DEAD)).collect(),
        }
    }

    fn set(&self, clock: &AtomicU64, slot: usize, phase: u64) {
        let tick = clock.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(w) = self.words.get(slot) {
            w.store((tick << 2) | phase, Ordering::SeqCst);
        }
    }

    /// `(phase, since tick)`.
    fn get(&self, slot: usize) -> (u64, u64) {
        let w = self
            .words
            .get(slot)
            .map_or(DEAD, |w| w.load(Ordering::SeqCst));
        (w & 3, w >> 2)
    }
}

/// Violations by kind, with the first few described.
#[derive(Default)]
struct Faults {
    counts: Mutex<BTreeMap<String, u64>>,
    examples: Mutex<Vec<String>>,
}

impl Faults {
    fn report(&self, kind: &str, detail: String) {
        *lock(&self.counts).entry(kind.to_string()).or_insert(0) += 1;
        let mut ex = lock(&self.examples);
        if ex.len() < EXAMPLES_MAX {
            ex.push(format!("{kind}: {detail}"));
        }
    }

    fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per operation kind: latency, count and the number of threads that did it.
type Tallies = BTreeMap<(&'static str, &'static str), (Histogram<u64>, u64, usize)>;

/// Latency and count per operation kind of one thread, merged at the end.
#[derive(Default)]
struct Tally(BTreeMap<(&'static str, &'static str), (Histogram<u64>, u64)>);

impl Tally {
    fn record(&mut self, index: &'static str, kind: &'static str, began: Instant) {
        let e = self
            .0
            .entry((index, kind))
            .or_insert_with(|| (new_hist(), 0));
        record_us(&mut e.0, began.elapsed().as_micros() as u64);
        e.1 += 1;
    }

    fn merge_into(self, all: &Mutex<Tallies>) {
        let mut all = lock(all);
        for (kind, (h, n)) in self.0 {
            let e = all.entry(kind).or_insert_with(|| (new_hist(), 0, 0));
            let _ = e.0.add(&h);
            e.1 += n;
            e.2 += 1;
        }
    }
}

/// What every thread shares.
struct Shared {
    clock: AtomicU64,
    faults: Faults,
    panics: AtomicU64,
    panic_examples: Mutex<Vec<String>>,
    tallies: Mutex<Tallies>,
    deadline: Instant,
    /// Operations taken by the large index's threads (its budget counter).
    lead: AtomicU64,
    /// The large index's budget.
    lead_total: u64,
}

impl Shared {
    /// Runs `op` catching a panic (a detector only: the index must not panic).
    fn guarded(&self, what: &str, op: impl FnOnce()) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(op)) {
            self.panics.fetch_add(1, Ordering::Relaxed);
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let mut ex = lock(&self.panic_examples);
            if ex.len() < EXAMPLES_MAX {
                ex.push(format!("{what}: {msg}"));
            }
        }
    }

    fn tick(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }
}

/// Takes one operation from `budget`; false when it is spent or time is up.
fn take(budget: &AtomicU64, total: u64, shared: &Shared) -> bool {
    budget.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < shared.deadline
}

fn random_vec(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| gauss(rng)).collect()
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Whether `hit` (of the shared id) is at the distance of one of its known vectors.
fn shared_distance_ok(hit: &Hit, query: &[f32], known: &[Vec<f32>]) -> bool {
    known.iter().any(|w| {
        let d = l2(query, w);
        (hit.distance - d).abs() <= 1e-3 * d.max(1.0)
    })
}

// ---------------------------------------------------------------------------------------
// The small indices

/// Checks that the vector `v` just added under `id` to `index` (named `name` in reports) is
/// found by itself: a k=1 search returns `id` at distance ≈ 0. A miss is re-checked with
/// exact search to tell a graph miss from a lost vector; either is a fault.
fn self_check(index: &Index, name: &str, sh: &Shared, id: u64, v: &[f32]) {
    match index.search(v, 1, None, &[]) {
        Ok(hits) => {
            let ok = hits
                .first()
                .is_some_and(|h| h.id == id && h.distance <= SELF_EPS);
            if !ok {
                let exact = index.exact_search(v, 1, &[]);
                let lost = !matches!(&exact, Ok(e) if e.first().is_some_and(|h| h.id == id));
                sh.faults.report(
                    if lost {
                        "live vector lost (exact search misses it too)"
                    } else {
                        "live vector not found by itself (graph miss; exact finds it)"
                    },
                    format!(
                        "{name}: id {id} right after its add returned: search(k=1) gave {hits:?}, exact {exact:?}; stats {:?}",
                        index.stats()
                    ),
                );
            }
        }
        Err(e) => sh.faults.report("search error", format!("{name}: {e}")),
    }
}

struct Small {
    name: &'static str,
    index: Index,
    flippers: usize,
    slots: Slots,
    /// The shared id's possible vectors.
    shared: Vec<Vec<f32>>,
    budget: AtomicU64,
    total: u64,
    done_at: Mutex<Option<f64>>,
}

impl Small {
    fn id(slot: usize) -> u64 {
        SLOT_BASE + slot as u64
    }

    /// Takes one operation from this index's budget, first waiting (200 µs sleeps, until
    /// the deadline) while this index is ahead of the large index's progress, so that the
    /// small and the large indices are hammered at the same time throughout the run.
    fn take_paced(&self, sh: &Shared) -> bool {
        while Instant::now() < sh.deadline {
            let lead = sh.lead.load(Ordering::Relaxed).min(sh.lead_total) as f64
                / sh.lead_total.max(1) as f64;
            let mine = self.budget.load(Ordering::Relaxed) as f64 / self.total.max(1) as f64;
            if mine <= lead + 0.01 || lead >= 1.0 {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        take(&self.budget, self.total, sh)
    }

    fn flipper(&self, sh: &Shared, slot: usize, mut rng: Rng) {
        let mut tally = Tally::default();
        let id = Small::id(slot);
        let mut live: Option<Vec<f32>> = None;
        while self.take_paced(sh) {
            let began = Instant::now();
            match live.take() {
                None => {
                    let v = random_vec(&mut rng, SMALL_DIM);
                    sh.guarded("small add", || {
                        self.slots.set(&sh.clock, slot, ADDING);
                        if let Err(e) = self.index.add(id, &v) {
                            sh.faults
                                .report("add error", format!("{}: add({id}): {e}", self.name));
                        }
                        self.slots.set(&sh.clock, slot, LIVE);
                        self.self_check(sh, id, &v);
                    });
                    live = Some(v);
                    tally.record(self.name, "add + self-check", began);
                }
                Some(v) => {
                    sh.guarded("small remove", || {
                        self.slots.set(&sh.clock, slot, REMOVING);
                        let was = self.index.remove(id);
                        self.slots.set(&sh.clock, slot, DEAD);
                        if !was {
                            sh.faults.report(
                                "remove of a live id returned false",
                                format!("{}: remove({id}) after its add returned", self.name),
                            );
                        }
                        match self.index.search(&v, 3, None, &[]) {
                            Ok(hits) if hits.iter().any(|h| h.id == id) => sh.faults.report(
                                "removed id returned",
                                format!(
                                    "{}: id {id} found by its own vector right after remove returned ({hits:?})",
                                    self.name
                                ),
                            ),
                            Ok(_) => {}
                            Err(e) => sh
                                .faults
                                .report("search error", format!("{}: {e}", self.name)),
                        }
                    });
                    tally.record(self.name, "remove + check", began);
                }
            }
        }
        tally.merge_into(&sh.tallies);
    }

    fn self_check(&self, sh: &Shared, id: u64, v: &[f32]) {
        self_check(&self.index, self.name, sh, id, v);
    }

    fn readder(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        while self.take_paced(sh) {
            let began = Instant::now();
            let r = rng.below(100);
            sh.guarded("small shared", || {
                if r < 8 {
                    self.index.remove(SHARED_ID);
                } else if r < 16 {
                    let a = self.shared[rng.index(self.shared.len())].clone();
                    let b = self.shared[rng.index(self.shared.len())].clone();
                    if let Err(e) = self.index.add_batch(&[(SHARED_ID, a), (SHARED_ID, b)]) {
                        sh.faults
                            .report("add error", format!("{}: add_batch: {e}", self.name));
                    }
                } else {
                    let w = &self.shared[rng.index(self.shared.len())];
                    if let Err(e) = self.index.add(SHARED_ID, w) {
                        sh.faults
                            .report("add error", format!("{}: add(shared): {e}", self.name));
                    }
                }
                if let Some(v) = self.index.get(SHARED_ID) {
                    if !self.shared.contains(&v) {
                        sh.faults.report(
                            "shared id holds a foreign vector",
                            format!("{}: get({SHARED_ID}) = {v:?}", self.name),
                        );
                    }
                }
            });
            tally.record(
                self.name,
                if r < 8 {
                    "shared remove"
                } else {
                    "shared re-add"
                },
                began,
            );
        }
        tally.merge_into(&sh.tallies);
    }

    fn reader(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        while self.take_paced(sh) {
            let began = Instant::now();
            sh.guarded("small search", || self.read_once(sh, &mut rng));
            tally.record(self.name, "search + check", began);
        }
        tally.merge_into(&sh.tallies);
    }

    fn read_once(&self, sh: &Shared, rng: &mut Rng) {
        let q = if rng.chance(0.3) {
            self.shared[rng.index(self.shared.len())].clone()
        } else {
            random_vec(rng, SMALL_DIM)
        };
        let k = 1 + rng.index(6);
        let mut exclude = Vec::new();
        for s in 0..self.flippers {
            if rng.chance(0.25) {
                exclude.push(Small::id(s));
            }
        }
        if rng.chance(0.25) {
            exclude.push(SHARED_ID);
        }
        let c0 = sh.tick();
        let hits = match self.index.search(&q, k, None, &exclude) {
            Ok(h) => h,
            Err(e) => {
                sh.faults
                    .report("search error", format!("{}: {e}", self.name));
                return;
            }
        };
        let mut live_throughout = 0usize;
        let mut possible = usize::from(!exclude.contains(&SHARED_ID));
        let mut dead_throughout = HashSet::new();
        for s in 0..self.flippers {
            let (phase, since) = self.slots.get(s);
            let id = Small::id(s);
            if phase == DEAD && since < c0 {
                dead_throughout.insert(id);
            } else if !exclude.contains(&id) {
                possible += 1;
                if phase == LIVE && since < c0 {
                    live_throughout += 1;
                }
            }
        }
        let ctx = || {
            format!(
                "{}: search(k={k}, exclude={exclude:?}) gave {hits:?}",
                self.name
            )
        };
        if let Err(why) = check_hit_list(&hits, &exclude) {
            sh.faults.report("bad answer", format!("{why}; {}", ctx()));
        }
        if hits.len() > k || hits.len() > possible {
            sh.faults.report(
                "answer too long",
                format!(
                    "{} hits, at most {} possible; {}",
                    hits.len(),
                    k.min(possible),
                    ctx()
                ),
            );
        }
        if hits.len() < k.min(live_throughout) {
            sh.faults.report(
                "answer too short",
                format!(
                    "{} hits but {live_throughout} ids were live throughout; {}",
                    hits.len(),
                    ctx()
                ),
            );
        }
        for h in &hits {
            if dead_throughout.contains(&h.id) {
                sh.faults
                    .report("removed id returned", format!("id {}; {}", h.id, ctx()));
            } else if h.id == SHARED_ID {
                if !shared_distance_ok(h, &q, &self.shared) {
                    sh.faults.report(
                        "shared id at a foreign distance",
                        format!("{h:?}; {}", ctx()),
                    );
                }
            } else if !(SLOT_BASE..SLOT_BASE + self.flippers as u64).contains(&h.id) {
                sh.faults
                    .report("unknown id returned", format!("id {}; {}", h.id, ctx()));
            }
        }
    }

    /// With every thread joined: the index agrees with the owners' records.
    fn final_check(&self, sh: &Shared) {
        let mut expected: HashSet<u64> = HashSet::new();
        for s in 0..self.flippers {
            let id = Small::id(s);
            let (phase, _) = self.slots.get(s);
            if phase == LIVE {
                expected.insert(id);
            }
        }
        if let Some(v) = self.index.get(SHARED_ID) {
            expected.insert(SHARED_ID);
            if !self.shared.contains(&v) {
                sh.faults.report(
                    "shared id holds a foreign vector",
                    format!("{} at the end", self.name),
                );
            }
        }
        let ids: HashSet<u64> = self.index.ids().into_iter().collect();
        if ids != expected || self.index.len() != expected.len() {
            sh.faults.report(
                "final state differs",
                format!(
                    "{}: ids {ids:?} (len {}), expected {expected:?}",
                    self.name,
                    self.index.len()
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The large index

struct Large {
    index: Index,
    stable: u64,
    slots: Slots,
    next_slot: AtomicU64,
    /// Vectors new ids are drawn near.
    pool: Vec<Vec<f32>>,
    shared: Vec<Vec<f32>>,
    live: Mutex<VecDeque<(usize, Vec<f32>)>>,
    dead: Mutex<VecDeque<usize>>,
    /// Operations of the large index's threads in all (their counter is `Shared::lead`).
    total: u64,
    done_at: Mutex<Option<f64>>,
}

impl Large {
    fn id(slot: usize) -> u64 {
        SLOT_BASE + slot as u64
    }

    fn near_pool(&self, rng: &mut Rng) -> Vec<f32> {
        let base = &self.pool[rng.index(self.pool.len())];
        base.iter().map(|x| x + 0.05 * gauss(rng)).collect()
    }

    fn self_check(&self, sh: &Shared, id: u64, v: &[f32]) {
        self_check(&self.index, "large", sh, id, v);
    }

    fn add_slot(&self, sh: &Shared, slot: usize, v: &[f32]) {
        let id = Large::id(slot);
        self.slots.set(&sh.clock, slot, ADDING);
        if let Err(e) = self.index.add(id, v) {
            sh.faults
                .report("add error", format!("large: add({id}): {e}"));
        }
        self.slots.set(&sh.clock, slot, LIVE);
        self.self_check(sh, id, v);
    }

    fn writer(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        let mut n = 0u64;
        while take(&sh.lead, self.total, sh) {
            let began = Instant::now();
            n += 1;
            if n % 16 == 0 {
                let w = &self.shared[rng.index(self.shared.len())];
                sh.guarded("large shared re-add", || {
                    if let Err(e) = self.index.add(SHARED_ID, w) {
                        sh.faults
                            .report("add error", format!("large: add(shared): {e}"));
                    }
                });
                tally.record("large", "shared re-add", began);
                continue;
            }
            if lock(&self.live).len() >= LIVE_QUEUE_MAX {
                self.search_instead(sh, &mut rng, &mut tally, began);
                continue;
            }
            let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) as usize;
            if slot >= self.slots.words.len() {
                self.search_instead(sh, &mut rng, &mut tally, began);
                continue;
            }
            let v = self.near_pool(&mut rng);
            sh.guarded("large add", || self.add_slot(sh, slot, &v));
            lock(&self.live).push_back((slot, v));
            tally.record("large", "add + self-check", began);
        }
        tally.merge_into(&sh.tallies);
    }

    fn remover(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        while take(&sh.lead, self.total, sh) {
            let began = Instant::now();
            // Take from the front (oldest) or, now and then, the newest.
            let item = {
                let mut q = lock(&self.live);
                if rng.chance(0.2) {
                    q.pop_back()
                } else {
                    q.pop_front()
                }
            };
            let Some((slot, v)) = item else {
                self.search_instead(sh, &mut rng, &mut tally, began);
                continue;
            };
            let id = Large::id(slot);
            sh.guarded("large remove", || {
                self.slots.set(&sh.clock, slot, REMOVING);
                let was = self.index.remove(id);
                self.slots.set(&sh.clock, slot, DEAD);
                if !was {
                    sh.faults.report(
                        "remove of a live id returned false",
                        format!("large: remove({id}) after its add returned"),
                    );
                }
                match self.index.search(&v, 5, None, &[]) {
                    Ok(hits) if hits.iter().any(|h| h.id == id) => sh.faults.report(
                        "removed id returned",
                        format!("large: id {id} found by its own vector right after remove returned ({hits:?})"),
                    ),
                    Ok(_) => {}
                    Err(e) => sh.faults.report("search error", format!("large: {e}")),
                }
            });
            lock(&self.dead).push_back(slot);
            tally.record("large", "remove + check", began);
        }
        tally.merge_into(&sh.tallies);
    }

    fn readder(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        while take(&sh.lead, self.total, sh) {
            let began = Instant::now();
            let item = lock(&self.dead).pop_front();
            let Some(slot) = item else {
                self.search_instead(sh, &mut rng, &mut tally, began);
                continue;
            };
            let v = self.near_pool(&mut rng);
            sh.guarded("large re-add", || self.add_slot(sh, slot, &v));
            lock(&self.live).push_back((slot, v));
            tally.record("large", "re-add + self-check", began);
        }
        tally.merge_into(&sh.tallies);
    }

    fn reader(&self, sh: &Shared, mut rng: Rng) {
        let mut tally = Tally::default();
        while take(&sh.lead, self.total, sh) {
            let began = Instant::now();
            self.search_instead(sh, &mut rng, &mut tally, began);
        }
        tally.merge_into(&sh.tallies);
    }

    /// One search + check of the large index, tallied as such (what a writer does when it
    /// has nothing to write, and all a reader does).
    fn search_instead(&self, sh: &Shared, rng: &mut Rng, tally: &mut Tally, began: Instant) {
        sh.guarded("large search", || self.read_once(sh, rng));
        tally.record("large", "search + check", began);
    }

    fn read_once(&self, sh: &Shared, rng: &mut Rng) {
        let q = if rng.chance(0.1) {
            self.shared[rng.index(self.shared.len())].clone()
        } else {
            self.near_pool(rng)
        };
        let k = 1 + rng.index(20);
        let ef = match rng.below(4) {
            0 => None,
            1 => Some(k),
            2 => Some(32),
            _ => Some(128),
        };
        let mut exclude: Vec<u64> = (0..rng.below(4)).map(|_| rng.below(self.stable)).collect();
        if rng.chance(0.3) {
            if let Some((slot, _)) = lock(&self.live).front() {
                exclude.push(Large::id(*slot));
            }
        }
        if rng.chance(0.1) {
            exclude.push(SHARED_ID);
        }
        let c0 = sh.tick();
        let hits = match self.index.search(&q, k, ef, &exclude) {
            Ok(h) => h,
            Err(e) => {
                sh.faults.report("search error", format!("large: {e}"));
                return;
            }
        };
        let allocated = self.next_slot.load(Ordering::Relaxed);
        let ctx = || format!("large: search(k={k}, ef={ef:?}, exclude={exclude:?}) gave {hits:?}");
        if let Err(why) = check_hit_list(&hits, &exclude) {
            sh.faults.report("bad answer", format!("{why}; {}", ctx()));
        }
        if hits.len() != k {
            sh.faults.report(
                "answer of the wrong length",
                format!(
                    "{} hits for k = {k} with {} stable ids; {}",
                    hits.len(),
                    self.stable,
                    ctx()
                ),
            );
        }
        for h in &hits {
            if h.id < self.stable {
                continue;
            }
            if h.id == SHARED_ID {
                if !shared_distance_ok(h, &q, &self.shared) {
                    sh.faults.report(
                        "shared id at a foreign distance",
                        format!("{h:?}; {}", ctx()),
                    );
                }
                continue;
            }
            let slot = h.id.wrapping_sub(SLOT_BASE);
            if h.id < SLOT_BASE || slot >= allocated {
                sh.faults
                    .report("unknown id returned", format!("id {}; {}", h.id, ctx()));
                continue;
            }
            let (phase, since) = self.slots.get(slot as usize);
            if phase == DEAD && since < c0 {
                sh.faults.report(
                    "removed id returned",
                    format!("id {} removed before the search began; {}", h.id, ctx()),
                );
            }
        }
    }

    /// With every thread joined: the index agrees with the queues, and every live vector
    /// is found by itself.
    fn final_check(&self, sh: &Shared) -> usize {
        let live = lock(&self.live);
        let dead = lock(&self.dead);
        let shared_live = usize::from(self.index.contains(SHARED_ID));
        let expected = self.stable as usize + live.len() + shared_live;
        if self.index.len() != expected {
            sh.faults.report(
                "final state differs",
                format!(
                    "large: len {} but {} stable + {} live owned + {shared_live} shared",
                    self.index.len(),
                    self.stable,
                    live.len()
                ),
            );
        }
        for slot in dead.iter() {
            if self.index.contains(Large::id(*slot)) {
                sh.faults.report(
                    "final state differs",
                    format!("large: removed id {} is live", Large::id(*slot)),
                );
            }
        }
        let mut checked = 0;
        for (slot, v) in live.iter().take(FINAL_SELF_CHECKS_MAX) {
            let id = Large::id(*slot);
            if !self.index.contains(id) {
                sh.faults.report(
                    "final state differs",
                    format!("large: live id {id} missing"),
                );
            }
            self.self_check(sh, id, v);
            checked += 1;
        }
        checked
    }
}

// ---------------------------------------------------------------------------------------

impl Suite for VectorConcurrent {
    fn name(&self) -> &'static str {
        "vector-concurrent"
    }

    fn description(&self) -> &'static str {
        "writers, removers, re-adders and readers on a small (len 0/1) and a large index at once, with forced rebuilds: zero panics, zero removed/excluded/duplicate ids, every live vector findable by itself"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "{} operations over 3 indices ({} stable vectors in the large one), 20 threads, forced rebuilds every {} ms (large) and a quarter of that (small)",
                s.total_ops,
                s.stable,
                s.rebuild_every.as_millis()
            ),
            expected_s: s.expected_s,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let mut r = new_result(self, ctx);
        let mut failures = Vec::new();
        let mut doubts = Vec::new();
        println!(
            "vector-concurrent: seed {} · {} operations · large index {} x {LARGE_DIM} stable",
            ctx.seed, s.total_ops, s.stable
        );

        // The large index: stable clustered vectors, never touched.
        let stable =
            synthetic(s.stable, LARGE_DIM, ctx.seed).context("generating stable vectors")?;
        let pool = Mixture::new(s.stable, LARGE_DIM, ctx.seed)
            .and_then(|m| m.sample(4_096, 3))
            .context("generating the pool of new vectors")?;
        let large_params = IndexParams::new(LARGE_DIM, VMetric::L2);
        let large_index = Index::new(large_params.clone())?;
        let t = Instant::now();
        build_rows(&large_index, stable.len(), |i| stable.row(i).to_vec())
            .context("pre-loading the large index")?;
        println!(
            "large index pre-loaded in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let pool: Vec<Vec<f32>> = pool.rows().map(|r| r.to_vec()).collect();
        let mut rng = Rng::new(ctx.seed, 0xC0);
        let large_shared: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                pool[i * 97 % pool.len()]
                    .iter()
                    .map(|x| x + 0.05 * gauss(&mut rng))
                    .collect()
            })
            .collect();
        let large_budget = s.total_ops / 2;
        let large = Large {
            index: large_index,
            stable: s.stable as u64,
            slots: Slots::new(large_budget as usize + 1),
            next_slot: AtomicU64::new(0),
            pool,
            shared: large_shared,
            live: Mutex::new(VecDeque::new()),
            dead: Mutex::new(VecDeque::new()),
            total: large_budget,
            done_at: Mutex::new(None),
        };
        let small_budget = (s.total_ops - large_budget) / 2;
        let small = |name, exact_below| -> Result<Small> {
            let mut p = IndexParams::new(SMALL_DIM, VMetric::L2);
            p.exact_below = exact_below;
            let mut rng = Rng::new(ctx.seed, if exact_below == 0 { 0x5A } else { 0x5B });
            Ok(Small {
                name,
                index: Index::new(p)?,
                flippers: 2,
                slots: Slots::new(2),
                shared: (0..4).map(|_| random_vec(&mut rng, SMALL_DIM)).collect(),
                budget: AtomicU64::new(0),
                total: small_budget,
                done_at: Mutex::new(None),
            })
        };
        let smalls = [small("small-exact", 256)?, small("small-graph", 0)?];
        let shared = Shared {
            clock: AtomicU64::new(1),
            faults: Faults::default(),
            panics: AtomicU64::new(0),
            panic_examples: Mutex::new(Vec::new()),
            tallies: Mutex::new(BTreeMap::new()),
            deadline: Instant::now() + s.bound,
            lead: AtomicU64::new(0),
            lead_total: large_budget,
        };
        let stop = AtomicBool::new(false);
        let rebuilds_forced = AtomicU64::new(0);
        let began = Instant::now();
        let mut stream = 0u64;
        let mut next = || {
            stream += 1;
            Rng::new(ctx.seed, 0x100 + stream)
        };
        std::thread::scope(|scope| {
            let sh = &shared;
            let mut groups = Vec::new();
            for sm in &smalls {
                let mut hs = Vec::new();
                for slot in 0..sm.flippers {
                    let rng = next();
                    hs.push(scope.spawn(move || sm.flipper(sh, slot, rng)));
                }
                for _ in 0..3 {
                    let rng = next();
                    hs.push(scope.spawn(move || sm.readder(sh, rng)));
                }
                let rng = next();
                hs.push(scope.spawn(move || sm.reader(sh, rng)));
                groups.push((hs, &sm.done_at));
            }
            let lg = &large;
            let mut hs = Vec::new();
            for _ in 0..2 {
                let rng = next();
                hs.push(scope.spawn(move || lg.writer(sh, rng)));
            }
            let rng = next();
            hs.push(scope.spawn(move || lg.remover(sh, rng)));
            let rng = next();
            hs.push(scope.spawn(move || lg.readder(sh, rng)));
            for _ in 0..2 {
                let rng = next();
                hs.push(scope.spawn(move || lg.reader(sh, rng)));
            }
            groups.push((hs, &lg.done_at));
            let (stop, forced, smalls) = (&stop, &rebuilds_forced, &smalls);
            // Forced rebuilds: one thread for the large index, one for the small ones, so a
            // slow large rebuild does not hold the small ones back. Bounded by the stop flag
            // and the deadline.
            let large_rebuilder = scope.spawn(move || {
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) && Instant::now() < sh.deadline {
                    std::thread::sleep(s.rebuild_every);
                    let t = Instant::now();
                    sh.guarded("forced rebuild (large)", || lg.index.rebuild());
                    tally.record("large", "forced rebuild", t);
                    forced.fetch_add(1, Ordering::Relaxed);
                }
                tally.merge_into(&sh.tallies);
            });
            let small_rebuilder = scope.spawn(move || {
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) && Instant::now() < sh.deadline {
                    std::thread::sleep(s.rebuild_every / 4);
                    for sm in smalls {
                        let t = Instant::now();
                        sh.guarded("forced rebuild (small)", || sm.index.rebuild());
                        tally.record(sm.name, "forced rebuild", t);
                        forced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tally.merge_into(&sh.tallies);
            });
            for (hs, done_at) in groups {
                for h in hs {
                    if h.join().is_err() {
                        sh.panics.fetch_add(1, Ordering::Relaxed);
                    }
                }
                *lock(done_at) = Some(began.elapsed().as_secs_f64());
            }
            stop.store(true, Ordering::Relaxed);
            let _ = large_rebuilder.join();
            let _ = small_rebuilder.join();
        });
        let window_s = began.elapsed().as_secs_f64();

        // Quiescent checks.
        for sm in &smalls {
            shared.guarded("final check", || sm.final_check(&shared));
        }
        let mut final_self = 0;
        shared.guarded("final check", || final_self = large.final_check(&shared));

        // Report.
        let ops_done: u64 = smalls
            .iter()
            .map(|sm| sm.budget.load(Ordering::Relaxed).min(sm.total))
            .sum::<u64>()
            + shared.lead.load(Ordering::Relaxed).min(large.total);
        let violations = shared.faults.total();
        let panics = shared.panics.load(Ordering::Relaxed);
        let counts = lock(&shared.faults.counts).clone();
        let examples = lock(&shared.faults.examples).clone();
        let panic_examples = lock(&shared.panic_examples).clone();
        println!(
            "{ops_done} operations in {window_s:.1} s ({:.0}/s), {violations} violations, {panics} panics, {} forced rebuilds",
            ops_done as f64 / window_s.max(1e-9),
            rebuilds_forced.load(Ordering::Relaxed)
        );
        for e in examples.iter().take(5) {
            println!("  violation: {e}");
        }
        for e in panic_examples.iter().take(5) {
            println!("  panic: {e}");
        }
        if violations > 0 {
            failures.push(format!(
                "{violations} invariant violations ({}), e.g. {} — replay: stress run vector-concurrent --profile {} --seed {}",
                counts
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                examples.first().cloned().unwrap_or_default(),
                ctx.profile,
                ctx.seed
            ));
        }
        if panics > 0 {
            failures.push(format!(
                "{panics} panics, e.g. {}",
                panic_examples.first().cloned().unwrap_or_default()
            ));
        }
        if ops_done < s.total_ops {
            doubts.push(format!(
                "only {ops_done} of {} operations ran within the {} s bound",
                s.total_ops,
                s.bound.as_secs()
            ));
        }

        let tallies = lock(&shared.tallies);
        let mut kinds = Table::new(
            format!(
                "Operations by kind ({window_s:.1} s; checks included in each operation's latency)"
            ),
            &[
                "index",
                "operation",
                "threads",
                "ops",
                "ops/s",
                "p50 µs",
                "p99 µs",
                "max ms",
            ],
        );
        for ((index, kind), (h, n, threads)) in tallies.iter() {
            let rate = *n as f64 / window_s.max(1e-9);
            kinds.push_row([
                index.to_string(),
                kind.to_string(),
                threads.to_string(),
                n.to_string(),
                format!("{rate:.0}"),
                format!("{:.0}", q_ms(h, 0.5) * 1e3),
                format!("{:.0}", q_ms(h, 0.99) * 1e3),
                format!("{:.2}", max_ms(h)),
            ]);
            let key: String = format!("{index} {kind}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
                .split('_')
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            r.metrics
                .push(Metric::new(format!("{key}_per_s"), rate, "ops/s").higher_is_better());
        }
        if let Some(((index, kind), (h, _, _))) = tallies
            .iter()
            .filter(|((_, kind), _)| *kind != "forced rebuild")
            .max_by(|a, b| max_ms(&a.1 .0).total_cmp(&max_ms(&b.1 .0)))
        {
            r.findings.push(format!(
                "slowest single operation (forced rebuilds aside): {index} {kind}, {:.1} ms (its p99: {:.1} ms); a stall this long means a writer or reader waited on the index (a rebuild's locked replay) or for a core",
                max_ms(h),
                q_ms(h, 0.99)
            ));
            r.metrics
                .push(Metric::new("slowest_operation_ms", max_ms(h), "ms").lower_is_better());
        }
        drop(tallies);
        let mut viol = Table::new(
            "Invariant violations by kind (every one must be 0)",
            &["violation", "count"],
        );
        for kind in [
            "bad answer",
            "answer of the wrong length",
            "answer too long",
            "answer too short",
            "removed id returned",
            "unknown id returned",
            "shared id at a foreign distance",
            "shared id holds a foreign vector",
            "live vector not found by itself (graph miss; exact finds it)",
            "live vector lost (exact search misses it too)",
            "remove of a live id returned false",
            "add error",
            "search error",
            "final state differs",
        ] {
            viol.push_row([
                kind.to_string(),
                counts.get(kind).copied().unwrap_or(0).to_string(),
            ]);
        }
        viol.push_row(["panics".to_string(), panics.to_string()]);
        let mut stats_t = Table::new(
            "Index state at the end",
            &[
                "index",
                "live",
                "tombstones",
                "graph points",
                "rebuilds",
                "exact searches",
                "graph searches",
                "of them on the copy",
                "copies",
                "copy delta",
                "fallbacks",
                "orphans",
                "ops",
                "ran for s",
            ],
        );
        let stat_row = |t: &mut Table, name: &str, st: IndexStats, ops: u64, done: Option<f64>| {
            t.push_row([
                name.to_string(),
                st.live.to_string(),
                st.tombstones.to_string(),
                st.graph_points.to_string(),
                st.rebuilds.to_string(),
                st.exact_searches.to_string(),
                st.graph_searches.to_string(),
                st.copy_searches.to_string(),
                st.copies.to_string(),
                st.copy_delta.to_string(),
                st.fallbacks.to_string(),
                st.orphans.to_string(),
                ops.to_string(),
                done.map_or("-".into(), |d| format!("{d:.1}")),
            ]);
        };
        let mut rebuilds = 0;
        let mut fallbacks = 0;
        for sm in &smalls {
            let st = sm.index.stats();
            rebuilds += st.rebuilds;
            fallbacks += st.fallbacks;
            stat_row(
                &mut stats_t,
                sm.name,
                st,
                sm.budget.load(Ordering::Relaxed).min(sm.total),
                *lock(&sm.done_at),
            );
        }
        let lst = large.index.stats();
        rebuilds += lst.rebuilds;
        fallbacks += lst.fallbacks;
        stat_row(
            &mut stats_t,
            "large",
            lst,
            shared.lead.load(Ordering::Relaxed).min(large.total),
            *lock(&large.done_at),
        );

        r.metrics.push(
            Metric::new("ops_per_s", ops_done as f64 / window_s.max(1e-9), "ops/s")
                .higher_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("violations", violations as f64, "")
                .lower_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("panics", panics as f64, "")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("operations", ops_done as f64, ""));
        r.metrics.push(Metric::new("rebuilds", rebuilds as f64, ""));
        r.metrics.push(Metric::new(
            "forced_rebuilds",
            rebuilds_forced.load(Ordering::Relaxed) as f64,
            "",
        ));
        r.metrics
            .push(Metric::new("fallbacks", fallbacks as f64, ""));
        r.metrics
            .push(Metric::new("large_rebuilds", lst.rebuilds as f64, ""));
        r.metrics
            .push(Metric::new("large_fallbacks", lst.fallbacks as f64, ""));
        r.metrics.push(Metric::new("wall_ops_s", window_s, "s"));
        r.findings.push(format!(
            "at the end every one of the {final_self} live owned vectors of the large index was searched for by itself again (k = 1)"
        ));
        if !examples.is_empty() {
            r.findings.push(format!(
                "violations (first {}): {}",
                examples.len(),
                examples.join(" | ")
            ));
        }
        r.tables.push(viol);
        r.tables.push(kinds);
        r.tables.push(stats_t);
        r.config.insert("total_ops".into(), s.total_ops.into());
        r.config.insert("stable".into(), s.stable.into());
        r.config.insert("small_dim".into(), SMALL_DIM.into());
        r.config.insert("large_dim".into(), LARGE_DIM.into());
        r.config
            .insert("large_params".into(), serde_json::to_value(&large_params)?);
        r.config.insert(
            "threads".into(),
            "per small index: 2 flippers, 3 shared-id re-adders, 1 reader; large: 2 writers, 1 remover, 1 re-adder, 2 readers; 2 rebuilders (large, small); the small indices pace themselves to the large one's progress".into(),
        );
        r.config.insert(
            "rebuild_every_ms".into(),
            (s.rebuild_every.as_millis() as u64).into(),
        );
        r.config.insert(
            "seed_use".into(),
            "the stable and pool vectors and every thread's choices (each thread has its own stream); thread interleaving is not replayable".into(),
        );
        r.headline = format!(
            "{ops_done} operations on 3 indices at once ({:.0}/s): {violations} invariant violations, {panics} panics; {rebuilds} rebuilds, {fallbacks} fallbacks",
            ops_done as f64 / window_s.max(1e-9)
        );
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
