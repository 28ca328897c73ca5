//! [`Conntrack`]: the connection-tracking table of one network namespace over ctnetlink
//! (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`): dump its entries as [`Flow`]s and
//! delete entries, one at a time or all that match a predicate.
//!
//! An entry keeps the NAT decision taken for its first packet, so deleting it is how a changed
//! DNAT rule reaches flows that already exist. This module reads and deletes entries; it must not
//! create or alter them, and must not know why an entry is deleted (port mappings, rules): the
//! caller decides with its predicate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attr::{Attr, Attrs, Msg, Writer};
use crate::channel::{Channel, plain_kernel_error};
use crate::consts::{
    CTA_ID, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC, CTA_MARK, CTA_PROTO_DST_PORT,
    CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_CODE, CTA_PROTO_ICMPV6_ID,
    CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_STATUS, CTA_TUPLE_IP, CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO, CTA_TUPLE_REPLY, CTA_TUPLE_ZONE, CTA_ZONE, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW, NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::error::Error;
use crate::netns::Netns;

/// IP protocol numbers whose conntrack tuples carry ICMP id, type and code instead of ports.
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Bits of [`Flow::status`] (`IPS_*` in `linux/netfilter/nf_conntrack_common.h`).
pub mod status {
    /// `IPS_EXPECTED`: the entry was expected by a helper (e.g. an FTP data connection).
    pub const EXPECTED: u32 = 1 << 0;
    /// `IPS_SEEN_REPLY`: packets were seen in both directions.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// `IPS_ASSURED`: the entry is not dropped early when the table is full.
    pub const ASSURED: u32 = 1 << 2;
    /// `IPS_CONFIRMED`: the first packet left the box; the entry is in the table.
    pub const CONFIRMED: u32 = 1 << 3;
    /// `IPS_SRC_NAT`: the source was translated (SNAT, masquerade).
    pub const SRC_NAT: u32 = 1 << 4;
    /// `IPS_DST_NAT`: the destination was translated (DNAT, redirect).
    pub const DST_NAT: u32 = 1 << 5;
    /// `IPS_SEQ_ADJUST`: TCP sequence numbers are adjusted (a helper changed payload length).
    pub const SEQ_ADJUST: u32 = 1 << 6;
    /// `IPS_SRC_NAT_DONE`: the source NAT mapping is set up.
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// `IPS_DST_NAT_DONE`: the destination NAT mapping is set up.
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// `IPS_DYING`: the entry is being destroyed.
    pub const DYING: u32 = 1 << 9;
    /// `IPS_FIXED_TIMEOUT`: the timeout is not refreshed by traffic.
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    /// `IPS_OFFLOAD`: the flow is offloaded to a flowtable.
    pub const OFFLOAD: u32 = 1 << 14;
}

/// An address family of the conntrack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl L3 {
    fn number(self) -> u8 {
        match self {
            L3::V4 => libc::AF_INET as u8,
            L3::V6 => libc::AF_INET6 as u8,
        }
    }

    fn of(addr: &IpAddr) -> L3 {
        match addr {
            IpAddr::V4(_) => L3::V4,
            IpAddr::V6(_) => L3::V6,
        }
    }
}

/// What identifies an ICMP flow (IPv4 or IPv6) in place of ports: the echo identifier, type and
/// code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmp {
    /// The identifier (echo id).
    pub id: u16,
    /// The message type (8 = echo request; 128 over IPv6).
    pub icmp_type: u8,
    /// The message code.
    pub code: u8,
}

/// One direction of a tracked connection, as the kernel keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMP for IPv6, ...).
    pub proto: u8,
    /// Source port, for protocols with ports (TCP, UDP, SCTP, DCCP, UDP-Lite; GRE keys).
    pub src_port: Option<u16>,
    /// Destination port, for protocols with ports.
    pub dst_port: Option<u16>,
    /// For ICMP (IPv4 or IPv6): id, type and code (the kernel needs them to find the entry).
    pub icmp: Option<Icmp>,
}

