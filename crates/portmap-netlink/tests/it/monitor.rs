//! Kernel tests of [`Monitor`] (what the kernel announces on the nftables and rtnetlink multicast
//! groups, and what happens when a burst overflows the receive buffer) and measurements of table
//! ownership (`NFT_TABLE_F_OWNER`, `NFT_TABLE_F_PERSIST`) on the running kernel. Every test makes
//! its own namespace and deletes it (even on panic); they need root and fail without it; they never
//! touch the host namespace.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use portmap_netlink::monitor::{Event, Generation, Object, Op};
use portmap_netlink::{Batch, Error, Family, Monitor, Received, Socket, Table, Topic, table_flags, udata};
use portmap_testkit::topology::eventually;
use portmap_testkit::{Netns as TestNetns, require_root};

use crate::NetlinkNetns;

/// Everything the monitor receives until `done` says it has seen enough (or 5 s pass).
fn collect(monitor: &mut Monitor, mut done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while Instant::now() < deadline && !done(&events) {
        match monitor.recv(Some(Duration::from_millis(100))).expect("recv") {
            Received::Events(e) => events.extend(e),
            Received::Lost => panic!("notifications lost"),
            Received::Timeout => {}
        }
    }
    events
}

fn table(name: &str, flags: u32) -> Table {
    Table {
        family: Family::Inet,
        name: name.into(),
        flags,
        userdata: Some(udata::comment("test")),
        handle: None,
        owner: None,
    }
}

fn generations(events: &[Event]) -> Vec<&Generation> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Generation(g) => Some(g),
            _ => None,
        })
        .collect()
}

#[test]
fn ruleset_changes_are_announced_with_the_committing_process() {
    require_root!();
    let ns = TestNetns::new("nl-mon");
    let mut monitor = Monitor::open(&ns.netns(), Topic::Ruleset).expect("monitor");
    let mut sock = ns.socket();
    let mut batch = Batch::new();
    batch.add_table(&table("watched", 0));
    sock.send(&batch, None).expect("add table");
    let ours = collect(&mut monitor, |e| !generations(e).is_empty());
    assert!(
        ours.iter().any(|e| matches!(e, Event::Ruleset(c)
            if c.op == Op::Add && c.object == Object::Table && c.table == "watched" && c.family == 1)),
        "{ours:?}"
    );
    // The transaction ends with the generation, naming this process: the thread that sent it.
    // SAFETY: gettid has no preconditions.
    let tid = u32::try_from(unsafe { libc::gettid() }).expect("tid");
    let g = generations(&ours)[0];
    assert!(g.pid == tid || g.pid == std::process::id(), "{g:?}");

    ns.output("nft", &["add set inet watched s { type inet_service; }"]);
    ns.output("nft", &["add element inet watched s { 1, 2, 3 }"]);
    ns.output("nft", &["delete table inet watched"]);
    let theirs = collect(&mut monitor, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Ruleset(c) if c.op == Op::Delete && c.object == Object::Table))
            && generations(e).len() >= 3
    });
    let elements: usize = theirs
        .iter()
        .filter_map(|e| match e {
            Event::Ruleset(c) if c.object == Object::Elements && c.op == Op::Add => {
                assert_eq!(c.name.as_deref(), Some("s"));
                Some(c.elements)
            }
            _ => None,
        })
        .sum();
    assert_eq!(elements, 3, "{theirs:?}");
    let by_nft = generations(&theirs);
    assert!(
        by_nft
            .iter()
            .all(|g| g.process.as_deref() == Some("nft") && g.pid != std::process::id()),
        "{by_nft:?}"
    );
}

#[test]
fn links_and_addresses_are_announced() {
    require_root!();
    let ns = TestNetns::new("nl-mon");
    let mut monitor = Monitor::open(&ns.netns(), Topic::Links).expect("monitor");
    ns.ip_batch("link add ppp9 type veth peer name peer9\naddr add 10.9.9.1/24 dev ppp9\nlink set ppp9 up\n");
    let events = collect(&mut monitor, |e| {
        e.iter().any(|e| matches!(e, Event::Address(a) if a.added))
            && e.iter()
                .any(|e| matches!(e, Event::Link(l) if l.name == "ppp9" && l.up))
    });
    let index = events
        .iter()
        .find_map(|e| match e {
            Event::Link(l) if l.name == "ppp9" && l.present => Some(l.index),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no link ppp9 announced: {events:?}"));
    assert!(
        events.iter().any(|e| matches!(e, Event::Address(a)
            if a.index == index && a.addr == "10.9.9.1".parse::<IpAddr>().expect("addr") && a.prefix == 24)),
        "{events:?}"
    );
    ns.ip(&["link", "del", "ppp9"]);
    let gone = collect(&mut monitor, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Link(l) if l.name == "ppp9" && !l.present))
    });
    assert!(
        gone.iter()
            .any(|e| matches!(e, Event::Address(a) if !a.added && a.index == index)),
        "{gone:?}"
    );
}

