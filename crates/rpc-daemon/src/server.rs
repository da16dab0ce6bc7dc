//! The daemon: serves one SQLite database to many clients over a Unix socket.
//!
//! # Shape
//!
//! - **One writer** thread owns the read-write [`Store`] and commits concurrent writes
//!   together (group commit): request handlers put each write on a bounded queue
//!   ([`WRITE_QUEUE_CAPACITY`]); the writer takes what is queued (up to
//!   [`ServerConfig::max_group`]), runs it through [`Store::apply_group`] (one IMMEDIATE
//!   transaction, a savepoint per request) and answers each request through its own
//!   oneshot channel only after the commit returned. If the group transaction itself fails,
//!   every request of the group gets that error and nothing was applied.
//! - **Writes of a lone client** skip the writer thread: when a write's connection is the
//!   only one open, no other write is in flight, the queue is empty and the write
//!   connection is free (`try_lock`, never a wait), a single write (not a batch) runs at
//!   once on the request's task, as a group of one, with SQLite's busy wait off; if
//!   another process holds SQLite's lock it goes to the queue like any other write. This
//!   saves the two thread hand-offs that were most of a lone create's latency; with
//!   several clients writes always group. Not with [`Durability::Full`]: an fsync per
//!   commit must not run on a tokio worker. [`ServerStats::inline_writes`] counts them.
//! - **Checkpoints** never run inside a commit: the write connection's WAL hook only flags
//!   that the log passed [`CHECKPOINT_PAGES`], and the writer thread runs a PASSIVE
//!   checkpoint between groups (SQLite's automatic one would stall whichever commit
//!   crossed the threshold for milliseconds).
//! - **Readers**: [`ServerConfig::readers`] threads, each owning a read-only [`ReadStore`],
//!   take reads from a second bounded queue ([`READ_QUEUE_CAPACITY`]). SQLite is blocking:
//!   apart from a lone client's single writes (tens of microseconds, never waiting for a
//!   lock), no tokio worker calls it. `ping` is answered without touching SQLite.
//! - **Connections**: each is one task that reads frames; every request is handled in its
//!   own task and one writer task per connection serialises the responses, so responses
//!   may come out of order and a stalled request never blocks the others, even on the same
//!   connection. At most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests of one connection are in
//!   flight; past that the connection stops reading until one finishes.
//!
//! # Deadlines
//!
//! Every request has a deadline: [`ServerConfig::default_deadline`], or less when the
//! request asks for less with `deadline_ms`. The rule is:
//!
//! **Acknowledged always means committed; `deadline_exceeded` always means not applied.**
//!
//! A write is *claimed* by the writer when it joins a group, which happens only before its
//! deadline. A write whose deadline passes before it is claimed is answered
//! `deadline_exceeded` and never applied. A claimed write is either committed and
//! acknowledged (even if its deadline passed while the group ran), or answered with the
//! error that kept its group from committing (nothing applied). When SQLite's write lock is
//! held by another connection, the writer retries the group in short slices
//! ([`WRITER_BUSY_SLICE`]); between attempts it answers the writes whose deadline passed
//! `deadline_exceeded` and those that waited longer than the store's busy timeout `busy`,
//! so a request waits at most one slice past its deadline even while SQLite is locked.
//! A read whose deadline passes is abandoned and answered `deadline_exceeded`; a reader
//! skips queued reads whose requester has gone.
//!
//! The hand-off between a request giving up and the writer claiming its write is a tokio
//! `oneshot` of its own (the *claim*): the writer claims by sending on it, the request gives
//! up by closing it and then looking whether a claim arrived first (`Receiver::close`, then
//! `try_recv`). tokio makes exactly one of the two win, so no write is both answered
//! `deadline_exceeded` and applied. The daemon has no shared structure of its own: its
//! queues and hand-offs are tokio `mpsc` and `oneshot` channels (tested by tokio, loom
//! included), its counters and gauges are atomics, the readers share their queue's
//! receiving end behind a `std` mutex, and the write connection is a `std` mutex that the
//! writer thread locks and a lone client's write only `try_lock`s. A write takes one path
//! or the other, decided once on its own task (run at once, or queued when that returns
//! `None` having applied nothing), so no write can be applied twice; the gauges only
//! choose the path, never correctness. So it has no loom model.
//!
//! # Connections and limits
//!
//! - Handshake: the first frame must be a [`HelloFrame`] with [`PROTOCOL_VERSION`] and the
//!   database this daemon serves (its canonical path); otherwise the daemon answers a
//!   [`WelcomeFrame`] with `handshake_required`, `version_mismatch` or `wrong_database`
//!   and closes. A client never reaches another database than the one it named.
//! - After the handshake: a frame that is not a valid request (bad JSON, unknown op, wrong
//!   field types) is answered `bad_request` (with its `id` when one could be read) and the
//!   connection stays open; a length prefix over [`MAX_FRAME_BYTES`] is answered
//!   `too_large` and the connection is closed (the stream cannot be resynchronised); a
//!   truncated frame closes it. A reply over the frame cap is replaced by a `too_large`
//!   error for that request.
//! - A connection with nothing in flight that sends nothing for
//!   [`ServerConfig::idle_timeout`] is closed (so is one that does not finish its hello).
//! - Past [`ServerConfig::max_connections`], a new connection gets a [`WelcomeFrame`] with
//!   `overloaded` at once and is closed; it never waits in line.
//!
//! # One daemon per database
//!
//! [`Server::bind`] takes an exclusive `flock` on `<db>.daemon.lock` (the file keeps the
//! holder's pid) for the daemon's life, so a second daemon on the same database fails with
//! [`ServerError::Locked`] naming the lock file and the pid. If the socket path exists, it
//! connects to it: if a daemon answers, [`ServerError::AlreadyRunning`]; if nothing
//! answers, the file is a stale socket left by a crash and is replaced. A path that exists
//! but is not a socket is never removed. The socket's mode is 0600.
//!
//! # Shutdown
//!
//! [`ShutdownHandle::shutdown`] (or SIGTERM/SIGINT through [`ShutdownHandle::on_signals`]):
//! the daemon stops accepting and removes its socket, answers new requests on open
//! connections `shutting_down`, lets in-flight requests finish for up to
//! [`ServerConfig::drain_timeout`] (then drops the rest), stops its threads and releases
//! the lock. [`Server::run`] returns then, with the [`ServerStats`].

