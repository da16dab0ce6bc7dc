//! Task claims in a JetStream key-value bucket, with fencing tokens and expiry.
//!
//! One key per task. A claim is won by a KV *create* (an append with "expected last
//! revision of this key = 0"), which the server serialises, so among leaves racing for one
//! task exactly one wins; the others see [`Claims::claim`] return `Ok(None)`.
//!
//! # Tokens and refresh
//!
//! A won claim carries two numbers:
//!
//! - `token`, the **fencing token**: the KV revision at which the claim was won. Revisions
//!   are stream sequence numbers, so a later claim of the same task (after expiry or
//!   release, by anyone, including the same holder) always has a larger token. The token
//!   does **not** change on refresh: the refreshed value records it, so the holder can push
//!   with the same token for as long as it keeps the claim alive.
//! - `revision`: the KV revision of the holder's latest write of the key, what the next
//!   refresh or release must find there (a compare-and-swap).
//!
//! [`Claims::check`] (the hub's fencing check before it accepts a push) accepts exactly when
//! the key's current value is a live put by `holder` recording `token`, written less than
//! the TTL ago. So it accepts the holder's token across any number of refreshes, and
//! rejects anyone else's token, a token of an earlier claim of the same holder, and any
//! token once the claim expired (whether or not the server has removed the value yet).
//!
//! # Expiry
//!
//! nats-server 2.9 has no per-key TTL, so the bucket's `max_age` is the claim TTL: the
//! server removes a value `ttl` after it was written. A holder keeps its claim by
//! refreshing it well within the TTL (each refresh is a new write, so its age restarts).
//! When a holder dies, its claim's value ages out and the task can be claimed again.
//!
//! A caveat inherited from the KV create of `async-nats`: if the acknowledgement of a
//! winning create is lost (a timeout, a server restart at that instant), the create is
//! reported as lost although the value is ours; nobody can claim the task until the value
//! ages out, after which it is claimable again. A delay, never two holders.

// Left out under `--cfg loom` (the loom models cover the coalescer only): `async-nats`
// does not build there, tokio leaving out `net` and `fs` under loom.
#![cfg(not(loom))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The longest task key accepted.
pub const MAX_KEY_LEN: usize = 256;

/// The longest holder name accepted.
pub const MAX_HOLDER_LEN: usize = 256;

/// The shortest TTL accepted (the server's expiry timer is not finer than this).
pub const MIN_TTL: Duration = Duration::from_millis(500);

