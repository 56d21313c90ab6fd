//! A resuming WebSocket session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::codes::{close, error as code};
use switchboard_protocol::{ClientFrame, MemberChange, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::ClientError;

/// How to open a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `ws://host:port/v1/ws`.
    pub url: String,
    /// Token for `hello`.
    pub token: String,
    /// Resume points: last `seq` seen per room.
    pub since: BTreeMap<String, u64>,
    /// Reconnect and resume after a drop (except after 4003, bad token).
    pub reconnect: bool,
}

/// A durable acknowledgement of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The send's idempotency key.
    pub client_msg_id: String,
    /// Message id.
    pub id: String,
    /// Message `seq`.
    pub seq: u64,
    /// Commit time.
    pub ts: String,
}

/// What the application sees.
#[derive(Debug, Clone)]
// Frames are nearly every event: boxing them would cost an allocation each to shrink the rare one.
#[allow(clippy::large_enum_variant)]
pub enum SessionEvent {
    /// A server frame (including `ready` after each reconnect).
    Frame(ServerFrame),
    /// The connection dropped; with `reconnect`, a new `ready` follows.
    Disconnected {
        /// Close code, when the server sent one.
        code: Option<u16>,
    },
}

enum Cmd {
    Send {
        client_msg_id: String,
        room: String,
        body: String,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    Raw(String),
    Close,
}

/// A live session. Dropping it closes the connection.
pub struct Session {
    cmd: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    positions: Arc<Mutex<BTreeMap<String, u64>>>,
}

struct PendingSend {
    client_msg_id: String,
    room: String,
    body: String,
    reply: oneshot::Sender<Result<Ack, ClientError>>,
}

/// Codes after which a send is retried rather than failed.
fn retryable(code: &str) -> bool {
    matches!(code, code::RATE_LIMITED | code::UNAVAILABLE | code::DRAINING)
}

impl Session {
    /// Connects, says `hello` and waits for `ready` (which is also the first event).
    pub async fn connect(cfg: SessionConfig) -> Result<Session, ClientError> {
        let positions = Arc::new(Mutex::new(cfg.since.clone()));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(drive(cfg, cmd_rx, ev_tx, positions.clone(), ready_tx));
        ready_rx.await.map_err(|_| ClientError::Ended)??;
        Ok(Session { cmd: cmd_tx, events: ev_rx, positions })
    }

    /// Sends a message with a fresh `client_msg_id`; resolves on its `ack`.
    pub async fn send(&self, room: &str, body: &str) -> Result<Ack, ClientError> {
        self.send_with_id(room, &uuid::Uuid::now_v7().to_string(), body).await
    }

    /// Sends with a chosen `client_msg_id` (retried with the same key across reconnects).
    pub async fn send_with_id(
        &self,
        room: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Result<Ack, ClientError> {
        let (reply, rx) = oneshot::channel();
        let cmd =
            Cmd::Send { client_msg_id: client_msg_id.into(), room: room.into(), body: body.into(), reply };
        self.cmd.send(cmd).map_err(|_| ClientError::Ended)?;
        rx.await.map_err(|_| ClientError::Ended)?
    }

    /// Sends a frame as-is (for `typing`, `read`, or tests of bad input).
    pub fn send_frame(&self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.send_raw(serde_json::to_string(frame)?)
    }

    /// Sends raw text.
    pub fn send_raw(&self, text: String) -> Result<(), ClientError> {
        self.cmd.send(Cmd::Raw(text)).map_err(|_| ClientError::Ended)
    }

    /// The next event, or `None` once the session has ended for good.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// The next server frame, skipping disconnect notices.
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            match self.events.recv().await? {
                SessionEvent::Frame(f) => return Some(f),
                SessionEvent::Disconnected { .. } => continue,
            }
        }
    }

    /// Last `seq` seen per room: what a resume would send as `since`.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        self.positions.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Closes the connection (1000) and stops reconnecting.
    pub fn close(&self) {
        let _ = self.cmd.send(Cmd::Close);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Close);
    }
}

fn send_frame_of(p: &PendingSend) -> Message {
    let frame = ClientFrame::Send {
        room: p.room.clone(),
        client_msg_id: p.client_msg_id.clone(),
        body: p.body.clone(),
    };
    Message::Text(serde_json::to_string(&frame).unwrap_or_default().into())
}

