//! HdrHistogram interval logs: one histogram per action and interval (one second by
//! default), in the text format of HdrHistogram's `HistogramLogWriter`, so that the Java
//! tools (`HistogramLogProcessor`, the HdrHistogram plotter) and every other HdrHistogram
//! implementation read what herdlab measured over time.
//!
//! # Format
//!
//! ```text
//! #[herdlab interval log: latency from the intended start, in nanoseconds]
//! #[Histogram log format version 1.3]
//! #[StartTime: 1765072800.000 (seconds since epoch), 2026-12-07T02:00:00Z]
//! #[BaseTime: 1765072800.000 (seconds since epoch)]
//! #[MaxValueDivisor: 1000000.000]
//! "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
//! Tag=send,0.000,1.000,2.113,HISTFAAAA…
//! ```
//!
//! The `hdrhistogram` crate's writer emits the StartTime and BaseTime lines but not the
//! format-version line or the legend line that Java's `HistogramLogReader` expects: this
//! module writes those itself. Interval timestamps are seconds since BaseTime (the start
//! of the run). Histograms are V2 + deflate (`HISTFAA…`).
//!
//! **Unit**: values are **nanoseconds**, so that the Java tools' default output divisor
//! (10⁶) prints milliseconds, and `Interval_Max` is in milliseconds (max ÷ 10⁶, the
//! `MaxValueDivisor` line). The recorder keeps microseconds at 3 significant digits; each
//! value is converted by ×1000, which keeps the 3 digits.
//!
//! **Tags**: `ACTION` for latency from the intended start, and `ACTION.service` for service
//! time from the actual start; a character a tag may not hold (`,`, space, line breaks) is
//! written as `_`. A log of a distributed run adds a worker prefix (`w1/ACTION`).
//!
//! **Intervals**: an [`IntervalTap`] is a second recorder that the generator also records
//! into (at completion, under the tap's own epoch: [`crate::generator::OpenLoop::set_tap`]),
//! reset every interval. A sample counts in the interval in which its operation
//! *completed*, whatever the step — as `HistogramLogWriter` users record. Empty intervals
//! are written too, so the time axis has no gaps. Each interval is written as soon as it
//! closes, so memory stays bounded however long the run.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::recorder::{Recorder, StepData, MAX_VALUE_US, SIGFIG};

/// The format-version line Java's `HistogramLogReader` looks for.
pub const VERSION_LINE: &str = "#[Histogram log format version 1.3]";
/// The legend line of the Java writer.
pub const LEGEND_LINE: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";
/// `Interval_Max` divisor: nanoseconds to milliseconds (the Java tools' default ratio).
pub const MAX_VALUE_DIVISOR: f64 = 1e6;
/// The interval unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Comments an [`IntervalTap`] holds for its next interval, at most.
pub const MAX_PENDING_NOTES: usize = 1024;
/// The shortest interval a tap accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A histogram of the same values in nanoseconds (×1000), 3 significant digits.
pub fn to_nanos(h: &Histogram<u64>) -> Histogram<u64> {
    let mut out = Histogram::<u64>::new_with_bounds(1, MAX_VALUE_US.saturating_mul(1000), SIGFIG)
        .expect("constant bounds are valid");
    for v in h.iter_recorded() {
        let ns = h
            .median_equivalent(v.value_iterated_to())
            .saturating_mul(1000);
        out.saturating_record_n(ns, v.count_at_value());
    }
    out
}

