//! Self-tests of the test kit (`crates/portmap-testkit`): the lab topology routes, servers and
//! clients tell who answered and why a connection failed, namespaces and their processes are gone
//! after the guards drop (also on panic), and the nft readers normalise what they should. None of
//! this needs the `portmap` binary to work, so these pass on their own and prove that failures
//! elsewhere are portmap's.

use std::net::SocketAddrV4;
use std::path::Path;

use portmap_testkit::traffic::{BLOCKED_TIMEOUT, REPLY_TIMEOUT, tcp_request, udp_request};
use portmap_testkit::{
    CLIENT, ConnError, FOREIGN_TABLE, Netns, OTHER_CLIENT, Reply, Topology, WAN, nft_list, require_root,
};

use crate::PORTMAP;

#[test]
fn topology_routes_plain_tcp_and_udp_then_disappears() {
    require_root!();
    let names;
    {
        let t = Topology::new(PORTMAP, "self");
        names = [
            t.client.name().to_owned(),
            t.router.name().to_owned(),
            t.lan.name().to_owned(),
        ];
        for name in &names {
            assert!(
                Netns::exists(name),
                "{name} should exist while the topology lives"
            );
        }
        // Without a route the client cannot reach the LAN at all: only DNAT could get it there.
        let to = SocketAddrV4::new("192.168.1.66".parse().expect("address"), 80);
        assert_eq!(
            tcp_request(&t.client, CLIENT, to, BLOCKED_TIMEOUT),
            Err(ConnError::Unreachable),
            "the client must have no route to the LAN"
        );

        t.route_client_to_lan();
        let tcp = t.tcp_server("192.168.1.66:80");
        let udp = t.udp_server("192.168.1.70:53");
        for from in [CLIENT, OTHER_CLIENT] {
            let text = tcp_request(&t.client, from, to, REPLY_TIMEOUT).expect("plain routed TCP works");
            let reply = Reply::parse(&text).expect("identity reply");
            assert_eq!(reply.server, "192.168.1.66:80".parse().expect("address"));
            assert_eq!(reply.peer.ip(), from, "plain routing keeps the client's address");

            let dns = SocketAddrV4::new("192.168.1.70".parse().expect("address"), 53);
            let text = udp_request(&t.client, from, dns, REPLY_TIMEOUT).expect("plain routed UDP works");
            let reply = Reply::parse(&text).expect("identity reply");
            assert_eq!(reply.server, "192.168.1.70:53".parse().expect("address"));
            assert_eq!(reply.peer.ip(), from);
        }
        let seen: Vec<_> = tcp.seen().iter().map(std::net::SocketAddr::ip).collect();
        assert_eq!(seen, [CLIENT, OTHER_CLIENT]);
        assert_eq!(udp.seen().len(), 2);

        // A host address answers for its own identity: .71 has no server on 80, .66 does.
        let other = SocketAddrV4::new("192.168.1.71".parse().expect("address"), 80);
        assert_eq!(
            tcp_request(&t.client, CLIENT, other, REPLY_TIMEOUT),
            Err(ConnError::Refused)
        );
    }
    for name in &names {
        assert!(!Netns::exists(name), "{name} should be gone after drop");
    }
    let listed = portmap_testkit::run("ip", &["netns", "list"], None, None);
    for name in &names {
        assert!(
            !listed.stdout.contains(name.as_str()),
            "{name} still listed:\n{}",
            listed.stdout
        );
    }
}

#[test]
fn forwarding_is_on_in_the_router_only() {
    require_root!();
    let t = Topology::new(PORTMAP, "fwd");
    let read = |ns: &Netns| {
        ns.exec("sysctl", &["-n", "net.ipv4.ip_forward"])
            .stdout
            .trim()
            .to_owned()
    };
    assert_eq!(read(&t.router), "1");
    assert_eq!(read(&t.client), "0");
    assert_eq!(read(&t.lan), "0");
}

