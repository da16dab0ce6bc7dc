//! Tests of the `http://` / `h2c://` target and of the HTTP server of known capacity: spec
//! and option errors (each names what is wrong), status and failure classification, and
//! round trips against servers started here on loopback — an in-test hyper server that
//! answers 200/404/503, echoes and records what it got, and hangs on request, a raw socket
//! that closes mid-request, and `serve_http` in front of a `sim:` model. No verdict depends
//! on timing: the one timeout below only cancels a request that would otherwise hang forever.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use collector::sim::SimTarget;
use collector::target::Target;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use targets::http::{self, failure_kind, parse, status_kind, Failure, HttpTarget, Version};
use targets::{serve_http, TargetError, TargetOptions};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the in-test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    version: hyper::Version,
    header: Option<String>,
    body: String,
}

/// An in-test server: `/ok` 200, `/404` 404, `/503` 503, `/echo` 200 with the body it got,
/// `/hang-once` hangs its first request until `release` is notified (then answers 503) and
/// answers 200 afterwards. Every request is recorded.
struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    count: Arc<AtomicU64>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let version = req.version();
    let header = req
        .headers()
        .get("x-test")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        version,
        header,
        body: body.clone(),
    });
    let (status, text) = match path.as_str() {
        "/ok" => (StatusCode::OK, "ok".to_string()),
        "/404" => (StatusCode::NOT_FOUND, "no".into()),
        "/503" => (StatusCode::SERVICE_UNAVAILABLE, "busy".into()),
        "/echo" => (StatusCode::OK, body),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (StatusCode::OK, "slow".into())
        }
        "/hang-once" if count.fetch_add(1, Ordering::SeqCst) == 0 => {
            release.notified().await;
            (StatusCode::SERVICE_UNAVAILABLE, "late".into())
        }
        "/hang-once" => (StatusCode::OK, "second".into()),
        _ => (StatusCode::BAD_REQUEST, "unknown path".into()),
    };
    let mut res = Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res
}

async fn test_server() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let count = Arc::new(AtomicU64::new(0));
    let (s, r) = (seen.clone(), release.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, r, c) = (s.clone(), r.clone(), count.clone());
            let svc = service_fn(move |req| {
                let (s, r, c) = (s.clone(), r.clone(), c.clone());
                async move { Ok::<_, Infallible>(respond(req, s, r, c).await) }
            });
            conns.spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TestServer {
        addr,
        seen,
        release,
        task,
    }
}

/// Waits (at most 200 polls) until nothing accepts on `addr` any more: an aborted task
/// drops its listener when the runtime next gets to it.
async fn wait_closed(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{addr} still accepts connections");
}

fn opts() -> TargetOptions {
    TargetOptions::default()
}

async fn open(url: &str, o: &TargetOptions) -> HttpTarget {
    match HttpTarget::open(url, o).await {
        Ok(t) => t,
        Err(e) => panic!("open {url}: {e}"),
    }
}

async fn open_err(url: &str, o: &TargetOptions) -> String {
    match HttpTarget::open(url, o).await {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn specs_parse_and_bad_ones_are_named() {
    let s = parse("http://127.0.0.1:8080/a/b?x=1").unwrap();
    assert_eq!(s.version, Version::Http1);
    assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8080));
    assert_eq!(s.path_and_query, "/a/b?x=1");
    let s = parse("h2c://localhost:9/").unwrap();
    assert_eq!(s.version, Version::H2c);
    assert_eq!(
        parse("http://example.test").unwrap().port,
        http::DEFAULT_PORT
    );
    assert_eq!(parse("http://h:1?q=2").unwrap().path_and_query, "/?q=2");
    assert_eq!(parse("http://[::1]:8/").unwrap().host, "[::1]");

    let cases: [(&str, &str); 11] = [
        ("", "expected http://HOST:PORT/PATH"),
        ("http://", "empty host"),
        ("http://:80/", "empty host"),
        (
            "http://h:abc/",
            "port \"abc\": expected a number from 1 to 65535",
        ),
        ("http://h:0/", "port \"0\""),
        ("http://h:65536/", "port \"65536\""),
        ("http://h:/", "port \"\""),
        ("https://h:443/", "https is not supported"),
        ("ftp://h/", "expected http://HOST:PORT/PATH or h2c://"),
        ("http://h o/", "without spaces"),
        ("http://u:p@h:1/", "credentials"),
    ];
    for (spec, want) in cases {
        let e = parse(spec).unwrap_err().to_string();
        assert!(e.contains(&format!("{spec:?}")), "{spec}: {e}");
        assert!(e.contains(want), "{spec}: {e}");
    }
    for spec in [
        "http://h#frag",
        "http://[::1/",
        "http://h!x:1/",
        "http://[zz]:1/",
    ] {
        let e = parse(spec).unwrap_err().to_string();
        assert!(e.contains(&format!("{spec:?}")), "{spec}: {e}");
    }
}

