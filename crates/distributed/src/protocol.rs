//! The wire protocol between a coordinator and its workers: JSON messages over NATS
//! request-reply, every one versioned, size-bounded and decoded with an error that names
//! what is wrong.
//!
//! Subjects, for a group `G` (`default` unless told otherwise, so several runs can share
//! one NATS cluster):
//!
//! | subject | from → to | request | reply |
//! |---|---|---|---|
//! | `herdlab.dist.G.join` | worker → coordinator | [`Join`] | [`JoinReply`] |
//! | the worker's control subject (in its [`Join`]) | coordinator → worker | [`Command`] | [`CommandReply`] |
//!
//! A worker subscribes to its control subject *before* it asks to join, so the coordinator
//! can talk to it as soon as it accepts it. Commands are answered one at a time, in order:
//! `Probe` (clock offset), `Setup` (open the target), `Step` (answered when the step has
//! run), `End`.

use serde::{Deserialize, Serialize};
use targets::TargetOptions;

/// The protocol version this code speaks. A worker of another version is refused at join,
/// with both versions named.
pub const PROTOCOL_VERSION: u32 = 1;
/// The group when none is given.
pub const DEFAULT_GROUP: &str = "default";
/// The largest message either side accepts, bytes (NATS's default `max_payload` is 1 MiB;
/// a step report is checked against the server's own limit before it is sent).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// The longest worker name.
pub const MAX_NAME_BYTES: usize = 64;

/// Why a message could not be read, or a name is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("{what}: {len} bytes, over the {max} a message may have")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message is not what was expected.
    #[error("{what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong (with the JSON path, if any).
        reason: String,
    },
    /// A group or worker name has characters a NATS subject token may not hold.
    #[error(
        "invalid {what} {value:?}: expected 1 to {MAX_NAME_BYTES} letters, digits, '-' or '_'"
    )]
    Name {
        /// `group` or `worker name`.
        what: &'static str,
        /// The value given.
        value: String,
    },
}

/// The subject workers of `group` join on.
pub fn join_subject(group: &str) -> String {
    format!("herdlab.dist.{group}.join")
}

/// A worker's control subject: unique per process and join.
pub fn control_subject(group: &str, name: &str) -> String {
    format!(
        "herdlab.dist.{group}.w.{name}.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// Checks a group or worker name: a single NATS subject token.
pub fn check_name(what: &'static str, value: &str) -> Result<(), ProtocolError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::Name {
            what,
            value: value.to_string(),
        })
    }
}

/// A worker asks to join a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// [`PROTOCOL_VERSION`] of the worker.
    pub protocol: u32,
    /// The worker's name (`--name`, or host-pid).
    pub name: String,
    /// The most operations per second this worker will send (`--max-rate`), if capped.
    pub max_rate: Option<u64>,
    /// Where the worker listens for commands.
    pub control: String,
    /// Host name and process id, for the report.
    pub host: String,
    /// The worker's process id.
    pub pid: u32,
}

/// The coordinator's answer to a [`Join`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinReply {
    /// The worker is in: it is worker `index` of run `run`.
    Accepted {
        /// The run's id.
        run: String,
        /// The worker's place in the run, from 0.
        index: u32,
    },
    /// The worker is refused for good (another protocol version, a name already taken).
    Rejected {
        /// Why.
        reason: String,
    },
    /// The run has all its workers: try again later (for the next run).
    Full,
}

/// What the coordinator asks a worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Reply with the worker's clock.
    Probe,
    /// Open the target and get a generator ready.
    Setup(Box<Setup>),
    /// Run one step.
    Step(StepPlan),
    /// The run is over.
    End {
        /// Why (for the worker's log).
        reason: String,
    },
}

/// The target and the generator settings of a run.
///
/// [`Pacing::TimerOnly`]: collector::schedule::Pacing::TimerOnly
/// [`Pacing::Hybrid`]: collector::schedule::Pacing::Hybrid
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The target spec this worker opens (already split, for an in-process target).
    pub target: String,
    /// The target's options.
    pub options: TargetOptions,
    /// Per-operation timeout, ms.
    pub op_timeout_ms: u64,
    /// The most operations in flight on this worker.
    pub max_in_flight: u32,
    /// An operation starting later than this after its intended time is late, µs.
    pub late_slack_us: u64,
    /// How the generator waits for intended times: `None` on the timer alone
    /// ([`Pacing::TimerOnly`]), `Some(µs)` sleeping until that close to each and then yielding
    /// ([`Pacing::Hybrid`]: precise, but a core busy at any rate above about 1/µs).
    pub spin_below_us: Option<u64>,
    /// The first `seq` of this worker (disjoint from every other worker's).
    pub seq_base: u64,
    /// Keep a raw log of every latency value (for the merge check), at most this many
    /// values per shard and action per step (0: none).
    pub raw_log_cap: usize,
    /// Collect per-interval histograms of this length, ms (0: none), for the interval log.
    pub interval_ms: u64,
}

