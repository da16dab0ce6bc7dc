//! The JetStream target: `jetstream://HOST:PORT/STREAM/SUBJECT`. One operation publishes one
//! message on SUBJECT and awaits its PubAck (E1 = publish→ack), and, with a durable
//! consumer ([`TargetOptions::consumer`]), also awaits that message's delivery to the
//! consumer (E2 = publish→delivery), as seed 001's messages workload measures them.
//!
//! **Spec.** HOST and PORT as [`crate::nats`] (default port 4222); STREAM a JetStream name
//! (no whitespace, `.`, `*`, `>`, `/`); SUBJECT a publish subject (no wildcards). The
//! payload is [`TargetOptions::body`] as a template, or [`DEFAULT_PAYLOAD`]; headers go
//! as NATS headers.
//!
//! **Stream.** [`JetStreamTarget::open`] connects (bounded) and creates STREAM when it does
//! not exist: subjects `[SUBJECT]`, file storage, limits retention bounded by
//! [`STREAM_MAX_BYTES`] and [`STREAM_MAX_MSGS`] with discard-old, so a long run cannot fill
//! the disk. An existing stream must cover SUBJECT (an exact or wildcard match), else the
//! error names both.
//!
//! **E1 and E2 as one operation.** Without a consumer, the only action is `ack`. With one,
//! the actions are `["deliver", "ack"]`: the operation is `deliver` (its latency is
//! publish→delivery) and `ack` is a *mark* ([`Target::mark_actions`] `== [1]`): the instant
//! the PubAck came back, recorded as a second latency of the same operation. So every
//! operation counts once in totals and both latencies are reported per step.
//!
//! **Correlation.** Each operation gets a target-unique id, sent as header [`OP_HEADER`].
//! It registers a waiter under that id *before* publishing (so a delivery that overtakes
//! the PubAck is not missed); the consumer task wakes it with the delivery instant. A
//! guard removes the waiter when the operation ends or is cancelled by the generator's
//! timeout, so the map holds only operations in flight (and at most [`MAX_WAITING`]). A
//! message that no operation waits for (its operation timed out, or it was redelivered) is
//! acked and counted ([`DeliveryStats`]), never an error. One target per consumer: two
//! processes pulling from one durable consumer would each get the other's messages.
//!
//! **Consumer.** Durable pull consumer NAME, explicit ack, filter SUBJECT, deliver-new,
//! created if absent (an existing one must filter SUBJECT). A task owned by the target
//! (aborted on Drop) streams its messages and acks each. [`Target::pending`] is the
//! consumer's `num_pending + num_ack_pending`: messages not yet delivered plus those
//! delivered but not yet acked, i.e. everything the consumer has not finished; it is
//! refreshed every [`PENDING_POLL`] by a second task (each request bounded by
//! [`ADMIN_BOUND`]) into an atomic, since `pending()` is sync. Without a consumer there is
//! no backlog (the stream's message count is retention, not lag): `None`.
//!
//! **Error kinds** ([`publish_error_kind`]): `publish` (the PubAck is an error),
//! `no_stream` (no stream covers SUBJECT), `timeout` (the generator's; also the client's
//! own [`ACK_BOUND`] and [`DELIVERY_BOUND`] backstops), `disconnected`, `nats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js, Context};
use async_nats::HeaderMap;
use collector::target::{BoxFuture, Mark, OpError, SpecError, Target, KIND_TIMEOUT};
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::nats::{
    build_headers, check_subject, connect, parse_authority, server_url, Payload, KIND_DISCONNECTED,
    KIND_NATS,
};
use crate::{invalid, TargetError, TargetOptions};

