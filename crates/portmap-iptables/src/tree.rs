//! The dispatch tree: iptables has no maps, so instead of one rule per forward (what Docker and
//! kube-proxy evaluate for every new connection) each protocol's rules hang in a tree of chains
//! keyed on the destination port, and a packet evaluates O(log N) rules.
//!
//! The tree is a fixed 16-ary trie over the port space: the root `P-NT-0-65535` (nat, TCP; `NU`
//! for UDP, `FT`/`FU` in filter, keyed on the original destination port) covers every port, its
//! children 4096 ports each, then 256, then 16. A node holding at most [`LEAF_MAX`] entries (runs
//! of a mapping) keeps them itself; a larger one hands every entry that fits inside one child down
//! to that child (`-p tcp -m tcp --dport 8192:12287 -j P-NT-8192-12287`) and keeps the entries that
//! span children. Node boundaries never move, so a node's name says its range, and a one-mapping
//! change rewrites only the chains on that mapping's path (its node, and a parent when a child
//! appears or goes). Within a node, rules are ordered by port; entries of one family and protocol
//! never share a port (validation), so order only matters between the old and the new version of
//! a mapping during an apply (rank).
//!
//! Pure: builds names and text lines, parses names back; never runs anything.

use std::collections::BTreeMap;

use portmap_core::Transport;

use crate::layout::{Prefix, port_match};

/// Most entries a node keeps before it hands entries down to its children.
pub const LEAF_MAX: usize = 16;
/// Children per node.
pub const FANOUT: u32 = 16;
/// Ranges of a node at each depth: 65536, 4096, 256, 16 ports.
pub const SPANS: [u32; 4] = [65536, 4096, 256, 16];

/// Which tree: the nat one (keyed on `--dport`) or the filter one (keyed on the original
/// destination port of a DNAT-ed connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// nat: DNAT rules.
    Nat,
    /// filter: accept and drop rules.
    Filter,
}

/// One run of a mapping's ports with its rules (1 DNAT rule in nat; accepts and a drop in filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
    /// 0 for the configuration's rules; 1 for an old version kept beside them during an apply.
    pub rank: u8,
    /// The rules, in order.
    pub lines: Vec<String>,
}

/// A node of the trie, as its chain name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// nat or filter.
    pub kind: Kind,
    /// Protocol.
    pub transport: Transport,
    /// First port of the node's range.
    pub lo: u32,
    /// Last port of the node's range.
    pub hi: u32,
}

impl Node {
    /// The root of a tree.
    pub fn root(kind: Kind, transport: Transport) -> Node {
        Node {
            kind,
            transport,
            lo: 0,
            hi: 65535,
        }
    }

    /// Ports in the node's range.
    pub fn span(&self) -> u32 {
        self.hi - self.lo + 1
    }

    /// Whether the range holds `start..=end`.
    pub fn holds(&self, start: u16, end: u16) -> bool {
        self.lo <= u32::from(start) && u32::from(end) <= self.hi
    }

    /// The chain's name, e.g. `PORTMAP-NT-8192-12287`.
    pub fn name(&self, p: &Prefix) -> String {
        let k = match self.kind {
            Kind::Nat => 'N',
            Kind::Filter => 'F',
        };
        let t = match self.transport {
            Transport::Tcp => 'T',
            Transport::Udp => 'U',
        };
        p.chain(&format!("{k}{t}-{}-{}", self.lo, self.hi))
    }

    /// The rule that jumps from the parent into this node.
    pub fn jump(&self, p: &Prefix) -> String {
        let proto = self.transport.as_str();
        let ports = port_match(self.lo as u16, self.hi as u16);
        match self.kind {
            Kind::Nat => format!("-p {proto} -m {proto} --dport {ports} -j {}", self.name(p)),
            Kind::Filter => format!(
                "-p {proto} -m conntrack --ctorigdstport {ports} -j {}",
                self.name(p)
            ),
        }
    }

    /// The children's ranges (none at the deepest level).
    pub fn children(&self) -> Vec<Node> {
        let span = self.span();
        if span <= SPANS[SPANS.len() - 1] {
            return Vec::new();
        }
        let child = span / FANOUT;
        (0..FANOUT)
            .map(|i| Node {
                lo: self.lo + i * child,
                hi: self.lo + (i + 1) * child - 1,
                ..*self
            })
            .collect()
    }

    /// Parse a chain name of prefix `p` back into a node; `None` when it is not one.
    pub fn parse(p: &Prefix, name: &str) -> Option<Node> {
        let rest = name.strip_prefix(p.as_str())?.strip_prefix('-')?;
        let mut chars = rest.chars();
        let kind = match chars.next()? {
            'N' => Kind::Nat,
            'F' => Kind::Filter,
            _ => return None,
        };
        let transport = match chars.next()? {
            'T' => Transport::Tcp,
            'U' => Transport::Udp,
            _ => return None,
        };
        let (lo, hi) = chars.as_str().strip_prefix('-')?.split_once('-')?;
        let node = Node {
            kind,
            transport,
            lo: lo.parse().ok()?,
            hi: hi.parse().ok()?,
        };
        // Only the trie's own nodes, written the way `name` writes them.
        let span = node.hi.checked_sub(node.lo)? + 1;
        (SPANS.contains(&span) && node.lo.is_multiple_of(span) && node.name(p) == name).then_some(node)
    }
}

/// The root chain of one tree.
pub fn root(p: &Prefix, kind: Kind, transport: Transport) -> String {
    Node::root(kind, transport).name(p)
}

