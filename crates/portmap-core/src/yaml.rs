//! YAML text → a small tree in which every node knows its line and column (1-based, columns counted
//! in characters). Nothing here knows what a port mapping is; `load.rs` walks the tree.
//!
//! There is one reader: the maintained YAML 1.2 event parser `saphyr-parser`, which also reports
//! syntax errors with their positions. (A second, hand-written fast reader for a plain subset used to
//! sit in front of it; it disagreed with the parser on which texts are valid and overflowed the stack
//! on deeply nested brackets, so it is gone.)
//!
//! Scalars are typed as the YAML 1.2 core schema types them — `010` is the number 10, `true` a
//! boolean, `~` null, `"010"` and `!!str 010` strings — because that is what every other tool
//! reading the file sees; core tags are honoured, other tags refused. Reading is bounded: nesting
//! deeper than [`MAX_DEPTH`], more than [`MAX_NODES`] values, or more than [`MAX_ERRORS`] problems
//! stop it or are only counted. The items of the lists one level under the root mapping are
//! handed to the caller as soon as each is read ([`parse_streaming`]), so that the caller need
//! not hold a long list whole. This module must not decide what a value means to portmap (no
//! ports, no names) and must not do I/O.

use std::borrow::Cow;

use std::cell::Cell;

use saphyr_parser::{BufferedInput, Event, Marker, Parser, ScalarStyle, Span, Tag};

use crate::diagnostic::{MAX_DEPTH, MAX_ERRORS, MAX_LOOKAHEAD, MAX_NODES, shown, shown_size};

/// A (line, column) position, both 1-based; the column counts characters.
pub(crate) type Pos = (u32, u32);

/// One YAML node and where it starts. A collection starts where its first entry starts (an empty
/// flow collection at its bracket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A scalar, with the type YAML 1.2 gives it.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, entries in file order (duplicates kept; the walker reports them).
    Map(Vec<(Node, Node)>),
    /// A value already reported as unusable (an alias, a tag that does not fit the text); the
    /// walker treats it as missing without reporting it again.
    Reported,
}

/// A scalar: its text (after quotes and escapes are resolved) and its type under the YAML 1.2 core
/// schema — what every other YAML tool reading the file will see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub text: Box<str>,
    pub kind: Kind,
    pub typed_by: TypedBy,
}

/// The type of a scalar under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `null`, `Null`, `NULL`, `~` or nothing at all.
    Null,
    /// `true`/`True`/`TRUE`, `false`/`False`/`FALSE`.
    Bool(bool),
    /// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`; see [`int_value`].
    Int,
    /// `1.5`, `1e3`, `.inf`, `.nan`, …; see [`float_value`].
    Float,
    /// Everything else, and every quoted or block scalar.
    Str,
}

/// What decided a scalar's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypedBy {
    /// A plain (unquoted) scalar, typed by its text.
    Plain,
    /// A quoted or block (`|`, `>`) scalar: always a string.
    Quoted,
    /// A tag, e.g. `!!str` or `!!int`.
    Tag(ScalarTag),
}

/// The tags a scalar may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarTag {
    /// The non-specific tag `!`.
    NonSpecific,
    Str,
    Null,
    Bool,
    Int,
    Float,
}

impl ScalarTag {
    /// The tag as messages show it.
    pub fn name(self) -> &'static str {
        match self {
            ScalarTag::NonSpecific => "!",
            ScalarTag::Str => "!!str",
            ScalarTag::Null => "!!null",
            ScalarTag::Bool => "!!bool",
            ScalarTag::Int => "!!int",
            ScalarTag::Float => "!!float",
        }
    }
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The result of reading a YAML text.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The document's root, `None` when the text holds no document (or a syntax error or a limit
    /// stopped reading).
    pub root: Option<Node>,
    /// Problems found, in file order, at most [`MAX_ERRORS`] of them. A syntax error or a limit
    /// ends the list.
    pub errors: Vec<YamlError>,
    /// Problems found beyond the first [`MAX_ERRORS`].
    pub more_errors: usize,
}

