//! The client library: one API that talks to the daemon over its Unix socket or, in direct
//! mode, opens the database file itself.
//!
//! - [`Mode::Auto`] (the default) uses the daemon when one listens on the socket and falls
//!   back to direct mode when none does (the socket file is missing or nobody accepts on
//!   it). The fallback is logged once, when the client connects, and its reason stays
//!   readable through [`Client::fallback_reason`]. A daemon that answers but refuses the
//!   hello (`wrong_database`, `version_mismatch`, `overloaded`, …) is an error, never a
//!   fallback: a client must never reach another database than the one it named.
//! - [`Mode::DaemonOnly`] never opens the file; [`Mode::Direct`] never touches the socket.
//! - Every call is bounded by [`ClientConfig::timeout`], measured on the client. After a
//!   timeout the connection is in an unknown state: it is dropped and the next call
//!   reconnects (at most one reconnect per call).
//! - A client connected to a daemon stays a daemon client: if the daemon goes away, calls
//!   fail ([`ClientError::Connect`] on the reconnect) instead of silently switching to the
//!   file; connect a new client to fall back.
//! - Direct mode opens one [`Store`] and runs each call on the blocking pool. It has no
//!   frame cap and no server-side deadline, and a timed-out call may still finish in the
//!   background, exactly like a timed-out request to the daemon.
//!
//! Whether a failed call was applied: a [`ClientError::Api`] error means it was not (the
//! store rolls back; `PROTOCOL.md` §7 names the two exceptions of the daemon); a [`ClientError::Timeout`] or a connection lost after the request was
//! sent means the caller cannot know. A request that could not be sent completely is never
//! applied, so the client retries it once on a fresh connection; a read-only request whose
//! answer was lost is retried the same way.

use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::error::{ApiError, Code};
use crate::model::{CreateArgs, Dep, Issue, ListArgs, Op, Reply, Stats, UpdateArgs};
use crate::proto::{
    read_frame, write_frame, FrameError, Hello, HelloFrame, Response, Welcome, WelcomeFrame,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use crate::server::default_socket_path;
use crate::store::{canonical_db_path, Store, StoreConfig};

/// The client-side timeout of one call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the client sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The daemon if one listens on the socket, else the database file directly.
    #[default]
    Auto,
    /// Only the daemon; no daemon is a [`ClientError::Connect`] error.
    DaemonOnly,
    /// Only the database file (`--no-daemon`).
    Direct,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The database file (its directory must exist).
    pub db: PathBuf,
    /// The daemon's socket; default `<db>.sock` beside the database file
    /// ([`default_socket_path`], the daemon's own default).
    pub socket: Option<PathBuf>,
    /// Daemon, direct, or whichever is available.
    pub mode: Mode,
    /// Client-side bound on each call (connecting included); default 30 s.
    pub timeout: Duration,
    /// Sent as `deadline_ms`: the daemon gives up on a request after this long and
    /// applies nothing. `None` leaves the daemon's default.
    pub deadline: Option<Duration>,
    /// Connection settings of direct mode.
    pub store: StoreConfig,
    /// After sending a request, look for the reply without sleeping for up to this long
    /// before waiting for it the usual way. Only on a current-thread tokio runtime (the
    /// thread of one agent waiting for its reply anyway: on a multi-thread runtime a poll
    /// would hold a worker other tasks need), and only while this connection's replies
    /// come within this long on average (a moving average, weight 1/8, of the time from
    /// sending to reading the reply). Default [`DEFAULT_BUSY_POLL`]; zero never polls.
    /// On virtual machines a sleeping thread can take tens of microseconds to wake up,
    /// which is most of a lone client's round trip; polling saves that at the price of
    /// this thread staying on its core (yielding it to anything else runnable) until the
    /// reply comes. When the daemon is busy with many agents, replies take longer and
    /// polling turns itself off, so agents sharing few cores do not spin against the
    /// daemon; it turns back on when replies are quick again. At most [`MAX_BUSY_POLL`].
    pub busy_poll: Duration,
}

