//! The hub against a real `nats-server -js`, driven by hand-made requests: compare-and-swap,
//! fork replies and the fork grant, idempotent re-push, duplicate task, range pulls, fencing
//! (wrong holder, old token, expired claim). Each test starts its own server in its own temp
//! dir; every wait is bounded.
#![cfg(not(loom))]

use std::time::Duration;

use hub_leaf::claims::Claims;
use hub_leaf::hub::{Hub, HubConfig};
use hub_leaf::nats::{connect, NatsServer};
use hub_leaf::proto::{self, PullReply, PullRequest, PushReply, PushRequest, MAX_PULL_COMMITS};
use hub_leaf::repo::{NewCommit, Repo, Tip};

mod common;
use common::{bounded, start};

const PREFIX: &str = "t.hub";

fn config(claims: Option<(&str, Duration)>) -> HubConfig {
    HubConfig {
        prefix: PREFIX.to_string(),
        tip_bucket: "tip".to_string(),
        claims: claims.map(|(b, ttl)| (b.to_string(), ttl)),
        grant_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    }
}

fn change(leaf: &str, task: &str, n: u8) -> NewCommit {
    NewCommit {
        author: leaf.to_string(),
        message: task.to_string(),
        created_ms: 1_700_000_000_000 + u64::from(n),
        files: vec![(format!("{leaf}/file-{n}"), Some(vec![n; 100]))],
    }
}

fn push(leaf: &str, task: &str, token: u64, parent: Option<&Tip>, n: u8) -> PushRequest {
    let (commit, blobs) = Repo::prepare(parent, &change(leaf, task, n)).unwrap();
    PushRequest {
        leaf: leaf.to_string(),
        task: task.to_string(),
        token,
        expected: parent.cloned(),
        commit,
        blobs,
    }
}

async fn send(client: &async_nats::Client, req: &PushRequest) -> PushReply {
    let msg = bounded(
        "push",
        client.request(proto::push_subject(PREFIX), proto::encode(req)),
    )
    .await
    .unwrap();
    proto::decode("push reply", &msg.payload).unwrap()
}

async fn pull(client: &async_nats::Client, after_seq: u64) -> (Option<Tip>, hub_leaf::repo::Pull) {
    let req = PullRequest {
        leaf: "t".into(),
        after_seq,
    };
    let msg = bounded(
        "pull",
        client.request(proto::pull_subject(PREFIX), proto::encode(&req)),
    )
    .await
    .unwrap();
    match proto::decode("pull reply", &msg.payload).unwrap() {
        PullReply::Commits { tip, pull } => (tip, pull),
        PullReply::Failed { error } => panic!("pull failed: {error}"),
    }
}

