//! Data sets: the synthetic generator, the `--data` parser, and the `.npy` / `.fvecs`
//! loaders, including damaged and hostile files.

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use vector_index::data::{
    load, load_file, load_fvecs, load_npy, synthetic, synthetic_queries, DataError, DataSource,
    Dataset, Mixture,
};

/// A 3 × 4 matrix with distinct values: row r, column c holds r * 10 + c.
fn matrix() -> Dataset {
    let data = (0..3)
        .flat_map(|r| (0..4).map(move |c| (r * 10 + c) as f32))
        .collect();
    Dataset { dim: 4, data }
}

/// Writes `values` (in file order) as a `.npy` with the given dtype, shape and order.
fn write_npy(path: &Path, dtype: &str, shape: &[u64], order: npyz::Order, values: &[f32]) {
    let dtype = npyz::DType::Plain(dtype.parse().expect("test dtype"));
    let mut out = std::fs::File::create(path).expect("create npy");
    let mut writer = npyz::WriteOptions::new()
        .dtype(dtype)
        .shape(shape)
        .order(order)
        .writer(&mut out)
        .begin_nd()
        .expect("begin npy");
    writer.extend(values.iter().copied()).expect("write npy");
    writer.finish().expect("finish npy");
}

/// A version 1.0 `.npy` file with a hand-written header text and raw data bytes.
fn raw_npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(data);
    bytes
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `.fvecs` bytes: each row is (declared dim, values).
fn fvecs_bytes(rows: &[(i32, &[f32])]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (dim, values) in rows {
        bytes.extend(dim.to_le_bytes());
        bytes.extend(f32_bytes(values));
    }
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// ----------------------------------------------------------------------------------------
// Dataset and DataSource
// ----------------------------------------------------------------------------------------

#[test]
fn dataset_rows_and_split_tail() {
    let m = matrix();
    assert_eq!(m.len(), 3);
    assert!(!m.is_empty());
    assert_eq!(m.row(1), &[10.0, 11.0, 12.0, 13.0]);
    assert_eq!(m.get(3), None);
    assert_eq!(m.rows().count(), 3);
    let (base, tail) = m.clone().split_tail(1).expect("1 <= 3 rows");
    assert_eq!(base.len(), 2);
    assert_eq!(tail.len(), 1);
    assert_eq!(tail.row(0), m.row(2));
    assert!(m.clone().split_tail(4).is_none());
    let (all_base, none) = m.split_tail(0).expect("0 rows");
    assert_eq!((all_base.len(), none.len()), (3, 0));
    let empty = Dataset {
        dim: 0,
        data: Vec::new(),
    };
    assert!(empty.is_empty());
    assert_eq!(empty.rows().count(), 0);
}

#[test]
fn data_source_parses_synthetic_and_file_paths() {
    assert_eq!(
        "synthetic:2000,16".parse::<DataSource>(),
        Ok(DataSource::Synthetic { n: 2000, dim: 16 })
    );
    assert_eq!(
        "vectors/base.npy".parse::<DataSource>(),
        Ok(DataSource::File("vectors/base.npy".into()))
    );
    assert_eq!(
        "sift_base.FVECS".parse::<DataSource>(),
        Ok(DataSource::File("sift_base.FVECS".into()))
    );
    assert_eq!(
        DataSource::Synthetic { n: 5, dim: 3 }.to_string(),
        "synthetic:5,3"
    );
}

#[test]
fn data_source_errors_name_the_value_and_the_expected_form() {
    let cases = [
        ("synthetic:abc,16", "\"abc\" is not a whole number"),
        ("synthetic:100,x", "DIM \"x\" is not a whole number"),
        ("synthetic:0,16", "N is 0"),
        ("synthetic:10,0", "DIM is 0"),
        ("synthetic:10,70000", "DIM is 70000"),
        ("synthetic:10", "found 1 comma-separated value"),
        ("synthetic:1,2,3", "found 3 comma-separated value"),
        ("synthetic:100000000,65536", "exceeds"),
        ("data.csv", "neither a .npy nor a .fvecs extension"),
        ("", "empty"),
    ];
    for (text, fragment) in cases {
        let err = text
            .parse::<DataSource>()
            .expect_err(&format!("{text:?} should be rejected"));
        let message = err.to_string();
        assert!(
            message.contains(fragment),
            "{text:?}: {message:?} lacks {fragment:?}"
        );
        assert!(
            message.contains(&format!("{text:?}")),
            "{text:?}: {message:?} does not name the value"
        );
        assert!(message.contains("expected"), "{message:?}");
    }
}

// ----------------------------------------------------------------------------------------
// Synthetic data
// ----------------------------------------------------------------------------------------

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[test]
fn synthetic_data_is_deterministic_per_seed() {
    let a = synthetic(300, 8, 7).expect("valid sizes");
    let b = synthetic(300, 8, 7).expect("valid sizes");
    let c = synthetic(300, 8, 8).expect("valid sizes");
    assert_eq!((a.len(), a.dim), (300, 8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.data.iter().all(|x| x.is_finite()));
    let q1 = synthetic_queries(7, 300, 20, 8).expect("valid sizes");
    let q2 = synthetic_queries(7, 300, 20, 8).expect("valid sizes");
    assert_eq!(q1, q2);
    assert_eq!((q1.len(), q1.dim), (20, 8));
}

#[test]
fn synthetic_data_has_about_sqrt_n_clusters() {
    assert_eq!(Mixture::new(10_000, 4, 1).expect("valid").clusters(), 100);
    assert_eq!(Mixture::new(2_000, 4, 1).expect("valid").clusters(), 45);
    assert_eq!(Mixture::new(1, 4, 1).expect("valid").clusters(), 1);
}

/// Mean distance from each of the first `probes` rows of `from` to its nearest row of
/// `to` (skipping the identical row when `skip_self`), and mean distance to row `i + 1`.
fn nearest_and_typical(from: &Dataset, to: &Dataset, probes: usize, skip_self: bool) -> (f32, f32) {
    let (mut nearest_sum, mut typical_sum) = (0.0, 0.0);
    for i in 0..probes {
        let q = from.row(i);
        let nearest = to
            .rows()
            .enumerate()
            .filter(|(j, _)| !(skip_self && *j == i))
            .map(|(_, r)| squared_distance(q, r).sqrt())
            .fold(f32::INFINITY, f32::min);
        nearest_sum += nearest;
        typical_sum += squared_distance(q, to.row((i * 7 + 1) % to.len())).sqrt();
    }
    (nearest_sum / probes as f32, typical_sum / probes as f32)
}

#[test]
fn synthetic_data_is_clustered_and_queries_come_from_the_same_mixture() {
    let base = synthetic(900, 32, 3).expect("valid sizes");
    let (nearest, typical) = nearest_and_typical(&base, &base, 50, true);
    // Uniform random vectors in 32 dimensions have nearest ≈ 0.8 × typical; clustered data
    // has its nearest neighbour much closer than a typical point.
    assert!(
        nearest < 0.6 * typical,
        "not clustered: nearest {nearest}, typical {typical}"
    );

    let queries = synthetic_queries(3, 900, 50, 32).expect("valid sizes");
    let (q_nearest, q_typical) = nearest_and_typical(&queries, &base, 50, false);
    assert!(
        q_nearest < 0.6 * q_typical,
        "queries do not land in the clusters: nearest {q_nearest}, typical {q_typical}"
    );
    assert!(q_nearest > 0.0, "queries must be fresh points, not copies");
    // Queries from another seed's mixture are far from this data.
    let strangers = synthetic_queries(4, 900, 50, 32).expect("valid sizes");
    let (s_nearest, _) = nearest_and_typical(&strangers, &base, 50, false);
    assert!(s_nearest > 1.3 * q_nearest, "{s_nearest} vs {q_nearest}");
}

#[test]
fn synthetic_sizes_are_checked() {
    assert!(matches!(
        synthetic(0, 4, 1),
        Err(DataError::InvalidSource { .. })
    ));
    assert!(matches!(
        synthetic(4, 0, 1),
        Err(DataError::InvalidSource { .. })
    ));
    assert!(matches!(
        synthetic(usize::MAX, 2, 1),
        Err(DataError::InvalidSource { .. })
    ));
    assert!(matches!(
        synthetic_queries(1, 10, usize::MAX / 2, 4),
        Err(DataError::InvalidSource { .. })
    ));
    let one = synthetic(1, 1, 0).expect("one point of one dimension");
    assert_eq!(one.data.len(), 1);
    assert_eq!(
        load(&DataSource::Synthetic { n: 10, dim: 3 }, 5),
        synthetic(10, 3, 5)
    );
}

// ----------------------------------------------------------------------------------------
// .npy
// ----------------------------------------------------------------------------------------

#[test]
fn npy_c_order_loads_row_major() {
    let dir = temp();
    let m = matrix();
    let path = dir.path().join("c.npy");
    write_npy(&path, "<f4", &[3, 4], npyz::Order::C, &m.data);
    assert_eq!(load_npy(&path), Ok(m.clone()));
    assert_eq!(load_file(&path), Ok(m.clone()));
    assert_eq!(load(&DataSource::File(path), 0), Ok(m));
}

#[test]
fn npy_fortran_order_is_transposed_into_row_major() {
    let dir = temp();
    let m = matrix();
    // Fortran order stores column after column.
    let column_major: Vec<f32> = (0..4)
        .flat_map(|c| (0..3).map(move |r| (r * 10 + c) as f32))
        .collect();
    let path = dir.path().join("f.npy");
    write_npy(&path, "<f4", &[3, 4], npyz::Order::Fortran, &column_major);
    assert_eq!(load_npy(&path), Ok(m));

    // A single column or row in Fortran order.
    let path = dir.path().join("f_col.npy");
    write_npy(
        &path,
        "<f4",
        &[3, 1],
        npyz::Order::Fortran,
        &[1.0, 2.0, 3.0],
    );
    assert_eq!(
        load_npy(&path),
        Ok(Dataset {
            dim: 1,
            data: vec![1.0, 2.0, 3.0]
        })
    );
}

fn npy_error(path: &Path) -> String {
    match load_npy(path) {
        Ok(d) => panic!("{} loaded as {d:?}, expected an error", path.display()),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "{message:?} does not name the file"
            );
            message
        }
    }
}

