//! Load generators: open-loop steps and phases, bursts, and closed-loop workers.
//!
//! **Open loop** (wrk2's rule): operation `i` is *intended* to start at `start + i/rate`,
//! whatever happened to earlier operations. Its latency is measured from that intended
//! time, so a stalled target (or a stalled generator) shows up in the percentiles instead
//! of silently lowering the request rate (coordinated omission). The service time from the
//! actual start is recorded too; reports show both.
//!
//! **Step lifecycle**: warmup → reset → hold → measure → cooldown. Load runs through warmup
//! and hold on one schedule; the recorder is reset when the first hold operation is due,
//! so warmup operations still in flight become stragglers and never count; at the end of
//! the hold no new operation starts, every hold operation is awaited (bounded by the
//! operation timeout), and the recorder is reset again, which yields exactly the operations
//! *scheduled* in the hold. Then the target gets `cooldown` without load.
//!
//! **Shortfall**: an in-flight limit bounds concurrency; an operation that finds it full is
//! *dropped* (never started, counted). An operation that starts more than `late_slack`
//! after its intended time is *late* (counted, still run). Hold operations the generator
//! had not reached when the hold ended are *not issued*. Achieved rate = operations issued
//! in the hold / hold time.
//!
//! **Closed loop**: N workers each wait for their operation, think, and go again. They
//! record what they see (latency from the actual start) and say they are closed-loop: a
//! slow target slows the workers down instead of showing up as latency.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::recorder::{ActionId, Epoch, Recorder, Sample, StepData};
use crate::schedule::{OpenLoopSchedule, Pacing};
use crate::shape::{Phase, Shape, StepTiming};
use crate::target::{OpError, Target};

/// Shards of every recorder a generator creates.
const SHARDS: usize = 16;

/// Generator settings shared by every shape.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorConfig {
    /// The most operations in flight at once; beyond it operations are dropped.
    pub max_in_flight: u32,
    /// Every call is bounded by this; past it the call is cancelled and counts as `timeout`.
    pub op_timeout: Duration,
    /// An operation that starts later than this after its intended time counts as late.
    pub late_slack: Duration,
    /// How the generator waits for intended times.
    pub pacing: Pacing,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            max_in_flight: 10_000,
            op_timeout: Duration::from_secs(5),
            late_slack: Duration::from_millis(1),
            pacing: Pacing::Hybrid {
                spin_below: Duration::from_micros(1_500),
            },
        }
    }
}

/// How a measurement was driven.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Open loop at a target rate.
    OpenLoop {
        /// Requested operations per second.
        target_per_s: f64,
    },
    /// A burst of operations released at once.
    Burst {
        /// How many.
        ops: u64,
    },
    /// Closed loop with N workers: latency is what the workers saw.
    ClosedLoop {
        /// Workers.
        workers: u64,
    },
}

/// What one measured window (a hold, a phase, a burst, a closed-loop run) produced.
#[derive(Debug)]
pub struct Measured {
    /// How it was driven.
    pub mode: Mode,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Operations the schedule put in the window (open loop) or that ran (closed loop).
    pub scheduled: u64,
    /// Operations started.
    pub issued: u64,
    /// Operations the generator had not reached when the window ended.
    pub not_issued: u64,
    /// How late the generator started operations after their intended time, µs.
    pub issue_lateness_us: Histogram<u64>,
    /// Backlog reported by the target when the window began and ended.
    pub pending: (Option<u64>, Option<u64>),
    /// Whether every issued operation finished before the measure deadline.
    pub drained: bool,
    /// Everything the recorder kept: per action latencies and counters.
    pub data: StepData,
}

impl Measured {
    /// Operations issued per second of the window.
    pub fn achieved_per_s(&self) -> f64 {
        if self.window_s > 0.0 {
            self.issued as f64 / self.window_s
        } else {
            0.0
        }
    }

