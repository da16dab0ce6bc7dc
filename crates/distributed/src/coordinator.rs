//! The coordinator: gathers N workers, measures their clocks, sets them up on one target,
//! and runs each step over all of them on one start instant, merging what they report
//! before the verdict ([`crate::judge`]).
//!
//! Bounds: the join wait (`join_wait`), [`PROBES`] clock probes of at most
//! [`PROBE_BOUND`] each, a setup of at most [`SETUP_BOUND`], and each step's replies within
//! warmup + hold + cooldown + the operation timeout + [`STEP_SLACK`] after its start. A
//! worker that does not answer a step in time is *gone*: that step is INCONCLUSIVE, and the
//! worker is dropped from the rest of the run with the reason; the run stops when every
//! worker is gone.
//!
//! The start lead of a step is [`MIN_LEAD`] or four times the slowest probe round trip,
//! whichever is longer (at most [`MAX_LEAD`]): far enough ahead that every worker has the
//! plan before its first operation is due.

use std::time::Duration;

use collector::finder::{FinderConfig, FinderReport, Search, StepRow};
use collector::generator::GeneratorConfig;
use collector::schedule::Pacing;
use collector::shape::StepTiming;
use collector::slo::Slo;
use futures::StreamExt;
use targets::TargetOptions;

use crate::clock::{estimate, Offset, Probe};
use crate::judge::{judge_step, JudgedStep, Outcome, WorkerStep};
use crate::protocol::{
    check_name, decode, encode, join_subject, Command, CommandReply, Join, JoinReply, Setup,
    StepPlan, StepReport, PROTOCOL_VERSION,
};
use crate::split::{split_rate, split_spec};
use crate::worker::{connect, unix_now_ns};

/// Clock probes per worker at join.
pub const PROBES: usize = 8;
/// Longest one probe may take.
pub const PROBE_BOUND: Duration = Duration::from_secs(2);
/// Longest a worker may take to open the target.
pub const SETUP_BOUND: Duration = Duration::from_secs(15);
/// Time a step's replies may take beyond the step itself and the operation timeout.
pub const STEP_SLACK: Duration = Duration::from_secs(5);
/// The shortest start lead.
pub const MIN_LEAD: Duration = Duration::from_millis(40);
/// The longest start lead.
pub const MAX_LEAD: Duration = Duration::from_secs(2);
/// Seq ranges of workers: worker `i` starts at `i << SEQ_SHIFT`.
pub const SEQ_SHIFT: u32 = 40;

/// Settings of a distributed run.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// NATS URL.
    pub nats_url: String,
    /// The group workers join.
    pub group: String,
    /// How many workers the run needs.
    pub workers: usize,
    /// Longest to wait for them.
    pub join_wait: Duration,
    /// The target spec, as the user gave it (split for in-process targets).
    pub target: String,
    /// Its options.
    pub options: TargetOptions,
    /// Each worker's generator settings.
    pub generator: GeneratorConfig,
    /// Raw latency log per shard and action (0: none); for the merge check.
    pub raw_log_cap: usize,
    /// Interval length of the interval log (`None`: no interval log).
    pub interval: Option<Duration>,
}

/// Why a distributed run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// NATS could not be reached or failed.
    #[error("NATS at {url}: {reason}")]
    Nats {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Too few workers joined.
    #[error("{joined} of {wanted} workers joined {subject} within {waited:?}{detail}")]
    TooFewWorkers {
        /// Joined.
        joined: usize,
        /// Needed.
        wanted: usize,
        /// The join subject.
        subject: String,
        /// How long it waited.
        waited: Duration,
        /// Who joined, who was refused.
        detail: String,
    },
    /// A worker failed before the first step (clock probe or setup).
    #[error("worker {name}: {reason}")]
    Worker {
        /// The worker.
        name: String,
        /// Why.
        reason: String,
    },
    /// Every worker is gone.
    #[error("every worker is gone: {0}")]
    AllGone(String),
}

/// A worker in the run.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Its name.
    pub name: String,
    /// Its host and process id.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its cap, operations per second.
    pub max_rate: Option<u64>,
    /// Its clock offset.
    pub offset: Offset,
    /// Why it was dropped from the run, if it was.
    pub dropped: Option<String>,
    control: String,
}

