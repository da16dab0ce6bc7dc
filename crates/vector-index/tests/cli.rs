//! The `vector-index bench` command end to end: the JSON it writes on a tiny synthetic set
//! and on a `.npy` file with held-out queries, and clear errors (never a panic) on bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vector-index"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run the vector-index binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_json(path: &Path) -> Value {
    let body = std::fs::read_to_string(path).expect("--json file written");
    serde_json::from_str(&body).expect("--json file is JSON")
}

fn number(v: &Value, field: &str) -> f64 {
    v.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{field} missing or not a number in {v}"))
}

#[test]
fn bench_on_synthetic_data_writes_the_curve_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = bench(&[
        "--data",
        "synthetic:2000,16",
        "--queries",
        "50",
        "--k",
        "10",
        "--ef",
        "16,64",
        "--threads",
        "2",
        "--seed",
        "7",
        "--json",
        json.to_str().expect("utf-8 temp path"),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("seed 7"),
        "the seed is printed before the run:\n{stdout}"
    );
    assert!(stdout.contains("recall@10"), "{stdout}");

    let report = read_json(&json);
    assert_eq!(report["data"], "synthetic:2000,16");
    assert_eq!(report["rows"], 2000);
    assert_eq!(report["dim"], 16);
    assert_eq!(report["queries"], 50);
    assert_eq!(report["k"], 10);
    assert_eq!(report["metric"], "l2");
    assert_eq!(report["seed"], 7);
    assert_eq!(report["threads"], 2);
    assert!(number(&report, "build_s") >= 0.0);
    assert!(number(&report, "build_points_per_s") >= 0.0);
    assert!(number(&report, "ground_truth_s") >= 0.0);
    for field in ["rss_after_load_bytes", "rss_after_build_bytes"] {
        if cfg!(target_os = "linux") {
            assert!(number(&report, field) > 0.0, "{field}");
        }
    }
    let sweep = report["sweep"].as_array().expect("sweep is a list");
    assert_eq!(sweep.len(), 2);
    assert_eq!(sweep[0]["ef"], 16);
    assert_eq!(sweep[1]["ef"], 64);
    for point in sweep {
        let recall = number(point, "recall");
        assert!((0.0..=1.0).contains(&recall), "{point}");
        assert!(number(point, "qps") > 0.0, "{point}");
        assert!(
            number(point, "p50_us") <= number(point, "p99_us"),
            "{point}"
        );
    }
    // Loose: a wider search does not find noticeably less.
    assert!(
        number(&sweep[1], "recall") + 0.05 >= number(&sweep[0], "recall"),
        "{sweep:?}"
    );
}

#[test]
fn bench_on_an_npy_file_holds_out_the_last_rows_as_queries() {
    use npyz::WriterBuilder;
    let dir = tempfile::tempdir().expect("temp dir");
    let npy = dir.path().join("vectors.npy");
    let base = vector_index::data::synthetic(400, 8, 3).expect("valid sizes");
    {
        let mut file = std::fs::File::create(&npy).expect("create npy");
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[400, 8])
            .writer(&mut file)
            .begin_nd()
            .expect("begin npy");
        writer.extend(base.data.iter().copied()).expect("write npy");
        writer.finish().expect("finish npy");
    }
    let json = dir.path().join("out.json");
    let out = bench(&[
        "--data",
        npy.to_str().expect("utf-8 temp path"),
        "--queries",
        "20",
        "--k",
        "5",
        "--ef",
        "32",
        "--metric",
        "cosine",
        "--threads",
        "1",
        "--json",
        json.to_str().expect("utf-8 temp path"),
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("held out"), "{stdout}");
    let report = read_json(&json);
    assert_eq!(report["rows"], 380);
    assert_eq!(report["queries"], 20);
    assert_eq!(report["metric"], "cosine");
    let query_source = report["query_source"].as_str().expect("query_source");
    assert!(query_source.contains("last 20 rows"), "{query_source}");
    let recall = number(&report["sweep"][0], "recall");
    assert!((0.0..=1.0).contains(&recall), "{report}");
}

/// Runs a bad command line and returns its stderr, checking it failed without a panic.
fn failure(args: &[&str]) -> String {
    let out = bench(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} should fail; stdout:\n{}",
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    stderr
}

#[test]
fn bench_rejects_bad_input_with_clear_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.npy");
    let missing = missing.to_str().expect("utf-8 temp path");
    let tiny = "synthetic:100,4";
    let cases: &[(&[&str], &str)] = &[
        (&["--data", missing], "missing.npy"),
        (
            &["--data", "vectors.csv"],
            "neither a .npy nor a .fvecs extension",
        ),
        (&["--data", "synthetic:0,16"], "N is 0"),
        (&["--data", tiny, "--k", "0"], "--k 0: expected k >= 1"),
        (&["--data", tiny, "--ef", ""], "empty entry"),
        (&["--data", tiny, "--ef", "16,0"], "ef 0 is out of range"),
        (
            &["--data", tiny, "--ef", "16,abc"],
            "ef \"abc\" is not a whole number",
        ),
        (
            &["--data", tiny, "--ef", "20000"],
            "ef 20000 is out of range",
        ),
        (&["--data", tiny, "--metric", "manhattan"], "manhattan"),
        (&["--data", tiny, "--queries", "0"], "--queries 0"),
        (&["--data", tiny, "--threads", "0"], "--threads 0"),
        (&["--data", tiny, "--m", "1000"], "invalid m 1000"),
        (&["--data", tiny, "--query-file", missing], "missing.npy"),
        (&["--queries", "5"], "--data"),
    ];
    for (args, fragment) in cases {
        let stderr = failure(args);
        assert!(
            stderr.contains(fragment),
            "{args:?}: stderr lacks {fragment:?}:\n{stderr}"
        );
    }
}

#[test]
fn bench_rejects_more_queries_than_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fvecs = dir.path().join("small.fvecs");
    let mut bytes = Vec::new();
    for row in 0..10 {
        bytes.extend(2i32.to_le_bytes());
        bytes.extend((row as f32).to_le_bytes());
        bytes.extend(1.0f32.to_le_bytes());
    }
    std::fs::write(&fvecs, bytes).expect("write fvecs");
    let stderr = failure(&[
        "--data",
        fvecs.to_str().expect("utf-8 temp path"),
        "--queries",
        "10",
    ]);
    assert!(
        stderr.contains("--queries 10") && stderr.contains("has 10 rows"),
        "{stderr}"
    );
}