    /// Backlog growth over the window, if the target reports one.
    pub fn backlog_growth(&self) -> Option<i64> {
        match self.pending {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        }
    }
}

/// Why a generator could not run.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// The target's action list is empty or malformed.
    #[error("target {target}: {message}")]
    Target {
        /// The target's description.
        target: String,
        /// What is wrong.
        message: String,
    },
    /// A schedule could not be built.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// A shape was invalid.
    #[error(transparent)]
    Shape(#[from] crate::shape::ShapeError),
}

fn lateness_histogram() -> Histogram<u64> {
    crate::summary::micros_histogram()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A recorder for `target`'s actions.
pub fn recorder_for(target: &dyn Target) -> Result<Arc<Recorder>, GeneratorError> {
    recorder_with_raw_log(target, 0)
}

/// [`recorder_for`] with a raw log of at most `cap_per_shard` values per shard and action
/// ([`Recorder::with_raw_log`]; 0: none).
fn recorder_with_raw_log(
    target: &dyn Target,
    cap_per_shard: usize,
) -> Result<Arc<Recorder>, GeneratorError> {
    let actions = target.actions();
    let names: Vec<&str> = actions.iter().map(String::as_str).collect();
    let marks: Vec<ActionId> = target.mark_actions().into_iter().map(ActionId).collect();
    Recorder::new(&names, SHARDS)
        .and_then(|r| r.with_marks(&marks))
        .map(|r| Arc::new(r.with_raw_log(cap_per_shard)))
        .map_err(|e| GeneratorError::Target {
            target: target.describe(),
            message: e.to_string(),
        })
}

/// The action an operation that never ran (dropped) or ran late is counted under: the one
/// the target picks, clamped to the recorder's actions (a recorder always has at least one).
fn counted_action(target: &dyn Target, recorder: &Recorder, seq: u64) -> ActionId {
    ActionId(
        target
            .pick(seq)
            .min(recorder.actions().len().saturating_sub(1)),
    )
}

/// Runs one operation to completion (bounded by the timeout) and records it, and into the
/// tap (if any) under the tap's epoch at completion.
async fn run_op(
    target: Arc<dyn Target>,
    recorder: Arc<Recorder>,
    tap: Option<Arc<Recorder>>,
    epoch: Epoch,
    seq: u64,
    intended: Instant,
    op_timeout: Duration,
) {
    let n_actions = recorder.actions().len();
    let picked = target.pick(seq);
    let mut marks = Vec::new();
    let (action, result) = if picked < n_actions {
        let actual = Instant::now();
        let r = match tokio::time::timeout(op_timeout, target.call_marked(picked, seq)).await {
            Ok(r) => r,
            Err(_) => Err(OpError::timeout()),
        };
        let r = r.map(|m| {
            marks = m;
            actual
        });
        (picked, r.map_err(|e| (e, actual)))
    } else {
        let now = Instant::now();
        let e = OpError::new(
            "invalid_action",
            format!("pick({seq}) = {picked}, but the target has {n_actions} actions"),
        );
        (0, Err((e, now)))
    };
    let end = Instant::now();
    let (actual, error) = match &result {
        Ok(actual) => (*actual, None),
        Err((e, actual)) => (*actual, Some(e.kind.as_ref())),
    };
    let tap_epoch = tap.as_ref().map(|t| t.epoch());
    let emit = |sample: &Sample<'_>| {
        recorder.record(seq as usize, epoch, sample);
        if let (Some(tap), Some(now)) = (&tap, tap_epoch) {
            tap.record(seq as usize, now, sample);
        }
    };
    emit(&Sample {
        action: ActionId(action),
        latency_us: micros(end.saturating_duration_since(intended)),
        service_us: micros(end.saturating_duration_since(actual)),
        error,
    });
    // A mark index the recorder does not know is counted in `unknown_actions`.
    for mark in &marks {
        emit(&Sample {
            action: ActionId(mark.action),
            latency_us: micros(mark.at.saturating_duration_since(intended)),
            service_us: micros(mark.at.saturating_duration_since(actual)),
            error: None,
        });
    }
}

