//! The tip broadcast and the leaf's pull coalescer.
//!
//! - [`TipBroadcast`] (the hub): puts `{seq, hash}` under key [`TIP_KEY`] of a JetStream
//!   key-value bucket (history 1) each time the trunk moves.
//! - [`TipWatch`] (each leaf): a KV watch of that key, yielding each tip as it arrives,
//!   starting with the current one.
//! - [`PullCoalescer`] (each leaf, no NATS): decides per broadcast whether to start a pull,
//!   skip it (already have it) or fold it into the pull in flight, keeping at most one pull
//!   in flight and never leaving an announced tip unpulled.
//!
//! # What a watcher sees
//!
//! A watcher is an ordered push consumer: it receives every put made while it is
//! subscribed, in order. It does *not* receive every tip ever published: one that starts
//! late sees only the latest tip (the bucket keeps history 1), and if it falls behind far
//! enough for the consumer to be reset (a gap, a reconnect after a server restart), the
//! reset resumes from the oldest value still stored, which is the latest. So intermediate
//! tips may be coalesced by the watch itself; only the last one is guaranteed. The leaf
//! loses nothing by that, because a pull fetches every commit after its own sequence.

use serde::{Deserialize, Serialize};

/// The key of the trunk tip in the tip bucket.
pub const TIP_KEY: &str = "trunk";

/// The synchronisation primitives of the coalescer, so that loom can stand in for std
/// (the pattern of `collector::sync`).
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::{Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub(crate) use std::sync::{Mutex, MutexGuard};

    /// Locks `mutex`, recovering the data if a previous holder panicked (the coalescer's
    /// state is valid after any partial update: it is only counters and maxima).
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What can go wrong with the tip broadcast.
#[derive(Debug, thiserror::Error)]
pub enum TipError {
    /// A NATS operation failed.
    #[error("{op} of tip bucket {bucket:?}: {source}")]
    Nats {
        /// The operation (`open`, `publish`, `watch`).
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value under the tip key is not a tip.
    #[error("tip value at revision {revision} of bucket {bucket:?} is not a tip: {source}")]
    BadValue {
        /// The bucket.
        bucket: String,
        /// The KV revision of the value.
        revision: u64,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The bucket name is not valid.
    #[error("invalid tip bucket name {name:?}: letters, digits, `-` and `_` only")]
    InvalidBucket {
        /// The name.
        name: String,
    },
}

/// A tip as broadcast: the trunk's sequence number and head commit hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// The trunk's sequence number (the head commit's).
    pub seq: u64,
    /// The head commit's hash (lowercase hex blake3).
    pub hash: String,
}

/// A tip a watcher received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipSeen {
    /// The tip.
    pub tip: Tip,
    /// The KV revision of the put that carried it.
    pub revision: u64,
    /// How many newer values the server still had queued for this watcher when it sent this
    /// one (0 = this was the latest at the time).
    pub delta: u64,
}

#[cfg(not(loom))]
pub use nats_side::{TipBroadcast, TipWatch};

/// The NATS half (left out under `--cfg loom`, where `async-nats` does not build: tokio
/// leaves out `net` and `fs` under loom).
#[cfg(not(loom))]
mod nats_side {
    use super::{Tip, TipError, TipSeen, TIP_KEY};
    use async_nats::jetstream::kv;
    use bytes::Bytes;
    use futures::StreamExt as _;

    fn bucket_config(bucket: &str) -> kv::Config {
        kv::Config {
            bucket: bucket.to_string(),
            description: "hub-leaf trunk tip".to_string(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }

    async fn open_bucket(
        js: &async_nats::jetstream::Context,
        bucket: &str,
    ) -> Result<kv::Store, TipError> {
        if !crate::claims::is_bucket_name(bucket) {
            return Err(TipError::InvalidBucket {
                name: bucket.to_string(),
            });
        }
        crate::claims::open_or_create(js, bucket_config(bucket))
            .await
            .map_err(|source| TipError::Nats {
                op: "open",
                bucket: bucket.to_string(),
                source,
            })
    }

    /// The hub's side: publishes the trunk tip.
    #[derive(Debug, Clone)]
    pub struct TipBroadcast {
        kv: kv::Store,
        bucket: String,
    }

    impl TipBroadcast {
        /// Creates or opens the tip bucket `bucket` (history 1, file storage, no expiry).
        pub async fn open(
            js: &async_nats::jetstream::Context,
            bucket: &str,
        ) -> Result<TipBroadcast, TipError> {
            Ok(TipBroadcast {
                kv: open_bucket(js, bucket).await?,
                bucket: bucket.to_string(),
            })
        }

        /// Publishes the tip `{seq, hash}`; returns the KV revision of the put. The hub
        /// publishes from its single actor, in trunk order.
        pub async fn publish(&self, seq: u64, hash: &str) -> Result<u64, TipError> {
            let tip = Tip {
                seq,
                hash: hash.to_string(),
            };
            // A struct of an integer and a string always serialises.
            let value = Bytes::from(serde_json::to_vec(&tip).unwrap_or_default());
            self.kv
                .put(TIP_KEY, value)
                .await
                .map_err(|e| TipError::Nats {
                    op: "publish",
                    bucket: self.bucket.clone(),
                    source: Box::new(e),
                })
        }

        /// The tip currently stored, if any.
        pub async fn current(&self) -> Result<Option<Tip>, TipError> {
            let entry = self.kv.entry(TIP_KEY).await.map_err(|e| TipError::Nats {
                op: "read",
                bucket: self.bucket.clone(),
                source: Box::new(e),
            })?;
            match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    decode(&self.bucket, e.revision, &e.value).map(Some)
                }
                _ => Ok(None),
            }
        }
    }

    fn decode(bucket: &str, revision: u64, value: &[u8]) -> Result<Tip, TipError> {
        serde_json::from_slice(value).map_err(|source| TipError::BadValue {
            bucket: bucket.to_string(),
            revision,
            source,
        })
    }

    /// A leaf's side: a watch of the tip key.
    pub struct TipWatch {
        watch: kv::Watch,
        bucket: String,
    }

    impl std::fmt::Debug for TipWatch {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TipWatch")
                .field("bucket", &self.bucket)
                .finish_non_exhaustive()
        }
    }

    impl TipWatch {
        /// Creates or opens the tip bucket and watches its tip key. The first tip yielded is the
        /// current one (if any), then each new one.
        pub async fn open(
            js: &async_nats::jetstream::Context,
            bucket: &str,
        ) -> Result<TipWatch, TipError> {
            let kv = open_bucket(js, bucket).await?;
            let watch = kv
                .watch_with_history(TIP_KEY)
                .await
                .map_err(|e| TipError::Nats {
                    op: "watch",
                    bucket: bucket.to_string(),
                    source: Box::new(e),
                })?;
            Ok(TipWatch {
                watch,
                bucket: bucket.to_string(),
            })
        }

        /// The next tip. Waits until one arrives: callers bound it (`tokio::time::timeout`, or a
        /// `select!` with their shutdown). `None` when the watch ended; `Some(Err(..))` for an
        /// error, after which the watch goes on (e.g. a missed heartbeat while the server
        /// restarts: `async-nats` resubscribes by itself once reconnected). Deletes and purges of
        /// the key are skipped.
        pub async fn next(&mut self) -> Option<Result<TipSeen, TipError>> {
            loop {
                let entry = match self.watch.next().await? {
                    Ok(entry) => entry,
                    Err(e) => {
                        return Some(Err(TipError::Nats {
                            op: "watch",
                            bucket: self.bucket.clone(),
                            source: Box::new(e),
                        }))
                    }
                };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                return Some(
                    decode(&self.bucket, entry.revision, &entry.value).map(|tip| TipSeen {
                        tip,
                        revision: entry.revision,
                        delta: entry.delta,
                    }),
                );
            }
        }
    }
}

