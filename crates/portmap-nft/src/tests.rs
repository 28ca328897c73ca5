//! Pure tests of the backend: what a rebuild would send, read back by `analyse`, gives the model's
//! mappings and settings (IPv4, IPv6 and dual-stack); hand damage is reported; a delta touches only
//! the changed mapping, in the maps of its family.

use std::net::IpAddr;

use portmap_core::{
    Mapping, Model, Observed, ObservedMapping, PortRange, Protocol, Settings, TableAction, TableState, plan,
};
use portmap_netlink::{Expr, Rule};

use crate::apply::{self, contents};
use crate::lan_side::LanSide;
use crate::layout::{self, IpFamily, TableId};
use crate::observe::analyse;

fn env() -> LanSide {
    LanSide::default()
}

fn t() -> TableId {
    crate::table_id("portmap")
}

fn mapping(
    name: &str,
    protocol: Protocol,
    port: (u16, u16),
    to: &str,
    to_port: (u16, u16),
    allow: &[&str],
) -> Mapping {
    Mapping {
        name: name.to_owned(),
        protocol,
        port: PortRange {
            start: port.0,
            end: port.1,
        },
        to: to.parse::<IpAddr>().unwrap(),
        to_port: PortRange {
            start: to_port.0,
            end: to_port.1,
        },
        allow_from: allow.iter().map(|a| a.parse().unwrap()).collect(),
        allow_sources: Vec::new(),
        allow_inline: Vec::new(),
        listen: Vec::new(),
        description: None,
        log: None,
        limit: None,
        expires: None,
    }
}

fn model() -> Model {
    let mut web = mapping("web", Protocol::Tcp, (8080, 8080), "192.168.1.66", (80, 80), &[]);
    web.description = Some("web server: main".to_owned());
    Model {
        sources: std::collections::BTreeMap::new(),
        settings: Settings {
            wan_interfaces: vec!["wan0".into()],
            lan_interfaces: vec!["lan0".into()],
            masquerade: false,
            hairpin: false,
        },
        mappings: vec![
            web,
            mapping(
                "mail",
                Protocol::Tcp,
                (25, 25),
                "192.168.1.25",
                (25, 25),
                &["198.51.100.7/32", "203.0.113.0/24"],
            ),
            mapping(
                "game",
                Protocol::Udp,
                (6000, 6002),
                "192.168.1.70",
                (7000, 7002),
                &[],
            ),
            mapping(
                "voip",
                Protocol::Both,
                (5060, 5060),
                "192.168.1.71",
                (5060, 5060),
                &["0.0.0.0/0"],
            ),
        ],
        disabled: vec![],
    }
}

fn observed(model: &Model) -> Observed {
    analyse(&t(), &contents(model, &t(), &env()), &env(), Some(1))
}

/// `model` in each masquerade/hairpin shape, with what `observe` reads back from the contents a
/// rebuild sends: it must be intact, hold the same settings and leave nothing to plan.
fn every_shape(model: &Model) -> Vec<(Model, Observed)> {
    let mut out = Vec::new();
    for (masquerade, hairpin) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut m = model.clone();
        m.settings.masquerade = masquerade;
        m.settings.hairpin = hairpin;
        let o = observed(&m);
        assert_eq!(
            o.state,
            TableState::Intact,
            "masquerade={masquerade} hairpin={hairpin}"
        );
        assert_eq!(o.settings, m.settings);
        let p = plan(&m, &o);
        assert!(p.is_empty(), "{p:?}");
        out.push((m, o));
    }
    out
}

#[test]
fn contents_read_back_as_the_model() {
    for (_, o) in every_shape(&model()) {
        let web = o.mappings.iter().find(|x| x.name == "web").unwrap();
        assert_eq!(web.description.as_deref(), Some("web server: main"));
        assert_eq!(
            o.mappings
                .iter()
                .find(|x| x.name == "game")
                .unwrap()
                .forwards
                .len(),
            3
        );
        assert_eq!(
            o.mappings
                .iter()
                .find(|x| x.name == "voip")
                .unwrap()
                .forwards
                .len(),
            2
        );
    }
}

#[test]
fn damage_is_reported() {
    let m = model();
    // A base-chain rule changed by hand.
    let mut c = contents(&m, &t(), &env());
    let r = c
        .rules
        .iter_mut()
        .find(|r| r.chain == layout::PREROUTING)
        .unwrap();
    r.exprs.pop();
    let o = analyse(&t(), &c, &env(), None);
    let TableState::Damaged { reasons } = &o.state else {
        panic!("{o:?}")
    };
    assert!(reasons.iter().any(|r| r.contains("prerouting")), "{reasons:?}");
    assert!(matches!(plan(&m, &o).table_action, TableAction::Repair { .. }));

    // An allow-list chain removed by hand.
    let mut c = contents(&m, &t(), &env());
    c.chains.retain(|ch| ch.name != "allow_mail");
    c.rules.retain(|r| r.chain != "allow_mail");
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("guard4") || r.contains("allow")),
        "{reasons:?}"
    );

    // An element someone added without a comment.
    let mut c = contents(&m, &t(), &env());
    let mut stray = c.elements[layout::DNAT4][0].clone();
    stray.userdata = None;
    stray.key = crate::element::key_bytes(crate::element::plain_key(portmap_core::Transport::Tcp, 9999));
    c.elements.get_mut(layout::DNAT4).unwrap().push(stray);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("tcp/9999")), "{reasons:?}");

    // A foreign chain in our table.
    let mut c = contents(&m, &t(), &env());
    let mut extra = layout::allow_chain_object(&t(), "x");
    extra.name = "mine".into();
    extra.userdata = None;
    c.chains.push(extra);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("chain mine")), "{reasons:?}");
}

