//! Resource sampler and leak detector: RSS, threads, open file descriptors and CPU % of
//! processes, read from `/proc` (Linux only), and a slope test that says whether any of them
//! grows during the steady part of a run.
//!
//! - [`sample_pid`] takes one sample of one process; CPU % is the delta since the previous
//!   [`CpuMark`] (100% = one core busy).
//! - [`Sampler`] samples this process and/or child processes from a background thread at a
//!   fixed interval, with a bound on memory, until stopped; the result goes into the report
//!   as a time series (see [`series`]).
//! - [`leak_check`] fits a Theil–Sen slope (the median of pairwise slopes, robust to GC
//!   spikes and occasional outliers, unlike ordinary least squares) over the samples after
//!   a warmup, flags growth beyond a threshold per hour, and reports the envelope of the
//!   rolling mean: a flat soak has a narrow envelope.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One sample of one process's resources.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Seconds since the sampling started (see [`sample_pid`] and [`Sampler`] for the origin).
    pub t_s: f64,
    /// The process sampled (a request for pid 0 is recorded as this process's pid).
    pub pid: u32,
    /// Resident set size (`VmRSS`), bytes; 0 for a process without user memory.
    pub rss_bytes: u64,
    /// Number of threads.
    pub threads: u64,
    /// Number of open file descriptors.
    pub fds: u64,
    /// CPU use (user + system) since the previous sample, percent of one core; on a first
    /// sample, the average over the process's lifetime.
    pub cpu_pct: f64,
}

/// The CPU time of a process at one instant: pass it to the next [`sample_pid`] call to get
/// CPU % over the interval. Carries the process's start time so that a reused pid is not
/// mistaken for the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMark {
    pid: u32,
    start_ticks: u64,
    cpu_ticks: u64,
    at: Instant,
    origin: Instant,
}

impl CpuMark {
    /// The process this mark belongs to.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Why a sample or a leak check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// There is no such process (it never existed, or it exited and was reaped).
    #[error("process {pid} not found: /proc/{pid} does not exist (it exited or never existed)")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The process has exited but was not reaped yet (a zombie): nothing left to measure.
    #[error("process {pid} has exited (zombie, waiting to be reaped)")]
    Exited {
        /// The pid asked for.
        pid: u32,
    },
    /// A `/proc` file could not be read (e.g. another user's process).
    #[error("process {pid}: cannot read {path}: {source}")]
    Io {
        /// The pid asked for.
        pid: u32,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("process {pid}: unexpected format in {path}: {detail}")]
    Parse {
        /// The pid asked for.
        pid: u32,
        /// The file.
        path: PathBuf,
        /// What was missing or malformed.
        detail: String,
    },
    /// The background sampling thread could not be started.
    #[error("cannot start the resource sampler thread: {source}")]
    Spawn {
        /// The I/O error from the OS.
        source: io::Error,
    },
    /// Too few samples remain after the warmup for a meaningful slope.
    #[error(
        "leak check of {metric}: {remaining} of {total} samples remain after a {warmup_s} s \
         warmup, expected at least {needed}"
    )]
    TooFewSamples {
        /// The metric checked.
        metric: &'static str,
        /// Samples after the warmup.
        remaining: usize,
        /// Samples given.
        total: usize,
        /// The warmup, seconds.
        warmup_s: f64,
        /// The minimum needed.
        needed: usize,
    },
    /// The samples after the warmup all have the same time: no slope can be fitted.
    #[error("leak check of {metric}: all {samples} samples after the warmup are at t={t_s} s, expected a time span")]
    NoTimeSpan {
        /// The metric checked.
        metric: &'static str,
        /// Samples after the warmup.
        samples: usize,
        /// Their common time, seconds.
        t_s: f64,
    },
    /// A sample's time or value is NaN or infinite.
    #[error("leak check of {metric}: sample {index} is (t={t_s} s, value={value}), expected finite numbers")]
    NonFinite {
        /// The metric checked.
        metric: &'static str,
        /// Index of the sample in the series given.
        index: usize,
        /// Its time.
        t_s: f64,
        /// Its value.
        value: f64,
    },
    /// A parameter is out of range.
    #[error("leak check of {metric}: {name} is {value}, expected {expected}")]
    InvalidParameter {
        /// The metric checked.
        metric: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The offending value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl ResourceError {
    /// Whether the error means the process is gone (exited), as opposed to unreadable.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            ResourceError::NoSuchProcess { .. } | ResourceError::Exited { .. }
        )
    }
}

