//! What another table's base chain does to one packet: a small, pure evaluator of nftables rules
//! (as `portmap-netlink` decodes them) over what is known of the packet at that hook — its
//! addresses, ports, interfaces, conntrack state — following jumps, gotos and verdict maps, and
//! looking keys up in the table's sets.
//!
//! Where a rule tests something explain does not know (the source port without `--from`, the
//! packet mark, a rate limit, an expression it does not model), both outcomes are followed, and the
//! chain is reported as one that *may* drop, naming what it depends on. Nothing here reads the
//! kernel: the caller gathers the table ([`TableRules`]) and the packet ([`PacketView`]).

use std::collections::HashMap;
use std::net::IpAddr;

use portmap_netlink::{
    Chain, CmpOp, Data, Element, Expr, Family, MetaKey, PayloadBase, Policy, Register, Rule, Set, Verdict,
    elem_flags, set_flags,
};

/// The most paths through a chain followed before it is called too complex to evaluate.
const MAX_PATHS: usize = 512;
/// The deepest jump followed.
const MAX_DEPTH: usize = 16;
/// Bytes of registers 1–4 (the 32-bit registers overlap them).
const REG_BYTES: usize = 64;

/// `NF_CT_STATE_BIT(IP_CT_NEW)`: the first packet of a connection.
pub const CT_STATE_NEW: u32 = 1 << 3;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`: a packet of a connection that has seen a reply.
pub const CT_STATE_ESTABLISHED: u32 = 1 << 1;
/// `IPS_DST_NAT | IPS_DST_NAT_DONE`: the connection's destination was translated.
pub const CT_STATUS_DNAT: u32 = 0x20 | 0x200;
/// `IPS_SEEN_REPLY | IPS_CONFIRMED`, what a reply's connection has besides its NAT bits.
pub const CT_STATUS_REPLIED: u32 = 0x2 | 0x8;

/// What is known of a packet when a chain sees it. `None` is "not known" (never "absent").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketView {
    /// The transport protocol number (6, 17).
    pub l4proto: u8,
    /// Source address (the packet's family follows from it or from `daddr`).
    pub saddr: Option<IpAddr>,
    /// Destination address.
    pub daddr: Option<IpAddr>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags byte, when the packet is TCP and they are known (a SYN is 0x02).
    pub tcp_flags: Option<u8>,
    /// The interface it arrived on.
    pub iif: Option<(u32, String)>,
    /// The interface it leaves by (after routing).
    pub oif: Option<(u32, String)>,
    /// `ct state` bits, when conntrack has seen the packet.
    pub ct_state: Option<u32>,
    /// `ct status` bits.
    pub ct_status: Option<u32>,
    /// Whether the destination is an address of the router (`fib daddr type local`).
    pub daddr_local: Option<bool>,
    /// Whether the destination is an address of the interface it arrived on (`fib daddr . iif
    /// type local`).
    pub daddr_local_on_iif: Option<bool>,
    /// The interface the router would route the source address through (`fib saddr . iif oif`
    /// compares it with the input interface): its index, or 0 when there is no route.
    pub saddr_oif: Option<u32>,
}

impl PacketView {
    fn is_ipv6(&self) -> Option<bool> {
        self.saddr.or(self.daddr).map(|a| a.is_ipv6())
    }
}

/// One table of another program, with the sets its rules look keys up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: String,
    /// Every chain of the table.
    pub chains: Vec<Chain>,
    /// Every rule of the table, in chain order.
    pub rules: Vec<Rule>,
    /// Sets and maps by name, with their elements (`None` when they were not read: too many).
    pub sets: HashMap<String, (Set, Option<Vec<Element>>)>,
}

impl TableRules {
    /// `inet filter`.
    pub fn display(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }

    /// Whether a chain of this table sees packets of this family at all.
    pub fn sees(&self, packet: &PacketView) -> bool {
        !matches!(
            (self.family, packet.is_ipv6()),
            (Family::Ipv4, Some(true)) | (Family::Ipv6, Some(false))
        )
    }
}

