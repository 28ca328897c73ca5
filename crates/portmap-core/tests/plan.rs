//! `plan()` on hand-built Model/Observed pairs, the plan and status renderings (named insta snapshots
//! for examples/home-router.yaml), and the plan file round trip.

use std::net::IpAddr;

use portmap_core::{
    Change, DeleteReason, FieldChange, Forward, ForwardRun, Mapping, MappingSummary, Model, Observed,
    ObservedMapping, PLAN_FORMAT_VERSION, Plan, PlanFileError, PortRange, Protocol, TableAction, TableState,
    Transport, fold_forwards, load_str, plan, plan_json, render_plan, render_status, status_json,
};

const TABLE: &str = "inet portmap";

fn home() -> Model {
    load_str(
        include_str!("../../../examples/home-router.yaml"),
        "home-router.yaml",
    )
    .expect("example is valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Where the test plans are "made": a boot id and a namespace inode.
fn here() -> portmap_core::Place {
    portmap_core::Place {
        boot_id: "6f1c2b9e-1f2a-4c55-9a3e-2b7d0c1e9f10".into(),
        netns: 4_026_531_840,
    }
}

fn applied(model: &Model) -> Observed {
    Observed {
        place: Some(here()),
        ..Observed::from_model(model, "nft", TABLE, Some(42))
    }
}

fn mapping<'m>(model: &'m Model, name: &str) -> &'m Mapping {
    model
        .mappings
        .iter()
        .find(|m| m.name == name)
        .expect("mapping in model")
}

fn observed_mut<'o>(observed: &'o mut Observed, name: &str) -> &'o mut ObservedMapping {
    observed
        .mappings
        .iter_mut()
        .find(|m| m.name == name)
        .expect("mapping observed")
}

/// The home example, applied, then changed by hand and in the file: a mix of every kind of change.
fn mixed() -> (Model, Observed) {
    let mut model = home();
    let mut observed = applied(&model);
    // In the kernel: web points elsewhere, mail-imap lost its allow-list entry and its description,
    // game has a gap, an old mapping and the disabled ssh are still there.
    observed_mut(&mut observed, "web").forwards[0].to = ip("192.168.1.67");
    let imap = observed_mut(&mut observed, "mail-imap");
    imap.allow_from.truncate(1);
    imap.description = None;
    observed_mut(&mut observed, "game")
        .forwards
        .retain(|f| f.port != 27020);
    let ssh = Mapping {
        name: "ssh".into(),
        protocol: Protocol::Tcp,
        port: PortRange::single(2222),
        to: ip("192.168.1.10"),
        to_port: PortRange::single(22),
        allow_from: vec![],
        allow_sources: Vec::new(),
        allow_inline: Vec::new(),
        description: Some("ssh to the NAS (off until needed)".into()),
        log: None,
        limit: None,
        expires: None,
        listen: Vec::new(),
    };
    let old = Mapping {
        name: "old-ftp".into(),
        port: PortRange::single(21),
        to: ip("192.168.1.5"),
        ..ssh.clone()
    };
    observed.mappings.push(ObservedMapping::from_mapping(&ssh));
    observed.mappings.push(ObservedMapping::from_mapping(&old));
    observed.mappings.sort_by(|a, b| a.name.cmp(&b.name));
    observed.settings.masquerade = true;
    observed.state = TableState::Damaged {
        reasons: vec!["chain prerouting is missing".into()],
    };
    // In the file: a new mapping.
    let mut vpn = mapping(&model, "dns").clone();
    vpn.name = "vpn".into();
    vpn.protocol = Protocol::Udp;
    vpn.port = PortRange::single(51820);
    vpn.to_port = vpn.port;
    vpn.description = Some("WireGuard".into());
    model.mappings.push(vpn);
    (model, observed)
}

#[test]
fn missing_table_creates_everything() {
    let model = home();
    let p = plan(&model, &Observed::missing("nft", TABLE, Some(7)));
    assert_eq!(p.table_action, TableAction::Create);
    assert!(p.settings.is_empty());
    assert_eq!(p.generation, Some(7));
    let names: Vec<&str> = p.changes.iter().map(|c| c.name(&p.desired)).collect();
    assert_eq!(
        names,
        [
            "cameras",
            "dns",
            "game",
            "mail-imap",
            "mail-pop3",
            "mail-smtp",
            "web"
        ]
    );
    assert!(p.changes.iter().all(|c| matches!(c, Change::Create { .. })));
    assert!(!p.is_empty());
}