/// The longest [`ClientConfig::busy_poll`] allowed.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// The default [`ClientConfig::busy_poll`]: above a lone client's create round trip on a
/// 2-core VM (60–80 µs polling, 110–140 µs sleeping), below the daemon's round trip with
/// 8 agents creating at once (300 µs and up).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(200);

impl ClientConfig {
    /// Defaults for the database at `db`: [`Mode::Auto`], the default socket, 30 s timeout.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        ClientConfig {
            db: db.into(),
            socket: None,
            mode: Mode::Auto,
            timeout: DEFAULT_TIMEOUT,
            deadline: None,
            store: StoreConfig::default(),
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }

    /// The socket this configuration uses: [`ClientConfig::socket`] or `<db>.sock`.
    pub fn socket_path(&self) -> PathBuf {
        match &self.socket {
            Some(s) => s.clone(),
            None => default_socket_path(&self.db),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon's or the store's error reply, code preserved. Nothing was applied.
    #[error("{0}")]
    Api(ApiError),
    /// No answer within the client timeout; the request may or may not have been applied.
    #[error("no answer within {after:?}; the request may or may not have been applied")]
    Timeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The socket could not be connected.
    #[error("cannot connect to the daemon at {}: {source}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon answered the hello with a refusal (or a welcome for another database).
    #[error("the daemon refused the hello: {0}")]
    Handshake(ApiError),
    /// The daemon sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection failed. When that happened after a write was sent, the write may or
    /// may not have been applied.
    #[error("i/o: {0}")]
    Io(io::Error),
}

impl ClientError {
    /// A short stable name: the [`Code`] for `Api` and `Handshake`, else `timeout`,
    /// `connect`, `protocol` or `io`.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Api(e) | ClientError::Handshake(e) => e.code.as_str(),
            ClientError::Timeout { .. } => "timeout",
            ClientError::Connect { .. } => "connect",
            ClientError::Protocol(_) => "protocol",
            ClientError::Io(_) => "io",
        }
    }

    /// The error reply's code, for `Api` and `Handshake`.
    pub fn api_code(&self) -> Option<Code> {
        match self {
            ClientError::Api(e) | ClientError::Handshake(e) => Some(e.code),
            _ => None,
        }
    }

    /// The message without the code prefix (what the CLI prints after `error: <code>: `).
    pub fn message(&self) -> String {
        match self {
            ClientError::Api(e) => match e.index {
                Some(i) if !e.message.contains(&format!("operation {i}")) => {
                    format!("{} (operation {i})", e.message)
                }
                _ => e.message.clone(),
            },
            ClientError::Handshake(e) => format!("the daemon refused the hello: {}", e.message),
            other => other.to_string(),
        }
    }
}

/// A client of one database, through the daemon or directly.
pub struct Client {
    inner: Inner,
    db: PathBuf,
    timeout: Duration,
    fallback: Option<String>,
}

