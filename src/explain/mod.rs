//! `portmap explain`: what happens *now* to a packet for PROTO/PORT from a source to a public
//! address, as findings, one a sentence, from the live state — the mappings the backend observes
//! (with their damage), the router's interfaces and routes, the forwarding sysctls, and the other
//! tables and chains that see the packet on its way.
//!
//! Two halves that never mix: [`gather`] reads the kernel into [`Facts`] (it never writes), and
//! [`evaluate`] turns a [`Query`] and its facts into an [`Explanation`] without any I/O, so every
//! judgement is unit-tested on hand-built facts. [`explain`] does both.
//!
//! The checks are independent functions over one [`Context`], each pushing its findings; a new
//! property of mappings (a `listen` address, say) is one more check, and `--to` already carries
//! the public address it would be compared with.

mod chains;
mod gather;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use portmap_netlink::{Hook, Interface, NoRoute, Route, RouteType};
use serde_json::{Value, json};

pub use chains::{Fate, PacketView, TableRules};
pub use gather::gather;

use crate::{BackendKind, Error, Forward, Netns, Observed, ObservedMapping, TableState, Transport};

/// The priority of portmap's DNAT (its nat prerouting chain, and iptables' nat table).
const DNAT_PRIORITY: i32 = -100;
/// Conntrack's priority at prerouting: chains before it see no connection state.
const CONNTRACK_PRIORITY: i32 = -200;

/// The packet asked about: `PROTO PORT [--from ADDR] [--to PUBLIC_ADDR]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// TCP or UDP.
    pub transport: Transport,
    /// The public (external) port.
    pub port: u16,
    /// The source address, when given.
    pub from: Option<IpAddr>,
    /// The public address the packet is sent to, when given.
    pub to: Option<IpAddr>,
}

impl Query {
    /// A query, checked: the port is 1–65535, and `from` and `to` are of one family.
    pub fn new(
        transport: Transport,
        port: u16,
        from: Option<IpAddr>,
        to: Option<IpAddr>,
    ) -> Result<Self, String> {
        if port == 0 {
            return Err("port 0 cannot be forwarded: give a port from 1 to 65535".to_owned());
        }
        if let (Some(f), Some(t)) = (from, to)
            && f.is_ipv4() != t.is_ipv4()
        {
            return Err(format!(
                "--from {f} and --to {t} are of different address families: a packet has one"
            ));
        }
        Ok(Query {
            transport,
            port,
            from,
            to,
        })
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport, self.port)?;
        if let Some(from) = self.from {
            write!(f, " from {from}")?;
        }
        if let Some(to) = self.to {
            write!(f, " to {to}")?;
        }
        Ok(())
    }
}

/// What a finding means for the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Effect {
    /// A step of its way that works.
    Ok,
    /// Worth knowing; changes nothing.
    Info,
    /// Could stop it, depending on what explain cannot know or evaluate.
    MayBlock,
    /// Stops it.
    Blocks,
}

impl Effect {
    /// `ok`, `info`, `may_block`, `blocks` (the JSON values).
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Ok => "ok",
            Effect::Info => "info",
            Effect::MayBlock => "may_block",
            Effect::Blocks => "blocks",
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Effect::Ok => "ok     ",
            Effect::Info => "note   ",
            Effect::MayBlock => "maybe  ",
            Effect::Blocks => "BLOCKS ",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// portmap's table: missing or damaged.
    Table,
    /// The mapping that takes the packet.
    Mapping,
    /// No mapping takes it (and which are near).
    NoMapping,
    /// How a damaged mapping falls short.
    Damage,
    /// Where the source is, and the interface the packet arrives on.
    Source,
    /// The mapping's allow-list and the source.
    AllowFrom,
    /// The public address (`--to`) and the router's WAN addresses.
    Address,
    /// Where the packet goes after DNAT.
    Target,
    /// The router's route to the target, and whether it is on a LAN interface.
    Route,
    /// `net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding`.
    Forwarding,
    /// NAT reflection for LAN sources and the router itself.
    Hairpin,
    /// Another nftables table's chain on the packet's way.
    Chain,
    /// An iptables chain on the packet's way (the coexistence checks).
    Iptables,
}

impl Kind {
    /// The JSON value: `table`, `mapping`, `no_mapping`, `damage`, `source`, `allow_from`,
    /// `address`, `target`, `route`, `forwarding`, `hairpin`, `chain`, `iptables`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Mapping => "mapping",
            Kind::NoMapping => "no_mapping",
            Kind::Damage => "damage",
            Kind::Source => "source",
            Kind::AllowFrom => "allow_from",
            Kind::Address => "address",
            Kind::Target => "target",
            Kind::Route => "route",
            Kind::Forwarding => "forwarding",
            Kind::Hairpin => "hairpin",
            Kind::Chain => "chain",
            Kind::Iptables => "iptables",
        }
    }
}

