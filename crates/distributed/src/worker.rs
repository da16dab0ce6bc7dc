//! A worker: joins a coordinator's run through NATS, opens the target, runs its share of
//! each step open-loop on the instant it is given, and reports what it recorded.
//!
//! Lifecycle, every wait bounded:
//!
//! 1. Connect to NATS (within [`CONNECT_BOUND`]); subscribe to a control subject of its own.
//! 2. Ask to join on `herdlab.dist.GROUP.join` every [`JOIN_RETRY`] until accepted, refused,
//!    or `idle_timeout` passes with no coordinator ([`WorkerError::NoCoordinator`]). A
//!    coordinator whose run is full says so and the worker keeps asking (for the next run);
//!    one of another protocol version refuses it ([`WorkerError::Rejected`], naming both).
//! 3. Answer commands in order until `End`, or until no command came for
//!    [`COMMAND_IDLE_BOUND`] (the coordinator is gone: the worker leaves the run).
//! 4. Join again, until `runs` runs are done.
//!
//! A step arrives with its start in this worker's clock (the coordinator measured the
//! offset at join). The worker arms it at once; if the start is already past, it still
//! runs the step from its intended start (so the lateness shows) and reports how late it
//! was armed, which makes the step INCONCLUSIVE at the coordinator. A step asking for more
//! than `--max-rate` is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use collector::generator::{recorder_for, GeneratorConfig, OpenLoop};
use collector::hlog::{HlogError, IntervalSink, IntervalTap};
use collector::recorder::{histogram_to_base64, StepData};
use collector::schedule::Pacing;
use collector::shape::StepTiming;
use futures::StreamExt;

use crate::protocol::{
    check_name, control_subject, decode, encode, join_subject, Command, CommandReply, Join,
    JoinReply, Setup, StepPlan, StepReport, WireInterval, PROTOCOL_VERSION,
};

/// Longest a connection to NATS may take.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// Pause between join requests while no coordinator answers.
pub const JOIN_RETRY: Duration = Duration::from_millis(250);
/// Longest a join request waits for its answer.
pub const JOIN_REPLY_BOUND: Duration = Duration::from_secs(2);
/// A worker in a run leaves it when no command came for this long.
pub const COMMAND_IDLE_BOUND: Duration = Duration::from_secs(120);
/// The most intervals a step's interval log holds.
pub const MAX_INTERVALS: usize = 3600;
/// The longest spin before an intended time a setup may ask for, µs.
pub const MAX_SPIN_US: u64 = 100_000;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS URL.
    pub nats_url: String,
    /// The group to join.
    pub group: String,
    /// The worker's name.
    pub name: String,
    /// The most operations per second it sends, if capped.
    pub max_rate: Option<u64>,
    /// Give up when no coordinator took it for this long.
    pub idle_timeout: Duration,
    /// Stop after this many runs (`None`: until stopped or idle).
    pub runs: Option<u32>,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// NATS could not be reached.
    #[error("connecting to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No coordinator took the worker in time.
    #[error("no coordinator on {subject} took this worker within {waited:?}")]
    NoCoordinator {
        /// The join subject.
        subject: String,
        /// How long it asked.
        waited: Duration,
    },
    /// The coordinator refused the worker.
    #[error("the coordinator refused this worker: {0}")]
    Rejected(String),
    /// NATS failed mid-run.
    #[error("NATS: {0}")]
    Nats(String),
}

/// What a worker did, when it stops cleanly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    /// Runs it took part in.
    pub runs: u32,
    /// Steps it ran.
    pub steps: u32,
}

/// Runs a worker until `cfg.runs` runs are done or no coordinator takes it within
/// `cfg.idle_timeout`. `log` gets one line per event (joined, step, left).
pub async fn run(cfg: &WorkerConfig, log: impl Fn(&str)) -> Result<WorkerSummary, WorkerError> {
    check_name("group", &cfg.group).map_err(|e| WorkerError::Config(e.to_string()))?;
    check_name("worker name", &cfg.name).map_err(|e| WorkerError::Config(e.to_string()))?;
    if cfg.max_rate == Some(0) {
        return Err(WorkerError::Config(
            "invalid --max-rate 0: expected at least 1 operation per second".into(),
        ));
    }
    let client = connect(&cfg.nats_url)
        .await
        .map_err(|reason| WorkerError::Connect {
            url: cfg.nats_url.clone(),
            reason,
        })?;
    let mut summary = WorkerSummary::default();
    while cfg.runs.is_none_or(|n| summary.runs < n) {
        let control = control_subject(&cfg.group, &cfg.name);
        let mut sub = client
            .subscribe(control.clone())
            .await
            .map_err(|e| WorkerError::Nats(e.to_string()))?;
        let (run_id, index) = join(&client, cfg, &control).await?;
        log(&format!(
            "worker {}: joined run {run_id} as worker {index}",
            cfg.name
        ));
        let mut session = Session::new(cfg.max_rate);
        let why = session.serve(&client, &mut sub, &log).await;
        let _ = sub.unsubscribe().await;
        summary.runs += 1;
        summary.steps += session.steps;
        log(&format!(
            "worker {}: left run {run_id} after {} steps: {why}",
            cfg.name, session.steps
        ));
    }
    Ok(summary)
}

