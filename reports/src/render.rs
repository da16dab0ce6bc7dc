//! Renders a [`Trial`] to `trial-report.md` (tera) and `charts/*.svg` (plotters).
//!
//! Every number is formatted here, in Rust, so the template only lays text out, and the
//! output depends on nothing but the trial data: the golden-file test pins it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chart::{render_svg, ChartError};
use crate::compare::{compare, Movement};
use crate::format::{bytes, number};
use crate::model::Trial;
use collector::result::ResultError;
use collector::Status;

const TEMPLATE: &str = include_str!("../templates/trial-report.md.tera");
const TEMPLATE_NAME: &str = "trial-report.md";

/// Rendering options.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Percent a headline metric may move the wrong way before it is marked.
    pub tolerance_pct: f64,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            tolerance_pct: crate::compare::DEFAULT_TOLERANCE_PCT,
        }
    }
}

/// A rendered report: the markdown and each chart's file name and SVG text.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The contents of `trial-report.md`.
    pub markdown: String,
    /// `(file name, svg)` for every chart, in report order.
    pub charts: Vec<(String, String)>,
}

/// Why a report could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template failed (a bug in the template, reported with tera's chain of causes).
    #[error("template {TEMPLATE_NAME}: {0}")]
    Template(String),
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] ChartError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `results.json` could not be written.
    #[error(transparent)]
    Result(#[from] ResultError),
}

#[derive(Serialize)]
struct Ctx {
    label: String,
    profile: String,
    commit: String,
    commit_short: String,
    dirty: bool,
    seed: u64,
    suite_count: usize,
    pass: usize,
    fail: usize,
    inconclusive: usize,
    suites: Vec<SuiteCtx>,
    previous: Option<PrevCtx>,
    comparisons: Vec<CmpCtx>,
    worse: usize,
    tolerance: String,
    cpu_model: String,
    cores: u32,
    memory: String,
    kernel: String,
    rustc: String,
    command: String,
    started_utc: String,
    wall: String,
}

#[derive(Serialize)]
struct PrevCtx {
    label: String,
    profile: String,
    commit_short: String,
}

#[derive(Serialize)]
struct CmpCtx {
    suite: String,
    metric: String,
    previous: String,
    current: String,
    change: String,
    mark: String,
}

#[derive(Serialize)]
struct SuiteCtx {
    index: usize,
    name: String,
    anchor: String,
    scale: String,
    headline: String,
    status: String,
    reasons: Vec<String>,
    profile: String,
    seed: u64,
    wall: String,
    config: Vec<String>,
    metrics: Vec<MetricCtx>,
    tables: Vec<TableCtx>,
    charts: Vec<ChartCtx>,
    findings: Vec<String>,
}

#[derive(Serialize)]
struct MetricCtx {
    name: String,
    value: String,
    headline: bool,
}

#[derive(Serialize)]
struct TableCtx {
    title: String,
    header: String,
    rule: String,
    rows: Vec<String>,
}

#[derive(Serialize)]
struct ChartCtx {
    title: String,
    file: String,
}

