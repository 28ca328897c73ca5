//! Kernel tests of [`interfaces`]: a scratch namespace with veths, up and down, and IPv4/IPv6
//! addresses, compared with what `ip -j addr` prints there. Every test makes its own namespaces
//! and deletes them (even on panic); they need root and fail without it; they never touch the
//! host namespace.

use std::net::IpAddr;

use portmap_netlink::{Error, Interface, Netns, interfaces};
use portmap_testkit::{Netns as TestNetns, require_root};

use crate::NetlinkNetns;

/// `ip -j addr` in the namespace, as the same structure.
fn ip_addr(ns: &TestNetns) -> Vec<Interface> {
    let json: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "addr"]).stdout).expect("ip -j addr is JSON");
    json.as_array()
        .expect("an array of links")
        .iter()
        .map(|link| Interface {
            index: link["ifindex"].as_u64().expect("ifindex") as u32,
            name: link["ifname"].as_str().expect("ifname").to_owned(),
            up: link["flags"].as_array().expect("flags").iter().any(|f| f == "UP"),
            addrs: link["addr_info"]
                .as_array()
                .expect("addr_info")
                .iter()
                .map(|a| {
                    let addr: IpAddr = a["local"].as_str().expect("local").parse().expect("address");
                    (addr, a["prefixlen"].as_u64().expect("prefixlen") as u8)
                })
                .collect(),
        })
        .collect()
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn interfaces_match_ip_addr() {
    require_root!();
    let ns = TestNetns::new("nl-link");
    // As `ip netns add` leaves it: `lo` down and no address anywhere.
    let other = TestNetns::bare("nl-link");
    ns.ip(&["link", "set", "lo", "up"]);
    // v1 stays down, so v0 has no carrier and no link-local address appears behind our back.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&[
        "link",
        "add",
        "wan-0",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
        "netns",
        other.name(),
    ]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["addr", "add", "10.20.0.1/24", "dev", "v0"]);
    ns.ip(&["addr", "add", "192.0.2.7/32", "dev", "v0"]);
    ns.ip(&["addr", "add", "fd20::1/64", "dev", "v0", "nodad"]);
    ns.ip(&["addr", "add", "2001:db8:20::1/48", "dev", "v0", "nodad"]);
    ns.ip(&["addr", "add", "10.20.1.1/24", "dev", "v1"]);
    ns.ip(&["addr", "add", "10.30.0.1", "peer", "10.30.0.2/32", "dev", "wan-0"]);

    let ours = interfaces(&ns.netns()).expect("interfaces");
    let theirs = ip_addr(&ns);
    assert_eq!(ours, theirs);

    let names: Vec<&str> = ours.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for name in ["lo", "v0", "v1", "wan-0"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let by_name = |name: &str| ours.iter().find(|i| i.name == name).expect("interface");
    let lo = by_name("lo");
    assert!(lo.up);
    assert_eq!(lo.index, 1);
    assert_eq!(lo.addrs, vec![(addr("127.0.0.1"), 8), (addr("::1"), 128)]);
    let v0 = by_name("v0");
    assert!(v0.up);
    assert_eq!(
        v0.addrs,
        vec![
            (addr("10.20.0.1"), 24),
            (addr("192.0.2.7"), 32),
            (addr("2001:db8:20::1"), 48),
            (addr("fd20::1"), 64),
        ]
    );
    let v1 = by_name("v1");
    assert!(!v1.up);
    assert_eq!(v1.addrs, vec![(addr("10.20.1.1"), 24)]);
    // A point-to-point address is its local end.
    assert_eq!(by_name("wan-0").addrs, vec![(addr("10.30.0.1"), 32)]);

    // The other namespace has only its own interfaces.
    let there = interfaces(&other.netns()).expect("interfaces");
    let names: Vec<&str> = there.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "x0"]);
    assert!(there.iter().all(|i| !i.up && i.addrs.is_empty()));
    assert_eq!(there, ip_addr(&other));
}

#[test]
fn a_missing_namespace_is_an_error() {
    require_root!();
    let ns = TestNetns::new("nl-link");
    let err = interfaces(&Netns::Named(format!("{}-missing", ns.name()))).expect_err("missing");
    assert!(matches!(err, Error::Netns { .. }), "{err:?}");
    let err = interfaces(&Netns::Named("../x".into())).expect_err("bad name");
    assert!(matches!(err, Error::Netns { .. }), "{err:?}");
}
