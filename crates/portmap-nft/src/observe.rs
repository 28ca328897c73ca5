//! Read portmap's table back into `Observed`: the mappings (names travel in element comments; an
//! element of `dnat6` gives a forward to an IPv6 target), the settings, and every way the structure
//! differs from what portmap builds (reported as reasons for a repair). Reading is retried until the
//! ruleset generation is the same before and after, so the picture is consistent. `observe` never
//! decides what to do about what it finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use portmap_core::{
    Environment, Forward, Observed, ObservedMapping, Settings, SourceList, StaleFlows, TableState,
};
use portmap_netlink::link::{self, Interface};
use portmap_netlink::{Chain, Expr, Netns, ObjectKind, Rule, Set, Socket, sysctl, udata};

use crate::element::{self, Key, parse_mapping_comment};
use crate::lan_side::LanSide;
use crate::layout::{self, Contents, IpFamily, Shape, TableId};
use crate::{Error, coexistence};

/// Read the table consistently and analyse it, then look around it (interfaces, forwarding
/// sysctls, other tables' forward chains) for what would stop the forwards from working.
///
/// A table owned by another process's socket (`NFT_TABLE_F_OWNER`) is read like any other: the
/// kernel lets everyone read it, and refuses the write (which the backend reports as
/// [`Error::Owned`]). `owner` is the netlink port id of `socket` when it is to own the table
/// ([`crate::Ownership::Owned`]): a table that this socket does not own is then reported damaged,
/// so that apply rebuilds it owned.
pub fn observe(
    socket: &mut Socket,
    netns: &Netns,
    t: &TableId,
    owner: Option<u32>,
) -> Result<Observed, Error> {
    Ok(observe_seen(socket, netns, t, owner)?.0)
}

/// What one read of the table saw besides the observation: the table's handle and flags, and the
/// LAN-side addresses it was compared against (which an intact table holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub table: Option<(u64, u32)>,
    pub lan_side: LanSide,
    /// Whether the table's maps have timeouts ([`Observed::can_expire`]).
    pub can_expire: bool,
}

/// [`observe`], with what the read saw of the table ([`Seen`]).
pub(crate) fn observe_seen(
    socket: &mut Socket,
    netns: &Netns,
    t: &TableId,
    owner: Option<u32>,
) -> Result<(Observed, Seen), Error> {
    let interfaces = link::interfaces(netns)?;
    let (mut observed, seen) = observe_table(socket, &interfaces, t, owner)?;
    let blocking = coexistence::blocking_forward_chains(socket, t)?;
    observed.environment = environment(netns, &interfaces, blocking);
    Ok((observed, seen))
}

/// The environment of an observation: `interfaces` as read, the forwarding sysctls read now, and
/// `blocking_forward_chains`.
pub(crate) fn environment(
    netns: &Netns,
    interfaces: &[Interface],
    blocking_forward_chains: Vec<String>,
) -> Environment {
    Environment {
        interfaces: Some(interfaces.iter().map(|i| i.name.clone()).collect()),
        ipv4_forwarding: read_flag(netns, "net.ipv4.ip_forward"),
        ipv6_forwarding: read_flag(netns, "net.ipv6.conf.all.forwarding"),
        blocking_forward_chains,
        // The inet table holds both families; netlink needs no IPv6 tool.
        ipv6_unavailable: None,
    }
}

/// A 0/1 sysctl; `None` when it cannot be read (e.g. IPv6 disabled), which is never a warning.
fn read_flag(netns: &Netns, key: &str) -> Option<bool> {
    sysctl::read(netns, key).ok().map(|v| v.trim() != "0")
}

