//! The write lock and confirm-or-rollback, end to end: concurrent applies take turns and the last
//! one wins whole; a held lock makes a writer wait, then give up naming the holder; a holder
//! killed with -9 frees it; `apply --confirm` is kept by `portmap confirm` or `yes` on the
//! terminal, and otherwise rolled back by its detached watchdog — also when the CLI is killed
//! with -9 or its terminal hangs up — unless another apply changed the table in between.
//!
//! Every test builds its own lab (client / router / LAN namespaces) and runs the real binary in
//! the router namespace; the lock files and confirmation records live under the run directory
//! (`/run/portmap`, keyed by the namespace's identity, so concurrent tests never share one). The
//! terminal tests give the binary a pseudo-terminal of their own. Nothing touches the host's
//! network namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portmap_testkit::topology::{eventually, path_str};
use portmap_testkit::{CLIENT, Topology, config, require_root};
use serde_json::Value;

use crate::PORTMAP;

const WEB: &str = "  - { name: web, port: 8080, to: 192.168.1.66, to_port: 80 }";
const SSH: &str = "  - { name: ssh, port: 2222, to: 192.168.1.66, to_port: 22 }";
const DNS: &str = "  - { name: dns, protocol: udp, port: 5353, to: 192.168.1.66, to_port: 53 }";

/// Write `mappings` as config file `name` in the lab's directory; its path.
fn write(t: &Topology, name: &str, mappings: &str) -> String {
    path_str(&t.dir.write(name, &config(mappings))).to_owned()
}

/// `plan -c FILE --detailed-exitcode`'s exit code: 0 when the kernel matches FILE.
fn plan_code(t: &Topology, file: &str) -> i32 {
    let run = t.portmap(&["plan", "-c", file, "--detailed-exitcode"]);
    assert!(run.code == 0 || run.code == 2, "{run}");
    run.code
}

/// Removes the confirmation records a test left under the run directory for its lab's key (the
/// namespace goes with the lab; its inode may be given to a later namespace).
pub(crate) struct Records(Vec<std::path::PathBuf>);

