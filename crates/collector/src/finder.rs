//! The max-RPS finder: step up through increasing rates, judge every step against the SLO,
//! then refine between the last PASS and the first TRIP by bisection until the bracket is
//! within the precision (or a step budget is spent), and hold the answer once more to
//! confirm it.
//!
//! INCONCLUSIVE steps neither stop the ramp nor count as passes: during the ramp the next
//! step runs; during refinement an INCONCLUSIVE midpoint cannot be claimed, so the bracket's
//! upper end moves down to it (the answer stays at what has actually passed).

use std::fmt::Write as _;

use crate::generator::{GeneratorError, Measured, OpenLoop};
use crate::recorder::ActionSummary;
use crate::shape::StepTiming;
use crate::slo::{evaluate, Slo, SloError, StepStatus, StepVerdict};

/// Why the finder could not run.
#[derive(Debug, thiserror::Error)]
pub enum FinderError {
    /// A setting is out of range.
    #[error("invalid {what} {value}: expected {expected}")]
    Setting {
        /// Which setting.
        what: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// The SLO is invalid.
    #[error(transparent)]
    Slo(#[from] SloError),
    /// The generator failed.
    #[error(transparent)]
    Generator(#[from] GeneratorError),
}

/// Finder settings.
#[derive(Debug, Clone)]
pub struct FinderConfig {
    /// The ramp, strictly increasing rates.
    pub steps: Vec<u64>,
    /// Warmup, hold and cooldown of every step.
    pub timing: StepTiming,
    /// Stop refining when (first TRIP − last PASS) / last PASS ≤ precision %, in (0, 50].
    pub precision_pct: f64,
    /// At most this many refinement steps.
    pub max_refine_steps: usize,
    /// The thresholds.
    pub slo: Slo,
}

impl FinderConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), FinderError> {
        let p = self.precision_pct;
        if !(p.is_finite() && p > 0.0 && p <= 50.0) {
            return Err(FinderError::Setting {
                what: "precision".into(),
                value: p.to_string(),
                expected: "a percentage above 0 and at most 50, like 5".into(),
            });
        }
        if self.max_refine_steps > 64 {
            return Err(FinderError::Setting {
                what: "refine step budget".into(),
                value: self.max_refine_steps.to_string(),
                expected: "at most 64".into(),
            });
        }
        crate::shape::Shape::Ramp {
            rates: self.steps.clone(),
            timing: self.timing,
        }
        .validate()
        .map_err(GeneratorError::from)?;
        self.slo.validate()?;
        Ok(())
    }
}

/// Which part of the search a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The given ramp.
    Ramp,
    /// A bisection midpoint.
    Refine,
    /// The answer held once more.
    Confirm,
}

impl Phase {
    /// `ramp`, `refine` or `confirm`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Refine => "refine",
            Phase::Confirm => "confirm",
        }
    }
}

/// One step as the report shows it.
#[derive(Debug, Clone)]
pub struct StepRow {
    /// Ramp, refine or confirm.
    pub phase: Phase,
    /// Requested rate.
    pub target_per_s: u64,
    /// Operations issued per second of hold.
    pub achieved_per_s: f64,
    /// All actions together (latency from intended start).
    pub total: ActionSummary,
    /// Per action.
    pub actions: Vec<(String, ActionSummary)>,
    /// Operations dropped at the in-flight limit.
    pub dropped: u64,
    /// Operations started later than the slack.
    pub late: u64,
    /// Generator issue lateness p99, µs.
    pub issue_late_p99_us: f64,
    /// Backlog growth over the hold, if reported.
    pub backlog_growth: Option<i64>,
    /// The verdict.
    pub verdict: StepVerdict,
}