/// One finding: a sentence, what it is about and what it means for the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about.
    pub kind: Kind,
    /// What it means for the packet.
    pub effect: Effect,
    /// The sentence.
    pub message: String,
}

/// Everything explain found for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The question.
    pub query: Query,
    /// The mapping that takes the packet, if one does.
    pub mapping: Option<String>,
    /// Where it is sent after DNAT (`address`, `port`).
    pub target: Option<(IpAddr, u16)>,
    /// The findings, in the order of the packet's way.
    pub findings: Vec<Finding>,
}

impl Explanation {
    /// Whether the packet would be forwarded: nothing found stops it.
    pub fn forwarded(&self) -> bool {
        !self.findings.iter().any(|f| f.effect == Effect::Blocks)
    }

    /// Whether explain could evaluate everything on the way (no "may block" finding).
    pub fn certain(&self) -> bool {
        !self.findings.iter().any(|f| f.effect == Effect::MayBlock)
    }

    /// The `explain --json` document (docs/json.md).
    pub fn to_json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.as_str(),
                    "effect": f.effect.as_str(),
                    "message": f.message,
                })
            })
            .collect();
        portmap_core::json::document(
            "explain",
            json!({
                "query": {
                    "protocol": self.query.transport.to_string(),
                    "port": self.query.port,
                    "from": self.query.from.map(|a| a.to_string()),
                    "to": self.query.to.map(|a| a.to_string()),
                },
                "forwarded": self.forwarded(),
                "certain": self.certain(),
                "mapping": self.mapping,
                "target": self.target.map(|(a, p)| json!({"address": a.to_string(), "port": p})),
                "findings": findings,
            }),
        )
    }
}

impl fmt::Display for Explanation {
    /// One finding a line, then the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{}{}", finding.effect.mark(), finding.message)?;
        }
        match (self.forwarded(), self.target) {
            (true, Some((a, p))) => {
                write!(f, "=> {} is forwarded to {}", self.query, socket(a, p))?;
                if !self.certain() {
                    write!(f, ", unless what is marked \"maybe\" stops it")?;
                }
                writeln!(f)
            }
            _ => writeln!(f, "=> {} is not forwarded", self.query),
        }
    }
}

fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// What [`gather`] read: everything [`evaluate`] judges.
#[derive(Debug, Clone)]
pub struct Facts {
    /// What the backend observes of portmap's own table (mappings, damage, settings, forwarding
    /// sysctls).
    pub observed: Observed,
    /// The router's interfaces and addresses.
    pub interfaces: Vec<Interface>,
    /// The kernel's route to the query's source (`--from`), when one was given.
    pub source_route: Option<Result<Route, NoRoute>>,
    /// The kernel's route to the mapping's target, when a mapping takes the packet.
    pub target_route: Option<Result<Route, NoRoute>>,
    /// Other nftables tables with base chains at prerouting, forward or input.
    pub tables: Vec<TableRules>,
    /// Whether portmap's own table is nft (so iptables-nft's tables are foreign tables to
    /// evaluate) or iptables (so they are judged by [`Facts::iptables_blockers`]).
    pub nft_backend: bool,
    /// The iptables backends' sentences for filter `FORWARD` chains that drop DNAT-ed traffic.
    pub iptables_blockers: Vec<String>,
}

/// Gather the facts for `query` in `netns` and evaluate them.
pub fn explain(kind: BackendKind, netns: &Netns, table: &str, query: &Query) -> Result<Explanation, Error> {
    let facts = gather(kind, netns, table, query)?;
    Ok(evaluate(query, &facts))
}

/// The mapping and forward that take `query`'s packet, if one does: a forward on the `--to`
/// address (`listen`) comes before one on any address, as the kernel looks them up; without
/// `--to`, a forward on any address, else the first on an address of its own.
pub fn mapped<'o>(query: &Query, observed: &'o Observed) -> Option<(&'o ObservedMapping, &'o Forward)> {
    let find = |wanted: &dyn Fn(&Forward) -> bool| {
        observed.mappings.iter().find_map(|m| {
            m.forwards
                .iter()
                .find(|f| f.transport == query.transport && f.port == query.port && wanted(f))
                .map(|f| (m, f))
        })
    };
    match query.to {
        Some(to) => find(&|f| f.listen == Some(to)).or_else(|| find(&|f| f.listen.is_none())),
        None => find(&|f| f.listen.is_none()).or_else(|| find(&|f| f.listen.is_some())),
    }
}

