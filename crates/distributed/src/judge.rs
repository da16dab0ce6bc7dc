//! The pure half of a distributed step: merge what the workers reported into one
//! measurement, judge it against the SLO exactly as a single generator's step is judged,
//! then hold the workers to their part.
//!
//! **Merging** adds the workers' histograms ([`StepData::merge`]: the HdrHistogram counts
//! add, so the merged percentiles are those of every sample in one histogram, never an
//! average of percentiles) and sums their counters. The issue-lateness histograms add the
//! same way.
//!
//! **Workers' part**, checked after the SLO:
//!
//! | worker | effect on the step |
//! |---|---|
//! | gone (no reply within the bound, its NATS connection lost) or its report unreadable | INCONCLUSIVE, whatever the SLO said: part of the load is missing |
//! | armed the step after its start (late) | a PASS becomes INCONCLUSIVE |
//! | issued less than `(1 − shortfall tolerance) ×` its share | a PASS becomes INCONCLUSIVE |
//! | the workers' caps add up to less than the step's rate | a PASS becomes INCONCLUSIVE |
//!
//! A TRIP stays a TRIP when every worker reported (the service failed at no more than the
//! planned load), with the worker notes added to its reasons. Every note names the worker.

use std::time::Duration;

use collector::generator::{Measured, Mode};
use collector::recorder::{histogram_from_base64, Epoch, StepData};
use collector::slo::{evaluate, Slo, StepStatus, StepVerdict};
use hdrhistogram::Histogram;

use crate::protocol::StepReport;

/// What came back from one worker for one step.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Its report.
    Reported(Box<StepReport>),
    /// No report: why (timeout, connection lost, an error reply).
    Gone(String),
}

/// One worker's part in one step, as planned and as it came back.
#[derive(Debug, Clone)]
pub struct WorkerStep {
    /// The worker's name.
    pub name: String,
    /// Its share of the rate, operations per second.
    pub share: u64,
    /// What it sent back.
    pub outcome: Outcome,
}

/// A worker's line under a step.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// The worker's name.
    pub name: String,
    /// Its share, operations per second.
    pub share: u64,
    /// Operations it issued per second of the hold.
    pub achieved_per_s: f64,
    /// Its own p99 from the intended start, ms.
    pub p99_ms: f64,
    /// Operations it completed.
    pub completed: u64,
    /// Operations it started late, or dropped at its in-flight limit.
    pub late: u64,
    /// Operations dropped.
    pub dropped: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Its issue lateness p99, µs.
    pub issue_late_p99_us: u64,
    /// How long before the start it had the step armed, ms (negative: late).
    pub armed_early_ms: f64,
    /// `ok`, or what was wrong: `gone`, `late`, `short`.
    pub status: &'static str,
    /// The note the step's verdict got, if any.
    pub note: Option<String>,
}

/// A judged distributed step.
#[derive(Debug)]
pub struct JudgedStep {
    /// All workers' data merged, as one generator would have measured it.
    pub measured: Measured,
    /// The SLO's verdict, then the workers' part.
    pub verdict: StepVerdict,
    /// One line per worker, in worker order.
    pub workers: Vec<WorkerRow>,
}

/// Merges the workers' reports of a step at `rate` (of which `shortfall` per second could
/// not be assigned, the caps being too low) and judges it (see the module doc).
pub fn judge_step(
    rate: u64,
    shortfall: u64,
    hold: Duration,
    workers: &[WorkerStep],
    slo: &Slo,
) -> JudgedStep {
    let mut merged = Merge::new(rate, hold);
    let mut notes = Vec::new();
    let mut gone = false;
    let mut rows = Vec::with_capacity(workers.len());
    for w in workers {
        let row = match &w.outcome {
            Outcome::Gone(why) => Err(why.clone()),
            Outcome::Reported(r) => merged.add(r).map(|data| (r, data)),
        };
        let row = match row {
            Err(why) => {
                gone = true;
                let note = format!("worker {} gone mid-step: {why}", w.name);
                notes.push(note.clone());
                gone_row(w, note)
            }
            Ok((r, data)) => {
                let row = reported_row(w, r, &data, slo.shortfall_tolerance);
                notes.extend(row.note.clone());
                row
            }
        };
        rows.push(row);
    }
    if shortfall > 0 {
        notes.push(format!(
            "the workers' --max-rate caps add up to {}/s, short of the step's {rate}/s by {shortfall}/s",
            rate - shortfall
        ));
    }
    let measured = merged.finish();
    let mut verdict = evaluate(&measured, slo);
    if !notes.is_empty() {
        let status = match verdict.status {
            _ if gone => StepStatus::Inconclusive,
            StepStatus::Pass => StepStatus::Inconclusive,
            other => other,
        };
        notes.extend(verdict.reasons);
        verdict = StepVerdict {
            status,
            reasons: notes,
        };
    }
    JudgedStep {
        measured,
        verdict,
        workers: rows,
    }
}

