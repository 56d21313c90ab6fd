//! # Switchboard server
//!
//! Layout, from the wire inwards:
//! - `gateway`: WebSocket sessions (hello, resume, heartbeats, backpressure, drain).
//! - `api`: REST handlers and the OpenAPI document.
//! - `store`: the persistence seam and its SQLite implementation.
//! - `bus`: the fanout seam and its in-process implementation.

pub mod store;
