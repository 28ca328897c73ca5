//! Kernel tests of [`Conntrack`]: real TCP and UDP flows through a DNAT rule between two scratch
//! namespaces (a client and a router joined by a veth pair), entries made with `conntrack -I`,
//! and a table of thousands of entries. Every test makes its own namespaces and deletes them
//! (even on panic); they need root and fail without it; they never touch the host namespace.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use portmap_netlink::conntrack::{Conntrack, Flow, L3, status};
use portmap_testkit::{Netns as TestNetns, require_root, veth_pair};

use crate::NetlinkNetns;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// The router's DNAT: UDP 5060 goes through chain `sip` (to port 5070), UDP 5353 to 5354, TCP 8080
/// to 80 — all to the router's own address.
const ROUTER_RULES: &str = r"table inet t {
  chain sip {
    meta nfproto ipv4 meta l4proto udp dnat ip to 10.77.0.1:5070
    meta nfproto ipv6 meta l4proto udp dnat ip6 to [fd77::1]:5070
  }
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    udp dport 5060 jump sip
    meta nfproto ipv4 udp dport 5353 dnat ip to 10.77.0.1:5354
    meta nfproto ipv4 tcp dport 8080 dnat ip to 10.77.0.1:80
  }
}
";

/// A client namespace (10.77.0.2, `fd77::2`) and a router namespace (10.77.0.1, `fd77::1`) with
/// [`ROUTER_RULES`] loaded in the router.
struct Pair {
    client: TestNetns,
    router: TestNetns,
}

