//! The one error type of the index, its registry and its file format.
//!
//! Every message names the offending value and what was expected, so a caller can print it
//! as it is: `vector has 3 components: expected 128 (the index's dimension)`.

use std::path::PathBuf;

use crate::index::Id;

/// Everything that can go wrong in `vector-index`; nothing in the crate panics instead.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum VectorError {
    /// A vector or query had the wrong number of components.
    #[error("vector has {got} components: expected {expected} (the index's dimension)")]
    WrongDimension {
        /// The index's dimension.
        expected: usize,
        /// The number of components given.
        got: usize,
    },

    /// A component was NaN or infinite.
    #[error("vector component {position} is {value}: expected a finite number")]
    NonFinite {
        /// Position of the first offending component (0-based).
        position: usize,
        /// Its value (NaN, inf or -inf).
        value: f32,
    },

    /// An all-zero vector under the cosine metric, which has no direction.
    #[error(
        "vector is all zeros: expected at least one non-zero component \
         (the cosine metric cannot normalise a zero vector)"
    )]
    ZeroVector,

    /// A parameter (of the index, or of one call) out of its allowed range.
    #[error("invalid {name} {value}: expected {expected}")]
    InvalidParameter {
        /// Which parameter (`m`, `ef`, `k`, `dim`, ...).
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// What was expected instead.
        expected: String,
    },

    /// One item of [`Index::add_batch`](crate::Index::add_batch) was invalid; nothing of the
    /// batch was added.
    #[error("batch item {index} (id {id}): {error}")]
    BatchItem {
        /// Position of the item in the batch (0-based).
        index: usize,
        /// The item's id.
        id: Id,
        /// What was wrong with it.
        error: Box<VectorError>,
    },

    /// A registry name that is not allowed.
    #[error("invalid index name {name:?}: expected {expected}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What a valid name looks like.
        expected: String,
    },

    /// [`Registry::create`](crate::Registry::create) with a name already in use.
    #[error("index {name:?} already exists: expected a new name (or use get_or_create)")]
    IndexExists {
        /// The name.
        name: String,
    },

    /// [`Registry::get`](crate::Registry::get) with a name that has no index.
    #[error("index {name:?} not found: expected the name of an existing index")]
    IndexNotFound {
        /// The name.
        name: String,
    },

    /// Reading or writing a file failed.
    #[error("I/O error on {}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message, with what was being done.
        message: String,
    },

    /// A saved index file that cannot be trusted: bad magic, version, length, checksum or
    /// contents.
    #[error("corrupt index file {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong, and where.
        reason: String,
    },
}

impl VectorError {
    /// Shorthand for [`VectorError::InvalidParameter`].
    pub(crate) fn param(
        name: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> VectorError {
        VectorError::InvalidParameter {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
