//! Plan → one netlink batch. A table that is missing, damaged or changing shape is rebuilt whole
//! (`add table` by name only, `delete table; add table …` in the same transaction, so it works
//! whether or not the table exists); otherwise only the delta is sent: the elements, chains and
//! sets of the mappings that change. A mapping's elements live in the maps of its family
//! (`dnat4`/`guard4` or `dnat6`/`guard6`); a mapping whose target changes family moves between
//! them, and its allow-list set is recreated with the other address type. Builds the batch only;
//! sending it is the caller's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use portmap_core::{
    Change, Forward, Mapping, Model, ObservedMapping, Plan, Settings, StaleFlows, TableAction,
};
use portmap_netlink::{Batch, Chain, Element, Object, Rule, Set, Table, object_type, udata};

use crate::element::{self, Key, mapping_comment};
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

/// Counter values to start counter objects from, by object name: what the counters held right
/// before a rebuild or a repair deletes and creates them again, so that they go on counting.
pub type Presets = HashMap<String, (u64, u64)>;

/// Whether carrying out `plan` rebuilds the table (then every counter is created again).
pub fn rebuilds(plan: &Plan) -> bool {
    let before = &plan.observed_settings;
    let after = &plan.desired.settings;
    // A change of shape, or of the LAN side (whose addresses the table holds), rebuilds the table.
    let restructure = shape_of(before) != shape_of(after) || before.lan_interfaces != after.lan_interfaces;
    // So does the first expiring mapping in a table whose maps were made without timeouts.
    let retime = layout::needs_timeouts(&plan.desired) && !plan.observed_can_expire;
    plan.table_action != TableAction::Keep || restructure || retime
}

/// Whether carrying out `plan` creates counters that exist now again (a rebuild or a repair), so
/// that the caller should read their values first ([`Presets`]).
pub fn recreates_counters(plan: &Plan) -> bool {
    rebuilds(plan)
        || plan.changes.iter().any(|c| match c {
            Change::Repair { .. } => true,
            Change::Update { fields, .. } => retimes(fields),
            _ => false,
        })
}

/// Whether an update changes the mapping's expiry.
fn retimes(fields: &[portmap_core::FieldChange]) -> bool {
    fields.iter().any(|f| f.field == "expires")
}

/// Build the batch that carries out `plan` (which must change the kernel) and records `record`,
/// the tracked connections the caller removes after it, as pending cleanups. Counters created
/// again start from `presets`.
pub fn build(plan: &Plan, t: &TableId, env: &LanSide, record: &[StaleFlows], presets: &Presets) -> Built {
    build_with_flags(plan, t, env, record, presets, 0)
}

