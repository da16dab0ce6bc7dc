//! The rpc-daemon under test as a real, separate OS process, and agent processes that drive
//! it: what the `daemon-*` suites build on.
//!
//! The `stress` binary runs the daemon itself (`stress __daemon …`, the same code as
//! `rpc-daemon serve`) so no second binary has to be found. Every child is started with
//! [`proc_guard`], so it dies with the suite even if the suite is killed outright, and is
//! killed and reaped when the suite drops it, even on panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proc_guard::Guarded;
use rpc_daemon::client::{Client, ClientConfig, Mode};
use rpc_daemon::server::{Server, ServerConfig};
use rpc_daemon::store::{Durability, StoreConfig};

/// How long to wait for a daemon's socket to answer after spawning it.
pub const START_BOUND: Duration = Duration::from_secs(20);

/// Flags of the hidden `stress __daemon` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Database file.
    #[arg(long)]
    pub db: PathBuf,
    /// Socket path (default `<db>.sock`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// `synchronous=FULL`.
    #[arg(long)]
    pub durable: bool,
    /// Connection limit.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Idle-connection timeout, milliseconds.
    #[arg(long, default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
}

/// `stress __daemon`: serves until SIGTERM/SIGINT (or SIGKILL).
pub fn serve(args: &DaemonArgs) -> Result<()> {
    let rt = crate::harness::runtime()?;
    rt.block_on(async {
        let mut cfg = ServerConfig::new(args.db.clone());
        if let Some(s) = &args.socket {
            cfg.socket = s.clone();
        }
        cfg.store.durability = if args.durable {
            Durability::Full
        } else {
            Durability::Normal
        };
        cfg.max_connections = args.max_connections;
        cfg.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
        let server = Server::bind(cfg).await.context("starting the daemon")?;
        server
            .shutdown_handle()
            .on_signals()
            .context("installing signal handlers")?;
        println!(
            "serving {} on {}",
            server.db_path().display(),
            server.socket_path().display()
        );
        let stats = server.run().await.context("running the daemon")?;
        println!("{}", serde_json::to_string(&stats)?);
        Ok(())
    })
}

/// Spawns `cmd` as a [`Guarded`] child (killed with the suite) named `what`, stdout and stderr appended to `log`.
pub fn spawn_child(cmd: Command, what: &str, log: &Path) -> Result<Guarded> {
    Guarded::spawn_logged(cmd, what, log).with_context(|| format!("starting {what}"))
}

/// A daemon running as a child process of this suite.
pub struct DaemonProc {
    guard: Guarded,
    /// Its database.
    pub db: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// Its log (stdout and stderr, appended across restarts).
    pub log: PathBuf,
    extra: Vec<String>,
}

impl DaemonProc {
    /// Starts `stress __daemon --db DB [extra…]` and waits (bounded) until it answers a ping.
    pub fn start(db: &Path, extra: &[&str]) -> Result<DaemonProc> {
        let db = db.to_path_buf();
        let socket = rpc_daemon::server::default_socket_path(&db);
        let log = db.with_extension("daemon.log");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let guard = Self::spawn(&db, &log, &extra)?;
        let mut d = DaemonProc {
            guard,
            db,
            socket,
            log,
            extra,
        };
        d.await_ready()?;
        Ok(d)
    }

