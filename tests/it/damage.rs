//! Damage fuzzer: "observe is total, apply converges from any state", tested from a live table.
//!
//! One topology (client / router / LAN, IPv4 and IPv6) holds a table of [`MAPPINGS`] mappings made
//! from the seed: tcp, udp and both; single ports, ranges and offset ranges; about 15% with an
//! `allow_from` list (IPv4 or IPv6, one or two documentation prefixes, some admitting the test
//! client and some not; about 8% name one of two `sources` lists too), about 8% with `log: true` and 8% with a `limit`, about 20% with `listen`
//! addresses (their elements in the `_addr` twins of the maps), about 10% with an `expires` two
//! days ahead (every element of theirs has a timeout, an element a damage writes again has none);
//! IPv4 and IPv6 targets;
//! hairpin on. Every mapping has its two counters and their object-map elements. Each case then damages the table with
//! 1–3 `nft -f` scripts in the router namespace, each built from the table as `nft -a list table`
//! shows it right then (so it targets real objects), and requires:
//!
//! * `plan --detailed-exitcode` exits 2 (drift is shown),
//! * `apply --auto-approve` exits 0 and the next plan exits 0 (one apply converges),
//! * the table is then what apply builds on an empty ruleset (compared object by object, counters
//!   and handles aside), so nothing a plan cannot see is left behind.
//!
//! A case whose damage removes or replaces the table's marker comment expects the opposite: the table
//! is no longer portmap's, so `plan` and `apply` must refuse it (exit 1, naming the table) and leave
//! it as it is; the fuzzer then deletes the table and applies again. A case whose damages cancel out
//! (the listing is unchanged) must plan empty. Every [`TRAFFIC_EVERY`] cases and at the end, real
//! connections check a sample: TCP, UDP and an offset range to the right LAN server, IPv6, hairpin
//! from the LAN, an allow-listed mapping that admits the client and refuses another source (no
//! reply, and a listener on the router's own WAN address on that port sees nothing), and two random
//! mappings of the generated table.
//!
//! | damage kind | what the fuzzer does | why it must be seen |
//! |---|---|---|
//! | `delete-table` | `delete table inet portmap` | every forward is gone |
//! | `delete-base-chain` | delete a hooked chain | its hook (DNAT, forward accept, hairpin) is gone |
//! | `delete-allow-chain` | delete a regular chain, the guard elements and jumps to it first | an allow-list's check is gone |
//! | `flush-chain` | empty a chain | the rules are what the kernel enforces |
//! | `delete-rule` | delete one rule by handle | one rule fewer changes what is enforced |
//! | `insert-rule` | accept, drop, counter, `ip saddr 198.51.100.7 accept` or a jump, anywhere | an extra verdict runs before portmap's rules |
//! | `delete-set` | delete a set or map, the rules using it first | its forwards, guards or matches are gone |
//! | `flush-set` | empty a set or map | every element of it is gone |
//! | `delete-element` | delete one element of any set or map | one forward, guard, source, interface or address is gone |
//! | `foreign-dnat-element` | a new port in dnat4/dnat6, with or without a comment | a forward nobody configured |
//! | `foreign-mapping-element` | a new port carrying an existing mapping's comment | an extra forward hidden under a known name |
//! | `foreign-guard-element` | a guard element: a new port jumping to an allow chain, a drop, an accept | a port sent to a verdict nobody asked for |
//! | `foreign-allow-prefix` | a prefix in an allow set | a source admitted that the configuration refuses |
//! | `foreign-interface` | an interface in `wan_ifaces` / `lan_ifaces` | DNAT or hairpin on an interface not configured |
//! | `foreign-lan-side` | an address in `lan_side4` / `lan_side6` | hairpin skipped for an address it should reflect |
//! | `change-element` | delete an element and add it back pointing elsewhere (target, verdict, source, comment) | same key, other meaning |
//! | `foreign-chain` | a chain portmap did not write: regular, hooked, or named like an allow-list | code nobody reviewed runs in the table |
//! | `foreign-set` | a set or map portmap did not write, or one named like an allow-list's set | state nobody configured |
//! | `table-dormant` | `add table inet portmap { flags dormant; }` | the whole table stops enforcing |
//! | `policy-drop` | a base chain's policy becomes drop | everything no rule accepts is dropped |
//! | `recreate-base-chain` | delete a base chain and create it again with its rules at another priority | it runs before or after other tables' chains |
//! | `set-flags` | recreate a set or map with its elements and an extra flag (timeout, constant) | a set portmap did not build |
//! | `object-comment` | recreate an allow-list's chain or set with another comment, or none | the comment names the mapping an object belongs to |
//! | `foreign-stale-element` | a pending-cleanup record in `stale4`/`stale6` that no apply wrote | plan must show the pending cleanup, apply must finish it |
//! | `delete-object` | delete a mapping's counter or limit, the elements naming it first | its connections or traffic are not counted, or its new connections not capped |
//! | `change-limit` | make a limit again with another rate, a byte rate, or without `over` | the cap is not the configured one |
//! | `foreign-object-element` | a new port in `conn`/`traffic`/`limit` naming an existing object | a port counted or capped for a mapping that does not forward it |
//! | `marker-removed` | recreate the table without its comment `managed by portmap` | no longer portmap's: must be refused, not adopted |
//! | `marker-replaced` | recreate the table with another comment | same |
//!
//! Knobs: `PORTMAP_DAMAGE_SEED` (replay; printed at the start and in every message),
//! `PORTMAP_DAMAGE_CASES` (default [`DEFAULT_CASES`]), `PORTMAP_DAMAGE_KEEP_GOING=1` (collect every
//! failing case, reset the table after each and fail at the end with the list),
//! `PORTMAP_DAMAGE_KINDS=kind,kind` (draw only those kinds). 200 cases take about 50 s on two cores
//! (debug build; the summary printed at the end says where the time goes).
//!
//! The PRNG is a `SplitMix64` in this file rather than a crate: a printed seed must replay the same
//! cases after any dependency update, and ten lines cannot change under us. The table is read as
//! `nft -a list table` text rather than `nft -j`: nft 1.0.6 (Debian 12) stops its JSON output at
//! `"flags": ` when the table is dormant — one of the damages.
//!
//! Must not: touch the host namespace (every `nft` and `portmap` runs in the test's router namespace).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portmap_testkit::topology::path_str;
use portmap_testkit::traffic::{REPLY_TIMEOUT, tcp_request};
use portmap_testkit::{
    CLIENT, CLIENT6, ConnError, LAN_HOSTS, LAN_HOSTS6, OTHER_CLIENT, OTHER_CLIENT6, Reply, Run, Server,
    Topology, WAN, WAN_SECOND, WAN6, nft, normalize, require_root,
};

use crate::PORTMAP;

/// Mappings in the configuration (the fixed probes included).
const MAPPINGS: usize = 300;
/// Cases when `PORTMAP_DAMAGE_CASES` is not set.
const DEFAULT_CASES: usize = 200;
/// Real traffic is checked after every this many cases, and after the last.
const TRAFFIC_EVERY: usize = 25;
/// How long a refused source waits for an answer that must not come (on veth links an answer takes
/// well under a millisecond).
const BLOCKED_WAIT: Duration = Duration::from_millis(500);
/// The table, as nft commands name it.
const T: &str = "inet portmap";
/// The marker comment that makes a table portmap's.
const MARKER: &str = "managed by portmap";

pub(crate) const SEED_ENV: &str = "PORTMAP_DAMAGE_SEED";
const CASES_ENV: &str = "PORTMAP_DAMAGE_CASES";
const KEEP_GOING_ENV: &str = "PORTMAP_DAMAGE_KEEP_GOING";
const KINDS_ENV: &str = "PORTMAP_DAMAGE_KINDS";

#[test]
fn damage_is_seen_and_repaired_by_one_apply() {
    require_root!();
    let knobs = Knobs::from_env();
    eprintln!(
        "damage fuzzer seed: {seed} — replay with {SEED_ENV}={seed}",
        seed = knobs.seed
    );
    let started = Instant::now();
    let mut rng = Rng::new(knobs.seed);
    let specs = mappings(&mut rng);
    let lab = Lab::new(specs, knobs.seed);
    let setup = started.elapsed();

    let mut fuzzer = Fuzzer {
        lab: &lab,
        rng,
        serial: 0,
        weighted: knobs
            .kinds
            .iter()
            .flat_map(|k| std::iter::repeat_n(*k, k.weight()))
            .collect(),
        converged: None,
    };
    let mut failures: Vec<Failure> = Vec::new();
    let mut last_traffic: Option<(usize, Vec<String>)> = None;
    let mut tally: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut traffic_time = Duration::ZERO;
    // Before any damage, then every TRAFFIC_EVERY cases.
    let mut traffic = |rng: &mut Rng, n: usize, failures: &mut Vec<Failure>| {
        let started = Instant::now();
        let problems = lab.traffic(rng);
        traffic_time += started.elapsed();
        if let Some(failure) = traffic_failure(&lab, n, &problems, &mut last_traffic) {
            assert!(knobs.keep_going, "{}", failure.report(&knobs, knobs.cases));
            eprintln!("case {n}: TRAFFIC FAILED");
            failures.push(failure);
        }
    };
    traffic(&mut fuzzer.rng, 0, &mut failures);
    for n in 1..=knobs.cases {
        let (damages, result) = fuzzer.case(n);
        let failed = result.is_err();
        for kind in distinct_kinds(&damages) {
            let t = tally.entry(kind).or_default();
            t.cases += 1;
            t.alone += usize::from(damages.len() == 1);
            t.failed += usize::from(failed);
            t.failed_alone += usize::from(failed && damages.len() == 1);
        }
        match result {
            Ok(expect) => *outcomes.entry(expect.name()).or_default() += 1,
            Err(failure) => {
                let failure = Failure {
                    case: n,
                    damages,
                    ..failure
                };
                assert!(knobs.keep_going, "{}", failure.report(&knobs, knobs.cases));
                eprintln!("case {n}: FAILED: {}", failure.what);
                failures.push(failure);
                lab.reset();
            }
        }
        if n % TRAFFIC_EVERY == 0 || n == knobs.cases {
            traffic(&mut fuzzer.rng, n, &mut failures);
        }
    }

    let steps: Vec<String> = lab
        .time
        .borrow()
        .iter()
        .map(|(step, (d, n))| format!("{step} {n}× {d:.1?}"))
        .collect();
    let mut summary = format!(
        "damage fuzzer seed {}: {} cases in {:.1?} (setup {:.1?}, traffic checks {:.1?}); outcomes {outcomes:?}\n\
         time per step: {}\n\
         {:<26} {:>6} {:>6} {:>7} {:>13}\n",
        knobs.seed,
        knobs.cases,
        started.elapsed(),
        setup,
        traffic_time,
        steps.join(", "),
        "kind",
        "cases",
        "alone",
        "failed",
        "failed alone"
    );
    for (kind, t) in &tally {
        let _ = writeln!(
            summary,
            "{:<26} {:>6} {:>6} {:>7} {:>13}",
            kind.name(),
            t.cases,
            t.alone,
            t.failed,
            t.failed_alone
        );
    }
    eprintln!("{summary}");
    if !failures.is_empty() {
        let mut report = format!(
            "{} failures in {} damage cases (seed {}; replay with {SEED_ENV}={}):\n\n",
            failures.len(),
            knobs.cases,
            knobs.seed,
            knobs.seed
        );
        for f in &failures {
            report.push_str(&f.report(&knobs, knobs.cases));
            report.push('\n');
        }
        report.push_str(&summary);
        panic!("{report}");
    }
}

