//! The generators and the SLO verdict through the public API: counts are exact (nothing lost,
//! nothing counted twice, warmup never leaks into a hold), and the verdict rules hold.
//! No test asserts a speed: durations are small and only counts and rules are checked.

use std::sync::Arc;
use std::time::Duration;

use collector::generator::{closed_loop, GeneratorConfig, Measured, Mode, OpenLoop};
use collector::recorder::{ActionId, Recorder, Sample};
use collector::shape::{Phase, StepTiming};
use collector::sim::SimTarget;
use collector::slo::{evaluate, parse_action_limits, Slo, StepStatus};
use collector::target::{BoxFuture, OpError, Target};

fn timing(warmup_ms: u64, hold_ms: u64) -> StepTiming {
    StepTiming::new(
        Duration::from_millis(warmup_ms),
        Duration::from_millis(hold_ms),
        Duration::ZERO,
    )
    .unwrap()
}

fn sim(servers: u64, service_us: u64, queue: Option<u64>) -> Arc<dyn Target> {
    Arc::new(SimTarget::new(servers, service_us, queue).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_records_every_hold_operation_exactly_once() {
    let mut gen = OpenLoop::new(sim(4, 1000, None), GeneratorConfig::default()).unwrap();
    let m = gen.step(1000, timing(100, 200)).await.unwrap();
    let total = m.data.total();
    assert!((199..=201).contains(&m.scheduled), "{}", m.scheduled);
    assert_eq!(m.issued + m.not_issued, m.scheduled);
    assert_eq!(total.completed() + total.dropped, m.issued);
    assert_eq!(total.error_count(), 0);
    assert!(m.drained);
    assert_eq!(
        m.mode,
        Mode::OpenLoop {
            target_per_s: 1000.0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_operations_finishing_in_the_hold_are_stragglers_not_samples() {
    // 100/s with 150 ms service on plenty of servers: the 10 warmup operations are all
    // still running when the hold starts and finish inside it.
    let mut gen = OpenLoop::new(sim(1000, 150_000, None), GeneratorConfig::default()).unwrap();
    let m = gen.step(100, timing(100, 100)).await.unwrap();
    let total = m.data.total();
    assert_eq!(m.scheduled, 10, "hold operations");
    assert_eq!(m.issued + m.not_issued, m.scheduled);
    assert_eq!(
        total.completed(),
        m.issued,
        "only hold operations are samples"
    );
    assert_eq!(
        m.data.stragglers, 10,
        "warmup operations are counted as stragglers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_drops_and_counts() {
    let cfg = GeneratorConfig {
        max_in_flight: 5,
        ..GeneratorConfig::default()
    };
    let mut gen = OpenLoop::new(sim(1, 20_000, None), cfg).unwrap();
    let m = gen.step(1000, timing(0, 100)).await.unwrap();
    let total = m.data.total();
    assert!(total.dropped > 0, "{total:?}");
    assert_eq!(
        total.completed() + total.dropped + m.not_issued,
        m.scheduled
    );
    let v = evaluate(&m, &Slo::default());
    assert_eq!(v.status, StepStatus::Trip);
    assert!(v.reasons[0].contains("dropped="), "{:?}", v.reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_overload_are_error_kinds() {
    let cfg = GeneratorConfig {
        op_timeout: Duration::from_millis(20),
        ..GeneratorConfig::default()
    };
    let mut gen = OpenLoop::new(sim(100, 200_000, None), cfg).unwrap();
    let m = gen.step(200, timing(0, 100)).await.unwrap();
    let total = m.data.total();
    assert_eq!(total.timeouts(), m.issued);
    assert!(m.issued > 0);

    let mut gen = OpenLoop::new(sim(1, 50_000, Some(2)), GeneratorConfig::default()).unwrap();
    let m = gen.step(500, timing(0, 100)).await.unwrap();
    let total = m.data.total();
    assert!(
        total.errors.get("overload").copied().unwrap_or(0) > 0,
        "{:?}",
        total.errors
    );
    assert_eq!(total.completed(), m.issued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_count_each_operation_in_the_phase_it_was_scheduled_in() {
    // 30 ms service: operations straddle every phase boundary.
    let mut gen = OpenLoop::new(sim(1000, 30_000, None), GeneratorConfig::default()).unwrap();
    let phases = [
        Phase {
            rate_per_s: 200,
            duration: Duration::from_millis(100),
        },
        Phase {
            rate_per_s: 400,
            duration: Duration::from_millis(100),
        },
    ];
    let ms = gen.phases(&phases).await.unwrap();
    assert_eq!(ms.len(), 2);
    for (m, expected) in ms.iter().zip([20u64, 40]) {
        let total = m.data.total();
        assert!(m.drained);
        assert_eq!(m.issued + m.not_issued, m.scheduled);
        assert!(
            (expected - 1..=expected + 1).contains(&m.scheduled),
            "{}",
            m.scheduled
        );
        assert_eq!(total.completed(), m.issued, "phase {expected}");
        assert_eq!(m.data.stragglers, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_releases_everything_at_once_and_awaits_it() {
    let mut gen = OpenLoop::new(sim(4, 1000, None), GeneratorConfig::default()).unwrap();
    let m = gen.burst(200).await.unwrap();
    let total = m.data.total();
    assert_eq!(m.mode, Mode::Burst { ops: 200 });
    assert_eq!(total.completed(), 200);
    // 200 operations on 4 servers of 1 ms: the last waits 49 ms behind the others, and
    // latency is measured from the common intended start.
    assert!(
        total.latency.max() >= 49_000,
        "max {} µs",
        total.latency.max()
    );
    assert!(gen.burst(0).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_workers_say_they_are_closed_loop() {
    let m = closed_loop(
        sim(4, 1000, None),
        4,
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    assert_eq!(m.mode, Mode::ClosedLoop { workers: 4 });
    assert!(m.issued > 0);
    assert_eq!(m.data.total().completed(), m.issued);
    assert!(closed_loop(
        sim(1, 1, None),
        0,
        Duration::ZERO,
        Duration::from_millis(10),
        Duration::from_secs(1)
    )
    .await
    .is_err());
}

/// A target with two actions, `send` and `search`, alternating.
struct TwoActions;

impl Target for TwoActions {
    fn actions(&self) -> Vec<String> {
        vec!["send".into(), "search".into()]
    }
    fn pick(&self, seq: u64) -> usize {
        (seq % 2) as usize
    }
    fn call(&self, _action: usize, _seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn describe(&self) -> String {
        "two-actions".into()
    }
}

/// A measured hold of 1 s at `target_per_s` with the given samples (ms, action, error).
fn measured(
    target_per_s: f64,
    issued: u64,
    samples: &[(u64, usize, Option<&str>)],
    dropped: u64,
) -> Measured {
    let rec = Recorder::new(&["send", "search"], 2).unwrap();
    let epoch = rec.epoch();
    for (i, (ms, action, error)) in samples.iter().enumerate() {
        rec.record(
            i,
            epoch,
            &Sample {
                action: ActionId(*action),
                latency_us: ms * 1000,
                service_us: ms * 1000,
                error: *error,
            },
        );
    }
    for i in 0..dropped {
        rec.record_dropped(i as usize, epoch, ActionId(0));
    }
    Measured {
        mode: Mode::OpenLoop { target_per_s },
        window_s: 1.0,
        scheduled: issued + dropped,
        issued,
        not_issued: 0,
        issue_lateness_us: hdrhistogram::Histogram::new(3).unwrap(),
        pending: (Some(0), Some(0)),
        drained: true,
        data: rec.reset(),
    }
}

fn fast(n: usize, action: usize) -> Vec<(u64, usize, Option<&'static str>)> {
    (0..n).map(|_| (2, action, None)).collect()
}

#[test]
fn trip_is_checked_before_shortfall() {
    let slo = Slo {
        p99_ms: Some(50.0),
        ..Slo::default()
    };
    // 100 ops at a target of 1000/s: a 90% shortfall, and p99 600 ms.
    let mut samples = fast(90, 0);
    samples.extend((0..10).map(|_| (600, 0, None)));
    let v = evaluate(&measured(1000.0, 100, &samples, 0), &slo);
    assert_eq!(v.status, StepStatus::Trip);
    assert_eq!(v.reasons, ["p99=600ms > 50"]);
    // The same shortfall while healthy is INCONCLUSIVE, and it says why.
    let v = evaluate(&measured(1000.0, 100, &fast(100, 0), 0), &slo);
    assert_eq!(v.status, StepStatus::Inconclusive);
    assert!(
        v.reasons[0].contains("the generator was the limit"),
        "{:?}",
        v.reasons
    );
    // Within the 5% tolerance it is a PASS.
    let v = evaluate(&measured(1000.0, 960, &fast(960, 0), 0), &slo);
    assert_eq!(v.status, StepStatus::Pass, "{:?}", v.reasons);
    // Nothing completed: INCONCLUSIVE, never a pass.
    let v = evaluate(&measured(1000.0, 0, &[], 0), &slo);
    assert_eq!(v.status, StepStatus::Inconclusive);
    assert!(v.reasons.iter().any(|r| r == "zero operations completed"));
}

#[test]
fn per_action_thresholds_name_the_action() {
    let known = TwoActions.actions();
    let slo = Slo {
        action_p95_ms: parse_action_limits("--action-p95-ms", "send:80,search:300", &known)
            .unwrap(),
        ..Slo::default()
    };
    let mut samples = fast(100, 1);
    samples.extend((0..100).map(|_| (100, 0, None))); // send at 100 ms, search at 2 ms
    let v = evaluate(&measured(200.0, 200, &samples, 0), &slo);
    assert_eq!(v.status, StepStatus::Trip);
    assert_eq!(v.reasons, ["send p95=100ms > 80"]);
    let e = parse_action_limits("--action-p95-ms", "recv:80", &known)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "invalid --action-p95-ms \"recv:80\": unknown action \"recv\": expected one of send, search");
    for bad in ["send", "send:0", "send:-1", "send:x", "", "send:1,send:2"] {
        assert!(
            parse_action_limits("--action-p99-ms", bad, &known).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn errors_and_drops_count_against_the_error_rate() {
    let slo = Slo::default(); // 1%
    let mut samples = fast(98, 0);
    samples.push((2, 0, Some("overload")));
    let v = evaluate(&measured(100.0, 100, &samples, 1), &slo);
    assert_eq!(v.status, StepStatus::Trip);
    assert_eq!(
        v.reasons,
        ["error rate=2.00% > 1% (overload=1, dropped=1 (in-flight limit))"]
    );
    let v = evaluate(&measured(100.0, 100, &fast(100, 0), 0), &slo);
    assert_eq!(v.status, StepStatus::Pass);
}

#[test]
fn backlog_growth_and_undrained_steps_trip() {
    let slo = Slo {
        max_backlog_growth: Some(10),
        ..Slo::default()
    };
    let mut m = measured(100.0, 100, &fast(100, 0), 0);
    m.pending = (Some(5), Some(40));
    let v = evaluate(&m, &slo);
    assert_eq!(v.reasons, ["backlog grew by 35 > 10 over the hold"]);
    m.pending = (Some(5), Some(10));
    assert_eq!(evaluate(&m, &slo).status, StepStatus::Pass);
    m.drained = false;
    assert_eq!(evaluate(&m, &slo).status, StepStatus::Trip);
}

#[test]
fn bad_thresholds_are_refused() {
    for (slo, needle) in [
        (
            Slo {
                p99_ms: Some(-1.0),
                ..Slo::default()
            },
            "invalid p99 threshold (ms) -1",
        ),
        (
            Slo {
                p95_ms: Some(f64::NAN),
                ..Slo::default()
            },
            "invalid p95 threshold (ms) NaN",
        ),
        (
            Slo {
                max_error_rate: 2.0,
                ..Slo::default()
            },
            "invalid max error rate 2",
        ),
        (
            Slo {
                shortfall_tolerance: 0.0,
                ..Slo::default()
            },
            "invalid shortfall tolerance 0",
        ),
    ] {
        let e = slo.validate().unwrap_err().to_string();
        assert!(e.starts_with(needle), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_runs_through_one_entry_point() {
    use collector::shape::Shape;
    let mut gen = OpenLoop::new(sim(8, 1000, None), GeneratorConfig::default()).unwrap();
    let t = timing(0, 50);
    let shapes = [
        (
            Shape::Constant {
                rate_per_s: 200,
                timing: t,
            },
            1,
        ),
        (
            Shape::Ramp {
                rates: vec![100, 200],
                timing: t,
            },
            2,
        ),
        (
            Shape::soak(vec![
                Phase {
                    rate_per_s: 100,
                    duration: Duration::from_millis(50),
                },
                Phase {
                    rate_per_s: 200,
                    duration: Duration::from_millis(50),
                },
            ]),
            2,
        ),
        (Shape::Burst { ops: 20 }, 1),
        (
            Shape::ClosedLoop {
                workers: 2,
                think: Duration::from_millis(1),
                duration: Duration::from_millis(50),
            },
            1,
        ),
    ];
    for (shape, windows) in shapes {
        let ms = gen.run(&shape).await.unwrap();
        assert_eq!(ms.len(), windows, "{shape:?}");
        for m in &ms {
            assert_eq!(m.data.total().completed(), m.issued, "{shape:?}");
        }
    }
    assert!(gen
        .run(&Shape::Ramp {
            rates: vec![200, 100],
            timing: t
        })
        .await
        .is_err());
}
