//! # Switchboard server
//!
//! One binary: a WebSocket gateway and REST API over durable, ordered room timelines.
//!
//! Layout, from the wire inwards:
//! - [`app`]: wiring (the one place that names concrete backends), start and drain.
//! - [`gateway`]: `GET /v1/ws` sessions: hello, resume, heartbeats, backpressure; the [`gateway::hub`]
//!   that fans bus events out to local sessions; the [`gateway::relay`] that publishes commits.
//! - [`api`]: REST handlers and the OpenAPI document.
//! - [`listener`]: accepting connections (caps per address, deadlines, accept backoff).
//! - [`send`]: the one path every message takes to the store, from the gateway or REST.
//! - [`auth`]: passwords and tokens; [`hashing`]: the bounded pool that hashes passwords;
//!   [`limits`]: throttles. [`validate`]: input rules. [`error`]: the client-facing error.
//! - [`store`]: the persistence seam and its SQLite implementation.
//! - [`bus`]: the fanout seam and its in-process implementation.
//! - [`presence`]: who is online, in-process or on Redis, and who hears of it.
//! - [`quota`]: rate budgets shared by the cluster (sends per user and room, duplicates, joins).
//! - [`moderation`]: roles and their table, content filters and the screening of messages.
//! - [`config`]: flags, environment and TOML. [`metrics`]: Prometheus metrics. [`trim`]: giving
//!   memory back after many sessions close.
//!
//! The life of a message: a session or REST handler validates a send and calls
//! [`store::Store::append`]; the store commits it (group commit, fsync) with its entry in the
//! store-wide event log; only then is the sender acked. The relay, a [`consumer`] of that log,
//! encodes the event once and publishes it on the bus; the hub of every node holding members hands the same bytes to each member
//! session's bounded queue; each session writes it unless the client already has it.

pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod consumer;
pub mod error;
pub mod gateway;
pub mod hashing;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod moderation;
pub mod presence;
pub mod quota;
pub mod send;
pub mod store;
pub mod trim;
pub mod validate;