/// One step for one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPlan {
    /// The step's number in the run, from 0.
    pub step: u32,
    /// This worker's share of the step's rate, operations per second.
    pub rate: u64,
    /// Warmup, ms.
    pub warmup_ms: u64,
    /// Hold (measured), ms.
    pub hold_ms: u64,
    /// Cooldown, ms.
    pub cooldown_ms: u64,
    /// When the step's first operation is intended, in the *worker's* clock: ns since the
    /// Unix epoch (the coordinator adds the worker's offset).
    pub start_unix_ns: u64,
}

/// A worker's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandReply {
    /// The worker's clock when it read the probe: ns since the Unix epoch.
    Probe {
        /// The worker's time.
        unix_ns: u64,
    },
    /// The target is open.
    Ready {
        /// The target's actions, in order.
        actions: Vec<String>,
        /// The target's description.
        describe: String,
    },
    /// A step ran.
    Step(Box<StepReport>),
    /// The run is over for this worker.
    Ended,
    /// The command failed.
    Error {
        /// Why, naming the value at fault.
        message: String,
    },
}

/// What a worker measured in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    /// The step's number (must match the plan).
    pub step: u32,
    /// The rate it was asked for.
    pub rate: u64,
    /// How long before the intended start the worker had the step armed, µs; negative when
    /// the plan arrived after the start (the worker was late).
    pub armed_early_us: i64,
    /// Operations the schedule put in the hold.
    pub scheduled: u64,
    /// Operations started in the hold.
    pub issued: u64,
    /// Hold operations not reached when the hold ended.
    pub not_issued: u64,
    /// Whether every operation finished before the measure deadline.
    pub drained: bool,
    /// The hold, seconds.
    pub window_s: f64,
    /// Issue lateness histogram (µs), base64 of V2 + deflate.
    pub lateness: String,
    /// The hold's step data ([`collector::recorder::StepData::to_bytes`], as text).
    pub data: String,
    /// Per-interval data for the interval log (empty unless asked for).
    pub intervals: Vec<WireInterval>,
}

/// One interval of a worker's interval log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireInterval {
    /// Start since the step's intended start, ms (negative: before it).
    pub offset_ms: i64,
    /// Length, ms.
    pub length_ms: u64,
    /// The interval's step data, as text.
    pub data: String,
}

/// Encodes a message; the error names it if it would be over [`MAX_MESSAGE_BYTES`].
pub fn encode<T: Serialize>(what: &'static str, msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| ProtocolError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes a message, size first; the error names the message and the JSON path.
pub fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ProtocolError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        ProtocolError::Malformed {
            what,
            reason: if path == "." {
                reason
            } else {
                format!("at {path}: {reason}")
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_named() {
        let join = Join {
            protocol: PROTOCOL_VERSION,
            name: "w1".into(),
            max_rate: Some(5000),
            control: control_subject("default", "w1"),
            host: "h".into(),
            pid: 7,
        };
        let back: Join = decode("join", &encode("join", &join).unwrap()).unwrap();
        assert_eq!(back, join);
        let cmd = Command::Step(StepPlan {
            step: 3,
            rate: 1000,
            warmup_ms: 500,
            hold_ms: 2000,
            cooldown_ms: 0,
            start_unix_ns: 1,
        });
        let back: Command = decode("command", &encode("command", &cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
        let e = decode::<Join>("join", br#"{"protocol":1}"#).unwrap_err();
        assert!(e.to_string().starts_with("join: missing field"), "{e}");
        let e = decode::<Command>("command", br#"{"cmd":"reboot"}"#).unwrap_err();
        assert!(e.to_string().contains("reboot"), "{e}");
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<Join>("join", &big),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn names_are_single_subject_tokens() {
        assert!(check_name("group", "ci-1_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            let e = check_name("group", bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid group"), "{e}");
        }
        let c = control_subject("g", "w");
        assert!(c.starts_with("herdlab.dist.g.w.w."), "{c}");
        assert_ne!(c, control_subject("g", "w"), "unique per join");
    }
}
