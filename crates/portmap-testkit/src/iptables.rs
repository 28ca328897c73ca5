//! Reading and writing iptables state in a namespace, for either variant (`legacy` or `nft`) and
//! either family: `iptables-save` normalised so that equal tables list equally, the part of it that
//! is portmap's (its `PREFIX-…` chains in nat and filter and the jumps into them that carry its
//! comment), `iptables-restore --noflush` of a script, and other tools' chains and rules
//! ([`FOREIGN`], [`FOREIGN6`]) to prove that portmap leaves them byte-identical.
//!
//! Every program runs inside the namespace it is given (`ip netns exec`), never in the host's.

use std::fmt::Write as _;

use crate::command::Run;
use crate::netns::Netns;

/// Another tool's chains and rules in IPv4 nat, filter and mangle, as Docker leaves them
/// (`FORWARD` policy DROP, its own chains and jumps), plus two look-alikes portmap must never
/// take for its own: `PORTMAPX` (no `-` after the prefix) in filter, and `PORTMAP-MANGLE` (marker
/// comment and all) in mangle, a table portmap does not write.
pub const FOREIGN: &str = "\
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:PORTMAPX - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -s 198.51.100.9/32 -j DROP
-A DOCKER-USER -j RETURN
-A PORTMAPX -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*mangle
:PORTMAP-MANGLE - [0:0]
-A PREROUTING -j PORTMAP-MANGLE
-A PORTMAP-MANGLE -m comment --comment \"managed by portmap\" -j RETURN
COMMIT
";

/// Another tool's chains and rules in IPv6 nat and filter.
pub const FOREIGN6: &str = "\
*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -s 2001:db8:99::/48 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
COMMIT
";

/// The two iptables variants, by the infix of their programs.
pub const VARIANTS: [&str; 2] = ["legacy", "nft"];

/// The variant a `--backend` name drives: `iptables-legacy` → `legacy`, `iptables-nft` → `nft`;
/// `None` for the nft backend.
pub fn variant_of(backend: &str) -> Option<&'static str> {
    match backend {
        "iptables-legacy" => Some("legacy"),
        "iptables-nft" => Some("nft"),
        _ => None,
    }
}

/// The program of `variant` for one family: `tool("nft", true, "save")` is `ip6tables-nft-save`,
/// `tool("legacy", false, "")` is `iptables-legacy`.
pub fn tool(variant: &str, v6: bool, what: &str) -> String {
    let family = if v6 { "ip6tables" } else { "iptables" };
    if what.is_empty() {
        format!("{family}-{variant}")
    } else {
        format!("{family}-{variant}-{what}")
    }
}

/// `iptables-save` (or `ip6tables-save`) of `variant` in `ns`, normalised (see [`normalize`]).
#[track_caller]
pub fn save(ns: &Netns, variant: &str, v6: bool) -> String {
    let out = ns.exec(&tool(variant, v6, "save"), &[]);
    assert!(out.ok(), "in namespace {}:\n{out}", ns.name());
    normalize(&out.stdout)
}

/// Feed `script` to `iptables-restore --noflush` (or `ip6tables-restore`) of `variant` in `ns`;
/// panics when the tool refuses it.
#[track_caller]
pub fn restore(ns: &Netns, variant: &str, v6: bool, script: &str) {
    let program = tool(variant, v6, "restore");
    let out = ns.exec_with_stdin(&program, &["--noflush"], Some(script));
    assert!(
        out.ok(),
        "{program} refused the script in {}:\n{script}\n{out}",
        ns.name()
    );
}

/// `iptables-VARIANT args…` (or `ip6tables-…`) in `ns`, whatever its exit code.
pub fn exec(ns: &Netns, variant: &str, v6: bool, args: &[&str]) -> Run {
    ns.exec(&tool(variant, v6, ""), args)
}

