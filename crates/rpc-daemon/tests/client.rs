//! The client library: direct mode does every operation; Auto falls back to direct mode only
//! when no daemon listens; a daemon that refuses the hello, answers nothing or breaks the
//! protocol gives the matching error, never a fallback. The fake daemons here are written
//! inline on a `tokio::net::UnixListener`; every test is bounded by `tokio::time::timeout`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_daemon::client::{
    Client, ClientConfig, ClientError, Mode, DEFAULT_BUSY_POLL, MAX_BUSY_POLL,
};
use rpc_daemon::error::{ApiError, Code};
use rpc_daemon::model::{CreateArgs, Dep, DepKind, ListArgs, Op, Reply, Status, UpdateArgs};
use rpc_daemon::proto::{
    read_frame, write_json, HelloFrame, Request, Response, Welcome, WelcomeFrame, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use rpc_daemon::server::{Server, ServerConfig, ServerError, ServerStats, ShutdownHandle};
use tokio::net::{UnixListener, UnixStream};

/// Bound on every test body.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn cfg(dir: &Path, mode: Mode) -> ClientConfig {
    let mut c = ClientConfig::new(dir.join("issues.db"));
    c.mode = mode;
    c.timeout = Duration::from_secs(10);
    c
}

fn create(title: &str) -> CreateArgs {
    CreateArgs {
        title: title.into(),
        ..CreateArgs::default()
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its bound")
}

#[tokio::test]
async fn direct_mode_does_every_operation() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Client::connect(cfg(dir.path(), Mode::Direct))
            .await
            .unwrap();
        assert!(c.is_direct());
        assert_eq!(c.fallback_reason(), None);
        assert_eq!(c.socket(), None);
        c.ping().await.unwrap();

        let a = c
            .create(CreateArgs {
                title: "a".into(),
                description: "first".into(),
                priority: Some(1),
                assignee: Some("agent-1".into()),
                labels: vec!["x".into(), "b".into()],
            })
            .await
            .unwrap();
        assert_eq!(a.id, "hl-1");
        assert_eq!(
            (a.priority, a.labels.clone()),
            (1, vec!["b".into(), "x".into()])
        );
        let b = c.create(create("b")).await.unwrap();
        assert_eq!((b.id.as_str(), b.priority), ("hl-2", 2));

        // An update that does not name the assignee keeps it; `Some(None)` clears it.
        let a2 = c
            .update(UpdateArgs {
                id: a.id.clone(),
                title: Some("a renamed".into()),
                status: Some(Status::InProgress),
                ..UpdateArgs::default()
            })
            .await
            .unwrap();
        assert_eq!(a2.title, "a renamed");
        assert_eq!(a2.assignee.as_deref(), Some("agent-1"));
        let a3 = c
            .update(UpdateArgs {
                id: a.id.clone(),
                assignee: Some(None),
                ..UpdateArgs::default()
            })
            .await
            .unwrap();
        assert_eq!(a3.assignee, None);

        let edge = Dep {
            issue: b.id.clone(),
            depends_on: a.id.clone(),
            kind: DepKind::Blocks,
        };
        assert_eq!(c.dep_add(edge.clone()).await.unwrap(), edge);
        let (shown, deps) = c.show(b.id.clone()).await.unwrap();
        assert_eq!((shown.id, deps), (b.id.clone(), vec![edge.clone()]));
        let ready = c.ready(None).await.unwrap();
        assert!(
            ready.is_empty(),
            "a is in progress, b is blocked: {ready:?}"
        );

        let closed = c.close(a.id.clone(), Some("done".into())).await.unwrap();
        assert_eq!(closed.status, Status::Closed);
        assert_eq!(closed.close_reason.as_deref(), Some("done"));
        let ready = c.ready(Some(10)).await.unwrap();
        assert_eq!(
            ready.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["hl-2"]
        );
        assert_eq!(c.dep_remove(edge.clone()).await.unwrap(), edge);
        let e = c.dep_remove(edge).await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::NotFound), "{e}");

        let open = c
            .list(ListArgs {
                status: Some(Status::Open),
                ..ListArgs::default()
            })
            .await
            .unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(c.list(ListArgs::default()).await.unwrap().len(), 2);

        let results = c
            .batch(vec![
                Op::Create(create("c")),
                Op::Show { id: "hl-3".into() },
            ])
            .await
            .unwrap();
        assert!(matches!(
            results[..],
            [Reply::Issue { .. }, Reply::Detail { .. }]
        ));
        let e = c
            .batch(vec![
                Op::Create(create("d")),
                Op::Close {
                    id: "hl-99".into(),
                    reason: None,
                },
            ])
            .await
            .unwrap_err();
        match &e {
            ClientError::Api(ApiError {
                code: Code::BatchFailed,
                index: Some(1),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), "batch_failed");

        let stats = c.stats().await.unwrap();
        assert_eq!((stats.issues, stats.closed, stats.open), (3, 1, 2));
        let e = c.show("hl-99").await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::NotFound));
        let e = c.create(create("")).await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::InvalidField));
    })
    .await
}

