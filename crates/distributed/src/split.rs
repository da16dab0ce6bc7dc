//! Pure planning: how a step's rate is shared between workers, and how a target that lives
//! inside the generator's process becomes one system across workers.

/// Each worker's share of `rate` operations per second, in worker order. Shares are as
/// equal as the caps allow (water-filling: a worker capped below an equal share gets its
/// cap, the rest is spread over the others), differ by at most one operation per second
/// between uncapped workers, and add up to `rate` — unless the caps add up to less, in
/// which case every worker gets its cap and the second value is the shortfall (the step
/// cannot be issued in full, and must not pass).
pub fn split_rate(rate: u64, caps: &[Option<u64>]) -> (Vec<u64>, u64) {
    let n = caps.len();
    let mut shares = vec![0u64; n];
    if n == 0 {
        return (shares, rate);
    }
    let mut open: Vec<usize> = (0..n).collect();
    let mut left = rate;
    // Each round either gives every open worker an equal share, or fixes at least one
    // capped worker at its cap: at most n + 1 rounds.
    while !open.is_empty() && left > 0 {
        let equal = left / open.len() as u64;
        let capped: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| caps[i].is_some_and(|c| c <= equal))
            .collect();
        if capped.is_empty() {
            let extra = (left % open.len() as u64) as usize;
            for (k, &i) in open.iter().enumerate() {
                shares[i] = equal + u64::from(k < extra);
            }
            left = 0;
            break;
        }
        for &i in &capped {
            let cap = caps[i].unwrap_or(0);
            shares[i] = cap;
            left -= cap;
        }
        open.retain(|i| !capped.contains(i));
    }
    (shares, left)
}

/// The spec each of `workers` generators opens so that together they are *one* system, for
/// targets that live inside the generator's process:
///
/// - `sim:servers=K,…` is split: each worker simulates `K / workers` servers (and a queue
///   bound of `Q / workers`), so the workers' equal shares meet a system of K servers in
///   all. `K` (and `Q`) must divide by `workers`.
/// - `usl:` cannot be split (its throughput is not linear in its parts): serve it once
///   with `stress serve` over NATS and point the workers at `nats://…`.
/// - `noop` has no capacity to share: every worker gets it as is.
/// - Any other spec is a real service, reached by every worker as is.
pub fn split_spec(spec: &str, workers: usize) -> Result<String, String> {
    let s = spec.trim();
    let (kind, params) = s.split_once(':').unwrap_or((s, ""));
    match kind {
        "sim" => split_sim(spec, params, workers),
        "usl" => Err(format!(
            "target {spec:?}: a usl: model cannot be split over {workers} workers (its \
             throughput is not linear in its parts): serve it once with `stress serve {spec} \
             --nats URL --subject S` and give the workers --target nats://HOST:PORT/S"
        )),
        k if k.starts_with("daemon") => Err(format!(
            "target {spec:?}: daemon: opens a daemon inside each generator, so {workers} \
             workers would be {workers} daemons: start one `rpc-daemon` and give the workers \
             --target unix:SOCKET"
        )),
        _ => Ok(s.to_string()),
    }
}

fn split_sim(spec: &str, params: &str, workers: usize) -> Result<String, String> {
    let n = workers.max(1) as u64;
    let mut out = Vec::new();
    for kv in params.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("target {spec:?}: {kv:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "servers" | "queue" => {
                let total: u64 = v
                    .parse()
                    .map_err(|_| format!("target {spec:?}: {k}={v:?} is not a whole number"))?;
                if total % n != 0 || (k == "servers" && total < n) {
                    return Err(format!(
                        "target {spec:?}: {k}={total} does not divide by {workers} workers: \
                         expected a multiple of {workers}, so that each worker simulates an \
                         equal part of one system"
                    ));
                }
                out.push(format!("{k}={}", total / n));
            }
            _ => out.push(format!("{k}={v}")),
        }
    }
    Ok(format!("sim:{}", out.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_equal_and_add_up() {
        assert_eq!(split_rate(10, &[None, None, None]), (vec![4, 3, 3], 0));
        assert_eq!(split_rate(9000, &[None; 3]), (vec![3000; 3], 0));
        assert_eq!(split_rate(0, &[None; 2]), (vec![0, 0], 0));
    }

    #[test]
    fn a_capped_worker_gets_its_cap_and_the_rest_is_spread() {
        assert_eq!(
            split_rate(9000, &[Some(1000), None, None]),
            (vec![1000, 4000, 4000], 0)
        );
        // A cap above the equal share changes nothing.
        assert_eq!(
            split_rate(9000, &[Some(5000), None, None]),
            (vec![3000, 3000, 3000], 0)
        );
        // Caps that cascade: 100 is fixed first (equal share 3000), then 4000 falls below
        // the new equal share of the 8900 left (4450).
        assert_eq!(
            split_rate(9000, &[Some(100), Some(4000), None]),
            (vec![100, 4000, 4900], 0)
        );
    }

    #[test]
    fn caps_below_the_rate_leave_a_shortfall() {
        assert_eq!(
            split_rate(12000, &[Some(3000), Some(3000), Some(3000)]),
            (vec![3000, 3000, 3000], 3000)
        );
        assert_eq!(split_rate(5, &[]), (vec![], 5));
    }

    #[test]
    fn in_process_targets_are_one_system() {
        assert_eq!(
            split_spec("sim:servers=12,service_us=1000,queue=300", 3).unwrap(),
            "sim:servers=4,service_us=1000,queue=100"
        );
        let e = split_spec("sim:servers=4,service_us=1000", 3).unwrap_err();
        assert!(e.contains("servers=4 does not divide by 3 workers"), "{e}");
        let e = split_spec("sim:servers=2,service_us=1000", 4).unwrap_err();
        assert!(e.contains("does not divide"), "{e}");
        let e = split_spec("usl:service_us=100,sigma=0.1,kappa=0.01", 2).unwrap_err();
        assert!(e.contains("stress serve"), "{e}");
        assert!(split_spec("daemon:op=create", 2).is_err());
        assert_eq!(split_spec("noop", 3).unwrap(), "noop");
        assert_eq!(
            split_spec(" http://127.0.0.1:8080/x ", 3).unwrap(),
            "http://127.0.0.1:8080/x"
        );
    }
}
