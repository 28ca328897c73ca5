//! The orchestration of [`Session`] against a fake, in-memory backend (no kernel, no root): plans
//! are committed, verified and retried, stale flows are recorded with the commit, cleared and
//! forgotten, an interrupted cleanup is finished later, and saved plans are checked. The real
//! backends are tested against the kernel elsewhere; this checks the one place that drives them.

use std::cell::Cell;
use std::fmt::Write as _;

use portmap_core::{ApplyReport, Backend, Model, Observed, Place, Plan, Refusal, StaleFlows, plan};

use super::{ApplyOptions, CONVERGE_ATTEMPTS, Session, Verify};
use crate::Error;

#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error("stale generation")]
    Stale,
    #[error("killed after the commit")]
    Killed,
}

/// A kernel that holds the desired state of the last committed plan.
#[derive(Debug, Default)]
struct Fake {
    table: Option<Model>,
    generation: u32,
    pending: Vec<StaleFlows>,
    /// Another writer moves the generation before each of the next N commits…
    interfere: usize,
    /// …and also adds a mapping of its own to portmap's table when this is set.
    interfere_in_table: bool,
    /// Commits land one mapping short.
    drop_one: bool,
    /// Right after the next commit another writer changes portmap's table.
    overtake: bool,
    /// A commit moves the generation by one more than this (as several per-table commits do).
    extra_steps: u32,
    /// Commits do not say which generation they left.
    silent: bool,
    /// The generation can be read on its own (as nft's can), so a commit nobody overtook need
    /// not be read back.
    reads_generation: bool,
    observes: usize,
    /// Clearing flows fails, as if the process died there.
    kill_before_clear: bool,
    commits: usize,
    recorded: Vec<StaleFlows>,
    cleared: Vec<StaleFlows>,
    forgotten: usize,
}

fn here() -> Place {
    Place {
        boot_id: "0b7f7c3e-5c57-4a8e-9b55-1c4e0c1d2e3f".into(),
        netns: 4_026_532_000,
    }
}

/// A mapping another program slipped into portmap's table.
fn intruder() -> portmap_core::Mapping {
    model(&[("intruder", 9999, "192.168.1.9")]).mappings.remove(0)
}

impl Backend for Fake {
    type Error = FakeError;

    fn name(&self) -> &'static str {
        "fake"
    }

    fn observe(&mut self) -> Result<Observed, FakeError> {
        self.observes += 1;
        let mut o = match &self.table {
            None => Observed::missing("fake", "fake portmap", Some(self.generation)),
            Some(m) => Observed::from_model(m, "fake", "fake portmap", Some(self.generation)),
        };
        o.place = Some(here());
        o.pending_flows.clone_from(&self.pending);
        Ok(o)
    }

    fn commit(&mut self, plan: &Plan, record: &[StaleFlows]) -> Result<ApplyReport, FakeError> {
        if self.interfere > 0 {
            self.interfere -= 1;
            self.generation += 1;
            if self.interfere_in_table {
                self.table
                    .get_or_insert_with(Model::default)
                    .mappings
                    .push(intruder());
            }
            return Err(FakeError::Stale);
        }
        if plan.generation != Some(self.generation) {
            return Err(FakeError::Stale);
        }
        if !plan.changes_kernel() {
            return Ok(ApplyReport::default());
        }
        let mut desired = plan.desired.clone();
        if self.drop_one {
            desired.mappings.pop();
        }
        self.table = Some(desired);
        self.generation += 1 + self.extra_steps;
        let left = self.generation;
        self.commits += 1;
        self.pending.extend(record.iter().cloned());
        self.recorded.extend(record.iter().cloned());
        if std::mem::take(&mut self.overtake) {
            self.generation += 1;
            if let Some(t) = &mut self.table {
                t.mappings.push(intruder());
            }
        }
        let report = ApplyReport::new(1, plan.changes.len(), false);
        Ok(if self.silent {
            report
        } else {
            report.at_generation(left)
        })
    }

    fn generation(&mut self) -> Result<Option<u32>, FakeError> {
        Ok(self.reads_generation.then_some(self.generation))
    }

    fn is_stale(error: &FakeError) -> bool {
        matches!(error, FakeError::Stale)
    }

    fn clear_flows(&mut self, stale: &[StaleFlows]) -> Result<usize, FakeError> {
        if self.kill_before_clear {
            return Err(FakeError::Killed);
        }
        self.cleared.extend(stale.iter().cloned());
        Ok(stale.len())
    }

    fn forget_flows(&mut self) -> Result<(), FakeError> {
        self.pending.clear();
        self.forgotten += 1;
        Ok(())
    }

    fn render(&self, _model: &Model) -> Result<String, FakeError> {
        Ok(String::new())
    }

    fn destroy(&mut self) -> Result<bool, FakeError> {
        Ok(self.table.take().is_some())
    }
}

