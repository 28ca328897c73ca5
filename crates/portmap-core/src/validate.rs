//! `Config` → `Model`: every validation rule, with all errors collected (never only the first) and
//! each error naming its field and, when the configuration came from text, its line and column.
//!
//! Values that reach a `Model` are safe to hand to a kernel backend: names are `[A-Za-z0-9_.-]`,
//! descriptions and interface names carry no quotes or control characters, ports are ordered and in
//! range, targets are IPv4 or IPv6 unicast hosts, allow-lists are canonical and of the target's
//! family. This module reads no text (that is `load.rs`, which also reports YAML-level problems and
//! records positions in `Spans`).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::{CONFIG_VERSION, Config, MappingConfig, PortSpec};
use crate::diagnostic::MAX_ERRORS;
pub(crate) use crate::diagnostic::{is_unsafe_char, shown};
use crate::error::{ConfigError, ConfigErrors};
use crate::model::{Mapping, Model, PortRange, Settings, SourceList, Transport};
use crate::yaml::Pos;

/// Longest mapping name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 128;
/// Longest Linux interface name, in bytes (`IFNAMSIZ` - 1).
pub const MAX_INTERFACE_LEN: usize = 15;
/// Highest `limit` rate, in new connections per unit.
pub const MAX_LIMIT_RATE: u32 = 1_000_000;
/// Largest `limit` burst.
pub const MAX_LIMIT_BURST: u32 = 10_000;
/// The slowest `limit` rate, as seconds between connections: one an hour (what both backends
/// keep exactly; iptables' hashlimit overflows on slower rates with some bursts).
pub const SLOWEST_LIMIT_SECONDS: u64 = 3600;

/// Check a configuration built in code (or deserialized from JSON) and turn it into a `Model`.
/// Errors carry no position (there is no text) but name the field, e.g. `mappings[2].port`; their
/// origin is `config`.
pub fn validate(config: &Config) -> Result<Model, ConfigErrors> {
    let mut report = Report::new("config");
    let model = check(config, Spans::default(), &mut report);
    report.finish(model)
}

/// The canonical form of a list of prefixes: host bits cleared, overlapping and adjacent prefixes
/// merged into the fewest prefixes covering exactly the same addresses, sorted (IPv4 first).
/// `Mapping::allow_from` is always in this form; a backend reading intervals back calls this too.
pub fn canonical_prefixes(prefixes: Vec<IpNet>) -> Vec<IpNet> {
    if prefixes.len() <= 1 {
        return prefixes.into_iter().map(|p| p.trunc()).collect();
    }
    IpNet::aggregate(&prefixes)
}

/// Where a field's value was found in the text, and whether it was already reported as unusable
/// (wrong type, missing) so that validation does not report it twice.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Slot {
    pub pos: Option<Pos>,
    pub bad: bool,
}

/// Positions of one mapping's fields as the walker finds them; kept as the smaller
/// [`MappingSpans`]. `index` is the entry's index in the file (entries that were not mappings at
/// all are left out of the `Config`, so it can differ from the `Config` index).
#[derive(Debug, Default)]
pub(crate) struct MappingSlots {
    pub index: usize,
    pub name: Slot,
    pub protocol: Slot,
    pub port: Slot,
    pub to: Slot,
    pub to_port: Slot,
    pub allow_from: Slot,
    /// Position and file index of each `allow_from` entry kept in the `Config`.
    pub allow_items: Vec<(Pos, usize)>,
    pub listen: Slot,
    /// Position and file index of each `listen` entry kept in the `Config`.
    pub listen_items: Vec<(Pos, usize)>,
    pub description: Slot,
    pub log: Slot,
    pub limit: Slot,
    pub expires: Slot,
}

/// A field of a mapping that has a [`Slot`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum MappingField {
    Name,
    Protocol,
    Port,
    To,
    ToPort,
    AllowFrom,
    Listen,
    Description,
    Log,
    Limit,
    Expires,
}

const MAPPING_FIELDS: usize = 11;

/// [`MappingSlots`] as they are kept, one per mapping of a large file: the slots packed (a
/// position each, whether there is one and whether the field is bad in two bit sets), the rare
/// lists' entries behind a box that is empty for most mappings. Half the size of the slots.
#[derive(Debug)]
pub(crate) struct MappingSpans {
    pub index: usize,
    pos: [Pos; MAPPING_FIELDS],
    /// Bit `f`: field `f` has a position.
    has_pos: u16,
    /// Bit `f`: field `f` is bad.
    bad: u16,
    /// `allow_from` and `listen` entries, when there are any.
    items: Option<Box<ListItems>>,
}

const _: () = assert!(std::mem::size_of::<Option<Mapping>>() == std::mem::size_of::<Mapping>());

// Less than half the 232 bytes of the slots (50,000 mappings: 5.6 MB instead of 11.6).
const _: () = assert!(std::mem::size_of::<MappingSpans>() <= 112);

/// Position and file index of each `allow_from` and each `listen` entry kept in the `Config`.
#[derive(Debug)]
struct ListItems {
    allow_from: Vec<(Pos, usize)>,
    listen: Vec<(Pos, usize)>,
}

impl MappingSpans {
    /// Where `field` was found, and whether it was reported.
    pub fn slot(&self, field: MappingField) -> Slot {
        let f = field as usize;
        Slot {
            pos: (self.has_pos & (1 << f) != 0).then_some(self.pos[f]),
            bad: self.bad & (1 << f) != 0,
        }
    }

    /// Position and file index of each `allow_from` entry kept in the `Config`.
    pub fn allow_items(&self) -> &[(Pos, usize)] {
        self.items.as_ref().map_or(&[][..], |i| i.allow_from.as_slice())
    }

    /// Position and file index of each `listen` entry kept in the `Config`.
    pub fn listen_items(&self) -> &[(Pos, usize)] {
        self.items.as_ref().map_or(&[][..], |i| i.listen.as_slice())
    }
}

impl From<MappingSlots> for MappingSpans {
    fn from(s: MappingSlots) -> Self {
        let slots = [
            s.name,
            s.protocol,
            s.port,
            s.to,
            s.to_port,
            s.allow_from,
            s.listen,
            s.description,
            s.log,
            s.limit,
            s.expires,
        ];
        let mut spans = MappingSpans {
            index: s.index,
            pos: [(0, 0); MAPPING_FIELDS],
            has_pos: 0,
            bad: 0,
            items: (!s.allow_items.is_empty() || !s.listen_items.is_empty()).then(|| {
                Box::new(ListItems {
                    allow_from: s.allow_items,
                    listen: s.listen_items,
                })
            }),
        };
        for (f, slot) in slots.into_iter().enumerate() {
            if let Some(pos) = slot.pos {
                spans.pos[f] = pos;
                spans.has_pos |= 1 << f;
            }
            if slot.bad {
                spans.bad |= 1 << f;
            }
        }
        spans
    }
}

/// Positions of one list of `sources`: its name, and each entry kept with its file index.
#[derive(Debug, Default)]
pub(crate) struct SourceSpans {
    pub pos: Option<Pos>,
    /// Something in the list was reported while reading: it is not checked further.
    pub bad: bool,
    pub items: Vec<(Pos, usize)>,
}

/// Positions of a `Config`'s values in the text it was read from. Empty for configs built in code.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub version: Slot,
    pub wan: Slot,
    pub wan_items: Vec<(Pos, usize)>,
    pub lan: Slot,
    pub lan_items: Vec<(Pos, usize)>,
    pub masquerade: Slot,
    pub log_group: Slot,
    /// The `sources` section as a whole (bad: something in it was reported while reading).
    pub sources: Slot,
    /// Each list of `sources` kept in the `Config`, by name.
    pub source_lists: std::collections::BTreeMap<String, SourceSpans>,
    /// One per `Config` mapping (or none at all).
    pub mappings: Vec<MappingSpans>,
}