#[test]
fn clients_tell_refused_from_timeout() {
    require_root!();
    let t = Topology::new(PORTMAP, "errs");
    // Nothing listens on the router itself: TCP gets a reset, UDP an ICMP port unreachable.
    assert_eq!(t.tcp(CLIENT, 8080), Err(ConnError::Refused));
    assert_eq!(t.udp(CLIENT, 8080), Err(ConnError::Refused));
    t.assert_tcp_blocked(CLIENT, 8080);
    t.assert_udp_blocked(CLIENT, 8080);

    // Dropped on the router's input: a timeout, bounded by the timeout given.
    t.router.nft_load(
        "table inet selftest {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\
         \t\tip saddr 203.0.113.3 drop\n\t}\n}\n",
    );
    let started = std::time::Instant::now();
    let got = tcp_request(
        &t.client,
        OTHER_CLIENT,
        SocketAddrV4::new(WAN, 8080),
        BLOCKED_TIMEOUT,
    );
    assert_eq!(got, Err(ConnError::Timeout));
    let took = started.elapsed();
    assert!(
        took + std::time::Duration::from_millis(50) >= BLOCKED_TIMEOUT && took < BLOCKED_TIMEOUT * 2,
        "timeout took {took:?}"
    );
    assert_eq!(
        udp_request(
            &t.client,
            OTHER_CLIENT,
            SocketAddrV4::new(WAN, 8080),
            BLOCKED_TIMEOUT
        ),
        Err(ConnError::Timeout)
    );
    t.assert_tcp_blocked(OTHER_CLIENT, 8080);
    // The other source is still refused, not dropped.
    assert_eq!(t.tcp(CLIENT, 8080), Err(ConnError::Refused));
}

#[test]
fn servers_stop_when_dropped() {
    require_root!();
    let t = Topology::new(PORTMAP, "stop");
    t.route_client_to_lan();
    let tcp_to = SocketAddrV4::new("192.168.1.25".parse().expect("address"), 22);
    let udp_to = SocketAddrV4::new("192.168.1.25".parse().expect("address"), 5353);
    {
        let tcp = t.tcp_server("192.168.1.25:22");
        let udp = t.udp_server("192.168.1.25:5353");
        assert!(tcp_request(&t.client, CLIENT, tcp_to, REPLY_TIMEOUT).is_ok());
        assert!(udp_request(&t.client, CLIENT, udp_to, REPLY_TIMEOUT).is_ok());
        assert_eq!(tcp.seen().len(), 1);
        assert_eq!(udp.seen().len(), 1);
    }
    assert_eq!(
        tcp_request(&t.client, CLIENT, tcp_to, REPLY_TIMEOUT),
        Err(ConnError::Refused)
    );
    assert_eq!(
        udp_request(&t.client, CLIENT, udp_to, REPLY_TIMEOUT),
        Err(ConnError::Refused)
    );
    // The same address can be served again at once.
    let again = t.tcp_server("192.168.1.25:22");
    assert!(tcp_request(&t.client, CLIENT, tcp_to, REPLY_TIMEOUT).is_ok());
    assert_eq!(again.seen().len(), 1);
}

/// A DNAT table written by hand (not portmap's, and not named like it) with the shape DESIGN.md
/// describes: the e2e assertions must see exactly what they expect of portmap through it. This proves
/// the lab forwards, un-DNATs replies, and that "blocked" and "reached" are told apart.
const HANDMADE_DNAT: &str = "\
table inet handmade {
	map dnat4 {
		type inet_proto . inet_service : ipv4_addr . inet_service
		elements = { tcp . 8080 : 192.168.1.66 . 80, udp . 5353 : 192.168.1.70 . 53,
			     tcp . 2222 : 192.168.1.25 . 22 }
	}
	set allow_ssh_src {
		type ipv4_addr
		elements = { 203.0.113.2 }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname \"wan0\" fib daddr type local dnat ip to meta l4proto . th dport map @dnat4
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct status dnat tcp dport 22 ip daddr 192.168.1.25 ip saddr != @allow_ssh_src drop
	}
}
";

#[test]
fn hand_written_dnat_is_seen_as_the_e2e_tests_expect() {
    require_root!();
    let t = Topology::new(PORTMAP, "dnat");
    let web = t.tcp_server("192.168.1.66:80");
    let dns = t.udp_server("192.168.1.70:53");
    let ssh = t.tcp_server("192.168.1.25:22");
    let closed = t.tcp_server("192.168.1.66:9090");

    // Before any DNAT nothing is reachable on the WAN address.
    t.assert_tcp_blocked(CLIENT, 8080);
    t.assert_udp_blocked(CLIENT, 5353);

    t.router.nft_load(HANDMADE_DNAT);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp(OTHER_CLIENT, 8080, "192.168.1.66:80");
    t.assert_udp(CLIENT, 5353, "192.168.1.70:53");
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.assert_tcp_blocked(CLIENT, 9090);
    t.assert_udp_blocked(CLIENT, 8080);

    let ips = |s: &portmap_testkit::Server| s.seen().iter().map(std::net::SocketAddr::ip).collect::<Vec<_>>();
    assert_eq!(
        ips(&web),
        [CLIENT, OTHER_CLIENT],
        "DNAT without SNAT keeps the client's address"
    );
    assert_eq!(ips(&dns), [CLIENT]);
    assert_eq!(
        ips(&ssh),
        [CLIENT],
        "the disallowed source never reached the server"
    );
    assert!(closed.seen().is_empty());

    // A wrong expectation is caught: the harness does not pass everything.
    let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.assert_tcp(CLIENT, 8080, "192.168.1.71:80");
    }));
    assert!(wrong.is_err(), "assert_tcp must fail when another host answers");
    let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.assert_tcp_blocked(CLIENT, 8080);
    }));
    assert!(
        wrong.is_err(),
        "assert_tcp_blocked must fail when the port is open"
    );

    // Deleting the table by hand closes the ports again.
    t.router.nft(&["delete", "table", "inet", "handmade"]).success();
    t.assert_tcp_blocked(CLIENT, 8080);
}

