//! The networked bus: NATS core subjects, through async-nats.
//!
//! A room's events go to `<prefix>.r.<room>`, a user's to `<prefix>.u.<user>`, and what every
//! node must hear to `<prefix>.ctl`. A node subscribes to a room's subject only while it holds a
//! member session of the room (the hub decides), so an event crosses the network once per
//! interested node. Core NATS is at-most-once: a message published while a node is
//! disconnected is lost to it. That is the bus's contract anyway: sessions fill `seq` gaps from
//! the store and the hub's position check catches a quiet room's lost last event; nothing
//! durable depends on NATS (JetStream is not used for acked data).
//!
//! Each message carries the frame exactly as clients get it, behind a small JSON header with
//! the routing fields (`[u32 length][header][frame]`), so receivers hand the frame on without
//! parsing or copying it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_protocol::MemberChange;
use tokio::task::JoinHandle;

use super::{Bus, BusError, BusEvent, BusHandler, Control, Topic};

/// How the bus connects.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port` (several comma-separated for a NATS cluster).
    pub url: String,
    /// First token of every subject, so that several clusters (or test runs) can share a NATS.
    pub prefix: String,
    /// Longest wait for a connection or a round trip.
    pub timeout: Duration,
}

/// The routing fields of an event.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    room: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<(String, MemberChange)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    published_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control: Option<Control>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The NATS bus of one node.
pub struct NatsBus {
    client: async_nats::Client,
    prefix: String,
    timeout: Duration,
    handler: Arc<OnceLock<BusHandler>>,
    /// One receiving task per subscribed topic.
    subs: Mutex<HashMap<Topic, JoinHandle<()>>>,
}

impl NatsBus {
    /// Connects (failing after `timeout` when NATS does not answer); afterwards async-nats
    /// reconnects by itself, with backoff, for as long as the node runs.
    pub async fn connect(opts: &NatsOptions) -> Result<Self, BusError> {
        if opts.prefix.is_empty()
            || !opts.prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(BusError::Unavailable(
                "the NATS subject prefix must be letters, digits, '_' or '-'".into(),
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(opts.timeout)
            .request_timeout(Some(opts.timeout))
            .ping_interval(Duration::from_secs(5))
            .max_reconnects(None)
            // A disconnected node's events are lost to it anyway (and filled from the store);
            // a bounded buffer keeps a long outage from piling them up in memory.
            .client_capacity(65_536)
            .subscription_capacity(65_536)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
                    other => tracing::debug!(event = %other, "nats"),
                }
            })
            .connect(opts.url.as_str())
            .await
            .map_err(|e| nats_error(&e))?;
        Ok(NatsBus {
            client,
            prefix: opts.prefix.clone(),
            timeout: opts.timeout,
            handler: Arc::new(OnceLock::new()),
            subs: Mutex::new(HashMap::new()),
        })
    }

    fn subject(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(id) => format!("{}.r.{}", self.prefix, token(id)),
            Topic::User(id) => format!("{}.u.{}", self.prefix, token(id)),
            Topic::Control => format!("{}.ctl", self.prefix),
        }
    }

    /// Waits until the server has processed everything this connection sent so far, its
    /// subscriptions included. async-nats's `flush` only empties the socket's write buffer: a
    /// SUB can still be in flight when it returns, and an event another node publishes in that
    /// window would be missed. The server handles one connection's operations in order, so a
    /// message sent to an inbox of our own coming back proves every earlier SUB is in place.
    /// It also proves the server answers, which a written socket does not.
    async fn round_trip(&self) -> Result<(), BusError> {
        let barrier = async {
            let inbox = self.client.new_inbox();
            let mut echo = self.client.subscribe(inbox.clone()).await.map_err(|e| nats_error(&e))?;
            self.client.publish(inbox, Bytes::new()).await.map_err(|e| nats_error(&e))?;
            self.client.flush().await.map_err(|e| nats_error(&e))?;
            match echo.next().await {
                Some(_) => Ok(()),
                None => Err(BusError::Unavailable("nats: connection closed".into())),
            }
        };
        match tokio::time::timeout(self.timeout, barrier).await {
            Ok(done) => done,
            Err(_) => Err(BusError::Unavailable("nats: no answer".into())),
        }
    }
}

