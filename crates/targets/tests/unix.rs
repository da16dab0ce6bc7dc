//! The `unix:` target end to end: both framings against an echo server in the test, the
//! preamble accepted and refused, cancel-safety, and the real rpc-daemon driven without its
//! client library.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collector::target::Target;
use targets::unix::{decode, encode, UnixTarget};
use targets::{Framing, TargetError, TargetOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Reads frames and answers each with `reply(frame)`, after `delay(frame)`; one task per
/// connection. Every reply to a hello frame (one starting with `hello`) is `welcome`.
/// Returns the count of connections accepted so far.
fn serve(
    path: &Path,
    framing: Framing,
    delay: fn(&[u8]) -> Duration,
    hello_ok: bool,
) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(stream, framing, delay, hello_ok));
        }
    });
    accepted
}

async fn connection(
    mut s: UnixStream,
    framing: Framing,
    delay: fn(&[u8]) -> Duration,
    hello_ok: bool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some((frame, used))) = decode(framing, &buf) {
            buf.drain(..used);
            let reply = if frame.starts_with(b"hello") {
                if hello_ok {
                    b"welcome".to_vec()
                } else {
                    b"go away".to_vec()
                }
            } else {
                tokio::time::sleep(delay(&frame)).await;
                [b"re:".as_slice(), &frame].concat()
            };
            if s.write_all(&encode(framing, &reply).unwrap())
                .await
                .is_err()
            {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn no_delay(_: &[u8]) -> Duration {
    Duration::ZERO
}

fn opts(framing: Framing, body: &str) -> TargetOptions {
    TargetOptions {
        framing: Some(framing),
        body: Some(body.into()),
        conns: 2,
        ..TargetOptions::default()
    }
}

fn sock(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("s.sock")
}

#[tokio::test]
async fn both_framings_carry_requests_and_replies() {
    for framing in [Framing::U32Be, Framing::Line] {
        let dir = tempfile::tempdir().unwrap();
        serve(&sock(&dir), framing, no_delay, true);
        let spec = format!("unix:{}", sock(&dir).display());
        let t = UnixTarget::open(&spec, &opts(framing, "{\"id\": {seq}}"))
            .await
            .unwrap();
        for seq in 0..20 {
            t.call(0, seq).await.unwrap();
        }
        assert_eq!(t.actions(), ["request"]);
    }
}

#[tokio::test]
async fn the_preamble_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    serve(&sock(&dir), Framing::U32Be, no_delay, true);
    let spec = format!("unix:{}", sock(&dir).display());
    let mut o = opts(Framing::U32Be, "x{seq}");
    o.hello = Some("hello {seq}".into());
    o.hello_reply = Some("welcome".into());
    let t = UnixTarget::open(&spec, &o).await.unwrap();
    t.call(0, 1).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    serve(&sock(&dir), Framing::U32Be, no_delay, false);
    let spec = format!("unix:{}", sock(&dir).display());
    let e = match UnixTarget::open(&spec, &o).await {
        Ok(_) => panic!("a refused hello was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("welcome") && e.contains("go away"), "{e}");
}

#[tokio::test]
async fn bad_specs_and_missing_sockets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Framing::U32Be, "x");
    let missing = format!("unix:{}", dir.path().join("none.sock").display());
    match UnixTarget::open(&missing, &o).await {
        Err(TargetError::Setup { spec, message }) => {
            assert_eq!(spec, missing);
            assert!(message.contains("none.sock"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let e = UnixTarget::open(&format!("unix:{}", file.display()), &o)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a socket"), "{e}");
    let e = UnixTarget::open("unix:", &o)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("\"unix:\""), "{e}");
    let no_body = TargetOptions::default();
    let e = UnixTarget::open(&missing, &no_body)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("request template"), "{e}");
}

/// Replies to `slow0` after 10 s, to everything else at once.
fn slow_first(frame: &[u8]) -> Duration {
    if frame == b"slow0" {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    }
}

#[tokio::test]
async fn a_cancelled_operation_never_hands_its_reply_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = serve(&sock(&dir), Framing::Line, slow_first, true);
    let spec = format!("unix:{}", sock(&dir).display());
    // One connection: were the cancelled operation's connection kept, the next operation
    // would send on it and could read the late reply meant for operation 0.
    let mut o = opts(Framing::Line, "slow{seq}");
    o.conns = 1;
    // A preamble, so that every connection is seen by the server before it is used.
    o.hello = Some("hello".into());
    let t = UnixTarget::open(&spec, &o).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "open connects once");
    let cancelled = tokio::time::timeout(Duration::from_millis(100), t.call(0, 0)).await;
    assert!(cancelled.is_err(), "the slow reply cannot have come yet");
    // The next operation on the same slot gets its own answer on a fresh connection.
    t.call(0, 1).await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the cancelled connection was dropped"
    );
    t.call(0, 2).await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a healthy connection is kept"
    );
}

#[tokio::test]
async fn drives_the_rpc_daemon_without_its_client() {
    use rpc_daemon::server::{Server, ServerConfig};
    let dir = tempfile::tempdir().unwrap();
    let db = std::fs::canonicalize(dir.path()).unwrap().join("issues.db");
    let server = Server::bind(ServerConfig::new(db.clone())).await.unwrap();
    let socket = server.socket_path().to_path_buf();
    let handle = server.shutdown_handle();
    let task = tokio::spawn(server.run());

    let o = TargetOptions {
        framing: Some(Framing::U32Be),
        hello: Some(format!(
            "{{\"hello\": {{\"protocol\": 1, \"db\": \"{}\", \"client\": \"targets-test\"}}}}",
            db.display()
        )),
        hello_reply: Some("\"server\"".into()),
        body: Some(
            "{\"id\": {seq}, \"body\": {\"op\": \"create\", \"title\": \"issue {seq}\"}}".into(),
        ),
        conns: 4,
        ..TargetOptions::default()
    };
    let t = UnixTarget::open(&format!("unix:{}", socket.display()), &o)
        .await
        .unwrap();
    for seq in 1..=25 {
        t.call(0, seq).await.unwrap();
    }
    // The hello names a database the daemon does not serve: refused, and said so.
    let mut wrong = o.clone();
    wrong.hello = Some("{\"hello\": {\"protocol\": 1, \"db\": \"/nowhere/other.db\"}}".into());
    let e = UnixTarget::open(&format!("unix:{}", socket.display()), &wrong)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("wrong_database"), "{e}");
    drop(t);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let store = rpc_daemon::store::ReadStore::open(&db, &Default::default()).unwrap();
    let reply = store
        .read(&rpc_daemon::model::Op::List(rpc_daemon::model::ListArgs {
            limit: Some(100),
            ..Default::default()
        }))
        .unwrap();
    let text = format!("{reply:?}");
    for seq in [1, 13, 25] {
        assert!(
            text.contains(&format!("issue {seq}\"")),
            "issue {seq} missing: {text}"
        );
    }
    assert_eq!(text.matches("title: ").count(), 25, "{text}");
}
