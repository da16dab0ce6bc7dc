//! The vector-index suites: recall and latency at 100k, concurrent mixed operations, the
//! multi-tier scenarios of the original system, and the index beside its peers.

pub(crate) mod common;

pub(crate) mod multitier;
pub(crate) mod vector_100k;
pub(crate) mod vector_concurrent;
pub(crate) mod vector_peer;
