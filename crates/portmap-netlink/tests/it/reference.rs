//! The reference ruleset the kernel tests build two ways: as objects for a [`Batch`] (what portmap's
//! nft backend sends) and as the `nft -f` script nft itself would load for the same table. Pure data:
//! no namespace, no socket.

use portmap_netlink::{
    BaseChain, Batch, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, PayloadBase, Policy,
    Register, Rule, Set, Table, Verdict, datatype, interval, set_flags, udata,
};

pub const REFERENCE_SCRIPT: &str = r#"table inet portmap {
  comment "managed by portmap"
  set wan_ifaces { type ifname; elements = { "eth0" } }
  map dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; elements = { tcp . 8080 comment "web: web server" : 192.168.1.66 . 80, udp . 6000 comment "game" : 192.168.1.70 . 7000 } }
  map guard4 { type inet_proto . inet_service : verdict; elements = { tcp . 25 comment "mail" : jump allow_mail } }
  set allow_mail_src { type ipv4_addr; flags interval; comment "mail"; elements = { 203.0.113.0/24, 198.51.100.7 } }
  chain allow_mail {
    comment "mail"
    ip saddr != @allow_mail_src accept
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname @wan_ifaces fib daddr type local meta nfproto ipv4 meta l4proto . th dport vmap @guard4
    iifname @wan_ifaces fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct status dnat counter accept
  }
}
"#;

pub const TABLE: &str = "portmap";
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// `inet_proto . inet_service` key: protocol and port, each padded to 4 bytes.
pub fn proto_port(proto: u8, port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![proto, 0, 0, 0, p[0], p[1], 0, 0]
}

/// `ipv4_addr . inet_service` data.
pub fn addr_port(addr: [u8; 4], port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![addr[0], addr[1], addr[2], addr[3], p[0], p[1], 0, 0]
}

pub fn table() -> Table {
    Table {
        family: Family::Inet,
        name: TABLE.into(),
        flags: 0,
        userdata: Some(udata::comment("managed by portmap")),
        handle: None,
        owner: None,
    }
}

pub fn chain(name: &str, base: Option<BaseChain>, comment: Option<&str>) -> Chain {
    Chain {
        family: Family::Inet,
        table: TABLE.into(),
        name: name.into(),
        base,
        userdata: comment.map(udata::comment),
        handle: None,
    }
}

pub fn chains() -> Vec<Chain> {
    vec![
        chain("allow_mail", None, Some("mail")),
        chain(
            "prerouting",
            Some(BaseChain {
                hook: Hook::Prerouting,
                priority: -100,
                chain_type: "nat".into(),
                policy: Policy::Accept,
            }),
            None,
        ),
        chain(
            "forward",
            Some(BaseChain {
                hook: Hook::Forward,
                priority: 0,
                chain_type: "filter".into(),
                policy: Policy::Accept,
            }),
            None,
        ),
    ]
}

fn set(name: &str, id: u32) -> Set {
    Set {
        family: Family::Inet,
        table: TABLE.into(),
        name: name.into(),
        flags: 0,
        key_type: 0,
        key_len: 0,
        data_type: None,
        data_len: None,
        id,
        concat: Vec::new(),
        userdata: None,
        handle: None,
        obj_type: None,
    }
}

pub fn proto_port_map(name: &str, id: u32, data_type: u32, data_len: u32) -> Set {
    Set {
        flags: set_flags::MAP,
        key_type: datatype::concat(&[datatype::INET_PROTO, datatype::INET_SERVICE]),
        key_len: 8,
        data_type: Some(data_type),
        data_len: Some(data_len),
        userdata: Some(udata::set_udata(
            Some(udata::BYTEORDER_INVALID),
            Some(udata::BYTEORDER_INVALID),
            None,
        )),
        ..set(name, id)
    }
}