#[test]
fn a_plan_holds_one_model_and_small_changes() {
    let model = home();
    let observed = Observed::missing("nft", TABLE, Some(7));
    let p = portmap_core::plan_owned(model.clone(), &observed);
    assert_eq!(p, plan(&model, &observed));
    // A create names its mapping in the desired state; what the kernel has is boxed.
    assert!(
        std::mem::size_of::<Change>() <= 48,
        "{}",
        std::mem::size_of::<Change>()
    );
    for change in &p.changes {
        let Change::Create { index } = change else {
            panic!("{change:?}")
        };
        assert_eq!(change.mapping(&p.desired), Some(&model.mappings[*index]));
        assert_eq!(change.name(&p.desired), model.mappings[*index].name);
    }
    // Written in full, each create with its mapping, and read back to the same plan.
    let value = serde_json::to_value(&p).expect("serialize");
    let web = model.mappings.iter().find(|m| m.name == "web").expect("web");
    let written = value["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["mapping"]["name"] == "web")
        .expect("web is created");
    assert_eq!(
        *written,
        serde_json::json!({"action": "create", "mapping": serde_json::to_value(web).expect("mapping")})
    );
    let back: Plan = serde_json::from_value(value.clone()).expect("read back");
    assert_eq!(back, p);
    // A create whose mapping the desired state does not have as written is not a plan.
    let mut edited = value;
    edited["changes"][0]["mapping"]["description"] = serde_json::json!("edited");
    let err = serde_json::from_value::<Plan>(edited).expect_err("the create does not match");
    assert!(
        err.to_string().contains("does not match the desired state"),
        "{err}"
    );
}

#[test]
fn equal_state_gives_an_empty_plan() {
    let model = home();
    let p = plan(&model, &applied(&model));
    assert!(p.is_empty(), "{p:#?}");
    assert_eq!(
        p.to_string(),
        "No changes. The kernel matches the configuration (7 mappings).\n"
    );
    // Warnings are shown but are not changes.
    let mut p = p;
    p.warnings
        .push("table ip nat of iptables-nft also has DNAT rules for port 8080".into());
    assert!(p.is_empty());
    assert_eq!(
        p.to_string(),
        "No changes. The kernel matches the configuration (7 mappings).\n\nWarnings:\n  - table ip nat of \
         iptables-nft also has DNAT rules for port 8080\n"
    );
}

#[test]
fn changed_target_is_an_update_of_to() {
    let model = home();
    let mut observed = applied(&model);
    for f in &mut observed_mut(&mut observed, "web").forwards {
        f.to = ip("192.168.1.67");
    }
    let p = plan(&model, &observed);
    assert_eq!(p.changes.len(), 1);
    let Change::Update { fields, after, .. } = &p.changes[0] else {
        panic!("expected an update: {p:#?}")
    };
    assert_eq!(after.name, "web");
    assert_eq!(
        fields,
        &[FieldChange {
            field: "to".into(),
            before: "192.168.1.67".into(),
            after: "192.168.1.66".into()
        }]
    );
}

#[test]
fn deletes_say_why() {
    let model = home();
    let mut observed = applied(&model);
    let extra = |name: &str, port| ObservedMapping {
        name: name.into(),
        description: None,
        forwards: vec![Forward {
            transport: Transport::Tcp,
            port,
            to: ip("192.168.1.10"),
            to_port: port,
            listen: None,
        }],
        allow_from: vec![],
        allow_sources: Vec::new(),
        allow_inline: Vec::new(),
        damage: vec![],
        objects: vec![],
        log: None,
        limit: None,
        expires: None,
        counters: None,
        active_flows: None,
    };
    observed.mappings.push(extra("ssh", 2222));
    observed.mappings.push(extra("gone", 9000));
    let p = plan(&model, &observed);
    let deletes: Vec<(&str, DeleteReason)> = p
        .changes
        .iter()
        .map(|c| match c {
            Change::Delete { before, reason } => (before.name.as_str(), *reason),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        deletes,
        [
            ("gone", DeleteReason::NotInConfig),
            ("ssh", DeleteReason::Disabled)
        ]
    );
}

#[test]
fn repair_carries_the_reasons() {
    let model = home();
    let mut observed = applied(&model);
    observed.state = TableState::Damaged {
        reasons: vec!["chain prerouting is missing".into(), "map fwd4 has flags".into()],
    };
    let p = plan(&model, &observed);
    assert_eq!(
        p.table_action,
        TableAction::Repair {
            reasons: vec!["chain prerouting is missing".into(), "map fwd4 has flags".into()]
        }
    );
    assert!(p.changes.is_empty());
    assert!(!p.is_empty());
}

#[test]
fn mangled_forwards_show_as_a_forwards_change() {
    let model = home();
    let mut observed = applied(&model);
    observed_mut(&mut observed, "cameras")
        .forwards
        .retain(|f| f.port != 6001);
    let p = plan(&model, &observed);
    let Change::Update { fields, .. } = &p.changes[0] else {
        panic!("expected an update: {p:#?}")
    };
    assert_eq!(
        fields,
        &[FieldChange {
            field: "forwards".into(),
            before: "tcp 6000 → 192.168.1.80:7000, tcp 6002 → 192.168.1.80:7002".into(),
            after: "tcp 6000-6002 → 192.168.1.80:7000-7002".into(),
        }]
    );
}

#[test]
fn settings_changes_are_listed() {
    let model = home();
    let mut observed = applied(&model);
    observed.settings.hairpin = false;
    observed.settings.wan_interfaces = vec!["wan0".into(), "wan1".into()];
    let p = plan(&model, &observed);
    let fields: Vec<(&str, &str, &str)> = p
        .settings
        .iter()
        .map(|s| (s.field.as_str(), s.before.as_str(), s.after.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("wan.interfaces", "[wan0, wan1]", "[wan0]"),
            ("hairpin", "false", "true")
        ]
    );
    assert!(
        p.to_string()
            .ends_with("Plan: 0 to create, 0 to change, 0 to delete; 2 settings to change.\n")
    );
}

#[test]
fn fold_forwards_finds_runs() {
    let f = |transport, port, to: &str, to_port| Forward {
        transport,
        port,
        to: ip(to),
        to_port,
        listen: None,
    };
    let a = "10.0.0.1";
    let runs = fold_forwards(&[
        f(Transport::Udp, 6001, a, 7001),
        f(Transport::Tcp, 6000, a, 7000),
        f(Transport::Tcp, 6001, a, 7001),
        f(Transport::Udp, 6000, a, 7000),
        f(Transport::Tcp, 80, "10.0.0.2", 8080),
        f(Transport::Udp, 80, "10.0.0.3", 80),
        f(Transport::Tcp, 65535, a, 65535),
    ]);
    let shown: Vec<String> = runs.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "tcp 80 → 10.0.0.2:8080",
            "udp 80 → 10.0.0.3:80",
            "both 6000-6001 → 10.0.0.1:7000-7001",
            "tcp 65535 → 10.0.0.1:65535",
        ]
    );
    assert_eq!(
        runs[2],
        ForwardRun {
            protocol: Protocol::Both,
            port: PortRange {
                start: 6000,
                end: 6001
            },
            to: ip(a),
            to_port: PortRange {
                start: 7000,
                end: 7001
            },
        }
    );
    // Every mapping folds back to exactly itself.
    for m in &home().mappings {
        let runs = fold_forwards(&m.forwards());
        assert_eq!(
            runs,
            [ForwardRun {
                protocol: m.protocol,
                port: m.port,
                to: m.to,
                to_port: m.to_port
            }]
        );
    }
}

