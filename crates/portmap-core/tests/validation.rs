//! Validation, as users meet it: each bad configuration → the exact error lines (`file:line:col`,
//! field, message) it must produce; good configurations → the canonical `Model`; configs built in
//! code → errors naming the field. Also an ignored timing test for a 10,000-mapping file.

use std::fmt::Write as _;
use std::net::IpAddr;

use portmap_core::{
    Config, InterfaceList, Mapping, MappingConfig, Model, PortRange, PortSpec, Protocol, load_str, validate,
};

/// `wan` and the `mappings:` key; mapping entries written after it start on line 3.
macro_rules! HEAD_FLOW {
    () => {
        "wan: { interfaces: [wan0] }\nmappings:\n"
    };
}

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "portmap.yaml") {
        Ok(model) => panic!("expected errors, got a model: {model:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// (case name, YAML text, every error line it must produce, in order).
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "yaml syntax error",
        "wan: { interfaces: [wan0 }\n",
        &["portmap.yaml:1:26: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"],
    ),
    (
        "empty file",
        "# nothing here\n",
        &["portmap.yaml:1:1: the configuration is empty; it needs at least `wan: { interfaces: [eth0] }`"],
    ),
    (
        "top level is a list",
        "- wan0\n",
        &[
            "portmap.yaml:1:3: expected a mapping of settings (wan, lan, masquerade, hairpin, log_group, sources, mappings), got a list",
        ],
    ),
    (
        "two documents",
        "wan: { interfaces: [wan0] }\n---\nwan: { interfaces: [wan1] }\n",
        &["portmap.yaml:2:1: only one YAML document is allowed; remove the `---` and what follows it"],
    ),
    (
        "unknown top-level key, close to a known one",
        "wan: { interfaces: [wan0] }\nmapings: []\n",
        &["portmap.yaml:2:1: unknown key `mapings`; did you mean `mappings`?"],
    ),
    (
        "unknown top-level key, far from all",
        "wan: { interfaces: [wan0] }\nfirewall: on\n",
        &[
            "portmap.yaml:2:1: unknown key `firewall`; valid keys here are: version, wan, lan, masquerade, hairpin, log_group, sources, mappings",
        ],
    ),
    (
        "mapping key at the top level",
        "wan: { interfaces: [wan0] }\nport: 80\n",
        &["portmap.yaml:2:1: `port` is not valid here; it belongs in an entry of `mappings:`"],
    ),
    (
        "unknown mapping key, typo",
        concat!(
            HEAD_FLOW!(),
            "  - name: web\n    port: 80\n    to: 192.168.1.66\n    alow_from: [203.0.113.0/24]\n"
        ),
        &["portmap.yaml:6:5: mappings[0]: unknown key `alow_from`; did you mean `allow_from`?"],
    ),
    (
        "unknown mapping key, synonym",
        concat!(
            HEAD_FLOW!(),
            "  - name: web\n    port: 80\n    target: 192.168.1.66\n"
        ),
        &[
            "portmap.yaml:3:5: mappings[0]: missing required field `to`; add the inner host's IPv4 or IPv6 address, e.g. `to: 192.168.1.66`",
            "portmap.yaml:5:5: mappings[0]: unknown key `target`; did you mean `to`?",
        ],
    ),
    (
        "duplicate key",
        concat!(
            HEAD_FLOW!(),
            "  - name: web\n    port: 80\n    to: 192.168.1.66\n    port: 81\n"
        ),
        &["portmap.yaml:6:5: mappings[0]: duplicate key `port` (first at line 4); give each key once"],
    ),
    (
        "missing wan",
        "lan: { interfaces: [lan0] }\n",
        &[
            "portmap.yaml:1:1: missing required field `wan`; add `wan: { interfaces: [eth0] }` naming the interface(s) facing the internet",
        ],
    ),
    (
        "bad expires",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, expires: 2026-12-24 }\n",
            "  - { name: b, port: 2, to: 10.0.0.1, expires: \"2026-12-24T00:00:00\" }\n",
            "  - { name: c, port: 3, to: 10.0.0.1, expires: 2026-02-30T00:00:00Z }\n",
            "  - { name: d, port: 4, to: 10.0.0.1, expires: 2040-01-01T00:00:00Z }\n",
            "  - { name: e, port: 5, to: 10.0.0.1, expires: 1767225600 }\n",
            "  - { name: f, port: 6, to: 10.0.0.1, expires: [2026] }\n",
            "  - { name: g, port: 7, to: 10.0.0.1, expiry: 2026-12-24T00:00:00Z }\n",
            "  - { name: h, port: 8, to: 10.0.0.1, expires: 2026-12-24T00:00:00+25:00 }\n",
            "  - { name: i, port: 9, to: 10.0.0.1, expires: 2026-12-24 00:00:00Z }\n",
        ),
        &[
            "portmap.yaml:3:48: mappings[0].expires: `2026-12-24` is not an RFC 3339 time; write an RFC 3339 time with a zone, e.g. 2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00",
            "portmap.yaml:4:48: mappings[1].expires: `2026-12-24T00:00:00` has no time zone; end it in Z for UTC or give an offset such as +01:00, e.g. 2026-12-24T00:00:00Z",
            "portmap.yaml:5:48: mappings[2].expires: `2026-02-30T00:00:00Z` is not a valid time (parsed date is not valid: parameter 'day' for `2026-02` is invalid, must be in range `1..=28`); write an RFC 3339 time with a zone, e.g. 2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00",
            "portmap.yaml:6:48: mappings[3].expires: `2040-01-01T00:00:00Z` is out of range; give a time from 1970-01-01T00:00:01Z to 2038-01-19T03:14:07Z (iptables' time match holds no other), e.g. 2026-12-24T00:00:00Z",
            "portmap.yaml:7:48: mappings[4].expires: expected an RFC 3339 time such as 2026-12-24T00:00:00Z, got `1767225600`, which YAML reads as the number 1767225600",
            "portmap.yaml:8:49: mappings[5].expires: expected an RFC 3339 time such as 2026-12-24T00:00:00Z, got a list",
            "portmap.yaml:9:39: mappings[6]: unknown key `expiry`; did you mean `expires`?",
            "portmap.yaml:10:48: mappings[7].expires: `2026-12-24T00:00:00+25:00` ends in `+25:00`, which is not a time zone; use Z for UTC or an offset ±hh:mm (hours 00-23), e.g. 2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00",
            "portmap.yaml:11:48: mappings[8].expires: `2026-12-24 00:00:00Z` is not an RFC 3339 time; write an RFC 3339 time with a zone, e.g. 2026-12-24T00:00:00Z or 2026-12-24T01:00:00+01:00",
        ],
    ),
    (
        "wan without interfaces",
        "wan: { devices: [wan0] }\n",
        &[
            "portmap.yaml:1:8: wan: unknown key `devices`; valid keys here are: interfaces",
            "portmap.yaml:1:8: wan: missing required field `interfaces`; e.g. `wan: { interfaces: [eth0] }`",
        ],
    ),
    (
        "empty wan.interfaces",
        "wan: { interfaces: [] }\n",
        &[
            "portmap.yaml:1:20: wan.interfaces: no WAN interface is listed; list at least one interface facing the internet, e.g. [eth0]",
        ],
    ),
    (
        "interfaces not a list",
        "wan: { interfaces: wan0 }\n",
        &["portmap.yaml:1:20: wan.interfaces: expected a list of interface names such as [eth0], got `wan0`"],
    ),
    (
        "invalid interface names",
        "wan: { interfaces: [\"eth 0\", wan*, a/b, averyveryverylongname, .., eth0:1, \"\"] }\n",
        &[
            "portmap.yaml:1:21: wan.interfaces[0]: `eth 0` is not a valid interface name: it contains whitespace; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:30: wan.interfaces[1]: `wan*` is not a valid interface name: it contains `*` (wildcards are not supported; list each interface); Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:36: wan.interfaces[2]: `a/b` is not a valid interface name: it contains `/`; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:41: wan.interfaces[3]: `averyveryverylongname` is not a valid interface name: it is 21 bytes long (the limit is 15); Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:64: wan.interfaces[4]: `..` is not a valid interface name: `.` and `..` are not interface names; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:68: wan.interfaces[5]: `eth0:1` is not a valid interface name: it contains `:` (aliases such as eth0:1 are not interfaces); Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:76: wan.interfaces[6]: `` is not a valid interface name: it is empty; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
        ],
    ),
    (
        "interface listed twice",
        "wan:\n  interfaces:\n    - wan0\n    - wan0\n",
        &[
            "portmap.yaml:4:7: wan.interfaces[1]: interface `wan0` is listed twice (first as wan.interfaces[0], line 3); list it once",
        ],
    ),
    (
        "interface in wan and lan",
        "wan: { interfaces: [eth0] }\nlan: { interfaces: [lan0, eth0] }\n",
        &[
            "portmap.yaml:2:27: lan.interfaces[1]: interface `eth0` is also a WAN interface (wan.interfaces[0], line 1); an interface faces either the internet or the LAN",
        ],
    ),
    (
        "unsupported version",
        "version: 2\nwan: { interfaces: [wan0] }\n",
        &["portmap.yaml:1:10: version: unsupported configuration version 2; this portmap reads version 1"],
    ),
    (
        "version as a string",
        "version: \"1\"\nwan: { interfaces: [wan0] }\n",
        &["portmap.yaml:1:10: version: expected 1 (the configuration version), got the string \"1\""],
    ),
    (
        "booleans",
        "wan: { interfaces: [wan0] }\nmasquerade: yes\nhairpin: \"true\"\n",
        &[
            "portmap.yaml:2:13: masquerade: expected true or false, got `yes` (YAML 1.1 spellings are not booleans here)",
            "portmap.yaml:3:10: hairpin: expected true or false, got the string \"true\"; remove the quotes",
        ],
    ),
    (
        "masquerade without a LAN side",
        "wan: { interfaces: [wan0] }\nmasquerade: true\n",
        &[
            "portmap.yaml:2:13: masquerade: masquerade needs the LAN side: list the interfaces whose traffic is masqueraded in `lan: { interfaces: [...] }`, or set `masquerade: false`",
        ],
    ),
    (
        "mappings not a list",
        "wan: { interfaces: [wan0] }\nmappings:\n  web: 80\n",
        &[
            "portmap.yaml:3:3: mappings: expected a list of mappings (entries starting with `- `), got a mapping (key: value pairs)",
        ],
    ),
    (
        "mapping entry is not a mapping",
        concat!(HEAD_FLOW!(), "  - web\n"),
        &["portmap.yaml:3:5: mappings[0]: expected a mapping with at least name, port and to, got `web`"],
    ),
    (
        "mapping with no required field",
        concat!(HEAD_FLOW!(), "  - protocol: udp\n"),
        &[
            "portmap.yaml:3:5: mappings[0]: missing required field `name`; give every mapping a unique name such as `web`",
            "portmap.yaml:3:5: mappings[0]: missing required field `port`; add the external port, e.g. `port: 8080` or `port: \"6000-6010\"`",
            "portmap.yaml:3:5: mappings[0]: missing required field `to`; add the inner host's IPv4 or IPv6 address, e.g. `to: 192.168.1.66`",
        ],
    ),
    (
        "invalid names",
        concat!(
            HEAD_FLOW!(),
            "  - { name: web server, port: 1, to: 10.0.0.1 }\n",
            "  - { name: -web, port: 2, to: 10.0.0.1 }\n",
            "  - { name: \"web;reboot\", port: 3, to: 10.0.0.1 }\n",
            "  - { name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, port: 4, to: 10.0.0.1 }\n",
            "  - { name: \"\", port: 5, to: 10.0.0.1 }\n",
        ),
        &[
            "portmap.yaml:3:13: mappings[0].name: the name `web server` contains a space; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
            "portmap.yaml:4:13: mappings[1].name: the name `-web` starts with `-`; start it with a letter or digit",
            "portmap.yaml:5:13: mappings[2].name: the name `web;reboot` contains `;`; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
            "portmap.yaml:6:13: mappings[3].name: the name is 65 bytes long; the limit is 64",
            "portmap.yaml:7:13: mappings[4].name: the name is empty; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
        ],
    ),
    (
        "duplicate names",
        concat!(
            HEAD_FLOW!(),
            "  - { name: web, port: 80, to: 10.0.0.1 }\n",
            "  - { name: mail, port: 25, to: 10.0.0.2 }\n",
            "  - { name: web, port: 443, to: 10.0.0.1 }\n",
        ),
        &[
            "portmap.yaml:5:13: mappings[2].name: duplicate mapping name `web` (first at line 3); names must be unique",
        ],
    ),
    (
        "unknown protocol",
        concat!(
            HEAD_FLOW!(),
            "  - { name: web, protocol: tpc, port: 80, to: 10.0.0.1 }\n"
        ),
        &["portmap.yaml:3:28: mappings[0].protocol: unknown protocol `tpc`; use tcp, udp or both"],
    ),
    (
        "ports out of range",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 0, to: 10.0.0.1 }\n",
            "  - { name: b, port: 65536, to: 10.0.0.1 }\n",
            "  - { name: c, port: -1, to: 10.0.0.1 }\n",
            "  - { name: d, port: \"60000-70000\", to: 10.0.0.1 }\n",
        ),
        &[
            "portmap.yaml:3:22: mappings[0].port: port 0 is out of range; use 1-65535 or \"A-B\"",
            "portmap.yaml:4:22: mappings[1].port: port 65536 is out of range; use 1-65535 or \"A-B\"",
            "portmap.yaml:5:22: mappings[2].port: port -1 is out of range; use 1-65535 or \"A-B\"",
            "portmap.yaml:6:22: mappings[3].port: port 70000 in `60000-70000` is out of range; ports are 1-65535",
        ],
    ),
    (
        "malformed and reversed ranges",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: \"9000-8000\", to: 10.0.0.1 }\n",
            "  - { name: b, port: \"80-\", to: 10.0.0.1 }\n",
            "  - { name: c, port: http, to: 10.0.0.1 }\n",
            "  - { name: d, port: 80.5, to: 10.0.0.1 }\n",
            "  - { name: e, port: [80], to: 10.0.0.1 }\n",
        ),
        &[
            "portmap.yaml:3:22: mappings[0].port: port range `9000-8000` is reversed; write \"8000-9000\"",
            "portmap.yaml:4:22: mappings[1].port: `80-` is not a port or port range; use 1-65535 or \"A-B\" such as \"6000-6010\"",
            "portmap.yaml:5:22: mappings[2].port: `http` is not a port or port range; use 1-65535 or \"A-B\" such as \"6000-6010\"",
            "portmap.yaml:6:22: mappings[3].port: `80.5` is not a port or port range; use 1-65535 or \"A-B\" such as \"6000-6010\"",
            "portmap.yaml:7:23: mappings[4].port: expected a port (1-65535) or a range \"A-B\", got a list",
        ],
    ),
    (
        "to_port shapes",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 6000-6010, to: 10.0.0.1, to_port: 80 }\n",
            "  - { name: b, port: 5000-5010, to: 10.0.0.1, to_port: 7000-7005 }\n",
            "  - { name: c, port: 8080, to: 10.0.0.1, to_port: 80-90 }\n",
            "  - { name: d, port: 1-10, to: 10.0.0.1, to_port: 65530 }\n",
            "  - { name: e, port: 80, to: 10.0.0.1, to_port: 0 }\n",
        ),
        &[
            "portmap.yaml:3:56: mappings[0].to_port: to_port 80 is one port but port 6000-6010 is a range of 11 ports; write to_port: \"80-90\" to shift the range, or leave to_port out to keep the same ports",
            "portmap.yaml:4:56: mappings[1].to_port: to_port 7000-7005 has 6 ports but port 5000-5010 has 11; the ranges must be the same length, e.g. \"7000-7010\"",
            "portmap.yaml:5:51: mappings[2].to_port: to_port 80-90 has 11 ports but port 8080 has 1; the ranges must be the same length, e.g. \"80\"",
            "portmap.yaml:6:51: mappings[3].to_port: to_port 65530 is one port but port 1-10 is a range of 10 ports; give to_port a range of 10 ports, or leave to_port out to keep the same ports",
            "portmap.yaml:7:49: mappings[4].to_port: port 0 is out of range; use 1-65535 or \"A-B\"",
        ],
    ),
    (
        "targets that are not unicast hosts",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 0.0.0.0 }\n",
            "  - { name: b, port: 2, to: 127.0.0.1 }\n",
            "  - { name: c, port: 3, to: 224.0.0.251 }\n",
            "  - { name: d, port: 4, to: 255.255.255.255 }\n",
            "  - { name: e, port: 5, to: 240.0.0.1 }\n",
            "  - { name: f, port: 6, to: 0.1.2.3 }\n",
        ),
        &[
            "portmap.yaml:3:29: mappings[0].to: 0.0.0.0 is the unspecified address, not a host; give the inner host's unicast address, e.g. 192.168.1.66",
            "portmap.yaml:4:29: mappings[1].to: 127.0.0.1 is a loopback address (127.0.0.0/8); give the inner host's unicast address, e.g. 192.168.1.66",
            "portmap.yaml:5:29: mappings[2].to: 224.0.0.251 is a multicast address (224.0.0.0/4); give the inner host's unicast address, e.g. 192.168.1.66",
            "portmap.yaml:6:29: mappings[3].to: 255.255.255.255 is the broadcast address; give the inner host's unicast address, e.g. 192.168.1.66",
            "portmap.yaml:7:29: mappings[4].to: 240.0.0.1 is in the reserved range 240.0.0.0/4; give the inner host's unicast address, e.g. 192.168.1.66",
            "portmap.yaml:8:29: mappings[5].to: 0.1.2.3 is in 0.0.0.0/8 (\"this network\"), not a host; give the inner host's unicast address, e.g. 192.168.1.66",
        ],
    ),
    (
        "targets that are not addresses",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: nas.lan }\n",
            "  - { name: b, port: 2, to: 192.168.1.0/24 }\n",
            "  - { name: c, port: 3, to: \"2001:db8::1::2\" }\n",
            "  - { name: d, port: 4, to: 192.168.1.300 }\n",
            "  - { name: e, port: 5, to: \"2001:db8::/64\" }\n",
            "  - { name: f, port: 6, to: \"fe80::1%lan0\" }\n",
        ),
        &[
            "portmap.yaml:3:29: mappings[0].to: `nas.lan` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are not resolved)",
            "portmap.yaml:4:29: mappings[1].to: `192.168.1.0/24` is a prefix; `to` takes one host address, e.g. 192.168.1.0",
            "portmap.yaml:5:29: mappings[2].to: `2001:db8::1::2` is not an IPv6 address; give the inner host's address, e.g. 2001:db8::66 (host names are not resolved)",
            "portmap.yaml:6:29: mappings[3].to: `192.168.1.300` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are not resolved)",
            "portmap.yaml:7:29: mappings[4].to: `2001:db8::/64` is a prefix; `to` takes one host address, e.g. 2001:db8::",
            "portmap.yaml:8:29: mappings[5].to: `fe80::1%lan0` carries a zone (`%lan0`); portmap forwards to global or unique local IPv6 addresses, which need none: give the inner host's address without it, e.g. 2001:db8::66",
        ],
    ),
    (
        "IPv6 targets that are not unicast hosts",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: \"::\" }\n",
            "  - { name: b, port: 2, to: \"::1\" }\n",
            "  - { name: c, port: 3, to: \"ff02::fb\" }\n",
            "  - { name: d, port: 4, to: \"::ffff:192.168.1.66\" }\n",
            "  - { name: e, port: 5, to: \"fe80::66\" }\n",
        ),
        &[
            "portmap.yaml:3:29: mappings[0].to: :: is the unspecified address (::), not a host; give the inner host's global or unique local address, e.g. 2001:db8::66",
            "portmap.yaml:4:29: mappings[1].to: ::1 is the loopback address (::1); give the inner host's global or unique local address, e.g. 2001:db8::66",
            "portmap.yaml:5:29: mappings[2].to: ff02::fb is a multicast address (ff00::/8); give the inner host's global or unique local address, e.g. 2001:db8::66",
            "portmap.yaml:6:29: mappings[3].to: ::ffff:192.168.1.66 is an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address itself: to: 192.168.1.66",
            "portmap.yaml:7:29: mappings[4].to: fe80::66 is a link-local address (fe80::/10), which names no host without an interface zone; give the inner host's global or unique local address, e.g. 2001:db8::66",
        ],
    ),
    (
        "allow_from of the other family than an IPv6 `to`",
        concat!(
            HEAD_FLOW!(),
            "  - name: web6\n    port: 80\n    to: 2001:db8:2::66\n    allow_from:\n",
            "      - 2001:db8:1::/48\n",
            "      - 203.0.113.0/24\n",
            "      - 2001:db8:1:5::1/64\n",
        ),
        &[
            "portmap.yaml:8:9: mappings[0].allow_from[1]: 203.0.113.0/24 is IPv4 but `to` is IPv6; allow_from must use the family of `to`",
            "portmap.yaml:9:9: mappings[0].allow_from[2]: 2001:db8:1:5::1/64 has host bits set; did you mean 2001:db8:1:5::/64?",
        ],
    ),
    (
        "IPv6 allow_from duplicates and overlaps",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: \"2001:db8:2::1\", allow_from: [\"2001:db8::/32\", \"2001:db8:1::2\"] }\n",
        ),
        &[
            "portmap.yaml:3:76: mappings[0].allow_from[1]: 2001:db8:1::2/128 lies inside 2001:db8::/32 (mappings[0].allow_from[0], line 3); list each source once",
        ],
    ),
    (
        "allow_from entries",
        concat!(
            HEAD_FLOW!(),
            "  - name: web\n    port: 80\n    to: 192.168.1.66\n    allow_from:\n",
            "      - 203.0.113.5/24\n",
            "      - 198.51.100.0/33\n",
            "      - 2001:db8::/32\n",
            "      - office\n",
        ),
        &[
            "portmap.yaml:7:9: mappings[0].allow_from[0]: 203.0.113.5/24 has host bits set; did you mean 203.0.113.0/24?",
            "portmap.yaml:8:9: mappings[0].allow_from[1]: `198.51.100.0/33` is not an address or CIDR prefix; use e.g. 203.0.113.0/24 or 198.51.100.7",
            "portmap.yaml:9:9: mappings[0].allow_from[2]: 2001:db8::/32 is IPv6 but `to` is IPv4; allow_from must use the family of `to`",
            "portmap.yaml:10:9: mappings[0].allow_from[3]: `office` is not an address or CIDR prefix, and the file defines no `sources` list of that name; use e.g. 203.0.113.0/24, or define `sources: { office: [...] }` at the top level",
        ],
    ),
    (
        "allow_from duplicates and overlaps",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, allow_from: [203.0.113.0/24, 198.51.100.7, 203.0.113.0/24] }\n",
            "  - { name: b, port: 2, to: 10.0.0.1, allow_from: [203.0.113.0/25, 203.0.113.0/24] }\n",
            "  - { name: c, port: 3, to: 10.0.0.1, allow_from: [10.0.0.0/8, 10.1.2.3] }\n",
        ),
        &[
            "portmap.yaml:3:82: mappings[0].allow_from[2]: 203.0.113.0/24 is listed twice (first as mappings[0].allow_from[0], line 3); list each source once",
            "portmap.yaml:4:68: mappings[1].allow_from[1]: 203.0.113.0/24 contains 203.0.113.0/25 (mappings[1].allow_from[0], line 4); list each source once",
            "portmap.yaml:5:64: mappings[2].allow_from[1]: 10.1.2.3/32 lies inside 10.0.0.0/8 (mappings[2].allow_from[0], line 5); list each source once",
        ],
    ),
    (
        "allow_from empty or a single value",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, allow_from: [] }\n",
            "  - { name: b, port: 2, to: 10.0.0.1, allow_from: 203.0.113.0/24 }\n",
        ),
        &[
            "portmap.yaml:3:51: mappings[0].allow_from: allow_from is empty; list the sources allowed to connect (e.g. [203.0.113.0/24]) or remove the key to allow everyone",
            "portmap.yaml:4:51: mappings[1].allow_from: expected a list of sources, got a single value; write allow_from: [203.0.113.0/24]",
        ],
    ),
    (
        "descriptions",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, description: \"say \\\"hi\\\"\" }\n",
            "  - { name: b, port: 2, to: 10.0.0.1, description: \"two\\nlines\" }\n",
            "  - { name: c, port: 3, to: 10.0.0.1, description: \"right-to-left \\u202e override\" }\n",
            "  - { name: d, port: 4, to: 10.0.0.1, description: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx }\n",
        ),
        &[
            "portmap.yaml:3:52: mappings[0].description: the description contains `\"`, which is not allowed; use ' instead",
            "portmap.yaml:4:52: mappings[1].description: the description contains a control character (U+000A); use one line of printable text",
            "portmap.yaml:5:52: mappings[2].description: the description contains an invisible formatting character (U+202E); use one line of printable text",
            "portmap.yaml:6:52: mappings[3].description: the description is 130 bytes long; the limit is 128",
        ],
    ),
    (
        "overlapping external ports",
        concat!(
            HEAD_FLOW!(),
            "  - { name: web, port: 8080, to: 10.0.0.1 }\n",
            "  - { name: web2, port: 8000-8100, to: 10.0.0.2 }\n",
            "  - { name: dns, protocol: both, port: 53, to: 10.0.0.3 }\n",
            "  - { name: dns-udp, protocol: udp, port: 53, to: 10.0.0.4 }\n",
            "  - { name: games, protocol: udp, port: 27000-27100, to: 10.0.0.5 }\n",
            "  - { name: games2, protocol: udp, port: 27050-27200, to: 10.0.0.6 }\n",
            "  - { name: old, port: 8080, to: 10.0.0.7, enabled: false }\n",
            "  - { name: web-udp, protocol: udp, port: 8080, to: 10.0.0.8 }\n",
            "  - { name: web6, port: 8080, to: \"2001:db8::1\" }\n",
            "  - { name: web6b, port: 8079-8081, to: \"2001:db8::2\" }\n",
        ),
        &[
            "portmap.yaml:4:25: mappings[1].port: tcp port 8080 is also forwarded by mapping `web` (line 3: tcp 8080); each protocol and external port can belong to one enabled IPv4 mapping (and one IPv6 mapping), or give each mapping its own `listen` addresses",
            "portmap.yaml:6:43: mappings[3].port: udp port 53 is also forwarded by mapping `dns` (line 5: both 53); each protocol and external port can belong to one enabled IPv4 mapping (and one IPv6 mapping), or give each mapping its own `listen` addresses",
            "portmap.yaml:8:42: mappings[5].port: udp ports 27050-27100 are also forwarded by mapping `games` (line 7: udp 27000-27100); each protocol and external port can belong to one enabled IPv4 mapping (and one IPv6 mapping), or give each mapping its own `listen` addresses",
            "portmap.yaml:12:26: mappings[9].port: tcp port 8080 is also forwarded by mapping `web6` (line 11: tcp 8080); each protocol and external port can belong to one enabled IPv6 mapping (and one IPv4 mapping), or give each mapping its own `listen` addresses",
        ],
    ),
    (
        "listen addresses",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 8080, to: 10.0.0.1, listen: [198.51.100.5] }\n",
            "  - { name: b, port: 8080, to: 10.0.0.2, listen: [198.51.100.6] }\n",
            "  - { name: c, port: 8000-8100, to: 10.0.0.3, listen: [198.51.100.6, 198.51.100.7] }\n",
            "  - { name: d, port: 8079-8081, to: 10.0.0.4 }\n",
            "  - { name: e, port: 9000, to: 10.0.0.5, listen: [2001:db8::5, 0.0.0.0, 198.51.100.5, 198.51.100.5, nope, 10.0.0.0/8, 127.0.0.1] }\n",
            "  - { name: f, port: 9001, to: 10.0.0.6, listen: [] }\n",
            "  - { name: g, port: 9002, to: 10.0.0.7, listen: 198.51.100.5 }\n",
            "  - { name: h, port: 9003, to: \"2001:db8::9\", listen: [fe80::1, 2001:db8::5] }\n",
            "  - { name: i, port: 9003, to: \"2001:db8::10\", listen: [2001:db8::6] }\n",
            "  - { name: j, port: 9003, to: \"2001:db8::11\" }\n",
        ),
        &[
            "portmap.yaml:5:22: mappings[2].port: tcp port 8080 on 198.51.100.6 is also forwarded by mapping `b` (line 4: tcp 8080 on 198.51.100.6); each address, protocol and external port can belong to one enabled mapping",
            "portmap.yaml:6:22: mappings[3].port: tcp port 8080 is also forwarded by mapping `a` (line 3: tcp 8080 on 198.51.100.5); a mapping without `listen` answers on every address, so it clashes with every IPv4 mapping of the same port: give both mappings `listen` addresses of their own",
            "portmap.yaml:6:22: mappings[3].port: tcp ports 8079-8081 are also forwarded by mapping `c` (line 5: tcp 8000-8100 on 198.51.100.6, 198.51.100.7); a mapping without `listen` answers on every address, so it clashes with every IPv4 mapping of the same port: give both mappings `listen` addresses of their own",
            "portmap.yaml:6:22: mappings[3].port: tcp port 8080 is also forwarded by mapping `b` (line 4: tcp 8080 on 198.51.100.6); a mapping without `listen` answers on every address, so it clashes with every IPv4 mapping of the same port: give both mappings `listen` addresses of their own",
            "portmap.yaml:7:51: mappings[4].listen[0]: 2001:db8::5 is IPv6 but `to` is IPv4; a mapping answers on addresses of its target's family (write a second mapping for the other family)",
            "portmap.yaml:7:64: mappings[4].listen[1]: 0.0.0.0 is the unspecified address (leave listen out to answer on any address); give one of the router's public addresses",
            "portmap.yaml:7:87: mappings[4].listen[3]: 198.51.100.5 is listed twice (first as mappings[4].listen[2], line 7); list it once",
            "portmap.yaml:7:101: mappings[4].listen[4]: `nope` is not an IP address; give one of the router's public addresses, e.g. 198.51.100.5 or 2001:db8::5 (host names are not resolved)",
            "portmap.yaml:7:107: mappings[4].listen[5]: `10.0.0.0/8` is a prefix; listen takes the router's addresses one by one, e.g. 10.0.0.0",
            "portmap.yaml:7:119: mappings[4].listen[6]: 127.0.0.1 is a loopback address (127.0.0.0/8); give one of the router's public addresses",
            "portmap.yaml:8:50: mappings[5].listen: listen is empty; list the router's public addresses the mapping answers on (e.g. [198.51.100.5]) or remove the key to answer on any address of the wan interfaces",
            "portmap.yaml:9:50: mappings[6].listen: expected a list of addresses, got a single value; write listen: [198.51.100.5]",
            "portmap.yaml:10:56: mappings[7].listen[0]: fe80::1 is a link-local address (fe80::/10), which portmap never forwards; give one of the router's public addresses",
            "portmap.yaml:12:22: mappings[9].port: tcp port 9003 is also forwarded by mapping `i` (line 11: tcp 9003 on 2001:db8::6); a mapping without `listen` answers on every address, so it clashes with every IPv6 mapping of the same port: give both mappings `listen` addresses of their own",
        ],
    ),
    (
        "aliases and tags",
        concat!(
            HEAD_FLOW!(),
            "  - { name: &n web, port: !port 80, to: 10.0.0.1 }\n",
            "  - { name: *n, port: 81, to: 10.0.0.1 }\n"
        ),
        &[
            "portmap.yaml:3:27: the tag `!port` is not supported; remove it",
            "portmap.yaml:4:13: aliases (`*name`) are not supported; write the value out",
        ],
    ),
    (
        "names, interfaces and descriptions that YAML reads as numbers, booleans or null",
        concat!(
            "wan: { interfaces: [0x1F, true] }\n",
            "mappings:\n",
            "  - { name: 010, port: 1, to: 10.0.0.1, description: 1e3 }\n",
            "  - { name: TRUE, port: 2, to: 10.0.0.1, description: .inf }\n",
            "  - { name: ~, port: 3, to: 10.0.0.1, description: 2024 }\n",
            "  - { name: -1.5, port: 4, to: 10.0.0.1 }\n",
        ),
        &[
            "portmap.yaml:1:21: wan.interfaces[0]: `0x1F` is read by YAML as the number 31; quote it: \"0x1F\"",
            "portmap.yaml:1:27: wan.interfaces[1]: `true` is read by YAML as the boolean true; quote it: \"true\"",
            "portmap.yaml:3:13: mappings[0].name: `010` is read by YAML as the number 10; quote it: \"010\"",
            "portmap.yaml:3:54: mappings[0].description: `1e3` is read by YAML as the number 1000.0; quote it: \"1e3\"",
            "portmap.yaml:4:13: mappings[1].name: `TRUE` is read by YAML as the boolean true; quote it: \"TRUE\"",
            "portmap.yaml:4:55: mappings[1].description: `.inf` is read by YAML as the number infinity; quote it: \".inf\"",
            "portmap.yaml:5:13: mappings[2].name: `~` is read by YAML as null (no value); quote it: \"~\"",
            "portmap.yaml:5:52: mappings[2].description: `2024` is read by YAML as the number 2024; quote it: \"2024\"",
            "portmap.yaml:6:13: mappings[3].name: `-1.5` is read by YAML as the number -1.5; quote it: \"-1.5\"",
        ],
    ),
    (
        "targets and sources that YAML reads as numbers",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10, allow_from: [1.5, 0o7] }\n",
            "  - { name: b, protocol: 6, port: 2, to: !!int 10 }\n",
        ),
        &[
            "portmap.yaml:3:29: mappings[0].to: expected an IP address such as 192.168.1.66, got `10`, which YAML reads as the number 10",
            "portmap.yaml:3:46: mappings[0].allow_from[0]: expected an address or CIDR prefix such as 203.0.113.0/24, or the name of a list in `sources`, got `1.5`, which YAML reads as the number 1.5",
            "portmap.yaml:3:51: mappings[0].allow_from[1]: expected an address or CIDR prefix such as 203.0.113.0/24, or the name of a list in `sources`, got `0o7`, which YAML reads as the number 7",
            "portmap.yaml:4:26: mappings[1].protocol: unknown protocol `6`; use tcp, udp or both",
            "portmap.yaml:4:42: mappings[1].to: expected an IP address such as 192.168.1.66, got the number 10 (tagged !!int)",
        ],
    ),
    (
        "tags that do not fit their value, and tags portmap does not read",
        concat!(
            "wan: !!seq { interfaces: [wan0] }\n",
            "hairpin: !!bool yes\n",
            "masquerade: !!str false\n",
            "mappings:\n",
            "  - { name: !!binary aGk=, port: !!int eighty, to: !!timestamp 2001-12-14 }\n",
            "  - { name: b, port: 2, to: 10.0.0.1, allow_from: !!set {10.0.0.0/8} }\n",
        ),
        &[
            "portmap.yaml:1:6: the tag `!!seq` cannot stand on a mapping; remove it",
            "portmap.yaml:2:10: `yes` is not a boolean (true or false), as its tag `!!bool` says; fix the value or remove the tag",
            "portmap.yaml:3:13: masquerade: expected true or false, got the string \"false\"; remove the tag",
            "portmap.yaml:5:13: the tag `!!binary` is not supported; remove it",
            "portmap.yaml:5:34: `eighty` is not an integer (such as 80, 0o17 or 0x1F), as its tag `!!int` says; fix the value or remove the tag",
            "portmap.yaml:5:52: the tag `!!timestamp` is not supported; remove it",
            "portmap.yaml:6:51: the tag `!!set` is not supported; remove it",
        ],
    ),
    (
        "versions YAML reads as other numbers",
        "version: 1.0\nwan: { interfaces: [wan0] }\n",
        &["portmap.yaml:1:10: version: expected 1 (the configuration version), got `1.0`"],
    ),
    (
        "a version too large for any integer",
        "version: 99999999999999999999\nwan: { interfaces: [wan0] }\n",
        &[
            "portmap.yaml:1:10: version: unsupported configuration version 99999999999999999999; this portmap reads version 1",
        ],
    ),
    (
        "flow maps with `-}` are refused however the rest of the file looks",
        concat!(
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, description: a -}\n"
        ),
        &["portmap.yaml:3:54: YAML syntax error: plain scalar cannot start with '-' followed by ,[]{}"],
    ),
    (
        "the same, with a tab in a comment elsewhere",
        concat!(
            "# a\ttab\n",
            HEAD_FLOW!(),
            "  - { name: a, port: 1, to: 10.0.0.1, description: a -}\n"
        ),
        &["portmap.yaml:4:54: YAML syntax error: plain scalar cannot start with '-' followed by ,[]{}"],
    ),
    (
        "hostile strings",
        concat!(
            "wan: { interfaces: [\"wan0\\\";flush ruleset;\\\"\"] }\nmappings:\n",
            "  - name: \"x\\\" ; drop\\n\"\n    port: 1\n    to: \"10.0.0.1;\"\n",
            "    description: \"\\e[31mred\"\n",
        ),
        &[
            "portmap.yaml:1:21: wan.interfaces[0]: `wan0\\\";flush ruleset;\\\"` is not a valid interface name: it is 21 bytes long (the limit is 15); Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:3:11: mappings[0].name: the name `x\\\" ; drop\\n` contains `\\\"`; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
            "portmap.yaml:5:9: mappings[0].to: `10.0.0.1;` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are not resolved)",
            "portmap.yaml:6:18: mappings[0].description: the description contains a control character (U+001B); use one line of printable text",
        ],
    ),
    (
        "keys are lower case",
        concat!(HEAD_FLOW!(), "  - name: web\n    Port: 80\n    to: 10.0.0.1\n"),
        &[
            "portmap.yaml:3:5: mappings[0]: missing required field `port`; add the external port, e.g. `port: 8080` or `port: \"6000-6010\"`",
            "portmap.yaml:4:5: mappings[0]: unknown key `Port`; did you mean `port`? (keys are lower case)",
        ],
    ),
    (
        "key that is not a name",
        "wan: { interfaces: [wan0] }\n[a]: b\n",
        &["portmap.yaml:2:2: expected a key name, got a list"],
    ),
    (
        "interface names with quotes and control characters",
        "wan: { interfaces: [\"wan\\\"0\", \"wan\\a0\"] }\n",
        &[
            "portmap.yaml:1:21: wan.interfaces[0]: `wan\\\"0` is not a valid interface name: it contains a quote; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
            "portmap.yaml:1:31: wan.interfaces[1]: `wan\\u{7}0` is not a valid interface name: it contains a control or formatting character; Linux interface names are 1-15 bytes without `/`, `:`, whitespace, quotes or `*`",
        ],
    ),
    (
        "allow_from with nothing after it",
        concat!(
            HEAD_FLOW!(),
            "  - name: web\n    port: 80\n    to: 10.0.0.1\n    allow_from:\n"
        ),
        &[
            "portmap.yaml:6:15: mappings[0].allow_from: allow_from is empty; list the sources allowed to connect (e.g. [203.0.113.0/24]) or remove the key to allow everyone",
        ],
    ),
    (
        "several errors in one file, sorted by position",
        concat!(
            "version: 1\n",
            "wan: { interfaces: [wan0] }\n",
            "masquerade: maybe\n",
            "mappings:\n",
            "  - name: web\n",
            "    port: 0\n",
            "    to: 192.168.1.66\n",
            "  - name: web\n",
            "    port: 8080\n",
            "    to: 192.168.1.999\n",
            "    enabled: no\n",
        ),
        &[
            "portmap.yaml:3:13: masquerade: expected true or false, got `maybe`",
            "portmap.yaml:6:11: mappings[0].port: port 0 is out of range; use 1-65535 or \"A-B\"",
            "portmap.yaml:8:11: mappings[1].name: duplicate mapping name `web` (first at line 5); names must be unique",
            "portmap.yaml:10:9: mappings[1].to: `192.168.1.999` is not an IPv4 address; give the inner host's address, e.g. 192.168.1.66 (host names are not resolved)",
            "portmap.yaml:11:14: mappings[1].enabled: expected true or false, got `no` (YAML 1.1 spellings are not booleans here)",
        ],
    ),
];

