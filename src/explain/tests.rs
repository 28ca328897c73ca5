//! Unit tests of explain's pure half: [`evaluate`] on hand-built facts (no kernel, no root), and
//! the chain evaluator on rules written as `portmap-netlink` decodes what nft sends.

use std::collections::HashMap;
use std::net::IpAddr;

use portmap_netlink::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, Interface, MetaKey, NoRoute, PayloadBase,
    Policy, Register, Route, RouteType, Rule, Set, Verdict, elem_flags, set_flags,
};

use super::*;
use crate::{Environment, Forward, Observed, ObservedMapping, Settings, TableState, Transport};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn iface(index: u32, name: &str, addrs: &[(&str, u8)]) -> Interface {
    Interface {
        index,
        name: name.to_owned(),
        up: true,
        addrs: addrs.iter().map(|(a, p)| (ip(a), *p)).collect(),
    }
}

/// A unicast route through `oif`, as the facts hold it.
#[allow(clippy::unnecessary_wraps)]
fn route(oif: u32) -> Result<Route, NoRoute> {
    Ok(Route {
        kind: RouteType::Unicast,
        oif: Some(oif),
        gateway: None,
        prefsrc: None,
        table: 254,
    })
}

fn forward(transport: Transport, port: u16, to: &str, to_port: u16) -> Forward {
    Forward {
        transport,
        port,
        to: ip(to),
        to_port,
        listen: None,
    }
}

fn mapping(name: &str, forwards: Vec<Forward>, allow: &[&str]) -> ObservedMapping {
    let mut m = ObservedMapping::found(name, forwards);
    m.allow_from = allow.iter().map(|a| a.parse().expect("prefix")).collect();
    m
}

/// The lab: wan0 (index 2, 203.0.113.1/24), lan0 (index 3, 192.168.1.1/24), web tcp/8080 →
/// 192.168.1.66:80 from 203.0.113.0/24, games udp/8080, range tcp/6000-6002 → 7000-7002; routes
/// to the source through wan0 and to the target through lan0; forwarding on.
fn facts() -> Facts {
    let mut observed = Observed::missing("nft", "inet portmap", Some(1));
    observed.state = TableState::Intact;
    observed.settings = Settings {
        wan_interfaces: vec!["wan0".to_owned()],
        lan_interfaces: vec!["lan0".to_owned()],
        masquerade: false,
        hairpin: true,
    };
    observed.mappings = vec![
        mapping(
            "games",
            vec![forward(Transport::Udp, 8080, "192.168.1.70", 8080)],
            &[],
        ),
        mapping(
            "range",
            (0..3)
                .map(|i| forward(Transport::Tcp, 6000 + i, "192.168.1.71", 7000 + i))
                .collect(),
            &[],
        ),
        mapping(
            "web",
            vec![forward(Transport::Tcp, 8080, "192.168.1.66", 80)],
            &["203.0.113.0/24", "203.0.113.2/32"],
        ),
    ];
    observed.environment = Environment {
        interfaces: None,
        ipv4_forwarding: Some(true),
        ipv6_forwarding: Some(true),
        blocking_forward_chains: Vec::new(),
        ipv6_unavailable: None,
    };
    Facts {
        observed,
        interfaces: vec![
            iface(1, "lo", &[("127.0.0.1", 8)]),
            iface(2, "wan0", &[("203.0.113.1", 24)]),
            iface(3, "lan0", &[("192.168.1.1", 24)]),
            iface(4, "dmz0", &[("10.0.0.1", 24)]),
        ],
        source_route: Some(route(2)),
        target_route: Some(route(3)),
        tables: Vec::new(),
        nft_backend: true,
        iptables_blockers: Vec::new(),
    }
}

fn query(port: u16, from: Option<&str>, to: Option<&str>) -> Query {
    Query::new(Transport::Tcp, port, from.map(ip), to.map(ip)).expect("a valid query")
}

fn find(e: &Explanation, kind: Kind) -> Vec<&Finding> {
    e.findings.iter().filter(|f| f.kind == kind).collect()
}

