//! The raw configuration schema, version 1: what a YAML (or JSON) file says, before any checking.
//!
//! A `Config` can hold nonsense (port 0, `to: "foo"`, a name with a newline); it becomes a typed
//! [`Model`] only through [`validate()`](crate::validate()) or [`load_str`](crate::load_str()).
//! Library users build one in code or deserialize it from JSON. This module must not check values
//! (that is `validate.rs`) nor read files.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{Model, Protocol};
use crate::schema;

/// The only configuration version this crate reads.
pub const CONFIG_VERSION: u32 = 1;

/// A whole configuration file (version 1).
///
/// Its JSON Schema (`portmap schema`, [`crate::config_schema`]) is derived from these types; the
/// `schemars` attributes say what the validator checks that a Rust type cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "portmap configuration (version 1)",
    transform = schema::config_rules
)]
#[non_exhaustive]
pub struct Config {
    /// Schema version; must be 1 when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::version")]
    pub version: Option<u32>,
    /// Interfaces facing the internet (at least one).
    #[schemars(schema_with = "schema::wan")]
    pub wan: InterfaceList,
    /// Interfaces facing the LAN (optional; used by hairpin and masquerade).
    #[serde(default, skip_serializing_if = "InterfaceList::is_empty")]
    #[schemars(schema_with = "schema::lan")]
    pub lan: InterfaceList,
    /// Source-NAT LAN traffic leaving through a WAN interface. Default false.
    #[serde(default)]
    pub masquerade: bool,
    /// NAT reflection for LAN hosts and the router itself. Default true.
    #[serde(default = "default_true")]
    pub hairpin: bool,
    /// The kernel log (nflog) group that mappings with `log: true` log to (0–65535); default
    /// [`crate::DEFAULT_LOG_GROUP`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<i64>,
    /// Named lists of source prefixes (`office: [198.51.100.0/24, 2001:db8:1::/48]`), used by name
    /// in a mapping's `allow_from`. A list may mix families; a mapping uses its members of the
    /// family of its `to`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::sources")]
    pub sources: BTreeMap<String, Vec<String>>,
    /// The port mappings, in file order.
    #[serde(default)]
    #[schemars(schema_with = "schema::mappings")]
    pub mappings: Vec<MappingConfig>,
}

impl Config {
    /// A configuration with these WAN interfaces and mappings, everything else at its default
    /// (set the other fields afterwards: `config.hairpin = false`).
    pub fn new(wan: InterfaceList, mappings: Vec<MappingConfig>) -> Self {
        Config {
            wan,
            mappings,
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: None,
            wan: InterfaceList::default(),
            lan: InterfaceList::default(),
            masquerade: false,
            hairpin: true,
            log_group: None,
            sources: BTreeMap::new(),
            mappings: Vec::new(),
        }
    }
}

/// `{ interfaces: [...] }`: the interfaces on one side of the router.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfaceList {
    /// Linux interface names, e.g. `eth0`, `br-lan`.
    #[schemars(schema_with = "schema::interfaces")]
    pub interfaces: Vec<String>,
}

impl InterfaceList {
    /// A list of the given interface names.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        InterfaceList {
            interfaces: names.into_iter().map(Into::into).collect(),
        }
    }

    /// True when no interface is listed.
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty()
    }
}

/// One `mappings:` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MappingConfig {
    /// Unique name: 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit.
    #[schemars(schema_with = "schema::name")]
    pub name: String,
    /// `tcp`, `udp` or `both`. Default tcp.
    #[serde(default)]
    pub protocol: Protocol,
    /// External port or range.
    pub port: PortSpec,
    /// The inner host's address, as written: IPv4 or IPv6, one unicast host.
    #[schemars(schema_with = "schema::target")]
    pub to: String,
    /// Port(s) on the inner host; default: the same as `port`. A range must have as many ports as
    /// `port`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::to_port")]
    pub to_port: Option<PortSpec>,
    /// Source addresses or CIDR prefixes allowed, of the family of `to`; left out, everyone may
    /// connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::allow_from")]
    pub allow_from: Vec<String>,
    /// The router's public addresses the mapping answers on; empty means any address of the WAN
    /// interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::listen")]
    pub listen: Vec<String>,
    /// Free text: one line, at most 128 bytes, without `"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::description")]
    pub description: Option<String>,
    /// Whether the mapping is in force. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Log each new forwarded connection through the kernel's nflog. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// Cap on new connections, as nft writes a rate: `"20/second"` or `"20/second burst 40"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// An RFC 3339 time (`2026-12-24T00:00:00Z`, or with an offset) after which the kernel itself
    /// removes the forward, whether or not portmap runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::expires")]
    pub expires: Option<String>,
}

