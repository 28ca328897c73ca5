//! The validated, typed view of a configuration (`Model`) and of what the kernel holds (`Observed`).
//!
//! A `Model` is only ever produced by validation (or by a library user through [`crate::validate()`]),
//! so every value in it is already checked: names are safe to put in a kernel object, port ranges are
//! ordered, a target range has the external range's length, addresses are unicast hosts.
//! This module does no I/O and knows nothing about nftables.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Which transport protocols a mapping forwards. Read as `tcp`, `TCP` or `Tcp` (the three
/// spellings YAML 1.2 accepts for its own words such as `true`), written in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only (the default).
    #[default]
    #[serde(alias = "TCP", alias = "Tcp")]
    Tcp,
    /// UDP only.
    #[serde(alias = "UDP", alias = "Udp")]
    Udp,
    /// TCP and UDP on the same ports.
    #[serde(alias = "BOTH", alias = "Both")]
    Both,
}

impl Protocol {
    /// The transport protocols this choice covers, TCP first.
    pub fn transports(self) -> &'static [Transport] {
        match self {
            Protocol::Tcp => &[Transport::Tcp],
            Protocol::Udp => &[Transport::Udp],
            Protocol::Both => &[Transport::Tcp, Transport::Udp],
        }
    }

    /// `tcp`, `udp` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Both => "both",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transport protocol, as a kernel rule matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// IP protocol 6.
    Tcp,
    /// IP protocol 17.
    Udp,
}

impl Transport {
    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }

    /// The transport for an IP protocol number, if it is one portmap forwards.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }

    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports, `start <= end`, neither zero. A single port has `start == end`.
///
/// Its serde form is the text a configuration uses: `"8080"` or `"6000-6010"` (deserializing also
/// accepts a number, and refuses port 0 and reversed ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A range of one port.
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Number of ports in the range.
    pub fn len(self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Whether two ranges share a port.
    pub fn overlaps(self, other: PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The ports of the range in order.
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Why a text is not a port range (the message says what would be valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePortRangeError(pub String);

impl fmt::Display for ParsePortRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParsePortRangeError {}

impl FromStr for PortRange {
    type Err = ParsePortRangeError;

    /// `"8080"` or `"6000-6010"`, ports 1–65535, start ≤ end.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        crate::validate::parse_port(&crate::config::PortSpec::Text(text.to_owned()))
            .map_err(ParsePortRangeError)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortRangeVisitor;

        impl de::Visitor<'_> for PortRangeVisitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port 1-65535 or a range \"A-B\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(PortRange::single(p)),
                    _ => Err(E::custom(format_args!("port {v} is out of range; use 1-65535"))),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("port {v} is out of range; use 1-65535"))),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(PortRangeVisitor)
    }
}

/// One validated port mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// Unique name: 1–64 bytes of `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub name: String,
    /// Transport protocols forwarded.
    pub protocol: Protocol,
    /// External port(s) on the router.
    pub port: PortRange,
    /// The inner host.
    pub to: IpAddr,
    /// Port(s) on the inner host; same length as `port`.
    pub to_port: PortRange,
    /// Source prefixes allowed to use the mapping; empty means everyone. Canonical: host bits clear,
    /// sorted, no overlaps, adjacent prefixes merged. This is what the kernel enforces: the
    /// prefixes written in `allow_from` together with the members of the named lists it uses (of
    /// the mapping's family), so a backend that knows nothing of lists enforces them correctly.
    pub allow_from: Vec<IpNet>,
    /// The named lists of [`Model::sources`] that `allow_from` uses, sorted; empty when it names
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_sources: Vec<String>,
    /// The prefixes written in `allow_from` itself (canonical), without the lists' members; empty
    /// when it names no list (then they are `allow_from`: see [`Mapping::inline_prefixes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_inline: Vec<IpNet>,
    /// The router's public addresses the mapping answers on (of `to`'s family, sorted, no
    /// repeats); empty means any address of the WAN interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<IpAddr>,
    /// Free text shown in plans and stored with the kernel objects (printable, no `"`, ≤ 128 bytes).
    pub description: Option<String>,
    /// The kernel log (nflog) group each new forwarded connection is logged to (`log: true`; the
    /// group is the configuration's `log_group`), `None` when the mapping does not log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<u16>,
    /// The cap on new connections (`limit: "20/second burst 40"`), `None` for no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// When the kernel itself removes (or stops matching) the mapping's forwards; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<crate::time::UtcTime>,
}