#[track_caller]
fn one(e: &Explanation, kind: Kind) -> &Finding {
    match find(e, kind).as_slice() {
        [f] => f,
        other => panic!("expected one {kind:?} finding, got {other:?} in\n{e}"),
    }
}

#[test]
fn a_forwarded_packet_names_its_mapping_entry_and_target() {
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("203.0.113.1")), &facts());
    assert!(e.forwarded() && e.certain(), "{e}");
    assert_eq!(e.mapping.as_deref(), Some("web"));
    assert_eq!(e.target, Some((ip("192.168.1.66"), 80)));
    assert_eq!(
        one(&e, Kind::Mapping).message,
        "tcp/8080 is mapping web: DNAT to 192.168.1.66:80"
    );
    assert_eq!(
        one(&e, Kind::AllowFrom).message,
        "admitted: 203.0.113.2 is in allow_from entry 203.0.113.2/32 of mapping web",
        "the most specific entry is named"
    );
    assert_eq!(one(&e, Kind::Address).effect, Effect::Ok);
    assert_eq!(
        one(&e, Kind::Route).message,
        "the router reaches the target 192.168.1.66 through lan0"
    );
    assert_eq!(one(&e, Kind::Forwarding).effect, Effect::Ok);
    let text = e.to_string();
    assert!(
        text.lines().count() == e.findings.len() + 1,
        "one finding a line:\n{text}"
    );
    assert!(
        text.ends_with("=> tcp/8080 from 203.0.113.2 to 203.0.113.1 is forwarded to 192.168.1.66:80\n"),
        "{text}"
    );
}

#[test]
fn a_source_outside_allow_from_is_refused_by_name() {
    let e = evaluate(&query(8080, Some("198.51.100.7"), None), &facts());
    assert!(!e.forwarded(), "{e}");
    let f = one(&e, Kind::AllowFrom);
    assert_eq!(f.effect, Effect::Blocks);
    assert_eq!(
        f.message,
        "refused: 198.51.100.7 is not in allow_from of mapping web (203.0.113.0/24, 203.0.113.2/32); its packets are dropped"
    );
    // Without --from, the list is only said.
    let e = evaluate(&query(8080, None, None), &facts());
    assert!(e.forwarded(), "{e}");
    assert_eq!(one(&e, Kind::AllowFrom).effect, Effect::Info);
    assert!(
        one(&e, Kind::Address).message.contains("203.0.113.1 on wan0"),
        "{e}"
    );
}

#[test]
fn no_mapping_names_the_nearest() {
    let e = evaluate(&query(7000, None, None), &facts());
    assert!(!e.forwarded());
    assert_eq!(
        one(&e, Kind::NoMapping).message,
        "no mapping for tcp/7000; tcp/6002 is mapped (range); tcp/8080 is mapped (web)"
    );
    let udp = Query::new(Transport::Udp, 6001, None, None).expect("valid");
    let e = evaluate(&udp, &facts());
    assert_eq!(
        one(&e, Kind::NoMapping).message,
        "no mapping for udp/6001; tcp/6001 is mapped (range); udp/8080 is mapped (games)"
    );
    assert!(
        find(&e, Kind::Route).is_empty() && find(&e, Kind::Forwarding).is_empty(),
        "{e}"
    );

    let mut empty = facts();
    empty.observed.mappings.clear();
    let e = evaluate(&query(80, None, None), &empty);
    assert_eq!(
        one(&e, Kind::NoMapping).message,
        "no mapping for tcp/80: portmap's table holds no mappings"
    );
}

#[test]
fn an_offset_range_gives_the_shifted_port() {
    let e = evaluate(&query(6001, None, None), &facts());
    assert_eq!(e.target, Some((ip("192.168.1.71"), 7001)));
    assert_eq!(
        one(&e, Kind::Mapping).message,
        "tcp/6001 is mapping range: DNAT to 192.168.1.71:7001, port 6001 of tcp 6000-6002 → 192.168.1.71:7000-7002"
    );
}

