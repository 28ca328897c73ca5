//! What the lab's backend wrote into the router, in that backend's own terms, so that one test
//! body runs against every backend: the whole kernel's rules as every tool lists them
//! ([`Topology::kernel`]), the part that is portmap's ([`Topology::owned`]) and the rest
//! ([`Topology::foreign`]), another tool's rules to put beside portmap's
//! ([`Topology::load_foreign`]), and damage done by hand with the backend's own tool
//! ([`Topology::damage`]): `nft` for the nft backend, `iptables-legacy` / `iptables-nft` (and the
//! `ip6tables` ones) for the iptables variants.
//!
//! Everything runs in the lab's router namespace.

use std::fmt::Write as _;

use crate::iptables;
use crate::netns::Netns;
use crate::nft;
use crate::topology::Topology;

/// portmap's chain prefix for iptables (the default `--table portmap` becomes `PORTMAP`).
pub const PREFIX: &str = "PORTMAP";

/// Damage done by hand to what portmap wrote, with the lab backend's own tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage<'a> {
    /// Everything portmap wrote. nft: `delete table inet portmap`; iptables: its jumps from the
    /// built-in chains, then its chains, in nat and filter of both families.
    Everything,
    /// The chain that hands WAN traffic to the DNAT. nft: `delete chain inet portmap prerouting`;
    /// iptables: nat's `PORTMAP-PRE` flushed (both families).
    DnatChain,
    /// What hooks the DNAT in. nft: every rule of chain `prerouting`; iptables: the jump from
    /// nat's `PREROUTING` to `PORTMAP-PRE` (both families).
    DnatJump,
    /// The IPv4 TCP forward of one port. nft: its `dnat4` element; iptables: its DNAT rule, in
    /// whichever chain of the dispatch tree holds it.
    Forward(u16),
    /// The allow-list guard of an IPv4 TCP port, so every source gets through. nft: its
    /// `guard4` element; iptables: the mapping's DROP rule in filter.
    Guard(u16),
    /// The accepts of an IPv4 TCP port's allow-list, so no source gets through. nft: the
    /// mapping's set `allow_<name>_src` flushed; iptables: its ACCEPT rules in filter.
    AllowList {
        /// The mapping.
        mapping: &'a str,
        /// Its external port.
        port: u16,
    },
    /// An IPv4 TCP forward nobody configured, under a mapping name, written into portmap's own
    /// objects. nft: an element of `dnat4` with that comment; iptables: a DNAT rule with that
    /// comment in the dispatch tree chain that holds the port.
    ExtraForward {
        /// The mapping name it carries.
        mapping: &'a str,
        /// The external port.
        port: u16,
        /// Where it forwards, e.g. `192.168.1.9:9000`.
        to: &'a str,
    },
}

/// A firewall of another program, as nft lists it, in table `inet NAME`.
fn firewall(name: &str) -> String {
    format!(
        "table inet {name} {{\n\tset blocklist {{\n\t\ttype ipv4_addr\n\t\telements = {{ 198.51.100.9 }}\n\t}}\n\
         \tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr @blocklist drop\n\t}}\n}}\n"
    )
}

