//! The watch's log lines in words: what another program did to portmap's table (from the kernel's
//! notifications of one transaction), what happened to an interface or an address, what drift a
//! read found, and what a repair did. Pure: text from values, no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use portmap_core::{ApplyReport, Plan, TableAction, shown_arg};
use portmap_netlink::monitor::{Generation, Object, Op, RulesetChange};

/// Longest list of names or groups one line spells out.
const MAX_LISTED: usize = 4;

/// "by nft (pid 1853)", or "by another program" when the kernel did not say.
pub(crate) fn committer(generation: Option<&Generation>) -> String {
    match generation {
        Some(g) if g.pid != 0 => match &g.process {
            Some(name) => format!("by {} (pid {})", shown_arg(name), g.pid),
            None => format!("by pid {}", g.pid),
        },
        Some(Generation {
            process: Some(name), ..
        }) => format!("by {}", shown_arg(name)),
        _ => "by another program".to_owned(),
    }
}

/// One line for the changes one transaction of another program made to `table` (e.g. `inet
/// portmap`): "table inet portmap deleted by nft (pid 1853)", or "table inet portmap changed by
/// nft (pid 1853): 1 element deleted from dnat4".
pub(crate) fn transaction(table: &str, changes: &[RulesetChange], generation: Option<&Generation>) -> String {
    let by = committer(generation);
    let deleted = changes
        .iter()
        .any(|c| c.object == Object::Table && c.op == Op::Delete);
    let added = changes
        .iter()
        .any(|c| c.object == Object::Table && c.op == Op::Add);
    if deleted && !added {
        return format!("table {table} deleted {by}");
    }
    if deleted && added {
        return format!("table {table} replaced {by}");
    }
    // (op, object, name) → how many objects (elements counted one by one).
    let mut groups: BTreeMap<(u8, &'static str, Option<&str>), usize> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.object != Object::Table) {
        let count = if c.object == Object::Elements {
            c.elements.max(1)
        } else {
            1
        };
        let op = u8::from(c.op == Op::Delete);
        *groups
            .entry((op, c.object.as_str(), c.name.as_deref()))
            .or_default() += count;
    }
    if groups.is_empty() {
        return format!("table {table} changed {by}");
    }
    let mut parts = Vec::new();
    for ((op, object, name), count) in &groups {
        let plural = if *count == 1 { "" } else { "s" };
        let verb = if *op == 1 { "deleted" } else { "added" };
        let place = match (*object, name) {
            ("element", Some(set)) => format!(" {} {}", if *op == 1 { "from" } else { "to" }, shown_arg(set)),
            ("rule", Some(chain)) => format!(
                " {} chain {}",
                if *op == 1 { "from" } else { "in" },
                shown_arg(chain)
            ),
            (_, Some(name)) => format!(" {}", shown_arg(name)),
            (_, None) => String::new(),
        };
        parts.push(format!("{count} {object}{plural} {verb}{place}"));
    }
    let more = parts.len().saturating_sub(MAX_LISTED);
    parts.truncate(MAX_LISTED);
    let mut line = format!("table {table} changed {by}: {}", parts.join(", "));
    if more > 0 {
        let _ = write!(line, " and {more} more");
    }
    line
}

/// What a read found different from the configuration, in one line (for drift no notification
/// announced: a poll, or a read after lost notifications).
pub(crate) fn drift(plan: &Plan) -> String {
    match &plan.table_action {
        TableAction::Create => return format!("table {} is missing", plan.table),
        TableAction::Repair { reasons } => {
            let first = reasons.first().map_or("its structure differs", String::as_str);
            let more = match reasons.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more findings)", n - 1),
            };
            return format!("table {} was altered: {first}{more}", plan.table);
        }
        TableAction::Keep => {}
    }
    let mut parts = Vec::new();
    if !plan.settings.is_empty() {
        let fields: Vec<&str> = plan.settings.iter().map(|s| s.field.as_str()).collect();
        parts.push(format!("settings {} differ", fields.join(", ")));
    }
    if !plan.changes.is_empty() {
        parts.push(format!(
            "{} differ{}",
            names("mapping", plan.changes.iter().map(|c| c.name(&plan.desired))),
            if plan.changes.len() == 1 { "s" } else { "" }
        ));
    }
    if parts.is_empty() && !plan.pending_flows.is_empty() {
        parts.push(format!(
            "{} tracked-connection cleanups were left by an interrupted apply",
            plan.pending_flows.len()
        ));
    }
    format!("table {}: {}", plan.table, parts.join("; "))
}