/// Where the source sits, seen from the router.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    /// Not given: a host on the internet.
    Internet,
    /// Reached through this WAN interface.
    Wan(u32, String),
    /// Reached through this LAN interface (hairpin).
    Lan(u32, String),
    /// Reached through an interface that is neither.
    Other(u32, String),
    /// An address of the router itself.
    Router,
    /// The router has no route to it.
    Unroutable(NoRoute),
}

/// Everything the checks share.
#[derive(Debug)]
pub struct Context<'a> {
    query: &'a Query,
    facts: &'a Facts,
    mapping: Option<(&'a ObservedMapping, &'a Forward)>,
    side: Side,
    /// The public address the packet is sent to: `--to`, or the WAN interfaces' only address of
    /// the family.
    public: Option<IpAddr>,
    findings: Vec<Finding>,
}

impl Context<'_> {
    fn push(&mut self, kind: Kind, effect: Effect, message: impl Into<String>) {
        self.findings.push(Finding {
            kind,
            effect,
            message: message.into(),
        });
    }

    fn iface(&self, index: u32) -> Option<&Interface> {
        self.facts.interfaces.iter().find(|i| i.index == index)
    }

    fn is_wan(&self, name: &str) -> bool {
        self.facts
            .observed
            .settings
            .wan_interfaces
            .iter()
            .any(|w| w == name)
    }

    fn is_lan(&self, name: &str) -> bool {
        self.facts
            .observed
            .settings
            .lan_interfaces
            .iter()
            .any(|l| l == name)
    }

    /// The interface holding `addr`, if the router has it.
    fn holder(&self, addr: IpAddr) -> Option<&Interface> {
        self.facts
            .interfaces
            .iter()
            .find(|i| i.addrs.iter().any(|(a, _)| *a == addr))
    }

    fn is_local(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || self.holder(addr).is_some()
    }

    /// The WAN interfaces' addresses of one family (IPv6: not link-local).
    fn wan_addresses(&self, v6: bool) -> Vec<(IpAddr, &str)> {
        self.facts
            .interfaces
            .iter()
            .filter(|i| self.is_wan(&i.name))
            .flat_map(|i| i.addrs.iter().map(move |(a, _)| (*a, i.name.as_str())))
            .filter(|(a, _)| match a {
                IpAddr::V4(_) => !v6,
                IpAddr::V6(a) => v6 && (a.segments()[0] & 0xffc0) != 0xfe80,
            })
            .collect()
    }

    /// The packet's family: from the source, the public address, else the target.
    fn is_v6(&self) -> bool {
        self.query
            .from
            .or(self.query.to)
            .or(self.mapping.map(|(_, f)| f.to))
            .is_some_and(|a| a.is_ipv6())
    }

    /// The interface the packet arrives on, when known.
    fn input(&self) -> Option<(u32, String)> {
        match &self.side {
            Side::Wan(i, n) | Side::Lan(i, n) | Side::Other(i, n) => Some((*i, n.clone())),
            Side::Internet => {
                let wans: Vec<&Interface> = self
                    .facts
                    .interfaces
                    .iter()
                    .filter(|i| self.is_wan(&i.name))
                    .collect();
                match wans.as_slice() {
                    [only] => Some((only.index, only.name.clone())),
                    _ => None,
                }
            }
            Side::Router | Side::Unroutable(_) => None,
        }
    }

    /// The interface the target is reached through, when known.
    fn target_oif(&self) -> Option<(u32, String)> {
        let Some(Ok(route)) = &self.facts.target_route else {
            return None;
        };
        let index = route.oif?;
        self.iface(index).map(|i| (i.index, i.name.clone()))
    }
}

