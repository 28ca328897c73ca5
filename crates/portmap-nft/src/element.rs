//! Mapping data ↔ set elements: DNAT map elements (key `l4proto . dport`, data `addr . port`), guard
//! verdict-map elements, allow-list interval elements, and the comment that carries a mapping's name
//! and description. Pure conversions; no kernel access.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use portmap_core::{Forward, Mapping, Transport};
use portmap_netlink::interval::{self, Interval};
use portmap_netlink::{Data, Element, Verdict, udata};

use crate::layout;

/// The comment a mapping's elements carry: `name` or `name: description`. Names never contain `:`,
/// so the first `": "` splits them.
pub fn mapping_comment(name: &str, description: Option<&str>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!("{name}: {d}"),
        _ => name.to_owned(),
    }
}

/// Split a comment written by [`mapping_comment`].
pub fn parse_mapping_comment(comment: &str) -> (String, Option<String>) {
    match comment.split_once(": ") {
        Some((name, desc)) => (name.to_owned(), Some(desc.to_owned())),
        None => (comment.to_owned(), None),
    }
}

/// Key bytes of `meta l4proto . th dport`: protocol and port, each padded to 4 bytes.
pub fn key_bytes(transport: Transport, port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![transport.number(), 0, 0, 0, p[0], p[1], 0, 0]
}

/// Decode a `meta l4proto . th dport` key.
pub fn parse_key(key: &[u8]) -> Option<(Transport, u16)> {
    if key.len() != 8 {
        return None;
    }
    let transport = Transport::from_number(key[0])?;
    Some((transport, u16::from_be_bytes([key[4], key[5]])))
}

/// The DNAT map element for one IPv4 forward.
pub fn dnat_element(forward: &Forward, comment: &str) -> Option<Element> {
    let IpAddr::V4(addr) = forward.to else { return None };
    let mut data = Vec::with_capacity(8);
    data.extend_from_slice(&addr.octets());
    data.extend_from_slice(&forward.to_port.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    Some(Element {
        key: key_bytes(forward.transport, forward.port),
        key_end: None,
        data: Some(Data::Value(data)),
        flags: 0,
        userdata: Some(udata::comment(comment)),
    })
}

/// Decode a DNAT map element into its forward and comment.
pub fn parse_dnat_element(element: &Element) -> Option<(Forward, Option<String>)> {
    let (transport, port) = parse_key(&element.key)?;
    let Some(Data::Value(data)) = &element.data else {
        return None;
    };
    if data.len() != 8 {
        return None;
    }
    let to = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
    let to_port = u16::from_be_bytes([data[4], data[5]]);
    let comment = element.userdata.as_deref().and_then(udata::parse_comment);
    Some((
        Forward {
            transport,
            port,
            to,
            to_port,
        },
        comment,
    ))
}

/// The guard verdict-map element sending one (protocol, port) to a mapping's allow-list chain.
pub fn guard_element(transport: Transport, port: u16, mapping: &str) -> Element {
    Element {
        key: key_bytes(transport, port),
        key_end: None,
        data: Some(Data::Verdict(Verdict::Jump(layout::allow_chain(mapping)))),
        flags: 0,
        userdata: Some(udata::comment(mapping)),
    }
}

/// Decode a guard element: the key and the chain it jumps to.
pub fn parse_guard_element(element: &Element) -> Option<((Transport, u16), String)> {
    let key = parse_key(&element.key)?;
    match &element.data {
        Some(Data::Verdict(Verdict::Jump(chain))) => Some((key, chain.clone())),
        _ => None,
    }
}

/// All DNAT elements of a mapping.
pub fn mapping_dnat_elements(mapping: &Mapping) -> Vec<Element> {
    let comment = mapping_comment(&mapping.name, mapping.description.as_deref());
    mapping
        .forwards()
        .iter()
        .filter_map(|f| dnat_element(f, &comment))
        .collect()
}

/// The interval-set elements for IPv4 prefixes (canonical: sorted, disjoint, non-adjacent).
pub fn interval_elements(prefixes: &[IpNet]) -> Vec<Element> {
    let intervals: Vec<Interval> = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Some(Interval {
                start: n.network().octets().to_vec(),
                end: n.broadcast().octets().to_vec(),
                comment: None,
            }),
            IpNet::V6(_) => None,
        })
        .collect();
    interval::to_elements(&intervals)
}

/// Read interval-set elements back into canonical prefixes; `None` when a key is not an IPv4 address.
pub fn prefixes_of(elements: &[Element]) -> Option<Vec<IpNet>> {
    let mut nets = Vec::new();
    for iv in interval::from_elements(elements) {
        let start: [u8; 4] = iv.start.as_slice().try_into().ok()?;
        let end: [u8; 4] = iv.end.as_slice().try_into().ok()?;
        let (start, end) = (u32::from_be_bytes(start), u32::from_be_bytes(end));
        if start > end {
            return None;
        }
        nets.extend(range_to_prefixes(start, end).into_iter().map(IpNet::V4));
    }
    Some(portmap_core::canonical_prefixes(nets))
}

/// The minimal list of prefixes covering `start..=end`.
fn range_to_prefixes(start: u32, end: u32) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    let mut cur = u64::from(start);
    let end = u64::from(end);
    while cur <= end {
        // The largest block aligned at `cur` that fits.
        let mut size: u64 = if cur == 0 {
            1 << 32
        } else {
            1 << cur.trailing_zeros().min(32)
        };
        while cur + size - 1 > end {
            size >>= 1;
        }
        let prefix_len = 32 - size.trailing_zeros() as u8;
        if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(cur as u32), prefix_len) {
            out.push(net);
        }
        cur += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn intervals_round_trip() {
        for case in [
            vec!["198.51.100.7/32", "203.0.113.0/24"],
            vec!["0.0.0.0/0"],
            vec!["0.0.0.0/8", "10.0.0.0/8"],
            vec!["255.255.255.255/32"],
            vec!["192.0.2.0/25", "198.51.100.0/23"],
        ] {
            let want = nets(&case);
            let elems = interval_elements(&want);
            assert_eq!(prefixes_of(&elems), Some(want.clone()), "{case:?}");
        }
    }

    #[test]
    fn dnat_element_layout() {
        let f = Forward {
            transport: Transport::Tcp,
            port: 8080,
            to: "192.168.1.66".parse().unwrap(),
            to_port: 80,
        };
        let e = dnat_element(&f, "web").unwrap();
        assert_eq!(e.key, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e.data, Some(Data::Value(vec![192, 168, 1, 66, 0, 80, 0, 0])));
        assert_eq!(parse_dnat_element(&e), Some((f, Some("web".into()))));
    }

    #[test]
    fn comments_split_at_first_separator() {
        assert_eq!(parse_mapping_comment("web"), ("web".into(), None));
        assert_eq!(
            parse_mapping_comment("web: a: b"),
            ("web".into(), Some("a: b".into()))
        );
        assert_eq!(mapping_comment("web", Some("a: b")), "web: a: b");
    }

    #[test]
    fn ranges_split_into_prefixes() {
        let got: Vec<String> = range_to_prefixes(
            u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            u32::from(Ipv4Addr::new(10, 0, 0, 6)),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            got,
            vec!["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
    }
}
