//! `stress maxrps`: the collector's max-RPS finder from the command line, and the shared
//! conversion of a finder report into a `SuiteResult` (used by the `maxrps-*` suites).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use collector::finder::{find, Answer, FinderConfig, FinderReport, Phase};
use collector::generator::{GeneratorConfig, OpenLoop};
use collector::schedule::Pacing;
use collector::shape::{parse_duration, parse_steps, StepTiming};
use collector::slo::{parse_action_limits, Slo};
use collector::target::Target;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};

use crate::target_flags::TargetFlags;

/// Flags of `stress maxrps`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaxRpsArgs {
    /// What to load: `http://HOST:PORT/PATH`, `h2c://HOST:PORT/PATH`,
    /// `nats://HOST:PORT/SUBJECT`, `jetstream://HOST:PORT/STREAM/SUBJECT`, `unix:PATH`,
    /// `exec:PROGRAM ARG…`, `sim:servers=K,service_us=S[,queue=Q]`,
    /// `usl:service_us=S,sigma=X,kappa=Y`, `noop`, or
    /// `daemon:op=create|mix[,db=PATH][,pool=N][,seed=N]` (without `db=`, a private daemon).
    #[arg(long)]
    pub target: String,
    /// Settings of the target that are not in its spec.
    #[command(flatten)]
    pub target_flags: TargetFlags,
    /// Seed of `{rand}` in body templates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write an HdrHistogram interval log here (one interval per second, a tag per action).
    #[arg(long)]
    pub hlog: Option<PathBuf>,
    /// Increasing rates, ops/s, with an optional k suffix: `1k,2k,4k,8k`.
    #[arg(long, allow_hyphen_values = true)]
    pub steps: String,
    /// Load before each hold that is not measured, e.g. `1s` (`0s` for none).
    #[arg(long, default_value = "1s", allow_hyphen_values = true)]
    pub warmup: String,
    /// Measured part of each step, e.g. `3s`.
    #[arg(long, default_value = "3s", allow_hyphen_values = true)]
    pub hold: String,
    /// Pause without load after each step, e.g. `0s`.
    #[arg(long, default_value = "0s", allow_hyphen_values = true)]
    pub cooldown: String,
    /// Overall p99 latency limit, ms (latency from the intended start).
    #[arg(long, allow_negative_numbers = true)]
    pub slo_p99_ms: Option<f64>,
    /// Overall p95 latency limit, ms.
    #[arg(long, allow_negative_numbers = true)]
    pub slo_p95_ms: Option<f64>,
    /// Per-action p95 limits: `send:80,search:300`.
    #[arg(long)]
    pub action_p95_ms: Option<String>,
    /// Per-action p99 limits: `send:80,search:300`.
    #[arg(long)]
    pub action_p99_ms: Option<String>,
    /// Largest allowed share of failed operations (dropped ones count), 0..1.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub max_error_rate: f64,
    /// Largest allowed backlog growth over a hold (targets that report a backlog).
    #[arg(long)]
    pub max_backlog_growth: Option<u64>,
    /// Share of the target rate the generator may miss before a healthy step is INCONCLUSIVE.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub shortfall_tolerance: f64,
    /// Refine until the bracket is within this many percent (0, 50].
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    pub precision: f64,
    /// At most this many refinement steps.
    #[arg(long, default_value_t = 8)]
    pub max_refine: usize,
    /// Per-operation timeout, e.g. `5s`; a timed-out operation is an error of kind `timeout`.
    #[arg(long, default_value = "5s", allow_hyphen_values = true)]
    pub timeout: String,
    /// The most operations in flight; beyond it operations are dropped and counted.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: u32,
    /// How the generator waits for each intended start: `hybrid` (sleep, then yield for
    /// the last 1.5 ms: sub-ms precision, but a busy core) or `timer` (the timer alone:
    /// ms bursts, little CPU; for several generators sharing cores).
    #[arg(long, default_value = "hybrid")]
    pub pacing: String,
    /// Write the per-step table as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the SuiteResult JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Spread the load over `stress worker` processes through NATS.
    #[command(flatten)]
    pub dist: crate::dist::DistFlags,
}

