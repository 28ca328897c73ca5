//! Large configurations, for correctness (speed is measured by `scripts/bench.sh`, not asserted here):
//! 50,000 mappings apply in one transaction and read back as an empty plan; a change in the middle
//! touches only that mapping's elements; `status --json` of 10,000 lists every mapping; a 10,000-
//! mapping file with one error reports exactly that error with its line.

use std::fmt::Write as _;

use portmap::{BackendKind, Mapping, Model, Netns, PortRange, Protocol, Session, Settings, plan};
use portmap_testkit::{Netns as TestNetns, TempDir, require_root};

use crate::PORTMAP;

/// `n` mappings: mostly single TCP ports, every 10th UDP, every 25th with an allow-list.
fn model(n: usize) -> Model {
    let mappings = (0..n)
        .map(|i| {
            let port = u16::try_from(1024 + i).expect("fits");
            Mapping {
                name: format!("m{i}"),
                protocol: if i % 10 == 3 { Protocol::Udp } else { Protocol::Tcp },
                port: PortRange::single(port),
                to: format!("192.168.{}.{}", 2 + i / 250 % 250, 2 + i % 250)
                    .parse()
                    .expect("address"),
                to_port: PortRange::single(port),
                allow_from: if i % 25 == 7 {
                    vec!["203.0.113.0/24".parse().expect("prefix")]
                } else {
                    Vec::new()
                },
                allow_sources: Vec::new(),
                allow_inline: Vec::new(),
                description: None,
                log: None,
                limit: None,
                expires: None,
                listen: Vec::new(),
            }
        })
        .collect();
    Model {
        sources: std::collections::BTreeMap::new(),
        settings: Settings {
            wan_interfaces: vec!["wan0".into()],
            lan_interfaces: vec!["lan0".into()],
            masquerade: false,
            hairpin: true,
        },
        mappings,
        disabled: Vec::new(),
    }
}

fn yaml(model: &Model) -> String {
    let mut y = String::from("wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmappings:\n");
    for m in &model.mappings {
        let _ = writeln!(
            y,
            "  - name: {}\n    protocol: {}\n    port: {}\n    to: {}",
            m.name, m.protocol, m.port, m.to
        );
        if !m.allow_from.is_empty() {
            let _ = writeln!(y, "    allow_from: [{}]", m.allow_from[0]);
        }
    }
    y
}

#[test]
fn fifty_thousand_mappings_apply_read_back_and_change_in_place() {
    require_root!();
    let ns = TestNetns::with_links("scale50k", &["wan0", "lan0"]);
    let mut backend =
        Session::open(BackendKind::Nft, &Netns::Named(ns.name().to_owned()), "portmap").expect("open");
    let big = model(50_000);
    let outcome = backend
        .converge(&big)
        .expect("50k mappings apply (batch split under the 64 KB limit)");
    assert!(outcome.report.objects > 50_000, "{:?}", outcome.report);
    assert!(
        plan(&big, &backend.observe().expect("observe")).is_empty(),
        "a second plan is empty"
    );

    // Retarget one mapping in the middle: only its element is deleted and re-added, and the old
    // forward is recorded as a pending conntrack cleanup in the same transaction.
    let mut changed = big.clone();
    changed.mappings[25_000].to = "192.168.250.250".parse().expect("address");
    let outcome = backend.converge(&changed).expect("change");
    assert_eq!(outcome.plan.changes.len(), 1);
    assert_eq!(outcome.report.objects, 3, "{:?}", outcome.report);
    assert_eq!(outcome.report.messages, 3, "{:?}", outcome.report);
    assert!(!outcome.report.rebuilt);
    assert!(plan(&changed, &backend.observe().expect("observe")).is_empty());
}

#[test]
fn status_json_of_ten_thousand_is_complete() {
    require_root!();
    let ns = TestNetns::with_links("scale10k", &["wan0", "lan0"]);
    let dir = TempDir::new("scale10k");
    let ten = model(10_000);
    let path = dir.write("portmap.yaml", &yaml(&ten));
    let path = portmap_testkit::topology::path_str(&path);
    PORTMAP
        .run(&["--netns", ns.name(), "apply", "-c", path, "--auto-approve"])
        .success();
    let status = PORTMAP.run(&["--netns", ns.name(), "status", "--json"]);
    status.success();
    let json = status.json();
    let mappings = json["mappings"].as_array().expect("mappings");
    assert_eq!(mappings.len(), 10_000);
    let names: std::collections::HashSet<&str> = mappings.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names.len(), 10_000);
    assert!(names.contains("m0") && names.contains("m9999"));
    PORTMAP
        .run(&["--netns", ns.name(), "plan", "-c", path, "--detailed-exitcode"])
        .expect_code(0);
}

#[test]
fn one_error_in_ten_thousand_mappings_is_reported_alone_with_its_line() {
    let text = yaml(&model(10_000));
    // Break mapping 7777's port.
    let needle = "  - name: m7777\n    protocol: tcp\n    port: 8801\n";
    assert!(text.contains(needle), "generator changed");
    let broken = text.replace(needle, "  - name: m7777\n    protocol: tcp\n    port: 0\n");
    let line = broken[..broken.find("port: 0").expect("inserted")]
        .lines()
        .count();
    let errors = ::portmap::load_str(&broken, "big.yaml").expect_err("one error");
    assert_eq!(errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!("big.yaml:{line}:11: mappings[7777].port: port 0")),
        "{text}"
    );
}
