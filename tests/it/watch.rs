//! `portmap watch` against a real kernel: it heals a deleted table, a `flush ruleset`, a changed
//! element and a stale LAN-side address within a second (nft, from the kernel's notifications; the
//! figures are printed), or within its polling interval (iptables); it re-reads the file on SIGHUP
//! (a broken file is logged and the running configuration kept), stops with exit 0 on SIGTERM,
//! tells systemd when it is ready, backs off when another program keeps deleting its table, reads
//! afresh after lost notifications, and with `--own` keeps `nft flush ruleset` away from its table.
//!
//! Each test builds its own client / router / LAN namespaces and runs the watch inside the router
//! namespace; nothing touches the host.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use portmap_netlink::{Batch, Family, Socket};
use portmap_testkit::topology::path_str;
use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{CLIENT, Daemon, ROUTER_LAN, Reply, Server, Topology, config, require_root};

use crate::PORTMAP;

const WEB: &str = "  - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n";
const SSH: &str = "  - name: ssh\n    port: 2222\n    to: 192.168.1.66\n    to_port: 22\n";

/// How long the first apply may take on a loaded machine.
const START: Duration = Duration::from_secs(20);
/// How long a repair triggered by a notification may take before the test gives up (the
/// latency itself is asserted separately, on the median).
const REPAIR: Duration = Duration::from_secs(10);

/// Start `portmap watch` on the lab's config file (written from `yaml`) with `extra` arguments,
/// and wait for its first apply.
#[track_caller]
fn watch(t: &Topology, yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    let path = t.write_config(yaml);
    let mut args = vec!["watch", "-c", path_str(&path)];
    args.extend_from_slice(extra);
    let d = t.portmap_daemon(&args, env);
    d.wait_for("applied: ", START);
    d
}

/// SIGTERM: the watch says so and exits 0.
#[track_caller]
fn stop(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    let code = d.wait(Duration::from_secs(10));
    assert_eq!(code, 0, "watch did not exit 0 on SIGTERM\n{}", d.log());
    assert_eq!(d.count("stopping (SIGTERM)"), 1, "{}", d.log());
}

/// A netfilter socket in the router, for deleting and looking at the table precisely.
fn socket(t: &Topology) -> Socket {
    Socket::open(&portmap_netlink::Netns::Named(t.router.name().to_owned())).expect("socket")
}

fn table_exists(sock: &mut Socket) -> bool {
    sock.table(Family::Inet, "portmap").expect("read table").is_some()
}

/// Wait (polling every millisecond) for portmap's table to exist again; the time it took.
#[track_caller]
fn time_until_table(sock: &mut Socket, since: Instant, d: &Daemon) -> Duration {
    while since.elapsed() < REPAIR {
        if table_exists(sock) {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the table was not back within {REPAIR:?}\n{}", d.log())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many trials each latency test makes: at most the back-off's free repairs in a row.
const TRIALS: usize = 5;

#[test]
fn a_deleted_table_is_back_within_a_second() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-del");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &[], &[]);
    let mut sock = socket(&t);
    let mut took = Vec::new();
    for trial in 1..=TRIALS {
        let mut batch = Batch::new();
        batch.del_table(Family::Inet, "portmap");
        sock.send(&batch, None).expect("delete the table");
        let deleted = Instant::now();
        took.push(time_until_table(&mut sock, deleted, &d));
        d.wait_for_nth(
            trial,
            "repaired: table inet portmap created with 1 mapping",
            REPAIR,
        );
    }
    println!("deleted table → repaired, {TRIALS} trials (ms): {}", ms(&took));
    assert_eq!(
        d.count("table inet portmap deleted by "),
        TRIALS,
        "one line per deletion, naming who did it\n{}",
        d.log()
    );
    let median = median(&mut took);
    assert!(median < Duration::from_secs(1), "median {median:?}\n{}", d.log());
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
    // Its own repairs are not taken for someone else's change: no repair loop.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.count("repaired: "), TRIALS, "{}", d.log());
    stop(d);
}

#[test]
fn a_flush_ruleset_is_undone_within_a_second() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-flush");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &[], &[]);
    let mut sock = socket(&t);
    let mut took = Vec::new();
    for trial in 1..=TRIALS {
        // Timed from before `nft` starts: the figure includes nft's own run.
        let start = Instant::now();
        t.router.output("nft", &["flush", "ruleset"]);
        took.push(time_until_table(&mut sock, start, &d));
        d.wait_for_nth(trial, "repaired: ", REPAIR);
    }
    println!(
        "nft flush ruleset → repaired, {TRIALS} trials (ms): {}",
        ms(&took)
    );
    let line = d.wait_for("deleted by nft (pid ", REPAIR);
    assert!(line.text.contains("table inet portmap"), "{}", line.text);
    let median = median(&mut took);
    assert!(median < Duration::from_secs(1), "median {median:?}\n{}", d.log());
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    stop(d);
}

#[test]
fn a_changed_element_is_put_back() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-elem");
    let _web = t.tcp_server("192.168.1.66:80");
    let _decoy = t.tcp_server("192.168.1.25:80");
    let d = watch(&t, &config(WEB), &[], &[]);
    // Another program points the forward somewhere else, in one transaction.
    t.router.nft_load(
        "delete element inet portmap dnat4 { tcp . 8080 }\n\
         add element inet portmap dnat4 { tcp . 8080 comment \"web\" : 192.168.1.25 . 80 }\n",
    );
    let line = d.wait_for("table inet portmap changed by nft (pid ", REPAIR);
    assert!(
        line.text.contains("element") && line.text.contains("dnat4"),
        "{}",
        line.text
    );
    let line = d.wait_for("repaired: 1 mapping changed", REPAIR);
    println!("changed element: {}", line.text);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
    stop(d);
}

