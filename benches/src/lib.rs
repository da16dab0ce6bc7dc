//! Cross-crate criterion benchmarks (daemon vs direct, end-to-end paths).
//!
//! Status: no cross-crate benchmark exists yet; each lands with the crates it spans.
//! Per-crate benchmarks live in each crate's own `benches/` directory, and
//! `cargo xtask bench` runs all of them.
