//! The hub-leaf suites: the herd of agents syncing through a hub over NATS JetStream, its
//! sweep over herd sizes, contention and faults.

pub(crate) mod common;

// Named after its suite, `herd`, like every suite file.
#[allow(clippy::module_inception)]
pub(crate) mod herd;
pub(crate) mod herd_contention;
pub(crate) mod herd_faults;
pub(crate) mod herd_sweep;