use std::fs::File;
use std::future::Future;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at};

use crate::error::{ApiError, Code};
use crate::model::{Op, Reply};
use crate::proto::{
    read_frame, write_frame, write_json, FrameError, HelloFrame, Request, Response, Welcome,
    WelcomeFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use crate::store::{canonical_db_path, Durability, ReadStore, Store, StoreConfig};

/// Default [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default [`ServerConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default [`ServerConfig::default_deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::readers`].
pub const DEFAULT_READERS: usize = 4;
/// Default [`ServerConfig::max_group`].
pub const DEFAULT_MAX_GROUP: usize = 512;
/// Default [`ServerConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes waiting for the writer; a handler facing a full queue waits, bounded by its
/// deadline.
pub const WRITE_QUEUE_CAPACITY: usize = 8_192;
/// Reads waiting for a reader.
pub const READ_QUEUE_CAPACITY: usize = 1_024;
/// Requests of one connection in flight at once; past this the connection stops reading.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 512;
/// How long the writer's connection waits for SQLite's write lock before the writer looks at
/// the deadlines of its group again (the store's busy timeout bounds the whole wait).
pub const WRITER_BUSY_SLICE: Duration = Duration::from_millis(50);

/// WAL pages after which the writer runs a checkpoint (SQLite's own automatic threshold).
pub const CHECKPOINT_PAGES: u32 = 1_000;

/// Most readers, and most writes in one group, a configuration may ask for.
const MAX_READERS: usize = 64;
const MAX_GROUP_LIMIT: usize = 10_000;
/// Pause between two group attempts that found SQLite busy (guards against a busy answer
/// that comes back without waiting).
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(5);
/// How long a request whose claimed write outlived its deadline waits for the writer's
/// answer. The writer answers after its current attempt (one busy slice plus the group's
/// work), so this is a safety bound, not a schedule.
const CLAIMED_WRITE_BOUND: Duration = Duration::from_secs(60);
/// Rejections of over-limit connections being written at once; past this a rejected
/// connection is closed without the `overloaded` frame.
const MAX_REJECTING: usize = 64;
/// How long a rejected connection is kept to deliver its `overloaded` frame.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// How long probing an existing socket path may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);
/// How long [`Server::run`] waits for its threads to stop after the drain.
const THREAD_JOIN_BOUND: Duration = Duration::from_secs(30);
/// Longest a single frame write may take before the connection is considered dead.
const MAX_FRAME_WRITE: Duration = Duration::from_secs(30);

/// How the daemon is set up. [`ServerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The database file (created on first use; its directory must exist).
    pub db: PathBuf,
    /// The Unix socket to listen on; by default `<db>.sock` next to the database.
    pub socket: PathBuf,
    /// Durability and SQLite busy timeout. The busy timeout bounds how long the writer
    /// retries a group while another connection holds SQLite's write lock.
    pub store: StoreConfig,
    /// Open connections at most; past this a new connection is refused with `overloaded`.
    pub max_connections: usize,
    /// A connection with nothing in flight is closed after this long without a frame.
    pub idle_timeout: Duration,
    /// The deadline of a request that asks for none, and the most a request may ask for.
    pub default_deadline: Duration,
    /// Read-only connections (one thread each), 1 to 64.
    pub readers: usize,
    /// Most writes committed in one transaction, 1 to 10,000.
    pub max_group: usize,
    /// How long a shutdown waits for in-flight requests before dropping them.
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// The defaults for the database at `db`: socket `<db>.sock`, 256 connections, 5 min
    /// idle timeout, 30 s deadline, 4 readers, groups of up to 512 writes, 10 s drain.
    pub fn new(db: PathBuf) -> Self {
        ServerConfig {
            socket: default_socket_path(&db),
            db,
            store: StoreConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            default_deadline: DEFAULT_DEADLINE,
            readers: DEFAULT_READERS,
            max_group: DEFAULT_MAX_GROUP,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<(), ServerError> {
        let bad = |message: String| Err(ServerError::InvalidConfig { message });
        if self.max_connections == 0 {
            return bad("max_connections 0: expected at least 1".into());
        }
        if self.readers == 0 || self.readers > MAX_READERS {
            return bad(format!(
                "readers {}: expected 1 to {MAX_READERS}",
                self.readers
            ));
        }
        if self.max_group == 0 || self.max_group > MAX_GROUP_LIMIT {
            return bad(format!(
                "max_group {}: expected 1 to {MAX_GROUP_LIMIT}",
                self.max_group
            ));
        }
        for (name, d) in [
            ("idle_timeout", self.idle_timeout),
            ("default_deadline", self.default_deadline),
            ("drain_timeout", self.drain_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} 0: expected a positive duration"));
            }
        }
        Ok(())
    }
}

/// The default socket of a database: `<db>.sock`, next to the database file
/// (`/data/issues.db` → `/data/issues.db.sock`).
pub fn default_socket_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// The single-instance lock file of a database: `<db>.daemon.lock`.
pub fn lock_file_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".daemon.lock");
    PathBuf::from(s)
}

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket path.
    #[error("a daemon is already listening on socket {}", socket.display())]
    AlreadyRunning {
        /// The socket path.
        socket: PathBuf,
    },
    /// Another daemon holds the database's lock.
    #[error(
        "the database is already served by another daemon{}: lock file {} is held",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        lock_file.display()
    )]
    Locked {
        /// The lock file.
        lock_file: PathBuf,
        /// The holder's pid, as it wrote it in the lock file.
        pid: Option<u32>,
    },
    /// The socket could not be bound.
    #[error("binding socket {}: {source}", socket.display())]
    Bind {
        /// The socket path.
        socket: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The database could not be opened.
    #[error("database: {0}")]
    Store(#[from] ApiError),
    /// Any other I/O failure; `what` names the file or the step.
    #[error("{what}: {source}")]
    Io {
        /// The file or step.
        what: String,
        /// What failed.
        source: io::Error,
    },
    /// A [`ServerConfig`] field is out of range.
    #[error("invalid server configuration: {message}")]
    InvalidConfig {
        /// Which field, which value, what was expected.
        message: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// What the daemon did, returned by [`Server::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Connections accepted (within the limit).
    pub connections: u64,
    /// Frames received after a handshake (requests, bad ones included).
    pub requests: u64,
    /// Group transactions committed.
    pub groups: u64,
    /// Writes inside committed groups (applied or individually failed).
    pub grouped_writes: u64,
    /// Of those, writes of a lone client that ran at once on their own task (a group of
    /// one; see "Writes of a lone client" in the module docs).
    #[serde(default)]
    pub inline_writes: u64,
    /// WAL checkpoints the writer ran.
    #[serde(default)]
    pub checkpoints: u64,
    /// Connections refused at the limit.
    pub rejected_connections: u64,
    /// Requests answered `deadline_exceeded`.
    pub deadline_exceeded: u64,
}

struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    groups: AtomicU64,
    grouped_writes: AtomicU64,
    inline_writes: AtomicU64,
    checkpoints: AtomicU64,
    rejected_connections: AtomicU64,
    deadline_exceeded: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Counters {
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            grouped_writes: AtomicU64::new(0),
            inline_writes: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            deadline_exceeded: AtomicU64::new(0),
        }
    }

    fn bump(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            connections: get(&self.connections),
            requests: get(&self.requests),
            groups: get(&self.groups),
            grouped_writes: get(&self.grouped_writes),
            inline_writes: get(&self.inline_writes),
            checkpoints: get(&self.checkpoints),
            rejected_connections: get(&self.rejected_connections),
            deadline_exceeded: get(&self.deadline_exceeded),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown

/// Starts a graceful shutdown of a running [`Server`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Asks the server to shut down (idempotent; returns at once). [`Server::run`] returns
    /// when the shutdown is complete.
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }

    /// Whether a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        *self.tx.borrow()
    }

    /// Spawns a task that calls [`ShutdownHandle::shutdown`] on the first SIGTERM or SIGINT.
    /// Call it inside the tokio runtime. Later signals are ignored: the drain that follows
    /// is bounded by [`ServerConfig::drain_timeout`].
    pub fn on_signals(&self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let handle = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            handle.shutdown();
        });
        Ok(())
    }
}

