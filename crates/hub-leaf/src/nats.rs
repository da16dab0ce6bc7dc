//! The `nats-server -js` of a trial: started on a free loopback port with its JetStream store
//! in the trial's temp dir, killed when its owner ends (even on panic, even if the owning
//! process is killed outright), or an existing server named by `NATS_URL`.
//!
//! # Lifetime of the child
//!
//! - [`NatsServer`] owns the child process; dropping it sends `SIGKILL` and reaps it.
//! - The child is a [`proc_guard::Guarded`]: started with `PR_SET_PDEATHSIG = SIGKILL` from
//!   a keeper thread that lives exactly as long as the [`NatsServer`] value (Linux delivers
//!   that signal when the *thread* that forked the child ends, not only the process), so the
//!   server dies with its owner, and never earlier because some runtime thread that
//!   happened to start it went away.
//! - The child is in its own process group, so a terminal's Ctrl-C reaches the owner (which
//!   then drops the server) rather than killing the server behind its back.
//! - Its stdout and stderr are appended to `nats-server.log` in the store directory.
//!
//! # Readiness
//!
//! Each server is started with a unique `--name`; [`NatsServer::start`] waits (bounded by
//! [`START_BOUND`]) until a TCP connection to its port gets an `INFO` line carrying that
//! name and `"jetstream":true`. That cannot be fooled by another server that grabbed the
//! port between the free-port probe and the start; if the child exits because its port was
//! taken, the start is retried on a new port ([`PORT_ATTEMPTS`] times).

// Left out under `--cfg loom` (the loom models cover the coalescer only): `async-nats`
// does not build there, tokio leaving out `net` and `fs` under loom.
#![cfg(not(loom))]

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proc_guard::Guarded;
use tokio::io::AsyncBufReadExt as _;

/// How long [`NatsServer::start`] and [`NatsServer::restart`] wait for the server to accept
/// connections.
pub const START_BOUND: Duration = Duration::from_secs(10);

/// How many ports [`NatsServer::start`] tries when the child fails to bind its port.
pub const PORT_ATTEMPTS: u32 = 5;

/// How long [`NatsServer::stop`] and [`NatsServer::restart`] wait after `SIGINT` before
/// `SIGKILL`.
pub const STOP_BOUND: Duration = Duration::from_secs(5);

/// How long [`connect`] waits for the first connection.
pub const CONNECT_BOUND: Duration = Duration::from_secs(10);

/// The environment variable naming an existing server (`nats://host:port`): when set,
/// nothing is started.
pub const NATS_URL_ENV: &str = "NATS_URL";

/// The environment variable naming the `nats-server` binary to run instead of the one on
/// `PATH`.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// The name of the log file (stdout and stderr of the server) in the store directory.
pub const LOG_FILE: &str = "nats-server.log";

const INSTALL_HINT: &str = "install it with `apt-get install nats-server` (Debian, 2.9.10) \
                            or set NATS_URL to an existing server";

/// What can go wrong starting, stopping or connecting to NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No `nats-server` binary: on `PATH`, or at the path `NATS_SERVER_BIN` names.
    #[error("nats-server not found {where_}: {INSTALL_HINT}")]
    NotFound {
        /// Where it was looked for: `on PATH` or `at <path> (NATS_SERVER_BIN)`.
        where_: String,
    },
    /// The store directory could not be created or the log file opened.
    #[error("preparing {path} for nats-server: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No free loopback port could be found.
    #[error("finding a free loopback port: {0}")]
    NoFreePort(io::Error),
    /// Spawning the binary failed.
    #[error("spawning {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The server exited before it accepted connections.
    #[error("nats-server exited with {status} before accepting connections on port {port}; log {log}: {tail}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The port it was given.
        port: u16,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// The server did not accept connections within the bound.
    #[error("nats-server did not accept connections on {url} within {waited:?}; log {log}")]
    NotReady {
        /// Its URL.
        url: String,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
    },
    /// Every port attempt failed because the port was taken.
    #[error("nats-server could not bind a free port in {attempts} attempts; log {log}")]
    PortsExhausted {
        /// How many ports were tried.
        attempts: u32,
        /// Its log file.
        log: PathBuf,
    },
    /// Connecting a client failed.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The underlying error.
        source: async_nats::ConnectError,
    },
    /// Connecting a client did not finish within [`CONNECT_BOUND`].
    #[error("connecting to NATS at {url}: no connection within {waited:?}")]
    ConnectTimeout {
        /// The URL.
        url: String,
        /// How long we waited.
        waited: Duration,
    },
}

