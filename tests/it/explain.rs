//! `portmap explain` in the lab, for every backend: each verdict it gives is checked against a
//! real connection through the router — forwarded (exit 0) and the connection is answered;
//! refused by `allow_from`, or stopped by disabled forwarding or another table's dropping chain
//! (exit 1, naming what stops it) and the connection gets nowhere; no mapping and no route to
//! the target named; bad arguments a clear error, as JSON too. Everything happens in the lab's
//! own namespaces (the sysctl is the router namespace's).

use std::net::SocketAddr;

use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{CLIENT, OTHER_CLIENT, Run, Topology, require_root};

use crate::PORTMAP;

const HEADER: &str = "wan:\n  interfaces: [wan0]\nlan:\n  interfaces: [lan0]\nhairpin: true\nmappings:\n";

const WEB: &str = "  - name: web
    protocol: tcp
    port: 8080
    to: 192.168.1.66
    to_port: 80
    allow_from: [203.0.113.2/32, 192.168.1.0/24]
    description: intranet
  - name: games
    protocol: udp
    port: 8080
    to: 192.168.1.70
  - name: range
    protocol: tcp
    port: 6000-6002
    to: 192.168.1.71
    to_port: 7000-7002
";

fn apply(t: &Topology, mappings: &str) {
    t.apply(&format!("{HEADER}{mappings}")).success();
}

fn explain(t: &Topology, args: &[&str]) -> Run {
    let mut full = vec!["explain"];
    full.extend_from_slice(args);
    t.portmap(&full)
}

#[track_caller]
fn assert_says(run: &Run, needles: &[&str]) {
    for needle in needles {
        assert!(run.stdout.contains(needle), "expected `{needle}` in:\n{run}");
    }
}

