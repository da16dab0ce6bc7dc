//! A child process that dies with its owner: the one child guard of the workspace (xtask's
//! suite runner, the stress suites' daemons, agents, workers and peers, hub-leaf's
//! `nats-server`).
//!
//! # Lifetime of the child
//!
//! - A [`Guarded`] owns the child. Dropping it sends `SIGKILL` and reaps the child, so a
//!   panic or an early return never leaves one behind.
//! - The child is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it if the
//!   owner is killed outright (no destructor runs then). Linux delivers that signal when the
//!   *thread* that forked the child ends, not only the process: a child forked from a tokio
//!   worker or a scoped thread would die the moment that thread finished. So the child is
//!   forked from a dedicated keeper thread that lives exactly as long as the [`Guarded`]
//!   value: the child dies with its owner, and never earlier.
//! - A pid is signalled only while the child is known not to be reaped, so a signal never
//!   reaches an unrelated process that reused the pid.
//!
//! Everything else about the child (arguments, environment, process group, stdin) is the
//! caller's [`Command`]; [`log_output_to`] points its stdout and stderr at a log file.
//! Every wait here has a bound.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a bounded wait polls the child.
const POLL: Duration = Duration::from_millis(10);

/// Points `cmd`'s stdout and stderr at `log` (appended to, created if missing) and its stdin
/// at `/dev/null`. Returns the log's length before the child writes, so a caller can show
/// only what this child wrote.
pub fn log_output_to(cmd: &mut Command, log: &Path) -> io::Result<u64> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", log.display())))?;
    let start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(start)
}

/// A child process that is killed and reaped when this value is dropped, and killed by the
/// kernel if the owning process dies (see the [crate docs](crate)).
pub struct Guarded {
    child: Child,
    /// Set once the child has been reaped; it is never signalled after that.
    status: Option<ExitStatus>,
    what: String,
    keeper: Option<JoinHandle<()>>,
    release: Option<mpsc::Sender<()>>,
}

impl Guarded {
    /// Spawns `cmd` from a keeper thread with the parent-death signal set. `what` names the
    /// child in errors (`"the daemon"`, `"nats-server"`).
    pub fn spawn(mut cmd: Command, what: &str) -> io::Result<Guarded> {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let keeper = std::thread::Builder::new()
            .name(format!("keeper:{}", short(what)))
            .spawn(move || {
                let spawned = cmd.spawn();
                let ok = spawned.is_ok();
                let _ = spawned_tx.send(spawned);
                if ok {
                    // Blocks until the owner drops the sender: the thread, and so the
                    // parent-death signal's trigger, lives as long as the guard.
                    let _ = release_rx.recv();
                }
            })?;
        let spawned = spawned_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the keeper thread ended before spawning")));
        match spawned {
            Ok(child) => Ok(Guarded {
                child,
                status: None,
                what: what.to_string(),
                keeper: Some(keeper),
                release: Some(release_tx),
            }),
            Err(e) => {
                let _ = keeper.join();
                Err(io::Error::new(e.kind(), format!("spawning {what}: {e}")))
            }
        }
    }

    /// [`log_output_to`] `log`, then [`Guarded::spawn`].
    pub fn spawn_logged(mut cmd: Command, what: &str, log: &Path) -> io::Result<Guarded> {
        log_output_to(&mut cmd, log)?;
        Guarded::spawn(cmd, what)
    }

    /// Waits at most `bound` for the child to exit by itself; past the bound it is killed
    /// and the error says so.
    pub fn wait_or_kill(&mut self, bound: Duration) -> io::Result<ExitStatus> {
        match self.wait_for(bound)? {
            Some(status) => Ok(status),
            None => {
                self.kill();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} still running after {bound:?}: killed", self.what),
                ))
            }
        }
    }

    /// What the child is, as given to [`Guarded::spawn`].
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Whether the child has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Sends `signal` unless the child has already exited. Returns whether it was sent.
    pub fn signal(&mut self, signal: libc::c_int) -> io::Result<bool> {
        if self.try_wait()?.is_some() {
            return Ok(false);
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) on the pid of our own child, which try_wait just found unreaped,
        // so the pid cannot have been reused.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    /// `kill -9` and reap; returns the exit status (a killed child's, or the one it exited
    /// with before).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    /// Waits at most `bound` for the child to exit by itself: `Some(status)` if it did,
    /// `None` if it is still running (it is left running).
    pub fn wait_for(&mut self, bound: Duration) -> io::Result<Option<ExitStatus>> {
        let until = Instant::now() + bound;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(until - now));
        }
    }

    /// Sends `signal` (`SIGTERM`, or `SIGINT` for nats-server), waits at most `bound`, then
    /// `SIGKILL`s. Returns the status if the child exited by itself within the bound (or had
    /// exited before), `None` if it had to be killed.
    pub fn terminate(&mut self, signal: libc::c_int, bound: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.try_wait() {
            return Some(status);
        }
        if self.signal(signal).is_ok() {
            if let Ok(Some(status)) = self.wait_for(bound) {
                return Some(status);
            }
        }
        self.kill();
        None
    }
}