/// Resolves once a shutdown was asked for (or the server is gone).
async fn shutdown_asked(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

// ---------------------------------------------------------------------------------------
// Binding

/// A bound daemon, ready to [`run`](Server::run).
pub struct Server {
    cfg: ServerConfig,
    db: PathBuf,
    listener: UnixListener,
    socket: SocketFile,
    store: Store,
    readers: Vec<ReadStore>,
    shutdown: Arc<watch::Sender<bool>>,
    lock: LockFile,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("db", &self.db)
            .field("socket", &self.socket.path)
            .field("lock_file", &self.lock.path)
            .finish_non_exhaustive()
    }
}

/// The socket file we bound; removed on drop if it is still ours (same inode).
struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| Some((m.dev(), m.ino())) == self.id)
            .unwrap_or(false);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(socket = %self.path.display(), "removing the socket: {e}");
            }
        }
    }
}

/// The held single-instance lock; released when dropped (the file stays: removing it would
/// let two daemons lock two different files of one name).
struct LockFile {
    path: PathBuf,
    _file: File,
}

fn acquire_lock(path: &Path) -> Result<LockFile, ServerError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(format!("opening lock file {}", path.display())))?;
    try_lock_exclusive(&file).map_err(|e| match e {
        Some(source) => ServerError::Io {
            what: format!("locking {}", path.display()),
            source,
        },
        None => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            ServerError::Locked {
                lock_file: path.to_path_buf(),
                pid,
            }
        }
    })?;
    let pid = std::process::id();
    let write = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{pid}")?;
        file.flush()
    };
    write(&mut file).map_err(io_error(format!("writing pid to {}", path.display())))?;
    Ok(LockFile {
        path: path.to_path_buf(),
        _file: file,
    })
}

/// `flock(LOCK_EX | LOCK_NB)`: `Err(None)` when another open file description holds it.
/// (`File::try_lock` does the same but is stable only since Rust 1.89, above this
/// workspace's MSRV.)
fn try_lock_exclusive(file: &File) -> Result<(), Option<io::Error>> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: `flock` takes a file descriptor, valid for as long as `file` is borrowed, and
    // touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Err(None)
    } else {
        Err(Some(e))
    }
}

/// Makes `socket` free to bind: absent, or a stale socket nobody answers on (removed).
async fn clear_stale_socket(socket: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(format!("inspecting {}", socket.display()))(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::Bind {
            socket: socket.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; not removing it",
            ),
        });
    }
    match timeout(PROBE_TIMEOUT, UnixStream::connect(socket)).await {
        // Something accepts (or is too busy to answer in time): a live daemon.
        Ok(Ok(_)) | Err(_) => Err(ServerError::AlreadyRunning {
            socket: socket.to_path_buf(),
        }),
        Ok(Err(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            tracing::warn!(socket = %socket.display(), "removing a stale socket (nothing listens on it)");
            match std::fs::remove_file(socket) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(format!(
                    "removing stale socket {}",
                    socket.display()
                ))(e)),
            }
        }
        Ok(Err(e)) => Err(io_error(format!("probing socket {}", socket.display()))(e)),
    }
}

