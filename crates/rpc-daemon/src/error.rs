//! Errors with stable codes: what a client may match on. The codes and their meaning are
//! listed in `PROTOCOL.md`; messages are for people and may change.

use serde::{Deserialize, Serialize};

/// Stable error codes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The frame is not a valid request (bad JSON, unknown op, missing field).
    BadRequest,
    /// A field has a value that is not allowed (empty title, priority 7).
    InvalidField,
    /// An issue named by the request does not exist.
    NotFound,
    /// The request conflicts with the data (dependency on itself, a cycle of blockers).
    Conflict,
    /// An operation of a batch failed; `index` names it and the whole batch was rolled back.
    BatchFailed,
    /// A frame or a batch is over its size cap.
    TooLarge,
    /// The request's deadline passed before it finished; nothing was committed.
    DeadlineExceeded,
    /// The daemon is at its connection limit (sent before closing a new connection).
    Overloaded,
    /// The hello named another database than the one this daemon serves.
    WrongDatabase,
    /// The hello carried a protocol version this daemon does not speak.
    VersionMismatch,
    /// The first frame of a connection was not a hello.
    HandshakeRequired,
    /// The daemon is shutting down and takes no new requests.
    ShuttingDown,
    /// SQLite stayed busy past the busy timeout.
    Busy,
    /// Anything else (an I/O or SQLite error); the message says what.
    Internal,
}

impl Code {
    /// The code as sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::InvalidField => "invalid_field",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::BatchFailed => "batch_failed",
            Code::TooLarge => "too_large",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Overloaded => "overloaded",
            Code::WrongDatabase => "wrong_database",
            Code::VersionMismatch => "version_mismatch",
            Code::HandshakeRequired => "handshake_required",
            Code::ShuttingDown => "shutting_down",
            Code::Busy => "busy",
            Code::Internal => "internal",
        }
    }
}

/// An error reply: a stable code, a message, and for batches the failing operation's index.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}{}", code.as_str(), index.map(|i| format!(" (operation {i})")).unwrap_or_default())]
pub struct ApiError {
    /// What kind of failure.
    pub code: Code,
    /// What happened, naming the offending value.
    pub message: String,
    /// For `batch_failed`: the index of the operation that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            index: None,
        }
    }

    /// `invalid_field`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidField, message)
    }

    /// `not_found` for an issue id.
    pub fn not_found(id: &str) -> Self {
        Self::new(Code::NotFound, format!("no issue {id:?}"))
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                ApiError::new(Code::Busy, format!("database busy: {e}"))
            }
            _ => ApiError::internal(format!("sqlite: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_on_the_wire() {
        let e = ApiError {
            code: Code::BatchFailed,
            message: "operation 2 (close): no issue \"hl-9\"".into(),
            index: Some(2),
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["code"], "batch_failed");
        assert_eq!(j["index"], 2);
        assert_eq!(
            serde_json::to_value(Code::DeadlineExceeded).unwrap(),
            "deadline_exceeded"
        );
        assert_eq!(Code::WrongDatabase.as_str(), "wrong_database");
        assert!(e.to_string().starts_with("batch_failed: "));
        assert!(serde_json::to_value(ApiError::not_found("hl-1"))
            .unwrap()
            .get("index")
            .is_none());
    }
}
