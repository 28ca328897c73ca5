//! [`route_to`]: the route a network namespace would use to send a packet to an address, asked of
//! the kernel over rtnetlink (`RTM_GETROUTE` for one destination, what `ip route get ADDR` does),
//! so the answer is the kernel's own FIB lookup — policy rules, tables and metrics included.
//!
//! Read only: it must not add or remove routes, and must not judge the answer (whether the
//! interface is the right one is the caller's business).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attr::Msg;
use crate::channel::Channel;
use crate::consts::{
    NETLINK_ROUTE, NLM_F_ACK, NLM_F_REQUEST, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC, RTA_TABLE,
    RTM_GETROUTE, RTM_NEWROUTE, RTMSG_LEN,
};
use crate::error::Error;
use crate::netns::Netns;

/// `rtm_type` of a route (`RTN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteType {
    /// `RTN_UNICAST` (1): a gateway or a directly connected network.
    Unicast,
    /// `RTN_LOCAL` (2): an address of this host.
    Local,
    /// `RTN_BROADCAST` (3).
    Broadcast,
    /// `RTN_BLACKHOLE` (6): silently discarded.
    Blackhole,
    /// `RTN_UNREACHABLE` (7).
    Unreachable,
    /// `RTN_PROHIBIT` (8).
    Prohibit,
    /// Any other `RTN_*` number.
    Other(u8),
}

impl RouteType {
    fn from_number(n: u8) -> Self {
        match n {
            1 => RouteType::Unicast,
            2 => RouteType::Local,
            3 => RouteType::Broadcast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            other => RouteType::Other(other),
        }
    }
}

/// The kernel's answer to "how would you send a packet to this address".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's type.
    pub kind: RouteType,
    /// Index of the interface the packet leaves by (`RTA_OIF`).
    pub oif: Option<u32>,
    /// The next hop, when it is not the destination itself (`RTA_GATEWAY`).
    pub gateway: Option<IpAddr>,
    /// The source address the host would use (`RTA_PREFSRC`).
    pub prefsrc: Option<IpAddr>,
    /// The routing table the route was found in (`RTA_TABLE`, else `rtm_table`).
    pub table: u32,
}

/// Why the kernel has no route: its errno and what that errno means for a route lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoute {
    /// The positive errno the kernel answered with.
    pub errno: i32,
}

impl NoRoute {
    /// What the errno means here: `ENETUNREACH` is no matching route at all, `EHOSTUNREACH` an
    /// `unreachable` route, `EACCES` a `prohibit` route, `EINVAL` a `blackhole` route.
    pub fn reason(self) -> &'static str {
        match self.errno {
            libc::ENETUNREACH => "no route matches (network unreachable)",
            libc::EHOSTUNREACH => "an `unreachable` route matches",
            libc::EACCES => "a `prohibit` route matches",
            libc::EINVAL => "a `blackhole` route matches",
            _ => "the kernel refused the route lookup",
        }
    }
}

/// The route `netns` would use for a packet to `dst` sent by the host itself (an output lookup,
/// like `ip route get DST`), or why there is none. The socket is created by a short-lived thread
/// that enters the namespace; the caller never changes namespace.
pub fn route_to(netns: &Netns, dst: IpAddr) -> Result<Result<Route, NoRoute>, Error> {
    let mut chan = Channel::open(netns, NETLINK_ROUTE)?;
    let (family, bits, bytes): (u8, u8, Vec<u8>) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    };
    let reply = chan.transact(
        |w, seq| {
            // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
            let mut header = [0u8; RTMSG_LEN];
            header[0] = family;
            header[1] = bits;
            let m = w.begin_msg_with(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, seq, &header);
            w.put(RTA_DST, &bytes);
            w.end_msg(m);
        },
        decode_route,
    )?;
    match reply {
        Ok(Some(Some(route))) => Ok(Ok(route)),
        Ok(_) => Err(Error::decode(format!(
            "the kernel acknowledged the route lookup for {dst} in network namespace {netns} without a route"
        ))),
        Err(libc::EPERM) => Err(Error::Permission {
            context: format!("looking up the route to {dst} in network namespace {netns}"),
        }),
        Err(errno) => Ok(Err(NoRoute { errno })),
    }
}

/// An `RTM_NEWROUTE` reply: `rtmsg` + attributes.
fn decode_route(msg: &Msg<'_>) -> Result<Option<Route>, Error> {
    if msg.msg_type != RTM_NEWROUTE {
        return Ok(None);
    }
    let h = msg
        .payload
        .get(..RTMSG_LEN)
        .ok_or_else(|| Error::decode("a short route message"))?;
    let family = i32::from(h[0]);
    let mut route = Route {
        kind: RouteType::from_number(h[7]),
        oif: None,
        gateway: None,
        prefsrc: None,
        table: u32::from(h[4]),
    };
    for a in msg.attrs_after(RTMSG_LEN) {
        let a = a?;
        match a.ty {
            RTA_OIF => route.oif = Some(host_u32(a.data)?),
            RTA_TABLE => route.table = host_u32(a.data)?,
            RTA_GATEWAY => route.gateway = addr(family, a.data),
            RTA_PREFSRC => route.prefsrc = addr(family, a.data),
            _ => {}
        }
    }
    Ok(Some(route))
}

/// rtnetlink's integers are in host byte order (nfnetlink's are big-endian).
fn host_u32(data: &[u8]) -> Result<u32, Error> {
    let b: [u8; 4] = data
        .try_into()
        .map_err(|_| Error::decode("a 32-bit route attribute of the wrong size"))?;
    Ok(u32::from_ne_bytes(b))
}

fn addr(family: i32, data: &[u8]) -> Option<IpAddr> {
    match (family, data.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
        (libc::AF_INET6, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(data);
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_decodes_into_its_route() {
        // nlmsghdr (16) + rtmsg (12) + RTA_TABLE u32 254 + RTA_OIF u32 3 + RTA_GATEWAY 192.0.2.1.
        let mut bytes = Vec::new();
        let mut attrs = Vec::new();
        for (ty, data) in [
            (RTA_TABLE, 254u32.to_ne_bytes().to_vec()),
            (RTA_OIF, 3u32.to_ne_bytes().to_vec()),
            (RTA_GATEWAY, vec![192, 0, 2, 1]),
        ] {
            attrs.extend_from_slice(&(4 + data.len() as u16).to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(&data);
        }
        let len = 16 + RTMSG_LEN + attrs.len();
        bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        bytes.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&[libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0]);
        bytes.extend_from_slice(&attrs);
        let msg = crate::attr::Msgs::new(&bytes)
            .next()
            .expect("one message")
            .expect("well formed");
        let route = decode_route(&msg).expect("decodes").expect("a route");
        assert_eq!(
            route,
            Route {
                kind: RouteType::Unicast,
                oif: Some(3),
                gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                prefsrc: None,
                table: 254,
            }
        );
    }

    #[test]
    fn every_errno_has_a_reason() {
        assert!(
            NoRoute {
                errno: libc::ENETUNREACH
            }
            .reason()
            .contains("no route")
        );
        assert!(NoRoute { errno: libc::EINVAL }.reason().contains("blackhole"));
    }
}