/// What a base chain does to the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It lets the packet through (an accept, or its policy accept), whatever is unknown.
    Passes,
    /// It drops the packet, whatever is unknown: `at` says where (`policy drop`, `rule 3`).
    Drops {
        /// Where: the rule or the policy.
        at: String,
    },
    /// It drops the packet on some of the paths the unknowns allow.
    MayDrop {
        /// Where it would.
        at: String,
        /// What the outcome depends on.
        because: Vec<String>,
    },
    /// Another table's nat chain translates the packet (DNAT), on every path or some.
    Translates {
        /// Where.
        at: String,
        /// Empty when it does so whatever is unknown.
        because: Vec<String>,
    },
}

/// How one path through the chain ended.
#[derive(Debug, Clone)]
enum End {
    Accept,
    Drop(String),
    Nat(String),
    /// Fell off the end of the chain or returned.
    Return,
}

#[derive(Debug, Clone)]
struct Path {
    end: End,
    unknowns: Vec<String>,
}

/// The registers of one rule evaluation: bytes and whether each is known, with a label for what
/// an unknown byte holds.
#[derive(Debug, Clone)]
struct Regs {
    bytes: [u8; REG_BYTES],
    known: [bool; REG_BYTES],
    label: [&'static str; REG_BYTES],
}

impl Regs {
    fn new() -> Self {
        Regs {
            bytes: [0; REG_BYTES],
            known: [false; REG_BYTES],
            label: ["a register no expression loaded"; REG_BYTES],
        }
    }

    fn offset(reg: Register) -> Option<usize> {
        match reg {
            Register::R1 => Some(0),
            Register::R2 => Some(16),
            Register::R3 => Some(32),
            Register::R4 => Some(48),
            Register::R32(n) if n < 16 => Some(usize::from(n) * 4),
            Register::Verdict | Register::R32(_) => None,
        }
    }

    /// Store `value` (known bytes or unknown with `label`) at `reg`, `len` bytes.
    fn store(&mut self, reg: Register, len: usize, value: Option<&[u8]>, label: &'static str) {
        let Some(off) = Self::offset(reg) else { return };
        let end = (off + len).min(REG_BYTES);
        for i in off..end {
            if let Some(v) = value {
                self.bytes[i] = v.get(i - off).copied().unwrap_or(0);
                self.known[i] = true;
            } else {
                self.known[i] = false;
                self.label[i] = label;
            }
        }
    }

    /// `len` bytes at `reg`, or the label of the first unknown one.
    fn load(&self, reg: Register, len: usize) -> Result<Vec<u8>, &'static str> {
        let Some(off) = Self::offset(reg) else {
            return Err("a register explain does not model");
        };
        if off + len > REG_BYTES {
            return Err("a register explain does not model");
        }
        match (off..off + len).find(|&i| !self.known[i]) {
            Some(i) => Err(self.label[i]),
            None => Ok(self.bytes[off..off + len].to_vec()),
        }
    }
}

/// How a rule's expressions ended on one path.
#[derive(Debug, Clone)]
enum RuleEnd {
    /// The rule did not match, or matched without a verdict: go on with the next rule.
    Next,
    Verdict(Verdict),
    Drop,
    Nat,
}

/// What `chain` of `table` (a base chain) does to `packet`.
pub fn fate(table: &TableRules, chain: &Chain, packet: &PacketView) -> Fate {
    let mut budget = MAX_PATHS;
    let Some(paths) = run_chain(table, &chain.name, packet, 0, &mut budget) else {
        return Fate::MayDrop {
            at: "one of its rules".to_owned(),
            because: vec![format!(
                "its rules branch more than {MAX_PATHS} ways on what explain does not know, too many to evaluate"
            )],
        };
    };
    let policy_drop = chain.base.as_ref().is_some_and(|b| b.policy == Policy::Drop);
    let mut drop_at: Option<(String, Vec<String>, bool)> = None;
    let mut nat_at: Option<(String, Vec<String>)> = None;
    for p in &paths {
        let dropped = match &p.end {
            End::Drop(at) => Some(at.clone()),
            End::Return if policy_drop => Some("its policy drop (no rule accepts it)".to_owned()),
            End::Nat(at) => {
                if nat_at.is_none() {
                    nat_at = Some((at.clone(), p.unknowns.clone()));
                }
                None
            }
            End::Accept | End::Return => None,
        };
        if let Some(at) = dropped {
            let certain = p.unknowns.is_empty();
            // Keep a certain drop over an uncertain one.
            if drop_at.as_ref().is_none_or(|(_, _, c)| !c && certain) {
                drop_at = Some((at, p.unknowns.clone(), certain));
            }
        }
    }
    let every_path_drops = paths
        .iter()
        .all(|p| matches!(p.end, End::Drop(_)) || (policy_drop && matches!(p.end, End::Return)));
    if let Some((at, unknowns, _)) = drop_at {
        if every_path_drops {
            return Fate::Drops { at };
        }
        let mut because: Vec<String> = paths.iter().flat_map(|p| p.unknowns.iter().cloned()).collect();
        because.extend(unknowns);
        because.sort();
        because.dedup();
        return Fate::MayDrop { at, because };
    }
    if let Some((at, because)) = nat_at {
        let every = paths.iter().all(|p| matches!(p.end, End::Nat(_)));
        return Fate::Translates {
            at,
            because: if every { Vec::new() } else { because },
        };
    }
    Fate::Passes
}

