//! portmap-nft: the nftables backend. Maps the `Model` onto one owned table (`inet portmap` by
//! default), reads it back into `Observed`, carries out a `Plan` as one netlink batch, and renders the
//! same ruleset as an nft script.
//!
//! It builds netlink objects through portmap-netlink and never encodes bytes by hand; it never reads
//! or changes any table but its own.

#![warn(missing_docs)]

pub mod apply;
pub mod element;
pub mod layout;
pub mod observe;
pub mod render;
#[cfg(test)]
mod tests;

use portmap_core::{ApplyReport, Backend, Model, Observed, Plan};
use portmap_netlink::{Family, Netns, Socket};

pub use layout::TableId;

/// Default name of the owned table.
pub const DEFAULT_TABLE: &str = "portmap";

/// Errors of the nft backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel interface failed (permission, namespace, a rejected batch, ...).
    #[error(transparent)]
    Netlink(#[from] portmap_netlink::Error),
    /// A saved plan was made for another table.
    #[error("this plan was made for table {planned}, but portmap is managing {actual}; use --table to match")]
    WrongTable {
        /// Table named in the plan.
        planned: String,
        /// Table this backend manages.
        actual: String,
    },
    /// The ruleset changed after the plan was made.
    #[error(
        "the ruleset changed since this plan was made (generation {planned:?}); nothing was applied — run `portmap plan` again"
    )]
    Stale {
        /// Generation recorded in the plan.
        planned: Option<u32>,
    },
    /// The ruleset kept changing while it was being read.
    #[error("the ruleset kept changing while portmap read it (another program is busy with it); try again")]
    Unstable,
    /// The kernel refused part of the transaction that carries one mapping's change; nothing of the
    /// plan was applied.
    #[error("the kernel refused the transaction while {what}; nothing was applied")]
    Rejected {
        /// The change, e.g. "creating mapping web".
        what: String,
        /// The kernel's refusal.
        #[source]
        source: portmap_netlink::Error,
    },
    /// A plan from another backend.
    #[error("this plan was made for the {0} backend, not nft")]
    WrongBackend(String),
}

/// The nftables backend bound to one network namespace and one table.
#[derive(Debug)]
pub struct NftBackend {
    socket: Socket,
    table: TableId,
}

impl NftBackend {
    /// Open a netlink socket in `netns` for managing table `inet <table>`.
    pub fn open(netns: &Netns, table: &str) -> Result<Self, Error> {
        Ok(NftBackend {
            socket: Socket::open(netns)?,
            table: table_id(table),
        })
    }

    /// The table this backend manages.
    pub fn table(&self) -> &TableId {
        &self.table
    }
}

/// The id of `inet <name>`.
pub fn table_id(name: &str) -> TableId {
    TableId {
        family: Family::Inet,
        name: name.to_owned(),
    }
}

/// Render `model` as an nft script for table `inet <table>` (no kernel access, no privileges needed).
pub fn render_script(model: &Model, table: &str) -> String {
    render::render(model, &table_id(table))
}

impl Backend for NftBackend {
    type Error = Error;

    fn name(&self) -> &'static str {
        "nft"
    }

    fn observe(&mut self) -> Result<Observed, Error> {
        observe::observe(&mut self.socket, &self.table)
    }

    fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, Error> {
        if plan.backend != "nft" {
            return Err(Error::WrongBackend(plan.backend.clone()));
        }
        if plan.table != self.table.display() {
            return Err(Error::WrongTable {
                planned: plan.table.clone(),
                actual: self.table.display(),
            });
        }
        if plan.is_empty() {
            return Ok(ApplyReport::default());
        }
        let built = apply::build(plan, &self.table);
        match self.socket.send(&built.batch, plan.generation) {
            Ok(()) => {}
            Err(portmap_netlink::Error::GenerationChanged) => {
                return Err(Error::Stale {
                    planned: plan.generation,
                });
            }
            Err(e @ portmap_netlink::Error::Kernel { index, .. }) => {
                return Err(match built.owner(index) {
                    Some(what) => Error::Rejected {
                        what: what.to_owned(),
                        source: e,
                    },
                    None => e.into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(ApplyReport {
            messages: built.batch.len(),
            objects: built.objects,
            rebuilt: built.rebuilt,
        })
    }

    fn render(&self, model: &Model) -> String {
        render::render(model, &self.table)
    }

    fn destroy(&mut self) -> Result<bool, Error> {
        let t = &self.table;
        if self.socket.table(t.family, &t.name)?.is_none() {
            return Ok(false);
        }
        let mut batch = portmap_netlink::Batch::new();
        batch.del_table(t.family, &t.name);
        self.socket.send(&batch, None)?;
        Ok(true)
    }
}
