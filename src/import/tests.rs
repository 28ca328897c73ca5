//! Unit tests of the pure conversion: rules (iptables-save text, nft expressions laid out as
//! `nft --debug=netlink` shows them) → mappings → YAML that portmap's own loader accepts. No root.

#![allow(clippy::unwrap_used)]

use portmap_netlink::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, PayloadBase, Policy,
    Register, Rule, Set, Table, Verdict, set_flags,
};

use super::nft::NftTable;
use super::{Found, convert, iptables, nft};

fn ipt(text: &str) -> Found {
    let dump = portmap_iptables::save::parse(text).unwrap();
    iptables::decode("iptables-legacy", false, &dump)
}

/// The YAML must load as a valid configuration.
fn valid(found: Found) -> (super::Imported, String) {
    let imported = convert(found, None);
    let yaml = imported.to_yaml();
    if let Err(e) = portmap_core::load_str(&yaml, "import") {
        panic!("imported YAML is not valid:\n{e}\n{yaml}");
    }
    (imported, yaml)
}

const SAVE: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FWD - [0:0]
:LOOP - [0:0]
-A PREROUTING -i wan0 -p tcp -m tcp --dport 8080 -m comment --comment \"web \\\"front\\\"\" -j DNAT --to-destination 192.168.1.66:80
-A PREROUTING -i wan0 -p udp -m udp --dport 8080 -j DNAT --to-destination 192.168.1.66:80
-A PREROUTING -i wan0 -j FWD
-A PREROUTING -i eth1 -p tcp --dport 9000 -j DNAT --to-destination 192.168.1.9
-A FWD -s 203.0.113.0/24 -p tcp --dport 25 -j DNAT --to-destination 192.168.1.25
-A FWD -s 198.51.100.7/32 -p tcp --dport 25 -j DNAT --to-destination 192.168.1.25
-A FWD -p tcp -m multiport --dports 6000,6001,6002 -j DNAT --to-destination 192.168.1.80
-A FWD -p tcp --dport 7000:7002 -j DNAT --to-destination 192.168.1.70:8000-8002/7000
-A FWD -p tcp --dport 7100:7102 -j DNAT --to-destination 192.168.1.70:8000
-A FWD -m mark --mark 0x1 -p tcp --dport 7200 -j DNAT --to-destination 192.168.1.70
-A FWD -d 203.0.113.1/32 -p tcp --dport 7300 -j DNAT --to-destination 192.168.1.70
-A FWD -p tcp --dport 7400 -j DNAT --to-destination 192.168.1.70 --to-destination 192.168.1.71
-A FWD -p tcp --dport 7500 -j DNAT --to-destination 192.168.1.70-192.168.1.71
-A FWD -p tcp --dport 8080 -j DNAT --to-destination 192.168.1.99
-A FWD -j LOOP
-A LOOP -j FWD
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
";

