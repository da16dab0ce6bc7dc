//! `distributed`: one max-RPS finder over many generator processes and machines. Workers
//! (`stress worker`) join a coordinator (`stress maxrps --distributed URL --workers N`)
//! through NATS; each step's rate is split across them ([`split`]), they start on one
//! instant (each told it in its own clock, the offset measured at join: [`clock`]), run
//! their share open-loop against the target, and send back their step's HdrHistograms;
//! the coordinator merges them — counts add, so the merged percentiles are those of every
//! sample in one histogram — and judges the step as a single generator's ([`judge`]).
//!
//! Why NATS: every hub-leaf trial already starts a `nats-server`, a real cluster is one
//! `NATS_URL` away, and request-reply with "no responders" tells a gone worker at once.
//!
//! - [`protocol`]: the messages, versioned and bounded.
//! - [`split`]: the rate split with caps; in-process targets (`sim:`) as one system.
//! - [`clock`]: clock offsets from probes.
//! - [`judge`]: the pure merge and verdict, worker checks included; the merge check.
//! - [`worker`]: the worker loop; [`coordinator`]: joining, steps, the distributed finder.
//! - [`hlog`]: the merged interval log with each worker's intervals beside.

pub mod clock;
pub mod coordinator;
pub mod hlog;
pub mod judge;
pub mod protocol;
pub mod split;
pub mod worker;
