//! Conformance: the two independent paths to portmap's table build the same ruleset.
//!
//! Path A: `portmap apply` (netlink batches from portmap-netlink) in namespace A.
//! Path B: `portmap render -c F | nft -f -` (nft's own parser and encoder) in namespace B.
//! `nft list table inet portmap` of both, with counters and handles stripped, must be equal, and
//! portmap must see B's table as its own (an empty plan). Named snapshots record the layout per fixture
//! for review.

use std::path::{Path, PathBuf};

use portmap_testkit::topology::path_str;
use portmap_testkit::{Netns, fixture, nft_list, normalize, require_root};

use crate::PORTMAP;

/// Interface names a config's `interfaces:` lists mention (flow `[a, b]` or block `- a` lists), so the
/// scratch namespaces have those links.
fn interface_names(yaml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_block = false;
    for line in yaml.lines() {
        let code = line.split('#').next().unwrap_or_default().trim();
        if let Some(at) = code.find("interfaces:") {
            let rest = code[at + "interfaces:".len()..].trim();
            if let Some(list) = rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(l, _)| l)
            {
                names.extend(
                    list.split(',')
                        .map(|n| n.trim().trim_matches(['"', '\'']).to_owned()),
                );
                in_block = false;
            } else {
                in_block = rest.is_empty();
            }
        } else if in_block && let Some(item) = code.strip_prefix("- ") {
            names.push(item.trim().trim_matches(['"', '\'']).to_owned());
        } else {
            in_block = false;
        }
    }
    names.retain(|n| !n.is_empty() && n.len() <= 15);
    names.sort();
    names.dedup();
    if names.is_empty() {
        names = vec!["wan0".to_owned(), "lan0".to_owned()];
    }
    names
}

fn scratch_router(tag: &str, yaml: &str) -> Netns {
    let links = interface_names(yaml);
    let links: Vec<&str> = links.iter().map(String::as_str).collect();
    Netns::with_links(tag, &links)
}

/// Apply in A, render + `nft -f` in B; return the normalised listing (equal in both).
#[track_caller]
fn same_table_both_ways(config: &Path) -> String {
    let yaml = std::fs::read_to_string(config).unwrap_or_else(|e| panic!("read {}: {e}", config.display()));
    let file = path_str(config);
    let a = scratch_router("conf-a", &yaml);
    let b = scratch_router("conf-b", &yaml);

    PORTMAP
        .run(&["--netns", a.name(), "apply", "-c", file, "--auto-approve"])
        .success();
    let applied = normalize(&nft_list(&a, "inet portmap").expect("apply built inet portmap in A"));

    let render = PORTMAP.run(&["--netns", b.name(), "render", "-c", file]);
    render.success();
    let loaded = b.exec_with_stdin("nft", &["-f", "-"], Some(&render.stdout));
    assert!(
        loaded.ok(),
        "nft -f refuses the rendered script\n{loaded}\n--- script ---\n{}",
        render.stdout
    );
    let rendered = normalize(&nft_list(&b, "inet portmap").expect("nft -f built inet portmap in B"));

    assert_eq!(
        applied, rendered,
        "{file}: the table apply built (left) differs from the one nft -f built from render (right)"
    );

    // portmap reads nft's table back as exactly what the config asks for.
    let plan = PORTMAP.run(&["--netns", b.name(), "plan", "-c", file, "--detailed-exitcode"]);
    assert_eq!(
        plan.code, 0,
        "{file}: portmap does not recognise the table nft -f built from render\n{plan}"
    );
    // And applying over it changes nothing.
    PORTMAP
        .run(&["--netns", b.name(), "apply", "-c", file, "--auto-approve"])
        .success();
    assert_eq!(
        normalize(&nft_list(&b, "inet portmap").expect("still there")),
        rendered
    );
    applied
}

/// `examples/home-router.yaml` when it exists, else the stand-in fixture.
fn home_router() -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/home-router.yaml");
    if example.exists() {
        example
    } else {
        fixture("home-router.yaml")
    }
}

#[test]
fn home_router_example() {
    require_root!();
    let path = home_router();
    eprintln!("conformance of {}", path.display());
    same_table_both_ways(&path);
}

#[test]
fn dual_stack_example() {
    require_root!();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dual-stack.yaml");
    let table = same_table_both_ways(&path);
    assert!(table.contains("map dnat6 {"), "{table}");
}

#[test]
fn home_router_fixture() {
    require_root!();
    let table = same_table_both_ways(&fixture("home-router.yaml"));
    // The disabled mapping is not in the kernel.
    assert!(!table.contains("old-camera"), "{table}");
}