#[test]
fn iptables_rules_become_merged_mappings_with_origins_and_reasons() {
    let (imported, yaml) = valid(ipt(SAVE));
    assert_eq!(imported.wan, ["wan0"]);
    let names: Vec<&str> = imported.mappings.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web-front",
            "tcp-25",
            "tcp-6000-6002",
            "tcp-7000-7002",
            "tcp-7300"
        ],
        "{yaml}"
    );
    // `-d ADDR/32`: the mapping answers on that address only.
    assert!(
        yaml.contains(
            "  - name: tcp-7300\n    port: 7300\n    to: 192.168.1.70\n    listen: [203.0.113.1]\n"
        ),
        "{yaml}"
    );
    // tcp+udp of the same forward: one `both` mapping, with the comment as description.
    let web = &imported.mappings[0];
    assert_eq!(web.protocol, portmap_core::Protocol::Both);
    assert_eq!(web.description.as_deref(), Some("web 'front'"));
    assert!(yaml.contains("# from iptables-legacy nat PREROUTING rule 1\n  # from iptables-legacy nat PREROUTING rule 2\n  - name: web-front\n    protocol: both\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n"), "{yaml}");
    // Two -s rules of one forward: one allow_from.
    assert!(yaml.contains("  - name: tcp-25\n    port: 25\n    to: 192.168.1.25\n    allow_from: [198.51.100.7, 203.0.113.0/24]\n"), "{yaml}");
    // multiport of consecutive ports: one range; an offset (/BASE) range: to_port.
    assert!(
        yaml.contains("    port: \"6000-6002\"\n    to: 192.168.1.80\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("    port: \"7000-7002\"\n    to: 192.168.1.70\n    to_port: \"8000-8002\"\n"),
        "{yaml}"
    );
    let reasons: Vec<(&str, &str)> = imported
        .not_taken
        .iter()
        .map(|n| (n.origin.as_str(), n.reason.as_str()))
        .collect();
    let has = |origin: &str, reason: &str| {
        assert!(
            reasons
                .iter()
                .any(|(o, r)| o.starts_with(origin) && r.contains(reason)),
            "no `{reason}` for {origin} in {reasons:#?}"
        );
    };
    has("iptables-legacy nat FWD rule 5", "all to port 8000");
    has("iptables-legacy nat FWD rule 6", "-m mark");
    has("iptables-legacy nat FWD rule 8", "several addresses");
    has("iptables-legacy nat FWD rule 9", "range of addresses");
    has("iptables-legacy nat LOOP rule 1", "a loop");
    has("iptables-legacy nat POSTROUTING rule 1", "source NAT");
    // Another interface, and a port an earlier rule already takes: set aside, with the reason.
    let aside: Vec<(&str, &str)> = imported
        .set_aside
        .iter()
        .map(|a| (a.mapping.name.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:#?}");
    // In kernel order: FWD (jumped to from PREROUTING rule 3) before PREROUTING rule 4.
    assert!(
        aside[0]
            .1
            .contains("tcp 8080 is already forwarded by mapping web-front"),
        "{aside:#?}"
    );
    assert!(aside[1].1.contains("input interface eth1"), "{aside:#?}");
    assert!(yaml.contains("#  - name: tcp-9000\n"), "{yaml}");
}

#[test]
fn portmaps_own_chains_are_skipped() {
    let text = "\
*nat
:PREROUTING ACCEPT [0:0]
:PORTMAP-MARK - [0:0]
:PORTMAP-PRE - [0:0]
:PORTMAP-DNAT - [0:0]
-A PREROUTING -m comment --comment \"portmap PORTMAP\" -j PORTMAP-PRE
-A PORTMAP-MARK -m comment --comment \"managed by portmap\"
-A PORTMAP-PRE -j PORTMAP-DNAT
-A PORTMAP-DNAT -p tcp -m tcp --dport 80 -m comment --comment web -j DNAT --to-destination 192.168.1.66
COMMIT
";
    let found = ipt(text);
    assert!(
        found.candidates.is_empty() && found.not_taken.is_empty(),
        "{found:#?}"
    );
    assert!(
        found.read[0].contains("skipped portmap's own chains PORTMAP-"),
        "{:?}",
        found.read
    );
}

#[test]
fn ip6tables_brackets_and_no_interface_gives_a_placeholder_wan() {
    let text = "\
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -s 2001:db8:100::/48 -p tcp -m tcp --dport 443 -j DNAT --to-destination [2001:db8:2::66]:8443
COMMIT
";
    let dump = portmap_iptables::save::parse(text).unwrap();
    let (imported, yaml) = valid(iptables::decode("ip6tables-nft", true, &dump));
    assert!(imported.wan_guessed);
    assert!(yaml.contains("eth0 is a placeholder"), "{yaml}");
    assert!(yaml.contains("  - name: tcp-443-ip6\n    port: 443\n    to: 2001:db8:2::66\n    to_port: 8443\n    allow_from: [\"2001:db8:100::/48\"]\n"), "{yaml}");
}

#[test]
fn names_from_comments_are_valid_and_unique() {
    assert_eq!(
        super::convert::name_from_comment("Web server #1").as_deref(),
        Some("Web-server-1")
    );
    assert_eq!(super::convert::name_from_comment("--x--").as_deref(), Some("x"));
    assert_eq!(super::convert::name_from_comment("日本"), None);
    let text = "\
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 1 -m comment --comment \"010\" -j DNAT --to-destination 10.0.0.1
-A PREROUTING -p tcp --dport 3 -m comment --comment \"010\" -j DNAT --to-destination 10.0.0.2
-A PREROUTING -p tcp --dport 5 -m comment --comment \"true\" -j DNAT --to-destination 10.0.0.3
COMMIT
";
    let (imported, yaml) = valid(ipt(text));
    let names: Vec<&str> = imported.mappings.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["010", "010-2", "true"]);
    assert!(
        yaml.contains("name: \"010-2\"") && yaml.contains("name: \"true\""),
        "{yaml}"
    );
}