/// Judge `facts` for `query`: pure, no I/O, cannot fail.
pub fn evaluate(query: &Query, facts: &Facts) -> Explanation {
    let mapping = mapped(query, &facts.observed);
    let mut cx = Context {
        query,
        facts,
        mapping,
        side: Side::Internet,
        public: None,
        findings: Vec::new(),
    };
    cx.side = side_of(&cx);
    cx.public = query
        .to
        .or_else(|| match cx.wan_addresses(cx.is_v6()).as_slice() {
            [(only, _)] => Some(*only),
            _ => None,
        });
    let checks: [fn(&mut Context<'_>); 12] = [
        check_table,
        check_mapping,
        check_damage,
        check_source,
        check_address,
        check_allow_from,
        check_hairpin,
        check_target,
        check_route,
        check_forwarding,
        check_chains,
        check_iptables,
    ];
    for check in checks {
        check(&mut cx);
    }
    Explanation {
        query: *query,
        mapping: mapping.map(|(m, _)| m.name.clone()),
        target: mapping.map(|(_, f)| (f.to, f.to_port)),
        findings: cx.findings,
    }
}

fn side_of(cx: &Context<'_>) -> Side {
    let Some(from) = cx.query.from else {
        return Side::Internet;
    };
    if cx.is_local(from) {
        return Side::Router;
    }
    match &cx.facts.source_route {
        None => Side::Internet,
        Some(Err(no)) => Side::Unroutable(*no),
        Some(Ok(route)) if route.kind == RouteType::Local => Side::Router,
        Some(Ok(route)) => match route.oif.and_then(|i| cx.iface(i)) {
            Some(i) if cx.is_wan(&i.name) => Side::Wan(i.index, i.name.clone()),
            Some(i) if cx.is_lan(&i.name) => Side::Lan(i.index, i.name.clone()),
            Some(i) => Side::Other(i.index, i.name.clone()),
            None => Side::Unroutable(NoRoute { errno: 0 }),
        },
    }
}

fn check_table(cx: &mut Context<'_>) {
    let observed = &cx.facts.observed;
    match &observed.state {
        TableState::Missing => cx.push(
            Kind::Table,
            Effect::Blocks,
            format!(
                "portmap's {} does not exist ({} backend): portmap forwards nothing here; `portmap apply` creates it",
                table_word(observed),
                observed.backend
            ),
        ),
        TableState::Damaged { reasons } => {
            for reason in reasons {
                cx.push(
                    Kind::Table,
                    Effect::MayBlock,
                    format!(
                        "portmap's {} was changed by hand: {reason}; what follows is what the kernel holds, and `portmap apply` repairs it",
                        table_word(observed)
                    ),
                );
            }
        }
        TableState::Intact => {}
    }
}

fn table_word(observed: &Observed) -> String {
    if observed.backend == "nft" {
        format!("table {}", observed.table)
    } else {
        format!("chains {}", observed.table)
    }
}

fn check_mapping(cx: &mut Context<'_>) {
    let q = cx.query;
    if let Some((m, f)) = cx.mapping {
        let description = m
            .description
            .as_deref()
            .map(|d| format!(" ({})", crate::shown(d)))
            .unwrap_or_default();
        let run = portmap_core::fold_forwards(&m.forwards)
            .into_iter()
            .find(|r| {
                r.to == f.to
                    && r.port.start <= f.port
                    && f.port <= r.port.end
                    && r.protocol.transports().contains(&f.transport)
            })
            .filter(|r| r.port.start != r.port.end)
            .map(|r| format!(", port {} of {r}", f.port))
            .unwrap_or_default();
        // iptables keeps an expired mapping's rules, which match nothing since its `--datestop`.
        if let Some(at) = m.expires.filter(|_| m.is_expired(cx.facts.observed.observed_at)) {
            cx.push(
                Kind::Mapping,
                Effect::Blocks,
                format!(
                    "{}/{} was mapping {}, which expired at {at}: its rules match nothing since then (give it a later \
                     `expires` to forward it again)",
                    q.transport, q.port, m.name
                ),
            );
            return;
        }
        cx.push(
            Kind::Mapping,
            Effect::Ok,
            format!(
                "{}/{}{} is mapping {}{description}: DNAT to {}{run}",
                q.transport,
                q.port,
                f.listen.map(|a| format!(" on {a}")).unwrap_or_default(),
                m.name,
                socket(f.to, f.to_port)
            ),
        );
        let v6 = cx.query.from.or(cx.query.to).map(|a| a.is_ipv6());
        if let Some(v6) = v6
            && v6 != f.to.is_ipv6()
        {
            cx.push(
                Kind::Mapping,
                Effect::Blocks,
                format!(
                    "mapping {} forwards {} packets only (its target {} is {}): a packet {} is not forwarded",
                    m.name,
                    family_name(f.to.is_ipv6()),
                    f.to,
                    family_name(f.to.is_ipv6()),
                    if cx.query.from.is_some() {
                        "from an address of the other family"
                    } else {
                        "to an address of the other family"
                    }
                ),
            );
        }
        return;
    }
    if cx.facts.observed.state == TableState::Missing {
        return;
    }
    let mut near = Vec::new();
    for m in &cx.facts.observed.mappings {
        for f in &m.forwards {
            if f.port == q.port && f.transport != q.transport {
                near.push(format!("{}/{} is mapped ({})", f.transport, f.port, m.name));
            }
        }
    }
    near.dedup();
    // The closest ports of the same protocol, below and above.
    let same: Vec<(u16, &str)> = cx
        .facts
        .observed
        .mappings
        .iter()
        .flat_map(|m| {
            m.forwards
                .iter()
                .filter(|f| f.transport == q.transport)
                .map(move |f| (f.port, m.name.as_str()))
        })
        .collect();
    let below = same.iter().filter(|(p, _)| *p < q.port).max_by_key(|(p, _)| *p);
    let above = same.iter().filter(|(p, _)| *p > q.port).min_by_key(|(p, _)| *p);
    for (port, name) in [below, above].into_iter().flatten() {
        near.push(format!("{}/{port} is mapped ({name})", q.transport));
    }
    let message = if near.is_empty() {
        if cx.facts.observed.mappings.is_empty() {
            format!(
                "no mapping for {}/{}: portmap's table holds no mappings",
                q.transport, q.port
            )
        } else {
            format!("no mapping for {}/{}", q.transport, q.port)
        }
    } else {
        format!("no mapping for {}/{}; {}", q.transport, q.port, near.join("; "))
    };
    cx.push(Kind::NoMapping, Effect::Blocks, message);
}

fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn check_damage(cx: &mut Context<'_>) {
    let Some((m, _)) = cx.mapping else { return };
    for d in &m.damage {
        cx.push(
            Kind::Damage,
            Effect::MayBlock,
            format!(
                "mapping {} is damaged: {d}; the kernel enforces what is left, and `portmap apply` repairs it",
                m.name
            ),
        );
    }
}

fn check_source(cx: &mut Context<'_>) {
    let from = cx.query.from;
    let side = cx.side.clone();
    match (side, from) {
        (Side::Internet, _) => {
            let wans = cx.facts.observed.settings.wan_interfaces.join(", ");
            cx.push(
                Kind::Source,
                Effect::Info,
                format!("no --from: a source on the internet, arriving on a WAN interface ({wans})"),
            );
        }
        (Side::Wan(_, name), Some(from)) => cx.push(
            Kind::Source,
            Effect::Ok,
            format!("{from} is reached through {name}, a WAN interface: the packet arrives there"),
        ),
        (Side::Lan(_, name), Some(from)) => cx.push(
            Kind::Source,
            Effect::Info,
            format!("{from} is on the LAN side (reached through {name}): the connection needs hairpin"),
        ),
        (Side::Router, Some(from)) => cx.push(
            Kind::Source,
            Effect::Info,
            format!("{from} is an address of the router itself: a connection of the router's own processes"),
        ),
        (Side::Other(_, name), Some(from)) => cx.push(
            Kind::Source,
            Effect::Blocks,
            format!(
                "{from} is reached through {name}, which is neither a WAN interface ({}) nor a LAN interface ({}): portmap translates only what arrives on those",
                list_or_none(&cx.facts.observed.settings.wan_interfaces),
                list_or_none(&cx.facts.observed.settings.lan_interfaces),
            ),
        ),
        (Side::Unroutable(no), Some(from)) => cx.push(
            Kind::Source,
            Effect::Blocks,
            format!(
                "the router has no route back to {from} ({}): the replies could not be sent",
                if no.errno == 0 { "its route names no known interface" } else { no.reason() }
            ),
        ),
        (_, None) => {}
    }
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn check_address(cx: &mut Context<'_>) {
    if cx.facts.observed.state == TableState::Missing {
        return;
    }
    let v6 = cx.is_v6();
    let wan = cx.wan_addresses(v6);
    let Some(to) = cx.query.to else {
        let shown: Vec<String> = wan.iter().map(|(a, i)| format!("{a} on {i}")).collect();
        if shown.is_empty() {
            cx.push(
                Kind::Address,
                Effect::MayBlock,
                format!(
                    "the WAN interfaces ({}) have no {} address now: nothing arrives for the mappings until they get one",
                    list_or_none(&cx.facts.observed.settings.wan_interfaces),
                    family_name(v6)
                ),
            );
        } else {
            cx.push(
                Kind::Address,
                Effect::Info,
                format!(
                    "no --to: sent to an address of the router, such as its WAN address {}",
                    shown.join(", ")
                ),
            );
        }
        return;
    };
    if let Some((_, name)) = wan.iter().find(|(a, _)| *a == to) {
        let message = format!("{to} is the router's address on {name}, a WAN interface");
        cx.push(Kind::Address, Effect::Ok, message);
        return;
    }
    match cx.holder(to).map(|i| i.name.clone()) {
        Some(name) if matches!(cx.side, Side::Lan(..)) && cx.is_lan(&name) => cx.push(
            Kind::Address,
            Effect::Blocks,
            format!(
                "{to} is the router's own address on {name}, a LAN interface: hairpin never takes over the router's LAN-side addresses, so the router's own service on port {} answers",
                cx.query.port
            ),
        ),
        Some(name) => cx.push(
            Kind::Address,
            Effect::Info,
            format!(
                "{to} is the router's address on {name}, not a WAN address; portmap translates packets for any address of the router ({})",
                if wan.is_empty() {
                    "the WAN interfaces have none now".to_owned()
                } else {
                    let w: Vec<String> = wan.iter().map(|(a, i)| format!("{a} on {i}")).collect();
                    format!("WAN: {}", w.join(", "))
                }
            ),
        ),
        None if to.is_loopback() && matches!(cx.side, Side::Router) => cx.push(
            Kind::Address,
            Effect::Blocks,
            format!("{to} is loopback: the router's own connections to loopback are never translated"),
        ),
        None => cx.push(
            Kind::Address,
            Effect::Blocks,
            format!(
                "{to} is not an address of the router: portmap translates only packets addressed to the router, so this one would be routed onwards untranslated"
            ),
        ),
    }
}

fn check_allow_from(cx: &mut Context<'_>) {
    let Some((m, _)) = cx.mapping else { return };
    if m.allow_from.is_empty() {
        cx.push(
            Kind::AllowFrom,
            Effect::Ok,
            format!("mapping {} has no allow_from: every source is admitted", m.name),
        );
        return;
    }
    let list: Vec<String> = m.allow_from.iter().map(ToString::to_string).collect();
    let list = list.join(", ");
    let Some(from) = cx.query.from else {
        cx.push(
            Kind::AllowFrom,
            Effect::Info,
            format!(
                "mapping {} admits only sources in its allow_from ({list}); give --from to check one",
                m.name
            ),
        );
        return;
    };
    // The most specific entry that holds the source.
    let admitting: Option<&IpNet> = m
        .allow_from
        .iter()
        .filter(|n| n.contains(&from))
        .max_by_key(|n| n.prefix_len());
    match admitting {
        Some(net) => cx.push(
            Kind::AllowFrom,
            Effect::Ok,
            format!(
                "admitted: {from} is in allow_from entry {net} of mapping {}",
                m.name
            ),
        ),
        None => cx.push(
            Kind::AllowFrom,
            Effect::Blocks,
            format!(
                "refused: {from} is not in allow_from of mapping {} ({list}); its packets are dropped",
                m.name
            ),
        ),
    }
}

fn check_hairpin(cx: &mut Context<'_>) {
    if cx.mapping.is_none() {
        return;
    }
    let settings = &cx.facts.observed.settings;
    match &cx.side {
        Side::Lan(_, name) => {
            if settings.hairpin {
                let lan_addr = cx
                    .facts
                    .interfaces
                    .iter()
                    .find(|i| &i.name == name)
                    .and_then(|i| i.addrs.iter().find(|(a, _)| a.is_ipv6() == cx.is_v6()))
                    .map(|(a, _)| format!(" ({a})"))
                    .unwrap_or_default();
                cx.push(
                    Kind::Hairpin,
                    Effect::Ok,
                    format!(
                        "hairpin is on: the connection from {name} is reflected to the target and masqueraded to the router's LAN address{lan_addr}, which the target sees as its peer"
                    ),
                );
            } else {
                cx.push(
                    Kind::Hairpin,
                    Effect::Blocks,
                    format!(
                        "hairpin is off: a connection from the LAN side ({name}) to the public address is not reflected to the target"
                    ),
                );
            }
        }
        Side::Router => {
            if settings.hairpin {
                cx.push(
                    Kind::Hairpin,
                    Effect::Ok,
                    "hairpin is on: the router's own connection to the public address is translated in nat output; other tables' output chains are not evaluated",
                );
            } else {
                cx.push(
                    Kind::Hairpin,
                    Effect::Blocks,
                    "hairpin is off: the router's own connections to the public address are not translated, they reach the router's own port",
                );
            }
        }
        _ => {}
    }
}

fn check_target(cx: &mut Context<'_>) {
    let Some((_, f)) = cx.mapping else { return };
    let lan: Vec<(String, IpNet)> = cx
        .facts
        .interfaces
        .iter()
        .filter(|i| cx.is_lan(&i.name))
        .flat_map(|i| {
            i.addrs
                .iter()
                .filter_map(|(a, p)| IpNet::new(*a, *p).ok().map(|n| (i.name.clone(), n.trunc())))
        })
        .collect();
    match lan.iter().find(|(_, n)| n.contains(&f.to)) {
        Some((name, net)) => {
            let message = format!(
                "the target {} is on {name}'s network {net}, a LAN interface",
                f.to
            );
            cx.push(Kind::Target, Effect::Ok, message);
        }
        None if cx.is_local(f.to) => {}
        None => cx.push(
            Kind::Target,
            Effect::Info,
            format!(
                "the target {} is on none of the LAN interfaces' networks ({}); it is reached by route",
                f.to,
                list_or_none(&cx.facts.observed.settings.lan_interfaces)
            ),
        ),
    }
}

fn check_route(cx: &mut Context<'_>) {
    let Some((_, f)) = cx.mapping else { return };
    let Some(route) = &cx.facts.target_route else {
        return;
    };
    let to = f.to;
    match route {
        Err(no) => cx.push(
            Kind::Route,
            Effect::Blocks,
            format!("the router has no route to the target {to}: {}", no.reason()),
        ),
        Ok(r) if r.kind == RouteType::Local => cx.push(
            Kind::Route,
            Effect::Info,
            format!(
                "the target {to} is an address of the router itself: the packet is delivered to the router's own port {}, not forwarded",
                f.to_port
            ),
        ),
        Ok(r) if matches!(r.kind, RouteType::Blackhole | RouteType::Unreachable | RouteType::Prohibit) => cx
            .push(
                Kind::Route,
                Effect::Blocks,
                format!("the route to the target {to} is a {:?} route", r.kind),
            ),
        Ok(r) => {
            let name = r.oif.and_then(|i| cx.iface(i)).map(|i| i.name.clone());
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            match name {
                Some(name) if cx.is_wan(&name) => cx.push(
                    Kind::Route,
                    Effect::MayBlock,
                    format!(
                        "the router reaches the target {to} through {name}{via}, a WAN interface: the forwarded packet goes back out to the internet side"
                    ),
                ),
                Some(name) => cx.push(
                    Kind::Route,
                    Effect::Ok,
                    format!("the router reaches the target {to} through {name}{via}"),
                ),
                None => cx.push(
                    Kind::Route,
                    Effect::MayBlock,
                    format!("the router's route to the target {to} names no interface it has"),
                ),
            }
        }
    }
}

fn local_target(cx: &Context<'_>) -> bool {
    matches!(&cx.facts.target_route, Some(Ok(r)) if r.kind == RouteType::Local)
}

fn check_forwarding(cx: &mut Context<'_>) {
    let Some((_, f)) = cx.mapping else { return };
    if local_target(cx) {
        return;
    }
    let env = &cx.facts.observed.environment;
    let (flag, key) = if f.to.is_ipv6() {
        (env.ipv6_forwarding, "net.ipv6.conf.all.forwarding")
    } else {
        (env.ipv4_forwarding, "net.ipv4.ip_forward")
    };
    match flag {
        Some(true) => cx.push(
            Kind::Forwarding,
            Effect::Ok,
            format!("{} forwarding is on ({key} = 1)", family_name(f.to.is_ipv6())),
        ),
        Some(false) => cx.push(
            Kind::Forwarding,
            Effect::Blocks,
            format!(
                "{} forwarding is disabled ({key} = 0): the router does not pass forwarded packets; `sysctl -w {key}=1` turns it on",
                family_name(f.to.is_ipv6())
            ),
        ),
        None => cx.push(
            Kind::Forwarding,
            Effect::MayBlock,
            format!("{key} could not be read"),
        ),
    }
}

/// The packet as the chains at one point of its way see it.
fn views(cx: &Context<'_>) -> Option<(PacketView, PacketView, PacketView)> {
    let (_, f) = cx.mapping?;
    let tcp = cx.query.transport == Transport::Tcp;
    let input = cx.input();
    let daddr_local = cx.public.map(|p| cx.is_local(p));
    let daddr_local_on_iif = match (cx.public, &input) {
        (Some(p), Some((i, _))) => Some(cx.iface(*i).is_some_and(|i| i.addrs.iter().any(|(a, _)| *a == p))),
        _ => None,
    };
    let saddr_oif = match &cx.facts.source_route {
        Some(Ok(r)) => r.oif,
        Some(Err(_)) => Some(0),
        None => None,
    };
    let before = PacketView {
        l4proto: cx.query.transport.number(),
        saddr: cx.query.from,
        daddr: cx.public,
        sport: None,
        dport: Some(cx.query.port),
        tcp_flags: tcp.then_some(0x02),
        iif: input.clone(),
        oif: None,
        ct_state: Some(chains::CT_STATE_NEW),
        ct_status: Some(0),
        daddr_local,
        daddr_local_on_iif,
        saddr_oif,
    };
    let after = PacketView {
        daddr: Some(f.to),
        dport: Some(f.to_port),
        oif: cx.target_oif(),
        ct_status: Some(chains::CT_STATUS_DNAT),
        daddr_local: Some(cx.is_local(f.to)),
        daddr_local_on_iif: None,
        ..before.clone()
    };
    let reply = PacketView {
        l4proto: before.l4proto,
        saddr: Some(f.to),
        daddr: cx.query.from,
        sport: Some(f.to_port),
        dport: None,
        tcp_flags: tcp.then_some(0x12),
        iif: cx.target_oif(),
        oif: input,
        ct_state: Some(chains::CT_STATE_ESTABLISHED),
        ct_status: Some(chains::CT_STATUS_DNAT | chains::CT_STATUS_REPLIED),
        daddr_local: cx.query.from.map(|a| cx.is_local(a)),
        daddr_local_on_iif: None,
        saddr_oif: match &cx.facts.target_route {
            Some(Ok(r)) => r.oif,
            Some(Err(_)) => Some(0),
            None => None,
        },
    };
    Some((before, after, reply))
}

fn check_chains(cx: &mut Context<'_>) {
    if matches!(cx.side, Side::Router) {
        return;
    }
    let Some((before, after, reply)) = views(cx) else {
        return;
    };
    let local = local_target(cx);
    let mut found = Vec::new();
    for table in &cx.facts.tables {
        for chain in &table.chains {
            let Some(base) = &chain.base else { continue };
            // Which packet this chain sees, and whether it is the reply.
            let seen: Vec<(&PacketView, bool)> = match base.hook {
                Hook::Prerouting if base.chain_type == "nat" => {
                    if base.priority <= DNAT_PRIORITY {
                        vec![(&before, false)]
                    } else {
                        Vec::new()
                    }
                }
                Hook::Prerouting => {
                    let first = if base.priority <= DNAT_PRIORITY {
                        &before
                    } else {
                        &after
                    };
                    vec![(first, false), (&reply, true)]
                }
                Hook::Forward if !local => vec![(&after, false), (&reply, true)],
                Hook::Input if local => vec![(&after, false)],
                _ => Vec::new(),
            };
            for (packet, is_reply) in seen {
                if !table.sees(packet) {
                    continue;
                }
                let mut packet = packet.clone();
                if base.hook == Hook::Prerouting && base.priority < CONNTRACK_PRIORITY {
                    packet.ct_state = None;
                    packet.ct_status = None;
                }
                let fate = chains::fate(table, chain, &packet);
                found.push(chain_finding(
                    table,
                    chain,
                    base.hook,
                    base.priority,
                    is_reply,
                    &fate,
                ));
            }
        }
    }
    for (effect, message) in found {
        cx.push(Kind::Chain, effect, message);
    }
}

fn chain_finding(
    table: &TableRules,
    chain: &portmap_netlink::Chain,
    hook: Hook,
    priority: i32,
    reply: bool,
    fate: &Fate,
) -> (Effect, String) {
    let hook = match hook {
        Hook::Prerouting => "prerouting",
        Hook::Forward => "forward",
        Hook::Input => "input",
        _ => "another hook",
    };
    let what = if reply { "its replies" } else { "it" };
    let name = format!(
        "table {}, chain {} (hook {hook}, priority {priority})",
        table.display(),
        chain.name
    );
    match fate {
        Fate::Passes => (Effect::Ok, format!("{name} lets {what} through")),
        Fate::Drops { at } => (
            Effect::Blocks,
            format!(
                "{name} drops {what}: {at}{}",
                if reply {
                    "; accept `ct state established,related` there"
                } else {
                    "; `ct status dnat accept` there lets port forwards through"
                }
            ),
        ),
        Fate::MayDrop { at, because } => (
            Effect::MayBlock,
            format!("{name} may drop {what} at {at}: {}", because.join("; ")),
        ),
        Fate::Translates { at, because } if because.is_empty() => (
            Effect::Blocks,
            format!("{name} translates it first ({at}), before portmap's DNAT can"),
        ),
        Fate::Translates { at, because } => (
            Effect::MayBlock,
            format!(
                "{name} may translate it first ({at}), before portmap's DNAT: {}",
                because.join("; ")
            ),
        ),
    }
}

fn check_iptables(cx: &mut Context<'_>) {
    if cx.mapping.is_none() || local_target(cx) || matches!(cx.side, Side::Router) {
        return;
    }
    for sentence in &cx.facts.iptables_blockers {
        cx.push(
            Kind::Iptables,
            Effect::MayBlock,
            format!(
                "{sentence} (explain does not evaluate iptables rules one by one: a rule of that chain may still accept it)"
            ),
        );
    }
}
