//! The shape of portmap's table: object names, set types and the exact rule expressions, built from
//! the router-wide settings. One place decides the layout; `apply` builds it, `observe` compares the
//! kernel against it, `render` prints it.
//!
//! The table holds:
//! - sets `wan_ifaces` / `lan_ifaces` (type ifname);
//! - map `dnat4`: `meta l4proto . th dport : ipv4_addr . inet_service`, one element per forwarded
//!   (protocol, port), its comment carrying the mapping name (and description); `dnat6` the same
//!   with `ipv6_addr` for mappings whose target is IPv6;
//! - verdict maps `guard4` / `guard6`: `meta l4proto . th dport : jump allow_<name>` for mappings
//!   with an allow-list; chain `allow_<name>` drops sources outside set `allow_<name>_src` (of the
//!   mapping's family), so only allowed sources fall through to the DNAT rule and a refused source
//!   reaches neither the inner host nor a service of the router's own on that port;
//! - sets `lan_side4` / `lan_side6`: destinations hairpin leaves to the router;
//! - base chains `prerouting` (nat, dstnat), `forward` (filter), `output` (nat, hairpin) and
//!   `postrouting` (nat, srcnat, masquerade or hairpin). Every DNAT rule exists once per family
//!   (`meta nfproto ipv4` / `ipv6`), in the same order; the IPv6 rules skip link-local
//!   destinations (`ip6 daddr != fe80::/10`).
//!
//! This module builds values only; it must not talk to the kernel.

use std::net::IpAddr;

use ipnet::IpNet;
use portmap_netlink::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, Object, ObjectKind,
    PayloadBase, Policy, Register, Rule, Set, Verdict, datatype, object_type, set_flags, udata,
};

/// Everything in the table but the table itself: what a rebuild sends, what a read returns.
#[derive(Debug, Default, Clone)]
pub struct Contents {
    /// The table's flags (`NFT_TABLE_F_*`): portmap writes none.
    pub table_flags: u32,
    /// Chains (base chains and allow-list chains).
    pub chains: Vec<Chain>,
    /// Rules of all chains, in chain order.
    pub rules: Vec<Rule>,
    /// Named sets and maps.
    pub sets: Vec<Set>,
    /// Stateful objects (the mappings' counters and limits).
    pub objects: Vec<Object>,
    /// Elements of each set, by set name.
    pub elements: std::collections::BTreeMap<String, Vec<Element>>,
    /// When the contents were read (or built), in milliseconds since the Unix epoch: what the
    /// elements' remaining timeouts count from.
    pub read_at_ms: Option<u64>,
}

/// The system clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The element timeout (milliseconds) that makes the kernel remove an element at `expires`,
/// counted from `now_ms`; at least 1 ms (0 would mean "never"), `None` without an expiry.
pub fn timeout_ms(expires: Option<portmap_core::UtcTime>, now_ms: u64) -> Option<u64> {
    let at = u64::try_from(expires?.unix_seconds())
        .unwrap_or(0)
        .saturating_mul(1000);
    Some(at.saturating_sub(now_ms).max(1))
}