#[test]
fn every_bad_config_gives_its_errors() {
    assert!(CASES.len() >= 30, "{} cases", CASES.len());
    let mut failures = String::new();
    for (name, yaml, expected) in CASES {
        let got = errors(yaml);
        if got != *expected {
            let _ = writeln!(failures, "case `{name}`:\n  expected:");
            for e in *expected {
                let _ = writeln!(failures, "    {e}");
            }
            let _ = writeln!(failures, "  got:");
            for g in &got {
                let _ = writeln!(failures, "    {g}");
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn error_display_has_a_count_line() {
    let text = concat!(
        HEAD_FLOW!(),
        "  - { name: a, port: 0, to: 10.0.0.1 }\n  - { name: b, port: 1, to: 127.0.0.1 }\n"
    );
    let err = load_str(text, "portmap.yaml").expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "portmap.yaml:3:22: mappings[0].port: port 0 is out of range; use 1-65535 or \"A-B\"\n\
         portmap.yaml:4:29: mappings[1].to: 127.0.0.1 is a loopback address (127.0.0.0/8); give the inner host's \
         unicast address, e.g. 192.168.1.66\n\
         2 errors in portmap.yaml."
    );
    let err: &dyn std::error::Error = &err;
    assert!(err.source().is_none());
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn minimal_config_takes_the_defaults() {
    let model = load_str("wan: { interfaces: [eth0] }\n", "x").expect("valid");
    assert_eq!(model.settings.wan_interfaces, ["eth0"]);
    assert!(model.settings.lan_interfaces.is_empty());
    assert!(!model.settings.masquerade);
    assert!(model.settings.hairpin);
    assert!(model.mappings.is_empty());
    assert!(model.disabled.is_empty());
    // `mappings:` with every entry commented out is an empty list.
    let model = load_str(
        "wan: { interfaces: [eth0] }\nmappings:\n#  - { name: a, port: 1, to: 10.0.0.1 }\n",
        "x",
    )
    .expect("valid");
    assert!(model.mappings.is_empty());
}

#[test]
fn mapping_defaults_ranges_and_canonical_allow_from() {
    let text = concat!(
        "version: 1\n",
        "wan: { interfaces: [wan0, wan1] }\n",
        "lan: { interfaces: [lan0] }\n",
        "masquerade: true\n",
        "hairpin: false\n",
        "mappings:\n",
        "  - name: web\n    port: \"8080\"\n    to: 192.168.1.66\n",
        "  - name: cams\n    protocol: both\n    port: 6000-6002\n    to: 192.168.1.80\n    to_port: \"7000-7002\"\n",
        "  - name: office\n    port: 443\n    to: 192.168.1.5\n    description: ''\n",
        "    allow_from: [203.0.113.128/25, 198.51.100.7, 203.0.113.0/25, 192.0.2.0/24, 192.0.3.0/24]\n",
        "  - name: old\n    port: 8080\n    to: 192.168.1.9\n    enabled: false\n",
    );
    let model = load_str(text, "x").expect("valid");
    assert_eq!(model.settings.wan_interfaces, ["wan0", "wan1"]);
    assert_eq!(model.settings.lan_interfaces, ["lan0"]);
    assert!(model.settings.masquerade);
    assert!(!model.settings.hairpin);
    assert_eq!(model.disabled, ["old"]);
    assert_eq!(
        model.mappings,
        vec![
            Mapping {
                name: "web".into(),
                protocol: Protocol::Tcp,
                port: PortRange::single(8080),
                to: ip("192.168.1.66"),
                to_port: PortRange::single(8080),
                allow_from: vec![],
                allow_sources: Vec::new(),
                allow_inline: Vec::new(),
                description: None,
                log: None,
                limit: None,
                expires: None,
                listen: Vec::new(),
            },
            Mapping {
                name: "cams".into(),
                protocol: Protocol::Both,
                port: PortRange {
                    start: 6000,
                    end: 6002
                },
                to: ip("192.168.1.80"),
                to_port: PortRange {
                    start: 7000,
                    end: 7002
                },
                allow_from: vec![],
                allow_sources: Vec::new(),
                allow_inline: Vec::new(),
                description: None,
                log: None,
                limit: None,
                expires: None,
                listen: Vec::new(),
            },
            Mapping {
                name: "office".into(),
                protocol: Protocol::Tcp,
                port: PortRange::single(443),
                to: ip("192.168.1.5"),
                to_port: PortRange::single(443),
                allow_from: vec![net("192.0.2.0/23"), net("198.51.100.7/32"), net("203.0.113.0/24")],
                allow_sources: Vec::new(),
                allow_inline: Vec::new(),
                description: None,
                log: None,
                limit: None,
                expires: None,
                listen: Vec::new(),
            },
        ]
    );
}

#[test]
fn ipv6_mappings_and_the_dual_stack_pattern_are_valid() {
    // `web` and `web6` share tcp 80: IPv4 packets use the IPv4 map, IPv6 packets the IPv6 map.
    let text = concat!(
        "wan: { interfaces: [wan0] }\n",
        "lan: { interfaces: [lan0] }\n",
        "mappings:\n",
        "  - { name: web, port: 80, to: 192.168.1.66 }\n",
        "  - { name: web6, port: 80, to: 2001:db8:2::66 }\n",
        "  - name: game6\n    protocol: both\n    port: 6000-6001\n    to: \"fd00::70\"\n    to_port: 7000-7001\n",
        "    allow_from: [\"2001:db8:1::3\", \"2001:db8:1::2\", 2001:db8:100::/48]\n",
        "  - { name: Upper, port: 81, to: \"2001:DB8:2:0:0:0:0:66\" }\n",
    );
    let model = load_str(text, "x").expect("valid");
    assert_eq!(model.mappings[1].to, ip("2001:db8:2::66"));
    assert_eq!(
        model.mappings[2],
        Mapping {
            name: "game6".into(),
            protocol: Protocol::Both,
            port: PortRange {
                start: 6000,
                end: 6001
            },
            to: ip("fd00::70"),
            to_port: PortRange {
                start: 7000,
                end: 7001
            },
            // Adjacent hosts merge; the list is sorted.
            allow_from: vec![net("2001:db8:1::2/127"), net("2001:db8:100::/48")],
            allow_sources: Vec::new(),
            allow_inline: Vec::new(),
            description: None,
            log: None,
            limit: None,
            expires: None,
            listen: Vec::new(),
        }
    );
    assert_eq!(model.mappings[3].to, ip("2001:db8:2::66"));
    // The same family, transport and port twice is still an error.
    let errors = errors(concat!(
        HEAD_FLOW!(),
        "  - { name: web6, port: 80, to: 2001:db8:2::66 }\n",
        "  - { name: web6b, protocol: both, port: 80, to: 2001:db8:2::67 }\n",
        "  - { name: web4, protocol: udp, port: 80, to: 192.168.1.66 }\n",
    ));
    assert_eq!(
        errors,
        [
            "portmap.yaml:4:42: mappings[1].port: tcp port 80 is also forwarded by mapping `web6` (line 3: tcp 80); each protocol and external port can belong to one enabled IPv6 mapping (and one IPv4 mapping), or give each mapping its own `listen` addresses",
        ]
    );
}

#[test]
fn example_file_loads() {
    let model = load_str(
        include_str!("../../../examples/home-router.yaml"),
        "home-router.yaml",
    )
    .expect("valid");
    let names: Vec<&str> = model.mappings.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web",
            "mail-smtp",
            "mail-pop3",
            "mail-imap",
            "game",
            "dns",
            "cameras"
        ]
    );
    assert_eq!(model.disabled, ["ssh"]);
    assert_eq!(model.settings.wan_interfaces, ["wan0"]);
    assert_eq!(model.settings.lan_interfaces, ["lan0"]);
}

#[test]
fn dual_stack_example_loads() {
    let model = load_str(
        include_str!("../../../examples/dual-stack.yaml"),
        "dual-stack.yaml",
    )
    .expect("valid");
    let names: Vec<(&str, bool)> = model
        .mappings
        .iter()
        .map(|m| (m.name.as_str(), m.to.is_ipv6()))
        .collect();
    assert_eq!(
        names,
        [
            ("web", false),
            ("web6", true),
            ("nas-ssh6", true),
            ("game6", true)
        ]
    );
}

#[test]
fn the_same_config_from_yaml_json_and_code_gives_the_same_model() {
    let yaml = "wan: { interfaces: [eth0] }\nmappings:\n  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80, allow_from: [203.0.113.0/24] }\n";
    let json = r#"{"wan": {"interfaces": ["eth0"]}, "mappings": [{"name": "web", "port": 8080, "to": "192.168.1.66", "to_port": "80", "allow_from": ["203.0.113.0/24"]}]}"#;
    let mut web = MappingConfig::new("web", 8080, "192.168.1.66");
    web.to_port = Some(PortSpec::Number(80));
    web.allow_from = vec!["203.0.113.0/24".into()];
    let code = Config::new(InterfaceList::new(["eth0"]), vec![web]);

    let from_yaml = load_str(yaml, "x").expect("yaml");
    let from_json = validate(&serde_json::from_str::<Config>(json).expect("json")).expect("json valid");
    let from_code = validate(&code).expect("code valid");
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml, from_code);
    // And a Model goes back to a Config that validates to the same Model.
    assert_eq!(
        validate(&Config::from(&from_code)).expect("round trip"),
        from_code
    );
}

#[test]
fn configs_built_in_code_get_field_paths_without_positions() {
    let mut bad = MappingConfig::new("web", 0, "::1");
    bad.allow_from = vec!["10.0.0.1/8".into()];
    let mut config = Config::new(
        InterfaceList::default(),
        vec![
            MappingConfig::new("ok", 80, "10.0.0.1"),
            bad,
            MappingConfig::default(),
        ],
    );
    config.version = Some(3);
    let errors: Vec<String> = validate(&config)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "config: version: unsupported configuration version 3; this portmap reads version 1",
            "config: wan.interfaces: no WAN interface is listed; list at least one interface facing the internet, e.g. [eth0]",
            "config: mappings[1].port: port 0 is out of range; use 1-65535 or \"A-B\"",
            "config: mappings[1].to: ::1 is the loopback address (::1); give the inner host's global or unique local address, e.g. 2001:db8::66",
            "config: mappings[1].allow_from[0]: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
            "config: mappings[2].name: the name is empty; use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit",
            "config: mappings[2].port: port 0 is out of range; use 1-65535 or \"A-B\"",
            "config: mappings[2].to: `to` is empty; give the inner host's IPv4 or IPv6 address, e.g. 192.168.1.66",
        ]
    );
}

