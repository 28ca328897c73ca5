//! `sources`: a named list used by two mappings admits its members on both and refuses every other
//! source; a change of the list takes effect for both. Real connections, every backend.

use std::net::SocketAddrV4;

use portmap_testkit::topology::path_str;
use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{CLIENT, ConnError, OTHER_CLIENT, Topology, WAN};

fn config(office: std::net::Ipv4Addr) -> String {
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\n\
         sources:\n  office: [{office}, 2001:db8:1::/48]\n\
         mappings:\n\
         \x20 - {{ name: web, port: 8080, to: 192.168.1.66, to_port: 80, allow_from: [office] }}\n\
         \x20 - {{ name: ssh, port: 8081, to: 192.168.1.25, to_port: 80, allow_from: [office, 192.0.2.99] }}\n"
    )
}

fn to(t: &Topology, from: std::net::Ipv4Addr, port: u16) -> Result<String, ConnError> {
    tcp_request(&t.client, from, SocketAddrV4::new(WAN, port), REPLY_TIMEOUT)
}

every_backend! {
fn a_list_used_by_two_mappings_admits_its_members_on_both(t) {
    let _a = t.tcp_server("192.168.1.66:80");
    let _b = t.tcp_server("192.168.1.25:80");
    t.apply(&config(CLIENT)).success();
    for port in [8080, 8081] {
        assert!(to(t, CLIENT, port).is_ok(), "a member of the list was refused on {port}");
        assert!(to(t, OTHER_CLIENT, port).is_err(), "a source outside the list got through on {port}");
    }
    t.plan_text().expect_code(0);
    if t.backend() == "nft" {
        // One set per list and family, referred to by both mappings' chains.
        let table = t.table().expect("table");
        assert!(table.contains("set src_office4"), "{table}");
        assert!(table.contains("set src_office6"), "{table}");
        assert_eq!(table.matches("ip saddr @src_office4 return").count(), 2, "{table}");
    }
    // explain reads the lists the way the kernel does.
    let from = |who: std::net::Ipv4Addr| {
        let who = who.to_string();
        t.portmap(&["explain", "tcp", "8081", "--from", &who, "--to", &WAN.to_string()]).code
    };
    assert_eq!(from(CLIENT), 0, "a member of the list is forwarded");
    assert_eq!(from(OTHER_CLIENT), 1, "a source outside the list is refused");

    // The list changes. nft: one update of the list's set, no mapping changes; iptables (which
    // writes each mapping's prefixes into its rules): an allow_from change of each mapping.
    let path = t.write_config(&config(OTHER_CLIENT));
    let plan = t.portmap(&["plan", "-c", path_str(&path), "--json"]).success().json();
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    let lists = plan["sources"].as_array().cloned().unwrap_or_default();
    if t.backend() == "nft" {
        assert!(changes.is_empty(), "a list change is no mapping change: {plan:#}");
        assert_eq!(lists.len(), 1, "{plan:#}");
        assert_eq!(lists[0]["name"], "office", "{plan:#}");
        assert_eq!(lists[0]["used_by"], serde_json::json!(["web", "ssh"]), "{plan:#}");
        let text = t.portmap(&["plan", "-c", path_str(&path)]).success().stdout.clone();
        assert!(text.contains("~ change source list office (used by web, ssh)"), "{text}");
        assert!(text.contains(&format!("+ {OTHER_CLIENT}/32")), "{text}");
        assert!(text.contains(&format!("- {CLIENT}/32")), "{text}");
        assert!(text.contains("1 source list to update"), "{text}");
    } else {
        assert!(lists.is_empty(), "{plan:#}");
        let names: Vec<&str> = changes.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["ssh", "web"], "{plan:#}");
    }
    let run = t.portmap(&["apply", "-c", path_str(&path), "--auto-approve", "--json"]).success().json();
    assert_eq!(run["changed"], true, "{run:#}");
    for port in [8080, 8081] {
        assert!(to(t, OTHER_CLIENT, port).is_ok(), "the new member was refused on {port}");
        assert!(to(t, CLIENT, port).is_err(), "the old member still got through on {port}");
    }
    t.plan_text().expect_code(0);
}
}
