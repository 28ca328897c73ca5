//! [`LogReader`]: the packets the kernel hands to an nflog group (`nfnetlink_log`, subsystem
//! `NFNL_SUBSYS_ULOG` of `NETLINK_NETFILTER`), read as [`LogEvent`]s: the rule's prefix, the
//! packet's addresses and ports, and — where the kernel attaches it — the connection-tracking
//! entry of the packet (so a packet logged after DNAT still tells the address it was sent to).
//!
//! nft's `log group N prefix "…"` and iptables' `-j NFLOG --nflog-group N --nflog-prefix "…"`
//! both log here. A group has one reader at a time in a network namespace: binding a group that
//! another program (ulogd, another portmap) reads fails with "device or resource busy".
//!
//! This module binds a group and decodes what arrives; it must not know what a port mapping is, nor
//! decide what a prefix means.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::attr::{Attr, Msgs};
use crate::channel::{Channel, plain_kernel_error};
use crate::conntrack::{self, Tuple};
use crate::consts::{
    NETLINK_NETFILTER, NFNL_SUBSYS_ULOG, NFULA_CFG_CMD, NFULA_CFG_FLAGS, NFULA_CFG_MODE, NFULA_CT,
    NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV, NFULA_PAYLOAD, NFULA_PREFIX, NFULA_TIMESTAMP,
    NFULNL_CFG_CMD_BIND, NFULNL_CFG_F_CONNTRACK, NFULNL_COPY_PACKET, NFULNL_MSG_CONFIG, NFULNL_MSG_PACKET,
    NLM_F_ACK, NLM_F_REQUEST,
};
use crate::error::Error;
use crate::netns::Netns;

/// Bytes of each logged packet copied to the reader: enough for an IPv6 header and the ports.
const COPY_RANGE: u32 = 96;

/// One packet the kernel logged to the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The group it was logged to.
    pub group: u16,
    /// The rule's log prefix (empty when it has none).
    pub prefix: String,
    /// IP protocol number of the packet (6 TCP, 17 UDP, …).
    pub protocol: u8,
    /// Source address of the packet.
    pub src: IpAddr,
    /// Destination address of the packet (after DNAT when it was logged after DNAT).
    pub dst: IpAddr,
    /// Source port, for TCP and UDP.
    pub src_port: Option<u16>,
    /// Destination port, for TCP and UDP.
    pub dst_port: Option<u16>,
    /// The connection's first direction as it arrived, before any NAT (when the kernel attached
    /// the conntrack entry).
    pub original: Option<Tuple>,
    /// The connection's answer direction (its source is the DNAT target), when attached.
    pub reply: Option<Tuple>,
    /// Index of the interface the packet came in on, if any.
    pub in_ifindex: Option<u32>,
    /// Index of the interface it goes out on, if known when it was logged.
    pub out_ifindex: Option<u32>,
    /// When the kernel logged it (when the kernel says).
    pub timestamp: Option<SystemTime>,
}

impl fmt::Display for LogEvent {
    /// `portmap web: tcp 203.0.113.2:40000 -> 192.168.1.66:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = Tuple {
            src: self.src,
            dst: self.dst,
            proto: self.protocol,
            src_port: self.src_port,
            dst_port: self.dst_port,
            icmp: None,
        };
        write!(f, "{}: {t}", self.prefix)
    }
}

/// A socket bound to one nflog group in one network namespace.
#[derive(Debug)]
pub struct LogReader {
    chan: Channel,
    group: u16,
    queue: VecDeque<LogEvent>,
    conntrack: bool,
    lost: u64,
}

impl LogReader {
    /// Bind `group` inside `netns` (on a helper thread that enters the namespace; the caller never
    /// changes namespace), copying each packet's headers, and ask the kernel to attach the
    /// conntrack entry when it can.
    pub fn open(netns: &Netns, group: u16) -> Result<LogReader, Error> {
        let mut chan = Channel::open(netns, NETLINK_NETFILTER)?;
        let what = format!("binding nflog group {group}");
        match config(&mut chan, group, |w| w.put(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]))? {
            0 => {}
            libc::EBUSY => {
                return Err(Error::io(
                    format!(
                        "{what}: another program reads that group (ulogd, another portmap?); choose another log_group"
                    ),
                    io::Error::from_raw_os_error(libc::EBUSY),
                ));
            }
            libc::EPERM => return Err(Error::Permission { context: what }),
            errno => return Err(plain_kernel_error(&what, errno)),
        }
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend([NFULNL_COPY_PACKET, 0]);
        match config(&mut chan, group, |w| w.put(NFULA_CFG_MODE, &mode))? {
            0 => {}
            errno => {
                return Err(plain_kernel_error(
                    &format!("setting the copy mode of nflog group {group}"),
                    errno,
                ));
            }
        }
        // Without the kernel's conntrack glue this is refused; the events then lack the tuples.
        let conntrack = config(&mut chan, group, |w| {
            w.put_u16(NFULA_CFG_FLAGS, NFULNL_CFG_F_CONNTRACK);
        })? == 0;
        chan.grow_buffers(0, 4 * 1024 * 1024)?;
        Ok(LogReader {
            chan,
            group,
            queue: VecDeque::new(),
            conntrack,
            lost: 0,
        })
    }

    /// The group read.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Whether the kernel attaches conntrack entries to the events ([`LogEvent::original`]).
    pub fn has_conntrack(&self) -> bool {
        self.conntrack
    }

    /// How many events the kernel could not hand over because the socket's buffer was full.
    /// (It reports that they were lost, not how many: each report counts as one.)
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The next event, waiting at most `timeout` (for ever with `None`); `Ok(None)` when none
    /// came in time.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<LogEvent>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            let wait_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
                }
            };
            if !self
                .chan
                .wait_readable(wait_ms)
                .map_err(|e| Error::io("waiting for nflog events", e))?
            {
                if deadline.is_some() {
                    return Ok(None);
                }
                continue;
            }
            let n = match self.chan.recv(libc::MSG_DONTWAIT) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.lost += 1;
                    continue;
                }
                Err(e) => return Err(Error::io("reading nflog events", e)),
            };
            let datagram = self.chan.buf[..n].to_vec();
            for msg in Msgs::new(&datagram) {
                let msg = msg?;
                if msg.msg_type != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                    continue;
                }
                if let Some(event) = decode_packet(msg.attrs(), self.group)? {
                    self.queue.push_back(event);
                }
            }
        }
    }
}

