//! Suite `http-peer`: our `http` target against a real HTTP server that no one here wrote
//! (Debian's nginx serving a 612-byte static file, [`crate::nginx`]), side by side with
//! `wrk` (Debian's package) at the same connection count, then our finder's answer under a
//! p99 SLO.
//!
//! Drive: both clients closed-loop at their maximum for the same duration with the same C
//! connections, alternating (wrk, ours, wrk, ours, …) so drift of the machine falls on both:
//! `wrk -t2 -cC -dDs --latency URL`, and `collector::generator::closed_loop` with C workers
//! over an `HttpTarget` of C connections, no think time. Then the finder, open loop, with
//! steps placed around our measured maximum and a p99 SLO of [`SLO_P99_MS`] (nginx answers a
//! static file on loopback in well under a millisecond; 10 ms leaves room for queueing but
//! not for a saturated server).
//!
//! Report: achieved rate and p50/p99 of both clients per round and the medians, with the
//! ratios ours/wrk as headline metrics: the "≥ 0.9× wrk's rate" is a metric and a
//! finding, not a pass criterion. Latencies of both are closed-loop (from each request's
//! actual start), so they compare like with like.
//!
//! Judge ([`judge`], pure): FAIL when something is wrong — our requests failed against a
//! static file, wrk saw errors or non-2xx answers, a run measured nothing, the finder found
//! no answer; INCONCLUSIVE when nginx or wrk is missing (the reason is the install command)
//! or the finder's answer was not confirmed; PASS otherwise.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use collector::finder::FinderConfig;
use collector::generator::{closed_loop, GeneratorConfig};
use collector::shape::StepTiming;
use collector::slo::Slo;
use collector::target::Target;
use collector::{Metric, SuiteResult, Table, Verdict};
use targets::http::HttpTarget;
use targets::TargetOptions;

use crate::suites::{Plan, Profile, RunContext, Suite};

use crate::daemon_harness::spawn_child;
use crate::maxrps::{find_on, to_result};
use crate::nginx::{self, Nginx, INSTALL};

/// The suite.
pub struct HttpPeer;

/// The finder's SLO on p99 latency from the intended start, ms.
pub const SLO_P99_MS: f64 = 10.0;
/// Bound of each of our requests in the closed-loop runs and the finder.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// wrk's threads: one per core of the reference machine, as the issue asks (`-t2`).
const WRK_THREADS: u32 = 2;
/// How long past its own duration a wrk run may take before it is killed.
const WRK_GRACE: Duration = Duration::from_secs(15);

struct Settings {
    conns: u64,
    run: Duration,
    rounds: usize,
    timing: StepTiming,
    /// Finder steps as shares of our measured maximum. The open-loop knee sits at 33–52% of
    /// the closed-loop maximum (AMD EPYC and Intel Xeon), so the ramp starts at 10%: at 25%
    /// the first step is already near the knee and one scheduling hiccup left no answer.
    fractions: &'static [f64],
    precision_pct: f64,
    max_refine: usize,
}

fn settings(profile: Profile) -> Settings {
    let t = |w: u64, h: u64| StepTiming::from_millis(w, h, 0);
    match profile {
        Profile::Smoke => Settings {
            conns: 64,
            run: Duration::from_secs(2),
            rounds: 1,
            timing: t(250, 1000),
            fractions: &[0.3, 0.6, 1.2],
            precision_pct: 20.0,
            max_refine: 2,
        },
        Profile::Quick => Settings {
            conns: 64,
            run: Duration::from_secs(10),
            rounds: 2,
            timing: t(1000, 3000),
            fractions: &[0.1, 0.25, 0.5, 0.75, 1.0, 1.25],
            precision_pct: 5.0,
            max_refine: 5,
        },
        Profile::Full => Settings {
            conns: 64,
            run: Duration::from_secs(10),
            rounds: 3,
            timing: t(2000, 10_000),
            fractions: &[0.1, 0.25, 0.5, 0.75, 1.0, 1.25],
            precision_pct: 2.0,
            max_refine: 8,
        },
    }
}

