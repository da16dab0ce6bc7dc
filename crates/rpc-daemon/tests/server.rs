//! The daemon end to end over its Unix socket, through a tiny client written here with the
//! proto framing: handshake, every operation, pipelining, bad frames, limits, the
//! single-instance lock, stale sockets, idle timeout, graceful shutdown, deadlines under a
//! held SQLite write lock, and group commit. Each test has its own temp dir and an overall
//! time bound; no test asserts a speed.

use std::collections::HashSet;
use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpc_daemon::error::{ApiError, Code};
use rpc_daemon::model::*;
use rpc_daemon::proto::{
    read_frame, write_frame, write_json, Hello, HelloFrame, Request, Response, WelcomeFrame,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use rpc_daemon::server::{
    Server, ServerConfig, ServerError, ServerStats, ShutdownHandle, CHECKPOINT_PAGES,
};
use rpc_daemon::store::Durability;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// Every wait of a test is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// Runs a test body with an overall bound.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test exceeded its time bound");
}

struct Daemon {
    handle: ShutdownHandle,
    task: JoinHandle<Result<ServerStats, ServerError>>,
    socket: PathBuf,
    db: String,
}

impl Daemon {
    async fn start(cfg: ServerConfig) -> Daemon {
        let server = Server::bind(cfg).await.expect("bind");
        let socket = server.socket_path().to_path_buf();
        let db = server.db_path().to_string_lossy().into_owned();
        let handle = server.shutdown_handle();
        let task = tokio::spawn(server.run());
        Daemon {
            handle,
            task,
            socket,
            db,
        }
    }

    async fn connect(&self) -> Conn {
        let (conn, welcome) = Conn::hello(&self.socket, &self.db, PROTOCOL_VERSION).await;
        assert!(welcome.error.is_none(), "{welcome:?}");
        conn
    }

    async fn stop(self) -> ServerStats {
        self.handle.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("shutdown within bound")
            .expect("run task")
            .expect("run")
    }
}

fn config(dir: &Path) -> ServerConfig {
    ServerConfig::new(dir.join("issues.db"))
}

struct Conn {
    stream: UnixStream,
    next_id: u64,
}

impl Conn {
    async fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket).await.expect("connect");
        Conn { stream, next_id: 1 }
    }

    async fn hello(socket: &Path, db: &str, protocol: u32) -> (Conn, WelcomeFrame) {
        let mut c = Conn::open(socket).await;
        c.send(&HelloFrame {
            hello: Hello {
                protocol,
                db: db.to_string(),
                client: Some("test".into()),
            },
        })
        .await;
        let welcome = c.recv_as::<WelcomeFrame>().await.expect("a welcome frame");
        (c, welcome)
    }

    async fn send<T: serde::Serialize>(&mut self, v: &T) {
        write_json(&mut self.stream, v).await.expect("send");
    }

    async fn send_raw(&mut self, body: &[u8]) {
        write_frame(&mut self.stream, body).await.expect("send");
    }

    async fn request(&mut self, id: u64, deadline_ms: Option<u64>, op: Op) {
        self.send(&Request {
            id,
            deadline_ms,
            body: op,
        })
        .await;
    }

    /// The next frame, or `None` when the daemon closed the connection.
    async fn recv_as<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut self.stream, MAX_FRAME_BYTES))
            .await
            .expect("a frame or EOF within bound");
        match frame {
            Ok(Some(body)) => Some(serde_json::from_slice(&body).expect("valid JSON frame")),
            Ok(None) | Err(_) => None,
        }
    }

    async fn recv(&mut self) -> Response {
        self.recv_as::<Response>().await.expect("a response")
    }

    async fn closed(&mut self) -> bool {
        self.recv_as::<serde_json::Value>().await.is_none()
    }

    async fn call(&mut self, op: Op) -> Result<Reply, ApiError> {
        let id = self.next_id;
        self.next_id += 1;
        self.request(id, None, op).await;
        let resp = self.recv().await;
        assert_eq!(resp.id, Some(id));
        resp.into_result()
    }
}

fn create(title: &str) -> Op {
    Op::Create(CreateArgs {
        title: title.into(),
        ..CreateArgs::default()
    })
}

fn issue(r: Result<Reply, ApiError>) -> Issue {
    match r {
        Ok(Reply::Issue { issue }) => issue,
        other => panic!("expected an issue, got {other:?}"),
    }
}

fn ids(r: Result<Reply, ApiError>) -> Vec<String> {
    match r {
        Ok(Reply::Issues { issues }) => issues.into_iter().map(|i| i.id).collect(),
        other => panic!("expected issues, got {other:?}"),
    }
}

