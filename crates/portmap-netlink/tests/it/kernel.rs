//! Kernel tests: every test makes its own network namespace(s), talks to the real `nf_tables` there,
//! and deletes them (even on panic). They need root and fail without it; they never touch the
//! host namespace's ruleset.

use std::time::Instant;

use portmap_netlink::{
    Batch, Chain, Data, Element, Error, Expr, Family, Netns, Register, Rule, Set, Socket, Table, elem_flags,
    interval, udata,
};
use portmap_testkit::{Netns as TestNetns, normalize, require_root};

use crate::NetlinkNetns;
use crate::reference::{
    self, REFERENCE_SCRIPT, TABLE, TCP, UDP, addr_port, proto_port, proto_port_map, reference_batch,
};

fn list(ns: &TestNetns) -> String {
    normalize(&ns.output("nft", &["list", "table", "inet", TABLE]))
}

#[test]
fn batch_builds_what_nft_f_builds() {
    require_root!();
    let ours = TestNetns::new("nl-kernel");
    let theirs = TestNetns::new("nl-kernel");
    let mut sock = ours.socket();
    sock.send(&reference_batch(), None).expect("send reference batch");
    theirs.nft_load(REFERENCE_SCRIPT);
    let (a, b) = (list(&ours), list(&theirs));
    assert_eq!(a, b, "ours:\n{a}\nnft -f:\n{b}");
    assert!(a.contains("dnat ip to meta l4proto . th dport map @dnat4"), "{a}");
}

/// What the kernel reports back differs from what was sent in documented ways only.
fn normalize_rule(r: &Rule) -> Rule {
    let mut r = r.clone();
    r.handle = None;
    for e in &mut r.exprs {
        match e {
            Expr::Lookup {
                set_id, sreg, dreg, ..
            } => {
                *set_id = 0;
                *sreg = sreg.canonical();
                *dreg = dreg.map(Register::canonical);
            }
            Expr::Nat {
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
                ..
            } => {
                // The kernel fills in max = min and the NF_NAT_RANGE_* flags the registers imply.
                if addr_max.is_none() {
                    *addr_max = *addr_min;
                }
                if proto_max.is_none() {
                    *proto_max = *proto_min;
                }
                if addr_min.is_some() {
                    *flags |= 1; // NF_NAT_RANGE_MAP_IPS
                }
                if proto_min.is_some() {
                    *flags |= 2; // NF_NAT_RANGE_PROTO_SPECIFIED
                }
            }
            Expr::Counter { bytes, packets } => {
                *bytes = 0;
                *packets = 0;
            }
            _ => {}
        }
    }
    r
}

fn normalize_set(s: &Set) -> Set {
    let verdict_map = s.data_type == Some(portmap_netlink::datatype::VERDICT);
    Set {
        handle: None,
        id: 0,
        // The kernel reports sizeof(struct nft_verdict) = 16 for verdict data; nft sends 0.
        data_len: if verdict_map { Some(16) } else { s.data_len },
        ..s.clone()
    }
}

fn sorted(mut v: Vec<Element>) -> Vec<Element> {
    v.sort_by(|a, b| (&a.key, a.flags).cmp(&(&b.key, b.flags)));
    v
}

