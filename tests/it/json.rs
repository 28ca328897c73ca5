//! The `--json` documents (docs/json.md), parsed with `serde_json` and checked field by field: every
//! command's result carries `format` and `command`; `apply` says `changed` (false on a second
//! apply) with what was sent, and prints the same `changes` as `plan`; before and after of an
//! update have the same mapping fields; errors under `--json` are one JSON document on stdout with
//! the usual exit code and the kernel unchanged. Commands that need the kernel run in the lab's
//! namespaces, for every backend; nothing touches the host.

use serde_json::Value;

use portmap_testkit::topology::path_str;
use portmap_testkit::{CLIENT, Netns, Topology, config, fixture, require_root};

use crate::PORTMAP;

const WEB: &str = "
  - name: web
    port: 8080
    to: 192.168.1.66
    to_port: 80
";

/// The envelope every document has.
#[track_caller]
fn envelope(doc: &Value, command: &str) {
    assert_eq!(doc["format"], 1, "format: {doc:#}");
    assert_eq!(doc["command"], command, "command: {doc:#}");
}

/// A document that reports a failure of `command` of the given kind.
#[track_caller]
fn failure(run: &portmap_testkit::Run, command: &str, kind: &str) -> Value {
    run.expect_code(1);
    let doc = run.json();
    envelope(&doc, command);
    assert_eq!(doc["error"]["kind"], kind, "{doc:#}");
    assert!(
        doc["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{doc:#}"
    );
    doc
}

/// The fields a mapping has on either side of a change.
const MAPPING_FIELDS: [&str; 7] = [
    "name",
    "protocol",
    "port",
    "to",
    "to_port",
    "allow_from",
    "description",
];

#[test]
fn validate_json_reports_the_file_or_each_error_with_its_position() {
    require_root!();
    let ns = Netns::with_links("json-val", &["wan0", "lan0"]);
    let validate = |path: &str| PORTMAP.run(&["--netns", ns.name(), "validate", "-c", path, "--json"]);
    let good = fixture("both.yaml");
    let run = validate(path_str(&good));
    run.success();
    let doc = run.json();
    envelope(&doc, "validate");
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["file"], path_str(&good));
    assert!(doc["mappings"].as_u64().is_some_and(|n| n > 0), "{doc:#}");
    assert!(doc["disabled"].is_u64(), "{doc:#}");
    assert!(doc.get("error").is_none());

    let bad = fixture("bad/unknown-key.yaml");
    let run = validate(path_str(&bad));
    let doc = failure(&run, "validate", "invalid_config");
    assert!(run.stderr.trim().is_empty(), "nothing to parse on stderr:\n{run}");
    let errors = doc["error"]["errors"].as_array().expect("errors");
    assert_eq!(doc["error"]["total"], errors.len(), "{doc:#}");
    assert_eq!(doc["error"]["omitted"], 0);
    let typo = errors
        .iter()
        .find(|e| e["line"] == 8)
        .unwrap_or_else(|| panic!("an error on line 8: {doc:#}"));
    assert_eq!(typo["file"], path_str(&bad));
    assert_eq!(typo["column"], 5);
    assert_eq!(typo["field"], "mappings[0]");
    assert!(
        typo["message"]
            .as_str()
            .is_some_and(|m| m.contains("protocl") && m.contains("protocol")),
        "{typo:#}"
    );
    let valid: Vec<&str> = typo["valid"]
        .as_array()
        .expect("valid keys")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in ["name", "protocol", "port", "to", "to_port"] {
        assert!(valid.contains(&key), "{key} in {valid:?}");
    }

    // Every error at once, each with a line and a column; an enumerated field lists its words.
    let dir = portmap_testkit::TempDir::new("json-val");
    let path = dir.write(
        "bad.yaml",
        "wan: { interfaces: [wan0] }\nmappings:\n  - { name: a, protocol: sctp, port: 80, to: 192.168.1.5 }\n  - { name: b, port: 0, to: 192.168.1.5 }\n",
    );
    let run = validate(path_str(&path));
    let doc = failure(&run, "validate", "invalid_config");
    let errors = doc["error"]["errors"].as_array().expect("errors");
    assert!(errors.len() >= 2, "{doc:#}");
    for e in errors {
        assert!(e["line"].is_u64() && e["column"].is_u64(), "{e:#}");
    }
    let protocol = errors
        .iter()
        .find(|e| e["field"] == "mappings[0].protocol")
        .unwrap_or_else(|| panic!("the protocol error: {doc:#}"));
    assert_eq!(protocol["line"], 3);
    assert_eq!(protocol["valid"], serde_json::json!(["tcp", "udp", "both"]));
    let port = errors
        .iter()
        .find(|e| e["field"] == "mappings[1].port")
        .unwrap_or_else(|| panic!("the port error: {doc:#}"));
    assert!(port.get("valid").is_none(), "ports are an open set: {port:#}");

    let run = validate("/nonexistent/portmap.yaml");
    failure(&run, "validate", "io");
}

