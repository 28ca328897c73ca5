//! `portmap import` against real rules: each test loads foreign DNAT rules into the router
//! namespace of its own lab (`nft -f`, `iptables-legacy-restore`, `iptables-nft-restore`), checks
//! that they forward, runs import, checks the YAML (valid, the mappings and their origins, the
//! reasons for what is not taken over) and that import changed nothing in the kernel, then removes
//! the foreign rules, applies the imported configuration with portmap and checks the same
//! forwards carry real connections. Nothing touches the host namespace.

use std::fmt::Write as _;

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, OTHER_CLIENT, Topology, require_root};

use crate::PORTMAP;

/// Everything import could change, as the router namespace shows it: the nft ruleset, both
/// iptables variants for both families, and which legacy tables exist.
fn kernel_state(t: &Topology) -> String {
    let mut out = portmap_testkit::nft::ruleset(&t.router);
    for tool in [
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "iptables-nft-save",
        "ip6tables-nft-save",
    ] {
        let run = t.router.exec(tool, &[]);
        let _ = writeln!(out, "--- {tool} (exit {})", run.code);
        // Drop the `# Generated … on DATE` lines, and the packet counters of the chain lines
        // (`:OUTPUT ACCEPT [6:412]`), which the router's own traffic moves.
        for line in run.stdout.lines().filter(|l| !l.starts_with('#')) {
            let line = match line.rsplit_once(" [") {
                Some((head, _)) if line.starts_with(':') => head,
                _ => line,
            };
            out.push_str(line);
            out.push('\n');
        }
    }
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        let run = t.router.exec("cat", &[names]);
        let _ = write!(out, "--- {names}\n{}", run.stdout);
    }
    out
}

/// Run import, check it left the kernel as it was and that validate accepts what it printed;
/// the YAML and the path it was written to.
fn import(t: &Topology, args: &[&str]) -> (String, std::path::PathBuf) {
    let before = kernel_state(t);
    let mut full = vec!["import"];
    full.extend_from_slice(args);
    let run = t.portmap(&full);
    run.success();
    assert!(run.stderr.contains("nothing in the kernel was changed"), "{run}");
    assert_eq!(kernel_state(t), before, "import changed the kernel");
    let path = t.dir.write("imported.yaml", &run.stdout);
    t.portmap(&["validate", "-c", path_str(&path)]).success();
    (run.stdout.clone(), path)
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected `{needle}` in:\n{haystack}");
    }
}

const NFT_RULES: &str = r#"
table ip fw {
    set office { type ipv4_addr; flags interval; elements = { 203.0.113.2 }; }
    map dnat_ports { type inet_proto . inet_service : ipv4_addr . inet_service;
        elements = { tcp . 2222 : 192.168.1.25 . 22 }; }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" tcp dport 8080 dnat to 192.168.1.66:80 comment "web"
        iifname "wan0" meta l4proto { tcp, udp } th dport 53 dnat to 192.168.1.70
        iifname "wan0" dnat ip to tcp dport map { 7000 : 192.168.1.71 . 8000, 7001 : 192.168.1.71 . 8001 }
        iifname "wan0" dnat to meta l4proto . th dport map @dnat_ports
        iifname "wan0" jump office_only
        ct mark 0x1 tcp dport 9001 dnat to 192.168.1.66
        ip daddr 203.0.113.1 tcp dport 9002 dnat to 192.168.1.66
    }
    chain office_only {
        ip saddr @office tcp dport 8443 dnat to 192.168.1.66:443
    }
}
table inet other {
    chain pre {
        type nat hook prerouting priority dstnat + 1; policy accept;
        iifname "wan0" meta nfproto ipv4 tcp dport 6000-6002 dnat ip to 192.168.1.66
    }
}
"#;

