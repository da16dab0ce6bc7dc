//! Running a plan file: open its targets, compose the mix, drive the shape, sample the
//! processes, judge, and build the `SuiteResult` (drive → judge → report, as a suite).
//!
//! The finder shape reports as `stress maxrps` does ([`crate::maxrps::to_result`]); the
//! other shapes report one row per measured window (phase, burst, closed-loop run) with
//! per-action percentiles, marks included (a JetStream target's `ack` beside its
//! `deliver`). The verdict is [`judge`]'s: a step over its SLO or a leaking process FAILs,
//! as a k6 threshold fails its run; a step the generator could not drive, or a process
//! that could not be sampled, is INCONCLUSIVE.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use collector::finder::FinderConfig;
use collector::generator::{GeneratorConfig, Measured, Mode, OpenLoop};
use collector::resources::{leak_check, series, LeakCheck, ProcSample, Sampler};
use collector::shape::{parse_duration, parse_steps, Phase, Shape, StepTiming};
use collector::slo::{evaluate, Slo, StepStatus, StepVerdict};
use collector::target::Target;
use collector::{Line, Metric, Series, SuiteResult, Table, Verdict};
use serde::Serialize;

use crate::plan::{PlanFile, ShapeDef, TargetDef};
use crate::plan_mix::{MixScenario, MixStep, MixTarget};
use crate::target_flags::{self, TargetFlags};

/// How often the plan's processes are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Samples kept per process, at most (a week at [`SAMPLE_EVERY`] is more; it decimates).
pub const MAX_SAMPLES: usize = 20_000;

/// What `stress plan FILE --check` prints: what `cargo xtask stress --plan` needs first.
#[derive(Debug, Serialize)]
pub struct PlanEntry {
    /// The plan's name (its result's suite name).
    pub name: String,
    /// Its description.
    pub description: String,
    /// The shape in words.
    pub scale: String,
    /// Expected seconds.
    pub expected_s: u64,
}

/// The plan's scale in words and its expected wall time.
pub fn entry(plan: &PlanFile) -> Result<PlanEntry> {
    let secs =
        |what: &str, t: &str| -> Result<f64> { Ok(parse_duration(what, t, true)?.as_secs_f64()) };
    let timeout = secs("generator.timeout", &plan.generator.timeout)?;
    let (scale, expected) = match &plan.shape {
        ShapeDef::Find {
            steps,
            warmup,
            hold,
            cooldown,
            precision,
            ..
        } => {
            let n = parse_steps(steps)?.len() as f64 + 6.0;
            let step = secs("shape.warmup", warmup)?
                + secs("shape.hold", hold)?
                + secs("shape.cooldown", cooldown)?;
            (
                format!("find: steps {steps} · hold {hold} · ±{precision}%"),
                n * step * 1.3,
            )
        }
        ShapeDef::Phases { phases } => {
            let mut total = 0.0;
            for (i, p) in phases.iter().enumerate() {
                total += secs(&format!("shape.phases[{i}].for"), &p.duration)?;
            }
            (format!("{} phases", phases.len()), total)
        }
        ShapeDef::Soak { rate, duration, .. } => (
            format!("soak at {}/s for {duration}", rate.per_s()?),
            secs("shape.for", duration)?,
        ),
        ShapeDef::Burst { ops } => (format!("burst of {ops}"), timeout),
        ShapeDef::Closed {
            workers, duration, ..
        } => (
            format!("{workers} closed-loop workers for {duration}"),
            secs("shape.for", duration)?,
        ),
    };
    Ok(PlanEntry {
        name: plan.name.clone(),
        description: plan.description.clone(),
        scale,
        expected_s: (expected + timeout + 5.0).ceil() as u64,
    })
}

fn flags_of(def: &TargetDef) -> TargetFlags {
    TargetFlags {
        method: def.method.clone(),
        headers: def
            .headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect(),
        body: def.body.clone(),
        body_file: def.body_file.clone(),
        conns: def.conns,
        framing: def.framing.clone(),
        hello: def.hello.clone(),
        hello_reply: def.hello_reply.clone(),
        consumer: def.consumer.clone(),
    }
}