/// A model of `(name, port, target)` TCP mappings on WAN `wan0`.
fn model(mappings: &[(&str, u16, &str)]) -> Model {
    let mut yaml = String::from("wan: { interfaces: [wan0] }\nmappings:\n");
    for (name, port, to) in mappings {
        let _ = writeln!(yaml, "  - {{ name: {name}, port: {port}, to: {to} }}");
    }
    portmap_core::load_str(&yaml, "test").expect("valid model")
}

fn session(fake: Fake) -> Session<Fake> {
    Session::new(fake)
}

#[test]
fn converge_commits_once_verifies_and_clears_what_the_plan_made_stale() {
    let mut s = session(Fake::default());
    let first = model(&[("web", 8080, "192.168.1.66")]);
    let outcome = s.converge(&first).expect("create");
    assert_eq!((outcome.attempts, s.backend().commits), (1, 1));
    assert!(s.backend().recorded.is_empty(), "a create makes nothing stale");

    let moved = model(&[("web", 8080, "192.168.1.67")]);
    let outcome = s.converge(&moved).expect("retarget");
    assert_eq!(outcome.report.flows_cleared, 1);
    let fake = s.backend();
    assert_eq!(fake.recorded.len(), 1, "recorded in the commit");
    assert_eq!(fake.cleared, fake.recorded, "then cleared");
    assert!(fake.pending.is_empty(), "and forgotten");
    assert_eq!(fake.forgotten, 1);
    assert!(s.converge(&moved).expect("again").plan.is_empty());
}

#[test]
fn converge_plans_again_when_another_writer_wins_the_race() {
    let mut s = session(Fake {
        interfere: CONVERGE_ATTEMPTS - 1,
        ..Fake::default()
    });
    let asked = Cell::new(0);
    let outcome = s
        .converge_approved(
            &model(&[("web", 8080, "192.168.1.66")]),
            &ApplyOptions::default(),
            |_, _| {
                asked.set(asked.get() + 1);
                true
            },
        )
        .expect("third time lucky");
    assert_eq!(outcome.attempts, CONVERGE_ATTEMPTS);
    assert_eq!(asked.get(), 1, "the same changes are not asked for again");
    assert_eq!(s.backend().commits, 1);
}

#[test]
fn converge_gives_up_after_the_last_attempt_and_says_so() {
    let mut s = session(Fake {
        interfere: CONVERGE_ATTEMPTS,
        ..Fake::default()
    });
    let err = s
        .converge(&model(&[("web", 8080, "192.168.1.66")]))
        .expect_err("always overtaken");
    assert!(
        matches!(err, Error::Contended { attempts } if attempts == CONVERGE_ATTEMPTS),
        "{err:?}"
    );
    assert!(err.to_string().contains("tried 3 times"), "{err}");
    assert!(!err.to_string().contains("Some("), "{err}");
    assert_eq!(s.backend().commits, 0);
}

#[test]
fn a_fresh_plan_with_other_changes_is_asked_for_again_and_may_be_declined() {
    let mut s = session(Fake {
        interfere: 1,
        interfere_in_table: true,
        ..Fake::default()
    });
    let mut seen = Vec::new();
    let err = s
        .converge_approved(
            &model(&[("web", 8080, "192.168.1.66")]),
            &ApplyOptions::default(),
            |plan, attempt| {
                seen.push((attempt, plan.changes.len()));
                attempt == 1
            },
        )
        .expect_err("the second plan is declined");
    assert!(matches!(err, Error::Declined), "{err:?}");
    // The intruder's mapping makes the second plan delete it too: other changes, asked again.
    assert_eq!(seen, [(1, 1), (2, 2)]);
    assert_eq!(s.backend().commits, 0);
}

