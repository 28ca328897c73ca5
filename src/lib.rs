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
    /// A saved plan's changes are not what its desired state calls for against the kernel as it is
    /// (at the same generation): the file was edited.
    #[error(
        "the plan file's changes are not what its own desired state calls for against the kernel (which has not changed since the plan was made): was the file edited? Nothing was applied. Planned afresh, the changes are:\n{0}"
    )]
    PlanMismatch(Box<Plan>),
    /// A fresh plan was not approved.
    #[error("cancelled; nothing was changed")]
    Declined,
}

impl Error {
    /// Whether the error means another program got in between, so that planning afresh may
    /// succeed.
    fn is_race(&self) -> bool {
        matches!(
            self,
            Error::Nft(portmap_nft::Error::Stale { .. }) | Error::Overtaken(_)
        )
    }
}

/// How many times [`Backends::converge`] plans and applies afresh when another program changes the
/// ruleset between portmap's read and its transaction.
pub const CONVERGE_ATTEMPTS: usize = 3;

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
    /// How many times portmap planned (more than 1 when another program changed the ruleset in
    /// between).
    pub attempts: usize,
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
        // The flows this plan makes stale are recorded in its own transaction, so that a process
        // killed before removing them leaves the next apply a note to finish the job.
        let stale = if options.keep_conntrack {
            Vec::new()
        } else {
            plan.stale_flows()
        };
        let mut report = match self {
            Backends::Nft(b) => b.apply(plan, &stale)?,
        };
        if report.messages > 0 {
            let observed = self.observe()?;
            let after = portmap_core::plan(&plan.desired, &observed);
            if after.changes_kernel() {
                // The transaction moved the generation by one; more means another writer came
                // after it, and the difference may be theirs.
                let ours = plan.generation.map(|g| g.wrapping_add(1));
                return Err(if observed.generation == ours {
                    Error::NotConverged(Box::new(after))
                } else {
                    Error::Overtaken(Box::new(after))
                });
            }
        }
        let recorded = !stale.is_empty() || !plan.pending_flows.is_empty();
        if !options.keep_conntrack {
            let all: Vec<StaleFlows> = plan.pending_flows.iter().chain(&stale).cloned().collect();
            report.flows_cleared = match self {
                Backends::Nft(b) => b.clear_flows(&all)?,
            };
        }
        if recorded {
            match self {
                Backends::Nft(b) => b.forget_flows()?,
            }
        }
        Ok(report)
    }

    /// Apply a plan saved earlier (`portmap plan --out`), after checking it against the kernel as it
    /// is now: it must have been made here (same boot and network namespace), at the generation
    /// the ruleset still has, and planning its desired state afresh must give exactly its changes —
    /// so a plan file edited by hand (a delete added, a `before` altered) is refused, and so is one
    /// the kernel has moved past. Nothing is retried: a refused saved plan is made again.
    pub fn apply_saved(&mut self, plan: &Plan, options: &ApplyOptions) -> Result<ApplyReport, Error> {
        let observed = self.observe()?;
        if let (Some(planned), Some(here)) = (&plan.place, &observed.place)
            && planned != here
        {
            return Err(Error::Nft(portmap_nft::Error::WrongPlace {
                planned: planned.clone(),
                actual: here.clone(),
            }));
        }
        if plan.generation != observed.generation {
            return Err(Error::Nft(portmap_nft::Error::Stale {
                planned: plan.generation.unwrap_or_default(),
            }));
        }
        let fresh = portmap_core::plan(&plan.desired, &observed);
        if !fresh.same_changes(plan) {
            return Err(Error::PlanMismatch(Box::new(fresh)));
        }
        self.apply_with(plan, options)
    }

    /// Observe, plan and apply `model` in one go (what `portmap apply --auto-approve` does). When
    /// another program changes the ruleset between the read and the transaction, the kernel refuses
    /// the transaction whole and portmap reads and plans again, up to [`CONVERGE_ATTEMPTS`] times.
    pub fn converge(&mut self, model: &Model) -> Result<Outcome, Error> {
        self.converge_approved(model, &ApplyOptions::default(), |_, _| true)
    }

    /// [`Backends::converge`] asking `approve` before applying: it is called with each non-empty
    /// plan and the attempt number (1 first) — again only when a fresh plan makes other changes than
    /// the one approved last — and applying stops with [`Error::Declined`] when it says no. An
    /// empty plan is returned without asking.
    pub fn converge_approved(
        &mut self,
        model: &Model,
        options: &ApplyOptions,
        mut approve: impl FnMut(&Plan, usize) -> bool,
    ) -> Result<Outcome, Error> {
        let mut approved: Option<Plan> = None;
        for attempt in 1..=CONVERGE_ATTEMPTS {
            let plan = portmap_core::plan(model, &self.observe()?);
            if plan.is_empty() {
                return Ok(Outcome {
                    plan,
                    report: ApplyReport::default(),
                    attempts: attempt,
                });
            }
            if !approved.as_ref().is_some_and(|a| a.same_changes(&plan)) {
                if !approve(&plan, attempt) {
                    return Err(Error::Declined);
                }
                approved = Some(plan.clone());
            }
            match self.apply_with(&plan, options) {
                Ok(report) => {
                    return Ok(Outcome {
                        plan,
                        report,
                        attempts: attempt,
                    });
                }
                Err(e) if e.is_race() => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            attempts: CONVERGE_ATTEMPTS,
        })
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
                        mapping: m.name.clone(),
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
