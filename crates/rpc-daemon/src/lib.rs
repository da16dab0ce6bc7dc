//! `rpc-daemon`: an SQLite issue tracker that many agents share.
//!
//! - [`model`]: issues, dependencies, the operations and their replies.
//! - [`error`]: error replies with stable codes.
//! - [`proto`]: length-prefixed JSON frames, the hello handshake, request/response envelopes.
//! - [`store`]: the SQLite store: schema, id allocation, every operation, batches.

pub mod error;
pub mod model;
pub mod proto;
pub mod store;
