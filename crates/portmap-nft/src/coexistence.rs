//! Read (never write) the rest of the ruleset for what would stop portmap's forwards: another table's
//! forward base chain that drops — by policy or by a final unconditional drop — without accepting
//! DNAT-ed traffic. A verdict in portmap's table does not carry over to another table, so such a chain
//! drops our forwarded connections whatever we accept.

use portmap_netlink::{Chain, CmpOp, Data, Expr, Hook, Policy, Rule, Socket, Verdict};

use crate::Error;
use crate::layout::TableId;

/// `IPS_DST_NAT`, the conntrack status bit `ct status dnat` tests.
const IPS_DST_NAT: u32 = 0x20;
/// `NFT_CT_STATUS`.
const NFT_CT_STATUS: u32 = 2;

/// Sentences naming each foreign forward chain that would drop DNAT-ed traffic.
pub fn blocking_forward_chains(socket: &mut Socket, own: &TableId) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    for table in socket.tables()? {
        if table.family == own.family && table.name == own.name {
            continue;
        }
        let chains = socket.chains(table.family, &table.name)?;
        let forward: Vec<&Chain> = chains
            .iter()
            .filter(|c| c.base.as_ref().is_some_and(|b| b.hook == Hook::Forward))
            .collect();
        if forward.is_empty() {
            continue;
        }
        let rules = socket.rules(table.family, &table.name)?;
        for chain in forward {
            let chain_rules: Vec<&Rule> = rules.iter().filter(|r| r.chain == chain.name).collect();
            if let Some(why) = blocks(chain, &chain_rules) {
                found.push(format!(
                    "table {} {}, chain {} {why} and does not accept `ct status dnat`: forwarded connections to the mappings will be dropped there (an accept in portmap's own table does not carry over to another table); add `ct status dnat accept` to that chain",
                    table.family.as_str(),
                    table.name,
                    chain.name
                ));
            }
        }
    }
    Ok(found)
}

/// Why `chain` drops forwarded traffic that no rule of it accepts as DNAT-ed, if it does.
pub fn blocks(chain: &Chain, rules: &[&Rule]) -> Option<&'static str> {
    let policy_drop = chain.base.as_ref().is_some_and(|b| b.policy == Policy::Drop);
    let ends_in_drop = rules.last().is_some_and(|r| is_unconditional_drop(&r.exprs));
    if !policy_drop && !ends_in_drop {
        return None;
    }
    if rules.iter().any(|r| accepts_dnat(&r.exprs)) {
        return None;
    }
    Some(if policy_drop {
        "has policy drop"
    } else {
        "ends in a drop rule"
    })
}

fn is_verdict(e: &Expr, verdict: &Verdict) -> bool {
    matches!(e, Expr::Immediate { data: Data::Verdict(v), .. } if v == verdict)
}

/// `drop` with nothing but counters before it.
fn is_unconditional_drop(exprs: &[Expr]) -> bool {
    exprs.last().is_some_and(|e| is_verdict(e, &Verdict::Drop))
        && exprs[..exprs.len() - 1]
            .iter()
            .all(|e| matches!(e, Expr::Counter { .. }))
}

/// A rule that tests the DNAT status bit and accepts.
fn accepts_dnat(exprs: &[Expr]) -> bool {
    let loads_status = exprs
        .iter()
        .any(|e| matches!(e, Expr::Ct { key, .. } if *key == NFT_CT_STATUS));
    let tests_dnat = exprs.iter().any(|e| match e {
        Expr::Bitwise { mask, .. } => {
            mask.len() == 4 && u32::from_ne_bytes([mask[0], mask[1], mask[2], mask[3]]) & IPS_DST_NAT != 0
        }
        Expr::Cmp {
            op: CmpOp::Eq, data, ..
        } => data.len() == 4 && u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) == IPS_DST_NAT,
        _ => false,
    });
    loads_status && tests_dnat && exprs.last().is_some_and(|e| is_verdict(e, &Verdict::Accept))
}