/// Counts of one open-loop drive.
struct Drive {
    scheduled: u64,
    issued: u64,
    not_issued: u64,
    lateness: Histogram<u64>,
    pending_start: Option<u64>,
    done: Arc<Semaphore>,
}

impl Drive {
    /// The measurement of an open-loop window of length `window` at `target_per_s`.
    fn into_measured(
        self,
        target_per_s: f64,
        window: Duration,
        pending_end: Option<u64>,
        drained: bool,
        data: StepData,
    ) -> Measured {
        Measured {
            mode: Mode::OpenLoop { target_per_s },
            window_s: window.as_secs_f64(),
            scheduled: self.scheduled,
            issued: self.issued,
            not_issued: self.not_issued,
            issue_lateness_us: self.lateness,
            pending: (self.pending_start, pending_end),
            drained,
            data,
        }
    }
}

/// Drives `rate` open-loop from `start` until `end`. When `reset_at` is given, the recorder
/// is reset just before the first operation intended at or after it, and only operations
/// from then on are counted in the returned figures.
#[allow(clippy::too_many_arguments)]
async fn drive(
    target: &Arc<dyn Target>,
    recorder: &Arc<Recorder>,
    tap: Option<&Arc<Recorder>>,
    limit: &Arc<Semaphore>,
    cfg: &GeneratorConfig,
    rate: f64,
    start: Instant,
    end: Instant,
    reset_at: Option<Instant>,
    seq_base: u64,
) -> Result<Drive, GeneratorError> {
    let schedule = OpenLoopSchedule::new(start, rate)?;
    let total = schedule.count_within(end.saturating_duration_since(start));
    let done = Arc::new(Semaphore::new(0));
    let mut counted_from = if reset_at.is_some() { None } else { Some(0) };
    let mut d = Drive {
        scheduled: 0,
        issued: 0,
        not_issued: 0,
        lateness: lateness_histogram(),
        pending_start: None,
        done: done.clone(),
    };
    if counted_from.is_some() {
        d.pending_start = target.pending();
    }
    for i in 0..total {
        let intended = schedule.intended(i);
        if counted_from.is_none() && reset_at.is_some_and(|r| intended >= r) {
            let _ = recorder.reset(); // warmup data is discarded
            counted_from = Some(i);
            d.pending_start = target.pending();
        }
        let now = cfg.pacing.wait_until(intended).await;
        if now > end + cfg.late_slack {
            // The generator fell behind: what is left of the window was never issued.
            if let Some(from) = counted_from {
                d.not_issued = total - i.max(from);
            }
            break;
        }
        let counted = counted_from.is_some();
        let epoch = recorder.epoch();
        let seq = seq_base + i;
        let late = now.saturating_duration_since(intended);
        if counted {
            d.scheduled += 1;
            d.lateness.saturating_record(micros(late).max(1));
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            let action = counted_action(target.as_ref(), recorder, seq);
            recorder.record_dropped(seq as usize, epoch, action);
            continue;
        };
        if late > cfg.late_slack {
            let action = counted_action(target.as_ref(), recorder, seq);
            recorder.record_late(seq as usize, epoch, action);
        }
        if counted {
            d.issued += 1;
        }
        let (t, r, done) = (target.clone(), recorder.clone(), done.clone());
        let tap = tap.cloned();
        let timeout = cfg.op_timeout;
        tokio::spawn(async move {
            run_op(t, r, tap, epoch, seq, intended, timeout).await;
            drop(permit);
            done.add_permits(1);
        });
    }
    if counted_from.is_none() {
        // The window ended before the reset point: nothing was measured.
        let _ = recorder.reset();
    }
    // Operations scheduled but skipped because the loop ended early are in not_issued;
    // scheduled counts only what the loop reached.
    d.scheduled += d.not_issued;
    Ok(d)
}