/// Every path through `chain` (`None`: over budget).
fn run_chain(
    table: &TableRules,
    chain: &str,
    packet: &PacketView,
    depth: usize,
    budget: &mut usize,
) -> Option<Vec<Path>> {
    if depth > MAX_DEPTH {
        return Some(vec![Path {
            end: End::Return,
            unknowns: vec![format!("jumps nested deeper than {MAX_DEPTH} chains")],
        }]);
    }
    let rules: Vec<(usize, &Rule)> = table
        .rules
        .iter()
        .filter(|r| r.chain == chain)
        .enumerate()
        .map(|(i, r)| (i + 1, r))
        .collect();
    // Paths still running, each at a rule index with its unknowns so far.
    let mut running: Vec<(usize, Vec<String>)> = vec![(0, Vec::new())];
    let mut done = Vec::new();
    while let Some((at, unknowns)) = running.pop() {
        let Some(&(number, rule)) = rules.get(at) else {
            done.push(Path {
                end: End::Return,
                unknowns,
            });
            continue;
        };
        let place = |what: &str| {
            let handle = rule.handle.map(|h| format!(", handle {h}")).unwrap_or_default();
            format!("rule {number} of chain {chain}{handle} ({what})")
        };
        let mut ends = Vec::new();
        eval_rule(
            table,
            &rule.exprs,
            0,
            Regs::new(),
            packet,
            unknowns.clone(),
            &mut ends,
            budget,
        )?;
        // Registers do not outlive a rule, so every way of going on to the next rule is the same
        // path: one, and when the rule goes on whatever is unknown, what it tested did not matter.
        let (next, ends): (Vec<_>, Vec<_>) = ends
            .into_iter()
            .partition(|(end, _)| matches!(end, RuleEnd::Next | RuleEnd::Verdict(Verdict::Continue)));
        if ends.is_empty() {
            running.push((at + 1, unknowns));
        } else if !next.is_empty() {
            let merged = next.iter().fold(Vec::new(), |acc, (_, u)| merge(&acc, u));
            running.push((at + 1, merged));
        }
        for (end, unknowns) in ends {
            *budget = budget.checked_sub(1)?;
            match end {
                RuleEnd::Next | RuleEnd::Verdict(Verdict::Continue) => {}
                RuleEnd::Verdict(Verdict::Accept) => done.push(Path {
                    end: End::Accept,
                    unknowns,
                }),
                RuleEnd::Verdict(Verdict::Drop) => done.push(Path {
                    end: End::Drop(place("drop")),
                    unknowns,
                }),
                RuleEnd::Drop => done.push(Path {
                    end: End::Drop(place("reject")),
                    unknowns,
                }),
                RuleEnd::Nat => done.push(Path {
                    end: End::Nat(place("dnat")),
                    unknowns,
                }),
                RuleEnd::Verdict(Verdict::Return) => done.push(Path {
                    end: End::Return,
                    unknowns,
                }),
                RuleEnd::Verdict(Verdict::Jump(target) | Verdict::Goto(target)) if target == chain => {
                    done.push(Path {
                        end: End::Return,
                        unknowns: with(unknowns, format!("chain {chain} jumps to itself")),
                    });
                }
                RuleEnd::Verdict(Verdict::Jump(target)) => {
                    for sub in run_chain(table, &target, packet, depth + 1, budget)? {
                        let merged = merge(&unknowns, &sub.unknowns);
                        match sub.end {
                            End::Return => running.push((at + 1, merged)),
                            end => done.push(Path {
                                end,
                                unknowns: merged,
                            }),
                        }
                    }
                }
                RuleEnd::Verdict(Verdict::Goto(target)) => {
                    for sub in run_chain(table, &target, packet, depth + 1, budget)? {
                        done.push(Path {
                            end: sub.end,
                            unknowns: merge(&unknowns, &sub.unknowns),
                        });
                    }
                }
            }
        }
    }
    Some(done)
}

