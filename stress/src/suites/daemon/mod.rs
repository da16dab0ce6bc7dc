//! The rpc-daemon suites: the issue-tracker daemon as a separate process under agents,
//! crashes, overload, timeouts, batches, bad input and a soak.

pub(crate) mod common;
pub(crate) mod model;

pub(crate) mod daemon_agents;
pub(crate) mod daemon_badinput;
pub(crate) mod daemon_batch;
pub(crate) mod daemon_crash;
pub(crate) mod daemon_maxrps;
pub(crate) mod daemon_mixed;
pub(crate) mod daemon_overload;
pub(crate) mod daemon_soak;
pub(crate) mod daemon_timeouts;