/// What a leaf does with one broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The leaf already has this tip: nothing to do (counted `skipped`).
    Skip,
    /// Start a pull now (counted `pulled`); call [`PullCoalescer::on_pull_done`] when it ends.
    Pull,
    /// A pull is in flight; it will be followed by one more pull if the leaf is still behind
    /// when it ends (counted `coalesced`).
    Coalesced,
}

/// The coalescer's counters.
///
/// Every broadcast is counted exactly once: `broadcasts == pulled + coalesced + skipped`.
/// In the trial summary, "broadcasts pulled" is `pulled + coalesced` (the broadcast was
/// served by a pull, started for it or already in flight) and "broadcasts skipped
/// (idempotent)" is `skipped`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Broadcasts received.
    pub broadcasts: u64,
    /// Broadcasts that started a pull.
    pub pulled: u64,
    /// Broadcasts the leaf already had.
    pub skipped: u64,
    /// Broadcasts that arrived while a pull was in flight.
    pub coalesced: u64,
    /// Pulls started: one per `pulled` broadcast plus one per follow-up pull
    /// ([`PullCoalescer::on_pull_done`] returning `true`).
    pub pulls_started: u64,
}

impl Counters {
    /// "broadcasts pulled" of the trial summary: `pulled + coalesced`.
    pub fn broadcasts_pulled(&self) -> u64 {
        self.pulled + self.coalesced
    }
}

#[derive(Debug, Default)]
struct State {
    local: u64,
    announced: u64,
    in_flight: bool,
    counters: Counters,
}

