//! Pure tests of the backend: what a rebuild would send, read back by `analyse`, gives the model's
//! mappings and settings; hand damage is reported; a delta touches only the changed mapping.

use std::net::IpAddr;

use portmap_core::{Mapping, Model, Observed, PortRange, Protocol, Settings, TableAction, TableState, plan};
use portmap_netlink::Expr;

use crate::apply::{self, contents};
use crate::lan_side::LanSide;
use crate::layout::{self, TableId};
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
        description: None,
    }
}

fn model() -> Model {
    let mut web = mapping("web", Protocol::Tcp, (8080, 8080), "192.168.1.66", (80, 80), &[]);
    web.description = Some("web server: main".to_owned());
    Model {
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

#[test]
fn contents_read_back_as_the_model() {
    for (masquerade, hairpin) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut m = model();
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
    stray.key = crate::element::key_bytes(portmap_core::Transport::Tcp, 9999);
    c.elements.get_mut(layout::DNAT4).unwrap().push(stray);
    let TableState::Damaged { reasons } = analyse(&t(), &c, &env(), None).state else {
        panic!()
    };
    assert!(reasons.iter().any(|r| r.contains("tcp . 9999")), "{reasons:?}");

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
    let built = apply::build(&p, &t(), &env());
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
    let built = apply::build(&p, &t(), &env());
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
    assert!(apply::build(&p, &t(), &env()).rebuilt);
}

#[test]
fn rules_use_the_expected_expressions() {
    let rules = layout::static_rules(&t(), apply::shape_of(&model().settings));
    let pre = &rules[1].exprs;
    assert!(matches!(pre.last(), Some(Expr::Nat { .. })));
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
