//! The data model and the operations, shared by the store, the daemon, the client and the
//! wire protocol (`PROTOCOL.md`). Every type here is exactly what travels as JSON.

use serde::{Deserialize, Serialize};

/// Lifecycle of an issue.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    Open,
    /// Claimed by someone.
    InProgress,
    /// Done; `closed_at` is set.
    Closed,
}

impl Status {
    /// The name stored in the database and sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::InProgress => "in_progress",
            Status::Closed => "closed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "open" => Some(Status::Open),
            "in_progress" => Some(Status::InProgress),
            "closed" => Some(Status::Closed),
            _ => None,
        }
    }
}

/// How two issues relate. For `blocks`, the dependency (`depends_on`) must be closed before
/// the issue is ready.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum DepKind {
    /// `depends_on` blocks `issue`.
    Blocks,
    /// Informational link.
    Related,
    /// `depends_on` is the parent of `issue`.
    ParentChild,
}

impl DepKind {
    /// The name stored in the database and sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            DepKind::Blocks => "blocks",
            DepKind::Related => "related",
            DepKind::ParentChild => "parent-child",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<DepKind> {
        match s {
            "blocks" => Some(DepKind::Blocks),
            "related" => Some(DepKind::Related),
            "parent-child" => Some(DepKind::ParentChild),
            _ => None,
        }
    }
}

/// An issue as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `hl-42`: the prefix and a number allocated in the inserting transaction.
    pub id: String,
    /// One line.
    pub title: String,
    /// Free text.
    pub description: String,
    /// Lifecycle state.
    pub status: Status,
    /// 0 (most urgent) to 4.
    pub priority: u8,
    /// Who works on it.
    pub assignee: Option<String>,
    /// Sorted, unique labels.
    pub labels: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
    /// Unix milliseconds when closed.
    pub closed_at: Option<i64>,
    /// Why it was closed.
    pub close_reason: Option<String>,
}

/// A dependency edge: `issue` depends on `depends_on`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dep {
    /// The dependent issue.
    pub issue: String,
    /// The issue it depends on.
    pub depends_on: String,
    /// How.
    pub kind: DepKind,
}

/// Fields of a new issue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// Required, 1 to [`MAX_TITLE_BYTES`] bytes, no line breaks.
    pub title: String,
    /// Up to [`MAX_DESCRIPTION_BYTES`] bytes.
    #[serde(default)]
    pub description: String,
    /// 0 to 4; default 2.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Optional assignee.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Labels (deduplicated and sorted when stored).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Fields to change; absent fields stay as they are. `assignee: null` clears it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The issue.
    pub id: String,
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New status (closing through `update` sets `closed_at`; reopening clears it).
    #[serde(default)]
    pub status: Option<Status>,
    /// New priority.
    #[serde(default)]
    pub priority: Option<u8>,
    /// New assignee; `Some(None)` (JSON `null`) clears it.
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub assignee: Option<Option<String>>,
    /// Replace the labels.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// Filters of `list`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only this status.
    #[serde(default)]
    pub status: Option<Status>,
    /// Only this assignee.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Only issues carrying this label.
    #[serde(default)]
    pub label: Option<String>,
    /// Only this priority.
    #[serde(default)]
    pub priority: Option<u8>,
    /// At most this many (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One operation. On the wire: an object with `"op"` naming it and its fields beside it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Liveness check; answers `pong`. (An empty struct variant, not a unit one, so that
    /// unknown fields are refused here too.)
    Ping {},
    /// Create an issue; answers the issue.
    Create(CreateArgs),
    /// Change fields; answers the issue.
    Update(UpdateArgs),
    /// Close; answers the issue.
    Close {
        /// The issue.
        id: String,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// One issue with its dependencies; answers `{issue, deps}`.
    Show {
        /// The issue.
        id: String,
    },
    /// Issues matching filters, newest first; answers `{issues}`.
    List(ListArgs),
    /// Open issues with no open blocker, by priority then age; answers `{issues}`.
    Ready {
        /// At most this many.
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Add a dependency; answers the edge.
    DepAdd(Dep),
    /// Remove a dependency; answers the edge.
    DepRemove(Dep),
    /// Operations applied in one transaction: all or none. No nested batches.
    Batch {
        /// At most [`MAX_BATCH_OPS`].
        ops: Vec<Op>,
    },
    /// Counts; answers [`Stats`].
    Stats {},
}

impl Op {
    /// The operation's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Ping {} => "ping",
            Op::Create(_) => "create",
            Op::Update(_) => "update",
            Op::Close { .. } => "close",
            Op::Show { .. } => "show",
            Op::List(_) => "list",
            Op::Ready { .. } => "ready",
            Op::DepAdd(_) => "dep_add",
            Op::DepRemove(_) => "dep_remove",
            Op::Batch { .. } => "batch",
            Op::Stats {} => "stats",
        }
    }

    /// Whether the operation writes (goes through the single writer).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Create(_)
                | Op::Update(_)
                | Op::Close { .. }
                | Op::DepAdd(_)
                | Op::DepRemove(_)
                | Op::Batch { .. }
        )
    }
}