#[test]
fn a_changed_target_touches_only_its_elements() {
    let before = model();
    let mut after = model();
    after.mappings[2].to = "192.168.1.80".parse().unwrap();
    let p = plan(&after, &observed(&before));
    assert_eq!(p.changes.len(), 1);
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    assert!(!built.rebuilt);
    // Three ports: three deletes and three adds.
    assert_eq!(built.objects, 6);
    assert_eq!(built.batch.len(), 2);
}

#[test]
fn adding_an_allow_list_creates_its_chain_set_and_guards() {
    let before = model();
    let mut after = model();
    after.mappings[0].allow_from = vec!["192.0.2.0/24".parse().unwrap()];
    let p = plan(&after, &observed(&before));
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    // set + 1 interval (start, end) + chain + rule + 1 guard element.
    assert_eq!(built.objects, 1 + 2 + 2 + 1);
    // Read back as applied, the plan is empty.
    let o = observed(&after);
    assert!(plan(&after, &o).is_empty());
}

#[test]
fn shape_change_rebuilds() {
    let before = model();
    let mut after = model();
    after.settings.masquerade = true;
    let p = plan(&after, &observed(&before));
    assert!(apply::build(&p, &t(), &env(), &[], &apply::Presets::new()).rebuilt);
}

#[test]
fn rules_use_the_expected_expressions() {
    let rules = layout::static_rules(&t(), apply::shape_of(&model().settings));
    // Per family: guard, limit, connection counter, DNAT, each first for mappings with `listen`
    // (keyed by address too), then for any address.
    let pre = &rules[7].exprs;
    assert!(matches!(pre.last(), Some(Expr::Nat { .. })));
    assert!(matches!(rules[6].exprs.last(), Some(Expr::Nat { .. })));
    assert!(matches!(rules[3].exprs.last(), Some(Expr::Immediate { .. })));
    assert!(matches!(rules[5].exprs.last(), Some(Expr::Objref { .. })));
    // `ip daddr . meta l4proto . th dport`: address in register 1, protocol and port after it.
    assert!(rules[6].exprs.iter().any(|e| matches!(
        e,
        Expr::Payload {
            dreg: portmap_netlink::Register::R32(2),
            len: 2,
            ..
        }
    )));
    let render = crate::render::render(&model(), &t(), &env());
    assert!(render.contains("dnat ip to meta l4proto . th dport map @dnat4"));
    assert!(render.contains("tcp . 8080 comment \"web: web server: main\" : 192.168.1.66 . 80"));
}

#[test]
fn changed_lan_addresses_are_drift() {
    use portmap_netlink::link::Interface;
    let m = model();
    let lan = |addr: &str| Interface {
        index: 2,
        name: "lan0".into(),
        up: true,
        addrs: vec![(addr.parse().unwrap(), 24)],
    };
    let then = LanSide::from_interfaces(&[lan("192.168.1.1")], &m.settings);
    assert_eq!(
        then.lan_side4.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["127.0.0.0/8", "192.168.1.1/32"]
    );
    let now = LanSide::from_interfaces(&[lan("192.168.2.1")], &m.settings);
    let c = contents(&m, &t(), &then);
    assert_eq!(analyse(&t(), &c, &then, None).state, TableState::Intact);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &now, None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("192.168.2.1")), "{reasons:?}");
    // A WAN interface's address never matters.
    let wan = Interface {
        name: "wan0".into(),
        ..lan("203.0.113.1")
    };
    assert_eq!(
        LanSide::from_interfaces(&[wan, lan("192.168.1.1")], &m.settings),
        then
    );
}

/// The dual-stack router: `model()` plus IPv6 mappings, one of them on the same port as `web`.
fn dual_stack() -> Model {
    let mut m = model();
    let mut web6 = mapping(
        "web6",
        Protocol::Tcp,
        (8080, 8080),
        "2001:db8:2::66",
        (80, 80),
        &[],
    );
    web6.description = Some("web server over IPv6".to_owned());
    m.mappings.extend([
        web6,
        mapping(
            "game6",
            Protocol::Both,
            (6000, 6002),
            "2001:db8:2::70",
            (7000, 7002),
            &["2001:db8:1::2/128", "2001:db8:100::/48"],
        ),
        mapping("mail6", Protocol::Tcp, (25, 25), "fd00::25", (25, 25), &["::/0"]),
    ]);
    m
}

/// What each message of a batch does, in words.
fn described(built: &apply::Built) -> Vec<String> {
    (0..built.batch.len()).map(|i| built.batch.describe(i)).collect()
}

