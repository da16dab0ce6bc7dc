//! The `herd` trial's workload, deterministic from a seed: which tasks each agent runs, the
//! files each task writes and how long the agent thinks before it.
//!
//! As in the seed trial, slot `i` draws from its own generator seeded with `seed + i`, so the
//! same seed gives the same workload for every agent, whatever the timing. Each task writes
//! 1 to [`MAX_FILES_PER_TASK`] files of [`MIN_CONTENT`] to [`MAX_CONTENT`] bytes, and the agent
//! thinks for a random time around `think_ms` before it (0: a tight loop, the stress
//! amplifier).
//!
//! With `overlap` 0 every agent owns `slot-<i>/` and its tasks are its own, so the final
//! content of every file is known in advance ([`Workload::expected_files`]). With `overlap`
//! `p > 0`, each task is, with probability `p`, one of a shared pool of tasks writing under
//! `shared/`: agents then race for the same task ids (claims lost) and for the same files
//! (fork retries). A shared task's files depend only on the seed and its number, so whoever
//! wins it writes the same content.

use std::collections::BTreeMap;
use std::time::Duration;

/// Most files one task writes.
pub const MAX_FILES_PER_TASK: usize = 4;
/// Fewest bytes of a written file.
pub const MIN_CONTENT: usize = 64;
/// Most bytes of a written file.
pub const MAX_CONTENT: usize = 4096;
/// Files per slot (and in the shared directory) that tasks choose among.
pub const FILES_PER_DIR: usize = 8;
/// Most agents a trial takes.
pub const MAX_AGENTS: usize = 1024;
/// Most tasks per agent a trial takes.
pub const MAX_TASKS_PER_AGENT: usize = 100_000;
/// Longest mean think time accepted, in milliseconds.
pub const MAX_THINK_MS: u64 = 600_000;

/// The knobs of a workload (the trial's `HERD_*` variables).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadConfig {
    /// Agents (`HERD_AGENTS`).
    pub agents: usize,
    /// Tasks each agent runs (`HERD_TASKS_PER_AGENT`).
    pub tasks_per_agent: usize,
    /// Master seed (`HERD_SEED`); slot `i` uses `seed + i`.
    pub seed: u64,
    /// Mean think time before each task, in milliseconds (`HERD_THINK_MS`; 0 = tight loop).
    pub think_ms: u64,
    /// Fraction of tasks drawn from the shared pool (`HERD_OVERLAP`, 0 to 1).
    pub overlap: f64,
}

impl Default for WorkloadConfig {
    /// The seed trial's defaults: 16 agents × 30 tasks, seed 1, tight loop, disjoint slots.
    fn default() -> Self {
        WorkloadConfig {
            agents: 16,
            tasks_per_agent: 30,
            seed: 1,
            think_ms: 0,
            overlap: 0.0,
        }
    }
}

/// A value out of range, named with the range it must be in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} = {value} is out of range: expected {expected}")]
pub struct WorkloadError {
    /// The knob (its environment variable).
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// What it must be.
    pub expected: String,
}

fn out_of_range(name: &'static str, value: impl ToString, expected: String) -> WorkloadError {
    WorkloadError {
        name,
        value: value.to_string(),
        expected,
    }
}

impl WorkloadConfig {
    /// Checks every knob against its range.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !(1..=MAX_AGENTS).contains(&self.agents) {
            return Err(out_of_range(
                "HERD_AGENTS",
                self.agents,
                format!("1..={MAX_AGENTS}"),
            ));
        }
        if !(1..=MAX_TASKS_PER_AGENT).contains(&self.tasks_per_agent) {
            return Err(out_of_range(
                "HERD_TASKS_PER_AGENT",
                self.tasks_per_agent,
                format!("1..={MAX_TASKS_PER_AGENT}"),
            ));
        }
        if self.think_ms > MAX_THINK_MS {
            return Err(out_of_range(
                "HERD_THINK_MS",
                self.think_ms,
                format!("0..={MAX_THINK_MS}"),
            ));
        }
        if !(self.overlap.is_finite() && (0.0..=1.0).contains(&self.overlap)) {
            return Err(out_of_range(
                "HERD_OVERLAP",
                self.overlap,
                "a fraction from 0 to 1".to_string(),
            ));
        }
        Ok(())
    }
}

/// One file a task writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Repository path, `/`-separated.
    pub path: String,
    /// The bytes written.
    pub content: Vec<u8>,
}

