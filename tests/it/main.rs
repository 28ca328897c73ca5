//! The integration tests of the `portmap` package, as one test binary: each file here is a module
//! (`cargo test --test it e2e::` runs one of them), so the support code and the package's libraries
//! are compiled and linked once instead of once per file.
//!
//! What the modules cover, and what they must not do (touch the host's network namespace), is said
//! at the top of each. A new test file belongs here as a module, not next to `tests/it/`: a file
//! directly under `tests/` would become a binary of its own.

mod support;

mod atomicity;
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
