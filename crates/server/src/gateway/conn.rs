//! One WebSocket as the session sees it: inbound frames classified (parsed, rate-limited,
//! refused with a code), outbound frames batched, and closes with the documented codes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use switchboard_protocol::codes::{close, error as code};
use switchboard_protocol::{ClientFrame, ServerFrame};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, Utf8Bytes};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;

use super::socket::Socket;

/// Frames refused in a row before the connection is closed with 4008.
const MAX_STRIKES: u32 = 20;
/// Longest a single write may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Ops a v1 client may send; anything else is `unknown_op`.
const KNOWN_OPS: &[&str] = &["hello", "send", "typing", "read", "ping", "status"];

/// What reading the socket produced.
pub(crate) enum Inbound {
    /// A well-formed client frame.
    Frame(ClientFrame),
    /// A refused frame: answer with this and carry on. Boxed: it is rare, and it would more
    /// than double the size of every `Inbound`, which sits in each session's idle state.
    Reply(Box<ServerFrame>),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
    /// The peer closed or the socket failed.
    Ended,
    /// Nothing to act on (control frames).
    Nothing,
}

/// A connection's frame limiter, on the standard monotonic clock: it takes no room (governor's
/// default quanta clock is 32 bytes more per connection), and making one runs no CPUID (which
/// in a virtual machine traps to the hypervisor: 5% of the server's CPU at 7,000 connects a
/// second, when each connection made its own quanta clock).
type FrameLimiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Why a write failed: the session ends either way.
#[derive(Debug)]
pub(crate) struct WriteFailed;

/// The socket plus per-connection limits. Not split into halves: the session reads and writes
/// from one task, never at once, and a split costs a shared lock allocation per connection.
pub(crate) struct Conn {
    socket: Socket,
    limiter: FrameLimiter,
    strikes: u32,
    /// When the client last sent anything, for the heartbeat timeout.
    pub(crate) last_recv: Instant,
    metrics: Arc<Metrics>,
}

impl Conn {
    pub(crate) fn new(socket: Socket, cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let per_sec = NonZeroU32::new(cfg.rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.rate_burst).unwrap_or(NonZeroU32::MIN);
        Conn {
            socket,
            limiter: RateLimiter::direct_with_clock(
                Quota::per_second(per_sec).allow_burst(burst),
                MonotonicClock,
            ),
            strikes: 0,
            last_recv: Instant::now(),
            metrics,
        }
    }

    /// Reads and classifies the next inbound frame.
    pub(crate) async fn next(&mut self) -> Inbound {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Reads and classifies the next inbound frame if one has arrived; otherwise the task is
    /// woken when the socket has more. Polled in place by the session's loop, so an idle
    /// connection holds no read future.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        self.socket.poll_next(cx).map(|read| self.classify(read))
    }

