//! Index parameters and their validation: the fence that keeps every value `hnsw_rs`
//! cannot take (it exits the process on `M > 256`, aborts on `max_layer = 0`, leaves points
//! unreachable with `ef_construction` of 0 or 1) away from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::VectorError;

/// Largest dimension accepted.
pub const MAX_DIM: usize = 65_536;
/// Smallest `m` accepted (with one connection per node the graph is a chain).
pub const MIN_M: usize = 2;
/// Largest `m` accepted. `hnsw_rs` exits the process above 256 and truncates 256 to 0 in
/// `get_max_nb_connection` (it is cast to `u8`); 128 leaves a wide margin and is more than
/// any practical index needs (layer 0 keeps `2 × m` links).
pub const MAX_M: usize = 128;
/// Smallest `ef_construction` accepted (it must also be at least `m`).
pub const MIN_EF_CONSTRUCTION: usize = 8;
/// Largest `ef`, at construction or search (a search's `ef` above it is an error).
pub const MAX_EF: usize = 10_000;
/// The number of layers every graph is created with. Fixed: `hnsw_rs` aborts the process
/// with `max_layer = 0` and caps it at 16 itself.
pub const MAX_LAYER: usize = 16;
/// Largest `exact_below` accepted.
pub const MAX_EXACT_BELOW: usize = 1 << 24;

/// The distance an index ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean distance `‖a − b‖`.
    L2,
    /// Cosine distance `1 − cos(a, b)`, in `[0, 2]`; vectors are normalised on insert.
    Cosine,
}

impl Metric {
    /// The name used by `Display` and `FromStr`: `l2` or `cosine`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
        }
    }

    /// The code stored in saved files.
    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::L2 => 0,
            Metric::Cosine => 1,
        }
    }

    /// The inverse of [`Metric::code`].
    pub(crate) fn from_code(code: u8) -> Option<Metric> {
        match code {
            0 => Some(Metric::L2),
            1 => Some(Metric::Cosine),
            _ => None,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = VectorError;

    /// Parses `l2` or `cosine` (any case).
    fn from_str(s: &str) -> Result<Metric, VectorError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l2" => Ok(Metric::L2),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(VectorError::param(
                "metric",
                format!("{s:?}"),
                "\"l2\" or \"cosine\"",
            )),
        }
    }
}

/// How an index is built and searched. Start from [`IndexParams::new`] and change fields;
/// [`Index::new`](crate::Index::new) validates them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Number of components of every vector, `1..=65_536`.
    pub dim: usize,
    /// The distance results are ranked by.
    pub metric: Metric,
    /// Maximum connections per node and layer (layer 0 keeps `2 × m`), `2..=128`.
    pub m: usize,
    /// Candidate list size while inserting, `max(m, 8)..=10_000`.
    pub ef_construction: usize,
    /// The `ef` a search uses when given `None`, `1..=10_000`.
    pub ef_search: usize,
    /// Below this many live points a search is answered exactly, by brute force.
    pub exact_below: usize,
    /// A rebuild starts when tombstones exceed `rebuild_ratio × live` (and `exact_below`).
    pub rebuild_ratio: f64,
}

impl IndexParams {
    /// Defaults for `dim` and `metric`: `m` 16, `ef_construction` 200, `ef_search` 64,
    /// `exact_below` 256, `rebuild_ratio` 0.25.
    pub fn new(dim: usize, metric: Metric) -> IndexParams {
        IndexParams {
            dim,
            metric,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            exact_below: 256,
            rebuild_ratio: 0.25,
        }
    }

    /// Checks every field against the range `hnsw_rs` can take safely; the error names the
    /// first field out of range, its value and the range.
    pub fn validate(&self) -> Result<(), VectorError> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(VectorError::param(
                "dim",
                self.dim,
                format!("1..={MAX_DIM}"),
            ));
        }
        if !(MIN_M..=MAX_M).contains(&self.m) {
            return Err(VectorError::param(
                "m",
                self.m,
                format!("{MIN_M}..={MAX_M} (connections per node)"),
            ));
        }
        let min_efc = self.m.max(MIN_EF_CONSTRUCTION);
        if !(min_efc..=MAX_EF).contains(&self.ef_construction) {
            return Err(VectorError::param(
                "ef_construction",
                self.ef_construction,
                format!("{min_efc}..={MAX_EF} (at least m and at least {MIN_EF_CONSTRUCTION})"),
            ));
        }
        if !(1..=MAX_EF).contains(&self.ef_search) {
            return Err(VectorError::param(
                "ef_search",
                self.ef_search,
                format!("1..={MAX_EF}"),
            ));
        }
        if self.exact_below > MAX_EXACT_BELOW {
            return Err(VectorError::param(
                "exact_below",
                self.exact_below,
                format!("0..={MAX_EXACT_BELOW}"),
            ));
        }
        if !(self.rebuild_ratio.is_finite()
            && self.rebuild_ratio > 0.0
            && self.rebuild_ratio <= 100.0)
        {
            return Err(VectorError::param(
                "rebuild_ratio",
                self.rebuild_ratio,
                "a finite number in (0, 100]",
            ));
        }
        Ok(())
    }
}
