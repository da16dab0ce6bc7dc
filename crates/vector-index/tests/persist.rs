//! Saving and loading: round trips give the same answers; truncated, bit-flipped,
//! wrong-magic, wrong-version and semantically bad files give `Corrupt` naming the path and
//! the reason, never a panic; I/O failures give `Io`; a save leaves no temporary file.

use std::path::Path;

use vector_index::persist::{HEADER_LEN, MAGIC};
use vector_index::{Id, Index, IndexParams, Metric, VectorError};

fn random_vector(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn params(dim: usize, metric: Metric) -> IndexParams {
    IndexParams {
        m: 8,
        ef_construction: 32,
        ef_search: 40,
        exact_below: 50,
        rebuild_ratio: 7.5,
        ..IndexParams::new(dim, metric)
    }
}

/// An index with removed and replaced ids (so tombstones), `n` live.
fn sample(dim: usize, metric: Metric, n: u64, seed: u64) -> Index {
    let mut rng = fastrand::Rng::with_seed(seed);
    let index = Index::new(params(dim, metric)).unwrap();
    for id in 0..n + 10 {
        index.add(id, &random_vector(&mut rng, dim)).unwrap();
    }
    for id in n..n + 10 {
        index.remove(id);
    }
    for id in 0..n.min(5) {
        index.add(id, &random_vector(&mut rng, dim)).unwrap();
    }
    index
}

fn corrupt_reason(path: &Path) -> String {
    match Index::load(path) {
        Err(VectorError::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("a damaged file loaded"),
    }
}

/// Rewrites the trailing checksum so a deliberate edit gets past it.
fn fix_checksum(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_gives_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    for (metric, n) in [(Metric::L2, 30), (Metric::L2, 400), (Metric::Cosine, 300)] {
        let dim = 6;
        let index = sample(dim, metric, n, 1);
        let path = dir.path().join(format!("{metric}-{n}.vidx"));
        index.save(&path).unwrap();
        let loaded = Index::load(&path).unwrap();
        assert_eq!(loaded.params(), index.params());
        assert_eq!(loaded.len(), index.len());
        let mut a = index.ids();
        let mut b = loaded.ids();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        for id in &a {
            let (x, y) = (index.get(*id).unwrap(), loaded.get(*id).unwrap());
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= 1e-6, "id {id}: {x:?} vs {y:?}");
            }
        }
        assert_eq!(loaded.stats().tombstones, 0);
        let mut rng = fastrand::Rng::with_seed(2);
        let (mut same, mut total) = (0, 0);
        for _ in 0..30 {
            let q = random_vector(&mut rng, dim);
            let exclude = [rng.u64(..n)];
            let before = index.exact_search(&q, 10, &exclude).unwrap();
            let after = loaded.exact_search(&q, 10, &exclude).unwrap();
            let ids = |h: &[vector_index::Hit]| h.iter().map(|h| h.id).collect::<Vec<Id>>();
            assert_eq!(ids(&before), ids(&after));
            let before = index.search(&q, 10, None, &exclude).unwrap();
            let after = loaded.search(&q, 10, None, &exclude).unwrap();
            assert_eq!(before.len(), after.len());
            if n < 50 {
                // Below exact_below both answers are exact: identical.
                assert_eq!(ids(&before), ids(&after));
            }
            same += after
                .iter()
                .filter(|h| before.iter().any(|b| b.id == h.id))
                .count();
            total += after.len();
        }
        // Above it, each graph is approximate; they must agree nearly everywhere.
        assert!(
            same as f64 >= 0.9 * total as f64,
            "{metric} {n}: {same}/{total}"
        );
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }
}

#[test]
fn an_empty_index_round_trips_and_a_save_replaces_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.vidx");
    let empty = Index::new(params(3, Metric::L2)).unwrap();
    empty.save(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        HEADER_LEN + 4
    );
    assert!(Index::load(&path).unwrap().is_empty());
    let index = sample(3, Metric::L2, 20, 4);
    index.save(&path).unwrap();
    assert_eq!(Index::load(&path).unwrap().len(), 20);
    // Into a subdirectory: the temporary file goes beside the target.
    let nested = dir.path().join("sub");
    std::fs::create_dir(&nested).unwrap();
    index.save(&nested.join("y.vidx")).unwrap();
    assert_eq!(Index::load(&nested.join("y.vidx")).unwrap().len(), 20);
}

