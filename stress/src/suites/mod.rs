//! The suite registry. Adding a suite is one module here and one line in [`SUITES`].

mod collector_overhead;
mod daemon_agents;
mod daemon_badinput;
mod daemon_batch;
pub(crate) mod daemon_common;
mod daemon_crash;
mod daemon_maxrps;
mod daemon_mixed;
mod daemon_overload;
mod daemon_soak;
mod daemon_timeouts;
mod distributed_sim;
mod herd;
mod herd_common;
mod herd_contention;
mod herd_faults;
mod herd_sweep;
mod http_peer;
mod maxrps_serve;
mod maxrps_sim;
mod multitier;
mod nats_jetstream;
mod timer;
mod usl_sim;
mod vector_100k;
mod vector_concurrent;
mod vector_peer;

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use collector::SuiteResult;
use serde::Serialize;

/// Every registered suite, in the order `cargo xtask stress` runs them.
pub static SUITES: &[&dyn Suite] = &[
    &timer::Timer,
    &maxrps_sim::MaxRpsSim,
    &maxrps_serve::MaxRpsServe,
    &distributed_sim::DistributedSim,
    &usl_sim::UslSim,
    &collector_overhead::CollectorOverhead,
    &daemon_timeouts::DaemonTimeouts,
    &daemon_crash::DaemonCrash,
    &daemon_agents::DaemonAgents,
    &daemon_maxrps::DaemonMaxRps,
    &daemon_overload::DaemonOverload,
    &daemon_mixed::DaemonMixed,
    &daemon_soak::DaemonSoak,
    &daemon_batch::DaemonBatch,
    &daemon_badinput::DaemonBadInput,
    &multitier::Multitier,
    &vector_concurrent::VectorConcurrent,
    &vector_100k::Vector100k,
    &vector_peer::VectorPeer,
    &herd::Herd,
    &herd_sweep::HerdSweep,
    &herd_contention::HerdContention,
    &herd_faults::HerdFaults,
    &http_peer::HttpPeer,
    &nats_jetstream::NatsJetStream,
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

/// The multi-threaded tokio runtime every suite drives its load on (one worker per core).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
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
