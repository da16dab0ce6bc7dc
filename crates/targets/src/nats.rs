//! The core NATS request-reply target: `nats://HOST:PORT/SUBJECT`. One operation is one
//! request on SUBJECT and its reply; its action is `request`.
//!
//! **Spec.** `HOST` is a name or an address (IPv6 in brackets); `PORT` defaults to
//! [`DEFAULT_PORT`] and must be a number from 1 to 65535; `SUBJECT` is a publish subject:
//! dot-separated tokens, none empty, no whitespace or control characters, no wildcards
//! (`*`, `>`). Every error names the spec. The payload is [`TargetOptions::body`] rendered
//! as a [`crate::template`] (`{seq}`, `{rand}` from the run's seed; empty when not given),
//! and [`TargetOptions::headers`] go as NATS headers (names checked at open).
//!
//! **Client.** One async-nats 0.40 client (the version that works with Debian's
//! nats-server 2.9.10), connected in [`NatsTarget::open`] within [`CONNECT_BOUND`]. Its
//! requests are multiplexed on one connection, each with its own reply token, so a call
//! the generator cancels only drops its own reply slot: a late reply finds no one and is
//! discarded, never read as another request's answer. Cancel-safe by construction.
//!
//! **The reply protocol** (shared with [`crate::serve_nats`]): a reply whose payload is
//! `err:KIND:MESSAGE` is an error of kind KIND (lower-case letters, digits, `_`, at most
//! [`MAX_KIND_LEN`] bytes; a malformed one is an error of kind `nats`); any other reply
//! (`ok`, an echo, anything) is a success.
//!
//! **Error kinds** ([`request_error_kind`]): `no_responders` (no one subscribes to
//! SUBJECT), `timeout` (the generator's, or the client's own request timeout
//! [`REQUEST_BOUND`], set far above any generator timeout so it is only a backstop),
//! `disconnected` (the client has lost its server and is reconnecting), `nats`
//! otherwise; plus whatever kinds `err:` replies carry. Failing to connect at open is a
//! setup error (`connect`).

use std::time::Duration;

use async_nats::{Client, HeaderMap, HeaderName, RequestErrorKind};
use bytes::Bytes;
use collector::target::{BoxFuture, OpError, SpecError, Target, KIND_TIMEOUT};

use crate::template::Template;
use crate::{invalid, TargetError, TargetOptions};

/// The port of a spec that names none (NATS's default).
pub const DEFAULT_PORT: u16 = 4222;
/// Longest [`NatsTarget::open`] waits for the connection.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// The client's own request timeout: a backstop far above any generator timeout.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// The longest error kind an `err:KIND:MESSAGE` reply may carry.
pub const MAX_KIND_LEN: usize = 32;

/// Error kind of a request no one subscribes to.
pub const KIND_NO_RESPONDERS: &str = "no_responders";
/// Error kind of a request made while the client is disconnected.
pub const KIND_DISCONNECTED: &str = "disconnected";
/// Error kind of any other client or protocol failure.
pub const KIND_NATS: &str = "nats";
/// Error kind of a connection that could not be opened (setup only).
pub const KIND_CONNECT: &str = "connect";

/// The prefix of an error reply: `err:KIND:MESSAGE`.
pub const ERR_PREFIX: &str = "err:";
/// The payload of a success reply from [`crate::serve_nats`].
pub const OK_REPLY: &str = "ok";

/// A parsed `nats://` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSpec {
    /// Host as written (IPv6 keeps its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The subject requests go to.
    pub subject: String,
}

impl NatsSpec {
    /// The server URL, `nats://HOST:PORT`.
    pub fn server_url(&self) -> String {
        server_url(&self.host, self.port)
    }
}

/// `nats://HOST:PORT`.
pub fn server_url(host: &str, port: u16) -> String {
    format!("nats://{host}:{port}")
}

/// Parses `nats://HOST:PORT/SUBJECT` (see the module doc); every error names the spec.
pub fn parse(spec: &str) -> Result<NatsSpec, SpecError> {
    let rest = spec
        .trim()
        .strip_prefix("nats://")
        .ok_or_else(|| invalid(spec, "expected nats://HOST:PORT/SUBJECT"))?;
    let (authority, subject) = rest.split_once('/').ok_or_else(|| {
        invalid(
            spec,
            "no subject: expected nats://HOST:PORT/SUBJECT (e.g. nats://127.0.0.1:4222/svc.echo)",
        )
    })?;
    let (host, port) = parse_authority(spec, authority)?;
    check_subject(spec, subject)?;
    Ok(NatsSpec {
        host,
        port,
        subject: subject.to_string(),
    })
}

