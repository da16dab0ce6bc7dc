//! `targets`: what the collector can drive outside its own process — an HTTP service, a
//! NATS request-reply service, a JetStream stream, a Unix-socket service, a command — and
//! the servers of exactly known capacity (`stress serve`) that check the whole path end to
//! end.
//!
//! Every target is chosen by a spec string, as the collector's own `sim:` and `usl:` are:
//!
//! | spec | one operation |
//! |---|---|
//! | `http://HOST:PORT/PATH`, `h2c://HOST:PORT/PATH` | one HTTP/1.1 (or HTTP/2 without TLS) request on a keep-alive pool ([`http`]) |
//! | `nats://HOST:PORT/SUBJECT` | one core NATS request and its reply ([`nats`]) |
//! | `jetstream://HOST:PORT/STREAM/SUBJECT` | one publish and its ack, optionally its delivery to a durable consumer ([`jetstream`]) |
//! | `unix:PATH` | one framed request and its reply over a Unix socket ([`unix`]) |
//! | `exec:PROGRAM ARG…` | one process, run without a shell ([`exec`]) |
//!
//! Settings that are not part of the address (method, headers, body template, pool size,
//! framing, preamble) come in [`TargetOptions`], from command-line flags or plan keys.
//! [`from_spec`] builds any of them, and falls back to [`collector::target::from_spec`]
//! for `noop`, `sim:` and `usl:`. Every spec error names the spec and what was expected.
//!
//! This crate is apart from `collector` so that what `reports` and `xtask` build (the result
//! model) stays free of hyper and async-nats.

pub mod exec;
pub mod http;
pub mod jetstream;
pub mod nats;
pub mod pool;
pub mod serve_http;
pub mod serve_nats;
pub mod template;
pub mod unix;

use std::sync::Arc;

use collector::target::{SpecError, Target};

/// Connections (or concurrent processes, for `exec:`) unless [`TargetOptions::conns`] says
/// otherwise.
pub const DEFAULT_CONNS: usize = 64;
/// The most connections or concurrent processes a target opens.
pub const MAX_CONNS: usize = 4096;

/// How a Unix-socket target delimits frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// A 4-byte big-endian length, then that many bytes (the rpc-daemon's framing).
    #[default]
    U32Be,
    /// One line, ended by `\n` (the newline is not part of the frame).
    Line,
}

impl Framing {
    /// Parses `u32be` or `line` (also `newline`); the error names the value.
    pub fn parse(text: &str) -> Result<Framing, String> {
        match text.trim() {
            "u32be" => Ok(Framing::U32Be),
            "line" | "newline" => Ok(Framing::Line),
            other => Err(format!(
                "invalid framing {other:?}: expected u32be (4-byte big-endian length prefix) or line (newline-delimited)"
            )),
        }
    }

    /// `u32be` or `line`.
    pub fn name(&self) -> &'static str {
        match self {
            Framing::U32Be => "u32be",
            Framing::Line => "line",
        }
    }
}

/// Settings of a target that are not in its spec. Each target kind reads the fields it
/// uses; [`from_spec`] refuses a field that the kind does not use, naming both. Serialized
/// as it travels to the workers of a distributed run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOptions {
    /// HTTP method (`http`, `h2c`); default `GET`, or `POST` when a body is given.
    pub method: Option<String>,
    /// HTTP headers as `(name, value)` (`http`, `h2c`); NATS headers (`nats`, `jetstream`).
    pub headers: Vec<(String, String)>,
    /// The request body, payload or frame as a template with `{seq}` and `{rand}`
    /// placeholders ([`template`]); `None` sends an empty body (HTTP), an empty payload
    /// (NATS) or is an error where a request is required (`unix:`).
    pub body: Option<String>,
    /// Keep-alive connections (`http`, `h2c`, `unix`), or the most processes at once (`exec`).
    pub conns: usize,
    /// The seed `{rand}` is drawn from.
    pub seed: u64,
    /// Frame delimiting of `unix:`.
    pub framing: Option<Framing>,
    /// A frame sent first on every new `unix:` connection.
    pub hello: Option<String>,
    /// Text the reply to [`TargetOptions::hello`] must contain; the connection is refused
    /// otherwise.
    pub hello_reply: Option<String>,
    /// Durable consumer of a `jetstream:` target: when set, an operation ends when its
    /// message is delivered to it (publish→delivery), and its backlog is the target's
    /// `pending()`.
    pub consumer: Option<String>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            method: None,
            headers: Vec::new(),
            body: None,
            conns: DEFAULT_CONNS,
            seed: 1,
            framing: None,
            hello: None,
            hello_reply: None,
            consumer: None,
        }
    }
}

