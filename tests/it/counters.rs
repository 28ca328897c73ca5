//! Per-mapping counters, limits, logging and metrics, with real connections through the DNAT of
//! every backend (`every_backend!`): what `status --json` and `portmap metrics` report must be what
//! the connections made, a change to another mapping must leave a mapping's counters as they were,
//! a `limit` must refuse new connections over its rate while an established one keeps flowing, and
//! `log: true` must give one event per connection naming source, mapping and target.
//!
//! Each test builds its own client / router / LAN namespaces (`Topology`) and removes them; the
//! metrics server listens on the router namespace's loopback only. Nothing touches the host's
//! network namespace. (`portmap apply` records its outcome under `/run/portmap`, one small file
//! per namespace inode, backend and table.)

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portmap_testkit::{CLIENT, OTHER_CLIENT, Topology, WAN, config, status_mapping};
use serde_json::Value;

use crate::PORTMAP;

const WEB: &str = "
  - name: web
    port: 8080
    to: 192.168.1.66
    to_port: 80
";

const DNS: &str = "
  - name: dns
    protocol: udp
    port: 5353
    to: 192.168.1.70
    to_port: 53
";

fn status(t: &Topology) -> Value {
    let out = t.portmap(&["status", "--json"]);
    assert!(out.ok(), "status failed\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status is not JSON: {e}\n{out}"))
}

/// `(connections, packets, bytes, active_flows)` of one mapping, as `status --json` says.
fn counted(t: &Topology, name: &str) -> (u64, u64, u64, u64) {
    let json = status(t);
    let mapping = status_mapping(&json, name);
    let counters = &mapping["counters"];
    let number = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{name}: not a number: {mapping:#}"))
    };
    (
        number(&counters["connections"]),
        number(&counters["packets"]),
        number(&counters["bytes"]),
        number(&mapping["active_flows"]),
    )
}

