//! [`Monitor`]: a netlink socket inside a chosen network namespace subscribed to multicast groups,
//! decoding what the kernel announces: nftables ruleset changes and the end of each transaction
//! (group `NFNLGRP_NFTABLES` of `NETLINK_NETFILTER`), links and addresses appearing and going
//! (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR` of `NETLINK_ROUTE`).
//!
//! A notification the kernel could not queue because the socket's receive buffer was full is lost
//! for good; the socket then reports `ENOBUFS` once, which [`Monitor::recv`] turns into
//! [`Received::Lost`]: the caller must read the state afresh instead of trusting the events.
//!
//! It reports what the kernel said, in the kernel's terms (tables, chains, sets, links); it must not
//! judge whether a change matters to anyone, nor send anything but the subscription.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::attr::Msg;
use crate::channel::Channel;
use crate::consts::{
    NETLINK_NETFILTER, NETLINK_ROUTE, NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NFT_MSG_DELCHAIN,
    NFT_MSG_DELFLOWTABLE, NFT_MSG_DELOBJ, NFT_MSG_DELRULE, NFT_MSG_DELSET, NFT_MSG_DELSETELEM,
    NFT_MSG_DELTABLE, NFT_MSG_DESTROYCHAIN, NFT_MSG_DESTROYFLOWTABLE, NFT_MSG_DESTROYOBJ,
    NFT_MSG_DESTROYRULE, NFT_MSG_DESTROYSET, NFT_MSG_DESTROYSETELEM, NFT_MSG_DESTROYTABLE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWFLOWTABLE, NFT_MSG_NEWGEN, NFT_MSG_NEWOBJ, NFT_MSG_NEWRULE, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NFT_MSG_NEWTABLE, NFTA_CHAIN_NAME, NFTA_FLOWTABLE_NAME, NFTA_GEN_ID,
    NFTA_GEN_PROC_NAME, NFTA_GEN_PROC_PID, NFTA_LIST_ELEM, NFTA_OBJ_NAME, NFTA_RULE_CHAIN,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_NAME, NFTA_TABLE_NAME, NLMSG_ERROR,
    NLMSG_NOOP, RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR,
    RTNLGRP_LINK,
};
use crate::error::Error;
use crate::link;
use crate::netns::Netns;

/// Receive buffer asked for: a transaction of 10,000 set elements is announced as 10,000
/// notifications of 100–200 bytes each.
const MONITOR_RCVBUF: usize = 8 * 1024 * 1024;
/// Most datagrams one [`Monitor::recv`] reads before returning what it has (bounds the memory
/// one call holds; the rest stays queued for the next call).
const MAX_DATAGRAMS_PER_RECV: usize = 4096;

/// What a [`Monitor`] listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topic {
    /// nftables ruleset changes (`NFNLGRP_NFTABLES`).
    Ruleset,
    /// Links and IPv4/IPv6 addresses (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`).
    Links,
}

/// A netlink socket subscribed to one [`Topic`] in one network namespace.
pub struct Monitor {
    chan: Channel,
    topic: Topic,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("topic", &self.topic)
            .field("fd", &self.chan.raw_fd())
            .finish_non_exhaustive()
    }
}

/// What one [`Monitor::recv`] brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Notifications, in the order the kernel sent them (never empty).
    Events(Vec<Event>),
    /// The kernel dropped notifications (`ENOBUFS`: the receive buffer was full). Which ones is
    /// unknown: read the state afresh.
    Lost,
    /// Nothing arrived within the timeout.
    Timeout,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An object of the ruleset was added or deleted (part of a transaction not yet ended).
    Ruleset(RulesetChange),
    /// A transaction ended (`NFT_MSG_NEWGEN`): the changes announced since the previous one are
    /// its own.
    Generation(Generation),
    /// A link appeared, changed (up/down, renamed) or went.
    Link(LinkChange),
    /// An address was added to or removed from a link.
    Address(AddressChange),
}

/// Whether an object was added (or replaced) or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `NFT_MSG_NEW*`.
    Add,
    /// `NFT_MSG_DEL*` or `NFT_MSG_DESTROY*`.
    Delete,
}

