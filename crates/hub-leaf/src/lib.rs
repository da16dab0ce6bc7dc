//! `hub-leaf`: hub-and-leaf repository sync for a herd of agents, with NATS JetStream tip
//! broadcast.
//!
//! The pieces, bottom up:
//!
//! - [`repo`]: the repository model, one SQLite file per repository with exactly one writer:
//!   content-addressed blobs, commits with sequence numbers and manifest changes, the trunk
//!   tip; idempotent apply, compare-and-swap for the hub, bounded range pulls.
//! - [`nats`]: the `nats-server -js` a trial starts on a free loopback port (or `NATS_URL`),
//!   killed when its owner ends, even on panic.
//! - [`claims`]: task claims won or lost atomically in a JetStream key-value bucket, with
//!   fencing tokens and expiry.
//! - [`claims`] also holds [`claims::DoneMarks`], the tasks marked done at Close.
//! - [`tip`]: the tip broadcast (a key-value watch) and the leaf's pull coalescer.
//! - [`proto`]: the hub's wire protocol (NATS request-reply, JSON), and why NATS.
//! - [`hub`]: the trunk's one writer: compare-and-swap pushes, fork replies and fork grants,
//!   fencing, bounded pulls, the tip broadcast.
//! - [`leaf`]: one agent: replica, sparse worktree, Open → Claim → Commit → Close, coalesced
//!   broadcast pulls, drain.
//! - [`herd`]: the `herd` trial (one hub, N leaves, faults) with its summary and checks; the
//!   `herd` binary is its command line.
//! - [`workload`]: the `herd` trial's tasks, files and think times, deterministic from a seed.
//! - [`telemetry`]: the `tracing` subscriber, exporting spans over OTLP/HTTP when configured.

pub mod claims;
pub mod herd;
pub mod hub;
pub mod leaf;
pub mod nats;
pub mod proto;
pub mod repo;
pub mod telemetry;
pub mod tip;
pub mod workload;
