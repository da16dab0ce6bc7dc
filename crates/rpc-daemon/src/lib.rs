//! `rpc-daemon`: an SQLite issue tracker that many agents share.
//!
//! - [`model`]: issues, dependencies, the operations and their replies.
//! - [`error`]: error replies with stable codes.
//! - [`proto`]: length-prefixed JSON frames, the hello handshake, request/response envelopes.
//! - [`store`]: the SQLite store: schema, id allocation, every operation, batches.
//! - [`server`]: the daemon: handshake, group commit, readers, deadlines, limits, shutdown.
//! - [`client`]: the client library: the daemon over its socket, or the file in direct mode.

pub mod client;
pub mod error;
pub mod model;
pub mod proto;
pub mod server;
pub mod store;
