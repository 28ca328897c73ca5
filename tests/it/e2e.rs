//! End-to-end tests: the `portmap` binary against a real kernel, with real connections through the
//! DNAT it installs. Each test builds its own client / router / LAN namespaces (see
//! `portmap_testkit::topology`) and removes them when it ends, even on panic; nothing touches the host.
//!
//! Every config here uses `hairpin: false`, so what is tested is the WAN path alone; hairpin, masquerade
//! and router-local forwards are tested in `router.rs`, IPv6 in `ipv6.rs`.
//!
//! Every test here is written `every_backend! { … }` and runs once per backend: nft,
//! iptables-legacy and iptables-nft. The behaviour (traffic; plan, apply and status exit codes and
//! words) is the same for all; damage is made by hand with each backend's own tool and "the kernel
//! unchanged" compares every tool's listing (`Topology::damage`, `Topology::kernel`,
//! `Topology::owned`, `Topology::foreign` in the kit); checks of nft's own listing are limited to
//! the nft run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use portmap_testkit::topology::path_str;
use portmap_testkit::traffic::{BLOCKED_TIMEOUT, REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{
    BAD_FIXTURES, CLIENT, ConnError, Damage, OTHER_CLIENT, Reply, Topology, WAN, change_actions, config,
    nft_list, scalar, status_mapping, table_action,
};

const WEB: &str = "
  - name: web
    protocol: tcp
    port: 8080
    to: 192.168.1.66
    to_port: 80
";

const API: &str = "
  - name: api
    protocol: tcp
    port: 8081
    to: 192.168.1.66
    to_port: 81
";

const SSH_FROM_CLIENT: &str = "
  - name: ssh
    protocol: tcp
    port: 2222
    to: 192.168.1.25
    to_port: 22
    allow_from: [203.0.113.2/32]
";

/// Source addresses of the peers a server saw.
fn ips(seen: &[SocketAddr]) -> Vec<IpAddr> {
    seen.iter().map(SocketAddr::ip).collect()
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected `{needle}` in:\n{haystack}");
    }
}

every_backend! {
fn tcp_mapping_reaches_the_lan_host_with_the_clients_address(t) {
    let web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(WEB)).success();

    if t.is_nft() {
        let table = t.table().expect("apply creates table inet portmap");
        assert_contains(
            &table,
            &[
                "table inet portmap {",
                "map dnat4 {",
                r#"tcp . 8080 comment "web" : 192.168.1.66 . 80"#,
                "chain prerouting {",
                "type nat hook prerouting priority dstnat;",
                "chain forward {",
                "type filter hook forward priority filter;",
            ],
        );
    }

    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp(OTHER_CLIENT, 8080, "192.168.1.66:80");
    // No SNAT: the server saw both real client addresses.
    assert_eq!(ips(&web.seen()), [CLIENT, OTHER_CLIENT]);
}
}

every_backend! {
fn udp_mapping_reaches_the_lan_host(t) {
    let dns = t.udp_server("192.168.1.70:53");
    t.apply(&config(
        "
  - name: dns
    protocol: udp
    port: 5353
    to: 192.168.1.70
    to_port: 53
",
    ))
    .success();
    if t.is_nft() {
        assert_contains(
            &t.table().expect("table exists"),
            &[r#"udp . 5353 comment "dns" : 192.168.1.70 . 53"#],
        );
    }

    t.assert_udp(CLIENT, 5353, "192.168.1.70:53");
    // Only UDP is mapped: TCP on the same port stays closed.
    t.assert_tcp_blocked(CLIENT, 5353);
    assert_eq!(ips(&dns.seen()), [CLIENT]);
}
}

every_backend! {
fn both_mapping_forwards_tcp_and_udp_on_the_same_port(t) {
    let tcp = t.tcp_server("192.168.1.25:9000");
    let udp = t.udp_server("192.168.1.25:9000");
    t.apply(&config(
        "
  - name: game
    protocol: both
    port: 9000
    to: 192.168.1.25
",
    ))
    .success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        assert_contains(&table, &["tcp . 9000", "udp . 9000", "192.168.1.25 . 9000"]);
    }
    t.assert_tcp(CLIENT, 9000, "192.168.1.25:9000");
    t.assert_udp(CLIENT, 9000, "192.168.1.25:9000");
    assert_eq!(ips(&tcp.seen()), [CLIENT]);
    assert_eq!(ips(&udp.seen()), [CLIENT]);
}
}