/// Why a target could not be built: its spec or options are wrong, or it could not be
/// reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The spec or an option is malformed (the message names the spec and what was expected).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The target could not be set up: a connection, a stream, a consumer.
    #[error("target {spec:?}: {message}")]
    Setup {
        /// The whole spec.
        spec: String,
        /// What failed.
        message: String,
    },
}

impl TargetError {
    /// A [`TargetError::Setup`] for `spec`.
    pub fn setup(spec: &str, message: impl Into<String>) -> TargetError {
        TargetError::Setup {
            spec: spec.into(),
            message: message.into(),
        }
    }
}

/// Waits at most `bound` for a server's task to end by itself, then aborts it: how both
/// servers of known capacity shut down.
pub(crate) async fn join_or_abort(task: tokio::task::JoinHandle<()>, bound: std::time::Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(bound, task).await.is_err() {
        abort.abort();
    }
}

/// A [`SpecError::Invalid`] for `spec`.
pub fn invalid(spec: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        spec: spec.into(),
        message: message.into(),
    }
}

/// The kinds of spec this crate knows, with their grammar, for messages and help.
pub const KINDS_HELP: &str =
    "http://HOST:PORT/PATH, h2c://HOST:PORT/PATH, nats://HOST:PORT/SUBJECT, \
jetstream://HOST:PORT/STREAM/SUBJECT, unix:PATH, exec:PROGRAM ARG…, noop, \
sim:servers=K,service_us=S[,queue=Q], usl:service_us=S,sigma=X,kappa=Y";

/// The target kind a spec names, by its prefix; `None` for the collector's own kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `http://`
    Http,
    /// `h2c://`
    H2c,
    /// `nats://`
    Nats,
    /// `jetstream://`
    JetStream,
    /// `unix:`
    Unix,
    /// `exec:`
    Exec,
}

impl Kind {
    /// The kind of `spec`, if this crate builds it.
    pub fn of(spec: &str) -> Option<Kind> {
        let s = spec.trim_start();
        [
            ("http://", Kind::Http),
            ("h2c://", Kind::H2c),
            ("nats://", Kind::Nats),
            ("jetstream://", Kind::JetStream),
            ("unix:", Kind::Unix),
            ("exec:", Kind::Exec),
        ]
        .into_iter()
        .find(|(prefix, _)| s.starts_with(prefix))
        .map(|(_, k)| k)
    }

    /// The spec prefix, e.g. `http://`.
    pub fn prefix(&self) -> &'static str {
        match self {
            Kind::Http => "http://",
            Kind::H2c => "h2c://",
            Kind::Nats => "nats://",
            Kind::JetStream => "jetstream://",
            Kind::Unix => "unix:",
            Kind::Exec => "exec:",
        }
    }
}

/// Refuses options that `kind` does not use (`None`: the collector's own kinds, which use
/// none), naming the option and the spec.
pub fn check_options(
    spec: &str,
    kind: Option<Kind>,
    opts: &TargetOptions,
) -> Result<(), SpecError> {
    let d = TargetOptions::default();
    let given: [(&str, bool); 8] = [
        ("method", opts.method.is_some()),
        ("header", !opts.headers.is_empty()),
        ("body", opts.body.is_some()),
        ("conns", opts.conns != d.conns),
        ("framing", opts.framing.is_some()),
        ("hello", opts.hello.is_some()),
        ("hello-reply", opts.hello_reply.is_some()),
        ("consumer", opts.consumer.is_some()),
    ];
    let used: &[&str] = match kind {
        Some(Kind::Http | Kind::H2c) => &["method", "header", "body", "conns"],
        Some(Kind::Nats) => &["header", "body"],
        Some(Kind::JetStream) => &["header", "body", "consumer"],
        Some(Kind::Unix) => &["body", "conns", "framing", "hello", "hello-reply"],
        Some(Kind::Exec) => &["conns"],
        None => &[],
    };
    for (name, set) in given {
        if set && !used.contains(&name) {
            let uses = if used.is_empty() {
                "none".to_string()
            } else {
                used.join(", ")
            };
            return Err(invalid(
                spec,
                format!("option {name} does not apply to this kind of target: it uses {uses}"),
            ));
        }
    }
    if opts.hello_reply.is_some() && opts.hello.is_none() {
        return Err(invalid(
            spec,
            "hello-reply given without hello: expected both or neither",
        ));
    }
    if !(1..=MAX_CONNS).contains(&opts.conns) {
        return Err(invalid(
            spec,
            format!("conns {}: expected 1 to {MAX_CONNS}", opts.conns),
        ));
    }
    Ok(())
}