enum Inner {
    Daemon(Box<DaemonConn>),
    Direct(Arc<Mutex<Store>>),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("db", &self.db)
            .field("direct", &self.is_direct())
            .field("socket", &self.socket())
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl Client {
    /// Connects as `cfg.mode` says: to the daemon (socket connect and hello), to the file,
    /// or to the daemon with a fallback to the file when no daemon listens. Bounded by
    /// `cfg.timeout`.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.busy_poll > MAX_BUSY_POLL {
            return Err(ClientError::Api(ApiError::invalid(format!(
                "busy_poll of {:?}: expected at most {MAX_BUSY_POLL:?}",
                cfg.busy_poll
            ))));
        }
        let db = canonical_db_path(&cfg.db).map_err(ClientError::Api)?;
        let timeout = cfg.timeout;
        let until = Instant::now() + timeout;
        if cfg.mode == Mode::Direct {
            return Client::direct(db, &cfg, until, None).await;
        }
        let socket = cfg.socket_path();
        let stream = match tokio::time::timeout_at(until, UnixStream::connect(&socket)).await {
            Err(_) => return Err(ClientError::Timeout { after: timeout }),
            Ok(Ok(s)) => s,
            Ok(Err(e)) if cfg.mode == Mode::Auto && no_daemon(&e) => {
                let reason = format!(
                    "no daemon listens on {} ({e}); using the database {} directly",
                    socket.display(),
                    db.display()
                );
                tracing::info!(socket = %socket.display(), db = %db.display(), "{reason}");
                return Client::direct(db, &cfg, until, Some(reason)).await;
            }
            Ok(Err(e)) => return Err(ClientError::Connect { socket, source: e }),
        };
        let mut conn = DaemonConn {
            hello: HelloFrame {
                hello: Hello {
                    protocol: PROTOCOL_VERSION,
                    db: db.to_string_lossy().into_owned(),
                    client: Some(format!("rpc-daemon-client/{}", env!("CARGO_PKG_VERSION"))),
                },
            },
            socket,
            stream: None,
            welcome: None,
            next_id: 1,
            deadline_ms: cfg
                .deadline
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            busy_poll: cfg.busy_poll,
            pace: ReplyPace::default(),
        };
        match tokio::time::timeout_at(until, conn.handshake(stream)).await {
            Err(_) => return Err(ClientError::Timeout { after: timeout }),
            Ok(r) => r?,
        }
        Ok(Client {
            inner: Inner::Daemon(Box::new(conn)),
            db,
            timeout,
            fallback: None,
        })
    }

    async fn direct(
        db: PathBuf,
        cfg: &ClientConfig,
        until: Instant,
        fallback: Option<String>,
    ) -> Result<Client, ClientError> {
        let store = open_direct(&db, cfg.store, until, cfg.timeout).await?;
        Ok(Client {
            inner: Inner::Direct(store),
            db,
            timeout: cfg.timeout,
            fallback,
        })
    }

    /// Whether calls go to the database file rather than to a daemon.
    pub fn is_direct(&self) -> bool {
        matches!(self.inner, Inner::Direct(_))
    }

    /// Why [`Mode::Auto`] fell back to direct mode, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The canonical path of the database.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// The daemon's socket, when connected to a daemon.
    pub fn socket(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Daemon(c) => Some(&c.socket),
            Inner::Direct(_) => None,
        }
    }

    /// The daemon's last welcome, when connected to a daemon.
    pub fn welcome(&self) -> Option<&Welcome> {
        match &self.inner {
            Inner::Daemon(c) => c.welcome.as_ref(),
            Inner::Direct(_) => None,
        }
    }

    /// Runs one operation and returns its reply.
    pub async fn call(&mut self, op: Op) -> Result<Reply, ClientError> {
        match &mut self.inner {
            Inner::Direct(store) => direct_call(Arc::clone(store), op, self.timeout).await,
            Inner::Daemon(conn) => {
                let until = Instant::now() + self.timeout;
                match tokio::time::timeout_at(until, conn.call(&op)).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The answer may still come: the connection is in an unknown state.
                        conn.stream = None;
                        Err(ClientError::Timeout {
                            after: self.timeout,
                        })
                    }
                }
            }
        }
    }

    /// `ping`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(Op::Ping {}).await? {
            Reply::Pong { .. } => Ok(()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// `create`: the new issue.
    pub async fn create(&mut self, args: CreateArgs) -> Result<Issue, ClientError> {
        let reply = self.call(Op::Create(args)).await?;
        issue_of("create", reply)
    }

    /// `update`: the issue after the change.
    pub async fn update(&mut self, args: UpdateArgs) -> Result<Issue, ClientError> {
        let reply = self.call(Op::Update(args)).await?;
        issue_of("update", reply)
    }

    /// `close`: the closed issue (closing a closed issue changes nothing).
    pub async fn close(
        &mut self,
        id: impl Into<String>,
        reason: Option<String>,
    ) -> Result<Issue, ClientError> {
        let reply = self
            .call(Op::Close {
                id: id.into(),
                reason,
            })
            .await?;
        issue_of("close", reply)
    }

    /// `show`: the issue and the dependency edges where it is either side.
    pub async fn show(&mut self, id: impl Into<String>) -> Result<(Issue, Vec<Dep>), ClientError> {
        match self.call(Op::Show { id: id.into() }).await? {
            Reply::Detail { issue, deps } => Ok((issue, deps)),
            other => Err(unexpected("show", &other)),
        }
    }

    /// `list`: matching issues, newest first.
    pub async fn list(&mut self, args: ListArgs) -> Result<Vec<Issue>, ClientError> {
        let reply = self.call(Op::List(args)).await?;
        issues_of("list", reply)
    }

    /// `ready`: open issues without an open blocker, by priority then age.
    pub async fn ready(&mut self, limit: Option<u32>) -> Result<Vec<Issue>, ClientError> {
        let reply = self.call(Op::Ready { limit }).await?;
        issues_of("ready", reply)
    }

    /// `dep_add`: the edge.
    pub async fn dep_add(&mut self, dep: Dep) -> Result<Dep, ClientError> {
        let reply = self.call(Op::DepAdd(dep)).await?;
        dep_of("dep_add", reply)
    }

    /// `dep_remove`: the edge.
    pub async fn dep_remove(&mut self, dep: Dep) -> Result<Dep, ClientError> {
        let reply = self.call(Op::DepRemove(dep)).await?;
        dep_of("dep_remove", reply)
    }

    /// `batch`: one reply per operation, in order; all applied or none.
    pub async fn batch(&mut self, ops: Vec<Op>) -> Result<Vec<Reply>, ClientError> {
        match self.call(Op::Batch { ops }).await? {
            Reply::Batch { results } => Ok(results),
            other => Err(unexpected("batch", &other)),
        }
    }

    /// `stats`.
    pub async fn stats(&mut self) -> Result<Stats, ClientError> {
        match self.call(Op::Stats {}).await? {
            Reply::Stats { stats } => Ok(stats),
            other => Err(unexpected("stats", &other)),
        }
    }
}