/// Resolves pid 0 to this process.
fn resolve(pid: u32) -> u32 {
    if pid == 0 {
        std::process::id()
    } else {
        pid
    }
}

/// Linux `ESRCH`: the process went away while its `/proc` entry was being read.
const ESRCH: i32 = 3;

fn read_proc(pid: u32, path: &Path) -> Result<String, ResourceError> {
    fs::read_to_string(path).map_err(|source| io_error(pid, path, source))
}

fn io_error(pid: u32, path: &Path, source: io::Error) -> ResourceError {
    if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(ESRCH) {
        ResourceError::NoSuchProcess { pid }
    } else {
        ResourceError::Io {
            pid,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    cpu_ticks: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
    // After the command name: state is field 3, utime 14, stime 15, starttime 22.
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let start_ticks: u64 = fields.get(19)?.parse().ok()?;
    Some(Stat {
        state,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
    })
}

/// Reads `VmRSS` (bytes; 0 if absent, as for kernel threads) and `Threads` from
/// `/proc/<pid>/status`.
fn parse_status(text: &str) -> Option<(u64, u64)> {
    let mut rss_bytes = 0;
    let mut threads = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
            rss_bytes = kb.saturating_mul(1024);
        } else if let Some(v) = line.strip_prefix("Threads:") {
            threads = Some(v.trim().parse().ok()?);
        }
    }
    Some((rss_bytes, threads?))
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`), read from
/// the `AT_CLKTCK` entry of this process's auxiliary vector, which is where libc's
/// `sysconf` gets it; 100 (the value on every mainstream Linux) if it cannot be read.
fn clock_ticks_per_s() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        const AT_NULL: usize = 0;
        const AT_CLKTCK: usize = 17;
        const WORD: usize = std::mem::size_of::<usize>();
        let Ok(auxv) = fs::read("/proc/self/auxv") else {
            return 100;
        };
        for entry in auxv.chunks_exact(2 * WORD) {
            let word = |i: usize| {
                let mut b = [0u8; WORD];
                b.copy_from_slice(&entry[i * WORD..(i + 1) * WORD]);
                usize::from_ne_bytes(b)
            };
            match word(0) {
                AT_NULL => break,
                AT_CLKTCK if word(1) > 0 => return word(1) as u64,
                _ => {}
            }
        }
        100
    })
}

/// Seconds since boot, from `/proc/uptime`.
fn uptime_s() -> Option<f64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    let v: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Takes one sample of process `pid` (0 = this process) from `/proc/<pid>/status` (`VmRSS`,
/// `Threads`), `/proc/<pid>/fd` (count) and `/proc/<pid>/stat` (`utime + stime`).
///
/// CPU % is the CPU time used since `prev` over the wall time since `prev` (100% = one
/// core); without a `prev` for the same process, it is the average over the process's
/// lifetime. `t_s` is the time since the first mark of the chain of marks passed back in
/// (0 on the first call).
///
/// A process that does not exist gives [`ResourceError::NoSuchProcess`]; one that exited but
/// was not reaped gives [`ResourceError::Exited`]; both name the pid.
pub fn sample_pid(
    pid: u32,
    prev: Option<&CpuMark>,
) -> Result<(ProcSample, CpuMark), ResourceError> {
    let pid = resolve(pid);
    let dir = PathBuf::from(format!("/proc/{pid}"));

    let stat_path = dir.join("stat");
    let stat_text = read_proc(pid, &stat_path)?;
    let now = Instant::now();
    let stat = parse_stat(&stat_text).ok_or_else(|| ResourceError::Parse {
        pid,
        path: stat_path.clone(),
        detail: format!("expected state, utime, stime and starttime in {stat_text:?}"),
    })?;
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return Err(ResourceError::Exited { pid });
    }

    let status_path = dir.join("status");
    let status_text = read_proc(pid, &status_path)?;
    let (rss_bytes, threads) = parse_status(&status_text).ok_or_else(|| ResourceError::Parse {
        pid,
        path: status_path.clone(),
        detail: "expected a `Threads:` line and a numeric `VmRSS:` line".to_string(),
    })?;

    let fd_path = dir.join("fd");
    let fds = fs::read_dir(&fd_path)
        .map_err(|e| io_error(pid, &fd_path, e))?
        .filter(|e| e.is_ok())
        .count() as u64;

    let ticks_per_s = clock_ticks_per_s() as f64;
    let same = prev.filter(|m| m.pid == pid && m.start_ticks == stat.start_ticks);
    let (cpu_pct, origin) = match same {
        Some(m) => {
            let dt_s = now.saturating_duration_since(m.at).as_secs_f64();
            let used_s = stat.cpu_ticks.saturating_sub(m.cpu_ticks) as f64 / ticks_per_s;
            let pct = if dt_s > 0.0 {
                used_s / dt_s * 100.0
            } else {
                0.0
            };
            (pct, m.origin)
        }
        None => {
            let lifetime_s =
                uptime_s().map_or(0.0, |up| up - stat.start_ticks as f64 / ticks_per_s);
            let pct = if lifetime_s > 0.01 {
                stat.cpu_ticks as f64 / ticks_per_s / lifetime_s * 100.0
            } else {
                0.0
            };
            (pct, now)
        }
    };
    let mark = CpuMark {
        pid,
        start_ticks: stat.start_ticks,
        cpu_ticks: stat.cpu_ticks,
        at: now,
        origin,
    };
    let sample = ProcSample {
        t_s: now.saturating_duration_since(origin).as_secs_f64(),
        pid,
        rss_bytes,
        threads,
        fds,
        cpu_pct: if cpu_pct.is_finite() { cpu_pct } else { 0.0 },
    };
    Ok((sample, mark))
}

/// What a [`Sampler`] does when a process has `max_samples` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Stop sampling that process; the sampler thread ends when no process is left.
    /// Best when the run's length is known: `max_samples × interval` covers it.
    #[default]
    Stop,
    /// Keep every other sample of every process and double the interval (up to
    /// [`MAX_INTERVAL`]), so the series always spans the whole run with at most
    /// `max_samples` samples per process (at least 2). Best for soaks of unknown length.
    Decimate,
}

/// The longest interval [`WhenFull::Decimate`] doubles up to.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest sampling interval; shorter requests are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Samples processes from a background thread at a fixed interval until [`Sampler::stop`].
///
/// The first sample of every process is taken at once (`t_s ≈ 0`, the sampler's start), then
/// one every interval. A process that exits (or becomes unreadable) stops being sampled,
/// silently: its series just ends. Memory is bounded by `max_samples` per process (see
/// [`WhenFull`]). Dropping a sampler stops its thread too.
#[derive(Debug)]
pub struct Sampler {
    stop_tx: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<Vec<ProcSample>>>,
}

impl Sampler {
    /// Starts sampling `pids` (0 or `std::process::id()` = this process; duplicates are
    /// sampled once) every `interval` (clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`]), keeping at most
    /// `max_samples` per process and then stopping that process ([`WhenFull::Stop`]).
    pub fn start(
        pids: Vec<u32>,
        interval: Duration,
        max_samples: usize,
    ) -> Result<Sampler, ResourceError> {
        Self::start_with(pids, interval, max_samples, WhenFull::Stop)
    }

    /// Like [`Sampler::start`] with a choice of what happens when a process has
    /// `max_samples` samples.
    pub fn start_with(
        pids: Vec<u32>,
        interval: Duration,
        max_samples: usize,
        when_full: WhenFull,
    ) -> Result<Sampler, ResourceError> {
        let mut pids: Vec<u32> = pids.into_iter().map(resolve).collect();
        pids.sort_unstable();
        pids.dedup();
        let interval = interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let max_samples = match when_full {
            WhenFull::Stop => max_samples,
            WhenFull::Decimate => max_samples.max(2),
        };
        let (stop_tx, stop_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("resource-sampler".to_string())
            .spawn(move || run_sampler(pids, interval, max_samples, when_full, stop_rx))
            .map_err(|source| ResourceError::Spawn { source })?;
        Ok(Sampler {
            stop_tx: Some(stop_tx),
            handle: Some(handle),
        })
    }

    /// Whether the sampler has stopped by itself (every process full or gone).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops sampling and returns every sample, ordered by time, then pid.
    pub fn stop(mut self) -> Vec<ProcSample> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Vec<ProcSample> {
        if let Some(tx) = self.stop_tx.take() {
            // An error only means the thread has already ended.
            let _ = tx.send(());
        }
        // The thread wakes at once on the message (or the dropped sender) and ends after at
        // most one round of sampling; it has no panic path, but a panic must not spread.
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

struct Track {
    pid: u32,
    mark: Option<CpuMark>,
    samples: Vec<ProcSample>,
    live: bool,
}

fn run_sampler(
    pids: Vec<u32>,
    mut interval: Duration,
    max_samples: usize,
    when_full: WhenFull,
    stop_rx: mpsc::Receiver<()>,
) -> Vec<ProcSample> {
    let origin = Instant::now();
    let mut tracks: Vec<Track> = pids
        .into_iter()
        .map(|pid| Track {
            pid,
            mark: None,
            samples: Vec::new(),
            live: max_samples > 0,
        })
        .collect();
    let mut next = origin;
    // Bounded: every round either samples (and a full or gone process stops, or the
    // interval doubles) or ends on the stop message; waits are bounded by the interval.
    loop {
        for track in tracks.iter_mut().filter(|t| t.live) {
            match sample_pid(track.pid, track.mark.as_ref()) {
                Ok((mut sample, mark)) => {
                    sample.t_s = mark.at.saturating_duration_since(origin).as_secs_f64();
                    track.mark = Some(mark);
                    track.samples.push(sample);
                    if when_full == WhenFull::Stop && track.samples.len() >= max_samples {
                        track.live = false;
                    }
                }
                Err(_) => track.live = false,
            }
        }
        if when_full == WhenFull::Decimate && tracks.iter().any(|t| t.samples.len() >= max_samples)
        {
            for track in &mut tracks {
                let mut index = 0usize;
                track.samples.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
            }
            interval = interval.saturating_mul(2).min(MAX_INTERVAL);
        }
        if !tracks.iter().any(|t| t.live) {
            break;
        }
        let now = Instant::now();
        next += interval;
        if next < now {
            // Fell behind (a stalled machine): resume from now rather than burst.
            next = now;
        }
        match stop_rx.recv_timeout(next.saturating_duration_since(now)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut all: Vec<ProcSample> = tracks.into_iter().flat_map(|t| t.samples).collect();
    all.sort_by(|a, b| a.t_s.total_cmp(&b.t_s).then(a.pid.cmp(&b.pid)));
    all
}

/// The `(t_s, value)` series of one process (0 = this process) out of a sampler's output,
/// e.g. `series(&samples, pid, |s| s.rss_bytes as f64 / 1e6)` for RSS in MB.
pub fn series(
    samples: &[ProcSample],
    pid: u32,
    value: impl Fn(&ProcSample) -> f64,
) -> Vec<(f64, f64)> {
    let pid = resolve(pid);
    samples
        .iter()
        .filter(|s| s.pid == pid)
        .map(|s| (s.t_s, value(s)))
        .collect()
}

/// The verdict of [`leak_check`] on one metric.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct LeakCheck {
    /// The metric checked, e.g. `rss`.
    pub metric: &'static str,
    /// Growth rate after the warmup (Theil–Sen), in `unit` per hour; negative = shrinking.
    pub slope_per_hour: f64,
    /// Unit of the metric's values, e.g. `MB`.
    pub unit: &'static str,
    /// Growth per hour above which the metric counts as leaking.
    pub threshold_per_hour: f64,
    /// Whether `slope_per_hour > threshold_per_hour`.
    pub leaking: bool,
    /// Smallest rolling mean after the warmup.
    pub envelope_min: f64,
    /// Largest rolling mean after the warmup (`envelope_max − envelope_min` small = flat).
    pub envelope_max: f64,
    /// Samples after the warmup (all of them feed the envelope; the slope uses at most
    /// [`THEIL_SEN_MAX_POINTS`] of them, evenly strided).
    pub samples_used: usize,
}

/// Fewest samples after the warmup that [`leak_check`] accepts.
pub const LEAK_MIN_SAMPLES: usize = 5;
/// Most points the Theil–Sen slope is computed over (its cost is quadratic: at this bound,
/// about 130 000 pairwise slopes); longer series are strided evenly.
pub const THEIL_SEN_MAX_POINTS: usize = 512;

/// Checks a `(t_s, value)` series for growth: the Theil–Sen slope (median of all pairwise
/// slopes; robust to spikes and to a minority of outliers, where ordinary least squares
/// is pulled by every one of them) over the samples taken at least `warmup_s` seconds after
/// the first one, in `unit` per hour, flagged as leaking above `threshold_per_hour`. Also
/// reports the min and max of the rolling mean over `rolling_window` consecutive samples
/// (clamped to the number of samples). The series need not be sorted.
pub fn leak_check(
    series: &[(f64, f64)],
    warmup_s: f64,
    threshold_per_hour: f64,
    rolling_window: usize,
    metric: &'static str,
    unit: &'static str,
) -> Result<LeakCheck, ResourceError> {
    let invalid = |name, value: String, expected| ResourceError::InvalidParameter {
        metric,
        name,
        value,
        expected,
    };
    if !(warmup_s.is_finite() && warmup_s >= 0.0) {
        return Err(invalid(
            "warmup_s",
            warmup_s.to_string(),
            "a finite number of seconds ≥ 0",
        ));
    }
    if !(threshold_per_hour.is_finite() && threshold_per_hour >= 0.0) {
        return Err(invalid(
            "threshold_per_hour",
            threshold_per_hour.to_string(),
            "a finite growth per hour ≥ 0",
        ));
    }
    if rolling_window == 0 {
        return Err(invalid(
            "rolling_window",
            "0".to_string(),
            "at least 1 sample",
        ));
    }
    if let Some((index, &(t_s, value))) = series
        .iter()
        .enumerate()
        .find(|(_, (t, v))| !(t.is_finite() && v.is_finite()))
    {
        return Err(ResourceError::NonFinite {
            metric,
            index,
            t_s,
            value,
        });
    }

    let mut sorted = series.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = sorted.first().map_or(0.0, |p| p.0);
    let steady: Vec<(f64, f64)> = sorted
        .into_iter()
        .filter(|p| p.0 - t0 >= warmup_s)
        .collect();
    if steady.len() < LEAK_MIN_SAMPLES {
        return Err(ResourceError::TooFewSamples {
            metric,
            remaining: steady.len(),
            total: series.len(),
            warmup_s,
            needed: LEAK_MIN_SAMPLES,
        });
    }
    let (first_t, last_t) = (steady[0].0, steady[steady.len() - 1].0);
    if last_t <= first_t {
        return Err(ResourceError::NoTimeSpan {
            metric,
            samples: steady.len(),
            t_s: first_t,
        });
    }

    let slope_per_s = theil_sen(&steady);
    let slope_per_hour = slope_per_s * 3600.0;

    let window = rolling_window.min(steady.len());
    let mut sum: f64 = steady[..window].iter().map(|p| p.1).sum();
    let mut envelope_min = sum / window as f64;
    let mut envelope_max = envelope_min;
    for i in window..steady.len() {
        sum += steady[i].1 - steady[i - window].1;
        let mean = sum / window as f64;
        envelope_min = envelope_min.min(mean);
        envelope_max = envelope_max.max(mean);
    }

    Ok(LeakCheck {
        metric,
        slope_per_hour,
        unit,
        threshold_per_hour,
        leaking: slope_per_hour > threshold_per_hour,
        envelope_min,
        envelope_max,
        samples_used: steady.len(),
    })
}

/// Median of the slopes between every pair of points with distinct times, over at most
/// [`THEIL_SEN_MAX_POINTS`] evenly strided points of a time-sorted series that spans time.
fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let stride = points.len().div_ceil(THEIL_SEN_MAX_POINTS).max(1);
    let mut picked: Vec<(f64, f64)> = points.iter().copied().step_by(stride).collect();
    if let (Some(&last), Some(&kept)) = (points.last(), picked.last()) {
        if kept != last {
            picked.push(last);
        }
    }
    let mut slopes = Vec::with_capacity(picked.len() * picked.len().saturating_sub(1) / 2);
    for (i, &(ti, vi)) in picked.iter().enumerate() {
        for &(tj, vj) in &picked[i + 1..] {
            if tj > ti {
                let s = (vj - vi) / (tj - ti);
                if s.is_finite() {
                    slopes.push(s);
                }
            }
        }
    }
    median(&mut slopes).unwrap_or(0.0)
}

fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (_, &mut upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower = values[..n / 2]
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(upper);
    Some((lower + upper) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// Kills and reaps the child when the test ends, however it ends.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn_sleep(seconds: &str) -> ChildGuard {
        ChildGuard(
            Command::new("sleep")
                .arg(seconds)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    /// Deterministic noise in [-1, 1).
    fn noise(i: usize) -> f64 {
        let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    #[test]
    fn samples_this_process() {
        let (s, mark) = sample_pid(0, None).unwrap();
        assert_eq!(s.pid, std::process::id());
        assert_eq!(mark.pid(), std::process::id());
        assert!(s.rss_bytes > 0, "{s:?}");
        assert!(s.threads >= 1, "{s:?}");
        assert!(s.fds >= 3, "{s:?}");
        assert!(s.cpu_pct.is_finite() && s.cpu_pct >= 0.0, "{s:?}");
        assert_eq!(s.t_s, 0.0);

        // Burn a little CPU so the delta is well-defined, then sample again.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let (s2, _) = sample_pid(std::process::id(), Some(&mark)).unwrap();
        assert!(s2.t_s > 0.0, "{s2:?}");
        assert!(s2.cpu_pct.is_finite() && s2.cpu_pct >= 0.0, "{s2:?}");
    }

    #[test]
    fn samples_a_child_and_notices_its_exit() {
        let mut child = spawn_sleep("5");
        let pid = child.0.id();
        let (s, mark) = sample_pid(pid, None).unwrap();
        assert_eq!(s.pid, pid);
        assert!(s.rss_bytes > 0, "{s:?}");
        assert!(s.threads >= 1, "{s:?}");
        assert!(s.fds >= 3, "{s:?}");
        let (s2, _) = sample_pid(pid, Some(&mark)).unwrap();
        assert!(s2.cpu_pct.is_finite() && s2.cpu_pct >= 0.0, "{s2:?}");

        // Killed but not reaped: a zombie. Signal delivery is asynchronous: poll, bounded.
        child.0.kill().unwrap();
        let mut outcome = None;
        for _ in 0..200 {
            match sample_pid(pid, None) {
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    outcome = Some(e);
                    break;
                }
            }
        }
        let e = outcome.expect("a killed child stops being sampleable within 2 s");
        assert!(e.is_gone(), "{e}");
        assert!(e.to_string().contains(&pid.to_string()), "{e}");

        child.0.wait().unwrap();
        let e = sample_pid(pid, None).unwrap_err();
        assert!(
            matches!(e, ResourceError::NoSuchProcess { pid: p } if p == pid),
            "{e}"
        );
    }

    #[test]
    fn nonexistent_pid_is_an_error_naming_it() {
        // Above the largest possible pid_max (2^22).
        let e = sample_pid(4_000_000_000, None).unwrap_err();
        assert!(
            matches!(e, ResourceError::NoSuchProcess { pid: 4_000_000_000 }),
            "{e}"
        );
        assert!(e.to_string().contains("4000000000"), "{e}");
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let mut fields = vec!["S"];
        fields.extend(std::iter::repeat_n("0", 10));
        fields.extend(["7", "5"]); // utime, stime
        fields.extend(std::iter::repeat_n("0", 6));
        fields.push("12345"); // starttime
        fields.extend(["9"; 20]);
        let text = format!("42 (a) b (c) {}\n", fields.join(" "));
        assert_eq!(
            parse_stat(&text),
            Some(Stat {
                state: 'S',
                cpu_ticks: 12,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("42 (no closing paren S 1 2"), None);
        assert_eq!(parse_stat("42 (short) S 1 2"), None);
        assert_eq!(
            parse_status("Name:\tx\nVmRSS:\t  100 kB\nThreads:\t3\n"),
            Some((102_400, 3))
        );
        assert_eq!(parse_status("Name:\tkthread\nThreads:\t1\n"), Some((0, 1)));
        assert_eq!(parse_status("VmRSS: 1 kB\n"), None);
        assert!((1..=10_000).contains(&clock_ticks_per_s()));
    }

    #[test]
    fn sampler_stops_by_itself_at_max_samples() {
        let sampler = Sampler::start(vec![0], Duration::from_millis(5), 4).unwrap();
        let mut finished = false;
        for _ in 0..1000 {
            if sampler.is_finished() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(finished, "sampler did not stop by itself within 10 s");
        let samples = sampler.stop();
        assert_eq!(samples.len(), 4);
        assert!(samples.windows(2).all(|w| w[0].t_s < w[1].t_s));
        assert!(samples.iter().all(|s| s.pid == std::process::id()));
    }

    #[test]
    fn sampler_stops_on_stop_and_drops_exited_children() {
        let mut child = spawn_sleep("5");
        let child_pid = child.0.id();
        // Self given twice (as 0 and as its pid): sampled once.
        let sampler = Sampler::start(
            vec![0, std::process::id(), child_pid],
            Duration::from_millis(10),
            100_000,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!sampler.is_finished());
        let samples = sampler.stop();
        let own = series(&samples, 0, |s| s.t_s);
        let kid = series(&samples, child_pid, |s| s.t_s);
        assert!(!own.is_empty() && !kid.is_empty());
        assert_eq!(own.len() + kid.len(), samples.len());
        assert!(own.len() < 100_000);
        let kid_last = kid.last().unwrap().0;
        let own_last = own.last().unwrap().0;
        assert!(
            kid_last < own_last,
            "child sampled until {kid_last}, self until {own_last}"
        );
        assert!(samples.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }

    #[test]
    fn sampler_with_decimation_keeps_spanning_the_run() {
        let sampler =
            Sampler::start_with(vec![0], Duration::from_millis(2), 4, WhenFull::Decimate).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!sampler.is_finished());
        let samples = sampler.stop();
        assert!(!samples.is_empty() && samples.len() <= 4, "{samples:?}");
        // With Stop it would have ended after ~6 ms; decimation keeps it going.
        assert!(samples.last().unwrap().t_s > 0.02, "{samples:?}");
    }

    #[test]
    fn sampler_of_nothing_ends_at_once_and_drop_stops_it() {
        let sampler = Sampler::start(vec![4_000_000_000], Duration::from_millis(5), 10).unwrap();
        assert!(sampler.stop().is_empty());
        let sampler = Sampler::start(vec![0], Duration::from_millis(5), 0).unwrap();
        assert!(sampler.stop().is_empty());
        // Dropped without stop(): must not hang or leak the thread.
        drop(Sampler::start(vec![0], Duration::from_secs(3600), 10).unwrap());
    }

    #[test]
    fn flat_noisy_series_is_not_leaking() {
        // 2 h, one sample every 10 s, 200 MB ± 5 MB.
        let series: Vec<(f64, f64)> = (0..720)
            .map(|i| (i as f64 * 10.0, 200.0 + 5.0 * noise(i)))
            .collect();
        let c = leak_check(&series, 300.0, 5.0, 30, "rss", "MB").unwrap();
        assert!(!c.leaking, "{c:?}");
        assert!(c.slope_per_hour.abs() < 1.0, "{c:?}");
        assert!(c.envelope_max - c.envelope_min < 5.0, "{c:?}");
        assert_eq!(c.samples_used, 690);
        assert_eq!((c.metric, c.unit, c.threshold_per_hour), ("rss", "MB", 5.0));
    }

    #[test]
    fn linear_growth_is_leaking_and_the_slope_is_recovered() {
        // 10 MB/h over 3 h, one sample every 5 s, ± 2 MB noise; 2040 samples after the
        // warmup, more than the Theil–Sen bound, so striding is exercised too.
        let series: Vec<(f64, f64)> = (0..2160)
            .map(|i| {
                let t = i as f64 * 5.0;
                (t, 100.0 + 10.0 * t / 3600.0 + 2.0 * noise(i))
            })
            .collect();
        let c = leak_check(&series, 600.0, 5.0, 60, "rss", "MB").unwrap();
        assert!(c.leaking, "{c:?}");
        assert!((c.slope_per_hour - 10.0).abs() < 0.5, "{c:?}");
        assert!(c.envelope_max - c.envelope_min > 20.0, "{c:?}");
    }

    #[test]
    fn warmup_ramp_is_excluded() {
        // 2 h: a steep 0 → 500 MB ramp over the first 45 min, then flat. Theil–Sen shrugs off
        // a short ramp as outliers, so make it long enough to dominate if it were counted.
        let series: Vec<(f64, f64)> = (0..720)
            .map(|i| {
                let t = i as f64 * 10.0;
                let v = if t < 2700.0 {
                    500.0 * t / 2700.0
                } else {
                    500.0
                } + noise(i);
                (t, v)
            })
            .collect();
        let with_warmup = leak_check(&series, 2700.0, 5.0, 30, "rss", "MB").unwrap();
        assert!(!with_warmup.leaking, "{with_warmup:?}");
        assert!(with_warmup.slope_per_hour.abs() < 1.0, "{with_warmup:?}");
        assert!(
            with_warmup.envelope_max - with_warmup.envelope_min < 2.0,
            "{with_warmup:?}"
        );
        assert_eq!(with_warmup.samples_used, 450);
        let without = leak_check(&series, 0.0, 5.0, 30, "rss", "MB").unwrap();
        assert!(without.leaking, "{without:?}");
        assert!(without.envelope_min < 100.0, "{without:?}");
        assert_eq!(without.samples_used, 720);
    }

    #[test]
    fn spikes_do_not_make_a_leak() {
        // Flat with every 10th sample spiking by +300 MB near the end of the run: OLS would
        // see a rising trend, the median of pairwise slopes does not.
        let series: Vec<(f64, f64)> = (0..600)
            .map(|i| {
                let spike = if i > 400 && i % 10 == 0 { 300.0 } else { 0.0 };
                (i as f64 * 10.0, 100.0 + noise(i) + spike)
            })
            .collect();
        let c = leak_check(&series, 0.0, 5.0, 30, "rss", "MB").unwrap();
        assert!(!c.leaking, "{c:?}");
    }

    #[test]
    fn leak_check_rejects_bad_input() {
        let few: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1.0)).collect();
        let e = leak_check(&few, 6.0, 1.0, 3, "rss", "MB").unwrap_err();
        assert!(
            matches!(
                e,
                ResourceError::TooFewSamples {
                    remaining: 4,
                    total: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("4 of 10"), "{e}");
        assert!(leak_check(&[], 0.0, 1.0, 3, "rss", "MB").is_err());

        let mut nan = few.clone();
        nan[3].1 = f64::NAN;
        let e = leak_check(&nan, 0.0, 1.0, 3, "rss", "MB").unwrap_err();
        assert!(
            matches!(e, ResourceError::NonFinite { index: 3, .. }),
            "{e}"
        );

        let same_t: Vec<(f64, f64)> = (0..10).map(|i| (5.0, i as f64)).collect();
        let e = leak_check(&same_t, 0.0, 1.0, 3, "rss", "MB").unwrap_err();
        assert!(
            matches!(e, ResourceError::NoTimeSpan { samples: 10, .. }),
            "{e}"
        );

        for (warmup, threshold, window) in [
            (f64::NAN, 1.0, 3),
            (-1.0, 1.0, 3),
            (0.0, f64::INFINITY, 3),
            (0.0, -1.0, 3),
            (0.0, 1.0, 0),
        ] {
            let e = leak_check(&few, warmup, threshold, window, "rss", "MB").unwrap_err();
            assert!(matches!(e, ResourceError::InvalidParameter { .. }), "{e}");
        }

        // A window longer than the series is clamped to it.
        let c = leak_check(&few, 0.0, 1.0, 1000, "rss", "MB").unwrap();
        assert_eq!((c.envelope_min, c.envelope_max), (1.0, 1.0));
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