/// The nflog group portmap logs to when the configuration names none (`log_group`).
pub const DEFAULT_LOG_GROUP: u16 = 100;

/// The burst of a `limit` that names none: what nft and iptables use by default.
pub const DEFAULT_BURST: u32 = 5;

/// The longest mapping name that can log: the kernel's log prefix holds 63 bytes (iptables'
/// `NFLOG`), and portmap writes `portmap <name>`.
pub const MAX_LOGGED_NAME_LEN: usize = 55;

/// The unit of a [`Limit`]'s rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl RateUnit {
    /// Every unit, shortest first.
    pub const ALL: [RateUnit; 4] = [RateUnit::Second, RateUnit::Minute, RateUnit::Hour, RateUnit::Day];

    /// `second`, `minute`, `hour` or `day`, as nft writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        }
    }

    /// Seconds in the unit (what nft's `limit` stores as its unit).
    pub fn seconds(self) -> u64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86400,
        }
    }

    /// The unit of `seconds` seconds, if it is one.
    pub fn from_seconds(seconds: u64) -> Option<RateUnit> {
        RateUnit::ALL.into_iter().find(|u| u.seconds() == seconds)
    }
}

impl fmt::Display for RateUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cap on new connections: `rate` per `per`, with bursts of up to `burst` connections (a
/// token bucket: it holds `burst` tokens and refills at `rate` per unit; a new connection that
/// finds no token is dropped). Connections already established are never limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// New connections per unit (1–[`crate::MAX_LIMIT_RATE`]).
    pub rate: u32,
    /// The unit.
    pub per: RateUnit,
    /// The bucket's size (1–[`crate::MAX_LIMIT_BURST`]).
    pub burst: u32,
}

impl fmt::Display for Limit {
    /// `20/second burst 40`, the form a configuration writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} burst {}", self.rate, self.per, self.burst)
    }
}

