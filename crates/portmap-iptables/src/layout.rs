//! The shape of what portmap writes into iptables, in one place: chain names, the marker, the jump
//! rules from the built-in chains, and every rule as the exact text `iptables-save` prints back
//! (so that what apply writes, what observe reads and what render prints are compared as strings).
//! `commit` sends it, `observe` compares the kernel against it, `render` prints it.
//!
//! Per address family (IPv4 through `iptables`, IPv6 through `ip6tables`), with prefix `P`
//! (`PORTMAP` by default):
//!
//! - table **nat**:
//!   - `P-MARK`, never jumped to: portmap's marker (`-m comment --comment "managed by portmap"` as its
//!     first rule), the settings the chains were built for (comment-only rules `wan`, `lan`,
//!     `masquerade`, `hairpin`) and, in IPv4 nat only, the commit serial (`generation N`, see
//!     [`serial_rule`]). Chains of the prefix in a table whose `P-MARK` does not start with
//!     the marker are not portmap's: they are never rebuilt or deleted.
//!   - `P-PRE` (from `PREROUTING`): marks first packets arriving on a LAN interface (bit
//!     [`LAN_MARK`], for masquerade and hairpin), sends packets arriving on a WAN interface and
//!     addressed to the router (`-m addrtype --dst-type LOCAL`) to `P-DNAT`, and with hairpin those
//!     arriving on a LAN interface addressed to one of the router's addresses that is not local on
//!     that interface (`--limit-iface-in`) to `P-HAIR`.
//!   - `P-HAIR`, `P-LOCAL` (from `OUTPUT`): return for the router's loopback and LAN-side addresses,
//!     then `P-DNAT` (router-local access to the public address only through `P-LOCAL`).
//!   - `P-POST` (from `POSTROUTING`): masquerade LAN → WAN (IPv4), and reflected flows (hairpin).
//!   - `P-DNAT`: `-p tcp` to the dispatch tree `P-NT-0-65535`, `-p udp` to `P-NU-0-65535`; the trees
//!     (see [`crate::tree`]) end in one DNAT rule per run of ports of a mapping, commented with the
//!     mapping's name (and description).
//!   - `P-STALE`, never jumped to: comment-only records of pending conntrack cleanups.
//! - table **filter**:
//!   - `P-MARK` (marker and settings, as in nat);
//!   - `P-FWD` (from `FORWARD` and `OUTPUT`, for DNAT-ed connections only): the trees `P-FT-…`,
//!     `P-FU-…` keyed on the original destination port (`-m conntrack --ctorigdstport`), ending in
//!     each mapping's ACCEPT rules (one per allowed source prefix, or one for everyone) and, for a
//!     mapping with an allow-list, a DROP for every other source.
//!
//! This module builds text only; it must not run anything.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portmap_core::{Forward, Mapping, ObservedMapping, Settings, StaleFlows, Transport};
use portmap_netlink::link::Interface;

use crate::tree::{self, Entry, Kind};

/// Default chain prefix.
pub const DEFAULT_PREFIX: &str = "PORTMAP";
/// Longest prefix accepted: the longest chain name (`P-NT-61440-65535`, 14 characters after the
/// prefix) then stays within iptables' 28-character limit.
pub const MAX_PREFIX_LEN: usize = 12;
/// iptables' limit on chain names.
pub const MAX_CHAIN_LEN: usize = 28;
/// iptables' limit on a comment (`-m comment`), in bytes.
pub const MAX_COMMENT_LEN: usize = 255;
/// The marker: first rule of every `P-MARK` chain.
pub const MARKER: &str = "managed by portmap";
/// The packet-mark bit portmap sets on the first packet of a connection that arrived on a LAN
/// interface (nat `PREROUTING`), so that nat `POSTROUTING`, where `-i` cannot be used, masquerades
/// only LAN traffic (as kube-proxy marks reflected flows). portmap sets and tests only this bit
/// (`--set-xmark 0x100000/0x100000`), leaving every other bit of the mark alone.
pub const LAN_MARK: u32 = 0x0010_0000;

/// An address family: which tool writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4: `iptables`.
    V4,
    /// IPv6: `ip6tables`.
    V6,
}

