//! Read (never write) the rest of the iptables ruleset for what would stop portmap's forwards:
//! a filter `FORWARD` chain of the *other* variant (legacy and nft rules both run, so a legacy
//! drop still drops what iptables-nft accepts) that drops — by policy or a final unconditional
//! drop — without accepting DNAT-ed connections; and, in portmap's own variant, an unconditional
//! drop in `FORWARD` above portmap's jump.

use crate::layout::{Family, Prefix, Table};
use crate::save::TableDump;
use crate::variant::Variant;

/// Whether a rule accepts DNAT-ed connections (`-m conntrack --ctstate DNAT … -j ACCEPT`).
fn accepts_dnat(spec: &str) -> bool {
    spec.contains("--ctstate") && spec.contains("DNAT") && spec.ends_with("-j ACCEPT")
}

fn is_drop(spec: &str) -> bool {
    matches!(spec, "-j DROP" | "-j REJECT") || spec.starts_with("-j REJECT ")
}

/// Sentences for the other variant's filter table of `family`.
pub fn other_variant(theirs: Variant, family: Family, filter: &TableDump) -> Option<String> {
    let rules = filter.rules_of("FORWARD");
    let policy_drop = filter.policy("FORWARD") == Some("DROP");
    let ends_in_drop = rules.last().is_some_and(|r| is_drop(r));
    if !(policy_drop || ends_in_drop) || rules.iter().any(|r| accepts_dnat(r)) {
        return None;
    }
    let tool = format!(
        "{}-{}",
        family.tool(),
        theirs.backend_name().trim_start_matches("iptables-")
    );
    Some(format!(
        "{tool} {}, chain FORWARD {} and does not accept DNAT-ed connections: legacy and nft rules both run, so it drops forwards that portmap's {} accepts (`{tool} -I FORWARD -m conntrack --ctstate DNAT -j ACCEPT` would let them through)",
        Table::Filter,
        if policy_drop {
            "has policy DROP"
        } else {
            "ends in a drop rule"
        },
        theirs.other().backend_name(),
    ))
}

/// A sentence when portmap's own variant drops everything in `FORWARD` above portmap's jump.
pub fn own_variant(p: &Prefix, family: Family, filter: &TableDump) -> Option<String> {
    let rules = filter.rules_of("FORWARD");
    let ours = rules
        .iter()
        .position(|r| r.ends_with(&format!("-j {}", p.chain(crate::layout::FWD))))?;
    rules[..ours].iter().any(|r| is_drop(r)).then(|| {
        format!(
            "{} filter, chain FORWARD drops every packet above portmap's jump to {}: forwarded connections never reach portmap's accepts",
            family.tool(),
            p.chain(crate::layout::FWD)
        )
    })
}