every_backend! {
fn offset_range_maps_each_port_to_its_inner_port(t) {
    let servers: Vec<_> = (7000..=7002)
        .map(|p| t.tcp_server(&format!("192.168.1.70:{p}")))
        .collect();
    // A server just past the inner range must never be reached.
    let outside = t.tcp_server("192.168.1.70:7003");
    t.apply(&config(
        r#"
  - name: offset
    protocol: tcp
    port: "6000-6002"
    to: 192.168.1.70
    to_port: "7000-7002"
"#,
    ))
    .success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        for (port, to_port) in (6000..=6002).zip(7000..=7002) {
            assert_contains(
                &table,
                &[&format!(
                    "tcp . {port} comment \"offset\" : 192.168.1.70 . {to_port}"
                )],
            );
        }
    } else {
        // iptables shifts the port in one rule (nftables cannot): 6001 → 7001.
        let owned = t.owned().expect("apply writes portmap's rules");
        assert_contains(
            &owned,
            &["--dport 6000:6002 -m comment --comment offset -j DNAT --to-destination 192.168.1.70:7000-7002/6000"],
        );
    }
    for (port, to_port) in (6000..=6002).zip(7000..=7002) {
        t.assert_tcp(CLIENT, port, &format!("192.168.1.70:{to_port}"));
    }
    t.assert_tcp_blocked(CLIENT, 5999);
    t.assert_tcp_blocked(CLIENT, 6003);
    for server in &servers {
        assert_eq!(ips(&server.seen()), [CLIENT], "{}", server.local());
    }
    assert!(outside.seen().is_empty());
}
}

every_backend! {
/// Refused means dropped: a source outside `allow_from` reaches neither the inner host nor a
/// service of the router's own on the mapped port (an `accept` in the allow-list chain would end
/// NAT processing and hand the connection to that listener).
fn a_refused_source_reaches_neither_the_lan_host_nor_the_router(t) {
    let inner_tcp = t.tcp_server("192.168.1.25:22");
    let inner_udp = t.udp_server("192.168.1.25:22");
    // The router's own services on the mapped port, on its WAN address.
    let router_tcp = portmap_testkit::Server::tcp(&t.router, SocketAddr::from((WAN, 2222)));
    let router_udp = portmap_testkit::Server::udp(&t.router, SocketAddr::from((WAN, 2222)));
    t.apply(&config(
        "
  - name: ssh
    protocol: both
    port: 2222
    to: 192.168.1.25
    to_port: 22
    allow_from: [203.0.113.2/32]
",
    ))
    .success();

    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.assert_udp_blocked(OTHER_CLIENT, 2222);
    assert!(
        router_tcp.seen().is_empty() && router_udp.seen().is_empty(),
        "a refused source reached the router's own service: tcp {:?}, udp {:?}",
        router_tcp.seen(),
        router_udp.seen()
    );
    assert!(inner_tcp.seen().is_empty() && inner_udp.seen().is_empty());

    // The listed source still gets through, to the inner host and not to the router.
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_udp(CLIENT, 2222, "192.168.1.25:22");
    assert!(router_tcp.seen().is_empty() && router_udp.seen().is_empty());
}
}

every_backend! {
fn allow_from_admits_listed_sources_only(t) {
    let ssh = t.tcp_server("192.168.1.25:22");
    t.apply(&config(SSH_FROM_CLIENT)).success();

    if t.is_nft() {
        let table = t.table().expect("table exists");
        assert_contains(
            &table,
            &[
                "map guard4 {",
                "chain allow_ssh {",
                "set allow_ssh_src {",
                "203.0.113.2",
            ],
        );
    }

    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    assert_eq!(
        ips(&ssh.seen()),
        [CLIENT],
        "the disallowed source must not reach the server"
    );
}
}