/// `name` with every character a tag may not hold replaced by `_`.
pub fn tag_text(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| match c {
            ',' | ' ' | '\r' | '\n' | '\t' => '_',
            c => c,
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An interval log being written: the header at [`IntervalLog::new`], then one line per
/// action and histogram for every [`IntervalLog::write`].
pub struct IntervalLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    intervals: u64,
}

impl<W: Write> IntervalLog<W> {
    /// Writes the header: a herdlab comment, the format version, StartTime and BaseTime
    /// (both `start`), the max-value divisor and the legend.
    pub fn new(mut out: W, start: SystemTime, comments: &[String]) -> io::Result<Self> {
        writeln!(
            out,
            "#[herdlab interval log: latency from the intended start and service time from \
             the actual start, in nanoseconds]"
        )?;
        for c in comments {
            for line in c.lines() {
                writeln!(out, "#{line}")?;
            }
        }
        writeln!(out, "{VERSION_LINE}")?;
        let s = seconds(start);
        writeln!(out, "#[StartTime: {s:.3} (seconds since epoch)]")?;
        writeln!(out, "#[BaseTime: {s:.3} (seconds since epoch)]")?;
        writeln!(out, "#[MaxValueDivisor: {MAX_VALUE_DIVISOR:.3}]")?;
        writeln!(out, "{LEGEND_LINE}")?;
        Ok(IntervalLog {
            out,
            serializer: V2DeflateSerializer::new(),
            intervals: 0,
        })
    }

    /// Writes a comment line (`#…`), e.g. where a step begins.
    pub fn comment(&mut self, text: &str) -> io::Result<()> {
        for line in text.lines() {
            writeln!(self.out, "#{line}")?;
        }
        Ok(())
    }

    /// Writes one interval: for every action of `data`, its latency and its service-time
    /// histogram, tagged `PREFIXACTION` and `PREFIXACTION.service`. `offset` is the
    /// interval's start since the log's BaseTime.
    pub fn write(
        &mut self,
        offset: Duration,
        length: Duration,
        data: &StepData,
        prefix: &str,
    ) -> io::Result<()> {
        // The crate's writer, with no header of its own, writes only the interval lines.
        let mut lines = Vec::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .with_max_value_divisor(MAX_VALUE_DIVISOR)
                .begin_log_with(&mut lines, &mut self.serializer)?;
            for (name, a) in &data.actions {
                for (suffix, h) in [("", &a.latency), (".service", &a.service)] {
                    let tag = tag_text(&format!("{prefix}{name}{suffix}"));
                    let ns = to_nanos(h);
                    w.write_histogram(&ns, offset, length, Tag::new(&tag))
                        .map_err(|e| io::Error::other(e.to_string()))?;
                }
            }
        }
        // Drop the `#[MaxValueDivisor…]` line the crate's builder writes: the header has it.
        let text = String::from_utf8_lossy(&lines);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            writeln!(self.out, "{line}")?;
        }
        self.intervals += 1;
        Ok(())
    }

    /// Intervals written so far.
    pub fn intervals(&self) -> u64 {
        self.intervals
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why a tap could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// The interval is too short.
    #[error("invalid interval {0:?}: expected at least {MIN_INTERVAL:?}")]
    Interval(Duration),
    /// Writing the log failed.
    #[error("writing the interval log: {0}")]
    Io(#[from] io::Error),
    /// The writer task ended abnormally.
    #[error("the interval log task failed: {0}")]
    Task(String),
    /// A sink refused an interval (full, or it could not encode it).
    #[error("the interval sink refused an interval: {0}")]
    Sink(String),
}

/// Where an [`IntervalTap`]'s closed intervals go: an [`IntervalLog`] (written as each
/// closes), or anything else that collects them (a distributed worker's reply).
pub trait IntervalSink: Send + 'static {
    /// One closed interval: its start as an offset from the tap's anchor, its length, and
    /// what it recorded.
    fn interval(
        &mut self,
        offset: Duration,
        length: Duration,
        data: &StepData,
    ) -> Result<(), HlogError>;

    /// A comment given to [`IntervalTap::comment`], delivered before the next interval.
    fn note(&mut self, _text: &str) -> Result<(), HlogError> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> IntervalSink for IntervalLog<W> {
    fn interval(
        &mut self,
        offset: Duration,
        length: Duration,
        data: &StepData,
    ) -> Result<(), HlogError> {
        Ok(self.write(offset, length, data, "")?)
    }

    fn note(&mut self, text: &str) -> Result<(), HlogError> {
        Ok(self.comment(text)?)
    }
}

/// A running tap: a second recorder that a background task resets on a grid of `interval`
/// anchored at one instant (interval *k* covers `[anchor + k·interval, anchor + (k+1)·interval)`,
/// so taps of several processes anchored at one instant line up), handing each closed
/// interval to its [`IntervalSink`]. Stop it with [`IntervalTap::finish`] (a log) or
/// [`IntervalTap::stop`] (any sink).
pub struct IntervalTap<S: IntervalSink> {
    tap: Arc<Recorder>,
    notes: Arc<crate::sync::Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<S, HlogError>>,
}

impl<S: IntervalSink> IntervalTap<S> {
    /// Starts handing `tap`'s intervals to `sink` every `interval` from `anchor` (for a log:
    /// its BaseTime as an `Instant`, the same moment as its SystemTime); must run on a tokio
    /// runtime. An `anchor` ahead waits for it (what recorded before counts in the first
    /// interval).
    pub fn start(
        tap: Arc<Recorder>,
        mut sink: S,
        interval: Duration,
        anchor: tokio::time::Instant,
    ) -> Result<IntervalTap<S>, HlogError> {
        if interval < MIN_INTERVAL {
            return Err(HlogError::Interval(interval));
        }
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let t = tap.clone();
        let notes = Arc::new(crate::sync::Mutex::new(Vec::<String>::new()));
        let pending = notes.clone();
        let task = tokio::spawn(async move {
            let _ = t.reset();
            let mut from = anchor;
            loop {
                // Bounded by the stop signal (sent by finish/stop, or the sender dropped).
                let next = from + interval;
                let last = tokio::select! {
                    _ = tokio::time::sleep_until(next) => false,
                    _ = stopped.changed() => true,
                };
                let now = tokio::time::Instant::now().min(next);
                let data = t.reset();
                let drained = std::mem::take(&mut *crate::sync::lock(&pending));
                for note in drained {
                    sink.note(&note)?;
                }
                let offset = from.saturating_duration_since(anchor);
                sink.interval(offset, now.saturating_duration_since(from), &data)?;
                if last {
                    break;
                }
                from = next;
            }
            Ok(sink)
        });
        Ok(IntervalTap {
            tap,
            notes,
            stop,
            task,
        })
    }

    /// Writes `text` as a comment line before the next interval (e.g. "step 3 ended");
    /// beyond [`MAX_PENDING_NOTES`] waiting notes, further ones are dropped.
    pub fn comment(&self, text: &str) {
        let mut notes = crate::sync::lock(&self.notes);
        if notes.len() < MAX_PENDING_NOTES {
            notes.push(text.to_string());
        }
    }

    /// The recorder to give the generator ([`crate::generator::OpenLoop::set_tap`]).
    pub fn recorder(&self) -> Arc<Recorder> {
        self.tap.clone()
    }

    /// Hands the last (partial) interval to the sink and returns the sink.
    pub async fn stop(self) -> Result<S, HlogError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(HlogError::Task(e.to_string())),
        }
    }
}

