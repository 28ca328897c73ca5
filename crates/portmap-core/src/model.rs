//! The validated, typed view of a configuration (`Model`) and of what the kernel holds (`Observed`).
//!
//! A `Model` is only ever produced by validation (or by a library user through [`crate::validate()`]),
//! so every value in it is already checked: names are safe to put in a kernel object, port ranges are
//! ordered, a target range has the external range's length, addresses are unicast hosts.
//! This module does no I/O and knows nothing about nftables.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Which transport protocols a mapping forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only (the default).
    #[default]
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP on the same ports.
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
    /// sorted, no overlaps, adjacent prefixes merged.
    pub allow_from: Vec<IpNet>,
    /// Free text shown in plans and stored with the kernel objects (printable, no `"`, ≤ 128 bytes).
    pub description: Option<String>,
}

impl Mapping {
    /// Every (protocol, external port) → (address, port) pair this mapping forwards, in key order.
    pub fn forwards(&self) -> Vec<Forward> {
        let mut out = Vec::with_capacity(self.port.len() as usize * self.protocol.transports().len());
        for &transport in self.protocol.transports() {
            for (port, to_port) in self.port.ports().zip(self.to_port.ports()) {
                out.push(Forward {
                    transport,
                    port,
                    to: self.to,
                    to_port,
                });
            }
        }
        out.sort_unstable();
        out
    }
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
    /// Enabled mappings, in file order.
    pub mappings: Vec<Mapping>,
    /// Names of mappings present in the file with `enabled: false` (kept so a plan can say why it
    /// deletes them).
    pub disabled: Vec<String>,
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
    /// Source prefixes found (canonical form), empty when the mapping has no allow-list.
    pub allow_from: Vec<IpNet>,
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
}

impl ObservedMapping {
    /// What a backend reads back after creating `mapping` faithfully.
    pub fn from_mapping(mapping: &Mapping) -> Self {
        ObservedMapping {
            name: mapping.name.clone(),
            description: mapping.description.clone(),
            forwards: mapping.forwards(),
            allow_from: mapping.allow_from.clone(),
            damage: Vec::new(),
            objects: Vec::new(),
        }
    }

    /// Whether the mapping's kernel objects are not the complete set portmap writes.
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty()
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
    /// What the backend found around its table that can stop forwards from working.
    #[serde(default)]
    pub environment: Environment,
    /// Tracked connections an earlier apply made stale and recorded in its transaction, but did not
    /// get to remove (it was killed in between): the next apply finishes the cleanup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_flows: Vec<crate::plan::StaleFlows>,
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
            environment: Environment::default(),
            pending_flows: Vec::new(),
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
            environment: Environment::default(),
            pending_flows: Vec::new(),
        }
    }
}
