//! Saving and loading an index: a versioned, checksummed binary file, written to a temporary
//! file beside the target, fsynced and renamed into place, and read back with every byte
//! checked before anything is built.
//!
//! The graph itself is not stored: loading rebuilds it from the vectors. `hnsw_rs`'s own dump
//! loader is never used, because a truncated dump makes it exit the process.
//!
//! Layout (all integers and floats little endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `HLVECIDX` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | reserved, `0` |
//! | 16 | 8 | length of the whole file in bytes, checksum included |
//! | 24 | 4 | `dim` |
//! | 28 | 1 | metric: `0` L2, `1` cosine |
//! | 29 | 3 | reserved, `0` |
//! | 32 | 4 | `m` |
//! | 36 | 4 | `ef_construction` |
//! | 40 | 4 | `ef_search` |
//! | 44 | 4 | reserved, `0` |
//! | 48 | 8 | `exact_below` |
//! | 56 | 8 | `rebuild_ratio` (`f64`) |
//! | 64 | 8 | live count `L` |
//! | 72 | 8 | tombstone count `T` |
//! | 80 | `L × (8 + 4·dim)` | live records: id `u64`, then `dim` × `f32` (normalised under cosine) |
//! | … | `T × 8` | ids of the tombstoned graph points (one per point, so an id may repeat) |
//! | end − 4 | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! Tombstones are recorded for inspection; a loaded index has none, since its graph is
//! rebuilt from the live vectors.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::VectorError;
use crate::index::Id;
use crate::params::{IndexParams, Metric};

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"HLVECIDX";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the first live record.
pub const HEADER_LEN: usize = 80;
/// Bytes of the trailing checksum.
const CHECKSUM_LEN: usize = 4;

/// What a file holds: parameters, live vectors and tombstoned ids.
pub(crate) struct Snapshot {
    pub(crate) params: IndexParams,
    pub(crate) live: Vec<(Id, Arc<[f32]>)>,
    pub(crate) tombstones: Vec<Id>,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> VectorError {
    VectorError::Io {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// Writes bytes through to `inner` while computing their CRC-32 and counting them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }
}

fn file_len(dim: usize, live: usize, tombstones: usize) -> Option<u64> {
    let record = 4u64.checked_mul(dim as u64)?.checked_add(8)?;
    (HEADER_LEN as u64)
        .checked_add(record.checked_mul(live as u64)?)?
        .checked_add(8u64.checked_mul(tombstones as u64)?)?
        .checked_add(CHECKSUM_LEN as u64)
}

fn write_body<W: Write>(out: &mut HashingWriter<W>, snapshot: &Snapshot) -> std::io::Result<()> {
    let p = &snapshot.params;
    let total = file_len(p.dim, snapshot.live.len(), snapshot.tombstones.len()).unwrap_or(0);
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&total.to_le_bytes());
    header.extend_from_slice(&(p.dim as u32).to_le_bytes());
    header.push(p.metric.code());
    header.extend_from_slice(&[0; 3]);
    header.extend_from_slice(&(p.m as u32).to_le_bytes());
    header.extend_from_slice(&(p.ef_construction as u32).to_le_bytes());
    header.extend_from_slice(&(p.ef_search as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(p.exact_below as u64).to_le_bytes());
    header.extend_from_slice(&p.rebuild_ratio.to_le_bytes());
    header.extend_from_slice(&(snapshot.live.len() as u64).to_le_bytes());
    header.extend_from_slice(&(snapshot.tombstones.len() as u64).to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);
    out.put(&header)?;

    let mut record = Vec::with_capacity(8 + 4 * p.dim);
    for (id, vector) in &snapshot.live {
        record.clear();
        record.extend_from_slice(&id.to_le_bytes());
        for x in vector.iter() {
            record.extend_from_slice(&x.to_le_bytes());
        }
        out.put(&record)?;
    }
    for id in &snapshot.tombstones {
        out.put(&id.to_le_bytes())?;
    }
    let checksum = out.hasher.clone().finalize();
    out.put(&checksum.to_le_bytes())?;
    if out.written != total {
        return Err(std::io::Error::other(format!(
            "wrote {} bytes, expected {total} (the index changed shape while saving?)",
            out.written
        )));
    }
    Ok(())
}

/// Distinguishes temporary files of concurrent saves within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn save(snapshot: &Snapshot, path: &Path) -> Result<(), VectorError> {
    let Some(name) = path.file_name() else {
        return Err(VectorError::Io {
            path: path.to_path_buf(),
            message: "expected a path ending in a file name".to_string(),
        });
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp_and_rename(snapshot, path, &dir, &temp);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_temp_and_rename(
    snapshot: &Snapshot,
    path: &Path,
    dir: &Path,
    temp: &Path,
) -> Result<(), VectorError> {
    let file = File::create(temp).map_err(|e| io_error(temp, "creating the temporary file", e))?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    write_body(&mut out, snapshot).map_err(|e| io_error(temp, "writing", e))?;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_error(temp, "writing", e.into_error()))?;
    file.sync_all()
        .map_err(|e| io_error(temp, "syncing to disk", e))?;
    drop(file);
    fs::rename(temp, path)
        .map_err(|e| io_error(path, "renaming the temporary file into place", e))?;
    // Make the rename itself durable. Directories cannot be opened everywhere; where they
    // can, a failed sync is an error like any other.
    if let Ok(d) = File::open(dir) {
        d.sync_all()
            .map_err(|e| io_error(dir, "syncing the directory", e))?;
    }
    Ok(())
}

/// Reads little-endian values from the checked file, failing with a reason on a short read.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.offset..end];
                self.offset = end;
                Ok(s)
            }
            None => Err(format!(
                "truncated: needed {n} bytes at offset {}, file has {}",
                self.offset,
                self.bytes.len()
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.array()?))
    }
}

