//! Simulated targets with a known capacity, for tests, demos and for checking the finder.
//!
//! - `sim:servers=K,service_us=S[,queue=Q]`: a FIFO queue in front of K servers, each taking
//!   S µs per operation. Completion times are *computed* from the queue model when an
//!   operation arrives, then awaited, so the capacity is exactly K·10⁶/S operations per
//!   second whatever the timer's resolution (a late timer delays when a completion is
//!   observed, never when the next operation may start). With `queue=Q`, an arrival that
//!   finds Q operations already waiting is rejected at once with an `overload` error.
//! - `usl:service_us=S,sigma=X,kappa=Y`: a resource whose per-operation time grows with the
//!   number of operations in flight n as S·(1 + σ(n−1) + κn(n−1)). Driven closed-loop by N
//!   workers, its throughput follows the Universal Scalability Law exactly:
//!   X(N) = λN / (1 + σ(N−1) + κN(N−1)) with λ = 10⁶/S.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::target::{parse_params, BoxFuture, OpError, SpecError, Target, KIND_OVERLOAD};

/// The largest number of servers a `sim:` target accepts.
pub const MAX_SERVERS: u64 = 4096;
/// The longest service time a simulated target accepts, µs (one minute).
pub const MAX_SERVICE_US: u64 = 60_000_000;
/// The largest queue bound a `sim:` target accepts.
pub const MAX_QUEUE: u64 = 10_000_000;

fn number(spec: &str, key: &str, value: &str, min: u64, max: u64) -> Result<u64, SpecError> {
    match value.parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(SpecError::Invalid {
            spec: spec.into(),
            message: format!("{key}={value:?}: expected a whole number from {min} to {max}"),
        }),
    }
}

fn fraction(spec: &str, key: &str, value: &str) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(SpecError::Invalid {
            spec: spec.into(),
            message: format!("{key}={value:?}: expected a number from 0 to 1"),
        }),
    }
}

fn unknown(spec: &str, key: &str, known: &str) -> SpecError {
    SpecError::Invalid {
        spec: spec.into(),
        message: format!("unknown parameter {key:?}: expected {known}"),
    }
}

fn missing(spec: &str, key: &str) -> SpecError {
    SpecError::Invalid {
        spec: spec.into(),
        message: format!("missing parameter {key}"),
    }
}

struct SimState {
    /// When each server is next free (min-heap).
    free_at: BinaryHeap<Reverse<Instant>>,
    /// Start times of admitted operations that have not started yet, in FIFO order.
    waiting: VecDeque<Instant>,
}

impl SimState {
    fn trim(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|s| *s <= now) {
            self.waiting.pop_front();
        }
    }
}

/// A FIFO queue in front of K servers with a fixed service time (see the module doc).
pub struct SimTarget {
    spec: String,
    servers: u64,
    service: Duration,
    queue: Option<u64>,
    state: Mutex<SimState>,
}

impl SimTarget {
    /// A simulated target; see the module doc for the meaning of each parameter.
    pub fn new(servers: u64, service_us: u64, queue: Option<u64>) -> Result<Self, SpecError> {
        let spec = format!(
            "sim:servers={servers},service_us={service_us}{}",
            queue.map(|q| format!(",queue={q}")).unwrap_or_default()
        );
        let check =
            |key: &str, v: u64, min: u64, max: u64| number(&spec, key, &v.to_string(), min, max);
        check("servers", servers, 1, MAX_SERVERS)?;
        check("service_us", service_us, 1, MAX_SERVICE_US)?;
        if let Some(q) = queue {
            check("queue", q, 0, MAX_QUEUE)?;
        }
        let now = Instant::now();
        Ok(SimTarget {
            spec,
            servers,
            service: Duration::from_micros(service_us),
            queue,
            state: Mutex::new(SimState {
                free_at: (0..servers).map(|_| Reverse(now)).collect(),
                waiting: VecDeque::new(),
            }),
        })
    }