/// Save output without its dated comment lines, with the chain counters zeroed and portmap's
/// commit serial (`--comment "generation N"` in its marker chain) shown as `N`: what stays equal
/// while nobody changes a rule.
pub fn normalize(save: &str) -> String {
    let mut out = String::with_capacity(save.len());
    for line in save.lines().filter(|l| !l.starts_with('#')) {
        match line.rfind(" [") {
            Some(at) if line.starts_with(':') => {
                out.push_str(&line[..at]);
                out.push_str(" [0:0]");
            }
            _ => out.push_str(&mask_serial(line)),
        }
        out.push('\n');
    }
    out
}

fn mask_serial(line: &str) -> String {
    const MARK: &str = "--comment \"generation ";
    match line.find(MARK) {
        Some(at) => {
            let rest = &line[at + MARK.len()..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            format!("{}{MARK}N{}", &line[..at], &rest[digits..])
        }
        None => line.to_owned(),
    }
}

/// The tables of a (normalised) save output, each as its lines from `*table` to `COMMIT`.
pub fn tables(save: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let mut block = Vec::new();
    for line in save.lines() {
        block.push(line);
        if line == "COMMIT" {
            out.push(std::mem::take(&mut block));
        }
    }
    out
}

/// Whether a table is only what iptables leaves once it was used: built-in chains of policy
/// ACCEPT and nothing else (no rule of anyone's).
pub fn is_skeleton(table: &[&str]) -> bool {
    table
        .iter()
        .all(|l| l.starts_with('*') || *l == "COMMIT" || (l.starts_with(':') && l.contains(" ACCEPT ")))
}

/// Whether `line` of table `table` is portmap's, for chain prefix `prefix`: in nat and filter, a
/// chain `PREFIX-…`, a rule in one, or a jump from a built-in chain that carries portmap's comment
/// (`portmap PREFIX`).
pub fn is_ours(table: &str, line: &str, prefix: &str) -> bool {
    if table != "nat" && table != "filter" {
        return false;
    }
    let own = format!("{prefix}-");
    if let Some(decl) = line.strip_prefix(':') {
        return decl.starts_with(&own);
    }
    let Some(rule) = line.strip_prefix("-A ") else {
        return false;
    };
    rule.starts_with(&own)
        || (rule.contains(&format!("--comment \"portmap {prefix}\"")) && rule.contains(&format!("-j {own}")))
}

/// The part of a (normalised) save output that is portmap's ([`is_ours`]), table by table
/// (`*nat`, its lines, nothing else); empty when portmap has nothing there.
pub fn ours(save: &str, prefix: &str) -> String {
    let mut out = String::new();
    for table in tables(save) {
        let name = table.first().and_then(|l| l.strip_prefix('*')).unwrap_or("");
        let lines: Vec<&&str> = table.iter().filter(|l| is_ours(name, l, prefix)).collect();
        if !lines.is_empty() {
            out.push('*');
            out.push_str(name);
            out.push('\n');
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// A (normalised) save output without portmap's part (see [`is_ours`]; `None`: keep it) and
/// without skeleton tables ([`is_skeleton`]), which no rule of anyone's is in.
pub fn without(save: &str, prefix: Option<&str>) -> String {
    let mut out = String::new();
    for table in tables(save) {
        let name = table.first().and_then(|l| l.strip_prefix('*')).unwrap_or("");
        let kept: Vec<&str> = table
            .iter()
            .copied()
            .filter(|l| prefix.is_none_or(|p| !is_ours(name, l, p)))
            .collect();
        if !is_skeleton(&kept) {
            for line in kept {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The rules of `chain`s whose line matches `pick`, as `-D CHAIN spec` lines of a restore script
/// for table `table` (`None` when there is none): how a user deletes rules by hand.
pub fn delete_script(save: &str, table: &str, pick: impl Fn(&str, &str) -> bool) -> Option<String> {
    let mut script = String::new();
    for block in tables(save) {
        if block.first() != Some(&format!("*{table}").as_str()) {
            continue;
        }
        for line in &block {
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if pick(chain, spec) {
                let _ = writeln!(script, "-D {chain} {spec}");
            }
        }
    }
    (!script.is_empty()).then(|| format!("*{table}\n{script}COMMIT\n"))
}
