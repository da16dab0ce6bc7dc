//! Tracing setup for the `herd` binary: a `tracing` subscriber, with the spans exported over
//! OTLP when a collector is configured.
//!
//! The library emits `tracing` spans (`commit`, `push`, `pull`, `broadcast`, with their
//! fields as attributes); [`init`] decides where they go, from the environment:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (like `http://127.0.0.1:4318`), or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as is; it wins when both are
//!   set): set and non-empty, spans are exported over **OTLP/HTTP protobuf** to
//!   `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces` (as the OTel spec says for the generic
//!   variable) by a batch span processor. `RUST_LOG` (default `info`) filters what is
//!   recorded; on stderr a compact log shows `warn` and above only, so stdout stays the
//!   trial's summary.
//! - Neither set: nothing is exported and nothing touches the network; a compact log on
//!   stderr shows what `RUST_LOG` (default `warn`) lets through.
//! - `OTEL_SERVICE_NAME`: the `service.name` resource attribute; the caller's default when
//!   unset or empty. `OTEL_RESOURCE_ATTRIBUTES` is honoured too.
//! - `OTEL_EXPORTER_OTLP_TIMEOUT` / `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` (milliseconds): the
//!   bound on one export, retries included; [`EXPORT_TIMEOUT`] when unset.
//! - `OTEL_BSP_*`: the batch processor's queue size, batch size and delay; the SDK's
//!   defaults (queue 2048, batch 512, every 5 s) when unset.
//!
//! The protocol is always `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL` is ignored: this
//! build has neither gRPC nor JSON), over plain `http://` only (no TLS in this build; an
//! `https://` endpoint is refused by [`init`] rather than failing every export).
//!
//! # Threads
//!
//! The exporter needs no async runtime, so [`init`] works inside or outside tokio. The SDK's
//! batch processor runs on its own OS thread and exports with a *blocking* `reqwest` client,
//! which runs its own small tokio runtime on a thread of its own (built on a scratch thread,
//! so building it inside a runtime does not panic).
//!
//! # Shutdown and a missing collector
//!
//! [`init`] returns a [`Telemetry`] guard: hold it until the end of `main`. Dropping it (or
//! [`Telemetry::shutdown`]) flushes the spans still queued and shuts the exporter down,
//! waiting at most [`SHUTDOWN_TIMEOUT`]. An unreachable collector costs at most one export
//! timeout per batch, on the processor's thread, and a warning on stderr per failed batch;
//! spans are then lost, the program goes on.
//!
//! The subscriber is process-global: [`init`] succeeds once per process. A second call, or a
//! call after anything else set a global subscriber, returns
//! [`TelemetryError::AlreadyInitialised`] and changes nothing. Records of the `log` crate are
//! not bridged into `tracing`.

// Left out under `--cfg loom` (the loom models cover the coalescer only), with its
// OpenTelemetry dependencies.
#![cfg(not(loom))]

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

/// The generic OTLP endpoint variable: base URL, `/v1/traces` is appended for traces.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The traces-only OTLP endpoint variable: full URL, used as is; wins over [`ENDPOINT_VAR`].
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The service name variable; [`init`]'s argument is the default.
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// The filter variable (`tracing_subscriber::EnvFilter` directives).
pub const FILTER_VAR: &str = "RUST_LOG";

/// The bound on one export (all its retries included) unless `OTEL_EXPORTER_OTLP_TIMEOUT`
/// or `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` says otherwise. Shorter than the SDK's 10 s: the
/// collector is expected on loopback.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest [`Telemetry::shutdown`] (or dropping the guard) waits for the last spans to
/// be flushed; after it, they are abandoned.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

const TIMEOUT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
const TRACER_NAME: &str = "hub-leaf";

