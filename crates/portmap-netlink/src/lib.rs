//! portmap-netlink: a small libmnl-style netlink layer for nftables, conntrack and interfaces.
//!
//! [`Batch`] builds the messages of one transaction (tables, chains, rules, sets, elements) in one
//! buffer; [`Socket`] opens a `NETLINK_NETFILTER` socket inside a network namespace, sends a batch
//! as one atomic transaction (optionally pinned to a ruleset generation), and dumps the ruleset
//! back into the typed [`object`]s. Errors name the refused message and, for element messages,
//! the refused element.
//!
//! Beside nftables: [`Conntrack`] dumps and deletes connection-tracking entries (so that a changed
//! DNAT reaches existing flows), [`interfaces`] lists a namespace's interfaces and addresses, and
//! [`sysctl::read`] reads a sysctl as a namespace sees it, and [`LogReader`] reads the packets
//! rules log to an nflog group. All of them work on a chosen
//! [`Netns`] without the process ever changing namespace.
//!
//! This crate knows the netlink wire formats and nft's conventions (userdata, datatypes,
//! intervals); it must not know what a port mapping is.
#![warn(missing_docs)]

mod attr;
mod batch;
mod channel;
pub mod conntrack;
mod consts;
pub mod datatype;
mod decode;
mod encode;
mod error;
pub mod interval;
pub mod link;
mod netns;
pub mod nflog;
pub mod object;
mod socket;
pub mod sysctl;
pub mod udata;

pub use batch::Batch;
pub use conntrack::{Conntrack, Flow, Icmp, L3, Tuple};
pub use error::Error;
pub use link::{Interface, interfaces};
pub use netns::{Netns, boot_id, inode as netns_inode};
pub use nflog::{LogEvent, LogReader};
pub use object::*;
pub use socket::Socket;