impl Records {
    pub(crate) fn of(t: &Topology) -> Records {
        let kind = portmap::BackendKind::from_name(t.backend()).expect("a backend name");
        let netns = portmap::Netns::Named(t.router.name().to_owned());
        let key = portmap::LockKey::new(kind, &netns, "portmap").expect("lock key");
        let dir = portmap::RunDir::from_env().path().join("confirm");
        Records(vec![
            dir.join(format!("{}.json", key.stem())),
            dir.join(format!("{}.last.json", key.stem())),
        ])
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `status --json`'s `confirm` object.
fn confirm_state(t: &Topology) -> Value {
    t.portmap(&["status", "--json"]).success().json()["confirm"].clone()
}

/// Wait until the confirmation `id` is settled; its record.
#[track_caller]
fn settled(t: &Topology, id: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    let done = eventually(limit, || {
        last = confirm_state(t);
        last["last"]["id"].as_str() == Some(id)
    });
    assert!(done, "confirmation {id} not settled within {limit:?}: {last:#}");
    last["last"].clone()
}

/// The id of the pending confirmation (panics when none is pending).
#[track_caller]
fn pending_id(t: &Topology) -> String {
    let state = confirm_state(t);
    state["pending"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing pending: {state:#}"))
        .to_owned()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// `portmap --netns ROUTER --backend B args…` on a pseudo-terminal of its own (its controlling
/// terminal, in a new session), as a person at a console or over SSH runs it.
struct OnTerminal {
    child: Child,
    master: Option<File>,
    seen: String,
}

impl OnTerminal {
    #[track_caller]
    fn start(t: &Topology, args: &[&str]) -> OnTerminal {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors into the two ints; no name, termios or size.
        let rc = unsafe {
            libc::openpty(
                &raw mut master,
                &raw mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else; the master
        // must not leak into the child (the terminal would then never hang up).
        let (master, slave) = unsafe {
            libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
            (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", t.router.name(), PORTMAP.binary()])
            .args(["--netns", t.router.name(), "--backend", t.backend()])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec only setsid and ioctl, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start portmap on a terminal");
        // SAFETY: fcntl on our own open descriptor.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        OnTerminal {
            child,
            master: Some(master),
            seen: String::new(),
        }
    }

    /// Read the terminal until `needle` shows (panics after `limit` with what it showed).
    #[track_caller]
    fn expect(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let master = self.master.as_mut().expect("terminal open");
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` did not show within {limit:?}; the terminal shows:\n{}",
                self.seen
            );
            match master.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(10)),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // EIO: the other side is closed (the program ended).
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        let master = self.master.as_mut().expect("terminal open");
        master.write_all(format!("{line}\n").as_bytes()).expect("type");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the program to end; its exit code.
    #[track_caller]
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(Instant::now() < deadline, "did not end; terminal:\n{}", self.seen);
            // Keep reading, so the program never blocks on a full terminal.
            let _ = self.master.as_mut().map(|m| m.read(&mut [0u8; 4096]));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Close the terminal's master side: the kernel hangs the session up (SIGHUP), as when an
    /// SSH connection drops.
    fn hang_up(&mut self) {
        self.master = None;
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

every_backend! {
/// Six applies of six configurations at once: all succeed, one after the other, and the kernel
/// ends up holding exactly one of them (whose plan is then empty) — not a mix.
fn concurrent_applies_take_turns_and_the_last_wins_whole(t) {
    let _records = Records::of(t);
    let files: Vec<String> = (0..6u16)
        .map(|i| {
            let mappings = format!(
                "  - {{ name: web, port: 8080, to: 192.168.1.66, to_port: {} }}\n  - {{ name: only{i}, port: {}, to: 192.168.1.25, to_port: 22 }}",
                80 + i,
                9000 + i
            );
            write(t, &format!("c{i}.yaml"), &mappings)
        })
        .collect();
    let started = Instant::now();
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| s.spawn(move || t.portmap(&["apply", "-c", f, "--auto-approve"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        run.success();
    }
    eprintln!("6 concurrent applies ({}) took {:?}", t.backend(), started.elapsed());
    let matching: Vec<usize> = (0..files.len()).filter(|&i| plan_code(t, &files[i]) == 0).collect();
    assert_eq!(matching.len(), 1, "the kernel should equal exactly one configuration, equals {matching:?}");
    // Some of them had to wait, and said so.
    assert!(
        runs.iter().any(|r| r.stderr.contains("waiting for the lock")),
        "no apply waited: {runs:#?}"
    );
}
}

every_backend! {
/// A lock held by another process makes apply wait, then give up naming the holder (pid and
/// command) and how long it waited; the kernel is unchanged. Killing the holder with -9 frees the
/// lock at once.
fn a_held_lock_times_out_naming_its_holder_and_kill_9_frees_it(t) {
    let _records = Records::of(t);
    let before = write(t, "before.yaml", WEB);
    let after = write(t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();

    // A person at the terminal, looking at the plan: apply holds the lock while it asks.
    let mut holder = OnTerminal::start(t, &["apply", "-c", &after]);
    holder.expect("Only 'yes' will be accepted", Duration::from_secs(20));

    let started = Instant::now();
    let run = t.portmap(&["apply", "-c", &after, "--auto-approve", "--lock-timeout", "1s"]);
    let waited = started.elapsed();
    run.expect_code(1);
    assert!(waited >= Duration::from_secs(1), "gave up after {waited:?}");
    let pid = holder.pid().to_string();
    for needle in ["waiting for the lock", "is locked by another portmap writer", &format!("pid {pid} (portmap --netns"), "apply -c", "after waiting 1.0 s", "nothing was changed"] {
        assert!(run.stderr.contains(needle), "expected `{needle}`:\n{run}");
    }
    assert_eq!(run.stderr.matches("waiting for the lock").count(), 1, "told once:\n{run}");
    assert_eq!(plan_code(t, &before), 0, "the kernel changed");

    // --lock-timeout 0 does not wait at all.
    let started = Instant::now();
    t.portmap(&["apply", "-c", &after, "--auto-approve", "--lock-timeout", "0"]).expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(1));

    // Read-only commands never take the lock; a saved plan's apply does.
    t.portmap(&["status", "--lock-timeout", "0"]).success();
    let saved = t.dir.path().join("saved.plan");
    t.portmap(&["plan", "-c", &after, "--lock-timeout", "0", "--out", path_str(&saved)]).success();
    let run = t.portmap(&["apply", path_str(&saved), "--lock-timeout", "0"]);
    run.expect_code(1);
    assert!(run.stderr.contains(&format!("pid {pid} (portmap --netns")), "{run}");

    holder.kill_9();
    let started = Instant::now();
    // The saved plan, made while the holder waited at its prompt, is still good: nothing changed.
    t.portmap(&["apply", path_str(&saved), "--lock-timeout", "5s"]).success();
    assert!(started.elapsed() < Duration::from_secs(3), "the lock was not freed by kill -9");
    assert_eq!(plan_code(t, &after), 0);
}
}

every_backend! {
/// `apply --confirm` then `portmap confirm` in time: the change stays, the watchdog is gone, and
/// the new forward carries traffic past the deadline.
fn a_confirmed_change_stays(t) {
    let _records = Records::of(t);
    let _web = t.tcp_server("192.168.1.66:80");
    let _ssh = t.tcp_server("192.168.1.66:22");
    let before = write(t, "before.yaml", WEB);
    let after = write(t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    let run = t.portmap(&["apply", "-c", &after, "--auto-approve", "--confirm", "3"]);
    run.success();
    assert!(run.stdout.contains("unless confirmed: run `portmap --netns"), "{run}");
    let state = confirm_state(t);
    let watchdog = state["pending"]["watchdog_pid"].as_u64().unwrap();
    assert!(alive(watchdog), "{state:#}");
    assert_eq!(state["pending"]["watchdog_running"], true);
    t.assert_tcp(CLIENT, 2222, "192.168.1.66:22");

    let run = t.portmap(&["confirm"]);
    run.success();
    assert!(run.stdout.contains("Confirmed the change"), "{run}");
    assert!(!alive(watchdog), "the watchdog still runs after confirm");
    let state = confirm_state(t);
    assert!(state["pending"].is_null(), "{state:#}");
    assert_eq!(state["last"]["verdict"], "confirmed");

    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(plan_code(t, &after), 0, "the confirmed change was undone");
    t.assert_tcp(CLIENT, 2222, "192.168.1.66:22");
    t.assert_tcp_blocked(CLIENT, 8080);
}
}

every_backend! {
/// No confirmation: at the deadline the watchdog restores the table in one transaction, and the
/// old forward carries a real connection again.
fn an_unconfirmed_change_is_rolled_back_at_the_deadline(t) {
    let _records = Records::of(t);
    let _web = t.tcp_server("192.168.1.66:80");
    let before = write(t, "before.yaml", &format!("{WEB}\n{DNS}"));
    let after = write(t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    let started = Instant::now();
    t.portmap(&["apply", "-c", &after, "--auto-approve", "--confirm", "2"]).success();
    let id = pending_id(t);
    t.assert_tcp_blocked(CLIENT, 8080);

    let last = settled(t, &id, Duration::from_secs(15));
    let took = started.elapsed();
    assert_eq!(last["verdict"], "rolled_back", "{last:#}");
    assert_eq!(last["by"], "the watchdog");
    assert!(took >= Duration::from_secs(2), "rolled back before the deadline: {took:?}");
    eprintln!("rolled back {took:?} after a --confirm 2 apply ({})", t.backend());
    assert_eq!(plan_code(t, &before), 0, "the table is not what it was");
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
    assert!(confirm_state(t)["pending"].is_null());
    // The log says what the watchdog did.
    let log = std::fs::read_to_string(confirm_state(t)["log"].as_str().unwrap()).unwrap();
    assert!(log.contains(&format!("change {id} started")), "{log}");
    assert!(log.contains("rolled back at"), "{log}");
    // Now nothing is pending: confirm says so.
    let run = t.portmap(&["confirm"]);
    run.expect_code(1);
    assert!(run.stderr.contains("nothing to confirm") && run.stderr.contains("rolled back"), "{run}");
}
}

every_backend! {
/// The CLI killed with -9 while it waits at the terminal: the detached watchdog still rolls the
/// change back.
fn kill_9_of_the_cli_still_rolls_back(t) {
    let _records = Records::of(t);
    let _web = t.tcp_server("192.168.1.66:80");
    let before = write(t, "before.yaml", WEB);
    let after = write(t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    let mut cli = OnTerminal::start(t, &["apply", "-c", &after, "--auto-approve", "--confirm", "3"]);
    cli.expect("Keep this change? Type yes within 3 s", Duration::from_secs(20));
    let id = pending_id(t);
    cli.kill_9();
    t.assert_tcp_blocked(CLIENT, 8080);
    let last = settled(t, &id, Duration::from_secs(15));
    assert_eq!(last["verdict"], "rolled_back", "{last:#}");
    assert_eq!(plan_code(t, &before), 0);
    t.assert_tcp(CLIENT, 8080, "192.168.1.66:80");
}
}

every_backend! {
/// Another apply between the confirm-apply and its deadline: the watchdog leaves the table alone
/// and says so, in `status` and in the log.
fn another_apply_in_between_is_not_clobbered(t) {
    let _records = Records::of(t);
    let before = write(t, "before.yaml", WEB);
    let confirmed = write(t, "confirmed.yaml", SSH);
    let other = write(t, "other.yaml", DNS);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    t.portmap(&["apply", "-c", &confirmed, "--auto-approve", "--confirm", "2"]).success();
    let id = pending_id(t);
    let run = t.portmap(&["apply", "-c", &other, "--auto-approve"]);
    run.success();
    assert!(run.stderr.contains("will NOT roll back"), "{run}");
    let last = settled(t, &id, Duration::from_secs(15));
    assert_eq!(last["verdict"], "not_rolled_back", "{last:#}");
    let detail = last["detail"].as_str().unwrap();
    assert!(detail.contains("was changed after that apply"), "{detail}");
    assert_eq!(plan_code(t, &other), 0, "the other apply was clobbered");
    let status = t.portmap(&["status"]);
    assert!(status.stdout.contains("Last confirmation: NOT rolled back"), "{status}");
    let log = std::fs::read_to_string(confirm_state(t)["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("NOT rolled back"), "{log}");
}
}

every_backend! {
/// Applied with --confirm onto no table at all: the rollback removes the table.
fn a_rollback_to_no_table_removes_the_table(t) {
    let _records = Records::of(t);
    let after = write(t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &after, "--auto-approve", "--confirm", "1"]).success();
    let id = pending_id(t);
    let last = settled(t, &id, Duration::from_secs(15));
    assert_eq!(last["verdict"], "rolled_back", "{last:#}");
    assert!(last["detail"].as_str().unwrap().contains("no table before"), "{last:#}");
    assert_eq!(t.portmap(&["status", "--json"]).success().json()["state"], "missing");
}
}

#[test]
fn typing_yes_at_the_terminal_confirms() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-yes");
    let _records = Records::of(&t);
    let before = write(&t, "before.yaml", WEB);
    let after = write(&t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    let mut cli = OnTerminal::start(&t, &["apply", "-c", &after, "--auto-approve", "--confirm", "30"]);
    cli.expect("Type yes within 30 s", Duration::from_secs(20));
    let watchdog = confirm_state(&t)["pending"]["watchdog_pid"].as_u64().unwrap();
    cli.type_line("maybe");
    cli.expect("Type yes to keep the change or no", Duration::from_secs(5));
    cli.type_line("yes");
    cli.expect("Confirmed: the change stays.", Duration::from_secs(10));
    assert_eq!(cli.wait(Duration::from_secs(10)), 0, "{}", cli.seen);
    assert!(!alive(watchdog));
    assert_eq!(confirm_state(&t)["last"]["verdict"], "confirmed");
    assert_eq!(plan_code(&t, &after), 0);
}

#[test]
fn typing_no_at_the_terminal_rolls_back_now() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-no");
    let _records = Records::of(&t);
    let before = write(&t, "before.yaml", WEB);
    let after = write(&t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    let mut cli = OnTerminal::start(&t, &["apply", "-c", &after, "--auto-approve", "--confirm", "60"]);
    cli.expect("Type yes within 60 s", Duration::from_secs(20));
    cli.type_line("no");
    cli.expect("rolled back at", Duration::from_secs(10));
    assert_eq!(cli.wait(Duration::from_secs(10)), 0, "{}", cli.seen);
    assert_eq!(plan_code(&t, &before), 0);
}

#[test]
fn a_dropped_terminal_still_rolls_back() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-hup");
    let _records = Records::of(&t);
    let before = write(&t, "before.yaml", WEB);
    let after = write(&t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    let mut cli = OnTerminal::start(&t, &["apply", "-c", &after, "--auto-approve", "--confirm", "2"]);
    cli.expect("Type yes within 2 s", Duration::from_secs(20));
    let id = pending_id(&t);
    cli.hang_up();
    // The CLI ends with its terminal (killed by the hangup, or reading the end of its input)…
    cli.wait(Duration::from_secs(10));
    // …its watchdog does not.
    let last = settled(&t, &id, Duration::from_secs(15));
    assert_eq!(last["verdict"], "rolled_back", "{last:#}");
    assert_eq!(plan_code(&t, &before), 0);
}

#[test]
fn a_second_confirm_apply_while_one_is_pending_is_refused() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-two");
    let _records = Records::of(&t);
    let before = write(&t, "before.yaml", WEB);
    let first = write(&t, "first.yaml", SSH);
    let second = write(&t, "second.yaml", DNS);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    t.portmap(&["apply", "-c", &first, "--auto-approve", "--confirm", "30"])
        .success();
    let run = t.portmap(&["apply", "-c", &second, "--auto-approve", "--confirm", "30"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("is waiting") && run.stderr.contains("Settle it first"),
        "{run}"
    );
    assert_eq!(plan_code(&t, &first), 0, "the refused apply changed the kernel");
    // `portmap rollback` undoes the pending change now.
    let run = t.portmap(&["rollback"]);
    run.success();
    assert!(run.stdout.contains("rolled back at"), "{run}");
    assert_eq!(plan_code(&t, &before), 0);
}

#[test]
fn confirm_and_rollback_with_nothing_pending_say_so() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-none");
    let _records = Records::of(&t);
    let run = t.portmap(&["confirm"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("nothing to confirm: no change applied with `apply --confirm` is waiting"),
        "{run}"
    );
    let run = t.portmap(&["rollback"]);
    run.expect_code(1);
    assert!(run.stderr.contains("nothing to roll back"), "{run}");
    let run = t.portmap(&[
        "apply",
        "-c",
        &write(&t, "c.yaml", WEB),
        "--auto-approve",
        "--confirm",
        "0",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("from 1 to 86400"), "{run}");
    assert_eq!(
        t.portmap(&["status", "--json"]).success().json()["state"],
        "missing"
    );
}

#[test]
fn a_table_no_configuration_builds_is_not_applied_with_confirm() {
    require_root!();
    let t = Topology::new(PORTMAP, "cf-dmg");
    let _records = Records::of(&t);
    let before = write(&t, "before.yaml", WEB);
    let after = write(&t, "after.yaml", SSH);
    t.portmap(&["apply", "-c", &before, "--auto-approve"]).success();
    // A second run of forwards under the same mapping's name, by hand.
    t.router.nft(&[
        "add",
        "element",
        "inet",
        "portmap",
        "dnat4",
        "{ tcp . 9999 comment \"web\" : 192.168.1.9 . 99 }",
    ]);
    let listing = t.table();
    let run = t.portmap(&["apply", "-c", &after, "--auto-approve", "--confirm", "30"]);
    run.expect_code(1);
    // The hand-made forward has no counters of its own, so the mapping reads as damaged (and it
    // holds two runs): either way no configuration builds it again, and that is said once.
    assert!(run.stderr.contains("cannot apply with --confirm"), "{run}");
    let reasons: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("- mapping web"))
        .collect();
    assert_eq!(reasons.len(), 1, "said once:\n{run}");
    assert!(
        reasons[0].contains("tcp/9999") || reasons[0].contains("holds 2 runs"),
        "{run}"
    );
    assert_eq!(t.table(), listing, "the kernel changed");
    assert!(confirm_state(&t)["pending"].is_null());
}
