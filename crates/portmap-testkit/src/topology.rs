//! The three-namespace lab every end-to-end test builds for itself:
//!
//! ```text
//!  client ns                 router ns                         lan ns
//!  eth0 203.0.113.2/24 ── wan0 203.0.113.1/24
//!       203.0.113.3/24       lan0 192.168.1.1/24 ── eth0 192.168.1.66/24 (+ .25 .70 .71)
//!                            ip_forward=1                       default via 192.168.1.1
//! ```
//!
//! The veth pairs are created inside the router namespace with their peers moved straight into the
//! client and LAN namespaces, so no link ever exists in the host namespace. The client has no route to
//! the LAN: it can only reach LAN hosts through portmap's DNAT on 203.0.113.1 (replies are un-DNATed by
//! the router's conntrack). 203.0.113.3 is the "disallowed" source for allow-list tests.
//!
//! [`Topology::with_ipv6`] adds IPv6 on the same links (addresses added with `nodad`, so they are
//! usable at once; `net.ipv6.conf.all.forwarding=1` in the router only):
//!
//! ```text
//!  eth0 2001:db8:1::2/64 ── wan0 2001:db8:1::1/64, fe80::1
//!       2001:db8:1::3/64     lan0 2001:db8:2::1/64, fe80::1 ── eth0 2001:db8:2::66/64 (+ ::25 ::70 ::71)
//!                                                                  default via 2001:db8:2::1
//! ```
//!
//! The router's `fe80::1` addresses matter: it solicits a neighbour for a forwarded packet only
//! from a link-local address that has passed duplicate address detection, which the automatic ones
//! need a second or two for.
//!
//! The lab also owns a scratch directory for configuration files and runs the `portmap` binary it was
//! given with `--netns <router>`. Clients reach the router's WAN address of their own family.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::Run;
use crate::daemon::Daemon;
use crate::netns::Netns;
use crate::nft;
use crate::portmap::{Portmap, RunOptions, TempDir};
use crate::traffic::{BLOCKED_TIMEOUT, ConnError, REPLY_TIMEOUT, Reply, Server, tcp_request, udp_request};

/// The router's WAN address: where clients send traffic for mappings.
pub const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A second public address of the router, on `wan0` next to [`WAN`], once
/// [`Topology::add_wan_address`] put it there (for mappings with `listen`).
pub const WAN_SECOND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The internet client's main address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The internet client's second address, used as a source an allow-list does not admit.
pub const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
/// The router's LAN address (the LAN hosts' gateway).
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
/// The LAN hosts' addresses, all on `eth0` of the LAN namespace.
pub const LAN_HOSTS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 168, 1, 66),
    Ipv4Addr::new(192, 168, 1, 25),
    Ipv4Addr::new(192, 168, 1, 70),
    Ipv4Addr::new(192, 168, 1, 71),
];

/// The router's IPv6 WAN address (with [`Topology::with_ipv6`]).
pub const WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// A link-local address of the router's WAN interface, and of its LAN interface (with
/// [`Topology::with_ipv6`]).
pub const WAN6_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The internet client's main IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// The internet client's second IPv6 address (the source an allow-list does not admit).
pub const OTHER_CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);
/// The router's IPv6 LAN address (the LAN hosts' IPv6 gateway).
pub const ROUTER_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// The LAN hosts' IPv6 addresses, all on `eth0` of the LAN namespace.
pub const LAN_HOSTS6: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x66),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x25),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x70),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x71),
];

/// Name of the config file [`Topology::write_config`] writes.
pub const CONFIG_FILE: &str = "portmap.yaml";

/// Client, router and LAN namespaces wired together, plus a scratch directory. Dropping it removes
/// all three namespaces and the directory.
#[derive(Debug)]
pub struct Topology {
    /// The internet client (203.0.113.2 and .3).
    pub client: Netns,
    /// The router (wan0, lan0, forwarding on). portmap runs against this one.
    pub router: Netns,
    /// The LAN hosts (192.168.1.66, .25, .70, .71).
    pub lan: Netns,
    /// Scratch directory for configuration and plan files.
    pub dir: TempDir,
    portmap: Portmap,
    /// The `--backend` every `portmap` run of this lab passes.
    backend: &'static str,
}

impl Topology {
    /// Build the lab, to run `portmap` against; `tag` (a few letters naming the test) goes into the
    /// namespace names.
    #[track_caller]
    pub fn new(portmap: Portmap, tag: &str) -> Topology {
        let client = Netns::new(&format!("{tag}-c"));
        let router = Netns::new(&format!("{tag}-r"));
        let lan = Netns::new(&format!("{tag}-l"));
        router.ip_batch(&format!(
            "link add wan0 type veth peer name eth0 netns {client}\n\
             link add lan0 type veth peer name eth0 netns {lan}\n\
             addr add {WAN}/24 dev wan0\n\
             addr add {ROUTER_LAN}/24 dev lan0\n\
             link set wan0 up\n\
             link set lan0 up\n",
            client = client.name(),
            lan = lan.name(),
        ));
        router.sysctl("net.ipv4.ip_forward=1");
        client.ip_batch(&format!(
            "addr add {CLIENT}/24 dev eth0\n\
             addr add {OTHER_CLIENT}/24 dev eth0\n\
             link set eth0 up\n"
        ));
        let mut lan_cmds = String::new();
        for host in LAN_HOSTS {
            let _ = writeln!(lan_cmds, "addr add {host}/24 dev eth0");
        }
        let _ = writeln!(lan_cmds, "link set eth0 up\nroute add default via {ROUTER_LAN}");
        lan.ip_batch(&lan_cmds);
        let dir = TempDir::new(tag);
        Topology {
            client,
            router,
            lan,
            dir,
            portmap,
            backend: "nft",
        }
    }

