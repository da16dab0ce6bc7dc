//! The nats-server harness and the tip broadcast against a real `nats-server -js` (Debian's
//! 2.9.10 in CI). Each test starts its own server in its own temp dir; every wait is bounded.
#![cfg(not(loom))]

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hub_leaf::nats::{connect, Nats, NatsError, NatsServer, LOG_FILE};
use hub_leaf::tip::{TipBroadcast, TipWatch};

mod common;
use common::{bounded, start, BOUND};

/// Is there a process (or an unreaped zombie) with this pid?
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits (bounded) until `pid` is gone.
fn gone_within(pid: u32, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

/// The process group of `pid`, from `/proc/<pid>/stat`.
fn pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[tokio::test]
async fn start_connect_publish_subscribe_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    assert!(
        server.url().starts_with("nats://127.0.0.1:"),
        "{}",
        server.url()
    );
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    let pid = server.pid();
    assert!(alive(pid));
    assert_eq!(
        pgrp(pid),
        Some(pid),
        "nats-server is in its own process group"
    );
    assert!(
        dir.path().join(LOG_FILE).exists(),
        "log file in the store dir"
    );

    let client = bounded("connect", connect(server.url())).await.unwrap();
    let mut sub = bounded("subscribe", client.subscribe("hub-leaf.test"))
        .await
        .unwrap();
    bounded("publish", client.publish("hub-leaf.test", "hello".into()))
        .await
        .unwrap();
    bounded("flush", client.flush()).await.unwrap();
    let msg = bounded("receive", sub.next()).await.expect("a message");
    assert_eq!(&msg.payload[..], b"hello");

    // Request-reply, the transport of push and pull.
    let mut service = bounded("subscribe", client.subscribe("hub-leaf.echo"))
        .await
        .unwrap();
    let responder = client.clone();
    let echo = tokio::spawn(async move {
        if let Some(req) = service.next().await {
            if let Some(reply) = req.reply {
                responder.publish(reply, req.payload).await.unwrap();
            }
        }
    });
    let answer = bounded("request", client.request("hub-leaf.echo", "ping".into()))
        .await
        .unwrap();
    assert_eq!(&answer.payload[..], b"ping");
    bounded("echo task", echo).await.unwrap();

    drop(client);
    assert!(server.stop(), "a graceful stop exits with status 0");
    assert!(gone_within(pid, Duration::from_secs(5)));
}

#[tokio::test]
async fn restart_keeps_jetstream_state_and_clients_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let url = server.url().to_string();
    let old_pid = server.pid();
    let client = bounded("connect", connect(&url)).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let kv = bounded(
        "create bucket",
        js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: "keep".into(),
            history: 1,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    bounded("put", kv.put("k", "survives".into()))
        .await
        .unwrap();

    bounded("restart", server.restart()).await.unwrap();
    assert_eq!(server.url(), url, "same port after restart");
    assert_ne!(server.pid(), old_pid);
    assert!(gone_within(old_pid, Duration::from_secs(5)));

    // A new client reads the value.
    let fresh = bounded("connect", connect(&url)).await.unwrap();
    let fresh_js = async_nats::jetstream::new(fresh);
    let fresh_kv = bounded("open bucket", fresh_js.get_key_value("keep"))
        .await
        .unwrap();
    let got = bounded("get", fresh_kv.get("k")).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"survives"[..]));

    // The old client reconnects by itself and reads it too (bounded retries).
    let until = Instant::now() + BOUND;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), kv.get("k")).await {
            Ok(Ok(v)) => {
                assert_eq!(v.as_deref(), Some(&b"survives"[..]));
                break;
            }
            _ if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("old client never read after restart: {other:?}"),
        }
    }
}

#[tokio::test]
async fn kill9_then_restart_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let client = bounded("connect", connect(server.url())).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = bounded(
        "create bucket",
        js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: "crash".into(),
            history: 1,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    bounded("put", kv.put("k", "acked".into())).await.unwrap();
    let pid = server.pid();
    server.kill9();
    assert!(gone_within(pid, Duration::from_secs(5)));
    assert_eq!(server.pid(), 0);
    bounded("restart", server.restart()).await.unwrap();
    let fresh = bounded("connect", connect(server.url())).await.unwrap();
    let fresh_kv = bounded(
        "open bucket",
        async_nats::jetstream::new(fresh).get_key_value("crash"),
    )
    .await
    .unwrap();
    let got = bounded("get", fresh_kv.get("k")).await.unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&b"acked"[..]),
        "an acked put survives SIGKILL"
    );
}

