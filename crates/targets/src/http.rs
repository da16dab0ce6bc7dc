//! The HTTP target: `http://HOST:PORT/PATH[?QUERY]` (HTTP/1.1) and `h2c://HOST:PORT/PATH`
//! (HTTP/2 with prior knowledge, no TLS). One operation is one request whose response body
//! is read to the end; its action is the method (`GET`).
//!
//! **Spec.** The URL is the whole spec. A missing port is 80 for both schemes (as for any
//! `http` URL); an empty host, a port that is not a number from 1 to 65535, credentials,
//! a fragment, whitespace, and `https://` (TLS is not supported) are refused with the spec
//! named. Method (default `GET`, `POST` when a body is given; upper-cased), headers, body
//! template ([`crate::template`], `{seq}` and `{rand}` drawn from the run's seed; a
//! constant body is rendered once) and the pool size come from [`TargetOptions`].
//!
//! **Pool.** `conns` connections (default 64). HTTP/1.1 connections are a [`ConnPool`]: a
//! request takes any idle connection (opening one while fewer than `conns` are open) and
//! carries it alone; with all `conns` busy, requests queue for the next one freed and the
//! wait counts in their latency. `h2c` keeps `conns` HTTP/2 connections in slots and
//! operation `seq` uses slot `seq % conns`, which multiplexes every operation that picks it.
//!
//! **Cancel-safety.** The generator drops a call when its timeout passes. An HTTP/1.1
//! connection is taken out of its slot for the call and put back only when its response
//! was read to the end, so a cancelled call drops (and closes) its connection: a reply that
//! arrives later is never read as the answer to the next request, which connects afresh.
//! HTTP/2 resets the cancelled stream (`RST_STREAM`) and the connection stays in use.
//! A connection the server closed (keep-alive limit, idle timeout) is noticed before the
//! next request and replaced; a request hyper reports as never sent is retried once on a
//! fresh connection, any other failure is the operation's error.
//!
//! **Error kinds** ([`status_kind`], [`failure_kind`], pure): `http_4xx`, `http_5xx`,
//! `http_status` (any other status outside 2xx/3xx), `connect` (refused, unreachable, or
//! not connected within [`CONNECT_BOUND`]), `reset` (closed or reset mid-request),
//! `body_too_large` (over [`MAX_BODY_BYTES`]), `protocol` (anything else); `timeout` is
//! the generator's (and [`REQUEST_BOUND`]'s, a backstop for calls made outside it).
//! [`HttpTarget::open`] resolves the host and opens the first connection within
//! [`CONNECT_BOUND`], so an unreachable service fails before any load runs.
//!
//! **Why hyper's own connections and not reqwest**: measured, closed loop at the maximum
//! (`collector::generator::closed_loop`, 64 workers, no think time) against nginx 1.22.1
//! (`master_process off`, one process, a 612-byte static file, `access_log off`) with 64
//! connections for 10 s, 3 rounds, each round wrk → this target → reqwest 0.13
//! (`http1_only`, `pool_max_idle_per_host(64)`, `tcp_nodelay`), on a quiet 2-core VM
//! (`model name: AMD EPYC`, no build running), by a throwaway program driving this file:
//!
//! | round | wrk `-t2 -c64` req/s | this target req/s (p50 / p99 ms) | reqwest req/s (p50 / p99 ms) |
//! |---|---|---|---|
//! | 1 | 48,517 | 43,490 (1.35 / 4.05) | 23,752 (2.48 / 6.20) |
//! | 2 | 40,387 | 42,712 (1.39 / 4.13) | 27,301 (2.14 / 5.52) |
//! | 3 | 37,025 | 41,077 (1.47 / 4.09) | 25,579 (2.29 / 5.90) |
//! | median ratio to wrk | 1 | **1.06×** | 0.68× |
//!
//! This target ran 1.61× reqwest's rate (median of the per-round ratios). A variant that
//! polled each HTTP/1.1 connection inside the calling task (no connection task) measured
//! 37–42k req/s with a worse p99 (5.2–5.7 ms) in the same rounds, so connections keep a
//! task of their own.
//!
//! Besides speed, reqwest (and hyper-util's pooled client under it) bounds only the *idle*
//! connections: past the pool size it opens as many as there are requests in flight, so an
//! open-loop step above capacity would open connections without limit, and a cancelled
//! request's connection is left to its internals. The pool here bounds connections at
//! exactly `conns`, and what a cancelled call does to its connection is written above.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use collector::target::{BoxFuture, OpError, SpecError, Target, KIND_TIMEOUT};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use hyper::http::uri::{PathAndQuery, Uri};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::pool::ConnPool;
use crate::template::Template;
use crate::{invalid, Kind, TargetError, TargetOptions};

