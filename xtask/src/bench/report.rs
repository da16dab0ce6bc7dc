//! Rendering: the plain-text table for stdout and the markdown `bench-report.md`.

use std::fmt::Write as _;

use super::compare::{Row, Verdict};
use super::snapshot::Snapshot;
use super::stats::{RelativeChange, CONFIDENCE, RESAMPLES, SIGNIFICANCE};

/// A nanosecond duration in a human unit with four significant digits, e.g. `65.28 µs`.
pub fn format_time(ns: f64) -> String {
    if !ns.is_finite() {
        return format!("{ns} ns");
    }
    let (value, unit) = match ns.abs() {
        a if a < 1.0 => (ns * 1e3, "ps"),
        a if a < 1e3 => (ns, "ns"),
        a if a < 1e6 => (ns / 1e3, "µs"),
        a if a < 1e9 => (ns / 1e6, "ms"),
        _ => (ns / 1e9, "s"),
    };
    let decimals = match value.abs() {
        a if a < 10.0 => 3,
        a if a < 100.0 => 2,
        _ => 1,
    };
    format!("{value:.decimals$} {unit}")
}

/// A relative change as a signed percentage, e.g. `+30.12%`.
pub fn format_pct(fraction: f64) -> String {
    format!("{:+.2}%", fraction * 100.0)
}

fn format_ci(c: &RelativeChange) -> String {
    format!("[{}, {}]", format_pct(c.lower), format_pct(c.upper))
}

fn format_p(p: f64) -> String {
    if p < 0.001 {
        "<0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

fn opt_time(ns: Option<f64>) -> String {
    ns.map(format_time).unwrap_or_else(|| "-".to_string())
}

const COMPARISON_HEADERS: [&str; 7] = [
    "benchmark",
    "baseline",
    "new",
    "change",
    "95% CI",
    "p",
    "verdict",
];

fn comparison_cells(row: &Row) -> Vec<String> {
    let (change, ci, p) = match &row.change {
        Some(c) => (
            format_pct(c.mean.point),
            format_ci(&c.mean),
            format_p(c.p_value),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    vec![
        row.id.clone(),
        opt_time(row.base_mean),
        opt_time(row.new_mean),
        change,
        ci,
        p,
        row.verdict.to_string(),
    ]
}

/// The comparison as an aligned plain-text table followed by a summary line.
pub fn comparison_text(rows: &[Row], threshold_pct: f64) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(comparison_cells).collect();
    let mut out = text_table(
        &COMPARISON_HEADERS,
        &cells,
        &[false, true, true, true, true, true, false],
    );
    out.push('\n');
    out.push_str(&summary(rows, threshold_pct));
    out.push('\n');
    out
}

/// One line counting the verdicts, with the rule that produced them.
pub fn summary(rows: &[Row], threshold_pct: f64) -> String {
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    format!(
        "{} benchmarks: {} regressed, {} improved, {} within noise, {} missing, {} new \
         (mean change, p < {SIGNIFICANCE} and {:.0}% CI beyond ±{threshold_pct}%)",
        rows.len(),
        count(Verdict::Regressed),
        count(Verdict::Improved),
        count(Verdict::WithinNoise),
        count(Verdict::Missing),
        count(Verdict::New),
        CONFIDENCE * 100.0,
    )
}

fn estimate_cells(snapshot: &Snapshot) -> Vec<Vec<String>> {
    snapshot
        .benchmarks
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                format_time(b.mean.point),
                format!(
                    "[{}, {}]",
                    format_time(b.mean.lower),
                    format_time(b.mean.upper)
                ),
                format_time(b.median.point),
                b.sample.times.len().to_string(),
            ]
        })
        .collect()
}

const ESTIMATE_HEADERS: [&str; 5] = ["benchmark", "mean", "95% CI", "median", "samples"];

/// The current estimates (no baseline) as an aligned plain-text table.
pub fn estimates_text(snapshot: &Snapshot) -> String {
    text_table(
        &ESTIMATE_HEADERS,
        &estimate_cells(snapshot),
        &[false, true, true, true, true],
    )
}

/// `bench-report.md` for a comparison: rule, provenance of both snapshots, the table.
pub fn comparison_markdown(
    rows: &[Row],
    base: &Snapshot,
    new: &Snapshot,
    threshold_pct: f64,
) -> String {
    let mut out = String::from("# Benchmark comparison\n\n");
    let _ = writeln!(
        out,
        "Verdict rule (criterion's): a benchmark **regressed** if the change of its mean is \
         significant (p < {SIGNIFICANCE}, bootstrapped Welch t-test) and its whole \
         {:.0}% confidence interval lies above +{threshold_pct}%; **improved** if significant \
         and the interval lies below −{threshold_pct}%; otherwise **within noise**. \
         Noise threshold: **±{threshold_pct}%**. Bootstrap: {RESAMPLES} resamples, fixed seed.\n",
        CONFIDENCE * 100.0
    );
    if base.host.cpu != new.host.cpu || base.host.cores != new.host.cores {
        out.push_str(
            "> **Note:** the snapshots come from different hosts; the comparison measures the \
             machines as well as the code.\n\n",
        );
    }
    out.push_str("## Snapshots\n\n");
    provenance(&mut out, &[("baseline", base), ("new", new)]);
    out.push_str("\n## Results\n\n");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut c = comparison_cells(row);
            let median = row
                .change
                .map(|c| format!("{} {}", format_pct(c.median.point), format_ci(&c.median)))
                .unwrap_or_else(|| "-".into());
            c.insert(5, median);
            c
        })
        .collect();
    let mut headers: Vec<&str> = COMPARISON_HEADERS.to_vec();
    headers[3] = "change (mean)";
    headers.insert(5, "change (median) [95% CI]");
    out.push_str(&markdown_table(&headers, &cells));
    let _ = writeln!(out, "\n{}", summary(rows, threshold_pct));
    out
}