#[tokio::test]
async fn drop_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let pid = server.pid();
    assert!(alive(pid));
    drop(server);
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "pid {pid} still alive after drop"
    );
}

#[tokio::test]
async fn panic_while_owning_the_server_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let pid = server.pid();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let owned = server;
        assert!(owned.pid() > 0);
        panic!("the owner panics while holding nats-server");
    }));
    assert!(result.is_err());
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "pid {pid} survived the panic"
    );
}

#[test]
fn panic_in_the_owning_thread_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_path_buf();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(start(&store));
        pid_tx.send(server.pid()).unwrap();
        panic!("the owning thread panics");
    });
    let pid = pid_rx
        .recv_timeout(BOUND)
        .expect("the owning thread started a server");
    assert!(owner.join().is_err(), "the thread panicked");
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "pid {pid} survived its owner thread"
    );
}

/// Set for the helper process of [`owner_process_killed_outright_takes_the_server_with_it`].
const HOLD_DIR_ENV: &str = "HUB_LEAF_TEST_HOLD_DIR";

/// Not a test by itself: the owner process of
/// `owner_process_killed_outright_takes_the_server_with_it`, which runs this test binary
/// with `--ignored --exact` on it. Starts a server, prints its pid, holds it (60 s at most).
#[test]
#[ignore = "helper process of owner_process_killed_outright_takes_the_server_with_it"]
fn helper_hold_a_server_until_killed() {
    let Some(dir) = std::env::var_os(HOLD_DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(start(Path::new(&dir)));
    println!("nats-server-pid={}", server.pid());
    std::thread::sleep(Duration::from_secs(60));
}

/// Kills its child process (and reaps it) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn owner_process_killed_outright_takes_the_server_with_it() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "helper_hold_a_server_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut owner = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest prints "test <name> ... " before the test's own output.
            if let Some((_, pid)) = line.split_once("nats-server-pid=") {
                let _ = tx.send(pid.trim().parse::<u32>().ok());
                return;
            }
        }
    });
    let pid = rx
        .recv_timeout(BOUND)
        .expect("the owner process printed the server's pid")
        .expect("a numeric pid");
    assert!(alive(pid));
    // SIGKILL the owner: no destructor runs there; only PR_SET_PDEATHSIG can act.
    owner.0.kill().unwrap();
    owner.0.wait().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "nats-server {pid} survived the SIGKILL of its owner process"
    );
}

#[tokio::test]
async fn server_survives_the_end_of_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* ends; the harness forks from a
    // keeper thread, so a server started on a short-lived thread lives on.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_path_buf();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(start(&store))
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        alive(server.pid()),
        "the server died with the thread that started it"
    );
    let client = bounded("connect", connect(server.url())).await.unwrap();
    bounded("flush", client.flush()).await.unwrap();
}

#[tokio::test]
async fn missing_binary_says_how_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("nats-server");
    let err = NatsServer::start_with_binary(&missing, dir.path())
        .await
        .expect_err("a missing binary must fail");
    assert!(matches!(err, NatsError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("nats-server not found at "), "{msg}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(
        msg.contains("install it with `apt-get install nats-server` (Debian, 2.9.10) or set NATS_URL to an existing server"),
        "{msg}"
    );
    let on_path = NatsError::NotFound {
        where_: "on PATH".into(),
    };
    assert_eq!(
        on_path.to_string(),
        "nats-server not found on PATH: install it with `apt-get install nats-server` \
         (Debian, 2.9.10) or set NATS_URL to an existing server"
    );
}

