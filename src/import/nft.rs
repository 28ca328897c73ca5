//! Native nftables rules → [`Found`]. Pure: it reads tables already dumped over netlink (with
//! `portmap-netlink`, whose decoder gives each rule's expressions as typed values) and never talks
//! to the kernel.
//!
//! A rule is read the way the kernel runs it: expressions load registers (`meta`, `payload`,
//! `immediate`, a map `lookup`), compare them (`cmp`, a set `lookup`) and end in a verdict or a
//! `nat`. Every register load is tracked by the 32-bit slots it fills, so concatenations
//! (`meta l4proto . th dport map @m`) and map results (`… : 192.168.1.10 . 80`, address and port
//! in consecutive slots) are read by position, as the kernel lays them out. The shapes taken
//! over: `[iifname X] [ip saddr S|@set] [fib daddr type local] tcp|udp dport P|A-B|{set}
//! dnat [ip|ip6] to ADDR[:PORT]`, `meta l4proto {tcp, udp} th dport …`, and the map forms
//! `dnat ip to tcp dport map { … }` and `dnat to meta l4proto . th dport map @m`, in chains
//! hooked at nat prerouting and the chains they jump or go to. Anything else that touches the
//! packet's fate (ct, mark, a destination address, a rate limit, numgen, several target
//! addresses, …) makes the rule [`NotTaken`](super::NotTaken), with the reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use portmap_core::{PortRange, Transport};
use portmap_netlink::interval;
use portmap_netlink::{
    Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, PayloadBase, Register, Rule, Set,
    Table, Verdict, set_flags, udata,
};

use super::{Candidate, Found};

/// The comment of portmap's own table (its marker).
pub const PORTMAP_MARKER: &str = "managed by portmap";
/// How deep jumps are followed.
const MAX_JUMP_DEPTH: usize = 16;
/// Most forwards one rule may make (a map of every port, twice for tcp and udp, in two families).
const MAX_CANDIDATES_PER_RULE: usize = 65_536 * 2;

/// One table as dumped: the table, its chains, its rules and its sets with their elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    /// The table.
    pub table: Table,
    /// Its chains.
    pub chains: Vec<Chain>,
    /// Its rules, in chain order.
    pub rules: Vec<Rule>,
    /// Its sets and maps, each with its elements.
    pub sets: Vec<(Set, Vec<Element>)>,
}

/// How a table was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A table of native nft rules: read.
    Native,
    /// portmap's own table (its marker comment): skipped.
    Portmap,
    /// A table of `iptables-nft` (its rules hold `x_tables` `match`/`target` expressions): read
    /// through `iptables-nft-save` instead.
    IptablesNft,
}

/// What a table is.
pub fn classify(t: &NftTable) -> TableKind {
    let comment = t.table.userdata.as_deref().and_then(udata::parse_comment);
    if comment.as_deref() == Some(PORTMAP_MARKER) {
        return TableKind::Portmap;
    }
    let xt = t.rules.iter().any(|r| {
        r.exprs
            .iter()
            .any(|e| matches!(e, Expr::Unknown { name } if name == "match" || name == "target"))
    });
    if xt {
        TableKind::IptablesNft
    } else {
        TableKind::Native
    }
}

/// The name nft prints for a table: `ip nat`.
pub fn table_name(t: &Table) -> String {
    format!("{} {}", t.family.as_str(), t.name)
}

/// Read the DNAT forwards of native tables (portmap's and iptables-nft's are skipped, and said so
/// in [`Found::read`]).
pub fn decode(tables: &[NftTable]) -> Found {
    let mut found = Found::default();
    let mut read = Vec::new();
    let mut skipped = Vec::new();
    for t in tables {
        match classify(t) {
            TableKind::Portmap => skipped.push(format!("{} (portmap's own)", table_name(&t.table))),
            TableKind::IptablesNft => skipped.push(format!(
                "{} (iptables-nft's; read with iptables-nft-save)",
                table_name(&t.table)
            )),
            TableKind::Native => {
                read.push(table_name(&t.table));
                decode_table(t, &mut found);
            }
        }
    }
    let mut line = if read.is_empty() {
        "nft: no native table".to_owned()
    } else {
        format!("nft: table {}", read.join(", table "))
    };
    if !skipped.is_empty() {
        let _ = write!(line, "; skipped table {}", skipped.join(", table "));
    }
    found.read.push(line);
    found
}

