//! How values that came from outside — the configuration file, a plan file, the command line — are
//! shown in messages: escaped, so that control characters, quotes, backslashes and invisible
//! formatting characters cannot change what a terminal displays, and cut short, so that a 10 MB
//! value cannot flood one. Every message that echoes such a value goes through [`shown`] or
//! [`shown_arg`]; the limits of what portmap reads are here too.
//!
//! This module depends on nothing else in the crate and decides nothing about validity.

/// Largest configuration file portmap reads, in bytes (32 MiB). A configuration with 100,000
/// mappings written out in full is about 13 MB. Readers must stop at `MAX_CONFIG_BYTES + 1` bytes.
pub const MAX_CONFIG_BYTES: usize = 32 << 20;

/// Largest saved plan file portmap reads, in bytes (64 MiB). A plan creating 100,000 mappings is
/// about 50 MB of pretty-printed JSON. Readers must stop at `MAX_PLAN_BYTES + 1` bytes.
pub const MAX_PLAN_BYTES: usize = 64 << 20;

/// Deepest nesting of YAML collections accepted. A portmap configuration is 4 deep
/// (`mappings` → entry → `allow_from` → address); deeper input is refused where it passes the
/// limit, before it can cost memory or stack.
pub const MAX_DEPTH: usize = 64;

/// Characters the YAML scanner may read past the last complete event (256 KiB): the longest
/// single value or flow collection (`[…]`, `{…}`) that starts in block context. The scanner holds a
/// whole flow collection in memory before it hands out its first event, about 125 bytes per
/// character, so this bounds that memory near 32 MB. Longer lists are written in block style.
pub const MAX_LOOKAHEAD: usize = 256 << 10;

/// Most YAML values (scalars, lists and mappings, keys included) one configuration may hold: 3
/// million. 100,000 mappings with six fields each take 1.3 million, with every field set about 2
/// million. Reading 3 million values costs about 300 MB.
pub const MAX_NODES: usize = 3_000_000;

/// Most errors kept and shown for one configuration; the rest are counted ("and N more errors").
pub const MAX_ERRORS: usize = 100;

/// Characters of a configuration value shown in a message before it is cut with `…`.
const SHOWN_VALUE_CHARS: usize = 40;

/// Characters of a command-line value (a table or namespace name, a file path) shown in a message
/// before it is cut with `…`.
const SHOWN_ARG_CHARS: usize = 64;

/// A value from the configuration for an error message: escaped (control characters, quotes,
/// backslashes, backticks and invisible formatting characters show as `\n`, `\"`, `\u{202e}`…) and
/// cut after 40 characters with `…`.
pub fn shown(text: &str) -> String {
    escaped(text, SHOWN_VALUE_CHARS)
}

/// A value from the command line (a table or namespace name, a file path) for an error message:
/// escaped like [`shown`] and cut after 64 characters with `…`.
pub fn shown_arg(text: &str) -> String {
    escaped(text, SHOWN_ARG_CHARS)
}

/// A file name as the origin of `FILE:LINE:COL` diagnostics: escaped like [`shown`] but cut only
/// past 4096 characters (`PATH_MAX`), so that editors can still open the file from the message.
pub fn shown_origin(text: &str) -> String {
    escaped(text, 4096)
}

/// `text` escaped and cut after `max` characters.
fn escaped(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 8));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c == '`' {
            out.push_str("\\`");
        } else if is_unsafe_char(c) || c == '\\' || c == '"' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters and the invisible formatting characters (bidirectional overrides, zero-width
/// marks) that can make text display differently from what it is.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A count with its noun, singular or plural as the count says: `1 mapping`, `2 mappings`,
/// `0 mappings`. For nouns whose plural adds `s` (every noun portmap counts).
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A size in bytes as people read it: `32 MiB`, `1.5 KiB`, `512 bytes`.
pub fn shown_size(bytes: usize) -> String {
    const UNITS: [(&str, usize); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenths = (bytes % size) * 10 / size;
            return if tenths == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenths} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_hostile_text() {
        assert_eq!(shown("a\"b\nc`"), "a\\\"b\\nc\\`");
        assert_eq!(shown(&"x".repeat(50)), format!("{}…", "x".repeat(40)));
        assert_eq!(shown("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(shown("\u{1b}[31mred"), "\\u{1b}[31mred");
    }

    #[test]
    fn command_line_values_are_cut_at_64() {
        assert_eq!(shown_arg(&"y".repeat(10_000)), format!("{}…", "y".repeat(64)));
        assert_eq!(shown_arg("tab\there"), "tab\\there");
        assert_eq!(
            shown_arg("/etc/portmap/portmap.yaml"),
            "/etc/portmap/portmap.yaml"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(counted(0, "mapping"), "0 mappings");
        assert_eq!(counted(1, "mapping"), "1 mapping");
        assert_eq!(counted(2, "kernel object"), "2 kernel objects");
    }

    #[test]
    fn sizes() {
        assert_eq!(shown_size(MAX_CONFIG_BYTES), "32 MiB");
        assert_eq!(shown_size(1536), "1.5 KiB");
        assert_eq!(shown_size(12), "12 bytes");
    }
}
