//! Load shapes: plain values the suites compose, and the parsers for their command-line
//! forms. Every open-loop step runs warmup → reset → hold → measure → cooldown (see
//! [`crate::generator`]).

use std::time::Duration;

/// Why a shape could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A rate step is malformed.
    #[error("invalid step {step:?}: {expected}")]
    Step {
        /// The offending step text.
        step: String,
        /// What was expected.
        expected: String,
    },
    /// The steps are not strictly increasing.
    #[error("invalid steps {steps:?}: {step} does not exceed the step before it ({previous}); expected increasing rates like 500,1k,2k")]
    NotIncreasing {
        /// The whole list.
        steps: String,
        /// The step that is not larger.
        step: u64,
        /// The one before it.
        previous: u64,
    },
    /// A duration is malformed or out of range.
    #[error("invalid {what} {value:?}: {expected}")]
    Duration {
        /// Which duration (`hold`, `warmup`…).
        what: String,
        /// The text given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A count (workers, operations) is out of range.
    #[error("invalid {what} {value}: {expected}")]
    Count {
        /// Which count.
        what: String,
        /// The value given.
        value: u64,
        /// What was expected.
        expected: String,
    },
}

/// The highest rate a step may ask for, operations per second.
pub const MAX_RATE: u64 = 10_000_000;

/// Parses one rate: a whole number with an optional `k` suffix (`500`, `2k`, `1.5k`).
pub fn parse_rate(step: &str) -> Result<u64, ShapeError> {
    let bad = || ShapeError::Step {
        step: step.to_string(),
        expected: "expected a number with an optional k suffix, like 500 or 2k".into(),
    };
    let s = step.trim();
    let (num, mult) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1000.0),
        None => (s, 1.0),
    };
    if num.is_empty() || num.starts_with(['+', '-']) {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let rate = v * mult;
    if !rate.is_finite() || rate.fract() != 0.0 {
        return Err(bad());
    }
    if rate < 1.0 || rate > MAX_RATE as f64 {
        return Err(ShapeError::Step {
            step: step.to_string(),
            expected: format!("expected a rate from 1 to {MAX_RATE} operations per second"),
        });
    }
    Ok(rate as u64)
}

/// Parses a comma-separated, strictly increasing list of rates: `"500,1k,2k,5k"`.
pub fn parse_steps(list: &str) -> Result<Vec<u64>, ShapeError> {
    if list.trim().is_empty() {
        return Err(ShapeError::Step {
            step: list.to_string(),
            expected: "expected at least one rate, like 500,1k,2k".into(),
        });
    }
    let mut out: Vec<u64> = Vec::new();
    for part in list.split(',') {
        let rate = parse_rate(part)?;
        if let Some(&previous) = out.last() {
            if rate <= previous {
                return Err(ShapeError::NotIncreasing {
                    steps: list.to_string(),
                    step: rate,
                    previous,
                });
            }
        }
        out.push(rate);
    }
    Ok(out)
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (`500ms`, `3s`, `1.5m`).
/// `allow_zero` admits `0s` (a warmup or cooldown may be empty; a hold may not).
pub fn parse_duration(what: &str, text: &str, allow_zero: bool) -> Result<Duration, ShapeError> {
    let bad = |expected: &str| ShapeError::Duration {
        what: what.to_string(),
        value: text.to_string(),
        expected: expected.to_string(),
    };
    let s = text.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| bad("expected a number with a unit, like 500ms, 3s, 2m or 1h"))?;
    let (num, unit) = s.split_at(split);
    let factor = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad("expected a unit of ms, s, m or h, like 3s")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad("expected a number with a unit, like 500ms, 3s, 2m or 1h"))?;
    let secs = v * factor;
    if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !allow_zero) {
        return Err(bad(if allow_zero {
            "expected a duration of 0 or more"
        } else {
            "expected a duration above 0"
        }));
    }
    if secs > 7.0 * 86_400.0 {
        return Err(bad("expected at most 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The phases of one open-loop step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTiming {
    /// Load runs but nothing is kept (fills caches, queues, connection pools).
    pub warmup: Duration,
    /// Load runs and every operation scheduled in it is measured.
    pub hold: Duration,
    /// No load: the system drains before the next step.
    pub cooldown: Duration,
}

impl StepTiming {
    /// A timing from milliseconds, for suites that state their phases as constants. Unlike
    /// [`StepTiming::new`] it does not check that the hold is above zero: use `new` for
    /// values that come from input.
    pub fn from_millis(warmup_ms: u64, hold_ms: u64, cooldown_ms: u64) -> Self {
        StepTiming {
            warmup: Duration::from_millis(warmup_ms),
            hold: Duration::from_millis(hold_ms),
            cooldown: Duration::from_millis(cooldown_ms),
        }
    }

    /// Checks the hold is above zero.
    pub fn new(warmup: Duration, hold: Duration, cooldown: Duration) -> Result<Self, ShapeError> {
        if hold.is_zero() {
            return Err(ShapeError::Duration {
                what: "hold".into(),
                value: "0s".into(),
                expected: "expected a duration above 0".into(),
            });
        }
        Ok(StepTiming {
            warmup,
            hold,
            cooldown,
        })
    }
}

/// One phase of a phased run: a rate held for a duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Operations per second.
    pub rate_per_s: u64,
    /// How long.
    pub duration: Duration,
}

/// A load shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One open-loop rate for one step.
    Constant {
        /// Operations per second.
        rate_per_s: u64,
        /// Step phases.
        timing: StepTiming,
    },
    /// Increasing open-loop rates, one step each (what the max-RPS finder walks).
    Ramp {
        /// Rates, strictly increasing.
        rates: Vec<u64>,
        /// Phases of every step.
        timing: StepTiming,
    },
    /// Back-to-back phases with no warmup or cooldown between them, each measured on its own
    /// (a sustained run like x1000 → x2000 → x1000; a soak is the same with long phases).
    Phases(Vec<Phase>),
    /// N operations released at the same instant (a thundering herd).
    Burst {
        /// How many.
        ops: u64,
    },
    /// N workers in a loop, each waiting for its operation and then thinking.
    ClosedLoop {
        /// Concurrent workers.
        workers: u64,
        /// Pause after each operation.
        think: Duration,
        /// How long.
        duration: Duration,
    },
}

