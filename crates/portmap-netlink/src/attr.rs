//! Netlink message and attribute framing: a writer that appends `nlmsghdr` + `nfgenmsg` + `nlattr`
//! TLVs (4-byte aligned, nests patched on close) to one buffer, and zero-copy readers over received
//! datagrams, messages and attribute streams.
//!
//! This is pure byte layout. It must not know what a table, rule or port mapping is; it never does
//! I/O and never allocates on the read path (errors aside).

use crate::consts::{NFGENMSG_LEN, NLA_F_NESTED, NLA_HDRLEN, NLA_TYPE_MASK, NLMSG_HDRLEN};
use crate::error::Error;

/// Rounds up to the 4-byte netlink alignment.
pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends messages and attributes to a byte buffer.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Starts a message with `nlmsghdr` and `nfgenmsg`; returns its offset for [`Writer::end_msg`].
    pub(crate) fn begin_msg(
        &mut self,
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let r = res_id.to_be_bytes();
        // nfgenmsg: family, NFNETLINK_V0, resource id.
        self.begin_msg_with(msg_type, flags, seq, &[family, 0, r[0], r[1]])
    }

    /// Starts a message with `nlmsghdr` and a family header of another protocol (e.g.
    /// rtnetlink's `ifinfomsg`), copied as given; returns its offset for [`Writer::end_msg`].
    pub(crate) fn begin_msg_with(&mut self, msg_type: u16, flags: u16, seq: u32, header: &[u8]) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.extend_from_slice(header);
        self.pad();
        start
    }

    /// Patches the length of the message that started at `start`.
    pub(crate) fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// One attribute with a raw payload.
    pub(crate) fn put(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        self.buf.reserve(align4(len));
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// A big-endian `u32` attribute (nftables' `NLA_BE32`).
    pub(crate) fn put_u32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A big-endian `u16` attribute (ports, conntrack zones).
    pub(crate) fn put_u16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A one-byte attribute.
    pub(crate) fn put_u8(&mut self, ty: u16, v: u8) {
        self.put(ty, &[v]);
    }

    /// A host-order `u32` attribute (rtnetlink's integers).
    pub(crate) fn put_u32_ne(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_ne_bytes());
    }

    /// A big-endian `u64` attribute (handles).
    pub(crate) fn put_u64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn put_str(&mut self, ty: u16, s: &str) {
        let len = NLA_HDRLEN + s.len() + 1;
        self.buf.reserve(align4(len));
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Opens a nested attribute (`NLA_F_NESTED` set); close it with [`Writer::nest_end`].
    pub(crate) fn nest_start(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Length the nest opened at `start` has so far.
    pub(crate) fn nest_len(&self, start: usize) -> usize {
        self.buf.len() - start
    }

    /// Closes a nest. The caller guarantees it fits in the 16-bit length (see `Batch`'s chunking).
    pub(crate) fn nest_end(&mut self, start: usize) {
        let len = self.buf.len() - start;
        debug_assert!(u16::try_from(len).is_ok(), "netlink attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }
}

/// One netlink message inside a received datagram.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)]
pub(crate) struct Msg<'a> {
    pub(crate) msg_type: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after `nlmsghdr`.
    pub(crate) payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// `nfgenmsg.nfgen_family` of an nftables message.
    pub(crate) fn family(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    /// The attributes after `nfgenmsg`.
    pub(crate) fn attrs(&self) -> Attrs<'a> {
        self.attrs_after(NFGENMSG_LEN)
    }

    /// The attributes after a family header of `header_len` bytes (padded to 4).
    pub(crate) fn attrs_after(&self, header_len: usize) -> Attrs<'a> {
        Attrs::new(self.payload.get(align4(header_len)..).unwrap_or(&[]))
    }
}

/// Iterates over the messages of one datagram; stops (yielding an error) at a malformed header.
pub(crate) struct Msgs<'a> {
    rest: &'a [u8],
}

