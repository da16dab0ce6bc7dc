//! The `exec:` target end to end: real processes, exit codes and signals as error kinds,
//! `{seq}` in arguments, the concurrency bound, and no process left after a cancel.

use std::sync::Arc;
use std::time::Duration;

use collector::target::Target;
use targets::exec::ExecTarget;
use targets::TargetOptions;

fn open(spec: &str) -> ExecTarget {
    ExecTarget::open(spec, &TargetOptions::default()).unwrap()
}

async fn kind(t: &ExecTarget, seq: u64) -> Option<String> {
    t.call(0, seq).await.err().map(|e| e.kind.into_owned())
}

#[tokio::test]
async fn exit_status_is_the_error_kind() {
    assert_eq!(kind(&open("exec:true"), 0).await, None);
    assert_eq!(
        kind(&open("exec:false"), 0).await.as_deref(),
        Some("exit_1")
    );
    assert_eq!(
        kind(&open("exec:sh -c 'exit 3'"), 0).await.as_deref(),
        Some("exit_3")
    );
    assert_eq!(
        kind(&open("exec:sh -c 'kill -9 $$'"), 0).await.as_deref(),
        Some("signal_9")
    );
    assert_eq!(open("exec:/bin/true").actions(), ["true"]);
}

#[tokio::test]
async fn seq_is_rendered_into_arguments() {
    let t = open("exec:sh -c 'test {seq} -eq 5'");
    assert_eq!(kind(&t, 5).await, None);
    assert_eq!(kind(&t, 6).await.as_deref(), Some("exit_1"));
}

#[test]
fn open_refuses_what_cannot_run() {
    let opts = TargetOptions::default();
    for (spec, what) in [
        ("exec:", "empty command"),
        ("exec:sh -c 'x", "unbalanced"),
        ("exec:herdlab-no-such-program --x", "not found"),
        ("exec:echo {sequ}", "sequ"),
    ] {
        let e = match ExecTarget::open(spec, &opts) {
            Ok(_) => panic!("{spec} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&format!("{spec:?}")), "{e}");
        assert!(e.contains(what), "{e}");
    }
}

/// The pid a `sh -c 'echo $$ > FILE; exec sleep 30'` child wrote, once it wrote it.
async fn pid_in(file: &std::path::Path) -> u32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the child never wrote its pid");
}

#[tokio::test]
async fn a_cancelled_operation_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pid");
    let spec = format!("exec:sh -c 'echo $$ > {}; exec sleep 30'", file.display());
    let t = Arc::new(open(&spec));
    let call = {
        let t = t.clone();
        tokio::spawn(async move { t.call(0, 0).await })
    };
    let pid = pid_in(&file).await;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    call.abort();
    let _ = call.await;
    // kill_on_drop sends SIGKILL at once; tokio reaps in the background. Bounded wait.
    let mut gone = false;
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for the reaper ("Z"): either way it no longer runs.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gone,
        "process {pid} still runs after its operation was cancelled"
    );
    assert_eq!(t.running(), 0);
}

#[tokio::test]
async fn at_most_conns_processes_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    let spec = format!(
        "exec:sh -c 'while [ ! -e {} ]; do sleep 0.01; done'",
        gate.display()
    );
    let opts = TargetOptions {
        conns: 3,
        ..TargetOptions::default()
    };
    let t = Arc::new(ExecTarget::open(&spec, &opts).unwrap());
    let calls: Vec<_> = (0..8)
        .map(|seq| {
            let t = t.clone();
            tokio::spawn(async move { t.call(0, seq).await })
        })
        .collect();
    // Wait (bounded) until the slots are taken; more can never be.
    for _ in 0..500 {
        if t.running() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.running(), 3, "three slots, eight operations");
    std::fs::write(&gate, b"").unwrap();
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert_eq!(t.running(), 0);
}
