//! The suite registry. Suites live in family folders (`collector/`, `daemon/`, `vector/`,
//! `herd/`); a *suite file* implements [`Suite`] and may use its family's shared modules
//! (`common.rs`, `model.rs`: modules that implement no suite) and [`crate::harness`], never
//! another suite file. Adding a suite is one file in its family, one `mod` line in the
//! family's `mod.rs` and one line in [`SUITES`].

mod collector;
pub(crate) mod daemon;
mod herd;
mod vector;

use std::fmt;
use std::path::PathBuf;

use ::collector::SuiteResult;
use anyhow::{bail, Result};
use serde::Serialize;

/// Every registered suite, in the order `cargo xtask stress` runs them.
pub static SUITES: &[&dyn Suite] = &[
    &collector::timer::Timer,
    &collector::maxrps_sim::MaxRpsSim,
    &collector::maxrps_serve::MaxRpsServe,
    &collector::distributed_sim::DistributedSim,
    &collector::usl_sim::UslSim,
    &collector::collector_overhead::CollectorOverhead,
    &daemon::daemon_timeouts::DaemonTimeouts,
    &daemon::daemon_crash::DaemonCrash,
    &daemon::daemon_agents::DaemonAgents,
    &daemon::daemon_maxrps::DaemonMaxRps,
    &daemon::daemon_overload::DaemonOverload,
    &daemon::daemon_mixed::DaemonMixed,
    &daemon::daemon_soak::DaemonSoak,
    &daemon::daemon_batch::DaemonBatch,
    &daemon::daemon_badinput::DaemonBadInput,
    &vector::multitier::Multitier,
    &vector::vector_concurrent::VectorConcurrent,
    &vector::vector_100k::Vector100k,
    &vector::vector_peer::VectorPeer,
    &herd::herd::Herd,
    &herd::herd_sweep::HerdSweep,
    &herd::herd_contention::HerdContention,
    &herd::herd_faults::HerdFaults,
    &collector::http_peer::HttpPeer,
    &collector::nats_jetstream::NatsJetStream,
];

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The smallest scale that still exercises every path: what `cargo xtask test` runs.
    Smoke,
    /// Minutes for all suites together: the default trial.
    Quick,
    /// As long as each suite needs for the numbers its issue names.
    Full,
}

impl Profile {
    /// All profiles, smallest first.
    pub const ALL: [Profile; 3] = [Profile::Smoke, Profile::Quick, Profile::Full];
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Smoke => "smoke",
            Profile::Quick => "quick",
            Profile::Full => "full",
        })
    }
}

/// What a suite will do under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Scale in words, e.g. `3 rates x 2 pacings x 2 s`.
    pub scale: String,
    /// Expected wall time in seconds on the reference machine (2 cores).
    pub expected_s: u64,
}

/// What a suite gets to run with.
pub struct RunContext {
    /// The profile.
    pub profile: Profile,
    /// The seed every workload is generated from.
    pub seed: u64,
    /// A temp dir that is removed when the run ends; everything the suite writes goes here.
    #[allow(dead_code)] // the first suites keep everything in memory
    pub work_dir: PathBuf,
}

/// One stress suite.
pub trait Suite: Sync {
    /// The registered name, `[a-z0-9-]+`.
    fn name(&self) -> &'static str;
    /// One line for `list`.
    fn description(&self) -> &'static str;
    /// Scale and expected duration under `profile`.
    fn plan(&self, profile: Profile) -> Plan;
    /// Runs the suite; the verdict is in the result. An `Err` means the suite could not run.
    fn run(&self, ctx: &RunContext) -> Result<SuiteResult>;
}

/// A suite's entry in `stress list --json`.
#[derive(Debug, Serialize)]
pub struct CatalogEntry {
    /// Name.
    pub name: &'static str,
    /// Description.
    pub description: &'static str,
    /// Plan per profile.
    pub plans: Vec<(Profile, Plan)>,
}

/// Every suite with its plans.
pub fn catalog() -> Vec<CatalogEntry> {
    SUITES
        .iter()
        .map(|s| CatalogEntry {
            name: s.name(),
            description: s.description(),
            plans: Profile::ALL.iter().map(|p| (*p, s.plan(*p))).collect(),
        })
        .collect()
}

/// The catalog as a plain-text table.
pub fn catalog_table() -> String {
    let mut out = String::new();
    for s in SUITES {
        out.push_str(&format!("{:<20} {}\n", s.name(), s.description()));
        for p in Profile::ALL {
            let plan = s.plan(p);
            out.push_str(&format!(
                "{:<20}   {:<6} {} (~{} s)\n",
                "", p, plan.scale, plan.expected_s
            ));
        }
    }
    out
}

/// Looks a suite up by name; an unknown name is an error that lists the known ones.
pub fn find(name: &str) -> Result<&'static dyn Suite> {
    match SUITES.iter().find(|s| s.name() == name) {
        Some(s) => Ok(*s),
        None => bail!(
            "unknown suite {name:?}: expected one of {}",
            SUITES
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_file_safe() {
        for (i, s) in SUITES.iter().enumerate() {
            assert!(
                s.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                s.name()
            );
            assert!(
                SUITES[..i].iter().all(|o| o.name() != s.name()),
                "{} registered twice",
                s.name()
            );
            for p in Profile::ALL {
                assert!(s.plan(p).expected_s > 0, "{} {p}", s.name());
            }
        }
    }

    #[test]
    fn unknown_suite_lists_the_known_ones() {
        let e = find("nosuch").err().unwrap().to_string();
        assert!(e.contains("unknown suite \"nosuch\""), "{e}");
        assert!(e.contains("timer"), "{e}");
        assert_eq!(find("timer").unwrap().name(), "timer");
    }
}
