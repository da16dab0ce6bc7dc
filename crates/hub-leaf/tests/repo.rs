//! The repository model through its public API: commits and the tip, idempotent re-apply,
//! all-or-nothing apply, the hub's compare-and-swap, bounded range pulls that converge,
//! hash and path validation, reopening, deterministic hashes, `SQLITE_BUSY` surfacing.
//! Every test works in its own temp dir.

use std::path::Path;

use hub_leaf::repo::{hash_blob, Applied, Commit, NewCommit, Pull, Repo, RepoError, Tip};

fn open(dir: &Path, name: &str) -> Repo {
    Repo::open(&dir.join(name)).expect("open repository")
}

fn new_commit(n: u64, files: &[(&str, Option<&[u8]>)]) -> NewCommit {
    NewCommit {
        author: format!("agent-{}", n % 3),
        message: format!("task {n}"),
        created_ms: 1_700_000_000_000 + n,
        files: files
            .iter()
            .map(|(p, c)| (p.to_string(), c.map(|c| c.to_vec())))
            .collect(),
    }
}

/// A repository with `n` commits, commit `i` writing `f{i % 4}.txt` with 100 bytes.
fn filled(dir: &Path, name: &str, n: u64) -> Repo {
    let mut r = open(dir, name);
    for i in 1..=n {
        let content = vec![b'a' + (i % 26) as u8; 100];
        r.commit(&new_commit(
            i,
            &[(&format!("f{}.txt", i % 4), Some(&content))],
        ))
        .unwrap();
    }
    r
}

/// Everything observable about a repository's state, for before/after comparisons.
fn state(r: &Repo) -> (Option<Tip>, u64, Vec<(String, String)>, String) {
    (
        r.tip().unwrap(),
        r.commit_count().unwrap(),
        r.files().unwrap(),
        r.manifest_hash().unwrap(),
    )
}

fn all_commits(r: &Repo) -> Pull {
    r.commits_after(0, usize::MAX, usize::MAX).unwrap()
}

#[test]
fn commit_advances_the_tip_and_stores_file_content() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = open(dir.path(), "r.db");
    assert_eq!(r.tip().unwrap(), None);
    assert_eq!(r.commit_count().unwrap(), 0);
    assert_eq!(r.files().unwrap(), vec![]);

    let c1 = r
        .commit(&new_commit(
            1,
            &[("src/a.rs", Some(b"fn a() {}")), ("README", Some(b"hi"))],
        ))
        .unwrap();
    assert_eq!(c1.seq, 1);
    assert_eq!(c1.parent, None);
    assert_eq!(r.tip().unwrap(), Some(c1.tip()));
    assert_eq!(
        r.file("src/a.rs").unwrap().as_deref(),
        Some(&b"fn a() {}"[..])
    );
    assert_eq!(r.file("README").unwrap().as_deref(), Some(&b"hi"[..]));
    assert_eq!(r.file("missing").unwrap(), None);
    // Changes are sorted by path whatever order they were given in.
    let paths: Vec<&str> = c1.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["README", "src/a.rs"]);

    let c2 = r
        .commit(&new_commit(
            2,
            &[("src/a.rs", Some(b"fn a() { 1 }")), ("README", None)],
        ))
        .unwrap();
    assert_eq!(c2.seq, 2);
    assert_eq!(c2.parent.as_deref(), Some(c1.hash.as_str()));
    assert_eq!(
        r.tip().unwrap(),
        Some(Tip {
            seq: 2,
            hash: c2.hash.clone()
        })
    );
    assert_eq!(r.file("README").unwrap(), None);
    assert_eq!(
        r.files().unwrap(),
        vec![("src/a.rs".to_string(), hash_blob(b"fn a() { 1 }"))]
    );
    // The old content stays stored as a blob.
    assert_eq!(
        r.blob(&hash_blob(b"hi")).unwrap().as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(r.commit_count().unwrap(), 2);
    assert_eq!(r.commit_at(1).unwrap(), Some(c1));
    assert_eq!(r.commit_at(2).unwrap(), Some(c2));
    assert_eq!(r.commit_at(3).unwrap(), None);
}

