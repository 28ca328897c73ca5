//! The nft backend's memo (`crates/portmap-nft/src/memo.rs`): an apply plans from what portmap
//! last read or wrote when the kernel shows nothing changed since. That is only sound if the memo
//! says exactly what a read of the table says, so these tests compare the two on a real table
//! after every kind of commit (a build, a delta with cleanups, a repair), with every feature in
//! the configuration — and check that every change the memo cannot see coming (another writer,
//! a changed LAN address, a table rebuilt by someone else, a configuration the memo was not for)
//! makes it step aside.

use portmap::{BackendKind, Backends, Netns, Observed, RunDir, Session};
use portmap_testkit::{TempDir, Topology, require_root};

use crate::PORTMAP;

/// Every feature the table can hold: tcp, udp, both, ranges (plain and offset), allow-lists of
/// prefixes and of named lists (IPv4 and IPv6), listen addresses, a limit, logging, a
/// description, an IPv6 target, a disabled mapping.
const RICH: &str = "\
wan: { interfaces: [wan0] }
lan: { interfaces: [lan0] }
sources:
  office: [198.51.100.0/24, 2001:db8:7::/48]
mappings:
  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, description: \"the web server\" }
  - { name: dns, protocol: udp, port: 5353, to: 192.168.1.70, to_port: 53 }
  - { name: game, protocol: both, port: \"27015-27017\", to: 192.168.1.80 }
  - { name: shifted, port: \"6000-6002\", to: 192.168.1.81, to_port: \"7000-7002\" }
  - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22, allow_from: [office, 203.0.113.7] }
  - { name: listened, port: 8081, to: 192.168.1.67, to_port: 80, listen: [198.51.100.1] }
  - { name: capped, port: 9000, to: 192.168.1.68, limit: \"20/second burst 40\", log: true }
  - { name: six, port: 8443, to: \"2001:db8:1::66\", to_port: 443, allow_from: [\"2001:db8:9::/48\"] }
  - { name: off, port: 9999, to: 192.168.1.99, enabled: false }
";

fn model(yaml: &str) -> portmap::Model {
    portmap::load_str(yaml, "memo-test").expect("a valid configuration")
}

fn session(t: &Topology, run_dir: &TempDir) -> Session<Backends> {
    Session::open_with_memo(
        BackendKind::Nft,
        &Netns::Named(t.router.name().to_owned()),
        "portmap",
        &RunDir::new(run_dir.path()),
    )
    .expect("open the nft backend")
}

/// What the memo of `s`'s table says, if it holds.
fn recall(s: &mut Session<Backends>) -> Option<Observed> {
    match s.backend() {
        Backends::Nft(b) => b.recall().expect("recall"),
        other => panic!("not the nft backend: {other:?}"),
    }
}

/// An observation without what the memo deliberately does not hold (counters, flows).
fn without_counters(mut o: Observed) -> Observed {
    // The moment of the observation is when it was made, not part of the table.
    o.observed_at = None;
    for m in &mut o.mappings {
        m.counters = None;
        m.active_flows = None;
    }
    o
}

/// The memo holds and says exactly what a read says.
#[track_caller]
fn assert_memo_is_the_kernel(s: &mut Session<Backends>, when: &str) {
    let remembered = without_counters(recall(s).unwrap_or_else(|| panic!("{when}: the memo does not hold")));
    let read = without_counters(s.observe().expect("observe"));
    assert_eq!(
        remembered, read,
        "{when}: the memo differs from a read of the table"
    );
}

#[test]
fn the_memo_says_what_a_read_of_the_table_says_after_every_kind_of_commit() {
    require_root!();
    let t = Topology::new(PORTMAP, "memo-same");
    t.router
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "wan0"])
        .success();
    let run_dir = TempDir::new("memo-same");

    // A build from nothing.
    let rich = model(RICH);
    session(&t, &run_dir).converge(&rich).expect("build");
    assert_memo_is_the_kernel(&mut session(&t, &run_dir), "after a build");

    // A delta with cleanups recorded and forgotten: a retarget, a removal, an addition, a new
    // member of a named list, an allow-list gained, a listen address moved.
    let changed = model(
        &(RICH
            .replace(
                "192.168.1.66, to_port: 80, description",
                "192.168.1.65, to_port: 80, description",
            )
            .replace(
                "  - { name: dns, protocol: udp, port: 5353, to: 192.168.1.70, to_port: 53 }\n",
                "",
            )
            .replace(
                "[198.51.100.0/24, 2001:db8:7::/48]",
                "[198.51.100.0/24, 192.0.2.0/25, 2001:db8:7::/48]",
            )
            .replace("to: 192.168.1.80 }", "to: 192.168.1.80, allow_from: [office] }")
            + "  - { name: new, port: 10000, to: 192.168.1.90 }\n"),
    );
    let mut s = session(&t, &run_dir);
    let outcome = s.converge(&changed).expect("delta");
    assert!(!outcome.report.rebuilt, "a delta, not a rebuild");
    assert_memo_is_the_kernel(&mut session(&t, &run_dir), "after a delta");

    // Planning from the memo gives the plan a read gives, for a configuration it was not for.
    let mut s = session(&t, &run_dir);
    let from_memo = portmap::plan(&rich, &recall(&mut s).expect("the memo holds"));
    let from_read = portmap::plan(&rich, &s.observe().expect("observe"));
    assert!(from_memo.same_changes(&from_read), "{from_memo:?}\n{from_read:?}");

    // A repair: another program deletes an element; the memo steps aside, the apply reads and
    // repairs, and the memo then holds again.
    t.router
        .exec(
            "nft",
            &["delete", "element", "inet", "portmap", "dnat4", "{ tcp . 8080 }"],
        )
        .success();
    let mut s = session(&t, &run_dir);
    assert!(recall(&mut s).is_none(), "another writer moved the generation");
    s.converge(&changed).expect("repair");
    assert_memo_is_the_kernel(&mut session(&t, &run_dir), "after a repair");
}

#[test]
fn the_memo_steps_aside_for_every_change_it_cannot_see() {
    require_root!();
    let t = Topology::new(PORTMAP, "memo-aside");
    let run_dir = TempDir::new("memo-aside");
    let web = model(
        "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmappings:\n  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n",
    );
    session(&t, &run_dir).converge(&web).expect("build");
    assert!(
        recall(&mut session(&t, &run_dir)).is_some(),
        "the memo holds after a build"
    );

    // Another table changes: the ruleset's generation moves.
    t.router.exec("nft", &["add", "table", "ip", "other"]).success();
    assert!(
        recall(&mut session(&t, &run_dir)).is_none(),
        "after another table changed"
    );
    // A read (to plan) writes the memo again.
    let mut s = session(&t, &run_dir);
    assert!(s.converge(&web).expect("nothing to do").plan.is_empty());
    assert!(recall(&mut session(&t, &run_dir)).is_some(), "after a read");

    // A LAN address changes (no nftables transaction): the table's lan_side set is stale.
    t.router
        .ip(&["addr", "add", "192.168.1.2/24", "dev", "lan0"])
        .success();
    let mut s = session(&t, &run_dir);
    assert!(recall(&mut s).is_none(), "after a LAN address changed");
    let plan = portmap::plan(&web, &s.observe_to_plan().expect("observe"));
    assert!(
        plan.changes_kernel(),
        "the read sees the stale LAN side: {plan:?}"
    );
    s.converge(&web).expect("rebuilt for the new address");
    assert!(recall(&mut session(&t, &run_dir)).is_some());

    // Another namespace has a memo file of its own; and one that gets this namespace's file
    // (as a new namespace does when the kernel gives it a gone one's inode number) does not take
    // it for its own: the stamp's cookie differs.
    let other = Topology::new(PORTMAP, "memo-other");
    let mut elsewhere = session(&other, &run_dir);
    assert!(
        recall(&mut elsewhere).is_none(),
        "another namespace has its own memo"
    );
    let inode = |t: &Topology| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", t.router.name()))
            .expect("netns file")
            .ino()
    };
    let file = |t: &Topology| {
        run_dir
            .path()
            .join(format!("memo-nft-{}-inet-portmap.json", inode(t)))
    };
    assert!(
        file(&t).exists(),
        "the memo is named by the namespace's inode number"
    );
    session(&other, &run_dir).converge(&web).expect("build there");
    let read = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).expect("memo")).expect("memo JSON")
    };
    let theirs = read(file(&other));
    let mut ours = read(file(&t));
    // This namespace's memo with the other's stamp but for the cookie: all the stamp's other
    // parts (generation, table handle, LAN side) now match the other namespace.
    let cookie = ours["stamp"]["netns_cookie"].clone();
    ours["stamp"] = theirs["stamp"].clone();
    ours["stamp"]["netns_cookie"] = cookie;
    std::fs::write(file(&other), ours.to_string()).expect("plant the memo");
    assert!(
        recall(&mut session(&other, &run_dir)).is_none(),
        "a memo made in another namespace"
    );
    // The control: with the other's cookie too, the planted memo is believed.
    ours["stamp"]["netns_cookie"] = theirs["stamp"]["netns_cookie"].clone();
    std::fs::write(file(&other), ours.to_string()).expect("plant the memo");
    assert!(
        recall(&mut session(&other, &run_dir)).is_some(),
        "only the cookie told them apart"
    );
    std::fs::remove_file(file(&other)).expect("remove the planted memo");

    // A memo that is not JSON, or of another version, is ignored.
    for entry in std::fs::read_dir(run_dir.path()).expect("run dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("memo-"))
        {
            std::fs::write(&path, "{ not json").expect("spoil the memo");
        }
    }
    let mut s = session(&t, &run_dir);
    assert!(recall(&mut s).is_none(), "a spoiled memo");
    assert!(s.converge(&web).expect("read instead").plan.is_empty());
}