/// A field path, formatted only when an error needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    /// The file as a whole.
    Whole,
    /// A top-level path such as `wan.interfaces`.
    Top(&'static str),
    /// An entry of a top-level list, e.g. `wan.interfaces[1]`.
    Item(&'static str, usize),
    /// A mapping as a whole.
    Mapping(usize),
    /// A field of a mapping.
    Of(usize, &'static str),
    /// An entry of a mapping's list field, e.g. `mappings[0].allow_from[1]`.
    OfItem(usize, &'static str, usize),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Field::Whole => Ok(()),
            Field::Top(path) => f.write_str(path),
            Field::Item(path, i) => write!(f, "{path}[{i}]"),
            Field::Mapping(i) => write!(f, "mappings[{i}]"),
            Field::Of(i, name) => write!(f, "mappings[{i}].{name}"),
            Field::OfItem(i, name, j) => write!(f, "mappings[{i}].{name}[{j}]"),
        }
    }
}

/// Errors being collected for one origin. Only the first [`MAX_ERRORS`] by position are kept (a
/// file with millions of problems must not cost memory for each); the rest are counted.
#[derive(Debug)]
pub(crate) struct Report<'o> {
    origin: &'o str,
    /// The kept errors, the last by position on top, each with its rank.
    kept: BinaryHeap<Ranked>,
    /// Every error reported, kept or not.
    total: usize,
}

/// The order errors are shown in: by position (those without one last), then as reported.
type Rank = (bool, Option<(usize, usize)>, usize);

#[derive(Debug)]
struct Ranked(Rank, ConfigError);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<'o> Report<'o> {
    pub fn new(origin: &'o str) -> Self {
        Report {
            origin,
            kept: BinaryHeap::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, pos: Option<Pos>, field: Field, message: impl Into<String>) {
        self.push_path(pos, field.to_string(), message);
    }

    /// [`Report::push`] for a path a [`Field`] cannot name (`sources.office[1]`: the list's name
    /// comes from the file).
    pub fn push_path(&mut self, pos: Option<Pos>, path: String, message: impl Into<String>) {
        let position = pos.map(|(l, c)| (l as usize, c as usize));
        let rank = (position.is_none(), position, self.total);
        self.total += 1;
        if self.is_kept(rank) {
            self.kept.push(Ranked(
                rank,
                ConfigError {
                    origin: self.origin.to_owned(),
                    position,
                    field: path,
                    message: message.into(),
                },
            ));
        }
    }

    /// Whether an error of `rank` is among the first [`MAX_ERRORS`] (making room for it).
    fn is_kept(&mut self, rank: Rank) -> bool {
        if self.kept.len() >= MAX_ERRORS {
            match self.kept.peek() {
                Some(last) if rank < last.0 => {
                    self.kept.pop();
                }
                _ => return false,
            }
        }
        true
    }

    /// The origin errors name.
    pub fn origin(&self) -> &'o str {
        self.origin
    }

    /// Take over the errors of `other` as if they had been reported here, after everything
    /// reported so far, in the order `other` got them.
    pub fn absorb(&mut self, other: Report<'_>) {
        let base = self.total;
        for Ranked((no_position, position, n), error) in other.kept.into_vec() {
            let rank = (no_position, position, base + n);
            if self.is_kept(rank) {
                self.kept.push(Ranked(rank, error));
            }
        }
        self.total = base + other.total;
    }

    /// Count `n` more errors that are known to come after the kept ones (problems the YAML reader
    /// found past its own cap, which come after its first [`MAX_ERRORS`]).
    pub fn count_more(&mut self, n: usize) {
        self.total += n;
    }

    /// Errors reported so far, kept or not.
    pub fn count(&self) -> usize {
        self.total
    }

    pub fn has_errors(&self) -> bool {
        self.total > 0
    }

    /// The model when nothing was reported; otherwise the errors, sorted by position.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.total == 0 => Ok(v),
            _ => {
                let kept = self.kept.into_sorted_vec().into_iter().map(|r| r.1).collect();
                Err(ConfigErrors::counted(kept, self.total))
            }
        }
    }
}

/// "line 12" when the text is known, else the field path.
fn where_is(pos: Option<Pos>, field: Field) -> String {
    match pos {
        Some((line, _)) => format!("line {line}"),
        None => field.to_string(),
    }
}

/// Most listen addresses one mapping may have.
pub const MAX_LISTEN_PER_MAPPING: usize = 16;
/// Most distinct listen addresses in one configuration: with them, a file still forwards at most
/// (1 + this) × 65,535 ports per protocol and family.
pub const MAX_LISTEN_ADDRESSES: usize = 32;

/// Check `config` against every rule. `spans` gives positions and fields already reported by the
/// YAML walker. Returns the model when this check found nothing (the caller also looks at errors
/// reported earlier).
///
/// `spans` is taken to be dropped once the checks are done, before the model is built: for a large
/// file it is a third of what is held at that point.
pub(crate) fn check(config: &Config, spans: Spans, report: &mut Report<'_>) -> Option<Model> {
    let errors_before = report.count();
    let spans_held = spans;
    let spans = &spans_held;

    if !spans.version.bad
        && let Some(v) = config.version
        && v != CONFIG_VERSION
    {
        report.push(
            spans.version.pos,
            Field::Top("version"),
            format!("unsupported configuration version {v}; this portmap reads version {CONFIG_VERSION}"),
        );
    }

    if !spans.wan.bad && config.wan.interfaces.is_empty() {
        report.push(
            spans.wan.pos,
            Field::Top("wan.interfaces"),
            "no WAN interface is listed; list at least one interface facing the internet, e.g. [eth0]",
        );
    }
    let mut seen: HashMap<&str, (Option<Pos>, Field)> = HashMap::new();
    check_interfaces(
        &config.wan.interfaces,
        &spans.wan_items,
        "wan.interfaces",
        &mut seen,
        report,
    );
    check_interfaces(
        &config.lan.interfaces,
        &spans.lan_items,
        "lan.interfaces",
        &mut seen,
        report,
    );

    if config.masquerade && config.lan.interfaces.is_empty() && !spans.lan.bad {
        report.push(
            spans.masquerade.pos,
            Field::Top("masquerade"),
            "masquerade needs the LAN side: list the interfaces whose traffic is masqueraded in \
             `lan: { interfaces: [...] }`, or set `masquerade: false`",
        );
    }

    let log_group = match config.log_group {
        None => Some(crate::model::DEFAULT_LOG_GROUP),
        Some(_) if spans.log_group.bad => None,
        Some(g) => {
            if let Ok(g) = u16::try_from(g) {
                Some(g)
            } else {
                report.push(
                    spans.log_group.pos,
                    Field::Top("log_group"),
                    format!(
                        "log group {g} is out of range; use an nflog group 0-65535 (default {})",
                        crate::model::DEFAULT_LOG_GROUP
                    ),
                );
                None
            }
        }
    };

    let sources = check_sources(config, spans, report);
    // The valid mappings apart from what the checks across mappings need, so that they become the
    // model's list in place.
    let mut mappings: Vec<Option<Mapping>> = Vec::with_capacity(config.mappings.len());
    let mut checked: Vec<Checked> = Vec::with_capacity(config.mappings.len());
    for (i, m) in config.mappings.iter().enumerate() {
        let ms = spans.mappings.get(i);
        let index = ms.map_or(i, |s| s.index);
        let (mapping, c) = check_mapping(m, index, ms, log_group, &sources, report);
        mappings.push(mapping);
        checked.push(c);
    }
    check_unique_names(config, spans, &checked, report);
    check_listen_count(config, spans, &checked, report);
    check_overlaps(config, spans, &checked, report);
    drop(checked);
    drop(spans_held);

    if report.count() > errors_before {
        return None;
    }
    let mut disabled = Vec::new();
    for (mapping, m) in mappings.iter_mut().zip(&config.mappings) {
        if !m.enabled {
            disabled.push(m.name.clone());
            *mapping = None;
        } else if mapping.is_none() {
            return None;
        }
    }
    let mut model = Model {
        settings: Settings {
            wan_interfaces: config.wan.interfaces.clone(),
            lan_interfaces: config.lan.interfaces.clone(),
            masquerade: config.masquerade,
            hairpin: config.hairpin,
        },
        sources: sources.lists,
        // Collected into the same allocation (an `Option<Mapping>` is the size of a `Mapping`, and
        // `filter_map` over a `Vec`'s own iterator collects in place; `flatten` does not).
        #[expect(clippy::filter_map_identity, reason = "collects in place, unlike flatten")]
        mappings: mappings.into_iter().filter_map(|m| m).collect(),
        disabled,
    };
    model.mappings.shrink_to_fit();
    Some(model)
}