#[test]
fn usage_errors_under_json_are_json() {
    require_root!();
    let ns = Netns::with_links("json-usage", &["wan0", "lan0"]);
    let run = PORTMAP.run(&["--netns", ns.name(), "plan", "--json", "--no-such-flag"]);
    let doc = failure(&run, "plan", "usage");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--no-such-flag")),
        "{doc:#}"
    );
    // Without --json the usage error stays text on stderr.
    let run = PORTMAP.run(&["--netns", ns.name(), "plan", "--no-such-flag"]);
    run.expect_code(1);
    assert!(
        run.stdout.is_empty() && run.stderr.contains("--no-such-flag"),
        "{run}"
    );
}

every_backend! {
fn apply_json_says_changed_then_not_and_the_kernel_forwards(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    let cfg = path_str(&path);

    // Refused without --auto-approve: nothing can answer the question. Kernel unchanged.
    let run = t.portmap(&["apply", "-c", cfg, "--json"]);
    failure(&run, "apply", "usage");
    assert!(t.table().is_none(), "a refused apply changes nothing");

    let plan = t.portmap(&["plan", "-c", cfg, "--json", "--detailed-exitcode"]);
    plan.expect_code(2);
    let plan = plan.json();
    envelope(&plan, "plan");
    assert_eq!(plan["empty"], false);

    let run = t.portmap(&["apply", "-c", cfg, "--json", "--auto-approve"]);
    run.success();
    let first = run.json();
    envelope(&first, "apply");
    assert_eq!(first["changed"], true, "{first:#}");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["flows_cleared"], 0);
    assert!(first["elapsed_ms"].is_number(), "{first:#}");
    assert!(first["sent"]["messages"].as_u64().is_some_and(|n| n > 0), "{first:#}");
    assert!(first["sent"]["objects"].as_u64().is_some_and(|n| n > 0), "{first:#}");
    assert_eq!(first["sent"]["rebuilt"], true, "a new table is built whole: {first:#}");
    assert_eq!(first["summary"]["create"], 1);
    assert_eq!(first["summary"]["table"], "create");
    assert_eq!(first["backend"], plan["backend"]);
    assert_eq!(first["table"], plan["table"]);
    // The same changes as the plan made just before.
    assert_eq!(first["changes"], plan["changes"], "apply carries out the plan it shows");
    let change = &first["changes"][0];
    assert_eq!(change["action"], "create");
    assert_eq!(change["name"], "web");
    assert_eq!(change["mapping"]["to"], "192.168.1.66");
    assert_eq!(change["mapping"]["port"], "8080");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    let run = t.portmap(&["apply", "-c", cfg, "--json", "--auto-approve"]);
    run.success();
    let second = run.json();
    envelope(&second, "apply");
    assert_eq!(second["changed"], false, "{second:#}");
    assert_eq!(second["empty"], true);
    assert_eq!(second["changes"], serde_json::json!([]));
    assert_eq!(second["sent"]["messages"], 0);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    // An update: before and after have the same mapping fields, in plan and in apply alike.
    let _moved = t.tcp_server("192.168.1.70:80");
    let path = t.write_config(&config(&WEB.replace("192.168.1.66", "192.168.1.70")));
    let cfg = path_str(&path);
    let plan = t.portmap(&["plan", "-c", cfg, "--json", "--detailed-exitcode"]);
    plan.expect_code(2);
    let plan = plan.json();
    let change = &plan["changes"][0];
    assert_eq!(change["action"], "update", "{plan:#}");
    for field in MAPPING_FIELDS {
        let (before, after) = (&change["before"][field], &change["after"][field]);
        assert!(change["before"].get(field).is_some() && change["after"].get(field).is_some(), "{field}: {change:#}");
        assert_eq!(
            std::mem::discriminant(before),
            std::mem::discriminant(after),
            "{field} has one type on both sides: {change:#}"
        );
    }
    assert_eq!(change["before"]["to"], "192.168.1.66");
    assert_eq!(change["after"]["to"], "192.168.1.70");
    assert_eq!(change["fields"][0]["field"], "to");
    let run = t.portmap(&["apply", "-c", cfg, "--json", "--auto-approve"]);
    run.success();
    let update = run.json();
    assert_eq!(update["changed"], true);
    assert_eq!(update["changes"], plan["changes"], "one shape for updates in plan and apply");
    assert_eq!(update["sent"]["rebuilt"], false, "an update is a delta: {update:#}");
    t.assert_tcp(CLIENT, 8080, "192.168.1.70:80");

    // status: versioned, with what it had (mappings, confirm).
    let status = t.portmap(&["status", "--json"]).success().json();
    envelope(&status, "status");
    assert_eq!(status["state"], "intact");
    assert_eq!(status["mappings"][0]["name"], "web");
    assert_eq!(status["mappings"][0]["to"], "192.168.1.70");
    assert!(status["confirm"].is_object(), "{status:#}");

    // An invalid configuration: an error document, the kernel as it was.
    let listed = t.router_ruleset();
    let bad = t.dir.write("bad.yaml", &config("\n  - { name: web, port: 99999, to: 192.168.1.66 }\n"));
    let run = t.portmap(&["apply", "-c", path_str(&bad), "--json", "--auto-approve"]);
    let doc = failure(&run, "apply", "invalid_config");
    assert_eq!(doc["error"]["errors"][0]["field"], "mappings[0].port", "{doc:#}");
    assert_eq!(t.router_ruleset(), listed, "an invalid configuration changes nothing");

    // destroy: changed with the names removed, then nothing to remove.
    failure(&t.portmap(&["destroy", "--json"]), "destroy", "usage");
    let run = t.portmap(&["destroy", "--json", "--auto-approve"]);
    run.success();
    let doc = run.json();
    envelope(&doc, "destroy");
    assert_eq!(doc["changed"], true);
    assert_eq!(doc["mappings_removed"], serde_json::json!(["web"]));
    assert!(doc["flows_cleared"].is_u64());
    t.assert_tcp_blocked(CLIENT, 8080);
    let doc = t.portmap(&["destroy", "--json", "--auto-approve"]).success().json();
    assert_eq!(doc["changed"], false);
    assert_eq!(doc["mappings_removed"], serde_json::json!([]));
}
}

