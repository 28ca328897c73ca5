//! Read portmap's table back into `Observed`: the mappings (names travel in element comments; an
//! element of `dnat6` gives a forward to an IPv6 target), the settings, and every way the structure
//! differs from what portmap builds (reported as reasons for a repair). Reading is retried until the
//! ruleset generation is the same before and after, so the picture is consistent. `observe` never
//! decides what to do about what it finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use portmap_core::{Environment, Forward, Observed, ObservedMapping, Settings, TableState, Transport};
use portmap_netlink::link::{self, Interface};
use portmap_netlink::{Chain, Netns, Rule, Set, Socket, sysctl, udata};

use crate::element::{self, parse_mapping_comment};
use crate::lan_side::LanSide;
use crate::layout::{self, Contents, IpFamily, Shape, TableId};
use crate::{Error, coexistence};

/// Read the table consistently and analyse it, then look around it (interfaces, forwarding
/// sysctls, other tables' forward chains) for what would stop the forwards from working.
pub fn observe(socket: &mut Socket, netns: &Netns, t: &TableId) -> Result<Observed, Error> {
    let interfaces = link::interfaces(netns)?;
    let mut observed = observe_table(socket, &interfaces, t)?;
    observed.environment = Environment {
        interfaces: Some(interfaces.iter().map(|i| i.name.clone()).collect()),
        ipv4_forwarding: read_flag(netns, "net.ipv4.ip_forward"),
        ipv6_forwarding: read_flag(netns, "net.ipv6.conf.all.forwarding"),
        blocking_forward_chains: coexistence::blocking_forward_chains(socket, t)?,
    };
    Ok(observed)
}

/// A 0/1 sysctl; `None` when it cannot be read (e.g. IPv6 disabled), which is never a warning.
fn read_flag(netns: &Netns, key: &str) -> Option<bool> {
    sysctl::read(netns, key).ok().map(|v| v.trim() != "0")
}