fn check_interfaces<'c>(
    names: &'c [String],
    items: &[(Pos, usize)],
    path: &'static str,
    seen: &mut HashMap<&'c str, (Option<Pos>, Field)>,
    report: &mut Report<'_>,
) {
    for (k, name) in names.iter().enumerate() {
        let (pos, index) = items.get(k).map_or((None, k), |&(p, i)| (Some(p), i));
        let field = Field::Item(path, index);
        if let Some(problem) = interface_problem(name) {
            report.push(
                pos,
                field,
                format!(
                    "`{}` is not a valid interface name: {problem}; Linux interface names are 1-{MAX_INTERFACE_LEN} \
                     bytes without `/`, `:`, whitespace, quotes or `*`",
                    shown(name)
                ),
            );
            continue;
        }
        match seen.get(name.as_str()) {
            None => {
                seen.insert(name, (pos, field));
            }
            Some(&(first_pos, first_field)) => {
                let first_is_wan = matches!(first_field, Field::Item("wan.interfaces", _));
                let first = match first_pos {
                    Some((line, _)) => format!("{first_field}, line {line}"),
                    None => first_field.to_string(),
                };
                let message = if path == "lan.interfaces" && first_is_wan {
                    format!(
                        "interface `{name}` is also a WAN interface ({first}); an interface faces either the \
                         internet or the LAN"
                    )
                } else {
                    format!("interface `{name}` is listed twice (first as {first}); list it once")
                };
                report.push(pos, field, message);
            }
        }
    }
}

/// What is wrong with an interface name, if anything.
fn interface_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_LEN {
        return Some(format!(
            "it is {} bytes long (the limit is {MAX_INTERFACE_LEN})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not interface names".to_owned());
    }
    for c in name.chars() {
        let problem = match c {
            '/' => "it contains `/`",
            ':' => "it contains `:` (aliases such as eth0:1 are not interfaces)",
            '*' => "it contains `*` (wildcards are not supported; list each interface)",
            '"' | '\'' | '`' => "it contains a quote",
            c if c.is_whitespace() => "it contains whitespace",
            c if is_unsafe_char(c) => "it contains a control or formatting character",
            _ => continue,
        };
        return Some(problem.to_owned());
    }
    None
}

/// What one mapping came to, besides the validated mapping (when all its fields are valid): what
/// the checks across mappings need.
struct Checked {
    /// Whether the name is valid (only valid names take part in the uniqueness check).
    name_ok: bool,
    /// The external ports when valid (only valid ports take part in the overlap check).
    port: Option<PortRange>,
    /// Whether the mapping forwards IPv6 (its `to` is, or looks like, an IPv6 address). Ports
    /// overlap only between mappings of the same family.
    v6: bool,
    /// The listen addresses when valid (empty: any address).
    listen: Vec<IpAddr>,
}

fn check_mapping(
    m: &MappingConfig,
    index: usize,
    spans: Option<&MappingSpans>,
    log_group: Option<u16>,
    sources: &CheckedSources,
    report: &mut Report<'_>,
) -> (Option<Mapping>, Checked) {
    let sp = |f: MappingField| spans.map(|s| s.slot(f)).unwrap_or_default();
    let errors_before = report.count();

    // name
    let name_slot = sp(MappingField::Name);
    let mut name_ok = false;
    if !name_slot.bad {
        match name_problem(&m.name) {
            Some(problem) => report.push(name_slot.pos, Field::Of(index, "name"), problem),
            None => name_ok = true,
        }
    }

    // port and to_port
    let port_slot = sp(MappingField::Port);
    let port = if port_slot.bad {
        None
    } else {
        parse_port(&m.port)
            .map_err(|e| report.push(port_slot.pos, Field::Of(index, "port"), e))
            .ok()
    };
    let to_port_slot = sp(MappingField::ToPort);
    let to_port = match &m.to_port {
        _ if to_port_slot.bad => None,
        None => port,
        Some(spec) => match parse_port(spec) {
            Err(e) => {
                report.push(to_port_slot.pos, Field::Of(index, "to_port"), e);
                None
            }
            Ok(to_port) => {
                if let Some(port) = port
                    && let Some(problem) = length_problem(port, to_port)
                {
                    report.push(to_port_slot.pos, Field::Of(index, "to_port"), problem);
                    None
                } else {
                    Some(to_port)
                }
            }
        },
    };

    // to
    let to_slot = sp(MappingField::To);
    let to = if to_slot.bad {
        None
    } else {
        target(&m.to)
            .map_err(|e| report.push(to_slot.pos, Field::Of(index, "to"), e))
            .ok()
    };
    // The family of `to`; when `to` is unusable, a colon is the best guess at what was meant.
    let to_is_v6 = to.map_or_else(|| m.to.contains(':'), |a| a.is_ipv6());

    // allow_from
    let allow_from = if sp(MappingField::AllowFrom).bad {
        None
    } else {
        let items = spans.map_or(&[][..], MappingSpans::allow_items);
        check_allow_from(&m.allow_from, items, index, to_is_v6, sources, report)
    };

    // listen
    let listen = if sp(MappingField::Listen).bad {
        None
    } else {
        let items = spans.map_or(&[][..], MappingSpans::listen_items);
        check_listen(&m.listen, items, index, to_is_v6, report)
    };

    // description
    let description_slot = sp(MappingField::Description);
    let description = match m.description.as_deref() {
        _ if description_slot.bad => None,
        None | Some("") => Some(None),
        Some(text) => match description_problem(text) {
            Some(problem) => {
                report.push(description_slot.pos, Field::Of(index, "description"), problem);
                None
            }
            None => Some(Some(text.to_owned())),
        },
    };

    // limit
    let limit_slot = sp(MappingField::Limit);
    let limit = match m.limit.as_deref() {
        _ if limit_slot.bad => None,
        None => Some(None),
        Some(text) => match parse_limit(text) {
            Ok(limit) => Some(Some(limit)),
            Err(problem) => {
                report.push(limit_slot.pos, Field::Of(index, "limit"), problem);
                None
            }
        },
    };

    // expires
    let expires_slot = sp(MappingField::Expires);
    let expires = match m.expires.as_deref() {
        _ if expires_slot.bad => None,
        None => Some(None),
        Some(text) => match parse_expires(text) {
            Ok(t) => Some(Some(t)),
            Err(problem) => {
                report.push(expires_slot.pos, Field::Of(index, "expires"), problem);
                None
            }
        },
    };

    // log: the kernel's log prefix (`portmap <name>`) must hold the name.
    let log_slot = sp(MappingField::Log);
    if m.log && name_ok && m.name.len() > crate::model::MAX_LOGGED_NAME_LEN && !log_slot.bad {
        report.push(
            log_slot.pos,
            Field::Of(index, "log"),
            format!(
                "a mapping that logs can have a name of at most {} bytes (the kernel's log prefix holds 63 bytes and \
                 portmap writes `portmap <name>`); `{}` is {} bytes: shorten the name or remove `log: true`",
                crate::model::MAX_LOGGED_NAME_LEN,
                m.name,
                m.name.len()
            ),
        );
    }
    let log = if m.log { log_group.map(Some) } else { Some(None) };

    let protocol_bad = sp(MappingField::Protocol).bad;
    let mapping = if report.count() == errors_before && name_ok && !protocol_bad {
        match (
            port,
            to_port,
            to,
            allow_from,
            listen.clone(),
            description,
            limit,
            log,
            expires,
        ) {
            (
                Some(port),
                Some(to_port),
                Some(to),
                Some(allow_from),
                Some(listen),
                Some(description),
                Some(limit),
                Some(log),
                Some(expires),
            ) => Some(Mapping {
                name: m.name.clone(),
                protocol: m.protocol,
                port,
                to,
                to_port,
                allow_from: allow_from.effective,
                allow_sources: allow_from.names,
                allow_inline: allow_from.inline,
                listen,
                description,
                log,
                limit,
                expires,
            }),
            _ => None,
        }
    } else {
        None
    };
    let checked = Checked {
        name_ok,
        port: if protocol_bad || listen.is_none() {
            None
        } else {
            port
        },
        v6: to_is_v6,
        listen: listen.unwrap_or_default(),
    };
    (mapping, checked)
}