impl Parsed {
    fn error(&mut self, pos: Pos, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(YamlError { pos, message });
        } else {
            self.more_errors += 1;
        }
    }

    /// Stop reading: `message` is the last problem and there is no tree.
    fn stop(mut self, pos: Pos, message: String) -> Self {
        self.root = None;
        self.error(pos, message);
        self
    }
}

fn pos_of(span: Span) -> Pos {
    pos_of_marker(span.start)
}

fn pos_of_marker(mark: Marker) -> Pos {
    let line = u32::try_from(mark.line()).unwrap_or(u32::MAX);
    let col = u32::try_from(mark.col().saturating_add(1)).unwrap_or(u32::MAX);
    (line, col)
}

/// A collection under construction.
enum Frame {
    Seq {
        start: Pos,
        /// Where its first item starts (it may have been handed to the caller, see [`Items`]).
        first: Option<Pos>,
        /// Items seen so far, kept or handed over.
        seen: usize,
        items: Vec<Node>,
        /// Its tag was refused: the whole collection becomes [`Value::Reported`].
        refused: bool,
    },
    Map {
        start: Pos,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        refused: bool,
    },
}

/// What [`parse_streaming`] hands its caller: an item of a sequence that is the value of an entry
/// of the root mapping, as soon as the item is complete. The arguments are the root's entries
/// before this one, this entry's key, the item's index in the sequence, and the item. It returns
/// the item to keep it in the tree, or `None` when it used it up: the sequence in the tree then
/// holds only the items kept (its position is still that of its first item).
pub(crate) type Items<'s> = dyn FnMut(&[(Node, Node)], &Node, usize, Node) -> Option<Node> + 's;

/// Read `text` with the YAML 1.2 event parser. The events are consumed one at a time with an
/// explicit stack (no recursion), so nesting is checked as it happens: the collection that would
/// pass [`MAX_DEPTH`] stops reading with its position, and so does the value that would pass
/// [`MAX_NODES`]. Aliases are refused, never expanded, so no text can grow while it is read.
///
/// The parser's scanner keeps every token of a flow collection (`[…]`, `{…}`) in memory until the
/// collection ends (it could turn out to be a key), about 125 bytes per character; so it is fed
/// the text through a counter that lets it read at most [`MAX_LOOKAHEAD`] characters past the
/// last event, and a text that needs more is refused where the long part starts.
///
/// The items of the sequences one level under the root mapping are handed to `items` as they are
/// read, so that a long list need not be held whole. Items of a sequence whose tag was refused,
/// or under a root whose tag was refused, are not handed over. When reading stops (a syntax error
/// or a limit: `root` is `None`), the items handed over so far are part of a text that was
/// refused whole; the caller must forget what it made of them.
pub(crate) fn parse_streaming(text: &str, items: &mut Items<'_>) -> Parsed {
    parse_within(text, Limits::DEFAULT, items)
}

/// [`parse_streaming`] keeping every item: the whole tree.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Parsed {
    parse_streaming(text, &mut |_, _, _, item| Some(item))
}

/// How much [`parse_streaming`] reads; smaller in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    depth: usize,
    nodes: usize,
    lookahead: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        depth: MAX_DEPTH,
        nodes: MAX_NODES,
        lookahead: MAX_LOOKAHEAD,
    };
}

fn parse_within(text: &str, limits: Limits, items: &mut Items<'_>) -> Parsed {
    let stop_at = Cell::new(limits.lookahead);
    // The end of the last event, and where it was when the scanner ran out of lookahead.
    let last_end: Cell<Pos> = Cell::new((1, 1));
    let cut: Cell<Option<Pos>> = Cell::new(None);
    let mut consumed = 0usize;
    let mut chars = text.chars();
    let budgeted = std::iter::from_fn(|| {
        if consumed >= stop_at.get() {
            if cut.get().is_none() {
                cut.set(Some(last_end.get()));
            }
            return None;
        }
        consumed += 1;
        chars.next()
    });
    let mut parser = Parser::new(BufferedInput::new(budgeted));
    let seen = |span: Span| {
        stop_at.set(span.end.index().saturating_add(limits.lookahead));
        last_end.set(pos_of_marker(span.end));
    };
    let out = read_events(&mut parser, limits, &seen, &|| cut.get().is_some(), items);
    match cut.get() {
        None => out,
        Some(pos) => out.stop(
            pos,
            format!(
                "the value or flow collection (`[…]`, `{{…}}`) that follows is longer than {}, more than \
                 portmap reads at once; write long lists as block lists (one `- item` per line)",
                shown_size(limits.lookahead)
            ),
        ),
    }
}

