//! Changes that take effect for flows already in flight: after an apply that retargets a mapping, a
//! UDP flow from a fixed source port follows the new target on its next datagram, while a TCP
//! connection of an untouched mapping carries on. `--keep-conntrack` leaves flows alone.
//!
//! Every test here is written `every_backend! { … }` and runs once per backend (nft,
//! iptables-legacy, iptables-nft).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use portmap_testkit::{CLIENT, Reply, Topology, WAN};

fn config(voip_target: &str) -> String {
    format!(
        "wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nhairpin: false\n\
         mappings:\n\
         \x20 - name: web\n    port: 8080\n    to: 192.168.1.66\n    to_port: 80\n\
         \x20 - name: voip\n    protocol: udp\n    port: 5060\n    to: {voip_target}\n"
    )
}

/// A UDP socket on the client with a fixed source port, like a phone or a game client.
fn fixed_port_client(t: &Topology) -> UdpSocket {
    let sock = t
        .client
        .enter(|| UdpSocket::bind(SocketAddrV4::new(CLIENT, 40_000)))
        .expect("bind 40000");
    sock.connect(SocketAddrV4::new(WAN, 5060)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    sock
}

/// Send one datagram and say which LAN server answered.
fn ask(sock: &UdpSocket) -> SocketAddr {
    sock.send(b"hello").expect("send");
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("an answer");
    Reply::parse(&String::from_utf8_lossy(&buf[..n]))
        .expect("identity reply")
        .server
}

/// A TCP echo server on the LAN that keeps its connections open.
fn echo_server(t: &Topology, addr: SocketAddrV4) {
    let listener = t
        .lan
        .enter(move || TcpListener::bind(addr))
        .expect("bind echo server");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writeln!(writer, "echo {line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn echo(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream, text: &str) -> String {
    writeln!(writer, "{text}").expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("read");
    line.trim_end().to_owned()
}

every_backend! {
fn a_live_udp_flow_follows_a_changed_target_and_tcp_of_others_survives(t) {
    let _old = t.udp_server("192.168.1.66:5060");
    let _new = t.udp_server("192.168.1.71:5060");
    echo_server(t, "192.168.1.66:80".parse().expect("addr"));
    t.apply(&config("192.168.1.66")).success();

    // A TCP connection of the untouched mapping, open across the apply.
    let stream = t
        .client
        .enter(|| {
            TcpStream::connect_timeout(
                &SocketAddr::V4(SocketAddrV4::new(WAN, 8080)),
                Duration::from_secs(2),
            )
        })
        .expect("connect to web");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    assert_eq!(echo(&mut reader, &mut writer, "before"), "echo before");

    let phone = fixed_port_client(t);
    assert_eq!(ask(&phone), "192.168.1.66:5060".parse().unwrap());
    assert_eq!(ask(&phone), "192.168.1.66:5060".parse().unwrap());

    let run = t.apply(&config("192.168.1.71"));
    run.success();
    assert!(run.stdout.contains("stale tracked connection"), "{run}");

    // The very next datagram from the same source port reaches the new target.
    assert_eq!(ask(&phone), "192.168.1.71:5060".parse().unwrap());
    // The untouched mapping's TCP connection is still the same, working connection.
    assert_eq!(echo(&mut reader, &mut writer, "after"), "echo after");
}
}

every_backend! {
fn keep_conntrack_leaves_live_flows_on_the_old_target(t) {
    let _old = t.udp_server("192.168.1.66:5060");
    let _new = t.udp_server("192.168.1.71:5060");
    t.apply(&config("192.168.1.66")).success();
    let phone = fixed_port_client(t);
    assert_eq!(ask(&phone), "192.168.1.66:5060".parse().unwrap());

    let path = t.write_config(&config("192.168.1.71"));
    t.portmap(&[
        "apply",
        "-c",
        portmap_testkit::topology::path_str(&path),
        "--auto-approve",
        "--keep-conntrack",
    ])
    .success();
    assert_eq!(
        ask(&phone),
        "192.168.1.66:5060".parse().unwrap(),
        "the tracked flow keeps its old translation"
    );
    // A new flow (another source port) meets the new rule.
    let fresh = portmap_testkit::traffic::udp_request(
        &t.client,
        CLIENT,
        SocketAddrV4::new(WAN, 5060),
        Duration::from_secs(2),
    );
    let fresh = Reply::parse(&fresh.expect("answer")).expect("identity");
    assert_eq!(fresh.server, "192.168.1.71:5060".parse().unwrap());
}
}

every_backend! {
fn destroy_ends_live_flows_too(t) {
    let old = t.udp_server("192.168.1.66:5060");
    t.apply(&config("192.168.1.66")).success();
    let phone = fixed_port_client(t);
    assert_eq!(ask(&phone), "192.168.1.66:5060".parse().unwrap());
    let seen = old.seen().len();

    let run = t.portmap(&["destroy", "--auto-approve"]);
    run.success();
    assert!(
        run.stdout
            .contains("1 tracked connection of its mappings removed"),
        "{run}"
    );
    // The next datagram is no longer translated: the inner host never sees it.
    phone
        .set_read_timeout(Some(portmap_testkit::traffic::BLOCKED_TIMEOUT))
        .expect("timeout");
    phone.send(b"hello").expect("send");
    let mut buf = [0u8; 64];
    assert!(
        phone.recv(&mut buf).is_err(),
        "nobody should answer after destroy"
    );
    assert_eq!(old.seen().len(), seen, "the old target must not get the datagram");
}
}

every_backend! {
/// An apply killed after its transaction landed but before it removed the stale tracked
/// connections (simulated by committing through the backend alone, as the killed process did):
/// the transaction recorded the pending cleanup, `status` and `plan` say so, and the next apply
/// finishes it — the live flow moves to the new target.
fn an_interrupted_conntrack_cleanup_is_finished_by_the_next_apply(t) {
    use portmap::Backend as _;
    let _old = t.udp_server("192.168.1.66:5060");
    let _new = t.udp_server("192.168.1.71:5060");
    t.apply(&config("192.168.1.66")).success();
    let phone = fixed_port_client(t);
    assert_eq!(ask(&phone), "192.168.1.66:5060".parse().unwrap());

    // The transaction of `apply`, and nothing after it.
    let wanted = portmap::load_str(&config("192.168.1.71"), "test").expect("config");
    let mut session = portmap::Session::open(
        portmap::BackendKind::from_name(t.backend()).expect("a backend name"),
        &portmap::Netns::Named(t.router.name().to_owned()),
        "portmap",
    )
    .expect("open");
    let plan = portmap::plan(&wanted, &session.observe().expect("observe"));
    session
        .backend()
        .commit(&plan, &plan.stale_flows())
        .expect("transaction");
    assert_eq!(
        ask(&phone),
        "192.168.1.66:5060".parse().unwrap(),
        "nobody removed the flow yet"
    );

    if !t.is_nft() {
        // The record is a comment-only rule in portmap's nat chain, written with the commit.
        let owned = t.owned().expect("portmap's rules");
        assert!(
            owned.contains("-A PORTMAP-STALE -m comment --comment \"voip udp/5060 192.168.1.66:5060\""),
            "{owned}"
        );
    }
    let status = t.portmap(&["status", "--json"]).success().json();
    let pending = status["pending_flows"].as_array().expect("pending_flows");
    assert_eq!(pending.len(), 1, "{status:#}");
    assert_eq!(pending[0]["mapping"], "voip");
    let plan = t.plan_text();
    plan.expect_code(2);
    assert!(plan.stdout.contains("an interrupted apply left behind"), "{plan}");

    let path = t.write_config(&config("192.168.1.71"));
    let run = t.portmap(&[
        "apply",
        "-c",
        portmap_testkit::topology::path_str(&path),
        "--auto-approve",
    ]);
    run.success();
    assert!(run.stdout.contains("1 stale tracked connection removed"), "{run}");
    assert_eq!(ask(&phone), "192.168.1.71:5060".parse().unwrap());
    let status = t.portmap(&["status", "--json"]).success().json();
    assert!(
        status
            .get("pending_flows")
            .is_none_or(|p| p.as_array().is_some_and(Vec::is_empty)),
        "{status:#}"
    );
    t.plan_text().expect_code(0);
}
}