/// Builds the target `spec` names, with `opts`: one of this crate's kinds, or `noop`,
/// `sim:` and `usl:` through [`collector::target::from_spec`]. Network targets connect
/// here (bounded), so an unreachable service fails before any load runs. Must be called
/// on a tokio runtime with I/O and time enabled.
pub async fn from_spec(spec: &str, opts: &TargetOptions) -> Result<Arc<dyn Target>, TargetError> {
    let kind = Kind::of(spec);
    check_options(spec, kind, opts)?;
    let Some(kind) = kind else {
        return collector::target::from_spec(spec).map_err(|e| match e {
            SpecError::UnknownKind { spec, .. } => SpecError::UnknownKind {
                spec,
                known: KINDS_HELP.into(),
            }
            .into(),
            other => other.into(),
        });
    };
    Ok(match kind {
        Kind::Http | Kind::H2c => Arc::new(http::HttpTarget::open(spec, opts).await?),
        Kind::Nats => Arc::new(nats::NatsTarget::open(spec, opts).await?),
        Kind::JetStream => Arc::new(jetstream::JetStreamTarget::open(spec, opts).await?),
        Kind::Unix => Arc::new(unix::UnixTarget::open(spec, opts).await?),
        Kind::Exec => Arc::new(exec::ExecTarget::open(spec, opts)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_prefix() {
        assert_eq!(Kind::of("http://127.0.0.1:80/"), Some(Kind::Http));
        assert_eq!(Kind::of("h2c://127.0.0.1:80/"), Some(Kind::H2c));
        assert_eq!(Kind::of("nats://127.0.0.1:4222/x"), Some(Kind::Nats));
        assert_eq!(
            Kind::of("jetstream://127.0.0.1:4222/S/x"),
            Some(Kind::JetStream)
        );
        assert_eq!(Kind::of("unix:/tmp/s"), Some(Kind::Unix));
        assert_eq!(Kind::of("exec:true"), Some(Kind::Exec));
        assert_eq!(Kind::of("sim:servers=1,service_us=1"), None);
        assert_eq!(Kind::of("https://x"), None);
    }

    #[test]
    fn options_a_kind_does_not_use_are_refused_by_name() {
        let opts = TargetOptions {
            method: Some("POST".into()),
            ..TargetOptions::default()
        };
        let e = check_options("exec:true", Some(Kind::Exec), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"exec:true\"") && e.contains("option method"),
            "{e}"
        );
        assert!(check_options("http://h:1/", Some(Kind::Http), &opts).is_ok());
        let e = check_options("sim:servers=1,service_us=1", None, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("it uses none"), "{e}");
        let zero = TargetOptions {
            conns: 0,
            ..TargetOptions::default()
        };
        let e = check_options("http://h:1/", Some(Kind::Http), &zero)
            .unwrap_err()
            .to_string();
        assert!(e.contains("conns 0: expected 1 to 4096"), "{e}");
        let reply_only = TargetOptions {
            hello_reply: Some("ok".into()),
            ..TargetOptions::default()
        };
        assert!(check_options("unix:/s", Some(Kind::Unix), &reply_only).is_err());
    }

    #[tokio::test]
    async fn collector_kinds_fall_through_and_unknown_kinds_list_all() {
        let t = from_spec("noop", &TargetOptions::default()).await.unwrap();
        assert_eq!(t.describe(), "noop");
        let e = from_spec("ftp://x", &TargetOptions::default())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("\"ftp://x\"") && e.contains("jetstream://"),
            "{e}"
        );
    }
}