fn with(mut list: Vec<String>, item: String) -> Vec<String> {
    if !list.contains(&item) {
        list.push(item);
    }
    list
}

fn merge(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// Evaluate `exprs[i..]`, pushing every way the rule can end.
#[allow(clippy::too_many_arguments)]
fn eval_rule(
    table: &TableRules,
    exprs: &[Expr],
    i: usize,
    mut regs: Regs,
    packet: &PacketView,
    unknowns: Vec<String>,
    ends: &mut Vec<(RuleEnd, Vec<String>)>,
    budget: &mut usize,
) -> Option<()> {
    // Follow both ways of an unknown condition: it matches (go on) or it does not (next rule).
    macro_rules! fork {
        ($why:expr) => {{
            *budget = budget.checked_sub(1)?;
            let why: String = $why;
            ends.push((RuleEnd::Next, with(unknowns.clone(), why.clone())));
            return eval_rule(
                table,
                exprs,
                i + 1,
                regs,
                packet,
                with(unknowns, why),
                ends,
                budget,
            );
        }};
    }
    let Some(expr) = exprs.get(i) else {
        ends.push((RuleEnd::Next, unknowns));
        return Some(());
    };
    match expr {
        Expr::Meta { key, dreg } => {
            let (value, label) = meta(*key, packet);
            regs.store(
                *dreg,
                value.as_ref().map_or(16, Vec::len),
                value.as_deref(),
                label,
            );
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let len = *len as usize;
            let value = payload(*base, *offset as usize, len, packet);
            regs.store(
                *dreg,
                len,
                value.as_deref(),
                payload_label(*base, *offset, packet),
            );
        }
        Expr::Ct { key, dreg, direction } => {
            let value = match (key, direction) {
                (0, None) => packet.ct_state.map(|s| s.to_ne_bytes().to_vec()),
                (1, None) => packet.ct_state.map(|_| vec![0, 0, 0, 0]), // original direction
                (2, None) => packet.ct_status.map(|s| s.to_ne_bytes().to_vec()),
                _ => None,
            };
            let label = match key {
                0 => "the conntrack state",
                2 => "the conntrack status",
                3 => "the conntrack mark",
                _ => "a conntrack field explain does not model",
            };
            regs.store(
                *dreg,
                value.as_ref().map_or(16, Vec::len),
                value.as_deref(),
                label,
            );
        }
        Expr::Bitwise {
            sreg,
            dreg,
            len,
            mask,
            xor,
        } => {
            // The kernel keeps it within the registers; so does this, whatever the dump says.
            let len = (*len as usize).min(REG_BYTES);
            let Some(src) = Regs::offset(*sreg) else {
                fork!("a register explain does not model".to_owned())
            };
            let mut out = Vec::with_capacity(len);
            let mut unknown = None;
            for k in 0..len {
                let m = mask.get(k).copied().unwrap_or(0);
                let x = xor.get(k).copied().unwrap_or(0);
                let at = src + k;
                if m == 0 {
                    out.push(x);
                } else if at < REG_BYTES && regs.known[at] {
                    out.push((regs.bytes[at] & m) ^ x);
                } else {
                    unknown = Some(if at < REG_BYTES {
                        regs.label[at]
                    } else {
                        "a register explain does not model"
                    });
                    break;
                }
            }
            match unknown {
                None => regs.store(*dreg, len, Some(&out), ""),
                Some(label) => regs.store(*dreg, len, None, label),
            }
        }
        Expr::Cmp { sreg, op, data } => match regs.load(*sreg, data.len()) {
            Ok(value) => {
                if !compare(*op, &value, data) {
                    ends.push((RuleEnd::Next, unknowns));
                    return Some(());
                }
            }
            Err(label) => fork!(format!("it tests {label}")),
        },
        Expr::Lookup {
            sreg,
            dreg,
            set,
            invert,
            ..
        } => {
            let Some((s, elements)) = table.sets.get(set) else {
                fork!(format!("set {set}, which could not be read"))
            };
            let Some(elements) = elements else {
                fork!(format!("set {set}, too large to read"))
            };
            let key = match regs.load(*sreg, s.key_len as usize) {
                Ok(k) => k,
                Err(label) if *dreg == Some(Register::Verdict) => {
                    // A verdict map on an unknown key: any of its verdicts, or none.
                    let why = format!("it looks {label} up in verdict map {set}");
                    let mut verdicts: Vec<&Verdict> = elements
                        .iter()
                        .filter_map(|e| match &e.data {
                            Some(Data::Verdict(v)) => Some(v),
                            _ => None,
                        })
                        .collect();
                    verdicts.sort_by_key(|v| format!("{v:?}"));
                    verdicts.dedup();
                    for v in verdicts {
                        *budget = budget.checked_sub(1)?;
                        ends.push((RuleEnd::Verdict(v.clone()), with(unknowns.clone(), why.clone())));
                    }
                    ends.push((RuleEnd::Next, with(unknowns, why)));
                    return Some(());
                }
                Err(label) => fork!(format!("it looks {label} up in set {set}")),
            };
            let found = find(s, elements, &key);
            match dreg {
                None => {
                    if found.is_some() == *invert {
                        ends.push((RuleEnd::Next, unknowns));
                        return Some(());
                    }
                }
                Some(Register::Verdict) => {
                    // The element's verdict; a key the map does not hold ends the rule.
                    let end = if let Some(Data::Verdict(v)) = found.and_then(|e| e.data.as_ref()) {
                        RuleEnd::Verdict(v.clone())
                    } else {
                        RuleEnd::Next
                    };
                    ends.push((end, unknowns));
                    return Some(());
                }
                Some(reg) => {
                    if let Some(Data::Value(v)) = found.and_then(|e| e.data.as_ref()) {
                        regs.store(*reg, v.len(), Some(v), "");
                    } else {
                        ends.push((RuleEnd::Next, unknowns));
                        return Some(());
                    }
                }
            }
        }
        Expr::Immediate { dreg, data } => match data {
            Data::Verdict(v) => {
                ends.push((RuleEnd::Verdict(v.clone()), unknowns));
                return Some(());
            }
            Data::Value(v) => regs.store(*dreg, v.len(), Some(v), ""),
            Data::Object(_) => {}
        },
        Expr::Nat { .. } => {
            ends.push((RuleEnd::Nat, unknowns));
            return Some(());
        }
        Expr::Fib { flags, result, dreg } => {
            let value = fib(*flags, *result, packet);
            regs.store(*dreg, 4, value.as_ref().map(|v| &v[..]), "a routing (fib) lookup");
        }
        Expr::Objref { set, .. } => fork!(format!("a stateful object (limit or quota) through map {set}")),
        Expr::Counter { .. } | Expr::Log { .. } | Expr::Masq { .. } => {}
        Expr::Unknown { name } => match name.as_str() {
            // Statements that never stop a rule nor decide its verdict.
            // (`meta`, `ct` and `payload` decode as unknown only in their "set" form.)
            "counter" | "log" | "notrack" | "meta" | "ct" | "payload" | "dynset" => {}
            "reject" => {
                ends.push((RuleEnd::Drop, unknowns));
                return Some(());
            }
            "target" => {
                // An iptables-nft target: DROP and REJECT among them.
                *budget = budget.checked_sub(1)?;
                let why =
                    "an iptables target (through iptables-nft), which explain does not evaluate".to_owned();
                ends.push((RuleEnd::Next, with(unknowns.clone(), why.clone())));
                ends.push((RuleEnd::Drop, with(unknowns, why)));
                return Some(());
            }
            "limit" | "quota" | "connlimit" => fork!(format!("a `{name}`, which depends on the traffic")),
            "match" => {
                fork!("an iptables match (through iptables-nft), which explain does not evaluate".to_owned())
            }
            other => fork!(format!(
                "the `{other}` expression, which explain does not evaluate"
            )),
        },
        #[allow(unreachable_patterns)]
        _ => fork!("an expression explain does not evaluate".to_owned()),
    }
    eval_rule(table, exprs, i + 1, regs, packet, unknowns, ends, budget)
}

/// Whether `cmp op` holds (the kernel compares bytes with `memcmp`).
fn compare(op: CmpOp, value: &[u8], data: &[u8]) -> bool {
    let order = value.cmp(data);
    match op {
        CmpOp::Eq => order.is_eq(),
        CmpOp::Neq => order.is_ne(),
        CmpOp::Lt => order.is_lt(),
        CmpOp::Lte => order.is_le(),
        CmpOp::Gt => order.is_gt(),
        CmpOp::Gte => order.is_ge(),
    }
}

/// The element of `set` that holds `key`: an exact match, or for an interval set the range it is in.
fn find<'e>(set: &Set, elements: &'e [Element], key: &[u8]) -> Option<&'e Element> {
    if set.flags & set_flags::INTERVAL == 0 {
        return elements.iter().find(|e| e.key == key);
    }
    if let Some(e) = elements.iter().find(|e| {
        e.key_end
            .as_ref()
            .is_some_and(|end| e.key.as_slice() <= key && key <= end.as_slice())
    }) {
        return Some(e);
    }
    // rbtree intervals: the greatest boundary at or below the key decides; an end element at the
    // same key as a start comes first.
    let mut best: Option<&Element> = None;
    for e in elements
        .iter()
        .filter(|e| e.key_end.is_none() && e.key.as_slice() <= key)
    {
        let better = match best {
            None => true,
            Some(b) => e.key > b.key || (e.key == b.key && e.flags & elem_flags::INTERVAL_END == 0),
        };
        if better {
            best = Some(e);
        }
    }
    best.filter(|e| e.flags & elem_flags::INTERVAL_END == 0)
}

fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(16, 0);
    b
}

/// A meta key's value (with the length the kernel stores), or what it is for an unknown one.
fn meta(key: MetaKey, p: &PacketView) -> (Option<Vec<u8>>, &'static str) {
    let byte = |v: u8| vec![v, 0, 0, 0];
    match key {
        MetaKey::L4Proto => (Some(byte(p.l4proto)), "the transport protocol"),
        MetaKey::NfProto => (
            p.is_ipv6().map(|v6| byte(if v6 { 10 } else { 2 })),
            "the address family",
        ),
        MetaKey::IifName => (
            p.iif.as_ref().map(|(_, n)| ifname_bytes(n)),
            "the input interface (not known: give --from)",
        ),
        MetaKey::OifName => (
            p.oif.as_ref().map(|(_, n)| ifname_bytes(n)),
            "the output interface",
        ),
        MetaKey::Other(4) => (
            p.iif.as_ref().map(|(i, _)| i.to_ne_bytes().to_vec()),
            "the input interface (not known: give --from)",
        ),
        MetaKey::Other(5) => (
            p.oif.as_ref().map(|(i, _)| i.to_ne_bytes().to_vec()),
            "the output interface",
        ),
        // NFT_META_PROTOCOL: the ethertype, big-endian.
        MetaKey::Other(2) => (
            p.is_ipv6().map(|v6| {
                if v6 {
                    vec![0x86, 0xdd, 0, 0]
                } else {
                    vec![0x08, 0x00, 0, 0]
                }
            }),
            "the address family",
        ),
        // NFT_META_PKTTYPE: PACKET_HOST for a packet addressed to the router's link address.
        MetaKey::Other(19) => (Some(byte(0)), ""),
        MetaKey::Other(3) => (None, "the packet mark"),
        MetaKey::Other(_) => (None, "a packet property explain does not model"),
    }
}