    /// Parses the parameters after `sim:`.
    pub fn from_params(spec: &str, params: &str) -> Result<Self, SpecError> {
        let (mut servers, mut service, mut queue) = (None, None, None);
        for (k, v) in parse_params(spec, params)? {
            match k.as_str() {
                "servers" => servers = Some(number(spec, &k, &v, 1, MAX_SERVERS)?),
                "service_us" => service = Some(number(spec, &k, &v, 1, MAX_SERVICE_US)?),
                "queue" => queue = Some(number(spec, &k, &v, 0, MAX_QUEUE)?),
                _ => return Err(unknown(spec, &k, "servers, service_us, queue")),
            }
        }
        let servers = servers.ok_or_else(|| missing(spec, "servers=K"))?;
        let service = service.ok_or_else(|| missing(spec, "service_us=S"))?;
        Self::new(servers, service, queue)
    }

    /// The exact capacity, operations per second.
    pub fn capacity_per_s(&self) -> f64 {
        self.servers as f64 * 1e6 / self.service.as_micros() as f64
    }

    /// Admits an arrival now: its completion time, or an overload error.
    fn admit(&self) -> Result<Instant, OpError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| OpError::new("error", "simulator state poisoned"))?;
        let now = Instant::now();
        st.trim(now);
        if let Some(q) = self.queue {
            if st.waiting.len() as u64 >= q {
                return Err(OpError::new(
                    KIND_OVERLOAD,
                    format!(
                        "{} operations already waiting (queue={q})",
                        st.waiting.len()
                    ),
                ));
            }
        }
        let Reverse(free) = st.free_at.pop().unwrap_or(Reverse(now));
        let start = free.max(now);
        let done = start + self.service;
        st.free_at.push(Reverse(done));
        if start > now {
            st.waiting.push_back(start);
        }
        Ok(done)
    }
}

impl Target for SimTarget {
    fn actions(&self) -> Vec<String> {
        vec!["op".into()]
    }

    fn call(&self, _action: usize, _seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        let admitted = self.admit();
        Box::pin(async move {
            let done = admitted?;
            tokio::time::sleep_until(done).await;
            Ok(())
        })
    }

    fn pending(&self) -> Option<u64> {
        let mut st = self.state.lock().ok()?;
        st.trim(Instant::now());
        Some(st.waiting.len() as u64)
    }

    fn describe(&self) -> String {
        self.spec.clone()
    }
}

/// A resource whose service time grows with concurrency per the USL (see the module doc).
pub struct UslTarget {
    spec: String,
    service_us: f64,
    sigma: f64,
    kappa: f64,
    in_flight: AtomicU64,
}

/// Decrements the in-flight count when an operation ends, even if it is cancelled.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl UslTarget {
    /// A USL-shaped target with base service time `service_us`, contention `sigma` and
    /// coherency `kappa` (both from 0 to 1).
    pub fn new(service_us: u64, sigma: f64, kappa: f64) -> Result<Self, SpecError> {
        let spec = format!("usl:service_us={service_us},sigma={sigma},kappa={kappa}");
        number(
            &spec,
            "service_us",
            &service_us.to_string(),
            1,
            MAX_SERVICE_US,
        )?;
        fraction(&spec, "sigma", &sigma.to_string())?;
        fraction(&spec, "kappa", &kappa.to_string())?;
        Ok(UslTarget {
            spec,
            service_us: service_us as f64,
            sigma,
            kappa,
            in_flight: AtomicU64::new(0),
        })
    }

    /// Parses the parameters after `usl:`.
    pub fn from_params(spec: &str, params: &str) -> Result<Self, SpecError> {
        let (mut service, mut sigma, mut kappa) = (None, 0.0, 0.0);
        for (k, v) in parse_params(spec, params)? {
            match k.as_str() {
                "service_us" => service = Some(number(spec, &k, &v, 1, MAX_SERVICE_US)?),
                "sigma" => sigma = fraction(spec, &k, &v)?,
                "kappa" => kappa = fraction(spec, &k, &v)?,
                _ => return Err(unknown(spec, &k, "service_us, sigma, kappa")),
            }
        }
        let service = service.ok_or_else(|| missing(spec, "service_us=S"))?;
        Self::new(service, sigma, kappa)
    }

    /// The model's throughput at concurrency `n`, operations per second.
    pub fn model_throughput(&self, n: f64) -> f64 {
        let lambda = 1e6 / self.service_us;
        lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    /// Contention σ.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Coherency κ.
    pub fn kappa(&self) -> f64 {
        self.kappa
    }
}