every_backend! {
fn unmapped_ports_stay_closed(t) {
    let web = t.tcp_server("192.168.1.66:80");
    let tcp_other = t.tcp_server("192.168.1.66:9090");
    let udp_other = t.udp_server("192.168.1.66:9090");
    t.apply(&config(WEB)).success();

    t.assert_tcp_blocked(CLIENT, 9090);
    t.assert_udp_blocked(CLIENT, 9090);
    // UDP on the TCP-only mapped port is not forwarded either.
    t.assert_udp_blocked(CLIENT, 8080);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    assert!(
        tcp_other.seen().is_empty() && udp_other.seen().is_empty(),
        "nothing may reach port 9090"
    );
    assert_eq!(ips(&web.seen()), [CLIENT]);
}
}

every_backend! {
fn dnat_applies_only_to_wan_traffic_for_the_router(t) {
    let web = t.tcp_server("192.168.1.66:80");
    let direct = t.tcp_server("192.168.1.66:8080");
    t.apply(&config(WEB)).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    // Arriving on wan0 but addressed to a LAN host, not to the router: routed untouched.
    t.route_client_to_lan();
    let to_host = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 66), 8080);
    let got = tcp_request(&t.client, CLIENT, to_host, REPLY_TIMEOUT);
    let reply = got.as_deref().ok().and_then(Reply::parse);
    assert_eq!(
        reply.map(|r| r.server),
        Some(SocketAddr::V4(to_host)),
        "traffic not addressed to the router must not be DNATed: {got:?}"
    );

    // Addressed to the router but arriving on lan0 (hairpin is off): the router's own port answers.
    let from_lan = tcp_request(
        &t.lan,
        Ipv4Addr::new(192, 168, 1, 25),
        SocketAddrV4::new(WAN, 8080),
        BLOCKED_TIMEOUT,
    );
    assert!(
        matches!(from_lan, Err(ConnError::Refused | ConnError::Timeout)),
        "LAN traffic to the WAN address must not be DNATed with hairpin off: {from_lan:?}"
    );
    assert_eq!(ips(&web.seen()), [CLIENT]);
    assert_eq!(ips(&direct.seen()), [CLIENT]);
}
}

