//! The model of acknowledged writes that `daemon-mixed` and `daemon-batch` check the daemon
//! against: what every acknowledged create, update, close and dependency change made of
//! the store, with the daemon's documented semantics, and the table that compares its
//! counts with the daemon's `stats` and the file's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use collector::Table;
use rpc_daemon::model::{CreateArgs, Dep, DepKind, Issue, Stats, Status, UpdateArgs};

use super::common::{id_num, FileDump};

/// Mismatch messages [`Model::compare`] keeps (all are counted).
const KEEP_MESSAGES: usize = 20;

/// What an issue should look like (everything but timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MIssue {
    pub title: String,
    pub description: String,
    pub status: Status,
    pub priority: u8,
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    pub close_reason: Option<String>,
}

impl MIssue {
    pub(crate) fn of(i: &Issue) -> MIssue {
        MIssue {
            title: i.title.clone(),
            description: i.description.clone(),
            status: i.status,
            priority: i.priority,
            assignee: i.assignee.clone(),
            labels: i.labels.clone(),
            close_reason: i.close_reason.clone(),
        }
    }

    /// What `create` makes of `a` (labels trimmed, deduplicated, sorted).
    pub(crate) fn created(a: &CreateArgs) -> MIssue {
        MIssue {
            title: a.title.clone(),
            description: a.description.clone(),
            status: Status::Open,
            priority: a.priority.unwrap_or(2),
            assignee: a.assignee.clone(),
            labels: clean_labels(&a.labels),
            close_reason: None,
        }
    }
}

fn clean_labels(l: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = l.iter().map(|s| s.trim().to_string()).collect();
    set.into_iter().collect()
}

/// The state acknowledged writes produced, with the daemon's documented semantics: an update
/// that changes nothing, closing a closed issue and adding an existing edge log no event.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// By id number.
    pub issues: BTreeMap<u64, MIssue>,
    pub deps: BTreeSet<Dep>,
    pub events: u64,
}