#[test]
fn a_missing_table_blocks_once_and_a_damaged_one_is_a_maybe() {
    let mut f = facts();
    f.observed.state = TableState::Missing;
    f.observed.mappings.clear();
    let e = evaluate(&query(8080, None, None), &f);
    assert!(!e.forwarded());
    assert!(
        one(&e, Kind::Table)
            .message
            .contains("table inet portmap does not exist"),
        "{e}"
    );
    assert!(find(&e, Kind::NoMapping).is_empty(), "no second reason: {e}");

    let mut f = facts();
    f.observed.mappings[2].damage =
        vec!["chain allow_web is empty: the ports it guards are open to every source".to_owned()];
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(e.forwarded() && !e.certain(), "{e}");
    let d = one(&e, Kind::Damage);
    assert_eq!(d.effect, Effect::MayBlock);
    assert!(
        d.message
            .contains("mapping web is damaged: chain allow_web is empty"),
        "{d:?}"
    );
}

#[test]
fn forwarding_disabled_blocks_and_unreadable_is_a_maybe() {
    let mut f = facts();
    f.observed.environment.ipv4_forwarding = Some(false);
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(!e.forwarded());
    assert!(
        one(&e, Kind::Forwarding)
            .message
            .starts_with("IPv4 forwarding is disabled (net.ipv4.ip_forward = 0)")
    );
    f.observed.environment.ipv4_forwarding = None;
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert_eq!(one(&e, Kind::Forwarding).effect, Effect::MayBlock);
}

#[test]
fn routes_to_the_target_and_back_to_the_source() {
    let mut f = facts();
    f.target_route = Some(Err(NoRoute {
        errno: libc::ENETUNREACH,
    }));
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(!e.forwarded());
    assert_eq!(
        one(&e, Kind::Route).message,
        "the router has no route to the target 192.168.1.66: no route matches (network unreachable)"
    );

    // Through the WAN: it works, but is unlikely to be meant.
    let mut f = facts();
    f.target_route = Some(route(2));
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert_eq!(one(&e, Kind::Route).effect, Effect::MayBlock);

    // The source on neither side, or with no route back.
    let mut f = facts();
    f.source_route = Some(route(4));
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(!e.forwarded());
    assert!(
        one(&e, Kind::Source)
            .message
            .contains("dmz0, which is neither a WAN interface (wan0) nor a LAN interface (lan0)")
    );
    f.source_route = Some(Err(NoRoute {
        errno: libc::ENETUNREACH,
    }));
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(
        one(&e, Kind::Source)
            .message
            .starts_with("the router has no route back to 203.0.113.2")
    );
}

#[test]
fn a_target_on_the_router_is_delivered_not_forwarded() {
    let mut f = facts();
    f.observed.mappings[2].forwards = vec![forward(Transport::Tcp, 8080, "192.168.1.1", 22)];
    f.target_route = Some(Ok(Route {
        kind: RouteType::Local,
        oif: Some(1),
        gateway: None,
        prefsrc: None,
        table: 255,
    }));
    f.observed.environment.ipv4_forwarding = Some(false);
    f.tables = vec![table(
        Family::Inet,
        vec![base("input", Hook::Input, 0, "filter", Policy::Drop)],
        Vec::new(),
    )];
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(
        one(&e, Kind::Route)
            .message
            .contains("delivered to the router's own port 22"),
        "{e}"
    );
    assert!(
        find(&e, Kind::Forwarding).is_empty(),
        "forwarding does not matter: {e}"
    );
    assert!(
        one(&e, Kind::Chain)
            .message
            .starts_with("table inet fw, chain input (hook input, priority 0) drops it"),
        "{e}"
    );
}