fn unexpected(op: &str, reply: &Reply) -> ClientError {
    let shape = serde_json::to_string(reply).unwrap_or_else(|e| e.to_string());
    let shape: String = shape.chars().take(200).collect();
    ClientError::Protocol(format!("unexpected reply to {op}: {shape}"))
}

fn issue_of(op: &str, reply: Reply) -> Result<Issue, ClientError> {
    match reply {
        Reply::Issue { issue } => Ok(issue),
        other => Err(unexpected(op, &other)),
    }
}

fn issues_of(op: &str, reply: Reply) -> Result<Vec<Issue>, ClientError> {
    match reply {
        Reply::Issues { issues } => Ok(issues),
        other => Err(unexpected(op, &other)),
    }
}

fn dep_of(op: &str, reply: Reply) -> Result<Dep, ClientError> {
    match reply {
        Reply::Dep { dep } => Ok(dep),
        other => Err(unexpected(op, &other)),
    }
}

/// Whether a connect error means "no daemon here" (the only case Auto falls back on).
fn no_daemon(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

// ---------------------------------------------------------------------------------------
// Direct mode

async fn open_direct(
    db: &Path,
    cfg: StoreConfig,
    until: Instant,
    timeout: Duration,
) -> Result<Arc<Mutex<Store>>, ClientError> {
    let path = db.to_path_buf();
    let task = tokio::task::spawn_blocking(move || Store::open(&path, &cfg));
    match tokio::time::timeout_at(until, task).await {
        Err(_) => Err(ClientError::Timeout { after: timeout }),
        Ok(Err(join)) => Err(ClientError::Api(ApiError::internal(format!(
            "opening the database failed: {join}"
        )))),
        Ok(Ok(Err(e))) => Err(ClientError::Api(e)),
        Ok(Ok(Ok(store))) => Ok(Arc::new(Mutex::new(store))),
    }
}

async fn direct_call(
    store: Arc<Mutex<Store>>,
    op: Op,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let task = tokio::task::spawn_blocking(move || {
        // A panic inside `apply` dropped its transaction (rolled back): the store is usable.
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        store.apply(&op)
    });
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(ClientError::Timeout { after: timeout }),
        Ok(Err(join)) => Err(ClientError::Api(ApiError::internal(format!(
            "direct-mode call failed: {join}"
        )))),
        Ok(Ok(r)) => r.map_err(ClientError::Api),
    }
}

// ---------------------------------------------------------------------------------------
// Daemon mode

