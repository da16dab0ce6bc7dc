//! What every suite stands on: the runtime, the empty result of a run, the
//! seed derivation ([`seed`]) and the latency summaries ([`stats`]). Nothing here knows a
//! particular suite; a suite family's own shared code is in its folder's `common.rs`.

pub(crate) mod seed;
pub(crate) mod stats;

use std::path::Path;

use anyhow::{Context, Result};
use collector::SuiteResult;

use crate::suites::{RunContext, Suite};

/// The multi-threaded tokio runtime every suite drives its load on (one worker per core).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// An empty result for `suite` under the run's profile and seed, with the plan's scale.
pub(crate) fn new_result(suite: &dyn Suite, ctx: &RunContext) -> SuiteResult {
    SuiteResult::new(
        suite.name(),
        ctx.profile.to_string(),
        suite.plan(ctx.profile).scale,
        ctx.seed,
    )
}

/// The first `n` of `items`, joined by ` | `: the examples a failure reason quotes.
pub(crate) fn first_joined(items: &[String], n: usize) -> String {
    items
        .iter()
        .take(n)
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The last lines of a log, for a failure reason.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_joined_quotes_at_most_n() {
        let items: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(first_joined(&items, 2), "a | b");
        assert_eq!(first_joined(&items, 9), "a | b | c");
        assert_eq!(first_joined(&[], 2), "");
    }
}