/// Whether the table built for `model` has timeouts on its per-port maps
/// ([`static_sets`]): when a mapping has an `expires`.
pub fn needs_timeouts(model: &portmap_core::Model) -> bool {
    model.needs_expiry()
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
/// Name of the IPv6 DNAT data map.
pub const DNAT6: &str = "dnat6";
/// Name of the IPv6 allow-list dispatch verdict map.
pub const GUARD6: &str = "guard6";
/// IPv6 twin of [`LAN_SIDE4`]: `::1` and the router's (non-link-local) IPv6 addresses on LAN
/// interfaces.
pub const LAN_SIDE6: &str = "lan_side6";
/// Name of the IPv4 set of pending conntrack cleanups: `meta l4proto . th dport . ipv4_addr .
/// inet_service` (an old forward), written in the transaction that makes its flows stale and
/// emptied once they are removed, so that an apply killed in between leaves a record the next
/// apply finishes.
pub const STALE4: &str = "stale4";
/// IPv6 twin of [`STALE4`].
pub const STALE6: &str = "stale6";
/// Name of the IPv4 object map giving each forwarded (protocol, port) its mapping's connection
/// counter (`meta l4proto . inet_service : counter`, elements `tcp . 8080 : "conn_web"`); the
/// prerouting rules count a new connection there after the allow-list and the limit passed it.
pub const CONN4: &str = "conn4";
/// IPv6 twin of [`CONN4`].
pub const CONN6: &str = "conn6";
/// Name of the IPv4 object map giving each forwarded (protocol, port) its mapping's traffic
/// counter; the forward chain counts every packet of a DNAT-ed connection there, both
/// directions, by the connection's original destination port (`ct original proto-dst`).
pub const TRAFFIC4: &str = "traffic4";
/// IPv6 twin of [`TRAFFIC4`].
pub const TRAFFIC6: &str = "traffic6";
/// Name of the IPv4 object map giving the (protocol, port) of a mapping with a `limit` its limit
/// object (`rate over …`): a new connection over the rate is dropped in prerouting.
pub const LIMIT4: &str = "limit4";
/// IPv6 twin of [`LIMIT4`].
pub const LIMIT6: &str = "limit6";
/// Name of the IPv4 verdict map sending the first packet of a new connection of a mapping with
/// `log: true` to its log chain (`jump log_<name>`), in the forward chain (after DNAT).
pub const LOG4: &str = "log4";
/// IPv6 twin of [`LOG4`].
pub const LOG6: &str = "log6";
/// The twin of a per-(protocol, port) map for mappings with `listen`, keyed by the destination
/// address too (`ip daddr . meta l4proto . th dport`, `ipv4_addr . inet_proto . inet_service`):
/// `dnat4` → `dnat4_addr`, and so on for every map a mapping's ports have elements in. The
/// any-address maps are looked up after the addressed ones; validation keeps their keys apart (a
/// port forwarded on any address is forwarded on no listen address of the same family).
pub fn addressed(map: &'static str) -> &'static str {
    match map {
        DNAT4 => "dnat4_addr",
        GUARD4 => "guard4_addr",
        CONN4 => "conn4_addr",
        TRAFFIC4 => "traffic4_addr",
        LIMIT4 => "limit4_addr",
        LOG4 => "log4_addr",
        DNAT6 => "dnat6_addr",
        GUARD6 => "guard6_addr",
        CONN6 => "conn6_addr",
        TRAFFIC6 => "traffic6_addr",
        LIMIT6 => "limit6_addr",
        LOG6 => "log6_addr",
        other => other,
    }
}

/// The map whose addressed twin `map` is, if it is one.
pub fn addressed_base(map: &str) -> Option<&'static str> {
    [
        DNAT4, GUARD4, CONN4, TRAFFIC4, LIMIT4, LOG4, DNAT6, GUARD6, CONN6, TRAFFIC6, LIMIT6, LOG6,
    ]
    .into_iter()
    .find(|base| addressed(base) == map)
}

/// `map`, or its addressed twin when `listen` is given: the map a key's element lives in.
pub fn map_for(map: &'static str, listen: Option<std::net::IpAddr>) -> &'static str {
    if listen.is_some() { addressed(map) } else { map }
}

/// The batch-local id of a map's addressed twin.
const fn addressed_id(id: u32) -> u32 {
    id + 20
}

/// Name of the nat output base chain (router-local hairpin).
pub const OUTPUT: &str = "output";
/// Name of the nat prerouting base chain.
pub const PREROUTING: &str = "prerouting";
/// Name of the filter forward base chain.
pub const FORWARD: &str = "forward";
/// Name of the nat postrouting base chain (present with masquerade).
pub const POSTROUTING: &str = "postrouting";
/// Comment on the table: portmap's marker. A table without it was not created by portmap, and
/// portmap refuses to change or delete it.
pub const TABLE_COMMENT: &str = "managed by portmap";

/// `NFT_TABLE_F_DORMANT`: the table's base chains are unregistered from their hooks.
pub const TABLE_F_DORMANT: u32 = 1;
/// `NFT_TABLE_F_OWNER`: the table belongs to one netlink socket; every other process gets `EPERM`.
pub const TABLE_F_OWNER: u32 = 2;
/// `NFT_TABLE_F_PERSIST`: an owned table outlives its owner's socket (left without an owner, for
/// another socket to adopt). A table left so by `portmap watch --own` carries it.
pub const TABLE_F_PERSIST: u32 = 4;
/// The table flags portmap's own modes set, and so accepts on its table.
pub const TABLE_F_KNOWN: u32 = TABLE_F_DORMANT | TABLE_F_OWNER | TABLE_F_PERSIST;

/// Bytes of an `ifname` key (IFNAMSIZ).
pub const IFNAME_LEN: u32 = 16;

/// Set ids used inside one batch (unique per batch; allow-list sets get ids from `ALLOW_SET_ID_BASE`).
const WAN_SET_ID: u32 = 1;
const LAN_SET_ID: u32 = 2;
const DNAT4_ID: u32 = 3;
const GUARD4_ID: u32 = 4;
const LAN_SIDE4_ID: u32 = 5;
const DNAT6_ID: u32 = 6;
const GUARD6_ID: u32 = 7;
const LAN_SIDE6_ID: u32 = 8;
const STALE4_ID: u32 = 9;
const STALE6_ID: u32 = 10;
const CONN4_ID: u32 = 11;
const CONN6_ID: u32 = 12;
const TRAFFIC4_ID: u32 = 13;
const TRAFFIC6_ID: u32 = 14;
const LIMIT4_ID: u32 = 15;
const LIMIT6_ID: u32 = 16;
const LOG4_ID: u32 = 17;
const LOG6_ID: u32 = 18;
/// First id for per-mapping allow-list sets.
pub const ALLOW_SET_ID_BASE: u32 = 100;

/// `NF_INET_*` and nft constants used in expressions.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const RTN_LOCAL: u32 = 2;
const NFTA_FIB_F_DADDR: u32 = 2;
const NFTA_FIB_F_IIF: u32 = 8;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
const NFT_CT_DST_IP6: u32 = 22;
const IP_CT_DIR_ORIGINAL: u8 = 0;
const IPS_DST_NAT: u32 = 0x20;
const NF_CT_STATE_NEW: u32 = 8;

/// The IP version of a map, set or rule. A mapping has exactly one: that of its target (validation
/// keeps `allow_from` in the same family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4: `dnat4`, `guard4`, `lan_side4`, `meta nfproto ipv4`.
    V4,
    /// IPv6: `dnat6`, `guard6`, `lan_side6`, `meta nfproto ipv6`.
    V6,
}

impl IpFamily {
    /// Both, in the order the table holds their objects and rules.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a prefix.
    pub fn of_net(net: &IpNet) -> Self {
        IpFamily::of(net.addr())
    }

    /// `IPv4` or `IPv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// Name of the family's DNAT data map.
    pub fn dnat_map(self) -> &'static str {
        match self {
            IpFamily::V4 => DNAT4,
            IpFamily::V6 => DNAT6,
        }
    }

    /// Name of the family's allow-list dispatch verdict map.
    pub fn guard_map(self) -> &'static str {
        match self {
            IpFamily::V4 => GUARD4,
            IpFamily::V6 => GUARD6,
        }
    }

    /// Name of the family's set of destinations hairpin leaves to the router.
    pub fn lan_side_set(self) -> &'static str {
        match self {
            IpFamily::V4 => LAN_SIDE4,
            IpFamily::V6 => LAN_SIDE6,
        }
    }

    /// Name of the family's set of pending conntrack cleanups.
    pub fn stale_set(self) -> &'static str {
        match self {
            IpFamily::V4 => STALE4,
            IpFamily::V6 => STALE6,
        }
    }

    /// Name of the family's connection-counter object map.
    pub fn conn_map(self) -> &'static str {
        match self {
            IpFamily::V4 => CONN4,
            IpFamily::V6 => CONN6,
        }
    }

    /// Name of the family's traffic-counter object map.
    pub fn traffic_map(self) -> &'static str {
        match self {
            IpFamily::V4 => TRAFFIC4,
            IpFamily::V6 => TRAFFIC6,
        }
    }

    /// Name of the family's limit object map.
    pub fn limit_map(self) -> &'static str {
        match self {
            IpFamily::V4 => LIMIT4,
            IpFamily::V6 => LIMIT6,
        }
    }

    /// Name of the family's log verdict map.
    pub fn log_map(self) -> &'static str {
        match self {
            IpFamily::V4 => LOG4,
            IpFamily::V6 => LOG6,
        }
    }

    /// Batch-local ids of the connection, traffic, limit and log maps.
    fn extra_ids(self) -> [u32; 4] {
        match self {
            IpFamily::V4 => [CONN4_ID, TRAFFIC4_ID, LIMIT4_ID, LOG4_ID],
            IpFamily::V6 => [CONN6_ID, TRAFFIC6_ID, LIMIT6_ID, LOG6_ID],
        }
    }

    /// Batch-local id of the family's set of pending conntrack cleanups.
    pub fn stale_set_id(self) -> u32 {
        match self {
            IpFamily::V4 => STALE4_ID,
            IpFamily::V6 => STALE6_ID,
        }
    }

    /// Bytes of an address: 4 or 16.
    pub fn addr_len(self) -> u32 {
        match self {
            IpFamily::V4 => 4,
            IpFamily::V6 => 16,
        }
    }

    /// nft's name of the address type: `ipv4_addr` or `ipv6_addr`.
    pub fn nft_addr_type(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4_addr",
            IpFamily::V6 => "ipv6_addr",
        }
    }

    /// nft's name of the network header in rules: `ip` or `ip6` (`ip6 saddr`, `dnat ip6 to`).
    pub fn nft_header(self) -> &'static str {
        match self {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }

    /// nft's name of the family in `meta nfproto`: `ipv4` or `ipv6`.
    pub fn nft_nfproto(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }

    /// nft's datatype id of an address.
    fn addr_type(self) -> u32 {
        match self {
            IpFamily::V4 => datatype::IPV4_ADDR,
            IpFamily::V6 => datatype::IPV6_ADDR,
        }
    }

    /// `NFPROTO_IPV4` or `NFPROTO_IPV6`: the `meta nfproto` value and the nat expression's family.
    fn nfproto(self) -> u8 {
        match self {
            IpFamily::V4 => NFPROTO_IPV4,
            IpFamily::V6 => NFPROTO_IPV6,
        }
    }

    /// Offsets of the source and destination address in the network header.
    fn addr_offsets(self) -> (u32, u32) {
        match self {
            IpFamily::V4 => (12, 16),
            IpFamily::V6 => (8, 24),
        }
    }

    /// Batch-local ids of the DNAT map, the guard map and the LAN-side set.
    fn set_ids(self) -> (u32, u32, u32) {
        match self {
            IpFamily::V4 => (DNAT4_ID, GUARD4_ID, LAN_SIDE4_ID),
            IpFamily::V6 => (DNAT6_ID, GUARD6_ID, LAN_SIDE6_ID),
        }
    }

    /// Where the DNAT map lookup leaves the target port: right after the address, i.e. 32-bit
    /// register 1 for IPv4 (what nft uses) and 128-bit register 2 for IPv6 (nft sends `NFT_REG_2`,
    /// the same slot as `NFT_REG32_04`, and the kernel reports it back that way).
    fn port_register(self) -> Register {
        match self {
            IpFamily::V4 => Register::R32(1),
            IpFamily::V6 => Register::R2,
        }
    }
}

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

