//! Damage fuzzer, iptables mode: "observe is total, apply converges from any state", for both
//! variants, from live `PORTMAP-…` chains.
//!
//! One lab (client / router / LAN, IPv4 and IPv6) holds [`MAPPINGS`] mappings drawn from the
//! seed (tcp, udp and both; single ports, ranges and offset ranges; some with an allow-list; IPv4
//! and IPv6 targets; hairpin on), enough that the dispatch trees have several levels. Each case
//! damages portmap's chains with 1–3 `iptables-restore --noflush` scripts of the lab's variant,
//! each built from `iptables-save` / `ip6tables-save` as it is right then (so it targets real
//! rules), and requires:
//!
//! * `plan --detailed-exitcode` exits 2 (drift is shown), or 0 when the damage changed nothing,
//! * `apply --auto-approve` exits 0 and the next plan exits 0 (one apply converges),
//! * portmap's chains and jumps are then exactly what the first apply built (commit serial aside).
//!
//! A case that removes a marker (the first rule of a `PORTMAP-MARK` chain) expects the opposite:
//! the table's chains are no longer portmap's, so `plan` and `apply` must refuse them in words and
//! change nothing; the fuzzer then deletes portmap's chains by hand and applies again. Real
//! connections check the probes before the first case, every [`TRAFFIC_EVERY`] cases and after
//! the last.
//!
//! | kind | what it does |
//! |---|---|
//! | `delete-rule` | delete one rule of a portmap chain (not the marker) |
//! | `flush-chain` | empty a portmap chain (not a marker chain) |
//! | `insert-rule` | a rule portmap did not write (accept, drop, return, a DNAT elsewhere), anywhere in a chain |
//! | `duplicate-rule` | append a copy of one of its rules to a chain |
//! | `move-rule` | move a rule to the top of its chain |
//! | `alter-dnat` | a DNAT rule replaced by one to another host |
//! | `delete-jump` | a jump from a built-in chain into portmap's deleted |
//! | `duplicate-jump` | such a jump appended a second time |
//! | `delete-tree-chain` | a chain of a dispatch tree deleted, with the jumps to it |
//! | `foreign-chain` | a chain of portmap's prefix that portmap did not write, sometimes jumped to |
//! | `marker-removed` | a marker deleted: no longer portmap's, must be refused |
//!
//! Knobs: `PORTMAP_DAMAGE_SEED` (replay; printed at the start and in every message, shared with
//! the nft fuzzer) and `PORTMAP_DAMAGE_IPTABLES_CASES` (cases per variant, default
//! [`DEFAULT_CASES`]). Must not: touch the host namespace (every program runs in the lab's router).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use portmap_testkit::{CLIENT, CLIENT6, Damage, OTHER_CLIENT, Topology, iptables, require_root};

use crate::PORTMAP;
use crate::damage::{Rng, SEED_ENV};

/// Mappings in the configuration (the probes included).
const MAPPINGS: usize = 60;
/// Cases per variant when `PORTMAP_DAMAGE_IPTABLES_CASES` is not set.
const DEFAULT_CASES: usize = 30;
/// Real traffic is checked after every this many cases, and after the last.
const TRAFFIC_EVERY: usize = 15;
const CASES_ENV: &str = "PORTMAP_DAMAGE_IPTABLES_CASES";

#[test]
fn iptables_legacy_damage_is_seen_and_repaired_by_one_apply() {
    require_root!();
    fuzz("iptables-legacy");
}

#[test]
fn iptables_nft_damage_is_seen_and_repaired_by_one_apply() {
    require_root!();
    fuzz("iptables-nft");
}

fn seed() -> u64 {
    std::env::var(SEED_ENV).map_or_else(
        |_| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (nanos ^ (u64::from(std::process::id()) << 20)) % 1_000_000_000_000
        },
        |s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"))
        },
    )
}

fn cases() -> usize {
    std::env::var(CASES_ENV).map_or(DEFAULT_CASES, |s| {
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{CASES_ENV}={s:?} is not a number: {e}"))
    })
}