/// Why [`init`] or [`Telemetry::shutdown`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// An endpoint variable holds something that is not an `http://host[:port][/path]` URL.
    #[error(
        "{var} = {value:?} is not a URL: expected http://host:port, like http://127.0.0.1:4318"
    )]
    InvalidEndpoint {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// An endpoint variable holds an `https://` URL, which this build cannot reach.
    #[error("{var} = {value:?} is an https URL: this build has no TLS, expected http://host:port")]
    HttpsUnsupported {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A variable's value is not valid Unicode.
    #[error("{var} is not valid Unicode: expected a UTF-8 value")]
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// `RUST_LOG` does not parse as filter directives.
    #[error("{var} = {value:?} is not a valid filter: {source}; expected directives like `info` or `hub_leaf=debug,warn`")]
    InvalidFilter {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("building the OTLP span exporter for {endpoint}: {source}")]
    Exporter {
        /// The traces URL it was built for.
        endpoint: String,
        /// The exporter's complaint.
        #[source]
        source: ExporterBuildError,
    },
    /// A global `tracing` subscriber was already set (by an earlier [`init`] or anyone
    /// else). Nothing was changed; the existing subscriber stays.
    #[error("a global tracing subscriber is already set: telemetry::init must be called at most once per process, before anything else sets one")]
    AlreadyInitialised,
    /// Shutting the tracer provider down failed or timed out; the spans not yet exported are
    /// lost.
    #[error("shutting down span export to {endpoint}: {source}")]
    Shutdown {
        /// The traces URL.
        endpoint: String,
        /// The SDK's complaint.
        #[source]
        source: OTelSdkError,
    },
}

/// The guard [`init`] returns: hold it until the end of the program.
///
/// Dropping it, or [`Telemetry::shutdown`], flushes the queued spans to the collector (if
/// exporting) and shuts the exporter down, waiting at most [`SHUTDOWN_TIMEOUT`]. Spans
/// created afterwards are dropped. The global subscriber itself stays installed (its
/// stderr log keeps working).
#[must_use = "dropping the guard shuts span export down: hold it until the end of main"]
pub struct Telemetry {
    export: Option<Export>,
}

struct Export {
    provider: SdkTracerProvider,
    traces_endpoint: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces_endpoint", &self.traces_endpoint())
            .finish()
    }
}

impl Telemetry {
    /// The URL spans are POSTed to, or `None` when nothing is exported.
    pub fn traces_endpoint(&self) -> Option<&str> {
        self.export.as_ref().map(|e| e.traces_endpoint.as_str())
    }

    /// Flushes the queued spans and shuts the exporter down, waiting at most
    /// [`SHUTDOWN_TIMEOUT`]. `Ok` when nothing was exported. A flush that reached no
    /// collector is not an error here (the exporter warns on stderr); a flush that did not
    /// finish in time is.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_export()
    }

    fn shutdown_export(&mut self) -> Result<(), TelemetryError> {
        let Some(export) = self.export.take() else {
            return Ok(());
        };
        export
            .provider
            .shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            .map_err(|source| TelemetryError::Shutdown {
                endpoint: export.traces_endpoint,
                source,
            })
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown_export() {
            tracing::warn!("{error}");
        }
    }
}

/// Installs the global `tracing` subscriber described in the [module docs](self): OTLP/HTTP
/// export of spans when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set and
/// non-empty, else a stderr log only. `default_service_name` is the `service.name` unless
/// `OTEL_SERVICE_NAME` is set.
///
/// Call it once, early, inside or outside a tokio runtime; hold the returned guard until the
/// end. Errors: a malformed endpoint or `RUST_LOG`, an exporter that cannot be built, or a
/// global subscriber already set ([`TelemetryError::AlreadyInitialised`], in which case
/// nothing changes). Nothing connects to the collector here: the first export happens on the
/// batch processor's thread.
pub fn init(default_service_name: &str) -> Result<Telemetry, TelemetryError> {
    if tracing::dispatcher::has_been_set() {
        return Err(TelemetryError::AlreadyInitialised);
    }
    let Some(traces_endpoint) = traces_endpoint()? else {
        let subscriber = tracing_subscriber::registry()
            .with(stderr_layer().with_filter(env_filter(LevelFilter::WARN)?));
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| TelemetryError::AlreadyInitialised)?;
        return Ok(Telemetry { export: None });
    };

    let filter = env_filter(LevelFilter::INFO)?;
    let service_name = match env_var(SERVICE_NAME_VAR)? {
        Some(name) => name,
        None => default_service_name.to_owned(),
    };
    // Endpoint, headers and timeout come from the environment (the crate reads the
    // variables itself, per the spec); only the protocol and a default timeout are ours.
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if TIMEOUT_VARS
        .iter()
        .all(|var| std::env::var_os(var).is_none_or(|v| v.is_empty()))
    {
        builder = builder.with_timeout(EXPORT_TIMEOUT);
    }
    let exporter = builder.build().map_err(|source| TelemetryError::Exporter {
        endpoint: traces_endpoint.clone(),
        source,
    })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let telemetry = Telemetry {
        export: Some(Export {
            provider: provider.clone(),
            traces_endpoint,
        }),
    };
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME));
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(stderr_layer().with_filter(LevelFilter::WARN));
    // On error the guard drops here and shuts the unused provider down (no spans, no
    // network).
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(telemetry)
}