#[test]
fn a_commit_that_does_not_converge_is_an_error_and_an_overtaken_one_is_retried() {
    let mut s = session(Fake {
        drop_one: true,
        ..Fake::default()
    });
    let two = model(&[("web", 8080, "192.168.1.66"), ("mail", 25, "192.168.1.25")]);
    let err = s.converge(&two).expect_err("one mapping short");
    assert!(matches!(err, Error::NotConverged(_)), "{err:?}");

    let mut s = session(Fake {
        overtake: true,
        ..Fake::default()
    });
    let outcome = s.converge(&two).expect("planned again after being overtaken");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(s.backend().commits, 2);
    assert!(s.converge(&two).expect("settled").plan.is_empty());
}

#[test]
fn the_generation_the_backend_reports_tells_its_own_commit_from_another_writers() {
    let two = model(&[("web", 8080, "192.168.1.66"), ("mail", 25, "192.168.1.25")]);
    // A commit that moves the generation by three (three per-table commits) and lands a mapping
    // short: portmap's own result, not a race, so it is not retried.
    let mut s = session(Fake {
        extra_steps: 2,
        drop_one: true,
        ..Fake::default()
    });
    let err = s.converge(&two).expect_err("one mapping short");
    assert!(matches!(err, Error::NotConverged(_)), "{err:?}");
    assert_eq!(s.backend().commits, 1, "not retried");

    // The same backend overtaken right after its commit: the kernel is past the generation the
    // commit reported, so portmap plans again.
    let mut s = session(Fake {
        extra_steps: 2,
        overtake: true,
        ..Fake::default()
    });
    let outcome = s.converge(&two).expect("planned again after being overtaken");
    assert_eq!((outcome.attempts, s.backend().commits), (2, 2));
    assert!(s.converge(&two).expect("settled").plan.is_empty());

    // A backend that cannot tell: a difference after its commit is reported as not converged,
    // without claiming another writer.
    let mut s = session(Fake {
        silent: true,
        overtake: true,
        ..Fake::default()
    });
    let err = s.converge(&two).expect_err("differs after the commit");
    assert!(matches!(err, Error::NotConverged(_)), "{err:?}");
    assert_eq!(s.backend().commits, 1);
}

#[test]
fn a_commit_nobody_overtook_is_verified_by_its_generation_and_read_back_on_request() {
    let two = model(&[("web", 8080, "192.168.1.66"), ("mail", 25, "192.168.1.25")]);
    // The generation right after the commit is the one it left: one observation (to plan), no
    // read-back. (A commit that lands short is not caught this way: that is what read-back is
    // for, and the kernel tests run it.)
    let mut s = session(Fake {
        reads_generation: true,
        drop_one: true,
        ..Fake::default()
    });
    s.converge(&two).expect("trusted by its generation");
    assert_eq!((s.backend().commits, s.backend().observes), (1, 1));

    let mut s = session(Fake {
        reads_generation: true,
        drop_one: true,
        ..Fake::default()
    });
    let options = ApplyOptions::default().verify(Verify::ReadBack);
    let err = s
        .converge_approved(&two, &options, |_, _| true)
        .expect_err("read back: one mapping short");
    assert!(matches!(err, Error::NotConverged(_)), "{err:?}");
    assert_eq!(s.backend().observes, 2);

    // Another writer right after the commit moves the generation: read back, planned again.
    let mut s = session(Fake {
        reads_generation: true,
        overtake: true,
        ..Fake::default()
    });
    let outcome = s.converge(&two).expect("planned again after being overtaken");
    assert_eq!((outcome.attempts, s.backend().commits), (2, 2));
    assert_eq!(
        s.backend().observes,
        3,
        "plan, read back (overtaken), plan again; the second commit is trusted"
    );
    assert!(s.converge(&two).expect("settled").plan.is_empty());
}

#[test]
fn a_cleanup_cut_short_is_finished_by_the_next_apply() {
    let mut s = session(Fake::default());
    s.converge(&model(&[("web", 8080, "192.168.1.66")]))
        .expect("create");
    s.backend().kill_before_clear = true;
    let moved = model(&[("web", 8080, "192.168.1.67")]);
    s.converge(&moved).expect_err("killed before clearing");
    assert_eq!(s.backend().pending.len(), 1, "the record survives");

    s.backend().kill_before_clear = false;
    let p = plan(&moved, &s.observe().expect("observe"));
    assert!(
        !p.changes_kernel() && !p.is_empty(),
        "only the cleanup is left: {p:?}"
    );
    let outcome = s.converge(&moved).expect("finish");
    assert_eq!(outcome.report.flows_cleared, 1);
    assert!(s.backend().pending.is_empty());
    assert_eq!(s.backend().commits, 2, "the cleanup needs no transaction");
}

