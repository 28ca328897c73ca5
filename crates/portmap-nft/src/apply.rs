//! Plan → one netlink batch. A table that is missing, damaged or changing shape is rebuilt whole
//! (`add table; delete table; add table …` in the same transaction, so it works whether or not the
//! table exists); otherwise only the delta is sent: the elements, chains and sets of the mappings that
//! change. Builds the batch only; sending it is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use portmap_core::{Change, Mapping, Model, ObservedMapping, Plan, Settings, TableAction, Transport};
use portmap_netlink::{Batch, Element, Table, udata};

use crate::element::{self, mapping_comment};
use crate::lan_side::LanSide;
use crate::layout::{self, Contents, Shape, TableId};

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

/// Build the batch that carries out `plan` (which must not be empty).
pub fn build(plan: &Plan, t: &TableId, env: &LanSide) -> Built {
    let before = &plan.observed_settings;
    let after = &plan.desired.settings;
    // A change of shape, or of the LAN side (whose addresses the table holds), rebuilds the table.
    let restructure = shape_of(before) != shape_of(after) || before.lan_interfaces != after.lan_interfaces;
    if plan.table_action != TableAction::Keep || restructure {
        return rebuild(plan, t, env);
    }
    let mut b = Builder {
        batch: Batch::new(),
        objects: 0,
        t,
        ids: Ids(layout::ALLOW_SET_ID_BASE),
    };
    b.interfaces(layout::WAN_SET, &before.wan_interfaces, &after.wan_interfaces);
    b.interfaces(layout::LAN_SET, &before.lan_interfaces, &after.lan_interfaces);
    let mut owners = Vec::new();
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
        };
        owners.push((start, b.batch.len(), what));
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
    }
}

/// Delete whatever is there and build the whole table from the desired model, in one batch.
fn rebuild(plan: &Plan, t: &TableId, env: &LanSide) -> Built {
    let contents = contents(&plan.desired, t, env);
    let mut batch = Batch::new();
    let table = table_object(t);
    batch.add_table(&table);
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
    let mut dnat = Vec::new();
    let mut guards = Vec::new();
    let mut ids = Ids(layout::ALLOW_SET_ID_BASE);
    for m in &model.mappings {
        dnat.extend(element::mapping_dnat_elements(m));
        if m.allow_from.is_empty() {
            continue;
        }
        let id = ids.next();
        sets.push(layout::allow_set_object(t, &m.name, id));
        elements.insert(
            layout::allow_set(&m.name),
            element::interval_elements(&m.allow_from),
        );
        chains.push(layout::allow_chain_object(t, &m.name));
        rules.push(layout::allow_rule(t, &m.name, id));
        guards.extend(
            m.forwards()
                .iter()
                .map(|f| element::guard_element(f.transport, f.port, &m.name)),
        );
    }
    elements.insert(layout::DNAT4.to_owned(), dnat);
    elements.insert(layout::GUARD4.to_owned(), guards);
    elements.insert(
        layout::LAN_SIDE4.to_owned(),
        element::interval_elements(&env.lan_side4),
    );
    rules.extend(layout::static_rules(t, shape));
    Contents {
        chains,
        rules,
        sets,
        elements,
    }
}

struct Builder<'a> {
    batch: Batch,
    objects: usize,
    t: &'a TableId,
    ids: Ids,
}

