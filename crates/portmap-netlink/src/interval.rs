//! Intervals in sets with `flags interval` (the kernel's rbtree sets), as nft encodes them: a
//! range `[start, end]` is a start element `start` and an `INTERVAL_END` element `end + 1`; a range
//! that runs to the top of the key space has no end element and nft marks its start element's
//! userdata "interval open". Adjacent ranges give an end element and a start element with the
//! same key, end first.
//!
//! nft 1.0.6 also sends a leading `INTERVAL_END` element with key 0 when it creates such a set;
//! [`to_elements`] does not (it would make a later `add_elements` of a lower range fail with
//! `EEXIST`), and `nft list` prints the same either way. Keys are big-endian byte strings of the
//! set's key length. This module knows ranges of bytes, not what they mean.

use crate::object::{Element, elem_flags};
use crate::udata;

/// One closed range of keys, both ends included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interval {
    /// First key in the range.
    pub start: Vec<u8>,
    /// Last key in the range (same length as `start`).
    pub end: Vec<u8>,
    /// Comment nft shows on the range (stored on its start element).
    pub comment: Option<String>,
}

/// The elements that encode `intervals` (which must not overlap), in key order, as nft sends them.
pub fn to_elements(intervals: &[Interval]) -> Vec<Element> {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start));
    let mut out = Vec::with_capacity(sorted.len() * 2);
    for iv in sorted {
        let after = increment(&iv.end);
        let open = after.is_none();
        let userdata = (iv.comment.is_some() || open).then(|| udata::element(iv.comment.as_deref(), open));
        out.push(Element {
            key: iv.start.clone(),
            key_end: None,
            data: None,
            flags: 0,
            userdata,
            timeout: None,
            expiration: None,
        });
        if let Some(after) = after {
            out.push(Element {
                key: after,
                key_end: None,
                data: None,
                flags: elem_flags::INTERVAL_END,
                userdata: None,
                timeout: None,
                expiration: None,
            });
        }
    }
    out
}

/// The ranges that elements read back from an interval set encode (in any order, as the kernel
/// dumps them). Elements with a `key_end` (concatenated ranges) are taken as they are.
pub fn from_elements(elements: &[Element]) -> Vec<Interval> {
    let mut sorted: Vec<&Element> = elements.iter().collect();
    // Key order; on equal keys the end of the lower range comes before the start of the next.
    sorted.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| is_start(a).cmp(&is_start(b))));
    let mut out = Vec::with_capacity(sorted.len() / 2 + 1);
    let mut i = 0;
    while let Some(e) = sorted.get(i) {
        i += 1;
        if !is_start(e) {
            continue; // nft's leading end element, or a stray end
        }
        let comment = e.userdata.as_deref().and_then(udata::parse_comment);
        if let Some(end) = &e.key_end {
            out.push(Interval {
                start: e.key.clone(),
                end: end.clone(),
                comment,
            });
            continue;
        }
        let end = match sorted.get(i) {
            Some(next) if !is_start(next) && next.key > e.key => {
                i += 1;
                decrement(&next.key)
            }
            _ => vec![0xff; e.key.len()],
        };
        out.push(Interval {
            start: e.key.clone(),
            end,
            comment,
        });
    }
    out
}

fn is_start(e: &Element) -> bool {
    e.flags & elem_flags::INTERVAL_END == 0
}

/// `key + 1` as a big-endian number, `None` when it overflows.
fn increment(key: &[u8]) -> Option<Vec<u8>> {
    let mut out = key.to_vec();
    for b in out.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return Some(out);
        }
    }
    None
}

/// `key - 1` as a big-endian number (0 stays 0).
fn decrement(key: &[u8]) -> Vec<u8> {
    let mut out = key.to_vec();
    if out.iter().all(|&b| b == 0) {
        return out;
    }
    for b in out.iter_mut().rev() {
        let (v, borrow) = b.overflowing_sub(1);
        *b = v;
        if !borrow {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(start: [u8; 4], end: [u8; 4], comment: Option<&str>) -> Interval {
        Interval {
            start: start.to_vec(),
            end: end.to_vec(),
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn encodes_like_nft() {
        let elems = to_elements(&[
            iv([203, 0, 113, 0], [203, 0, 113, 255], None),
            iv([198, 51, 100, 7], [198, 51, 100, 7], Some("one")),
            iv([255, 255, 255, 0], [255, 255, 255, 255], None),
        ]);
        let keys: Vec<(Vec<u8>, u32)> = elems.iter().map(|e| (e.key.clone(), e.flags)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![198, 51, 100, 7], 0),
                (vec![198, 51, 100, 8], 1),
                (vec![203, 0, 113, 0], 0),
                (vec![203, 0, 114, 0], 1),
                (vec![255, 255, 255, 0], 0),
            ]
        );
        assert_eq!(elems[0].userdata.as_deref(), Some(&b"\x00\x04one\x00"[..]));
        assert_eq!(elems[4].userdata.as_deref(), Some(&[1u8, 4, 1, 0, 0, 0][..]));
    }

    #[test]
    fn round_trips_through_a_reversed_dump_with_a_leading_end() {
        let ranges = vec![
            iv([10, 0, 0, 0], [10, 0, 0, 255], Some("a")),
            iv([10, 0, 1, 0], [10, 0, 1, 255], None),
            iv([198, 51, 100, 7], [198, 51, 100, 7], None),
            iv([255, 255, 255, 0], [255, 255, 255, 255], None),
        ];
        let mut elems = to_elements(&ranges);
        elems.push(Element {
            key: vec![0; 4],
            key_end: None,
            data: None,
            flags: elem_flags::INTERVAL_END,
            userdata: None,
            timeout: None,
            expiration: None,
        });
        elems.reverse();
        assert_eq!(from_elements(&elems), ranges);
    }
}