struct DaemonConn {
    socket: PathBuf,
    hello: HelloFrame,
    /// `None` after a timeout or a broken connection: the next call reconnects.
    stream: Option<UnixStream>,
    welcome: Option<Welcome>,
    next_id: u64,
    deadline_ms: Option<u64>,
    busy_poll: Duration,
    /// How quickly this connection's replies have come.
    pace: ReplyPace,
}

/// How one request/response exchange failed.
enum Failure {
    /// The request frame was not delivered completely: it cannot have been applied.
    NotSent(io::Error),
    /// The connection broke after the request was sent: it may have been applied.
    Lost(io::Error),
    /// Anything else (a protocol violation, an error reply): returned as is.
    Other(ClientError),
}

impl Failure {
    fn into_error(self) -> ClientError {
        match self {
            Failure::NotSent(e) | Failure::Lost(e) => ClientError::Io(e),
            Failure::Other(e) => e,
        }
    }
}

impl DaemonConn {
    /// Sends the hello on a connected stream and checks the welcome.
    async fn handshake(&mut self, mut stream: UnixStream) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&self.hello)
            .map_err(|e| ClientError::Protocol(format!("encoding the hello: {e}")))?;
        write_frame(&mut stream, &body)
            .await
            .map_err(|e| frame_error("sending the hello", e))?;
        let frame = read_frame(&mut stream, MAX_FRAME_BYTES)
            .await
            .map_err(|e| frame_error("reading the welcome", e))?
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "the daemon at {} closed the connection instead of answering the hello",
                    self.socket.display()
                ))
            })?;
        let welcome: WelcomeFrame = serde_json::from_slice(&frame).map_err(|e| {
            ClientError::Protocol(format!(
                "the answer to the hello is not a welcome: {e}: {}",
                snippet(&frame)
            ))
        })?;
        let welcome = match welcome {
            WelcomeFrame { error: Some(e), .. } => return Err(ClientError::Handshake(e)),
            WelcomeFrame {
                hello: Some(w),
                error: None,
            } => w,
            WelcomeFrame {
                hello: None,
                error: None,
            } => {
                return Err(ClientError::Protocol(
                    "the answer to the hello carries neither hello nor error".into(),
                ))
            }
        };
        // Never trust a welcome for another database or protocol than the one asked for.
        if welcome.protocol != PROTOCOL_VERSION {
            return Err(ClientError::Handshake(ApiError::new(
                Code::VersionMismatch,
                format!(
                    "the daemon welcomed protocol {}, this client speaks {PROTOCOL_VERSION}",
                    welcome.protocol
                ),
            )));
        }
        if welcome.db != self.hello.hello.db {
            return Err(ClientError::Handshake(ApiError::new(
                Code::WrongDatabase,
                format!(
                    "the daemon serves {:?}, this client asked for {:?}",
                    welcome.db, self.hello.hello.db
                ),
            )));
        }
        tracing::debug!(socket = %self.socket.display(), server = %welcome.server, "connected to the daemon");
        self.welcome = Some(welcome);
        self.stream = Some(stream);
        Ok(())
    }

    async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.stream = None;
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        self.handshake(stream).await
    }

    /// Whether the kept connection was closed by the daemon (idle timeout, restart) or has
    /// unexpected bytes waiting: either way it must not carry the next request.
    fn is_stale(&self) -> bool {
        let Some(stream) = &self.stream else {
            return true;
        };
        let mut byte = [0u8; 1];
        match stream.try_read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Ok(_) | Err(_) => true,
        }
    }

    /// One call: at most one reconnect, at most one retry (only when the request cannot
    /// have been applied, or is a read).
    async fn call(&mut self, op: &Op) -> Result<Reply, ClientError> {
        let body = op_to_wire(op)?;
        let mut reconnected = false;
        if self.is_stale() {
            self.reconnect().await?;
            reconnected = true;
        }
        loop {
            match self.exchange(&body).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::NotSent(e)) if !reconnected => {
                    tracing::debug!(error = %e, "request not delivered; reconnecting once");
                }
                Err(Failure::Lost(e)) if !reconnected && !op.is_write() => {
                    tracing::debug!(error = %e, "connection lost during a read; reconnecting once");
                }
                Err(f) => {
                    if !matches!(&f, Failure::Other(ClientError::Api(_))) {
                        self.stream = None;
                    }
                    return Err(f.into_error());
                }
            }
            self.reconnect().await?;
            reconnected = true;
        }
    }

    /// Sends one request and reads its response.
    async fn exchange(&mut self, body: &serde_json::Value) -> Result<Reply, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = serde_json::Map::new();
        request.insert("id".into(), id.into());
        if let Some(ms) = self.deadline_ms {
            request.insert("deadline_ms".into(), ms.into());
        }
        request.insert("body".into(), body.clone());
        let bytes = serde_json::to_vec(&request).map_err(|e| {
            Failure::Other(ClientError::Protocol(format!("encoding the request: {e}")))
        })?;
        if bytes.len() > MAX_FRAME_BYTES as usize {
            // Refused before anything is written: the connection stays usable.
            return Err(Failure::Other(ClientError::Api(ApiError::new(
                Code::TooLarge,
                format!(
                    "request of {} bytes is over the frame limit of {MAX_FRAME_BYTES} bytes",
                    bytes.len()
                ),
            ))));
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| Failure::NotSent(io::Error::other("not connected")))?;
        match write_frame(stream, &bytes).await {
            Ok(()) => {}
            Err(FrameError::Io(e)) => return Err(Failure::NotSent(e)),
            Err(e) => return Err(Failure::NotSent(io::Error::other(e.to_string()))),
        }
        let sent = Instant::now();
        if self.pace.polls(self.busy_poll) && on_current_thread_runtime() {
            poll_for_reply(stream, self.busy_poll);
        }
        let frame = match read_frame(stream, MAX_FRAME_BYTES).await {
            Ok(Some(f)) => {
                self.pace.record(sent.elapsed());
                f
            }
            Ok(None) => {
                return Err(Failure::Lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection before answering",
                )))
            }
            Err(FrameError::Io(e)) => return Err(Failure::Lost(e)),
            Err(e @ FrameError::Truncated { .. }) => {
                return Err(Failure::Lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    e.to_string(),
                )))
            }
            Err(e @ FrameError::TooLarge { .. }) => {
                return Err(Failure::Other(ClientError::Protocol(format!(
                    "response: {e}"
                ))))
            }
        };
        let response: Response = serde_json::from_slice(&frame).map_err(|e| {
            Failure::Other(ClientError::Protocol(format!(
                "response to request {id} is not a response: {e}: {}",
                snippet(&frame)
            )))
        })?;
        match response.id {
            Some(got) if got == id => response
                .into_result()
                .map_err(|e| Failure::Other(ClientError::Api(e))),
            Some(got) => Err(Failure::Other(ClientError::Protocol(format!(
                "response for request {got} while waiting for request {id}"
            )))),
            // Only an error may come without an id (a request the daemon could not read, or
            // a notice before it closes); the connection is not trusted afterwards.
            None => match response.error {
                Some(e) => {
                    self.stream = None;
                    Err(Failure::Other(ClientError::Api(e)))
                }
                None => Err(Failure::Other(ClientError::Protocol(format!(
                    "response without an id while waiting for request {id}"
                )))),
            },
        }
    }
}

