//! YAML text → a small tree in which every node knows its line and column (1-based, columns counted
//! in characters). Nothing here knows what a port mapping is; `load.rs` walks the tree.
//!
//! There is one reader: the maintained YAML 1.2 event parser `saphyr-parser`, which also reports
//! syntax errors with their positions. (A second, hand-written fast reader for a plain subset used to
//! sit in front of it; it disagreed with the parser on which texts are valid and overflowed the stack
//! on deeply nested brackets, so it is gone.) This module must not interpret values (no booleans, no
//! ports) and must not do I/O.

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

/// Read `text` with the YAML 1.2 event parser.
pub(crate) fn parse(text: &str) -> Parsed<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