/// What the kernel counted for one mapping since its counters were created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    /// New connections forwarded (one per new flow that passed the allow-list and the limit).
    pub connections: u64,
    /// Packets of forwarded connections, both directions.
    pub packets: u64,
    /// Bytes of those packets (IP headers included), both directions.
    pub bytes: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Counters) {
        self.connections = self.connections.saturating_add(other.connections);
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

impl Mapping {
    /// The prefixes the mapping admits besides its named lists: `allow_inline`, or every prefix
    /// of `allow_from` when it names no list (a mapping built in code may leave `allow_inline`
    /// empty).
    pub fn inline_prefixes(&self) -> &[IpNet] {
        if self.allow_sources.is_empty() {
            &self.allow_from
        } else {
            &self.allow_inline
        }
    }
    /// Every (protocol, external port) → (address, port) pair this mapping forwards, once per
    /// listen address (or once, for any address), in key order.
    pub fn forwards(&self) -> Vec<Forward> {
        let listens: Vec<Option<IpAddr>> = if self.listen.is_empty() {
            vec![None]
        } else {
            self.listen.iter().copied().map(Some).collect()
        };
        let mut out =
            Vec::with_capacity(self.port.len() as usize * self.protocol.transports().len() * listens.len());
        for &listen in &listens {
            for &transport in self.protocol.transports() {
                for (port, to_port) in self.port.ports().zip(self.to_port.ports()) {
                    out.push(Forward {
                        transport,
                        port,
                        to: self.to,
                        to_port,
                        listen,
                    });
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// The listen addresses of some forwards (`None`: any address), sorted, each once.
pub fn listen_of(forwards: &[Forward]) -> Vec<Option<IpAddr>> {
    let mut out: Vec<Option<IpAddr>> = forwards.iter().map(|f| f.listen).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// When `forwards` are the same forwards repeated on each of several listen addresses (what a
/// mapping with `listen` writes), those addresses (empty for "any address") and the forwards
/// without them; `None` when they are not (a table edited by hand).
pub fn split_listen(forwards: &[Forward]) -> Option<(Vec<IpAddr>, Vec<Forward>)> {
    let listens = listen_of(forwards);
    if listens.len() > 1 && listens.contains(&None) {
        return None;
    }
    let plain_on = |listen: Option<IpAddr>| -> Vec<Forward> {
        let mut v: Vec<Forward> = forwards
            .iter()
            .filter(|f| f.listen == listen)
            .map(|f| Forward { listen: None, ..*f })
            .collect();
        v.sort_unstable();
        v
    };
    let first = listens.first().map_or_else(Vec::new, |&l| plain_on(l));
    if listens.iter().skip(1).any(|&l| plain_on(l) != first) {
        return None;
    }
    Some((listens.into_iter().flatten().collect(), first))
}

/// One forwarded (protocol, port) pair: the unit a kernel map element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Forward {
    /// Transport protocol.
    pub transport: Transport,
    /// External port.
    pub port: u16,
    /// Inner host.
    pub to: IpAddr,
    /// Inner port.
    pub to_port: u16,
    /// The router's address it answers on; `None`: any address of the WAN interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<IpAddr>,
}

/// Router-wide settings of a `Model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Settings {
    /// Interfaces facing the internet; DNAT applies to traffic arriving on them.
    pub wan_interfaces: Vec<String>,
    /// Interfaces facing the LAN (used by hairpin and masquerade).
    pub lan_interfaces: Vec<String>,
    /// Source-NAT LAN traffic leaving through a WAN interface.
    pub masquerade: bool,
    /// NAT reflection: LAN hosts and the router reach mappings through the public address.
    pub hairpin: bool,
}

/// A validated configuration: what the kernel should hold. Disabled mappings are not in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Model {
    /// Router-wide settings.
    pub settings: Settings,
    /// The named source lists (`sources:`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceList>,
    /// Enabled mappings, in file order.
    pub mappings: Vec<Mapping>,
    /// Names of mappings present in the file with `enabled: false` (kept so a plan can say why it
    /// deletes them).
    pub disabled: Vec<String>,
}

impl Model {
    /// Whether a mapping of this model has an `expires` (come or not): then the backend's
    /// structure must be able to hold expiring mappings ([`Observed::can_expire`]).
    pub fn needs_expiry(&self) -> bool {
        self.mappings.iter().any(|m| m.expires.is_some())
    }

    /// This model without the mappings whose `expires` has come at `now`: what a backend builds
    /// when it writes the whole configuration (a new table, `render`), since an expired mapping
    /// is never installed.
    #[must_use]
    pub fn in_force(&self, now: crate::time::UtcTime) -> Model {
        Model {
            mappings: self
                .mappings
                .iter()
                .filter(|m| !crate::time::is_expired(m.expires, Some(now)))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// One named list of source prefixes, split by family (each canonical, as
/// [`crate::canonical_prefixes`] makes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceList {
    /// The IPv4 prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v4: Vec<IpNet>,
    /// The IPv6 prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v6: Vec<IpNet>,
}

impl SourceList {
    /// The list's prefixes of one family.
    pub fn of_family(&self, v6: bool) -> &[IpNet] {
        if v6 { &self.v6 } else { &self.v4 }
    }

    /// Every prefix, IPv4 first.
    pub fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.v4.iter().chain(&self.v6)
    }
}

/// A mapping as read back from the kernel. Its forwards need not form one tidy range: a table edited
/// by hand may hold any subset, and the plan shows exactly what is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedMapping {
    /// Name carried in the kernel objects' comments.
    pub name: String,
    /// Description carried in the comments, if any.
    pub description: Option<String>,
    /// Forwards found, sorted.
    pub forwards: Vec<Forward>,
    /// Source prefixes found (canonical form), empty when the mapping has no allow-list. With
    /// named lists, what the kernel admits: the lists' members and the mapping's own prefixes.
    pub allow_from: Vec<IpNet>,
    /// The named lists its allow-list refers to, sorted (only from a backend that fills
    /// [`Observed::sources`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_sources: Vec<String>,
    /// Its own prefixes, without the lists' members; empty when it refers to no list (then they
    /// are `allow_from`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_inline: Vec<IpNet>,
    /// How the mapping's kernel objects fall short of the complete set portmap writes for it, one
    /// sentence each, saying what the kernel enforces instead (e.g. "tcp/8080 is not guarded by the
    /// allow-list: open to every source"). Empty when the mapping is intact. A damaged mapping is
    /// repaired (or deleted) whole, never changed field by field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<String>,
    /// The backend's names of the kernel objects found for this mapping beyond its forwards (e.g.
    /// `guard4 tcp 8080`, `chain allow_web`), so that repairing or deleting a damaged mapping
    /// removes exactly what is there. Opaque to the core; filled by `observe` only for damaged
    /// mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// The nflog group its new connections are logged to, when the kernel logs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<u16>,
    /// The cap the kernel puts on its new connections, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// When the kernel removes (nft element timeouts) or stops matching (iptables `--datestop`)
    /// its forwards, if it does. A mapping whose forwards the kernel already removed comes back
    /// only from what stays of it (nft: its counters carry the moment), with no forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<crate::time::UtcTime>,
    /// Its counters as the kernel holds them (`None` when the backend did not read them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// Tracked connections (conntrack entries) DNAT-ed through its forwards right now, both
    /// families; `None` until [`Observed::count_flows`] counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_flows: Option<u64>,
}

impl ObservedMapping {
    /// What a backend reads back after creating `mapping` faithfully (counters unknown).
    pub fn from_mapping(mapping: &Mapping) -> Self {
        ObservedMapping {
            name: mapping.name.clone(),
            description: mapping.description.clone(),
            forwards: mapping.forwards(),
            allow_from: mapping.allow_from.clone(),
            allow_sources: mapping.allow_sources.clone(),
            allow_inline: mapping.allow_inline.clone(),
            damage: Vec::new(),
            objects: Vec::new(),
            log: mapping.log,
            limit: mapping.limit,
            expires: mapping.expires,
            counters: None,
            active_flows: None,
        }
    }

    /// A mapping known only by what was found of it: these forwards, nothing else (counters
    /// unknown). Backends fill in the rest.
    pub fn found(name: impl Into<String>, forwards: Vec<Forward>) -> Self {
        ObservedMapping {
            name: name.into(),
            description: None,
            forwards,
            allow_from: Vec::new(),
            allow_sources: Vec::new(),
            allow_inline: Vec::new(),
            damage: Vec::new(),
            objects: Vec::new(),
            log: None,
            limit: None,
            expires: None,
            counters: None,
            active_flows: None,
        }
    }

    /// Whether the mapping's kernel objects are not the complete set portmap writes.
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty()
    }

    /// Whether the kernel forwards nothing for it any more because its `expires` has come at `now`
    /// (its forwards are gone, or, with iptables, their rules match nothing).
    pub fn is_expired(&self, now: Option<crate::time::UtcTime>) -> bool {
        crate::time::is_expired(self.expires, now)
    }
}

/// Whether portmap's own table is there and intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TableState {
    /// The table does not exist (first apply, or deleted by hand).
    Missing,
    /// The table exists and its structure is what portmap builds for the observed settings.
    Intact,
    /// The table exists but its structure was changed by hand; each reason names what differs.
    Damaged {
        /// Human-readable findings, e.g. "chain prerouting is missing".
        reasons: Vec<String>,
    },
}

/// Which kernel state a backend reads and writes: the host's boot and the network namespace. A saved
/// plan records it and is refused anywhere else (another namespace, another host, or after a
/// reboot), even where a ruleset generation number happens to match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): new at every boot, different on
    /// every host.
    pub boot_id: String,
    /// The network namespace's inode number (`ls -iL /proc/self/ns/net`, `ip netns identify`).
    pub netns: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network namespace net:[{}] of boot {}",
            self.netns, self.boot_id
        )
    }
}