/// Name of the set holding a named source list's prefixes of one family (`src_office4`,
/// `src_office6`): one set per list and family, which every mapping using the list refers to.
pub fn source_set(list: &str, family: IpFamily) -> String {
    match family {
        IpFamily::V4 => format!("src_{list}4"),
        IpFamily::V6 => format!("src_{list}6"),
    }
}

/// The list and family a set name of [`source_set`] names, if it is one.
pub fn parse_source_set(set: &str) -> Option<(&str, IpFamily)> {
    let rest = set.strip_prefix("src_")?;
    let (list, family) = if let Some(list) = rest.strip_suffix('4') {
        (list, IpFamily::V4)
    } else {
        (rest.strip_suffix('6')?, IpFamily::V6)
    };
    portmap_core::is_mapping_name(list).then_some((list, family))
}

/// Name of a mapping's connection counter.
pub fn conn_counter(mapping: &str) -> String {
    format!("conn_{mapping}")
}

/// Name of a mapping's traffic counter.
pub fn traffic_counter(mapping: &str) -> String {
    format!("traffic_{mapping}")
}

/// Name of a mapping's limit object.
pub fn limit_object(mapping: &str) -> String {
    format!("limit_{mapping}")
}

/// Name of the chain that logs a mapping's new connections.
pub fn log_chain(mapping: &str) -> String {
    format!("log_{mapping}")
}

