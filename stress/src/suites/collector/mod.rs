//! The collector's own suites: the timer, the max-RPS finder against simulated and served targets,
//! distributed load, the USL fit, the collector's overhead, and the collector beside its peers
//! (wrk against nginx, NATS JetStream).

pub(crate) mod common;

pub(crate) mod collector_overhead;
pub(crate) mod distributed_sim;
pub(crate) mod http_peer;
pub(crate) mod maxrps_serve;
pub(crate) mod maxrps_sim;
pub(crate) mod nats_jetstream;
pub(crate) mod timer;
pub(crate) mod usl_sim;