/// The probes traffic checks use (ports below 10000), then mappings drawn from `rng` on distinct
/// ports from 10000 up.
fn config(rng: &mut Rng) -> String {
    let mut yaml = String::from(
        "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nhairpin: true\nmasquerade: true\n\
         sources: { office: [198.51.100.0/24, 203.0.113.2/32, \"2001:db8:1::/64\"] }\nmappings:\n\
         \x20 - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n\
         \x20 - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }\n\
         \x20 - { name: web6, port: 8080, to: \"2001:db8:2::66\", to_port: 80 }\n",
    );
    let hosts4 = ["192.168.1.66", "192.168.1.25", "192.168.1.70", "192.168.1.71"];
    let hosts6 = ["2001:db8:2::66", "2001:db8:2::25", "2001:db8:2::70"];
    let allow4 = ["198.51.100.0/24", "192.0.2.0/25", "203.0.113.2/32"];
    let allow6 = ["2001:db8:1::/64", "2001:db8:77::/48"];
    let mut port: u32 = 10_000;
    for i in 3..MAPPINGS {
        port += rng.between(1, 400);
        let protocol = *rng.pick(&["tcp", "udp", "both"]);
        let v6 = rng.percent(15);
        let to = if v6 { rng.pick(&hosts6) } else { rng.pick(&hosts4) };
        let len = if rng.percent(25) { rng.between(1, 4) } else { 0 };
        let (ports, to_port) = if len == 0 {
            (port.to_string(), String::new())
        } else if rng.percent(50) {
            (format!("\"{port}-{}\"", port + len), String::new())
        } else {
            let base = rng.between(20_000, 30_000);
            (
                format!("\"{port}-{}\"", port + len),
                format!(", to_port: \"{base}-{}\"", base + len),
            )
        };
        port += len;
        let allow = if rng.percent(20) {
            let list: &[&str] = if v6 { &allow6 } else { &allow4 };
            format!(", allow_from: [{}]", rng.pick(list))
        } else if rng.percent(5) {
            // A named list: iptables writes its members into the mapping's own rules.
            ", allow_from: [office]".to_owned()
        } else {
            String::new()
        };
        let _ = writeln!(
            yaml,
            "  - {{ name: m{i}, protocol: {protocol}, port: {ports}, to: \"{to}\"{to_port}{allow} }}"
        );
    }
    yaml
}

/// portmap's part of one table of one family, as `iptables-save` lists it.
#[derive(Debug, Default)]
struct Part {
    v6: bool,
    table: &'static str,
    /// Chains `PORTMAP-…`, in the order listed.
    chains: Vec<String>,
    /// Their rules: (chain, spec), in order.
    rules: Vec<(String, String)>,
    /// Jumps from built-in chains: (built-in, spec).
    jumps: Vec<(String, String)>,
}

impl Part {
    fn rules_of(&self, chain: &str) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|(c, _)| c == chain)
            .map(|(_, s)| s.as_str())
            .collect()
    }
}

/// portmap's four parts, read now.
fn parts(t: &Topology, variant: &str) -> Vec<Part> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let save = iptables::save(&t.router, variant, v6);
        for block in iptables::tables(&save) {
            let table = match block.first().copied() {
                Some("*nat") => "nat",
                Some("*filter") => "filter",
                _ => continue,
            };
            let mut part = Part {
                v6,
                table,
                ..Part::default()
            };
            for line in &block {
                if !iptables::is_ours(table, line, "PORTMAP") {
                    continue;
                }
                if let Some(decl) = line.strip_prefix(':') {
                    part.chains.push(decl.split(' ').next().unwrap_or("").to_owned());
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                    let entry = (chain.to_owned(), spec.to_owned());
                    if chain.starts_with("PORTMAP-") {
                        part.rules.push(entry);
                    } else {
                        part.jumps.push(entry);
                    }
                }
            }
            out.push(part);
        }
    }
    out
}

const MARKER: &str = "-m comment --comment \"managed by portmap\"";

/// One damage: a restore script for one family, and what it is, for messages.
#[derive(Debug, Clone)]
struct Hurt {
    kind: &'static str,
    v6: bool,
    script: String,
}

const KINDS: [(&str, usize); 11] = [
    ("delete-rule", 5),
    ("flush-chain", 3),
    ("insert-rule", 5),
    ("duplicate-rule", 3),
    ("move-rule", 3),
    ("alter-dnat", 3),
    ("delete-jump", 2),
    ("duplicate-jump", 1),
    ("delete-tree-chain", 2),
    ("foreign-chain", 2),
    ("marker-removed", 1),
];

fn draw_kind(rng: &mut Rng) -> &'static str {
    let total: usize = KINDS.iter().map(|(_, w)| w).sum();
    let mut n = rng.below(total);
    for (kind, weight) in KINDS {
        if n < weight {
            return kind;
        }
        n -= weight;
    }
    KINDS[0].0
}

