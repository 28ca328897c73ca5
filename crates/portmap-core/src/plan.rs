//! `plan(&Model, &Observed) -> Plan`: the difference between the configuration and the kernel, as a
//! value. Pure: no I/O, cannot fail. Something else (a backend) carries a plan out.
//!
//! A plan speaks mappings, never kernel objects: create / update (before → after, field by field) /
//! delete, plus what happens to portmap's own table (create it, or repair it when it was altered by
//! hand) and router-wide setting changes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{PlanFileError, Refusal};
use crate::model::{
    Forward, Mapping, Model, Observed, ObservedMapping, Place, PortRange, Protocol, Settings, SourceList,
    TableState, Transport,
};
use crate::time::{EXPIRES_TOLERANCE_SECONDS, UtcTime, is_expired};
use crate::validate::{name_problem, validate};

/// Version of the plan file format written by `plan --out`. Version 2 binds a plan to the place
/// (boot and network namespace) and generation it was made at.
pub const PLAN_FORMAT_VERSION: u32 = 2;

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
    /// The configuration has it with an `expires` that has come, and the kernel still forwards it
    /// (it was installed without that expiry): portmap removes what the kernel would have.
    Expired,
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
///
/// Small, whatever the mapping: what the kernel has is boxed, and a create names the desired
/// state's mapping by its index rather than holding a copy ([`Change::mapping`],
/// [`Change::name`]). A plan file and `plan --json` write every change in full (see [`Plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A mapping the kernel does not have yet.
    Create {
        /// The mapping to create: its index in the plan's `desired.mappings`.
        index: usize,
    },
    /// A mapping whose kernel state differs from the configuration.
    Update {
        /// What the kernel has now.
        before: Box<ObservedMapping>,
        /// What the configuration asks for.
        after: Box<Mapping>,
        /// The differing fields, for people.
        fields: Vec<FieldChange>,
    },
    /// A mapping whose kernel objects are incomplete or altered (see
    /// [`ObservedMapping::damage`]): everything found for it is removed and it is created again as
    /// the configuration says, in the same transaction.
    Repair {
        /// What the kernel has now, with the damage found.
        before: Box<ObservedMapping>,
        /// What the configuration asks for.
        after: Box<Mapping>,
    },
    /// A mapping the kernel has and the configuration does not want.
    Delete {
        /// What the kernel has now.
        before: Box<ObservedMapping>,
        /// Why it goes.
        reason: DeleteReason,
    },
}

impl Change {
    /// The mapping this change makes, found in `desired` for a create; `None` for a delete (or a
    /// create whose index `desired` does not have).
    pub fn mapping<'a>(&'a self, desired: &'a Model) -> Option<&'a Mapping> {
        match self {
            Change::Create { index } => desired.mappings.get(*index),
            Change::Update { after, .. } | Change::Repair { after, .. } => Some(after),
            Change::Delete { .. } => None,
        }
    }

    /// The name of the mapping this change is about (a create's found in `desired`; empty when
    /// `desired` does not have its index).
    pub fn name<'a>(&'a self, desired: &'a Model) -> &'a str {
        match self {
            Change::Delete { before, .. } => &before.name,
            _ => self.mapping(desired).map_or("", |m| m.name.as_str()),
        }
    }
}

/// How a plan file and the JSON documents write a change: each mapping in full.
#[derive(Serialize)]
#[serde(rename = "Change", tag = "action", rename_all = "snake_case")]
enum ChangeView<'a> {
    Create {
        mapping: &'a Mapping,
    },
    Update {
        before: &'a ObservedMapping,
        after: &'a Mapping,
        fields: &'a [FieldChange],
    },
    Repair {
        before: &'a ObservedMapping,
        after: &'a Mapping,
    },
    Delete {
        before: &'a ObservedMapping,
        reason: DeleteReason,
    },
}

/// A change as a plan file has it, before a create is found in the desired state.
#[derive(Deserialize)]
#[serde(rename = "Change", tag = "action", rename_all = "snake_case")]
enum ChangeWire {
    Create {
        mapping: Mapping,
    },
    Update {
        before: Box<ObservedMapping>,
        after: Box<Mapping>,
        fields: Vec<FieldChange>,
    },
    Repair {
        before: Box<ObservedMapping>,
        after: Box<Mapping>,
    },
    Delete {
        before: Box<ObservedMapping>,
        reason: DeleteReason,
    },
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

/// A named source list whose kernel object differs from the configuration: one update of one
/// kernel object (per family), whichever mappings use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceChange {
    /// The list's name.
    pub name: String,
    /// What the kernel holds now (`None`: the list is not there).
    pub before: Option<SourceList>,
    /// What the configuration asks for (`None`: the list goes).
    pub after: Option<SourceList>,
    /// The mappings of the configuration that use the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// Tracked connections of those mappings from sources the list no longer admits (and the
    /// mapping admits no other way).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<StaleFlows>,
}