impl<W: Write + Send + 'static> IntervalTap<IntervalLog<W>> {
    /// Writes the last (partial) interval, flushes, and returns how many intervals were
    /// written.
    pub async fn finish(self) -> Result<u64, HlogError> {
        let log = self.stop().await?;
        let n = log.intervals();
        log.finish()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{ActionId, Sample};
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn step(values_us: &[(usize, u64)]) -> StepData {
        let r = Recorder::new(&["send", "search hit"], 2).unwrap();
        let e = r.epoch();
        for (i, (a, v)) in values_us.iter().enumerate() {
            r.record(
                i,
                e,
                &Sample {
                    action: ActionId(*a),
                    latency_us: *v,
                    service_us: v / 2 + 1,
                    error: None,
                },
            );
        }
        r.reset()
    }

    fn decode(b64: &str) -> Histogram<u64> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn a_log_reads_back_through_the_hdrhistogram_reader() {
        let start = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let mut log = IntervalLog::new(Vec::new(), start, &["plan demo".into()]).unwrap();
        let a = step(&[(0, 1000), (0, 2000), (1, 50_000)]);
        let b = step(&[(0, 3000)]);
        log.write(Duration::ZERO, Duration::from_secs(1), &a, "")
            .unwrap();
        log.write(Duration::from_secs(1), Duration::from_secs(1), &b, "w1/")
            .unwrap();
        let text = String::from_utf8(log.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let version = lines.iter().position(|l| *l == VERSION_LINE).unwrap();
        let start_line = lines
            .iter()
            .position(|l| l.starts_with("#[StartTime: 1765000000.000"))
            .unwrap();
        let legend = lines.iter().position(|l| *l == LEGEND_LINE).unwrap();
        assert!(version < start_line && start_line < legend, "{text}");
        assert!(text.contains("#[BaseTime: 1765000000.000"), "{text}");
        assert!(text.contains("#plan demo"), "{text}");

        let mut seen = Vec::new();
        for entry in IntervalLogIterator::new(text.as_bytes()) {
            match entry.unwrap() {
                LogEntry::Interval(h) => {
                    let tag = h.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
                    let hist = decode(h.encoded_histogram());
                    seen.push((tag, h.start_timestamp(), hist.len(), hist.max(), h.max()));
                }
                LogEntry::StartTime(t) => assert_eq!(t.as_secs(), 1_765_000_000),
                LogEntry::BaseTime(t) => assert_eq!(t.as_secs(), 1_765_000_000),
            }
        }
        let tags: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            tags,
            [
                "search_hit",
                "search_hit.service",
                "send",
                "send.service",
                "w1/search_hit",
                "w1/search_hit.service",
                "w1/send",
                "w1/send.service"
            ]
        );
        // send in interval 0: two values, the largest 2 ms = 2,000,000 ns (3 digits).
        let send0 = &seen[2];
        assert_eq!(send0.2, 2);
        assert!((1_999_000..=2_001_000).contains(&send0.3), "{}", send0.3);
        assert!(
            (send0.4 - 2.0).abs() < 0.01,
            "Interval_Max in ms: {}",
            send0.4
        );
        let send1 = &seen[6];
        assert_eq!(send1.1, Duration::from_secs(1));
        assert_eq!(send1.2, 1);
        // Counts survive whole: every recorded value is in exactly one interval line.
        let total: u64 = seen
            .iter()
            .filter(|s| !s.0.ends_with(".service"))
            .map(|s| s.2)
            .sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn nanosecond_conversion_keeps_counts_and_three_digits() {
        let mut h = crate::summary::micros_histogram();
        for v in [1u64, 999, 1234, 3_600_000_000] {
            h.record(v).unwrap();
        }
        let ns = to_nanos(&h);
        assert_eq!(ns.len(), 4);
        for q in [0.25, 0.5, 0.75, 1.0] {
            let us = h.value_at_quantile(q) as f64;
            let got = ns.value_at_quantile(q) as f64 / 1000.0;
            assert!((got - us).abs() / us <= 0.002, "q {q}: {us} µs vs {got}");
        }
    }

    #[test]
    fn tags_never_hold_separators() {
        assert_eq!(tag_text("a b,c"), "a_b_c");
        assert_eq!(tag_text(""), "_");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_writes_every_interval_and_the_last_partial_one() {
        let tap = Arc::new(Recorder::new(&["op"], 1).unwrap());
        let started = tokio::time::Instant::now();
        let log = IntervalLog::new(Vec::new(), SystemTime::now(), &[]).unwrap();
        let running =
            IntervalTap::start(tap.clone(), log, Duration::from_secs(1), started).unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let n = running.finish().await.unwrap();
        assert_eq!(n, 4, "three whole intervals and the partial fourth");
        assert!(matches!(
            IntervalTap::start(
                tap,
                IntervalLog::new(Vec::new(), SystemTime::now(), &[]).unwrap(),
                Duration::from_millis(1),
                started
            ),
            Err(HlogError::Interval(_))
        ));
    }

    /// Collects (offset ms, length ms, completed) per interval.
    struct Spans(Vec<(u128, u128, u64)>);

    impl IntervalSink for Spans {
        fn interval(&mut self, o: Duration, l: Duration, d: &StepData) -> Result<(), HlogError> {
            self.0
                .push((o.as_millis(), l.as_millis(), d.total().completed()));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_anchored_ahead_cuts_its_grid_from_the_anchor() {
        let tap = Arc::new(Recorder::new(&["op"], 1).unwrap());
        let anchor = tokio::time::Instant::now() + Duration::from_millis(100);
        let running = IntervalTap::start(
            tap.clone(),
            Spans(Vec::new()),
            Duration::from_secs(1),
            anchor,
        )
        .unwrap();
        let record = |tap: &Recorder| {
            let sample = Sample {
                action: ActionId(0),
                latency_us: 5,
                service_us: 5,
                error: None,
            };
            tap.record(0, tap.epoch(), &sample);
        };
        tokio::time::sleep(Duration::from_millis(600)).await; // +0.6 s: interval 0
        record(&tap);
        tokio::time::sleep(Duration::from_millis(1100)).await; // +1.7 s: interval 1
        record(&tap);
        tokio::time::sleep(Duration::from_millis(500)).await; // stopped at +2.2 s
        let spans = running.stop().await.unwrap().0;
        assert_eq!(spans, [(0, 1000, 1), (1000, 1000, 1), (2000, 100, 0)]);
    }
}