#[test]
fn json_config_rejects_unknown_fields() {
    let json = r#"{"wan": {"interfaces": ["eth0"]}, "mappings": [{"name": "web", "port": 1, "to": "10.0.0.1", "alow_from": []}]}"#;
    let err = serde_json::from_str::<Config>(json).expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `alow_from`"), "{err}");
}

#[test]
fn hostile_strings_never_reach_a_model() {
    let hostile = [
        "a\"b",
        "a;b",
        "a\nb",
        "a\u{1b}[31m",
        "a\u{202e}b",
        "a b",
        "a`b",
        "a'b",
        "a$(x)",
        "a\\b",
    ];
    for h in hostile {
        let mut m = MappingConfig::new(h, 80, "10.0.0.1");
        assert!(validate(&Config::new(InterfaceList::new(["eth0"]), vec![m.clone()])).is_err());
        m.name = "ok".into();
        m.to = format!("10.0.0.1{h}");
        assert!(validate(&Config::new(InterfaceList::new(["eth0"]), vec![m.clone()])).is_err());
        let interface_ok = validate(&Config::new(InterfaceList::new([format!("e{h}")]), vec![])).is_ok();
        // `;`, `$(` and `\\` are legal in Linux interface names and harmless in a quoted nft string.
        assert_eq!(
            interface_ok,
            ["a;b", "a$(x)", "a\\b"].contains(&h),
            "interface e{h:?}"
        );
    }
    let long = "x".repeat(129);
    let mut m = MappingConfig::new("ok", 80, "10.0.0.1");
    m.description = Some(long);
    assert!(validate(&Config::new(InterfaceList::new(["eth0"]), vec![m])).is_err());
}

