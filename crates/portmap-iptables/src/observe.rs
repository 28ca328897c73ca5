//! `iptables-save` of portmap's chains → `Observed`, total: every rule in portmap's chains is
//! structure (the static chains and the trees' jumps), part of exactly one mapping's complete set
//! of rules (found by the name in its comment), a record of a pending cleanup, or drift. A mapping
//! whose rules are incomplete, altered or unreachable carries `damage` saying what the kernel
//! enforces instead; anything else that differs makes the structure `Damaged`.
//!
//! Rules that work but sit elsewhere than portmap puts them (another chain of the tree, another
//! order) make the structure `Damaged` too, so that an intact observation means exactly the layout
//! portmap builds; apply rewrites every chain that differs from it.
//!
//! Pure: it reads save output given to it and decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use portmap_core::{Forward, Observed, ObservedMapping, Settings, StaleFlows, TableState, Transport};

use crate::layout::{self, Family, FilterKind, LanSide, MappingRules, Prefix, Run, Table};
use crate::save::Dump;
use crate::tree::{Kind, Node};

/// Why observe refuses to read: a table holds chains of portmap's prefix but no marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// The family.
    pub family: Family,
    /// The table.
    pub table: Table,
}

/// portmap's part of the four tables, checked for the marker.
pub fn owned(
    p: &Prefix,
    dumps: &[(Family, &Dump)],
) -> Result<BTreeMap<(Family, Table), layout::Chains>, Foreign> {
    let mut out = BTreeMap::new();
    let marker = layout::mark_rules(&Settings::default()).remove(0);
    for (family, dump) in dumps {
        for table in Table::ALL {
            let ours = dump.table(table).ours(p);
            if !ours.chains.is_empty() {
                let marked = ours
                    .chains
                    .get(&p.chain(layout::MARK))
                    .and_then(|rules| rules.first())
                    .is_some_and(|first| *first == marker);
                if !marked {
                    return Err(Foreign {
                        family: *family,
                        table,
                    });
                }
            }
            out.insert((*family, table), ours);
        }
    }
    Ok(out)
}

/// The LAN interfaces recorded in the marker chains, to know which addresses the hairpin chains
/// should list.
pub fn recorded_settings(p: &Prefix, owned: &BTreeMap<(Family, Table), layout::Chains>) -> Option<Settings> {
    let order = [
        (Family::V4, Table::Nat),
        (Family::V4, Table::Filter),
        (Family::V6, Table::Nat),
        (Family::V6, Table::Filter),
    ];
    order.iter().find_map(|key| {
        let rules = owned.get(key)?.chains.get(&p.chain(layout::MARK))?;
        parse_settings(rules)
    })
}

/// portmap's commit serial, from the IPv4 nat `P-MARK` chain (0 when there is none).
pub fn recorded_serial(p: &Prefix, owned: &BTreeMap<(Family, Table), layout::Chains>) -> u32 {
    owned
        .get(&(Family::V4, Table::Nat))
        .and_then(|c| c.chains.get(&p.chain(layout::MARK)))
        .and_then(|rules| rules.last())
        .and_then(|rule| layout::parse_serial(rule))
        .unwrap_or(0)
}

/// Settings from a `P-MARK` chain's rules (after the marker); `None` when a rule is not one
/// portmap writes there.
fn parse_settings(rules: &[String]) -> Option<Settings> {
    let rules = match rules.split_last() {
        Some((last, rest)) if layout::parse_serial(last).is_some() => rest,
        _ => rules,
    };
    let mut s = Settings::default();
    for rule in rules.iter().skip(1) {
        if let Some(rest) = rule.strip_prefix("-i ") {
            let (iface, what) = rest.split_once(" -m comment --comment ")?;
            match what {
                "wan" => s.wan_interfaces.push(iface.to_owned()),
                "lan" => s.lan_interfaces.push(iface.to_owned()),
                _ => return None,
            }
        } else {
            match rule.as_str() {
                "-m comment --comment masquerade" => s.masquerade = true,
                "-m comment --comment hairpin" => s.hairpin = true,
                _ => return None,
            }
        }
    }
    (layout::mark_rules(&s) == rules).then_some(s)
}