impl MaxRpsArgs {
    /// The finder and generator settings these flags describe for a target with `actions`;
    /// every bad value is an error that names it.
    pub fn config(&self, actions: &[String]) -> Result<(FinderConfig, GeneratorConfig)> {
        let steps = parse_steps(&self.steps)?;
        let timing = StepTiming::new(
            parse_duration("warmup", &self.warmup, true)?,
            parse_duration("hold", &self.hold, false)?,
            parse_duration("cooldown", &self.cooldown, true)?,
        )?;
        let mut slo = Slo {
            p95_ms: self.slo_p95_ms,
            p99_ms: self.slo_p99_ms,
            max_error_rate: self.max_error_rate,
            max_backlog_growth: self.max_backlog_growth,
            shortfall_tolerance: self.shortfall_tolerance,
            ..Slo::default()
        };
        if let Some(text) = &self.action_p95_ms {
            slo.action_p95_ms = parse_action_limits("--action-p95-ms", text, actions)?;
        }
        if let Some(text) = &self.action_p99_ms {
            slo.action_p99_ms = parse_action_limits("--action-p99-ms", text, actions)?;
        }
        let cfg = FinderConfig {
            steps,
            timing,
            precision_pct: self.precision,
            max_refine_steps: self.max_refine,
            slo,
        };
        cfg.validate()?;
        if self.max_in_flight == 0 {
            anyhow::bail!("invalid max in flight 0: expected at least 1");
        }
        let generator = GeneratorConfig {
            max_in_flight: self.max_in_flight,
            op_timeout: parse_duration("timeout", &self.timeout, false)?,
            pacing: parse_pacing(&self.pacing)?,
            ..GeneratorConfig::default()
        };
        Ok((cfg, generator))
    }
}

/// The line `stress maxrps` prints before its first step.
pub fn header_line(target: &str, cfg: &FinderConfig) -> String {
    format!(
        "max-rps: target {target} · steps {:?} · SLO {} · precision ±{}%",
        cfg.steps,
        cfg.slo.describe(),
        cfg.precision_pct
    )
}

/// `hybrid` or `timer` (see `--pacing`).
pub fn parse_pacing(text: &str) -> Result<Pacing> {
    match text {
        "hybrid" => Ok(GeneratorConfig::default().pacing),
        "timer" => Ok(Pacing::TimerOnly),
        other => anyhow::bail!("invalid pacing {other:?}: expected hybrid or timer"),
    }
}

/// Runs the finder on a fresh runtime, printing each step as it ends.
pub fn run_finder(
    target: Arc<dyn Target>,
    cfg: &FinderConfig,
    generator: GeneratorConfig,
    echo: bool,
) -> Result<FinderReport> {
    let rt = crate::harness::runtime()?;
    let report = rt.block_on(find_on(target, cfg, generator, echo, None));
    // In-flight operations were awaited by every step; nothing is left to cancel.
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}

/// The finder on the current runtime (the one `target` was opened on), printing each step
/// as it ends if `echo`, and writing an interval log to `hlog` if given.
pub async fn find_on(
    target: Arc<dyn Target>,
    cfg: &FinderConfig,
    generator: GeneratorConfig,
    echo: bool,
    hlog: Option<&Path>,
) -> Result<FinderReport> {
    let mut gen = OpenLoop::new(target.clone(), generator)?;
    let tap = match hlog {
        Some(path) => {
            let comment = format!("target {} · SLO {}", target.describe(), cfg.slo.describe());
            Some(crate::hlog_file::start(path, target.as_ref(), &[comment])?)
        }
        None => None,
    };
    if let Some(t) = &tap {
        gen.set_tap(Some(t.recorder()));
    }
    if echo {
        print!("{}", collector::finder::FinderReport::header());
    }
    let report = find(&mut gen, cfg, |row| {
        if echo {
            print!("{}", collector::finder::console_row(row));
        }
        if let Some(t) = &tap {
            t.comment(&format!(
                "[step ended: {} {}/s, {}]",
                row.phase.name(),
                row.target_per_s,
                row.verdict.status
            ));
        }
    })
    .await;
    if let Some(t) = tap {
        let n = t.finish().await?;
        if let Some(path) = hlog {
            println!("interval log: {n} intervals written to {}", path.display());
        }
    }
    Ok(report?)
}

