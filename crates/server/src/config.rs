//! Configuration: built-in defaults, overridden by an optional TOML file, overridden by
//! environment variables (`SWITCHBOARD_*`) and command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything the server reads at start. Field names are the TOML keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the embedded database and the generated token secret.
    pub data: PathBuf,
    /// Store URL: `sqlite://PATH` (default: `<data>/switchboard.db`) or `postgres://…`.
    pub store: Option<String>,
    /// Connections each node keeps to PostgreSQL.
    pub pg_pool_size: usize,
    /// Longest wait for a database connection: how fast calls fail while it is unreachable.
    pub store_timeout_ms: u64,
    /// Bus: `local` (in-process) or `nats://HOST:PORT`.
    pub bus: String,
    /// First token of every NATS subject: clusters sharing one NATS use different ones.
    pub nats_prefix: String,
    /// Longest wait for the bus to connect or answer.
    pub bus_timeout_ms: u64,
    /// This node's name in a cluster (logs, metrics, `/readyz`, leases); a random one per start
    /// when unset.
    pub node_id: Option<String>,
    /// How long a node holds a log consumer's lease (the relay's) without renewing it: how
    /// soon another node takes the work over after this one dies.
    pub lease_ttl_ms: u64,
    /// How often a node compares the rooms it holds sessions in with the store, to catch a
    /// quiet room whose last events were lost on the bus.
    pub position_check_ms: u64,
    /// Typing indicators one user's devices together send into one room: one per this long
    /// reaches the room (0 = no throttle). Clients show one for a few seconds.
    pub typing_interval_ms: u64,
    /// Presence: `local` (in-process), `redis://HOST:PORT` (shared by a cluster) or `off`.
    pub presence: String,
    /// First part of every Redis key: clusters sharing one Redis use different ones.
    pub presence_prefix: String,
    /// A connection's presence lives this long unrenewed (nodes renew every third of it): how
    /// soon a crashed node's users go offline.
    pub presence_ttl_ms: u64,
    /// A closed connection still counts this long, so a reconnect within it (a flapping phone)
    /// is no change at all.
    pub presence_grace_ms: u64,
    /// A connection with no client activity (pings aside) for this long is away.
    pub presence_away_after_ms: u64,
    /// Rooms with more members get an online count instead of per-member presence frames, and
    /// read markers only to the reader's own devices.
    pub presence_room_limit: u64,
    /// At most one presence change per user per this long leaves a node (the latest wins).
    pub presence_interval_ms: u64,
    /// At most one online count per large room per this long.
    pub presence_count_ms: u64,
    /// Anyone may read anyone's presence over REST (otherwise only people sharing a room).
    pub presence_public: bool,
    /// Longest custom status text, in characters.
    pub max_status_chars: usize,
    /// Secret for Switchboard's own HS256 tokens; generated into `<data>/jwt_secret` if unset.
    pub jwt_secret: Option<String>,
    /// Lifetime of tokens Switchboard issues, in seconds.
    pub token_ttl_secs: u64,
    /// Accept tokens from the operator's backend signed with this HS256 secret.
    pub jwt_external_hs256_secret: Option<String>,
    /// Accept tokens from the operator's backend signed by this RS256 key (PEM file path).
    pub jwt_external_rs256_public_key: Option<PathBuf>,
    /// Required `iss` of external tokens, when set.
    pub jwt_external_issuer: Option<String>,
    /// Required `aud` of external tokens, when set.
    pub jwt_external_audience: Option<String>,
    /// Browser origins allowed to open WebSockets; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message accepted, in bytes (larger closes with 1009).
    pub max_frame_bytes: usize,
    /// Largest REST request body, in bytes.
    pub max_request_bytes: usize,
    /// Longest message body, in Unicode scalar values.
    pub max_body_chars: usize,
    /// Frames queued per connection before it is closed as a slow consumer (4010).
    pub send_queue: usize,
    /// Frames per second a connection may send, sustained.
    pub rate_per_sec: u32,
    /// Frames a connection may send in a burst.
    pub rate_burst: u32,
    /// Server ping interval; a client silent for 2.5 intervals is closed (4009).
    pub heartbeat_ms: u64,
    /// Time allowed for `hello` after connecting (then 4001).
    pub hello_timeout_ms: u64,
    /// Most timeline events replayed per room on resume; beyond it the server sends `gap`.
    pub replay_limit: u32,
    /// Most writes per SQLite group commit (1 = one fsync per write).
    pub commit_batch: usize,
    /// Time allowed for sessions to finish in-flight work when draining.
    pub drain_timeout_ms: u64,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Where `/metrics` is served, apart from the client listener; unset serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Time allowed to send a request's head, and for a kept-alive connection to start its
    /// next request, before the connection is closed.
    pub request_head_timeout_ms: u64,
    /// Time allowed to send a request's body once its head has arrived (then `408`).
    pub request_body_timeout_ms: u64,
    /// Open connections (HTTP and WebSocket) one client address may hold; 0 = no cap. IPv6
    /// addresses count per /64.
    pub max_connections_per_ip: u32,
    /// Gateway connections one user may hold on this node (then close 4012); 0 = no cap.
    pub max_sessions_per_user: u32,
    /// Signed-in sessions (tokens) a user may hold; signing in past it ends the oldest.
    pub max_logins_per_user: u32,
    /// Threads that hash passwords (0 = one per core): the budget for Argon2's CPU and memory.
    pub hash_threads: usize,
    /// Password checks that may wait for a hashing thread; past it, `503` with `Retry-After`.
    pub hash_queue: usize,
    /// Who may create accounts with a password: `open`, `invite` (an invite token from
    /// `switchboard invite` or the operator's backend) or `closed`.
    pub registration: String,
    /// Sign-ups one client address may make per hour.
    pub signups_per_ip_per_hour: u32,
    /// Login attempts one client address may make per minute (successful or not).
    pub logins_per_ip_per_min: u32,
    /// Failed logins for one account from one address before each further attempt must wait
    /// (1 s, doubling, at most 15 min).
    pub login_free_failures: u32,
    /// Writes (messages, edits, deletes, new rooms, adds, joins) one user may make per second
    /// across all their connections and REST: one budget, so that none is a way around it.
    pub user_sends_per_sec: u32,
    /// Burst of writes one user may make at once.
    pub user_sends_burst: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (behind your own proxy).
    pub trust_forwarded_for: bool,
    /// Shared limits (per-user and per-room send rates, duplicates, join floods): `local` (this
    /// node's memory) or `redis://HOST:PORT` (counted across the cluster). Unset: the presence
    /// backend's Redis when presence is on Redis, else `local`.
    pub limits: Option<String>,
    /// Messages per room per second, from all members together (moderators too).
    pub room_sends_per_sec: u32,
    /// Burst of messages per room.
    pub room_sends_burst: u32,
    /// The same text from one user at most this many times per `duplicate_window_secs`, in any
    /// rooms (0: no check).
    pub duplicate_max: u32,
    /// The window of `duplicate_max`.
    pub duplicate_window_secs: u32,
    /// Joins of one public room per minute, from everyone together (0: no cap): a raid on a
    /// public room is slowed down instead of filling it.
    pub room_joins_per_min: u32,
    /// Most mentions (`@name`) in one message.
    pub max_mentions: usize,
    /// Server-wide content filters (the `[filters]` table), applied in every room before the
    /// room's own.
    pub filters: switchboard_protocol::rest::Filters,
    /// A file of words for the server-wide filter, one per line (added to `filters.words`).
    pub filter_words_file: Option<PathBuf>,
    /// Server-wide admins (user ids): they moderate every room with an owner's rights (ban,
    /// mute, delete, purge, roles below owner, settings, reports, the audit log) without being
    /// members. Every node writes this list to the store at start: keep it the same on all.
    pub admins: Vec<String>,
    /// The operator's classifier, asked about every message before it is stored (off when
    /// unset): `http://` or `https://`.
    pub hook_url: Option<String>,
    /// Longest wait for the classifier's answer.
    pub hook_timeout_ms: u64,
    /// When the classifier cannot be asked (down, slow, wrong), let messages through (`true`)
    /// or refuse them with `503 unavailable` (`false`).
    pub hook_fail_open: bool,
    /// Let the hook call loopback and private addresses (a classifier on this host or network).
    pub hook_allow_private: bool,
    /// Classifier calls in flight at once per node; a send finding none free is handled as a
    /// failed call, without waiting.
    pub hook_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("./data"),
            store: None,
            pg_pool_size: 16,
            store_timeout_ms: 2_000,
            bus: "local".into(),
            nats_prefix: "sb".into(),
            bus_timeout_ms: 2_000,
            node_id: None,
            lease_ttl_ms: 3_000,
            position_check_ms: 2_000,
            typing_interval_ms: 2_000,
            presence: "local".into(),
            presence_prefix: "sb".into(),
            presence_ttl_ms: 20_000,
            presence_grace_ms: 5_000,
            presence_away_after_ms: 600_000,
            presence_room_limit: 250,
            presence_interval_ms: 1_000,
            presence_count_ms: 3_000,
            presence_public: false,
            max_status_chars: 100,
            jwt_secret: None,
            token_ttl_secs: 7 * 24 * 3600,
            jwt_external_hs256_secret: None,
            jwt_external_rs256_public_key: None,
            jwt_external_issuer: None,
            jwt_external_audience: None,
            allowed_origins: Vec::new(),
            max_frame_bytes: 64 * 1024,
            max_request_bytes: 64 * 1024,
            max_body_chars: 4000,
            send_queue: 1024,
            rate_per_sec: 50,
            rate_burst: 100,
            heartbeat_ms: 30_000,
            hello_timeout_ms: 10_000,
            replay_limit: 1000,
            commit_batch: 1024,
            drain_timeout_ms: 10_000,
            log_format: "text".into(),
            metrics_listen: None,
            request_head_timeout_ms: 15_000,
            request_body_timeout_ms: 15_000,
            max_connections_per_ip: 256,
            max_sessions_per_user: 32,
            max_logins_per_user: 100,
            hash_threads: 0,
            hash_queue: 32,
            registration: "open".into(),
            signups_per_ip_per_hour: 20,
            logins_per_ip_per_min: 60,
            login_free_failures: 5,
            user_sends_per_sec: 20,
            user_sends_burst: 60,
            trust_forwarded_for: false,
            limits: None,
            room_sends_per_sec: 50,
            room_sends_burst: 200,
            duplicate_max: 5,
            duplicate_window_secs: 30,
            room_joins_per_min: 120,
            max_mentions: 20,
            filters: switchboard_protocol::rest::Filters::default(),
            filter_words_file: None,
            admins: Vec::new(),
            hook_url: None,
            hook_timeout_ms: 500,
            hook_fail_open: true,
            hook_allow_private: false,
            hook_concurrency: 256,
        }
    }
}

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about = "Switchboard: a real-time chat server")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the chat API, WebSocket gateway and browser client (the default).
    Serve(ServeArgs),
    /// Print an invite token for sign-ups when `registration` is `invite` (signed with this
    /// node's secret, so it takes the same `--data`/`--jwt-secret` as `serve`).
    Invite(InviteArgs),
}