/// Ten thousand mappings (about 900 KB): `cargo test --release -p portmap-core -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn load_10k_mappings_timing() {
    let text = generated(10_000);
    let mut best = std::time::Duration::MAX;
    for _ in 0..10 {
        let start = std::time::Instant::now();
        let model: Model = load_str(&text, "big.yaml").expect("valid");
        best = best.min(start.elapsed());
        assert_eq!(model.mappings.len() + model.disabled.len(), 10_000);
    }
    eprintln!(
        "load_str: {} mappings, {} bytes, best of 10: {best:?}",
        10_000,
        text.len()
    );

    let model = load_str(&text, "big.yaml").expect("valid");
    let start = std::time::Instant::now();
    let first = portmap_core::plan(
        &model,
        &portmap_core::Observed::missing("nft", "inet portmap", None),
    );
    let rendered = portmap_core::render_plan(&first, false);
    let json = portmap_core::plan_json(&first).to_string();
    let create_time = start.elapsed();
    let start = std::time::Instant::now();
    let again = portmap_core::plan(
        &model,
        &portmap_core::Observed::from_model(&model, "nft", "inet portmap", None),
    );
    let equal_time = start.elapsed();
    assert!(again.is_empty());
    let start = std::time::Instant::now();
    let back = portmap_core::Plan::from_json(&json).expect("plan file");
    let read_time = start.elapsed();
    assert_eq!(back, first);
    eprintln!(
        "plan+render+json (create {} lines, {} bytes JSON): {create_time:?}; plan on equal state: {equal_time:?}; \
         Plan::from_json: {read_time:?}",
        rendered.lines().count(),
        json.len()
    );
}

