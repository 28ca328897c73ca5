//! `portmap import`: read the DNAT forwards other tools wrote — native nftables tables of any
//! family, and iptables/ip6tables rules of both variants — and turn them into a portmap
//! configuration for a person to review, never changing the kernel.
//!
//! Reading and converting are kept apart. [`nft`] decodes rules dumped over netlink (the
//! repository's own `portmap-netlink`) and [`iptables`] parses `iptables-save` text; both are pure
//! and yield [`Found`]: the forwards a rule makes ([`Candidate`]s) and the DNAT rules that cannot be
//! taken over, each with the reason ([`NotTaken`]). [`convert()`] merges candidates into mappings
//! (tcp+udp → `both`, consecutive ports → a range with `to_port`, several source rules → one
//! `allow_from`), infers `wan` and writes the YAML. Only [`read`] touches the system: netlink dumps
//! and `*-save` programs run in the chosen namespace, with no shell.

pub mod convert;
pub mod iptables;
pub mod nft;
pub mod read;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnet::IpNet;
use portmap_core::{PortRange, Transport};

pub use convert::{Imported, ImportedMapping, SetAside, convert};
pub use read::{ImportError, ImportOptions, ReadFrom, import};

/// One forward a foreign rule makes: packets of `transport` to `ports` (arriving on `iif`, from
/// `sources`) go to `to`, port `to_port` onwards (the first external port goes to `to_port`, the
/// next to `to_port + 1`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where the rule is: `nft table ip nat chain prerouting handle 12`.
    pub origin: String,
    /// The rule's comment, if it has one.
    pub comment: Option<String>,
    /// The input interface it matches (`iifname`, `-i`), if any.
    pub iif: Option<String>,
    /// TCP or UDP.
    pub transport: Transport,
    /// The external ports.
    pub ports: PortRange,
    /// The inner host.
    pub to: IpAddr,
    /// The inner port the first external port goes to.
    pub to_port: u16,
    /// The one destination address it matches (`listen`), if any.
    pub listen: Option<IpAddr>,
    /// Sources admitted; empty means everyone.
    pub sources: Vec<IpNet>,
}

/// A DNAT (or other NAT) rule that is not taken over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotTaken {
    /// Where the rule is.
    pub origin: String,
    /// Why portmap does not take it over (a match it cannot express, several targets, …).
    pub reason: String,
}

/// What reading one source yielded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The forwards of the rules that can be taken over, in rule order.
    pub candidates: Vec<Candidate>,
    /// The rules that cannot, with the reason.
    pub not_taken: Vec<NotTaken>,
    /// What was read (`nft: 3 tables`, `iptables-legacy: nat`), for the header of the output.
    pub read: Vec<String>,
}

impl Found {
    /// Append another source's findings.
    pub fn extend(&mut self, other: Found) {
        self.candidates.extend(other.candidates);
        self.not_taken.extend(other.not_taken);
        self.read.extend(other.read);
    }

    pub(crate) fn skip(&mut self, origin: &str, reason: impl Into<String>) {
        self.not_taken.push(NotTaken {
            origin: origin.to_owned(),
            reason: reason.into(),
        });
    }
}

/// Text from the kernel or a tool, made safe for one line of a YAML comment: control characters
/// escaped, cut after 200 characters.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i >= 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
