//! The command target: `exec:PROGRAM ARG…`, one process per operation, so that the cost a
//! CLI agent pays for every call (fork, exec, the program's start-up, its work, its exit)
//! is what is measured. A tool like an issue tracker's CLI is driven exactly as an agent
//! drives it.
//!
//! **Spec.** Everything after `exec:` is split into words as a POSIX shell would split it
//! (quotes and backslashes, by the `shlex` crate) but it is run **without a shell**:
//! no globbing, no pipes, no variables. `exec:sh -c 'echo {seq} | wc -c'` when a shell is
//! wanted. Every word may hold `{seq}` and `{rand}` ([`crate::template`]), rendered per
//! operation. An empty command or an unbalanced quote is refused with the spec named; so
//! is a program that is not on `PATH` (or, given as a path, is not an executable file),
//! checked at open so that a typo fails before any load runs.
//!
//! **One operation** spawns the program with stdin, stdout and stderr on `/dev/null`, and
//! waits for it. At most `conns` (default 64) run at once: an operation waits for a slot
//! (a semaphore) and the wait counts in its latency, as an agent waiting for a free core
//! would. Exit status 0 is ok; otherwise the error kind is `exit_N` (N the exit code) or
//! `signal_N` (killed by signal N); a spawn that fails is `spawn`.
//!
//! **Cancel-safety.** The generator drops an operation past its timeout; the child is
//! spawned with `kill_on_drop`, so dropping the operation kills the process (SIGKILL) and
//! tokio reaps it in the background: a timed-out run leaves no process behind.
//!
//! The action is the program's file name (`exec:/usr/bin/true` records `true`).

use std::borrow::Cow;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use collector::target::{BoxFuture, OpError, SpecError, Target};
use tokio::sync::Semaphore;

use crate::template::Template;
use crate::{invalid, TargetError, TargetOptions};

/// Error kind of a process that could not be started.
pub const KIND_SPAWN: &str = "spawn";

/// A parsed `exec:` spec: the program and its argument templates, unrendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program as written.
    pub program: String,
    /// The arguments as written (templates).
    pub args: Vec<String>,
}

/// Splits `exec:PROGRAM ARG…` into words; the error names the spec.
pub fn parse(spec: &str) -> Result<ExecSpec, SpecError> {
    let Some(command) = spec.trim_start().strip_prefix("exec:") else {
        return Err(invalid(spec, "expected exec:PROGRAM ARG…"));
    };
    let Some(words) = shlex::split(command) else {
        return Err(invalid(
            spec,
            "unbalanced quote or trailing backslash: expected words split as a shell would, like exec:sh -c 'echo hi'",
        ));
    };
    let mut words = words.into_iter();
    match words.next() {
        Some(program) if !program.is_empty() => Ok(ExecSpec {
            program,
            args: words.collect(),
        }),
        _ => Err(invalid(
            spec,
            "empty command: expected exec:PROGRAM ARG…, like exec:true",
        )),
    }
}

/// Where `program` runs from: itself if it holds a `/`, else the first executable match
/// on `path` (a `PATH`-style list). `None` when nothing executable is found.
pub fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// The error kind of a finished process's status: `None` when it succeeded.
pub fn status_kind(status: ExitStatus) -> Option<Cow<'static, str>> {
    if status.success() {
        None
    } else if let Some(code) = status.code() {
        Some(Cow::Owned(format!("exit_{code}")))
    } else if let Some(signal) = status.signal() {
        Some(Cow::Owned(format!("signal_{signal}")))
    } else {
        Some(Cow::Borrowed("exit_unknown"))
    }
}

/// The command target. See the module doc.
pub struct ExecTarget {
    spec: String,
    program: PathBuf,
    action: String,
    args: Vec<Template>,
    slots: Arc<Semaphore>,
    conns: usize,
}

impl ExecTarget {
    /// Parses `spec`, renders nothing yet, and checks the program resolves.
    pub fn open(spec: &str, opts: &TargetOptions) -> Result<ExecTarget, TargetError> {
        let parsed = parse(spec)?;
        let args = parsed
            .args
            .iter()
            .map(|a| Template::parse(a, opts.seed).map_err(|m| invalid(spec, m)))
            .collect::<Result<Vec<_>, _>>()?;
        let path = std::env::var_os("PATH");
        let Some(program) = resolve_program(&parsed.program, path.as_deref()) else {
            return Err(invalid(
                spec,
                format!(
                    "program {:?} not found: expected an executable on PATH or a path to one",
                    parsed.program
                ),
            )
            .into());
        };
        let action = Path::new(&parsed.program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| parsed.program.clone());
        Ok(ExecTarget {
            spec: spec.to_string(),
            program,
            action,
            args,
            slots: Arc::new(Semaphore::new(opts.conns)),
            conns: opts.conns,
        })
    }

    /// Processes running now (for tests: `conns` minus the free slots).
    pub fn running(&self) -> usize {
        self.conns - self.slots.available_permits()
    }

    async fn run(&self, seq: u64) -> Result<(), OpError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| OpError::new(KIND_SPAWN, "the process slots are closed"))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        for a in &self.args {
            cmd.arg(String::from_utf8_lossy(&a.render(seq)).into_owned());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            OpError::new(
                KIND_SPAWN,
                format!("starting {}: {e}", self.program.display()),
            )
        })?;
        let status = child.wait().await.map_err(|e| {
            OpError::new(
                KIND_SPAWN,
                format!("waiting for {}: {e}", self.program.display()),
            )
        })?;
        match status_kind(status) {
            None => Ok(()),
            Some(kind) => Err(OpError::new(
                kind,
                format!("{} ended with {status}", self.action),
            )),
        }
    }
}

impl Target for ExecTarget {
    fn actions(&self) -> Vec<String> {
        vec![self.action.clone()]
    }

    fn call(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(self.run(seq))
    }

    fn describe(&self) -> String {
        format!("{} (at most {} at once)", self.spec, self.conns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell_without_one() {
        let p = parse("exec:sh -c 'echo {seq} | wc -c'").unwrap();
        assert_eq!(p.program, "sh");
        assert_eq!(p.args, ["-c", "echo {seq} | wc -c"]);
        let p = parse("exec:  printf \"a b\" c\\ d").unwrap();
        assert_eq!(p.args, ["a b", "c d"]);
    }

    #[test]
    fn bad_specs_name_the_spec() {
        for (spec, what) in [
            ("exec:", "empty command"),
            ("exec:   ", "empty command"),
            ("exec:sh -c 'oops", "unbalanced"),
            ("exec:''", "empty command"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(&format!("{spec:?}")), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn programs_resolve_on_the_path_or_as_paths() {
        let path = std::env::var_os("PATH");
        assert!(resolve_program("sh", path.as_deref()).is_some());
        assert!(resolve_program("herdlab-no-such-program", path.as_deref()).is_none());
        assert!(resolve_program("/bin/sh", None).is_some());
        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain = plain.path().to_str().unwrap();
        assert!(resolve_program(plain, None).is_none(), "not executable");
        assert!(resolve_program("sh", None).is_none(), "no PATH");
    }
}
