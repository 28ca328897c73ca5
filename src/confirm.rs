//! Confirm-or-rollback (`apply --confirm SECONDS`): the state of portmap's table before a change
//! is kept under the run directory, and unless the change is confirmed in time, the table is put
//! back as it was — by a process that does not depend on the one that applied (the `portmap`
//! binary starts a detached watchdog that calls [`Confirmation::wait_deadline`]).
//!
//! One record per lock key ([`LockKey`]: namespace identity, backend family, table) in
//! `RUN/confirm/STEM.json` ([`Pending`]): the snapshot (`before`, a configuration, or none when
//! there was no table, whose restore is a destroy), what the apply made (`applied`), the deadline
//! and the watchdog. Whoever settles it — `portmap confirm`, the watchdog at the deadline,
//! `portmap rollback` — holds the write lock, so the first one decides and the others find nothing
//! pending. Settling writes `RUN/confirm/STEM.last.json` ([`Settled`], what `status` and
//! `confirm` report) and a line in `RUN/confirm.log`.
//!
//! A rollback restores the snapshot only when the table still holds exactly what the confirmed
//! apply made (compared as mappings and settings, not by ruleset generation, which any write
//! moves): a change someone made in between is never clobbered, and the record says so.
//!
//! Files are written `0600` in `0700` directories, replaced by rename, read with a size bound.
//! This module spawns no process (the binary does) and never changes the kernel but through
//! [`Session`].

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portmap_core::{
    Backend, Config, MAX_PLAN_BYTES, Model, NotRestorable, Observed, plan, restorable, validate,
};
use serde::{Deserialize, Serialize};

use crate::lock::{self, Lock, LockError, LockKey, RunDir, shown_duration};
use crate::{ApplyOptions, CONVERGE_ATTEMPTS, Error, Session};

/// Version of the record files.
pub const RECORD_VERSION: u32 = 1;

/// Longest confirmation window `apply --confirm` accepts (a day).
pub const MAX_CONFIRM_SECONDS: u64 = 86_400;

/// How often a waiting watchdog looks at its record (to notice a confirmation).
pub const WATCHDOG_POLL: Duration = Duration::from_millis(200);

/// A process, told apart from a later one that got the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl ProcessId {
    /// `pid` as it runs now, `None` when there is no such (live) process.
    pub fn of(pid: u32) -> Option<Self> {
        lock::process_stat(pid)
            .filter(|(state, _)| *state != 'Z' && *state != 'X')
            .map(|(_, start)| ProcessId { pid, start })
    }

    /// Whether this very process still runs.
    pub fn alive(self) -> bool {
        ProcessId::of(self.pid) == Some(self)
    }
}

/// A change applied with `--confirm` and not settled yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// Unique id of this confirmation (the watchdog acts only on its own).
    pub id: String,
    /// The backend as `--backend` names it (`nft`, `iptables-legacy`, `iptables-nft`).
    pub backend: String,
    /// The table (or chain prefix) as `--table` gave it.
    pub table: String,
    /// The namespace's inode (`net:[INODE]`), for people.
    pub netns: u64,
    /// The boot the record belongs to.
    pub boot_id: String,
    /// The command that applied the change.
    pub command: String,
    /// When it was applied (ms after the Unix epoch).
    pub applied_unix_ms: u64,
    /// The deadline on the wall clock (ms after the Unix epoch), for people.
    pub deadline_unix_ms: u64,
    /// The deadline on `CLOCK_BOOTTIME` (ms after boot), what the watchdog goes by: no jump of the
    /// wall clock moves it.
    pub deadline_boot_ms: u64,
    /// The process that rolls the change back at the deadline, once it is started.
    pub watchdog: Option<ProcessId>,
    /// What the table held before: the configuration that rebuilds it, `None` for no table.
    pub before: Option<Config>,
    /// What the apply made.
    pub applied: Config,
}

