//! portmap-nft: the nftables backend. Maps the `Model` onto one owned table (`inet portmap` by
//! default), reads it back into `Observed`, carries out a `Plan` as one netlink batch, and renders the
//! same ruleset as an nft script.
//!
//! It builds netlink objects through portmap-netlink and never encodes bytes by hand; it never reads
//! or changes any table but its own.

#![warn(missing_docs)]

pub mod apply;
pub mod coexistence;
pub mod element;
pub mod lan_side;
pub mod layout;
pub mod observe;
pub mod render;
#[cfg(test)]
mod tests;

use portmap_core::{ApplyReport, Backend, Model, Observed, Place, Plan, StaleFlows};
use portmap_netlink::conntrack::{self, Conntrack, Flow};
use portmap_netlink::{Family, Netns, Socket};

pub use lan_side::LanSide;
pub use layout::TableId;

/// How often a read or a destroy is tried again when another program moved the ruleset generation
/// in the middle of it.
pub const RETRIES: usize = 5;

/// Default name of the owned table.
pub const DEFAULT_TABLE: &str = "portmap";

/// Errors of the nft backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plan is not for this backend, table or place, has no generation, or is stale.
    #[error(transparent)]
    Refused(#[from] portmap_core::Refusal),
    /// The kernel interface failed (permission, namespace, a rejected batch, ...).
    #[error(transparent)]
    Netlink(#[from] portmap_netlink::Error),
    /// The ruleset kept changing while it was being read.
    #[error(
        "another program kept changing the ruleset while portmap read it (tried {attempts} times); nothing was changed — try again, or find the program that keeps rewriting the ruleset"
    )]
    Unstable {
        /// How many consistent reads were tried.
        attempts: usize,
    },
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
    /// A table name that is not a plain identifier (held escaped and cut short for messages).
    #[error("table name `{0}` is not valid: use 1-64 characters from A-Z a-z 0-9 _ - starting with a letter")]
    BadTableName(String),
    /// A table of portmap's name exists but portmap did not create it (it lacks portmap's marker).
    #[error(
        "table {table} was not created by portmap (it lacks portmap's marker comment \"managed by portmap\"); portmap never changes or deletes a table it did not create — give portmap a table of its own with --table NAME"
    )]
    Foreign {
        /// The table, e.g. `inet fw`.
        table: String,
    },
    /// portmap's table is held by another process's netlink socket (`NFT_TABLE_F_OWNER`).
    #[error(
        "table {table} is owned by another process (nftables table flag `owner`): the kernel lets only that process change it until it closes its netlink socket; portmap changed nothing — stop that process (or give portmap another table with --table NAME)"
    )]
    Owned {
        /// The table, e.g. `inet portmap`.
        table: String,
    },
}

/// The nftables backend bound to one network namespace and one table.
#[derive(Debug)]
pub struct NftBackend {
    socket: Socket,
    netns: Netns,
    table: TableId,
    place: Place,
}

impl NftBackend {
    /// Open a netlink socket in `netns` for managing table `inet <table>`.
    pub fn open(netns: &portmap_core::Netns, table: &str) -> Result<Self, Error> {
        let netns = &netlink_netns(netns);
        let table = checked_table_id(table)?;
        let socket = Socket::open(netns)?;
        let place = Place {
            boot_id: portmap_netlink::boot_id()?,
            netns: portmap_netlink::netns_inode(netns)?,
        };
        Ok(NftBackend {
            table,
            socket,
            netns: netns.clone(),
            place,
        })
    }

    /// The table this backend manages.
    pub fn table(&self) -> &TableId {
        &self.table
    }
}

/// Whether `flow` was DNAT-ed through the forward `stale` names (see [`StaleFlows::covers`]).
fn flow_is_stale(flow: &Flow, stale: &StaleFlows) -> bool {
    stale.covers(&portmap_core::TrackedFlow {
        dnat: flow.status & conntrack::status::DST_NAT != 0,
        proto: flow.original.proto,
        src: flow.original.src,
        dst_port: flow.original.dst_port,
        reply_src: flow.reply.src,
        reply_src_port: flow.reply.src_port,
    })
}

/// The netlink layer's handle for a namespace named by the core's plain value.
fn netlink_netns(netns: &portmap_core::Netns) -> Netns {
    match netns {
        portmap_core::Netns::Named(name) => Netns::Named(name.clone()),
        portmap_core::Netns::Path(path) => Netns::Path(path.clone()),
        _ => Netns::Current,
    }
}

/// Longest table name portmap accepts.
pub const MAX_TABLE_NAME_LEN: usize = 64;