every_backend! {
/// Damage each backend's own way (nft: the table deleted; iptables: the nat PREROUTING chain
/// flushed, which drops portmap's jump): the watch repairs it — nft from the notification,
/// iptables at its next read (every 0.5 s here) — and traffic passes again.
fn the_watch_repairs_what_another_program_broke(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(t, &config(WEB), &["--interval", "0.5"], &[]);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let start = Instant::now();
    match t.backend() {
        "nft" => t.router.output("nft", &["delete", "table", "inet", "portmap"]),
        "iptables-legacy" => t.router.output("iptables-legacy", &["-t", "nat", "-F", "PREROUTING"]),
        _ => t.router.output("iptables-nft", &["-t", "nat", "-F", "PREROUTING"]),
    };
    let line = d.wait_for("repaired: ", REPAIR);
    let took = line.at.saturating_duration_since(start);
    println!("{}: damage → repaired in {:.1} ms: {}", t.backend(), took.as_secs_f64() * 1000.0, line.text);
    if !t.is_nft() {
        // Found by a read, not announced: the watch says what it found.
        d.wait_for("drift found: ", REPAIR);
        assert!(took < Duration::from_secs(3), "{took:?}\n{}", d.log());
    }
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.plan_json().expect_code(0);
    stop(d);
}
}

every_backend! {
/// A mapping expiring a few seconds after the watch started: the kernel ends it, the watch says
/// so (waking for it), does not create it again, and the other mapping keeps forwarding.
fn the_watch_lets_an_expired_mapping_go(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let at = portmap::UtcTime::from_unix_seconds(portmap::UtcTime::now().unix_seconds() + 3);
    let soon = format!("{WEB}    expires: {at}\n");
    let d = watch(t, &config(&format!("{soon}{SSH}")), &["--interval", "30"], &[]);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    d.wait_for(&format!("mapping web expired at {at}"), Duration::from_secs(10));
    t.assert_tcp_blocked(CLIENT, 8080);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.count("repaired: "), 0, "{}", d.log());
    assert_eq!(d.count("drift found: "), 0, "{}", d.log());
    t.assert_tcp_blocked(CLIENT, 8080);
    t.plan_json().expect_code(0);
    stop(d);
}
}

every_backend! {
/// A LAN address added to the router after the watch started is one hairpin must leave alone:
/// the router's own service on it is reached, not the forward.
fn a_new_lan_address_is_left_to_the_router(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let yaml = format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nhairpin: true\nmasquerade: false\nmappings:\n{WEB}"
    );
    let d = watch(t, &yaml, &["--interval", "0.5"], &[]);
    let new = Ipv4Addr::new(192, 168, 1, 254);
    t.router.ip(&["addr", "add", "192.168.1.254/24", "dev", "lan0"]);
    let _own = Server::tcp(&t.router, SocketAddrV4::new(new, 8080));
    d.wait_for("address 192.168.1.254/24 added on lan0", REPAIR);
    d.wait_for("repaired: ", REPAIR);
    let got = tcp_request(&t.router, ROUTER_LAN, SocketAddrV4::new(new, 8080), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no answer: {e:?}\n{}", d.log()));
    let got = Reply::parse(&got).expect("identity reply");
    assert_eq!(got.server, SocketAddr::V4(SocketAddrV4::new(new, 8080)), "{}", d.log());
    t.plan_json().expect_code(0);
    stop(d);
}
}