#[test]
fn ipv6_and_dual_stack_contents_read_back_as_the_model() {
    for (m, o) in every_shape(&dual_stack()) {
        let game6 = o.mappings.iter().find(|x| x.name == "game6").unwrap();
        assert_eq!(game6.forwards.len(), 6);
        assert!(game6.forwards.iter().all(|f| f.to.is_ipv6()));
        assert_eq!(game6.allow_from, m.mappings[5].allow_from);
        let web6 = o.mappings.iter().find(|x| x.name == "web6").unwrap();
        assert_eq!(web6.description.as_deref(), Some("web server over IPv6"));
    }
    // Each family's map holds exactly its mappings' elements; tcp 8080 is in both.
    let c = contents(&dual_stack(), &t(), &env());
    assert_eq!(c.elements[layout::DNAT4].len(), 1 + 1 + 3 + 2);
    assert_eq!(c.elements[layout::DNAT6].len(), 1 + 6 + 1);
    assert_eq!(c.elements[layout::GUARD4].len(), 1 + 2);
    assert_eq!(c.elements[layout::GUARD6].len(), 6 + 1);
    let key = crate::element::key_bytes(crate::element::plain_key(portmap_core::Transport::Tcp, 8080));
    for map in [layout::DNAT4, layout::DNAT6] {
        assert!(c.elements[map].iter().any(|e| e.key == key), "{map}");
    }
    // The allow-list set of an IPv6 mapping holds IPv6 addresses.
    let set = c.sets.iter().find(|s| s.name == "allow_game6_src").unwrap();
    assert_eq!(set.key_type, portmap_netlink::datatype::IPV6_ADDR);
    assert_eq!(set.key_len, 16);
}

#[test]
fn ipv6_rules_use_the_expressions_nft_builds() {
    let shape = apply::shape_of(&Settings {
        hairpin: true,
        ..Settings::default()
    });
    let rules = layout::static_rules(&t(), shape);
    let prerouting: Vec<&Vec<Expr>> = rules
        .iter()
        .filter(|r| r.chain == layout::PREROUTING)
        .map(|r| &r.exprs)
        .collect();
    // WAN: guard4, limit4, conn4, dnat4 (each with its addressed twin first), then the same for
    // IPv6; then the same sixteen from the LAN.
    assert_eq!(prerouting.len(), 32);
    let dnat6 = prerouting[15];
    // `dnat ip6 to meta l4proto . th dport map @dnat6`: the lookup fills register 1 with the
    // 16-byte address and the next 32-bit slot (128-bit register 2) with the port.
    assert!(matches!(
        dnat6.last(),
        Some(Expr::Nat {
            family: 10,
            addr_min: Some(portmap_netlink::Register::R1),
            proto_min: Some(portmap_netlink::Register::R2),
            ..
        })
    ));
    assert!(
        dnat6
            .iter()
            .any(|e| matches!(e, Expr::Lookup { set, .. } if set == layout::DNAT6))
    );
    // `ip6 daddr != fe80::/10`: the destination masked to 10 bits is not fe80::.
    assert!(dnat6.iter().any(|e| matches!(
        e,
        Expr::Cmp { op: portmap_netlink::CmpOp::Neq, data, .. } if data[..2] == [0xfe, 0x80] && data.len() == 16
    )));
    let lan6 = prerouting[31];
    assert!(lan6.iter().any(|e| matches!(
        e,
        Expr::Lookup { set, invert: true, .. } if set == layout::LAN_SIDE6
    )));
    assert!(lan6.iter().any(|e| matches!(
        e,
        Expr::Payload {
            offset: 24,
            len: 16,
            ..
        }
    )));
    let output: Vec<&Rule> = rules.iter().filter(|r| r.chain == layout::OUTPUT).collect();
    assert_eq!(output.len(), 16);

    let allow = layout::allow_rule(&t(), "game6", IpFamily::V6, 0);
    assert!(allow.exprs.iter().any(|e| matches!(
        e,
        Expr::Payload {
            offset: 8,
            len: 16,
            ..
        }
    )));

    let render = crate::render::render(&dual_stack(), &t(), &env());
    for line in [
        "type inet_proto . inet_service : ipv6_addr . inet_service",
        "tcp . 8080 comment \"web6: web server over IPv6\" : 2001:db8:2::66 . 80",
        "iifname @wan_ifaces fib daddr type local meta nfproto ipv6 ip6 daddr != fe80::/10 dnat ip6 to meta l4proto . th dport map @dnat6",
        "ip6 saddr != @allow_game6_src drop",
        "udp . 6002 comment \"game6\" : jump allow_game6",
    ] {
        assert!(render.contains(line), "missing `{line}` in\n{render}");
    }
}

