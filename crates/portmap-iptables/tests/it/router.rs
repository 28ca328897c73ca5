//! The router behaviour every backend shows, through real connections in namespaces, with both
//! iptables variants: tcp, udp, both, ranges, offset ranges, allow-lists (refused sources dropped,
//! also before a service of the router's own), hairpin, router-local access, masquerade, IPv6,
//! conntrack cleanup on change.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::kit::{
    CLIENT, CLIENT6, ConnError, Lab, OTHER, OTHER6, Server, WAN, config, converge, model, request,
};
use portmap_core::Backend;
use portmap_iptables::Variant;

const WEB: &str =
    "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, description: \"web server's\" }\n";

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[track_caller]
fn assert_reached(got: Result<crate::kit::Reply, ConnError>, server: &str) -> crate::kit::Reply {
    let reply = got.unwrap_or_else(|e| panic!("expected {server}, got {e}"));
    assert_eq!(reply.server.to_string(), server);
    reply
}

fn protocols_and_ranges(variant: Variant) {
    let lab = Lab::new(&format!("proto-{}", variant.backend_name().len()));
    let _servers: Vec<Server> = vec![
        lab.tcp_server("192.168.1.66:80"),
        lab.udp_server("192.168.1.70:53"),
        lab.tcp_server("192.168.1.25:9000"),
        lab.udp_server("192.168.1.25:9000"),
        lab.udp_server("192.168.1.70:27016"),
        lab.tcp_server("192.168.1.80:7000"),
        lab.tcp_server("192.168.1.80:7002"),
    ];
    let mappings = format!(
        "{WEB}  - {{ name: dns, protocol: udp, port: 5353, to: 192.168.1.70, to_port: 53 }}\n\
         \x20 - {{ name: both, protocol: both, port: 9000, to: 192.168.1.25 }}\n\
         \x20 - {{ name: game, protocol: udp, port: \"27015-27017\", to: 192.168.1.70 }}\n\
         \x20 - {{ name: cams, port: \"6000-6002\", to: 192.168.1.80, to_port: \"7000-7002\" }}\n"
    );
    let mut b = lab.backend(variant);
    converge(&mut b, &model(&config(&mappings)));
    let reply = assert_reached(lab.tcp(CLIENT, 8080), "192.168.1.66:80");
    assert_eq!(
        reply.peer.ip(),
        IpAddr::V4(CLIENT),
        "no SNAT for internet clients"
    );
    assert_reached(lab.udp(CLIENT, 5353), "192.168.1.70:53");
    assert_reached(lab.tcp(CLIENT, 9000), "192.168.1.25:9000");
    assert_reached(lab.udp(CLIENT, 9000), "192.168.1.25:9000");
    assert_reached(lab.udp(CLIENT, 27016), "192.168.1.70:27016");
    // The offset range shifts the port: 6000 → 7000, 6002 → 7002, in one rule.
    assert_reached(lab.tcp(CLIENT, 6000), "192.168.1.80:7000");
    assert_reached(lab.tcp(CLIENT, 6002), "192.168.1.80:7002");
    let save = lab.save(variant, false);
    assert!(
        save.contains(
            "--dport 6000:6002 -m comment --comment cams -j DNAT --to-destination 192.168.1.80:7000-7002/6000"
        ),
        "{save}"
    );
    // A port nobody maps is not forwarded.
    assert!(lab.tcp(CLIENT, 8081).is_err());
}

#[test]
fn tcp_udp_both_ranges_and_offset_ranges_legacy() {
    require_root!();
    protocols_and_ranges(Variant::Legacy);
}

#[test]
fn tcp_udp_both_ranges_and_offset_ranges_nft() {
    require_root!();
    protocols_and_ranges(Variant::Nft);
}

const SSH: &str =
    "  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32] }\n";

/// A refused source reaches neither the inner host nor a service of the router's own that
/// listens on the mapped port of its WAN address.
fn refused_means_dropped(variant: Variant) {
    let lab = Lab::new(&format!("allow-{}", variant.backend_name().len()));
    let ssh = lab.tcp_server("192.168.1.25:22");
    let router_own = Server::tcp(&lab.router, SocketAddr::new(IpAddr::V4(WAN), 2222));
    let mut b = lab.backend(variant);
    converge(&mut b, &model(&config(SSH)));
    assert_reached(lab.tcp(CLIENT, 2222), "192.168.1.25:22");
    assert_eq!(
        lab.tcp_blocked(OTHER, 2222),
        ConnError::Timeout,
        "refused means dropped"
    );
    assert_eq!(ssh.seen().len(), 1);
    assert!(
        router_own.seen().is_empty(),
        "a refused source reached the router's own service"
    );
}

