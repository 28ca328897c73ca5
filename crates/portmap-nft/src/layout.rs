//! The shape of portmap's table: object names, set types and the exact rule expressions, built from
//! the router-wide settings. One place decides the layout; `apply` builds it, `observe` compares the
//! kernel against it, `render` prints it.
//!
//! The table holds:
//! - sets `wan_ifaces` / `lan_ifaces` (type ifname);
//! - map `dnat4`: `meta l4proto . th dport : ipv4_addr . inet_service`, one element per forwarded
//!   (protocol, port), its comment carrying the mapping name (and description);
//! - verdict map `guard4`: `meta l4proto . th dport : jump allow_<name>` for mappings with an
//!   allow-list; chain `allow_<name>` accepts (ends NAT processing, no DNAT) sources outside set
//!   `allow_<name>_src`, so only allowed sources fall through to the DNAT rule;
//! - base chains `prerouting` (nat, dstnat) and `forward` (filter), and `postrouting` (nat, srcnat)
//!   when masquerade is on.
//!
//! This module builds values only; it must not talk to the kernel.

use portmap_netlink::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, PayloadBase, Policy,
    Register, Rule, Set, Verdict, datatype, set_flags, udata,
};

/// Everything in the table but the table itself: what a rebuild sends, what a read returns.
#[derive(Debug, Default, Clone)]
pub struct Contents {
    /// Chains (base chains and allow-list chains).
    pub chains: Vec<Chain>,
    /// Rules of all chains, in chain order.
    pub rules: Vec<Rule>,
    /// Named sets and maps.
    pub sets: Vec<Set>,
    /// Elements of each set, by set name.
    pub elements: std::collections::BTreeMap<String, Vec<Element>>,
}

/// Name of the set of WAN interfaces.
pub const WAN_SET: &str = "wan_ifaces";
/// Name of the set of LAN interfaces.
pub const LAN_SET: &str = "lan_ifaces";
/// Name of the IPv4 DNAT data map.
pub const DNAT4: &str = "dnat4";
/// Name of the IPv4 allow-list dispatch verdict map.
pub const GUARD4: &str = "guard4";
/// Name of the set of addresses that always stay the router's: loopback and the router's own
/// addresses on LAN interfaces. Hairpin never DNATs traffic addressed to them.
pub const LAN_SIDE4: &str = "lan_side4";
/// Name of the nat output base chain (router-local hairpin).
pub const OUTPUT: &str = "output";
/// Name of the nat prerouting base chain.
pub const PREROUTING: &str = "prerouting";
/// Name of the filter forward base chain.
pub const FORWARD: &str = "forward";
/// Name of the nat postrouting base chain (present with masquerade).
pub const POSTROUTING: &str = "postrouting";
/// Comment on the table.
pub const TABLE_COMMENT: &str = "managed by portmap";

/// Bytes of an `ifname` key (IFNAMSIZ).
pub const IFNAME_LEN: u32 = 16;

/// Set ids used inside one batch (unique per batch; allow-list sets get ids from `ALLOW_SET_ID_BASE`).
const WAN_SET_ID: u32 = 1;
const LAN_SET_ID: u32 = 2;
const DNAT4_ID: u32 = 3;
const GUARD4_ID: u32 = 4;
const LAN_SIDE4_ID: u32 = 5;
/// First id for per-mapping allow-list sets.
pub const ALLOW_SET_ID_BASE: u32 = 100;

/// `NF_INET_*` and nft constants used in expressions.
const NFPROTO_IPV4: u8 = 2;
const RTN_LOCAL: u32 = 2;
const NFTA_FIB_F_DADDR: u32 = 2;
const NFTA_FIB_F_IIF: u32 = 8;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFT_CT_STATUS: u32 = 2;
const IPS_DST_NAT: u32 = 0x20;

/// Who the layout is for: the table's family and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableId {
    /// Always `inet` today.
    pub family: Family,
    /// Table name (`portmap` unless `--table` says otherwise).
    pub name: String,
}

impl TableId {
    /// `inet portmap`.
    pub fn display(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }
}

/// Name of the chain holding a mapping's allow-list.
pub fn allow_chain(mapping: &str) -> String {
    format!("allow_{mapping}")
}

/// Name of the set holding a mapping's allowed source prefixes.
pub fn allow_set(mapping: &str) -> String {
    format!("allow_{mapping}_src")
}