impl Family {
    /// Both, in the order portmap commits them.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// A table portmap writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `filter`: accepts and allow-list drops.
    Filter,
    /// `nat`: DNAT, hairpin, masquerade, pending cleanups.
    Nat,
}

impl Table {
    /// Both.
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];

    /// `filter` or `nat`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A jump from a built-in chain into one of portmap's: found by its comment, removed by `destroy`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Jump {
    /// The built-in chain, e.g. `PREROUTING`.
    pub builtin: String,
    /// The rule after `-A PREROUTING `, as `iptables-save` prints it.
    pub spec: String,
}

/// One table of one family: portmap's chains (name → rules, each as `iptables-save` prints it
/// after `-A NAME `) and the jumps into them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chains {
    /// Chains by name.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Jumps from built-in chains.
    pub jumps: Vec<Jump>,
}

/// Everything portmap writes, by (family, table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The four tables.
    pub tables: BTreeMap<(Family, Table), Chains>,
}

impl Layout {
    /// The chains of one table (empty when absent).
    pub fn table(&self, family: Family, table: Table) -> Chains {
        self.tables.get(&(family, table)).cloned().unwrap_or_default()
    }
}

/// The chain-name prefix, checked: 1–[`MAX_PREFIX_LEN`] characters of `A-Z a-z 0-9 _`, starting
/// with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// Check a prefix given by a user; `None` when it is not one.
    pub fn new(prefix: &str) -> Option<Prefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Prefix(prefix.to_owned()))
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `P-suffix`.
    pub fn chain(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.0)
    }

    /// Whether a chain name has this prefix (`P-…`).
    pub fn owns_name(&self, chain: &str) -> bool {
        chain
            .strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// The comment on portmap's jump rules.
    pub fn jump_comment(&self) -> String {
        format!("portmap {}", self.0)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names of the static chains.
pub const MARK: &str = "MARK";
/// nat: from `PREROUTING`.
pub const PRE: &str = "PRE";
/// nat: hairpin for LAN hosts.
pub const HAIR: &str = "HAIR";
/// nat: from `OUTPUT`, router-local access.
pub const LOCAL: &str = "LOCAL";
/// nat: from `POSTROUTING`.
pub const POST: &str = "POST";
/// nat: protocol dispatch into the trees.
pub const DNAT: &str = "DNAT";
/// nat: pending conntrack cleanups.
pub const STALE: &str = "STALE";
/// filter: from `FORWARD` and `OUTPUT`.
pub const FWD: &str = "FWD";

/// `value` as `iptables-save` prints a string argument (xtables' `save_string`): bare when it is
/// made of `A-Z a-z 0-9 _ -` only, else in double quotes with `"`, `\` and `'` escaped by a
/// backslash. `iptables-restore` reads it back as the same bytes.
pub fn quoted(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The comment on a mapping's DNAT rules: `name` or `name: description`, cut to 255 bytes at a
/// character boundary (validation keeps names ≤ 64 and descriptions ≤ 128 bytes, so nothing is cut
/// in practice).
pub fn mapping_comment(name: &str, description: Option<&str>) -> String {
    let mut text = match description {
        Some(d) if !d.is_empty() => format!("{name}: {d}"),
        _ => name.to_owned(),
    };
    if text.len() > MAX_COMMENT_LEN {
        let mut cut = MAX_COMMENT_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// `name` and the description from a DNAT rule's comment (names hold no `:`).
pub fn parse_mapping_comment(comment: &str) -> (String, Option<String>) {
    match comment.split_once(": ") {
        Some((name, description)) => (name.to_owned(), Some(description.to_owned())),
        None => (comment.to_owned(), None),
    }
}

/// Whether an interface name can be written into a rule as it is: `A-Z a-z 0-9 _ . -`, not
/// starting with `-`, and no `+` (which iptables reads as a wildcard).
pub fn is_plain_interface(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The router's destinations hairpin and router-local access leave alone: loopback and its
/// addresses on LAN interfaces (IPv6 link-local ones excluded; no IPv6 rule forwards them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanSide {
    /// IPv4 prefixes (canonical).
    pub v4: Vec<IpNet>,
    /// IPv6 prefixes (canonical).
    pub v6: Vec<IpNet>,
}

impl Default for LanSide {
    fn default() -> Self {
        LanSide::from_interfaces(&[], &[])
    }
}

impl LanSide {
    /// The lan side of the LAN interfaces named (pure).
    pub fn from_interfaces(interfaces: &[Interface], lan: &[String]) -> Self {
        let mut v4 = vec![IpNet::V4(
            Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default(),
        )];
        let mut v6 = vec![IpNet::V6(Ipv6Net::from(Ipv6Addr::LOCALHOST))];
        for iface in interfaces.iter().filter(|i| lan.contains(&i.name)) {
            for (addr, _) in &iface.addrs {
                match addr {
                    IpAddr::V4(a) => v4.push(IpNet::V4(Ipv4Net::from(*a))),
                    IpAddr::V6(a) if !a.is_unicast_link_local() => v6.push(IpNet::V6(Ipv6Net::from(*a))),
                    IpAddr::V6(_) => {}
                }
            }
        }
        LanSide {
            v4: portmap_core::canonical_prefixes(v4),
            v6: portmap_core::canonical_prefixes(v6),
        }
    }

    /// One family's prefixes.
    pub fn of(&self, family: Family) -> &[IpNet] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// `8080` or `6000:6002`, as `--dport` and `--ctorigdstport` print a range.
pub fn port_match(start: u16, end: u16) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}:{end}")
    }
}

/// One run of a mapping's forwards in one protocol: consecutive external ports to consecutive
/// inner ports of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Run {
    /// Protocol.
    pub transport: Transport,
    /// First external port.
    pub start: u16,
    /// Last external port.
    pub end: u16,
    /// Inner host.
    pub to: IpAddr,
    /// First inner port (the inner ports are `to_start ..= to_start + (end - start)`).
    pub to_start: u16,
    /// The router's address it answers on (`-d`, `--ctorigdst`); `None`: any address.
    pub listen: Option<IpAddr>,
    /// When its rules stop matching (`-m time --datestop`, UTC): the mapping's `expires`.
    pub expires: Option<portmap_core::UtcTime>,
}

/// ` -m time --datestop 2026-12-23T23:59:59` for a run that expires at 2026-12-24T00:00:00Z, as
/// `iptables-save` prints it; empty otherwise. The kernel's time match counts in UTC (without
/// `--kerneltz`) and whole seconds, and matches up to and including its `--datestop` second: the
/// last second before the expiry, so that the rules stop matching at the moment itself, as nft's
/// timeouts do.
pub fn time_match(expires: Option<portmap_core::UtcTime>) -> String {
    expires.map_or_else(String::new, |t| format!(" -m time --datestop {}", datestop(t)))
}

/// The `--datestop` of an expiry: the second before it.
pub fn datestop(expires: portmap_core::UtcTime) -> String {
    portmap_core::UtcTime::from_unix_seconds(expires.unix_seconds() - 1).iptables_text()
}

/// `head` without the time match [`time_match`] writes at its end, and the expiry it names (the
/// second after its `--datestop`).
pub fn split_time_match(head: &str) -> Option<(&str, Option<portmap_core::UtcTime>)> {
    match head.rsplit_once(" -m time --datestop ") {
        Some((rest, stop)) => {
            let last = portmap_core::UtcTime::from_iptables_text(stop)?;
            Some((
                rest,
                Some(portmap_core::UtcTime::from_unix_seconds(last.unix_seconds() + 1)),
            ))
        }
        None => Some((head, None)),
    }
}

impl Run {
    /// Last inner port.
    pub fn to_end(&self) -> u16 {
        self.to_start + (self.end - self.start)
    }

    /// The forwards of the run.
    pub fn forwards(&self) -> impl Iterator<Item = Forward> + '_ {
        (self.start..=self.end).map(move |port| Forward {
            transport: self.transport,
            port,
            to: self.to,
            to_port: self.to_start + (port - self.start),
            listen: self.listen,
        })
    }

    /// `tcp/8080` or `tcp/6000-6002` (`tcp/198.51.100.5:8080` on a listen address), for messages.
    pub fn label(&self) -> String {
        let on = match self.listen {
            None => String::new(),
            Some(IpAddr::V4(a)) => format!("{a}:"),
            Some(IpAddr::V6(a)) => format!("[{a}]:"),
        };
        if self.start == self.end {
            format!("{}/{on}{}", self.transport, self.start)
        } else {
            format!("{}/{on}{}-{}", self.transport, self.start, self.end)
        }
    }
}

/// Forwards folded into runs (sorted; consecutive ports to consecutive ports of one host).
pub fn runs(forwards: &[Forward]) -> Vec<Run> {
    let mut sorted = forwards.to_vec();
    sorted.sort_unstable_by_key(|f| (f.listen, f.transport, f.port, f.to, f.to_port));
    let mut out: Vec<Run> = Vec::new();
    for f in sorted {
        if let Some(last) = out.last_mut()
            && last.listen == f.listen
            && last.transport == f.transport
            && last.to == f.to
            && last.end.checked_add(1) == Some(f.port)
            && last.to_end().checked_add(1) == Some(f.to_port)
        {
            last.end = f.port;
            continue;
        }
        out.push(Run {
            transport: f.transport,
            start: f.port,
            end: f.port,
            to: f.to,
            to_start: f.to_port,
            listen: f.listen,
            expires: None,
        });
    }
    out.sort_unstable();
    out
}

/// The DNAT rule of a run. A range always carries its base port (`/6000`), so the kernel shifts
/// the port (6001 → 7001) rather than picking one from the range.
pub fn dnat_rule(run: &Run, comment: &str) -> String {
    let proto = run.transport.as_str();
    let target = match run.to {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let ports = if run.start == run.end {
        run.to_start.to_string()
    } else {
        format!("{}-{}/{}", run.to_start, run.to_end(), run.start)
    };
    let on = match run.listen {
        None => String::new(),
        Some(a @ IpAddr::V4(_)) => format!("-d {a}/32 "),
        Some(a @ IpAddr::V6(_)) => format!("-d {a}/128 "),
    };
    format!(
        "{on}-p {proto} -m {proto} --dport {}{} -m comment --comment {} -j DNAT --to-destination {target}:{ports}",
        port_match(run.start, run.end),
        time_match(run.expires),
        quoted(comment)
    )
}

/// A prefix as `-m conntrack --ctorigsrc` prints it: a host prefix as a bare address.
pub fn prefix_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// A filter rule of a run: `ACCEPT` (from `source`, or from everyone) or `DROP` (everyone else).
/// It matches both directions of the connection by its conntrack tuples (original source and
/// destination port, reply source and port: the inner host), so replies pass a FORWARD policy
/// DROP as well, and connections another tool DNAT-ed elsewhere never match.
pub fn filter_rule(run: &Run, name: &str, source: Option<&IpNet>, verdict: &str) -> String {
    let kind = if verdict == "ACCEPT" {
        FilterKind::Accept
    } else {
        FilterKind::Drop
    };
    filter_rule_of(run, name, source, &kind)
}

/// What a filter rule of a mapping does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// `-j ACCEPT`: the connection's packets, both directions (the traffic counter).
    Accept,
    /// `-j DROP` for every source the allow-list does not admit.
    Drop,
    /// `--ctstate NEW` without a target: counts the new connections that get this far.
    Count,
    /// `--ctstate NEW … -j NFLOG`: logs each new connection to this group.
    Log(u16),
    /// `--ctstate NEW -m hashlimit --hashlimit-above … -j DROP`: drops new connections over the
    /// limit, whose bucket is the named hash table.
    Limit(portmap_core::Limit),
}

impl FilterKind {
    /// Whether the rule matches only the first packet of a connection.
    fn new_only(&self) -> bool {
        matches!(
            self,
            FilterKind::Count | FilterKind::Log(_) | FilterKind::Limit(_)
        )
    }
}

/// A filter rule of a run, of any kind (see [`FilterKind`]), as `iptables-save` prints it.
pub fn filter_rule_of(run: &Run, name: &str, source: Option<&IpNet>, kind: &FilterKind) -> String {
    let proto = run.transport.as_str();
    let mut out = format!("-p {proto} -m conntrack ");
    if kind.new_only() {
        out.push_str("--ctstate NEW ");
    }
    if let Some(net) = source {
        let _ = write!(out, "--ctorigsrc {} ", prefix_text(net));
    }
    if let Some(addr) = run.listen {
        let _ = write!(out, "--ctorigdst {addr} ");
    }
    let _ = write!(
        out,
        "--ctreplsrc {} --ctorigdstport {} --ctreplsrcport {} ",
        run.to,
        port_match(run.start, run.end),
        port_match(run.to_start, run.to_end()),
    );
    if let FilterKind::Limit(limit) = kind {
        let (rate, unit) = hashlimit_rate(limit);
        let _ = write!(
            out,
            "-m hashlimit --hashlimit-above {rate}/{unit} --hashlimit-burst {} --hashlimit-name {} ",
            limit.burst,
            hashlimit_name(name, limit)
        );
    }
    if let Some(t) = run.expires {
        let _ = write!(out, "-m time --datestop {} ", datestop(t));
    }
    let _ = write!(out, "-m comment --comment {}", quoted(name));
    match kind {
        FilterKind::Accept => out.push_str(" -j ACCEPT"),
        FilterKind::Drop | FilterKind::Limit(_) => out.push_str(" -j DROP"),
        FilterKind::Count => {}
        FilterKind::Log(group) => {
            let _ = write!(
                out,
                " -j NFLOG --nflog-prefix {} --nflog-group {group}",
                quoted(&log_prefix(name))
            );
        }
    }
    out
}

/// The log prefix of a mapping: `portmap <name>` (what `portmap log` reads back), as the nft
/// backend writes it.
pub fn log_prefix(name: &str) -> String {
    format!("portmap {name}")
}

/// The name of a mapping's `hashlimit` table (at most 15 bytes): `pm-` and 12 hex digits of a
/// hash of the mapping's name and its limit. Every rule of the mapping names the same table, so
/// its runs and allowed sources share one bucket; a changed limit names another table, so the new
/// rate takes effect (the kernel keeps a table's rate while a rule uses it).
pub fn hashlimit_name(mapping: &str, limit: &portmap_core::Limit) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{mapping}\0{limit}");
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pm-{:012x}", hash >> 16)
}