/// The wire form of an operation.
fn op_to_wire(op: &Op) -> Result<serde_json::Value, ClientError> {
    serde_json::to_value(op)
        .map_err(|e| ClientError::Protocol(format!("encoding {}: {e}", op.name())))
}

fn frame_error(what: &str, e: FrameError) -> ClientError {
    match e {
        FrameError::Io(e) => ClientError::Io(io::Error::new(e.kind(), format!("{what}: {e}"))),
        other => ClientError::Protocol(format!("{what}: {other}")),
    }
}

/// Whether the calling task runs on a current-thread tokio runtime, the only kind where a
/// client busy-polls ([`ClientConfig::busy_poll`]).
fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// A moving average (weight 1/8) of the time from sending a request to reading its reply,
/// which decides whether the next call busy-polls ([`ClientConfig::busy_poll`]).
#[derive(Debug, Default, Clone, Copy)]
struct ReplyPace {
    average: Duration,
}

impl ReplyPace {
    /// Whether to busy-poll for up to `busy_poll`: never when it is zero, otherwise while
    /// replies came within it on average.
    fn polls(&self, busy_poll: Duration) -> bool {
        !busy_poll.is_zero() && self.average <= busy_poll
    }

    /// Counts one reply that came `after` its request was sent.
    fn record(&mut self, after: Duration) {
        self.average = (self.average * 7 + after) / 8;
    }
}