#[test]
fn dump_round_trip() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    sock.send(&reference_batch(), None).expect("send");

    let table = sock
        .table(Family::Inet, TABLE)
        .expect("table")
        .expect("table exists");
    assert!(table.handle.is_some());
    assert_eq!(
        Table {
            handle: None,
            ..table.clone()
        },
        reference::table()
    );
    assert_eq!(
        udata::parse_comment(table.userdata.as_deref().unwrap_or_default()).as_deref(),
        Some("managed by portmap")
    );
    assert!(
        sock.tables()
            .expect("tables")
            .iter()
            .any(|t| t.name == TABLE && t.family == Family::Inet)
    );

    let mut chains: Vec<Chain> = sock
        .chains(Family::Inet, TABLE)
        .expect("chains")
        .into_iter()
        .map(|c| Chain { handle: None, ..c })
        .collect();
    chains.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want = reference::chains();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(chains, want);

    let rules = sock.rules(Family::Inet, TABLE).expect("rules");
    assert!(rules.iter().all(|r| r.handle.is_some()));
    let got: Vec<Rule> = rules.iter().map(normalize_rule).collect();
    let want: Vec<Rule> = reference::rules().iter().map(normalize_rule).collect();
    for w in &want {
        assert!(got.contains(w), "missing rule {w:#?}\nin {got:#?}");
    }
    assert_eq!(got.len(), want.len());

    let sets = sock.sets(Family::Inet, TABLE).expect("sets");
    for (want_set, want_elems) in reference::sets() {
        let got_set = sets
            .iter()
            .find(|s| s.name == want_set.name)
            .unwrap_or_else(|| panic!("set {} missing", want_set.name));
        assert!(got_set.handle.is_some());
        assert_eq!(normalize_set(got_set), normalize_set(&want_set));
        let got_elems = sock
            .elements(Family::Inet, TABLE, &want_set.name)
            .expect("elements");
        assert_eq!(sorted(got_elems), sorted(want_elems), "set {}", want_set.name);
    }

    // Interval sets decode back to the ranges (with nft's encoding, too).
    let ours = interval::from_elements(
        &sock
            .elements(Family::Inet, TABLE, "allow_mail_src")
            .expect("elements"),
    );
    let theirs_ns = TestNetns::new("nl-kernel");
    theirs_ns.nft_load(REFERENCE_SCRIPT);
    let theirs = interval::from_elements(
        &theirs_ns
            .socket()
            .elements(Family::Inet, TABLE, "allow_mail_src")
            .expect("elements"),
    );
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 2);
    assert_eq!(ours[1].end, vec![203, 0, 113, 255]);

    // What nft -f built decodes to the same rules and chains as what we built.
    let mut theirs_sock = theirs_ns.socket();
    let their_rules: Vec<Rule> = theirs_sock
        .rules(Family::Inet, TABLE)
        .expect("rules")
        .iter()
        .map(normalize_rule)
        .collect();
    assert_eq!(their_rules, got);
    let their_sets = theirs_sock.sets(Family::Inet, TABLE).expect("sets");
    for s in &their_sets {
        let ours = sets.iter().find(|o| o.name == s.name).expect("same sets");
        assert_eq!(
            Set {
                userdata: None,
                ..normalize_set(s)
            },
            Set {
                userdata: None,
                ..normalize_set(ours)
            }
        );
        assert_eq!(
            udata::parse_set_udata(s.userdata.as_deref().unwrap_or_default()),
            udata::parse_set_udata(ours.userdata.as_deref().unwrap_or_default()),
            "set {}",
            s.name
        );
    }
}

#[test]
fn anonymous_sets_are_listed() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    ns.nft_load("table inet portmap {\n chain c {\n tcp dport { 22, 80 } accept\n }\n}\n");
    let mut sock = ns.socket();
    let sets = sock.sets(Family::Inet, TABLE).expect("sets");
    let anon = sets
        .iter()
        .find(|s| s.flags & portmap_netlink::set_flags::ANONYMOUS != 0)
        .expect("anonymous set");
    assert!(anon.name.starts_with("__set"));
    let elems = sock.elements(Family::Inet, TABLE, &anon.name).expect("elements");
    assert_eq!(elems.len(), 2);
}

fn big_elements(count: usize) -> Vec<Element> {
    (0..count)
        .map(|i| {
            let proto = if i % 2 == 0 { TCP } else { UDP };
            let port = (i / 2 + 1) as u16;
            Element {
                key: proto_port(proto, port),
                key_end: None,
                data: Some(Data::Value(addr_port(
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    port,
                ))),
                flags: 0,
                userdata: Some(udata::comment(&format!("mapping {i}"))),
                timeout: None,
                expiration: None,
            }
        })
        .collect()
}

fn big_map_batch(elems: &[Element]) -> Batch {
    let mut b = Batch::new();
    b.add_table(&reference::table());
    let map = proto_port_map("dnat4", 1, 461, 8);
    b.add_set(&map);
    b.add_elements(Family::Inet, TABLE, "dnat4", 1, elems);
    b
}