fn observe_table(
    socket: &mut Socket,
    interfaces: &[Interface],
    t: &TableId,
    owner: Option<u32>,
) -> Result<(Observed, Seen), Error> {
    for _ in 0..crate::RETRIES {
        match read_once(socket, interfaces, t, owner) {
            Ok(Some(observed)) => return Ok(observed),
            // Another program moved the generation, or deleted a chain or set between listing it
            // and dumping it: the picture is not consistent, read it again.
            Ok(None) | Err(Error::Netlink(portmap_netlink::Error::NotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unstable {
        attempts: crate::RETRIES,
    })
}

/// One consistent read of the table, or `None` when the generation moved while reading.
fn read_once(
    socket: &mut Socket,
    interfaces: &[Interface],
    t: &TableId,
    owner: Option<u32>,
) -> Result<Option<(Observed, Seen)>, Error> {
    let generation = socket.generation()?;
    let Some(table) = socket.table(t.family, &t.name)? else {
        return Ok((socket.generation()? == generation).then(|| {
            let seen = Seen {
                table: None,
                lan_side: LanSide::default(),
                can_expire: true,
            };
            (Observed::missing("nft", &t.display(), Some(generation)), seen)
        }));
    };
    if !is_ours(&table) {
        if socket.generation()? != generation {
            return Ok(None);
        }
        return Err(Error::Foreign { table: t.display() });
    }
    let owned_by_us = owner.is_some() && table.owner == owner && table.flags & layout::TABLE_F_OWNER != 0;
    let chains = socket.chains(t.family, &t.name)?;
    let rules = socket.rules(t.family, &t.name)?;
    let sets: Vec<Set> = socket
        .sets(t.family, &t.name)?
        .into_iter()
        .filter(|s| s.flags & portmap_netlink::set_flags::ANONYMOUS == 0)
        .collect();
    let mut elements = BTreeMap::new();
    for set in &sets {
        elements.insert(set.name.clone(), socket.elements(t.family, &t.name, &set.name)?);
    }
    let objects = socket.objects(t.family, &t.name)?;
    if socket.generation()? != generation {
        return Ok(None);
    }
    let contents = Contents {
        table_flags: table.flags,
        chains,
        rules,
        sets,
        objects,
        elements,
        read_at_ms: Some(layout::now_ms()),
    };
    // The LAN-side addresses the table should hold, for the LAN interfaces it names.
    let lan_interfaces: Vec<String> = contents
        .elements
        .get(layout::LAN_SET)
        .map(|e| e.iter().map(layout::ifname_of).collect())
        .unwrap_or_default();
    let lan_side = LanSide::from_interfaces(
        interfaces,
        &Settings {
            lan_interfaces,
            ..Settings::default()
        },
    );
    let mut observed = analyse(t, &contents, &lan_side, Some(generation));
    if owner.is_some() && !owned_by_us {
        damaged(
            &mut observed,
            if table.flags & layout::TABLE_F_OWNER != 0 {
                "the table is owned by another process (flag owner)"
            } else if table.flags & layout::TABLE_F_PERSIST != 0 {
                "the table has no owner (its owner's socket closed): it is rebuilt owned by this process"
            } else {
                "the table has no owner: it is rebuilt owned by this process (flag owner), so that no other program can change it"
            },
        );
    }
    let seen = Seen {
        table: table.handle.map(|h| (h, table.flags)),
        lan_side,
        can_expire: observed.can_expire,
    };
    Ok(Some((observed, seen)))
}

/// Add a finding to what `observed` says is wrong with the table's structure.
fn damaged(observed: &mut Observed, reason: &str) {
    match &mut observed.state {
        TableState::Damaged { reasons } => reasons.push(reason.to_owned()),
        state => {
            *state = TableState::Damaged {
                reasons: vec![reason.to_owned()],
            };
        }
    }
}

/// Whether a table carries portmap's marker (the comment [`layout::TABLE_COMMENT`]).
pub fn is_ours(table: &portmap_netlink::Table) -> bool {
    table
        .userdata
        .as_deref()
        .and_then(udata::parse_comment)
        .as_deref()
        == Some(layout::TABLE_COMMENT)
}

/// Turn a snapshot of the table into mappings, settings and structure findings. Pure.
pub fn analyse(t: &TableId, snap: &Contents, env: &LanSide, generation: Option<u32>) -> Observed {
    let mut reasons: Vec<String> = Vec::new();
    let elements = |name: &str| snap.elements.get(name).map_or(&[][..], Vec::as_slice);
    // Indexes, so a table with thousands of allow-lists is read in linear time.
    let sets_by_name: HashMap<&str, &Set> = snap.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut rules_by_chain: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for rule in &snap.rules {
        rules_by_chain.entry(rule.chain.as_str()).or_default().push(rule);
    }

    if snap.table_flags & layout::TABLE_F_DORMANT != 0 {
        reasons.push("the table is dormant (flags dormant): every forward is switched off".to_owned());
    }
    if snap.table_flags & !layout::TABLE_F_KNOWN != 0 {
        reasons.push(format!(
            "the table has flags portmap does not set (0x{:x})",
            snap.table_flags & !layout::TABLE_F_KNOWN
        ));
    }

    // Static sets and maps. Their timeouts follow the DNAT map's: a table is built with timeouts
    // on every per-port map or on none (see `layout::static_sets`).
    let can_expire = sets_by_name
        .get(layout::DNAT4)
        .is_some_and(|s| s.flags & portmap_netlink::set_flags::TIMEOUT != 0);
    for want in layout::static_sets(t, can_expire) {
        match sets_by_name.get(want.name.as_str()) {
            None => reasons.push(format!("{} {} is missing", kind(&want), want.name)),
            Some(found) if !same_set_type(found, &want) => {
                reasons.push(format!(
                    "{} {} has the wrong type, flags or comment",
                    kind(&want),
                    want.name
                ));
            }
            Some(_) => {}
        }
    }

    // The addresses hairpin must leave alone follow the router's LAN interfaces.
    for family in IpFamily::ALL {
        let name = family.lan_side_set();
        if !sets_by_name.contains_key(name) {
            continue;
        }
        let want = env.prefixes(family);
        match element::prefixes_of(elements(name), family) {
            Some(found) if found == want => {}
            Some(found) => reasons.push(format!(
                "set {name} holds {} but the router's loopback and LAN-side addresses are now {}; it is refreshed",
                list(&found),
                list(want)
            )),
            None => reasons.push(format!("set {name} holds malformed intervals")),
        }
    }

    // Settings read back from the interface sets and the structure.
    let interfaces = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = elements(name).iter().map(layout::ifname_of).collect();
        v.sort();
        v
    };
    let shape = find_shape(t, snap, &mut reasons);
    let settings = Settings {
        wan_interfaces: interfaces(layout::WAN_SET),
        lan_interfaces: interfaces(layout::LAN_SET),
        masquerade: shape.masquerade,
        hairpin: shape.hairpin,
    };

    // Everything else the table holds belongs to one mapping (by name) or is drift.
    let mut found: BTreeMap<String, Found<'_>> = BTreeMap::new();
    let static_chains: BTreeSet<&str> = [
        layout::PREROUTING,
        layout::FORWARD,
        layout::OUTPUT,
        layout::POSTROUTING,
    ]
    .into();
    for chain in &snap.chains {
        if static_chains.contains(chain.name.as_str()) {
            continue;
        }
        match chain.userdata.as_deref().and_then(udata::parse_comment) {
            Some(name)
                if chain.base.is_none()
                    && portmap_core::is_mapping_name(&name)
                    && chain.name == layout::allow_chain(&name) =>
            {
                let entry = found.entry(name).or_default();
                entry.chain = true;
                entry.rules = rules_by_chain
                    .get(chain.name.as_str())
                    .cloned()
                    .unwrap_or_default();
            }
            Some(name)
                if chain.base.is_none()
                    && portmap_core::is_mapping_name(&name)
                    && chain.name == layout::log_chain(&name) =>
            {
                let entry = found.entry(name).or_default();
                entry.log_chain = true;
                entry.log_rules = rules_by_chain
                    .get(chain.name.as_str())
                    .cloned()
                    .unwrap_or_default();
            }
            _ => reasons.push(format!("chain {} was not written by portmap", chain.name)),
        }
    }
    let static_set_names: BTreeSet<String> = layout::static_sets(t, can_expire)
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut source_sets: BTreeMap<&str, [Option<&Set>; 2]> = BTreeMap::new();
    for set in &snap.sets {
        if static_set_names.contains(&set.name) {
            continue;
        }
        if let Some((list, family)) = layout::parse_source_set(&set.name) {
            source_sets.entry(list).or_default()[usize::from(family == IpFamily::V6)] = Some(set);
            continue;
        }
        match set
            .name
            .strip_prefix("allow_")
            .and_then(|n| n.strip_suffix("_src"))
            .filter(|n| portmap_core::is_mapping_name(n))
        {
            Some(name) => found.entry(name.to_owned()).or_default().set = Some(set),
            None => reasons.push(format!("set {} was not written by portmap", set.name)),
        }
    }

    // Named source lists: both sets of each, of the type portmap writes, holding prefixes. A list
    // that is not so is structure damage (the table is rebuilt): a list is no one mapping's.
    let mut sources: BTreeMap<String, SourceList> = BTreeMap::new();
    for (list, sets) in &source_sets {
        let mut found = SourceList::default();
        let mut ok = true;
        for family in IpFamily::ALL {
            let name = layout::source_set(list, family);
            match sets[usize::from(family == IpFamily::V6)] {
                None => {
                    reasons.push(format!("set {name} of source list {list} is missing"));
                    ok = false;
                }
                Some(set) if !same_set_type(set, &layout::source_set_object(t, list, family, 0)) => {
                    reasons.push(format!("set {name} has the wrong type, flags or comment"));
                    ok = false;
                }
                Some(_) => {
                    if let Some(p) = element::prefixes_of(elements(&name), family) {
                        match family {
                            IpFamily::V4 => found.v4 = p,
                            IpFamily::V6 => found.v6 = p,
                        }
                    } else {
                        reasons.push(format!("set {name} holds malformed intervals"));
                        ok = false;
                    }
                }
            }
        }
        if ok {
            sources.insert((*list).to_owned(), found);
        }
    }

    // Forwards from the DNAT maps, by the name in each element's comment.
    for (family, map) in IpFamily::ALL
        .into_iter()
        .flat_map(|f| [(f, f.dnat_map()), (f, layout::addressed(f.dnat_map()))])
    {
        let addressed = map != family.dnat_map();
        for e in elements(map) {
            match element::parse_dnat_element(e, family).filter(|(f, _)| f.listen.is_some() == addressed) {
                Some((forward, Some(comment))) => {
                    let (name, description) = parse_mapping_comment(&comment);
                    if !portmap_core::is_mapping_name(&name) {
                        reasons.push(format!(
                            "map {map} holds {} with a comment that names no portmap mapping",
                            Key::of(&forward).label()
                        ));
                        continue;
                    }
                    let m = found.entry(name).or_default();
                    if m.forwards.is_empty() {
                        m.description = description;
                    } else if m.description != description {
                        m.descriptions_differ = true;
                    }
                    m.forwards.push(forward);
                    m.families.insert(family);
                    m.expirations.push(e.expiration.or(e.timeout));
                }
                Some((forward, None)) => reasons.push(format!(
                    "map {map} holds {} without a portmap comment",
                    Key::of(&forward).label()
                )),
                None => reasons.push(format!("map {map} holds an element portmap cannot read")),
            }
        }
    }

    // Counters and limits, by the mapping their name says.
    for object in &snap.objects {
        let owner = object_owner(&object.name).filter(|(kind, _)| match kind {
            ObjKind::Conn | ObjKind::Traffic => matches!(object.kind, ObjectKind::Counter { .. }),
            ObjKind::Limit => matches!(object.kind, ObjectKind::Limit { .. }),
        });
        let Some((kind, name)) = owner else {
            reasons.push(format!(
                "{} {} was not written by portmap",
                object_kind_name(&object.kind),
                object.name
            ));
            continue;
        };
        let entry = found.entry(name.to_owned()).or_default();
        // A counter's only comment is the moment its mapping expires.
        let expiry = object
            .userdata
            .as_deref()
            .and_then(udata::parse_comment)
            .and_then(|c| layout::parse_expires_comment(&c));
        match (kind, expiry) {
            (ObjKind::Conn | ObjKind::Traffic, Some(t)) => entry.counter_expiries.push(Some(t)),
            (ObjKind::Conn | ObjKind::Traffic, None) if object.userdata.is_none() => {
                entry.counter_expiries.push(None);
            }
            _ => entry.object_comments |= object.userdata.is_some(),
        }
        match (kind, &object.kind) {
            (ObjKind::Conn, ObjectKind::Counter { packets, .. }) => entry.conn = Some(*packets),
            (ObjKind::Traffic, ObjectKind::Counter { packets, bytes }) => {
                entry.traffic = Some((*packets, *bytes));
            }
            (ObjKind::Limit, kind) => entry.limit = Some(kind.clone()),
            _ => {}
        }
    }
    // Elements of the object maps, by the object they select.
    for family in IpFamily::ALL {
        for (map, kind) in [
            (family.conn_map(), ObjKind::Conn),
            (family.traffic_map(), ObjKind::Traffic),
            (family.limit_map(), ObjKind::Limit),
        ]
        .into_iter()
        .flat_map(|(m, k)| [(m, k), (layout::addressed(m), k)])
        {
            for e in elements(map) {
                let owner = element::parse_object_element(e)
                    .filter(|(key, _)| key_fits(*key, family, map))
                    .and_then(|(key, object)| object_owner(object).map(|(k, name)| (key, k, name)));
                match owner {
                    Some((key, k, name)) => {
                        let entry = found.entry(name.to_owned()).or_default();
                        entry.expirations.push(e.expiration.or(e.timeout));
                        if k == kind {
                            entry.selected.insert((kind, family, key));
                        } else {
                            entry.misdirected.push(format!("{map} {}", key.words()));
                        }
                    }
                    None => reasons.push(format!("map {map} holds an element portmap did not write")),
                }
            }
        }
        for map in [family.log_map(), layout::addressed(family.log_map())] {
            for e in elements(map) {
                let owner = element::parse_guard_element(e)
                    .filter(|(key, _)| key_fits(*key, family, map))
                    .and_then(|(key, chain)| {
                        let name = chain.strip_prefix("log_")?;
                        let m = found.get_mut(name).filter(|m| m.log_chain)?;
                        Some((m, key))
                    });
                match owner {
                    Some((m, key)) if e.userdata.is_none() => {
                        m.log_keys.insert((family, key));
                        m.expirations.push(e.expiration.or(e.timeout));
                    }
                    _ => reasons.push(format!("map {map} holds an element portmap did not write")),
                }
            }
        }
    }

    // Guard elements, by the allow-list chain they jump to.
    for family in IpFamily::ALL {
        for map in [family.guard_map(), layout::addressed(family.guard_map())] {
            for e in elements(map) {
                let owner = element::parse_guard_element(e)
                    .filter(|(key, _)| key_fits(*key, family, map))
                    .and_then(|(key, chain)| {
                        let name = chain.strip_prefix("allow_")?;
                        let m = found.get_mut(name).filter(|m| m.chain)?;
                        let comment = e.userdata.as_deref().and_then(udata::parse_comment);
                        Some((m, key, comment.as_deref() == Some(name)))
                    });
                match owner {
                    Some((m, key, named)) => {
                        m.guards.insert((family, key));
                        m.expirations.push(e.expiration.or(e.timeout));
                        m.guard_comments_differ |= !named;
                    }
                    None => reasons.push(format!("map {map} holds an element portmap did not write")),
                }
            }
        }
    }

    let mappings: Vec<ObservedMapping> = found
        .into_iter()
        .map(|(name, f)| f.into_mapping(t, name, &sources, snap.read_at_ms, |set| elements(set)))
        .collect();
    // Conntrack cleanups an interrupted apply recorded and did not finish.
    let mut pending_flows = Vec::new();
    for family in IpFamily::ALL {
        let set = family.stale_set();
        for e in elements(set) {
            match element::parse_stale_element(e, family) {
                Some((forward, mapping, narrowed)) => {
                    let unless_from = narrowed.then(|| {
                        mappings
                            .iter()
                            .find(|m| m.name == mapping)
                            .map(|m| m.allow_from.clone())
                            .unwrap_or_default()
                    });
                    pending_flows.push(StaleFlows {
                        mapping,
                        forward,
                        unless_from,
                    });
                }
                None => reasons.push(format!("set {set} holds an element portmap did not write")),
            }
        }
    }

    reasons.sort();
    reasons.dedup();
    Observed {
        backend: "nft".to_owned(),
        table: t.display(),
        generation,
        place: None,
        state: if reasons.is_empty() {
            TableState::Intact
        } else {
            TableState::Damaged { reasons }
        },
        settings,
        mappings,
        sources: Some(sources),
        environment: Environment::default(),
        pending_flows,
        observed_at: snap
            .read_at_ms
            .map(|ms| portmap_core::UtcTime::from_unix_seconds(i64::try_from(ms / 1000).unwrap_or(i64::MAX))),
        can_expire,
    }
}

/// When a mapping's elements expire, from the time each has left (`None`: it has no timeout)
/// and when they were read: `Ok(None)` when none expires, `Err` with the damage when some
/// expire and others do not, or they expire further apart than the tolerance.
fn expiry_of(
    expirations: &[Option<u64>],
    read_at_ms: Option<u64>,
) -> Result<Option<portmap_core::UtcTime>, String> {
    let timed: Vec<u64> = expirations.iter().flatten().copied().collect();
    if timed.is_empty() {
        return Ok(None);
    }
    if timed.len() != expirations.len() {
        return Err(format!(
            "{} of its {} elements expire and the others do not",
            timed.len(),
            expirations.len()
        ));
    }
    let (lo, hi) = (
        timed.iter().min().copied().unwrap_or(0),
        timed.iter().max().copied().unwrap_or(0),
    );
    let tolerance = u64::try_from(portmap_core::EXPIRES_TOLERANCE_SECONDS).unwrap_or(0) * 1000;
    if hi - lo > tolerance {
        return Err(format!(
            "its elements expire at different times (from {}s to {}s from now)",
            lo / 1000,
            hi / 1000
        ));
    }
    // The moment read back, to the nearest second (the configuration's is whole).
    Ok(read_at_ms.map(|at| {
        let ms = at.saturating_add(hi);
        portmap_core::UtcTime::from_unix_seconds(i64::try_from((ms + 500) / 1000).unwrap_or(i64::MAX))
    }))
}

/// Everything the table holds under one mapping's name: its DNAT elements (by comment), its
/// allow-list chain, that chain's rules, its allow-list set and the guard elements jumping to the
/// chain.
#[derive(Default)]
struct Found<'a> {
    forwards: Vec<Forward>,
    description: Option<String>,
    descriptions_differ: bool,
    families: BTreeSet<IpFamily>,
    chain: bool,
    rules: Vec<&'a Rule>,
    set: Option<&'a Set>,
    guards: BTreeSet<(IpFamily, Key)>,
    guard_comments_differ: bool,
    /// Packets of the connection counter, when there is one.
    conn: Option<u64>,
    /// Packets and bytes of the traffic counter, when there is one.
    traffic: Option<(u64, u64)>,
    /// The limit object, when there is one.
    limit: Option<ObjectKind>,
    /// Whether any of its objects carries userdata (a comment) portmap does not write.
    object_comments: bool,
    /// Object-map elements selecting its objects from the right map: (which, family, key).
    selected: BTreeSet<(ObjKind, IpFamily, Key)>,
    /// Object-map elements selecting one of its objects from another map (`traffic4 tcp 80`).
    misdirected: Vec<String>,
    log_chain: bool,
    log_rules: Vec<&'a Rule>,
    log_keys: BTreeSet<(IpFamily, Key)>,
    /// The time left (milliseconds) of each of its elements in the per-port maps; `None` for
    /// an element without a timeout.
    expirations: Vec<Option<u64>>,
    /// The expiry each of its counters records (`None`: one that records none).
    counter_expiries: Vec<Option<portmap_core::UtcTime>>,
}

/// Which of a mapping's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ObjKind {
    Conn,
    Traffic,
    Limit,
}