/// One distributed step.
#[derive(Debug)]
pub struct DistStep {
    /// The step's number.
    pub step: u32,
    /// The rate.
    pub rate: u64,
    /// Merged and judged.
    pub judged: JudgedStep,
    /// From the step's call to its intended start, ms: the coordination before the load
    /// (the split, the plans, and the start lead that lets every worker arm in time).
    pub setup_ms: f64,
    /// From the last reply to the verdict, ms (the merge).
    pub merge_ms: f64,
    /// The step's intended start, coordinator clock, ns since the epoch.
    pub start_unix_ns: u64,
    /// Each worker's report, in worker order (`None` if it was gone).
    pub reports: Vec<Option<StepReport>>,
}

/// A distributed run in progress.
pub struct Coordinator {
    client: async_nats::Client,
    run: String,
    workers: Vec<WorkerInfo>,
    actions: Vec<String>,
    describe: String,
    spec: String,
    op_timeout: Duration,
    next_step: u32,
}

impl Coordinator {
    /// Connects, gathers `cfg.workers` workers, probes their clocks and sets each up on the
    /// target. Every failure names what and who.
    pub async fn start(
        cfg: &CoordinatorConfig,
        log: impl Fn(&str),
    ) -> Result<Coordinator, CoordinatorError> {
        check_name("group", &cfg.group).map_err(|e| CoordinatorError::Config(e.to_string()))?;
        if cfg.workers == 0 || cfg.workers > 1024 {
            return Err(CoordinatorError::Config(format!(
                "invalid --workers {}: expected 1 to 1024",
                cfg.workers
            )));
        }
        let spec = split_spec(&cfg.target, cfg.workers).map_err(CoordinatorError::Config)?;
        let client = connect(&cfg.nats_url)
            .await
            .map_err(|reason| CoordinatorError::Nats {
                url: cfg.nats_url.clone(),
                reason,
            })?;
        let run = format!("{:08x}", fastrand::u32(..));
        let joined = gather(&client, cfg, &run, &log).await?;
        let mut workers = Vec::with_capacity(joined.len());
        for j in joined {
            let offset = probe(&client, &j).await?;
            log(&format!(
                "  worker {} ({} pid {}): clock offset {:+.3} ms (±{:.3})",
                j.name,
                j.host,
                j.pid,
                offset.offset_ns as f64 / 1e6,
                offset.rtt_ns as f64 / 2e6
            ));
            workers.push(WorkerInfo {
                name: j.name,
                host: j.host,
                pid: j.pid,
                max_rate: j.max_rate,
                offset,
                dropped: None,
                control: j.control,
            });
        }
        let mut c = Coordinator {
            client,
            run,
            workers,
            actions: Vec::new(),
            describe: String::new(),
            spec: cfg.target.clone(),
            op_timeout: cfg.generator.op_timeout,
            next_step: 0,
        };
        c.set_up(cfg, &spec).await?;
        Ok(c)
    }

    /// The workers, dropped ones included.
    pub fn workers(&self) -> &[WorkerInfo] {
        &self.workers
    }

    /// The target's actions (as the first worker reported them).
    pub fn actions(&self) -> &[String] {
        &self.actions
    }

