//! `plan(&Model, &Observed) -> Plan`: the difference between the configuration and the kernel, as a
//! value. Pure: no I/O, cannot fail. Something else (a backend) carries a plan out.
//!
//! A plan speaks mappings, never kernel objects: create / update (before → after, field by field) /
//! delete, plus what happens to portmap's own table (create it, or repair it when it was altered by
//! hand) and router-wide setting changes.

use serde::{Deserialize, Serialize};

use crate::model::{Forward, Mapping, Model, Observed, ObservedMapping, Settings, TableState};

/// Version of the plan file format written by `plan --out`.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// What happens to the owned table as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TableAction {
    /// The table is there and intact: only the listed changes are sent.
    Keep,
    /// The table does not exist: it is created with everything in it.
    Create,
    /// The table was altered by hand: it is rebuilt from the configuration in the same transaction.
    Repair {
        /// What was found wrong.
        reasons: Vec<String>,
    },
}

/// Why a mapping is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// The configuration does not name it.
    NotInConfig,
    /// The configuration has it with `enabled: false`.
    Disabled,
}

/// One field of a mapping that differs, rendered for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name as in the configuration (`to`, `to_port`, `allow_from`, ...).
    pub field: String,
    /// Value in the kernel now.
    pub before: String,
    /// Value the configuration asks for.
    pub after: String,
}

/// A change to one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// A mapping the kernel does not have yet.
    Create {
        /// The mapping to create.
        mapping: Mapping,
    },
    /// A mapping whose kernel state differs from the configuration.
    Update {
        /// What the kernel has now.
        before: ObservedMapping,
        /// What the configuration asks for.
        after: Mapping,
        /// The differing fields, for people.
        fields: Vec<FieldChange>,
    },
    /// A mapping the kernel has and the configuration does not want.
    Delete {
        /// What the kernel has now.
        before: ObservedMapping,
        /// Why it goes.
        reason: DeleteReason,
    },
}

impl Change {
    /// The name of the mapping this change is about.
    pub fn name(&self) -> &str {
        match self {
            Change::Create { mapping } | Change::Update { after: mapping, .. } => &mapping.name,
            Change::Delete { before, .. } => &before.name,
        }
    }
}

/// A router-wide setting that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChange {
    /// Setting name as in the configuration (`wan.interfaces`, `masquerade`, ...).
    pub field: String,
    /// Value in the kernel now.
    pub before: String,
    /// Value the configuration asks for.
    pub after: String,
}

/// The difference between a `Model` and an `Observed` kernel state, and everything needed to carry it
/// out (a saved plan is applied without the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Plan file format version ([`PLAN_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Backend the plan was made against.
    pub backend: String,
    /// The owned table, e.g. `inet portmap`.
    pub table: String,
    /// Kernel ruleset generation the plan was made at; applying refuses if the kernel moved on.
    pub generation: Option<u32>,
    /// What happens to the table as a whole.
    pub table_action: TableAction,
    /// Router-wide setting changes.
    pub settings: Vec<SettingChange>,
    /// Mapping changes, deletes first, then updates, then creates; by name within each.
    pub changes: Vec<Change>,
    /// Things worth knowing that do not block (filled by callers, e.g. coexistence checks).
    pub warnings: Vec<String>,
    /// The whole desired state (used to build or rebuild the table).
    pub desired: Model,
}

impl Plan {
    /// True when applying would change nothing. Warnings do not count.
    pub fn is_empty(&self) -> bool {
        self.table_action == TableAction::Keep && self.settings.is_empty() && self.changes.is_empty()
    }
}

/// Compare the configuration with the kernel. Pure and total.
pub fn plan(model: &Model, observed: &Observed) -> Plan {
    let table_action = match &observed.state {
        TableState::Missing => TableAction::Create,
        TableState::Intact => TableAction::Keep,
        TableState::Damaged { reasons } => TableAction::Repair { reasons: reasons.clone() },
    };

    let settings = if observed.state == TableState::Missing {
        Vec::new()
    } else {
        setting_changes(&observed.settings, &model.settings)
    };

    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut creates = Vec::new();

    for before in &observed.mappings {
        if !model.mappings.iter().any(|m| m.name == before.name) {
            let reason = if model.disabled.contains(&before.name) {
                DeleteReason::Disabled
            } else {
                DeleteReason::NotInConfig
            };
            deletes.push(Change::Delete { before: before.clone(), reason });
        }
    }
    for after in &model.mappings {
        match observed.mappings.iter().find(|o| o.name == after.name) {
            None => creates.push(Change::Create { mapping: after.clone() }),
            Some(before) => {
                let fields = field_changes(before, after);
                if !fields.is_empty() {
                    updates.push(Change::Update { before: before.clone(), after: after.clone(), fields });
                }
            }
        }
    }
    for list in [&mut deletes, &mut updates, &mut creates] {
        list.sort_by(|a, b| a.name().cmp(b.name()));
    }
    let mut changes = deletes;
    changes.append(&mut updates);
    changes.append(&mut creates);

    Plan {
        format_version: PLAN_FORMAT_VERSION,
        backend: observed.backend.clone(),
        table: observed.table.clone(),
        generation: observed.generation,
        table_action,
        settings,
        changes,
        warnings: Vec::new(),
        desired: model.clone(),
    }
}

