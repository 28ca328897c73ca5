//! Candidates → mappings, and the YAML a person reviews. Pure: no I/O, cannot fail.
//!
//! Merges, in this order: the same forward from rules with different sources becomes one mapping
//! whose `allow_from` holds them all (a rule without a source match admits everyone); forwards of
//! consecutive ports with the same shift become one range (`port: A-B` with `to_port`); TCP and
//! UDP forwards that agree on everything else become `protocol: both`. `wan` is the input
//! interface most rules name; forwards that match another interface, and forwards whose ports an
//! earlier rule already takes (the kernel uses the first that matches), are set aside: written as
//! comments with the reason, not forwarded.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use portmap_core::{MAX_DESCRIPTION_LEN, MAX_NAME_LEN, PortRange, Protocol, Transport};

use super::{Candidate, Found, NotTaken, one_line};

/// Interface written as `wan` when no rule names one.
pub const PLACEHOLDER_WAN: &str = "eth0";
/// Most origins listed above one mapping (a map of many elements is one rule, but a range merged
/// from many rules would list them all).
const MAX_ORIGINS_SHOWN: usize = 8;

/// One mapping of the imported configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMapping {
    /// Unique, valid name.
    pub name: String,
    /// tcp, udp or both.
    pub protocol: Protocol,
    /// External ports.
    pub ports: PortRange,
    /// The inner host.
    pub to: IpAddr,
    /// The inner ports, when they differ from `ports`.
    pub to_port: Option<PortRange>,
    /// Sources admitted (empty: everyone).
    pub allow_from: Vec<IpNet>,
    /// The one address it answers on (`-d`, `ip daddr`), if the rule names one.
    pub listen: Option<IpAddr>,
    /// From the rule's comment.
    pub description: Option<String>,
    /// The rules it came from.
    pub origins: Vec<String>,
}

/// A mapping that is written commented out, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The mapping as it would be.
    pub mapping: ImportedMapping,
    /// Why it is not forwarded.
    pub reason: String,
}

/// The result of an import: a configuration and everything said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `wan.interfaces`.
    pub wan: Vec<String>,
    /// No rule named an interface: `wan` is [`PLACEHOLDER_WAN`] and must be checked.
    pub wan_guessed: bool,
    /// Interfaces rules named that are not `wan`, with how many rules named each.
    pub other_interfaces: Vec<(String, usize)>,
    /// The mappings, in the order of the rules they came from.
    pub mappings: Vec<ImportedMapping>,
    /// Mappings written as comments.
    pub set_aside: Vec<SetAside>,
    /// Rules not taken over.
    pub not_taken: Vec<NotTaken>,
    /// What was read.
    pub read: Vec<String>,
}

/// A mapping being built.
#[derive(Debug, Clone)]
struct Draft {
    order: usize,
    /// `None`: arrives on a wan interface (or any); `Some`: another interface.
    other_iif: Option<String>,
    transports: Vec<Transport>,
    ports: PortRange,
    to: IpAddr,
    to_port: u16,
    sources: Vec<IpNet>,
    listen: Option<IpAddr>,
    comment: Option<String>,
    origins: Vec<String>,
}

impl Draft {
    fn shift(&self) -> i32 {
        i32::from(self.to_port) - i32::from(self.ports.start)
    }

    fn absorb(&mut self, other: Draft) {
        self.order = self.order.min(other.order);
        if self.comment.is_none() {
            self.comment = other.comment;
        }
        for o in other.origins {
            if !self.origins.contains(&o) {
                self.origins.push(o);
            }
        }
    }
}

