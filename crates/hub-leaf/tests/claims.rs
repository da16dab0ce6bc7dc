//! Task claims against a real `nats-server -js`: won/lost races, refresh, fencing, release,
//! expiry by the bucket's max_age. Each test starts its own server in its own temp dir;
//! every wait is bounded.
#![cfg(not(loom))]

use std::time::{Duration, Instant};

use hub_leaf::claims::{ClaimError, Claims};
use hub_leaf::nats::{connect, NatsServer};

mod common;
use common::{bounded, start};

/// A JetStream context on its own connection (one per simulated leaf).
async fn js(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = bounded("connect", connect(server.url())).await.unwrap();
    async_nats::jetstream::new(client)
}

async fn claims(server: &NatsServer, ttl: Duration) -> Claims {
    let js = js(server).await;
    bounded("open claims", Claims::open(&js, "claims", ttl))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_racing_leaves_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let a = claims(&server, Duration::from_secs(30)).await;
    let b = claims(&server, Duration::from_secs(30)).await;
    for i in 0..25 {
        let task = format!("slot-{i}/task.{i}");
        let (ra, rb) = bounded("race", async {
            tokio::join!(a.claim(&task, "leaf-a"), b.claim(&task, "leaf-b"))
        })
        .await;
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        match (&ra, &rb) {
            (Some(won), None) | (None, Some(won)) => {
                assert_eq!(won.task, task);
                assert_eq!(won.token, won.revision);
                let other = if won.holder == "leaf-a" {
                    "leaf-b"
                } else {
                    "leaf-a"
                };
                assert!(bounded("check", a.check(&task, &won.holder, won.token))
                    .await
                    .unwrap());
                assert!(!bounded("check", b.check(&task, other, won.token))
                    .await
                    .unwrap());
            }
            _ => panic!("task {task}: expected exactly one winner, got {ra:?} and {rb:?}"),
        }
    }
    // A claim already held is lost for everyone, the holder included.
    assert_eq!(
        bounded("claim", a.claim("slot-0/task.0", "leaf-c"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_racing_leaves_wins() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut leaves = Vec::new();
    for _ in 0..6 {
        leaves.push(claims(&server, Duration::from_secs(30)).await);
    }
    for i in 0..10 {
        let task = format!("shared/task-{i}");
        let races = leaves.iter().enumerate().map(|(n, c)| {
            let task = task.clone();
            async move { c.claim(&task, &format!("leaf-{n}")).await }
        });
        let results = bounded("race", futures::future::join_all(races)).await;
        let winners: Vec<_> = results.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(winners.len(), 1, "task {task}: {winners:?}");
        let won = &winners[0];
        assert!(
            bounded("check", leaves[0].check(&task, &won.holder, won.token))
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn refresh_keeps_the_token_and_check_fences_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = claims(&server, Duration::from_secs(30)).await;
    let claim = bounded("claim", c.claim("t1", "leaf-a"))
        .await
        .unwrap()
        .expect("won");
    let mut current = claim.clone();
    for _ in 0..3 {
        let next = bounded("refresh", c.refresh(&current)).await.unwrap();
        assert_eq!(
            next.token, claim.token,
            "the token is stable across refreshes"
        );
        assert!(
            next.revision > current.revision,
            "each refresh is a new revision"
        );
        current = next;
    }
    assert!(bounded("check", c.check("t1", "leaf-a", claim.token))
        .await
        .unwrap());
    assert!(!bounded("check", c.check("t1", "leaf-b", claim.token))
        .await
        .unwrap());
    assert!(!bounded("check", c.check("t1", "leaf-a", current.revision))
        .await
        .unwrap());
    assert!(
        !bounded("check", c.check("t1", "leaf-a", claim.token + 1000))
            .await
            .unwrap()
    );
    assert!(!bounded("check", c.check("other", "leaf-a", claim.token))
        .await
        .unwrap());
    // A refresh from a stale revision (a copy from before the last refresh) is Lost.
    let err = bounded("stale refresh", c.refresh(&claim))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::Lost { .. }), "{err:?}");
}

#[tokio::test]
async fn release_then_reclaim_gets_a_larger_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = claims(&server, Duration::from_secs(30)).await;
    let first = bounded("claim", c.claim("t2", "leaf-a"))
        .await
        .unwrap()
        .expect("won");
    let first = bounded("refresh", c.refresh(&first)).await.unwrap();
    bounded("release", c.release(&first)).await.unwrap();
    assert!(!bounded("check", c.check("t2", "leaf-a", first.token))
        .await
        .unwrap());
    let err = bounded("release again", c.release(&first))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::Lost { .. }), "{err:?}");

    // The same holder claims again: a new, larger token; the old one is fenced off.
    let second = bounded("re-claim", c.claim("t2", "leaf-a"))
        .await
        .unwrap()
        .expect("claimable after release");
    assert!(second.token > first.token);
    assert!(bounded("check", c.check("t2", "leaf-a", second.token))
        .await
        .unwrap());
    assert!(!bounded("check", c.check("t2", "leaf-a", first.token))
        .await
        .unwrap());
    let err = bounded("refresh old", c.refresh(&first)).await.unwrap_err();
    assert!(matches!(err, ClaimError::Lost { .. }), "{err:?}");
}

