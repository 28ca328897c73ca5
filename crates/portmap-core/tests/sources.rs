//! Named source lists (`sources:`): how `allow_from` uses them, what the model holds, and the
//! errors for what is wrong in them, each with its `file:line:col`.

use portmap_core::{Config, load_str, validate};

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("prefix")
}

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "portmap.yaml") {
        Ok(model) => panic!("expected errors, got a model: {model:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const GOOD: &str = "\
wan: { interfaces: [wan0] }
sources:
  office: [198.51.100.0/24, 2001:db8:1::/48, 198.51.101.0/24]
  home: [203.0.113.7]
mappings:
  - { name: ssh, port: 22, to: 192.168.1.2, allow_from: [office, 192.0.2.9, home] }
  - { name: ssh6, port: 22, to: \"2001:db8:2::2\", allow_from: [office] }
  - { name: web, port: 80, to: 192.168.1.3, allow_from: [192.0.2.0/24] }
";

#[test]
fn allow_from_mixes_names_and_prefixes_and_the_model_keeps_both_forms() {
    let model = load_str(GOOD, "portmap.yaml").expect("valid");
    let office = &model.sources["office"];
    assert_eq!(office.v4, vec![net("198.51.100.0/23")], "adjacent prefixes merge");
    assert_eq!(office.v6, vec![net("2001:db8:1::/48")]);
    let ssh = &model.mappings[0];
    assert_eq!(ssh.allow_sources, vec!["home".to_owned(), "office".to_owned()]);
    assert_eq!(ssh.allow_inline, vec![net("192.0.2.9/32")]);
    assert_eq!(ssh.inline_prefixes(), &[net("192.0.2.9/32")]);
    assert_eq!(
        ssh.allow_from,
        vec![net("192.0.2.9/32"), net("198.51.100.0/23"), net("203.0.113.7/32")],
        "what the kernel enforces: the prefixes and the lists' members of the mapping's family"
    );
    let ssh6 = &model.mappings[1];
    assert_eq!(ssh6.allow_from, vec![net("2001:db8:1::/48")]);
    assert!(ssh6.inline_prefixes().is_empty());
    let web = &model.mappings[2];
    assert!(web.allow_sources.is_empty() && web.allow_inline.is_empty());
    assert_eq!(web.inline_prefixes(), &[net("192.0.2.0/24")]);
}

#[test]
fn a_model_goes_back_to_a_configuration_with_its_lists() {
    let model = load_str(GOOD, "portmap.yaml").expect("valid");
    let config = Config::from(&model);
    assert_eq!(config.mappings[0].allow_from, ["home", "office", "192.0.2.9/32"]);
    assert_eq!(config.sources["office"], ["198.51.100.0/23", "2001:db8:1::/48"]);
    assert_eq!(validate(&config).expect("valid again"), model);
}

#[test]
fn unknown_names_are_refused_with_the_names_that_exist() {
    let text = "\
wan: { interfaces: [wan0] }
sources:
  office: [198.51.100.0/24]
  home: [203.0.113.7]
mappings:
  - { name: ssh, port: 22, to: 192.168.1.2, allow_from: [ofice] }
";
    assert_eq!(
        errors(text),
        [
            "portmap.yaml:6:58: mappings[0].allow_from[0]: unknown source list `ofice`; the lists in `sources` are: \
          home, office"
        ]
    );
    let none = "\
wan: { interfaces: [wan0] }
mappings:
  - { name: ssh, port: 22, to: 192.168.1.2, allow_from: [office] }
";
    assert_eq!(
        errors(none),
        [
            "portmap.yaml:3:58: mappings[0].allow_from[0]: `office` is not an address or CIDR prefix, and the file \
          defines no `sources` list of that name; use e.g. 203.0.113.0/24, or define `sources: { office: [...] }` \
          at the top level"
        ]
    );
}

#[test]
fn bad_lists_and_uses_are_refused_where_they_are() {
    let text = "\
wan: { interfaces: [wan0] }
sources:
  office: [198.51.100.1/24, bogus, 198.51.100.0/25, 198.51.100.0/24]
  v6only: [\"2001:db8::/32\"]
  empty: []
  bad_name!: [192.0.2.0/24]
  numbers: [1, 192.0.2.0/24]
mappings:
  - { name: a, port: 1, to: 192.168.1.2, allow_from: [office] }
  - { name: b, port: 2, to: 192.168.1.2, allow_from: [v6only] }
  - { name: c, port: 3, to: 192.168.1.2, allow_from: [numbers, 10.0.0] }
";
    assert_eq!(
        errors(text),
        [
            "portmap.yaml:3:12: sources.office[0]: 198.51.100.1/24 has host bits set; did you mean 198.51.100.0/24?",
            "portmap.yaml:3:29: sources.office[1]: `bogus` is not an address or CIDR prefix; use e.g. \
             203.0.113.0/24 or 198.51.100.7",
            "portmap.yaml:3:53: sources.office[3]: 198.51.100.0/24 contains 198.51.100.0/25 (sources.office[2], line \
             3); list each source once",
            "portmap.yaml:5:10: sources.empty: the list is empty; list its sources (e.g. [198.51.100.0/24]) or \
             remove it",
            "portmap.yaml:6:3: sources.bad_name!: the list name `bad_name!` contains `!`; use 1-64 characters from \
             A-Z a-z 0-9 _ . - starting with a letter or digit",
            "portmap.yaml:7:13: sources.numbers[0]: expected an address or CIDR prefix such as 198.51.100.0/24, got `1`",
            "portmap.yaml:10:55: mappings[1].allow_from[0]: the list `v6only` holds only IPv6 prefixes but `to` is \
             IPv4; add IPv4 prefixes to it or use another list",
            "portmap.yaml:11:64: mappings[2].allow_from[1]: `10.0.0` is not an address or CIDR prefix; use e.g. \
             203.0.113.0/24 or 198.51.100.7",
        ]
    );
}

#[test]
fn a_list_named_twice_in_one_allow_from_is_refused() {
    let text = "\
wan: { interfaces: [wan0] }
sources: { office: [198.51.100.0/24] }
mappings:
  - { name: a, port: 1, to: 192.168.1.2, allow_from: [office, office] }
";
    assert_eq!(
        errors(text),
        [
            "portmap.yaml:4:63: mappings[0].allow_from[1]: the list `office` is named twice (first as \
          mappings[0].allow_from[0]); name each list once"
        ]
    );
}

#[test]
fn sources_in_a_mapping_points_to_allow_from() {
    let text = "\
wan: { interfaces: [wan0] }
mappings:
  - { name: a, port: 1, to: 192.168.1.2, sources: [192.0.2.0/24] }
";
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("did you mean `allow_from`?"), "{errors:?}");
}

/// Against a backend that keeps each list in one kernel object: a change of a list is one
/// source change, used by both mappings, and no mapping change; a mapping naming another list is
/// its own `allow_from` change.
#[test]
fn a_list_change_is_one_source_change_not_one_per_mapping() {
    let two = |office: &str| {
        format!(
            "wan: {{ interfaces: [wan0] }}\nsources: {{ office: [{office}] }}\nmappings:\n\
             \x20 - {{ name: a, port: 1, to: 192.168.1.2, allow_from: [office] }}\n\
             \x20 - {{ name: b, port: 2, to: 192.168.1.3, allow_from: [office, 192.0.2.9] }}\n"
        )
    };
    let before = load_str(&two("198.51.100.0/24"), "a").expect("valid");
    let after = load_str(&two("198.51.100.0/24, 203.0.113.0/24"), "b").expect("valid");
    let observed = portmap_core::Observed::from_model(&before, "nft", "inet portmap", Some(1));
    let plan = portmap_core::plan(&after, &observed);
    assert!(plan.changes.is_empty(), "{plan:#?}");
    assert_eq!(plan.sources.len(), 1);
    let change = &plan.sources[0];
    assert_eq!(change.name, "office");
    assert_eq!(change.used_by, ["a", "b"]);
    assert_eq!(change.delta(), (vec![net("203.0.113.0/24")], vec![]));
    assert!(change.stale.is_empty(), "widening a list makes no flow stale");
    let text = portmap_core::render_plan(&plan, false);
    assert!(
        text.contains("~ change source list office (used by a, b)\n    + 203.0.113.0/24\n"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to create, 0 to change, 0 to delete; 1 source list to update."),
        "{text}"
    );

    // Narrowed: the flows of both mappings from sources no longer admitted go.
    let observed = portmap_core::Observed::from_model(&after, "nft", "inet portmap", Some(2));
    let plan = portmap_core::plan(&before, &observed);
    let stale = plan.stale_flows();
    let mut names: Vec<&str> = stale.iter().map(|s| s.mapping.as_str()).collect();
    names.dedup();
    assert_eq!(names, ["a", "b"], "{stale:#?}");
    assert!(stale.iter().all(|s| s.unless_from.is_some()));

    // Against a backend that writes each mapping's prefixes into its rules, the same change is
    // an allow_from change of each mapping.
    let mut expanded = portmap_core::Observed::from_model(&before, "iptables", "portmap", Some(1));
    expanded.sources = None;
    let plan = portmap_core::plan(&after, &expanded);
    assert!(plan.sources.is_empty());
    assert_eq!(plan.changes.len(), 2);

    // Naming another list is the mapping's own change.
    let other = load_str(
        "wan: { interfaces: [wan0] }\nsources: { office: [198.51.100.0/24], home: [203.0.113.7] }\nmappings:\n\
         \x20 - { name: a, port: 1, to: 192.168.1.2, allow_from: [home] }\n\
         \x20 - { name: b, port: 2, to: 192.168.1.3, allow_from: [office, 192.0.2.9] }\n",
        "c",
    )
    .expect("valid");
    let plan = portmap_core::plan(&other, &observed_of(&before));
    assert_eq!(plan.sources.len(), 1, "home is created: {plan:#?}");
    assert!(plan.sources[0].before.is_none());
    let [portmap_core::Change::Update { fields, .. }] = plan.changes.as_slice() else {
        panic!("{plan:#?}");
    };
    assert_eq!(fields[0].field, "allow_from");
    assert_eq!(
        (fields[0].before.as_str(), fields[0].after.as_str()),
        ("[office]", "[home]")
    );
}

fn observed_of(model: &portmap_core::Model) -> portmap_core::Observed {
    portmap_core::Observed::from_model(model, "nft", "inet portmap", Some(1))
}