/// A damage of `kind` to one of `parts`, `None` when there is nothing of that kind to damage.
fn hurt(rng: &mut Rng, parts: &[Part], kind: &'static str, serial: &mut u32) -> Option<Hurt> {
    let part = rng.pick(parts);
    let table = part.table;
    let wrap = |body: String| format!("*{table}\n{body}COMMIT\n");
    let is_mark = |c: &str| c == "PORTMAP-MARK";
    let some_rule = |rng: &mut Rng, keep: &dyn Fn(&(String, String)) -> bool| {
        let list: Vec<&(String, String)> = part.rules.iter().filter(|r| keep(r)).collect();
        (!list.is_empty()).then(|| list[rng.below(list.len())].clone())
    };
    let body = match kind {
        "delete-rule" => {
            let (chain, spec) = some_rule(rng, &|(c, s)| !(is_mark(c) && s == MARKER))?;
            format!("-D {chain} {spec}\n")
        }
        "flush-chain" => {
            let list: Vec<&String> = part.chains.iter().filter(|c| !is_mark(c)).collect();
            let chain = list.get(rng.below(list.len().max(1)))?;
            format!(":{chain} - [0:0]\n")
        }
        "insert-rule" => {
            let chain = rng.pick(&part.chains).clone();
            let len = part.rules_of(&chain).len();
            // Never above a marker: that is `marker-removed`'s job.
            let first = if is_mark(&chain) { 2 } else { 1 };
            let at = first + rng.below(len + 2 - first);
            let port = rng.between(1, 65535);
            let (host, source) = if part.v6 {
                ("[2001:db8:2::9]", "2001:db8:99::7/128")
            } else {
                ("192.168.1.9", "198.51.100.7/32")
            };
            let rule = match (table, rng.below(3)) {
                ("nat", 0) => format!("-p tcp -m tcp --dport {port} -j DNAT --to-destination {host}:{port}"),
                ("nat", 1) => format!("-p udp -m udp --dport {port} -j RETURN"),
                (_, 0) => format!("-s {source} -j ACCEPT"),
                (_, 1) => format!("-p tcp -m tcp --dport {port} -j DROP"),
                _ => "-j RETURN".to_owned(),
            };
            format!("-I {chain} {at} {rule}\n")
        }
        "duplicate-rule" => {
            let (chain, spec) = some_rule(rng, &|_| true)?;
            format!("-A {chain} {spec}\n")
        }
        "move-rule" => {
            let (chain, spec) = some_rule(rng, &|(c, _)| !is_mark(c))?;
            format!("-D {chain} {spec}\n-I {chain} 1 {spec}\n")
        }
        "alter-dnat" => {
            let (chain, spec) = some_rule(rng, &|(_, s)| s.contains(" -j DNAT --to-destination "))?;
            let index = part.rules_of(&chain).iter().position(|s| *s == spec)? + 1;
            let (head, _) = spec.rsplit_once(" --to-destination ")?;
            let to = if part.v6 {
                "[2001:db8:2::71]:7"
            } else {
                "192.168.1.71:7"
            };
            format!("-R {chain} {index} {head} --to-destination {to}\n")
        }
        "delete-jump" | "duplicate-jump" => {
            let (builtin, spec) = part.jumps.get(rng.below(part.jumps.len().max(1)))?;
            let op = if kind == "delete-jump" { "-D" } else { "-A" };
            format!("{op} {builtin} {spec}\n")
        }
        "delete-tree-chain" => {
            let trees: Vec<&String> = part
                .chains
                .iter()
                .filter(|c| {
                    ["-NT-", "-NU-", "-FT-", "-FU-"].iter().any(|k| c.contains(k)) && !c.ends_with("-0-65535")
                })
                .collect();
            let chain = trees.get(rng.below(trees.len().max(1)))?;
            let mut body = format!(":{chain} - [0:0]\n");
            for (from, spec) in part
                .rules
                .iter()
                .filter(|(_, s)| s.ends_with(&format!("-j {chain}")))
            {
                let _ = writeln!(body, "-D {from} {spec}");
            }
            let _ = writeln!(body, "-X {chain}");
            body
        }
        "foreign-chain" => {
            *serial += 1;
            let name = format!("PORTMAP-ZZ{serial}");
            let mut body = format!(":{name} - [0:0]\n-A {name} -j RETURN\n");
            if rng.percent(50) {
                let from = rng.pick(&part.chains);
                if !is_mark(from) {
                    let _ = writeln!(body, "-I {from} 1 -j {name}");
                }
            }
            body
        }
        "marker-removed" => format!("-D PORTMAP-MARK {MARKER}\n"),
        other => unreachable!("kind {other}"),
    };
    Some(Hurt {
        kind,
        v6: part.v6,
        script: wrap(body),
    })
}

