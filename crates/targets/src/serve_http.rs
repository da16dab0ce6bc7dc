//! A server of known capacity over HTTP: every request, on any path, over HTTP/1.1 or
//! HTTP/2 with prior knowledge (hyper-util's auto server tells them apart by the preface),
//! is one operation `target.call(target.pick(seq), seq)` of a collector [`Target`], with
//! `seq` from a counter. `stress serve sim:servers=4,service_us=1000 --http ADDR` puts a
//! `sim:` model behind it, so that finder → [`crate::http`] target → network → this server
//! → the model has exactly the model's capacity, and the whole path can be checked against
//! it.
//!
//! Answers: `200 ok` when the operation succeeded, `503` with the error's message when it
//! failed as `overload` (a full `queue=`), `500` with the kind and message otherwise. A
//! request body is read and discarded (at most [`MAX_REQUEST_BODY_BYTES`], else `413`).
//!
//! Lifecycle: [`start`] binds and spawns an accept loop; every connection is a task of a
//! `JoinSet` owned by that loop. [`HttpServe::shutdown`] stops accepting, asks every
//! connection to finish its in-flight requests and close (hyper's graceful shutdown), waits
//! at most [`DRAIN_BOUND`] for them, then aborts whatever is left. Dropping an
//! [`HttpServe`] aborts the loop, which drops (and so aborts) every connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use collector::target::{Target, KIND_OVERLOAD};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest [`HttpServe::shutdown`] waits for in-flight requests before it cuts them.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);
/// The largest request body read (and discarded); a larger one is answered `413`.
pub const MAX_REQUEST_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// The most connections served at once; past it new connections are closed at once.
pub const MAX_CONNECTIONS: usize = 16_384;

/// A running server. See the module doc.
pub struct HttpServe {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    served: Arc<AtomicU64>,
}

/// Starts serving `target` on `addr` (port 0 picks a free one: see
/// [`HttpServe::local_addr`]). Must be called on a tokio runtime with I/O and time.
pub async fn start(target: Arc<dyn Target>, addr: SocketAddr) -> std::io::Result<HttpServe> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let served = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(accept_loop(listener, target, stopped, served.clone()));
    Ok(HttpServe {
        addr,
        stop,
        task: Some(task),
        served,
    })
}

impl HttpServe {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far (every answer: 200, 503, 500, 413).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets in-flight requests finish for at most [`DRAIN_BOUND`], then
    /// closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            // The loop itself waits at most DRAIN_BOUND; the margin covers its wake-up.
            crate::join_or_abort(task, DRAIN_BOUND + Duration::from_secs(1)).await;
        }
    }
}

impl Drop for HttpServe {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<dyn Target>,
    mut stopped: watch::Receiver<bool>,
    served: Arc<AtomicU64>,
) {
    let seq = Arc::new(AtomicU64::new(0));
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set holds only live ones.
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors or similar: back off a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if conns.len() >= MAX_CONNECTIONS {
                    continue; // dropped: closed at once
                }
                let _ = stream.set_nodelay(true);
                let (t, s, d) = (target.clone(), seq.clone(), served.clone());
                conns.spawn(serve_connection(TokioIo::new(stream), t, s, d, stopped.clone()));
            }
        }
    }
    drop(listener);
    // Bounded: past DRAIN_BOUND the set is dropped, which aborts what is left.
    let _ = tokio::time::timeout(DRAIN_BOUND, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn serve_connection(
    io: TokioIo<tokio::net::TcpStream>,
    target: Arc<dyn Target>,
    seq: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let (t, s, d) = (target.clone(), seq.clone(), served.clone());
        async move {
            let res = answer(t.as_ref(), &s, req).await;
            d.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Infallible>(res)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// One request: read its body, run one operation, answer by its outcome.
async fn answer(
    target: &dyn Target,
    seq: &AtomicU64,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut body = req.into_body();
    let mut read = 0u64;
    // Bounded: past MAX_REQUEST_BODY_BYTES the loop ends.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read".into(),
            );
        };
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > MAX_REQUEST_BODY_BYTES {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_REQUEST_BODY_BYTES} bytes"),
            );
        }
    }
    let n = seq.fetch_add(1, Ordering::Relaxed);
    match target.call(target.pick(n), n).await {
        Ok(()) => text(StatusCode::OK, "ok".into()),
        Err(e) if e.kind == KIND_OVERLOAD => text(StatusCode::SERVICE_UNAVAILABLE, e.message),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
