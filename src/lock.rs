//! The write lock: one per network namespace, backend family and table, so that portmap's writers
//! (apply, destroy, confirm, rollback, the confirm watchdog, a watch daemon) take turns instead of
//! racing each other's transactions. A writer holds a [`Lock`] from before it observes until its
//! transaction is read back; the next one then observes and plans afresh.
//!
//! It is an `flock(2)` on a file under the run directory ([`RunDir`], `/run/portmap` by default):
//! the kernel releases it when the holder's file is closed, so a writer killed with `-9` frees it
//! at once. A holder that lets go normally removes the file first (a waiter that locked the
//! removed file sees it is no longer at its path and takes the new one); one killed leaves it for
//! the next. The file names the holder (pid, command line, since
//! when) for whoever waits. Keys are the namespace's device and inode (not its name, which can be
//! reused or be one of several), the backend family and the table name, hex-escaped so that no
//! name can make a path. Read-only commands never take it.
//!
//! This module knows nothing of plans or backends beyond the names that make a key.

use std::fmt::{self, Write as _};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portmap_core::Netns;

use crate::{BackendKind, Error};

/// Where portmap keeps its run-time state (locks, pending confirmations, their log) unless
/// [`RUN_DIR_ENV`] says otherwise. Under `/run`, so a reboot starts clean.
pub const RUN_DIR: &str = "/run/portmap";

/// Environment variable naming another run directory (for systems without a writable `/run`, and
/// for tests). Every portmap process that shares a namespace and table must see the same one.
pub const RUN_DIR_ENV: &str = "PORTMAP_RUN_DIR";

/// How long a writer waits for the lock unless told otherwise (`--lock-timeout`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_mins(1);