/// The interface most rules name (ties: the first named), counting each rule once.
fn choose_wan(candidates: &[Candidate]) -> Option<String> {
    let mut counts: Vec<(String, Vec<&str>)> = Vec::new();
    for c in candidates {
        let Some(iif) = &c.iif else { continue };
        match counts.iter_mut().find(|(name, _)| name == iif) {
            Some((_, origins)) => {
                if !origins.contains(&c.origin.as_str()) {
                    origins.push(&c.origin);
                }
            }
            None => counts.push((iif.clone(), vec![&c.origin])),
        }
    }
    let mut best: Option<(String, usize)> = None;
    for (name, origins) in counts {
        if best.as_ref().is_none_or(|(_, n)| origins.len() > *n) {
            best = Some((name, origins.len()));
        }
    }
    best.map(|(name, _)| name)
}

/// Turn what was read into a configuration. `wan`, when given, replaces the inferred interfaces.
pub fn convert(found: Found, wan: Option<&[String]>) -> Imported {
    let Found {
        candidates,
        not_taken,
        read,
    } = found;
    let (wan, wan_guessed) = match wan {
        Some(list) if !list.is_empty() => (list.to_vec(), false),
        _ => match choose_wan(&candidates) {
            Some(name) => (vec![name], false),
            None => (vec![PLACEHOLDER_WAN.to_owned()], true),
        },
    };
    let mut other_interfaces: Vec<(String, Vec<String>)> = Vec::new();
    let drafts: Vec<Draft> = candidates
        .into_iter()
        .enumerate()
        .map(|(order, c)| {
            let other_iif = c.iif.filter(|i| !wan.contains(i));
            if let Some(i) = &other_iif {
                match other_interfaces.iter_mut().find(|(n, _)| n == i) {
                    Some((_, o)) if !o.contains(&c.origin) => o.push(c.origin.clone()),
                    Some(_) => {}
                    None => other_interfaces.push((i.clone(), vec![c.origin.clone()])),
                }
            }
            Draft {
                order,
                other_iif,
                transports: vec![c.transport],
                ports: c.ports,
                to: c.to,
                to_port: c.to_port,
                sources: c.sources.iter().map(IpNet::trunc).collect(),
                listen: c.listen,
                comment: c.comment,
                origins: vec![c.origin],
            }
        })
        .collect();
    let drafts = merge_protocols(merge_runs(merge_sources(drafts)));

    let mut mappings = Vec::new();
    let mut set_aside = Vec::new();
    let mut taken: Vec<(bool, Transport, PortRange, Option<IpAddr>, String)> = Vec::new();
    let mut names = NameBook::default();
    for d in drafts {
        let mut reason = d.other_iif.as_ref().map(|iif| {
            format!(
                "the rule matches input interface {}, which is not the wan interface ({}); portmap forwards on every wan interface — add {} to wan.interfaces if that is what you want",
                one_line(iif),
                wan.join(", "),
                one_line(iif)
            )
        });
        let v6 = d.to.is_ipv6();
        if reason.is_none() {
            for t in &d.transports {
                if let Some((_, _, _, on, name)) = taken.iter().find(|(f, tr, p, on, _)| {
                    *f == v6
                        && tr == t
                        && p.overlaps(d.ports)
                        && (on.is_none() || d.listen.is_none() || *on == d.listen)
                }) {
                    reason = Some(if on.is_some() && d.listen.is_none() {
                        format!(
                            "{t} {} on every address overlaps mapping {name} on {}, from an earlier rule; portmap forwards a port either on any address or on listen addresses — give this one the listen addresses it should answer on",
                            d.ports,
                            on.map(|a| a.to_string()).unwrap_or_default()
                        )
                    } else {
                        format!(
                            "{t} {} is already forwarded by mapping {name}, from an earlier rule (the kernel uses the first rule that matches, so this one never forwards)",
                            d.ports
                        )
                    });
                    break;
                }
            }
        }
        let mapping = finish(d, &mut names);
        if let Some(reason) = reason {
            set_aside.push(SetAside { mapping, reason });
        } else {
            for t in mapping.protocol.transports() {
                taken.push((v6, *t, mapping.ports, mapping.listen, mapping.name.clone()));
            }
            mappings.push(mapping);
        }
    }
    Imported {
        wan,
        wan_guessed,
        other_interfaces: other_interfaces.into_iter().map(|(n, o)| (n, o.len())).collect(),
        mappings,
        set_aside,
        not_taken,
        read,
    }
}