#[test]
fn netns_guard_cleans_up_on_panic_and_kills_its_processes() {
    require_root!();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let ns = Netns::new("panic");
        let pid = ns.spawn("sleep", &["30"]);
        tx.send((ns.name().to_owned(), pid)).expect("send");
        panic!("test body fails while the namespace exists");
    });
    assert!(result.is_err());
    let (name, pid) = rx.recv().expect("namespace name");
    assert!(!Netns::exists(&name), "{name} should be gone after a panic");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} started in {name} still runs"
    );
}

#[test]
fn enter_runs_code_inside_the_namespace_only() {
    require_root!();
    let ns = Netns::with_links("enter", &["wan0", "lan0"]);
    let inside = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev"));
    assert!(inside.contains("wan0:") && inside.contains("lan0:"), "{inside}");
    let here = std::fs::read_to_string("/proc/thread-self/net/dev").expect("read net/dev");
    assert!(!here.contains(&format!(" {}", "wan0:")) || here == inside || !here.contains("lan0:"));
    assert_ne!(inside, here, "the calling thread must stay in its own namespace");
}

#[test]
fn nft_readers_normalise_counters_and_handles() {
    require_root!();
    let ns = Netns::new("nft");
    assert!(nft_list(&ns, "ip foreign").is_err(), "no table yet");
    ns.nft_load(FOREIGN_TABLE);
    let raw = nft_list(&ns, "ip foreign").expect("foreign table listed");
    assert!(raw.contains("counter packets 0 bytes 0"), "{raw}");
    let normal = portmap_testkit::normalize(&raw);
    assert!(
        normal.contains("\t\tcounter\n") && !normal.contains("packets"),
        "{normal}"
    );

    let with_handles = ns.nft(&["-a", "list", "table", "ip", "foreign"]);
    assert!(with_handles.stdout.contains("# handle"), "{with_handles}");
    assert_eq!(portmap_testkit::normalize(&with_handles.stdout), normal);
    assert_eq!(
        portmap_testkit::nft::rule_handles(&ns, "ip foreign", "fwd_in").len(),
        1
    );

    assert_eq!(
        portmap_testkit::normalize("counter packets 12 bytes 3456 accept # handle 9\n"),
        "counter accept\n"
    );
    // A named counter's values.
    assert_eq!(
        portmap_testkit::normalize("\tcounter conn_web { # handle 3\n\t\tpackets 12 bytes 3456\n\t}\n"),
        "\tcounter conn_web {\n\t\tpackets bytes\n\t}\n"
    );
}

#[test]
#[should_panic(expected = "refusing to run portmap without --netns")]
fn portmap_runner_refuses_without_netns() {
    let _ = PORTMAP.run(&["validate", "-c", "/dev/null"]);
}

#[test]
fn portmap_runner_has_no_terminal_and_reads_stdin() {
    require_root!();
    let ns = Netns::new("runner");
    // Use a shell in place of the binary to see what the runner gives it.
    let out = portmap_testkit::run(
        "ip",
        &["netns", "exec", ns.name(), "sh", "-c", "tty; cat"],
        Some("hello"),
        None,
    );
    assert!(out.stdout.starts_with("not a tty"), "{out}");
    assert!(out.stdout.ends_with("hello"), "{out}");
}

#[test]
fn diagnostics_parse_file_line_col() {
    let d = portmap_testkit::diagnostics(
        "x\n/tmp/a b.yaml:1:2: no\nconf.yaml:7:11: mappings[0].port: must be 1-65535\n",
    );
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].file.as_str(), d[0].line, d[0].col), ("conf.yaml", 7, 11));
    assert_eq!(d[0].text, "mappings[0].port: must be 1-65535");
}