/// One task of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The claim key: `slot-<i>/task-<j>` for an agent's own task, `shared/task-<k>` for a
    /// task of the shared pool.
    pub id: String,
    /// The agent's slot.
    pub slot: usize,
    /// The task's position in the slot's sequence.
    pub index: usize,
    /// `Some(k)` for the shared pool's task `k`.
    pub shared: Option<usize>,
    /// How long the agent thinks before the task.
    pub think: Duration,
    /// The files it writes (distinct paths, sorted).
    pub files: Vec<FileWrite>,
}

/// The whole workload of a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    config: WorkloadConfig,
    slots: Vec<Vec<Task>>,
}

/// Tasks in the shared pool: about one per `1 / overlap` draws of one agent, at least one.
fn shared_pool(config: &WorkloadConfig) -> usize {
    ((config.tasks_per_agent as f64 * config.overlap).round() as usize).max(1)
}

/// Printable content of `len` bytes that names where it comes from.
fn content(rng: &mut fastrand::Rng, label: &str) -> Vec<u8> {
    let len = rng.usize(MIN_CONTENT..=MAX_CONTENT);
    let mut out = format!("{label}\n").into_bytes();
    while out.len() < len {
        out.push(rng.alphanumeric() as u8);
    }
    out.truncate(len);
    out
}

/// 1..=MAX_FILES_PER_TASK distinct files under `dir`, sorted by path.
fn files(rng: &mut fastrand::Rng, dir: &str, label: &str) -> Vec<FileWrite> {
    let n = rng.usize(1..=MAX_FILES_PER_TASK);
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    while chosen.len() < n {
        let f = rng.usize(..FILES_PER_DIR);
        if !chosen.contains(&f) {
            chosen.push(f);
        }
    }
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|f| FileWrite {
            path: format!("{dir}/file-{f}.txt"),
            content: content(rng, &format!("{label} file-{f}")),
        })
        .collect()
}

/// Shared task `k`'s files: from the seed and `k` alone.
fn shared_task_files(seed: u64, k: usize) -> Vec<FileWrite> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5348_4152_4544_0000 ^ k as u64);
    files(&mut rng, "shared", &format!("shared task-{k}"))
}

