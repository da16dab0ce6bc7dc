//! `stress serve SPEC --http ADDR` / `--nats URL --subject S`: a server of exactly known
//! capacity. It serves a collector model (`sim:`, `usl:` or `noop`) over HTTP
//! ([`targets::serve_http`]) or NATS request-reply ([`targets::serve_nats`]): each request is
//! one operation of the model, answered when the model's queue says it completes. Point the
//! finder at it through the `http://` or `nats://` target and the answer must come out at
//! the model's capacity (suite `maxrps-serve` checks 90–102%), so the whole path — client,
//! pool, network, finder — is checked end to end.
//!
//! The first line on stdout names the address served (`serving SPEC on http://ADDR/`), so
//! a parent that asked for port 0 learns the port. It serves until `--for` passes, or
//! until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use collector::shape::parse_duration;

/// Flags of `stress serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The model to serve: `sim:servers=K,service_us=S[,queue=Q]`,
    /// `usl:service_us=S,sigma=X,kappa=Y` or `noop`.
    pub spec: String,
    /// Serve HTTP/1.1 and h2c on this address (port 0: a free one).
    #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
    pub http: Option<SocketAddr>,
    /// Serve NATS request-reply through this server, e.g. `nats://127.0.0.1:4222`.
    #[arg(long, requires = "subject")]
    pub nats: Option<String>,
    /// The subject to answer on (with `--nats`).
    #[arg(long, requires = "nats")]
    pub subject: Option<String>,
    /// Stop after this long, e.g. `60s` (default: until SIGINT or SIGTERM).
    #[arg(long = "for", allow_hyphen_values = true)]
    pub duration: Option<String>,
}

/// The line `stress serve` prints first, for `addr` (what a parent reads).
pub fn banner(spec: &str, where_: &str) -> String {
    format!("serving {spec} on {where_}")
}

/// Runs the server until `--for` passes or a signal arrives.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let kind_ok = ["sim:", "usl:", "noop"]
        .iter()
        .any(|p| args.spec.trim_start().starts_with(p));
    if !kind_ok {
        bail!(
            "invalid model {:?}: stress serve serves a model of known capacity: sim:servers=K,service_us=S[,queue=Q], usl:service_us=S,sigma=X,kappa=Y or noop",
            args.spec
        );
    }
    let model = collector::target::from_spec(&args.spec)?;
    let limit = match &args.duration {
        Some(text) => Some(parse_duration("for", text, false)?),
        None => None,
    };
    let rt = crate::harness::runtime()?;
    rt.block_on(async {
        if let Some(addr) = args.http {
            let server = targets::serve_http::start(model, addr)
                .await
                .with_context(|| format!("binding {addr} for HTTP"))?;
            say(&banner(
                &args.spec,
                &format!("http://{}/", server.local_addr()),
            ))?;
            wait(limit).await;
            let served = server.served();
            server.shutdown().await;
            println!("served {served} requests");
        } else if let (Some(url), Some(subject)) = (&args.nats, &args.subject) {
            let server = targets::serve_nats::start(model, url, subject).await?;
            say(&banner(&args.spec, &format!("{url} subject {subject}")))?;
            wait(limit).await;
            server.shutdown().await;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Until `limit` passes, or SIGINT/SIGTERM.
async fn wait(limit: Option<Duration>) {
    let signals = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    match limit {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = signals => {}
            }
        }
        None => signals.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_models_are_served() {
        let args = ServeArgs {
            spec: "http://127.0.0.1:1/".into(),
            http: Some("127.0.0.1:0".parse().unwrap()),
            nats: None,
            subject: None,
            duration: Some("1s".into()),
        };
        let e = serve(&args).unwrap_err().to_string();
        assert!(e.contains("http://127.0.0.1:1/"), "{e}");
        let bad = ServeArgs {
            spec: "sim:servers=0".into(),
            ..args
        };
        assert!(serve(&bad).is_err());
    }
}