#[test]
fn summaries_fold_or_list() {
    let model = home();
    let observed = applied(&model);
    let cams = MappingSummary::from_observed(
        observed
            .mappings
            .iter()
            .find(|m| m.name == "cameras")
            .expect("cameras"),
    );
    assert_eq!(
        (
            cams.protocol.as_str(),
            cams.port.as_str(),
            cams.to.as_str(),
            cams.to_port.as_str()
        ),
        ("tcp", "6000-6002", "192.168.1.80", "7000-7002")
    );
    assert!(cams.forwards.is_empty());
    let mut mangled = observed
        .mappings
        .iter()
        .find(|m| m.name == "game")
        .expect("game")
        .clone();
    mangled.forwards.retain(|f| f.port != 27020);
    let s = MappingSummary::from_observed(&mangled);
    assert_eq!(s.port, "27015-27019,27021-27030");
    assert_eq!(
        s.forwards,
        [
            "udp 27015-27019 → 192.168.1.70:27015-27019",
            "udp 27021-27030 → 192.168.1.70:27021-27030"
        ]
    );
}

#[test]
fn colour_only_when_asked() {
    let model = home();
    let p = plan(&model, &Observed::missing("nft", TABLE, None));
    assert!(!render_plan(&p, false).contains('\x1b'));
    let coloured = render_plan(&p, true);
    assert!(
        coloured.contains("\x1b[32m+\x1b[0m \x1b[1mweb\x1b[0m"),
        "{coloured}"
    );
    let (model, observed) = mixed();
    let coloured = render_plan(&plan(&model, &observed), true);
    assert!(
        coloured.contains("\x1b[33m~\x1b[0m \x1b[1mweb\x1b[0m"),
        "{coloured}"
    );
    assert!(
        coloured.contains("\x1b[31m-\x1b[0m \x1b[1mold-ftp\x1b[0m"),
        "{coloured}"
    );
    assert!(!render_status(&observed, false).contains('\x1b'));
}

