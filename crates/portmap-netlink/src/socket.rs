//! [`Socket`]: a `NETLINK_NETFILTER` socket bound inside a chosen network namespace, that sends a
//! [`Batch`] as one transaction and reads the ruleset back through dumps.
//!
//! The namespace is entered only by a short-lived helper thread that creates the socket; the
//! calling process and its threads never change namespace. This module does the I/O and turns the
//! kernel's replies into objects or an [`Error`]; it must not decide what to send.

use std::ffi::c_void;
use std::fmt;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::attr::{Msg, Msgs, Writer, align4, read_u32_ne};
use crate::batch::Batch;
use crate::consts::{
    NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_NETFILTER, NFNL_BATCH_GENID, NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN, NFT_MSG_GETGEN, NFT_MSG_GETRULE,
    NFT_MSG_GETSET, NFT_MSG_GETSETELEM, NFT_MSG_GETTABLE, NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_TABLE, NFTA_TABLE_NAME, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSGERR_ATTR_MSG,
    NLMSGERR_ATTR_OFFS,
};
use crate::decode;
use crate::error::Error;
use crate::object::{Chain, Element, Family, Rule, Set, Table};

/// Receive buffer: the kernel's dump datagrams stay under 32 KiB; leave ample room.
const RECV_BUF: usize = 256 * 1024;
/// How often a dump interrupted by a concurrent ruleset change is restarted.
const DUMP_ATTEMPTS: usize = 8;
/// How often an element dump taken during a hash-table resize is taken again (pauses from 5 ms,
/// doubling up to 200 ms: about 2.5 s in all).
const RESIZE_ATTEMPTS: usize = 16;
/// How long to wait for the kernel's answer to a batch once nothing is queued (it normally is
/// queued before `sendmsg` returns).
const BATCH_REPLY_TIMEOUT_MS: i32 = 10_000;
/// Receive-buffer room reserved per batch message for error replies.
const REPLY_ROOM_PER_MSG: usize = 2048;
const ERESTART: i32 = 85;