/// Opens every target on `rt` and composes the mix (or the one target).
fn open(
    rt: &tokio::runtime::Runtime,
    plan: &PlanFile,
    dir: &Path,
    seed: u64,
) -> Result<Arc<dyn Target>> {
    let mut names = Vec::new();
    let mut opened: Vec<Arc<dyn Target>> = Vec::new();
    for (name, def) in &plan.targets {
        let opts = flags_of(def)
            .options(seed, dir)
            .with_context(|| format!("at `targets.{name}`"))?;
        let t = target_flags::resolve(rt, &def.spec, &opts)
            .with_context(|| format!("at `targets.{name}`"))?;
        names.push(name.clone());
        opened.push(t);
    }
    if plan.scenarios.is_empty() {
        return opened.pop().context("at `targets`: expected a target");
    }
    let mut scenarios = Vec::new();
    for (i, s) in plan.scenarios.iter().enumerate() {
        let mut steps = Vec::new();
        for (j, st) in s.steps.iter().enumerate() {
            let target = names
                .iter()
                .position(|n| *n == st.target)
                .context("checked by plan::parse")?;
            let action = match &st.action {
                None => None,
                Some(a) => {
                    let known = opened[target].actions();
                    match known.iter().position(|k| k == a) {
                        Some(k) if !opened[target].mark_actions().contains(&k) => Some(k),
                        _ => bail!(
                            "at `scenarios[{i}].steps[{j}].action`: target {:?} has no action {a:?}: expected one of {}",
                            st.target,
                            known.join(", ")
                        ),
                    }
                }
            };
            steps.push(MixStep {
                name: st.name.clone().unwrap_or_else(|| st.target.clone()),
                target,
                action,
            });
        }
        scenarios.push(MixScenario {
            name: s.name.clone(),
            weight: s.weight,
            steps,
        });
    }
    Ok(Arc::new(MixTarget::new(opened, &names, scenarios, seed)?))
}

fn slo_of(plan: &PlanFile, actions: &[String]) -> Result<Slo> {
    let d = &plan.slo;
    let mut slo = Slo {
        p95_ms: d.p95_ms,
        p99_ms: d.p99_ms,
        max_error_rate: d.max_error_rate,
        max_backlog_growth: d.max_backlog_growth,
        shortfall_tolerance: d.shortfall_tolerance,
        ..Slo::default()
    };
    for (name, a) in &d.actions {
        if !actions.contains(name) {
            bail!(
                "at `slo.actions.{name}`: no action {name:?}: expected one of {}",
                actions.join(", ")
            );
        }
        if let Some(v) = a.p95_ms {
            slo.action_p95_ms.insert(name.clone(), v);
        }
        if let Some(v) = a.p99_ms {
            slo.action_p99_ms.insert(name.clone(), v);
        }
    }
    slo.validate().context("at `slo`")?;
    Ok(slo)
}

fn pids_of(plan: &PlanFile, dir: &Path) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for (i, p) in plan.processes.iter().enumerate() {
        let pid = match (p.pid, &p.pidfile) {
            (Some(pid), _) => pid,
            (None, Some(file)) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!("at `processes[{i}].pidfile`: reading {}", path.display())
                })?;
                text.trim().parse().with_context(|| {
                    format!(
                        "at `processes[{i}].pidfile`: {} holds {:?}: expected a pid",
                        path.display(),
                        text.trim()
                    )
                })?
            }
            (None, None) => bail!("at `processes[{i}]`: expected `pid` or `pidfile`"),
        };
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!(
                "at `processes[{i}]`: no process {pid} ({}) is running",
                p.name
            );
        }
        out.push((p.name.clone(), pid));
    }
    Ok(out)
}

