//! portmap: declarative port forwarding for Linux routers.
//!
//! A configuration (YAML, or built in code) declares port mappings; [`plan()`] compares it with what
//! the kernel holds and a [`Session`] makes the kernel match in one atomic transaction, touching only
//! portmap's own table. This crate is the library facade: it re-exports the chosen public API of the
//! workspace crates, grouped by what a user does, writes the orchestration every backend shares once
//! ([`Session`], generic over [`Backend`]), and chooses a backend by [`BackendKind`].
//!
//! ```no_run
//! use portmap::{BackendKind, Netns, Session};
//!
//! let model = portmap::load_str("wan: { interfaces: [eth0] }\nmappings: []\n", "inline")?;
//! let mut session = Session::open(BackendKind::Nft, &Netns::Current, portmap::DEFAULT_TABLE)?;
//! let outcome = session.converge(&model)?;
//! println!("{}", outcome.plan);
//! # Ok::<(), portmap::Error>(())
//! ```

#![warn(missing_docs)]

pub mod confirm;
pub mod connlog;
pub mod explain;
pub mod import;
mod lock;
pub mod metrics;
mod session;
pub mod watch;

// Reading and checking a configuration.
pub use portmap_core::{
    CONFIG_VERSION, Config, ConfigError, ConfigErrors, InterfaceList, MappingConfig, PortSpec, load_bytes,
    load_str, load_vec, parse_config, validate,
};
// The validated model.
pub use portmap_core::{
    Forward, Mapping, Model, ParsePortRangeError, PortRange, Protocol, Settings, Transport,
    canonical_prefixes, is_mapping_name,
};
// What the kernel holds.
pub use portmap_core::{Counters, Environment, Observed, ObservedMapping, Place, TableState, TrackedFlow};
// Per-mapping logging and limits.
pub use portmap_core::{DEFAULT_BURST, DEFAULT_LOG_GROUP, Limit, RateUnit, parse_limit};
// Mappings that expire.
pub use portmap_core::{
    EXPIRES_TOLERANCE_SECONDS, MAX_EXPIRES, MIN_EXPIRES, UtcTime, parse_expires, same_expiry,
};
// Plans.
pub use portmap_core::{
    Change, Counts, DeleteReason, FieldChange, ForwardRun, PLAN_FORMAT_VERSION, Plan, PlanFileError, Refusal,
    SettingChange, StaleFlows, TableAction, describe_forwards, describe_runs, fold_forwards,
};
pub use session::{plan, plan_owned};
// Output for people and machines.
pub use portmap_core::{MappingSummary, plan_json, render_plan, render_status, render_warnings, status_json};
// The versioned JSON documents of `--json` (docs/json.md).
pub use portmap_core::{JSON_FORMAT, json};
// The configuration's JSON Schema (`portmap schema`).
pub use portmap_core::{SCHEMA_PATH, config_schema};
// Limits and the escaping of echoed values.
pub use portmap_core::{
    MAX_CONFIG_BYTES, MAX_DEPTH, MAX_DESCRIPTION_LEN, MAX_ERRORS, MAX_INTERFACE_LEN, MAX_LOOKAHEAD,
    MAX_NAME_LEN, MAX_NODES, MAX_PLAN_BYTES, counted, shown, shown_arg, shown_origin, shown_size,
};
// Backends.
pub use portmap_core::{ApplyReport, Backend, Netns};
pub use portmap_iptables::{IptablesBackend, Variant as IptablesVariant};
pub use portmap_nft::{DEFAULT_TABLE, NftBackend};
pub use session::{ApplyOptions, CONVERGE_ATTEMPTS, Destroyed, Outcome, Session, Verify};
// Taking turns with other writers.
pub use lock::{DEFAULT_LOCK_TIMEOUT, Holder, Lock, LockError, LockKey, RUN_DIR, RUN_DIR_ENV, RunDir};
// The watch daemon.
pub use watch::{Watch, WatchError, WatchHandle, WatchOptions, WatchStatus};

/// Which kernel backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// nftables over netlink (the default).
    #[default]
    Nft,
    /// iptables through `iptables-restore`/`iptables-save`: the variant the system's `iptables`
    /// command is ([`IptablesVariant::System`]), or one forced.
    Iptables(IptablesVariant),
}