#[test]
fn the_memo_of_a_table_with_expiring_forwards_holds_until_one_expires() {
    require_root!();
    let t = Topology::new(PORTMAP, "memo-expires");
    let run_dir = TempDir::new("memo-expires");
    let soon = portmap::UtcTime::from_unix_seconds(portmap::UtcTime::now().unix_seconds() + 3);
    let yaml = format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nmappings:\n  \
         - {{ name: web, port: 8080, to: 192.168.1.66, to_port: 80, expires: \"2037-12-24T00:00:00Z\" }}\n  \
         - {{ name: brief, port: 8081, to: 192.168.1.66, to_port: 80, expires: \"{soon}\" }}\n"
    );
    let m = model(&yaml);
    session(&t, &run_dir).converge(&m).expect("build");
    // A commit of expiring forwards is not predicted: what the kernel keeps once one expires is
    // only known from a read.
    assert!(recall(&mut session(&t, &run_dir)).is_none(), "no memo predicted");
    let mut s = session(&t, &run_dir);
    assert!(s.converge(&m).expect("nothing to do").plan.is_empty());
    assert_memo_is_the_kernel(&mut session(&t, &run_dir), "after a read of expiring forwards");
    // Once `brief`'s moment has passed, the kernel has removed its elements without a
    // transaction: the memo steps aside and a read shows the expiry.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let mut s = session(&t, &run_dir);
    assert!(recall(&mut s).is_none(), "a remembered forward has expired");
    assert!(
        s.converge(&m).expect("read").plan.is_empty(),
        "an expired mapping is not re-created"
    );
}
