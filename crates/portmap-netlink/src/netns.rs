//! [`Netns`]: which network namespace a socket or a `/proc/sys` read belongs to, and
//! [`run_in`]: doing one piece of work (creating a socket, opening a file) on a short-lived thread
//! that has entered that namespace.
//!
//! A socket keeps the namespace it was created in, and a `/proc/sys/net` file the namespace of the
//! thread that opened it, so entering the namespace on a helper thread is enough: the calling
//! process and its threads never change namespace. This module must not do netlink I/O.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, shown};

/// Which network namespace a socket (or a sysctl read) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of the calling thread.
    Current,
    /// A namespace created with `ip netns add NAME`: `/run/netns/NAME`.
    Named(String),
    /// A namespace file, e.g. `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl Netns {
    /// The namespace file to enter; `None` for [`Netns::Current`]. A name that could escape
    /// `/run/netns` is refused.
    pub(crate) fn path(&self) -> Result<Option<PathBuf>, Error> {
        match self {
            Netns::Current => Ok(None),
            Netns::Named(name) => {
                if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                    return Err(Error::Netns {
                        name: name.clone(),
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a namespace name must not be empty or contain '/'",
                        ),
                    });
                }
                Ok(Some(Path::new("/run/netns").join(name)))
            }
            Netns::Path(p) => Ok(Some(p.clone())),
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("(current)"),
            Netns::Named(name) => f.write_str(name),
            Netns::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Runs `job` inside `netns`: directly for [`Netns::Current`], otherwise on a helper thread that
/// enters the namespace first and ends right after, taking its namespace with it.
pub(crate) fn run_in<T, F>(netns: &Netns, job: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    let Some(path) = netns.path()? else {
        return job();
    };
    let name = netns.to_string();
    let worker = std::thread::Builder::new()
        .name("portmap-netns".into())
        .spawn(move || {
            enter(&path, &name)?;
            job()
        })
        .map_err(|e| Error::io("starting a thread to enter the namespace", e))?;
    worker.join().map_err(|_| Error::Io {
        context: "entering the network namespace".into(),
        source: io::Error::other("the helper thread panicked"),
    })?
}

/// `statfs.f_type` of the namespace file system (`NSFS_MAGIC` in `linux/magic.h`).
const NSFS_MAGIC: i128 = 0x6e73_6673;

/// Moves the calling (helper) thread into the namespace at `path`.
///
/// The file is opened with `O_NONBLOCK` (so a FIFO named by mistake cannot block the open) and
/// must be a namespace file (`nsfs`) before `setns` sees it: a FIFO, device, directory or plain
/// file is refused with a sentence saying what it is.
fn enter(path: &Path, name: &str) -> Result<(), Error> {
    let fail = |source: io::Error| Error::Netns {
        name: name.to_owned(),
        source,
    };
    let ns = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound if path.starts_with("/run/netns") => fail(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "there is no {} (`ip netns list` shows the named namespaces)",
                    shown(&path.display().to_string())
                ),
            )),
            _ => fail(e),
        })?;
    // SAFETY: `statfs` is plain old data, for which all-zero bytes are a valid value; `fstatfs`
    // only writes into it and `ns` is an open descriptor.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(ns.as_raw_fd(), &raw mut fs) } != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    if i128::from(fs.f_type) != NSFS_MAGIC {
        let what = match ns.metadata().map(|m| m.file_type()) {
            Ok(t) if t.is_fifo() => "a FIFO",
            Ok(t) if t.is_char_device() => "a character device",
            Ok(t) if t.is_block_device() => "a block device",
            Ok(t) if t.is_dir() => "a directory",
            Ok(t) if t.is_socket() => "a socket",
            Ok(t) if t.is_file() => "a plain file, not a mounted namespace",
            _ => "not a namespace file",
        };
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {what}; --netns takes a name under /run/netns or a namespace file such as /proc/PID/ns/net",
                shown(&path.display().to_string())
            ),
        )));
    }
    // SAFETY: `ns` is an open namespace file; setns only affects the calling thread, which is the
    // helper thread of `run_in`.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(fail(match e.raw_os_error() {
            Some(libc::EPERM) => io::Error::new(
                io::ErrorKind::PermissionDenied,
                "permission denied; entering a network namespace needs CAP_SYS_ADMIN (run as root)",
            ),
            Some(libc::EINVAL) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a namespace, but not a network namespace",
                    shown(&path.display().to_string())
                ),
            ),
            _ => e,
        }));
    }
    Ok(())
}

/// The inode number of `netns` as the kernel names it (`net:[INODE]`): the same for every path that
/// leads to one namespace (a name under /run/netns, /proc/PID/ns/net), different for every other
/// namespace that exists at the same time.
pub fn inode(netns: &Netns) -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt;
    run_in(netns, || {
        std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| m.ino())
            .map_err(|e| Error::io("reading the network namespace's identity", e))
    })
}

/// The identity of `netns` as a file system sees it: the device and inode numbers of its
/// namespace file (`stat -L /proc/self/ns/net`). The same for every path that leads to one
/// namespace; what a lock or a record about one namespace is keyed on, since names can be reused
/// and one namespace can have several.
pub fn identity(netns: &Netns) -> Result<(u64, u64), Error> {
    use std::os::unix::fs::MetadataExt;
    run_in(netns, || {
        std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| Error::io("reading the network namespace's identity", e))
    })
}

/// The kernel's boot id: a random UUID made at every boot, so different on every host and after
/// every reboot.
pub fn boot_id() -> Result<String, Error> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::io("reading /proc/sys/kernel/random/boot_id", e))
}