impl SourceChange {
    /// Prefixes the change adds and removes.
    pub fn delta(&self) -> (Vec<ipnet::IpNet>, Vec<ipnet::IpNet>) {
        let empty = SourceList::default();
        let before: HashSet<&ipnet::IpNet> = self.before.as_ref().unwrap_or(&empty).prefixes().collect();
        let after: HashSet<&ipnet::IpNet> = self.after.as_ref().unwrap_or(&empty).prefixes().collect();
        let added = self
            .after
            .iter()
            .flat_map(SourceList::prefixes)
            .filter(|n| !before.contains(n))
            .copied();
        let removed = self
            .before
            .iter()
            .flat_map(SourceList::prefixes)
            .filter(|n| !after.contains(n))
            .copied();
        (added.collect(), removed.collect())
    }
}

/// The difference between a `Model` and an `Observed` kernel state, and everything needed to carry it
/// out (a saved plan is applied without the configuration file).
///
/// Its serde form (the plan file) has these fields in this order, with each change written in full:
/// a create as `{"action": "create", "mapping": {…}}` with the mapping of the desired state. Reading
/// one back finds each create's mapping in the desired state, and refuses a plan whose create
/// names a mapping the desired state does not have as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Plan file format version ([`PLAN_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Backend the plan was made against.
    pub backend: String,
    /// The owned table, e.g. `inet portmap`.
    pub table: String,
    /// Kernel ruleset generation the plan was made at; applying refuses if the kernel moved on.
    pub generation: Option<u32>,
    /// The boot and network namespace the plan was made for; applying anywhere else is refused.
    pub place: Option<Place>,
    /// What happens to the table as a whole.
    pub table_action: TableAction,
    /// Router-wide setting changes.
    pub settings: Vec<SettingChange>,
    /// Mapping changes: deletes first, then updates and repairs, then creates; by name within each
    /// (a create's mapping is in `desired`: [`Change::mapping`]).
    pub changes: Vec<Change>,
    /// Named source lists to create, change or delete, by name (only for a backend that keeps
    /// each list in kernel objects of its own; see [`Observed::sources`]).
    pub sources: Vec<SourceChange>,
    /// Things worth knowing that do not block (filled by callers, e.g. coexistence checks).
    pub warnings: Vec<String>,
    /// The whole desired state (used to build or rebuild the table).
    pub desired: Model,
    /// The settings the kernel held when the plan was made (a backend turns setting changes into a
    /// delta from these).
    pub observed_settings: Settings,
    /// Tracked connections an interrupted apply left to remove (see
    /// [`Observed::pending_flows`]); applying this plan removes them.
    pub pending_flows: Vec<StaleFlows>,
    /// The moment the kernel was observed for this plan ([`Observed::observed_at`]): what the
    /// mappings' `expires` were judged against, and what "in 3d 4h" counts from.
    pub made_at: Option<UtcTime>,
    /// Whether the table could hold expiring mappings when the plan was made
    /// ([`Observed::can_expire`]): a backend rebuilds one that cannot for a desired state that
    /// [needs it](Model::needs_expiry). Written only when `false`.
    pub observed_can_expire: bool,
}

/// How a plan is written: [`Plan`]'s fields in order, each change in full ([`ChangeView`]).
#[derive(Serialize)]
#[serde(rename = "Plan")]
struct PlanView<'a> {
    format_version: u32,
    backend: &'a str,
    table: &'a str,
    generation: Option<u32>,
    place: &'a Option<Place>,
    table_action: &'a TableAction,
    settings: &'a [SettingChange],
    changes: ChangesView<'a>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    sources: &'a [SourceChange],
    warnings: &'a [String],
    desired: &'a Model,
    observed_settings: &'a Settings,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pending_flows: &'a [StaleFlows],
    #[serde(skip_serializing_if = "Option::is_none")]
    made_at: Option<UtcTime>,
    #[serde(skip_serializing_if = "crate::model::is_true")]
    observed_can_expire: bool,
}

/// A plan's changes, written one by one (no list of views is built).
struct ChangesView<'a> {
    changes: &'a [Change],
    desired: &'a Model,
}

impl Serialize for ChangesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = serializer.serialize_seq(Some(self.changes.len()))?;
        for change in self.changes {
            let view = match change {
                Change::Create { index } => ChangeView::Create {
                    mapping: self.desired.mappings.get(*index).ok_or_else(|| {
                        S::Error::custom(format!(
                            "a create names mapping {index}, which the desired state does not have"
                        ))
                    })?,
                },
                Change::Update {
                    before,
                    after,
                    fields,
                } => ChangeView::Update {
                    before,
                    after,
                    fields,
                },
                Change::Repair { before, after } => ChangeView::Repair { before, after },
                Change::Delete { before, reason } => ChangeView::Delete {
                    before,
                    reason: *reason,
                },
            };
            seq.serialize_element(&view)?;
        }
        seq.end()
    }
}

impl Serialize for Plan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        PlanView {
            format_version: self.format_version,
            backend: &self.backend,
            table: &self.table,
            generation: self.generation,
            place: &self.place,
            table_action: &self.table_action,
            settings: &self.settings,
            changes: ChangesView {
                changes: &self.changes,
                desired: &self.desired,
            },
            sources: &self.sources,
            warnings: &self.warnings,
            desired: &self.desired,
            observed_settings: &self.observed_settings,
            pending_flows: &self.pending_flows,
            made_at: self.made_at,
            observed_can_expire: self.observed_can_expire,
        }
        .serialize(serializer)
    }
}