/// A NATS failure as the bus reports it: retryable, since async-nats reconnects.
fn nats_error(e: &dyn std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("nats: {e}"))
}

/// A subject token for an id: ids made of safe characters stand as they are; anything else
/// (external ids may hold dots, spaces or `>`) is hex-encoded behind a `~`, which no safe id has.
fn token(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return id.to_owned();
    }
    let mut out = String::with_capacity(1 + id.len() * 2);
    out.push('~');
    for b in id.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn encode(event: &BusEvent) -> Result<Bytes, BusError> {
    let header = Header {
        room: event.room.clone(),
        seq: event.seq,
        member: event.member.clone(),
        origin: event.origin.clone(),
        published_us: event.published_us,
        control: event.control.clone(),
    };
    let head = serde_json::to_vec(&header).map_err(|e| BusError::Unavailable(format!("encoding: {e}")))?;
    let len = u32::try_from(head.len()).map_err(|_| BusError::Unavailable("header too large".into()))?;
    let mut buf = BytesMut::with_capacity(4 + head.len() + event.payload.len());
    buf.put_u32(len);
    buf.put_slice(&head);
    buf.put_slice(&event.payload);
    Ok(buf.freeze())
}

fn decode(topic: &Topic, data: Bytes) -> Option<BusEvent> {
    let len = usize::try_from(u32::from_be_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let head: Header = serde_json::from_slice(data.get(4..4 + len)?).ok()?;
    Some(BusEvent {
        topic: topic.clone(),
        room: head.room,
        seq: head.seq,
        member: head.member,
        origin: head.origin,
        payload: data.slice(4 + len..),
        published_us: head.published_us,
        control: head.control,
    })
}

#[async_trait]
impl Bus for NatsBus {
    fn set_handler(&self, handler: BusHandler) {
        if self.handler.set(handler).is_err() {
            tracing::warn!("nats bus: handler already set; keeping the first");
        }
    }

    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let subject = self.subject(&event.topic);
        let data = encode(&event)?;
        self.client.publish(subject, data).await.map_err(|e| nats_error(&e))
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
        let mut fresh = Vec::new();
        for topic in topics {
            if self.subs.lock().map_err(|_| poisoned())?.contains_key(topic) {
                continue;
            }
            let sub = self.client.subscribe(self.subject(topic)).await.map_err(|e| nats_error(&e))?;
            let (handler, topic_for_task) = (self.handler.clone(), topic.clone());
            let task = tokio::spawn(async move {
                let mut sub = sub;
                while let Some(msg) = sub.next().await {
                    match decode(&topic_for_task, msg.payload) {
                        Some(ev) => {
                            if let Some(h) = handler.get() {
                                h(ev);
                            }
                        }
                        None => tracing::warn!(subject = %msg.subject, "nats: undecodable message dropped"),
                    }
                }
            });
            fresh.push((topic.clone(), task));
        }
        {
            let mut subs = self.subs.lock().map_err(|_| poisoned())?;
            for (topic, task) in fresh {
                if let Some(dup) = subs.insert(topic, task) {
                    dup.abort();
                }
            }
        }
        // One round trip for the whole batch: once the server answers, it has every SUB.
        self.round_trip().await
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<(), BusError> {
        let tasks: Vec<JoinHandle<()>> = {
            let mut subs = self.subs.lock().map_err(|_| poisoned())?;
            topics.iter().filter_map(|t| subs.remove(t)).collect()
        };
        for task in tasks {
            // Dropping the subscriber (with its task) sends the UNSUB; after the task has
            // stopped no more events of the topic reach the handler.
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError::Unavailable("nats: not connected".into()));
        }
        self.round_trip().await
    }
}