    fn spawn(db: &Path, log: &Path, extra: &[String]) -> Result<Guarded> {
        let exe = std::env::current_exe().context("locating the stress binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("__daemon").arg("--db").arg(db).args(extra);
        spawn_child(cmd, "the daemon", log)
    }

    fn await_ready(&mut self) -> Result<()> {
        let until = Instant::now() + START_BOUND;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            let cfg = daemon_config(&self.db, Duration::from_secs(2));
            let ok = rt.block_on(async {
                match Client::connect(cfg).await {
                    Ok(mut c) => c.ping().await.is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                return Ok(());
            }
            if let Ok(Some(status)) = self.guard.try_wait() {
                bail!(
                    "the daemon exited with {status} before answering (log: {})",
                    self.log.display()
                );
            }
            if Instant::now() >= until {
                bail!(
                    "the daemon did not answer within {:?} (log: {})",
                    START_BOUND,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// `kill -9` the daemon (no shutdown, no cleanup: the socket file stays behind).
    pub fn kill9(&mut self) {
        self.guard.kill();
    }

    /// Starts it again on the same database (after a kill), waiting until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.guard.kill();
        self.guard = Self::spawn(&self.db, &self.log, &self.extra)?;
        self.await_ready()
    }

    /// Graceful shutdown (SIGTERM), bounded; returns whether it exited cleanly.
    pub fn stop(&mut self, bound: Duration) -> bool {
        self.guard.stop(libc::SIGTERM, bound)
    }
}

/// The configuration of a daemon-only client of `db` whose calls are bounded by `timeout`.
pub fn daemon_config(db: &Path, timeout: Duration) -> ClientConfig {
    ClientConfig {
        mode: Mode::DaemonOnly,
        timeout,
        ..ClientConfig::new(db.to_path_buf())
    }
}

/// A client of `db` through the daemon only (never direct mode: a suite that meant to test
/// the daemon must not silently test the file).
pub async fn daemon_client(db: &Path, timeout: Duration) -> Result<Client> {
    Client::connect(daemon_config(db, timeout))
        .await
        .with_context(|| format!("connecting to the daemon of {}", db.display()))
}

/// A direct-mode client of `db` (for checking what is really in the file).
pub async fn direct_client(db: &Path) -> Result<Client> {
    let cfg = ClientConfig {
        mode: Mode::Direct,
        store: StoreConfig::default(),
        ..ClientConfig::new(db.to_path_buf())
    };
    Client::connect(cfg)
        .await
        .with_context(|| format!("opening {} directly", db.display()))
}

/// Flags of the hidden `stress __agent` subcommand: one agent process creating issues.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Database file (the daemon's).
    #[arg(long)]
    pub db: PathBuf,
    /// Concurrent tasks in this process.
    #[arg(long)]
    pub tasks: u64,
    /// Creates per task.
    #[arg(long)]
    pub creates: u64,
    /// Title prefix; titles are `<prefix>-<task>-<i>`, unique per attempt.
    #[arg(long)]
    pub prefix: String,
    /// Where to write the [`AgentReport`] JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Per-call client timeout, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Keep going through daemon restarts: on a connection failure, reconnect (bounded by
    /// this many milliseconds per attempt) and move on to the next create.
    #[arg(long, default_value_t = 0)]
    pub survive_restarts_ms: u64,
}

/// What one agent process did: every title it attempted, and the id of every create the
/// daemon acknowledged.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct AgentReport {
    /// Titles attempted, in order per task.
    pub attempted: Vec<String>,
    /// `(title, id)` of acknowledged creates.
    pub acked: Vec<(String, String)>,
    /// Errors by code (`timeout`, `connect`, API codes).
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Latency of each acknowledged create in µs (request sent to answer read), as the
    /// `(value, count)` pairs of an HdrHistogram with 3 significant digits; the reports of
    /// several processes merge by recording every pair.
    #[serde(default)]
    pub create_latency_us: Vec<(u64, u64)>,
    /// Unix time in µs when this process started its tasks and when the last one ended.
    #[serde(default)]
    pub window_unix_us: Option<(u64, u64)>,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `stress __agent`: runs the tasks and writes the report.
pub fn agent(args: &AgentArgs) -> Result<()> {
    use rpc_daemon::model::CreateArgs;
    let rt = crate::harness::runtime()?;
    let report = rt.block_on(async {
        let started_us = unix_us();
        let mut handles = Vec::new();
        for task in 0..args.tasks {
            let args = args.clone();
            handles.push(tokio::spawn(async move {
                let timeout = Duration::from_millis(args.timeout_ms);
                let mut r = AgentReport::default();
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).ok();
                let mut client = daemon_client(&args.db, timeout).await.ok();
                for i in 0..args.creates {
                    let title = format!("{}-{task}-{i}", args.prefix);
                    if client.is_none() && args.survive_restarts_ms > 0 {
                        let until =
                            Instant::now() + Duration::from_millis(args.survive_restarts_ms);
                        while client.is_none() && Instant::now() < until {
                            client = daemon_client(&args.db, timeout).await.ok();
                            if client.is_none() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    let Some(c) = client.as_mut() else {
                        *r.errors.entry("connect".into()).or_default() += 1;
                        if args.survive_restarts_ms == 0 {
                            break;
                        }
                        continue;
                    };
                    r.attempted.push(title.clone());
                    let sent = Instant::now();
                    match c
                        .create(CreateArgs {
                            title: title.clone(),
                            ..CreateArgs::default()
                        })
                        .await
                    {
                        Ok(issue) => {
                            if let Some(h) = hist.as_mut() {
                                let _ = h.record(sent.elapsed().as_micros() as u64);
                            }
                            r.acked.push((title, issue.id))
                        }
                        Err(e) => {
                            *r.errors.entry(e.code().to_string()).or_default() += 1;
                            if e.api_code().is_none() {
                                client = None; // the connection is in doubt: reconnect
                            }
                        }
                    }
                }
                (r, hist)
            }));
        }
        let mut all = AgentReport::default();
        let mut latency = hdrhistogram::Histogram::<u64>::new(3).ok();
        for h in handles {
            let (r, hist) = h.await.context("an agent task panicked")?;
            if let (Some(all_h), Some(h)) = (latency.as_mut(), hist.as_ref()) {
                let _ = all_h.add(h);
            }
            all.attempted.extend(r.attempted);
            all.acked.extend(r.acked);
            for (k, v) in r.errors {
                *all.errors.entry(k).or_default() += v;
            }
        }
        all.window_unix_us = Some((started_us, unix_us()));
        if let Some(h) = latency {
            all.create_latency_us = h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect();
        }
        anyhow::Ok(all)
    })?;
    crate::write_json_file(&args.out, &report)
}

/// How long the echo process waits for a round trip's first byte before giving up.
const ECHO_IDLE: Duration = Duration::from_secs(30);

/// `stress __echo`: connects to `socket` and writes back every byte it reads until the peer
/// closes (or sends nothing for [`ECHO_IDLE`]).
pub fn echo(socket: &Path) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(ECHO_IDLE))?;
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(()),
            n => s.write_all(&buf[..n])?,
        }
    }
}

/// The floor of any daemon round trip on this machine: latencies (µs) of `round_trips`
/// blocking round trips of a `size`-byte message between this process and a `stress
/// __echo` child over a Unix socket in `dir`. Each way wakes a sleeping process and does
/// no other work.
pub fn socket_round_trips(dir: &Path, round_trips: usize, size: usize) -> Result<Vec<u64>> {
    use std::io::{Read as _, Write as _};
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    let exe = std::env::current_exe().context("locating the stress binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__echo").arg("--socket").arg(&path);
    let mut child = spawn_child(cmd, "the echo process", &dir.join("echo.log"))?;
    // Accept without hanging if the child never connects.
    listener.set_nonblocking(true)?;
    let until = Instant::now() + START_BOUND;
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("waiting for the echo process to connect"),
        }
    };
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let msg = vec![7u8; size.clamp(1, 256)];
    let mut buf = vec![0u8; msg.len()];
    let mut out = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut buf).context("reading the echo")?;
        out.push(t.elapsed().as_micros() as u64);
    }
    drop(s);
    child.stop(libc::SIGTERM, Duration::from_secs(5));
    let _ = std::fs::remove_file(&path);
    Ok(out)
}