/// `1500,3000,6000`: a step list as `--steps` takes it.
pub fn steps_text(steps: &[u64]) -> String {
    steps
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Expected seconds of one finder run: the ramp up to the first trip, about five
/// refinements, one confirmation, and the drain after each overloaded step (30% margin).
pub fn finder_expected_s(steps: &[u64], timing: StepTiming) -> f64 {
    let step_s = (timing.warmup + timing.hold + timing.cooldown).as_secs_f64();
    (steps.len() as f64 + 6.0) * step_s * 1.3
}

/// Every step of the finder's report as a table (what [`to_result`] reports).
pub fn steps_table(report: &FinderReport) -> Table {
    let mut table = Table::new(
        "Steps (latency from the intended start; svc = from the actual start)",
        &[
            "phase",
            "target /s",
            "achieved /s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "svc p99 ms",
            "errors",
            "dropped",
            "verdict",
            "reasons",
        ],
    );
    for row in &report.rows {
        table.push_row([
            row.phase.name().to_string(),
            row.target_per_s.to_string(),
            format!("{:.0}", row.achieved_per_s),
            ms(row.total.p50_ms),
            ms(row.total.p95_ms),
            ms(row.total.p99_ms),
            ms(row.total.max_ms),
            ms(row.total.service_p99_ms),
            format!("{:.2}%", row.total.error_rate * 100.0),
            row.dropped.to_string(),
            row.verdict.status.to_string(),
            row.verdict.reasons.join("; "),
        ]);
    }
    table
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

/// The report as a SuiteResult: headline = the ANSWER line, a table of every step, charts of
/// p99 and achieved rate against the target rate, and a verdict from the answer alone
/// (PASS when an answer was found and confirmed; suites may judge it further).
pub fn to_result(
    suite: &str,
    profile: &str,
    scale: &str,
    seed: u64,
    cfg: &FinderConfig,
    report: &FinderReport,
) -> SuiteResult {
    let mut r = SuiteResult::new(suite, profile, scale, seed);
    r.headline = report.answer_line();
    r.config
        .insert("target".into(), report.target.clone().into());
    r.config
        .insert("steps".into(), serde_json::json!(cfg.steps));
    r.config
        .insert("warmup_s".into(), cfg.timing.warmup.as_secs_f64().into());
    r.config
        .insert("hold_s".into(), cfg.timing.hold.as_secs_f64().into());
    r.config.insert(
        "cooldown_s".into(),
        cfg.timing.cooldown.as_secs_f64().into(),
    );
    r.config.insert("slo".into(), cfg.slo.describe().into());
    r.config
        .insert("precision_pct".into(), cfg.precision_pct.into());

    r.tables.push(steps_table(report));

    let mut rows: Vec<_> = report
        .rows
        .iter()
        .filter(|row| row.phase != Phase::Confirm)
        .collect();
    rows.sort_by_key(|row| row.target_per_s);
    let points = |f: &dyn Fn(&&collector::finder::StepRow) -> f64| -> Vec<[f64; 2]> {
        rows.iter()
            .map(|row| [row.target_per_s as f64, f(row).max(0.001)])
            .collect()
    };
    let mut p99_lines = vec![
        Line {
            name: "p99".into(),
            points: points(&|row| row.total.p99_ms),
        },
        Line {
            name: "service p99".into(),
            points: points(&|row| row.total.service_p99_ms),
        },
    ];
    if let (Some(limit), Some(first), Some(last)) = (cfg.slo.p99_ms, rows.first(), rows.last()) {
        p99_lines.push(Line {
            name: format!("SLO p99 {limit} ms"),
            points: vec![
                [first.target_per_s as f64, limit],
                [last.target_per_s as f64, limit],
            ],
        });
    }
    r.series.push(Series {
        id: "p99".into(),
        title: "p99 latency against target rate".into(),
        x_label: "target rate (ops/s)".into(),
        y_label: "p99 from intended start (ms, log scale)".into(),
        lines: p99_lines,
        log_y: true,
    });
    r.series.push(Series {
        id: "achieved".into(),
        title: "Achieved against target rate".into(),
        x_label: "target rate (ops/s)".into(),
        y_label: "ops/s".into(),
        lines: vec![
            Line {
                name: "achieved".into(),
                points: rows
                    .iter()
                    .map(|row| [row.target_per_s as f64, row.achieved_per_s])
                    .collect(),
            },
            Line {
                name: "completed ok".into(),
                points: rows
                    .iter()
                    .map(|row| {
                        [
                            row.target_per_s as f64,
                            row.total.ok as f64 / cfg.timing.hold.as_secs_f64(),
                        ]
                    })
                    .collect(),
            },
        ],
        log_y: false,
    });

    r.metrics
        .push(Metric::new("steps_run", report.rows.len() as f64, ""));
    r.verdict = match &report.answer {
        Answer::Found {
            rate,
            confirmed,
            confirm_reasons,
            ..
        } => {
            r.metrics.push(
                Metric::new("max_rps", *rate as f64, "ops/s")
                    .higher_is_better()
                    .headline(),
            );
            if *confirmed {
                Verdict::from_checks(vec![], vec![])
            } else {
                Verdict::from_checks(vec![], confirm_reasons.clone())
            }
        }
        Answer::NonePassed { first } => Verdict::fail(format!(
            "no step passed (first step {}: {})",
            first.status,
            first.reasons.join("; ")
        )),
    };
    r
}
