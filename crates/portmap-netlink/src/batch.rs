//! [`Batch`]: the messages of one nftables transaction, built back to back in buffers of about
//! 1 MiB (sent together, as one datagram), each remembered well enough to say in words which one
//! the kernel refused (and, for element messages, which element). Batches built apart (say, one
//! per set) are joined with [`Batch::append`], which moves their buffers.
//!
//! Message `i` carries sequence number `i + 1`; `Socket::send` frames the messages with batch begin
//! (sequence 0) and batch end (sequence `len + 1`). Element lists are split over as many messages
//! as needed so that no attribute passes the 64 KiB netlink attribute limit. The batch never does
//! I/O and knows nothing about port mappings.

use crate::attr::{Attrs, Writer, align4};
use crate::consts::{
    NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELSET,
    NFT_MSG_DELSETELEM, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_EXPR_NAME, NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_SET_ID, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_NAME,
    NFTA_SET_TABLE, NFTA_TABLE_NAME, NLA_HDRLEN, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
    NLMSG_HDRLEN,
};
use crate::consts::{NFT_MSG_DELOBJ, NFT_MSG_NEWOBJ, NFTA_OBJ_NAME, NFTA_OBJ_TABLE, NFTA_OBJ_TYPE};
use crate::encode;
use crate::object::{Chain, Element, Family, Object, Rule, Set, Table};

/// Largest payload a netlink attribute can describe (its length field is 16 bits).
const MAX_ATTR_LEN: usize = u16::MAX as usize;

/// What a message does, for [`Batch::describe`].
#[derive(Debug, Clone)]
enum Op {
    AddTable,
    DelTable,
    AddChain,
    DelChain,
    AddRule,
    DelRule(u64),
    AddSet {
        map: bool,
    },
    DelSet,
    AddElements(ElemChunk),
    DelElements(ElemChunk),
    FlushSet,
    /// The object type ([`crate::object_type`]).
    AddObject(u32),
    DelObject(u32),
}

/// Which elements of the caller's slice one element message carries (small: a batch of 100,000
/// messages keeps one per message).
#[derive(Debug, Clone, Copy)]
struct ElemChunk {
    map: bool,
    /// Index of the first element in the slice given to `add_elements`/`del_elements`.
    first: u32,
    count: u32,
    /// Offset of the `NFTA_SET_ELEM_LIST_ELEMENTS` nest from the start of the message.
    list_offset: u16,
}

impl ElemChunk {
    fn first(&self) -> usize {
        self.first as usize
    }

    fn count(&self) -> usize {
        self.count as usize
    }
}

#[derive(Debug, Clone)]
struct MsgInfo {
    /// Which of `Batch::chunks` holds the message.
    chunk: u32,
    /// Offset of the message in its chunk.
    start: u32,
    op: Op,
    family: Family,
}

/// The messages of one nftables transaction (see [`crate::Socket::send`]).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The messages, back to back, in buffers of about [`CHUNK`] bytes (sent as one datagram
    /// with an iovec): a batch of 20 MB never sits in a buffer grown by doubling, and appending a
    /// batch ([`Batch::append`]) moves its buffers instead of copying them. A message never
    /// spans two chunks.
    chunks: Vec<Vec<u8>>,
    msgs: Vec<MsgInfo>,
    /// The element list the last message is, while [`Batch::add_element`] may add to it.
    open: Option<OpenList>,
}

/// The set whose element list the batch's last message holds, for [`Batch::add_element`].
#[derive(Debug, Clone)]
struct OpenList {
    family: Family,
    table: String,
    set: String,
    set_id: u32,
    /// Index (in the caller's numbering) of the element added next.
    next: usize,
}

