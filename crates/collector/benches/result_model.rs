//! Cost of writing and reading a suite result: every suite pays it once per run, and
//! `xtask report` pays it for every result of every trial it compares.

use std::hint::black_box;
use std::path::Path;

use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use criterion::{criterion_group, criterion_main, Criterion};

fn representative() -> SuiteResult {
    let mut r = SuiteResult::new("bench", "quick", "10 steps", 1);
    r.headline = "a representative result".into();
    r.verdict = Verdict::from_checks(vec![], vec![]);
    r.wall_s = 30.0;
    for i in 0..40 {
        r.metrics
            .push(Metric::new(format!("metric_{i}_ms"), i as f64 * 1.5, "ms").lower_is_better());
    }
    let mut t = Table::new("steps", &["target", "achieved", "p50", "p99", "verdict"]);
    for i in 0..20 {
        t.push_row([
            format!("{}", i * 1000),
            format!("{}", i * 999),
            "1.2".into(),
            "8.4".into(),
            "PASS".into(),
        ]);
    }
    r.tables.push(t);
    r.series.push(Series {
        id: "rss".into(),
        title: "RSS".into(),
        x_label: "s".into(),
        y_label: "MiB".into(),
        lines: vec![Line {
            name: "daemon".into(),
            points: (0..600)
                .map(|i| [i as f64, 100.0 + (i % 7) as f64])
                .collect(),
        }],
        log_y: false,
    });
    r
}

fn bench_result_model(c: &mut Criterion) {
    let r = representative();
    let json = r.to_json().expect("valid");
    c.bench_function("result_model/to_json", |b| {
        b.iter(|| black_box(&r).to_json().expect("valid"))
    });
    c.bench_function("result_model/from_json", |b| {
        b.iter(|| SuiteResult::from_json(black_box(&json), Path::new("bench.json")).expect("valid"))
    });
}

criterion_group!(benches, bench_result_model);
criterion_main!(benches);