/// Waits until `issued` operations of a drive have finished, at most `bound`.
async fn await_ops(done: &Semaphore, issued: u64, bound: Duration) -> bool {
    let n = u32::try_from(issued).unwrap_or(u32::MAX);
    if n == 0 {
        return true;
    }
    match tokio::time::timeout(bound, done.acquire_many(n)).await {
        Ok(Ok(permit)) => {
            permit.forget();
            true
        }
        _ => false,
    }
}

/// The open-loop generator: runs steps, phases and bursts against one target.
pub struct OpenLoop {
    target: Arc<dyn Target>,
    recorder: Arc<Recorder>,
    tap: Option<Arc<Recorder>>,
    limit: Arc<Semaphore>,
    cfg: GeneratorConfig,
    next_seq: u64,
}

impl OpenLoop {
    /// A generator for `target`.
    pub fn new(target: Arc<dyn Target>, cfg: GeneratorConfig) -> Result<Self, GeneratorError> {
        let recorder = recorder_for(target.as_ref())?;
        Ok(OpenLoop {
            limit: Arc::new(Semaphore::new(cfg.max_in_flight.max(1) as usize)),
            target,
            recorder,
            tap: None,
            cfg,
            next_seq: 0,
        })
    }

    /// Also records every completed operation (and its marks) into `tap`, under the tap's
    /// epoch at completion, whatever the step: resetting the tap every second yields the
    /// per-second intervals of an interval log ([`crate::hlog`]). Build it with
    /// [`recorder_for`] on the same target. `None` removes the tap.
    pub fn set_tap(&mut self, tap: Option<Arc<Recorder>>) {
        self.tap = tap;
    }

    /// The `seq` of the next operation (0 at first; each step moves it past its own). Give
    /// generators that share a target disjoint ranges, e.g. `worker << 40`.
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// Keeps a raw log of every latency value in the steps this generator measures (see
    /// [`Recorder::with_raw_log`]), at most `cap_per_shard` per shard and action.
    pub fn keep_raw_log(&mut self, cap_per_shard: usize) -> Result<(), GeneratorError> {
        self.recorder = recorder_with_raw_log(self.target.as_ref(), cap_per_shard)?;
        Ok(())
    }

    /// The target.
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// The settings.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Runs any shape and returns one measurement per step, phase or burst. A closed-loop
    /// shape runs [`closed_loop`] with this generator's target and timeout.
    pub async fn run(&mut self, shape: &Shape) -> Result<Vec<Measured>, GeneratorError> {
        shape.validate()?;
        match shape {
            Shape::Constant { rate_per_s, timing } => {
                Ok(vec![self.step(*rate_per_s, *timing).await?])
            }
            Shape::Ramp { rates, timing } => {
                let mut out = Vec::with_capacity(rates.len());
                for rate in rates {
                    out.push(self.step(*rate, *timing).await?);
                }
                Ok(out)
            }
            Shape::Phases(phases) => self.phases(phases).await,
            Shape::Burst { ops } => Ok(vec![self.burst(*ops).await?]),
            Shape::ClosedLoop {
                workers,
                think,
                duration,
            } => Ok(vec![
                closed_loop_tapped(
                    self.target.clone(),
                    ClosedLoopConfig {
                        workers: *workers,
                        think: *think,
                        duration: *duration,
                        op_timeout: self.cfg.op_timeout,
                    },
                    self.tap.clone(),
                )
                .await?,
            ]),
        }
    }

    /// One step at `rate`: warmup → reset → hold → measure → cooldown.
    pub async fn step(
        &mut self,
        rate: u64,
        timing: StepTiming,
    ) -> Result<Measured, GeneratorError> {
        self.step_at(Instant::now() + Duration::from_millis(2), rate, timing)
            .await
    }