#[test]
fn statuses_and_failures_are_classified() {
    for (s, k) in [
        (200, None),
        (204, None),
        (302, None),
        (399, None),
        (400, Some("http_4xx")),
        (404, Some("http_4xx")),
        (500, Some("http_5xx")),
        (503, Some("http_5xx")),
        (101, Some("http_status")),
        (600, Some("http_status")),
    ] {
        assert_eq!(status_kind(s), k, "{s}");
    }
    use std::io::ErrorKind as K;
    let io = |k| Failure {
        io: Some(k),
        ..Failure::default()
    };
    assert_eq!(failure_kind(&io(K::ConnectionReset)), "reset");
    assert_eq!(failure_kind(&io(K::BrokenPipe)), "reset");
    assert_eq!(failure_kind(&io(K::UnexpectedEof)), "reset");
    assert_eq!(failure_kind(&io(K::ConnectionRefused)), "connect");
    assert_eq!(failure_kind(&io(K::TimedOut)), "timeout");
    let closed = Failure {
        closed: true,
        ..Failure::default()
    };
    assert_eq!(failure_kind(&closed), "reset");
    let parse_err = Failure {
        parse: true,
        ..Failure::default()
    };
    assert_eq!(failure_kind(&parse_err), "protocol");
    assert_eq!(failure_kind(&Failure::default()), "protocol");
}

#[tokio::test]
async fn bad_methods_and_headers_are_refused_by_name() {
    let url = "http://127.0.0.1:1/";
    let o = TargetOptions {
        method: Some("GE T".into()),
        ..opts()
    };
    let e = open_err(url, &o).await;
    assert!(e.contains("method \"GE T\"") && e.contains(url), "{e}");
    let bad_headers: [(&str, &str, &str); 4] = [
        ("Bad Header", "v", "header name \"Bad Header\""),
        ("X-Ok", "line\nbreak", "value \"line\\nbreak\""),
        ("Content-Length", "3", "set from the body"),
        ("", "v", "header name \"\""),
    ];
    for (name, value, want) in bad_headers {
        let o = TargetOptions {
            headers: vec![(name.into(), value.into())],
            ..opts()
        };
        let e = open_err(url, &o).await;
        assert!(e.contains(want) && e.contains(url), "{name}: {e}");
    }
    let o = TargetOptions {
        headers: vec![("Connection".into(), "close".into())],
        ..opts()
    };
    let e = open_err("h2c://127.0.0.1:1/", &o).await;
    assert!(e.contains("HTTP/2 forbids"), "{e}");
    let o = TargetOptions {
        body: Some("{sequ}".into()),
        ..opts()
    };
    let e = open_err(url, &o).await;
    assert!(e.contains("body") && e.contains("sequ"), "{e}");
    let o = TargetOptions {
        framing: Some(targets::Framing::Line),
        ..opts()
    };
    let e = open_err(url, &o).await;
    assert!(e.contains("option framing"), "{e}");
}

#[tokio::test]
async fn a_closed_port_fails_at_open_naming_the_url_and_later_as_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/ok");
    match HttpTarget::open(&url, &opts()).await {
        Err(TargetError::Setup { spec, message }) => {
            assert_eq!(spec, url);
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        }
        Err(e) => panic!("expected a setup error, got {e}"),
        Ok(_) => panic!("opened a closed port"),
    }

    // Open against a live server, then stop it: the pool's connection is closed, so the
    // call must dial afresh and fail as `connect`.
    let server = test_server().await;
    let url = format!("http://{}/ok", server.addr);
    let o = TargetOptions { conns: 2, ..opts() };
    let t = open(&url, &o).await;
    let addr = server.addr;
    drop(server);
    wait_closed(addr).await;
    let e = t.call(0, 1).await.unwrap_err();
    assert_eq!(e.kind, "connect", "{e}");
    assert!(e.message.contains(&url), "{e}");
}

#[tokio::test]
async fn concurrent_requests_open_at_most_conns_connections_and_share_them() {
    let server = test_server().await;
    let url = format!("http://{}/slow", server.addr);
    let t = open(&url, &TargetOptions { conns: 3, ..opts() }).await;
    // Twelve at once over three connections: each takes a free one or waits for one.
    let calls = (0..12).map(|seq| t.call(0, seq));
    for r in futures::future::join_all(calls).await {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(
        t.connects(),
        3,
        "three connections, no more, all of them used"
    );
    assert_eq!(server.seen.lock().unwrap().len(), 12);
}

#[tokio::test]
async fn statuses_of_a_real_server_become_kinds() {
    let server = test_server().await;
    for (path, want) in [
        ("/ok", None),
        ("/404", Some("http_4xx")),
        ("/503", Some("http_5xx")),
    ] {
        let url = format!("http://{}{path}", server.addr);
        let t = open(&url, &TargetOptions { conns: 2, ..opts() }).await;
        assert_eq!(t.actions(), vec!["GET".to_string()]);
        for seq in 0..4 {
            let r = t.call(0, seq).await;
            assert_eq!(
                r.as_ref().err().map(|e| e.kind.as_ref()),
                want,
                "{path} {r:?}"
            );
            if let Err(e) = r {
                assert!(e.message.contains(&url), "{e}");
            }
        }
        // Keep-alive: four requests one after another reuse the one idle connection.
        assert_eq!(t.connects(), 1, "{path}");
    }
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 12);
    assert!(seen
        .iter()
        .all(|s| s.method == "GET" && s.version == hyper::Version::HTTP_11));
}