fn gone_row(w: &WorkerStep, note: String) -> WorkerRow {
    WorkerRow {
        name: w.name.clone(),
        share: w.share,
        achieved_per_s: 0.0,
        p99_ms: 0.0,
        completed: 0,
        late: 0,
        dropped: 0,
        errors: 0,
        issue_late_p99_us: 0,
        armed_early_ms: 0.0,
        status: "gone",
        note: Some(note),
    }
}

fn reported_row(w: &WorkerStep, r: &StepReport, d: &Decoded, tolerance: f64) -> WorkerRow {
    let total = d.data.total();
    let summary = total.summary(r.window_s);
    let achieved = if r.window_s > 0.0 {
        r.issued as f64 / r.window_s
    } else {
        0.0
    };
    let (status, note) = if r.armed_early_us < 0 {
        (
            "late",
            Some(format!(
                "worker {} armed the step {:.1} ms after its start",
                w.name,
                -r.armed_early_us as f64 / 1000.0
            )),
        )
    } else if achieved < (1.0 - tolerance) * w.share as f64 {
        (
            "short",
            Some(format!(
                "worker {} short of its share: issued {achieved:.0}/s of {}/s",
                w.name, w.share
            )),
        )
    } else {
        ("ok", None)
    };
    WorkerRow {
        name: w.name.clone(),
        share: w.share,
        achieved_per_s: achieved,
        p99_ms: summary.p99_ms,
        completed: total.completed(),
        late: total.late,
        dropped: total.dropped,
        errors: total.error_count(),
        issue_late_p99_us: d.lateness.value_at_quantile(0.99),
        armed_early_ms: r.armed_early_us as f64 / 1000.0,
        status,
        note,
    }
}

/// A report's binary parts, decoded.
struct Decoded {
    data: StepData,
    lateness: Histogram<u64>,
}

/// The merge in progress.
struct Merge {
    rate: u64,
    hold: Duration,
    data: StepData,
    lateness: Histogram<u64>,
    scheduled: u64,
    issued: u64,
    not_issued: u64,
    drained: bool,
}

impl Merge {
    fn new(rate: u64, hold: Duration) -> Merge {
        Merge {
            rate,
            hold,
            data: StepData::new(Epoch(0)),
            lateness: collector::summary::micros_histogram(),
            scheduled: 0,
            issued: 0,
            not_issued: 0,
            drained: true,
        }
    }

    /// Decodes a report and adds it; on any error nothing is added.
    fn add(&mut self, r: &StepReport) -> Result<Decoded, String> {
        let data = StepData::from_bytes(r.data.as_bytes())
            .map_err(|e| format!("its step data is unreadable: {e}"))?;
        let lateness = histogram_from_base64(&r.lateness)
            .map_err(|e| format!("its lateness histogram is unreadable: {e}"))?;
        // The lateness first, on a copy: `StepData::merge` changes nothing when it fails, so
        // nothing is half-added whichever of the two fails.
        let mut late = self.lateness.clone();
        late.add(&lateness)
            .map_err(|e| format!("its lateness histogram does not merge: {e}"))?;
        self.data
            .merge(&data)
            .map_err(|e| format!("its step data does not merge: {e}"))?;
        self.lateness = late;
        self.scheduled += r.scheduled;
        self.issued += r.issued;
        self.not_issued += r.not_issued;
        self.drained &= r.drained;
        Ok(Decoded { data, lateness })
    }

