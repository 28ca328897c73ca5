//! The trust promise, end to end in namespaces: portmap changes only what it created (its
//! marker), sees every kind of damage to its own rules as the kernel enforces it (`status`, `plan`)
//! and converges from it with one `apply`, binds saved plans to the namespace and generation they
//! were made for, and keeps working next to another program that writes the ruleset at the same
//! time. Every scenario here was reproduced from outside against an earlier portmap.
//!
//! The tests written `every_backend! { … }` run once per backend (nft, iptables-legacy,
//! iptables-nft), with the objects and damage made by hand in each backend's own tool by the kit;
//! the others are about nft's own objects (a dormant table, a table owned by another socket).

use std::sync::atomic::{AtomicBool, Ordering};

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, Damage, OTHER_CLIENT, Topology, config, require_root, status_mapping};

use crate::PORTMAP;

const SSH: &str = "
  - name: ssh
    protocol: tcp
    port: 2222
    to: 192.168.1.25
    to_port: 22
    allow_from: [203.0.113.2/32]
  - name: web
    protocol: tcp
    port: 8080
    to: 192.168.1.66
    to_port: 80
";

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "expected `{needle}` in:\n{haystack}");
    }
}

/// `portmap status --json` of the router.
fn status(t: &Topology) -> serde_json::Value {
    t.portmap(&["status", "--json"]).success().json()
}

/// After damage: `plan` shows drift (exit 2), one `apply` converges, and the plan is empty again.
/// Returns the plan's text.
#[track_caller]
fn converges(t: &Topology) -> String {
    let plan = t.plan_text();
    plan.expect_code(2);
    let path = t.dir.path().join(portmap_testkit::topology::CONFIG_FILE);
    t.portmap(&["apply", "-c", path_str(&path), "--auto-approve"])
        .success();
    t.plan_text().expect_code(0);
    plan.stdout.clone()
}

every_backend! {
/// Objects named as portmap names its own but made by another program (nft: a table `inet NAME`;
/// iptables: chains `PREFIX-…` in nat and filter, jumped to from the built-in chains), for the
/// default name and for one given with `--table`: apply, plan, status and destroy refuse them in
/// words and leave the kernel as it is.
fn a_table_portmap_did_not_create_is_never_changed_or_deleted(t) {
    t.load_unmarked("portmap");
    t.load_unmarked("fw");
    let before = t.kernel();
    let path = t.write_config(&config(SSH));
    let file = path_str(&path);
    for (name, table) in [("portmap", &[][..]), ("fw", &["--table", "fw"][..])] {
        for command in [
            &["apply", "-c", file, "--auto-approve"][..],
            &["plan", "-c", file],
            &["status"],
            &["destroy", "--auto-approve"],
        ] {
            let args = [table, command].concat();
            let run = t.portmap(&args);
            run.expect_code(1);
            let words = if t.is_nft() {
                format!("table inet {name} was not created by portmap")
            } else {
                "that portmap did not create".to_owned()
            };
            assert_contains(&run.stderr, &[words.as_str(), "--table"]);
            assert_eq!(t.kernel(), before, "{args:?} changed the kernel");
        }
    }
    // A name that does not exist yet is portmap's to create, and to destroy again.
    t.portmap(&["--table", "fw2", "apply", "-c", file, "--auto-approve"])
        .success();
    t.portmap(&["--table", "fw2", "destroy", "--auto-approve"])
        .success();
    assert_eq!(t.kernel(), before);
}
}

#[test]
fn a_dormant_table_is_seen_and_woken() {
    require_root!();
    let t = Topology::new(PORTMAP, "dormant");
    let _web = t.tcp_server("192.168.1.66:80");
    t.apply(&config(SSH)).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    t.router.nft_load("add table inet portmap { flags dormant; }\n");
    t.assert_tcp_blocked(CLIENT, 8080);
    let s = status(&t);
    assert_eq!(s["state"], "damaged", "{s:#}");
    assert!(s["reasons"].to_string().contains("dormant"), "{:#}", s["reasons"]);
    let plan = converges(&t);
    assert_contains(&plan, &["repair table inet portmap", "dormant"]);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
}