#[test]
fn an_ipv6_change_touches_only_the_ipv6_maps() {
    let before = dual_stack();
    let mut after = dual_stack();
    after.mappings[5].to = "2001:db8:2::71".parse().unwrap();
    let p = plan(&after, &observed(&before));
    assert_eq!(p.changes.len(), 1);
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    assert!(!built.rebuilt);
    // Six forwards: six deletes and six adds, in dnat6 only.
    assert_eq!(built.objects, 12);
    let messages = described(&built);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().all(|m| m.contains(" dnat6 ")), "{messages:?}");

    // A new IPv6 mapping with an allow-list: set, intervals, chain, rule, guards in guard6.
    let mut after = dual_stack();
    after.mappings.push(mapping(
        "ssh6",
        Protocol::Tcp,
        (2222, 2222),
        "2001:db8:2::22",
        (22, 22),
        &["2001:db8:1::/64"],
    ));
    let built = apply::build(
        &plan(&after, &observed(&before)),
        &t(),
        &env(),
        &[],
        &apply::Presets::new(),
    );
    let messages = described(&built);
    assert!(messages.iter().any(|m| m.contains("guard6")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("dnat6")), "{messages:?}");
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("dnat4") || m.contains("guard4")),
        "{messages:?}"
    );
    // Set, its two intervals, chain and rule, two guards… and the two counters with their
    // elements in conn6 and traffic6.
    assert!(messages.iter().any(|m| m.contains("conn6")), "{messages:?}");
    assert_eq!(built.objects, 1 + 2 + 2 + 1 + 1 + 2 + 1 + 1);
}

#[test]
fn a_mapping_that_changes_family_moves_between_the_maps() {
    // `mail` (IPv4, allow-listed) becomes IPv6: its elements leave dnat4/guard4 and its allow-list
    // set is recreated with IPv6 addresses, all in one delta.
    let before = model();
    let mut after = model();
    after.mappings[1].to = "2001:db8:2::25".parse().unwrap();
    after.mappings[1].allow_from = vec!["2001:db8:1::/64".parse().unwrap()];
    let p = plan(&after, &observed(&before));
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    assert!(!built.rebuilt);
    let messages = described(&built);
    for wanted in [
        "delete element from map inet portmap guard4",
        "delete chain inet portmap allow_mail",
        "delete set inet portmap allow_mail_src",
        "add set inet portmap allow_mail_src",
        "add chain inet portmap allow_mail",
        "add element to map inet portmap guard6",
        "delete element from map inet portmap dnat4",
        "add element to map inet portmap dnat6",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(wanted)),
            "no `{wanted}` in {messages:#?}"
        );
    }
    // The deletes of the old list come before the adds of the new one.
    let pos = |prefix: &str| messages.iter().position(|m| m.starts_with(prefix)).unwrap();
    assert!(pos("delete set inet portmap allow_mail_src") < pos("add set inet portmap allow_mail_src"));
    // Read back as applied, the plan is empty.
    assert!(plan(&after, &observed(&after)).is_empty());
}

#[test]
fn ipv6_damage_is_reported() {
    let m = dual_stack();
    // An IPv6 forward without a portmap comment.
    let mut c = contents(&m, &t(), &env());
    let mut stray = c.elements[layout::DNAT6][0].clone();
    stray.userdata = None;
    stray.key = crate::element::key_bytes(crate::element::plain_key(portmap_core::Transport::Udp, 9999));
    c.elements.get_mut(layout::DNAT6).unwrap().push(stray);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("dnat6") && r.contains("udp/9999")),
        "{reasons:?}"
    );

    // A guard moved to the other family's map: that port of the mapping is open to everyone, and
    // the table is otherwise intact (the mapping alone is repaired).
    let mut c = contents(&m, &t(), &env());
    let guard = c.elements.get_mut(layout::GUARD6).unwrap().pop().unwrap();
    c.elements.get_mut(layout::GUARD4).unwrap().push(guard);
    let o = analyse(&t(), &c, &env(), None);
    assert_eq!(o.state, TableState::Intact);
    let damaged: Vec<&ObservedMapping> = o.mappings.iter().filter(|m| m.is_damaged()).collect();
    assert_eq!(damaged.len(), 1, "{:?}", o.mappings);
    let damage = &damaged[0].damage;
    assert!(
        damage
            .iter()
            .any(|d| d.contains("not guarded") && d.contains("open to every source")),
        "{damage:?}"
    );
    assert!(damage.iter().any(|d| d.contains("guard4")), "{damage:?}");
    assert!(
        damaged[0].objects.iter().any(|o| o.starts_with("guard4 ")),
        "{:?}",
        damaged[0].objects
    );
    assert!(matches!(
        plan(&m, &o).changes.as_slice(),
        [portmap_core::Change::Repair { .. }]
    ));

    // One mapping with elements in both maps.
    let mut c = contents(&m, &t(), &env());
    let mut twin = c.elements[layout::DNAT4][0].clone();
    let (forward, comment) = crate::element::parse_dnat_element(&twin, IpFamily::V4).unwrap();
    twin = crate::element::dnat_element(
        &portmap_core::Forward {
            port: 9998,
            to: "2001:db8:2::9".parse().unwrap(),
            ..forward
        },
        &comment.unwrap(),
    );
    c.elements.get_mut(layout::DNAT6).unwrap().push(twin);
    let o = analyse(&t(), &c, &env(), None);
    let twin_name = crate::element::parse_mapping_comment(
        &crate::element::parse_dnat_element(&c.elements[layout::DNAT4][0], IpFamily::V4)
            .unwrap()
            .1
            .unwrap(),
    )
    .0;
    let damaged = o.mappings.iter().find(|m| m.name == twin_name).unwrap();
    assert!(
        damaged
            .damage
            .iter()
            .any(|d| d.contains("split between dnat4 and dnat6")),
        "{damaged:?}"
    );

    // An IPv6 DNAT rule removed by hand.
    let mut c = contents(&m, &t(), &env());
    let i = c
        .rules
        .iter()
        .position(|r| {
            r.exprs
                .iter()
                .any(|e| matches!(e, Expr::Lookup { set, .. } if set == layout::DNAT6))
        })
        .unwrap();
    c.rules.remove(i);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("prerouting")), "{reasons:?}");
}