fn poisoned() -> BusError {
    BusError::Unavailable("nats bus lock poisoned".into())
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        if let Ok(subs) = self.subs.lock() {
            for task in subs.values() {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ids_become_safe_subject_tokens() {
        assert_eq!(token("01a2-b_c"), "01a2-b_c");
        assert_eq!(token("a.b"), "~612e62");
        assert_eq!(token("> *"), "~3e202a");
        assert_eq!(token(""), "~");
        assert_ne!(token("~61"), "~61", "a safe-looking id with ~ is encoded too");
    }

    #[test]
    fn events_round_trip_through_the_envelope() {
        let ev = BusEvent {
            topic: Topic::Room("r".into()),
            room: "r".into(),
            seq: 7,
            member: Some(("u".into(), MemberChange::Removed)),
            origin: Some("s".into()),
            payload: Bytes::from_static(b"{\"op\":\"message\"}"),
            published_us: 9,
            control: None,
        };
        assert_eq!(decode(&ev.topic, encode(&ev).unwrap()), Some(ev.clone()));
        let shadowed = BusEvent { control: Some(Control::OnlyTo { user: "u".into() }), ..ev };
        assert_eq!(decode(&shadowed.topic, encode(&shadowed).unwrap()), Some(shadowed));
        assert_eq!(decode(&Topic::Control, Bytes::from_static(b"\x00\x00\x00\xffshort")), None);
        assert_eq!(decode(&Topic::Control, Bytes::new()), None);
    }

    /// The NATS server the networked tests use, and a prefix of this test run's own.
    pub(crate) fn test_options() -> NatsOptions {
        let url = std::env::var("SWITCHBOARD_TEST_NATS").unwrap_or_else(|_| {
            panic!("SWITCHBOARD_TEST_NATS is not set: these tests need NATS (scripts/test sets it up)")
        });
        let run = std::env::var("SWITCHBOARD_TEST_NATS_PREFIX").unwrap_or_else(|_| "sbtest".into());
        NatsOptions {
            url,
            prefix: format!("{run}-{}", uuid::Uuid::now_v7().simple()),
            timeout: Duration::from_secs(5),
        }
    }

    /// Every second node reaches NATS over a link that holds what the node sends for 50 ms, as
    /// a node in another zone would: a bus that takes "written to the socket" for "the server
    /// has it" loses the events published by a near node in that window.
    async fn fabric() -> ((), impl Fn() -> Arc<dyn Bus>) {
        let opts = test_options();
        let server = opts.url.trim_start_matches("nats://").to_owned();
        let far = slow_link(server, Duration::from_millis(50)).await;
        let far = NatsOptions { url: format!("nats://{far}"), ..opts.clone() };
        let nodes = std::sync::atomic::AtomicUsize::new(0);
        ((), move || {
            let which = nodes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let opts = if which.is_multiple_of(2) { opts.clone() } else { far.clone() };
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    Arc::new(NatsBus::connect(&opts).await.expect("connect to NATS")) as Arc<dyn Bus>
                })
            })
        })
    }

    /// A relay to `server` that passes what the server sends at once and what the node sends
    /// `delay` late, in order.
    async fn slow_link(server: String, delay: Duration) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        tokio::spawn(async move {
            while let Ok((node, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(&server).await else { continue };
                let ((mut from_node, mut to_node), (mut from_server, mut to_server)) =
                    (node.into_split(), upstream.into_split());
                tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_node).await });
                let (held, mut due) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    while let Some((at, bytes)) = due.recv().await {
                        tokio::time::sleep_until(at).await;
                        if to_server.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 << 10];
                    while let Ok(n @ 1..) = from_node.read(&mut buf).await {
                        if held.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    crate::bus_conformance!(fabric, #[ignore = "needs NATS: scripts/test runs it"]);
}
