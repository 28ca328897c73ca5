//! nft's userdata: the opaque `*_USERDATA` attributes the kernel stores for user space, in which
//! nft (libnftnl's `nftnl_udata`) keeps comments and set typing hints as TLVs
//! `{u8 type, u8 len, len bytes}` (no padding, `u32` values in host byte order).
//!
//! What nft 1.0.6 writes (verified with `nft --debug=mnl`):
//!
//! * table, chain, rule and element comments: one TLV of type 0 (`NFTNL_UDATA_TABLE_COMMENT`,
//!   `..._CHAIN_COMMENT`, `..._RULE_COMMENT`, `..._SET_ELEM_COMMENT` are all 0), its length
//!   counting a terminating NUL: `comment "mail"` is `00 05 6d 61 69 6c 00`.
//! * an element of an interval set whose range runs to the top of the key space also carries
//!   `NFTNL_UDATA_SET_ELEM_FLAGS` (1) = `NFTNL_SET_ELEM_F_INTERVAL_OPEN` (1): `01 04 01 00 00 00`.
//! * sets (`NFTA_SET_USERDATA`), types 0..7 = key byte order, data byte order, merge elements,
//!   key typeof, data typeof, expr, data interval, comment. For the reference sets:
//!   - `set w { type ifname }`: `00 04 01 00 00 00` (key byte order 1 = host endian).
//!   - `set s { type ipv4_addr; flags interval; comment "x" }`: `00 04 02 00 00 00` (big endian)
//!     `07 02 78 00` (comment).
//!   - `map m { type inet_proto . inet_service : ipv4_addr . inet_service }`:
//!     `00 04 00 00 00 00` `01 04 00 00 00 00` (both byte orders 0 = "invalid", as for any
//!     concatenation) then `03 08 00 04 0d 00 00 00 01 00` and `04 08 00 04 0d 00 00 00 01 00`
//!     (a key/data "typeof" nest naming nft's internal concat expression type 13 with an empty
//!     body — nft cannot parse it back and falls back to the datatype) and `06 04 00 00 00 00`
//!     (data interval = 0).
//!   - `map v { type inet_proto . inet_service : verdict }`: `00 04 00 00 00 00`
//!     `01 04 00 00 00 00` `03 08 00 04 0d 00 00 00 01 00` `06 04 00 00 00 00`.
//!
//!   [`set_udata`] writes only the byte orders and the comment: the other TLVs change nothing in
//!   what `nft list` prints (checked by this crate's conformance test), so sets built with it list
//!   exactly like sets built by `nft -f`.
//!
//! This module only encodes and parses the TLVs; it must not decide what a comment says.

/// TLV type of a comment in table, chain, rule and element userdata.
pub const COMMENT: u8 = 0;
/// TLV type of the element flags in element userdata (`NFTNL_UDATA_SET_ELEM_FLAGS`).
pub const ELEM_FLAGS: u8 = 1;
/// `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: this interval runs to the end of the key space.
pub const ELEM_F_INTERVAL_OPEN: u32 = 1;

/// `NFTNL_UDATA_SET_KEYBYTEORDER`.
pub const SET_KEYBYTEORDER: u8 = 0;
/// `NFTNL_UDATA_SET_DATABYTEORDER`.
pub const SET_DATABYTEORDER: u8 = 1;
/// `NFTNL_UDATA_SET_MERGE_ELEMENTS`.
pub const SET_MERGE_ELEMENTS: u8 = 2;
/// `NFTNL_UDATA_SET_KEY_TYPEOF`.
pub const SET_KEY_TYPEOF: u8 = 3;
/// `NFTNL_UDATA_SET_DATA_TYPEOF`.
pub const SET_DATA_TYPEOF: u8 = 4;
/// `NFTNL_UDATA_SET_EXPR`.
pub const SET_EXPR: u8 = 5;
/// `NFTNL_UDATA_SET_DATA_INTERVAL`.
pub const SET_DATA_INTERVAL: u8 = 6;
/// `NFTNL_UDATA_SET_COMMENT`.
pub const SET_COMMENT: u8 = 7;

/// nft's `BYTEORDER_INVALID`: what nft stores for concatenations and verdicts.
pub const BYTEORDER_INVALID: u32 = 0;
/// nft's `BYTEORDER_HOST_ENDIAN` (e.g. `ifname`, `mark`).
pub const BYTEORDER_HOST: u32 = 1;
/// nft's `BYTEORDER_BIG_ENDIAN` (addresses, ports).
pub const BYTEORDER_BIG: u32 = 2;

/// Longest comment text that fits a TLV (its length byte counts the NUL).
pub const MAX_COMMENT_LEN: usize = 254;

/// Appends one TLV. Values longer than 255 bytes are cut (never happens for what we write).
fn put(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    let len = value.len().min(255);
    out.push(ty);
    out.push(len as u8);
    out.extend_from_slice(&value[..len]);
}