/// The static sets and maps every table has.
pub fn static_sets(t: &TableId) -> Vec<Set> {
    vec![
        set(
            t,
            WAN_SET,
            WAN_SET_ID,
            0,
            datatype::IFNAME,
            IFNAME_LEN,
            None,
            None,
        ),
        set(
            t,
            LAN_SET,
            LAN_SET_ID,
            0,
            datatype::IFNAME,
            IFNAME_LEN,
            None,
            None,
        ),
        set(
            t,
            DNAT4,
            DNAT4_ID,
            set_flags::MAP,
            datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
            8,
            Some(datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE])),
            None,
        ),
        set(
            t,
            GUARD4,
            GUARD4_ID,
            set_flags::MAP,
            datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
            8,
            Some(datatype::VERDICT),
            None,
        ),
        set(
            t,
            LAN_SIDE4,
            LAN_SIDE4_ID,
            set_flags::INTERVAL,
            datatype::IPV4_ADDR,
            4,
            None,
            None,
        ),
    ]
}

/// The set of one mapping's allowed IPv4 source prefixes.
pub fn allow_set_object(t: &TableId, mapping: &str, id: u32) -> Set {
    set(
        t,
        &allow_set(mapping),
        id,
        set_flags::INTERVAL,
        datatype::IPV4_ADDR,
        4,
        None,
        Some(mapping),
    )
}

#[allow(clippy::too_many_arguments)]
fn set(
    t: &TableId,
    name: &str,
    id: u32,
    flags: u32,
    key_type: u32,
    key_len: u32,
    data_type: Option<u32>,
    comment: Option<&str>,
) -> Set {
    let data_len = data_type.map(|d| if d == datatype::VERDICT { 0 } else { 8 });
    // nft 1.0.6 records the key byte order of every typed set (host order for ifname, big endian for
    // an address, "invalid" for concatenations) and, for maps, the data byte order ("invalid" for
    // concatenations and verdicts).
    let key_order = match key_type {
        datatype::IFNAME => udata::BYTEORDER_HOST,
        datatype::IPV4_ADDR => udata::BYTEORDER_BIG,
        _ => udata::BYTEORDER_INVALID,
    };
    let data_order = data_type.map(|_| udata::BYTEORDER_INVALID);
    Set {
        family: t.family,
        table: t.name.clone(),
        name: name.to_owned(),
        flags,
        key_type,
        key_len,
        data_type,
        data_len,
        id,
        // nft sends concatenation field lengths only for interval concatenations, not hash maps.
        concat: Vec::new(),
        userdata: Some(udata::set_udata(Some(key_order), data_order, comment)),
        handle: None,
    }
}

/// The settings that change the table's structure (rather than its elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// `masquerade: true`.
    pub masquerade: bool,
    /// `hairpin: true`.
    pub hairpin: bool,
}

impl Shape {
    /// Every shape, for `observe` to find which one the kernel holds.
    pub const ALL: [Shape; 4] = [
        Shape {
            masquerade: false,
            hairpin: false,
        },
        Shape {
            masquerade: true,
            hairpin: false,
        },
        Shape {
            masquerade: false,
            hairpin: true,
        },
        Shape {
            masquerade: true,
            hairpin: true,
        },
    ];

    fn has_postrouting(self) -> bool {
        self.masquerade || self.hairpin
    }
}

/// Base chains of the static structure for the given shape.
pub fn static_chains(t: &TableId, shape: Shape) -> Vec<Chain> {
    let mut chains = vec![
        base_chain(t, PREROUTING, Hook::Prerouting, -100, "nat"),
        base_chain(t, FORWARD, Hook::Forward, 0, "filter"),
    ];
    if shape.hairpin {
        chains.push(base_chain(t, OUTPUT, Hook::Output, -100, "nat"));
    }
    if shape.has_postrouting() {
        chains.push(base_chain(t, POSTROUTING, Hook::Postrouting, 100, "nat"));
    }
    chains
}

fn base_chain(t: &TableId, name: &str, hook: Hook, priority: i32, chain_type: &str) -> Chain {
    Chain {
        family: t.family,
        table: t.name.clone(),
        name: name.to_owned(),
        base: Some(BaseChain {
            hook,
            priority,
            chain_type: chain_type.to_owned(),
            policy: Policy::Accept,
        }),
        userdata: None,
        handle: None,
    }
}

/// The regular chain of one mapping's allow-list.
pub fn allow_chain_object(t: &TableId, mapping: &str) -> Chain {
    Chain {
        family: t.family,
        table: t.name.clone(),
        name: allow_chain(mapping),
        base: None,
        userdata: Some(udata::comment(mapping)),
        handle: None,
    }
}

