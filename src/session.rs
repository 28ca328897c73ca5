//! The orchestration every backend shares, written once and generic over [`Backend`]: observe →
//! plan → (approve) → commit → read back and verify → retry when another writer got in between →
//! clear the tracked connections the plan made stale (recorded in the commit, so that a process
//! killed in between leaves the next apply a note to finish). Backends only observe, commit and
//! remove flows; nothing here knows nft or iptables.

use std::borrow::Cow;
use std::time::Instant;

use portmap_core::{ApplyReport, Backend, Model, Observed, Place, Plan, Refusal, StaleFlows};

/// What has to change for the kernel to match `model` ([`portmap_core::plan()`]: pure, cannot
/// fail), with a `tracing` event saying how many changes and how long planning took (`info`) and
/// one per change (`debug`).
pub fn plan(model: &Model, observed: &Observed) -> Plan {
    let started = Instant::now();
    logged(portmap_core::plan(model, observed), started)
}

/// [`plan()`] taking the model by value ([`portmap_core::plan_owned`]): the plan holds it as its
/// desired state instead of a copy, for a caller that does not need it afterwards.
pub fn plan_owned(model: Model, observed: &Observed) -> Plan {
    let started = Instant::now();
    logged(portmap_core::plan_owned(model, observed), started)
}

/// `plan`, made since `started`, after the `tracing` events of [`plan()`].
fn logged(plan: Plan, started: Instant) -> Plan {
    let portmap_core::Counts {
        create,
        update,
        repair,
        delete,
    } = plan.counts();
    tracing::info!(
        create,
        update,
        delete,
        repair,
        table_action = ?plan.table_action,
        elapsed = ?started.elapsed(),
        "planned"
    );
    for change in &plan.changes {
        let kind = match change {
            portmap_core::Change::Create { .. } => "create",
            portmap_core::Change::Update { .. } => "update",
            portmap_core::Change::Repair { .. } => "repair",
            portmap_core::Change::Delete { .. } => "delete",
        };
        tracing::debug!(mapping = change.name(&plan.desired), kind, "planned change");
    }
    plan
}

use crate::Error;

/// How many times [`Session::converge`] plans and commits afresh when another program changes the
/// ruleset between portmap's read and its transaction.
pub const CONVERGE_ATTEMPTS: usize = 3;

/// How to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Leave tracked connections alone: flows of changed or removed mappings keep going to their
    /// old target until they end (`apply --keep-conntrack`).
    pub keep_conntrack: bool,
    /// How a commit is checked (`apply --verify`).
    pub verify: Verify,
}

impl ApplyOptions {
    /// Options with `keep_conntrack` set as given.
    pub fn keep_conntrack(keep: bool) -> Self {
        ApplyOptions {
            keep_conntrack: keep,
            ..ApplyOptions::default()
        }
    }

    /// These options with `verify` set as given.
    #[must_use]
    pub fn verify(self, verify: Verify) -> Self {
        ApplyOptions { verify, ..self }
    }
}

/// How [`Session::apply`] checks that a commit left the kernel as planned.
///
/// The kernel checks the generation a transaction was planned at and applies it whole or not at
/// all, and every committed transaction moves the generation by exactly one. So when the
/// generation right after the commit is the one the commit left, nobody else has written since
/// and the kernel holds exactly the observed state with the plan's changes made: reading it all
/// back again would find what was planned (and costs as much as the first read — at 10,000
/// mappings most of a one-mapping change). Reading back is still what happens when the backend has
/// no such generation (iptables), when another writer got in between, and always with
/// [`Verify::ReadBack`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// Trust the generation when nobody else wrote; read back otherwise (the default).
    #[default]
    Generation,
    /// Always read the whole table back and require an empty plan (`apply --verify read-back`):
    /// checks portmap's own transaction too, at the cost of a second full read.
    ReadBack,
}

/// What [`Session::destroy`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Destroyed {
    /// Mappings the table held.
    pub mappings: usize,
    /// Tracked connections removed with them.
    pub flows_cleared: usize,
}