#[test]
fn the_public_address() {
    // Not the router's.
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("198.51.100.1")), &facts());
    assert!(!e.forwarded());
    assert!(
        one(&e, Kind::Address)
            .message
            .contains("198.51.100.1 is not an address of the router")
    );
    // The router's, on a LAN interface: from the WAN it is translated all the same.
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("192.168.1.1")), &facts());
    assert!(e.forwarded(), "{e}");
    assert_eq!(one(&e, Kind::Address).effect, Effect::Info);
    // From the LAN it is the router's own service.
    let mut f = facts();
    f.source_route = Some(route(3));
    let e = evaluate(&query(8080, Some("203.0.113.9"), Some("192.168.1.1")), &f);
    assert!(!e.forwarded());
    assert!(
        one(&e, Kind::Address)
            .message
            .contains("hairpin never takes over")
    );
}

#[test]
fn hairpin_for_the_lan_and_the_router() {
    let mut f = facts();
    f.source_route = Some(route(3));
    f.observed.mappings[2].allow_from.clear();
    let e = evaluate(&query(8080, Some("192.168.1.25"), None), &f);
    assert!(e.forwarded(), "{e}");
    assert!(
        one(&e, Kind::Hairpin)
            .message
            .contains("masqueraded to the router's LAN address (192.168.1.1)")
    );
    f.observed.settings.hairpin = false;
    let e = evaluate(&query(8080, Some("192.168.1.25"), None), &f);
    assert!(!e.forwarded());
    assert!(one(&e, Kind::Hairpin).message.starts_with("hairpin is off"));
    // The router itself.
    f.observed.settings.hairpin = true;
    let e = evaluate(&query(8080, Some("203.0.113.1"), None), &f);
    assert!(e.forwarded(), "{e}");
    assert!(
        one(&e, Kind::Source)
            .message
            .contains("an address of the router itself")
    );
    assert!(one(&e, Kind::Hairpin).message.contains("nat output"));
}

#[test]
fn a_packet_of_the_other_family_is_not_forwarded() {
    let mut f = facts();
    f.observed.mappings[2].allow_from.clear();
    let e = evaluate(&query(8080, Some("2001:db8::9"), None), &f);
    assert!(!e.forwarded());
    assert!(
        find(&e, Kind::Mapping)
            .iter()
            .any(|m| m.message.contains("forwards IPv4 packets only")),
        "{e}"
    );
}

#[test]
fn bad_queries_are_refused() {
    assert!(Query::new(Transport::Tcp, 0, None, None).is_err());
    let err = Query::new(
        Transport::Tcp,
        80,
        Some(ip("203.0.113.2")),
        Some(ip("2001:db8::1")),
    )
    .expect_err("families");
    assert!(err.contains("different address families"), "{err}");
}

#[test]
fn the_json_document() {
    let e = evaluate(&query(8080, Some("198.51.100.7"), None), &facts());
    let doc = e.to_json();
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["command"], "explain");
    assert_eq!(doc["forwarded"], false);
    assert_eq!(doc["certain"], true);
    assert_eq!(doc["mapping"], "web");
    assert_eq!(
        doc["target"],
        serde_json::json!({"address": "192.168.1.66", "port": 80})
    );
    assert_eq!(
        doc["query"],
        serde_json::json!({"protocol": "tcp", "port": 8080, "from": "198.51.100.7", "to": null})
    );
    let findings = doc["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), e.findings.len());
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "allow_from" && f["effect"] == "blocks")
    );
    let e = evaluate(&query(9, None, None), &facts());
    assert_eq!(e.to_json()["target"], serde_json::Value::Null);
}

#[test]
fn iptables_sentences_are_maybes() {
    let mut f = facts();
    f.nft_backend = false;
    f.iptables_blockers = vec!["iptables-legacy filter, chain FORWARD has policy DROP".to_owned()];
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), &f);
    assert!(e.forwarded() && !e.certain(), "{e}");
    assert!(
        one(&e, Kind::Iptables)
            .message
            .starts_with("iptables-legacy filter, chain FORWARD has policy DROP")
    );
}

// --- the chain evaluator -------------------------------------------------------------------------

