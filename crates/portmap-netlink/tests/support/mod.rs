//! Test support: scratch network namespaces (deleted by a guard even on panic), running `nft`,
//! `ip` and other programs in them, running code on a thread inside them, veth pairs between
//! them, and the reference ruleset built both as objects (for `Batch`) and as an `nft -f` script.
//!
//! Never touches the host namespace's ruleset. Tests that need root fail (never pass silently)
//! when run without it.

#![allow(dead_code)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use portmap_netlink::{
    BaseChain, Chain, CmpOp, Data, Element, Expr, Family, Hook, MetaKey, NatType, Netns, PayloadBase, Policy,
    Register, Rule, Set, Socket, Table, Verdict, datatype, interval, set_flags, udata,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(euid == 0, "needs root (CAP_NET_ADMIN)");
}

/// A network namespace `pmnl-<pid>-<n>` that lives as long as this guard.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        require_root();
        let name = format!(
            "pmnl-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (needs root (CAP_NET_ADMIN)): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestNetns { name }
    }

    pub fn netns(&self) -> Netns {
        Netns::Named(self.name.clone())
    }

    pub fn socket(&self) -> Socket {
        Socket::open(&self.netns()).expect("open socket in test netns")
    }

    /// Runs `nft ARGS` inside the namespace and returns stdout; panics on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft -f -` with this script.
    pub fn nft_script(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft -f");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("wait nft");
        assert!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl TestNetns {
    /// Runs `program ARGS` inside the namespace and returns stdout; panics on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("run a program in the test namespace");
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> String {
        self.exec("ip", args)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let ns = std::fs::File::open(&path).expect("open the namespace file");
                    // SAFETY: an open namespace file; setns moves only this scoped thread.
                    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("the namespace thread panicked")
        })
    }
}

/// Connects `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`), both ends up, and brings
/// up `lo` in both.
pub fn veth_pair(a: &TestNetns, a_if: &str, b: &TestNetns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.ip(&["link", "set", ifname, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

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
        },
        Element {
            key: proto_port(UDP, 6000),
            key_end: None,
            data: Some(Data::Value(addr_port([192, 168, 1, 70], 7000))),
            flags: 0,
            userdata: Some(udata::comment("game")),
        },
    ];
    let guard4 = proto_port_map("guard4", 3, datatype::VERDICT, 0);
    let guard4_elems = vec![Element {
        key: proto_port(TCP, 25),
        key_end: None,
        data: Some(Data::Verdict(Verdict::Jump("allow_mail".into()))),
        flags: 0,
        userdata: Some(udata::comment("mail")),
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
pub fn reference_batch() -> portmap_netlink::Batch {
    let mut b = portmap_netlink::Batch::new();
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

/// `nft list` output with each `elements = { ... }` block sorted (the kernel's hash order differs
/// between namespaces).
pub fn normalize_listing(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(pos) = line.find("elements = {") {
            let mut block = line[pos + "elements = {".len()..].to_string();
            while !block.trim_end().ends_with('}') {
                match lines.next() {
                    Some(next) => {
                        block.push(' ');
                        block.push_str(next.trim());
                    }
                    None => break,
                }
            }
            let inner = block.trim_end().trim_end_matches('}');
            let mut items: Vec<&str> = inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            items.sort_unstable();
            out.push_str(&line[..pos]);
            out.push_str("elements = { ");
            out.push_str(&items.join(", "));
            out.push_str(" }\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
