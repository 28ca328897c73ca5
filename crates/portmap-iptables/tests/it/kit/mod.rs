//! The iptables backend's test kit, on top of the shared one (`portmap-testkit`: namespace guards
//! removed on drop also on panic, the command runner, real traffic): the client/router/LAN lab with
//! the addresses these tests use, and a small driver that does what `portmap::Session::apply` does
//! (observe → plan → commit → verify → clear flows) against an `IptablesBackend` — the CLI does not
//! offer the backend yet. Nothing here touches the host's namespace or its rules.

#![allow(dead_code, unused_imports)]

pub use portmap_testkit::{netns, traffic};

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portmap_core::{ApplyReport, Backend, Model, Observed, Plan, StaleFlows};
use portmap_iptables::{IptablesBackend, Variant};

pub use netns::Netns;
pub use traffic::{ConnError, Reply, Server};

/// The router's WAN address.
pub const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The client's main address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The client's second address (refused by allow-lists).
pub const OTHER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
/// The router's LAN address.
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
/// The router's IPv6 WAN address.
pub const WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// The client's second IPv6 address.
pub const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);

/// Time to wait for an answer that should come, and for one that should not.
pub const REPLY: Duration = Duration::from_secs(2);
/// Time to wait where the path should be closed.
pub const BLOCKED: Duration = Duration::from_millis(700);

/// Whether this process may make namespaces (see `portmap_testkit::has_root`).
pub fn has_root() -> bool {
    portmap_testkit::has_root()
}

/// First line of every namespace test.
macro_rules! require_root {
    () => {
        if !$crate::kit::has_root() {
            return;
        }
    };
}

/// Client, router and LAN namespaces (IPv4, and IPv6 with [`Lab::with_ipv6`]):
/// client eth0 203.0.113.2,.3 — router wan0 203.0.113.1, lan0 192.168.1.1 — LAN eth0 192.168.1.66,
/// .25, .70, .80 (default via the router).
#[derive(Debug)]
pub struct Lab {
    /// The internet client.
    pub client: Netns,
    /// The router.
    pub router: Netns,
    /// The LAN hosts.
    pub lan: Netns,
}

impl Lab {
    /// The IPv4 lab.
    #[track_caller]
    pub fn new(tag: &str) -> Lab {
        let client = Netns::new(&format!("{tag}-c"));
        let router = Netns::new(&format!("{tag}-r"));
        let lan = Netns::new(&format!("{tag}-l"));
        router.ip_batch(&format!(
            "link add wan0 type veth peer name eth0 netns {c}\n\
             link add lan0 type veth peer name eth0 netns {l}\n\
             addr add {WAN}/24 dev wan0\naddr add {ROUTER_LAN}/24 dev lan0\n\
             link set wan0 up\nlink set lan0 up\n",
            c = client.name(),
            l = lan.name()
        ));
        router.sysctl("net.ipv4.ip_forward=1");
        client.ip_batch(&format!(
            "addr add {CLIENT}/24 dev eth0\naddr add {OTHER}/24 dev eth0\nlink set eth0 up\n"
        ));
        let mut cmds = String::new();
        for h in [66, 25, 70, 80] {
            let _ = writeln!(cmds, "addr add 192.168.1.{h}/24 dev eth0");
        }
        let _ = writeln!(cmds, "link set eth0 up\nroute add default via {ROUTER_LAN}");
        lan.ip_batch(&cmds);
        Lab { client, router, lan }
    }

    /// The lab with IPv6 on every link as well (`2001:db8:1::/64` WAN, `2001:db8:2::/64` LAN).
    #[track_caller]
    pub fn with_ipv6(tag: &str) -> Lab {
        let lab = Lab::new(tag);
        lab.router.ip_batch(&format!(
            "addr add {WAN6}/64 dev wan0 nodad\naddr add fe80::1/64 dev wan0 nodad\n\
             addr add 2001:db8:2::1/64 dev lan0 nodad\naddr add fe80::1/64 dev lan0 nodad\n"
        ));
        lab.router.sysctl("net.ipv6.conf.all.forwarding=1");
        lab.client.ip_batch(&format!(
            "addr add {CLIENT6}/64 dev eth0 nodad\naddr add {OTHER6}/64 dev eth0 nodad\n"
        ));
        lab.lan.ip_batch(
            "addr add 2001:db8:2::66/64 dev eth0 nodad\naddr add 2001:db8:2::25/64 dev eth0 nodad\n\
             route add default via 2001:db8:2::1\n",
        );
        lab
    }

