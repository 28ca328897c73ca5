//! [`Socket`]: a `NETLINK_NETFILTER` socket bound inside a chosen network namespace, that sends a
//! [`Batch`] as one transaction and reads the ruleset back through dumps.
//!
//! The namespace is entered only by a short-lived helper thread that creates the socket; the
//! calling process and its threads never change namespace. This module does the I/O and turns the
//! kernel's replies into objects or an [`Error`]; it must not decide what to send.

use std::fmt;
use std::io;

use crate::attr::{Msg, Msgs, Writer};
use crate::batch::Batch;
use crate::channel::{Channel, Refusal, plain_kernel_error, refusal};
use crate::consts::{
    NETLINK_NETFILTER, NFNL_BATCH_GENID, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES,
    NFT_MSG_GETCHAIN, NFT_MSG_GETGEN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM, NFT_MSG_GETTABLE,
    NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_TABLE, NFTA_TABLE_NAME,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR,
};
use crate::consts::{NFT_MSG_GETOBJ, NFTA_OBJ_TABLE};
use crate::decode;
use crate::error::Error;
use crate::netns::Netns;
use crate::object::{Chain, Element, Family, Object, Rule, Set, Table};

/// How often an element dump taken during a hash-table resize is taken again (pauses from 5 ms,
/// doubling up to 200 ms: about 2.5 s in all).
const RESIZE_ATTEMPTS: usize = 16;
/// How long to wait for the kernel's answer to a batch once nothing is queued (it normally is
/// queued before `sendmsg` returns).
const BATCH_REPLY_TIMEOUT_MS: i32 = 10_000;
/// Receive-buffer room reserved per batch message for error replies.
const REPLY_ROOM_PER_MSG: usize = 2048;
const ERESTART: i32 = 85;

/// A netlink socket to `nf_tables` in one network namespace.
pub struct Socket {
    chan: Channel,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.chan.raw_fd())
            .field("seq", &self.chan.last_seq())
            .finish_non_exhaustive()
    }
}

/// Most iovec entries one `sendmsg` takes (`UIO_MAXIOV`).
const UIO_MAXIOV: usize = 1024;

impl Socket {
    /// Opens a socket inside `netns` (created by a short-lived thread that enters the namespace;
    /// the caller never changes namespace), with extended acks on and acks capped to headers.
    pub fn open(netns: &Netns) -> Result<Socket, Error> {
        Ok(Socket {
            chan: Channel::open(netns, NETLINK_NETFILTER)?,
        })
    }

    /// The netlink port id the kernel bound this socket to: the owner it records for a table this
    /// socket creates with [`crate::table_flags::OWNER`] (compare [`Table::owner`]).
    pub fn port_id(&self) -> Result<u32, Error> {
        self.chan
            .port_id()
            .map_err(|e| Error::io("reading the netlink socket's port id", e))
    }

    /// The cookie of the socket's network namespace (`SO_NETNS_COOKIE`, Linux 5.14+): unlike the
    /// namespace's inode number, which the kernel gives a new namespace once the old one is gone,
    /// a cookie is never used for another namespace while the system runs. `None` on older
    /// kernels.
    pub fn netns_cookie(&self) -> Option<u64> {
        self.chan.netns_cookie()
    }

    /// The ruleset's generation id (`NFT_MSG_GETGEN`); every committed batch increments it.
    pub fn generation(&mut self) -> Result<u32, Error> {
        match self.get(NFT_MSG_GETGEN, 0, |_| {}, decode::generation)? {
            Ok(generation) => Ok(generation),
            Err(errno) => Err(plain_kernel_error("reading the generation id", errno)),
        }
    }

    /// Sends the batch as one transaction in one `sendmsg` and waits for the kernel's verdict.
    /// With `expect_generation`, the kernel refuses the batch if the ruleset changed since
    /// ([`Error::GenerationChanged`]). If any message fails, nothing of the batch is applied and
    /// the first failing message is reported ([`Error::Kernel`]). An empty batch sends nothing.
    pub fn send(&mut self, batch: &Batch, expect_generation: Option<u32>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len();
        let end_seq = (count + 1) as u32;
        let mut begin = Vec::with_capacity(32);
        {
            let mut w = Writer::new(&mut begin);
            let m = w.begin_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES);
            if let Some(generation) = expect_generation {
                w.put_u32(NFNL_BATCH_GENID, generation);
            }
            w.end_msg(m);
        }
        let mut end = Vec::with_capacity(20);
        {
            let mut w = Writer::new(&mut end);
            let m = w.begin_msg(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST | NLM_F_ACK,
                end_seq,
                0,
                NFNL_SUBSYS_NFTABLES,
            );
            w.end_msg(m);
        }
        let total = begin.len() + batch.message_bytes() + end.len();
        self.chan
            .grow_buffers(total, count.saturating_mul(REPLY_ROOM_PER_MSG))?;
        self.chan.drain_stale()?;