/// The network header as far as it is known: (bytes, known).
fn network_header(p: &PacketView) -> Option<(Vec<u8>, Vec<bool>)> {
    let v6 = p.is_ipv6()?;
    let (len, proto_at, src_at, dst_at) = if v6 { (40, 6, 8, 24) } else { (20, 9, 12, 16) };
    let mut bytes = vec![0u8; len];
    let mut known = vec![false; len];
    bytes[proto_at] = p.l4proto;
    known[proto_at] = true;
    for (at, addr) in [(src_at, p.saddr), (dst_at, p.daddr)] {
        if let Some(a) = addr {
            let octets = match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            bytes[at..at + octets.len()].copy_from_slice(&octets);
            known[at..at + octets.len()].fill(true);
        }
    }
    Some((bytes, known))
}

fn transport_header(p: &PacketView) -> (Vec<u8>, Vec<bool>) {
    let mut bytes = vec![0u8; 20];
    let mut known = vec![false; 20];
    for (at, port) in [(0, p.sport), (2, p.dport)] {
        if let Some(port) = port {
            bytes[at..at + 2].copy_from_slice(&port.to_be_bytes());
            known[at..at + 2].fill(true);
        }
    }
    if p.l4proto == 6
        && let Some(flags) = p.tcp_flags
    {
        bytes[13] = flags;
        known[13] = true;
    }
    (bytes, known)
}

