//! [`interfaces`]: the network interfaces of one namespace with their up-state and addresses, read
//! over rtnetlink (`NETLINK_ROUTE`: an `RTM_GETLINK` and an `RTM_GETADDR` dump).
//!
//! Read only: it must not change links or addresses, and must not judge them (which interface is
//! WAN or LAN is the caller's business).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attr::Msg;
use crate::channel::Channel;
use crate::consts::{
    IFA_ADDRESS, IFA_LOCAL, IFADDRMSG_LEN, IFF_UP, IFINFOMSG_LEN, IFLA_EXT_MASK, IFLA_IFNAME, NETLINK_ROUTE,
    NLM_F_DUMP, NLM_F_REQUEST, RTEXT_FILTER_SKIP_STATS, RTM_DELADDR, RTM_DELLINK, RTM_GETADDR, RTM_GETLINK,
    RTM_NEWADDR, RTM_NEWLINK,
};
use crate::error::Error;
use crate::netns::Netns;

/// A network interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface index (`ifindex`).
    pub index: u32,
    /// The name, e.g. `eth0`.
    pub name: String,
    /// Administratively up (`IFF_UP`, what `ip link set up` sets); says nothing about carrier.
    pub up: bool,
    /// Its IPv4 and IPv6 addresses with their prefix lengths, in the kernel's order. For a
    /// point-to-point address this is the local end.
    pub addrs: Vec<(IpAddr, u8)>,
}

/// Every interface of `netns`, by index, with its addresses. The socket is created by a
/// short-lived thread that enters the namespace; the caller never changes namespace.
pub fn interfaces(netns: &Netns) -> Result<Vec<Interface>, Error> {
    let mut chan = Channel::open(netns, NETLINK_ROUTE)?;
    let links = chan.dump(
        |w, seq| {
            // ifinfomsg, all zero: AF_UNSPEC, any type, any index.
            let m = w.begin_msg_with(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, &[0; IFINFOMSG_LEN]);
            w.put_u32_ne(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
            w.end_msg(m);
        },
        || format!("the interfaces of network namespace {netns}"),
        |msg, out| {
            if let Some(link) = decode_link(msg)? {
                out.push(link);
            }
            Ok(())
        },
    )?;
    let addrs = chan.dump(
        |w, seq| {
            let m = w.begin_msg_with(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, &[0; IFADDRMSG_LEN]);
            w.end_msg(m);
        },
        || format!("the addresses of network namespace {netns}"),
        |msg, out| {
            if let Some(addr) = decode_addr(msg)? {
                out.push(addr);
            }
            Ok(())
        },
    )?;
    let mut by_index: HashMap<u32, Interface> = links.into_iter().map(|l| (l.index, l)).collect();
    for (index, addr, prefix) in addrs {
        // An address whose link appeared after the link dump is dropped with it.
        if let Some(link) = by_index.get_mut(&index) {
            link.addrs.push((addr, prefix));
        }
    }
    let mut out: Vec<Interface> = by_index.into_values().collect();
    out.sort_by_key(|l| l.index);
    Ok(out)
}

/// An `RTM_NEWLINK` reply or an `RTM_NEWLINK`/`RTM_DELLINK` notification: `ifinfomsg` (family,
/// pad, type, index, flags, change) + attributes.
pub(crate) fn decode_link(msg: &Msg<'_>) -> Result<Option<Interface>, Error> {
    if msg.msg_type != RTM_NEWLINK && msg.msg_type != RTM_DELLINK {
        return Ok(None);
    }
    let h = msg
        .payload
        .get(..IFINFOMSG_LEN)
        .ok_or_else(|| Error::decode("a short link message"))?;
    let index = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let flags = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    let mut name = None;
    for a in msg.attrs_after(IFINFOMSG_LEN) {
        let a = a?;
        if a.ty == IFLA_IFNAME {
            name = Some(a.string()?);
        }
    }
    let name = name.ok_or_else(|| Error::decode(format!("link {index} without a name")))?;
    Ok(Some(Interface {
        index,
        name,
        up: flags & IFF_UP != 0,
        addrs: Vec::new(),
    }))
}

/// An `RTM_NEWADDR` reply or an `RTM_NEWADDR`/`RTM_DELADDR` notification: `ifaddrmsg` (family, prefix length, flags, scope, index) + attributes;
/// `IFA_LOCAL` is the interface's own address where it differs from `IFA_ADDRESS` (the peer of a
/// point-to-point link).
pub(crate) fn decode_addr(msg: &Msg<'_>) -> Result<Option<(u32, IpAddr, u8)>, Error> {
    if msg.msg_type != RTM_NEWADDR && msg.msg_type != RTM_DELADDR {
        return Ok(None);
    }
    let h = msg
        .payload
        .get(..IFADDRMSG_LEN)
        .ok_or_else(|| Error::decode("a short address message"))?;
    let (family, prefix) = (i32::from(h[0]), h[1]);
    let index = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let mut address = None;
    let mut local = None;
    for a in msg.attrs_after(IFADDRMSG_LEN) {
        let a = a?;
        let slot = match a.ty {
            IFA_ADDRESS => &mut address,
            IFA_LOCAL => &mut local,
            _ => continue,
        };
        *slot = match (family, a.data.len()) {
            (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
                a.data[0], a.data[1], a.data[2], a.data[3],
            ))),
            (libc::AF_INET6, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(a.data);
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        };
    }
    Ok(local.or(address).map(|addr| (index, addr, prefix)))
}
