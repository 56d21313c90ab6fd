//! Moderation: who may do what in a room ([`policy`]), and more to come (limits, filters,
//! sanctions, reports) on the one send path ([`crate::send`]).

pub mod policy;
