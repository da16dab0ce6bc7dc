//! The synchronisation primitives of the collector's own shared state, imported from one
//! place so that loom can stand in for std (the pattern tokio uses).
//!
//! Under `--cfg loom` this module re-exports `loom::sync`, so a loom model explores every
//! interleaving of the code that uses it; otherwise it re-exports `std::sync`. Code in this
//! crate takes its `Mutex` and atomics from here, never from `std::sync` directly.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

/// Locks `mutex`, recovering the data if a previous holder panicked.
///
/// The data guarded in this crate (counters and histograms) is valid after any partial
/// update, so poisoning carries no information worth a panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
