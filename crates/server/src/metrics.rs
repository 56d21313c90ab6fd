//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! One [`Metrics`] per node, passed in the app state: no global recorder, so every node (and
//! every in-process test server) has its own registry. Counters and gauges are atomics;
//! histograms take a short lock per observation; label sets are small fixed strings or codes,
//! never user input. The names below are the contract the
//! dashboard and alert rules in `deploy/` use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SessionState {
    /// Connected, waiting for `hello`.
    Handshake,
    /// Authenticated and serving.
    Active,
}

impl SessionState {
    fn label(self) -> StateLabel {
        StateLabel { state: if self == SessionState::Handshake { "handshake" } else { "active" } }
    }
}

/// Label for sessions by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `handshake` or `active`.
    pub state: &'static str,
}

/// Label carrying a stable error code (never free text).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// An error code from `switchboard_protocol::codes::error`.
    pub reason: &'static str,
}

/// Label carrying a WebSocket close code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The close code.
    pub code: u16,
}

/// Which backend failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Backend {
    /// The store.
    Store,
    /// The bus.
    Bus,
    /// The presence backend.
    Presence,
    /// The shared quotas.
    Quotas,
}

impl Backend {
    fn label(self) -> BackendLabel {
        let backend = match self {
            Backend::Store => "store",
            Backend::Bus => "bus",
            Backend::Presence => "presence",
            Backend::Quotas => "quotas",
        };
        BackendLabel { backend }
    }
}

/// Label for backend errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `store`, `bus` or `presence`.
    pub backend: &'static str,
}

/// Label naming this node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node's id (`--node-id`).
    pub node: String,
}

/// Holds a gauge up for as long as it lives (a connection, a session state).
pub struct Held(Gauge);

impl Held {
    /// Increments `gauge` now and decrements it on drop.
    pub fn up(gauge: Gauge) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Sessions by state.
    pub sessions: Family<StateLabel, Gauge>,
    /// Frames read from clients.
    pub frames_in: Counter,
    /// Frames written to clients.
    pub frames_out: Counter,
    /// Sends durably stored and acked (REST and WebSocket).
    pub sends_accepted: Counter,
    /// Sends refused, by error code.
    pub sends_refused: Family<ReasonLabel, Counter>,
    /// Time for `Store::append` as the caller sees it (queueing, group commit, fsync).
    pub store_append_seconds: Histogram,
    /// Time from the relay publishing a committed event to a session writing it to its socket.
    /// The relay may run on another node: the figure then compares two clocks.
    pub fanout_seconds: Histogram,
    /// Frames waiting in a connection's queue when it starts a write.
    pub queue_depth: Histogram,
    /// Connections closed because their queue overflowed (4010).
    pub slow_consumer_closes: Counter,
    /// Ephemeral frames (typing, read markers, invites) dropped because their share of a
    /// connection's queue was full.
    pub ephemeral_dropped: Counter,
    /// Connections closed by the server, by close code.
    pub closes: Family<CodeLabel, Counter>,
    /// Sessions that resumed with `since`.
    pub resumes: Counter,
    /// Timeline events written from the store (resume replays and gap fills).
    pub replayed_events: Counter,
    /// `gap` frames sent.
    pub gaps: Counter,
    /// Backend failures, by backend.
    pub backend_errors: Family<BackendLabel, Counter>,
    /// Connections dropped at accept because their address holds its cap.
    pub connections_refused: Counter,
    /// Failed `accept` calls (out of files or memory), each followed by a pause.
    pub accept_errors: Counter,
    /// Requests and frames refused by a throttle or a full work queue, by what was refused
    /// (`login`, `signup`, `send`, `hash_queue`, `sessions_per_user`).
    pub throttled: Family<ReasonLabel, Counter>,
    /// 1, labelled with the node's id, so dashboards can tell the nodes of a cluster apart.
    pub node_info: Family<NodeLabel, Gauge>,
    /// Presence changes this node announced (after the per-user throttle).
    pub presence_changes: Counter,
    /// `presence` and `online` frames this node queued for its sessions.
    pub presence_frames: Counter,
    /// Calls to the presence backend, by what they were for.
    pub presence_calls: Family<ReasonLabel, Counter>,
}