/// Runs `plan` (its relative paths taken from `dir`); `seed` and `hlog` override the plan's.
pub fn run(
    plan: &PlanFile,
    dir: &Path,
    seed: Option<u64>,
    hlog: Option<PathBuf>,
) -> Result<SuiteResult> {
    let seed = seed.unwrap_or(plan.seed);
    let hlog = hlog.or_else(|| plan.hlog.as_ref().map(|h| dir.join(h)));
    let entry = entry(plan)?;
    let rt = crate::harness::runtime()?;
    let generator = GeneratorConfig {
        max_in_flight: plan.generator.max_in_flight.max(1),
        op_timeout: parse_duration("generator.timeout", &plan.generator.timeout, false)?,
        pacing: match &plan.generator.pacing {
            Some(p) => crate::maxrps::parse_pacing(p).context("at `generator.pacing`")?,
            None => GeneratorConfig::default().pacing,
        },
        ..GeneratorConfig::default()
    };
    let pids = pids_of(plan, dir)?;
    let sampler = if pids.is_empty() {
        None
    } else {
        Some(Sampler::start(
            pids.iter().map(|p| p.1).collect(),
            SAMPLE_EVERY,
            MAX_SAMPLES,
        )?)
    };
    let run = Run {
        plan,
        dir,
        seed,
        entry: &entry,
        generator,
        hlog: hlog.as_deref(),
    };
    let (mut r, described) = if plan.distributed.is_some() {
        run.distributed(&rt)?
    } else {
        run.local(&rt)?
    };
    let samples = sampler.map(Sampler::stop).unwrap_or_default();
    let leaks = report_processes(&mut r, plan, &pids, &samples);
    let verdict = judge(&Observed {
        base: r.verdict.clone(),
        steps: Vec::new(),
        leaks,
        unsampled: pids
            .iter()
            .filter(|(_, pid)| !samples.iter().any(|s| s.pid == *pid))
            .map(|(n, _)| n.clone())
            .collect(),
    });
    r.verdict = verdict;
    describe_into(&mut r, plan, &described);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(r)
}

/// One plan run's inputs.
struct Run<'a> {
    plan: &'a PlanFile,
    dir: &'a Path,
    seed: u64,
    entry: &'a PlanEntry,
    generator: GeneratorConfig,
    hlog: Option<&'a Path>,
}

impl Run<'_> {
    /// Opens the targets here and drives the shape; returns the result and the target's
    /// description.
    fn local(&self, rt: &tokio::runtime::Runtime) -> Result<(SuiteResult, String)> {
        let (plan, seed) = (self.plan, self.seed);
        let target = open(rt, plan, self.dir, seed)?;
        let slo = slo_of(plan, &target.actions())?;
        println!(
            "plan {}: target {} · {} · SLO {}",
            plan.name,
            target.describe(),
            self.entry.scale,
            slo.describe()
        );
        let r = match &plan.shape {
            ShapeDef::Find { .. } => {
                let cfg = finder_of(plan, &slo)?;
                let report = rt.block_on(crate::maxrps::find_on(
                    target.clone(),
                    &cfg,
                    self.generator,
                    true,
                    self.hlog,
                ))?;
                println!("{}", report.answer_line());
                crate::maxrps::to_result(&plan.name, "plan", &self.entry.scale, seed, &cfg, &report)
            }
            other => {
                let shape = shape_of(other)?;
                let measured =
                    rt.block_on(drive(target.clone(), &shape, self.generator, self.hlog))?;
                report_windows(plan, &self.entry.scale, seed, &slo, &shape, &measured)
            }
        };
        Ok((r, target.describe()))
    }

    /// The finder over `stress worker` processes: the one target is opened by each worker.
    fn distributed(&self, rt: &tokio::runtime::Runtime) -> Result<(SuiteResult, String)> {
        let plan = self.plan;
        let url = match plan.distributed.as_deref() {
            Some("env") => std::env::var("NATS_URL").unwrap_or_default(),
            Some(u) => u.to_string(),
            None => bail!("checked by plan::parse"),
        };
        let settings = crate::dist::DistSettings::new(
            &url,
            plan.workers,
            plan.group.as_deref(),
            plan.join_wait.as_deref(),
            "",
        )?;
        let (name, def) = plan
            .targets
            .iter()
            .next()
            .context("checked by plan::parse")?;
        let opts = flags_of(def)
            .options(self.seed, self.dir)
            .with_context(|| format!("at `targets.{name}`"))?;
        let ccfg =
            settings.coordinator(&def.spec, opts, self.generator, false, self.hlog.is_some());
        let (cfg, d) = rt.block_on(crate::dist::run_finder(
            &ccfg,
            |actions| finder_of(plan, &slo_of(plan, actions)?),
            self.hlog,
        ))?;
        println!("{}", d.report.answer_line());
        let mut r = crate::maxrps::to_result(
            &plan.name,
            "plan",
            &self.entry.scale,
            self.seed,
            &cfg,
            &d.report,
        );
        crate::dist::add_to_result(&mut r, &d);
        Ok((r, d.report.target.clone()))
    }
}