/// The events of `parser` → the tree. `seen` is told the span of every event; once `was_cut` (the
/// input was cut short) the tree is incomplete and a syntax error only its consequence, so reading
/// stops and the caller reports the cut.
fn read_events<I: saphyr_parser::Input>(
    parser: &mut Parser<'_, I>,
    limits: Limits,
    seen: &dyn Fn(Span),
    was_cut: &dyn Fn() -> bool,
    hand_over: &mut Items<'_>,
) -> Parsed {
    let mut out = Parsed::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0usize;
    let mut nodes = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span) = match event {
            _ if was_cut() => return out,
            Ok(e) => {
                seen(e.1);
                e
            }
            Err(e) => {
                let (line, col) = pos_of_marker(*e.marker());
                // The scanner looks ahead through flow brackets and has its own limit (255 levels),
                // which it can meet before the events reach ours: the same problem, in our words.
                let message = if e.info() == "recursion limit exceeded" {
                    too_deep()
                } else {
                    format!("YAML syntax error: {}", e.info())
                };
                return out.stop((line, col), message);
            }
        };
        let pos = pos_of(span);
        if matches!(
            event,
            Event::Scalar(..) | Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) {
            nodes += 1;
            if nodes > limits.nodes {
                return out.stop(
                    pos,
                    format!(
                        "the configuration holds more than {} values (keys, scalars, lists and mappings), \
                         more than portmap reads",
                        limits.nodes
                    ),
                );
            }
        }
        let node = match event {
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    out.error(
                        pos,
                        "only one YAML document is allowed; remove the `---` and what follows it".to_owned(),
                    );
                    break;
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::Alias(_) => {
                out.error(
                    pos,
                    "aliases (`*name`) are not supported; write the value out".to_owned(),
                );
                Node {
                    pos,
                    value: Value::Reported,
                }
            }
            Event::Scalar(text, style, _anchor, tag) => {
                let value = match scalar(text, style, tag.as_deref()) {
                    Ok(s) => Value::Scalar(s),
                    Err(message) => {
                        out.error(pos, message);
                        Value::Reported
                    }
                };
                Node { pos, value }
            }
            Event::SequenceStart(_, ref tag) | Event::MappingStart(_, ref tag) => {
                let is_map = matches!(event, Event::MappingStart(..));
                if stack.len() >= limits.depth {
                    return out.stop(pos, too_deep());
                }
                let problem = tag.as_deref().and_then(|tag| collection_tag_problem(tag, is_map));
                let refused = problem.is_some();
                if let Some(message) = problem {
                    out.error(pos, message);
                }
                stack.push(if is_map {
                    Frame::Map {
                        start: pos,
                        entries: Vec::new(),
                        key: None,
                        refused,
                    }
                } else {
                    Frame::Seq {
                        start: pos,
                        first: None,
                        seen: 0,
                        items: Vec::new(),
                        refused,
                    }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    first,
                    mut items,
                    refused,
                    ..
                }) => Node {
                    pos: first.unwrap_or(start),
                    value: if refused {
                        Value::Reported
                    } else {
                        // Growth leaves up to half a list unused; a finished one keeps what it holds.
                        items.shrink_to_fit();
                        Value::Seq(items)
                    },
                },
                Some(Frame::Map {
                    start,
                    mut entries,
                    refused,
                    ..
                }) => Node {
                    pos: entries.first().map_or(start, |(k, _)| k.pos),
                    value: if refused {
                        Value::Reported
                    } else {
                        entries.shrink_to_fit();
                        Value::Map(entries)
                    },
                },
                None => continue,
            },
        };
        let (outer, last): (&[Frame], _) = match stack.len() {
            0 => (&[], None),
            n => {
                let (outer, last) = stack.split_at_mut(n - 1);
                (outer, last.first_mut())
            }
        };
        match last {
            None => out.root = Some(node),
            Some(Frame::Seq {
                first,
                seen,
                items,
                refused,
                ..
            }) => {
                first.get_or_insert(node.pos);
                let index = *seen;
                *seen += 1;
                let kept = match outer {
                    // An item of a sequence that is the value of an entry of the root mapping.
                    [
                        Frame::Map {
                            entries,
                            key: Some(key),
                            refused: false,
                            ..
                        },
                    ] if !*refused => hand_over(entries, key, index, node),
                    _ => Some(node),
                };
                if let Some(node) = kept {
                    items.push(node);
                }
            }
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    out
}