/// Whether `name` is a valid mapping name (what a backend may accept as one when it reads its own
/// objects back).
pub fn is_mapping_name(name: &str) -> bool {
    name_problem(name).is_none()
}

/// What is wrong with a mapping name, if anything.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    const RULE: &str = "use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit";
    if name.is_empty() {
        return Some(format!("the name is empty; {RULE}"));
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "the name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        let c = if c == ' ' {
            "a space".to_owned()
        } else {
            format!("`{}`", shown(c.encode_utf8(&mut [0; 4])))
        };
        return Some(format!("the name `{}` contains {c}; {RULE}", shown(name)));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Some(format!(
            "the name `{name}` starts with `{}`; start it with a letter or digit",
            &name[..1]
        ));
    }
    None
}

/// What is wrong with a description, if anything.
fn description_problem(text: &str) -> Option<String> {
    if text.len() > MAX_DESCRIPTION_LEN {
        return Some(format!(
            "the description is {} bytes long; the limit is {MAX_DESCRIPTION_LEN}",
            text.len()
        ));
    }
    if text.contains('"') {
        return Some("the description contains `\"`, which is not allowed; use ' instead".to_owned());
    }
    if let Some(c) = text.chars().find(|&c| is_unsafe_char(c)) {
        let what = if c.is_control() {
            "a control character"
        } else {
            "an invisible formatting character"
        };
        return Some(format!(
            "the description contains {what} (U+{:04X}); use one line of printable text",
            u32::from(c)
        ));
    }
    None
}

const LIMIT_RULE: &str = "write a rate as nft does: \"20/second\", or with a burst \"20/second burst 40\" (units second, minute, hour, day)";

/// An `expires` as written → the moment, checked to lie where both backends can hold it
/// ([`crate::MIN_EXPIRES`]–[`crate::MAX_EXPIRES`]). A moment already past is valid: the mapping
/// is then not installed (the plan warns).
pub fn parse_expires(text: &str) -> Result<crate::time::UtcTime, String> {
    use crate::time::{MAX_EXPIRES, MIN_EXPIRES};
    let t = crate::time::parse_rfc3339(text)?;
    if t < MIN_EXPIRES || t > MAX_EXPIRES {
        return Err(format!(
            "`{}` is out of range; give a time from {MIN_EXPIRES} to {MAX_EXPIRES} (iptables' time match \
             holds no other), e.g. 2026-12-24T00:00:00Z",
            shown(text)
        ));
    }
    Ok(t)
}

/// A `limit` as written (`20/second`, `20/second burst 40`, optionally ending in `packets` as nft
/// prints it) → its canonical [`Limit`](crate::Limit): the rate in the shortest unit in which it
/// is a whole number (`24/day` is `1/hour`), the burst 5 when none is given.
pub fn parse_limit(text: &str) -> Result<crate::model::Limit, String> {
    use crate::model::{DEFAULT_BURST, Limit, RateUnit};
    let words: Vec<&str> = text.split_whitespace().collect();
    let words = match words.as_slice() {
        [rest @ .., "packets"] => rest,
        all => all,
    };
    let (rate_text, burst) = match words {
        [rate] => (*rate, None),
        [rate, "burst", burst] => (*rate, Some(*burst)),
        [] => return Err(format!("the limit is empty; {LIMIT_RULE}")),
        _ => return Err(format!("`{}` is not a limit; {LIMIT_RULE}", shown(text))),
    };
    let Some((count, unit)) = rate_text.split_once('/') else {
        return Err(format!("`{}` has no unit; {LIMIT_RULE}", shown(rate_text)));
    };
    let per = match unit {
        "second" => RateUnit::Second,
        "minute" => RateUnit::Minute,
        "hour" => RateUnit::Hour,
        "day" => RateUnit::Day,
        other => {
            return Err(format!(
                "unknown unit `{}` in the limit; use second, minute, hour or day (e.g. \"20/second\")",
                shown(other)
            ));
        }
    };
    let number = |s: &str, what: &str, max: u32| -> Result<u32, String> {
        match s.parse::<u64>() {
            Ok(n) if n >= 1 && n <= u64::from(max) => Ok(n as u32),
            Ok(_) | Err(_) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => Err(format!(
                "the limit's {what} {} is out of range; use 1-{max}",
                shown(s)
            )),
            _ => Err(format!(
                "the limit's {what} `{}` is not a number; {LIMIT_RULE}",
                shown(s)
            )),
        }
    };
    let rate = number(count, "rate", MAX_LIMIT_RATE)?;
    let burst = match burst {
        None => DEFAULT_BURST,
        Some(b) => number(b, "burst", MAX_LIMIT_BURST)?,
    };
    if per.seconds() > SLOWEST_LIMIT_SECONDS * u64::from(rate) {
        return Err(format!(
            "{rate}/{per} is slower than the slowest rate portmap keeps, 1/hour; allow at least one new connection an hour"
        ));
    }
    Ok(canonical_limit(Limit { rate, per, burst }))
}

/// The same cap written in the shortest unit in which its rate is a whole number.
pub fn canonical_limit(limit: crate::model::Limit) -> crate::model::Limit {
    let total = u64::from(limit.rate);
    for unit in crate::model::RateUnit::ALL {
        if unit >= limit.per {
            break;
        }
        let scaled = total * unit.seconds();
        if scaled % limit.per.seconds() == 0
            && let Ok(rate) = u32::try_from(scaled / limit.per.seconds())
        {
            return crate::model::Limit {
                rate,
                per: unit,
                burst: limit.burst,
            };
        }
    }
    limit
}

const PORT_RULE: &str = "use 1-65535 or \"A-B\"";

/// A port or range as written → a `PortRange`, or a message saying what is wrong.
pub(crate) fn parse_port(spec: &PortSpec) -> Result<PortRange, String> {
    match spec {
        PortSpec::Number(n) => match u16::try_from(*n) {
            Ok(p) if p > 0 => Ok(PortRange::single(p)),
            _ => Err(format!("port {n} is out of range; {PORT_RULE}")),
        },
        PortSpec::Text(text) => parse_port_text(text),
    }
}

