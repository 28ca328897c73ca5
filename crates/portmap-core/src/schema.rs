//! The JSON Schema (draft 2020-12) of the configuration file, derived from the [`Config`] types
//! with `schemars`: the structure, the descriptions and the defaults come from the types
//! themselves, so a field added there is in the schema too; the functions here give each field
//! the patterns and ranges that `validate.rs` and `load.rs` check, written to accept exactly what
//! they accept wherever JSON Schema can say it.
//!
//! What a schema cannot say, and only `portmap validate` checks: names unique across mappings;
//! ports that overlap between mappings of one family; a `to_port` range as long as `port`'s; a
//! reversed range (`"6010-6000"`); an `allow_from` entry of the other family than `to`, with host
//! bits set, or inside another entry; an `allow_from` name that no `sources` list has; an interface listed twice or on both sides; which addresses
//! are hosts (loopback, multicast, link-local and the like are refused by the validator). Lengths
//! are counted in characters by JSON Schema and in bytes by the validator (they differ only for
//! non-ASCII text). This module must not decide validity itself: it only describes it.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::config::{Config, MappingConfig};
use crate::validate::{MAX_DESCRIPTION_LEN, MAX_INTERFACE_LEN, MAX_NAME_LEN};

/// Where the package installs the schema; the examples' `# yaml-language-server: $schema=` line
/// names it.
pub const SCHEMA_PATH: &str = "/usr/share/portmap/portmap.schema.json";

/// The JSON Schema of a version 1 configuration file, as `portmap schema` prints it.
pub fn config_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<Config>().to_value();
    unwrap_descriptions(&mut schema);
    schema
}

/// Descriptions come from doc comments wrapped at 100 columns: join their lines, as a paragraph.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "description"
                    && let serde_json::Value::String(text) = v
                {
                    *text = text.replace('\n', " ");
                } else {
                    unwrap_descriptions(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// One port, 1-65535, as text: optional leading zeros (the validator reads `"00080"` as 80).
const PORT_TEXT: &str =
    "0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// An IPv4 address octet, 0-255 (the validator, like Rust's parser, refuses leading zeros).
const OCTET: &str = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// Characters refused in interface names and descriptions: control characters and the invisible
/// formatting characters (`diagnostic::is_unsafe_char`).
const UNSAFE_CHARS: &str =
    "\\u0000-\\u001f\\u007f-\\u009f\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff";

pub(crate) fn config_rules(schema: &mut Schema) {
    schema.insert(
        "description".to_owned(),
        format!(
            "The port forwards of a Linux router, read by portmap (`portmap validate` checks a file \
             against every rule, including those a schema cannot express). Installed at {SCHEMA_PATH}."
        )
        .into(),
    );
    // `masquerade: true` needs LAN interfaces.
    schema.insert(
        "if".to_owned(),
        serde_json::json!({
            "properties": { "masquerade": { "const": true } },
            "required": ["masquerade"]
        }),
    );
    schema.insert(
        "then".to_owned(),
        serde_json::json!({
            "required": ["lan"],
            "properties": { "lan": { "properties": { "interfaces": { "minItems": 1 } } } }
        }),
    );
}

pub(crate) fn version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "const": 1 })
}

fn side(min_items: u32) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "interfaces": {
                "type": "array",
                "items": interface_name(),
                "minItems": min_items
            }
        },
        "required": ["interfaces"],
        "additionalProperties": false
    })
}

pub(crate) fn wan(_: &mut SchemaGenerator) -> Schema {
    side(1)
}

pub(crate) fn lan(_: &mut SchemaGenerator) -> Schema {
    side(0)
}

pub(crate) fn interfaces(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": interface_name() })
}

fn interface_name() -> serde_json::Value {
    serde_json::json!({
        "type": "string",
        "description": "A Linux interface name (eth0, br-lan, ppp0): 1-15 bytes without `/`, `:`, whitespace, quotes or `*`.",
        "minLength": 1,
        "maxLength": MAX_INTERFACE_LEN,
        "pattern": format!("^(?!\\.\\.?$)[^/:*\"'`\\s{UNSAFE_CHARS}]+$"),
        "examples": ["eth0", "br-lan"]
    })
}