pub(crate) fn load(path: &Path) -> Result<Snapshot, VectorError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, "reading", e))?;
    parse(&bytes).map_err(|reason| VectorError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

fn usize_field(name: &str, value: u64) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("{name} {value} does not fit in memory"))
}

fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let min_len = HEADER_LEN + CHECKSUM_LEN;
    if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "bad magic {:?}: expected {:?} (not a vector-index file)",
            String::from_utf8_lossy(&bytes[..MAGIC.len()]),
            String::from_utf8_lossy(&MAGIC)
        ));
    }
    if bytes.len() < min_len {
        return Err(format!(
            "truncated: {} bytes, expected at least {min_len} (header and checksum)",
            bytes.len()
        ));
    }
    let mut r = Reader { bytes, offset: 0 };
    r.take(MAGIC.len())?;
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!(
            "unsupported format version {version}: expected {VERSION}"
        ));
    }
    let reserved = r.u32()?;
    let declared_len = r.u64()?;
    if declared_len != bytes.len() as u64 {
        return Err(format!(
            "length mismatch: the header says {declared_len} bytes, the file has {} \
             (truncated or appended to)",
            bytes.len()
        ));
    }
    let body = &bytes[..bytes.len() - CHECKSUM_LEN];
    let mut stored = [0u8; CHECKSUM_LEN];
    stored.copy_from_slice(&bytes[bytes.len() - CHECKSUM_LEN..]);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} over {} bytes",
            body.len()
        ));
    }
    if reserved != 0 {
        return Err(format!(
            "reserved field at offset 12 is {reserved}: expected 0"
        ));
    }

    let dim = r.u32()? as usize;
    let metric_code = r.u8()?;
    let metric = Metric::from_code(metric_code)
        .ok_or_else(|| format!("metric code {metric_code}: expected 0 (l2) or 1 (cosine)"))?;
    let pad: [u8; 3] = r.array()?;
    if pad != [0; 3] {
        return Err(format!(
            "reserved bytes at offset 29 are {pad:?}: expected zeros"
        ));
    }
    let m = r.u32()? as usize;
    let ef_construction = r.u32()? as usize;
    let ef_search = r.u32()? as usize;
    let reserved = r.u32()?;
    if reserved != 0 {
        return Err(format!(
            "reserved field at offset 44 is {reserved}: expected 0"
        ));
    }
    let exact_below = usize_field("exact_below", r.u64()?)?;
    let rebuild_ratio = r.f64()?;
    let params = IndexParams {
        dim,
        metric,
        m,
        ef_construction,
        ef_search,
        exact_below,
        rebuild_ratio,
    };
    params
        .validate()
        .map_err(|e| format!("bad parameters: {e}"))?;

    let live_count = usize_field("live count", r.u64()?)?;
    let tombstone_count = usize_field("tombstone count", r.u64()?)?;
    let expected = file_len(dim, live_count, tombstone_count);
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "counts do not match the length: {live_count} vectors of dimension {dim} and \
             {tombstone_count} tombstones need {} bytes, the file has {}",
            expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
            bytes.len()
        ));
    }

    let mut live = Vec::with_capacity(live_count);
    let mut seen: HashSet<Id> = HashSet::with_capacity(live_count);
    let mut vector = Vec::with_capacity(dim);
    for record in 0..live_count {
        let id = r.u64()?;
        if !seen.insert(id) {
            return Err(format!("live record {record}: id {id} appears twice"));
        }
        vector.clear();
        for position in 0..dim {
            let x = r.f32()?;
            if !x.is_finite() {
                return Err(format!(
                    "live record {record} (id {id}): component {position} is {x}: expected a finite number"
                ));
            }
            vector.push(x);
        }
        if metric == Metric::Cosine && vector.iter().all(|&x| x == 0.0) {
            return Err(format!(
                "live record {record} (id {id}): all-zero vector under the cosine metric"
            ));
        }
        live.push((id, Arc::from(vector.as_slice())));
    }
    let mut tombstones = Vec::with_capacity(tombstone_count);
    for _ in 0..tombstone_count {
        tombstones.push(r.u64()?);
    }
    Ok(Snapshot {
        params,
        live,
        tombstones,
    })
}
