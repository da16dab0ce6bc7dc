//! Suite `maxrps-serve`: the max-RPS finder end to end through a real network path against
//! a server of exactly known capacity. `stress serve sim:servers=4,service_us=1000` runs as
//! a child process, once over HTTP and once over NATS request-reply (through the trial's own
//! `nats-server`); the finder drives it through the `http://` and then the `nats://` target.
//! The model's capacity is 4,000 ops/s whatever carries the requests, so an answer outside
//! 90–102% of it means the client, its pool, the transport or the server distorts what the
//! finder sees (`maxrps-sim` checks the finder alone, in process).
//!
//! Drive → judge → report: [`judge`] is a pure function of the answers.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use collector::finder::FinderConfig;
use collector::generator::GeneratorConfig;
use collector::slo::Slo;
use collector::{Metric, SuiteResult, Table, Verdict};

use super::common::Settings;
use crate::suites::{Plan, Profile, RunContext, Suite};
use proc_guard::Guarded;

use crate::daemon_harness::spawn_child;
use crate::maxrps::{find_on, finder_expected_s, steps_table, steps_text, to_result};

/// The suite.
pub struct MaxRpsServe;

/// The model served.
pub const MODEL: &str = "sim:servers=4,service_us=1000";
/// Its capacity, ops/s.
pub const CAPACITY: f64 = 4000.0;
/// The answer must lie within these shares of the capacity.
const LOW: f64 = 0.90;
const HIGH: f64 = 1.02;
/// How long `stress serve` may take to print where it listens.
const BANNER_BOUND: Duration = Duration::from_secs(15);
/// Connections of the HTTP target: more than the requests in flight below the knee.
const HTTP_CONNS: usize = 256;
/// The subject served over NATS.
const SUBJECT: &str = "herdlab.serve";

/// `maxrps-sim`'s settings, with a looser SLO at smoke: the network round trip adds a few
/// ms at p99 on a loaded 2-core machine, and a 1 s hold leaves little headroom at 10 ms.
fn settings(profile: Profile) -> Settings {
    let mut s = super::common::settings(profile);
    if profile == Profile::Smoke {
        s.p99_ms = 25.0;
    }
    s
}

/// One transport's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `http` or `nats`.
    pub transport: String,
    /// The finder's answer, ops/s; `None` when no step passed.
    pub rate: Option<u64>,
    /// Whether the confirming hold passed.
    pub confirmed: bool,
}

/// FAIL when a transport found no answer or one outside 90–102% of `capacity`;
/// INCONCLUSIVE when a transport could not run (`missing`) or an answer was not confirmed.
pub fn judge(answers: &[Answer], missing: &[String], capacity: f64) -> Verdict {
    let mut failures = Vec::new();
    let mut doubts: Vec<String> = missing.to_vec();
    for a in answers {
        match a.rate {
            None => failures.push(format!(
                "{}: no step passed, so there is no answer",
                a.transport
            )),
            Some(rate) => {
                let share = rate as f64 / capacity;
                if !(LOW..=HIGH).contains(&share) {
                    failures.push(format!(
                        "{}: answer {rate}/s is {:.1}% of the capacity {capacity:.0}/s: expected {:.0}% to {:.0}%",
                        a.transport,
                        share * 100.0,
                        LOW * 100.0,
                        HIGH * 100.0
                    ));
                } else if !a.confirmed {
                    doubts.push(format!(
                        "{}: answer {rate}/s was not confirmed",
                        a.transport
                    ));
                }
            }
        }
    }
    if answers.is_empty() && missing.is_empty() {
        failures.push("no transport ran".into());
    }
    Verdict::from_checks(failures, doubts)
}

