//! Distributed runs from the command line: `stress worker` (one generator process that
//! joins a coordinator over NATS) and `stress maxrps --distributed URL --workers N` (and a
//! plan's `distributed`/`workers` keys), the coordinator running the max-RPS finder over
//! the workers ([`distributed`] has the protocol, the split and the judge).
//!
//! What this module adds to the crate: the flags, the console lines under each step, the
//! merged interval log written as steps end, and the per-worker tables of the result.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use collector::finder::{console_row, FinderConfig, FinderReport};
use collector::generator::GeneratorConfig;
use collector::hlog::IntervalLog;
use collector::shape::parse_duration;
use collector::{Metric, SuiteResult, Table};
use distributed::coordinator::{self, Coordinator, CoordinatorConfig, DistStep, WorkerInfo};
use distributed::protocol::DEFAULT_GROUP;
use distributed::worker::{self, WorkerConfig};
use targets::TargetOptions;

/// Interval length of a distributed run's interval log.
pub const HLOG_INTERVAL: Duration = Duration::from_secs(1);
/// Raw samples kept per worker shard and action when the merge is to be checked.
pub const RAW_LOG_CAP: usize = 1 << 18;

/// Flags of `stress worker`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// NATS URL of the coordinator's server, e.g. `nats://10.0.0.5:4222` (default: the
    /// `NATS_URL` environment variable).
    #[arg(long)]
    pub nats: Option<String>,
    /// This worker's name, unique in the run (default: HOST-PID).
    #[arg(long)]
    pub name: Option<String>,
    /// The most operations per second this worker will send.
    #[arg(long)]
    pub max_rate: Option<u64>,
    /// The group to join (coordinator and workers must agree).
    #[arg(long, default_value = DEFAULT_GROUP)]
    pub group: String,
    /// Give up when no coordinator takes this worker for this long, e.g. `10m`.
    #[arg(long, default_value = "10m", allow_hyphen_values = true)]
    pub idle_timeout: String,
    /// Exit after this many runs (default: serve runs until idle).
    #[arg(long)]
    pub runs: Option<u32>,
}

/// `stress worker`: joins, serves runs, prints one line per event.
pub fn worker_command(args: &WorkerArgs) -> Result<ExitCode> {
    let cfg = WorkerConfig {
        nats_url: nats_url(args.nats.as_deref(), "--nats")?,
        group: args.group.clone(),
        name: args.name.clone().unwrap_or_else(default_name),
        max_rate: args.max_rate,
        idle_timeout: parse_duration("idle-timeout", &args.idle_timeout, false)?,
        runs: args.runs,
    };
    let rt = crate::harness::runtime()?;
    println!(
        "worker {}: joining group {} at {}{}",
        cfg.name,
        cfg.group,
        cfg.nats_url,
        cfg.max_rate
            .map(|r| format!(" (max {r}/s)"))
            .unwrap_or_default()
    );
    let summary = rt.block_on(worker::run(&cfg, |line| println!("{line}")))?;
    println!(
        "worker {}: done after {} runs, {} steps",
        cfg.name, summary.runs, summary.steps
    );
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

/// `url`, or `NATS_URL` when `url` is `None`; the error says how to give one.
fn nats_url(url: Option<&str>, flag: &str) -> Result<String> {
    match url
        .map(str::to_string)
        .or_else(|| std::env::var("NATS_URL").ok())
    {
        Some(u) if !u.trim().is_empty() => Ok(u.trim().to_string()),
        _ => bail!("no NATS server given: pass {flag} nats://HOST:PORT or set NATS_URL"),
    }
}

/// HOST-PID, the host name's other characters as `-` (a worker name is one subject token).
fn default_name() -> String {
    let host = worker::host_name().replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    format!("{host}-{}", std::process::id())
}

/// The coordinator's flags of `stress maxrps`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DistFlags {
    /// Run the finder over workers (`stress worker`) joined at this NATS URL; the target is
    /// opened by each worker, not here.
    #[arg(long, value_name = "NATS_URL")]
    pub distributed: Option<String>,
    /// How many workers the run needs (with --distributed).
    #[arg(long, requires = "distributed")]
    pub workers: Option<usize>,
    /// The group workers join (with --distributed).
    #[arg(long, requires = "distributed")]
    pub group: Option<String>,
    /// Longest to wait for the workers to join, e.g. `60s`.
    #[arg(long, requires = "distributed", allow_hyphen_values = true)]
    pub join_wait: Option<String>,
}