/// [`build`], creating the table (when it is rebuilt) with `table_flags` (`NFT_TABLE_F_*`: owner
/// and persist for a table the sending socket is to own).
pub fn build_with_flags(
    plan: &Plan,
    t: &TableId,
    env: &LanSide,
    record: &[StaleFlows],
    presets: &Presets,
    table_flags: u32,
) -> Built {
    let before = &plan.observed_settings;
    let after = &plan.desired.settings;
    if rebuilds(plan) {
        return rebuild(plan, t, env, record, presets, table_flags);
    }
    let mut b = Builder {
        batch: Batch::new(),
        objects: 0,
        t,
        ids: Ids(layout::ALLOW_SET_ID_BASE),
        phase: Phase::Delete,
        presets,
        timeout: None,
    };
    let now = layout::now_ms();
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
        // New lists' sets before the chains that will refer to them; deleted lists' sets after
        // the chains that referred to them.
        if phase == Phase::Add {
            b.sources(&plan.sources, &mut owners);
        }
        for change in &plan.changes {
            let start = b.batch.len();
            b.timeout = change
                .mapping(&plan.desired)
                .and_then(|m| layout::timeout_ms(m.expires, now));
            let what = match change {
                Change::Create { .. } => {
                    let Some(mapping) = change.mapping(&plan.desired) else {
                        continue;
                    };
                    b.create(mapping, &BTreeSet::new());
                    format!("creating mapping {}", mapping.name)
                }
                Change::Delete { before, .. } => {
                    b.delete(before);
                    format!("deleting mapping {}", before.name)
                }
                // A new expiry is a new timeout on every element, which the kernel cannot change in
                // place: the mapping is deleted and created again (its counters kept, see
                // `recreates_counters`).
                Change::Update {
                    before,
                    after,
                    fields,
                } if retimes(fields) => {
                    b.delete(before);
                    b.create(after, &BTreeSet::new());
                    format!("changing mapping {}", after.name)
                }
                Change::Update { before, after, .. } => {
                    b.update(before, after);
                    format!("changing mapping {}", after.name)
                }
                Change::Repair { before, after } => {
                    b.repair(before, after);
                    format!("repairing mapping {}", after.name)
                }
            };
            if b.batch.len() > start {
                owners.push((start, b.batch.len(), what));
            }
        }
        if phase == Phase::Delete {
            b.sources(&plan.sources, &mut owners);
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
///
/// The table is encoded as [`generate`] makes it, mapping by mapping: the counters and every
/// set's elements go straight into batches of their own (one per set), which are then placed in
/// the order the transaction needs. No element or counter is held as a value beyond its mapping:
/// at 50,000 mappings they were some 45 and 13 MB, against the 18 MB batch they become.
fn rebuild(
    plan: &Plan,
    t: &TableId,
    env: &LanSide,
    record: &[StaleFlows],
    presets: &Presets,
    table_flags: u32,
) -> Built {
    let mut enc = Encoder {
        t,
        presets,
        sets: Vec::new(),
        chains: Vec::new(),
        rules: Vec::new(),
        objects: Batch::new(),
        object_count: 0,
        elements: HashMap::new(),
        element_count: 0,
    };
    generate(&plan.desired, t, env, &mut enc);
    let all: Vec<StaleFlows> = plan.pending_flows.iter().chain(record).cloned().collect();
    for (set, elements) in stale_records(&all, &[]) {
        enc.elements(set, elements);
    }
    let Encoder {
        sets,
        chains,
        rules,
        objects: object_batch,
        object_count,
        mut elements,
        element_count,
        ..
    } = enc;
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
    let mut objects = 1 + object_count + element_count;
    // Sets first (rules and guard elements refer to them), then the objects (object-map elements
    // name them), then chains (guard and log elements jump to them), then elements, then rules.
    for set in &sets {
        batch.add_set(set);
        objects += 1;
    }
    batch.append(object_batch);
    for chain in &chains {
        batch.add_chain(chain);
        objects += 1;
    }
    for set in &sets {
        if let Some((_, encoded)) = elements.remove(&set.name) {
            batch.append(encoded);
        }
    }
    for rule in &rules {
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

/// Where [`generate`] puts what the table holds, in the table's order within each kind.
trait Sink {
    /// A set or map (before any of its elements).
    fn set(&mut self, set: Set);
    /// A chain.
    fn chain(&mut self, chain: Chain);
    /// A rule (in chain order).
    fn rule(&mut self, rule: Rule);
    /// A counter or limit.
    fn object(&mut self, object: Object);
    /// Elements of `set`, after those given for it before (none: the set is there, empty).
    fn elements(&mut self, set: &str, elements: Vec<Element>);
}

/// [`Contents`] collected from [`generate`].
impl Sink for Contents {
    fn set(&mut self, set: Set) {
        self.sets.push(set);
    }

    fn chain(&mut self, chain: Chain) {
        self.chains.push(chain);
    }

    fn rule(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    fn object(&mut self, object: Object) {
        self.objects.push(object);
    }

    fn elements(&mut self, set: &str, elements: Vec<Element>) {
        match self.elements.get_mut(set) {
            Some(list) => list.extend(elements),
            None => {
                self.elements.insert(set.to_owned(), elements);
            }
        }
    }
}

/// A rebuild's batch in the making: the few sets, chains and rules as values, the counters and
/// each set's elements encoded as they come (elements of a set not created are left out).
struct Encoder<'a> {
    t: &'a TableId,
    /// Counter values to start from.
    presets: &'a Presets,
    sets: Vec<Set>,
    chains: Vec<Chain>,
    rules: Vec<Rule>,
    objects: Batch,
    object_count: usize,
    /// Each set's batch-local id and its elements' messages, by set name.
    elements: HashMap<String, (u32, Batch)>,
    element_count: usize,
}

impl Sink for Encoder<'_> {
    fn set(&mut self, set: Set) {
        self.elements.insert(set.name.clone(), (set.id, Batch::new()));
        self.sets.push(set);
    }

    fn chain(&mut self, chain: Chain) {
        self.chains.push(chain);
    }

    fn rule(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    fn object(&mut self, mut object: Object) {
        if let (Some(&(p, b)), portmap_netlink::ObjectKind::Counter { packets, bytes }) =
            (self.presets.get(&object.name), &mut object.kind)
        {
            (*packets, *bytes) = (p, b);
        }
        self.objects.add_object(&object);
        self.object_count += 1;
    }

    fn elements(&mut self, set: &str, elements: Vec<Element>) {
        let Some((id, batch)) = self.elements.get_mut(set) else {
            return;
        };
        for e in &elements {
            batch.add_element(self.t.family, &self.t.name, set, *id, e);
        }
        self.element_count += elements.len();
    }
}

/// Everything the table holds for `model`: what a rebuild sends and what `observe` should find.
pub fn contents(model: &Model, t: &TableId, env: &LanSide) -> Contents {
    let mut contents = Contents::default();
    contents.read_at_ms = Some(generate(model, t, env, &mut contents));
    contents
}

/// Make everything the table holds for `model`, into `sink`; returns when (milliseconds since the
/// Unix epoch) the elements' timeouts count from.
fn generate(model: &Model, t: &TableId, env: &LanSide, sink: &mut impl Sink) -> u64 {
    let shape = shape_of(&model.settings);
    for set in layout::static_sets(t, layout::needs_timeouts(model)) {
        sink.set(set);
    }
    for chain in layout::static_chains(t, shape) {
        sink.chain(chain);
    }
    let ifnames = |list: &[String]| list.iter().map(|i| layout::ifname_element(i)).collect::<Vec<_>>();
    sink.elements(layout::WAN_SET, ifnames(&model.settings.wan_interfaces));
    sink.elements(layout::LAN_SET, ifnames(&model.settings.lan_interfaces));
    for family in IpFamily::ALL {
        for map in [
            family.dnat_map(),
            family.guard_map(),
            family.conn_map(),
            family.traffic_map(),
            family.limit_map(),
            family.log_map(),
        ] {
            sink.elements(map, Vec::new());
            sink.elements(layout::addressed(map), Vec::new());
        }
        sink.elements(
            family.lan_side_set(),
            element::interval_elements(env.prefixes(family)),
        );
    }
    let mut ids = Ids(layout::ALLOW_SET_ID_BASE);
    // Each named list's sets, before the allow-list chains whose rules refer to them.
    for (name, list) in &model.sources {
        for family in IpFamily::ALL {
            let set = layout::source_set_object(t, name, family, ids.next());
            let set_name = set.name.clone();
            sink.set(set);
            sink.elements(
                &set_name,
                element::interval_elements(list.of_family(family == IpFamily::V6)),
            );
        }
    }
    let mut log_rules = Vec::new();
    let now = layout::now_ms();
    // An expired mapping is never installed: a table built whole has no trace of it.
    for m in model
        .mappings
        .iter()
        .filter(|m| layout::timeout_ms(m.expires, now).is_none_or(|ms| ms > 1))
    {
        let mo = MappingObjects::of(t, m, &mut ids);
        // Every element the mapping owns expires at the same moment.
        let timeout = layout::timeout_ms(m.expires, now);
        let add = |sink: &mut _, groups: Groups| {
            for (set, new) in timed(groups, timeout) {
                Sink::elements(sink, set, new);
            }
        };
        add(sink, mo.dnat);
        let family = mo.family;
        add(sink, mo.extras.conn_elements(family, &mo.keys));
        add(sink, mo.extras.traffic_elements(family, &mo.keys));
        if mo.extras.limit.is_some() {
            add(sink, mo.extras.limit_elements(family, &mo.keys));
        }
        if mo.extras.log.is_some() {
            add(sink, mo.extras.log_elements(family, &mo.keys));
        }
        if let Some(list) = mo.allow {
            add(sink, list.guards);
            let set_name = list.set.name.clone();
            sink.set(list.set);
            sink.elements(&set_name, list.intervals);
            sink.chain(list.chain);
            for rule in list.rules {
                sink.rule(rule);
            }
        }
        let Extras {
            counters, limit, log, ..
        } = mo.extras;
        for object in counters.into_iter().chain(limit) {
            sink.object(object);
        }
        if let Some((chain, rule)) = log {
            sink.chain(chain);
            log_rules.push(rule);
        }
    }
    for rule in log_rules.into_iter().chain(layout::static_rules(t, shape)) {
        sink.rule(rule);
    }
    now
}

/// `groups` with every element given `timeout` (milliseconds; `None`: none).
fn timed(mut groups: Groups, timeout: Option<u64>) -> Groups {
    if timeout.is_some() {
        for (_, list) in &mut groups {
            for e in list {
                e.timeout = timeout;
            }
        }
    }
    groups
}

/// A mapping's counters, limit and log chain, and the object-map and log-map elements that
/// select them for its ports.
struct Extras {
    name: String,
    /// The connection and the traffic counter.
    counters: [Object; 2],
    limit: Option<Object>,
    log: Option<(Chain, Rule)>,
}

impl Extras {
    fn of(
        t: &TableId,
        name: &str,
        limit: Option<&portmap_core::Limit>,
        log: Option<u16>,
        expires: Option<portmap_core::UtcTime>,
    ) -> Self {
        let commented = |object: Object| Object {
            userdata: expires.map(|t| udata::comment(&layout::expires_comment(t))),
            ..object
        };
        Extras {
            name: name.to_owned(),
            counters: [
                commented(layout::counter_object(t, layout::conn_counter(name), 0, 0)),
                commented(layout::counter_object(t, layout::traffic_counter(name), 0, 0)),
            ],
            limit: limit.map(|l| layout::limit_object_of(t, name, l)),
            log: log.map(|group| layout::log_chain_object(t, name, group)),
        }
    }

    fn conn_elements(&self, family: IpFamily, keys: &[Key]) -> Groups {
        object_elements(family.conn_map(), keys, &layout::conn_counter(&self.name))
    }

    fn traffic_elements(&self, family: IpFamily, keys: &[Key]) -> Groups {
        object_elements(family.traffic_map(), keys, &layout::traffic_counter(&self.name))
    }

    fn limit_elements(&self, family: IpFamily, keys: &[Key]) -> Groups {
        object_elements(family.limit_map(), keys, &layout::limit_object(&self.name))
    }

    fn log_elements(&self, family: IpFamily, keys: &[Key]) -> Groups {
        log_elements(family, &self.name, keys)
    }
}

/// Elements by the map they live in: a map, and its addressed twin for keys with an address.
type Groups = Vec<(&'static str, Vec<Element>)>;

/// The elements `make` builds for `keys`, each in `map` or in its addressed twin.
fn grouped(map: &'static str, keys: &[Key], make: impl Fn(Key) -> Element) -> Groups {
    let mut out: Groups = Vec::with_capacity(2);
    for &key in keys {
        let target = key.map(map);
        match out.iter_mut().find(|(m, _)| *m == target) {
            Some((_, list)) => list.push(make(key)),
            None => out.push((target, vec![make(key)])),
        }
    }
    out
}

/// Object-map elements sending `keys` to `object`, in `map` (or its addressed twin).
fn object_elements(map: &'static str, keys: &[Key], object: &str) -> Groups {
    grouped(map, keys, |key| element::object_element(key, object.to_owned()))
}

/// Log-map elements sending `keys` to `mapping`'s log chain.
fn log_elements(family: IpFamily, mapping: &str, keys: &[Key]) -> Groups {
    grouped(family.log_map(), keys, |key| element::log_element(key, mapping))
}

/// The kernel objects of one mapping, decided in one place for a rebuild and for a delta.
struct MappingObjects {
    /// The mapping's family.
    family: IpFamily,
    /// Its (protocol, port) keys.
    keys: Vec<Key>,
    /// Its elements in the DNAT map of its family (or its addressed twin).
    dnat: Groups,
    /// The allow-list, for a mapping that has one.
    allow: Option<AllowList>,
    /// Counters, limit, log.
    extras: Extras,
}

/// A mapping's allow-list: its interval set (created with a batch-local id), chain and rule, and
/// the guard elements that send its ports to the chain.
struct AllowList {
    set: Set,
    intervals: Vec<Element>,
    chain: Chain,
    /// One return rule per named list it uses, then the drop rule.
    rules: Vec<Rule>,
    guards: Groups,
}

impl MappingObjects {
    fn of(t: &TableId, m: &Mapping, ids: &mut Ids) -> Self {
        let family = IpFamily::of(m.to);
        let allow = (!m.allow_from.is_empty()).then(|| {
            AllowList::of(
                t,
                &m.name,
                family,
                (&m.allow_sources, m.inline_prefixes()),
                &forward_keys(&m.forwards()),
                ids,
            )
        });
        MappingObjects {
            family,
            keys: forward_keys(&m.forwards()),
            dnat: dnat_groups(&m.forwards(), &mapping_comment(&m.name, m.description.as_deref())),
            allow,
            extras: Extras::of(t, &m.name, m.limit.as_ref(), m.log, m.expires),
        }
    }
}

impl AllowList {
    /// `lists` and `prefixes`: the named lists the mapping uses and its own prefixes.
    fn of(
        t: &TableId,
        name: &str,
        family: IpFamily,
        (lists, prefixes): (&[String], &[IpNet]),
        keys: &[Key],
        ids: &mut Ids,
    ) -> Self {
        let id = ids.next();
        let mut rules: Vec<Rule> = lists
            .iter()
            .map(|list| layout::source_rule(t, name, list, family))
            .collect();
        rules.push(layout::allow_rule(t, name, family, id));
        AllowList {
            set: layout::allow_set_object(t, name, family, id),
            intervals: element::interval_elements(prefixes),
            chain: layout::allow_chain_object(t, name),
            rules,
            guards: guard_elements(family, name, keys),
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
    presets: &'a Presets,
    /// The element timeout (milliseconds) of the mapping whose change is being written: its
    /// `expires` counted from when the batch is built.
    timeout: Option<u64>,
}

impl Builder<'_> {
    fn add_elements(&mut self, set: &str, set_id: u32, elements: &[Element]) {
        if self.phase == Phase::Add && !elements.is_empty() {
            self.batch
                .add_elements(self.t.family, &self.t.name, set, set_id, elements);
            self.objects += elements.len();
        }
    }

    /// Add a mapping's elements of the per-(protocol, port) maps, each with the timeout of the
    /// mapping being written ([`Builder::timeout`]).
    fn add_groups(&mut self, groups: &Groups) {
        for (set, elements) in groups {
            if self.timeout.is_some() {
                let timed: Vec<Element> = elements
                    .iter()
                    .map(|e| Element {
                        timeout: self.timeout,
                        ..e.clone()
                    })
                    .collect();
                self.add_elements(set, 0, &timed);
            } else {
                self.add_elements(set, 0, elements);
            }
        }
    }

    fn del_groups(&mut self, groups: &Groups) {
        for (set, elements) in groups {
            self.del_elements(set, elements);
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

    /// Add (or delete) the DNAT elements of `forwards`, each in the map of its family (or its
    /// addressed twin).
    fn dnat_elements(&mut self, add: bool, forwards: &[Forward], comment: &str) {
        let groups = dnat_groups(forwards, comment);
        if add {
            self.add_groups(&groups);
        } else {
            self.del_groups(&groups);
        }
    }

    /// Allow-list set (with its intervals), chain and rule of a mapping, and its guard elements.
    fn add_allow_list(&mut self, name: &str, family: IpFamily, allow: (&[String], &[IpNet]), keys: &[Key]) {
        let list = AllowList::of(self.t, name, family, allow, keys, &mut self.ids);
        self.send_allow_list(&list);
    }

    fn send_allow_list(&mut self, list: &AllowList) {
        if self.phase != Phase::Add {
            return;
        }
        self.batch.add_set(&list.set);
        self.add_elements(&list.set.name, list.set.id, &list.intervals);
        self.batch.add_chain(&list.chain);
        for rule in &list.rules {
            self.batch.add_rule(rule);
        }
        self.objects += 2 + list.rules.len();
        self.add_groups(&list.guards);
    }

    /// The named source lists that change: one element delta per list and family (sets created for
    /// a new list, deleted for a list that goes), whichever mappings use them.
    fn sources(&mut self, changes: &[portmap_core::SourceChange], owners: &mut Vec<(usize, usize, String)>) {
        for change in changes {
            let start = self.batch.len();
            for family in IpFamily::ALL {
                let v6 = family == IpFamily::V6;
                let name = layout::source_set(&change.name, family);
                let none: &[IpNet] = &[];
                let before = change.before.as_ref().map_or(none, |l| l.of_family(v6));
                let after = change.after.as_ref().map_or(none, |l| l.of_family(v6));
                match (&change.before, &change.after) {
                    (None, Some(_)) => {
                        if self.phase == Phase::Add {
                            let set =
                                layout::source_set_object(self.t, &change.name, family, self.ids.next());
                            self.batch.add_set(&set);
                            self.objects += 1;
                            self.add_elements(&name, set.id, &element::interval_elements(after));
                        }
                    }
                    (Some(_), None) => self.del_chain_and_set(None, Some(&name)),
                    _ => {
                        let gone: Vec<IpNet> =
                            before.iter().filter(|n| !after.contains(n)).copied().collect();
                        let new: Vec<IpNet> = after.iter().filter(|n| !before.contains(n)).copied().collect();
                        self.del_elements(&name, &element::interval_elements(&gone));
                        self.add_elements(&name, 0, &element::interval_elements(&new));
                    }
                }
            }
            if self.batch.len() > start {
                owners.push((
                    start,
                    self.batch.len(),
                    format!("updating source list {}", change.name),
                ));
            }
        }
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
    fn del_allow_list(&mut self, name: &str, family: IpFamily, keys: &[Key]) {
        self.del_groups(&guard_elements(family, name, keys));
        self.del_chain_and_set(Some(&layout::allow_chain(name)), Some(&layout::allow_set(name)));
    }

    fn add_object(&mut self, object: &Object) {
        if self.phase == Phase::Add {
            self.batch.add_object(object);
            self.objects += 1;
        }
    }

    fn del_object(&mut self, obj_type: u32, name: &str) {
        if self.phase == Phase::Delete {
            self.batch.del_object(self.t.family, &self.t.name, obj_type, name);
            self.objects += 1;
        }
    }

    fn add_log_chain(&mut self, chain: &Chain, rule: &Rule) {
        if self.phase == Phase::Add {
            self.batch.add_chain(chain);
            self.batch.add_rule(rule);
            self.objects += 2;
        }
    }

    /// A damaged mapping: everything found of it goes but the counters and the limit that are
    /// what portmap writes (the limit only when the configuration keeps it), and it is created
    /// again around them.
    fn repair(&mut self, before: &ObservedMapping, after: &Mapping) {
        let comment = mapping_comment(&before.name, before.description.as_deref());
        self.dnat_elements(false, &before.forwards, &comment);
        let keep_limit = before.limit == after.limit;
        // Counters record the expiry: with another one they are made again (from their values,
        // see `Presets`).
        let keep_counters = portmap_core::same_expiry(before.expires, after.expires);
        self.del_found(before, keep_counters, keep_limit);
        let kept: BTreeSet<String> = before
            .objects
            .iter()
            .filter_map(|o| o.strip_prefix("keep "))
            .filter(|o| keep_limit || !o.starts_with("limit "))
            .filter(|o| keep_counters || !o.starts_with("counter "))
            .filter_map(|o| o.split_once(' ').map(|(_, name)| name.to_owned()))
            .collect();
        self.create(after, &kept);
    }

    /// A new mapping; `kept` names its objects that are there already (a repair keeps them). A
    /// counter made again starts from what it held before ([`Presets`]).
    fn create(&mut self, m: &Mapping, kept: &BTreeSet<String>) {
        let mut mo = MappingObjects::of(self.t, m, &mut self.ids);
        for counter in &mut mo.extras.counters {
            if let (Some(&(p, b)), portmap_netlink::ObjectKind::Counter { packets, bytes }) =
                (self.presets.get(&counter.name), &mut counter.kind)
            {
                (*packets, *bytes) = (p, b);
            }
        }
        if let Some(list) = mo.allow.take() {
            self.send_allow_list(&list);
        }
        for counter in &mo.extras.counters {
            if !kept.contains(&counter.name) {
                self.add_object(counter);
            }
        }
        if let Some(limit) = &mo.extras.limit
            && !kept.contains(&limit.name)
        {
            self.add_object(limit);
        }
        if let Some((chain, rule)) = &mo.extras.log {
            self.add_log_chain(chain, rule);
        }
        self.add_groups(&mo.dnat);
        let family = mo.family;
        self.add_groups(&mo.extras.conn_elements(family, &mo.keys));
        self.add_groups(&mo.extras.traffic_elements(family, &mo.keys));
        if mo.extras.limit.is_some() {
            self.add_groups(&mo.extras.limit_elements(family, &mo.keys));
        }
        if mo.extras.log.is_some() {
            self.add_groups(&mo.extras.log_elements(family, &mo.keys));
        }
    }

    /// The counters, limit and log of an intact mapping being deleted: elements first, then the
    /// log chain, then the objects.
    fn del_extras(&mut self, before: &ObservedMapping) {
        let family = observed_family(before);
        let keys = forward_keys(&before.forwards);
        let name = &before.name;
        self.del_groups(&object_elements(
            family.conn_map(),
            &keys,
            &layout::conn_counter(name),
        ));
        self.del_groups(&object_elements(
            family.traffic_map(),
            &keys,
            &layout::traffic_counter(name),
        ));
        if before.limit.is_some() {
            self.del_groups(&object_elements(
                family.limit_map(),
                &keys,
                &layout::limit_object(name),
            ));
        }
        if before.log.is_some() {
            self.del_groups(&log_elements(family, name, &keys));
            self.del_chain_and_set(Some(&layout::log_chain(name)), None);
        }
        self.del_object(object_type::COUNTER, &layout::conn_counter(name));
        self.del_object(object_type::COUNTER, &layout::traffic_counter(name));
        if before.limit.is_some() {
            self.del_object(object_type::LIMIT, &layout::limit_object(name));
        }
    }

    fn delete(&mut self, before: &ObservedMapping) {
        let comment = mapping_comment(&before.name, before.description.as_deref());
        self.dnat_elements(false, &before.forwards, &comment);
        // A damaged mapping, or what the kernel kept of an expired one: exactly what was found.
        if before.is_damaged() || !before.objects.is_empty() {
            self.del_found(before, false, false);
        } else {
            if !before.allow_from.is_empty() {
                self.del_allow_list(
                    &before.name,
                    observed_family(before),
                    &forward_keys(&before.forwards),
                );
            }
            self.del_extras(before);
        }
    }

    /// Delete exactly the objects `observe` found for a damaged mapping: map elements first (they
    /// jump to the chains and name the objects), then the chains (with whatever rules they hold),
    /// then the set, then the counters and the limit — but those a repair keeps. Only names of
    /// this mapping's own objects are honoured.
    fn del_found(&mut self, before: &ObservedMapping, keep_counters: bool, keep_limit: bool) {
        let name = &before.name;
        let chain = layout::allow_chain(name);
        let log_chain = layout::log_chain(name);
        let set = layout::allow_set(name);
        let own_objects = [
            (object_type::COUNTER, layout::conn_counter(name)),
            (object_type::COUNTER, layout::traffic_counter(name)),
            (object_type::LIMIT, layout::limit_object(name)),
        ];
        let maps: Vec<&'static str> = IpFamily::ALL
            .into_iter()
            .flat_map(|f| {
                [
                    f.guard_map(),
                    f.conn_map(),
                    f.traffic_map(),
                    f.limit_map(),
                    f.log_map(),
                ]
            })
            .flat_map(|m| [m, layout::addressed(m)])
            .collect();
        let mut elements: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
        let (mut del_chain, mut del_log_chain, mut del_set) = (false, false, false);
        let mut del_objects: Vec<(u32, &str)> = Vec::new();
        for object in &before.objects {
            // What a repair keeps: its intact counters always, its intact limit if configured so.
            let object = match object.strip_prefix("keep ") {
                Some(o)
                    if (o.starts_with("counter ") && keep_counters)
                        || (o.starts_with("limit ") && keep_limit) =>
                {
                    continue;
                }
                Some(o) => o,
                None => object.as_str(),
            };
            match object.split(' ').collect::<Vec<_>>().as_slice() {
                ["chain", found] if *found == chain => del_chain = true,
                ["chain", found] if *found == log_chain => del_log_chain = true,
                ["set", found] if *found == set => del_set = true,
                [kind @ ("counter" | "limit"), found] => {
                    if let Some((ty, own)) = own_objects
                        .iter()
                        .find(|(ty, own)| own == found && kind_name(*ty) == *kind)
                    {
                        del_objects.push((*ty, own.as_str()));
                    }
                }
                [map, key @ ..] => {
                    let Some(map) = maps.iter().find(|m| **m == *map) else {
                        continue;
                    };
                    if let Some(key) = Key::parse_words(key) {
                        // A deletion sends only the key.
                        elements
                            .entry(map)
                            .or_default()
                            .push(element::guard_element(key, name));
                    }
                }
                _ => {}
            }
        }
        for (map, list) in &elements {
            self.del_elements(map, list);
        }
        self.del_chain_and_set(
            del_chain.then_some(chain.as_str()),
            del_set.then_some(set.as_str()),
        );
        if del_log_chain {
            self.del_chain_and_set(Some(&log_chain), None);
        }
        for (ty, object) in del_objects {
            self.del_object(ty, object);
        }
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

        let old_keys: BTreeSet<Key> = forward_keys(&before.forwards).into_iter().collect();
        let new_keys: BTreeSet<Key> = forward_keys(&wanted).into_iter().collect();
        let had_list = !before.allow_from.is_empty();
        let has_list = !after.allow_from.is_empty();
        // The mapping's own prefixes (its set) apart from the lists it names (its chain's rules).
        let before_inline = if before.allow_sources.is_empty() {
            &before.allow_from
        } else {
            &before.allow_inline
        };
        let same_lists = before.allow_sources == after.allow_sources;
        if had_list && has_list && old_family == new_family && same_lists {
            if *before_inline != after.inline_prefixes() {
                let set = layout::allow_set(&after.name);
                let (old, new) = (
                    element::interval_elements(before_inline),
                    element::interval_elements(after.inline_prefixes()),
                );
                self.del_elements(&set, &old);
                self.add_elements(&set, 0, &new);
            }
            let gone_guards: Vec<_> = old_keys.difference(&new_keys).copied().collect();
            let new_guards: Vec<_> = new_keys.difference(&old_keys).copied().collect();
            self.del_groups(&guard_elements(new_family, &after.name, &gone_guards));
            self.add_groups(&guard_elements(new_family, &after.name, &new_guards));
        } else {
            // Gained, lost, or changed family (the set's address type changes): the old list goes
            // and the new one comes, in the same transaction.
            if had_list {
                let keys: Vec<_> = old_keys.iter().copied().collect();
                self.del_allow_list(&before.name, old_family, &keys);
            }
            if has_list {
                let keys: Vec<_> = new_keys.iter().copied().collect();
                self.add_allow_list(
                    &after.name,
                    new_family,
                    (&after.allow_sources, after.inline_prefixes()),
                    &keys,
                );
            }
        }
        self.dnat_elements(false, &gone, &old_comment);
        self.dnat_elements(true, &added, &new_comment);
        self.update_extras(before, after, &old_keys, &new_keys, (old_family, new_family));
    }

    /// Counters, limit and log of a changed mapping: the counters stay (only the keys that select
    /// them change); a changed limit or log is removed and made again.
    fn update_extras(
        &mut self,
        before: &ObservedMapping,
        after: &Mapping,
        old_keys: &BTreeSet<Key>,
        new_keys: &BTreeSet<Key>,
        (old_family, new_family): (IpFamily, IpFamily),
    ) {
        let name = &after.name;
        let moved = old_family != new_family;
        let (gone, added): (Vec<_>, Vec<_>) = if moved {
            (
                old_keys.iter().copied().collect(),
                new_keys.iter().copied().collect(),
            )
        } else {
            (
                old_keys.difference(new_keys).copied().collect(),
                new_keys.difference(old_keys).copied().collect(),
            )
        };
        let all_old: Vec<_> = old_keys.iter().copied().collect();
        let all_new: Vec<_> = new_keys.iter().copied().collect();
        for (map_of, object) in [
            (
                IpFamily::conn_map as fn(IpFamily) -> &'static str,
                layout::conn_counter(name),
            ),
            (IpFamily::traffic_map, layout::traffic_counter(name)),
        ] {
            self.del_groups(&object_elements(map_of(old_family), &gone, &object));
            self.add_groups(&object_elements(map_of(new_family), &added, &object));
        }
        let limit = layout::limit_object(name);
        match (&before.limit, &after.limit) {
            (Some(a), Some(b)) if a == b => {
                self.del_groups(&object_elements(old_family.limit_map(), &gone, &limit));
                self.add_groups(&object_elements(new_family.limit_map(), &added, &limit));
            }
            (was, will) => {
                if was.is_some() {
                    self.del_groups(&object_elements(old_family.limit_map(), &all_old, &limit));
                    self.del_object(object_type::LIMIT, &limit);
                }
                if let Some(l) = will {
                    self.add_object(&layout::limit_object_of(self.t, name, l));
                    self.add_groups(&object_elements(new_family.limit_map(), &all_new, &limit));
                }
            }
        }
        match (before.log, after.log) {
            (Some(a), Some(b)) if a == b => {
                self.del_groups(&log_elements(old_family, name, &gone));
                self.add_groups(&log_elements(new_family, name, &added));
            }
            (was, will) => {
                if was.is_some() {
                    self.del_groups(&log_elements(old_family, name, &all_old));
                    self.del_chain_and_set(Some(&layout::log_chain(name)), None);
                }
                if let Some(group) = will {
                    let (chain, rule) = layout::log_chain_object(self.t, name, group);
                    self.add_log_chain(&chain, &rule);
                    self.add_groups(&log_elements(new_family, name, &all_new));
                }
            }
        }
    }
}

/// How nft names an object type in `observe`'s object list.
fn kind_name(obj_type: u32) -> &'static str {
    if obj_type == object_type::LIMIT {
        "limit"
    } else {
        "counter"
    }
}

/// The guard elements sending `keys` to `mapping`'s allow-list chain.
fn guard_elements(family: IpFamily, mapping: &str, keys: &[Key]) -> Groups {
    grouped(family.guard_map(), keys, |key| {
        element::guard_element(key, mapping)
    })
}

/// The DNAT elements of `forwards`, each in the map of its family (or the addressed twin).
fn dnat_groups(forwards: &[Forward], comment: &str) -> Groups {
    let mut out: Groups = Vec::new();
    for f in forwards {
        let map = layout::map_for(IpFamily::of(f.to).dnat_map(), f.listen);
        let e = element::dnat_element(f, comment);
        match out.iter_mut().find(|(m, _)| *m == map) {
            Some((_, list)) => list.push(e),
            None => out.push((map, vec![e])),
        }
    }
    out
}

/// The family of a mapping read back from the kernel: that of its forwards (`observe` reports a
/// mapping with forwards of both families as damage, which rebuilds the table instead).
fn observed_family(mapping: &ObservedMapping) -> IpFamily {
    mapping
        .forwards
        .first()
        .map_or(IpFamily::V4, |f| IpFamily::of(f.to))
}
