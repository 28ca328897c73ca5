//! `expires`: the kernel itself ends a forward at the moment the configuration names, with portmap
//! not running. A mapping expiring a few seconds ahead forwards a real connection, then no new one;
//! `plan` then has nothing to do and `status` says it expired; a mapping whose moment has passed
//! is accepted with a warning and not installed; another `expires` retimes a live mapping, and
//! none makes it permanent. Every backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, Topology, require_root};

/// Seconds since the epoch, now.
fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("seconds")
}

/// RFC 3339 (UTC) of `seconds` since the epoch, through portmap's own type.
fn rfc3339(seconds: i64) -> String {
    portmap::UtcTime::from_unix_seconds(seconds).to_string()
}

fn config(soon: i64, later: Option<&str>) -> String {
    let later = later.map_or_else(String::new, |t| format!("    expires: {t}\n"));
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\n\
         mappings:\n\
         \x20 - name: soon\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n\
         \x20   allow_from: [{CLIENT}]\n    limit: \"100/second\"\n    log: true\n    expires: {}\n\
         \x20 - name: past\n    port: 8081\n    to: 192.168.1.25\n    to_port: 80\n    expires: 2020-01-01T00:00:00Z\n\
         \x20 - name: later\n    port: 8082\n    to: 192.168.1.25\n    to_port: 80\n{later}",
        rfc3339(soon)
    )
}