fn parse_port_text(text: &str) -> Result<PortRange, String> {
    let malformed = || {
        format!(
            "`{}` is not a port or port range; {PORT_RULE} such as \"6000-6010\"",
            shown(text)
        )
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let number = |s: &str| -> Result<u16, String> {
        match s.parse::<u64>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(shown(s.trim_start_matches('0'))),
        }
    };
    let shown_number = |s: String| if s.is_empty() { "0".to_owned() } else { s };
    if digits(text) {
        return number(text)
            .map(PortRange::single)
            .map_err(|n| format!("port {} is out of range; {PORT_RULE}", shown_number(n)));
    }
    if let Some(rest) = text.strip_prefix('-')
        && digits(rest)
    {
        return Err(format!("port {text} is out of range; {PORT_RULE}"));
    }
    if let Some(hint) = foreign_port_form(text) {
        return Err(hint);
    }
    let Some((a, b)) = text.split_once('-') else {
        return Err(malformed());
    };
    if !digits(a) || !digits(b) {
        return Err(malformed());
    }
    let start = number(a).map_err(|n| {
        format!(
            "port {} in `{text}` is out of range; ports are 1-65535",
            shown_number(n)
        )
    })?;
    let end = number(b).map_err(|n| {
        format!(
            "port {} in `{text}` is out of range; ports are 1-65535",
            shown_number(n)
        )
    })?;
    if start > end {
        return Err(format!(
            "port range `{text}` is reversed; write \"{end}-{start}\""
        ));
    }
    Ok(PortRange { start, end })
}

/// What a port written the way other tools write it means in portmap: Docker's `8080:80`
/// (HOST:CONTAINER) and `8080/tcp`, or both at once.
fn foreign_port_form(text: &str) -> Option<String> {
    let is_port = |s: &str| {
        !s.is_empty()
            && s.split('-')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, proto)) if matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp") => {
            (ports, Some(proto.to_ascii_lowercase()))
        }
        _ => (text, None),
    };
    let protocol_hint = protocol
        .as_deref()
        .map(|p| format!(" and `protocol: {p}`"))
        .unwrap_or_default();
    let quoted = |p: &str| {
        if p.contains('-') {
            format!("\"{p}\"")
        } else {
            p.to_owned()
        }
    };
    if let Some((outer, inner)) = ports.split_once(':')
        && is_port(outer)
        && is_port(inner)
    {
        return Some(format!(
            "`{}` is Docker's HOST:CONTAINER form; in portmap write `port: {}` and `to_port: {}`{protocol_hint}",
            shown(text),
            quoted(outer),
            quoted(inner)
        ));
    }
    if protocol.is_some() && is_port(ports) {
        return Some(format!(
            "`{}` names the protocol in the port; write `port: {}`{protocol_hint}",
            shown(text),
            quoted(ports)
        ));
    }
    None
}

/// Why `to_port` cannot go with `port`, if it cannot.
fn length_problem(port: PortRange, to_port: PortRange) -> Option<String> {
    if port.len() == to_port.len() {
        return None;
    }
    let fitting = u16::try_from(u32::from(to_port.start) + port.len() - 1)
        .ok()
        .map(|end| PortRange {
            start: to_port.start,
            end,
        });
    if to_port.start == to_port.end {
        let fix = match fitting {
            Some(r) => format!("write to_port: \"{r}\" to shift the range"),
            None => format!("give to_port a range of {} ports", port.len()),
        };
        return Some(format!(
            "to_port {to_port} is one port but port {port} is a range of {} ports; {fix}, or leave to_port out \
             to keep the same ports",
            port.len()
        ));
    }
    let example = fitting.map(|r| format!(", e.g. \"{r}\"")).unwrap_or_default();
    Some(format!(
        "to_port {to_port} has {} port{} but port {port} has {}; the ranges must be the same length{example}",
        to_port.len(),
        if to_port.len() == 1 { "" } else { "s" },
        port.len()
    ))
}

/// The inner host: an IPv4 or IPv6 unicast host address.
fn target(text: &str) -> Result<IpAddr, String> {
    if text.is_empty() {
        return Err(
            "`to` is empty; give the inner host's IPv4 or IPv6 address, e.g. 192.168.1.66".to_owned(),
        );
    }
    let addr: IpAddr = match text.parse() {
        Ok(a) => a,
        Err(_) if text.parse::<IpNet>().is_ok() => {
            let host = text.split('/').next().unwrap_or(text);
            return Err(format!(
                "`{}` is a prefix; `to` takes one host address, e.g. {host}",
                shown(text)
            ));
        }
        Err(_) => return Err(not_an_address(text)),
    };
    match addr {
        IpAddr::V4(v4) => target_v4(v4),
        IpAddr::V6(v6) => target_v6(v6),
    }
    .map(|()| addr)
}

/// Why `text` (which does not parse) is not a target. Text with a colon was meant as IPv6, other
/// text as IPv4 or a host name.
fn not_an_address(text: &str) -> String {
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return format!(
            "`{}` carries a port; `to` takes the address alone: write `to: {}` and put the port in `to_port: {}`",
            shown(text),
            socket.ip(),
            socket.port()
        );
    }
    if let Some((addr, port)) = text.rsplit_once(':')
        && addr.parse::<Ipv4Addr>().is_ok()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return format!(
            "`{}` carries a port; `to` takes the address alone: write `to: {addr}` and put the port in `to_port: \"{}\"`",
            shown(text),
            shown(port)
        );
    }
    if let Some((addr, zone)) = text.split_once('%')
        && addr.parse::<Ipv6Addr>().is_ok()
    {
        return format!(
            "`{}` carries a zone (`%{}`); portmap forwards to global or unique local IPv6 addresses, \
             which need none: give the inner host's address without it, e.g. 2001:db8::66",
            shown(text),
            shown(zone)
        );
    }
    if text.contains(':') {
        format!(
            "`{}` is not an IPv6 address; give the inner host's address, e.g. 2001:db8::66 (host names are \
             not resolved)",
            shown(text)
        )
    } else {
        format!(
            "`{}` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are \
             not resolved)",
            shown(text)
        )
    }
}

/// Whether an IPv4 address is a unicast host portmap can forward to.
fn target_v4(v4: Ipv4Addr) -> Result<(), String> {
    let kind = if v4.is_unspecified() {
        "the unspecified address, not a host".to_owned()
    } else if v4.octets()[0] == 0 {
        "in 0.0.0.0/8 (\"this network\"), not a host".to_owned()
    } else if v4.is_loopback() {
        "a loopback address (127.0.0.0/8)".to_owned()
    } else if v4.is_multicast() {
        "a multicast address (224.0.0.0/4)".to_owned()
    } else if v4 == Ipv4Addr::BROADCAST {
        "the broadcast address".to_owned()
    } else if v4.octets()[0] >= 240 {
        "in the reserved range 240.0.0.0/4".to_owned()
    } else {
        return Ok(());
    };
    Err(format!(
        "{v4} is {kind}; give the inner host's unicast address, e.g. 192.168.1.66"
    ))
}

/// Whether an IPv6 address is a unicast host portmap can forward to. Link-local addresses are
/// refused: without a zone (an interface) they do not say which host is meant.
fn target_v6(v6: Ipv6Addr) -> Result<(), String> {
    const HINT: &str = "give the inner host's global or unique local address, e.g. 2001:db8::66";
    let kind = if v6.is_unspecified() {
        "the unspecified address (::), not a host"
    } else if v6.is_loopback() {
        "the loopback address (::1)"
    } else if v6.is_multicast() {
        "a multicast address (ff00::/8)"
    } else if let Some(v4) = v6.to_ipv4_mapped() {
        return Err(format!(
            "{v6} is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address itself: to: {v4}"
        ));
    } else if v6.is_unicast_link_local() {
        "a link-local address (fe80::/10), which names no host without an interface zone"
    } else {
        return Ok(());
    };
    Err(format!("{v6} is {kind}; {HINT}"))
}