/// Counts for `stats`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// All issues.
    pub issues: u64,
    /// Open.
    pub open: u64,
    /// In progress.
    pub in_progress: u64,
    /// Closed.
    pub closed: u64,
    /// Dependency edges.
    pub deps: u64,
    /// Rows in the event log.
    pub events: u64,
    /// Open issues with no open blocker.
    pub ready: u64,
}

/// The answer to one operation. Untagged on the wire; variants are tried in order, so the
/// one with more fields (`Detail`) comes before the one it contains (`Issue`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    /// `ping`.
    Pong {
        /// Always true.
        pong: bool,
    },
    /// `show`.
    Detail {
        /// The issue.
        issue: Issue,
        /// Edges where it is either side.
        deps: Vec<Dep>,
    },
    /// `create`, `update`, `close`.
    Issue {
        /// The issue after the change.
        issue: Issue,
    },
    /// `list`, `ready`.
    Issues {
        /// Matching issues.
        issues: Vec<Issue>,
    },
    /// `dep_add`, `dep_remove`.
    Dep {
        /// The edge.
        dep: Dep,
    },
    /// `batch`: one reply per operation, in order.
    Batch {
        /// Replies.
        results: Vec<Reply>,
    },
    /// `stats`.
    Stats {
        /// Counts.
        stats: Stats,
    },
}

/// Longest title, bytes.
pub const MAX_TITLE_BYTES: usize = 500;
/// Longest description, bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
/// Longest assignee or label, bytes.
pub const MAX_NAME_BYTES: usize = 100;
/// Most labels on one issue.
pub const MAX_LABELS: usize = 32;
/// Default `limit` of `list` and `ready`.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit`.
pub const MAX_LIMIT: u32 = 10_000;
/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 1_000;

/// `Option<Option<T>>` that tells an absent field (`None`) from `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_use_the_documented_wire_form() {
        let op: Op = serde_json::from_str(r#"{"op":"create","title":"x","priority":1}"#).unwrap();
        assert_eq!(
            op,
            Op::Create(CreateArgs {
                title: "x".into(),
                priority: Some(1),
                ..CreateArgs::default()
            })
        );
        let op: Op = serde_json::from_str(
            r#"{"op":"dep_add","issue":"hl-2","depends_on":"hl-1","kind":"blocks"}"#,
        )
        .unwrap();
        assert!(op.is_write());
        assert_eq!(op.name(), "dep_add");
        let op: Op =
            serde_json::from_str(r#"{"op":"update","id":"hl-1","assignee":null}"#).unwrap();
        match op {
            Op::Update(u) => assert_eq!(u.assignee, Some(None)),
            other => panic!("{other:?}"),
        }
        let op: Op = serde_json::from_str(r#"{"op":"update","id":"hl-1"}"#).unwrap();
        match op {
            Op::Update(u) => assert_eq!(u.assignee, None),
            other => panic!("{other:?}"),
        }
        // An absent assignee stays absent on the wire (null would clear it).
        let keep = Op::Update(UpdateArgs {
            id: "hl-1".into(),
            title: Some("t".into()),
            ..UpdateArgs::default()
        });
        let wire = serde_json::to_value(&keep).unwrap();
        assert!(wire.get("assignee").is_none(), "{wire}");
        assert_eq!(serde_json::from_value::<Op>(wire).unwrap(), keep);
        let clear = Op::Update(UpdateArgs {
            id: "hl-1".into(),
            assignee: Some(None),
            ..UpdateArgs::default()
        });
        let wire = serde_json::to_value(&clear).unwrap();
        assert!(wire["assignee"].is_null(), "{wire}");
        assert_eq!(serde_json::from_value::<Op>(wire).unwrap(), clear);
        assert!(serde_json::from_str::<Op>(r#"{"op":"explode"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Op::Ping {}).unwrap(),
            r#"{"op":"ping"}"#
        );
        assert_eq!(
            serde_json::from_str::<Op>(r#"{"op":"stats"}"#).unwrap(),
            Op::Stats {}
        );
        for extra in [r#"{"op":"ping","x":1}"#, r#"{"op":"stats","x":1}"#] {
            assert!(serde_json::from_str::<Op>(extra).is_err(), "{extra}");
        }
        assert!(serde_json::from_str::<Op>(r#"{"op":"create","title":"x","bogus":1}"#).is_err());
        let j = serde_json::to_value(Op::Ready { limit: Some(5) }).unwrap();
        assert_eq!(j, serde_json::json!({"op": "ready", "limit": 5}));
    }
}