/// A plan as written, before its creates are found in its desired state.
#[derive(Deserialize)]
#[serde(rename = "Plan")]
struct PlanWire {
    format_version: u32,
    backend: String,
    table: String,
    generation: Option<u32>,
    #[serde(default)]
    place: Option<Place>,
    table_action: TableAction,
    settings: Vec<SettingChange>,
    changes: Vec<ChangeWire>,
    #[serde(default)]
    sources: Vec<SourceChange>,
    warnings: Vec<String>,
    desired: Model,
    observed_settings: Settings,
    #[serde(default)]
    pending_flows: Vec<StaleFlows>,
    #[serde(default)]
    made_at: Option<UtcTime>,
    #[serde(default = "crate::model::yes")]
    observed_can_expire: bool,
}

impl PlanWire {
    /// The plan, each create pointing at its mapping in the desired state; an error naming the
    /// first create the desired state does not have as written.
    fn into_plan(self) -> Result<Plan, String> {
        let index: HashMap<&str, usize> = self
            .desired
            .mappings
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        let mut changes = Vec::with_capacity(self.changes.len());
        for change in self.changes {
            changes.push(match change {
                ChangeWire::Create { mapping } => match index.get(mapping.name.as_str()) {
                    Some(&i) if self.desired.mappings[i] == mapping => Change::Create { index: i },
                    _ => {
                        return Err(format!(
                            "the change to mapping `{}` does not match the desired state",
                            crate::validate::shown(&mapping.name)
                        ));
                    }
                },
                ChangeWire::Update {
                    before,
                    after,
                    fields,
                } => Change::Update {
                    before,
                    after,
                    fields,
                },
                ChangeWire::Repair { before, after } => Change::Repair { before, after },
                ChangeWire::Delete { before, reason } => Change::Delete { before, reason },
            });
        }
        Ok(Plan {
            format_version: self.format_version,
            backend: self.backend,
            table: self.table,
            generation: self.generation,
            place: self.place,
            table_action: self.table_action,
            settings: self.settings,
            changes,
            sources: self.sources,
            warnings: self.warnings,
            desired: self.desired,
            observed_settings: self.observed_settings,
            pending_flows: self.pending_flows,
            made_at: self.made_at,
            observed_can_expire: self.observed_can_expire,
        })
    }
}

impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PlanWire::deserialize(deserializer)?
            .into_plan()
            .map_err(serde::de::Error::custom)
    }
}

impl Plan {
    /// True when applying would change nothing. Warnings do not count.
    pub fn is_empty(&self) -> bool {
        !self.changes_kernel() && self.pending_flows.is_empty()
    }

    /// True when applying changes portmap's table (a cleanup of tracked connections left by an
    /// interrupted apply does not).
    pub fn changes_kernel(&self) -> bool {
        self.table_action != TableAction::Keep
            || !self.settings.is_empty()
            || !self.changes.is_empty()
            || !self.sources.is_empty()
    }

    /// Whether `other` makes the same changes as this plan (for the same desired state), whatever
    /// generation each was made at: a plan approved by a person may be carried out as `other`.
    pub fn same_changes(&self, other: &Plan) -> bool {
        self.backend == other.backend
            && self.table == other.table
            && self.table_action == other.table_action
            && self.settings == other.settings
            && self.changes == other.changes
            && self.sources == other.sources
            && self.desired == other.desired
            && self.pending_flows == other.pending_flows
            && self.observed_can_expire == other.observed_can_expire
    }

    /// Check that this plan was made for `backend` managing `table` at `place`, and return the
    /// generation it was made at (a plan without one is refused). What a backend checks before it
    /// commits; the staleness of the generation is the backend's to find out.
    pub fn binding(&self, backend: &str, table: &str, place: &Place) -> Result<u32, Refusal> {
        if self.backend != backend {
            return Err(Refusal::WrongBackend {
                planned: crate::diagnostic::shown_arg(&self.backend),
                actual: backend.to_owned(),
            });
        }
        if self.table != table {
            return Err(Refusal::WrongTable {
                planned: crate::diagnostic::shown_arg(&self.table),
                actual: table.to_owned(),
            });
        }
        if let Some(planned) = &self.place
            && planned != place
        {
            return Err(Refusal::WrongPlace {
                planned: planned.clone(),
                actual: place.clone(),
            });
        }
        self.generation.ok_or(Refusal::NoGeneration)
    }