#[test]
fn kernel_strings_are_escaped_in_output() {
    let model = home();
    let mut observed = applied(&model);
    observed_mut(&mut observed, "web").description = Some("evil\x1b[2J\nline".into());
    observed.state = TableState::Damaged {
        reasons: vec!["bad\x1b]0;title\x07".into()],
    };
    let text = render_plan(&plan(&model, &observed), false) + &render_status(&observed, false);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
    assert!(
        text.contains("description: \"evil\\u{1b}[2J\\nline\" → \"web server\""),
        "{text}"
    );
}

#[test]
fn plan_file_round_trip() {
    let (model, observed) = mixed();
    let p = plan(&model, &observed);
    let text = serde_json::to_string_pretty(&plan_json(&p)).expect("json");
    assert_eq!(Plan::from_json(&text).expect("reads back"), p);
    let plain = serde_json::to_string(&p).expect("json");
    assert_eq!(Plan::from_json(&plain).expect("reads back"), p);
}

#[test]
fn plan_file_refusals() {
    let p = plan(
        &home(),
        &Observed {
            place: Some(here()),
            ..Observed::missing("nft", TABLE, Some(1))
        },
    );
    let mut value = plan_json(&p);

    value["format_version"] = serde_json::json!(1);
    let err = Plan::from_json(&value.to_string()).expect_err("version 1");
    assert!(matches!(err, PlanFileError::UnsupportedVersion { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "plan file format_version 1 is not supported (this portmap reads format_version {PLAN_FORMAT_VERSION}); \
             make the plan again with this portmap"
        )
    );

    // A plan that does not say at which generation, or for which namespace, it was made.
    for field in ["generation", "place"] {
        let mut value = plan_json(&p);
        value[field] = serde_json::Value::Null;
        let err = Plan::from_json(&value.to_string()).expect_err(field);
        assert!(matches!(err, PlanFileError::Unbound(_)), "{err:?}");
        assert!(err.to_string().contains("make the plan again"), "{err}");
    }

    // A delete added by hand for a mapping the desired state keeps.
    let (model, observed) = mixed();
    let mut value = plan_json(&plan(&model, &observed));
    let web = serde_json::to_value(portmap_core::ObservedMapping::from_mapping(mapping(
        &model, "web",
    )))
    .expect("json");
    value["changes"]
        .as_array_mut()
        .expect("changes")
        .push(serde_json::json!({"action": "delete", "before": web, "reason": "not_in_config"}));
    let err = Plan::from_json(&value.to_string()).expect_err("delete of a desired mapping");
    assert!(
        err.to_string()
            .contains("it deletes mapping `web`, which its desired state keeps"),
        "{err}"
    );

    value.as_object_mut().expect("object").remove("format_version");
    assert!(matches!(
        Plan::from_json(&value.to_string()),
        Err(PlanFileError::NotAPlan)
    ));
    assert!(matches!(
        Plan::from_json("{ not json"),
        Err(PlanFileError::Json(_))
    ));
    assert!(matches!(
        Plan::from_json(r#"{"format_version": 2}"#),
        Err(PlanFileError::Shape(_))
    ));

    // A hostile name in the desired state is refused like in a configuration.
    let mut value = plan_json(&p);
    value["desired"]["mappings"][0]["name"] = serde_json::json!("web\"; flush ruleset");
    let err = Plan::from_json(&value.to_string()).expect_err("hostile name");
    let PlanFileError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    assert!(
        errors
            .to_string()
            .contains("config: mappings[0].name: the name `web\\\"; flush ruleset` contains"),
        "{errors}"
    );

    // A create that does not match the desired state.
    let mut value = plan_json(&p);
    value["changes"][0]["mapping"]["to"] = serde_json::json!("192.168.1.99");
    assert!(matches!(
        Plan::from_json(&value.to_string()),
        Err(PlanFileError::Inconsistent(_))
    ));

    // Port 0 cannot even be read.
    let mut value = plan_json(&p);
    value["desired"]["mappings"][0]["port"] = serde_json::json!("0");
    assert!(matches!(
        Plan::from_json(&value.to_string()),
        Err(PlanFileError::Shape(_))
    ));
}

#[test]
fn port_ranges_serialize_as_text() {
    let r = PortRange {
        start: 6000,
        end: 6010,
    };
    assert_eq!(serde_json::to_string(&r).expect("json"), "\"6000-6010\"");
    assert_eq!(
        serde_json::to_string(&PortRange::single(80)).expect("json"),
        "\"80\""
    );
    assert_eq!(
        serde_json::from_str::<PortRange>("\"6000-6010\"").expect("range"),
        r
    );
    assert_eq!(
        serde_json::from_str::<PortRange>("80").expect("number"),
        PortRange::single(80)
    );
    assert!(serde_json::from_str::<PortRange>("\"10-1\"").is_err());
    assert!(serde_json::from_str::<PortRange>("0").is_err());
    assert!(serde_json::from_str::<PortRange>("70000").is_err());
}

#[test]
fn plan_text_home_router_create() {
    let out = render_plan(&plan(&home(), &Observed::missing("nft", TABLE, Some(42))), false);
    insta::assert_snapshot!("plan_text_home_router_create", out);
}

#[test]
fn plan_json_home_router_create() {
    let value = plan_json(&plan(&home(), &Observed::missing("nft", TABLE, Some(42))));
    insta::assert_json_snapshot!("plan_json_home_router_create", value);
}

#[test]
fn plan_text_home_router_mixed() {
    let (model, observed) = mixed();
    let mut p = plan(&model, &observed);
    p.warnings
        .push("iptables-nft table ip nat also forwards tcp port 8080".into());
    // Display: the plan, then its warnings.
    insta::assert_snapshot!("plan_text_home_router_mixed", p.to_string());
}

#[test]
fn plan_json_home_router_mixed() {
    let (model, observed) = mixed();
    insta::assert_json_snapshot!("plan_json_home_router_mixed", plan_json(&plan(&model, &observed)));
}

#[test]
fn status_text_home_router() {
    let out = render_status(&applied(&home()), false);
    insta::assert_snapshot!("status_text_home_router", out);
}

#[test]
fn status_text_home_router_damaged() {
    let (_, observed) = mixed();
    insta::assert_snapshot!("status_text_home_router_damaged", render_status(&observed, false));
}

#[test]
fn status_text_missing() {
    let out = render_status(&Observed::missing("nft", TABLE, None), false);
    assert_eq!(
        out,
        "Table inet portmap (backend nft) does not exist: portmap forwards nothing. Applying a configuration creates it.\n"
    );
}

#[test]
fn status_json_home_router() {
    let (_, observed) = mixed();
    insta::assert_json_snapshot!("status_json_home_router_damaged", status_json(&observed));
}

#[test]
fn stale_flows_follow_changed_and_removed_forwards_only() {
    let model = home();
    let mut observed = applied(&model);
    // web pointed elsewhere; game is gone from the file; mail-pop3's allow-list was wider.
    observed_mut(&mut observed, "web").forwards[0].to = ip("192.168.1.67");
    observed_mut(&mut observed, "mail-pop3").allow_from = vec!["0.0.0.0/0".parse().unwrap()];
    let mut wanted = model.clone();
    wanted.mappings.retain(|m| m.name != "game");
    let stale = plan(&wanted, &observed).stale_flows();

    let web = stale
        .iter()
        .filter(|s| s.forward.port == 8080)
        .collect::<Vec<_>>();
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].forward.to, ip("192.168.1.67"), "the old target's flows go");
    assert_eq!(web[0].unless_from, None);
    assert_eq!(
        stale
            .iter()
            .filter(|s| s.forward.transport == Transport::Udp && s.forward.port >= 27015)
            .count(),
        16
    );
    let pop3 = stale
        .iter()
        .find(|s| s.forward.port == 110)
        .expect("narrowed allow-list");
    assert_eq!(
        pop3.unless_from,
        Some(mapping(&model, "mail-pop3").allow_from.clone())
    );
    // Untouched mappings keep their flows.
    for port in [25, 143, 53, 6000] {
        assert!(
            stale.iter().all(|s| s.forward.port != port),
            "port {port} is untouched"
        );
    }
    assert!(plan(&model, &applied(&model)).stale_flows().is_empty());
}

