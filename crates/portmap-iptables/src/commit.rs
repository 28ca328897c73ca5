//! Carry a plan out as ordered per-table `iptables-restore --noflush` commits, each a delta: only
//! the chains whose rules differ are rewritten (`:CHAIN` flushes one chain under `--noflush`;
//! chains not named stay as they are), missing jumps are inserted at the top of their built-in
//! chain, chains no longer wanted are flushed and deleted.
//!
//! `iptables-restore` commits each table on its own (nat and filter are never one transaction,
//! in either variant), and IPv4 and IPv6 are two programs. So a plan becomes up to six commits, in
//! an order where every state in between is safe:
//!
//! 1. **filter, widen** (IPv4, IPv6): the configuration's accept and drop rules are added, and the
//!    rules of mappings being removed or changed stay, after them. A new forward's accept lands
//!    before its DNAT; a changed allow-list takes effect before the DNAT changes.
//! 2. **nat** (IPv4, IPv6): every DNAT, hairpin and masquerade change, and the records of the
//!    conntrack cleanups to do, in one commit per family.
//! 3. **filter, narrow** (IPv4, IPv6): the rules of removed and old versions go. A removed
//!    forward's DNAT is gone before its accept.
//!
//! Between commits nothing is forwarded that neither the old nor the new configuration forwards,
//! and no refused source is let through. If a commit fails, the ones before it stay, the failed one
//! changes nothing, and observe reports the difference (e.g. a new mapping's filter rules without
//! their DNAT) as damage, which the next apply repairs.
//!
//! This module builds the scripts; running them is the backend's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

use portmap_core::{Change, Plan, StaleFlows};

use crate::layout::{self, Chains, Family, FilterKind, Input, LanSide, Layout, MappingRules, Prefix, Table};
use crate::observe::Counts;

/// One `iptables-restore` run: one table of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The family (which program).
    pub family: Family,
    /// The table.
    pub table: Table,
    /// `widen`, `nat`, `narrow`, `destroy`, `forget`.
    pub phase: &'static str,
    /// The input, `*table` … `COMMIT`.
    pub script: String,
    /// Rule and chain lines in it (what the report counts as messages).
    pub lines: usize,
    /// Chains created, rewritten or deleted.
    pub chains: usize,
}

/// Rule counters of one table: by chain, in rule order.
type TableCounts = BTreeMap<String, Vec<(u64, u64)>>;

/// Counts of the rules that go away, per mapping and kind (connections: count rules; traffic:
/// accept rules), to be added to the same mapping's first new rule of that kind, so that a
/// changed mapping goes on counting from where it was.
type Carry = HashMap<(String, bool), (u64, u64)>;

/// The mapping and counter kind a filter rule adds to (`true` for the connection count).
fn counted_by(line: &str) -> Option<(String, bool)> {
    let (_, name, _, kind) = crate::observe::parse_filter(line)?;
    match kind {
        FilterKind::Count => Some((name, true)),
        FilterKind::Accept => Some((name, false)),
        _ => None,
    }
}

/// [`diff`] with rule counters (`iptables-restore --counters`): a rewritten chain's rules start
/// from the counters of the same rules before (wherever in the table they were), a new rule from
/// what `carry` holds for its mapping. Returns the counters written with the script.
fn diff_counted(
    table: Table,
    current: &Chains,
    target: &Chains,
    have: &TableCounts,
    carry: &mut Carry,
) -> Option<(String, usize, usize, TableCounts)> {
    // The rules of the chains rewritten or deleted: their counters go to the same rules written.
    let mut pool: HashMap<&str, VecDeque<(u64, u64)>> = HashMap::new();
    for (name, rules) in &current.chains {
        if target.chains.get(name) == Some(rules) {
            continue;
        }
        let counts = have.get(name);
        for (i, rule) in rules.iter().enumerate() {
            let c = counts.and_then(|c| c.get(i)).copied().unwrap_or_default();
            pool.entry(rule.as_str()).or_default().push_back(c);
        }
    }
    let mut written = TableCounts::new();
    for (name, rules) in &target.chains {
        if current.chains.get(name) == Some(rules) {
            continue;
        }
        let counts = rules
            .iter()
            .map(|rule| {
                let mut c = pool
                    .get_mut(rule.as_str())
                    .and_then(VecDeque::pop_front)
                    .unwrap_or_default();
                if table == Table::Filter
                    && let Some(key) = counted_by(rule)
                    && let Some((p, b)) = carry.remove(&key)
                {
                    c = (c.0.saturating_add(p), c.1.saturating_add(b));
                }
                c
            })
            .collect();
        written.insert(name.clone(), counts);
    }
    let (script, lines, chains) = diff_with(table, current, target, Some(&written))?;
    Some((script, lines, chains, written))
}

