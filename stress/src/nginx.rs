//! A private nginx for the `http-peer` suite: Debian's `nginx` serving one small static
//! file on a free loopback port, with everything it writes inside the suite's work dir, and
//! killed when its guard drops (even on panic, and with the suite if the suite dies).
//!
//! How it is started, and why:
//! - `nginx -p DIR -c DIR/nginx.conf -e stderr -g 'daemon off;'`: foreground, so the guard
//!   owns the very process that serves; `-e stderr` keeps nginx from touching the system's
//!   error log before it has read the config. The pid file, the error log (stderr, into
//!   `DIR/nginx.log`) and every `*_temp_path` are in DIR; `access_log off` (a log line per
//!   request would cost the server, not measure it).
//! - `master_process off`: one process, no workers to outlive a killed master, so killing
//!   the one child is enough. It also means one worker, i.e. one core for nginx and one for
//!   the load generator on the 2-core reference machine: the server is the same for both
//!   clients (ours and wrk), which is what a side-by-side comparison needs.
//! - `user root` when run as root (nginx would otherwise switch to `nobody`, who may not
//!   read a temp dir under `/root`); as another user the directive is left out (it is
//!   ignored then anyway).
//! - The port: bind `127.0.0.1:0` to learn a free one, release it, start nginx on it. If
//!   another process takes it in between, nginx exits with "Address already in use" and
//!   the start is retried on a new port, at most [`PORT_TRIES`] times.
//! - Ready when `GET /index.html` answers `200`, polled for at most [`READY_BOUND`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proc_guard::Guarded;

/// How many ports are tried before giving up (another process may take a free port between
/// the probe and nginx's bind).
pub const PORT_TRIES: usize = 5;
/// Longest nginx may take to answer its first request.
pub const READY_BOUND: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest one readiness probe may take.
const PROBE_BOUND: Duration = Duration::from_millis(500);
/// Size of the static file, as nginx's own default page.
pub const FILE_BYTES: usize = 612;
/// What Debian's package is called, for the INCONCLUSIVE reason when it is missing.
pub const INSTALL: &str = "apt-get install nginx wrk";

/// Finds `name` on `PATH` or in the sbin directories (often not on a user's `PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running nginx; killed and reaped on drop (it is a [`Guarded`] child).
pub struct Nginx {
    child: Guarded,
    addr: SocketAddr,
    log: PathBuf,
}

impl Nginx {
    /// Starts `binary` serving a [`FILE_BYTES`]-byte `index.html` from `dir/html`, with its
    /// config, pid, log and temp paths in `dir`; waits (bounded) until it answers.
    pub fn start(binary: &Path, dir: &Path) -> Result<Nginx> {
        let html = dir.join("html");
        std::fs::create_dir_all(&html).with_context(|| format!("creating {}", html.display()))?;
        std::fs::write(html.join("index.html"), page())
            .with_context(|| format!("writing {}", html.display()))?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(dir, addr, is_root()))
                .with_context(|| format!("writing {}", conf.display()))?;
            let mut n = Nginx::spawn(binary, dir, &conf, addr)?;
            match n.wait_ready() {
                Ok(()) => return Ok(n),
                Err(e) => {
                    let log = n.log_text();
                    drop(n);
                    if !log.contains("Address already in use") {
                        bail!("{e}; nginx said: {}", log.trim());
                    }
                    last = format!("{e}; nginx said: {}", log.trim());
                }
            }
        }
        bail!("nginx did not start on a free port in {PORT_TRIES} tries: {last}")
    }

    fn spawn(binary: &Path, dir: &Path, conf: &Path, addr: SocketAddr) -> Result<Nginx> {
        let log = dir.join("nginx.log");
        // Truncate: the log shows this start only.
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr", "-g", "daemon off;"]);
        let child = Guarded::spawn_logged(cmd, "nginx", &log)
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Nginx { child, addr, log })
    }

    /// Polls `GET /index.html` until it answers 200, nginx exits, or [`READY_BOUND`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let until = Instant::now() + READY_BOUND;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("nginx exited at start ({status})");
            }
            if probe(self.addr).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "nginx did not answer on {} within {READY_BOUND:?}",
                    self.addr
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of its static file.
    pub fn url(&self) -> String {
        format!("http://{}/index.html", self.addr)
    }

    /// What nginx wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nginx -v`'s answer, e.g. `nginx/1.22.1`.
    pub fn version(binary: &Path) -> String {
        Command::new(binary)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .map(|v| v.trim_start_matches("nginx version: ").to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a port")?;
    Ok(l.local_addr()?.port())
}

/// One `GET /index.html` over HTTP/1.0; whether it answered 200.
fn probe(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, PROBE_BOUND)?;
    s.set_read_timeout(Some(PROBE_BOUND))?;
    s.set_write_timeout(Some(PROBE_BOUND))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

/// The static file: an HTML page of exactly [`FILE_BYTES`] bytes.
pub fn page() -> Vec<u8> {
    let head = b"<!DOCTYPE html>\n<html><head><title>http-peer</title></head><body>\n<p>";
    let tail = b"</p>\n</body></html>\n";
    let fill = FILE_BYTES - head.len() - tail.len();
    let mut out = Vec::with_capacity(FILE_BYTES);
    out.extend_from_slice(head);
    out.extend(std::iter::repeat_n(b'x', fill));
    out.extend_from_slice(tail);
    out
}

/// The config: one process, everything under `dir`, `addr` only, keep-alive unbounded in
/// requests (so neither client pays for reconnects nginx would force every 1,000 requests).
pub fn config(dir: &Path, addr: SocketAddr, root: bool) -> String {
    let d = dir.display();
    let user = if root { "user root;\n" } else { "" };
    format!(
        "# Written by the http-peer suite; everything nginx writes is in {d}.
{user}master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {{
        listen {addr};
        root {d}/html;
        location / {{ }}
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_the_stated_size_and_the_config_stays_in_its_dir() {
        assert_eq!(page().len(), FILE_BYTES);
        let c = config(
            Path::new("/tmp/x"),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            true,
        );
        assert!(c.contains("listen 127.0.0.1:8080;"), "{c}");
        assert!(c.contains("user root;") && c.contains("master_process off;"));
        for line in c
            .lines()
            .filter(|l| l.contains("_path") || l.contains("pid "))
        {
            assert!(line.contains("/tmp/x/"), "{line}");
        }
        assert!(!config(
            Path::new("/d"),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            false
        )
        .contains("user "));
    }

    #[test]
    fn nginx_starts_answers_and_dies_with_its_guard() {
        let Some(bin) = find_binary("nginx") else {
            eprintln!("nginx not installed ({INSTALL}): skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let n = Nginx::start(&bin, dir.path()).unwrap();
        let addr = n.addr();
        assert!(probe(addr).unwrap());
        drop(n);
        assert!(probe(addr).is_err() || !probe(addr).unwrap_or(false));
    }
}