#[test]
fn keep_conntrack_records_and_clears_nothing() {
    let mut s = session(Fake::default());
    s.converge(&model(&[("web", 8080, "192.168.1.66")]))
        .expect("create");
    let moved = model(&[("web", 8080, "192.168.1.67")]);
    let p = plan(&moved, &s.observe().expect("observe"));
    let report = s.apply(&p, &ApplyOptions::keep_conntrack(true)).expect("apply");
    assert_eq!(report.flows_cleared, 0);
    let fake = s.backend();
    assert!(fake.recorded.is_empty() && fake.cleared.is_empty() && fake.pending.is_empty());
}

#[test]
fn a_saved_plan_is_checked_against_the_kernel_before_it_is_committed() {
    let mut s = session(Fake::default());
    let wanted = model(&[("web", 8080, "192.168.1.66")]);
    let saved = plan(&wanted, &s.observe().expect("observe"));

    let mut elsewhere = saved.clone();
    elsewhere.place = Some(Place { netns: 1, ..here() });
    let err = s
        .apply_saved(&elsewhere, &ApplyOptions::default())
        .expect_err("another namespace");
    assert!(
        matches!(err, Error::Refused(Refusal::WrongPlace { .. })),
        "{err:?}"
    );

    let mut other_table = saved.clone();
    other_table.table = "fake other".into();
    let err = s
        .apply_saved(&other_table, &ApplyOptions::default())
        .expect_err("another table");
    assert!(
        matches!(err, Error::Refused(Refusal::WrongTable { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("made for fake other, but portmap is managing fake portmap"),
        "{err}"
    );

    let mut edited = saved.clone();
    edited.changes.clear();
    let err = s
        .apply_saved(&edited, &ApplyOptions::default())
        .expect_err("edited");
    assert!(matches!(err, Error::PlanMismatch(_)), "{err:?}");

    s.apply_saved(&saved, &ApplyOptions::default())
        .expect("the plan as made");
    let err = s
        .apply_saved(&saved, &ApplyOptions::default())
        .expect_err("the generation moved on");
    assert!(matches!(err, Error::Refused(Refusal::Stale { .. })), "{err:?}");
    assert_eq!(s.backend().commits, 1);
}

#[test]
fn destroy_clears_the_flows_of_every_forward_and_of_pending_records() {
    let mut s = session(Fake::default());
    s.converge(&model(&[
        ("web", 8080, "192.168.1.66"),
        ("mail", 25, "192.168.1.25"),
    ]))
    .expect("create");
    let destroyed = s
        .destroy(&ApplyOptions::default())
        .expect("destroy")
        .expect("there was a table");
    assert_eq!((destroyed.mappings, destroyed.flows_cleared), (2, 2));
    assert!(s.destroy(&ApplyOptions::default()).expect("again").is_none());
}

#[test]
fn converge_prepared_sees_each_observation_before_its_commit_and_can_stop_it() {
    let mut s = session(Fake {
        interfere: 1,
        ..Fake::default()
    });
    let mut seen = Vec::new();
    let outcome = s
        .converge_prepared(
            &model(&[("web", 8080, "192.168.1.66")]),
            &ApplyOptions::default(),
            |_, _| true,
            |plan, observed| {
                // The observation the plan was made from: what the commit is bound to.
                assert_eq!(plan.generation, observed.generation);
                seen.push(observed.generation);
                Ok(())
            },
        )
        .expect("second attempt");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(seen, [Some(0), Some(1)], "called before each commit");

    let before = s.backend().commits;
    let err = s
        .converge_prepared(
            &model(&[("web", 8080, "192.168.1.67")]),
            &ApplyOptions::default(),
            |_, _| true,
            |_, _| Err(Error::Declined),
        )
        .expect_err("stopped");
    assert!(matches!(err, Error::Declined), "{err}");
    assert_eq!(s.backend().commits, before, "nothing was committed");
}