fn big_map(count: usize) -> (Batch, Vec<Element>) {
    let elems = big_elements(count);
    (big_map_batch(&elems), elems)
}

fn load_and_dump(count: usize) {
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let elems = big_elements(count);
    let started = Instant::now();
    let batch = big_map_batch(&elems);
    let encoded = started.elapsed();
    sock.send(&batch, None).expect("send big batch");
    let sent = started.elapsed();
    let dump_started = Instant::now();
    let got = sock.elements(Family::Inet, TABLE, "dnat4").expect("dump");
    let dumped = dump_started.elapsed();
    eprintln!(
        "{count} elements: {} messages, {} bytes; encode {encoded:?}, encode+send {sent:?}, dump+decode {dumped:?}",
        batch.len(),
        batch.message_bytes()
    );
    // Generous bound (debug builds, shared CI machine): catches pathologies, not regressions.
    assert!(sent.as_secs() < 5, "sending {count} elements took {sent:?}");
    assert_eq!(got.len(), count);
    assert_eq!(sorted(got), sorted(elems));
}

#[test]
fn ten_thousand_elements_in_one_batch() {
    require_root!();
    load_and_dump(10_000);
}

#[test]
fn fifty_thousand_elements_in_one_batch() {
    require_root!();
    load_and_dump(50_000);
}

#[test]
fn failing_message_rejects_the_whole_batch() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let mut b = Batch::new();
    b.add_table(&reference::table());
    b.add_chain(&reference::chain("first", None, None));
    b.add_rule(&Rule {
        family: Family::Inet,
        table: TABLE.into(),
        chain: "no_such_chain".into(),
        exprs: vec![Expr::Counter { bytes: 0, packets: 0 }],
        userdata: None,
        handle: None,
    });
    b.add_chain(&reference::chain("second", None, None));
    let err = sock.send(&b, None).expect_err("must fail");
    match &err {
        Error::Kernel {
            index,
            total,
            what,
            errno,
            ..
        } => {
            assert_eq!(*index, 2);
            assert_eq!(*total, 4);
            assert_eq!(what, "add rule to chain inet portmap no_such_chain");
            assert_eq!(*errno, libc::ENOENT);
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.starts_with(
            "kernel rejected message 3 of 4 (add rule to chain inet portmap no_such_chain): No such file or directory (os error 2)"
        ),
        "{text}"
    );
    assert_eq!(sock.table(Family::Inet, TABLE).expect("read"), None);
    assert!(sock.tables().expect("tables").is_empty());
}

#[test]
fn duplicate_element_is_named() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let (batch, elems) = big_map(3000);
    sock.send(&batch, None).expect("send");
    let mut fresh = elems[2990..].to_vec();
    for e in &mut fresh {
        e.key[0] += 100; // other protocol numbers: new keys
    }
    fresh.insert(5, elems[2500].clone());
    let mut b = Batch::new();
    b.add_elements(Family::Inet, TABLE, "dnat4", 0, &fresh);
    let err = sock.send(&b, None).expect_err("duplicate");
    match &err {
        Error::Kernel {
            index,
            errno,
            element,
            ..
        } => {
            assert_eq!(*index, 0);
            assert_eq!(*errno, libc::EEXIST);
            assert_eq!(*element, Some(5), "{err}");
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }
    eprintln!("{err}");
    assert_eq!(
        sock.elements(Family::Inet, TABLE, "dnat4").expect("dump").len(),
        3000
    );
}

#[test]
fn stale_generation_is_refused() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let before = sock.generation().expect("generation");
    let mut b = Batch::new();
    b.add_table(&reference::table());
    sock.send(&b, Some(before))
        .expect("current generation is accepted");
    let after = sock.generation().expect("generation");
    assert_ne!(before, after);

    // Someone else changes the ruleset.
    ns.output("nft", &["add", "table", "ip", "other"]);
    let mut b = Batch::new();
    b.add_chain(&reference::chain("late", None, None));
    let err = sock.send(&b, Some(after)).expect_err("stale");
    assert!(matches!(err, Error::GenerationChanged), "{err:?}");
    assert!(sock.chains(Family::Inet, TABLE).expect("chains").is_empty());

    // An empty batch sends nothing, stale generation or not.
    sock.send(&Batch::new(), Some(after)).expect("empty batch");
}