impl Workload {
    /// Generates the workload of `config` (validated first).
    pub fn new(config: WorkloadConfig) -> Result<Workload, WorkloadError> {
        config.validate()?;
        let pool = shared_pool(&config);
        let slots = (0..config.agents)
            .map(|slot| {
                let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_add(slot as u64));
                (0..config.tasks_per_agent)
                    .map(|index| {
                        let think = if config.think_ms == 0 {
                            Duration::ZERO
                        } else {
                            // Uniform in [think/2, 3·think/2].
                            let half = config.think_ms / 2;
                            Duration::from_millis(half + rng.u64(0..=config.think_ms))
                        };
                        let shared = (config.overlap > 0.0 && rng.f64() < config.overlap)
                            .then(|| rng.usize(..pool));
                        match shared {
                            Some(k) => Task {
                                id: format!("shared/task-{k}"),
                                slot,
                                index,
                                shared,
                                think,
                                files: shared_task_files(config.seed, k),
                            },
                            None => Task {
                                id: format!("slot-{slot}/task-{index}"),
                                slot,
                                index,
                                shared,
                                think,
                                files: files(
                                    &mut rng,
                                    &format!("slot-{slot}"),
                                    &format!("slot-{slot} task-{index}"),
                                ),
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(Workload { config, slots })
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Slot `slot`'s tasks in order (empty for a slot that does not exist).
    pub fn tasks(&self, slot: usize) -> &[Task] {
        self.slots.get(slot).map_or(&[], Vec::as_slice)
    }

    /// Distinct task ids across all slots: what the hub's commit count must equal once every
    /// task is done (`agents × tasks` with disjoint slots).
    pub fn distinct_tasks(&self) -> usize {
        let mut ids: Vec<&str> = self.slots.iter().flatten().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// The final content of every file an agent's own tasks write: the last write in its
    /// slot's order (each slot owns its directory, so the order of commits across slots does
    /// not matter). Shared files are left out: their last writer depends on who won which
    /// claim when, and a shared task always writes the same content, so the check for them is
    /// that the content is one of their tasks' writes.
    pub fn expected_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for task in self.slots.iter().flatten().filter(|t| t.shared.is_none()) {
            for f in &task.files {
                out.insert(f.path.clone(), f.content.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(agents: usize, tasks: usize, seed: u64, overlap: f64) -> WorkloadConfig {
        WorkloadConfig {
            agents,
            tasks_per_agent: tasks,
            seed,
            think_ms: 0,
            overlap,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_workload_and_another_seed_another() {
        let a = Workload::new(config(4, 10, 7, 0.0)).unwrap();
        let b = Workload::new(config(4, 10, 7, 0.0)).unwrap();
        let c = Workload::new(config(4, 10, 8, 0.0)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.tasks(0), c.tasks(0));
    }

    #[test]
    fn slot_i_draws_from_seed_plus_i() {
        // Slot 1 of seed 7 is slot 0 of seed 8, but for its name.
        let a = Workload::new(config(2, 10, 7, 0.0)).unwrap();
        let b = Workload::new(config(1, 10, 8, 0.0)).unwrap();
        for (x, y) in a.tasks(1).iter().zip(b.tasks(0)) {
            assert_eq!(x.files.len(), y.files.len());
            for (fx, fy) in x.files.iter().zip(&y.files) {
                assert_eq!(fx.content.len(), fy.content.len());
                assert_eq!(fx.path.replace("slot-1", "slot-0"), fy.path);
            }
        }
    }

    #[test]
    fn disjoint_slots_write_only_their_own_directory_within_bounds() {
        let w = Workload::new(config(5, 20, 1, 0.0)).unwrap();
        assert_eq!(w.distinct_tasks(), 100);
        for slot in 0..5 {
            for t in w.tasks(slot) {
                assert_eq!(t.id, format!("slot-{slot}/task-{}", t.index));
                assert!(t.shared.is_none());
                assert!((1..=MAX_FILES_PER_TASK).contains(&t.files.len()));
                let mut paths: Vec<&str> = t.files.iter().map(|f| f.path.as_str()).collect();
                paths.dedup();
                assert_eq!(paths.len(), t.files.len(), "a path twice in {t:?}");
                for f in &t.files {
                    assert!(f.path.starts_with(&format!("slot-{slot}/")), "{}", f.path);
                    assert!((MIN_CONTENT..=MAX_CONTENT).contains(&f.content.len()));
                }
            }
        }
        // Every path's expected content is the last write of it in its slot.
        let expected = w.expected_files();
        let t = w.tasks(3).last().unwrap();
        for f in &t.files {
            assert_eq!(expected[&f.path], f.content);
        }
    }

    #[test]
    fn overlap_draws_shared_tasks_whose_content_does_not_depend_on_the_agent() {
        let w = Workload::new(config(8, 40, 3, 0.5)).unwrap();
        let shared: Vec<&Task> = (0..8)
            .flat_map(|s| w.tasks(s))
            .filter(|t| t.shared.is_some())
            .collect();
        // About half of 320: far from 0 and from 320.
        assert!((100..=220).contains(&shared.len()), "{}", shared.len());
        for t in &shared {
            let k = t.shared.unwrap();
            assert_eq!(t.id, format!("shared/task-{k}"));
            assert_eq!(t.files, shared_task_files(3, k));
            assert!(t.files.iter().all(|f| f.path.starts_with("shared/")));
        }
        assert!(
            w.distinct_tasks() < 320,
            "shared tasks repeat across agents"
        );
        assert!(w.expected_files().keys().all(|p| p.starts_with("slot-")));
    }

    #[test]
    fn think_time_is_zero_in_a_tight_loop_and_around_the_mean_otherwise() {
        let w = Workload::new(config(1, 50, 1, 0.0)).unwrap();
        assert!(w.tasks(0).iter().all(|t| t.think.is_zero()));
        let w = Workload::new(WorkloadConfig {
            think_ms: 100,
            ..config(1, 200, 1, 0.0)
        })
        .unwrap();
        let ms: Vec<u128> = w.tasks(0).iter().map(|t| t.think.as_millis()).collect();
        assert!(ms.iter().all(|&m| (50..=150).contains(&m)), "{ms:?}");
        assert!(ms.iter().min() != ms.iter().max(), "not randomized");
    }

    #[test]
    fn every_knob_out_of_range_is_named() {
        let bad = [
            (config(0, 1, 1, 0.0), "HERD_AGENTS"),
            (config(MAX_AGENTS + 1, 1, 1, 0.0), "HERD_AGENTS"),
            (config(1, 0, 1, 0.0), "HERD_TASKS_PER_AGENT"),
            (config(1, 1, 1, 1.5), "HERD_OVERLAP"),
            (config(1, 1, 1, f64::NAN), "HERD_OVERLAP"),
            (
                WorkloadConfig {
                    think_ms: MAX_THINK_MS + 1,
                    ..config(1, 1, 1, 0.0)
                },
                "HERD_THINK_MS",
            ),
        ];
        for (c, name) in bad {
            let e = Workload::new(c).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains(name), "{e}");
        }
        assert_eq!(
            Workload::new(WorkloadConfig::default())
                .unwrap()
                .distinct_tasks(),
            480
        );
    }
}