/// What `wrk --latency` printed, as far as this suite reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkReport {
    /// `Requests/sec:`.
    pub requests_per_s: f64,
    /// The `50%` line of the latency distribution, ms.
    pub p50_ms: f64,
    /// The `99%` line, ms.
    pub p99_ms: f64,
    /// `N requests in …`.
    pub requests: u64,
    /// `Non-2xx or 3xx responses:` (0 when the line is absent).
    pub non_2xx: u64,
    /// The sum of `Socket errors: connect A, read B, write C, timeout D` (0 when absent).
    pub socket_errors: u64,
}

/// A wrk duration such as `612.00us`, `1.62ms`, `2.01s` or `1.00m`, in ms.
fn wrk_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Parses the output of `wrk --latency`; the error names the line that is missing or
/// malformed.
pub fn parse_wrk(text: &str) -> Result<WrkReport, String> {
    let line = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(str::trim))
    };
    let need = |what: &str, v: Option<f64>| {
        v.ok_or_else(|| format!("wrk output has no valid {what:?} line"))
    };
    let requests_per_s = need(
        "Requests/sec:",
        line("Requests/sec:").and_then(|v| v.parse().ok()),
    )?;
    let p50_ms = need("50%", line("50%").and_then(wrk_ms))?;
    let p99_ms = need("99%", line("99%").and_then(wrk_ms))?;
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().to_string())
        })
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| "wrk output has no valid \"N requests in\" line".to_string())?;
    let non_2xx = match line("Non-2xx or 3xx responses:") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| format!("wrk's Non-2xx line {v:?} is not a count"))?,
    };
    let socket_errors = match line("Socket errors:") {
        None => 0,
        Some(v) => v
            .split(',')
            .map(|part| {
                part.split_whitespace()
                    .last()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum::<Option<u64>>()
            .ok_or_else(|| format!("wrk's Socket errors line {v:?} is malformed"))?,
    };
    Ok(WrkReport {
        requests_per_s,
        p50_ms,
        p99_ms,
        requests,
        non_2xx,
        socket_errors,
    })
}

/// One closed-loop run of our target.
#[derive(Debug, Clone, PartialEq)]
pub struct OursRun {
    /// Requests issued per second.
    pub requests_per_s: f64,
    /// Median latency from the actual start, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Failed requests by kind.
    pub errors: Vec<(String, u64)>,
}

/// What the finder ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct FinderOutcome {
    /// The answer, ops/s, if any step passed.
    pub answer: Option<u64>,
    /// Doubts about it (an unconfirmed answer), from [`to_result`]'s verdict.
    pub doubts: Vec<String>,
}

/// Everything the judge looks at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observations {
    /// Binaries that are not installed (`nginx`, `wrk`): nothing ran.
    pub missing: Vec<String>,
    /// wrk's runs, in order.
    pub wrk: Vec<WrkReport>,
    /// Our runs, in order.
    pub ours: Vec<OursRun>,
    /// The finder, when it ran.
    pub finder: Option<FinderOutcome>,
}

/// The verdict of a run (see the module doc).
pub fn judge(obs: &Observations) -> Verdict {
    if !obs.missing.is_empty() {
        return Verdict::from_checks(
            vec![],
            vec![format!(
                "{} not installed: run `{INSTALL}`",
                obs.missing.join(" and ")
            )],
        );
    }
    let mut failures = Vec::new();
    let mut doubts = Vec::new();
    if obs.wrk.is_empty() || obs.ours.is_empty() {
        failures.push(format!(
            "{} wrk runs and {} runs of ours: expected at least one of each",
            obs.wrk.len(),
            obs.ours.len()
        ));
    }
    for (i, w) in obs.wrk.iter().enumerate() {
        if w.non_2xx > 0 || w.socket_errors > 0 {
            failures.push(format!(
                "wrk run {}: {} non-2xx answers and {} socket errors from a static file (expected none)",
                i + 1,
                w.non_2xx,
                w.socket_errors
            ));
        }
        if w.requests == 0 {
            failures.push(format!("wrk run {}: no request completed", i + 1));
        }
    }
    for (i, o) in obs.ours.iter().enumerate() {
        let errors: u64 = o.errors.iter().map(|(_, n)| n).sum();
        if errors > 0 {
            let kinds: Vec<String> = o.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            failures.push(format!(
                "our run {}: {errors} failed requests to a static file ({}; expected none)",
                i + 1,
                kinds.join(", ")
            ));
        }
        if o.requests == 0 {
            failures.push(format!("our run {}: no request completed", i + 1));
        }
    }
    match &obs.finder {
        None => failures.push("the finder did not run".into()),
        Some(f) if f.answer.is_none() => {
            failures.push("the finder found no answer: no step passed".into())
        }
        Some(f) => doubts.extend(f.doubts.iter().cloned()),
    }
    Verdict::from_checks(failures, doubts)
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn run_wrk(
    bin: &Path,
    dir: &Path,
    round: usize,
    conns: u64,
    run: Duration,
    url: &str,
) -> Result<WrkReport> {
    let log = dir.join(format!("wrk-{round}.txt"));
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}s", run.as_secs().max(1)))
        .arg("--latency")
        .arg(url);
    let mut child = spawn_child(cmd, "wrk", &log)?;
    let status = child.wait_or_kill(run + WRK_GRACE)?;
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    if !status.success() {
        bail!("wrk exited with {status}: {}", text.trim());
    }
    println!("{}", text.trim_end());
    parse_wrk(&text).map_err(|e| anyhow::anyhow!("{e}; wrk printed:\n{text}"))
}