/// The log prefix of a mapping: `portmap <name>` (what `portmap log` reads back).
pub fn log_prefix(mapping: &str) -> String {
    format!("portmap {mapping}")
}

/// A counter object starting at `packets` and `bytes` (0 for a new mapping; the values read
/// before when a rebuild or a repair creates it again).
pub fn counter_object(t: &TableId, name: String, packets: u64, bytes: u64) -> Object {
    Object {
        family: t.family,
        table: t.name.clone(),
        name,
        kind: ObjectKind::Counter { packets, bytes },
        userdata: None,
        handle: None,
    }
}

/// The comment a mapping's counters carry when it expires: `expires 2026-12-24T00:00:00Z`. The
/// counters are what stays of it once the kernel removed its elements, so the moment is still
/// known (and `status` can say it expired) when its elements are gone.
pub fn expires_comment(expires: portmap_core::UtcTime) -> String {
    format!("expires {expires}")
}

/// The moment a counter's comment written by [`expires_comment`] names.
pub fn parse_expires_comment(comment: &str) -> Option<portmap_core::UtcTime> {
    let t: portmap_core::UtcTime = comment.strip_prefix("expires ")?.parse().ok()?;
    (expires_comment(t) == comment).then_some(t)
}

/// A mapping's limit object: `limit limit_<name> { rate over R/unit burst B packets }`.
pub fn limit_object_of(t: &TableId, mapping: &str, l: &portmap_core::Limit) -> Object {
    Object {
        family: t.family,
        table: t.name.clone(),
        name: limit_object(mapping),
        kind: ObjectKind::Limit {
            rate: u64::from(l.rate),
            unit: l.per.seconds(),
            burst: l.burst,
            limit_type: portmap_netlink::limit::PKTS,
            flags: portmap_netlink::limit::F_INV,
        },
        userdata: None,
        handle: None,
    }
}

/// The `limit` a limit object enforces, if it is one portmap writes (a packet limit `rate over`
/// in one of the units portmap uses).
pub fn limit_of(kind: &ObjectKind) -> Option<portmap_core::Limit> {
    match *kind {
        ObjectKind::Limit {
            rate,
            unit,
            burst,
            limit_type: portmap_netlink::limit::PKTS,
            flags: portmap_netlink::limit::F_INV,
        } => Some(portmap_core::Limit {
            rate: u32::try_from(rate).ok()?,
            per: portmap_core::RateUnit::from_seconds(unit)?,
            burst,
        }),
        _ => None,
    }
}

/// The regular chain that logs a mapping's new connections, and its one rule.
pub fn log_chain_object(t: &TableId, mapping: &str, group: u16) -> (Chain, Rule) {
    let chain = Chain {
        family: t.family,
        table: t.name.clone(),
        name: log_chain(mapping),
        base: None,
        userdata: Some(udata::comment(mapping)),
        handle: None,
    };
    let rule = rule(
        t,
        &log_chain(mapping),
        vec![Expr::Log {
            group: Some(group),
            prefix: Some(log_prefix(mapping)),
        }],
    );
    (chain, rule)
}