/// Check an allow-list; the canonical prefix list when every entry is valid.
fn check_allow_from(
    entries: &[String],
    items: &[(Pos, usize)],
    index: usize,
    to_is_v6: bool,
    sources: &CheckedSources,
    report: &mut Report<'_>,
) -> Option<AllowFrom> {
    let errors_before = report.count();
    let at = |k: usize| items.get(k).map_or((None, k), |&(p, j)| (Some(p), j));
    let mut nets: Vec<(IpNet, usize)> = Vec::with_capacity(entries.len());
    let mut names: Vec<(&str, usize)> = Vec::new();
    for (k, text) in entries.iter().enumerate() {
        let (pos, j) = at(k);
        let field = Field::OfItem(index, "allow_from", j);
        let net = match parse_prefix(text) {
            Ok(net) => net,
            Err(_) if is_mapping_name(text) && !text.contains(':') && !looks_numeric(text) => {
                match sources.lists.get(text.as_str()) {
                    Some(list) if list.of_family(to_is_v6).is_empty() => {
                        let (want, has) = if to_is_v6 {
                            ("IPv6", "IPv4")
                        } else {
                            ("IPv4", "IPv6")
                        };
                        report.push(
                            pos,
                            field,
                            format!(
                                "the list `{text}` holds only {has} prefixes but `to` is {want}; add {want} prefixes \
                                 to it or use another list"
                            ),
                        );
                    }
                    Some(_) => {
                        if let Some(&(_, first)) = names.iter().find(|(n, _)| *n == text.as_str()) {
                            let (_, fj) = at(first);
                            report.push(
                                pos,
                                field,
                                format!(
                                    "the list `{text}` is named twice (first as {}); name each list once",
                                    Field::OfItem(index, "allow_from", fj)
                                ),
                            );
                        } else {
                            names.push((text, k));
                        }
                    }
                    None if sources.bad.contains(text.as_str()) => {}
                    None => report.push(pos, field, unknown_list(text, sources)),
                }
                continue;
            }
            Err(message) => {
                report.push(pos, field, message);
                continue;
            }
        };
        if to_is_v6 != matches!(net, IpNet::V6(_)) {
            let (net_family, to_family) = if to_is_v6 {
                ("IPv4", "IPv6")
            } else {
                ("IPv6", "IPv4")
            };
            report.push(
                pos,
                field,
                format!(
                    "{net} is {net_family} but `to` is {to_family}; allow_from must use the family of `to`"
                ),
            );
            continue;
        }
        nets.push((net, k));
    }
    for (later, earlier, later_net, earlier_net) in overlaps(&nets) {
        let (pos, j) = at(later);
        let (epos, ej) = at(earlier);
        let first = Field::OfItem(index, "allow_from", ej);
        let first = match epos {
            Some((line, _)) => format!("{first}, line {line}"),
            None => first.to_string(),
        };
        report.push(
            pos,
            Field::OfItem(index, "allow_from", j),
            overlap_message(later_net, earlier_net, &first),
        );
    }
    if report.count() > errors_before {
        return None;
    }
    let inline = canonical_prefixes(nets.into_iter().map(|(n, _)| n).collect());
    let mut names: Vec<String> = names.into_iter().map(|(n, _)| n.to_owned()).collect();
    names.sort_unstable();
    let effective = canonical_prefixes(
        inline
            .iter()
            .copied()
            .chain(
                names
                    .iter()
                    .filter_map(|n| sources.lists.get(n))
                    .flat_map(|l| l.of_family(to_is_v6).iter().copied()),
            )
            .collect(),
    );
    Some(AllowFrom {
        effective,
        // Without lists the written prefixes are the effective ones (`Mapping::inline_prefixes`).
        inline: if names.is_empty() { Vec::new() } else { inline },
        names,
    })
}

/// A mapping's checked `allow_from`: what the kernel enforces, and how it was written.
struct AllowFrom {
    effective: Vec<IpNet>,
    names: Vec<String>,
    inline: Vec<IpNet>,
}

/// Text that reads as a number or an address gone wrong (`10.0.0`, `300`), not a list name: its
/// error is the address one.
fn looks_numeric(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'/'))
}

/// The error for an `allow_from` name no list has: the names that exist.
fn unknown_list(text: &str, sources: &CheckedSources) -> String {
    let mut known: Vec<&str> = sources.lists.keys().map(String::as_str).collect();
    known.extend(sources.bad.iter().copied());
    known.sort_unstable();
    if known.is_empty() {
        format!(
            "`{}` is not an address or CIDR prefix, and the file defines no `sources` list of that name; use e.g. \
             203.0.113.0/24, or define `sources: {{ {}: [...] }}` at the top level",
            shown(text),
            shown(text)
        )
    } else {
        format!(
            "unknown source list `{}`; the lists in `sources` are: {}",
            shown(text),
            known.join(", ")
        )
    }
}

/// An address (as a one-address prefix) or a CIDR prefix with its host bits clear.
fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "`{}` is not an address or CIDR prefix; use e.g. 203.0.113.0/24 or 198.51.100.7",
                    shown(text)
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!("{net} has host bits set; did you mean {}?", net.trunc()));
    }
    Ok(net)
}

/// The duplicates and overlaps among `nets` (each with its entry index): sorted by network then
/// prefix length, a prefix overlaps an earlier one exactly when it starts inside the widest prefix
/// seen so far. Each is (later index, earlier index, later prefix, earlier prefix).
fn overlaps(nets: &[(IpNet, usize)]) -> Vec<(usize, usize, IpNet, IpNet)> {
    let mut order: Vec<(IpNet, usize)> = nets.to_vec();
    order.sort_unstable();
    let mut found = Vec::new();
    let mut cover: Option<(IpNet, usize)> = None;
    for &(net, k) in &order {
        if let Some((c, ck)) = cover
            && c.contains(&net)
        {
            found.push(if k > ck { (k, ck, net, c) } else { (ck, k, c, net) });
            continue;
        }
        cover = Some((net, k));
    }
    found
}

fn overlap_message(later_net: IpNet, earlier_net: IpNet, first: &str) -> String {
    if later_net == earlier_net {
        format!("{later_net} is listed twice (first as {first}); list each source once")
    } else if later_net.contains(&earlier_net) {
        format!("{later_net} contains {earlier_net} ({first}); list each source once")
    } else {
        format!("{later_net} lies inside {earlier_net} ({first}); list each source once")
    }
}

/// The checked `sources` lists: those that are valid, and the names of those that are not (an
/// `allow_from` naming one of them is not reported again).
#[derive(Default)]
struct CheckedSources<'c> {
    lists: BTreeMap<String, SourceList>,
    bad: BTreeSet<&'c str>,
}

/// Most lists in `sources` (each is one kernel set per family).
pub const MAX_SOURCE_LISTS: usize = 256;

