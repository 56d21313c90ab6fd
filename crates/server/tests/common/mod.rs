//! Helpers for tests that run a real server on a free port and talk to it over sockets.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard::app::Server;
use switchboard::config::Config;
use switchboard_client::protocol::{ServerFrame, User};
use switchboard_client::{Client, Session, SessionConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A server on 127.0.0.1:0 with its own data directory, drained when dropped.
pub struct TestServer {
    pub base: String,
    /// Base URL of the metrics listener.
    pub metrics: String,
    pub shutdown: CancellationToken,
    pub data: tempfile::TempDir,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let data = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data: data.path().to_path_buf(),
            commit_batch: 256,
            drain_timeout_ms: 2_000,
            // Tests make many users and messages from one address in a moment; the tests of
            // the throttles themselves set these back.
            signups_per_ip_per_hour: 100_000,
            logins_per_ip_per_min: 100_000,
            user_sends_per_sec: 100_000,
            user_sends_burst: 100_000,
            room_sends_per_sec: 100_000,
            room_sends_burst: 100_000,
            duplicate_max: 0,
            room_joins_per_min: 0,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Config::default()
        };
        adjust(&mut cfg);
        let server = Server::start(cfg).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        let metrics = server.metrics_addr.map(|a| format!("http://{a}")).unwrap_or_default();
        let shutdown = server.shutdown_token();
        let done = tokio::spawn(server.wait());
        TestServer { base, metrics, shutdown, data, done: Some(done) }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    pub fn ws_url(&self) -> String {
        self.client().ws_url()
    }

    /// Registers `name` and returns an authenticated client and the user, who accepts being
    /// added to rooms directly (`add_policy` = `anyone`), as most tests assume.
    pub async fn user(&self, name: &str) -> (Client, User) {
        let (c, u) = self.user_with_defaults(name).await;
        c.set_add_policy(switchboard_client::protocol::AddPolicy::Anyone).await.expect("add policy");
        (c, u)
    }

    /// Registers `name` with the default settings (adds become invites).
    pub async fn user_with_defaults(&self, name: &str) -> (Client, User) {
        let auth = self.client().register(name, "correct horse battery").await.expect("register");
        (self.client().with_token(&auth.token), auth.user)
    }

    /// Opens an SDK session for a client.
    pub async fn session(&self, c: &Client, since: BTreeMap<String, u64>) -> Session {
        let cfg = SessionConfig {
            url: self.ws_url(),
            token: c.token().expect("token").to_owned(),
            since,
            reconnect: false,
        };
        Session::connect(cfg).await.expect("session connects")
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits for the next frame matching `pred`, failing after 5 s.
pub async fn expect_frame(s: &mut Session, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let f = tokio::time::timeout_at(deadline, s.next_frame())
            .await
            .expect("timed out waiting for a frame")
            .expect("session ended");
        if pred(&f) {
            return f;
        }
    }
}

/// Sends a message over the gateway and waits for its answer: `Ok` when acked, else the
/// refusal's code and `retry_after_ms`. Other frames meanwhile are skipped.
#[allow(dead_code)]
pub async fn gateway_send(
    s: &mut Session,
    room: &str,
    key: &str,
    body: &str,
) -> Result<(), (String, Option<u64>)> {
    s.send_frame(&switchboard_client::protocol::ClientFrame::Send {
        room: room.to_owned(),
        client_msg_id: key.to_owned(),
        body: body.to_owned(),
    })
    .expect("send a frame");
    let frame = expect_frame(s, |f| match f {
        ServerFrame::Ack { client_msg_id, .. } => client_msg_id == key,
        ServerFrame::Error { client_msg_id: Some(k), .. } => k == key,
        _ => false,
    })
    .await;
    match frame {
        ServerFrame::Error { code, retry_after_ms, .. } => Err((code, retry_after_ms)),
        _ => Ok(()),
    }
}

/// Asserts no frame matching `pred` arrives within `ms`.
pub async fn expect_none(s: &mut Session, ms: u64, mut pred: impl FnMut(&ServerFrame) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, s.next_frame()).await {
        assert!(!pred(&f), "unexpected frame {f:?}");
    }
}