fn too_deep() -> String {
    format!(
        "the configuration nests lists and mappings more than {MAX_DEPTH} deep; a portmap configuration \
         needs 4 levels (mappings → entry → allow_from → address)"
    )
}

/// What a tag means for this crate.
enum TagMeaning {
    /// A core-schema tag (`!!str`, `!!int`, …), by its suffix.
    Core(&'static str),
    /// The non-specific tag `!`: a scalar is a string, a collection what it looks like.
    NonSpecific,
    /// Anything else, as it is shown in messages.
    Unsupported(String),
}

const CORE_PREFIX: &str = "tag:yaml.org,2002:";

fn tag_meaning(tag: &Tag) -> TagMeaning {
    if tag.handle.is_empty() && tag.suffix == "!" {
        return TagMeaning::NonSpecific;
    }
    // `!!int` (with the standard `!!`) and the verbatim `!<tag:yaml.org,2002:int>` alike.
    let full = format!("{}{}", tag.handle, tag.suffix);
    if let Some(suffix) = full.strip_prefix(CORE_PREFIX) {
        for known in ["str", "int", "float", "bool", "null", "seq", "map"] {
            if suffix == known {
                return TagMeaning::Core(known);
            }
        }
        return TagMeaning::Unsupported(format!("!!{suffix}"));
    }
    TagMeaning::Unsupported(tag.to_string())
}

fn unsupported_tag(tag: &str) -> String {
    format!("the tag `{}` is not supported; remove it", shown(tag))
}

/// Why `tag` cannot stand on a list (`is_map` false) or a mapping, if it cannot.
fn collection_tag_problem(tag: &Tag, is_map: bool) -> Option<String> {
    let what = if is_map { "a mapping" } else { "a list" };
    match tag_meaning(tag) {
        TagMeaning::NonSpecific | TagMeaning::Core("map") if is_map => None,
        TagMeaning::NonSpecific | TagMeaning::Core("seq") if !is_map => None,
        TagMeaning::Core(suffix) => Some(format!("the tag `!!{suffix}` cannot stand on {what}; remove it")),
        TagMeaning::Unsupported(tag) => Some(unsupported_tag(&tag)),
        TagMeaning::NonSpecific => None,
    }
}

/// A scalar event → a typed [`Scalar`], or the message saying why its tag does not fit.
fn scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&Tag>) -> Result<Scalar, String> {
    let text: Box<str> = text.into_owned().into_boxed_str();
    let Some(tag) = tag else {
        let (kind, typed_by) = if style == ScalarStyle::Plain {
            (plain_kind(&text), TypedBy::Plain)
        } else {
            (Kind::Str, TypedBy::Quoted)
        };
        return Ok(Scalar { text, kind, typed_by });
    };
    let (kind, tag_name) = match tag_meaning(tag) {
        TagMeaning::NonSpecific => (Kind::Str, ScalarTag::NonSpecific),
        TagMeaning::Core("str") => (Kind::Str, ScalarTag::Str),
        TagMeaning::Core("null") => (Kind::Null, ScalarTag::Null),
        TagMeaning::Core("bool") => (Kind::Bool(is_bool(&text).unwrap_or(false)), ScalarTag::Bool),
        TagMeaning::Core("int") => (Kind::Int, ScalarTag::Int),
        TagMeaning::Core("float") => (Kind::Float, ScalarTag::Float),
        TagMeaning::Core(suffix @ ("seq" | "map")) => {
            let what = if suffix == "seq" { "a list" } else { "a mapping" };
            return Err(format!(
                "the tag `!!{suffix}` is for {what}, not for the single value `{}`; remove it",
                shown(&text)
            ));
        }
        TagMeaning::Core(other) => return Err(unsupported_tag(&format!("!!{other}"))),
        TagMeaning::Unsupported(tag) => return Err(unsupported_tag(&tag)),
    };
    let fits = match kind {
        Kind::Str => true,
        Kind::Null => is_null(&text),
        Kind::Bool(_) => is_bool(&text).is_some(),
        Kind::Int => is_int(&text),
        // The core schema's float pattern takes decimal integers too: `!!float 80` is 80.0.
        Kind::Float => is_float(&text),
    };
    if !fits {
        let what = match kind {
            Kind::Null => "null (`null`, `~` or nothing)",
            Kind::Bool(_) => "a boolean (true or false)",
            Kind::Int => "an integer (such as 80, 0o17 or 0x1F)",
            Kind::Float => "a number (such as 1.5, 1e3 or .inf)",
            Kind::Str => "a string",
        };
        return Err(format!(
            "`{}` is not {what}, as its tag `{}` says; fix the value or remove the tag",
            shown(&text),
            tag_name.name()
        ));
    }
    Ok(Scalar {
        text,
        kind,
        typed_by: TypedBy::Tag(tag_name),
    })
}