/// The port of a URL that names none.
pub const DEFAULT_PORT: u16 = 80;
/// Longest a name lookup or a TCP connect may take (in [`HttpTarget::open`] and whenever a
/// slot reconnects); past it the operation fails as `connect`.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// Longest one request may take, response body included, when nothing shorter bounds it
/// (the generator's timeout usually does); past it the call fails as `timeout`.
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// The largest response body read; a larger one fails the operation as `body_too_large`.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Error kind of a 4xx response.
pub const KIND_HTTP_4XX: &str = "http_4xx";
/// Error kind of a 5xx response.
pub const KIND_HTTP_5XX: &str = "http_5xx";
/// Error kind of any other status outside 2xx and 3xx.
pub const KIND_HTTP_STATUS: &str = "http_status";
/// Error kind of a connection that could not be opened.
pub const KIND_CONNECT: &str = "connect";
/// Error kind of a connection closed or reset in the middle of a request.
pub const KIND_RESET: &str = "reset";
/// Error kind of a response body over [`MAX_BODY_BYTES`].
pub const KIND_BODY_TOO_LARGE: &str = "body_too_large";
/// Error kind of anything else: a malformed response, an HTTP/2 protocol error.
pub const KIND_PROTOCOL: &str = "protocol";

/// The protocol a spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `http://`: HTTP/1.1 with keep-alive.
    Http1,
    /// `h2c://`: HTTP/2 over plain TCP, with prior knowledge (no upgrade dance).
    H2c,
}

/// A parsed `http://` or `h2c://` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// Host name or address as written (an IPv6 address keeps its brackets).
    pub host: String,
    /// Port ([`DEFAULT_PORT`] when the URL names none).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl HttpSpec {
    /// `HOST:PORT`, as sent in `Host` (HTTP/1.1) and `:authority` (HTTP/2).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The URL as it goes on the wire (`h2c` is `http` there).
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.path_and_query)
    }

    /// The host without IPv6 brackets, for name lookup.
    fn lookup_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

const SPEC_HELP: &str = "expected http://HOST:PORT/PATH or h2c://HOST:PORT/PATH";

/// Parses `spec` (see the module doc); every error names the spec.
pub fn parse(spec: &str) -> Result<HttpSpec, SpecError> {
    let s = spec.trim();
    let bad = |m: String| invalid(spec, m);
    let (version, rest) = if let Some(r) = s.strip_prefix("http://") {
        (Version::Http1, r)
    } else if let Some(r) = s.strip_prefix("h2c://") {
        (Version::H2c, r)
    } else if s.starts_with("https://") {
        return Err(bad(
            "https is not supported: this target speaks plain HTTP/1.1 (http://) and HTTP/2 without TLS (h2c://)".into(),
        ));
    } else {
        return Err(bad(SPEC_HELP.into()));
    };
    if let Some(c) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!(
            "{c:?} in the URL: {SPEC_HELP}, without spaces"
        )));
    }
    if rest.contains('#') {
        return Err(bad(
            "a fragment (#…) is never sent to a server: leave it out".into(),
        ));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported: send an Authorization header instead".into(),
        ));
    }
    let (host, port) = split_host_port(authority).map_err(&bad)?;
    let path_and_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path_and_query.parse::<PathAndQuery>().is_err() {
        return Err(bad(format!(
            "path {path_and_query:?} is not a valid URL path and query"
        )));
    }
    Ok(HttpSpec {
        version,
        host,
        port,
        path_and_query,
    })
}