#[tokio::test]
async fn a_connection_closed_mid_request_is_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Bounded: the test makes a handful of connections.
        for _ in 0..8 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // Read the request head, then close without answering.
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    let t = open(&format!("http://{addr}/"), &opts()).await;
    let e = t.call(0, 0).await.unwrap_err();
    assert_eq!(e.kind, "reset", "{e}");
    task.abort();
}

#[tokio::test]
async fn h2c_multiplexes_on_its_connections() {
    let server = test_server().await;
    let url = format!("h2c://{}/echo", server.addr);
    let o = TargetOptions {
        conns: 2,
        body: Some("h2 {seq}".into()),
        ..opts()
    };
    let t = Arc::new(open(&url, &o).await);
    let calls: Vec<_> = (0..8u64)
        .map(|seq| {
            let t = t.clone();
            tokio::spawn(async move { t.call(0, seq).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(t.connects(), 2);
    assert_eq!(t.actions(), vec!["POST".to_string()]);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 8);
    assert!(seen
        .iter()
        .all(|s| s.version == hyper::Version::HTTP_2 && s.path == "/echo"));
    let mut bodies: Vec<String> = seen.iter().map(|s| s.body.clone()).collect();
    bodies.sort();
    let want: Vec<String> = (0..8).map(|i| format!("h2 {i}")).collect();
    assert_eq!(bodies, want);
}

#[tokio::test]
async fn bodies_are_rendered_per_seq_with_method_and_headers() {
    let server = test_server().await;
    let url = format!("http://{}/echo", server.addr);
    let o = TargetOptions {
        method: Some("put".into()),
        headers: vec![("X-Test".into(), "v1".into())],
        body: Some("{\"id\": {seq}, \"r\": {rand}}".into()),
        seed: 7,
        conns: 1,
        ..opts()
    };
    let t = open(&url, &o).await;
    assert_eq!(t.actions(), vec!["PUT".to_string()]);
    for seq in [5, 6, 5] {
        t.call(0, seq).await.unwrap();
    }
    let seen = server.seen.lock().unwrap();
    let tpl = targets::template::Template::parse("{\"id\": {seq}, \"r\": {rand}}", 7).unwrap();
    let want: Vec<String> = [5, 6, 5]
        .iter()
        .map(|s| String::from_utf8(tpl.render(*s)).unwrap())
        .collect();
    let got: Vec<String> = seen.iter().map(|s| s.body.clone()).collect();
    assert_eq!(got, want);
    assert!(got[0].starts_with("{\"id\": 5, \"r\": ") && got[0] != got[1]);
    assert_eq!(got[0], got[2], "the same seed and seq render the same body");
    assert!(seen
        .iter()
        .all(|s| s.method == "PUT" && s.header.as_deref() == Some("v1")));
}

#[tokio::test]
async fn a_cancelled_request_never_poisons_the_next_one() {
    let server = test_server().await;
    let url = format!("http://{}/hang-once", server.addr);
    let t = open(&url, &TargetOptions { conns: 1, ..opts() }).await;
    // The first request hangs until released: cancel it as the generator's timeout would.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), t.call(0, 0)).await;
    assert!(cancelled.is_err(), "the hanging request answered");
    // Its late answer (503) must never be read as the answer to the next request.
    server.release.notify_one();
    t.call(0, 1).await.unwrap();
    assert_eq!(
        t.connects(),
        2,
        "the cancelled call's connection was not replaced"
    );
}

#[tokio::test]
async fn serve_http_gives_a_sim_model_over_http() {
    let sim: Arc<dyn Target> = Arc::new(SimTarget::new(4, 100, None).unwrap());
    let server = serve_http::start(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();
    for url in [format!("http://{addr}/any/path"), format!("h2c://{addr}/")] {
        let t = open(&url, &TargetOptions { conns: 2, ..opts() }).await;
        for seq in 0..10 {
            t.call(0, seq).await.unwrap();
        }
    }
    assert_eq!(server.served(), 20);
    server.shutdown().await;

    // queue=0 refuses every arrival: each request is a 503 carrying the model's message.
    let full: Arc<dyn Target> = Arc::new(SimTarget::new(1, 1000, Some(0)).unwrap());
    let server = serve_http::start(full, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/", server.local_addr());
    let t = open(&url, &opts()).await;
    for seq in 0..3 {
        let e = t.call(0, seq).await.unwrap_err();
        assert_eq!(e.kind, "http_5xx", "{e}");
        assert!(e.message.contains("503"), "{e}");
    }
    assert_eq!(server.served(), 3);
    let addr = server.local_addr();
    drop(server);
    // Dropped: nothing listens any more.
    wait_closed(addr).await;
    let o = TargetOptions { conns: 1, ..opts() };
    let e = open_err(&format!("http://{addr}/"), &o).await;
    assert!(e.contains(&addr.to_string()), "{e}");
}