async fn run_ours(target: Arc<dyn Target>, conns: u64, run: Duration) -> Result<OursRun> {
    let m = closed_loop(target, conns, Duration::ZERO, run, OP_TIMEOUT).await?;
    let total = m.data.total();
    let q = |q: f64| {
        if total.latency.is_empty() {
            0.0
        } else {
            total.latency.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let r = OursRun {
        requests_per_s: m.achieved_per_s(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        requests: total.completed(),
        errors: total.errors.iter().map(|(k, n)| (k.clone(), *n)).collect(),
    };
    println!(
        "ours: {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, {} requests, errors {:?}",
        r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors
    );
    Ok(r)
}

fn finder_config(s: &Settings, max_per_s: f64) -> FinderConfig {
    let mut steps: Vec<u64> = s
        .fractions
        .iter()
        .map(|f| ((max_per_s * f / 100.0).round() as u64 * 100).max(100))
        .collect();
    steps.dedup();
    FinderConfig {
        steps,
        timing: s.timing,
        precision_pct: s.precision_pct,
        max_refine_steps: s.max_refine,
        slo: Slo {
            p99_ms: Some(SLO_P99_MS),
            ..Slo::default()
        },
    }
}

/// Both clients' side-by-side table.
fn runs_table(wrk: &[WrkReport], ours: &[OursRun]) -> Table {
    let mut t = Table::new(
        "Closed loop at the maximum, same connections and duration (latency from the actual start)",
        &[
            "round",
            "client",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "requests",
            "errors",
        ],
    );
    for i in 0..wrk.len().max(ours.len()) {
        if let Some(w) = wrk.get(i) {
            t.push_row([
                (i + 1).to_string(),
                "wrk".into(),
                format!("{:.0}", w.requests_per_s),
                format!("{:.3}", w.p50_ms),
                format!("{:.3}", w.p99_ms),
                w.requests.to_string(),
                (w.non_2xx + w.socket_errors).to_string(),
            ]);
        }
        if let Some(o) = ours.get(i) {
            t.push_row([
                (i + 1).to_string(),
                "ours (http target)".into(),
                format!("{:.0}", o.requests_per_s),
                format!("{:.3}", o.p50_ms),
                format!("{:.3}", o.p99_ms),
                o.requests.to_string(),
                o.errors.iter().map(|(_, n)| n).sum::<u64>().to_string(),
            ]);
        }
    }
    t
}

/// Per-round ratios ours/wrk of `f`, and their median.
fn ratio(
    wrk: &[WrkReport],
    ours: &[OursRun],
    f: impl Fn(&WrkReport, &OursRun) -> (f64, f64),
) -> f64 {
    median(
        wrk.iter()
            .zip(ours)
            .map(|(w, o)| f(w, o))
            .filter(|(w, _)| *w > 0.0)
            .map(|(w, o)| o / w)
            .collect(),
    )
}

impl HttpPeer {
    fn missing(&self, ctx: &RunContext, missing: Vec<String>) -> SuiteResult {
        let mut r = crate::harness::new_result(self, ctx);
        r.headline = format!("not run: {} not installed", missing.join(" and "));
        r.verdict = judge(&Observations {
            missing,
            ..Observations::default()
        });
        r
    }
}

impl Suite for HttpPeer {
    fn name(&self) -> &'static str {
        "http-peer"
    }

    fn description(&self) -> &'static str {
        "nginx (static 612 B file) driven to its max by our http target and by wrk at the same connections; then the finder under p99 ≤ 10 ms"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        let runs = (2 * s.rounds) as f64 * s.run.as_secs_f64();
        let step_s = (s.timing.warmup + s.timing.hold).as_secs_f64();
        // The ramp up to its first trip (about half the ramp: measured knees sit at a third
        // to a half of the closed-loop maximum), the refinements and a confirmation.
        let steps = (s.fractions.len() / 2) as f64 + s.max_refine as f64 + 1.0;
        Plan {
            scale: format!(
                "{} conns · {} rounds × (wrk, ours) × {} s · finder hold {} s, p99 ≤ {SLO_P99_MS} ms",
                s.conns,
                s.rounds,
                s.run.as_secs(),
                s.timing.hold.as_secs_f64()
            ),
            expected_s: (runs + steps * step_s * 1.1 + 2.0).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let (ngx_bin, wrk_bin) = (nginx::find_binary("nginx"), nginx::find_binary("wrk"));
        let (Some(ngx_bin), Some(wrk_bin)) = (ngx_bin.clone(), wrk_bin.clone()) else {
            let missing = [("nginx", ngx_bin), ("wrk", wrk_bin)]
                .into_iter()
                .filter(|(_, b)| b.is_none())
                .map(|(n, _)| n.to_string())
                .collect();
            return Ok(self.missing(ctx, missing));
        };
        let server = Nginx::start(&ngx_bin, &ctx.work_dir.join("nginx"))?;
        let url = server.url();
        println!(
            "nginx {} on {} serving {url}",
            Nginx::version(&ngx_bin),
            server.addr()
        );
        let rt = crate::harness::runtime()?;
        let opts = TargetOptions {
            conns: s.conns as usize,
            seed: ctx.seed,
            ..TargetOptions::default()
        };
        let target: Arc<dyn Target> = Arc::new(rt.block_on(HttpTarget::open(&url, &opts))?);
        let mut obs = Observations::default();
        for round in 0..s.rounds {
            obs.wrk.push(run_wrk(
                &wrk_bin,
                &ctx.work_dir,
                round,
                s.conns,
                s.run,
                &url,
            )?);
            obs.ours
                .push(rt.block_on(run_ours(target.clone(), s.conns, s.run))?);
        }
        let ours_max = median(obs.ours.iter().map(|o| o.requests_per_s).collect());
        let cfg = finder_config(&s, ours_max);
        let report = rt.block_on(find_on(
            target,
            &cfg,
            GeneratorConfig::default(),
            true,
            None,
        ))?;
        println!("{}", report.answer_line());
        rt.shutdown_timeout(Duration::from_secs(1));
        let mut r = to_result(
            self.name(),
            &ctx.profile.to_string(),
            &self.plan(ctx.profile).scale,
            ctx.seed,
            &cfg,
            &report,
        );
        obs.finder = Some(FinderOutcome {
            answer: report.rate(),
            doubts: r.verdict.reasons.clone(),
        });
        self.report(&mut r, &s, &obs, &ngx_bin, &wrk_bin);
        r.verdict = judge(&obs);
        drop(server);
        Ok(r)
    }
}

impl HttpPeer {
    fn report(
        &self,
        r: &mut SuiteResult,
        s: &Settings,
        obs: &Observations,
        ngx: &Path,
        wrk: &Path,
    ) {
        let (w, o) = (&obs.wrk, &obs.ours);
        let rps = ratio(w, o, |w, o| (w.requests_per_s, o.requests_per_s));
        let p50 = ratio(w, o, |w, o| (w.p50_ms, o.p50_ms));
        let p99 = ratio(w, o, |w, o| (w.p99_ms, o.p99_ms));
        let wrk_rps = median(w.iter().map(|x| x.requests_per_s).collect());
        let ours_rps = median(o.iter().map(|x| x.requests_per_s).collect());
        let finder = r.headline.clone();
        r.headline = format!(
            "ours {ours_rps:.0}/s vs wrk {wrk_rps:.0}/s at {} conns ({rps:.2}×); {finder}",
            s.conns
        );
        r.metrics.push(
            Metric::new("rps_ratio_ours_over_wrk", rps, "×")
                .higher_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("p50_ratio_ours_over_wrk", p50, "×")
                .lower_is_better()
                .headline(),
        );
        r.metrics.push(
            Metric::new("p99_ratio_ours_over_wrk", p99, "×")
                .lower_is_better()
                .headline(),
        );
        r.metrics
            .push(Metric::new("ours_rps", ours_rps, "req/s").higher_is_better());
        r.metrics
            .push(Metric::new("wrk_rps", wrk_rps, "req/s").higher_is_better());
        let med = |f: &dyn Fn(&OursRun) -> f64| median(o.iter().map(f).collect());
        let medw = |f: &dyn Fn(&WrkReport) -> f64| median(w.iter().map(f).collect());
        r.metrics
            .push(Metric::new("ours_p50_ms", med(&|x| x.p50_ms), "ms").lower_is_better());
        r.metrics
            .push(Metric::new("ours_p99_ms", med(&|x| x.p99_ms), "ms").lower_is_better());
        r.metrics
            .push(Metric::new("wrk_p50_ms", medw(&|x| x.p50_ms), "ms").lower_is_better());
        r.metrics
            .push(Metric::new("wrk_p99_ms", medw(&|x| x.p99_ms), "ms").lower_is_better());
        r.tables.insert(0, runs_table(w, o));
        if rps < 0.9 {
            r.findings.push(format!(
                "our http target reached {rps:.2}× wrk's rate (median of {} rounds), below the issue's aim of 0.9×",
                w.len().min(o.len())
            ));
        } else {
            r.findings.push(format!(
                "our http target reached {rps:.2}× wrk's rate (median of {} rounds): the issue's aim of ≥ 0.9× is met",
                w.len().min(o.len())
            ));
        }
        if let Some(answer) = obs.finder.as_ref().and_then(|f| f.answer) {
            let share = answer as f64 / ours_rps.max(1.0);
            r.metrics.push(Metric::new(
                "finder_answer_over_closed_loop_max",
                share,
                "×",
            ));
            if share < 0.5 {
                r.findings.push(format!(
                    "the finder's open-loop answer {answer}/s under p99 ≤ {SLO_P99_MS} ms is {:.0}% of our closed-loop maximum {ours_rps:.0}/s: open loop pays a task and a timer per operation on the generator's core, and its arrivals queue for the 64 connections in bursts a closed loop never makes (free-list pool since 2026-12-07; pinning each operation to connection seq % conns measured the same answer); not profiled further",
                    share * 100.0
                ));
            }
        }
        let cfg = &mut r.config;
        cfg.insert("cpu_model".into(), cpu_model().into());
        cfg.insert(
            "nginx".into(),
            format!("{} ({})", Nginx::version(ngx), ngx.display()).into(),
        );
        cfg.insert("wrk".into(), wrk.display().to_string().into());
        cfg.insert("nginx_setup".into(), "master_process off (one process, one core), access_log off, 612-byte static file, loopback".into());
        cfg.insert("conns".into(), s.conns.into());
        cfg.insert("wrk_threads".into(), WRK_THREADS.into());
        cfg.insert("run_s".into(), s.run.as_secs_f64().into());
        cfg.insert("rounds".into(), s.rounds.into());
        cfg.insert(
            "seed_use".into(),
            "none: GET without a body template".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of `wrk -t2 -c64 -d3s --latency` against nginx 1.22.1 here.
    const WRK_OK: &str = "Running 3s test @ http://127.0.0.1:18081/index.html
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.65ms    0.89ms  28.38ms   92.05%
    Req/Sec    19.75k     4.41k   31.26k    70.00%
  Latency Distribution
     50%    1.62ms
     75%    1.87ms
     90%    2.24ms
     99%    3.63ms
  117878 requests in 3.00s, 95.55MB read
Requests/sec:  39241.94
Transfer/sec:     31.81MB
";

    /// Real output against a path nginx answers 404, with a socket-errors line as wrk
    /// prints it (`Socket errors: connect %d, read %d, write %d, timeout %d`).
    const WRK_BAD: &str = "Running 2s test @ http://127.0.0.1:18081/nosuch
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.60ms  665.40us  12.14ms   83.03%
    Req/Sec    20.28k     4.23k   33.58k    87.50%
  Latency Distribution
     50%  850.00us
     75%    1.82ms
     90%    2.17ms
     99%    1.02s
  80780 requests in 2.00s, 23.73MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 80780
Requests/sec:  40337.22
Transfer/sec:     11.85MB
";

    fn ok_obs() -> Observations {
        Observations {
            missing: vec![],
            wrk: vec![parse_wrk(WRK_OK).unwrap()],
            ours: vec![OursRun {
                requests_per_s: 36_000.0,
                p50_ms: 1.7,
                p99_ms: 3.9,
                requests: 72_000,
                errors: vec![],
            }],
            finder: Some(FinderOutcome {
                answer: Some(30_000),
                doubts: vec![],
            }),
        }
    }

    #[test]
    fn wrk_output_is_parsed() {
        let w = parse_wrk(WRK_OK).unwrap();
        assert_eq!(w.requests, 117_878);
        assert!((w.requests_per_s - 39_241.94).abs() < 1e-6);
        assert!((w.p50_ms - 1.62).abs() < 1e-9 && (w.p99_ms - 3.63).abs() < 1e-9);
        assert_eq!((w.non_2xx, w.socket_errors), (0, 0));
        let b = parse_wrk(WRK_BAD).unwrap();
        assert!((b.p50_ms - 0.85).abs() < 1e-9 && (b.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!((b.non_2xx, b.socket_errors), (80_780, 5));
        let e = parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").unwrap_err();
        assert!(e.contains("Requests/sec:"), "{e}");
        let e = parse_wrk(&WRK_OK.replace("99%    3.63ms", "99%    3.63parsecs")).unwrap_err();
        assert!(e.contains("\"99%\""), "{e}");
    }

    #[test]
    fn a_clean_run_passes() {
        let v = judge(&ok_obs());
        assert_eq!(v.status, collector::Status::Pass, "{:?}", v.reasons);
    }

    #[test]
    fn a_missing_binary_is_inconclusive_with_the_install_command() {
        let v = judge(&Observations {
            missing: vec!["wrk".into()],
            ..Observations::default()
        });
        assert_eq!(v.status, collector::Status::Inconclusive);
        assert!(
            v.reasons[0].contains("apt-get install nginx wrk"),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn errors_on_either_side_or_no_answer_fail() {
        let mut o = ok_obs();
        o.ours[0].errors = vec![("reset".into(), 3)];
        let v = judge(&o);
        assert_eq!(v.status, collector::Status::Fail);
        assert!(v.reasons[0].contains("reset 3"), "{:?}", v.reasons);

        let mut o = ok_obs();
        o.wrk = vec![parse_wrk(WRK_BAD).unwrap()];
        let v = judge(&o);
        assert_eq!(v.status, collector::Status::Fail);
        assert!(v.reasons[0].contains("80780 non-2xx"), "{:?}", v.reasons);

        let mut o = ok_obs();
        o.finder = Some(FinderOutcome {
            answer: None,
            doubts: vec![],
        });
        assert_eq!(judge(&o).status, collector::Status::Fail);

        let mut o = ok_obs();
        o.ours.clear();
        assert_eq!(judge(&o).status, collector::Status::Fail);

        let mut o = ok_obs();
        o.finder = Some(FinderOutcome {
            answer: Some(1000),
            doubts: vec!["confirmation failed".into()],
        });
        assert_eq!(judge(&o).status, collector::Status::Inconclusive);
    }

    #[test]
    fn a_low_ratio_is_not_a_failure() {
        let mut o = ok_obs();
        o.ours[0].requests_per_s = 1000.0;
        assert_eq!(judge(&o).status, collector::Status::Pass);
        assert!(
            (ratio(&o.wrk, &o.ours, |w, o| (w.requests_per_s, o.requests_per_s))
                - 1000.0 / 39_241.94)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn medians_and_steps() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let cfg = finder_config(&settings(Profile::Quick), 40_000.0);
        assert_eq!(
            cfg.steps,
            vec![4_000, 10_000, 20_000, 30_000, 40_000, 50_000]
        );
        assert_eq!(
            finder_config(&settings(Profile::Smoke), 0.0).steps,
            vec![100]
        );
    }
}