#[test]
fn warnings_name_what_stands_in_the_way() {
    let model = home();
    let mut observed = applied(&model);
    observed.environment = portmap_core::Environment {
        interfaces: Some(vec!["lo".into(), "wan0".into()]),
        ipv4_forwarding: Some(false),
        ipv6_forwarding: Some(false),
        blocking_forward_chains: vec![
            "table inet filter, chain forward has policy drop and does not accept `ct status dnat`".into(),
        ],
        ipv6_unavailable: Some("ip6tables-nft-save failed".into()),
    };
    let p = plan(&model, &observed);
    assert!(p.is_empty(), "warnings are not changes");
    let text = p.warnings.join("\n");
    assert!(
        text.contains("table inet filter, chain forward has policy drop"),
        "{text}"
    );
    assert!(text.contains("net.ipv4.ip_forward = 0"), "{text}");
    assert!(
        !text.contains("IPv6 forwarding") && !text.contains("ip6tables"),
        "no IPv6 mapping, no IPv6 warning: {text}"
    );
    assert!(text.contains("lan interface lan0 does not exist"), "{text}");
    assert!(!text.contains("wan interface"), "{text}");
    assert_eq!(plan_json(&p)["warnings"].as_array().map(Vec::len), Some(3));
    assert!(render_plan(&p, false).contains("No changes"));
    assert!(portmap_core::render_warnings(&p, false).contains("Warnings:"));

    // Each family's forwarding switch matters only for that family's mappings.
    let v6_only = portmap_core::load_str(
        "wan: { interfaces: [wan0] }\nmappings:\n  - { name: web6, port: 80, to: 2001:db8:2::66 }\n",
        "v6.yaml",
    )
    .expect("valid");
    let mut observed = applied(&v6_only);
    observed.environment.ipv4_forwarding = Some(false);
    observed.environment.ipv6_forwarding = Some(false);
    observed.environment.ipv6_unavailable = Some("ip6tables-nft-save failed (exit 3)".into());
    let text = plan(&v6_only, &observed).warnings.join("\n");
    assert!(text.contains("net.ipv6.conf.all.forwarding = 0"), "{text}");
    assert!(
        text.contains(
            "ip6tables-nft-save failed (exit 3): portmap reads and writes IPv4 rules only here, so the IPv6 \
             mapping web6 cannot be applied"
        ),
        "{text}"
    );
    assert!(
        !text.contains("IPv4 forwarding"),
        "no IPv4 mapping, no IPv4 warning: {text}"
    );
}