fn accepted(reply: PushReply) -> (Tip, bool) {
    match reply {
        PushReply::Accepted { tip, new } => (tip, new),
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// A hub on `server` with its repository in `dir`.
async fn hub(server: &NatsServer, dir: &std::path::Path, cfg: HubConfig) -> Hub {
    let (url, path) = (server.url().to_string(), dir.join("hub.db"));
    tokio::task::spawn_blocking(move || Hub::start(&url, &path, cfg))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_fork_retry_and_idempotent_re_push() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let hub = hub(&server, dir.path(), config(None)).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();

    // A and B both prepare on the empty trunk; A lands, B forks.
    let a = push("a", "slot-0/task-0", 1, None, 1);
    let b = push("b", "slot-1/task-0", 1, None, 2);
    let (tip1, new) = accepted(send(&c, &a).await);
    assert!(new);
    assert_eq!(tip1, a.commit.tip());
    match send(&c, &b).await {
        PushReply::Forked { tip } => assert_eq!(tip, Some(tip1.clone())),
        other => panic!("expected Forked, got {other:?}"),
    }
    // B re-applies its change on the tip it was given and retries: in.
    let b2 = push("b", "slot-1/task-0", 1, Some(&tip1), 2);
    let (tip2, _) = accepted(send(&c, &b2).await);
    assert_eq!(tip2.seq, 2);
    // A's push again (its reply lost): accepted, not stored twice.
    let (tip, new) = accepted(send(&c, &a).await);
    assert!(!new);
    assert_eq!(tip, tip2);
    // Another commit for a task already on the trunk: refused as a duplicate.
    let again = push("c", "slot-0/task-0", 1, Some(&tip2), 3);
    assert_eq!(send(&c, &again).await, PushReply::Duplicate { seq: 1 });
    // A commit that does not extend the tip it names is refused, nothing stored.
    let mut bad = push("c", "slot-2/task-0", 1, Some(&tip2), 4);
    bad.commit.seq = 7;
    assert!(matches!(
        send(&c, &bad).await,
        PushReply::Failed {
            retryable: false,
            ..
        }
    ));
    let stats = hub.stop().unwrap();
    assert_eq!(stats.commits, 2);
    assert_eq!((stats.accepted, stats.forks, stats.retried), (2, 1, 1));
    assert_eq!(stats.duplicates, 1);
    assert_eq!(
        Repo::open(&dir.path().join("hub.db"))
            .unwrap()
            .commit_count()
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_grant_keeps_the_trunk_for_the_forked_leaf_and_then_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let hub = hub(&server, dir.path(), config(None)).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let (tip1, _) = accepted(send(&c, &push("x", "slot-9/task-0", 1, None, 9)).await);

    // A forks and holds a grant; B's push (even one on the right tip) waits for A's retry.
    assert!(matches!(
        send(&c, &push("a", "slot-0/task-0", 1, None, 1)).await,
        PushReply::Forked { .. }
    ));
    let b = push("b", "slot-1/task-0", 1, Some(&tip1), 2);
    let c2 = c.clone();
    let b_reply = tokio::spawn(async move { send(&c2, &b).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !b_reply.is_finished(),
        "B was answered while A held the grant"
    );
    let (tip2, _) = accepted(send(&c, &push("a", "slot-0/task-0", 1, Some(&tip1), 1)).await);
    // Now B is handled: its tip is stale, so it forks (and holds the grant itself).
    match bounded("B's reply", b_reply).await.unwrap() {
        PushReply::Forked { tip } => assert_eq!(tip, Some(tip2.clone())),
        other => panic!("expected Forked, got {other:?}"),
    }
    // B never retries: its grant expires and C goes ahead after about 300 ms.
    let started = std::time::Instant::now();
    let (tip3, _) = accepted(send(&c, &push("c", "slot-2/task-0", 1, Some(&tip2), 3)).await);
    assert_eq!(tip3.seq, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let stats = hub.stop().unwrap();
    assert_eq!(stats.grants_expired, 1);
    assert_eq!(stats.grants_used, 1);
    assert!(stats.parked >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_is_exactly_the_commits_after_a_sequence_number_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let hub = hub(&server, dir.path(), config(None)).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let mut tip: Option<Tip> = None;
    let n = MAX_PULL_COMMITS + 10;
    for i in 0..n {
        let req = push(
            "a",
            &format!("slot-0/task-{i}"),
            1,
            tip.as_ref(),
            (i % 250) as u8,
        );
        tip = Some(accepted(send(&c, &req).await).0);
    }
    let (hub_tip, first) = pull(&c, 0).await;
    assert_eq!(hub_tip, tip);
    assert_eq!(first.commits.len(), MAX_PULL_COMMITS);
    assert!(first.more);
    assert_eq!(first.commits[0].seq, 1);
    let (_, rest) = pull(&c, first.last().unwrap().seq).await;
    assert_eq!(rest.commits.len(), 10);
    assert!(!rest.more);
    let (_, middle) = pull(&c, 100).await;
    assert_eq!(middle.commits[0].seq, 101);
    let (_, none) = pull(&c, n as u64).await;
    assert!(none.commits.is_empty() && !none.more);
    // A leaf replica built from the pulls has the hub's tree.
    let leaf_dir = tempfile::tempdir().unwrap();
    let mut leaf = Repo::open_replica(&leaf_dir.path().join("leaf.db")).unwrap();
    leaf.apply(&first.commits, &first.blobs).unwrap();
    leaf.apply(&rest.commits, &rest.blobs).unwrap();
    assert_eq!(leaf.tip().unwrap(), tip);
    drop(hub);
    let hub_repo = Repo::open(&dir.path().join("hub.db")).unwrap();
    assert_eq!(
        leaf.manifest_hash().unwrap(),
        hub_repo.manifest_hash().unwrap()
    );
    // Garbage is answered, not dropped.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_answered_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let _hub = hub(&server, dir.path(), config(None)).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let msg = bounded(
        "push",
        c.request(proto::push_subject(PREFIX), "not json".into()),
    )
    .await
    .unwrap();
    match proto::decode::<PushReply>("push reply", &msg.payload).unwrap() {
        PushReply::Failed { error, retryable } => {
            assert!(error.contains("push request"), "{error}");
            assert!(!retryable, "garbage cannot succeed when sent again");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let msg = bounded("pull", c.request(proto::pull_subject(PREFIX), "{}".into()))
        .await
        .unwrap();
    match proto::decode::<PullReply>("pull reply", &msg.payload).unwrap() {
        PullReply::Failed { error } => assert!(error.contains("pull request"), "{error}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_fences_a_push_whose_token_is_not_the_live_claim() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ttl = Duration::from_secs(1);
    let hub = hub(&server, dir.path(), config(Some(("claims", ttl)))).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let js = async_nats::jetstream::new(c.clone());
    let claims = bounded("open", Claims::open(&js, "claims", ttl))
        .await
        .unwrap();

    let a = bounded("claim", claims.claim("slot-0/task-0", "a"))
        .await
        .unwrap()
        .unwrap();
    // Another holder's name, or a made-up token: fenced.
    let wrong_holder = push("b", "slot-0/task-0", a.token, None, 1);
    assert!(matches!(
        send(&c, &wrong_holder).await,
        PushReply::Fenced { .. }
    ));
    let wrong_token = push("a", "slot-0/task-0", a.token + 1000, None, 1);
    assert!(matches!(
        send(&c, &wrong_token).await,
        PushReply::Fenced { .. }
    ));
    // The claim ages out (its holder stalled): its token is fenced although nobody else
    // has claimed the task yet.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let stale = push("a", "slot-0/task-0", a.token, None, 1);
    assert!(matches!(send(&c, &stale).await, PushReply::Fenced { .. }));
    // B claims it now (a larger token) and pushes: accepted. A's old token stays fenced.
    let b = bounded("claim", claims.claim("slot-0/task-0", "b"))
        .await
        .unwrap()
        .expect("the expired claim is free");
    assert!(b.token > a.token);
    let (tip, _) = accepted(send(&c, &push("b", "slot-0/task-0", b.token, None, 2)).await);
    assert_eq!(tip.seq, 1);
    let late = push("a", "slot-0/task-0", a.token, Some(&tip), 1);
    assert!(matches!(
        send(&c, &late).await,
        PushReply::Duplicate { .. } | PushReply::Fenced { .. }
    ));
    let stats = hub.stop().unwrap();
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.fenced, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_grants_off_a_fork_keeps_nothing_for_the_forked_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let cfg = HubConfig {
        grant_timeout: Duration::ZERO,
        ..config(None)
    };
    let hub = hub(&server, dir.path(), cfg).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let (tip1, _) = accepted(send(&c, &push("x", "slot-9/task-0", 1, None, 9)).await);
    assert!(matches!(
        send(&c, &push("a", "slot-0/task-0", 1, None, 1)).await,
        PushReply::Forked { .. }
    ));
    // B goes straight in, ahead of A's retry, which then forks again.
    let (tip2, _) = accepted(send(&c, &push("b", "slot-1/task-0", 1, Some(&tip1), 2)).await);
    assert!(matches!(
        send(&c, &push("a", "slot-0/task-0", 1, Some(&tip1), 1)).await,
        PushReply::Forked { tip } if tip == Some(tip2)
    ));
    let stats = hub.stop().unwrap();
    assert_eq!((stats.parked, stats.grants_used, stats.forks), (0, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tips_made_faster_than_the_broadcast_interval_coalesce_and_the_last_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let cfg = HubConfig {
        tip_interval: Duration::from_millis(300),
        ..config(None)
    };
    let hub = hub(&server, dir.path(), cfg).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let mut tip: Option<Tip> = None;
    for i in 0..30u8 {
        let req = push("a", &format!("slot-0/task-{i}"), 1, tip.as_ref(), i);
        tip = Some(accepted(send(&c, &req).await).0);
    }
    let js = async_nats::jetstream::new(c.clone());
    let broadcast = bounded("open", hub_leaf::tip::TipBroadcast::open(&js, "tip"))
        .await
        .unwrap();
    let want = tip.unwrap();
    let mut seen = None;
    for _ in 0..100 {
        seen = bounded("current", broadcast.current()).await.unwrap();
        if seen.as_ref().map(|t| t.seq) == Some(want.seq) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("a tip was broadcast");
    assert_eq!((seen.seq, seen.hash), (want.seq, want.hash));
    let stats = hub.stop().unwrap();
    assert!(
        stats.tips_published < 15,
        "{} tips published for 30 commits",
        stats.tips_published
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_knows_its_tasks_and_serves_recent_commits_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let cfg = HubConfig {
        cache_commits: 2,
        ..config(None)
    };
    let first = hub(&server, dir.path(), cfg.clone()).await;
    let c = bounded("connect", connect(server.url())).await.unwrap();
    let mut tip: Option<Tip> = None;
    let mut pushes = Vec::new();
    for i in 0..5u8 {
        let req = push("a", &format!("slot-0/task-{i}"), 1, tip.as_ref(), i);
        tip = Some(accepted(send(&c, &req).await).0);
        pushes.push(req);
    }
    first.stop().unwrap();

    let again = hub(&server, dir.path(), cfg).await;
    assert_eq!(again.tip(), tip);
    // The task index came back from the repository: a re-push is a no-op, another commit
    // for a done task a duplicate.
    let (_, new) = accepted(send(&c, &pushes[0]).await);
    assert!(!new);
    let other = push("b", "slot-0/task-0", 1, tip.as_ref(), 9);
    assert_eq!(send(&c, &other).await, PushReply::Duplicate { seq: 1 });
    // Commits 4 and 5 are in memory; older ones come from SQLite.
    let (_, recent) = pull(&c, 3).await;
    assert_eq!(recent.commits.len(), 2);
    let (_, all) = pull(&c, 0).await;
    assert_eq!(all.commits.len(), 5);
    let stats = again.stop().unwrap();
    assert_eq!((stats.pulls, stats.pulls_cached), (2, 1));
}
