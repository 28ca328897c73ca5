//! The `Backend` trait: what every kernel backend (nft, iptables) offers, and [`Netns`], the plain
//! value that says which network namespace a backend works in. Backends live in their own crates;
//! the orchestration every backend shares (observe → plan → commit → verify → retry → clear flows)
//! is written once, generic over this trait, in the `portmap` facade. This module does no I/O.

use std::fmt;
use std::path::PathBuf;

use crate::model::{Model, Observed};
use crate::plan::{Plan, StaleFlows};

/// What a commit did, for people and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Kernel messages (nft) or restore lines (iptables) sent in the transaction (0 when the plan
    /// changed nothing in the kernel).
    pub messages: usize,
    /// Kernel objects touched (tables, chains, rules, sets, elements added or deleted).
    pub objects: usize,
    /// Whether the whole table was (re)built rather than changed in place.
    pub rebuilt: bool,
    /// Tracked connections removed because the plan made them stale.
    pub flows_cleared: usize,
    /// The ruleset generation the commit left, as the backend knows it from the commit itself
    /// (`None` when the commit changed nothing, or the backend cannot tell). An observation right
    /// after that shows another generation means another program wrote in between.
    #[serde(default)]
    pub generation: Option<u32>,
}

impl ApplyReport {
    /// A report of `messages` messages touching `objects` objects.
    pub fn new(messages: usize, objects: usize, rebuilt: bool) -> Self {
        ApplyReport {
            messages,
            objects,
            rebuilt,
            flows_cleared: 0,
            generation: None,
        }
    }

    /// The report, saying the commit left the ruleset at `generation`.
    #[must_use]
    pub fn at_generation(mut self, generation: u32) -> Self {
        self.generation = Some(generation);
        self
    }
}

/// Which network namespace a backend reads and writes. A plain value: naming one opens nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Netns {
    /// The namespace of the calling process.
    #[default]
    Current,
    /// A namespace created with `ip netns add NAME`: `/run/netns/NAME`.
    Named(String),
    /// A namespace file, e.g. `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl Netns {
    /// What a command line gives: a name, or a path when it contains `/`.
    pub fn from_arg(arg: &str) -> Self {
        if arg.contains('/') {
            Netns::Path(PathBuf::from(arg))
        } else {
            Netns::Named(arg.to_owned())
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("(current)"),
            Netns::Named(name) => f.write_str(name),
            Netns::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A kernel backend: reads the owned state back, commits plans, and prints the ruleset it builds.
/// It decides nothing: planning, verifying, retrying and clearing flows are the caller's.
pub trait Backend {
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Short name (`nft`, `iptables-legacy`, …).
    fn name(&self) -> &'static str;

    /// Read the owned state back into mappings and structure health. Changes nothing.
    fn observe(&mut self) -> Result<Observed, Self::Error>;

    /// What [`Backend::observe`] returns, for planning an apply: the counters may be missing. A
    /// backend may answer from what it remembers of its table when the kernel shows that nothing
    /// has changed since it last read or wrote it (nft's memo); the default reads.
    fn observe_to_plan(&mut self) -> Result<Observed, Self::Error> {
        self.observe()
    }

    /// The ruleset's generation now, read on its own (one small request), when the backend has a
    /// generation every committed transaction moves by exactly one (nft). `None` (the default)
    /// when it has none that is cheaper to read than [`Backend::observe`]; the caller then reads
    /// everything back to verify a commit.
    fn generation(&mut self) -> Result<Option<u32>, Self::Error> {
        Ok(None)
    }

    /// Commit a plan in one transaction (as far as the backend's kernel interface has one) and
    /// nothing else: no read-back, no cleanup. A plan made at a generation the kernel has moved past
    /// is refused, with an error for which [`Backend::is_stale`] is true. `record` lists the
    /// tracked connections the caller will remove once the transaction landed; the transaction
    /// records them too (beside [`Plan::pending_flows`], which stay recorded), so that if the
    /// caller dies before [`Backend::clear_flows`], the next `observe` reports them as pending.
    /// The report carries the generation the commit left ([`ApplyReport::generation`]) when the
    /// backend knows it, so the caller can tell its own change from another writer's.
    fn commit(&mut self, plan: &Plan, record: &[StaleFlows]) -> Result<ApplyReport, Self::Error>;

    /// Whether `error` (from [`Backend::commit`]) means another program changed the ruleset since
    /// the plan was made, so that planning afresh may succeed.
    fn is_stale(error: &Self::Error) -> bool;

    /// Remove the tracked connections the kernel DNAT-ed through these forwards (after a commit
    /// changed or removed them), so their next packet meets the new rules. Returns how many went.
    fn clear_flows(&mut self, stale: &[StaleFlows]) -> Result<usize, Self::Error>;

    /// Drop the record of pending tracked-connection cleanups (after [`Backend::clear_flows`] did
    /// them, or when the caller chose to keep the connections).
    fn forget_flows(&mut self) -> Result<(), Self::Error>;

    /// The ruleset `commit` builds for `model`, as text the native tool loads (`nft -f`,
    /// `iptables-restore`). It may read facts about the router the configuration does not hold
    /// (e.g. its LAN-side addresses).
    fn render(&self, model: &Model) -> Result<String, Self::Error>;

    /// Remove the owned table (chains) and everything in it. Returns false when there was nothing
    /// to remove. A table portmap did not create is refused, never removed.
    fn destroy(&mut self) -> Result<bool, Self::Error>;

    /// The tracked connections (conntrack entries) of the backend's network namespace, both
    /// families, as [`crate::Observed::count_flows`] counts them per mapping; `None` when the
    /// backend cannot read them (the default).
    fn tracked_flows(&mut self) -> Result<Option<Vec<crate::plan::TrackedFlow>>, Self::Error> {
        Ok(None)
    }
}