fn observe_table(socket: &mut Socket, interfaces: &[Interface], t: &TableId) -> Result<Observed, Error> {
    for _ in 0..5 {
        let generation = socket.generation()?;
        if socket.table(t.family, &t.name)?.is_none() {
            if socket.generation()? == generation {
                return Ok(Observed::missing("nft", &t.display(), Some(generation)));
            }
            continue;
        }
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
        if socket.generation()? != generation {
            continue;
        }
        let contents = Contents {
            chains,
            rules,
            sets,
            elements,
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
        return Ok(analyse(t, &contents, &lan_side, Some(generation)));
    }
    Err(Error::Unstable)
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

    // Static sets and maps.
    for want in layout::static_sets(t) {
        match sets_by_name.get(want.name.as_str()) {
            None => reasons.push(format!("{} {} is missing", kind(&want), want.name)),
            Some(found) if !same_set_type(found, &want) => {
                reasons.push(format!(
                    "{} {} has the wrong type or flags",
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

    // Allow-list chains and sets, by mapping name, with the family of the set's addresses.
    let mut allow: BTreeMap<String, (IpFamily, Vec<IpNet>)> = BTreeMap::new();
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
        let Some(name) = chain.userdata.as_deref().and_then(udata::parse_comment) else {
            reasons.push(format!("chain {} was not written by portmap", chain.name));
            continue;
        };
        if chain.name != layout::allow_chain(&name) || chain.base.is_some() {
            reasons.push(format!("chain {} was not written by portmap", chain.name));
            continue;
        }
        let set_name = layout::allow_set(&name);
        let set = sets_by_name.get(set_name.as_str()).copied();
        // The set's address type says the family; the rule and the set must both be of it.
        let family = match set {
            Some(s) if s.key_type == portmap_netlink::datatype::IPV6_ADDR => IpFamily::V6,
            _ => IpFamily::V4,
        };
        let rules: &[&Rule] = rules_by_chain.get(chain.name.as_str()).map_or(&[], Vec::as_slice);
        let want = layout::allow_rule(t, &name, family, 0);
        if rules.len() != 1 || !layout::same_exprs(&rules[0].exprs, &want.exprs) {
            reasons.push(format!("chain {} (allow-list of {name}) was changed", chain.name));
        }
        match set {
            None => reasons.push(format!("set {set_name} (allow-list of {name}) is missing")),
            Some(found) => {
                if !same_set_type(found, &layout::allow_set_object(t, &name, family, 0)) {
                    reasons.push(format!("set {set_name} has the wrong type or flags"));
                }
                match element::prefixes_of(elements(&set_name), family) {
                    Some(prefixes) => {
                        allow.insert(name.clone(), (family, prefixes));
                    }
                    None => reasons.push(format!("set {set_name} holds malformed intervals")),
                }
            }
        }
    }
    let known_sets: BTreeSet<String> = layout::static_sets(t)
        .into_iter()
        .map(|s| s.name)
        .chain(allow.keys().map(|n| layout::allow_set(n)))
        .collect();
    // Sets already named by a finding (e.g. an allow-list set whose chain is gone) are not repeated.
    let named: BTreeSet<&str> = snap
        .sets
        .iter()
        .filter(|s| !known_sets.contains(&s.name))
        .map(|s| s.name.as_str())
        .filter(|n| reasons.iter().any(|r| r.contains(n)))
        .collect();
    for set in &snap.sets {
        if !known_sets.contains(&set.name) && !named.contains(set.name.as_str()) {
            reasons.push(format!("set {} was not written by portmap", set.name));
        }
    }

    // Mappings from the DNAT maps, with the family whose map holds them.
    let mut mappings: BTreeMap<String, ObservedMapping> = BTreeMap::new();
    let mut families: BTreeMap<String, BTreeSet<IpFamily>> = BTreeMap::new();
    for family in IpFamily::ALL {
        let map = family.dnat_map();
        for e in elements(map) {
            match element::parse_dnat_element(e, family) {
                Some((forward, Some(comment))) => {
                    let (name, description) = parse_mapping_comment(&comment);
                    let m = mappings.entry(name.clone()).or_insert_with(|| ObservedMapping {
                        name,
                        description: description.clone(),
                        forwards: Vec::new(),
                        allow_from: Vec::new(),
                    });
                    if m.description != description {
                        reasons.push(format!(
                            "map {map}: elements of {} disagree on the description",
                            m.name
                        ));
                    }
                    m.forwards.push(forward);
                    families.entry(m.name.clone()).or_default().insert(family);
                }
                Some((forward, None)) => reasons.push(format!(
                    "map {map} holds {} . {} without a portmap comment",
                    forward.transport, forward.port
                )),
                None => reasons.push(format!("map {map} holds an element portmap cannot read")),
            }
        }
    }
    // A mapping has one family: its elements are all in dnat4 or all in dnat6.
    let mut family_of: BTreeMap<&str, IpFamily> = BTreeMap::new();
    for (name, found) in &families {
        if found.len() > 1 {
            reasons.push(format!(
                "mapping {name} has elements in both {} and {}",
                layout::DNAT4,
                layout::DNAT6
            ));
        }
        family_of.insert(name, found.first().copied().unwrap_or(IpFamily::V4));
    }

    // Guards must cover exactly the forwards of mappings with an allow-list, in the guard map of
    // the mapping's family.
    let mut guards: BTreeMap<(IpFamily, String), BTreeSet<(Transport, u16)>> = BTreeMap::new();
    for family in IpFamily::ALL {
        for e in elements(family.guard_map()) {
            match element::parse_guard_element(e) {
                Some((key, chain)) => {
                    let owner = chain.strip_prefix("allow_").unwrap_or(&chain).to_owned();
                    guards.entry((family, owner)).or_default().insert(key);
                }
                None => reasons.push(format!(
                    "map {} holds an element portmap did not write",
                    family.guard_map()
                )),
            }
        }
    }
    let mut guarded: BTreeSet<(IpFamily, &str)> = BTreeSet::new();
    for (name, (list_family, prefixes)) in &allow {
        let Some(m) = mappings.get_mut(name) else {
            reasons.push(format!("allow-list of {name} is left over without a mapping"));
            continue;
        };
        let family = family_of.get(name.as_str()).copied().unwrap_or(IpFamily::V4);
        if *list_family != family {
            reasons.push(format!(
                "set {} holds {} sources but mapping {name} forwards to {}",
                layout::allow_set(name),
                list_family.name(),
                family.name()
            ));
        }
        m.allow_from.clone_from(prefixes);
        guarded.insert((family, name));
        let keys: BTreeSet<(Transport, u16)> = forward_keys(&m.forwards).into_iter().collect();
        if guards.get(&(family, name.clone())) != Some(&keys) {
            reasons.push(format!(
                "map {} does not cover exactly the ports of {name}",
                family.guard_map()
            ));
        }
    }
    for (family, name) in guards.keys() {
        if !guarded.contains(&(*family, name.as_str())) {
            reasons.push(format!(
                "map {} sends ports to a missing allow-list of {name}",
                family.guard_map()
            ));
        }
    }

    let mut mappings: Vec<ObservedMapping> = mappings.into_values().collect();
    for m in &mut mappings {
        m.forwards.sort_unstable();
    }
    reasons.sort();
    reasons.dedup();
    Observed {
        backend: "nft".to_owned(),
        table: t.display(),
        generation,
        state: if reasons.is_empty() {
            TableState::Intact
        } else {
            TableState::Damaged { reasons }
        },
        settings,
        mappings,
        environment: Environment::default(),
    }
}

fn list(prefixes: &[IpNet]) -> String {
    let parts: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn kind(set: &Set) -> &'static str {
    if set.data_type.is_some() { "map" } else { "set" }
}

fn same_set_type(found: &Set, want: &Set) -> bool {
    found.flags & !portmap_netlink::set_flags::EVAL == want.flags
        && found.key_type == want.key_type
        && found.key_len == want.key_len
        && found.data_type == want.data_type
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
                .filter(|w| {
                    snap.rules
                        .iter()
                        .any(|r| r.chain == w.chain && layout::same_exprs(&r.exprs, &w.exprs))
                })
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
                if found.len() != wanted.len()
                    || found
                        .iter()
                        .zip(&wanted)
                        .any(|(a, b)| !layout::same_exprs(&a.exprs, &b.exprs))
                {
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
            found.len() == wanted.len()
                && found
                    .iter()
                    .zip(&wanted)
                    .all(|(a, b)| layout::same_exprs(&a.exprs, &b.exprs))
        }
    })
}

/// The (protocol, port) keys of some forwards, in their order: what a guard map holds for them.
pub fn forward_keys(forwards: &[Forward]) -> Vec<(Transport, u16)> {
    forwards.iter().map(|f| (f.transport, f.port)).collect()
}
