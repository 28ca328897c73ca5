//! Read (never write) the rest of the ruleset for what would stop portmap's forwards: a filter
//! `FORWARD` chain of the *other* iptables variant (legacy and nft rules both run, so a legacy
//! drop still drops what iptables-nft accepts), or a native nftables forward chain (firewalld,
//! fw4), that drops — by policy or a final unconditional drop — without accepting DNAT-ed
//! connections; and, in portmap's own variant, an unconditional drop in `FORWARD` above portmap's
//! jump.

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

/// `IPS_DST_NAT`, the conntrack status bit `ct status dnat` tests.
const IPS_DST_NAT: u32 = 0x20;
/// `NFT_CT_STATUS`.
const NFT_CT_STATUS: u32 = 2;

/// Sentences for native nftables tables (firewalld's, fw4's, a hand-written `/etc/nftables.conf`)
/// whose forward base chain drops — by policy or a final unconditional drop — without accepting
/// `ct status dnat`: nftables and iptables rules both run, so such a chain drops what portmap's
/// iptables rules accept. iptables-nft's own `FORWARD` chains are left to [`other_variant`] and
/// the filter table read through `iptables-save`. Read only; an unreadable ruleset gives nothing.
pub fn native_nft(netns: &portmap_netlink::Netns, ours: Variant) -> Vec<String> {
    use portmap_netlink::{Hook, Socket};
    let Ok(mut socket) = Socket::open(netns) else {
        return Vec::new();
    };
    let Ok(tables) = socket.tables() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for table in tables {
        let Ok(chains) = socket.chains(table.family, &table.name) else {
            continue;
        };
        let xtables = matches!(
            table.name.as_str(),
            "filter" | "nat" | "mangle" | "raw" | "security"
        );
        let forward: Vec<&portmap_netlink::Chain> = chains
            .iter()
            .filter(|c| c.base.as_ref().is_some_and(|b| b.hook == Hook::Forward))
            .filter(|c| !(xtables && c.name == "FORWARD"))
            .collect();
        if forward.is_empty() {
            continue;
        }
        let Ok(rules) = socket.rules(table.family, &table.name) else {
            continue;
        };
        for chain in forward {
            let chain_rules: Vec<&portmap_netlink::Rule> =
                rules.iter().filter(|r| r.chain == chain.name).collect();
            if let Some(why) = nft_blocks(chain, &chain_rules) {
                found.push(format!(
                    "nftables table {} {}, chain {} {why} and does not accept `ct status dnat`: nftables and iptables rules both run, so it drops forwards that portmap's {} accepts; add `ct status dnat accept` to that chain",
                    table.family.as_str(),
                    table.name,
                    chain.name,
                    ours.backend_name()
                ));
            }
        }
    }
    found
}

/// Why an nftables forward chain drops forwarded traffic that no rule of it accepts as DNAT-ed.
fn nft_blocks(chain: &portmap_netlink::Chain, rules: &[&portmap_netlink::Rule]) -> Option<&'static str> {
    use portmap_netlink::{CmpOp, Data, Expr, Policy, Verdict};
    let is_verdict =
        |e: &Expr, v: &Verdict| matches!(e, Expr::Immediate { data: Data::Verdict(x), .. } if x == v);
    let policy_drop = chain.base.as_ref().is_some_and(|b| b.policy == Policy::Drop);
    let ends_in_drop = rules.last().is_some_and(|r| {
        r.exprs.last().is_some_and(|e| is_verdict(e, &Verdict::Drop))
            && r.exprs[..r.exprs.len() - 1]
                .iter()
                .all(|e| matches!(e, Expr::Counter { .. }))
    });
    if !policy_drop && !ends_in_drop {
        return None;
    }
    let accepts_dnat = rules.iter().any(|r| {
        let loads = r
            .exprs
            .iter()
            .any(|e| matches!(e, Expr::Ct { key, .. } if *key == NFT_CT_STATUS));
        let tests = r.exprs.iter().any(|e| match e {
            Expr::Bitwise { mask, .. } => {
                mask.len() == 4 && u32::from_ne_bytes([mask[0], mask[1], mask[2], mask[3]]) & IPS_DST_NAT != 0
            }
            Expr::Cmp {
                op: CmpOp::Eq, data, ..
            } => data.len() == 4 && u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) == IPS_DST_NAT,
            _ => false,
        });
        loads && tests && r.exprs.last().is_some_and(|e| is_verdict(e, &Verdict::Accept))
    });
    if accepts_dnat {
        return None;
    }
    Some(if policy_drop {
        "has policy drop"
    } else {
        "ends in a drop rule"
    })
}