fn decode_table(t: &NftTable, found: &mut Found) {
    let sets: HashMap<&str, &(Set, Vec<Element>)> = t.sets.iter().map(|s| (s.0.name.as_str(), s)).collect();
    let ctx = TableCtx { t, sets };
    for chain in &t.chains {
        let Some(base) = &chain.base else { continue };
        if base.chain_type != "nat" {
            continue;
        }
        match base.hook {
            Hook::Prerouting => {
                let mut stack = vec![chain.name.clone()];
                ctx.walk(&chain.name, &Cond::default(), &mut stack, None, found);
            }
            Hook::Postrouting | Hook::Output | Hook::Input => {
                let hook = match base.hook {
                    Hook::Postrouting => "postrouting",
                    Hook::Output => "output",
                    _ => "input",
                };
                for rule in ctx.rules_of(&chain.name) {
                    let nat = rule.exprs.iter().find_map(|e| match e {
                        Expr::Nat { nat_type, .. } => Some(*nat_type),
                        Expr::Masq { .. } => Some(NatType::Snat),
                        _ => None,
                    });
                    let origin = ctx.origin(rule, None);
                    match nat {
                        Some(NatType::Snat) => found.skip(
                            &origin,
                            format!("source NAT in nat {hook} (snat/masquerade): portmap does not import it; `masquerade: true` covers LAN → WAN masquerade, hairpin the reflected flows"),
                        ),
                        Some(NatType::Dnat) => found.skip(
                            &origin,
                            format!("DNAT in nat {hook} (the router's own traffic): portmap forwards what arrives from outside; with `hairpin: true` the router reaches its mappings too"),
                        ),
                        None => {}
                    }
                }
            }
            _ => {}
        }
    }
}

struct TableCtx<'a> {
    t: &'a NftTable,
    sets: HashMap<&'a str, &'a (Set, Vec<Element>)>,
}

impl TableCtx<'_> {
    fn rules_of<'r>(&'r self, chain: &'r str) -> impl Iterator<Item = &'r Rule> + 'r {
        self.t.rules.iter().filter(move |r| r.chain == chain)
    }

    fn origin(&self, rule: &Rule, from: Option<&str>) -> String {
        let mut s = format!("nft table {} chain {}", table_name(&self.t.table), rule.chain);
        if let Some(h) = rule.handle {
            let _ = write!(s, " handle {h}");
        }
        if let Some(from) = from {
            let _ = write!(s, " (jumped to from {from})");
        }
        s
    }

    fn walk(
        &self,
        chain: &str,
        inherited: &Cond,
        stack: &mut Vec<String>,
        from: Option<&str>,
        found: &mut Found,
    ) {
        for rule in self.rules_of(chain) {
            let origin = self.origin(rule, from);
            match self.rule(rule, inherited) {
                Ok(Outcome::Nothing) => {}
                Ok(Outcome::Forwards(list)) => found.candidates.extend(list.into_iter().map(|f| Candidate {
                    origin: origin.clone(),
                    comment: rule.userdata.as_deref().and_then(udata::parse_comment),
                    iif: f.iif,
                    transport: f.transport,
                    ports: f.ports,
                    to: f.to,
                    to_port: f.to_port,
                    sources: f.sources,
                    listen: f.listen,
                })),
                Ok(Outcome::Jump(target, cond)) => {
                    if stack.contains(&target) {
                        found.skip(
                            &origin,
                            format!("jumps to chain {target}, which is already being followed (a loop)"),
                        );
                    } else if stack.len() >= MAX_JUMP_DEPTH {
                        found.skip(
                            &origin,
                            format!("jumps to chain {target}, deeper than {MAX_JUMP_DEPTH} chains"),
                        );
                    } else if !self.t.chains.iter().any(|c| c.name == target) {
                        found.skip(&origin, format!("jumps to chain {target}, which does not exist"));
                    } else {
                        stack.push(target.clone());
                        self.walk(&target, &cond, stack, Some(chain), found);
                        stack.pop();
                    }
                }
                Err(reason) => found.skip(&origin, reason),
            }
        }
    }

    /// One rule under the conditions of the rules that jumped to its chain.
    fn rule(&self, rule: &Rule, inherited: &Cond) -> Result<Outcome, String> {
        let mut st = State {
            family: self.t.table.family,
            cond: inherited.clone(),
            regs: BTreeMap::new(),
            ctx: self,
        };
        for e in &rule.exprs {
            match e {
                Expr::Nat {
                    nat_type: NatType::Dnat,
                    ..
                } => {
                    if st.cond.never {
                        return Ok(Outcome::Nothing);
                    }
                    return st.dnat(e).map(Outcome::Forwards);
                }
                Expr::Immediate {
                    dreg: Register::Verdict,
                    data: Data::Verdict(v),
                } => {
                    return Ok(match v {
                        Verdict::Jump(c) | Verdict::Goto(c) if !st.cond.never => {
                            Outcome::Jump(c.clone(), st.cond)
                        }
                        _ => Outcome::Nothing,
                    });
                }
                other => {
                    if let Err(reason) = st.step(other) {
                        // Only a rule that would change a destination (or jump to where one is)
                        // is worth a word; other rules of the chain are someone else's business.
                        return if rule_translates(rule) {
                            Err(reason)
                        } else {
                            Ok(Outcome::Nothing)
                        };
                    }
                }
            }
        }
        Ok(Outcome::Nothing)
    }
}

