//! Mapping data ↔ set elements: DNAT map elements (key `l4proto . dport`, data `addr . port`, the
//! address 4 or 16 bytes), guard verdict-map elements, allow-list and LAN-side interval elements
//! of either family, and the comment that carries a mapping's name and description. Pure
//! conversions; no kernel access.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portmap_core::{Forward, Mapping, StaleFlows, Transport};
use portmap_netlink::interval::{self, Interval};
use portmap_netlink::{Data, Element, Verdict, udata};

use crate::layout::{self, IpFamily};

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

/// What a mapping's elements are keyed by: the (protocol, port), and for a mapping with `listen`
/// the public address too (its elements then live in the `_addr` twins of the maps, see
/// [`layout::addressed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The router's address, for a mapping with `listen`.
    pub listen: Option<IpAddr>,
    /// Protocol.
    pub transport: Transport,
    /// External port.
    pub port: u16,
}

impl Key {
    /// The key of a forward.
    pub fn of(forward: &Forward) -> Self {
        Key {
            listen: forward.listen,
            transport: forward.transport,
            port: forward.port,
        }
    }

    /// `map`, or its addressed twin for a key with an address: where this key's element lives.
    pub fn map(self, map: &'static str) -> &'static str {
        layout::map_for(map, self.listen)
    }

    /// `tcp/8080`, or `tcp/198.51.100.5:8080` (`tcp/[2001:db8::5]:8080`), for messages.
    pub fn label(self) -> String {
        match self.listen {
            None => format!("{}/{}", self.transport, self.port),
            Some(IpAddr::V4(a)) => format!("{}/{a}:{}", self.transport, self.port),
            Some(IpAddr::V6(a)) => format!("{}/[{a}]:{}", self.transport, self.port),
        }
    }

    /// `tcp 8080`, or `198.51.100.5 tcp 8080`: how `observe` names the key in a mapping's list of
    /// objects (after the map's name), read back by [`Key::parse_words`].
    pub fn words(self) -> String {
        match self.listen {
            None => format!("{} {}", self.transport, self.port),
            Some(a) => format!("{a} {} {}", self.transport, self.port),
        }
    }

    /// Read [`Key::words`] back (split at spaces).
    pub fn parse_words(words: &[&str]) -> Option<Self> {
        let (listen, transport, port) = match words {
            [t, p] => (None, t, p),
            [a, t, p] => (Some(a.parse().ok()?), t, p),
            _ => return None,
        };
        let transport = match *transport {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return None,
        };
        Some(Key {
            listen,
            transport,
            port: port.parse().ok()?,
        })
    }
}

/// Key bytes of `meta l4proto . th dport`: protocol and port, each padded to 4 bytes; with an
/// address, `ip daddr . meta l4proto . th dport` (the address's 4 or 16 bytes first).
pub fn key_bytes(key: Key) -> Vec<u8> {
    let p = key.port.to_be_bytes();
    let mut out = match key.listen {
        None => Vec::with_capacity(8),
        Some(IpAddr::V4(a)) => a.octets().to_vec(),
        Some(IpAddr::V6(a)) => a.octets().to_vec(),
    };
    out.extend([key.transport.number(), 0, 0, 0, p[0], p[1], 0, 0]);
    out
}

/// The key of (protocol, port) on any address.
pub fn plain_key(transport: Transport, port: u16) -> Key {
    Key {
        listen: None,
        transport,
        port,
    }
}

/// Decode a key written by [`key_bytes`]: 8 bytes, or 12 (IPv4 address) or 24 (IPv6) with the
/// address first.
pub fn parse_key(key: &[u8]) -> Option<Key> {
    let (listen, rest) = match key.len() {
        8 => (None, key),
        12 | 24 => {
            let (a, rest) = key.split_at(key.len() - 8);
            (Some(addr_of(a)?), rest)
        }
        _ => return None,
    };
    if rest[1..4] != [0, 0, 0] || rest[6..8] != [0, 0] {
        return None;
    }
    let transport = Transport::from_number(rest[0])?;
    Some(Key {
        listen,
        transport,
        port: u16::from_be_bytes([rest[4], rest[5]]),
    })
}

/// The element of the DNAT map of the forward's family (`dnat4` or `dnat6`, see
/// [`IpFamily::of`]): data is the address (4 or 16 bytes) and the port padded to 4 bytes.
pub fn dnat_element(forward: &Forward, comment: &str) -> Element {
    let mut data = match forward.to {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    data.extend_from_slice(&forward.to_port.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    Element {
        key: key_bytes(Key::of(forward)),
        key_end: None,
        data: Some(Data::Value(data)),
        flags: 0,
        userdata: Some(udata::comment(comment)),
        timeout: None,
        expiration: None,
    }
}

/// Decode an element of `family`'s DNAT map (or its addressed twin) into its forward and comment.
pub fn parse_dnat_element(element: &Element, family: IpFamily) -> Option<(Forward, Option<String>)> {
    let key = parse_key(&element.key)?;
    if key.listen.is_some_and(|a| IpFamily::of(a) != family) {
        return None;
    }
    let Some(Data::Value(data)) = &element.data else {
        return None;
    };
    let len = family.addr_len() as usize;
    if data.len() != len + 4 {
        return None;
    }
    let to = addr_of(&data[..len])?;
    let to_port = u16::from_be_bytes([data[len], data[len + 1]]);
    let comment = element.userdata.as_deref().and_then(udata::parse_comment);
    Some((
        Forward {
            transport: key.transport,
            port: key.port,
            to,
            to_port,
            listen: key.listen,
        },
        comment,
    ))
}

/// The guard verdict-map element sending one (protocol, port) to a mapping's allow-list chain.
pub fn guard_element(key: Key, mapping: &str) -> Element {
    Element {
        key: key_bytes(key),
        key_end: None,
        data: Some(Data::Verdict(Verdict::Jump(layout::allow_chain(mapping)))),
        flags: 0,
        userdata: Some(udata::comment(mapping)),
        timeout: None,
        expiration: None,
    }
}

/// Decode a guard element: the key and the chain it jumps to.
pub fn parse_guard_element(element: &Element) -> Option<(Key, String)> {
    let key = parse_key(&element.key)?;
    match &element.data {
        Some(Data::Verdict(Verdict::Jump(chain))) => Some((key, chain.clone())),
        _ => None,
    }
}

/// An element of an object map: the (protocol, port) key and the object it selects
/// (`tcp . 8080 : "conn_web"`).
pub fn object_element(key: Key, object: String) -> Element {
    Element {
        key: key_bytes(key),
        key_end: None,
        data: Some(Data::Object(object)),
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    }
}

/// Decode an object-map element: its key and the object it names.
pub fn parse_object_element(element: &Element) -> Option<(Key, &str)> {
    let key = parse_key(&element.key)?;
    match &element.data {
        Some(Data::Object(name)) if element.userdata.is_none() && element.flags == 0 => Some((key, name)),
        _ => None,
    }
}

/// The log-map element sending one (protocol, port) to a mapping's log chain.
pub fn log_element(key: Key, mapping: &str) -> Element {
    Element {
        key: key_bytes(key),
        key_end: None,
        data: Some(Data::Verdict(Verdict::Jump(layout::log_chain(mapping)))),
        flags: 0,
        userdata: None,
        timeout: None,
        expiration: None,
    }
}

/// The record of a pending conntrack cleanup, in the stale set of the forward's family: the key is
/// the old forward (`l4proto . port . address . port`, each field padded to 4 bytes); the comment
/// names the mapping, followed by ` narrowed` when only sources outside its new allow-list go.
pub fn stale_element(flows: &StaleFlows) -> Element {
    let f = &flows.forward;
    let mut key = key_bytes(plain_key(f.transport, f.port));
    match f.to {
        IpAddr::V4(a) => key.extend(a.octets()),
        IpAddr::V6(a) => key.extend(a.octets()),
    }
    let p = f.to_port.to_be_bytes();
    key.extend([p[0], p[1], 0, 0]);
    let comment = if flows.unless_from.is_some() {
        format!("{} narrowed", flows.mapping)
    } else {
        flows.mapping.clone()
    };
    Element {
        key,
        key_end: None,
        data: None,
        flags: 0,
        userdata: Some(udata::comment(&comment)),
        timeout: None,
        expiration: None,
    }
}

/// Decode a stale-set element of `family`: the old forward, the mapping, and whether the cleanup
/// spares the mapping's allowed sources.
pub fn parse_stale_element(element: &Element, family: IpFamily) -> Option<(Forward, String, bool)> {
    let len = family.addr_len() as usize;
    let key = &element.key;
    if key.len() != 12 + len {
        return None;
    }
    let Key { transport, port, .. } = parse_key(&key[..8])?;
    let to = addr_of(&key[8..8 + len])?;
    let to_port = u16::from_be_bytes([key[8 + len], key[9 + len]]);
    let comment = element.userdata.as_deref().and_then(udata::parse_comment)?;
    let (mapping, narrowed) = match comment.strip_suffix(" narrowed") {
        Some(name) => (name.to_owned(), true),
        None => (comment, false),
    };
    Some((
        Forward {
            transport,
            port,
            to,
            to_port,
            listen: None,
        },
        mapping,
        narrowed,
    ))
}

/// All DNAT elements of a mapping (all in the map of the mapping's family).
pub fn mapping_dnat_elements(mapping: &Mapping) -> Vec<Element> {
    let comment = mapping_comment(&mapping.name, mapping.description.as_deref());
    mapping
        .forwards()
        .iter()
        .map(|f| dnat_element(f, &comment))
        .collect()
}

/// The interval-set elements for prefixes of one family (canonical: sorted, disjoint,
/// non-adjacent). Keys are the addresses' bytes, 4 or 16 long.
pub fn interval_elements(prefixes: &[IpNet]) -> Vec<Element> {
    let intervals: Vec<Interval> = prefixes
        .iter()
        .map(|p| {
            let (start, end) = match p {
                IpNet::V4(n) => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
                IpNet::V6(n) => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
            };
            Interval {
                start,
                end,
                comment: None,
            }
        })
        .collect();
    interval::to_elements(&intervals)
}

/// Read the elements of an interval set of `family`'s addresses back into canonical prefixes;
/// `None` when a key is not an address of that family or a range is reversed.
pub fn prefixes_of(elements: &[Element], family: IpFamily) -> Option<Vec<IpNet>> {
    let len = family.addr_len() as usize;
    let mut nets = Vec::new();
    for iv in interval::from_elements(elements) {
        if iv.start.len() != len || iv.end.len() != len {
            return None;
        }
        let (start, end) = (number_of(&iv.start), number_of(&iv.end));
        if start > end {
            return None;
        }
        nets.extend(range_to_prefixes(start, end, family));
    }
    Some(portmap_core::canonical_prefixes(nets))
}

/// An address from its 4 or 16 network-order bytes.
fn addr_of(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    } else {
        <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
    }
}

/// Big-endian bytes (at most 16) as a number.
fn number_of(bytes: &[u8]) -> u128 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u128::from(b))
}