/// What kind of ruleset object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Object {
    /// A table.
    Table,
    /// A chain.
    Chain,
    /// A rule (its chain is [`RulesetChange::name`]).
    Rule,
    /// A set or map.
    Set,
    /// Elements of a set or map (the set is [`RulesetChange::name`]).
    Elements,
    /// A stateful object (counter, quota, limit, ct helper, …).
    Stateful,
    /// A flowtable.
    Flowtable,
}

impl Object {
    /// The object's name in words, e.g. `chain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Object::Table => "table",
            Object::Chain => "chain",
            Object::Rule => "rule",
            Object::Set => "set",
            Object::Elements => "element",
            Object::Stateful => "object",
            Object::Flowtable => "flowtable",
        }
    }
}

/// One ruleset object added or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetChange {
    /// Added or deleted.
    pub op: Op,
    /// What kind of object.
    pub object: Object,
    /// The table's family as an `NFPROTO_*` number (1 inet, 2 ip, 3 arp, 5 netdev, 7 bridge, 10 ip6).
    pub family: u8,
    /// The table the object belongs to (the table itself for [`Object::Table`]).
    pub table: String,
    /// The chain (for chains and rules), set (sets and elements) or object's name.
    pub name: Option<String>,
    /// For [`Object::Elements`]: how many elements the notification carries.
    pub elements: usize,
}

impl RulesetChange {
    /// The table as nft names it, e.g. `inet portmap`.
    pub fn table_display(&self) -> String {
        format!("{} {}", family_name(self.family), self.table)
    }
}

/// The end of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The ruleset's new generation id.
    pub id: u32,
    /// The process that committed it, as the kernel recorded it (its pid; 0 when not given).
    pub pid: u32,
    /// That process's name (`comm`, at most 15 bytes), when given.
    pub process: Option<String>,
}

/// A link notification (`RTM_NEWLINK` / `RTM_DELLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    /// `true` for `RTM_NEWLINK` (a new link, or a change of one: up/down, a rename), `false` when
    /// the link went.
    pub present: bool,
    /// The interface index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Administratively up.
    pub up: bool,
}

/// An address notification (`RTM_NEWADDR` / `RTM_DELADDR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressChange {
    /// `true` when the address was added, `false` when removed.
    pub added: bool,
    /// The interface index it is on.
    pub index: u32,
    /// The address (the local end for point-to-point links).
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

/// The name nft gives an `NFPROTO_*` family number.
pub fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown-family",
    }
}

impl Monitor {
    /// A socket in `netns` subscribed to `topic` (created by a short-lived thread that enters the
    /// namespace; the caller never changes namespace). Joining the nftables group needs
    /// `CAP_NET_ADMIN`.
    pub fn open(netns: &Netns, topic: Topic) -> Result<Monitor, Error> {
        let (protocol, groups): (i32, &[u32]) = match topic {
            Topic::Ruleset => (NETLINK_NETFILTER, &[NFNLGRP_NFTABLES]),
            Topic::Links => (
                NETLINK_ROUTE,
                &[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR],
            ),
        };
        let mut chan = Channel::open(netns, protocol)?;
        chan.set_receive_buffer(MONITOR_RCVBUF)?;
        for &group in groups {
            chan.join_group(group)
                .map_err(|e| Error::io(format!("subscribing to netlink group {group}"), e))?;
        }
        Ok(Monitor { chan, topic })
    }

    /// Sets the socket's receive buffer to `bytes` (default 8 MiB; the kernel doubles what it is
    /// given for its bookkeeping and has a floor of a few KiB): how much a burst of notifications
    /// may fill before the kernel drops some ([`Received::Lost`]).
    pub fn set_receive_buffer(&mut self, bytes: usize) -> Result<(), Error> {
        self.chan.set_receive_buffer(bytes)
    }

