//! IPv6 end to end: mappings whose `to` is an IPv6 address forward the router's IPv6 address and
//! port to it (ip6 DNAT through map `dnat6`), with real connections in the test's own client /
//! router / LAN namespaces built by `Topology::with_ipv6` (see `portmap_testkit::topology`).
//!
//! Covered: TCP and UDP with the client's real address seen, a `both` range with an offset,
//! `allow_from` with IPv6 prefixes, the dual-stack pattern (an IPv4 and an IPv6 mapping on the same
//! port), hairpin from a LAN host and from the router itself, the router's LAN-side, loopback and
//! link-local addresses never taken over, an empty second plan, `status --json`, and a mapping that
//! changes family in place.
//!
//! Every test here is written `every_backend! { ipv6; … }` and runs once per backend (nft,
//! iptables-legacy, iptables-nft); checks of a backend's own listing are made for that backend.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request, udp_request};
use portmap_testkit::{
    CLIENT, CLIENT6, ConnError, OTHER_CLIENT6, ROUTER_LAN6, Reply, Server, WAN6, WAN6_LINK_LOCAL, config,
    scalar, status_mapping,
};

const WEB6: &str = "
  - name: web6
    protocol: tcp
    port: 8080
    to: 2001:db8:2::66
    to_port: 80
";

/// A LAN host that is not a mapping's target.
const LAN_CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x70);

/// Source addresses of the peers a server saw.
fn ips(seen: &[SocketAddr]) -> Vec<IpAddr> {
    seen.iter().map(SocketAddr::ip).collect()
}

fn v6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn reply(text: &Result<String, ConnError>) -> Reply {
    let text = text.as_ref().unwrap_or_else(|e| panic!("no answer: {e:?}"));
    Reply::parse(text).unwrap_or_else(|| panic!("not an identity reply: {text}"))
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected `{needle}` in:\n{haystack}");
    }
}

/// A config with hairpin on (the other tests use `portmap_testkit::config`, hairpin off).
fn hairpin_config(mappings: &str) -> String {
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nhairpin: true\nmappings:\n{}\n",
        mappings.trim_end()
    )
}

every_backend! {
ipv6;
fn tcp_mapping_reaches_the_lan_host_with_the_clients_ipv6_address(t) {
    let web = t.tcp_server("[2001:db8:2::66]:80");
    t.apply(&config(WEB6)).success();

    if t.is_nft() {
        let table = t.table().expect("apply creates table inet portmap");
        assert_contains(
            &table,
            &[
                "map dnat6 {",
                "type inet_proto . inet_service : ipv6_addr . inet_service",
                r#"tcp . 8080 comment "web6" : 2001:db8:2::66 . 80"#,
                "dnat ip6 to meta l4proto . th dport map @dnat6",
            ],
        );
    }

    t.assert_tcp(CLIENT6, 8080, "[2001:db8:2::66]:80");
    t.assert_tcp(OTHER_CLIENT6, 8080, "[2001:db8:2::66]:80");
    // No SNAT: the server saw both real client addresses.
    assert_eq!(ips(&web.seen()), [v6(CLIENT6), v6(OTHER_CLIENT6)]);
    // The mapping is IPv6 only: the router's IPv4 address forwards nothing on that port.
    t.assert_tcp_blocked(CLIENT, 8080);
    t.plan_json().expect_code(0);
}
}