/// A distributed run's settings as a flag or a plan key gives them.
#[derive(Debug, Clone)]
pub struct DistSettings {
    /// NATS URL.
    pub url: String,
    /// Workers needed.
    pub workers: usize,
    /// The group.
    pub group: String,
    /// The join wait.
    pub join_wait: Duration,
}

impl DistSettings {
    /// Checks the values (`what` prefixes each error: `--` for flags, `` for plan keys).
    pub fn new(
        url: &str,
        workers: Option<usize>,
        group: Option<&str>,
        join_wait: Option<&str>,
        what: &str,
    ) -> Result<DistSettings> {
        let Some(workers) = workers else {
            bail!("{what}workers is missing: a distributed run needs the number of workers");
        };
        if workers == 0 || workers > 1024 {
            bail!("invalid {what}workers {workers}: expected 1 to 1024");
        }
        Ok(DistSettings {
            url: nats_url(Some(url), &format!("{what}distributed"))?,
            workers,
            group: group.unwrap_or(DEFAULT_GROUP).to_string(),
            join_wait: parse_duration(
                &format!("{what}join-wait"),
                join_wait.unwrap_or("60s"),
                false,
            )?,
        })
    }

    /// The coordinator's configuration for `target` with `options`.
    pub fn coordinator(
        &self,
        target: &str,
        options: TargetOptions,
        generator: GeneratorConfig,
        raw_log: bool,
        hlog: bool,
    ) -> CoordinatorConfig {
        CoordinatorConfig {
            nats_url: self.url.clone(),
            group: self.group.clone(),
            workers: self.workers,
            join_wait: self.join_wait,
            target: target.to_string(),
            options,
            generator,
            raw_log_cap: if raw_log { RAW_LOG_CAP } else { 0 },
            interval: hlog.then_some(HLOG_INTERVAL),
        }
    }
}

impl DistFlags {
    /// The settings, if `--distributed` was given.
    pub fn settings(&self) -> Result<Option<DistSettings>> {
        let Some(url) = &self.distributed else {
            return Ok(None);
        };
        DistSettings::new(
            url,
            self.workers,
            self.group.as_deref(),
            self.join_wait.as_deref(),
            "--",
        )
        .map(Some)
    }
}

/// A finished distributed finder run.
pub struct DistReport {
    /// The finder's report over the merged steps.
    pub report: FinderReport,
    /// Every step, with each worker's report.
    pub steps: Vec<DistStep>,
    /// The workers, dropped ones with their reason.
    pub workers: Vec<WorkerInfo>,
    /// The run's id.
    pub run_id: String,
}

/// Starts a coordinator and gathers its workers (printing each event).
pub async fn start(cfg: &CoordinatorConfig) -> Result<Coordinator> {
    Coordinator::start(cfg, |line| println!("{line}"))
        .await
        .context("starting the distributed run")
}

/// A whole distributed finder run for `stress maxrps` and plans: gathers the workers, builds
/// the finder's settings from the target's actions (`finder`; on an error the run is ended
/// with it), prints `max-rps: …` and runs [`find`].
pub async fn run_finder(
    ccfg: &CoordinatorConfig,
    finder: impl FnOnce(&[String]) -> Result<FinderConfig>,
    hlog: Option<&Path>,
) -> Result<(FinderConfig, DistReport)> {
    let coord = start(ccfg).await?;
    let cfg = match finder(coord.actions()) {
        Ok(cfg) => cfg,
        Err(e) => {
            coord.end(&format!("bad settings: {e:#}")).await;
            return Err(e);
        }
    };
    println!("{}", crate::maxrps::header_line(&coord.describe(), &cfg));
    let report = find(coord, &cfg, true, hlog).await?;
    Ok((cfg, report))
}