/// Microseconds iptables' hashlimit counts a rate in (`XT_HASHLIMIT_SCALE_v2`).
const HASHLIMIT_SCALE: u64 = 1_000_000;

/// The rate as `iptables-save` prints a `--hashlimit-above` of `limit` back: `libxt_hashlimit`
/// stores the period between packets in microseconds (`scale * unit / rate`, rounded down) and
/// prints it in the longest unit it fits (its `print_rate`). Returns the number and the unit
/// (`sec`, `min`, `hour`, `day`).
pub fn hashlimit_rate(limit: &portmap_core::Limit) -> (u64, &'static str) {
    const RATES: [(&str, u64); 4] = [
        ("day", HASHLIMIT_SCALE * 86_400),
        ("hour", HASHLIMIT_SCALE * 3_600),
        ("min", HASHLIMIT_SCALE * 60),
        ("sec", HASHLIMIT_SCALE),
    ];
    let period = (HASHLIMIT_SCALE * limit.per.seconds() / u64::from(limit.rate)).max(1);
    let mut i = 1;
    while i < RATES.len() {
        let mult = RATES[i].1;
        if period > mult || mult / period < mult % period {
            break;
        }
        i += 1;
    }
    let (unit, mult) = RATES[i - 1];
    (mult / period, unit)
}