/// The script that turns `current` into `target` for one table (`None` when they are equal).
pub fn diff(table: Table, current: &Chains, target: &Chains) -> Option<(String, usize, usize)> {
    diff_with(table, current, target, None)
}

/// [`diff`], writing each rewritten chain's rules with the counters in `counts` (`[p:b] -A …`).
fn diff_with(
    table: Table,
    current: &Chains,
    target: &Chains,
    counts: Option<&TableCounts>,
) -> Option<(String, usize, usize)> {
    let mut head = String::new();
    let mut body = String::new();
    let mut tail = String::new();
    let mut lines = 0;
    let mut chains = 0;
    for (name, rules) in &target.chains {
        if current.chains.get(name) == Some(rules) {
            continue;
        }
        chains += 1;
        lines += 1 + rules.len();
        let _ = writeln!(head, ":{name} - [0:0]");
        let chain_counts = counts.and_then(|c| c.get(name));
        for (i, rule) in rules.iter().enumerate() {
            match chain_counts.and_then(|c| c.get(i)) {
                Some((p, b)) => {
                    let _ = writeln!(body, "[{p}:{b}] -A {name} {rule}");
                }
                None => {
                    let _ = writeln!(body, "-A {name} {rule}");
                }
            }
        }
    }
    // Jumps: remove the ones not wanted (and extra copies), add the missing ones at the top.
    let mut seen: BTreeSet<&layout::Jump> = BTreeSet::new();
    for jump in &current.jumps {
        if !target.jumps.contains(jump) || !seen.insert(jump) {
            lines += 1;
            let _ = writeln!(body, "-D {} {}", jump.builtin, jump.spec);
        }
    }
    for jump in &target.jumps {
        if !current.jumps.contains(jump) {
            lines += 1;
            let _ = writeln!(body, "-I {} 1 {}", jump.builtin, jump.spec);
        }
    }
    for name in current.chains.keys().filter(|n| !target.chains.contains_key(*n)) {
        chains += 1;
        lines += 2;
        let _ = writeln!(head, ":{name} - [0:0]");
        let _ = writeln!(tail, "-X {name}");
    }
    if lines == 0 {
        return None;
    }
    Some((format!("*{table}\n{head}{body}{tail}COMMIT\n"), lines, chains))
}

/// The layout for the configuration of `plan` (what `render` prints and the last phase leaves),
/// with commit serial `serial`.
pub fn desired<'a>(rules: &'a [MappingRules], plan: &Plan, stale: Vec<StaleFlows>, serial: u32) -> Input<'a> {
    Input {
        settings: plan.desired.settings.clone(),
        mappings: rules.iter().map(|r| (r, 0)).collect(),
        stale,
        serial,
    }
}

/// The commits that carry `plan` out from `current` (portmap's chains as saved just before), with
/// `record` and the plan's pending cleanups written into the nat commits.
pub fn steps(p: &Prefix, current: &Layout, plan: &Plan, record: &[StaleFlows], lan: &LanSide) -> Vec<Step> {
    steps_counted(p, current, plan, record, lan, &Counts::new())
}

