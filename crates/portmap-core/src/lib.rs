//! portmap-core: the configuration schema, validation with source positions, the typed `Model`, the
//! `Observed` kernel state, and `plan()` with its `Plan` value (text for people, JSON for machines).
//!
//! This crate must stay pure: no sockets, no processes, no files read behind the caller's back, no
//! knowledge of nftables or iptables. Backends see only `Model`, `Observed` and `Plan`.

#![warn(missing_docs)]

pub mod backend;
pub mod model;
pub mod plan;

pub use model::{
    Forward, Mapping, Model, Observed, ObservedMapping, PortRange, Protocol, Settings, TableState, Transport,
};
pub use plan::{Change, DeleteReason, FieldChange, Plan, SettingChange, TableAction, plan};
pub use backend::{ApplyReport, Backend};
