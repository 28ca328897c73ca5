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
mod memo;
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
        "table {table} is owned by another process (nftables table flag `owner`{holder}): the kernel lets only that process change it until it closes its netlink socket; portmap changed nothing — if it is `portmap watch --own`, change its configuration file and reload it (`systemctl reload portmap-watch`, or send it SIGHUP) instead; otherwise stop that process (or give portmap another table with --table NAME)"
    )]
    Owned {
        /// The table, e.g. `inet portmap`.
        table: String,
        /// Who holds it, as far as the kernel says.
        holder: Holder,
    },
    /// The kernel does not support table ownership (`NFT_TABLE_F_OWNER`, Linux 5.12+).
    #[error(
        "this kernel does not support nftables table ownership (flag owner, Linux 5.12 or later): it refused a table with it ({source}); run without --own"
    )]
    OwnerUnsupported {
        /// The kernel's refusal.
        #[source]
        source: portmap_netlink::Error,
    },
}

/// The holder of an owned table, as the kernel names it: the netlink port id of its socket, which
/// for a process's first netlink socket is its pid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// `NFTA_TABLE_OWNER`.
    pub port: Option<u32>,
    /// The name of the process whose pid is that port id, when there is one (`/proc/PID/comm`).
    pub process: Option<String>,
}

impl Holder {
    /// The holder of a table whose owner is netlink port `port`.
    pub fn of_port(port: Option<u32>) -> Holder {
        let process = port
            .filter(|&p| p > 0 && p < 1 << 22)
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| portmap_core::shown_arg(c.trim()));
        Holder { port, process }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.port, &self.process) {
            (Some(port), Some(process)) => {
                write!(f, ", held by netlink port {port}: process {process}, pid {port}")
            }
            (Some(port), None) => write!(f, ", held by netlink port {port}"),
            (None, _) => Ok(()),
        }
    }
}

/// Who may change portmap's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Ownership {
    /// Any process with `CAP_NET_ADMIN` (the default): the table has no owner.
    #[default]
    Shared,
    /// The backend's netlink socket owns the table (`NFT_TABLE_F_OWNER`): the kernel refuses
    /// every other process's change with `EPERM` and `flush ruleset` leaves the table alone.
    /// With `persist` (`NFT_TABLE_F_PERSIST`, Linux 6.9+) the table outlives the socket, left
    /// without an owner; without it the kernel removes the table when the socket closes.
    Owned {
        /// Whether the table also carries `NFT_TABLE_F_PERSIST`.
        persist: bool,
    },
}

/// What the last read of the table (or the memo that stood in for it) saw, at its generation.
#[derive(Debug)]
struct LastRead {
    generation: u32,
    seen: observe::Seen,
    /// Other tables' forward chains that drop.
    blocking: Vec<String>,
}

