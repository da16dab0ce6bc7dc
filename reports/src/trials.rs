//! Trial directories under `docs/trials/`: naming a new one without overwriting an
//! earlier run of the same day, and finding the trial before a given one.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// A parsed trial directory name: `YYYY-MM-DD` or `YYYY-MM-DD-N` with N ≥ 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialLabel {
    /// The date part, `YYYY-MM-DD`.
    pub date: String,
    /// 1 for the day's first run, then 2, 3…
    pub run: u32,
}

impl TrialLabel {
    /// Parses a directory name; `None` if it is not a trial label.
    pub fn parse(name: &str) -> Option<Self> {
        let date = name.get(..10)?;
        if !is_date(date) {
            return None;
        }
        let rest = &name[10..];
        let run = if rest.is_empty() {
            1
        } else {
            let n: u32 = rest.strip_prefix('-')?.parse().ok()?;
            if n < 2 || rest[1..].starts_with('0') {
                return None;
            }
            n
        };
        Some(TrialLabel {
            date: date.to_string(),
            run,
        })
    }

    /// The directory name.
    pub fn name(&self) -> String {
        if self.run == 1 {
            self.date.clone()
        } else {
            format!("{}-{}", self.date, self.run)
        }
    }
}

impl PartialOrd for TrialLabel {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TrialLabel {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.date.as_str(), self.run).cmp(&(other.date.as_str(), other.run))
    }
}

/// Whether `s` is a plausible `YYYY-MM-DD` date (month 01–12, day 01–31).
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Every trial label found directly under `root` that has a `results.json`, oldest first.
pub fn list(root: &Path) -> Vec<TrialLabel> {
    let mut found: Vec<TrialLabel> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let label = TrialLabel::parse(&name)?;
            e.path().join("results.json").is_file().then_some(label)
        })
        .collect();
    found.sort();
    found
}

/// The first free directory for a trial on `date` under `root`: `date`, else `date-2`, `date-3`…
/// A directory that exists at all (even without results) counts as taken, so nothing is
/// overwritten silently.
pub fn next_dir(root: &Path, date: &str) -> PathBuf {
    let mut run = 1u32;
    loop {
        let label = TrialLabel {
            date: date.to_string(),
            run,
        };
        let dir = root.join(label.name());
        if !dir.exists() || run == u32::MAX {
            return dir;
        }
        run += 1;
    }
}

/// The most recent trial under `root` strictly before `current` (by date, then run number),
/// whose `results.json` exists. `current` need not exist under `root`.
pub fn previous(root: &Path, current: &TrialLabel) -> Option<PathBuf> {
    list(root)
        .into_iter()
        .rev()
        .find(|l| l < current)
        .map(|l| root.join(l.name()).join("results.json"))
}

/// The most recent trial under `root`, if any.
pub fn latest(root: &Path) -> Option<PathBuf> {
    list(root).pop().map(|l| root.join(l.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, name: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("results.json"), "{}").unwrap();
    }

    #[test]
    fn labels_parse_and_order() {
        assert_eq!(TrialLabel::parse("2026-11-22").unwrap().run, 1);
        assert_eq!(TrialLabel::parse("2026-11-22-10").unwrap().run, 10);
        for bad in [
            "2026-11-22-1",
            "2026-11-22-02",
            "2026-13-01",
            "2026-11-22x",
            "notes",
            "2026-11-2",
        ] {
            assert!(TrialLabel::parse(bad).is_none(), "{bad}");
        }
        let a = TrialLabel::parse("2026-11-22-2").unwrap();
        let b = TrialLabel::parse("2026-11-22-10").unwrap();
        let c = TrialLabel::parse("2026-11-23").unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn next_dir_never_reuses_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(next_dir(r, "2026-11-22"), r.join("2026-11-22"));
        std::fs::create_dir_all(r.join("2026-11-22")).unwrap();
        assert_eq!(next_dir(r, "2026-11-22"), r.join("2026-11-22-2"));
        std::fs::create_dir_all(r.join("2026-11-22-2")).unwrap();
        assert_eq!(next_dir(r, "2026-11-22"), r.join("2026-11-22-3"));
    }

    #[test]
    fn previous_is_the_latest_strictly_earlier_trial() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(r, "2026-11-20");
        touch(r, "2026-11-21");
        touch(r, "2026-11-21-2");
        touch(r, "2026-11-21-10");
        std::fs::create_dir_all(r.join("2026-11-21-11")).unwrap(); // no results.json
        touch(r, "2026-11-23");
        std::fs::create_dir_all(r.join("charts")).unwrap();
        let cur = TrialLabel::parse("2026-11-22").unwrap();
        assert_eq!(
            previous(r, &cur),
            Some(r.join("2026-11-21-10").join("results.json"))
        );
        let first = TrialLabel::parse("2026-11-20").unwrap();
        assert_eq!(previous(r, &first), None);
        assert_eq!(latest(r), Some(r.join("2026-11-23")));
        assert_eq!(previous(&r.join("missing"), &cur), None);
    }
}