every_backend! {
fn plan_is_empty_after_apply_and_status_lists_the_mappings(t) {
    let yaml = config(&format!(
        "{WEB}    description: \"web server\"\n{SSH_FROM_CLIENT}"
    ));
    t.write_config(&yaml);
    let untouched = t.kernel();

    let before = t.plan_json();
    before.expect_code(2);
    let plan = before.json();
    assert_eq!(table_action(&plan), "create", "{plan:#}");
    let mut actions = change_actions(&plan);
    actions.sort();
    assert_eq!(
        actions,
        [("ssh".into(), "create".into()), ("web".into(), "create".into())],
        "{plan:#}"
    );
    assert_eq!(plan["summary"]["create"], 2, "{plan:#}");
    assert_eq!(plan["summary"]["update"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["delete"], 0, "{plan:#}");
    assert_eq!(t.kernel(), untouched, "plan must not touch the kernel");

    t.apply(&yaml).success();
    let applied = t.owned().expect("apply writes portmap's rules");

    let text = t.plan_text();
    text.expect_code(0);
    assert!(
        text.stdout.to_lowercase().contains("no changes"),
        "plan should say so:\n{text}"
    );
    let after = t.plan_json();
    after.expect_code(0);
    let plan = after.json();
    assert_eq!(change_actions(&plan), [], "{plan:#}");
    assert!(
        !["create", "repair"].contains(&table_action(&plan).as_str()),
        "{plan:#}"
    );
    for key in ["create", "update", "delete"] {
        assert_eq!(plan["summary"][key], 0, "summary.{key}: {plan:#}");
    }

    // Applying the same config again changes nothing.
    let kernel = t.kernel();
    t.apply(&yaml).success();
    assert_eq!(t.owned().as_deref(), Some(applied.as_str()));
    assert_eq!(t.kernel(), kernel);

    let status = t.portmap(&["status", "--json"]);
    status.success();
    let status = status.json();
    assert_eq!(status["state"], "intact", "{status:#}");
    let web = status_mapping(&status, "web");
    assert_eq!(scalar(&web["protocol"]), "tcp");
    assert_eq!(scalar(&web["port"]), "8080");
    assert_eq!(scalar(&web["to"]), "192.168.1.66");
    assert_eq!(scalar(&web["to_port"]), "80");
    assert_eq!(scalar(&web["description"]), "web server");
    assert_eq!(web["allow_from"].as_array().map(Vec::len), Some(0), "{web:#}");
    let ssh = status_mapping(&status, "ssh");
    assert_eq!(scalar(&ssh["port"]), "2222");
    assert_eq!(scalar(&ssh["to"]), "192.168.1.25");
    assert_eq!(scalar(&ssh["to_port"]), "22");
    assert_eq!(
        ssh["allow_from"],
        serde_json::json!(["203.0.113.2/32"]),
        "{ssh:#}"
    );
    assert_eq!(status["mappings"].as_array().map(Vec::len), Some(2), "{status:#}");
}
}

every_backend! {
/// Everything portmap wrote deleted by hand (nft: its table; iptables: its chains and jumps).
fn drift_table_deleted_by_hand_is_recreated(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(WEB)).success();
    let applied = t.owned().expect("apply writes portmap's rules");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    t.damage(Damage::Everything);
    assert_eq!(t.owned(), None, "nothing of portmap's is left");
    t.assert_tcp_blocked(CLIENT, 8080);

    let plan = t.plan_json();
    plan.expect_code(2);
    let plan = plan.json();
    assert_eq!(table_action(&plan), "create", "{plan:#}");
    assert!(
        change_actions(&plan).contains(&("web".into(), "create".into())),
        "{plan:#}"
    );
    reapply_restores(t, &config(WEB), &applied);
}
}

every_backend! {
/// The chain that hands WAN traffic to the DNAT, deleted (nft) or emptied (iptables) by hand.
fn drift_chain_deleted_by_hand_is_repaired(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(WEB)).success();
    let applied = t.owned().expect("apply writes portmap's rules");

    let chain = t.damage(Damage::DnatChain);
    t.assert_tcp_blocked(CLIENT, 8080);

    let plan = t.plan_json();
    plan.expect_code(2);
    let json = plan.json();
    assert_eq!(table_action(&json), "repair", "{json:#}");
    assert!(
        plan.stdout.contains(&chain),
        "the plan should say what is wrong ({chain}):\n{plan}"
    );
    let text = t.plan_text();
    text.expect_code(2);
    assert!(text.stdout.contains(&chain), "{text}");

    reapply_restores(t, &config(WEB), &applied);
}
}

every_backend! {
/// The rules that hook the DNAT in deleted by hand (nft: the rules of `prerouting`; iptables: the
/// jump from `PREROUTING`).
fn drift_rule_deleted_by_hand_is_repaired(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(WEB)).success();
    let applied = t.owned().expect("apply writes portmap's rules");

    t.damage(Damage::DnatJump);
    t.assert_tcp_blocked(CLIENT, 8080);

    let plan = t.plan_json();
    plan.expect_code(2);
    assert_eq!(table_action(&plan.json()), "repair", "{plan}");

    reapply_restores(t, &config(WEB), &applied);
}
}

every_backend! {
/// One mapping's forward deleted by hand (nft: its map element; iptables: its DNAT rule): only
/// that mapping is repaired.
fn drift_element_deleted_by_hand_is_restored(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _api = t.tcp_server("192.168.1.66:81");
    t.apply(&config(&[WEB, API].concat())).success();
    let applied = t.owned().expect("apply writes portmap's rules");

    t.damage(Damage::Forward(8080));
    t.assert_tcp_blocked(CLIENT, 8080);
    t.assert_tcp(CLIENT, 8081, "192.168.1.66:81");

    let plan = t.plan_json();
    plan.expect_code(2);
    let json = plan.json();
    let names: Vec<String> = change_actions(&json).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["web"], "only the damaged mapping changes: {json:#}");

    reapply_restores(t, &config(&[WEB, API].concat()), &applied);
}
}

