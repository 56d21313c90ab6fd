//! # Switchboard protocol v1
//!
//! The wire contract shared by the server, the Rust client SDK and the load generator. Nothing
//! here does I/O: these are the shapes that travel, so that a change to the contract is a change
//! to one crate that every side compiles against.
//!
//! # Layout
//! - [`model`]: the resources (users, rooms, messages) as REST and WebSocket frames carry them.
//! - [`frames`]: WebSocket frames in both directions, tagged by `"op"`.
//! - [`rest`]: REST request and response bodies.
//! - [`codes`]: stable error codes and WebSocket close codes.
//!
//! The contract itself is written in `docs/protocol.md`; extend it, never change what exists
//! without a new version.

pub mod codes;
pub mod frames;
pub mod model;
pub mod rest;

pub use frames::{ClientFrame, ServerFrame, TimelineEvent};
pub use model::{
    AddPolicy, AuditEntry, ChosenStatus, Invite, MemberChange, Message, Presence, Report, Role, Room,
    RoomKind, Status, User,
};
