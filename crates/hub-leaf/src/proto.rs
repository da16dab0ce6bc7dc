//! The hub's wire protocol: NATS request-reply on loopback, JSON bodies.
//!
//! Why NATS request-reply and not HTTP: the trial already runs one `nats-server` for the
//! claims and the tip broadcast, so every leaf already holds one connection that also
//! carries its pushes and pulls; there is no second listener, port or client stack to
//! start, bound and tear down, and a `NATS_URL` pointing at a real cluster moves all three
//! paths at once. A request has a reply inbox and a timeout, which is all a push or a pull
//! needs.
//!
//! Subjects, under a prefix (one per trial, so trials can share a server):
//!
//! - `<prefix>.push`: a [`PushRequest`] answered by a [`PushReply`];
//! - `<prefix>.pull`: a [`PullRequest`] answered by a [`PullReply`].
//!
//! Every reply fits one NATS message: a push carries one commit (at most a few files of a
//! few KiB) and the commits of a pull are bounded by
//! [`MAX_PULL_COMMITS`] and [`MAX_PULL_BYTES`] of blob payload, well under the server's
//! default `max_payload` of 1 MiB even base64-encoded.

use serde::{Deserialize, Serialize};

use crate::repo::{blobs_serde, Blob, Commit, Pull, Tip};

/// Most commits in one pull reply.
pub const MAX_PULL_COMMITS: usize = 256;

/// About the most blob payload in one reply (base64 makes it 4/3 larger on the wire).
pub const MAX_PULL_BYTES: usize = 512 * 1024;

/// The push subject under `prefix`.
pub fn push_subject(prefix: &str) -> String {
    format!("{prefix}.push")
}

/// The pull subject under `prefix`.
pub fn pull_subject(prefix: &str) -> String {
    format!("{prefix}.pull")
}

/// A leaf asks the hub to put `commit` on the trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The pushing leaf (its claim holder name).
    pub leaf: String,
    /// The task the commit completes (its claim key).
    pub task: String,
    /// The fencing token of the leaf's claim of `task`.
    pub token: u64,
    /// The trunk tip the commit was prepared on (`None` = empty trunk): the compare in the
    /// compare-and-swap.
    pub expected: Option<Tip>,
    /// The commit, on top of `expected`.
    pub commit: Commit,
    /// The blobs its changes introduce.
    #[serde(with = "blobs_serde")]
    pub blobs: Vec<Blob>,
}

/// The hub's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushReply {
    /// On the trunk. `new: false` when it already was (a retried push whose first reply was
    /// lost).
    Accepted {
        /// The trunk tip now.
        tip: Tip,
        /// Stored by this push.
        new: bool,
    },
    /// The trunk moved: `expected` is not the tip. Re-apply the change on top of `tip` and
    /// push again (a fork retry); pull the commits in between (`<prefix>.pull`).
    Forked {
        /// The trunk tip now.
        tip: Option<Tip>,
    },
    /// The task already has a commit on the trunk, from another push (another claim of it):
    /// nothing was stored. The task is done.
    Duplicate {
        /// The sequence number of the task's commit.
        seq: u64,
    },
    /// The fencing check failed: the leaf's token is not the task's live claim. Nothing was
    /// stored.
    Fenced {
        /// Why (expired, taken by another holder, an older token).
        why: String,
    },
    /// The push was refused for another reason (bad commit, hub overloaded, storage error,
    /// a fencing answer too old to trust).
    Failed {
        /// The error.
        error: String,
        /// Whether sending the same push again may succeed (overload, an outage, a stale
        /// fencing answer), as opposed to a push that will never be taken.
        retryable: bool,
    },
}

/// A leaf asks for the commits after its tip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The pulling leaf (for tracing).
    pub leaf: String,
    /// The leaf's tip sequence number (0 = empty).
    pub after_seq: u64,
}

/// The hub's answer to a pull: exactly the commits after `after_seq`, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PullReply {
    /// The commits (at most [`MAX_PULL_COMMITS`], about [`MAX_PULL_BYTES`] of blobs;
    /// `pull.more` says whether more remain) and the trunk tip when they were read.
    Commits {
        /// The trunk tip.
        tip: Option<Tip>,
        /// The commits after `after_seq`.
        pull: Pull,
    },
    /// The pull failed on the hub.
    Failed {
        /// The error.
        error: String,
    },
}

/// A body that could not be decoded, named with what it should have been.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} of {len} bytes: {source}")]
pub struct DecodeError {
    /// What was expected (`push request`, `pull reply`, ...).
    pub what: &'static str,
    /// The body's length.
    pub len: usize,
    /// The JSON error.
    pub source: serde_json::Error,
}

/// Encodes a message as JSON. Our message types always serialise.
pub fn encode<T: Serialize>(message: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(message).unwrap_or_default())
}

/// Decodes a JSON body, naming `what` it should have been on failure.
pub fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|source| DecodeError {
        what,
        len: body.len(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{NewCommit, Repo};

    #[test]
    fn messages_round_trip_and_garbage_is_named() {
        let (commit, blobs) = Repo::prepare(
            None,
            &NewCommit {
                author: "agent-0".into(),
                message: "slot-0/task-0".into(),
                created_ms: 1,
                files: vec![("slot-0/a".into(), Some(b"hello".to_vec()))],
            },
        )
        .unwrap();
        let push = PushRequest {
            leaf: "agent-0".into(),
            task: "slot-0/task-0".into(),
            token: 7,
            expected: None,
            commit: commit.clone(),
            blobs,
        };
        let back: PushRequest = decode("push request", &encode(&push)).unwrap();
        assert_eq!(back, push);
        let reply = PushReply::Forked {
            tip: Some(commit.tip()),
        };
        let back: PushReply = decode("push reply", &encode(&reply)).unwrap();
        assert_eq!(back, reply);
        let reply = PullReply::Commits {
            tip: Some(commit.tip()),
            pull: Pull {
                commits: vec![commit],
                blobs: vec![],
                more: false,
            },
        };
        let back: PullReply = decode("pull reply", &encode(&reply)).unwrap();
        assert_eq!(back, reply);
        let e = decode::<PullRequest>("pull request", b"{\"leaf\":1}").unwrap_err();
        assert!(e.to_string().contains("pull request"), "{e}");
    }
}