/// The limit a `--hashlimit-above R/UNIT --hashlimit-burst B` enforces, in canonical form.
pub fn limit_of_hashlimit(rate: &str, burst: u32) -> Option<portmap_core::Limit> {
    let (count, unit) = rate.split_once('/')?;
    let per = match unit {
        "sec" => portmap_core::RateUnit::Second,
        "min" => portmap_core::RateUnit::Minute,
        "hour" => portmap_core::RateUnit::Hour,
        "day" => portmap_core::RateUnit::Day,
        _ => return None,
    };
    let rate = count.parse().ok().filter(|&r| r > 0)?;
    Some(portmap_core::canonical_limit(portmap_core::Limit {
        rate,
        per,
        burst,
    }))
}

/// Whether iptables keeps `limit` exactly: what it prints back is the same rate. (It counts the
/// period between connections in whole microseconds, so e.g. 123456/second comes back as
/// 125000/second.)
pub fn hashlimit_is_exact(limit: &portmap_core::Limit) -> bool {
    let (rate, unit) = hashlimit_rate(limit);
    limit_of_hashlimit(&format!("{rate}/{unit}"), limit.burst) == Some(*limit)
}

/// The kernel rules of one mapping (as configured, or as observed), per family and table, grouped
/// by run so the dispatch trees can place them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRules {
    /// The mapping's name.
    pub name: String,
    /// Per run: its family, the DNAT rule, and its filter rules in order.
    pub runs: Vec<(Run, String, Vec<String>)>,
}

