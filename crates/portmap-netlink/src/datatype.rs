//! nft's datatype ids, which nft stores in `NFTA_SET_KEY_TYPE`/`NFTA_SET_DATA_TYPE` so that
//! `nft list` can print a set's elements, and the rule for concatenations.
//!
//! Numbers only (nft's `enum datatypes`): no knowledge of which set holds what.

/// `verdict` (`TYPE_VERDICT` is stored as `NFT_DATA_VERDICT`).
pub const VERDICT: u32 = 0xffff_ff00;
/// `ipv4_addr`.
pub const IPV4_ADDR: u32 = 7;
/// `ipv6_addr`.
pub const IPV6_ADDR: u32 = 8;
/// `ether_addr`.
pub const ETHER_ADDR: u32 = 9;
/// `inet_proto`.
pub const INET_PROTO: u32 = 12;
/// `inet_service`.
pub const INET_SERVICE: u32 = 13;
/// `mark`.
pub const MARK: u32 = 19;
/// `ifname`.
pub const IFNAME: u32 = 41;

/// Bits each field takes in a concatenated type id.
pub const CONCAT_TYPE_BITS: u32 = 6;

/// The type id nft stores for a concatenation: `(t1 << 6) | t2 ...`, e.g.
/// `inet_proto . inet_service` = 781, `ipv4_addr . inet_service` = 461.
pub fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << CONCAT_TYPE_BITS) | t)
}

/// The key/data length of a concatenation of fields of these byte lengths: each field padded to
/// 4 bytes (`inet_proto . inet_service` is 8).
pub fn concat_len(field_lens: &[u32]) -> u32 {
    field_lens.iter().map(|l| l.div_ceil(4) * 4).sum()
}

/// An interface name as a key: the name's bytes NUL-padded to `IFNAMSIZ` (16).
pub fn ifname(name: &str) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_ids_match_nft() {
        assert_eq!(concat(&[INET_PROTO, INET_SERVICE]), 0x30d);
        assert_eq!(concat(&[IPV4_ADDR, INET_SERVICE]), 461);
        assert_eq!(concat_len(&[1, 2]), 8);
        assert_eq!(concat_len(&[16, 2]), 20);
        assert_eq!(ifname("eth0"), b"eth0\0\0\0\0\0\0\0\0\0\0\0\0");
    }
}