impl Tuple {
    /// The address family, from the source address.
    pub fn l3(&self) -> L3 {
        L3::of(&self.src)
    }
}

/// `udp 192.0.2.1:40000 -> 198.51.100.2:5060`, `[2001:db8::1]:40000` for IPv6,
/// `icmp 192.0.2.1 -> 198.51.100.2 type 8 code 0 id 55`.
impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match proto_name(self.proto) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "proto {}", self.proto)?,
        }
        f.write_str(" ")?;
        endpoint(f, self.src, self.src_port)?;
        f.write_str(" -> ")?;
        endpoint(f, self.dst, self.dst_port)?;
        if let Some(icmp) = self.icmp {
            write!(f, " type {} code {} id {}", icmp.icmp_type, icmp.code, icmp.id)?;
        }
        Ok(())
    }
}

fn endpoint(f: &mut fmt::Formatter<'_>, addr: IpAddr, port: Option<u16>) -> fmt::Result {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        (a, Some(p)) => write!(f, "{a}:{p}"),
        (a, None) => write!(f, "{a}"),
    }
}

fn proto_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

/// One entry of the conntrack table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The first packet's direction, as it arrived (before NAT): the entry's key.
    pub original: Tuple,
    /// The answer's direction, as it will arrive: after DNAT its source is the inner host.
    pub reply: Tuple,
    /// `IPS_*` bits, see [`status`] (e.g. [`status::DST_NAT`]).
    pub status: u32,
    /// The conntrack zone, when not the default zone 0 (a zone set for the original direction
    /// only counts too).
    pub zone: Option<u16>,
    /// The connection mark (`ct mark`), when the kernel reports one.
    pub mark: Option<u32>,
    /// The kernel's id of this entry: stable while the entry lives. It hashes the entry's memory
    /// address and original tuple, and freed entries' memory is reused at once, so a new entry
    /// for the same tuple often gets the same id: it tells entries apart, not generations.
    pub id: Option<u32>,
}

impl Flow {
    /// The address family, from the original tuple.
    pub fn l3(&self) -> L3 {
        self.original.l3()
    }
}

/// A ctnetlink socket to the conntrack table of one network namespace.
#[derive(Debug)]
pub struct Conntrack {
    chan: Channel,
    netns: String,
}

impl Conntrack {
    /// Opens a socket inside `netns` (created by a short-lived thread that enters the namespace;
    /// the caller never changes namespace).
    pub fn open(netns: &Netns) -> Result<Conntrack, Error> {
        Ok(Conntrack {
            chan: Channel::open(netns, NETLINK_NETFILTER)?,
            netns: netns.to_string(),
        })
    }

    /// Every entry of the table (of one family, or of both with `None`). The kernel walks its
    /// hash table while connections come and go: an entry created or destroyed during the dump
    /// may be missing, but every entry that lives throughout it is there.
    pub fn dump(&mut self, family: Option<L3>) -> Result<Vec<Flow>, Error> {
        let family = family.map_or(libc::AF_UNSPEC as u8, L3::number);
        let netns = &self.netns;
        self.chan.dump(
            |w, seq| {
                let m = w.begin_msg(
                    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    seq,
                    family,
                    0,
                );
                w.end_msg(m);
            },
            || format!("the conntrack table of network namespace {netns}"),
            |msg, out| {
                if let Some(flow) = decode_flow(msg)? {
                    out.push(flow);
                }
                Ok(())
            },
        )
    }

