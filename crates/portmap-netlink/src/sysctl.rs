//! [`read`]: one sysctl value (`/proc/sys/...`) as a chosen network namespace sees it.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens a file there, so the file
//! is opened and read on a short-lived thread that has entered the namespace; the calling process
//! and its threads never change namespace. Keys are checked before they become a path. This
//! module only reads: it must not write sysctls.

use std::io::{self, Read as _};
use std::path::PathBuf;

use crate::error::Error;
use crate::netns::{self, Netns};

/// The value of sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`,
/// `net.ipv6.conf.all.forwarding`) inside `netns`, without the trailing newline. A key is lower
/// case letters, digits, `_` and `-` in non-empty parts separated by single dots; anything else
/// is refused with [`Error::Invalid`] before a path is built. A key that does not exist there is
/// [`Error::NotFound`].
pub fn read(netns: &Netns, key: &str) -> Result<String, Error> {
    let path = path_of(key)?;
    let what = format!("sysctl {key} in network namespace {netns}");
    let text = netns::run_in(netns, move || {
        let mut text = String::new();
        Ok(std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map(|_| text)
            .map_err(|e| (e, path)))
    });
    match text {
        Ok(Ok(mut text)) => {
            if text.ends_with('\n') {
                text.pop();
            }
            Ok(text)
        }
        Ok(Err((e, _))) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound { what }),
        Ok(Err((e, path))) => Err(Error::io(format!("reading {what} ({})", path.display()), e)),
        Err(e) => Err(e),
    }
}

/// `/proc/sys/` + the key with dots as slashes, for a key made only of `[a-z0-9_-]` parts.
fn path_of(key: &str) -> Result<PathBuf, Error> {
    let invalid = |reason: &str| Error::Invalid {
        what: format!("sysctl key {key:?}"),
        reason: reason.to_owned(),
    };
    if key.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(
            "only a-z, 0-9, '_', '-' and '.' are allowed, e.g. net.ipv4.ip_forward",
        ));
    }
    if key.split('.').any(str::is_empty) {
        return Err(invalid(
            "dots must separate non-empty parts (no leading, trailing or double dots)",
        ));
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(key.split('.'));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_proc_sys_paths() {
        assert_eq!(
            path_of("net.ipv4.ip_forward").expect("valid"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("net.ipv6.conf.br-lan.forwarding").expect("valid"),
            PathBuf::from("/proc/sys/net/ipv6/conf/br-lan/forwarding")
        );
    }

    #[test]
    fn hostile_keys_never_become_paths() {
        for key in [
            "",
            ".",
            "..",
            "...",
            "net..ipv4",
            ".net.ipv4",
            "net.ipv4.",
            "../../etc/shadow",
            "net/ipv4/ip_forward",
            "/proc/sys/net",
            "net.ipv4.conf.eth0/1.forwarding",
            "NET.IPV4.IP_FORWARD",
            "net.ipv4.ip_forward\0",
            "net.ipv4.ip_forward\n",
            "net ipv4",
            "net.ipv4.*",
            "net.ipv4.conf.é.forwarding",
            "~root",
        ] {
            match path_of(key) {
                Err(Error::Invalid { what, .. }) => assert!(what.starts_with("sysctl key"), "{what}"),
                other => panic!("{key:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn the_refusal_says_what_is_valid() {
        let err = path_of("../etc").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid sysctl key \"../etc\": only a-z, 0-9, '_', '-' and '.' are allowed, e.g. net.ipv4.ip_forward"
        );
    }
}
