//! iptables / ip6tables rules → [`Found`]. Pure: it reads `iptables-save` text (parsed into
//! chains by `portmap_iptables::save`) and never runs anything.
//!
//! Followed: nat `PREROUTING` and the user chains it jumps (`-j`) or goes (`-g`) to, recursively,
//! with cycle protection; the jumping rule's matches hold for the rules of the chain it jumps to.
//! Taken over: `-j DNAT --to-destination ADDR[:PORT[-PORT[/BASE]]]` with `-i`, `-s`, `-p tcp|udp`,
//! `--dport P[:Q]`, `-m multiport --dports …`, `-m comment`, `-m addrtype --dst-type LOCAL`.
//! Anything else that decides a packet's fate (`-m mark`, `-m conntrack`, `-m set`, `-d`, `!`
//! negations, several `--to-destination`, …) makes the rule [`NotTaken`](super::NotTaken) with the
//! reason. portmap's own chains (found by their `P-MARK` marker chain) are skipped.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use portmap_core::Transport;
use portmap_iptables::save::{Dump, TableDump};

use super::nft::{Cond, Forward, expand};
use super::{Candidate, Found};

/// How deep jumps are followed.
const MAX_JUMP_DEPTH: usize = 16;
/// The marker portmap writes as the first rule of its `P-MARK` chains.
const MARKER_COMMENT: &str = "-m comment --comment \"managed by portmap\"";

/// The words of a rule as `iptables-save` prints it, with quotes removed (`"a \"b\""` → `a "b"`).
pub fn words(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut started = false;
    for c in spec.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' && in_quotes {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
            started = true;
        } else if c == ' ' && !in_quotes {
            if started || !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            started = false;
        } else {
            cur.push(c);
            started = true;
        }
    }
    if started || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The prefixes of portmap's own chains in a table: `X` for every chain `X-MARK` whose first rule
/// is portmap's marker.
fn own_prefixes(table: &TableDump) -> Vec<String> {
    table
        .user_chains
        .iter()
        .filter_map(|c| c.strip_suffix("-MARK"))
        .filter(|p| {
            table
                .rules_of(&format!("{p}-MARK"))
                .first()
                .is_some_and(|r| r.starts_with(MARKER_COMMENT))
        })
        .map(|p| format!("{p}-"))
        .collect()
}

/// What one rule does.
enum Rule {
    Nothing,
    Jump(String, Cond),
    Forwards(Vec<Forward>),
}

/// Read the DNAT forwards of one `iptables-save` (or `ip6tables-save`) output. `source` names the
/// program family and variant for origins (`iptables-legacy`, `ip6tables-nft`).
pub fn decode(source: &str, v6: bool, dump: &Dump) -> Found {
    let mut found = Found::default();
    let Some(nat) = dump.tables.get("nat") else {
        found.read.push(format!("{source}: no nat table"));
        return found;
    };
    let own = own_prefixes(nat);
    let ctx = Ctx {
        source,
        v6,
        nat,
        own: &own,
    };
    let mut stack = vec!["PREROUTING".to_owned()];
    ctx.walk("PREROUTING", &Cond::default(), &mut stack, None, &mut found);
    for (chain, what) in [("POSTROUTING", "postrouting"), ("OUTPUT", "output")] {
        for (i, spec) in nat.rules_of(chain).iter().enumerate() {
            let w = words(spec);
            let target = w.iter().position(|x| x == "-j").and_then(|p| w.get(p + 1));
            let origin = format!("{source} nat {chain} rule {}", i + 1);
            match target.map(String::as_str) {
                Some("SNAT" | "MASQUERADE") => found.skip(
                    &origin,
                    format!("source NAT in nat {what} (-j {}): portmap does not import it; `masquerade: true` covers LAN → WAN masquerade, hairpin the reflected flows", target.map_or("", String::as_str)),
                ),
                Some("DNAT") => found.skip(
                    &origin,
                    "DNAT in nat OUTPUT (the router's own traffic): portmap forwards what arrives from outside; with `hairpin: true` the router reaches its mappings too",
                ),
                _ => {}
            }
        }
    }
    let mut line = format!("{source}: nat PREROUTING");
    if !own.is_empty() {
        let _ = write!(
            line,
            " (skipped portmap's own chains {})",
            own.iter().map(|p| format!("{p}…")).collect::<Vec<_>>().join(", ")
        );
    }
    found.read.push(line);
    found
}

struct Ctx<'a> {
    source: &'a str,
    v6: bool,
    nat: &'a TableDump,
    own: &'a [String],
}