/// `bench-report.md` without a baseline: provenance and the current estimates.
pub fn estimates_markdown(snapshot: &Snapshot) -> String {
    let mut out = String::from("# Benchmark estimates\n\n");
    out.push_str("No baseline compared (use `cargo xtask bench --compare NAME`).\n\n");
    out.push_str("## Snapshot\n\n");
    provenance(&mut out, &[("this run", snapshot)]);
    out.push_str("\n## Results\n\n");
    out.push_str(&markdown_table(
        &ESTIMATE_HEADERS,
        &estimate_cells(snapshot),
    ));
    out
}

fn provenance(out: &mut String, snapshots: &[(&str, &Snapshot)]) {
    let mut headers = vec![""];
    headers.extend(snapshots.iter().map(|(label, _)| *label));
    let field = |name: &str, f: &dyn Fn(&Snapshot) -> String| {
        let mut row = vec![name.to_string()];
        row.extend(snapshots.iter().map(|(_, s)| f(s)));
        row
    };
    let rows = vec![
        field("name", &|s| s.name.clone()),
        field("created", &|s| utc_datetime(s.created)),
        field("host", &|s| s.host.describe()),
        field("git", &|s| s.git.clone().unwrap_or_else(|| "-".into())),
        field("criterion", &|s| s.criterion.clone()),
        field("benchmarks", &|s| s.benchmarks.len().to_string()),
    ];
    out.push_str(&markdown_table(&headers, &rows));
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_datetime(secs: u64) -> String {
    crate::host::utc(i64::try_from(secs).unwrap_or(i64::MAX)).1
}

fn text_table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} |",
        headers
            .iter()
            .map(|h| escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(headers.len()));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} |",
            row.iter()
                .map(|c| escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Change;

    #[test]
    fn times_use_human_units() {
        assert_eq!(format_time(0.5478), "547.8 ps");
        assert_eq!(format_time(12.345), "12.35 ns");
        assert_eq!(format_time(65_284.3), "65.28 µs");
        assert_eq!(format_time(183_650.0), "183.7 µs");
        assert_eq!(format_time(1_234_567.0), "1.235 ms");
        assert_eq!(format_time(2.5e9), "2.500 s");
    }

    #[test]
    fn percentages_and_dates() {
        assert_eq!(format_pct(0.30123), "+30.12%");
        assert_eq!(format_pct(-0.05), "-5.00%");
        assert_eq!(utc_datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_datetime(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn text_table_aligns_and_shows_verdicts() {
        let rc = |p| RelativeChange {
            point: p,
            lower: p - 0.01,
            upper: p + 0.01,
        };
        let rows = vec![
            Row {
                id: "a/long_benchmark_name".into(),
                base_mean: Some(1000.0),
                new_mean: Some(1300.0),
                change: Some(Change {
                    mean: rc(0.3),
                    median: rc(0.3),
                    p_value: 0.0,
                }),
                verdict: Verdict::Regressed,
            },
            Row {
                id: "b".into(),
                base_mean: Some(5.0),
                new_mean: None,
                change: None,
                verdict: Verdict::Missing,
            },
        ];
        let text = comparison_text(&rows, 5.0);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("benchmark"), "{text}");
        assert!(
            lines[2].contains("1.000 µs") && lines[2].contains("1.300 µs"),
            "{text}"
        );
        assert!(lines[2].contains("+30.00%") && lines[2].contains("[+29.00%, +31.00%]"));
        assert!(
            lines[2].contains("<0.001") && lines[2].ends_with("regressed"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("b ") && lines[3].ends_with("missing"),
            "{text}"
        );
        // Columns line up: the verdicts start at the same character offset.
        let col = |l: &str, w: &str| l.find(w).map(|b| l[..b].chars().count());
        assert_eq!(col(lines[0], "verdict"), col(lines[2], "regressed"));
        assert_eq!(col(lines[0], "verdict"), col(lines[3], "missing"));
        assert_eq!(lines[4], "", "{text}");
        assert!(lines[5].starts_with("2 benchmarks: 1 regressed"), "{text}");
        assert!(
            lines[5].contains("1 missing") && lines[5].contains("±5%"),
            "{text}"
        );
    }
}