/// `stress serve MODEL …` as a child; returns it and the first line it printed.
fn serve_child(args: &[&str], log: &Path) -> Result<(Guarded, String)> {
    let exe = std::env::current_exe().context("locating the stress binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(MODEL)
        .args(args)
        .args(["--for", "3600s"]);
    let mut child = spawn_child(cmd, "stress serve", log)?;
    let until = Instant::now() + BANNER_BOUND;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("serving ")) {
            return Ok((child, line.to_string()));
        }
        if !child.is_running() {
            bail!("stress serve exited before serving: {}", text.trim());
        }
        if Instant::now() >= until {
            bail!(
                "stress serve printed no address within {BANNER_BOUND:?}: {}",
                text.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finder_config(s: &Settings) -> FinderConfig {
    FinderConfig {
        steps: s.steps.clone(),
        timing: s.timing,
        precision_pct: s.precision_pct,
        max_refine_steps: 8,
        slo: Slo {
            p99_ms: Some(s.p99_ms),
            ..Slo::default()
        },
    }
}

/// Runs the finder against `spec` with `opts`, on one runtime.
fn find_through(
    spec: &str,
    opts: &targets::TargetOptions,
    cfg: &FinderConfig,
) -> Result<collector::finder::FinderReport> {
    let rt = crate::harness::runtime()?;
    let target = crate::target_flags::resolve(&rt, spec, opts)?;
    let report = rt.block_on(find_on(
        target.clone(),
        cfg,
        GeneratorConfig::default(),
        true,
        None,
    ));
    drop(target);
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}

fn http_run(work: &Path, cfg: &FinderConfig) -> Result<collector::finder::FinderReport> {
    let (mut child, banner) =
        serve_child(&["--http", "127.0.0.1:0"], &work.join("serve-http.log"))?;
    let url = banner
        .split_whitespace()
        .last()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("no URL in {banner:?}"))?
        .to_string();
    let opts = targets::TargetOptions {
        conns: HTTP_CONNS,
        ..targets::TargetOptions::default()
    };
    let report = find_through(&url, &opts, cfg);
    child.stop(libc::SIGTERM, Duration::from_secs(5));
    report
}

fn nats_run(work: &Path, cfg: &FinderConfig) -> Result<Option<collector::finder::FinderReport>> {
    let rt = crate::harness::runtime()?;
    let server = match rt.block_on(hub_leaf::nats::NatsServer::start(&work.join("nats"))) {
        Ok(s) => s,
        Err(e @ hub_leaf::nats::NatsError::NotFound { .. }) => {
            println!("nats: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let url = server.url().to_string();
    let (mut child, _) = serve_child(
        &["--nats", &url, "--subject", SUBJECT],
        &work.join("serve-nats.log"),
    )?;
    let authority = url.trim_start_matches("nats://");
    let report = find_through(
        &format!("nats://{authority}/{SUBJECT}"),
        &targets::TargetOptions::default(),
        cfg,
    );
    child.stop(libc::SIGTERM, Duration::from_secs(5));
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
    report.map(Some)
}

impl Suite for MaxRpsServe {
    fn name(&self) -> &'static str {
        "maxrps-serve"
    }

    fn description(&self) -> &'static str {
        "max-RPS finder through http:// and nats:// against `stress serve sim:servers=4,service_us=1000` (capacity 4,000 ops/s): each answer within 90-102%"
    }

    fn plan(&self, profile: Profile) -> Plan {
        let s = settings(profile);
        Plan {
            scale: format!(
                "2 transports · steps {} · hold {} s · p99 ≤ {} ms",
                steps_text(&s.steps),
                s.timing.hold.as_secs_f64(),
                s.p99_ms
            ),
            expected_s: (2.0 * finder_expected_s(&s.steps, s.timing) + 4.0).ceil() as u64,
        }
    }

    fn run(&self, ctx: &RunContext) -> Result<SuiteResult> {
        let s = settings(ctx.profile);
        let cfg = finder_config(&s);
        let scale = self.plan(ctx.profile).scale;
        let http = http_run(&ctx.work_dir, &cfg)?;
        println!("http: {}", http.answer_line());
        let nats = nats_run(&ctx.work_dir, &cfg)?;
        let mut r = to_result(
            self.name(),
            &ctx.profile.to_string(),
            &scale,
            ctx.seed,
            &cfg,
            &http,
        );
        r.metrics.retain(|m| m.name != "max_rps");
        r.tables.clear();
        let mut answers = vec![answer_of("http", &http)];
        let mut missing = Vec::new();
        let mut reports = vec![("http", http)];
        match nats {
            Some(n) => {
                println!("nats: {}", n.answer_line());
                answers.push(answer_of("nats", &n));
                reports.push(("nats", n));
            }
            None => missing.push(
                "nats: no nats-server (apt-get install nats-server, or set NATS_SERVER_BIN)".into(),
            ),
        }
        report(&mut r, &reports);
        r.config.insert("model".into(), MODEL.into());
        r.config.insert("capacity_per_s".into(), CAPACITY.into());
        r.config.insert("http_conns".into(), HTTP_CONNS.into());
        r.headline = answers
            .iter()
            .map(|a| match a.rate {
                Some(rate) => format!(
                    "{} {rate}/s ({:.1}%)",
                    a.transport,
                    rate as f64 / CAPACITY * 100.0
                ),
                None => format!("{} no answer", a.transport),
            })
            .collect::<Vec<_>>()
            .join(" · ");
        r.verdict = judge(&answers, &missing, CAPACITY);
        Ok(r)
    }
}

fn answer_of(transport: &str, report: &collector::finder::FinderReport) -> Answer {
    let confirmed = matches!(
        report.answer,
        collector::finder::Answer::Found {
            confirmed: true,
            ..
        }
    );
    Answer {
        transport: transport.into(),
        rate: report.rate(),
        confirmed,
    }
}

/// A row per transport, the step table of each, and `TRANSPORT_pct_of_capacity` metrics.
fn report(r: &mut SuiteResult, reports: &[(&str, collector::finder::FinderReport)]) {
    let mut summary = Table::new(
        "Answer per transport",
        &[
            "transport",
            "answer /s",
            "% of capacity",
            "confirmed",
            "steps",
        ],
    );
    for (name, rep) in reports {
        let pct = rep.rate().map(|x| x as f64 / CAPACITY * 100.0);
        summary.push_row([
            name.to_string(),
            rep.rate()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            pct.map(|p| format!("{p:.1}%"))
                .unwrap_or_else(|| "-".into()),
            answer_of(name, rep).confirmed.to_string(),
            rep.rows.len().to_string(),
        ]);
        if let Some(p) = pct {
            r.metrics
                .push(Metric::new(format!("{name}_pct_of_capacity"), p, "%").headline());
        }
        let mut t = steps_table(rep);
        t.title = format!("{name}: {}", t.title);
        r.tables.push(t);
    }
    r.tables.insert(0, summary);
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::Status;

    fn a(transport: &str, rate: Option<u64>, confirmed: bool) -> Answer {
        Answer {
            transport: transport.into(),
            rate,
            confirmed,
        }
    }

    #[test]
    fn answers_near_the_capacity_pass() {
        let v = judge(
            &[a("http", Some(3900), true), a("nats", Some(3700), true)],
            &[],
            CAPACITY,
        );
        assert_eq!(v.status, Status::Pass, "{v:?}");
    }

    #[test]
    fn an_answer_off_the_capacity_fails() {
        let v = judge(
            &[a("http", Some(3900), true), a("nats", Some(2500), true)],
            &[],
            CAPACITY,
        );
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.reasons[0].contains("nats") && v.reasons[0].contains("2500"),
            "{v:?}"
        );
        let over = judge(&[a("http", Some(4200), true)], &[], CAPACITY);
        assert_eq!(over.status, Status::Fail, "above 102% is wrong too");
    }

    #[test]
    fn no_answer_fails_and_a_missing_server_is_inconclusive() {
        assert_eq!(
            judge(&[a("http", None, false)], &[], CAPACITY).status,
            Status::Fail
        );
        let v = judge(
            &[a("http", Some(3900), true)],
            &["nats: no nats-server".into()],
            CAPACITY,
        );
        assert_eq!(v.status, Status::Inconclusive);
        assert_eq!(
            judge(&[a("http", Some(3900), false)], &[], CAPACITY).status,
            Status::Inconclusive
        );
        assert_eq!(judge(&[], &[], CAPACITY).status, Status::Fail);
    }
}