/// The reference sets, each with its elements.
pub fn sets() -> Vec<(Set, Vec<Element>)> {
    let wan = Set {
        key_type: datatype::IFNAME,
        key_len: 16,
        userdata: Some(udata::set_udata(Some(udata::BYTEORDER_HOST), None, None)),
        ..set("wan_ifaces", 1)
    };
    let wan_elems = vec![Element {
        key: datatype::ifname("eth0"),
        key_end: None,
        data: None,
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    }];
    let dnat4 = proto_port_map(
        "dnat4",
        2,
        datatype::concat(&[datatype::IPV4_ADDR, datatype::INET_SERVICE]),
        8,
    );
    let dnat4_elems = vec![
        Element {
            key: proto_port(TCP, 8080),
            key_end: None,
            data: Some(Data::Value(addr_port([192, 168, 1, 66], 80))),
            flags: 0,
            userdata: Some(udata::comment("web: web server")),
            timeout: None,
            expiration: None,
        },
        Element {
            key: proto_port(UDP, 6000),
            key_end: None,
            data: Some(Data::Value(addr_port([192, 168, 1, 70], 7000))),
            flags: 0,
            userdata: Some(udata::comment("game")),
            timeout: None,
            expiration: None,
        },
    ];
    let guard4 = proto_port_map("guard4", 3, datatype::VERDICT, 0);
    let guard4_elems = vec![Element {
        key: proto_port(TCP, 25),
        key_end: None,
        data: Some(Data::Verdict(Verdict::Jump("allow_mail".into()))),
        flags: 0,
        userdata: Some(udata::comment("mail")),
        timeout: None,
        expiration: None,
    }];
    let allow = Set {
        flags: set_flags::INTERVAL,
        key_type: datatype::IPV4_ADDR,
        key_len: 4,
        userdata: Some(udata::set_udata(Some(udata::BYTEORDER_BIG), None, Some("mail"))),
        ..set("allow_mail_src", 4)
    };
    let allow_elems = interval::to_elements(&[
        interval::Interval {
            start: vec![203, 0, 113, 0],
            end: vec![203, 0, 113, 255],
            comment: None,
        },
        interval::Interval {
            start: vec![198, 51, 100, 7],
            end: vec![198, 51, 100, 7],
            comment: None,
        },
    ]);
    vec![
        (wan, wan_elems),
        (dnat4, dnat4_elems),
        (guard4, guard4_elems),
        (allow, allow_elems),
    ]
}

fn rule(chain: &str, exprs: Vec<Expr>) -> Rule {
    Rule {
        family: Family::Inet,
        table: TABLE.into(),
        chain: chain.into(),
        exprs,
        userdata: None,
        handle: None,
    }
}

fn meta(key: MetaKey) -> Expr {
    Expr::Meta {
        key,
        dreg: Register::R1,
    }
}

fn cmp_eq(data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg: Register::R1,
        op: CmpOp::Eq,
        data: data.to_vec(),
    }
}

fn accept() -> Expr {
    Expr::Immediate {
        dreg: Register::Verdict,
        data: Data::Verdict(Verdict::Accept),
    }
}

/// `iifname @wan_ifaces fib daddr type local meta nfproto ipv4 meta l4proto . th dport`
fn wan_prefix() -> Vec<Expr> {
    vec![
        meta(MetaKey::IifName),
        Expr::Lookup {
            sreg: Register::R1,
            dreg: None,
            set: "wan_ifaces".into(),
            set_id: 1,
            invert: false,
        },
        Expr::Fib {
            flags: 2,
            result: 3,
            dreg: Register::R1,
        },
        cmp_eq(&2u32.to_ne_bytes()),
        meta(MetaKey::NfProto),
        cmp_eq(&[2]),
        meta(MetaKey::L4Proto),
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Register::R32(1),
        },
    ]
}

pub fn rules() -> Vec<Rule> {
    let mut vmap = wan_prefix();
    vmap.push(Expr::Lookup {
        sreg: Register::R1,
        dreg: Some(Register::Verdict),
        set: "guard4".into(),
        set_id: 3,
        invert: false,
    });
    let mut dnat = wan_prefix();
    dnat.push(Expr::Lookup {
        sreg: Register::R1,
        dreg: Some(Register::R1),
        set: "dnat4".into(),
        set_id: 2,
        invert: false,
    });
    dnat.push(Expr::Nat {
        nat_type: NatType::Dnat,
        family: 2,
        addr_min: Some(Register::R1),
        addr_max: None,
        proto_min: Some(Register::R32(1)),
        proto_max: None,
        flags: 0,
    });
    vec![
        rule(
            "allow_mail",
            vec![
                meta(MetaKey::NfProto),
                cmp_eq(&[2]),
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 4,
                    dreg: Register::R1,
                },
                Expr::Lookup {
                    sreg: Register::R1,
                    dreg: None,
                    set: "allow_mail_src".into(),
                    set_id: 4,
                    invert: true,
                },
                accept(),
            ],
        ),
        rule("prerouting", vmap),
        rule("prerouting", dnat),
        rule(
            "forward",
            vec![
                Expr::Ct {
                    key: 2,
                    dreg: Register::R1,
                    direction: None,
                },
                Expr::Bitwise {
                    sreg: Register::R1,
                    dreg: Register::R1,
                    len: 4,
                    mask: 0x20u32.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp {
                    sreg: Register::R1,
                    op: CmpOp::Neq,
                    data: vec![0; 4],
                },
                Expr::Counter { bytes: 0, packets: 0 },
                accept(),
            ],
        ),
    ]
}

/// The reference ruleset as one batch, in nft's order: table, chains, sets with their elements,
/// rules.
pub fn reference_batch() -> Batch {
    let mut b = Batch::new();
    b.add_table(&table());
    for c in chains() {
        b.add_chain(&c);
    }
    for (s, elems) in sets() {
        b.add_set(&s);
        b.add_elements(s.family, &s.table, &s.name, s.id, &elems);
    }
    for r in rules() {
        b.add_rule(&r);
    }
    b
}