    /// What a read from the socket means for the session.
    fn classify(&mut self, read: Option<Result<Message, tungstenite::Error>>) -> Inbound {
        let msg = match read {
            None => return Inbound::Ended,
            Some(Ok(m)) => m,
            Some(Err(e)) => return classify_error(e),
        };
        self.last_recv = Instant::now();
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            self.metrics.frames_in.inc();
        }
        match msg {
            Message::Pong(_) => return Inbound::Nothing,
            Message::Close(_) => return Inbound::Ended,
            _ => {}
        }
        if let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            self.strikes += 1;
            if self.strikes > MAX_STRIKES {
                return Inbound::Close(close::RATE_LIMITED, "rate limit exceeded");
            }
            let client_msg_id = match &msg {
                Message::Text(t) => match serde_json::from_str::<ClientFrame>(t) {
                    Ok(ClientFrame::Send { client_msg_id, .. }) => Some(client_msg_id),
                    _ => None,
                },
                _ => None,
            };
            if client_msg_id.is_some() {
                self.metrics.refused(code::RATE_LIMITED);
            }
            let err =
                ApiError::bad_request(code::RATE_LIMITED, "too many frames; slow down").retry_after(wait);
            return Inbound::Reply(Box::new(err.to_frame(client_msg_id, None)));
        }
        self.strikes = 0;
        match msg {
            Message::Text(t) => match parse(&t) {
                Ok(f) => Inbound::Frame(f),
                Err(e) => Inbound::Reply(Box::new(e.to_frame(None, None))),
            },
            Message::Binary(_) => Inbound::Reply(Box::new(
                ApiError::bad_request(code::BINARY_NOT_SUPPORTED, "binary frames are not part of v1")
                    .to_frame(None, None),
            )),
            _ => Inbound::Nothing,
        }
    }

    /// Queues a pre-encoded frame without flushing (see [`Conn::flush`]).
    pub(crate) async fn feed(&mut self, text: Utf8Bytes) -> Result<(), WriteFailed> {
        self.metrics.frames_out.inc();
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.feed(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    /// Writes everything queued with one flush.
    pub(crate) async fn flush(&mut self) -> Result<(), WriteFailed> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    /// Encodes and queues a frame (no flush).
    pub(crate) async fn feed_frame(&mut self, frame: &ServerFrame) -> Result<(), WriteFailed> {
        let text = serde_json::to_string(frame).map_err(|e| {
            tracing::error!(error = %e, "cannot encode a frame");
            WriteFailed
        })?;
        self.feed(Utf8Bytes::from(text)).await
    }

    /// Encodes, writes and flushes one frame.
    pub(crate) async fn send(&mut self, frame: &ServerFrame) -> Result<(), WriteFailed> {
        self.feed_frame(frame).await?;
        self.flush().await
    }

    /// Sends a WebSocket ping.
    pub(crate) async fn ping(&mut self) -> Result<(), WriteFailed> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::Ping(Default::default()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    /// Sends a close frame with `code`, then reads (and discards) until the peer's close or a
    /// short deadline: dropping a socket with unread input makes the kernel send RST, which
    /// would destroy the close frame before the client reads it.
    pub(crate) async fn close(&mut self, code: u16, reason: &'static str) {
        self.metrics.closed(code);
        let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from_static(reason) };
        if tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                match self.socket.next_awake().await {
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    // The socket cannot be read any more (after an oversized frame, the rest
                    // of it is still unread): hold it open for the linger, so that the peer
                    // reads the close frame before our close turns into a reset.
                    Some(Err(_)) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}

fn classify_error(e: tungstenite::Error) -> Inbound {
    match e {
        tungstenite::Error::Capacity(_) => Inbound::Close(close::TOO_LARGE, "frame too large"),
        tungstenite::Error::Utf8(_) => Inbound::Close(close::INVALID_PAYLOAD, "text frame is not UTF-8"),
        tungstenite::Error::Protocol(_) => Inbound::Close(close::PROTOCOL_ERROR, "WebSocket protocol error"),
        _ => Inbound::Ended,
    }
}

/// Parses a client frame, telling apart bad JSON, unknown ops and bad fields.
pub(crate) fn parse(text: &str) -> Result<ClientFrame, ApiError> {
    serde_json::from_str(text).map_err(|err| {
        let detail = match serde_json::from_str::<serde_json::Value>(text) {
            Err(_) => return ApiError::bad_request(code::INVALID_JSON, "frame is not valid JSON"),
            Ok(serde_json::Value::Object(map)) => match map.get("op") {
                Some(serde_json::Value::String(op)) if !KNOWN_OPS.contains(&op.as_str()) => {
                    return ApiError::bad_request(code::UNKNOWN_OP, "unknown op");
                }
                None => "frame has no \"op\"".to_owned(),
                _ => err.to_string(),
            },
            Ok(_) => {
                return ApiError::bad_request(code::INVALID_JSON, "frame must be a JSON object");
            }
        };
        ApiError::bad_request(code::INVALID_REQUEST, detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_get_distinct_codes() {
        let code_of = |s: &str| parse(s).unwrap_err().code;
        assert_eq!(code_of("not json"), code::INVALID_JSON);
        assert_eq!(code_of("[1]"), code::INVALID_JSON);
        assert_eq!(code_of("\"op\""), code::INVALID_JSON);
        assert_eq!(code_of(r#"{"op":"fly"}"#), code::UNKNOWN_OP);
        assert_eq!(code_of(r#"{"room":"r"}"#), code::INVALID_REQUEST);
        assert_eq!(code_of(r#"{"op":"send","room":"r"}"#), code::INVALID_REQUEST);
        assert_eq!(code_of(r#"{"op":"read","room":"r","seq":"x"}"#), code::INVALID_REQUEST);
        assert_eq!(
            code_of(r#"{"op":"send","room":"r","client_msg_id":"c","body":"\ud800"}"#),
            code::INVALID_JSON
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(code_of(&deep), code::INVALID_JSON);
        assert!(parse(r#"{"op":"ping","extra":1}"#).is_ok(), "unknown fields are ignored");
    }
}