/// What [`Session::converge`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The plan that was carried out (empty when nothing had to change).
    pub plan: Plan,
    /// What the transaction touched.
    pub report: ApplyReport,
    /// How many times portmap planned (more than 1 when another program changed the ruleset in
    /// between).
    pub attempts: usize,
}

/// A backend and the orchestration around it.
#[derive(Debug)]
pub struct Session<B> {
    backend: B,
}

/// A backend error as the facade reports it; a stale commit becomes [`Refusal::Stale`].
fn backend_error<B: Backend>(error: B::Error, planned: Option<u32>) -> Error {
    match planned {
        Some(planned) if B::is_stale(&error) => Refusal::Stale { planned }.into(),
        _ => Error::Backend(Box::new(error)),
    }
}

impl<B: Backend> Session<B> {
    /// Orchestrate `backend`.
    pub fn new(backend: B) -> Self {
        Session { backend }
    }

    /// The backend, for what the orchestration does not cover.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Read the owned state back.
    pub fn observe(&mut self) -> Result<Observed, Error> {
        self.observe_with(B::observe, false)
    }

    /// [`Backend::observe_to_plan`]: what the backend observes or, when the kernel shows nothing
    /// changed since it last read or wrote its table, remembers.
    pub fn observe_to_plan(&mut self) -> Result<Observed, Error> {
        self.observe_with(B::observe_to_plan, true)
    }

    /// Observe with `read`, saying at `-v` what was found and how long it took.
    fn observe_with(
        &mut self,
        read: fn(&mut B) -> Result<Observed, B::Error>,
        to_plan: bool,
    ) -> Result<Observed, Error> {
        let started = Instant::now();
        let observed = read(&mut self.backend).map_err(|e| backend_error::<B>(e, None))?;
        tracing::info!(
            backend = self.backend.name(),
            table = %observed.table,
            state = ?observed.state,
            mappings = observed.mappings.len(),
            generation = ?observed.generation,
            elapsed = ?started.elapsed(),
            "{}",
            if to_plan { "observed the kernel (to plan)" } else { "observed the kernel" }
        );
        Ok(observed)
    }

    /// What `portmap status` shows: [`Session::observe`], with every mapping's tracked
    /// connections counted ([`ObservedMapping::active_flows`](portmap_core::ObservedMapping)) when
    /// the backend can read conntrack.
    pub fn status(&mut self) -> Result<Observed, Error> {
        let mut observed = self.observe()?;
        if let Some(flows) = self
            .backend
            .tracked_flows()
            .map_err(|e| backend_error::<B>(e, None))?
        {
            observed.count_flows(&flows);
        }
        Ok(observed)
    }

    /// The ruleset the backend builds for `model`, as its native tool's input.
    pub fn render(&self, model: &Model) -> Result<String, Error> {
        self.backend
            .render(model)
            .map_err(|e| backend_error::<B>(e, None))
    }

    /// Carry out `plan` in one transaction, read the kernel back and require that nothing is left
    /// to do, then remove the tracked connections the plan made stale (so a live flow meets the new
    /// rules on its next packet), together with any an interrupted apply left pending.
    pub fn apply(&mut self, plan: &Plan, options: &ApplyOptions) -> Result<ApplyReport, Error> {
        // The flows this plan makes stale are recorded in its own transaction, so that a process
        // killed before removing them leaves the next apply a note to finish the job.
        let stale = if options.keep_conntrack {
            Vec::new()
        } else {
            plan.stale_flows()
        };
        let started = Instant::now();
        let mut report = self
            .backend
            .commit(plan, &stale)
            .map_err(|e| backend_error::<B>(e, plan.generation))?;
        tracing::info!(
            backend = self.backend.name(),
            messages = report.messages,
            objects = report.objects,
            rebuilt = report.rebuilt,
            elapsed = ?started.elapsed(),
            "sent the transaction"
        );
        if report.messages > 0 && !self.unchanged_since(&report, options.verify)? {
            let observed = self.observe()?;
            let after = portmap_core::plan(&plan.desired, &observed);
            if after.changes_kernel() {
                // The backend says which generation its commit left. The kernel at another one
                // means another writer came after it, and the difference may be theirs; at that
                // one (or when the backend cannot tell), the difference is portmap's own.
                return Err(match report.generation {
                    Some(ours) if observed.generation != Some(ours) => Error::Overtaken(Box::new(after)),
                    _ => Error::NotConverged(Box::new(after)),
                });
            }
        }
        let recorded = !stale.is_empty() || !plan.pending_flows.is_empty();
        if !options.keep_conntrack {
            let all: Vec<StaleFlows> = plan.pending_flows.iter().chain(&stale).cloned().collect();
            let started = Instant::now();
            report.flows_cleared = self
                .backend
                .clear_flows(&all)
                .map_err(|e| backend_error::<B>(e, None))?;
            if !all.is_empty() {
                tracing::info!(
                    forwards = all.len(),
                    removed = report.flows_cleared,
                    elapsed = ?started.elapsed(),
                    "cleared stale tracked connections"
                );
            }
        }
        if recorded {
            self.backend
                .forget_flows()
                .map_err(|e| backend_error::<B>(e, None))?;
        }
        Ok(report)
    }

