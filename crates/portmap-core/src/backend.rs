//! The `Backend` trait: what every kernel backend (nft now, iptables later) offers. Backends live in
//! their own crates; this crate only names the contract so the facade can choose one by enum.

use crate::model::{Model, Observed};
use crate::plan::Plan;

/// What an apply did, for people and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyReport {
    /// Kernel messages sent in the transaction (0 when the plan was empty).
    pub messages: usize,
    /// Kernel objects touched (tables, chains, rules, sets, elements added or deleted).
    pub objects: usize,
    /// Whether the whole table was (re)built rather than changed in place.
    pub rebuilt: bool,
    /// Tracked connections removed because the plan made them stale.
    pub flows_cleared: usize,
}

/// A kernel backend: reads the owned state back, carries out plans, and prints the ruleset it builds.
pub trait Backend {
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Short name (`nft`).
    fn name(&self) -> &'static str;

    /// Read the owned table back into mappings and structure health. Changes nothing.
    fn observe(&mut self) -> Result<Observed, Self::Error>;

    /// Carry out a plan in one kernel transaction; all of it lands or none of it does. A plan made at
    /// a generation the kernel has moved past is refused. `record` lists the tracked connections
    /// the caller will remove once the transaction landed; the transaction records them too
    /// (beside [`Plan::pending_flows`], which stay recorded), so that if the caller dies before
    /// [`Backend::clear_flows`], the next `observe` reports them as pending.
    fn apply(&mut self, plan: &Plan, record: &[crate::plan::StaleFlows]) -> Result<ApplyReport, Self::Error>;

    /// Remove the tracked connections the kernel DNAT-ed through these forwards (after an apply
    /// changed or removed them), so their next packet meets the new rules. Returns how many went.
    fn clear_flows(&mut self, stale: &[crate::plan::StaleFlows]) -> Result<usize, Self::Error>;

    /// Drop the record of pending tracked-connection cleanups (after [`Backend::clear_flows`] did
    /// them, or when the caller chose to keep the connections).
    fn forget_flows(&mut self) -> Result<(), Self::Error>;

    /// The ruleset `apply` builds for `model`, as text the native tool loads (`nft -f`). It may read
    /// facts about the router the configuration does not hold (e.g. its LAN-side addresses).
    fn render(&self, model: &Model) -> Result<String, Self::Error>;

    /// Remove the owned table and everything in it. Returns false when there was nothing to remove.
    fn destroy(&mut self) -> Result<bool, Self::Error>;
}
