//! `--hlog FILE` and a plan's `hlog` key: an HdrHistogram interval log of a run written to a
//! file, one interval per second ([`collector::hlog`] has the format).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use collector::generator::recorder_for;
use collector::hlog::{IntervalLog, IntervalTap, DEFAULT_INTERVAL};
use collector::target::Target;

/// A tap writing to an interval log file.
pub type FileTap = IntervalTap<IntervalLog<BufWriter<File>>>;

/// Creates `path` (and its parent dirs) and writes the log header with `comments`; returns
/// the log and its BaseTime.
pub fn create(
    path: &Path,
    comments: &[String],
) -> Result<(IntervalLog<BufWriter<File>>, SystemTime)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the interval log's dir {}", dir.display()))?;
    }
    let file = File::create(path)
        .with_context(|| format!("creating the interval log {}", path.display()))?;
    let base = SystemTime::now();
    let log = IntervalLog::new(BufWriter::new(file), base, comments)
        .with_context(|| format!("writing the interval log {}", path.display()))?;
    Ok((log, base))
}

/// Creates the log at `path` ([`create`]) and starts the tap that writes an interval every
/// second; give [`IntervalTap::recorder`] to the generator and call [`IntervalTap::finish`]
/// at the end. Must run on a tokio runtime.
pub fn start(path: &Path, target: &dyn Target, comments: &[String]) -> Result<FileTap> {
    let (log, _) = create(path, comments)?;
    let tap = recorder_for(target)?;
    Ok(IntervalTap::start(
        tap,
        log,
        DEFAULT_INTERVAL,
        tokio::time::Instant::now(),
    )?)
}
