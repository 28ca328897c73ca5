//! Plan → one netlink batch. A table that is missing, damaged or changing shape is rebuilt whole
//! (`add table` by name only, `delete table; add table …` in the same transaction, so it works
//! whether or not the table exists); otherwise only the delta is sent: the elements, chains and
//! sets of the mappings that change. A mapping's elements live in the maps of its family
//! (`dnat4`/`guard4` or `dnat6`/`guard6`); a mapping whose target changes family moves between
//! them, and its allow-list set is recreated with the other address type. Builds the batch only;
//! sending it is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use portmap_core::{
    Change, Forward, Mapping, Model, ObservedMapping, Plan, Settings, StaleFlows, TableAction, Transport,
};
use portmap_netlink::{Batch, Chain, Element, Rule, Set, Table, udata};

use crate::element::{self, mapping_comment};
use crate::lan_side::LanSide;
use crate::layout::{self, Contents, IpFamily, Shape, TableId};
use crate::observe::forward_keys;

/// A batch and how many kernel objects it touches.
#[derive(Debug)]
pub struct Built {
    /// The batch to send.
    pub batch: Batch,
    /// Tables, chains, rules, sets and elements added or deleted.
    pub objects: usize,
    /// Whether the table is rebuilt whole.
    pub rebuilt: bool,
    /// Which messages of the batch carry which change, for naming the change a kernel error is
    /// about: (first message index, end index exclusive, e.g. "creating mapping web").
    pub owners: Vec<(usize, usize, String)>,
}

impl Built {
    /// The change that message `index` of the batch belongs to, if it belongs to one mapping.
    pub fn owner(&self, index: usize) -> Option<&str> {
        self.owners
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&index))
            .map(|(_, _, what)| what.as_str())
    }
}

/// Hands out batch-local set ids for per-mapping allow-list sets.
struct Ids(u32);