/// The finder settings of a `find` shape.
fn finder_of(plan: &PlanFile, slo: &Slo) -> Result<FinderConfig> {
    let ShapeDef::Find {
        steps,
        warmup,
        hold,
        cooldown,
        precision,
        max_refine,
    } = &plan.shape
    else {
        bail!("at `shape`: expected kind = \"find\"");
    };
    let cfg = FinderConfig {
        steps: parse_steps(steps)?,
        timing: StepTiming::new(
            parse_duration("shape.warmup", warmup, true)?,
            parse_duration("shape.hold", hold, false)?,
            parse_duration("shape.cooldown", cooldown, true)?,
        )?,
        precision_pct: *precision,
        max_refine_steps: *max_refine,
        slo: slo.clone(),
    };
    cfg.validate().context("at `shape`")?;
    Ok(cfg)
}

/// The plan's name, description and targets into the result's config.
fn describe_into(r: &mut SuiteResult, plan: &PlanFile, target: &str) {
    r.config.insert("plan".into(), plan.name.clone().into());
    if !plan.description.is_empty() {
        r.config
            .insert("description".into(), plan.description.clone().into());
    }
    r.config.insert("target".into(), target.into());
    let specs: Vec<String> = plan
        .targets
        .iter()
        .map(|(k, v)| format!("{k} = {}", v.spec))
        .collect();
    r.config.insert("targets".into(), serde_json::json!(specs));
}

fn shape_of(def: &ShapeDef) -> Result<Shape> {
    let shape = match def {
        ShapeDef::Phases { phases } => {
            let mut out = Vec::new();
            for (i, p) in phases.iter().enumerate() {
                out.push(Phase {
                    rate_per_s: p
                        .rate
                        .per_s()
                        .with_context(|| format!("at `shape.phases[{i}].rate`"))?,
                    duration: parse_duration(
                        &format!("shape.phases[{i}].for"),
                        &p.duration,
                        false,
                    )?,
                });
            }
            Shape::Phases(out)
        }
        ShapeDef::Soak { rate, duration, .. } => Shape::soak(vec![Phase {
            rate_per_s: rate.per_s().context("at `shape.rate`")?,
            duration: parse_duration("shape.for", duration, false)?,
        }]),
        ShapeDef::Burst { ops } => Shape::Burst { ops: *ops },
        ShapeDef::Closed {
            workers,
            think,
            duration,
        } => Shape::ClosedLoop {
            workers: *workers,
            think: parse_duration("shape.think", think, true)?,
            duration: parse_duration("shape.for", duration, false)?,
        },
        ShapeDef::Find { .. } => bail!("the finder is not a fixed shape"),
    };
    shape.validate().context("at `shape`")?;
    Ok(shape)
}

