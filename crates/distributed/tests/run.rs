//! A distributed run end to end over a real nats-server: workers join, a step is split,
//! merged exactly; too few workers, another protocol version, a worker gone before or
//! during a step and a worker with no coordinator are reported, never passed. Verdicts
//! here never depend on timing: counts, merge exactness and named reasons are checked.

use std::time::Duration;

use collector::generator::GeneratorConfig;
use collector::shape::StepTiming;
use collector::slo::{Slo, StepStatus};
use distributed::coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
use distributed::judge::check_merge_exact;
use distributed::worker::{self, WorkerConfig};
use hub_leaf::nats::{NatsError, NatsServer};

async fn server(dir: &tempfile::TempDir) -> Option<NatsServer> {
    match NatsServer::start(dir.path()).await {
        Ok(s) => Some(s),
        Err(e @ NatsError::NotFound { .. }) => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn coordinator_cfg(url: &str, group: &str, workers: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        nats_url: url.into(),
        group: group.into(),
        workers,
        join_wait: Duration::from_secs(20),
        target: "sim:servers=4,service_us=1000".into(),
        options: targets::TargetOptions::default(),
        generator: GeneratorConfig::default(),
        raw_log_cap: 1 << 16,
        interval: Some(Duration::from_millis(500)),
    }
}

fn worker_cfg(url: &str, group: &str, name: &str, max_rate: Option<u64>) -> WorkerConfig {
    WorkerConfig {
        nats_url: url.into(),
        group: group.into(),
        name: name.into(),
        max_rate,
        idle_timeout: Duration::from_secs(20),
        runs: Some(1),
    }
}

fn timing() -> StepTiming {
    StepTiming::new(
        Duration::from_millis(200),
        Duration::from_secs(1),
        Duration::ZERO,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_a_step_and_merge_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let url = nats.url().to_string();
    let workers: Vec<_> = [("a", Some(150)), ("b", None)]
        .into_iter()
        .map(|(name, cap)| {
            let cfg = worker_cfg(&url, "t1", name, cap);
            tokio::spawn(async move { worker::run(&cfg, |_| {}).await })
        })
        .collect();
    let mut c = Coordinator::start(&coordinator_cfg(&url, "t1", 2), |_| {})
        .await
        .unwrap();
    assert_eq!(c.actions(), ["op".to_string()]);
    let step = c.step(400, timing(), &Slo::default()).await.unwrap();
    // The capped worker got its cap, the other the rest.
    let share = |name: &str| {
        step.judged
            .workers
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.share)
    };
    assert_eq!((share("a"), share("b")), (Some(150), Some(250)));
    let m = &step.judged.measured;
    assert_eq!(m.scheduled, 400, "{:?}", step.judged.verdict);
    assert_eq!(m.data.total().completed(), m.issued);
    let checked = check_merge_exact(&m.data).unwrap();
    assert_eq!(checked, [format!("op: {} samples", m.issued)]);
    assert!(step
        .reports
        .iter()
        .all(|r| r.as_ref().is_some_and(|r| !r.intervals.is_empty())));
    c.end("test over").await;
    for w in workers {
        let s = w.await.unwrap().unwrap();
        assert_eq!((s.runs, s.steps), (1, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_workers_is_an_error_naming_who_joined() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let url = nats.url().to_string();
    let cfg = worker_cfg(&url, "t2", "only", None);
    let w = tokio::spawn(async move { worker::run(&cfg, |_| {}).await });
    let mut cc = coordinator_cfg(&url, "t2", 2);
    cc.join_wait = Duration::from_millis(1500);
    let e = Coordinator::start(&cc, |_| {}).await.err().unwrap();
    assert!(
        matches!(
            e,
            CoordinatorError::TooFewWorkers {
                joined: 1,
                wanted: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("joined: only"), "{e}");
    w.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gone_before_its_step_makes_it_inconclusive_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let url = nats.url().to_string();
    let keep = worker_cfg(&url, "t3", "keep", None);
    let lost = worker_cfg(&url, "t3", "lost", None);
    let kept = tokio::spawn(async move { worker::run(&keep, |_| {}).await });
    let gone = tokio::spawn(async move { worker::run(&lost, |_| {}).await });
    let mut c = Coordinator::start(&coordinator_cfg(&url, "t3", 2), |_| {})
        .await
        .unwrap();
    gone.abort();
    let _ = gone.await;
    let step = c.step(200, timing(), &Slo::default()).await.unwrap();
    assert_eq!(step.judged.verdict.status, StepStatus::Inconclusive);
    let reasons = step.judged.verdict.reasons.join("; ");
    assert!(reasons.contains("worker lost gone mid-step"), "{reasons}");
    let lost = c.workers().iter().find(|w| w.name == "lost").unwrap();
    assert!(lost.dropped.is_some());
    // The next step runs on the worker left, with the whole rate.
    let next = c.step(200, timing(), &Slo::default()).await.unwrap();
    assert_eq!(next.judged.workers.len(), 1);
    assert_eq!(next.judged.workers[0].share, 200);
    c.end("test over").await;
    kept.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_another_version_is_refused_and_the_run_goes_on() {
    use distributed::protocol::{decode, encode, join_subject, Join, JoinReply, PROTOCOL_VERSION};
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let url = nats.url().to_string();
    let coord_cfg = coordinator_cfg(&url, "t4", 1);
    let coord = tokio::spawn(async move { Coordinator::start(&coord_cfg, |_| {}).await });
    // A worker of another version asks to join (retrying until the coordinator listens).
    let client = async_nats::connect(&url).await.unwrap();
    let old = Join {
        protocol: PROTOCOL_VERSION + 1,
        name: "old".into(),
        max_rate: None,
        control: "herdlab.dist.t4.ctl.old".into(),
        host: "h".into(),
        pid: 1,
    };
    let payload = encode("join", &old).unwrap();
    let mut reply = None;
    for _ in 0..80 {
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(join_subject("t4"), payload.clone().into()),
        )
        .await;
        if let Ok(Ok(msg)) = asked {
            reply = Some(decode::<JoinReply>("join reply", &msg.payload).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(JoinReply::Rejected { reason }) = reply else {
        panic!("expected a refusal, got {reply:?}");
    };
    assert!(reason.contains("speaks protocol"), "{reason}");
    // A worker of this version still joins the same run.
    let cfg = worker_cfg(&url, "t4", "new", None);
    let w = tokio::spawn(async move { worker::run(&cfg, |_| {}).await });
    let c = coord.await.unwrap().unwrap();
    assert_eq!(c.workers().len(), 1);
    assert_eq!(c.workers()[0].name, "new");
    c.end("test over").await;
    w.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_coordinator_gives_up_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let mut cfg = worker_cfg(nats.url(), "t5", "alone", None);
    cfg.idle_timeout = Duration::from_millis(800);
    let e = worker::run(&cfg, |_| {}).await.unwrap_err();
    assert!(
        matches!(e, worker::WorkerError::NoCoordinator { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("herdlab.dist.t5.join"), "{e}");
}

/// A worker that joins, answers the clock probes and the setup, takes a step's plan, then
/// vanishes without a reply (its connection closed): lost mid-step, deterministically.
async fn vanishing_worker(url: String, group: &str) {
    use distributed::protocol::{
        control_subject, decode, encode, join_subject, Command, CommandReply, Join, JoinReply,
        PROTOCOL_VERSION,
    };
    use futures::StreamExt;
    let client = async_nats::connect(&url).await.unwrap();
    let control = control_subject(group, "vanish");
    let mut sub = client.subscribe(control.clone()).await.unwrap();
    let hello = Join {
        protocol: PROTOCOL_VERSION,
        name: "vanish".into(),
        max_rate: None,
        control,
        host: "h".into(),
        pid: 1,
    };
    let payload = encode("join", &hello).unwrap();
    let mut joined = false;
    for _ in 0..80 {
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(join_subject(group), payload.clone().into()),
        )
        .await;
        if let Ok(Ok(msg)) = asked {
            let reply = decode::<JoinReply>("join reply", &msg.payload).unwrap();
            assert!(matches!(reply, JoinReply::Accepted { .. }), "{reply:?}");
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(joined, "the coordinator never answered the join");
    // Bounded: a probe per PROBES, one setup, one step.
    for _ in 0..64 {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(20), sub.next()).await else {
            panic!("no command within 20 s");
        };
        let reply = match decode::<Command>("command", &msg.payload).unwrap() {
            Command::Probe => CommandReply::Probe {
                unix_ns: worker::unix_now_ns(),
            },
            Command::Setup(_) => CommandReply::Ready {
                actions: vec!["op".into()],
                describe: "sim:servers=2,service_us=1000".into(),
            },
            // The plan is in; the worker is gone before it answers.
            Command::Step(_) => break,
            Command::End { .. } => panic!("ended before a step"),
        };
        let bytes = encode("command reply", &reply).unwrap();
        client
            .publish(msg.reply.unwrap(), bytes.into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    }
    drop(sub);
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_step_makes_it_inconclusive_and_the_rest_takes_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = server(&dir).await else {
        return;
    };
    let url = nats.url().to_string();
    let keep = worker_cfg(&url, "t6", "keep", None);
    let kept = tokio::spawn(async move { worker::run(&keep, |_| {}).await });
    let gone = tokio::spawn(vanishing_worker(url.clone(), "t6"));
    let mut cc = coordinator_cfg(&url, "t6", 2);
    // A short operation timeout keeps the wait for the lost reply short (bounded anyway).
    cc.generator.op_timeout = Duration::from_secs(1);
    let mut c = Coordinator::start(&cc, |_| {}).await.unwrap();
    let step = c.step(200, timing(), &Slo::default()).await.unwrap();
    gone.await.unwrap();
    assert_eq!(step.judged.verdict.status, StepStatus::Inconclusive);
    let reasons = step.judged.verdict.reasons.join("; ");
    assert!(reasons.contains("worker vanish gone mid-step"), "{reasons}");
    // The worker that reported is still merged: its share is in the step's data.
    let keep_row = step
        .judged
        .workers
        .iter()
        .find(|w| w.name == "keep")
        .unwrap();
    assert_eq!(keep_row.status, "ok");
    assert_eq!(step.judged.measured.issued, 100);
    let lost = c.workers().iter().find(|w| w.name == "vanish").unwrap();
    assert!(lost
        .dropped
        .as_deref()
        .is_some_and(|d| d.contains("step 0")));
    let next = c.step(200, timing(), &Slo::default()).await.unwrap();
    assert_eq!(next.judged.workers.len(), 1);
    assert_eq!(next.judged.workers[0].share, 200);
    c.end("test over").await;
    kept.await.unwrap().unwrap();
}