/// What can go wrong with claims.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The task name is not a valid key.
    #[error("invalid task key {key:?}: {why}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why it is invalid.
        why: &'static str,
    },
    /// The holder name is empty or too long.
    #[error("invalid holder {holder:?}: must be 1..={MAX_HOLDER_LEN} bytes")]
    InvalidHolder {
        /// The holder name.
        holder: String,
    },
    /// The bucket name is not valid.
    #[error("invalid claims bucket name {name:?}: letters, digits, `-` and `_` only")]
    InvalidBucket {
        /// The name.
        name: String,
    },
    /// The TTL is below [`MIN_TTL`].
    #[error("claim ttl {ttl:?} is below the minimum {MIN_TTL:?}")]
    InvalidTtl {
        /// The TTL asked for.
        ttl: Duration,
    },
    /// The bucket exists with another TTL.
    #[error(
        "claims bucket {name:?} exists with max_age {existing:?}, not the requested {requested:?}"
    )]
    TtlMismatch {
        /// The bucket.
        name: String,
        /// Its max_age.
        existing: Duration,
        /// The TTL asked for.
        requested: Duration,
    },
    /// The claim was lost: it expired, or another holder has the task now.
    #[error("claim of task {task:?} by {holder:?} (token {token}) is lost: expired or taken")]
    Lost {
        /// The task.
        task: String,
        /// The holder that lost it.
        holder: String,
        /// Its token.
        token: u64,
    },
    /// A value in the bucket is not a claim.
    #[error("value of task {task:?} in the claims bucket is not a claim: {source}")]
    BadValue {
        /// The task.
        task: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A NATS operation failed.
    #[error("{op} of {what:?}: {source}")]
    Nats {
        /// The operation (`claim`, `refresh`, `check`, `release`, `open bucket`).
        op: &'static str,
        /// The task or bucket.
        what: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A won claim. See the module docs for `token` versus `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The task (the KV key).
    pub task: String,
    /// Who holds it.
    pub holder: String,
    /// The fencing token: the revision at which the claim was won; stable across refreshes.
    pub token: u64,
    /// The revision of the holder's latest write of the key (the claim or last refresh).
    pub revision: u64,
}

/// The value stored under a task key.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimValue {
    holder: String,
    /// The fencing token; absent in the first write, whose own revision is the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
}

/// The claims bucket.
#[derive(Debug, Clone)]
pub struct Claims {
    kv: kv::Store,
    ttl: Duration,
}

impl Claims {
    /// Creates or opens bucket `name` with `max_age = ttl` (2.9 has no per-key TTL),
    /// history 1, file storage. An existing bucket with another `max_age` is an error.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        name: &str,
        ttl: Duration,
    ) -> Result<Claims, ClaimError> {
        if ttl < MIN_TTL {
            return Err(ClaimError::InvalidTtl { ttl });
        }
        let kv = open_bucket(js, name, "hub-leaf task claims", ttl).await?;
        let existing = kv.stream.cached_info().config.max_age;
        if existing != ttl {
            return Err(ClaimError::TtlMismatch {
                name: name.to_string(),
                existing,
                requested: ttl,
            });
        }
        Ok(Claims { kv, ttl })
    }

    /// The claim TTL (the bucket's `max_age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Tries to claim `task` for `holder`. Atomic across leaves: exactly one concurrent
    /// claimant wins. `Ok(Some(claim))` when won, `Ok(None)` when someone holds it.
    pub async fn claim(&self, task: &str, holder: &str) -> Result<Option<Claim>, ClaimError> {
        validate_key(task)?;
        validate_holder(holder)?;
        let value = encode(&ClaimValue {
            holder: holder.to_string(),
            token: None,
        });
        match self.kv.create(task, value).await {
            Ok(revision) => Ok(Some(Claim {
                task: task.to_string(),
                holder: holder.to_string(),
                token: revision,
                revision,
            })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats_err("claim", task, e)),
        }
    }

    /// Refreshes `claim` (a compare-and-swap on its last revision), restarting its TTL.
    /// Returns the claim with its new `revision` (the `token` is unchanged), or
    /// [`ClaimError::Lost`] if it expired or was taken.
    pub async fn refresh(&self, claim: &Claim) -> Result<Claim, ClaimError> {
        validate_key(&claim.task)?;
        let value = encode(&ClaimValue {
            holder: claim.holder.clone(),
            token: Some(claim.token),
        });
        match self.kv.update(&claim.task, value, claim.revision).await {
            Ok(revision) => Ok(Claim {
                revision,
                ..claim.clone()
            }),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(lost(claim)),
            Err(e) => Err(nats_err("refresh", &claim.task, e)),
        }
    }

    /// Is `token` the current, unexpired claim of `task` by `holder`? The hub's fencing check
    /// before accepting a push.
    pub async fn check(&self, task: &str, holder: &str, token: u64) -> Result<bool, ClaimError> {
        Ok(self.live_until(task, holder, token).await?.is_some())
    }

    /// [`Claims::check`] with the answer's lifetime: `Some(t)` when `token` is the current
    /// claim of `task` by `holder`, which nobody else can win before `t` (its last write plus
    /// the TTL) unless the holder releases it; `None` otherwise. The answer holds only until
    /// `t`, and only while the holder has not released the claim: whoever relies on it
    /// later must bound its age (the hub trusts it for less than one TTL).
    pub async fn live_until(
        &self,
        task: &str,
        holder: &str,
        token: u64,
    ) -> Result<Option<SystemTime>, ClaimError> {
        validate_key(task)?;
        let entry = match self.kv.entry(task).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(None),
            Err(e) => return Err(nats_err("check", task, e)),
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value: ClaimValue =
            serde_json::from_slice(&entry.value).map_err(|source| ClaimError::BadValue {
                task: task.to_string(),
                source,
            })?;
        let current = value.token.unwrap_or(entry.revision);
        if value.holder != holder || current != token || self.aged_out(&entry) {
            return Ok(None);
        }
        let written_ns = u64::try_from(entry.created.unix_timestamp_nanos()).unwrap_or(0);
        Ok(Some(
            UNIX_EPOCH + Duration::from_nanos(written_ns) + self.ttl,
        ))
    }

    /// The claim as the bucket holds it now, if it is still `claim` (same holder and token,
    /// not aged out) at another revision: after a refresh whose acknowledgement was lost
    /// (applied, but reported as an error), the next refresh or release finds a revision it
    /// did not expect. `Ok(None)` if the claim is gone or someone else's.
    pub async fn adopt(&self, claim: &Claim) -> Result<Option<Claim>, ClaimError> {
        validate_key(&claim.task)?;
        let entry = match self.kv.entry(&claim.task).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(None),
            Err(e) => return Err(nats_err("adopt", &claim.task, e)),
        };
        if entry.operation != kv::Operation::Put || self.aged_out(&entry) {
            return Ok(None);
        }
        let value: ClaimValue =
            serde_json::from_slice(&entry.value).map_err(|source| ClaimError::BadValue {
                task: claim.task.clone(),
                source,
            })?;
        let token = value.token.unwrap_or(entry.revision);
        if value.holder != claim.holder || token != claim.token {
            return Ok(None);
        }
        Ok(Some(Claim {
            revision: entry.revision,
            ..claim.clone()
        }))
    }

    /// Releases `claim` (a delete with a revision check), so the task can be claimed again
    /// at once. [`ClaimError::Lost`] if it had already expired or been taken.
    pub async fn release(&self, claim: &Claim) -> Result<(), ClaimError> {
        validate_key(&claim.task)?;
        match self
            .kv
            .delete_expect_revision(&claim.task, Some(claim.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(lost(claim)),
            Err(e) => Err(nats_err("release", &claim.task, e)),
        }
    }

    /// Was `entry` written `ttl` or more ago (expired, though maybe not yet removed)?
    fn aged_out(&self, entry: &kv::Entry) -> bool {
        let written_ns = entry.created.unix_timestamp_nanos();
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now_ns.saturating_sub(written_ns) >= self.ttl.as_nanos() as i128
    }
}

/// Tasks marked done: a second JetStream key-value bucket, without expiry, one key per task
/// holding who finished it. The Close step marks a task done *before* releasing its claim,
/// so an agent that wins the claim afterwards sees the mark and does not do the task again.
#[derive(Debug, Clone)]
pub struct DoneMarks {
    kv: kv::Store,
}

impl DoneMarks {
    /// Creates or opens bucket `name` (history 1, file storage, no expiry).
    pub async fn open(
        js: &async_nats::jetstream::Context,
        name: &str,
    ) -> Result<DoneMarks, ClaimError> {
        let kv = open_bucket(js, name, "hub-leaf tasks done", Duration::ZERO).await?;
        Ok(DoneMarks { kv })
    }

    /// Marks `task` done by `holder`.
    pub async fn mark(&self, task: &str, holder: &str) -> Result<(), ClaimError> {
        validate_key(task)?;
        validate_holder(holder)?;
        self.kv
            .put(task, Bytes::from(holder.to_string()))
            .await
            .map(|_| ())
            .map_err(|e| nats_err("mark done", task, e))
    }

    /// Who finished `task`, if anyone did.
    pub async fn done_by(&self, task: &str) -> Result<Option<String>, ClaimError> {
        validate_key(task)?;
        match self.kv.entry(task).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                Ok(Some(String::from_utf8_lossy(&e.value).into_owned()))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(nats_err("read done mark", task, e)),
        }
    }
}