/// Longest [`JetStreamTarget::open`] waits for the connection.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// Longest a stream or consumer request (create, info) may take.
pub const ADMIN_BOUND: Duration = Duration::from_secs(5);
/// The client's own PubAck timeout: a backstop far above any generator timeout.
pub const ACK_BOUND: Duration = Duration::from_secs(60);
/// Longest an operation waits for its delivery when nothing shorter bounds it.
pub const DELIVERY_BOUND: Duration = Duration::from_secs(60);
/// How often the consumer's pending count is refreshed.
pub const PENDING_POLL: Duration = Duration::from_millis(100);
/// Pause between re-opening the consumer's message stream after it ended or failed.
pub const RESTREAM_PAUSE: Duration = Duration::from_millis(100);
/// Messages pulled per batch by the consumer task.
pub const PULL_BATCH: usize = 512;
/// `max_ack_pending` of a consumer this target creates (the server default 1000 would cap
/// deliveries in flight below what a fast run needs).
pub const CONSUMER_MAX_ACK_PENDING: i64 = 65_536;
/// The most operations waiting for their delivery at once; past it an operation fails as
/// `overload`.
pub const MAX_WAITING: usize = 1 << 20;
/// Size bound of a stream this target creates: 512 MiB (discard-old past it).
pub const STREAM_MAX_BYTES: i64 = 512 * 1024 * 1024;
/// Message bound of a stream this target creates: 5 million (discard-old past it).
pub const STREAM_MAX_MSGS: i64 = 5_000_000;
/// The payload when no body is given.
pub const DEFAULT_PAYLOAD: &[u8] = b"herdlab-jetstream-message";
/// The header carrying an operation's id, which its delivery is matched by.
pub const OP_HEADER: &str = "Herdlab-Op";

/// Error kind of a PubAck that reports an error.
pub const KIND_PUBLISH: &str = "publish";
/// Error kind of a publish no stream captures.
pub const KIND_NO_STREAM: &str = "no_stream";

const NO_PENDING: u64 = u64::MAX;

/// A parsed `jetstream://` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamSpec {
    /// Host as written.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Stream name.
    pub stream: String,
    /// Subject published on.
    pub subject: String,
}

/// Checks a stream or consumer name; the error names the spec, what it is and the name.
pub fn check_name(spec: &str, what: &str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(invalid(spec, format!("empty {what} name")));
    }
    if name.contains(|c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c)) {
        return Err(invalid(
            spec,
            format!("{what} name {name:?}: expected no whitespace, '.', '*', '>', '/' or '\\'"),
        ));
    }
    Ok(())
}

/// Parses `jetstream://HOST:PORT/STREAM/SUBJECT`; every error names the spec.
pub fn parse(spec: &str) -> Result<JetStreamSpec, SpecError> {
    const HELP: &str = "expected jetstream://HOST:PORT/STREAM/SUBJECT";
    let rest = spec
        .trim()
        .strip_prefix("jetstream://")
        .ok_or_else(|| invalid(spec, HELP))?;
    let mut parts = rest.splitn(3, '/');
    let authority = parts.next().unwrap_or_default();
    let (Some(stream), Some(subject)) = (parts.next(), parts.next()) else {
        return Err(invalid(spec, format!("missing STREAM/SUBJECT: {HELP}")));
    };
    let (host, port) = parse_authority(spec, authority)?;
    check_name(spec, "stream", stream)?;
    check_subject(spec, subject)?;
    Ok(JetStreamSpec {
        host,
        port,
        stream: stream.into(),
        subject: subject.into(),
    })
}

/// Whether subject filter `pattern` (with `*` and `>`) matches `subject`. Pure.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The error kind of a failed publish. Pure.
pub fn publish_error_kind(kind: PublishErrorKind) -> &'static str {
    match kind {
        PublishErrorKind::StreamNotFound => KIND_NO_STREAM,
        PublishErrorKind::TimedOut => KIND_TIMEOUT,
        PublishErrorKind::BrokenPipe => KIND_DISCONNECTED,
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => KIND_PUBLISH,
    }
}

/// What the consumer task has seen since the target opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// PubAcks received by operations.
    pub acked: u64,
    /// Messages delivered for the first time (the server's delivery count was 1).
    pub first_deliveries: u64,
    /// Deliveries of a message already delivered before (duplicates).
    pub redeliveries: u64,
    /// First deliveries that woke an operation.
    pub claimed: u64,
    /// First deliveries no operation waited for (it had timed out or was cancelled).
    pub unclaimed: u64,
    /// Errors from the consumer's message stream (missed heartbeats, failed pulls).
    pub stream_errors: u64,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    first: AtomicU64,
    redelivered: AtomicU64,
    claimed: AtomicU64,
    unclaimed: AtomicU64,
    stream_errors: AtomicU64,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Instant>>>>;

/// Removes an operation's waiter when the operation ends or is dropped.
struct WaitGuard<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.waiters.lock() {
            map.remove(&self.id);
        }
    }
}

