//! The binary's side of the write lock and of confirm-or-rollback: taking the lock with a message
//! when it must wait, `apply --confirm` (snapshot before the commit, the detached watchdog, the
//! countdown on a terminal), `portmap confirm`, `portmap rollback`, the hidden watchdog command,
//! and what `status` adds. The decisions are the library's (`portmap::confirm`, `portmap::Lock`);
//! this module prints, asks and starts processes.

use std::fmt::Write as _;
use std::io::BufRead;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portmap::confirm::{ConfirmRequest, Confirmation, Pending, ProcessId, Settled, Verdict, timestamp};
use portmap::{BackendKind, Lock, LockKey, Netns, Observed, Plan, RunDir};

use crate::{Cli, ExitStatus, netns_of, open, say};

/// Parse a `--lock-timeout`: `60s`, `500ms`, `2m`, `1h`, a plain number of seconds, `0` (do not
/// wait). At most a day.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{}` is not a duration: use e.g. 60s, 500ms, 2m or 1h (at most 24h), or 0 not to wait",
            portmap::shown_arg(text)
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The lock key of the command line's namespace, backend and table.
pub(crate) fn key(cli: &Cli, kind: BackendKind) -> Result<LockKey> {
    Ok(LockKey::new(kind, &netns_of(cli), &cli.table)?)
}

/// Take the write lock, saying once on standard error when another writer holds it.
pub(crate) fn lock(cli: &Cli, kind: BackendKind) -> Result<Lock> {
    let key = key(cli, kind)?;
    let timeout = cli.lock_timeout;
    let taken = Lock::acquire(&key, &RunDir::from_env(), timeout, |key, holder| {
        let who = holder.map_or_else(|| "another portmap writer".to_owned(), |h| format!("{h}"));
        crate::cli_log::notice(&format!(
            "portmap: waiting for the lock on {key}, held by {who} (up to {}; --lock-timeout)\n",
            shown(timeout)
        ));
    });
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match taken {
        Ok(lock) => Ok(lock),
        // Not root: the run directory is root's, as the kernel's tables are.
        Err(e @ (portmap::LockError::UnsafeDir { .. } | portmap::LockError::Io { .. })) if !root => bail!(
            "cannot take the write lock ({e}); changing portmap's table needs root (CAP_NET_ADMIN), and so does its lock"
        ),
        Err(e) => Err(portmap::Error::from(e).into()),
    }
}

