//! What the table must know about the router that the configuration does not say: the router's own
//! LAN-side addresses (plus loopback), which hairpin must never DNAT. They are read from the network
//! namespace when a table is built, rendered or observed, so a LAN address that changes later shows
//! up as drift. The WAN address is never needed: DNAT matches `fib daddr type local`.
//!
//! IPv6 link-local addresses are left out: every IPv6 rule skips `fe80::/10` anyway, and they are
//! derived from interface hardware addresses, which would make the set differ from router to router
//! for nothing.
//!
//! Reading is done through portmap-netlink; this module only decides which addresses count.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portmap_core::Settings;
use portmap_netlink::Netns;
use portmap_netlink::link::{self, Interface};

use crate::Error;
use crate::layout::IpFamily;

/// Facts about the router that shape the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanSide {
    /// IPv4 destinations that always stay the router's (canonical prefixes): 127.0.0.0/8 and every
    /// IPv4 address on a LAN interface.
    pub lan_side4: Vec<IpNet>,
    /// IPv6 destinations that always stay the router's (canonical prefixes): `::1` and every IPv6
    /// address on a LAN interface that is not link-local.
    pub lan_side6: Vec<IpNet>,
}

impl Default for LanSide {
    fn default() -> Self {
        LanSide::from_interfaces(&[], &Settings::default())
    }
}

impl LanSide {
    /// Read the interfaces of `netns` and keep what `settings` makes relevant.
    pub fn read(netns: &Netns, settings: &Settings) -> Result<Self, Error> {
        Ok(LanSide::from_interfaces(&link::interfaces(netns)?, settings))
    }

    /// The environment for these interfaces (pure).
    pub fn from_interfaces(interfaces: &[Interface], settings: &Settings) -> Self {
        let mut lan_side4 = vec![IpNet::V4(
            Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default(),
        )];
        let mut lan_side6 = vec![IpNet::V6(Ipv6Net::from(Ipv6Addr::LOCALHOST))];
        for iface in interfaces
            .iter()
            .filter(|i| settings.lan_interfaces.contains(&i.name))
        {
            for (addr, _) in &iface.addrs {
                match addr {
                    IpAddr::V4(a) => lan_side4.push(IpNet::V4(Ipv4Net::from(*a))),
                    IpAddr::V6(a) if !a.is_unicast_link_local() => {
                        lan_side6.push(IpNet::V6(Ipv6Net::from(*a)));
                    }
                    IpAddr::V6(_) => {}
                }
            }
        }
        LanSide {
            lan_side4: portmap_core::canonical_prefixes(lan_side4),
            lan_side6: portmap_core::canonical_prefixes(lan_side6),
        }
    }

    /// The prefixes of one family's set.
    pub fn prefixes(&self, family: IpFamily) -> &[IpNet] {
        match family {
            IpFamily::V4 => &self.lan_side4,
            IpFamily::V6 => &self.lan_side6,
        }
    }
}