#[test]
fn show_prints_a_saved_plan_in_words_and_json_and_apply_of_it_says_changed() {
    require_root!();
    let t = Topology::new(PORTMAP, "json-show");
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    let saved = t.dir.path().join("web.plan");
    let planned = t
        .portmap(&["plan", "-c", path_str(&path), "--json", "--out", path_str(&saved)])
        .success()
        .json();

    let words = t.portmap(&["show", path_str(&saved)]);
    words.success();
    assert!(words.stdout.contains("+ web"), "{words}");
    assert!(words.stdout.contains("Plan: 1 to create"), "{words}");

    let shown = t.portmap(&["show", path_str(&saved), "--json"]).success().json();
    envelope(&shown, "show");
    for key in [
        "backend",
        "table",
        "generation",
        "place",
        "changes",
        "summary",
        "table_action",
    ] {
        assert_eq!(shown[key], planned[key], "{key}");
    }
    assert!(t.table().is_none(), "show does not apply");

    let applied = t.portmap(&["apply", path_str(&saved), "--json"]).success().json();
    envelope(&applied, "apply");
    assert_eq!(applied["changed"], true);
    assert_eq!(applied["attempts"], 1);
    assert_eq!(applied["changes"], shown["changes"]);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    // The plan is spent: applying it again is refused, as JSON.
    let run = t.portmap(&["apply", path_str(&saved), "--json"]);
    failure(&run, "apply", "refused");

    let junk = t.dir.write("junk.plan", "{\"format_version\": 1}");
    failure(
        &t.portmap(&["show", path_str(&junk), "--json"]),
        "show",
        "invalid_plan_file",
    );
}

#[test]
fn confirm_and_rollback_json_say_what_was_settled() {
    require_root!();
    let t = Topology::new(PORTMAP, "json-conf");
    let _records = crate::locking::Records::of(&t);
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    let cfg = path_str(&path);

    let doc = t
        .portmap(&["apply", "-c", cfg, "--auto-approve", "--confirm", "60", "--json"])
        .success()
        .json();
    assert_eq!(doc["changed"], true);
    let id = doc["confirm"]["id"].as_str().expect("confirmation id").to_owned();
    assert_eq!(doc["confirm"]["seconds"], 60);
    assert!(doc["confirm"]["watchdog_pid"].is_u64(), "{doc:#}");
    assert!(doc["confirm"]["deadline"].is_string(), "{doc:#}");
    let doc = t.portmap(&["confirm", "--json"]).success().json();
    envelope(&doc, "confirm");
    assert_eq!(doc["changed"], false);
    assert_eq!(doc["settled"]["id"], id.as_str());
    assert_eq!(doc["settled"]["verdict"], "confirmed");
    assert_eq!(doc["settled"]["by"], "portmap confirm");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");

    // Nothing pending any more: an error document.
    failure(&t.portmap(&["confirm", "--json"]), "confirm", "error");

    let path = t.write_config(&config(&WEB.replace("8080", "8081")));
    let doc = t
        .portmap(&[
            "apply",
            "-c",
            path_str(&path),
            "--auto-approve",
            "--confirm",
            "60",
            "--json",
        ])
        .success()
        .json();
    let id = doc["confirm"]["id"].as_str().expect("confirmation id").to_owned();
    t.assert_tcp(CLIENT, 8081, "192.168.1.66:80");
    let doc = t.portmap(&["rollback", "--json"]).success().json();
    envelope(&doc, "rollback");
    assert_eq!(doc["changed"], true);
    assert_eq!(doc["settled"]["id"], id.as_str());
    assert_eq!(doc["settled"]["verdict"], "rolled_back");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    t.assert_tcp_blocked(CLIENT, 8081);
}
