//! The JSON Schema of the configuration (`portmap schema`) against the validator, through tools
//! that are not portmap's: every example and good fixture is read by an independent YAML loader
//! (saphyr), turned into JSON and checked by an independent JSON Schema validator (jsonschema,
//! formats on); configurations the validator refuses are refused by the schema too — except the
//! rules a schema cannot express, which are listed here so that the list in the schema's
//! documentation stays true.

use std::path::{Path, PathBuf};

use portmap_core::{config_schema, load_str};
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// YAML text as JSON, the way saphyr reads it (YAML 1.2 core schema).
fn to_json(text: &str) -> Value {
    let docs = Yaml::load_from_str(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"));
    assert_eq!(docs.len(), 1, "one document");
    node(&docs[0])
}

fn node(yaml: &Yaml<'_>) -> Value {
    match yaml {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(node).collect()),
        Yaml::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match node(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, node(v));
            }
            Value::Object(out)
        }
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&config_schema())
        .expect("the schema compiles")
}

/// The schema's complaints about `text`, one line each.
fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let json = to_json(text);
    v.iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema = config_schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::meta::validate(&schema).expect("valid against the 2020-12 meta-schema");
    // Every field of the file is described, and the defaults are there.
    let top = &schema["properties"];
    for key in ["version", "wan", "lan", "masquerade", "hairpin", "mappings"] {
        assert!(top[key]["description"].is_string(), "{key} has a description");
    }
    assert_eq!(top["hairpin"]["default"], true);
    assert_eq!(top["masquerade"]["default"], false);
    let mapping = &schema["$defs"]["MappingConfig"]["properties"];
    for key in [
        "name",
        "protocol",
        "port",
        "to",
        "to_port",
        "allow_from",
        "description",
        "enabled",
    ] {
        assert!(
            mapping[key]["description"].is_string(),
            "mappings[].{key} has a description"
        );
    }
    assert_eq!(mapping["enabled"]["default"], true);
    assert_eq!(mapping["protocol"]["default"], "tcp");
}