#[test]
fn lan_side6_holds_loopback_and_the_lan_addresses_but_no_link_local() {
    use portmap_netlink::link::Interface;
    let m = dual_stack();
    let lan = |addrs: &[&str]| Interface {
        index: 2,
        name: "lan0".into(),
        up: true,
        addrs: addrs.iter().map(|a| (a.parse().unwrap(), 64)).collect(),
    };
    let then = LanSide::from_interfaces(&[lan(&["192.168.1.1", "2001:db8:2::1", "fe80::1"])], &m.settings);
    assert_eq!(
        then.lan_side6.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["::1/128", "2001:db8:2::1/128"]
    );
    assert_eq!(LanSide::default().lan_side6.len(), 1);
    // A new IPv6 LAN address is drift, named in the reason.
    let now = LanSide::from_interfaces(
        &[lan(&["192.168.1.1", "2001:db8:2::1", "2001:db8:3::1"])],
        &m.settings,
    );
    let c = contents(&m, &t(), &then);
    assert_eq!(analyse(&t(), &c, &then, None).state, TableState::Intact);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &now, None).state else {
        panic!()
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("lan_side6") && r.contains("2001:db8:3::1")),
        "{reasons:?}"
    );
}

/// The damage findings of mapping `name` in `o`.
fn damage_of<'o>(o: &'o Observed, name: &str) -> &'o [String] {
    &o.mappings
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no mapping {name} in {o:?}"))
        .damage
}

/// A change made to a table's contents by hand.
type Damage = Box<dyn Fn(&mut layout::Contents)>;

#[test]
fn a_mappings_incomplete_objects_are_damage_of_that_mapping_alone() {
    let m = model();
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "flushed allow set",
            Box::new(|c| {
                c.elements.insert("allow_mail_src".into(), Vec::new());
            }),
            "set allow_mail_src is empty: every source is refused",
        ),
        (
            "guard deleted",
            Box::new(|c| {
                c.elements.get_mut(layout::GUARD4).unwrap().retain(|e| {
                    crate::element::parse_guard_element(e).is_none_or(|(_, chain)| chain != "allow_mail")
                });
            }),
            "tcp/25 is not guarded by the allow-list: open to every source",
        ),
        (
            "guard comment names another mapping",
            Box::new(|c| {
                for e in c.elements.get_mut(layout::GUARD4).unwrap() {
                    if crate::element::parse_guard_element(e).is_some_and(|(_, chain)| chain == "allow_mail")
                    {
                        e.userdata = Some(portmap_netlink::udata::comment("web"));
                    }
                }
            }),
            "a guard element jumping to its allow-list names another mapping",
        ),
        (
            "allow chain flushed",
            Box::new(|c| c.rules.retain(|r| r.chain != "allow_mail")),
            "chain allow_mail is empty: the ports it guards are open to every source",
        ),
        (
            "allow rule accepts (the layout before refused sources were dropped)",
            Box::new(|c| {
                let rule = c.rules.iter_mut().find(|r| r.chain == "allow_mail").unwrap();
                *rule.exprs.last_mut().unwrap() = Expr::Immediate {
                    dreg: portmap_netlink::Register::Verdict,
                    data: portmap_netlink::Data::Verdict(portmap_netlink::Verdict::Accept),
                };
            }),
            "chain allow_mail holds a rule other than the allow-list rule portmap writes",
        ),
    ];
    for (what, damage, finding) in cases {
        let mut c = contents(&m, &t(), &env());
        damage(&mut c);
        let o = analyse(&t(), &c, &env(), Some(1));
        assert_eq!(o.state, TableState::Intact, "{what}: the structure is intact");
        let found = damage_of(&o, "mail");
        assert!(found.iter().any(|d| d.contains(finding)), "{what}: {found:?}");
        for other in ["web", "game", "voip"] {
            assert!(damage_of(&o, other).is_empty(), "{what}: {other} is not damaged");
        }
        // The plan repairs it, and the batch deletes exactly what is there and creates it again.
        let p = plan(&m, &o);
        assert!(
            matches!(p.changes.as_slice(), [portmap_core::Change::Repair { .. }]),
            "{what}: {p:?}"
        );
        let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
        assert!(!built.rebuilt, "{what}");
        let messages = described(&built);
        assert!(
            messages
                .iter()
                .any(|d| d.contains("delete chain inet portmap allow_mail")),
            "{what}: {messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|d| d.contains("add chain inet portmap allow_mail")),
            "{what}: {messages:?}"
        );
    }
}

