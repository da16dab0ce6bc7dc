//! `rpc-daemon`: an SQLite issue-tracker daemon that many agents share over a Unix socket,
//! with its client and a direct (in-process) mode.
//!
//! Status: not built yet. This crate is reserved in the workspace layout and exports
//! nothing; the daemon, its protocol and its suites arrive with their own issue.
