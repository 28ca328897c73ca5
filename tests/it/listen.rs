//! `listen`: mappings that answer on one public address of the router only. Two forwards of the
//! same port on two WAN addresses reach two LAN hosts; hairpin and the router's own processes
//! reach them through the listen address too; an allow-list, a limit and the counters stay per
//! mapping; a changed address is a `listen` change in the plan; a mapping without `listen` on the
//! same port is refused before anything reaches the kernel. Real connections, every backend.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use portmap_testkit::topology::path_str;
use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{CLIENT, ConnError, OTHER_CLIENT, ROUTER_LAN, Reply, Topology, WAN, WAN_SECOND};

fn config(a_on: &str, b_on: &str) -> String {
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\n\
         mappings:\n\
         \x20 - name: first\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n    listen: [{a_on}]\n\
         \x20   allow_from: [{CLIENT}]\n\
         \x20 - name: second\n    port: 8080\n    to: 192.168.1.25\n    to_port: 80\n    listen: [{b_on}]\n\
         \x20   limit: \"100/second\"\n"
    )
}

/// TCP from the client (source `from`) to `to`:8080.
fn to(t: &Topology, from: std::net::Ipv4Addr, to: std::net::Ipv4Addr) -> Result<String, ConnError> {
    tcp_request(&t.client, from, SocketAddrV4::new(to, 8080), REPLY_TIMEOUT)
}

fn server_of(got: &Result<String, ConnError>) -> SocketAddr {
    let text = got.as_ref().unwrap_or_else(|e| panic!("no answer: {e:?}"));
    Reply::parse(text)
        .unwrap_or_else(|| panic!("not an identity reply: {text}"))
        .server
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

every_backend! {
fn one_port_on_two_addresses_reaches_two_hosts(t) {
    t.add_wan_address();
    let _a = t.tcp_server("192.168.1.66:80");
    let _b = t.tcp_server("192.168.1.25:80");
    t.apply(&config(&WAN.to_string(), &WAN_SECOND.to_string())).success();

    // From the internet: each address reaches its own host.
    assert_eq!(server_of(&to(t, CLIENT, WAN)), addr("192.168.1.66:80"));
    assert_eq!(server_of(&to(t, CLIENT, WAN_SECOND)), addr("192.168.1.25:80"));
    // The allow-list is the first mapping's: another client is refused there, not on the second.
    assert!(to(t, OTHER_CLIENT, WAN).is_err(), "a refused source got through");
    assert_eq!(server_of(&to(t, OTHER_CLIENT, WAN_SECOND)), addr("192.168.1.25:80"));

    // Hairpin from a LAN host and from the router itself, through the listen address.
    let lan_client = std::net::Ipv4Addr::new(192, 168, 1, 70);
    let got = tcp_request(&t.lan, lan_client, SocketAddrV4::new(WAN_SECOND, 8080), REPLY_TIMEOUT);
    assert_eq!(server_of(&got), addr("192.168.1.25:80"));
    let got = tcp_request(&t.router, WAN_SECOND, SocketAddrV4::new(WAN_SECOND, 8080), REPLY_TIMEOUT);
    assert_eq!(server_of(&got), addr("192.168.1.25:80"));
    let got = tcp_request(&t.router, ROUTER_LAN, SocketAddrV4::new(WAN, 8080), REPLY_TIMEOUT);
    assert!(got.is_err(), "the router is outside the first mapping's allow-list: {got:?}");

    // Nothing else to do, and each mapping counted its own connections.
    t.plan_text().expect_code(0);
    let status = t.portmap(&["status", "--json"]).success().json();
    let mapping = |name: &str| {
        status["mappings"]
            .as_array()
            .and_then(|list| list.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status:#}"))
    };
    assert_eq!(mapping("first")["listen"], serde_json::json!([WAN.to_string()]), "{status:#}");
    assert_eq!(mapping("second")["listen"], serde_json::json!([WAN_SECOND.to_string()]), "{status:#}");
    assert_eq!(mapping("first")["counters"]["connections"], 1, "{status:#}");
    assert_eq!(mapping("second")["counters"]["connections"], 4, "{status:#}");
    let text = t.portmap(&["status"]).success().stdout.clone();
    assert!(text.contains("LISTEN"), "{text}");

    // The addresses swap: a `listen` change of each mapping, and the traffic follows.
    let path = t.write_config(&config(&WAN_SECOND.to_string(), &WAN.to_string()));
    let plan = t.portmap(&["plan", "-c", path_str(&path), "--json"]).success().json();
    let fields: Vec<String> = plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["fields"].as_array().cloned().unwrap_or_default())
        .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, vec!["listen", "listen"], "{plan:#}");
    assert_eq!(plan["changes"][0]["before"]["listen"], serde_json::json!([WAN.to_string()]), "{plan:#}");
    t.portmap(&["apply", "-c", path_str(&path), "--auto-approve"]).success();
    assert_eq!(server_of(&to(t, CLIENT, WAN_SECOND)), addr("192.168.1.66:80"));
    assert_eq!(server_of(&to(t, CLIENT, WAN)), addr("192.168.1.25:80"));
    assert!(to(t, OTHER_CLIENT, WAN_SECOND).is_err(), "the allow-list moved with its mapping");
    t.plan_text().expect_code(0);

    // A mapping of the same port on any address clashes with both: refused, kernel unchanged.
    let before = t.portmap(&["status", "--json"]).success().json();
    let clash = format!(
        "{}  - name: any\n    port: 8080\n    to: 192.168.1.71\n",
        config(&WAN_SECOND.to_string(), &WAN.to_string())
    );
    let run = t.apply(&clash);
    run.expect_code(1);
    assert!(
        run.stderr.contains("a mapping without `listen` answers on every address"),
        "{}",
        run.stderr
    );
    let after = t.portmap(&["status", "--json"]).success().json();
    assert_eq!(before["mappings"].as_array().map(Vec::len), after["mappings"].as_array().map(Vec::len));
    assert_eq!(server_of(&to(t, CLIENT, WAN)), addr("192.168.1.25:80"));
    let _ = IpAddr::V4(WAN);
}
}