    /// [`OpenLoop::step`] with its first operation intended at `start` (several generators
    /// started on one instant, as a distributed run does). A `start` already past makes the
    /// first operations late, which the step counts.
    pub async fn step_at(
        &mut self,
        start: Instant,
        rate: u64,
        timing: StepTiming,
    ) -> Result<Measured, GeneratorError> {
        let hold_start = start + timing.warmup;
        let hold_end = hold_start + timing.hold;
        let reset_at = (!timing.warmup.is_zero()).then_some(hold_start);
        let _ = self.recorder.reset(); // anything before this step is not ours
        let d = drive(
            &self.target,
            &self.recorder,
            self.tap.as_ref(),
            &self.limit,
            &self.cfg,
            rate as f64,
            start,
            hold_end,
            reset_at,
            self.next_seq,
        )
        .await?;
        self.next_seq +=
            (rate as f64 * (timing.warmup + timing.hold).as_secs_f64()).ceil() as u64 + 1;
        let pending_end = self.target.pending();
        // Measure: every operation of this drive (warmup ones too) must finish, so the
        // hold's data is complete and the next step starts from an idle target.
        let drained = self.wait_idle().await;
        let data = self.recorder.reset();
        tokio::time::sleep(timing.cooldown).await;
        Ok(d.into_measured(rate as f64, timing.hold, pending_end, drained, data))
    }

    /// Waits until no operation is in flight, at most the operation timeout plus a second.
    async fn wait_idle(&self) -> bool {
        let all = self.cfg.max_in_flight.max(1);
        let bound = self.cfg.op_timeout + Duration::from_secs(1);
        match tokio::time::timeout(bound, self.limit.acquire_many(all)).await {
            Ok(Ok(permit)) => {
                drop(permit);
                true
            }
            _ => false,
        }
    }