every_backend! {
/// The allow-list's accepts gone (nft: its set flushed; iptables: its ACCEPT rules deleted): the
/// kernel refuses every source, and status says so rather than show an open mapping.
fn a_flushed_allow_list_is_damage_not_an_open_mapping(t) {
    let ssh = t.tcp_server("192.168.1.25:22");
    t.apply(&config(SSH)).success();

    t.damage(Damage::AllowList {
        mapping: "ssh",
        port: 2222,
    });
    t.assert_tcp_blocked(CLIENT, 2222);
    let s = status(t);
    let m = status_mapping(&s, "ssh");
    assert_eq!(m["state"], "damaged", "{m:#}");
    assert!(
        m["damage"].to_string().contains("every source is refused"),
        "{m:#}"
    );
    let text = t.portmap(&["status"]).success().stdout.clone();
    assert_contains(&text, &["(damaged)", "every source is refused"]);

    let plan = converges(t);
    assert_contains(&plan, &["! ssh  damaged", "every source is refused"]);
    assert!(
        !plan.contains("allow_from: []"),
        "a flushed allow-list must not read as an allow_from change:\n{plan}"
    );
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    assert_eq!(ssh.seen().len(), 1);
}
}

every_backend! {
/// The allow-list's guard gone (nft: its guard element; iptables: its DROP rule): the port is open
/// to every source, status says exactly that, and apply closes it again.
fn a_deleted_guard_is_an_open_port_and_is_closed_again(t) {
    let ssh = t.tcp_server("192.168.1.25:22");
    t.apply(&config(SSH)).success();
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);

    t.damage(Damage::Guard(2222));
    // The kernel forwards the port to everyone now, and status says exactly that.
    t.assert_tcp(OTHER_CLIENT, 2222, "192.168.1.25:22");
    let s = status(t);
    let m = status_mapping(&s, "ssh");
    assert_eq!(m["state"], "damaged", "{m:#}");
    assert!(
        m["damage"]
            .to_string()
            .contains("tcp/2222 is not guarded by the allow-list: open to every source"),
        "{m:#}"
    );
    let text = t.portmap(&["status"]).success().stdout.clone();
    assert!(
        !text.contains("203.0.113.2/32"),
        "status must not print an allow-list the kernel does not enforce:\n{text}"
    );

    converges(t);
    t.assert_tcp_blocked(OTHER_CLIENT, 2222);
    t.assert_tcp(CLIENT, 2222, "192.168.1.25:22");
    assert_eq!(ssh.seen().len(), 2);
}
}

every_backend! {
fn a_saved_plan_applies_only_where_and_when_it_was_made(t) {
    let a = t;
    let b = Topology::new(PORTMAP, "plan-b").with_backend(a.backend());
    a.apply(&config("")).success();
    b.apply(&config("")).success();
    let path = a.write_config(&config(SSH));
    let plan_file = a.dir.path().join("change.plan");
    a.portmap(&["plan", "-c", path_str(&path), "--out", path_str(&plan_file)])
        .success();
    let text = std::fs::read_to_string(&plan_file).expect("plan file");

    // In another namespace it is refused, whatever its generation.
    let mut other: serde_json::Value = serde_json::from_str(&text).expect("json");
    let b_generation = b.portmap(&["status", "--json"]).success().json()["generation"].clone();
    other["generation"] = b_generation;
    let elsewhere = b.dir.write("elsewhere.plan", &other.to_string());
    let before_b = b.kernel();
    let run = b.portmap(&["apply", path_str(&elsewhere)]);
    run.expect_code(1);
    assert_contains(&run.stderr, &["this plan was made for network namespace"]);
    assert_eq!(b.kernel(), before_b);

    // Without a generation it is refused.
    let mut unbound: serde_json::Value = serde_json::from_str(&text).expect("json");
    unbound["generation"] = serde_json::Value::Null;
    let unbound_file = a.dir.write("unbound.plan", &unbound.to_string());
    let before_a = a.kernel();
    let run = a.portmap(&["apply", path_str(&unbound_file)]);
    run.expect_code(1);
    assert_contains(&run.stderr, &["generation"]);
    assert_eq!(a.kernel(), before_a);

    // A delete added by hand (of a mapping the kernel has but the desired state does not name) is
    // refused: the plan no longer is what its desired state calls for.
    a.damage(Damage::ExtraForward {
        mapping: "extra",
        port: 9000,
        to: "192.168.1.9:9000",
    });
    let path = a.write_config(&config(SSH));
    let honest = a.dir.path().join("honest.plan");
    a.portmap(&["plan", "-c", path_str(&path), "--out", path_str(&honest)])
        .success();
    let mut edited: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&honest).expect("plan")).expect("json");
    let changes = edited["changes"].as_array_mut().expect("changes");
    let before = changes.len();
    changes.retain(|c| c["action"] != "delete");
    assert_eq!(changes.len() + 1, before, "the honest plan deletes `extra`: {edited:#}");
    let edited_file = a.dir.write("edited.plan", &edited.to_string());
    let before_a2 = a.kernel();
    let run = a.portmap(&["apply", path_str(&edited_file)]);
    run.expect_code(1);
    assert_contains(&run.stderr, &["was the file edited"]);
    assert_eq!(a.kernel(), before_a2);
    assert_ne!(before_a, before_a2);

    // The honest plan applies, once.
    a.portmap(&["apply", path_str(&honest)]).success();
    let run = a.portmap(&["apply", path_str(&honest)]);
    run.expect_code(1);
    assert_contains(&run.stderr, &["changed the ruleset after this plan was made"]);
    a.plan_text().expect_code(0);
}
}

