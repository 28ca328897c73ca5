//! The JSON documents portmap prints for machines (`--json`), versioned as one interface: every
//! document is an object carrying `"format": JSON_FORMAT` and `"command"` (which command made it),
//! and either the command's result or an `"error"` object. `docs/json.md` documents each shape and
//! the versioning promise; this module builds them from values (a plan, an observation, what an
//! apply sent) and does no I/O. The plan file (`plan --out`) is [`crate::Plan`]'s serde form and
//! has its own version, [`crate::PLAN_FORMAT_VERSION`].
//!
//! One shape for a mapping on both sides of a change: in `changes[]` the `before` of an update,
//! repair or delete carries the same mapping fields as `after` (or `mapping` of a create) — `name`,
//! `protocol`, `port`, `to`, `to_port`, `allow_from`, `description`, with the same types — and
//! adds what the kernel holds (`forwards`, `damage`). `plan` and `apply` print the same `changes`.

use serde_json::{Map, Value, json};

use crate::error::{ConfigError, ConfigErrors};
use crate::load::valid_keys;
use crate::model::{Observed, ObservedMapping};
use crate::plan::{Change, Plan};
use crate::render::{MappingSummary, plan_json, status_json};

/// Version of the JSON interface. Fields may be added to any document (and values to the open
/// lists `docs/json.md` names) without a change of this number; removing or renaming a field, or
/// changing its type or meaning, raises it.
pub const JSON_FORMAT: u32 = 1;

/// `body` (an object) with `format` and `command` set: the envelope every document has.
pub fn document(command: &str, body: Value) -> Value {
    let mut map = match body {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("result".to_owned(), other);
            map
        }
    };
    map.insert("format".to_owned(), json!(JSON_FORMAT));
    map.insert("command".to_owned(), json!(command));
    Value::Object(map)
}

/// The mapping fields of an observed mapping in configuration terms (as [`MappingSummary`] folds
/// them), merged into its serde form: what `before` is in a change.
fn before_json(before: &ObservedMapping) -> Value {
    let mut value = serde_json::to_value(before).unwrap_or(Value::Null);
    let summary = serde_json::to_value(MappingSummary::from_observed(before)).unwrap_or(Value::Null);
    if let (Value::Object(map), Value::Object(summary)) = (&mut value, summary) {
        for key in ["protocol", "port", "to", "to_port", "listen"] {
            if let Some(v) = summary.get(key)
                && !map.contains_key(key)
                // `listen` is left out when empty, as in `after`.
                && !(key == "listen" && v.as_array().is_some_and(Vec::is_empty))
            {
                map.insert(key.to_owned(), v.clone());
            }
        }
    }
    value
}

/// A plan's fields as [`plan_json`] gives them (so that [`Plan::from_json`] still reads them
/// back), with each change's `name` at its top and its `before` in the shape of its `after`, and
/// `"empty"`: whether there is nothing to do.
fn plan_fields(plan: &Plan) -> Value {
    let mut value = plan_json(plan);
    if let Some(Value::Array(changes)) = value.get_mut("changes") {
        for (json, change) in changes.iter_mut().zip(&plan.changes) {
            json["name"] = json!(change.name(&plan.desired));
            if let Change::Update { before, .. }
            | Change::Repair { before, .. }
            | Change::Delete { before, .. } = change
            {
                json["before"] = before_json(before);
            }
        }
    }
    if let (Some(now), Some(Value::Array(changes))) = (plan.made_at, value.get_mut("changes")) {
        for json in changes {
            for side in ["mapping", "after", "before"] {
                if let Some(t) = json[side]["expires"]
                    .as_str()
                    .and_then(|t| t.parse::<crate::UtcTime>().ok())
                {
                    json[side]["expires_in_seconds"] = json!(t.seconds_from(now));
                }
            }
        }
    }
    if let Value::Object(map) = &mut value {
        map.insert("empty".to_owned(), json!(plan.is_empty()));
    }
    value
}

/// `plan --json` (and `show --json` with `command` `show`): the plan, readable back by
/// [`Plan::from_json`].
pub fn plan_document(command: &str, plan: &Plan) -> Value {
    document(command, plan_fields(plan))
}