/// Splits `HOST[:PORT]` (IPv6 as `[ADDR]:PORT`); errors name the spec.
pub fn parse_authority(spec: &str, authority: &str) -> Result<(String, u16), SpecError> {
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let (addr, tail) = after
            .split_once(']')
            .ok_or_else(|| invalid(spec, format!("host {authority:?} lacks its closing ']'")))?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or_else(|| {
                invalid(spec, format!("expected :PORT after [{addr}], got {t:?}"))
            })?),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(invalid(spec, "empty host: expected HOST:PORT"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '@' || c == '/') {
        return Err(invalid(
            spec,
            format!("host {host:?}: expected a name or an address"),
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(invalid(
                    spec,
                    format!("port {p:?}: expected a number from 1 to 65535"),
                ))
            }
        },
    };
    Ok((host, port))
}

/// Checks a subject to publish on: tokens separated by `.`, none empty, no whitespace or
/// control characters, no wildcards. The error names the spec and the subject.
pub fn check_subject(spec: &str, subject: &str) -> Result<(), SpecError> {
    if subject.is_empty() {
        return Err(invalid(spec, "empty subject: expected e.g. svc.echo"));
    }
    if subject.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            spec,
            format!("subject {subject:?} contains whitespace: expected dot-separated tokens"),
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(invalid(
                spec,
                format!("subject {subject:?} has an empty token: expected dot-separated tokens"),
            ));
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err(invalid(
                spec,
                format!("subject {subject:?} has a wildcard: a publish subject cannot"),
            ));
        }
    }
    Ok(())
}

/// Builds NATS headers from `(name, value)` pairs; an invalid name (empty, `:`, space,
/// non-ASCII) or a value with CR/LF is refused, naming it and the spec.
pub fn build_headers(spec: &str, headers: &[(String, String)]) -> Result<HeaderMap, SpecError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let parsed: HeaderName = match name.parse() {
            Ok(n) if !name.is_empty() => n,
            _ => {
                return Err(invalid(
                    spec,
                    format!("header name {name:?}: expected printable ASCII without ':' or spaces"),
                ))
            }
        };
        if value.contains(['\r', '\n']) {
            return Err(invalid(
                spec,
                format!("header {name:?} value {value:?} contains a line break"),
            ));
        }
        map.append(parsed, value.as_str());
    }
    Ok(map)
}

/// The payload of every operation: rendered once when constant.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The same bytes for every operation.
    Constant(Bytes),
    /// Rendered per `seq`.
    Template(Template),
}

impl Payload {
    /// From [`TargetOptions::body`] (`default` when none); the error names the spec.
    pub fn from_options(
        spec: &str,
        opts: &TargetOptions,
        default: &[u8],
    ) -> Result<Payload, SpecError> {
        let Some(body) = &opts.body else {
            return Ok(Payload::Constant(Bytes::copy_from_slice(default)));
        };
        let t =
            Template::parse(body, opts.seed).map_err(|e| invalid(spec, format!("body: {e}")))?;
        Ok(if t.is_constant() {
            Payload::Constant(Bytes::from(t.render(0)))
        } else {
            Payload::Template(t)
        })
    }

    /// The payload of operation `seq`.
    pub fn render(&self, seq: u64) -> Bytes {
        match self {
            Payload::Constant(b) => b.clone(),
            Payload::Template(t) => Bytes::from(t.render(seq)),
        }
    }
}

/// Connects a client to `url` within `bound`; a failure is a setup error naming `spec`.
pub async fn connect(spec: &str, url: &str, bound: Duration) -> Result<Client, TargetError> {
    let opts = async_nats::ConnectOptions::new()
        .name("herdlab-targets")
        .connection_timeout(bound)
        .request_timeout(Some(REQUEST_BOUND));
    match tokio::time::timeout(bound + Duration::from_millis(500), opts.connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(TargetError::setup(
            spec,
            format!("{KIND_CONNECT}: {url}: {e}"),
        )),
        Err(_) => Err(TargetError::setup(
            spec,
            format!("{KIND_CONNECT}: {url}: not connected within {bound:?}"),
        )),
    }
}

/// The error kind of a failed request: `no_responders`, `timeout`, `disconnected` (when
/// the client is not connected), else `nats`. Pure.
pub fn request_error_kind(kind: RequestErrorKind, connected: bool) -> &'static str {
    match kind {
        RequestErrorKind::NoResponders => KIND_NO_RESPONDERS,
        RequestErrorKind::TimedOut => KIND_TIMEOUT,
        RequestErrorKind::Other if !connected => KIND_DISCONNECTED,
        RequestErrorKind::Other => KIND_NATS,
    }
}

