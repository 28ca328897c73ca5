//! The memo: what portmap's table held when this backend last read or wrote it, so that an apply
//! can plan without reading the whole table again when it can prove that the kernel has not
//! changed since.
//!
//! The proof is the kernel's own. Every committed nftables transaction in a network namespace moves
//! the ruleset generation by exactly one, whichever table it touches, so the generation names one
//! state of the whole ruleset. A memo records the state of the table at one generation, together
//! with what identifies the namespace (the boot and the namespace's cookie, which the kernel never
//! gives another namespace while it runs — unlike the inode number, which it reuses), the table
//! (its handle and flags: a table deleted and made again gets a new handle), and the router's
//! LAN-side addresses the table was built for (they change without a transaction). When all of
//! these are what the kernel shows now, the table is exactly what the memo says, and planning
//! against it gives the plan a full read would.
//!
//! What the memo does not hold and a read-back must not be skipped for: the counters (only
//! `status` and the metrics read them, always from the kernel), and any state portmap does not
//! trust itself to have predicted: the memo is written from a full observation, or after a commit
//! of portmap's own that nobody overtook, as the state that commit left ([`Memo::after`]) — the
//! same state a read would give, which the kernel tests check against a real read.
//!
//! The memo is a JSON file in a directory only root may write (the run directory, `/run/portmap`),
//! replaced atomically; one that cannot be read, is for another place or does not match is
//! ignored, and the table is read as always.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use portmap_core::{Model, Observed, Place};
use serde::{Deserialize, Serialize};

use crate::lan_side::LanSide;

/// Bumped whenever the memo's meaning changes; a memo of another version is ignored.
const VERSION: u32 = 1;

/// A memo larger than this is not read (portmap's own at 50,000 mappings is about 10 MB).
const MAX_BYTES: u64 = 256 << 20;

/// What the kernel shows now that a memo must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// The namespace's `SO_NETNS_COOKIE`.
    pub netns_cookie: u64,
    /// The ruleset generation.
    pub generation: u32,
    /// The table's handle.
    pub table_handle: u64,
    /// The table's flags.
    pub table_flags: u32,
    /// The router's LAN-side addresses, IPv4 and IPv6, as the table holds them.
    pub lan_side4: Vec<IpNet>,
    /// See `lan_side4`.
    pub lan_side6: Vec<IpNet>,
}

impl Stamp {
    pub(crate) fn lan_side_is(&self, lan: &LanSide) -> bool {
        self.lan_side4 == lan.lan_side4 && self.lan_side6 == lan.lan_side6
    }
}

/// One memo: a stamp and the observation it vouches for (without counters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Memo {
    version: u32,
    pub stamp: Stamp,
    /// Other tables' forward chains that drop, as last read (other tables change only with the
    /// generation too).
    pub blocking_forward_chains: Vec<String>,
    pub observed: Observed,
}

impl Memo {
    /// A memo of `observed` (a full read) under `stamp`.
    pub(crate) fn of(stamp: Stamp, observed: &Observed) -> Memo {
        let mut observed = observed.clone();
        observed.environment = portmap_core::Environment::default();
        observed.place = None;
        observed.generation = Some(stamp.generation);
        for m in &mut observed.mappings {
            m.counters = None;
            m.active_flows = None;
        }
        Memo {
            version: VERSION,
            blocking_forward_chains: Vec::new(),
            stamp,
            observed,
        }
    }

    /// The memo of the state a commit of `desired` left in an intact table, under `stamp`: what
    /// reading that table gives (the kernel tests compare the two), with `pending` the cleanups
    /// still recorded in it.
    pub(crate) fn after(
        stamp: Stamp,
        desired: &Model,
        table: &str,
        pending: Vec<portmap_core::StaleFlows>,
        blocking_forward_chains: Vec<String>,
    ) -> Memo {
        let mut observed = Observed::from_model(desired, "nft", table, Some(stamp.generation));
        // nft keeps every named list in a set of its own and always reports them.
        observed.sources = Some(desired.sources.clone());
        observed.pending_flows = pending;
        Memo {
            version: VERSION,
            blocking_forward_chains,
            stamp,
            observed,
        }
    }

    /// The observation, as `observe` reports it at `place` (the environment is the caller's to
    /// fill in, except for the other tables' forward chains, which the memo holds).
    pub(crate) fn into_observed(self, place: &Place) -> Observed {
        let mut observed = self.observed;
        observed.place = Some(place.clone());
        observed.environment.blocking_forward_chains = self.blocking_forward_chains;
        observed
    }
}

/// The file of the memo of table `inet <table>` in the namespace with inode number `netns`, in
/// `dir`. Named by the inode, which the kernel gives a new namespace once an old one is gone, so
/// that the files stay as many as the namespaces that exist; the stamp's cookie tells a new
/// namespace's table from the old one's.
pub(crate) fn path(dir: &Path, netns: u64, table: &str) -> PathBuf {
    dir.join(format!("memo-nft-{netns}-inet-{table}.json"))
}

/// The memo at `path`, if there is one that can be read and is of this version.
pub(crate) fn read(path: &Path) -> Option<Memo> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let memo: Memo = serde_json::from_slice(&bytes).ok()?;
    (memo.version == VERSION).then_some(memo)
}

/// Write `memo` to `path`, replacing what was there in one rename. Failing to write a memo costs
/// the next apply a full read, nothing else, so errors are only logged.
pub(crate) fn write(path: &Path, memo: &Memo) {
    let started = std::time::Instant::now();
    let Some(dir) = path.parent() else { return };
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("memo"),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 16, file);
        serde_json::to_writer(&mut w, memo).map_err(std::io::Error::other)?;
        w.flush()?;
        std::fs::rename(&tmp, path)
    })();
    match written {
        Ok(()) => {
            tracing::debug!(path = %path.display(), generation = memo.stamp.generation, elapsed = ?started.elapsed(), "wrote the memo");
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %path.display(), error = %e, "could not write the memo");
        }
    }
}

/// Remove the memo at `path` (after a change portmap cannot vouch for).
pub(crate) fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}
