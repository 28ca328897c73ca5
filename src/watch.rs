//! `portmap watch`: the daemon that keeps the kernel matching a configuration. It applies the
//! configuration, then listens to what the kernel announces — nftables ruleset changes, links and
//! addresses (netlink multicast, [`portmap_netlink::Monitor`]) — and, with a backend that announces
//! nothing (iptables), reads the kernel every interval. Whenever the kernel may have drifted it
//! plans afresh and applies what is needed through the same [`Session`] as `portmap apply`, with a
//! back-off when another program keeps undoing it ([`BackoffPolicy`]).
//!
//! Everything reaches one loop through one channel: the monitors' threads, signals
//! ([`forward_signals`]), and whatever else a caller attaches through a [`WatchHandle`] (a reload,
//! a stop, lines to log; a metrics server reads [`WatchStatus`]). The loop alone writes the kernel
//! and the log, so repairs never overlap and lines never interleave.
//!
//! It must not parse a command line or read the configuration file itself (the caller's
//! [`Loader`] does, so a library user can watch a configuration built in code), and it writes the
//! kernel only through the session.

mod backoff;
mod describe;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as IoWrite;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use portmap_core::{Model, Netns, shown_arg};
use portmap_netlink::monitor::{AddressChange, Event, Generation, LinkChange, RulesetChange};
use portmap_netlink::{Monitor, Received, Topic};

use backoff::Backoff;
pub use backoff::BackoffPolicy;

use crate::{BackendKind, Backends, Error, Session};

/// How often the watch reads the kernel when nothing is announced, with a backend that announces
/// nothing (iptables).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often the watch reads the kernel anyway with nft, whose changes are announced: a safety
/// net, not the way drift is found.
pub const SAFETY_INTERVAL: Duration = Duration::from_mins(1);
/// How long after the last notification of a burst the watch reads the kernel.
pub const DEBOUNCE: Duration = Duration::from_millis(30);
/// A burst that does not end is read after this long anyway.
const MAX_DEBOUNCE: Duration = Duration::from_millis(300);
/// How long ruleset notifications wait for the end of their transaction before they are taken
/// without it.
const TRANSACTION_WAIT: Duration = Duration::from_millis(200);
/// How long the monitor threads wait for the kernel before they look whether to stop.
const MONITOR_TICK: Duration = Duration::from_millis(200);
/// The most ruleset notifications kept while waiting for the end of a transaction (a transaction
/// of more is described by its first ones).
const MAX_PENDING_CHANGES: usize = 10_000;

/// How severe a log line is (the journal's priorities: error 3, warning 4, info 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    /// Something failed.
    Error,
    /// Something needs attention.
    Warning,
    /// What happened.
    Info,
}

/// Reads the configuration: at start and on every reload. An `Err` carries every problem, in
/// words (a reload that fails keeps the running configuration).
pub type Loader = Box<dyn FnMut() -> Result<Model, String> + Send>;

/// Where the watch's log lines go: one call per line.
pub type LogSink = Box<dyn FnMut(Level, &str) + Send>;

/// How the watch works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// How often the kernel is read without a notification; `None`: [`POLL_INTERVAL`] with
    /// iptables, [`SAFETY_INTERVAL`] with nft.
    pub interval: Option<Duration>,
    /// How long after the last notification of a burst the kernel is read ([`DEBOUNCE`]).
    pub debounce: Duration,
    /// How repairs back off when another program keeps undoing them.
    pub backoff: BackoffPolicy,
    /// Own the table (nft only; `NFT_TABLE_F_OWNER`): no other program can change it and `flush
    /// ruleset` leaves it alone. See docs/operations.md for what that costs.
    pub own: bool,
    /// Receive buffer of the notification sockets, in bytes (default 8 MiB). A burst larger than
    /// it loses notifications; the watch then reads the kernel afresh.
    pub event_buffer: Option<usize>,
    /// How long a write waits for the writers' lock held by another portmap (an apply, a confirm
    /// watchdog) before that check is given up and tried again later
    /// ([`DEFAULT_LOCK_TIMEOUT`](crate::DEFAULT_LOCK_TIMEOUT)).
    pub lock_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: None,
            debounce: DEBOUNCE,
            backoff: BackoffPolicy::default(),
            own: false,
            event_buffer: None,
            lock_timeout: crate::DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// What the watch has done, for a status page or a metrics exporter ([`WatchHandle::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchStatus {
    /// When the watch started.
    pub started: SystemTime,
    /// Whether the first apply is done (what `READY=1` tells systemd).
    pub ready: bool,
    /// When the kernel was last read and compared with the configuration.
    pub last_check: Option<SystemTime>,
    /// When the watch last changed the kernel (the first apply included).
    pub last_apply: Option<SystemTime>,
    /// Whether that apply, or the last attempt since, succeeded.
    pub last_apply_ok: bool,
    /// Repairs made after the first apply.
    pub repairs: u64,
    /// Repair attempts that failed.
    pub failed_repairs: u64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Whether repairs are being held back because another program keeps undoing them.
    pub backing_off: bool,
    /// Reloads that took effect.
    pub reloads: u64,
    /// Reloads refused because the file was not valid.
    pub failed_reloads: u64,
    /// Mappings in the running configuration.
    pub mappings: usize,
}

