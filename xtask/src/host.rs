//! Facts about this run for the report's provenance: UTC dates, git state, host, toolchain.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use reports::Provenance;

/// Civil date (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD` and `YYYY-MM-DDTHH:MM:SSZ` for a Unix time in seconds.
pub fn utc(unix_s: i64) -> (String, String) {
    let (y, m, d) = civil_from_days(unix_s.div_euclid(86_400));
    let secs = unix_s.rem_euclid(86_400);
    let date = format!("{y:04}-{m:02}-{d:02}");
    let stamp = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    (date, stamp)
}

/// Now, as Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn output(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        // Read-only git calls take no optional locks, so they never contend with a
        // concurrent git command in the same checkout.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The current commit and whether the work tree has uncommitted changes (untracked files
/// count: they change what builds); `None` outside a checkout or before the first commit.
pub fn git_state(root: &Path) -> Option<(String, bool)> {
    let commit = output("git", &["rev-parse", "HEAD"], root).filter(|c| !c.is_empty())?;
    let dirty = output("git", &["status", "--porcelain"], root).is_none_or(|s| !s.is_empty());
    Some((commit, dirty))
}

/// The CPU model name from `/proc/cpuinfo`, if known.
pub fn cpu_model() -> Option<String> {
    read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Collects provenance; `command` is the exact command line, `started_utc` when it began.
pub fn provenance(root: &Path, command: String, started_utc: String) -> Provenance {
    let (commit, dirty) = git_state(root).unwrap_or_else(|| ("unknown".into(), true));
    let cpu_model = cpu_model().unwrap_or_else(|| "unknown".into());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            let kb: u64 = l
                .strip_prefix("MemTotal:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    Provenance {
        commit,
        dirty,
        cpu_model,
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(0),
        memory_bytes,
        kernel: if kernel.is_empty() {
            "unknown".into()
        } else {
            format!("Linux {kernel}")
        },
        rustc: output("rustc", &["--version"], root).unwrap_or_else(|| "unknown".into()),
        command,
        started_utc,
        wall_s: 0.0,
    }
}

/// The command line as typed: `cargo xtask` and the arguments, quoted where needed.
pub fn command_line() -> String {
    let mut parts = vec!["cargo".to_string(), "xtask".to_string()];
    for a in std::env::args().skip(1) {
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+".contains(&b));
        parts.push(if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(utc(0), ("1970-01-01".into(), "1970-01-01T00:00:00Z".into()));
        // 2026-11-22 14:26:28 UTC
        assert_eq!(utc(1_795_357_588).1, "2026-11-22T14:26:28Z");
        // Leap day.
        assert_eq!(utc(951_782_400).0, "2000-02-29");
        assert_eq!(utc(-1).1, "1969-12-31T23:59:59Z");
    }
}