#[test]
fn an_overflowing_burst_is_reported_as_lost_and_the_monitor_goes_on() {
    require_root!();
    let ns = TestNetns::new("nl-mon");
    let mut monitor = Monitor::open(&ns.netns(), Topic::Ruleset).expect("monitor");
    monitor.set_receive_buffer(4096).expect("shrink the buffer");
    // 2,000 elements are announced one by one: far more than 8 KiB of notifications.
    let ports: Vec<String> = (1..=2000).map(|p: u16| p.to_string()).collect();
    let script = format!(
        "table inet burst {{\n set s {{\n  type inet_service\n  elements = {{ {} }}\n }}\n}}\n",
        ports.join(", ")
    );
    ns.nft_load(&script);
    let mut lost = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match monitor.recv(Some(Duration::from_millis(100))).expect("recv") {
            Received::Lost => lost = true,
            Received::Timeout if lost => break,
            Received::Events(_) | Received::Timeout => {}
        }
    }
    assert!(lost, "a 4 KiB buffer did not overflow");
    // Still subscribed: the next change is announced.
    monitor.set_receive_buffer(1 << 20).expect("grow the buffer");
    ns.output("nft", &["delete table inet burst"]);
    let events = collect(&mut monitor, |e| !generations(e).is_empty());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Ruleset(c) if c.table == "burst" && c.op == Op::Delete)),
        "{events:?}"
    );
}

/// What this kernel does with `NFT_TABLE_F_OWNER` and `NFT_TABLE_F_PERSIST` (the facts
/// `portmap watch --own` builds on; docs/operations.md quotes them).
#[test]
fn table_ownership_as_this_kernel_has_it() {
    require_root!();
    let ns = TestNetns::new("nl-own");
    let mut owner = ns.socket();
    let mut other = ns.socket();
    let port = owner.port_id().expect("port id");
    assert_ne!(port, other.port_id().expect("port id"));

    // A plain table cannot be made owned after the fact (nor owned made plain): EOPNOTSUPP.
    let mut batch = Batch::new();
    batch.add_table(&table("plain", 0));
    owner.send(&batch, None).expect("a plain table");
    let mut batch = Batch::new();
    batch.add_table(&table("plain", table_flags::OWNER));
    let err = owner.send(&batch, None).expect_err("owner on an existing table");
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err}");

    // An owned table: the kernel names the owner's port, refuses everyone else, and `flush
    // ruleset` skips it.
    let mut batch = Batch::new();
    batch.add_table(&table("owned", table_flags::OWNER | table_flags::PERSIST));
    owner
        .send(&batch, None)
        .expect("an owned, persistent table (Linux 6.9+)");
    let t = other.table(Family::Inet, "owned").expect("read").expect("exists");
    assert_eq!(t.owner, Some(port));
    assert_eq!(t.flags, table_flags::OWNER | table_flags::PERSIST);
    let mut batch = Batch::new();
    batch.del_table(Family::Inet, "owned");
    assert!(
        matches!(other.send(&batch, None), Err(Error::Permission { .. })),
        "another socket deleted an owned table"
    );
    let out = ns.nft(&["delete", "table", "inet", "owned"]);
    assert!(
        !out.ok() && out.stderr.contains("Operation not permitted"),
        "{out}"
    );
    ns.output("nft", &["flush", "ruleset"]);
    let tables = ns.output("nft", &["list", "tables"]);
    assert!(
        tables.contains("table inet owned") && !tables.contains("plain"),
        "{tables}"
    );

    // With persist, the table outlives its owner's socket, without an owner...
    // The kernel lets go of a closed socket's tables from its netlink release path, which need not
    // have run by the time close(2) returns (a fresh CI machine saw the table a moment later), so
    // the checks below wait a little for it.
    drop(owner);
    let released = |t: &Option<Table>| t.as_ref().is_some_and(|t| t.owner.is_none());
    assert!(
        eventually(Duration::from_secs(5), || released(
            &other.table(Family::Inet, "owned").expect("read")
        )),
        "the persistent table kept its closed owner"
    );
    let t = other
        .table(Family::Inet, "owned")
        .expect("read")
        .expect("still there");
    assert_eq!((t.flags, t.owner), (table_flags::PERSIST, None));
    // ...and another socket adopts it by setting owner again.
    let mut batch = Batch::new();
    batch.add_table(&table("owned", table_flags::OWNER | table_flags::PERSIST));
    other.send(&batch, None).expect("adopt the orphan");
    let t = other.table(Family::Inet, "owned").expect("read").expect("exists");
    assert_eq!(t.owner, Some(other.port_id().expect("port id")));

    // Without persist, the table goes with its owner's socket.
    let mut short: Socket = ns.socket();
    let mut batch = Batch::new();
    batch.add_table(&table("brief", table_flags::OWNER));
    short.send(&batch, None).expect("an owned table");
    assert!(other.table(Family::Inet, "brief").expect("read").is_some());
    drop(short);
    assert!(
        eventually(Duration::from_secs(5), || other
            .table(Family::Inet, "brief")
            .expect("read")
            .is_none()),
        "a table without persist outlived its owner's socket"
    );
}