/// "mapping web", "mappings web, ssh", "mappings a, b, c, d and 3 more".
fn names<'a>(what: &str, list: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = list.collect();
    let shown: Vec<String> = all.iter().take(MAX_LISTED).map(|n| shown_arg(n)).collect();
    let mut text = format!(
        "{what}{} {}",
        if all.len() == 1 { "" } else { "s" },
        shown.join(", ")
    );
    if all.len() > MAX_LISTED {
        let _ = write!(text, " and {} more", all.len() - MAX_LISTED);
    }
    text
}

/// What applying `plan` did, e.g. "table inet portmap created with 2 mappings — 44 objects in 1
/// transaction, 3.1 ms".
pub(crate) fn applied(plan: &Plan, report: &ApplyReport, elapsed: Duration, nft: bool) -> String {
    let mappings = plan.desired.mappings.len();
    let what = match &plan.table_action {
        TableAction::Create => format!("table {} created with {}", plan.table, count(mappings, "mapping")),
        TableAction::Repair { .. } => {
            format!("table {} rebuilt with {}", plan.table, count(mappings, "mapping"))
        }
        TableAction::Keep => {
            let c = plan.counts();
            let mut parts = Vec::new();
            for (n, verb) in [
                (c.create, "created"),
                (c.update, "changed"),
                (c.repair, "repaired"),
                (c.delete, "deleted"),
            ] {
                if n > 0 {
                    parts.push(format!("{} {verb}", count(n, "mapping")));
                }
            }
            if !plan.settings.is_empty() {
                parts.push(format!("{} changed", count(plan.settings.len(), "setting")));
            }
            if parts.is_empty() {
                "tracked connections left by an interrupted apply removed".to_owned()
            } else {
                parts.join(", ")
            }
        }
    };
    let ms = elapsed.as_secs_f64() * 1000.0;
    let how = if nft {
        format!("{} in 1 transaction", count(report.objects, "object"))
    } else {
        format!(
            "{} with iptables-restore (one commit per table)",
            count(report.messages, "line")
        )
    };
    let flows = match report.flows_cleared {
        0 => String::new(),
        n => format!("; {} removed", count(n, "stale tracked connection")),
    };
    format!("{what} — {how}, {ms:.1} ms{flows}")
}

/// "1 mapping", "3 mappings".
pub(crate) fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "2.5 s", "250 ms".
pub(crate) fn duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: Op, object: Object, name: Option<&str>, elements: usize) -> RulesetChange {
        RulesetChange {
            op,
            object,
            family: 1,
            table: "portmap".into(),
            name: name.map(str::to_owned),
            elements,
        }
    }

    fn nft(pid: u32) -> Generation {
        Generation {
            id: 7,
            pid,
            process: Some("nft".into()),
        }
    }

    #[test]
    fn a_deleted_table_says_who_deleted_it() {
        let line = transaction(
            "inet portmap",
            &[change(Op::Delete, Object::Table, None, 0)],
            Some(&nft(1853)),
        );
        assert_eq!(line, "table inet portmap deleted by nft (pid 1853)");
        let line = transaction(
            "inet portmap",
            &[change(Op::Delete, Object::Table, None, 0)],
            None,
        );
        assert_eq!(line, "table inet portmap deleted by another program");
    }

    #[test]
    fn element_and_rule_changes_are_grouped_and_counted() {
        let line = transaction(
            "inet portmap",
            &[
                change(Op::Delete, Object::Elements, Some("dnat4"), 1),
                change(Op::Delete, Object::Elements, Some("dnat4"), 2),
                change(Op::Add, Object::Rule, Some("prerouting"), 0),
            ],
            Some(&nft(9)),
        );
        assert_eq!(
            line,
            "table inet portmap changed by nft (pid 9): 1 rule added in chain prerouting, 3 elements deleted from dnat4"
        );
    }

    #[test]
    fn names_from_the_kernel_are_escaped() {
        let line = transaction(
            "inet portmap",
            &[change(Op::Add, Object::Set, Some("x\u{1b}[31m"), 0)],
            Some(&Generation {
                id: 1,
                pid: 5,
                process: Some("evil\u{7}".into()),
            }),
        );
        assert!(!line.contains('\u{1b}') && !line.contains('\u{7}'), "{line}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(count(1, "object"), "1 object");
        assert_eq!(count(12, "object"), "12 objects");
    }
}
