//! Vectors to measure the index with: a seeded, clustered synthetic generator and loaders
//! for user-supplied `.npy` (float32, C or Fortran order) and `.fvecs` files.
//!
//! Everything here returns a [`Dataset`]: `n` rows of `dim` `f32`s, row-major. Loaders never
//! trust a size written in a file to allocate memory: every length is checked against the
//! file's real length first, so a corrupt header gives a [`DataError`], not a multi-gigabyte
//! allocation or a crash. Non-finite values (NaN, ±inf) are rejected with their row and column.
//!
//! The synthetic data is a Gaussian mixture ([`Mixture`]): about √n centres, each point a
//! centre plus Gaussian noise with a per-cluster spread. Uniformly random vectors are
//! unrealistically hard for approximate search (every point is nearly equidistant from every
//! other); real embeddings are clustered, and so is this data. Queries come from the same
//! mixture (same centres, fresh points), so they land where the data is, as real queries do.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Largest dimension accepted for synthetic data (the index's own maximum).
pub const MAX_DIM: usize = 65_536;

/// Largest number of values (`n × dim`) a synthetic data set may have: 2^30 `f32`s, 4 GiB.
pub const MAX_SYNTHETIC_VALUES: usize = 1 << 30;

/// Largest `.npy` header accepted, in bytes (numpy's own reader refuses more than 10,000 by
/// default; a float32 matrix needs about 128).
pub const MAX_NPY_HEADER_BYTES: usize = 65_536;

/// Deepest bracket nesting accepted in a `.npy` header (a 2-D float32 header nests 2 deep);
/// bounds the recursion of the header parser.
const MAX_NPY_HEADER_NESTING: usize = 16;

/// Bytes read at a time from a data file.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// An error loading or generating a data set. Every message names the offending file or
/// value and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// A `--data` value (or a parameter of the synthetic generator) is malformed.
    #[error("invalid data source {value:?}: {expected}")]
    InvalidSource {
        /// The offending text.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// The file could not be opened or read.
    #[error("cannot read {}: {message}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// A `.npy` file is not a 2-D little-endian float32 array, or is damaged.
    #[error("{}: {reason}", .path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A `.fvecs` file is damaged at a given row.
    #[error("{}: row {row} (byte offset {offset}): {reason}", .path.display())]
    Fvecs {
        /// The file.
        path: PathBuf,
        /// The row (0-based) being read.
        row: usize,
        /// Byte offset of the start of that row.
        offset: u64,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A value in the file is NaN or infinite.
    #[error("{}: row {row}, column {column} is {value}; expected finite numbers (no NaN or infinity)", .path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The row (0-based).
        row: usize,
        /// The column (0-based).
        column: usize,
        /// The offending value.
        value: f32,
    },
    /// The file holds no vectors.
    #[error("{}: the file holds no vectors; expected at least one row", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Queries and data have different dimensions.
    #[error("the queries have dimension {queries} but the data has dimension {base}; expected the same dimension")]
    DimensionMismatch {
        /// Dimension of the data.
        base: usize,
        /// Dimension of the queries.
        queries: usize,
    },
}

/// `n` vectors of `dim` components, row-major: row `i` is `data[i * dim..(i + 1) * dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Components per vector.
    pub dim: usize,
    /// All components, row after row.
    pub data: Vec<f32>,
}

impl Dataset {
    /// Number of rows (0 when `dim` is 0).
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing; use [`Dataset::get`] for a checked lookup.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row `i`, or `None` if there is no such row.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        if i < self.len() {
            Some(self.row(i))
        } else {
            None
        }
    }

    /// The rows in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> + '_ {
        // chunks_exact panics on a zero chunk size; a 0-dim data set has no rows.
        self.data[..self.len() * self.dim].chunks_exact(self.dim.max(1))
    }

    /// Splits off the last `n` rows: returns `(first len - n rows, last n rows)`, or `None`
    /// if there are fewer than `n` rows. Used to hold out queries from a file.
    pub fn split_tail(mut self, n: usize) -> Option<(Dataset, Dataset)> {
        let len = self.len();
        if n > len {
            return None;
        }
        self.data.truncate(len * self.dim);
        let tail = self.data.split_off((len - n) * self.dim);
        let dim = self.dim;
        Some((self, Dataset { dim, data: tail }))
    }
}

