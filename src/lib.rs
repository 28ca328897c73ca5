//! portmap: declarative port forwarding for Linux routers.
//!
//! A configuration (YAML, or built in code) declares port mappings; [`plan()`] compares it with what the
//! kernel holds and [`Backends::apply`] makes the kernel match in one atomic transaction, touching only
//! portmap's own table. This crate is the library facade: it re-exports the public API of the
//! workspace crates and chooses a backend by [`BackendKind`]. It holds no logic a library user would
//! need that is not reachable from here.
//!
//! ```no_run
//! use portmap::{BackendKind, Backends, Netns};
//!
//! let model = portmap::load_str("wan: { interfaces: [eth0] }\nmappings: []\n", "inline")?;
//! let mut backend = Backends::open(BackendKind::Nft, &Netns::Current, portmap::DEFAULT_TABLE)?;
//! let outcome = backend.converge(&model)?;
//! println!("{}", outcome.plan);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub use portmap_core::*;
pub use portmap_netlink::Netns;
pub use portmap_nft::{DEFAULT_TABLE, NftBackend};

/// Which kernel backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// nftables over netlink (the default).
    #[default]
    Nft,
}

impl BackendKind {
    /// Render the ruleset the backend would build for `model` in table `table` of network namespace
    /// `netns` (whose LAN-side addresses it reads; the process's own namespace needs no privileges).
    pub fn render(self, model: &Model, table: &str, netns: &Netns) -> Result<String, Error> {
        match self {
            BackendKind::Nft => Ok(portmap_nft::render_script(model, table, netns)?),
        }
    }
}

/// Errors of the facade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The nft backend failed.
    #[error(transparent)]
    Nft(#[from] portmap_nft::Error),
    /// After applying, the kernel still differs from the configuration.
    #[error(
        "apply did not converge: the kernel still differs from the configuration after the transaction:\n{0}"
    )]
    NotConverged(Box<Plan>),
}

/// A backend chosen at run time.
#[derive(Debug)]
pub enum Backends {
    /// nftables.
    Nft(NftBackend),
}

/// How to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Leave tracked connections alone: flows of changed or removed mappings keep going to their
    /// old target until they end (`apply --keep-conntrack`).
    pub keep_conntrack: bool,
}

/// What [`Backends::destroy`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destroyed {
    /// Mappings the table held.
    pub mappings: usize,
    /// Tracked connections removed with them.
    pub flows_cleared: usize,
}

/// What [`Backends::converge`] did.
#[derive(Debug)]
pub struct Outcome {
    /// The plan that was carried out (empty when nothing had to change).
    pub plan: Plan,
    /// What the transaction touched.
    pub report: ApplyReport,
}

impl Backends {
    /// Open a backend in a network namespace, managing table `table`.
    pub fn open(kind: BackendKind, netns: &Netns, table: &str) -> Result<Self, Error> {
        match kind {
            BackendKind::Nft => Ok(Backends::Nft(NftBackend::open(netns, table)?)),
        }
    }

    /// Backend name.
    pub fn name(&self) -> &'static str {
        match self {
            Backends::Nft(b) => b.name(),
        }
    }

    /// Read the owned state back.
    pub fn observe(&mut self) -> Result<Observed, Error> {
        match self {
            Backends::Nft(b) => Ok(b.observe()?),
        }
    }

    /// Carry out a plan in one transaction, read the kernel back and require that nothing is left
    /// to do, then remove the tracked connections the plan made stale (so a live flow meets the new
    /// rules on its next packet).
    pub fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, Error> {
        self.apply_with(plan, &ApplyOptions::default())
    }

    /// [`Backends::apply`] with options.
    pub fn apply_with(&mut self, plan: &Plan, options: &ApplyOptions) -> Result<ApplyReport, Error> {
        let mut report = match self {
            Backends::Nft(b) => b.apply(plan)?,
        };
        let after = portmap_core::plan(&plan.desired, &self.observe()?);
        if !after.is_empty() {
            return Err(Error::NotConverged(Box::new(after)));
        }
        if !options.keep_conntrack {
            let stale = plan.stale_flows();
            report.flows_cleared = match self {
                Backends::Nft(b) => b.clear_flows(&stale)?,
            };
        }
        Ok(report)
    }

    /// Observe, plan and apply `model` in one go (what `portmap apply --auto-approve` does).
    pub fn converge(&mut self, model: &Model) -> Result<Outcome, Error> {
        let plan = portmap_core::plan(model, &self.observe()?);
        let report = self.apply(&plan)?;
        Ok(Outcome { plan, report })
    }

    /// Remove the owned table, then the tracked connections its forwards had made (unless
    /// `keep_conntrack`). Returns how many mappings were removed, `None` when there was no table.
    pub fn destroy(&mut self, options: &ApplyOptions) -> Result<Option<Destroyed>, Error> {
        let observed = self.observe()?;
        let removed = match self {
            Backends::Nft(b) => b.destroy()?,
        };
        if !removed {
            return Ok(None);
        }
        let mut flows_cleared = 0;
        if !options.keep_conntrack {
            let stale: Vec<StaleFlows> = observed
                .mappings
                .iter()
                .flat_map(|m| {
                    m.forwards.iter().map(|&forward| StaleFlows {
                        forward,
                        unless_from: None,
                    })
                })
                .collect();
            flows_cleared = match self {
                Backends::Nft(b) => b.clear_flows(&stale)?,
            };
        }
        Ok(Some(Destroyed {
            mappings: observed.mappings.len(),
            flows_cleared,
        }))
    }
}
