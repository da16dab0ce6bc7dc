//! `telemetry::init` against a fake OTLP/HTTP collector on loopback.
//!
//! `init` installs a process-global subscriber and reads the environment, so every scenario
//! runs in a process of its own: each `#[test]` here re-runs this test binary with only the
//! ignored [`scenario`] test selected and the scenario's variables set in the child's
//! environment (never with `set_var` in a shared process). That holds under `cargo test`
//! (threads in one process) and under nextest (a process per test) alike. The fake collector
//! runs in the parent, which checks what it received; the child checks `init` and shutdown.
//! Every wait is bounded, and a child still running at its bound is killed.
#![cfg(not(loom))]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hub_leaf::telemetry::{self, TelemetryError};

/// The variable that selects the scenario in a child process.
const SCENARIO_VAR: &str = "HUB_LEAF_TELEMETRY_SCENARIO";
/// The bound on one child process, start to exit (generous: 2 shared cores).
const CHILD_BOUND: Duration = Duration::from_secs(60);
/// The bound on `Telemetry::shutdown` with a collector that is down.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
/// The service name the children pass to `init`.
const DEFAULT_SERVICE: &str = "herd-telemetry-test";

/// Variables that could leak in from the environment of whoever runs the tests.
const CLEARED_VARS: [&str; 9] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------
// The parent side: one test per scenario.

/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, `init` outside any runtime (as `herd` does), the span
/// emitted from a tokio task: one POST to `/v1/traces` carrying the span.
#[test]
fn exports_spans_over_otlp_http() {
    let collector = Collector::start();
    run_scenario(
        "export",
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.addr),
        )],
    );
    let request = collector.wait_for_request(b"commit");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    for needle in [
        &b"commit"[..],
        b"fork_retried",
        b"manifest_hash",
        DEFAULT_SERVICE.as_bytes(),
    ] {
        assert!(
            contains(&request.body, needle),
            "the export lacks {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// `init` inside a tokio runtime, shutdown inside it too; the traces-only endpoint variable
/// is used as is and `OTEL_SERVICE_NAME` wins over the default name.
#[test]
fn exports_from_inside_a_runtime_to_the_traces_endpoint() {
    let collector = Collector::start();
    run_scenario(
        "export_in_runtime",
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://{}/custom/traces", collector.addr),
            ),
            ("OTEL_SERVICE_NAME", "service-from-env".to_owned()),
        ],
    );
    let request = collector.wait_for_request(b"commit");
    assert_eq!(request.path, "/custom/traces");
    assert!(contains(&request.body, b"fork_retried"));
    assert!(contains(&request.body, b"service-from-env"));
    assert!(!contains(&request.body, DEFAULT_SERVICE.as_bytes()));
}

/// No endpoint: `init` succeeds, spans can be made, a second `init` is an error, not a
/// panic.
#[test]
fn without_endpoint_only_logs() {
    run_scenario("no_endpoint", &[]);
}

/// A malformed endpoint: the error names the variable and the value; nothing installed.
#[test]
fn invalid_endpoint_is_an_error_naming_the_value() {
    run_scenario(
        "invalid_endpoint",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "foo".to_owned())],
    );
}

/// The collector is down (a closed port): spans are lost, shutdown returns within its
/// bound, no panic.
#[test]
fn collector_down_does_not_hang_shutdown() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("local addr")
        // Dropped here: the port is closed (and unlikely to be reused within the test).
    };
    run_scenario(
        "collector_down",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    );
}

/// The collector accepts connections but never answers: the export times out, shutdown
/// still returns within its bound, no panic.
#[test]
fn silent_collector_does_not_hang_shutdown() {
    // Never accepted from: the kernel completes the handshakes and buffers the requests.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    run_scenario(
        "collector_down",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    );
    drop(listener);
}