        let mut parts: Vec<&[u8]> = Vec::with_capacity(2);
        parts.push(&begin);
        parts.extend(batch.parts());
        parts.push(&end);
        // More pieces than one sendmsg takes (UIO_MAXIOV): sent from one buffer instead.
        let joined;
        if parts.len() > UIO_MAXIOV {
            joined = parts.concat();
            parts = vec![joined.as_slice()];
        }
        let sent = self
            .chan
            .send(&parts)
            .map_err(|e| Error::io("sending the nftables batch", e))?;
        if sent != total {
            return Err(Error::Io {
                context: "sending the nftables batch".into(),
                source: io::Error::other(format!("only {sent} of {total} bytes were sent")),
            });
        }

        let mut first: Option<Refusal> = None;
        let mut whole: Option<Refusal> = None;
        let mut end_acked = false;
        let mut overflow = false;
        loop {
            let n = match self.chan.recv(libc::MSG_DONTWAIT) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    if end_acked || first.is_some() || whole.is_some() {
                        break;
                    }
                    if !self
                        .chan
                        .wait_readable(BATCH_REPLY_TIMEOUT_MS)
                        .map_err(|e| Error::io("waiting for the kernel's answer", e))?
                    {
                        return Err(Error::Io {
                            context: "waiting for the kernel's answer to the batch".into(),
                            source: io::Error::from(io::ErrorKind::TimedOut),
                        });
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflow = true;
                    continue;
                }
                Err(e) => return Err(Error::io("reading the kernel's answer to the batch", e)),
            };
            for msg in Msgs::new(&self.chan.buf[..n]) {
                let msg = msg?;
                if msg.msg_type != NLMSG_ERROR {
                    continue;
                }
                let r = refusal(&msg)?;
                if r.errno == 0 {
                    end_acked |= r.seq == end_seq;
                    continue;
                }
                if r.seq >= 1 && r.seq <= count as u32 {
                    if first.as_ref().is_none_or(|f| r.seq < f.seq) {
                        first = Some(r);
                    }
                } else if whole.is_none() {
                    whole = Some(r);
                }
            }
        }

        if let Some(r) = first {
            let index = (r.seq - 1) as usize;
            let location = r.offset.map(|off| batch.locate(index, off));
            let ext_ack = match (r.text, location) {
                (Some(t), Some(l)) => Some(format!("{t}; {l}")),
                (Some(t), None) => Some(t),
                (None, Some(l)) => Some(l),
                (None, None) => None,
            };
            if r.errno == libc::EPERM {
                return Err(Error::Permission {
                    context: batch.describe(index),
                });
            }
            return Err(Error::Kernel {
                index,
                total: count,
                what: batch.describe(index),
                errno: r.errno,
                element: r.offset.and_then(|off| batch.element_at(index, off)),
                ext_ack,
            });
        }
        if let Some(r) = whole {
            return Err(match r.errno {
                ERESTART => Error::GenerationChanged,
                libc::EPERM => Error::Permission {
                    context: "sending an nftables batch".into(),
                },
                errno => Error::Io {
                    context: format!(
                        "the kernel refused the batch as a whole{}; nothing was applied",
                        r.text.map(|t| format!(" ({t})")).unwrap_or_default()
                    ),
                    source: io::Error::from_raw_os_error(errno),
                },
            });
        }
        if end_acked {
            return Ok(());
        }
        Err(Error::Io {
            context: if overflow {
                "the kernel's answer to the batch was lost (receive buffer overflow); \
                 read the ruleset to see whether it was applied"
                    .into()
            } else {
                "the kernel did not acknowledge the batch".into()
            },
            source: io::Error::from_raw_os_error(if overflow { libc::ENOBUFS } else { libc::EIO }),
        })
    }

    /// All tables of the families this crate models (`inet`, `ip`, `ip6`).
    pub fn tables(&mut self) -> Result<Vec<Table>, Error> {
        self.dump(
            NFT_MSG_GETTABLE,
            0,
            |_| {},
            || "tables".to_owned(),
            |msg, out| {
                if let Some(t) = decode::table(msg)? {
                    out.push(t);
                }
                Ok(())
            },
        )
    }

    /// One table, `None` if it does not exist.
    pub fn table(&mut self, family: Family, name: &str) -> Result<Option<Table>, Error> {
        let reply = self.get(
            NFT_MSG_GETTABLE,
            family.number(),
            |w| w.put_str(NFTA_TABLE_NAME, name),
            decode::table,
        )?;
        match reply {
            Ok(t) => Ok(t),
            Err(libc::ENOENT) => Ok(None),
            Err(errno) => Err(plain_kernel_error(
                &format!("reading table {} {name}", family.as_str()),
                errno,
            )),
        }
    }

    /// The chains of a table (none if the table does not exist).
    pub fn chains(&mut self, family: Family, table: &str) -> Result<Vec<Chain>, Error> {
        self.dump(
            NFT_MSG_GETCHAIN,
            family.number(),
            |_| {},
            || format!("chains of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(c) = decode::chain(msg, table)? {
                    out.push(c);
                }
                Ok(())
            },
        )
    }

    /// The rules of all chains of a table, in chain order (none if the table does not exist).
    pub fn rules(&mut self, family: Family, table: &str) -> Result<Vec<Rule>, Error> {
        self.dump(
            NFT_MSG_GETRULE,
            family.number(),
            |w| w.put_str(NFTA_RULE_TABLE, table),
            || format!("rules of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(r) = decode::rule(msg, table)? {
                    out.push(r);
                }
                Ok(())
            },
        )
    }

    /// The sets and maps of a table, anonymous ones included (none if the table does not exist).
    pub fn sets(&mut self, family: Family, table: &str) -> Result<Vec<Set>, Error> {
        let result = self.dump(
            NFT_MSG_GETSET,
            family.number(),
            |w| w.put_str(NFTA_SET_TABLE, table),
            || format!("sets of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(s) = decode::set(msg, table)? {
                    out.push(s);
                }
                Ok(())
            },
        );
        match result {
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// The stateful objects (counters, limits, …) of a table (none if the table does not exist).
    pub fn objects(&mut self, family: Family, table: &str) -> Result<Vec<Object>, Error> {
        let result = self.dump(
            NFT_MSG_GETOBJ,
            family.number(),
            |w| w.put_str(NFTA_OBJ_TABLE, table),
            || format!("objects of table {} {table}", family.as_str()),
            |msg, out| {
                if let Some(o) = decode::object(msg, table)? {
                    out.push(o);
                }
                Ok(())
            },
        );
        match result {
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// The elements of a set or map; [`Error::NotFound`] if it does not exist. Interval sets
    /// come back as the kernel stores them (start elements and `INTERVAL_END` elements; see
    /// [`crate::interval`]).
    ///
    /// A hash set that is being resized (the kernel grows it in the background right after many
    /// insertions) can be dumped with some elements twice and others missing; such a dump is
    /// recognised by its duplicates and taken again after a short pause.
    pub fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<Element>, Error> {
        let mut pause = std::time::Duration::from_millis(5);
        for _ in 0..RESIZE_ATTEMPTS {
            let elems = self.dump(
                NFT_MSG_GETSETELEM,
                family.number(),
                |w| {
                    w.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
                    w.put_str(NFTA_SET_ELEM_LIST_SET, set);
                },
                || format!("set {} {table} {set}", family.as_str()),
                decode::elements,
            )?;
            if !has_duplicates(&elems) {
                return Ok(elems);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
        Err(Error::Io {
            context: format!(
                "reading set {} {table} {set}: the kernel kept returning an inconsistent dump",
                family.as_str()
            ),
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        })
    }

    /// A request with `NLM_F_ACK`: the decoded reply, or the errno the kernel answered with.
    fn get<T>(
        &mut self,
        msg_type: u16,
        family: u8,
        build: impl FnOnce(&mut Writer<'_>),
        decode: impl FnMut(&Msg<'_>) -> Result<T, Error>,
    ) -> Result<Result<T, i32>, Error> {
        let reply = self.chan.transact(
            |w, seq| {
                let m = w.begin_msg(
                    (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                    family,
                    0,
                );
                build(w);
                w.end_msg(m);
            },
            decode,
        )?;
        match reply {
            Ok(Some(v)) => Ok(Ok(v)),
            Ok(None) => Err(Error::decode("acknowledged without a reply")),
            Err(errno) => Ok(Err(errno)),
        }
    }

    /// A dump (`NLM_F_DUMP`), decoded message by message; restarted when the kernel flags it as
    /// interrupted by a concurrent change.
    fn dump<T>(
        &mut self,
        msg_type: u16,
        family: u8,
        build: impl Fn(&mut Writer<'_>),
        what: impl Fn() -> String,
        decode: impl FnMut(&Msg<'_>, &mut Vec<T>) -> Result<(), Error>,
    ) -> Result<Vec<T>, Error> {
        self.chan.dump(
            |w, seq| {
                let m = w.begin_msg(
                    (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    seq,
                    family,
                    0,
                );
                build(w);
                w.end_msg(m);
            },
            what,
            decode,
        )
    }
}

/// Whether the same element (key, key end and flags) occurs twice: the mark of a dump taken while
/// the kernel resized the set's hash table.
fn has_duplicates(elems: &[Element]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(elems.len());
    !elems
        .iter()
        .all(|e| seen.insert((e.key.as_slice(), e.key_end.as_deref(), e.flags)))
}