/// Captures what the `tracing` macros write, for the duration of a test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn auto_without_a_daemon_falls_back_to_direct_and_says_so_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runs on a current-thread runtime: the default subscriber covers it.
    let _guard = tracing::subscriber::set_default(subscriber);
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("issues.db.sock");
        let mut c = Client::connect(cfg(dir.path(), Mode::Auto)).await.unwrap();
        assert!(c.is_direct());
        let reason = c.fallback_reason().expect("a fallback reason").to_string();
        assert!(reason.contains(&socket.display().to_string()), "{reason}");
        for i in 0..5 {
            c.create(create(&format!("t{i}"))).await.unwrap();
        }
        assert_eq!(c.stats().await.unwrap().issues, 5);
        let text = logs.text();
        assert_eq!(text.matches("no daemon listens").count(), 1, "{text}");
        assert!(text.contains("INFO"), "{text}");

        // A socket file nobody accepts on (a daemon that died) is "no daemon" too.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        let c = Client::connect(cfg(dir.path(), Mode::Auto)).await.unwrap();
        assert!(c.is_direct());
        assert!(c.fallback_reason().is_some());
        assert_eq!(logs.text().matches("no daemon listens").count(), 2);

        // An explicit direct mode is no fallback and logs nothing.
        let c = Client::connect(cfg(dir.path(), Mode::Direct))
            .await
            .unwrap();
        assert_eq!(c.fallback_reason(), None);
        assert_eq!(logs.text().matches("no daemon listens").count(), 2);
    })
    .await
}

#[tokio::test]
async fn daemon_only_without_a_daemon_is_a_connect_error_naming_the_socket() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let want = dir.path().join("issues.db.sock");
        let e = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap_err();
        match &e {
            ClientError::Connect { socket, source } => {
                assert_eq!(socket, &want);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains(&want.display().to_string()), "{e}");
        assert_eq!(e.code(), "connect");
        assert!(
            !dir.path().join("issues.db").exists(),
            "never opened the file"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Fake daemons

/// What a fake daemon does on one connection, after reading the hello.
#[derive(Clone)]
enum Fake {
    /// Answers the hello with this error and closes.
    Refuse(ApiError),
    /// Welcomes with this `db` (None: echo the client's) and this protocol.
    WelcomeAs(Option<String>, u32),
    /// Reads the hello and never answers.
    Silent,
    /// Welcomes, then reads requests and never answers them.
    Deaf,
    /// Welcomes, then closes the connection at once.
    WelcomeAndClose,
    /// Welcomes, then answers every request with `pong` under the id plus this offset.
    Pong(u64),
}

/// Serves `plan[i]` on the i-th connection (the last entry repeats); returns how many
/// connections were accepted so far.
fn spawn_fake(socket: &Path, plan: Vec<Fake>) -> Arc<Mutex<usize>> {
    let listener = UnixListener::bind(socket).unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        for i in 0..64 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            *count.lock().unwrap() += 1;
            let fake = plan[i.min(plan.len() - 1)].clone();
            tokio::spawn(serve_fake(stream, fake));
        }
    });
    accepted
}