/// What a backend found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Backend name (`nft`).
    pub backend: String,
    /// The table (or chain prefix) portmap owns, e.g. `inet portmap`.
    pub table: String,
    /// Kernel ruleset generation the observation was made at, if the backend has one.
    pub generation: Option<u32>,
    /// Where the observation was made, when the backend knows.
    #[serde(default)]
    pub place: Option<Place>,
    /// Whether the owned structure is present and intact.
    pub state: TableState,
    /// Settings as read back (meaningful when the table exists).
    pub settings: Settings,
    /// Mappings found, sorted by name.
    pub mappings: Vec<ObservedMapping>,
    /// The named source lists the kernel holds, by name, for a backend that keeps each list in
    /// one kernel object the mappings using it refer to (nft: one set per list and family).
    /// `None` for a backend that writes each mapping's prefixes into its own rules (iptables): its
    /// mappings are compared by the prefixes they admit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<BTreeMap<String, SourceList>>,
    /// What the backend found around its table that can stop forwards from working.
    #[serde(default)]
    pub environment: Environment,
    /// Tracked connections an earlier apply made stale and recorded in its transaction, but did not
    /// get to remove (it was killed in between): the next apply finishes the cleanup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_flows: Vec<crate::plan::StaleFlows>,
    /// The moment the observation was made (the backend's clock): what `plan` judges `expires`
    /// against, and what the kernel's remaining timeouts count from. `None`: unknown, and then no
    /// mapping counts as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<crate::time::UtcTime>,
    /// Whether the owned structure can hold mappings that expire. A backend that builds it for
    /// expiries only when the configuration has one (nft: maps made with element timeouts) says
    /// `false` for a table built without them; applying a configuration with an `expires` to
    /// such a table rebuilds it. `true` for a missing table and for backends that need nothing.
    #[serde(default = "yes")]
    pub can_expire: bool,
}

