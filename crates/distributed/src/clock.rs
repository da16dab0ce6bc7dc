//! Clock offsets between the coordinator and a worker, estimated at join the way NTP and
//! Cristian's algorithm do: the coordinator reads its clock (`sent`), asks the worker for
//! its clock (`worker`), reads its clock again (`received`). If the request and the reply
//! took equally long, the worker read its clock at the midpoint, so
//! `offset = worker − (sent + received) / 2`, wrong by at most half the round trip. Of
//! several probes the one with the shortest round trip bounds the error best; it is used.
//!
//! The offset only has to be good to a fraction of a step's start lead (tens of ms): a
//! worker whose clock is off by more than its error bound starts early or late, and a late
//! start is caught by the step's lateness check, never passed.

/// One probe: coordinator clock before and after, worker clock in between; ns since the
/// Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Coordinator clock when the probe was sent.
    pub sent: u64,
    /// The worker's clock in its reply.
    pub worker: u64,
    /// Coordinator clock when the reply arrived.
    pub received: u64,
}

/// The estimate: worker clock − coordinator clock, and the round trip it came from (the
/// offset is within ± half of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// Worker clock minus coordinator clock, ns.
    pub offset_ns: i64,
    /// Round trip of the probe used, ns.
    pub rtt_ns: u64,
}

impl Offset {
    /// A coordinator instant (ns since the epoch) in the worker's clock.
    pub fn to_worker(&self, coordinator_ns: u64) -> u64 {
        coordinator_ns.saturating_add_signed(self.offset_ns)
    }
}

/// The offset from the probe with the shortest round trip; `None` without a usable probe
/// (none, or all with the reply before the request, which a clock stepped backwards gives).
pub fn estimate(probes: &[Probe]) -> Option<Offset> {
    probes
        .iter()
        .filter(|p| p.received >= p.sent)
        .min_by_key(|p| p.received - p.sent)
        .map(|p| {
            let mid = p.sent as i128 + (p.received - p.sent) as i128 / 2;
            let offset = (p.worker as i128 - mid).clamp(i64::MIN as i128, i64::MAX as i128);
            Offset {
                offset_ns: offset as i64,
                rtt_ns: p.received - p.sent,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake pair of clocks: the worker runs `skew` ns ahead; each probe takes `out` ns to
    /// arrive and `back` ns to return.
    fn probe(at: u64, skew: i64, out: u64, back: u64) -> Probe {
        let worker = (at + out).saturating_add_signed(skew);
        Probe {
            sent: at,
            worker,
            received: at + out + back,
        }
    }

    #[test]
    fn the_shortest_round_trip_wins_and_the_error_is_within_half_of_it() {
        let skew = 5_000_000; // worker 5 ms ahead
        let probes = [
            probe(1_000_000_000, skew, 900_000, 100_000), // 1 ms, lopsided
            probe(1_010_000_000, skew, 60_000, 40_000),   // 100 µs: the one used
            probe(1_020_000_000, skew, 4_000_000, 200_000),
        ];
        let o = estimate(&probes).unwrap();
        assert_eq!(o.rtt_ns, 100_000);
        // out 60 µs, back 40 µs: the midpoint is 10 µs after the worker's read.
        assert_eq!(o.offset_ns, skew + 10_000);
        assert!((o.offset_ns - skew).unsigned_abs() <= o.rtt_ns / 2);
        assert_eq!(o.to_worker(2_000_000_000), 2_005_010_000);
    }

    #[test]
    fn a_worker_behind_gives_a_negative_offset() {
        let o = estimate(&[probe(10_000_000_000, -3_000_000_000, 50, 50)]).unwrap();
        assert_eq!(o.offset_ns, -3_000_000_000);
        assert_eq!(o.to_worker(10_000_000_000), 7_000_000_000);
    }

    #[test]
    fn no_usable_probe_gives_none() {
        assert_eq!(estimate(&[]), None);
        let backwards = Probe {
            sent: 10,
            worker: 5,
            received: 9,
        };
        assert_eq!(estimate(&[backwards]), None);
    }
}