fn shown(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `apply --confirm SECONDS` in progress: the record written before each commit, and the
/// watchdog started with the first.
pub(crate) struct Guard {
    store: Confirmation,
    seconds: u64,
    backend: &'static str,
    table: String,
    netns: Netns,
    pending: Option<Pending>,
}

impl Guard {
    /// Ready to confirm a change of the command line's table, refusing at once when a
    /// confirmation is already pending there (before anything is planned or asked).
    pub(crate) fn new(cli: &Cli, kind: BackendKind, seconds: u64, backend: &'static str) -> Result<Guard> {
        let store = Confirmation::new(RunDir::from_env(), key(cli, kind)?);
        if let Some(other) = store.pending()? {
            return Err(
                portmap::Error::from(portmap::confirm::ConfirmError::AlreadyPending(other.describe())).into(),
            );
        }
        if !(1..=portmap::confirm::MAX_CONFIRM_SECONDS).contains(&seconds) {
            return Err(portmap::Error::from(portmap::confirm::ConfirmError::BadSeconds(seconds)).into());
        }
        Ok(Guard {
            store,
            seconds,
            backend,
            table: cli.table.clone(),
            netns: netns_of(cli),
            pending: None,
        })
    }

    /// Right before a commit: snapshot what the commit changes and make sure a watchdog will roll
    /// it back.
    pub(crate) fn prepare(
        &mut self,
        lock: &Lock,
        plan: &Plan,
        observed: &Observed,
    ) -> Result<(), portmap::Error> {
        let request = ConfirmRequest {
            seconds: self.seconds,
            backend: self.backend,
            table: &self.table,
        };
        let mut pending =
            self.store
                .prepare(lock, observed, &plan.desired, &request, self.pending.as_ref())?;
        if pending.watchdog.is_none() {
            let started = spawn_watchdog(&self.netns, &self.table, self.backend, &pending.id);
            match started {
                Ok(w) => {
                    pending.watchdog = Some(w);
                    self.store.write_pending(&pending)?;
                }
                Err(e) => {
                    let _ = self.store.discard(lock, &pending.id);
                    return Err(portmap::Error::Backend(
                        format!("cannot start the watchdog that would roll the change back: {e:#}; nothing was changed").into(),
                    ));
                }
            }
        }
        self.pending = Some(pending);
        Ok(())
    }

    /// What `apply --confirm --json` says about the confirmation it started: its id, deadline and
    /// watchdog, and how to settle it; `null` when the apply changed nothing.
    pub(crate) fn json(&self) -> serde_json::Value {
        self.pending.as_ref().map_or(serde_json::Value::Null, |p| {
            serde_json::json!({
                "id": p.id,
                "seconds": self.seconds,
                "deadline": timestamp(p.deadline_unix_ms),
                "watchdog_pid": p.watchdog.map(|w| w.pid),
            })
        })
    }

    /// The apply failed: nothing to confirm.
    pub(crate) fn failed(&self, lock: &Lock) {
        if let Some(p) = &self.pending {
            let _ = self.store.discard(lock, &p.id);
        }
    }

    /// After a successful apply (the lock released): say how to confirm; on a terminal, ask with a
    /// countdown.
    pub(crate) fn armed(self, cli: &Cli, kind: BackendKind) -> Result<ExitStatus> {
        let Some(pending) = self.pending else {
            say("Nothing to confirm: the kernel already matched the configuration.\n")?;
            return Ok(ExitStatus::Success);
        };
        let deadline = timestamp(pending.deadline_unix_ms);
        let how = format!("portmap{} confirm", same_target(cli));
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            say(&format!(
                "\nThis change is rolled back at {deadline} ({} s from now) unless confirmed: run `{how}` to keep it (`portmap{} rollback` undoes it now). A detached watchdog (pid {}) does the rollback even if this session ends; see `portmap status`.\n",
                self.seconds,
                same_target(cli),
                pending.watchdog.map_or(0, |w| w.pid)
            ))?;
            return Ok(ExitStatus::Success);
        }
        say(&format!(
            "\nKeep this change? Type yes within {} s (or run `{how}` elsewhere); no, or no answer, rolls it back at {deadline}: ",
            self.seconds
        ))?;
        let mut reminders = [60u64, 30, 10, 5]
            .into_iter()
            .filter(|&r| r < self.seconds)
            .peekable();
        loop {
            let left = pending.remaining();
            if left.is_zero() {
                say("\n")?;
                return wait_outcome(&self.store, &pending);
            }
            while reminders.peek().is_some_and(|&r| left.as_secs() < r) {
                reminders.next();
            }
            if let Some(&r) = reminders.peek()
                && left.as_secs() == r
            {
                reminders.next();
                say(&format!("\n{r} s left — type yes to keep the change: "))?;
            }
            if !readable(std::io::stdin().as_raw_fd(), left.min(Duration::from_secs(1))) {
                continue;
            }
            let mut answer = String::new();
            if stdin.lock().read_line(&mut answer)? == 0 {
                say(&format!(
                    "\nNo more input. The change is rolled back at {deadline} unless `{how}` confirms it.\n"
                ))?;
                return Ok(ExitStatus::Success);
            }
            match answer.trim() {
                "yes" => {
                    let lock = lock(cli, kind)?;
                    return match self.store.confirm(&lock, "the terminal")? {
                        Some((p, _)) if p.id == pending.id => {
                            say("Confirmed: the change stays.\n")?;
                            Ok(ExitStatus::Success)
                        }
                        _ => too_late(&self.store),
                    };
                }
                "no" => {
                    let lock = lock(cli, kind)?;
                    let mut session = open(cli, kind)?;
                    return match self.store.roll_back(&lock, &mut session, "the terminal")? {
                        Some((_, settled)) => report(&settled),
                        None => too_late(&self.store),
                    };
                }
                _ => say("Type yes to keep the change or no to roll it back now: ")?,
            }
        }
    }
}

/// `--netns/--table/--backend` as the command line gave them, for a command to repeat.
fn same_target(cli: &Cli) -> String {
    let mut out = String::new();
    if let Some(ns) = &cli.netns {
        let _ = write!(out, " --netns {}", portmap::shown_arg(ns));
    }
    if cli.table != portmap::DEFAULT_TABLE {
        let _ = write!(out, " --table {}", portmap::shown_arg(&cli.table));
    }
    if !matches!(cli.backend, crate::BackendArg::Nft) {
        out.push_str(" --backend ");
        out.push_str(match cli.backend {
            crate::BackendArg::Iptables => "iptables",
            crate::BackendArg::IptablesLegacy => "iptables-legacy",
            _ => "iptables-nft",
        });
    }
    out
}