every_backend! {
/// SIGHUP re-reads the file: a changed file takes effect; a broken one is logged with its errors
/// and the running configuration kept (and still enforced).
fn sighup_rereads_the_file_and_keeps_the_old_one_when_the_new_is_broken(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _ssh = t.tcp_server("192.168.1.66:22");
    let d = watch(t, &config(WEB), &["--interval", "0.5"], &[]);
    t.write_config(&config(&format!("{WEB}{SSH}")));
    d.signal(libc::SIGHUP);
    d.wait_for("configuration reloaded: 2 mappings", REPAIR);
    d.wait_for("applied: 1 mapping created", REPAIR);
    t.assert_tcp(CLIENT, 2222, "192.168.1.66:22");
    t.plan_json().expect_code(0);

    t.write_config("wan: { interfaces: [wan0] }\nmappings:\n  - name: web\n    port: 99999\n    to: 192.168.1.66\n");
    d.signal(libc::SIGHUP);
    let line = d.wait_for("reload refused, the running configuration is kept", REPAIR);
    assert!(line.text.starts_with("error: "), "{}", line.text);
    // The errors follow, with their positions.
    d.wait_for("portmap.yaml:4:", REPAIR);
    d.wait_for("port", REPAIR);
    // The old configuration is still the one enforced: damage is repaired to it.
    t.write_config(&config(&format!("{WEB}{SSH}")));
    match t.backend() {
        "nft" => t.router.output("nft", &["delete", "table", "inet", "portmap"]),
        "iptables-legacy" => t.router.output("iptables-legacy", &["-t", "nat", "-F", "PREROUTING"]),
        _ => t.router.output("iptables-nft", &["-t", "nat", "-F", "PREROUTING"]),
    };
    d.wait_for("repaired: ", REPAIR);
    t.assert_tcp(CLIENT, 2222, "192.168.1.66:22");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    stop(d);
}
}

#[test]
fn readiness_reload_and_stop_are_told_to_systemd() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-notify");
    let path = t.dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).expect("bind the notify socket");
    listener.set_read_timeout(Some(START)).expect("read timeout");
    let yaml = t.write_config(&config(WEB));
    let mut sock = socket(&t);
    let d = t.portmap_daemon(
        &["watch", "-c", path_str(&yaml)],
        &[("NOTIFY_SOCKET", path_str(&path))],
    );
    let mut buf = [0u8; 4096];
    let n = listener
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}\n{}", d.log()));
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.lines().any(|l| l == "READY=1"), "{text:?}");
    assert!(
        text.contains("STATUS=watching table inet portmap: 1 mapping"),
        "{text:?}"
    );
    // READY comes after the first apply: the table is there.
    assert!(
        table_exists(&mut sock),
        "READY=1 before the table was applied\n{}",
        d.log()
    );

    d.signal(libc::SIGHUP);
    let n = listener.recv(&mut buf).expect("RELOADING");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("RELOADING=1"));
    let n = listener.recv(&mut buf).expect("READY after the reload");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

    d.signal(libc::SIGTERM);
    let n = listener.recv(&mut buf).expect("STOPPING");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let mut d = d;
    assert_eq!(d.wait(Duration::from_secs(10)), 0, "{}", d.log());
}

