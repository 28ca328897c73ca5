//! The integration tests of the `portmap` package, as one test binary: each file here is a module
//! (`cargo test --test it e2e::` runs one of them), so the package's libraries and the test kit
//! (`crates/portmap-testkit`: namespaces, the lab, traffic, listing normalisers) are linked once
//! instead of once per file.
//!
//! What the modules cover, and what they must not do (touch the host's network namespace), is said
//! at the top of each. A new test file belongs here as a module, not next to `tests/it/`: a file
//! directly under `tests/` would become a binary of its own.

use portmap_testkit::Portmap;

/// The binary under test, for the kit's runners (the kit cannot name it: `CARGO_BIN_EXE_portmap`
/// exists only while this package's tests compile).
const PORTMAP: Portmap = Portmap::new(env!("CARGO_BIN_EXE_portmap"));

/// A behaviour test run once for every backend: `fn name(t) { … }` becomes module `name` with the
/// tests `nft`, `iptables_legacy` and `iptables_nft`, each giving the body a fresh lab whose
/// `portmap` runs pass that `--backend`. What differs between backends is in the kit, in each
/// backend's own terms (`Topology::kernel`, `owned`, `foreign`, `load_foreign`, `damage`); checks
/// of one backend's own listing go under `if t.is_nft()`.
macro_rules! every_backend {
    ($(#[doc = $doc:literal])* fn $name:ident($t:ident) $body:block) => {
        every_backend!(@lab new [nft "nft", iptables_legacy "iptables-legacy", iptables_nft "iptables-nft"];
            $(#[doc = $doc])* fn $name($t) $body);
    };
    // `ipv6;` first: the lab of `Topology::with_ipv6`.
    (ipv6; $(#[doc = $doc:literal])* fn $name:ident($t:ident) $body:block) => {
        every_backend!(@lab with_ipv6 [nft "nft", iptables_legacy "iptables-legacy", iptables_nft "iptables-nft"];
            $(#[doc = $doc])* fn $name($t) $body);
    };
    // The module for a list of backends: a test named `$test` per `--backend $backend`.
    (@lab $make:ident [$($test:ident $backend:literal),+]; $(#[doc = $doc:literal])* fn $name:ident($t:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            // The test's body: unwrap is as welcome here as in the #[test] functions below.
            #[allow(clippy::unwrap_used)]
            fn check($t: &portmap_testkit::Topology) $body

            fn lab(backend: &'static str) -> portmap_testkit::Topology {
                portmap_testkit::Topology::$make(crate::PORTMAP, stringify!($name)).with_backend(backend)
            }

            $(
                #[test]
                fn $test() {
                    portmap_testkit::require_root!();
                    check(&lab($backend));
                }
            )+
        }
    };
}

mod atomicity;
mod backends;
mod boot;
mod cli;
mod conformance;
mod conntrack;
mod conventions;
mod counters;
mod damage;
mod damage_iptables;
mod e2e;
mod expires;
mod explain;
mod fleet;
mod harness;
mod import;
mod iptables;
mod ipv6;
mod json;
mod listen;
mod locking;
mod memo;
mod router;
mod scale;
mod sources;
mod trust;
mod units;
mod warnings;
mod watch;