    /// What the monitor listens to.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Waits up to `timeout` (`None`: for ever) for notifications, then reads every one already
    /// queued (at most a few thousand datagrams; the rest waits for the next call). Notifications
    /// this crate does not model are skipped.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Received, Error> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        if !self
            .chan
            .wait_readable(ms)
            .map_err(|e| Error::io("waiting for netlink notifications", e))?
        {
            return Ok(Received::Timeout);
        }
        let mut events = Vec::new();
        let mut lost = false;
        for _ in 0..MAX_DATAGRAMS_PER_RECV {
            let n = match self.chan.recv(libc::MSG_DONTWAIT) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(Error::io("reading netlink notifications", e)),
            };
            for msg in crate::attr::Msgs::new(&self.chan.buf[..n]) {
                if let Some(event) = decode(&msg?)? {
                    events.push(event);
                }
            }
        }
        Ok(if lost {
            Received::Lost
        } else if events.is_empty() {
            // Only messages this crate skips (or a spurious wake-up): nothing to report yet.
            Received::Timeout
        } else {
            Received::Events(events)
        })
    }
}

/// One notification, `None` for one this crate does not model.
fn decode(msg: &Msg<'_>) -> Result<Option<Event>, Error> {
    match msg.msg_type {
        NLMSG_ERROR | NLMSG_NOOP => return Ok(None),
        RTM_NEWLINK | RTM_DELLINK => {
            return Ok(link::decode_link(msg)?.map(|l| {
                Event::Link(LinkChange {
                    present: msg.msg_type == RTM_NEWLINK,
                    index: l.index,
                    name: l.name,
                    up: l.up,
                })
            }));
        }
        RTM_NEWADDR | RTM_DELADDR => {
            return Ok(link::decode_addr(msg)?.map(|(index, addr, prefix)| {
                Event::Address(AddressChange {
                    added: msg.msg_type == RTM_NEWADDR,
                    index,
                    addr,
                    prefix,
                })
            }));
        }
        _ => {}
    }
    if msg.msg_type >> 8 != NFNL_SUBSYS_NFTABLES {
        return Ok(None);
    }
    let ty = msg.msg_type & 0xff;
    if ty == NFT_MSG_NEWGEN {
        return generation(msg).map(|g| Some(Event::Generation(g)));
    }
    let (op, object, name_attr) = match ty {
        NFT_MSG_NEWTABLE => (Op::Add, Object::Table, None),
        NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => (Op::Delete, Object::Table, None),
        NFT_MSG_NEWCHAIN => (Op::Add, Object::Chain, Some(NFTA_CHAIN_NAME)),
        NFT_MSG_DELCHAIN | NFT_MSG_DESTROYCHAIN => (Op::Delete, Object::Chain, Some(NFTA_CHAIN_NAME)),
        NFT_MSG_NEWRULE => (Op::Add, Object::Rule, Some(NFTA_RULE_CHAIN)),
        NFT_MSG_DELRULE | NFT_MSG_DESTROYRULE => (Op::Delete, Object::Rule, Some(NFTA_RULE_CHAIN)),
        NFT_MSG_NEWSET => (Op::Add, Object::Set, Some(NFTA_SET_NAME)),
        NFT_MSG_DELSET | NFT_MSG_DESTROYSET => (Op::Delete, Object::Set, Some(NFTA_SET_NAME)),
        NFT_MSG_NEWSETELEM => (Op::Add, Object::Elements, Some(NFTA_SET_ELEM_LIST_SET)),
        NFT_MSG_DELSETELEM | NFT_MSG_DESTROYSETELEM => {
            (Op::Delete, Object::Elements, Some(NFTA_SET_ELEM_LIST_SET))
        }
        NFT_MSG_NEWOBJ => (Op::Add, Object::Stateful, Some(NFTA_OBJ_NAME)),
        NFT_MSG_DELOBJ | NFT_MSG_DESTROYOBJ => (Op::Delete, Object::Stateful, Some(NFTA_OBJ_NAME)),
        NFT_MSG_NEWFLOWTABLE => (Op::Add, Object::Flowtable, Some(NFTA_FLOWTABLE_NAME)),
        NFT_MSG_DELFLOWTABLE | NFT_MSG_DESTROYFLOWTABLE => {
            (Op::Delete, Object::Flowtable, Some(NFTA_FLOWTABLE_NAME))
        }
        _ => return Ok(None),
    };
    // Every nftables object message names its table in attribute 1 (`NFTA_TABLE_NAME`,
    // `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`, `NFTA_SET_ELEM_LIST_TABLE`, …).
    let mut table = None;
    let mut name = None;
    let mut elements = 0;
    for a in msg.attrs() {
        let a = a?;
        if a.ty == NFTA_TABLE_NAME {
            table = Some(a.string()?);
        } else if Some(a.ty) == name_attr {
            name = Some(a.string()?);
        } else if object == Object::Elements && a.ty == NFTA_SET_ELEM_LIST_ELEMENTS {
            elements = a
                .nested()
                .filter(|e| e.as_ref().is_ok_and(|e| e.ty == NFTA_LIST_ELEM))
                .count();
        }
    }
    let table = table.ok_or_else(|| Error::decode("a ruleset notification without a table name"))?;
    Ok(Some(Event::Ruleset(RulesetChange {
        op,
        object,
        family: msg.family(),
        table,
        name,
        elements,
    })))
}

