//! portmap-core: the configuration schema, validation with source positions, the typed `Model`, the
//! `Observed` kernel state, and `plan()` with its `Plan` value (text for people, JSON for machines).
//!
//! This crate must stay pure: no sockets, no processes, no files read behind the caller's back, no
//! knowledge of nftables or iptables. Backends see only `Model`, `Observed` and `Plan`.
//!
//! ```
//! let model = portmap_core::load_str("wan: { interfaces: [eth0] }\nmappings:\n  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n", "inline")?;
//! let observed = portmap_core::Observed::missing("nft", "inet portmap", None);
//! let plan = portmap_core::plan(&model, &observed);
//! assert!(plan.to_string().contains("+ web  tcp  8080 → 192.168.1.66:80"));
//! # Ok::<(), portmap_core::ConfigErrors>(())
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod diagnostic;
pub mod error;
pub mod json;
pub mod load;
pub mod model;
pub mod plan;
pub mod render;
pub mod schema;
pub mod snapshot;
pub mod time;
pub mod validate;
mod yaml;

pub use backend::{ApplyReport, Backend, Netns};
pub use config::{CONFIG_VERSION, Config, InterfaceList, MappingConfig, PortSpec};
pub use diagnostic::{
    MAX_CONFIG_BYTES, MAX_DEPTH, MAX_ERRORS, MAX_LOOKAHEAD, MAX_NODES, MAX_PLAN_BYTES, counted, shown,
    shown_arg, shown_origin, shown_size,
};
pub use error::{ConfigError, ConfigErrors, Error, PlanFileError, Refusal};
pub use json::JSON_FORMAT;
pub use load::{load_bytes, load_str, load_vec, parse_config};
pub use model::{
    Counters, DEFAULT_BURST, DEFAULT_LOG_GROUP, Environment, Forward, Limit, MAX_LOGGED_NAME_LEN, Mapping,
    Model, Observed, ObservedMapping, ParsePortRangeError, Place, PortRange, Protocol, RateUnit, Settings,
    SourceList, TableState, Transport, listen_of, split_listen,
};
pub use plan::{
    Change, Counts, DeleteReason, FieldChange, ForwardRun, PLAN_FORMAT_VERSION, Plan, SettingChange,
    SourceChange, StaleFlows, TableAction, TrackedFlow, describe_forwards, describe_runs, expires_field_text,
    fold_forwards, limit_text, log_text, plan, plan_owned, same_expiry,
};
pub use render::{MappingSummary, plan_json, render_plan, render_status, render_warnings, status_json};
pub use schema::{SCHEMA_PATH, config_schema};
pub use snapshot::{NotRestorable, restorable};
pub use time::{EXPIRES_TOLERANCE_SECONDS, MAX_EXPIRES, MIN_EXPIRES, UtcTime, parse_rfc3339};
pub use validate::{
    MAX_DESCRIPTION_LEN, MAX_INTERFACE_LEN, MAX_LIMIT_BURST, MAX_LIMIT_RATE, MAX_NAME_LEN,
    SLOWEST_LIMIT_SECONDS, canonical_limit, canonical_prefixes, is_mapping_name, parse_expires, parse_limit,
    validate,
};