/// A large configuration in the style of the example file.
fn generated(n: usize) -> String {
    let mut text =
        String::from("version: 1\nwan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmappings:\n");
    for i in 0..n {
        let _ = write!(
            text,
            "  - name: svc-{i:05}\n    protocol: {}\n    port: {}\n    to: 10.{}.{}.{}\n    to_port: {}\n    description: \"service {i}\"\n",
            ["tcp", "udp"][i % 2],
            10_000 + i / 2,
            i / 62_500,
            (i / 250) % 250,
            i % 250 + 1,
            80 + i % 1000,
        );
        if i % 10 == 0 {
            text.push_str("    allow_from: [203.0.113.0/24, 198.51.100.7]\n");
        }
    }
    text
}

#[test]
fn generated_config_is_valid() {
    let model = load_str(&generated(500), "big.yaml").expect("valid");
    assert_eq!(model.mappings.len(), 500);
}

#[test]
fn quoted_and_tagged_values_are_read_as_yaml_1_2_reads_them() {
    let text = concat!(
        "version: !!int \"1\"\n",
        "wan: { interfaces: [\"0x1F\", !!str true] }\n",
        "hairpin: !!bool FALSE\n",
        "masquerade: False\n",
        "mappings:\n",
        "  - { name: \"010\", port: 0x50, to: 10.0.0.1, to_port: !!int \"8080\", description: !!str 2024 }\n",
        "  - { name: !!str 011, port: \"81\", to: ! 10.0.0.2, description: ~, enabled: !!bool true }\n",
        "  - { name: c, port: 0o122, to: 10.0.0.3, to_port: +90 }\n",
    );
    let model = load_str(text, "x").expect("valid");
    assert_eq!(model.settings.wan_interfaces, ["0x1F", "true"]);
    assert!(!model.settings.hairpin);
    assert!(!model.settings.masquerade);
    let got: Vec<_> = model
        .mappings
        .iter()
        .map(|m| (m.name.as_str(), m.port, m.to_port, m.description.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "010",
                PortRange::single(80),
                PortRange::single(8080),
                Some("2024")
            ),
            ("011", PortRange::single(81), PortRange::single(81), None),
            ("c", PortRange::single(82), PortRange::single(90), None),
        ]
    );
}