impl Server {
    /// Takes the database's lock, opens the database (creating it on first use) and its
    /// read-only connections, and binds the socket (replacing a stale one, mode 0600).
    ///
    /// Fails with [`ServerError::Locked`] when another daemon serves this database and
    /// [`ServerError::AlreadyRunning`] when a daemon answers on the socket path.
    pub async fn bind(cfg: ServerConfig) -> Result<Server, ServerError> {
        cfg.validate()?;
        let (db, lock, store, readers) = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || open_database(&cfg))
                .await
                .map_err(|e| ServerError::Io {
                    what: "opening the database".into(),
                    source: io::Error::other(e.to_string()),
                })??
        };
        clear_stale_socket(&cfg.socket).await?;
        let listener = UnixListener::bind(&cfg.socket).map_err(|source| ServerError::Bind {
            socket: cfg.socket.clone(),
            source,
        })?;
        let meta = std::fs::symlink_metadata(&cfg.socket).ok();
        let socket = SocketFile {
            path: cfg.socket.clone(),
            id: meta.map(|m| (m.dev(), m.ino())),
        };
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600)).map_err(
            io_error(format!("setting mode 0600 on {}", cfg.socket.display())),
        )?;
        tracing::info!(db = %db.display(), socket = %cfg.socket.display(), "daemon bound");
        let (tx, _) = watch::channel(false);
        Ok(Server {
            cfg,
            db,
            listener,
            socket,
            store,
            readers,
            shutdown: Arc::new(tx),
            lock,
        })
    }

    /// The socket it listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket.path
    }

    /// The canonical path of the database it serves (what a hello must name).
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// A handle that shuts the server down; take it before calling [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: Arc::clone(&self.shutdown),
        }
    }

    /// Serves until a shutdown is asked for, then drains, stops, removes the socket and
    /// releases the lock, and returns what it did.
    pub async fn run(self) -> Result<ServerStats, ServerError> {
        let Server {
            cfg,
            db,
            listener,
            socket,
            store,
            readers,
            shutdown,
            lock,
        } = self;
        let counters = Arc::new(Counters::new());
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let writer = Arc::new(WriteConn::new(store, &cfg)?);
        let (read_tx, read_rx) = mpsc::channel(READ_QUEUE_CAPACITY);
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(readers.len() + 1);
        {
            let counters = Arc::clone(&counters);
            let max_group = cfg.max_group;
            let busy_timeout = cfg.store.busy_timeout;
            let writer = Arc::clone(&writer);
            threads.push(
                std::thread::Builder::new()
                    .name("rpc-daemon-writer".into())
                    .spawn(move || {
                        writer_loop(&writer, write_rx, max_group, busy_timeout, &counters)
                    })
                    .map_err(io_error("starting the writer thread"))?,
            );
        }
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, reader) in readers.into_iter().enumerate() {
            let read_rx = Arc::clone(&read_rx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rpc-daemon-reader-{i}"))
                    .spawn(move || reader_loop(reader, &read_rx))
                    .map_err(io_error("starting a reader thread"))?,
            );
        }
        let shared = Arc::new(Shared {
            served: db.to_string_lossy().into_owned(),
            db,
            idle_timeout: cfg.idle_timeout,
            default_deadline: cfg.default_deadline,
            write_tx,
            read_tx,
            counters: Arc::clone(&counters),
            writer,
            writes_in_flight: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
        });

        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        let mut conns = JoinSet::new();
        let mut rejects = JoinSet::new();
        let mut stop = shutdown.subscribe();
        loop {
            tokio::select! {
                biased;
                _ = shutdown_asked(&mut stop) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                Some(_) = rejects.join_next(), if !rejects.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            Counters::bump(&counters.connections, 1);
                            conns.spawn(serve_connection(
                                stream,
                                Arc::clone(&shared),
                                shutdown.subscribe(),
                                slot,
                            ));
                        }
                        Err(_) => {
                            Counters::bump(&counters.rejected_connections, 1);
                            if let Ok(permit) = Arc::clone(&rejecting).try_acquire_owned() {
                                rejects.spawn(reject(stream, cfg.max_connections, permit));
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }

        // Stop accepting: close the listener and remove the socket file.
        drop(listener);
        drop(socket);
        tracing::info!(
            open = conns.len(),
            "shutting down: draining in-flight requests"
        );
        let drained = timeout(cfg.drain_timeout, async {
            while conns.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                open = conns.len(),
                "drain timeout of {:?} passed: dropping the remaining connections",
                cfg.drain_timeout
            );
        }
        conns.shutdown().await;
        rejects.shutdown().await;
        // The last senders of the queues go with `shared`: the threads finish what they
        // hold and stop.
        drop(shared);
        let joined = timeout(
            THREAD_JOIN_BOUND,
            tokio::task::spawn_blocking(move || {
                for t in threads {
                    if t.join().is_err() {
                        tracing::error!("a daemon thread panicked");
                    }
                }
            }),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("daemon threads did not stop within {THREAD_JOIN_BOUND:?}");
        }
        drop(lock);
        let stats = counters.snapshot();
        tracing::info!(?stats, "daemon stopped");
        Ok(stats)
    }
}

type Opened = (PathBuf, LockFile, Store, Vec<ReadStore>);

/// The busy timeout of the write connection: one [`WRITER_BUSY_SLICE`], or the store's
/// whole busy timeout when that is shorter.
fn writer_busy_slice(store: &StoreConfig) -> Duration {
    store.busy_timeout.min(WRITER_BUSY_SLICE)
}