#[test]
fn stale_flows_cover_exactly_the_dnat_flows_of_their_forward() {
    let forward = Forward {
        transport: Transport::Udp,
        port: 5060,
        to: ip("192.168.1.66"),
        to_port: 5060,
        listen: None,
    };
    let flow = portmap_core::TrackedFlow {
        dnat: true,
        proto: 17,
        src: ip("203.0.113.2"),
        dst_port: Some(5060),
        reply_src: ip("192.168.1.66"),
        reply_src_port: Some(5060),
    };
    let all = portmap_core::StaleFlows {
        mapping: "voip".into(),
        forward,
        unless_from: None,
    };
    assert!(all.covers(&flow));
    for other in [
        portmap_core::TrackedFlow { dnat: false, ..flow },
        portmap_core::TrackedFlow { proto: 6, ..flow },
        portmap_core::TrackedFlow {
            dst_port: Some(5061),
            ..flow
        },
        portmap_core::TrackedFlow {
            reply_src: ip("192.168.1.67"),
            ..flow
        },
        portmap_core::TrackedFlow {
            reply_src_port: Some(5062),
            ..flow
        },
    ] {
        assert!(!all.covers(&other), "{other:?}");
    }
    // A narrowed allow-list keeps the flows of the sources it still admits.
    let narrowed = portmap_core::StaleFlows {
        unless_from: Some(vec!["203.0.113.0/24".parse().expect("prefix")]),
        ..all
    };
    assert!(!narrowed.covers(&flow));
    assert!(narrowed.covers(&portmap_core::TrackedFlow {
        src: ip("198.51.100.9"),
        ..flow
    }));
}

