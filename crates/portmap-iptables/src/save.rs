//! Read `iptables-save` / `ip6tables-save` output: per table, the built-in chains' policies and
//! rules and every user chain's rules, as the text lines the tool prints (after `-A NAME `). Also
//! the hash of everything in nat and filter that is not portmap's, from which portmap's generation
//! is made (see [`foreign_hash`]).
//!
//! Text only; it never runs a tool and never decides what a rule means.

use std::collections::BTreeMap;

use crate::layout::{Chains, Jump, Prefix, Table};

/// One table as `iptables-save` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDump {
    /// Built-in chains and their policies (`ACCEPT`, `DROP`), in the order printed.
    pub policies: Vec<(String, String)>,
    /// Rules of every chain (built-in and user), in order.
    pub rules: BTreeMap<String, Vec<String>>,
    /// User chains declared (`:NAME - [0:0]`), in the order printed.
    pub user_chains: Vec<String>,
    /// The packets and bytes of every rule (`iptables-save -c`), by chain in rule order; empty
    /// for output without counters.
    pub counters: BTreeMap<String, Vec<(u64, u64)>>,
}

impl TableDump {
    /// A built-in chain's policy.
    pub fn policy(&self, chain: &str) -> Option<&str> {
        self.policies
            .iter()
            .find(|(c, _)| c == chain)
            .map(|(_, p)| p.as_str())
    }

    /// The rules of a chain (empty when it has none or does not exist).
    pub fn rules_of(&self, chain: &str) -> &[String] {
        self.rules.get(chain).map_or(&[], Vec::as_slice)
    }

    /// portmap's part of the table: the chains of prefix `p` and the jumps into them that carry
    /// portmap's comment (a jump without it is someone else's rule and stays out of the picture).
    pub fn ours(&self, p: &Prefix) -> Chains {
        let mut chains = BTreeMap::new();
        for name in self.user_chains.iter().filter(|n| p.owns_name(n)) {
            chains.insert(name.clone(), self.rules_of(name).to_vec());
        }
        let comment = format!("--comment {}", crate::layout::quoted(&p.jump_comment()));
        let mut jumps = Vec::new();
        for (builtin, _) in &self.policies {
            for spec in self.rules_of(builtin) {
                let target = spec.rsplit_once("-j ").map(|(_, t)| t);
                if target.is_some_and(|t| p.owns_name(t)) && spec.contains(&comment) {
                    jumps.push(Jump {
                        builtin: builtin.clone(),
                        spec: spec.clone(),
                    });
                }
            }
        }
        Chains { chains, jumps }
    }
}

/// A whole `iptables-save` output, by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Tables printed, by name.
    pub tables: BTreeMap<String, TableDump>,
}

impl Dump {
    /// One of portmap's tables (empty when the tool printed none).
    pub fn table(&self, table: Table) -> TableDump {
        self.tables.get(table.name()).cloned().unwrap_or_default()
    }
}

/// Why a save output could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub what: String,
}

/// Parse `iptables-save` output.
pub fn parse(text: &str) -> Result<Dump, ParseError> {
    let mut dump = Dump::default();
    let mut current: Option<(String, TableDump)> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| ParseError {
            line: i + 1,
            what: what.to_owned(),
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(err("a table starts before the previous one's COMMIT"));
            }
            current = Some((name.to_owned(), TableDump::default()));
            continue;
        }
        let Some((name, table)) = current.as_mut() else {
            return Err(err("a line outside any table"));
        };
        if line == "COMMIT" {
            let (name, table) = current.take().ok_or_else(|| err("COMMIT outside a table"))?;
            dump.tables.insert(name, table);
            continue;
        }
        let _ = name;
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split(' ');
            let chain = parts.next().unwrap_or_default().to_owned();
            let policy = parts.next().ok_or_else(|| err("a chain line without a policy"))?;
            if policy == "-" {
                table.user_chains.push(chain.clone());
            } else {
                table.policies.push((chain.clone(), policy.to_owned()));
            }
            table.rules.entry(chain).or_default();
            continue;
        }
        // `iptables-save -c` prints `[packets:bytes]` before each rule.
        let (counted, line) = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((numbers, rest)) => {
                let (packets, bytes) = numbers
                    .split_once(':')
                    .and_then(|(p, b)| Some((p.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| err("rule counters that are not [packets:bytes]"))?;
                (Some((packets, bytes)), rest)
            }
            None => (None, line),
        };
        if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            table
                .rules
                .entry(chain.to_owned())
                .or_default()
                .push(spec.to_owned());
            if let Some(c) = counted {
                table.counters.entry(chain.to_owned()).or_default().push(c);
            }
            continue;
        }
        return Err(err("a line iptables-save does not print"));
    }
    if current.is_some() {
        return Err(ParseError {
            line: text.lines().count(),
            what: "the last table has no COMMIT".to_owned(),
        });
    }
    Ok(dump)
}