/// Whether a rule ends in a DNAT, a jump, or a NAT portmap would have to mention.
fn rule_translates(rule: &Rule) -> bool {
    rule.exprs.iter().any(|e| match e {
        Expr::Nat {
            nat_type: NatType::Dnat,
            ..
        }
        | Expr::Immediate {
            data: Data::Verdict(Verdict::Jump(_) | Verdict::Goto(_)),
            ..
        } => true,
        Expr::Unknown { name } => name == "redir",
        _ => false,
    })
}

enum Outcome {
    Nothing,
    Forwards(Vec<Forward>),
    Jump(String, Cond),
}

pub(super) struct Forward {
    pub(super) iif: Option<String>,
    pub(super) transport: Transport,
    pub(super) ports: PortRange,
    pub(super) to: IpAddr,
    pub(super) to_port: u16,
    pub(super) sources: Vec<IpNet>,
    /// The one destination address the rule matches (a `listen` address), if any.
    pub(super) listen: Option<IpAddr>,
}

/// What the rule (and the rules that jumped to it) require of a packet.
#[derive(Debug, Clone, Default)]
pub(super) struct Cond {
    pub(super) nfproto: Option<u8>,
    pub(super) transports: Option<Vec<Transport>>,
    pub(super) dports: Option<Vec<(u16, u16)>>,
    pub(super) sources: Option<Vec<IpNet>>,
    pub(super) iif: Option<Vec<String>>,
    /// The one destination address required (`ip daddr ADDR`, `-d ADDR/32`).
    pub(super) listen: Option<IpAddr>,
    /// A packet can never match (e.g. two different input interfaces required).
    pub(super) never: bool,
}

impl Cond {
    pub(super) fn require_transports(&mut self, list: Vec<Transport>) {
        self.transports = Some(match self.transports.take() {
            None => list,
            Some(had) => had.into_iter().filter(|t| list.contains(t)).collect(),
        });
        if self.transports.as_ref().is_some_and(Vec::is_empty) {
            self.never = true;
        }
    }

    pub(super) fn require_ports(&mut self, list: Vec<(u16, u16)>) {
        self.dports = Some(match self.dports.take() {
            None => list,
            Some(had) => {
                let mut out = Vec::new();
                for (a, b) in &had {
                    for (c, d) in &list {
                        let (lo, hi) = ((*a).max(*c), (*b).min(*d));
                        if lo <= hi {
                            out.push((lo, hi));
                        }
                    }
                }
                out
            }
        });
        if self.dports.as_ref().is_some_and(Vec::is_empty) {
            self.never = true;
        }
    }

    pub(super) fn require_iif(&mut self, list: Vec<String>) {
        self.iif = Some(match self.iif.take() {
            None => list,
            Some(had) => had.into_iter().filter(|i| list.contains(i)).collect(),
        });
        if self.iif.as_ref().is_some_and(Vec::is_empty) {
            self.never = true;
        }
    }

    /// Require one destination address: a mapping's `listen` address. Only a single host address
    /// is a listen address; a prefix or a second, different one is not taken over.
    pub(super) fn require_listen(&mut self, net: IpNet) -> Result<(), String> {
        if net.prefix_len() != net.max_prefix_len() {
            return Err(format!(
                "matches the destination prefix {net}: portmap's listen addresses are single addresses of the router"
            ));
        }
        match self.listen {
            Some(had) if had != net.addr() => self.never = true,
            _ => self.listen = Some(net.addr()),
        }
        Ok(())
    }

    pub(super) fn require_sources(&mut self, list: Vec<IpNet>) -> Result<(), String> {
        if self.sources.is_some() {
            return Err(
                "matches source addresses twice (in this rule and in a rule that jumps to its chain)"
                    .to_owned(),
            );
        }
        self.sources = Some(list);
        Ok(())
    }
}

/// What a register slot holds.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Meta(MetaKey),
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    Masked {
        offset: u32,
        len: u32,
        mask: Vec<u8>,
    },
    Imm(Vec<u8>),
    /// The data of a map lookup: the map and the fields of its key.
    MapOut {
        set: String,
        key: Vec<Field>,
    },
    FibDaddrType,
}

/// A field of a set or map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    L4Proto,
    Dport,
    /// A source address of this many bytes (a prefix when shorter than the address).
    Saddr(u32),
    IifName,
}

/// The 32-bit slot a register starts at.
fn slot(r: Register) -> u8 {
    match r {
        Register::R1 | Register::Verdict => 0,
        Register::R2 => 4,
        Register::R3 => 8,
        Register::R4 => 12,
        Register::R32(n) => n,
    }
}

fn slots_for(len: u32) -> u8 {
    len.div_ceil(4).max(1) as u8
}

struct State<'a> {
    family: Family,
    cond: Cond,
    regs: BTreeMap<u8, (Val, u32)>,
    ctx: &'a TableCtx<'a>,
}