/// The rules of the static structure, in chain order.
pub fn static_rules(t: &TableId, shape: Shape) -> Vec<Rule> {
    let mut rules = vec![
        rule(t, PREROUTING, dispatch(From::Wan, Lookup::Guard)),
        rule(t, PREROUTING, dispatch(From::Wan, Lookup::Dnat)),
    ];
    if shape.hairpin {
        rules.push(rule(t, PREROUTING, dispatch(From::Lan, Lookup::Guard)));
        rules.push(rule(t, PREROUTING, dispatch(From::Lan, Lookup::Dnat)));
    }
    rules.push(rule(t, FORWARD, forward_accept_dnat()));
    if shape.hairpin {
        rules.push(rule(t, OUTPUT, dispatch(From::Router, Lookup::Guard)));
        rules.push(rule(t, OUTPUT, dispatch(From::Router, Lookup::Dnat)));
    }
    if shape.masquerade {
        rules.push(rule(t, POSTROUTING, masquerade_lan_to_wan()));
    }
    if shape.hairpin {
        rules.push(rule(t, POSTROUTING, masquerade_reflected()));
    }
    rules
}

/// The one rule in a mapping's allow-list chain: sources outside the set are accepted without DNAT.
pub fn allow_rule(t: &TableId, mapping: &str, set_id: u32) -> Rule {
    let exprs = vec![
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Eq,
            data: vec![NFPROTO_IPV4],
        },
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 4,
            dreg: Register::R1,
        },
        Expr::Lookup {
            sreg: Register::R1,
            dreg: None,
            set: allow_set(mapping),
            set_id,
            invert: true,
        },
        Expr::Immediate {
            dreg: Register::Verdict,
            data: Data::Verdict(Verdict::Accept),
        },
    ];
    rule(t, &allow_chain(mapping), exprs)
}

fn rule(t: &TableId, chain: &str, exprs: Vec<Expr>) -> Rule {
    Rule {
        family: t.family,
        table: t.name.clone(),
        chain: chain.to_owned(),
        exprs,
        userdata: None,
        handle: None,
    }
}

#[derive(Clone, Copy)]
enum Lookup {
    Guard,
    Dnat,
}

/// Which interface set a rule matches, and on which side of the packet.
#[derive(Clone, Copy)]
enum Iface {
    /// `iifname @wan_ifaces`.
    InWan,
    /// `iifname @lan_ifaces`.
    InLan,
    /// `oifname @wan_ifaces`.
    OutWan,
    /// `oifname @lan_ifaces`.
    OutLan,
}

/// Where the traffic a DNAT rule handles comes from.
#[derive(Clone, Copy)]
enum From {
    /// Arriving on a WAN interface.
    Wan,
    /// Arriving on a LAN interface (hairpin).
    Lan,
    /// The router's own processes (nat output, hairpin).
    Router,
}

/// `iifname @set` / `oifname @set`.
fn iface(which: Iface) -> [Expr; 2] {
    let (key, set, set_id) = match which {
        Iface::InWan => (MetaKey::IifName, WAN_SET, WAN_SET_ID),
        Iface::InLan => (MetaKey::IifName, LAN_SET, LAN_SET_ID),
        Iface::OutWan => (MetaKey::OifName, WAN_SET, WAN_SET_ID),
        Iface::OutLan => (MetaKey::OifName, LAN_SET, LAN_SET_ID),
    };
    [
        Expr::Meta {
            key,
            dreg: Register::R1,
        },
        Expr::Lookup {
            sreg: Register::R1,
            dreg: None,
            set: set.to_owned(),
            set_id,
            invert: false,
        },
    ]
}

/// The match part of a DNAT rule, followed by the guard vmap or the DNAT:
/// - from the WAN: `iifname @wan_ifaces fib daddr type local meta nfproto ipv4`;
/// - from the LAN (hairpin): `iifname @lan_ifaces fib daddr type local fib daddr . iif type != local
///   meta nfproto ipv4 ip daddr != @lan_side4`, so the router's own LAN-side addresses are never
///   taken over (the fib check needs no addresses; the set also covers the router's other LANs);
/// - from the router itself (hairpin, nat output): `fib daddr type local meta nfproto ipv4
///   ip daddr != @lan_side4` (the set holds loopback and the LAN-side addresses).
fn dispatch(from: From, which: Lookup) -> Vec<Expr> {
    let mut exprs = match from {
        From::Wan => iface(Iface::InWan).to_vec(),
        From::Lan => iface(Iface::InLan).to_vec(),
        From::Router => Vec::new(),
    };
    exprs.extend(fib_type_local(NFTA_FIB_F_DADDR, CmpOp::Eq));
    if matches!(from, From::Lan) {
        exprs.extend(fib_type_local(NFTA_FIB_F_DADDR | NFTA_FIB_F_IIF, CmpOp::Neq));
    }
    exprs.extend([
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Eq,
            data: vec![NFPROTO_IPV4],
        },
    ]);
    if !matches!(from, From::Wan) {
        exprs.extend([
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: Register::R1,
            },
            Expr::Lookup {
                sreg: Register::R1,
                dreg: None,
                set: LAN_SIDE4.to_owned(),
                set_id: LAN_SIDE4_ID,
                invert: true,
            },
        ]);
    }
    exprs.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::R1,
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Register::R32(1),
        },
    ]);
    match which {
        Lookup::Guard => exprs.push(Expr::Lookup {
            sreg: Register::R1,
            dreg: Some(Register::Verdict),
            set: GUARD4.to_owned(),
            set_id: GUARD4_ID,
            invert: false,
        }),
        Lookup::Dnat => {
            exprs.push(Expr::Lookup {
                sreg: Register::R1,
                dreg: Some(Register::R1),
                set: DNAT4.to_owned(),
                set_id: DNAT4_ID,
                invert: false,
            });
            exprs.push(Expr::Nat {
                nat_type: NatType::Dnat,
                family: NFPROTO_IPV4,
                addr_min: Some(Register::R1),
                addr_max: None,
                proto_min: Some(Register::R32(1)),
                proto_max: None,
                flags: 0,
            });
        }
    }
    exprs
}