    /// Deletes the entry with `flow`'s original tuple (in its zone). When `flow.id` is known the
    /// kernel deletes the entry only if its id matches — but a new entry for the same tuple
    /// often has the same id (see [`Flow::id`]). `Ok(false)` when there is no such entry (any
    /// more). The next packet of the connection then makes a new entry, translated by the rules of
    /// that moment.
    pub fn delete(&mut self, flow: &Flow) -> Result<bool, Error> {
        let t = &flow.original;
        if L3::of(&t.src) != L3::of(&t.dst) {
            return Err(Error::Invalid {
                what: format!("conntrack tuple {t}"),
                reason: "source and destination must both be IPv4 or both be IPv6".into(),
            });
        }
        let reply = self.chan.transact(
            |w, seq| {
                let m = w.begin_msg(
                    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                    t.l3().number(),
                    0,
                );
                // The tuple is always there: a delete without one flushes the whole table.
                put_tuple(w, CTA_TUPLE_ORIG, t);
                if let Some(zone) = flow.zone {
                    w.put_u16(CTA_ZONE, zone);
                }
                if let Some(id) = flow.id {
                    w.put_u32(CTA_ID, id);
                }
                w.end_msg(m);
            },
            |_| Ok(()),
        )?;
        match reply {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(errno) => Err(plain_kernel_error(
                &format!(
                    "deleting conntrack entry {t}{} in network namespace {}",
                    flow.zone.map(|z| format!(" (zone {z})")).unwrap_or_default(),
                    self.netns
                ),
                errno,
            )),
        }
    }

    /// Dumps the table (of one family, or both with `None`) and deletes every entry for which
    /// `pred` is true; returns how many it deleted (entries that vanished meanwhile are not
    /// counted).
    pub fn delete_where(
        &mut self,
        family: Option<L3>,
        mut pred: impl FnMut(&Flow) -> bool,
    ) -> Result<usize, Error> {
        let mut deleted = 0;
        for flow in self.dump(family)? {
            if pred(&flow) && self.delete(&flow)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

fn put_tuple(w: &mut Writer<'_>, ty: u16, t: &Tuple) {
    let outer = w.nest_start(ty);
    let ip = w.nest_start(CTA_TUPLE_IP);
    for (addr, v4, v6) in [
        (t.src, CTA_IP_V4_SRC, CTA_IP_V6_SRC),
        (t.dst, CTA_IP_V4_DST, CTA_IP_V6_DST),
    ] {
        match addr {
            IpAddr::V4(a) => w.put(v4, &a.octets()),
            IpAddr::V6(a) => w.put(v6, &a.octets()),
        }
    }
    w.nest_end(ip);
    let proto = w.nest_start(CTA_TUPLE_PROTO);
    w.put_u8(CTA_PROTO_NUM, t.proto);
    if let Some(p) = t.src_port {
        w.put_u16(CTA_PROTO_SRC_PORT, p);
    }
    if let Some(p) = t.dst_port {
        w.put_u16(CTA_PROTO_DST_PORT, p);
    }
    if let Some(icmp) = t.icmp {
        let (id, ty, code) = if t.proto == IPPROTO_ICMPV6 {
            (CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE)
        } else {
            (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
        };
        w.put_u16(id, icmp.id);
        w.put_u8(ty, icmp.icmp_type);
        w.put_u8(code, icmp.code);
    }
    w.nest_end(proto);
    w.nest_end(outer);
}

/// One dump reply as a flow; `None` for messages that are not IPv4/IPv6 entries.
fn decode_flow(msg: &Msg<'_>) -> Result<Option<Flow>, Error> {
    if msg.msg_type != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
        return Ok(None);
    }
    let family = msg.family();
    if family != L3::V4.number() && family != L3::V6.number() {
        return Ok(None);
    }
    let mut original = None;
    let mut reply = None;
    let mut status = 0;
    let mut zone = None;
    let mut mark = None;
    let mut id = None;
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            CTA_TUPLE_ORIG => original = Some(decode_tuple(a)?),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(a)?),
            CTA_STATUS => status = a.u32()?,
            CTA_ZONE => zone = Some(a.u16()?),
            CTA_MARK => mark = Some(a.u32()?),
            CTA_ID => id = Some(a.u32()?),
            _ => {}
        }
    }
    let (Some((original, orig_zone)), Some((reply, _))) = (original, reply) else {
        return Err(Error::decode("a conntrack entry without both tuples"));
    };
    Ok(Some(Flow {
        original,
        reply,
        status,
        zone: zone.or(orig_zone),
        mark,
        id,
    }))
}

