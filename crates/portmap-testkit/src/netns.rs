//! `Netns`: a named network namespace (`ip netns add`) that exists exactly as long as its guard. Drop
//! kills the processes the guard started and runs `ip netns del`, also while a test panics.
//!
//! Names are `pm-<tag>-<pid>-<counter>`: unique per test process and per guard, so tests run in
//! parallel threads and in parallel processes without clashing. Links are never named after the
//! namespace (veth ends are created inside the namespaces with fixed names), so the name's length
//! does not matter. Namespaces left behind by a test process that was killed outright (no Drop) are
//! removed by the first guard of a later run, and only when nothing runs in them.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::command::{Run, run};

/// Prefix of every namespace this harness makes.
pub const PREFIX: &str = "pm-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Serialises `ip netns add`: the very first one on a machine sets up the `/run/netns` mount, and two
/// doing that at once can stack mounts. Also guards the one-time sweep of stale namespaces.
static CREATE: Mutex<bool> = Mutex::new(false);

/// A network namespace owned by a test. See the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl Netns {
    /// Create `pm-<tag>-<pid>-<n>` with its loopback up. `tag` is shortened to at most 12 characters of
    /// `[a-z0-9-]`.
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        let ns = Netns::bare(tag);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Like [`Netns::new`], but the namespace as the kernel makes it: loopback down, no address on
    /// any link.
    #[track_caller]
    pub fn bare(tag: &str) -> Netns {
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(12)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        {
            let mut swept = CREATE.lock().unwrap_or_else(PoisonError::into_inner);
            if !*swept {
                sweep_stale();
                *swept = true;
            }
            let out = run("ip", &["netns", "add", &name], None, None);
            assert!(
                out.ok(),
                "cannot create network namespace {name} (needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN)\n{out}"
            );
        }
        Netns {
            name,
            children: Mutex::new(Vec::new()),
        }
    }

    /// A namespace standing in for a router in tests that need no traffic: loopback plus a link (up)
    /// for each interface name. Each is one end of a veth pair whose other end (`peerN`) stays in the
    /// same namespace (the `dummy` driver is not in every kernel).
    #[track_caller]
    pub fn with_links(tag: &str, links: &[&str]) -> Netns {
        let ns = Netns::new(tag);
        let mut batch = String::new();
        for (i, link) in links.iter().enumerate() {
            let _ = writeln!(batch, "link add {link} type veth peer name peer{i}");
            let _ = writeln!(batch, "link set {link} up\nlink set peer{i} up");
        }
        ns.ip_batch(&batch);
        ns
    }

    /// The namespace's name, as `ip netns` and `portmap --netns` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's file under `/run/netns`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Run `f` on a fresh thread that has entered this namespace (`setns(CLONE_NEWNET)` on that thread
    /// only) and return its result. Sockets created inside stay in this namespace for their whole life,
    /// whichever thread uses them later. A panic in `f` is resumed on the caller's thread.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = self.path();
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) with a valid namespace fd; it changes only the calling thread's network
                // namespace, and this thread ends when `f` returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert!(rc == 0, "setns({path}): {}", io::Error::last_os_error());
                drop(file);
                f()
            });
            match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `ip netns exec NAME program args…`, whatever its exit code.
    pub fn exec(&self, program: &str, args: &[&str]) -> Run {
        self.exec_with_stdin(program, args, None)
    }

    /// Standard output of `program args…` run inside the namespace; panics (with the command and both
    /// streams) unless it exits 0.
    #[track_caller]
    pub fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(out.ok(), "in namespace {}:\n{out}", self.name);
        out.stdout
    }

    /// Like [`Netns::exec`] with text on standard input.
    pub fn exec_with_stdin(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Run {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full, stdin, None)
    }

    /// `ip -n NAME args…`; panics when it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> Run {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        let out = run("ip", &full, None, None);
        assert!(out.ok(), "in namespace {}:\n{out}", self.name);
        out
    }

    /// Several `ip` commands in one process (`ip -n NAME -batch -`); panics when one fails.
    #[track_caller]
    pub fn ip_batch(&self, commands: &str) {
        let out = run("ip", &["-n", &self.name, "-batch", "-"], Some(commands), None);
        assert!(out.ok(), "in namespace {}:\n{commands}\n{out}", self.name);
    }

    /// `sysctl -w key=value` inside the namespace; panics when it fails.
    #[track_caller]
    pub fn sysctl(&self, setting: &str) {
        let out = self.exec("sysctl", &["-q", "-w", setting]);
        assert!(out.ok(), "in namespace {}:\n{out}", self.name);
    }

    /// `nft args…` inside the namespace, whatever its exit code.
    pub fn nft(&self, args: &[&str]) -> Run {
        self.exec("nft", args)
    }

    /// Load an nft script (`nft -f -`) inside the namespace; panics when nft refuses it.
    #[track_caller]
    pub fn nft_load(&self, script: &str) {
        let out = self.exec_with_stdin("nft", &["-f", "-"], Some(script));
        assert!(
            out.ok(),
            "nft -f refused the script in {}:\n{script}\n{out}",
            self.name
        );
    }

    /// Start a long-running process inside the namespace and return its pid. It is killed (and reaped)
    /// when this guard drops.
    #[track_caller]
    pub fn spawn(&self, program: &str, args: &[&str]) -> u32 {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", self.name));
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        pid
    }

    /// `ip netns exec NAME program`, as a command to add arguments to and run yourself (e.g. to time
    /// it). Unlike [`Netns::spawn`], the guard does not own what it starts.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Whether the namespace still exists (its file under `/run/netns`).
    pub fn exists(name: &str) -> bool {
        Path::new("/run/netns").join(name).exists()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let children = std::mem::take(self.children.get_mut().unwrap_or_else(PoisonError::into_inner));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let out = run("ip", &["netns", "del", &self.name], None, None);
        if !out.ok() {
            eprintln!(
                "warning: could not delete network namespace {}:\n{out}",
                self.name
            );
        }
    }
}

/// Join `a` and `b` with a veth pair, `a_if` in `a` and `b_if` in `b`, both ends up. The pair is
/// created inside `a` with its peer moved straight into `b`, so it never exists in the host namespace.
#[track_caller]
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip_batch(&format!(
        "link add {a_if} type veth peer name {b_if} netns {b}\nlink set {a_if} up\n",
        b = b.name()
    ));
    b.ip(&["link", "set", b_if, "up"]);
}

/// Remove `pm-…-<pid>-<n>` namespaces whose test process is gone and in which nothing runs.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('-').collect();
        if parts.len() < 3 || parts[parts.len() - 1].parse::<u32>().is_err() {
            continue;
        }
        let Ok(pid) = parts[parts.len() - 2].parse::<u32>() else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = run("ip", &["netns", "pids", &name], None, None);
        if pids.ok() && pids.stdout.trim().is_empty() {
            let _ = run("ip", &["netns", "del", &name], None, None);
        }
    }
}
