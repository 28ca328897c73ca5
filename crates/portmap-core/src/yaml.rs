//! YAML text → a small tree in which every node knows its line and column (1-based, columns counted
//! in characters). Nothing here knows what a port mapping is; `load.rs` walks the tree.
//!
//! Two readers build the same tree:
//! - [`parse`] first tries a strict, fast reader for the plain subset configuration files are written
//!   in (block mappings and sequences, one-line flow collections, plain and quoted one-line scalars,
//!   comments). The moment it meets anything else — anchors, tags, multi-line scalars, escapes, tabs,
//!   odd indentation, even a syntax error — it gives up and
//! - the full YAML 1.2 event parser (`saphyr-parser`) reads the text instead, reporting syntax errors
//!   with their positions.
//!
//! The fast reader exists because the event parser needs ~45 ms for a 10,000-mapping file on a small
//! router; the differential tests at the end of this file hold both readers to the same trees.
//! This module must not interpret values (no booleans, no ports) and must not do I/O.

use std::borrow::Cow;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A (line, column) position, both 1-based; the column counts characters.
pub(crate) type Pos = (u32, u32);

/// One YAML node and where it starts. A collection starts where its first entry starts (an empty
/// flow collection at its bracket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node<'a> {
    pub pos: Pos,
    pub value: Value<'a>,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A scalar; `plain` is false for quoted scalars (and `!!str`), whose text is never a number,
    /// boolean or null.
    Scalar { text: Cow<'a, str>, plain: bool },
    /// A sequence.
    Seq(Vec<Node<'a>>),
    /// A mapping, entries in file order (duplicates kept; the walker reports them).
    Map(Vec<(Node<'a>, Node<'a>)>),
    /// An alias (`*name`); already reported as unsupported.
    Alias,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The result of reading a YAML text.
#[derive(Debug, Default)]
pub(crate) struct Parsed<'a> {
    /// The document's root, `None` when the text holds no document (or a syntax error stopped
    /// reading).
    pub root: Option<Node<'a>>,
    /// Problems found; a syntax error is always alone and leaves `root` empty.
    pub errors: Vec<YamlError>,
}

/// Read `text`: the fast reader when it can, the full parser otherwise.
pub(crate) fn parse(text: &str) -> Parsed<'_> {
    match fast::parse(text) {
        Some(root) => Parsed {
            root: Some(root),
            errors: Vec::new(),
        },
        None => parse_full(text),
    }
}

fn pos_of(span: Span) -> Pos {
    let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
    let col = u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX);
    (line, col)
}

/// A collection under construction.
enum Frame<'a> {
    Seq {
        start: Pos,
        items: Vec<Node<'a>>,
    },
    Map {
        start: Pos,
        entries: Vec<(Node<'a>, Node<'a>)>,
        key: Option<Node<'a>>,
    },
}