impl Model {
    /// An acknowledged create.
    pub(crate) fn created(&mut self, issue: &Issue) -> Result<(), String> {
        let k = id_num(&issue.id).ok_or_else(|| format!("create answered id {:?}", issue.id))?;
        if self.issues.insert(k, MIssue::of(issue)).is_some() {
            return Err(format!("create answered {}, an id already taken", issue.id));
        }
        self.events += 1;
        Ok(())
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut MIssue, String> {
        id_num(id)
            .and_then(|k| self.issues.get_mut(&k))
            .ok_or_else(|| format!("{id} is not in the model"))
    }

    /// Applies an update; returns the state it should answer.
    pub(crate) fn update(&mut self, a: &UpdateArgs) -> Result<MIssue, String> {
        let i = self.get_mut(&a.id)?;
        let before = i.clone();
        if let Some(t) = &a.title {
            i.title = t.clone();
        }
        if let Some(d) = &a.description {
            i.description = d.clone();
        }
        if let Some(p) = a.priority {
            i.priority = p;
        }
        if let Some(w) = &a.assignee {
            i.assignee = w.clone();
        }
        if let Some(l) = &a.labels {
            i.labels = clean_labels(l);
        }
        if let Some(s) = a.status {
            if s != before.status {
                i.status = s;
                if s != Status::Closed {
                    i.close_reason = None;
                }
            }
        }
        let after = i.clone();
        if after != before {
            self.events += 1;
        }
        Ok(after)
    }

    /// Applies a close; returns the state it should answer.
    pub(crate) fn close(&mut self, id: &str, reason: &Option<String>) -> Result<MIssue, String> {
        let i = self.get_mut(id)?;
        if i.status == Status::Closed {
            return Ok(i.clone());
        }
        i.status = Status::Closed;
        i.close_reason = reason.clone();
        let after = i.clone();
        self.events += 1;
        Ok(after)
    }

    pub(crate) fn dep_add(&mut self, d: &Dep) {
        if self.deps.insert(d.clone()) {
            self.events += 1;
        }
    }

    /// Whether the edge existed (it must, for the operation to succeed).
    pub(crate) fn dep_remove(&mut self, d: &Dep) -> bool {
        let had = self.deps.remove(d);
        if had {
            self.events += 1;
        }
        had
    }

    /// Whether issue `k` is ready: open and no `blocks` edge to an issue that is not closed.
    pub(crate) fn is_ready(&self, k: u64) -> bool {
        let Some(i) = self.issues.get(&k) else {
            return false;
        };
        i.status == Status::Open
            && !self.deps.iter().any(|d| {
                d.kind == DepKind::Blocks
                    && id_num(&d.issue) == Some(k)
                    && id_num(&d.depends_on)
                        .and_then(|b| self.issues.get(&b))
                        .is_none_or(|b| b.status != Status::Closed)
            })
    }

    /// The `stats` this model implies.
    pub(crate) fn stats(&self) -> Stats {
        let count = |s: Status| self.issues.values().filter(|i| i.status == s).count() as u64;
        let mut blocked: BTreeSet<u64> = BTreeSet::new();
        for d in &self.deps {
            if d.kind != DepKind::Blocks {
                continue;
            }
            let open_blocker = id_num(&d.depends_on)
                .and_then(|b| self.issues.get(&b))
                .is_none_or(|b| b.status != Status::Closed);
            if open_blocker {
                if let Some(k) = id_num(&d.issue) {
                    blocked.insert(k);
                }
            }
        }
        Stats {
            issues: self.issues.len() as u64,
            open: count(Status::Open),
            in_progress: count(Status::InProgress),
            closed: count(Status::Closed),
            deps: self.deps.len() as u64,
            events: self.events,
            ready: self
                .issues
                .iter()
                .filter(|(k, i)| i.status == Status::Open && !blocked.contains(k))
                .count() as u64,
        }
    }

    /// Adds another model's (disjoint) issues, edges and events.
    pub(crate) fn absorb(&mut self, other: Model) {
        self.issues.extend(other.issues);
        self.deps.extend(other.deps);
        self.events += other.events;
    }

    /// Every difference between this model and the file: `(count, first messages)`.
    pub(crate) fn compare(&self, dump: &FileDump) -> (u64, Vec<String>) {
        let mut n = 0u64;
        let mut msgs = Vec::new();
        let mut note = |m: String| {
            n += 1;
            if msgs.len() < KEEP_MESSAGES {
                msgs.push(m);
            }
        };
        for (k, want) in &self.issues {
            match dump.issues.get(k) {
                None => note(format!("hl-{k} ({:?}) is not in the file", want.title)),
                Some(got) => {
                    let got = MIssue::of(got);
                    if got != *want {
                        note(format!(
                            "hl-{k} differs: acknowledged {want:?}, in the file {got:?}"
                        ));
                    }
                }
            }
        }
        for (k, got) in &dump.issues {
            if !self.issues.contains_key(k) {
                note(format!(
                    "hl-{k} ({:?}) is in the file but no acknowledged write made it",
                    got.title
                ));
            }
        }
        for d in self.deps.difference(&dump.deps) {
            note(format!(
                "edge {} -{}-> {} is missing from the file",
                d.issue,
                d.kind.as_str(),
                d.depends_on
            ));
        }
        for d in dump.deps.difference(&self.deps) {
            note(format!(
                "edge {} -{}-> {} is in the file but was never acknowledged",
                d.issue,
                d.kind.as_str(),
                d.depends_on
            ));
        }
        let want = self.stats();
        if dump.stats != want {
            note(format!(
                "stats of the file {:?} != acknowledged {want:?}",
                dump.stats
            ));
        }
        if !dump.missing.is_empty() {
            note(format!(
                "{} ids hold no issue (ids must be dense), e.g. hl-{}",
                dump.missing.len(),
                dump.missing[0]
            ));
        }
        (n, msgs)
    }
}

/// A stats comparison row: name, acknowledged, through the daemon, in the file.
pub(crate) fn stats_table(
    title: &str,
    want: &Stats,
    daemon: Option<&Stats>,
    file: &Stats,
) -> Table {
    let mut t = Table::new(
        title,
        &[
            "count",
            "acknowledged (model)",
            "daemon stats",
            "file stats",
        ],
    );
    type Count = fn(&Stats) -> u64;
    let rows: [(&str, Count); 7] = [
        ("issues", |s| s.issues),
        ("open", |s| s.open),
        ("in_progress", |s| s.in_progress),
        ("closed", |s| s.closed),
        ("deps", |s| s.deps),
        ("events", |s| s.events),
        ("ready", |s| s.ready),
    ];
    for (name, f) in rows {
        t.push_row([
            name.to_string(),
            f(want).to_string(),
            daemon
                .map(|d| f(d).to_string())
                .unwrap_or_else(|| "-".into()),
            f(file).to_string(),
        ]);
    }
    t
}

impl Model {
    /// A copy holding only issue `k` (enough to predict an update of it).
    pub(crate) fn clone_issue_model(&self, k: u64) -> Model {
        Model {
            issues: self
                .issues
                .get(&k)
                .map(|i| BTreeMap::from([(k, i.clone())]))
                .unwrap_or_default(),
            ..Model::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(id: &str, title: &str) -> Issue {
        Issue {
            id: id.into(),
            title: title.into(),
            description: String::new(),
            status: Status::Open,
            priority: 2,
            assignee: None,
            labels: vec![],
            created_at: 0,
            updated_at: 0,
            closed_at: None,
            close_reason: None,
        }
    }

    #[test]
    fn the_model_counts_events_and_readiness_like_the_store() {
        let mut m = Model::default();
        m.created(&issue("hl-1", "a")).unwrap();
        m.created(&issue("hl-2", "b")).unwrap();
        assert!(m.created(&issue("hl-2", "c")).is_err());
        let d = Dep {
            issue: "hl-2".into(),
            depends_on: "hl-1".into(),
            kind: DepKind::Blocks,
        };
        m.dep_add(&d);
        m.dep_add(&d);
        assert_eq!(m.stats().ready, 1);
        // A no-op update logs nothing; a close does; a second close does not.
        m.update(&UpdateArgs {
            id: "hl-1".into(),
            priority: Some(2),
            ..UpdateArgs::default()
        })
        .unwrap();
        m.close("hl-1", &Some("x".into())).unwrap();
        m.close("hl-1", &None).unwrap();
        let s = m.stats();
        assert_eq!(
            (s.issues, s.closed, s.deps, s.events, s.ready),
            (2, 1, 1, 4, 1)
        );
        // Reopening clears the reason.
        let after = m
            .update(&UpdateArgs {
                id: "hl-1".into(),
                status: Some(Status::Open),
                ..UpdateArgs::default()
            })
            .unwrap();
        assert_eq!(after.close_reason, None);
        assert!(m.dep_remove(&d));
        assert!(!m.dep_remove(&d));
        assert_eq!(m.stats().events, 6);
    }
}