    /// Back-to-back phases, each measured on its own: an operation counts in the phase in
    /// which it was scheduled, because every phase records into its own recorder and is
    /// awaited in the background while the next phase runs.
    pub async fn phases(&mut self, phases: &[Phase]) -> Result<Vec<Measured>, GeneratorError> {
        Shape::Phases(phases.to_vec()).validate()?;
        let mut start = Instant::now() + Duration::from_millis(2);
        let mut pending_tail = Vec::new();
        for p in phases {
            let recorder = recorder_for(self.target.as_ref())?;
            let end = start + p.duration;
            let d = drive(
                &self.target,
                &recorder,
                self.tap.as_ref(),
                &self.limit,
                &self.cfg,
                p.rate_per_s as f64,
                start,
                end,
                None,
                self.next_seq,
            )
            .await?;
            self.next_seq += (p.rate_per_s as f64 * p.duration.as_secs_f64()).ceil() as u64 + 1;
            let pending_end = self.target.pending();
            let bound = self.cfg.op_timeout + Duration::from_secs(1);
            let rate = p.rate_per_s as f64;
            let window = p.duration;
            pending_tail.push(tokio::spawn(async move {
                let drained = await_ops(&d.done, d.issued, bound).await;
                d.into_measured(rate, window, pending_end, drained, recorder.reset())
            }));
            start = end;
        }
        let mut out = Vec::with_capacity(pending_tail.len());
        for h in pending_tail {
            match h.await {
                Ok(m) => out.push(m),
                Err(e) => {
                    return Err(GeneratorError::Target {
                        target: self.target.describe(),
                        message: format!("a phase's measurement task failed: {e}"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// `ops` operations intended at the same instant (a thundering herd). All of them are
    /// started at once, up to the in-flight limit; the rest are dropped.
    pub async fn burst(&mut self, ops: u64) -> Result<Measured, GeneratorError> {
        Shape::Burst { ops }.validate()?;
        let _ = self.recorder.reset();
        let pending_start = self.target.pending();
        let intended = Instant::now();
        let epoch = self.recorder.epoch();
        let done = Arc::new(Semaphore::new(0));
        let mut lateness = lateness_histogram();
        let mut issued = 0;
        for i in 0..ops {
            let seq = self.next_seq + i;
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                let action = counted_action(self.target.as_ref(), &self.recorder, seq);
                self.recorder.record_dropped(seq as usize, epoch, action);
                continue;
            };
            lateness.saturating_record(micros(intended.elapsed()).max(1));
            issued += 1;
            let (t, r, done) = (self.target.clone(), self.recorder.clone(), done.clone());
            let tap = self.tap.clone();
            let timeout = self.cfg.op_timeout;
            tokio::spawn(async move {
                run_op(t, r, tap, epoch, seq, intended, timeout).await;
                drop(permit);
                done.add_permits(1);
            });
        }
        self.next_seq += ops;
        let pending_end = self.target.pending();
        let drained = await_ops(&done, issued, self.cfg.op_timeout + Duration::from_secs(1)).await;
        let window_s = intended.elapsed().as_secs_f64();
        Ok(Measured {
            mode: Mode::Burst { ops },
            window_s,
            scheduled: ops,
            issued,
            not_issued: 0,
            issue_lateness_us: lateness,
            pending: (pending_start, pending_end),
            drained,
            data: self.recorder.reset(),
        })
    }
}

/// Runs `workers` closed-loop workers against `target` for `duration`, each thinking
/// `think` between operations. Latency is measured from each operation's actual start.
pub async fn closed_loop(
    target: Arc<dyn Target>,
    workers: u64,
    think: Duration,
    duration: Duration,
    op_timeout: Duration,
) -> Result<Measured, GeneratorError> {
    let cfg = ClosedLoopConfig {
        workers,
        think,
        duration,
        op_timeout,
    };
    closed_loop_tapped(target, cfg, None).await
}

/// Settings of a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoopConfig {
    /// Workers, each with one operation at a time.
    pub workers: u64,
    /// Pause of each worker between its operations.
    pub think: Duration,
    /// How long the run lasts.
    pub duration: Duration,
    /// Bound of every operation.
    pub op_timeout: Duration,
}

/// [`closed_loop`] that also records into `tap` (see [`OpenLoop::set_tap`]).
pub async fn closed_loop_tapped(
    target: Arc<dyn Target>,
    cfg: ClosedLoopConfig,
    tap: Option<Arc<Recorder>>,
) -> Result<Measured, GeneratorError> {
    let ClosedLoopConfig {
        workers,
        think,
        duration,
        op_timeout,
    } = cfg;
    Shape::ClosedLoop {
        workers,
        think,
        duration,
    }
    .validate()?;
    let recorder = recorder_for(target.as_ref())?;
    let pending_start = target.pending();
    let start = Instant::now();
    let end = start + duration;
    let epoch = recorder.epoch();
    let mut handles = Vec::with_capacity(workers as usize);
    for w in 0..workers {
        let (t, r, tap) = (target.clone(), recorder.clone(), tap.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            // Bounded by the deadline: every iteration takes at least until its operation
            // ends or times out, and no iteration starts after `end`.
            while Instant::now() < end {
                let seq = w + n * workers;
                let began = Instant::now();
                run_op(
                    t.clone(),
                    r.clone(),
                    tap.clone(),
                    epoch,
                    seq,
                    began,
                    op_timeout,
                )
                .await;
                n += 1;
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            n
        }));
    }
    let mut issued = 0;
    for h in handles {
        issued += h.await.unwrap_or(0);
    }
    let window_s = start.elapsed().as_secs_f64();
    let pending_end = target.pending();
    let data = recorder.reset();
    Ok(Measured {
        mode: Mode::ClosedLoop { workers },
        window_s,
        scheduled: issued,
        issued,
        not_issued: 0,
        issue_lateness_us: lateness_histogram(),
        pending: (pending_start, pending_end),
        drained: true,
        data,
    })
}
