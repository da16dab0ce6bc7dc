//! The interval log of a distributed run: for every interval of every step, the workers'
//! histograms merged (tags `ACTION`, `ACTION.service`), then each worker's own, tagged
//! `wI/ACTION` (I the worker's place in the run, as the report's worker table numbers
//! them). Workers cut their intervals on a grid anchored at the step's intended start,
//! so interval *k* of every worker covers the same span and they merge exactly.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use collector::hlog::IntervalLog;
use collector::recorder::StepData;

use crate::coordinator::DistStep;

/// One interval across workers: its length (ms), the merged data, and each worker's.
type Slot = (u64, StepData, Vec<(usize, StepData)>);

/// Writes the intervals of `step` to `log`, whose BaseTime is `base_unix_ns` (coordinator
/// clock). Returns how many intervals were written (merged ones; each worker's add to the
/// lines, not to the count). An unreadable interval is an error naming the worker.
pub fn write_step<W: Write>(
    log: &mut IntervalLog<W>,
    base_unix_ns: u64,
    step: &DistStep,
) -> Result<u64, String> {
    let step_offset = Duration::from_nanos(step.start_unix_ns.saturating_sub(base_unix_ns));
    let mut grid: BTreeMap<i64, Slot> = BTreeMap::new();
    for (i, report) in step.reports.iter().enumerate() {
        let Some(r) = report else { continue };
        for iv in &r.intervals {
            let data = StepData::from_bytes(iv.data.as_bytes())
                .map_err(|e| format!("worker w{i}: interval at {} ms: {e}", iv.offset_ms))?;
            let slot = grid
                .entry(iv.offset_ms)
                .or_insert_with(|| (iv.length_ms, StepData::new(data.epoch), Vec::new()));
            slot.0 = slot.0.max(iv.length_ms);
            slot.1
                .merge(&data)
                .map_err(|e| format!("worker w{i}: interval at {} ms: {e}", iv.offset_ms))?;
            slot.2.push((i, data));
        }
    }
    let mut written = 0;
    for (offset_ms, (length_ms, merged, each)) in &grid {
        let offset = step_offset.saturating_add(Duration::from_millis(offset_ms.unsigned_abs()));
        let length = Duration::from_millis(*length_ms);
        log.write(offset, length, merged, "")
            .map_err(|e| e.to_string())?;
        for (i, data) in each {
            log.write(offset, length, data, &format!("w{i}/"))
                .map_err(|e| e.to_string())?;
        }
        written += 1;
    }
    Ok(written)
}