fn pair() -> Pair {
    let client = TestNetns::new("nl-ct-client");
    let router = TestNetns::new("nl-ct-router");
    veth_pair(&client, "c0", &router, "r0");
    client.ip(&["addr", "add", "10.77.0.2/24", "dev", "c0"]);
    client.ip(&["addr", "add", "fd77::2/64", "dev", "c0", "nodad"]);
    router.ip(&["addr", "add", "10.77.0.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "fd77::1/64", "dev", "r0", "nodad"]);
    router.nft_load(ROUTER_RULES);
    Pair { client, router }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn udp(ns: &TestNetns, local: &str) -> UdpSocket {
    let local = addr(local);
    let sock = ns.enter(|| UdpSocket::bind(local).expect("bind udp"));
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    sock
}

/// Receives one datagram; `None` if none arrives within `wait`.
fn recv(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 512];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

fn find<'a>(flows: &'a [Flow], proto: u8, src: &str, dport: u16) -> Option<&'a Flow> {
    let src: IpAddr = src.parse().expect("address");
    flows
        .iter()
        .find(|f| f.original.proto == proto && f.original.src == src && f.original.dst_port == Some(dport))
}

fn is_sip_v4(f: &Flow) -> bool {
    f.original.proto == UDP && f.original.dst_port == Some(5060)
}

/// `conntrack -L -f FAMILY` lines inside the router namespace.
fn conntrack_list(ns: &TestNetns, family: &str) -> Vec<String> {
    ns.output("conntrack", &["-L", "-f", family])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn dnat_flows_are_dumped_and_deleted_selectively() {
    require_root!();
    let Pair { client, router } = pair();
    // Servers on the router, behind the DNAT.
    let sip4 = udp(&router, "10.77.0.1:5070");
    let sip6 = udp(&router, "[fd77::1]:5070");
    let mdns = udp(&router, "10.77.0.1:5354");
    let web = router.enter(|| TcpListener::bind("10.77.0.1:80").expect("listen"));

    // Clients.
    let c_sip4 = udp(&client, "10.77.0.2:40000");
    let c_sip6 = udp(&client, "[fd77::2]:40000");
    let c_mdns = udp(&client, "10.77.0.2:40001");
    c_sip4.send_to(b"sip4", addr("10.77.0.1:5060")).expect("send");
    c_sip6.send_to(b"sip6", addr("[fd77::1]:5060")).expect("send");
    c_mdns.send_to(b"mdns", addr("10.77.0.1:5353")).expect("send");
    let mut conn =
        client.enter(|| TcpStream::connect(addr("10.77.0.1:8080")).expect("connect through the DNAT"));
    let (mut accepted, _) = web.accept().expect("accept");
    conn.write_all(b"hello").expect("write");
    let mut got = [0u8; 5];
    accepted.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"hello");
    assert_eq!(recv(&sip4, Duration::from_secs(2)).as_deref(), Some(&b"sip4"[..]));
    assert_eq!(recv(&sip6, Duration::from_secs(2)).as_deref(), Some(&b"sip6"[..]));
    assert_eq!(recv(&mdns, Duration::from_secs(2)).as_deref(), Some(&b"mdns"[..]));

    let mut ct = Conntrack::open(&router.netns()).expect("open conntrack");
    let flows = ct.dump(None).expect("dump");
    for f in &flows {
        eprintln!(
            "{} / {} status {:#x} id {:?}",
            f.original, f.reply, f.status, f.id
        );
    }

    let sip = find(&flows, UDP, "10.77.0.2", 5060).expect("the IPv4 SIP flow");
    assert_eq!(sip.original.to_string(), "udp 10.77.0.2:40000 -> 10.77.0.1:5060");
    assert_eq!(sip.reply.to_string(), "udp 10.77.0.1:5070 -> 10.77.0.2:40000");
    assert_ne!(sip.status & status::DST_NAT, 0, "{:#x}", sip.status);
    assert_eq!(sip.status & status::SRC_NAT, 0);
    assert_eq!(sip.zone, None);
    assert!(sip.id.is_some());
    assert_eq!(sip.l3(), L3::V4);

    let sip6_flow = find(&flows, UDP, "fd77::2", 5060).expect("the IPv6 SIP flow");
    assert_eq!(
        sip6_flow.reply.to_string(),
        "udp [fd77::1]:5070 -> [fd77::2]:40000"
    );
    assert_ne!(sip6_flow.status & status::DST_NAT, 0);

    let mdns_flow = find(&flows, UDP, "10.77.0.2", 5353).expect("the mDNS flow");
    assert_eq!(mdns_flow.reply.src_port, Some(5354));

    let tcp = find(&flows, TCP, "10.77.0.2", 8080).expect("the TCP flow");
    assert_eq!(tcp.reply.src, "10.77.0.1".parse::<IpAddr>().expect("addr"));
    assert_eq!(tcp.reply.src_port, Some(80));
    assert_eq!(tcp.reply.dst_port, tcp.original.src_port);
    assert_ne!(tcp.status & status::DST_NAT, 0);
    assert_ne!(tcp.status & status::SEEN_REPLY, 0);

    // A family filter.
    let v6 = ct.dump(Some(L3::V6)).expect("dump v6");
    assert!(v6.iter().all(|f| f.l3() == L3::V6));
    assert!(find(&v6, UDP, "fd77::2", 5060).is_some());
    assert!(find(&v6, UDP, "10.77.0.2", 5060).is_none());

    // Delete only IPv4 UDP to 5060.
    let deleted = ct.delete_where(Some(L3::V4), is_sip_v4).expect("delete_where");
    assert_eq!(deleted, 1);
    let after = ct.dump(None).expect("dump");
    assert!(find(&after, UDP, "10.77.0.2", 5060).is_none());
    assert!(
        find(&after, UDP, "fd77::2", 5060).is_some(),
        "the IPv6 flow stays"
    );
    assert!(find(&after, UDP, "10.77.0.2", 5353).is_some(), "other UDP stays");
    assert!(find(&after, TCP, "10.77.0.2", 8080).is_some(), "TCP stays");

    // conntrack(8) sees the same.
    let v4 = conntrack_list(&router, "ipv4");
    assert!(!v4.iter().any(|l| l.contains("dport=5060")), "{v4:#?}");
    assert!(
        v4.iter()
            .any(|l| l.starts_with("udp") && l.contains("dport=5353")),
        "{v4:#?}"
    );
    assert!(
        v4.iter()
            .any(|l| l.starts_with("tcp") && l.contains("dport=8080")),
        "{v4:#?}"
    );
    let v6_lines = conntrack_list(&router, "ipv6");
    assert!(
        v6_lines
            .iter()
            .any(|l| l.contains("src=fd77::2") && l.contains("dport=5060")),
        "{v6_lines:#?}"
    );

    // Deleting again: already gone.
    let gone = find(&flows, UDP, "10.77.0.2", 5060).expect("old flow").clone();
    assert!(!ct.delete(&gone).expect("delete again"));

    // The TCP connection itself is untouched and still works.
    conn.write_all(b"again").expect("write");
    accepted.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"again");

    // IPv6 next, by family.
    assert_eq!(
        ct.delete_where(Some(L3::V6), |f| f.original.proto == UDP)
            .expect("delete v6"),
        1
    );
    assert!(find(&ct.dump(None).expect("dump"), UDP, "fd77::2", 5060).is_none());
}

