//! A server of known capacity over NATS request-reply: every request message on SUBJECT
//! is one operation `target.call(target.pick(seq), seq)` of a collector [`Target`], `seq`
//! from a counter, spawned as its own task. `stress serve sim:servers=4,service_us=1000
//! --nats URL --subject S` puts a `sim:` model behind it, so that finder →
//! [`crate::nats`] target → nats-server → this server → the model has exactly the model's
//! capacity (the queueing is the model's, not ours: every request is handed to it at once).
//!
//! **Reply protocol** (shared with [`crate::nats`], which reads it back): `ok` when the
//! operation succeeded, `err:KIND:MESSAGE` when it failed (KIND is the error's kind, e.g.
//! `overload` from a full `queue=`). A message without a reply subject is served and its
//! outcome dropped. At most [`MAX_IN_FLIGHT`] operations run at once; a request past that
//! is answered `err:overload:…` at once, so memory stays bounded whatever the load.
//!
//! **Lifecycle.** [`start`] connects (bounded), subscribes (in a queue group with
//! [`start_in_group`], so several servers can share a subject) and spawns the serving loop,
//! which owns every operation's task in a `JoinSet`. [`NatsServe::shutdown`] unsubscribes,
//! lets in-flight operations answer for at most [`DRAIN_BOUND`], flushes, and aborts what
//! is left. Dropping a [`NatsServe`] aborts the loop and so every task it owns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use collector::target::{OpError, Target};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::nats::{check_subject, connect, ERR_PREFIX, OK_REPLY};
use crate::TargetError;

/// Longest [`start`] waits for the connection.
pub const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// Longest [`NatsServe::shutdown`] waits for in-flight operations before it cuts them.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);
/// The most operations in flight at once; past it a request is answered `err:overload`.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// A running server. See the module doc.
pub struct NatsServe {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    served: Arc<AtomicU64>,
}

/// Serves `target` on `subject` of the NATS server at `url` (no queue group).
pub async fn start(
    target: Arc<dyn Target>,
    url: &str,
    subject: &str,
) -> Result<NatsServe, TargetError> {
    start_in_group(target, url, subject, None).await
}

/// [`start`], subscribing in queue group `group` when given.
pub async fn start_in_group(
    target: Arc<dyn Target>,
    url: &str,
    subject: &str,
    group: Option<&str>,
) -> Result<NatsServe, TargetError> {
    let what = format!("serve {url} --subject {subject}");
    check_subject(&what, subject)?;
    if let Some(g) = group {
        if g.is_empty() || g.contains(|c: char| c.is_whitespace() || c == '.') {
            return Err(TargetError::setup(
                &what,
                format!("queue group {g:?}: expected one token without spaces or dots"),
            ));
        }
    }
    let client = connect(&what, url, CONNECT_BOUND).await?;
    let sub = match group {
        Some(g) => {
            client
                .queue_subscribe(subject.to_string(), g.to_string())
                .await
        }
        None => client.subscribe(subject.to_string()).await,
    }
    .map_err(|e| TargetError::setup(&what, format!("subscribing: {e}")))?;
    // The subscription must be known to the server before anyone sends to it.
    tokio::time::timeout(CONNECT_BOUND, client.flush())
        .await
        .map_err(|_| TargetError::setup(&what, "flush after subscribing timed out"))?
        .map_err(|e| TargetError::setup(&what, format!("flush after subscribing: {e}")))?;
    let (stop, stopped) = watch::channel(false);
    let served = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(serve_loop(client, sub, target, stopped, served.clone()));
    Ok(NatsServe {
        stop,
        task: Some(task),
        served,
    })
}

impl NatsServe {
    /// Requests answered so far (ok and err replies, overload refusals included).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Unsubscribes, lets in-flight operations answer for at most [`DRAIN_BOUND`], then
    /// stops. Bounded.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let margin = Duration::from_secs(1) + CONNECT_BOUND;
            crate::join_or_abort(task, DRAIN_BOUND + margin).await;
        }
    }
}

impl Drop for NatsServe {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The reply payload for an outcome: `ok` or `err:KIND:MESSAGE`. Pure.
pub fn reply_payload(outcome: &Result<(), OpError>) -> Bytes {
    match outcome {
        Ok(()) => Bytes::from_static(OK_REPLY.as_bytes()),
        Err(e) => Bytes::from(format!("{ERR_PREFIX}{}:{}", e.kind, e.message)),
    }
}

async fn serve_loop(
    client: Client,
    mut sub: async_nats::Subscriber,
    target: Arc<dyn Target>,
    mut stopped: watch::Receiver<bool>,
    served: Arc<AtomicU64>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut seq: u64 = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        let msg = tokio::select! {
            _ = stopped.changed() => break,
            msg = sub.next() => match msg { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply else {
            seq += 1;
            continue;
        };
        if tasks.len() >= MAX_IN_FLIGHT {
            let refusal = Err(OpError::new(
                collector::target::KIND_OVERLOAD,
                format!("serve_nats: {MAX_IN_FLIGHT} operations already in flight"),
            ));
            // Counted before the reply goes, so a client that has its reply sees it counted.
            served.fetch_add(1, Ordering::Relaxed);
            let _ = client.publish(reply, reply_payload(&refusal)).await;
            continue;
        }
        let (t, c, s) = (target.clone(), client.clone(), served.clone());
        let this = seq;
        seq += 1;
        tasks.spawn(async move { serve_one(t, c, s, reply, this).await });
    }
    let _ = sub.unsubscribe().await;
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN_BOUND, drain).await;
    tasks.abort_all();
    let _ = tokio::time::timeout(CONNECT_BOUND, client.flush()).await;
}

async fn serve_one(
    target: Arc<dyn Target>,
    client: Client,
    served: Arc<AtomicU64>,
    reply: Subject,
    seq: u64,
) {
    let outcome = target.call(target.pick(seq), seq).await;
    served.fetch_add(1, Ordering::Relaxed);
    let _ = client.publish(reply, reply_payload(&outcome)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_through_the_nats_target_reader() {
        let ok = reply_payload(&Ok(()));
        assert_eq!(&ok[..], b"ok");
        assert!(crate::nats::reply_outcome(&ok).is_ok());
        let err = reply_payload(&Err(OpError::new("overload", "queue full: 4 waiting")));
        let back = crate::nats::reply_outcome(&err).unwrap_err();
        assert_eq!(back, OpError::new("overload", "queue full: 4 waiting"));
    }
}