/// What the `throttled` family counts.
const THROTTLES: [&str; 5] = ["login", "signup", "send", "hash_queue", "sessions_per_user"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs to about 1.6 s.
    exponential_buckets(0.000_05, 2.0, 16)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let m = Metrics {
            connections: Gauge::default(),
            sessions: Family::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            sends_accepted: Counter::default(),
            sends_refused: Family::default(),
            store_append_seconds: Histogram::new(latency_buckets()),
            fanout_seconds: Histogram::new(latency_buckets()),
            queue_depth: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            slow_consumer_closes: Counter::default(),
            ephemeral_dropped: Counter::default(),
            closes: Family::default(),
            resumes: Counter::default(),
            replayed_events: Counter::default(),
            gaps: Counter::default(),
            backend_errors: Family::default(),
            connections_refused: Counter::default(),
            accept_errors: Counter::default(),
            throttled: Family::default(),
            node_info: Family::default(),
            presence_changes: Counter::default(),
            presence_frames: Counter::default(),
            presence_calls: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections", m.connections.clone());
        registry.register("sessions", "WebSocket sessions by state", m.sessions.clone());
        registry.register("frames_in", "Frames read from clients", m.frames_in.clone());
        registry.register("frames_out", "Frames written to clients", m.frames_out.clone());
        registry.register("sends_accepted", "Sends durably stored and acked", m.sends_accepted.clone());
        registry.register("sends_refused", "Sends refused, by error code", m.sends_refused.clone());
        registry.register(
            "store_append_seconds",
            "Store append time seen by the caller (queue, group commit, fsync)",
            m.store_append_seconds.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Time from publishing a committed event to writing it to a client socket (the publishing node's clock against this one's: across machines it includes their offset)",
            m.fanout_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Frames queued for a connection when it writes",
            m.queue_depth.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed because their queue overflowed (4010)",
            m.slow_consumer_closes.clone(),
        );
        registry.register(
            "ephemeral_dropped",
            "Ephemeral frames dropped because their share of a connection's queue was full",
            m.ephemeral_dropped.clone(),
        );
        registry.register("closes", "Connections closed by the server, by close code", m.closes.clone());
        registry.register("resumes", "Sessions that resumed with since", m.resumes.clone());
        registry.register(
            "replayed_events",
            "Timeline events written from the store (replays and gap fills)",
            m.replayed_events.clone(),
        );
        registry.register("gaps", "gap frames sent", m.gaps.clone());
        registry.register("backend_errors", "Backend failures, by backend", m.backend_errors.clone());
        registry.register("node_info", "This node's id (always 1)", m.node_info.clone());
        registry.register(
            "presence_changes",
            "Presence changes announced by this node",
            m.presence_changes.clone(),
        );
        registry.register(
            "presence_frames",
            "presence and online frames queued for sessions",
            m.presence_frames.clone(),
        );
        registry.register(
            "presence_calls",
            "Calls to the presence backend, by reason",
            m.presence_calls.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections dropped at accept because their address holds its cap",
            m.connections_refused.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (out of files or memory)",
            m.accept_errors.clone(),
        );
        registry.register(
            "throttled",
            "Requests and frames refused by a throttle, by what",
            m.throttled.clone(),
        );
        // Series with a fixed set of labels exist from the start, at zero.
        for state in [SessionState::Handshake, SessionState::Active] {
            drop(m.sessions.get_or_create(&state.label()));
        }
        for backend in [Backend::Store, Backend::Bus] {
            drop(m.backend_errors.get_or_create(&backend.label()));
        }
        for reason in THROTTLES {
            drop(m.throttled.get_or_create(&ReasonLabel { reason }));
        }
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Records how a send ended: accepted (with its store time since `started`) or refused
    /// with its code; a refusal because the store failed also counts as a backend error.
    pub fn send_result<T>(&self, started: std::time::Instant, result: &Result<T, crate::error::ApiError>) {
        match result {
            Ok(_) => {
                self.sends_accepted.inc();
                self.store_append_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(e) => self.send_refused(e),
        }
    }

    /// Counts a refused send by its code; a store failure also counts as a backend error.
    pub fn send_refused(&self, e: &crate::error::ApiError) {
        self.refused(e.code);
        if e.code == switchboard_protocol::codes::error::UNAVAILABLE {
            self.backend_error(Backend::Store);
        }
    }

    /// Counts one refused send.
    pub fn refused(&self, reason: &'static str) {
        self.sends_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one throttled request or frame.
    pub fn throttle(&self, what: &'static str) {
        self.throttled.get_or_create(&ReasonLabel { reason: what }).inc();
    }

    /// Counts one backend failure.
    pub fn backend_error(&self, backend: Backend) {
        self.backend_errors.get_or_create(&backend.label()).inc();
    }

    /// Counts one close by the server.
    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CodeLabel { code }).inc();
    }

    /// The gauge of sessions in `state`.
    pub fn sessions_in(&self, state: SessionState) -> Gauge {
        self.sessions.get_or_create(&state.label()).clone()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