    /// The target as the run describes it: the spec, the workers, and what each worker
    /// opened when that differs (an in-process target split as one system).
    pub fn describe(&self) -> String {
        let n = self.workers.len();
        if self.describe == self.spec {
            format!("{} over {n} workers", self.spec)
        } else {
            format!("{} over {n} workers (each {})", self.spec, self.describe)
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    async fn set_up(
        &mut self,
        cfg: &CoordinatorConfig,
        spec: &str,
    ) -> Result<(), CoordinatorError> {
        let sets = self.workers.iter().enumerate().map(|(i, w)| {
            let setup = Setup {
                target: spec.to_string(),
                options: cfg.options.clone(),
                op_timeout_ms: cfg.generator.op_timeout.as_millis() as u64,
                max_in_flight: cfg.generator.max_in_flight,
                late_slack_us: cfg.generator.late_slack.as_micros() as u64,
                spin_below_us: match cfg.generator.pacing {
                    Pacing::TimerOnly => None,
                    Pacing::Hybrid { spin_below } => Some(spin_below.as_micros() as u64),
                },
                seq_base: (i as u64) << SEQ_SHIFT,
                raw_log_cap: cfg.raw_log_cap,
                interval_ms: cfg.interval.map_or(0, |d| d.as_millis() as u64),
            };
            command(
                &self.client,
                &w.control,
                Command::Setup(Box::new(setup)),
                SETUP_BOUND,
            )
        });
        let replies = futures::future::join_all(sets).await;
        for (w, reply) in self.workers.iter().zip(replies) {
            match reply {
                Ok(CommandReply::Ready { actions, describe }) => {
                    if self.actions.is_empty() {
                        self.actions = actions;
                        self.describe = describe;
                    } else if self.actions != actions {
                        return Err(worker_err(
                            w,
                            format!(
                                "its target has actions {actions:?}, another worker's {:?}",
                                self.actions
                            ),
                        ));
                    }
                }
                Ok(CommandReply::Error { message }) => return Err(worker_err(w, message)),
                Ok(other) => return Err(worker_err(w, format!("setup answered {other:?}"))),
                Err(e) => return Err(worker_err(w, format!("setup: {e}"))),
            }
        }
        Ok(())
    }

    /// Runs one step at `rate` over the workers still in the run and judges it.
    pub async fn step(
        &mut self,
        rate: u64,
        timing: StepTiming,
        slo: &Slo,
    ) -> Result<DistStep, CoordinatorError> {
        let called_unix_ns = unix_now_ns();
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].dropped.is_none())
            .collect();
        if live.is_empty() {
            return Err(CoordinatorError::AllGone(self.gone_reasons()));
        }
        let caps: Vec<Option<u64>> = live.iter().map(|&i| self.workers[i].max_rate).collect();
        let (shares, shortfall) = split_rate(rate, &caps);
        let lead = self.lead();
        let start = unix_now_ns().saturating_add(lead.as_nanos() as u64);
        let step_no = self.next_step;
        self.next_step += 1;
        let bound =
            lead + timing.warmup + timing.hold + timing.cooldown + self.op_timeout + STEP_SLACK;
        let sends = live.iter().zip(&shares).map(|(&i, &share)| {
            let w = &self.workers[i];
            let plan = StepPlan {
                step: step_no,
                rate: share,
                warmup_ms: timing.warmup.as_millis() as u64,
                hold_ms: timing.hold.as_millis() as u64,
                cooldown_ms: timing.cooldown.as_millis() as u64,
                start_unix_ns: w.offset.to_worker(start),
            };
            command(&self.client, &w.control, Command::Step(plan), bound)
        });
        let replies = futures::future::join_all(sends).await;
        let replied = std::time::Instant::now();
        let mut steps = Vec::with_capacity(live.len());
        let mut reports = vec![None; self.workers.len()];
        for ((&i, &share), reply) in live.iter().zip(&shares).zip(replies) {
            let outcome = match reply {
                Ok(CommandReply::Step(r)) if r.step == step_no => {
                    reports[i] = Some((*r).clone());
                    Outcome::Reported(r)
                }
                Ok(CommandReply::Step(r)) => {
                    Outcome::Gone(format!("it answered step {} to step {step_no}", r.step))
                }
                Ok(CommandReply::Error { message }) => Outcome::Gone(message),
                Ok(other) => Outcome::Gone(format!("it answered {other:?}")),
                Err(e) => Outcome::Gone(e),
            };
            if let Outcome::Gone(why) = &outcome {
                self.workers[i].dropped = Some(format!("step {step_no}: {why}"));
            }
            steps.push(WorkerStep {
                name: self.workers[i].name.clone(),
                share,
                outcome,
            });
        }
        let judged = judge_step(rate, shortfall, timing.hold, &steps, slo);
        Ok(DistStep {
            step: step_no,
            rate,
            judged,
            setup_ms: start.saturating_sub(called_unix_ns) as f64 / 1e6,
            merge_ms: replied.elapsed().as_secs_f64() * 1e3,
            start_unix_ns: start,
            reports,
        })
    }

    fn lead(&self) -> Duration {
        let worst = self
            .workers
            .iter()
            .map(|w| w.offset.rtt_ns)
            .max()
            .unwrap_or(0);
        (Duration::from_nanos(worst) * 4).clamp(MIN_LEAD, MAX_LEAD)
    }