/// Reads a reply payload by the protocol in the module doc: `err:KIND:MESSAGE` is an
/// error of KIND, anything else is a success. Pure.
pub fn reply_outcome(payload: &[u8]) -> Result<(), OpError> {
    let Some(rest) = payload.strip_prefix(ERR_PREFIX.as_bytes()) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(rest);
    let (kind, message) = text.split_once(':').unwrap_or((&text, ""));
    let valid = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Err(OpError::new(kind.to_string(), message.to_string()))
    } else {
        Err(OpError::new(
            KIND_NATS,
            format!("malformed error reply {text:?}: expected err:KIND:MESSAGE"),
        ))
    }
}

/// The `nats://` target. See the module doc.
pub struct NatsTarget {
    spec: String,
    subject: async_nats::Subject,
    client: Client,
    headers: Option<HeaderMap>,
    payload: Payload,
}

impl NatsTarget {
    /// Parses `spec`, checks the options and connects within [`CONNECT_BOUND`].
    pub async fn open(spec: &str, opts: &TargetOptions) -> Result<NatsTarget, TargetError> {
        let parsed = parse(spec)?;
        let headers = build_headers(spec, &opts.headers)?;
        let payload = Payload::from_options(spec, opts, b"")?;
        let client = connect(spec, &parsed.server_url(), CONNECT_BOUND).await?;
        Ok(NatsTarget {
            spec: spec.trim().to_string(),
            subject: parsed.subject.into(),
            client,
            headers: (!opts.headers.is_empty()).then_some(headers),
            payload,
        })
    }

    async fn request(&self, seq: u64) -> Result<(), OpError> {
        let payload = self.payload.render(seq);
        let reply = match &self.headers {
            Some(h) => {
                self.client
                    .request_with_headers(self.subject.clone(), h.clone(), payload)
                    .await
            }
            None => self.client.request(self.subject.clone(), payload).await,
        };
        match reply {
            Ok(msg) => reply_outcome(&msg.payload),
            Err(e) => {
                let connected =
                    self.client.connection_state() == async_nats::connection::State::Connected;
                Err(OpError::new(
                    request_error_kind(e.kind(), connected),
                    e.to_string(),
                ))
            }
        }
    }
}

impl Target for NatsTarget {
    fn actions(&self) -> Vec<String> {
        vec!["request".into()]
    }

    fn call(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(self.request(seq))
    }

    fn describe(&self) -> String {
        self.spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_errors_name_the_spec() {
        let s = parse("nats://127.0.0.1:4333/svc.echo").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.subject.as_str()),
            ("127.0.0.1", 4333, "svc.echo")
        );
        assert_eq!(parse("nats://h/x").unwrap().port, DEFAULT_PORT);
        assert_eq!(
            parse("nats://[::1]:5/x").unwrap().server_url(),
            "nats://[::1]:5"
        );
        for (spec, needle) in [
            ("nats://:4222/x", "empty host"),
            ("nats://h:port/x", "port \"port\""),
            ("nats://h:0/x", "port \"0\""),
            ("nats://h:99999/x", "1 to 65535"),
            ("nats://h:1", "no subject"),
            ("nats://h:1/", "empty subject"),
            ("nats://h:1/a..b", "empty token"),
            ("nats://h:1/a.*", "wildcard"),
            ("nats://h:1/a.>", "wildcard"),
            ("nats://h:1/a b", "whitespace"),
            ("http://h:1/a", "expected nats://"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{spec:?}")) && e.contains(needle),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn bad_headers_and_bodies_are_refused_by_name() {
        let e = build_headers("nats://h/x", &[("a b".into(), "v".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a b\""), "{e}");
        let e = build_headers("nats://h/x", &[("k".into(), "v\r\nX: y".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line break"), "{e}");
        let opts = TargetOptions {
            body: Some("{nope}".into()),
            ..TargetOptions::default()
        };
        let e = Payload::from_options("nats://h/x", &opts, b"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"nats://h/x\"") && e.contains("body"), "{e}");
    }

    #[test]
    fn replies_follow_the_protocol() {
        assert!(reply_outcome(b"ok").is_ok());
        assert!(reply_outcome(b"anything at all").is_ok());
        let e = reply_outcome(b"err:overload:queue full").unwrap_err();
        assert_eq!(
            (e.kind.as_ref(), e.message.as_str()),
            ("overload", "queue full")
        );
        let e = reply_outcome(b"err:Bad Kind:x").unwrap_err();
        assert_eq!(e.kind, KIND_NATS);
        assert!(e.message.contains("malformed"), "{e}");
        assert_eq!(
            request_error_kind(RequestErrorKind::TimedOut, true),
            "timeout"
        );
        assert_eq!(
            request_error_kind(RequestErrorKind::Other, false),
            "disconnected"
        );
        assert_eq!(
            request_error_kind(RequestErrorKind::NoResponders, true),
            "no_responders"
        );
    }
}
