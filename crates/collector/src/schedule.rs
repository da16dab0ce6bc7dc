//! Open-loop schedules: when each operation *should* start, and how a task waits for it.
//!
//! An open-loop generator issues operation `i` at `start + i / rate` whatever happened to
//! earlier operations; the gap between that intended time and the moment the task actually
//! got to run is its *lateness*. Latency measured from the intended time is free of
//! coordinated omission (the wrk2 rule); lateness itself bounds what any rate-driven
//! measurement on the same machine can claim.

use std::time::Duration;

use tokio::time::Instant;

/// Why a schedule could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// The rate was not a finite number above zero.
    #[error("invalid rate {0}: expected a finite number of operations per second above 0")]
    Rate(f64),
    /// The rate's period would be shorter than one nanosecond.
    #[error("invalid rate {0}: above 1e9 operations per second (the clock's resolution)")]
    TooFast(f64),
}

/// A constant-rate open-loop schedule starting at a fixed instant.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoopSchedule {
    start: Instant,
    rate_per_s: f64,
}

impl OpenLoopSchedule {
    /// A schedule of `rate_per_s` operations per second starting at `start`.
    pub fn new(start: Instant, rate_per_s: f64) -> Result<Self, ScheduleError> {
        if !rate_per_s.is_finite() || rate_per_s <= 0.0 {
            return Err(ScheduleError::Rate(rate_per_s));
        }
        if rate_per_s > 1e9 {
            return Err(ScheduleError::TooFast(rate_per_s));
        }
        Ok(OpenLoopSchedule { start, rate_per_s })
    }

    /// The requested rate in operations per second.
    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    /// The instant the schedule starts.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The intended start of operation `i` (computed from `i`, so errors never accumulate).
    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate_per_s)
    }

    /// How many operations the schedule holds in `window`.
    pub fn count_within(&self, window: Duration) -> u64 {
        (window.as_secs_f64() * self.rate_per_s).floor() as u64
    }
}

/// How a task waits for an intended instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// `tokio::time::sleep_until` alone: cheap, but the timer wheel has millisecond
    /// granularity, so operations are released in bursts once per tick.
    TimerOnly,
    /// Sleep on the timer until `spin_below` before the deadline, then yield to the
    /// runtime until it arrives: sub-millisecond pacing at the cost of CPU.
    Hybrid {
        /// How close to the deadline the task stops sleeping and starts yielding.
        spin_below: Duration,
    },
}

impl Pacing {
    /// A short name for reports: `timer` or `hybrid`.
    pub fn name(&self) -> &'static str {
        match self {
            Pacing::TimerOnly => "timer",
            Pacing::Hybrid { .. } => "hybrid",
        }
    }

    /// Waits until `deadline` (returns at once if it has passed) and returns the instant
    /// the task resumed. The yield loop is bounded by the deadline itself.
    pub async fn wait_until(&self, deadline: Instant) -> Instant {
        match *self {
            Pacing::TimerOnly => {
                if Instant::now() < deadline {
                    tokio::time::sleep_until(deadline).await;
                }
            }
            Pacing::Hybrid { spin_below } => {
                if let Some(wake) = deadline.checked_sub(spin_below) {
                    if Instant::now() < wake {
                        tokio::time::sleep_until(wake).await;
                    }
                }
                while Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
            }
        }
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_rates() {
        let now = Instant::now();
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let e = OpenLoopSchedule::new(now, bad).unwrap_err().to_string();
            assert!(e.contains("expected a finite number"), "{e}");
        }
        assert!(matches!(
            OpenLoopSchedule::new(now, 2e9),
            Err(ScheduleError::TooFast(_))
        ));
    }

    #[test]
    fn intended_times_do_not_drift() {
        let now = Instant::now();
        let s = OpenLoopSchedule::new(now, 3.0).unwrap();
        assert_eq!(s.intended(0), now);
        assert_eq!(s.intended(3) - now, Duration::from_secs(1));
        let d = s.intended(3_000_000) - now;
        assert_eq!(d, Duration::from_secs(1_000_000));
        assert_eq!(s.count_within(Duration::from_millis(2500)), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_never_returns_before_the_deadline() {
        for pacing in [
            Pacing::TimerOnly,
            Pacing::Hybrid {
                spin_below: Duration::from_micros(200),
            },
        ] {
            let deadline = Instant::now() + Duration::from_millis(3);
            let woke = pacing.wait_until(deadline).await;
            assert!(woke >= deadline, "{}", pacing.name());
            let past = Instant::now() - Duration::from_millis(1);
            let woke = pacing.wait_until(past).await;
            assert!(woke >= past);
        }
    }
}