#[test]
fn nft_rules_are_imported_and_forward_the_same_once_applied() {
    require_root!();
    let t = Topology::new(PORTMAP, "imn");
    let _web = t.tcp_server("192.168.1.66:80");
    let _https = t.tcp_server("192.168.1.66:443");
    let _dns_tcp = t.tcp_server("192.168.1.70:53");
    let _dns_udp = t.udp_server("192.168.1.70:53");
    let _a = t.tcp_server("192.168.1.71:8000");
    let _b = t.tcp_server("192.168.1.71:8001");
    let _ssh = t.tcp_server("192.168.1.25:22");
    let _listen = t.tcp_server("192.168.1.66:9002");
    let _range: Vec<_> = (6000..=6002)
        .map(|p| t.tcp_server(&format!("192.168.1.66:{p}")))
        .collect();
    t.router.nft_load(NFT_RULES);
    let check = |t: &Topology| {
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
        t.assert_tcp(CLIENT, 53, "192.168.1.70:53");
        t.assert_udp(CLIENT, 53, "192.168.1.70:53");
        t.assert_tcp(CLIENT, 7000, "192.168.1.71:8000");
        t.assert_tcp(CLIENT, 7001, "192.168.1.71:8001");
        t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
        t.assert_tcp(CLIENT, 8443, "192.168.1.66:443");
        t.assert_tcp(CLIENT, 6001, "192.168.1.66:6001");
        // `ip daddr 203.0.113.1`: the lab's WAN address, so a listen mapping on it.
        t.assert_tcp(CLIENT, 9002, "192.168.1.66:9002");
    };
    check(&t);

    let (yaml, path) = import(&t, &["--from", "nft"]);
    assert_contains(
        &yaml,
        &[
            "wan: { interfaces: [wan0] }",
            "  # from nft table ip fw chain prerouting handle ",
            "  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n    description: \"web\"\n",
            "  - name: both-53\n    protocol: both\n    port: 53\n    to: 192.168.1.70\n",
            "  - name: tcp-7000-7001\n    port: \"7000-7001\"\n    to: 192.168.1.71\n    to_port: \"8000-8001\"\n",
            "  - name: tcp-2222\n    port: 2222\n    to: 192.168.1.25\n    to_port: 22\n",
            "(jumped to from prerouting)\n  - name: tcp-8443\n    port: 8443\n    to: 192.168.1.66\n    to_port: 443\n    allow_from: [203.0.113.2]\n",
            "  # from nft table inet other chain pre handle ",
            "  - name: tcp-6000-6002\n    port: \"6000-6002\"\n    to: 192.168.1.66\n",
            ": matches ct mark, which portmap cannot express",
            "  - name: tcp-9002\n    port: 9002\n    to: 192.168.1.66\n    listen: [203.0.113.1]\n",
            "#   nft: table ip fw, table inet other",
        ],
    );

    // Move over: the old rules go, portmap's come.
    t.router.nft(&["delete", "table", "ip", "fw"]);
    t.router.nft(&["delete", "table", "inet", "other"]);
    t.assert_tcp_blocked(CLIENT, 8080);
    t.portmap(&["apply", "-c", path_str(&path), "--auto-approve"])
        .success();
    check(&t);
    // allow_from now drops other sources (the old rule let them reach the router itself).
    t.assert_tcp_blocked(OTHER_CLIENT, 8443);
    // portmap's own table is not imported again.
    let (again, _) = import(&t, &[]);
    assert_contains(
        &again,
        &["skipped table inet portmap (portmap's own)", "mappings: []"],
    );
}

const LEGACY_RULES: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FORWARDS - [0:0]
-A PREROUTING -i wan0 -j FORWARDS
-A FORWARDS -p tcp -m tcp --dport 8080 -m comment --comment \"web server\" -j DNAT --to-destination 192.168.1.66:80
-A FORWARDS -s 203.0.113.2/32 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 192.168.1.25:22
-A FORWARDS -s 198.51.100.0/24 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 192.168.1.25:22
-A FORWARDS -p tcp -m tcp --dport 7000:7001 -j DNAT --to-destination 192.168.1.71:8000-8001/7000
-A FORWARDS -m mark --mark 0x1 -p tcp -m tcp --dport 9001 -j DNAT --to-destination 192.168.1.66
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
";