/// A comment argument as `iptables-save` printed it, unquoted.
pub fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Some(text.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    (!escaped).then_some(out)
}

fn transport(text: &str) -> Option<Transport> {
    match text {
        "tcp" => Some(Transport::Tcp),
        "udp" => Some(Transport::Udp),
        _ => None,
    }
}

fn ports(text: &str, sep: char) -> Option<(u16, u16)> {
    if let Some((a, b)) = text.split_once(sep) {
        Some((a.parse().ok()?, b.parse().ok()?))
    } else {
        let p = text.parse().ok()?;
        Some((p, p))
    }
}

/// A DNAT rule portmap writes, read back: its run and comment. `None` unless the rule is exactly
/// what [`layout::dnat_rule`] writes for them.
pub fn parse_dnat(spec: &str) -> Option<(Run, String)> {
    let (head, rest) = spec.split_once(" -m comment --comment ")?;
    let (head, expires) = layout::split_time_match(head)?;
    let (comment, target) = rest.rsplit_once(" -j DNAT --to-destination ")?;
    let (listen, head) = match head.strip_prefix("-d ") {
        Some(rest) => {
            let (addr, rest) = rest.split_once(' ')?;
            let net = addr.parse::<IpNet>().ok()?;
            (net.prefix_len() == net.max_prefix_len()).then_some(())?;
            (Some(net.addr()), rest)
        }
        None => (None, head),
    };
    let mut words = head.split(' ');
    let (Some("-p"), Some(proto), Some("-m"), Some(_), Some("--dport"), Some(dport), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return None;
    };
    let transport = transport(proto)?;
    let (start, end) = ports(dport, ':')?;
    let (addr, to_ports) = if let Some(v6) = target.strip_prefix('[') {
        let (a, p) = v6.split_once("]:")?;
        (a.parse::<IpAddr>().ok().filter(IpAddr::is_ipv6)?, p)
    } else {
        let (a, p) = target.rsplit_once(':')?;
        (a.parse::<IpAddr>().ok().filter(IpAddr::is_ipv4)?, p)
    };
    let to_start = match to_ports.split_once('-') {
        Some((a, _)) => a.parse().ok()?,
        None => to_ports.parse().ok()?,
    };
    if start > end || u32::from(to_start) + u32::from(end - start) > 65535 {
        return None;
    }
    let run = Run {
        transport,
        start,
        end,
        to: addr,
        to_start,
        listen,
        expires,
    };
    let comment = unquote(comment)?;
    (layout::dnat_rule(&run, &comment) == spec).then_some((run, comment))
}