impl WatchStatus {
    fn new() -> Self {
        WatchStatus {
            started: SystemTime::now(),
            ready: false,
            last_check: None,
            last_apply: None,
            last_apply_ok: false,
            repairs: 0,
            failed_repairs: 0,
            last_error: None,
            backing_off: false,
            reloads: 0,
            failed_reloads: 0,
            mappings: 0,
        }
    }
}

/// Errors that end the watch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The configuration could not be read at start.
    #[error("{0}")]
    Config(String),
    /// Table ownership was asked for with a backend that has no such thing.
    #[error("--own needs the nft backend: iptables has no table ownership")]
    OwnNeedsNft,
    /// The backend failed: opening it, taking ownership, or the first apply.
    #[error(transparent)]
    Portmap(#[from] Error),
    /// A notification socket, a thread or the signal handlers could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl WatchError {
    fn setup(what: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        WatchError::Setup {
            what: what.to_owned(),
            source: source.into(),
        }
    }
}

/// What reaches the loop.
enum Input {
    /// What the ruleset monitor received.
    Ruleset(Received),
    /// What the link and address monitor received.
    Links(Received),
    /// A monitor failed for good (its thread ended).
    MonitorFailed(&'static str, String),
    /// Read the configuration again.
    Reload,
    /// Stop, for this reason (e.g. `SIGTERM`).
    Stop(String),
    /// A line from another source (e.g. logged connections), written in turn.
    Log(Level, String),
}

/// A handle on a running watch, for other threads: ask for a reload or a stop, log a line, read
/// the status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    tx: Sender<Input>,
    status: Arc<Mutex<WatchStatus>>,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Ruleset(_) => "Ruleset",
            Input::Links(_) => "Links",
            Input::MonitorFailed(..) => "MonitorFailed",
            Input::Reload => "Reload",
            Input::Stop(_) => "Stop",
            Input::Log(..) => "Log",
        })
    }
}

impl WatchHandle {
    /// Read the configuration again (what `SIGHUP` does); an invalid one is logged and the running
    /// configuration kept. Does nothing once the watch has stopped.
    pub fn reload(&self) {
        let _ = self.tx.send(Input::Reload);
    }

    /// Stop the watch: [`Watch::run`] returns `Ok` once the step in progress is done.
    pub fn stop(&self, reason: &str) {
        let _ = self.tx.send(Input::Stop(reason.to_owned()));
    }

    /// Write a line to the watch's log, in turn with its own lines.
    pub fn log(&self, level: Level, line: &str) {
        let _ = self.tx.send(Input::Log(level, line.to_owned()));
    }

    /// A copy of what the watch has done so far.
    pub fn status(&self) -> WatchStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether [`Watch::run`] has returned: a source thread (a log reader, a metrics server)
    /// ends when it sees this.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// The watch daemon, ready to [`Watch::run`].
pub struct Watch {
    session: Session<Backends>,
    kind: BackendKind,
    netns: Netns,
    table: String,
    loader: Loader,
    model: Model,
    options: WatchOptions,
    log: LogSink,
    tx: Sender<Input>,
    rx: Receiver<Input>,
    status: Arc<Mutex<WatchStatus>>,
    stopped: Arc<AtomicBool>,
    /// The pending confirmation the watch holds back for (its id), once said.
    held_for: Option<String>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("kind", &self.kind)
            .field("netns", &self.netns)
            .field("table", &self.table)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// A watch of table `table` (nft) or chains `table` (iptables) in `netns`, keeping it as
    /// `loader` says. Reads the configuration and opens the backend; changes nothing yet. Log
    /// lines go to standard error ([`stderr_log`]) unless [`Watch::set_log`] says otherwise.
    pub fn new(
        kind: BackendKind,
        netns: &Netns,
        table: &str,
        mut loader: Loader,
        options: WatchOptions,
    ) -> Result<Watch, WatchError> {
        if options.own && kind != BackendKind::Nft {
            return Err(WatchError::OwnNeedsNft);
        }
        let model = loader().map_err(WatchError::Config)?;
        let session = Session::open(kind, netns, table)?;
        let (tx, rx) = mpsc::channel();
        Ok(Watch {
            session,
            kind,
            netns: netns.clone(),
            table: table.to_owned(),
            loader,
            model,
            options,
            log: stderr_log(),
            tx,
            rx,
            status: Arc::new(Mutex::new(WatchStatus::new())),
            stopped: Arc::new(AtomicBool::new(false)),
            held_for: None,
        })
    }