#[test]
fn allow_lists() {
    require_root!();
    let table = same_table_both_ways(&fixture("allow-lists.yaml"));
    for name in ["ssh", "vnc", "voip"] {
        assert!(
            table.contains(&format!("chain allow_{name} {{")),
            "no allow chain for {name}:\n{table}"
        );
        assert!(
            table.contains(&format!("set allow_{name}_src {{")),
            "no allow set for {name}:\n{table}"
        );
    }
    assert!(
        !table.contains("allow_web"),
        "an open mapping needs no allow-list:\n{table}"
    );
}

#[test]
fn ranges() {
    require_root!();
    let table = same_table_both_ways(&fixture("ranges.yaml"));
    // One element per port.
    for (port, to_port) in (6000..=6002).zip(7000..=7002) {
        assert!(
            table.contains(&format!(
                "tcp . {port} comment \"offset\" : 192.168.1.70 . {to_port}"
            )),
            "{table}"
        );
    }
    for port in 9000..=9009 {
        assert!(
            table.contains(&format!("tcp . {port} comment \"same\" : 192.168.1.71 . {port}")),
            "{table}"
        );
    }
}

#[test]
fn both_protocols() {
    require_root!();
    let table = same_table_both_ways(&fixture("both.yaml"));
    for proto in ["tcp", "udp"] {
        assert!(table.contains(&format!("{proto} . 53 ")), "{table}");
        assert!(table.contains(&format!("{proto} . 27016 ")), "{table}");
    }
    assert!(!table.contains("tcp . 514 "), "syslog is UDP only:\n{table}");
}

#[test]
fn masquerade_and_hairpin() {
    require_root!();
    let table = same_table_both_ways(&fixture("masquerade.yaml"));
    assert!(table.contains("meta nfproto ipv4 masquerade"), "{table}");
    assert!(table.contains("ct status dnat masquerade"), "{table}");
    assert!(table.contains("chain output {"), "{table}");
}

