//! The one error type of this crate: what went wrong at the netlink level, which message the kernel
//! refused and why, in words an operator can act on.
//!
//! It must not speak of port mappings: callers add that context (e.g. by mapping a failed element
//! index back to the mapping it encodes).

use std::fmt;

/// Everything that can fail in `portmap-netlink`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel (or `setns`) refused for lack of privilege (`EPERM`).
    #[error("{context}: permission denied; needs CAP_NET_ADMIN (run as root)")]
    Permission {
        /// What was being done.
        context: String,
    },
    /// The network namespace could not be opened or entered.
    #[error("cannot enter network namespace {}", shown(name))]
    Netns {
        /// The namespace as the caller named it (a name under `/run/netns` or a path).
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused message `index` of a batch, so it aborted the whole batch: nothing in it
    /// was applied.
    #[error(
        "kernel rejected message {} of {total} ({what}): {}{}",
        index + 1,
        OsError(*errno),
        ExtAck(ext_ack.as_deref())
    )]
    Kernel {
        /// Position of the refused message in the batch, from 0 (the argument of
        /// `Batch::describe`; begin/end markers are not counted). Shown 1-based.
        index: usize,
        /// Number of messages in the batch.
        total: usize,
        /// `Batch::describe(index)`, e.g. `add rule to chain inet portmap prerouting`.
        what: String,
        /// The positive errno (`ENOENT` = 2, `EEXIST` = 17, ...).
        errno: i32,
        /// For element messages: the index of the offending element in the slice that was given
        /// to `Batch::add_elements`/`del_elements`, from 0, when the kernel's extended ack
        /// pointed at it.
        element: Option<usize>,
        /// The kernel's extended-ack text and/or where in the message the offending attribute is.
        ext_ack: Option<String>,
    },
    /// The ruleset changed since the generation the batch was built against (`ERESTART` on batch
    /// begin). Nothing was applied; read the state again and rebuild.
    #[error(
        "the nftables ruleset changed since it was read (stale generation id); nothing was applied: read it again and retry"
    )]
    GenerationChanged,
    /// An object that was asked for by name does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked for, e.g. `set inet portmap dnat4`.
        what: String,
    },
    /// An argument was refused before anything reached the kernel or the file system.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was given, e.g. `sysctl key "../etc/shadow"`.
        what: String,
        /// Why it was refused and what would be valid.
        reason: String,
    },
    /// The kernel sent something this crate cannot decode.
    #[error("cannot decode the kernel's reply: {what}")]
    Decode {
        /// What was malformed or unexpected.
        what: String,
    },
}

impl Error {
    pub(crate) fn decode(what: impl Into<String>) -> Error {
        Error::Decode { what: what.into() }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        let context = context.into();
        if source.raw_os_error() == Some(libc::EPERM) {
            Error::Permission { context }
        } else {
            Error::Io { context, source }
        }
    }

    /// The errno when the kernel refused a message, `None` for any other error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A caller's value (a namespace name, a path) for a message: escaped like Rust's `escape_debug`
/// and cut after 64 characters with `…`, so neither control characters nor 10 kB of text reach a
/// terminal. (The same rule as `portmap_core::shown_arg`; this crate depends on nothing above it.)
pub(crate) fn shown(text: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c == '`' {
            out.push_str("\\`");
        } else if c.is_control()
            || c == '\\'
            || c == '"'
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

struct OsError(i32);

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

struct ExtAck<'a>(Option<&'a str>);

impl fmt::Display for ExtAck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(text) => write!(f, "; {text}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_the_message_one_based() {
        let e = Error::Kernel {
            index: 2,
            total: 7,
            what: "add rule to chain inet portmap prerouting".into(),
            errno: libc::ENOENT,
            element: None,
            ext_ack: None,
        };
        assert_eq!(
            e.to_string(),
            "kernel rejected message 3 of 7 (add rule to chain inet portmap prerouting): \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn namespace_names_are_escaped_and_cut() {
        let e = Error::Netns {
            name: format!("a\x1b[31m\"{}", "x".repeat(10_000)),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "cannot enter network namespace a\\u{{1b}}[31m\\\"{}…",
                "x".repeat(57)
            )
        );
    }

    #[test]
    fn eperm_becomes_permission() {
        let e = Error::io("opening socket", std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().contains("needs CAP_NET_ADMIN (run as root)"));
    }
}