/// The compact log on stderr (generic: each subscriber in [`init`] gives it another type).
fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt::layer()
        .compact()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
}

/// The traces URL the exporter will use, `None` when neither endpoint variable is set;
/// checks each set variable is an `http://` URL.
fn traces_endpoint() -> Result<Option<String>, TelemetryError> {
    if let Some(url) = env_var(TRACES_ENDPOINT_VAR)? {
        check_endpoint(TRACES_ENDPOINT_VAR, &url)?;
        // Checked too (if set), though unused: a typo there is worth knowing about.
        if let Some(base) = env_var(ENDPOINT_VAR)? {
            check_endpoint(ENDPOINT_VAR, &base)?;
        }
        return Ok(Some(url));
    }
    let Some(base) = env_var(ENDPOINT_VAR)? else {
        return Ok(None);
    };
    check_endpoint(ENDPOINT_VAR, &base)?;
    // What the exporter does: append the signal's path, without doubling a slash.
    let url = format!("{}/v1/traces", base.strip_suffix('/').unwrap_or(&base));
    Ok(Some(url))
}

/// A variable's value, `None` when unset or empty.
fn env_var(var: &'static str) -> Result<Option<String>, TelemetryError> {
    match std::env::var(var) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(TelemetryError::NotUnicode { var }),
    }
}

/// Checks `value` is `http://host[:port][/path]`: a scheme the exporter can use, a
/// non-empty host, a numeric port, no whitespace.
fn check_endpoint(var: &'static str, value: &str) -> Result<(), TelemetryError> {
    let invalid = || TelemetryError::InvalidEndpoint {
        var,
        value: value.to_owned(),
    };
    let scheme_end = value.find("://").ok_or_else(invalid)?;
    let scheme = &value[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(TelemetryError::HttpsUnsupported {
            var,
            value: value.to_owned(),
        });
    }
    if !scheme.eq_ignore_ascii_case("http") || value.chars().any(|c| c.is_whitespace()) {
        return Err(invalid());
    }
    let rest = &value[scheme_end + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 literal: `[::1]:4318`.
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
            }
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if host.is_empty() || !port_ok {
        return Err(invalid());
    }
    Ok(())
}

/// The `RUST_LOG` filter, `default` when unset or empty.
fn env_filter(default: LevelFilter) -> Result<EnvFilter, TelemetryError> {
    let value = env_var(FILTER_VAR)?.unwrap_or_default();
    EnvFilter::builder()
        .with_default_directive(default.into())
        .parse(&value)
        .map_err(|source| TelemetryError::InvalidFilter {
            var: FILTER_VAR,
            value,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accepted_and_refused() {
        for ok in [
            "http://127.0.0.1:4318",
            "http://localhost:4318/",
            "HTTP://collector",
            "http://[::1]:4318/otlp",
            "http://user@host:1",
        ] {
            assert!(check_endpoint(ENDPOINT_VAR, ok).is_ok(), "{ok}");
        }
        for bad in [
            "foo",
            "127.0.0.1:4318",
            "localhost:4318",
            "http://",
            "http://:4318",
            "http://host:port",
            "http://host:99999",
            "http://[::1",
            "http://ho st:1",
            "grpc://host:4317",
        ] {
            let error = check_endpoint(ENDPOINT_VAR, bad).unwrap_err();
            assert!(
                matches!(error, TelemetryError::InvalidEndpoint { .. }),
                "{bad}: {error}"
            );
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        assert!(matches!(
            check_endpoint(ENDPOINT_VAR, "https://collector:4318"),
            Err(TelemetryError::HttpsUnsupported { .. })
        ));
    }
}
