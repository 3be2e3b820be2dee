//! From Redis words to tandem's: a key to an `(entity, id)` and the merge
//! type its command family needs, a stored value to the bytes a Redis
//! client expects, an [`ApiError`] to the error line with the code the
//! contract names (`-RESIDENCY`, `-MISDIRECTED <home>`, `-READSHALTED
//! <fresh region>`, `-OVERLOADED`, `-WRONGTYPE`), and SCAN's glob patterns.

use tandem_merge::MergeKind;

use super::codec::Reply;
use crate::error::ApiError;
use crate::node::Node;

pub use tandem_resp::command::Family;

/// The Redis type name of a merge type, for TYPE and WRONGTYPE messages.
pub fn type_name(kind: MergeKind) -> &'static str {
    match kind {
        MergeKind::Lww | MergeKind::GCounter | MergeKind::PnCounter => "string",
        MergeKind::OrSet => "set",
        MergeKind::LwwFields => "hash",
    }
}

/// A key's record, checked like an HTTP path (entity known, id valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub entity: String,
    pub id: String,
    pub kind: MergeKind,
}

/// `<entity>:<id>`, or a key without ':' in the family's default entity.
/// No family (DEL, EXISTS, TYPE on a key without ':'): the caller tries each
/// default entity.
pub fn split(node: &Node, key: &[u8], family: Option<Family>) -> Result<Vec<Target>, Reply> {
    let key = std::str::from_utf8(key).map_err(|_| Reply::err("keys must be UTF-8 text"))?;
    let candidates = tandem_resp::command::candidates(key, family, &node.config.resp);
    if candidates.is_empty() {
        let which = family.map_or("strings, sets, hashes or counters", Family::config_key);
        return Err(Reply::err(format!(
            "key `{key}` has no ':' and no default entity type is configured for it ([resp] {which}); use <entity>:<id>"
        )));
    }
    let mut out = Vec::with_capacity(candidates.len());
    for (entity, id) in candidates {
        let cfg = node.target(&entity, &id).map_err(|e| error_reply(&e))?;
        out.push(Target { entity, id, kind: cfg.merge });
    }
    Ok(out)
}

/// The one record a key names for a command of `family`, or WRONGTYPE.
pub fn target(node: &Node, key: &[u8], family: Family) -> Result<Target, Reply> {
    let t = split(node, key, Some(family))?.remove(0);
    if !family.accepts(t.kind) {
        return Err(wrong_type(&t));
    }
    Ok(t)
}

pub fn wrong_type(t: &Target) -> Reply {
    Reply::Error(format!(
        "WRONGTYPE Operation against a key holding the wrong kind of value: `{}` records merge as `{}`",
        t.entity, t.kind
    ))
}

/// The error line for an API refusal: the contract's codes first.
pub fn error_reply(e: &ApiError) -> Reply {
    let extra = |k: &str| e.extra.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
    let line = match e.code {
        "residency_violation" | "unknown_subject" | "cross_jurisdiction_move" => {
            format!("RESIDENCY {}", e.message)
        }
        "misdirected_write" => {
            format!("MISDIRECTED {} {}", extra("home_region").unwrap_or("?"), e.message)
        }
        "reads_halted" => {
            format!("READSHALTED {} {}", extra("fresh_region").unwrap_or("?"), e.message)
        }
        "overloaded" => format!("OVERLOADED {}", e.message),
        "no_region" | "no_region_available" => format!("NOREGION {}", e.message),
        "wrong_merge_type" => format!("WRONGTYPE {}", e.message),
        "unauthorized" => format!("NOAUTH {}", e.message),
        _ => format!("ERR {}", e.message),
    };
    Reply::Error(line)
}

/// A stored JSON value as a Redis client sees it: a JSON string as its text,
/// anything else (numbers, objects written over HTTP) as its JSON text.
pub fn redis_bytes(json: &str) -> Vec<u8> {
    if json.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(json) {
            return s.into_bytes();
        }
    }
    json.as_bytes().to_vec()
}

/// A Redis value as the JSON text tandem stores: a JSON string.
pub fn json_text(value: &[u8]) -> Result<String, Reply> {
    let s = std::str::from_utf8(value).map_err(|_| Reply::err("values must be UTF-8 text"))?;
    Ok(serde_json::to_string(s).expect("a string encodes"))
}

pub fn utf8(arg: &[u8], what: &str) -> Result<String, Reply> {
    String::from_utf8(arg.to_vec()).map_err(|_| Reply::err(format!("{what} must be UTF-8 text")))
}

pub fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\x`) on bytes.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star_p, mut star_t) = (None, 0);
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star_p = Some(p);
                star_t = t;
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => class(&pattern[p..], text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(2),
            Some(&c) => (c == text[t]).then_some(1),
            None => None,
        };
        match step {
            Some(n) => {
                p += n;
                t += 1;
            }
            None => match star_p {
                Some(sp) => {
                    p = sp + 1;
                    star_t += 1;
                    t = star_t;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the front of `pattern` against `c`: the class's length
/// when it matches.
fn class(pattern: &[u8], c: u8) -> Option<usize> {
    let end = pattern.iter().skip(1).position(|&b| b == b']')? + 1;
    let body = &pattern[1..end];
    let (negate, body) = match body.first() {
        Some(b'^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            hit |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob(b"*", b"key:a"));
        assert!(glob(b"key:*", b"key:a"));
        assert!(!glob(b"key:*", b"set:a"));
        assert!(glob(b"k?y:[ab]", b"key:b"));
        assert!(!glob(b"k?y:[^ab]", b"key:b"));
        assert!(glob(b"*:[0-9]*", b"counter:42"));
        assert!(glob(b"a\\*", b"a*"));
        assert!(!glob(b"a\\*", b"ab"));
        assert!(glob(b"*a*b*", b"xxaxxbxx"));
    }

    #[test]
    fn values_round_trip_as_text() {
        assert_eq!(redis_bytes(&json_text(b"hello").unwrap()), b"hello");
        assert_eq!(redis_bytes("{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(redis_bytes("42"), b"42");
        assert!(json_text(&[0xff]).is_err());
    }
}
