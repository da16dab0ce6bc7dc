//! Runs one suite as a child process with a time bound and turns whatever happened into a
//! `SuiteResult`: the suite's own, or a FAIL that says why there is none.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use collector::{SuiteResult, Verdict};
use proc_guard::Guarded;

/// How a child run ended.
#[derive(Debug)]
pub enum Ending {
    /// It exited by itself.
    Exited(ExitStatus),
    /// It ran past its bound and was killed.
    TimedOut,
}

/// Spawns `cmd` with stdout and stderr appended to `log`, waits at most `bound`, calling
/// `tick` about every 100 ms, and kills it when the bound passes.
pub fn run_bounded(
    cmd: Command,
    log: &Path,
    bound: Duration,
    mut tick: impl FnMut(Duration),
) -> Result<(Ending, Duration)> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Truncate: the log shows this run only.
    File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();
    // Killed on drop (so on panic), and by the kernel if xtask is killed outright.
    let mut child = Guarded::spawn_logged(cmd, "the suite", log)?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the suite")? {
            return Ok((Ending::Exited(status), started.elapsed()));
        }
        let elapsed = started.elapsed();
        if elapsed >= bound {
            drop(child); // kills and reaps
            return Ok((Ending::TimedOut, started.elapsed()));
        }
        tick(elapsed);
        std::thread::sleep(Duration::from_millis(100).min(bound - elapsed));
    }
}

/// The last `n` lines of a log file (at most its last 64 KiB), for a FAIL reason.
pub fn tail(log: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// What the report shows for a suite, given how its process ended and what it wrote.
pub struct Outcome<'a> {
    /// Suite name.
    pub suite: &'a str,
    /// Profile name.
    pub profile: &'a str,
    /// Scale from the suite's plan.
    pub scale: &'a str,
    /// Seed passed to the suite.
    pub seed: u64,
    /// The bound it ran under.
    pub bound: Duration,
    /// The result file it was asked to write.
    pub result_path: &'a Path,
    /// Its log.
    pub log: &'a Path,
}

impl Outcome<'_> {
    /// The suite's own result if it exited and wrote a valid one; otherwise a FAIL naming why.
    pub fn result(&self, ending: &Ending, wall: Duration) -> SuiteResult {
        let failed = |reason: String| {
            let mut r = SuiteResult::new(self.suite, self.profile, self.scale, self.seed);
            r.wall_s = wall.as_secs_f64();
            r.headline = "no result: the suite did not finish".into();
            let mut reasons = vec![reason];
            let last = tail(self.log, 12);
            if !last.is_empty() {
                reasons.push(format!("last output: {}", last.join(" ⏎ ")));
            }
            r.verdict = Verdict {
                status: collector::Status::Fail,
                reasons,
            };
            r
        };
        match ending {
            Ending::TimedOut => failed(format!(
                "timed out: still running after its bound of {} s, so it was killed",
                self.bound.as_secs()
            )),
            Ending::Exited(status) => match SuiteResult::read(self.result_path) {
                Ok(r) if r.suite == self.suite => r,
                Ok(r) => failed(format!(
                    "{} holds a result for suite {:?}, expected {:?}",
                    self.result_path.display(),
                    r.suite,
                    self.suite
                )),
                Err(e) if !self.result_path.exists() => {
                    let _ = e;
                    failed(format!("exited with {status} without writing a result"))
                }
                Err(e) => failed(format!(
                    "exited with {status}; its result is unreadable: {e}"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome<'a>(dir: &'a Path, result: &'a Path, log: &'a Path) -> Outcome<'a> {
        let _ = dir;
        Outcome {
            suite: "timer",
            profile: "smoke",
            scale: "s",
            seed: 9,
            bound: Duration::from_millis(300),
            result_path: result,
            log,
        }
    }

    fn pid_alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    #[test]
    fn a_suite_past_its_bound_is_killed_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slow.log");
        let result = dir.path().join("slow.json");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; echo $$ > pid; exec sleep 30"])
            .current_dir(dir.path());
        let (ending, wall) = run_bounded(cmd, &log, Duration::from_millis(300), |_| {}).unwrap();
        assert!(matches!(ending, Ending::TimedOut), "{ending:?}");
        let pid: u32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!pid_alive(pid), "child {pid} still running");
        let r = outcome(dir.path(), &result, &log).result(&ending, wall);
        assert_eq!(r.verdict.status, collector::Status::Fail);
        assert!(
            r.verdict.reasons[0].starts_with("timed out"),
            "{:?}",
            r.verdict
        );
        assert!(r.verdict.reasons[1].contains("started"), "{:?}", r.verdict);
        assert_eq!(r.seed, 9);
        r.validate().unwrap();
    }

    #[test]
    fn a_suite_that_writes_nothing_fails_with_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let result = dir.path().join("x.json");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let (ending, wall) = run_bounded(cmd, &log, Duration::from_secs(20), |_| {}).unwrap();
        let r = outcome(dir.path(), &result, &log).result(&ending, wall);
        assert_eq!(r.verdict.status, collector::Status::Fail);
        assert!(
            r.verdict.reasons[0].contains("exit status: 3"),
            "{:?}",
            r.verdict
        );
        assert!(r.verdict.reasons[1].contains("boom"), "{:?}", r.verdict);
    }

    #[test]
    fn a_suite_result_is_taken_as_written_and_a_bad_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ok.log");
        let result = dir.path().join("ok.json");
        let mut own = SuiteResult::new("timer", "smoke", "s", 9);
        own.headline = "fine".into();
        own.verdict = Verdict::from_checks(vec![], vec![]);
        own.write(&result).unwrap();
        let (ending, wall) =
            run_bounded(Command::new("true"), &log, Duration::from_secs(20), |_| {}).unwrap();
        let r = outcome(dir.path(), &result, &log).result(&ending, wall);
        assert_eq!(r, own);

        std::fs::write(&result, "{\"schema\": 7}").unwrap();
        let r = outcome(dir.path(), &result, &log).result(&ending, wall);
        assert_eq!(r.verdict.status, collector::Status::Fail);
        assert!(
            r.verdict.reasons[0].contains("version 7"),
            "{:?}",
            r.verdict
        );
    }
}