    fn gone_reasons(&self) -> String {
        self.workers
            .iter()
            .filter_map(|w| w.dropped.as_ref().map(|d| format!("{}: {d}", w.name)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Tells every worker still in the run that it is over (bounded), and closes.
    pub async fn end(self, reason: &str) {
        let ends = self
            .workers
            .iter()
            .filter(|w| w.dropped.is_none())
            .map(|w| {
                command(
                    &self.client,
                    &w.control,
                    Command::End {
                        reason: reason.to_string(),
                    },
                    PROBE_BOUND,
                )
            });
        let _ = futures::future::join_all(ends).await;
        let _ = self.client.flush().await;
    }
}

fn worker_err(w: &WorkerInfo, reason: String) -> CoordinatorError {
    CoordinatorError::Worker {
        name: w.name.clone(),
        reason,
    }
}

/// One command and its reply, within `bound`; the error says what happened.
async fn command(
    client: &async_nats::Client,
    control: &str,
    cmd: Command,
    bound: Duration,
) -> Result<CommandReply, String> {
    let payload = encode("command", &cmd).map_err(|e| e.to_string())?;
    let req = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(bound));
    match tokio::time::timeout(
        bound + Duration::from_secs(1),
        client.send_request(control.to_string(), req),
    )
    .await
    {
        Err(_) => Err(format!("no reply within {bound:?}")),
        Ok(Err(e)) => Err(match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                "no responder on its control subject (the worker is gone)".to_string()
            }
            async_nats::RequestErrorKind::TimedOut => format!("no reply within {bound:?}"),
            _ => e.to_string(),
        }),
        Ok(Ok(msg)) => {
            decode::<CommandReply>("command reply", &msg.payload).map_err(|e| e.to_string())
        }
    }
}

/// Clock probes of one worker, then the estimate.
async fn probe(client: &async_nats::Client, j: &Join) -> Result<Offset, CoordinatorError> {
    let mut probes = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let sent = unix_now_ns();
        let reply = command(client, &j.control, Command::Probe, PROBE_BOUND).await;
        let received = unix_now_ns();
        match reply {
            Ok(CommandReply::Probe { unix_ns }) => probes.push(Probe {
                sent,
                worker: unix_ns,
                received,
            }),
            Ok(other) => {
                return Err(CoordinatorError::Worker {
                    name: j.name.clone(),
                    reason: format!("a clock probe answered {other:?}"),
                })
            }
            Err(e) => {
                return Err(CoordinatorError::Worker {
                    name: j.name.clone(),
                    reason: format!("clock probe: {e}"),
                })
            }
        }
    }
    estimate(&probes).ok_or_else(|| CoordinatorError::Worker {
        name: j.name.clone(),
        reason: "no clock probe with a forward round trip (the coordinator's clock stepped back)"
            .into(),
    })
}

/// Waits for `cfg.workers` joins within `cfg.join_wait`; refuses another protocol version
/// and a name already taken, tells late comers the run is full.
async fn gather(
    client: &async_nats::Client,
    cfg: &CoordinatorConfig,
    run: &str,
    log: &impl Fn(&str),
) -> Result<Vec<Join>, CoordinatorError> {
    let subject = join_subject(&cfg.group);
    let mut sub = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| CoordinatorError::Nats {
            url: cfg.nats_url.clone(),
            reason: e.to_string(),
        })?;
    log(&format!(
        "waiting up to {:?} for {} workers on {subject} (run {run})",
        cfg.join_wait, cfg.workers
    ));
    let deadline = tokio::time::Instant::now() + cfg.join_wait;
    let mut joined: Vec<Join> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    while joined.len() < cfg.workers {
        let msg = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let answer = match decode::<Join>("join", &msg.payload) {
            Err(e) => JoinReply::Rejected {
                reason: e.to_string(),
            },
            Ok(j) => {
                let answer = admit(&joined, &j, run, &mut refused, log);
                if let JoinReply::Accepted { .. } = answer {
                    joined.push(j);
                }
                answer
            }
        };
        if let Ok(bytes) = encode("join reply", &answer) {
            let _ = client.publish(reply_to, bytes.into()).await;
        }
    }
    let _ = sub.unsubscribe().await;
    let _ = client.flush().await;
    if joined.len() < cfg.workers {
        let mut detail = String::new();
        if !joined.is_empty() {
            let names: Vec<&str> = joined.iter().map(|j| j.name.as_str()).collect();
            detail.push_str(&format!(" (joined: {})", names.join(", ")));
        }
        if !refused.is_empty() {
            detail.push_str(&format!("; refused: {}", refused.join("; ")));
        }
        if joined.is_empty() && refused.is_empty() {
            detail.push_str(": start them with `stress worker --nats URL` (same --group)");
        }
        return Err(CoordinatorError::TooFewWorkers {
            joined: joined.len(),
            wanted: cfg.workers,
            subject,
            waited: cfg.join_wait,
            detail,
        });
    }
    Ok(joined)
}

