//! Wiring: the one place that names concrete backends, builds the shared state, runs the HTTP
//! server and drains it on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_protocol::codes::close;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::bus::local::LocalBus;
use crate::bus::nats::{NatsBus, NatsOptions};
use crate::config::{Config, StoreUrl, redact};
use crate::consumer::{self, ConsumerConfig};
use crate::gateway::hub::Hub;
use crate::gateway::relay;
use crate::hashing::HashPool;
use crate::limits::Limits;
use crate::listener::{self, ListenerConfig};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::presence::local::LocalPresence;
use crate::presence::node::{PresenceConfig, PresenceNode};
use crate::presence::redis::{RedisOptions, RedisPresence};
use crate::quota::Quotas;
use crate::quota::guard::QuotaGuard;
use crate::quota::redis::RedisQuotas;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};

/// What every handler and session shares: one pointer, so that a session (which keeps it for
/// its whole life, in its task and in its state) holds 8 bytes and clones it with one atomic
/// increment, not fourteen.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The node's shared parts (see [`AppState`]).
pub struct Shared {
    /// Resolved configuration.
    pub cfg: Arc<Config>,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Fanout between nodes.
    pub bus: Arc<dyn Bus>,
    /// Local sessions by room and user.
    pub hub: Arc<Hub>,
    /// Token issuing and checking.
    pub auth: Arc<Auth>,
    /// Cancelled when the node starts draining.
    pub shutdown: CancellationToken,
    /// Every live WebSocket session, so draining can wait for them.
    pub sessions: TaskTracker,
    /// This node's metrics.
    pub metrics: Arc<Metrics>,
    /// This node's id in a cluster.
    pub node: Arc<str>,
    /// The budget for password hashing.
    pub hasher: Arc<HashPool>,
    /// Throttles on sign-ups, logins and sends.
    pub limits: Arc<Limits>,
    /// Presence, unless it is off.
    pub presence: Option<Arc<PresenceNode>>,
    /// Screening of message text (mentions, filters).
    pub screen: Arc<crate::moderation::screen::Screen>,
    /// Send and join budgets shared by the cluster.
    pub quotas: Arc<QuotaGuard>,
}

/// Opens the backends the configuration names.
async fn backends(cfg: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    let store: Arc<dyn Store> = match cfg.store_url()? {
        StoreUrl::Sqlite(path) => Arc::new(
            SqliteStore::open(&SqliteOptions { path: path.clone(), max_batch: cfg.commit_batch })
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?,
        ),
        StoreUrl::Postgres(url) => {
            let opts = PgOptions {
                url: url.clone(),
                pool_size: cfg.pg_pool_size,
                max_batch: cfg.commit_batch,
                schema: None,
                connect_timeout: Duration::from_millis(cfg.store_timeout_ms),
            };
            Arc::new(
                PgStore::open(&opts)
                    .await
                    .with_context(|| format!("opening the PostgreSQL store at {}", redact(&url)))?,
            )
        }
    };
    let bus: Arc<dyn Bus> = match cfg.bus.as_str() {
        "local" => Arc::new(LocalBus::standalone()),
        url => {
            let opts = NatsOptions {
                url: url.to_owned(),
                prefix: cfg.nats_prefix.clone(),
                timeout: Duration::from_millis(cfg.bus_timeout_ms),
            };
            Arc::new(
                NatsBus::connect(&opts)
                    .await
                    .with_context(|| format!("connecting to NATS at {}", redact(url)))?,
            )
        }
    };
    Ok((store, bus))
}

