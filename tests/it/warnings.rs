//! Coexistence warnings: another table's dropping forward chain, forwarding disabled, a missing
//! interface. They name what they found, go to standard error and into the JSON plan, and never block.
//! Forwarding and interfaces are checked for every backend; what the iptables backend finds in
//! the other variant and in native nftables chains is tested in `iptables.rs`.

use portmap_testkit::{Netns, TempDir, require_root};

use crate::PORTMAP;

const CONFIG: &str = "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\n\
                      mappings:\n  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n";

fn router(tag: &str) -> Netns {
    let ns = Netns::with_links(tag, &["wan0", "lan0"]);
    ns.sysctl("net.ipv4.ip_forward=1");
    ns
}

fn warnings_of(ns: &Netns, config: &str) -> (String, Vec<String>) {
    let dir = TempDir::new("warn");
    let path = dir.write("portmap.yaml", config);
    let path = portmap_testkit::topology::path_str(&path);
    let text = PORTMAP.run(&["--netns", ns.name(), "plan", "-c", path]);
    text.success();
    let json = PORTMAP.run(&["--netns", ns.name(), "plan", "-c", path, "--json"]);
    json.success();
    let list = json.json()["warnings"]
        .as_array()
        .expect("warnings array")
        .iter()
        .map(|w| w.as_str().expect("string").to_owned())
        .collect();
    assert!(
        !text.stdout.contains("Warnings:"),
        "warnings go to stderr, not stdout:\n{text}"
    );
    (text.stderr.clone(), list)
}

#[test]
fn a_dropping_forward_chain_elsewhere_is_named() {
    require_root!();
    let ns = router("warn-drop");
    ns.nft_load(
        "table inet filter {\n chain forward { type filter hook forward priority 0; policy drop;\n  ct state established,related accept\n }\n}\n\
         table ip friendly {\n chain fwd_in { type filter hook forward priority 10; policy drop;\n  ct status dnat accept\n }\n}\n\
         table ip strict {\n chain fwd_in { type filter hook forward priority 20; policy accept;\n  counter drop\n }\n}\n",
    );
    let (stderr, list) = warnings_of(&ns, CONFIG);
    assert!(
        stderr.contains("table inet filter, chain forward has policy drop"),
        "{stderr}"
    );
    assert!(
        stderr.contains("table ip strict, chain fwd_in ends in a drop rule"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("friendly"),
        "a chain that accepts ct status dnat is fine: {stderr}"
    );
    assert_eq!(list.len(), 2, "{list:?}");
    // Warnings never block: apply goes ahead.
    let dir = TempDir::new("warn-apply");
    let path = dir.write("portmap.yaml", CONFIG);
    let run = PORTMAP.run(&[
        "--netns",
        ns.name(),
        "apply",
        "-c",
        portmap_testkit::topology::path_str(&path),
        "--auto-approve",
    ]);
    run.success();
    assert!(
        run.stderr.contains("table inet filter, chain forward"),
        "apply warns too: {run}"
    );
}

every_backend! {
/// What each backend reads around its rules (forwarding switches, interfaces) is named the same
/// way.
fn disabled_forwarding_and_missing_interfaces_are_named(t) {
    let warnings = |config: &str| {
        t.write_config(config);
        let text = t.plan_text();
        text.expect_code(2);
        assert!(!text.stdout.contains("Warnings:"), "warnings go to stderr, not stdout:\n{text}");
        let json = t.plan_json().json();
        let list: Vec<String> = json["warnings"]
            .as_array()
            .expect("warnings array")
            .iter()
            .map(|w| w.as_str().expect("string").to_owned())
            .collect();
        (text.stderr.clone(), list)
    };
    let (stderr, list) = warnings(CONFIG);
    assert!(list.is_empty(), "nothing to warn about: {list:?}\n{stderr}");

    t.router.sysctl("net.ipv4.ip_forward=0");
    let (stderr, list) = warnings(&CONFIG.replace("[lan0]", "[lan0, lan9]"));
    assert!(
        stderr.contains("IPv4 forwarding is disabled (net.ipv4.ip_forward = 0)"),
        "{stderr}"
    );
    assert!(stderr.contains("lan interface lan9 does not exist"), "{stderr}");
    assert_eq!(list.len(), 2, "{list:?}");
}
}
