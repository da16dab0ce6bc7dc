//! The `nats://` target and the NATS server of known capacity against a private
//! `nats-server` (started on a free loopback port, killed on drop), with responders as tasks
//! of the test. No verdict depends on timing.

use std::sync::Arc;

use collector::target::Target;
use futures::StreamExt;
use hub_leaf::nats::NatsServer;
use targets::nats::NatsTarget;
use targets::{serve_nats, TargetOptions};

async fn server() -> (tempfile::TempDir, NatsServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path()).await.unwrap();
    (dir, server)
}

fn spec(server: &NatsServer, subject: &str) -> String {
    format!("nats://127.0.0.1:{}/{subject}", server.port())
}

/// A responder that checks each request's payload (`msg-N`) and header (`X-Test: yes`) and
/// answers `ok`, or `err:mismatch:…` naming what it got.
async fn checker(url: &str, subject: &str) -> tokio::task::JoinHandle<()> {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let hdr = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("X-Test").map(|v| v.as_str().to_string()))
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&msg.payload).to_string();
            let good = hdr == "yes"
                && body
                    .strip_prefix("msg-")
                    .is_some_and(|n| n.parse::<u64>().is_ok());
            let answer = if good {
                "ok".to_string()
            } else {
                format!("err:mismatch:{body} {hdr}")
            };
            client.publish(reply, answer.into()).await.unwrap();
        }
    })
}

#[tokio::test]
async fn requests_get_their_own_replies_with_payload_and_headers() {
    let (_dir, server) = server().await;
    let responder = checker(server.url(), "svc.echo").await;
    let opts = TargetOptions {
        body: Some("msg-{seq}".into()),
        headers: vec![("X-Test".into(), "yes".into())],
        ..TargetOptions::default()
    };
    let t = NatsTarget::open(&spec(&server, "svc.echo"), &opts)
        .await
        .unwrap();
    assert_eq!(t.actions(), vec!["request".to_string()]);
    let calls = (0..200u64).map(|seq| t.call(0, seq));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    responder.abort();
}

#[tokio::test]
async fn no_responders_and_err_replies_are_error_kinds() {
    let (_dir, server) = server().await;
    let t = NatsTarget::open(&spec(&server, "nobody.here"), &TargetOptions::default())
        .await
        .unwrap();
    let e = t.call(0, 1).await.unwrap_err();
    assert_eq!(e.kind, "no_responders", "{e}");

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("svc.fail").await.unwrap();
    client.flush().await.unwrap();
    let responder = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                client
                    .publish(reply, "err:busy:try later".into())
                    .await
                    .unwrap();
            }
        }
    });
    let t = NatsTarget::open(&spec(&server, "svc.fail"), &TargetOptions::default())
        .await
        .unwrap();
    let e = t.call(0, 1).await.unwrap_err();
    assert_eq!((e.kind.as_ref(), e.message.as_str()), ("busy", "try later"));
    responder.abort();
}

#[tokio::test]
async fn a_cancelled_request_does_not_answer_the_next_one() {
    let (_dir, server) = server().await;
    // Answers request n with "n": the first request's answer is held back until the
    // second is sent, so a mixed-up reply would show as the wrong number.
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut sub = client.subscribe("svc.slow").await.unwrap();
    client.flush().await.unwrap();
    let responder = tokio::spawn(async move {
        let first = sub.next().await.unwrap();
        let second = sub.next().await.unwrap();
        client
            .publish(first.reply.unwrap(), "err:first:reply to the first".into())
            .await
            .unwrap();
        client
            .publish(second.reply.unwrap(), "ok".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    });
    let t = NatsTarget::open(&spec(&server, "svc.slow"), &TargetOptions::default())
        .await
        .unwrap();
    // Cancel the first call once its request is surely sent (it waits for its reply).
    let first = t.call(0, 1);
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(300), first).await;
    assert!(
        cancelled.is_err(),
        "the first call cannot finish before the second is sent"
    );
    t.call(0, 2).await.unwrap();
    responder.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_setup_error_naming_the_spec() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("nats://127.0.0.1:{port}/x");
    let e = NatsTarget::open(&spec, &TargetOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&spec) && e.contains("connect"), "{e}");
}

#[tokio::test]
async fn serve_nats_serves_a_sim_model_to_the_nats_target() {
    let (_dir, server) = server().await;
    let model = collector::target::from_spec("sim:servers=2,service_us=500000,queue=1").unwrap();
    let serve = serve_nats::start(model, server.url(), "model.sim")
        .await
        .unwrap();
    let t = Arc::new(
        NatsTarget::open(&spec(&server, "model.sim"), &TargetOptions::default())
            .await
            .unwrap(),
    );
    for seq in 0..2 {
        t.call(0, seq).await.unwrap();
    }
    // 2 servers of 0.5 s each and a queue of 1 hold 3 at once: 10 sent at once (far
    // within 0.5 s) must see overloads, by kind, and some successes.
    let burst = futures::future::join_all((100..110).map(|s| t.call(0, s))).await;
    let overloads = burst
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind == "overload"))
        .count();
    assert!(overloads > 0, "{burst:?}");
    assert!(burst.iter().any(|r| r.is_ok()), "{burst:?}");
    assert_eq!(serve.served(), 12);
    serve.shutdown().await;
    let e = serve_nats::start(
        collector::target::from_spec("noop").unwrap(),
        server.url(),
        "bad subject",
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("whitespace"), "{e}");
}