/// Where the vectors come from: `synthetic:N,DIM` or a path ending `.npy` or `.fvecs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A `.npy` or `.fvecs` file.
    File(PathBuf),
    /// `n` seeded synthetic vectors of `dim` components (see [`synthetic`]).
    Synthetic {
        /// Number of vectors.
        n: usize,
        /// Components per vector.
        dim: usize,
    },
}

/// The forms a data source may take, for error messages.
const SOURCE_FORMS: &str =
    "expected synthetic:N,DIM (like synthetic:20000,128) or a path ending .npy or .fvecs";

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<DataSource, DataError> {
        let invalid = |expected: String| DataError::InvalidSource {
            value: s.to_string(),
            expected,
        };
        if let Some(spec) = s.strip_prefix("synthetic:") {
            let parts: Vec<&str> = spec.split(',').collect();
            let [n_text, dim_text] = parts.as_slice() else {
                return Err(invalid(format!(
                    "found {} comma-separated value(s) after \"synthetic:\"; {SOURCE_FORMS}",
                    parts.len()
                )));
            };
            let n: usize = n_text.trim().parse().map_err(|_| {
                invalid(format!(
                    "N {n_text:?} is not a whole number; expected synthetic:N,DIM with N >= 1, like synthetic:20000,128"
                ))
            })?;
            let dim: usize = dim_text.trim().parse().map_err(|_| {
                invalid(format!(
                    "DIM {dim_text:?} is not a whole number; expected synthetic:N,DIM with 1 <= DIM <= {MAX_DIM}, like synthetic:20000,128"
                ))
            })?;
            check_synthetic(n, dim).map_err(invalid)?;
            return Ok(DataSource::Synthetic { n, dim });
        }
        if s.is_empty() {
            return Err(invalid(format!("empty; {SOURCE_FORMS}")));
        }
        match FileKind::of(Path::new(s)) {
            Some(_) => Ok(DataSource::File(PathBuf::from(s))),
            None => Err(invalid(format!(
                "the file {s:?} has neither a .npy nor a .fvecs extension; {SOURCE_FORMS}"
            ))),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::File(path) => write!(f, "{}", path.display()),
            DataSource::Synthetic { n, dim } => write!(f, "synthetic:{n},{dim}"),
        }
    }
}

/// The file formats [`load`] understands, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Npy,
    Fvecs,
}

impl FileKind {
    fn of(path: &Path) -> Option<FileKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "npy" => Some(FileKind::Npy),
            "fvecs" => Some(FileKind::Fvecs),
            _ => None,
        }
    }
}

/// Checks synthetic sizes; the error text says what was expected.
fn check_synthetic(n: usize, dim: usize) -> Result<(), String> {
    if n == 0 {
        return Err("N is 0; expected at least 1 vector, like synthetic:20000,128".to_string());
    }
    if dim == 0 || dim > MAX_DIM {
        return Err(format!(
            "DIM is {dim}; expected 1 <= DIM <= {MAX_DIM}, like synthetic:20000,128"
        ));
    }
    match n.checked_mul(dim) {
        Some(values) if values <= MAX_SYNTHETIC_VALUES => Ok(()),
        _ => Err(format!(
            "N × DIM = {n} × {dim} exceeds {MAX_SYNTHETIC_VALUES} values (4 GiB); expected a smaller data set"
        )),
    }
}

/// Loads (or generates) the vectors a [`DataSource`] names; `seed` is used for synthetic
/// data only.
pub fn load(source: &DataSource, seed: u64) -> Result<Dataset, DataError> {
    match source {
        DataSource::Synthetic { n, dim } => synthetic(*n, *dim, seed),
        DataSource::File(path) => load_file(path),
    }
}

