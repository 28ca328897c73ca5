//! How much the binary says on standard error: `-q` only errors; by default errors, warnings and
//! notices (a lock being waited for); `-v` also what was read, planned and sent, with timings (the
//! `info` events of the library and of this binary); `-vv` debug detail; `-vvv` everything.
//! `PORTMAP_LOG` (a `tracing` filter such as `portmap=debug`) overrides the flags. Standard output
//! is never touched: it carries the command's result alone.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// Set by `-q`: warnings and notices are left out.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether `-q` was given.
pub(crate) fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Set up logging for `-v` given `verbose` times, or `-q`.
pub(crate) fn init(verbose: u8, quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    // The workspace's crates at the chosen level, everything else (dependencies) at warn at most.
    let default = if verbose >= 3 {
        level.to_owned()
    } else {
        format!(
            "{base},portmap={level},portmap_core={level},portmap_nft={level},portmap_netlink={level},portmap_iptables={level}",
            base = if quiet { "error" } else { "warn" }
        )
    };
    // A bad PORTMAP_LOG is no reason to fail: the flags' filter is used instead.
    let filter = match std::env::var("PORTMAP_LOG") {
        Ok(text) if !text.trim().is_empty() => {
            EnvFilter::try_new(&text).unwrap_or_else(|_| EnvFilter::new(&default))
        }
        _ => EnvFilter::new(&default),
    };
    let color = crate::use_color(&std::io::stderr());
    // `try_init`: logging that cannot be set up is no reason to fail (`init` would panic).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .with_target(verbose >= 2)
        .try_init();
}

/// A warning or notice on standard error, unless `-q`.
pub(crate) fn notice(text: &str) {
    if !quiet() {
        crate::tell(text);
    }
}