/// The id of `inet <name>` for a name given by a user: 1–64 characters from `A-Z a-z 0-9 _ -`,
/// starting with a letter, so it can never break out of a rule or an nft script.
pub fn checked_table_id(name: &str) -> Result<TableId, Error> {
    let ok = name.len() <= MAX_TABLE_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(table_id(name))
    } else {
        Err(Error::BadTableName(portmap_core::shown_arg(name)))
    }
}

/// The id of `inet <name>` (the name is not checked: see [`checked_table_id`]).
pub fn table_id(name: &str) -> TableId {
    TableId {
        family: Family::Inet,
        name: name.to_owned(),
    }
}

/// Render `model` as an nft script for table `inet <table>`.
///
/// The router's LAN-side addresses (which hairpin leaves alone) are read from `netns`; reading the
/// namespace the process runs in needs no privileges.
pub fn render_script(model: &Model, table: &str, netns: &portmap_core::Netns) -> Result<String, Error> {
    let env = LanSide::read(&netlink_netns(netns), &model.settings)?;
    let table = checked_table_id(table)?;
    Ok(render::render(model, &table, &env))
}

impl Backend for NftBackend {
    type Error = Error;

    fn name(&self) -> &'static str {
        "nft"
    }

    fn observe(&mut self) -> Result<Observed, Error> {
        let mut observed = observe::observe(&mut self.socket, &self.netns, &self.table)?;
        observed.place = Some(self.place.clone());
        Ok(observed)
    }

    fn is_stale(error: &Error) -> bool {
        matches!(error, Error::Refused(portmap_core::Refusal::Stale { .. }))
    }

    fn commit(&mut self, plan: &Plan, record: &[StaleFlows]) -> Result<ApplyReport, Error> {
        // Every transaction is bound to the generation it was planned at: one the kernel has moved
        // past is refused whole by the kernel itself.
        let generation = plan.binding("nft", &self.table.display(), &self.place)?;
        if !plan.changes_kernel() {
            return Ok(ApplyReport::default());
        }
        let env = LanSide::read(&self.netns, &plan.desired.settings)?;
        let built = apply::build(plan, &self.table, &env, record);
        match self.socket.send(&built.batch, Some(generation)) {
            Ok(()) => {}
            Err(portmap_netlink::Error::GenerationChanged) => {
                return Err(portmap_core::Refusal::Stale { planned: generation }.into());
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
        // The kernel checked the generation and committed the batch under its commit mutex, and
        // every committed batch moves the generation by exactly one.
        Ok(ApplyReport::new(built.batch.len(), built.objects, built.rebuilt)
            .at_generation(generation.wrapping_add(1)))
    }

    fn clear_flows(&mut self, stale: &[StaleFlows]) -> Result<usize, Error> {
        if stale.is_empty() {
            return Ok(0);
        }
        let mut conntrack = Conntrack::open(&self.netns)?;
        Ok(conntrack.delete_where(None, |flow| stale.iter().any(|s| flow_is_stale(flow, s)))?)
    }

    fn forget_flows(&mut self) -> Result<(), Error> {
        let t = &self.table;
        let Some(table) = self.socket.table(t.family, &t.name)? else {
            return Ok(());
        };
        if !observe::is_ours(&table) {
            return Err(Error::Foreign { table: t.display() });
        }
        let mut batch = portmap_netlink::Batch::new();
        for family in layout::IpFamily::ALL {
            batch.flush_set(t.family, &t.name, family.stale_set());
        }
        self.socket.send(&batch, None)?;
        Ok(())
    }

    fn render(&self, model: &Model) -> Result<String, Error> {
        let env = LanSide::read(&self.netns, &model.settings)?;
        Ok(render::render(model, &self.table, &env))
    }

    fn destroy(&mut self) -> Result<bool, Error> {
        let t = &self.table;
        // The delete carries the generation the marker was checked at, so a table replaced in
        // between is never deleted; a writer that moved the generation only costs another look.
        for _ in 0..RETRIES {
            let generation = self.socket.generation()?;
            match self.socket.table(t.family, &t.name)? {
                None => return Ok(false),
                Some(table) if !observe::is_ours(&table) => {
                    return Err(Error::Foreign { table: t.display() });
                }
                Some(_) => {}
            }
            let mut batch = portmap_netlink::Batch::new();
            batch.del_table(t.family, &t.name);
            match self.socket.send(&batch, Some(generation)) {
                Ok(()) => return Ok(true),
                Err(portmap_netlink::Error::GenerationChanged) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unstable { attempts: RETRIES })
    }
}