/// The directory of portmap's run-time state. Created `0700` on first use; an existing one must be
/// a real directory (not a symlink) owned by the caller and writable by nobody else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }

    /// [`RUN_DIR_ENV`] when set and not empty, else [`RUN_DIR`].
    pub fn from_env() -> Self {
        match std::env::var_os(RUN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => RunDir::new(dir),
            _ => RunDir::new(RUN_DIR),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, or `sub` in it, made safe to write in: created `0700` if missing (with its
    /// parents), else checked.
    pub(crate) fn ensure(&self, sub: Option<&str>) -> Result<PathBuf, LockError> {
        let dir = match sub {
            Some(sub) => self.path.join(sub),
            None => self.path.clone(),
        };
        for d in std::iter::once(&self.path).chain(sub.map(|_| &dir)) {
            match DirBuilder::new().recursive(true).mode(0o700).create(d) {
                Ok(()) => {}
                Err(e) => return Err(LockError::io(d, "cannot create the run directory", e)),
            }
            check_private_dir(d)?;
        }
        Ok(dir)
    }
}

impl Default for RunDir {
    fn default() -> Self {
        RunDir::from_env()
    }
}

/// Refuse a directory another user could plant files in: a symlink, not a directory, owned by
/// someone else, or writable by group or others.
fn check_private_dir(dir: &Path) -> Result<(), LockError> {
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| LockError::io(dir, "cannot read the run directory", e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let problem = if meta.file_type().is_symlink() {
        Some("is a symbolic link")
    } else if !meta.is_dir() {
        Some("is not a directory")
    } else if meta.uid() != euid {
        Some("belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("is writable by other users (chmod 700 it)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(LockError::UnsafeDir {
            path: dir.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Which lock: a network namespace (by identity), a backend family and a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey {
    family: &'static str,
    table: String,
    netns_dev: u64,
    netns_ino: u64,
}

impl LockKey {
    /// The key for a backend of `kind` managing `table` in `netns`. Both iptables variants share
    /// one family (so two variants on one prefix serialise too); the table name is the one the
    /// backend really manages (`portmap` is `PORTMAP` for iptables).
    pub fn new(kind: BackendKind, netns: &Netns, table: &str) -> Result<Self, Error> {
        let (family, table) = match kind {
            BackendKind::Nft => (
                "nft",
                portmap_nft::checked_table_id(table)
                    .map_err(|e| Error::Backend(Box::new(e)))?
                    .name,
            ),
            BackendKind::Iptables(_) => (
                "iptables",
                portmap_iptables::checked_prefix(table)
                    .map_err(|e| Error::Backend(Box::new(e)))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let nl = match netns {
            Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
            Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
            _ => portmap_netlink::Netns::Current,
        };
        let (netns_dev, netns_ino) = portmap_netlink::netns_identity(&nl)
            .map_err(|e| Error::Backend(Box::new(crate::BackendError::Nft(e.into()))))?;
        Ok(LockKey {
            family,
            table,
            netns_dev,
            netns_ino,
        })
    }

    /// `nft`, or `iptables` for both iptables variants.
    pub fn family(&self) -> &'static str {
        self.family
    }

    /// The table (nft) or chain prefix (iptables) as the backend manages it.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The namespace's inode number (`net:[INODE]`).
    pub fn netns_inode(&self) -> u64 {
        self.netns_ino
    }

    /// The file name stem of everything kept for this key: family, namespace identity and the
    /// table name hex-escaped, e.g. `nft-ns4.4026532281-706f72746d6170`.
    pub fn stem(&self) -> String {
        let hex = self.table.bytes().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        });
        format!("{}-ns{}.{}-{hex}", self.family, self.netns_dev, self.netns_ino)
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            "nft" => write!(f, "table inet {}", self.table)?,
            _ => write!(f, "iptables chains {}-…", self.table)?,
        }
        write!(f, " in network namespace net:[{}]", self.netns_ino)
    }
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command line, escaped and cut short for a message.
    pub command: String,
    /// Since when it holds the lock, when it said so.
    pub since: Option<SystemTime>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)?;
        if let Some(held) = self.since.and_then(|t| SystemTime::now().duration_since(t).ok()) {
            write!(f, ", for {}", shown_duration(held))?;
        }
        Ok(())
    }
}

/// Why a lock could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another writer held the lock for the whole wait.
    #[error(
        "{key} is locked by another portmap writer: {}; gave up after waiting {} (--lock-timeout); nothing was changed — wait for it to finish, or pass a longer --lock-timeout",
        holder.as_ref().map_or_else(|| "its holder did not say who it is".to_owned(), |h| format!("held by {h}")),
        shown_duration(*waited)
    )]
    Timeout {
        /// The lock.
        key: LockKey,
        /// Who held it when portmap gave up, if known.
        holder: Option<Holder>,
        /// How long portmap waited.
        waited: Duration,
    },
    /// The run directory is not safe to keep locks and snapshots in.
    #[error("refusing to use {}: it {problem}", path.display())]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What portmap was doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl LockError {
    pub(crate) fn io(path: &Path, what: &'static str, source: io::Error) -> Self {
        LockError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A held lock; dropping it (or the process ending, however) releases it.
#[derive(Debug)]
pub struct Lock {
    /// Held open for the `flock`; closing it releases the lock.
    file: File,
    path: PathBuf,
    key: LockKey,
}

impl Drop for Lock {
    /// Remove the file while still holding it, then let go (closing the file): nothing is left
    /// behind, and a waiter that locked the removed file notices and takes the path's new one.
    fn drop(&mut self) {
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Lock {
    /// Take the lock for `key`, waiting up to `timeout` (zero: not at all) while another writer
    /// holds it. `waiting` is called once, when the wait begins, with who holds it (to tell the
    /// user); the wait polls, so whoever frees it next is not guaranteed to be served first.
    pub fn acquire(
        key: &LockKey,
        dir: &RunDir,
        timeout: Duration,
        mut waiting: impl FnMut(&LockKey, Option<&Holder>),
    ) -> Result<Lock, LockError> {
        let dir_path = dir.ensure(Some("locks"))?;
        let path = dir_path.join(format!("{}.lock", key.stem()));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
                .open(&path)
                .map_err(|e| LockError::io(&path, "cannot open the lock file", e))
        };
        let mut file = open()?;
        let started = Instant::now();
        let mut told = false;
        let mut pause = Duration::from_millis(2);
        loop {
            // SAFETY: flock on an open descriptor has no memory effects.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                // The holder before us removes the file as it lets go: a lock on a file no longer
                // at the path is no lock. Open the path again and take that one.
                if same_file(&file, &path) {
                    break;
                }
                file = open()?;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => {}
                Some(libc::EINTR) => continue,
                _ => return Err(LockError::io(&path, "cannot lock", e)),
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(LockError::Timeout {
                    key: key.clone(),
                    holder: holder_of(&mut file),
                    waited,
                });
            }
            if !told {
                told = true;
                waiting(key, holder_of(&mut file).as_ref());
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
            pause = (pause * 2).min(Duration::from_millis(40));
        }
        // Say who holds it. Failing to is no reason to give the lock up: a waiter then only
        // cannot name us.
        let _ = say_holder(&mut file);
        Ok(Lock {
            file,
            path,
            key: key.clone(),
        })
    }

    /// The lock's key.
    pub fn key(&self) -> &LockKey {
        &self.key
    }
}

/// Write `pid`, the time and the command line into the lock file, replacing what was there.
fn say_holder(file: &mut File) -> io::Result<()> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let text = format!(
        "{}\n{since}\n{}\n",
        std::process::id(),
        command_line(std::process::id()).unwrap_or_default()
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// Who holds the lock on `file`: the pid the kernel lists for it in `/proc/locks` (the truth), or
/// failing that the one written in the file; with the command line of that pid. `None` when the
/// process is gone or unknown.
fn holder_of(file: &mut File) -> Option<Holder> {
    let meta = file.metadata().ok()?;
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(8192).read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    let written: Option<u32> = lines.next().and_then(|l| l.parse().ok());
    let since: Option<u64> = lines.next().and_then(|l| l.parse().ok());
    let pid = kernel_holder(meta.dev(), meta.ino()).or(written)?;
    let command = command_line(pid)?;
    Some(Holder {
        pid,
        command,
        since: (written == Some(pid))
            .then_some(since)
            .flatten()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    })
}

/// The pid holding an `flock` write lock on the file `dev`/`ino`, from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`).
fn kernel_holder(dev: u64, ino: u64) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A waiter's line starts with `->`; only holders have the kind in the second field.
        match fields.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, id, ..] if *id == want => pid.parse().ok(),
            _ => None,
        }
    })
}