#[test]
fn npy_rejects_other_dtypes_ranks_and_big_endian() {
    let dir = temp();
    let f64_path = dir.path().join("f64.npy");
    {
        let mut out = std::fs::File::create(&f64_path).expect("create");
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(&mut out)
            .begin_nd()
            .expect("begin");
        writer.extend([1.0f64, 2.0, 3.0, 4.0]).expect("write");
        writer.finish().expect("finish");
    }
    let message = npy_error(&f64_path);
    assert!(
        message.contains("'<f8'") && message.contains("'<f4'"),
        "{message}"
    );

    let big = dir.path().join("big.npy");
    write_npy(&big, ">f4", &[2, 2], npyz::Order::C, &[1.0, 2.0, 3.0, 4.0]);
    let message = npy_error(&big);
    assert!(message.contains("big-endian"), "{message}");

    let one_d = dir.path().join("1d.npy");
    write_npy(&one_d, "<f4", &[4], npyz::Order::C, &[1.0, 2.0, 3.0, 4.0]);
    let message = npy_error(&one_d);
    assert!(
        message.contains("1-D") && message.contains("2-D"),
        "{message}"
    );

    let three_d = dir.path().join("3d.npy");
    write_npy(
        &three_d,
        "<f4",
        &[2, 1, 2],
        npyz::Order::C,
        &[1.0, 2.0, 3.0, 4.0],
    );
    let message = npy_error(&three_d);
    assert!(message.contains("3-D"), "{message}");

    let zero_dim = dir.path().join("zero_dim.npy");
    write_npy(&zero_dim, "<f4", &[3, 0], npyz::Order::C, &[]);
    let message = npy_error(&zero_dim);
    assert!(message.contains("dimension 0"), "{message}");

    let no_rows = dir.path().join("no_rows.npy");
    write_npy(&no_rows, "<f4", &[0, 4], npyz::Order::C, &[]);
    assert!(matches!(load_npy(&no_rows), Err(DataError::Empty { .. })));
}

