//! Faults against a cluster of real processes on PostgreSQL and NATS: a node killed with
//! `kill -9` during sustained sends, NATS restarted, PostgreSQL restarted. A checker logs every
//! `client_msg_id → ack(seq) → delivery` and counts lost, duplicated and reordered records;
//! the pass mark is zero of each.
//!
//! NATS and Redis here are private servers on free ports, so they can be killed and restarted
//! without touching anyone else's. Presence has its own faults: a node killed takes its users
//! offline within the TTL, and a Redis lost and restarted empty neither blocks sends nor keeps
//! anyone offline. The PostgreSQL restart restarts the machine's server: this
//! binary's tests run one at a time (a lock below) and scripts/test runs test binaries one
//! after another.
//!
//! `#[ignore]`d in a plain `cargo test`; scripts/test runs them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_client::protocol::{RoomKind, ServerFrame, Status};
use switchboard_client::{Client, Session, SessionConfig, SessionEvent};

/// One test at a time: they restart shared engines.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "faults-test-secret-0123456789abcdef0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An engine process of this test's own (`nats-server` or `redis-server`) on a free port, so it
/// can be killed and restarted without touching anyone else's.
struct Engine {
    child: Option<Child>,
    port: u16,
    program: &'static str,
    args: fn(u16) -> Vec<String>,
}

impl Engine {
    fn start(program: &'static str, args: fn(u16) -> Vec<String>) -> Engine {
        let mut e = Engine { child: None, port: free_port(), program, args };
        e.restart();
        e
    }

