//! The `jetstream://` target against a private `nats-server -js` (free loopback port, store
//! in the test's temp dir, killed on drop). Waits are bounded polls of a condition: no
//! verdict depends on timing.

use std::time::Duration;

use collector::target::Target;
use hub_leaf::nats::NatsServer;
use targets::jetstream::JetStreamTarget;
use targets::TargetOptions;

async fn server() -> (tempfile::TempDir, NatsServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path()).await.unwrap();
    (dir, server)
}

fn spec(server: &NatsServer, stream: &str, subject: &str) -> String {
    format!("jetstream://127.0.0.1:{}/{stream}/{subject}", server.port())
}

fn with_consumer(name: &str) -> TargetOptions {
    TargetOptions {
        consumer: Some(name.into()),
        body: Some("m-{seq}".into()),
        ..TargetOptions::default()
    }
}

/// Polls `cond` every 20 ms for at most 10 s; whether it held.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn publish_is_acked_and_creates_the_stream() {
    let (_dir, server) = server().await;
    let t = JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &TargetOptions::default())
        .await
        .unwrap();
    assert_eq!(t.actions(), vec!["ack".to_string()]);
    assert!(t.mark_actions().is_empty());
    for seq in 0..10 {
        assert!(t.call_marked(0, seq).await.unwrap().is_empty());
    }
    assert_eq!(t.delivery_stats().acked, 10);
    assert_eq!(t.stored_since_open().await.unwrap(), 10);
    assert_eq!(t.pending(), None, "no consumer, no backlog");
}

#[tokio::test]
async fn every_operation_gets_its_own_delivery_under_concurrency() {
    let (_dir, server) = server().await;
    let t = JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &with_consumer("reader"))
        .await
        .unwrap();
    assert_eq!(t.actions(), vec!["deliver".to_string(), "ack".to_string()]);
    assert_eq!(t.mark_actions(), vec![1]);
    let t = &t;
    let ops = (0..300u64).map(|seq| async move {
        let start = tokio::time::Instant::now();
        let marks = t.call_marked(0, seq).await.unwrap();
        (start, marks, tokio::time::Instant::now())
    });
    for (start, marks, end) in futures::future::join_all(ops).await {
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].action, 1);
        assert!(marks[0].at >= start && marks[0].at <= end);
    }
    let s = t.delivery_stats();
    assert_eq!(
        (s.acked, s.claimed, s.unclaimed, s.redeliveries),
        (300, 300, 0, 0),
        "{s:?}"
    );
    assert_eq!(t.waiting(), 0);
    assert!(
        eventually(|| t.pending() == Some(0)).await,
        "{:?}",
        t.pending()
    );
}

#[tokio::test]
async fn a_cancelled_operation_leaves_no_waiter_and_its_delivery_is_counted() {
    let (_dir, server) = server().await;
    let t = JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &with_consumer("reader"))
        .await
        .unwrap();
    t.pause_consumer(true);
    // Paused, the delivery cannot come: the call can only end by being cancelled.
    let r = tokio::time::timeout(Duration::from_millis(300), t.call_marked(0, 1)).await;
    assert!(r.is_err());
    assert_eq!(
        t.waiting(),
        0,
        "the cancelled operation's waiter is removed"
    );
    t.pause_consumer(false);
    assert!(
        eventually(|| t.delivery_stats().unclaimed == 1).await,
        "{:?}",
        t.delivery_stats()
    );
    // The next operation is matched to its own message, not the orphan.
    assert_eq!(t.call_marked(0, 2).await.unwrap().len(), 1);
    assert_eq!(t.delivery_stats().claimed, 1);
}

#[tokio::test]
async fn pending_grows_while_the_consumer_is_paused_and_drains_after() {
    let (_dir, server) = server().await;
    let reader = JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &with_consumer("reader"))
        .await
        .unwrap();
    let writer =
        JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &TargetOptions::default())
            .await
            .unwrap();
    assert!(eventually(|| reader.pending() == Some(0)).await);
    reader.pause_consumer(true);
    for seq in 0..50 {
        writer.call(0, seq).await.unwrap();
    }
    assert!(
        eventually(|| reader.pending() == Some(50)).await,
        "{:?}",
        reader.pending()
    );
    reader.pause_consumer(false);
    assert!(
        eventually(|| reader.pending() == Some(0)).await,
        "{:?}",
        reader.pending()
    );
    assert!(eventually(|| reader.delivery_stats().unclaimed == 50).await);
}

#[tokio::test]
async fn an_existing_stream_must_cover_the_subject() {
    let (_dir, server) = server().await;
    JetStreamTarget::open(&spec(&server, "MSGS", "msgs.in"), &TargetOptions::default())
        .await
        .unwrap();
    // A wildcard-covered subject of an existing stream is fine; another one is refused.
    let e = JetStreamTarget::open(
        &spec(&server, "MSGS", "other.subject"),
        &TargetOptions::default(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("\"MSGS\"") && e.contains("msgs.in") && e.contains("other.subject"),
        "{e}"
    );
    let e = JetStreamTarget::open(
        &spec(&server, "MSGS", "msgs.in"),
        &with_consumer("bad.name"),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("consumer name \"bad.name\""), "{e}");
    let e = JetStreamTarget::open("jetstream://127.0.0.1:1/MSGS", &TargetOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"jetstream://127.0.0.1:1/MSGS\"") && e.contains("STREAM/SUBJECT"),
        "{e}"
    );
}

#[tokio::test]
async fn an_existing_consumer_must_filter_the_subject() {
    let (_dir, server) = server().await;
    let url = server.url().to_string();
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "WIDE".into(),
            subjects: vec!["wide.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("reader".into()),
            filter_subject: "wide.a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = JetStreamTarget::open(&spec(&server, "WIDE", "wide.b"), &with_consumer("reader"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"reader\"") && e.contains("wide.a") && e.contains("wide.b"),
        "{e}"
    );
    let ok =
        JetStreamTarget::open(&spec(&server, "WIDE", "wide.a"), &with_consumer("reader")).await;
    assert!(ok.is_ok());
}