    /// The backend of `variant` in the router.
    #[track_caller]
    pub fn backend(&self, variant: Variant) -> IptablesBackend {
        IptablesBackend::open(
            variant,
            &portmap_core::Netns::Named(self.router.name().to_owned()),
            "PORTMAP",
        )
        .unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// A TCP identity server on a LAN address.
    #[track_caller]
    pub fn tcp_server(&self, addr: &str) -> Server {
        Server::tcp(&self.lan, parse(addr))
    }

    /// A UDP identity server on a LAN address.
    #[track_caller]
    pub fn udp_server(&self, addr: &str) -> Server {
        Server::udp(&self.lan, parse(addr))
    }

    /// TCP from the client at `from` to the router's WAN address (of `from`'s family).
    pub fn tcp(&self, from: impl Into<IpAddr>, port: u16) -> Result<Reply, ConnError> {
        let from = from.into();
        request(
            &self.client,
            from,
            SocketAddr::new(wan_for(from), port),
            true,
            REPLY,
        )
    }

    /// UDP from the client at `from` to the router's WAN address.
    pub fn udp(&self, from: impl Into<IpAddr>, port: u16) -> Result<Reply, ConnError> {
        let from = from.into();
        request(
            &self.client,
            from,
            SocketAddr::new(wan_for(from), port),
            false,
            REPLY,
        )
    }

    /// TCP that should not get through: the error it got (panics if it got a reply).
    #[track_caller]
    pub fn tcp_blocked(&self, from: impl Into<IpAddr>, port: u16) -> ConnError {
        let from = from.into();
        match request(
            &self.client,
            from,
            SocketAddr::new(wan_for(from), port),
            true,
            BLOCKED,
        ) {
            Ok(reply) => panic!("tcp from {from} to port {port} got through to {}", reply.server),
            Err(e) => e,
        }
    }

    /// `iptables-save` (or `ip6tables-save`) of the router in `variant`, without the dated comments.
    pub fn save(&self, variant: Variant, v6: bool) -> String {
        let tool = format!(
            "{}-{}-save",
            if v6 { "ip6tables" } else { "iptables" },
            if variant == Variant::Nft { "nft" } else { "legacy" }
        );
        let out = self.router.exec(&tool, &[]);
        assert!(out.ok(), "{out}");
        normalize(&out.stdout)
    }

    /// Feed `script` to `iptables-restore --noflush` of `variant` in the router.
    #[track_caller]
    pub fn restore(&self, variant: Variant, v6: bool, script: &str) {
        let tool = format!(
            "{}-{}-restore",
            if v6 { "ip6tables" } else { "iptables" },
            if variant == Variant::Nft { "nft" } else { "legacy" }
        );
        let out = self.router.exec_with_stdin(&tool, &["--noflush"], Some(script));
        assert!(out.ok(), "{tool} refused:\n{script}\n{out}");
    }
}

/// Save output without comment lines and with counters zeroed.
pub fn normalize(save: &str) -> String {
    let mut out = String::new();
    for line in save.lines().filter(|l| !l.starts_with('#')) {
        let line = match line.rfind(" [") {
            Some(at) if line.starts_with(':') => format!("{} [0:0]", &line[..at]),
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn wan_for(from: IpAddr) -> IpAddr {
    if from.is_ipv4() {
        IpAddr::V4(WAN)
    } else {
        IpAddr::V6(WAN6)
    }
}

fn parse(addr: &str) -> SocketAddr {
    addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// A request from `from` in `ns` to `to`; the reply parsed.
pub fn request(
    ns: &Netns,
    from: IpAddr,
    to: SocketAddr,
    tcp: bool,
    timeout: Duration,
) -> Result<Reply, ConnError> {
    let text = if tcp {
        traffic::tcp_request(ns, from, to, timeout)?
    } else {
        traffic::udp_request(ns, from, to, timeout)?
    };
    Reply::parse(&text).ok_or_else(|| ConnError::Other(format!("unexpected reply {text:?}")))
}

/// A model from the YAML of a configuration's mappings and settings.
#[track_caller]
pub fn model(yaml: &str) -> Model {
    portmap_core::load_str(yaml, "test").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The lab's usual configuration around `mappings` (YAML list items).
pub fn config(mappings: &str) -> String {
    format!("wan: {{ interfaces: [wan0] }}\nlan: {{ interfaces: [lan0] }}\nmappings:\n{mappings}")
}

/// The plan for `model` now.
#[track_caller]
pub fn plan(b: &mut IptablesBackend, model: &Model) -> Plan {
    let observed = observe(b);
    portmap_core::plan(model, &observed)
}

/// Observe, panicking on error.
#[track_caller]
pub fn observe(b: &mut IptablesBackend) -> Observed {
    b.observe().unwrap_or_else(|e| panic!("observe: {e}"))
}

/// What `portmap::Session::apply` does: commit the plan with its stale flows recorded, require an
/// empty plan after, clear the flows, forget the record.
#[track_caller]
pub fn apply_plan(b: &mut IptablesBackend, plan: &Plan) -> ApplyReport {
    let stale = plan.stale_flows();
    let mut report = b.commit(plan, &stale).unwrap_or_else(|e| panic!("commit: {e}"));
    let after = portmap_core::plan(&plan.desired, &observe(b));
    assert!(!after.changes_kernel(), "apply did not converge:\n{after}");
    let all: Vec<StaleFlows> = plan.pending_flows.iter().chain(&stale).cloned().collect();
    report.flows_cleared = b.clear_flows(&all).unwrap_or_else(|e| panic!("clear: {e}"));
    if !all.is_empty() {
        b.forget_flows().unwrap_or_else(|e| panic!("forget: {e}"));
    }
    report
}

/// Observe, plan and apply `model`; returns the plan carried out.
#[track_caller]
pub fn converge(b: &mut IptablesBackend, model: &Model) -> (Plan, ApplyReport) {
    let plan = plan(b, model);
    if plan.is_empty() {
        return (plan, ApplyReport::default());
    }
    let report = apply_plan(b, &plan);
    (plan, report)
}
