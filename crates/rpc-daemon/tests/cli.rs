//! The `rpc-daemon` binary as a user runs it: replies as JSON on stdout, errors as
//! `error: <code>: <message>` on stderr with exit status 1, usage errors with 2. Every child
//! runs with a bounded wait and is killed if it overstays.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rpc-daemon");
/// Bound on one client invocation.
const RUN_BOUND: Duration = Duration::from_secs(30);

/// Kills the child when dropped (also when an assertion fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the binary with `args` (and `stdin`), waits at most [`RUN_BOUND`].
fn run_with(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rpc-daemon"),
    );
    if let Some(mut pipe) = child.0.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < RUN_BOUND,
            "rpc-daemon {args:?} did not finish within {RUN_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.0.stdout.take() {
        o.read_to_string(&mut stdout).unwrap();
    }
    if let Some(mut e) = child.0.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

fn run(args: &[&str]) -> Out {
    run_with(args, None)
}

/// `args` followed by the connection arguments of `mode`.
fn with<'a>(args: &[&'a str], conn: &'a [String]) -> Vec<&'a str> {
    let mut v: Vec<&str> = args.to_vec();
    v.extend(conn.iter().map(String::as_str));
    v
}

fn direct(db: &Path) -> Vec<String> {
    vec![
        "--db".into(),
        db.display().to_string(),
        "--no-daemon".into(),
        "--timeout".into(),
        "20s".into(),
    ]
}

/// Drives every subcommand once against `conn` and returns the replies (timestamps zeroed).
fn every_subcommand(conn: &[String]) -> Vec<Value> {
    let mut replies = Vec::new();
    let mut keep = |v: Value| {
        replies.push(zero_times(v.clone()));
        v
    };
    keep(run(&with(&["ping"], conn)).json());
    let a = keep(
        run(&with(
            &[
                "create",
                "--title",
                "first",
                "--description",
                "d",
                "--priority",
                "1",
                "--assignee",
                "agent-1",
                "--label",
                "x",
                "--label",
                "a",
            ],
            conn,
        ))
        .json(),
    );
    assert_eq!(a["issue"]["id"], "hl-1");
    assert_eq!(a["issue"]["labels"], serde_json::json!(["a", "x"]));
    let b = keep(run(&with(&["create", "--title", "second"], conn)).json());
    assert_eq!(
        (&b["issue"]["id"], &b["issue"]["priority"]),
        (&"hl-2".into(), &2.into())
    );

    let u = keep(
        run(&with(
            &[
                "update",
                "hl-1",
                "--title",
                "renamed",
                "--status",
                "in_progress",
            ],
            conn,
        ))
        .json(),
    );
    assert_eq!(u["issue"]["title"], "renamed");
    assert_eq!(u["issue"]["status"], "in_progress");
    assert_eq!(u["issue"]["assignee"], "agent-1", "not named, so kept");
    let u = keep(
        run(&with(
            &["update", "hl-1", "--unassign", "--clear-labels"],
            conn,
        ))
        .json(),
    );
    assert!(u["issue"]["assignee"].is_null());
    assert_eq!(u["issue"]["labels"], serde_json::json!([]));

    let d = keep(run(&with(&["dep", "add", "hl-2", "hl-1"], conn)).json());
    assert_eq!(d["dep"]["kind"], "blocks");
    keep(
        run(&with(
            &["dep", "add", "hl-1", "hl-2", "--kind", "related"],
            conn,
        ))
        .json(),
    );
    let s = keep(run(&with(&["show", "hl-2"], conn)).json());
    assert_eq!(s["deps"].as_array().map(Vec::len), Some(2));
    let r = keep(run(&with(&["ready"], conn)).json());
    assert_eq!(r["issues"], serde_json::json!([]));
    let c = keep(run(&with(&["close", "hl-1", "--reason", "done"], conn)).json());
    assert_eq!(c["issue"]["close_reason"], "done");
    let r = keep(run(&with(&["ready", "--limit", "5"], conn)).json());
    assert_eq!(r["issues"][0]["id"], "hl-2");
    keep(
        run(&with(
            &["dep", "remove", "hl-1", "hl-2", "--kind", "related"],
            conn,
        ))
        .json(),
    );
    let l = keep(run(&with(&["list", "--status", "open", "--limit", "10"], conn)).json());
    assert_eq!(l["issues"].as_array().map(Vec::len), Some(1));

    let ops = r#"[{"op": "create", "title": "third", "labels": ["z"]},
                  {"op": "update", "id": "hl-2", "assignee": "agent-2"},
                  {"op": "show", "id": "hl-3"}]"#;
    let bt = keep(run_with(&with(&["batch", "--file", "-"], conn), Some(ops)).json());
    assert_eq!(bt["results"].as_array().map(Vec::len), Some(3));
    let l = keep(run(&with(&["list", "--assignee", "agent-2"], conn)).json());
    assert_eq!(l["issues"][0]["id"], "hl-2");
    let st = keep(run(&with(&["stats"], conn)).json());
    assert_eq!(st["stats"]["issues"], 3);
    assert_eq!(st["stats"]["closed"], 1);
    replies
}

fn zero_times(mut v: Value) -> Value {
    match &mut v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if matches!(k.as_str(), "created_at" | "updated_at" | "closed_at") && x.is_number()
                {
                    *x = 0.into();
                } else {
                    *x = zero_times(x.take());
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = zero_times(x.take());
            }
        }
        _ => {}
    }
    v
}

#[test]
fn every_subcommand_works_in_direct_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("issues.db");
    every_subcommand(&direct(&db));
}