/// Checks that `key` is a valid KV key: 1..=[`MAX_KEY_LEN`] bytes of `A-Z a-z 0-9 - _ = / .`,
/// not starting or ending with `.`, no `..`. The error names the key.
pub fn validate_key(key: &str) -> Result<(), ClaimError> {
    let why = if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("longer than 256 bytes")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'/' | b'.'))
    {
        Some("only letters, digits and `-_=/.` are allowed")
    } else if key.starts_with('.') || key.ends_with('.') || key.contains("..") {
        Some("must not start or end with `.` or contain `..`")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(ClaimError::InvalidKey {
            key: key.to_string(),
            why,
        }),
    }
}

fn validate_holder(holder: &str) -> Result<(), ClaimError> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_LEN {
        return Err(ClaimError::InvalidHolder {
            holder: holder.to_string(),
        });
    }
    Ok(())
}

fn encode(value: &ClaimValue) -> Bytes {
    // A struct of a string and an optional integer always serialises.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn lost(claim: &Claim) -> ClaimError {
    ClaimError::Lost {
        task: claim.task.clone(),
        holder: claim.holder.clone(),
        token: claim.token,
    }
}

fn nats_err<E>(op: &'static str, what: &str, e: E) -> ClaimError
where
    E: std::error::Error + Send + Sync + 'static,
{
    ClaimError::Nats {
        op,
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// Checks the bucket name, then opens or creates it: history 1, file storage, `max_age`
/// (zero: no expiry).
async fn open_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, ClaimError> {
    if !is_bucket_name(name) {
        return Err(ClaimError::InvalidBucket {
            name: name.to_string(),
        });
    }
    let config = kv::Config {
        bucket: name.to_string(),
        description: description.to_string(),
        history: 1,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    open_or_create(js, config)
        .await
        .map_err(|source| ClaimError::Nats {
            op: "open bucket",
            what: name.to_string(),
            source,
        })
}

/// A valid key-value bucket name: not empty, letters, digits, `-` and `_` only.
pub(crate) fn is_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Opens bucket `config.bucket`, creating it if it does not exist; tolerates a concurrent
/// creator (create fails, a second open succeeds).
pub(crate) async fn open_or_create(
    js: &async_nats::jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    if let Ok(store) = js.get_key_value(config.bucket.clone()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create_err) => match js.get_key_value(bucket).await {
            Ok(store) => Ok(store),
            Err(_) => Err(Box::new(create_err)),
        },
    }
}
