//! The same router behaviour through every backend the CLI offers (`--backend nft`,
//! `iptables-legacy`, `iptables-nft`): real connections for tcp, udp, an offset range and an
//! allow-list (a refused source dropped, never reaching a service of the router's own on that
//! port), an empty plan after apply, status naming the backend, and destroy leaving other tools'
//! rules byte-identical. The nft backend's behaviour is tested in depth in the other modules and the
//! iptables backend's in crates/portmap-iptables/tests; this checks that the CLI drives each one.

use std::net::SocketAddr;

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, FOREIGN_TABLE, OTHER_CLIENT, Server, Topology, WAN, config, require_root};

use crate::PORTMAP;

const MAPPINGS: &str = "
  - name: web
    port: 8080
    to: 192.168.1.66
    to_port: 80
  - name: dns
    protocol: udp
    port: 5353
    to: 192.168.1.66
    to_port: 53
  - name: cams
    port: \"6000-6002\"
    to: 192.168.1.70
    to_port: \"7000-7002\"
  - name: ssh
    protocol: both
    port: 2222
    to: 192.168.1.25
    to_port: 22
    allow_from: [203.0.113.2/32]
";

/// A chain and rule of another tool, in iptables.
const FOREIGN_IPTABLES: &str =
    "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 198.51.100.9/32 -j DROP\nCOMMIT\n";

/// Everything the router holds: the nft ruleset and both iptables variants' tables, without what
/// iptables itself leaves once a table was used (a table whose chains are all built-in, empty and
/// of policy ACCEPT: `*nat` with `:PREROUTING ACCEPT` …, or iptables-nft's `table ip nat` of empty
/// base chains), which no rule of anyone's is in.
fn everything(t: &Topology) -> String {
    let save = |program: &str| {
        let out = t.router.exec(program, &[]);
        let mut kept = Vec::new();
        let mut block: Vec<String> = Vec::new();
        for line in out.stdout.lines().filter(|l| !l.starts_with('#')) {
            // Drop the counters.
            let line = line.split(" [").next().unwrap_or(line).to_owned();
            block.push(line.clone());
            if line == "COMMIT" {
                let empty = block.iter().all(|l| {
                    l.starts_with('*') || l == "COMMIT" || l.ends_with(" ACCEPT") && l.starts_with(':')
                });
                if !empty {
                    kept.append(&mut block);
                }
                block.clear();
            }
        }
        kept.join("\n")
    };
    let ruleset = portmap_testkit::normalize(&t.router.nft(&["list", "ruleset"]).stdout);
    let mut tables = Vec::new();
    for table in ruleset.split("\ntable ").map(|b| b.trim_start_matches("table ")) {
        let skeleton = table.lines().skip(1).all(|l| {
            let l = l.trim();
            l.is_empty()
                || l == "}"
                || l.starts_with("chain ")
                || (l.starts_with("type ") && l.ends_with("policy accept;"))
        });
        let builtin = ["ip nat", "ip filter", "ip6 nat", "ip6 filter"]
            .iter()
            .any(|n| table.starts_with(&format!("{n} {{")));
        if !(skeleton && builtin) {
            tables.push(table.trim_end().to_owned());
        }
    }
    format!(
        "{}\n--- legacy ---\n{}\n--- nft ---\n{}",
        tables.join("\ntable "),
        save("iptables-legacy-save"),
        save("iptables-nft-save")
    )
}

fn the_router_behaves_the_same_through(backend: &'static str) {
    let t =
        Topology::new(PORTMAP, &format!("be-{}", backend.replace("iptables", "ipt"))).with_backend(backend);
    let _web = t.tcp_server("192.168.1.66:80");
    let _dns = t.udp_server("192.168.1.66:53");
    let _cam = t.tcp_server("192.168.1.70:7001");
    let _ssh = t.tcp_server("192.168.1.25:22");
    let router_service = Server::tcp(&t.router, SocketAddr::from((WAN, 2222)));
    t.router.nft_load(FOREIGN_TABLE);
    let loaded = t
        .router
        .exec_with_stdin("iptables-legacy-restore", &["--noflush"], Some(FOREIGN_IPTABLES));
    assert!(loaded.ok(), "{loaded}");
    let untouched = everything(&t);

    let path = t.write_config(&config(MAPPINGS));
    let file = path_str(&path);
    let run = t.portmap(&["apply", "-c", file, "--auto-approve"]);
    run.success();
    assert!(run.stdout.contains("Apply complete: 4 created"), "{run}");

    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_udp(CLIENT, 5353, "192.168.1.66:53");
    t.assert_tcp(CLIENT, 6001, "192.168.1.70:7001");
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.assert_tcp_blocked(CLIENT, 8081);
    assert!(
        router_service.seen().is_empty(),
        "{backend}: a refused source reached the router's own service: {:?}",
        router_service.seen()
    );

    t.portmap(&["plan", "-c", file, "--detailed-exitcode"])
        .expect_code(0);
    let status = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(status["state"], "intact", "{status:#}");
    assert_eq!(status["mappings"].as_array().map(Vec::len), Some(4), "{status:#}");
    assert!(
        status["backend"].as_str().is_some_and(|b| b.starts_with(backend)),
        "{status:#}"
    );

    t.portmap(&["destroy", "--auto-approve"]).success();
    t.assert_tcp_blocked(CLIENT, 8080);
    assert_eq!(
        everything(&t),
        untouched,
        "{backend}: destroy left something behind"
    );
}

#[test]
fn nft() {
    require_root!();
    the_router_behaves_the_same_through("nft");
}

#[test]
fn iptables_legacy() {
    require_root!();
    the_router_behaves_the_same_through("iptables-legacy");
}

#[test]
fn iptables_nft() {
    require_root!();
    the_router_behaves_the_same_through("iptables-nft");
}