#[tokio::test]
async fn a_dead_holders_claim_expires_and_its_token_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ttl = Duration::from_secs(1);
    let a = claims(&server, ttl).await;
    let b = claims(&server, ttl).await;
    let dead = bounded("claim", a.claim("t3", "leaf-a"))
        .await
        .unwrap()
        .expect("won");
    let t0 = Instant::now();
    assert_eq!(
        bounded("claim", b.claim("t3", "leaf-b")).await.unwrap(),
        None
    );

    // leaf-a "dies" (stops refreshing). leaf-b polls until the claim has aged out.
    let until = t0 + Duration::from_secs(10);
    let taken = loop {
        if let Some(c) = bounded("claim", b.claim("t3", "leaf-b")).await.unwrap() {
            break c;
        }
        assert!(
            Instant::now() < until,
            "the claim never expired (ttl {ttl:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = t0.elapsed();
    assert!(
        waited >= ttl - Duration::from_millis(100),
        "expired too early: {waited:?}"
    );
    eprintln!("claim with ttl {ttl:?} became claimable after {waited:?}");
    assert!(taken.token > dead.token);

    // The stale holder is fenced: its token no longer checks, its refresh is Lost.
    assert!(!bounded("check", b.check("t3", "leaf-a", dead.token))
        .await
        .unwrap());
    assert!(bounded("check", b.check("t3", "leaf-b", taken.token))
        .await
        .unwrap());
    let err = bounded("stale refresh", a.refresh(&dead))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::Lost { .. }), "{err:?}");
    let err = bounded("stale release", a.release(&dead))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::Lost { .. }), "{err:?}");
}

#[tokio::test]
async fn check_rejects_an_expired_claim_even_before_the_server_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ttl = Duration::from_secs(1);
    let c = claims(&server, ttl).await;
    let claim = bounded("claim", c.claim("t4", "leaf-a"))
        .await
        .unwrap()
        .expect("won");
    assert!(bounded("check", c.check("t4", "leaf-a", claim.token))
        .await
        .unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(!bounded("check", c.check("t4", "leaf-a", claim.token))
        .await
        .unwrap());
}

#[tokio::test]
async fn refreshing_keeps_a_claim_past_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let ttl = Duration::from_secs(1);
    let a = claims(&server, ttl).await;
    let b = claims(&server, ttl).await;
    let mut claim = bounded("claim", a.claim("t5", "leaf-a"))
        .await
        .unwrap()
        .expect("won");
    let t0 = Instant::now();
    while t0.elapsed() < ttl * 3 {
        tokio::time::sleep(ttl / 4).await;
        claim = bounded("refresh", a.refresh(&claim)).await.unwrap();
        assert!(bounded("check", b.check("t5", "leaf-a", claim.token))
            .await
            .unwrap());
        assert_eq!(
            bounded("claim", b.claim("t5", "leaf-b")).await.unwrap(),
            None
        );
    }
    bounded("release", a.release(&claim)).await.unwrap();
    assert!(bounded("claim", b.claim("t5", "leaf-b"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn bad_keys_holders_buckets_and_ttls_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = claims(&server, Duration::from_secs(30)).await;
    for key in ["", ".lead", "trail.", "a..b", "sp ace", "star*", "gt>", "ü"] {
        let err = bounded("claim", c.claim(key, "leaf-a")).await.unwrap_err();
        assert!(
            matches!(err, ClaimError::InvalidKey { .. }),
            "{key:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{key:?}")), "{err}");
    }
    let long = "k".repeat(300);
    assert!(matches!(
        bounded("claim", c.claim(&long, "leaf-a"))
            .await
            .unwrap_err(),
        ClaimError::InvalidKey { .. }
    ));
    assert!(matches!(
        bounded("claim", c.claim("ok", "")).await.unwrap_err(),
        ClaimError::InvalidHolder { .. }
    ));
    let js = js(&server).await;
    let err = bounded(
        "open",
        Claims::open(&js, "bad.name", Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClaimError::InvalidBucket { .. }), "{err:?}");
    let err = bounded("open", Claims::open(&js, "x", Duration::from_millis(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::InvalidTtl { .. }), "{err:?}");
    let err = bounded("open", Claims::open(&js, "claims", Duration::from_secs(7)))
        .await
        .unwrap_err();
    assert!(matches!(err, ClaimError::TtlMismatch { .. }), "{err:?}");
    // Opening again with the same ttl is fine.
    bounded(
        "reopen",
        Claims::open(&js, "claims", Duration::from_secs(30)),
    )
    .await
    .unwrap();
}