#[test]
fn backoff_bounds_the_repairs_when_another_program_keeps_deleting_the_table() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-fight");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &[], &[]);
    let mut sock = socket(&t);
    // Another program deletes the table every 50 ms for 6 s: without a back-off that is some
    // 120 repairs.
    let fight = Duration::from_secs(6);
    let start = Instant::now();
    let mut deletions = 0;
    while start.elapsed() < fight {
        if table_exists(&mut sock) {
            let mut batch = Batch::new();
            batch.del_table(Family::Inet, "portmap");
            if sock.send(&batch, None).is_ok() {
                deletions += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let repairs = d.count("repaired: ");
    println!("{deletions} deletions in {fight:?} → {repairs} repairs");
    // 5 at once, then after 1 s and 2 s (the next waits 4 s, past the fight's end).
    assert!(
        (5..=9).contains(&repairs),
        "{repairs} repairs for {deletions} deletions\n{}",
        d.log()
    );
    assert!(d.count("backing off: ") >= 1, "{}", d.log());
    // Once the other program stops, the table comes back at the next allowed repair.
    time_until_table(&mut sock, Instant::now(), &d);
    let line = d.wait_for_nth(repairs + 1, "repaired: ", Duration::from_secs(20));
    assert!(
        line.text.contains("more change"),
        "held-back lines are counted: {}",
        line.text
    );
    t.plan_json().expect_code(0);
    stop(d);
}

#[test]
fn lost_notifications_make_the_watch_read_afresh() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-lost");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &["--event-buffer", "1024"], &[]);
    // One transaction: a big table of another program, and portmap's table deleted. Its
    // thousands of notifications overflow the tiny buffer — unless the watch's reader happens to
    // keep up with the kernel, which a loaded machine makes possible: then try again.
    let ports: Vec<String> = (1..=20_000).map(|p: u16| p.to_string()).collect();
    let burst = format!(
        "table inet other {{\n set s {{\n  type inet_service\n  elements = {{ {} }}\n }}\n}}\ndelete table inet portmap\n",
        ports.join(", ")
    );
    let mut lost = None;
    for attempt in 1..=5 {
        if attempt > 1 {
            d.wait_for_nth(attempt - 1, "repaired: table inet portmap created", REPAIR);
            t.router.output("nft", &["delete", "table", "inet", "other"]);
        }
        t.router.nft_load(&burst);
        if d.try_wait_for_nth(1, "missed ruleset notifications", Duration::from_secs(3))
            .is_some()
        {
            lost = Some(attempt);
            break;
        }
    }
    let attempts = lost.unwrap_or_else(|| panic!("5 bursts and no notification lost\n{}", d.log()));
    println!("notifications lost at burst {attempts}");
    d.wait_for_nth(attempts, "repaired: table inet portmap created", REPAIR);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    stop(d);
}

#[test]
fn an_owned_table_survives_flush_ruleset_and_refuses_other_writers() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-own");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &["--own"], &[]);
    d.wait_for("owns the table", START);
    let listing = t.router.output("nft", &["list", "table", "inet", "portmap"]);
    assert!(listing.contains("flags owner"), "{listing}");

    t.router.output("nft", &["flush", "ruleset"]);
    assert!(t.table().is_some(), "flush ruleset removed an owned table");
    let out = t.router.nft(&["delete", "table", "inet", "portmap"]);
    assert!(!out.ok(), "another program deleted the owned table\n{out}");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    // Nothing was undone, so nothing was repaired.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.count("repaired: "), 0, "{}", d.log());

    // The CLI reads the table (status, plan) but may not write it; it says what to do instead.
    t.portmap(&["status"]).success();
    let run = t.apply(&config(&format!("{WEB}{SSH}")));
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("table inet portmap is owned by another process")
            && run.stderr.contains("portmap watch --own")
            && run.stderr.contains("process portmap"),
        "{run}"
    );

    // With persist (this kernel has it), the table stays when the watch stops, without an owner;
    // a plain apply can then change it again, and a new watch --own adopts it in place.
    stop(d);
    assert!(t.table().is_some(), "the table went with the watch");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.apply(&config(&format!("{WEB}{SSH}"))).success();
    let d = watch(&t, &config(WEB), &["--own"], &[]);
    // Adopted in place: the first apply only deletes the mapping the file no longer has.
    d.wait_for("applied: 1 mapping deleted", START);
    let listing = t.router.output("nft", &["list", "table", "inet", "portmap"]);
    assert!(listing.contains("flags owner"), "{listing}");
    stop(d);
}

/// An `apply --confirm` next to a running watch: the watch neither fights the change being tried
/// nor the rollback — it holds back while the confirmation is pending (and says so once), and
/// checks the table again once it is settled. Both go through the one write lock.
#[test]
fn the_watch_holds_back_while_a_change_waits_for_its_confirmation() {
    require_root!();
    let t = Topology::new(PORTMAP, "w-confirm");
    let kind = portmap::BackendKind::Nft;
    let netns = portmap::Netns::Named(t.router.name().to_owned());
    let key = portmap::LockKey::new(kind, &netns, "portmap").expect("lock key");
    let records = portmap::RunDir::from_env().path().join("confirm");
    let _web = t.tcp_server("192.168.1.66:80");
    let d = watch(&t, &config(WEB), &["--interval", "0.5"], &[]);
    let tried = t.dir.write("tried.yaml", &config(SSH));
    let tried = path_str(&tried);
    t.portmap(&["apply", "-c", tried, "--auto-approve", "--confirm", "3"])
        .success();
    d.wait_for("not repairing while a change waits for its confirmation", REPAIR);
    // Several polls later the change being tried is still what the kernel holds.
    std::thread::sleep(Duration::from_millis(1500));
    t.portmap(&["plan", "-c", tried, "--detailed-exitcode"])
        .expect_code(0);
    assert_eq!(d.count("repaired: "), 0, "{}", d.log());
    // The watchdog rolls back to what the watch had applied; the watch has nothing to repair.
    d.wait_for("the confirmation is settled", REPAIR);
    t.plan_json().expect_code(0);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    assert_eq!(
        d.count("not repairing while"),
        1,
        "said once per confirmation\n{}",
        d.log()
    );
    let last = std::fs::read_to_string(records.join(format!("{}.last.json", key.stem())))
        .expect("the settled record");
    assert!(last.contains("rolled_back"), "{last}");
    for name in [".json", ".last.json"] {
        let _ = std::fs::remove_file(records.join(format!("{}{name}", key.stem())));
    }
    stop(d);
}