#[test]
fn reopening_the_file_shows_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let r = filled(dir.path(), "r.db", 7);
        (state(&r), all_commits(&r))
    };
    let r = open(dir.path(), "r.db");
    assert_eq!((state(&r), all_commits(&r)), before);
    assert_eq!(r.tip().unwrap().unwrap().seq, 7);
}

#[test]
fn hashes_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = filled(dir.path(), "a.db", 10);
    let b = filled(dir.path(), "b.db", 10);
    assert_eq!(all_commits(&a), all_commits(&b));
    assert_eq!(a.manifest_hash().unwrap(), b.manifest_hash().unwrap());

    // prepare gives what commit stores, and the order of the files does not matter.
    let nc = new_commit(
        11,
        &[("x", Some(b"1")), ("y/z", Some(b"2")), ("f0.txt", None)],
    );
    let mut reversed = nc.clone();
    reversed.files.reverse();
    let tip = a.tip().unwrap();
    let (p1, blobs1) = Repo::prepare(tip.as_ref(), &nc).unwrap();
    let (p2, blobs2) = Repo::prepare(tip.as_ref(), &reversed).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(blobs1.len(), 2);
    assert_eq!(blobs2.len(), 2);
    let mut a = a;
    assert_eq!(a.commit(&nc).unwrap(), p1);
    // Another creation time is another commit.
    let mut later = nc.clone();
    later.created_ms += 1;
    assert_ne!(Repo::prepare(tip.as_ref(), &later).unwrap().0.hash, p1.hash);
    // The same content in two paths is one blob.
    let (_, blobs) = Repo::prepare(
        None,
        &new_commit(1, &[("p", Some(b"same")), ("q", Some(b"same"))]),
    )
    .unwrap();
    assert_eq!(blobs, vec![(hash_blob(b"same"), b"same".to_vec())]);
}

#[test]
fn re_applying_the_same_commits_and_blobs_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src.db", 6);
    let mut dst = open(dir.path(), "dst.db");
    let pull = all_commits(&src);
    assert_eq!(dst.apply(&pull.commits, &pull.blobs).unwrap(), 6);
    let after_first = state(&dst);
    assert_eq!(after_first, state(&src));
    assert_eq!(dst.apply(&pull.commits, &pull.blobs).unwrap(), 0);
    assert_eq!(dst.apply(&pull.commits[2..4], &[]).unwrap(), 0);
    assert_eq!(dst.apply(&[], &pull.blobs).unwrap(), 0);
    assert_eq!(state(&dst), after_first);

    // A partial overlap applies only the new tail.
    let mut third = open(dir.path(), "third.db");
    let head = src.commits_after(0, 3, usize::MAX).unwrap();
    assert_eq!(third.apply(&head.commits, &head.blobs).unwrap(), 3);
    assert_eq!(third.apply(&pull.commits, &pull.blobs).unwrap(), 3);
    assert_eq!(state(&third), state(&src));

    // A retried push at the hub is not an error, and writes nothing.
    let last = pull.commits.last().unwrap();
    let expected = Some(Tip {
        seq: 5,
        hash: pull.commits[4].hash.clone(),
    });
    let again = dst
        .apply_if_tip(expected.as_ref(), last, &pull.blobs)
        .unwrap();
    assert_eq!(
        again,
        Applied {
            tip: last.tip(),
            new: false
        }
    );
    assert_eq!(state(&dst), after_first);
}