impl StepRow {
    /// Builds a row from a measured step.
    pub fn from_measured(phase: Phase, target: u64, m: &Measured, verdict: StepVerdict) -> Self {
        let total = m.data.total();
        StepRow {
            phase,
            target_per_s: target,
            achieved_per_s: m.achieved_per_s(),
            total: total.summary(m.window_s),
            actions: m
                .data
                .actions
                .iter()
                .map(|(n, d)| (n.clone(), d.summary(m.window_s)))
                .collect(),
            dropped: total.dropped,
            late: total.late,
            issue_late_p99_us: m.issue_lateness_us.value_at_quantile(0.99) as f64,
            backlog_growth: m.backlog_growth(),
            verdict,
        }
    }
}

/// The answer of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The largest rate that passed.
    Found {
        /// Operations per second.
        rate: u64,
        /// Whether the confirmation hold passed too.
        confirmed: bool,
        /// Why confirmation failed, if it did.
        confirm_reasons: Vec<String>,
        /// The first rate that tripped, if any step tripped (else the maximum is higher).
        first_trip: Option<u64>,
        /// Bracket width at the end, percent of the answer.
        bracket_pct: Option<f64>,
    },
    /// No step passed.
    NonePassed {
        /// Status and reasons of the first step.
        first: StepVerdict,
    },
}

/// Everything the finder did.
#[derive(Debug, Clone)]
pub struct FinderReport {
    /// Every step in the order it ran.
    pub rows: Vec<StepRow>,
    /// The answer.
    pub answer: Answer,
    /// The target's description.
    pub target: String,
    /// Precision asked for, %.
    pub precision_pct: f64,
}

impl FinderReport {
    /// The final line: `ANSWER: max RPS = N (target=…, precision ±x%)`, or
    /// `ANSWER: no step passed (first step TRIP: reasons)`.
    pub fn answer_line(&self) -> String {
        match &self.answer {
            Answer::Found {
                rate,
                confirmed,
                confirm_reasons,
                first_trip,
                bracket_pct,
            } => {
                let mut s = format!("ANSWER: max RPS = {rate} (target={}", self.target);
                match (first_trip, bracket_pct) {
                    (Some(_), Some(b)) if *b <= self.precision_pct => {
                        let _ = write!(s, ", precision ±{}%", trim(self.precision_pct));
                    }
                    (Some(t), Some(b)) => {
                        let _ = write!(
                            s,
                            ", bracket {rate}..{t} = {b:.1}%: refine budget spent before ±{}%",
                            trim(self.precision_pct)
                        );
                    }
                    _ => s.push_str(", no step tripped: the maximum is higher; add larger --steps"),
                }
                if !confirmed {
                    let _ = write!(s, ", unconfirmed: {}", confirm_reasons.join("; "));
                }
                s.push(')');
                s
            }
            Answer::NonePassed { first } => format!(
                "ANSWER: no step passed (first step {}: {})",
                first.status,
                first.reasons.join("; ")
            ),
        }
    }

    /// The answer's rate, if any step passed.
    pub fn rate(&self) -> Option<u64> {
        match self.answer {
            Answer::Found { rate, .. } => Some(rate),
            Answer::NonePassed { .. } => None,
        }
    }

    /// The console table's header line.
    pub fn header() -> String {
        format!(
            "{:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}  {:<12} {}\n",
            "phase",
            "target/s",
            "achieved/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "svc p99",
            "errors",
            "verdict",
            "reasons"
        )
    }

    /// The console table, one line per step.
    pub fn console_table(&self) -> String {
        let mut out = Self::header();
        for r in &self.rows {
            out.push_str(&console_row(r));
        }
        out
    }