fn base(name: &str, hook: Hook, priority: i32, chain_type: &str, policy: Policy) -> Chain {
    Chain {
        family: Family::Inet,
        table: "fw".to_owned(),
        name: name.to_owned(),
        base: Some(BaseChain {
            hook,
            priority,
            chain_type: chain_type.to_owned(),
            policy,
        }),
        userdata: None,
        handle: None,
    }
}

fn regular(name: &str) -> Chain {
    Chain {
        base: None,
        ..base(name, Hook::Forward, 0, "filter", Policy::Accept)
    }
}

fn rule(chain: &str, exprs: Vec<Expr>) -> Rule {
    Rule {
        family: Family::Inet,
        table: "fw".to_owned(),
        chain: chain.to_owned(),
        exprs,
        userdata: None,
        handle: None,
    }
}

fn table(family: Family, chains: Vec<Chain>, rules: Vec<Rule>) -> TableRules {
    TableRules {
        family,
        name: "fw".to_owned(),
        chains,
        rules,
        sets: HashMap::new(),
    }
}

fn verdict(v: Verdict) -> Expr {
    Expr::Immediate {
        dreg: Register::Verdict,
        data: Data::Verdict(v),
    }
}

fn cmp(op: CmpOp, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: Register::R1,
        op,
        data: data.to_vec(),
    }
}

/// `ct status dnat accept`.
fn ct_status_dnat_accept() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: 2,
            dreg: Register::R1,
            direction: None,
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 4,
            mask: 0x20u32.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, &[0; 4]),
        verdict(Verdict::Accept),
    ]
}

/// `ct state established,related accept`.
fn ct_established_accept() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: 0,
            dreg: Register::R1,
            direction: None,
        },
        Expr::Bitwise {
            sreg: Register::R1,
            dreg: Register::R1,
            len: 4,
            mask: 6u32.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(CmpOp::Neq, &[0; 4]),
        verdict(Verdict::Accept),
    ]
}

fn iifname(name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0);
    vec![
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: Register::R1,
        },
        cmp(CmpOp::Eq, &data),
    ]
}

/// `tcp sport N` (with its `meta l4proto tcp` dependency).
fn tcp_sport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::R1,
        },
        cmp(CmpOp::Eq, &[6]),
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 0,
            len: 2,
            dreg: Register::R1,
        },
        cmp(CmpOp::Eq, &port.to_be_bytes()),
    ]
}

fn chain_findings(f: &Facts) -> Vec<Finding> {
    let e = evaluate(&query(8080, Some("203.0.113.2"), None), f);
    e.findings.into_iter().filter(|f| f.kind == Kind::Chain).collect()
}

fn with_tables(tables: Vec<TableRules>) -> Facts {
    let mut f = facts();
    f.tables = tables;
    f
}

#[test]
fn a_policy_drop_forward_chain_is_named_and_an_accept_of_dnat_lets_it_through() {
    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Drop)],
        Vec::new(),
    )]);
    let found = chain_findings(&f);
    assert_eq!(found.len(), 2, "the packet and its replies: {found:?}");
    assert_eq!(
        found[0].message,
        "table inet fw, chain forward (hook forward, priority 0) drops it: its policy drop (no rule accepts it); `ct status dnat accept` there lets port forwards through"
    );
    assert_eq!(found[0].effect, Effect::Blocks);
    assert!(found[1].message.contains("drops its replies"), "{found:?}");

    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Drop)],
        vec![
            rule("forward", ct_established_accept()),
            rule("forward", ct_status_dnat_accept()),
        ],
    )]);
    let found = chain_findings(&f);
    assert!(found.iter().all(|f| f.effect == Effect::Ok), "{found:?}");

    // Only established: the first packet (new) is dropped, its replies pass.
    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Drop)],
        vec![rule("forward", ct_established_accept())],
    )]);
    let found = chain_findings(&f);
    assert_eq!(found[0].effect, Effect::Blocks, "{found:?}");
    assert_eq!(found[1].effect, Effect::Ok, "{found:?}");
}

