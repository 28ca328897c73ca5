//! Router completeness, end to end: hairpin (NAT reflection) for LAN hosts and for the router's own
//! processes, the router's LAN-side services never taken over, and masquerade of LAN traffic leaving
//! through the WAN. Real connections in the test's own client / router / LAN namespaces. Every test
//! here is written `every_backend! { … }` and runs once per backend (nft, iptables-legacy,
//! iptables-nft).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use portmap_testkit::traffic::{BLOCKED_TIMEOUT, REPLY_TIMEOUT, tcp_request, udp_request};
use portmap_testkit::{CLIENT, ConnError, ROUTER_LAN, Reply, Server, WAN};

/// A LAN host that is not the mapping's target.
const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 70);

fn config(hairpin: bool, masquerade: bool) -> String {
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nhairpin: {hairpin}\nmasquerade: {masquerade}\n\
         mappings:\n\
         \x20 - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n\
         \x20 - name: dns\n    protocol: udp\n    port: 5353\n    to: 192.168.1.66\n    to_port: 53\n"
    )
}

fn reply(text: &Result<String, ConnError>) -> Reply {
    let text = text.as_ref().unwrap_or_else(|e| panic!("no answer: {e:?}"));
    Reply::parse(text).unwrap_or_else(|| panic!("not an identity reply: {text}"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

every_backend! {
fn hairpin_lets_lan_hosts_use_the_public_address(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _dns = t.udp_server("192.168.1.66:53");
    t.apply(&config(true, false)).success();

    let got = reply(&tcp_request(
        &t.lan,
        LAN_CLIENT,
        SocketAddrV4::new(WAN, 8080),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("192.168.1.66:80"));
    // The reflected flow is source-NATed to the router, so the inner host answers through it.
    assert_eq!(got.peer.ip(), std::net::IpAddr::V4(ROUTER_LAN), "{got:?}");
    let got = reply(&udp_request(
        &t.lan,
        LAN_CLIENT,
        SocketAddrV4::new(WAN, 5353),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("192.168.1.66:53"));

    // Internet clients still see no SNAT.
    let got = reply(&t.tcp(CLIENT, 8080));
    assert_eq!(got.peer.ip(), std::net::IpAddr::V4(CLIENT));
}
}

every_backend! {
fn hairpin_reaches_mappings_from_the_router_itself(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(true, false)).success();
    let got = reply(&tcp_request(
        &t.router,
        WAN,
        SocketAddrV4::new(WAN, 8080),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("192.168.1.66:80"), "{got:?}");
}
}

every_backend! {
fn the_routers_lan_side_services_are_never_taken_over(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    // The router runs its own service on 8080 — the mapped port — on its LAN address and loopback.
    let _own_lan = Server::tcp(&t.router, SocketAddrV4::new(ROUTER_LAN, 8080));
    let _own_lo = Server::tcp(&t.router, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    t.apply(&config(true, false)).success();

    let router_lan = SocketAddrV4::new(ROUTER_LAN, 8080);
    let got = reply(&tcp_request(&t.lan, LAN_CLIENT, router_lan, REPLY_TIMEOUT));
    assert_eq!(
        got.server,
        SocketAddr::V4(router_lan),
        "a LAN host asking the router got: {got:?}"
    );
    let got = reply(&tcp_request(&t.router, ROUTER_LAN, router_lan, REPLY_TIMEOUT));
    assert_eq!(
        got.server,
        SocketAddr::V4(router_lan),
        "the router asking itself got: {got:?}"
    );
    let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
    let got = reply(&tcp_request(&t.router, Ipv4Addr::LOCALHOST, lo, REPLY_TIMEOUT));
    assert_eq!(got.server, SocketAddr::V4(lo), "loopback got: {got:?}");
    // …while the public address still reaches the mapping.
    let got = reply(&tcp_request(
        &t.lan,
        LAN_CLIENT,
        SocketAddrV4::new(WAN, 8080),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("192.168.1.66:80"));
}
}

every_backend! {
fn hairpin_false_turns_reflection_off(t) {
    let web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(false, false)).success();
    let got = tcp_request(&t.lan, LAN_CLIENT, SocketAddrV4::new(WAN, 8080), BLOCKED_TIMEOUT);
    assert!(
        got.is_err(),
        "without hairpin a LAN host must not be forwarded: {got:?}"
    );
    let got = tcp_request(&t.router, WAN, SocketAddrV4::new(WAN, 8080), BLOCKED_TIMEOUT);
    assert!(
        got.is_err(),
        "without hairpin the router must not be forwarded: {got:?}"
    );
    assert!(web.seen().is_empty(), "{:?}", web.seen());
    let owned = t.owned().expect("apply writes portmap's rules");
    if t.is_nft() {
        assert!(
            !owned.contains("chain output") && !owned.contains("@lan_ifaces oifname"),
            "{owned}"
        );
    } else {
        assert!(
            !owned.contains("MASQUERADE") && !owned.contains("-j PORTMAP-HAIR"),
            "{owned}"
        );
    }
    // Turning it on is a plan of its own, applied in place.
    t.apply(&config(true, false)).success();
    assert!(tcp_request(&t.lan, LAN_CLIENT, SocketAddrV4::new(WAN, 8080), REPLY_TIMEOUT).is_ok());
    t.plan_json().expect_code(0);
}
}

every_backend! {
fn masquerade_shows_lan_traffic_as_the_routers_address(t) {
    // A server on the internet side; the client namespace has no route to the LAN, so without
    // masquerade the LAN host's packets would get no answer.
    let internet = Server::tcp(&t.client, SocketAddrV4::new(CLIENT, 9000));
    let to_internet = SocketAddrV4::new(CLIENT, 9000);
    t.apply(&config(false, false)).success();
    assert!(
        tcp_request(&t.lan, LAN_CLIENT, to_internet, BLOCKED_TIMEOUT).is_err(),
        "without masquerade the internet cannot answer a LAN address"
    );
    t.apply(&config(false, true)).success();
    let got = reply(&tcp_request(&t.lan, LAN_CLIENT, to_internet, REPLY_TIMEOUT));
    assert_eq!(
        got.peer.ip(),
        std::net::IpAddr::V4(WAN),
        "the internet saw {got:?}"
    );
    assert_eq!(
        internet.seen().last().map(SocketAddr::ip),
        Some(std::net::IpAddr::V4(WAN))
    );
    t.plan_json().expect_code(0);
}
}

every_backend! {
/// The router's LAN-side addresses are what hairpin leaves alone, so a new one is drift (nft: an
/// element missing from a set; iptables: a `RETURN` missing from the hairpin chains) until applied.
fn a_new_lan_address_is_drift_until_applied(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(true, false)).success();
    t.router
        .ip(&["addr", "add", "10.9.0.1/24", "dev", "lan0"])
        .success();
    let plan = t.plan_text();
    plan.expect_code(2);
    let named = if t.is_nft() { "10.9.0.1" } else { "PORTMAP-HAIR" };
    assert!(plan.stdout.contains(named), "{plan}");
    t.apply(&config(true, false)).success();
    t.plan_json().expect_code(0);
    // The new LAN-side address stays the router's.
    let _own = Server::tcp(&t.router, SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 8080));
    let own = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 8080);
    let got = reply(&tcp_request(
        &t.router,
        Ipv4Addr::new(10, 9, 0, 1),
        own,
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, SocketAddr::V4(own));
}
}

every_backend! {
ipv6;
fn masquerade_leaves_ipv6_routed(t) {
    let lan_host = std::net::Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x70);
    let client6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    let wan6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    // The internet side routes the LAN's IPv6 prefix to the router, as a provider would.
    t.client
        .ip(&["-6", "route", "add", "2001:db8:2::/64", "via", &wan6.to_string()])
        .success();
    let _internet = Server::tcp(&t.client, std::net::SocketAddrV6::new(client6, 9000, 0, 0));
    t.apply(&config(false, true)).success();
    let to = std::net::SocketAddrV6::new(client6, 9000, 0, 0);
    let got = reply(&tcp_request(&t.lan, lan_host, to, REPLY_TIMEOUT));
    assert_eq!(
        got.peer.ip(),
        std::net::IpAddr::V6(lan_host),
        "IPv6 must not be masqueraded: {got:?}"
    );
    // IPv4 from the same LAN still is.
    let _v4 = Server::tcp(&t.client, SocketAddrV4::new(CLIENT, 9001));
    let got = reply(&tcp_request(
        &t.lan,
        LAN_CLIENT,
        SocketAddrV4::new(CLIENT, 9001),
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.peer.ip(), std::net::IpAddr::V4(WAN), "{got:?}");
}
}

every_backend! {
/// Refused means dropped on every way in: with hairpin, a LAN host and the router itself that are
/// outside `allow_from` reach neither the inner host nor the router's own service on the mapped
/// port of its public address, while a listed LAN host is reflected as usual.
fn hairpin_and_router_local_sources_outside_allow_from_are_dropped(t) {
    let inner = t.tcp_server("192.168.1.66:80");
    let router_service = Server::tcp(&t.router, SocketAddr::from((WAN, 8080)));
    let yaml = "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nhairpin: true\n\
                mappings:\n\
                \x20 - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n    \
                allow_from: [192.168.1.71/32]\n";
    t.apply(yaml).success();

    let to = SocketAddrV4::new(WAN, 8080);
    for (ns, from) in [(&t.lan, LAN_CLIENT), (&t.router, WAN)] {
        let got = tcp_request(ns, from, to, BLOCKED_TIMEOUT);
        assert!(
            matches!(got, Err(ConnError::Timeout)),
            "{from} is outside allow_from and must be dropped, got {got:?}"
        );
    }
    assert!(
        router_service.seen().is_empty(),
        "a refused source reached the router's own service: {:?}",
        router_service.seen()
    );
    assert!(inner.seen().is_empty(), "{:?}", inner.seen());

    // The listed LAN host is reflected to the inner host.
    let got = reply(&tcp_request(
        &t.lan,
        Ipv4Addr::new(192, 168, 1, 71),
        to,
        REPLY_TIMEOUT,
    ));
    assert_eq!(got.server, addr("192.168.1.66:80"));
    assert!(router_service.seen().is_empty());
}
}