#[tokio::test]
async fn connect_to_nothing_is_a_named_error() {
    // A port nobody listens on: bind, read, drop.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = bounded("connect", connect(&url))
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn tip_watch_sees_the_last_of_many_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let hub = bounded("connect", connect(server.url())).await.unwrap();
    let leaf = bounded("connect", connect(server.url())).await.unwrap();
    let hub_js = async_nats::jetstream::new(hub);
    let leaf_js = async_nats::jetstream::new(leaf);
    let broadcast = bounded("open", TipBroadcast::open(&hub_js, "tip"))
        .await
        .unwrap();
    let mut watch = bounded("watch", TipWatch::open(&leaf_js, "tip"))
        .await
        .unwrap();
    const N: u64 = 200;
    let mut last_rev = 0;
    for seq in 1..=N {
        let rev = bounded("publish", broadcast.publish(seq, &format!("{seq:064x}")))
            .await
            .unwrap();
        assert!(rev > last_rev, "revisions grow");
        last_rev = rev;
    }
    // The watcher sees tips in increasing order and, in the end, the last one. (It may
    // or may not see every intermediate one: only the last is guaranteed.)
    let mut seen = Vec::new();
    loop {
        let tip = bounded("next tip", watch.next())
            .await
            .expect("the watch goes on")
            .unwrap();
        seen.push(tip.tip.seq);
        if tip.tip.seq == N {
            assert_eq!(tip.tip.hash, format!("{N:064x}"));
            assert_eq!(tip.revision, last_rev);
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    let current = bounded("current", broadcast.current()).await.unwrap();
    assert_eq!(current.map(|t| t.seq), Some(N));

    // A watcher that starts late sees only the latest tip first.
    let mut late = bounded("watch", TipWatch::open(&leaf_js, "tip"))
        .await
        .unwrap();
    let first = bounded("next tip", late.next()).await.unwrap().unwrap();
    assert_eq!(first.tip.seq, N);
    assert_eq!(first.delta, 0);
}

#[tokio::test]
async fn tip_watch_goes_on_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let hub = bounded("connect", connect(server.url())).await.unwrap();
    let leaf = bounded("connect", connect(server.url())).await.unwrap();
    let broadcast = bounded(
        "open",
        TipBroadcast::open(&async_nats::jetstream::new(hub), "tip"),
    )
    .await
    .unwrap();
    let mut watch = bounded(
        "watch",
        TipWatch::open(&async_nats::jetstream::new(leaf), "tip"),
    )
    .await
    .unwrap();
    bounded("publish", broadcast.publish(1, "a")).await.unwrap();
    let tip = bounded("next", watch.next()).await.unwrap().unwrap();
    assert_eq!(tip.tip.seq, 1);

    bounded("restart", server.restart()).await.unwrap();

    // The hub's client reconnects; publish until the put is acknowledged.
    let until = Instant::now() + BOUND;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), broadcast.publish(2, "b")).await {
            Ok(Ok(_)) => break,
            _ if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("publish after restart never acknowledged: {other:?}"),
        }
    }
    // The watch resumes by itself; errors (a missed heartbeat) may come first.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.next()).await {
            Ok(Some(Ok(t))) if t.tip.seq == 2 => break,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("the watch did not see tip 2 within 30 s of the restart"),
        }
    }
}

#[tokio::test]
async fn a_given_url_is_used_and_nothing_is_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut owned = bounded("start", Nats::from_url_or_start(None, dir.path()))
        .await
        .unwrap();
    assert!(matches!(owned, Nats::Owned(_)));
    assert!(owned.server_mut().is_some());
    let url = owned.url().to_string();
    let other = tempfile::tempdir().unwrap();
    let mut external = bounded(
        "external",
        Nats::from_url_or_start(Some(&format!("  {url} ")), other.path()),
    )
    .await
    .unwrap();
    assert!(matches!(&external, Nats::External(u) if *u == url));
    assert!(external.server_mut().is_none());
    assert!(
        !other.path().join(LOG_FILE).exists(),
        "no server started for an external URL"
    );
    let client = bounded("connect", connect(external.url())).await.unwrap();
    bounded("flush", client.flush()).await.unwrap();
    // A blank URL means "start one".
    let blank = tempfile::tempdir().unwrap();
    let started = bounded("blank", Nats::from_url_or_start(Some("  "), blank.path()))
        .await
        .unwrap();
    assert!(matches!(started, Nats::Owned(_)));
}