    /// How many mappings the plan creates, changes and deletes.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for change in &self.changes {
            match change {
                Change::Create { .. } => c.create += 1,
                Change::Update { .. } => c.update += 1,
                Change::Repair { .. } => c.repair += 1,
                Change::Delete { .. } => c.delete += 1,
            }
        }
        c
    }

    /// The tracked connections that applying this plan makes stale: flows DNAT-ed by a forward that
    /// goes away or now leads elsewhere, and flows from sources an allow-list no longer admits.
    /// Forwards the plan leaves as they are keep their flows.
    pub fn stale_flows(&self) -> Vec<StaleFlows> {
        let mut out: Vec<StaleFlows> = self
            .sources
            .iter()
            .flat_map(|s| s.stale.iter().cloned())
            .collect();
        for change in &self.changes {
            match change {
                Change::Create { .. } => {}
                Change::Delete { before, .. } => {
                    out.extend(before.forwards.iter().map(|&forward| StaleFlows {
                        mapping: before.name.clone(),
                        forward,
                        unless_from: None,
                    }));
                }
                Change::Update { before, after, .. } | Change::Repair { before, after } => {
                    let kept: std::collections::HashSet<Forward> = after.forwards().into_iter().collect();
                    // A damaged mapping may have admitted anyone: its flows from sources the
                    // configuration does not admit go too.
                    let narrowed = (before.allow_from != after.allow_from || before.is_damaged())
                        && !after.allow_from.is_empty();
                    for &forward in &before.forwards {
                        if !kept.contains(&forward) {
                            out.push(StaleFlows {
                                mapping: before.name.clone(),
                                forward,
                                unless_from: None,
                            });
                        } else if narrowed {
                            out.push(StaleFlows {
                                mapping: before.name.clone(),
                                forward,
                                unless_from: Some(after.allow_from.clone()),
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// Mapping changes in a plan, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Mappings created.
    pub create: usize,
    /// Mappings changed.
    pub update: usize,
    /// Damaged mappings rebuilt.
    pub repair: usize,
    /// Mappings deleted.
    pub delete: usize,
}

/// Tracked connections made stale by a plan: those the kernel DNAT-ed through `forward` (original
/// destination port and protocol, reply from the old target), except those from `unless_from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleFlows {
    /// The mapping whose change made them stale.
    #[serde(default)]
    pub mapping: String,
    /// The forward the flows went through.
    pub forward: Forward,
    /// Sources whose flows stay (an allow-list that was narrowed); `None`: every source's flow goes.
    pub unless_from: Option<Vec<ipnet::IpNet>>,
}

/// A tracked connection as far as [`StaleFlows::covers`] needs it (the backends read it from
/// conntrack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedFlow {
    /// Whether the kernel DNAT-ed it (conntrack status `IPS_DST_NAT`).
    pub dnat: bool,
    /// IP protocol number of the original direction.
    pub proto: u8,
    /// Source address of the original direction (the client).
    pub src: IpAddr,
    /// Destination port of the original direction (the mapped port).
    pub dst_port: Option<u16>,
    /// Source address of the reply direction (who answers: the inner host).
    pub reply_src: IpAddr,
    /// Source port of the reply direction.
    pub reply_src_port: Option<u16>,
}

impl StaleFlows {
    /// Whether `flow` was DNAT-ed through this forward and is to go: same protocol and original
    /// destination port, answered by the forward's target, and not from a source that may stay.
    pub fn covers(&self, flow: &TrackedFlow) -> bool {
        let f = &self.forward;
        flow.dnat
            && flow.proto == f.transport.number()
            && flow.dst_port == Some(f.port)
            && flow.reply_src == f.to
            && flow.reply_src_port == Some(f.to_port)
            && !self
                .unless_from
                .as_ref()
                .is_some_and(|keep| keep.iter().any(|net| net.contains(&flow.src)))
    }
}

/// Compare the configuration with the kernel. Pure and total. The plan keeps a copy of `model` as
/// its desired state; [`plan_owned`] takes it instead, for a caller that does not need it after.
pub fn plan(model: &Model, observed: &Observed) -> Plan {
    plan_owned(model.clone(), observed)
}

/// [`plan()`] taking the model by value: it becomes the plan's desired state, so that a large
/// configuration is held once.
pub fn plan_owned(model: Model, observed: &Observed) -> Plan {
    let table_action = match &observed.state {
        TableState::Missing => TableAction::Create,
        TableState::Intact => TableAction::Keep,
        TableState::Damaged { reasons } => TableAction::Repair {
            reasons: reasons.clone(),
        },
    };

    let settings = if observed.state == TableState::Missing {
        Vec::new()
    } else {
        setting_changes(&observed.settings, &model.settings)
    };

    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut creates = Vec::new();

    let wanted: HashSet<&str> = model.mappings.iter().map(|m| m.name.as_str()).collect();
    let disabled: HashSet<&str> = model.disabled.iter().map(String::as_str).collect();
    let found: HashMap<&str, &ObservedMapping> =
        observed.mappings.iter().map(|o| (o.name.as_str(), o)).collect();

    for before in &observed.mappings {
        if !wanted.contains(before.name.as_str()) {
            let reason = if disabled.contains(before.name.as_str()) {
                DeleteReason::Disabled
            } else {
                DeleteReason::NotInConfig
            };
            deletes.push(Change::Delete {
                before: Box::new(uncounted(before)),
                reason,
            });
        }
    }
    let now = observed.observed_at;
    for (index, after) in model.mappings.iter().enumerate() {
        let before = found.get(after.name.as_str());
        if is_expired(after.expires, now) {
            // An expired mapping is never installed. What the kernel keeps of it after removing
            // it itself (nft: its counters; iptables: rules that match nothing) is left alone; a
            // forward it still makes (installed without that expiry) goes.
            if let Some(before) = before
                && !before.forwards.is_empty()
                && !before.is_expired(now)
            {
                deletes.push(Change::Delete {
                    before: Box::new(uncounted(before)),
                    reason: DeleteReason::Expired,
                });
            }
            continue;
        }
        match before {
            // What the kernel removed or switched off when an earlier `expires` came: the mapping
            // (given a later one, or none) is built again whole.
            Some(before) if before.is_expired(now) => updates.push(Change::Repair {
                before: Box::new(uncounted(before)),
                after: Box::new(after.clone()),
            }),
            None => creates.push(Change::Create { index }),
            Some(before) if before.is_damaged() => updates.push(Change::Repair {
                before: Box::new(uncounted(before)),
                after: Box::new(after.clone()),
            }),
            Some(before) => {
                let fields = field_changes(before, after, observed.sources.is_some());
                if !fields.is_empty() {
                    updates.push(Change::Update {
                        before: Box::new(uncounted(before)),
                        after: Box::new(after.clone()),
                        fields,
                    });
                }
            }
        }
    }
    for list in [&mut deletes, &mut updates, &mut creates] {
        list.sort_by(|a, b| a.name(&model).cmp(b.name(&model)));
    }
    let mut changes = deletes;
    changes.append(&mut updates);
    changes.append(&mut creates);
    let mut warnings = warnings(&model, &observed.environment);
    warnings.extend(
        model
            .mappings
            .iter()
            .filter(|m| is_expired(m.expires, now))
            .map(|m| {
                format!(
                    "mapping {} {}: it is not installed (remove it, or give it a later `expires`)",
                    m.name,
                    crate::time::expires_text(m.expires.unwrap_or(crate::time::MIN_EXPIRES), now)
                )
            }),
    );
    let sources = match &observed.sources {
        Some(found) if observed.state == TableState::Intact => {
            source_changes(&model, observed, found, &changes)
        }
        _ => Vec::new(),
    };

    Plan {
        format_version: PLAN_FORMAT_VERSION,
        backend: observed.backend.clone(),
        table: observed.table.clone(),
        generation: observed.generation,
        place: observed.place.clone(),
        table_action,
        settings,
        changes,
        sources,
        warnings,
        desired: model,
        observed_settings: observed.settings.clone(),
        pending_flows: observed.pending_flows.clone(),
        made_at: now,
        observed_can_expire: observed.can_expire,
    }
}

/// The source lists whose kernel objects differ from the configuration, with the flows each change
/// makes stale: those of a mapping using the list (and not changed itself: its own change clears
/// its flows) from sources the kernel admitted and the configuration no longer does.
fn source_changes(
    model: &Model,
    observed: &Observed,
    found: &std::collections::BTreeMap<String, SourceList>,
    changes: &[Change],
) -> Vec<SourceChange> {
    let changed: HashSet<&str> = changes.iter().map(|c| c.name(model)).collect();
    let kernel: HashMap<&str, &ObservedMapping> =
        observed.mappings.iter().map(|o| (o.name.as_str(), o)).collect();
    let names: std::collections::BTreeSet<&String> = model.sources.keys().chain(found.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let before = found.get(name);
        let after = model.sources.get(name);
        if before == after {
            continue;
        }
        let users: Vec<&Mapping> = model
            .mappings
            .iter()
            .filter(|m| m.allow_sources.iter().any(|n| n == name))
            .collect();
        let mut stale = Vec::new();
        for m in &users {
            if changed.contains(m.name.as_str()) {
                continue;
            }
            // Narrowed: the kernel admitted a source the configuration no longer does.
            if let Some(o) = kernel.get(m.name.as_str())
                && (o.allow_from.is_empty()
                    || o.allow_from
                        .iter()
                        .any(|b| !m.allow_from.iter().any(|a| a.contains(b))))
            {
                stale.extend(o.forwards.iter().map(|&forward| StaleFlows {
                    mapping: m.name.clone(),
                    forward,
                    unless_from: Some(m.allow_from.clone()),
                }));
            }
        }
        out.push(SourceChange {
            name: name.clone(),
            before: before.cloned(),
            after: after.cloned(),
            used_by: users.iter().map(|m| m.name.clone()).collect(),
            stale,
        });
    }
    out
}

/// A mapping as a plan records it: without its counters and active flows, which move with
/// traffic and are no part of what a plan changes (two plans made a moment apart are the same
/// plan).
fn uncounted(before: &ObservedMapping) -> ObservedMapping {
    ObservedMapping {
        counters: None,
        active_flows: None,
        ..before.clone()
    }
}

/// What stands in the way of the forwards working, in sentences naming what was found. Never blocks.
pub fn warnings(model: &Model, env: &crate::model::Environment) -> Vec<String> {
    let mut out = Vec::new();
    // Each sentence comes from the backend, with the fix in that backend's own terms.
    for chain in &env.blocking_forward_chains {
        out.push(format!("{chain} — see docs/coexistence.md"));
    }
    let has_v4 = model.mappings.iter().any(|m| m.to.is_ipv4());
    if env.ipv4_forwarding == Some(false) && has_v4 {
        out.push(
            "IPv4 forwarding is disabled (net.ipv4.ip_forward = 0): the router will not pass forwarded \
             connections; enable it with `sysctl -w net.ipv4.ip_forward=1` (and in /etc/sysctl.d)"
                .to_owned(),
        );
    }
    let v6: Vec<&str> = model
        .mappings
        .iter()
        .filter(|m| m.to.is_ipv6())
        .map(|m| m.name.as_str())
        .collect();
    let has_v6 = !v6.is_empty();
    if let Some(why) = &env.ipv6_unavailable
        && has_v6
    {
        out.push(format!(
            "{why}: portmap reads and writes IPv4 rules only here, so the IPv6 {} {} cannot be applied",
            if v6.len() == 1 { "mapping" } else { "mappings" },
            name_list(&v6)
        ));
    }
    if env.ipv6_forwarding == Some(false) && has_v6 {
        out.push(
            "IPv6 forwarding is disabled (net.ipv6.conf.all.forwarding = 0): IPv6 mappings will not pass; \
             enable it with `sysctl -w net.ipv6.conf.all.forwarding=1`"
                .to_owned(),
        );
    }
    if let Some(present) = &env.interfaces {
        let sides = [
            ("wan", &model.settings.wan_interfaces),
            ("lan", &model.settings.lan_interfaces),
        ];
        for (side, names) in sides {
            for name in names.iter().filter(|n| !present.contains(n)) {
                out.push(format!(
                    "{side} interface {name} does not exist (yet): the rules are in place and take effect when it \
                     appears"
                ));
            }
        }
    }
    out
}

/// `a, b, c` for up to four names, then `and N more`.
fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 4;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..SHOWN].join(", "), names.len() - SHOWN)
    }
}

fn setting_changes(before: &Settings, after: &Settings) -> Vec<SettingChange> {
    let mut out = Vec::new();
    let mut push = |field: &str, b: String, a: String| {
        if b != a {
            out.push(SettingChange {
                field: field.to_owned(),
                before: b,
                after: a,
            });
        }
    };
    push(
        "wan.interfaces",
        list(&before.wan_interfaces),
        list(&after.wan_interfaces),
    );
    push(
        "lan.interfaces",
        list(&before.lan_interfaces),
        list(&after.lan_interfaces),
    );
    push(
        "masquerade",
        before.masquerade.to_string(),
        after.masquerade.to_string(),
    );
    push("hairpin", before.hairpin.to_string(), after.hairpin.to_string());
    out
}

fn list<T: ToString>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Field-by-field difference between what the kernel holds for a mapping and what is wanted.
fn field_changes(before: &ObservedMapping, after: &Mapping, named_lists: bool) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let all_wanted = after.forwards();
    let all_found: Cow<'_, [Forward]> = if before.forwards.is_sorted() {
        Cow::Borrowed(&before.forwards)
    } else {
        let mut sorted = before.forwards.clone();
        sorted.sort_unstable();
        Cow::Owned(sorted)
    };
    // Forwards repeated on each listen address compare as the ports and the addresses apart.
    let split = (*all_found != *all_wanted)
        .then(|| crate::model::split_listen(&all_found))
        .flatten();
    let (found, wanted): (Cow<'_, [Forward]>, Cow<'_, [Forward]>) = match &split {
        Some((listen, plain)) => {
            if *listen != after.listen {
                out.push(FieldChange {
                    field: "listen".to_owned(),
                    before: listen_text(listen),
                    after: listen_text(&after.listen),
                });
            }
            let mut want: Vec<Forward> = all_wanted
                .iter()
                .map(|f| Forward { listen: None, ..*f })
                .collect();
            want.sort_unstable();
            want.dedup();
            (Cow::Owned(plain.clone()), Cow::Owned(want))
        }
        None => (all_found.clone(), Cow::Owned(all_wanted.clone())),
    };
    if *found != *wanted {
        let before_runs = out.len();
        let runs = fold_forwards(&found);
        let mut push = |field: &str, b: String, a: String| {
            if b != a {
                out.push(FieldChange {
                    field: field.to_owned(),
                    before: b,
                    after: a,
                });
            }
        };
        match runs.as_slice() {
            [run] => {
                push("protocol", run.protocol.to_string(), after.protocol.to_string());
                push("port", run.port.to_string(), after.port.to_string());
                push("to", run.to.to_string(), after.to.to_string());
                push("to_port", run.to_port.to_string(), after.to_port.to_string());
            }
            _ => push(
                "forwards",
                describe_runs(&runs),
                describe_runs(&fold_forwards(&wanted)),
            ),
        }
        if out.len() == before_runs {
            // Same summary, different elements (should not happen, but never hide a difference).
            out.push(FieldChange {
                field: "forwards".to_owned(),
                before: describe_forwards(&found),
                after: describe_forwards(&wanted),
            });
        }
    }
    if named_lists {
        // Lists compare by name: a change of a list's members is the list's own change.
        let written = |names: &[String], inline: &[ipnet::IpNet]| {
            let parts: Vec<String> = names
                .iter()
                .cloned()
                .chain(inline.iter().map(ToString::to_string))
                .collect();
            format!("[{}]", parts.join(", "))
        };
        let before_inline = if before.allow_sources.is_empty() {
            &before.allow_from
        } else {
            &before.allow_inline
        };
        if before.allow_sources != after.allow_sources || *before_inline != after.inline_prefixes() {
            out.push(FieldChange {
                field: "allow_from".to_owned(),
                before: written(&before.allow_sources, before_inline),
                after: written(&after.allow_sources, after.inline_prefixes()),
            });
        }
    } else if before.allow_from != after.allow_from {
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
    if before.limit != after.limit {
        out.push(FieldChange {
            field: "limit".to_owned(),
            before: limit_text(before.limit.as_ref()),
            after: limit_text(after.limit.as_ref()),
        });
    }
    if before.log != after.log {
        out.push(FieldChange {
            field: "log".to_owned(),
            before: log_text(before.log),
            after: log_text(after.log),
        });
    }
    if !same_expiry(before.expires, after.expires) {
        out.push(FieldChange {
            field: "expires".to_owned(),
            before: expires_field_text(before.expires),
            after: expires_field_text(after.expires),
        });
    }
    out
}