/// Lock, writer store and readers; blocking (runs on the blocking pool).
fn open_database(cfg: &ServerConfig) -> Result<Opened, ServerError> {
    let db = canonical_db_path(&cfg.db)?;
    let lock = acquire_lock(&lock_file_path(&db))?;
    // The writer waits for SQLite's lock in short slices so that it can look at deadlines
    // between attempts; opening (which writes the schema) retries up to the full timeout.
    let writer_cfg = StoreConfig {
        busy_timeout: writer_busy_slice(&cfg.store),
        ..cfg.store
    };
    let started = Instant::now();
    let store = loop {
        match Store::open(&db, &writer_cfg) {
            Ok(s) => break s,
            Err(e) if e.code == Code::Busy && started.elapsed() < cfg.store.busy_timeout => {
                std::thread::sleep(BUSY_RETRY_PAUSE);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let readers = (0..cfg.readers)
        .map(|_| ReadStore::open(&db, &cfg.store))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((db, lock, store, readers))
}

// ---------------------------------------------------------------------------------------
// The writer and the readers

/// The one read-write connection, used by the writer thread for groups and, when it is
/// idle, by a request's own task for a single small write (see "Writes of a lone client"
/// in the module docs). Whoever holds the mutex owns the connection; a request task only
/// ever `try_lock`s it, so no tokio worker waits for it.
struct WriteConn {
    store: Mutex<Store>,
    /// The writer thread's busy timeout (a slice; see [`WRITER_BUSY_SLICE`]).
    busy_slice: Duration,
    /// Whether single writes may run on their request's task: not with
    /// [`Durability::Full`], whose fsync per commit must not run on a tokio worker.
    inline: bool,
    /// Set by the WAL hook when the log passed [`CHECKPOINT_PAGES`].
    checkpoint_due: Arc<AtomicBool>,
}

impl WriteConn {
    fn new(mut store: Store, cfg: &ServerConfig) -> Result<WriteConn, ServerError> {
        let checkpoint_due = Arc::new(AtomicBool::new(false));
        store.defer_checkpoints(CHECKPOINT_PAGES, Arc::clone(&checkpoint_due))?;
        Ok(WriteConn {
            store: Mutex::new(store),
            busy_slice: writer_busy_slice(&cfg.store),
            inline: cfg.store.durability == Durability::Normal,
            checkpoint_due,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a checkpoint if a commit asked for one; the caller holds the connection.
    fn checkpoint_if_due(&self, store: &mut Store, counters: &Counters) {
        if !self.checkpoint_due.swap(false, Ordering::AcqRel) {
            return;
        }
        match store.checkpoint() {
            Ok((log, done)) => {
                Counters::bump(&counters.checkpoints, 1);
                tracing::debug!(log, done, "checkpoint");
            }
            Err(e) => tracing::warn!("checkpoint: {e}"),
        }
    }
}

/// What the writer thread is asked to do.
enum WriterJob {
    /// A write to group and commit.
    Write(QueuedWrite),
    /// A write on a request's own task left the WAL over [`CHECKPOINT_PAGES`].
    Checkpoint,
}

struct WriteJob {
    op: Op,
    deadline: Instant,
    budget: Duration,
    reply: oneshot::Sender<Result<Reply, ApiError>>,
    /// When the writer first found SQLite busy with this job in its group.
    busy_since: Option<Instant>,
}

/// A write on the queue, with its claim: the writer takes it into a group only if sending
/// on `claim` succeeds, which it cannot once the request has given up.
struct QueuedWrite {
    job: WriteJob,
    claim: oneshot::Sender<()>,
}

struct ReadJob {
    op: Op,
    deadline: Instant,
    budget: Duration,
    reply: oneshot::Sender<Result<Reply, ApiError>>,
}

fn deadline_error(budget: Duration, what: &str) -> ApiError {
    ApiError::new(
        Code::DeadlineExceeded,
        format!(
            "deadline of {} ms passed {what}; nothing was applied",
            budget.as_millis()
        ),
    )
}

/// Takes a queued write into the group, unless its requester is gone or gave up, or its
/// deadline passed (then it is answered `deadline_exceeded`).
fn admit(queued: QueuedWrite, group: &mut Vec<WriteJob>) {
    let QueuedWrite { job, claim } = queued;
    if job.reply.is_closed() {
        return; // the request is gone (its connection closed) before the group started
    }
    if Instant::now() >= job.deadline {
        let e = deadline_error(job.budget, "before the write's group transaction started");
        let _ = job.reply.send(Err(e));
        return;
    }
    if claim.send(()).is_ok() {
        group.push(job);
    }
}

/// The single writer: group commits until every sender of the queue is gone.
fn writer_loop(
    writer: &WriteConn,
    mut queue: mpsc::Receiver<WriterJob>,
    max_group: usize,
    busy_timeout: Duration,
    counters: &Counters,
) {
    // Claimed writes: empty after every group, except when SQLite was busy, when it holds
    // the writes to try again.
    let mut group: Vec<WriteJob> = Vec::with_capacity(max_group);
    loop {
        if group.is_empty() {
            match queue.blocking_recv() {
                Some(WriterJob::Write(job)) => admit(job, &mut group),
                Some(WriterJob::Checkpoint) => {}
                None => return,
            }
        }
        while group.len() < max_group {
            match queue.try_recv() {
                Ok(WriterJob::Write(job)) => admit(job, &mut group),
                Ok(WriterJob::Checkpoint) => {}
                Err(_) => break,
            }
        }
        if group.is_empty() {
            writer.checkpoint_if_due(&mut writer.lock(), counters);
            continue;
        }
        let ops: Vec<&Op> = group.iter().map(|j| &j.op).collect();
        let mut store = writer.lock();
        let outcome = store.apply_group(&ops);
        writer.checkpoint_if_due(&mut store, counters);
        drop(store);
        drop(ops);
        match outcome {
            Ok(results) => {
                Counters::bump(&counters.groups, 1);
                Counters::bump(&counters.grouped_writes, group.len() as u64);
                for (job, result) in group.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) if e.code == Code::Busy => {
                // Nothing was applied. Answer what cannot wait any longer; retry the rest.
                let now = Instant::now();
                for mut job in std::mem::take(&mut group) {
                    let since = *job.busy_since.get_or_insert(now);
                    if job.reply.is_closed() {
                        // Its request is gone (its connection closed, or the drain ended):
                        // nobody waits for it, and it was not applied.
                        continue;
                    }
                    if now >= job.deadline {
                        let e = deadline_error(
                            job.budget,
                            "while SQLite's write lock was held by another connection",
                        );
                        let _ = job.reply.send(Err(e));
                    } else if now.duration_since(since) >= busy_timeout {
                        let _ = job.reply.send(Err(e.clone()));
                    } else {
                        group.push(job);
                    }
                }
                if !group.is_empty() {
                    std::thread::sleep(BUSY_RETRY_PAUSE);
                }
            }
            Err(e) => {
                tracing::warn!(writes = group.len(), "group transaction failed: {e}");
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One reader: answers reads until every sender of the queue is gone.
fn reader_loop(store: ReadStore, queue: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        let job = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { return };
        if job.reply.is_closed() {
            continue; // abandoned before it started
        }
        if Instant::now() >= job.deadline {
            let _ = job
                .reply
                .send(Err(deadline_error(job.budget, "before the read started")));
            continue;
        }
        let _ = job.reply.send(store.read(&job.op));
    }
}

// ---------------------------------------------------------------------------------------
// Connections

/// What the connection tasks share.
struct Shared {
    db: PathBuf,
    served: String,
    idle_timeout: Duration,
    default_deadline: Duration,
    write_tx: mpsc::Sender<WriterJob>,
    read_tx: mpsc::Sender<ReadJob>,
    counters: Arc<Counters>,
    writer: Arc<WriteConn>,
    /// Write requests between their start and their answer.
    writes_in_flight: AtomicUsize,
    /// Connections past their handshake and not yet closed.
    open_connections: AtomicUsize,
}

/// Counts something (a write in flight, an open connection) while it lives.
struct Gauge<'a> {
    counter: &'a AtomicUsize,
    /// The count when this one entered, itself included.
    count: usize,
}

impl<'a> Gauge<'a> {
    fn enter(counter: &'a AtomicUsize) -> Gauge<'a> {
        let count = counter.fetch_add(1, Ordering::AcqRel) + 1;
        Gauge { counter, count }
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Whether a hello's `db` names the database served: the same canonical path, or an
    /// absolute path that canonicalises to it (a relative one would resolve against the
    /// daemon's directory, not the client's).
    fn serves(&self, asked: &str) -> bool {
        if asked == self.served {
            return true;
        }
        let asked = Path::new(asked);
        asked.is_absolute() && canonical_db_path(asked).is_ok_and(|p| p == self.db)
    }
}

/// Closes an over-limit connection with an `overloaded` welcome, bounded by
/// [`REJECT_LINGER`].
async fn reject(stream: UnixStream, max_connections: usize, _permit: OwnedSemaphorePermit) {
    let (mut rd, mut wr) = stream.into_split();
    let frame = WelcomeFrame {
        hello: None,
        error: Some(ApiError::new(
            Code::Overloaded,
            format!("the daemon is at its limit of {max_connections} connections; try again later"),
        )),
    };
    let _ = timeout(REJECT_LINGER, async {
        write_json(&mut wr, &frame).await?;
        wr.shutdown().await?;
        // Read (and drop) what the client sent until it closes, so that closing does not
        // race its hello.
        let mut buf = [0u8; 4096];
        while rd.read(&mut buf).await? > 0 {}
        Ok::<(), FrameError>(())
    })
    .await;
}

/// Reads and answers the hello; `true` when the connection may go on.
async fn handshake(rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf, sh: &Shared) -> bool {
    let frame = match timeout(sh.idle_timeout, read_frame(rd, MAX_FRAME_BYTES)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Err(FrameError::TooLarge { len, max })) => {
            let e = ApiError::new(
                Code::TooLarge,
                format!("frame of {len} bytes is over the limit of {max} bytes"),
            );
            refuse(wr, e).await;
            return false;
        }
        // Idle, closed or truncated before a hello: nothing to answer.
        _ => return false,
    };
    let refusal = match serde_json::from_slice::<HelloFrame>(&frame) {
        Err(e) => Some(ApiError::new(
            Code::HandshakeRequired,
            format!(
                "the first frame must be a hello like {{\"hello\":{{\"protocol\":{PROTOCOL_VERSION},\"db\":\"/abs/path/issues.db\"}}}}: {e}"
            ),
        )),
        Ok(h) if h.hello.protocol != PROTOCOL_VERSION => Some(ApiError::new(
            Code::VersionMismatch,
            format!(
                "client speaks protocol {}, this daemon speaks {PROTOCOL_VERSION}",
                h.hello.protocol
            ),
        )),
        Ok(h) if !sh.serves(&h.hello.db) => Some(ApiError::new(
            Code::WrongDatabase,
            format!(
                "this daemon serves {:?}, not {:?}",
                sh.served, h.hello.db
            ),
        )),
        Ok(h) => {
            tracing::debug!(client = ?h.hello.client, "hello");
            None
        }
    };
    match refusal {
        Some(e) => {
            refuse(wr, e).await;
            false
        }
        None => {
            let welcome = WelcomeFrame {
                hello: Some(Welcome {
                    protocol: PROTOCOL_VERSION,
                    db: sh.served.clone(),
                    server: format!("rpc-daemon {}", env!("CARGO_PKG_VERSION")),
                }),
                error: None,
            };
            matches!(
                timeout(MAX_FRAME_WRITE, write_json(wr, &welcome)).await,
                Ok(Ok(()))
            )
        }
    }
}

async fn refuse(wr: &mut OwnedWriteHalf, e: ApiError) {
    tracing::debug!("refusing a connection: {e}");
    let frame = WelcomeFrame {
        hello: None,
        error: Some(e),
    };
    let _ = timeout(MAX_FRAME_WRITE, async {
        write_json(wr, &frame).await?;
        wr.shutdown().await?;
        Ok::<(), FrameError>(())
    })
    .await;
}

type FrameRead =
    Pin<Box<dyn Future<Output = (OwnedReadHalf, Result<Option<Vec<u8>>, FrameError>)> + Send>>;

/// Reads the next frame, owning the read half so that the read survives `select!` rounds
/// (`read_frame` is not cancel-safe).
fn next_frame(mut rd: OwnedReadHalf) -> FrameRead {
    Box::pin(async move {
        let r = read_frame(&mut rd, MAX_FRAME_BYTES).await;
        (rd, r)
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a connection stops reading.
#[derive(Debug)]
enum Stop {
    /// The client closed, sent a bad length, went idle, or the daemon drained it: finish
    /// what is in flight, then close.
    Finish,
    /// The responses cannot be delivered (the writer task ended): close at once.
    Dead,
}

async fn serve_connection(
    stream: UnixStream,
    sh: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let (mut rd, mut wr) = stream.into_split();
    let welcomed = tokio::select! {
        ok = handshake(&mut rd, &mut wr, &sh) => ok,
        // A connection still saying hello has nothing in flight: close it.
        _ = shutdown_asked(&mut shutdown) => false,
    };
    if !welcomed {
        return;
    }
    let _open = Gauge::enter(&sh.open_connections);
    let (resp_tx, resp_rx) = mpsc::channel::<Response>(MAX_IN_FLIGHT_PER_CONNECTION);
    let mut writer = tokio::spawn(write_responses(wr, resp_rx));
    // If this task is dropped (the drain timed out), the response writer goes with it.
    let _writer_guard = AbortOnDrop(writer.abort_handle());
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut read = next_frame(rd);
    let idle = sleep(sh.idle_timeout);
    tokio::pin!(idle);
    let mut draining = *shutdown.borrow();
    let stop = loop {
        if draining && tasks.is_empty() {
            break Stop::Finish;
        }
        tokio::select! {
            biased;
            _ = shutdown_asked(&mut shutdown), if !draining => draining = true,
            _ = &mut writer => break Stop::Dead,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                if tasks.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + sh.idle_timeout);
                }
            }
            (rd, frame) = &mut read, if tasks.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                idle.as_mut().reset(tokio::time::Instant::now() + sh.idle_timeout);
                match frame {
                    Ok(Some(body)) => {
                        read = next_frame(rd);
                        Counters::bump(&sh.counters.requests, 1);
                        let received = Instant::now();
                        match serde_json::from_slice::<Request>(&body) {
                            Err(e) => {
                                let resp = bad_request(&body, &e);
                                if resp_tx.send(resp).await.is_err() {
                                    break Stop::Dead;
                                }
                            }
                            Ok(req) if draining => {
                                let e = ApiError::new(
                                    Code::ShuttingDown,
                                    "the daemon is shutting down and takes no new requests; nothing was applied",
                                );
                                if resp_tx.send(Response::of(Some(req.id), Err(e))).await.is_err() {
                                    break Stop::Dead;
                                }
                            }
                            Ok(req) => {
                                let sh = Arc::clone(&sh);
                                let resp_tx = resp_tx.clone();
                                tasks.spawn(async move {
                                    let resp = answer(&sh, req, received).await;
                                    let _ = resp_tx.send(resp).await;
                                });
                            }
                        }
                    }
                    Ok(None) => break Stop::Finish,
                    Err(FrameError::TooLarge { len, max }) => {
                        let e = ApiError::new(
                            Code::TooLarge,
                            format!("frame of {len} bytes is over the limit of {max} bytes; closing the connection"),
                        );
                        let _ = resp_tx.send(Response::of(None, Err(e))).await;
                        break Stop::Finish;
                    }
                    Err(e) => {
                        tracing::debug!("closing a connection: {e}");
                        break Stop::Finish;
                    }
                }
            }
            _ = &mut idle, if tasks.is_empty() => break Stop::Finish,
        }
    };
    drop(read);
    if matches!(stop, Stop::Finish) {
        // Every request bounds itself by its deadline; the daemon's drain bounds this too.
        while tasks.join_next().await.is_some() {}
        drop(resp_tx);
        if timeout(MAX_FRAME_WRITE, &mut writer).await.is_err() {
            writer.abort();
        }
    } else {
        tasks.shutdown().await;
    }
}

fn bad_request(body: &[u8], e: &serde_json::Error) -> Response {
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
    Response::of(
        id,
        Err(ApiError::new(
            Code::BadRequest,
            format!("invalid request: {e}"),
        )),
    )
}

/// Writes responses in the order they come; ends when every sender is gone or a write
/// fails or stalls past [`MAX_FRAME_WRITE`].
async fn write_responses(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Response>) {
    while let Some(resp) = rx.recv().await {
        let body = encode(&resp);
        match timeout(MAX_FRAME_WRITE, write_frame(&mut wr, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("writing a response: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("a response write stalled for {MAX_FRAME_WRITE:?}");
                return;
            }
        }
    }
    let _ = timeout(MAX_FRAME_WRITE, wr.shutdown()).await;
}

/// A response as a frame body; one over the frame cap becomes a `too_large` error.
fn encode(resp: &Response) -> Vec<u8> {
    let fallback = |e: ApiError| {
        serde_json::to_vec(&Response::of(resp.id, Err(e))).unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"response not serializable"}}"#.to_vec()
        })
    };
    match serde_json::to_vec(resp) {
        Ok(body) if body.len() <= MAX_FRAME_BYTES as usize => body,
        Ok(body) => fallback(ApiError::new(
            Code::TooLarge,
            format!(
                "the reply is {} bytes, over the frame limit of {MAX_FRAME_BYTES}: ask for fewer (a smaller limit)",
                body.len()
            ),
        )),
        Err(e) => fallback(ApiError::internal(format!("serializing the reply: {e}"))),
    }
}

/// Handles one request within its deadline.
async fn answer(sh: &Shared, req: Request, received: Instant) -> Response {
    let budget = req.deadline_ms.map_or(sh.default_deadline, |ms| {
        Duration::from_millis(ms).min(sh.default_deadline)
    });
    let deadline = received + budget;
    let result = if Instant::now() >= deadline {
        Err(deadline_error(budget, "before the request started"))
    } else if req.body.is_write() {
        write(sh, req.body, deadline, budget).await
    } else {
        read(sh, req.body, deadline, budget).await
    };
    if matches!(&result, Err(e) if e.code == Code::DeadlineExceeded) {
        Counters::bump(&sh.counters.deadline_exceeded, 1);
    }
    Response::of(Some(req.id), result)
}

fn stopped(what: &str) -> ApiError {
    ApiError::new(
        Code::ShuttingDown,
        format!("the {what} has stopped; nothing was applied"),
    )
}

/// A single small write run at once on the request's own task, when its connection is the
/// only one open, it is the only write in flight (`alone` counts the writes in flight,
/// this one included), nothing waits for the writer and the write connection is free;
/// `None` sends the write to the writer's queue instead (also when SQLite's lock is held
/// elsewhere: this path never waits for it). With several clients, grouping their writes
/// beats running them one by one (measured: a lone-write rule that ignored the other
/// connections halved the throughput of 8 agents), so this path is for the lone client,
/// whose write would otherwise pay two thread hand-offs.
fn write_now(sh: &Shared, op: &Op, alone: usize) -> Option<Result<Reply, ApiError>> {
    let w = &sh.writer;
    if !w.inline
        || alone != 1
        || sh.open_connections.load(Ordering::Acquire) != 1
        || matches!(op, Op::Batch { .. })
        || sh.write_tx.capacity() < sh.write_tx.max_capacity()
    {
        return None;
    }
    let mut store = w.store.try_lock().ok()?;
    store.set_busy_timeout(Duration::ZERO).ok()?;
    let outcome = store.apply_group(&[op]);
    let restored = store.set_busy_timeout(w.busy_slice);
    drop(store);
    if let Err(e) = restored {
        tracing::warn!("restoring the writer's busy timeout: {e}");
    }
    if w.checkpoint_due.load(Ordering::Acquire) {
        // The writer thread checkpoints; if its queue is full it is busy and will see the
        // flag after its next group anyway.
        let _ = sh.write_tx.try_send(WriterJob::Checkpoint);
    }
    match outcome {
        Ok(mut results) => {
            Counters::bump(&sh.counters.groups, 1);
            Counters::bump(&sh.counters.grouped_writes, 1);
            Counters::bump(&sh.counters.inline_writes, 1);
            results.pop()
        }
        // Nothing was applied: SQLite's lock is held by another connection.
        Err(e) if e.code == Code::Busy => None,
        Err(e) => Some(Err(e)),
    }
}

async fn write(
    sh: &Shared,
    op: Op,
    deadline: Instant,
    budget: Duration,
) -> Result<Reply, ApiError> {
    let in_flight = Gauge::enter(&sh.writes_in_flight);
    if let Some(result) = write_now(sh, &op, in_flight.count) {
        return result;
    }
    let (claim, mut claimed) = oneshot::channel();
    let (tx, mut rx) = oneshot::channel();
    let job = WriteJob {
        op,
        deadline,
        budget,
        reply: tx,
        busy_since: None,
    };
    let queued = QueuedWrite { job, claim };
    let at = tokio::time::Instant::from_std(deadline);
    match timeout_at(at, sh.write_tx.send(WriterJob::Write(queued))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(stopped("writer")),
        Err(_) => {
            return Err(deadline_error(
                budget,
                "while the write waited for room in the writer's queue",
            ))
        }
    }
    let writer_gone = || {
        ApiError::internal("the writer stopped before answering; its transaction was rolled back")
    };
    match timeout_at(at, &mut rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(writer_gone()),
        Err(_) if gave_up(&mut claimed) => Err(deadline_error(
            budget,
            "before the write's group transaction started",
        )),
        // The writer holds it: its answer is the truth (committed, or failed unapplied).
        Err(_) => match timeout(CLAIMED_WRITE_BOUND, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(writer_gone()),
            Err(_) => Err(ApiError::internal(format!(
                "the writer did not answer within {CLAIMED_WRITE_BOUND:?} after the deadline; \
                 whether the write was applied is unknown"
            ))),
        },
    }
}

/// Closes the claim so that the writer can no longer take the write; `true` if it had not
/// (the write will never be applied), `false` if the writer claimed it first.
fn gave_up(claimed: &mut oneshot::Receiver<()>) -> bool {
    claimed.close();
    claimed.try_recv().is_err()
}

async fn read(sh: &Shared, op: Op, deadline: Instant, budget: Duration) -> Result<Reply, ApiError> {
    if matches!(op, Op::Ping {}) {
        return Ok(Reply::Pong { pong: true });
    }
    let (tx, rx) = oneshot::channel();
    let job = ReadJob {
        op,
        deadline,
        budget,
        reply: tx,
    };
    let at = tokio::time::Instant::from_std(deadline);
    match timeout_at(at, sh.read_tx.send(job)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(stopped("readers")),
        Err(_) => return Err(deadline_error(budget, "while the read waited for a reader")),
    }
    match timeout_at(at, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ApiError::internal("the reader stopped before answering")),
        // Dropping the receiver tells the reader to skip it if it has not started.
        Err(_) => Err(deadline_error(budget, "before the read finished")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(deadline: Instant) -> (QueuedWrite, oneshot::Receiver<()>, Answer) {
        let (claim, claimed) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            op: Op::Ping {},
            deadline,
            budget: Duration::from_millis(1),
            reply,
            busy_since: None,
        };
        (QueuedWrite { job, claim }, claimed, answer)
    }

    type Answer = oneshot::Receiver<Result<Reply, ApiError>>;

    #[test]
    fn a_write_is_claimed_or_given_up_never_both() {
        let later = Instant::now() + Duration::from_secs(60);
        // The writer claims first: the request cannot give up and must wait for the answer.
        let (q, mut claimed, _answer) = queued(later);
        let mut group = Vec::new();
        admit(q, &mut group);
        assert_eq!(group.len(), 1);
        assert!(!gave_up(&mut claimed));
        // The request gives up first: the writer does not take the write.
        let (q, mut claimed, _answer) = queued(later);
        assert!(gave_up(&mut claimed));
        let mut group = Vec::new();
        admit(q, &mut group);
        assert!(group.is_empty());
        // A request that is gone is not taken either.
        let (q, claimed, answer) = queued(later);
        drop((claimed, answer));
        admit(q, &mut group);
        assert!(group.is_empty());
        // A write past its deadline is answered deadline_exceeded, not taken.
        let (q, mut claimed, mut answer) = queued(Instant::now());
        admit(q, &mut group);
        assert!(group.is_empty());
        assert_eq!(
            answer.try_recv().unwrap().unwrap_err().code,
            Code::DeadlineExceeded
        );
        assert!(gave_up(&mut claimed));
    }

    #[test]
    fn paths_and_config_defaults() {
        let cfg = ServerConfig::new(PathBuf::from("/data/issues.db"));
        assert_eq!(cfg.socket, PathBuf::from("/data/issues.db.sock"));
        assert_eq!(
            lock_file_path(Path::new("/data/issues.db")),
            PathBuf::from("/data/issues.db.daemon.lock")
        );
        assert_eq!(cfg.max_connections, 256);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.default_deadline, Duration::from_secs(30));
        assert!(cfg.validate().is_ok());
        let bad = ServerConfig {
            readers: 0,
            ..cfg.clone()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("readers 0: expected 1 to 64"), "{e}");
    }

    #[test]
    fn an_oversized_reply_becomes_too_large() {
        let huge = Response::of(
            Some(4),
            Err(ApiError::internal("x".repeat(MAX_FRAME_BYTES as usize))),
        );
        let body = encode(&huge);
        let back: Response = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.id, Some(4));
        assert_eq!(back.into_result().unwrap_err().code, Code::TooLarge);
    }
}