/// Flags of `invite`.
#[derive(Debug, Clone, Args)]
pub struct InviteArgs {
    /// How long the invite is good for, in seconds.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub ttl_secs: u64,
    /// Let the invite register only this username.
    #[arg(long)]
    pub username: Option<String>,
    /// Where the node's secret comes from (same flags as `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `serve`; each may also come from its environment variable or the config file.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct ServeArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Data directory for the embedded database and secrets [default: ./data].
    #[arg(long, env = "SWITCHBOARD_DATA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Connections to PostgreSQL per node [default: 16].
    #[arg(long, env = "SWITCHBOARD_PG_POOL_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_pool_size: Option<usize>,
    /// Longest wait for a database connection, in ms [default: 2000].
    #[arg(long, env = "SWITCHBOARD_STORE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_timeout_ms: Option<u64>,
    /// Store URL, `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`
    /// [default: sqlite://<data>/switchboard.db].
    #[arg(long, env = "SWITCHBOARD_STORE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Bus: `local` or `nats://HOST:PORT` [default: local].
    #[arg(long, env = "SWITCHBOARD_BUS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// First token of every NATS subject [default: sb].
    #[arg(long, env = "SWITCHBOARD_NATS_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_prefix: Option<String>,
    /// Longest wait for the bus to connect or answer, in ms [default: 2000].
    #[arg(long, env = "SWITCHBOARD_BUS_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_timeout_ms: Option<u64>,
    /// This node's name in a cluster [default: random per start].
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How long a log consumer's lease lasts unrenewed, in ms [default: 3000].
    #[arg(long, env = "SWITCHBOARD_LEASE_TTL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ttl_ms: Option<u64>,
    /// How often rooms are compared with the store for events lost on the bus, in ms
    /// [default: 2000].
    #[arg(long, env = "SWITCHBOARD_POSITION_CHECK_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_check_ms: Option<u64>,
    /// One typing indicator per user and room per this many ms reaches the room; 0 = no
    /// throttle [default: 2000].
    #[arg(long, env = "SWITCHBOARD_TYPING_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing_interval_ms: Option<u64>,
    /// Presence: `local`, `redis://HOST:PORT` or `off` [default: local].
    #[arg(long, env = "SWITCHBOARD_PRESENCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    /// First part of every Redis key [default: sb].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_prefix: Option<String>,
    /// A connection's presence lives this long unrenewed, in ms [default: 20000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_ttl_ms: Option<u64>,
    /// A closed connection still counts this long, in ms (flap debounce) [default: 5000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_GRACE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_grace_ms: Option<u64>,
    /// Idle time before a connection is away, in ms [default: 600000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_AWAY_AFTER_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_away_after_ms: Option<u64>,
    /// Rooms above this many members get an online count instead of presence frames [default: 250].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_ROOM_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_room_limit: Option<u64>,
    /// At most one presence change per user per this many ms [default: 1000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_interval_ms: Option<u64>,
    /// At most one online count per large room per this many ms [default: 3000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_COUNT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_count_ms: Option<u64>,
    /// Anyone may read anyone's presence over REST [default: false].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_PUBLIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_public: Option<bool>,
    /// Longest custom status text in characters [default: 100].
    #[arg(long, env = "SWITCHBOARD_MAX_STATUS_CHARS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_status_chars: Option<usize>,
    /// Secret for Switchboard's own tokens [default: generated into <data>/jwt_secret].
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Lifetime of issued tokens in seconds [default: 604800].
    #[arg(long, env = "SWITCHBOARD_TOKEN_TTL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
    /// Accept your backend's HS256 tokens signed with this secret.
    #[arg(long, env = "SWITCHBOARD_JWT_EXTERNAL_HS256_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_external_hs256_secret: Option<String>,
    /// Accept your backend's RS256 tokens verified with this PEM public key file.
    #[arg(long, env = "SWITCHBOARD_JWT_EXTERNAL_RS256_PUBLIC_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_external_rs256_public_key: Option<PathBuf>,
    /// Required `iss` claim of external tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_EXTERNAL_ISSUER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_external_issuer: Option<String>,
    /// Required `aud` claim of external tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_EXTERNAL_AUDIENCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_external_audience: Option<String>,
    /// Comma-separated browser origins allowed to open WebSockets [default: any].
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Largest WebSocket message in bytes [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<usize>,
    /// Longest message body in characters [default: 4000].
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_CHARS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_chars: Option<usize>,
    /// Frames queued per connection before closing it as a slow consumer [default: 1024].
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue: Option<usize>,
    /// Frames per second a connection may send [default: 50].
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SEC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
    /// Burst of frames a connection may send [default: 100].
    #[arg(long, env = "SWITCHBOARD_RATE_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_burst: Option<u32>,
    /// Server ping interval in milliseconds [default: 30000].
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Time allowed for `hello` in milliseconds [default: 10000].
    #[arg(long, env = "SWITCHBOARD_HELLO_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hello_timeout_ms: Option<u64>,
    /// Most events replayed per room on resume before sending `gap` [default: 1000].
    #[arg(long, env = "SWITCHBOARD_REPLAY_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_limit: Option<u32>,
    /// Most writes per SQLite group commit; 1 = one fsync per write [default: 1024].
    #[arg(long, env = "SWITCHBOARD_COMMIT_BATCH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_batch: Option<usize>,
    /// Time allowed for draining on SIGTERM, in milliseconds [default: 10000].
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Serve /metrics on this address (not on the client listener) [default: off].
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Time for a request head, and idle keep-alive, in ms [default: 15000].
    #[arg(long, env = "SWITCHBOARD_REQUEST_HEAD_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_head_timeout_ms: Option<u64>,
    /// Time for a request body, in ms (then 408) [default: 15000].
    #[arg(long, env = "SWITCHBOARD_REQUEST_BODY_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_timeout_ms: Option<u64>,
    /// Open connections per client address, 0 = no cap [default: 256].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// Gateway connections per user on this node, 0 = no cap [default: 32].
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS_PER_USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<u32>,
    /// Signed-in sessions per user; more ends the oldest [default: 100].
    #[arg(long, env = "SWITCHBOARD_MAX_LOGINS_PER_USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_logins_per_user: Option<u32>,
    /// Password hashing threads, 0 = one per core [default: 0].
    #[arg(long, env = "SWITCHBOARD_HASH_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_threads: Option<usize>,
    /// Password checks waiting for a thread before 503 [default: 32].
    #[arg(long, env = "SWITCHBOARD_HASH_QUEUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_queue: Option<usize>,
    /// Password sign-ups: open, invite or closed [default: open].
    #[arg(long, env = "SWITCHBOARD_REGISTRATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
    /// Sign-ups per client address per hour [default: 20].
    #[arg(long, env = "SWITCHBOARD_SIGNUPS_PER_IP_PER_HOUR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signups_per_ip_per_hour: Option<u32>,
    /// Login attempts per client address per minute [default: 60].
    #[arg(long, env = "SWITCHBOARD_LOGINS_PER_IP_PER_MIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logins_per_ip_per_min: Option<u32>,
    /// Failed logins per account and address before backoff [default: 5].
    #[arg(long, env = "SWITCHBOARD_LOGIN_FREE_FAILURES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_free_failures: Option<u32>,
    /// Writes (messages, edits, rooms, adds, joins) per user per second, all connections and REST [default: 20].
    #[arg(long, env = "SWITCHBOARD_USER_SENDS_PER_SEC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_sends_per_sec: Option<u32>,
    /// Burst of writes per user [default: 60].
    #[arg(long, env = "SWITCHBOARD_USER_SENDS_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_sends_burst: Option<u32>,
    /// Client address from the last X-Forwarded-For entry [default: false].
    #[arg(long, env = "SWITCHBOARD_TRUST_FORWARDED_FOR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_forwarded_for: Option<bool>,
    /// Shared limits: local or redis://HOST:PORT [default: the presence Redis, else local].
    #[arg(long, env = "SWITCHBOARD_LIMITS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
    /// Messages per room per second, all members together [default: 50].
    #[arg(long, env = "SWITCHBOARD_ROOM_SENDS_PER_SEC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_sends_per_sec: Option<u32>,
    /// Burst of messages per room [default: 200].
    #[arg(long, env = "SWITCHBOARD_ROOM_SENDS_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_sends_burst: Option<u32>,
    /// The same text from one user at most this often per window, 0 for no check [default: 5].
    #[arg(long, env = "SWITCHBOARD_DUPLICATE_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_max: Option<u32>,
    /// Window of duplicate_max in seconds [default: 30].
    #[arg(long, env = "SWITCHBOARD_DUPLICATE_WINDOW_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_window_secs: Option<u32>,
    /// Joins of one public room per minute, 0 for no cap [default: 120].
    #[arg(long, env = "SWITCHBOARD_ROOM_JOINS_PER_MIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_joins_per_min: Option<u32>,
    /// Most mentions in one message [default: 20].
    #[arg(long, env = "SWITCHBOARD_MAX_MENTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mentions: Option<usize>,
    /// Words for the server-wide filter, one per line.
    #[arg(long, env = "SWITCHBOARD_FILTER_WORDS_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_words_file: Option<PathBuf>,
    /// Server-wide admins, by user id (comma-separated) [default: none].
    #[arg(long, env = "SWITCHBOARD_ADMINS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admins: Option<Vec<String>>,
    /// The classifier asked about every message (http:// or https://) [default: none].
    #[arg(long, env = "SWITCHBOARD_HOOK_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_url: Option<String>,
    /// Longest wait for the classifier [default: 500].
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_timeout_ms: Option<u64>,
    /// Let messages through when the classifier cannot be asked [default: true].
    #[arg(long, env = "SWITCHBOARD_HOOK_FAIL_OPEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_fail_open: Option<bool>,
    /// Let the hook call loopback and private addresses [default: false].
    #[arg(long, env = "SWITCHBOARD_HOOK_ALLOW_PRIVATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_allow_private: Option<bool>,
    /// Classifier calls in flight per node [default: 256].
    #[arg(long, env = "SWITCHBOARD_HOOK_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_concurrency: Option<usize>,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file, variable or flag held a bad value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServeArgs {
    /// Merges defaults, the config file (if any) and these flags (CLI or environment).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &self.config {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
            }
            fig = fig.merge(Toml::file(path));
        }
        let mut cfg: Config = fig
            .merge(Serialized::defaults(self))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = &cfg.filter_words_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Invalid(format!("filter_words_file {}: {e}", path.display())))?;
            let words = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            cfg.filters.words.extend(words.map(str::to_owned));
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Config {
    /// The moderation hook's settings, when one is configured.
    pub fn hook(&self) -> Option<crate::moderation::hook::HookOptions> {
        Some(crate::moderation::hook::HookOptions {
            url: self.hook_url.clone()?,
            timeout: std::time::Duration::from_millis(self.hook_timeout_ms),
            fail_open: self.hook_fail_open,
            allow_private: self.hook_allow_private,
            concurrency: self.hook_concurrency,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.send_queue == 0 || self.rate_per_sec == 0 || self.rate_burst == 0 {
            return bad("send_queue, rate_per_sec and rate_burst must be positive");
        }
        if self.room_sends_per_sec == 0 || self.room_sends_burst == 0 || self.duplicate_window_secs == 0 {
            return bad("room_sends_per_sec, room_sends_burst and duplicate_window_secs must be positive");
        }
        if let Err(e) = crate::moderation::filter::Filter::compile(&self.filters) {
            return Err(ConfigError::Invalid(format!("filters: {e}")));
        }
        if self.admins.iter().any(|a| a.trim().is_empty() || a.chars().count() > 128) {
            return bad("admins are user ids (1-128 characters)");
        }
        if !(1..=10_000).contains(&self.hook_timeout_ms) || self.hook_concurrency == 0 {
            return bad("hook_timeout_ms must be 1-10000 and hook_concurrency positive");
        }
        if self.max_frame_bytes < 1024 || self.max_body_chars == 0 {
            return bad("max_frame_bytes must be at least 1024 and max_body_chars positive");
        }
        if self.position_check_ms < 100 {
            return bad("position_check_ms must be at least 100");
        }
        if self.lease_ttl_ms < 300 {
            return bad("lease_ttl_ms must be at least 300");
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return bad("node_id must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'");
        }
        if self.heartbeat_ms < 100 || self.hello_timeout_ms == 0 {
            return bad("heartbeat_ms must be at least 100 and hello_timeout_ms positive");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format must be `text` or `json`");
        }
        if self.jwt_external_hs256_secret.is_some() && self.jwt_external_rs256_public_key.is_some() {
            return bad("configure one external token algorithm: HS256 secret or RS256 key");
        }
        if !matches!(self.registration.as_str(), "open" | "invite" | "closed") {
            return bad("registration must be `open`, `invite` or `closed`");
        }
        if self.signups_per_ip_per_hour == 0
            || self.logins_per_ip_per_min == 0
            || self.user_sends_per_sec == 0
            || self.user_sends_burst == 0
            || self.hash_queue == 0
            || self.max_logins_per_user == 0
        {
            return bad("throttles, hash_queue and max_logins_per_user must be positive");
        }
        if self.trust_forwarded_for && self.max_connections_per_ip != 0 {
            // Every connection then comes from the proxy: cap connections at the proxy.
            return bad(
                "with trust_forwarded_for, set max_connections_per_ip = 0 and cap connections at the proxy",
            );
        }
        if self.request_head_timeout_ms < 100 || self.request_body_timeout_ms < 100 {
            return bad("request_head_timeout_ms and request_body_timeout_ms must be at least 100");
        }
        if let StoreUrl::Postgres(_) = self.store_url()? {
            // Every node of a cluster must sign and check tokens with the same secret; one it
            // made up for itself would sign tokens the others refuse.
            if self.jwt_secret.is_none() {
                return bad(
                    "a node on PostgreSQL needs the cluster's shared jwt_secret (SWITCHBOARD_JWT_SECRET)",
                );
            }
            if self.pg_pool_size < 2 {
                return bad("pg_pool_size must be at least 2");
            }
        }
        if self.store_timeout_ms < 100 || self.bus_timeout_ms < 100 {
            return bad("store_timeout_ms and bus_timeout_ms must be at least 100");
        }
        if !matches!(self.presence.as_str(), "local" | "off") && !self.presence.starts_with("redis://") {
            return bad("presence must be `local`, `off` or redis://HOST:PORT");
        }
        if self.presence == "local" && self.bus != "local" {
            // Each node would know only its own connections.
            return bad("a cluster (bus nats://…) needs presence on redis://HOST:PORT, or `off`");
        }
        if self.presence_ttl_ms < 300
            || self.presence_interval_ms < 10
            || self.presence_count_ms < 100
            || self.max_status_chars == 0
        {
            return bad(
                "presence_ttl_ms must be at least 300, presence_interval_ms 10, presence_count_ms 100, and max_status_chars positive",
            );
        }
        if self.presence_prefix.is_empty()
            || !self.presence_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_-:".contains(c))
        {
            return bad("presence_prefix must be letters, digits, '_', '-' or ':'");
        }
        if self.bus != "local" && !self.bus.starts_with("nats://") {
            return bad("bus must be `local` or nats://HOST:PORT");
        }
        if self.nats_prefix.is_empty()
            || !self.nats_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad("nats_prefix must be letters, digits, '_' or '-'");
        }
        Ok(())
    }

    /// Threads for password hashing: as configured, else one per core.
    pub fn hash_thread_count(&self) -> usize {
        if self.hash_threads > 0 {
            return self.hash_threads;
        }
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }

    /// This node's id: the configured one, or a fresh random one.
    pub fn node_name(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => {
                // The tail of a v7 uuid is random.
                let id = uuid::Uuid::now_v7().simple().to_string();
                format!("node-{}", &id[id.len() - 8..])
            }
        }
    }

    /// The store this configuration selects.
    pub fn store_url(&self) -> Result<StoreUrl, ConfigError> {
        let Some(url) = &self.store else {
            return Ok(StoreUrl::Sqlite(self.data.join("switchboard.db")));
        };
        if let Some(path) = url.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.clone()));
        }
        Err(ConfigError::Invalid(format!(
            "store `{}` is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DB",
            redact(url)
        )))
    }
}