fn meta_name(key: MetaKey) -> String {
    match key {
        MetaKey::OifName => "meta oifname (the output interface)".to_owned(),
        MetaKey::Other(3) => "meta mark".to_owned(),
        MetaKey::Other(4) => "meta iif (an interface index; iifname is the name portmap reads)".to_owned(),
        MetaKey::Other(5) => "meta oif".to_owned(),
        MetaKey::Other(1) => "meta protocol".to_owned(),
        MetaKey::Other(8) => "meta iiftype".to_owned(),
        MetaKey::Other(n) => format!("meta key {n}"),
        MetaKey::L4Proto => "meta l4proto".to_owned(),
        MetaKey::NfProto => "meta nfproto".to_owned(),
        MetaKey::IifName => "meta iifname".to_owned(),
    }
}

fn ct_name(key: u32) -> &'static str {
    match key {
        0 => "ct state",
        1 => "ct direction",
        2 => "ct status",
        3 => "ct mark",
        _ => "a conntrack key (ct …)",
    }
}

/// `iifname` bytes: the name, or `None` for a wildcard (`eth*` sends the prefix without its NUL).
fn ifname(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

fn be16(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
}

fn addr(bytes: &[u8], v6: bool) -> Option<IpAddr> {
    if v6 {
        let b: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    }
}

/// A prefix from the first bytes of an address (and a mask over them).
fn prefix(bytes: &[u8], mask: Option<&[u8]>, v6: bool) -> Option<IpNet> {
    let full = if v6 { 16 } else { 4 };
    if bytes.len() > full {
        return None;
    }
    let mut padded = bytes.to_vec();
    padded.resize(full, 0);
    let bits = match mask {
        None => bytes.len() as u32 * 8,
        Some(m) => {
            let ones: u32 = m.iter().map(|b| b.count_ones()).sum();
            // A mask must be contiguous ones from the left.
            let leading: u32 = m
                .iter()
                .scan(true, |go, b| {
                    if !*go {
                        return Some(0);
                    }
                    if *b != 0xff {
                        *go = false;
                    }
                    Some(b.leading_ones())
                })
                .sum();
            if ones != leading {
                return None;
            }
            ones
        }
    };
    let a = addr(&padded, v6)?;
    IpNet::new(a, bits as u8).ok().map(|n| n.trunc())
}

impl State<'_> {
    /// The value that fills slot `s`, with the slot it starts at.
    fn at(&self, s: u8) -> Option<(u8, &Val)> {
        self.regs
            .range(..=s)
            .next_back()
            .filter(|(k, (_, l))| s < **k + slots_for(*l))
            .map(|(k, (v, _))| (*k, v))
    }

    fn load(&mut self, r: Register, v: Val, len: u32) {
        let s = slot(r);
        let n = slots_for(len);
        self.regs
            .retain(|k, (_, l)| *k + slots_for(*l) <= s || *k >= s + n);
        self.regs.insert(s, (v, len));
    }

    fn v6(&self) -> Result<bool, String> {
        match self.family {
            Family::Ipv4 => Ok(false),
            Family::Ipv6 => Ok(true),
            Family::Inet => match self.cond.nfproto {
                Some(2) => Ok(false),
                Some(10) => Ok(true),
                _ => Err("reads an address without saying its family (meta nfproto)".to_owned()),
            },
        }
    }

    /// The fields of a set key starting at `r` over `len` bytes.
    #[allow(clippy::many_single_char_names)] // registers, slots and lengths, as nft names them
    fn key_fields(&self, r: Register, len: u32) -> Result<Vec<Field>, String> {
        let mut out = Vec::new();
        let mut s = slot(r);
        let end = s + slots_for(len);
        while s < end {
            let Some((v, l)) = self.regs.get(&s) else {
                return Err("looks up a set with a key portmap cannot follow".to_owned());
            };
            let field = match v {
                Val::Meta(MetaKey::L4Proto) => Field::L4Proto,
                Val::Meta(MetaKey::IifName) => Field::IifName,
                Val::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                } => Field::Dport,
                Val::Payload {
                    base: PayloadBase::Network,
                    offset,
                    len,
                } if self.is_saddr(*offset, *len)? => Field::Saddr(*len),
                Val::Payload {
                    base: PayloadBase::Network,
                    offset,
                    ..
                } if self.is_daddr(*offset)? => {
                    return Err(daddr_reason());
                }
                Val::Meta(k) => return Err(format!("looks up {} in a set", meta_name(*k))),
                _ => return Err("looks up a set keyed on something portmap cannot express".to_owned()),
            };
            out.push(field);
            s += slots_for(*l);
        }
        Ok(out)
    }

    fn is_saddr(&self, offset: u32, len: u32) -> Result<bool, String> {
        Ok(if self.v6()? {
            offset == 8 && len <= 16
        } else {
            offset == 12 && len <= 4
        })
    }

    fn is_daddr(&self, offset: u32) -> Result<bool, String> {
        Ok(if self.v6()? { offset == 24 } else { offset == 16 })
    }

    fn set(&self, name: &str) -> Result<&(Set, Vec<Element>), String> {
        self.ctx
            .sets
            .get(name)
            .copied()
            .ok_or_else(|| format!("looks up set {name}, which was not found"))
    }

    fn step(&mut self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Meta { key, dreg } => {
                let len = if *key == MetaKey::IifName || *key == MetaKey::OifName {
                    16
                } else {
                    4
                };
                self.load(*dreg, Val::Meta(*key), len);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => self.load(
                *dreg,
                Val::Payload {
                    base: *base,
                    offset: *offset,
                    len: *len,
                },
                *len,
            ),
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => {
                let Some((
                    Val::Payload {
                        base: PayloadBase::Network,
                        offset,
                        ..
                    },
                    _,
                )) = self.regs.get(&slot(*sreg)).cloned()
                else {
                    return Err("masks a value portmap cannot express (bitwise)".to_owned());
                };
                if xor.iter().any(|b| *b != 0) {
                    return Err("masks an address with an xor (bitwise)".to_owned());
                }
                self.load(
                    *dreg,
                    Val::Masked {
                        offset,
                        len: *len,
                        mask: mask.clone(),
                    },
                    *len,
                );
            }
            Expr::Immediate {
                dreg,
                data: Data::Value(v),
            } => {
                let len = v.len() as u32;
                self.load(*dreg, Val::Imm(v.clone()), len);
            }
            Expr::Fib { flags, result, dreg } => {
                if *flags == 2 && *result == 3 {
                    self.load(*dreg, Val::FibDaddrType, 4);
                } else {
                    return Err("matches a routing lookup (fib) other than `fib daddr type local`".to_owned());
                }
            }
            Expr::Ct { key, .. } => {
                return Err(format!("matches {}, which portmap cannot express", ct_name(*key)));
            }
            Expr::Cmp { sreg, op, data } => self.cmp(*sreg, *op, data)?,
            Expr::Lookup {
                sreg,
                dreg,
                set,
                invert,
                ..
            } => self.lookup(*sreg, *dreg, set, *invert)?,
            Expr::Counter { .. } | Expr::Immediate { .. } | Expr::Log { .. } => {}
            // A named counter is harmless, but a named quota or limit changes who gets through,
            // and the reference alone does not say which.
            Expr::Objref { set, .. } => {
                return Err(format!(
                    "uses stateful objects through map {set} (a named counter, quota or limit), which portmap cannot take over"
                ));
            }
            Expr::Unknown { name } if name == "log" || name == "counter" || name == "notrack" => {}
            Expr::Unknown { name } => {
                return Err(match name.as_str() {
                    "limit" => "has a rate limit (limit), which portmap cannot express".to_owned(),
                    "quota" => "has a quota, which portmap cannot express".to_owned(),
                    "numgen" | "hash" => {
                        format!("picks the target by {name} (load balancing), which portmap cannot express")
                    }
                    "redir" => "redirects to the router itself (redirect), not to another host".to_owned(),
                    "range" => "matches a range with != (range), which portmap cannot express".to_owned(),
                    "socket" | "osf" | "xfrm" | "rt" | "exthdr" | "tcpopt" => {
                        format!("matches with `{name}`, which portmap cannot express")
                    }
                    other => format!("uses the nft expression `{other}`, which portmap cannot express"),
                });
            }
            Expr::Masq { .. } => return Err("masquerades (source NAT)".to_owned()),
            Expr::Nat { .. } => return Err("source NAT (snat)".to_owned()),
        }
        Ok(())
    }

    fn cmp(&mut self, sreg: Register, op: CmpOp, data: &[u8]) -> Result<(), String> {
        let Some((v, _)) = self.regs.get(&slot(sreg)).cloned() else {
            return Err("compares a value portmap cannot follow".to_owned());
        };
        match v {
            Val::Meta(MetaKey::L4Proto) => {
                if op != CmpOp::Eq {
                    return Err("matches the protocol with something other than ==".to_owned());
                }
                let p = data.first().copied().unwrap_or(0);
                let Some(t) = Transport::from_number(p) else {
                    return Err(format!("matches IP protocol {p}; portmap forwards tcp and udp"));
                };
                self.cond.require_transports(vec![t]);
            }
            Val::Meta(MetaKey::NfProto) => {
                if op != CmpOp::Eq {
                    return Err("matches meta nfproto with something other than ==".to_owned());
                }
                self.cond.nfproto = data.first().copied();
            }
            Val::Meta(MetaKey::IifName) => {
                if op != CmpOp::Eq {
                    return Err("matches the input interface with != (iifname !=)".to_owned());
                }
                let Some(name) = ifname(data) else {
                    return Err(format!(
                        "matches input interfaces by a wildcard (iifname \"{}*\"); portmap lists each interface",
                        String::from_utf8_lossy(data)
                    ));
                };
                self.cond.require_iif(vec![name]);
            }
            Val::Meta(k) => return Err(format!("matches {}, which portmap cannot express", meta_name(k))),
            Val::Payload {
                base: PayloadBase::Network,
                offset,
                len,
            } => self.network_cmp(offset, len, None, op, data)?,
            Val::Masked { offset, len, mask } => self.network_cmp(offset, len, Some(&mask), op, data)?,
            Val::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
            } => {
                let Some(p) = be16(data) else {
                    return Err("compares the port with a short value".to_owned());
                };
                let range = match op {
                    CmpOp::Eq => (p, p),
                    CmpOp::Gte => (p, u16::MAX),
                    CmpOp::Gt => (p.saturating_add(1), u16::MAX),
                    CmpOp::Lte => (0, p),
                    CmpOp::Lt => (0, p.saturating_sub(1)),
                    CmpOp::Neq => return Err("matches the destination port with != (dport !=)".to_owned()),
                };
                self.cond.require_ports(vec![range]);
            }
            Val::Payload {
                base: PayloadBase::Transport,
                offset: 0,
                ..
            } => return Err("matches the source port (sport), which portmap cannot express".to_owned()),
            Val::FibDaddrType => {
                let ty = data
                    .get(..4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if !(op == CmpOp::Eq && ty == Some(2)) {
                    return Err("matches the destination's address type other than `local` (fib)".to_owned());
                }
                // `fib daddr type local`: only packets for the router's own addresses, as portmap.
            }
            _ => return Err("matches a header field portmap cannot express".to_owned()),
        }
        Ok(())
    }

    fn network_cmp(
        &mut self,
        offset: u32,
        len: u32,
        mask: Option<&[u8]>,
        op: CmpOp,
        data: &[u8],
    ) -> Result<(), String> {
        let v6 = self.v6()?;
        if self.is_saddr(offset, len)? {
            if op != CmpOp::Eq {
                return Err(
                    "matches the source address with something other than == (e.g. ip saddr !=)".to_owned(),
                );
            }
            let Some(net) = prefix(data, mask, v6) else {
                return Err("matches the source address with a mask that is not a prefix".to_owned());
            };
            return self.cond.require_sources(vec![net]);
        }
        if self.is_daddr(offset)? {
            if op != CmpOp::Eq {
                return Err(
                    "matches the destination address with something other than == (e.g. ip daddr !=)"
                        .to_owned(),
                );
            }
            let Some(net) = prefix(data, mask, v6) else {
                return Err("matches the destination address with a mask that is not a prefix".to_owned());
            };
            return self.cond.require_listen(net);
        }
        let proto_offset = if v6 { 6 } else { 9 };
        if offset == proto_offset && len == 1 && op == CmpOp::Eq && mask.is_none() {
            let p = data.first().copied().unwrap_or(0);
            return match Transport::from_number(p) {
                Some(t) => {
                    self.cond.require_transports(vec![t]);
                    Ok(())
                }
                None => Err(format!("matches IP protocol {p}; portmap forwards tcp and udp")),
            };
        }
        Err("matches an IP header field portmap cannot express".to_owned())
    }

    fn lookup(
        &mut self,
        sreg: Register,
        dreg: Option<Register>,
        name: &str,
        invert: bool,
    ) -> Result<(), String> {
        let (set, elements) = self.set(name)?;
        let fields = self.key_fields(sreg, set.key_len)?;
        if let Some(dreg) = dreg {
            if dreg == Register::Verdict {
                return Err(
                    "dispatches through a verdict map (vmap), which portmap does not follow".to_owned(),
                );
            }
            if set.flags & set_flags::INTERVAL != 0 {
                return Err(format!(
                    "looks the target up in map {name} with ranges as keys (flags interval), which portmap does not read"
                ));
            }
            let len = set.data_len.unwrap_or(16);
            self.load(
                dreg,
                Val::MapOut {
                    set: name.to_owned(),
                    key: fields,
                },
                len,
            );
            return Ok(());
        }
        if invert {
            return Err(format!("matches what is not in set {name} (!= @set)"));
        }
        let [field] = fields.as_slice() else {
            return Err(format!(
                "matches a concatenation in set {name}, which portmap cannot express"
            ));
        };
        let v6 = self.v6().unwrap_or(false);
        let keys: Vec<(Vec<u8>, Vec<u8>)> = if set.flags & set_flags::INTERVAL != 0 {
            interval::from_elements(elements)
                .into_iter()
                .map(|i| (i.start, i.end))
                .collect()
        } else {
            elements.iter().map(|e| (e.key.clone(), e.key.clone())).collect()
        };
        match field {
            Field::Dport => {
                let mut ports = Vec::new();
                for (a, b) in &keys {
                    let (Some(a), Some(b)) = (be16(a), be16(b)) else {
                        return Err(format!("set {name} holds keys that are not ports"));
                    };
                    ports.push((a, b));
                }
                self.cond.require_ports(ports);
            }
            Field::L4Proto => {
                let mut list = Vec::new();
                for (a, _) in &keys {
                    let p = a.first().copied().unwrap_or(0);
                    match Transport::from_number(p) {
                        Some(t) => list.push(t),
                        None => {
                            return Err(format!(
                                "matches IP protocol {p} (set {name}); portmap forwards tcp and udp"
                            ));
                        }
                    }
                }
                self.cond.require_transports(list);
            }
            Field::IifName => {
                let mut list = Vec::new();
                for (a, _) in &keys {
                    match ifname(a) {
                        Some(n) => list.push(n),
                        None => return Err(format!("matches input interfaces by a wildcard (set {name})")),
                    }
                }
                self.cond.require_iif(list);
            }
            Field::Saddr(_) => {
                let mut nets = Vec::new();
                for (a, b) in &keys {
                    let (Some(a), Some(b)) = (addr(a, v6), addr(b, v6)) else {
                        return Err(format!("set {name} holds keys that are not addresses"));
                    };
                    nets.extend(range_to_prefixes(a, b));
                }
                self.cond.require_sources(nets)?;
            }
        }
        Ok(())
    }

    /// The forwards of a `dnat` expression under the rule's conditions.
    #[allow(clippy::many_single_char_names)] // addresses, ports and registers of one expression
    fn dnat(&self, e: &Expr) -> Result<Vec<Forward>, String> {
        let Expr::Nat {
            family,
            addr_min,
            addr_max,
            proto_min,
            proto_max,
            ..
        } = e
        else {
            return Err("not a dnat".to_owned());
        };
        let v6 = match family {
            2 => false,
            10 => true,
            f => return Err(format!("translates to address family {f}")),
        };
        let Some(addr_min) = addr_min else {
            return Err("dnat without an address (dnat to :PORT), which portmap cannot express".to_owned());
        };
        let reg = |r: &Register| self.at(slot(*r)).map(|(_, v)| v.clone());
        let same =
            |a: &Option<Register>, b: &Register| a.is_none_or(|a| slot(a) == slot(*b) || reg(&a) == reg(b));
        if !same(addr_max, addr_min) {
            return Err(
                "translates to several addresses (dnat to A-B), which portmap cannot express".to_owned(),
            );
        }
        // Targets: (key values from a map element or none, address, first port, last port).
        let mut targets: Vec<Target> = Vec::new();
        match reg(addr_min) {
            Some(Val::Imm(bytes)) => {
                let a = addr(&bytes, v6).ok_or("dnat to an address of the wrong length")?;
                let port = match proto_min {
                    None => None,
                    Some(p) => match reg(p) {
                        Some(Val::Imm(b)) => {
                            let lo = be16(&b).ok_or("dnat to a short port")?;
                            let hi = match proto_max {
                                Some(q) if slot(*q) != slot(*p) => match reg(q) {
                                    Some(Val::Imm(b)) => be16(&b).ok_or("dnat to a short port")?,
                                    _ => return Err("dnat to a port range portmap cannot follow".to_owned()),
                                },
                                _ => lo,
                            };
                            Some((lo, hi))
                        }
                        _ => return Err("dnat to a port portmap cannot follow".to_owned()),
                    },
                };
                targets.push((None, a, port));
            }
            Some(Val::MapOut { set, key }) => {
                let base = self.at(slot(*addr_min)).map_or(0, |(k, _)| k);
                let (m, elements) = self.set(&set)?;
                let addr_off = usize::from(slot(*addr_min).saturating_sub(base)) * 4;
                let port_off = match proto_min {
                    None => None,
                    Some(p) => match reg(p) {
                        Some(Val::MapOut { set: s, .. }) if s == set => {
                            Some(usize::from(slot(*p).saturating_sub(base)) * 4)
                        }
                        _ => return Err("dnat to a port portmap cannot follow".to_owned()),
                    },
                };
                if proto_max.is_some_and(|q| proto_min.is_none_or(|p| slot(q) != slot(p))) {
                    return Err("dnat to port ranges from a map, which portmap cannot express".to_owned());
                }
                for el in elements {
                    let Some(Data::Value(d)) = &el.data else { continue };
                    let key = key_values(&key, &el.key, v6)
                        .ok_or_else(|| format!("map {set} holds a key portmap cannot read"))?;
                    let a = d
                        .get(addr_off..)
                        .and_then(|b| addr(b, v6))
                        .ok_or_else(|| format!("map {set} holds data portmap cannot read"))?;
                    let port = match port_off {
                        None => None,
                        Some(o) => {
                            let p = d
                                .get(o..)
                                .and_then(be16)
                                .ok_or_else(|| format!("map {set} holds data portmap cannot read"))?;
                            Some((p, p))
                        }
                    };
                    targets.push((Some(key), a, port));
                }
                let _ = m;
            }
            _ => return Err("dnat to an address portmap cannot follow".to_owned()),
        }
        let mut out = Vec::new();
        for (key, to, port) in targets {
            let mut cond = self.cond.clone();
            if let Some(key) = key {
                for kv in key {
                    match kv {
                        KeyValue::Transport(t) => cond.require_transports(vec![t]),
                        KeyValue::Port(p) => cond.require_ports(vec![(p, p)]),
                        KeyValue::Iif(i) => cond.require_iif(vec![i]),
                        KeyValue::Source(n) => cond.require_sources(vec![n])?,
                    }
                }
            }
            expand(&cond, to, port, None, &mut out)?;
        }
        Ok(out)
    }
}