/// The mapping an object belongs to and which of its objects it is, by name: `conn_<name>`,
/// `traffic_<name>`, `limit_<name>`.
fn object_owner(object: &str) -> Option<(ObjKind, &str)> {
    let (kind, name) = if let Some(n) = object.strip_prefix("conn_") {
        (ObjKind::Conn, n)
    } else if let Some(n) = object.strip_prefix("traffic_") {
        (ObjKind::Traffic, n)
    } else {
        (ObjKind::Limit, object.strip_prefix("limit_")?)
    };
    portmap_core::is_mapping_name(name).then_some((kind, name))
}

fn object_kind_name(kind: &ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Counter { .. } => "counter",
        ObjectKind::Limit { .. } => "limit",
        ObjectKind::Other(_) => "object",
    }
}

/// Whether `key` belongs in `map` of `family`: an address of that family in an addressed twin,
/// none in the plain map.
fn key_fits(key: Key, family: IpFamily, map: &str) -> bool {
    match key.listen {
        None => layout::addressed_base(map).is_none(),
        Some(a) => IpFamily::of(a) == family && layout::addressed_base(map).is_some(),
    }
}

/// How many ports a damage finding lists by name before it counts the rest.
const LISTED_PORTS: usize = 4;

impl Found<'_> {
    /// The mapping as the kernel enforces it, with every way its objects differ from the complete
    /// set portmap writes for it.
    fn into_mapping<'e>(
        mut self,
        t: &TableId,
        name: String,
        sources: &BTreeMap<String, SourceList>,
        read_at_ms: Option<u64>,
        elements: impl Fn(&str) -> &'e [portmap_netlink::Element],
    ) -> ObservedMapping {
        self.forwards.sort_unstable();
        let mut damage = Vec::new();
        let mut expires = expiry_of(&self.expirations, read_at_ms).unwrap_or_else(|problem| {
            damage.push(problem);
            None
        });
        // What the counters record: one moment, or none, for both.
        let recorded = match self.counter_expiries.as_slice() {
            [] => None,
            [first, rest @ ..] if rest.iter().all(|t| t == first) => *first,
            _ => {
                damage.push("its counters record different expiries".to_owned());
                None
            }
        };
        // Its elements all gone at the moment its counters record: the kernel removed them (an
        // expired mapping, which is what the kernel keeps of it), not a hand.
        let tolerance = u64::try_from(portmap_core::EXPIRES_TOLERANCE_SECONDS).unwrap_or(0) * 1000;
        let expired = self.forwards.is_empty()
            && self.expirations.is_empty()
            && recorded.zip(read_at_ms).is_some_and(|(t, at)| {
                u64::try_from(t.unix_seconds()).unwrap_or(0).saturating_mul(1000)
                    <= at.saturating_add(tolerance)
            });
        if expired {
            expires = recorded;
        } else if !self.forwards.is_empty()
            && !self.counter_expiries.is_empty()
            && !portmap_core::same_expiry(recorded, expires)
            && damage.is_empty()
        {
            damage.push(format!(
                "its counters record expiry {} but its elements {}",
                portmap_core::expires_field_text(recorded),
                expires.map_or_else(|| "never expire".to_owned(), |t| format!("expire at {t}"))
            ));
        }
        let set_family = self.set.map(|s| {
            if s.key_type == portmap_netlink::datatype::IPV6_ADDR {
                IpFamily::V6
            } else {
                IpFamily::V4
            }
        });
        let family = self
            .families
            .first()
            .copied()
            .or(set_family)
            .or_else(|| self.guards.first().map(|(f, _)| *f))
            .unwrap_or(IpFamily::V4);
        if self.families.len() > 1 {
            damage.push(format!(
                "its forwards are split between {} and {}",
                layout::DNAT4,
                layout::DNAT6
            ));
        }
        if self.descriptions_differ {
            damage.push("its DNAT elements disagree on the description".to_owned());
        }
        if self.guard_comments_differ {
            damage.push("a guard element jumping to its allow-list names another mapping".to_owned());
        }
        if self.forwards.is_empty() && !expired {
            if self.chain || self.set.is_some() || !self.guards.is_empty() {
                damage.push("it forwards nothing: only left-over allow-list objects remain".to_owned());
            } else {
                damage.push(
                    "it forwards nothing: only left-over counters, limits or log objects remain (its forwards \
                     expired, or were deleted by hand)"
                        .to_owned(),
                );
            }
        }
        let chain = layout::allow_chain(&name);
        let set_name = layout::allow_set(&name);
        let mut allow_from = Vec::new();
        let mut allow_sources: Vec<String> = Vec::new();
        if self.chain {
            let want = layout::allow_rule(t, &name, family, 0);
            // Before the drop rule, one return rule per named list the mapping uses.
            let (lists, last) = match self.rules.split_last() {
                Some((last, lists)) => (lists, Some(last)),
                None => (&[][..], None),
            };
            let named: Option<Vec<String>> = lists
                .iter()
                .map(|rule| {
                    sources
                        .keys()
                        .find(|list| same_rule(rule, &layout::source_rule(t, &name, list, family)))
                        .cloned()
                })
                .collect();
            match (self.rules.as_slice(), named) {
                ([], _) => damage.push(format!(
                    "chain {chain} is empty: the ports it guards are open to every source"
                )),
                (_, Some(named)) if last.is_some_and(|rule| same_rule(rule, &want)) => {
                    allow_sources = named;
                    allow_sources.sort_unstable();
                    if allow_sources.windows(2).any(|w| w[0] == w[1]) {
                        damage.push(format!("chain {chain} refers to a source list twice"));
                    }
                }
                (rules, _) => damage.push(format!(
                    "chain {chain} holds {} the allow-list rule portmap writes ({} saddr != @{set_name} drop)",
                    if rules.len() == 1 {
                        "a rule other than".to_owned()
                    } else {
                        format!("{} rules instead of", rules.len())
                    },
                    family.nft_header()
                )),
            }
            match self.set {
                None => damage.push(format!("set {set_name} is missing")),
                Some(set) => {
                    if !same_set_type(set, &layout::allow_set_object(t, &name, family, 0)) {
                        damage.push(format!(
                            "set {set_name} has the wrong type, flags or comment for {} sources",
                            family.name()
                        ));
                    }
                    match element::prefixes_of(elements(&set_name), family) {
                        None => damage.push(format!("set {set_name} holds malformed intervals")),
                        Some(p) if p.is_empty() && allow_sources.is_empty() => {
                            damage.push(format!("set {set_name} is empty: every source is refused"));
                        }
                        Some(p) => allow_from = p,
                    }
                }
            }
            let wanted: BTreeSet<(IpFamily, Key)> = self
                .forwards
                .iter()
                .map(|f| (IpFamily::of(f.to), Key::of(f)))
                .collect();
            let open: Vec<String> = wanted
                .difference(&self.guards)
                .map(|(_, key)| key.label())
                .collect();
            if !open.is_empty() {
                damage.push(format!(
                    "{} {} not guarded by the allow-list: open to every source",
                    ports_phrase(&open),
                    if open.len() == 1 { "is" } else { "are" }
                ));
            }
            let extra: Vec<String> = self
                .guards
                .difference(&wanted)
                .map(|(f, key)| format!("{} {}", key.map(f.guard_map()), key.label()))
                .collect();
            if !extra.is_empty() {
                damage.push(format!(
                    "{} {} to the allow-list without a forward",
                    ports_phrase(&extra),
                    if extra.len() == 1 { "leads" } else { "lead" }
                ));
            }
        } else if self.set.is_some() {
            damage.push(format!(
                "set {set_name} is left over without its chain {chain} (it restricts nothing)"
            ));
        }
        let (counters, limit, log) = self.extras(t, &name, &mut damage);
        // An expired mapping's objects are named too, so that deleting it (or building it again
        // with a later expiry) removes exactly what the kernel kept.
        let objects = if damage.is_empty() && !expired {
            Vec::new()
        } else {
            let mut objects: Vec<String> = self
                .guards
                .iter()
                .map(|(f, key)| format!("{} {}", key.map(f.guard_map()), key.words()))
                .collect();
            for (kind, f, key) in &self.selected {
                let map = match kind {
                    ObjKind::Conn => f.conn_map(),
                    ObjKind::Traffic => f.traffic_map(),
                    ObjKind::Limit => f.limit_map(),
                };
                objects.push(format!("{} {}", key.map(map), key.words()));
            }
            objects.extend(self.misdirected.iter().cloned());
            for (f, key) in &self.log_keys {
                objects.push(format!("{} {}", key.map(f.log_map()), key.words()));
            }
            if self.chain {
                objects.push(format!("chain {chain}"));
            }
            if self.log_chain {
                objects.push(format!("chain {}", layout::log_chain(&name)));
            }
            if self.set.is_some() {
                objects.push(format!("set {set_name}"));
            }
            // Counters and a limit that are what portmap writes are kept by a repair (`keep …`):
            // the counters go on counting, and the limit's bucket stays as it is.
            let keep = if self.object_comments { "" } else { "keep " };
            if self.conn.is_some() {
                objects.push(format!("{keep}counter {}", layout::conn_counter(&name)));
            }
            if self.traffic.is_some() {
                objects.push(format!("{keep}counter {}", layout::traffic_counter(&name)));
            }
            if let Some(kind) = &self.limit {
                let keep = if layout::limit_of(kind).is_some() {
                    keep
                } else {
                    ""
                };
                objects.push(format!("{keep}limit {}", layout::limit_object(&name)));
            }
            objects
        };
        // What the kernel admits: its own prefixes and the members of the lists it names.
        let allow_inline = if allow_sources.is_empty() {
            Vec::new()
        } else {
            let own = std::mem::take(&mut allow_from);
            allow_from = portmap_core::canonical_prefixes(
                own.iter()
                    .copied()
                    .chain(
                        allow_sources
                            .iter()
                            .filter_map(|list| sources.get(list))
                            .flat_map(|l| l.of_family(family == IpFamily::V6).iter().copied()),
                    )
                    .collect(),
            );
            own
        };
        ObservedMapping {
            name,
            description: self.description,
            forwards: self.forwards,
            allow_from,
            allow_sources,
            allow_inline,
            damage,
            objects,
            log,
            limit,
            expires,
            counters,
            active_flows: None,
        }
    }

    /// The mapping's counters, limit and log as the kernel holds them, with what is wrong with
    /// them added to `damage`.
    fn extras(
        &self,
        t: &TableId,
        name: &str,
        damage: &mut Vec<String>,
    ) -> (
        Option<portmap_core::Counters>,
        Option<portmap_core::Limit>,
        Option<u16>,
    ) {
        let wanted: BTreeSet<(IpFamily, Key)> = self
            .forwards
            .iter()
            .map(|f| (IpFamily::of(f.to), Key::of(f)))
            .collect();
        let keys = |kind: ObjKind| -> BTreeSet<(IpFamily, Key)> {
            self.selected
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, f, key)| (*f, *key))
                .collect()
        };
        let label = |set: &BTreeSet<(IpFamily, Key)>| -> Vec<String> {
            set.iter().map(|(_, key)| key.label()).collect()
        };
        // Keys a map should hold for the mapping but does not, and keys it holds without a forward.
        let compare = |damage: &mut Vec<String>,
                       found: &BTreeSet<(IpFamily, Key)>,
                       missing: &dyn Fn(&str, bool) -> String,
                       extra: &dyn Fn(&str, bool) -> String| {
            let lost: BTreeSet<_> = wanted.difference(found).copied().collect();
            let more: BTreeSet<_> = found.difference(&wanted).copied().collect();
            if !lost.is_empty() && !self.forwards.is_empty() {
                let l = label(&lost);
                damage.push(missing(&ports_phrase(&l), l.len() == 1));
            }
            if !more.is_empty() {
                let l = label(&more);
                damage.push(extra(&ports_phrase(&l), l.len() == 1));
            }
        };
        if !self.misdirected.is_empty() {
            damage.push(format!(
                "{} select{} its objects from a map of another kind",
                ports_phrase(&self.misdirected),
                if self.misdirected.len() == 1 { "s" } else { "" }
            ));
        }
        if self.object_comments {
            damage
                .push("one of its counters or its limit carries a comment portmap does not write".to_owned());
        }
        if !self.forwards.is_empty() {
            if self.conn.is_none() {
                damage.push(format!(
                    "counter {} is missing: its connections are not counted",
                    layout::conn_counter(name)
                ));
            }
            if self.traffic.is_none() {
                damage.push(format!(
                    "counter {} is missing: its traffic is not counted",
                    layout::traffic_counter(name)
                ));
            }
        }
        if self.conn.is_some() {
            compare(
                damage,
                &keys(ObjKind::Conn),
                &|p, _| format!("connections to {p} are not counted"),
                &|p, _| format!("connections to {p} are counted for it without a forward"),
            );
        }
        if self.traffic.is_some() {
            compare(
                damage,
                &keys(ObjKind::Traffic),
                &|p, _| format!("the traffic of {p} is not counted"),
                &|p, _| format!("the traffic of {p} is counted for it without a forward"),
            );
        }
        let counters = match (self.conn, self.traffic) {
            (Some(connections), Some((packets, bytes))) => Some(portmap_core::Counters {
                connections,
                packets,
                bytes,
            }),
            _ => None,
        };
        let mut limit = None;
        if let Some(kind) = &self.limit {
            match layout::limit_of(kind) {
                None => damage.push(format!(
                    "limit {} is not one portmap writes (a packet rate that drops what is over it): new connections are not capped as configured",
                    layout::limit_object(name)
                )),
                Some(l) => limit = Some(l),
            }
            compare(
                damage,
                &keys(ObjKind::Limit),
                &|p, one| format!("{p} {} not capped by its limit", if one { "is" } else { "are" }),
                &|p, one| {
                    format!(
                        "{p} {} to its limit without a forward",
                        if one { "leads" } else { "lead" }
                    )
                },
            );
        }
        let mut log = None;
        if self.log_chain {
            let chain = layout::log_chain(name);
            match self.log_rules.as_slice() {
                [] => damage.push(format!(
                    "chain {chain} is empty: its new connections are not logged"
                )),
                [rule] => {
                    let group = rule.exprs.iter().find_map(|e| match e {
                        Expr::Log { group, .. } => *group,
                        _ => None,
                    });
                    match group {
                        Some(g) if same_rule(rule, &layout::log_chain_object(t, name, g).1) => log = Some(g),
                        _ => damage.push(format!(
                            "chain {chain} holds a rule other than the log rule portmap writes (log prefix \"{}\" group N)",
                            layout::log_prefix(name)
                        )),
                    }
                }
                rules => damage.push(format!(
                    "chain {chain} holds {} rules instead of the log rule portmap writes",
                    rules.len()
                )),
            }
            let found = self.log_keys.clone();
            compare(
                damage,
                &found,
                &|p, _| format!("the new connections of {p} are not logged"),
                &|p, one| {
                    format!(
                        "{p} {} to its log chain without a forward",
                        if one { "leads" } else { "lead" }
                    )
                },
            );
        }
        (counters, limit, log)
    }
}

