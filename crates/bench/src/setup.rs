//! Users, rooms and connections for scenarios.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchboard_protocol::ServerFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the server is and how to get tokens for it.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Server base URL; a comma-separated list spreads connections over several nodes
    /// (connection `i` goes to node `i mod n`, so a dm's two members sit on different nodes),
    /// while setup calls go to the first.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The HS256 secret the server accepts for external tokens (its
    /// `--jwt-external-hs256-secret`); users are then created on first connect. Without it,
    /// users are registered with passwords, which costs an Argon2 hash each.
    #[arg(long, env = "SWITCHBOARD_BENCH_SECRET")]
    pub secret: Option<String>,
    /// Write results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Source addresses to spread connections over (127.0.0.1..=127.0.0.N), each good for
    /// about 40,000 connections to one server port (the bench's own source-port range).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
}

impl Target {
    /// Every node's base URL.
    pub fn bases(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// The node setup calls (REST) go to.
    pub fn base(&self) -> &str {
        self.bases().first().copied().unwrap_or("http://127.0.0.1:8080")
    }
}

/// Tokens and ids of the scenario's users.
pub struct Users {
    /// One token per user.
    pub tokens: Vec<String>,
    /// User ids, in the same order.
    pub ids: Vec<String>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A run tag, so repeated runs against one server never share users or rooms.
pub fn run_tag() -> String {
    format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0))
}

/// `n` users named `<prefix><i>`.
pub async fn users(target: &Target, prefix: &str, n: usize) -> anyhow::Result<Users> {
    if let Some(secret) = &target.secret {
        let key = EncodingKey::from_secret(secret.as_bytes()).context("secret")?;
        let exp = now_secs() + 24 * 3600;
        let mut tokens = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}{i}");
            let claims = serde_json::json!({"sub": id, "name": id, "exp": exp});
            tokens.push(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?);
            ids.push(id);
        }
        return Ok(Users { tokens, ids });
    }
    let rest = Rest::new(target.base());
    let made: Vec<anyhow::Result<(String, String)>> = stream::iter(0..n)
        .map(|i| {
            let rest = rest.clone();
            let name = format!("{prefix}{i}");
            async move {
                let body = serde_json::json!({"username": name, "password": "bench-password-1"});
                let v = rest.post("/v1/users", None, &body).await?;
                let token = v["token"].as_str().context("token")?.to_owned();
                let id = v["user"]["id"].as_str().context("id")?.to_owned();
                Ok((token, id))
            }
        })
        .buffered(8)
        .collect()
        .await;
    let mut users = Users { tokens: Vec::with_capacity(n), ids: Vec::with_capacity(n) };
    for m in made {
        let (t, id) = m?;
        users.tokens.push(t);
        users.ids.push(id);
    }
    Ok(users)
}

/// Minimal REST calls the scenarios need.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    pub fn new(base: &str) -> Self {
        Rest { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned() }
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {path}: {status}: {v}");
        }
        Ok(v)
    }

    /// Creates a public room; returns its id.
    pub async fn public_room(&self, token: &str, name: &str) -> anyhow::Result<String> {
        let v =
            self.post("/v1/rooms", Some(token), &serde_json::json!({"name": name, "kind": "public"})).await?;
        Ok(v["id"].as_str().context("room id")?.to_owned())
    }

    /// Creates a room of `kind` with `members`; returns its id and `last_seq`.
    pub async fn room(
        &self,
        token: &str,
        kind: &str,
        name: &str,
        members: &[String],
    ) -> anyhow::Result<(String, u64)> {
        let body = serde_json::json!({"name": name, "kind": kind, "members": members});
        let v = self.post("/v1/rooms", Some(token), &body).await?;
        Ok((v["id"].as_str().context("room id")?.to_owned(), v["last_seq"].as_u64().context("last_seq")?))
    }

    /// Joins a public room; returns its `last_seq` after the join.
    pub async fn join(&self, token: &str, room: &str) -> anyhow::Result<u64> {
        let v = self.post(&format!("/v1/rooms/{room}/join"), Some(token), &serde_json::json!({})).await?;
        v["last_seq"].as_u64().context("last_seq")
    }
}

/// `ws://…/v1/ws` for a base URL.
pub fn ws_url(base: &str, path: &str) -> String {
    let rest = base.trim_end_matches('/').strip_prefix("http").unwrap_or(base);
    format!("ws{rest}{path}")
}

/// Client buffers sized like the servers'. Tungstenite zero-fills its whole spare read buffer
/// before every read: with the 128 KiB default, `memset` took 40% of the bench's CPU in the
/// 5,000-member fanout and the receivers, not the servers, set the latency.
pub fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// Opens a WebSocket from source address `127.0.0.<index % n + 1>` (any address with one).
pub async fn connect(url: &str, target: &Target, index: usize) -> anyhow::Result<Ws> {
    // Several nodes: the same path on node `index mod n`.
    let bases = target.bases();
    let spread;
    let url = if bases.len() > 1 {
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
        spread = ws_url(bases[index % bases.len()], &path);
        spread.as_str()
    } else {
        url
    };
    let host = url.split("//").nth(1).and_then(|r| r.split('/').next()).context("url host")?;
    let addr: SocketAddr = tokio::net::lookup_host(host).await?.next().context("resolve")?;
    let source = if target.source_addrs > 1 {
        let n = u8::try_from(index % usize::from(target.source_addrs)).unwrap_or(0);
        Ipv4Addr::new(127, 0, 0, n + 1)
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let stream = connect_from(source, addr).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(stream),
        Some(client_config()),
    )
    .await?;
    Ok(ws)
}

/// Source ports the bench hands out itself, from a per-run offset.
const PORTS: std::ops::Range<u32> = 20_000..60_000;
/// The next source port to try.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Connects from `source` on a port the bench picks. Left to the kernel, every connect searched
/// the ephemeral range for a free port and checked each candidate against the established
/// connections: with 19,000 open that search was two thirds of the bench's CPU, and the bench,
/// not the server, set the connect rate.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    use std::sync::atomic::Ordering;
    let span = PORTS.end - PORTS.start;
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let _ = NEXT_PORT.compare_exchange(0, nanos % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut last = None;
    for _ in 0..64 {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(PORTS.start + n % span).unwrap_or(0);
        let socket = tokio::net::TcpSocket::new_v4()?;
        // A port of an earlier run may still be in TIME_WAIT: the connect decides.
        socket.set_reuseaddr(true)?;
        if let Err(e) = socket.bind(SocketAddr::new(IpAddr::V4(source), port)) {
            last = Some(e);
            continue;
        }
        match socket.connect(to).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no free source port"), anyhow::Error::from))
}

/// Sends `hello` and waits for `ready`.
pub async fn hello(ws: &mut Ws, token: &str, since: Option<(&str, u64)>) -> anyhow::Result<()> {
    let since = since.map(|(r, s)| serde_json::json!({r: s})).unwrap_or(serde_json::json!({}));
    hello_since(ws, token, since).await
}

/// Sends `hello` with a `since` map and waits for `ready`.
pub async fn hello_since(ws: &mut Ws, token: &str, since: serde_json::Value) -> anyhow::Result<()> {
    let hello = serde_json::json!({"op": "hello", "token": token, "since": since});
    ws.send(Message::Text(hello.to_string().into())).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => bail!("no ready within 30 s"),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerFrame::Ready { .. }) = serde_json::from_str::<ServerFrame>(&t) {
                    return Ok(());
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => bail!("closed during hello: {f:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("connection ended during hello"),
        }
    }
}