impl Pending {
    /// Time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_boot_ms.saturating_sub(boot_ms()))
    }

    /// Whether the watchdog that will roll the change back still runs.
    pub fn watchdog_alive(&self) -> bool {
        self.watchdog.is_some_and(ProcessId::alive)
    }

    /// One sentence for `status`, `confirm` and refusals.
    pub fn describe(&self) -> String {
        let watchdog = match self.watchdog {
            Some(w) if w.alive() => format!("the watchdog (pid {}) rolls it back then", w.pid),
            Some(w) => format!(
                "but its watchdog (pid {}) is gone, so nothing will roll it back by itself: `portmap confirm` keeps it, `portmap rollback` undoes it",
                w.pid
            ),
            None => {
                "but no watchdog was started for it: `portmap confirm` keeps it, `portmap rollback` undoes it"
                    .to_owned()
            }
        };
        let left = self.remaining();
        let when = if left.is_zero() {
            format!("its deadline ({}) has passed", timestamp(self.deadline_unix_ms))
        } else {
            format!(
                "unless confirmed within {} (by {}), {watchdog}",
                shown_duration(left),
                timestamp(self.deadline_unix_ms)
            )
        };
        let restores = match &self.before {
            None => "no table (it would be removed)".to_owned(),
            Some(c) if c.mappings.len() == 1 => "1 mapping".to_owned(),
            Some(c) => format!("{} mappings", c.mappings.len()),
        };
        if left.is_zero() {
            format!(
                "a change applied at {} with --confirm ({}) is not confirmed and {when}; {watchdog}; the snapshot holds {restores}",
                timestamp(self.applied_unix_ms),
                self.command
            )
        } else {
            format!(
                "a change applied at {} with --confirm ({}) is waiting: {when}; the snapshot holds {restores}",
                timestamp(self.applied_unix_ms),
                self.command
            )
        }
    }
}

/// How a confirmation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Confirmed: the change stays.
    Confirmed,
    /// Restored to the snapshot.
    RolledBack,
    /// Not restored: the table was changed by someone else after the confirmed apply.
    NotRolledBack,
    /// The rollback was attempted and failed (the record stays pending).
    Failed,
}

impl Verdict {
    /// `confirmed`, `rolled back`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::RolledBack => "rolled back",
            Verdict::NotRolledBack => "NOT rolled back",
            Verdict::Failed => "rollback FAILED",
        }
    }
}

/// The last settled confirmation of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The confirmation's id.
    pub id: String,
    /// How it ended.
    pub verdict: Verdict,
    /// Who settled it: `portmap confirm`, `the watchdog`, `portmap rollback`, the terminal.
    pub by: String,
    /// When (ms after the Unix epoch).
    pub at_unix_ms: u64,
    /// The command that had applied the change.
    pub command: String,
    /// What happened, in a sentence.
    pub detail: String,
}

impl fmt::Display for Settled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} by {}: {}",
            self.verdict.as_str(),
            timestamp(self.at_unix_ms),
            self.by,
            self.detail
        )
    }
}

/// Errors of confirm-or-rollback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfirmError {
    /// The run directory or a lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// What the table holds cannot be restored exactly, so `--confirm` cannot promise a rollback.
    #[error(
        "cannot apply with --confirm: {0}\nNothing was changed. Repair the table first with a plain `portmap apply` (or `portmap destroy`), then apply with --confirm."
    )]
    NotRestorable(NotRestorable),
    /// A confirmation is already pending for this table.
    #[error(
        "cannot apply with --confirm: {0}.\nNothing was changed. Settle it first: `portmap confirm` keeps that change, `portmap rollback` undoes it now."
    )]
    AlreadyPending(String),
    /// A record file is not one portmap wrote.
    #[error("{} is not a portmap confirmation record ({reason}); remove it if no confirmation is pending", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The window is out of range.
    #[error("--confirm {0}: use 1 to {MAX_CONFIRM_SECONDS} seconds")]
    BadSeconds(u64),
}

/// What `apply --confirm` asks for.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmRequest<'a> {
    /// The window, 1 to [`MAX_CONFIRM_SECONDS`].
    pub seconds: u64,
    /// The backend as `--backend` names it (the watchdog opens the same).
    pub backend: &'a str,
    /// The table (or chain prefix) as `--table` gave it.
    pub table: &'a str,
}

impl From<NotRestorable> for ConfirmError {
    fn from(e: NotRestorable) -> Self {
        ConfirmError::NotRestorable(e)
    }
}