/// One config request for `group`; the errno the kernel answered with (0: done).
fn config(
    chan: &mut Channel,
    group: u16,
    attr: impl FnOnce(&mut crate::attr::Writer<'_>),
) -> Result<i32, Error> {
    let reply = chan.transact(
        |w, seq| {
            let m = w.begin_msg(
                (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                libc::AF_UNSPEC as u8,
                group,
            );
            attr(w);
            w.end_msg(m);
        },
        |_| Ok(()),
    )?;
    Ok(match reply {
        Ok(_) => 0,
        Err(errno) => errno,
    })
}

/// One `NFULNL_MSG_PACKET` as an event; `None` when its payload is not an IPv4 or IPv6 packet.
fn decode_packet(attrs: crate::attr::Attrs<'_>, group: u16) -> Result<Option<LogEvent>, Error> {
    let mut prefix = String::new();
    let mut payload: Option<&[u8]> = None;
    let mut ct: Option<Attr<'_>> = None;
    let (mut in_ifindex, mut out_ifindex, mut timestamp) = (None, None, None);
    for a in attrs {
        let a = a?;
        match a.ty {
            NFULA_PREFIX => {
                let text = a.data.split(|&b| b == 0).next().unwrap_or_default();
                prefix = String::from_utf8_lossy(text).into_owned();
            }
            NFULA_PAYLOAD => payload = Some(a.data),
            NFULA_CT => ct = Some(a),
            NFULA_IFINDEX_INDEV => in_ifindex = Some(a.u32()?),
            NFULA_IFINDEX_OUTDEV => out_ifindex = Some(a.u32()?),
            NFULA_TIMESTAMP if a.data.len() == 16 => {
                let secs = u64::from_be_bytes(a.data[..8].try_into().unwrap_or_default());
                let usecs = u64::from_be_bytes(a.data[8..].try_into().unwrap_or_default());
                timestamp = UNIX_EPOCH
                    .checked_add(Duration::from_secs(secs) + Duration::from_micros(usecs.min(999_999)));
            }
            _ => {}
        }
    }
    let Some(packet) = payload.and_then(parse_ip) else {
        return Ok(None);
    };
    let tuples = match ct {
        Some(ct) => conntrack::decode_tuples(ct.nested())?,
        None => None,
    };
    let (original, reply) = tuples.map_or((None, None), |(o, r)| (Some(o), Some(r)));
    Ok(Some(LogEvent {
        group,
        prefix,
        protocol: packet.protocol,
        src: packet.src,
        dst: packet.dst,
        src_port: packet.ports.map(|p| p.0),
        dst_port: packet.ports.map(|p| p.1),
        original,
        reply,
        in_ifindex,
        out_ifindex,
        timestamp,
    }))
}

/// What the headers of a packet say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packet {
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    ports: Option<(u16, u16)>,
}

/// The IP header (and the TCP/UDP ports right after it) of a copied packet.
fn parse_ip(p: &[u8]) -> Option<Packet> {
    let version = p.first()? >> 4;
    let (protocol, src, dst, transport) = match version {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 || p.len() < 20 {
                return None;
            }
            let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let transport = if fragment_offset == 0 { p.get(ihl..) } else { None };
            (p[9], IpAddr::V4(src), IpAddr::V4(dst), transport)
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (
                p[6],
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                p.get(40..),
            )
        }
        _ => return None,
    };
    let ports = match (protocol, transport) {
        (6 | 17 | 132 | 136, Some(t)) if t.len() >= 4 => {
            Some((u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]])))
        }
        _ => None,
    };
    Some(Packet {
        protocol,
        src,
        dst,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_headers_give_addresses_and_ports() {
        let mut v4 = vec![
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 2, 192, 168, 1, 66,
        ];
        v4.extend([0x9c, 0x40, 0, 80]);
        assert_eq!(
            parse_ip(&v4),
            Some(Packet {
                protocol: 6,
                src: "203.0.113.2".parse().unwrap(),
                dst: "192.168.1.66".parse().unwrap(),
                ports: Some((40000, 80)),
            })
        );
        // A later fragment carries no ports.
        let mut frag = v4.clone();
        frag[7] = 8;
        assert_eq!(parse_ip(&frag).map(|p| p.ports), Some(None));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend("2001:db8:1::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend("2001:db8:2::66".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let p = parse_ip(&v6).expect("ipv6");
        assert_eq!((p.protocol, p.ports), (17, Some((5000, 53))));
        assert_eq!(p.dst, "2001:db8:2::66".parse::<IpAddr>().unwrap());
        assert_eq!(parse_ip(&[0x45, 0]), None);
        assert_eq!(parse_ip(&[]), None);
    }
}