    /// Whether the kernel is still at the generation `report`'s commit left, so that nobody else
    /// has written since and reading it back can be skipped ([`Verify`]).
    fn unchanged_since(&mut self, report: &ApplyReport, verify: Verify) -> Result<bool, Error> {
        if verify == Verify::ReadBack || report.generation.is_none() {
            return Ok(false);
        }
        let now = self
            .backend
            .generation()
            .map_err(|e| backend_error::<B>(e, None))?;
        let unchanged = now.is_some() && now == report.generation;
        tracing::debug!(generation = ?now, left = ?report.generation, unchanged, "checked the generation after the commit");
        Ok(unchanged)
    }

    /// Apply a plan saved earlier (`portmap plan --out`), after checking it against the kernel as it
    /// is now: it must have been made here (same boot and network namespace), at the generation
    /// the ruleset still has, and planning its desired state afresh must give exactly its changes —
    /// so a plan file edited by hand (a delete added, a `before` altered) is refused, and so is one
    /// the kernel has moved past. Nothing is retried: a refused saved plan is made again.
    pub fn apply_saved(&mut self, saved: &Plan, options: &ApplyOptions) -> Result<ApplyReport, Error> {
        let observed = self.observe()?;
        let here = observed.place.clone().unwrap_or_else(|| Place {
            boot_id: String::new(),
            netns: 0,
        });
        let generation = saved.binding(&observed.backend, &observed.table, &here)?;
        if observed.generation != Some(generation) {
            return Err(Refusal::Stale { planned: generation }.into());
        }
        let fresh = plan(&saved.desired, &observed);
        if !fresh.same_changes(saved) {
            return Err(Error::PlanMismatch(Box::new(fresh)));
        }
        self.apply(saved, options)
    }

    /// Observe, plan and apply `model` in one go (what `portmap apply --auto-approve` does). When
    /// another program changes the ruleset between the read and the transaction, the kernel refuses
    /// the transaction whole and portmap reads and plans again, up to [`CONVERGE_ATTEMPTS`] times.
    pub fn converge(&mut self, model: &Model) -> Result<Outcome, Error> {
        self.converge_approved(model, &ApplyOptions::default(), |_, _| true)
    }

    /// [`Session::converge`] asking `approve` before applying: it is called with each non-empty
    /// plan and the attempt number (1 first) — again only when a fresh plan makes other changes than
    /// the one approved last — and applying stops with [`Error::Declined`] when it says no. An
    /// empty plan is returned without asking.
    pub fn converge_approved(
        &mut self,
        model: &Model,
        options: &ApplyOptions,
        approve: impl FnMut(&Plan, usize) -> bool,
    ) -> Result<Outcome, Error> {
        self.converge_prepared(model, options, approve, |_, _| Ok(()))
    }