#[test]
fn unknowns_make_a_maybe_that_names_them() {
    let mut exprs = tcp_sport(1234);
    exprs.push(verdict(Verdict::Drop));
    let f = with_tables(vec![table(
        Family::Ipv4,
        vec![base("pre", Hook::Prerouting, -150, "filter", Policy::Accept)],
        vec![rule("pre", exprs)],
    )]);
    let found = chain_findings(&f);
    assert_eq!(found[0].effect, Effect::MayBlock, "{found:?}");
    assert_eq!(
        found[0].message,
        "table ip fw, chain pre (hook prerouting, priority -150) may drop it at rule 1 of chain pre (drop): it tests the source port"
    );
    // The reply's source port is known (the target's port 80): not 1234, so it passes.
    assert_eq!(found[1].effect, Effect::Ok, "{found:?}");
}

#[test]
fn interfaces_jumps_and_returns_are_followed() {
    // forward: iifname "wan0" jump from_wan; policy drop. from_wan: iifname "lan0" drop;
    // return... then `ct status dnat accept` in forward after the jump.
    let mut jump = iifname("wan0");
    jump.push(verdict(Verdict::Jump("from_wan".to_owned())));
    let mut lan_drop = iifname("lan0");
    lan_drop.push(verdict(Verdict::Drop));
    let f = with_tables(vec![table(
        Family::Inet,
        vec![
            base("forward", Hook::Forward, 0, "filter", Policy::Drop),
            regular("from_wan"),
        ],
        vec![
            rule("forward", ct_established_accept()),
            rule("forward", jump),
            rule("from_wan", lan_drop),
            rule("from_wan", vec![verdict(Verdict::Return)]),
            rule("forward", ct_status_dnat_accept()),
        ],
    )]);
    let found = chain_findings(&f);
    assert!(found.iter().all(|f| f.effect == Effect::Ok), "{found:?}");

    // A goto into a chain that drops.
    let mut goto = iifname("wan0");
    goto.push(verdict(Verdict::Goto("deny".to_owned())));
    let f = with_tables(vec![table(
        Family::Inet,
        vec![
            base("forward", Hook::Forward, 0, "filter", Policy::Accept),
            regular("deny"),
        ],
        vec![
            rule("forward", goto),
            rule(
                "deny",
                vec![
                    Expr::Counter { bytes: 0, packets: 0 },
                    Expr::Unknown {
                        name: "reject".to_owned(),
                    },
                ],
            ),
        ],
    )]);
    let found = chain_findings(&f);
    assert_eq!(found[0].effect, Effect::Blocks, "{found:?}");
    assert!(
        found[0].message.contains("rule 1 of chain deny (reject)"),
        "{found:?}"
    );
}