/// The chains of one tree for `entries`: the root always, other nodes when they hold something.
pub fn build(
    p: &Prefix,
    kind: Kind,
    transport: Transport,
    mut entries: Vec<Entry>,
) -> BTreeMap<String, Vec<String>> {
    entries.sort_by_key(|a| (a.start, a.rank, a.end));
    // An old version whose rules are the new version's (e.g. only the description changed in a
    // filter rule) is not written twice.
    let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        let dup = kept
            .iter()
            .rev()
            .take_while(|k| k.start == e.start)
            .any(|k| k.end == e.end && k.lines == e.lines);
        if !dup {
            kept.push(e);
        }
    }
    let mut out = BTreeMap::new();
    node(p, Node::root(kind, transport), kept, &mut out);
    out
}

fn node(p: &Prefix, at: Node, entries: Vec<Entry>, out: &mut BTreeMap<String, Vec<String>>) {
    let children = at.children();
    if entries.len() <= LEAF_MAX || children.is_empty() {
        out.insert(at.name(p), entries.into_iter().flat_map(|e| e.lines).collect());
        return;
    }
    // Entries go to the child that holds them whole; the rest stay here, in port order among the
    // jumps.
    let mut per_child: Vec<Vec<Entry>> = vec![Vec::new(); children.len()];
    let mut here: Vec<(u32, Vec<String>)> = Vec::new();
    for e in entries {
        match children.iter().position(|c| c.holds(e.start, e.end)) {
            Some(i) => per_child[i].push(e),
            None => here.push((u32::from(e.start), e.lines)),
        }
    }
    let mut items: Vec<(u32, u8, Vec<String>)> = here.into_iter().map(|(s, l)| (s, 1, l)).collect();
    for (child, list) in children.into_iter().zip(per_child) {
        if list.is_empty() {
            continue;
        }
        items.push((child.lo, 0, vec![child.jump(p)]));
        node(p, child, list, out);
    }
    items.sort_by_key(|(start, order, _)| (*start, *order));
    out.insert(at.name(p), items.into_iter().flat_map(|(_, _, l)| l).collect());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Prefix {
        Prefix::new("PORTMAP").expect("valid")
    }

    fn entry(port: u16) -> Entry {
        Entry {
            start: port,
            end: port,
            rank: 0,
            lines: vec![format!("rule {port}")],
        }
    }

    #[test]
    fn names_round_trip_and_fit_the_limit() {
        let n = Node {
            kind: Kind::Filter,
            transport: Transport::Udp,
            lo: 61440,
            hi: 65535,
        };
        assert_eq!(n.name(&p()), "PORTMAP-FU-61440-65535");
        assert_eq!(Node::parse(&p(), &n.name(&p())), Some(n));
        let long = Prefix::new("ABCDEFGHIJKL").expect("valid");
        assert!(n.name(&long).len() <= crate::layout::MAX_CHAIN_LEN);
        for bad in [
            "PORTMAP-NT-1-65535",
            "PORTMAP-NT-0-4096",
            "PORTMAP-NX-0-15",
            "PORTMAP-NT-016-31",
            "PORTMAP-PRE",
        ] {
            assert_eq!(Node::parse(&p(), bad), None, "{bad}");
        }
    }

    #[test]
    fn a_small_tree_is_one_chain() {
        let chains = build(&p(), Kind::Nat, Transport::Tcp, (1..=16).map(entry).collect());
        assert_eq!(chains.len(), 1);
        assert_eq!(chains["PORTMAP-NT-0-65535"].len(), 16);
    }

    #[test]
    fn ten_thousand_ports_take_few_rules_per_packet() {
        let chains = build(
            &p(),
            Kind::Nat,
            Transport::Tcp,
            (10000..20000).map(entry).collect(),
        );
        // The longest chain a packet walks through at each level is at most 16 rules.
        assert!(
            chains.values().all(|c| c.len() <= 16),
            "{:?}",
            chains.values().map(Vec::len).max()
        );
        // Follow port 15000 from the root: at most 4 chains.
        let mut at = "PORTMAP-NT-0-65535".to_owned();
        let mut depth = 0;
        loop {
            depth += 1;
            let rules = &chains[&at];
            if rules.iter().any(|r| r == "rule 15000") {
                break;
            }
            let next = rules
                .iter()
                .filter_map(|r| r.rsplit_once("-j ").map(|(_, c)| c.to_owned()))
                .find(|c| Node::parse(&p(), c).is_some_and(|n| n.holds(15000, 15000)))
                .expect("a jump towards 15000");
            at = next;
        }
        assert!(depth <= 4, "{depth}");
    }

    #[test]
    fn a_one_entry_change_rewrites_only_its_path() {
        let before = build(
            &p(),
            Kind::Nat,
            Transport::Tcp,
            (10000..20000).map(entry).collect(),
        );
        let mut changed: Vec<Entry> = (10000..20000).map(entry).collect();
        changed[4321].lines = vec!["rule changed".to_owned()];
        let after = build(&p(), Kind::Nat, Transport::Tcp, changed);
        let differ: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
        assert_eq!(differ.len(), 1, "{differ:?}");
    }

    #[test]
    fn a_spanning_range_stays_in_the_parent() {
        let mut entries: Vec<Entry> = (100..120).map(entry).collect();
        entries.push(Entry {
            start: 4000,
            end: 4200,
            rank: 0,
            lines: vec!["span".to_owned()],
        });
        let chains = build(&p(), Kind::Nat, Transport::Tcp, entries);
        let root = &chains["PORTMAP-NT-0-65535"];
        assert_eq!(
            root,
            &vec![
                "-p tcp -m tcp --dport 0:4095 -j PORTMAP-NT-0-4095".to_owned(),
                "span".to_owned()
            ]
        );
    }
}