impl Ids {
    fn next(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

/// The stale-set elements recording `flows`, by set, leaving out keys in `already`.
fn stale_records(flows: &[StaleFlows], already: &[StaleFlows]) -> BTreeMap<&'static str, Vec<Element>> {
    let known: BTreeSet<Vec<u8>> = already.iter().map(|f| element::stale_element(f).key).collect();
    let mut out: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for f in flows {
        let e = element::stale_element(f);
        if !known.contains(&e.key) && seen.insert(e.key.clone()) {
            out.entry(IpFamily::of(f.forward.to).stale_set())
                .or_default()
                .push(e);
        }
    }
    out
}

/// Build the batch that carries out `plan` (which must change the kernel) and records `record`,
/// the tracked connections the caller removes after it, as pending cleanups.
pub fn build(plan: &Plan, t: &TableId, env: &LanSide, record: &[StaleFlows]) -> Built {
    build_with_flags(plan, t, env, record, 0)
}

/// [`build`], creating the table (when it is rebuilt) with `table_flags` (`NFT_TABLE_F_*`: owner
/// and persist for a table the sending socket is to own).
pub fn build_with_flags(
    plan: &Plan,
    t: &TableId,
    env: &LanSide,
    record: &[StaleFlows],
    table_flags: u32,
) -> Built {
    let before = &plan.observed_settings;
    let after = &plan.desired.settings;
    // A change of shape, or of the LAN side (whose addresses the table holds), rebuilds the table.
    let restructure = shape_of(before) != shape_of(after) || before.lan_interfaces != after.lan_interfaces;
    if plan.table_action != TableAction::Keep || restructure {
        return rebuild(plan, t, env, record, table_flags);
    }
    let mut b = Builder {
        batch: Batch::new(),
        objects: 0,
        t,
        ids: Ids(layout::ALLOW_SET_ID_BASE),
        phase: Phase::Delete,
    };
    let mut owners = Vec::new();
    for phase in [Phase::Delete, Phase::Add] {
        b.phase = phase;
        if phase == Phase::Add {
            for (set, elements) in stale_records(record, &plan.pending_flows) {
                b.add_elements(set, 0, &elements);
            }
        }
        b.interfaces(layout::WAN_SET, &before.wan_interfaces, &after.wan_interfaces);
        b.interfaces(layout::LAN_SET, &before.lan_interfaces, &after.lan_interfaces);
        for change in &plan.changes {
            let start = b.batch.len();
            let what = match change {
                Change::Create { mapping } => {
                    b.create(mapping);
                    format!("creating mapping {}", mapping.name)
                }
                Change::Delete { before, .. } => {
                    b.delete(before);
                    format!("deleting mapping {}", before.name)
                }
                Change::Update { before, after, .. } => {
                    b.update(before, after);
                    format!("changing mapping {}", after.name)
                }
                Change::Repair { before, after } => {
                    b.delete(before);
                    b.create(after);
                    format!("repairing mapping {}", after.name)
                }
            };
            if b.batch.len() > start {
                owners.push((start, b.batch.len(), what));
            }
        }
    }
    Built {
        batch: b.batch,
        objects: b.objects,
        rebuilt: false,
        owners,
    }
}

/// The structural shape the settings ask for.
pub fn shape_of(settings: &Settings) -> Shape {
    Shape {
        masquerade: settings.masquerade,
        hairpin: settings.hairpin,
    }
}

/// The table object portmap writes.
pub fn table_object(t: &TableId) -> Table {
    Table {
        family: t.family,
        name: t.name.clone(),
        flags: 0,
        userdata: Some(udata::comment(layout::TABLE_COMMENT)),
        handle: None,
        owner: None,
    }
}

/// Delete whatever is there and build the whole table from the desired model, in one batch, with
/// the pending conntrack cleanups it held and the new ones.
fn rebuild(plan: &Plan, t: &TableId, env: &LanSide, record: &[StaleFlows], table_flags: u32) -> Built {
    let mut contents = contents(&plan.desired, t, env);
    let all: Vec<StaleFlows> = plan.pending_flows.iter().chain(record).cloned().collect();
    for (set, elements) in stale_records(&all, &[]) {
        contents.elements.insert(set.to_owned(), elements);
    }
    let mut batch = Batch::new();
    let table = Table {
        flags: table_flags,
        ..table_object(t)
    };
    // The first message only makes sure there is a table to delete; it must not set flags, which
    // the kernel refuses to change on a table that has `owner` or `persist`.
    batch.ensure_table(t.family, &t.name);
    batch.del_table(t.family, &t.name);
    batch.add_table(&table);
    let mut objects = 1;
    // Sets first (rules and guard elements refer to them), then chains (guard elements jump to them),
    // then elements, then rules.
    for set in &contents.sets {
        batch.add_set(set);
        objects += 1;
    }
    for chain in &contents.chains {
        batch.add_chain(chain);
        objects += 1;
    }
    for set in &contents.sets {
        if let Some(elements) = contents.elements.get(&set.name).filter(|e| !e.is_empty()) {
            batch.add_elements(t.family, &t.name, &set.name, set.id, elements);
            objects += elements.len();
        }
    }
    for rule in &contents.rules {
        batch.add_rule(rule);
        objects += 1;
    }
    Built {
        batch,
        objects,
        rebuilt: true,
        owners: Vec::new(),
    }
}

/// Everything the table holds for `model`: what a rebuild sends and what `observe` should find.
pub fn contents(model: &Model, t: &TableId, env: &LanSide) -> Contents {
    let shape = shape_of(&model.settings);
    let mut sets = layout::static_sets(t);
    let mut chains = layout::static_chains(t, shape);
    let mut rules = Vec::new();
    let mut elements: BTreeMap<String, Vec<Element>> = BTreeMap::new();
    let ifnames = |list: &[String]| list.iter().map(|i| layout::ifname_element(i)).collect::<Vec<_>>();
    elements.insert(
        layout::WAN_SET.to_owned(),
        ifnames(&model.settings.wan_interfaces),
    );
    elements.insert(
        layout::LAN_SET.to_owned(),
        ifnames(&model.settings.lan_interfaces),
    );
    for family in IpFamily::ALL {
        elements.insert(family.dnat_map().to_owned(), Vec::new());
        elements.insert(family.guard_map().to_owned(), Vec::new());
        elements.insert(
            family.lan_side_set().to_owned(),
            element::interval_elements(env.prefixes(family)),
        );
    }
    let mut ids = Ids(layout::ALLOW_SET_ID_BASE);
    for m in &model.mappings {
        let objects = MappingObjects::of(t, m, &mut ids);
        let mut add = |set: &str, new: Vec<Element>| {
            elements.entry(set.to_owned()).or_default().extend(new);
        };
        add(objects.dnat_map, objects.dnat);
        if let Some(list) = objects.allow {
            add(list.guard_map, list.guards);
            elements.insert(list.set.name.clone(), list.intervals);
            sets.push(list.set);
            chains.push(list.chain);
            rules.push(list.rule);
        }
    }
    rules.extend(layout::static_rules(t, shape));
    Contents {
        table_flags: 0,
        chains,
        rules,
        sets,
        elements,
    }
}

/// The kernel objects of one mapping, decided in one place for a rebuild and for a delta.
struct MappingObjects {
    /// The DNAT map of the mapping's family, and its elements there.
    dnat_map: &'static str,
    dnat: Vec<Element>,
    /// The allow-list, for a mapping that has one.
    allow: Option<AllowList>,
}

/// A mapping's allow-list: its interval set (created with a batch-local id), chain and rule, and
/// the guard elements that send its ports to the chain.
struct AllowList {
    set: Set,
    intervals: Vec<Element>,
    chain: Chain,
    rule: Rule,
    guard_map: &'static str,
    guards: Vec<Element>,
}

impl MappingObjects {
    fn of(t: &TableId, m: &Mapping, ids: &mut Ids) -> Self {
        let family = IpFamily::of(m.to);
        let allow = (!m.allow_from.is_empty()).then(|| {
            AllowList::of(
                t,
                &m.name,
                family,
                &m.allow_from,
                &forward_keys(&m.forwards()),
                ids,
            )
        });
        MappingObjects {
            dnat_map: family.dnat_map(),
            dnat: element::mapping_dnat_elements(m),
            allow,
        }
    }
}

impl AllowList {
    fn of(
        t: &TableId,
        name: &str,
        family: IpFamily,
        prefixes: &[IpNet],
        keys: &[(Transport, u16)],
        ids: &mut Ids,
    ) -> Self {
        let id = ids.next();
        AllowList {
            set: layout::allow_set_object(t, name, family, id),
            intervals: element::interval_elements(prefixes),
            chain: layout::allow_chain_object(t, name),
            rule: layout::allow_rule(t, name, family, id),
            guard_map: family.guard_map(),
            guards: guard_elements(name, keys),
        }
    }
}

/// Which half of a delta batch is being written: every deletion of every change goes before any
/// addition, so that a key one mapping gives up and another takes (a port moved between mappings)
/// is free again when it is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Delete,
    Add,
}