// nft: rules laid out as `nft --debug=netlink` shows them.

fn cmp(sreg: Register, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg,
        op: CmpOp::Eq,
        data: data.to_vec(),
    }
}

fn tcp_dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::R1,
        },
        cmp(Register::R1, &[6]),
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Register::R1,
        },
        cmp(Register::R1, &port.to_be_bytes()),
    ]
}

fn iifname(name: &str) -> Vec<Expr> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(16, 0);
    vec![
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: Register::R1,
        },
        cmp(Register::R1, &bytes),
    ]
}

fn dnat(addr_min: Register, proto_min: Option<Register>) -> Expr {
    Expr::Nat {
        nat_type: NatType::Dnat,
        family: 2,
        addr_min: Some(addr_min),
        addr_max: None,
        proto_min,
        proto_max: None,
        flags: 0,
    }
}

fn rule(chain: &str, handle: u64, exprs: Vec<Expr>) -> Rule {
    Rule {
        family: Family::Ipv4,
        table: "nat".to_owned(),
        chain: chain.to_owned(),
        exprs,
        userdata: None,
        handle: Some(handle),
    }
}

fn chain(name: &str, hook: Option<Hook>) -> Chain {
    Chain {
        family: Family::Ipv4,
        table: "nat".to_owned(),
        name: name.to_owned(),
        base: hook.map(|hook| BaseChain {
            hook,
            priority: -100,
            chain_type: "nat".to_owned(),
            policy: Policy::Accept,
        }),
        userdata: None,
        handle: None,
    }
}

fn set(name: &str, flags: u32, key_len: u32, data_len: Option<u32>) -> Set {
    Set {
        family: Family::Ipv4,
        table: "nat".to_owned(),
        name: name.to_owned(),
        flags,
        key_type: 0,
        key_len,
        data_type: data_len.map(|_| 0),
        data_len,
        obj_type: None,
        id: 0,
        concat: Vec::new(),
        userdata: None,
        handle: None,
    }
}

fn element(key: &[u8], data: Option<&[u8]>) -> Element {
    Element {
        key: key.to_vec(),
        key_end: None,
        data: data.map(|d| Data::Value(d.to_vec())),
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    }
}