async fn drive(
    cfg: SessionConfig,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<SessionEvent>,
    positions: Arc<Mutex<BTreeMap<String, u64>>>,
    ready: oneshot::Sender<Result<(), ClientError>>,
) {
    let mut ready = Some(ready);
    let mut pending: Vec<PendingSend> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Tungstenite zero-fills its spare read buffer before every read, so its 128 KiB
        // default costs far more than chat frames need.
        let config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
        let ws =
            match tokio_tungstenite::connect_async_with_config(cfg.url.as_str(), Some(config), false).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(ClientError::WebSocket(Box::new(e))));
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
        let (mut sink, mut stream) = ws.split();
        let since = positions.lock().map(|p| p.clone()).unwrap_or_default();
        let hello = ClientFrame::Hello { token: cfg.token.clone(), since: Some(since) };
        let mut ok =
            sink.send(Message::Text(serde_json::to_string(&hello).unwrap_or_default().into())).await.is_ok();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut close_code: Option<u16> = None;
        let mut connected = false;
        while ok {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Close) => {
                        let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        fail_all(&mut pending);
                        return;
                    }
                    Some(Cmd::Send { client_msg_id, room, body, reply }) => {
                        let p = PendingSend { client_msg_id, room, body, reply };
                        if connected {
                            ok = sink.send(send_frame_of(&p)).await.is_ok();
                        }
                        pending.push(p);
                    }
                    Some(Cmd::Raw(text)) => ok = sink.send(Message::Text(text.into())).await.is_ok(),
                },
                _ = retry => {
                    retry_at = None;
                    for p in &pending {
                        ok = ok && sink.send(send_frame_of(p)).await.is_ok();
                    }
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else {
                            tracing::warn!("undecodable frame from server");
                            continue;
                        };
                        match &frame {
                            ServerFrame::Ready { rooms, .. } => {
                                connected = true;
                                backoff = Duration::from_millis(50);
                                if let Ok(mut pos) = positions.lock() {
                                    for r in rooms {
                                        pos.entry(r.id.clone()).or_insert(r.last_seq);
                                    }
                                }
                                for p in &pending {
                                    ok = ok && sink.send(send_frame_of(p)).await.is_ok();
                                }
                                if let Some(r) = ready.take() {
                                    let _ = r.send(Ok(()));
                                }
                            }
                            ServerFrame::Ack { client_msg_id, id, seq, ts } => {
                                if let Some(i) = pending.iter().position(|p| &p.client_msg_id == client_msg_id) {
                                    let p = pending.remove(i);
                                    let ack = Ack { client_msg_id: client_msg_id.clone(), id: id.clone(), seq: *seq, ts: ts.clone() };
                                    let _ = p.reply.send(Ok(ack));
                                }
                            }
                            ServerFrame::Error { client_msg_id: Some(cmid), code, message, retry_after_ms, .. } => {
                                if retryable(code) {
                                    // As long as the server asks (a throttle says how long), or half a second.
                                    let wait = Duration::from_millis(retry_after_ms.unwrap_or(500).clamp(10, 60_000));
                                    retry_at.get_or_insert(tokio::time::Instant::now() + wait);
                                } else if let Some(i) = pending.iter().position(|p| &p.client_msg_id == cmid) {
                                    let p = pending.remove(i);
                                    let err = ClientError::Api {
                                        status: 0,
                                        code: code.clone(),
                                        message: message.clone(),
                                        retry_after_ms: *retry_after_ms,
                                    };
                                    let _ = p.reply.send(Err(err));
                                }
                            }
                            ServerFrame::Room { room, change: MemberChange::Joined, seq } => {
                                // Resume from just before the join: what came before is not ours.
                                let from = seq.unwrap_or(room.last_seq).saturating_sub(1);
                                if let Ok(mut pos) = positions.lock() {
                                    let e = pos.entry(room.id.clone()).or_insert(from);
                                    *e = (*e).max(from);
                                }
                            }
                            other => {
                                if let Some((room, seq)) = other.timeline_pos()
                                    && let Ok(mut pos) = positions.lock()
                                {
                                    let e = pos.entry(room.to_owned()).or_insert(0);
                                    *e = (*e).max(seq);
                                }
                            }
                        }
                        let _ = events.send(SessionEvent::Frame(frame));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        close_code = frame.map(|f| u16::from(f.code));
                        ok = false;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => ok = false,
                },
            }
        }
        let _ = events.send(SessionEvent::Disconnected { code: close_code });
        if let Some(r) = ready.take() {
            let _ = r.send(Err(ClientError::Closed(close_code.unwrap_or(0), "closed before ready".into())));
            return;
        }
        if !cfg.reconnect || close_code == Some(close::BAD_TOKEN) {
            fail_all(&mut pending);
            return;
        }
        if close_code == Some(close::TOO_LARGE) {
            // One of the pending sends is over the server's limit; resending would loop.
            for p in pending.drain(..) {
                let _ = p.reply.send(Err(ClientError::Closed(close::TOO_LARGE, "frame too large".into())));
            }
        }
        let wait = if close_code == Some(close::RATE_LIMITED) { Duration::from_secs(1) } else { backoff };
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn fail_all(pending: &mut Vec<PendingSend>) {
    for p in pending.drain(..) {
        let _ = p.reply.send(Err(ClientError::Ended));
    }
}