/// A mapping's cap and logging, as its filter rules carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// The cap on new connections.
    pub limit: Option<portmap_core::Limit>,
    /// The nflog group new connections are logged to.
    pub log: Option<u16>,
    /// When its rules stop matching.
    pub expires: Option<portmap_core::UtcTime>,
}

impl MappingRules {
    /// The rules portmap writes for a mapping with these forwards and this allow-list, without a
    /// limit or logging.
    pub fn new(name: &str, description: Option<&str>, forwards: &[Forward], allow_from: &[IpNet]) -> Self {
        MappingRules::with(name, description, forwards, allow_from, Extras::default())
    }

    /// The rules portmap writes for a mapping: per run and per allowed source (or once for
    /// everyone) the limit's drop, the log, the connection count and the accept, in that order;
    /// then, with an allow-list, the drop of every other source.
    pub fn with(
        name: &str,
        description: Option<&str>,
        forwards: &[Forward],
        allow_from: &[IpNet],
        extras: Extras,
    ) -> Self {
        let comment = mapping_comment(name, description);
        let runs = runs(forwards)
            .into_iter()
            .map(|run| Run {
                expires: extras.expires,
                ..run
            })
            .map(|run| {
                let family = Family::of(run.to);
                let mut filter = Vec::new();
                let mut slot = |source: Option<&IpNet>| {
                    if let Some(limit) = extras.limit {
                        filter.push(filter_rule_of(&run, name, source, &FilterKind::Limit(limit)));
                    }
                    if let Some(group) = extras.log {
                        filter.push(filter_rule_of(&run, name, source, &FilterKind::Log(group)));
                    }
                    filter.push(filter_rule_of(&run, name, source, &FilterKind::Count));
                    filter.push(filter_rule_of(&run, name, source, &FilterKind::Accept));
                };
                if allow_from.is_empty() {
                    slot(None);
                } else {
                    for net in allow_from.iter().filter(|n| Family::of(n.addr()) == family) {
                        slot(Some(net));
                    }
                    filter.push(filter_rule(&run, name, None, "DROP"));
                }
                (run, dnat_rule(&run, &comment), filter)
            })
            .collect();
        MappingRules {
            name: name.to_owned(),
            runs,
        }
    }