    /// The CSV: a header and one line per step, with per-action columns.
    pub fn csv(&self) -> String {
        let actions: Vec<String> = self
            .rows
            .first()
            .map(|r| r.actions.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let mut out = String::from(
            "phase,target_per_s,achieved_per_s,count,ok,errors,error_rate,dropped,late,p50_ms,p90_ms,p95_ms,p99_ms,p999_ms,max_ms,service_p50_ms,service_p99_ms,issue_late_p99_us,backlog_growth,verdict,reasons",
        );
        for a in &actions {
            let _ = write!(out, ",{a}_count,{a}_p50_ms,{a}_p95_ms,{a}_p99_ms");
        }
        out.push('\n');
        for r in &self.rows {
            let t = &r.total;
            let _ = write!(
                out,
                "{},{},{:.1},{},{},{},{:.6},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.0},{},{},{}",
                r.phase.name(),
                r.target_per_s,
                r.achieved_per_s,
                t.count,
                t.ok,
                t.errors,
                t.error_rate,
                r.dropped,
                r.late,
                t.p50_ms,
                t.p90_ms,
                t.p95_ms,
                t.p99_ms,
                t.p999_ms,
                t.max_ms,
                t.service_p50_ms,
                t.service_p99_ms,
                r.issue_late_p99_us,
                r.backlog_growth.map(|g| g.to_string()).unwrap_or_default(),
                r.verdict.status,
                csv_field(&r.verdict.reasons.join("; "))
            );
            for a in &actions {
                match r.actions.iter().find(|(n, _)| n == a) {
                    Some((_, s)) => {
                        let _ = write!(
                            out,
                            ",{},{:.3},{:.3},{:.3}",
                            s.count, s.p50_ms, s.p95_ms, s.p99_ms
                        );
                    }
                    None => out.push_str(",,,,"),
                }
            }
            out.push('\n');
        }
        out
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One console line for a step.
pub fn console_row(r: &StepRow) -> String {
    format!(
        "{:<8} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}%  {:<12} {}\n",
        r.phase.name(),
        r.target_per_s,
        r.achieved_per_s,
        r.total.p50_ms,
        r.total.p95_ms,
        r.total.p99_ms,
        r.total.service_p99_ms,
        r.total.error_rate * 100.0,
        r.verdict.status.to_string(),
        r.verdict.reasons.join("; ")
    )
}

/// The search as a state machine, free of any I/O: ask [`Search::next_step`] which rate to run,
/// run it, report its status with [`Search::observe`], until `next` returns `None`; then
/// [`Search::answer`]. [`find`] drives it with a real generator; tests drive it with
/// scripted verdicts.
#[derive(Debug, Clone)]
pub struct Search {
    steps: Vec<u64>,
    precision_pct: f64,
    max_refine_steps: usize,
    ramp_index: usize,
    last_pass: Option<u64>,
    first_trip: Option<u64>,
    first_verdict: Option<StepVerdict>,
    hi: Option<u64>,
    refined: usize,
    pending: Option<(Phase, u64)>,
    state: SearchState,
    confirm: Option<StepVerdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchState {
    Ramp,
    Refine,
    Confirm,
    Done,
}

impl Search {
    /// A search over `cfg`'s steps (the config is assumed valid: see [`FinderConfig::validate`]).
    pub fn new(cfg: &FinderConfig) -> Self {
        Search {
            steps: cfg.steps.clone(),
            precision_pct: cfg.precision_pct,
            max_refine_steps: cfg.max_refine_steps,
            ramp_index: 0,
            last_pass: None,
            first_trip: None,
            first_verdict: None,
            hi: None,
            refined: 0,
            pending: None,
            state: SearchState::Ramp,
            confirm: None,
        }
    }

    /// The next step to run, or `None` when the search is over. Calling it again before
    /// [`Search::observe`] returns the same step.
    pub fn next_step(&mut self) -> Option<(Phase, u64)> {
        if let Some(p) = self.pending {
            return Some(p);
        }
        loop {
            match self.state {
                SearchState::Ramp => match self.steps.get(self.ramp_index) {
                    Some(&rate) => {
                        self.pending = Some((Phase::Ramp, rate));
                        return self.pending;
                    }
                    None => self.state = SearchState::Refine,
                },
                SearchState::Refine => {
                    let Some(lo) = self.last_pass else {
                        self.state = SearchState::Done;
                        continue;
                    };
                    let Some(hi) = self.hi else {
                        self.state = SearchState::Confirm;
                        continue;
                    };
                    let width = (hi - lo) as f64 / lo as f64 * 100.0;
                    let mid = lo + (hi - lo) / 2;
                    if width <= self.precision_pct
                        || self.refined >= self.max_refine_steps
                        || mid <= lo
                        || mid >= hi
                    {
                        self.state = SearchState::Confirm;
                        continue;
                    }
                    self.pending = Some((Phase::Refine, mid));
                    return self.pending;
                }
                SearchState::Confirm => {
                    if self.confirm.is_some() {
                        self.state = SearchState::Done;
                        continue;
                    }
                    let lo = self.last_pass?;
                    self.pending = Some((Phase::Confirm, lo));
                    return self.pending;
                }
                SearchState::Done => return None,
            }
        }
    }

    /// Reports the verdict of the step [`Search::next_step`] returned.
    pub fn observe(&mut self, verdict: &StepVerdict) {
        let Some((phase, rate)) = self.pending.take() else {
            return;
        };
        if self.first_verdict.is_none() {
            self.first_verdict = Some(verdict.clone());
        }
        match phase {
            Phase::Ramp => {
                self.ramp_index += 1;
                match verdict.status {
                    StepStatus::Pass => self.last_pass = Some(rate),
                    StepStatus::Trip => {
                        self.first_trip = Some(rate);
                        self.hi = Some(rate);
                        self.state = SearchState::Refine;
                    }
                    // Neither stops the ramp nor counts as a pass.
                    StepStatus::Inconclusive => {}
                }
            }
            Phase::Refine => {
                self.refined += 1;
                match verdict.status {
                    StepStatus::Pass => self.last_pass = Some(rate),
                    // An INCONCLUSIVE midpoint cannot be claimed: the bracket closes on it.
                    StepStatus::Trip | StepStatus::Inconclusive => self.hi = Some(rate),
                }
            }
            Phase::Confirm => self.confirm = Some(verdict.clone()),
        }
    }

    /// The answer so far (final once [`Search::next_step`] has returned `None`).
    pub fn answer(&self) -> Answer {
        match self.last_pass {
            None => Answer::NonePassed {
                first: self.first_verdict.clone().unwrap_or(StepVerdict {
                    status: StepStatus::Inconclusive,
                    reasons: vec!["no step ran".into()],
                }),
            },
            Some(rate) => {
                let (confirmed, confirm_reasons) = match &self.confirm {
                    Some(v) if v.status == StepStatus::Pass => (true, Vec::new()),
                    Some(v) => {
                        let mut r = vec![format!("confirm step {}", v.status)];
                        r.extend(v.reasons.iter().cloned());
                        (false, r)
                    }
                    None => (false, vec!["not confirmed yet".into()]),
                };
                Answer::Found {
                    rate,
                    confirmed,
                    confirm_reasons,
                    first_trip: self.first_trip,
                    bracket_pct: self.hi.map(|h| (h - rate) as f64 / rate as f64 * 100.0),
                }
            }
        }
    }
}

/// Runs the search with a real generator. `on_step` sees every row as soon as its step
/// ends (for progress).
pub async fn find(
    generator: &mut OpenLoop,
    cfg: &FinderConfig,
    mut on_step: impl FnMut(&StepRow),
) -> Result<FinderReport, FinderError> {
    cfg.validate()?;
    cfg.slo.check_actions(&generator.target().actions())?;
    let mut search = Search::new(cfg);
    let mut rows: Vec<StepRow> = Vec::new();
    // Bounded: at most every ramp step, the refine budget and one confirmation.
    while let Some((phase, rate)) = search.next_step() {
        let m = generator.step(rate, cfg.timing).await?;
        let verdict = evaluate(&m, &cfg.slo);
        search.observe(&verdict);
        let row = StepRow::from_measured(phase, rate, &m, verdict);
        on_step(&row);
        rows.push(row);
    }
    Ok(FinderReport {
        rows,
        answer: search.answer(),
        target: generator.target().describe(),
        precision_pct: cfg.precision_pct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(steps: &[u64], precision: f64, budget: usize) -> FinderConfig {
        FinderConfig {
            steps: steps.to_vec(),
            timing: StepTiming::new(Duration::ZERO, Duration::from_secs(1), Duration::ZERO)
                .unwrap(),
            precision_pct: precision,
            max_refine_steps: budget,
            slo: Slo {
                p99_ms: Some(50.0),
                ..Slo::default()
            },
        }
    }

    fn v(status: StepStatus, reason: &str) -> StepVerdict {
        StepVerdict {
            status,
            reasons: if reason.is_empty() {
                vec![]
            } else {
                vec![reason.into()]
            },
        }
    }

    /// Runs a search against a scripted system: `judge(rate)` gives each step's verdict.
    fn search(
        cfg: &FinderConfig,
        judge: impl Fn(Phase, u64) -> StepVerdict,
    ) -> (Vec<(Phase, u64)>, FinderReport) {
        let mut s = Search::new(cfg);
        let mut ran = Vec::new();
        for _ in 0..200 {
            let Some((phase, rate)) = s.next_step() else {
                break;
            };
            assert_eq!(
                s.next_step(),
                Some((phase, rate)),
                "next is stable until observed"
            );
            ran.push((phase, rate));
            s.observe(&judge(phase, rate));
        }
        assert!(s.next_step().is_none(), "search ended");
        let report = FinderReport {
            rows: Vec::new(),
            answer: s.answer(),
            target: "sim:servers=4,service_us=1000".into(),
            precision_pct: cfg.precision_pct,
        };
        (ran, report)
    }

    fn capacity(cap: u64) -> impl Fn(Phase, u64) -> StepVerdict {
        move |_, rate| {
            if rate <= cap {
                v(StepStatus::Pass, "")
            } else {
                v(StepStatus::Trip, "p99=612ms > 50")
            }
        }
    }

    #[test]
    fn bisects_to_the_precision_and_confirms() {
        let c = cfg(&[1000, 2000, 4000, 8000], 5.0, 8);
        let (ran, report) = search(&c, capacity(4100));
        assert_eq!(
            ran[..4].iter().map(|r| r.1).collect::<Vec<_>>(),
            [1000, 2000, 4000, 8000]
        );
        assert!(ran[4..ran.len() - 1].iter().all(|r| r.0 == Phase::Refine));
        assert_eq!(ran.last().unwrap().0, Phase::Confirm);
        let rate = report.rate().unwrap();
        assert!((4000..=4100).contains(&rate), "{rate}");
        assert_eq!(
            ran.last().unwrap().1,
            rate,
            "the answer is what was confirmed"
        );
        let line = report.answer_line();
        assert_eq!(
            line,
            format!(
                "ANSWER: max RPS = {rate} (target=sim:servers=4,service_us=1000, precision ±5%)"
            )
        );
    }

    #[test]
    fn trip_stops_the_ramp() {
        let c = cfg(&[1000, 2000, 4000, 8000], 50.0, 8);
        let (ran, report) = search(&c, capacity(1500));
        // 2000 trips: 4000 and 8000 never run; 1000..2000 is 100% wide, so one midpoint.
        assert_eq!(
            ran,
            [
                (Phase::Ramp, 1000),
                (Phase::Ramp, 2000),
                (Phase::Refine, 1500),
                (Phase::Confirm, 1500)
            ]
        );
        assert_eq!(report.rate(), Some(1500));
    }

    #[test]
    fn inconclusive_steps_neither_stop_the_ramp_nor_count_as_passes() {
        let c = cfg(&[1000, 2000, 4000], 50.0, 0);
        let judge = |_: Phase, rate: u64| match rate {
            1000 => v(StepStatus::Pass, ""),
            2000 => v(
                StepStatus::Inconclusive,
                "achieved 1500/s < 95% of target 2000/s",
            ),
            _ => v(StepStatus::Trip, "p99=612ms > 50"),
        };
        let (ran, report) = search(&c, judge);
        assert_eq!(
            ran,
            [
                (Phase::Ramp, 1000),
                (Phase::Ramp, 2000),
                (Phase::Ramp, 4000),
                (Phase::Confirm, 1000)
            ]
        );
        assert_eq!(
            report.rate(),
            Some(1000),
            "the INCONCLUSIVE 2000 is not a pass"
        );
        assert!(
            report
                .answer_line()
                .contains("bracket 1000..4000 = 300.0%: refine budget spent"),
            "{}",
            report.answer_line()
        );
    }

    #[test]
    fn an_inconclusive_midpoint_closes_the_bracket_from_above() {
        let c = cfg(&[1000, 2000], 5.0, 1);
        let judge = |phase: Phase, rate: u64| match (phase, rate) {
            (_, 1000) => v(StepStatus::Pass, ""),
            (Phase::Refine, 1500) => v(StepStatus::Inconclusive, "short"),
            _ => v(StepStatus::Trip, "p99=1s > 50"),
        };
        let (ran, report) = search(&c, judge);
        assert_eq!(ran[2], (Phase::Refine, 1500));
        assert_eq!(report.rate(), Some(1000));
        match report.answer {
            Answer::Found { bracket_pct, .. } => assert_eq!(bracket_pct, Some(50.0)),
            _ => panic!(),
        }
    }

    #[test]
    fn no_pass_answer_names_the_first_step() {
        let c = cfg(&[1000, 2000], 5.0, 8);
        let (ran, report) = search(&c, capacity(500));
        assert_eq!(ran, [(Phase::Ramp, 1000)]);
        assert_eq!(
            report.answer_line(),
            "ANSWER: no step passed (first step TRIP: p99=612ms > 50)"
        );
        // Every step INCONCLUSIVE: still no pass, and the first step's reasons are shown.
        let (ran, report) = search(&c, |_, _| {
            v(StepStatus::Inconclusive, "zero operations completed")
        });
        assert_eq!(ran.len(), 2);
        assert_eq!(
            report.answer_line(),
            "ANSWER: no step passed (first step INCONCLUSIVE: zero operations completed)"
        );
    }

    #[test]
    fn no_trip_says_the_maximum_is_higher_and_a_failed_confirmation_is_shown() {
        let c = cfg(&[1000, 2000], 5.0, 8);
        let (_, report) = search(&c, capacity(1_000_000));
        assert_eq!(
            report.answer_line(),
            "ANSWER: max RPS = 2000 (target=sim:servers=4,service_us=1000, no step tripped: the maximum is higher; add larger --steps)"
        );
        let judge = |phase: Phase, rate: u64| match phase {
            Phase::Confirm => v(StepStatus::Trip, "p99=70ms > 50"),
            _ => capacity(1000)(phase, rate),
        };
        let (_, report) = search(&cfg(&[1000, 2000], 50.0, 8), judge);
        let line = report.answer_line();
        assert!(
            line.contains("unconfirmed: confirm step TRIP; p99=70ms > 50"),
            "{line}"
        );
    }

    #[test]
    fn settings_are_validated() {
        for p in [0.0, -1.0, 50.5, f64::NAN] {
            let e = cfg(&[1000], p, 8).validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid precision {p}")), "{e}");
        }
        assert!(cfg(&[1000], 50.0, 8).validate().is_ok());
        assert!(cfg(&[2000, 1000], 5.0, 8).validate().is_err());
        let mut bad = cfg(&[1000], 5.0, 8);
        bad.slo.p99_ms = Some(0.0);
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid p99 threshold (ms) 0: expected a number above 0"
        );
    }
}