fn setting_changes(before: &Settings, after: &Settings) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut push = |field: &str, b: String, a: String| {
        if b != a {
            out.push(SettingChange { field: field.to_owned(), before: b, after: a });
        }
    };
    push("wan.interfaces", list(&before.wan_interfaces), list(&after.wan_interfaces));
    push("lan.interfaces", list(&before.lan_interfaces), list(&after.lan_interfaces));
    push("masquerade", before.masquerade.to_string(), after.masquerade.to_string());
    push("hairpin", before.hairpin.to_string(), after.hairpin.to_string());
    out
}

fn list<T: ToString>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Field-by-field difference between what the kernel holds for a mapping and what is wanted.
fn field_changes(before: &ObservedMapping, after: &Mapping) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let wanted = after.forwards();
    if before.forwards != wanted {
        let shape = ForwardShape::of(&before.forwards);
        let mut push = |field: &str, b: String, a: String| {
            if b != a {
                out.push(FieldChange { field: field.to_owned(), before: b, after: a });
            }
        };
        match shape {
            Some(s) => {
                push("protocol", s.protocol, after.protocol.to_string());
                push("port", s.port, after.port.to_string());
                push("to", s.to, after.to.to_string());
                push("to_port", s.to_port, after.to_port.to_string());
            }
            None => push("forwards", describe_forwards(&before.forwards), describe_forwards(&wanted)),
        }
        if out.is_empty() {
            // Same summary, different elements (should not happen, but never hide a difference).
            out.push(FieldChange {
                field: "forwards".to_owned(),
                before: describe_forwards(&before.forwards),
                after: describe_forwards(&wanted),
            });
        }
    }
    if before.allow_from != after.allow_from {
        out.push(FieldChange {
            field: "allow_from".to_owned(),
            before: list(&before.allow_from),
            after: list(&after.allow_from),
        });
    }
    if before.description != after.description {
        out.push(FieldChange {
            field: "description".to_owned(),
            before: before.description.clone().unwrap_or_default(),
            after: after.description.clone().unwrap_or_default(),
        });
    }
    out
}

/// The configuration-level fields a set of forwards corresponds to, when it has that shape.
struct ForwardShape {
    protocol: String,
    port: String,
    to: String,
    to_port: String,
}

impl ForwardShape {
    /// Fold forwards back into (protocol, port range, to, to_port range); `None` when they do not form
    /// one mapping (several targets, gaps, different offsets, tcp and udp on different ports).
    fn of(forwards: &[Forward]) -> Option<ForwardShape> {
        let first = forwards.first()?;
        if forwards.iter().any(|f| f.to != first.to) {
            return None;
        }
        let mut tcp: Vec<(u16, u16)> = Vec::new();
        let mut udp: Vec<(u16, u16)> = Vec::new();
        for f in forwards {
            match f.transport {
                crate::model::Transport::Tcp => tcp.push((f.port, f.to_port)),
                crate::model::Transport::Udp => udp.push((f.port, f.to_port)),
            }
        }
        let (protocol, pairs) = match (tcp.is_empty(), udp.is_empty()) {
            (false, true) => ("tcp", tcp),
            (true, false) => ("udp", udp),
            (false, false) if tcp == udp => ("both", tcp),
            _ => return None,
        };
        let (p0, t0) = pairs[0];
        for (i, &(p, t)) in pairs.iter().enumerate() {
            let i = u16::try_from(i).ok()?;
            if p != p0.checked_add(i)? || t != t0.checked_add(i)? {
                return None;
            }
        }
        let (pn, tn) = pairs[pairs.len() - 1];
        let range = |a: u16, b: u16| if a == b { a.to_string() } else { format!("{a}-{b}") };
        Some(ForwardShape {
            protocol: protocol.to_owned(),
            port: range(p0, pn),
            to: first.to.to_string(),
            to_port: range(t0, tn),
        })
    }
}

/// A compact listing of forwards: `tcp/8080→192.168.1.66:80, udp/6000→192.168.1.70:7000`.
pub fn describe_forwards(forwards: &[Forward]) -> String {
    let parts: Vec<String> = forwards
        .iter()
        .map(|f| match f.to {
            std::net::IpAddr::V4(a) => format!("{}/{}→{}:{}", f.transport, f.port, a, f.to_port),
            std::net::IpAddr::V6(a) => format!("{}/{}→[{}]:{}", f.transport, f.port, a, f.to_port),
        })
        .collect();
    parts.join(", ")
}