fn payload(base: PayloadBase, offset: usize, len: usize, p: &PacketView) -> Option<Vec<u8>> {
    let (bytes, known) = match base {
        PayloadBase::Network => network_header(p)?,
        PayloadBase::Transport => transport_header(p),
        PayloadBase::LinkLayer | PayloadBase::Inner => return None,
    };
    let end = offset.checked_add(len)?;
    (end <= bytes.len() && known[offset..end].iter().all(|k| *k)).then(|| bytes[offset..end].to_vec())
}

fn payload_label(base: PayloadBase, offset: u32, p: &PacketView) -> &'static str {
    let v6 = p.is_ipv6().unwrap_or(false);
    match (base, offset, v6) {
        (PayloadBase::Network, 12..=15, false) | (PayloadBase::Network, 8..=23, true) => {
            "the source address (not known: give --from)"
        }
        (PayloadBase::Network, 16..=19, false) | (PayloadBase::Network, 24..=39, true) => {
            "the destination address (not known: give --to)"
        }
        (PayloadBase::Transport, 0..=1, _) => "the source port",
        (PayloadBase::Transport, _, _) => "a transport header field explain does not model",
        (PayloadBase::Network, _, _) => "a network header field explain does not model",
        _ => "a link-layer header field",
    }
}

/// `NFTA_FIB_*` flags and results.
const FIB_SADDR: u32 = 1;
const FIB_DADDR: u32 = 2;
const FIB_IIF: u32 = 8;
const FIB_PRESENT: u32 = 32;
const FIB_RESULT_OIF: u32 = 1;
const FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_UNICAST`, `RTN_LOCAL`.
const RTN_UNICAST: u32 = 1;
const RTN_LOCAL: u32 = 2;

/// The result of the fib lookups explain can answer from what it knows.
fn fib(flags: u32, result: u32, p: &PacketView) -> Option<[u8; 4]> {
    let value = match (flags & !FIB_PRESENT, result) {
        (FIB_DADDR, FIB_RESULT_ADDRTYPE) => {
            if p.daddr_local? {
                RTN_LOCAL
            } else {
                RTN_UNICAST
            }
        }
        (f, FIB_RESULT_ADDRTYPE) if f == FIB_DADDR | FIB_IIF => {
            if p.daddr_local_on_iif? {
                RTN_LOCAL
            } else {
                RTN_UNICAST
            }
        }
        // Reverse path: which interface the source is routed through, when it is the input one.
        (f, FIB_RESULT_OIF) if f == FIB_SADDR | FIB_IIF => {
            let (iif, _) = p.iif.as_ref()?;
            let index = if p.saddr_oif? == *iif { *iif } else { 0 };
            if flags & FIB_PRESENT != 0 {
                u32::from(index != 0)
            } else {
                index
            }
        }
        _ => return None,
    };
    if flags & FIB_PRESENT != 0 && result == FIB_RESULT_OIF {
        // nft_reg_store8: one byte, the rest of the 32-bit register zero.
        return Some([u8::from(value != 0), 0, 0, 0]);
    }
    Some(value.to_ne_bytes())
}
