//! Which records a command touches, and how: the one table both the node
//! (for MULTI) and the router (to route each command like the HTTP data
//! plane) read. A key is `<entity>:<id>`; a key without ':' belongs to the
//! `[resp]` default entity of its command's [`Family`].

use tandem_config::RespConfig;
use tandem_merge::MergeKind;

/// The family of a command, which decides the merge types it works on and
/// the `[resp]` default entity of a key without ':'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Strings,
    Counters,
    Sets,
    Hashes,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Strings, Family::Sets, Family::Hashes, Family::Counters];

    pub fn accepts(self, kind: MergeKind) -> bool {
        match self {
            Family::Strings => kind == MergeKind::Lww,
            Family::Counters => matches!(kind, MergeKind::GCounter | MergeKind::PnCounter),
            Family::Sets => kind == MergeKind::OrSet,
            Family::Hashes => kind == MergeKind::LwwFields,
        }
    }

    /// Its key in `[resp]`.
    pub fn config_key(self) -> &'static str {
        match self {
            Family::Strings => "strings",
            Family::Counters => "counters",
            Family::Sets => "sets",
            Family::Hashes => "hashes",
        }
    }

    pub fn default_entity(self, resp: &RespConfig) -> Option<&str> {
        match self {
            Family::Strings => resp.strings.as_deref(),
            Family::Counters => resp.counters.as_deref(),
            Family::Sets => resp.sets.as_deref(),
            Family::Hashes => resp.hashes.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What a command is, for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class<'a> {
    /// Answered by the connection itself (AUTH, HELLO, PING, CLIENT, INFO...).
    Connection,
    /// Reads or writes these keys (possibly none, when the arguments are
    /// missing: the region answers the arity error). `family: None` (DEL,
    /// EXISTS, TYPE) tries every default entity for a key without ':'.
    Keys {
        access: Access,
        family: Option<Family>,
        keys: Vec<&'a [u8]>,
    },
    /// Reads the whole keyspace (SCAN, DBSIZE).
    Keyspace,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    Transaction,
    Unknown,
}

const CONNECTION: [&str; 11] = [
    "AUTH", "HELLO", "QUIT", "PING", "ECHO", "SELECT", "CLIENT", "COMMAND", "CONFIG", "INFO",
    "TANDEM",
];

/// Classify a command by its name (any case) and arguments.
pub fn classify(args: &[Vec<u8>]) -> Class<'_> {
    let Some(name) = args.first() else { return Class::Unknown };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let key1 = || args.get(1).map(Vec::as_slice).into_iter().collect::<Vec<_>>();
    let all = || args.iter().skip(1).map(Vec::as_slice).collect::<Vec<_>>();
    let keys = |access, family, keys| Class::Keys { access, family, keys };
    use Access::{Read, Write};
    use Family::{Counters, Hashes, Sets, Strings};
    match name.as_str() {
        n if CONNECTION.contains(&n) => Class::Connection,
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => Class::Transaction,
        "SCAN" | "DBSIZE" => Class::Keyspace,
        "GET" | "TTL" | "PTTL" => keys(Read, Some(Strings), key1()),
        "MGET" => keys(Read, Some(Strings), all()),
        "SET" | "SETNX" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" | "PERSIST" => {
            keys(Write, Some(Strings), key1())
        }
        "MSET" => {
            keys(Write, Some(Strings), args.iter().skip(1).step_by(2).map(Vec::as_slice).collect())
        }
        "DEL" | "UNLINK" => keys(Write, None, all()),
        "EXISTS" => keys(Read, None, all()),
        "TYPE" => keys(Read, None, key1()),
        "INCR" | "INCRBY" | "DECR" | "DECRBY" => keys(Write, Some(Counters), key1()),
        "SADD" | "SREM" => keys(Write, Some(Sets), key1()),
        "SMEMBERS" | "SISMEMBER" | "SMISMEMBER" | "SCARD" => keys(Read, Some(Sets), key1()),
        "HSET" | "HMSET" | "HSETNX" | "HDEL" => keys(Write, Some(Hashes), key1()),
        "HGET" | "HMGET" | "HGETALL" | "HLEN" | "HEXISTS" | "HKEYS" | "HVALS" => {
            keys(Read, Some(Hashes), key1())
        }
        _ => Class::Unknown,
    }
}

/// The `(entity, id)` pairs a key may name: itself when it holds ':', else
/// the default entity of the family (or of each family, in
/// [`Family::ALL`] order, when the command has none). Empty when no default
/// entity is configured for it.
pub fn candidates(key: &str, family: Option<Family>, resp: &RespConfig) -> Vec<(String, String)> {
    match key.split_once(':') {
        Some((entity, id)) => vec![(entity.to_owned(), id.to_owned())],
        None => {
            let families = family.map_or(Family::ALL.to_vec(), |f| vec![f]);
            families
                .iter()
                .filter_map(|f| f.default_entity(resp))
                .map(|e| (e.to_owned(), key.to_owned()))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn commands_name_their_keys() {
        let a = args(&["mset", "k:a", "1", "k:b", "2"]);
        assert_eq!(
            classify(&a),
            Class::Keys {
                access: Access::Write,
                family: Some(Family::Strings),
                keys: vec![&b"k:a"[..], b"k:b"]
            }
        );
        let a = args(&["HGETALL", "profile:alice"]);
        assert!(
            matches!(classify(&a), Class::Keys { access: Access::Read, family: Some(Family::Hashes), keys } if keys == [b"profile:alice"])
        );
        let a = args(&["del", "a", "b"]);
        assert!(matches!(classify(&a), Class::Keys { family: None, keys, .. } if keys.len() == 2));
        assert_eq!(
            classify(&args(&["GET"])),
            Class::Keys { access: Access::Read, family: Some(Family::Strings), keys: vec![] }
        );
        assert_eq!(classify(&args(&["ping"])), Class::Connection);
        assert_eq!(classify(&args(&["exec"])), Class::Transaction);
        assert_eq!(classify(&args(&["scan", "0"])), Class::Keyspace);
        assert_eq!(classify(&args(&["FLUSHALL"])), Class::Unknown);
    }

    #[test]
    fn keys_without_a_colon_go_to_the_default_entities() {
        let resp = RespConfig {
            strings: Some("key".into()),
            sets: Some("set".into()),
            ..RespConfig::default()
        };
        assert_eq!(
            candidates("profile:alice:main", None, &resp),
            [("profile".into(), "alice:main".into())]
        );
        assert_eq!(
            candidates("myset", Some(Family::Sets), &resp),
            [("set".into(), "myset".into())]
        );
        assert_eq!(
            candidates("x", None, &resp),
            [("key".to_owned(), "x".to_owned()), ("set".to_owned(), "x".to_owned())]
        );
        assert!(candidates("x", Some(Family::Hashes), &resp).is_empty());
    }
}