/// The forwards of one target under `cond`: each port range of the condition, for each protocol
/// and input interface. `port` is the target's port (or range); `base`, for iptables'
/// `--to-destination A:P-Q/BASE`, the external port that goes to `P` (a shift).
pub(super) fn expand(
    cond: &Cond,
    to: IpAddr,
    port: Option<(u16, u16)>,
    base: Option<u16>,
    out: &mut Vec<Forward>,
) -> Result<(), String> {
    if cond.never {
        return Ok(());
    }
    let Some(transports) = cond.transports.clone() else {
        return Err(
            "forwards every protocol; portmap forwards tcp and udp ports (add a tcp or udp port match)"
                .to_owned(),
        );
    };
    let Some(dports) = cond.dports.clone() else {
        return Err("forwards every port of a protocol; portmap forwards given ports".to_owned());
    };
    let ifaces: Vec<Option<String>> = match &cond.iif {
        None => vec![None],
        Some(list) => list.iter().cloned().map(Some).collect(),
    };
    for (lo, hi) in dports {
        let lo = lo.max(1);
        if lo > hi {
            continue;
        }
        let ports = PortRange { start: lo, end: hi };
        let to_port = match (port, base) {
            (None, _) => lo,
            (Some((a, b)), Some(base)) => {
                let first = i32::from(a) + i32::from(lo) - i32::from(base);
                let last = first + i32::from(hi - lo);
                if first < i32::from(a) || last > i32::from(b) {
                    return Err(format!(
                        "shifts ports {ports} outside its target range {a}-{b} (base {base})"
                    ));
                }
                u16::try_from(first).unwrap_or(a)
            }
            (Some((a, b)), None) if a == b && lo == hi => a,
            (Some((a, b)), None) if a == lo && b == hi => lo,
            (Some((a, b)), None) if a == b => {
                return Err(format!(
                    "sends ports {ports} all to port {a}, which portmap cannot express (a mapping shifts a range onto a range of the same length)"
                ));
            }
            (Some((a, b)), None) => {
                return Err(format!(
                    "translates ports {ports} to the port range {a}-{b}, from which the kernel picks a port (no shift), which portmap cannot express"
                ));
            }
        };
        if u32::from(to_port) + u32::from(hi - lo) > 65_535 {
            return Err("translates beyond port 65535".to_owned());
        }
        for iif in &ifaces {
            for t in &transports {
                if out.len() >= MAX_CANDIDATES_PER_RULE {
                    return Err("makes more forwards than portmap reads from one rule".to_owned());
                }
                out.push(Forward {
                    iif: iif.clone(),
                    transport: *t,
                    ports,
                    to,
                    to_port,
                    sources: cond.sources.clone().unwrap_or_default(),
                    listen: cond.listen,
                });
            }
        }
    }
    Ok(())
}

