//! The registry: names, its errors, dropping an index others still hold, recreating under
//! the same name, and create/drop/recreate cycles while other threads use the indices.

use std::sync::Arc;

use vector_index::registry::validate_name;
use vector_index::{IndexParams, Metric, Registry, VectorError};

fn params() -> IndexParams {
    IndexParams {
        m: 8,
        ef_construction: 32,
        ..IndexParams::new(4, Metric::L2)
    }
}

#[test]
fn create_get_names_drop_and_recreate() {
    let registry = Registry::new();
    assert!(registry.names().is_empty());
    let a = registry.create("workers", params()).unwrap();
    registry.create("playbook.v2", params()).unwrap();
    registry.create("A-1_b", params()).unwrap();
    assert_eq!(registry.names(), vec!["A-1_b", "playbook.v2", "workers"]);
    a.add(1, &[1.0, 0.0, 0.0, 0.0]).unwrap();
    assert!(Arc::ptr_eq(&a, &registry.get("workers").unwrap()));
    assert!(Arc::ptr_eq(
        &a,
        &registry.get_or_create("workers", params()).unwrap()
    ));

    // Dropped: gone from the registry, still working for the holder.
    assert!(registry.drop_index("workers"));
    assert!(!registry.drop_index("workers"));
    assert_eq!(registry.names(), vec!["A-1_b", "playbook.v2"]);
    a.add(2, &[0.0, 1.0, 0.0, 0.0]).unwrap();
    assert_eq!(
        a.search(&[0.0, 1.0, 0.0, 0.0], 1, None, &[]).unwrap()[0].id,
        2
    );
    assert_eq!(a.len(), 2);

    // Recreated: fresh and empty.
    let b = registry.get_or_create("workers", params()).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(b.is_empty());
    assert_eq!(a.len(), 2);
}

#[test]
fn registry_errors_name_the_value() {
    let registry = Registry::default();
    registry.create("x", params()).unwrap();
    let e = registry.create("x", params()).unwrap_err();
    assert_eq!(
        e,
        VectorError::IndexExists {
            name: "x".to_string()
        }
    );
    assert_eq!(
        e.to_string(),
        "index \"x\" already exists: expected a new name (or use get_or_create)"
    );
    let e = registry.get("nope").unwrap_err();
    assert_eq!(
        e,
        VectorError::IndexNotFound {
            name: "nope".to_string()
        }
    );
    assert_eq!(
        e.to_string(),
        "index \"nope\" not found: expected the name of an existing index"
    );
    let long = "a".repeat(129);
    for bad in [
        "",
        "has space",
        "../etc",
        ".hidden",
        "a/b",
        "ü",
        long.as_str(),
    ] {
        let e = registry.create(bad, params()).unwrap_err();
        assert!(
            matches!(e, VectorError::InvalidName { .. }),
            "{bad:?}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "invalid index name {bad:?}: expected 1 to 128 characters from \
                 A-Z a-z 0-9 _ - . , not starting with '.'"
            )
        );
        assert_eq!(registry.get_or_create(bad, params()).unwrap_err(), e);
        assert_eq!(validate_name(bad).unwrap_err(), e);
    }
    assert!(validate_name(&"a".repeat(128)).is_ok());
    // Invalid parameters are the index's error, and nothing is registered.
    let e = registry
        .create(
            "y",
            IndexParams {
                m: 1000,
                ..params()
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, VectorError::InvalidParameter { name: "m", .. }),
        "{e:?}"
    );
    let e = registry
        .get_or_create("y", IndexParams { dim: 0, ..params() })
        .unwrap_err();
    assert!(
        matches!(e, VectorError::InvalidParameter { name: "dim", .. }),
        "{e:?}"
    );
    assert_eq!(registry.names(), vec!["x"]);
}

/// Users add and search through `get_or_create` while another thread drops and recreates
/// the same names: every call succeeds on whichever index it got, nothing panics.
#[test]
fn drop_and_recreate_while_in_use() {
    let registry = Registry::new();
    let names = ["a", "b", "c"];
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..300 {
                let name = names[i % names.len()];
                registry.drop_index(name);
                if i % 2 == 0 {
                    let _ = registry.create(name, params());
                }
            }
        });
        for t in 0..3u64 {
            let registry = &registry;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for i in 0..300u64 {
                    let name = names[rng.usize(..names.len())];
                    let index = registry.get_or_create(name, params()).unwrap();
                    let v: Vec<f32> = (0..4).map(|_| rng.f32()).collect();
                    let id = t * 1000 + i;
                    index.add(id, &v).unwrap();
                    let hits = index.search(&v, 1, None, &[]).unwrap();
                    assert_eq!(hits[0].id, id);
                    if let Ok(other) = registry.get(names[rng.usize(..names.len())]) {
                        other.search(&v, 3, None, &[]).unwrap();
                    }
                }
            });
        }
    });
    for name in registry.names() {
        let index = registry.get(&name).unwrap();
        assert_eq!(index.stats().live, index.ids().len());
    }
}