/// Whether two expiries are the same within [`EXPIRES_TOLERANCE_SECONDS`] (nft reports a timeout
/// as the time left, counted from a moment a little after the one apply counted from).
pub fn same_expiry(a: Option<UtcTime>, b: Option<UtcTime>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.seconds_from(b).abs() <= EXPIRES_TOLERANCE_SECONDS,
        _ => false,
    }
}

/// An expiry for a plan: `2026-12-24T00:00:00Z`, or `(never)`.
pub fn expires_field_text(expires: Option<UtcTime>) -> String {
    expires.map_or_else(|| "(never)".to_owned(), |t| t.to_string())
}

/// Listen addresses for a plan: `[198.51.100.5, 198.51.100.6]`, or `(any)`.
pub fn listen_text(listen: &[IpAddr]) -> String {
    if listen.is_empty() {
        "(any)".to_owned()
    } else {
        list(listen)
    }
}

/// A limit for a plan: `20/second burst 40`, or `(none)`.
pub fn limit_text(limit: Option<&crate::model::Limit>) -> String {
    limit.map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

/// Whether a mapping logs, for a plan: `true (group 100)` or `false`.
pub fn log_text(log: Option<u16>) -> String {
    log.map_or_else(|| "false".to_owned(), |g| format!("true (group {g})"))
}

/// A run of forwards that one configuration entry describes: consecutive external ports to
/// consecutive inner ports on one host, for one protocol or (`both`) for TCP and UDP alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForwardRun {
    /// `tcp`, `udp`, or `both` when TCP and UDP have the same run.
    pub protocol: Protocol,
    /// External ports.
    pub port: PortRange,
    /// Inner host.
    pub to: IpAddr,
    /// Inner ports (same length as `port`).
    pub to_port: PortRange,
}

