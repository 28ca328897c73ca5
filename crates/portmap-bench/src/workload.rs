//! The benchmark workload: a deterministic configuration of N mappings shaped like a hosting
//! gateway's, as issue 11 fixes it: a third each `tcp`, `udp` and `both`, 4% with a two-prefix
//! `allow_from`, hairpin on; the same forwards as N linear DNAT rules for the reference dataplane,
//! and the one-mapping change. (Offset ranges cost the same one element per port as single ports
//! and are covered by the tests, not here.)

use std::fmt::Write as _;

/// External port of the first mapping.
const FIRST_PORT: u32 = 1024;

/// One generated mapping.
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    /// Index (its name is `m<index>`).
    pub index: usize,
    /// First external port.
    pub port: u16,
    /// Ports in the range (1 for a single port).
    pub len: u16,
    /// `tcp`, `udp` or `both`.
    pub protocol: &'static str,
    /// Whether it has an allow-list.
    pub allow: bool,
}

/// The mappings of a workload of `n`; the last one is always a plain TCP mapping (the dataplane
/// target) so "the last-added mapping" is the hardest case for a linear ruleset.
pub fn mappings(n: usize) -> Vec<Generated> {
    let mut out = Vec::with_capacity(n);
    let mut port = FIRST_PORT;
    for index in 0..n {
        let last = index + 1 == n;
        let (protocol, len) = if last {
            ("tcp", 1)
        } else {
            match index % 3 {
                0 => ("tcp", 1),
                1 => ("udp", 1),
                _ => ("both", 1),
            }
        };
        let allow = !last && index % 25 == 7;
        out.push(Generated {
            index,
            port: u16::try_from(port).expect("workload fits the port space"),
            len,
            protocol,
            allow,
        });
        port += u32::from(len);
    }
    out
}

/// Inner host of mapping `i` (spread over 192.168.0.0/16, the target of the last one is the LAN host).
fn target(i: usize, n: usize) -> String {
    if i + 1 == n {
        "192.168.1.66".to_owned()
    } else {
        format!("192.168.{}.{}", 2 + (i / 250) % 250, 2 + i % 250)
    }
}

/// The YAML configuration for `n` mappings; `retarget` moves one mapping's target (the change).
pub fn config(n: usize, retarget: Option<usize>) -> String {
    let mut y = String::with_capacity(n * 90 + 200);
    y.push_str("wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nhairpin: true\nmappings:\n");
    for m in mappings(n) {
        let _ = writeln!(y, "  - name: m{}", m.index);
        if m.protocol != "tcp" {
            let _ = writeln!(y, "    protocol: {}", m.protocol);
        }
        let to = if retarget == Some(m.index) {
            "192.168.250.250".to_owned()
        } else {
            target(m.index, n)
        };
        if m.len == 1 {
            let _ = writeln!(y, "    port: {}\n    to: {to}", m.port);
            if m.index + 1 == n {
                y.push_str("    to_port: 80\n");
            }
        } else {
            let end = m.port + m.len - 1;
            let _ = writeln!(
                y,
                "    port: \"{}-{end}\"\n    to: {to}\n    to_port: \"{}-{}\"",
                m.port,
                10000,
                10000 + m.len - 1
            );
        }
        if m.allow {
            y.push_str("    allow_from: [198.51.100.0/24, 203.0.113.0/24]\n");
        }
    }
    y
}

/// The external port of the last mapping (the dataplane target).
pub fn last_port(n: usize) -> u16 {
    mappings(n).last().map_or(0, |m| m.port)
}

/// Every (protocol, external port, target address, target port) of the workload of `n` forwards, in
/// mapping order (the last mapping last): what the linear reference rulesets hold, one rule each.
fn linear_forwards(n: usize) -> Vec<(&'static str, u16, String, u16)> {
    let mut out = Vec::new();
    for m in mappings(n) {
        let to = target(m.index, n);
        let protos: &[&'static str] = match m.protocol {
            "both" => &["tcp", "udp"],
            "udp" => &["udp"],
            _ => &["tcp"],
        };
        for &p in protos {
            for k in 0..m.len {
                let to_port = if m.index + 1 == n {
                    80
                } else if m.len == 1 {
                    m.port
                } else {
                    10000 + k
                };
                out.push((p, m.port + k, to.clone(), to_port));
            }
        }
    }
    out
}

/// The same forwards as `n` linear DNAT rules in their own table, for the reference dataplane: one
/// rule per (protocol, port), tested in order, so the last mapping is the last rule.
pub fn linear_ruleset(n: usize) -> String {
    let mut s = String::with_capacity(n * 80);
    s.push_str("table ip linear {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
    for (p, port, to, to_port) in linear_forwards(n) {
        let _ = writeln!(s, "\t\tiifname \"wan0\" {p} dport {port} dnat to {to}:{to_port}");
    }
    s.push_str("\t}\n}\n");
    s
}

/// The same forwards as `n` linear iptables DNAT rules in nat `PREROUTING` (what Docker and
/// kube-proxy evaluate), as `iptables-restore --noflush` input: one rule per (protocol, port), the
/// last mapping last.
pub fn linear_iptables(n: usize) -> String {
    let mut s = String::with_capacity(n * 90);
    s.push_str("*nat\n");
    for (p, port, to, to_port) in linear_forwards(n) {
        let _ = writeln!(
            s,
            "-A PREROUTING -i wan0 -p {p} -m {p} --dport {port} -j DNAT --to-destination {to}:{to_port}"
        );
    }
    s.push_str("COMMIT\n");
    s
}