    /// The rules of a configured mapping.
    pub fn of_mapping(m: &Mapping) -> Self {
        MappingRules::with(
            &m.name,
            m.description.as_deref(),
            &m.forwards(),
            &m.allow_from,
            Extras {
                limit: m.limit,
                log: m.log,
                expires: m.expires,
            },
        )
    }

    /// The rules of an observed (intact) mapping.
    pub fn of_observed(m: &ObservedMapping) -> Self {
        MappingRules::with(
            &m.name,
            m.description.as_deref(),
            &m.forwards,
            &m.allow_from,
            Extras {
                limit: m.limit,
                log: m.log,
                expires: m.expires,
            },
        )
    }
}

/// The comment-only record of one pending conntrack cleanup (`P-STALE`, nat table of the forward's
/// family): `web tcp/8080 192.168.1.66:80`, with ` narrowed` when only sources outside the
/// mapping's allow-list are to go.
pub fn stale_rule(stale: &StaleFlows) -> String {
    let f = &stale.forward;
    let to = match f.to {
        IpAddr::V4(a) => format!("{a}:{}", f.to_port),
        IpAddr::V6(a) => format!("[{a}]:{}", f.to_port),
    };
    let mut text = format!("{} {}/{} {to}", stale.mapping, f.transport, f.port);
    if stale.unless_from.is_some() {
        text.push_str(" narrowed");
    }
    format!("-m comment --comment {}", quoted(&text))
}