impl Ctx<'_> {
    fn walk(
        &self,
        chain: &str,
        inherited: &Cond,
        stack: &mut Vec<String>,
        from: Option<&str>,
        found: &mut Found,
    ) {
        for (i, spec) in self.nat.rules_of(chain).iter().enumerate() {
            let mut origin = format!("{} nat {chain} rule {}", self.source, i + 1);
            if let Some(from) = from {
                let _ = write!(origin, " (jumped to from {from})");
            }
            let w = words(spec);
            let comment = comment(&w);
            match self.rule(&w, inherited) {
                Ok(Rule::Nothing) => {}
                Ok(Rule::Forwards(list)) => found.candidates.extend(list.into_iter().map(|f| Candidate {
                    origin: origin.clone(),
                    comment: comment.clone(),
                    iif: f.iif,
                    transport: f.transport,
                    ports: f.ports,
                    to: f.to,
                    to_port: f.to_port,
                    sources: f.sources,
                    listen: f.listen,
                })),
                Ok(Rule::Jump(target, cond)) => {
                    if self.own.iter().any(|p| target.starts_with(p.as_str())) {
                        continue;
                    }
                    if stack.contains(&target) {
                        found.skip(
                            &origin,
                            format!("jumps to chain {target}, which is already being followed (a loop)"),
                        );
                    } else if stack.len() >= MAX_JUMP_DEPTH {
                        found.skip(
                            &origin,
                            format!("jumps to chain {target}, deeper than {MAX_JUMP_DEPTH} chains"),
                        );
                    } else if !self.nat.rules.contains_key(&target) {
                        found.skip(
                            &origin,
                            format!("jumps to {target}, a target portmap does not know"),
                        );
                    } else {
                        stack.push(target.clone());
                        self.walk(&target, &cond, stack, Some(chain), found);
                        stack.pop();
                    }
                }
                Err(reason) => found.skip(&origin, reason),
            }
        }
    }

    fn rule(&self, w: &[String], inherited: &Cond) -> Result<Rule, String> {
        // The target decides whether the rule matters at all.
        let target_at = w.iter().position(|x| x == "-j" || x == "-g");
        let Some(target) = target_at.and_then(|p| w.get(p + 1)) else {
            return Ok(Rule::Nothing);
        };
        let is_dnat = target == "DNAT";
        let is_jump = !is_builtin_target(target);
        if !is_dnat && !is_jump {
            return match target.as_str() {
                "REDIRECT" => {
                    Err("redirects to the router itself (-j REDIRECT), not to another host".to_owned())
                }
                "NETMAP" => Err("maps a whole network (-j NETMAP), which portmap cannot express".to_owned()),
                _ => Ok(Rule::Nothing),
            };
        }
        let mut cond = inherited.clone();
        let mut to: Option<String> = None;
        let mut i = 0;
        let end = target_at.unwrap_or(w.len());
        while i < w.len() {
            let word = w[i].as_str();
            let arg = w.get(i + 1).map(String::as_str);
            let need = |what: &str| arg.ok_or_else(|| format!("{what} without a value"));
            if i >= end {
                // Target options.
                match word {
                    "-j" | "-g" => i += 2,
                    "--to-destination" => {
                        if to.is_some() {
                            return Err("translates to several addresses (--to-destination given more than once), which portmap cannot express".to_owned());
                        }
                        to = Some(need("--to-destination")?.to_owned());
                        i += 2;
                    }
                    "--random" | "--persistent" | "--random-fully" => i += 1,
                    other => {
                        return Err(format!(
                            "DNAT with the option {other}, which portmap cannot express"
                        ));
                    }
                }
                continue;
            }
            match word {
                "!" => {
                    return Err(format!(
                        "negates a match (! {}), which portmap cannot express",
                        arg.unwrap_or("")
                    ));
                }
                "-i" | "--in-interface" => {
                    let name = need("-i")?;
                    if name.ends_with('+') {
                        return Err(format!(
                            "matches input interfaces by a wildcard (-i {name}); portmap lists each interface"
                        ));
                    }
                    cond.require_iif(vec![name.to_owned()]);
                    i += 2;
                }
                "-o" | "--out-interface" => return Err("matches the output interface (-o)".to_owned()),
                "-s" | "--source" => {
                    let mut nets = Vec::new();
                    for part in need("-s")?.split(',') {
                        nets.push(
                            parse_net(part, self.v6).ok_or_else(|| {
                                format!("-s {part} is not an address or prefix portmap reads")
                            })?,
                        );
                    }
                    cond.require_sources(nets)?;
                    i += 2;
                }
                "-d" | "--destination" => {
                    let text = need("-d")?;
                    if text.contains(',') {
                        return Err(format!(
                            "-d {text} names several destinations: portmap takes one listen address per rule"
                        ));
                    }
                    let net = parse_net(text, self.v6)
                        .ok_or_else(|| format!("-d {text} is not an address or prefix portmap reads"))?;
                    cond.require_listen(net)?;
                    i += 2;
                }
                "-p" | "--protocol" => {
                    let t = match need("-p")? {
                        "tcp" | "6" => Transport::Tcp,
                        "udp" | "17" => Transport::Udp,
                        other => {
                            return Err(format!("matches protocol {other}; portmap forwards tcp and udp"));
                        }
                    };
                    cond.require_transports(vec![t]);
                    i += 2;
                }
                "-m" => {
                    match need("-m")? {
                        "tcp" | "udp" | "comment" | "multiport" | "addrtype" => {}
                        other => {
                            return Err(format!("matches with -m {other}, which portmap cannot express"));
                        }
                    }
                    i += 2;
                }
                "--dport" | "--destination-port" => {
                    let (a, b) =
                        parse_ports(need("--dport")?, ':').ok_or("--dport is not a port or range")?;
                    cond.require_ports(vec![(a, b)]);
                    i += 2;
                }
                "--dports" | "--destination-ports" => {
                    let mut list = Vec::new();
                    for part in need("--dports")?.split(',') {
                        list.push(
                            parse_ports(part, ':').ok_or("--dports holds something that is not a port")?,
                        );
                    }
                    cond.require_ports(list);
                    i += 2;
                }
                "--sport" | "--source-port" | "--sports" | "--source-ports" | "--ports" => {
                    return Err(format!(
                        "matches the source port ({word}), which portmap cannot express"
                    ));
                }
                "--comment" => i += 2,
                "--dst-type" => {
                    if need("--dst-type")? != "LOCAL" {
                        return Err(
                            "matches a destination address type other than LOCAL (-m addrtype)".to_owned(),
                        );
                    }
                    i += 2;
                }
                "--tcp-flags" | "--syn" | "--tcp-option" => {
                    return Err(format!(
                        "matches TCP flags or options ({word}), which portmap cannot express"
                    ));
                }
                other => return Err(format!("matches with {other}, which portmap cannot express")),
            }
        }
        if is_jump {
            return Ok(if cond.never {
                Rule::Nothing
            } else {
                Rule::Jump(target.clone(), cond)
            });
        }
        let to = to.ok_or("DNAT without --to-destination")?;
        let (addr, port, base) = parse_destination(&to, self.v6)?;
        let mut out = Vec::new();
        expand(&cond, addr, port, base, &mut out)?;
        Ok(Rule::Forwards(out))
    }
}