/// A TCP server on a LAN address that echoes what it reads until the peer closes: a connection
/// that stays established for as long as the test wants.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn new(t: &Topology, addr: &str) -> Echo {
        let addr: SocketAddr = addr.parse().expect("address");
        let listener = t.lan.enter(|| TcpListener::bind(addr)).expect("bind echo server");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            *accepted.lock().expect("lock") += 1;
                            let stop = Arc::clone(&stop);
                            std::thread::spawn(move || {
                                let _ = conn.set_nonblocking(false);
                                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                                let mut buf = [0u8; 512];
                                while !stop.load(Ordering::SeqCst) {
                                    match conn.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => {
                                            if conn.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                        Err(_) => break,
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Echo {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().expect("lock")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.addr;
    }
}

/// A TCP connection from the client namespace to the router's WAN address on `port`.
fn connect(t: &Topology, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let to = SocketAddr::new(IpAddr::V4(WAN), port);
    t.client.enter(|| TcpStream::connect_timeout(&to, timeout))
}

/// Send `text` on an established echo connection and read it back.
fn echo(stream: &mut TcpStream, text: &str) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(text.as_bytes()).is_err() {
        return false;
    }
    let mut buf = vec![0u8; text.len()];
    stream.read_exact(&mut buf).is_ok() && buf == text.as_bytes()
}

every_backend! {
/// K connections through `web` count as K connections, at least their replies' bytes, and K
/// tracked flows; UDP flows count as live flows of `dns`; changing, adding and removing other
/// mappings leaves `web`'s counters exactly as they were.
fn counters_count_what_the_connections_did(t) {
    const K: u64 = 5;
    let _web = t.tcp_server("192.168.1.66:80");
    let _dns = t.udp_server("192.168.1.70:53");
    let _api = t.tcp_server("192.168.1.66:81");
    t.apply(&config(&format!("{WEB}{DNS}"))).success();
    assert_eq!(counted(t, "web"), (0, 0, 0, 0));

    let mut reply_bytes = 0;
    for _ in 0..K {
        let reply = t.tcp(CLIENT, 8080).expect("web answers");
        reply_bytes += reply.len() as u64;
    }
    for _ in 0..3 {
        t.udp(CLIENT, 5353).expect("dns answers");
    }
    let (connections, packets, bytes, flows) = counted(t, "web");
    assert_eq!(connections, K, "one connection per TCP connection made");
    // Each connection: the handshake, the reply and the close, both directions.
    assert!(packets >= 5 * K, "packets {packets} for {K} connections");
    assert!(bytes >= reply_bytes + 40 * packets, "bytes {bytes}: IP headers and the {reply_bytes} reply bytes");
    assert_eq!(flows, K, "the closed connections are still tracked (TIME_WAIT)");
    let (dns_connections, dns_packets, _, dns_flows) = counted(t, "dns");
    assert_eq!((dns_connections, dns_flows), (3, 3), "three UDP flows from three source ports");
    assert_eq!(dns_packets, 6, "a request and a reply each");

    let before = counted(t, "web");
    // Another mapping changes target, one is added, then one is removed: web is not touched.
    t.apply(&config(&format!("{WEB}{}", DNS.replace("192.168.1.70", "192.168.1.71")))).success();
    assert_eq!(counted(t, "web"), before);
    t.apply(&config(&format!(
        "{WEB}{DNS}
  - name: api
    port: 8081
    to: 192.168.1.66
    to_port: 81
"
    )))
    .success();
    assert_eq!(counted(t, "web"), before);
    t.apply(&config(WEB)).success();
    assert_eq!(counted(t, "web"), before);
    // Its own counters go on from there.
    t.tcp(CLIENT, 8080).expect("web answers");
    assert_eq!(counted(t, "web").0, K + 1);
    // A change of web's own target keeps its counters too.
    let _web2 = t.tcp_server("192.168.1.71:80");
    t.apply(&config(&WEB.replace("192.168.1.66", "192.168.1.71"))).success();
    assert_eq!(counted(t, "web").0, K + 1);
    t.assert_tcp(CLIENT, 8080, "192.168.1.71:80");
    assert_eq!(counted(t, "web").0, K + 2);
}
}

every_backend! {
/// `limit: "5/second burst 5"`: of 40 connection attempts made at once, about the burst (plus
/// what the rate refills meanwhile) get through and the rest are dropped, while a connection
/// established before keeps flowing; a second later new connections pass again.
fn a_limit_caps_new_connections_but_not_established_ones(t) {
    let server = Echo::new(t, "192.168.1.66:80");
    t.apply(&config(&format!("{WEB}    limit: \"5/second burst 5\"\n"))).success();
    let status = status(t);
    assert_eq!(status_mapping(&status, "web")["limit"], "5/second burst 5");

    let mut long = connect(t, 8080, Duration::from_secs(2)).expect("the first connection passes");
    assert!(echo(&mut long, "before"));
    // Let the bucket fill again before the burst of attempts.
    std::thread::sleep(Duration::from_millis(1200));

    let started = Instant::now();
    let results: Vec<bool> = t.client.enter(|| {
        std::thread::scope(|s| {
            let to = SocketAddr::new(IpAddr::V4(WAN), 8080);
            let attempts: Vec<_> = (0..40)
                .map(|_| s.spawn(move || TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok()))
                .collect();
            attempts.into_iter().map(|a| a.join().unwrap_or(false)).collect()
        })
    });
    let elapsed = started.elapsed().as_secs_f64();
    let passed = results.iter().filter(|ok| **ok).count();
    // burst + rate × elapsed, with room for the machine being slow.
    let refilled = usize::try_from((5.0 * elapsed).ceil() as i64).unwrap_or(0);
    let most = 5 + refilled + 2;
    assert!(
        (3..=most).contains(&passed),
        "{passed} of 40 attempts passed in {elapsed:.2} s (expected about 5 + 5/s × {elapsed:.2} s)"
    );
    assert!(40 - passed >= 25, "{} were refused", 40 - passed);
    // The established connection was never limited.
    assert!(echo(&mut long, "during"), "the established connection stopped flowing");
    for i in 0..20 {
        assert!(echo(&mut long, &format!("packet {i}")), "established connection, packet {i}");
    }
    // Refilled: a new connection passes again.
    std::thread::sleep(Duration::from_millis(1200));
    let again = connect(t, 8080, Duration::from_secs(2));
    assert!(again.is_ok(), "a connection a second later is refused: {again:?}");
    // The counter counts the connections that were forwarded, not the ones dropped.
    let connections = counted(t, "web").0;
    assert_eq!(connections as usize, 1 + passed + 1);
    assert_eq!(server.accepted(), 1 + passed + 1);

    // The limit changes in place, and goes again.
    t.apply(&config(&format!("{WEB}    limit: \"100/second burst 50\"\n"))).success();
    assert_eq!(status_mapping(&status_of(t), "web")["limit"], "100/second burst 50");
    assert!(echo(&mut long, "after the change"));
    t.apply(&config(WEB)).success();
    assert_eq!(status_mapping(&status_of(t), "web")["limit"], Value::Null);
}
}

fn status_of(t: &Topology) -> Value {
    status(t)
}

every_backend! {
/// `log: true`: a connection gives one event that names its source, the mapping and the target;
/// a mapping without `log` gives none.
fn log_gives_one_event_per_connection(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let _api = t.tcp_server("192.168.1.66:81");
    let yaml = format!(
        "log_group: 31\n{}",
        config(&format!(
            "{WEB}    log: true
  - name: api
    port: 8081
    to: 192.168.1.66
    to_port: 81
"
        ))
    );
    t.apply(&yaml).success();
    let status = status(t);
    assert_eq!(status_mapping(&status, "web")["log_group"], 31);

    let netns = portmap::Netns::Named(t.router.name().to_owned());
    let mut log = portmap::connlog::ConnectionLog::open(&netns, 31).expect("bind nflog group 31");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let event = log
        .next_event(Some(Duration::from_secs(3)))
        .expect("read the log")
        .expect("an event for the connection");
    assert_eq!(event.mapping, "web");
    assert_eq!(event.protocol, 6);
    assert_eq!(event.source.ip(), IpAddr::V4(CLIENT));
    assert_eq!(event.target, "192.168.1.66:80".parse::<SocketAddr>().expect("address"));
    if let Some(public) = event.public {
        assert_eq!(public, SocketAddr::new(IpAddr::V4(WAN), 8080));
    }
    // One connection, one event (not one per packet); none for api.
    t.assert_tcp(OTHER_CLIENT, 8081, "192.168.1.66:81");
    let more = log.next_event(Some(Duration::from_millis(500))).expect("read the log");
    assert_eq!(more, None, "a second event came: {more:?}");
    t.assert_tcp(OTHER_CLIENT, 8080, "192.168.1.66:80");
    let second = log
        .next_event(Some(Duration::from_secs(3)))
        .expect("read the log")
        .expect("an event for the second connection");
    assert_eq!(second.source.ip(), IpAddr::V4(OTHER_CLIENT));
    assert_eq!(second.mapping, "web");
    drop(log);

    // `portmap log` prints the same, one line per connection.
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", t.router.name(), PORTMAP.binary()])
        .args(["--netns", t.router.name(), "log", "--group", "31", "--count", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start portmap log");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut said = [0u8; 16];
    let _ = stderr.read(&mut said);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().expect("wait").is_none() {
        let _ = child.kill();
        panic!("portmap log --count 1 did not end after a connection");
    }
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    let line: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(line["mapping"], "web");
    assert_eq!(line["target"], "192.168.1.66:80");
    assert!(line["source"].as_str().is_some_and(|s| s.starts_with("203.0.113.2:")), "{line}");
}
}

/// The metrics of `text`, parsed as Prometheus text: (name, labels, value).
fn parse_metrics(text: &str) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected value {other:?}"),
            };
            let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (s.metric, labels, value)
        })
        .collect()
}