impl MappingConfig {
    /// A TCP mapping `name`: `port` → `to` on the same port(s), everything else at its default.
    pub fn new(name: impl Into<String>, port: impl Into<PortSpec>, to: impl Into<String>) -> Self {
        MappingConfig {
            name: name.into(),
            protocol: Protocol::Tcp,
            port: port.into(),
            to: to.into(),
            to_port: None,
            allow_from: Vec::new(),
            listen: Vec::new(),
            description: None,
            enabled: true,
            log: false,
            limit: None,
            expires: None,
        }
    }
}

impl Default for MappingConfig {
    /// An empty mapping (no name, port 0, no target): invalid until filled in.
    fn default() -> Self {
        MappingConfig::new("", PortSpec::Number(0), "")
    }
}

/// A port as written: a number (`8080`) or text (`"8080"`, `"6000-6010"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(schema_with = "schema::port")]
pub enum PortSpec {
    /// A plain number; valid when 1–65535.
    Number(i64),
    /// `"A"` or `"A-B"`.
    Text(String),
}

impl Default for PortSpec {
    /// Port 0 (invalid until set).
    fn default() -> Self {
        PortSpec::Number(0)
    }
}

impl From<u16> for PortSpec {
    fn from(port: u16) -> Self {
        PortSpec::Number(i64::from(port))
    }
}

impl From<&str> for PortSpec {
    fn from(text: &str) -> Self {
        PortSpec::Text(text.to_owned())
    }
}

impl From<String> for PortSpec {
    fn from(text: String) -> Self {
        PortSpec::Text(text)
    }
}

impl From<crate::model::PortRange> for PortSpec {
    fn from(range: crate::model::PortRange) -> Self {
        if range.start == range.end {
            PortSpec::from(range.start)
        } else {
            PortSpec::Text(range.to_string())
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Number(n) => write!(f, "{n}"),
            PortSpec::Text(t) => f.write_str(t),
        }
    }
}

impl From<&Model> for Config {
    /// The configuration that validates back to `model`'s settings and enabled mappings. Disabled
    /// mappings are known only by name and are not included.
    fn from(model: &Model) -> Self {
        let s = &model.settings;
        Config {
            version: Some(CONFIG_VERSION),
            wan: InterfaceList::new(s.wan_interfaces.iter().cloned()),
            lan: InterfaceList::new(s.lan_interfaces.iter().cloned()),
            masquerade: s.masquerade,
            hairpin: s.hairpin,
            log_group: model
                .mappings
                .iter()
                .find_map(|m| m.log)
                .filter(|&g| g != crate::model::DEFAULT_LOG_GROUP)
                .map(i64::from),
            sources: model
                .sources
                .iter()
                .map(|(name, list)| (name.clone(), list.prefixes().map(ToString::to_string).collect()))
                .collect(),
            mappings: model
                .mappings
                .iter()
                .map(|m| MappingConfig {
                    name: m.name.clone(),
                    protocol: m.protocol,
                    port: m.port.into(),
                    to: m.to.to_string(),
                    to_port: (m.to_port != m.port).then(|| m.to_port.into()),
                    // A mapping built in code may leave the written form empty: its effective
                    // prefixes are then all written inline.
                    allow_from: if m.allow_sources.is_empty() {
                        m.allow_from.iter().map(ToString::to_string).collect()
                    } else {
                        m.allow_sources
                            .iter()
                            .cloned()
                            .chain(m.allow_inline.iter().map(ToString::to_string))
                            .collect()
                    },
                    listen: m.listen.iter().map(ToString::to_string).collect(),
                    description: m.description.clone(),
                    enabled: true,
                    log: m.log.is_some(),
                    limit: m.limit.map(|l| l.to_string()),
                    expires: m.expires.map(|t| t.to_string()),
                })
                .collect(),
        }
    }
}

fn default_true() -> bool {
    true
}