#[test]
fn npy_rejects_truncated_and_overlong_data() {
    let dir = temp();
    let good = dir.path().join("good.npy");
    write_npy(&good, "<f4", &[3, 4], npyz::Order::C, &matrix().data);
    let bytes = std::fs::read(&good).expect("read back");

    let short = write(dir.path(), "short.npy", &bytes[..bytes.len() - 3]);
    let message = npy_error(&short);
    assert!(
        message.contains("truncated") && message.contains("48 bytes"),
        "{message}"
    );

    let mut long_bytes = bytes.clone();
    long_bytes.extend([0u8; 4]);
    let long = write(dir.path(), "long.npy", &long_bytes);
    let message = npy_error(&long);
    assert!(message.contains("trailing bytes"), "{message}");

    // Cut inside the header.
    let cut = write(dir.path(), "cut.npy", &bytes[..40]);
    let message = npy_error(&cut);
    assert!(message.contains("header"), "{message}");

    let tiny = write(dir.path(), "tiny.npy", &bytes[..5]);
    let message = npy_error(&tiny);
    assert!(message.contains("too short"), "{message}");
}

#[test]
fn npy_rejects_bad_headers_without_trusting_them() {
    let dir = temp();
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);

    let not_npy = write(dir.path(), "text.npy", b"hello, this is not numpy at all\n");
    assert!(npy_error(&not_npy).contains("magic"));

    let mut version = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
        &data,
    );
    version[6] = 9;
    let path = write(dir.path(), "version.npy", &version);
    assert!(npy_error(&path).contains("version 9.0"));

    // A version 2 header claiming 4 GB of header text in a tiny file.
    let mut huge = b"\x93NUMPY\x02\x00".to_vec();
    huge.extend(u32::MAX.to_le_bytes());
    huge.extend(b"{'descr': '<f4'}");
    let path = write(dir.path(), "huge_header.npy", &huge);
    let message = npy_error(&path);
    assert!(message.contains("4294967295"), "{message}");

    let garbage = raw_npy(
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2), }",
        &data,
    );
    let path = write(dir.path(), "garbage.npy", &garbage);
    assert!(npy_error(&path).contains("bad .npy header"));

    let missing = raw_npy("{'descr': '<f4', 'fortran_order': False, }", &data);
    let path = write(dir.path(), "missing_shape.npy", &missing);
    assert!(npy_error(&path).contains("shape"));

    // A shape whose element count overflows 64 bits must not reach npyz's unchecked product.
    let overflow = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
        &data,
    );
    let path = write(dir.path(), "overflow.npy", &overflow);
    assert!(npy_error(&path).contains("64 bits"));

    // A shape far larger than the file: no allocation, a truncation error.
    let large = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }",
        &data,
    );
    let path = write(dir.path(), "large.npy", &large);
    assert!(npy_error(&path).contains("truncated"));

    let negative = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 2), }",
        &data,
    );
    let path = write(dir.path(), "negative.npy", &negative);
    assert!(npy_error(&path).contains("\"-2\""));

    let deep = format!("{{'descr': {}'<f4'{}}}", "[".repeat(500), "]".repeat(500));
    let path = write(dir.path(), "deep.npy", &raw_npy(&deep, &data));
    assert!(npy_error(&path).contains("deep"));
}