/// `NFT_MSG_NEWGEN`: the generation id and the committing process.
fn generation(msg: &Msg<'_>) -> Result<Generation, Error> {
    let mut g = Generation {
        id: 0,
        pid: 0,
        process: None,
    };
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_GEN_ID => g.id = a.u32()?,
            NFTA_GEN_PROC_PID => g.pid = a.u32()?,
            NFTA_GEN_PROC_NAME => g.process = Some(a.string()?),
            _ => {}
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Msgs, Writer};
    use crate::consts::{NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_TABLE};

    fn one(bytes: &[u8]) -> Option<Event> {
        let msg = Msgs::new(bytes).next().expect("a message").expect("well formed");
        decode(&msg).expect("decodes")
    }

    #[test]
    fn a_deleted_table_names_its_family_and_name() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, 0, 0, 1, 0);
        w.put_str(NFTA_TABLE_NAME, "portmap");
        w.end_msg(m);
        let Some(Event::Ruleset(c)) = one(&buf) else {
            panic!("not a ruleset change")
        };
        assert_eq!((c.op, c.object), (Op::Delete, Object::Table));
        assert_eq!(c.table_display(), "inet portmap");
        assert_eq!(c.name, None);
    }

    #[test]
    fn element_notifications_count_their_elements() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM, 0, 0, 1, 0);
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, "portmap");
        w.put_str(NFTA_SET_ELEM_LIST_SET, "dnat4");
        let list = w.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
        for _ in 0..2 {
            let e = w.nest_start(NFTA_LIST_ELEM);
            let k = w.nest_start(NFTA_SET_ELEM_KEY);
            w.put(crate::consts::NFTA_DATA_VALUE, &[6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
            w.nest_end(k);
            w.nest_end(e);
        }
        w.nest_end(list);
        w.end_msg(m);
        let Some(Event::Ruleset(c)) = one(&buf) else {
            panic!("not a ruleset change")
        };
        assert_eq!((c.op, c.object, c.elements), (Op::Delete, Object::Elements, 2));
        assert_eq!(c.name.as_deref(), Some("dnat4"));
    }

    #[test]
    fn a_generation_names_the_committing_process() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        let m = w.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN, 0, 0, 0, 0);
        w.put_u32(NFTA_GEN_ID, 42);
        w.put_u32(NFTA_GEN_PROC_PID, 1853);
        w.put_str(NFTA_GEN_PROC_NAME, "nft");
        w.end_msg(m);
        assert_eq!(
            one(&buf),
            Some(Event::Generation(Generation {
                id: 42,
                pid: 1853,
                process: Some("nft".into())
            }))
        );
    }

    #[test]
    fn other_subsystems_are_skipped() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        // A conntrack message (subsystem 1).
        let m = w.begin_msg(1 << 8, 0, 0, 2, 0);
        w.end_msg(m);
        assert_eq!(one(&buf), None);
    }
}