    /// Send the log lines to `sink` instead.
    pub fn set_log(&mut self, sink: LogSink) {
        self.log = sink;
    }

    /// A handle for other threads (signals, a metrics server, a log source).
    pub fn handle(&self) -> WatchHandle {
        WatchHandle {
            tx: self.tx.clone(),
            status: Arc::clone(&self.status),
            stopped: Arc::clone(&self.stopped),
        }
    }

    /// Apply the configuration, tell systemd it is ready (`READY=1` where `NOTIFY_SOCKET` is
    /// set), then keep the kernel matching it until asked to stop. Returns `Ok` when stopped; an
    /// error when the first apply fails or the watch cannot be set up. Failures after the first
    /// apply are logged and retried with the back-off, never fatal.
    pub fn run(mut self) -> Result<(), WatchError> {
        let stop = Arc::clone(&self.stopped);
        let monitors = self.start_monitors(&stop)?;
        let result = self.watch();
        stop.store(true, Ordering::Relaxed);
        for m in monitors {
            let _ = m.join();
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        result
    }

    /// Open the notification sockets (before the first apply, so nothing after it is missed) and
    /// a thread for each that passes what it receives to the loop.
    fn start_monitors(&self, stop: &Arc<AtomicBool>) -> Result<Vec<JoinHandle<()>>, WatchError> {
        let netns = netlink_netns(&self.netns);
        let mut topics = vec![Topic::Links];
        if self.kind == BackendKind::Nft {
            topics.push(Topic::Ruleset);
        }
        let mut threads = Vec::new();
        for topic in topics {
            let mut monitor = Monitor::open(&netns, topic)
                .map_err(|e| WatchError::setup("subscribing to the kernel's notifications", e))?;
            if let Some(bytes) = self.options.event_buffer {
                monitor
                    .set_receive_buffer(bytes)
                    .map_err(|e| WatchError::setup("sizing the notification buffer", e))?;
            }
            let tx = self.tx.clone();
            let stop = Arc::clone(stop);
            let (name, wrap): (&'static str, fn(Received) -> Input) = match topic {
                Topic::Ruleset => ("ruleset", Input::Ruleset),
                _ => ("links", Input::Links),
            };
            let thread = std::thread::Builder::new()
                .name(format!("portmap-watch-{name}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match monitor.recv(Some(MONITOR_TICK)) {
                            Ok(Received::Timeout) => {}
                            Ok(received) => {
                                if tx.send(wrap(received)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Input::MonitorFailed(name, e.to_string()));
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| WatchError::setup("starting a monitor thread", e))?;
            threads.push(thread);
        }
        Ok(threads)
    }

    fn say(&mut self, level: Level, line: &str) {
        for l in line.lines() {
            (self.log)(level, l);
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut WatchStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The first apply, then the loop.
    fn watch(&mut self) -> Result<(), WatchError> {
        let ownership = if self.options.own {
            let Backends::Nft(nft) = self.session.backend() else {
                return Err(WatchError::OwnNeedsNft);
            };
            let owned = nft.take_ownership().map_err(|e| Error::Backend(Box::new(e)))?;
            match owned {
                portmap_nft::Ownership::Owned { persist: true } => {
                    "; owns the table (flags owner, persist: it stays when the watch stops)"
                }
                _ => {
                    "; owns the table (flags owner; this kernel has no persist: the table goes when the watch stops)"
                }
            }
        } else {
            ""
        };
        let nft = self.kind == BackendKind::Nft;
        let interval = self
            .options
            .interval
            .unwrap_or(if nft { SAFETY_INTERVAL } else { POLL_INTERVAL });
        let how = if nft {
            format!(
                "ruleset, link and address notifications, and a read every {}",
                describe::duration(interval)
            )
        } else {
            format!(
                "a read every {} (iptables announces no changes) and link and address notifications",
                describe::duration(interval)
            )
        };
        let table = self.table_display();
        self.say(
            Level::Info,
            &format!(
                "watching {table} in network namespace {} with backend {}: {how}{ownership}",
                shown_arg(&self.netns.to_string()),
                self.session.name()
            ),
        );
        let started = Instant::now();
        let outcome = self.converge()?;
        let now = SystemTime::now();
        let line = if outcome.plan.is_empty() {
            format!(
                "the kernel already matches the configuration ({})",
                describe::count(self.model.mappings.len(), "mapping")
            )
        } else {
            format!(
                "applied: {}",
                describe::applied(&outcome.plan, &outcome.report, started.elapsed(), nft)
            )
        };
        self.say(Level::Info, &line);
        let mappings = self.model.mappings.len();
        self.set_status(|s| {
            s.ready = true;
            s.last_check = Some(now);
            s.last_apply = Some(now);
            s.last_apply_ok = true;
            s.mappings = mappings;
        });
        let status = format!("watching {table}: {}", describe::count(mappings, "mapping"));
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        let mut state = State::new(&self.options, interval, interfaces_by_index(&self.netns));
        self.repeat(&mut state)
    }

    /// `inet portmap`, or the iptables chains' prefix as the backend names it.
    fn table_display(&self) -> String {
        match self.kind {
            BackendKind::Nft => format!("table inet {}", self.table),
            BackendKind::Iptables(_) => format!("iptables chains {}-…", self.table.to_uppercase()),
        }
    }

    /// The loop: take what arrives, then check the kernel when something may have drifted.
    fn repeat(&mut self, state: &mut State) -> Result<(), WatchError> {
        loop {
            let now = Instant::now();
            let wait = state.next_deadline(now).saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(Input::Stop(reason)) => {
                    self.say(Level::Info, &format!("stopping ({reason})"));
                    return Ok(());
                }
                Ok(input) => self.take(state, input),
                Err(RecvTimeoutError::Timeout) => {}
                // The loop holds a sender itself: the channel cannot close.
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if state
                .pending_since
                .is_some_and(|since| now.saturating_duration_since(since) >= TRANSACTION_WAIT)
            {
                // The end of the transaction never came (or was lost): take the changes as they are.
                let changes = std::mem::take(&mut state.pending);
                state.pending_since = None;
                self.transaction(state, &changes, None);
            }
            if now >= state.next_poll {
                state.next_poll = now + state.interval;
                state.mark(now, Trigger::Poll);
            }
            if let Some(ping) = state.watchdog
                && now >= state.next_ping
            {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                state.next_ping = now + ping;
            }
            if state.due(now) {
                self.check(state);
            }
        }
    }

    /// Take one input.
    fn take(&mut self, state: &mut State, input: Input) {
        let now = Instant::now();
        match input {
            Input::Ruleset(Received::Events(events)) => {
                for event in events {
                    match event {
                        Event::Ruleset(change) => {
                            if state.pending.len() < MAX_PENDING_CHANGES {
                                state.pending.push(change);
                            }
                            state.pending_since.get_or_insert(now);
                        }
                        Event::Generation(generation) => {
                            let changes = std::mem::take(&mut state.pending);
                            state.pending_since = None;
                            if !is_own(&generation, state) {
                                self.transaction(state, &changes, Some(&generation));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Input::Links(Received::Events(events)) => {
                for event in events {
                    match event {
                        Event::Link(link) => self.link(state, &link),
                        Event::Address(addr) => self.address(state, &addr),
                        _ => {}
                    }
                }
            }
            Input::Ruleset(Received::Lost) => {
                state.pending.clear();
                state.pending_since = None;
                self.note(
                    state,
                    Level::Warning,
                    "missed ruleset notifications (the receive buffer overflowed): reading the ruleset afresh",
                );
                state.mark(now, Trigger::Unannounced);
            }
            Input::Links(Received::Lost) => {
                self.note(
                    state,
                    Level::Warning,
                    "missed link and address notifications (the receive buffer overflowed): reading the interfaces afresh",
                );
                state.interfaces = interfaces_by_index(&self.netns);
                state.mark(now, Trigger::Unannounced);
            }
            // Nothing arrived; and a stop is handled by the loop itself.
            Input::Ruleset(Received::Timeout) | Input::Links(Received::Timeout) | Input::Stop(_) => {}
            Input::MonitorFailed(which, error) => {
                // Without notifications the watch still reads the kernel every interval.
                self.say(
                    Level::Error,
                    &format!(
                        "the {which} notifications stopped ({error}); falling back to a read every {}",
                        describe::duration(POLL_INTERVAL)
                    ),
                );
                state.interval = state.interval.min(POLL_INTERVAL);
                state.next_poll = state.next_poll.min(now + state.interval);
            }
            Input::Reload => self.reload(state),
            Input::Log(level, line) => self.say(level, &line),
        }
    }

    /// A line about what another program or the system did.
    fn note(&mut self, state: &mut State, level: Level, line: &str) {
        self.say(level, line);
        state.announced = true;
    }

    /// The changes of one transaction another program committed.
    fn transaction(&mut self, state: &mut State, changes: &[RulesetChange], generation: Option<&Generation>) {
        let ours: Vec<RulesetChange> = changes
            .iter()
            .filter(|c| c.family == portmap_netlink::Family::Inet.number() && c.table == self.table)
            .cloned()
            .collect();
        if ours.is_empty() {
            return;
        }
        // Held back (and counted) while the watch is backing off, so a fight does not flood the log.
        if state.backoff.ready_at().is_some() {
            state.held_back += 1;
        } else {
            let line = describe::transaction(&format!("inet {}", self.table), &ours, generation);
            self.note(state, Level::Warning, &line);
        }
        state.mark(Instant::now(), Trigger::Announced);
    }

    /// Whether the configuration names an interface.
    fn configured(&self, name: &str) -> bool {
        let s = &self.model.settings;
        s.wan_interfaces
            .iter()
            .chain(&s.lan_interfaces)
            .any(|i| i == name)
    }

    /// A link appeared, changed or went.
    fn link(&mut self, state: &mut State, link: &LinkChange) {
        let before = state.interfaces.get(&link.index).cloned();
        let relevant =
            self.configured(&link.name) || before.as_ref().is_some_and(|(old, _)| self.configured(old));
        let line = if link.present {
            state.interfaces.insert(link.index, (link.name.clone(), link.up));
            match before {
                None => Some(format!(
                    "interface {} appeared ({})",
                    shown_arg(&link.name),
                    if link.up { "up" } else { "down" }
                )),
                Some((old, _)) if old != link.name => Some(format!(
                    "interface {} renamed to {}",
                    shown_arg(&old),
                    shown_arg(&link.name)
                )),
                Some((_, was_up)) if was_up != link.up => Some(format!(
                    "interface {} is {}",
                    shown_arg(&link.name),
                    if link.up { "up" } else { "down" }
                )),
                Some(_) => None,
            }
        } else {
            state.interfaces.remove(&link.index);
            Some(format!("interface {} went away", shown_arg(&link.name)))
        };
        if let Some(line) = line
            && relevant
        {
            self.note(state, Level::Info, &line);
            state.mark(Instant::now(), Trigger::Announced);
        }
    }

    /// An address was added or removed.
    fn address(&mut self, state: &mut State, addr: &AddressChange) {
        let Some((name, _)) = state.interfaces.get(&addr.index).cloned() else {
            return;
        };
        if !self.configured(&name) {
            return;
        }
        let line = format!(
            "address {}/{} {} {}",
            addr.addr,
            addr.prefix,
            if addr.added { "added on" } else { "removed from" },
            shown_arg(&name)
        );
        self.note(state, Level::Info, &line);
        state.mark(Instant::now(), Trigger::Announced);
    }

    /// Read the configuration again; keep the running one if the new one is not valid.
    fn reload(&mut self, state: &mut State) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match (self.loader)() {
            Ok(model) => {
                let line = if model == self.model {
                    format!(
                        "configuration reloaded: unchanged ({})",
                        describe::count(model.mappings.len(), "mapping")
                    )
                } else {
                    format!(
                        "configuration reloaded: {}",
                        describe::count(model.mappings.len(), "mapping")
                    )
                };
                self.say(Level::Info, &line);
                let mappings = model.mappings.len();
                self.model = model;
                self.set_status(|s| {
                    s.reloads += 1;
                    s.mappings = mappings;
                });
                // A new configuration is applied at once, whatever the back-off says.
                state.backoff = Backoff::new(self.options.backoff);
                state.mark(Instant::now(), Trigger::Reload);
            }
            Err(errors) => {
                self.say(
                    Level::Error,
                    &format!("reload refused, the running configuration is kept: {errors}"),
                );
                self.set_status(|s| s.failed_reloads += 1);
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Observe, plan and apply the running configuration: every write of the watch (the first
    /// apply, each repair, each reload) goes through here.
    fn converge(&mut self) -> Result<crate::Outcome, Error> {
        // The writers' lock (one per namespace and table), held around the read and the write, so
        // that the watch takes turns with `portmap apply`, `destroy` and a confirm watchdog.
        let key = crate::LockKey::new(self.kind, &self.netns, &self.table)?;
        let mut waited: Option<String> = None;
        let lock = crate::Lock::acquire(
            &key,
            &crate::RunDir::from_env(),
            self.options.lock_timeout,
            |key, holder| {
                waited = Some(format!(
                    "waiting for the lock on {key}, held by {}",
                    holder.map_or_else(|| "another portmap writer".to_owned(), ToString::to_string)
                ));
            },
        );
        if let Some(line) = waited {
            self.say(Level::Info, &line);
        }
        let _lock = lock?;
        let result = self.session.converge(&self.model);
        match &result {
            Ok(outcome) if outcome.plan.is_empty() => {}
            Ok(_) => self.record_apply(true, None),
            Err(e) => self.record_apply(false, Some(e.to_string())),
        }
        result
    }

    /// A change `portmap apply --confirm` made and is waiting to have confirmed, with its watchdog
    /// alive. Until it is confirmed or rolled back it decides what the table holds: repairing it
    /// now would undo the change being tried (and make the rollback refuse, the table having
    /// changed since), so the watch holds back until then.
    fn confirm_pending(&self) -> Option<crate::confirm::Pending> {
        let key = crate::LockKey::new(self.kind, &self.netns, &self.table).ok()?;
        let confirmation = crate::confirm::Confirmation::new(crate::RunDir::from_env(), key);
        confirmation
            .pending()
            .ok()
            .flatten()
            .filter(crate::confirm::Pending::watchdog_alive)
    }

    /// Record the outcome of a write for `portmap metrics` (`portmap_last_apply_*`), as
    /// `portmap apply` does.
    fn record_apply(&self, success: bool, error: Option<String>) {
        let record = crate::metrics::ApplyRecord::now(success, error);
        crate::metrics::record_apply_of(self.kind, &self.netns, &self.table, &record);
    }

    /// Say once for each mapping of the configuration that its `expires` has come (the kernel
    /// removed its forward, or its rules match nothing: nothing to repair), and look at the
    /// kernel again just after the next one comes, so that it is said then.
    fn note_expiries(&mut self, state: &mut State, plan: &portmap_core::Plan) {
        let Some(now) = plan.made_at else {
            return;
        };
        let mut next: Option<i64> = None;
        for m in &plan.desired.mappings {
            let Some(at) = m.expires else {
                continue;
            };
            let left = at.seconds_from(now);
            if left > 0 {
                state.expired.remove(&m.name);
                next = Some(next.map_or(left, |n| n.min(left)));
            } else if state.expired.insert(m.name.clone()) {
                let line = format!(
                    "mapping {} expired at {at}: the kernel no longer forwards it, and it is not created again",
                    m.name
                );
                self.say(Level::Info, &line);
            }
        }
        if let Some(left) = next {
            let wake = Duration::from_secs(left.unsigned_abs()) + Duration::from_millis(500);
            state.next_poll = state.next_poll.min(Instant::now() + wake);
        }
    }

    /// Read the kernel, compare, and repair what differs.
    fn check(&mut self, state: &mut State) {
        if let Some(pending) = self.confirm_pending() {
            if self.held_for.as_deref() != Some(pending.id.as_str()) {
                let line = format!(
                    "not repairing while a change waits for its confirmation: {}",
                    pending.describe()
                );
                self.say(Level::Info, &line);
                self.held_for = Some(pending.id.clone());
            }
            // Look again just after the deadline (or sooner, should it be confirmed); what made
            // this check is seen then.
            state.dirty = None;
            let again = pending.remaining().min(state.interval) + Duration::from_millis(250);
            state.next_poll = state.next_poll.min(Instant::now() + again);
            return;
        }
        if self.held_for.take().is_some() {
            self.say(
                Level::Info,
                "the confirmation is settled; checking the table again",
            );
        }
        let dirty = state.dirty.take();
        let trigger = dirty.map_or(Trigger::Poll, |d| d.trigger);
        let started = Instant::now();
        let result = self.converge();
        let elapsed = started.elapsed();
        let now = Instant::now();
        let wall = SystemTime::now();
        let nft = self.kind == BackendKind::Nft;
        if let Ok(outcome) = &result {
            self.note_expiries(state, &outcome.plan);
        }
        match result {
            Ok(outcome) if outcome.plan.is_empty() => {
                self.set_status(|s| s.last_check = Some(wall));
            }
            Ok(outcome) => {
                let reload = trigger == Trigger::Reload;
                if !reload && (!state.announced || trigger == Trigger::Poll) {
                    let line = format!("drift found: {}", describe::drift(&outcome.plan));
                    self.say(Level::Warning, &line);
                }
                if !reload {
                    state.backoff.drift_seen(now);
                    state.backoff.repaired(now);
                }
                let mut line = format!(
                    "{}: {}",
                    if reload { "applied" } else { "repaired" },
                    describe::applied(&outcome.plan, &outcome.report, elapsed, nft)
                );
                match state.held_back {
                    0 => {}
                    1 => line.push_str(" (1 more change by another program since the last repair)"),
                    n => {
                        let _ = write!(
                            line,
                            " ({n} more changes by other programs since the last repair)"
                        );
                    }
                }
                self.say(Level::Info, &line);
                self.set_status(|s| {
                    s.last_check = Some(wall);
                    s.last_apply = Some(wall);
                    s.last_apply_ok = true;
                    if !reload {
                        s.repairs += 1;
                    }
                });
                state.held_back = 0;
                self.announce_backoff(state);
            }
            Err(e) => {
                state.backoff.drift_seen(now);
                state.backoff.repaired(now);
                let delay = state.backoff.delay().max(self.options.debounce);
                self.say(
                    Level::Error,
                    &format!(
                        "repair failed: {e}; trying again in {}",
                        describe::duration(delay)
                    ),
                );
                let text = e.to_string();
                self.set_status(|s| {
                    s.last_check = Some(wall);
                    s.last_apply = Some(wall);
                    s.last_apply_ok = false;
                    s.failed_repairs += 1;
                    s.last_error = Some(text);
                });
                state.mark(now, trigger);
                if let Some(d) = state.dirty.as_mut() {
                    d.not_before = Some(now + delay);
                }
            }
        }
        state.announced = false;
    }

    /// Say so when the next repair will wait.
    fn announce_backoff(&mut self, state: &mut State) {
        let delay = state.backoff.delay();
        let backing_off = !delay.is_zero();
        self.set_status(|s| s.backing_off = backing_off);
        if backing_off {
            let line = format!(
                "backing off: {} repairs in a row — another program keeps changing {}; the next repair waits {} (notifications meanwhile are counted, not logged)",
                state.backoff.streak(),
                self.table_display(),
                describe::duration(delay)
            );
            self.say(Level::Warning, &line);
        }
    }
}

/// Whether a transaction was committed by this process (its own repairs).
fn is_own(generation: &Generation, state: &State) -> bool {
    generation.pid != 0 && (generation.pid == state.pid || generation.pid == state.tid)
}

/// What made the watch look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A notification, already logged.
    Announced,
    /// Something no notification described (lost notifications).
    Unannounced,
    /// The interval passed.
    Poll,
    /// The configuration changed.
    Reload,
}

/// The kernel may have drifted since `first`.
#[derive(Debug, Clone, Copy)]
struct Dirty {
    first: Instant,
    last: Instant,
    trigger: Trigger,
    /// A failed repair waits until then.
    not_before: Option<Instant>,
}

/// The loop's state.
struct State {
    debounce: Duration,
    interval: Duration,
    next_poll: Instant,
    dirty: Option<Dirty>,
    backoff: Backoff,
    /// Ruleset changes waiting for the end of their transaction, and since when.
    pending: Vec<RulesetChange>,
    pending_since: Option<Instant>,
    /// Interfaces by index: name and up-state.
    interfaces: HashMap<u32, (String, bool)>,
    /// Whether a line since the last check said what changed.
    announced: bool,
    /// Lines held back while backing off.
    held_back: u64,
    pid: u32,
    tid: u32,
    watchdog: Option<Duration>,
    next_ping: Instant,
    /// The mappings of the configuration whose `expires` the watch has seen come (said once).
    expired: std::collections::BTreeSet<String>,
}

impl State {
    fn new(options: &WatchOptions, interval: Duration, interfaces: HashMap<u32, (String, bool)>) -> Self {
        let now = Instant::now();
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        State {
            debounce: options.debounce,
            interval,
            next_poll: now + interval,
            dirty: None,
            backoff: Backoff::new(options.backoff),
            pending: Vec::new(),
            pending_since: None,
            interfaces,
            announced: false,
            held_back: 0,
            pid: std::process::id(),
            tid: u32::try_from(tid).unwrap_or(0),
            watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
            next_ping: now,
            expired: std::collections::BTreeSet::new(),
        }
    }

    /// Something may have drifted at `now`.
    fn mark(&mut self, now: Instant, trigger: Trigger) {
        if matches!(trigger, Trigger::Announced | Trigger::Unannounced) {
            self.backoff.drift_seen(now);
        }
        match &mut self.dirty {
            Some(d) => {
                d.last = now;
                // A poll does not hide that a notification came; a reload is applied at once.
                if d.trigger == Trigger::Poll || trigger == Trigger::Reload {
                    d.trigger = trigger;
                }
            }
            None => {
                self.dirty = Some(Dirty {
                    first: now,
                    last: now,
                    trigger,
                    not_before: None,
                });
            }
        }
    }

    /// When the kernel is to be read: once a burst is over (or has lasted long enough), not
    /// before the back-off allows.
    fn check_at(&self) -> Option<Instant> {
        let d = self.dirty?;
        let settled = if matches!(d.trigger, Trigger::Poll | Trigger::Reload) {
            d.last
        } else {
            (d.last + self.debounce).min(d.first + MAX_DEBOUNCE)
        };
        let mut at = settled;
        if let Some(ready) = self.backoff.ready_at() {
            at = at.max(ready);
        }
        if let Some(not_before) = d.not_before {
            at = at.max(not_before);
        }
        Some(at)
    }

    fn due(&self, now: Instant) -> bool {
        self.check_at().is_some_and(|at| now >= at)
    }

    /// When the loop must wake at the latest.
    fn next_deadline(&self, now: Instant) -> Instant {
        let mut at = self.next_poll;
        if let Some(check) = self.check_at() {
            at = at.min(check);
        }
        if let Some(since) = self.pending_since {
            at = at.min(since + TRANSACTION_WAIT);
        }
        if self.watchdog.is_some() {
            at = at.min(self.next_ping);
        }
        at.max(now)
    }
}

/// The netlink layer's handle for a namespace named by the core's plain value.
fn netlink_netns(netns: &Netns) -> portmap_netlink::Netns {
    match netns {
        Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
        Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
        _ => portmap_netlink::Netns::Current,
    }
}

/// The namespace's interfaces by index (empty when they cannot be read: the links monitor then
/// learns them as they change).
fn interfaces_by_index(netns: &Netns) -> HashMap<u32, (String, bool)> {
    portmap_netlink::interfaces(&netlink_netns(netns))
        .map(|list| list.into_iter().map(|i| (i.index, (i.name, i.up))).collect())
        .unwrap_or_default()
}

/// Log lines on standard error, one per line. When standard error is the journal
/// (`JOURNAL_STREAM` names it), each line starts with its priority (`<3>`, `<4>`, `<6>`), which
/// journald reads; otherwise warnings and errors start with `warning:` and `error:`.
pub fn stderr_log() -> LogSink {
    let journal = stderr_is_journal();
    Box::new(move |level, line| {
        let text = if journal {
            let priority = match level {
                Level::Error => 3,
                Level::Warning => 4,
                Level::Info => 6,
            };
            format!("<{priority}>{line}\n")
        } else {
            match level {
                Level::Error => format!("error: {line}\n"),
                Level::Warning => format!("warning: {line}\n"),
                Level::Info => format!("{line}\n"),
            }
        };
        let mut err = std::io::stderr().lock();
        let _ = IoWrite::write_all(&mut err, text.as_bytes()).and_then(|()| IoWrite::flush(&mut err));
    })
}

/// Whether standard error is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Signals to the watch: `SIGHUP` reloads, `SIGTERM` and `SIGINT` stop it (so it exits 0). Until
/// the guard drops, the signals no longer have their default effect.
pub fn forward_signals(handle: &WatchHandle) -> Result<SignalForwarder, WatchError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| WatchError::setup("installing the signal handlers", e))?;
    let closer = signals.handle();
    let handle = handle.clone();
    let thread = std::thread::Builder::new()
        .name("portmap-watch-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => handle.reload(),
                    SIGTERM => handle.stop("SIGTERM"),
                    SIGINT => handle.stop("SIGINT"),
                    _ => {}
                }
            }
        })
        .map_err(|e| WatchError::setup("starting the signal thread", e))?;
    Ok(SignalForwarder {
        closer,
        thread: Some(thread),
    })
}

/// Forwards signals to a watch until dropped ([`forward_signals`]).
#[derive(Debug)]
pub struct SignalForwarder {
    closer: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.closer.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read the kernel's log of new connections (nflog `group`, the configuration's `log_group`) on a
/// thread of its own and write one line per connection of a `log: true` mapping to the watch's
/// log (`connection: MAPPING PROTO SOURCE -> TARGET`), until the watch stops. The group is bound
/// when this is called: nflog gives a group to one reader, so a second watch (or `portmap log`)
/// on the same group is refused here.
pub fn log_connections(
    handle: &WatchHandle,
    netns: &Netns,
    group: u16,
) -> Result<JoinHandle<()>, WatchError> {
    let mut log = crate::connlog::ConnectionLog::open(netns, group)
        .map_err(|e| WatchError::setup("reading the connection log (nflog)", e))?;
    let handle = handle.clone();
    std::thread::Builder::new()
        .name("portmap-connlog".into())
        .spawn(move || {
            let mut lost = 0;
            while !handle.stopped() {
                match log.next_event(Some(Duration::from_millis(250))) {
                    Ok(Some(event)) => handle.log(Level::Info, &format!("connection: {event}")),
                    Ok(None) => {}
                    Err(e) => {
                        handle.log(Level::Error, &format!("connection log stopped: {e}"));
                        return;
                    }
                }
                if log.lost() > lost {
                    lost = log.lost();
                    handle.log(
                        Level::Warning,
                        "the kernel dropped connection log events (too many at once); some connections are not logged",
                    );
                }
            }
        })
        .map_err(|e| WatchError::setup("starting the connection log thread", e))
}