struct ConsumerSide {
    name: String,
    waiters: Waiters,
    pending: Arc<AtomicU64>,
    paused: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The `jetstream://` target. See the module doc.
pub struct JetStreamTarget {
    spec: String,
    subject: async_nats::Subject,
    stream_name: String,
    publisher: Context,
    admin: Context,
    headers: HeaderMap,
    payload: Payload,
    next_id: AtomicU64,
    start_seq: u64,
    counters: Arc<Counters>,
    consumer: Option<ConsumerSide>,
}

impl JetStreamTarget {
    /// Parses `spec`, connects within [`CONNECT_BOUND`], creates or checks the stream and,
    /// with [`TargetOptions::consumer`], creates or binds the durable consumer and starts
    /// its tasks.
    pub async fn open(spec: &str, opts: &TargetOptions) -> Result<JetStreamTarget, TargetError> {
        let parsed = parse(spec)?;
        if let Some(c) = &opts.consumer {
            check_name(spec, "consumer", c)?;
        }
        let headers = build_headers(spec, &opts.headers)?;
        let payload = Payload::from_options(spec, opts, DEFAULT_PAYLOAD)?;
        let client = connect(spec, &server_url(&parsed.host, parsed.port), CONNECT_BOUND).await?;
        let mut publisher = js::new(client.clone());
        publisher.set_timeout(ACK_BOUND);
        let mut admin = js::new(client);
        admin.set_timeout(ADMIN_BOUND);
        let stream = ensure_stream(spec, &admin, &parsed).await?;
        let start_seq = stream.cached_info().state.last_sequence;
        let counters = Arc::new(Counters::default());
        let consumer = match &opts.consumer {
            Some(name) => {
                Some(open_consumer(spec, &stream, &parsed.subject, name, &counters).await?)
            }
            None => None,
        };
        Ok(JetStreamTarget {
            spec: spec.trim().to_string(),
            subject: parsed.subject.into(),
            stream_name: parsed.stream,
            publisher,
            admin,
            headers,
            payload,
            next_id: AtomicU64::new(0),
            start_seq,
            counters,
            consumer,
        })
    }

    /// What the consumer task has seen so far (all zero but `acked` without a consumer).
    pub fn delivery_stats(&self) -> DeliveryStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            acked: get(&c.acked),
            first_deliveries: get(&c.first),
            redeliveries: get(&c.redelivered),
            claimed: get(&c.claimed),
            unclaimed: get(&c.unclaimed),
            stream_errors: get(&c.stream_errors),
        }
    }

    /// Operations now waiting for their delivery (0 without a consumer).
    pub fn waiting(&self) -> usize {
        self.consumer
            .as_ref()
            .and_then(|c| c.waiters.lock().ok().map(|m| m.len()))
            .unwrap_or(0)
    }

    /// Messages stored in the stream since this target opened (by its last sequence; a
    /// stream only this target publishes to counts exactly what this target's publishes
    /// put there, acked or not). Bounded by [`ADMIN_BOUND`].
    pub async fn stored_since_open(&self) -> Result<u64, TargetError> {
        let fut = self.admin.get_stream(&self.stream_name);
        let info = async {
            let s = fut.await.map_err(|e| e.to_string())?;
            s.get_info().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(ADMIN_BOUND, info).await {
            Ok(Ok(i)) => Ok(i.state.last_sequence.saturating_sub(self.start_seq)),
            Ok(Err(e)) => Err(TargetError::setup(&self.spec, format!("stream info: {e}"))),
            Err(_) => Err(TargetError::setup(&self.spec, "stream info timed out")),
        }
    }

    /// Stops (`true`) or resumes (`false`) the consumer task's handling of messages, so
    /// a test or a suite can make the backlog grow. No effect without a consumer.
    pub fn pause_consumer(&self, paused: bool) {
        if let Some(c) = &self.consumer {
            let _ = c.paused.send(paused);
        }
    }

    /// The durable consumer's name, if any.
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| c.name.as_str())
    }

    async fn publish(&self, id: u64, seq: u64) -> Result<(), OpError> {
        let mut headers = self.headers.clone();
        headers.insert(OP_HEADER, id.to_string());
        let publish = Publish::build()
            .payload(self.payload.render(seq))
            .headers(headers);
        let ack = self
            .publisher
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| OpError::new(publish_error_kind(e.kind()), e.to_string()))?;
        ack.await
            .map_err(|e| OpError::new(publish_error_kind(e.kind()), e.to_string()))?;
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn operation(&self, seq: u64) -> Result<Vec<Mark>, OpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Some(side) = &self.consumer else {
            self.publish(id, seq).await?;
            return Ok(Vec::new());
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut map = side
                .waiters
                .lock()
                .map_err(|_| OpError::new(KIND_NATS, "waiter map poisoned"))?;
            if map.len() >= MAX_WAITING {
                return Err(OpError::new(
                    collector::target::KIND_OVERLOAD,
                    format!("{MAX_WAITING} operations already wait for their delivery"),
                ));
            }
            map.insert(id, tx);
        }
        let _guard = WaitGuard {
            waiters: &side.waiters,
            id,
        };
        self.publish(id, seq).await?;
        let acked = Mark {
            action: 1,
            at: Instant::now(),
        };
        match tokio::time::timeout(DELIVERY_BOUND, rx).await {
            Ok(Ok(_delivered)) => Ok(vec![acked]),
            Ok(Err(_)) => Err(OpError::new(
                KIND_DISCONNECTED,
                "the consumer task stopped before this message was delivered",
            )),
            Err(_) => Err(OpError::new(
                KIND_TIMEOUT,
                format!("not delivered within {DELIVERY_BOUND:?}"),
            )),
        }
    }
}

