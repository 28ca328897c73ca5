//! New forwarded connections as the kernel logs them: mappings with `log: true` hand the first
//! packet of each new connection, after DNAT, to the nflog group of the configuration's
//! `log_group` with the prefix `portmap <name>`; [`ConnectionLog`] reads that group and yields one
//! [`ConnectionEvent`] per connection: the mapping, the source, the target and (when the kernel
//! attaches the conntrack entry) the public address the client connected to.
//!
//! `portmap log` prints them; the watch daemon can do the same with this API. A group has one
//! reader at a time: give each portmap instance (`--table`) a `log_group` of its own. Events of
//! the group that do not carry a portmap prefix are skipped.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use portmap_netlink::{LogEvent, LogReader};

use crate::{Error, Netns};

/// The prefix portmap's log rules carry before the mapping's name.
pub const PREFIX: &str = "portmap ";

/// One new forwarded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionEvent {
    /// The mapping that forwarded it.
    pub mapping: String,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// The client.
    pub source: SocketAddr,
    /// Where the connection was forwarded to (the mapping's target).
    pub target: SocketAddr,
    /// The router's address and port the client connected to, when the kernel said.
    pub public: Option<SocketAddr>,
    /// When the kernel logged it, when it said.
    pub time: Option<SystemTime>,
}

impl fmt::Display for ConnectionEvent {
    /// `web tcp 203.0.113.2:40000 -> 192.168.1.66:80 (via 203.0.113.1:8080)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            n => format!("proto {n}"),
        };
        write!(f, "{} {proto} {} -> {}", self.mapping, self.source, self.target)?;
        if let Some(public) = self.public {
            write!(f, " (via {public})")?;
        }
        Ok(())
    }
}

impl ConnectionEvent {
    /// The event for a logged packet carrying portmap's prefix; `None` for any other.
    pub fn from_log(event: &LogEvent) -> Option<ConnectionEvent> {
        let mapping = event.prefix.strip_prefix(PREFIX)?;
        if !crate::is_mapping_name(mapping) {
            return None;
        }
        let (Some(sport), Some(dport)) = (event.src_port, event.dst_port) else {
            return None;
        };
        let public = event
            .original
            .as_ref()
            .and_then(|t| t.dst_port.map(|p| SocketAddr::new(t.dst, p)));
        Some(ConnectionEvent {
            mapping: mapping.to_owned(),
            protocol: event.protocol,
            source: SocketAddr::new(event.src, sport),
            target: SocketAddr::new(event.dst, dport),
            public,
            time: event.timestamp,
        })
    }
}

/// A reader of one nflog group's connection events.
#[derive(Debug)]
pub struct ConnectionLog {
    reader: LogReader,
}

impl ConnectionLog {
    /// Bind nflog group `group` in `netns` (the configuration's `log_group`, default
    /// [`crate::DEFAULT_LOG_GROUP`]).
    pub fn open(netns: &Netns, group: u16) -> Result<Self, Error> {
        let nl = match netns {
            Netns::Named(name) => portmap_netlink::Netns::Named(name.clone()),
            Netns::Path(path) => portmap_netlink::Netns::Path(path.clone()),
            _ => portmap_netlink::Netns::Current,
        };
        let reader = LogReader::open(&nl, group).map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(ConnectionLog { reader })
    }

    /// The next connection, waiting at most `timeout` (for ever with `None`); `Ok(None)` when
    /// none came in time.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<ConnectionEvent>, Error> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            let Some(event) = self
                .reader
                .next_event(left)
                .map_err(|e| Error::Backend(Box::new(e)))?
            else {
                return Ok(None);
            };
            if let Some(connection) = ConnectionEvent::from_log(&event) {
                return Ok(Some(connection));
            }
        }
    }

    /// Times the kernel reported that events were lost (the reader was too slow).
    pub fn lost(&self) -> u64 {
        self.reader.lost()
    }
}