async fn drive(
    target: Arc<dyn Target>,
    shape: &Shape,
    cfg: GeneratorConfig,
    hlog: Option<&Path>,
) -> Result<Vec<Measured>> {
    let mut gen = OpenLoop::new(target.clone(), cfg)?;
    let tap = match hlog {
        Some(path) => Some(crate::hlog_file::start(
            path,
            target.as_ref(),
            &[format!("target {}", target.describe())],
        )?),
        None => None,
    };
    gen.set_tap(tap.as_ref().map(|t| t.recorder()));
    let measured = gen.run(shape).await;
    if let Some(t) = tap {
        let n = t.finish().await?;
        if let Some(path) = hlog {
            println!("interval log: {n} intervals written to {}", path.display());
        }
    }
    Ok(measured?)
}

fn window_label(m: &Measured, i: usize) -> String {
    match m.mode {
        Mode::OpenLoop { target_per_s } => format!("phase {} at {target_per_s:.0}/s", i + 1),
        Mode::Burst { ops } => format!("burst of {ops}"),
        Mode::ClosedLoop { workers } => format!("{workers} workers"),
    }
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

/// The result of a fixed shape: a row per window, a row per action and window, metrics.
fn report_windows(
    plan: &PlanFile,
    scale: &str,
    seed: u64,
    slo: &Slo,
    shape: &Shape,
    measured: &[Measured],
) -> SuiteResult {
    let mut r = SuiteResult::new(&plan.name, "plan", scale, seed);
    r.config.insert("shape".into(), format!("{shape:?}").into());
    r.config.insert("slo".into(), slo.describe().into());
    let mut windows = Table::new(
        "Windows (latency from the intended start; svc = from the actual start)",
        &[
            "window",
            "achieved /s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "svc p99 ms",
            "errors",
            "dropped",
            "backlog growth",
            "verdict",
            "reasons",
        ],
    );
    let mut actions = Table::new(
        "Per action (marks are second latencies of the same operations)",
        &[
            "window",
            "action",
            "count",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors by kind",
        ],
    );
    let mut steps = Vec::new();
    let mut worst_p99: f64 = 0.0;
    for (i, m) in measured.iter().enumerate() {
        let label = window_label(m, i);
        let v = evaluate(m, slo);
        let total = m.data.total();
        let s = total.summary(m.window_s);
        worst_p99 = worst_p99.max(s.p99_ms);
        windows.push_row([
            label.clone(),
            format!("{:.0}", m.achieved_per_s()),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            ms(s.service_p99_ms),
            format!("{:.2}%", s.error_rate * 100.0),
            total.dropped.to_string(),
            m.backlog_growth()
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            v.status.to_string(),
            v.reasons.join("; "),
        ]);
        for (name, a) in &m.data.actions {
            let s = a.summary(m.window_s);
            let errors: Vec<String> = a.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            actions.push_row([
                label.clone(),
                name.clone(),
                s.count.to_string(),
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                errors.join(", "),
            ]);
        }
        if measured.len() > 1 {
            r.metrics.push(
                Metric::new(format!("window{}_p99_ms", i + 1), s.p99_ms, "ms").lower_is_better(),
            );
            r.metrics.push(
                Metric::new(
                    format!("window{}_achieved_per_s", i + 1),
                    m.achieved_per_s(),
                    "ops/s",
                )
                .higher_is_better(),
            );
        } else {
            r.metrics.push(
                Metric::new("achieved_per_s", m.achieved_per_s(), "ops/s").higher_is_better(),
            );
            r.metrics
                .push(Metric::new("error_rate", s.error_rate, "").lower_is_better());
        }
        steps.push((label, v));
    }
    r.metrics.push(
        Metric::new("worst_p99_ms", worst_p99, "ms")
            .lower_is_better()
            .headline(),
    );
    r.tables.push(windows);
    r.tables.push(actions);
    r.headline = format!(
        "{} window{} · worst p99 {worst_p99:.2} ms",
        measured.len(),
        if measured.len() == 1 { "" } else { "s" }
    );
    r.verdict = judge(&Observed {
        base: Verdict::from_checks(vec![], vec![]),
        steps,
        leaks: vec![],
        unsampled: vec![],
    });
    r
}

/// Adds RSS/threads/fds series per process and, for a soak, the leak checks.
fn report_processes(
    r: &mut SuiteResult,
    plan: &PlanFile,
    pids: &[(String, u32)],
    samples: &[ProcSample],
) -> Vec<(String, LeakCheck)> {
    let mut leaks = Vec::new();
    if pids.is_empty() {
        return leaks;
    }
    let line = |f: &dyn Fn(&ProcSample) -> f64| -> Vec<Line> {
        pids.iter()
            .map(|(name, pid)| Line {
                name: name.clone(),
                points: series(samples, *pid, f)
                    .into_iter()
                    .map(|(t, v)| [t, v])
                    .collect(),
            })
            .collect()
    };
    r.series.push(Series {
        id: "rss".into(),
        title: "RSS of the sampled processes".into(),
        x_label: "s".into(),
        y_label: "MB".into(),
        lines: line(&|s| s.rss_bytes as f64 / 1e6),
        log_y: false,
    });
    r.series.push(Series {
        id: "fds".into(),
        title: "Open file descriptors".into(),
        x_label: "s".into(),
        y_label: "fds".into(),
        lines: line(&|s| s.fds as f64),
        log_y: false,
    });
    r.series.push(Series {
        id: "threads".into(),
        title: "Threads".into(),
        x_label: "s".into(),
        y_label: "threads".into(),
        lines: line(&|s| s.threads as f64),
        log_y: false,
    });
    for (name, pid) in pids {
        let rss = series(samples, *pid, |s| s.rss_bytes as f64 / 1e6);
        if let Some(peak) = rss.iter().map(|p| p.1).reduce(f64::max) {
            r.metrics
                .push(Metric::new(format!("{name}_peak_rss_mb"), peak, "MB").lower_is_better());
        }
        if let ShapeDef::Soak {
            leak_mb_per_hour, ..
        } = &plan.shape
        {
            let last = rss.iter().map(|p| p.0).reduce(f64::max).unwrap_or(0.0);
            if let Ok(lc) = leak_check(&rss, last * 0.2, *leak_mb_per_hour, 10, "rss", "MB") {
                r.metrics.push(
                    Metric::new(
                        format!("{name}_rss_slope_mb_per_h"),
                        lc.slope_per_hour,
                        "MB/h",
                    )
                    .lower_is_better(),
                );
                leaks.push((name.clone(), lc));
            }
        }
    }
    leaks
}

/// What the judge sees.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The verdict so far (the finder's, or PASS).
    pub base: Verdict,
    /// Each window's SLO verdict.
    pub steps: Vec<(String, StepVerdict)>,
    /// Each soaked process's RSS leak check.
    pub leaks: Vec<(String, LeakCheck)>,
    /// Processes listed but never sampled.
    pub unsampled: Vec<String>,
}