impl Drop for JetStreamTarget {
    fn drop(&mut self) {
        if let Some(c) = &self.consumer {
            for t in &c.tasks {
                t.abort();
            }
        }
    }
}

impl Target for JetStreamTarget {
    fn actions(&self) -> Vec<String> {
        match self.consumer {
            Some(_) => vec!["deliver".into(), "ack".into()],
            None => vec!["ack".into()],
        }
    }

    fn mark_actions(&self) -> Vec<usize> {
        match self.consumer {
            Some(_) => vec![1],
            None => Vec::new(),
        }
    }

    fn call(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<(), OpError>> {
        Box::pin(async move { self.operation(seq).await.map(|_| ()) })
    }

    fn call_marked(&self, _action: usize, seq: u64) -> BoxFuture<'_, Result<Vec<Mark>, OpError>> {
        Box::pin(self.operation(seq))
    }

    fn pending(&self) -> Option<u64> {
        let c = self.consumer.as_ref()?;
        match c.pending.load(Ordering::Relaxed) {
            NO_PENDING => None,
            n => Some(n),
        }
    }

    fn describe(&self) -> String {
        match self.consumer_name() {
            Some(c) => format!("{} (consumer {c})", self.spec),
            None => self.spec.clone(),
        }
    }
}

async fn ensure_stream(
    spec: &str,
    admin: &Context,
    parsed: &JetStreamSpec,
) -> Result<stream::Stream, TargetError> {
    let setup = |m: String| TargetError::setup(spec, m);
    let got = tokio::time::timeout(ADMIN_BOUND, admin.get_stream(&parsed.stream))
        .await
        .map_err(|_| setup(format!("stream {:?} info timed out", parsed.stream)))?;
    match got {
        Ok(s) => {
            let subjects = &s.cached_info().config.subjects;
            if subjects.iter().any(|p| subject_matches(p, &parsed.subject)) {
                Ok(s)
            } else {
                Err(setup(format!(
                    "stream {:?} exists with subjects {subjects:?}, which do not cover subject {:?}",
                    parsed.stream, parsed.subject
                )))
            }
        }
        Err(e)
            if matches!(e.kind(), js::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == js::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let config = stream::Config {
                name: parsed.stream.clone(),
                subjects: vec![parsed.subject.clone()],
                storage: StorageType::File,
                max_bytes: STREAM_MAX_BYTES,
                max_messages: STREAM_MAX_MSGS,
                discard: DiscardPolicy::Old,
                ..Default::default()
            };
            tokio::time::timeout(ADMIN_BOUND, admin.create_stream(config))
                .await
                .map_err(|_| setup(format!("creating stream {:?} timed out", parsed.stream)))?
                .map_err(|e| setup(format!("creating stream {:?}: {e}", parsed.stream)))
        }
        Err(e) => Err(setup(format!("stream {:?}: {e}", parsed.stream))),
    }
}