/// A metric whose value is a whole number.
fn count(
    samples: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    mapping: Option<&str>,
) -> u64 {
    let v = metric(samples, name, mapping);
    assert!(
        v.fract().abs() < f64::EPSILON,
        "{name} is {v}, not a whole number"
    );
    u64::try_from(v as i128).unwrap_or_else(|_| panic!("{name} is {v}"))
}

fn metric(
    samples: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    mapping: Option<&str>,
) -> f64 {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name && mapping.is_none_or(|m| labels.get("name").is_some_and(|l| l == m))
        })
        .map_or_else(
            || panic!("no metric {name} for {mapping:?} in {samples:?}"),
            |(_, _, v)| *v,
        )
}

every_backend! {
/// `portmap metrics` and the library's HTTP server give Prometheus text whose counters are the
/// connections made, with table health, drift against the configuration and the last apply.
fn metrics_are_prometheus_text_of_what_happened(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&config(WEB));
    t.apply(&config(WEB)).success();
    for _ in 0..4 {
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    }
    let out = t.portmap(&["metrics", "-c", portmap_testkit::topology::path_str(&path)]);
    assert!(out.ok(), "{out}");
    let samples = parse_metrics(&out.stdout);
    assert_eq!(count(&samples, "portmap_mapping_connections_total", Some("web")), 4);
    assert!(count(&samples, "portmap_mapping_packets_total", Some("web")) >= 20);
    assert!(count(&samples, "portmap_mapping_bytes_total", Some("web")) > 0);
    assert_eq!(count(&samples, "portmap_mapping_active_flows", Some("web")), 4);
    assert_eq!(count(&samples, "portmap_table_up", None), 1);
    assert_eq!(count(&samples, "portmap_drift", None), 0);
    assert_eq!(count(&samples, "portmap_last_apply_success", None), 1);
    let when = metric(&samples, "portmap_last_apply_timestamp_seconds", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - when).abs() < 600.0, "last apply at {when}, now {now}");
    let labels = samples
        .iter()
        .find(|(n, l, _)| n == "portmap_mapping_connections_total" && l["name"] == "web")
        .map(|(_, l, _)| l.clone())
        .expect("web");
    assert_eq!(labels["protocol"], "tcp");
    assert_eq!(labels["port"], "8080");

    // Drift: the configuration moves on, the kernel has not.
    let drifted = t.write_config(&config(&WEB.replace("8080", "8082")));
    let out = t.portmap(&["metrics", "-c", portmap_testkit::topology::path_str(&drifted)]);
    assert_eq!(count(&parse_metrics(&out.stdout), "portmap_drift", None), 1);

    // Over HTTP, from the router namespace's loopback.
    let gatherer = portmap::metrics::Gatherer::new(
        portmap::BackendKind::from_name(t.backend()).expect("backend"),
        portmap::Netns::Named(t.router.name().to_owned()),
        "portmap",
    );
    let server = t
        .router
        .enter(|| portmap::metrics::serve("127.0.0.1:0", move || gatherer.gather()))
        .expect("serve metrics");
    let addr = server.addr();
    let get = |path: &str| -> String {
        t.router.enter(|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
            let mut text = String::new();
            s.read_to_string(&mut text).expect("response");
            text
        })
    };
    let response = get("/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(count(&parse_metrics(body), "portmap_mapping_connections_total", Some("web")), 4);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let body = get("/metrics");
    let body = body.split_once("\r\n\r\n").expect("HTTP response").1;
    assert_eq!(count(&parse_metrics(body), "portmap_mapping_connections_total", Some("web")), 5);
    assert!(get("/other").contains(" 404 "));
    server.stop();
    // The server is gone (tiny_http closes its listening socket from its own thread, just after).
    let gone = portmap_testkit::topology::eventually(Duration::from_secs(3), || {
        t.router
            .enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)))
            .is_err()
    });
    assert!(gone, "the server still accepts connections after stop");
}
}