/// Whether `fd` has input within `wait`.
fn readable(fd: RawFd, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, owned here, for the duration of the call.
    unsafe { libc::poll(&raw mut pfd, 1, ms) > 0 }
}

/// After the deadline on the terminal: what the watchdog did (it needs the lock and one
/// transaction; give it a few seconds).
fn wait_outcome(store: &Confirmation, pending: &Pending) -> Result<ExitStatus> {
    for _ in 0..100 {
        if let Some(settled) = store.last()?.filter(|s| s.id == pending.id) {
            return report(&settled);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the deadline passed, but the watchdog has not said what it did yet; see `portmap status` and {}",
        store.log_path().display()
    )
}

fn too_late(store: &Confirmation) -> Result<ExitStatus> {
    match store.last()? {
        Some(settled) => {
            report(&settled)?;
            bail!("too late: the change was already settled")
        }
        None => bail!("too late: nothing is pending any more"),
    }
}

/// Print a settled confirmation; confirmed is success, anything else an error.
fn report(settled: &Settled) -> Result<ExitStatus> {
    say(&format!("Change {settled}\n"))?;
    Ok(verdict_status(settled.verdict))
}

/// Confirmed and rolled back are success, anything else an error.
fn verdict_status(verdict: Verdict) -> ExitStatus {
    match verdict {
        Verdict::Confirmed | Verdict::RolledBack => ExitStatus::Success,
        _ => ExitStatus::Error,
    }
}

/// `confirm --json` and `rollback --json`: what was settled (the same fields as `status --json`
/// gives under `confirm.last`), with when the change had been applied.
fn settled_json(command: &str, settled: &Settled, pending: Option<&Pending>) -> serde_json::Value {
    portmap::json::document(
        command,
        serde_json::json!({
            "changed": settled.verdict == Verdict::RolledBack,
            "settled": {
                "id": settled.id,
                "verdict": settled.verdict,
                "by": settled.by,
                "at": timestamp(settled.at_unix_ms),
                "command": settled.command,
                "detail": settled.detail,
                "applied_at": pending.map(|p| timestamp(p.applied_unix_ms)),
            },
        }),
    )
}

/// Start the watchdog: this very binary (`/proc/self/exe`) in a session of its own, with no
/// terminal, standard streams on /dev/null, SIGHUP ignored, working directory `/`, no other
/// inherited descriptor but the namespace, held open as descriptor 3, so that it acts on this namespace even if its name is
/// given to another later.
fn spawn_watchdog(netns: &Netns, table: &str, backend: &str, id: &str) -> Result<ProcessId> {
    let ns_path = match netns {
        Netns::Named(name) => {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                bail!("a namespace name must not be empty or contain '/'");
            }
            std::path::Path::new("/run/netns").join(name)
        }
        Netns::Path(path) => path.clone(),
        _ => std::path::PathBuf::from("/proc/self/ns/net"),
    };
    let ns = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&ns_path)
        .with_context(|| format!("cannot open {}", ns_path.display()))?;
    let ns_fd = ns.as_raw_fd();
    let mut cmd = Process::new("/proc/self/exe");
    cmd.args([
        "--netns",
        "/proc/self/fd/3",
        "--table",
        table,
        "--backend",
        backend,
    ])
    .args(["confirm-watchdog", "--id", id])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .current_dir("/");
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, signal, dup2, fcntl,
    // close_range or close, umask) on values computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            if ns_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(ns_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else of the parent's: an inherited terminal or socket would keep the
            // parent's session alive, or tie the watchdog to it.
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                for fd in 4..1024 {
                    libc::close(fd);
                }
            }
            libc::umask(0o077);
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the watchdog")?;
    let pid = child.id();
    drop(ns);
    ProcessId::of(pid).context("the watchdog ended at once")
}

/// `portmap confirm`.
pub(crate) fn confirm(cli: &Cli, kind: BackendKind, json: bool) -> Result<ExitStatus> {
    let lock = lock(cli, kind)?;
    let store = Confirmation::new(RunDir::from_env(), lock.key().clone());
    match store.confirm(&lock, "portmap confirm")? {
        Some((pending, settled)) if json => {
            crate::cli_json::emit(&settled_json("confirm", &settled, Some(&pending)))?;
            Ok(ExitStatus::Success)
        }
        Some((pending, _)) => {
            say(&format!(
                "Confirmed the change applied at {} ({}): it stays; its snapshot was removed and the watchdog stopped.\n",
                timestamp(pending.applied_unix_ms),
                pending.command
            ))?;
            Ok(ExitStatus::Success)
        }
        None => nothing_pending(&store, "confirm"),
    }
}

