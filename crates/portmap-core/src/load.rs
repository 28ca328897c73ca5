//! `load_str`: YAML text → `Config` (remembering where every value was) → validation → `Model`.
//!
//! The walk reports what only the text can show — unknown keys (with "did you mean"), duplicate keys,
//! wrong types, missing required fields — and keeps going, so that one run reports every problem in
//! the file; `validate.rs` then checks the values. This module reads no files: the caller hands over
//! the text and names its origin.

use crate::config::{Config, InterfaceList, MappingConfig, PortSpec};
use crate::diagnostic::{MAX_CONFIG_BYTES, shown, shown_size};
use crate::error::ConfigErrors;
use crate::model::{Model, Protocol};
use crate::validate::{Field, MappingSlots, MappingSpans, Report, Slot, SourceSpans, Spans, check};
use crate::yaml::{self, Kind, Node, Pos, Scalar, TypedBy, Value};

/// Parse and validate a YAML configuration. `origin` names the text in error messages (a file name,
/// or `-` for standard input). Every problem is reported, sorted by position, as
/// `origin:line:col: field: message`.
///
/// Reading is bounded: a text over [`MAX_CONFIG_BYTES`] is refused unread, and nesting, the number
/// of values and the parser's lookahead are limited (see [`crate::diagnostic`]); only the first
/// [`crate::MAX_ERRORS`] errors are kept.
pub fn load_str(text: &str, origin: &str) -> Result<Model, ConfigErrors> {
    let mut report = Report::new(origin);
    let read = read_within_size(text, &mut report);
    check_read(read, report)
}

/// [`load_bytes`] for bytes the caller is done with: they are dropped once read, before the
/// checks, which hold the most memory a large file costs (the text is a tenth of it).
pub fn load_vec(bytes: Vec<u8>, origin: &str) -> Result<Model, ConfigErrors> {
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return load_bytes(e.as_bytes(), origin),
    };
    let mut report = Report::new(origin);
    let read = read_within_size(&text, &mut report);
    drop(text);
    check_read(read, report)
}

/// [`read`] when `text` is within [`MAX_CONFIG_BYTES`] (else reported).
fn read_within_size(text: &str, report: &mut Report<'_>) -> Option<(Config, Spans)> {
    if too_large(text, report) {
        return None;
    }
    read(text, report)
}

/// What [`read`] gave → the model, or every error.
fn check_read(read: Option<(Config, Spans)>, mut report: Report<'_>) -> Result<Model, ConfigErrors> {
    let Some((config, spans)) = read else {
        // No document at all (a text refused whole, or a mapping that is not one, was reported).
        if !report.has_errors() {
            report.push(
                Some((1, 1)),
                Field::Whole,
                "the configuration is empty; it needs at least `wan: { interfaces: [eth0] }`",
            );
        }
        return report.finish(None);
    };
    let model = check(&config, spans, &mut report);
    report.finish(model)
}

/// Parse a YAML configuration into the raw `Config` without checking values (YAML-level problems —
/// syntax, unknown or duplicate keys, wrong types, missing fields — are still errors).
pub fn parse_config(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(origin);
    if too_large(text, &mut report) {
        return report.finish(None);
    }
    let config = read(text, &mut report).map(|(config, _)| config);
    report.finish(config)
}

/// Read `text` and walk it into the raw `Config` and its `Spans`, every YAML and walk problem
/// reported in `report`. `None` when there is no document or its root is not a mapping.
///
/// The entries of `mappings:` are walked one at a time while the text is read and their part of
/// the tree dropped at once: the tree of a large file is several times the size of its `Config`,
/// and only the short rest of it is held whole. What the walk reports is what a walk of the
/// finished tree reported: its problems go to a report of their own, joined after the YAML
/// reader's (as if reported after them) or forgotten with everything else the walk made when the
/// reader refused the text whole.
fn read(text: &str, report: &mut Report<'_>) -> Option<(Config, Spans)> {
    let mut walked = Report::new(report.origin());
    let mut walker = Walker {
        report: &mut walked,
        spans: Spans::default(),
        mappings: Vec::new(),
        streaming: None,
    };
    let parsed = yaml::parse_streaming(text, &mut |entries, key, j, item| {
        walker.item(entries, key, j, item)
    });
    for e in &parsed.errors {
        report.push(Some(e.pos), Field::Whole, e.message.clone());
    }
    report.count_more(parsed.more_errors);
    let root = parsed.root?;
    let config = walker.config(&root);
    let spans = walker.spans;
    drop(root);
    report.absorb(walked);
    Some((config?, spans))
}

/// [`load_str`] for bytes read from a file: they must be UTF-8 (the error names the line and column
/// of the first byte that is not).
pub fn load_bytes(bytes: &[u8], origin: &str) -> Result<Model, ConfigErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(text, origin),
        Err(e) => {
            let mut report = Report::new(origin);
            let valid = &bytes[..e.valid_up_to()];
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let line = valid.split(|&b| b == b'\n').count();
            let col = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
            let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
            report.push(
                Some((
                    u32::try_from(line).unwrap_or(u32::MAX),
                    u32::try_from(col).unwrap_or(u32::MAX),
                )),
                Field::Whole,
                format!("the configuration is not UTF-8 text (byte 0x{byte:02x} here); save it as UTF-8"),
            );
            report.finish(None)
        }
    }
}