impl fmt::Display for ForwardRun {
    /// `tcp 8080 → 192.168.1.66:80`, `both 6000-6002 → 192.168.1.70:7000-7002`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to {
            IpAddr::V4(a) => write!(f, "{} {} → {}:{}", self.protocol, self.port, a, self.to_port),
            IpAddr::V6(a) => write!(f, "{} {} → [{}]:{}", self.protocol, self.port, a, self.to_port),
        }
    }
}

/// Fold forwards (sorted or not) back into the fewest runs, ordered by external port then protocol.
/// Forwards that a mapping created come back as exactly one run; a table edited by hand may give
/// several (gaps, other targets, TCP and UDP on different ports).
///
/// Listen addresses are left out (see [`crate::split_listen`]): the runs say which ports go where.
pub fn fold_forwards(forwards: &[Forward]) -> Vec<ForwardRun> {
    let mut sorted: Vec<Forward> = forwards.iter().map(|f| Forward { listen: None, ..*f }).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut tcp: Vec<ForwardRun> = Vec::new();
    let mut udp: Vec<ForwardRun> = Vec::new();
    for f in &sorted {
        let (runs, protocol) = match f.transport {
            Transport::Tcp => (&mut tcp, Protocol::Tcp),
            Transport::Udp => (&mut udp, Protocol::Udp),
        };
        if let Some(last) = runs.last_mut()
            && last.to == f.to
            && last.port.end.checked_add(1) == Some(f.port)
            && last.to_port.end.checked_add(1) == Some(f.to_port)
        {
            last.port.end = f.port;
            last.to_port.end = f.to_port;
            continue;
        }
        runs.push(ForwardRun {
            protocol,
            port: PortRange::single(f.port),
            to: f.to,
            to_port: PortRange::single(f.to_port),
        });
    }
    // Runs identical for TCP and UDP become one `both` run.
    let mut out = Vec::with_capacity(tcp.len() + udp.len());
    let mut udp = udp.into_iter().peekable();
    for t in tcp {
        while let Some(u) = udp.next_if(|u| (u.port, u.to, u.to_port) < (t.port, t.to, t.to_port)) {
            out.push(u);
        }
        match udp.next_if(|u| (u.port, u.to, u.to_port) == (t.port, t.to, t.to_port)) {
            Some(_) => out.push(ForwardRun {
                protocol: Protocol::Both,
                ..t
            }),
            None => out.push(t),
        }
    }
    out.extend(udp);
    out.sort_by_key(|r| (r.port, r.protocol));
    out
}

