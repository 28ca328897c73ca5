//! Kernel tests of [`sysctl::read`]: two scratch namespaces with forwarding on in one and off in
//! the other, read from this process (whose own namespace never changes) and compared with what
//! programs running inside them see. Sysctls are written only inside the scratch namespaces; the
//! host's are only read. Every test deletes its namespaces (even on panic); they need root and
//! fail without it.

use portmap_netlink::{Error, Netns, sysctl};
use portmap_testkit::{Netns as TestNetns, require_root};

use crate::NetlinkNetns;

const V4: &str = "net.ipv4.ip_forward";
const V6: &str = "net.ipv6.conf.all.forwarding";

/// This thread's network namespace, as `net:[inode]`.
fn own_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("readlink")
        .display()
        .to_string()
}

/// Sets forwarding inside the namespace (never the host's: `ip netns exec` enters it first).
fn set_forwarding(ns: &TestNetns, on: bool) {
    let v = if on { "1" } else { "0" };
    ns.output(
        "sysctl",
        &["-q", "-w", &format!("{V4}={v}"), &format!("{V6}={v}")],
    );
}

#[test]
fn values_follow_the_namespace_not_the_caller() {
    require_root!();
    let before = own_netns();
    let on = TestNetns::new("nl-sysctl");
    let off = TestNetns::new("nl-sysctl");
    set_forwarding(&on, true);
    set_forwarding(&off, false);

    for key in [V4, V6] {
        assert_eq!(sysctl::read(&on.netns(), key).expect("read"), "1", "{key}");
        assert_eq!(sysctl::read(&off.netns(), key).expect("read"), "0", "{key}");
        // What a program inside sees.
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        assert_eq!(on.output("cat", &[&path]).trim_end(), "1");
        assert_eq!(off.output("cat", &[&path]).trim_end(), "0");
        // The host's value (read only), through Netns::Current and directly.
        let host = std::fs::read_to_string(&path).expect("read host");
        assert_eq!(sysctl::read(&Netns::Current, key).expect("read"), host.trim_end());
    }
    // By path, too.
    let by_path = Netns::Path(format!("/run/netns/{}", on.name()).into());
    assert_eq!(sysctl::read(&by_path, V4).expect("read"), "1");

    // Flip them: the reads follow.
    set_forwarding(&on, false);
    set_forwarding(&off, true);
    assert_eq!(sysctl::read(&on.netns(), V4).expect("read"), "0");
    assert_eq!(sysctl::read(&off.netns(), V6).expect("read"), "1");

    // Many threads reading both namespaces at once never see each other's value.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (ns, want) = if i % 2 == 0 { (&on, "0") } else { (&off, "1") };
            scope.spawn(move || {
                for _ in 0..20 {
                    assert_eq!(sysctl::read(&ns.netns(), V4).expect("read"), want);
                }
            });
        }
    });

    assert_eq!(own_netns(), before, "the calling thread never changed namespace");
}

#[test]
fn per_interface_keys_exist_only_where_the_interface_is() {
    require_root!();
    let ns = TestNetns::new("nl-sysctl");
    let other = TestNetns::new("nl-sysctl");
    ns.ip(&["link", "add", "br-lan", "type", "veth", "peer", "name", "v1"]);
    ns.output("sysctl", &["-q", "-w", "net.ipv4.conf.br-lan.forwarding=1"]);
    assert_eq!(
        sysctl::read(&ns.netns(), "net.ipv4.conf.br-lan.forwarding").expect("read"),
        "1"
    );
    let err = sysctl::read(&other.netns(), "net.ipv4.conf.br-lan.forwarding").expect_err("absent");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(other.name()), "{err}");

    // A value with more than one field comes back whole, without the trailing newline.
    let range = sysctl::read(&ns.netns(), "net.ipv4.ip_local_port_range").expect("read");
    assert_eq!(range.split_whitespace().count(), 2, "{range:?}");
    assert!(!range.ends_with('\n'));
}

#[test]
fn bad_keys_and_namespaces_are_refused() {
    require_root!();
    let ns = TestNetns::new("nl-sysctl");
    for key in [
        "../../etc/shadow",
        "net..ipv4",
        "net/ipv4/ip_forward",
        "Net.ipv4.ip_forward",
        "",
    ] {
        let err = sysctl::read(&ns.netns(), key).expect_err("refused");
        assert!(matches!(err, Error::Invalid { .. }), "{key:?}: {err:?}");
    }
    let err = sysctl::read(&ns.netns(), "net.ipv4.no_such_key").expect_err("missing");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "sysctl net.ipv4.no_such_key in network namespace {} does not exist",
            ns.name()
        )
    );
    let err = sysctl::read(&ns.netns(), "net.ipv4").expect_err("a directory");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let err = sysctl::read(&Netns::Named(format!("{}-missing", ns.name())), V4).expect_err("missing ns");
    assert!(matches!(err, Error::Netns { .. }), "{err:?}");
}
