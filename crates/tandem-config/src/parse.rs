//! Turning TOML text into a [`Config`], and turning a `toml` error into one
//! that names the offending key.
//!
//! `toml` reports schema errors (unknown key, wrong type, bad duration) with a
//! byte span but not the dotted key. On error we parse the text a second time
//! into a tree of spanned values and name the innermost value whose span holds
//! the error; serde's "missing field" and "unknown field" errors are reported on
//! the enclosing table, so the field they quote is appended.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Config, ConfigError};

/// Parses `text` without validating it.
pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|err| locate(text, &err))
}

fn locate(text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_owned();
    let span = err.span();
    let (line, column) = span.clone().map_or((0, 0), |span| line_column(text, span.start));
    // A document that is not even valid TOML has no tree: a syntax error, no key.
    let Ok(root) = toml::from_str::<Node>(text) else {
        return ConfigError::Parse { key: None, message, line, column };
    };
    let mut path = String::new();
    let (line, column) = match span {
        Some(span) if !span.is_empty() => {
            let mut best = None;
            innermost(&root, &mut String::new(), &span, &mut best);
            path = best.map(|(_, path)| path).unwrap_or_default();
            (line, column)
        }
        // An empty span stands for the document root, which has no useful position.
        _ => (0, 0),
    };
    // Serde reports a missing or unknown key on the table that holds it; name
    // the key itself, unless the span already led to it (`[bogus]` headers).
    if let Some(field) = field_in(&message) {
        let mut last = String::new();
        push_key(&mut last, field);
        if path != last && !path.ends_with(&format!(".{last}")) {
            push_key(&mut path, field);
        }
    }
    let key = Some(path).filter(|path| !path.is_empty());
    ConfigError::Parse { key, message, line, column }
}

/// The key named by serde's "missing field `x`" and "unknown field `x`" messages.
fn field_in(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

/// Finds the smallest value span that holds `target`; on equal length the
/// deeper path wins (it is visited later).
fn innermost(
    node: &Node,
    path: &mut String,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    let parent_len = path.len();
    match node {
        Node::Table(entries) => {
            for (key, value) in entries {
                push_key(path, key);
                value.consider(path, target, best);
                innermost(&value.node, path, target, best);
                path.truncate(parent_len);
            }
        }
        Node::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push_str(&format!("[{index}]"));
                item.consider(path, target, best);
                innermost(&item.node, path, target, best);
                path.truncate(parent_len);
            }
        }
        Node::Leaf => {}
    }
}

/// Appends `.key`, quoting keys that are not bare TOML keys.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare =
        !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// Any TOML document, keeping only where its values are.
enum Node {
    Table(Vec<(String, SpannedNode)>),
    Array(Vec<SpannedNode>),
    Leaf,
}

/// A value and, when `toml` knows it, its byte span. Tables created implicitly
/// by a dotted header (`a` in `[a.b]`) have no span.
///
/// `toml::Spanned<T>` cannot be used here: it fails outright on a value without
/// a span. Instead this asks for the span the way `toml::Spanned` does, through
/// the `serde_spanned` struct name, and accepts a plain value when none comes.
/// Should those private names ever change, spans are simply missing and errors
/// name fewer keys; a test would notice.
struct SpannedNode {
    span: Option<Range<usize>>,
    node: Node,
}

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];

impl SpannedNode {
    fn unspanned(node: Node) -> SpannedNode {
        SpannedNode { span: None, node }
    }

    fn consider(&self, path: &str, target: &Range<usize>, best: &mut Option<(usize, String)>) {
        let Some(span) = &self.span else { return };
        let holds = span.start <= target.start && target.end <= span.end;
        let len = span.end - span.start;
        if holds && best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
            *best = Some((len, path.to_owned()));
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor).map(|spanned| spanned.node)
    }
}

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SpannedNode, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = SpannedNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SpannedNode, E> {
        Ok(SpannedNode::unspanned(Node::Leaf))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::unspanned(Node::Leaf))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::unspanned(Node::Leaf))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SpannedNode, E> {
        Ok(SpannedNode::unspanned(Node::Leaf))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<SpannedNode, E> {
        Ok(SpannedNode::unspanned(Node::Leaf))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SpannedNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(SpannedNode::unspanned(Node::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpannedNode, A::Error> {
        let mut entries = Vec::new();
        let Some(first) = map.next_key::<String>()? else {
            return Ok(SpannedNode::unspanned(Node::Table(entries)));
        };
        if first == SPANNED_START {
            let start: usize = map.next_value()?;
            let end: usize = match map.next_key::<String>()?.as_deref() {
                Some(SPANNED_END) => map.next_value()?,
                _ => return Err(de::Error::missing_field(SPANNED_END)),
            };
            let node: Node = match map.next_key::<String>()?.as_deref() {
                Some(SPANNED_VALUE) => map.next_value()?,
                _ => return Err(de::Error::missing_field(SPANNED_VALUE)),
            };
            return Ok(SpannedNode { span: Some(start..end), node });
        }
        entries.push((first, map.next_value()?));
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(SpannedNode::unspanned(Node::Table(entries)))
    }
}