/// Why a set lookup on the destination address is not taken over (a single `ip daddr ADDR` is: it
/// becomes the mapping's `listen`).
pub(super) fn daddr_reason() -> String {
    "looks up the destination address (ip daddr) in a set: portmap takes one listen address per rule, written \
     `ip daddr ADDR`"
        .to_owned()
}

/// A DNAT target: the key of the map element it came from (none for `dnat to ADDR`), the
/// address, and the port or range (none: the packet's own port).
type Target = (Option<Vec<KeyValue>>, IpAddr, Option<(u16, u16)>);

/// One field of a map element's key, read.
enum KeyValue {
    Transport(Transport),
    Port(u16),
    Iif(String),
    Source(IpNet),
}

fn key_values(fields: &[Field], key: &[u8], v6: bool) -> Option<Vec<KeyValue>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for f in fields {
        let rest = key.get(at..)?;
        let (value, len) = match f {
            Field::L4Proto => (KeyValue::Transport(Transport::from_number(*rest.first()?)?), 1),
            Field::Dport => (KeyValue::Port(be16(rest)?), 2),
            Field::IifName => (KeyValue::Iif(ifname(rest.get(..16)?)?), 16),
            Field::Saddr(l) => (
                KeyValue::Source(prefix(rest.get(..*l as usize)?, None, v6)?),
                *l as usize,
            ),
        };
        out.push(value);
        at += len.div_ceil(4) * 4;
    }
    Some(out)
}

/// The prefixes that cover the addresses `a..=b` exactly.
fn range_to_prefixes(a: IpAddr, b: IpAddr) -> Vec<IpNet> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect(),
        (IpAddr::V6(a), IpAddr::V6(b)) => ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect(),
        _ => Vec::new(),
    }
}