/// The static sets and maps every table has: the interface sets, then per family (IPv4 first) the
/// DNAT map, the guard map and the LAN-side set. With `timeouts`, every per-port map is made with
/// `flags timeout`, so that an expiring mapping's elements can carry one. The kernel walks every
/// element of such a map in a periodic garbage collection (`nft_rhash_gc`, some 4 ms of CPU a
/// second at 10,000 mappings on an idle router), so a configuration gets them only from its first
/// `expires` on (see [`needs_timeouts`]).
pub fn static_sets(t: &TableId, timeouts: bool) -> Vec<Set> {
    let timeout = if timeouts { set_flags::TIMEOUT } else { 0 };
    let key = datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]);
    let key_len = datatype::concat_len(&[1, 2]);
    let mut sets = vec![
        set(
            t,
            WAN_SET,
            WAN_SET_ID,
            0,
            (datatype::IFNAME, IFNAME_LEN),
            None,
            None,
        ),
        set(
            t,
            LAN_SET,
            LAN_SET_ID,
            0,
            (datatype::IFNAME, IFNAME_LEN),
            None,
            None,
        ),
    ];
    for family in IpFamily::ALL {
        let (dnat_id, guard_id, lan_side_id) = family.set_ids();
        let target = (
            datatype::concat(&[family.addr_type(), datatype::INET_SERVICE]),
            datatype::concat_len(&[family.addr_len(), 2]),
        );
        sets.push(set(
            t,
            family.dnat_map(),
            dnat_id,
            set_flags::MAP | timeout,
            (key, key_len),
            Some(target),
            None,
        ));
        sets.push(set(
            t,
            family.guard_map(),
            guard_id,
            set_flags::MAP | timeout,
            (key, key_len),
            Some((datatype::VERDICT, 0)),
            None,
        ));
        sets.push(set(
            t,
            family.lan_side_set(),
            lan_side_id,
            set_flags::INTERVAL,
            (family.addr_type(), family.addr_len()),
            None,
            None,
        ));
    }
    for family in IpFamily::ALL {
        let [conn_id, traffic_id, limit_id, log_id] = family.extra_ids();
        let objects = [
            (family.conn_map(), conn_id, object_type::COUNTER),
            (family.traffic_map(), traffic_id, object_type::COUNTER),
            (family.limit_map(), limit_id, object_type::LIMIT),
        ];
        for (name, id, obj_type) in objects {
            let mut map = set(
                t,
                name,
                id,
                set_flags::OBJECT | timeout,
                (key, key_len),
                None,
                None,
            );
            map.obj_type = Some(obj_type);
            sets.push(map);
        }
        sets.push(set(
            t,
            family.log_map(),
            log_id,
            set_flags::MAP | timeout,
            (key, key_len),
            Some((datatype::VERDICT, 0)),
            None,
        ));
    }
    for family in IpFamily::ALL {
        let key = datatype::concat(&[family.addr_type(), datatype::INET_PROTO, datatype::INET_SERVICE]);
        let key_len = datatype::concat_len(&[family.addr_len(), 1, 2]);
        let (dnat_id, guard_id, _) = family.set_ids();
        let target = (
            datatype::concat(&[family.addr_type(), datatype::INET_SERVICE]),
            datatype::concat_len(&[family.addr_len(), 2]),
        );
        sets.push(set(
            t,
            addressed(family.dnat_map()),
            addressed_id(dnat_id),
            set_flags::MAP | timeout,
            (key, key_len),
            Some(target),
            None,
        ));
        sets.push(set(
            t,
            addressed(family.guard_map()),
            addressed_id(guard_id),
            set_flags::MAP | timeout,
            (key, key_len),
            Some((datatype::VERDICT, 0)),
            None,
        ));
        let [conn_id, traffic_id, limit_id, log_id] = family.extra_ids();
        for (name, id, obj_type) in [
            (family.conn_map(), conn_id, object_type::COUNTER),
            (family.traffic_map(), traffic_id, object_type::COUNTER),
            (family.limit_map(), limit_id, object_type::LIMIT),
        ] {
            let mut map = set(
                t,
                addressed(name),
                addressed_id(id),
                set_flags::OBJECT | timeout,
                (key, key_len),
                None,
                None,
            );
            map.obj_type = Some(obj_type);
            sets.push(map);
        }
        sets.push(set(
            t,
            addressed(family.log_map()),
            addressed_id(log_id),
            set_flags::MAP | timeout,
            (key, key_len),
            Some((datatype::VERDICT, 0)),
            None,
        ));
    }
    for family in IpFamily::ALL {
        let fields = [
            datatype::INET_PROTO,
            datatype::INET_SERVICE,
            family.addr_type(),
            datatype::INET_SERVICE,
        ];
        sets.push(set(
            t,
            family.stale_set(),
            family.stale_set_id(),
            0,
            (
                datatype::concat(&fields),
                datatype::concat_len(&[1, 2, family.addr_len(), 2]),
            ),
            None,
            None,
        ));
    }
    sets
}

/// The set of one mapping's allowed source prefixes, of the mapping's family.
pub fn allow_set_object(t: &TableId, mapping: &str, family: IpFamily, id: u32) -> Set {
    set(
        t,
        &allow_set(mapping),
        id,
        set_flags::INTERVAL,
        (family.addr_type(), family.addr_len()),
        None,
        Some(mapping),
    )
}