every_backend! {
ipv6;
fn udp_mapping_reaches_the_lan_host_over_ipv6(t) {
    let dns = t.udp_server("[2001:db8:2::70]:53");
    t.apply(&config(
        "
  - name: dns6
    protocol: udp
    port: 5353
    to: 2001:db8:2::70
    to_port: 53
",
    ))
    .success();
    if t.is_nft() {
        assert_contains(
            &t.table().expect("table exists"),
            &[r#"udp . 5353 comment "dns6" : 2001:db8:2::70 . 53"#],
        );
    }

    t.assert_udp(CLIENT6, 5353, "[2001:db8:2::70]:53");
    // Only UDP is mapped: TCP on the same port stays closed.
    t.assert_tcp_blocked(CLIENT6, 5353);
    assert_eq!(ips(&dns.seen()), [v6(CLIENT6)]);
}
}

every_backend! {
ipv6;
fn both_range_with_an_offset_maps_each_port_over_ipv6(t) {
    let tcp: Vec<_> = (7000..=7002)
        .map(|p| t.tcp_server(&format!("[2001:db8:2::71]:{p}")))
        .collect();
    let udp: Vec<_> = (7000..=7002)
        .map(|p| t.udp_server(&format!("[2001:db8:2::71]:{p}")))
        .collect();
    // A server just past the inner range must never be reached.
    let outside = t.tcp_server("[2001:db8:2::71]:7003");
    t.apply(&config(
        r#"
  - name: game6
    protocol: both
    port: "6000-6002"
    to: 2001:db8:2::71
    to_port: "7000-7002"
"#,
    ))
    .success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        for proto in ["tcp", "udp"] {
            for (port, to_port) in (6000..=6002).zip(7000..=7002) {
                assert_contains(
                    &table,
                    &[&format!(
                        "{proto} . {port} comment \"game6\" : 2001:db8:2::71 . {to_port}"
                    )],
                );
            }
        }
    }
    for (port, to_port) in (6000..=6002).zip(7000..=7002) {
        let server = format!("[2001:db8:2::71]:{to_port}");
        t.assert_tcp(CLIENT6, port, &server);
        t.assert_udp(CLIENT6, port, &server);
    }
    t.assert_tcp_blocked(CLIENT6, 5999);
    t.assert_tcp_blocked(CLIENT6, 6003);
    for server in tcp.iter().chain(&udp) {
        assert_eq!(ips(&server.seen()), [v6(CLIENT6)], "{}", server.local());
    }
    assert!(outside.seen().is_empty());
}
}

every_backend! {
ipv6;
fn allow_from_with_an_ipv6_prefix_admits_one_client_and_refuses_the_other(t) {
    let ssh = t.tcp_server("[2001:db8:2::25]:22");
    t.apply(&config(
        "
  - name: ssh6
    port: 2222
    to: 2001:db8:2::25
    to_port: 22
    allow_from: [2001:db8:1::2/128, 2001:db8:100::/48]
",
    ))
    .success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        assert_contains(
            &table,
            &[
                "map guard6 {",
                "tcp . 2222 comment \"ssh6\" : jump allow_ssh6",
                "set allow_ssh6_src {",
                "type ipv6_addr",
                "2001:db8:100::/48",
                "ip6 saddr != @allow_ssh6_src drop",
            ],
        );
    }

    t.assert_tcp(CLIENT6, 2222, "[2001:db8:2::25]:22");
    t.assert_tcp_blocked(OTHER_CLIENT6, 2222);
    assert_eq!(
        ips(&ssh.seen()),
        [v6(CLIENT6)],
        "the disallowed source must not reach the server"
    );
    t.plan_json().expect_code(0);
}
}

every_backend! {
ipv6;
fn dual_stack_mappings_on_the_same_port_each_reach_their_own_target(t) {
    let web4 = t.tcp_server("192.168.1.66:80");
    let web6 = t.tcp_server("[2001:db8:2::25]:80");
    t.apply(&config(
        "
  - name: web
    port: 80
    to: 192.168.1.66
  - name: web6
    port: 80
    to: 2001:db8:2::25
",
    ))
    .success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        assert_contains(
            &table,
            &[
                r#"tcp . 80 comment "web" : 192.168.1.66 . 80"#,
                r#"tcp . 80 comment "web6" : 2001:db8:2::25 . 80"#,
            ],
        );
    }
    t.assert_tcp(CLIENT, 80, "192.168.1.66:80");
    t.assert_tcp(CLIENT6, 80, "[2001:db8:2::25]:80");
    assert_eq!(ips(&web4.seen()), [IpAddr::V4(CLIENT)]);
    assert_eq!(ips(&web6.seen()), [v6(CLIENT6)]);
    t.plan_json().expect_code(0);
}
}