#[test]
fn refused_sources_are_dropped_legacy() {
    require_root!();
    refused_means_dropped(Variant::Legacy);
}

#[test]
fn refused_sources_are_dropped_nft() {
    require_root!();
    refused_means_dropped(Variant::Nft);
}

#[test]
fn hairpin_router_local_and_masquerade() {
    require_root!();
    let variant = Variant::Nft;
    let lab = Lab::new("hairpin");
    let web = lab.tcp_server("192.168.1.66:80");
    let router_own = Server::tcp(&lab.router, SocketAddr::new(v4(192, 168, 1, 1), 8080));
    let internet = Server::tcp(&lab.client, SocketAddr::new(IpAddr::V4(CLIENT), 7777));
    let mut b = lab.backend(variant);
    converge(&mut b, &model(&format!("masquerade: true\n{}", config(WEB))));
    // A LAN host reaches the mapping through the public address; the reflected flow is
    // masqueraded to the router's LAN address, so the answer comes back through the router.
    let wan = SocketAddr::new(IpAddr::V4(WAN), 8080);
    let reply = request(&lab.lan, v4(192, 168, 1, 70), wan, true, crate::kit::REPLY).expect("hairpin");
    assert_eq!(reply.server.to_string(), "192.168.1.66:80");
    assert_eq!(
        reply.peer.ip(),
        v4(192, 168, 1, 1),
        "only reflected flows are masqueraded"
    );
    // The router's own processes reach it too (nat OUTPUT), without masquerade.
    let reply = request(&lab.router, IpAddr::V4(WAN), wan, true, crate::kit::REPLY).expect("router-local");
    assert_eq!(reply.server.to_string(), "192.168.1.66:80");
    // The router's LAN address stays the router's.
    let mine = SocketAddr::new(v4(192, 168, 1, 1), 8080);
    request(&lab.lan, v4(192, 168, 1, 70), mine, true, crate::kit::REPLY).expect("router's own service");
    assert_eq!(router_own.seen().len(), 1);
    // Internet clients keep their address.
    assert_eq!(
        crate::kit::request(&lab.client, IpAddr::V4(CLIENT), wan, true, crate::kit::REPLY)
            .expect("wan")
            .peer
            .ip(),
        IpAddr::V4(CLIENT)
    );
    // Masquerade: LAN → internet leaves with the router's WAN address.
    let out = SocketAddr::new(IpAddr::V4(CLIENT), 7777);
    let reply = request(&lab.lan, v4(192, 168, 1, 66), out, true, crate::kit::REPLY).expect("masquerade");
    assert_eq!(reply.peer.ip(), IpAddr::V4(WAN));
    assert_eq!(internet.seen().len(), 1);
    assert_eq!(web.seen().len(), 3);

    // Without hairpin and masquerade, none of it.
    converge(&mut b, &model(&format!("hairpin: false\n{}", config(WEB))));
    assert!(request(&lab.lan, v4(192, 168, 1, 66), out, true, crate::kit::BLOCKED).is_err());
    let save = lab.save(variant, false);
    assert!(!save.contains("MASQUERADE"), "{save}");
}

#[test]
fn ipv6_through_ip6tables() {
    require_root!();
    let variant = Variant::Legacy;
    let lab = Lab::with_ipv6("ipv6");
    let _web = lab.tcp_server("[2001:db8:2::66]:80");
    let _ssh = lab.tcp_server("[2001:db8:2::25]:22");
    let mappings = "  - { name: web6, port: 8080, to: \"2001:db8:2::66\", to_port: 80 }\n\
                    \x20 - { name: ssh6, port: 2222, to: \"2001:db8:2::25\", to_port: 22, allow_from: [\"2001:db8:1::2/128\"] }\n\
                    \x20 - { name: web4, port: 8080, to: 192.168.1.66, to_port: 80 }\n";
    let mut b = lab.backend(variant);
    converge(&mut b, &model(&config(mappings)));
    let reply = assert_reached(lab.tcp(CLIENT6, 8080), "[2001:db8:2::66]:80");
    assert_eq!(reply.peer.ip(), IpAddr::V6(CLIENT6));
    assert_reached(lab.tcp(CLIENT6, 2222), "[2001:db8:2::25]:22");
    assert_eq!(lab.tcp_blocked(OTHER6, 2222), ConnError::Timeout);
    let save6 = lab.save(variant, true);
    assert!(save6.contains("--to-destination [2001:db8:2::66]:80"), "{save6}");
    assert!(save6.contains("! -d fe80::/10 -i wan0"), "{save6}");
}