/// What an apply sent and cleared, for [`apply_document`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct Applied {
    /// Kernel messages (nft) or restore lines (iptables) sent; 0 when nothing was sent.
    pub messages: usize,
    /// Kernel objects touched.
    pub objects: usize,
    /// Whether the whole table was (re)built.
    pub rebuilt: bool,
    /// Tracked connections removed.
    pub flows_cleared: usize,
    /// How many times portmap planned (more than 1 when another program changed the ruleset in
    /// between).
    pub attempts: usize,
    /// Milliseconds from the approval to the end of the apply.
    pub elapsed_ms: f64,
}

impl Applied {
    /// From an [`crate::ApplyReport`], the attempts and the time taken.
    pub fn new(report: &crate::ApplyReport, attempts: usize, elapsed_ms: f64) -> Self {
        Applied {
            messages: report.messages,
            objects: report.objects,
            rebuilt: report.rebuilt,
            flows_cleared: report.flows_cleared,
            attempts,
            elapsed_ms,
        }
    }
}

/// `apply --json`: the plan carried out (the fields of [`plan_document`]), `"changed"` (whether
/// anything was done: false when the kernel already matched), what was sent, the attempts and the
/// tracked connections removed.
pub fn apply_document(plan: &Plan, applied: &Applied) -> Value {
    let mut value = plan_fields(plan);
    if let Value::Object(map) = &mut value {
        map.insert("changed".to_owned(), json!(!plan.is_empty()));
        map.insert(
            "sent".to_owned(),
            json!({
                "messages": applied.messages,
                "objects": applied.objects,
                "rebuilt": applied.rebuilt,
                "transaction": if plan.backend == "nft" { "netlink batch" } else { "iptables-restore per table" },
            }),
        );
        map.insert("attempts".to_owned(), json!(applied.attempts));
        map.insert("flows_cleared".to_owned(), json!(applied.flows_cleared));
        map.insert(
            "elapsed_ms".to_owned(),
            json!((applied.elapsed_ms * 10.0).round() / 10.0),
        );
    }
    document("apply", value)
}

/// `status --json`: [`status_json`] in the envelope (the CLI adds `confirm`).
pub fn status_document(observed: &Observed) -> Value {
    document("status", status_json(observed))
}

/// `destroy --json`: whether a table was removed, the names of the mappings it held, and the
/// tracked connections removed with them.
pub fn destroy_document(backend: &str, table: &str, removed: Option<(&[String], usize)>) -> Value {
    let (names, flows) = removed.unwrap_or((&[], 0));
    document(
        "destroy",
        json!({
            "backend": backend,
            "table": table,
            "changed": removed.is_some(),
            "mappings_removed": names,
            "flows_cleared": flows,
        }),
    )
}

/// `validate --json` of a valid configuration.
pub fn validate_document(origin: &str, model: &crate::model::Model) -> Value {
    document(
        "validate",
        json!({
            "valid": true,
            "file": origin,
            "mappings": model.mappings.len(),
            "disabled": model.disabled.len(),
        }),
    )
}

/// The values valid where `error` points, when they are a closed set: the keys of a section
/// for an error about a key in it (unknown, duplicate, misplaced), the words of an enumerated
/// field (`protocol`, the booleans, `version`). `None` when the valid values are open (ports,
/// addresses, names) or not known.
pub fn valid_values(error: &ConfigError) -> Option<Vec<String>> {
    let field = error.field.as_str();
    if let Some(keys) = valid_keys(field) {
        let about_keys = error.message.contains("key") || error.message.contains("not valid here");
        return about_keys.then(|| keys.iter().map(|k| (*k).to_owned()).collect());
    }
    let last = field.rsplit('.').next().unwrap_or(field);
    let words: &[&str] = match last {
        "protocol" => &["tcp", "udp", "both"],
        "masquerade" | "hairpin" | "enabled" => &["true", "false"],
        "version" => return Some(vec![crate::config::CONFIG_VERSION.to_string()]),
        _ => return None,
    };
    Some(words.iter().map(|w| (*w).to_owned()).collect())
}

/// One configuration error: `file`, `line` and `column` (null when not known), `field`,
/// `message`, and `valid` when [`valid_values`] knows them.
pub fn config_error_json(error: &ConfigError) -> Value {
    let (line, column) = error.position.map_or((None, None), |(l, c)| (Some(l), Some(c)));
    let mut value = json!({
        "file": error.origin,
        "line": line,
        "column": column,
        "field": error.field,
        "message": error.message,
    });
    if let Some(valid) = valid_values(error) {
        value["valid"] = json!(valid);
    }
    value
}