/// Loads a `.npy` or `.fvecs` file, chosen by its extension.
pub fn load_file(path: &Path) -> Result<Dataset, DataError> {
    match FileKind::of(path) {
        Some(FileKind::Npy) => load_npy(path),
        Some(FileKind::Fvecs) => load_fvecs(path),
        None => Err(DataError::InvalidSource {
            value: path.display().to_string(),
            expected: format!("unsupported extension; {SOURCE_FORMS}"),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic data
// ---------------------------------------------------------------------------------------

/// Smallest per-cluster spread (standard deviation of the noise per component, relative to
/// the unit standard deviation of the centres).
const SPREAD_MIN: f32 = 0.25;
/// Largest per-cluster spread.
const SPREAD_MAX: f32 = 0.65;

/// A seeded Gaussian mixture: `⌈√base_n⌉` centres drawn from N(0, 1) per component, each
/// with a weight (cluster sizes differ by up to 3×) and a spread between 0.25 and 0.65. A
/// point is a centre chosen by weight plus N(0, spread²) noise per component. Everything is
/// a function of `(base_n, dim, seed)`.
///
/// In high dimensions distances concentrate, so with these spreads a point's nearest
/// neighbours are almost always in its own cluster: the search problem is finding the
/// right cluster, then ranking within a cluster of about √n points.
#[derive(Debug, Clone)]
pub struct Mixture {
    dim: usize,
    seed: u64,
    /// `clusters × dim`, row-major.
    centres: Vec<f32>,
    spreads: Vec<f32>,
    /// Cumulative weights, last = 1.
    cumulative: Vec<f64>,
}

impl Mixture {
    /// The mixture behind a data set of `base_n` vectors of `dim` components.
    pub fn new(base_n: usize, dim: usize, seed: u64) -> Result<Mixture, DataError> {
        let spec = format!("synthetic:{base_n},{dim}");
        check_synthetic(base_n, dim).map_err(|expected| DataError::InvalidSource {
            value: spec,
            expected,
        })?;
        let clusters = ((base_n as f64).sqrt().ceil() as usize).clamp(1, base_n);
        let mut rng = fastrand::Rng::with_seed(derive_seed(seed, 0));
        let mut centres = vec![0.0f32; clusters * dim];
        fill_gaussian(&mut rng, &mut centres, 1.0);
        let spreads: Vec<f32> = (0..clusters)
            .map(|_| SPREAD_MIN + (SPREAD_MAX - SPREAD_MIN) * rng.f32())
            .collect();
        let weights: Vec<f64> = (0..clusters).map(|_| 0.5 + rng.f64()).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cumulative: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        Ok(Mixture {
            dim,
            seed,
            centres,
            spreads,
            cumulative,
        })
    }

    /// Number of clusters (centres).
    pub fn clusters(&self) -> usize {
        self.spreads.len()
    }

    /// Components per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `n` points from the mixture, drawn from the random stream numbered `stream` (the
    /// data set uses stream 1, queries stream 2).
    pub fn sample(&self, n: usize, stream: u64) -> Result<Dataset, DataError> {
        let values = n
            .checked_mul(self.dim)
            .filter(|v| *v <= MAX_SYNTHETIC_VALUES);
        let Some(values) = values else {
            return Err(DataError::InvalidSource {
                value: format!("synthetic:{n},{}", self.dim),
                expected: format!(
                    "N × DIM exceeds {MAX_SYNTHETIC_VALUES} values (4 GiB); expected a smaller data set"
                ),
            });
        };
        let mut rng = fastrand::Rng::with_seed(derive_seed(self.seed, stream));
        let mut data = vec![0.0f32; values];
        for row in data.chunks_exact_mut(self.dim) {
            let u = rng.f64();
            let c = self
                .cumulative
                .partition_point(|&p| p < u)
                .min(self.clusters() - 1);
            fill_gaussian(&mut rng, row, self.spreads[c]);
            let centre = &self.centres[c * self.dim..(c + 1) * self.dim];
            for (x, m) in row.iter_mut().zip(centre) {
                *x += m;
            }
        }
        Ok(Dataset {
            dim: self.dim,
            data,
        })
    }
}

/// `n` clustered vectors of `dim` components, deterministic per `seed` (see [`Mixture`]).
/// Errors if `n` or `dim` is 0, `dim` exceeds [`MAX_DIM`] or `n × dim` exceeds
/// [`MAX_SYNTHETIC_VALUES`].
pub fn synthetic(n: usize, dim: usize, seed: u64) -> Result<Dataset, DataError> {
    Mixture::new(n, dim, seed)?.sample(n, 1)
}

/// `n` query vectors from the same mixture as `synthetic(base_n, dim, base_seed)`: the same
/// centres and spreads, fresh points (none equal to a data point, with probability 1).
pub fn synthetic_queries(
    base_seed: u64,
    base_n: usize,
    n: usize,
    dim: usize,
) -> Result<Dataset, DataError> {
    Mixture::new(base_n, dim, base_seed)?.sample(n, 2)
}

/// Independent seeds for the centres and each point stream (splitmix64 of seed and stream).
fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with N(0, sigma²) samples (Box–Muller, two per pair of uniforms).
fn fill_gaussian(rng: &mut fastrand::Rng, out: &mut [f32], sigma: f32) {
    for pair in out.chunks_mut(2) {
        // 1 - f64() is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.f64();
        let u2 = rng.f64();
        let r = (-2.0 * u1.ln()).sqrt() * f64::from(sigma);
        let theta = std::f64::consts::TAU * u2;
        pair[0] = (r * theta.cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * theta.sin()) as f32;
        }
    }
}

// ---------------------------------------------------------------------------------------
// .npy
// ---------------------------------------------------------------------------------------

/// What a loadable `.npy` file is, for error messages.
const NPY_EXPECTED: &str = "expected a 2-D float32 little-endian array ('<f4', rows × dim, C or Fortran order), as written by numpy.save(path, array.astype('<f4'))";

/// Loads a `.npy` file holding a 2-D little-endian float32 array in C or Fortran order
/// (Fortran order is transposed into row-major). Any other dtype or rank, big-endian data,
/// a bad or oversized header, a truncated or over-long data section, or a NaN/infinite
/// value is an error naming the file and what was expected.
pub fn load_npy(path: &Path) -> Result<Dataset, DataError> {
    let npy_err = |reason: String| DataError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let (mut reader, file_len) = open(path)?;

    // The pre-header is read here, not by npyz, so that the header length can be checked
    // against the file's length before anything is allocated for it.
    let mut prefix = [0u8; 12];
    read_exact_or(&mut reader, &mut prefix[..10], path, || {
        npy_err(format!(
            "the file is {file_len} bytes, too short for a .npy header; {NPY_EXPECTED}"
        ))
    })?;
    if &prefix[..6] != b"\x93NUMPY" {
        return Err(npy_err(format!(
            "no .npy magic string (\\x93NUMPY) at the start: not a .npy file; {NPY_EXPECTED}"
        )));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (prefix_len, header_len) = match (major, minor) {
        (1, 0) => (10usize, u16::from_le_bytes([prefix[8], prefix[9]]) as usize),
        (2, 0) | (3, 0) => {
            read_exact_or(&mut reader, &mut prefix[10..12], path, || {
                npy_err(format!(
                    "the file is {file_len} bytes, too short for a version {major}.{minor} .npy header"
                ))
            })?;
            let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (12usize, usize::try_from(len).unwrap_or(usize::MAX))
        }
        _ => {
            return Err(npy_err(format!(
                "unsupported .npy format version {major}.{minor}; expected version 1.0, 2.0 or 3.0"
            )))
        }
    };
    let available = file_len.saturating_sub(prefix_len as u64);
    if header_len > MAX_NPY_HEADER_BYTES || header_len as u64 > available {
        return Err(npy_err(format!(
            "the header claims {header_len} bytes but {available} bytes follow the prefix (at most {MAX_NPY_HEADER_BYTES} accepted): bad or truncated header; {NPY_EXPECTED}"
        )));
    }
    let mut header_bytes = prefix[..prefix_len].to_vec();
    header_bytes.resize(prefix_len + header_len, 0);
    read_exact_or(&mut reader, &mut header_bytes[prefix_len..], path, || {
        npy_err("the header is truncated".to_string())
    })?;
    precheck_npy_header(&header_bytes[prefix_len..]).map_err(&npy_err)?;

    let header = npyz::NpyHeader::from_reader(&header_bytes[..])
        .map_err(|e| npy_err(format!("bad .npy header ({e}); {NPY_EXPECTED}")))?;
    check_npy_dtype(&header.dtype()).map_err(&npy_err)?;
    let shape = header.shape().to_vec();
    let [rows, cols] = shape.as_slice() else {
        return Err(npy_err(format!(
            "the array is {}-D with shape {shape:?}; {NPY_EXPECTED}",
            shape.len()
        )));
    };
    let (rows, cols) = (*rows, *cols);
    if rows == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if cols == 0 {
        return Err(npy_err(format!(
            "the array has shape {shape:?}: vectors of dimension 0; expected dim >= 1"
        )));
    }
    let data_len = available - header_len as u64;
    let needed = rows
        .checked_mul(cols)
        .and_then(|v| v.checked_mul(4))
        .ok_or_else(|| npy_err(format!("shape {shape:?} is too large to address")))?;
    if data_len != needed {
        let what = if data_len < needed {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(npy_err(format!(
            "the data section is {data_len} bytes but shape {shape:?} of float32 needs {needed} bytes: the file {what}"
        )));
    }
    let too_large = || npy_err(format!("shape {shape:?} does not fit in memory addresses"));
    let rows = usize::try_from(rows).map_err(|_| too_large())?;
    let cols = usize::try_from(cols).map_err(|_| too_large())?;
    let values = rows * cols; // <= file length / 4, checked above

    let mut stored = Vec::with_capacity(values);
    read_f32s(&mut reader, values, &mut stored, path)?;
    let data = match header.order() {
        npyz::Order::C => stored,
        npyz::Order::Fortran => {
            // Column-major: element (r, c) is at c * rows + r.
            let mut data = vec![0.0f32; values];
            for (c, column) in stored.chunks_exact(rows).enumerate() {
                for (r, &x) in column.iter().enumerate() {
                    data[r * cols + c] = x;
                }
            }
            data
        }
    };
    check_finite(&data, cols, path)?;
    Ok(Dataset { dim: cols, data })
}

/// Rejects headers npyz should not be handed: too deeply nested (its parser recurses), or
/// with a shape whose element count overflows 64 bits (npyz multiplies unchecked).
fn precheck_npy_header(text: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    for &b in text {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if max_depth > MAX_NPY_HEADER_NESTING {
        return Err(format!(
            "the header nests {max_depth} brackets deep; {NPY_EXPECTED}"
        ));
    }
    let text = String::from_utf8_lossy(text);
    let Some(key) = text.find("'shape'").or_else(|| text.find("\"shape\"")) else {
        return Ok(()); // npyz reports the missing key
    };
    let rest = text[key + 7..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return Ok(());
    };
    let rest = rest.trim_start();
    let Some(open) = rest.chars().next().filter(|c| *c == '(' || *c == '[') else {
        return Ok(());
    };
    let close = if open == '(' { ')' } else { ']' };
    let Some(end) = rest.find(close) else {
        return Ok(());
    };
    let mut elements: u64 = 1;
    for part in rest[1..end].split(',') {
        let part = part.trim().trim_end_matches('L');
        if part.is_empty() {
            continue;
        }
        let Ok(extent) = part.parse::<u64>() else {
            return Err(format!(
                "shape entry {part:?} is not a non-negative integer; {NPY_EXPECTED}"
            ));
        };
        elements = elements.checked_mul(extent.max(1)).ok_or_else(|| {
            format!(
                "shape {} has more elements than fit in 64 bits; {NPY_EXPECTED}",
                &rest[..=end]
            )
        })?;
    }
    Ok(())
}

/// Accepts exactly little-endian float32.
fn check_npy_dtype(dtype: &npyz::DType) -> Result<(), String> {
    use npyz::{Endianness, TypeChar};
    if let npyz::DType::Plain(ty) = dtype {
        if ty.type_char() == TypeChar::Float && ty.size_field() == 4 {
            return match ty.endianness() {
                Endianness::Little => Ok(()),
                _ => Err(format!(
                    "the dtype is {} (big-endian float32); {NPY_EXPECTED}",
                    dtype.descr()
                )),
            };
        }
    }
    Err(format!("the dtype is {}; {NPY_EXPECTED}", dtype.descr()))
}

// ---------------------------------------------------------------------------------------
// .fvecs
// ---------------------------------------------------------------------------------------

/// Loads a `.fvecs` file: each row is a little-endian `i32` dimension followed by that many
/// little-endian `f32`s; every row must have the same dimension. A zero or negative
/// dimension, a row whose dimension differs from the first, a truncated row or a
/// NaN/infinite value is an error naming the file, the row and its byte offset. A dimension
/// is checked against the bytes left in the file before anything is allocated for it.
pub fn load_fvecs(path: &Path) -> Result<Dataset, DataError> {
    let (mut reader, file_len) = open(path)?;
    let err = |row: usize, offset: u64, reason: String| DataError::Fvecs {
        path: path.to_path_buf(),
        row,
        offset,
        reason,
    };
    if file_len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut dim: Option<usize> = None;
    let mut data: Vec<f32> = Vec::new();
    let mut row_bytes: Vec<u8> = Vec::new();
    let mut offset: u64 = 0;
    // Every row takes at least 8 bytes (a dimension >= 1 and one value), so this bounds the
    // loop; it ends earlier, at the end of the file.
    let max_rows = usize::try_from(file_len / 8 + 1).unwrap_or(usize::MAX);
    for row in 0..max_rows {
        if offset == file_len {
            break;
        }
        let left = file_len - offset;
        if left < 4 {
            return Err(err(
                row,
                offset,
                format!(
                    "{left} byte(s) left, too few for the 4-byte dimension: the file is truncated"
                ),
            ));
        }
        let mut dim_bytes = [0u8; 4];
        read_exact_or(&mut reader, &mut dim_bytes, path, || {
            err(row, offset, "the file ended early".to_string())
        })?;
        let row_dim = i32::from_le_bytes(dim_bytes);
        if row_dim <= 0 {
            return Err(err(
                row,
                offset,
                format!("dimension {row_dim}; expected a positive little-endian i32 dimension"),
            ));
        }
        let row_dim = row_dim as usize;
        match dim {
            Some(d) if d != row_dim => {
                return Err(err(
                    row,
                    offset,
                    format!("dimension {row_dim} differs from the first row's {d}; expected every row to have dimension {d}"),
                ))
            }
            _ => {}
        }
        let value_bytes = row_dim as u64 * 4;
        if value_bytes > left - 4 {
            return Err(err(
                row,
                offset,
                format!(
                    "dimension {row_dim} needs {value_bytes} bytes of values but {} byte(s) are left: the file is truncated or the dimension is corrupt",
                    left - 4
                ),
            ));
        }
        if dim.is_none() {
            dim = Some(row_dim);
            // Exact when the file is well formed; bounded by the file's length regardless.
            let rows = file_len / (4 + value_bytes);
            data.reserve(usize::try_from(rows).unwrap_or(0).saturating_mul(row_dim));
            row_bytes.resize(row_dim * 4, 0);
        }
        read_exact_or(&mut reader, &mut row_bytes, path, || {
            err(row, offset, "the file ended early".to_string())
        })?;
        for (column, chunk) in row_bytes.chunks_exact(4).enumerate() {
            let value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if !value.is_finite() {
                return Err(DataError::NonFinite {
                    path: path.to_path_buf(),
                    row,
                    column,
                    value,
                });
            }
            data.push(value);
        }
        offset += 4 + value_bytes;
    }
    match dim {
        Some(dim) => Ok(Dataset { dim, data }),
        None => Err(DataError::Empty {
            path: path.to_path_buf(),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Shared reading helpers
// ---------------------------------------------------------------------------------------

fn io_error(path: &Path, e: &std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Opens a file for buffered reading and returns its length.
fn open(path: &Path) -> Result<(BufReader<File>, u64), DataError> {
    let file = File::open(path).map_err(|e| io_error(path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    if !meta.is_file() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            message: "not a regular file; expected a .npy or .fvecs file".to_string(),
        });
    }
    Ok((BufReader::with_capacity(READ_CHUNK_BYTES, file), meta.len()))
}

/// `read_exact`, turning an early end of file into `eof()` and other failures into
/// [`DataError::Io`].
fn read_exact_or(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    eof: impl FnOnce() -> DataError,
) -> Result<(), DataError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            eof()
        } else {
            io_error(path, &e)
        }
    })
}

/// Reads `count` little-endian `f32`s into `out`, a chunk at a time.
fn read_f32s(
    reader: &mut impl Read,
    count: usize,
    out: &mut Vec<f32>,
    path: &Path,
) -> Result<(), DataError> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut left = count;
    while left > 0 {
        let take = left.min(READ_CHUNK_BYTES / 4);
        let bytes = &mut buf[..take * 4];
        read_exact_or(reader, bytes, path, || DataError::Npy {
            path: path.to_path_buf(),
            reason: "the data section ended early: the file is truncated".to_string(),
        })?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        left -= take;
    }
    Ok(())
}

/// Rejects NaN and infinities, naming the first one's row and column.
fn check_finite(data: &[f32], dim: usize, path: &Path) -> Result<(), DataError> {
    match data.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(DataError::NonFinite {
            path: path.to_path_buf(),
            row: i / dim,
            column: i % dim,
            value: data[i],
        }),
    }
}