/// FNV-1a, 64 bits.
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

/// A hash of everything in the nat and filter tables of `dumps` that is not portmap's (chains of
/// prefix `p`, and the jumps into them that carry portmap's comment): policies, other chains and
/// their rules, the built-in chains' other rules. Folded to 32 bits. portmap's generation is this plus the serial its own commits keep in `P-MARK`.
pub fn foreign_hash(p: &Prefix, dumps: &[&Dump]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let comment = format!("--comment {}", crate::layout::quoted(&p.jump_comment()));
    for dump in dumps {
        for table in [Table::Filter, Table::Nat] {
            let t = dump.table(table);
            fnv1a(&mut hash, table.name().as_bytes());
            for (chain, policy) in &t.policies {
                // portmap's own jumps are portmap's: inserting them is its own change. A built-in
                // chain with policy ACCEPT and nothing else hashes as nothing, so a table that
                // only comes into being with portmap's first commit does not move the hash.
                let others: Vec<&String> = t
                    .rules_of(chain)
                    .iter()
                    .filter(|rule| {
                        !(rule
                            .rsplit_once("-j ")
                            .is_some_and(|(_, target)| p.owns_name(target))
                            && rule.contains(&comment))
                    })
                    .collect();
                if policy == "ACCEPT" && others.is_empty() {
                    continue;
                }
                fnv1a(&mut hash, format!(":{chain} {policy}\n").as_bytes());
                for rule in others {
                    fnv1a(&mut hash, rule.as_bytes());
                    fnv1a(&mut hash, b"\n");
                }
            }
            for chain in t.user_chains.iter().filter(|c| !p.owns_name(c)) {
                fnv1a(&mut hash, format!(":{chain}\n").as_bytes());
                for rule in t.rules_of(chain) {
                    fnv1a(&mut hash, rule.as_bytes());
                    fnv1a(&mut hash, b"\n");
                }
            }
        }
        fnv1a(&mut hash, b"\x00");
    }
    ((hash >> 32) ^ hash) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 on Tue Dec  1 23:04:57 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [10:20]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:PORTMAP-FWD - [0:0]
-A FORWARD -m conntrack --ctstate DNAT -m comment --comment \"portmap PORTMAP\" -j PORTMAP-FWD
-A FORWARD -j DOCKER
-A FORWARD -j PORTMAP-FWD
-A PORTMAP-FWD -p tcp -j PORTMAP-FT-0-65535
COMMIT
# Completed on Tue Dec  1 23:04:57 2026
";

    #[test]
    fn reads_policies_chains_and_our_jumps() {
        let dump = parse(SAVE).expect("parses");
        let filter = dump.table(Table::Filter);
        assert_eq!(filter.policy("FORWARD"), Some("DROP"));
        assert_eq!(filter.user_chains, ["DOCKER", "PORTMAP-FWD"]);
        let p = Prefix::new("PORTMAP").expect("valid");
        let ours = filter.ours(&p);
        assert_eq!(ours.chains.len(), 1);
        // The jump without portmap's comment is not portmap's.
        assert_eq!(ours.jumps.len(), 1);
        assert_eq!(ours.jumps[0].builtin, "FORWARD");
    }

    #[test]
    fn the_foreign_hash_sees_other_rules_but_not_portmaps() {
        let p = Prefix::new("PORTMAP").expect("valid");
        let hash = |text: &str| foreign_hash(&p, &[&parse(text).expect("parses")]);
        let a = hash(SAVE);
        assert_eq!(
            a,
            hash(
                &SAVE
                    .replace("[10:20]", "[99:1234]")
                    .replace("23:04:57", "23:05:00")
            )
        );
        assert_ne!(a, hash(&SAVE.replace("-A FORWARD -j DOCKER\n", "")));
        assert_ne!(a, hash(&SAVE.replace(":FORWARD DROP", ":FORWARD ACCEPT")));
        // portmap's own chains do not count (its commit serial does, see observe).
        assert_eq!(
            a,
            hash(&SAVE.replace("-A PORTMAP-FWD -p tcp -j PORTMAP-FT-0-65535\n", ""))
        );
        // A table of nothing but empty ACCEPT chains is the same as none.
        let empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(hash(SAVE), hash(&format!("{SAVE}{empty}")));
        // A jump without portmap's comment is someone else's rule.
        assert_ne!(a, hash(&SAVE.replace("-A FORWARD -j PORTMAP-FWD\n", "")));
    }

    #[test]
    fn refuses_what_save_does_not_print() {
        assert!(parse("*nat\n-A X\n").is_err());
        assert!(parse("-A X -j ACCEPT\n").is_err());
        assert!(parse("*nat\nbogus\nCOMMIT\n").is_err());
    }
}
