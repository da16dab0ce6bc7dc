//! `vector-index`: an HNSW vector index over `hnsw_rs` that never panics under concurrent
//! adds, with measured recall.
//!
//! Status: not built yet. This crate is reserved in the workspace layout and exports
//! nothing; the index, its validation and its suites arrive with their own issue.