#[test]
fn a_commit_not_on_the_tip_is_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src.db", 5);
    let pull = all_commits(&src);
    let mut dst = open(dir.path(), "dst.db");
    dst.apply(&pull.commits[..2], &pull.blobs).unwrap();
    let before = state(&dst);

    // A gap: commit 4 on tip 2.
    let err = dst.apply(&pull.commits[3..4], &pull.blobs).unwrap_err();
    match &err {
        RepoError::NotOnTip {
            commit, seq, tip, ..
        } => {
            assert_eq!(commit, &pull.commits[3].hash);
            assert_eq!(*seq, 4);
            assert_eq!(tip.as_ref().map(|t| t.seq), Some(2));
        }
        other => panic!("expected NotOnTip, got {other}"),
    }
    assert!(err.to_string().contains(&pull.commits[3].hash), "{err}");
    assert_eq!(state(&dst), before);

    // All or nothing: commit 3 is fine, commit 5 is not, so neither is stored.
    let batch = vec![pull.commits[2].clone(), pull.commits[4].clone()];
    assert!(matches!(
        dst.apply(&batch, &pull.blobs),
        Err(RepoError::NotOnTip { seq: 5, .. })
    ));
    assert_eq!(state(&dst), before);

    // A fork: another commit 3 on the same parent, while commit 3 is stored.
    dst.apply(&pull.commits[2..3], &pull.blobs).unwrap();
    let before = state(&dst);
    let parent = pull.commits[1].tip();
    let (fork, blobs) =
        Repo::prepare(Some(&parent), &new_commit(99, &[("other", Some(b"fork"))])).unwrap();
    assert!(matches!(
        dst.apply(&[fork], &blobs),
        Err(RepoError::NotOnTip { seq: 3, .. })
    ));
    assert_eq!(state(&dst), before);
}

#[test]
fn compare_and_swap_applies_on_the_expected_tip_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = open(dir.path(), "hub.db");
    let mut leaf_a = open(dir.path(), "a.db");
    let mut leaf_b = open(dir.path(), "b.db");

    // Both leaves prepare on the empty trunk; A wins.
    let nc_a = new_commit(1, &[("slot-0/f", Some(b"from a"))]);
    let nc_b = new_commit(2, &[("slot-1/f", Some(b"from b"))]);
    let (ca, blobs_a) = Repo::prepare(leaf_a.tip().unwrap().as_ref(), &nc_a).unwrap();
    let (cb, blobs_b) = Repo::prepare(leaf_b.tip().unwrap().as_ref(), &nc_b).unwrap();
    let applied = hub.apply_if_tip(None, &ca, &blobs_a).unwrap();
    assert_eq!(
        applied,
        Applied {
            tip: ca.tip(),
            new: true
        }
    );
    leaf_a.apply(std::slice::from_ref(&ca), &blobs_a).unwrap();
    assert_eq!(leaf_a.tip().unwrap(), hub.tip().unwrap());

    // B's compare-and-swap fails with the current tip, and writes nothing.
    let before = state(&hub);
    match hub.apply_if_tip(None, &cb, &blobs_b) {
        Err(RepoError::TipMoved { current }) => assert_eq!(current, Some(ca.tip())),
        other => panic!("expected TipMoved, got {other:?}"),
    }
    assert_eq!(state(&hub), before);
    assert_eq!(hub.blob(&blobs_b[0].0).unwrap(), None);

    // The fork retry: B pulls, prepares the same change on the new tip, and wins.
    let pull = hub.commits_after(0, 10, usize::MAX).unwrap();
    leaf_b.apply(&pull.commits, &pull.blobs).unwrap();
    let tip = leaf_b.tip().unwrap();
    let (cb2, blobs_b2) = Repo::prepare(tip.as_ref(), &nc_b).unwrap();
    assert_eq!(cb2.seq, 2);
    let applied = hub.apply_if_tip(tip.as_ref(), &cb2, &blobs_b2).unwrap();
    assert_eq!(
        applied,
        Applied {
            tip: cb2.tip(),
            new: true
        }
    );
    assert_eq!(
        hub.file("slot-0/f").unwrap().as_deref(),
        Some(&b"from a"[..])
    );
    assert_eq!(
        hub.file("slot-1/f").unwrap().as_deref(),
        Some(&b"from b"[..])
    );

    // A stale expectation is TipMoved even if the commit itself would fit the real tip.
    let (c3, blobs3) =
        Repo::prepare(Some(&cb2.tip()), &new_commit(3, &[("z", Some(b"z"))])).unwrap();
    assert!(matches!(
        hub.apply_if_tip(Some(&ca.tip()), &c3, &blobs3),
        Err(RepoError::TipMoved { current: Some(t) }) if t == cb2.tip()
    ));
    // The right expectation with a commit built elsewhere is NotOnTip.
    let before = state(&hub);
    let (stray, stray_blobs) =
        Repo::prepare(Some(&ca.tip()), &new_commit(4, &[("w", Some(b"w"))])).unwrap();
    assert!(matches!(
        hub.apply_if_tip(Some(&cb2.tip()), &stray, &stray_blobs),
        Err(RepoError::NotOnTip { .. })
    ));
    assert_eq!(state(&hub), before);
}