/// Check every list of `sources`: a valid name, and entries that are addresses or prefixes with
/// their host bits clear, none inside another of the same list.
fn check_sources<'c>(config: &'c Config, spans: &Spans, report: &mut Report<'_>) -> CheckedSources<'c> {
    let mut out = CheckedSources::default();
    if config.sources.len() > MAX_SOURCE_LISTS {
        report.push(
            spans.sources.pos,
            Field::Top("sources"),
            format!(
                "the file defines {} source lists; the limit is {MAX_SOURCE_LISTS}",
                config.sources.len()
            ),
        );
    }
    for (name, entries) in &config.sources {
        let list_spans = spans.source_lists.get(name);
        let path = format!("sources.{}", shown(name));
        let pos = list_spans.and_then(|s| s.pos);
        let errors_before = report.count();
        if let Some(problem) = name_problem(name) {
            report.push_path(
                pos,
                path.clone(),
                problem.replacen("the name", "the list name", 1),
            );
        }
        if entries.is_empty() && list_spans.is_none_or(|s| !s.bad) {
            report.push_path(
                pos,
                path.clone(),
                "the list is empty; list its sources (e.g. [198.51.100.0/24]) or remove it",
            );
        }
        let items = list_spans.map_or(&[][..], |s| s.items.as_slice());
        let at = |k: usize| items.get(k).map_or((None, k), |&(p, j)| (Some(p), j));
        let mut nets: Vec<(IpNet, usize)> = Vec::with_capacity(entries.len());
        for (k, text) in entries.iter().enumerate() {
            let (epos, j) = at(k);
            match parse_prefix(text) {
                Ok(net) => nets.push((net, k)),
                Err(message) => report.push_path(epos, format!("{path}[{j}]"), message),
            }
        }
        for (later, earlier, later_net, earlier_net) in overlaps(&nets) {
            let (lpos, lj) = at(later);
            let (epos, ej) = at(earlier);
            let first = match epos {
                Some((line, _)) => format!("{path}[{ej}], line {line}"),
                None => format!("{path}[{ej}]"),
            };
            report.push_path(
                lpos,
                format!("{path}[{lj}]"),
                overlap_message(later_net, earlier_net, &first),
            );
        }
        if report.count() > errors_before || list_spans.is_some_and(|s| s.bad) {
            out.bad.insert(name);
            continue;
        }
        let (v6, v4): (Vec<IpNet>, Vec<IpNet>) = nets
            .into_iter()
            .map(|(n, _)| n)
            .partition(|n| matches!(n, IpNet::V6(_)));
        out.lists.insert(
            name.clone(),
            SourceList {
                v4: canonical_prefixes(v4),
                v6: canonical_prefixes(v6),
            },
        );
    }
    out
}

/// Check a mapping's listen addresses: each an address of `to`'s family that the router can hold
/// as a public address (not unspecified, loopback, multicast, broadcast or IPv6 link-local), each
/// once. Sorted when all are valid.
fn check_listen(
    entries: &[String],
    items: &[(Pos, usize)],
    index: usize,
    to_is_v6: bool,
    report: &mut Report<'_>,
) -> Option<Vec<IpAddr>> {
    let errors_before = report.count();
    let at = |k: usize| items.get(k).map_or((None, k), |&(p, j)| (Some(p), j));
    if entries.len() > MAX_LISTEN_PER_MAPPING {
        let (pos, j) = at(MAX_LISTEN_PER_MAPPING);
        report.push(
            pos,
            Field::OfItem(index, "listen", j),
            format!(
                "a mapping takes at most {MAX_LISTEN_PER_MAPPING} listen addresses; this list has {}",
                entries.len()
            ),
        );
        return None;
    }
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, text) in entries.iter().enumerate() {
        let (pos, j) = at(k);
        let field = Field::OfItem(index, "listen", j);
        let Ok(addr) = text.parse::<IpAddr>() else {
            let hint = if text.parse::<IpNet>().is_ok() {
                format!(
                    "`{}` is a prefix; listen takes the router's addresses one by one, e.g. {}",
                    shown(text),
                    text.split('/').next().unwrap_or(text)
                )
            } else {
                format!(
                    "`{}` is not an IP address; give one of the router's public addresses, e.g. 198.51.100.5 or \
                         2001:db8::5 (host names are not resolved)",
                    shown(text)
                )
            };
            report.push(pos, field, hint);
            continue;
        };
        let problem = match addr {
            IpAddr::V4(a) if a.is_unspecified() => {
                Some("the unspecified address (leave listen out to answer on any address)")
            }
            IpAddr::V4(a) if a.is_loopback() => Some("a loopback address (127.0.0.0/8)"),
            IpAddr::V4(a) if a.is_multicast() => Some("a multicast address (224.0.0.0/4)"),
            IpAddr::V4(a) if a == Ipv4Addr::BROADCAST => Some("the broadcast address"),
            IpAddr::V6(a) if a.is_unspecified() => {
                Some("the unspecified address (leave listen out to answer on any address)")
            }
            IpAddr::V6(a) if a.is_loopback() => Some("the loopback address (::1)"),
            IpAddr::V6(a) if a.is_multicast() => Some("a multicast address (ff00::/8)"),
            IpAddr::V6(a) if a.is_unicast_link_local() => {
                Some("a link-local address (fe80::/10), which portmap never forwards")
            }
            IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
                Some("an IPv4-mapped IPv6 address; write the IPv4 address")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            report.push(
                pos,
                field,
                format!("{addr} is {problem}; give one of the router's public addresses"),
            );
            continue;
        }
        if addr.is_ipv6() != to_is_v6 {
            let (a, t) = if to_is_v6 {
                ("IPv4", "IPv6")
            } else {
                ("IPv6", "IPv4")
            };
            report.push(
                pos,
                field,
                format!(
                    "{addr} is {a} but `to` is {t}; a mapping answers on addresses of its target's family (write a \
                     second mapping for the other family)"
                ),
            );
            continue;
        }
        if let Some(&first) = seen.get(&addr) {
            let (fpos, fj) = at(first);
            let first = Field::OfItem(index, "listen", fj);
            let first = match fpos {
                Some((line, _)) => format!("{first}, line {line}"),
                None => first.to_string(),
            };
            report.push(
                pos,
                field,
                format!("{addr} is listed twice (first as {first}); list it once"),
            );
            continue;
        }
        seen.insert(addr, k);
        out.push(addr);
    }
    if report.count() > errors_before {
        return None;
    }
    out.sort_unstable();
    Some(out)
}

/// At most [`MAX_LISTEN_ADDRESSES`] distinct listen addresses in the file (reported once, at the
/// first mapping that passes the limit).
fn check_listen_count(config: &Config, spans: &Spans, checked: &[Checked], report: &mut Report<'_>) {
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for (i, c) in checked.iter().enumerate() {
        seen.extend(c.listen.iter().copied());
        if seen.len() > MAX_LISTEN_ADDRESSES {
            let (index, pos) = mapping_field(spans, i, MappingField::Listen);
            report.push(
                pos,
                Field::Of(index, "listen"),
                format!(
                    "the mappings up to `{}` name more than {MAX_LISTEN_ADDRESSES} different listen addresses, more \
                     than portmap takes in one configuration",
                    config.mappings[i].name
                ),
            );
            return;
        }
    }
}

fn check_unique_names(config: &Config, spans: &Spans, checked: &[Checked], report: &mut Report<'_>) {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(config.mappings.len());
    for (i, (m, c)) in config.mappings.iter().zip(checked).enumerate() {
        if !c.name_ok {
            continue;
        }
        if let Some(&f) = first.get(m.name.as_str()) {
            let (index, pos) = mapping_field(spans, i, MappingField::Name);
            let (findex, fpos) = mapping_field(spans, f, MappingField::Name);
            report.push(
                pos,
                Field::Of(index, "name"),
                format!(
                    "duplicate mapping name `{}` (first at {}); names must be unique",
                    m.name,
                    where_is(fpos, Field::Mapping(findex))
                ),
            );
        } else {
            first.insert(&m.name, i);
        }
    }
}

/// A mapping's index in the file and the position of one of its fields.
fn mapping_field(spans: &Spans, i: usize, f: MappingField) -> (usize, Option<Pos>) {
    spans
        .mappings
        .get(i)
        .map_or((i, None), |s| (s.index, s.slot(f).pos))
}