pub type Raw = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket, for sending what the SDK never would.
pub async fn raw(server: &TestServer) -> Raw {
    tokio_tungstenite::connect_async(server.ws_url()).await.expect("ws connects").0
}

/// A raw WebSocket whose 4 KiB receive buffer fills at once: a client that reads slowly, or
/// not at all.
pub async fn raw_slow_reader(server: &TestServer) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(socket.connect(addr).await.unwrap());
    tokio_tungstenite::client_async(server.ws_url(), stream).await.unwrap().0
}

/// Sends `hello` on a raw socket and waits for `ready`.
pub async fn raw_hello(ws: &mut Raw, token: &str) {
    let hello = serde_json::json!({"op": "hello", "token": token});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    loop {
        match raw_next(ws).await {
            RawEvent::Frame(ServerFrame::Ready { .. }) => return,
            RawEvent::Frame(_) => continue,
            other => panic!("expected ready, got {other:?}"),
        }
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum RawEvent {
    Frame(ServerFrame),
    Closed(Option<u16>),
}

/// The next text frame or the close, within 5 s.
pub async fn raw_next(ws: &mut Raw) -> RawEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("timed out on raw socket");
        match msg {
            Some(Ok(Message::Text(t))) => {
                return RawEvent::Frame(serde_json::from_str(&t).expect("server frame decodes"));
            }
            Some(Ok(Message::Close(f))) => return RawEvent::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return RawEvent::Closed(None),
        }
    }
}

/// Sends raw text and returns the next frame's error code.
pub async fn raw_error_code(ws: &mut Raw, text: &str) -> String {
    ws.send(Message::Text(text.to_owned().into())).await.unwrap();
    match raw_next(ws).await {
        RawEvent::Frame(ServerFrame::Error { code, .. }) => code,
        other => panic!("expected an error frame for {text:.80}, got {other:?}"),
    }
}

/// Waits for the close code, skipping frames.
pub async fn raw_close_code(ws: &mut Raw) -> Option<u16> {
    loop {
        if let RawEvent::Closed(code) = raw_next(ws).await {
            return code;
        }
    }
}

/// The PostgreSQL database the networked tests use (scripts/test creates a fresh one per run).
pub fn pg_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!("SWITCHBOARD_TEST_POSTGRES is not set: this test needs PostgreSQL (scripts/test sets it up)")
    })
}

/// The NATS server the networked tests use.
pub fn nats_url() -> String {
    std::env::var("SWITCHBOARD_TEST_NATS").unwrap_or_else(|_| {
        panic!("SWITCHBOARD_TEST_NATS is not set: this test needs NATS (scripts/test sets it up)")
    })
}

/// This test run's NATS subject prefix (tests add their own part).
pub fn nats_prefix() -> String {
    std::env::var("SWITCHBOARD_TEST_NATS_PREFIX").unwrap_or_else(|_| "sbtest".into())
}

/// The Redis the networked tests use (scripts/test sets it up).
pub fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| {
        panic!("SWITCHBOARD_TEST_REDIS is not set: these tests need Redis (scripts/test sets it up)")
    })
}

/// A Redis key prefix of this test's own, under this run's (scripts/test deletes the run's keys).
pub fn redis_prefix() -> String {
    let run = std::env::var("SWITCHBOARD_TEST_REDIS_PREFIX").unwrap_or_else(|_| "sbtest".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{run}:{nanos:x}")
}

/// A fresh schema in the test database, dropped when the test ends; `url` selects it.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    pub async fn create() -> PgSchema {
        let base = pg_url();
        let name = format!(
            "it_{:x}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        );
        let (client, conn) =
            tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE SCHEMA {name}")).await.expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        PgSchema { name, url }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (pg_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await;
                }
            });
        })
        .join();
    }
}

/// A token from "the operator's backend" (HS256 with `secret`), for `sub`: users appear on
/// first use, with no password to hash, so tests can make thousands.
pub fn external_token(secret: &str, sub: &str, exp: u64, iat: Option<u64>) -> String {
    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if let Some(iat) = iat {
        claims["iat"] = iat.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