/// Runs listed for people: `tcp 8080 → 192.168.1.66:80, tcp 8082 → 192.168.1.66:82`.
pub fn describe_runs(runs: &[ForwardRun]) -> String {
    if runs.is_empty() {
        return "(none)".to_owned();
    }
    let parts: Vec<String> = runs.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

/// A compact listing of forwards: `tcp/8080→192.168.1.66:80, udp/6000→192.168.1.70:7000`.
pub fn describe_forwards(forwards: &[Forward]) -> String {
    let parts: Vec<String> = forwards
        .iter()
        .map(|f| {
            let on = match f.listen {
                None => String::new(),
                Some(IpAddr::V4(a)) => format!("{a}:"),
                Some(IpAddr::V6(a)) => format!("[{a}]:"),
            };
            match f.to {
                IpAddr::V4(a) => format!("{}/{on}{}→{}:{}", f.transport, f.port, a, f.to_port),
                IpAddr::V6(a) => format!("{}/{on}{}→[{}]:{}", f.transport, f.port, a, f.to_port),
            }
        })
        .collect();
    parts.join(", ")
}

impl Plan {
    /// Read a plan saved as JSON (by `plan --out`: [`crate::plan_json`] or plain serde), refusing
    /// other format versions, and check it as carefully as a configuration: the desired state must
    /// validate and be canonical, and every create or update must match it.
    pub fn from_json(text: &str) -> Result<Plan, PlanFileError> {
        /// Only the version: everything else is skipped without being built.
        #[derive(Deserialize)]
        struct Header {
            format_version: Option<serde_json::Value>,
        }
        let header: Header = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => PlanFileError::NotAPlan,
            _ => PlanFileError::Json(e),
        })?;
        let Some(found) = header.format_version else {
            return Err(PlanFileError::NotAPlan);
        };
        if found.as_u64() != Some(u64::from(PLAN_FORMAT_VERSION)) {
            return Err(PlanFileError::UnsupportedVersion {
                found,
                supported: PLAN_FORMAT_VERSION,
            });
        }
        let plan: PlanWire = serde_json::from_str(text).map_err(PlanFileError::Shape)?;
        plan.check()?;
        plan.into_plan().map_err(PlanFileError::Inconsistent)
    }
}