/// Escapes text for a markdown table cell or a one-line item: pipes and line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The GitHub-style anchor of a `## N. name` heading.
fn anchor(index: usize, name: &str) -> String {
    let heading = format!("{index}. {name}");
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

fn seconds(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// Renders `trial`, compared with `previous` when there is one.
pub fn render(
    trial: &Trial,
    previous: Option<&Trial>,
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let mut charts = Vec::new();
    let mut suites = Vec::new();
    for (i, s) in trial.suites.iter().enumerate() {
        let index = i + 1;
        let mut chart_ctx = Vec::new();
        for series in &s.series {
            let file = format!("{}-{}.svg", s.suite, series.id);
            charts.push((file.clone(), render_svg(series)?));
            chart_ctx.push(ChartCtx {
                title: cell(&series.title),
                file,
            });
        }
        suites.push(SuiteCtx {
            index,
            name: s.suite.clone(),
            anchor: anchor(index, &s.suite),
            scale: cell(&s.scale),
            headline: cell(&s.headline),
            status: s.verdict.status.to_string(),
            reasons: s.verdict.reasons.iter().map(|r| cell(r)).collect(),
            profile: s.profile.clone(),
            seed: s.seed,
            wall: seconds(s.wall_s),
            config: s
                .config
                .iter()
                .map(|(k, v)| cell(&format!("{k}={v}")).replace('`', "'"))
                .collect(),
            metrics: s
                .metrics
                .iter()
                .map(|m| MetricCtx {
                    name: cell(&m.name),
                    value: number(m.value, &m.unit),
                    headline: m.headline,
                })
                .collect(),
            tables: s
                .tables
                .iter()
                .map(|t| TableCtx {
                    title: cell(&t.title),
                    header: t
                        .columns
                        .iter()
                        .map(|c| cell(c))
                        .collect::<Vec<_>>()
                        .join(" | "),
                    rule: vec!["---"; t.columns.len()].join("|"),
                    rows: t
                        .rows
                        .iter()
                        .map(|r| r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "))
                        .collect(),
                })
                .collect(),
            charts: chart_ctx,
            findings: s.findings.iter().map(|f| cell(f)).collect(),
        });
    }

    let rows = previous
        .map(|p| compare(trial, p, opts.tolerance_pct))
        .unwrap_or_default();
    let worse = rows
        .iter()
        .filter(|r| r.movement == Movement::Worse)
        .count();
    let comparisons = rows
        .iter()
        .map(|r| CmpCtx {
            suite: r.suite.clone(),
            metric: cell(&r.metric),
            previous: r.previous_cell(),
            current: number(r.current, &r.unit),
            change: r.change_cell(),
            mark: r.mark_cell().to_string(),
        })
        .collect();

    let p = &trial.provenance;
    let ctx = Ctx {
        label: trial.label.clone(),
        profile: trial.profile.clone(),
        commit: p.commit.clone(),
        commit_short: short(&p.commit),
        dirty: p.dirty,
        seed: trial.seed,
        suite_count: trial.suites.len(),
        pass: trial.count(Status::Pass),
        fail: trial.count(Status::Fail),
        inconclusive: trial.count(Status::Inconclusive),
        suites,
        previous: previous.map(|t| PrevCtx {
            label: t.label.clone(),
            profile: t.profile.clone(),
            commit_short: short(&t.provenance.commit),
        }),
        comparisons,
        worse,
        tolerance: crate::format::plain(opts.tolerance_pct),
        cpu_model: cell(&p.cpu_model),
        cores: p.cores,
        memory: bytes(p.memory_bytes),
        kernel: cell(&p.kernel),
        rustc: cell(&p.rustc),
        command: cell(&p.command).replace('`', "'"),
        started_utc: p.started_utc.clone(),
        wall: seconds(p.wall_s),
    };

    let mut tera = tera::Tera::default();
    tera.add_raw_template(TEMPLATE_NAME, TEMPLATE)
        .map_err(template_error)?;
    let context = tera::Context::from_serialize(&ctx).map_err(template_error)?;
    let markdown = tera
        .render(TEMPLATE_NAME, &context)
        .map_err(template_error)?;
    Ok(Rendered { markdown, charts })
}

fn template_error(e: tera::Error) -> RenderError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    RenderError::Template(msg)
}

/// Writes `results.json`, `trial-report.md` and `charts/*.svg` into `dir`. Stale charts
/// from an earlier rendering of the same directory are removed first.
pub fn write_trial(
    dir: &Path,
    trial: &Trial,
    previous: Option<&Trial>,
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let rendered = render(trial, previous, opts)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    trial.write(&dir.join("results.json"))?;
    let charts_dir = dir.join("charts");
    if charts_dir.is_dir() {
        for entry in std::fs::read_dir(&charts_dir).map_err(io(&charts_dir))? {
            let path = entry.map_err(io(&charts_dir))?.path();
            if path.extension().is_some_and(|e| e == "svg") {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
    }
    if !rendered.charts.is_empty() {
        std::fs::create_dir_all(&charts_dir).map_err(io(&charts_dir))?;
    }
    for (file, svg) in &rendered.charts {
        let path = charts_dir.join(file);
        std::fs::write(&path, svg).map_err(io(&path))?;
    }
    let report = dir.join("trial-report.md");
    std::fs::write(&report, &rendered.markdown).map_err(io(&report))?;
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_match_github_headings() {
        assert_eq!(anchor(1, "timer"), "1-timer");
        assert_eq!(anchor(12, "maxrps-sim"), "12-maxrps-sim");
    }

    #[test]
    fn cells_cannot_break_a_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