/// Whether `text` is over [`MAX_CONFIG_BYTES`] (reported).
fn too_large(text: &str, report: &mut Report<'_>) -> bool {
    if text.len() <= MAX_CONFIG_BYTES {
        return false;
    }
    report.push(
        None,
        Field::Whole,
        format!(
            "the configuration is {} bytes, larger than the {} portmap reads",
            text.len(),
            shown_size(MAX_CONFIG_BYTES)
        ),
    );
    true
}

const TOP_KEYS: [&str; 8] = [
    "version",
    "wan",
    "lan",
    "masquerade",
    "hairpin",
    "log_group",
    "sources",
    "mappings",
];
const SIDE_KEYS: [&str; 1] = ["interfaces"];
const MAPPING_KEYS: [&str; 12] = [
    "name",
    "protocol",
    "port",
    "to",
    "to_port",
    "allow_from",
    "listen",
    "description",
    "enabled",
    "log",
    "limit",
    "expires",
];

/// The keys valid in the section a field path names: the top level (`""`), `wan` and `lan`, or an
/// entry of `mappings` (`mappings[3]`). `None` for any other path.
pub(crate) fn valid_keys(field: &str) -> Option<&'static [&'static str]> {
    match field {
        "" => Some(&TOP_KEYS),
        "wan" | "lan" => Some(&SIDE_KEYS),
        _ => {
            let index = field.strip_prefix("mappings[")?.strip_suffix(']')?;
            index
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then_some(&MAPPING_KEYS[..])
        }
    }
}

/// Words people write for a key, and the key they mean.
const SYNONYMS: &[(&str, &str)] = &[
    ("target", "to"),
    ("host", "to"),
    ("dest", "to"),
    ("destination", "to"),
    ("address", "to"),
    ("ip", "to"),
    ("proto", "protocol"),
    ("external_port", "port"),
    ("dport", "port"),
    ("from_port", "port"),
    ("internal_port", "to_port"),
    ("target_port", "to_port"),
    ("dest_port", "to_port"),
    ("allow", "allow_from"),
    ("allowed", "allow_from"),
    ("source", "allow_from"),
    ("sources", "allow_from"),
    ("comment", "description"),
    ("enable", "enabled"),
    ("disabled", "enabled"),
    ("interface", "interfaces"),
    ("nat", "masquerade"),
    ("snat", "masquerade"),
    ("reflection", "hairpin"),
    ("mapping", "mappings"),
    ("forwards", "mappings"),
    ("logging", "log"),
    ("nflog", "log"),
    ("rate", "limit"),
    ("rate_limit", "limit"),
    ("ratelimit", "limit"),
    ("group", "log_group"),
    ("bind", "listen"),
    ("public", "listen"),
    ("public_ip", "listen"),
    ("listen_on", "listen"),
    ("external_ip", "listen"),
    ("nflog_group", "log_group"),
    ("expire", "expires"),
    ("expiry", "expires"),
    ("expires_at", "expires"),
    ("until", "expires"),
    ("timeout", "expires"),
    ("ttl", "expires"),
];

struct Walker<'r, 'o> {
    report: &'r mut Report<'o>,
    spans: Spans,
    /// The entries of the first `mappings:` walked while the text was read, in file order.
    mappings: Vec<MappingConfig>,
    /// The root entry whose list items were last handed over while reading (its index among the
    /// root's entries), and whether it is the first `mappings:`, the one that is walked.
    streaming: Option<(usize, bool)>,
}

/// True for a key that is the scalar `name`, as [`Walker::entries`] matches keys.
fn is_key(node: &Node, name: &str) -> bool {
    matches!(&node.value, Value::Scalar(Scalar { text, .. }) if text.as_ref() == name)
}

/// True for a null scalar (`~`, `null`, nothing, `!!null`).
fn is_null(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar(s) if s.kind == Kind::Null)
}

/// A node described for "expected …, got …" messages.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Seq(_) => "a list".to_owned(),
        Value::Map(_) => "a mapping (key: value pairs)".to_owned(),
        Value::Reported => "an unusable value".to_owned(),
        Value::Scalar(s) => match (s.kind, s.typed_by) {
            (Kind::Null, TypedBy::Plain) if s.text.is_empty() => "nothing (null)".to_owned(),
            (Kind::Str, TypedBy::Plain) => format!("`{}`", shown(&s.text)),
            (Kind::Str, _) => format!("the string \"{}\"", shown(&s.text)),
            (_, TypedBy::Tag(tag)) => format!("{} (tagged {})", yaml::reading(s), tag.name()),
            (_, _) => format!("`{}`", shown(&s.text)),
        },
    }
}

/// For a plain scalar that YAML reads as something other than text where text is needed: what the
/// reader sees and how to make it text.
fn typed_not_text(s: &Scalar, quotable: bool, expected: &str) -> String {
    let text = shown(&s.text);
    let reading = yaml::reading(s);
    if quotable {
        format!("`{text}` is read by YAML as {reading}; quote it: \"{text}\"")
    } else {
        format!("expected {expected}, got `{text}`, which YAML reads as {reading}")
    }
}

