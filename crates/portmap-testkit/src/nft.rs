//! Reading nftables state back from a namespace in a comparable form: listings with counter values
//! and `# handle N` comments stripped, rule handles of a chain, and the foreign table used to prove
//! that portmap leaves other tables alone.

use crate::netns::Netns;

/// A table that is not portmap's: a forward base chain with a counter and a set with one element.
/// Loaded into router namespaces to check that apply and destroy leave it byte-identical.
/// (`fwd` is an nft keyword, so the chain is called `fwd_in`.)
pub const FOREIGN_TABLE: &str = "\
table ip foreign {
\tchain fwd_in {
\t\ttype filter hook forward priority 10; policy accept;
\t\tcounter
\t}
\tset s {
\t\ttype ipv4_addr
\t\telements = { 198.51.100.1 }
\t}
}
";

/// `nft list table FAMILY NAME` inside `ns`, raw. `Err` carries nft's error output (e.g. the table
/// does not exist).
pub fn nft_list(ns: &Netns, table: &str) -> Result<String, String> {
    let mut args = vec!["list", "table"];
    args.extend(table.split_whitespace());
    let out = ns.nft(&args);
    if out.ok() { Ok(out.stdout) } else { Err(out.stderr) }
}

/// Normalised listing of one table, `None` when it does not exist.
pub fn table(ns: &Netns, table: &str) -> Option<String> {
    nft_list(ns, table).ok().map(|s| normalize(&s))
}

/// Normalised `nft list ruleset` inside `ns`.
#[track_caller]
pub fn ruleset(ns: &Netns) -> String {
    let out = ns.nft(&["list", "ruleset"]);
    assert!(out.ok(), "nft list ruleset failed in {}\n{out}", ns.name());
    normalize(&out.stdout)
}

/// Element timeouts and the time they have left (`timeout 59m59s240ms expires 59m58s996ms` →
/// `timeout T expires E`): relative, so they differ between two tables built a moment apart.
fn mask_timeouts(line: &str) -> String {
    let duration = |w: &str| {
        !w.is_empty()
            && w.starts_with(|c: char| c.is_ascii_digit())
            && w.bytes().all(|b| b"0123456789dhms".contains(&b))
    };
    let mut out: Vec<&str> = Vec::new();
    let mut words = line.split(' ').peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if let Some(mask) = match w {
            "timeout" => Some("T"),
            "expires" => Some("E"),
            _ => None,
        } && words
            .peek()
            .is_some_and(|next| duration(next.trim_end_matches(',')))
        {
            let next = words.next().unwrap_or_default();
            out.push(if next.ends_with(',') {
                if mask == "T" { "T," } else { "E," }
            } else {
                mask
            });
        }
    }
    out.join(" ")
}

/// Strip what changes without anyone changing the ruleset: counter values
/// (`counter packets 3 bytes 180` → `counter`, and a named counter's `packets 3 bytes 180` line →
/// `packets bytes`) and handle comments (`# handle 7`); also trailing blanks at line ends.
pub fn normalize(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    for line in listing.lines() {
        let line = strip_handle(line);
        let line = strip_counter_values(&line);
        let line = mask_timeouts(&line);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    sort_elements(&out)
}

/// The elements of a listing's `elements = { … }` list (`body` is what stands between the braces, on
/// one line or several): split at the commas that are not inside a quoted comment, trimmed, empty
/// ones dropped.
pub fn split_elements(body: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(body[start..].trim());
    items.retain(|s| !s.is_empty());
    items
}

/// Set elements are listed in the kernel's hash order, which depends on a per-set random seed:
/// print each `elements = { … }` list one element a line, sorted, so equal sets list equally.
fn sort_elements(listing: &str) -> String {
    const OPEN: &str = "elements = { ";
    let mut out = String::with_capacity(listing.len());
    let mut rest = listing;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let indent: String = rest[..i].rsplit('\n').next().unwrap_or("").to_owned();
        let body_start = i + OPEN.len();
        let Some(len) = rest[body_start..].find(" }") else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        let mut items = split_elements(body);
        items.sort_unstable();
        out.push_str("elements = {\n");
        for item in items {
            out.push_str(&indent);
            out.push('\t');
            out.push_str(item);
            out.push('\n');
        }
        out.push_str(&indent);
        out.push('}');
        rest = &rest[body_start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn strip_handle(line: &str) -> String {
    const MARK: &str = " # handle ";
    if let Some(i) = line.find(MARK) {
        let tail = &line[i + MARK.len()..];
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            return line[..i].to_owned();
        }
    }
    line.to_owned()
}

fn strip_counter_values(line: &str) -> String {
    const MARK: &str = "counter packets ";
    // The body of a named counter (`counter conn_web { packets 3 bytes 180 }`).
    let body = line.trim_start();
    if let Some(rest) = body.strip_prefix("packets ")
        && let Some((packets, bytes)) = rest.split_once(" bytes ")
        && !packets.is_empty()
        && packets.bytes().all(|b| b.is_ascii_digit())
        && !bytes.is_empty()
        && bytes.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{}packets bytes", &line[..line.len() - body.len()]);
    }
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        out.push_str("counter");
        let after = &rest[i + MARK.len()..];
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        let after = after.strip_prefix(" bytes ").unwrap_or(after);
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Handles of the rules in `chain` of `table` (e.g. `"inet portmap"`, `"prerouting"`), in order.
#[track_caller]
pub fn rule_handles(ns: &Netns, table: &str, chain: &str) -> Vec<u64> {
    let mut args = vec!["-a", "list", "chain"];
    args.extend(table.split_whitespace());
    args.push(chain);
    let out = ns.nft(&args);
    assert!(out.ok(), "cannot list chain {chain} of {table}\n{out}");
    // Rule lines end in `# handle N`; table and chain headers end in `{ # handle N`.
    out.stdout
        .lines()
        .filter_map(|l| l.rsplit_once(" # handle "))
        .filter(|(rule, _)| !rule.trim_end().ends_with('{'))
        .filter_map(|(_, h)| h.trim().parse().ok())
        .collect()
}
