//! Targets: what a load generator drives. One call is one operation, which ends ok or
//! with an error of a named kind. A target may also report a backlog (`pending`), which
//! the SLO verdict watches for growth over a hold.
//!
//! Targets are chosen at run time from a spec string (`sim:servers=4,service_us=1000`), so
//! the trait is object-safe: calls return boxed futures.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future: what [`Target::call`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an operation failed: a stable kind (`timeout`, `overload`, `error`, or a target's
/// own) and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Stable kind, counted per kind by the recorder.
    pub kind: Cow<'static, str>,
    /// What happened.
    pub message: String,
}

impl OpError {
    /// An error of `kind` with a message.
    pub fn new(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// The operation did not finish within its timeout.
    pub fn timeout() -> Self {
        OpError::new(
            KIND_TIMEOUT,
            "the operation did not finish within its timeout",
        )
    }
}

/// A second latency of one operation: the operation reached action `action` (one of the
/// target's [`Target::mark_actions`]) at `at`. A JetStream publish whose operation ends
/// when the message is delivered marks the instant its ack came back: the report then has
/// publish→ack and publish→delivery for the same operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Index into [`Target::actions`] of a mark action.
    pub action: usize,
    /// When the operation reached it.
    pub at: tokio::time::Instant,
}

/// Error kind of an operation that ran past its timeout.
pub const KIND_TIMEOUT: &str = "timeout";
/// Error kind of an operation the target refused because it was full.
pub const KIND_OVERLOAD: &str = "overload";

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A system under load.
pub trait Target: Send + Sync + 'static {
    /// The actions this target performs, each recorded separately (at least one).
    fn actions(&self) -> Vec<String>;

    /// Which action operation number `seq` performs (an index into [`Target::actions`]).
    /// Deterministic in `seq`, so a seed replays the same mix. Default: the first action.
    fn pick(&self, seq: u64) -> usize {
        let _ = seq;
        0
    }

    /// Performs operation `seq` as action `action`. The generator bounds it with a timeout
    /// and drops (cancels) the future when the timeout passes.
    fn call(&self, action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>>;

    /// Indices into [`Target::actions`] of the actions that are *marks*: second latencies of
    /// other actions' operations, reported through [`Target::call_marked`]. [`Target::pick`]
    /// never returns one; they are kept out of step totals, so every operation counts once
    /// in the overall percentiles and error rate. Default: none.
    fn mark_actions(&self) -> Vec<usize> {
        Vec::new()
    }

    /// [`Target::call`], also returning the marks the operation passed (each recorded as an
    /// ok sample of its action, latency from the operation's intended start to the mark).
    /// This is what the generator calls. Default: `call`, without marks.
    fn call_marked(&self, action: usize, seq: u64) -> BoxFuture<'_, Result<Vec<Mark>, OpError>> {
        let call = self.call(action, seq);
        Box::pin(async move { call.await.map(|()| Vec::new()) })
    }

    /// The target's backlog (queue length, consumer lag) now, if it has one.
    fn pending(&self) -> Option<u64> {
        None
    }

    /// The spec or a one-line description, for reports.
    fn describe(&self) -> String;
}

/// A target that does nothing and succeeds at once: measures the generator itself.
#[derive(Debug, Default)]
pub struct NoopTarget;

impl Target for NoopTarget {
    fn actions(&self) -> Vec<String> {
        vec!["noop".into()]
    }

    fn call(&self, _action: usize, _seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        "noop".into()
    }
}

/// Why a target spec could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The kind before the colon is not known.
    #[error("unknown target {spec:?}: expected one of {known}")]
    UnknownKind {
        /// The whole spec.
        spec: String,
        /// The kinds this build knows.
        known: String,
    },
    /// A parameter is missing, unknown or malformed.
    #[error("invalid target {spec:?}: {message}")]
    Invalid {
        /// The whole spec.
        spec: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// Parses `key=value,key=value` into pairs; errors name the spec.
pub fn parse_params(spec: &str, params: &str) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in params.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(SpecError::Invalid {
                spec: spec.into(),
                message: format!("parameter {part:?} is not key=value"),
            });
        };
        let k = k.trim().to_string();
        if out.iter().any(|(o, _)| *o == k) {
            return Err(SpecError::Invalid {
                spec: spec.into(),
                message: format!("parameter {k:?} given twice"),
            });
        }
        out.push((k, v.trim().to_string()));
    }
    Ok(out)
}

/// Builds a target from a spec: `noop`, `sim:…` or `usl:…` (see [`crate::sim`]). Other
/// crates' targets (the daemon, the index, the hub) are resolved by their own suites and
/// fall through to [`SpecError::UnknownKind`] here.
pub fn from_spec(spec: &str) -> Result<Arc<dyn Target>, SpecError> {
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    match kind.trim() {
        "noop" if params.trim().is_empty() => Ok(Arc::new(NoopTarget)),
        "noop" => Err(SpecError::Invalid {
            spec: spec.into(),
            message: "noop takes no parameters".into(),
        }),
        "sim" => Ok(Arc::new(crate::sim::SimTarget::from_params(spec, params)?)),
        "usl" => Ok(Arc::new(crate::sim::UslTarget::from_params(spec, params)?)),
        _ => Err(SpecError::UnknownKind {
            spec: spec.into(),
            known: "noop, sim:servers=K,service_us=S[,queue=Q], usl:service_us=S,sigma=X,kappa=Y"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_malformed_specs_are_named() {
        let e = from_spec("postgres://x").err().unwrap().to_string();
        assert!(
            e.starts_with("unknown target \"postgres://x\": expected one of noop"),
            "{e}"
        );
        let e = from_spec("sim:servers").err().unwrap().to_string();
        assert!(e.contains("\"servers\" is not key=value"), "{e}");
        let e = from_spec("sim:servers=1,servers=2")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
        assert!(from_spec("noop:x=1").is_err());
        assert_eq!(from_spec("noop").unwrap().describe(), "noop");
    }
}
