//! Unit tests without root: what render prints (snapshots), that observe reads the layout back as
//! an intact table whose plan is empty, that each kind of damage is reported as the kernel enforces
//! it, that user text stays inside its comment, and what the commits of a change touch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use portmap_core::{Model, Observed, Settings, StaleFlows, TableState, plan};

use crate::commit;
use crate::layout::{self, Chains, Family, Input, LanSide, Layout, MappingRules, Prefix, Table};
use crate::observe;
use crate::render;

fn p() -> Prefix {
    Prefix::new("PORTMAP").expect("valid")
}

fn lan() -> LanSide {
    let mut lan = LanSide::default();
    lan.v4.push("192.168.1.1/32".parse().expect("net"));
    lan.v4 = portmap_core::canonical_prefixes(lan.v4.clone());
    lan.v6.push("2001:db8:2::1/128".parse().expect("net"));
    lan.v6 = portmap_core::canonical_prefixes(lan.v6.clone());
    lan
}

const HOME: &str = "wan: { interfaces: [wan0] }
lan: { interfaces: [lan0] }
masquerade: true
mappings:
  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, description: \"web server's door, a\\\\b\" }
  - { name: mail-pop3, port: 110, to: 192.168.1.25, allow_from: [203.0.113.0/24, 198.51.100.7/32] }
  - { name: game, protocol: udp, port: \"27015-27030\", to: 192.168.1.70 }
  - { name: cams, protocol: both, port: \"6000-6002\", to: 192.168.1.80, to_port: \"7000-7002\" }
  - { name: web6, port: 8080, to: \"2001:db8:2::66\", to_port: 80, allow_from: [\"2001:db8:7::/48\"] }
";

fn model(yaml: &str) -> Model {
    portmap_core::load_str(yaml, "test").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn built(m: &Model, stale: Vec<StaleFlows>) -> Layout {
    let rules: Vec<MappingRules> = m.mappings.iter().map(MappingRules::of_mapping).collect();
    let input = Input {
        settings: m.settings.clone(),
        mappings: rules.iter().map(|r| (r, 0)).collect(),
        stale,
        serial: 1,
    };
    layout::build(&p(), &input, &lan())
}

fn observed(layout: &Layout) -> Observed {
    observe::analyse(&p(), "iptables-legacy", &layout.tables, &lan(), Some(7))
}

#[test]
fn render_home_router() {
    let out = render::render(&p(), &model(HOME), &lan());
    let out = out.replacen(env!("CARGO_PKG_VERSION"), "VERSION", 1);
    insta::assert_snapshot!("render_home_router", out);
}

#[test]
fn observe_reads_the_layout_back_intact_and_the_plan_is_empty() {
    let m = model(HOME);
    let o = observed(&built(&m, Vec::new()));
    assert_eq!(o.state, TableState::Intact, "{o:#?}");
    assert!(o.mappings.iter().all(|m| !m.is_damaged()), "{:#?}", o.mappings);
    let p = plan(&m, &o);
    assert!(p.is_empty(), "{p}");
    assert_eq!(o.settings.wan_interfaces, ["wan0"]);
    assert!(o.settings.masquerade && o.settings.hairpin);
}

#[test]
fn nothing_is_missing_and_a_settings_change_is_a_setting_change() {
    let o = observe::analyse(&p(), "iptables-nft", &BTreeMap::new(), &lan(), Some(1));
    assert_eq!(o.state, TableState::Missing);
    let m = model(HOME);
    let mut other = m.clone();
    other.settings.hairpin = false;
    let p = plan(&other, &observed(&built(&m, Vec::new())));
    assert_eq!(p.settings.len(), 1, "{p}");
    assert!(p.changes.is_empty(), "{p}");
}

fn edit(layout: &mut Layout, family: Family, table: Table, f: impl Fn(&mut BTreeMap<String, Vec<String>>)) {
    let chains = layout.tables.entry((family, table)).or_default();
    f(&mut chains.chains);
}

fn damage_of(layout: &Layout, name: &str) -> Vec<String> {
    let o = observed(layout);
    o.mappings
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} not found: {o:#?}"))
        .damage
        .clone()
}

#[test]
fn a_missing_drop_is_an_open_port() {
    let mut l = built(&model(HOME), Vec::new());
    edit(&mut l, Family::V4, Table::Filter, |c| {
        for rules in c.values_mut() {
            rules.retain(|r| !(r.contains("mail-pop3") && r.ends_with("-j DROP")));
        }
    });
    assert_eq!(
        damage_of(&l, "mail-pop3"),
        ["tcp/110 is not guarded by the allow-list: open to every source"]
    );
}

#[test]
fn a_drop_before_the_accepts_refuses_everyone() {
    let mut l = built(&model(HOME), Vec::new());
    edit(&mut l, Family::V4, Table::Filter, |c| {
        for rules in c.values_mut() {
            if let Some(i) = rules
                .iter()
                .position(|r| r.contains("mail-pop3") && r.ends_with("-j DROP"))
            {
                let drop = rules.remove(i);
                let first = rules.iter().position(|r| r.contains("mail-pop3")).unwrap_or(0);
                rules.insert(first, drop);
            }
        }
    });
    let damage = damage_of(&l, "mail-pop3");
    assert!(damage[0].contains("every source is refused"), "{damage:?}");
}

#[test]
fn filter_rules_without_their_dnat_forward_nothing() {
    let mut l = built(&model(HOME), Vec::new());
    edit(&mut l, Family::V4, Table::Nat, |c| {
        for rules in c.values_mut() {
            rules.retain(|r| !r.contains("--comment \"web: "));
        }
    });
    let damage = damage_of(&l, "web");
    assert!(
        damage.iter().any(|d| d.contains("forwards nothing")),
        "{damage:?}"
    );
    // And the plan repairs it.
    let p = plan(&model(HOME), &observed(&l));
    assert!(
        matches!(p.changes.as_slice(), [portmap_core::Change::Repair { .. }]),
        "{p}"
    );
}

#[test]
fn a_rule_portmap_did_not_write_is_drift() {
    let mut l = built(&model(HOME), Vec::new());
    edit(&mut l, Family::V4, Table::Nat, |c| {
        if let Some(root) = c.get_mut("PORTMAP-NT-0-65535") {
            root.push("-p tcp -m tcp --dport 9999 -j DNAT --to-destination 10.0.0.1:1".to_owned());
        }
        c.insert("PORTMAP-EXTRA".to_owned(), Vec::new());
    });
    let o = observed(&l);
    let TableState::Damaged { reasons } = &o.state else {
        panic!("{o:#?}");
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("holds a rule portmap did not write")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("PORTMAP-EXTRA was not written by portmap")),
        "{reasons:?}"
    );
}

#[test]
fn a_chain_of_the_prefix_without_the_marker_is_foreign() {
    let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:PORTMAP-PRE - [0:0]\n-A PORTMAP-PRE -j RETURN\nCOMMIT\n";
    let dump = crate::save::parse(save).expect("parse");
    let err = observe::owned(&p(), &[(Family::V4, &dump)]).expect_err("foreign");
    assert_eq!((err.family, err.table), (Family::V4, Table::Nat));
    // Another prefix is not affected.
    let other = Prefix::new("PM2").expect("valid");
    assert!(observe::owned(&other, &[(Family::V4, &dump)]).is_ok());
}

#[test]
fn descriptions_stay_inside_their_comment() {
    for text in ["a b", "it's", "back\\slash", "\" -j ACCEPT", "ünïcode ✓"] {
        let quoted = layout::quoted(text);
        assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{quoted}");
        assert_eq!(observe::unquote(&quoted).as_deref(), Some(text));
    }
    assert_eq!(layout::quoted("web"), "web");
    assert_eq!(layout::quoted("web.v6"), "\"web.v6\"");
    let long = "x".repeat(400);
    assert_eq!(
        layout::mapping_comment("m", Some(&long)).len(),
        layout::MAX_COMMENT_LEN
    );
    assert!(!layout::is_plain_interface("eth+"));
    assert!(!layout::is_plain_interface("-j"));
    assert!(layout::is_plain_interface("eth0.100"));
}

#[test]
fn pending_cleanups_round_trip() {
    let m = model(HOME);
    let o = observed(&built(&m, Vec::new()));
    let web = o.mappings.iter().find(|m| m.name == "web").expect("web");
    let stale = vec![
        StaleFlows {
            mapping: "web".to_owned(),
            forward: web.forwards[0],
            unless_from: None,
        },
        StaleFlows {
            mapping: "web6".to_owned(),
            forward: portmap_core::Forward {
                transport: portmap_core::Transport::Tcp,
                port: 8080,
                to: "2001:db8:2::66".parse().expect("addr"),
                to_port: 80,
                listen: None,
            },
            unless_from: Some(vec!["2001:db8:7::/48".parse().expect("net")]),
        },
    ];
    let o = observed(&built(&m, stale.clone()));
    assert_eq!(o.state, TableState::Intact);
    assert_eq!(o.pending_flows, stale);
}

fn steps_between(before: &Model, after: &Model) -> Vec<commit::Step> {
    let o = observed(&built(before, Vec::new()));
    let pl = plan(after, &o);
    commit::steps(&p(), &built(before, Vec::new()), &pl, &pl.stale_flows(), &lan())
}

#[test]
fn a_change_is_widen_then_nat_then_narrow_and_touches_only_its_chains() {
    let n = 10_000;
    let yaml = |target: &str| {
        let mut y = "wan: { interfaces: [wan0] }\nhairpin: false\nmappings:\n".to_owned();
        for i in 0..n {
            let to = if i == 4321 { target } else { "192.168.1.66" };
            let _ = writeln!(y, "  - {{ name: m{i}, port: {}, to: {to} }}", 10_000 + i);
        }
        y
    };
    let before = model(&yaml("192.168.1.66"));
    let after = model(&yaml("192.168.1.70"));
    let steps = steps_between(&before, &after);
    let phases: Vec<(Family, Table, &str)> = steps.iter().map(|s| (s.family, s.table, s.phase)).collect();
    assert_eq!(
        phases,
        [
            (Family::V4, Table::Filter, "widen"),
            (Family::V4, Table::Nat, "nat"),
            (Family::V4, Table::Filter, "narrow")
        ]
    );
    // One leaf per table, plus the record of the stale flows and the commit serial (P-MARK) in the
    // nat commit.
    assert_eq!(
        steps.iter().map(|s| s.chains).collect::<Vec<_>>(),
        [1, 3, 1],
        "{steps:#?}"
    );
    assert!(steps.iter().all(|s| s.lines <= 40), "{steps:#?}");
    assert!(
        steps[1].script.contains("m4321 tcp/14321 192.168.1.66:14321"),
        "{}",
        steps[1].script
    );
}

#[test]
fn a_first_apply_accepts_before_it_forwards_and_destroy_unforwards_first() {
    let m = model(HOME);
    let steps = steps_between(&model("wan: { interfaces: [wan0] }\nmappings: []\n"), &m);
    assert_eq!(steps[0].table, Table::Filter);
    let empty = Layout::default();
    let first = commit::steps(
        &p(),
        &empty,
        &plan(&m, &Observed::missing("x", "PORTMAP", Some(1))),
        &[],
        &lan(),
    );
    let tables: Vec<Table> = first.iter().map(|s| s.table).collect();
    assert_eq!(tables, [Table::Filter, Table::Filter, Table::Nat, Table::Nat]);
    let destroy = commit::destroy_steps(&built(&m, Vec::new()));
    let tables: Vec<Table> = destroy.iter().map(|s| s.table).collect();
    assert_eq!(tables, [Table::Nat, Table::Nat, Table::Filter, Table::Filter]);
    assert!(
        destroy[0]
            .script
            .contains("-D PREROUTING -m comment --comment \"portmap PORTMAP\" -j PORTMAP-PRE")
    );
    assert!(destroy[0].script.contains("-X PORTMAP-NT-0-65535"));
}

#[test]
fn the_diff_leaves_equal_chains_alone() {
    let a = Chains {
        chains: [("X".to_owned(), vec!["-j RETURN".to_owned()])].into(),
        jumps: Vec::new(),
    };
    assert_eq!(commit::diff(Table::Nat, &a, &a), None);
    let settings = Settings::default();
    let s = layout::static_chains(&p(), Family::V4, Table::Filter, &settings, &lan());
    let (script, _, chains) = commit::diff(Table::Filter, &Chains::default(), &s).expect("script");
    assert_eq!(chains, 2);
    assert!(
        script.starts_with("*filter\n:PORTMAP-FWD - [0:0]\n:PORTMAP-MARK - [0:0]\n"),
        "{script}"
    );
    assert!(script.ends_with("COMMIT\n"));
}

/// Carry a restore script out on an in-memory table, as `iptables-restore --noflush` does for the
/// lines portmap sends (`:CHAIN` flushes or creates, `-A`, `-I BUILTIN 1`, `-D BUILTIN spec`,
/// `-X`); jumps stand for the built-in chains' rules.
fn simulate(chains: &mut Chains, script: &str) {
    for line in script.lines() {
        // `[packets:bytes]` before a rule sets its counters; they do not change the rules.
        let line = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .map_or(line, |(_, rule)| rule);
        if line.starts_with('*') || line == "COMMIT" {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split(' ').next().expect("name");
            chains.chains.insert(name.to_owned(), Vec::new());
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest.split_once(' ').expect("spec");
            chains
                .chains
                .get_mut(chain)
                .expect("declared")
                .push(spec.to_owned());
        } else if let Some(rest) = line.strip_prefix("-I ") {
            let (builtin, spec) = rest.split_once(" 1 ").expect("position");
            chains.jumps.insert(
                0,
                layout::Jump {
                    builtin: builtin.to_owned(),
                    spec: spec.to_owned(),
                },
            );
        } else if let Some(rest) = line.strip_prefix("-D ") {
            let (builtin, spec) = rest.split_once(' ').expect("spec");
            let at = chains
                .jumps
                .iter()
                .position(|j| j.builtin == builtin && j.spec == spec)
                .expect("the rule to delete exists");
            chains.jumps.remove(at);
        } else if let Some(name) = line.strip_prefix("-X ") {
            assert!(chains.chains.remove(name).is_some(), "-X {name}");
        } else {
            panic!("unexpected line {line}");
        }
    }
}

/// xorshift64*: deterministic damage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Damage one of the four tables at random (never the marker itself, which would make it foreign).
fn damage(rng: &mut Rng, l: &mut Layout) {
    let keys: Vec<(Family, Table)> = l.tables.keys().copied().collect();
    let key = keys[rng.below(keys.len())];
    let chains = l.tables.get_mut(&key).expect("table");
    let names: Vec<String> = chains.chains.keys().cloned().collect();
    let name = names[rng.below(names.len())].clone();
    let mark = p().chain(layout::MARK);
    let rules = chains.chains.get_mut(&name).expect("chain");
    let protected = usize::from(name == mark);
    match rng.below(9) {
        0 if rules.len() > protected => {
            let i = protected + rng.below(rules.len() - protected);
            rules.remove(i);
        }
        1 if !rules.is_empty() => {
            let i = rng.below(rules.len());
            let line = rules[i].clone();
            rules.insert(i, line);
        }
        2 if rules.len() > protected + 1 => {
            let i = protected + rng.below(rules.len() - protected);
            let j = protected + rng.below(rules.len() - protected);
            rules.swap(i, j);
        }
        3 => rules.push("-p tcp -m tcp --dport 9 -j DNAT --to-destination 10.9.9.9:9".to_owned()),
        4 if rules.len() > protected => {
            let i = protected + rng.below(rules.len() - protected);
            rules[i] = rules[i]
                .replacen("80", "81", 1)
                .replacen("192.168.1.", "192.168.9.", 1)
                .replacen("-d 203.0.113.10/32", "-d 203.0.113.11/32", 1)
                .replacen("--ctorigdst 203.0.113.1 ", "--ctorigdst 203.0.113.12 ", 1);
        }
        5 if !chains.jumps.is_empty() => {
            let i = rng.below(chains.jumps.len());
            chains.jumps.remove(i);
        }
        6 if name != mark && !crate::layout::static_names(&p(), key.1).contains(&name) => {
            // A tree chain removed with every rule jumping to it.
            chains.chains.remove(&name);
            for rules in chains.chains.values_mut() {
                rules.retain(|r| !r.ends_with(&format!("-j {name}")));
            }
        }
        7 if rules.len() > protected => {
            // A rule moved into another chain of the same table.
            let i = protected + rng.below(rules.len() - protected);
            let line = rules.remove(i);
            let other = names[rng.below(names.len())].clone();
            if other != mark {
                chains.chains.get_mut(&other).expect("chain").push(line);
            }
        }
        _ => {
            if let Some(j) = chains.jumps.first().cloned() {
                chains.jumps.push(j);
            }
        }
    }
}

#[test]
fn apply_converges_from_random_damage() {
    // Every fifth on listen addresses (one or two; `-d` and `--ctorigdst` in its rules), and
    // three of one port on different addresses.
    let many = (0..40)
        .map(|i| {
            let listen = match i % 5 {
                0 => ", listen: [203.0.113.1]",
                1 if i % 2 == 0 => ", listen: [203.0.113.1, 203.0.113.10]",
                _ => "",
            };
            format!(
                "  - {{ name: n{i}, port: {}, to: 192.168.1.70{listen} }}\n",
                20_000 + i
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let many = format!(
        "{many}  - {{ name: same-a, port: 30000, to: 192.168.1.71, listen: [203.0.113.1] }}\n\
         \x20 - {{ name: same-b, port: 30000, to: 192.168.1.72, listen: [203.0.113.10] }}\n\
         \x20 - {{ name: same-6, port: 30000, to: \"2001:db8:2::66\", listen: [\"2001:db8:1::1\"] }}\n"
    );
    let m = model(&format!("{HOME}{many}"));
    let seed = std::env::var("DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    let rounds: usize = std::env::var("DAMAGE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed);
    let mut seen = 0;
    for round in 0..rounds {
        let mut l = built(&m, Vec::new());
        let ops = 1 + rng.below(4);
        for _ in 0..ops {
            damage(&mut rng, &mut l);
        }
        let o = observed(&l);
        let pl = plan(&m, &o);
        // Jumps in different built-in chains have no order between them.
        let sorted = |l: &Layout| {
            let mut l = l.clone();
            for c in l.tables.values_mut() {
                c.jumps.sort();
            }
            l
        };
        if sorted(&l) != sorted(&built(&m, Vec::new())) {
            // Observe is total: every change to portmap's chains shows in the plan.
            if !pl.changes_kernel() {
                let want = built(&m, Vec::new());
                for (k, c) in &l.tables {
                    let w = want.table(k.0, k.1);
                    for (name, rules) in &c.chains {
                        if w.chains.get(name) != Some(rules) {
                            eprintln!("{k:?} {name}: {rules:#?}\nwant {:#?}", w.chains.get(name));
                        }
                    }
                    if c.jumps != w.jumps {
                        eprintln!("{k:?} jumps {:#?}\nwant {:#?}", c.jumps, w.jumps);
                    }
                }
                panic!("round {round}: damage not seen");
            }
            seen += 1;
        }
        for step in commit::steps(&p(), &l, &pl, &pl.stale_flows(), &lan()) {
            simulate(
                l.tables.entry((step.family, step.table)).or_default(),
                &step.script,
            );
        }
        let after = plan(&m, &observed(&l));
        assert!(
            !after.changes_kernel(),
            "round {round}: did not converge:\n{after}\nfrom:\n{pl}"
        );
        // Converged means the exact layout, except for the record of the flows to clear and the
        // commit serial.
        let normal = |l: &Layout| {
            let mut l = l.clone();
            for ((_, table), c) in &mut l.tables {
                if *table == Table::Nat {
                    c.chains.insert(p().chain(layout::STALE), Vec::new());
                }
                if let Some(mark) = c.chains.get_mut(&p().chain(layout::MARK)) {
                    mark.retain(|r| layout::parse_serial(r).is_none());
                }
                c.jumps.sort();
            }
            l
        };
        let (l2, want) = (normal(&l), normal(&built(&m, Vec::new())));
        assert_eq!(l2, want, "round {round}");
    }
    assert!(
        seen * 6 > rounds * 5,
        "{seen} of {rounds} rounds damaged anything"
    );
}

#[test]
fn hashlimit_rates_print_as_iptables_prints_them() {
    use portmap_core::{Limit, RateUnit};
    let l = |rate, per| Limit { rate, per, burst: 5 };
    // What iptables-legacy-save 1.8.9 printed for these `--hashlimit-above` values.
    for (limit, printed) in [
        (l(1, RateUnit::Hour), (1, "hour")),
        (l(7, RateUnit::Hour), (7, "hour")),
        (l(25, RateUnit::Day), (25, "day")),
        (l(13, RateUnit::Minute), (13, "min")),
        (l(61, RateUnit::Minute), (61, "min")),
        (l(5, RateUnit::Second), (5, "sec")),
        (l(999, RateUnit::Second), (999, "sec")),
        (l(1_000_000, RateUnit::Second), (1_000_000, "sec")),
        (l(123_456, RateUnit::Second), (125_000, "sec")),
    ] {
        assert_eq!(layout::hashlimit_rate(&limit), printed, "{limit}");
    }
    assert!(layout::hashlimit_is_exact(&l(7, RateUnit::Hour)));
    assert!(!layout::hashlimit_is_exact(&l(123_456, RateUnit::Second)));
    // 24/day is 1/hour, both in the configuration and as iptables prints it.
    assert_eq!(
        layout::limit_of_hashlimit("1/hour", 5),
        Some(portmap_core::parse_limit("24/day").expect("valid"))
    );
}

#[test]
fn log_limit_and_count_rules_read_back() {
    use portmap_core::{Limit, RateUnit};
    let run = layout::Run {
        transport: portmap_core::Transport::Tcp,
        start: 8080,
        end: 8080,
        to: "192.168.1.66".parse().expect("address"),
        to_start: 80,
        listen: None,
        expires: None,
    };
    let source: ipnet::IpNet = "203.0.113.0/24".parse().expect("prefix");
    // A run that expires reads back with its `--datestop`.
    let timed = layout::Run {
        expires: Some("2026-12-24T00:00:00Z".parse().expect("time")),
        ..run
    };
    let dnat = layout::dnat_rule(&timed, "web");
    // The rules match up to the second before the expiry, and no longer at it.
    assert!(
        dnat.contains(" --dport 8080 -m time --datestop 2026-12-23T23:59:59 -m comment"),
        "{dnat}"
    );
    assert_eq!(crate::observe::parse_dnat(&dnat), Some((timed, "web".to_owned())));
    let accept = layout::filter_rule_of(&timed, "web", Some(&source), &crate::layout::FilterKind::Accept);
    assert_eq!(
        crate::observe::parse_filter(&accept).map(|(r, ..)| r),
        Some(timed),
        "{accept}"
    );
    let limit = Limit {
        rate: 20,
        per: RateUnit::Minute,
        burst: 40,
    };
    for kind in [
        layout::FilterKind::Count,
        layout::FilterKind::Log(7),
        layout::FilterKind::Limit(limit),
        layout::FilterKind::Accept,
    ] {
        for src in [None, Some(&source)] {
            let line = layout::filter_rule_of(&run, "web.1", src, &kind);
            let (r, name, s, k) = crate::observe::parse_filter(&line).expect(&line);
            assert_eq!(
                (r, name.as_str(), s.as_ref(), &k),
                (run, "web.1", src, &kind),
                "{line}"
            );
        }
    }
    assert_eq!(
        layout::filter_rule_of(&run, "web", None, &layout::FilterKind::Log(100)),
        "-p tcp -m conntrack --ctstate NEW --ctreplsrc 192.168.1.66 --ctorigdstport 8080 --ctreplsrcport 80 -m comment --comment web -j NFLOG --nflog-prefix \"portmap web\" --nflog-group 100"
    );
}