/// Size of a full chunk of [`Batch`]'s messages.
const CHUNK: usize = 1 << 20;
/// A chunk holding less than this grows in place; a fuller one is left as it is, and the next
/// message starts a new chunk. [`Batch::append`] copies chunks this small rather than moving
/// them, so that many small batches appended do not make many iovec entries.
const SMALL_CHUNK: usize = 256 << 10;
/// Room an element message may take: the list's attribute limit and the headers around it.
const ELEMENT_MSG_ROOM: usize = MAX_ATTR_LEN + 1024;
/// Room reserved for any other message before it is written (a bigger one grows its chunk).
const MSG_ROOM: usize = 4096;

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of messages (batch begin/end not counted).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether the batch has no message (sending it does nothing).
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Bytes of the messages (batch begin/end not counted).
    pub fn message_bytes(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// The encoded messages, back to back, in as many pieces as the batch holds them (to be sent
    /// together, with an iovec).
    pub(crate) fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().filter(|c| !c.is_empty()).map(Vec::as_slice)
    }

    /// The encoded messages in one buffer (for tests).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.chunks.concat()
    }

    /// The bytes of message `index`.
    fn msg_bytes(&self, index: usize) -> &[u8] {
        let Some(m) = self.msgs.get(index) else {
            return &[];
        };
        let chunk = &self.chunks[m.chunk as usize];
        let end = self
            .msgs
            .get(index + 1)
            .filter(|n| n.chunk == m.chunk)
            .map_or(chunk.len(), |n| n.start as usize);
        &chunk[m.start as usize..end]
    }

    /// The chunk the next message goes into: one with at least `need` bytes free, or one small
    /// enough to grow as a `Vec` does (a batch's first chunk starts empty: most batches are a
    /// few messages, and a rebuild makes one batch per allow-list set).
    fn room(&mut self, need: usize) {
        match self.chunks.last() {
            Some(c) if c.len() < SMALL_CHUNK || c.len() + need <= c.capacity() => {}
            Some(_) => self.chunks.push(Vec::with_capacity(CHUNK.max(need))),
            None => self.chunks.push(Vec::new()),
        }
    }

    /// The chunk being written.
    fn cur(&mut self) -> &mut Vec<u8> {
        if self.chunks.is_empty() {
            self.chunks.push(Vec::new());
        }
        let last = self.chunks.len() - 1;
        &mut self.chunks[last]
    }

    /// Appends the messages of `other` after this batch's, numbered on from them. Its big buffers
    /// are moved, not copied (a batch built in parts, e.g. one per set, is never held twice).
    pub fn append(&mut self, other: Batch) {
        self.open = None;
        let Batch { chunks, msgs, .. } = other;
        let mut msgs = msgs.into_iter().peekable();
        for (i, mut chunk) in chunks.into_iter().enumerate() {
            let (at, offset) = if chunk.len() < SMALL_CHUNK {
                self.room(chunk.len());
                let cur = self.cur();
                let offset = cur.len();
                cur.extend_from_slice(&chunk);
                (self.chunks.len() - 1, offset)
            } else {
                chunk.shrink_to_fit();
                self.chunks.push(chunk);
                (self.chunks.len() - 1, 0)
            };
            while let Some(m) = msgs.next_if(|m| m.chunk as usize == i) {
                let start = m.start as usize + offset;
                let seq = (self.msgs.len() + 1) as u32;
                self.chunks[at][start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
                self.msgs.push(MsgInfo {
                    chunk: at as u32,
                    start: start as u32,
                    ..m
                });
            }
        }
    }

    /// Message `index` in words, e.g. `add element to map inet portmap dnat4 (elements
    /// 2001-4000)` (element numbers count from 1 in the slice that was given).
    pub fn describe(&self, index: usize) -> String {
        let Some(m) = self.msgs.get(index) else {
            return format!("message {index} (not in this batch)");
        };
        let fam = m.family.as_str();
        let (table, name) = Self::names_of(m, self.msg_bytes(index));
        match &m.op {
            Op::AddTable => format!("add table {fam} {table}"),
            Op::DelTable => format!("delete table {fam} {table}"),
            Op::AddChain => format!("add chain {fam} {table} {name}"),
            Op::DelChain => format!("delete chain {fam} {table} {name}"),
            Op::AddRule => format!("add rule to chain {fam} {table} {name}"),
            Op::DelRule(handle) => {
                format!("delete rule handle {handle} from chain {fam} {table} {name}")
            }
            Op::AddSet { map } => format!("add {} {fam} {table} {name}", kind(*map)),
            Op::DelSet => format!("delete set {fam} {table} {name}"),
            Op::FlushSet => format!("flush set {fam} {table} {name}"),
            Op::AddObject(ty) => format!("add {} {fam} {table} {name}", object_kind(*ty)),
            Op::DelObject(ty) => format!("delete {} {fam} {table} {name}", object_kind(*ty)),
            Op::AddElements(c) => format!(
                "add element to {} {fam} {table} {name} ({})",
                kind(c.map),
                range(c)
            ),
            Op::DelElements(c) => format!(
                "delete element from {} {fam} {table} {name} ({})",
                kind(c.map),
                range(c)
            ),
        }
    }

    /// Adds a table (`NLM_F_CREATE`: no error if it exists).
    pub fn add_table(&mut self, t: &Table) {
        let m = self.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE, t.family);
        encode::table(&mut Writer::new(self.cur()), t);
        self.end(m, Op::AddTable, t.family);
    }

    /// Makes sure a table exists, changing nothing of one that does: `NFT_MSG_NEWTABLE` with the
    /// name alone (no flags, no userdata), which the kernel answers for an existing table by
    /// leaving its flags as they are. A [`Batch::del_table`] after it then works whether or not
    /// the table existed — also on a table whose flags (`owner`, `persist`) may not be changed.
    pub fn ensure_table(&mut self, family: Family, name: &str) {
        let m = self.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE, family);
        Writer::new(self.cur()).put_str(NFTA_TABLE_NAME, name);
        self.end(m, Op::AddTable, family);
    }

    /// Deletes a table and everything in it.
    pub fn del_table(&mut self, family: Family, name: &str) {
        let m = self.begin(NFT_MSG_DELTABLE, 0, family);
        Writer::new(self.cur()).put_str(NFTA_TABLE_NAME, name);
        self.end(m, Op::DelTable, family);
    }

    /// Adds a chain (`NLM_F_CREATE`).
    pub fn add_chain(&mut self, c: &Chain) {
        let m = self.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE, c.family);
        encode::chain(&mut Writer::new(self.cur()), c);
        self.end(m, Op::AddChain, c.family);
    }

    /// Deletes an empty chain that nothing jumps to.
    pub fn del_chain(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin(NFT_MSG_DELCHAIN, 0, family);
        let mut w = Writer::new(self.cur());
        w.put_str(NFTA_CHAIN_TABLE, table);
        w.put_str(NFTA_CHAIN_NAME, name);
        self.end(m, Op::DelChain, family);
    }

    /// Appends a rule to the end of its chain (`NLM_F_CREATE | NLM_F_APPEND`).
    pub fn add_rule(&mut self, r: &Rule) {
        let m = self.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, r.family);
        encode::rule(&mut Writer::new(self.cur()), r);
        self.end(m, Op::AddRule, r.family);
    }

    /// Deletes the rule with this handle.
    pub fn del_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        let m = self.begin(NFT_MSG_DELRULE, 0, family);
        let mut w = Writer::new(self.cur());
        w.put_str(NFTA_RULE_TABLE, table);
        w.put_str(NFTA_RULE_CHAIN, chain);
        w.put_u64(NFTA_RULE_HANDLE, handle);
        self.end(m, Op::DelRule(handle), family);
    }

    /// Adds a set or map (`NLM_F_CREATE`). Give it a non-zero `id` unique in the batch so that
    /// rules and elements later in the batch may refer to it (`NFTA_SET_ID`).
    pub fn add_set(&mut self, s: &Set) {
        let m = self.begin(NFT_MSG_NEWSET, NLM_F_CREATE, s.family);
        encode::set(&mut Writer::new(self.cur()), s);
        self.end(m, Op::AddSet { map: s.is_map() }, s.family);
    }

    /// Adds a stateful object (`NLM_F_CREATE`; a counter added with values starts from them).
    pub fn add_object(&mut self, o: &Object) {
        let m = self.begin(NFT_MSG_NEWOBJ, NLM_F_CREATE, o.family);
        encode::object(&mut Writer::new(self.cur()), o);
        self.end(m, Op::AddObject(o.kind.type_number()), o.family);
    }

    /// Deletes a stateful object of type `obj_type` ([`crate::object_type`]) that no rule or
    /// element refers to.
    pub fn del_object(&mut self, family: Family, table: &str, obj_type: u32, name: &str) {
        let m = self.begin(NFT_MSG_DELOBJ, 0, family);
        let mut w = Writer::new(self.cur());
        w.put_str(NFTA_OBJ_TABLE, table);
        w.put_str(NFTA_OBJ_NAME, name);
        w.put_u32(NFTA_OBJ_TYPE, obj_type);
        self.end(m, Op::DelObject(obj_type), family);
    }

    /// Deletes a set or map that no rule uses.
    pub fn del_set(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin(NFT_MSG_DELSET, 0, family);
        let mut w = Writer::new(self.cur());
        w.put_str(NFTA_SET_TABLE, table);
        w.put_str(NFTA_SET_NAME, name);
        self.end(m, Op::DelSet, family);
    }

    /// Adds elements (`NLM_F_CREATE | NLM_F_EXCL`: an existing key is an error), in as many
    /// messages as the 64 KiB attribute limit needs. `set_id` is the `id` of a set added earlier
    /// in this batch, or 0. An empty slice adds no message.
    pub fn add_elements(&mut self, family: Family, table: &str, set: &str, set_id: u32, elems: &[Element]) {
        self.elements(family, table, set, set_id, elems, false);
    }

    /// Adds one element, like [`Batch::add_elements`] with a slice of one, but to the message the
    /// last call added if that was for the same set and the element still fits in it: a caller
    /// adding a set's elements one by one (never holding them all) gets the messages
    /// [`Batch::add_elements`] would have made of them all, numbered alike in [`Batch::describe`].
    pub fn add_element(&mut self, family: Family, table: &str, set: &str, set_id: u32, e: &Element) {
        let same =
            |o: &OpenList| o.family == family && o.set_id == set_id && o.table == table && o.set == set;
        let mut next = 0;
        if let (Some(open), Some(m)) = (self.open.as_mut().filter(|o| same(o)), self.msgs.last_mut())
            && let Op::AddElements(c) = &mut m.op
        {
            let chunk = &mut self.chunks[m.chunk as usize];
            let start = m.start as usize;
            let list = start + usize::from(c.list_offset);
            let before = chunk.len();
            let mut w = Writer::new(chunk);
            encode::element(&mut w, e, false);
            if w.nest_len(list) <= MAX_ATTR_LEN {
                w.nest_end(list);
                w.end_msg(start);
                c.count += 1;
                open.next += 1;
                return;
            }
            w.buf.truncate(before);
            next = open.next;
        }
        self.room(ELEMENT_MSG_ROOM);
        let m = self.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, family);
        let mut w = Writer::new(self.cur());
        let list = element_list_start(&mut w, table, set, set_id);
        encode::element(&mut w, e, false);
        let fits = w.nest_len(list) <= MAX_ATTR_LEN;
        if fits {
            w.nest_end(list);
        } else {
            // As in `elements`: the oversized lone element's list is made unparsable.
            w.buf[list..list + 2].copy_from_slice(&0u16.to_ne_bytes());
        }
        let chunk = ElemChunk {
            map: e.data.is_some(),
            first: next as u32,
            count: 1,
            list_offset: (list - m) as u16,
        };
        self.end(m, Op::AddElements(chunk), family);
        if fits {
            self.open = Some(OpenList {
                family,
                table: table.to_owned(),
                set: set.to_owned(),
                set_id,
                next: next + 1,
            });
        }
    }

    /// Removes every element of a set (`NFT_MSG_DELSETELEM` without an element list, as
    /// `nft flush set` sends it).
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) {
        let m = self.begin(NFT_MSG_DELSETELEM, 0, family);
        let mut w = Writer::new(self.cur());
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        w.put_str(NFTA_SET_ELEM_LIST_SET, set);
        self.end(m, Op::FlushSet, family);
    }

    /// Deletes elements (only their keys, key ends and flags are sent), chunked like
    /// [`Batch::add_elements`]. An empty slice adds no message.
    pub fn del_elements(&mut self, family: Family, table: &str, set: &str, elems: &[Element]) {
        self.elements(family, table, set, 0, elems, true);
    }

    fn elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        set_id: u32,
        elems: &[Element],
        delete: bool,
    ) {
        let Some(first_elem) = elems.first() else {
            return;
        };
        let map = first_elem.data.is_some();
        let (msg_type, flags) = if delete {
            (NFT_MSG_DELSETELEM, 0)
        } else {
            (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL)
        };
        let mut next = 0;
        while next < elems.len() {
            self.room(ELEMENT_MSG_ROOM);
            let m = self.begin(msg_type, flags, family);
            let mut w = Writer::new(self.cur());
            let list = element_list_start(&mut w, table, set, set_id);
            let first = next;
            while let Some(e) = elems.get(next) {
                let before = w.buf.len();
                encode::element(&mut w, e, delete);
                // A lone element that alone overflows (impossible within the kernel's 64-byte
                // key/data limit) is still sent, so that the kernel refuses it by message.
                if w.nest_len(list) > MAX_ATTR_LEN && next > first {
                    w.buf.truncate(before);
                    break;
                }
                next += 1;
            }
            if w.nest_len(list) > MAX_ATTR_LEN {
                // Make the oversized lone element's list unparsable rather than wrapped.
                w.buf[list..list + 2].copy_from_slice(&0u16.to_ne_bytes());
            } else {
                w.nest_end(list);
            }
            let chunk = ElemChunk {
                map,
                first: first as u32,
                count: (next - first) as u32,
                list_offset: (list - m) as u16,
            };
            let op = if delete {
                Op::DelElements(chunk)
            } else {
                Op::AddElements(chunk)
            };
            self.end(m, op, family);
        }
    }

    fn begin(&mut self, msg_type: u16, flags: u16, family: Family) -> usize {
        self.open = None;
        self.room(MSG_ROOM);
        let seq = (self.msgs.len() + 1) as u32;
        Writer::new(self.cur()).begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
            NLM_F_REQUEST | flags,
            seq,
            family.number(),
            0,
        )
    }

    fn end(&mut self, start: usize, op: Op, family: Family) {
        Writer::new(self.cur()).end_msg(start);
        let chunk = (self.chunks.len() - 1) as u32;
        self.msgs.push(MsgInfo {
            chunk,
            start: start as u32,
            op,
            family,
        });
    }

    /// The table and the chain, set or object message `m` names, read back from its own
    /// attributes (so that a batch of 100,000 messages does not keep two strings per message for
    /// the rare error report).
    fn names_of(m: &MsgInfo, msg: &[u8]) -> (String, String) {
        let (table_attr, name_attr) = match m.op {
            Op::AddTable | Op::DelTable => (NFTA_TABLE_NAME, None),
            Op::AddChain | Op::DelChain => (NFTA_CHAIN_TABLE, Some(NFTA_CHAIN_NAME)),
            Op::AddRule | Op::DelRule(_) => (NFTA_RULE_TABLE, Some(NFTA_RULE_CHAIN)),
            Op::AddSet { .. } | Op::DelSet => (NFTA_SET_TABLE, Some(NFTA_SET_NAME)),
            Op::FlushSet | Op::AddElements(_) | Op::DelElements(_) => {
                (NFTA_SET_ELEM_LIST_TABLE, Some(NFTA_SET_ELEM_LIST_SET))
            }
            Op::AddObject(_) | Op::DelObject(_) => (NFTA_OBJ_TABLE, Some(NFTA_OBJ_NAME)),
        };
        let mut table = String::new();
        let mut name = String::new();
        // nlmsghdr (16 bytes) and nfgenmsg (4), then the attributes.
        let mut pos = 20;
        while let Some(header) = msg.get(pos..pos + 4) {
            let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
            let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
            if len < 4 {
                break;
            }
            let value = msg.get(pos + 4..pos + len).unwrap_or_default();
            let text =
                || String::from_utf8_lossy(value.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
            if kind == table_attr && table.is_empty() {
                table = text();
            } else if Some(kind) == name_attr && name.is_empty() {
                name = text();
            }
            pos += align4(len);
        }
        (table, name)
    }

    /// For an element message whose byte `offset` (from the message start, as the kernel's
    /// extended ack gives it) lies inside an element: that element's index in the caller's slice.
    pub(crate) fn element_at(&self, index: usize, offset: usize) -> Option<usize> {
        let m = self.msgs.get(index)?;
        let (Op::AddElements(c) | Op::DelElements(c)) = &m.op else {
            return None;
        };
        let msg = self.msg_bytes(index);
        let list = usize::from(c.list_offset);
        let list_len = usize::from(u16::from_ne_bytes([msg[list], msg[list + 1]]));
        let body = list + NLA_HDRLEN;
        if offset < body || offset >= list + list_len {
            return None;
        }
        let mut pos = body;
        for (i, attr) in Attrs::new(msg.get(body..list + list_len)?).enumerate() {
            let attr = attr.ok()?;
            let end = pos + align4(NLA_HDRLEN + attr.data.len());
            if offset < end {
                return (i < c.count()).then_some(c.first() + i);
            }
            pos = end;
        }
        None
    }

    /// Where `offset` (from the start of message `index`, as the kernel's extended ack gives it)
    /// falls, in words: the element, the rule expression, or the attribute.
    pub(crate) fn locate(&self, index: usize, offset: usize) -> String {
        if let Some(e) = self.element_at(index, offset) {
            return format!("at element {} of the elements given", e + 1);
        }
        let Some(m) = self.msgs.get(index) else {
            return format!("at byte {offset}");
        };
        let msg = self.msg_bytes(index);
        let first = NLMSG_HDRLEN + NFGENMSG_LEN;
        let Some((_, ty, at, attr)) = attr_at(msg, first, msg.len(), offset) else {
            return format!("at byte {offset} of the message");
        };
        if matches!(m.op, Op::AddRule) && ty == NFTA_RULE_EXPRESSIONS {
            let body = at + NLA_HDRLEN;
            if let Some((pos, _, _, expr)) = attr_at(msg, body, body + attr.len(), offset) {
                let name = Attrs::new(expr)
                    .filter_map(Result::ok)
                    .find(|a| a.ty == NFTA_EXPR_NAME)
                    .and_then(|a| a.str().ok())
                    .unwrap_or("?");
                return format!("in expression {} ({name})", pos + 1);
            }
        }
        match attr_name(&m.op, ty) {
            Some(name) => format!("at attribute {name}"),
            None => format!("at attribute type {ty}"),
        }
    }
}