/// Settings recorded in a `P-MARK` chain, after the marker.
pub fn mark_rules(settings: &Settings) -> Vec<String> {
    let mut out = vec![format!("-m comment --comment {}", quoted(MARKER))];
    for i in &settings.wan_interfaces {
        out.push(format!("-i {i} -m comment --comment wan"));
    }
    for i in &settings.lan_interfaces {
        out.push(format!("-i {i} -m comment --comment lan"));
    }
    if settings.masquerade {
        out.push("-m comment --comment masquerade".to_owned());
    }
    if settings.hairpin {
        out.push("-m comment --comment hairpin".to_owned());
    }
    out
}

/// `-m mark --mark 0x100000/0x100000`.
fn mark_match() -> String {
    format!("-m mark --mark {LAN_MARK:#x}/{LAN_MARK:#x}")
}

/// The static chains of one table (everything but the trees' contents, which [`tree`] builds),
/// and the jumps into them.
pub fn static_chains(p: &Prefix, family: Family, table: Table, settings: &Settings, lan: &LanSide) -> Chains {
    let mut chains = BTreeMap::new();
    let mut jumps = Vec::new();
    let comment = format!("-m comment --comment {}", quoted(&p.jump_comment()));
    chains.insert(p.chain(MARK), mark_rules(settings));
    let v6_skip = if family == Family::V6 {
        "! -d fe80::/10 "
    } else {
        ""
    };
    match table {
        Table::Nat => {
            let masquerade = settings.masquerade && family == Family::V4;
            let mut pre = Vec::new();
            if masquerade || settings.hairpin {
                for i in &settings.lan_interfaces {
                    pre.push(format!("-i {i} -j MARK --set-xmark {LAN_MARK:#x}/{LAN_MARK:#x}"));
                }
            }
            for i in &settings.wan_interfaces {
                pre.push(format!(
                    "{v6_skip}-i {i} -m addrtype --dst-type LOCAL -j {}",
                    p.chain(DNAT)
                ));
            }
            let mut hair = Vec::new();
            let mut local = Vec::new();
            if settings.hairpin {
                for i in &settings.lan_interfaces {
                    pre.push(format!(
                        "{v6_skip}-i {i} -m addrtype --dst-type LOCAL -m addrtype ! --dst-type LOCAL --limit-iface-in -j {}",
                        p.chain(HAIR)
                    ));
                }
                for net in lan.of(family) {
                    hair.push(format!("-d {net} -j RETURN"));
                    local.push(format!("-d {net} -j RETURN"));
                }
                hair.push(format!("-j {}", p.chain(DNAT)));
                local.push(format!(
                    "{v6_skip}-m addrtype --dst-type LOCAL -j {}",
                    p.chain(DNAT)
                ));
            }
            let mut post = Vec::new();
            if masquerade {
                for i in &settings.wan_interfaces {
                    post.push(format!("-o {i} {} -j MASQUERADE", mark_match()));
                }
            }
            if settings.hairpin {
                for i in &settings.lan_interfaces {
                    post.push(format!(
                        "-o {i} {} -m conntrack --ctstate DNAT -j MASQUERADE",
                        mark_match()
                    ));
                }
            }
            let dnat = vec![
                format!("-p tcp -j {}", tree::root(p, Kind::Nat, Transport::Tcp)),
                format!("-p udp -j {}", tree::root(p, Kind::Nat, Transport::Udp)),
            ];
            chains.insert(p.chain(PRE), pre);
            chains.insert(p.chain(HAIR), hair);
            chains.insert(p.chain(LOCAL), local);
            chains.insert(p.chain(POST), post);
            chains.insert(p.chain(DNAT), dnat);
            for (builtin, target) in [("PREROUTING", PRE), ("OUTPUT", LOCAL), ("POSTROUTING", POST)] {
                jumps.push(Jump {
                    builtin: builtin.to_owned(),
                    spec: format!("{comment} -j {}", p.chain(target)),
                });
            }
        }
        Table::Filter => {
            chains.insert(
                p.chain(FWD),
                vec![
                    format!("-p tcp -j {}", tree::root(p, Kind::Filter, Transport::Tcp)),
                    format!("-p udp -j {}", tree::root(p, Kind::Filter, Transport::Udp)),
                ],
            );
            for builtin in ["FORWARD", "OUTPUT"] {
                jumps.push(Jump {
                    builtin: builtin.to_owned(),
                    spec: format!("-m conntrack --ctstate DNAT {comment} -j {}", p.chain(FWD)),
                });
            }
        }
    }
    Chains { chains, jumps }
}