/// The same forward from several rules (different sources) → one draft admitting them all.
fn merge_sources(drafts: Vec<Draft>) -> Vec<Draft> {
    type Key = (
        Option<String>,
        Vec<Transport>,
        PortRange,
        IpAddr,
        u16,
        Option<IpAddr>,
    );
    let mut out: Vec<Draft> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for d in drafts {
        let key = (
            d.other_iif.clone(),
            d.transports.clone(),
            d.ports,
            d.to,
            d.to_port,
            d.listen,
        );
        if let Some(&i) = index.get(&key) {
            let kept = &mut out[i];
            if kept.sources.is_empty() || d.sources.is_empty() {
                kept.sources.clear();
            } else {
                kept.sources.extend(d.sources.iter().copied());
                kept.sources = IpNet::aggregate(&kept.sources);
            }
            kept.absorb(d);
        } else {
            index.insert(key, out.len());
            let mut d = d;
            d.sources = IpNet::aggregate(&d.sources);
            out.push(d);
        }
    }
    out
}

/// Forwards of consecutive (or overlapping) ports with the same shift → one range.
fn merge_runs(drafts: Vec<Draft>) -> Vec<Draft> {
    type Key = (
        Option<String>,
        Vec<Transport>,
        IpAddr,
        Vec<IpNet>,
        i32,
        Option<IpAddr>,
    );
    let mut groups: BTreeMap<usize, Vec<Draft>> = BTreeMap::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for d in drafts {
        let key = (
            d.other_iif.clone(),
            d.transports.clone(),
            d.to,
            d.sources.clone(),
            d.shift(),
            d.listen,
        );
        let first = *index.entry(key).or_insert(d.order);
        groups.entry(first).or_default().push(d);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by_key(|d| (d.ports.start, d.order));
        let mut current: Option<Draft> = None;
        for d in group {
            match current.as_mut() {
                Some(c) if u32::from(d.ports.start) <= u32::from(c.ports.end) + 1 => {
                    if d.ports.end > c.ports.end {
                        c.ports.end = d.ports.end;
                    }
                    c.absorb(d);
                }
                _ => {
                    if let Some(done) = current.replace(d) {
                        out.push(done);
                    }
                }
            }
        }
        out.extend(current);
    }
    out.sort_by_key(|d| d.order);
    out
}

/// TCP and UDP forwards that agree on everything else → one `both` draft.
fn merge_protocols(drafts: Vec<Draft>) -> Vec<Draft> {
    type Key = (Option<String>, PortRange, IpAddr, u16, Vec<IpNet>, Option<IpAddr>);
    let mut out: Vec<Draft> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for d in drafts {
        let key = (
            d.other_iif.clone(),
            d.ports,
            d.to,
            d.to_port,
            d.sources.clone(),
            d.listen,
        );
        if let Some(&i) = index.get(&key) {
            let kept = &mut out[i];
            for t in &d.transports {
                if !kept.transports.contains(t) {
                    kept.transports.push(*t);
                }
            }
            kept.absorb(d);
        } else {
            index.insert(key, out.len());
            out.push(d);
        }
    }
    out.sort_by_key(|d| d.order);
    out
}

/// Names already given.
#[derive(Debug, Default)]
struct NameBook {
    used: Vec<String>,
}

impl NameBook {
    /// `base`, or `base-2`, `base-3`, … when it is taken.
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut n = 2;
        while self.used.contains(&name) {
            let suffix = format!("-{n}");
            let mut stem = base.to_owned();
            while stem.len() + suffix.len() > MAX_NAME_LEN {
                stem.pop();
            }
            name = format!("{stem}{suffix}");
            n += 1;
        }
        self.used.push(name.clone());
        name
    }
}