every_backend! {
/// Another program rewrites its own rules all the time (nft: its own table; iptables: its own
/// chain in filter, as kube-proxy does), and every apply and status still succeeds.
fn apply_and_status_keep_working_next_to_another_writer(t) {
    t.apply(&config(SSH)).success();
    let stop = AtomicBool::new(false);
    let router = &t.router;
    let variant = t.variant();
    // iptables has no transaction that spans portmap's read and its commit: a writer as busy as
    // the one nft is tested with (every 20 ms) wins every race, and apply gives up after three
    // tries in words; this one writes about as often as a busy kube-proxy.
    let pause = std::time::Duration::from_millis(if variant.is_some() { 150 } else { 20 });
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let host = n % 250 + 1;
                match variant {
                    None => router.nft_load(&format!(
                        "table ip other {{ set s {{ type ipv4_addr; }}; }}\nflush set ip other s\nadd element ip other s {{ 198.51.100.{host} }}\n"
                    )),
                    Some(variant) => portmap_testkit::iptables::restore(
                        router,
                        variant,
                        false,
                        &format!("*filter\n:OTHER - [0:0]\n-A OTHER -s 198.51.100.{host}/32 -j RETURN\nCOMMIT\n"),
                    ),
                }
                n += 1;
                std::thread::sleep(pause);
            }
            n
        });
        let mut failures = Vec::new();
        for i in 0..20u16 {
            let port = 8100 + i;
            let yaml = config(&format!(
                "{SSH}  - name: extra\n    port: {port}\n    to: 192.168.1.66\n    to_port: 80\n"
            ));
            let run = t.apply(&yaml);
            if !run.ok() {
                failures.push(format!("apply {i}: {run}"));
            }
            let run = t.portmap(&["status", "--json"]);
            if !run.ok() {
                failures.push(format!("status {i}: {run}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("writer");
        assert!(writes > 5, "the writer must have been busy ({writes} writes)");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
    t.plan_text().expect_code(0);
}
}

#[test]
fn a_table_owned_by_another_process_is_refused_in_words() {
    require_root!();
    let t = Topology::new(PORTMAP, "owned");
    // Another program holds a table of portmap's name through its own netlink socket
    // (NFT_TABLE_F_OWNER): every other process gets EPERM from the kernel.
    let netns = portmap_netlink::Netns::Named(t.router.name().to_owned());
    let mut socket = portmap_netlink::Socket::open(&netns).expect("socket");
    let mut batch = portmap_netlink::Batch::new();
    batch.add_table(&portmap_netlink::Table {
        family: portmap_netlink::Family::Inet,
        name: "portmap".into(),
        flags: 2,
        userdata: Some(portmap_netlink::udata::comment("managed by portmap")),
        handle: None,
        owner: None,
    });
    socket.send(&batch, None).expect("an owned table");
    let before = t.router_ruleset();
    let run = t.apply(&config(SSH));
    run.expect_code(1);
    assert_contains(&run.stderr, &["table inet portmap is owned by another process"]);
    assert!(!run.stderr.contains("CAP_NET_ADMIN"), "{run}");
    assert_eq!(t.router_ruleset(), before);
    // The table goes with its owner's socket; then portmap makes its own.
    // (The kernel may let go of it a moment after close returns.)
    drop(socket);
    assert!(
        portmap_testkit::topology::eventually(std::time::Duration::from_secs(5), || !t
            .router_ruleset()
            .contains("table inet portmap")),
        "the table outlived its owner's socket"
    );
    t.apply(&config(SSH)).success();
}