impl Topology {
    /// The iptables variant of the lab's backend (`legacy`, `nft`), `None` for the nft backend.
    pub fn variant(&self) -> Option<&'static str> {
        iptables::variant_of(self.backend())
    }

    /// Every rule the router's kernel holds: [`listing`] of the router.
    #[track_caller]
    pub fn kernel(&self) -> String {
        listing(&self.router)
    }

    /// [`Topology::kernel`] without what is portmap's: its table (nft), or its chains and
    /// commented jumps in nat and filter of the lab's variant (iptables). What apply and destroy
    /// must leave byte-identical.
    #[track_caller]
    pub fn foreign(&self) -> String {
        let variant = self.variant();
        // iptables-nft's rules live in nft tables too; its own save lists them.
        let nft = match variant {
            None => nft_without(&self.router, false, Some("inet portmap")),
            Some("nft") => nft_without(&self.router, true, None),
            Some(_) => nft_without(&self.router, false, None),
        };
        let mut out = format!("--- nft ---\n{nft}");
        for v in iptables::VARIANTS {
            for v6 in [false, true] {
                let save = iptables::save(&self.router, v, v6);
                let prefix = (variant == Some(v)).then_some(PREFIX);
                let _ = write!(
                    out,
                    "--- {} ---\n{}",
                    iptables::tool(v, v6, "save"),
                    iptables::without(&save, prefix)
                );
            }
        }
        out
    }

    /// What portmap wrote, normalised: the nft backend's table `inet portmap`, or the iptables
    /// variant's `PORTMAP-…` chains and jumps in nat and filter of both families (commit serial
    /// masked). `None` when there is nothing of portmap's.
    #[track_caller]
    pub fn owned(&self) -> Option<String> {
        let Some(variant) = self.variant() else {
            return self.table();
        };
        let mut out = String::new();
        for v6 in [false, true] {
            let ours = iptables::ours(&iptables::save(&self.router, variant, v6), PREFIX);
            if !ours.is_empty() {
                out.push_str(if v6 { "# ip6tables\n" } else { "# iptables\n" });
                out.push_str(&ours);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Put another tool's rules beside portmap's, with the lab backend's own tool: nft's
    /// [`nft::FOREIGN_TABLE`], or [`iptables::FOREIGN`] and [`iptables::FOREIGN6`] in the lab's
    /// variant (Docker's chains, a FORWARD policy of DROP, and look-alikes of portmap's names).
    #[track_caller]
    pub fn load_foreign(&self) {
        match self.variant() {
            None => self.router.nft_load(nft::FOREIGN_TABLE),
            Some(variant) => {
                iptables::restore(&self.router, variant, false, iptables::FOREIGN);
                iptables::restore(&self.router, variant, true, iptables::FOREIGN6);
            }
        }
    }

    /// Make, with the lab backend's own tool, what portmap would take for its own by its name but
    /// that carries no marker: another program's, which portmap must never change or delete. nft:
    /// table `inet NAME`, a firewall with a set and an input chain; iptables: chains `PREFIX-IN`
    /// (filter) and `PREFIX-PRE` (nat) with rules, jumped to from `INPUT` and `PREROUTING`, for the
    /// prefix `--table NAME` gives (`portmap` gives `PORTMAP`).
    #[track_caller]
    pub fn load_unmarked(&self, name: &str) {
        let Some(variant) = self.variant() else {
            self.router.nft_load(&firewall(name));
            return;
        };
        let prefix = if name == "portmap" { PREFIX } else { name };
        iptables::restore(
            &self.router,
            variant,
            false,
            &format!(
                "*filter\n:{prefix}-IN - [0:0]\n-A INPUT -j {prefix}-IN\n-A {prefix}-IN -s 198.51.100.9/32 -j DROP\nCOMMIT\n\
                 *nat\n:{prefix}-PRE - [0:0]\n-A PREROUTING -j {prefix}-PRE\n-A {prefix}-PRE -p tcp -m tcp --dport 9 -j RETURN\nCOMMIT\n"
            ),
        );
    }

    /// Damage what portmap wrote, by hand, with the lab backend's own tool; panics when there was
    /// nothing to damage (the test would prove nothing). Returns the name of the object damaged as
    /// portmap's messages name it (`prerouting`, `PORTMAP-PRE`, …).
    #[track_caller]
    pub fn damage(&self, damage: Damage<'_>) -> String {
        match self.variant() {
            None => self.damage_nft(damage),
            Some(variant) => self.damage_iptables(variant, damage),
        }
    }

    #[track_caller]
    fn damage_nft(&self, damage: Damage<'_>) -> String {
        let r = &self.router;
        match damage {
            Damage::Everything => {
                r.nft(&["delete", "table", "inet", "portmap"]).success();
                "inet portmap".to_owned()
            }
            Damage::DnatChain => {
                r.nft(&["delete", "chain", "inet", "portmap", "prerouting"])
                    .success();
                "prerouting".to_owned()
            }
            Damage::DnatJump => {
                let handles = nft::rule_handles(r, "inet portmap", "prerouting");
                assert!(!handles.is_empty(), "chain prerouting has no rules to delete");
                for handle in handles {
                    let handle = handle.to_string();
                    r.nft(&[
                        "delete",
                        "rule",
                        "inet",
                        "portmap",
                        "prerouting",
                        "handle",
                        &handle,
                    ])
                    .success();
                }
                "prerouting".to_owned()
            }
            Damage::Forward(port) => {
                r.nft_load(&format!("delete element inet portmap dnat4 {{ tcp . {port} }}\n"));
                "dnat4".to_owned()
            }
            Damage::Guard(port) => {
                r.nft_load(&format!(
                    "delete element inet portmap guard4 {{ tcp . {port} }}\n"
                ));
                "guard4".to_owned()
            }
            Damage::AllowList { mapping, .. } => {
                let set = format!("allow_{mapping}_src");
                r.nft_load(&format!("flush set inet portmap {set}\n"));
                set
            }
            Damage::ExtraForward { mapping, port, to } => {
                let (ip, to_port) = to.rsplit_once(':').expect("ADDR:PORT");
                r.nft_load(&format!(
                    "add element inet portmap dnat4 {{ tcp . {port} comment \"{mapping}\" : {ip} . {to_port} }}\n"
                ));
                "dnat4".to_owned()
            }
        }
    }

    #[track_caller]
    fn damage_iptables(&self, variant: &str, damage: Damage<'_>) -> String {
        let r = &self.router;
        let pre = format!("{PREFIX}-PRE");
        let own = format!("{PREFIX}-");
        let mut done = false;
        let mut run = |v6: bool, script: Option<String>| {
            if let Some(script) = script {
                iptables::restore(r, variant, v6, &script);
                done = true;
            }
        };
        let saves = [false, true].map(|v6| (v6, iptables::save(r, variant, v6)));
        let name = match damage {
            Damage::Everything => {
                for (v6, save) in &saves {
                    for table in ["nat", "filter"] {
                        run(*v6, remove_all(save, table));
                    }
                }
                PREFIX.to_owned()
            }
            Damage::DnatChain => {
                for (v6, save) in &saves {
                    let declared = save.lines().any(|l| l.starts_with(&format!(":{pre} ")));
                    run(*v6, declared.then(|| format!("*nat\n:{pre} - [0:0]\nCOMMIT\n")));
                }
                pre
            }
            Damage::DnatJump => {
                for (v6, save) in &saves {
                    let target = format!("-j {pre}");
                    run(
                        *v6,
                        iptables::delete_script(save, "nat", |chain, spec| {
                            chain == "PREROUTING" && spec.ends_with(&target)
                        }),
                    );
                }
                "PREROUTING".to_owned()
            }
            Damage::Forward(port) => {
                let dport = format!("-p tcp -m tcp --dport {port} ");
                run(
                    false,
                    iptables::delete_script(&saves[0].1, "nat", |chain, spec| {
                        chain.starts_with(&own) && spec.starts_with(&dport) && spec.contains(" -j DNAT ")
                    }),
                );
                "DNAT".to_owned()
            }
            Damage::Guard(port) | Damage::AllowList { port, .. } => {
                let verdict = if matches!(damage, Damage::Guard(_)) {
                    " -j DROP"
                } else {
                    " -j ACCEPT"
                };
                let orig = format!(" --ctorigdstport {port} ");
                run(
                    false,
                    iptables::delete_script(&saves[0].1, "filter", |chain, spec| {
                        chain.starts_with(&own)
                            && spec.starts_with("-p tcp ")
                            && spec.contains(&orig)
                            && spec.ends_with(verdict)
                    }),
                );
                verdict.trim_start_matches(" -j ").to_owned()
            }
            Damage::ExtraForward { mapping, port, to } => {
                let chain = tree_chain(&saves[0].1, "NT", port);
                run(
                    false,
                    chain.as_ref().map(|chain| {
                        format!(
                            "*nat\n-A {chain} -p tcp -m tcp --dport {port} -m comment --comment {mapping} -j DNAT --to-destination {to}\nCOMMIT\n"
                        )
                    }),
                );
                chain.unwrap_or_default()
            }
        };
        assert!(
            done,
            "nothing of portmap's to damage ({damage:?}) in {}:\n{}\n{}",
            r.name(),
            saves[0].1,
            saves[1].1
        );
        name
    }
}

/// The narrowest chain `PORTMAP-KIND-A-B` of a save output whose port range holds `port`: where
/// the dispatch tree (`NT`: nat TCP, `FT`: filter TCP, …) puts a rule for it.
fn tree_chain(save: &str, kind: &str, port: u16) -> Option<String> {
    let head = format!("{PREFIX}-{kind}-");
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|d| d.split(' ').next())
        .filter_map(|chain| {
            let (a, b) = chain.strip_prefix(&head)?.split_once('-')?;
            let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
            (a..=b).contains(&port).then(|| (b - a, chain.to_owned()))
        })
        .min()
        .map(|(_, chain)| chain)
}

/// Every rule a namespace's kernel holds, as `nft list ruleset` and both iptables variants'
/// `iptables-save` and `ip6tables-save` list it, normalised (counters, handles, dates and
/// portmap's commit serial aside), without what iptables leaves behind once used (tables of only
/// built-in chains that accept and hold no rule; iptables-nft's empty accepting base chains). Equal
/// before and after means nothing changed, whoever's rules they are.
#[track_caller]
pub fn listing(ns: &Netns) -> String {
    let mut out = format!("--- nft ---\n{}", nft_without(ns, false, None));
    for variant in iptables::VARIANTS {
        for v6 in [false, true] {
            let save = iptables::save(ns, variant, v6);
            let _ = write!(
                out,
                "--- {} ---\n{}",
                iptables::tool(variant, v6, "save"),
                iptables::without(&save, None)
            );
        }
    }
    out
}

/// A restore script that removes portmap's jumps and chains from `table` of `save`, as a user
/// would by hand: delete the jumps, flush the chains, delete them.
fn remove_all(save: &str, table: &str) -> Option<String> {
    let block = iptables::tables(save)
        .into_iter()
        .find(|b| b.first() == Some(&format!("*{table}").as_str()))?;
    let own = format!("{PREFIX}-");
    let chains: Vec<&str> = block
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|d| d.split(' ').next())
        .filter(|c| c.starts_with(&own))
        .collect();
    let jumps: Vec<&str> = block
        .iter()
        .filter(|l| iptables::is_ours(table, l, PREFIX))
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|r| !r.starts_with(&own))
        .collect();
    if chains.is_empty() && jumps.is_empty() {
        return None;
    }
    let mut script = format!("*{table}\n");
    for chain in &chains {
        let _ = writeln!(script, ":{chain} - [0:0]");
    }
    for jump in &jumps {
        let _ = writeln!(script, "-D {jump}");
    }
    for chain in &chains {
        let _ = writeln!(script, "-X {chain}");
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// Normalised `nft list ruleset` of the router without what iptables-nft leaves behind once used
/// (in its tables, base chains that accept and hold no rule; tables left with no chain), without
/// every table of the iptables-nft
/// variant (`ip`/`ip6` `nat`, `filter`, `mangle`, `raw`: its own save lists them) when
/// `skip_xtables`, and without table `skip` (e.g. `inet portmap`).
#[track_caller]
fn nft_without(ns: &Netns, skip_xtables: bool, skip: Option<&str>) -> String {
    let ruleset = nft::ruleset(ns);
    let builtin = |table: &str, names: &[&str]| {
        ["ip", "ip6"]
            .iter()
            .flat_map(|f| names.iter().map(move |n| format!("{f} {n} {{")))
            .any(|head| table.starts_with(&head))
    };
    let mut kept = Vec::new();
    for table in ruleset.split("\ntable ").map(|b| b.trim_start_matches("table ")) {
        if table.trim().is_empty() {
            continue;
        }
        if skip.is_some_and(|s| table.starts_with(&format!("{s} {{"))) {
            continue;
        }
        if skip_xtables && builtin(table, &["nat", "filter", "mangle", "raw"]) {
            continue;
        }
        if !builtin(table, &["nat", "filter", "mangle", "raw"]) {
            kept.push(format!("table {}", table.trim_end()));
            continue;
        }
        // iptables-nft makes the base chains of its tables as it first needs each one: an empty
        // one that accepts is only a trace of use, no rule of anyone's.
        let chains = without_empty_base_chains(table);
        if chains.lines().any(|l| l.trim().starts_with("chain ")) {
            kept.push(format!("table {}", chains.trim_end()));
        }
    }
    let mut out = kept.join("\n");
    out.push('\n');
    out
}

/// One table of an nft listing (from its `NAME {` line) without the base chains that hold nothing
/// but their `type … policy accept;` line.
fn without_empty_base_chains(table: &str) -> String {
    let mut out = String::new();
    let mut chain: Vec<&str> = Vec::new();
    for line in table.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            // Blank lines only separate chains, and would tell where one was removed.
            continue;
        }
        if trimmed.starts_with("chain ") && trimmed.ends_with('{') {
            chain.push(line);
            continue;
        }
        if chain.is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        chain.push(line);
        if trimmed == "}" {
            let body: Vec<&str> = chain[1..chain.len() - 1]
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            let empty_base = matches!(body.as_slice(), [only] if only.starts_with("type ") && only.ends_with("policy accept;"));
            if !empty_base {
                for l in &chain {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            chain.clear();
        }
    }
    out
}
