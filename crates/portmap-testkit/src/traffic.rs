//! Real traffic inside namespaces: identity servers on LAN addresses and clients that connect from a
//! chosen source address with short timeouts, over IPv4 or IPv6.
//!
//! A server answers every TCP connection or UDP datagram with `lan <its address> saw <peer address>`
//! and records the peer, so a test can tell WHICH host answered, on which port, and what source address
//! it saw (no SNAT means it saw the client's real address). A server's socket is bound before the
//! server is returned, so a client may connect at once; it stops when the `Server` drops.
//!
//! Clients return `Ok(reply)` or a `ConnError` that tells refused (RST / ICMP port unreachable) from
//! timeout (dropped somewhere) — no fixed sleeps anywhere, only bounded waits.

use std::fmt;
use std::io::{self, Read};
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Time a client waits for a connection and for the reply when the path should work.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client waits when the path should be closed (refused comes at once; a drop costs this).
/// An answer over the labs' veth links takes well under a millisecond, even on a busy machine, so
/// half a second is thousands of round trips; most of the suite's time is these waits, and every
/// backend's run of a behaviour test pays them.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a client got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// TCP reset on connect, or ICMP port unreachable for UDP.
    Refused,
    /// Nothing came back in time (packets dropped).
    Timeout,
    /// ICMP host or network unreachable.
    Unreachable,
    /// The connection was reset after it was established.
    Reset,
    /// Anything else (with the OS error).
    Other(String),
}

impl ConnError {
    fn from_io(e: &io::Error) -> ConnError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnError::Refused,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnError::Timeout,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ConnError::Reset,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => ConnError::Unreachable,
            _ => ConnError::Other(e.to_string()),
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Refused => f.write_str("refused"),
            ConnError::Timeout => f.write_str("timed out"),
            ConnError::Unreachable => f.write_str("unreachable"),
            ConnError::Reset => f.write_str("reset"),
            ConnError::Other(e) => f.write_str(e),
        }
    }
}

/// The text a server answers with.
pub fn reply_text(server: SocketAddr, peer: SocketAddr) -> String {
    format!("lan {server} saw {peer}")
}

/// A server's answer, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The server address that answered (after DNAT: the inner host and port).
    pub server: SocketAddr,
    /// The source address the server saw.
    pub peer: SocketAddr,
}

impl Reply {
    /// Parse `lan <server> saw <peer>`.
    pub fn parse(text: &str) -> Option<Reply> {
        let (server, peer) = text.strip_prefix("lan ")?.split_once(" saw ")?;
        Some(Reply {
            server: server.parse().ok()?,
            peer: peer.trim().parse().ok()?,
        })
    }
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Udp(s) => s.as_raw_fd(),
        }
    }
}

/// An identity server running inside a namespace. Stops (socket shut down, thread joined) on drop.
#[derive(Debug)]
pub struct Server {
    local: SocketAddr,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    socket: Arc<Socket>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A TCP server listening on `addr` inside `ns`: accepts, records the peer, writes the identity
    /// line, closes. Listening before this returns.
    #[track_caller]
    pub fn tcp(ns: &Netns, addr: impl Into<SocketAddr>) -> Server {
        let addr = addr.into();
        let listener = ns
            .enter(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind tcp {addr} in {}: {e}", ns.name()));
        let socket = Arc::new(Socket::Tcp(listener));
        Server::start(socket, addr, |socket, local, seen, stop| {
            let Socket::Tcp(listener) = socket else {
                unreachable!()
            };
            loop {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        seen.lock().unwrap_or_else(PoisonError::into_inner).push(peer);
                        let _ = conn.set_write_timeout(Some(REPLY_TIMEOUT));
                        let _ = io::Write::write_all(&mut conn, reply_text(local, peer).as_bytes());
                    }
                    Err(e) => {
                        if stop.load(Ordering::SeqCst) || e.raw_os_error() == Some(libc::EINVAL) {
                            break;
                        }
                    }
                }
            }
        })
    }

    /// A UDP server on `addr` inside `ns`: answers each datagram with the identity line. Bound before
    /// this returns.
    #[track_caller]
    pub fn udp(ns: &Netns, addr: impl Into<SocketAddr>) -> Server {
        let addr = addr.into();
        let sock = ns
            .enter(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind udp {addr} in {}: {e}", ns.name()));
        let socket = Arc::new(Socket::Udp(sock));
        Server::start(socket, addr, |socket, local, seen, stop| {
            let Socket::Udp(sock) = socket else { unreachable!() };
            let mut buf = [0u8; 1500];
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((_, peer)) => {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        seen.lock().unwrap_or_else(PoisonError::into_inner).push(peer);
                        let _ = sock.send_to(reply_text(local, peer).as_bytes(), peer);
                    }
                    Err(_) if stop.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
        })
    }

    fn start(
        socket: Arc<Socket>,
        local: SocketAddr,
        serve: fn(&Socket, SocketAddr, &Mutex<Vec<SocketAddr>>, &AtomicBool),
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, seen, stop) = (Arc::clone(&socket), Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || serve(&socket, local, &seen, &stop))
        };
        Server {
            local,
            seen,
            stop,
            socket,
            thread: Some(thread),
        }
    }

    /// The address the server is bound to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Every peer that reached this server so far, in order.
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The socket stays open (we hold an Arc) until the thread is joined, so the fd cannot have been
        // reused. shutdown(2) wakes a blocked accept(2) (EINVAL) or recvfrom(2) (returns 0).
        // SAFETY: shutdown on a descriptor this guard keeps open; no memory is passed.
        unsafe {
            libc::shutdown(self.socket.fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connect over TCP from `from` (port chosen by the kernel) to `to` inside `ns`, read the reply until
/// the server closes. The whole exchange is bounded by `timeout`. A link-local IPv6 `to` carries its
/// interface as the scope id.
pub fn tcp_request(
    ns: &Netns,
    from: impl Into<IpAddr>,
    to: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<String, ConnError> {
    let (from, to) = (from.into(), to.into());
    ns.enter(move || {
        let deadline = Instant::now() + timeout;
        let mut stream = connect_from(SocketAddr::new(from, 0), to, timeout)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
    .map_err(|e: io::Error| ConnError::from_io(&e))
}

/// Send one UDP datagram from `from` to `to` inside `ns` and wait up to `timeout` for the answer.
pub fn udp_request(
    ns: &Netns,
    from: impl Into<IpAddr>,
    to: impl Into<SocketAddr>,
    timeout: Duration,
) -> Result<String, ConnError> {
    let (from, to) = (from.into(), to.into());
    ns.enter(move || {
        let sock = UdpSocket::bind(SocketAddr::new(from, 0))?;
        // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
        sock.connect(to)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(b"hello")?;
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .map_err(|e: io::Error| ConnError::from_io(&e))
}

/// A socket address as the C API takes it, with its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits sa_family_t"),
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).expect("AF_INET6 fits sa_family_t"),
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A TCP connection from a chosen local address (std cannot bind before connect): non-blocking
/// connect, then poll for at most `timeout`.
fn connect_from(from: SocketAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if to.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: socket(2) with constant arguments; the result is checked and owned right away.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (local, local_len) = sockaddr(from);
    // SAFETY: `local` holds a valid socket address of `local_len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), local_len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (remote, remote_len) = sockaddr(to);
    // SAFETY: as above.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const remote).cast(), remote_len) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if n > 0 {
                break;
            }
            if n == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        let mut so_error: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int into `so_error`; `len` holds its size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut so_error).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if so_error != 0 {
            return Err(io::Error::from_raw_os_error(so_error));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