/// The answer to one join (pure): refuses another protocol version or a taken name.
fn admit(
    joined: &[Join],
    j: &Join,
    run: &str,
    refused: &mut Vec<String>,
    log: &impl Fn(&str),
) -> JoinReply {
    if j.protocol != PROTOCOL_VERSION {
        let reason = format!(
            "worker {} speaks protocol {}, this coordinator {PROTOCOL_VERSION}: run the same herdlab version on both",
            j.name, j.protocol
        );
        log(&format!("  refused: {reason}"));
        refused.push(reason.clone());
        return JoinReply::Rejected { reason };
    }
    if joined.iter().any(|o| o.name == j.name) {
        let reason = format!(
            "worker name {:?} is taken in run {run}: give each worker its own --name",
            j.name
        );
        log(&format!("  refused: {reason}"));
        refused.push(reason.clone());
        return JoinReply::Rejected { reason };
    }
    log(&format!(
        "  joined: {} ({} pid {}{})",
        j.name,
        j.host,
        j.pid,
        j.max_rate
            .map(|r| format!(", max {r}/s"))
            .unwrap_or_default()
    ));
    JoinReply::Accepted {
        run: run.to_string(),
        index: joined.len() as u32,
    }
}

/// The max-RPS finder over a distributed run: the same search as
/// [`collector::finder::find`], each step run by [`Coordinator::step`]. `on_step` sees each
/// row and the step's worker lines as soon as it is judged.
pub async fn find(
    coord: &mut Coordinator,
    cfg: &FinderConfig,
    mut on_step: impl FnMut(&StepRow, &DistStep),
) -> Result<(FinderReport, Vec<DistStep>), CoordinatorError> {
    cfg.validate()
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    cfg.slo
        .check_actions(coord.actions())
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let mut search = Search::new(cfg);
    let mut rows = Vec::new();
    let mut steps = Vec::new();
    // Bounded as the single-generator finder: every ramp step, the refine budget, one confirm.
    while let Some((phase, rate)) = search.next_step() {
        let step = coord.step(rate, cfg.timing, &cfg.slo).await?;
        search.observe(&step.judged.verdict);
        let row = StepRow::from_measured(
            phase,
            rate,
            &step.judged.measured,
            step.judged.verdict.clone(),
        );
        on_step(&row, &step);
        rows.push(row);
        steps.push(step);
    }
    Ok((
        FinderReport {
            rows,
            answer: search.answer(),
            target: coord.describe(),
            precision_pct: cfg.precision_pct,
        },
        steps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(name: &str, protocol: u32) -> Join {
        Join {
            protocol,
            name: name.into(),
            max_rate: None,
            control: format!("c.{name}"),
            host: "h".into(),
            pid: 1,
        }
    }

    #[test]
    fn admission_refuses_another_version_and_a_taken_name() {
        let mut refused = Vec::new();
        let quiet = |_: &str| {};
        let a = admit(
            &[],
            &join("a", PROTOCOL_VERSION),
            "r1",
            &mut refused,
            &quiet,
        );
        assert_eq!(
            a,
            JoinReply::Accepted {
                run: "r1".into(),
                index: 0
            }
        );
        let joined = [join("a", PROTOCOL_VERSION)];
        let JoinReply::Rejected { reason } = admit(
            &joined,
            &join("b", PROTOCOL_VERSION + 1),
            "r1",
            &mut refused,
            &quiet,
        ) else {
            panic!("another version must be refused")
        };
        assert!(
            reason.contains("speaks protocol 2, this coordinator 1"),
            "{reason}"
        );
        let JoinReply::Rejected { reason } = admit(
            &joined,
            &join("a", PROTOCOL_VERSION),
            "r1",
            &mut refused,
            &quiet,
        ) else {
            panic!("a taken name must be refused")
        };
        assert!(reason.contains("taken"), "{reason}");
        assert_eq!(refused.len(), 2);
        assert_eq!(
            admit(
                &joined,
                &join("b", PROTOCOL_VERSION),
                "r1",
                &mut refused,
                &quiet
            ),
            JoinReply::Accepted {
                run: "r1".into(),
                index: 1
            }
        );
    }
}
