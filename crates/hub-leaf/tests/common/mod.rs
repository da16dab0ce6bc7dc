//! What the NATS-backed test files share: a bound on every await, and starting a server.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hub_leaf::nats::NatsServer;

/// Every await of these tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no answer within {BOUND:?}"),
    }
}

/// Starts a `nats-server -js` with its store in `dir`, failing the test if it cannot.
pub async fn start(dir: &Path) -> NatsServer {
    match bounded("starting nats-server", NatsServer::start(dir)).await {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}