/// Which network namespace a [`Socket`] talks to.
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
    fn path(&self) -> Result<Option<PathBuf>, Error> {
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

/// A netlink socket to `nf_tables` in one network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
    rcvbuf: usize,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The kernel's answer to one message of a batch.
struct Refusal {
    seq: u32,
    errno: i32,
    text: Option<String>,
    offset: Option<usize>,
}

impl Socket {
    /// Opens a socket inside `netns` (created by a short-lived thread that enters the namespace;
    /// the caller never changes namespace), with extended acks on and acks capped to headers.
    pub fn open(netns: &Netns) -> Result<Socket, Error> {
        let fd = match netns.path()? {
            None => create_socket()?,
            Some(path) => {
                let name = netns.to_string();
                let worker = std::thread::Builder::new()
                    .name("portmap-netns".into())
                    .spawn(move || socket_in_netns(&path, &name))
                    .map_err(|e| Error::io("starting a thread to enter the namespace", e))?;
                worker.join().map_err(|_| Error::Io {
                    context: "entering the network namespace".into(),
                    source: io::Error::other("the helper thread panicked"),
                })??
            }
        };
        set_int(fd.as_fd(), libc::SOL_NETLINK, NETLINK_EXT_ACK, 1)
            .map_err(|e| Error::io("enabling NETLINK_EXT_ACK", e))?;
        set_int(fd.as_fd(), libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)
            .map_err(|e| Error::io("enabling NETLINK_CAP_ACK", e))?;
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            sndbuf: 0,
            rcvbuf: 0,
        })
    }

    fn next_seq(&mut self) -> u32 {
        // Requests outside batches use sequence numbers far from the batch's 0..=len+1.
        self.seq = self.seq.wrapping_add(1);
        self.seq | 0x8000_0000
    }

    /// The ruleset's generation id (`NFT_MSG_GETGEN`); every committed batch increments it.
    pub fn generation(&mut self) -> Result<u32, Error> {
        match self.get(NFT_MSG_GETGEN, 0, |_| {}, decode::generation)? {
            Ok(generation) => Ok(generation),
            Err(errno) => Err(plain_kernel_error("reading the generation id", errno)),
        }
    }

    /// Sends the batch as one transaction in one `sendmsg` and waits for the kernel's verdict.
    /// With `expect_generation`, the kernel refuses the batch if the ruleset changed since
    /// ([`Error::GenerationChanged`]). If any message fails, nothing of the batch is applied and
    /// the first failing message is reported ([`Error::Kernel`]). An empty batch sends nothing.
    pub fn send(&mut self, batch: &Batch, expect_generation: Option<u32>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len();
        let end_seq = (count + 1) as u32;
        let mut begin = Vec::with_capacity(32);
        {
            let mut w = Writer::new(&mut begin);
            let m = w.begin_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES);
            if let Some(generation) = expect_generation {
                w.put_u32(NFNL_BATCH_GENID, generation);
            }
            w.end_msg(m);
        }
        let mut end = Vec::with_capacity(20);
        {
            let mut w = Writer::new(&mut end);
            let m = w.begin_msg(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST | NLM_F_ACK,
                end_seq,
                0,
                NFNL_SUBSYS_NFTABLES,
            );
            w.end_msg(m);
        }
        let total = begin.len() + batch.message_bytes() + end.len();
        self.grow_buffers(total, count.saturating_mul(REPLY_ROOM_PER_MSG))?;
        self.drain_stale()?;

        let parts = [begin.as_slice(), batch.bytes(), end.as_slice()];
        let sent =
            send_iov(self.fd.as_fd(), &parts).map_err(|e| Error::io("sending the nftables batch", e))?;
        if sent != total {
            return Err(Error::Io {
                context: "sending the nftables batch".into(),
                source: io::Error::other(format!("only {sent} of {total} bytes were sent")),
            });
        }

        let mut first: Option<Refusal> = None;
        let mut whole: Option<Refusal> = None;
        let mut end_acked = false;
        let mut overflow = false;
        loop {
            let n = match recv(self.fd.as_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    if end_acked || first.is_some() || whole.is_some() {
                        break;
                    }
                    if !wait_readable(self.fd.as_fd(), BATCH_REPLY_TIMEOUT_MS)
                        .map_err(|e| Error::io("waiting for the kernel's answer", e))?
                    {
                        return Err(Error::Io {
                            context: "waiting for the kernel's answer to the batch".into(),
                            source: io::Error::from(io::ErrorKind::TimedOut),
                        });
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflow = true;
                    continue;
                }
                Err(e) => return Err(Error::io("reading the kernel's answer to the batch", e)),
            };
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg?;
                if msg.msg_type != NLMSG_ERROR {
                    continue;
                }
                let r = refusal(&msg)?;
                if r.errno == 0 {
                    end_acked |= r.seq == end_seq;
                    continue;
                }
                if r.seq >= 1 && r.seq <= count as u32 {
                    if first.as_ref().is_none_or(|f| r.seq < f.seq) {
                        first = Some(r);
                    }
                } else if whole.is_none() {
                    whole = Some(r);
                }
            }
        }

        if let Some(r) = first {
            let index = (r.seq - 1) as usize;
            let location = r.offset.map(|off| batch.locate(index, off));
            let ext_ack = match (r.text, location) {
                (Some(t), Some(l)) => Some(format!("{t}; {l}")),
                (Some(t), None) => Some(t),
                (None, Some(l)) => Some(l),
                (None, None) => None,
            };
            if r.errno == libc::EPERM {
                return Err(Error::Permission {
                    context: batch.describe(index),
                });
            }
            return Err(Error::Kernel {
                index,
                total: count,
                what: batch.describe(index),
                errno: r.errno,
                element: r.offset.and_then(|off| batch.element_at(index, off)),
                ext_ack,
            });
        }
        if let Some(r) = whole {
            return Err(match r.errno {
                ERESTART => Error::GenerationChanged,
                libc::EPERM => Error::Permission {
                    context: "sending an nftables batch".into(),
                },
                errno => Error::Io {
                    context: format!(
                        "the kernel refused the batch as a whole{}; nothing was applied",
                        r.text.map(|t| format!(" ({t})")).unwrap_or_default()
                    ),
                    source: io::Error::from_raw_os_error(errno),
                },
            });
        }
        if end_acked {
            return Ok(());
        }
        Err(Error::Io {
            context: if overflow {
                "the kernel's answer to the batch was lost (receive buffer overflow); \
                 read the ruleset to see whether it was applied"
                    .into()
            } else {
                "the kernel did not acknowledge the batch".into()
            },
            source: io::Error::from_raw_os_error(if overflow { libc::ENOBUFS } else { libc::EIO }),
        })
    }

    /// All tables of the families this crate models (`inet`, `ip`, `ip6`).
    pub fn tables(&mut self) -> Result<Vec<Table>, Error> {
        self.dump(
            NFT_MSG_GETTABLE,
            0,
            |_| {},
            || "tables".to_owned(),
            |msg, out| {
                if let Some(t) = decode::table(msg)? {
                    out.push(t);
                }
                Ok(())
            },
        )
    }

    /// One table, `None` if it does not exist.
    pub fn table(&mut self, family: Family, name: &str) -> Result<Option<Table>, Error> {
        let reply = self.get(
            NFT_MSG_GETTABLE,
            family.number(),
            |w| w.put_str(NFTA_TABLE_NAME, name),
            decode::table,
        )?;
        match reply {
            Ok(t) => Ok(t),
            Err(libc::ENOENT) => Ok(None),
            Err(errno) => Err(plain_kernel_error(
                &format!("reading table {} {name}", family.as_str()),
                errno,
            )),
        }
    }

    /// The chains of a table (none if the table does not exist).
    pub fn chains(&mut self, family: Family, table: &str) -> Result<Vec<Chain>, Error> {
        self.dump(
            NFT_MSG_GETCHAIN,
            family.number(),
            |_| {},
            || format!("chains of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(c) = decode::chain(msg, table)? {
                    out.push(c);
                }
                Ok(())
            },
        )
    }

    /// The rules of all chains of a table, in chain order (none if the table does not exist).
    pub fn rules(&mut self, family: Family, table: &str) -> Result<Vec<Rule>, Error> {
        self.dump(
            NFT_MSG_GETRULE,
            family.number(),
            |w| w.put_str(NFTA_RULE_TABLE, table),
            || format!("rules of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(r) = decode::rule(msg, table)? {
                    out.push(r);
                }
                Ok(())
            },
        )
    }

    /// The sets and maps of a table, anonymous ones included (none if the table does not exist).
    pub fn sets(&mut self, family: Family, table: &str) -> Result<Vec<Set>, Error> {
        let result = self.dump(
            NFT_MSG_GETSET,
            family.number(),
            |w| w.put_str(NFTA_SET_TABLE, table),
            || format!("sets of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(s) = decode::set(msg, table)? {
                    out.push(s);
                }
                Ok(())
            },
        );
        match result {
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// The elements of a set or map; [`Error::NotFound`] if it does not exist. Interval sets
    /// come back as the kernel stores them (start elements and `INTERVAL_END` elements; see
    /// [`crate::interval`]).
    ///
    /// A hash set that is being resized (the kernel grows it in the background right after many
    /// insertions) can be dumped with some elements twice and others missing; such a dump is
    /// recognised by its duplicates and taken again after a short pause.
    pub fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<Element>, Error> {
        let mut pause = std::time::Duration::from_millis(5);
        for _ in 0..RESIZE_ATTEMPTS {
            let elems = self.dump(
                NFT_MSG_GETSETELEM,
                family.number(),
                |w| {
                    w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
                    w.put_str(NFTA_SET_ELEM_LIST_SET, set);
                },
                || format!("set {} {table} {set}", family.as_str()),
                decode::elements,
            )?;
            if !has_duplicates(&elems) {
                return Ok(elems);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
        Err(Error::Io {
            context: format!(
                "reading set {} {table} {set}: the kernel kept returning an inconsistent dump",
                family.as_str()
            ),
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        })
    }

    /// A request with `NLM_F_ACK`: the decoded reply, or the errno the kernel answered with.
    fn get<T>(
        &mut self,
        msg_type: u16,
        family: u8,
        build: impl FnOnce(&mut Writer<'_>),
        mut decode: impl FnMut(&Msg<'_>) -> Result<T, Error>,
    ) -> Result<Result<T, i32>, Error> {
        let seq = self.next_seq();
        self.drain_stale()?;
        self.send_request(msg_type, NLM_F_ACK, seq, family, build)?;
        let mut value = None;
        loop {
            let n = recv(self.fd.as_fd(), &mut self.buf, 0)
                .map_err(|e| Error::io("reading the kernel's reply", e))?
                .unwrap_or(0);
            for msg in Msgs::new(&self.buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                if msg.msg_type == NLMSG_ERROR {
                    let r = refusal(&msg)?;
                    if r.errno != 0 {
                        return Ok(Err(r.errno));
                    }
                    return match value {
                        Some(v) => Ok(Ok(v)),
                        None => Err(Error::decode("acknowledged without a reply")),
                    };
                }
                if value.is_none() {
                    value = Some(decode(&msg)?);
                }
            }
        }
    }

    /// A dump (`NLM_F_DUMP`), decoded message by message; restarted when the kernel flags it as
    /// interrupted by a concurrent change.
    fn dump<T>(
        &mut self,
        msg_type: u16,
        family: u8,
        build: impl Fn(&mut Writer<'_>),
        what: impl Fn() -> String,
        mut decode: impl FnMut(&Msg<'_>, &mut Vec<T>) -> Result<(), Error>,
    ) -> Result<Vec<T>, Error> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            self.drain_stale()?;
            self.send_request(msg_type, NLM_F_DUMP, seq, family, &build)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'datagrams: loop {
                let n = recv(self.fd.as_fd(), &mut self.buf, 0)
                    .map_err(|e| Error::io(format!("reading {}", what()), e))?
                    .unwrap_or(0);
                for msg in Msgs::new(&self.buf[..n]) {
                    let msg = msg?;
                    if msg.seq != seq {
                        continue;
                    }
                    interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                    match msg.msg_type {
                        NLMSG_DONE => {
                            let status = msg.payload.get(..4).map_or(0, read_u32_ne).cast_signed();
                            if status < 0 {
                                return Err(dump_error(&what(), -status));
                            }
                            break 'datagrams;
                        }
                        NLMSG_ERROR => {
                            let r = refusal(&msg)?;
                            if r.errno != 0 {
                                return Err(dump_error(&what(), r.errno));
                            }
                        }
                        _ if interrupted => {}
                        _ => decode(&msg, &mut out)?,
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Io {
            context: format!("reading {}: the ruleset kept changing during the dump", what()),
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        })
    }

    fn send_request(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        build: impl FnOnce(&mut Writer<'_>),
    ) -> Result<(), Error> {
        let mut req = Vec::with_capacity(128);
        let mut w = Writer::new(&mut req);
        let m = w.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
            NLM_F_REQUEST | flags,
            seq,
            family,
            0,
        );
        build(&mut w);
        w.end_msg(m);
        send_iov(self.fd.as_fd(), &[&req]).map_err(|e| Error::io("sending a netlink request", e))?;
        Ok(())
    }

    /// Discards replies left over from an earlier, abandoned exchange.
    fn drain_stale(&mut self) -> Result<(), Error> {
        loop {
            match recv(self.fd.as_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(Error::io("reading the netlink socket", e)),
            }
        }
    }

    /// Makes the socket buffers big enough for a batch of `send` bytes and `recv` bytes of
    /// replies (`SO_*BUFFORCE`, falling back to the capped `SO_*BUF`).
    fn grow_buffers(&mut self, send: usize, recv: usize) -> Result<(), Error> {
        let send = send + 64 * 1024;
        if send > self.sndbuf {
            set_buffer(self.fd.as_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, send)
                .map_err(|e| Error::io("sizing the netlink send buffer", e))?;
            self.sndbuf = send;
        }
        let recv = recv.max(1024 * 1024);
        if recv > self.rcvbuf {
            set_buffer(self.fd.as_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, recv)
                .map_err(|e| Error::io("sizing the netlink receive buffer", e))?;
            self.rcvbuf = recv;
        }
        Ok(())
    }
}

/// Parses an `NLMSG_ERROR` message (`struct nlmsgerr` + extended-ack attributes).
fn refusal(msg: &Msg<'_>) -> Result<Refusal, Error> {
    let p = msg.payload;
    if p.len() < 4 + NLMSG_HDRLEN {
        return Err(Error::decode("short netlink error message"));
    }
    let errno = -read_u32_ne(&p[0..4]).cast_signed();
    let mut r = Refusal {
        seq: msg.seq,
        errno,
        text: None,
        offset: None,
    };
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        let orig_len = read_u32_ne(&p[4..8]) as usize;
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            orig_len.max(NLMSG_HDRLEN)
        };
        if let Some(tlvs) = p.get(4 + align4(echoed)..) {
            for a in crate::attr::Attrs::new(tlvs) {
                let Ok(a) = a else { break };
                match a.ty {
                    NLMSGERR_ATTR_MSG => r.text = a.str().ok().map(str::to_owned),
                    NLMSGERR_ATTR_OFFS if a.data.len() == 4 => {
                        r.offset = Some(read_u32_ne(a.data) as usize);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(r)
}

/// Whether the same element (key, key end and flags) occurs twice: the mark of a dump taken while
/// the kernel resized the set's hash table.
fn has_duplicates(elems: &[Element]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(elems.len());
    !elems
        .iter()
        .all(|e| seen.insert((e.key.as_slice(), e.key_end.as_deref(), e.flags)))
}

fn dump_error(what: &str, errno: i32) -> Error {
    match errno {
        libc::ENOENT => Error::NotFound {
            what: what.to_owned(),
        },
        errno => plain_kernel_error(&format!("reading {what}"), errno),
    }
}

fn plain_kernel_error(context: &str, errno: i32) -> Error {
    Error::io(context, io::Error::from_raw_os_error(errno))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn create_socket() -> Result<OwnedFd, Error> {
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(Error::io("creating a netlink socket", last_error()));
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid (port id 0: the kernel assigns one).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::io("binding the netlink socket", last_error()));
    }
    Ok(fd)
}

/// Runs on the helper thread: enter the namespace, create the socket. The thread ends right after,
/// taking its namespace with it.
fn socket_in_netns(path: &Path, name: &str) -> Result<OwnedFd, Error> {
    let ns = File::open(path).map_err(|source| Error::Netns {
        name: name.to_owned(),
        source,
    })?;
    // SAFETY: `ns` is an open namespace file; setns only affects this (helper) thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Netns {
            name: name.to_owned(),
            source: last_error(),
        });
    }
    create_socket()
}

fn set_int(fd: BorrowedFd<'_>, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw const value).cast::<c_void>(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

fn set_buffer(fd: BorrowedFd<'_>, force: i32, plain: i32, bytes: usize) -> io::Result<()> {
    let value = i32::try_from(bytes).unwrap_or(i32::MAX);
    match set_int(fd, libc::SOL_SOCKET, force, value) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => set_int(fd, libc::SOL_SOCKET, plain, value),
        other => other,
    }
}

/// One `sendmsg` of all parts to the kernel (port id 0).
fn send_iov(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast::<c_void>(),
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: all-zero sockaddr_nl/msghdr are valid starting points.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: as above.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_name = (&raw mut addr).cast::<c_void>();
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    hdr.msg_iov = iov.as_mut_ptr();
    hdr.msg_iovlen = iov.len();
    loop {
        // SAFETY: `hdr` points at `addr` and `iov`, which point at live buffers; all outlive the
        // call, and the kernel only reads them.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &raw const hdr, 0) };
        if n >= 0 {
            return Ok(n.cast_unsigned());
        }
        let e = last_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One datagram into `buf`; `Ok(None)` when `MSG_DONTWAIT` finds nothing queued.
fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                flags | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            let n = n.cast_unsigned();
            if n > buf.len() {
                return Err(io::Error::other(format!(
                    "a {n}-byte netlink datagram did not fit the receive buffer"
                )));
            }
            return Ok(Some(n));
        }
        let e = last_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Waits until the socket is readable; `false` on timeout.
fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd.
        let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = last_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
