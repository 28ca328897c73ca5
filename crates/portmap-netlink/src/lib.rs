//! portmap-netlink: a small libmnl-style nftables netlink layer.
//!
//! [`Batch`] builds the messages of one transaction (tables, chains, rules, sets, elements) in one
//! buffer; [`Socket`] opens a `NETLINK_NETFILTER` socket inside a network namespace, sends a batch
//! as one atomic transaction (optionally pinned to a ruleset generation), and dumps the ruleset
//! back into the typed [`object`]s. Errors name the refused message and, for element messages,
//! the refused element.
//!
//! This crate knows the nftables wire format and nft's conventions (userdata, datatypes,
//! intervals); it must not know what a port mapping is.
#![warn(missing_docs)]

mod attr;
mod batch;
mod consts;
pub mod datatype;
mod decode;
mod encode;
mod error;
pub mod interval;
pub mod object;
mod socket;
pub mod udata;

pub use batch::Batch;
pub use error::Error;
pub use object::*;
pub use socket::{Netns, Socket};