/// `true`, for `#[serde(default = "yes")]`.
pub(crate) fn yes() -> bool {
    true
}

/// Whether `b` is true, for `#[serde(skip_serializing_if = "is_true")]`.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
pub(crate) fn is_true(b: &bool) -> bool {
    *b
}

/// Facts about the router outside portmap's table that decide whether its forwards can work. A
/// backend fills in what it can read; `None` means it was not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Environment {
    /// Names of the network interfaces that exist now.
    pub interfaces: Option<Vec<String>>,
    /// `net.ipv4.ip_forward`.
    pub ipv4_forwarding: Option<bool>,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6_forwarding: Option<bool>,
    /// Other tables' forward chains that drop (by policy or a final drop rule) without accepting
    /// DNAT-ed traffic, each described in a sentence naming the table and chain.
    pub blocking_forward_chains: Vec<String>,
    /// Why the backend cannot read or write IPv6 rules here (e.g. `ip6tables-save` failed, or the
    /// kernel has no IPv6), in a sentence; it then observes and writes IPv4 only. `None` when it can.
    #[serde(default)]
    pub ipv6_unavailable: Option<String>,
}

impl Observed {
    /// What a backend reports when its table does not exist.
    pub fn missing(backend: &str, table: &str, generation: Option<u32>) -> Self {
        Observed {
            backend: backend.to_owned(),
            table: table.to_owned(),
            generation,
            place: None,
            state: TableState::Missing,
            settings: Settings::default(),
            mappings: Vec::new(),
            sources: None,
            environment: Environment::default(),
            pending_flows: Vec::new(),
            observed_at: None,
            can_expire: true,
        }
    }

    /// Count, for every mapping, the tracked connections of `flows` that were DNAT-ed through one
    /// of its forwards (same protocol and original destination port, answered by the forward's
    /// target address and port), and record it as its [`ObservedMapping::active_flows`]. Pure:
    /// the caller reads the flows from the kernel.
    pub fn count_flows<'f>(&mut self, flows: impl IntoIterator<Item = &'f crate::plan::TrackedFlow>) {
        let mut by_forward: std::collections::HashMap<(u8, u16, IpAddr, u16), usize> =
            std::collections::HashMap::new();
        for (i, m) in self.mappings.iter().enumerate() {
            for f in &m.forwards {
                by_forward.insert((f.transport.number(), f.port, f.to, f.to_port), i);
            }
        }
        let mut counts = vec![0u64; self.mappings.len()];
        for flow in flows {
            if !flow.dnat {
                continue;
            }
            let (Some(port), Some(to_port)) = (flow.dst_port, flow.reply_src_port) else {
                continue;
            };
            if let Some(&i) = by_forward.get(&(flow.proto, port, flow.reply_src, to_port)) {
                counts[i] += 1;
            }
        }
        for (m, n) in self.mappings.iter_mut().zip(counts) {
            m.active_flows = Some(n);
        }
    }

    /// What a backend reports after applying `model` faithfully into an intact table: the state
    /// against which `plan` is empty. For tests and dry runs.
    pub fn from_model(model: &Model, backend: &str, table: &str, generation: Option<u32>) -> Self {
        let mut mappings: Vec<ObservedMapping> =
            model.mappings.iter().map(ObservedMapping::from_mapping).collect();
        mappings.sort_by(|a, b| a.name.cmp(&b.name));
        Observed {
            backend: backend.to_owned(),
            table: table.to_owned(),
            generation,
            place: None,
            state: TableState::Intact,
            settings: model.settings.clone(),
            mappings,
            // As a backend that keeps each list in a kernel object of its own reports them.
            sources: (!model.sources.is_empty()).then(|| model.sources.clone()),
            environment: Environment::default(),
            pending_flows: Vec::new(),
            observed_at: None,
            // As a backend that builds for expiries only when asked to.
            can_expire: model.needs_expiry(),
        }
    }
}