/// The command line of process `pid`, escaped and cut short for a message; `None` when the
/// process is gone or a zombie.
pub(crate) fn command_line(pid: u32) -> Option<String> {
    if !process_alive(pid) {
        return None;
    }
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut words: Vec<String> = bytes
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    // The program by its name, not its path: `portmap apply -c /etc/portmap/portmap.yaml`.
    if let Some(first) = words.first_mut()
        && let Some((_, name)) = first.rsplit_once('/')
    {
        *first = name.to_owned();
    }
    let line = portmap_core::shown_origin(&words.join(" "));
    Some(match line.char_indices().nth(COMMAND_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    })
}

/// How much of a command line a message shows.
const COMMAND_CHARS: usize = 200;

/// Whether `pid` is a running (not zombie) process.
pub(crate) fn process_alive(pid: u32) -> bool {
    process_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The state letter and start time (clock ticks after boot) of process `pid`, from
/// `/proc/PID/stat`. The start time tells a process from a later one that got the same pid.
pub(crate) fn process_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses; the last `)` ends it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of the whole line (starttime) is the 20th after comm.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// `1.5 s`, `250 ms`, `2 min 5 s`.
pub(crate) fn shown_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{} min {} s", s / 60, s % 60)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(table: &str) -> LockKey {
        LockKey {
            family: "nft",
            table: table.to_owned(),
            netns_dev: 4,
            netns_ino: 4_026_531_840,
        }
    }

    fn scratch(tag: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("portmap-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        RunDir::new(dir)
    }

    #[test]
    fn a_key_makes_a_plain_file_name_whatever_the_table_is_called() {
        assert_eq!(key("portmap").stem(), "nft-ns4.4026531840-706f72746d6170");
        let odd = key("../../etc/passwd\n");
        assert!(
            odd.stem()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        );
        assert!(!odd.stem().contains('/'));
        assert_ne!(key("a").stem(), key("b").stem());
    }

    #[test]
    fn a_second_holder_waits_then_times_out_naming_the_first() {
        let dir = scratch("timeout");
        let first = Lock::acquire(&key("t"), &dir, Duration::ZERO, |_, _| panic!("no wait")).unwrap();
        let mut told = 0;
        let started = Instant::now();
        let err = Lock::acquire(&key("t"), &dir, Duration::from_millis(150), |_, holder| {
            told += 1;
            assert_eq!(holder.map(|h| h.pid), Some(std::process::id()));
        })
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(told, 1, "told once that it waits");
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("table inet t in network namespace"), "{text}");
        // Another table is another lock.
        drop(Lock::acquire(&key("u"), &dir, Duration::ZERO, |_, _| panic!("no wait")).unwrap());
        drop(first);
        drop(Lock::acquire(&key("t"), &dir, Duration::ZERO, |_, _| panic!("no wait")).unwrap());
        let _ = std::fs::remove_dir_all(dir.path());
    }

    #[test]
    fn holders_exclude_each_other_and_leave_no_file_behind() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = scratch("exclusive");
        let inside = AtomicBool::new(false);
        let turns = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..40 {
                        let lock =
                            Lock::acquire(&key("x"), &dir, Duration::from_secs(30), |_, _| {}).unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                        turns.fetch_add(1, Ordering::SeqCst);
                        drop(lock);
                    }
                });
            }
        });
        assert_eq!(turns.load(Ordering::SeqCst), 320);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("locks")).unwrap().collect();
        assert!(left.is_empty(), "lock files left behind: {left:?}");
        let _ = std::fs::remove_dir_all(dir.path());
    }

    #[test]
    fn the_run_directory_is_private() {
        let dir = scratch("perm");
        dir.ensure(None).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let err = dir.ensure(None).unwrap_err();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        let _ = std::fs::remove_dir_all(dir.path());
    }
}