#[test]
fn nft_shapes_become_mappings() {
    let imm = |dreg, data: &[u8]| Expr::Immediate {
        dreg,
        data: Data::Value(data.to_vec()),
    };
    // iifname "wan0" tcp dport 8080 dnat to 192.168.1.66:80
    let mut r1 = iifname("wan0");
    r1.extend(tcp_dport(8080));
    r1.extend([
        imm(Register::R1, &[192, 168, 1, 66]),
        imm(Register::R2, &[0, 80]),
        dnat(Register::R1, Some(Register::R2)),
    ]);
    // dnat to meta l4proto . th dport map @fw   ({ udp . 2222 : 192.168.1.10 . 22 })
    let r2 = vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Register::R1,
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Register::R32(1),
        },
        Expr::Lookup {
            sreg: Register::R1,
            dreg: Some(Register::R1),
            set: "fw".to_owned(),
            set_id: 0,
            invert: false,
        },
        dnat(Register::R1, Some(Register::R32(1))),
    ];
    // ip saddr 10.0.0.0/8 tcp dport 22 ct mark 1 …: not taken over.
    let mut r3 = vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 1,
            dreg: Register::R1,
        },
        cmp(Register::R1, &[10]),
    ];
    r3.extend(tcp_dport(22));
    r3.push(Expr::Ct {
        key: 3,
        dreg: Register::R1,
        direction: None,
    });
    r3.push(cmp(Register::R1, &1u32.to_ne_bytes()));
    r3.extend([imm(Register::R1, &[192, 168, 1, 22]), dnat(Register::R1, None)]);
    // ip saddr 10.0.0.0/8 jump sub; sub: tcp dport 23 dnat to 192.168.1.23
    let r4 = vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 1,
            dreg: Register::R1,
        },
        cmp(Register::R1, &[10]),
        Expr::Immediate {
            dreg: Register::Verdict,
            data: Data::Verdict(Verdict::Jump("sub".to_owned())),
        },
    ];
    let mut r5 = tcp_dport(23);
    r5.extend([imm(Register::R1, &[192, 168, 1, 23]), dnat(Register::R1, None)]);
    let table = NftTable {
        table: Table {
            family: Family::Ipv4,
            name: "nat".to_owned(),
            flags: 0,
            userdata: None,
            handle: Some(1),
            owner: None,
        },
        chains: vec![chain("prerouting", Some(Hook::Prerouting)), chain("sub", None)],
        rules: vec![
            rule("prerouting", 2, r1),
            rule("prerouting", 3, r2),
            rule("prerouting", 4, r3),
            rule("prerouting", 5, r4),
            rule("sub", 6, r5),
        ],
        sets: vec![(
            set("fw", set_flags::MAP | set_flags::CONCAT, 8, Some(8)),
            vec![element(
                &[17, 0, 0, 0, 0x08, 0xae, 0, 0],
                Some(&[192, 168, 1, 10, 0, 22, 0, 0]),
            )],
        )],
    };
    let (imported, yaml) = valid(nft::decode(&[table]));
    assert_eq!(imported.wan, ["wan0"]);
    assert!(yaml.contains("  # from nft table ip nat chain prerouting handle 2\n  - name: tcp-8080\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n"), "{yaml}");
    assert!(
        yaml.contains(
            "  - name: udp-2222\n    protocol: udp\n    port: 2222\n    to: 192.168.1.10\n    to_port: 22\n"
        ),
        "{yaml}"
    );
    assert!(yaml.contains("  # from nft table ip nat chain sub handle 6 (jumped to from prerouting)\n  - name: tcp-23\n    port: 23\n    to: 192.168.1.23\n    allow_from: [10.0.0.0/8]\n"), "{yaml}");
    assert!(
        yaml.contains("# - nft table ip nat chain prerouting handle 4: matches ct mark"),
        "{yaml}"
    );
}

#[test]
fn portmaps_own_table_and_iptables_nft_tables_are_not_read_as_nft() {
    let table = |name: &str, comment: Option<&str>, exprs: Vec<Expr>| NftTable {
        table: Table {
            family: Family::Inet,
            name: name.to_owned(),
            flags: 0,
            userdata: comment.map(portmap_netlink::udata::comment),
            handle: None,
            owner: None,
        },
        chains: vec![chain("prerouting", Some(Hook::Prerouting))],
        rules: vec![rule("prerouting", 1, exprs)],
        sets: Vec::new(),
    };
    let xt = vec![Expr::Unknown {
        name: "target".to_owned(),
    }];
    let found = nft::decode(&[
        table("portmap", Some("managed by portmap"), tcp_dport(1)),
        table("nat", None, xt),
    ]);
    assert!(found.candidates.is_empty() && found.not_taken.is_empty());
    assert_eq!(
        found.read,
        [
            "nft: no native table; skipped table inet portmap (portmap's own), table inet nat (iptables-nft's; read with iptables-nft-save)"
        ]
    );
}