/// A running `nats-server -js` child process; dropping it kills and reaps the process.
pub struct NatsServer {
    binary: PathBuf,
    store_dir: PathBuf,
    log: PathBuf,
    port: u16,
    name: String,
    url: String,
    child: Option<Guarded>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url)
            .field("pid", &self.pid())
            .field("store_dir", &self.store_dir)
            .finish()
    }
}

impl NatsServer {
    /// Starts `nats-server -js -a 127.0.0.1 -p <free port> -sd <store_dir>` and waits
    /// (bounded by [`START_BOUND`]) until it accepts connections.
    ///
    /// The binary is `$NATS_SERVER_BIN` if set, else `nats-server` on `PATH` (or in
    /// `/usr/sbin`, `/usr/local/sbin`, where Debian puts it); when there is none the error
    /// says how to install it. `store_dir` is created if missing.
    pub async fn start(store_dir: &Path) -> Result<NatsServer, NatsError> {
        let binary = find_binary()?;
        Self::start_with_binary(&binary, store_dir).await
    }

    /// [`NatsServer::start`] with an explicit binary (no environment lookup).
    pub async fn start_with_binary(
        binary: &Path,
        store_dir: &Path,
    ) -> Result<NatsServer, NatsError> {
        if !is_executable(binary) {
            return Err(NatsError::NotFound {
                where_: format!("at {}", binary.display()),
            });
        }
        std::fs::create_dir_all(store_dir).map_err(|source| NatsError::Io {
            path: store_dir.to_path_buf(),
            source,
        })?;
        let log = store_dir.join(LOG_FILE);
        let name = unique_name();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut server = NatsServer {
                binary: binary.to_path_buf(),
                store_dir: store_dir.to_path_buf(),
                log: log.clone(),
                port,
                name: name.clone(),
                url: format!("nats://127.0.0.1:{port}"),
                child: None,
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(NatsError::Exited { tail, .. }) if port_taken(&tail) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(NatsError::PortsExhausted {
            attempts: PORT_ATTEMPTS,
            log,
        })
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The child's pid (0 when it is not running, e.g. after a failed restart).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Guarded::pid).unwrap_or(0)
    }

    /// The log file (the server's stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Restarts the server in place: same port, same store, so JetStream state survives and
    /// clients reconnect to the same URL. Stops it gracefully (`SIGINT`, then `SIGKILL`
    /// after [`STOP_BOUND`]) and waits until the new process accepts connections.
    pub async fn restart(&mut self) -> Result<(), NatsError> {
        if let Some(mut kept) = self.child.take() {
            // Off the runtime's threads: the wait after SIGINT blocks (bounded).
            let _ = tokio::task::spawn_blocking(move || kept.stop(libc::SIGINT, STOP_BOUND)).await;
        }
        // The old listener is gone once the process is reaped; retry briefly in case the
        // kernel has not released the port yet.
        let until = Instant::now() + START_BOUND;
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(NatsError::Exited { tail, .. })
                    if port_taken(&tail) && Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills the server outright (`SIGKILL`) without restarting it; [`NatsServer::restart`]
    /// brings it back. For fault injection.
    pub fn kill9(&mut self) {
        self.child = None; // Guarded's Drop kills and reaps
    }

    /// Stops the server gracefully (`SIGINT`, then `SIGKILL` after [`STOP_BOUND`]).
    /// `SIGINT`, not `SIGTERM`: nats-server 2.9.10 shuts down cleanly on both but exits
    /// with status 1 on `SIGTERM`, 0 on `SIGINT`.
    /// Returns whether it exited by itself with status 0.
    pub fn stop(mut self) -> bool {
        match self.child.take() {
            Some(mut kept) => kept.stop(libc::SIGINT, STOP_BOUND),
            None => false,
        }
    }

    /// Spawns the child on `self.port` and waits until it is ready.
    async fn launch(&mut self) -> Result<(), NatsError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-js")
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store_dir)
            .arg("-n")
            .arg(&self.name)
            .process_group(0);
        let log_start =
            proc_guard::log_output_to(&mut cmd, &self.log).map_err(|source| NatsError::Io {
                path: self.log.clone(),
                source,
            })?;
        let kept = Guarded::spawn(cmd, "nats-server").map_err(|source| NatsError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        self.child = Some(kept);
        let until = Instant::now() + START_BOUND;
        loop {
            if probe(self.port, &self.name).await {
                return Ok(());
            }
            if let Some(kept) = self.child.as_mut() {
                if let Ok(Some(status)) = kept.try_wait() {
                    self.child = None;
                    return Err(NatsError::Exited {
                        status,
                        port: self.port,
                        log: self.log.clone(),
                        tail: log_tail(&self.log, log_start),
                    });
                }
            }
            if Instant::now() >= until {
                self.child = None;
                return Err(NatsError::NotReady {
                    url: self.url.clone(),
                    waited: START_BOUND,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Where the NATS of a trial comes from: `NATS_URL` (an existing server or cluster, nothing
/// started) or a server this process started and owns.
#[derive(Debug)]
pub enum Nats {
    /// The URL from `NATS_URL`.
    External(String),
    /// A server started by [`NatsServer::start`], killed when this value is dropped.
    Owned(Box<NatsServer>),
}

impl Nats {
    /// `NATS_URL` if set and not empty, else a server started with its store in `store_dir`.
    pub async fn from_env(store_dir: &Path) -> Result<Nats, NatsError> {
        let url = std::env::var(NATS_URL_ENV).ok();
        Nats::from_url_or_start(url.as_deref(), store_dir).await
    }

    /// [`Nats::from_env`] without the environment: `url` if `Some` and not blank (nothing
    /// is started), else a server started with its store in `store_dir`.
    pub async fn from_url_or_start(url: Option<&str>, store_dir: &Path) -> Result<Nats, NatsError> {
        match url.map(str::trim) {
            Some(url) if !url.is_empty() => Ok(Nats::External(url.to_string())),
            _ => Ok(Nats::Owned(Box::new(NatsServer::start(store_dir).await?))),
        }
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        match self {
            Nats::External(url) => url,
            Nats::Owned(server) => server.url(),
        }
    }

    /// The owned server, if this process started one.
    pub fn server_mut(&mut self) -> Option<&mut NatsServer> {
        match self {
            Nats::External(_) => None,
            Nats::Owned(server) => Some(server.as_mut()),
        }
    }
}

/// Connects a client to `url`, bounded by [`CONNECT_BOUND`].
///
/// The client reconnects by itself after the server restarts (unbounded attempts, delay
/// growing 50 ms per attempt up to 500 ms), so a [`NatsServer::restart`] mid-run is survived;
/// every request made meanwhile is bounded by the client's request timeout (10 s) or the
/// JetStream context's (5 s).
pub async fn connect(url: &str) -> Result<async_nats::Client, NatsError> {
    let opts = async_nats::ConnectOptions::new()
        .name("hub-leaf")
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(50).min(500))
        });
    match tokio::time::timeout(CONNECT_BOUND, opts.connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(NatsError::Connect {
            url: url.to_string(),
            source,
        }),
        Err(_) => Err(NatsError::ConnectTimeout {
            url: url.to_string(),
            waited: CONNECT_BOUND,
        }),
    }
}

/// The binary to run: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`, else in
/// `/usr/sbin` or `/usr/local/sbin`.
pub fn find_binary() -> Result<PathBuf, NatsError> {
    if let Some(bin) = std::env::var_os(NATS_SERVER_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if is_executable(&bin) {
            return Ok(bin);
        }
        return Err(NatsError::NotFound {
            where_: format!("at {} ({NATS_SERVER_BIN_ENV})", bin.display()),
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Debian installs it in /usr/sbin, which an unprivileged user's PATH may lack.
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|p| is_executable(p))
        .ok_or_else(|| NatsError::NotFound {
            where_: "on PATH".to_string(),
        })
}

/// Looked in after `PATH`: where packages install daemons.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/usr/local/sbin"];

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A name no other server of this machine has: pid, a counter and the time.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("hub-leaf-{}-{n}-{nanos}", std::process::id())
}

fn free_port() -> Result<u16, NatsError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(NatsError::NoFreePort)?;
    let port = listener.local_addr().map_err(NatsError::NoFreePort)?.port();
    Ok(port)
}

fn port_taken(log_tail: &str) -> bool {
    log_tail.contains("address already in use")
}

/// Does a server named `name` with JetStream answer on `port`? One bounded attempt.
async fn probe(port: u16, name: &str) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.ok()?;
        Some(line)
    };
    match tokio::time::timeout(Duration::from_millis(500), attempt).await {
        Ok(Some(line)) => {
            line.starts_with("INFO ")
                && line.contains(&format!("\"server_name\":\"{name}\""))
                && line.contains("\"jetstream\":true")
        }
        _ => false,
    }
}

/// The log written since byte `from`, last 2 000 bytes at most.
fn log_tail(log: &Path, from: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let new = &bytes[start..];
    let tail = &new[new.len().saturating_sub(2000)..];
    String::from_utf8_lossy(tail).trim().to_string()
}