every_backend! {
ipv6;
fn hairpin_reaches_ipv6_mappings_from_lan_hosts_and_the_router(t) {
    let _web = t.tcp_server("[2001:db8:2::66]:80");
    let _dns = t.udp_server("[2001:db8:2::66]:53");
    t.apply(&hairpin_config(&format!(
        "{WEB6}  - {{ name: dns6, protocol: udp, port: 5353, to: 2001:db8:2::66, to_port: 53 }}\n"
    )))
    .success();

    // A LAN host using the router's public IPv6 address.
    let public = SocketAddr::new(v6(WAN6), 8080);
    let got = reply(&tcp_request(&t.lan, LAN_CLIENT6, public, REPLY_TIMEOUT));
    assert_eq!(got.server, addr("[2001:db8:2::66]:80"));
    // The reflected flow is source-NATed to the router's LAN address, so the answer comes back
    // through the router.
    assert_eq!(got.peer.ip(), v6(ROUTER_LAN6), "{got:?}");
    let got = reply(&udp_request(
        &t.lan,
        LAN_CLIENT6,
        SocketAddr::new(v6(WAN6), 5353),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("[2001:db8:2::66]:53"));

    // The router's own processes.
    let got = reply(&tcp_request(&t.router, WAN6, public, REPLY_TIMEOUT));
    assert_eq!(got.server, addr("[2001:db8:2::66]:80"), "{got:?}");

    // Internet clients still see no SNAT.
    let got = reply(&t.tcp(CLIENT6, 8080));
    assert_eq!(got.peer.ip(), v6(CLIENT6));
    t.plan_json().expect_code(0);
}
}

every_backend! {
ipv6;
fn the_routers_own_ipv6_addresses_are_never_taken_over(t) {
    let _web = t.tcp_server("[2001:db8:2::66]:80");
    // The router runs its own service on the mapped port on its LAN address and on loopback.
    let own_lan = SocketAddr::new(v6(ROUTER_LAN6), 8080);
    let own_lo = SocketAddr::new(v6(Ipv6Addr::LOCALHOST), 8080);
    let _own_lan = Server::tcp(&t.router, own_lan);
    let _own_lo = Server::tcp(&t.router, own_lo);
    t.apply(&hairpin_config(WEB6)).success();
    if t.is_nft() {
        let table = t.table().expect("table exists");
        assert_contains(&table, &["set lan_side6 {", "::1", "2001:db8:2::1"]);
    }

    let got = reply(&tcp_request(&t.lan, LAN_CLIENT6, own_lan, REPLY_TIMEOUT));
    assert_eq!(got.server, own_lan, "a LAN host asking the router got: {got:?}");
    let got = reply(&tcp_request(&t.router, ROUTER_LAN6, own_lan, REPLY_TIMEOUT));
    assert_eq!(got.server, own_lan, "the router asking itself got: {got:?}");
    let got = reply(&tcp_request(
        &t.router,
        Ipv6Addr::LOCALHOST,
        own_lo,
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, own_lo, "loopback got: {got:?}");
    // …while the public address still reaches the mapping.
    let got = reply(&tcp_request(
        &t.lan,
        LAN_CLIENT6,
        SocketAddr::new(v6(WAN6), 8080),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("[2001:db8:2::66]:80"));
}
}

every_backend! {
ipv6;
fn link_local_destinations_stay_the_routers(t) {
    let web = t.tcp_server("[2001:db8:2::66]:80");
    // The router's own service on the mapped port, on every address.
    let own = Server::tcp(&t.router, SocketAddr::new(v6(Ipv6Addr::UNSPECIFIED), 8080));
    t.apply(&config(WEB6)).success();
    if t.is_nft() {
        assert_contains(&t.table().expect("table exists"), &["ip6 daddr != fe80::/10"]);
    }

    // `fib daddr type local` is true for the router's link-local address, but the IPv6 rules skip
    // fe80::/10: a client on the WAN link asking the router's link-local address reaches the router.
    let ifindex = t.client.exec("cat", &["/sys/class/net/eth0/ifindex"]);
    let ifindex: u32 = ifindex
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {ifindex}"));
    let link_local = SocketAddrV6::new(WAN6_LINK_LOCAL, 8080, 0, ifindex);
    let got = reply(&tcp_request(&t.client, CLIENT6, link_local, REPLY_TIMEOUT));
    assert_eq!(got.server, own.local(), "the link-local address got: {got:?}");
    // The public address is forwarded as usual.
    t.assert_tcp(CLIENT6, 8080, "[2001:db8:2::66]:80");
    assert_eq!(ips(&web.seen()), [v6(CLIENT6)]);
}
}

every_backend! {
ipv6;
fn plan_is_empty_after_apply_and_status_lists_the_ipv6_mapping(t) {
    let yaml = config(&format!(
        "{WEB6}    description: \"web server over IPv6\"\n    allow_from: [2001:db8:1::/64]\n"
    ));
    t.write_config(&yaml);
    let before = t.plan_text();
    before.expect_code(2);
    assert!(before.stdout.contains("[2001:db8:2::66]:80"), "{before}");

    t.apply(&yaml).success();
    let text = t.plan_text();
    text.expect_code(0);
    assert!(
        text.stdout.to_lowercase().contains("no changes"),
        "plan should say so:\n{text}"
    );
    t.plan_json().expect_code(0);

    let status = t.portmap(&["status", "--json"]);
    status.success();
    let status = status.json();
    let web6 = status_mapping(&status, "web6");
    assert_eq!(scalar(&web6["protocol"]), "tcp");
    assert_eq!(scalar(&web6["port"]), "8080");
    assert_eq!(scalar(&web6["to"]), "2001:db8:2::66");
    assert_eq!(scalar(&web6["to_port"]), "80");
    assert_eq!(scalar(&web6["description"]), "web server over IPv6");
    assert_eq!(
        web6["allow_from"],
        serde_json::json!(["2001:db8:1::/64"]),
        "{web6:#}"
    );
    assert_eq!(status["mappings"].as_array().map(Vec::len), Some(1), "{status:#}");
}
}

every_backend! {
ipv6;
/// The same mapping moves from IPv4 to IPv6 in one apply, in place (nft: its elements move to
/// `dnat6`/`guard6` and its allow-list set is recreated; iptables: its rules move from iptables to
/// ip6tables).
fn a_mapping_that_changes_family_is_changed_in_place(t) {
    let _web4 = t.tcp_server("192.168.1.25:22");
    let _web6 = t.tcp_server("[2001:db8:2::25]:22");
    t.apply(&config(
        "
  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }
",
    ))
    .success();
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");

    let applied = t.apply(&config(
        "
  - { name: ssh, port: 2222, to: 2001:db8:2::25, to_port: 22, allow_from: [2001:db8:1::2/128] }
",
    ));
    applied.success();
    assert!(!applied.stdout.contains("rebuilt"), "{applied}");
    t.assert_tcp(CLIENT6, 2222, "[2001:db8:2::25]:22");
    t.assert_tcp_blocked(OTHER_CLIENT6, 2222);
    t.assert_tcp_blocked(CLIENT, 2222);
    let owned = t.owned().expect("portmap's rules");
    if t.is_nft() {
        assert_contains(&owned, &["ip6 saddr != @allow_ssh_src drop", "type ipv6_addr"]);
    } else {
        let (v4, v6) = owned.split_once("# ip6tables").expect("IPv6 rules");
        assert!(!v4.contains("ssh"), "{owned}");
        assert_contains(v6, &["--to-destination [2001:db8:2::25]:22", "--ctorigsrc 2001:db8:1::2 "]);
    }
    t.plan_json().expect_code(0);
}
}

every_backend! {
ipv6;
fn a_retargeted_ipv6_udp_flow_follows_on_its_next_datagram(t) {
    let _old = t.udp_server("[2001:db8:2::70]:5060");
    let _new = t.udp_server("[2001:db8:2::71]:5060");
    let voip = |target: &str| {
        config(&format!(
            "  - {{ name: voip, protocol: udp, port: 5060, to: {target} }}\n"
        ))
    };
    t.apply(&voip("2001:db8:2::70")).success();

    // One UDP flow from a fixed source port, like a phone: its conntrack entry outlives the apply
    // unless portmap removes it.
    let sock = t
        .client
        .enter(|| std::net::UdpSocket::bind(SocketAddr::new(v6(CLIENT6), 40_000)))
        .expect("bind [2001:db8:1::2]:40000");
    sock.connect(SocketAddr::new(v6(WAN6), 5060)).expect("connect");
    sock.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    let ask = || {
        sock.send(b"hello").expect("send");
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).expect("an answer");
        Reply::parse(&String::from_utf8_lossy(&buf[..n]))
            .expect("identity reply")
            .server
    };
    assert_eq!(ask(), addr("[2001:db8:2::70]:5060"));
    t.apply(&voip("2001:db8:2::71")).success();
    assert_eq!(ask(), addr("[2001:db8:2::71]:5060"));
}
}
