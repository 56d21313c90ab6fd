//! Moderation: who may do what in a room ([`policy`]), content filters ([`filter`]) and the
//! screening of every message on the one send path ([`crate::send`]).

pub mod filter;
pub mod hook;
pub mod policy;
pub mod screen;
