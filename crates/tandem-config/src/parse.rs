//! Turning TOML text into a [`Config`], and turning a `toml` error into one
//! that names the offending key.
//!
//! `toml` reports schema errors (unknown key, wrong type, bad duration) with a
//! byte span but not the dotted key. On error we parse the text a second time
//! into `toml`'s spanned document tree ([`DeTable`]) and name the innermost key
//! or value whose span holds the error; serde's "missing field" and "unknown
//! field" errors may be reported on the enclosing table, so the field they
//! quote is appended unless the path already ends with it.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
    let Ok(root) = DeTable::parse(text) else {
        return ConfigError::Parse { key: None, message, line, column };
    };
    let mut path = String::new();
    let (line, column) = match span {
        Some(span) if !span.is_empty() => {
            let mut best = None;
            innermost_in_table(root.get_ref(), &mut String::new(), &span, &mut best);
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

/// Finds the smallest key or value span that holds `target`; on equal length
/// the deeper path wins (it is visited later). Keys count too: `toml` reports
/// an unknown field on its key, and a table's own span is only its header.
fn innermost_in_table(
    table: &DeTable<'_>,
    path: &mut String,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    let parent_len = path.len();
    for (key, value) in table {
        push_key(path, key.get_ref());
        consider(key.span(), path, target, best);
        consider(value.span(), path, target, best);
        innermost(value, path, target, best);
        path.truncate(parent_len);
    }
}

fn innermost(
    value: &Spanned<DeValue<'_>>,
    path: &mut String,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => innermost_in_table(table, path, target, best),
        DeValue::Array(items) => {
            let parent_len = path.len();
            for (index, item) in items.iter().enumerate() {
                path.push_str(&format!("[{index}]"));
                consider(item.span(), path, target, best);
                innermost(item, path, target, best);
                path.truncate(parent_len);
            }
        }
        _ => {}
    }
}

fn consider(
    span: Range<usize>,
    path: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    let holds = span.start <= target.start && target.end <= span.end;
    let len = span.end - span.start;
    if holds && best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
        *best = Some((len, path.to_owned()));
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