fn is_builtin_target(t: &str) -> bool {
    t.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && matches!(
            t,
            "ACCEPT"
                | "DROP"
                | "RETURN"
                | "DNAT"
                | "SNAT"
                | "MASQUERADE"
                | "REDIRECT"
                | "NETMAP"
                | "LOG"
                | "MARK"
                | "CONNMARK"
                | "CT"
                | "NOTRACK"
                | "TRACE"
                | "NFLOG"
                | "AUDIT"
                | "REJECT"
                | "TPROXY"
                | "CLUSTERIP"
        )
}

fn comment(w: &[String]) -> Option<String> {
    w.iter()
        .position(|x| x == "--comment")
        .and_then(|p| w.get(p + 1))
        .cloned()
}

fn parse_ports(text: &str, sep: char) -> Option<(u16, u16)> {
    let (a, b) = if let Some((a, b)) = text.split_once(sep) {
        (a.parse().ok()?, b.parse().ok()?)
    } else {
        let p = text.parse().ok()?;
        (p, p)
    };
    (a <= b).then_some((a, b))
}

fn parse_net(text: &str, v6: bool) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    (net.addr().is_ipv6() == v6).then(|| net.trunc())
}

/// `--to-destination` text: `A`, `A:P`, `A:P-Q`, `A:P-Q/BASE`, `[A6]:P`.
/// A `--to-destination`: the address, the port or range (none: the packet's own), the base port of
/// a shift (`/BASE`).
type Destination = (IpAddr, Option<(u16, u16)>, Option<u16>);

fn parse_destination(text: &str, v6: bool) -> Result<Destination, String> {
    let (addr_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let (a, rest) = rest
            .split_once(']')
            .ok_or("--to-destination with an unclosed [")?;
        (a, rest.strip_prefix(':'))
    } else if v6 {
        (text, None)
    } else {
        match text.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        }
    };
    if addr_text.contains('-') {
        return Err(format!(
            "translates to a range of addresses (--to-destination {text}), which portmap cannot express"
        ));
    }
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("--to-destination {text}: not an address portmap reads"))?;
    let Some(port_text) = port_text else {
        return Ok((addr, None, None));
    };
    let (ports, base) = match port_text.split_once('/') {
        Some((p, b)) => (
            p,
            Some(
                b.parse::<u16>()
                    .map_err(|_| format!("--to-destination {text}: bad base port"))?,
            ),
        ),
        None => (port_text, None),
    };
    let range = parse_ports(ports, '-').ok_or_else(|| format!("--to-destination {text}: bad port"))?;
    Ok((addr, Some(range), base))
}