    /// The same lab, with every `portmap` run passing `--backend backend` (`nft`,
    /// `iptables-legacy`, `iptables-nft`).
    #[must_use]
    pub fn with_backend(mut self, backend: &'static str) -> Topology {
        self.backend = backend;
        self
    }

    /// The backend this lab's `portmap` runs use.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Whether the lab runs the nft backend (whose table [`Topology::table`] lists).
    pub fn is_nft(&self) -> bool {
        self.backend == "nft"
    }

    /// The lab of [`Topology::new`] with IPv6 on every link as well (see the module docs).
    #[track_caller]
    pub fn with_ipv6(portmap: Portmap, tag: &str) -> Topology {
        let t = Topology::new(portmap, tag);
        t.router.ip_batch(&format!(
            "addr add {WAN6}/64 dev wan0 nodad\n\
             addr add {WAN6_LINK_LOCAL}/64 dev wan0 nodad\n\
             addr add {ROUTER_LAN6}/64 dev lan0 nodad\n\
             addr add {WAN6_LINK_LOCAL}/64 dev lan0 nodad\n"
        ));
        t.router.sysctl("net.ipv6.conf.all.forwarding=1");
        t.client.ip_batch(&format!(
            "addr add {CLIENT6}/64 dev eth0 nodad\n\
             addr add {OTHER_CLIENT6}/64 dev eth0 nodad\n"
        ));
        let mut lan_cmds = String::new();
        for host in LAN_HOSTS6 {
            let _ = writeln!(lan_cmds, "addr add {host}/64 dev eth0 nodad");
        }
        let _ = writeln!(lan_cmds, "route add default via {ROUTER_LAN6}");
        t.lan.ip_batch(&lan_cmds);
        t
    }

    /// Give the router's `wan0` its second public address, [`WAN_SECOND`].
    #[track_caller]
    pub fn add_wan_address(&self) {
        self.router
            .ip_batch(&format!("addr add {WAN_SECOND}/24 dev wan0\n"));
    }

    /// The router's WAN address of `from`'s family: where a client at `from` sends its traffic.
    pub fn wan_for(from: IpAddr) -> IpAddr {
        match from {
            IpAddr::V4(_) => IpAddr::V4(WAN),
            IpAddr::V6(_) => IpAddr::V6(WAN6),
        }
    }

    /// Give the client a route to the LAN through the router (only for the harness self-test: plain
    /// routing without any DNAT).
    #[track_caller]
    pub fn route_client_to_lan(&self) {
        self.client
            .ip(&["route", "add", "192.168.1.0/24", "via", &WAN.to_string()]);
    }

    /// A TCP identity server on a LAN address, e.g. `"192.168.1.66:80"` or
    /// `"[2001:db8:2::66]:80"`.
    #[track_caller]
    pub fn tcp_server(&self, addr: &str) -> Server {
        Server::tcp(&self.lan, parse_addr(addr))
    }

    /// A UDP identity server on a LAN address.
    #[track_caller]
    pub fn udp_server(&self, addr: &str) -> Server {
        Server::udp(&self.lan, parse_addr(addr))
    }

    /// TCP from the client (source `from`) to the router's WAN address (of `from`'s family) on
    /// `port`.
    pub fn tcp(&self, from: impl Into<IpAddr>, port: u16) -> Result<String, ConnError> {
        let from = from.into();
        tcp_request(
            &self.client,
            from,
            SocketAddr::new(Self::wan_for(from), port),
            REPLY_TIMEOUT,
        )
    }

    /// UDP from the client (source `from`) to the router's WAN address (of `from`'s family) on
    /// `port`.
    pub fn udp(&self, from: impl Into<IpAddr>, port: u16) -> Result<String, ConnError> {
        let from = from.into();
        udp_request(
            &self.client,
            from,
            SocketAddr::new(Self::wan_for(from), port),
            REPLY_TIMEOUT,
        )
    }

    /// Assert that TCP from `from` to WAN:`port` is answered by the LAN server `server`
    /// (e.g. `"192.168.1.66:80"`) and that the server saw the client's own address (no SNAT).
    #[track_caller]
    pub fn assert_tcp(&self, from: impl Into<IpAddr>, port: u16, server: &str) {
        let from = from.into();
        let got = self.tcp(from, port);
        self.check_reply("tcp", from, port, server, &got);
    }