every_backend! {
    /// A packet explain calls forwarded is answered by the target; one it calls refused (naming
    /// `allow_from`) is not.
    fn forwarded_and_refused(t) {
        apply(t, WEB);
        let _web = t.tcp_server("192.168.1.66:80");
        let run = explain(t, &["tcp", "8080", "--from", "203.0.113.2", "--to", "203.0.113.1"]);
        run.success();
        assert_says(&run, &[
            "tcp/8080 is mapping web (intranet): DNAT to 192.168.1.66:80",
            "203.0.113.2 is reached through wan0, a WAN interface",
            "203.0.113.1 is the router's address on wan0, a WAN interface",
            "admitted: 203.0.113.2 is in allow_from entry 203.0.113.2/32 of mapping web",
            "the target 192.168.1.66 is on lan0's network 192.168.1.0/24",
            "the router reaches the target 192.168.1.66 through lan0",
            "IPv4 forwarding is on",
            "=> tcp/8080 from 203.0.113.2 to 203.0.113.1 is forwarded to 192.168.1.66:80",
        ]);
        assert!(!run.stdout.contains("BLOCKS"), "{run}");
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

        let refused = explain(t, &["tcp", "8080", "--from", "203.0.113.3"]);
        refused.expect_code(1);
        assert_says(&refused, &[
            "refused: 203.0.113.3 is not in allow_from of mapping web (192.168.1.0/24, 203.0.113.2/32)",
            "=> tcp/8080 from 203.0.113.3 is not forwarded",
        ]);
        t.assert_tcp_blocked(OTHER_CLIENT, 8080);

        // The same as JSON.
        let json = explain(t, &["tcp", "8080", "--from", "203.0.113.2", "--json"]);
        json.success();
        let doc = json.json();
        assert_eq!(doc["format"], 1, "{doc}");
        assert_eq!(doc["command"], "explain", "{doc}");
        assert_eq!(doc["forwarded"], true, "{doc}");
        assert_eq!(doc["mapping"], "web", "{doc}");
        assert_eq!(doc["target"]["address"], "192.168.1.66", "{doc}");
        assert_eq!(doc["target"]["port"], 80, "{doc}");
        assert_eq!(doc["query"]["from"], "203.0.113.2", "{doc}");
        let findings = doc["findings"].as_array().unwrap();
        assert!(findings.iter().all(|f| f["kind"].is_string() && f["message"].is_string() && f["effect"].is_string()), "{doc}");
        assert!(findings.iter().any(|f| f["kind"] == "allow_from" && f["effect"] == "ok"), "{doc}");
        let json = explain(t, &["tcp", "8080", "--from", "203.0.113.3", "--json"]);
        json.expect_code(1);
        let doc = json.json();
        assert_eq!(doc["forwarded"], false, "{doc}");
        assert!(doc["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "allow_from" && f["effect"] == "blocks"), "{doc}");

        // An offset range: the port inside it, shifted.
        let _range = t.tcp_server("192.168.1.71:7001");
        let run = explain(t, &["tcp", "6001", "--from", "203.0.113.2"]);
        run.success();
        assert_says(&run, &["DNAT to 192.168.1.71:7001, port 6001 of tcp 6000-6002 → 192.168.1.71:7000-7002"]);
        t.assert_tcp(CLIENT, 6001, "192.168.1.71:7001");
    }
}

every_backend! {
    /// Hairpin: a LAN host reaching the public address is reflected (and really gets through);
    /// the router's own LAN address is not taken over.
    fn hairpin_from_the_lan(t) {
        apply(t, WEB);
        let _web = t.tcp_server("192.168.1.66:80");
        let run = explain(t, &["tcp", "8080", "--from", "192.168.1.25", "--to", "203.0.113.1"]);
        run.success();
        assert_says(&run, &[
            "192.168.1.25 is on the LAN side (reached through lan0)",
            "hairpin is on: the connection from lan0 is reflected to the target and masqueraded to the router's LAN address (192.168.1.1)",
            "admitted: 192.168.1.25 is in allow_from entry 192.168.1.0/24",
        ]);
        let wan: SocketAddr = "203.0.113.1:8080".parse().unwrap();
        let reply = tcp_request(&t.lan, "192.168.1.25".parse::<std::net::IpAddr>().unwrap(), wan, REPLY_TIMEOUT);
        assert!(reply.is_ok(), "explain said reflected, but: {reply:?}");

        let run = explain(t, &["tcp", "8080", "--from", "192.168.1.25", "--to", "192.168.1.1"]);
        run.expect_code(1);
        assert_says(&run, &["hairpin never takes over the router's LAN-side addresses"]);
    }
}

every_backend! {
    /// No mapping for the port: the mappings of the other protocol and the nearest ports are named.
    fn no_mapping(t) {
        let missing = explain(t, &["tcp", "8080"]);
        missing.expect_code(1);
        assert_says(&missing, &["does not exist", "portmap forwards nothing here"]);

        apply(t, WEB);
        let run = explain(t, &["udp", "6001"]);
        run.expect_code(1);
        assert_says(&run, &["no mapping for udp/6001; tcp/6001 is mapped (range); udp/8080 is mapped (games)"]);
        let run = explain(t, &["tcp", "7000", "--from", "203.0.113.2"]);
        run.expect_code(1);
        assert_says(&run, &["no mapping for tcp/7000; tcp/6002 is mapped (range); tcp/8080 is mapped (web)"]);
        t.assert_tcp_blocked(CLIENT, 7000);
        let run = explain(t, &["tcp", "8081"]);
        assert_says(&run, &["no mapping for tcp/8081; tcp/8080 is mapped (web)"]);
    }
}

every_backend! {
    /// Forwarding turned off in the router namespace: named, and the connection is indeed dead.
    fn forwarding_disabled(t) {
        apply(t, WEB);
        let _web = t.tcp_server("192.168.1.66:80");
        t.router.sysctl("net.ipv4.ip_forward=0");
        let run = explain(t, &["tcp", "8080", "--from", "203.0.113.2"]);
        run.expect_code(1);
        assert_says(&run, &["IPv4 forwarding is disabled (net.ipv4.ip_forward = 0)"]);
        t.assert_tcp_blocked(CLIENT, 8080);
        t.router.sysctl("net.ipv4.ip_forward=1");
        explain(t, &["tcp", "8080", "--from", "203.0.113.2"]).success();
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    }
}

every_backend! {
    /// Another table's forward chain with policy drop is named, and does drop the connection;
    /// once it accepts port forwards and their replies, explain and the connection agree again.
    fn a_foreign_drop_policy(t) {
        apply(t, WEB);
        let _web = t.tcp_server("192.168.1.66:80");
        t.router.nft_load(
            "table inet fw {\n chain fwd_in {\n  type filter hook forward priority 0; policy drop;\n  iifname \"lo\" accept\n }\n}\n",
        );
        let run = explain(t, &["tcp", "8080", "--from", "203.0.113.2"]);
        run.expect_code(1);
        assert_says(&run, &[
            "table inet fw, chain fwd_in (hook forward, priority 0) drops it: its policy drop (no rule accepts it)",
            "table inet fw, chain fwd_in (hook forward, priority 0) drops its replies",
        ]);
        t.assert_tcp_blocked(CLIENT, 8080);

        t.router.nft_load(
            "table inet fw {\n chain fwd_in {\n  ct status dnat accept\n }\n}\n",
        );
        let run = explain(t, &["tcp", "8080", "--from", "203.0.113.2"]);
        run.success();
        assert_says(&run, &[
            "table inet fw, chain fwd_in (hook forward, priority 0) lets it through",
            "table inet fw, chain fwd_in (hook forward, priority 0) lets its replies through",
        ]);
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

        // A drop that depends on what explain does not know is a "maybe", and exits 0.
        t.router.nft_load(
            "table ip strict {\n chain pre {\n  type filter hook prerouting priority -150; policy accept;\n  tcp sport 1234 drop\n }\n}\n",
        );
        let run = explain(t, &["tcp", "8080", "--from", "203.0.113.2"]);
        run.success();
        assert_says(&run, &[
            "table ip strict, chain pre (hook prerouting, priority -150) may drop it at rule 1 of chain pre",
            "it tests the source port",
            "unless what is marked \"maybe\" stops it",
        ]);
    }
}

every_backend! {
    /// A target the router has no route to: named, exit 1.
    fn no_route_to_the_target(t) {
        apply(t, "  - name: far\n    port: 2222\n    to: 10.9.9.9\n    to_port: 22\n");
        let run = explain(t, &["tcp", "2222", "--from", "203.0.113.2"]);
        run.expect_code(1);
        assert_says(&run, &[
            "the router has no route to the target 10.9.9.9: no route matches (network unreachable)",
            "the target 10.9.9.9 is on none of the LAN interfaces' networks",
        ]);
        let reply = t.tcp(CLIENT, 2222);
        assert!(reply.is_err(), "{reply:?}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    require_root!();
    let t = Topology::new(PORTMAP, "explain-args");
    for (args, needle) in [
        (vec!["explain", "tcp", "0"], "0 is not in 1..=65535"),
        (vec!["explain", "sctp", "80"], "invalid value 'sctp'"),
        (
            vec!["explain", "tcp", "80", "--from", "203.0.113"],
            "invalid IP address syntax",
        ),
        (
            vec![
                "explain",
                "tcp",
                "80",
                "--from",
                "203.0.113.2",
                "--to",
                "2001:db8::1",
            ],
            "different address families",
        ),
    ] {
        let run = t.portmap(&args);
        run.expect_code(1);
        assert!(run.stderr.contains(needle), "expected `{needle}`:\n{run}");
        let mut json = args.clone();
        json.push("--json");
        let run = t.portmap(&json);
        run.expect_code(1);
        let doc = run.json();
        assert_eq!(doc["command"], "explain", "{doc}");
        assert_eq!(doc["error"]["kind"], "usage", "{doc}");
        assert!(
            doc["error"]["message"].as_str().unwrap().contains(needle),
            "{doc}"
        );
    }
    // Upper case is what people type.
    let run = t.portmap(&["explain", "TCP", "80"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("no mapping") || run.stdout.contains("does not exist"),
        "{run}"
    );
}