/// `HOST[:PORT]` (or `[V6]:PORT`) into host and port; the error says what is wrong.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if authority.starts_with('[') {
        let Some(end) = authority.find(']') else {
            return Err(format!(
                "host {authority:?}: an IPv6 address needs its closing ]"
            ));
        };
        let (h, rest) = authority.split_at(end + 1);
        if h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("host {h:?} is not an IPv6 address"));
        }
        match rest {
            "" => (h, None),
            r => match r.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("{r:?} after the host: expected :PORT")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("empty host: {SPEC_HELP}"));
    }
    let name_ok = host.starts_with('[')
        || host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(format!(
            "host {host:?}: expected a host name or an IP address"
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(format!("port {p:?}: expected a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// What every request carries, built once from the options.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    /// The method, which is also the action's name.
    pub method: Method,
    /// Headers sent with every request (after `Host`, which a header may replace).
    pub headers: HeaderMap,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// The same bytes for every operation (possibly none).
    Constant(Bytes),
    /// Rendered per operation.
    Template(Template),
}

/// Headers that hyper sets from the body: a user's value would contradict it.
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];
/// Connection-specific headers, which HTTP/2 forbids.
const H1_ONLY_HEADERS: [&str; 4] = ["connection", "keep-alive", "proxy-connection", "upgrade"];

impl RequestPlan {
    /// Checks and prepares method, headers and body of `opts` for `version`; errors name
    /// the spec and the offending value.
    pub fn from_options(
        spec: &str,
        version: Version,
        opts: &TargetOptions,
    ) -> Result<RequestPlan, SpecError> {
        let method = match &opts.method {
            None if opts.body.is_some() => Method::POST,
            None => Method::GET,
            Some(m) => {
                Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
                    invalid(
                        spec,
                        format!("method {m:?}: expected an HTTP method token such as GET or POST"),
                    )
                })?
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &opts.headers {
            let (n, v) = header(version, name, value).map_err(|m| invalid(spec, m))?;
            headers.append(n, v);
        }
        let body = match &opts.body {
            None => Body::Constant(Bytes::new()),
            Some(text) => {
                let t = Template::parse(text, opts.seed)
                    .map_err(|e| invalid(spec, format!("body: {e}")))?;
                if t.is_constant() {
                    Body::Constant(Bytes::from(t.render(0)))
                } else {
                    Body::Template(t)
                }
            }
        };
        Ok(RequestPlan {
            method,
            headers,
            body,
        })
    }

    /// The body of operation `seq`.
    pub fn body(&self, seq: u64) -> Bytes {
        match &self.body {
            Body::Constant(b) => b.clone(),
            Body::Template(t) => Bytes::from(t.render(seq)),
        }
    }
}

/// One checked header; the error names it.
fn header(version: Version, name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        format!("header name {name:?}: expected a token such as X-Request-Id (letters, digits, -)")
    })?;
    if FRAMING_HEADERS.contains(&n.as_str()) {
        return Err(format!(
            "header {name:?}: set from the body, it cannot be given"
        ));
    }
    if version == Version::H2c && H1_ONLY_HEADERS.contains(&n.as_str()) {
        return Err(format!(
            "header {name:?} is connection-specific, which HTTP/2 forbids: leave it out for h2c://"
        ));
    }
    let v = HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("header {name:?}: value {value:?} is not a valid header value (visible characters, no line breaks)")
    })?;
    Ok((n, v))
}

/// The error kind of a response status; `None` for success (2xx and 3xx).
pub fn status_kind(status: u16) -> Option<&'static str> {
    match status {
        200..=399 => None,
        400..=499 => Some(KIND_HTTP_4XX),
        500..=599 => Some(KIND_HTTP_5XX),
        _ => Some(KIND_HTTP_STATUS),
    }
}

/// What is known about a failed exchange, taken from hyper's error (see
/// [`Failure::of_hyper`]) so that [`failure_kind`] can be a pure function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failure {
    /// The innermost I/O error's kind, if an I/O error caused it.
    pub io: Option<std::io::ErrorKind>,
    /// The connection ended before the response was complete (or before the request was
    /// sent).
    pub closed: bool,
    /// The response could not be parsed.
    pub parse: bool,
    /// A bound inside hyper passed.
    pub timeout: bool,
}