#[test]
fn a_dormant_table_and_left_over_objects_are_seen() {
    let m = model();
    let mut c = contents(&m, &t(), &env());
    c.table_flags = layout::TABLE_F_DORMANT;
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("dormant")), "{reasons:?}");

    // An allow-list set whose chain and forwards are gone belongs to its mapping, which is deleted.
    let mut c = contents(&m, &t(), &env());
    let set = layout::allow_set_object(&t(), "gone", IpFamily::V4, 0);
    c.sets.push(set);
    let o = analyse(&t(), &c, &env(), None);
    assert_eq!(o.state, TableState::Intact);
    let found = damage_of(&o, "gone");
    assert!(found.iter().any(|d| d.contains("left over")), "{found:?}");
    let p = plan(&m, &o);
    assert!(matches!(
        p.changes.as_slice(),
        [portmap_core::Change::Delete { .. }]
    ));
    let messages = described(&apply::build(&p, &t(), &env(), &[], &apply::Presets::new()));
    assert!(
        messages
            .iter()
            .any(|d| d.contains("delete set inet portmap allow_gone_src")),
        "{messages:?}"
    );
}

#[test]
fn pending_cleanups_are_recorded_once_and_read_back() {
    let before = model();
    let mut after = model();
    after.mappings[2].to = "192.168.1.99".parse().unwrap();
    let p = plan(&after, &observed(&before));
    let stale = p.stale_flows();
    assert_eq!(stale.len(), 3);
    let built = apply::build(&p, &t(), &env(), &stale, &apply::Presets::new());
    let messages = described(&built);
    assert!(
        messages
            .iter()
            .any(|d| d.contains("add element to set inet portmap stale4")),
        "{messages:?}"
    );
    // Read back, the records are the pending flows, narrowed or not.
    let mut c = contents(&after, &t(), &env());
    c.elements.insert(
        layout::STALE4.into(),
        stale.iter().map(crate::element::stale_element).collect(),
    );
    let o = analyse(&t(), &c, &env(), None);
    assert_eq!(o.state, TableState::Intact);
    assert_eq!(o.pending_flows, stale);
    let again = plan(&after, &o);
    assert!(!again.changes_kernel() && !again.is_empty());
    // A transaction does not record again what is already pending.
    let mut later = after.clone();
    later.mappings[0].to = "192.168.1.98".parse().unwrap();
    let p2 = plan(&later, &o);
    assert_eq!(p2.pending_flows, stale);
    let messages = described(&apply::build(&p2, &t(), &env(), &stale, &apply::Presets::new()));
    assert!(messages.iter().all(|d| !d.contains("stale4")), "{messages:?}");
    let web_stale = p2.stale_flows();
    let messages = described(&apply::build(
        &p2,
        &t(),
        &env(),
        &web_stale,
        &apply::Presets::new(),
    ));
    assert!(
        messages
            .iter()
            .any(|d| d.contains("add element to set inet portmap stale4")),
        "{messages:?}"
    );
}

#[test]
fn a_port_moved_between_mappings_is_deleted_before_it_is_added() {
    // In the kernel, game's tcp/udp 6001 element carries web's name: web holds a key game needs.
    let m = model();
    let mut c = contents(&m, &t(), &env());
    for e in c.elements.get_mut(layout::DNAT4).unwrap() {
        if let Some((f, Some(_))) = crate::element::parse_dnat_element(e, IpFamily::V4)
            && f.port == 6001
        {
            *e = crate::element::dnat_element(&f, "web: web server: main");
        }
    }
    let o = analyse(&t(), &c, &env(), Some(1));
    let p = plan(&m, &o);
    let names: Vec<&str> = p.changes.iter().map(|c| c.name(&p.desired)).collect();
    assert_eq!(names, ["game", "web"]);
    let messages = described(&apply::build(&p, &t(), &env(), &[], &apply::Presets::new()));
    let first_add = messages.iter().position(|d| d.starts_with("add")).unwrap();
    assert!(
        messages[first_add..].iter().all(|d| !d.starts_with("delete")),
        "every deletion goes before any addition: {messages:?}"
    );
}

/// Two mappings using the list `office`, one with a prefix of its own too.
fn with_sources(office: &str) -> Model {
    portmap_core::load_str(
        &format!(
            "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\n\
             sources: {{ office: [{office}, \"2001:db8:1::/48\"] }}\nmappings:\n\
             \x20 - {{ name: a, port: 1, to: 192.168.1.2, allow_from: [office] }}\n\
             \x20 - {{ name: b, port: 2, to: 192.168.1.3, allow_from: [office, 192.0.2.9] }}\n\
             \x20 - {{ name: c, port: 3, to: \"2001:db8:2::3\", allow_from: [office] }}\n"
        ),
        "test",
    )
    .unwrap()
}

