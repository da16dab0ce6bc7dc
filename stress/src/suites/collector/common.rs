//! What the collector suites share: the max-RPS finder's settings per profile, which
//! `maxrps-sim` and `maxrps-serve` both run with.

use collector::shape::StepTiming;

use crate::suites::Profile;

/// The finder's settings per profile (`maxrps-serve` uses the same).
pub(crate) struct Settings {
    pub(crate) steps: Vec<u64>,
    pub(crate) timing: StepTiming,
    pub(crate) p99_ms: f64,
    pub(crate) precision_pct: f64,
}

/// No step sits exactly on the capacity: at 100% utilisation the queue is a random walk and
/// a p99 verdict there is a coin toss, which would make the confirmation step flaky.
pub(crate) fn settings(profile: Profile) -> Settings {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 0);
    match profile {
        // A short hold accumulates less queue per step, so the smoke SLO is tighter.
        Profile::Smoke => Settings {
            steps: vec![2000, 8000],
            timing: t(250, 1000),
            p99_ms: 10.0,
            precision_pct: 5.0,
        },
        Profile::Quick => Settings {
            steps: vec![1500, 3000, 6000, 12000],
            timing: t(1000, 3000),
            p99_ms: 50.0,
            precision_pct: 5.0,
        },
        Profile::Full => Settings {
            steps: vec![600, 1200, 2400, 4800, 9600, 19200],
            timing: t(2000, 10_000),
            p99_ms: 50.0,
            precision_pct: 2.0,
        },
    }
}