#[test]
fn a_changed_target_takes_live_udp_flows_with_it() {
    require_root!();
    let variant = Variant::Legacy;
    let lab = Lab::new("conntrack");
    let _old = lab.udp_server("192.168.1.70:53");
    let _new = lab.udp_server("192.168.1.66:53");
    let mut b = lab.backend(variant);
    let dns = |to: &str| {
        config(&format!(
            "  - {{ name: dns, protocol: udp, port: 5353, to: {to}, to_port: 53 }}\n"
        ))
    };
    converge(&mut b, &model(&dns("192.168.1.70")));
    assert_reached(lab.udp(CLIENT, 5353), "192.168.1.70:53");
    let flows = lab.router.exec("conntrack", &["-L", "-p", "udp"]);
    assert!(flows.stdout.contains("192.168.1.70"), "{flows}");
    let (_, report) = converge(&mut b, &model(&dns("192.168.1.66")));
    assert!(report.flows_cleared >= 1, "{report:?}");
    let flows = lab.router.exec("conntrack", &["-L", "-p", "udp"]);
    assert!(!flows.stdout.contains("src=192.168.1.70"), "{flows}");
    assert_reached(lab.udp(CLIENT, 5353), "192.168.1.66:53");
    // Nothing is left pending.
    assert!(crate::kit::observe(&mut b).pending_flows.is_empty());
    assert!(b.destroy().expect("destroy"));
}

#[test]
fn refused_hairpin_and_router_local_sources_are_dropped() {
    require_root!();
    let variant = Variant::Legacy;
    let lab = Lab::new("refused-lan");
    let ssh = lab.tcp_server("192.168.1.25:22");
    let router_own = Server::tcp(&lab.router, SocketAddr::new(IpAddr::V4(WAN), 2222));
    let mut b = lab.backend(variant);
    let allowed = "  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [203.0.113.2/32, 192.168.1.66/32] }\n";
    converge(&mut b, &model(&config(allowed)));
    let wan = SocketAddr::new(IpAddr::V4(WAN), 2222);
    // An allowed LAN host is reflected; another LAN host and the router itself are refused, and
    // the router's own service on that port sees neither.
    request(&lab.lan, v4(192, 168, 1, 66), wan, true, crate::kit::REPLY).expect("allowed LAN host");
    assert!(request(&lab.lan, v4(192, 168, 1, 70), wan, true, crate::kit::BLOCKED).is_err());
    assert!(request(&lab.router, IpAddr::V4(WAN), wan, true, crate::kit::BLOCKED).is_err());
    assert_eq!(ssh.seen().len(), 1);
    assert!(router_own.seen().is_empty(), "{:?}", router_own.seen());
}

#[test]
fn an_interrupted_cleanup_is_recorded_and_finished_by_the_next_apply() {
    require_root!();
    let variant = Variant::Nft;
    let lab = Lab::new("pending");
    let _old = lab.udp_server("192.168.1.70:53");
    let _new = lab.udp_server("192.168.1.66:53");
    let mut b = lab.backend(variant);
    let dns = |to: &str| {
        config(&format!(
            "  - {{ name: dns, protocol: udp, port: 5353, to: {to}, to_port: 53 }}\n"
        ))
    };
    converge(&mut b, &model(&dns("192.168.1.70")));
    assert_reached(lab.udp(CLIENT, 5353), "192.168.1.70:53");
    // The commit records the flows to clear; the process "dies" before clearing them.
    let next = model(&dns("192.168.1.66"));
    let p = crate::kit::plan(&mut b, &next);
    let stale = p.stale_flows();
    assert_eq!(stale.len(), 1);
    b.commit(&p, &stale).expect("commit");
    let o = crate::kit::observe(&mut b);
    assert_eq!(o.pending_flows, stale);
    let save = lab.save(variant, false);
    assert!(
        save.contains("-A PORTMAP-STALE -m comment --comment \"dns udp/5353 192.168.1.70:53\""),
        "{save}"
    );
    // The next apply finishes the job and forgets the record.
    let (p, report) = converge(&mut b, &next);
    assert_eq!(p.pending_flows, stale);
    assert!(report.flows_cleared >= 1, "{report:?}");
    assert!(crate::kit::observe(&mut b).pending_flows.is_empty());
    assert!(crate::kit::plan(&mut b, &next).is_empty());
}