impl BackendKind {
    /// The kind a `--backend` name asks for: `nft`, `iptables`, `iptables-legacy`, `iptables-nft`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "nft" => Some(BackendKind::Nft),
            other => IptablesVariant::from_backend_name(other).map(BackendKind::Iptables),
        }
    }

    /// Render the ruleset the backend would build for `model` in table `table` (nft) or chains
    /// `PREFIX-…` (iptables; `portmap` means `PORTMAP`) of network namespace `netns` (whose
    /// LAN-side addresses it reads; the process's own namespace needs no privileges): what
    /// `nft -f` or `iptables-restore` loads.
    pub fn render(self, model: &Model, table: &str, netns: &Netns) -> Result<String, Error> {
        let rendered = match self {
            BackendKind::Nft => portmap_nft::render_script(model, table, netns).map_err(BackendError::Nft),
            BackendKind::Iptables(_) => {
                portmap_iptables::render_script(model, table, netns).map_err(BackendError::Iptables)
            }
        };
        rendered.map_err(|e| Error::Backend(Box::new(e)))
    }
}

/// An error of one of the backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The nft backend failed.
    #[error(transparent)]
    Nft(#[from] portmap_nft::Error),
    /// The iptables backend failed.
    #[error(transparent)]
    Iptables(#[from] portmap_iptables::Error),
}

/// Errors of the facade: everything a library user can get back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration is not valid (every problem, with positions).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A saved plan cannot be used.
    #[error(transparent)]
    PlanFile(#[from] PlanFileError),
    /// The backend failed (permission, namespace, a rejected transaction, a foreign table, …).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A plan was made for another backend, table or place, has no generation, or the ruleset
    /// moved past it; nothing was applied.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A saved plan's changes are not what its desired state calls for against the kernel as it is
    /// (at the same generation): the file was edited, or portmap's own rules were changed by hand
    /// in a way the generation does not count (iptables' generation leaves portmap's own chains
    /// out, so that a commit's result can be told from another writer's).
    #[error(
        "the plan file's changes are not what its own desired state calls for against the kernel, which is still at the generation the plan was made at: was the file edited, or were portmap's own rules changed by hand since? Nothing was applied. Planned afresh, the changes are:\n{0}"
    )]
    PlanMismatch(Box<Plan>),
    /// After applying, the kernel still differs from the configuration.
    #[error(
        "apply did not converge: the kernel still differs from the configuration after the transaction:\n{0}"
    )]
    NotConverged(Box<Plan>),
    /// The transaction landed, but another program changed the ruleset before portmap could read
    /// its result back, and the kernel now differs from the plan's desired state.
    #[error(
        "the plan was applied, but another program changed the ruleset right after, and the kernel now differs from it again — run `portmap plan` to see how:\n{0}"
    )]
    Overtaken(Box<Plan>),
    /// Another program kept changing the ruleset between portmap's read and its transaction.
    #[error(
        "another program changed the ruleset while portmap was applying; tried {attempts} times and nothing was applied in the last try — run it again, or find the program that keeps rewriting the ruleset"
    )]
    Contended {
        /// How many times portmap planned and tried to apply.
        attempts: usize,
    },
    /// A fresh plan was not approved.
    #[error("cancelled; nothing was changed")]
    Declined,
    /// The write lock could not be had (another writer held it too long, or the run directory is
    /// unusable).
    #[error(transparent)]
    Lock(Box<LockError>),
    /// Confirm-or-rollback refused or failed.
    #[error(transparent)]
    Confirm(Box<confirm::ConfirmError>),
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Self {
        Error::Lock(Box::new(e))
    }
}

impl From<confirm::ConfirmError> for Error {
    fn from(e: confirm::ConfirmError) -> Self {
        Error::Confirm(Box::new(e))
    }
}

impl Error {
    /// Whether the error means another program got in between, so that planning afresh may
    /// succeed.
    pub fn is_race(&self) -> bool {
        matches!(self, Error::Refused(Refusal::Stale { .. }) | Error::Overtaken(_))
    }
}

