//! `hub-leaf`: hub-and-leaf repository sync for a herd of agents, with NATS JetStream tip
//! broadcast.
//!
//! Status: not built yet. This crate is reserved in the workspace layout and exports
//! nothing; the hub, the leaves and the `herd` trial arrive with their own issue.