/// The confirm-or-rollback state of one key in one run directory.
#[derive(Debug, Clone)]
pub struct Confirmation {
    dir: RunDir,
    key: LockKey,
}

impl Confirmation {
    /// The state of `key` kept in `dir`.
    pub fn new(dir: RunDir, key: LockKey) -> Self {
        Confirmation { dir, key }
    }

    /// The key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// The pending record's path.
    pub fn pending_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("confirm")
            .join(format!("{}.json", self.key.stem()))
    }

    fn settled_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("confirm")
            .join(format!("{}.last.json", self.key.stem()))
    }

    /// The log of what confirmations did (`RUN/confirm.log`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("confirm.log")
    }

    /// The change waiting for confirmation, if any. A record of another boot (a run directory that
    /// outlived a reboot) does not count.
    pub fn pending(&self) -> Result<Option<Pending>, ConfirmError> {
        let Some(p): Option<Pending> = read_record(&self.pending_path())? else {
            return Ok(None);
        };
        let boot = portmap_netlink::boot_id().unwrap_or_default();
        Ok((p.boot_id == boot).then_some(p))
    }

    /// How the last confirmation of this key ended, if one did.
    pub fn last(&self) -> Result<Option<Settled>, ConfirmError> {
        read_record(&self.settled_path())
    }

    /// Record, before the commit, that the change from `observed` to `applied` is to be confirmed
    /// as `request` says: the snapshot of `observed` and the deadline, under a new id (or the id
    /// of `rewrite`, the record of this same apply, when its commit is tried again). Refused when
    /// another confirmation is pending or `observed` cannot be restored exactly.
    pub fn prepare(
        &self,
        _lock: &Lock,
        observed: &Observed,
        applied: &Model,
        request: &ConfirmRequest<'_>,
        rewrite: Option<&Pending>,
    ) -> Result<Pending, ConfirmError> {
        let &ConfirmRequest {
            seconds,
            backend,
            table,
        } = request;
        if !(1..=MAX_CONFIRM_SECONDS).contains(&seconds) {
            return Err(ConfirmError::BadSeconds(seconds));
        }
        match (self.pending()?, rewrite) {
            (Some(other), Some(ours)) if other.id == ours.id => {}
            (Some(other), _) => return Err(ConfirmError::AlreadyPending(other.describe())),
            (None, _) => {}
        }
        let before = restorable(observed)?.map(|m| Config::from(&m));
        let now = unix_ms();
        let pending = Pending {
            version: RECORD_VERSION,
            id: rewrite.map_or_else(
                || format!("{}-{}", std::process::id(), boot_ns()),
                |p| p.id.clone(),
            ),
            backend: backend.to_owned(),
            table: table.to_owned(),
            netns: self.key.netns_inode(),
            boot_id: portmap_netlink::boot_id().unwrap_or_default(),
            command: lock::command_line(std::process::id()).unwrap_or_default(),
            applied_unix_ms: now,
            deadline_unix_ms: now + seconds * 1000,
            deadline_boot_ms: boot_ms() + seconds * 1000,
            watchdog: rewrite.and_then(|p| p.watchdog),
            before,
            applied: Config::from(applied),
        };
        self.write_pending(&pending)?;
        Ok(pending)
    }

    /// Write (replace) the pending record.
    pub fn write_pending(&self, pending: &Pending) -> Result<(), ConfirmError> {
        self.dir.ensure(Some("confirm"))?;
        write_record(&self.pending_path(), pending)?;
        Ok(())
    }

    /// Drop the pending record `id` without settling it (its apply failed: nothing to confirm).
    pub fn discard(&self, _lock: &Lock, id: &str) -> Result<(), ConfirmError> {
        if self.pending()?.is_some_and(|p| p.id == id) {
            remove(&self.pending_path())?;
        }
        Ok(())
    }

    /// Confirm the pending change: it stays, its snapshot goes and its watchdog is stopped (and
    /// waited for, up to two seconds). `None` when nothing was pending.
    pub fn confirm(&self, _lock: &Lock, by: &str) -> Result<Option<(Pending, Settled)>, ConfirmError> {
        let Some(pending) = self.pending()? else {
            return Ok(None);
        };
        remove(&self.pending_path())?;
        let settled = self.settle(
            &pending,
            Verdict::Confirmed,
            by,
            "the change stays; its snapshot was removed".to_owned(),
        );
        stop(pending.watchdog);
        Ok(Some((pending, settled)))
    }

    /// Roll the pending change back now, through `session` (which must manage this key's table):
    /// restore the snapshot in one transaction and clear the flows that makes stale — unless the
    /// table no longer holds exactly what the confirmed apply made, in which case nothing is
    /// changed and the verdict says why. `None` when nothing was pending. A failed rollback
    /// leaves the record pending (for `portmap rollback` to try again).
    pub fn roll_back<B: Backend>(
        &self,
        _lock: &Lock,
        session: &mut Session<B>,
        by: &str,
    ) -> Result<Option<(Pending, Settled)>, ConfirmError> {
        let Some(pending) = self.pending()? else {
            return Ok(None);
        };
        let (verdict, detail) = match restore(session, &pending) {
            Ok((verdict, detail)) => (verdict, detail),
            Err(e) => (Verdict::Failed, format!("{e:#}")),
        };
        if verdict != Verdict::Failed {
            remove(&self.pending_path())?;
        }
        let settled = self.settle(&pending, verdict, by, detail);
        Ok(Some((pending, settled)))
    }

    /// What the watchdog does: wait until the deadline of confirmation `id` (returning early, with
    /// `None`, once it is confirmed, rolled back or replaced), then take the lock — waiting as long
    /// as another writer holds it — and roll back through the session `open` gives, unless it was
    /// settled meanwhile. `open` is called only then.
    pub fn wait_deadline<B: Backend>(
        &self,
        id: &str,
        open: impl FnOnce() -> Result<Session<B>, Error>,
    ) -> Result<Option<Settled>, ConfirmError> {
        loop {
            match self.pending()? {
                Some(p) if p.id == id => {
                    let left = p.remaining();
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(WATCHDOG_POLL));
                }
                _ => return Ok(None),
            }
        }
        let lock = Lock::acquire(
            &self.key,
            &self.dir,
            Duration::from_secs(u64::MAX >> 2),
            |_, _| {},
        )?;
        match self.pending()? {
            Some(p) if p.id == id => {}
            _ => return Ok(None),
        }
        match open() {
            Ok(mut session) => Ok(self
                .roll_back(&lock, &mut session, "the watchdog")?
                .map(|(_, s)| s)),
            Err(e) => {
                let pending = self.pending()?.filter(|p| p.id == id);
                Ok(pending.map(|p| {
                    self.settle(
                        &p,
                        Verdict::Failed,
                        "the watchdog",
                        format!("cannot open the backend: {e:#}"),
                    )
                }))
            }
        }
    }

    /// Write the settled record and the log line (failures to log are not the caller's problem:
    /// the kernel state is what counts).
    fn settle(&self, pending: &Pending, verdict: Verdict, by: &str, detail: String) -> Settled {
        let settled = Settled {
            version: RECORD_VERSION,
            id: pending.id.clone(),
            verdict,
            by: by.to_owned(),
            at_unix_ms: unix_ms(),
            command: pending.command.clone(),
            detail,
        };
        let _ = write_record(&self.settled_path(), &settled);
        let _ = self.log(&format!(
            "{}: the change applied at {} ({}): {settled}",
            self.key,
            timestamp(pending.applied_unix_ms),
            pending.command
        ));
        settled
    }

    /// Append one line to the log (kept under 1 MiB: the older half moves to `confirm.log.1`).
    pub fn log(&self, line: &str) -> Result<(), ConfirmError> {
        self.dir.ensure(None)?;
        let path = self.log_path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.len() > 1 << 20) {
            let _ = std::fs::rename(&path, path.with_extension("log.1"));
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| LockError::io(&path, "cannot open the log", e))?;
        let text = format!(
            "{} portmap[{}]: {}\n",
            timestamp(unix_ms()),
            std::process::id(),
            line.replace('\n', " ")
        );
        file.write_all(text.as_bytes())
            .map_err(|e| LockError::io(&path, "cannot write the log", e))?;
        Ok(())
    }
}