impl Failure {
    /// The facts of `e`.
    pub fn of_hyper(e: &hyper::Error) -> Failure {
        let mut io = None;
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        // Bounded: error chains are short; 16 links is far past any hyper builds.
        for _ in 0..16 {
            let Some(s) = source else { break };
            if let Some(i) = s.downcast_ref::<std::io::Error>() {
                io = Some(i.kind());
            }
            source = s.source();
        }
        Failure {
            io,
            closed: e.is_incomplete_message() || e.is_closed() || e.is_canceled(),
            parse: e.is_parse(),
            timeout: e.is_timeout(),
        }
    }
}

/// The error kind of a failed exchange: `reset` when the connection broke, `timeout`,
/// `protocol` otherwise.
pub fn failure_kind(f: &Failure) -> &'static str {
    use std::io::ErrorKind as K;
    match f.io {
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            return KIND_RESET
        }
        Some(K::TimedOut) => return KIND_TIMEOUT,
        Some(K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable) => {
            return KIND_CONNECT
        }
        _ => {}
    }
    if f.timeout {
        KIND_TIMEOUT
    } else if f.closed {
        KIND_RESET
    } else {
        KIND_PROTOCOL
    }
}

/// Aborts a connection's task when its owner drops it (closing its socket).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pooled HTTP/1.1 connection: the sender and the task that drives the socket.
struct H1Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    _task: AbortOnDrop,
}

/// A pooled HTTP/2 connection. Its task is never aborted (other streams may be in flight
/// on it); it ends by itself when the connection closes or every sender is dropped.
struct H2Conn {
    sender: http2::SendRequest<Full<Bytes>>,
}

enum Pool {
    H1(ConnPool<H1Conn>),
    H2(Vec<Mutex<Option<H2Conn>>>),
}

/// The HTTP target. See the module doc.
pub struct HttpTarget {
    spec: HttpSpec,
    addrs: Vec<SocketAddr>,
    plan: RequestPlan,
    /// Origin-form for HTTP/1.1, absolute for HTTP/2.
    uri: Uri,
    host: HeaderValue,
    pool: Pool,
    connects: AtomicU64,
    describe: String,
}

impl HttpTarget {
    /// Parses `spec`, checks `opts`, resolves the host and opens the first connection, all
    /// within [`CONNECT_BOUND`]; an unreachable service is a [`TargetError::Setup`] naming
    /// the URL.
    pub async fn open(spec: &str, opts: &TargetOptions) -> Result<HttpTarget, TargetError> {
        let parsed = parse(spec)?;
        let kind = match parsed.version {
            Version::Http1 => Kind::Http,
            Version::H2c => Kind::H2c,
        };
        crate::check_options(spec, Some(kind), opts)?;
        let plan = RequestPlan::from_options(spec, parsed.version, opts)?;
        let url = parsed.url();
        let uri_text = match parsed.version {
            Version::Http1 => parsed.path_and_query.clone(),
            Version::H2c => url.clone(),
        };
        let uri: Uri = uri_text
            .parse()
            .map_err(|e| invalid(spec, format!("URL {url:?}: {e}")))?;
        let host = HeaderValue::from_str(&parsed.authority())
            .map_err(|e| invalid(spec, format!("host {:?}: {e}", parsed.authority())))?;
        let addrs = resolve(&parsed)
            .await
            .map_err(|m| TargetError::setup(spec, m))?;
        let slots = opts.conns.max(1);
        let mut target = HttpTarget {
            describe: format!(
                "{} ({} {}, {slots} connections)",
                spec.trim(),
                plan.method,
                match parsed.version {
                    Version::Http1 => "HTTP/1.1",
                    Version::H2c => "HTTP/2",
                }
            ),
            spec: parsed,
            addrs,
            plan,
            uri,
            host,
            pool: Pool::H1(ConnPool::new(1, None)),
            connects: AtomicU64::new(0),
        };
        // Every OpError message already names the method and the URL.
        let fail = |e: OpError| TargetError::setup(spec, e.message);
        target.pool = match target.spec.version {
            Version::Http1 => {
                let first = target.connect_h1().await.map_err(fail)?;
                Pool::H1(ConnPool::new(slots, Some(first)))
            }
            Version::H2c => {
                let first = target.connect_h2().await.map_err(fail)?;
                Pool::H2(slots_with_first(slots, first))
            }
        };
        Ok(target)
    }

