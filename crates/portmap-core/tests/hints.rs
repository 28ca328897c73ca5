//! What people type that other tools taught them — Docker's `8080:80` and `8080/tcp`, an address
//! with its port in `to`, Kubernetes' `protocol: TCP` — and what portmap answers: the fix spelled
//! out, at the value's line and column (or, for `TCP`, acceptance).

use portmap_core::{Protocol, load_str};

/// The one error line a single-mapping file with `field: value` produces.
fn error_for(field: &str, value: &str) -> String {
    let text = format!(
        "wan: {{ interfaces: [wan0] }}\nmappings:\n  - name: web\n    to: 192.168.1.10\n    port: 8080\n    {field}: {value}\n"
    );
    // `port` and `to` given twice would be a duplicate key: replace them instead.
    let text = if field == "port" || field == "to" {
        text.replace(
            &format!(
                "    {field}: {}\n",
                if field == "port" { "8080" } else { "192.168.1.10" }
            ),
            "",
        )
    } else {
        text
    };
    match load_str(&text, "portmap.yaml") {
        Ok(model) => panic!("{field}: {value} was accepted: {model:?}"),
        Err(errors) => {
            assert_eq!(errors.len(), 1, "{field}: {value}: {errors}");
            errors.errors()[0].to_string()
        }
    }
}

#[test]
fn an_address_with_its_port_points_to_to_port() {
    assert_eq!(
        error_for("to", "192.168.1.10:80"),
        "portmap.yaml:5:9: mappings[0].to: `192.168.1.10:80` carries a port; `to` takes the address alone: \
         write `to: 192.168.1.10` and put the port in `to_port: 80`"
    );
    assert_eq!(
        error_for("to", "\"[2001:db8::66]:443\""),
        "portmap.yaml:5:9: mappings[0].to: `[2001:db8::66]:443` carries a port; `to` takes the address alone: \
         write `to: 2001:db8::66` and put the port in `to_port: 443`"
    );
    assert!(
        error_for("to", "192.168.1.10:7000-7002").contains("`to_port: \"7000-7002\"`"),
        "a port range after the address"
    );
}

#[test]
fn dockers_host_container_form_becomes_port_and_to_port() {
    assert_eq!(
        error_for("port", "8080:80"),
        "portmap.yaml:5:11: mappings[0].port: `8080:80` is Docker's HOST:CONTAINER form; in portmap write \
         `port: 8080` and `to_port: 80`"
    );
    assert_eq!(
        error_for("port", "8080:80/udp"),
        "portmap.yaml:5:11: mappings[0].port: `8080:80/udp` is Docker's HOST:CONTAINER form; in portmap write \
         `port: 8080` and `to_port: 80` and `protocol: udp`"
    );
    assert!(
        error_for("port", "\"6000-6002:7000-7002\"")
            .contains("write `port: \"6000-6002\"` and `to_port: \"7000-7002\"`"),
        "ranges keep their quotes"
    );
}

#[test]
fn a_protocol_in_the_port_moves_to_protocol() {
    assert_eq!(
        error_for("port", "8080/tcp"),
        "portmap.yaml:5:11: mappings[0].port: `8080/tcp` names the protocol in the port; write `port: 8080` \
         and `protocol: tcp`"
    );
    assert!(error_for("port", "53/UDP").ends_with("write `port: 53` and `protocol: udp`"));
    assert!(error_for("to_port", "80/tcp").contains("mappings[0].to_port: `80/tcp` names the protocol"));
}

#[test]
fn protocol_is_read_in_the_three_yaml_spellings() {
    for (text, want) in [
        ("tcp", Protocol::Tcp),
        ("TCP", Protocol::Tcp),
        ("Tcp", Protocol::Tcp),
        ("UDP", Protocol::Udp),
        ("Both", Protocol::Both),
    ] {
        let yaml = format!(
            "wan: {{ interfaces: [wan0] }}\nmappings:\n  - {{ name: x, port: 53, to: 192.168.1.2, protocol: {text} }}\n"
        );
        let model = load_str(&yaml, "portmap.yaml").unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(model.mappings[0].protocol, want, "{text}");
    }
    assert_eq!(
        error_for("protocol", "tCp"),
        "portmap.yaml:6:15: mappings[0].protocol: unknown protocol `tCp`; write `tcp`"
    );
    assert_eq!(
        error_for("protocol", "tcp/udp"),
        "portmap.yaml:6:15: mappings[0].protocol: unknown protocol `tcp/udp`; write `both` for TCP and UDP on the same ports"
    );
    // A configuration read from JSON takes the same spellings.
    let config: portmap_core::Config = serde_json::from_str(
        r#"{"wan": {"interfaces": ["wan0"]}, "mappings": [{"name": "x", "port": 53, "to": "192.168.1.2", "protocol": "UDP"}]}"#,
    )
    .expect("JSON config");
    assert_eq!(config.mappings[0].protocol, Protocol::Udp);
}

#[test]
fn plain_mistakes_keep_their_plain_messages() {
    assert!(error_for("port", "http").contains("`http` is not a port or port range"));
    assert!(error_for("to", "nas.lan").contains("`nas.lan` is not an IPv4 address"));
    assert!(error_for("to", "2001:db8::zz").contains("is not an IPv6 address"));
}