#[test]
fn truncation_at_every_offset_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.vidx");
    sample(4, Metric::Cosine, 12, 5).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.vidx");
    for len in 0..bytes.len() {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let reason = corrupt_reason(&cut);
        if len >= MAGIC.len() {
            assert!(
                reason.contains("truncated") || reason.contains("length mismatch"),
                "cut at {len}: {reason}"
            );
        }
    }
    // Extended is as bad as truncated.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 9]);
    std::fs::write(&cut, &longer).unwrap();
    assert!(corrupt_reason(&cut).contains("length mismatch"));
}

#[test]
fn every_flipped_bit_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.vidx");
    sample(3, Metric::L2, 6, 6).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.vidx");
    for position in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[position] ^= 1 << bit;
            std::fs::write(&bad, &b).unwrap();
            let reason = corrupt_reason(&bad);
            assert!(!reason.is_empty(), "byte {position} bit {bit}");
        }
    }
    let mut b = bytes.clone();
    b[HEADER_LEN + 9] ^= 0x40;
    std::fs::write(&bad, &b).unwrap();
    assert!(corrupt_reason(&bad).starts_with("checksum mismatch"));
}

#[test]
fn wrong_magic_version_and_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.vidx");
    sample(3, Metric::L2, 6, 7).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.vidx");
    let check = |edit: &dyn Fn(&mut Vec<u8>), want: &str| {
        let mut b = bytes.clone();
        edit(&mut b);
        std::fs::write(&bad, &b).unwrap();
        let reason = corrupt_reason(&bad);
        assert!(reason.contains(want), "{reason:?} lacks {want:?}");
        let message = Index::load(&bad).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("corrupt index file {}: ", bad.display())),
            "{message}"
        );
    };
    check(
        &|b| b[..8].copy_from_slice(b"NOTMAGIC"),
        "bad magic \"NOTMAGIC\"",
    );
    check(&|b| b.splice(0..0, *b"x").for_each(drop), "bad magic");
    check(
        &|b| {
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            fix_checksum(b);
        },
        "unsupported format version 2: expected 1",
    );
    // Values behind a valid checksum are checked too.
    check(
        &|b| {
            b[32..36].copy_from_slice(&300u32.to_le_bytes());
            fix_checksum(b);
        },
        "bad parameters: invalid m 300",
    );
    check(
        &|b| {
            b[24..28].copy_from_slice(&0u32.to_le_bytes());
            fix_checksum(b);
        },
        "bad parameters: invalid dim 0",
    );
    check(
        &|b| {
            b[28] = 9;
            fix_checksum(b);
        },
        "metric code 9",
    );
    check(
        &|b| {
            b[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&f32::NAN.to_le_bytes());
            fix_checksum(b);
        },
        "component 0 is NaN",
    );
    check(
        &|b| {
            let second = HEADER_LEN + 8 + 4 * 3;
            let first_id: [u8; 8] = b[HEADER_LEN..HEADER_LEN + 8].try_into().unwrap();
            b[second..second + 8].copy_from_slice(&first_id);
            fix_checksum(b);
        },
        "appears twice",
    );
    check(
        &|b| {
            b[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
            fix_checksum(b);
        },
        "counts do not match the length",
    );
    std::fs::write(&bad, b"").unwrap();
    assert!(corrupt_reason(&bad).contains("truncated: 0 bytes"));
}

#[test]
fn io_failures_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.vidx");
    match Index::load(&missing) {
        Err(VectorError::Io { path, message }) => {
            assert_eq!(path, missing);
            assert!(message.starts_with("reading: "), "{message}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let index = sample(2, Metric::L2, 3, 8);
    let nowhere = dir.path().join("no-such-dir").join("x.vidx");
    let e = index.save(&nowhere).unwrap_err();
    assert!(matches!(e, VectorError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("creating the temporary file"), "{e}");
    let e = index.save(Path::new("/")).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected a path ending in a file name"),
        "{e}"
    );
    // A directory where the file should be.
    let e = Index::load(dir.path()).unwrap_err();
    assert!(matches!(e, VectorError::Io { .. }), "{e:?}");
}