/// Runs the finder over `coord`'s workers, printing each step and its worker lines if
/// `echo`, writing the merged interval log to `hlog` if given, and ends the run.
pub async fn find(
    mut coord: Coordinator,
    cfg: &FinderConfig,
    echo: bool,
    hlog: Option<&Path>,
) -> Result<DistReport> {
    let mut log = match hlog {
        Some(path) => Some(open_hlog(path, &coord, cfg)?),
        None => None,
    };
    if echo {
        print!("{}", FinderReport::header());
    }
    let mut hlog_error = None;
    let mut hlog_intervals = 0;
    let found = coordinator::find(&mut coord, cfg, |row, step| {
        if echo {
            print!("{}{}", console_row(row), worker_lines(step));
        }
        if let Some((log, base)) = log.as_mut() {
            match distributed::hlog::write_step(log, *base, step) {
                Ok(n) => hlog_intervals += n,
                Err(e) => {
                    hlog_error.get_or_insert(e);
                }
            }
        }
    })
    .await;
    let reason = match &found {
        Ok(_) => "the finder is done".to_string(),
        Err(e) => format!("the coordinator stopped: {e}"),
    };
    let workers = coord.workers().to_vec();
    let run_id = coord.run_id().to_string();
    coord.end(&reason).await;
    let (report, steps) = found?;
    if let Some(e) = hlog_error {
        bail!("writing the interval log: {e}");
    }
    if let (Some((log, _)), Some(path)) = (log, hlog) {
        log.finish()
            .with_context(|| format!("writing the interval log {}", path.display()))?;
        println!(
            "interval log: {hlog_intervals} merged intervals (and each worker's) written to {}",
            path.display()
        );
    }
    Ok(DistReport {
        report,
        steps,
        workers,
        run_id,
    })
}

type Hlog = (IntervalLog<BufWriter<File>>, u64);

fn open_hlog(path: &Path, coord: &Coordinator, cfg: &FinderConfig) -> Result<Hlog> {
    let mut comments = vec![format!(
        "target {} · SLO {} · run {}",
        coord.describe(),
        cfg.slo.describe(),
        coord.run_id()
    )];
    comments.push("tags: ACTION = all workers merged; wI/ACTION = worker I alone".into());
    for (i, w) in coord.workers().iter().enumerate() {
        comments.push(format!("w{i} = {} ({} pid {})", w.name, w.host, w.pid));
    }
    let (log, base) = crate::hlog_file::create(path, &comments)?;
    let base_ns = base
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Ok((log, base_ns))
}

/// The lines printed under a step: one per worker.
pub fn worker_lines(step: &DistStep) -> String {
    let mut out = String::new();
    for w in &step.judged.workers {
        out.push_str(&format!(
            "    · {:<14} share {:>6}/s  achieved {:>8.0}/s  p99 {:>8.2} ms  issue-late p99 {:>6} µs  armed {:>7.1} ms early  {}{}\n",
            w.name,
            w.share,
            w.achieved_per_s,
            w.p99_ms,
            w.issue_late_p99_us,
            w.armed_early_ms,
            w.status,
            w.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default()
        ));
    }
    out
}

