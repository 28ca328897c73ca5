//! Which iptables portmap drives — legacy (`xtables-legacy-multi`, the kernel's `x_tables`) or nft
//! (`xtables-nft-multi`, `x_tables` rules kept in nftables tables) — where its programs are, and how
//! they are run: directly (never through a shell), inside the chosen network namespace, with input
//! on stdin and the xtables lock respected.
//!
//! `Variant::System` is what the system's `iptables` command is, decided as kube-proxy does: run
//! `iptables -V` and read `(legacy)` or `(nf_tables)` from it.
//!
//! A program runs in a namespace by `setns(CLONE_NEWNET)` in the child between fork and exec
//! (`pre_exec`), with the namespace file opened by the parent: no `ip netns exec`, no shell, and
//! the same code for a named namespace, a path and the current one. This module runs programs and
//! returns their output; it must not build or interpret rules.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portmap_core::Netns;

use crate::Error;
use crate::layout::Family;

/// Which iptables to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// Whatever the system's `iptables` command is (`iptables -V`).
    #[default]
    System,
    /// `iptables-legacy`.
    Legacy,
    /// `iptables-nft`.
    Nft,
}

impl Variant {
    /// The variant a `--backend` name asks for: `iptables`, `iptables-legacy`, `iptables-nft`.
    pub fn from_backend_name(name: &str) -> Option<Variant> {
        match name {
            "iptables" => Some(Variant::System),
            "iptables-legacy" => Some(Variant::Legacy),
            "iptables-nft" => Some(Variant::Nft),
            _ => None,
        }
    }

    /// The backend name of a resolved variant (`iptables-legacy`, `iptables-nft`; `iptables` for
    /// [`Variant::System`]).
    pub fn backend_name(self) -> &'static str {
        match self {
            Variant::System => "iptables",
            Variant::Legacy => "iptables-legacy",
            Variant::Nft => "iptables-nft",
        }
    }

    /// The other concrete variant (whose rules run too and are checked for drops).
    #[must_use]
    pub fn other(self) -> Variant {
        match self {
            Variant::Legacy => Variant::Nft,
            _ => Variant::Legacy,
        }
    }

    /// Resolve [`Variant::System`] by asking the system's `iptables` (in `netns`).
    pub fn resolve(self, netns: &Netns) -> Result<Variant, Error> {
        if self != Variant::System {
            return Ok(self);
        }
        let program = find("iptables").ok_or_else(|| Error::NotInstalled {
            program: "iptables".to_owned(),
        })?;
        let out = run(&program, &["-V"], None, netns)?;
        detect(&format!("{}{}", out.stdout, out.stderr)).ok_or_else(|| Error::UnknownVariant {
            version: portmap_core::shown_arg(out.stdout.trim()),
        })
    }

    fn infix(self) -> &'static str {
        match self {
            Variant::Nft => "nft",
            _ => "legacy",
        }
    }

    /// The program for `family`'s `-restore` or `-save` (`iptables-legacy-restore`, …).
    pub fn program(self, family: Family, what: &str) -> Result<PathBuf, Error> {
        let name = format!("{}-{}-{what}", family.tool(), self.infix());
        find(&name).ok_or(Error::NotInstalled { program: name })
    }
}

/// The variant `iptables -V` names: `iptables v1.8.9 (legacy)` or `iptables v1.8.9 (nf_tables)`.
/// Versions before 1.8 print neither and are legacy.
pub fn detect(version: &str) -> Option<Variant> {
    if version.contains("(nf_tables)") {
        Some(Variant::Nft)
    } else if version.contains("(legacy)") || version.trim_start().starts_with("iptables v1.") {
        Some(Variant::Legacy)
    } else {
        None
    }
}

/// Where programs are looked for: `PATH`, then the usual sbin directories (a root cron job's PATH
/// often lacks them).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What a program printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The namespace file to enter, opened by the parent (`None`: stay in the current namespace).
fn netns_file(netns: &Netns) -> Result<Option<File>, Error> {
    let path = match netns {
        Netns::Named(name) => {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(Error::BadNetns(portmap_core::shown_arg(name)));
            }
            PathBuf::from("/run/netns").join(name)
        }
        Netns::Path(path) => path.clone(),
        _ => return Ok(None),
    };
    File::open(&path).map(Some).map_err(|source| Error::Netns {
        netns: netns.to_string(),
        source,
    })
}

/// Run `program args…` in `netns` with `stdin` fed to it, directly (no shell).
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>, netns: &Netns) -> Result<Output, Error> {
    run_with_env(program, args, stdin, netns, &[])
}

/// [`run`] with extra environment variables (e.g. `XTABLES_LOCKFILE` in tests).
pub fn run_with_env(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    netns: &Netns,
    env: &[(String, String)],
) -> Result<Output, Error> {
    let ns = netns_file(netns)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(file) = &ns {
        let fd = file.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and calls only setns(2), which
        // is async-signal-safe; `fd` stays open in the parent (and so in the child) until spawn
        // returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
    let started = Instant::now();
    let spawn_error = |source| Error::Spawn {
        program: program.display().to_string(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    drop(ns);
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        // A program that exits early closes the pipe; its exit status says why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// The xtables lock file (legacy): `XTABLES_LOCKFILE` or `/run/xtables.lock`.
pub fn lock_path(env: &[(String, String)]) -> PathBuf {
    env.iter()
        .find(|(k, _)| k == "XTABLES_LOCKFILE")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| std::env::var_os("XTABLES_LOCKFILE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/xtables.lock"))
}

/// Whether another program holds the xtables lock right now (a try-lock released at once). Only
/// used to say that portmap is about to wait; `-w` does the waiting.
pub fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor owned by `file`, which outlives both calls.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        false
    } else {
        io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_variant_from_the_version_line() {
        assert_eq!(detect("iptables v1.8.9 (nf_tables)\n"), Some(Variant::Nft));
        assert_eq!(detect("iptables v1.8.9 (legacy)\n"), Some(Variant::Legacy));
        assert_eq!(detect("iptables v1.6.1\n"), Some(Variant::Legacy));
        assert_eq!(detect("something else"), None);
    }

    #[test]
    fn backend_names() {
        for name in ["iptables", "iptables-legacy", "iptables-nft"] {
            assert_eq!(
                Variant::from_backend_name(name).map(Variant::backend_name),
                Some(name)
            );
        }
        assert_eq!(Variant::from_backend_name("nft"), None);
    }
}