#[test]
fn sets_and_verdict_maps_are_looked_up() {
    // ip saddr @trusted accept; policy drop — trusted is the interval 203.0.113.0/28.
    let mut t = table(
        Family::Ipv4,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Drop)],
        vec![
            rule("forward", ct_established_accept()),
            rule(
                "forward",
                vec![
                    Expr::Payload {
                        base: PayloadBase::Network,
                        offset: 12,
                        len: 4,
                        dreg: Register::R1,
                    },
                    Expr::Lookup {
                        sreg: Register::R1,
                        dreg: None,
                        set: "trusted".to_owned(),
                        set_id: 0,
                        invert: false,
                    },
                    verdict(Verdict::Accept),
                ],
            ),
        ],
    );
    let set = Set {
        family: Family::Ipv4,
        table: "fw".to_owned(),
        name: "trusted".to_owned(),
        flags: set_flags::INTERVAL,
        key_type: 7,
        key_len: 4,
        data_type: None,
        data_len: None,
        id: 0,
        concat: Vec::new(),
        userdata: None,
        handle: None,
        obj_type: None,
    };
    let elements = vec![
        Element {
            key: vec![0, 0, 0, 0],
            key_end: None,
            data: None,
            flags: elem_flags::INTERVAL_END,
            userdata: None,
            timeout: None,
            expiration: None,
        },
        Element {
            key: vec![203, 0, 113, 0],
            key_end: None,
            data: None,
            flags: 0,
            userdata: None,
            timeout: None,
            expiration: None,
        },
        Element {
            key: vec![203, 0, 113, 16],
            key_end: None,
            data: None,
            flags: elem_flags::INTERVAL_END,
            userdata: None,
            timeout: None,
            expiration: None,
        },
    ];
    t.sets.insert("trusted".to_owned(), (set.clone(), Some(elements)));
    let f = with_tables(vec![t.clone()]);
    assert!(
        chain_findings(&f).iter().all(|f| f.effect == Effect::Ok),
        "{:?}",
        chain_findings(&f)
    );
    let e = evaluate(
        &query(8080, Some("203.0.113.20"), None),
        &with_tables(vec![t.clone()]),
    );
    let found: Vec<&Finding> = e.findings.iter().filter(|f| f.kind == Kind::Chain).collect();
    assert_eq!(found[0].effect, Effect::Blocks, "outside the interval: {found:?}");
    // Unreadable elements: a maybe.
    t.sets.insert("trusted".to_owned(), (set, None));
    let found = chain_findings(&with_tables(vec![t]));
    assert_eq!(found[0].effect, Effect::MayBlock, "{found:?}");
    assert!(
        found[0].message.contains("set trusted, too large to read"),
        "{found:?}"
    );

    // ct state vmap { established : accept, new : drop }.
    let mut t = table(
        Family::Inet,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Accept)],
        vec![rule(
            "forward",
            vec![
                Expr::Ct {
                    key: 0,
                    dreg: Register::R1,
                    direction: None,
                },
                Expr::Lookup {
                    sreg: Register::R1,
                    dreg: Some(Register::Verdict),
                    set: "__map0".to_owned(),
                    set_id: 0,
                    invert: false,
                },
            ],
        )],
    );
    let map = Set {
        family: Family::Inet,
        table: "fw".to_owned(),
        name: "__map0".to_owned(),
        flags: set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::MAP,
        key_type: 5,
        key_len: 4,
        data_type: Some(0xffff_ff00),
        data_len: Some(16),
        id: 0,
        concat: Vec::new(),
        userdata: None,
        handle: None,
        obj_type: None,
    };
    let element = |state: u32, v: Verdict| Element {
        key: state.to_ne_bytes().to_vec(),
        key_end: None,
        data: Some(Data::Verdict(v)),
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    };
    t.sets.insert(
        "__map0".to_owned(),
        (
            map,
            Some(vec![element(2, Verdict::Accept), element(8, Verdict::Drop)]),
        ),
    );
    let found = chain_findings(&with_tables(vec![t]));
    assert_eq!(found[0].effect, Effect::Blocks, "new is dropped: {found:?}");
    assert_eq!(found[1].effect, Effect::Ok, "established passes: {found:?}");
}

#[test]
fn hooks_priorities_and_families() {
    // An ip6 table never sees this IPv4 packet.
    let f = with_tables(vec![table(
        Family::Ipv6,
        vec![base("forward", Hook::Forward, 0, "filter", Policy::Drop)],
        Vec::new(),
    )]);
    assert!(chain_findings(&f).is_empty());

    // Another table's nat prerouting chain before portmap's DNAT translates it first; after it,
    // it never sees the connection.
    let dnat = vec![Expr::Nat {
        nat_type: portmap_netlink::NatType::Dnat,
        family: 2,
        addr_min: Some(Register::R1),
        addr_max: None,
        proto_min: None,
        proto_max: None,
        flags: 0,
    }];
    let f = with_tables(vec![table(
        Family::Ipv4,
        vec![
            base("early", Hook::Prerouting, -110, "nat", Policy::Accept),
            base("late", Hook::Prerouting, 0, "nat", Policy::Accept),
        ],
        vec![rule("early", dnat.clone()), rule("late", dnat)],
    )]);
    let found = chain_findings(&f);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].effect, Effect::Blocks);
    assert!(
        found[0].message.contains("chain early") && found[0].message.contains("translates it first"),
        "{found:?}"
    );

    // Before conntrack (priority < -200) the state is not known yet.
    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("raw", Hook::Prerouting, -300, "filter", Policy::Drop)],
        vec![rule("raw", ct_established_accept())],
    )]);
    let found = chain_findings(&f);
    assert_eq!(found[0].effect, Effect::MayBlock, "{found:?}");
    assert!(found[0].message.contains("the conntrack state"), "{found:?}");

    // Input chains do not see a forwarded packet.
    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("input", Hook::Input, 0, "filter", Policy::Drop)],
        Vec::new(),
    )]);
    assert!(chain_findings(&f).is_empty());
}