async fn open_consumer(
    spec: &str,
    stream: &stream::Stream,
    subject: &str,
    name: &str,
    counters: &Arc<Counters>,
) -> Result<ConsumerSide, TargetError> {
    let setup = |m: String| TargetError::setup(spec, m);
    let config = pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::New,
        filter_subject: subject.to_string(),
        max_ack_pending: CONSUMER_MAX_ACK_PENDING,
        ..Default::default()
    };
    let consumer: js::consumer::Consumer<pull::Config> =
        tokio::time::timeout(ADMIN_BOUND, stream.get_or_create_consumer(name, config))
            .await
            .map_err(|_| setup(format!("consumer {name:?} timed out")))?
            .map_err(|e| setup(format!("consumer {name:?}: {e}")))?;
    let filter = &consumer.cached_info().config.filter_subject;
    if filter != subject {
        return Err(setup(format!(
            "consumer {name:?} exists with filter subject {filter:?}, expected {subject:?}"
        )));
    }
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let pending = Arc::new(AtomicU64::new(NO_PENDING));
    let (paused, paused_rx) = watch::channel(false);
    let deliver = tokio::spawn(deliver_loop(
        consumer.clone(),
        waiters.clone(),
        counters.clone(),
        paused_rx,
    ));
    let poll = tokio::spawn(pending_loop(consumer, pending.clone()));
    Ok(ConsumerSide {
        name: name.to_string(),
        waiters,
        pending,
        paused,
        tasks: vec![deliver, poll],
    })
}

/// Streams the consumer's messages until aborted; re-opens the stream after an end or a
/// failure, pausing [`RESTREAM_PAUSE`] in between.
async fn deliver_loop(
    consumer: js::consumer::Consumer<pull::Config>,
    waiters: Waiters,
    counters: Arc<Counters>,
    mut paused: watch::Receiver<bool>,
) {
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let Ok(mut messages) = messages else {
            counters.stream_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RESTREAM_PAUSE).await;
            continue;
        };
        while let Some(next) = messages.next().await {
            // A paused consumer holds its message: the backlog grows on the server.
            if *paused.borrow() {
                let _ = paused.wait_for(|p| !*p).await;
            }
            match next {
                Ok(msg) => handle(&msg, &waiters, &counters).await,
                Err(_) => {
                    counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(RESTREAM_PAUSE).await;
    }
}

async fn handle(msg: &js::Message, waiters: &Waiters, counters: &Counters) {
    let at = Instant::now();
    let redelivered = msg.info().map(|i| i.delivered > 1).unwrap_or(false);
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(OP_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok());
    let _ = msg.ack().await;
    if redelivered {
        counters.redelivered.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counters.first.fetch_add(1, Ordering::Relaxed);
    let waiter = id.and_then(|id| waiters.lock().ok().and_then(|mut m| m.remove(&id)));
    match waiter.map(|tx| tx.send(at)) {
        Some(Ok(())) => counters.claimed.fetch_add(1, Ordering::Relaxed),
        _ => counters.unclaimed.fetch_add(1, Ordering::Relaxed),
    };
}

/// Refreshes `pending` every [`PENDING_POLL`] until aborted; a failed or late poll keeps
/// the last value.
async fn pending_loop(mut consumer: js::consumer::Consumer<pull::Config>, pending: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(PENDING_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(Ok(info)) = tokio::time::timeout(ADMIN_BOUND, consumer.info()).await {
            let n = info.num_pending.saturating_add(info.num_ack_pending as u64);
            pending.store(n.min(NO_PENDING - 1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_errors_name_the_spec() {
        let s = parse("jetstream://127.0.0.1:4333/MSGS/msgs.in").unwrap();
        assert_eq!(
            (
                s.host.as_str(),
                s.port,
                s.stream.as_str(),
                s.subject.as_str()
            ),
            ("127.0.0.1", 4333, "MSGS", "msgs.in")
        );
        for (spec, needle) in [
            ("jetstream://h:1/MSGS", "missing STREAM/SUBJECT"),
            ("jetstream://h:x/S/a", "port \"x\""),
            ("jetstream://:1/S/a", "empty host"),
            ("jetstream://h:1//a", "empty stream name"),
            ("jetstream://h:1/S.T/a", "stream name \"S.T\""),
            ("jetstream://h:1/S/a.*", "wildcard"),
            ("jetstream://h:1/S/", "empty subject"),
            ("nats://h:1/S/a", "expected jetstream://"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{spec:?}")) && e.contains(needle),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn subject_filters_match_like_nats() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("x.b", "a.b"));
        assert_eq!(
            publish_error_kind(PublishErrorKind::StreamNotFound),
            "no_stream"
        );
        assert_eq!(publish_error_kind(PublishErrorKind::Other), "publish");
    }
}