/// A fixed clock for the `expires` tests: 2026-12-24T00:00:00Z and moments around it.
fn at(offset: i64) -> portmap_core::UtcTime {
    let christmas: portmap_core::UtcTime = "2026-12-24T00:00:00Z".parse().expect("time");
    portmap_core::UtcTime::from_unix_seconds(christmas.unix_seconds() + offset)
}

fn expiring() -> Model {
    load_str(
        "wan: { interfaces: [wan0] }\nmappings:\n\
         \x20 - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, expires: 2026-12-24T00:00:00Z }\n\
         \x20 - { name: ssh, port: 2222, to: 192.168.1.25, to_port: 22 }\n",
        "expires.yaml",
    )
    .expect("valid")
}

fn observed_at(mut observed: Observed, offset: i64) -> Observed {
    observed.observed_at = Some(at(offset));
    observed
}

const THREE_DAYS_FOUR_HOURS: i64 = 3 * 86_400 + 4 * 3600;

#[test]
fn a_mapping_that_expires_later_is_created_and_shown_with_its_time_left() {
    let model = expiring();
    let p = plan(
        &model,
        &observed_at(Observed::missing("nft", TABLE, Some(1)), -THREE_DAYS_FOUR_HOURS),
    );
    assert_eq!(p.counts().create, 2);
    let text = render_plan(&p, false);
    assert!(
        text.contains("+ web  tcp  8080 → 192.168.1.66:80  (expires 2026-12-24T00:00:00Z, in 3d 4h)"),
        "{text}"
    );
    let doc = portmap_core::json::plan_document("plan", &p);
    let web = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert_eq!(web["mapping"]["expires"], "2026-12-24T00:00:00Z");
    assert_eq!(web["mapping"]["expires_in_seconds"], THREE_DAYS_FOUR_HOURS);
    // Installed as asked: nothing to do, and status shows the time left.
    let installed = observed_at(applied(&model), -THREE_DAYS_FOUR_HOURS);
    assert!(plan(&model, &installed).is_empty());
    let status = render_status(&installed, false);
    assert!(status.contains("EXPIRES"), "{status}");
    assert!(
        status.contains("expires 2026-12-24T00:00:00Z, in 3d 4h"),
        "{status}"
    );
    assert!(status.contains("never"), "{status}");
    let json = status_json(&installed);
    assert_eq!(
        json["mappings"][1]["expires_in_seconds"], THREE_DAYS_FOUR_HOURS,
        "{json:#}"
    );
    assert!(json["mappings"][0].get("expires").is_none(), "{json:#}");
}