/// Put the snapshot back, unless the table moved on since the confirmed apply.
fn restore<B: Backend>(session: &mut Session<B>, pending: &Pending) -> Result<(Verdict, String), Error> {
    let applied = validate(&pending.applied)?;
    let before = pending.before.as_ref().map(validate).transpose()?;
    let options = ApplyOptions::default();
    for _ in 0..CONVERGE_ATTEMPTS {
        let observed = session.observe()?;
        let since = plan(&applied, &observed);
        if since.changes_kernel() {
            let mut detail = format!(
                "the table was changed after that apply (by another apply or by hand), so restoring the snapshot would clobber that change; nothing was changed. Compared with what that apply made, the table now differs as follows:\n{}",
                portmap_core::render_plan(&since, false).trim_end()
            );
            if before.is_some() {
                detail
                    .push_str("\n(`portmap apply` of the old configuration puts the snapshot back by hand.)");
            }
            return Ok((Verdict::NotRolledBack, detail));
        }
        let Some(before) = &before else {
            return Ok(match session.destroy(&options)? {
                Some(d) => (
                    Verdict::RolledBack,
                    format!(
                        "there was no table before, so the table was removed ({}, {})",
                        portmap_core::counted(d.mappings, "mapping"),
                        portmap_core::counted(d.flows_cleared, "tracked connection")
                    ),
                ),
                None => (
                    Verdict::RolledBack,
                    "there was no table before, and there is none now".to_owned(),
                ),
            });
        };
        let back = plan(before, &observed);
        if back.is_empty() {
            return Ok((
                Verdict::RolledBack,
                "the table already held the snapshot; nothing to change".to_owned(),
            ));
        }
        match session.apply(&back, &options) {
            Ok(report) => {
                let c = back.counts();
                return Ok((
                    Verdict::RolledBack,
                    format!(
                        "restored the snapshot in one transaction: {} created, {} changed, {} deleted, {} repaired{}",
                        c.create,
                        c.update,
                        c.delete,
                        c.repair,
                        match report.flows_cleared {
                            0 => String::new(),
                            n => format!("; {n} stale tracked connections removed"),
                        }
                    ),
                ));
            }
            Err(e) if e.is_race() => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Contended {
        attempts: CONVERGE_ATTEMPTS,
    })
}

/// Stop a watchdog (SIGTERM, only if it is still the same process) and wait up to two seconds for
/// it to go.
fn stop(watchdog: Option<ProcessId>) {
    let Some(w) = watchdog.filter(|w| w.alive()) else {
        return;
    };
    if let Ok(pid) = libc::pid_t::try_from(w.pid) {
        // SAFETY: kill has no memory effects; the start time check above makes it this process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while w.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ConfirmError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LockError::io(path, "cannot read", e).into()),
    };
    let bad = |reason: String| ConfirmError::BadRecord {
        path: path.to_path_buf(),
        reason,
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(bad("not a regular file".to_owned()));
    }
    let limit = MAX_PLAN_BYTES as u64;
    let mut text = String::new();
    (&mut file)
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > limit {
        return Err(bad("too large".to_owned()));
    }
    let v: Version = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if v.version != RECORD_VERSION {
        return Err(bad(format!(
            "version {}, this portmap reads {RECORD_VERSION}",
            v.version
        )));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// Write `value` as JSON to `path` through a temporary file and a rename, `0600`.
fn write_record<T: Serialize>(path: &Path, value: &T) -> Result<(), LockError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| LockError::io(path, "cannot encode", e.into()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| LockError::io(&tmp, "cannot write", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| LockError::io(&tmp, "cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| LockError::io(path, "cannot write", e))
}

fn remove(path: &Path) -> Result<(), ConfirmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LockError::io(path, "cannot remove", e).into()),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `CLOCK_BOOTTIME` in nanoseconds: monotonic, counts suspend, the same in every process.
fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn boot_ms() -> u64 {
    boot_ns() / 1_000_000
}

/// `2026-12-03T14:05:09Z` for ms after the Unix epoch.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm), for days after 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_798_761_599_000), "2026-12-31T23:59:59Z");
    }
}