/// [`steps`], keeping rule counters: every rewritten chain is written with its rules' counters
/// (`iptables-restore --counters`, from `counts`, what `iptables-save -c` printed just before),
/// and the counts of a changed mapping's rules that go away are added to its new ones.
pub fn steps_counted(
    p: &Prefix,
    current: &Layout,
    plan: &Plan,
    record: &[StaleFlows],
    lan: &LanSide,
    counts: &Counts,
) -> Vec<Step> {
    // A mapping whose `expires` has come is not installed; the rules the kernel keeps of it (which
    // match nothing) stay as they are, so its rules are written only where they are already.
    let held: std::collections::BTreeSet<String> = current
        .tables
        .iter()
        .filter(|((_, table), _)| *table == crate::layout::Table::Nat)
        .flat_map(|(_, chains)| chains.chains.values().flatten())
        .filter_map(|line| crate::observe::parse_dnat(line))
        .map(|(_, comment)| crate::layout::parse_mapping_comment(&comment).0)
        .collect();
    let rules: Vec<MappingRules> = plan
        .desired
        .mappings
        .iter()
        .filter(|m| !portmap_core::time::is_expired(m.expires, plan.made_at) || held.contains(&m.name))
        .map(MappingRules::of_mapping)
        .collect();
    // Old versions of intact mappings being removed or changed stay in filter until phase 3. A
    // damaged mapping's remains are not kept: the configuration's rules replace them at once.
    let old: Vec<MappingRules> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete { before, .. } | Change::Update { before, .. } if !before.is_damaged() => {
                Some(MappingRules::of_observed(before))
            }
            _ => None,
        })
        .collect();
    let mut stale: Vec<StaleFlows> = plan.pending_flows.clone();
    for s in record {
        if !stale.contains(s) {
            stale.push(s.clone());
        }
    }
    // The nat commit of IPv4 counts the commit (see `layout::serial_rule`).
    let serial = crate::observe::recorded_serial(p, &current.tables).wrapping_add(1);
    let mut widened = desired(&rules, plan, stale.clone(), serial);
    widened.mappings.extend(old.iter().map(|r| (r, 1)));
    let widened = layout::build(p, &widened, lan);
    let target = layout::build(p, &desired(&rules, plan, stale, serial), lan);

    // What the filter rules that go away counted, per mapping: carried to its new rules.
    let mut carry: BTreeMap<Family, Carry> = BTreeMap::new();
    for family in Family::ALL {
        let have = current.table(family, Table::Filter);
        let want = target.table(family, Table::Filter);
        let mut stays: HashMap<&str, usize> = HashMap::new();
        for rule in want.chains.values().flatten() {
            *stays.entry(rule.as_str()).or_default() += 1;
        }
        let table_counts = counts.get(&(family, Table::Filter));
        let entry = carry.entry(family).or_default();
        for (name, rules) in &have.chains {
            for (i, rule) in rules.iter().enumerate() {
                if let Some(n) = stays.get_mut(rule.as_str())
                    && *n > 0
                {
                    *n -= 1;
                    continue;
                }
                let c = table_counts
                    .and_then(|t| t.get(name))
                    .and_then(|c| c.get(i))
                    .copied()
                    .unwrap_or_default();
                if let Some(key) = counted_by(rule)
                    && c != (0, 0)
                {
                    let e = entry.entry(key).or_default();
                    *e = (e.0.saturating_add(c.0), e.1.saturating_add(c.1));
                }
            }
        }
    }

    let mut out = Vec::new();
    let mut state = current.clone();
    let mut state_counts = counts.clone();
    let phases: [(&'static str, Table, &Layout); 3] = [
        ("widen", Table::Filter, &widened),
        ("nat", Table::Nat, &target),
        ("narrow", Table::Filter, &target),
    ];
    for (phase, table, goal) in phases {
        for family in Family::ALL {
            let have = state.table(family, table);
            let want = goal.table(family, table);
            let have_counts = state_counts.get(&(family, table)).cloned().unwrap_or_default();
            let family_carry = carry.entry(family).or_default();
            if let Some((script, lines, chains, written)) =
                diff_counted(table, &have, &want, &have_counts, family_carry)
            {
                out.push(Step {
                    family,
                    table,
                    phase,
                    script,
                    lines,
                    chains,
                });
                let table_counts = state_counts.entry((family, table)).or_default();
                table_counts.retain(|name, _| want.chains.contains_key(name));
                table_counts.extend(written);
            }
            state.tables.insert((family, table), want);
        }
    }
    out
}

/// The commits that remove portmap's chains and jumps: nat first (no forward is DNAT-ed any
/// more), then filter.
pub fn destroy_steps(current: &Layout) -> Vec<Step> {
    let mut out = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        for family in Family::ALL {
            let have = current.table(family, table);
            if let Some((script, lines, chains)) = diff(table, &have, &Chains::default()) {
                out.push(Step {
                    family,
                    table,
                    phase: "destroy",
                    script,
                    lines,
                    chains,
                });
            }
        }
    }
    out
}

/// The whole restore input for `layout` into tables that hold none of portmap's chains: filter
/// (the accepts) before nat (the DNAT), IPv4 then, after a `# ip6tables-restore` line, IPv6.
pub fn script(layout: &Layout) -> (String, String) {
    let mut v4 = String::new();
    let mut v6 = String::new();
    for family in Family::ALL {
        let out = if family == Family::V4 { &mut v4 } else { &mut v6 };
        for table in Table::ALL {
            if let Some((text, _, _)) = diff(table, &Chains::default(), &layout.table(family, table)) {
                out.push_str(&text);
            }
        }
    }
    (v4, v6)
}
