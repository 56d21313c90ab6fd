//! The HTTP listener: accepts connections with a cap per client address, gives every
//! connection deadlines, and backs off when accepting fails (out of files) instead of spinning.
//!
//! `axum::serve` holds a socket that sends nothing, or trickles a header line every 30 s, for
//! ever. Here hyper's header deadline covers both a request's head and the idle time of a
//! kept-alive connection before its next request; bodies have their own deadline where they are
//! read ([`crate::api`]); WebSockets have the `hello` deadline and heartbeats. A connection's
//! place under its address's cap ([`ConnSlot`]) travels with its requests, so a WebSocket
//! upgrade keeps holding it for the session's whole life.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::limits::client_key;
use crate::metrics::Metrics;

/// Largest buffered request head (and read buffer) per connection: tokens are at most 8 KiB.
const MAX_BUF: usize = 32 * 1024;
/// Longest a write to a client may make no progress (a client that stops reading a response).
const WRITE_STALL: Duration = Duration::from_secs(30);
/// First and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Open connections per client address.
struct Slots {
    counts: Mutex<HashMap<IpAddr, u32>>,
    cap: u32,
}

/// One connection's place under its address's cap; given back when the last holder drops it
/// (the HTTP connection, and the WebSocket session it may have become).
pub struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.slots.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A request extension: the connection's slot, for a WebSocket upgrade to keep.
#[derive(Clone)]
pub struct ConnSlot(pub Arc<Slot>);

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if self.cap > 0 && *n >= self.cap {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Slot { slots: self.clone(), key })
    }
}

/// What the listener needs to know.
pub struct ListenerConfig {
    /// Connections per client address (0 = no cap).
    pub per_ip: u32,
    /// Deadline for a request head, and for an idle kept-alive connection.
    pub head_timeout: Duration,
}

/// Serves `router` on `listener` until `stop`, then asks every connection to finish its
/// current request and waits for them (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ListenerConfig,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Slots { counts: Mutex::new(HashMap::new()), cap: cfg.per_ip });
    let conns = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => {
                backoff = ACCEPT_BACKOFF.0;
                c
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of files (EMFILE/ENFILE) or memory: wait for connections to close
                // rather than spinning on a listener that stays readable.
                metrics.accept_errors.inc();
                tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            metrics.connections_refused.inc();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let slot = ConnSlot(Arc::new(slot));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(slot.clone());
            router.clone().call(req)
        });
        let stop = stop.clone();
        let head_timeout = cfg.head_timeout;
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(head_timeout).max_buf_size(MAX_BUF);
            let io: TokioIo<Accepted> = TokioIo::new(WriteDeadline::new(tcp));
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// What every connection served here runs on (under hyper's `TokioIo`), and so what an
/// upgraded WebSocket's connection is: the gateway takes it back out of hyper's box.
pub(crate) type Accepted = WriteDeadline<tokio::net::TcpStream>;

/// A connection whose writes must make progress within `WRITE_STALL`: hyper has no write deadline,
/// so a client that asks for responses and never reads them would hold them (and their
/// buffers) for ever. The timer exists only while a write is waiting.
pub(crate) struct WriteDeadline<T> {
    io: T,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T) -> Self {
        WriteDeadline { io, stalled: None }
    }

    /// Called when a write could not go on: fails it once the stall lasts too long.
    fn waiting(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Errors that concern one connection (it was reset before we took it), not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves only `/metrics` on its own address (kept off the client listener: the numbers tell a
/// stranger how busy the node is and who is connected).
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ([(axum::http::header::CONTENT_TYPE, content_type)], metrics.render())
            }
        }),
    );
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    if let Err(e) = served.await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

/// The address a request came from.
pub fn peer(req_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    req_extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