/// Names of the static chains of a table (those [`static_chains`] builds).
pub fn static_names(p: &Prefix, table: Table) -> Vec<String> {
    let names: &[&str] = match table {
        Table::Nat => &[MARK, PRE, HAIR, LOCAL, POST, DNAT, STALE],
        Table::Filter => &[MARK, FWD],
    };
    names.iter().map(|n| p.chain(n)).collect()
}

/// What to lay out: the router-wide settings, the mappings (each with a rank: rules of rank 0 come
/// before rules of rank 1 for the same ports), and the pending cleanups to record.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    /// Settings.
    pub settings: Settings,
    /// Mappings' rules with their rank.
    pub mappings: Vec<(&'a MappingRules, u8)>,
    /// Pending conntrack cleanups.
    pub stale: Vec<StaleFlows>,
    /// portmap's commit serial, recorded in the IPv4 nat `P-MARK` (see [`serial_rule`]).
    pub serial: u32,
}

/// The rule of the IPv4 nat `P-MARK` chain that counts portmap's commits: each plan carried out
/// adds one, so portmap's generation (a hash of the other rules of nat and filter, plus this
/// serial) moves by exactly one when portmap alone changed the tables.
pub fn serial_rule(serial: u32) -> String {
    format!("-m comment --comment {}", quoted(&format!("generation {serial}")))
}

/// The serial of a `P-MARK` rule written by [`serial_rule`].
pub fn parse_serial(rule: &str) -> Option<u32> {
    let n = rule
        .strip_prefix("-m comment --comment \"generation ")?
        .strip_suffix('"')?
        .parse()
        .ok()?;
    (serial_rule(n) == rule).then_some(n)
}

/// The whole layout for `input`: static chains, trees, records, jumps, for both families and tables.
pub fn build(p: &Prefix, input: &Input<'_>, lan: &LanSide) -> Layout {
    let mut layout = Layout::default();
    for family in Family::ALL {
        for table in Table::ALL {
            let mut chains = static_chains(p, family, table, &input.settings, lan);
            if (family, table) == (Family::V4, Table::Nat)
                && let Some(mark) = chains.chains.get_mut(&p.chain(MARK))
            {
                mark.push(serial_rule(input.serial));
            }
            let kind = match table {
                Table::Nat => Kind::Nat,
                Table::Filter => Kind::Filter,
            };
            for transport in [Transport::Tcp, Transport::Udp] {
                let mut entries = Vec::new();
                for (rules, rank) in &input.mappings {
                    for (run, dnat, filter) in &rules.runs {
                        if run.transport != transport || Family::of(run.to) != family {
                            continue;
                        }
                        let lines = match table {
                            Table::Nat => vec![dnat.clone()],
                            Table::Filter => filter.clone(),
                        };
                        entries.push(Entry {
                            start: run.start,
                            end: run.end,
                            rank: *rank,
                            lines,
                        });
                    }
                }
                chains.chains.extend(tree::build(p, kind, transport, entries));
            }
            if table == Table::Nat {
                let records: Vec<String> = input
                    .stale
                    .iter()
                    .filter(|s| Family::of(s.forward.to) == family)
                    .map(stale_rule)
                    .collect();
                chains.chains.insert(p.chain(STALE), records);
            }
            layout.tables.insert((family, table), chains);
        }
    }
    layout
}