/// The nftables backend bound to one network namespace and one table.
#[derive(Debug)]
pub struct NftBackend {
    socket: Socket,
    netns: Netns,
    table: TableId,
    place: Place,
    ownership: Ownership,
    /// Where the memo is kept ([`NftBackend::with_memo`]); `None`: no memo.
    memo_dir: Option<std::path::PathBuf>,
    /// What the last read of the table saw, at its generation: what a commit planned from it
    /// needs to write the memo of the state it leaves.
    seen: Option<Box<LastRead>>,
    /// The memo of the state the last commit left, while the cleanups it recorded are still in
    /// the table (written once [`Backend::forget_flows`] removed them).
    pending_memo: Option<Box<memo::Memo>>,
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
            ownership: Ownership::Shared,
            memo_dir: None,
            seen: None,
            pending_memo: None,
        })
    }

    /// Keep a memo of the table in `dir` (a directory only root can write, e.g. `/run/portmap`):
    /// then [`Backend::observe_to_plan`] answers from the memo, without reading the table, when
    /// the kernel shows that nothing has changed since portmap last read or wrote it (the same
    /// boot, namespace, table and ruleset generation, and the same LAN-side addresses). See the
    /// `memo` module for the argument. A table this backend owns ([`Ownership::Owned`]) keeps no
    /// memo.
    #[must_use]
    pub fn with_memo(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.memo_dir = Some(dir.into());
        self
    }

    /// The memo file, when a memo is kept and the namespace has a cookie.
    fn memo_path(&self) -> Option<std::path::PathBuf> {
        if self.ownership != Ownership::Shared {
            return None;
        }
        let dir = self.memo_dir.as_ref()?;
        // Without a cookie a memo could not tell this namespace from an earlier one.
        self.socket.netns_cookie()?;
        Some(memo::path(dir, self.place.netns, &self.table.name))
    }

    /// The stamp the kernel shows now for a table that should be at `generation` and hold
    /// `lan_side`, when it is there at that generation.
    fn stamp_at(&mut self, generation: u32, lan_side: &LanSide) -> Result<Option<memo::Stamp>, Error> {
        let Some(cookie) = self.socket.netns_cookie() else {
            return Ok(None);
        };
        let t = &self.table;
        let Some(table) = self.socket.table(t.family, &t.name)? else {
            return Ok(None);
        };
        let (Some(handle), true) = (table.handle, observe::is_ours(&table)) else {
            return Ok(None);
        };
        if self.socket.generation()? != generation {
            return Ok(None);
        }
        Ok(Some(memo::Stamp {
            boot_id: self.place.boot_id.clone(),
            netns_cookie: cookie,
            generation,
            table_handle: handle,
            table_flags: table.flags,
            lan_side4: lan_side.lan_side4.clone(),
            lan_side6: lan_side.lan_side6.clone(),
        }))
    }

    /// The observation the memo vouches for, when there is a memo and the kernel shows that
    /// nothing has changed since it was written (what [`Backend::observe_to_plan`] then returns);
    /// `None` otherwise. Reads only the generation, the table's own attributes and the
    /// interfaces.
    pub fn recall(&mut self) -> Result<Option<Observed>, Error> {
        let Some(path) = self.memo_path() else {
            return Ok(None);
        };
        let Some(memo) = memo::read(&path) else {
            return Ok(None);
        };
        let generation = self.socket.generation()?;
        if generation != memo.stamp.generation {
            return Ok(None);
        }
        // The kernel removes the elements of an expired mapping without a transaction, so the
        // generation does not say whether one expired since: a memo holding a forward whose
        // moment has come is not trusted.
        let now = portmap_core::UtcTime::now();
        if memo
            .observed
            .mappings
            .iter()
            .any(|m| !m.forwards.is_empty() && m.expires.is_some_and(|t| t <= now))
        {
            return Ok(None);
        }
        let interfaces = portmap_netlink::link::interfaces(&self.netns)?;
        let lan_side = LanSide::from_interfaces(&interfaces, &memo.observed.settings);
        if !memo.stamp.lan_side_is(&lan_side) {
            return Ok(None);
        }
        if self.stamp_at(generation, &lan_side)?.as_ref() != Some(&memo.stamp) {
            return Ok(None);
        }
        let seen = observe::Seen {
            table: Some((memo.stamp.table_handle, memo.stamp.table_flags)),
            lan_side,
            can_expire: memo.observed.can_expire,
        };
        self.seen = Some(Box::new(LastRead {
            generation,
            seen,
            blocking: memo.blocking_forward_chains.clone(),
        }));
        let mut observed = memo.into_observed(&self.place);
        observed.observed_at = Some(now);
        let blocking = std::mem::take(&mut observed.environment.blocking_forward_chains);
        observed.environment = observe::environment(&self.netns, &interfaces, blocking);
        Ok(Some(observed))
    }

    /// Write the memo of `observed` (a full read), or remove a memo that no longer holds.
    fn remember(&mut self, observed: &Observed) -> Result<(), Error> {
        let Some(path) = self.memo_path() else {
            return Ok(());
        };
        let stamp = match (&self.seen, observed.generation) {
            (Some(last), Some(generation)) if last.generation == generation && last.seen.table.is_some() => {
                let lan_side = last.seen.lan_side.clone();
                self.stamp_at(generation, &lan_side)?
            }
            _ => None,
        };
        match stamp {
            Some(stamp) => {
                let mut m = memo::Memo::of(stamp, observed);
                m.blocking_forward_chains
                    .clone_from(&observed.environment.blocking_forward_chains);
                memo::write(&path, &m);
            }
            None => memo::forget(&path),
        }
        Ok(())
    }

    /// After a commit of `plan` at `generation` (so the ruleset is at `generation + 1`, as this
    /// commit left it): the memo of that state, written now when the commit recorded no cleanups,
    /// else kept until [`Backend::forget_flows`] removed them.
    fn remember_commit(
        &mut self,
        plan: &Plan,
        generation: u32,
        env: &LanSide,
        rebuilt: bool,
        recorded: bool,
    ) -> Result<(), Error> {
        self.pending_memo = None;
        let Some(path) = self.memo_path() else {
            return Ok(());
        };
        // The LAN side the table holds now: what this commit wrote if it built the table, else
        // what the table held when it was read to plan this commit.
        let last = self.seen.as_ref().filter(|l| l.generation == generation);
        let blocking = last.map(|l| l.blocking.clone());
        let kept_can_expire = last.filter(|_| !rebuilt).map(|l| l.seen.can_expire);
        let lan_side = match last {
            Some(l) if !rebuilt => l.seen.lan_side.clone(),
            _ => env.clone(),
        };
        let (Some(blocking), Some(stamp)) = (blocking, self.stamp_at(generation.wrapping_add(1), &lan_side)?)
        else {
            memo::forget(&path);
            return Ok(());
        };
        // A configuration with an expiring mapping is not predicted: what stays of an expired one
        // (its counters) is only known from a read.
        if plan.desired.mappings.iter().any(|m| m.expires.is_some()) {
            memo::forget(&path);
            return Ok(());
        }
        // Once forget_flows ran (or when nothing was recorded), no cleanup is pending.
        let mut m = memo::Memo::after(stamp, &plan.desired, &self.table.display(), Vec::new(), blocking);
        // A table kept keeps the timeouts it had; a rebuilt one has what the configuration needs.
        if let Some(can_expire) = kept_can_expire {
            m.observed.can_expire = can_expire;
        }
        if recorded {
            // The cleanups are recorded in the table until forget_flows removes them.
            memo::forget(&path);
            self.pending_memo = Some(Box::new(m));
        } else {
            memo::write(&path, &m);
        }
        Ok(())
    }

    /// The table this backend manages.
    pub fn table(&self) -> &TableId {
        &self.table
    }

    /// Who may change the table (see [`NftBackend::take_ownership`]).
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// Make this backend's socket the table's owner from now on (`NFT_TABLE_F_OWNER`, with
    /// `NFT_TABLE_F_PERSIST` where the kernel has it): every table it builds is owned, `observe`
    /// reports a table without an owner as damaged (so the next apply rebuilds it owned), and an
    /// existing table left without an owner by an earlier owner (persist) is adopted at once, in
    /// place, keeping its counters. What the kernel supports is probed with a scratch table
    /// created and deleted in one transaction.
    pub fn take_ownership(&mut self) -> Result<Ownership, Error> {
        let persist = match self.probe(layout::TABLE_F_OWNER | layout::TABLE_F_PERSIST)? {
            Ok(()) => true,
            Err(_) => match self.probe(layout::TABLE_F_OWNER)? {
                Ok(()) => false,
                Err(source) => return Err(Error::OwnerUnsupported { source }),
            },
        };
        self.ownership = Ownership::Owned { persist };
        let t = &self.table;
        if let Some(table) = self.socket.table(t.family, &t.name)?
            && observe::is_ours(&table)
            && table.flags & (layout::TABLE_F_OWNER | layout::TABLE_F_PERSIST) == layout::TABLE_F_PERSIST
        {
            // Left without an owner by an owner that went away: take it over as it is.
            let mut batch = portmap_netlink::Batch::new();
            batch.add_table(&portmap_netlink::Table {
                flags: table.flags | layout::TABLE_F_OWNER,
                ..apply::table_object(t)
            });
            self.socket.send(&batch, None)?;
        }
        Ok(self.ownership)
    }

    /// Whether the kernel takes a table with `flags`: a scratch table created and deleted in one
    /// transaction. `Ok(Err(refusal))` when the kernel refuses the flags themselves.
    fn probe(&mut self, flags: u32) -> Result<Result<(), portmap_netlink::Error>, Error> {
        /// What the kernel answers for table flags it does not know.
        const EOPNOTSUPP: i32 = 95;
        const EINVAL: i32 = 22;
        let probe = table_id(&format!("portmap-probe-{}", std::process::id()));
        let mut batch = portmap_netlink::Batch::new();
        batch.add_table(&portmap_netlink::Table {
            flags,
            ..apply::table_object(&probe)
        });
        batch.del_table(probe.family, &probe.name);
        match self.socket.send(&batch, None) {
            Ok(()) => Ok(Ok(())),
            Err(e @ portmap_netlink::Error::Kernel { index: 0, errno, .. })
                if errno == EOPNOTSUPP || errno == EINVAL =>
            {
                Ok(Err(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The flags a table this backend builds carries.
    fn table_flags(&self) -> u32 {
        match self.ownership {
            Ownership::Shared => 0,
            Ownership::Owned { persist: false } => layout::TABLE_F_OWNER,
            Ownership::Owned { persist: true } => layout::TABLE_F_OWNER | layout::TABLE_F_PERSIST,
        }
    }

    /// `error` from a transaction on the table, as the backend reports it: a permission refusal on
    /// a table another process's socket owns is [`Error::Owned`], saying who holds it.
    fn refusal(&mut self, error: portmap_netlink::Error) -> Error {
        if matches!(error, portmap_netlink::Error::Permission { .. }) {
            let t = &self.table;
            if let Ok(Some(table)) = self.socket.table(t.family, &t.name)
                && table.flags & layout::TABLE_F_OWNER != 0
                && self.owner_port().ok().flatten() != table.owner
            {
                return Error::Owned {
                    table: t.display(),
                    holder: Holder::of_port(table.owner),
                };
            }
        }
        error.into()
    }

    /// The port id of the socket that is to own the table, when the backend owns it.
    fn owner_port(&self) -> Result<Option<u32>, Error> {
        match self.ownership {
            Ownership::Shared => Ok(None),
            Ownership::Owned { .. } => Ok(Some(self.socket.port_id()?)),
        }
    }

    /// The values of the counter objects of the table now, by name (none when the table does not
    /// exist or is not portmap's).
    fn counter_values(&mut self) -> Result<apply::Presets, Error> {
        let t = &self.table;
        match self.socket.table(t.family, &t.name)? {
            Some(table) if observe::is_ours(&table) => {}
            _ => return Ok(apply::Presets::new()),
        }
        Ok(self
            .socket
            .objects(t.family, &t.name)?
            .into_iter()
            .filter_map(|o| match o.kind {
                portmap_netlink::ObjectKind::Counter { packets, bytes } => Some((o.name, (packets, bytes))),
                _ => None,
            })
            .collect())
    }
}

/// A conntrack entry as the core reads it.
fn tracked(flow: &Flow) -> portmap_core::TrackedFlow {
    portmap_core::TrackedFlow {
        dnat: flow.status & conntrack::status::DST_NAT != 0,
        proto: flow.original.proto,
        src: flow.original.src,
        dst_port: flow.original.dst_port,
        reply_src: flow.reply.src,
        reply_src_port: flow.reply.src_port,
    }
}

/// Whether `flow` was DNAT-ed through the forward `stale` names (see [`StaleFlows::covers`]).
fn flow_is_stale(flow: &Flow, stale: &StaleFlows) -> bool {
    stale.covers(&tracked(flow))
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
        let owner = self.owner_port()?;
        let (mut observed, seen) = observe::observe_seen(&mut self.socket, &self.netns, &self.table, owner)?;
        self.seen = observed.generation.map(|generation| {
            Box::new(LastRead {
                generation,
                seen,
                blocking: observed.environment.blocking_forward_chains.clone(),
            })
        });
        observed.place = Some(self.place.clone());
        // A missing table was read at this moment too.
        observed
            .observed_at
            .get_or_insert_with(portmap_core::UtcTime::now);
        Ok(observed)
    }

    fn observe_to_plan(&mut self) -> Result<Observed, Error> {
        if let Some(observed) = self.recall()? {
            tracing::debug!(generation = ?observed.generation, "the memo holds: the kernel has not changed since portmap last read or wrote the table");
            return Ok(observed);
        }
        let observed = self.observe()?;
        self.remember(&observed)?;
        Ok(observed)
    }

    fn generation(&mut self) -> Result<Option<u32>, Error> {
        Ok(Some(self.socket.generation()?))
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
        // Counters a rebuild or a repair creates again start from what they hold now.
        let presets = if apply::recreates_counters(plan) {
            self.counter_values()?
        } else {
            apply::Presets::new()
        };
        let built = apply::build_with_flags(plan, &self.table, &env, record, &presets, self.table_flags());
        tracing::debug!(
            messages = built.batch.len(),
            bytes = built.batch.message_bytes(),
            objects = built.objects,
            generation,
            rebuilt = built.rebuilt,
            "sending one netlink batch"
        );
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
            Err(e) => return Err(self.refusal(e)),
        }
        // The kernel checked the generation and committed the batch under its commit mutex, and
        // every committed batch moves the generation by exactly one.
        let recorded = !record.is_empty() || !plan.pending_flows.is_empty();
        let report = ApplyReport::new(built.batch.len(), built.objects, built.rebuilt);
        let rebuilt = built.rebuilt;
        // The batch (18 MB at 50,000 mappings) goes before the memo is made, not alongside it.
        drop(built);
        self.remember_commit(plan, generation, &env, rebuilt, recorded)?;
        Ok(report.at_generation(generation.wrapping_add(1)))
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
        // Right after the commit that recorded the cleanups, the flush is bound to the generation
        // that commit left: when it lands, the state it leaves is the memo's, one generation on.
        let pending = self.pending_memo.take();
        let expect = pending.as_ref().map(|m| m.stamp.generation);
        match self.socket.send(&batch, expect) {
            Ok(()) => {
                if let (Some(mut m), Some(path)) = (pending, self.memo_path()) {
                    let m = &mut *m;
                    m.stamp.generation = m.stamp.generation.wrapping_add(1);
                    m.observed.generation = Some(m.stamp.generation);
                    memo::write(&path, m);
                }
                Ok(())
            }
            Err(portmap_netlink::Error::GenerationChanged) => match self.socket.send(&batch, None) {
                Ok(()) => Ok(()),
                Err(e) => Err(self.refusal(e)),
            },
            Err(e) => Err(self.refusal(e)),
        }
    }

    fn render(&self, model: &Model) -> Result<String, Error> {
        let env = LanSide::read(&self.netns, &model.settings)?;
        Ok(render::render(model, &self.table, &env))
    }

    fn tracked_flows(&mut self) -> Result<Option<Vec<portmap_core::TrackedFlow>>, Error> {
        let mut conntrack = Conntrack::open(&self.netns)?;
        Ok(Some(conntrack.dump(None)?.iter().map(tracked).collect()))
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
                Err(e) => return Err(self.refusal(e)),
            }
        }
        Err(Error::Unstable { attempts: RETRIES })
    }
}
