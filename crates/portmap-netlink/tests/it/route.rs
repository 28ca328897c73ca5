//! Kernel tests of [`route_to`]: a scratch namespace with a veth, a connected network, a gateway
//! route and `unreachable`/`blackhole`/`prohibit` routes, each answer compared with what the
//! routes say (and `ip route get` where it answers). Every test makes its own namespace and
//! deletes it (even on panic); they need root and fail without it; they never touch the host
//! namespace.

use std::net::IpAddr;

use portmap_netlink::{RouteType, interfaces, route_to};
use portmap_testkit::{Netns as TestNetns, require_root};

use crate::NetlinkNetns;

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn routes_are_the_kernels_answers() {
    require_root!();
    let ns = TestNetns::new("nl-route");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip_batch(
        "addr add 192.0.2.1/24 dev v0\n\
         link set v0 up\n\
         link set v1 up\n\
         route add 198.51.100.0/24 via 192.0.2.254\n\
         route add unreachable 203.0.113.0/25\n\
         route add blackhole 203.0.113.128/26\n\
         route add prohibit 203.0.113.192/26\n",
    );
    let netns = ns.netns();
    let v0 = interfaces(&netns)
        .expect("interfaces")
        .into_iter()
        .find(|i| i.name == "v0")
        .expect("v0")
        .index;

    let on_link = route_to(&netns, addr("192.0.2.66"))
        .expect("lookup")
        .expect("a route");
    assert_eq!(on_link.kind, RouteType::Unicast);
    assert_eq!(on_link.oif, Some(v0));
    assert_eq!(on_link.gateway, None);
    assert_eq!(on_link.prefsrc, Some(addr("192.0.2.1")));
    assert_eq!(on_link.table, 254, "the main table");

    let via = route_to(&netns, addr("198.51.100.9"))
        .expect("lookup")
        .expect("a route");
    assert_eq!(via.oif, Some(v0));
    assert_eq!(via.gateway, Some(addr("192.0.2.254")));

    let local = route_to(&netns, addr("192.0.2.1"))
        .expect("lookup")
        .expect("a route");
    assert_eq!(local.kind, RouteType::Local);
    // (Its table is 254 or 255: without policy rules the kernel keeps `local` merged into `main`.)
    assert_eq!(local.oif, Some(1), "delivered through lo");

    // No default route: nothing matches.
    let none = route_to(&netns, addr("8.8.8.8"))
        .expect("lookup")
        .expect_err("no route");
    assert_eq!(none.errno, libc::ENETUNREACH, "{}", none.reason());
    for (dst, reason) in [
        ("203.0.113.9", "unreachable"),
        ("203.0.113.130", "blackhole"),
        ("203.0.113.200", "prohibit"),
    ] {
        let refused = route_to(&netns, addr(dst)).expect("lookup").expect_err(dst);
        assert!(
            refused.reason().contains(reason),
            "{dst}: {refused:?} {}",
            refused.reason()
        );
    }

    // IPv6: no address at all, so nothing but loopback routes.
    let v6 = route_to(&netns, addr("2001:db8::1")).expect("lookup");
    assert!(v6.is_err(), "{v6:?}");
    let lo6 = route_to(&netns, addr("::1")).expect("lookup").expect("a route");
    assert_eq!(lo6.kind, RouteType::Local);
}
