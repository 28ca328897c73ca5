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

use std::collections::BTreeSet;
use std::fmt::Write as _;

use portmap_core::{Change, Plan, StaleFlows};

use crate::layout::{self, Chains, Family, Input, LanSide, Layout, MappingRules, Prefix, Table};

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

/// The script that turns `current` into `target` for one table (`None` when they are equal).
pub fn diff(table: Table, current: &Chains, target: &Chains) -> Option<(String, usize, usize)> {
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
        for rule in rules {
            let _ = writeln!(body, "-A {name} {rule}");
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
    let rules: Vec<MappingRules> = plan
        .desired
        .mappings
        .iter()
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

    let mut out = Vec::new();
    let mut state = current.clone();
    let phases: [(&'static str, Table, &Layout); 3] = [
        ("widen", Table::Filter, &widened),
        ("nat", Table::Nat, &target),
        ("narrow", Table::Filter, &target),
    ];
    for (phase, table, goal) in phases {
        for family in Family::ALL {
            let have = state.table(family, table);
            let want = goal.table(family, table);
            if let Some((script, lines, chains)) = diff(table, &have, &want) {
                out.push(Step {
                    family,
                    table,
                    phase,
                    script,
                    lines,
                    chains,
                });
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