/// `portmap rollback`.
pub(crate) fn rollback(cli: &Cli, kind: BackendKind, json: bool) -> Result<ExitStatus> {
    let mut session = open(cli, kind)?;
    let lock = lock(cli, kind)?;
    let store = Confirmation::new(RunDir::from_env(), lock.key().clone());
    match store.roll_back(&lock, &mut session, "portmap rollback")? {
        Some((pending, settled)) if json => {
            crate::cli_json::emit(&settled_json("rollback", &settled, Some(&pending)))?;
            Ok(verdict_status(settled.verdict))
        }
        Some((_, settled)) => report(&settled),
        None => nothing_pending(&store, "roll back"),
    }
}

fn nothing_pending(store: &Confirmation, what: &str) -> Result<ExitStatus> {
    let last = match store.last()? {
        Some(s) => format!(" The last one was {s}"),
        None => String::new(),
    };
    bail!(
        "nothing to {what}: no change applied with `apply --confirm` is waiting for confirmation on {}.{last}",
        store.key()
    )
}

/// The hidden `confirm-watchdog --id ID`: wait for the deadline and roll back unless confirmed.
pub(crate) fn watchdog(cli: &Cli, kind: BackendKind, id: &str) -> Result<ExitStatus> {
    // Belt and braces: the parent set this already.
    // SAFETY: setting a signal's disposition to ignore has no memory effects.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let store = Confirmation::new(RunDir::from_env(), key(cli, kind)?);
    let _ = store.log(&format!(
        "{}: watchdog for the change {id} started; it rolls the change back at the deadline unless confirmed",
        store.key()
    ));
    match store.wait_deadline(id, || {
        open(cli, kind).map_err(|e| portmap::Error::Backend(format!("{e:#}").into()))
    })? {
        Some(settled) if settled.verdict == Verdict::Failed => Ok(ExitStatus::Error),
        _ => Ok(ExitStatus::Success),
    }
}

/// What `status` says about confirmations of its table, as text lines (empty when there is
/// nothing to say) and as JSON. Nothing is created or locked.
pub(crate) fn status(cli: &Cli, kind: BackendKind) -> Result<(String, serde_json::Value)> {
    let store = Confirmation::new(RunDir::from_env(), key(cli, kind)?);
    let pending = store.pending()?;
    let last = store.last()?;
    let mut text = String::new();
    if let Some(p) = &pending {
        let _ = write!(text, "\nConfirmation pending: {}.\n", p.describe());
    }
    if let Some(s) = &last {
        let _ = write!(text, "\nLast confirmation: {s}\n");
    }
    let json = serde_json::json!({
        "pending": pending.as_ref().map(|p| serde_json::json!({
            "id": p.id,
            "command": p.command,
            "applied_at": timestamp(p.applied_unix_ms),
            "deadline": timestamp(p.deadline_unix_ms),
            "seconds_left": p.remaining().as_secs(),
            "watchdog_pid": p.watchdog.map(|w| w.pid),
            "watchdog_running": p.watchdog_alive(),
            "snapshot_mappings": p.before.as_ref().map(|c| c.mappings.len()),
        })),
        "last": last.as_ref().map(|s| serde_json::json!({
            "id": s.id,
            "verdict": s.verdict,
            "by": s.by,
            "at": timestamp(s.at_unix_ms),
            "command": s.command,
            "detail": s.detail,
        })),
        "log": store.log_path(),
    });
    Ok((text, json))
}

/// After a plain apply or destroy changed the table while a confirmation was pending: say that
/// its watchdog will now find the table changed and leave it alone.
pub(crate) fn note_pending(cli: &Cli, kind: BackendKind) {
    let Ok(key) = key(cli, kind) else { return };
    let store = Confirmation::new(RunDir::from_env(), key);
    if let Ok(Some(p)) = store.pending() {
        crate::cli_log::notice(&format!(
            "note: {}; this command changed the table after it, so at the deadline the watchdog will find the table changed and will NOT roll back (`portmap confirm` clears it).\n",
            p.describe()
        ));
    }
}