#[test]
fn a_range_pull_returns_exactly_the_commits_after_n_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src.db", 20);
    let seqs = |p: &Pull| p.commits.iter().map(|c| c.seq).collect::<Vec<_>>();

    let p = src.commits_after(5, 4, usize::MAX).unwrap();
    assert_eq!(seqs(&p), [6, 7, 8, 9]);
    assert!(p.more);
    // The blobs are exactly those the commits refer to.
    let mut wanted: Vec<String> = p
        .commits
        .iter()
        .flat_map(|c| c.changes.iter().filter_map(|ch| ch.blob.clone()))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut got: Vec<String> = p.blobs.iter().map(|(h, _)| h.clone()).collect();
    got.sort();
    assert_eq!(got, wanted);

    let p = src.commits_after(15, 10, usize::MAX).unwrap();
    assert_eq!(seqs(&p), [16, 17, 18, 19, 20]);
    assert!(!p.more);
    let p = src.commits_after(16, 4, usize::MAX).unwrap();
    assert_eq!(seqs(&p), [17, 18, 19, 20]);
    assert!(!p.more, "exactly max_commits left is not more");
    let p = src.commits_after(20, 10, usize::MAX).unwrap();
    assert!(p.commits.is_empty() && p.blobs.is_empty() && !p.more);
    let p = src.commits_after(u64::MAX, 10, usize::MAX).unwrap();
    assert!(p.commits.is_empty() && !p.more);

    // Bytes: 100 bytes of new blob per commit here.
    let p = src.commits_after(0, 100, 250).unwrap();
    assert_eq!(seqs(&p), [1, 2]);
    assert_eq!(p.blob_bytes(), 200);
    assert!(p.more);
    // The first commit always comes, even over the byte bound.
    let p = src.commits_after(3, 100, 0).unwrap();
    assert_eq!(seqs(&p), [4]);
    assert!(p.more);
    assert_eq!(p.blob_bytes(), 100);

    assert!(matches!(
        src.commits_after(0, 0, 100),
        Err(RepoError::InvalidLimit { .. })
    ));
}

#[test]
fn applying_bounded_pulls_in_a_loop_converges_to_the_same_tip_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = open(dir.path(), "src.db");
    let mut rng = fastrand::Rng::with_seed(42);
    for i in 1..=60u64 {
        let mut files = Vec::new();
        for _ in 0..rng.usize(1..5) {
            let path = format!("d{}/f{}", rng.u8(0..3), rng.u8(0..6));
            if files.iter().any(|(p, _)| p == &path) {
                continue;
            }
            let content = if rng.u8(0..5) == 0 {
                None
            } else {
                Some(
                    (0..rng.usize(0..400))
                        .map(|_| rng.u8(..))
                        .collect::<Vec<u8>>(),
                )
            };
            files.push((path, content));
        }
        let nc = NewCommit {
            author: "gen".into(),
            message: format!("commit {i}"),
            created_ms: i,
            files,
        };
        src.commit(&nc).unwrap();
    }
    let mut dst = open(dir.path(), "dst.db");
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 60, "no convergence after 60 pulls");
        let after = dst.tip().unwrap().map_or(0, |t| t.seq);
        let pull = src.commits_after(after, 7, 1_000).unwrap();
        assert!(pull.commits.len() <= 7);
        assert!(pull.commits.len() == 1 || pull.blob_bytes() <= 1_000);
        // Pulls travel as JSON.
        let json = serde_json::to_string(&pull).unwrap();
        let pull: Pull = serde_json::from_str(&json).unwrap();
        let n = dst.apply(&pull.commits, &pull.blobs).unwrap();
        assert_eq!(n, pull.commits.len());
        if !pull.more {
            break;
        }
    }
    assert!(
        rounds >= 9,
        "60 commits in pulls of at most 7 took {rounds} rounds"
    );
    assert_eq!(state(&dst), state(&src));
    for (path, _) in src.files().unwrap() {
        assert_eq!(dst.file(&path).unwrap(), src.file(&path).unwrap(), "{path}");
    }
    assert_eq!(all_commits(&dst), all_commits(&src));
}