/// "did you mean `x`?" for an unknown key, or where the key belongs, or the valid keys.
fn unknown_key_message(key: &str, keys: &[&str]) -> String {
    /// No key is longer; a longer one is compared with none (and not copied).
    const LONGEST_KEY: usize = 32;
    if key.len() > LONGEST_KEY {
        return format!(
            "unknown key `{}`; valid keys here are: {}",
            shown(key),
            keys.join(", ")
        );
    }
    let lower = key.to_ascii_lowercase();
    if let Some(k) = keys.iter().find(|k| **k == lower) {
        return format!(
            "unknown key `{}`; did you mean `{k}`? (keys are lower case)",
            shown(key)
        );
    }
    let synonym = SYNONYMS
        .iter()
        .find(|(word, _)| *word == lower)
        .map(|(_, k)| *k)
        .filter(|k| keys.contains(k));
    let close = keys
        .iter()
        .map(|k| (strsim::jaro_winkler(&lower, k), *k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    if let Some(k) = synonym.or(close) {
        return format!("unknown key `{}`; did you mean `{k}`?", shown(key));
    }
    let elsewhere = if keys != MAPPING_KEYS && MAPPING_KEYS.contains(&key) {
        Some("it belongs in an entry of `mappings:`")
    } else if keys != SIDE_KEYS && SIDE_KEYS.contains(&key) {
        Some("it belongs under `wan:` or `lan:`")
    } else if keys != TOP_KEYS && TOP_KEYS.contains(&key) {
        Some("it belongs at the top level")
    } else {
        None
    };
    match elsewhere {
        Some(hint) => format!("`{key}` is not valid here; {hint}"),
        None => format!(
            "unknown key `{}`; valid keys here are: {}",
            shown(key),
            keys.join(", ")
        ),
    }
}

/// A protocol as written. `tcp`, `TCP` and `Tcp` are all TCP: the three spellings YAML 1.2 accepts
/// for its own words (`true`, `True`, `TRUE`), and the one Kubernetes and iptables users write.
/// Anything else is refused with what was probably meant.
fn protocol_of(text: &str) -> Result<Protocol, String> {
    let spelled = |word: &str| {
        let mut capital = word.to_owned();
        capital[..1].make_ascii_uppercase();
        text == word || text == word.to_ascii_uppercase() || text == capital
    };
    if spelled("tcp") {
        return Ok(Protocol::Tcp);
    }
    if spelled("udp") {
        return Ok(Protocol::Udp);
    }
    if spelled("both") {
        return Ok(Protocol::Both);
    }
    let lower = text.to_ascii_lowercase();
    Err(match lower.as_str() {
        "tcp" | "udp" | "both" => format!("unknown protocol `{}`; write `{lower}`", shown(text)),
        "tcp/udp" | "udp/tcp" | "tcp,udp" | "udp,tcp" | "tcp+udp" | "udp+tcp" | "tcp udp" | "all" | "any" => {
            format!(
                "unknown protocol `{}`; write `both` for TCP and UDP on the same ports",
                shown(text)
            )
        }
        _ => format!("unknown protocol `{}`; use tcp, udp or both", shown(text)),
    })
}

impl Walker<'_, '_> {
    /// An item of a list under the root mapping, handed over as soon as it is read (see
    /// [`yaml::Items`]): an entry of the first `mappings:` is walked now and dropped; the items of
    /// any other list are kept in the tree for [`Walker::config`].
    fn item(&mut self, entries: &[(Node, Node)], key: &Node, j: usize, item: Node) -> Option<Node> {
        let entry = entries.len();
        let walk = match self.streaming {
            Some((e, walk)) if e == entry => walk,
            _ => {
                let walk = is_key(key, "mappings") && !entries.iter().any(|(k, _)| is_key(k, "mappings"));
                self.streaming = Some((entry, walk));
                walk
            }
        };
        if !walk {
            return Some(item);
        }
        if let Some((m, spans)) = self.mapping(&item, j) {
            self.mappings.push(m);
            self.spans.mappings.push(spans);
        }
        None
    }

    fn error(&mut self, pos: Pos, field: Field, message: impl Into<String>) {
        self.report.push(Some(pos), field, message);
    }

    fn wrong_type(&mut self, node: &Node, field: Field, expected: &str) {
        if !matches!(node.value, Value::Reported) {
            let got = describe(node);
            self.error(node.pos, field, format!("expected {expected}, got {got}"));
        }
    }

    /// The values of `keys` in mapping `node`, reporting unknown and duplicate keys. `None` (after
    /// reporting) when the node is not a mapping.
    fn entries<'n, const N: usize>(
        &mut self,
        node: &'n Node,
        field: Field,
        keys: [&'static str; N],
        expected: &str,
    ) -> Option<[Option<&'n Node>; N]> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, field, expected);
            return None;
        };
        let mut found: [Option<(&'n Node, Pos)>; N] = [None; N];
        for (key, value) in entries {
            let Value::Scalar(Scalar { text, .. }) = &key.value else {
                self.wrong_type(key, field, "a key name");
                continue;
            };
            let Some(i) = keys.iter().position(|k| *k == text.as_ref()) else {
                let message = unknown_key_message(text, &keys);
                self.error(key.pos, field, message);
                continue;
            };
            if let Some((_, first)) = found[i] {
                let message = format!(
                    "duplicate key `{text}` (first at line {}); give each key once",
                    first.0
                );
                self.error(key.pos, field, message);
            } else {
                found[i] = Some((value, key.pos));
            }
        }
        Some(found.map(|f| f.map(|(v, _)| v)))
    }

    /// A string scalar's text. A plain scalar that YAML reads as a number, boolean or null is not
    /// text (every other YAML tool would read it as that): the error says what it is read as and,
    /// when `quotable` (the text itself could be valid, as for a name), how to quote it.
    fn text<'n>(&mut self, node: &'n Node, field: Field, expected: &str, quotable: bool) -> Option<&'n str> {
        match &node.value {
            Value::Scalar(s) if s.kind == Kind::Str => Some(&s.text),
            Value::Scalar(s)
                if s.typed_by == TypedBy::Plain && !(s.kind == Kind::Null && s.text.is_empty()) =>
            {
                let message = typed_not_text(s, quotable, expected);
                self.error(node.pos, field, message);
                None
            }
            _ => {
                self.wrong_type(node, field, expected);
                None
            }
        }
    }

    /// [`Walker::text`] for values whose text may be valid as written (names, interfaces,
    /// descriptions): the hint says to quote it.
    fn string<'n>(&mut self, node: &'n Node, field: Field, expected: &str) -> Option<&'n str> {
        self.text(node, field, expected, true)
    }

    /// A YAML 1.2 boolean: `true`/`false` (also `True`, `TRUE`, …, or tagged `!!bool`).
    fn boolean(&mut self, node: &Node, field: Field) -> Option<bool> {
        if let Value::Scalar(s) = &node.value {
            match (s.kind, s.typed_by) {
                (Kind::Bool(b), _) => return Some(b),
                (Kind::Str, TypedBy::Plain)
                    if matches!(
                        s.text.to_ascii_lowercase().as_str(),
                        "yes" | "no" | "on" | "off" | "y" | "n"
                    ) =>
                {
                    self.error(
                        node.pos,
                        field,
                        format!(
                            "expected true or false, got `{}` (YAML 1.1 spellings are not booleans here)",
                            s.text
                        ),
                    );
                    return None;
                }
                (Kind::Str, typed_by) if matches!(s.text.as_ref(), "true" | "false") => {
                    let fix = if typed_by == TypedBy::Quoted {
                        "remove the quotes"
                    } else {
                        "remove the tag"
                    };
                    self.error(
                        node.pos,
                        field,
                        format!("expected true or false, got the string \"{}\"; {fix}", s.text),
                    );
                    return None;
                }
                _ => {}
            }
        }
        self.wrong_type(node, field, "true or false");
        None
    }

    /// A port or range: an integer (`8080`, also `0x1F90` or `!!int "8080"`, as YAML reads them) or
    /// text (`"8080"`, `6000-6010`), which validation parses.
    fn port(&mut self, node: &Node, field: Field) -> Option<PortSpec> {
        const EXPECTED: &str = "a port (1-65535) or a range \"A-B\"";
        match &node.value {
            Value::Scalar(s) if s.kind == Kind::Int => Some(match yaml::int_value(&s.text) {
                Some(n) => PortSpec::Number(n),
                // Too large for any integer type: validation says it is out of range.
                None => PortSpec::Text(s.text.trim_start_matches('+').to_owned()),
            }),
            Value::Scalar(s) if s.kind != Kind::Null => Some(PortSpec::Text(s.text.to_string())),
            _ => {
                self.wrong_type(node, field, EXPECTED);
                None
            }
        }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let [
            version,
            wan,
            lan,
            masquerade,
            hairpin,
            log_group,
            sources,
            mappings,
        ] = self.entries(
            root,
            Field::Whole,
            TOP_KEYS,
            "a mapping of settings (wan, lan, masquerade, hairpin, log_group, sources, mappings)",
        )?;
        let mut config = Config::default();

        if let Some(v) = version {
            self.spans.version.pos = Some(v.pos);
            match &v.value {
                Value::Scalar(s) if s.kind == Kind::Int => {
                    if let Some(n) = yaml::int_value(&s.text).and_then(|n| u32::try_from(n).ok()) {
                        config.version = Some(n);
                    } else {
                        let message = format!(
                            "unsupported configuration version {}; this portmap reads version {}",
                            shown(&s.text),
                            crate::config::CONFIG_VERSION
                        );
                        self.error(v.pos, Field::Top("version"), message);
                        self.spans.version.bad = true;
                    }
                }
                _ => {
                    self.wrong_type(v, Field::Top("version"), "1 (the configuration version)");
                    self.spans.version.bad = true;
                }
            }
        }

        match wan {
            None => {
                self.error(
                    root.pos,
                    Field::Whole,
                    "missing required field `wan`; add `wan: { interfaces: [eth0] }` naming the interface(s) facing \
                     the internet",
                );
                self.spans.wan.bad = true;
            }
            Some(node) => {
                let (list, slot, items) = self.side(node, "wan", "wan.interfaces");
                config.wan = list;
                self.spans.wan = slot;
                self.spans.wan_items = items;
            }
        }
        if let Some(node) = lan {
            let (list, slot, items) = self.side(node, "lan", "lan.interfaces");
            config.lan = list;
            self.spans.lan = slot;
            self.spans.lan_items = items;
        }
        if let Some(node) = masquerade {
            self.spans.masquerade.pos = Some(node.pos);
            match self.boolean(node, Field::Top("masquerade")) {
                Some(b) => config.masquerade = b,
                None => self.spans.masquerade.bad = true,
            }
        }
        if let Some(node) = hairpin
            && let Some(b) = self.boolean(node, Field::Top("hairpin"))
        {
            config.hairpin = b;
        }
        if let Some(node) = log_group {
            self.spans.log_group.pos = Some(node.pos);
            match &node.value {
                Value::Scalar(s) if s.kind == Kind::Int => {
                    if let Some(n) = yaml::int_value(&s.text) {
                        config.log_group = Some(n);
                    } else {
                        let message = format!(
                            "log group {} is out of range; use an nflog group 0-65535",
                            shown(&s.text)
                        );
                        self.error(node.pos, Field::Top("log_group"), message);
                        self.spans.log_group.bad = true;
                    }
                }
                _ => {
                    self.wrong_type(node, Field::Top("log_group"), "an nflog group number 0-65535");
                    self.spans.log_group.bad = true;
                }
            }
        }
        if let Some(node) = sources {
            self.sources(node, &mut config);
        }
        if let Some(node) = mappings {
            match &node.value {
                Value::Seq(items) => {
                    // Walked while reading (`items` is then empty), or here.
                    config.mappings = std::mem::take(&mut self.mappings);
                    config.mappings.reserve(items.len());
                    self.spans.mappings.reserve(items.len());
                    for (j, item) in items.iter().enumerate() {
                        if let Some((m, spans)) = self.mapping(item, j) {
                            config.mappings.push(m);
                            self.spans.mappings.push(spans);
                        }
                    }
                    // Growth leaves up to half a list unused.
                    config.mappings.shrink_to_fit();
                    self.spans.mappings.shrink_to_fit();
                }
                _ if is_null(node) => {}
                _ => self.wrong_type(
                    node,
                    Field::Top("mappings"),
                    "a list of mappings (entries starting with `- `)",
                ),
            }
        }
        Some(config)
    }

    /// `sources:`: each list's name and entries into `config.sources`, their positions into the
    /// spans. A name given twice, or a list that is not a list of text, is reported here.
    fn sources(&mut self, node: &Node, config: &mut Config) {
        self.spans.sources.pos = Some(node.pos);
        let entries = match &node.value {
            Value::Map(entries) => entries,
            _ if is_null(node) => return,
            _ => {
                self.wrong_type(
                    node,
                    Field::Top("sources"),
                    "a mapping of named lists such as `sources: { office: [198.51.100.0/24] }`",
                );
                self.spans.sources.bad = true;
                return;
            }
        };
        for (key, value) in entries {
            let Some(name) = self.string(key, Field::Top("sources"), "a list name") else {
                self.spans.sources.bad = true;
                continue;
            };
            let path = format!("sources.{}", shown(name));
            if let Some(first) = self.spans.source_lists.get(name) {
                let message = format!(
                    "the list `{}` is defined twice (first at line {}); give each list once",
                    shown(name),
                    first.pos.map_or(0, |p| p.0)
                );
                self.report.push_path(Some(key.pos), path, message);
                self.spans.sources.bad = true;
                continue;
            }
            let mut spans = SourceSpans {
                pos: Some(key.pos),
                bad: true,
                items: Vec::new(),
            };
            let mut list = Vec::new();
            match &value.value {
                Value::Seq(items) if !items.is_empty() => {
                    spans.bad = false;
                    for (k, entry) in items.iter().enumerate() {
                        match &entry.value {
                            Value::Scalar(s) if s.kind == Kind::Str => {
                                list.push(s.text.to_string());
                                spans.items.push((entry.pos, k));
                            }
                            _ => {
                                let got = describe(entry);
                                self.report.push_path(
                                    Some(entry.pos),
                                    format!("{path}[{k}]"),
                                    format!("expected an address or CIDR prefix such as 198.51.100.0/24, got {got}"),
                                );
                                spans.bad = true;
                            }
                        }
                    }
                }
                Value::Seq(_) => self.report.push_path(
                    Some(value.pos),
                    path,
                    "the list is empty; list its sources (e.g. [198.51.100.0/24]) or remove it",
                ),
                _ if is_null(value) => self.report.push_path(
                    Some(value.pos),
                    path,
                    "the list is empty; list its sources (e.g. [198.51.100.0/24]) or remove it",
                ),
                _ => {
                    let got = describe(value);
                    self.report.push_path(
                        Some(value.pos),
                        path,
                        format!("expected a list of sources such as [198.51.100.0/24], got {got}"),
                    );
                }
            }
            self.spans.source_lists.insert(name.to_owned(), spans);
            config.sources.insert(name.to_owned(), list);
        }
    }

    /// `wan:` or `lan:`: the list, the slot of the list, and each kept entry's position and index.
    fn side(
        &mut self,
        node: &Node,
        name: &'static str,
        path: &'static str,
    ) -> (InterfaceList, Slot, Vec<(Pos, usize)>) {
        let mut slot = Slot {
            pos: Some(node.pos),
            bad: true,
        };
        let mut list = InterfaceList::default();
        let mut items = Vec::new();
        let Some([interfaces]) = self.entries(
            node,
            Field::Top(name),
            SIDE_KEYS,
            &format!("a mapping such as `{name}: {{ interfaces: [eth0] }}`"),
        ) else {
            return (list, slot, items);
        };
        let Some(seq) = interfaces else {
            self.error(
                node.pos,
                Field::Top(name),
                format!("missing required field `interfaces`; e.g. `{name}: {{ interfaces: [eth0] }}`"),
            );
            return (list, slot, items);
        };
        slot.pos = Some(seq.pos);
        let Value::Seq(entries) = &seq.value else {
            self.wrong_type(seq, Field::Top(path), "a list of interface names such as [eth0]");
            return (list, slot, items);
        };
        for (j, entry) in entries.iter().enumerate() {
            if let Some(text) = self.string(entry, Field::Item(path, j), "an interface name") {
                list.interfaces.push(text.to_owned());
                items.push((entry.pos, j));
            }
        }
        // A list whose every entry was unusable (and reported) is not "empty".
        slot.bad = list.interfaces.is_empty() && !entries.is_empty();
        (list, slot, items)
    }

    fn mapping(&mut self, item: &Node, j: usize) -> Option<(MappingConfig, MappingSpans)> {
        let field = Field::Mapping(j);
        let [
            name,
            protocol,
            port,
            to,
            to_port,
            allow_from,
            listen,
            description,
            enabled,
            log,
            limit,
            expires,
        ] = self.entries(
            item,
            field,
            MAPPING_KEYS,
            "a mapping with at least name, port and to",
        )?;
        let mut m = MappingConfig::default();
        let mut s = MappingSlots {
            index: j,
            ..MappingSlots::default()
        };

        match name {
            None => {
                self.error(
                    item.pos,
                    field,
                    "missing required field `name`; give every mapping a unique name such as `web`",
                );
                s.name.bad = true;
            }
            Some(node) => {
                s.name.pos = Some(node.pos);
                match self.string(node, Field::Of(j, "name"), "a name") {
                    Some(text) => text.clone_into(&mut m.name),
                    None => s.name.bad = true,
                }
            }
        }
        if let Some(node) = protocol {
            s.protocol.pos = Some(node.pos);
            // Any plain text is named in "unknown protocol" (`protocol: 6` is not worth quoting).
            let text = match &node.value {
                Value::Scalar(s) if s.typed_by == TypedBy::Plain && s.kind != Kind::Null => {
                    Some(s.text.as_ref())
                }
                _ => self.string(node, Field::Of(j, "protocol"), "tcp, udp or both"),
            };
            match text.map(protocol_of) {
                Some(Ok(p)) => m.protocol = p,
                Some(Err(message)) => {
                    self.error(node.pos, Field::Of(j, "protocol"), message);
                    s.protocol.bad = true;
                }
                None => s.protocol.bad = true,
            }
        }
        match port {
            None => {
                self.error(
                    item.pos,
                    field,
                    "missing required field `port`; add the external port, e.g. `port: 8080` or `port: \"6000-6010\"`",
                );
                s.port.bad = true;
            }
            Some(node) => {
                s.port.pos = Some(node.pos);
                match self.port(node, Field::Of(j, "port")) {
                    Some(spec) => m.port = spec,
                    None => s.port.bad = true,
                }
            }
        }
        match to {
            None => {
                self.error(
                    item.pos,
                    field,
                    "missing required field `to`; add the inner host's IPv4 or IPv6 address, e.g. `to: 192.168.1.66`",
                );
                s.to.bad = true;
            }
            Some(node) => {
                s.to.pos = Some(node.pos);
                match self.text(
                    node,
                    Field::Of(j, "to"),
                    "an IP address such as 192.168.1.66",
                    false,
                ) {
                    Some(text) => text.clone_into(&mut m.to),
                    None => s.to.bad = true,
                }
            }
        }
        if let Some(node) = to_port {
            s.to_port.pos = Some(node.pos);
            match self.port(node, Field::Of(j, "to_port")) {
                Some(spec) => m.to_port = Some(spec),
                None => s.to_port.bad = true,
            }
        }
        if let Some(node) = allow_from {
            s.allow_from.pos = Some(node.pos);
            s.allow_from.bad = true;
            match &node.value {
                Value::Seq(entries) if !entries.is_empty() => {
                    s.allow_from.bad = false;
                    m.allow_from.reserve(entries.len());
                    for (k, entry) in entries.iter().enumerate() {
                        let f = Field::OfItem(j, "allow_from", k);
                        if let Some(text) = self.text(
                            entry,
                            f,
                            "an address or CIDR prefix such as 203.0.113.0/24, or the name of a list in `sources`",
                            false,
                        ) {
                            m.allow_from.push(text.to_owned());
                            s.allow_items.push((entry.pos, k));
                        }
                    }
                }
                Value::Seq(_) => self.error(
                    node.pos,
                    Field::Of(j, "allow_from"),
                    "allow_from is empty; list the sources allowed to connect (e.g. [203.0.113.0/24]) or remove the \
                     key to allow everyone",
                ),
                _ if is_null(node) => self.error(
                    node.pos,
                    Field::Of(j, "allow_from"),
                    "allow_from is empty; list the sources allowed to connect (e.g. [203.0.113.0/24]) or remove the \
                     key to allow everyone",
                ),
                Value::Scalar(Scalar { text, .. }) => {
                    let message = format!(
                        "expected a list of sources, got a single value; write allow_from: [{}]",
                        shown(text)
                    );
                    self.error(node.pos, Field::Of(j, "allow_from"), message);
                }
                _ => self.wrong_type(node, Field::Of(j, "allow_from"), "a list of sources such as [203.0.113.0/24]"),
            }
        }
        if let Some(node) = listen {
            const EMPTY: &str = "listen is empty; list the router's public addresses the mapping answers on (e.g. \
                                 [198.51.100.5]) or remove the key to answer on any address of the wan interfaces";
            s.listen.pos = Some(node.pos);
            s.listen.bad = true;
            match &node.value {
                Value::Seq(entries) if !entries.is_empty() => {
                    s.listen.bad = false;
                    for (k, entry) in entries.iter().enumerate() {
                        let f = Field::OfItem(j, "listen", k);
                        if let Some(text) = self.text(entry, f, "an IP address such as 198.51.100.5", false) {
                            m.listen.push(text.to_owned());
                            s.listen_items.push((entry.pos, k));
                        }
                    }
                }
                Value::Seq(_) => self.error(node.pos, Field::Of(j, "listen"), EMPTY),
                _ if is_null(node) => self.error(node.pos, Field::Of(j, "listen"), EMPTY),
                Value::Scalar(Scalar { text, .. }) => {
                    let message = format!(
                        "expected a list of addresses, got a single value; write listen: [{}]",
                        shown(text)
                    );
                    self.error(node.pos, Field::Of(j, "listen"), message);
                }
                _ => self.wrong_type(
                    node,
                    Field::Of(j, "listen"),
                    "a list of addresses such as [198.51.100.5]",
                ),
            }
        }
        if let Some(node) = description {
            s.description.pos = Some(node.pos);
            if !is_null(node) {
                match self.string(node, Field::Of(j, "description"), "a line of text") {
                    Some(text) => m.description = Some(text.to_owned()),
                    None => s.description.bad = true,
                }
            }
        }
        if let Some(node) = enabled
            && let Some(b) = self.boolean(node, Field::Of(j, "enabled"))
        {
            m.enabled = b;
        }
        if let Some(node) = log {
            s.log.pos = Some(node.pos);
            match self.boolean(node, Field::Of(j, "log")) {
                Some(b) => m.log = b,
                None => s.log.bad = true,
            }
        }
        if let Some(node) = limit {
            s.limit.pos = Some(node.pos);
            match &node.value {
                _ if is_null(node) => {}
                Value::Map(_) => {
                    self.error(
                        node.pos,
                        Field::Of(j, "limit"),
                        "expected a rate as nft writes it, got a mapping; write limit: \"20/second\" or \
                         limit: \"20/second burst 40\"",
                    );
                    s.limit.bad = true;
                }
                _ => match self.text(
                    node,
                    Field::Of(j, "limit"),
                    "a rate such as \"20/second\" or \"20/second burst 40\"",
                    true,
                ) {
                    Some(text) => m.limit = Some(text.to_owned()),
                    None => s.limit.bad = true,
                },
            }
        }
        if let Some(node) = expires {
            s.expires.pos = Some(node.pos);
            if !is_null(node) {
                match self.text(
                    node,
                    Field::Of(j, "expires"),
                    "an RFC 3339 time such as 2026-12-24T00:00:00Z",
                    false,
                ) {
                    Some(text) => m.expires = Some(text.to_owned()),
                    None => s.expires.bad = true,
                }
            }
        }
        Some((m, s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `load_str` gave before entries were walked while reading: the whole tree first, then
    /// one walk of it.
    fn load_whole(text: &str) -> Result<Model, ConfigErrors> {
        let mut report = Report::new("t.yaml");
        let parsed = yaml::parse(text);
        for e in &parsed.errors {
            report.push(Some(e.pos), Field::Whole, e.message.clone());
        }
        report.count_more(parsed.more_errors);
        let Some(root) = parsed.root else {
            if !report.has_errors() {
                report.push(
                    Some((1, 1)),
                    Field::Whole,
                    "the configuration is empty; it needs at least `wan: { interfaces: [eth0] }`",
                );
            }
            return report.finish(None);
        };
        let mut walker = Walker {
            report: &mut report,
            spans: Spans::default(),
            mappings: Vec::new(),
            streaming: None,
        };
        let config = walker.config(&root);
        let spans = walker.spans;
        let model = config.and_then(|c| check(&c, spans, &mut report));
        report.finish(model)
    }

    fn shown(result: &Result<Model, ConfigErrors>) -> String {
        match result {
            Ok(model) => format!("{model:?}"),
            Err(e) => format!("{} errors\n{e}", e.len()),
        }
    }

    fn same(text: &str) {
        assert_eq!(
            shown(&load_str(text, "t.yaml")),
            shown(&load_whole(text)),
            "{text}"
        );
    }

    const HEAD: &str = "wan: { interfaces: [eth0] }\nlan: { interfaces: [br0] }\n";

    #[test]
    fn walking_entries_while_reading_reports_what_a_walk_of_the_tree_did() {
        let entries = [
            "  - { name: a, port: 80, to: 10.0.0.1 }\n",
            "  - { name: b, port: 81, to: 10.0.0.2, allow_from: [office, 192.0.2.0/24] }\n",
            "  - { name: a, port: 80, to: 10.0.0.3 }\n",
            "  - { name: c, port: 0, to: x }\n",
            "  - { nme: d, port: [1], to: 10.0.0.4, proto: tcp }\n",
            "  - *alias\n",
            "  - !!str x\n",
            "  - 7\n",
            "  - ~\n",
            "  - { name: e, name: f, port: !!int x, to: 10.0.0.5 }\n",
            "  - { ? [k] : v, name: g, port: 90, to: 10.0.0.6 }\n",
            "  - name: h\n    port: \"100-110\"\n    to: 10.0.0.7\n    to_port: 200\n",
        ];
        let mut texts: Vec<String> = vec![
            String::new(),
            "mappings:\n".to_owned(),
            "mappings: []\n".to_owned(),
            format!("mappings:\n{}{HEAD}", entries[0]),
            format!("{HEAD}mappings: !!map\n{}", entries[0]),
            format!("!!seq\n{HEAD}mappings:\n{}", entries[0]),
            format!("- {HEAD}"),
            format!("{HEAD}mappings:\n{}mappings:\n{}", entries[3], entries[4]),
            format!("{HEAD}mappings: ~\nmappings:\n{}", entries[3]),
            format!("{HEAD}\"mappings\":\n{}mappings:\n{}", entries[3], entries[4]),
            format!(
                "{HEAD}mapping:\n{}sources:\n  office: [198.51.100.0/24]\n",
                entries[3]
            ),
            format!("{HEAD}? [mappings]\n: x\nmappings:\n{}", entries[3]),
            format!("{HEAD}*a : x\nmappings:\n{}", entries[3]),
            format!("{HEAD}mappings:\n{}  - [ unclosed\n", entries[3]),
            format!("{HEAD}mappings:\n{}---\nwan: x\n", entries[3]),
            format!("{HEAD}mappings:\n{}  - {}\n", entries[3], "[".repeat(70)),
            format!(
                "{HEAD}mappings:\n{}{}",
                entries[3],
                "  - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - 1\n"
            ),
        ];
        // Every entry, and every pair of entries, in a list written before or after the rest.
        for a in entries {
            for b in entries {
                let list = format!("mappings:\n{a}{b}");
                texts.push(format!("{HEAD}sources:\n  office: [198.51.100.0/24]\n{list}"));
                texts.push(format!(
                    "{list}sources:\n  office: [198.51.100.0/24]\n{HEAD}hairpin: true\n"
                ));
            }
        }
        // Past the error cap: the first 100 by position, wherever the walk found them.
        let mut many = String::new();
        for i in 0..150 {
            use std::fmt::Write as _;
            let _ = writeln!(many, "  - {{ name: [x], port: {i}, to: 10.0.0.1 }}");
        }
        texts.push(format!("mappings:\n{many}{HEAD}version: 2\nmasquerade: yes\n"));
        texts.push(format!("{}{HEAD}mappings:\n{many}", "x: !foo 1\n".repeat(120)));
        texts.push(format!("{HEAD}mappings:\n{many}{}", "x: !foo 1\n".repeat(120)));
        for text in &texts {
            same(text);
        }
    }

    #[test]
    fn load_vec_is_load_bytes() {
        let texts: [&[u8]; 4] = [
            b"wan: { interfaces: [eth0] }\nmappings:\n  - { name: a, port: 80, to: 10.0.0.1 }\n",
            b"mappings:\n  - { name: a, port: 0, to: x }\n",
            b"",
            b"wan: { interfaces: [eth0] }\nmappings:\n  - { name: caf\xe9 }\n",
        ];
        for bytes in texts {
            assert_eq!(
                shown(&load_vec(bytes.to_vec(), "t.yaml")),
                shown(&load_bytes(bytes, "t.yaml"))
            );
        }
    }

    #[test]
    fn a_text_refused_whole_forgets_the_entries_walked() {
        let text = format!("{HEAD}mappings:\n  - {{ name: a, port: 0, to: x }}\n  - [1, 2\n");
        let err = load_str(&text, "t.yaml").expect_err("syntax error");
        assert_eq!(err.len(), 1, "{err}");
        same(&text);
    }
}