/// `fib daddr [. iif] type local` (or `!= local`).
fn fib_type_local(flags: u32, op: CmpOp) -> [Expr; 2] {
    [
        Expr::Fib {
            flags,
            result: NFT_FIB_RESULT_ADDRTYPE,
            dreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]
}

/// `ct status dnat`.
fn ct_status_dnat() -> [Expr; 3] {
    [
        Expr::Ct {
            key: NFT_CT_STATUS,
            dreg: Register::R1,
            direction: None,
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 4,
            mask: IPS_DST_NAT.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// `ct status dnat counter accept`.
fn forward_accept_dnat() -> Vec<Expr> {
    let mut exprs = ct_status_dnat().to_vec();
    exprs.push(Expr::Counter { bytes: 0, packets: 0 });
    exprs.push(Expr::Immediate {
        dreg: Register::Verdict,
        data: Data::Verdict(Verdict::Accept),
    });
    exprs
}

/// `iifname @lan_ifaces oifname @lan_ifaces ct status dnat masquerade`: reflected (hairpin) flows
/// are source-NATed so the inner host answers through the router.
fn masquerade_reflected() -> Vec<Expr> {
    let mut exprs = iface(Iface::InLan).to_vec();
    exprs.extend(iface(Iface::OutLan));
    exprs.extend(ct_status_dnat());
    exprs.push(Expr::Masq { flags: 0 });
    exprs
}

/// `iifname @lan_ifaces oifname @wan_ifaces masquerade`.
fn masquerade_lan_to_wan() -> Vec<Expr> {
    let mut exprs = iface(Iface::InLan).to_vec();
    exprs.extend(iface(Iface::OutWan));
    exprs.push(Expr::Masq { flags: 0 });
    exprs
}

/// Compare two expression lists the way `observe` must: counters' values do not matter, nor do the
/// batch-local set ids (the kernel reports none).
pub fn same_exprs(found: &[Expr], wanted: &[Expr]) -> bool {
    found.len() == wanted.len()
        && found.iter().zip(wanted).all(|(a, b)| match (a, b) {
            (Expr::Counter { .. }, Expr::Counter { .. }) => true,
            (
                Expr::Lookup {
                    sreg,
                    dreg,
                    set,
                    invert,
                    ..
                },
                Expr::Lookup {
                    sreg: s2,
                    dreg: d2,
                    set: n2,
                    invert: i2,
                    ..
                },
            ) => sreg == s2 && dreg == d2 && set == n2 && invert == i2,
            // The kernel reports max registers equal to the min ones and adds range flags.
            (
                Expr::Nat {
                    nat_type,
                    family,
                    addr_min,
                    proto_min,
                    ..
                },
                Expr::Nat {
                    nat_type: t2,
                    family: f2,
                    addr_min: a2,
                    proto_min: p2,
                    ..
                },
            ) => nat_type == t2 && family == f2 && addr_min == a2 && proto_min == p2,
            _ => a == b,
        })
}

/// An `ifname` set element: the name NUL-padded to 16 bytes.
pub fn ifname_element(name: &str) -> Element {
    Element {
        key: datatype::ifname(name),
        key_end: None,
        data: None,
        flags: 0,
        userdata: None,
    }
}

/// The interface name an `ifname` element holds.
pub fn ifname_of(element: &Element) -> String {
    let end = element
        .key
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(element.key.len());
    String::from_utf8_lossy(&element.key[..end]).into_owned()
}
