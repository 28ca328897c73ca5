//! portmap's test kit: everything the tests of every crate (and the benchmarks) need to run portmap
//! against a real kernel without touching the machine they run on.
//!
//! Its job: make throw-away network namespaces ([`Netns`], removed by its guard even when a test
//! panics; namespaces of killed test processes are swept by the next run) and the lab most tests
//! use ([`Topology`]: an internet client, the router, the LAN; IPv4, and IPv6 on request); run code,
//! servers and clients inside them ([`traffic`]); run programs with a time limit and no terminal
//! ([`command`]), or long-running ones whose log is read as it comes ([`daemon`]); run the
//! `portmap` binary against a namespace ([`Portmap`]); read a ruleset back in a comparable form
//! ([`nft`], [`iptables`]); see, and damage by hand, what the lab's backend wrote in that
//! backend's own terms, so one test runs against every backend ([`kernel`]); know the
//! configuration fixtures under `tests/fixtures/` ([`fixtures`]).
//!
//! What it must not do: touch the host's network namespace. Every address, link, rule and socket lives
//! in a namespace a test created, and the `portmap` binary is only ever started inside such a namespace
//! (with `--netns` pointing at one), so even a binary that ignored `--netns` could not reach the host.
//! Nor may it be a dependency of anything but tests and benchmarks (`[dev-dependencies]`, and
//! `portmap-bench`): it panics instead of returning errors, and it is never published.
//!
//! It knows no portmap crate: a crate's own tests turn a [`Netns`] into that crate's types (e.g.
//! `portmap_netlink::Netns::Named(ns.name().into())`). A kit depending on `portmap-netlink` would be
//! a second copy of it inside portmap-netlink's own tests, with types that do not match.
//!
//! Needs root (`CAP_NET_ADMIN`). Without it every test fails with the reason, unless
//! `PORTMAP_TEST_ALLOW_SKIP=1` is set outside CI, in which case tests that begin with
//! [`require_root!`] print "skipped: needs root" and return.

#![warn(missing_docs)]

pub mod command;
pub mod daemon;
pub mod fixtures;
pub mod iptables;
pub mod kernel;
pub mod netns;
pub mod nft;
pub mod portmap;
pub mod topology;
pub mod traffic;

pub use command::{Run, run};
pub use daemon::{Daemon, Line};
pub use fixtures::{BAD_FIXTURES, BadFixture, GOOD_FIXTURES};
pub use kernel::Damage;
pub use netns::{Netns, veth_pair};
pub use nft::{FOREIGN_TABLE, nft_list, normalize};
pub use portmap::{
    Diagnostic, Portmap, RunOptions, TempDir, change_actions, config, diagnostics, fixture, scalar,
    status_mapping, table_action,
};
pub use topology::{
    CLIENT, CLIENT6, LAN_HOSTS, LAN_HOSTS6, OTHER_CLIENT, OTHER_CLIENT6, ROUTER_LAN, ROUTER_LAN6, Topology,
    WAN, WAN_SECOND, WAN6, WAN6_LINK_LOCAL,
};
pub use traffic::{ConnError, Reply, Server};

/// Environment variable that lets a test run without root print "skipped: needs root" and pass.
pub const ALLOW_SKIP_ENV: &str = "PORTMAP_TEST_ALLOW_SKIP";

/// Whether this process may create network namespaces. Returns `false` (after printing "skipped: needs
/// root") only when `PORTMAP_TEST_ALLOW_SKIP=1` is set and `CI` is not; otherwise a missing privilege is
/// a test failure, so CI can never go green by skipping.
pub fn has_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let allowed = std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1");
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    if allowed && !in_ci {
        eprintln!("skipped: needs root");
        return false;
    }
    panic!(
        "needs root (CAP_NET_ADMIN) to create network namespaces: run the tests as root \
         (e.g. `sudo -E cargo test`), or set {ALLOW_SKIP_ENV}=1 outside CI to skip them"
    );
}

/// First line of every privileged test: `require_root!();` returns early when skipping is explicitly
/// allowed and panics with the reason otherwise (see [`has_root`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::has_root() {
            return;
        }
    };
}