/// Enabled mappings of one address family may not forward the same (protocol, external port) on
/// the same address twice; an IPv4 and an IPv6 mapping may (IPv4 packets look up the IPv4 maps,
/// IPv6 packets the IPv6 maps), which is how one service is published on both. Addresses: two
/// mappings with different `listen` addresses may share a port; a mapping without `listen`
/// answers on every address, so it clashes with any mapping of the same port. Sorting the ranges
/// by start makes this O(n log n): a range overlaps an earlier one exactly when it starts before
/// the furthest end seen so far.
fn check_overlaps(config: &Config, spans: &Spans, checked: &[Checked], report: &mut Report<'_>) {
    type Key = (bool, Transport, Option<IpAddr>);
    /// Ranges (start, end, mapping index) by family and protocol.
    type ByFamily = HashMap<(bool, Transport), Vec<(u16, u16, Index)>>;
    /// A range's start, and the furthest-reaching range so far (its start, end, index).
    type Reach = (u16, (u16, u16, Index));
    // Mapping indices as `u32` (4 billion mappings would take a terabyte before they got here): the
    // ranges below are 28 bytes each instead of 32, held with everything else, and sized exactly.
    type Index = u32;
    let index = |i: usize| Index::try_from(i).unwrap_or(Index::MAX);
    let usable = |(m, c): (&MappingConfig, &Checked)| m.enabled && c.port.is_some();
    let count: usize = config
        .mappings
        .iter()
        .zip(checked)
        .filter(|&p| usable(p))
        .map(|(m, c)| m.protocol.transports().len() * c.listen.len().max(1))
        .sum();
    let mut ranges: Vec<(Key, u16, u16, Index)> = Vec::with_capacity(count);
    for (i, (m, c)) in config.mappings.iter().zip(checked).enumerate() {
        if let (true, Some(port)) = (m.enabled, c.port) {
            for &t in m.protocol.transports() {
                if c.listen.is_empty() {
                    ranges.push(((c.v6, t, None), port.start, port.end, index(i)));
                } else {
                    for &a in &c.listen {
                        ranges.push(((c.v6, t, Some(a)), port.start, port.end, index(i)));
                    }
                }
            }
        }
    }
    ranges.sort_unstable();
    let mut reported: HashSet<(usize, usize)> = HashSet::new();
    let mut clash = |this: Index, other: Index, key: Key, shared: PortRange, report: &mut Report<'_>| {
        let (this, other) = (this as usize, other as usize);
        let (this, other) = if this > other {
            (this, other)
        } else {
            (other, this)
        };
        if !reported.insert((this, other)) {
            return;
        }
        let (v6, t, addr) = key;
        let other_m = &config.mappings[other];
        let this_m = &config.mappings[this];
        let (index, pos) = mapping_field(spans, this, MappingField::Port);
        let (oindex, opos) = mapping_field(spans, other, MappingField::Port);
        let (ports, verb) = if shared.len() == 1 {
            ("port", "is")
        } else {
            ("ports", "are")
        };
        let (family, other_family) = if v6 { ("IPv6", "IPv4") } else { ("IPv4", "IPv6") };
        let on = |m: &MappingConfig| {
            if m.listen.is_empty() {
                " on any address".to_owned()
            } else {
                format!(" on {}", m.listen.join(", "))
            }
        };
        let message = match addr {
            None if other_m.listen.is_empty() && this_m.listen.is_empty() => format!(
                "{t} {ports} {shared} {verb} also forwarded by mapping `{}` ({}: {} {}); each protocol and external \
                 port can belong to one enabled {family} mapping (and one {other_family} mapping), or give each \
                 mapping its own `listen` addresses",
                other_m.name,
                where_is(opos, Field::Mapping(oindex)),
                other_m.protocol,
                other_m.port
            ),
            None => format!(
                "{t} {ports} {shared} {verb} also forwarded by mapping `{}` ({}: {} {}{}); a mapping without \
                 `listen` answers on every address, so it clashes with every {family} mapping of the same port: give \
                 both mappings `listen` addresses of their own",
                other_m.name,
                where_is(opos, Field::Mapping(oindex)),
                other_m.protocol,
                other_m.port,
                on(other_m)
            ),
            Some(a) => format!(
                "{t} {ports} {shared} on {a} {verb} also forwarded by mapping `{}` ({}: {} {}{}); each address, \
                 protocol and external port can belong to one enabled mapping",
                other_m.name,
                where_is(opos, Field::Mapping(oindex)),
                other_m.protocol,
                other_m.port,
                on(other_m)
            ),
        };
        report.push(pos, Field::Of(index, "port"), message);
    };
    // The same address (or both any address).
    let mut cover: Option<(Key, u16, Index)> = None;
    for &(key, start, end, i) in &ranges {
        match cover {
            Some((ckey, cend, ci)) if ckey == key && start <= cend => {
                clash(
                    i,
                    ci,
                    key,
                    PortRange {
                        start,
                        end: end.min(cend),
                    },
                    report,
                );
                if end > cend {
                    cover = Some((key, end, i));
                }
            }
            _ => cover = Some((key, end, i)),
        }
    }
    // Any address against a listen address: per family and protocol, the any-address ranges sorted
    // by start with the furthest end so far; a listen range clashes when the last any-address
    // range starting at or before its end reaches its start.
    let mut any: ByFamily = HashMap::new();
    for &((v6, t, addr), start, end, i) in &ranges {
        if addr.is_none() {
            any.entry((v6, t)).or_default().push((start, end, i));
        }
    }
    let reach: HashMap<(bool, Transport), Vec<Reach>> = any
        .into_iter()
        .map(|(k, list)| {
            // Per range: its start, and the furthest-reaching range so far (its start, end, index).
            let mut best: Option<(u16, u16, Index)> = None;
            let out = list
                .into_iter()
                .map(|(start, end, i)| {
                    if best.is_none_or(|(_, e, _)| end > e) {
                        best = Some((start, end, i));
                    }
                    (start, best.unwrap_or((start, end, i)))
                })
                .collect();
            (k, out)
        })
        .collect();
    for &((v6, t, addr), start, end, i) in &ranges {
        if addr.is_none() {
            continue;
        }
        let Some(list) = reach.get(&(v6, t)) else {
            continue;
        };
        let n = list.partition_point(|&(s, _)| s <= end);
        if n == 0 {
            continue;
        }
        let (_, (astart, aend, ai)) = list[n - 1];
        if aend >= start {
            let shared = PortRange {
                start: start.max(astart),
                end: end.min(aend),
            };
            clash(i, ai, (v6, t, None), shared, report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    #[test]
    fn canonical_prefixes_merge_and_sort() {
        let input = vec![
            net("10.0.0.128/25"),
            net("192.168.1.7/32"),
            net("10.0.0.0/25"),
            net("10.0.0.5/32"),
        ];
        assert_eq!(
            canonical_prefixes(input),
            vec![net("10.0.0.0/24"), net("192.168.1.7/32")]
        );
        assert_eq!(
            canonical_prefixes(vec![net("10.0.0.5/24")]),
            vec![net("10.0.0.0/24")]
        );
        assert_eq!(canonical_prefixes(vec![]), Vec::<IpNet>::new());
        assert_eq!(
            canonical_prefixes(vec![net("0.0.0.0/0"), net("10.0.0.0/8")]),
            vec![net("0.0.0.0/0")]
        );
    }

    #[test]
    fn port_text_forms() {
        assert_eq!(parse_port(&"8080".into()), Ok(PortRange::single(8080)));
        assert_eq!(
            parse_port(&"6000-6010".into()),
            Ok(PortRange {
                start: 6000,
                end: 6010
            })
        );
        assert_eq!(parse_port(&"00080".into()), Ok(PortRange::single(80)));
        assert_eq!(
            parse_port(&"0".into()),
            Err("port 0 is out of range; use 1-65535 or \"A-B\"".to_owned())
        );
        assert_eq!(
            parse_port(&"99999999999999999999999".into()),
            Err("port 99999999999999999999999 is out of range; use 1-65535 or \"A-B\"".to_owned())
        );
        assert!(parse_port(&"+80".into()).is_err());
        assert!(parse_port(&"80-".into()).is_err());
        assert!(parse_port(&"1-2-3".into()).is_err());
        assert!(parse_port(&" 80".into()).is_err());
    }
}