/// Read `text` with the full YAML 1.2 event parser.
pub(crate) fn parse_full(text: &str) -> Parsed<'_> {
    let mut out = Parsed::default();
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut documents = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let line = u32::try_from(e.marker().line()).unwrap_or(u32::MAX);
                let col = u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX);
                return Parsed {
                    root: None,
                    errors: vec![YamlError {
                        pos: (line, col),
                        message: format!("YAML syntax error: {}", e.info()),
                    }],
                };
            }
        };
        let pos = pos_of(span);
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    out.errors.push(YamlError {
                        pos,
                        message: "only one YAML document is allowed; remove the `---` and what follows it"
                            .to_owned(),
                    });
                    break;
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(_) => {
                out.errors.push(YamlError {
                    pos,
                    message: "aliases (`*name`) are not supported; write the value out".to_owned(),
                });
                Node {
                    pos,
                    value: Value::Alias,
                }
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let mut plain = style == ScalarStyle::Plain;
                if let Some(tag) = tag {
                    match (tag.is_yaml_core_schema(), tag.suffix.as_str()) {
                        (true, "str") => plain = false,
                        (true, "int" | "bool" | "null" | "float") => plain = true,
                        _ => out.errors.push(unsupported_tag(pos, &tag.to_string())),
                    }
                }
                Node {
                    pos,
                    value: Value::Scalar { text, plain },
                }
            }
            Event::SequenceStart(_, tag) => {
                if let Some(tag) = tag
                    && !(tag.is_yaml_core_schema() && tag.suffix == "seq")
                {
                    out.errors.push(unsupported_tag(pos, &tag.to_string()));
                }
                stack.push(Frame::Seq {
                    start: pos,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(_, tag) => {
                if let Some(tag) = tag
                    && !(tag.is_yaml_core_schema() && tag.suffix == "map")
                {
                    out.errors.push(unsupported_tag(pos, &tag.to_string()));
                }
                stack.push(Frame::Map {
                    start: pos,
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { start, items }) => Node {
                    pos: items.first().map_or(start, |n| n.pos),
                    value: Value::Seq(items),
                },
                Some(Frame::Map { start, entries, .. }) => Node {
                    pos: entries.first().map_or(start, |(k, _)| k.pos),
                    value: Value::Map(entries),
                },
                None => continue,
            },
        };
        match stack.last_mut() {
            None => out.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    out
}

fn unsupported_tag(pos: Pos, tag: &str) -> YamlError {
    let tag: String = tag.chars().take(40).flat_map(char::escape_debug).collect();
    YamlError {
        pos,
        message: format!("the tag `{tag}` is not supported; remove it"),
    }
}

/// The strict fast reader. Every function returns `None` to mean "not in the subset: let the full
/// parser decide" — never "invalid".
mod fast {
    use std::borrow::Cow;

    use super::{Node, Pos, Value};

    /// One significant (non-blank, non-comment) line.
    #[derive(Clone, Copy)]
    struct Line {
        /// Byte index of the line's first byte.
        start: usize,
        /// Byte index of the line's end (its `\n` or the end of the text).
        end: usize,
        /// Leading spaces.
        indent: usize,
        /// 1-based line number.
        number: u32,
    }

    struct Reader<'a> {
        src: &'a str,
        bytes: &'a [u8],
        ascii: bool,
        /// Byte index of the next unread line.
        next: usize,
        /// Line number of the next unread line.
        number: u32,
        /// The next significant line, once looked at.
        peeked: Option<Line>,
    }

    /// Parse `src` if it is within the subset.
    pub(super) fn parse(src: &str) -> Option<Node<'_>> {
        if !acceptable_text(src) {
            return None;
        }
        let mut r = Reader {
            src,
            bytes: src.as_bytes(),
            ascii: src.is_ascii(),
            next: 0,
            number: 1,
            peeked: None,
        };
        let first = r.peek()?;
        if first.indent != 0 {
            return None;
        }
        let root = r.block(first)?;
        if r.peek().is_some() {
            return None;
        }
        Some(root)
    }

    /// Characters the subset allows anywhere: printable text and `\n`. No tabs, no CR, no BOM, no C1
    /// controls and no Unicode line separators, so line and column counting is unambiguous.
    fn acceptable_text(src: &str) -> bool {
        let clean_byte = |b: &u8| *b == b'\n' || (0x20..0x7f).contains(b) || *b >= 0x80;
        if !src.as_bytes().iter().all(clean_byte) {
            return false;
        }
        src.is_ascii()
            || src.chars().all(|c| {
                !matches!(
                    c,
                    '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                )
            })
    }

    /// Bytes that may not start a plain scalar or a key in the subset.
    fn is_indicator(b: u8) -> bool {
        matches!(
            b,
            b'-' | b'?'
                | b':'
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'&'
                | b'*'
                | b'!'
                | b'|'
                | b'>'
                | b'\''
                | b'"'
                | b'%'
                | b'@'
                | b'`'
        )
    }

    impl<'a> Reader<'a> {
        /// The next significant line, without consuming it. `None` at the end of the text, and also
        /// for document markers and directives (which are outside the subset, and make the callers
        /// stop early and fail their final checks).
        fn peek(&mut self) -> Option<Line> {
            if self.peeked.is_some() {
                return self.peeked;
            }
            while self.next < self.bytes.len() {
                let start = self.next;
                let end = self.bytes[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.bytes.len(), |i| start + i);
                let number = self.number;
                self.next = end + 1;
                self.number += 1;
                let indent = self.bytes[start..end].iter().take_while(|&&b| b == b' ').count();
                let content = &self.bytes[start + indent..end];
                if content.is_empty() || content[0] == b'#' {
                    continue;
                }
                let line = Line {
                    start,
                    end,
                    indent,
                    number,
                };
                if indent == 0
                    && (content.starts_with(b"---") || content.starts_with(b"...") || content[0] == b'%')
                {
                    // Leave it for the full parser: pretend there is more text the subset cannot read.
                    self.peeked = Some(Line {
                        indent: usize::MAX,
                        ..line
                    });
                    return self.peeked;
                }
                self.peeked = Some(line);
                return self.peeked;
            }
            None
        }

        fn consume(&mut self) {
            self.peeked = None;
        }

        fn pos(&self, line: Line, at: usize) -> Pos {
            let col = if self.ascii {
                at - line.start
            } else {
                self.src[line.start..at].chars().count()
            };
            (line.number, u32::try_from(col + 1).unwrap_or(u32::MAX))
        }

        fn is_dash(&self, line: Line) -> bool {
            let at = line.start + line.indent;
            self.bytes[at] == b'-' && (at + 1 == line.end || self.bytes[at + 1] == b' ')
        }

        /// A block collection whose first line is `first` (not yet consumed).
        fn block(&mut self, first: Line) -> Option<Node<'a>> {
            if first.indent == usize::MAX {
                return None;
            }
            if self.is_dash(first) {
                self.seq(first.indent, false)
            } else {
                self.map(first.indent, None)
            }
        }

        /// A block sequence at `indent`. An indentless sequence (a mapping value at the mapping's own
        /// indentation) ends at the first line that is not an entry.
        fn seq(&mut self, indent: usize, indentless: bool) -> Option<Node<'a>> {
            let mut items = Vec::new();
            while let Some(line) = self.peek() {
                if line.indent < indent {
                    break;
                }
                if line.indent > indent {
                    return None;
                }
                if !self.is_dash(line) {
                    if indentless {
                        break;
                    }
                    return None;
                }
                self.consume();
                let at = self.skip_spaces(line.start + indent + 1, line.end);
                if at == line.end || self.bytes[at] == b'#' || at == line.start + indent + 1 {
                    return None;
                }
                if self.bytes[at] == b'-' && (at + 1 == line.end || self.bytes[at + 1] == b' ') {
                    return None;
                }
                let item = if let Some((key, value_at)) = self.key(line, at) {
                    let col = at - line.start;
                    self.map(col, Some((line, key, value_at)))?
                } else {
                    let (node, after) = self.inline_value(line, at)?;
                    self.end_of_line(line, after)?;
                    node
                };
                items.push(item);
            }
            let pos = items.first().map(|n: &Node<'a>| n.pos)?;
            Some(Node {
                pos,
                value: Value::Seq(items),
            })
        }

        /// A block mapping at `indent`; `first` is an entry already begun on a consumed line (a
        /// mapping that starts after `- `).
        fn map(&mut self, indent: usize, first: Option<(Line, Node<'a>, usize)>) -> Option<Node<'a>> {
            let mut entries = Vec::new();
            if let Some((line, key, value_at)) = first {
                let value = self.entry_value(line, value_at, indent)?;
                entries.push((key, value));
            }
            while let Some(line) = self.peek() {
                if line.indent < indent {
                    break;
                }
                if line.indent > indent || self.is_dash(line) {
                    return None;
                }
                self.consume();
                let (key, value_at) = self.key(line, line.start + indent)?;
                let value = self.entry_value(line, value_at, indent)?;
                entries.push((key, value));
            }
            let pos = entries.first().map(|(k, _): &(Node<'a>, Node<'a>)| k.pos)?;
            Some(Node {
                pos,
                value: Value::Map(entries),
            })
        }

        /// The value of a mapping entry whose key ended before `at` on `line`.
        fn entry_value(&mut self, line: Line, at: usize, indent: usize) -> Option<Node<'a>> {
            let at = self.skip_spaces(at, line.end);
            if at == line.end || (self.bytes[at] == b'#' && self.bytes[at - 1] == b' ') {
                let next = self.peek()?;
                if next.indent == usize::MAX {
                    return None;
                }
                if next.indent > indent {
                    return self.block(next);
                }
                if next.indent == indent && self.is_dash(next) {
                    return self.seq(indent, true);
                }
                return None;
            }
            let (node, after) = self.inline_value(line, at)?;
            self.end_of_line(line, after)?;
            Some(node)
        }

        /// A plain key starting at `at`: its node and the index just after its `:`.
        fn key(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            if is_indicator(self.bytes[at]) {
                return None;
            }
            let mut i = at;
            while i < line.end {
                match self.bytes[i] {
                    b':' if i + 1 == line.end || self.bytes[i + 1] == b' ' => {
                        let text = self.src[at..i].trim_end_matches(' ');
                        if text.is_empty() || text.len() > 1000 {
                            return None;
                        }
                        let node = Node {
                            pos: self.pos(line, at),
                            value: plain(text),
                        };
                        return Some((node, i + 1));
                    }
                    b'#' if self.bytes[i - 1] == b' ' => return None,
                    _ => i += 1,
                }
            }
            None
        }

        /// A value that fits on the rest of the line: a flow collection, a quoted or a plain scalar.
        /// Returns the node and the index after it.
        fn inline_value(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            match self.bytes[at] {
                b'[' | b'{' => self.flow(line, at),
                b'"' | b'\'' => self.quoted(line, at),
                b if is_indicator(b) => None,
                _ => {
                    let mut end = at;
                    while end < line.end {
                        if self.bytes[end] == b'#' && self.bytes[end - 1] == b' ' {
                            break;
                        }
                        if self.bytes[end] == b':' && (end + 1 == line.end || self.bytes[end + 1] == b' ') {
                            return None;
                        }
                        end += 1;
                    }
                    let text = self.src[at..end].trim_end_matches(' ');
                    Some((
                        Node {
                            pos: self.pos(line, at),
                            value: plain(text),
                        },
                        at + text.len(),
                    ))
                }
            }
        }

        /// A quoted scalar closed on the same line; double-quoted ones without escapes.
        fn quoted(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            let quote = self.bytes[at];
            let mut i = at + 1;
            let mut doubled = false;
            loop {
                if i >= line.end {
                    return None;
                }
                match self.bytes[i] {
                    b'\\' if quote == b'"' => return None,
                    b'\'' if quote == b'\'' && i + 1 < line.end && self.bytes[i + 1] == b'\'' => {
                        doubled = true;
                        i += 2;
                    }
                    b if b == quote => break,
                    _ => i += 1,
                }
            }
            let inner = &self.src[at + 1..i];
            let text = if doubled {
                Cow::Owned(inner.replace("''", "'"))
            } else {
                Cow::Borrowed(inner)
            };
            Some((
                Node {
                    pos: self.pos(line, at),
                    value: Value::Scalar { text, plain: false },
                },
                i + 1,
            ))
        }

        /// A flow collection closed on the same line.
        fn flow(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            let is_map = self.bytes[at] == b'{';
            let close = if is_map { b'}' } else { b']' };
            let mut i = self.skip_spaces(at + 1, line.end);
            let mut items = Vec::new();
            let mut entries = Vec::new();
            if i < line.end && self.bytes[i] == close {
                i += 1;
            } else {
                loop {
                    if is_map {
                        let (key, after) = self.flow_key(line, i)?;
                        let v = self.skip_spaces(after, line.end);
                        let (value, after) = self.flow_item(line, v)?;
                        entries.push((key, value));
                        i = after;
                    } else {
                        let (item, after) = self.flow_item(line, i)?;
                        items.push(item);
                        i = after;
                    }
                    i = self.skip_spaces(i, line.end);
                    if i >= line.end {
                        return None;
                    }
                    if self.bytes[i] == close {
                        i += 1;
                        break;
                    }
                    if self.bytes[i] != b',' {
                        return None;
                    }
                    i = self.skip_spaces(i + 1, line.end);
                    if i >= line.end || self.bytes[i] == close {
                        return None;
                    }
                }
            }
            let start = self.pos(line, at);
            let node = if is_map {
                Node {
                    pos: entries
                        .first()
                        .map_or(start, |(k, _): &(Node<'a>, Node<'a>)| k.pos),
                    value: Value::Map(entries),
                }
            } else {
                Node {
                    pos: items.first().map_or(start, |n: &Node<'a>| n.pos),
                    value: Value::Seq(items),
                }
            };
            Some((node, i))
        }

        /// A plain key in a flow mapping, ended by `: `. Returns the index after the `:`.
        fn flow_key(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            if at >= line.end || is_indicator(self.bytes[at]) {
                return None;
            }
            let mut i = at;
            while i < line.end {
                match self.bytes[i] {
                    b':' => {
                        if i + 1 >= line.end || self.bytes[i + 1] != b' ' {
                            return None;
                        }
                        let text = self.src[at..i].trim_end_matches(' ');
                        return Some((
                            Node {
                                pos: self.pos(line, at),
                                value: plain(text),
                            },
                            i + 1,
                        ));
                    }
                    b',' | b'[' | b']' | b'{' | b'}' | b'#' => return None,
                    _ => i += 1,
                }
            }
            None
        }

        /// One entry of a flow collection.
        fn flow_item(&self, line: Line, at: usize) -> Option<(Node<'a>, usize)> {
            if at >= line.end {
                return None;
            }
            match self.bytes[at] {
                b'[' | b'{' => self.flow(line, at),
                b'"' | b'\'' => self.quoted(line, at),
                b if is_indicator(b) => None,
                _ => {
                    let mut end = at;
                    while end < line.end && !matches!(self.bytes[end], b',' | b'[' | b']' | b'{' | b'}') {
                        if matches!(self.bytes[end], b':' | b'#') {
                            return None;
                        }
                        end += 1;
                    }
                    let text = self.src[at..end].trim_end_matches(' ');
                    Some((
                        Node {
                            pos: self.pos(line, at),
                            value: plain(text),
                        },
                        at + text.len(),
                    ))
                }
            }
        }

        /// After a value: only spaces and a comment may follow.
        fn end_of_line(&self, line: Line, at: usize) -> Option<()> {
            let rest = self.skip_spaces(at, line.end);
            if rest == line.end || (self.bytes[rest] == b'#' && rest > at) {
                Some(())
            } else {
                None
            }
        }

        fn skip_spaces(&self, mut at: usize, end: usize) -> usize {
            while at < end && self.bytes[at] == b' ' {
                at += 1;
            }
            at
        }
    }

    fn plain(text: &str) -> Value<'_> {
        Value::Scalar {
            text: Cow::Borrowed(text),
            plain: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs in the fast reader's subset.
    const ACCEPTED: &[&str] = &[
        "a: 1\n",
        "# c\n\nwan: { interfaces: [wan0, \"lan 0\"] }\nlan:\n  interfaces:\n    - lan0\n",
        "mappings:\n  - name: web   # c\n    port: '8080'\n    x: [ ]\n  -   name: x\n      allow_from:\n      - a\n      - b\n",
        "mappings:\n- name: a\n  port: 1\n- name: b\n  port: 2\nhairpin: true\n",
        "a: 'it''s'\nb: \"q\"\nc: x#y\nd: a,b [c] {d}\n",
        "a:\n  b:\n    c: d\n  e: f\ng: h\n",
        "a: {b: [1, [2, 3], {c: d}], e: 'f'}\n",
        "a: {}\nb: []\n",
        "desc: café ünïcode\nx: [é, ü]\n",
        "a: b\n  # indented comment\nc: d\n",
        "k : v\n",
        "a: http://x/y\n",
        "- a\n- b\n",
        "- [a, b]\n- {c: d}\n",
        "a: b #c\nd: 'e' #f\ng: [h] # i\n",
        "a: 2001:db8::1\nb: x:y\n",
        "mappings:\n  - name: a\n    allow_from:\n      - 1.2.3.4\n    to: b\n\n  - name: c\n",
        "a:\n- b\n- c\nd: e\n",
    ];

    /// Inputs outside the subset: the fast reader must decline them and leave them to the full parser.
    const DECLINED: &[&str] = &[
        "a: b\n  c\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  text\n",
        "---\na: 1\n",
        "a: 1\n---\nb: 2\n",
        "a:\tb\n",
        "a: \"x\\ny\"\n",
        "a: [1,\n 2]\n",
        "a:\n",
        "a: b: c\n",
        "  a: 1\n",
        "a: [1, 2,]\n",
        "a: {b:c}\n",
        "a: -1\n",
        "- - a\n",
        "a:\n - b\n c: d\n",
        "a: 1\r\nb: 2\r\n",
        "? a\n: b\n",
        "\"a\": b\n",
        "a: [x:y]\n",
        "a: 'unterminated\n",
        "a: 'e'#f\n",
        "a: b\n c: d\n",
        "- a\n  - b\n",
        "a: [b] c\n",
        "a: \"b\" c\n",
        "",
        "# only a comment\n",
        "a: b\n...\n",
        "a: \u{2028}\n",
        "a: -\n",
    ];

    #[test]
    fn fast_reader_agrees_with_the_full_parser() {
        for sample in ACCEPTED.iter().chain(DECLINED) {
            if let Some(fast) = fast::parse(sample) {
                let full = parse_full(sample);
                assert!(
                    full.errors.is_empty(),
                    "fast reader accepted invalid YAML {sample:?}: {:?}",
                    full.errors
                );
                assert_eq!(Some(fast), full.root, "readers disagree on {sample:?}");
            }
        }
    }

    #[test]
    fn fast_reader_takes_ordinary_configs() {
        for sample in ACCEPTED {
            assert!(fast::parse(sample).is_some(), "fast reader declined {sample:?}");
        }
        let example = include_str!("../../../examples/home-router.yaml");
        assert!(
            fast::parse(example).is_some(),
            "fast reader declined examples/home-router.yaml"
        );
    }

    #[test]
    fn fast_reader_declines_what_it_does_not_know() {
        for sample in DECLINED {
            assert!(fast::parse(sample).is_none(), "fast reader accepted {sample:?}");
        }
    }

    /// Mutate the example file thousands of times (delete, insert or replace one character, chosen
    /// from the characters YAML treats specially) and hold the readers to the same result whenever
    /// the fast one accepts the text. `MUTATION_ROUNDS=200000` (in release) searches harder.
    #[test]
    fn fast_reader_agrees_on_mutated_configs() {
        const VARIED: &str = concat!(
            "version: 1\n",
            "wan: { interfaces: [wan0, 'it''s', \"q\"] }\n",
            "lan:\n",
            "  interfaces:\n",
            "  - lan0\n",
            "  - \"lan 1\"\n",
            "mappings:\n",
            "- name: a\n",
            "  port: '80'\n",
            "  allow_from: [1.2.3.4/32, {x: y}, [z]]\n",
            "  description: x#y a,b [c] {d} http://x\n",
            "-   name: b\n",
            "    to: 2001:db8::1\n",
            "    nested:\n",
            "      deeper:\n",
            "        - 1\n",
            "        - [a, b]\n",
            "        -  {}\n",
            "key : value   # comment\n",
        );
        for base in [include_str!("../../../examples/home-router.yaml"), VARIED] {
            mutate_and_compare(base);
        }
    }

    fn mutate_and_compare(base: &str) {
        let alphabet: Vec<char> = " \n-:#'\"[]{},&*!|>?%@`\\\ta0é~".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let chars: Vec<char> = base.chars().collect();
        let (mut accepted, mut tried) = (0, 0);
        let rounds: usize = std::env::var("MUTATION_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        for _ in 0..rounds {
            let mut text = chars.clone();
            for _ in 0..=next(3) {
                let at = next(text.len());
                match next(3) {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, alphabet[next(alphabet.len())]),
                    _ => text[at] = alphabet[next(alphabet.len())],
                }
            }
            let text: String = text.into_iter().collect();
            tried += 1;
            if let Some(fast) = fast::parse(&text) {
                accepted += 1;
                let full = parse_full(&text);
                assert!(
                    full.errors.is_empty(),
                    "fast reader accepted invalid YAML {text:?}: {:?}",
                    full.errors
                );
                assert_eq!(Some(fast), full.root, "readers disagree on {text:?}");
            }
        }
        eprintln!("fast reader accepted {accepted} of {tried}");
        assert!(
            accepted > tried / 4,
            "the fast reader took only {accepted} of {tried} mutated files"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let parsed = parse("a: [1, 2\nb: 3\n");
        assert!(parsed.root.is_none());
        assert_eq!(parsed.errors.len(), 1);
        assert!(
            parsed.errors[0].message.starts_with("YAML syntax error: "),
            "{:?}",
            parsed.errors
        );
    }

    #[test]
    fn tags_and_aliases_are_reported() {
        let parsed = parse("a: &x 1\nb: *x\nc: !foo 2\nd: !!str 3\n");
        let messages: Vec<_> = parsed
            .errors
            .iter()
            .map(|e| (e.pos, e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            vec![
                ((2, 4), "aliases (`*name`) are not supported; write the value out"),
                ((3, 4), "the tag `!foo` is not supported; remove it"),
            ]
        );
    }
}