fn code(r: Result<Reply, ApiError>) -> Code {
    match r {
        Err(e) => e.code,
        Ok(reply) => panic!("expected an error, got {reply:?}"),
    }
}

/// Polls `cond` until it holds (bounded).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_accepts_the_served_database_and_refuses_the_rest() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;

        let (mut c, welcome) = Conn::hello(&d.socket, &d.db, PROTOCOL_VERSION).await;
        let w = welcome.hello.expect("welcome");
        assert_eq!(
            (w.protocol, w.db.as_str()),
            (PROTOCOL_VERSION, d.db.as_str())
        );
        assert!(c.call(Op::Ping {}).await.is_ok());

        // Another spelling of the same absolute path is the same database.
        let dotted = dir.path().join(".").join("issues.db");
        let (_c, welcome) =
            Conn::hello(&d.socket, &dotted.to_string_lossy(), PROTOCOL_VERSION).await;
        assert!(welcome.error.is_none(), "{welcome:?}");

        let (mut c, welcome) = Conn::hello(&d.socket, &d.db, PROTOCOL_VERSION + 1).await;
        let e = welcome.error.expect("refused");
        assert_eq!(e.code, Code::VersionMismatch, "{e}");
        assert!(c.closed().await);

        let other = dir.path().join("other.db");
        let (mut c, welcome) =
            Conn::hello(&d.socket, &other.to_string_lossy(), PROTOCOL_VERSION).await;
        let e = welcome.error.expect("refused");
        assert_eq!(e.code, Code::WrongDatabase, "{e}");
        assert!(e.message.contains("other.db"), "{e}");
        assert!(c.closed().await);

        // A relative path never matches, even if it would resolve to the file from here.
        let (mut c, welcome) = Conn::hello(&d.socket, "issues.db", PROTOCOL_VERSION).await;
        assert_eq!(welcome.error.expect("refused").code, Code::WrongDatabase);
        assert!(c.closed().await);

        let mut c = Conn::open(&d.socket).await;
        c.request(1, None, Op::Ping {}).await;
        let welcome = c.recv_as::<WelcomeFrame>().await.expect("an answer");
        let e = welcome.error.expect("refused");
        assert_eq!(e.code, Code::HandshakeRequired, "{e}");
        assert!(c.closed().await);

        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_end_to_end() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;

        assert_eq!(c.call(Op::Ping {}).await, Ok(Reply::Pong { pong: true }));
        let a = issue(c.call(create("a")).await);
        let b = issue(
            c.call(Op::Create(CreateArgs {
                title: "b".into(),
                priority: Some(0),
                labels: vec!["x".into()],
                ..CreateArgs::default()
            }))
            .await,
        );
        assert_eq!((a.id.as_str(), b.id.as_str()), ("hl-1", "hl-2"));
        let up = issue(
            c.call(Op::Update(UpdateArgs {
                id: a.id.clone(),
                assignee: Some(Some("agent-7".into())),
                status: Some(Status::InProgress),
                ..UpdateArgs::default()
            }))
            .await,
        );
        assert_eq!(up.assignee.as_deref(), Some("agent-7"));
        let dep = Dep {
            issue: b.id.clone(),
            depends_on: a.id.clone(),
            kind: DepKind::Blocks,
        };
        assert_eq!(
            c.call(Op::DepAdd(dep.clone())).await,
            Ok(Reply::Dep { dep: dep.clone() })
        );
        match c.call(Op::Show { id: b.id.clone() }).await {
            Ok(Reply::Detail { issue, deps }) => {
                assert_eq!(issue.labels, ["x"]);
                assert_eq!(deps, std::slice::from_ref(&dep));
            }
            other => panic!("{other:?}"),
        }
        let listed = ids(c
            .call(Op::List(ListArgs {
                label: Some("x".into()),
                ..ListArgs::default()
            }))
            .await);
        assert_eq!(listed, [b.id.as_str()]);
        assert!(
            ids(c.call(Op::Ready { limit: None }).await).is_empty(),
            "a is in progress, b is blocked by a"
        );
        let closed = issue(
            c.call(Op::Close {
                id: a.id.clone(),
                reason: Some("done".into()),
            })
            .await,
        );
        assert_eq!(closed.status, Status::Closed);
        assert_eq!(
            ids(c.call(Op::Ready { limit: None }).await),
            [b.id.as_str()]
        );
        assert!(c.call(Op::DepRemove(dep.clone())).await.is_ok());
        assert_eq!(code(c.call(Op::DepRemove(dep)).await), Code::NotFound);
        match c
            .call(Op::Batch {
                ops: vec![create("c"), create("d")],
            })
            .await
        {
            Ok(Reply::Batch { results }) => assert_eq!(results.len(), 2),
            other => panic!("{other:?}"),
        }
        let failed = c
            .call(Op::Batch {
                ops: vec![create("e"), create("")],
            })
            .await
            .unwrap_err();
        assert_eq!((failed.code, failed.index), (Code::BatchFailed, Some(1)));
        match c.call(Op::Stats {}).await {
            Ok(Reply::Stats { stats }) => {
                assert_eq!((stats.issues, stats.closed, stats.deps), (4, 1, 0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            code(c.call(Op::Show { id: "hl-99".into() }).await),
            Code::NotFound
        );
        assert_eq!(code(c.call(create(" ")).await), Code::InvalidField);

        let stats = d.stop().await;
        assert!(stats.requests >= 17, "{stats:?}");
        assert!(stats.grouped_writes >= 9, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_with_their_ids() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        let sent: HashSet<u64> = (100..140).collect();
        for &id in &sent {
            let op = match id % 3 {
                0 => create(&format!("t{id}")),
                1 => Op::Ping {},
                _ => Op::List(ListArgs::default()),
            };
            c.request(id, None, op).await;
        }
        let mut got = HashSet::new();
        for _ in 0..sent.len() {
            let resp = c.recv().await;
            let id = resp.id.expect("an id");
            assert!(resp.into_result().is_ok(), "request {id}");
            assert!(got.insert(id), "request {id} answered twice");
        }
        assert_eq!(got, sent);
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_bad_request_and_the_connection_survives() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        for (body, id) in [
            (&b"not json"[..], None),
            (br#"{"id":5,"body":{"op":"explode"}}"#, Some(5)),
            (br#"{"id":6,"body":{"op":"create","title":7}}"#, Some(6)),
            (br#"{"id":7,"body":{"op":"ping"},"extra":1}"#, Some(7)),
            (br#"{"id":"eight","body":{"op":"ping"}}"#, None),
            (b"\xff\xfe", None),
        ] {
            c.send_raw(body).await;
            let resp = c.recv().await;
            assert_eq!(resp.id, id, "{}", String::from_utf8_lossy(body));
            let e = resp.into_result().unwrap_err();
            assert_eq!(e.code, Code::BadRequest, "{e}");
        }
        assert_eq!(c.call(Op::Ping {}).await, Ok(Reply::Pong { pong: true }));
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_length_prefix_gets_too_large_and_a_close() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        c.stream
            .write_all(&(MAX_FRAME_BYTES + 1).to_be_bytes())
            .await
            .unwrap();
        let resp = c.recv().await;
        assert_eq!(resp.id, None);
        let e = resp.into_result().unwrap_err();
        assert_eq!(e.code, Code::TooLarge, "{e}");
        assert!(
            e.message.contains(&(MAX_FRAME_BYTES + 1).to_string()),
            "{e}"
        );
        assert!(c.closed().await);
        // The daemon goes on serving others.
        let mut c = d.connect().await;
        assert!(c.call(Op::Ping {}).await.is_ok());
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_is_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;

        // Same database, another socket: the lock refuses it, naming file and pid.
        let mut cfg = config(dir.path());
        cfg.socket = dir.path().join("second.sock");
        let e = Server::bind(cfg).await.unwrap_err();
        match &e {
            ServerError::Locked { lock_file, pid } => {
                assert!(lock_file.ends_with("issues.db.daemon.lock"), "{e}");
                assert_eq!(*pid, Some(std::process::id()), "{e}");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("issues.db.daemon.lock") && msg.contains("pid"),
            "{msg}"
        );
        assert!(!dir.path().join("second.sock").exists());

        // Another database on the live daemon's socket: refused, the socket left alone.
        let mut cfg = ServerConfig::new(dir.path().join("other.db"));
        cfg.socket = d.socket.clone();
        let e = Server::bind(cfg).await.unwrap_err();
        assert!(
            matches!(&e, ServerError::AlreadyRunning { socket } if *socket == d.socket),
            "{e:?}"
        );
        let mut c = d.connect().await;
        assert!(c.call(Op::Ping {}).await.is_ok());
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_the_socket_is_private() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        // What a killed daemon leaves: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&cfg.socket).unwrap());
        assert!(cfg.socket.exists());
        let d = Daemon::start(cfg).await;
        let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let mut c = d.connect().await;
        assert!(c.call(Op::Ping {}).await.is_ok());
        d.stop().await;

        // A path that is not a socket is never removed.
        let mut cfg = config(dir.path());
        cfg.socket = dir.path().join("not-a-socket");
        std::fs::write(&cfg.socket, "keep me").unwrap();
        let e = Server::bind(cfg.clone()).await.unwrap_err();
        assert!(matches!(e, ServerError::Bind { .. }), "{e:?}");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&cfg.socket).unwrap(), "keep me");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_rejects_at_once_and_others_keep_working() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.max_connections = 2;
        let d = Daemon::start(cfg).await;
        let mut c1 = d.connect().await;
        let mut c2 = d.connect().await;

        let (mut c3, welcome) = Conn::hello(&d.socket, &d.db, PROTOCOL_VERSION).await;
        let e = welcome.error.expect("refused");
        assert_eq!(e.code, Code::Overloaded, "{e}");
        assert!(e.message.contains("limit of 2 connections"), "{e}");
        assert!(c3.closed().await);

        assert!(c1.call(Op::Ping {}).await.is_ok());
        assert!(c2.call(create("still here")).await.is_ok());

        // A slot comes back when a connection closes.
        drop(c1);
        let started = tokio::time::Instant::now();
        loop {
            let (_c, welcome) = Conn::hello(&d.socket, &d.db, PROTOCOL_VERSION).await;
            if welcome.error.is_none() {
                break;
            }
            assert!(started.elapsed() < WAIT, "no slot came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = d.stop().await;
        assert!(stats.rejected_connections >= 1, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.idle_timeout = Duration::from_millis(200);
        let d = Daemon::start(cfg).await;
        let mut c = d.connect().await;
        assert!(c.closed().await, "an idle connection is closed");
        // So is one that never says hello.
        let mut c = Conn::open(&d.socket).await;
        assert!(c.closed().await);
        d.stop().await;
    })
    .await;
}

/// Holds SQLite's write lock from another connection until dropped or released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(db: &str) -> WriteLock {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_frees_socket_and_lock() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        assert!(c.call(create("before")).await.is_ok());

        // Stall a write behind a held SQLite lock; the stats read after it proves the
        // daemon has read the write's frame (frames are read in order).
        let lock = WriteLock::take(&d.db);
        c.request(10, None, create("in flight")).await;
        c.request(11, None, Op::Stats {}).await;
        let resp = c.recv().await;
        assert_eq!(
            resp.id,
            Some(11),
            "the read is answered while the write stalls"
        );

        d.handle.shutdown();
        c.request(12, None, Op::Ping {}).await;
        let resp = c.recv().await;
        assert_eq!(resp.id, Some(12));
        assert_eq!(code(resp.into_result()), Code::ShuttingDown);
        eventually("the socket file is removed", || !d.socket.exists()).await;
        assert!(UnixStream::connect(&d.socket).await.is_err());

        lock.release();
        let resp = c.recv().await;
        assert_eq!(resp.id, Some(10));
        let drained = issue(resp.into_result());
        assert!(c.closed().await, "closed once drained");

        let stats = tokio::time::timeout(WAIT, d.task)
            .await
            .expect("run returns")
            .unwrap()
            .unwrap();
        assert_eq!(stats.deadline_exceeded, 0, "{stats:?}");

        // A new daemon starts on the same database and sees the drained write.
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        assert_eq!(
            issue(
                c.call(Op::Show {
                    id: drained.id.clone()
                })
                .await
                .map(|r| match r {
                    Reply::Detail { issue, .. } => Reply::Issue { issue },
                    other => other,
                })
            )
            .title,
            "in flight"
        );
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_a_shutdown_and_drops_unanswered_writes() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.drain_timeout = Duration::from_millis(200);
        // Longer than the test's bound: only the drain timeout can end this shutdown.
        cfg.store.busy_timeout = Duration::from_secs(120);
        let d = Daemon::start(cfg.clone()).await;
        let mut c = d.connect().await;
        let lock = WriteLock::take(&d.db);
        c.request(1, None, create("stuck")).await;
        c.request(2, None, Op::Ping {}).await;
        assert_eq!(c.recv().await.id, Some(2), "the write's frame was read");
        d.stop().await;
        assert!(c.closed().await, "dropped without an answer");
        lock.release();

        let d = Daemon::start(cfg).await;
        let mut c = d.connect().await;
        assert!(
            ids(c.call(Op::List(ListArgs::default())).await).is_empty(),
            "an unanswered write dropped by the drain was not applied"
        );
        d.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_its_deadline_behind_a_held_lock_is_never_applied() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;

        let lock = WriteLock::take(&d.db);
        c.request(1, Some(300), create("too late")).await;
        // Reads go on while the write waits.
        c.request(2, None, Op::Stats {}).await;
        c.request(3, None, Op::Ping {}).await;
        let mut late = None;
        for _ in 0..3 {
            let resp = c.recv().await;
            let id = resp.id.expect("an id");
            if id == 1 {
                late = Some(resp.into_result());
            } else {
                assert!(resp.into_result().is_ok(), "request {id}");
            }
        }
        let e = late.expect("an answer").unwrap_err();
        assert_eq!(e.code, Code::DeadlineExceeded, "{e}");
        assert!(e.message.contains("300 ms"), "{e}");

        lock.release();
        // The next write is committed after anything the writer still held, so if the
        // late write had been applied, it would show now; its id was never taken either.
        let next = issue(c.call(create("on time")).await);
        assert_eq!(next.id, "hl-1");
        let all = ids(c.call(Op::List(ListArgs::default())).await);
        assert_eq!(all, ["hl-1"]);

        let stats = d.stop().await;
        assert_eq!(stats.deadline_exceeded, 1, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_group_committed_with_distinct_ids() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let mut c = d.connect().await;
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    c.request(t * 1000 + i, None, create(&format!("t{t}-{i}")))
                        .await;
                }
                let mut ids = Vec::new();
                for _ in 0..50 {
                    ids.push(issue(c.recv().await.into_result()).id);
                }
                ids
            }));
        }
        let mut all = HashSet::new();
        for t in tasks {
            for id in t.await.unwrap() {
                assert!(all.insert(id.clone()), "{id} allocated twice");
            }
        }
        assert_eq!(all.len(), 400);
        let stats = d.stop().await;
        eprintln!("{stats:?}");
        assert_eq!(stats.grouped_writes, 400, "{stats:?}");
        assert!(stats.groups < 400, "writes were not grouped: {stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_writes_on_its_own_task_and_checkpoints_bound_the_log() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        // About seven WAL pages a create: well past several checkpoint thresholds.
        const N: u64 = 1_000;
        for i in 0..N {
            issue(c.call(create(&format!("lone {i}"))).await);
        }
        let wal = std::fs::metadata(format!("{}-wal", d.db)).unwrap().len();
        match c.call(Op::Stats {}).await.unwrap() {
            Reply::Stats { stats } => assert_eq!(stats.issues, N),
            other => panic!("{other:?}"),
        }
        let stats = d.stop().await;
        // A write finding the writer busy with a checkpoint goes through the queue: most,
        // not all, of a lone client's writes run on its own task.
        assert!(stats.inline_writes >= N / 2, "{stats:?}");
        assert_eq!(stats.grouped_writes, N, "{stats:?}");
        assert!(stats.checkpoints >= 1, "{stats:?}");
        // Without checkpoints the log would hold every page written (~7,000 pages).
        let bound = 3 * u64::from(CHECKPOINT_PAGES) * 4096;
        assert!(wal <= bound, "WAL of {wal} bytes, expected at most {bound}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_write_that_finds_sqlite_locked_waits_in_the_queue_and_commits_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start(config(dir.path())).await;
        let mut c = d.connect().await;
        let warm = 5;
        for i in 0..warm {
            issue(c.call(create(&format!("warm {i}"))).await);
        }
        let lock = WriteLock::take(&d.db);
        c.request(777, None, create("behind the lock")).await;
        // No answer while the lock is held: not `busy`, not an early ack.
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            read_frame(&mut c.stream, MAX_FRAME_BYTES),
        )
        .await;
        assert!(
            early.is_err(),
            "answered while SQLite was locked: {early:?}"
        );
        lock.release();
        let resp = c.recv().await;
        assert_eq!(resp.id, Some(777));
        let late = issue(resp.into_result());
        assert_eq!(late.id, format!("hl-{}", warm + 1));
        let all = ids(c.call(Op::List(ListArgs::default())).await);
        assert_eq!(all.len() as u64, warm + 1);
        let stats = d.stop().await;
        assert!(stats.inline_writes >= 1, "{stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_full_durability_every_write_goes_through_the_writer_thread() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.store.durability = Durability::Full;
        let d = Daemon::start(cfg).await;
        let mut c = d.connect().await;
        for i in 0..20 {
            issue(c.call(create(&format!("durable {i}"))).await);
        }
        let stats = d.stop().await;
        assert_eq!(stats.inline_writes, 0, "{stats:?}");
        assert_eq!(stats.grouped_writes, 20, "{stats:?}");
    })
    .await;
}