#[test]
fn unknown_tests_that_do_not_matter_do_not_multiply_paths() {
    // 64 rules, each an unknown test that goes on: 2^64 paths if nothing bounded them.
    let rules = (0..64)
        .map(|_| {
            rule(
                "pre",
                vec![
                    Expr::Meta {
                        key: MetaKey::Other(3),
                        dreg: Register::R1,
                    },
                    cmp(CmpOp::Eq, &[1, 0, 0, 0]),
                    Expr::Counter { bytes: 0, packets: 0 },
                ],
            )
        })
        .chain(std::iter::once(rule("pre", vec![verdict(Verdict::Drop)])))
        .collect();
    let f = with_tables(vec![table(
        Family::Inet,
        vec![base("pre", Hook::Prerouting, -150, "filter", Policy::Accept)],
        rules,
    )]);
    let found = chain_findings(&f);
    // Every path ends at the final drop: the mark tests do not matter, and it is certain.
    assert_eq!(found[0].effect, Effect::Blocks, "{found:?}");
}

#[test]
fn a_listen_address_takes_its_packets_before_any_address() {
    let mut f = facts();
    let mut on_second = forward(Transport::Tcp, 8080, "192.168.1.77", 80);
    on_second.listen = Some(ip("203.0.113.10"));
    f.observed.mappings.push(mapping("web2", vec![on_second], &[]));
    // Sent to the second address: the mapping listening there.
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("203.0.113.10")), &f);
    assert_eq!(e.mapping.as_deref(), Some("web2"), "{e}");
    assert_eq!(e.target, Some((ip("192.168.1.77"), 80)));
    assert!(
        one(&e, Kind::Mapping)
            .message
            .starts_with("tcp/8080 on 203.0.113.10 is mapping web2"),
        "{e}"
    );
    // Sent to the first: the mapping on any address.
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("203.0.113.1")), &f);
    assert_eq!(e.mapping.as_deref(), Some("web"), "{e}");
}

#[test]
fn an_expired_mapping_the_kernel_still_lists_forwards_nothing() {
    let mut facts = facts();
    let at = portmap_core::UtcTime::from_unix_seconds(1_798_070_400);
    facts.observed.observed_at = Some(portmap_core::UtcTime::from_unix_seconds(at.unix_seconds() + 60));
    let web = facts
        .observed
        .mappings
        .iter_mut()
        .find(|m| m.name == "web")
        .expect("web");
    web.expires = Some(at);
    let e = evaluate(&query(8080, Some("203.0.113.2"), Some("203.0.113.1")), &facts);
    assert!(!e.forwarded(), "{e}");
    let f = one(&e, Kind::Mapping);
    assert_eq!(f.effect, Effect::Blocks);
    assert!(f.message.contains("which expired at 2026-12-24T00:00:00Z"), "{e}");
    // Before the moment it forwards as ever.
    facts.observed.observed_at = Some(portmap_core::UtcTime::from_unix_seconds(at.unix_seconds() - 60));
    assert!(evaluate(&query(8080, Some("203.0.113.2"), Some("203.0.113.1")), &facts).forwarded());
}