/// A comment made into a valid mapping name (`Web server #1` → `Web-server-1`), if anything of it
/// is left.
pub fn name_from_comment(comment: &str) -> Option<String> {
    let mut out = String::new();
    for c in comment.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(48).collect();
    while name.ends_with(['-', '.', '_']) {
        name.pop();
    }
    (!name.is_empty()).then_some(name)
}

/// A comment made into a valid description: printable, no `"`, at most the limit.
fn description_from_comment(comment: &str) -> Option<String> {
    let mut out = String::new();
    for c in comment.chars() {
        let c = match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        };
        if out.len() + c.len_utf8() > MAX_DESCRIPTION_LEN {
            break;
        }
        out.push(c);
    }
    let out = out.trim().to_owned();
    (!out.is_empty()).then_some(out)
}

fn finish(d: Draft, names: &mut NameBook) -> ImportedMapping {
    let protocol = match d.transports.as_slice() {
        [Transport::Tcp] => Protocol::Tcp,
        [Transport::Udp] => Protocol::Udp,
        _ => Protocol::Both,
    };
    let base = d
        .comment
        .as_deref()
        .and_then(name_from_comment)
        .unwrap_or_else(|| {
            let family = if d.to.is_ipv6() { "-ip6" } else { "" };
            format!("{protocol}-{}{family}", d.ports)
        });
    let len = d.ports.end - d.ports.start;
    let to_port = (d.to_port != d.ports.start).then(|| PortRange {
        start: d.to_port,
        end: d.to_port + len,
    });
    ImportedMapping {
        name: names.unique(&base),
        protocol,
        ports: d.ports,
        to: d.to,
        to_port,
        allow_from: d.sources,
        listen: d.listen,
        description: d.comment.as_deref().and_then(description_from_comment),
        origins: d.origins,
    }
}

/// A port or range as the examples write it: `8080`, `"6000-6002"`.
fn port_yaml(p: PortRange) -> String {
    if p.start == p.end {
        p.start.to_string()
    } else {
        format!("\"{p}\"")
    }
}

/// A name as YAML reads it back as text: quoted when it starts with a digit (`010`, `1e3`) or is a
/// word YAML reads as a boolean or null.
fn name_yaml(name: &str) -> String {
    let word = name.to_ascii_lowercase();
    if name.starts_with(|c: char| c.is_ascii_digit()) || matches!(word.as_str(), "true" | "false" | "null") {
        format!("\"{name}\"")
    } else {
        name.to_owned()
    }
}

fn mapping_yaml(m: &ImportedMapping, prefix: &str) -> String {
    let mut s = String::new();
    let shown = m.origins.len().min(MAX_ORIGINS_SHOWN);
    for o in &m.origins[..shown] {
        let _ = writeln!(s, "{prefix}  # from {}", one_line(o));
    }
    if m.origins.len() > shown {
        let _ = writeln!(s, "{prefix}  # and {} more rules", m.origins.len() - shown);
    }
    let _ = writeln!(s, "{prefix}  - name: {}", name_yaml(&m.name));
    if m.protocol != Protocol::Tcp {
        let _ = writeln!(s, "{prefix}    protocol: {}", m.protocol);
    }
    let _ = writeln!(s, "{prefix}    port: {}", port_yaml(m.ports));
    let _ = writeln!(s, "{prefix}    to: {}", m.to);
    if let Some(p) = m.to_port {
        let _ = writeln!(s, "{prefix}    to_port: {}", port_yaml(p));
    }
    if !m.allow_from.is_empty() {
        let list: Vec<String> = m
            .allow_from
            .iter()
            .map(|n| {
                let text = if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                };
                if n.addr().is_ipv6() {
                    format!("\"{text}\"")
                } else {
                    text
                }
            })
            .collect();
        let _ = writeln!(s, "{prefix}    allow_from: [{}]", list.join(", "));
    }
    if let Some(a) = m.listen {
        let _ = writeln!(s, "{prefix}    listen: [{a}]");
    }
    if let Some(d) = &m.description {
        let escaped = d.replace('\\', "\\\\");
        let _ = writeln!(s, "{prefix}    description: \"{escaped}\"");
    }
    s
}