const NFT_VARIANT_RULES: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -i wan0 -p udp -m multiport --dports 53 -j DNAT --to-destination 192.168.1.70
-A PREROUTING -i wan0 -p tcp -m tcp --dport 53 -j DNAT --to-destination 192.168.1.70
-A PREROUTING -i wan0 -p tcp -m tcp --dport 9002 -j DNAT --to-destination 192.168.1.70-192.168.1.71
COMMIT
";

#[test]
fn iptables_rules_of_both_variants_are_imported_and_forward_the_same_once_applied() {
    require_root!();
    let t = Topology::new(PORTMAP, "imi").with_backend("iptables-legacy");
    let _web = t.tcp_server("192.168.1.66:80");
    let _ssh = t.tcp_server("192.168.1.25:22");
    let _dns_tcp = t.tcp_server("192.168.1.70:53");
    let _dns_udp = t.udp_server("192.168.1.70:53");
    let _a = t.tcp_server("192.168.1.71:8000");
    let _b = t.tcp_server("192.168.1.71:8001");
    t.router
        .exec_with_stdin("iptables-legacy-restore", &[], Some(LEGACY_RULES))
        .success();
    t.router
        .exec_with_stdin("iptables-nft-restore", &[], Some(NFT_VARIANT_RULES))
        .success();
    let check = |t: &Topology| {
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
        t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
        t.assert_tcp(CLIENT, 7000, "192.168.1.71:8000");
        t.assert_tcp(CLIENT, 7001, "192.168.1.71:8001");
        t.assert_tcp(CLIENT, 53, "192.168.1.70:53");
        t.assert_udp(CLIENT, 53, "192.168.1.70:53");
    };
    check(&t);

    let (yaml, path) = import(&t, &[]);
    assert_contains(
        &yaml,
        &[
            "wan: { interfaces: [wan0] }",
            "  # from iptables-legacy nat FORWARDS rule 1 (jumped to from PREROUTING)\n  - name: web-server\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n    description: \"web server\"\n",
            "  # from iptables-legacy nat FORWARDS rule 2 (jumped to from PREROUTING)\n  # from iptables-legacy nat FORWARDS rule 3 (jumped to from PREROUTING)\n  - name: tcp-2222\n    port: 2222\n    to: 192.168.1.25\n    to_port: 22\n    allow_from: [198.51.100.0/24, 203.0.113.2]\n",
            "  - name: tcp-7000-7001\n    port: \"7000-7001\"\n    to: 192.168.1.71\n    to_port: \"8000-8001\"\n",
            "  # from iptables-nft nat PREROUTING rule 1\n  # from iptables-nft nat PREROUTING rule 2\n  - name: both-53\n    protocol: both\n    port: 53\n    to: 192.168.1.70\n",
            "# - iptables-legacy nat FORWARDS rule 5 (jumped to from PREROUTING): matches with -m mark",
            "# - iptables-legacy nat POSTROUTING rule 1: source NAT in nat postrouting (-j MASQUERADE)",
            "# - iptables-nft nat PREROUTING rule 3: translates to a range of addresses",
            "#   nft: no native table; skipped table ip nat (iptables-nft's; read with iptables-nft-save)",
        ],
    );

    // Move over: flush the old rules of both variants, then apply with portmap.
    for tool in ["iptables-legacy", "iptables-nft"] {
        t.router.exec(tool, &["-t", "nat", "-F"]).success();
        t.router.exec(tool, &["-t", "nat", "-X"]).success();
    }
    t.assert_tcp_blocked(CLIENT, 8080);
    t.portmap(&["apply", "-c", path_str(&path), "--auto-approve"])
        .success();
    check(&t);
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    // portmap's own chains are skipped.
    let (again, _) = import(&t, &["--from", "iptables"]);
    assert_contains(&again, &["skipped portmap's own chains PORTMAP-", "mappings: []"]);
}

#[test]
fn without_cap_net_admin_import_says_so_and_exits_1() {
    require_root!();
    let t = Topology::new(PORTMAP, "imp");
    let run = portmap_testkit::command::run(
        "ip",
        &[
            "netns",
            "exec",
            t.router.name(),
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            PORTMAP.binary(),
            "import",
        ],
        None,
        None,
    );
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains("CAP_NET_ADMIN"),
        "{run}"
    );
}
