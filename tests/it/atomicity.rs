//! Atomicity through the library API: a plan whose nft batch the kernel rejects part-way leaves the
//! kernel exactly as it was (every earlier message in the batch is rolled back), and the error names
//! the failing message. A saved plan made before the ruleset changed is refused whole, with every
//! backend. What iptables makes of atomicity (a commit per table, ordered so every state in
//! between is safe, and a failed second commit) is tested in `iptables.rs`.

use portmap::{
    ApplyOptions, BackendKind, Mapping, Model, Netns, PortRange, Protocol, Session, Settings, TableState,
    plan,
};
use portmap_testkit::topology::path_str;
use portmap_testkit::{Netns as TestNetns, require_root};

fn mapping(name: &str, port: u16, to: &str, allow: &[&str]) -> Mapping {
    Mapping {
        name: name.to_owned(),
        protocol: Protocol::Tcp,
        port: PortRange::single(port),
        to: to.parse().expect("address"),
        to_port: PortRange::single(port),
        allow_from: allow.iter().map(|a| a.parse().expect("prefix")).collect(),
        allow_sources: Vec::new(),
        allow_inline: Vec::new(),
        listen: Vec::new(),
        description: None,
        log: None,
        limit: None,
        expires: None,
    }
}

fn model(mappings: Vec<Mapping>) -> Model {
    Model {
        sources: std::collections::BTreeMap::new(),
        settings: Settings {
            wan_interfaces: vec!["wan0".into()],
            lan_interfaces: vec!["lan0".into()],
            masquerade: false,
            hairpin: false,
        },
        mappings,
        disabled: Vec::new(),
    }
}

fn ruleset(ns: &TestNetns) -> String {
    let run = ns.nft(&["-a", "list", "ruleset"]);
    assert!(run.ok(), "{run}");
    run.stdout
}

#[test]
fn a_batch_rejected_part_way_changes_nothing() {
    require_root!();
    let ns = TestNetns::with_links("atomic", &["wan0", "lan0"]);
    ns.nft_load("table ip foreign {\n set s { type ipv4_addr; elements = { 198.51.100.1 }; }\n}\n");
    let mut backend =
        Session::open(BackendKind::Nft, &Netns::Named(ns.name().to_owned()), "portmap").expect("open");
    let first = model(vec![
        mapping("web", 8080, "192.168.1.66", &[]),
        mapping("mail", 25, "192.168.1.25", &["203.0.113.0/24"]),
    ]);
    backend.converge(&first).expect("first apply");
    let before = ruleset(&ns);

    // A plan made from a stale view that does not know `web` exists: it creates `aaa` (an allow-list:
    // set, chain, rule, guard and DNAT elements — several messages that the kernel accepts), adds an
    // interface, and then creates `web` again, whose DNAT element already exists (EEXIST).
    let mut observed = backend.observe().expect("observe");
    assert_eq!(observed.state, TableState::Intact);
    observed.mappings.retain(|m| m.name != "web");
    let mut wanted = first.clone();
    wanted.settings.wan_interfaces.push("wan9".into());
    wanted
        .mappings
        .push(mapping("aaa", 9000, "192.168.1.70", &["192.0.2.0/24"]));
    let p = plan(&wanted, &observed);
    assert_eq!(p.changes.len(), 2, "{p:?}");

    let err = backend
        .apply(&p, &ApplyOptions::default())
        .expect_err("the kernel must reject the batch");
    // The whole chain of causes, as the CLI prints it.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("rejected as expected: {text}");
    assert!(
        text.contains("creating mapping web"),
        "error names the change: {text}"
    );
    assert!(
        text.contains("add element") && text.contains("dnat4"),
        "error names the message: {text}"
    );
    assert!(
        text.contains("File exists") || text.contains("os error 17"),
        "error gives the errno: {text}"
    );
    assert_eq!(
        ruleset(&ns),
        before,
        "a rejected batch must leave the ruleset exactly as it was"
    );
    assert!(portmap::plan(&first, &backend.observe().expect("observe")).is_empty());
}

every_backend! {
/// Another program changes the rules (not portmap's) after the plan was made: the plan is refused
/// whole, and a fresh one applies.
fn a_saved_plan_is_refused_after_the_ruleset_changed(t) {
    let mut backend = Session::open(
        BackendKind::from_name(t.backend()).expect("a backend name"),
        &Netns::Named(t.router.name().to_owned()),
        "portmap",
    )
    .expect("open");
    let wanted = model(vec![mapping("web", 8080, "192.168.1.66", &[])]);
    let saved = plan(&wanted, &backend.observe().expect("observe"));
    t.load_foreign();
    let before = t.kernel();
    let err = backend
        .apply(&saved, &ApplyOptions::default())
        .expect_err("a stale plan must be refused");
    assert!(
        err.to_string()
            .contains("changed the ruleset after this plan was made"),
        "{err}"
    );
    assert_eq!(t.kernel(), before);
    // A fresh plan applies.
    backend.converge(&wanted).expect("fresh apply");
    assert!(t.owned().is_some());
}
}

every_backend! {
/// A commit nobody overtook is verified by the ruleset generation where the backend has one that
/// is cheap to read (nft): the kernel is read once, to plan. `--verify read-back` reads it again
/// and requires an empty plan; iptables always reads back. Either way the forward works and a
/// fresh plan is empty.
fn a_commit_is_verified_by_its_generation_or_read_back(t) {
    let reads = |run: &portmap_testkit::Run| run.stderr.matches("observed the kernel").count();
    let _web = t.tcp_server("192.168.1.66:80");
    let first = t.write_config(&portmap_testkit::config(
        "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }",
    ));
    let run = t.portmap(&["-v", "apply", "-c", path_str(&first), "--auto-approve"]);
    run.success();
    assert_eq!(reads(&run), if t.is_nft() { 1 } else { 2 }, "{run}");
    t.plan_text().expect_code(0);
    t.assert_tcp(portmap_testkit::CLIENT, 8080, "192.168.1.66:80");

    let moved = t.write_config(&portmap_testkit::config(
        "  - { name: web, port: 8081, to: 192.168.1.66, to_port: 80 }",
    ));
    let args = ["-v", "apply", "-c", path_str(&moved), "--auto-approve", "--verify", "read-back"];
    let run = t.portmap(&args);
    run.success();
    assert_eq!(reads(&run), 2, "{run}");
    t.plan_text().expect_code(0);
    t.assert_tcp(portmap_testkit::CLIENT, 8081, "192.168.1.66:80");

    let before = t.kernel();
    let run = t.portmap(&["apply", "-c", path_str(&first), "--auto-approve", "--verify", "maybe"]);
    assert!(!run.ok() && run.stderr.contains("read-back"), "{run}");
    assert_eq!(t.kernel(), before, "a refused option changes nothing");
}
}