/// Among the attributes in `msg[from..to]`, the one that contains byte `offset`: its position
/// in that stream, its type, its offset in `msg` and its payload.
fn attr_at(msg: &[u8], from: usize, to: usize, offset: usize) -> Option<(usize, u16, usize, &[u8])> {
    let mut pos = from;
    for (i, attr) in Attrs::new(msg.get(from..to)?).enumerate() {
        let attr = attr.ok()?;
        let end = pos + align4(NLA_HDRLEN + attr.data.len());
        if offset >= pos && offset < end {
            return Some((i, attr.ty, pos, attr.data));
        }
        pos = end;
    }
    None
}

/// The kernel's name of a top-level attribute of a message, for error reports.
fn attr_name(op: &Op, ty: u16) -> Option<&'static str> {
    let names: &[&str] = match op {
        Op::AddObject(_) | Op::DelObject(_) => &[
            "",
            "NFTA_OBJ_TABLE",
            "NFTA_OBJ_NAME",
            "NFTA_OBJ_TYPE",
            "NFTA_OBJ_DATA",
            "",
            "",
            "",
            "NFTA_OBJ_USERDATA",
        ],
        Op::AddTable | Op::DelTable => &[
            "",
            "NFTA_TABLE_NAME",
            "NFTA_TABLE_FLAGS",
            "",
            "",
            "",
            "NFTA_TABLE_USERDATA",
        ],
        Op::AddChain | Op::DelChain => &[
            "",
            "NFTA_CHAIN_TABLE",
            "",
            "NFTA_CHAIN_NAME",
            "NFTA_CHAIN_HOOK",
            "NFTA_CHAIN_POLICY",
            "",
            "NFTA_CHAIN_TYPE",
            "",
            "",
            "",
            "",
            "NFTA_CHAIN_USERDATA",
        ],
        Op::AddRule | Op::DelRule(_) => &[
            "",
            "NFTA_RULE_TABLE",
            "NFTA_RULE_CHAIN",
            "NFTA_RULE_HANDLE",
            "NFTA_RULE_EXPRESSIONS",
            "",
            "",
            "NFTA_RULE_USERDATA",
        ],
        Op::AddSet { .. } | Op::DelSet => &[
            "",
            "NFTA_SET_TABLE",
            "NFTA_SET_NAME",
            "NFTA_SET_FLAGS",
            "NFTA_SET_KEY_TYPE",
            "NFTA_SET_KEY_LEN",
            "NFTA_SET_DATA_TYPE",
            "NFTA_SET_DATA_LEN",
            "",
            "NFTA_SET_DESC",
            "NFTA_SET_ID",
            "",
            "",
            "NFTA_SET_USERDATA",
        ],
        Op::AddElements(_) | Op::DelElements(_) | Op::FlushSet => &[
            "",
            "NFTA_SET_ELEM_LIST_TABLE",
            "NFTA_SET_ELEM_LIST_SET",
            "NFTA_SET_ELEM_LIST_ELEMENTS",
            "NFTA_SET_ELEM_LIST_SET_ID",
        ],
    };
    names.get(usize::from(ty)).copied().filter(|n| !n.is_empty())
}