/// The bounded reader, through `load_str`: each limit is one error with its position, found
/// without recursion and without reading on.
#[test]
fn limits_are_errors_with_positions() {
    // 20,000 brackets (a 40 KB file) used to overflow the stack.
    let deep = format!("wan: {}", "[".repeat(20_000));
    assert_eq!(
        errors(&deep),
        [
            "portmap.yaml:1:261: the configuration nests lists and mappings more than 64 deep; a portmap configuration needs 4 levels (mappings → entry → allow_from → address)"
        ]
    );
    let deep_block = format!("wan:\n{}", "- ".repeat(100));
    assert_eq!(
        errors(&deep_block),
        [
            "portmap.yaml:2:127: the configuration nests lists and mappings more than 64 deep; a portmap configuration needs 4 levels (mappings → entry → allow_from → address)"
        ]
    );
    let big = format!(
        "wan: {{ interfaces: [eth0] }}\n#{}\n",
        "x".repeat(portmap_core::MAX_CONFIG_BYTES)
    );
    assert_eq!(
        errors(&big),
        [format!(
            "portmap.yaml: the configuration is {} bytes, larger than the 32 MiB portmap reads",
            big.len()
        )]
    );
    let json_like = format!(
        "{{\"wan\": {{\"interfaces\": [\"eth0\"]}}, \"mappings\": [{}]}}",
        "{\"name\": \"a\"}, ".repeat(30_000)
    );
    assert_eq!(
        errors(&json_like),
        [
            "portmap.yaml:1:1: the value or flow collection (`[…]`, `{…}`) that follows is longer than 256 KiB, more than portmap reads at once; write long lists as block lists (one `- item` per line)"
        ]
    );
}