#[test]
fn bad_hashes_are_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src.db", 2);
    let pull = all_commits(&src);
    let mut dst = open(dir.path(), "dst.db");
    let empty = state(&dst);

    // A commit whose content does not match its hash.
    let mut forged = pull.commits.clone();
    forged[1].message = "rewritten history".into();
    match dst.apply(&forged, &pull.blobs) {
        Err(RepoError::BadHash {
            what: "commit",
            claimed,
            ..
        }) => {
            assert_eq!(claimed, pull.commits[1].hash)
        }
        other => panic!("expected BadHash, got {other:?}"),
    }
    // A blob whose bytes do not match its hash.
    let mut blobs = pull.blobs.clone();
    blobs[0].1.push(b'!');
    let err = dst.apply(&pull.commits, &blobs).unwrap_err();
    assert!(
        matches!(err, RepoError::BadHash { what: "blob", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&pull.blobs[0].0), "{err}");
    // Malformed hashes.
    let mut malformed = pull.commits.clone();
    malformed[0].hash = "XYZ".into();
    assert!(matches!(
        dst.apply(&malformed, &pull.blobs),
        Err(RepoError::InvalidHash { what: "commit", .. })
    ));
    let mut blobs = pull.blobs.clone();
    blobs[0].0 = blobs[0].0.to_uppercase();
    assert!(matches!(
        dst.apply(&pull.commits, &blobs),
        Err(RepoError::InvalidHash { what: "blob", .. })
    ));
    // A blob neither supplied nor stored.
    match dst.apply(&pull.commits, &pull.blobs[1..]) {
        Err(RepoError::MissingBlob { blob, .. }) => assert_eq!(blob, pull.blobs[0].0),
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    // The compare-and-swap verifies too.
    assert!(matches!(
        dst.apply_if_tip(None, &forged[1], &pull.blobs),
        Err(RepoError::BadHash { .. })
    ));
    assert_eq!(state(&dst), empty);
    assert_eq!(dst.blob(&pull.blobs[0].0).unwrap(), None);

    // Structural checks come with the commit named.
    let mut no_parent = pull.commits[1].clone();
    no_parent.parent = None;
    no_parent.hash = no_parent.compute_hash();
    let err = dst.apply(&[no_parent.clone()], &pull.blobs).unwrap_err();
    assert!(matches!(err, RepoError::InvalidCommit { .. }), "{err}");
    assert!(err.to_string().contains(&no_parent.hash), "{err}");
    let mut unsorted: Commit = src.commit_at(1).unwrap().unwrap();
    unsorted.changes.push(unsorted.changes[0].clone());
    unsorted.hash = unsorted.compute_hash();
    assert!(matches!(
        dst.apply(&[unsorted], &pull.blobs),
        Err(RepoError::InvalidCommit { .. })
    ));
    assert_eq!(state(&dst), empty);
}

#[test]
fn invalid_paths_are_rejected_with_the_path_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = open(dir.path(), "r.db");
    for bad in ["../escape", "/abs", "a//b", "a/./b", "nul\0byte", ""] {
        let err = r.commit(&new_commit(1, &[(bad, Some(b"x"))])).unwrap_err();
        assert!(
            matches!(err, RepoError::InvalidPath { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    let long = "d/".repeat(600) + "f";
    assert!(matches!(
        r.commit(&new_commit(1, &[(long.as_str(), Some(b"x"))])),
        Err(RepoError::InvalidPath { .. })
    ));
    assert!(matches!(r.file("../x"), Err(RepoError::InvalidPath { .. })));
    // A path twice in one commit.
    let err = r
        .commit(&new_commit(1, &[("p", Some(b"1")), ("p", None)]))
        .unwrap_err();
    assert!(err.to_string().contains("\"p\""), "{err}");
    assert_eq!(r.tip().unwrap(), None);

    // A path cannot be both a file and a directory.
    r.commit(&new_commit(
        1,
        &[("a", Some(b"file a")), ("x/y", Some(b"y"))],
    ))
    .unwrap();
    let before = state(&r);
    let err = r
        .commit(&new_commit(2, &[("a/b", Some(b"b"))]))
        .unwrap_err();
    assert!(matches!(err, RepoError::InvalidPath { .. }), "{err}");
    assert!(err.to_string().contains("\"a/b\""), "{err}");
    let err = r.commit(&new_commit(2, &[("x", Some(b"x"))])).unwrap_err();
    assert!(err.to_string().contains("\"x/y\""), "{err}");
    assert_eq!(state(&r), before);
    // ... but one commit may replace the file with a directory.
    r.commit(&new_commit(2, &[("a", None), ("a/b", Some(b"b"))]))
        .unwrap();
    assert_eq!(r.file("a/b").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(r.file("a").unwrap(), None);
    // Names sharing a prefix are not nested.
    r.commit(&new_commit(
        3,
        &[("x-y", Some(b"1")), ("x.txt", Some(b"2"))],
    ))
    .unwrap();
}

#[test]
fn sqlite_busy_surfaces_as_an_error_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let mut r = Repo::open(&path).unwrap();
    r.commit(&new_commit(1, &[("a", Some(b"1"))])).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let err = r.commit(&new_commit(2, &[("a", Some(b"2"))])).unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(err.to_string().contains("r.db"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    other.execute_batch("ROLLBACK").unwrap();
    assert_eq!(r.tip().unwrap().unwrap().seq, 1);
    r.commit(&new_commit(2, &[("a", Some(b"2"))])).unwrap();
    assert_eq!(r.tip().unwrap().unwrap().seq, 2);
}

#[test]
fn an_unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    drop(Repo::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 7).unwrap();
    drop(raw);
    match Repo::open(&path) {
        Err(RepoError::Schema { found: 7, .. }) => {}
        other => panic!("expected Schema, got {other:?}"),
    }
    // A missing directory is an error naming the file, not a panic.
    let err = Repo::open(&dir.path().join("no/such/dir/r.db")).unwrap_err();
    assert!(err.to_string().contains("r.db"), "{err}");
}

#[test]
fn pulls_travel_as_json_with_base64_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let src = filled(dir.path(), "src.db", 3);
    let pull = all_commits(&src);
    let json = serde_json::to_value(&pull).unwrap();
    let first = &json["blobs"][0];
    assert_eq!(first["hash"], pull.blobs[0].0);
    assert!(first["data"].is_string());
    let back: Pull = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, pull);
    let mut broken = json;
    broken["blobs"][0]["data"] = "not base64!".into();
    let err = serde_json::from_value::<Pull>(broken).unwrap_err();
    assert!(err.to_string().contains(&pull.blobs[0].0), "{err}");
}

#[test]
fn each_commit_walks_the_whole_history_in_order_without_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let r = filled(dir.path(), "walk.db", 300);
    let mut seen = Vec::new();
    r.each_commit(|c| seen.push(c)).unwrap();
    assert_eq!(seen, all_commits(&r).commits);
    let empty = open(dir.path(), "empty.db");
    let mut n = 0;
    empty.each_commit(|_| n += 1).unwrap();
    assert_eq!(n, 0);
}