/// Apply `yaml` again after hand damage: portmap's rules are exactly what the first apply built,
/// web forwards again, and the next plan is empty.
#[track_caller]
fn reapply_restores(t: &Topology, yaml: &str, applied: &str) {
    t.apply(yaml).success();
    assert_eq!(
        t.owned().as_deref(),
        Some(applied),
        "the repair restores the rules"
    );
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
}

/// `# handle N` of the table header line in `nft -a list table inet portmap`.
fn table_handle(t: &Topology) -> String {
    let out = t.router.nft(&["-a", "list", "table", "inet", "portmap"]);
    out.success();
    out.stdout.lines().next().unwrap_or_default().to_owned()
}

/// Whether portmap's rules forward TCP `port` to `to` (`192.168.1.71:80`), in the lab backend's
/// own terms.
fn forwards(t: &Topology, port: u16, to: &str) -> bool {
    let owned = t.owned().unwrap_or_default();
    if t.is_nft() {
        let (ip, to_port) = to.split_once(':').unwrap_or((to, ""));
        owned.contains(&format!("tcp . {port} comment")) && owned.contains(&format!("{ip} . {to_port}"))
    } else {
        owned.lines().any(|l| {
            l.contains(&format!("--dport {port} ")) && l.ends_with(&format!("--to-destination {to}"))
        })
    }
}

every_backend! {
fn retarget_and_remove_mappings_leave_the_others_working(t) {
    let old_web = t.tcp_server("192.168.1.66:80");
    let new_web = t.tcp_server("192.168.1.71:80");
    let api = t.tcp_server("192.168.1.66:81");

    t.apply(&config(&[WEB, API].concat())).success();
    let table_before = t.is_nft().then(|| table_handle(t));
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp(CLIENT, 8081, "192.168.1.66:81");

    // Retarget web: .66 -> .71.
    let moved = config(&[&WEB.replace("192.168.1.66", "192.168.1.71"), API].concat());
    t.write_config(&moved);
    let plan = t.plan_json();
    plan.expect_code(2);
    assert_eq!(
        change_actions(&plan.json()),
        [("web".into(), "update".into())],
        "{plan}"
    );
    let run = t.apply(&moved);
    run.success();
    assert!(!run.stdout.contains("rebuilt"), "a change is made in place:\n{run}");
    assert!(forwards(t, 8080, "192.168.1.71:80"), "{:?}", t.owned());
    assert!(!forwards(t, 8080, "192.168.1.66:80"), "{:?}", t.owned());
    t.assert_tcp(CLIENT, 8080, "192.168.1.71:80");
    t.assert_tcp(CLIENT, 8081, "192.168.1.66:81");
    assert_eq!(
        ips(&old_web.seen()),
        [CLIENT],
        "no new connection may reach the old target"
    );
    assert_eq!(ips(&new_web.seen()), [CLIENT]);

    // Remove api.
    let fewer = config(&WEB.replace("192.168.1.66", "192.168.1.71"));
    t.write_config(&fewer);
    let plan = t.plan_json();
    plan.expect_code(2);
    assert_eq!(
        change_actions(&plan.json()),
        [("api".into(), "delete".into())],
        "{plan}"
    );
    let run = t.apply(&fewer);
    run.success();
    assert!(!run.stdout.contains("rebuilt"), "a removal is made in place:\n{run}");
    t.assert_tcp_blocked(CLIENT, 8081);
    t.assert_tcp(CLIENT, 8080, "192.168.1.71:80");
    assert_eq!(
        ips(&api.seen()),
        [CLIENT, CLIENT],
        "after removal nothing more reaches api"
    );
    assert!(!forwards(t, 8081, "192.168.1.66:81"), "{:?}", t.owned());

    // Delta, not replace: the table itself was never rebuilt.
    if let Some(before) = table_before {
        assert_eq!(
            table_handle(t),
            before,
            "a mapping change must not recreate the table"
        );
    }
    t.plan_json().expect_code(0);
}
}