#[test]
fn a_deleted_udp_entry_lets_a_changed_dnat_rule_take_effect() {
    require_root!();
    let Pair { client, router } = pair();
    let old_server = udp(&router, "10.77.0.1:5070");
    let new_server = udp(&router, "10.77.0.1:5071");
    let phone = udp(&client, "10.77.0.2:40000");
    let to = addr("10.77.0.1:5060");

    phone.send_to(b"1", to).expect("send");
    assert_eq!(
        recv(&old_server, Duration::from_secs(2)).as_deref(),
        Some(&b"1"[..])
    );
    let mut ct = Conntrack::open(&router.netns()).expect("open");
    let first = find(&ct.dump(Some(L3::V4)).expect("dump"), UDP, "10.77.0.2", 5060)
        .expect("entry")
        .clone();
    assert_eq!(first.reply.src_port, Some(5070));

    // The mapping changes: 5060 now goes to 5071. The existing entry still sends it to 5070.
    router.output("nft", &["flush", "chain", "inet", "t", "sip"]);
    router.output(
        "nft",
        &["add rule inet t sip meta nfproto ipv4 meta l4proto udp dnat ip to 10.77.0.1:5071"],
    );
    phone.send_to(b"2", to).expect("send");
    assert_eq!(
        recv(&old_server, Duration::from_secs(2)).as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(recv(&new_server, Duration::from_millis(200)), None);

    // Delete the entry: the next datagram from the same source port is a new flow, NATed anew.
    assert_eq!(ct.delete_where(Some(L3::V4), is_sip_v4).expect("delete"), 1);
    phone.send_to(b"3", to).expect("send");
    assert_eq!(
        recv(&new_server, Duration::from_secs(2)).as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(recv(&old_server, Duration::from_millis(200)), None);

    let fresh = find(&ct.dump(Some(L3::V4)).expect("dump"), UDP, "10.77.0.2", 5060)
        .expect("a fresh entry")
        .clone();
    assert_eq!(fresh.original, first.original, "same original tuple");
    assert_eq!(fresh.reply.src_port, Some(5071), "NATed by the new rule");
    // The kernel's id hashes the entry's address and original tuple; the freed entry's memory is
    // usually reused at once, so the fresh entry often has the old id. Only report it.
    eprintln!("ids: first {:?}, fresh {:?}", first.id, fresh.id);
}

#[test]
fn zones_marks_icmp_and_ids() {
    require_root!();
    let ns = TestNetns::new("nl-conntrack");
    let insert = |extra: &[&str]| {
        let mut args = vec!["-I", "-s", "10.1.1.1", "-d", "10.1.1.2", "-t", "120"];
        args.extend_from_slice(extra);
        ns.output("conntrack", &args);
    };
    let udp_tuple = ["-p", "udp", "--sport", "1000", "--dport", "2000"];
    insert(&udp_tuple);
    insert(&[&udp_tuple[..], &["--zone", "7", "--mark", "42"]].concat());
    insert(&[
        "-p",
        "icmp",
        "--icmp-type",
        "8",
        "--icmp-code",
        "0",
        "--icmp-id",
        "55",
    ]);

    let mut ct = Conntrack::open(&ns.netns()).expect("open");
    let flows = ct.dump(None).expect("dump");
    assert_eq!(flows.len(), 3, "{flows:#?}");
    let zoned: Vec<&Flow> = flows.iter().filter(|f| f.zone == Some(7)).collect();
    assert_eq!(zoned.len(), 1, "{flows:#?}");
    assert_eq!(zoned[0].mark, Some(42));
    let plain = flows
        .iter()
        .find(|f| f.original.proto == UDP && f.zone.is_none())
        .expect("zone 0 entry");
    assert_eq!(plain.original, zoned[0].original, "same tuple in two zones");
    assert_eq!(plain.mark, Some(0));
    let icmp = flows.iter().find(|f| f.original.proto == ICMP).expect("icmp");
    assert_eq!(
        icmp.original.to_string(),
        "icmp 10.1.1.1 -> 10.1.1.2 type 8 code 0 id 55"
    );

    // A flow whose id is not the entry's: nothing is deleted.
    let mut wrong_id = zoned[0].clone();
    wrong_id.id = zoned[0].id.map(|id| id ^ 1);
    assert!(!ct.delete(&wrong_id).expect("delete wrong id"));
    assert_eq!(ct.dump(None).expect("dump").len(), 3);

    // Zone 7's entry goes; zone 0's identical tuple stays.
    assert!(ct.delete(zoned[0]).expect("delete zone 7"));
    let left = ct.dump(None).expect("dump");
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|f| f.zone.is_none()));
    assert!(
        ns.output("conntrack", &["-L", "--zone", "7"]).trim().is_empty(),
        "zone 7 is empty"
    );
    assert!(
        ns.output("conntrack", &["-L", "-p", "udp"])
            .contains("sport=1000")
    );

    // ICMP entries are found by id, type and code.
    assert_eq!(
        ct.delete_where(None, |f| f.original.proto == ICMP).expect("icmp"),
        1
    );
    assert_eq!(ct.dump(None).expect("dump").len(), 1);

    // A tuple mixing families is refused before it reaches the kernel.
    let mut mixed = plain.clone();
    mixed.original.dst = "2001:db8::1".parse().expect("addr");
    let err = ct.delete(&mixed).expect_err("mixed families");
    assert!(err.to_string().contains("both be IPv4"), "{err}");
}

