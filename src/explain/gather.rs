//! Read, never write, what `explain` judges: the backend's observation of portmap's own table,
//! the namespace's interfaces, the kernel's routes to the source and to the target
//! ([`portmap_netlink::route_to`]), the other nftables tables whose base chains see the packet
//! (with their rules and sets), and with an iptables backend the coexistence checks of its
//! `FORWARD` chains. No judgement here: [`super::evaluate`] makes it.

use std::collections::HashMap;

use portmap_netlink::{Family, Hook, Socket, route_to};

use super::{Facts, Query, TableRules, mapped};
use crate::{Backend, BackendError, BackendKind, Backends, Error, Netns};

/// A set with more elements than this is not read: its lookups count as unknown.
const MAX_SET_ELEMENTS: usize = 100_000;
/// At most this many sets of one table are read.
const MAX_SETS: usize = 1_000;

/// The names iptables-nft gives its tables (in families `ip` and `ip6`).
const XTABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

fn netlink_netns(netns: &Netns) -> portmap_netlink::Netns {
    match netns {
        Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
        Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
        _ => portmap_netlink::Netns::Current,
    }
}

fn netlink(e: portmap_netlink::Error) -> Error {
    Error::Backend(Box::new(e))
}

/// Everything [`super::evaluate`] needs for `query` in `netns`, read with backend `kind` managing
/// `table`.
pub fn gather(kind: BackendKind, netns: &Netns, table: &str, query: &Query) -> Result<Facts, Error> {
    let mut backend = Backends::open(kind, netns, table)?;
    let observed = backend
        .observe()
        .map_err(|e: BackendError| Error::Backend(Box::new(e)))?;
    let nl = netlink_netns(netns);
    let interfaces = portmap_netlink::interfaces(&nl).map_err(netlink)?;
    let source_route = query
        .from
        .map(|from| route_to(&nl, from))
        .transpose()
        .map_err(netlink)?;
    let target_route = mapped(query, &observed)
        .map(|(_, f)| route_to(&nl, f.to))
        .transpose()
        .map_err(netlink)?;
    let (nft_backend, own, iptables_blockers) = match &backend {
        Backends::Nft(b) => (true, Some((b.table().family, b.table().name.clone())), Vec::new()),
        Backends::Iptables(b) => (
            false,
            None,
            b.forward_blockers()
                .map_err(|e| Error::Backend(Box::new(BackendError::Iptables(e))))?,
        ),
    };
    let tables = foreign_tables(&nl, own.as_ref(), nft_backend).map_err(netlink)?;
    Ok(Facts {
        observed,
        interfaces,
        source_route,
        target_route,
        tables,
        nft_backend,
        iptables_blockers,
    })
}

/// The other tables with a base chain at prerouting, forward or input, whole. With an iptables
/// backend, iptables-nft's own tables are left to its coexistence checks.
fn foreign_tables(
    nl: &portmap_netlink::Netns,
    own: Option<&(Family, String)>,
    nft_backend: bool,
) -> Result<Vec<TableRules>, portmap_netlink::Error> {
    let mut socket = Socket::open(nl)?;
    let mut out = Vec::new();
    for table in socket.tables()? {
        if own.is_some_and(|(f, n)| *f == table.family && *n == table.name) {
            continue;
        }
        let xtables = table.family != Family::Inet && XTABLES.contains(&table.name.as_str());
        if xtables && !nft_backend {
            continue;
        }
        let chains = socket.chains(table.family, &table.name)?;
        let relevant = chains.iter().any(|c| {
            c.base
                .as_ref()
                .is_some_and(|b| matches!(b.hook, Hook::Prerouting | Hook::Forward | Hook::Input))
        });
        if !relevant {
            continue;
        }
        let rules = socket.rules(table.family, &table.name)?;
        let mut sets = HashMap::new();
        for set in socket.sets(table.family, &table.name)?.into_iter().take(MAX_SETS) {
            let elements = socket
                .elements(table.family, &table.name, &set.name)
                .ok()
                .filter(|e| e.len() <= MAX_SET_ELEMENTS);
            sets.insert(set.name.clone(), (set, elements));
        }
        out.push(TableRules {
            family: table.family,
            name: table.name,
            chains,
            rules,
            sets,
        });
    }
    Ok(out)
}