/// How nft names an object type.
fn object_kind(obj_type: u32) -> &'static str {
    match obj_type {
        crate::object::object_type::COUNTER => "counter",
        crate::object::object_type::QUOTA => "quota",
        crate::object::object_type::LIMIT => "limit",
        _ => "object",
    }
}

fn kind(map: bool) -> &'static str {
    if map { "map" } else { "set" }
}

fn range(c: &ElemChunk) -> String {
    if c.count == 1 {
        format!("element {}", c.first() + 1)
    } else {
        format!("elements {}-{}", c.first() + 1, c.first() + c.count())
    }
}

/// The head of an element-list message: table, set (and the id of a set added in this batch, when
/// not 0), then the opened element list, whose offset it returns.
fn element_list_start(w: &mut Writer<'_>, table: &str, set: &str, set_id: u32) -> usize {
    w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
    w.put_str(NFTA_SET_ELEM_LIST_SET, set);
    if set_id != 0 {
        w.put_u32(NFTA_SET_ELEM_LIST_SET_ID, set_id);
    }
    w.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::attr::Msgs;
    use crate::object::{Data, Verdict};

    /// The table `inet t` the tests' batches start with.
    fn table_t() -> Table {
        Table {
            family: Family::Inet,
            name: "t".into(),
            flags: 0,
            userdata: None,
            handle: None,
            owner: None,
        }
    }

    fn elem(i: u32) -> Element {
        let mut key = vec![6, 0, 0, 0];
        key.extend_from_slice(&(i as u16).to_be_bytes());
        key.extend_from_slice(&[0, 0]);
        Element {
            key,
            key_end: None,
            data: Some(Data::Value(vec![192, 168, 1, 66, 0, 80, 0, 0])),
            flags: 0,
            userdata: Some(crate::udata::comment("web: web server")),
            timeout: None,
            expiration: None,
        }
    }

    #[test]
    fn what_is_kept_per_message_is_small() {
        // 100,000 messages at 50,000 mappings.
        assert!(std::mem::size_of::<MsgInfo>() <= 32);
    }

    #[test]
    fn table_message_matches_nft_bytes() {
        // `nft --debug=mnl -f` of `table inet portmap { comment "managed by portmap" }`.
        let mut b = Batch::new();
        b.add_table(&Table {
            family: Family::Inet,
            name: "portmap".into(),
            flags: 0,
            userdata: Some(crate::udata::comment("managed by portmap")),
            handle: None,
            owner: None,
        });
        let bytes = b.bytes();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[4..6], &0x0a00u16.to_ne_bytes());
        assert_eq!(&bytes[16..20], &[1, 0, 0, 0]);
        assert_eq!(&bytes[20..32], b"\x0c\x00\x01\x00portmap\x00");
        assert_eq!(&bytes[32..40], b"\x08\x00\x02\x00\x00\x00\x00\x00");
        assert_eq!(&bytes[40..46], b"\x19\x00\x06\x00\x00\x13");
        assert_eq!(b.describe(0), "add table inet portmap");
    }

    #[test]
    fn elements_are_chunked_under_the_attribute_limit() {
        let elems: Vec<_> = (0..50_000).map(elem).collect();
        let mut b = Batch::new();
        b.add_elements(Family::Inet, "portmap", "dnat4", 2, &elems);
        assert!(b.len() > 1);
        let mut seen = 0;
        for (i, msg) in Msgs::new(&b.bytes()).enumerate() {
            let msg = msg.expect("message");
            assert_eq!(msg.seq as usize, i + 1);
            for a in msg.attrs() {
                let a = a.expect("attr");
                if a.ty == NFTA_SET_ELEM_LIST_ELEMENTS {
                    assert!(a.data.len() + NLA_HDRLEN <= MAX_ATTR_LEN);
                    seen += a.nested().count();
                }
            }
        }
        assert_eq!(seen, 50_000);
        let first = b.describe(0);
        assert!(
            first.starts_with("add element to map inet portmap dnat4 (elements 1-"),
            "{first}"
        );
        let last = b.describe(b.len() - 1);
        assert!(last.ends_with("-50000)"), "{last}");
    }

    #[test]
    fn element_offsets_map_back_to_the_callers_slice() {
        let elems: Vec<_> = (0..3000).map(elem).collect();
        let mut b = Batch::new();
        b.add_table(&table_t());
        b.add_elements(Family::Inet, "t", "m", 0, &elems);
        // Find the message holding element 2500 and that element's offset in it.
        let (index, chunk) = b
            .msgs
            .iter()
            .enumerate()
            .find_map(|(i, m)| match &m.op {
                Op::AddElements(c) if (c.first()..c.first() + c.count()).contains(&2500) => Some((i, *c)),
                _ => None,
            })
            .expect("a message holds element 2500");
        assert!(index > 1, "3000 elements need more than one message");
        let msg = b.msg_bytes(index);
        let mut pos = usize::from(chunk.list_offset) + NLA_HDRLEN;
        for _ in 0..2500 - chunk.first() {
            let len = usize::from(u16::from_ne_bytes([msg[pos], msg[pos + 1]]));
            pos += align4(len);
        }
        assert_eq!(b.element_at(index, pos), Some(2500));
        assert_eq!(b.element_at(index, pos + 8), Some(2500));
        assert_eq!(b.element_at(0, 4), None);
        assert!(b.locate(index, pos).contains("element 2501"));
    }

    #[test]
    fn elements_added_one_by_one_make_the_same_messages() {
        let elems: Vec<_> = (0..5000).map(elem).collect();
        let mut whole = Batch::new();
        whole.add_table(&table_t());
        whole.add_elements(Family::Inet, "t", "m", 3, &elems);
        whole.add_elements(Family::Inet, "t", "n", 0, &elems[..10]);
        let mut parts = Batch::new();
        parts.add_table(&table_t());
        for e in &elems {
            parts.add_element(Family::Inet, "t", "m", 3, e);
        }
        let mut other = Batch::new();
        for e in &elems[..10] {
            other.add_element(Family::Inet, "t", "n", 0, e);
        }
        parts.append(other);
        assert_eq!(parts.len(), whole.len());
        assert_eq!(parts.bytes(), whole.bytes());
        for i in 0..whole.len() {
            assert_eq!(parts.describe(i), whole.describe(i));
        }
    }

    #[test]
    fn appended_batches_are_renumbered_and_moved_in_chunks() {
        let elems: Vec<_> = (0..40_000).map(elem).collect();
        let mut whole = Batch::new();
        whole.del_table(Family::Inet, "t");
        whole.add_elements(Family::Inet, "t", "m", 0, &elems);
        whole.add_elements(Family::Inet, "t", "n", 0, &elems[..3]);
        whole.del_table(Family::Inet, "t");
        let mut b = Batch::new();
        b.del_table(Family::Inet, "t");
        let mut big = Batch::new();
        big.add_elements(Family::Inet, "t", "m", 0, &elems);
        assert!(big.chunks.len() > 1, "a big batch is held in several chunks");
        assert!(big.chunks.iter().all(|c| c.capacity() <= CHUNK));
        b.append(big);
        let mut small = Batch::new();
        small.add_elements(Family::Inet, "t", "n", 0, &elems[..3]);
        b.append(small);
        b.del_table(Family::Inet, "t");
        assert_eq!(b.len(), whole.len());
        assert_eq!(b.message_bytes(), whole.message_bytes());
        assert_eq!(b.bytes(), whole.bytes());
        let last = b.len() - 1;
        assert_eq!(b.describe(last), "delete table inet t");
        assert_eq!(b.describe(last - 1), whole.describe(last - 1));
        for (i, msg) in Msgs::new(&b.bytes()).enumerate() {
            assert_eq!(msg.expect("message").seq as usize, i + 1);
        }
    }

    #[test]
    fn locate_names_the_expression_or_attribute() {
        let mut b = Batch::new();
        b.add_rule(&Rule {
            family: Family::Inet,
            table: "t".into(),
            chain: "c".into(),
            exprs: vec![
                crate::object::Expr::Counter { bytes: 0, packets: 0 },
                crate::object::Expr::Lookup {
                    sreg: crate::object::Register::R1,
                    dreg: None,
                    set: "s".into(),
                    set_id: 0,
                    invert: false,
                },
            ],
            userdata: None,
            handle: None,
        });
        let msg = b.bytes();
        // The second expression starts after header, table, chain, list header, first expression.
        let table_at = NLMSG_HDRLEN + NFGENMSG_LEN;
        assert_eq!(b.locate(0, table_at), "at attribute NFTA_RULE_TABLE");
        let list = table_at + 8 + 8;
        let first_len = usize::from(u16::from_ne_bytes([msg[list + 4], msg[list + 5]]));
        let second = list + NLA_HDRLEN + align4(first_len);
        assert_eq!(b.locate(0, second), "in expression 2 (lookup)");
        assert_eq!(b.locate(0, list + NLA_HDRLEN), "in expression 1 (counter)");
    }

    #[test]
    fn describe_names_every_kind_of_message() {
        let mut b = Batch::new();
        b.del_rule(Family::Inet, "portmap", "prerouting", 7);
        b.del_elements(
            Family::Ipv4,
            "t",
            "s",
            &[Element {
                key: vec![1],
                key_end: None,
                data: Some(Data::Verdict(Verdict::Accept)),
                flags: 0,
                userdata: None,
                timeout: None,
                expiration: None,
            }],
        );
        b.del_set(Family::Inet, "portmap", "dnat4");
        b.del_chain(Family::Inet, "portmap", "allow_mail");
        b.del_table(Family::Ipv6, "portmap");
        b.add_elements(Family::Inet, "portmap", "s", 0, &[]);
        assert_eq!(b.len(), 5);
        assert_eq!(
            b.describe(0),
            "delete rule handle 7 from chain inet portmap prerouting"
        );
        assert_eq!(b.describe(1), "delete element from map ip t s (element 1)");
        assert_eq!(b.describe(2), "delete set inet portmap dnat4");
        assert_eq!(b.describe(3), "delete chain inet portmap allow_mail");
        assert_eq!(b.describe(4), "delete table ip6 portmap");
        assert!(b.describe(9).contains("not in this batch"));
    }
}
