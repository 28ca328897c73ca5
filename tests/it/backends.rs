//! The same router behaviour through every backend the CLI offers (`--backend nft`,
//! `iptables-legacy`, `iptables-nft`): real connections for tcp, udp, an offset range and an
//! allow-list (a refused source dropped, never reaching a service of the router's own on that
//! port), an empty plan after apply, status naming the backend, and destroy leaving other tools'
//! rules byte-identical. Every backend's behaviour is tested in depth in the other modules (through
//! `every_backend!`), and what only iptables has in `iptables.rs`; this one test checks, in one
//! place, that the CLI drives each backend end to end.

use std::net::SocketAddr;

use portmap_testkit::topology::path_str;
use portmap_testkit::{
    CLIENT, FOREIGN_TABLE, OTHER_CLIENT, Server, Topology, WAN, config, iptables, require_root,
};

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

/// A chain and rule of another tool, for iptables (a FORWARD policy of ACCEPT: the nft backend's
/// accepts do not pass an iptables drop).
const FOREIGN_DOCKER_USER: &str =
    "*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -s 198.51.100.9/32 -j DROP\nCOMMIT\n";

fn the_router_behaves_the_same_through(backend: &'static str) {
    let t =
        Topology::new(PORTMAP, &format!("be-{}", backend.replace("iptables", "ipt"))).with_backend(backend);
    let _web = t.tcp_server("192.168.1.66:80");
    let _dns = t.udp_server("192.168.1.66:53");
    let _cam = t.tcp_server("192.168.1.70:7001");
    let _ssh = t.tcp_server("192.168.1.25:22");
    let router_service = Server::tcp(&t.router, SocketAddr::from((WAN, 2222)));
    // Other tools' rules in nft and in both iptables variants, whichever backend runs.
    t.router.nft_load(FOREIGN_TABLE);
    for variant in iptables::VARIANTS {
        iptables::restore(&t.router, variant, false, FOREIGN_DOCKER_USER);
    }
    let untouched = t.kernel();

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
    assert_eq!(t.kernel(), untouched, "{backend}: destroy left something behind");
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