/// What went wrong, for the `"error"` object of [`error_document`].
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// A word for the kind of failure (`invalid_config`, `usage`, `refused`, `lock`, …; the list
    /// in `docs/json.md` may grow).
    pub kind: &'a str,
    /// The whole message, as it would be printed for people.
    pub message: &'a str,
    /// The configuration's errors, when it was invalid.
    pub config_errors: Option<&'a ConfigErrors>,
}

/// The document of a command that failed: `"error": {"kind", "message"}` and, for an invalid
/// configuration, `"errors"` (each as [`config_error_json`]), `"total"` and `"omitted"`.
pub fn error_document(command: &str, failure: &Failure<'_>) -> Value {
    let mut error = json!({ "kind": failure.kind, "message": failure.message });
    if let Some(errors) = failure.config_errors {
        error["errors"] = Value::Array(errors.iter().map(config_error_json).collect());
        error["total"] = json!(errors.len());
        error["omitted"] = json!(errors.omitted());
    }
    document(command, json!({ "error": error }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{load_str, plan::plan};

    const CONFIG: &str = "wan: { interfaces: [wan0] }\nmappings:\n\
        \x20 - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }\n";

    #[test]
    fn before_and_after_of_an_update_have_the_same_mapping_fields() {
        let model = load_str(CONFIG, "t").unwrap();
        let mut observed = Observed::from_model(&model, "nft", "inet portmap", Some(3));
        observed.mappings[0].forwards[0].to = "192.168.1.67".parse().unwrap();
        observed.place = Some(crate::model::Place {
            boot_id: "6f1c2b9e-1f2a-4c55-9a3e-2b7d0c1e9f10".into(),
            netns: 4_026_531_840,
        });
        let p = plan(&model, &observed);
        let doc = plan_document("plan", &p);
        let change = &doc["changes"][0];
        assert_eq!(change["action"], "update");
        assert_eq!(change["name"], "web");
        for key in [
            "name",
            "protocol",
            "port",
            "to",
            "to_port",
            "allow_from",
            "description",
        ] {
            let (b, a) = (&change["before"][key], &change["after"][key]);
            assert!(!b.is_null() || a.is_null(), "{key}: {change:#}");
            assert_eq!(
                std::mem::discriminant(b),
                std::mem::discriminant(a),
                "{key} has one type on both sides: {change:#}"
            );
        }
        assert_eq!(change["before"]["to"], "192.168.1.67");
        assert_eq!(change["after"]["to"], "192.168.1.66");
        assert_eq!(doc["format"], JSON_FORMAT);
        // The document is still a plan file.
        assert_eq!(Plan::from_json(&doc.to_string()).unwrap(), p);
    }

    fn error(field: &str, message: &str) -> ConfigError {
        ConfigError {
            origin: "f.yaml".into(),
            position: Some((3, 5)),
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn valid_values_for_closed_sets_only() {
        let v = |field, message| valid_values(&error(field, message));
        assert_eq!(
            v("mappings[3].protocol", "unknown protocol `sctp`").unwrap(),
            ["tcp", "udp", "both"]
        );
        let keys = v("mappings[0]", "unknown key `protocl`; did you mean `protocol`?").unwrap();
        assert!(keys.contains(&"to_port".to_owned()), "{keys:?}");
        assert!(
            v("", "unknown key `mapings`")
                .unwrap()
                .contains(&"mappings".to_owned())
        );
        assert_eq!(v("wan", "duplicate key `interfaces`").unwrap(), ["interfaces"]);
        // A clash named at a mapping is not about its keys; ports and addresses are open.
        assert_eq!(v("mappings[0]", "tcp port 80 is also forwarded by web"), None);
        assert_eq!(v("", "did not find expected node content"), None);
        assert_eq!(v("mappings[0].port", "port 0 is not valid"), None);
        assert_eq!(v("mappings[0].allow_from[1]", "not a CIDR"), None);
        let json = config_error_json(&error("mappings[0].protocol", "unknown protocol"));
        assert_eq!(
            json,
            json!({"file": "f.yaml", "line": 3, "column": 5, "field": "mappings[0].protocol",
                   "message": "unknown protocol", "valid": ["tcp", "udp", "both"]})
        );
    }
}