impl Target for UslTarget {
    fn actions(&self) -> Vec<String> {
        vec!["op".into()]
    }

    fn call(&self, _action: usize, _seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(async move {
            let start = Instant::now();
            let n = (self.in_flight.fetch_add(1, Ordering::AcqRel) + 1) as f64;
            let _guard = InFlight(&self.in_flight);
            let factor = 1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0);
            let micros = (self.service_us * factor).min(MAX_SERVICE_US as f64);
            tokio::time::sleep_until(start + Duration::from_micros(micros as u64)).await;
            Ok(())
        })
    }

    fn pending(&self) -> Option<u64> {
        Some(self.in_flight.load(Ordering::Acquire))
    }

    fn describe(&self) -> String {
        self.spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::from_spec;

    #[test]
    fn specs_parse_and_bad_values_are_named() {
        let t = from_spec("sim:servers=4,service_us=1000").unwrap();
        assert_eq!(t.describe(), "sim:servers=4,service_us=1000");
        let s = SimTarget::from_params("x", "servers=4,service_us=1000,queue=10").unwrap();
        assert_eq!(s.capacity_per_s(), 4000.0);
        for (spec, needle) in [
            (
                "sim:servers=0,service_us=1",
                "servers=\"0\": expected a whole number from 1",
            ),
            ("sim:servers=2,service_us=-1", "service_us=\"-1\""),
            ("sim:servers=2", "missing parameter service_us=S"),
            (
                "sim:servers=2,service_us=5,speed=9",
                "unknown parameter \"speed\"",
            ),
            (
                "usl:service_us=100,sigma=1.5",
                "sigma=\"1.5\": expected a number from 0 to 1",
            ),
            ("usl:sigma=0.1", "missing parameter service_us=S"),
        ] {
            let e = from_spec(spec).err().unwrap().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sim_queues_fifo_and_completes_at_computed_times() {
        let sim = SimTarget::new(2, 1000, None).unwrap();
        let t0 = Instant::now();
        // Five arrivals at once on two 1 ms servers finish at 1, 1, 2, 2, 3 ms.
        let futs: Vec<_> = (0..5).map(|i| sim.call(0, i)).collect();
        assert_eq!(sim.pending(), Some(3));
        let mut ends = Vec::new();
        for f in futs {
            f.await.unwrap();
            ends.push((Instant::now() - t0).as_micros());
        }
        assert_eq!(ends, [1000, 1000, 2000, 2000, 3000]);
        assert_eq!(sim.pending(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn sim_rejects_beyond_its_queue() {
        let sim = SimTarget::new(1, 1000, Some(1)).unwrap();
        let a = sim.call(0, 0); // starts at once
        let b = sim.call(0, 1); // waits (queue 1)
        let c = sim.call(0, 2); // rejected
        let e = c.await.unwrap_err();
        assert_eq!(e.kind, KIND_OVERLOAD);
        a.await.unwrap();
        b.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn usl_target_slows_with_concurrency() {
        // Whole milliseconds: the paused test clock still has the timer's 1 ms granularity.
        let usl = UslTarget::new(2000, 0.5, 0.0).unwrap();
        let t0 = Instant::now();
        let (a, b) = tokio::join!(usl.call(0, 0), usl.call(0, 1));
        a.unwrap();
        b.unwrap();
        // First op saw n=1 (2 ms), second n=2 (3 ms).
        assert_eq!((Instant::now() - t0).as_micros(), 3000);
        assert_eq!(usl.pending(), Some(0));
        assert!((usl.model_throughput(2.0) - 1000.0 / 1.5).abs() < 1e-9);
    }
}