fn mapping(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["mappings"]
        .as_array()
        .and_then(|list| list.iter().find(|m| m["name"] == name))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn status(t: &Topology) -> serde_json::Value {
    t.portmap(&["status", "--json"]).success().json()
}

every_backend! {
fn the_kernel_ends_a_forward_at_its_expiry(t) {
    let _a = t.tcp_server("192.168.1.66:80");
    let _b = t.tcp_server("192.168.1.25:80");
    let soon = now() + 4;
    let in_an_hour = rfc3339(now() + 3600);
    let run = t.apply(&config(soon, Some(&in_an_hour)));
    run.success();
    // A moment already past: accepted, with a warning, and not installed.
    assert!(run.stderr.contains("mapping past expired 2020-01-01T00:00:00Z"), "{run}");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp_blocked(CLIENT, 8081);
    t.assert_tcp(CLIENT, 8082, "192.168.1.25:80");
    t.plan_text().expect_code(0);
    let s = status(t);
    assert_eq!(mapping(&s, "soon")["expires"], rfc3339(soon), "{s:#}");
    assert!(mapping(&s, "soon")["expires_in_seconds"].as_i64().is_some_and(|n| n > 0), "{s:#}");
    assert_eq!(mapping(&s, "past"), serde_json::Value::Null, "{s:#}");
    let text = t.portmap(&["status"]).success().stdout.clone();
    assert!(text.contains(&format!("expires {}, in ", rfc3339(soon))), "{text}");

    // Past the moment, with portmap not running: no new connection is forwarded.
    let wait = u64::try_from(soon - now()).unwrap_or(0) * 1000 + 1200;
    std::thread::sleep(Duration::from_millis(wait));
    t.assert_tcp_blocked(CLIENT, 8080);
    t.assert_tcp(CLIENT, 8082, "192.168.1.25:80");
    // Nothing to do: the expired mapping is not drift and is not created again.
    let plan = t.plan_text();
    plan.expect_code(0);
    assert!(plan.stdout.contains("2 of them expired"), "{plan}");
    assert!(plan.stderr.contains("mapping soon expired"), "{plan}");
    let s = status(t);
    assert!(mapping(&s, "soon")["expires_in_seconds"].as_i64().is_some_and(|n| n < 0), "{s:#}");
    assert_eq!(mapping(&s, "soon")["state"], "intact", "{s:#}");
    let text = t.portmap(&["status"]).success().stdout.clone();
    assert!(text.contains(&format!("expired {}, ", rfc3339(soon))), "{text}");
    t.portmap(&["apply", "-c", path_str(&t.write_config(&config(soon, Some(&in_an_hour)))), "--auto-approve"])
        .success();
    t.assert_tcp_blocked(CLIENT, 8080);

    // Another moment retimes the live mapping; none makes it permanent.
    let in_two_hours = rfc3339(now() + 7200);
    let path = t.write_config(&config(soon, Some(&in_two_hours)));
    let plan = t.portmap(&["plan", "-c", path_str(&path), "--json", "--detailed-exitcode"]);
    plan.expect_code(2);
    let p = plan.json();
    assert_eq!(p["changes"][0]["fields"][0]["field"], "expires", "{p:#}");
    assert_eq!(p["changes"][0]["after"]["expires"], in_two_hours, "{p:#}");
    assert!(p["changes"][0]["after"]["expires_in_seconds"].as_i64().is_some_and(|n| n > 7000), "{p:#}");
    t.portmap(&["apply", "-c", path_str(&path), "--auto-approve"]).success();
    t.plan_text().expect_code(0);
    let s = status(t);
    assert_eq!(mapping(&s, "later")["expires"], in_two_hours, "{s:#}");
    // Its counters went on from what they held (one connection before, one after).
    t.assert_tcp(CLIENT, 8082, "192.168.1.25:80");
    assert_eq!(mapping(&status(t), "later")["counters"]["connections"], 3, "{s:#}");
    // Another target, same moment: the elements written anew expire with the others.
    let moved = config(soon, Some(&in_two_hours)).replace(
        "port: 8082\n    to: 192.168.1.25",
        "port: 8082\n    to: 192.168.1.66",
    );
    t.apply(&moved).success();
    t.plan_text().expect_code(0);
    t.assert_tcp(CLIENT, 8082, "192.168.1.66:80");
    assert_eq!(mapping(&status(t), "later")["expires"], in_two_hours);
    t.apply(&config(soon, None)).success();
    t.plan_text().expect_code(0);
    assert_eq!(mapping(&status(t), "later")["expires"], serde_json::Value::Null);
    t.assert_tcp(CLIENT, 8082, "192.168.1.25:80");

    // Out of the configuration, what the kernel kept of the expired mapping goes.
    let without = config(soon, None).replace(
        &format!(
            "  - name: soon\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n    allow_from: [{CLIENT}]\n    \
             limit: \"100/second\"\n    log: true\n    expires: {}\n",
            rfc3339(soon)
        ),
        "",
    );
    assert!(!without.contains("soon"), "{without}");
    t.apply(&without).success();
    t.plan_text().expect_code(0);
    let s = status(t);
    assert_eq!(mapping(&s, "soon"), serde_json::Value::Null, "{s:#}");
    assert_eq!(s["state"], "intact", "{s:#}");
    if t.is_nft() {
        let table = t.table().unwrap_or_default();
        assert!(!table.contains("soon"), "{table}");
    }
}
}

/// The table's handle (`nft -a`): a rebuild gives the table a new one.
fn table_handle(t: &Topology) -> String {
    let out = t.router.nft(&["-a", "list", "table", "inet", "portmap"]);
    assert!(out.ok(), "{out}");
    out.stdout
        .lines()
        .next()
        .and_then(|l| l.split("# handle ").nth(1))
        .map_or_else(|| panic!("no handle in {out}"), str::to_owned)
}

/// nft builds its maps with element timeouts only for a configuration with an `expires` (the
/// kernel's fixed-size hash without them is faster to fill): the first expiring mapping rebuilds
/// the table with them, counters going on, and dropping the expiry later keeps them.
#[test]
fn nft_maps_get_timeouts_with_the_first_expiry() {
    require_root!();
    let t = Topology::new(crate::PORTMAP, "exp-timeouts");
    let _a = t.tcp_server("192.168.1.66:80");
    let _b = t.tcp_server("192.168.1.25:80");
    let plain = "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmappings:\n  \
                 - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n";
    t.apply(plain).success();
    let table = t.table().unwrap_or_default();
    assert!(!table.contains("timeout"), "{table}");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let handle = table_handle(&t);

    let soon = now() + 3;
    let timed = format!(
        "{plain}  - name: soon\n    port: 8081\n    to: 192.168.1.25\n    to_port: 80\n    expires: {}\n",
        rfc3339(soon)
    );
    let path = t.write_config(&timed);
    let plan = t
        .portmap(&["plan", "-c", path_str(&path), "--json"])
        .success()
        .json();
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(1), "{plan:#}");
    assert_eq!(plan["changes"][0]["action"], "create", "{plan:#}");
    assert_eq!(plan["observed_can_expire"], false, "{plan:#}");
    let text = t
        .portmap(&["plan", "-c", path_str(&path)])
        .success()
        .stdout
        .clone();
    assert!(
        text.contains("~ rebuild table inet portmap: its maps were made without element timeouts"),
        "{text}"
    );
    t.apply(&timed).success();
    let table = t.table().unwrap_or_default();
    assert_eq!(table.matches("flags timeout").count(), 24, "{table}");
    assert_ne!(table_handle(&t), handle, "the table was not rebuilt");
    t.plan_text().expect_code(0);
    t.assert_tcp(CLIENT, 8081, "192.168.1.25:80");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    // The rebuild kept web's counter: the connection before it and the one after.
    assert_eq!(mapping(&status(&t), "web")["counters"]["connections"], 2);
    let wait = u64::try_from(soon - now()).unwrap_or(0) * 1000 + 1200;
    std::thread::sleep(Duration::from_millis(wait));
    t.assert_tcp_blocked(CLIENT, 8081);
    t.plan_text().expect_code(0);

    // Without the expiring mapping the table keeps its timeouts: a delta, not another rebuild,
    // and plans from the memo agree with the kernel.
    let handle = table_handle(&t);
    t.apply(plain).success();
    t.plan_text().expect_code(0);
    let later = format!(
        "{plain}  - name: later\n    port: 8082\n    to: 192.168.1.25\n    to_port: 80\n    expires: {}\n",
        rfc3339(now() + 3600)
    );
    let text = t
        .portmap(&["plan", "-c", path_str(&t.write_config(&later))])
        .success()
        .stdout
        .clone();
    assert!(!text.contains("rebuild"), "{text}");
    t.apply(&later).success();
    t.plan_text().expect_code(0);
    assert_eq!(table_handle(&t), handle, "the table was rebuilt");
    assert_eq!(t.table().unwrap_or_default().matches("flags timeout").count(), 24);
    t.assert_tcp(CLIENT, 8082, "192.168.1.25:80");
}
