//! [`Channel`]: a netlink socket of any protocol (`NETLINK_NETFILTER`, `NETLINK_ROUTE`) created
//! inside a chosen network namespace, with the two exchanges every user of it needs: a request
//! answered by an acknowledgement (and perhaps a reply), and a dump read to its end.
//!
//! It moves bytes and recognises netlink's own messages (errors, dump ends, interrupted dumps);
//! the caller builds the request and decodes the replies. It must not know any subsystem's
//! attributes, nor what to send.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::attr::{Msg, Msgs, Writer, align4, read_u32_ne};
use crate::consts::{
    NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP_INTR,
    NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS,
};
use crate::error::Error;
use crate::netns::{self, Netns};

/// Receive buffer: the kernel's dump datagrams stay under 32 KiB; leave ample room.
const RECV_BUF: usize = 256 * 1024;
/// How often a dump interrupted by a concurrent change is restarted.
const DUMP_ATTEMPTS: usize = 8;

/// A netlink socket bound inside one network namespace.
pub(crate) struct Channel {
    fd: OwnedFd,
    seq: u32,
    /// The last datagram received (see [`Channel::recv`]).
    pub(crate) buf: Vec<u8>,
    sndbuf: usize,
    rcvbuf: usize,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("fd", &self.fd.as_raw_fd())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The kernel's `NLMSG_ERROR` answer to one message.
pub(crate) struct Refusal {
    pub(crate) seq: u32,
    /// Positive errno; 0 is an acknowledgement.
    pub(crate) errno: i32,
    pub(crate) text: Option<String>,
    pub(crate) offset: Option<usize>,
}

impl Channel {
    /// Creates a `protocol` socket inside `netns` (on a helper thread that enters the namespace;
    /// the caller never changes namespace), with extended acks on and acks capped to headers.
    pub(crate) fn open(netns: &Netns, protocol: i32) -> Result<Channel, Error> {
        let fd = netns::run_in(netns, move || create_socket(protocol))?;
        set_int(fd.as_fd(), libc::SOL_NETLINK, NETLINK_EXT_ACK, 1)
            .map_err(|e| Error::io("enabling NETLINK_EXT_ACK", e))?;
        set_int(fd.as_fd(), libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)
            .map_err(|e| Error::io("enabling NETLINK_CAP_ACK", e))?;
        Ok(Channel {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            sndbuf: 0,
            rcvbuf: 0,
        })
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Joins the multicast `group` of the socket's protocol (`NETLINK_ADD_MEMBERSHIP`): the
    /// kernel then sends the group's notifications to this socket as well.
    pub(crate) fn join_group(&self, group: u32) -> io::Result<()> {
        set_int(
            self.fd.as_fd(),
            libc::SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            group.cast_signed(),
        )
    }

    /// The port id the kernel bound the socket to (`getsockname`): what it records as the owner
    /// of a table this socket creates with `NFT_TABLE_F_OWNER`.
    pub(crate) fn port_id(&self) -> io::Result<u32> {
        // SAFETY: an all-zero sockaddr_nl is valid; getsockname writes at most `len` bytes into it.
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are valid for writes and `len` is the size of `addr`.
        let rc = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&raw mut addr).cast::<libc::sockaddr>(),
                &raw mut len,
            )
        };
        if rc < 0 {
            Err(last_error())
        } else {
            Ok(addr.nl_pid)
        }
    }

    /// The cookie of the network namespace the socket lives in (`SO_NETNS_COOKIE`, Linux 5.14+),
    /// `None` where the kernel has none.
    pub(crate) fn netns_cookie(&self) -> Option<u64> {
        // The generic value (x86, arm, riscv, …); mips, parisc and sparc number it otherwise and
        // get `None`.
        #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
        const SO_NETNS_COOKIE: libc::c_int = 71;
        #[cfg(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))]
        return None;
        #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
        {
            let mut cookie: u64 = 0;
            let mut len = mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: `cookie` and `len` are valid for writes and `len` is the size of `cookie`.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&raw mut cookie).cast::<libc::c_void>(),
                    &raw mut len,
                )
            };
            (rc == 0 && len as usize == mem::size_of::<u64>()).then_some(cookie)
        }
    }

    pub(crate) fn last_seq(&self) -> u32 {
        self.seq
    }

    /// A sequence number for a request. Requests use numbers far from a batch's `0..=len+1`.
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq | 0x8000_0000
    }

    /// One `sendmsg` of all parts to the kernel; returns the bytes sent.
    pub(crate) fn send(&self, parts: &[&[u8]]) -> io::Result<usize> {
        send_iov(self.fd.as_fd(), parts)
    }

    /// One datagram into [`Channel::buf`]; `Ok(None)` when `flags` has `MSG_DONTWAIT` and nothing
    /// is queued.
    pub(crate) fn recv(&mut self, flags: i32) -> io::Result<Option<usize>> {
        recv(self.fd.as_fd(), &mut self.buf, flags)
    }

    /// Waits until the socket is readable; `false` on timeout.
    pub(crate) fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        wait_readable(self.fd.as_fd(), timeout_ms)
    }

    /// Sends the request `build` writes (given its sequence number; it must ask for an ack) and
    /// reads up to the kernel's acknowledgement. Returns the first reply decoded (if the kernel
    /// sent one before the ack), or the errno the kernel answered with.
    pub(crate) fn transact<T>(
        &mut self,
        build: impl FnOnce(&mut Writer<'_>, u32),
        mut decode: impl FnMut(&Msg<'_>) -> Result<T, Error>,
    ) -> Result<Result<Option<T>, i32>, Error> {
        let seq = self.next_seq();
        self.drain_stale()?;
        self.send_built(seq, build)?;
        let mut value = None;
        loop {
            let n = self
                .recv(0)
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
                    return Ok(Ok(value));
                }
                if value.is_none() {
                    value = Some(decode(&msg)?);
                }
            }
        }
    }

    /// Sends the dump request `build` writes (given its sequence number; it must set
    /// `NLM_F_DUMP`) and decodes every reply message up to `NLMSG_DONE`. A dump the kernel flags
    /// as interrupted by a concurrent change is taken again. `what` names the dumped objects in
    /// errors; a dump refused with `ENOENT` is [`Error::NotFound`].
    pub(crate) fn dump<T>(
        &mut self,
        build: impl Fn(&mut Writer<'_>, u32),
        what: impl Fn() -> String,
        mut decode: impl FnMut(&Msg<'_>, &mut Vec<T>) -> Result<(), Error>,
    ) -> Result<Vec<T>, Error> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            self.drain_stale()?;
            self.send_built(seq, &build)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'datagrams: loop {
                let n = self
                    .recv(0)
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
            context: format!("reading {}: it kept changing during the dump", what()),
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        })
    }

    fn send_built(&mut self, seq: u32, build: impl FnOnce(&mut Writer<'_>, u32)) -> Result<(), Error> {
        let mut req = Vec::with_capacity(128);
        build(&mut Writer::new(&mut req), seq);
        self.send(&[&req])
            .map_err(|e| Error::io("sending a netlink request", e))?;
        Ok(())
    }

    /// Discards replies left over from an earlier, abandoned exchange.
    pub(crate) fn drain_stale(&mut self) -> Result<(), Error> {
        loop {
            match self.recv(libc::MSG_DONTWAIT) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(Error::io("reading the netlink socket", e)),
            }
        }
    }

    /// Sets the receive buffer to `bytes` exactly (`SO_RCVBUFFORCE`, falling back to the capped
    /// `SO_RCVBUF`), smaller or larger than before.
    pub(crate) fn set_receive_buffer(&mut self, bytes: usize) -> Result<(), Error> {
        set_buffer(self.fd.as_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
            .map_err(|e| Error::io("sizing the netlink receive buffer", e))?;
        self.rcvbuf = bytes;
        Ok(())
    }

    /// Makes the socket buffers big enough for `send` bytes of requests and `recv` bytes of
    /// replies (`SO_*BUFFORCE`, falling back to the capped `SO_*BUF`).
    pub(crate) fn grow_buffers(&mut self, send: usize, recv: usize) -> Result<(), Error> {
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
pub(crate) fn refusal(msg: &Msg<'_>) -> Result<Refusal, Error> {
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

fn dump_error(what: &str, errno: i32) -> Error {
    match errno {
        libc::ENOENT => Error::NotFound {
            what: what.to_owned(),
        },
        errno => plain_kernel_error(&format!("reading {what}"), errno),
    }
}

/// An errno the kernel answered a request with, as an [`Error`] saying what was being done.
pub(crate) fn plain_kernel_error(context: &str, errno: i32) -> Error {
    Error::io(context, io::Error::from_raw_os_error(errno))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn create_socket(protocol: i32) -> Result<OwnedFd, Error> {
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
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