/// The plan's verdict: FAIL on a window over its SLO or a leaking process (or a FAIL so
/// far), INCONCLUSIVE on a window the generator could not drive, an unsampled process, or
/// a doubt so far; PASS otherwise.
pub fn judge(o: &Observed) -> Verdict {
    let mut failures = Vec::new();
    let mut doubts = Vec::new();
    match o.base.status {
        collector::Status::Fail => failures.extend(o.base.reasons.clone()),
        collector::Status::Inconclusive => doubts.extend(o.base.reasons.clone()),
        collector::Status::Pass => {}
    }
    for (label, v) in &o.steps {
        match v.status {
            StepStatus::Pass => {}
            StepStatus::Trip => failures.push(format!("{label}: {}", v.reasons.join("; "))),
            StepStatus::Inconclusive => doubts.push(format!("{label}: {}", v.reasons.join("; "))),
        }
    }
    for (name, lc) in &o.leaks {
        if lc.leaking {
            failures.push(format!(
                "process {name} leaks: RSS grows {:+.1} MB/h, above {:.1} MB/h",
                lc.slope_per_hour, lc.threshold_per_hour
            ));
        }
    }
    for name in &o.unsampled {
        doubts.push(format!(
            "process {name} could not be sampled (gone or unreadable)"
        ));
    }
    Verdict::from_checks(failures, doubts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::Status;

    fn pass() -> Verdict {
        Verdict::from_checks(vec![], vec![])
    }

    fn step(status: StepStatus, why: &str) -> (String, StepVerdict) {
        (
            "phase 1".into(),
            StepVerdict {
                status,
                reasons: vec![why.into()],
            },
        )
    }

    fn leak(leaking: bool) -> (String, LeakCheck) {
        (
            "api".into(),
            LeakCheck {
                metric: "rss",
                slope_per_hour: 500.0,
                unit: "MB",
                threshold_per_hour: 64.0,
                leaking,
                envelope_min: 1.0,
                envelope_max: 2.0,
                samples_used: 50,
            },
        )
    }

    fn observed() -> Observed {
        Observed {
            base: pass(),
            steps: vec![step(StepStatus::Pass, "")],
            leaks: vec![leak(false)],
            unsampled: vec![],
        }
    }

    #[test]
    fn a_clean_run_passes() {
        assert_eq!(judge(&observed()).status, Status::Pass);
    }

    #[test]
    fn a_window_over_its_slo_fails() {
        let mut o = observed();
        o.steps.push(step(StepStatus::Trip, "p99 80 ms > 50 ms"));
        let v = judge(&o);
        assert_eq!(v.status, Status::Fail);
        assert!(v.reasons.iter().any(|r| r.contains("p99 80 ms")), "{v:?}");
    }

    #[test]
    fn a_leaking_process_fails() {
        let mut o = observed();
        o.leaks = vec![leak(true)];
        let v = judge(&o);
        assert_eq!(v.status, Status::Fail);
        assert!(v.reasons[0].contains("api leaks"), "{v:?}");
    }

    #[test]
    fn doubts_are_inconclusive_and_a_finder_failure_stays() {
        let mut o = observed();
        o.steps
            .push(step(StepStatus::Inconclusive, "generator fell short"));
        assert_eq!(judge(&o).status, Status::Inconclusive);
        let mut o = observed();
        o.unsampled.push("db".into());
        assert_eq!(judge(&o).status, Status::Inconclusive);
        let mut o = observed();
        o.base = Verdict::fail("no step passed");
        assert_eq!(judge(&o).status, Status::Fail);
    }

    #[test]
    fn a_plan_runs_end_to_end_against_a_model() {
        let text = r#"
name = "sim-plan"
[targets.model]
spec = "sim:servers=4,service_us=1000"
[targets.free]
spec = "noop"
[[scenarios]]
name = "both"
steps = [{ target = "model" }, { target = "free" }]
[shape]
kind = "phases"
phases = [{ rate = 200, for = "300ms" }, { rate = "1k", for = "300ms" }]
[slo]
p99_ms = 500
"#;
        let dir = tempfile::tempdir().unwrap();
        let plan = crate::plan::parse(text, Path::new("t.toml")).unwrap();
        let hlog = dir.path().join("run.hlog");
        let r = run(&plan, dir.path(), None, Some(hlog.clone())).unwrap();
        assert_eq!(r.suite, "sim-plan");
        assert_eq!(r.tables[0].rows.len(), 2, "{:?}", r.tables[0]);
        assert!(r.metric("worst_p99_ms").is_some());
        let log = std::fs::read_to_string(hlog).unwrap();
        assert!(log.contains("Tag=both/model,"), "{log}");
        // A target that cannot be opened names where it is in the plan.
        let bad = crate::plan::parse(&text.replace("servers=4", "servers=x"), Path::new("t.toml"))
            .unwrap();
        let e = format!("{:#}", run(&bad, dir.path(), None, None).unwrap_err());
        assert!(e.contains("targets.model"), "{e}");
    }
}