#[test]
fn npy_names_the_row_and_column_of_a_nan() {
    let dir = temp();
    let mut values = matrix().data;
    values[6] = f32::NAN; // row 1, column 2
    let path = dir.path().join("nan.npy");
    write_npy(&path, "<f4", &[3, 4], npyz::Order::C, &values);
    match load_npy(&path) {
        Err(DataError::NonFinite { row, column, .. }) => assert_eq!((row, column), (1, 2)),
        other => panic!("expected NonFinite, got {other:?}"),
    }

    // In Fortran order the position is reported in row-major terms too.
    let mut column_major = vec![0.0f32; 12];
    column_major[3 * 3 + 2] = f32::INFINITY; // column 3, row 2
    let path = dir.path().join("inf_f.npy");
    write_npy(&path, "<f4", &[3, 4], npyz::Order::Fortran, &column_major);
    let err = load_npy(&path).expect_err("infinity must be rejected");
    assert!(
        matches!(
            err,
            DataError::NonFinite {
                row: 2,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("row 2, column 3 is inf"), "{err}");
}

#[test]
fn missing_files_and_unknown_extensions_are_errors() {
    let dir = temp();
    let missing = dir.path().join("absent.npy");
    let err = load_npy(&missing).expect_err("missing file");
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.npy"), "{err}");
    assert!(matches!(
        load_fvecs(&dir.path().join("absent.fvecs")),
        Err(DataError::Io { .. })
    ));
    let err = load_file(&dir.path().join("vectors.csv")).expect_err("unknown extension");
    assert!(err.to_string().contains(".npy or .fvecs"), "{err}");
    // A directory named like a data file.
    let as_dir = dir.path().join("dir.npy");
    std::fs::create_dir(&as_dir).expect("mkdir");
    assert!(matches!(load_npy(&as_dir), Err(DataError::Io { .. })));
}

// ----------------------------------------------------------------------------------------
// .fvecs
// ----------------------------------------------------------------------------------------

#[test]
fn fvecs_round_trip() {
    let dir = temp();
    let m = matrix();
    let rows: Vec<(i32, &[f32])> = m.rows().map(|r| (4, r)).collect();
    let path = write(dir.path(), "m.fvecs", &fvecs_bytes(&rows));
    assert_eq!(load_fvecs(&path), Ok(m.clone()));
    assert_eq!(load(&DataSource::File(path), 0), Ok(m));
}

fn fvecs_error(path: &Path) -> DataError {
    let err = load_fvecs(path).expect_err("damaged .fvecs must be rejected");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err} does not name the file"
    );
    err
}