struct Builder<'a> {
    batch: Batch,
    objects: usize,
    t: &'a TableId,
    ids: Ids,
    phase: Phase,
}

impl Builder<'_> {
    fn add_elements(&mut self, set: &str, set_id: u32, elements: &[Element]) {
        if self.phase == Phase::Add && !elements.is_empty() {
            self.batch
                .add_elements(self.t.family, &self.t.name, set, set_id, elements);
            self.objects += elements.len();
        }
    }

    fn del_elements(&mut self, set: &str, elements: &[Element]) {
        if self.phase == Phase::Delete && !elements.is_empty() {
            self.batch
                .del_elements(self.t.family, &self.t.name, set, elements);
            self.objects += elements.len();
        }
    }

    fn interfaces(&mut self, set: &str, before: &[String], after: &[String]) {
        let gone: Vec<Element> = before
            .iter()
            .filter(|i| !after.contains(i))
            .map(|i| layout::ifname_element(i))
            .collect();
        let new: Vec<Element> = after
            .iter()
            .filter(|i| !before.contains(i))
            .map(|i| layout::ifname_element(i))
            .collect();
        self.del_elements(set, &gone);
        self.add_elements(set, 0, &new);
    }

    /// Add (or delete) the DNAT elements of `forwards`, each in the map of its family.
    fn dnat_elements(&mut self, add: bool, forwards: &[Forward], comment: &str) {
        for family in IpFamily::ALL {
            let elements: Vec<Element> = forwards
                .iter()
                .filter(|f| IpFamily::of(f.to) == family)
                .map(|f| element::dnat_element(f, comment))
                .collect();
            if add {
                self.add_elements(family.dnat_map(), 0, &elements);
            } else {
                self.del_elements(family.dnat_map(), &elements);
            }
        }
    }

    /// Allow-list set (with its intervals), chain and rule of a mapping, and its guard elements.
    fn add_allow_list(
        &mut self,
        name: &str,
        family: IpFamily,
        prefixes: &[IpNet],
        keys: &[(Transport, u16)],
    ) {
        let list = AllowList::of(self.t, name, family, prefixes, keys, &mut self.ids);
        self.send_allow_list(&list);
    }

    fn send_allow_list(&mut self, list: &AllowList) {
        if self.phase != Phase::Add {
            return;
        }
        self.batch.add_set(&list.set);
        self.add_elements(&list.set.name, list.set.id, &list.intervals);
        self.batch.add_chain(&list.chain);
        self.batch.add_rule(&list.rule);
        self.objects += 3;
        self.add_elements(list.guard_map, 0, &list.guards);
    }

    /// Delete chain and set (in that order: the chain's rule uses the set) when writing deletions.
    fn del_chain_and_set(&mut self, chain: Option<&str>, set: Option<&str>) {
        if self.phase != Phase::Delete {
            return;
        }
        if let Some(chain) = chain {
            self.batch.del_chain(self.t.family, &self.t.name, chain);
            self.objects += 1;
        }
        if let Some(set) = set {
            self.batch.del_set(self.t.family, &self.t.name, set);
            self.objects += 1;
        }
    }

    /// Guards must go first, then the chain (its rule goes with it), then the set the rule used.
    fn del_allow_list(&mut self, name: &str, family: IpFamily, keys: &[(Transport, u16)]) {
        self.del_elements(family.guard_map(), &guard_elements(name, keys));
        self.del_chain_and_set(Some(&layout::allow_chain(name)), Some(&layout::allow_set(name)));
    }

    fn create(&mut self, m: &Mapping) {
        let objects = MappingObjects::of(self.t, m, &mut self.ids);
        if let Some(list) = objects.allow {
            self.send_allow_list(&list);
        }
        self.add_elements(objects.dnat_map, 0, &objects.dnat);
    }

    fn delete(&mut self, before: &ObservedMapping) {
        let comment = mapping_comment(&before.name, before.description.as_deref());
        self.dnat_elements(false, &before.forwards, &comment);
        if before.is_damaged() {
            self.del_found(before);
        } else if !before.allow_from.is_empty() {
            self.del_allow_list(
                &before.name,
                observed_family(before),
                &forward_keys(&before.forwards),
            );
        }
    }

    /// Delete exactly the allow-list objects `observe` found for a damaged mapping: guard elements
    /// first (they jump to the chain), then the chain (with whatever rules it holds), then the set.
    /// Only names of this mapping's own objects are honoured.
    fn del_found(&mut self, before: &ObservedMapping) {
        let chain = layout::allow_chain(&before.name);
        let set = layout::allow_set(&before.name);
        let mut guards: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
        let (mut del_chain, mut del_set) = (false, false);
        for object in &before.objects {
            match object.split(' ').collect::<Vec<_>>().as_slice() {
                ["chain", name] if *name == chain => del_chain = true,
                ["set", name] if *name == set => del_set = true,
                [map, transport, port] => {
                    let Some(family) = IpFamily::ALL.into_iter().find(|f| f.guard_map() == *map) else {
                        continue;
                    };
                    let transport = match *transport {
                        "tcp" => Transport::Tcp,
                        "udp" => Transport::Udp,
                        _ => continue,
                    };
                    if let Ok(port) = port.parse() {
                        guards
                            .entry(family.guard_map())
                            .or_default()
                            .push(element::guard_element(transport, port, &before.name));
                    }
                }
                _ => {}
            }
        }
        for (map, elements) in &guards {
            self.del_elements(map, elements);
        }
        self.del_chain_and_set(
            del_chain.then_some(chain.as_str()),
            del_set.then_some(set.as_str()),
        );
    }

    fn update(&mut self, before: &ObservedMapping, after: &Mapping) {
        let old_comment = mapping_comment(&before.name, before.description.as_deref());
        let new_comment = mapping_comment(&after.name, after.description.as_deref());
        let wanted = after.forwards();
        let old: BTreeSet<_> = before.forwards.iter().copied().collect();
        let new: BTreeSet<_> = wanted.iter().copied().collect();
        let comment_changed = old_comment != new_comment;
        let (old_family, new_family) = (observed_family(before), IpFamily::of(after.to));

        // DNAT elements: drop what is gone or differs, add what is new or differs. A key whose target
        // changes is deleted and re-added in the same transaction (moving between the maps when the
        // target changes family).
        let gone: Vec<Forward> = before
            .forwards
            .iter()
            .filter(|f| comment_changed || !new.contains(f))
            .copied()
            .collect();
        let added: Vec<Forward> = wanted
            .iter()
            .filter(|f| comment_changed || !old.contains(f))
            .copied()
            .collect();

        let old_keys: BTreeSet<(Transport, u16)> = forward_keys(&before.forwards).into_iter().collect();
        let new_keys: BTreeSet<(Transport, u16)> = forward_keys(&wanted).into_iter().collect();
        let had_list = !before.allow_from.is_empty();
        let has_list = !after.allow_from.is_empty();
        if had_list && has_list && old_family == new_family {
            if before.allow_from != after.allow_from {
                let set = layout::allow_set(&after.name);
                self.del_elements(&set, &element::interval_elements(&before.allow_from));
                self.add_elements(&set, 0, &element::interval_elements(&after.allow_from));
            }
            let guard_map = new_family.guard_map();
            let gone_guards: Vec<_> = old_keys.difference(&new_keys).copied().collect();
            let new_guards: Vec<_> = new_keys.difference(&old_keys).copied().collect();
            self.del_elements(guard_map, &guard_elements(&after.name, &gone_guards));
            self.add_elements(guard_map, 0, &guard_elements(&after.name, &new_guards));
        } else {
            // Gained, lost, or changed family (the set's address type changes): the old list goes
            // and the new one comes, in the same transaction.
            if had_list {
                let keys: Vec<_> = old_keys.iter().copied().collect();
                self.del_allow_list(&before.name, old_family, &keys);
            }
            if has_list {
                let keys: Vec<_> = new_keys.iter().copied().collect();
                self.add_allow_list(&after.name, new_family, &after.allow_from, &keys);
            }
        }
        self.dnat_elements(false, &gone, &old_comment);
        self.dnat_elements(true, &added, &new_comment);
    }
}

/// The guard elements sending `keys` to `mapping`'s allow-list chain.
fn guard_elements(mapping: &str, keys: &[(Transport, u16)]) -> Vec<Element> {
    keys.iter()
        .map(|&(transport, port)| element::guard_element(transport, port, mapping))
        .collect()
}

/// The family of a mapping read back from the kernel: that of its forwards (`observe` reports a
/// mapping with forwards of both families as damage, which rebuilds the table instead).
fn observed_family(mapping: &ObservedMapping) -> IpFamily {
    mapping
        .forwards
        .first()
        .map_or(IpFamily::V4, |f| IpFamily::of(f.to))
}