/// Opens the shared quotas the configuration names (`None`: counted in this node's memory).
async fn quota_backend(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Quotas>>> {
    let url = match cfg.limits.as_deref() {
        Some("local") => return Ok(None),
        Some(url) => url,
        None if cfg.presence.starts_with("redis://") || cfg.presence.starts_with("rediss://") => {
            &cfg.presence
        }
        None => return Ok(None),
    };
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        anyhow::bail!("limits must be local or redis://HOST:PORT");
    }
    let timeout = Duration::from_millis(cfg.bus_timeout_ms);
    let quotas = RedisQuotas::connect(url, &cfg.presence_prefix, timeout)
        .await
        .with_context(|| format!("connecting the shared limits to {}", crate::config::redact(url)))?;
    Ok(Some(Arc::new(quotas)))
}

/// Opens the presence backend the configuration names (`None` when presence is off).
async fn presence_backend(cfg: &Config) -> anyhow::Result<Option<Arc<dyn Presence>>> {
    Ok(match cfg.presence.as_str() {
        "off" => None,
        "local" => Some(Arc::new(LocalPresence::new())),
        url => {
            let opts = RedisOptions {
                url: url.to_owned(),
                prefix: cfg.presence_prefix.clone(),
                timeout: Duration::from_millis(cfg.bus_timeout_ms),
            };
            let p = RedisPresence::connect(&opts)
                .await
                .with_context(|| format!("connecting to Redis at {}", redact(url)))?;
            Some(Arc::new(p))
        }
    })
}

/// Presence settings from the configuration.
fn presence_config(cfg: &Config) -> PresenceConfig {
    PresenceConfig {
        ttl_ms: cfg.presence_ttl_ms,
        grace_ms: cfg.presence_grace_ms,
        away_after_ms: cfg.presence_away_after_ms,
        room_limit: cfg.presence_room_limit,
        interval_ms: cfg.presence_interval_ms,
        count_ms: cfg.presence_count_ms,
        public: cfg.presence_public,
    }
}

/// A running node.
pub struct Server {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when configured.
    pub metrics_addr: Option<SocketAddr>,
    state: AppState,
    http: JoinHandle<()>,
    relay: JoinHandle<()>,
    /// Stops the relay, after the sessions (whose last sends it still publishes).
    relay_stop: CancellationToken,
    metrics_http: Option<JoinHandle<()>>,
    sweeper: JoinHandle<()>,
}

