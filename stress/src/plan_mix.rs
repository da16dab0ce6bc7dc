//! A plan's weighted scenario mix as one collector [`Target`], so the open-loop generator,
//! the finder, the recorder and the interval log drive a mix exactly as they drive one
//! target.
//!
//! - **Actions**: one per scenario (its name), then marks. An operation is one run of a
//!   scenario: its steps in order, each a call to one of the plan's targets; the
//!   operation's latency runs from its intended start to the end of its last step, and its
//!   error is the first failing step's (kind `STEP.KIND` in a scenario of several steps,
//!   the bare kind in a one-step scenario).
//! - **Marks** ([`Target::mark_actions`]): in a scenario of several steps, `SCENARIO/STEP`
//!   is the time from the intended start to the end of that step (how far into the run
//!   each step ends); a step's target's own marks (a JetStream ack) come through as
//!   `SCENARIO/STEP/MARK` (`SCENARIO/MARK` in a one-step scenario).
//! - **Choice**: operation `seq` runs scenario `i` with probability `weight_i / Σweight`,
//!   drawn from `(seed, seq)` alone, so a seed replays the same sequence of scenarios
//!   whatever the timing. A step's action is fixed in the plan, or its target's own
//!   [`Target::pick`] of `seq`.
//! - **Backlog**: the sum of the targets' backlogs, if any target reports one.

use std::sync::Arc;

use anyhow::{bail, Result};
use collector::target::{BoxFuture, Mark, OpError, Target};

/// One step of a resolved scenario.
#[derive(Debug, Clone)]
pub struct MixStep {
    /// The step's name (unique in its scenario).
    pub name: String,
    /// Index of its target in [`MixTarget::new`]'s `targets`.
    pub target: usize,
    /// The target's action, or `None` for the target's own pick.
    pub action: Option<usize>,
}

/// One resolved scenario.
#[derive(Debug, Clone)]
pub struct MixScenario {
    /// Its name: the recorded action.
    pub name: String,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// At least one step.
    pub steps: Vec<MixStep>,
}

/// Where one step's marks go: its own end mark and its target's marks.
struct StepMarks {
    end: Option<usize>,
    /// (the target's mark action, ours)
    inner: Vec<(usize, usize)>,
}

/// The mix as a target. See the module doc.
pub struct MixTarget {
    targets: Vec<Arc<dyn Target>>,
    scenarios: Vec<MixScenario>,
    marks: Vec<Vec<StepMarks>>,
    actions: Vec<String>,
    cumulative: Vec<u64>,
    seed: u64,
    describe: String,
}