/// Traffic through the probes: problems found, empty when all is well.
fn traffic(t: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: Result<String, portmap_testkit::ConnError>, server: &str| match got
        .as_deref()
        .ok()
        .and_then(portmap_testkit::Reply::parse)
    {
        Some(r) if r.server.to_string() == server => {}
        _ => problems.push(format!("{what}: expected {server}, got {got:?}")),
    };
    expect("web", t.tcp(CLIENT, 8080), "192.168.1.66:80");
    expect("ssh", t.tcp(CLIENT, 2222), "192.168.1.25:22");
    expect("web6", t.tcp(CLIENT6, 8080), "[2001:db8:2::66]:80");
    let refused = portmap_testkit::traffic::tcp_request(
        &t.client,
        OTHER_CLIENT,
        std::net::SocketAddr::from((portmap_testkit::WAN, 2222)),
        std::time::Duration::from_millis(500),
    );
    if refused.is_ok() {
        problems.push(format!("ssh from a refused source got through: {refused:?}"));
    }
    problems
}

fn fuzz(backend: &'static str) {
    let seed = seed();
    let cases = cases();
    eprintln!("iptables damage fuzzer ({backend}) seed: {seed} — replay with {SEED_ENV}={seed}");
    let mut rng = Rng::new(seed);
    let yaml = config(&mut rng);
    let t = Topology::with_ipv6(PORTMAP, "dmg-ipt").with_backend(backend);
    let variant = t.variant().expect("an iptables lab");
    let _servers = [
        t.tcp_server("192.168.1.66:80"),
        t.tcp_server("192.168.1.25:22"),
        t.tcp_server("[2001:db8:2::66]:80"),
    ];
    t.apply(&yaml).success();
    let golden = t.owned().expect("apply writes portmap's rules");
    let context = |n: usize, hurts: &[Hurt]| {
        let mut s = format!("{backend}, case {n} of seed {seed} ({SEED_ENV}={seed} {CASES_ENV}={n}):\n");
        for h in hurts {
            let _ = writeln!(
                s,
                "{} ({}):\n{}",
                h.kind,
                if h.v6 { "ip6tables" } else { "iptables" },
                h.script
            );
        }
        s
    };
    let problems = traffic(&t);
    assert!(problems.is_empty(), "{backend}, before any damage: {problems:?}");

    let mut serial = 0;
    let mut tally = std::collections::BTreeMap::<&str, usize>::new();
    for n in 1..=cases {
        let before = t.owned();
        let mut hurts = Vec::new();
        for _ in 0..=rng.below(3) {
            let kind = draw_kind(&mut rng);
            let parts = parts(&t, variant);
            let Some(h) = hurt(&mut rng, &parts, kind, &mut serial) else {
                continue;
            };
            let out = t.router.exec_with_stdin(
                &iptables::tool(variant, h.v6, "restore"),
                &["--noflush"],
                Some(&h.script),
            );
            // A damage the tool refuses (a rule deleted twice, an index gone) changed nothing.
            if out.ok() {
                *tally.entry(h.kind).or_default() += 1;
                hurts.push(h);
            }
        }
        let marker_gone = hurts.iter().any(|h| h.kind == "marker-removed");
        let path = t.dir.path().join(portmap_testkit::topology::CONFIG_FILE);
        let path = portmap_testkit::topology::path_str(&path);
        if marker_gone {
            let kernel = t.kernel();
            for args in [
                &["plan", "-c", path, "--detailed-exitcode"][..],
                &["apply", "-c", path, "--auto-approve"],
            ] {
                let run = t.portmap(args);
                assert!(
                    run.code == 1 && run.stderr.contains("that portmap did not create"),
                    "{}a table without its marker must be refused:\n{run}",
                    context(n, &hurts)
                );
            }
            assert_eq!(t.kernel(), kernel, "{}refused, yet changed", context(n, &hurts));
            t.damage(Damage::Everything);
        } else {
            let plan = t.plan_text();
            let changed = t.owned() != before;
            let want = if changed { 2 } else { 0 };
            assert_eq!(plan.code, want, "{}plan:\n{plan}", context(n, &hurts));
        }
        let run = t.portmap(&["apply", "-c", path, "--auto-approve"]);
        assert!(run.ok(), "{}apply:\n{run}", context(n, &hurts));
        let plan = t.plan_text();
        assert_eq!(
            plan.code,
            0,
            "{}one apply must converge:\n{plan}",
            context(n, &hurts)
        );
        assert_eq!(
            t.owned().as_deref(),
            Some(golden.as_str()),
            "{}the chains differ from what apply builds",
            context(n, &hurts)
        );
        if n % TRAFFIC_EVERY == 0 || n == cases {
            let problems = traffic(&t);
            assert!(problems.is_empty(), "{}traffic: {problems:?}", context(n, &hurts));
        }
    }
    eprintln!("iptables damage fuzzer ({backend}): {cases} cases, damage drawn: {tally:?}");
}