/// Looks until the socket has a byte to read, or `spin` passed, yielding the core between
/// looks to any other runnable thread (the daemon may need it); the read that follows finds
/// the reply without the reactor having to wake this thread.
fn poll_for_reply(stream: &UnixStream, spin: Duration) {
    let fd = stream.as_raw_fd();
    let until = Instant::now() + spin;
    let mut byte = 0u8;
    loop {
        // SAFETY: `fd` is the open socket `stream` borrows for this whole call, and the
        // buffer is one valid byte; MSG_PEEK leaves the data for the read, MSG_DONTWAIT
        // never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                std::ptr::addr_of_mut!(byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // A byte, end of stream (0) or an error other than "nothing yet": the read decides.
        let waiting = n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
        if !waiting || Instant::now() >= until {
            return;
        }
        std::thread::yield_now();
    }
}

fn snippet(frame: &[u8]) -> String {
    String::from_utf8_lossy(&frame[..frame.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_stops_while_replies_are_slow_and_resumes_when_they_are_quick() {
        let poll = Duration::from_micros(200);
        let mut pace = ReplyPace::default();
        assert!(pace.polls(poll), "a new connection polls");
        assert!(!pace.polls(Duration::ZERO), "zero never polls");
        for _ in 0..4 {
            pace.record(Duration::from_micros(70));
        }
        assert!(pace.polls(poll));
        // One slow reply among quick ones does not turn polling off...
        pace.record(Duration::from_micros(900));
        assert!(pace.polls(poll), "{pace:?}");
        // ...a loaded daemon's steady slow replies do.
        for _ in 0..16 {
            pace.record(Duration::from_micros(400));
        }
        assert!(!pace.polls(poll), "{pace:?}");
        // Quick again (even measured without polling): polling comes back.
        for _ in 0..32 {
            pace.record(Duration::from_micros(120));
        }
        assert!(pace.polls(poll), "{pace:?}");
        assert!(!pace.polls(Duration::ZERO));
    }

    #[test]
    fn an_absent_assignee_stays_absent_on_the_wire() {
        let keep = Op::Update(UpdateArgs {
            id: "hl-1".into(),
            title: Some("t".into()),
            ..UpdateArgs::default()
        });
        let clear = Op::Update(UpdateArgs {
            id: "hl-1".into(),
            assignee: Some(None),
            ..UpdateArgs::default()
        });
        let batch = Op::Batch {
            ops: vec![keep.clone(), clear.clone()],
        };
        let wire = op_to_wire(&batch).unwrap();
        let back: Op = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(back, batch, "{wire}");
        assert!(wire["ops"][0].get("assignee").is_none(), "{wire}");
        assert!(wire["ops"][1]["assignee"].is_null(), "{wire}");
        assert_eq!(
            serde_json::from_value::<Op>(op_to_wire(&keep).unwrap()).unwrap(),
            keep
        );
    }

    #[test]
    fn socket_defaults_beside_the_database() {
        assert_eq!(
            default_socket_path(Path::new("/x/issues.db")),
            Path::new("/x/issues.db.sock")
        );
        let mut cfg = ClientConfig::new("/x/issues.db");
        assert_eq!(cfg.socket_path(), Path::new("/x/issues.db.sock"));
        cfg.socket = Some("/run/s".into());
        assert_eq!(cfg.socket_path(), Path::new("/run/s"));
    }

    #[test]
    fn error_codes_and_messages() {
        let e = ClientError::Api(ApiError {
            code: Code::BatchFailed,
            message: "operation 1 (close) failed".into(),
            index: Some(1),
        });
        assert_eq!(e.code(), "batch_failed");
        assert_eq!(e.message(), "operation 1 (close) failed");
        let t = ClientError::Timeout {
            after: Duration::from_secs(1),
        };
        assert_eq!(t.code(), "timeout");
        assert_eq!(t.api_code(), None);
    }
}