pub(crate) fn mappings(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<MappingConfig>();
    json_schema!({ "type": ["array", "null"], "items": item, "default": [] })
}

pub(crate) fn name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": format!("^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{}}}$", MAX_NAME_LEN - 1),
        "examples": ["web", "mail-smtp"]
    })
}

pub(crate) fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A port (1-65535) or a range \"A-B\" (A no greater than B).",
        "anyOf": [
            { "type": "integer", "minimum": 1, "maximum": 65535 },
            { "type": "string", "pattern": format!("^{PORT_TEXT}(?:-{PORT_TEXT})?$") }
        ],
        "examples": [8080, "6000-6010"]
    })
}

pub(crate) fn to_port(generator: &mut SchemaGenerator) -> Schema {
    port(generator)
}

pub(crate) fn target(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }],
        "examples": ["192.168.1.66", "2001:db8::66"]
    })
}

/// An address or CIDR prefix of either family, as `allow_from` and the `sources` lists take it.
fn prefix_pattern() -> String {
    let v4 = format!("{OCTET}(?:\\.{OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?");
    let v6 = "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?";
    format!("(?:{v4}|{v6})")
}

pub(crate) fn allow_from(_: &mut SchemaGenerator) -> Schema {
    let names = format!("[A-Za-z0-9][A-Za-z0-9_.-]{{0,{}}}", MAX_NAME_LEN - 1);
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "string",
            "description": "An address or CIDR prefix (203.0.113.0/24, 198.51.100.7, 2001:db8::/32), or the name of a list in `sources`.",
            "pattern": format!("^(?:{}|{names})$", prefix_pattern())
        },
        "examples": [["203.0.113.0/24", "198.51.100.7"], ["office", "203.0.113.9"]]
    })
}

pub(crate) fn sources(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Named lists of source prefixes, used by name in a mapping's `allow_from`; a list may mix IPv4 and IPv6, and a mapping uses the members of its own family.",
        "propertyNames": { "pattern": format!("^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{}}}$", MAX_NAME_LEN - 1) },
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "string",
                "description": "An address or CIDR prefix, e.g. 198.51.100.0/24 or 2001:db8:1::/48.",
                "pattern": format!("^{}$", prefix_pattern())
            }
        },
        "examples": [{ "office": ["198.51.100.0/24", "2001:db8:1::/48"] }]
    })
}

pub(crate) fn listen(_: &mut SchemaGenerator) -> Schema {
    let v4 = format!("{OCTET}(?:\\.{OCTET}){{3}}");
    let v6 = "[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*";
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": crate::validate::MAX_LISTEN_PER_MAPPING,
        "uniqueItems": true,
        "description": "The router's public addresses the mapping answers on (of the same family as `to`); without it, any address of the `wan` interfaces.",
        "items": {
            "type": "string",
            "description": "A public address of the router, e.g. 203.0.113.10 or 2001:db8::10 (no prefix).",
            "pattern": format!("^(?:{v4}|{v6})$")
        },
        "examples": [["203.0.113.10"]]
    })
}

pub(crate) fn expires(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "format": "date-time",
        "description": "An RFC 3339 time with Z or an offset (2026-12-24T00:00:00Z), from 1970-01-01T00:00:01Z to 2038-01-19T03:14:07Z, after which the kernel itself removes the forward.",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
    })
}

pub(crate) fn description(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "maxLength": MAX_DESCRIPTION_LEN,
        "pattern": format!("^[^\"{UNSAFE_CHARS}]*$")
    })
}

/// The spellings of a protocol the loader accepts: lower case, upper case and capitalised, the
/// three YAML 1.2 itself accepts for `true`, `false` and `null`.
pub(crate) const PROTOCOL_SPELLINGS: [&str; 9] =
    ["tcp", "udp", "both", "TCP", "UDP", "BOTH", "Tcp", "Udp", "Both"];

impl JsonSchema for crate::model::Protocol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Protocol".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "tcp, udp or both (TCP and UDP on the same ports); TCP, Tcp and the like are read as tcp.",
            "enum": PROTOCOL_SPELLINGS
        })
    }
}