/// A leaf's pull coalescer: at most one pull in flight, broadcasts folded into it, none
/// left unpulled.
///
/// Invariants (checked by `tests/loom_coalescer.rs`): at most one pull in flight; every
/// broadcast counted exactly once; whenever no pull is in flight, `local >= announced`, so
/// once the last [`PullCoalescer::on_pull_done`] returns `false` every announced tip is
/// local.
#[derive(Debug)]
pub struct PullCoalescer {
    state: sync::Mutex<State>,
}

impl Default for PullCoalescer {
    fn default() -> PullCoalescer {
        PullCoalescer::new(0)
    }
}

impl PullCoalescer {
    /// A coalescer for a leaf whose local tip is `local_seq`.
    pub fn new(local_seq: u64) -> PullCoalescer {
        PullCoalescer {
            state: sync::Mutex::new(State {
                local: local_seq,
                announced: local_seq,
                ..State::default()
            }),
        }
    }

    /// A broadcast of tip `seq` arrived.
    pub fn on_broadcast(&self, seq: u64) -> Decision {
        let mut s = sync::lock(&self.state);
        s.counters.broadcasts += 1;
        s.announced = s.announced.max(seq);
        if seq <= s.local {
            s.counters.skipped += 1;
            Decision::Skip
        } else if s.in_flight {
            s.counters.coalesced += 1;
            Decision::Coalesced
        } else {
            s.in_flight = true;
            s.counters.pulled += 1;
            s.counters.pulls_started += 1;
            Decision::Pull
        }
    }

    /// The pull in flight finished with the leaf at `local_seq` (also after a failed pull,
    /// with the unchanged local tip). Returns `true` if another pull must start now (the
    /// leaf is still behind the highest announced tip); the pull then stays in flight. After
    /// a failed pull that means a retry: the caller bounds and paces its retries.
    pub fn on_pull_done(&self, local_seq: u64) -> bool {
        let mut s = sync::lock(&self.state);
        s.local = s.local.max(local_seq);
        if s.announced > s.local {
            s.in_flight = true;
            s.counters.pulls_started += 1;
            true
        } else {
            s.in_flight = false;
            false
        }
    }

    /// The local tip advanced to `seq` by the leaf's own commit (its push succeeded).
    pub fn on_local(&self, seq: u64) {
        let mut s = sync::lock(&self.state);
        s.local = s.local.max(seq);
        s.announced = s.announced.max(seq);
    }

    /// The leaf's local tip as the coalescer knows it.
    pub fn local(&self) -> u64 {
        sync::lock(&self.state).local
    }

    /// The highest tip announced (or reached locally).
    pub fn announced(&self) -> u64 {
        sync::lock(&self.state).announced
    }

    /// Is a pull in flight?
    pub fn in_flight(&self) -> bool {
        sync::lock(&self.state).in_flight
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        sync::lock(&self.state).counters
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn skip_pull_coalesce_and_follow_up() {
        let c = PullCoalescer::new(5);
        assert_eq!(c.on_broadcast(3), Decision::Skip);
        assert_eq!(c.on_broadcast(5), Decision::Skip);
        assert_eq!(c.on_broadcast(6), Decision::Pull);
        assert!(c.in_flight());
        assert_eq!(c.on_broadcast(7), Decision::Coalesced);
        assert_eq!(c.on_broadcast(8), Decision::Coalesced);
        // The pull brought 6 only: one follow-up pull for 8.
        assert!(c.on_pull_done(6));
        assert!(c.in_flight());
        assert!(!c.on_pull_done(8));
        assert!(!c.in_flight());
        assert_eq!(c.on_broadcast(8), Decision::Skip);
        let n = c.counters();
        assert_eq!(
            n,
            Counters {
                broadcasts: 6,
                pulled: 1,
                skipped: 3,
                coalesced: 2,
                pulls_started: 2,
            }
        );
        assert_eq!(n.broadcasts_pulled() + n.skipped, n.broadcasts);
    }

    #[test]
    fn a_local_commit_makes_its_broadcast_a_skip() {
        let c = PullCoalescer::default();
        c.on_local(1);
        assert_eq!(c.on_broadcast(1), Decision::Skip);
        assert_eq!(c.local(), 1);
        assert_eq!(c.announced(), 1);
    }

    #[test]
    fn a_failed_pull_asks_for_a_retry() {
        let c = PullCoalescer::new(0);
        assert_eq!(c.on_broadcast(2), Decision::Pull);
        assert!(c.on_pull_done(0), "still behind: pull again");
        assert!(!c.on_pull_done(2));
        assert_eq!(c.counters().pulls_started, 2);
    }

    #[test]
    fn a_pull_that_overshoots_covers_later_broadcasts() {
        let c = PullCoalescer::new(0);
        assert_eq!(c.on_broadcast(1), Decision::Pull);
        assert!(!c.on_pull_done(4));
        assert_eq!(c.on_broadcast(3), Decision::Skip);
        assert_eq!(c.on_broadcast(4), Decision::Skip);
        assert_eq!(c.on_broadcast(5), Decision::Pull);
    }
}