    /// The parsed spec.
    pub fn spec(&self) -> &HttpSpec {
        &self.spec
    }

    /// Connections opened so far (the first one, reconnects after a close or a cancel).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Opens a TCP connection to the first resolved address that answers.
    async fn dial(&self) -> Result<TokioIo<TcpStream>, OpError> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let mut last = String::from("no address");
        for addr in &self.addrs {
            match tokio::time::timeout(CONNECT_BOUND, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    // Requests are small and latency-bound: never wait for Nagle.
                    let _ = s.set_nodelay(true);
                    return Ok(TokioIo::new(s));
                }
                Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
                Err(_) => {
                    last = format!("connecting to {addr}: no answer within {CONNECT_BOUND:?}")
                }
            }
        }
        Err(OpError::new(
            KIND_CONNECT,
            format!("{} {}: {last}", self.plan.method, self.spec.url()),
        ))
    }

    async fn connect_h1(&self) -> Result<H1Conn, OpError> {
        let io = self.dial().await?;
        let (sender, conn) = http1::handshake(io).await.map_err(|e| self.op_error(&e))?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H1Conn {
            sender,
            _task: AbortOnDrop(task.abort_handle()),
        })
    }

    async fn connect_h2(&self) -> Result<H2Conn, OpError> {
        let io = self.dial().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| self.op_error(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn { sender })
    }

    fn op_error(&self, e: &hyper::Error) -> OpError {
        let kind = failure_kind(&Failure::of_hyper(e));
        OpError::new(
            kind,
            format!("{} {}: {e}", self.plan.method, self.spec.url()),
        )
    }

    /// The request of operation `seq`: the plan's headers, and `Host` unless one of them
    /// is a `Host` (HTTP/2 sends the authority as `:authority` instead).
    fn request(&self, seq: u64) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.plan.body(seq)));
        *req.method_mut() = self.plan.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.plan.headers.clone();
        if self.spec.version == Version::Http1 && !self.plan.headers.contains_key(HOST) {
            req.headers_mut().insert(HOST, self.host.clone());
        }
        req
    }

    /// One request on a pooled HTTP/1.1 connection (see the module doc for what a cancel
    /// does).
    async fn call_h1(&self, pool: &ConnPool<H1Conn>, seq: u64) -> Result<(), OpError> {
        let Some(mut lease) = pool.lease().await else {
            return Err(OpError::new(KIND_PROTOCOL, "connection pool closed"));
        };
        let mut fresh = false;
        let mut conn = match lease.take() {
            Some(c) if !c.sender.is_closed() => c,
            _ => {
                fresh = true;
                self.connect_h1().await?
            }
        };
        if conn.sender.ready().await.is_err() {
            // Closed by the server while idle: nothing was sent on it yet.
            fresh = true;
            conn = self.connect_h1().await?;
            conn.sender.ready().await.map_err(|e| self.op_error(&e))?;
        }
        let res = match conn.sender.send_request(self.request(seq)).await {
            Err(e) if e.is_canceled() && !fresh => {
                // Never sent (the connection closed first): safe to send once more.
                conn = self.connect_h1().await?;
                conn.sender.ready().await.map_err(|e| self.op_error(&e))?;
                conn.sender.send_request(self.request(seq)).await
            }
            other => other,
        }
        .map_err(|e| self.op_error(&e))?;
        let status = self.drain(res).await?;
        lease.put_back(conn);
        self.judge(status)
    }

    /// One request on an HTTP/2 slot: the connection is shared, the stream is ours.
    async fn call_h2(&self, slot: &Mutex<Option<H2Conn>>, seq: u64) -> Result<(), OpError> {
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(c) if !c.sender.is_closed() => c.sender.clone(),
                _ => {
                    *guard = None;
                    let c = self.connect_h2().await?;
                    let s = c.sender.clone();
                    *guard = Some(c);
                    s
                }
            }
        };
        sender.ready().await.map_err(|e| self.op_error(&e))?;
        let res = sender
            .send_request(self.request(seq))
            .await
            .map_err(|e| self.op_error(&e))?;
        let status = self.drain(res).await?;
        self.judge(status)
    }

    /// Reads the response body to its end (bounded by [`MAX_BODY_BYTES`]); its status.
    async fn drain(&self, res: Response<hyper::body::Incoming>) -> Result<u16, OpError> {
        let status = res.status().as_u16();
        let too_large = |n: u64| {
            OpError::new(
                KIND_BODY_TOO_LARGE,
                format!(
                    "{} {}: response body of {n} bytes or more, over the limit of {MAX_BODY_BYTES}",
                    self.plan.method,
                    self.spec.url()
                ),
            )
        };
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES) {
            return Err(too_large(n));
        }
        let mut body = res.into_body();
        let mut read = 0u64;
        // Bounded: every frame adds its bytes, and past MAX_BODY_BYTES the loop ends.
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.op_error(&e))?;
            if let Some(d) = frame.data_ref() {
                read += d.len() as u64;
                if read > MAX_BODY_BYTES {
                    return Err(too_large(read));
                }
            }
        }
        Ok(status)
    }

    fn judge(&self, status: u16) -> Result<(), OpError> {
        match status_kind(status) {
            None => Ok(()),
            Some(kind) => Err(OpError::new(
                kind,
                format!(
                    "{} {}: status {status}{}",
                    self.plan.method,
                    self.spec.url(),
                    hyper::StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    async fn op(&self, seq: u64) -> Result<(), OpError> {
        let call = async {
            match &self.pool {
                Pool::H1(pool) => self.call_h1(pool, seq).await,
                Pool::H2(slots) => match slots.get((seq % slots.len() as u64) as usize) {
                    Some(slot) => self.call_h2(slot, seq).await,
                    None => Err(OpError::new(KIND_PROTOCOL, "empty connection pool")),
                },
            }
        };
        match tokio::time::timeout(REQUEST_BOUND, call).await {
            Ok(r) => r,
            Err(_) => Err(OpError::new(
                KIND_TIMEOUT,
                format!(
                    "{} {}: no complete response within {REQUEST_BOUND:?}",
                    self.plan.method,
                    self.spec.url()
                ),
            )),
        }
    }
}

/// `n` empty slots, the first holding `first`.
fn slots_with_first<C>(n: usize, first: C) -> Vec<Mutex<Option<C>>> {
    let mut first = Some(first);
    (0..n).map(|_| Mutex::new(first.take())).collect()
}

/// The addresses of the spec's host, within [`CONNECT_BOUND`].
async fn resolve(spec: &HttpSpec) -> Result<Vec<SocketAddr>, String> {
    let url = spec.url();
    let found = tokio::time::timeout(
        CONNECT_BOUND,
        tokio::net::lookup_host((spec.lookup_host(), spec.port)),
    )
    .await
    .map_err(|_| {
        format!(
            "{url}: looking up {:?} took over {CONNECT_BOUND:?}",
            spec.host
        )
    })?
    .map_err(|e| format!("{url}: looking up {:?}: {e}", spec.host))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(format!("{url}: {:?} has no address", spec.host));
    }
    Ok(addrs)
}

impl Target for HttpTarget {
    fn actions(&self) -> Vec<String> {
        vec![self.plan.method.to_string()]
    }

    fn call(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(self.op(seq))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_is_authority_and_ipv6_lookups_lose_brackets() {
        let s = parse("http://[::1]:8080/x").unwrap();
        assert_eq!(s.authority(), "[::1]:8080");
        assert_eq!(s.lookup_host(), "::1");
        assert_eq!(parse("h2c://h/").unwrap().url(), "http://h:80/");
    }
}