impl<'a> Msgs<'a> {
    pub(crate) fn new(datagram: &'a [u8]) -> Self {
        Msgs { rest: datagram }
    }
}

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = read_u32_ne(&self.rest[0..4]) as usize;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::decode("netlink message with a bad length")));
        }
        let msg = Msg {
            msg_type: u16::from_ne_bytes([self.rest[4], self.rest[5]]),
            flags: u16::from_ne_bytes([self.rest[6], self.rest[7]]),
            seq: read_u32_ne(&self.rest[8..12]),
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// One attribute: its type (flags masked off), payload and offset in the stream it came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub(crate) ty: u16,
    pub(crate) data: &'a [u8],
}

impl<'a> Attr<'a> {
    pub(crate) fn u32(&self) -> Result<u32, Error> {
        match self.data.get(..4) {
            Some(b) if self.data.len() == 4 => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            _ => Err(Error::decode("a 32-bit attribute of the wrong size")),
        }
    }

    /// A big-endian `u16` (ports, conntrack zones).
    pub(crate) fn u16(&self) -> Result<u16, Error> {
        let arr: [u8; 2] = self
            .data
            .try_into()
            .map_err(|_| Error::decode("a 16-bit attribute of the wrong size"))?;
        Ok(u16::from_be_bytes(arr))
    }

    pub(crate) fn i32(&self) -> Result<i32, Error> {
        self.u32().map(u32::cast_signed)
    }

    pub(crate) fn u64(&self) -> Result<u64, Error> {
        let arr: [u8; 8] = self
            .data
            .try_into()
            .map_err(|_| Error::decode("a 64-bit attribute of the wrong size"))?;
        Ok(u64::from_be_bytes(arr))
    }

    pub(crate) fn u8(&self) -> Result<u8, Error> {
        self.data
            .first()
            .copied()
            .ok_or_else(|| Error::decode("an empty 8-bit attribute"))
    }

    /// A NUL-terminated string (the NUL and anything after it are dropped).
    pub(crate) fn str(&self) -> Result<&'a str, Error> {
        let end = self.data.iter().position(|&b| b == 0).unwrap_or(self.data.len());
        std::str::from_utf8(&self.data[..end])
            .map_err(|_| Error::decode("a string attribute that is not UTF-8"))
    }

    pub(crate) fn string(&self) -> Result<String, Error> {
        self.str().map(str::to_owned)
    }

    pub(crate) fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.data)
    }
}

/// Iterates over a stream of attributes. A truncated attribute ends the stream with an error.
#[derive(Clone)]
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Attrs { rest: data }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::decode("netlink attribute with a bad length")));
        }
        let attr = Attr {
            ty,
            data: &self.rest[NLA_HDRLEN..len],
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(attr))
    }
}

pub(crate) fn read_u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_nested_attributes() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg(0x0a00, 1, 7, 1, 0);
        w.put_str(1, "portmap");
        let n = w.nest_start(4);
        w.put_u32(1, 0x0102_0304);
        w.put(2, &[9]);
        w.nest_end(n);
        w.end_msg(m);
        assert_eq!(buf.len() % 4, 0);
        let msgs: Vec<_> = Msgs::new(&buf).collect::<Result<_, _>>().expect("parse");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 7);
        assert_eq!(msgs[0].family(), 1);
        let attrs: Vec<_> = msgs[0].attrs().collect::<Result<_, _>>().expect("attrs");
        assert_eq!(attrs[0].str().expect("str"), "portmap");
        assert_eq!(attrs[1].ty, 4);
        let inner: Vec<_> = attrs[1].nested().collect::<Result<_, _>>().expect("inner");
        assert_eq!(inner[0].u32().expect("u32"), 0x0102_0304);
        assert_eq!(inner[1].data, &[9]);
    }

    #[test]
    fn truncated_attribute_is_an_error_not_a_panic() {
        let bytes = [8u8, 0, 1, 0, 1, 2];
        let got: Vec<_> = Attrs::new(&bytes).collect();
        assert!(matches!(got.as_slice(), [Err(Error::Decode { .. })]));
    }
}