#[test]
fn the_kernel_reports_an_expiry_within_the_tolerance_as_the_same() {
    let model = expiring();
    let mut o = observed_at(applied(&model), -60);
    observed_mut(&mut o, "web").expires = Some(at(portmap_core::EXPIRES_TOLERANCE_SECONDS));
    assert!(plan(&model, &o).is_empty());
    observed_mut(&mut o, "web").expires = Some(at(portmap_core::EXPIRES_TOLERANCE_SECONDS + 1));
    let p = plan(&model, &o);
    let [Change::Update { fields, .. }] = p.changes.as_slice() else {
        panic!("{p}");
    };
    assert_eq!(
        fields,
        &[FieldChange {
            field: "expires".into(),
            before: "2026-12-24T00:00:03Z".into(),
            after: "2026-12-24T00:00:00Z".into(),
        }]
    );
    // A forward installed without an expiry is retimed; removing `expires` makes it permanent.
    observed_mut(&mut o, "web").expires = None;
    let p = plan(&model, &o);
    assert!(
        render_plan(&p, false).contains("expires: (never) → 2026-12-24T00:00:00Z"),
        "{p}"
    );
    let mut permanent = model.clone();
    permanent.mappings[0].expires = None;
    let p = plan(&permanent, &observed_at(applied(&model), -60));
    assert!(
        render_plan(&p, false).contains("expires: 2026-12-24T00:00:00Z → (never)"),
        "{p}"
    );
}

#[test]
fn an_expired_mapping_is_never_installed_and_what_the_kernel_keeps_of_it_is_no_change() {
    let model = expiring();
    // Planned after the moment, on an empty kernel: not created, with a warning.
    let p = plan(
        &model,
        &observed_at(Observed::missing("nft", TABLE, Some(1)), 300),
    );
    assert_eq!(p.counts().create, 1, "{p}");
    assert!(
        p.warnings
            .iter()
            .any(|w| w == "mapping web expired 2026-12-24T00:00:00Z, 5m ago: it is not installed (remove it, or give it a later `expires`)"),
        "{:?}",
        p.warnings
    );
    // The kernel still holds its rules, which match nothing (iptables), or only its counters
    // (nft): no change, and plan says how many mappings expired.
    let mut o = observed_at(applied(&model), 300);
    assert!(plan(&model, &o).is_empty());
    observed_mut(&mut o, "web").forwards.clear();
    let p = plan(&model, &o);
    assert!(p.is_empty(), "{p}");
    assert!(
        render_plan(&p, false).contains("(2 mappings, 1 of them expired)"),
        "{p}"
    );
    let status = render_status(&o, false);
    assert!(
        status.contains("expired 2026-12-24T00:00:00Z, 5m ago"),
        "{status}"
    );
    assert_eq!(status_json(&o)["mappings"][1]["expires_in_seconds"], -300);
    // A later expiry builds it again whole; out of the configuration it goes.
    let mut later = model.clone();
    later.mappings[0].expires = Some(at(3600));
    assert!(matches!(
        plan(&later, &o).changes.as_slice(),
        [Change::Repair { .. }]
    ));
    let mut without = model.clone();
    without.mappings.remove(0);
    assert!(matches!(
        plan(&without, &o).changes.as_slice(),
        [Change::Delete {
            reason: DeleteReason::NotInConfig,
            ..
        }]
    ));
    // Installed without that expiry, the kernel still forwards it: portmap removes it.
    let mut o = observed_at(applied(&model), 300);
    observed_mut(&mut o, "web").expires = None;
    let p = plan(&model, &o);
    assert!(
        matches!(
            p.changes.as_slice(),
            [Change::Delete {
                reason: DeleteReason::Expired,
                ..
            }]
        ),
        "{p}"
    );
    assert!(
        render_plan(&p, false).contains("(expired: its `expires` has come)"),
        "{p}"
    );
    // Without the moment of observation nothing counts as expired.
    assert_eq!(
        plan(&model, &Observed::missing("nft", TABLE, Some(1)))
            .counts()
            .create,
        2
    );
}