/// The per-worker parts of a result: the workers with their clock offsets, one row per
/// worker and step, and the coordination overhead.
pub fn add_to_result(r: &mut SuiteResult, d: &DistReport) {
    r.config
        .insert("distributed_run".into(), d.run_id.clone().into());
    r.config
        .insert("workers".into(), (d.workers.len() as u64).into());
    r.tables.push(workers_table(&d.workers));
    r.tables.push(worker_steps_table(d));
    let (setup, merge) = overhead_ms(&d.steps);
    r.metrics
        .push(Metric::new("step_setup_ms_max", setup, "ms").lower_is_better());
    r.metrics
        .push(Metric::new("step_merge_ms_max", merge, "ms").lower_is_better());
}

/// The largest setup and merge times of any step, ms.
pub fn overhead_ms(steps: &[DistStep]) -> (f64, f64) {
    steps.iter().fold((0.0, 0.0), |(s, m), st| {
        (f64::max(s, st.setup_ms), f64::max(m, st.merge_ms))
    })
}

fn workers_table(workers: &[WorkerInfo]) -> Table {
    let mut t = Table::new(
        "Workers (clock offset measured at join: worker clock − coordinator clock)",
        &[
            "#",
            "worker",
            "host",
            "pid",
            "max rate /s",
            "clock offset ms",
            "± ms",
            "dropped",
        ],
    );
    for (i, w) in workers.iter().enumerate() {
        t.push_row([
            format!("w{i}"),
            w.name.clone(),
            w.host.clone(),
            w.pid.to_string(),
            w.max_rate.map_or("none".into(), |r| r.to_string()),
            format!("{:+.3}", w.offset.offset_ns as f64 / 1e6),
            format!("{:.3}", w.offset.rtt_ns as f64 / 2e6),
            w.dropped.clone().unwrap_or_else(|| "no".into()),
        ]);
    }
    t
}

fn worker_steps_table(d: &DistReport) -> Table {
    let mut t = Table::new(
        "Per-worker steps (latency from the intended start)",
        &[
            "step",
            "target /s",
            "worker",
            "share /s",
            "achieved /s",
            "p99 ms",
            "completed",
            "late",
            "dropped",
            "errors",
            "issue-late p99 µs",
            "armed early ms",
            "status",
            "note",
        ],
    );
    for (step, row) in d.steps.iter().zip(&d.report.rows) {
        for w in &step.judged.workers {
            t.push_row([
                format!("{} {}", step.step, row.phase.name()),
                step.rate.to_string(),
                w.name.clone(),
                w.share.to_string(),
                format!("{:.0}", w.achieved_per_s),
                format!("{:.2}", w.p99_ms),
                w.completed.to_string(),
                w.late.to_string(),
                w.dropped.to_string(),
                w.errors.to_string(),
                w.issue_late_p99_us.to_string(),
                format!("{:.1}", w.armed_early_ms),
                w.status.to_string(),
                w.note.clone().unwrap_or_default(),
            ]);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_bad_value() {
        let e = DistSettings::new("nats://127.0.0.1:4222", None, None, None, "--")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--workers is missing"), "{e}");
        let e = DistSettings::new("nats://127.0.0.1:4222", Some(0), None, None, "--")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--workers 0"), "{e}");
        let e = DistSettings::new("nats://x:1", Some(2), None, Some("soon"), "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("join-wait") && e.contains("soon"), "{e}");
        let s = DistSettings::new(" nats://x:1 ", Some(3), Some("g1"), Some("5s"), "").unwrap();
        assert_eq!(
            (s.url.as_str(), s.workers, s.group.as_str()),
            ("nats://x:1", 3, "g1")
        );
        assert_eq!(s.join_wait, Duration::from_secs(5));
        let c = s.coordinator(
            "noop",
            TargetOptions::default(),
            GeneratorConfig::default(),
            true,
            false,
        );
        assert_eq!((c.raw_log_cap, c.interval), (RAW_LOG_CAP, None));
    }

    #[test]
    fn an_empty_url_says_how_to_give_one() {
        let e = nats_url(Some("  "), "--nats").unwrap_err().to_string();
        assert!(
            e.contains("--nats nats://HOST:PORT") && e.contains("NATS_URL"),
            "{e}"
        );
    }
}