impl Imported {
    /// Whether nothing at all was found (no mapping, nothing set aside, no rule refused).
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty() && self.set_aside.is_empty() && self.not_taken.is_empty()
    }

    /// One line for people: `imported 3 mappings; 1 set aside; 2 rules not taken over`.
    pub fn summary(&self) -> String {
        let mut s = format!("imported {}", plural(self.mappings.len(), "mapping", "mappings"));
        if !self.set_aside.is_empty() {
            let _ = write!(
                s,
                "; {} set aside (commented out)",
                plural(self.set_aside.len(), "mapping", "mappings")
            );
        }
        if !self.not_taken.is_empty() {
            let _ = write!(
                s,
                "; {} not taken over",
                plural(self.not_taken.len(), "rule", "rules")
            );
        }
        if self.wan_guessed {
            let _ = write!(
                s,
                "; no rule names an interface, so wan is the placeholder {PLACEHOLDER_WAN}: check it"
            );
        }
        s.push_str("; nothing in the kernel was changed");
        s
    }

    /// The configuration as YAML that `portmap validate` accepts, with a comment on each mapping
    /// naming the rules it came from, the set-aside mappings commented out with the reason, and a
    /// list of the rules not taken over.
    pub fn to_yaml(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "# portmap configuration written by `portmap import` from the forwards other tools set up.\n",
        );
        s.push_str("# Read from:\n");
        for r in &self.read {
            let _ = writeln!(s, "#   {}", one_line(r));
        }
        s.push_str(
            "# Nothing in the kernel was changed. Review this file, remove the old rules, then\n\
             # `portmap apply -c FILE` (see docs/import.md).\n\nversion: 1\n\n",
        );
        if self.wan_guessed {
            let _ = writeln!(
                s,
                "# No rule named an input interface: {PLACEHOLDER_WAN} is a placeholder. Put the interface facing\n# the internet here (or pass --wan to portmap import)."
            );
        }
        for (name, rules) in &self.other_interfaces {
            let _ = writeln!(
                s,
                "# {} also named input interface {} (their mappings are set aside below).",
                plural(*rules, "rule", "rules"),
                one_line(name)
            );
        }
        let wan: Vec<String> = self.wan.iter().map(|w| one_line(w)).collect();
        let _ = writeln!(s, "wan: {{ interfaces: [{}] }}", wan.join(", "));
        s.push_str(
            "\n# The imported rules did not reflect LAN traffic; set `hairpin: true` and `lan:` for NAT\n\
             # reflection, `masquerade: true` to have portmap source-NAT LAN traffic too.\n\
             masquerade: false\nhairpin: false\n\n",
        );
        if self.mappings.is_empty() {
            s.push_str("mappings: []\n");
        } else {
            s.push_str("mappings:\n");
            for (i, m) in self.mappings.iter().enumerate() {
                if i > 0 {
                    s.push('\n');
                }
                s.push_str(&mapping_yaml(m, ""));
            }
        }
        if !self.set_aside.is_empty() {
            s.push_str("\n# Set aside: written as comments, not forwarded. Uncomment after review.\n");
            for a in &self.set_aside {
                let _ = writeln!(s, "#\n#   # not forwarded: {}", one_line(&a.reason));
                s.push_str(&mapping_yaml(&a.mapping, "#"));
            }
        }
        if !self.not_taken.is_empty() {
            s.push_str("\n# Not taken over (portmap cannot express these; they stay as they are):\n");
            for n in &self.not_taken {
                let _ = writeln!(s, "# - {}: {}", one_line(&n.origin), one_line(&n.reason));
            }
        }
        s
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