/// The set of one named source list's prefixes of one family (its comment: the list's name).
pub fn source_set_object(t: &TableId, list: &str, family: IpFamily, id: u32) -> Set {
    set(
        t,
        &source_set(list, family),
        id,
        set_flags::INTERVAL,
        (family.addr_type(), family.addr_len()),
        None,
        Some(list),
    )
}

/// A named set: `key` and `data` are (nft datatype id, length in bytes); a verdict map's data
/// length is 0.
fn set(
    t: &TableId,
    name: &str,
    id: u32,
    flags: u32,
    (key_type, key_len): (u32, u32),
    data: Option<(u32, u32)>,
    comment: Option<&str>,
) -> Set {
    let data_type = data.map(|(d, _)| d);
    let data_len = data.map(|(_, len)| len);
    // nft 1.0.6 records the key byte order of every typed set (host order for ifname, big endian for
    // an address, "invalid" for concatenations) and, for maps, the data byte order ("invalid" for
    // concatenations and verdicts).
    let key_order = match key_type {
        datatype::IFNAME => udata::BYTEORDER_HOST,
        datatype::IPV4_ADDR | datatype::IPV6_ADDR => udata::BYTEORDER_BIG,
        _ => udata::BYTEORDER_INVALID,
    };
    let data_order = data_type.map(|_| udata::BYTEORDER_INVALID);
    // An object map (flags OBJECT) has no data and nft records no data byte order for it.
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
        obj_type: None,
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

/// The rules of the static structure, in chain order. Each source of traffic gets its guard and
/// DNAT rule for IPv4, then the same pair for IPv6.
pub fn static_rules(t: &TableId, shape: Shape) -> Vec<Rule> {
    let pairs = |chain: &str, from: Origin| -> Vec<Rule> {
        IpFamily::ALL
            .into_iter()
            .flat_map(|family| {
                [Lookup::Guard, Lookup::Limit, Lookup::Count, Lookup::Dnat]
                    .into_iter()
                    .flat_map(move |which| {
                        [true, false]
                            .map(|addressed| rule(t, chain, dispatch(from, family, which, addressed)))
                    })
            })
            .collect()
    };
    let mut rules = pairs(PREROUTING, Origin::Wan);
    if shape.hairpin {
        rules.extend(pairs(PREROUTING, Origin::Lan));
    }
    for family in IpFamily::ALL {
        for transport in [portmap_core::Transport::Tcp, portmap_core::Transport::Udp] {
            for addressed in [true, false] {
                rules.push(rule(t, FORWARD, forward_count(family, transport, addressed)));
                rules.push(rule(t, FORWARD, forward_log(family, transport, addressed)));
            }
        }
    }
    rules.push(rule(t, FORWARD, forward_accept_dnat()));
    if shape.hairpin {
        rules.extend(pairs(OUTPUT, Origin::Router));
    }
    if shape.masquerade {
        rules.push(rule(t, POSTROUTING, masquerade_lan_to_wan()));
    }
    if shape.hairpin {
        rules.push(rule(t, POSTROUTING, masquerade_reflected()));
    }
    rules
}

/// The one rule in a mapping's allow-list chain: sources outside the set are dropped
/// (`ip saddr != @allow_<name>_src drop`, or `ip6 saddr` for an IPv6 mapping). Dropping in the nat
/// hook drops the connection's first packet, so a refused source never reaches the inner host, and
/// never falls through to a service of the router's own on the mapped port either.
pub fn allow_rule(t: &TableId, mapping: &str, family: IpFamily, set_id: u32) -> Rule {
    let mut exprs = nfproto_is(family).to_vec();
    exprs.extend([
        Expr::Payload {
            base: PayloadBase::Network,
            offset: family.addr_offsets().0,
            len: family.addr_len(),
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
            data: Data::Verdict(Verdict::Drop),
        },
    ]);
    rule(t, &allow_chain(mapping), exprs)
}

/// A rule in a mapping's allow-list chain, before its drop rule, for each named list it uses:
/// sources in the list's set return (`ip saddr @src_office4 return`) and so fall through to the
/// DNAT rule; the rest go on to the next list and at last to the drop rule.
pub fn source_rule(t: &TableId, mapping: &str, list: &str, family: IpFamily) -> Rule {
    let mut exprs = nfproto_is(family).to_vec();
    exprs.extend([
        Expr::Payload {
            base: PayloadBase::Network,
            offset: family.addr_offsets().0,
            len: family.addr_len(),
            dreg: Register::R1,
        },
        Expr::Lookup {
            sreg: Register::R1,
            dreg: None,
            set: source_set(list, family),
            set_id: 0,
            invert: false,
        },
        Expr::Immediate {
            dreg: Register::Verdict,
            data: Data::Verdict(Verdict::Return),
        },
    ]);
    rule(t, &allow_chain(mapping), exprs)
}

/// `meta nfproto ipv4` / `meta nfproto ipv6`.
fn nfproto_is(family: IpFamily) -> [Expr; 2] {
    [
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Eq,
            data: vec![family.nfproto()],
        },
    ]
}