impl Shape {
    /// A soak: long phases; the same as [`Shape::Phases`], named for what it is for.
    pub fn soak(phases: Vec<Phase>) -> Shape {
        Shape::Phases(phases)
    }

    /// Whether the shape is open-loop (latency measured from intended start times).
    pub fn is_open_loop(&self) -> bool {
        !matches!(self, Shape::ClosedLoop { .. })
    }

    /// Checks counts and durations are usable.
    pub fn validate(&self) -> Result<(), ShapeError> {
        let count = |what: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(ShapeError::Count {
                    what: what.into(),
                    value,
                    expected: format!("expected 1 to {max}"),
                })
            } else {
                Ok(())
            }
        };
        match self {
            Shape::Constant { rate_per_s, .. } => count("rate", *rate_per_s, MAX_RATE),
            Shape::Ramp { rates, .. } => {
                if rates.is_empty() {
                    return Err(ShapeError::Step {
                        step: String::new(),
                        expected: "expected at least one rate".into(),
                    });
                }
                for w in rates.windows(2) {
                    if w[1] <= w[0] {
                        return Err(ShapeError::NotIncreasing {
                            steps: format!("{rates:?}"),
                            step: w[1],
                            previous: w[0],
                        });
                    }
                }
                rates.iter().try_for_each(|r| count("rate", *r, MAX_RATE))
            }
            Shape::Phases(phases) => {
                if phases.is_empty() {
                    return Err(ShapeError::Count {
                        what: "phases".into(),
                        value: 0,
                        expected: "expected at least one phase".into(),
                    });
                }
                for p in phases {
                    count("rate", p.rate_per_s, MAX_RATE)?;
                    if p.duration.is_zero() {
                        return Err(ShapeError::Duration {
                            what: "phase".into(),
                            value: "0s".into(),
                            expected: "expected a duration above 0".into(),
                        });
                    }
                }
                Ok(())
            }
            Shape::Burst { ops } => count("burst", *ops, 10_000_000),
            Shape::ClosedLoop {
                workers, duration, ..
            } => {
                count("workers", *workers, 100_000)?;
                if duration.is_zero() {
                    return Err(ShapeError::Duration {
                        what: "duration".into(),
                        value: "0s".into(),
                        expected: "expected a duration above 0".into(),
                    });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_with_k_suffix() {
        assert_eq!(
            parse_steps("500,1k,2k,5k").unwrap(),
            [500, 1000, 2000, 5000]
        );
        assert_eq!(parse_steps(" 1.5k , 3K").unwrap(), [1500, 3000]);
    }

    #[test]
    fn bad_steps_are_named() {
        let e = |s: &str| parse_steps(s).unwrap_err().to_string();
        assert_eq!(
            e(""),
            "invalid step \"\": expected at least one rate, like 500,1k,2k"
        );
        assert!(
            e("0").contains("invalid step \"0\": expected a rate from 1"),
            "{}",
            e("0")
        );
        assert_eq!(
            e("-5"),
            "invalid step \"-5\": expected a number with an optional k suffix, like 500 or 2k"
        );
        assert_eq!(
            e("1x"),
            "invalid step \"1x\": expected a number with an optional k suffix, like 500 or 2k"
        );
        assert!(e("2k,1k").contains("1000 does not exceed the step before it (2000)"));
        assert!(e("1k,1k").contains("does not exceed"));
        assert!(e("1,,2").contains("invalid step \"\""));
        assert!(e("0.5").contains("invalid step \"0.5\""));
        assert!(e("20000k").contains("expected a rate from 1 to"));
    }

    #[test]
    fn durations_parse_and_reject_zero_holds() {
        assert_eq!(
            parse_duration("hold", "3s", false).unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(
            parse_duration("warmup", "250ms", true).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("soak", "1.5m", false).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("cooldown", "0s", true).unwrap(),
            Duration::ZERO
        );
        let e = parse_duration("hold", "0s", false).unwrap_err().to_string();
        assert_eq!(e, "invalid hold \"0s\": expected a duration above 0");
        let e = parse_duration("hold", "-1s", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid hold \"-1s\""), "{e}");
        assert!(parse_duration("hold", "3", false).is_err());
        assert!(parse_duration("hold", "3d", false).is_err());
        assert!(StepTiming::new(Duration::ZERO, Duration::ZERO, Duration::ZERO).is_err());
    }

    #[test]
    fn shapes_validate() {
        assert!(Shape::Burst { ops: 0 }.validate().is_err());
        assert!(Shape::Phases(vec![]).validate().is_err());
        let ok = Shape::soak(vec![Phase {
            rate_per_s: 1000,
            duration: Duration::from_secs(5),
        }]);
        assert!(ok.validate().is_ok() && ok.is_open_loop());
        let closed = Shape::ClosedLoop {
            workers: 0,
            think: Duration::ZERO,
            duration: Duration::from_secs(1),
        };
        assert!(closed.validate().is_err() && !closed.is_open_loop());
    }
}