impl Server {
    /// Opens the backends, binds the listener and starts serving.
    pub async fn start(cfg: Config) -> anyhow::Result<Server> {
        let (store, bus) = backends(&cfg).await?;
        let presence_backend = presence_backend(&cfg).await?;
        let auth = Auth::from_config(&cfg).context("setting up tokens")?;
        let node: Arc<str> = Arc::from(cfg.node_name());
        let hub = Hub::new(bus.clone(), cfg.max_sessions_per_user);
        hub.start().await.context("subscribing to the bus's control topic")?;
        let metrics = Arc::new(Metrics::new());
        metrics.node_info.get_or_create(&crate::metrics::NodeLabel { node: node.to_string() }).set(1);
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(
            consumer::run(
                store.clone(),
                ConsumerConfig {
                    name: "relay",
                    holder: node.to_string(),
                    lease_ttl: Duration::from_millis(cfg.lease_ttl_ms),
                    // Well under a session's queue (`send_queue`, 1024 by default): a relay catching
                    // up publishes a batch at once, and a burst must not cut readers that keep up.
                    batch: 256,
                    save_every: Duration::from_millis(200),
                    poll: Duration::from_millis(500),
                    prune: true,
                },
                relay::Relay { bus: bus.clone(), metrics: metrics.clone() },
                relay_stop.clone(),
            )
            .instrument(tracing::info_span!("node", id = %node)),
        );
        let hasher =
            HashPool::start(cfg.hash_thread_count(), cfg.hash_queue).context("starting hashing threads")?;
        let limits = Arc::new(Limits::new(&cfg));
        store.set_server_admins(&cfg.admins).await.context("writing the server-wide admins")?;
        let quotas = Arc::new(QuotaGuard::new(&cfg, quota_backend(&cfg).await?, metrics.clone()));
        let hook = cfg.hook().map(|o| crate::moderation::hook::Hook::new(&o)).transpose()?;
        let screen =
            crate::moderation::screen::Screen::new(&cfg.filters, cfg.max_mentions, hook, store.clone())
                .context("compiling the server-wide filters")?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (metrics_http, metrics_addr) = match cfg.metrics_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding {at}"))?;
                let bound = l.local_addr()?;
                tracing::info!(addr = %bound, "metrics listening");
                (
                    Some(tokio::spawn(listener::serve_metrics(l, metrics.clone(), shutdown.clone()))),
                    Some(bound),
                )
            }
            None => (None, None),
        };
        let sweeper = tokio::spawn(limits.clone().run(shutdown.clone()));
        tokio::spawn(crate::trim::run(hub.clone(), shutdown.clone()));
        tokio::spawn(crate::gateway::heartbeat::run(
            hub.clone(),
            Duration::from_millis(cfg.heartbeat_ms),
            shutdown.clone(),
        ));
        tokio::spawn(quotas.clone().run(shutdown.clone()));
        tokio::spawn(
            hub.clone()
                .run_position_checks(
                    store.clone(),
                    Duration::from_millis(cfg.position_check_ms),
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("node", id = %node)),
        );
        let presence = presence_backend.map(|backend| {
            let p = PresenceNode::new(
                backend,
                store.clone(),
                bus.clone(),
                hub.clone(),
                metrics.clone(),
                node.clone(),
                presence_config(&cfg),
            );
            p.start(shutdown.clone());
            p
        });
        let listener_cfg = ListenerConfig {
            per_ip: cfg.max_connections_per_ip,
            head_timeout: Duration::from_millis(cfg.request_head_timeout_ms),
        };
        let state = AppState(Arc::new(Shared {
            cfg: Arc::new(cfg),
            store,
            bus,
            hub,
            auth: Arc::new(auth),
            node: node.clone(),
            shutdown,
            sessions: TaskTracker::new(),
            metrics: metrics.clone(),
            hasher: Arc::new(hasher),
            limits,
            presence,
            screen,
            quotas,
        }));
        let app = crate::api::router(state.clone());
        let http =
            tokio::spawn(listener::serve(listener, app, listener_cfg, state.shutdown.clone(), metrics));
        tracing::info!(%addr, node = %node, "switchboard listening");
        Ok(Server { addr, metrics_addr, state, http, relay, relay_stop, metrics_http, sweeper })
    }

    /// Cancel this to start draining; [`Server::wait`] carries the drain out (it tells the
    /// sessions), so it must be running.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Waits for shutdown, then drains: stop accepting, let sessions finish their in-flight
    /// sends and close with 1001, finish queued commits, stop.
    pub async fn wait(self) {
        self.state.shutdown.cancelled().await;
        tracing::info!("draining");
        self.state.hub.drain_all();
        let grace = Duration::from_millis(self.state.cfg.drain_timeout_ms);
        match tokio::time::timeout(grace, self.http).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
            Err(_) => tracing::warn!("http connections still open after the drain timeout"),
        }
        let _ = self.sweeper.await;
        if let Some(m) = self.metrics_http
            && tokio::time::timeout(Duration::from_secs(1), m).await.is_err()
        {
            tracing::warn!("metrics listener did not stop");
        }
        self.state.sessions.close();
        if tokio::time::timeout(grace + Duration::from_secs(1), self.state.sessions.wait()).await.is_err() {
            tracing::warn!(
                left = self.state.hub.session_count(),
                "sessions still open after the drain timeout"
            );
            self.state.hub.kick_all(close::GOING_AWAY);
        }
        // The relay saves its cursor on the way out, so it stops before the store.
        self.relay_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.relay).await.is_err() {
            tracing::warn!("relay did not finish");
        }
        self.state.store.close().await;
        tracing::info!("stopped");
    }
}
