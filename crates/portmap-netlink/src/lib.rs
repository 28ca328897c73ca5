//! portmap-netlink: a small libmnl-style nftables netlink layer (contract being implemented).
#![warn(missing_docs)]
pub mod object;