/// A NATS connection to `url` within [`CONNECT_BOUND`] (workers and the coordinator).
pub async fn connect(url: &str) -> Result<async_nats::Client, String> {
    match tokio::time::timeout(CONNECT_BOUND, async_nats::connect(url)).await {
        Err(_) => Err(format!("no connection within {CONNECT_BOUND:?}")),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// Asks to join until accepted, refused or idle (see the module doc).
async fn join(
    client: &async_nats::Client,
    cfg: &WorkerConfig,
    control: &str,
) -> Result<(String, u32), WorkerError> {
    let subject = join_subject(&cfg.group);
    let hello = Join {
        protocol: PROTOCOL_VERSION,
        name: cfg.name.clone(),
        max_rate: cfg.max_rate,
        control: control.to_string(),
        host: host_name(),
        pid: std::process::id(),
    };
    let payload = encode("join", &hello).map_err(|e| WorkerError::Config(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + cfg.idle_timeout;
    loop {
        let asked = tokio::time::timeout(
            JOIN_REPLY_BOUND,
            client.request(subject.clone(), payload.clone().into()),
        )
        .await;
        if let Ok(Ok(msg)) = asked {
            match decode::<JoinReply>("join reply", &msg.payload) {
                Ok(JoinReply::Accepted { run, index }) => return Ok((run, index)),
                Ok(JoinReply::Rejected { reason }) => return Err(WorkerError::Rejected(reason)),
                Ok(JoinReply::Full) => {}
                Err(e) => return Err(WorkerError::Rejected(e.to_string())),
            }
        }
        // No responders, a timeout, or a full run: ask again, within the idle bound.
        if tokio::time::Instant::now() + JOIN_RETRY >= deadline {
            return Err(WorkerError::NoCoordinator {
                subject,
                waited: cfg.idle_timeout,
            });
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

/// This machine's host name (`unknown` if it cannot be read), for joins and default names.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Now, ns since the Unix epoch (0 before it, which no clock here reads).
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One run, from this worker's side.
struct Session {
    max_rate: Option<u64>,
    generator: Option<OpenLoop>,
    setup: Option<Setup>,
    steps: u32,
}

impl Session {
    fn new(max_rate: Option<u64>) -> Session {
        Session {
            max_rate,
            generator: None,
            setup: None,
            steps: 0,
        }
    }

    /// Answers commands until `End` or the idle bound; returns why it stopped.
    async fn serve(
        &mut self,
        client: &async_nats::Client,
        sub: &mut async_nats::Subscriber,
        log: &impl Fn(&str),
    ) -> String {
        loop {
            let msg = match tokio::time::timeout(COMMAND_IDLE_BOUND, sub.next()).await {
                Err(_) => return format!("no command for {COMMAND_IDLE_BOUND:?}"),
                Ok(None) => return "the subscription ended".into(),
                Ok(Some(m)) => m,
            };
            let Some(reply_to) = msg.reply.clone() else {
                continue;
            };
            let (reply, end) = match decode::<Command>("command", &msg.payload) {
                Err(e) => (
                    CommandReply::Error {
                        message: e.to_string(),
                    },
                    None,
                ),
                Ok(Command::End { reason }) => (CommandReply::Ended, Some(reason)),
                Ok(cmd) => (self.handle(cmd, log).await, None),
            };
            let bytes = encode("command reply", &reply).or_else(|e| {
                encode(
                    "command reply",
                    &CommandReply::Error {
                        message: e.to_string(),
                    },
                )
            });
            let max = client.server_info().max_payload;
            let bytes = match bytes {
                Ok(b) if max > 0 && b.len() > max => encode(
                    "command reply",
                    &CommandReply::Error {
                        message: format!(
                            "the reply is {} bytes, over the NATS server's max_payload of {max}: \
                             use fewer actions, a smaller raw log or no interval log",
                            b.len()
                        ),
                    },
                ),
                other => other,
            };
            if let Ok(bytes) = bytes {
                let _ = client.publish(reply_to, bytes.into()).await;
                let _ = client.flush().await;
            }
            if let Some(reason) = end {
                return format!("the coordinator ended it ({reason})");
            }
        }
    }

    async fn handle(&mut self, cmd: Command, log: &impl Fn(&str)) -> CommandReply {
        match cmd {
            Command::Probe => CommandReply::Probe {
                unix_ns: unix_now_ns(),
            },
            Command::Setup(setup) => match self.set_up(*setup).await {
                Ok(reply) => reply,
                Err(message) => CommandReply::Error { message },
            },
            Command::Step(plan) => match self.step(&plan).await {
                Ok(report) => {
                    self.steps += 1;
                    log(&format!(
                        "  step {}: {}/s, issued {}",
                        plan.step, plan.rate, report.issued
                    ));
                    CommandReply::Step(Box::new(report))
                }
                Err(message) => CommandReply::Error { message },
            },
            Command::End { .. } => CommandReply::Ended,
        }
    }

    async fn set_up(&mut self, setup: Setup) -> Result<CommandReply, String> {
        let target = targets::from_spec(&setup.target, &setup.options)
            .await
            .map_err(|e| e.to_string())?;
        let cfg = GeneratorConfig {
            max_in_flight: setup.max_in_flight.max(1),
            op_timeout: Duration::from_millis(setup.op_timeout_ms.max(1)),
            late_slack: Duration::from_micros(setup.late_slack_us),
            pacing: match setup.spin_below_us {
                None => Pacing::TimerOnly,
                Some(us) => Pacing::Hybrid {
                    spin_below: Duration::from_micros(us.min(MAX_SPIN_US)),
                },
            },
        };
        let mut generator = OpenLoop::new(target.clone(), cfg).map_err(|e| e.to_string())?;
        generator.set_next_seq(setup.seq_base);
        if setup.raw_log_cap > 0 {
            generator
                .keep_raw_log(setup.raw_log_cap)
                .map_err(|e| e.to_string())?;
        }
        let reply = CommandReply::Ready {
            actions: target.actions(),
            describe: target.describe(),
        };
        self.generator = Some(generator);
        self.setup = Some(setup);
        Ok(reply)
    }

    async fn step(&mut self, plan: &StepPlan) -> Result<StepReport, String> {
        let (Some(generator), Some(setup)) = (self.generator.as_mut(), self.setup.as_ref()) else {
            return Err("a step before setup: expected a setup command first".into());
        };
        if let Some(cap) = self.max_rate {
            if plan.rate > cap {
                return Err(format!(
                    "step {} asks for {}/s, over this worker's --max-rate {cap}/s",
                    plan.step, plan.rate
                ));
            }
        }
        let timing = StepTiming::new(
            Duration::from_millis(plan.warmup_ms),
            Duration::from_millis(plan.hold_ms),
            Duration::from_millis(plan.cooldown_ms),
        )
        .map_err(|e| e.to_string())?;
        let early_ns = plan.start_unix_ns as i128 - unix_now_ns() as i128;
        let now = tokio::time::Instant::now();
        let start = if early_ns >= 0 {
            now + Duration::from_nanos(early_ns as u64)
        } else {
            now.checked_sub(Duration::from_nanos(early_ns.unsigned_abs() as u64))
                .unwrap_or(now)
        };
        let intervals = match setup.interval_ms {
            0 => None,
            ms => {
                let tap = recorder_for(generator.target().as_ref()).map_err(|e| e.to_string())?;
                let every = Duration::from_millis(ms);
                let t = IntervalTap::start(tap, WireIntervals(Vec::new()), every, start)
                    .map_err(|e| e.to_string())?;
                generator.set_tap(Some(t.recorder()));
                Some(t)
            }
        };
        let m = generator
            .step_at(start, plan.rate, timing)
            .await
            .map_err(|e| e.to_string())?;
        generator.set_tap(None);
        let intervals = match intervals {
            Some(t) => t.stop().await.map_err(|e| e.to_string())?.0,
            None => Vec::new(),
        };
        let data = m.data.to_bytes().map_err(|e| e.to_string())?;
        Ok(StepReport {
            step: plan.step,
            rate: plan.rate,
            armed_early_us: (early_ns / 1000).clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            scheduled: m.scheduled,
            issued: m.issued,
            not_issued: m.not_issued,
            drained: m.drained,
            window_s: m.window_s,
            lateness: histogram_to_base64(&m.issue_lateness_us).map_err(|e| e.to_string())?,
            data: String::from_utf8(data).map_err(|e| e.to_string())?,
            intervals,
        })
    }
}

/// A step's intervals as the reply carries them: the tap's grid is anchored at the step's
/// intended start, so interval *k* of every worker covers the same span. At most
/// [`MAX_INTERVALS`]; one more is an error that says so.
struct WireIntervals(Vec<WireInterval>);

impl IntervalSink for WireIntervals {
    fn interval(
        &mut self,
        offset: Duration,
        length: Duration,
        data: &StepData,
    ) -> Result<(), HlogError> {
        if self.0.len() >= MAX_INTERVALS {
            return Err(HlogError::Sink(format!(
                "a step holds more than {MAX_INTERVALS} intervals: use a longer interval or no interval log"
            )));
        }
        let bytes = data
            .to_bytes()
            .map_err(|e| HlogError::Sink(e.to_string()))?;
        self.0.push(WireInterval {
            offset_ms: offset.as_millis().min(i64::MAX as u128) as i64,
            length_ms: length.as_millis() as u64,
            data: String::from_utf8(bytes).map_err(|e| HlogError::Sink(e.to_string()))?,
        });
        Ok(())
    }
}