/// The minimal list of prefixes covering the addresses `start..=end` of `family` (both given as
/// numbers below 2^32 for IPv4).
fn range_to_prefixes(start: u128, end: u128, family: IpFamily) -> Vec<IpNet> {
    let bits = family.addr_len() * 8;
    // The addresses a block of `host_bits` host bits starting at `at` ends at.
    let last = |at: u128, host_bits: u32| {
        if host_bits >= 128 {
            u128::MAX
        } else {
            at | ((1u128 << host_bits) - 1)
        }
    };
    let mut out = Vec::new();
    let mut cur = start;
    loop {
        // The largest block aligned at `cur` that does not run past `end`.
        let mut host_bits = cur.trailing_zeros().min(bits);
        while last(cur, host_bits) > end {
            host_bits -= 1;
        }
        let prefix_len = (bits - host_bits) as u8;
        let net = match family {
            IpFamily::V4 => u32::try_from(cur)
                .ok()
                .and_then(|a| Ipv4Net::new(Ipv4Addr::from(a), prefix_len).ok())
                .map(IpNet::V4),
            IpFamily::V6 => Ipv6Net::new(Ipv6Addr::from(cur), prefix_len).ok().map(IpNet::V6),
        };
        out.extend(net);
        let block_end = last(cur, host_bits);
        if block_end >= end {
            break;
        }
        cur = block_end + 1;
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
            assert_eq!(prefixes_of(&elems, IpFamily::V4), Some(want.clone()), "{case:?}");
            // Keys of the wrong length are not read as the other family.
            assert_eq!(prefixes_of(&elems, IpFamily::V6), None, "{case:?}");
        }
    }

    #[test]
    fn ipv6_intervals_round_trip() {
        for case in [
            vec!["::1/128", "2001:db8:2::1/128"],
            vec!["::/0"],
            vec!["::/8", "2001:db8::/32"],
            vec!["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"],
            vec!["2001:db8:1::2/127", "2001:db8:100::/48", "fd00::/8"],
            vec!["8000::/1"],
        ] {
            let want = nets(&case);
            let elems = interval_elements(&want);
            assert!(elems.iter().all(|e| e.key.len() == 16), "{case:?}");
            assert_eq!(prefixes_of(&elems, IpFamily::V6), Some(want.clone()), "{case:?}");
            assert_eq!(prefixes_of(&elems, IpFamily::V4), None, "{case:?}");
        }
    }

    #[test]
    fn dnat_element_layout() {
        let f = Forward {
            transport: Transport::Tcp,
            port: 8080,
            to: "192.168.1.66".parse().unwrap(),
            to_port: 80,
            listen: None,
        };
        let e = dnat_element(&f, "web");
        assert_eq!(e.key, vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e.data, Some(Data::Value(vec![192, 168, 1, 66, 0, 80, 0, 0])));
        assert_eq!(
            parse_dnat_element(&e, IpFamily::V4),
            Some((f, Some("web".into())))
        );
        assert_eq!(parse_dnat_element(&e, IpFamily::V6), None);
    }

    #[test]
    fn ipv6_dnat_element_layout() {
        // What nft 1.0.6 sends for `tcp . 80 : 2001:db8:2::66 . 8080`: 16 address bytes, then the
        // port padded to 4.
        let f = Forward {
            transport: Transport::Tcp,
            port: 80,
            to: "2001:db8:2::66".parse().unwrap(),
            to_port: 8080,
            listen: None,
        };
        let e = dnat_element(&f, "web6");
        assert_eq!(e.key, vec![6, 0, 0, 0, 0, 80, 0, 0]);
        let mut data = vec![0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66];
        data.extend([0x1f, 0x90, 0, 0]);
        assert_eq!(e.data, Some(Data::Value(data)));
        assert_eq!(
            parse_dnat_element(&e, IpFamily::V6),
            Some((f, Some("web6".into())))
        );
        assert_eq!(parse_dnat_element(&e, IpFamily::V4), None);
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
        let split = |start: IpAddr, end: IpAddr| -> Vec<String> {
            let number = |a: IpAddr| match a {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            range_to_prefixes(number(start), number(end), IpFamily::of(start))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            split(ip("10.0.0.1"), ip("10.0.0.6")),
            vec!["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(split(ip("0.0.0.0"), ip("255.255.255.255")), vec!["0.0.0.0/0"]);
        assert_eq!(
            split(ip("2001:db8::1"), ip("2001:db8::6")),
            vec![
                "2001:db8::1/128",
                "2001:db8::2/127",
                "2001:db8::4/127",
                "2001:db8::6/128"
            ]
        );
        assert_eq!(
            split(ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            vec!["::/0"]
        );
        assert_eq!(
            split(
                ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
                ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            ),
            vec!["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"]
        );
    }
}