#[test]
fn every_example_and_good_fixture_validates_against_the_schema() {
    let v = validator();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["examples", "tests/fixtures"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.push(root().join("dist/portmap.yaml"));
    assert!(files.len() >= 8, "examples and fixtures found: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            load_str(&text, "file").is_ok(),
            "{} is valid for portmap",
            path.display()
        );
        let errors = schema_errors(&v, &text);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_examples_name_the_installed_schema() {
    for name in [
        "examples/home-router.yaml",
        "examples/dual-stack.yaml",
        "dist/portmap.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(name)).expect("read");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!("# yaml-language-server: $schema={}", portmap_core::SCHEMA_PATH),
            "{name}"
        );
    }
}

const HEAD: &str = "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\n";

/// A one-mapping configuration with `fields` (flow-style `key: value` pairs).
fn one(fields: &str) -> String {
    format!("{HEAD}mappings:\n  - {{ {fields} }}\n")
}

#[test]
fn what_the_validator_refuses_the_schema_refuses() {
    let v = validator();
    let cases: Vec<(&str, String)> = vec![
        ("unknown top-level key", format!("{HEAD}hairpn: true\n")),
        ("no wan", "mappings: []\n".to_owned()),
        ("no wan interface", "wan: { interfaces: [] }\n".to_owned()),
        (
            "interface with a slash",
            "wan: { interfaces: [eth/0] }\n".to_owned(),
        ),
        (
            "interface too long",
            "wan: { interfaces: [abcdefghijklmnop] }\n".to_owned(),
        ),
        ("interface `..`", "wan: { interfaces: [\"..\"] }\n".to_owned()),
        ("version 2", format!("version: 2\n{HEAD}")),
        (
            "masquerade without lan",
            "wan: { interfaces: [wan0] }\nmasquerade: true\n".to_owned(),
        ),
        (
            "masquerade with an empty lan",
            "wan: { interfaces: [wan0] }\nlan: { interfaces: [] }\nmasquerade: true\n".to_owned(),
        ),
        ("YAML 1.1 boolean", format!("{HEAD}hairpin: yes\n")),
        ("mappings not a list", format!("{HEAD}mappings: web\n")),
        (
            "unknown mapping key",
            one("name: web, port: 80, to: 192.168.1.2, target: 192.168.1.3"),
        ),
        ("missing name", one("port: 80, to: 192.168.1.2")),
        ("missing port", one("name: web, to: 192.168.1.2")),
        ("missing to", one("name: web, port: 80")),
        (
            "name with a space",
            one("name: \"my web\", port: 80, to: 192.168.1.2"),
        ),
        (
            "name starting with a dash",
            one("name: \"-web\", port: 80, to: 192.168.1.2"),
        ),
        (
            "name too long",
            one(&format!("name: {}, port: 80, to: 192.168.1.2", "a".repeat(65))),
        ),
        ("name a number", one("name: 42, port: 80, to: 192.168.1.2")),
        ("port 0", one("name: web, port: 0, to: 192.168.1.2")),
        ("port 65536", one("name: web, port: 65536, to: 192.168.1.2")),
        ("port text 0", one("name: web, port: \"0\", to: 192.168.1.2")),
        (
            "port text 70000",
            one("name: web, port: \"70000\", to: 192.168.1.2"),
        ),
        (
            "port half a range",
            one("name: web, port: \"80-\", to: 192.168.1.2"),
        ),
        ("port a float", one("name: web, port: 80.5, to: 192.168.1.2")),
        (
            "port Docker form",
            one("name: web, port: \"8080:80\", to: 192.168.1.2"),
        ),
        (
            "port with protocol",
            one("name: web, port: 8080/tcp, to: 192.168.1.2"),
        ),
        (
            "to_port 0",
            one("name: web, port: 80, to: 192.168.1.2, to_port: 0"),
        ),
        (
            "protocol unknown",
            one("name: web, port: 80, to: 192.168.1.2, protocol: tpc"),
        ),
        (
            "protocol mixed case",
            one("name: web, port: 80, to: 192.168.1.2, protocol: tCp"),
        ),
        ("to a host name", one("name: web, port: 80, to: nas.lan")),
        (
            "to with a port",
            one("name: web, port: 80, to: \"192.168.1.2:80\""),
        ),
        ("to a prefix", one("name: web, port: 80, to: 192.168.1.0/24")),
        ("to a number", one("name: web, port: 80, to: 3232235778")),
        (
            "allow_from empty",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: []"),
        ),
        (
            "allow_from a scalar",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: 10.0.0.0/8"),
        ),
        (
            "allow_from junk",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [\"the office\"]"),
        ),
        (
            "allow_from bad prefix length",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [10.0.0.0/33]"),
        ),
        (
            "description with a quote",
            one("name: web, port: 80, to: 192.168.1.2, description: 'say \"hi\"'"),
        ),
        (
            "description too long",
            one(&format!(
                "name: web, port: 80, to: 192.168.1.2, description: {}",
                "d".repeat(129)
            )),
        ),
        (
            "description with a newline",
            one("name: web, port: 80, to: 192.168.1.2, description: \"a\\nb\""),
        ),
        (
            "enabled a string",
            one("name: web, port: 80, to: 192.168.1.2, enabled: \"true\""),
        ),
    ];
    for (case, text) in &cases {
        assert!(
            load_str(text, "case").is_err(),
            "{case}: the validator refuses it\n{text}"
        );
        assert!(
            !schema_errors(&v, text).is_empty(),
            "{case}: the schema must refuse it too\n{text}"
        );
    }
}

#[test]
fn what_the_validator_accepts_the_schema_accepts() {
    let v = validator();
    let cases: Vec<(&str, String)> = vec![
        ("minimal", "wan: { interfaces: [wan0] }\n".to_owned()),
        (
            "mappings null",
            "wan: { interfaces: [wan0] }\nmappings:\n".to_owned(),
        ),
        (
            "version 1",
            "version: 1\nwan: { interfaces: [wan0] }\n".to_owned(),
        ),
        (
            "YAML 1.2 booleans",
            format!("{HEAD}hairpin: False\nmasquerade: TRUE\n"),
        ),
        (
            "protocol TCP",
            one("name: web, port: 80, to: 192.168.1.2, protocol: TCP"),
        ),
        (
            "protocol Both",
            one("name: web, port: 80, to: 192.168.1.2, protocol: Both"),
        ),
        (
            "port text with zeros",
            one("name: web, port: \"00080\", to: 192.168.1.2"),
        ),
        (
            "port hexadecimal",
            one("name: web, port: 0x1F90, to: 192.168.1.2"),
        ),
        ("port 65535", one("name: web, port: 65535, to: 192.168.1.2")),
        (
            "range",
            one("name: web, port: 6000-6002, to: 192.168.1.2, to_port: \"7000-7002\""),
        ),
        (
            "IPv6",
            one("name: web, port: 443, to: \"2001:db8::66\", allow_from: [\"2001:db8:7::/48\"]"),
        ),
        (
            "allow_from a host",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [198.51.100.7, 10.0.0.0/8]"),
        ),
        (
            "description null",
            one("name: web, port: 80, to: 192.168.1.2, description: ~"),
        ),
        (
            "name of 64",
            one(&format!("name: {}, port: 80, to: 192.168.1.2", "a".repeat(64))),
        ),
        (
            "disabled",
            one("name: web, port: 80, to: 192.168.1.2, enabled: false"),
        ),
    ];
    for (case, text) in &cases {
        if let Err(e) = load_str(text, "case") {
            panic!("{case}: the validator accepts it\n{text}\n{e}");
        }
        let errors = schema_errors(&v, text);
        assert!(
            errors.is_empty(),
            "{case}: the schema must accept it: {errors:#?}\n{text}"
        );
    }
}

/// The rules only `portmap validate` checks (named in the schema module's documentation): the
/// schema accepts these, the validator does not. If the schema learns one, move it up.
#[test]
fn what_only_the_validator_can_tell() {
    let v = validator();
    let cases: Vec<(&str, String)> = vec![
        (
            "duplicate names",
            format!(
                "{HEAD}mappings:\n  - {{ name: web, port: 80, to: 192.168.1.2 }}\n  - {{ name: web, port: 81, to: 192.168.1.2 }}\n"
            ),
        ),
        (
            "overlapping ports",
            format!(
                "{HEAD}mappings:\n  - {{ name: a, port: 80, to: 192.168.1.2 }}\n  - {{ name: b, port: 70-90, to: 192.168.1.3 }}\n"
            ),
        ),
        (
            "to_port range of another length",
            one("name: web, port: 6000-6002, to: 192.168.1.2, to_port: \"7000-7001\""),
        ),
        (
            "reversed range",
            one("name: web, port: 6010-6000, to: 192.168.1.2"),
        ),
        (
            "allow_from of the other family",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [\"2001:db8::/32\"]"),
        ),
        (
            "allow_from with host bits",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [10.0.0.1/8]"),
        ),
        (
            "allow_from inside another",
            one("name: web, port: 80, to: 192.168.1.2, allow_from: [10.0.0.0/8, 10.1.0.0/16]"),
        ),
        ("to loopback", one("name: web, port: 80, to: 127.0.0.1")),
        (
            "interface on both sides",
            "wan: { interfaces: [eth0] }\nlan: { interfaces: [eth0] }\n".to_owned(),
        ),
    ];
    for (case, text) in &cases {
        assert!(
            load_str(text, "case").is_err(),
            "{case}: the validator refuses it\n{text}"
        );
        assert!(
            schema_errors(&v, text).is_empty(),
            "{case}: the schema now refuses it; move it to what_the_validator_refuses_the_schema_refuses\n{text}"
        );
    }
}