async fn serve_fake(mut s: UnixStream, fake: Fake) {
    let Ok(Some(frame)) = read_frame(&mut s, MAX_FRAME_BYTES).await else {
        return;
    };
    let hello: HelloFrame = serde_json::from_slice(&frame).unwrap();
    assert_eq!(hello.hello.protocol, PROTOCOL_VERSION);
    assert!(
        Path::new(&hello.hello.db).is_absolute(),
        "{}",
        hello.hello.db
    );
    let welcome = |db: Option<String>, protocol| WelcomeFrame {
        hello: Some(Welcome {
            protocol,
            db: db.unwrap_or_else(|| hello.hello.db.clone()),
            server: "fake".into(),
        }),
        error: None,
    };
    match fake {
        Fake::Refuse(e) => {
            let _ = write_json(
                &mut s,
                &WelcomeFrame {
                    hello: None,
                    error: Some(e),
                },
            )
            .await;
        }
        Fake::WelcomeAs(db, protocol) => {
            let _ = write_json(&mut s, &welcome(db, protocol)).await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        Fake::Silent => tokio::time::sleep(Duration::from_secs(20)).await,
        Fake::Deaf => {
            let _ = write_json(&mut s, &welcome(None, PROTOCOL_VERSION)).await;
            while let Ok(Some(_)) = read_frame(&mut s, MAX_FRAME_BYTES).await {}
        }
        Fake::WelcomeAndClose => {
            let _ = write_json(&mut s, &welcome(None, PROTOCOL_VERSION)).await;
        }
        Fake::Pong(offset) => {
            let _ = write_json(&mut s, &welcome(None, PROTOCOL_VERSION)).await;
            while let Ok(Some(frame)) = read_frame(&mut s, MAX_FRAME_BYTES).await {
                let req: Request = serde_json::from_slice(&frame).unwrap();
                let resp = Response::of(Some(req.id + offset), Ok(Reply::Pong { pong: true }));
                if write_json(&mut s, &resp).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn socket_of(dir: &Path) -> PathBuf {
    dir.join("issues.db.sock")
}

#[tokio::test]
async fn a_refused_hello_is_a_handshake_error_never_a_fallback() {
    bounded(async {
        for code in [Code::WrongDatabase, Code::VersionMismatch, Code::Overloaded] {
            let dir = tempfile::tempdir().unwrap();
            spawn_fake(
                &socket_of(dir.path()),
                vec![Fake::Refuse(ApiError::new(code, "not this one"))],
            );
            let e = Client::connect(cfg(dir.path(), Mode::Auto))
                .await
                .unwrap_err();
            match &e {
                ClientError::Handshake(ApiError {
                    code: c, message, ..
                }) => {
                    assert_eq!((*c, message.as_str()), (code, "not this one"))
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(e.code(), code.as_str());
            assert!(
                !dir.path().join("issues.db").exists(),
                "no fallback to the file"
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_welcome_for_another_database_or_protocol_is_refused_by_the_client() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        spawn_fake(
            &socket_of(dir.path()),
            vec![Fake::WelcomeAs(
                Some("/elsewhere/other.db".into()),
                PROTOCOL_VERSION,
            )],
        );
        let e = Client::connect(cfg(dir.path(), Mode::Auto))
            .await
            .unwrap_err();
        assert_eq!(e.api_code(), Some(Code::WrongDatabase), "{e}");
        assert!(matches!(e, ClientError::Handshake(_)));

        let dir = tempfile::tempdir().unwrap();
        spawn_fake(
            &socket_of(dir.path()),
            vec![Fake::WelcomeAs(None, PROTOCOL_VERSION + 1)],
        );
        let e = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap_err();
        assert_eq!(e.api_code(), Some(Code::VersionMismatch), "{e}");
    })
    .await
}

#[tokio::test]
async fn a_daemon_that_never_answers_times_out_within_the_client_timeout() {
    bounded(async {
        let timeout = Duration::from_millis(300);
        // Silent during the hello.
        let dir = tempfile::tempdir().unwrap();
        spawn_fake(&socket_of(dir.path()), vec![Fake::Silent]);
        let mut c = cfg(dir.path(), Mode::Auto);
        c.timeout = timeout;
        let started = std::time::Instant::now();
        let e = Client::connect(c).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { after } if after == timeout),
            "{e:?}"
        );
        assert!(started.elapsed() >= timeout);

        // Welcomes, then never answers a request; the next call reconnects and works.
        let dir = tempfile::tempdir().unwrap();
        let accepted = spawn_fake(&socket_of(dir.path()), vec![Fake::Deaf, Fake::Pong(0)]);
        let mut c = cfg(dir.path(), Mode::DaemonOnly);
        c.timeout = timeout;
        c.deadline = Some(Duration::from_millis(100));
        let mut client = Client::connect(c).await.unwrap();
        assert!(!client.is_direct());
        assert_eq!(client.welcome().map(|w| w.server.as_str()), Some("fake"));
        let e = client.ping().await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert_eq!(e.code(), "timeout");
        client.ping().await.unwrap();
        client.ping().await.unwrap();
        assert_eq!(*accepted.lock().unwrap(), 2, "one reconnect, then kept");
    })
    .await
}

#[tokio::test]
async fn a_response_for_another_request_is_a_protocol_error() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        spawn_fake(&socket_of(dir.path()), vec![Fake::Pong(1), Fake::Pong(0)]);
        let mut client = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap();
        let e = client.ping().await.unwrap_err();
        match &e {
            ClientError::Protocol(m) => assert!(m.contains("waiting for request"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The untrusted connection was dropped; the next call uses a fresh one.
        client.ping().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_connection_the_daemon_closed_is_replaced_before_the_next_call() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let accepted = spawn_fake(
            &socket_of(dir.path()),
            vec![Fake::WelcomeAndClose, Fake::Pong(0)],
        );
        let mut client = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap();
        // Give the close time to arrive, as an idle timeout would.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.ping().await.unwrap();
        assert_eq!(*accepted.lock().unwrap(), 2);
    })
    .await
}

#[tokio::test]
async fn a_request_over_the_frame_cap_is_refused_before_sending() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let accepted = spawn_fake(&socket_of(dir.path()), vec![Fake::Pong(0)]);
        let mut client = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap();
        let big = CreateArgs {
            title: "t".into(),
            description: "x".repeat(60 * 1024),
            ..CreateArgs::default()
        };
        let e = client.batch(vec![Op::Create(big); 20]).await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::TooLarge), "{e}");
        client.ping().await.unwrap();
        assert_eq!(*accepted.lock().unwrap(), 1, "the connection stayed usable");
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Against the real daemon

/// A daemon running in this process; shut down when dropped.
struct RealDaemon {
    handle: ShutdownHandle,
    task: Option<tokio::task::JoinHandle<Result<ServerStats, ServerError>>>,
    db: PathBuf,
}

impl RealDaemon {
    async fn start(dir: &Path) -> RealDaemon {
        let server = Server::bind(ServerConfig::new(dir.join("issues.db")))
            .await
            .expect("bind the daemon");
        let db = server.db_path().to_path_buf();
        let handle = server.shutdown_handle();
        let task = Some(tokio::spawn(server.run()));
        RealDaemon { handle, task, db }
    }

    async fn stop(mut self) -> ServerStats {
        self.handle.shutdown();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the daemon stops within its bound")
            .expect("run task")
            .expect("run")
    }
}

impl Drop for RealDaemon {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A script touching every operation, errors included.
fn script() -> Vec<Op> {
    let dep = |i: &str, on: &str, kind| Dep {
        issue: i.into(),
        depends_on: on.into(),
        kind,
    };
    vec![
        Op::Ping {},
        Op::Create(CreateArgs {
            title: "a".into(),
            description: "first".into(),
            priority: Some(1),
            assignee: Some("agent-1".into()),
            labels: vec!["x".into(), "b".into(), "x".into()],
        }),
        Op::Create(create("b")),
        Op::Create(create("")),
        Op::Update(UpdateArgs {
            id: "hl-1".into(),
            title: Some("a renamed".into()),
            status: Some(Status::InProgress),
            ..UpdateArgs::default()
        }),
        Op::Update(UpdateArgs {
            id: "hl-2".into(),
            assignee: Some(Some("agent-2".into())),
            labels: Some(vec!["y".into()]),
            ..UpdateArgs::default()
        }),
        Op::Update(UpdateArgs {
            id: "hl-2".into(),
            assignee: Some(None),
            ..UpdateArgs::default()
        }),
        Op::Update(UpdateArgs {
            id: "hl-9".into(),
            ..UpdateArgs::default()
        }),
        Op::DepAdd(dep("hl-2", "hl-1", DepKind::Blocks)),
        Op::DepAdd(dep("hl-1", "hl-2", DepKind::Blocks)),
        Op::DepAdd(dep("hl-1", "hl-1", DepKind::Related)),
        Op::Show { id: "hl-2".into() },
        Op::Ready { limit: None },
        Op::Close {
            id: "hl-1".into(),
            reason: Some("done".into()),
        },
        Op::Close {
            id: "hl-1".into(),
            reason: None,
        },
        Op::Ready { limit: Some(1) },
        Op::DepRemove(dep("hl-2", "hl-1", DepKind::Blocks)),
        Op::DepRemove(dep("hl-2", "hl-1", DepKind::Blocks)),
        Op::Batch {
            ops: vec![
                Op::Create(create("c")),
                Op::Update(UpdateArgs {
                    id: "hl-1".into(),
                    priority: Some(0),
                    ..UpdateArgs::default()
                }),
                Op::Show { id: "hl-3".into() },
            ],
        },
        Op::Batch {
            ops: vec![
                Op::Create(create("d")),
                Op::Close {
                    id: "hl-77".into(),
                    reason: None,
                },
            ],
        },
        Op::Batch {
            ops: vec![Op::Batch { ops: vec![] }],
        },
        Op::List(ListArgs::default()),
        Op::List(ListArgs {
            status: Some(Status::Open),
            label: Some("y".into()),
            ..ListArgs::default()
        }),
        Op::List(ListArgs {
            limit: Some(0),
            ..ListArgs::default()
        }),
        Op::Stats {},
    ]
}

/// A reply or an error as JSON, with the clock readings zeroed.
fn outcome(r: Result<Reply, ClientError>) -> serde_json::Value {
    fn zero(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if matches!(k.as_str(), "created_at" | "updated_at" | "closed_at")
                        && x.is_number()
                    {
                        *x = 0.into();
                    } else {
                        zero(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(zero),
            _ => {}
        }
    }
    let mut v = match r {
        Ok(reply) => serde_json::json!({ "ok": reply }),
        Err(ClientError::Api(e)) => serde_json::json!({ "error": e }),
        Err(other) => panic!("not an answer: {other:?}"),
    };
    zero(&mut v);
    v
}

async fn run_script(c: &mut Client) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for op in script() {
        out.push(outcome(c.call(op).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_a_running_daemon_and_gives_the_same_replies_as_direct_mode() {
    bounded(async {
        let daemon_dir = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(daemon_dir.path()).await;
        let mut via_daemon = Client::connect(cfg(daemon_dir.path(), Mode::Auto))
            .await
            .unwrap();
        assert!(!via_daemon.is_direct());
        assert_eq!(via_daemon.fallback_reason(), None);
        assert_eq!(
            via_daemon.welcome().map(|w| PathBuf::from(&w.db)),
            Some(daemon.db.clone())
        );
        assert_eq!(via_daemon.db(), daemon.db.as_path());

        let direct_dir = tempfile::tempdir().unwrap();
        let mut direct = Client::connect(cfg(direct_dir.path(), Mode::Direct))
            .await
            .unwrap();

        let a = run_script(&mut via_daemon).await;
        let b = run_script(&mut direct).await;
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "operation {i} of the script: {:?}", script()[i]);
        }
        // The script's update of hl-1 that did not name the assignee kept it.
        assert_eq!(a[4]["ok"]["issue"]["assignee"], "agent-1", "{}", a[4]);
        let stats = daemon.stop().await;
        assert!(stats.requests >= script().len() as u64, "{stats:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_direct_mode_share_one_database_safely() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(dir.path()).await;
        let mut via_daemon = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap();
        let mut direct = Client::connect(cfg(dir.path(), Mode::Direct))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(
                via_daemon
                    .create(create(&format!("d{i}")))
                    .await
                    .unwrap()
                    .id,
            );
            ids.push(direct.create(create(&format!("f{i}"))).await.unwrap().id);
        }
        let want: Vec<String> = (1..=20).map(|n| format!("hl-{n}")).collect();
        assert_eq!(ids, want);
        assert_eq!(via_daemon.stats().await.unwrap().issues, 20);
        daemon.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_sent_and_an_expired_write_is_not_applied() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(dir.path()).await;
        let mut c = cfg(dir.path(), Mode::DaemonOnly);
        c.deadline = Some(Duration::ZERO);
        let mut hasty = Client::connect(c).await.unwrap();
        let e = hasty.create(create("never")).await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::DeadlineExceeded), "{e}");
        let mut patient = Client::connect(cfg(dir.path(), Mode::DaemonOnly))
            .await
            .unwrap();
        assert_eq!(patient.stats().await.unwrap().issues, 0);
        daemon.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_of_another_database_is_refused_never_used() {
    bounded(async {
        let served = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(served.path()).await;
        let other = tempfile::tempdir().unwrap();
        let mut c = cfg(other.path(), Mode::Auto);
        c.socket = Some(socket_of(served.path()));
        let e = Client::connect(c).await.unwrap_err();
        assert!(
            matches!(
                &e,
                ClientError::Handshake(ApiError {
                    code: Code::WrongDatabase,
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(!other.path().join("issues.db").exists(), "no fallback");
        daemon.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_daemon_stops_a_call_fails_instead_of_switching_mode() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(dir.path()).await;
        let mut c = Client::connect(cfg(dir.path(), Mode::Auto)).await.unwrap();
        c.ping().await.unwrap();
        daemon.stop().await;
        let e = c.ping().await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Connect { .. }
                    | ClientError::Api(ApiError {
                        code: Code::ShuttingDown,
                        ..
                    })
            ),
            "{e:?}"
        );
        assert!(!c.is_direct());
        // A new client falls back now that no daemon runs.
        let c = Client::connect(cfg(dir.path(), Mode::Auto)).await.unwrap();
        assert!(c.is_direct());
    })
    .await
}

// A current-thread runtime: the only kind where a client polls. The daemon shares the
// thread, so each poll runs out its bound before the reply can come: the slow path, too.
#[tokio::test]
async fn a_busy_polling_client_gets_the_same_replies_and_its_poll_is_bounded() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let daemon = RealDaemon::start(dir.path()).await;

        let mut too_long = cfg(dir.path(), Mode::DaemonOnly);
        too_long.busy_poll = MAX_BUSY_POLL + Duration::from_micros(1);
        let e = Client::connect(too_long).await.unwrap_err();
        assert_eq!(e.api_code(), Some(Code::InvalidField), "{e}");
        assert!(e.to_string().contains("busy_poll of 1.001ms"), "{e}");

        // The default polls; the same script with polling off, against a daemon of its own,
        // and directly on a file must give the same replies.
        let polling = cfg(dir.path(), Mode::DaemonOnly);
        assert_eq!(polling.busy_poll, DEFAULT_BUSY_POLL);
        let mut polling = Client::connect(polling).await.unwrap();
        let a = run_script(&mut polling).await;
        let quiet_dir = tempfile::tempdir().unwrap();
        let quiet_daemon = RealDaemon::start(quiet_dir.path()).await;
        let mut quiet = cfg(quiet_dir.path(), Mode::DaemonOnly);
        quiet.busy_poll = Duration::ZERO;
        let mut quiet = Client::connect(quiet).await.unwrap();
        let b = run_script(&mut quiet).await;
        let direct_dir = tempfile::tempdir().unwrap();
        let mut direct = Client::connect(cfg(direct_dir.path(), Mode::Direct))
            .await
            .unwrap();
        let c = run_script(&mut direct).await;
        assert_eq!(a, c);
        assert_eq!(b, c);
        quiet_daemon.stop().await;
        daemon.stop().await;
    })
    .await
}