/// A configured store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in this file.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// A URL without the password it may carry, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nrate_per_sec = 7\nallowed_origins = [\"https://a\"]\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(file), rate_per_sec: Some(9), ..Default::default() };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.rate_per_sec, 9);
        assert_eq!(cfg.allowed_origins, vec!["https://a".to_owned()]);
        assert_eq!(cfg.send_queue, 1024);
    }

    #[test]
    fn server_filters_come_from_the_file_and_a_word_list() {
        let dir = tempfile::tempdir().unwrap();
        let (file, words) = (dir.path().join("s.toml"), dir.path().join("words.txt"));
        std::fs::write(&file, "admins = [\"u1\"]\n[filters]\nprofanity = \"mask\"\nwords = [\"darn\"]\n")
            .unwrap();
        std::fs::write(&words, "# comment\nheck\n\n  gosh  \n").unwrap();
        let args = ServeArgs { config: Some(file), filter_words_file: Some(words), ..Default::default() };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.filters.profanity, switchboard_protocol::rest::FilterAction::Mask);
        assert_eq!(cfg.filters.words, ["darn", "heck", "gosh"]);
        assert_eq!(cfg.admins, ["u1"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "[filters]\npatterns = [\"(\"]\n").unwrap();
        let args = ServeArgs { config: Some(file), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("filters: pattern 0"));
        let args = ServeArgs { filter_words_file: Some("/nonexistent".into()), ..Default::default() };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        let args = ServeArgs { config: Some(file), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("no_such_key"));
        let args = ServeArgs { store: Some("mysql://x".into()), ..Default::default() };
        assert!(args.resolve().is_err());
        let args = ServeArgs { config: Some("/nonexistent.toml".into()), ..Default::default() };
        assert!(args.resolve().is_err());
        let args = ServeArgs { trust_forwarded_for: Some(true), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("max_connections_per_ip"));
        let args = ServeArgs { registration: Some("maybe".into()), ..Default::default() };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn a_node_on_postgres_needs_the_clusters_secret() {
        let url = "postgres://app:hunter2@db.internal:5432/chat";
        let args = ServeArgs { store: Some(url.into()), ..Default::default() };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        let args =
            ServeArgs { store: Some(url.into()), jwt_secret: Some("s".repeat(32)), ..Default::default() };
        assert_eq!(args.resolve().unwrap().store_url().unwrap(), StoreUrl::Postgres(url.into()));
        assert_eq!(redact(url), "postgres://app:***@db.internal:5432/chat");
        assert_eq!(redact("postgres://app@db/chat"), "postgres://app@db/chat");
        let args = ServeArgs { store: Some("redis://u:pw@x".into()), ..Default::default() };
        assert!(!args.resolve().unwrap_err().to_string().contains("pw"), "no password in errors");
    }
}