/// `tcp/80, tcp/81`, or the first few and how many more.
fn ports_phrase(ports: &[String]) -> String {
    let shown: Vec<&str> = ports.iter().take(LISTED_PORTS).map(String::as_str).collect();
    let rest = ports.len() - shown.len();
    if rest == 0 {
        shown.join(", ")
    } else {
        format!("{} and {rest} more", shown.join(", "))
    }
}

fn list(prefixes: &[IpNet]) -> String {
    let parts: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn kind(set: &Set) -> &'static str {
    if set.data_type.is_some() { "map" } else { "set" }
}

/// Whether a rule read back is the rule portmap writes: expression by expression (counter values
/// aside), and without a comment.
fn same_rule(found: &Rule, want: &Rule) -> bool {
    found.userdata == want.userdata && layout::same_exprs(&found.exprs, &want.exprs)
}

/// Whether a set read back is the set portmap writes: flags, key and data types, and comment (the
/// mapping's name on an allow-list set, none on the others).
fn same_set_type(found: &Set, want: &Set) -> bool {
    let comment = |s: &Set| {
        s.userdata
            .as_deref()
            .map(udata::parse_set_udata)
            .and_then(|u| u.comment)
    };
    comment(found) == comment(want)
        && found.flags & !portmap_netlink::set_flags::EVAL == want.flags
        && found.key_type == want.key_type
        && found.key_len == want.key_len
        && found.data_type == want.data_type
        && found.obj_type == want.obj_type
        // The kernel reports a verdict map's data length as 16 whatever was sent.
        && (want.data_type.is_none_or(|d| d == portmap_netlink::datatype::VERDICT)
            || found.data_len == want.data_len)
}