/// The failure for traffic `problems` found after case `n` (0: before any damage), `None` when there
/// are none. The same problems as the last time are reported by reference, not again.
fn traffic_failure(
    lab: &Lab,
    n: usize,
    problems: &[String],
    last: &mut Option<(usize, Vec<String>)>,
) -> Option<Failure> {
    if problems.is_empty() {
        return None;
    }
    let when = if n == 0 {
        "right after the first apply, before any damage".to_owned()
    } else {
        format!("after case {n}, on the converged table")
    };
    // What went wrong, without the client's port numbers, which differ every time.
    let shape: Vec<String> = problems
        .iter()
        .map(|p| p.split(", got").next().unwrap_or(p).to_owned())
        .collect();
    let printed = match last {
        Some((earlier, seen)) if *seen == shape => {
            format!("the same problems as after case {earlier}")
        }
        _ => {
            let listing = lab.listing().unwrap_or_else(|| "(no table)".to_owned());
            let text = format!(
                "{}\n--- the table's base chains ---\n{}",
                problems.join("\n"),
                base_chains_of(&listing)
            );
            *last = Some((n, shape));
            text
        }
    };
    Some(Failure {
        case: n,
        damages: Vec::new(),
        what: format!("traffic is wrong {when}"),
        printed,
    })
}

/// The table header and its base chains (the objects with a `type … hook …` line), from a listing.
fn base_chains_of(listing: &str) -> String {
    let mut out = String::new();
    let mut block = String::new();
    for line in listing.lines() {
        if !block.is_empty() {
            block.push_str(line);
            block.push('\n');
            if line == "\t}" {
                let hooked = block
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.trim_start().starts_with("type "));
                if block.starts_with("\tchain ") && hooked {
                    out.push_str(&block);
                }
                block.clear();
            }
        } else if line.starts_with("\tchain ") || line.starts_with("\tset ") || line.starts_with("\tmap ") {
            block = format!("{line}\n");
        } else if !line.trim().is_empty() && !line.starts_with("\t\t") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Knobs and the PRNG

/// What the environment asks for.
#[derive(Debug, Clone)]
struct Knobs {
    seed: u64,
    cases: usize,
    keep_going: bool,
    kinds: Vec<Kind>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let seed = std::env::var(SEED_ENV).map_or_else(
            |_| {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                // Any value is a seed; keep them short enough to copy by hand.
                (nanos ^ (u64::from(std::process::id()) << 20)) % 1_000_000_000_000
            },
            |s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"))
            },
        );
        let cases = std::env::var(CASES_ENV).map_or(DEFAULT_CASES, |s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{CASES_ENV}={s:?} is not a number: {e}"))
        });
        let keep_going = std::env::var(KEEP_GOING_ENV).is_ok_and(|v| v == "1");
        let kinds = match std::env::var(KINDS_ENV) {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|name| {
                    Kind::ALL
                        .into_iter()
                        .find(|k| k.name() == name.trim())
                        .unwrap_or_else(|| {
                            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                            panic!(
                                "{KINDS_ENV}: unknown kind {name:?}; kinds are {}",
                                names.join(", ")
                            )
                        })
                })
                .collect(),
            _ => Kind::ALL.to_vec(),
        };
        Knobs {
            seed,
            cases,
            keep_going,
            kinds,
        }
    }

    /// The environment that replays up to case `n`.
    fn replay(&self, n: usize) -> String {
        let mut s = format!("{SEED_ENV}={} {CASES_ENV}={n}", self.seed);
        if self.keep_going {
            // Earlier failures reset the table, which later cases start from.
            let _ = write!(s, " {KEEP_GOING_ENV}=1");
        }
        if self.kinds.len() != Kind::ALL.len() {
            let names: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
            let _ = write!(s, " {KINDS_ENV}={}", names.join(","));
        }
        s
    }
}

/// `SplitMix64` (Steele, Lea and Flood, 2014). Also drives the iptables fuzzer
/// (`damage_iptables.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is irrelevant at these sizes.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub(crate) fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// One of `items`, or `None` when there is none.
    fn choose<'a, T>(&mut self, items: &[&'a T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len())])
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The configuration

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Both,
}

impl Proto {
    fn yaml(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Both => "both",
        }
    }

    fn transports(self) -> &'static [&'static str] {
        match self {
            Proto::Tcp => &["tcp"],
            Proto::Udp => &["udp"],
            Proto::Both => &["tcp", "udp"],
        }
    }
}

/// One mapping of the configuration.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    proto: Proto,
    port: u16,
    len: u16,
    to: IpAddr,
    to_port: u16,
    allow_from: Vec<&'static str>,
    description: Option<String>,
    /// `log: true`.
    log: bool,
    /// `limit: …`.
    limit: Option<&'static str>,
    /// `listen: […]` (empty: any address).
    listen: Vec<IpAddr>,
    /// `expires: …` (two days ahead), so that every element of it has a timeout.
    expires: Option<String>,
}

/// The test client's own address as an allow-list entry.
const CLIENT_NET4: &str = "203.0.113.2/32";
const CLIENT_NET6: &str = "2001:db8:1::2/128";
/// Pairwise disjoint documentation prefixes for allow-lists; `OTHER_CLIENT`/`OTHER_CLIENT6` is in
/// none of them.
const ALLOW4: [&str; 6] = [
    "192.0.2.0/25",
    "192.0.2.128/25",
    "198.51.100.0/24",
    CLIENT_NET4,
    "203.0.113.64/26",
    "203.0.113.128/25",
];
const ALLOW6: [&str; 5] = [
    "2001:db8:1::100/120",
    "2001:db8:1::1000/116",
    "2001:db8:100::/48",
    "2001:db8:200::/40",
    CLIENT_NET6,
];

impl Spec {
    fn admits_client(&self) -> bool {
        self.allow_from.is_empty()
            || self
                .allow_from
                .iter()
                .any(|p| *p == CLIENT_NET4 || *p == CLIENT_NET6 || *p == "near")
    }

    fn yaml(&self) -> String {
        let range = |start: u16| {
            if self.len == 1 {
                start.to_string()
            } else {
                format!("\"{start}-{}\"", start + self.len - 1)
            }
        };
        let mut s = format!(
            "  - name: {}\n    protocol: {}\n    port: {}\n    to: {}\n    to_port: {}\n",
            self.name,
            self.proto.yaml(),
            range(self.port),
            self.to,
            range(self.to_port)
        );
        if !self.allow_from.is_empty() {
            let list: Vec<String> = self.allow_from.iter().map(|p| format!("\"{p}\"")).collect();
            let _ = writeln!(s, "    allow_from: [{}]", list.join(", "));
        }
        if let Some(d) = &self.description {
            let _ = writeln!(s, "    description: \"{d}\"");
        }
        if self.log {
            let _ = writeln!(s, "    log: true");
        }
        if let Some(l) = self.limit {
            let _ = writeln!(s, "    limit: \"{l}\"");
        }
        if !self.listen.is_empty() {
            let list: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "    listen: [{}]", list.join(", "));
        }
        if let Some(at) = &self.expires {
            let _ = writeln!(s, "    expires: {at}");
        }
        s
    }
}

/// The mappings the traffic checks use, on fixed ports below 10000 (generated ones are above).
mod probe {
    pub const TCP: u16 = 8080;
    pub const UDP: u16 = 5353;
    pub const RANGE: u16 = 6000;
    pub const ALLOW: u16 = 2222;
    pub const TCP6: u16 = 8443;
    pub const UDP6: u16 = 5354;
    pub const ALLOW6: u16 = 2223;
}

fn probes() -> Vec<Spec> {
    let v4 = |i: usize| IpAddr::V4(LAN_HOSTS[i]);
    let v6 = |i: usize| IpAddr::V6(LAN_HOSTS6[i]);
    let spec = |name: &str, proto, port, len, to, to_port, allow_from: &[&'static str]| Spec {
        name: name.to_owned(),
        proto,
        port,
        len,
        to,
        to_port,
        allow_from: allow_from.to_vec(),
        description: None,
        log: false,
        limit: None,
        expires: None,
        listen: Vec::new(),
    };
    vec![
        spec("probe-tcp", Proto::Tcp, probe::TCP, 1, v4(0), 80, &[]),
        spec("probe-udp", Proto::Udp, probe::UDP, 1, v4(1), 53, &[]),
        spec("probe-range", Proto::Both, probe::RANGE, 3, v4(3), 7000, &[]),
        spec(
            "probe-allow",
            Proto::Tcp,
            probe::ALLOW,
            1,
            v4(2),
            22,
            &[CLIENT_NET4, "198.51.100.0/24"],
        ),
        spec("probe-tcp6", Proto::Tcp, probe::TCP6, 1, v6(0), 443, &[]),
        spec("probe-udp6", Proto::Udp, probe::UDP6, 1, v6(1), 53, &[]),
        spec(
            "probe-allow6",
            Proto::Tcp,
            probe::ALLOW6,
            1,
            v6(2),
            22,
            &[CLIENT_NET6, "2001:db8:100::/48"],
        ),
    ]
}