#[test]
fn ipv6_and_dual_stack() {
    require_root!();
    let table = same_table_both_ways(&fixture("ipv6.yaml"));
    // The dual-stack pair: tcp 80 in both maps, each to its own target.
    assert!(
        table.contains(r#"tcp . 80 comment "web: web server" : 192.168.1.66 . 80"#),
        "{table}"
    );
    assert!(
        table.contains(r#"tcp . 80 comment "web6: web server over IPv6" : 2001:db8:2::66 . 80"#),
        "{table}"
    );
    for proto in ["tcp", "udp"] {
        for (port, to_port) in (6000..=6002).zip(7000..=7002) {
            assert!(
                table.contains(&format!(
                    "{proto} . {port} comment \"game6\" : 2001:db8:2::70 . {to_port}"
                )),
                "{table}"
            );
        }
    }
    assert!(table.contains("ip6 saddr != @allow_game6_src drop"), "{table}");
    assert!(table.contains("ip saddr != @allow_ssh_src drop"), "{table}");
    // Adjacent hosts merge into one prefix in the kernel too.
    assert!(table.contains("2001:db8:1::2/127"), "{table}");
}

/// Mappings that expire (an hour ahead, with an allow-list, a limit, logging and a listen
/// address; one whose moment has passed): apply and `render | nft -f` build the same table, with
/// every element of the live one timed out and its counters recording the moment.
#[test]
fn expiring_mappings() {
    require_root!();
    let at = portmap::UtcTime::from_unix_seconds(portmap::UtcTime::now().unix_seconds() + 3600);
    let dir = std::env::temp_dir().join(format!("portmap-conformance-expires-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join("expires.yaml");
    std::fs::write(
        &path,
        format!(
            "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nmappings:\n\
             \x20 - {{ name: web, port: 8080, to: 192.168.1.66, to_port: 80, allow_from: [203.0.113.0/24], \
             limit: 20/second, log: true, expires: {at} }}\n\
             \x20 - {{ name: game, protocol: both, port: 6000-6001, to: 192.168.1.70, listen: [198.51.100.5], \
             expires: {at} }}\n\
             \x20 - {{ name: gone, port: 2222, to: 192.168.1.25, expires: 2020-01-01T00:00:00Z }}\n\
             \x20 - {{ name: ssh, port: 2223, to: 192.168.1.25 }}\n"
        ),
    )
    .expect("write config");
    let table = same_table_both_ways(&path);
    let _ = std::fs::remove_dir_all(&dir);
    for line in [
        r#"tcp . 8080 timeout T expires E comment "web" : 192.168.1.66 . 80"#,
        r#"tcp . 8080 timeout T expires E comment "web" : jump allow_web"#,
        r#"tcp . 8080 timeout T expires E : "limit_web""#,
        "tcp . 8080 timeout T expires E : jump log_web",
        r#"198.51.100.5 . udp . 6001 timeout T expires E comment "game" : 192.168.1.70 . 6001"#,
        r#"198.51.100.5 . tcp . 6000 timeout T expires E : "traffic_game""#,
        &format!(r#"comment "expires {at}""#),
        r#"tcp . 2223 comment "ssh" : 192.168.1.25 . 2223"#,
    ] {
        assert!(table.contains(line), "missing `{line}` in\n{table}");
    }
    assert!(
        !table.contains("gone"),
        "an expired mapping is not installed\n{table}"
    );
}

#[test]
fn listen_addresses() {
    require_root!();
    let table = same_table_both_ways(&fixture("listen.yaml"));
    for line in [
        r#"203.0.113.1 . tcp . 8080 comment "web-a" : 192.168.1.66 . 80"#,
        r#"203.0.113.10 . tcp . 8080 comment "web-b" : 192.168.1.25 . 80"#,
        r#"203.0.113.11 . tcp . 8080 comment "web-b" : 192.168.1.25 . 80"#,
        r#"203.0.113.10 . udp . 6001 comment "game" : 192.168.1.70 . 7001"#,
        r#"2001:db8:1::1 . tcp . 8080 comment "web6" : 2001:db8:2::66 . 80"#,
        r#"203.0.113.1 . tcp . 8080 comment "web-a" : jump allow_web-a"#,
        "203.0.113.1 . tcp . 8080 : jump log_web-a",
        r#"203.0.113.11 . tcp . 8080 : "limit_web-b""#,
        r#"tcp . 2222 comment "ssh" : 192.168.1.25 . 22"#,
        "ip daddr . meta l4proto . th dport map @dnat4_addr",
        "ct original ip daddr . meta l4proto . ct original proto-dst map @traffic4_addr",
        "ct original ip6 daddr . meta l4proto . ct original proto-dst vmap @log6_addr",
    ] {
        assert!(table.contains(line), "missing `{line}` in\n{table}");
    }
}

/// The kernel layout per fixture, for review (`cargo insta review`). Separate from the equality tests
/// above so a layout change shows up as a snapshot diff, not as a conformance failure.
fn layout(fixture_file: &str) -> String {
    let path = fixture(fixture_file);
    let yaml = std::fs::read_to_string(&path).expect("fixture");
    let ns = scratch_router("layout", &yaml);
    PORTMAP
        .run(&[
            "--netns",
            ns.name(),
            "apply",
            "-c",
            path_str(&path),
            "--auto-approve",
        ])
        .success();
    normalize(&nft_list(&ns, "inet portmap").expect("table exists"))
}

#[test]
fn layout_home_router() {
    require_root!();
    insta::assert_snapshot!("layout_home_router", layout("home-router.yaml"));
}

#[test]
fn layout_allow_lists() {
    require_root!();
    insta::assert_snapshot!("layout_allow_lists", layout("allow-lists.yaml"));
}

#[test]
fn layout_ranges() {
    require_root!();
    insta::assert_snapshot!("layout_ranges", layout("ranges.yaml"));
}

#[test]
fn layout_both() {
    require_root!();
    insta::assert_snapshot!("layout_both", layout("both.yaml"));
}

#[test]
fn layout_ipv6() {
    require_root!();
    insta::assert_snapshot!("layout_ipv6", layout("ipv6.yaml"));
}

#[test]
fn layout_listen() {
    require_root!();
    insta::assert_snapshot!("layout_listen", layout("listen.yaml"));
}

#[test]
fn interface_names_are_read_from_flow_and_block_lists() {
    let yaml = "wan:\n  interfaces: [eth0, \"ppp0\"]  # up\nlan:\n  interfaces:\n    - br-lan\n    - eth1\nhairpin: true\n";
    assert_eq!(interface_names(yaml), ["br-lan", "eth0", "eth1", "ppp0"]);
    let flow = "wan: { interfaces: [wan1] }  # x\nlan: {interfaces: [br0, lan2]}\n";
    assert_eq!(interface_names(flow), ["br0", "lan2", "wan1"]);
    assert_eq!(interface_names("mappings: []\n"), ["wan0", "lan0"]);
}