#[test]
fn source_lists_are_one_set_per_family_read_back_with_the_mappings_using_them() {
    let model = with_sources("198.51.100.0/24");
    let o = observed(&model);
    assert_eq!(o.state, TableState::Intact);
    assert_eq!(o.sources.as_ref(), Some(&model.sources));
    let b = o.mappings.iter().find(|m| m.name == "b").unwrap();
    assert_eq!(b.allow_sources, ["office"]);
    assert_eq!(b.allow_inline, ["192.0.2.9/32".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(b.allow_from, model.mappings[1].allow_from);
    assert!(plan(&model, &o).is_empty());
    let c = contents(&model, &t(), &env());
    for set in ["src_office4", "src_office6"] {
        assert!(c.sets.iter().any(|s| s.name == set), "{set}");
    }
    // Each mapping's chain: the list's return rule, then the drop rule.
    let rules: Vec<&Rule> = c.rules.iter().filter(|r| r.chain == "allow_b").collect();
    assert_eq!(rules.len(), 2);
    assert!(
        rules[0]
            .exprs
            .iter()
            .any(|e| matches!(e, Expr::Lookup { set, invert: false, .. } if set == "src_office4"))
    );
}

#[test]
fn a_list_change_is_one_element_delta_of_its_set() {
    let before = with_sources("198.51.100.0/24");
    let after = with_sources("203.0.113.0/24");
    let p = plan(&after, &observed(&before));
    assert!(p.changes.is_empty(), "{p:#?}");
    assert_eq!(p.sources.len(), 1);
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    assert!(!built.rebuilt);
    // One delete and one add of one interval (start and end elements each), in src_office4.
    assert_eq!(described(&built).len(), 2, "{:?}", described(&built));
    assert!(
        described(&built).iter().all(|d| d.contains("src_office4")),
        "{:?}",
        described(&built)
    );
    assert_eq!(built.objects, 4);
    assert!(plan(&after, &observed(&after)).is_empty());
}

#[test]
fn a_missing_return_rule_is_seen() {
    let model = with_sources("198.51.100.0/24");
    let mut c = contents(&model, &t(), &env());
    // A hand-deleted return rule in a's chain leaves its allow-list set empty: every source refused.
    let i = c.rules.iter().position(|r| r.chain == "allow_a").unwrap();
    c.rules.remove(i);
    let o = analyse(&t(), &c, &env(), Some(1));
    let damage = damage_of(&o, "a");
    assert!(
        damage.iter().any(|d| d.contains("every source is refused")),
        "{damage:?}"
    );
}

/// `model()` with `mail` (an allow-list) and `game` (a limit and logging) expiring at `at`.
fn expiring(at: portmap_core::UtcTime) -> Model {
    let mut m = model();
    for x in &mut m.mappings {
        if x.name == "mail" || x.name == "game" {
            x.expires = Some(at);
        }
        if x.name == "game" {
            x.log = Some(100);
            x.limit = Some(portmap_core::Limit {
                rate: 20,
                per: portmap_core::RateUnit::Second,
                burst: 40,
            });
        }
    }
    m
}

/// The per-port maps (DNAT, guard, counters, limit, log; per family, with and without listen
/// addresses): what carries timeouts in a table built for an expiry.
const PER_PORT_MAPS: usize = 24;

/// How many of the table's sets have `flags timeout`.
fn timed_maps(c: &layout::Contents) -> usize {
    c.sets
        .iter()
        .filter(|s| s.flags & portmap_netlink::set_flags::TIMEOUT != 0)
        .count()
}

#[test]
fn maps_get_timeouts_with_the_first_expiry_and_keep_them() {
    // Without an expiry the maps have no timeouts (the kernel's faster fixed-size hash), and the
    // table says it cannot hold one.
    let plain = model();
    let c = contents(&plain, &t(), &env());
    assert_eq!(timed_maps(&c), 0);
    let o = analyse(&t(), &c, &env(), Some(1));
    assert_eq!(o.state, TableState::Intact);
    assert!(!o.can_expire);
    assert!(plan(&plain, &o).is_empty());
    // The first expiring mapping rebuilds the table, with timeouts on every per-port map.
    let at = in_an_hour();
    let p = plan(&expiring(at), &o);
    assert_eq!(p.table_action, TableAction::Keep);
    assert!(!p.observed_can_expire);
    assert!(apply::rebuilds(&p), "{p:?}");
    let timed = analyse(&t(), &contents(&expiring(at), &t(), &env()), &env(), Some(2));
    assert!(timed.can_expire);
    assert!(plan(&expiring(at), &timed).is_empty());
    // Once there, they stay: dropping the expiries is a delta, not another rebuild.
    let p = plan(&plain, &timed);
    assert!(!p.changes.is_empty());
    assert!(!apply::rebuilds(&p), "{p:?}");
    // A table with timeouts on some maps only is not one portmap builds: it is rebuilt.
    let mut mixed = contents(&plain, &t(), &env());
    let conn4 = mixed.sets.iter_mut().find(|s| s.name == layout::CONN4).unwrap();
    conn4.flags |= portmap_netlink::set_flags::TIMEOUT;
    let o = analyse(&t(), &mixed, &env(), Some(3));
    assert!(
        matches!(&o.state, TableState::Damaged { reasons } if reasons.iter().any(|r| r.contains("conn4"))),
        "{:?}",
        o.state
    );
}

fn in_an_hour() -> portmap_core::UtcTime {
    portmap_core::UtcTime::from_unix_seconds(portmap_core::UtcTime::now().unix_seconds() + 3600)
}

#[test]
fn every_element_of_an_expiring_mapping_times_out_at_its_expiry() {
    let at = in_an_hour();
    let m = expiring(at);
    let c = contents(&m, &t(), &env());
    let mut timed = 0;
    for (set, elements) in &c.elements {
        for e in elements {
            if let Some(ms) = e.timeout {
                assert!((3_597_000..=3_600_000).contains(&ms), "{set}: {ms}");
                timed += 1;
            }
        }
    }
    // mail: dnat, guard, conn, traffic; game (3 ports): dnat, conn, traffic, limit, log.
    assert_eq!(timed, 4 + 3 * 5);
    assert_eq!(timed_maps(&c), PER_PORT_MAPS);
    let o = analyse(&t(), &c, &env(), Some(1));
    assert_eq!(o.state, TableState::Intact);
    assert!(o.can_expire);
    let mail = o.mappings.iter().find(|x| x.name == "mail").unwrap();
    assert!(!mail.is_damaged(), "{:?}", mail.damage);
    assert!(
        portmap_core::same_expiry(mail.expires, Some(at)),
        "{:?}",
        mail.expires
    );
    let web = o.mappings.iter().find(|x| x.name == "web").unwrap();
    assert_eq!(web.expires, None);
    assert!(plan(&m, &o).is_empty());
    // Another expiry is a change of the field, which deletes and re-creates the mapping.
    let mut later = m.clone();
    later.mappings[1].expires = Some(portmap_core::UtcTime::from_unix_seconds(at.unix_seconds() + 60));
    let p = plan(&later, &o);
    let [portmap_core::Change::Update { fields, .. }] = p.changes.as_slice() else {
        panic!("{:?}", p.changes);
    };
    assert_eq!(fields[0].field, "expires");
    assert!(apply::recreates_counters(&p));
}

#[test]
fn what_the_kernel_keeps_of_an_expired_mapping_is_no_drift() {
    let at = in_an_hour();
    let m = expiring(at);
    let mut c = contents(&m, &t(), &env());
    // The kernel removed every element with a timeout; an hour and a bit later.
    for elements in c.elements.values_mut() {
        elements.retain(|e| e.timeout.is_none());
    }
    c.read_at_ms = Some(u64::try_from(at.unix_seconds() + 5).unwrap() * 1000);
    let o = analyse(&t(), &c, &env(), Some(1));
    assert_eq!(o.state, TableState::Intact);
    for name in ["mail", "game"] {
        let x = o.mappings.iter().find(|x| x.name == name).unwrap();
        assert!(!x.is_damaged(), "{name}: {:?}", x.damage);
        assert!(x.forwards.is_empty());
        assert_eq!(x.expires, Some(at));
        assert!(x.is_expired(o.observed_at));
        assert!(
            !x.objects.is_empty(),
            "{name}: its objects are named for a later delete"
        );
    }
    // With the configuration: no change (the expired mappings are left as the kernel left them).
    let p = plan(&m, &o);
    assert!(p.is_empty(), "{p}");
    assert!(
        p.warnings.iter().any(|w| w.contains("mapping mail expired")),
        "{:?}",
        p.warnings
    );
    // Out of the configuration: deleted, with exactly what is left of them.
    let mut gone = m.clone();
    gone.mappings.retain(|x| x.name != "mail" && x.name != "game");
    let p = plan(&gone, &o);
    assert_eq!(p.counts().delete, 2, "{p}");
    let built = apply::build(&p, &t(), &env(), &[], &apply::Presets::new());
    assert!(built.objects >= 2 * 2, "counters of both go");
    // Given a later expiry: built again whole, its counters made again with the new record.
    let mut again = m.clone();
    again.mappings[1].expires = Some(portmap_core::UtcTime::from_unix_seconds(at.unix_seconds() + 7200));
    let p = plan(&again, &o);
    assert!(
        matches!(p.changes.as_slice(), [portmap_core::Change::Repair { .. }]),
        "{p}"
    );
}

#[test]
fn elements_that_disagree_on_their_expiry_are_damage() {
    let m = expiring(in_an_hour());
    let mut c = contents(&m, &t(), &env());
    // One of mail's elements lost its timeout (added again by hand).
    let guard = c.elements.get_mut(layout::GUARD4).unwrap();
    guard[0].timeout = None;
    let o = analyse(&t(), &c, &env(), Some(1));
    let mail = o.mappings.iter().find(|x| x.name == "mail").unwrap();
    assert!(
        mail.damage
            .iter()
            .any(|d| d.contains("expire and the others do not")),
        "{:?}",
        mail.damage
    );
    // Its counters say another moment than its elements.
    let mut c = contents(&m, &t(), &env());
    for e in c.elements.values_mut().flatten() {
        e.timeout = e.timeout.map(|ms| ms + 600_000);
    }
    let o = analyse(&t(), &c, &env(), Some(1));
    let mail = o.mappings.iter().find(|x| x.name == "mail").unwrap();
    assert!(
        mail.damage
            .iter()
            .any(|d| d.contains("its counters record expiry")),
        "{:?}",
        mail.damage
    );
}