impl Guarded {
    /// [`Guarded::terminate`] for an owner that only asks: did the child exit by itself,
    /// within `bound`, with status 0?
    pub fn stop(&mut self, signal: libc::c_int, bound: Duration) -> bool {
        self.terminate(signal, bound).is_some_and(|s| s.success())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
        drop(self.release.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// A thread name's worth of `what` (Linux keeps 15 bytes).
fn short(what: &str) -> String {
    what.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn alive(pid: u32) -> bool {
        // Signal 0 checks existence; a zombie still "exists", so also check /proc state.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        !stat.is_empty() && state != Some('Z')
    }

    #[test]
    fn drop_kills_and_reaps() {
        let g = Guarded::spawn(sh("sleep 30"), "sleeper").unwrap();
        let pid = g.pid();
        assert!(alive(pid));
        drop(g);
        assert!(!alive(pid), "pid {pid} outlived its guard");
    }

    #[test]
    fn the_child_outlives_the_thread_that_spawned_it() {
        // Spawned from a short-lived thread: the keeper, not that thread, is its parent
        // thread, so the parent-death signal does not fire when the thread ends.
        let mut g = std::thread::spawn(|| Guarded::spawn(sh("sleep 30"), "sleeper").unwrap())
            .join()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            g.is_running(),
            "the child died with the thread that spawned it"
        );
        assert!(g.kill().is_some());
        assert!(!g.is_running());
    }

    #[test]
    fn terminate_returns_the_status_of_a_clean_exit_and_none_when_it_must_kill() {
        let mut polite =
            Guarded::spawn(sh("trap 'exit 0' TERM; sleep 30 & wait"), "polite").unwrap();
        std::thread::sleep(Duration::from_millis(100)); // let the trap be installed
        let st = polite.terminate(libc::SIGTERM, Duration::from_secs(5));
        assert!(st.is_some_and(|s| s.success()), "{st:?}");
        let mut failing =
            Guarded::spawn(sh("trap 'exit 4' TERM; sleep 30 & wait"), "failing").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !failing.stop(libc::SIGTERM, Duration::from_secs(5)),
            "exit 4 is not a clean stop"
        );

        let mut stubborn = Guarded::spawn(sh("trap '' TERM; sleep 30"), "stubborn").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            stubborn.terminate(libc::SIGTERM, Duration::from_millis(200)),
            None
        );
        assert!(!stubborn.is_running());
    }

    #[test]
    fn an_exited_child_is_never_signalled() {
        let mut g = Guarded::spawn(sh("exit 3"), "quick").unwrap();
        let st = g.wait_for(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(st.code(), Some(3));
        assert!(!g.signal(libc::SIGKILL).unwrap());
        assert_eq!(g.kill().and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn wait_for_is_bounded_and_leaves_the_child_running() {
        let mut g = Guarded::spawn(sh("sleep 30"), "sleeper").unwrap();
        let t = Instant::now();
        assert_eq!(g.wait_for(Duration::from_millis(50)).unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(g.is_running());
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_the_child() {
        let e = Guarded::spawn(Command::new("/nonexistent/bin"), "the peer")
            .err()
            .unwrap();
        assert!(e.to_string().contains("spawning the peer"), "{e}");
    }

    #[test]
    fn output_goes_to_the_log_and_the_start_offset_skips_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        std::fs::write(&log, "before\n").unwrap();
        let mut cmd = sh("echo out; echo err >&2");
        let start = log_output_to(&mut cmd, &log).unwrap();
        assert_eq!(start, 7);
        let mut g = Guarded::spawn(cmd, "echo").unwrap();
        assert!(g
            .wait_for(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("before\n") && text.contains("out") && text.contains("err"));
    }
}