impl PlanWire {
    /// Consistency of a plan read from outside.
    fn check(&self) -> Result<(), PlanFileError> {
        if self.generation.is_none() {
            return Err(PlanFileError::Unbound(
                "it does not say which ruleset generation it was made at",
            ));
        }
        if self.place.is_none() {
            return Err(PlanFileError::Unbound(
                "it does not say which host and network namespace it was made for",
            ));
        }
        // What portmap writes here is short and plain; anything else did not come from it.
        let plain = |text: &str, max: usize, extra: &str| {
            !text.is_empty()
                && text.len() <= max
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if !plain(&self.backend, 32, "-") {
            return Err(PlanFileError::Inconsistent(
                "its backend name is not one portmap writes".to_owned(),
            ));
        }
        if !plain(&self.table, 100, " _-") {
            return Err(PlanFileError::Inconsistent(
                "its table name is not one portmap writes".to_owned(),
            ));
        }
        if let Some(place) = &self.place
            && !plain(&place.boot_id, 64, "-")
        {
            return Err(PlanFileError::Inconsistent(
                "its boot id is not one the kernel writes".to_owned(),
            ));
        }
        let desired = &self.desired;
        let again = validate(&Config::from(desired)).map_err(PlanFileError::Invalid)?;
        if again.settings != desired.settings || again.mappings != desired.mappings {
            return Err(PlanFileError::Inconsistent(
                "the desired state is not in canonical form (was the file edited?)".to_owned(),
            ));
        }
        let wanted: HashMap<&str, &Mapping> = desired.mappings.iter().map(|m| (m.name.as_str(), m)).collect();
        for name in &desired.disabled {
            if let Some(problem) = name_problem(name) {
                return Err(PlanFileError::Inconsistent(format!(
                    "a disabled mapping's name is invalid: {problem}"
                )));
            }
            if wanted.contains_key(name.as_str()) {
                return Err(PlanFileError::Inconsistent(format!(
                    "mapping `{name}` is both enabled and disabled"
                )));
            }
        }
        for change in &self.changes {
            let mapping: &Mapping = match change {
                ChangeWire::Delete { before, .. } => {
                    if wanted.contains_key(before.name.as_str()) {
                        return Err(PlanFileError::Inconsistent(format!(
                            "it deletes mapping `{}`, which its desired state keeps",
                            crate::validate::shown(&before.name)
                        )));
                    }
                    continue;
                }
                ChangeWire::Create { mapping } => mapping,
                ChangeWire::Update { after, .. } | ChangeWire::Repair { after, .. } => after,
            };
            if wanted.get(mapping.name.as_str()) != Some(&mapping) {
                return Err(PlanFileError::Inconsistent(format!(
                    "the change to mapping `{}` does not match the desired state",
                    crate::validate::shown(&mapping.name)
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    /// The plan for people, without colour: [`crate::render_plan`] followed by
    /// [`crate::render_warnings`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::render::render_plan(self, false))?;
        f.write_str(&crate::render::render_warnings(self, false))
    }
}