    /// [`Session::converge_approved`] calling `prepare` right before each commit with the plan and
    /// the observation it was made from — the exact state the commit changes, since the commit is
    /// refused if the kernel moved past it. An error from `prepare` stops applying with nothing
    /// committed. (`apply --confirm` snapshots the table there.)
    pub fn converge_prepared(
        &mut self,
        model: &Model,
        options: &ApplyOptions,
        approve: impl FnMut(&Plan, usize) -> bool,
        prepare: impl FnMut(&Plan, &Observed) -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        self.converge_desired(Cow::Borrowed(model), options, approve, prepare)
    }

    /// [`Session::converge_prepared`] taking the model by value: the plans hold it as their
    /// desired state instead of a copy (the outcome's plan gives it back), so that a large
    /// configuration is held once.
    pub fn converge_owned(
        &mut self,
        model: Model,
        options: &ApplyOptions,
        approve: impl FnMut(&Plan, usize) -> bool,
        prepare: impl FnMut(&Plan, &Observed) -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        self.converge_desired(Cow::Owned(model), options, approve, prepare)
    }

    fn converge_desired(
        &mut self,
        model: Cow<'_, Model>,
        options: &ApplyOptions,
        mut approve: impl FnMut(&Plan, usize) -> bool,
        mut prepare: impl FnMut(&Plan, &Observed) -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        // The plan applied last (and approved, or making the same changes as the one approved):
        // kept, not copied, so that a large plan is held once.
        let mut approved: Option<Plan> = None;
        // The model until the first plan takes it; after a race, the last plan's desired state.
        let mut model = Some(model);
        for attempt in 1..=CONVERGE_ATTEMPTS {
            // The first plan may come from what the backend remembers, when the kernel shows
            // nothing changed since; after a race the kernel has changed, so it is read.
            let observed = if attempt == 1 {
                self.observe_to_plan()?
            } else {
                self.observe()?
            };
            let plan = match (model.take(), &approved) {
                (Some(Cow::Owned(model)), _) => plan_owned(model, &observed),
                (Some(Cow::Borrowed(model)), _) => plan(model, &observed),
                (None, Some(last)) => plan(&last.desired, &observed),
                (None, None) => unreachable!("every attempt after the first follows an approved plan"),
            };
            if plan.is_empty() {
                return Ok(Outcome {
                    plan,
                    report: ApplyReport::default(),
                    attempts: attempt,
                });
            }
            if !approved.as_ref().is_some_and(|a| a.same_changes(&plan)) && !approve(&plan, attempt) {
                return Err(Error::Declined);
            }
            let plan = approved.insert(plan);
            prepare(plan, &observed)?;
            drop(observed);
            match self.apply(plan, options) {
                Ok(report) => {
                    return Ok(Outcome {
                        plan: approved.take().expect("the plan just applied"),
                        report,
                        attempts: attempt,
                    });
                }
                Err(e) if e.is_race() => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            attempts: CONVERGE_ATTEMPTS,
        })
    }

    /// Remove the owned table, then the tracked connections its forwards had made (unless
    /// `keep_conntrack`). Returns how many mappings were removed, `None` when there was no table.
    pub fn destroy(&mut self, options: &ApplyOptions) -> Result<Option<Destroyed>, Error> {
        let observed = self.observe()?;
        let started = Instant::now();
        let removed = self.backend.destroy().map_err(|e| backend_error::<B>(e, None))?;
        tracing::info!(removed, elapsed = ?started.elapsed(), "destroyed the table");
        if !removed {
            return Ok(None);
        }
        let mut flows_cleared = 0;
        if !options.keep_conntrack {
            let stale: Vec<StaleFlows> = observed
                .mappings
                .iter()
                .flat_map(|m| {
                    m.forwards.iter().map(|&forward| StaleFlows {
                        mapping: m.name.clone(),
                        forward,
                        unless_from: None,
                    })
                })
                .chain(observed.pending_flows.iter().cloned())
                .collect();
            flows_cleared = self
                .backend
                .clear_flows(&stale)
                .map_err(|e| backend_error::<B>(e, None))?;
        }
        Ok(Some(Destroyed {
            mappings: observed.mappings.len(),
            flows_cleared,
        }))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