every_backend! {
fn disabled_mapping_is_removed_from_the_kernel(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _api = t.tcp_server("192.168.1.66:81");
    t.apply(&config(&[WEB, API].concat())).success();
    t.assert_tcp(CLIENT, 8081, "192.168.1.66:81");

    let disabled = config(&[WEB, API, "    enabled: false\n"].concat());
    t.write_config(&disabled);
    let plan = t.plan_json();
    plan.expect_code(2);
    assert_eq!(
        change_actions(&plan.json()),
        [("api".into(), "delete".into())],
        "{plan}"
    );
    t.apply(&disabled).success();
    t.assert_tcp_blocked(CLIENT, 8081);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    assert!(!forwards(t, 8081, "192.168.1.66:81"), "{:?}", t.owned());
    t.plan_json().expect_code(0);
}
}

every_backend! {
fn destroy_removes_the_table_and_stops_forwarding(t) {
    let web = t.tcp_server("192.168.1.66:80");
    let untouched = t.kernel();
    t.apply(&config(&[WEB, SSH_FROM_CLIENT].concat())).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    t.portmap(&["destroy", "--auto-approve"]).success();
    assert_eq!(t.owned(), None, "nothing of portmap's may be left");
    assert_eq!(t.kernel(), untouched, "destroy leaves the kernel as it was before apply");
    t.assert_tcp_blocked(CLIENT, 8080);
    assert_eq!(ips(&web.seen()), [CLIENT]);

    // Destroying nothing is fine, and a plan now wants the table back.
    t.portmap(&["destroy", "--auto-approve"]).success();
    let plan = t.plan_json();
    plan.expect_code(2);
    assert_eq!(table_action(&plan.json()), "create", "{plan}");
}
}

every_backend! {
/// Another tool's rules (nft: a table with a forward chain and a set; iptables: Docker's chains and
/// rules in nat and filter with a FORWARD policy of DROP, and look-alikes of portmap's chain names
/// in filter and mangle) stay byte-identical through every kind of apply and through destroy.
fn foreign_table_is_untouched_by_apply_and_destroy(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _api = t.tcp_server("192.168.1.66:81");
    t.load_foreign();
    let original = t.foreign();
    let raw = nft_list(&t.router, "ip foreign");

    t.apply(&config(WEB)).success();
    assert_eq!(t.foreign(), original, "after the first apply");
    // Forwarded through the other tool's rules (iptables: past Docker's FORWARD policy DROP).
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    if t.is_nft() {
        // The foreign forward chain really sees the forwarded traffic (so only counters moved).
        let counted = nft_list(&t.router, "ip foreign");
        assert_ne!(
            counted, raw,
            "the foreign counter should have counted the forwarded connection"
        );
    }
    assert_eq!(t.foreign(), original, "after traffic");

    t.apply(&config(&[WEB, API, SSH_FROM_CLIENT].concat())).success();
    assert_eq!(t.foreign(), original, "after adding mappings");
    t.apply(&config(API)).success();
    assert_eq!(t.foreign(), original, "after removing mappings");
    t.damage(Damage::Everything);
    t.apply(&config(API)).success();
    assert_eq!(t.foreign(), original, "after recreating the table");
    t.portmap(&["destroy", "--auto-approve"]).success();
    assert_eq!(t.foreign(), original, "after destroy");
    assert_eq!(t.owned(), None, "only the foreign rules are left");
}
}