/// The original and reply tuples and the status of a conntrack entry given as its `CTA_*`
/// attributes (nflog's `NFULA_CT` nest); `None` when it lacks a tuple.
pub(crate) fn decode_tuples(attrs: crate::attr::Attrs<'_>) -> Result<Option<(Tuple, Tuple)>, Error> {
    let (mut original, mut reply) = (None, None);
    for a in attrs {
        let a = a?;
        match a.ty {
            CTA_TUPLE_ORIG => original = Some(decode_tuple(a)?.0),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(a)?.0),
            _ => {}
        }
    }
    Ok(original.zip(reply))
}

/// A `CTA_TUPLE_*` nest, with its direction's zone if it has one.
fn decode_tuple(a: Attr<'_>) -> Result<(Tuple, Option<u16>), Error> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut src_port = None;
    let mut dst_port = None;
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    let mut zone = None;
    for part in a.nested() {
        let part = part?;
        match part.ty {
            CTA_TUPLE_IP => {
                for ip in part.nested() {
                    let ip = ip?;
                    match ip.ty {
                        CTA_IP_V4_SRC => src = Some(v4(ip)?),
                        CTA_IP_V4_DST => dst = Some(v4(ip)?),
                        CTA_IP_V6_SRC => src = Some(v6(ip)?),
                        CTA_IP_V6_DST => dst = Some(v6(ip)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in Attrs::new(part.data) {
                    let p = p?;
                    match p.ty {
                        CTA_PROTO_NUM => proto = Some(p.u8()?),
                        CTA_PROTO_SRC_PORT => src_port = Some(p.u16()?),
                        CTA_PROTO_DST_PORT => dst_port = Some(p.u16()?),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => icmp_id = Some(p.u16()?),
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => icmp_type = Some(p.u8()?),
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => icmp_code = Some(p.u8()?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_ZONE => zone = Some(part.u16()?),
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(proto)) = (src, dst, proto) else {
        return Err(Error::decode("a conntrack tuple without addresses or protocol"));
    };
    let icmp = match (icmp_id, icmp_type, icmp_code) {
        (Some(id), Some(icmp_type), Some(code)) if matches!(proto, IPPROTO_ICMP | IPPROTO_ICMPV6) => {
            Some(Icmp { id, icmp_type, code })
        }
        _ => None,
    };
    let tuple = Tuple {
        src,
        dst,
        proto,
        src_port,
        dst_port,
        icmp,
    };
    Ok((tuple, zone))
}

fn v4(a: Attr<'_>) -> Result<IpAddr, Error> {
    let b: [u8; 4] = a
        .data
        .try_into()
        .map_err(|_| Error::decode("an IPv4 address of the wrong size"))?;
    Ok(IpAddr::V4(Ipv4Addr::from(b)))
}

fn v6(a: Attr<'_>) -> Result<IpAddr, Error> {
    let b: [u8; 16] = a
        .data
        .try_into()
        .map_err(|_| Error::decode("an IPv6 address of the wrong size"))?;
    Ok(IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Msgs;

    fn tuple(src: &str, dst: &str, proto: u8, ports: Option<(u16, u16)>) -> Tuple {
        Tuple {
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            proto,
            src_port: ports.map(|p| p.0),
            dst_port: ports.map(|p| p.1),
            icmp: None,
        }
    }

    /// Encodes a flow the way the kernel's dump does, for the decoder.
    fn encode(flow: &Flow) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW,
            0,
            1,
            flow.l3().number(),
            0,
        );
        put_tuple(&mut w, CTA_TUPLE_ORIG, &flow.original);
        put_tuple(&mut w, CTA_TUPLE_REPLY, &flow.reply);
        w.put_u32(CTA_STATUS, flow.status);
        if let Some(z) = flow.zone {
            w.put_u16(CTA_ZONE, z);
        }
        if let Some(mark) = flow.mark {
            w.put_u32(CTA_MARK, mark);
        }
        if let Some(id) = flow.id {
            w.put_u32(CTA_ID, id);
        }
        w.end_msg(m);
        buf
    }

    fn round_trip(flow: &Flow) -> Flow {
        let bytes = encode(flow);
        let msg = Msgs::new(&bytes).next().expect("one message").expect("valid");
        decode_flow(&msg).expect("decode").expect("a flow")
    }

    #[test]
    fn tuples_round_trip_for_ports_icmp_and_ipv6() {
        let udp = Flow {
            original: tuple("192.0.2.1", "198.51.100.2", 17, Some((40000, 5060))),
            reply: tuple("10.0.0.5", "192.0.2.1", 17, Some((5070, 40000))),
            status: status::DST_NAT | status::CONFIRMED,
            zone: Some(7),
            mark: Some(0x10),
            id: Some(1234),
        };
        assert_eq!(round_trip(&udp), udp);
        let icmp = Flow {
            original: Tuple {
                icmp: Some(Icmp {
                    id: 55,
                    icmp_type: 128,
                    code: 0,
                }),
                ..tuple("2001:db8::1", "2001:db8::2", 58, None)
            },
            reply: Tuple {
                icmp: Some(Icmp {
                    id: 55,
                    icmp_type: 129,
                    code: 0,
                }),
                ..tuple("2001:db8::2", "2001:db8::1", 58, None)
            },
            status: 0,
            zone: None,
            mark: None,
            id: None,
        };
        assert_eq!(round_trip(&icmp), icmp);
    }

    #[test]
    fn tuples_display_like_addresses() {
        assert_eq!(
            tuple("192.0.2.1", "198.51.100.2", 17, Some((40000, 5060))).to_string(),
            "udp 192.0.2.1:40000 -> 198.51.100.2:5060"
        );
        assert_eq!(
            tuple("2001:db8::1", "2001:db8::2", 6, Some((1, 80))).to_string(),
            "tcp [2001:db8::1]:1 -> [2001:db8::2]:80"
        );
        let mut icmp = tuple("192.0.2.1", "198.51.100.2", 1, None);
        icmp.icmp = Some(Icmp {
            id: 55,
            icmp_type: 8,
            code: 0,
        });
        assert_eq!(
            icmp.to_string(),
            "icmp 192.0.2.1 -> 198.51.100.2 type 8 code 0 id 55"
        );
        assert_eq!(
            tuple("192.0.2.1", "198.51.100.2", 200, None).to_string(),
            "proto 200 192.0.2.1 -> 198.51.100.2"
        );
    }

    #[test]
    fn a_tuple_zone_counts_when_there_is_no_entry_zone() {
        let t = tuple("192.0.2.1", "198.51.100.2", 6, Some((1, 2)));
        // The original tuple nest with a CTA_TUPLE_ZONE appended inside it.
        let mut orig = Vec::new();
        put_tuple(&mut Writer::new(&mut orig), CTA_TUPLE_ORIG, &t);
        Writer::new(&mut orig).put_u16(CTA_TUPLE_ZONE, 9);
        let len = orig.len() as u16;
        orig[0..2].copy_from_slice(&len.to_ne_bytes());
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, 0, 1, 2, 0);
        w.buf.extend_from_slice(&orig);
        put_tuple(&mut w, CTA_TUPLE_REPLY, &t);
        w.end_msg(m);
        let msg = Msgs::new(&buf).next().expect("one").expect("valid");
        let flow = decode_flow(&msg).expect("decode").expect("flow");
        assert_eq!(flow.zone, Some(9));
        assert_eq!(flow.original, t);
    }

    #[test]
    fn other_messages_are_skipped() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, 0, 1, 7, 0);
        w.end_msg(m);
        let msg = Msgs::new(&buf).next().expect("one").expect("valid");
        assert_eq!(decode_flow(&msg).expect("decode"), None);
    }
}