#[test]
fn five_thousand_entries() {
    const COUNT: u16 = 5_000;
    require_root!();
    let ns = TestNetns::new("nl-conntrack");
    ns.ip(&["link", "set", "lo", "up"]);
    // Any rule using conntrack turns tracking on in the namespace.
    ns.nft_load(
        "table inet t {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n }\n}\n",
    );
    let started = Instant::now();
    ns.enter(|| {
        let sink = UdpSocket::bind("127.0.0.1:9999").expect("bind sink");
        for port in 20_000..20_000 + COUNT {
            let s = UdpSocket::bind(("127.0.0.1", port)).expect("bind source");
            s.send_to(b"x", "127.0.0.1:9999").expect("send");
        }
        drop(sink);
    });
    let created = started.elapsed();

    let mut ct = Conntrack::open(&ns.netns()).expect("open");
    let to_sink = |f: &Flow| f.original.proto == UDP && f.original.dst_port == Some(9999);
    let started = Instant::now();
    let flows = ct.dump(Some(L3::V4)).expect("dump");
    let dumped = started.elapsed();
    let mut ports: Vec<u16> = flows
        .iter()
        .filter(|f| to_sink(f))
        .filter_map(|f| f.original.src_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), usize::from(COUNT));
    assert_eq!(ports.first(), Some(&20_000));
    assert_eq!(ports.last(), Some(&(20_000 + COUNT - 1)));

    let started = Instant::now();
    let deleted = ct.delete_where(Some(L3::V4), to_sink).expect("delete_where");
    let removed = started.elapsed();
    assert_eq!(deleted, usize::from(COUNT));
    assert!(!ct.dump(None).expect("dump").iter().any(to_sink));
    eprintln!("{COUNT} entries: created in {created:?}, dumped in {dumped:?}, deleted in {removed:?}");
    assert!(
        dumped.as_secs() < 5 && removed.as_secs() < 10,
        "{dumped:?} {removed:?}"
    );
}

#[test]
fn missing_namespace_is_an_error() {
    require_root!();
    let ns = TestNetns::new("nl-conntrack");
    let err = Conntrack::open(&portmap_netlink::Netns::Named(format!("{}-missing", ns.name())))
        .expect_err("missing");
    assert!(matches!(err, portmap_netlink::Error::Netns { .. }), "{err:?}");
}