/// The type YAML 1.2's core schema gives a plain scalar.
fn plain_kind(text: &str) -> Kind {
    if is_null(text) {
        Kind::Null
    } else if let Some(b) = is_bool(text) {
        Kind::Bool(b)
    } else if is_int(text) {
        Kind::Int
    } else if is_float(text) {
        Kind::Float
    } else {
        Kind::Str
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn is_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn all_digits(text: &str, radix: u32) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_digit(radix))
}

/// `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+`.
fn is_int(text: &str) -> bool {
    if let Some(octal) = text.strip_prefix("0o") {
        return all_digits(octal, 8);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return all_digits(hex, 16);
    }
    all_digits(text.strip_prefix(['-', '+']).unwrap_or(text), 10)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?\.(inf|Inf|INF)`, `\.(nan|NaN|NAN)`.
fn is_float(text: &str) -> bool {
    if matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => all_digits(fraction, 10),
        Some((whole, fraction)) => all_digits(whole, 10) && (fraction.is_empty() || all_digits(fraction, 10)),
        None => all_digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| all_digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    mantissa_ok && exponent_ok
}

/// The value of an integer scalar (`Kind::Int`), `None` when it does not fit in an `i64`.
pub(crate) fn int_value(text: &str) -> Option<i64> {
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok();
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    text.parse().ok()
}

/// The value of a float scalar (`Kind::Float`).
pub(crate) fn float_value(text: &str) -> f64 {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = match unsigned {
        ".inf" | ".Inf" | ".INF" => f64::INFINITY,
        ".nan" | ".NaN" | ".NAN" => f64::NAN,
        // Rust reads every form of the core schema but `1.` followed by an exponent.
        _ => unsigned
            .replacen(".e", ".0e", 1)
            .replacen(".E", ".0E", 1)
            .parse()
            .unwrap_or(f64::NAN),
    };
    if negative { -magnitude } else { magnitude }
}

/// What YAML reads a non-string scalar as, for messages: `the number 10`, `the boolean true`,
/// `null (no value)`.
pub(crate) fn reading(scalar: &Scalar) -> String {
    match scalar.kind {
        Kind::Null => "null (no value)".to_owned(),
        Kind::Bool(b) => format!("the boolean {b}"),
        Kind::Int => match int_value(&scalar.text) {
            Some(n) => format!("the number {n}"),
            None => format!("the number {}", shown(&scalar.text)),
        },
        Kind::Float => {
            let f = float_value(&scalar.text);
            if f.is_nan() {
                "the number NaN (not a number)".to_owned()
            } else if f.is_infinite() {
                format!("the number {}infinity", if f < 0.0 { "-" } else { "" })
            } else if f != 0.0 && !(1e-4..1e16).contains(&f.abs()) {
                format!("the number {f:e}")
            } else {
                format!("the number {f:?}")
            }
        }
        Kind::Str => format!("the string \"{}\"", shown(&scalar.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors of a text refused whole (no tree), with their positions.
    fn refusal(parsed: &Parsed) -> Vec<(Pos, &str)> {
        assert!(parsed.root.is_none(), "{:?}", parsed.root);
        parsed
            .errors
            .iter()
            .map(|e| (e.pos, e.message.as_str()))
            .collect()
    }

    fn within(text: &str, limits: Limits) -> Parsed {
        parse_within(text, limits, &mut |_, _, _, item| Some(item))
    }

    fn messages(text: &str) -> Vec<(Pos, String)> {
        parse(text)
            .errors
            .into_iter()
            .map(|e| (e.pos, e.message))
            .collect()
    }

    fn root_scalar(text: &str) -> Scalar {
        match parse(text).root {
            Some(Node {
                value: Value::Scalar(s),
                ..
            }) => s,
            other => panic!("{text:?}: expected a scalar, got {other:?}"),
        }
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
        assert_eq!(
            messages("a: &x 1\nb: *x\nc: !foo 2\nd: !!str 3\n"),
            vec![
                (
                    (2, 4),
                    "aliases (`*name`) are not supported; write the value out".to_owned()
                ),
                ((3, 4), "the tag `!foo` is not supported; remove it".to_owned()),
            ]
        );
    }

    #[test]
    fn plain_scalars_are_typed_as_yaml_1_2_core_schema() {
        let cases: &[(&str, Kind)] = &[
            ("", Kind::Null),
            ("~", Kind::Null),
            ("null", Kind::Null),
            ("Null", Kind::Null),
            ("NULL", Kind::Null),
            ("nULL", Kind::Str),
            ("true", Kind::Bool(true)),
            ("True", Kind::Bool(true)),
            ("TRUE", Kind::Bool(true)),
            ("false", Kind::Bool(false)),
            ("FALSE", Kind::Bool(false)),
            ("tRUE", Kind::Str),
            ("yes", Kind::Str),
            ("on", Kind::Str),
            ("y", Kind::Str),
            ("010", Kind::Int),
            ("-5", Kind::Int),
            ("+80", Kind::Int),
            ("0o17", Kind::Int),
            ("0x1F", Kind::Int),
            ("0x", Kind::Str),
            ("0o8", Kind::Str),
            ("0b101", Kind::Str),
            ("1_000", Kind::Str),
            ("1.5", Kind::Float),
            ("1.", Kind::Float),
            (".5", Kind::Float),
            ("1e3", Kind::Float),
            ("-1.5E-3", Kind::Float),
            ("1.e3", Kind::Float),
            (".inf", Kind::Float),
            ("-.Inf", Kind::Float),
            (".NaN", Kind::Float),
            ("-.nan", Kind::Str),
            ("e3", Kind::Str),
            (".", Kind::Str),
            ("1.2.3", Kind::Str),
            ("192.168.1.66", Kind::Str),
            ("6000-6010", Kind::Str),
            ("2001:db8::1", Kind::Str),
            ("eth0", Kind::Str),
        ];
        for &(text, kind) in cases {
            assert_eq!(plain_kind(text), kind, "{text:?}");
        }
        assert_eq!(int_value("010"), Some(10));
        assert_eq!(int_value("0o17"), Some(15));
        assert_eq!(int_value("0x1F"), Some(31));
        assert_eq!(int_value("+80"), Some(80));
        assert_eq!(int_value("99999999999999999999"), None);
        assert!((float_value("1.e3") - 1000.0).abs() < f64::EPSILON);
        assert!(float_value("-.inf").is_infinite());
        assert!(float_value(".nan").is_nan());
    }

    #[test]
    fn quotes_and_tags_decide_the_type() {
        let s = root_scalar("'010'");
        assert_eq!((s.kind, s.typed_by), (Kind::Str, TypedBy::Quoted));
        let s = root_scalar("|\n  010\n");
        assert_eq!((s.kind, s.typed_by), (Kind::Str, TypedBy::Quoted));
        let s = root_scalar("!!str 010");
        assert_eq!((s.kind, s.typed_by), (Kind::Str, TypedBy::Tag(ScalarTag::Str)));
        let s = root_scalar("! 010");
        assert_eq!(
            (s.kind, s.typed_by),
            (Kind::Str, TypedBy::Tag(ScalarTag::NonSpecific))
        );
        let s = root_scalar("!!int \"80\"");
        assert_eq!((s.kind, s.typed_by), (Kind::Int, TypedBy::Tag(ScalarTag::Int)));
        let s = root_scalar("!<tag:yaml.org,2002:int> 0x50");
        assert_eq!((s.kind, s.typed_by), (Kind::Int, TypedBy::Tag(ScalarTag::Int)));
        let s = root_scalar("!!float 80");
        assert_eq!(s.kind, Kind::Float);
        let s = root_scalar("!!bool 'false'");
        assert_eq!(s.kind, Kind::Bool(false));
        let s = root_scalar("!!null ''");
        assert_eq!(s.kind, Kind::Null);
        assert!(messages("a: !!seq [x]\nb: !!map {x: y}\nc: ! [x]\n").is_empty());
    }

    #[test]
    fn tags_that_do_not_fit_are_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "!!int abc",
                "`abc` is not an integer (such as 80, 0o17 or 0x1F), as its tag `!!int` says; fix the value or \
                 remove the tag",
            ),
            (
                "!!bool yes",
                "`yes` is not a boolean (true or false), as its tag `!!bool` says; fix the value or remove the tag",
            ),
            (
                "!!null x",
                "`x` is not null (`null`, `~` or nothing), as its tag `!!null` says; fix the value or remove the tag",
            ),
            (
                "!!float 0x10",
                "`0x10` is not a number (such as 1.5, 1e3 or .inf), as its tag `!!float` says; fix the value or \
                 remove the tag",
            ),
            (
                "!!seq x",
                "the tag `!!seq` is for a list, not for the single value `x`; remove it",
            ),
            ("!!str [x]", "the tag `!!str` cannot stand on a list; remove it"),
            (
                "!!seq {a: b}",
                "the tag `!!seq` cannot stand on a mapping; remove it",
            ),
        ];
        for &(text, message) in cases {
            assert_eq!(messages(text), vec![((1, 1), message.to_owned())], "{text:?}");
        }
        for tag in [
            "!!binary",
            "!!timestamp",
            "!!set",
            "!!omap",
            "!!merge",
            "!foo",
            "!<x:y>",
        ] {
            let got = messages(&format!("{tag} 1"));
            assert_eq!(got.len(), 1, "{tag}: {got:?}");
            assert!(got[0].1.starts_with("the tag `"), "{tag}: {got:?}");
            assert!(got[0].1.contains("is not supported"), "{tag}: {got:?}");
        }
        // A `%TAG` directive that moves `!!` elsewhere makes it a tag portmap does not read.
        let got = messages("%TAG !! tag:example.com,2000:\n---\na: !!int 1\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.contains("is not supported"), "{got:?}");
    }

    #[test]
    fn nesting_is_refused_at_the_limit_without_recursion() {
        // Brackets far past the limit (the old fast reader overflowed the stack at 20,000), and a
        // block nest of 10 million levels (20 MB): both stop where they pass 64 levels.
        for (text, pos) in [
            // The scanner looks ahead through brackets and stops at its own limit, 255 levels.
            (format!("wan: {}", "[".repeat(20_000)), (1, 5 + 256)),
            ("- ".repeat(10_000_000), (1, 2 * MAX_DEPTH as u32 + 1)),
            (
                format!("a: {}1{}", "{b: ".repeat(70), "}".repeat(70)),
                (1, 4 + 4 * 63),
            ),
        ] {
            let parsed = parse(&text);
            let got = refusal(&parsed);
            assert_eq!(
                got,
                vec![(
                    pos,
                    "the configuration nests lists and mappings more than 64 deep; a portmap configuration needs \
                     4 levels (mappings → entry → allow_from → address)"
                )],
                "{}…",
                &text[..40]
            );
        }
        let exactly = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&exactly).errors.is_empty());
    }

    #[test]
    fn the_number_of_values_is_bounded() {
        let limits = Limits {
            nodes: 1000,
            ..Limits::DEFAULT
        };
        let text = "- 1\n".repeat(2000);
        let parsed = within(&text, limits);
        let got = refusal(&parsed);
        assert_eq!(
            got,
            vec![(
                (1000, 3),
                "the configuration holds more than 1000 values (keys, scalars, lists and mappings), more than \
                 portmap reads"
            )]
        );
        assert!(within(&"- 1\n".repeat(999), limits).errors.is_empty());
    }

    #[test]
    fn a_long_flow_collection_is_refused_where_it_starts() {
        let limits = Limits {
            lookahead: 1000,
            ..Limits::DEFAULT
        };
        // A flow collection where a key could start (the scanner holds it whole): at the top, as
        // a list entry; and a long value.
        for (text, pos) in [
            (format!("[{}]\n", "{a: 1}, ".repeat(200)), (1, 1)),
            (
                format!(
                    "wan: {{ interfaces: [eth0] }}\nmappings:\n  - [{}]\n",
                    "{a: 1}, ".repeat(200)
                ),
                (3, 3),
            ),
            (format!("a: x{}\n", "y".repeat(5000)), (1, 2)),
        ] {
            let parsed = within(&text, limits);
            let got = refusal(&parsed);
            assert_eq!(
                got,
                vec![(
                    pos,
                    "the value or flow collection (`[…]`, `{…}`) that follows is longer than 1000 bytes, more \
                     than portmap reads at once; write long lists as block lists (one `- item` per line)"
                )],
                "{}…",
                &text[..20]
            );
        }
        let block = format!(
            "wan: {{ interfaces: [eth0] }}\nmappings:\n{}",
            "  - {a: 1}\n".repeat(200)
        );
        assert!(within(&block, limits).errors.is_empty());
        // And the real limit: a 32 MB flow list costs no more than the lookahead.
        let huge = format!("[{}]", "1,".repeat(16 << 20));
        let parsed = parse(&huge);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert!(parsed.errors[0].message.contains("longer than 256 KiB"));
    }

    #[test]
    fn items_one_level_under_the_root_mapping_are_handed_over() {
        let text = "a: [1, 2]\nb:\n  - x\n  - [y]\nc: { d: [3] }\ne: !!map [4]\n";
        let mut got = Vec::new();
        let parsed = parse_streaming(text, &mut |entries, key, i, item| {
            let Value::Scalar(k) = &key.value else {
                panic!("{key:?}")
            };
            got.push((entries.len(), k.text.to_string(), i, item.pos));
            // Keep the items of `a`, take those of `b`.
            (k.text.as_ref() == "a").then_some(item)
        });
        assert_eq!(
            got,
            [
                (0, "a".to_owned(), 0, (1, 5)),
                (0, "a".to_owned(), 1, (1, 8)),
                (1, "b".to_owned(), 0, (3, 5)),
                (1, "b".to_owned(), 1, (4, 6)),
            ]
        );
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = parsed.root
        else {
            panic!("{:?}", parsed.root)
        };
        let Value::Seq(a) = &entries[0].1.value else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        // `b` lost its items but not its position (its first item's).
        assert_eq!(
            entries[1].1,
            Node {
                pos: (3, 5),
                value: Value::Seq(Vec::new())
            }
        );
        assert_eq!(entries[3].1.value, Value::Reported);
        // Nothing is handed over under a root that is not a mapping, or whose tag was refused.
        for text in ["- [1]\n", "!!seq\na: [1]\n"] {
            parse_streaming(text, &mut |_, _, _, _| panic!("{text:?}"));
        }
    }

    #[test]
    fn problems_past_the_cap_are_counted() {
        let text = format!("[{}]", "!x 1, ".repeat(150));
        let parsed = parse(&text);
        assert_eq!(parsed.errors.len(), MAX_ERRORS);
        assert_eq!(parsed.more_errors, 50);
    }
}