/// `ip6 daddr != fe80::/10`: the IPv6 rules leave link-local destinations alone. `fib daddr type
/// local` is true for the router's link-local addresses too, but they are not the address a
/// mapping publishes, and a flow from a link-local source cannot be forwarded to another link.
fn not_link_local() -> [Expr; 3] {
    let mut mask = vec![0u8; 16];
    mask[..2].copy_from_slice(&[0xff, 0xc0]);
    let mut prefix = vec![0u8; 16];
    prefix[..2].copy_from_slice(&[0xfe, 0x80]);
    [
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IpFamily::V6.addr_offsets().1,
            len: 16,
            dreg: Register::R1,
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 16,
            mask,
            xor: vec![0; 16],
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Neq,
            data: prefix,
        },
    ]
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
    /// The allow-list verdict map.
    Guard,
    /// The limit object map, dropping what is over its rate.
    Limit,
    /// The connection-counter object map.
    Count,
    /// The DNAT map and the DNAT.
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

/// Where the traffic a DNAT rule handles comes from: each origin has a guard and a DNAT rule per
/// family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Arriving on a WAN interface (`prerouting`).
    Wan,
    /// Arriving on a LAN interface (hairpin, `prerouting`).
    Lan,
    /// The router's own processes (hairpin, `output`).
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

/// The match part of a DNAT rule, followed by the guard vmap or the DNAT (shown for IPv4; the IPv6
/// rule has `meta nfproto ipv6 ip6 daddr != fe80::/10`, `ip6 daddr != @lan_side6`, `@guard6`,
/// `dnat ip6 to … map @dnat6`):
/// - from the WAN: `iifname @wan_ifaces fib daddr type local meta nfproto ipv4`;
/// - from the LAN (hairpin): `iifname @lan_ifaces fib daddr type local fib daddr . iif type != local
///   meta nfproto ipv4 ip daddr != @lan_side4`, so the router's own LAN-side addresses are never
///   taken over (the fib check needs no addresses; the set also covers the router's other LANs);
/// - from the router itself (hairpin, nat output): `fib daddr type local meta nfproto ipv4
///   ip daddr != @lan_side4` (the set holds loopback and the LAN-side addresses).
///
/// With `addressed`, the key starts with the destination address (`ip daddr . meta l4proto . th
/// dport`) and the lookups go to the `_addr` twins of the maps (mappings with `listen`).
fn dispatch(from: Origin, family: IpFamily, which: Lookup, addressed: bool) -> Vec<Expr> {
    let (dnat_id, guard_id, lan_side_id) = family.set_ids();
    let twin = |map: &'static str, id: u32| {
        if addressed {
            (self::addressed(map).to_owned(), addressed_id(id))
        } else {
            (map.to_owned(), id)
        }
    };
    let mut exprs = match from {
        Origin::Wan => iface(Iface::InWan).to_vec(),
        Origin::Lan => iface(Iface::InLan).to_vec(),
        Origin::Router => Vec::new(),
    };
    exprs.extend(fib_type_local(NFTA_FIB_F_DADDR, CmpOp::Eq));
    if matches!(from, Origin::Lan) {
        exprs.extend(fib_type_local(NFTA_FIB_F_DADDR | NFTA_FIB_F_IIF, CmpOp::Neq));
    }
    exprs.extend(nfproto_is(family));
    if family == IpFamily::V6 {
        exprs.extend(not_link_local());
    }
    if !matches!(from, Origin::Wan) {
        exprs.extend([
            Expr::Payload {
                base: PayloadBase::Network,
                offset: family.addr_offsets().1,
                len: family.addr_len(),
                dreg: Register::R1,
            },
            Expr::Lookup {
                sreg: Register::R1,
                dreg: None,
                set: family.lan_side_set().to_owned(),
                set_id: lan_side_id,
                invert: true,
            },
        ]);
    }
    if addressed {
        exprs.push(Expr::Payload {
            base: PayloadBase::Network,
            offset: family.addr_offsets().1,
            len: family.addr_len(),
            dreg: Register::R1,
        });
    }
    let (proto_reg, port_reg) = key_registers(family, addressed);
    exprs.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: proto_reg,
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: port_reg,
        },
    ]);
    let [conn_id, _, limit_id, _] = family.extra_ids();
    match which {
        Lookup::Guard => {
            let (set, set_id) = twin(family.guard_map(), guard_id);
            exprs.push(Expr::Lookup {
                sreg: Register::R1,
                dreg: Some(Register::Verdict),
                set,
                set_id,
                invert: false,
            });
        }
        Lookup::Limit => exprs.extend([
            {
                let (set, set_id) = twin(family.limit_map(), limit_id);
                Expr::Objref {
                    sreg: Register::R1,
                    set,
                    set_id,
                }
            },
            Expr::Immediate {
                dreg: Register::Verdict,
                data: Data::Verdict(Verdict::Drop),
            },
        ]),
        Lookup::Count => {
            let (set, set_id) = twin(family.conn_map(), conn_id);
            exprs.push(Expr::Objref {
                sreg: Register::R1,
                set,
                set_id,
            });
        }
        Lookup::Dnat => {
            let (set, set_id) = twin(family.dnat_map(), dnat_id);
            exprs.push(Expr::Lookup {
                sreg: Register::R1,
                dreg: Some(Register::R1),
                set,
                set_id,
                invert: false,
            });
            exprs.push(Expr::Nat {
                nat_type: NatType::Dnat,
                family: family.nfproto(),
                addr_min: Some(Register::R1),
                addr_max: None,
                proto_min: Some(family.port_register()),
                proto_max: None,
                flags: 0,
            });
        }
    }
    exprs
}

