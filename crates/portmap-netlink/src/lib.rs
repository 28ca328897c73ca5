//! portmap-netlink: a small libmnl-style netlink layer for nftables, conntrack and interfaces.
//!
//! [`Batch`] builds the messages of one transaction (tables, chains, rules, sets, elements);
//! [`Socket`] opens a `NETLINK_NETFILTER` socket inside a network namespace, sends a batch
//! as one atomic transaction (optionally pinned to a ruleset generation), and dumps the ruleset
//! back into the typed [`object`]s. Errors name the refused message and, for element messages,
//! the refused element.
//!
//! Beside nftables: [`Conntrack`] dumps and deletes connection-tracking entries (so that a changed
//! DNAT reaches existing flows), [`interfaces`] lists a namespace's interfaces and addresses,
//! [`sysctl::read`] reads a sysctl as a namespace sees it, [`route_to`] asks which route the
//! kernel would take to an address, [`Monitor`] subscribes to the kernel's
//! notifications of ruleset, link and address changes, and [`LogReader`] reads the packets rules
//! log to an nflog group. All of them work on a chosen
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
pub mod monitor;
mod netns;
pub mod nflog;
pub mod object;
pub mod route;
mod socket;
pub mod sysctl;
pub mod udata;

pub use batch::Batch;
pub use conntrack::{Conntrack, Flow, Icmp, L3, Tuple};
pub use error::Error;
pub use link::{Interface, interfaces};
pub use monitor::{Monitor, Received, Topic};
pub use netns::{Netns, boot_id, identity as netns_identity, inode as netns_inode};
pub use nflog::{LogEvent, LogReader};
pub use object::*;
pub use route::{NoRoute, Route, RouteType, route_to};
pub use socket::Socket;
