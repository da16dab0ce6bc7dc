//! Suite `maxrps-sim`: the max-RPS finder against a simulated target whose capacity is
//! known exactly (4 servers × 1 ms = 4,000 ops/s). FAIL unless the answer lies between 90%
//! and 102% of the true capacity: this is how we know the finder finds the knee.

use std::sync::Arc;

use anyhow::Result;
use collector::finder::FinderConfig;
use collector::generator::GeneratorConfig;
use collector::sim::SimTarget;
use collector::slo::Slo;
use collector::{Metric, Status, SuiteResult, Verdict};

use super::common::settings;
use crate::maxrps::{finder_expected_s, run_finder, steps_text, to_result};
use crate::suites::{Plan, Profile, RunContext, Suite};

/// The suite.
pub struct MaxRpsSim;

const SERVERS: u64 = 4;
const SERVICE_US: u64 = 1_000;
/// The answer must lie within these shares of the true capacity.
const LOW: f64 = 0.90;
const HIGH: f64 = 1.02;

impl Suite for MaxRpsSim {
    fn name(&self) -> &'static str {
        "maxrps-sim"
    }

    fn description(&self) -> &'static str {
        "max-RPS finder against sim:servers=4,service_us=1000 (true capacity 4,000 ops/s): answer within 90-102%"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "steps {} · hold {} s · p99 ≤ {} ms · ±{}%",
                steps_text(&s.steps),
                s.timing.hold.as_secs_f64(),
                s.p99_ms,
                s.precision_pct
            ),
            expected_s: finder_expected_s(&s.steps, s.timing).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let target = Arc::new(SimTarget::new(SERVERS, SERVICE_US, None)?);
        let capacity = target.capacity_per_s();
        let cfg = FinderConfig {
            steps: s.steps,
            timing: s.timing,
            precision_pct: s.precision_pct,
            max_refine_steps: 8,
            slo: Slo {
                p99_ms: Some(s.p99_ms),
                ..Slo::default()
            },
        };
        let report = run_finder(target, &cfg, GeneratorConfig::default(), true)?;
        println!("{}", report.answer_line());
        let mut r = to_result(
            self.name(),
            &ctx.profile.to_string(),
            &self.plan(ctx.profile).scale,
            ctx.seed,
            &cfg,
            &report,
        );
        r.config
            .insert("true_capacity_per_s".into(), capacity.into());
        r.config.insert(
            "seed_use".into(),
            "none: the schedule and the simulator are deterministic".into(),
        );
        let mut failures = Vec::new();
        let mut doubts = Vec::new();
        if r.verdict.status != Status::Pass {
            doubts.extend(r.verdict.reasons.clone());
        }
        match report.rate() {
            Some(rate) => {
                let share = rate as f64 / capacity;
                r.metrics
                    .push(Metric::new("answer_pct_of_capacity", share * 100.0, "%").headline());
                if !(LOW..=HIGH).contains(&share) {
                    failures.push(format!(
                        "answer {rate}/s is {:.1}% of the true capacity {capacity:.0}/s: expected {:.0}% to {:.0}%",
                        share * 100.0,
                        LOW * 100.0,
                        HIGH * 100.0
                    ));
                }
            }
            None => failures.push("no step passed, so there is no answer to check".into()),
        }
        r.verdict = Verdict::from_checks(failures, doubts);
        Ok(r)
    }
}