/// A backend chosen at run time. It implements [`Backend`] by delegating, in this one place, to the
/// backend it holds; [`Session`] orchestrates it like any other.
#[derive(Debug)]
#[non_exhaustive]
pub enum Backends {
    /// nftables.
    Nft(NftBackend),
    /// iptables (legacy or nft variant).
    Iptables(IptablesBackend),
}

impl Backends {
    /// Open a backend of `kind` in a network namespace, managing table `table` (nft) or the chains
    /// of that prefix (iptables).
    pub fn open(kind: BackendKind, netns: &Netns, table: &str) -> Result<Self, Error> {
        let opened = match kind {
            BackendKind::Nft => NftBackend::open(netns, table)
                .map(Backends::Nft)
                .map_err(BackendError::Nft),
            BackendKind::Iptables(variant) => IptablesBackend::open(variant, netns, table)
                .map(Backends::Iptables)
                .map_err(BackendError::Iptables),
        };
        opened.map_err(|e| Error::Backend(Box::new(e)))
    }

    /// Keep the nft backend's memo of its table in `dir` ([`NftBackend::with_memo`]): an apply
    /// then plans without reading the table when the kernel shows nothing changed since portmap
    /// last read or wrote it. The iptables backends keep none.
    #[must_use]
    pub fn with_memo(self, dir: impl Into<std::path::PathBuf>) -> Self {
        match self {
            Backends::Nft(b) => Backends::Nft(b.with_memo(dir)),
            other => other,
        }
    }
}

/// Delegate one trait method to the backend held.
macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Backends::Nft($b) => $call.map_err(BackendError::from),
            Backends::Iptables($b) => $call.map_err(BackendError::from),
        }
    };
}

impl Backend for Backends {
    type Error = BackendError;

    fn name(&self) -> &'static str {
        match self {
            Backends::Nft(b) => b.name(),
            Backends::Iptables(b) => b.name(),
        }
    }

    fn observe(&mut self) -> Result<Observed, BackendError> {
        delegate!(self, b => b.observe())
    }

    fn observe_to_plan(&mut self) -> Result<Observed, BackendError> {
        delegate!(self, b => b.observe_to_plan())
    }

    fn generation(&mut self) -> Result<Option<u32>, BackendError> {
        delegate!(self, b => b.generation())
    }

    fn commit(&mut self, plan: &Plan, record: &[StaleFlows]) -> Result<ApplyReport, BackendError> {
        delegate!(self, b => b.commit(plan, record))
    }

    fn is_stale(error: &BackendError) -> bool {
        match error {
            BackendError::Nft(e) => NftBackend::is_stale(e),
            BackendError::Iptables(e) => IptablesBackend::is_stale(e),
        }
    }

    fn clear_flows(&mut self, stale: &[StaleFlows]) -> Result<usize, BackendError> {
        delegate!(self, b => b.clear_flows(stale))
    }

    fn forget_flows(&mut self) -> Result<(), BackendError> {
        delegate!(self, b => b.forget_flows())
    }

    fn render(&self, model: &Model) -> Result<String, BackendError> {
        delegate!(self, b => b.render(model))
    }

    fn destroy(&mut self) -> Result<bool, BackendError> {
        delegate!(self, b => b.destroy())
    }

    fn tracked_flows(&mut self) -> Result<Option<Vec<portmap_core::TrackedFlow>>, BackendError> {
        delegate!(self, b => b.tracked_flows())
    }
}

impl Session<Backends> {
    /// Open a backend of `kind` in `netns` for table `table`, ready to orchestrate.
    pub fn open(kind: BackendKind, netns: &Netns, table: &str) -> Result<Self, Error> {
        Ok(Session::new(Backends::open(kind, netns, table)?))
    }

    /// [`Session::open`], keeping the nft backend's memo in `run_dir` ([`Backends::with_memo`]);
    /// without a memo when the directory cannot be made private.
    pub fn open_with_memo(
        kind: BackendKind,
        netns: &Netns,
        table: &str,
        run_dir: &RunDir,
    ) -> Result<Self, Error> {
        let backends = Backends::open(kind, netns, table)?;
        Ok(Session::new(match run_dir.ensure(None) {
            Ok(dir) => backends.with_memo(dir),
            Err(_) => backends,
        }))
    }
}