#[test]
fn errors_name_their_code_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("issues.db");
    let conn = direct(&db);
    let o = run(&with(&["show", "hl-9"], &conn));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stdout.is_empty());
    assert!(o.stderr.starts_with("error: not_found: "), "{}", o.stderr);
    assert!(o.stderr.contains("hl-9"), "{}", o.stderr);

    let o = run(&with(&["create", "--title", "x", "--priority", "7"], &conn));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("error: invalid_field: priority 7"),
        "{}",
        o.stderr
    );

    let ops = r#"[{"op": "create", "title": "ok"}, {"op": "close", "id": "hl-77"}]"#;
    let file = dir.path().join("ops.json");
    std::fs::write(&file, ops).unwrap();
    let o = run(&with(
        &["batch", "--file", &file.display().to_string()],
        &conn,
    ));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.starts_with("error: batch_failed: operation 1"),
        "{}",
        o.stderr
    );
    let st = run(&with(&["stats"], &conn)).json();
    assert_eq!(st["stats"]["issues"], 0, "the failed batch applied nothing");

    let o = run_with(&with(&["batch", "--file", "-"], &conn), Some("{not json"));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.starts_with("error: bad_request: batch file"),
        "{}",
        o.stderr
    );

    let o = run(&with(
        &["show", "hl-1"],
        &["--db".into(), "/nonexistent-dir/x.db".into()],
    ));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("error: invalid_field: database directory"),
        "{}",
        o.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["create", "--title", "x"][..],
        &["create", "--db", "x.db"],
        &[
            "update",
            "--db",
            "x.db",
            "hl-1",
            "--assignee",
            "a",
            "--unassign",
        ],
        &["list", "--db", "x.db", "--status", "done"],
        &["ping", "--db", "x.db", "--timeout", "1x"],
        &["frobnicate"],
    ] {
        let o = run(args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("error"), "{args:?}: {}", o.stderr);
    }
    let o = run(&["--help"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("serve"), "{}", o.stdout);
}

#[test]
fn auto_mode_without_a_daemon_says_it_uses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("issues.db");
    let o = run(&["ping", "--db", &db.display().to_string()]);
    assert_eq!(o.json(), serde_json::json!({"pong": true}));
    assert!(o.stderr.contains("no daemon listens"), "{}", o.stderr);
    let o = run(&["ping", "--db", &db.display().to_string(), "--no-daemon"]);
    assert_eq!(o.code, 0);
    assert!(o.stderr.is_empty(), "{}", o.stderr);
}

fn socket_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// `rpc-daemon serve` as a child process, killed when dropped.
struct Serve {
    child: KillOnDrop,
    socket: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Starts the daemon and waits (bounded) until its socket accepts connections.
    fn start(db: &Path, extra: &[&str]) -> Serve {
        let log = db.with_extension("serve.log");
        let mut args = vec!["serve", "--db", db.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = KillOnDrop(
            Command::new(BIN)
                .args(&args)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn rpc-daemon serve"),
        );
        let mut serve = Serve {
            child,
            socket: socket_of(db),
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = serve.child.0.try_wait().unwrap() {
                panic!("serve exited early ({status}): {}", serve.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&serve.socket).is_ok() {
                return serve;
            }
            assert!(
                started.elapsed() < RUN_BOUND,
                "no socket {} within {RUN_BOUND:?}: {}",
                serve.socket.display(),
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (like "TERM") and waits (bounded) for the exit status.
    fn signal_and_wait(&mut self, signal: &str) -> i32 {
        let pid = self.child.0.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{signal} {pid}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < RUN_BOUND,
                "serve did not stop within {RUN_BOUND:?} of SIG{signal}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn every_subcommand_gives_the_same_replies_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served.db");
    let _daemon = Serve::start(&served, &["--max-connections", "8", "--idle-timeout", "1m"]);
    let auto = vec![
        "--db".to_string(),
        served.display().to_string(),
        "--timeout".into(),
        "20s".into(),
    ];
    let o = run(&with(&["ping"], &auto));
    assert_eq!(o.json(), serde_json::json!({"pong": true}));
    assert!(
        o.stderr.is_empty(),
        "the daemon was used, no fallback: {}",
        o.stderr
    );

    let via_daemon = every_subcommand(&auto);
    let direct_db = dir.path().join("direct.db");
    let via_file = every_subcommand(&direct(&direct_db));
    assert_eq!(via_daemon.len(), via_file.len());
    for (i, (a, b)) in via_daemon.iter().zip(&via_file).enumerate() {
        assert_eq!(a, b, "reply {i}");
    }
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("issues.db");
    for signal in ["TERM", "INT"] {
        let mut daemon = Serve::start(&db, &["--durable"]);
        let o = run(&["create", "--db", db.to_str().unwrap(), "--title", signal]);
        assert!(o.stderr.is_empty(), "{}", o.stderr);
        o.json();
        assert_eq!(daemon.signal_and_wait(signal), 0, "{}", daemon.log_text());
        assert!(!daemon.socket.exists(), "the socket is removed");
        assert!(
            daemon.log_text().contains("daemon stopped"),
            "{}",
            daemon.log_text()
        );
    }
    // Both creates were committed before the acknowledgements.
    let st = run(&["stats", "--db", db.to_str().unwrap(), "--no-daemon"]).json();
    assert_eq!(st["stats"]["issues"], 2);
}

#[test]
fn a_second_daemon_on_one_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("issues.db");
    let _daemon = Serve::start(&db, &[]);
    let o = run(&["serve", "--db", db.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("error: locked: "), "{}", o.stderr);
    let o = run(&[
        "serve",
        "--db",
        db.to_str().unwrap(),
        "--max-connections",
        "0",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}