#[test]
fn named_and_path_namespaces() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let name = format!("pmnl_named_{}", std::process::id());
    let mut sock = Socket::open(&Netns::Named(ns.name().to_owned())).expect("open");
    let mut b = Batch::new();
    b.add_table(&Table {
        family: Family::Ipv4,
        name: name.clone(),
        flags: 0,
        userdata: None,
        handle: None,
        owner: None,
    });
    sock.send(&b, None).expect("send");
    assert!(ns.output("nft", &["list", "tables"]).contains(&name));

    let mut by_path =
        Socket::open(&Netns::Path(format!("/run/netns/{}", ns.name()).into())).expect("open path");
    assert!(by_path.table(Family::Ipv4, &name).expect("read").is_some());

    // The host namespace does not have it (read only).
    let mut host = Socket::open(&Netns::Current).expect("open current");
    assert!(host.table(Family::Ipv4, &name).expect("read host").is_none());

    let missing = Socket::open(&Netns::Named(format!("{}-missing", ns.name())));
    assert!(matches!(missing, Err(Error::Netns { .. })), "{missing:?}");
    let bad = Socket::open(&Netns::Named("../etc".into()));
    assert!(matches!(bad, Err(Error::Netns { .. })), "{bad:?}");
}

#[test]
fn deltas_and_deletions() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    sock.send(&reference_batch(), None).expect("send");
    let generation = sock.generation().expect("generation");

    let rules = sock.rules(Family::Inet, TABLE).expect("rules");
    let dnat_rule = rules
        .iter()
        .find(|r| r.exprs.iter().any(|e| matches!(e, Expr::Nat { .. })))
        .expect("dnat rule");
    let handle = dnat_rule.handle.expect("handle");

    let old = sock.elements(Family::Inet, TABLE, "dnat4").expect("elements");
    let game = old
        .iter()
        .find(|e| e.key == proto_port(UDP, 6000))
        .expect("game")
        .clone();
    let new = Element {
        key: proto_port(TCP, 2222),
        key_end: None,
        data: Some(Data::Value(addr_port([192, 168, 1, 9], 22))),
        flags: 0,
        userdata: Some(udata::comment("ssh")),
        timeout: None,
        expiration: None,
    };
    let mut b = Batch::new();
    b.del_rule(Family::Inet, TABLE, "prerouting", handle);
    b.del_elements(Family::Inet, TABLE, "dnat4", std::slice::from_ref(&game));
    b.add_elements(Family::Inet, TABLE, "dnat4", 0, std::slice::from_ref(&new));
    // Interval set delta: drop 198.51.100.7, add 192.0.2.0/25.
    let old_ranges = interval::to_elements(&[interval::Interval {
        start: vec![198, 51, 100, 7],
        end: vec![198, 51, 100, 7],
        comment: None,
    }]);
    b.del_elements(Family::Inet, TABLE, "allow_mail_src", &old_ranges);
    b.add_elements(
        Family::Inet,
        TABLE,
        "allow_mail_src",
        0,
        &interval::to_elements(&[interval::Interval {
            start: vec![192, 0, 2, 0],
            end: vec![192, 0, 2, 127],
            comment: Some("doc".into()),
        }]),
    );
    sock.send(&b, Some(generation)).expect("delta");

    let listing = ns.output("nft", &["list", "table", "inet", TABLE]);
    assert!(!listing.contains("map @dnat4"), "{listing}");
    assert!(
        listing.contains("tcp . 2222 comment \"ssh\" : 192.168.1.9 . 22"),
        "{listing}"
    );
    assert!(!listing.contains("udp . 6000"), "{listing}");
    assert!(
        listing.contains("192.0.2.0/25 comment \"doc\", 203.0.113.0/24"),
        "{listing}"
    );

    let ranges = interval::from_elements(&sock.elements(Family::Inet, TABLE, "allow_mail_src").expect("e"));
    assert_eq!(ranges.len(), 2);
    assert_eq!(ranges[0].comment.as_deref(), Some("doc"));

    // Tear down piece by piece, then the table.
    let mut b = Batch::new();
    for r in sock.rules(Family::Inet, TABLE).expect("rules") {
        b.del_rule(Family::Inet, TABLE, &r.chain, r.handle.expect("handle"));
    }
    b.del_set(Family::Inet, TABLE, "guard4");
    b.del_chain(Family::Inet, TABLE, "allow_mail");
    sock.send(&b, None).expect("deletions");
    assert!(sock.rules(Family::Inet, TABLE).expect("rules").is_empty());
    let names: Vec<String> = sock
        .sets(Family::Inet, TABLE)
        .expect("sets")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!names.contains(&"guard4".to_string()), "{names:?}");
    let mut b = Batch::new();
    b.del_table(Family::Inet, TABLE);
    sock.send(&b, None).expect("delete table");
    assert!(sock.table(Family::Inet, TABLE).expect("read").is_none());
    assert!(sock.sets(Family::Inet, TABLE).expect("sets").is_empty());
    assert!(matches!(
        sock.elements(Family::Inet, TABLE, "dnat4"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn open_interval_and_element_flags_round_trip() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let set = Set {
        family: Family::Inet,
        table: TABLE.into(),
        name: "s".into(),
        flags: portmap_netlink::set_flags::INTERVAL,
        key_type: portmap_netlink::datatype::IPV4_ADDR,
        key_len: 4,
        data_type: None,
        data_len: None,
        id: 1,
        concat: Vec::new(),
        userdata: Some(udata::set_udata(Some(udata::BYTEORDER_BIG), None, None)),
        handle: None,
        obj_type: None,
    };
    let ranges = vec![
        interval::Interval {
            start: vec![0, 0, 0, 0],
            end: vec![0, 255, 255, 255],
            comment: None,
        },
        interval::Interval {
            start: vec![255, 255, 255, 0],
            end: vec![255, 255, 255, 255],
            comment: Some("top".into()),
        },
    ];
    let mut b = Batch::new();
    b.add_table(&reference::table());
    b.add_set(&set);
    b.add_elements(Family::Inet, TABLE, "s", 1, &interval::to_elements(&ranges));
    sock.send(&b, None).expect("send");
    let elems = sock.elements(Family::Inet, TABLE, "s").expect("dump");
    assert!(elems.iter().any(|e| e.flags & elem_flags::INTERVAL_END != 0));
    assert_eq!(interval::from_elements(&elems), ranges);
    let listing = ns.output("nft", &["list", "set", "inet", TABLE, "s"]);
    assert!(
        listing.contains("0.0.0.0/8, 255.255.255.0/24 comment \"top\""),
        "{listing}"
    );
}

#[test]
fn refused_expression_is_named() {
    require_root!();
    let ns = TestNetns::new("nl-kernel");
    let mut sock = ns.socket();
    let mut b = Batch::new();
    b.add_table(&reference::table());
    b.add_chain(&reference::chain("c", None, None));
    b.add_rule(&Rule {
        family: Family::Inet,
        table: TABLE.into(),
        chain: "c".into(),
        exprs: vec![
            Expr::Meta {
                key: portmap_netlink::MetaKey::IifName,
                dreg: Register::R1,
            },
            Expr::Lookup {
                sreg: Register::R1,
                dreg: None,
                set: "no_such_set".into(),
                set_id: 0,
                invert: false,
            },
        ],
        userdata: None,
        handle: None,
    });
    let err = sock.send(&b, None).expect_err("missing set");
    let text = err.to_string();
    eprintln!("{text}");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{text}");
    assert!(text.contains("message 3 of 3"), "{text}");
    assert!(text.contains("in expression 2 (lookup)"), "{text}");
}