    fn nats() -> Engine {
        Self::start("nats-server", |port| {
            vec!["-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string()]
        })
    }

    /// A Redis that keeps nothing on disk: a restart comes back empty.
    fn redis() -> Engine {
        Self::start("redis-server", |port| {
            let args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port"];
            let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            v.push(port.to_string());
            v
        })
    }

    fn restart(&mut self) {
        let child = Command::new(self.program)
            .args((self.args)(self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|_| panic!("{} runs (scripts/services installs it)", self.program));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not start", self.program);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        let scheme = if self.program == "redis-server" { "redis" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Node {
    child: Child,
    base: String,
}

impl Node {
    /// A node on `store`, `nats` and presence on `redis` (the machine's, under a prefix of its
    /// own, when `None`).
    async fn spawn(i: usize, store: &str, nats: &str, redis: Option<&str>, data: &std::path::Path) -> Node {
        let (redis, prefix) = match redis {
            Some(url) => (url.to_owned(), "faults".to_owned()),
            None => (common::redis_url(), common::redis_prefix()),
        };
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data.join(format!("n{i}")))
            .args(["--store", store, "--bus", nats, "--node-id", &format!("node-{i}")])
            .args(["--lease-ttl-ms", "1000", "--position-check-ms", "500", "--pg-pool-size", "6"])
            .args(["--user-sends-per-sec", "100000", "--user-sends-burst", "100000"])
            .args(["--room-sends-per-sec", "100000", "--room-sends-burst", "100000", "--duplicate-max", "0"])
            .args(["--room-joins-per-min", "0"])
            .args(["--signups-per-ip-per-hour", "100000", "--store-timeout-ms", "1000"])
            .args(["--presence", &redis, "--presence-prefix", &prefix, "--presence-ttl-ms", "3000"])
            .args(["--presence-grace-ms", "300", "--presence-interval-ms", "50", "--bus-timeout-ms", "500"])
            .env("SWITCHBOARD_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("binary starts");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status().is_success()
            {
                return Node { child, base };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {i} did not become ready");
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn ws(&self) -> String {
        Client::new(&self.base).ws_url()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A session that moves to the next node when its connection drops, resuming from the last
/// `seq` it received; records every timeline `seq` of `room` it is given.
async fn follow(
    urls: Vec<String>,
    token: String,
    room: String,
    until: tokio::sync::watch::Receiver<u64>,
) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut which = 0;
    // From the room's start: whatever was sent before this follower first connected too.
    let mut since: BTreeMap<String, u64> = BTreeMap::from([(room.clone(), 0)]);
    loop {
        let target = *until.borrow();
        if target > 0 && seen.last().copied().unwrap_or(0) >= target {
            return seen;
        }
        let cfg = SessionConfig {
            url: urls[which % urls.len()].clone(),
            token: token.clone(),
            since: since.clone(),
            reconnect: false,
        };
        which += 1;
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(3), Session::connect(cfg)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let target = *until.borrow();
            if target > 0 && seen.last().copied().unwrap_or(0) >= target {
                return seen;
            }
            match tokio::time::timeout(Duration::from_secs(2), s.next_event()).await {
                Ok(Some(SessionEvent::Frame(f))) => {
                    if let Some((r, seq)) = f.timeline_pos()
                        && r == room
                    {
                        seen.push(seq);
                        since.insert(room.clone(), seq);
                    }
                    if let ServerFrame::Gap { .. } = f {
                        panic!("a gap the server could not fill: {f:?}");
                    }
                }
                Ok(Some(SessionEvent::Disconnected { .. })) | Ok(None) => break,
                // Quiet: the sends may be over; check the target and keep waiting.
                Err(_) => continue,
            }
        }
    }
}

/// Sends `n` messages with fixed keys, moving to the next node (and retrying the same key)
/// when a send fails; returns `key → seq` for every ack.
async fn send_all(
    urls: Vec<String>,
    token: String,
    room: String,
    tag: String,
    n: usize,
) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let mut which = 0;
    let mut session: Option<Session> = None;
    let mut i = 0;
    while i < n {
        if session.is_none() {
            let cfg = SessionConfig {
                url: urls[which % urls.len()].clone(),
                token: token.clone(),
                since: BTreeMap::new(),
                reconnect: false,
            };
            which += 1;
            match tokio::time::timeout(Duration::from_secs(3), Session::connect(cfg)).await {
                Ok(Ok(s)) => session = Some(s),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let key = format!("{tag}-{i}");
        let s = session.as_ref().unwrap();
        match tokio::time::timeout(Duration::from_secs(3), s.send_with_id(&room, &key, &key)).await {
            Ok(Ok(ack)) => {
                acked.insert(key, ack.seq);
                i += 1;
            }
            Ok(Err(e)) => {
                // A refusal must be retryable (never an ack for something not stored).
                if let Some(code) = e.code() {
                    assert!(
                        matches!(code, "unavailable" | "draining" | "rate_limited"),
                        "send refused with {code}"
                    );
                }
                session = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => session = None,
        }
    }
    acked
}

/// Lost, duplicated and reordered records of one receiver, against the acks.
fn check(receiver: &[u64], acked: &HashMap<String, u64>) -> (usize, usize, usize) {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for s in receiver {
        *counts.entry(*s).or_default() += 1;
    }
    let lost = acked.values().filter(|s| !counts.contains_key(s)).count();
    let duplicated = counts.values().filter(|c| **c > 1).count();
    let reordered = receiver.windows(2).filter(|w| w[1] <= w[0]).count();
    (lost, duplicated, reordered)
}

/// Fields drop in order: the nodes stop before their data and schema go.
struct Setup {
    nodes: Vec<Node>,
    _schema: common::PgSchema,
    _data: tempfile::TempDir,
    token: String,
    reader_token: String,
    room: String,
}

async fn setup(n: usize, nats: &str) -> Setup {
    let schema = common::PgSchema::create().await;
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::spawn(i, &schema.url, nats, None, data.path()).await);
    }
    let c = Client::new(&nodes[0].base);
    let writer = c.register("writer", "correct horse battery").await.unwrap();
    let reader = c.register("reader", "correct horse battery").await.unwrap();
    let reader_client = Client::new(&nodes[0].base).with_token(&reader.token);
    reader_client.set_add_policy(switchboard_client::protocol::AddPolicy::Anyone).await.unwrap();
    let w = Client::new(&nodes[0].base).with_token(&writer.token);
    let room = w.create_room("faults", RoomKind::Private, &[&reader.user.id]).await.unwrap();
    Setup {
        _schema: schema,
        _data: data,
        nodes,
        token: writer.token,
        reader_token: reader.token,
        room: room.id,
    }
}

/// Runs senders and followers while `fault` happens, then checks every receiver.
async fn run_with_fault(s: &mut Setup, fault: impl AsyncFnOnce(&mut Setup)) {
    let urls: Vec<String> = s.nodes.iter().map(Node::ws).collect();
    let (done_tx, done_rx) = tokio::sync::watch::channel(0u64);
    let mut followers = Vec::new();
    for (k, token) in
        [s.reader_token.clone(), s.reader_token.clone(), s.token.clone()].into_iter().enumerate()
    {
        let mut order = urls.clone();
        order.rotate_left(k % urls.len());
        followers.push(tokio::spawn(follow(order, token, s.room.clone(), done_rx.clone())));
    }
    let mut senders = Vec::new();
    for k in 0..3 {
        let mut order = urls.clone();
        order.rotate_left(k % urls.len());
        senders.push(tokio::spawn(send_all(order, s.token.clone(), s.room.clone(), format!("s{k}"), 300)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    fault(s).await;
    let mut acked = HashMap::new();
    for t in senders {
        acked
            .extend(tokio::time::timeout(Duration::from_secs(90), t).await.expect("senders finish").unwrap());
    }
    assert_eq!(acked.len(), 900, "every message acked in the end");
    let last = acked.values().copied().max().unwrap();
    done_tx.send_replace(last);
    for f in followers {
        let seen =
            tokio::time::timeout(Duration::from_secs(60), f).await.expect("followers catch up").unwrap();
        let tail: Vec<u64> = seen.iter().copied().filter(|s| acked.values().any(|a| a == s)).collect();
        assert_eq!(check(&tail, &acked), (0, 0, 0), "lost, duplicated, reordered");
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "the whole timeline in order, no repeats");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn kill_9_of_a_node_during_sends_loses_and_repeats_nothing() {
    let _serial = SERIAL.lock().await;
    let nats = Engine::nats();
    let mut s = setup(3, &nats.url()).await;
    run_with_fault(&mut s, async |s: &mut Setup| {
        s.nodes[0].kill_9();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn nats_restarted_during_sends_loses_nothing_acked() {
    let _serial = SERIAL.lock().await;
    let mut nats = Engine::nats();
    let url = nats.url();
    let mut s = setup(2, &url).await;
    run_with_fault(&mut s, async |_s: &mut Setup| {
        nats.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nats.restart();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn postgres_restarted_during_sends_loses_nothing_acked() {
    let _serial = SERIAL.lock().await;
    let nats = Engine::nats();
    let mut s = setup(2, &nats.url()).await;
    run_with_fault(&mut s, async |_s: &mut Setup| {
        let status = tokio::task::spawn_blocking(|| {
            let version = std::fs::read_dir("/etc/postgresql")
                .ok()
                .and_then(|d| {
                    d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).max()
                })
                .expect("a PostgreSQL cluster in /etc/postgresql");
            Command::new("pg_ctlcluster").args([&version, "main", "restart", "-m", "fast"]).status()
        })
        .await
        .unwrap()
        .expect("pg_ctlcluster runs");
        assert!(status.success(), "PostgreSQL restarted");
    })
    .await;
}

/// A session on `node` for `token`, ready.
async fn session_on(node: &Node, token: &str) -> Session {
    let cfg =
        SessionConfig { url: node.ws(), token: token.to_owned(), since: BTreeMap::new(), reconnect: false };
    Session::connect(cfg).await.expect("session connects")
}

/// Waits up to `secs` for `user`'s presence with `status` on `s`; returns how long it took.
async fn wait_presence(s: &mut Session, user: &str, status: Status, secs: u64) -> Duration {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let f = tokio::time::timeout_at(deadline, s.next_frame())
            .await
            .unwrap_or_else(|_| panic!("no {status:?} for {user} within {secs} s"))
            .expect("session open");
        if let ServerFrame::Presence(p) = f
            && p.user == user
            && p.status == status
        {
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn kill_9_of_a_node_takes_its_users_offline_within_the_ttl() {
    let _serial = SERIAL.lock().await;
    let (nats, redis) = (Engine::nats(), Engine::redis());
    let schema = common::PgSchema::create().await;
    let data = tempfile::tempdir().unwrap();
    let mut doomed = Node::spawn(0, &schema.url, &nats.url(), Some(&redis.url()), data.path()).await;
    let other = Node::spawn(1, &schema.url, &nats.url(), Some(&redis.url()), data.path()).await;
    let c = Client::new(&other.base);
    let alice = c.register("alice", "correct horse battery").await.unwrap();
    let watcher = c.register("watcher", "correct horse battery").await.unwrap();
    let w = Client::new(&other.base).with_token(&watcher.token);
    w.set_add_policy(switchboard_client::protocol::AddPolicy::Anyone).await.unwrap();
    let a = Client::new(&other.base).with_token(&alice.token);
    a.create_room("r", RoomKind::Private, &[&watcher.user.id]).await.unwrap();
    let mut watching = session_on(&other, &watcher.token).await;
    let _alice_on = session_on(&doomed, &alice.token).await;
    wait_presence(&mut watching, &alice.user.id, Status::Online, 5).await;
    doomed.kill_9();
    // The TTL is 3 s; the surviving node sweeps every half second.
    let took = wait_presence(&mut watching, &alice.user.id, Status::Offline, 10).await;
    assert!(took < Duration::from_millis(4500), "offline {took:?} after the kill, TTL 3 s");
    assert_eq!(w.presence(&alice.user.id).await.unwrap().status, Status::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL, NATS and Redis: scripts/test runs it"]
async fn a_redis_lost_and_restarted_empty_blocks_nothing_and_everyone_comes_back() {
    let _serial = SERIAL.lock().await;
    let (nats, mut redis) = (Engine::nats(), Engine::redis());
    let schema = common::PgSchema::create().await;
    let data = tempfile::tempdir().unwrap();
    let node = Node::spawn(0, &schema.url, &nats.url(), Some(&redis.url()), data.path()).await;
    let c = Client::new(&node.base);
    let alice = c.register("alice", "correct horse battery").await.unwrap();
    let bob = c.register("bob", "correct horse battery").await.unwrap();
    let b = Client::new(&node.base).with_token(&bob.token);
    b.set_add_policy(switchboard_client::protocol::AddPolicy::Anyone).await.unwrap();
    let a = Client::new(&node.base).with_token(&alice.token);
    let room = a.create_room("r", RoomKind::Private, &[&bob.user.id]).await.unwrap();
    let alice_on = session_on(&node, &alice.token).await;
    assert_eq!(b.presence(&alice.user.id).await.unwrap().status, Status::Online);
    redis.kill();
    // Sends are acked, a new hello is answered, and the node stays ready.
    let started = std::time::Instant::now();
    alice_on.send(&room.id, "while Redis is down").await.expect("acked without Redis");
    let _bob_on = tokio::time::timeout(Duration::from_secs(5), session_on(&node, &bob.token))
        .await
        .expect("hello answered");
    assert!(started.elapsed() < Duration::from_secs(5));
    let ready: serde_json::Value =
        reqwest::get(format!("{}/readyz", node.base)).await.unwrap().json().await.unwrap();
    assert_eq!((ready["status"].as_str(), ready["presence"].as_str()), (Some("ready"), Some("unavailable")));
    let err = b.presence(&alice.user.id).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(503), Some("unavailable")));
    // Back, empty: the next renewal (a third of the 3 s TTL) registers every open connection.
    redis.restart();
    let mut back = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(p) = b.presence(&alice.user.id).await
            && p.status == Status::Online
        {
            back = true;
            break;
        }
    }
    assert!(back, "alice is online again after Redis came back empty");
}