#[test]
fn fvecs_damage_is_reported_with_row_and_offset() {
    let dir = temp();
    let r0 = [1.0f32, 2.0, 3.0];
    let r1 = [4.0f32, 5.0, 6.0];

    // Truncated inside row 1's values: row 1 starts at byte 16.
    let mut bytes = fvecs_bytes(&[(3, &r0), (3, &r1)]);
    bytes.truncate(bytes.len() - 2);
    let err = fvecs_error(&write(dir.path(), "cut.fvecs", &bytes));
    assert!(
        matches!(
            err,
            DataError::Fvecs {
                row: 1,
                offset: 16,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");

    // Truncated inside row 1's dimension.
    let mut bytes = fvecs_bytes(&[(3, &r0)]);
    bytes.extend([3u8, 0]);
    let err = fvecs_error(&write(dir.path(), "cut_dim.fvecs", &bytes));
    assert!(
        matches!(
            err,
            DataError::Fvecs {
                row: 1,
                offset: 16,
                ..
            }
        ),
        "{err:?}"
    );

    let err = fvecs_error(&write(dir.path(), "zero.fvecs", &fvecs_bytes(&[(0, &[])])));
    assert!(
        matches!(
            err,
            DataError::Fvecs {
                row: 0,
                offset: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("dimension 0"), "{err}");

    let err = fvecs_error(&write(
        dir.path(),
        "negative.fvecs",
        &fvecs_bytes(&[(3, &r0), (-5, &r1)]),
    ));
    assert!(err.to_string().contains("dimension -5"), "{err}");

    let err = fvecs_error(&write(
        dir.path(),
        "mixed.fvecs",
        &fvecs_bytes(&[(3, &r0), (2, &r1[..2])]),
    ));
    assert!(
        matches!(
            err,
            DataError::Fvecs {
                row: 1,
                offset: 16,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("differs from the first row's 3"),
        "{err}"
    );

    // A dimension of 2^31 - 1 in a 16-byte file: rejected before any allocation.
    let err = fvecs_error(&write(
        dir.path(),
        "huge.fvecs",
        &fvecs_bytes(&[(i32::MAX, &r0)]),
    ));
    assert!(err.to_string().contains("2147483647"), "{err}");
}

#[test]
fn fvecs_rejects_nan_empty_and_non_fvecs_bytes() {
    let dir = temp();
    let r0 = [1.0f32, 2.0, 3.0];
    let r1 = [4.0f32, 5.0, f32::NAN];
    let err = fvecs_error(&write(
        dir.path(),
        "nan.fvecs",
        &fvecs_bytes(&[(3, &r0), (3, &r1)]),
    ));
    assert!(
        matches!(
            err,
            DataError::NonFinite {
                row: 1,
                column: 2,
                ..
            }
        ),
        "{err:?}"
    );

    let err = fvecs_error(&write(dir.path(), "empty.fvecs", &[]));
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");

    // Text is not fvecs: its first four bytes read as an enormous dimension.
    let err = fvecs_error(&write(
        dir.path(),
        "text.fvecs",
        b"0.1 0.2 0.3\n0.4 0.5 0.6\n",
    ));
    assert!(matches!(err, DataError::Fvecs { row: 0, .. }), "{err:?}");
}