#[test]
fn not_utf8_is_an_error_at_the_byte() {
    let bytes = b"wan: { interfaces: [eth0] }\nmappings:\n  - { name: caf\xe9 }\n";
    let errors: Vec<String> = portmap_core::load_bytes(bytes, "portmap.yaml")
        .expect_err("not UTF-8")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["portmap.yaml:3:16: the configuration is not UTF-8 text (byte 0xe9 here); save it as UTF-8"]
    );
}

#[test]
fn the_error_list_shows_the_first_100_and_counts_the_rest() {
    // 250 bad entries: every one is an error, only the first 100 are kept and shown.
    let mut text = String::from(HEAD_FLOW!());
    for i in 0..250 {
        let _ = writeln!(text, "  - {{ name: m{i}, port: 0, to: 10.0.0.1 }}");
    }
    let err = load_str(&text, "portmap.yaml").expect_err("invalid");
    assert_eq!(err.len(), 250);
    assert_eq!(err.iter().count(), 100);
    assert_eq!(err.omitted(), 150);
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 102, "{shown}");
    assert!(lines[0].starts_with("portmap.yaml:3:"), "{}", lines[0]);
    assert!(lines[99].starts_with("portmap.yaml:102:"), "{}", lines[99]);
    assert_eq!(lines[100], "and 150 more errors (only the first 100 are shown)");
    assert_eq!(lines[101], "250 errors in portmap.yaml.");

    // The kept ones are the first by position even when an earlier one is found last: the port on
    // line 3 is checked after the YAML walk has reported every later entry.
    let mut text = String::from(HEAD_FLOW!());
    let _ = writeln!(text, "  - {{ name: a, port: 0, to: 10.0.0.1 }}");
    for i in 0..150 {
        let _ = writeln!(text, "  - {{ name: [x], port: {}, to: 10.0.0.1 }}", i + 1);
    }
    let err = load_str(&text, "portmap.yaml").expect_err("invalid");
    assert_eq!(err.len(), 151);
    let kept: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert!(
        kept[0].starts_with("portmap.yaml:3:22: mappings[0].port: port 0"),
        "{}",
        kept[0]
    );
    assert!(kept[99].starts_with("portmap.yaml:102:"), "{}", kept[99]);
}