/// Which shape (masquerade, hairpin) the base chains hold; when none matches exactly, report why and
/// guess from what is there.
fn find_shape(t: &TableId, snap: &Contents, reasons: &mut Vec<String>) -> Shape {
    let base: Vec<&Chain> = snap.chains.iter().filter(|c| c.base.is_some()).collect();
    for shape in Shape::ALL {
        if shape_matches(t, snap, &base, shape) {
            return shape;
        }
    }
    // No exact match: take the shape whose rules are most alike what is there, and say what is off.
    let found_before = reasons.len();
    let guess = Shape::ALL
        .into_iter()
        .max_by_key(|&shape| {
            let wanted = layout::static_rules(t, shape);
            let matching = wanted
                .iter()
                .filter(|w| snap.rules.iter().any(|r| r.chain == w.chain && same_rule(r, w)))
                .count();
            // Prefer matches, then fewer rules the shape would not have.
            (matching, usize::MAX - wanted.len())
        })
        .unwrap_or(Shape {
            masquerade: false,
            hairpin: false,
        });
    for want in layout::static_chains(t, guess) {
        match base.iter().find(|c| c.name == want.name) {
            None => reasons.push(format!("chain {} is missing", want.name)),
            Some(found) if found.base != want.base => {
                reasons.push(format!(
                    "chain {} has the wrong hook, priority, type or policy",
                    want.name
                ));
            }
            Some(_) => {
                let found: Vec<&Rule> = snap.rules.iter().filter(|r| r.chain == want.name).collect();
                let wanted: Vec<Rule> = layout::static_rules(t, guess)
                    .into_iter()
                    .filter(|r| r.chain == want.name)
                    .collect();
                if found.len() != wanted.len() || found.iter().zip(&wanted).any(|(a, b)| !same_rule(a, b)) {
                    reasons.push(format!(
                        "chain {} does not hold the rules portmap writes",
                        want.name
                    ));
                }
            }
        }
    }
    for c in &base {
        if !layout::static_chains(t, guess).iter().any(|w| w.name == c.name) {
            reasons.push(format!("base chain {} was not written by portmap", c.name));
        }
    }
    if reasons.len() == found_before {
        reasons.push("base chains do not match any layout portmap writes".to_owned());
    }
    guess
}

fn shape_matches(t: &TableId, snap: &Contents, base: &[&Chain], shape: Shape) -> bool {
    let want_chains = layout::static_chains(t, shape);
    if want_chains.len() != base.len() {
        return false;
    }
    let want_rules = layout::static_rules(t, shape);
    want_chains.iter().all(|w| {
        base.iter().any(|c| c.name == w.name && c.base == w.base) && {
            let found: Vec<&Rule> = snap.rules.iter().filter(|r| r.chain == w.name).collect();
            let wanted: Vec<&Rule> = want_rules.iter().filter(|r| r.chain == w.name).collect();
            found.len() == wanted.len() && found.iter().zip(&wanted).all(|(a, b)| same_rule(a, b))
        }
    })
}

/// The keys of some forwards, in their order: what a guard map holds for them.
pub fn forward_keys(forwards: &[Forward]) -> Vec<Key> {
    forwards.iter().map(Key::of).collect()
}