/// A filter rule portmap writes, read back: its run, mapping name, source and kind. `None`
/// unless the rule is exactly what [`layout::filter_rule_of`] writes for them.
pub fn parse_filter(spec: &str) -> Option<(Run, String, Option<IpNet>, FilterKind)> {
    let (head, rest) = spec.split_once(" -m comment --comment ")?;
    let (head, expires) = layout::split_time_match(head)?;
    let words: Vec<&str> = head.split(' ').collect();
    let ["-p", proto, "-m", "conntrack", w @ ..] = words.as_slice() else {
        return None;
    };
    let (new, w) = match w {
        ["--ctstate", "NEW", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (source, w) = match w {
        ["--ctorigsrc", net, rest @ ..] => {
            let net = net
                .parse::<IpNet>()
                .ok()
                .or_else(|| net.parse::<IpAddr>().ok().map(IpNet::from))?;
            (Some(net), rest)
        }
        rest => (None, rest),
    };
    let (listen, w) = match w {
        ["--ctorigdst", addr, rest @ ..] => (Some(addr.parse::<IpAddr>().ok()?), rest),
        rest => (None, rest),
    };
    let [
        "--ctreplsrc",
        dst,
        "--ctorigdstport",
        orig,
        "--ctreplsrcport",
        dport,
        tail @ ..,
    ] = w
    else {
        return None;
    };
    let limit = match tail {
        [] => None,
        [
            "-m",
            "hashlimit",
            "--hashlimit-above",
            rate,
            "--hashlimit-burst",
            burst,
            "--hashlimit-name",
            _,
        ] => Some(layout::limit_of_hashlimit(rate, burst.parse().ok()?)?),
        _ => return None,
    };
    let to = dst.parse::<IpAddr>().ok()?;
    let (start, end) = ports(orig, ':')?;
    let (to_start, _) = ports(dport, ':')?;
    if start > end || u32::from(to_start) + u32::from(end - start) > 65535 {
        return None;
    }
    let run = Run {
        transport: transport(proto)?,
        start,
        end,
        to,
        to_start,
        listen,
        expires,
    };
    let (name, target) = rest.split_once(' ').unwrap_or((rest, ""));
    let kind = match (target, limit, new) {
        ("-j DROP", Some(limit), true) => FilterKind::Limit(limit),
        ("-j ACCEPT", None, false) => FilterKind::Accept,
        ("-j DROP", None, false) => FilterKind::Drop,
        ("", None, true) => FilterKind::Count,
        (log, None, true) => FilterKind::Log(log.rsplit_once(" --nflog-group ")?.1.parse().ok()?),
        _ => return None,
    };
    let name = unquote(name)?;
    let again = layout::filter_rule_of(&run, &name, source.as_ref(), &kind);
    (again == spec).then_some((run, name, source, kind))
}

/// A pending-cleanup record read back.
pub fn parse_stale(spec: &str) -> Option<StaleFlows> {
    let text = unquote(spec.strip_prefix("-m comment --comment ")?)?;
    let mut words = text.split(' ');
    let mapping = words.next()?.to_owned();
    let (proto, port) = words.next()?.split_once('/')?;
    let target = words.next()?;
    let narrowed = match words.next() {
        None => false,
        Some("narrowed") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    let (addr, to_port) = if let Some(v6) = target.strip_prefix('[') {
        v6.split_once("]:")?
    } else {
        target.rsplit_once(':')?
    };
    let stale = StaleFlows {
        mapping,
        forward: Forward {
            transport: transport(proto)?,
            port: port.parse().ok()?,
            to: addr.parse().ok()?,
            to_port: to_port.parse().ok()?,
            listen: None,
        },
        unless_from: narrowed.then(Vec::new),
    };
    (layout::stale_rule(&stale) == spec).then_some(stale)
}

/// One rule of a mapping, where it was found.
#[derive(Debug, Clone)]
struct Found {
    family: Family,
    table: Table,
    chain: String,
    line: String,
    run: Run,
    /// Whether packets for the run's ports reach the chain.
    placed: bool,
    /// nat: the comment's description; filter: the source and verdict.
    description: Option<String>,
    source: Option<IpNet>,
    accept: bool,
    /// filter: what the rule does.
    kind: Option<FilterKind>,
    /// The rule's packets and bytes (0 when the counters were not read).
    counted: (u64, u64),
}

/// Rule counters from `iptables-save -c`, per family and table, chain, and rule (in order).
pub type Counts = BTreeMap<(Family, Table), BTreeMap<String, Vec<(u64, u64)>>>;

/// How many ports a damage finding names before counting the rest.
const LISTED: usize = 4;

/// Analyse portmap's chains (already checked for the marker) into `Observed`. `foreign` is the
/// hash of everything else in nat and filter ([`crate::save::foreign_hash`]); the generation
/// reported is it plus portmap's commit serial.
pub fn analyse(
    p: &Prefix,
    backend: &str,
    owned: &BTreeMap<(Family, Table), layout::Chains>,
    lan: &LanSide,
    foreign: Option<u32>,
) -> Observed {
    analyse_counted(p, backend, owned, None, lan, foreign)
}

/// [`analyse`], with the rules' counters (`iptables-save -c`) read into each mapping's
/// [`ObservedMapping::counters`]: its connections are the packets of its count rules, its
/// packets and bytes those of its accept rules.
pub fn analyse_counted(
    p: &Prefix,
    backend: &str,
    owned: &BTreeMap<(Family, Table), layout::Chains>,
    counts: Option<&Counts>,
    lan: &LanSide,
    foreign: Option<u32>,
) -> Observed {
    let table_name = p.to_string();
    let serial = recorded_serial(p, owned);
    let generation = foreign.map(|f| f.wrapping_add(serial));
    if owned.values().all(|c| c.chains.is_empty() && c.jumps.is_empty()) {
        return Observed::missing(backend, &table_name, generation);
    }
    let mut reasons: Vec<String> = Vec::new();
    let settings = recorded_settings(p, owned).unwrap_or_else(|| {
        reasons.push(format!(
            "no chain {} records the settings portmap built the chains for",
            p.chain(layout::MARK)
        ));
        Settings::default()
    });
    let mut found: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    let mut pending = Vec::new();

    for ((family, table), ours) in owned {
        let (family, table) = (*family, *table);
        let at = format!("{} {table}", family.tool());
        let mut want = layout::static_chains(p, family, table, &settings, lan);
        if (family, table) == (Family::V4, Table::Nat)
            && let Some(mark) = want.chains.get_mut(&p.chain(layout::MARK))
        {
            mark.push(layout::serial_rule(serial));
        }
        for (name, rules) in &want.chains {
            match ours.chains.get(name) {
                None => reasons.push(format!("{at}: chain {name} is missing")),
                Some(have) if have != rules => {
                    reasons.push(format!(
                        "{at}: chain {name} does not hold the rules portmap writes"
                    ));
                }
                Some(_) => {}
            }
        }
        for jump in &want.jumps {
            let n = ours.jumps.iter().filter(|j| *j == jump).count();
            let target = jump.spec.rsplit_once("-j ").map_or("", |(_, t)| t);
            match n {
                1 => {}
                0 => reasons.push(format!(
                    "{at}: the jump from {} to {target} is missing",
                    jump.builtin
                )),
                n => reasons.push(format!(
                    "{at}: the jump from {} to {target} is there {n} times",
                    jump.builtin
                )),
            }
        }
        for jump in ours.jumps.iter().filter(|j| !want.jumps.contains(j)) {
            reasons.push(format!(
                "{at}: a rule in {} carries portmap's comment but is not a jump portmap writes",
                jump.builtin
            ));
        }

        // Trees: which chains exist, which jumps lead into them, which rules they hold.
        let kind = match table {
            Table::Nat => Kind::Nat,
            Table::Filter => Kind::Filter,
        };
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for name in ours.chains.keys() {
            if want.chains.contains_key(name) || (table == Table::Nat && *name == p.chain(layout::STALE)) {
                continue;
            }
            match Node::parse(p, name) {
                Some(n) if n.kind == kind => {
                    nodes.insert(name.clone(), n);
                }
                _ => reasons.push(format!("{at}: chain {name} was not written by portmap")),
            }
        }
        for t in [Transport::Tcp, Transport::Udp] {
            let root = Node::root(kind, t).name(p);
            if !nodes.contains_key(&root) {
                reasons.push(format!("{at}: chain {root} is missing"));
            }
        }
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut incoming: BTreeMap<String, usize> = BTreeMap::new();
        let mut rules_found: Vec<(String, Node, String, (u64, u64))> = Vec::new();
        let chain_counts = counts.and_then(|c| c.get(&(family, table)));
        for (name, node) in &nodes {
            for (index, line) in ours.chains[name].iter().enumerate() {
                let counted = chain_counts
                    .and_then(|c| c.get(name))
                    .and_then(|c| c.get(index))
                    .copied()
                    .unwrap_or_default();
                let child = line
                    .rsplit_once("-j ")
                    .and_then(|(_, t)| nodes.get(t).map(|c| (t, c)))
                    .filter(|(_, c)| {
                        c.transport == node.transport
                            && c.span() < node.span()
                            && node.holds(c.lo as u16, c.hi as u16)
                    })
                    .filter(|(_, c)| c.jump(p) == *line);
                if let Some((target, _)) = child {
                    edges.entry(name.clone()).or_default().push(target.to_owned());
                    *incoming.entry(target.to_owned()).or_default() += 1;
                } else {
                    rules_found.push((name.clone(), *node, line.clone(), counted));
                }
            }
        }
        // Reachable: from the roots (which the static dispatch chain jumps to) through the jumps.
        let mut reachable: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = [Transport::Tcp, Transport::Udp]
            .iter()
            .map(|t| Node::root(kind, *t).name(p))
            .filter(|r| nodes.contains_key(r))
            .collect();
        while let Some(n) = todo.pop() {
            if reachable.insert(n.clone()) {
                todo.extend(edges.get(&n).cloned().unwrap_or_default());
            }
        }
        for name in nodes.keys() {
            let is_root = nodes[name].span() == 65536;
            match incoming.get(name).copied().unwrap_or(0) {
                0 if !is_root => {
                    reasons.push(format!("{at}: chain {name} is not reached from its parent chain"));
                }
                n if n > 1 => reasons.push(format!("{at}: chain {name} is jumped to {n} times")),
                _ => {}
            }
        }
        for (chain, node, line, counted) in rules_found {
            let parsed = match table {
                Table::Nat => parse_dnat(&line).map(|(run, comment)| {
                    let (name, description) = layout::parse_mapping_comment(&comment);
                    (run, name, description, None, None)
                }),
                Table::Filter => {
                    parse_filter(&line).map(|(run, name, source, kind)| (run, name, None, source, Some(kind)))
                }
            };
            match parsed {
                Some((run, name, description, source, kind))
                    if portmap_core::is_mapping_name(&name)
                        && run.transport == node.transport
                        && Family::of(run.to) == family =>
                {
                    let placed = reachable.contains(&chain) && node.holds(run.start, run.end);
                    found.entry(name).or_default().push(Found {
                        family,
                        table,
                        chain,
                        line,
                        run,
                        placed,
                        description,
                        source,
                        accept: matches!(kind, None | Some(FilterKind::Accept)),
                        kind,
                        counted,
                    });
                }
                _ => reasons.push(format!(
                    "{at}: chain {chain} holds a rule portmap did not write: {}",
                    portmap_core::shown(&line)
                )),
            }
        }
        if table == Table::Nat
            && let Some(records) = ours.chains.get(&p.chain(layout::STALE))
        {
            for line in records {
                match parse_stale(line) {
                    Some(s) if Family::of(s.forward.to) == family => pending.push(s),
                    _ => reasons.push(format!(
                        "{at}: chain {} holds a rule portmap did not write",
                        p.chain(layout::STALE)
                    )),
                }
            }
        }
    }

    let mappings: Vec<ObservedMapping> = found
        .into_iter()
        .map(|(name, rules)| into_mapping(name, &rules, counts.is_some()))
        .collect();
    for s in &mut pending {
        if s.unless_from.is_some() {
            s.unless_from = Some(
                mappings
                    .iter()
                    .find(|m| m.name == s.mapping)
                    .map(|m| m.allow_from.clone())
                    .unwrap_or_default(),
            );
        }
    }
    // Everything is where it works; is it also exactly where portmap puts it (the trees' shape, the
    // order of rules within a chain)? A tree portmap would build differently is rebuilt.
    if reasons.is_empty() && mappings.iter().all(|m| !m.is_damaged()) {
        let rules: Vec<MappingRules> = mappings.iter().map(MappingRules::of_observed).collect();
        let input = layout::Input {
            settings: settings.clone(),
            mappings: rules.iter().map(|r| (r, 0)).collect(),
            stale: Vec::new(),
            serial,
        };
        let want = layout::build(p, &input, lan);
        for ((family, table), ours) in owned {
            let expected = want.table(*family, *table);
            for (name, rules) in &ours.chains {
                if Node::parse(p, name).is_some() && expected.chains.get(name) != Some(rules) {
                    reasons.push(format!(
                        "{} {table}: chain {name} does not hold portmap's rules in the order and chains portmap writes them",
                        family.tool()
                    ));
                }
            }
            for name in expected.chains.keys() {
                if Node::parse(p, name).is_some() && !ours.chains.contains_key(name) {
                    reasons.push(format!("{} {table}: chain {name} is missing", family.tool()));
                }
            }
        }
    }
    reasons.sort();
    reasons.dedup();
    Observed {
        sources: None,
        backend: backend.to_owned(),
        table: table_name,
        generation,
        place: None,
        state: if reasons.is_empty() {
            TableState::Intact
        } else {
            TableState::Damaged { reasons }
        },
        settings,
        mappings,
        environment: portmap_core::Environment::default(),
        pending_flows: pending,
        observed_at: None,
        // `-m time` needs nothing of the chains.
        can_expire: true,
    }
}

fn phrase(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(LISTED).map(String::as_str).collect();
    match items.len() - shown.len() {
        0 => shown.join(", "),
        rest => format!("{} and {rest} more", shown.join(", ")),
    }
}

fn is_are(items: &[String]) -> &'static str {
    if items.len() == 1 { "is" } else { "are" }
}

/// One mapping from its rules, with every way they fall short of what portmap writes for it.
fn into_mapping(name: String, rules: &[Found], counted: bool) -> ObservedMapping {
    let nat: Vec<&Found> = rules.iter().filter(|r| r.table == Table::Nat).collect();
    let filter: Vec<&Found> = rules.iter().filter(|r| r.table == Table::Filter).collect();
    let mut damage = Vec::new();
    let description = nat.first().and_then(|r| r.description.clone());
    if nat.iter().any(|r| r.description != description) {
        damage.push("its DNAT rules disagree on the description".to_owned());
    }
    let families: BTreeSet<Family> = rules.iter().map(|r| r.family).collect();
    if families.len() > 1 {
        damage.push("its rules are split between IPv4 and IPv6".to_owned());
    }
    let mut forwards: Vec<Forward> = nat.iter().flat_map(|r| r.run.forwards()).collect();
    forwards.sort_unstable();
    let before = forwards.len();
    forwards.dedup();
    if forwards.len() != before {
        damage.push("some of its ports have more than one DNAT rule".to_owned());
    }
    let allow_from = portmap_core::canonical_prefixes(
        filter
            .iter()
            .filter(|r| r.accept)
            .filter_map(|r| r.source)
            .collect::<Vec<_>>(),
    );
    if forwards.is_empty() {
        damage.push("it forwards nothing: only left-over filter rules remain".to_owned());
    }
    let limit = filter.iter().find_map(|r| match r.kind {
        Some(FilterKind::Limit(l)) => Some(l),
        _ => None,
    });
    let log = filter.iter().find_map(|r| match r.kind {
        Some(FilterKind::Log(g)) => Some(g),
        _ => None,
    });
    // The expiry of its rules: the one most of them name (a rule that names another, or none, is
    // then a difference from what portmap writes, found below).
    let mut expiries: BTreeMap<Option<portmap_core::UtcTime>, usize> = BTreeMap::new();
    for r in rules {
        *expiries.entry(r.run.expires).or_default() += 1;
    }
    let expires = expiries
        .iter()
        .max_by_key(|(t, n)| (**n, std::cmp::Reverse(**t)))
        .and_then(|(t, _)| *t);
    let extras = layout::Extras { limit, log, expires };
    let want = MappingRules::with(&name, description.as_deref(), &forwards, &allow_from, extras);
    let mut uncapped = Vec::new();
    let mut unlogged = Vec::new();
    let mut uncounted = Vec::new();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    let mut unaccepted = Vec::new();
    let mut differ = Vec::new();
    for (run, dnat, want_filter) in &want.runs {
        let have_nat: Vec<&&Found> = nat.iter().filter(|r| r.run == *run).collect();
        let have: Vec<&&Found> = filter.iter().filter(|r| r.run == *run).collect();
        let lines: Vec<&str> = have.iter().map(|r| r.line.as_str()).collect();
        let label = run.label();
        if lines == want_filter.iter().map(String::as_str).collect::<Vec<_>>()
            && have_nat.len() == 1
            && have_nat[0].line == *dnat
        {
            continue;
        }
        let drop_at = have.iter().position(|r| r.kind == Some(FilterKind::Drop));
        let accepts_before_drop = have[..drop_at.unwrap_or(have.len())]
            .iter()
            .filter(|r| r.accept)
            .count();
        let accepts_all = have.iter().any(|r| r.accept && r.source.is_none());
        if !allow_from.is_empty() && drop_at.is_none() {
            open.push(label);
        } else if drop_at.is_some() && accepts_before_drop == 0 {
            refused.push(label);
        } else if have.is_empty() || (!accepts_all && allow_from.is_empty()) {
            unaccepted.push(label);
        } else {
            let how_many = |list: &[&str], kind: fn(&FilterKind) -> bool| {
                list.iter()
                    .filter(|line| parse_filter(line).is_some_and(|(.., k)| kind(&k)))
                    .count()
            };
            let wanted: Vec<&str> = want_filter.iter().map(String::as_str).collect();
            let short = |kind: fn(&FilterKind) -> bool| how_many(&lines, kind) < how_many(&wanted, kind);
            if short(|k| matches!(k, FilterKind::Limit(_))) {
                uncapped.push(label);
            } else if short(|k| matches!(k, FilterKind::Log(_))) {
                unlogged.push(label);
            } else if short(|k| *k == FilterKind::Count) {
                uncounted.push(label);
            } else {
                differ.push(label);
            }
        }
    }
    if !uncapped.is_empty() {
        damage.push(format!(
            "{} {} not capped by its limit",
            phrase(&uncapped),
            is_are(&uncapped)
        ));
    }
    if !unlogged.is_empty() {
        damage.push(format!(
            "the new connections of {} are not logged",
            phrase(&unlogged)
        ));
    }
    if !uncounted.is_empty() {
        damage.push(format!("connections to {} are not counted", phrase(&uncounted)));
    }
    let nat_runs: BTreeSet<Run> = want.runs.iter().map(|(r, _, _)| *r).collect();
    let nowhere: BTreeSet<String> = filter
        .iter()
        .filter(|r| !nat_runs.contains(&r.run))
        .map(|r| r.run.label())
        .collect();
    let nowhere: Vec<String> = nowhere.into_iter().collect();
    if !open.is_empty() {
        damage.push(format!(
            "{} {} not guarded by the allow-list: open to every source",
            phrase(&open),
            is_are(&open)
        ));
    }
    if !refused.is_empty() {
        damage.push(format!(
            "{}: every source is refused (the allow-list's drop comes before any accept)",
            phrase(&refused)
        ));
    }
    if !unaccepted.is_empty() {
        damage.push(format!(
            "{} {} no accept in filter: forwarded connections pass only where the FORWARD chain's other rules or policy let them",
            phrase(&unaccepted),
            if unaccepted.len() == 1 { "has" } else { "have" }
        ));
    }
    if !differ.is_empty() {
        damage.push(format!(
            "the rules of {} differ from the ones portmap writes for it",
            phrase(&differ)
        ));
    }
    if !nowhere.is_empty() && !forwards.is_empty() {
        damage.push(format!(
            "{} {} filter rules but no DNAT rule",
            phrase(&nowhere),
            if nowhere.len() == 1 { "has" } else { "have" }
        ));
    }
    let misplaced: BTreeSet<String> = rules
        .iter()
        .filter(|r| !r.placed)
        .map(|r| format!("{} (chain {})", r.run.label(), r.chain))
        .collect();
    if !misplaced.is_empty() {
        let list: Vec<String> = misplaced.into_iter().collect();
        damage.push(format!(
            "the rules for {} sit where packets for those ports never arrive",
            phrase(&list)
        ));
    }
    let wanted_count: usize = want.runs.iter().map(|(_, _, f)| f.len() + 1).sum();
    if damage.is_empty() && wanted_count != rules.len() {
        damage.push(format!(
            "it has {} where portmap writes {wanted_count}",
            portmap_core::counted(rules.len(), "rule")
        ));
    }
    let objects = if damage.is_empty() {
        Vec::new()
    } else {
        rules
            .iter()
            .map(|r| format!("{} {} {}: {}", r.family.tool(), r.table, r.chain, r.line))
            .collect()
    };
    let mut counters = portmap_core::Counters::default();
    for r in &filter {
        match r.kind {
            Some(FilterKind::Count) => counters.connections += r.counted.0,
            Some(FilterKind::Accept) => {
                counters.packets += r.counted.0;
                counters.bytes += r.counted.1;
            }
            _ => {}
        }
    }
    ObservedMapping {
        allow_sources: Vec::new(),
        allow_inline: Vec::new(),
        name,
        description,
        forwards,
        allow_from,
        damage,
        objects,
        log,
        limit,
        expires,
        counters: counted.then_some(counters),
        active_flows: None,
    }
}