every_backend! {
/// `portmap watch --metrics`: the watch serves the table's metrics and its own over HTTP (in the
/// namespace it runs in: here the router's, whose loopback the test reaches), and prints one line
/// per connection of a `log: true` mapping; its applies are recorded as `portmap apply`'s are.
fn the_watch_serves_metrics_and_prints_logged_connections(t) {
    let _web = t.tcp_server("192.168.1.66:80");
    let path = t.write_config(&format!("log_group: 32\n{}", config(&format!("{WEB}    log: true\n"))));
    let d = t.portmap_daemon(
        &[
            "watch",
            "-c",
            portmap_testkit::topology::path_str(&path),
            "--interval",
            "0.5",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let line = d.wait_for("serving metrics on http://", Duration::from_secs(20));
    d.wait_for("applied: ", Duration::from_secs(20));
    let addr: SocketAddr = line
        .text
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {:?}", line.text));
    for _ in 0..3 {
        t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    }
    // One line per connection, naming the mapping, the source and the target.
    d.wait_for_nth(3, "connection: ", Duration::from_secs(5));
    let lines: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains("connection: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "{}", d.log());
    for l in &lines {
        assert!(
            l.contains("web") && l.contains(&CLIENT.to_string()) && l.contains("192.168.1.66:80"),
            "{l}"
        );
    }
    let body = t.router.enter(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        text
    });
    let body = body.split_once("\r\n\r\n").expect("HTTP response").1;
    let samples = parse_metrics(body);
    assert_eq!(count(&samples, "portmap_mapping_connections_total", Some("web")), 3, "{body}");
    assert_eq!(count(&samples, "portmap_watch_ready", None), 1, "{body}");
    assert_eq!(count(&samples, "portmap_watch_repairs_total", None), 0, "{body}");
    assert_eq!(count(&samples, "portmap_last_apply_success", None), 1, "{body}");
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), 0, "{}", d.log());
}
}