/// The probes and `MAPPINGS - probes` mappings drawn from `rng`, on distinct ports from 10000 up.
fn mappings(rng: &mut Rng) -> Vec<Spec> {
    let mut specs = probes();
    let mut next: u32 = 10_000;
    let in_two_days =
        portmap::UtcTime::from_unix_seconds(portmap::UtcTime::now().unix_seconds() + 2 * 86_400).to_string();
    let mut i = 0;
    while specs.len() < MAPPINGS {
        i += 1;
        let v6 = rng.percent(25);
        let to = if v6 {
            IpAddr::V6(*rng.pick(&LAN_HOSTS6))
        } else {
            IpAddr::V4(*rng.pick(&LAN_HOSTS))
        };
        let proto = match rng.below(100) {
            0..45 => Proto::Tcp,
            45..75 => Proto::Udp,
            _ => Proto::Both,
        };
        // 0..30 single, same port; 30..60 single, other port; 60..85 range; 85.. offset range.
        let shape = rng.below(100);
        let len = if shape < 60 { 1 } else { rng.between(2, 5) as u16 };
        let port = next as u16;
        next += u32::from(len) + rng.between(0, 3);
        let to_port = if shape < 30 || (60..85).contains(&shape) {
            port
        } else {
            rng.between(10_000, 60_000) as u16
        };
        let mut allow_from = Vec::new();
        if rng.percent(15) {
            let pool: &[&'static str] = if v6 { &ALLOW6 } else { &ALLOW4 };
            let first = rng.below(pool.len());
            allow_from.push(pool[first]);
            if rng.percent(50) {
                let second = (first + 1 + rng.below(pool.len() - 1)) % pool.len();
                allow_from.push(pool[second]);
            }
        }
        // About 8% use a named list of `SOURCES` (alone or with their own prefixes).
        if rng.percent(8) {
            allow_from.push(*rng.pick(&["near", "far"]));
        }
        let description = rng.percent(20).then(|| format!("bulk {i}"));
        let log = rng.percent(8);
        let limit = rng
            .percent(8)
            .then(|| *rng.pick(&["50/second", "100/second burst 20", "600/minute burst 50"]));
        // About 20% answer on listen addresses only (the addressed twins of the maps).
        let listen = if !rng.percent(20) {
            Vec::new()
        } else if v6 {
            vec![IpAddr::V6(WAN6)]
        } else if rng.percent(50) {
            vec![IpAddr::V4(WAN)]
        } else {
            vec![IpAddr::V4(WAN), IpAddr::V4(WAN_SECOND)]
        };
        // About 10% expire (two days ahead): their elements carry timeouts, their counters the moment.
        let expires = rng.percent(10).then(|| in_two_days.clone());
        specs.push(Spec {
            listen,
            expires,
            name: format!("m{i:03}"),
            proto,
            port,
            len,
            to,
            to_port,
            allow_from,
            description,
            log,
            limit,
        });
    }
    specs
}

/// The named source lists of every generated configuration: `near` admits the test client,
/// `far` does not; each holds both families.
const SOURCES: &str = "sources:\n  near: [\"203.0.113.2/32\", \"2001:db8:1::2/128\"]\n  far: [\"198.51.100.0/24\", \"2001:db8:100::/48\"]\n";

fn config_yaml(specs: &[Spec]) -> String {
    let mut s = String::from(
        "wan: { interfaces: [wan0] }\nlan: { interfaces: [lan0] }\nmasquerade: false\nhairpin: true\n",
    );
    s.push_str(SOURCES);
    s.push_str("mappings:\n");
    for spec in specs {
        s.push_str(&spec.yaml());
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The table as nft lists it

/// `nft -a list table inet portmap`, parsed into what the damage generators need.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// The listing itself (with `# handle N` comments).
    text: String,
    dormant: bool,
    chains: Vec<ChainInfo>,
    sets: Vec<SetInfo>,
    /// Named counters and limits.
    objects: Vec<ObjInfo>,
}

/// A named stateful object: `counter conn_web { … }`, `limit limit_web { … }`.
#[derive(Debug, Clone)]
struct ObjInfo {
    /// `counter` or `limit`.
    kind: String,
    name: String,
}

#[derive(Debug, Clone)]
struct ChainInfo {
    name: String,
    base: Option<Base>,
    comment: Option<String>,
    rules: Vec<RuleInfo>,
}

#[derive(Debug, Clone)]
struct Base {
    kind: String,
    hook: String,
    priority: i32,
    policy: String,
}

#[derive(Debug, Clone)]
struct RuleInfo {
    handle: u64,
    text: String,
}

#[derive(Debug, Clone)]
struct SetInfo {
    name: String,
    is_map: bool,
    /// The `type …` line's value, e.g. `inet_proto . inet_service : verdict`.
    type_text: String,
    flags: Vec<String>,
    comment: Option<String>,
    /// Sorted by text, so a seed picks the same element whatever the kernel's hash order.
    elems: Vec<Elem>,
}

#[derive(Debug, Clone)]
struct Elem {
    /// The element as listed, e.g. `tcp . 8080 comment "web" : 192.168.1.66 . 80`.
    text: String,
    key: String,
    comment: Option<String>,
    data: Option<String>,
}

impl SetInfo {
    fn keyword(&self) -> &'static str {
        if self.is_map { "map" } else { "set" }
    }

    fn has(&self, key: &str) -> bool {
        self.elems.iter().any(|e| e.key == key)
    }

    fn is_v6(&self) -> bool {
        self.type_text.starts_with("ipv6_addr") || self.type_text.contains(": ipv6_addr")
    }

    fn is_writable(&self) -> bool {
        !self.flags.iter().any(|f| f == "constant")
    }
}

impl ChainInfo {
    fn jumps_to(&self, target: &str) -> Vec<&RuleInfo> {
        self.rules
            .iter()
            .filter(|r| {
                let words: Vec<&str> = r.text.split_whitespace().collect();
                words
                    .windows(2)
                    .any(|w| (w[0] == "jump" || w[0] == "goto") && w[1] == target)
            })
            .collect()
    }

    fn uses_set(&self, set: &str) -> bool {
        let token = format!("@{set}");
        self.rules
            .iter()
            .any(|r| r.text.split_whitespace().any(|w| w == token))
    }
}

impl Snapshot {
    fn set(&self, name: &str) -> Option<&SetInfo> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// A set whose elements nft can change: not one an earlier damage made `constant` (the kernel
    /// refuses every element change of a constant set with EBUSY).
    fn writable(&self, name: &str) -> Option<&SetInfo> {
        self.set(name).filter(|s| s.is_writable())
    }

    /// The sets whose elements nft can change (see [`Snapshot::writable`]).
    fn writable_sets(&self) -> impl Iterator<Item = &SetInfo> {
        self.sets.iter().filter(|s| s.is_writable())
    }

    fn chain(&self, name: &str) -> Option<&ChainInfo> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn base_chains(&self) -> Vec<&ChainInfo> {
        self.chains.iter().filter(|c| c.base.is_some()).collect()
    }

    fn regular_chains(&self) -> Vec<&ChainInfo> {
        self.chains.iter().filter(|c| c.base.is_none()).collect()
    }

    /// Map elements whose verdict jumps (or goes) to `chain`, as (map, element).
    fn elems_jumping_to(&self, chain: &str) -> Vec<(&SetInfo, &Elem)> {
        let jump = format!("jump {chain}");
        let goto = format!("goto {chain}");
        self.sets
            .iter()
            .flat_map(|s| s.elems.iter().map(move |e| (s, e)))
            .filter(|(_, e)| e.data.as_deref().is_some_and(|d| d == jump || d == goto))
            .collect()
    }

    /// The listing without `# handle N` comments: what `nft list table` prints, loadable by `nft -f`.
    fn loadable(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        for line in self.text.lines() {
            out.push_str(strip_handle(line));
            out.push('\n');
        }
        out
    }

    #[track_caller]
    fn parse(text: &str) -> Snapshot {
        let mut snap = Snapshot {
            text: text.to_owned(),
            ..Snapshot::default()
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = strip_handle(lines[i]);
            i += 1;
            let Some(body) = line.strip_prefix('\t') else {
                continue; // the table header and its closing brace
            };
            if body.starts_with('\t') || body.trim().is_empty() {
                continue;
            }
            if body.trim() == "flags dormant" || (body.starts_with("flags ") && body.contains("dormant")) {
                snap.dormant = true;
                continue;
            }
            let Some(header) = body.strip_suffix(" {") else {
                continue; // comment, other table attributes
            };
            let (what, name) = header
                .split_once(' ')
                .unwrap_or_else(|| panic!("cannot read listing line {line:?}\n{text}"));
            // The object's lines up to its closing `\t}`.
            let mut inner: Vec<&str> = Vec::new();
            while i < lines.len() && lines[i] != "\t}" {
                inner.push(lines[i]);
                i += 1;
            }
            i += 1;
            match what {
                "chain" => snap.chains.push(parse_chain(name, &inner)),
                "set" | "map" => snap.sets.push(parse_set(name, what == "map", &inner)),
                "counter" | "limit" => snap.objects.push(ObjInfo {
                    kind: what.to_owned(),
                    name: name.to_owned(),
                }),
                _ => {} // flowtables, quotas: not made by portmap nor by this fuzzer
            }
        }
        snap.chains.sort_by(|a, b| a.name.cmp(&b.name));
        snap.sets.sort_by(|a, b| a.name.cmp(&b.name));
        snap.objects.sort_by(|a, b| a.name.cmp(&b.name));
        snap
    }

    /// Elements of object maps naming object `name`, as (map, element).
    fn elems_naming(&self, name: &str) -> Vec<(&SetInfo, &Elem)> {
        let quoted = format!("\"{name}\"");
        self.sets
            .iter()
            .flat_map(|s| s.elems.iter().map(move |e| (s, e)))
            .filter(|(_, e)| e.data.as_deref() == Some(quoted.as_str()))
            .collect()
    }
}

fn strip_handle(line: &str) -> &str {
    match line.rsplit_once(" # handle ") {
        Some((before, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => before,
        _ => line,
    }
}

fn handle_of(line: &str) -> Option<u64> {
    line.rsplit_once(" # handle ")
        .and_then(|(_, n)| n.trim().parse().ok())
}

fn parse_chain(name: &str, inner: &[&str]) -> ChainInfo {
    let mut chain = ChainInfo {
        name: name.to_owned(),
        base: None,
        comment: None,
        rules: Vec::new(),
    };
    for raw in inner {
        let line = strip_handle(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(spec) = line.strip_prefix("type ") {
            chain.base = Some(parse_base(spec));
        } else if let Some(c) = line.strip_prefix("comment ") {
            chain.comment = Some(c.trim_matches('"').to_owned());
        } else {
            let handle = handle_of(raw).unwrap_or_else(|| panic!("rule without a handle: {raw:?}"));
            chain.rules.push(RuleInfo {
                handle,
                text: line.to_owned(),
            });
        }
    }
    chain
}

/// `nat hook prerouting priority dstnat - 10; policy accept;`
fn parse_base(spec: &str) -> Base {
    let (head, rest) = spec
        .split_once(';')
        .unwrap_or_else(|| panic!("chain type line without `;`: {spec:?}"));
    let words: Vec<&str> = head.split_whitespace().collect();
    let prio_words = words
        .iter()
        .position(|w| *w == "priority")
        .map_or(&[][..], |i| &words[i + 1..]);
    let policy = rest
        .trim()
        .strip_prefix("policy ")
        .map_or("accept", |p| p.trim_end_matches(';').trim());
    Base {
        kind: words.first().copied().unwrap_or("filter").to_owned(),
        hook: words
            .iter()
            .position(|w| *w == "hook")
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or("")
            .to_owned(),
        priority: parse_priority(prio_words),
        policy: policy.to_owned(),
    }
}

/// `dstnat`, `-100`, `filter + 10`, `dstnat - 10` (the inet family's named priorities).
fn parse_priority(words: &[&str]) -> i32 {
    let base = |w: &str| -> i32 {
        match w {
            "raw" => -300,
            "mangle" => -150,
            "dstnat" => -100,
            "filter" => 0,
            "security" => 50,
            "srcnat" => 100,
            n => n.parse().unwrap_or_else(|_| panic!("unknown priority {n:?}")),
        }
    };
    match words {
        [b] => base(b),
        [b, "+", k] => base(b) + base(k),
        [b, "-", k] => base(b) - base(k),
        other => panic!("cannot read priority {other:?}"),
    }
}

fn parse_set(name: &str, is_map: bool, inner: &[&str]) -> SetInfo {
    let mut set = SetInfo {
        name: name.to_owned(),
        is_map,
        type_text: String::new(),
        flags: Vec::new(),
        comment: None,
        elems: Vec::new(),
    };
    let mut i = 0;
    while i < inner.len() {
        let line = inner[i].trim();
        i += 1;
        if let Some(t) = line.strip_prefix("type ") {
            t.clone_into(&mut set.type_text);
        } else if let Some(f) = line.strip_prefix("flags ") {
            set.flags = f.split(',').map(|s| s.trim().to_owned()).collect();
        } else if let Some(c) = line.strip_prefix("comment ") {
            set.comment = Some(c.trim_matches('"').to_owned());
        } else if let Some(first) = line.strip_prefix("elements = {") {
            let mut body = first.to_owned();
            while !body.trim_end().ends_with('}') && i < inner.len() {
                body.push(' ');
                body.push_str(inner[i].trim());
                i += 1;
            }
            let body = body.trim().trim_end_matches('}');
            set.elems = nft::split_elements(body).into_iter().map(parse_elem).collect();
        }
    }
    set.elems.sort_by(|a, b| a.text.cmp(&b.text));
    set
}

/// `KEY [comment "C"] [: DATA]` (an IPv6 address has no ` : `, so that split is unambiguous).
fn parse_elem(text: &str) -> Elem {
    let (before, comment, after) = match text.split_once(" comment \"") {
        Some((key, rest)) => {
            let (c, rest) = rest
                .split_once('"')
                .unwrap_or_else(|| panic!("unterminated comment in element {text:?}"));
            (key.to_owned(), Some(c.to_owned()), rest.to_owned())
        }
        None => match text.split_once(" : ") {
            Some((key, data)) => (key.to_owned(), None, format!(" : {data}")),
            None => (text.to_owned(), None, String::new()),
        },
    };
    let data = after.trim().strip_prefix(':').map(|d| d.trim().to_owned());
    // The element's timeout and time left (a mapping that expires) are not part of its key: an
    // element a damage writes again from its key has none.
    let key = before.split_once(" timeout ").map_or(before.as_str(), |(k, _)| k);
    Elem {
        text: text.to_owned(),
        key: key.trim().to_owned(),
        comment,
        data,
    }
}

fn elem_text(key: &str, comment: Option<&str>, data: Option<&str>) -> String {
    let mut s = key.to_owned();
    if let Some(c) = comment {
        let _ = write!(s, " comment \"{c}\"");
    }
    if let Some(d) = data {
        let _ = write!(s, " : {d}");
    }
    s
}

/// A listing with handles and counter values stripped, elements sorted, and the table's objects
/// sorted by their text: equal for two tables that hold the same objects, whatever order they were
/// made in.
fn canonical(listing: &str) -> String {
    let norm = normalize(listing);
    let mut head: Vec<String> = Vec::new();
    let mut blocks: Vec<String> = Vec::new();
    let mut open: Option<String> = None;
    for line in norm.lines() {
        if let Some(block) = open.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line == "\t}" {
                blocks.extend(open.take());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') && !line.starts_with("\t\t") && line.ends_with('{') {
            open = Some(format!("{line}\n"));
        } else {
            head.push(format!("{line}\n"));
        }
    }
    blocks.sort();
    head.concat() + &blocks.concat()
}

/// Lines of `want` missing from `got` (`-`) and lines of `got` not in `want` (`+`), at most `limit`
/// of each.
fn line_diff(want: &str, got: &str, limit: usize) -> String {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for l in want.lines() {
        *counts.entry(l).or_default() += 1;
    }
    for l in got.lines() {
        *counts.entry(l).or_default() -= 1;
    }
    let mut out = String::new();
    for (lines, sign, mark) in [(want, 1, '-'), (got, -1, '+')] {
        let mut left = counts.clone();
        let mut shown = 0;
        for l in lines.lines() {
            let n = left.get_mut(l).expect("counted above");
            if *n * sign > 0 && shown < limit {
                *n -= sign;
                shown += 1;
                let _ = writeln!(out, "{mark} {l}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The lab: one topology, the configuration, servers for the traffic checks

struct Lab {
    t: Topology,
    config: PathBuf,
    specs: Vec<Spec>,
    /// `canonical` of the table a fresh apply builds.
    baseline: String,
    servers: ProbeServers,
    /// Time spent per step, for the summary.
    time: RefCell<BTreeMap<&'static str, (Duration, u32)>>,
}

/// Servers the probes forward to, and listeners on the router's own WAN addresses on the
/// allow-listed probes' ports (a refused source must not reach them either).
struct ProbeServers {
    allow: Server,
    allow6: Server,
    router_allow: Server,
    router_allow6: Server,
    _others: Vec<Server>,
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

impl Lab {
    fn new(specs: Vec<Spec>, seed: u64) -> Lab {
        let t = Topology::with_ipv6(PORTMAP, "damage");
        t.add_wan_address();
        let config = t.write_config(&config_yaml(&specs));
        let lan = &t.lan;
        let servers = ProbeServers {
            allow: Server::tcp(lan, sock(LAN_HOSTS[2], 22)),
            allow6: Server::tcp(lan, sock(LAN_HOSTS6[2], 22)),
            router_allow: Server::tcp(&t.router, sock(WAN, probe::ALLOW)),
            router_allow6: Server::tcp(&t.router, sock(WAN6, probe::ALLOW6)),
            _others: vec![
                Server::tcp(lan, sock(LAN_HOSTS[0], 80)),
                Server::udp(lan, sock(LAN_HOSTS[1], 53)),
                Server::tcp(lan, sock(LAN_HOSTS[3], 7001)),
                Server::udp(lan, sock(LAN_HOSTS[3], 7002)),
                Server::tcp(lan, sock(LAN_HOSTS6[0], 443)),
                Server::udp(lan, sock(LAN_HOSTS6[1], 53)),
            ],
        };
        let mut lab = Lab {
            t,
            config,
            specs,
            baseline: String::new(),
            servers,
            time: RefCell::default(),
        };
        let first = lab.apply();
        assert!(
            first.ok(),
            "seed {seed}: the first apply of the generated configuration failed\n{first}\n--- config ---\n{}",
            config_yaml(&lab.specs)
        );
        let plan = lab.plan();
        assert!(
            plan.code == 0,
            "seed {seed}: the plan right after the first apply is not empty\n{plan}"
        );
        lab.baseline = canonical(&lab.listing().expect("apply made the table"));
        lab
    }

    /// Run `f`, adding its time to `step`.
    fn timed<R>(&self, step: &'static str, f: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let r = f();
        let mut time = self.time.borrow_mut();
        let entry = time.entry(step).or_default();
        entry.0 += started.elapsed();
        entry.1 += 1;
        r
    }

    fn plan(&self) -> Run {
        self.timed("portmap plan", || {
            self.t
                .portmap(&["plan", "-c", path_str(&self.config), "--detailed-exitcode"])
        })
    }

    fn apply(&self) -> Run {
        self.timed("portmap apply", || {
            self.t
                .portmap(&["apply", "-c", path_str(&self.config), "--auto-approve"])
        })
    }

    /// `nft -a list table inet portmap`, `None` when the table does not exist.
    fn listing(&self) -> Option<String> {
        let out = self.timed("nft list", || {
            self.nft(&["-a", "list", "table", "inet", "portmap"], None)
        });
        Self::read(&out)
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let out = self.timed("nft list", || {
            self.nft(&["-a", "list", "table", "inet", "portmap"], None)
        });
        Self::read(&out).map(|text| Snapshot::parse(&text))
    }

    #[track_caller]
    fn read(out: &Run) -> Option<String> {
        if out.ok() {
            return Some(out.stdout.clone());
        }
        assert!(
            out.stderr.contains("No such file or directory"),
            "cannot list table {T}\n{out}"
        );
        None
    }

    /// Run a damage script; on refusal its fallback; a script nft refuses is a bug of the fuzzer.
    #[track_caller]
    fn inflict(&self, damage: Damage) -> Damage {
        let out = self.nft_script(&damage.script);
        if out.ok() {
            return damage;
        }
        if let Some(fallback) = &damage.fallback {
            let second = self.nft_script(fallback);
            if second.ok() {
                return Damage {
                    script: fallback.clone(),
                    fallback: None,
                    ..damage
                };
            }
        }
        panic!(
            "the fuzzer built an nft script the kernel refused (a bug in the fuzzer, not in portmap) [{}]:\n{}\n{out}",
            damage.kind.name(),
            damage.script
        );
    }

    /// `nft args…` in the router namespace. Started from a thread that has entered the namespace
    /// (what `Netns::enter` gives), so it costs neither `ip netns exec` nor a polling wait: the
    /// fuzzer runs nft a thousand times.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let command = format!("nft {}", args.join(" "));
        let out = self.t.router.enter(|| {
            let mut child = Command::new("nft")
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start nft: {e}"));
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // nft reads its whole input before it answers, so this cannot block on output.
                let _ = pipe.write_all(text.as_bytes());
            }
            child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("waiting for nft: {e}"))
        });
        Run {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn nft_script(&self, script: &str) -> Run {
        self.timed("nft -f (damage)", || self.nft(&["-f", "-"], Some(script)))
    }

    /// Delete the table and apply again: back to the baseline. Panics when that does not work.
    fn reset(&self) {
        let _ = self.timed("nft delete table (reset)", || {
            self.nft(&["delete", "table", "inet", "portmap"], None)
        });
        let apply = self.apply();
        assert!(apply.ok(), "reset: apply on an empty ruleset failed\n{apply}");
        let plan = self.plan();
        assert!(
            plan.code == 0,
            "reset: plan after a fresh apply is not empty\n{plan}"
        );
        let now = canonical(&self.listing().expect("apply made the table"));
        assert!(
            now == self.baseline,
            "reset: a fresh apply built another table than the first one:\n{}",
            line_diff(&self.baseline, &now, 20)
        );
    }

    /// Real connections through a sample of the mappings; the problems found.
    fn traffic(&self, rng: &mut Rng) -> Vec<String> {
        let t = &self.t;
        let mut problems = Vec::new();
        let v4 = |i: usize| IpAddr::V4(LAN_HOSTS[i]);
        let v6 = |i: usize| IpAddr::V6(LAN_HOSTS6[i]);
        expect_reply(
            &mut problems,
            "tcp probe-tcp",
            &t.tcp(CLIENT, probe::TCP),
            sock(v4(0), 80),
            CLIENT,
        );
        expect_reply(
            &mut problems,
            "udp probe-udp",
            &t.udp(CLIENT, probe::UDP),
            sock(v4(1), 53),
            CLIENT,
        );
        expect_reply(
            &mut problems,
            "tcp probe-range (offset)",
            &t.tcp(CLIENT, probe::RANGE + 1),
            sock(v4(3), 7001),
            CLIENT,
        );
        expect_reply(
            &mut problems,
            "udp probe-range (offset)",
            &t.udp(CLIENT, probe::RANGE + 2),
            sock(v4(3), 7002),
            CLIENT,
        );
        expect_reply(
            &mut problems,
            "tcp probe-tcp6",
            &t.tcp(CLIENT6, probe::TCP6),
            sock(v6(0), 443),
            IpAddr::V6(CLIENT6),
        );
        expect_reply(
            &mut problems,
            "udp probe-udp6",
            &t.udp(CLIENT6, probe::UDP6),
            sock(v6(1), 53),
            IpAddr::V6(CLIENT6),
        );
        // Hairpin: a LAN host through the public address.
        let hairpin = tcp_request(&t.lan, LAN_HOSTS[2], sock(WAN, probe::TCP), REPLY_TIMEOUT);
        match hairpin.as_deref().ok().and_then(Reply::parse) {
            Some(r) if r.server == sock(v4(0), 80) => {}
            _ => problems.push(format!(
                "hairpin tcp {} -> {WAN}:{}: expected an answer from {}, got {hairpin:?}",
                LAN_HOSTS[2],
                probe::TCP,
                sock(v4(0), 80)
            )),
        }
        // Allow-lists: the client is admitted, another source is refused and reaches nobody.
        let s = &self.servers;
        expect_reply(
            &mut problems,
            "tcp probe-allow from an admitted source",
            &t.tcp(CLIENT, probe::ALLOW),
            sock(v4(2), 22),
            CLIENT,
        );
        expect_blocked(
            &mut problems,
            t,
            "tcp probe-allow from a refused source",
            OTHER_CLIENT.into(),
            probe::ALLOW,
            &[&s.allow, &s.router_allow],
        );
        expect_reply(
            &mut problems,
            "tcp probe-allow6 from an admitted source",
            &t.tcp(CLIENT6, probe::ALLOW6),
            sock(v6(2), 22),
            IpAddr::V6(CLIENT6),
        );
        expect_blocked(
            &mut problems,
            t,
            "tcp probe-allow6 from a refused source",
            OTHER_CLIENT6.into(),
            probe::ALLOW6,
            &[&s.allow6, &s.router_allow6],
        );
        // Two mappings of the generated table, with servers started for them.
        let generated: Vec<&Spec> = self.specs[probes().len()..]
            .iter()
            .filter(|s| s.admits_client())
            .collect();
        let mut used: Vec<(&str, SocketAddr)> = Vec::new();
        for _ in 0..2 {
            let Some(spec) = rng.choose(&generated) else { break };
            let offset = rng.below(usize::from(spec.len)) as u16;
            let transport = *rng.pick(spec.proto.transports());
            let target = sock(spec.to, spec.to_port + offset);
            if used.contains(&(transport, target)) {
                continue;
            }
            used.push((transport, target));
            let from = match spec.to {
                IpAddr::V4(_) => IpAddr::V4(CLIENT),
                IpAddr::V6(_) => IpAddr::V6(CLIENT6),
            };
            let port = spec.port + offset;
            let label = format!("{transport} {} port {port}", spec.name);
            if transport == "tcp" {
                let _server = Server::tcp(&t.lan, target);
                expect_reply(&mut problems, &label, &t.tcp(from, port), target, from);
            } else {
                let _server = Server::udp(&t.lan, target);
                expect_reply(&mut problems, &label, &t.udp(from, port), target, from);
            }
        }
        problems
    }
}

fn expect_reply(
    problems: &mut Vec<String>,
    label: &str,
    got: &Result<String, ConnError>,
    server: SocketAddr,
    peer: impl Into<IpAddr>,
) {
    let peer = peer.into();
    let ok = got
        .as_deref()
        .ok()
        .and_then(Reply::parse)
        .is_some_and(|r| r.server == server && r.peer.ip() == peer);
    if !ok {
        problems.push(format!(
            "{label}: expected an answer from {server} that saw {peer}, got {got:?}"
        ));
    }
}

/// TCP from `from` to the router's WAN address on `port` must get no answer, and none of
/// `watchers` (the mapping's LAN server, a listener on the router itself) may see `from`.
fn expect_blocked(
    problems: &mut Vec<String>,
    t: &Topology,
    label: &str,
    from: IpAddr,
    port: u16,
    watchers: &[&Server],
) {
    let before: Vec<usize> = watchers.iter().map(|w| w.seen().len()).collect();
    let got = tcp_request(&t.client, from, sock(Topology::wan_for(from), port), BLOCKED_WAIT);
    if !matches!(got, Err(ConnError::Refused | ConnError::Timeout)) {
        problems.push(format!(
            "{label} {from} -> port {port}: expected no answer, got {got:?}"
        ));
    }
    for (w, n) in watchers.iter().zip(before) {
        if w.seen()[n..].iter().any(|p| p.ip() == from) {
            problems.push(format!(
                "{label} {from} -> port {port}: the connection reached {} (refused sources must be dropped)",
                w.local()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Damage

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DeleteTable,
    DeleteBaseChain,
    DeleteAllowChain,
    FlushChain,
    DeleteRule,
    InsertRule,
    DeleteSet,
    FlushSet,
    DeleteElement,
    ForeignDnatElement,
    ForeignMappingElement,
    ForeignGuardElement,
    ForeignAllowPrefix,
    ForeignInterface,
    ForeignLanSide,
    ChangeElement,
    ForeignChain,
    ForeignSet,
    TableDormant,
    PolicyDrop,
    RecreateBaseChain,
    SetFlags,
    ObjectComment,
    ForeignStaleElement,
    DeleteObject,
    ChangeLimit,
    ForeignObjectElement,
    MarkerRemoved,
    MarkerReplaced,
}

impl Kind {
    const ALL: [Kind; 29] = [
        Kind::DeleteTable,
        Kind::DeleteBaseChain,
        Kind::DeleteAllowChain,
        Kind::FlushChain,
        Kind::DeleteRule,
        Kind::InsertRule,
        Kind::DeleteSet,
        Kind::FlushSet,
        Kind::DeleteElement,
        Kind::ForeignDnatElement,
        Kind::ForeignMappingElement,
        Kind::ForeignGuardElement,
        Kind::ForeignAllowPrefix,
        Kind::ForeignInterface,
        Kind::ForeignLanSide,
        Kind::ChangeElement,
        Kind::ForeignChain,
        Kind::ForeignSet,
        Kind::TableDormant,
        Kind::PolicyDrop,
        Kind::RecreateBaseChain,
        Kind::SetFlags,
        Kind::ObjectComment,
        Kind::ForeignStaleElement,
        Kind::DeleteObject,
        Kind::ChangeLimit,
        Kind::ForeignObjectElement,
        Kind::MarkerRemoved,
        Kind::MarkerReplaced,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::DeleteTable => "delete-table",
            Kind::DeleteBaseChain => "delete-base-chain",
            Kind::DeleteAllowChain => "delete-allow-chain",
            Kind::FlushChain => "flush-chain",
            Kind::DeleteRule => "delete-rule",
            Kind::InsertRule => "insert-rule",
            Kind::DeleteSet => "delete-set",
            Kind::FlushSet => "flush-set",
            Kind::DeleteElement => "delete-element",
            Kind::ForeignDnatElement => "foreign-dnat-element",
            Kind::ForeignMappingElement => "foreign-mapping-element",
            Kind::ForeignGuardElement => "foreign-guard-element",
            Kind::ForeignAllowPrefix => "foreign-allow-prefix",
            Kind::ForeignInterface => "foreign-interface",
            Kind::ForeignLanSide => "foreign-lan-side",
            Kind::ChangeElement => "change-element",
            Kind::ForeignChain => "foreign-chain",
            Kind::ForeignSet => "foreign-set",
            Kind::TableDormant => "table-dormant",
            Kind::PolicyDrop => "policy-drop",
            Kind::RecreateBaseChain => "recreate-base-chain",
            Kind::SetFlags => "set-flags",
            Kind::ObjectComment => "object-comment",
            Kind::ForeignStaleElement => "foreign-stale-element",
            Kind::DeleteObject => "delete-object",
            Kind::ChangeLimit => "change-limit",
            Kind::ForeignObjectElement => "foreign-object-element",
            Kind::MarkerRemoved => "marker-removed",
            Kind::MarkerReplaced => "marker-replaced",
        }
    }

    /// How often the kind is drawn, relative to the others. The kinds that end a case early (the
    /// table is gone, or no longer portmap's, so the other damages of the case are not checked)
    /// and are slow (a whole table reloaded) are drawn less.
    fn weight(self) -> usize {
        match self {
            Kind::MarkerRemoved | Kind::MarkerReplaced => 1,
            Kind::DeleteTable => 2,
            _ => 4,
        }
    }

    fn removes_marker(self) -> bool {
        matches!(self, Kind::MarkerRemoved | Kind::MarkerReplaced)
    }
}

/// One damage: an `nft -f` script, and what to run instead when nft refuses it.
#[derive(Debug, Clone)]
struct Damage {
    kind: Kind,
    script: String,
    fallback: Option<String>,
}

impl Damage {
    fn new(kind: Kind, script: String) -> Damage {
        Damage {
            kind,
            script,
            fallback: None,
        }
    }

    fn or_else(self, fallback: String) -> Damage {
        Damage {
            fallback: Some(fallback),
            ..self
        }
    }

    /// The script as printed in messages: whole, unless it reloads a whole table or set.
    fn shown(&self) -> String {
        const MAX_LINES: usize = 16;
        let lines: Vec<&str> = self.script.lines().collect();
        let mut out = String::new();
        for line in lines.iter().take(MAX_LINES) {
            let short: String = line.chars().take(300).collect();
            let _ = writeln!(
                out,
                "    {short}{}",
                if short.len() < line.len() { " …" } else { "" }
            );
        }
        if lines.len() > MAX_LINES {
            let _ = writeln!(
                out,
                "    … ({} more lines; the seed replays them exactly)",
                lines.len() - MAX_LINES
            );
        }
        out
    }
}

fn distinct_kinds(damages: &[Damage]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = damages.iter().map(|d| d.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// What a case must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// plan 2, apply 0, plan 0, table as built fresh.
    Repair,
    /// The marker is gone: plan and apply exit 1 naming the table, which stays as it is.
    Refusal,
    /// The damages cancelled out: plan 0.
    Nothing,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::Repair => "repaired",
            Expect::Refusal => "refused",
            Expect::Nothing => "cancelled out",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    cases: usize,
    alone: usize,
    failed: usize,
    failed_alone: usize,
}

/// A failed case: what went wrong and what portmap printed.
#[derive(Debug, Clone)]
struct Failure {
    case: usize,
    damages: Vec<Damage>,
    what: String,
    printed: String,
}

impl Failure {
    fn new(what: String, printed: &Run) -> Failure {
        Failure {
            case: 0,
            damages: Vec::new(),
            what,
            printed: format!("{}{}", printed.stdout, printed.stderr),
        }
    }

    fn report(&self, knobs: &Knobs, cases: usize) -> String {
        let kinds: Vec<&str> = self.damages.iter().map(|d| d.kind.name()).collect();
        let mut s = format!(
            "damage fuzzer seed {}, case {}/{cases} [{}]: {}\n  replay: {}\n",
            knobs.seed,
            self.case,
            kinds.join(", "),
            self.what,
            knobs.replay(self.case)
        );
        for (i, d) in self.damages.iter().enumerate() {
            let _ = writeln!(s, "  damage {} [{}]: nft -f - <<'EOF'", i + 1, d.kind.name());
            s.push_str(&d.shown());
            s.push_str("    EOF\n");
        }
        let printed: Vec<&str> = self
            .printed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(40)
            .collect();
        let _ = writeln!(s, "  printed:\n    {}", printed.join("\n    "));
        s
    }
}

/// Draws damage from the seed and runs the cases.
struct Fuzzer<'a> {
    lab: &'a Lab,
    rng: Rng,
    /// Numbers foreign objects, so two never clash.
    serial: u32,
    /// The kinds to draw, each [`Kind::weight`] times.
    weighted: Vec<Kind>,
    /// The table as read right after the last case converged (saves a listing).
    converged: Option<Snapshot>,
}

impl Fuzzer<'_> {
    /// One case from a converged table: damage, then the checks. Leaves the table converged when
    /// it passes (the caller resets it when it fails).
    fn case(&mut self, n: usize) -> (Vec<Damage>, Result<Expect, Failure>) {
        let count = match self.rng.below(10) {
            0..5 => 1,
            5..8 => 2,
            _ => 3,
        };
        let mut damages = Vec::new();
        let mut marker_gone = false;
        // The table as the last case left it, when that was converged; else read it.
        let mut snap = self.converged.take().or_else(|| self.lab.snapshot());
        for _ in 0..count {
            let Some(current) = &snap else { break };
            let damage = self.draw(current, n);
            let damage = self.lab.inflict(damage);
            let kind = damage.kind;
            damages.push(damage);
            // One damage always changes the table (each generator makes sure), so only a later
            // damage, a refusal (which compares before and after) or a cancelling pair needs the
            // table read again.
            let last = damages.len() == count;
            snap = if last && count == 1 && !kind.removes_marker() {
                None
            } else {
                self.lab.snapshot()
            };
            if kind == Kind::DeleteTable {
                marker_gone = false;
                break;
            }
            marker_gone |= kind.removes_marker();
        }
        let changed = damages.len() == 1
            || snap.as_ref().map(|s| canonical(&s.text)).as_ref() != Some(&self.lab.baseline);
        let expect = if marker_gone {
            Expect::Refusal
        } else if changed {
            Expect::Repair
        } else {
            Expect::Nothing
        };
        let result = self.check(expect, snap).map(|()| expect);
        (damages, result)
    }

    /// The checks of a case whose damaged table is `snap`; on success `self.converged` holds the
    /// table when it was read anyway.
    fn check(&mut self, expect: Expect, snap: Option<Snapshot>) -> Result<(), Failure> {
        let lab = self.lab;
        match expect {
            Expect::Nothing => {
                let plan = lab.plan();
                if plan.code != 0 {
                    return Err(Failure::new(
                        format!(
                            "the damages cancelled out (the listing is unchanged) but plan --detailed-exitcode exited {}, expected 0",
                            plan.code
                        ),
                        &plan,
                    ));
                }
                self.converged = snap;
            }
            Expect::Repair => {
                let plan = lab.plan();
                if plan.code != 2 {
                    return Err(Failure::new(
                        format!(
                            "plan --detailed-exitcode exited {}, expected 2: the damage must show as drift",
                            plan.code
                        ),
                        &plan,
                    ));
                }
                let apply = lab.apply();
                if apply.code != 0 {
                    return Err(Failure::new(
                        format!("apply --auto-approve exited {}, expected 0", apply.code),
                        &apply,
                    ));
                }
                let again = lab.plan();
                if again.code != 0 {
                    return Err(Failure::new(
                        format!(
                            "after apply, plan --detailed-exitcode exited {}, expected 0: one apply must converge",
                            again.code
                        ),
                        &again,
                    ));
                }
                let after = lab.snapshot();
                let now = after.as_ref().map(|s| canonical(&s.text)).unwrap_or_default();
                if now == lab.baseline {
                    self.converged = after;
                } else {
                    return Err(Failure {
                        case: 0,
                        damages: Vec::new(),
                        what: "apply converged to an empty plan, but the table is not what apply builds on an empty ruleset (damage left behind that plan does not see)".to_owned(),
                        printed: format!(
                            "--- first apply's table (-) vs now (+) ---\n{}--- apply printed ---\n{}",
                            line_diff(&lab.baseline, &now, 15),
                            apply.stdout
                        ),
                    });
                }
            }
            Expect::Refusal => {
                let listing = snap.as_ref().map(|s| s.text.as_str());
                let marker = format!("\n\tcomment \"{MARKER}\"\n");
                assert!(
                    listing.is_some_and(|l| !l.contains(&marker)),
                    "the fuzzer expects a refusal, but the table still carries its marker:\n{listing:?}"
                );
                let before = listing.map(normalize);
                let plan = lab.plan();
                let apply = lab.apply();
                let after = lab.listing().map(|l| normalize(&l));
                let result = if plan.code != 1 || !plan.stderr.contains(T) {
                    Err(Failure::new(
                        format!(
                            "the table's marker comment is gone, so it is not portmap's: plan must refuse it (exit 1, naming {T}), but exited {}",
                            plan.code
                        ),
                        &plan,
                    ))
                } else if apply.code != 1 || !apply.stderr.contains(T) {
                    Err(Failure::new(
                        format!(
                            "the table's marker comment is gone: apply must refuse it (exit 1, naming {T}), but exited {}",
                            apply.code
                        ),
                        &apply,
                    ))
                } else if before != after {
                    Err(Failure::new(
                        "apply refused the unmarked table but changed it".to_owned(),
                        &apply,
                    ))
                } else {
                    Ok(())
                };
                // Refused or not, the table is not portmap's any more: start over.
                if result.is_ok() {
                    lab.reset();
                }
                return result;
            }
        }
        Ok(())
    }

    fn next_serial(&mut self) -> u32 {
        self.serial += 1;
        self.serial
    }

    fn draw(&mut self, snap: &Snapshot, case: usize) -> Damage {
        for _ in 0..1000 {
            let kind = *self.rng.pick(&self.weighted);
            if let Some(d) = self.generate(kind, snap) {
                return d;
            }
        }
        panic!("case {case}: no damage of the kinds drawn applies to the table");
    }

    /// A damage of `kind` against `snap`, or `None` when the table has nothing it applies to.
    fn generate(&mut self, kind: Kind, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        match kind {
            Kind::DeleteTable => Some(Damage::new(kind, format!("delete table {T}\n"))),
            Kind::DeleteBaseChain => {
                let c = rng.choose(&snap.base_chains())?;
                Some(
                    Damage::new(kind, format!("delete chain {T} {}\n", c.name))
                        .or_else(format!("flush chain {T} {}\n", c.name)),
                )
            }
            Kind::DeleteAllowChain => {
                let c = rng.choose(&snap.regular_chains())?;
                let mut s = String::new();
                for (set, e) in snap.elems_jumping_to(&c.name) {
                    let _ = writeln!(s, "delete element {T} {} {{ {} }}", set.name, e.key);
                }
                for other in &snap.chains {
                    for r in other.jumps_to(&c.name) {
                        let _ = writeln!(s, "delete rule {T} {} handle {}", other.name, r.handle);
                    }
                }
                let _ = writeln!(s, "delete chain {T} {}", c.name);
                Some(Damage::new(kind, s).or_else(format!("flush chain {T} {}\n", c.name)))
            }
            Kind::FlushChain => {
                let full: Vec<&ChainInfo> = snap.chains.iter().filter(|c| !c.rules.is_empty()).collect();
                let c = rng.choose(&full)?;
                Some(Damage::new(kind, format!("flush chain {T} {}\n", c.name)))
            }
            Kind::DeleteRule => {
                let full: Vec<&ChainInfo> = snap.chains.iter().filter(|c| !c.rules.is_empty()).collect();
                let c = rng.choose(&full)?;
                let r = rng.pick(&c.rules);
                Some(Damage::new(
                    kind,
                    format!("delete rule {T} {} handle {}\n", c.name, r.handle),
                ))
            }
            Kind::InsertRule => {
                let all: Vec<&ChainInfo> = snap.chains.iter().collect();
                let c = rng.choose(&all)?;
                let mut statements: Vec<String> =
                    ["accept", "drop", "counter", "ip saddr 198.51.100.7 accept"]
                        .map(str::to_owned)
                        .to_vec();
                if c.base.is_some() {
                    // Jumps only from base chains, so no jump can make a loop.
                    statements.extend(snap.regular_chains().iter().map(|t| format!("jump {}", t.name)));
                }
                let statement = rng.pick(&statements).clone();
                let script = if c.rules.is_empty() {
                    format!("add rule {T} {} {statement}\n", c.name)
                } else {
                    let at = rng.pick(&c.rules).handle;
                    match rng.below(4) {
                        0 => format!("add rule {T} {} {statement}\n", c.name),
                        1 => format!("insert rule {T} {} {statement}\n", c.name),
                        2 => format!("add rule {T} {} position {at} {statement}\n", c.name),
                        _ => format!("insert rule {T} {} position {at} {statement}\n", c.name),
                    }
                };
                Some(Damage::new(kind, script))
            }
            Kind::DeleteSet => {
                let all: Vec<&SetInfo> = snap.sets.iter().collect();
                let set = rng.choose(&all)?;
                let mut s = String::new();
                for c in &snap.chains {
                    let token = format!("@{}", set.name);
                    for r in c
                        .rules
                        .iter()
                        .filter(|r| r.text.split_whitespace().any(|w| w == token))
                    {
                        let _ = writeln!(s, "delete rule {T} {} handle {}", c.name, r.handle);
                    }
                }
                let _ = writeln!(s, "delete {} {T} {}", set.keyword(), set.name);
                Some(Damage::new(kind, s).or_else(format!("flush {} {T} {}\n", set.keyword(), set.name)))
            }
            Kind::FlushSet => {
                let full: Vec<&SetInfo> = snap.writable_sets().filter(|s| !s.elems.is_empty()).collect();
                let set = rng.choose(&full)?;
                Some(Damage::new(
                    kind,
                    format!("flush {} {T} {}\n", set.keyword(), set.name),
                ))
            }
            Kind::DeleteElement => {
                let full: Vec<&SetInfo> = snap.writable_sets().filter(|s| !s.elems.is_empty()).collect();
                let set = rng.choose(&full)?;
                let e = rng.pick(&set.elems);
                Some(Damage::new(
                    kind,
                    format!("delete element {T} {} {{ {} }}\n", set.name, e.key),
                ))
            }
            Kind::ForeignDnatElement => self.foreign_dnat(snap),
            Kind::ForeignMappingElement => self.foreign_mapping_element(snap),
            Kind::ForeignGuardElement => self.foreign_guard(snap),
            Kind::ForeignAllowPrefix => {
                let sets: Vec<&SetInfo> = snap
                    .writable_sets()
                    .filter(|s| s.name.starts_with("allow_") && !s.is_map)
                    .collect();
                let set = rng.choose(&sets)?;
                let prefix = foreign_prefix(rng, set.is_v6());
                if set.has(&prefix) {
                    return None;
                }
                Some(Damage::new(
                    kind,
                    format!("add element {T} {} {{ {prefix} }}\n", set.name),
                ))
            }
            Kind::ForeignInterface => {
                let name = if rng.percent(50) {
                    "wan_ifaces"
                } else {
                    "lan_ifaces"
                };
                let set = snap.writable(name)?;
                let ifname = format!(
                    "\"{}\"",
                    rng.pick(&["wan1", "eth7", "ppp0", "br-guest", "lan0", "wan0"])
                );
                if set.has(&ifname) {
                    return None;
                }
                Some(Damage::new(
                    kind,
                    format!("add element {T} {name} {{ {ifname} }}\n"),
                ))
            }
            Kind::ForeignLanSide => {
                let v6 = rng.percent(50);
                let name = if v6 { "lan_side6" } else { "lan_side4" };
                let set = snap.writable(name)?;
                let addr = foreign_address(rng, v6);
                if set.has(&addr) {
                    return None;
                }
                Some(Damage::new(
                    kind,
                    format!("add element {T} {name} {{ {addr} }}\n"),
                ))
            }
            Kind::ChangeElement => self.change_element(snap),
            Kind::ForeignChain => Some(self.foreign_chain(snap)),
            Kind::ForeignSet => Some(self.foreign_set(snap)),
            Kind::TableDormant => {
                (!snap.dormant).then(|| Damage::new(kind, format!("add table {T} {{ flags dormant; }}\n")))
            }
            Kind::PolicyDrop => {
                let open: Vec<&ChainInfo> = snap
                    .chains
                    .iter()
                    .filter(|c| c.base.as_ref().is_some_and(|b| b.policy != "drop"))
                    .collect();
                let c = rng.choose(&open)?;
                Some(Damage::new(
                    kind,
                    format!("chain {T} {} {{ policy drop; }}\n", c.name),
                ))
            }
            Kind::RecreateBaseChain => {
                let c = rng.choose(&snap.base_chains())?;
                let base = c.base.as_ref().expect("a base chain");
                let priority = base.priority + rng.pick(&[-10, -5, -1, 1, 5, 10, 50]);
                let mut s = format!(
                    "delete chain {T} {name}\nadd chain {T} {name} {{ type {} hook {} priority {priority}; policy {}; }}\n",
                    base.kind,
                    base.hook,
                    base.policy,
                    name = c.name
                );
                for r in &c.rules {
                    let _ = writeln!(s, "add rule {T} {} {}", c.name, r.text);
                }
                Some(Damage::new(kind, s))
            }
            Kind::SetFlags => self.set_flags(snap),
            Kind::ObjectComment => self.object_comment(snap),
            Kind::ForeignStaleElement => self.foreign_stale(snap),
            Kind::DeleteObject => self.delete_object(snap),
            Kind::ChangeLimit => self.change_limit(snap),
            Kind::ForeignObjectElement => self.foreign_object_element(snap),
            Kind::MarkerRemoved | Kind::MarkerReplaced => Some(self.marker(kind, snap)),
        }
    }

    /// Delete a counter or limit, and the object-map elements that name it first.
    fn delete_object(&mut self, snap: &Snapshot) -> Option<Damage> {
        let objects: Vec<&ObjInfo> = snap
            .objects
            .iter()
            .filter(|o| {
                snap.elems_naming(&o.name)
                    .iter()
                    .all(|(set, _)| set.is_writable())
            })
            .collect();
        let o = self.rng.choose(&objects)?;
        let mut s = String::new();
        for (set, e) in snap.elems_naming(&o.name) {
            let _ = writeln!(s, "delete element {T} {} {{ {} }}", set.name, e.key);
        }
        let _ = writeln!(s, "delete {} {T} {}", o.kind, o.name);
        Some(Damage::new(Kind::DeleteObject, s))
    }

    /// Make a limit another one: the elements naming it go, the limit is made again with another
    /// rate (or a byte rate, or without `over`), and the elements come back.
    fn change_limit(&mut self, snap: &Snapshot) -> Option<Damage> {
        let limits: Vec<&ObjInfo> = snap
            .objects
            .iter()
            .filter(|o| o.kind == "limit")
            .filter(|o| {
                snap.elems_naming(&o.name)
                    .iter()
                    .all(|(set, _)| set.is_writable())
            })
            .collect();
        let o = self.rng.choose(&limits)?;
        let rate = *self.rng.pick(&[
            "rate over 7/second burst 3 packets",
            "rate over 1/minute",
            "rate 50/second",
            "rate over 10 mbytes/second",
        ]);
        let refs = snap.elems_naming(&o.name);
        let mut s = String::new();
        for (set, e) in &refs {
            let _ = writeln!(s, "delete element {T} {} {{ {} }}", set.name, e.key);
        }
        let _ = writeln!(s, "delete limit {T} {}", o.name);
        let _ = writeln!(s, "add limit {T} {} {{ {rate}; }}", o.name);
        for (set, e) in &refs {
            let _ = writeln!(s, "add element {T} {} {{ {} }}", set.name, e.text);
        }
        Some(Damage::new(Kind::ChangeLimit, s))
    }

    /// A new port in an object map, naming an object of the right type: counted (or capped)
    /// without a forward.
    fn foreign_object_element(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let v6 = rng.percent(40);
        let map_name = *rng.pick(&if v6 {
            ["conn6", "traffic6", "limit6"]
        } else {
            ["conn4", "traffic4", "limit4"]
        });
        let (map_name, key_head) = twin(rng, map_name, v6);
        let map = snap.writable(&map_name)?;
        let kind = if map_name.starts_with("limit") {
            "limit"
        } else {
            "counter"
        };
        let objects: Vec<&ObjInfo> = snap.objects.iter().filter(|o| o.kind == kind).collect();
        let o = rng.choose(&objects)?;
        let key = format!(
            "{key_head}{} . {}",
            rng.pick(&["tcp", "udp"]),
            rng.between(40_000, 60_000)
        );
        if map.has(&key) {
            return None;
        }
        Some(Damage::new(
            Kind::ForeignObjectElement,
            format!("add element {T} {map_name} {{ {key} : \"{}\" }}\n", o.name),
        ))
    }

    fn foreign_dnat(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let v6 = rng.percent(40);
        let (name, key_head) = twin(rng, if v6 { "dnat6" } else { "dnat4" }, v6);
        let map = snap.writable(&name)?;
        let key = format!(
            "{key_head}{} . {}",
            rng.pick(&["tcp", "udp"]),
            rng.between(40_000, 60_000)
        );
        if map.has(&key) {
            return None;
        }
        let comment = *rng.pick(&[None, Some("intruder"), Some("intruder: added by hand")]);
        let data = format!("{} . {}", lan_host(rng, v6), rng.between(1, 65_535));
        Some(Damage::new(
            Kind::ForeignDnatElement,
            format!(
                "add element {T} {} {{ {} }}\n",
                map.name,
                elem_text(&key, comment, Some(&data))
            ),
        ))
    }

    fn foreign_mapping_element(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let maps: Vec<&SetInfo> = ["dnat4", "dnat6", "dnat4_addr", "dnat6_addr"]
            .iter()
            .filter_map(|m| snap.writable(m))
            .collect();
        let from = rng.choose(&maps)?;
        let named: Vec<&Elem> = from.elems.iter().filter(|e| e.comment.is_some()).collect();
        let e = rng.choose(&named)?;
        // Mostly the mapping's own family; sometimes the other map, so it has elements in both.
        let into = if rng.percent(70) { from } else { rng.choose(&maps)? };
        let key_head = if into.name.ends_with("_addr") {
            format!(
                "{} . ",
                if into.is_v6() {
                    WAN6.to_string()
                } else {
                    WAN.to_string()
                }
            )
        } else {
            String::new()
        };
        let key = format!(
            "{key_head}{} . {}",
            rng.pick(&["tcp", "udp"]),
            rng.between(40_000, 60_000)
        );
        if into.has(&key) {
            return None;
        }
        let data = format!("{} . {}", lan_host(rng, into.is_v6()), rng.between(1, 65_535));
        Some(Damage::new(
            Kind::ForeignMappingElement,
            format!(
                "add element {T} {} {{ {} }}\n",
                into.name,
                elem_text(&key, e.comment.as_deref(), Some(&data))
            ),
        ))
    }

    fn foreign_guard(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let v6 = rng.percent(40);
        let (guard_name, key_head) = twin(rng, if v6 { "guard6" } else { "guard4" }, v6);
        let guard = snap.writable(&guard_name)?;
        let dnat = snap.set(&guard_name.replace("guard", "dnat"));
        let chains: Vec<String> = snap.regular_chains().iter().map(|c| c.name.clone()).collect();
        let new_port = || format!("{key_head}tcp . {}", 40_000 + (self.serial % 20_000));
        let (key, comment, verdict) = match rng.below(3) {
            // A new port jumping to an existing allow chain.
            0 if !chains.is_empty() => {
                let target = rng.pick(&chains).clone();
                let owner = target.strip_prefix("allow_").map(str::to_owned);
                (new_port(), owner, format!("jump {target}"))
            }
            // A plain mapping's port gets a verdict of its own.
            1 => {
                let plain: Vec<&Elem> = dnat
                    .map(|d| d.elems.iter().filter(|e| !guard.has(&e.key)).collect())
                    .unwrap_or_default();
                let e = rng.choose(&plain)?;
                let verdict = (*rng.pick(&["drop", "accept"])).to_owned();
                let comment = if rng.percent(50) { e.comment.clone() } else { None };
                (e.key.clone(), comment, verdict)
            }
            _ => (new_port(), None, "drop".to_owned()),
        };
        if guard.has(&key) {
            return None;
        }
        self.serial += 1;
        Some(Damage::new(
            Kind::ForeignGuardElement,
            format!(
                "add element {T} {} {{ {} }}\n",
                guard.name,
                elem_text(&key, comment.as_deref(), Some(&verdict))
            ),
        ))
    }

    fn change_element(&mut self, snap: &Snapshot) -> Option<Damage> {
        let full: Vec<&SetInfo> = snap.writable_sets().filter(|s| !s.elems.is_empty()).collect();
        let rng = &mut self.rng;
        let set = rng.choose(&full)?;
        let e = rng.pick(&set.elems).clone();
        let name = set.name.as_str();
        let replacement = if name.starts_with("dnat") {
            let data = e.data.as_deref()?;
            let (host, port) = data.split_once(" . ")?;
            let port: u32 = port.parse().ok()?;
            match rng.below(3) {
                0 => {
                    let other = lan_host(rng, set.is_v6());
                    if other == host {
                        return None;
                    }
                    elem_text(&e.key, e.comment.as_deref(), Some(&format!("{other} . {port}")))
                }
                1 => {
                    let port = if port >= 65_535 { 1 } else { port + 1 };
                    elem_text(&e.key, e.comment.as_deref(), Some(&format!("{host} . {port}")))
                }
                _ => {
                    let comments: Vec<&str> = set.elems.iter().filter_map(|o| o.comment.as_deref()).collect();
                    let mut comment = (*rng.pick(&comments)).to_owned();
                    if Some(comment.as_str()) == e.comment.as_deref() {
                        comment = format!("{comment}: edited");
                    }
                    elem_text(&e.key, Some(&comment), Some(data))
                }
            }
        } else if name.starts_with("guard") {
            let mut verdicts: Vec<String> = vec!["drop".to_owned(), "accept".to_owned()];
            verdicts.extend(snap.regular_chains().iter().map(|c| format!("jump {}", c.name)));
            verdicts.retain(|v| Some(v.as_str()) != e.data.as_deref());
            let verdict = rng.pick(&verdicts);
            elem_text(&e.key, e.comment.as_deref(), Some(verdict))
        } else if name.starts_with("allow_") {
            foreign_prefix(rng, set.is_v6())
        } else if name.starts_with("lan_side") {
            foreign_address(rng, set.is_v6())
        } else if name.ends_with("_ifaces") {
            format!("\"{}\"", rng.pick(&["wan1", "eth7", "ppp0", "br-guest"]))
        } else {
            return None; // a set an earlier damage of this case added
        };
        let new_key = parse_elem(&replacement).key;
        if replacement == e.text || (new_key != e.key && set.has(&new_key)) {
            return None;
        }
        Some(Damage::new(
            Kind::ChangeElement,
            format!(
                "delete element {T} {name} {{ {} }}\nadd element {T} {name} {{ {replacement} }}\n",
                e.key
            ),
        ))
    }

    fn foreign_chain(&mut self, snap: &Snapshot) -> Damage {
        let n = self.next_serial();
        let rng = &mut self.rng;
        let plain = plain_mapping(rng, &self.lab.specs, snap);
        let script = match (rng.below(6), plain) {
            (0, _) => format!("add chain {T} fz{n}\n"),
            (1, _) => format!("add chain {T} fz{n}\nadd rule {T} fz{n} counter\n"),
            (2, _) => format!("add chain {T} allow_ghost{n} {{ comment \"ghost{n}\"; }}\n"),
            (3, Some(name)) => format!("add chain {T} allow_{name} {{ comment \"{name}\"; }}\n"),
            (4, _) => {
                format!("add chain {T} fz{n} {{ type filter hook input priority 0; policy accept; }}\n")
            }
            _ => {
                format!("add chain {T} fz{n} {{ type nat hook prerouting priority -150; policy accept; }}\n")
            }
        };
        Damage::new(Kind::ForeignChain, script)
    }

    fn foreign_set(&mut self, snap: &Snapshot) -> Damage {
        let n = self.next_serial();
        let rng = &mut self.rng;
        let plain = plain_mapping(rng, &self.lab.specs, snap);
        let script = match (rng.below(4), plain) {
            (0, _) => format!("add set {T} fz{n} {{ type ipv4_addr; }}\n"),
            (1, _) => format!("add set {T} fz{n} {{ type inet_service; elements = {{ 22, 80 }}; }}\n"),
            (2, _) => format!("add map {T} fz{n} {{ type inet_service : ipv4_addr; }}\n"),
            (_, Some(name)) => format!(
                "add set {T} allow_{name}_src {{ type ipv4_addr; flags interval; comment \"{name}\"; elements = {{ 100.64.0.0/24 }}; }}\n"
            ),
            (_, None) => format!("add set {T} fz{n} {{ type ipv6_addr; flags interval; }}\n"),
        };
        Damage::new(Kind::ForeignSet, script)
    }

    /// Recreate a set or map with the same elements and one more flag. The chains whose rules use
    /// it are flushed and refilled in order, so only the flags differ.
    fn set_flags(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let plain: Vec<&SetInfo> = snap
            .sets
            .iter()
            .filter(|s| !s.flags.iter().any(|f| f == "timeout" || f == "constant"))
            .collect();
        let set = rng.choose(&plain)?;
        let mut flags = set.flags.clone();
        flags.push((*rng.pick(&["timeout", "constant"])).to_owned());
        Some(Damage::new(
            Kind::SetFlags,
            recreate_set(snap, set, &flags, set.comment.as_deref()),
        ))
    }

    /// Recreate an allow-list's chain or set (or any commented object) with another comment, or
    /// none: the comment is what names the mapping an object belongs to.
    fn object_comment(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let names: Vec<&str> = self.lab.specs.iter().map(|s| s.name.as_str()).collect();
        if rng.percent(50) {
            let sets: Vec<&SetInfo> = snap
                .sets
                .iter()
                .filter(|s| s.name.starts_with("allow_"))
                .collect();
            let set = rng.choose(&sets)?;
            let comment = other_comment(rng, &names, set.comment.as_deref());
            return Some(Damage::new(
                Kind::ObjectComment,
                recreate_set(snap, set, &set.flags, comment.as_deref()),
            ));
        }
        // A chain reached only through map elements (portmap's allow-lists are), so that
        // those can be deleted first and written again after.
        let chains: Vec<&ChainInfo> = snap
            .regular_chains()
            .into_iter()
            .filter(|c| snap.chains.iter().all(|o| o.jumps_to(&c.name).is_empty()))
            .collect();
        let chain = rng.choose(&chains)?;
        let comment = other_comment(rng, &names, chain.comment.as_deref());
        let refs = snap.elems_jumping_to(&chain.name);
        let mut s = String::new();
        for (set, e) in &refs {
            let _ = writeln!(s, "delete element {T} {} {{ {} }}", set.name, e.key);
        }
        let _ = writeln!(s, "delete chain {T} {}", chain.name);
        match &comment {
            Some(c) => {
                let _ = writeln!(s, "add chain {T} {} {{ comment \"{c}\"; }}", chain.name);
            }
            None => {
                let _ = writeln!(s, "add chain {T} {}", chain.name);
            }
        }
        for r in &chain.rules {
            let _ = writeln!(s, "add rule {T} {} {}", chain.name, r.text);
        }
        for (set, e) in &refs {
            let _ = writeln!(s, "add element {T} {} {{ {} }}", set.name, e.text);
        }
        Some(Damage::new(Kind::ObjectComment, s))
    }

    /// A record of a pending conntrack cleanup that no apply wrote: the next apply must finish it
    /// (remove the flows, empty the set) and plan must say so until then.
    fn foreign_stale(&mut self, snap: &Snapshot) -> Option<Damage> {
        let rng = &mut self.rng;
        let v6 = rng.percent(40);
        let set = snap.writable(if v6 { "stale6" } else { "stale4" })?;
        let dnat = snap.set(if v6 { "dnat6" } else { "dnat4" });
        let known: Vec<&Elem> = dnat.map(|d| d.elems.iter().collect()).unwrap_or_default();
        // Mostly an existing forward, named as its mapping; sometimes one nobody has.
        let (key, comment) = match rng.choose(&known) {
            Some(e) if rng.percent(70) => (format!("{} . {}", e.key, e.data.as_deref()?), e.comment.clone()),
            _ => (
                format!(
                    "{} . {} . {} . {}",
                    rng.pick(&["tcp", "udp"]),
                    rng.between(40_000, 60_000),
                    lan_host(rng, v6),
                    rng.between(1, 65_535)
                ),
                rng.percent(50).then(|| "intruder".to_owned()),
            ),
        };
        if set.has(&key) {
            return None;
        }
        Some(Damage::new(
            Kind::ForeignStaleElement,
            format!(
                "add element {T} {} {{ {} }}\n",
                set.name,
                elem_text(&key, comment.as_deref(), None)
            ),
        ))
    }

    /// Recreate the whole table as listed, without its comment or with another one. (The kernel
    /// keeps a table's comment when `add table` names another, so only a new table changes it.)
    fn marker(&mut self, kind: Kind, snap: &Snapshot) -> Damage {
        let replacement = (kind == Kind::MarkerReplaced).then(|| {
            let text = *self
                .rng
                .pick(&["managed by hand", "managed by portmap (edited)", "portmap"]);
            format!("\tcomment \"{text}\"")
        });
        // Only the table's own comment is indented by one tab.
        let listing = snap.loadable();
        let has_comment = listing.lines().any(|l| l.starts_with("\tcomment "));
        let mut s = format!("delete table {T}\n");
        for line in listing.lines() {
            if line.starts_with("\tcomment ") {
                if let Some(r) = &replacement {
                    let _ = writeln!(s, "{r}");
                }
                continue;
            }
            let _ = writeln!(s, "{line}");
            if line.starts_with("table ")
                && !has_comment
                && let Some(r) = &replacement
            {
                let _ = writeln!(s, "{r}");
            }
        }
        Damage::new(kind, s)
    }
}

/// A comment other than `now`: none, another mapping's name, or an edited one.
fn other_comment(rng: &mut Rng, names: &[&str], now: Option<&str>) -> Option<String> {
    let picked = match rng.below(3) {
        0 => None,
        1 => Some((*rng.pick(names)).to_owned()),
        _ => Some(format!("{}: edited", now.unwrap_or("intruder"))),
    };
    if picked.as_deref() != now {
        picked
    } else if now.is_some() {
        None
    } else {
        Some("intruder".to_owned())
    }
}

/// A script that recreates `set` with `flags` and `comment` and its elements. The chains whose rules
/// use it are flushed and refilled in order, so nothing else differs.
fn recreate_set(snap: &Snapshot, set: &SetInfo, flags: &[String], comment: Option<&str>) -> String {
    let users: Vec<&ChainInfo> = snap.chains.iter().filter(|c| c.uses_set(&set.name)).collect();
    let mut s = String::new();
    for c in &users {
        let _ = writeln!(s, "flush chain {T} {}", c.name);
    }
    let _ = write!(
        s,
        "delete {kw} {T} {name}\nadd {kw} {T} {name} {{ type {};",
        set.type_text,
        kw = set.keyword(),
        name = set.name
    );
    if !flags.is_empty() {
        let _ = write!(s, " flags {};", flags.join(","));
    }
    if let Some(c) = comment {
        let _ = write!(s, " comment \"{c}\";");
    }
    if !set.elems.is_empty() {
        let elems: Vec<&str> = set.elems.iter().map(|e| e.text.as_str()).collect();
        let _ = write!(s, " elements = {{ {} }};", elems.join(", "));
    }
    s.push_str(" }\n");
    for c in &users {
        for r in &c.rules {
            let _ = writeln!(s, "add rule {T} {} {}", c.name, r.text);
        }
    }
    s
}

/// A name of a configured mapping without an allow-list whose `allow_<name>` chain and set do not
/// exist.
fn plain_mapping(rng: &mut Rng, specs: &[Spec], snap: &Snapshot) -> Option<String> {
    let plain: Vec<&Spec> = specs
        .iter()
        .filter(|s| {
            s.allow_from.is_empty()
                && snap.chain(&format!("allow_{}", s.name)).is_none()
                && snap.set(&format!("allow_{}_src", s.name)).is_none()
        })
        .collect();
    rng.choose(&plain).map(|s| s.name.clone())
}

/// `map` or, about a third of the time, its addressed twin (`dnat4_addr`, keyed by the public
/// address first): the name, and what a key of it starts with (`203.0.113.1 . `, or nothing).
fn twin(rng: &mut Rng, map: &str, v6: bool) -> (String, String) {
    if rng.percent(33) {
        let wan = if v6 { WAN6.to_string() } else { WAN.to_string() };
        (format!("{map}_addr"), format!("{wan} . "))
    } else {
        (map.to_owned(), String::new())
    }
}

fn lan_host(rng: &mut Rng, v6: bool) -> String {
    if v6 {
        rng.pick(&LAN_HOSTS6).to_string()
    } else {
        rng.pick(&LAN_HOSTS).to_string()
    }
}

/// A prefix no configured allow-list overlaps (they use documentation prefixes only).
fn foreign_prefix(rng: &mut Rng, v6: bool) -> String {
    if v6 {
        format!("fd00:{:x}::/48", rng.between(1, 0xffff))
    } else {
        format!("100.64.{}.0/24", rng.between(0, 255))
    }
}

/// An address outside every LAN-side prefix the router has.
fn foreign_address(rng: &mut Rng, v6: bool) -> String {
    if v6 {
        Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, rng.between(1, 0xffff) as u16).to_string()
    } else {
        Ipv4Addr::new(10, 99, rng.between(0, 255) as u8, rng.between(1, 254) as u8).to_string()
    }
}