impl MixTarget {
    /// A mix of `scenarios` over `targets`; `names` are the targets' plan names (for
    /// messages). Every index must be in range and every scenario well-formed.
    pub fn new(
        targets: Vec<Arc<dyn Target>>,
        names: &[String],
        scenarios: Vec<MixScenario>,
        seed: u64,
    ) -> Result<MixTarget> {
        if scenarios.is_empty() {
            bail!("invalid scenario mix: expected at least one scenario");
        }
        let mut actions: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
        let mut marks = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for s in &scenarios {
            if s.weight == 0 || s.steps.is_empty() {
                bail!(
                    "invalid scenario {:?}: expected a weight of at least 1 and at least one step",
                    s.name
                );
            }
            total += u64::from(s.weight);
            cumulative.push(total);
            let many = s.steps.len() > 1;
            let mut per_step = Vec::new();
            for step in &s.steps {
                let Some(t) = targets.get(step.target) else {
                    bail!(
                        "invalid step {:?} of scenario {:?}: no such target",
                        step.name,
                        s.name
                    );
                };
                let prefix = if many {
                    format!("{}/{}", s.name, step.name)
                } else {
                    s.name.clone()
                };
                let end = many.then(|| {
                    actions.push(prefix.clone());
                    actions.len() - 1
                });
                let inner_names = t.actions();
                let mut inner = Vec::new();
                for m in t.mark_actions() {
                    let mark_name = inner_names.get(m).cloned().unwrap_or_else(|| m.to_string());
                    actions.push(format!("{prefix}/{mark_name}"));
                    inner.push((m, actions.len() - 1));
                }
                per_step.push(StepMarks { end, inner });
            }
            marks.push(per_step);
        }
        let describe = scenarios
            .iter()
            .map(|s| {
                let steps: Vec<String> = s
                    .steps
                    .iter()
                    .map(|st| names.get(st.target).cloned().unwrap_or_default())
                    .collect();
                format!("{} (weight {}) → {}", s.name, s.weight, steps.join(" → "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(MixTarget {
            targets,
            scenarios,
            marks,
            actions,
            cumulative,
            seed,
            describe: format!("mix: {describe}"),
        })
    }

    async fn run(&self, scenario: usize, seq: u64) -> Result<Vec<Mark>, OpError> {
        let Some(s) = self.scenarios.get(scenario) else {
            return Err(OpError::new(
                "invalid_action",
                format!("no scenario {scenario}"),
            ));
        };
        let many = s.steps.len() > 1;
        let mut out = Vec::new();
        for (i, step) in s.steps.iter().enumerate() {
            let target = &self.targets[step.target];
            let action = step.action.unwrap_or_else(|| target.pick(seq));
            let inner = target.call_marked(action, seq).await.map_err(|e| {
                if many {
                    OpError::new(format!("{}.{}", step.name, e.kind), e.message)
                } else {
                    e
                }
            })?;
            let m = &self.marks[scenario][i];
            for mark in inner {
                if let Some((_, ours)) = m.inner.iter().find(|(theirs, _)| *theirs == mark.action) {
                    out.push(Mark {
                        action: *ours,
                        at: mark.at,
                    });
                }
            }
            if let Some(end) = m.end {
                out.push(Mark {
                    action: end,
                    at: tokio::time::Instant::now(),
                });
            }
        }
        Ok(out)
    }
}

impl Target for MixTarget {
    fn actions(&self) -> Vec<String> {
        self.actions.clone()
    }

    fn pick(&self, seq: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1).max(1);
        let r = targets::template::rand_of(self.seed ^ 0x6d69_785f_7069_636b, seq) % total;
        let i = self.cumulative.partition_point(|&c| c <= r);
        i.min(self.scenarios.len().saturating_sub(1))
    }

    fn call(&self, action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(async move { self.run(action, seq).await.map(|_| ()) })
    }

    fn mark_actions(&self) -> Vec<usize> {
        (self.scenarios.len()..self.actions.len()).collect()
    }

    fn call_marked(&self, action: usize, seq: u64) -> BoxFuture<'_, Result<Vec<Mark>, OpError>> {
        Box::pin(self.run(action, seq))
    }

    fn pending(&self) -> Option<u64> {
        self.targets
            .iter()
            .filter_map(|t| t.pending())
            .fold(None, |acc, p| Some(acc.unwrap_or(0) + p))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::target::NoopTarget;

    /// Fails every call of action 1 with kind `boom`.
    struct Picky;
    impl Target for Picky {
        fn actions(&self) -> Vec<String> {
            vec!["good".into(), "bad".into(), "acked".into()]
        }
        fn call(&self, action: usize, _seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
            Box::pin(async move {
                if action == 1 {
                    Err(OpError::new("boom", "bad action"))
                } else {
                    Ok(())
                }
            })
        }
        fn mark_actions(&self) -> Vec<usize> {
            vec![2]
        }
        fn call_marked(
            &self,
            action: usize,
            seq: u64,
        ) -> BoxFuture<'_, Result<Vec<Mark>, OpError>> {
            let call = self.call(action, seq);
            Box::pin(async move {
                call.await?;
                Ok(vec![Mark {
                    action: 2,
                    at: tokio::time::Instant::now(),
                }])
            })
        }
        fn pending(&self) -> Option<u64> {
            Some(5)
        }
        fn describe(&self) -> String {
            "picky".into()
        }
    }

    fn step(name: &str, target: usize, action: Option<usize>) -> MixStep {
        MixStep {
            name: name.into(),
            target,
            action,
        }
    }

    fn mix() -> MixTarget {
        let targets: Vec<Arc<dyn Target>> = vec![Arc::new(NoopTarget), Arc::new(Picky)];
        let names = ["noop".to_string(), "picky".to_string()];
        MixTarget::new(
            targets,
            &names,
            vec![
                MixScenario {
                    name: "one".into(),
                    weight: 3,
                    steps: vec![step("a", 0, None)],
                },
                MixScenario {
                    name: "two".into(),
                    weight: 1,
                    steps: vec![step("a", 0, None), step("b", 1, Some(0))],
                },
                MixScenario {
                    name: "fails".into(),
                    weight: 1,
                    steps: vec![step("a", 0, None), step("b", 1, Some(1))],
                },
            ],
            9,
        )
        .unwrap()
    }

    #[test]
    fn actions_are_scenarios_then_marks() {
        let m = mix();
        assert_eq!(
            m.actions(),
            [
                "one",
                "two",
                "fails",
                "two/a",
                "two/b",
                "two/b/acked",
                "fails/a",
                "fails/b",
                "fails/b/acked"
            ]
        );
        assert_eq!(m.mark_actions(), (3..9).collect::<Vec<_>>());
        assert_eq!(m.pending(), Some(5));
    }

    #[test]
    fn the_pick_follows_the_weights_and_the_seed() {
        let m = mix();
        let mut counts = [0u64; 3];
        for seq in 0..50_000 {
            counts[m.pick(seq)] += 1;
        }
        // 3:1:1 → 60%, 20%, 20%, within 2 points on 50,000 draws.
        let share = |i: usize| counts[i] as f64 / 50_000.0;
        assert!((share(0) - 0.6).abs() < 0.02, "{counts:?}");
        assert!((share(1) - 0.2).abs() < 0.02, "{counts:?}");
        let again: Vec<usize> = (0..100).map(|s| mix().pick(s)).collect();
        assert_eq!(again, (0..100).map(|s| m.pick(s)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn steps_run_in_order_and_the_first_failure_names_its_step() {
        let m = mix();
        let marks = m.call_marked(1, 0).await.unwrap();
        let names: Vec<usize> = marks.iter().map(|k| k.action).collect();
        assert_eq!(names, [3, 5, 4], "end of a, b's ack, end of b");
        let e = m.call_marked(2, 0).await.unwrap_err();
        assert_eq!(e.kind, "b.boom");
        assert!(m.call_marked(1, 0).await.is_ok());
        assert!(m.call(99, 0).await.is_err());
    }

    #[test]
    fn a_bad_mix_is_refused() {
        let targets: Vec<Arc<dyn Target>> = vec![Arc::new(NoopTarget)];
        let names = ["noop".to_string()];
        let bad = |scenarios| MixTarget::new(targets.clone(), &names, scenarios, 1).is_err();
        assert!(bad(vec![]));
        assert!(bad(vec![MixScenario {
            name: "w0".into(),
            weight: 0,
            steps: vec![step("a", 0, None)],
        }]));
        assert!(bad(vec![MixScenario {
            name: "far".into(),
            weight: 1,
            steps: vec![step("a", 3, None)],
        }]));
    }
}