impl Builder<'_> {
    fn add_elements(&mut self, set: &str, set_id: u32, elements: &[Element]) {
        if !elements.is_empty() {
            self.batch
                .add_elements(self.t.family, &self.t.name, set, set_id, elements);
            self.objects += elements.len();
        }
    }

    fn del_elements(&mut self, set: &str, elements: &[Element]) {
        if !elements.is_empty() {
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

    /// Allow-list set (with its intervals), chain and rule of a mapping.
    fn add_allow_list(&mut self, name: &str, prefixes: &[ipnet::IpNet]) {
        let id = self.ids.next();
        self.batch.add_set(&layout::allow_set_object(self.t, name, id));
        self.objects += 1;
        self.add_elements(
            &layout::allow_set(name),
            id,
            &element::interval_elements(prefixes),
        );
        self.batch.add_chain(&layout::allow_chain_object(self.t, name));
        self.batch.add_rule(&layout::allow_rule(self.t, name, id));
        self.objects += 2;
    }

    /// Guards must go first, then the chain (its rule goes with it), then the set the rule used.
    fn del_allow_list(&mut self, name: &str, guard_keys: &[(Transport, u16)]) {
        let guards: Vec<Element> = guard_keys
            .iter()
            .map(|&(tr, p)| element::guard_element(tr, p, name))
            .collect();
        self.del_elements(layout::GUARD4, &guards);
        self.batch
            .del_chain(self.t.family, &self.t.name, &layout::allow_chain(name));
        self.batch
            .del_set(self.t.family, &self.t.name, &layout::allow_set(name));
        self.objects += 3;
    }

    fn create(&mut self, m: &Mapping) {
        if !m.allow_from.is_empty() {
            self.add_allow_list(&m.name, &m.allow_from);
            let guards: Vec<Element> = m
                .forwards()
                .iter()
                .map(|f| element::guard_element(f.transport, f.port, &m.name))
                .collect();
            self.add_elements(layout::GUARD4, 0, &guards);
        }
        self.add_elements(layout::DNAT4, 0, &element::mapping_dnat_elements(m));
    }

    fn delete(&mut self, before: &ObservedMapping) {
        let comment = mapping_comment(&before.name, before.description.as_deref());
        let elems: Vec<Element> = before
            .forwards
            .iter()
            .filter_map(|f| element::dnat_element(f, &comment))
            .collect();
        self.del_elements(layout::DNAT4, &elems);
        if !before.allow_from.is_empty() {
            let keys: Vec<(Transport, u16)> = before.forwards.iter().map(|f| (f.transport, f.port)).collect();
            self.del_allow_list(&before.name, &keys);
        }
    }

    fn update(&mut self, before: &ObservedMapping, after: &Mapping) {
        let old_comment = mapping_comment(&before.name, before.description.as_deref());
        let new_comment = mapping_comment(&after.name, after.description.as_deref());
        let wanted = after.forwards();
        let old: BTreeSet<_> = before.forwards.iter().copied().collect();
        let new: BTreeSet<_> = wanted.iter().copied().collect();
        let comment_changed = old_comment != new_comment;

        // DNAT elements: drop what is gone or differs, add what is new or differs. A key whose target
        // changes is deleted and re-added in the same transaction.
        let gone: Vec<Element> = before
            .forwards
            .iter()
            .filter(|f| comment_changed || !new.contains(f))
            .filter_map(|f| element::dnat_element(f, &old_comment))
            .collect();
        let added: Vec<Element> = wanted
            .iter()
            .filter(|f| comment_changed || !old.contains(f))
            .filter_map(|f| element::dnat_element(f, &new_comment))
            .collect();

        let old_keys: BTreeSet<(Transport, u16)> =
            before.forwards.iter().map(|f| (f.transport, f.port)).collect();
        let new_keys: BTreeSet<(Transport, u16)> = wanted.iter().map(|f| (f.transport, f.port)).collect();
        match (before.allow_from.is_empty(), after.allow_from.is_empty()) {
            (true, true) => {}
            (true, false) => {
                self.add_allow_list(&after.name, &after.allow_from);
                let guards: Vec<Element> = new_keys
                    .iter()
                    .map(|&(tr, p)| element::guard_element(tr, p, &after.name))
                    .collect();
                self.add_elements(layout::GUARD4, 0, &guards);
            }
            (false, true) => {
                let keys: Vec<_> = old_keys.iter().copied().collect();
                self.del_allow_list(&before.name, &keys);
            }
            (false, false) => {
                if before.allow_from != after.allow_from {
                    let set = layout::allow_set(&after.name);
                    self.del_elements(&set, &element::interval_elements(&before.allow_from));
                    self.add_elements(&set, 0, &element::interval_elements(&after.allow_from));
                }
                let gone_guards: Vec<Element> = old_keys
                    .difference(&new_keys)
                    .map(|&(tr, p)| element::guard_element(tr, p, &after.name))
                    .collect();
                let new_guards: Vec<Element> = new_keys
                    .difference(&old_keys)
                    .map(|&(tr, p)| element::guard_element(tr, p, &after.name))
                    .collect();
                self.del_elements(layout::GUARD4, &gone_guards);
                self.add_elements(layout::GUARD4, 0, &new_guards);
            }
        }
        self.del_elements(layout::DNAT4, &gone);
        self.add_elements(layout::DNAT4, 0, &added);
    }
}