/// Runs this test binary again with only [`scenario`] selected, `name` in [`SCENARIO_VAR`]
/// and `vars` set; fails unless it passed within [`CHILD_BOUND`].
fn run_scenario(name: &str, vars: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = Command::new(exe);
    command
        .args(["scenario", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(SCENARIO_VAR, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in CLEARED_VARS {
        command.env_remove(var);
    }
    for (var, value) in vars {
        command.env(var, value);
    }
    let mut child = command.spawn().expect("spawn the scenario process");
    // Drain both pipes on threads, so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > CHILD_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let report = format!("scenario {name}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!("still running after {CHILD_BOUND:?}, killed\n{report}");
    };
    assert!(status.success(), "failed: {status}\n{report}");
    // Guard against a filter that selected nothing (then libtest passes with 0 tests).
    assert!(
        stdout.contains("1 passed"),
        "the scenario test did not run\n{report}"
    );
    eprintln!("{report}");
}

// ---------------------------------------------------------------------------------------
// The child side.

/// The entry point of the scenario processes (ignored: run only by [`run_scenario`]).
#[test]
#[ignore = "run in a child process by the other tests"]
fn scenario() {
    let name = std::env::var(SCENARIO_VAR).expect("run by run_scenario, which sets the name");
    match name.as_str() {
        "export" => {
            let telemetry = telemetry::init(DEFAULT_SERVICE).expect("init");
            assert!(telemetry
                .traces_endpoint()
                .is_some_and(|e| e.ends_with("/v1/traces")));
            // Like `herd`: the runtime is made after `init`, the spans come from its tasks.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                tokio::spawn(async { emit_commit_span() })
                    .await
                    .expect("task");
            });
            drop(runtime);
            telemetry.shutdown().expect("shutdown");
        }
        "export_in_runtime" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let telemetry = telemetry::init(DEFAULT_SERVICE).expect("init");
                assert!(telemetry
                    .traces_endpoint()
                    .is_some_and(|e| e.ends_with("/custom/traces")));
                emit_commit_span();
                // Dropped (not `shutdown`) inside the runtime: must neither panic nor hang.
                drop(telemetry);
            });
        }
        "no_endpoint" => {
            let telemetry = telemetry::init(DEFAULT_SERVICE).expect("init");
            assert_eq!(telemetry.traces_endpoint(), None);
            emit_commit_span();
            match telemetry::init(DEFAULT_SERVICE) {
                Err(TelemetryError::AlreadyInitialised) => {}
                other => panic!("second init: expected AlreadyInitialised, got {other:?}"),
            }
            telemetry.shutdown().expect("shutdown");
        }
        "invalid_endpoint" => {
            let error = telemetry::init(DEFAULT_SERVICE).expect_err("init must refuse \"foo\"");
            let message = error.to_string();
            assert!(
                message.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && message.contains("\"foo\""),
                "{message}"
            );
            assert!(message.contains("expected http://"), "{message}");
            assert!(
                !tracing::dispatcher::has_been_set(),
                "a failed init installed a subscriber"
            );
        }
        "collector_down" => {
            let telemetry = telemetry::init(DEFAULT_SERVICE).expect("init");
            emit_commit_span();
            let started = Instant::now();
            // `Ok` or an error: either way it returns, in bounded time, without panicking.
            let result = telemetry.shutdown();
            let elapsed = started.elapsed();
            eprintln!("shutdown with the collector down: {result:?} after {elapsed:?}");
            assert!(
                elapsed < SHUTDOWN_BOUND,
                "shutdown took {elapsed:?}, bound {SHUTDOWN_BOUND:?}"
            );
        }
        other => panic!("unknown scenario {other:?}"),
    }
}

/// A span like the library's `commit` span.
fn emit_commit_span() {
    let span = tracing::info_span!(
        "commit",
        leaf = 3_u64,
        task = 17_u64,
        fork_retried = true,
        fork_retries = 1_u64,
        manifest_hash = "ab12",
        seq = 42_u64
    );
    let _entered = span.enter();
    tracing::info!("committed");
}

// ---------------------------------------------------------------------------------------
// The fake collector.

/// One HTTP request the collector received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A fake OTLP/HTTP collector: accepts HTTP/1.1 requests (keep-alive, content-length or
/// chunked bodies) on a loopback port, records them, answers `200 OK` with an empty protobuf
/// body. Its threads end with the test process.
struct Collector {
    addr: SocketAddr,
    requests: mpsc::Receiver<Request>,
}

/// The bound on waiting for an export to arrive.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// The bound on one read from a connection (a silent client is dropped).
const READ_BOUND: Duration = Duration::from_secs(10);
/// The most connections and requests per connection the collector serves.
const MAX_CONNECTIONS: usize = 64;
const MAX_REQUESTS_PER_CONNECTION: usize = 1024;
const MAX_BODY_BYTES: usize = 16 << 20;

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS) {
                let Ok(stream) = stream else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, &tx));
            }
        });
        Collector { addr, requests }
    }

    /// The first request whose body contains `needle`, waiting at most [`REQUEST_BOUND`].
    fn wait_for_request(&self, needle: &[u8]) -> Request {
        let until = Instant::now() + REQUEST_BOUND;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.requests.recv_timeout(left) {
                Ok(request) if contains(&request.body, needle) => return request,
                Ok(request) => seen.push((request.method, request.path, request.body.len())),
                Err(_) => panic!(
                    "no request containing {:?} within {REQUEST_BOUND:?}; saw {seen:?}",
                    String::from_utf8_lossy(needle)
                ),
            }
        }
    }
}

/// Serves one connection until the client closes it, errs, or stays silent too long.
fn serve(stream: TcpStream, tx: &mpsc::Sender<Request>) {
    let _ = stream.set_read_timeout(Some(READ_BOUND));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let _ = tx.send(request);
        let response =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(response.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at end of stream or on anything malformed.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut content_length = None;
    let mut chunked = false;
    let mut content_type = None;
    for _ in 0..256 {
        let line = read_line(reader)?;
        if line.is_empty() {
            let body = if chunked {
                read_chunked(reader)?
            } else {
                let len = content_length.unwrap_or(0);
                if len > MAX_BODY_BYTES {
                    return None;
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).ok()?;
                body
            };
            return Some(Request {
                method,
                path,
                content_type,
                body,
            });
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = Some(value.parse().ok()?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = Some(value.to_owned()),
            _ => {}
        }
    }
    None
}

/// A chunked body (`size CRLF data CRLF ... 0 CRLF CRLF`), bounded in size.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if body.len() + size > MAX_BODY_BYTES {
            return None;
        }
        if size == 0 {
            // Trailers, up to the empty line.
            for _ in 0..256 {
                if read_line(reader)?.is_empty() {
                    return Some(body);
                }
            }
            return None;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        if !read_line(reader)?.is_empty() {
            return None;
        }
    }
}

/// One CRLF-terminated line, without the terminator; `None` at end of stream, on error or
/// past 64 KiB.
fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    let n = reader.by_ref().take(64 << 10).read_line(&mut line).ok()?;
    if n == 0 || !line.ends_with('\n') {
        return None;
    }
    line.truncate(line.trim_end_matches(['\r', '\n']).len());
    Some(line)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