    fn finish(self) -> Measured {
        Measured {
            mode: Mode::OpenLoop {
                target_per_s: self.rate as f64,
            },
            window_s: self.hold.as_secs_f64(),
            scheduled: self.scheduled,
            issued: self.issued,
            not_issued: self.not_issued,
            issue_lateness_us: self.lateness,
            pending: (None, None),
            drained: self.drained,
            data: self.data,
        }
    }
}

/// The merge check: for every action whose raw log is complete, the merged histogram equals
/// the histogram of all raw samples recorded into one (count for count), with the
/// percentiles compared. `Err` names the first action and percentile that differ, or says
/// nothing could be compared.
pub fn check_merge_exact(data: &StepData) -> Result<Vec<String>, String> {
    let mut checked = Vec::new();
    for (name, a) in &data.actions {
        if a.completed() == 0 {
            continue;
        }
        let Some(raw) = a.raw_histogram() else {
            return Err(format!(
                "action {name:?}: the raw log holds {} of {} samples: cannot compare",
                a.raw_latency_us.len(),
                a.latency.len()
            ));
        };
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (m, r) = (a.latency.value_at_quantile(q), raw.value_at_quantile(q));
            if m != r {
                return Err(format!(
                    "action {name:?}: merged p{} = {m} µs, all samples in one histogram = {r} µs",
                    q * 100.0
                ));
            }
        }
        if a.latency != raw || a.latency.len() != raw.len() {
            return Err(format!(
                "action {name:?}: the merged histogram and the one of all samples differ in \
                 their counts ({} and {} samples)",
                a.latency.len(),
                raw.len()
            ));
        }
        checked.push(format!("{name}: {} samples", raw.len()));
    }
    if checked.is_empty() {
        return Err("no action completed an operation: nothing to compare".into());
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::recorder::{histogram_to_base64, ActionId, Recorder, Sample};

    fn slo() -> Slo {
        Slo {
            p99_ms: Some(50.0),
            ..Slo::default()
        }
    }

    /// A worker's report of `issued` operations in a 1 s hold, latencies `lat_us`.
    fn report(issued: u64, lat_us: &[u64], armed_early_us: i64, raw: bool) -> StepReport {
        let r = Recorder::new(&["op"], 2)
            .unwrap()
            .with_raw_log(if raw { 1 << 16 } else { 0 });
        let e = r.epoch();
        for (i, &v) in lat_us.iter().enumerate() {
            r.record(
                i,
                e,
                &Sample {
                    action: ActionId(0),
                    latency_us: v,
                    service_us: v,
                    error: None,
                },
            );
        }
        let mut lateness = collector::summary::micros_histogram();
        lateness.record(3).unwrap();
        StepReport {
            step: 0,
            rate: issued,
            armed_early_us,
            scheduled: issued,
            issued,
            not_issued: 0,
            drained: true,
            window_s: 1.0,
            lateness: histogram_to_base64(&lateness).unwrap(),
            data: String::from_utf8(r.reset().to_bytes().unwrap()).unwrap(),
            intervals: Vec::new(),
        }
    }

    fn worker(name: &str, share: u64, r: StepReport) -> WorkerStep {
        WorkerStep {
            name: name.into(),
            share,
            outcome: Outcome::Reported(Box::new(r)),
        }
    }

    fn lat(n: usize, base: u64) -> Vec<u64> {
        (0..n as u64).map(|i| base + i % 700).collect()
    }

    #[test]
    fn healthy_workers_merge_to_a_pass() {
        let ws = [
            worker("a", 100, report(100, &lat(100, 1000), 20_000, true)),
            worker("b", 100, report(100, &lat(100, 2000), 20_000, true)),
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Pass, "{:?}", j.verdict);
        assert_eq!(j.measured.issued, 200);
        assert_eq!(j.measured.data.total().completed(), 200);
        assert_eq!(j.measured.issue_lateness_us.len(), 2);
        assert!(j.workers.iter().all(|w| w.status == "ok"));
        check_merge_exact(&j.measured.data).unwrap();
    }

    #[test]
    fn a_worker_gone_mid_step_is_inconclusive_even_when_the_rest_trips() {
        let ws = [
            worker("a", 100, report(100, &lat(100, 90_000), 20_000, false)),
            WorkerStep {
                name: "b".into(),
                share: 100,
                outcome: Outcome::Gone("no reply within 9 s".into()),
            },
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
        assert!(
            j.verdict.reasons[0].contains("worker b gone mid-step"),
            "{:?}",
            j.verdict
        );
        assert_eq!(j.workers[1].status, "gone");
        // And with a healthy rest, still never a PASS.
        let ws = [
            worker("a", 100, report(100, &lat(100, 1000), 20_000, false)),
            ws[1].clone(),
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
    }

    #[test]
    fn an_unreadable_report_counts_as_gone() {
        let mut bad = report(100, &lat(100, 1000), 20_000, false);
        bad.data = "{}".into();
        let ws = [worker("a", 100, bad)];
        let j = judge_step(100, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
        assert!(
            j.verdict.reasons[0].contains("unreadable"),
            "{:?}",
            j.verdict
        );
    }

    #[test]
    fn a_late_or_short_worker_turns_a_pass_inconclusive_and_is_named() {
        let ws = [
            worker("a", 100, report(100, &lat(100, 1000), -4_000, false)),
            worker("b", 100, report(100, &lat(100, 1000), 20_000, false)),
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
        assert!(j.verdict.reasons[0].contains("worker a armed the step 4.0 ms after"));
        let ws = [
            worker("a", 100, report(100, &lat(100, 1000), 20_000, false)),
            worker("b", 100, report(60, &lat(60, 1000), 20_000, false)),
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
        assert!(
            j.verdict.reasons[0].contains("worker b short of its share: issued 60/s of 100/s"),
            "{:?}",
            j.verdict
        );
        assert_eq!(j.workers[1].status, "short");
    }

    #[test]
    fn caps_below_the_rate_never_pass_and_a_trip_stays_a_trip() {
        let ws = [worker(
            "a",
            100,
            report(100, &lat(100, 1000), 20_000, false),
        )];
        let j = judge_step(150, 50, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Inconclusive);
        assert!(j.verdict.reasons[0].contains("caps add up to 100/s"));
        let ws = [worker(
            "a",
            100,
            report(100, &lat(100, 80_000), -1_000, false),
        )];
        let j = judge_step(100, 0, Duration::from_secs(1), &ws, &slo());
        assert_eq!(j.verdict.status, StepStatus::Trip);
        assert!(j.verdict.reasons.iter().any(|r| r.starts_with("p99=")));
    }

    #[test]
    fn the_merge_check_fails_when_counts_differ_or_the_log_is_cut() {
        let ws = [
            worker("a", 100, report(100, &lat(100, 1000), 20_000, true)),
            worker("b", 100, report(100, &lat(100, 5000), 20_000, true)),
        ];
        let j = judge_step(200, 0, Duration::from_secs(1), &ws, &slo());
        let mut data = j.measured.data.clone();
        // A merge that lost a sample (as averaging or rounding would change values).
        let a = data.actions.get_mut("op").unwrap();
        let last = a.raw_latency_us.pop().unwrap();
        a.raw_latency_us.push(last + 3000);
        let e = check_merge_exact(&data).unwrap_err();
        assert!(e.contains("merged p"), "{e}");
        let a = data.actions.get_mut("op").unwrap();
        a.raw_latency_us.pop();
        let e = check_merge_exact(&data).unwrap_err();
        assert!(e.contains("cannot compare"), "{e}");
        // No raw log at all: nothing to compare is a failure, never a pass.
        let ws = [worker(
            "a",
            100,
            report(100, &lat(100, 1000), 20_000, false),
        )];
        let j = judge_step(100, 0, Duration::from_secs(1), &ws, &slo());
        assert!(check_merge_exact(&j.measured.data).is_err());
    }
}