/// Where a key's protocol and port go: right after the address when the key starts with one (32-bit
/// registers 1 and 2 after an IPv4 address; after an IPv6 address, slot 4, which the kernel
/// reports as 128-bit register 2, and 32-bit register 5), else in registers 1 and 9.
fn key_registers(family: IpFamily, addressed: bool) -> (Register, Register) {
    match (addressed, family) {
        (false, _) => (Register::R1, Register::R32(1)),
        (true, IpFamily::V4) => (Register::R32(1), Register::R32(2)),
        (true, IpFamily::V6) => (Register::R2, Register::R32(5)),
    }
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

/// `meta nfproto ipv4 meta l4proto tcp` (nft needs the protocol to type `ct original proto-dst`).
fn family_and_transport(family: IpFamily, transport: portmap_core::Transport) -> Vec<Expr> {
    let mut exprs = nfproto_is(family).to_vec();
    exprs.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::R1,
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Eq,
            data: vec![transport.number()],
        },
    ]);
    exprs
}

/// `meta l4proto . ct original proto-dst` into registers 1 and 9: the key of a DNAT-ed
/// connection's mapping, for packets of either direction. With `addressed`, `ct original ip daddr
/// . meta l4proto . ct original proto-dst` (`ip6` for IPv6): the connection's public address first.
fn original_key(family: IpFamily, addressed: bool) -> Vec<Expr> {
    let mut exprs = Vec::with_capacity(3);
    if addressed {
        exprs.push(Expr::Ct {
            key: match family {
                IpFamily::V4 => NFT_CT_DST_IP,
                IpFamily::V6 => NFT_CT_DST_IP6,
            },
            dreg: Register::R1,
            direction: Some(IP_CT_DIR_ORIGINAL),
        });
    }
    let (proto_reg, port_reg) = key_registers(family, addressed);
    exprs.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: proto_reg,
        },
        Expr::Ct {
            key: NFT_CT_PROTO_DST,
            dreg: port_reg,
            direction: Some(IP_CT_DIR_ORIGINAL),
        },
    ]);
    exprs
}

/// `ct state new`.
fn ct_state_new() -> [Expr; 3] {
    [
        Expr::Ct {
            key: NFT_CT_STATE,
            dreg: Register::R1,
            direction: None,
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 4,
            mask: NF_CT_STATE_NEW.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: Register::R1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// `meta nfproto ipv4 meta l4proto tcp ct status dnat counter name meta l4proto . ct original
/// proto-dst map @traffic4`: every packet of a DNAT-ed connection, both directions, counts in its
/// mapping's traffic counter.
fn forward_count(family: IpFamily, transport: portmap_core::Transport, addressed: bool) -> Vec<Expr> {
    let mut exprs = family_and_transport(family, transport);
    exprs.extend(ct_status_dnat());
    exprs.extend(original_key(family, addressed));
    let id = family.extra_ids()[1];
    exprs.push(Expr::Objref {
        sreg: Register::R1,
        set: map_for_twin(family.traffic_map(), addressed).to_owned(),
        set_id: if addressed { addressed_id(id) } else { id },
    });
    exprs
}

/// `map` or its addressed twin.
pub fn map_for_twin(map: &'static str, addressed: bool) -> &'static str {
    if addressed { self::addressed(map) } else { map }
}

/// `meta nfproto ipv4 meta l4proto tcp ct state new ct status dnat meta l4proto . ct original
/// proto-dst vmap @log4`: the first packet of a new DNAT-ed connection of a logging mapping goes
/// to its log chain, after DNAT (so the log shows the target).
fn forward_log(family: IpFamily, transport: portmap_core::Transport, addressed: bool) -> Vec<Expr> {
    let mut exprs = family_and_transport(family, transport);
    exprs.extend(ct_state_new());
    exprs.extend(ct_status_dnat());
    exprs.extend(original_key(family, addressed));
    let id = family.extra_ids()[3];
    exprs.push(Expr::Lookup {
        sreg: Register::R1,
        dreg: Some(Register::Verdict),
        set: map_for_twin(family.log_map(), addressed).to_owned(),
        set_id: if addressed { addressed_id(id) } else { id },
        invert: false,
    });
    exprs
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

/// `iifname @lan_ifaces oifname @wan_ifaces meta nfproto ipv4 masquerade`.
fn masquerade_lan_to_wan() -> Vec<Expr> {
    let mut exprs = iface(Iface::InLan).to_vec();
    exprs.extend(iface(Iface::OutWan));
    // IPv4 only: LAN IPv6 addresses are routed, not hidden behind the router's.
    exprs.extend(nfproto_is(IpFamily::V4));
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
            (
                Expr::Objref { sreg, set, .. },
                Expr::Objref {
                    sreg: s2, set: n2, ..
                },
            ) => sreg == s2 && set == n2,
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
        timeout: None,
        expiration: None,
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