every_backend! {
fn bad_configs_leave_the_kernel_untouched(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.load_foreign();
    t.apply(&config(WEB)).success();
    let before = t.kernel();

    for bad in BAD_FIXTURES {
        let path = bad.path();
        let path = path_str(&path);
        let run = t.portmap(&["apply", "-c", path, "--auto-approve"]);
        bad.check(&run, Some(path));
        assert_eq!(t.kernel(), before, "{}: apply changed the kernel", bad.file);
        let run = t.portmap(&["plan", "-c", path, "--detailed-exitcode"]);
        bad.check(&run, Some(path));
        assert_eq!(t.kernel(), before, "{}: plan changed the kernel", bad.file);
    }
    assert!(
        nft_list(&t.router, "ip pwned").is_err(),
        "the hostile name must not have reached nft"
    );
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
}
}

every_backend! {
fn apply_without_approval_and_without_a_terminal_refuses(t) {
    let path = t.write_config(&config(WEB));
    let empty = t.kernel();

    // stdin is /dev/null and there is no controlling terminal.
    let run = t.portmap(&["apply", "-c", path_str(&path)]);
    run.expect_code(1);
    assert!(!run.stderr.trim().is_empty(), "a refusal should say why:\n{run}");
    assert_eq!(t.kernel(), empty, "nothing may be applied");

    t.apply(&config(WEB)).success();
    let applied = t.kernel();
    let path = t.write_config(&config(&[WEB, API].concat()));
    t.portmap(&["apply", "-c", path_str(&path)]).expect_code(1);
    assert_eq!(
        t.kernel(),
        applied,
        "a pending change may not be applied without approval"
    );
    t.portmap(&["destroy"]).expect_code(1);
    assert_eq!(
        t.kernel(),
        applied,
        "destroy without approval must refuse too"
    );
}
}

every_backend! {
fn saved_plan_applies(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    let plan_file = t.dir.path().join("web.plan");
    let plan_file = path_str(&plan_file);
    let untouched = t.kernel();

    t.portmap(&["plan", "-c", path_str(&path), "--out", plan_file])
        .success();
    assert_eq!(t.kernel(), untouched, "plan --out must not touch the kernel");
    // The saved plan is the approval: no config file and no --auto-approve needed.
    t.portmap(&["apply", plan_file]).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
}
}

every_backend! {
/// Another tool changes the rules after `plan --out` (nft: a table of its own; iptables: Docker's
/// chains in the same tables): the saved plan is refused whole.
fn saved_plan_is_refused_after_the_ruleset_changed(t) {
    let path = t.write_config(&config(WEB));
    let plan_file = t.dir.path().join("web.plan");
    let plan_file = path_str(&plan_file);

    t.portmap(&["plan", "-c", path_str(&path), "--out", plan_file])
        .success();
    t.load_foreign();
    let changed = t.kernel();

    let run = t.portmap(&["apply", plan_file]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("changed the ruleset after this plan was made"),
        "the refusal should say why:\n{run}"
    );
    assert_eq!(t.kernel(), changed, "a stale plan must not change anything");
    assert_eq!(t.owned(), None);

    // A fresh plan goes through.
    t.portmap(&["plan", "-c", path_str(&path), "--out", plan_file])
        .success();
    t.portmap(&["apply", plan_file]).success();
    assert!(t.owned().is_some());
}
}

every_backend! {
fn a_new_wan_address_is_forwarded_without_a_reapply(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(WEB)).success();
    let owned = t.owned().expect("apply writes portmap's rules");
    assert!(
        !owned.contains("203.0.113"),
        "the WAN address must not be pinned in the rules:\n{owned}"
    );

    // The ISP hands out a new address (DHCP/PPPoE): the old one goes, a new one comes.
    t.router
        .ip(&["addr", "del", "203.0.113.1/24", "dev", "wan0"])
        .success();
    t.router
        .ip(&["addr", "add", "203.0.113.10/24", "dev", "wan0"])
        .success();
    let new_wan = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 8080);
    let reply =
        tcp_request(&t.client, CLIENT, new_wan, REPLY_TIMEOUT).expect("forwarded via the new address");
    let reply = Reply::parse(&reply).expect("a reply from a LAN server");
    assert_eq!(
        reply.server,
        "192.168.1.66:80".parse::<SocketAddr>().unwrap(),
        "{reply:?}"
    );
    // Nothing to re-apply.
    t.plan_json().expect_code(0);
}
}
