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

mod atomicity;
mod backends;
mod cli;
mod conformance;
mod conntrack;
mod damage;
mod e2e;
mod harness;
mod ipv6;
mod router;
mod scale;
mod trust;
mod warnings;