fn put_str(out: &mut Vec<u8>, ty: u8, text: &str) {
    let text = truncate(text);
    out.push(ty);
    out.push((text.len() + 1) as u8);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

/// Cuts at the first NUL and to [`MAX_COMMENT_LEN`] bytes, on a character boundary.
fn truncate(text: &str) -> &str {
    let text = text.split('\0').next().unwrap_or("");
    if text.len() <= MAX_COMMENT_LEN {
        return text;
    }
    let mut end = MAX_COMMENT_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Userdata holding just a comment, as nft writes it for tables, chains, rules and elements.
/// Text past [`MAX_COMMENT_LEN`] bytes (or after a NUL) is dropped.
pub fn comment(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len().min(MAX_COMMENT_LEN) + 3);
    put_str(&mut out, COMMENT, text);
    out
}

/// Element userdata: an optional comment plus, for an interval that runs to the end of the key
/// space, nft's "interval open" flag.
pub fn element(comment: Option<&str>, interval_open: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(text) = comment {
        put_str(&mut out, COMMENT, text);
    }
    if interval_open {
        put(&mut out, ELEM_FLAGS, &ELEM_F_INTERVAL_OPEN.to_ne_bytes());
    }
    out
}

/// The comment in table, chain, rule or element userdata (TLV type 0), if any. Not for set
/// userdata, whose comment is type 7: use [`parse_set_udata`].
pub fn parse_comment(bytes: &[u8]) -> Option<String> {
    find(bytes, COMMENT).map(text)
}

/// Whether element userdata carries nft's "interval open" flag.
pub fn parse_interval_open(bytes: &[u8]) -> bool {
    find(bytes, ELEM_FLAGS).and_then(u32_value).unwrap_or(0) & ELEM_F_INTERVAL_OPEN != 0
}

/// What nft writes into `NFTA_SET_USERDATA`: the key byte order, the data byte order (maps) and the
/// comment, in that order. Pass [`BYTEORDER_INVALID`] (0) for concatenations and verdicts,
/// [`BYTEORDER_HOST`] for `ifname`/`mark`, [`BYTEORDER_BIG`] for addresses and ports — what nft
/// 1.0.6 sends (see the module documentation for the exact bytes of the reference sets).
pub fn set_udata(key_byteorder: Option<u32>, data_byteorder: Option<u32>, comment: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + comment.map_or(0, str::len));
    if let Some(order) = key_byteorder {
        put(&mut out, SET_KEYBYTEORDER, &order.to_ne_bytes());
    }
    if let Some(order) = data_byteorder {
        put(&mut out, SET_DATABYTEORDER, &order.to_ne_bytes());
    }
    if let Some(text) = comment {
        put_str(&mut out, SET_COMMENT, text);
    }
    out
}

/// The parts of set userdata portmap cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetUdata {
    /// `NFTNL_UDATA_SET_KEYBYTEORDER`.
    pub key_byteorder: Option<u32>,
    /// `NFTNL_UDATA_SET_DATABYTEORDER`.
    pub data_byteorder: Option<u32>,
    /// `NFTNL_UDATA_SET_COMMENT`.
    pub comment: Option<String>,
}

/// Reads set userdata written by nft or by [`set_udata`]; unknown TLVs are skipped.
pub fn parse_set_udata(bytes: &[u8]) -> SetUdata {
    let mut out = SetUdata::default();
    for (ty, value) in tlvs(bytes) {
        match ty {
            SET_KEYBYTEORDER => out.key_byteorder = u32_value(value),
            SET_DATABYTEORDER => out.data_byteorder = u32_value(value),
            SET_COMMENT => out.comment = Some(text(value)),
            _ => {}
        }
    }
    out
}

/// Iterates over the TLVs of a userdata blob as `(type, value)`; stops at a truncated TLV.
pub fn tlvs(bytes: &[u8]) -> Tlvs<'_> {
    Tlvs { rest: bytes }
}

/// Iterator returned by [`tlvs`].
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let [ty, len, rest @ ..] = self.rest else {
            return None;
        };
        let len = usize::from(*len);
        if rest.len() < len {
            self.rest = &[];
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some((*ty, value))
    }
}

fn find(bytes: &[u8], wanted: u8) -> Option<&[u8]> {
    tlvs(bytes).find(|(ty, _)| *ty == wanted).map(|(_, v)| v)
}

fn text(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn u32_value(value: &[u8]) -> Option<u32> {
    let arr: [u8; 4] = value.try_into().ok()?;
    Some(u32::from_ne_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_is_type_0_nul_terminated() {
        assert_eq!(comment("mail"), b"\x00\x05mail\x00");
        assert_eq!(
            comment("web: web server"),
            b"\x00\x10web: web server\x00".to_vec()
        );
        assert_eq!(parse_comment(&comment("game")).as_deref(), Some("game"));
        assert_eq!(parse_comment(b""), None);
    }

    #[test]
    fn long_comment_is_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        let bytes = comment(&long);
        assert_eq!(usize::from(bytes[1]), bytes.len() - 2);
        assert!(bytes.len() <= 257);
        let back = parse_comment(&bytes).expect("comment");
        assert!(long.starts_with(&back));
    }

    #[test]
    fn set_udata_matches_nft_1_0_6() {
        // set wan_ifaces { type ifname }
        assert_eq!(set_udata(Some(BYTEORDER_HOST), None, None), [0, 4, 1, 0, 0, 0]);
        // set allow_mail_src { type ipv4_addr; flags interval; comment "mail" }
        assert_eq!(
            set_udata(Some(BYTEORDER_BIG), None, Some("mail")),
            b"\x00\x04\x02\x00\x00\x00\x07\x05mail\x00"
        );
        let parsed = parse_set_udata(b"\x00\x04\x00\x00\x00\x00\x01\x04\x00\x00\x00\x00\x03\x08\x00\x04\x0d\x00\x00\x00\x01\x00\x06\x04\x00\x00\x00\x00");
        assert_eq!(
            parsed,
            SetUdata {
                key_byteorder: Some(0),
                data_byteorder: Some(0),
                comment: None
            }
        );
    }

    #[test]
    fn element_udata_with_open_flag() {
        let bytes = element(Some("x"), true);
        assert_eq!(bytes, b"\x00\x02x\x00\x01\x04\x01\x00\x00\x00");
        assert!(parse_interval_open(&bytes));
        assert_eq!(parse_comment(&bytes).as_deref(), Some("x"));
        assert!(!parse_interval_open(&comment("x")));
    }
}