/// The documented limits leave room for 100,000 mappings: the configuration and the plan file that
/// creates them. `cargo test --release -p portmap-core -- --ignored --nocapture`.
#[test]
#[ignore = "large; run in release"]
fn limits_fit_100k_mappings() {
    let text = generated(100_000);
    let model = load_str(&text, "big.yaml").expect("valid");
    let plan = portmap_core::plan(
        &model,
        &portmap_core::Observed::missing("nft", "inet portmap", None),
    );
    let plan_file = serde_json::to_string_pretty(&plan).expect("json") + "\n";
    eprintln!(
        "100,000 mappings: configuration {} bytes (limit {}), plan file {} bytes (limit {})",
        text.len(),
        portmap_core::MAX_CONFIG_BYTES,
        plan_file.len(),
        portmap_core::MAX_PLAN_BYTES
    );
    assert!(text.len() * 2 < portmap_core::MAX_CONFIG_BYTES);
    assert!(plan_file.len() < portmap_core::MAX_PLAN_BYTES);
    assert_eq!(
        portmap_core::Plan::from_json(&plan_file).expect("reads back"),
        plan
    );
}

#[test]
fn log_and_limit_are_read_checked_and_canonical() {
    use portmap_core::RateUnit::{Hour, Second};
    let text = concat!(
        "wan: { interfaces: [wan0] }\n",
        "log_group: 7\n",
        "mappings:\n",
        "  - { name: web, port: 8080, to: 192.168.1.66, log: true, limit: \"20/second burst 40\" }\n",
        "  - { name: ssh, port: 2222, to: 192.168.1.25, limit: 24/day }\n",
        "  - { name: dns, port: 53, to: 192.168.1.70, limit: \"120/minute packets\" }\n",
        "  - { name: plain, port: 81, to: 192.168.1.66 }\n",
    );
    let model = load_str(text, "x").expect("valid");
    let limit = |rate, per, burst| Some(portmap_core::Limit { rate, per, burst });
    assert_eq!(model.mappings[0].log, Some(7));
    assert_eq!(model.mappings[0].limit, limit(20, Second, 40));
    // The shortest unit in which the rate is whole; the burst nft and iptables default to.
    assert_eq!(model.mappings[1].limit, limit(1, Hour, 5));
    assert_eq!(model.mappings[2].limit, limit(2, Second, 5));
    assert_eq!(model.mappings[1].log, None);
    assert_eq!(model.mappings[3].limit, None);
    assert_eq!(
        model.mappings[0].limit.expect("set").to_string(),
        "20/second burst 40"
    );
    // Without `log_group`, the default group.
    let default = load_str(
        "wan: { interfaces: [wan0] }\nmappings:\n  - { name: web, port: 80, to: 192.168.1.66, log: true }\n",
        "x",
    )
    .expect("valid");
    assert_eq!(default.mappings[0].log, Some(portmap_core::DEFAULT_LOG_GROUP));
    // The model goes back to a configuration that validates to it again (what plan files rely on).
    let again = validate(&Config::from(&model)).expect("valid");
    assert_eq!(again.mappings, model.mappings);
}

#[test]
fn bad_log_and_limit_say_what_is_valid() {
    let long = "n".repeat(56);
    let text = format!(
        concat!(
            "wan: {{ interfaces: [wan0] }}\n",
            "log_group: 70000\n",
            "mappings:\n",
            "  - {{ name: a, port: 1, to: 192.168.1.66, log: yes }}\n",
            "  - {{ name: b, port: 2, to: 192.168.1.66, limit: 20 }}\n",
            "  - {{ name: c, port: 3, to: 192.168.1.66, limit: 20/fortnight }}\n",
            "  - {{ name: d, port: 4, to: 192.168.1.66, limit: \"0/second\" }}\n",
            "  - {{ name: e, port: 5, to: 192.168.1.66, limit: \"5/second burst 0\" }}\n",
            "  - {{ name: f, port: 6, to: 192.168.1.66, limit: \"1/day\" }}\n",
            "  - {{ name: g, port: 7, to: 192.168.1.66, limit: {{ rate: 5/second }} }}\n",
            "  - {{ name: h, port: 8, to: 192.168.1.66, limit: \"5/second burst\" }}\n",
            "  - {{ name: {long}, port: 9, to: 192.168.1.66, log: true }}\n",
            "  - {{ name: i, port: 10, to: 192.168.1.66, limt: 5/second }}\n",
        ),
        long = long
    );
    assert_eq!(
        errors(&text),
        [
            "portmap.yaml:2:12: log_group: log group 70000 is out of range; use an nflog group 0-65535 (default 100)",
            "portmap.yaml:4:48: mappings[0].log: expected true or false, got `yes` (YAML 1.1 spellings are not booleans here)",
            "portmap.yaml:5:50: mappings[1].limit: `20` is read by YAML as the number 20; quote it: \"20\"",
            "portmap.yaml:6:50: mappings[2].limit: unknown unit `fortnight` in the limit; use second, minute, hour or day (e.g. \"20/second\")",
            "portmap.yaml:7:50: mappings[3].limit: the limit's rate 0 is out of range; use 1-1000000",
            "portmap.yaml:8:50: mappings[4].limit: the limit's burst 0 is out of range; use 1-10000",
            "portmap.yaml:9:50: mappings[5].limit: 1/day is slower than the slowest rate portmap keeps, 1/hour; allow at least one new connection an hour",
            "portmap.yaml:10:52: mappings[6].limit: expected a rate as nft writes it, got a mapping; write limit: \"20/second\" or limit: \"20/second burst 40\"",
            "portmap.yaml:11:50: mappings[7].limit: `5/second burst` is not a limit; write a rate as nft does: \"20/second\", or with a burst \"20/second burst 40\" (units second, minute, hour, day)",
            &format!(
                "portmap.yaml:12:103: mappings[8].log: a mapping that logs can have a name of at most 55 bytes (the kernel's log prefix holds 63 bytes and portmap writes `portmap <name>`); `{long}` is 56 bytes: shorten the name or remove `log: true`"
            ),
            "portmap.yaml:13:44: mappings[9]: unknown key `limt`; did you mean `limit`?",
        ]
    );
}

/// `expires`: a plain or quoted RFC 3339 time, with `Z` or an offset, becomes the UTC moment (to
/// the second); a configuration built back from the model says it in UTC and validates to it.
#[test]
fn expires_is_read_as_a_utc_moment() {
    let text = concat!(
        HEAD_FLOW!(),
        "  - { name: web, port: 8080, to: 192.168.1.66, expires: 2026-12-24T00:00:00Z }\n",
        "  - { name: ssh, port: 2222, to: 192.168.1.25, expires: \"2026-12-24T01:00:00.750+01:00\" }\n",
        "  - { name: dns, port: 53, to: 192.168.1.70, expires: 2020-01-01T00:00:00-00:30 }\n",
        "  - { name: ftp, port: 21, to: 192.168.1.71 }\n",
    );
    let model = load_str(text, "portmap.yaml").expect("valid");
    let at = |i: usize| model.mappings[i].expires.map(|t| t.to_string());
    assert_eq!(at(0).as_deref(), Some("2026-12-24T00:00:00Z"));
    assert_eq!(at(1).as_deref(), Some("2026-12-24T00:00:00Z"));
    // A moment already past is valid: the plan warns and does not install the mapping.
    assert_eq!(at(2).as_deref(), Some("2020-01-01T00:30:00Z"));
    assert_eq!(at(3), None);
    let back = Config::from(&model);
    assert_eq!(back.mappings[1].expires.as_deref(), Some("2026-12-24T00:00:00Z"));
    assert_eq!(validate(&back).expect("valid again").mappings, model.mappings);
    // An expired mapping still takes its port: a clash with it is an error.
    let clash = concat!(
        HEAD_FLOW!(),
        "  - { name: old, port: 8080, to: 192.168.1.66, expires: 2020-01-01T00:00:00Z }\n",
        "  - { name: new, port: 8080, to: 192.168.1.67 }\n",
    );
    assert!(load_str(clash, "portmap.yaml").is_err());
}