    /// UDP variant of [`Topology::assert_tcp`].
    #[track_caller]
    pub fn assert_udp(&self, from: impl Into<IpAddr>, port: u16, server: &str) {
        let from = from.into();
        let got = self.udp(from, port);
        self.check_reply("udp", from, port, server, &got);
    }

    /// Assert that TCP from `from` to WAN:`port` gets no answer from anyone (refused or timed out).
    #[track_caller]
    pub fn assert_tcp_blocked(&self, from: impl Into<IpAddr>, port: u16) {
        let from = from.into();
        let to = SocketAddr::new(Self::wan_for(from), port);
        let got = tcp_request(&self.client, from, to, BLOCKED_TIMEOUT);
        self.check_blocked("tcp", from, port, &got);
    }

    /// UDP variant of [`Topology::assert_tcp_blocked`].
    #[track_caller]
    pub fn assert_udp_blocked(&self, from: impl Into<IpAddr>, port: u16) {
        let from = from.into();
        let to = SocketAddr::new(Self::wan_for(from), port);
        let got = udp_request(&self.client, from, to, BLOCKED_TIMEOUT);
        self.check_blocked("udp", from, port, &got);
    }

    #[track_caller]
    fn check_reply(
        &self,
        proto: &str,
        from: IpAddr,
        port: u16,
        server: &str,
        got: &Result<String, ConnError>,
    ) {
        let wan = SocketAddr::new(Self::wan_for(from), port);
        let want: SocketAddr = server
            .parse()
            .unwrap_or_else(|e| panic!("bad server address {server}: {e}"));
        let ok = match got {
            Ok(text) => Reply::parse(text).is_some_and(|r| r.server == want && r.peer.ip() == from),
            Err(_) => false,
        };
        assert!(
            ok,
            "{proto} {from} -> {wan}: expected an answer from {want} that saw {from} (no SNAT), \
             got {got:?}\n--- router ruleset ---\n{}",
            self.router_ruleset()
        );
    }

    #[track_caller]
    fn check_blocked(&self, proto: &str, from: IpAddr, port: u16, got: &Result<String, ConnError>) {
        let wan = SocketAddr::new(Self::wan_for(from), port);
        assert!(
            matches!(got, Err(ConnError::Refused | ConnError::Timeout)),
            "{proto} {from} -> {wan}: expected refused or timeout, got {got:?}\n\
             --- router ruleset ---\n{}",
            self.router_ruleset()
        );
    }

    /// Write `yaml` to the lab's config file (replacing it) and return its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        self.dir.write(CONFIG_FILE, yaml)
    }

    /// Run `portmap --netns <router> args…` (stdin `/dev/null`, no terminal).
    pub fn portmap(&self, args: &[&str]) -> Run {
        self.portmap_with(&RunOptions::default(), args)
    }

    /// Like [`Topology::portmap`] with options (stdin, working directory).
    pub fn portmap_with(&self, opts: &RunOptions<'_>, args: &[&str]) -> Run {
        let mut full = vec!["--netns", self.router.name(), "--backend", self.backend];
        full.extend_from_slice(args);
        self.portmap.run_with(opts, &full)
    }

    /// Start `portmap --netns <router> --backend B args…` inside the router namespace as a
    /// long-running process (e.g. `watch`) with the extra environment `env`; it is killed when the
    /// returned guard drops.
    #[track_caller]
    pub fn portmap_daemon(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut full = vec![
            "netns",
            "exec",
            self.router.name(),
            self.portmap.binary(),
            "--netns",
            self.router.name(),
            "--backend",
            self.backend,
        ];
        full.extend_from_slice(args);
        Daemon::start("ip", &full, env)
    }

    /// Write `yaml` as the config and run `apply -c <it> --auto-approve`.
    pub fn apply(&self, yaml: &str) -> Run {
        let path = self.write_config(yaml);
        self.portmap(&["apply", "-c", path_str(&path), "--auto-approve"])
    }

    /// `plan -c <config file> --json --detailed-exitcode` on the current config file.
    pub fn plan_json(&self) -> Run {
        let path = self.dir.path().join(CONFIG_FILE);
        self.portmap(&["plan", "-c", path_str(&path), "--json", "--detailed-exitcode"])
    }

    /// `plan -c <config file> --detailed-exitcode` (text) on the current config file.
    pub fn plan_text(&self) -> Run {
        let path = self.dir.path().join(CONFIG_FILE);
        self.portmap(&["plan", "-c", path_str(&path), "--detailed-exitcode"])
    }

    /// Normalised listing of `inet portmap` in the router, `None` when the table does not exist.
    pub fn table(&self) -> Option<String> {
        nft::table(&self.router, "inet portmap")
    }

    /// Normalised `nft list ruleset` of the router.
    pub fn router_ruleset(&self) -> String {
        nft::ruleset(&self.router)
    }
}

/// A path as `&str` (all test paths are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

#[track_caller]
fn parse_addr(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|e| panic!("bad socket address {addr}: {e}"))
}

/// Wait up to `limit` for `check` to become true, polling with a short back-off. For kernel state
/// that settles asynchronously; prefer a readiness signal where one exists.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
