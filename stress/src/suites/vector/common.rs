//! What the vector suites share: building an index from rows in bounded chunks, checking
//! the shape of an answer, the process's resident memory, and the Gaussian samples the
//! synthetic corpora are made of.

use std::collections::HashSet;

use vector_index::data::Dataset;
use vector_index::{Hit, Index, VectorError};

use crate::harness::seed::Rng;

/// Vectors per `add_batch` call while building.
pub(crate) const BUILD_CHUNK: usize = 5_000;

/// The resident memory the original system (seed 003's vector daemon, 100,000 × 768)
/// reported, bytes.
pub(crate) const ORIGINAL_RSS_BYTES: f64 = 1.23e9;

/// This process's resident set size in bytes (0 if `/proc` cannot be read).
pub(crate) fn rss_bytes() -> u64 {
    collector::resources::sample_pid(0, None)
        .map(|(s, _)| s.rss_bytes)
        .unwrap_or(0)
}

/// `v` bytes in MB or GB.
pub(crate) fn fmt_bytes(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} GB", v / 1e9)
    } else {
        format!("{:.0} MB", v / 1e6)
    }
}

/// Adds every row of `data` under its row number, in chunks of [`BUILD_CHUNK`] through the
/// parallel `add_batch`.
pub(crate) fn build_from_dataset(index: &Index, data: &Dataset) -> Result<(), VectorError> {
    build_rows(index, data.len(), |i| data.row(i).to_vec())
}

/// Adds `n` vectors (`row(i)` under id `i`) in chunks of [`BUILD_CHUNK`] through
/// `add_batch`, so the copies handed to the index are never all in memory at once.
pub(crate) fn build_rows(
    index: &Index,
    n: usize,
    row: impl Fn(usize) -> Vec<f32>,
) -> Result<(), VectorError> {
    let mut start = 0;
    while start < n {
        let end = (start + BUILD_CHUNK).min(n);
        let items: Vec<(u64, Vec<f32>)> = (start..end).map(|i| (i as u64, row(i))).collect();
        index.add_batch(&items)?;
        start = end;
    }
    Ok(())
}

/// Checks one answer: exactly `k` hits, no id twice, none of `exclude`, sorted by
/// distance, finite distances.
pub(crate) fn check_hits(hits: &[Hit], k: usize, exclude: &[u64]) -> Result<(), String> {
    if hits.len() != k {
        return Err(format!("{} hits for k = {k}", hits.len()));
    }
    check_hit_list(hits, exclude)
}

/// Checks the shape of an answer whatever its length: no id twice, none of `exclude`,
/// sorted by distance ascending, finite distances.
pub(crate) fn check_hit_list(hits: &[Hit], exclude: &[u64]) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(hits.len());
    for (i, h) in hits.iter().enumerate() {
        if !seen.insert(h.id) {
            return Err(format!("id {} appears twice", h.id));
        }
        if exclude.contains(&h.id) {
            return Err(format!("excluded id {} returned", h.id));
        }
        if !h.distance.is_finite() {
            return Err(format!("id {} has distance {}", h.id, h.distance));
        }
        if i > 0 && hits[i - 1].distance > h.distance {
            return Err(format!(
                "not sorted: {} at {} before {} at {}",
                hits[i - 1].id,
                hits[i - 1].distance,
                h.id,
                h.distance
            ));
        }
    }
    Ok(())
}

/// One N(0, 1) sample (Box–Muller).
pub(crate) fn gauss(rng: &mut Rng) -> f32 {
    let u1 = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
