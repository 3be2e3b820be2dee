//! The connection commands a node and the router answer alike, and the
//! authentication gate in front of everything else: `AUTH <key>` /
//! `AUTH <user> <key>`, `HELLO [2|3] [AUTH <user> <key>] [SETNAME <name>]`,
//! QUIT, PING, ECHO, SELECT 0, CLIENT SETNAME/GETNAME/ID/SETINFO and
//! CONFIG GET (empty values). Pure: the key check is the caller's.

use crate::codec::Reply;

/// The `redis_version` reported (the command set follows Redis 7).
pub const REDIS_VERSION: &str = "7.2.0";

/// What one connection has said about itself.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    pub resp3: bool,
    pub authed: bool,
    pub name: Option<String>,
    pub id: u64,
}

/// What a connection command does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(Reply),
    /// Reply, then close the connection (QUIT).
    Close(Reply),
    /// Not a connection command, and the connection is authenticated: the
    /// caller runs it.
    Pass,
}

/// Answer a connection command, or refuse any command before
/// authentication; `key_ok` checks an API key.
pub fn answer(state: &mut ConnState, args: &[Vec<u8>], key_ok: impl Fn(&[u8]) -> bool) -> Answer {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    match connection(state, &name, args, key_ok) {
        Ok(a) => a,
        Err(r) => Answer::Reply(r),
    }
}

fn connection(
    state: &mut ConnState,
    name: &str,
    args: &[Vec<u8>],
    key_ok: impl Fn(&[u8]) -> bool,
) -> Result<Answer, Reply> {
    let argn = args.len();
    let wrong_args =
        || Reply::err(format!("wrong number of arguments for '{}' command", name.to_lowercase()));
    let reply = match name {
        "AUTH" => {
            let key = match argn {
                2 => &args[1],
                3 => &args[2],
                _ => return Err(wrong_args()),
            };
            if !key_ok(key) {
                return Err(wrong_pass());
            }
            state.authed = true;
            Reply::ok()
        }
        "HELLO" => hello(state, args, key_ok)?,
        "QUIT" => return Ok(Answer::Close(Reply::ok())),
        _ if !state.authed => return Err(Reply::Error("NOAUTH Authentication required.".into())),
        "PING" => match argn {
            1 => Reply::Simple("PONG"),
            2 => Reply::Bulk(args[1].clone()),
            _ => return Err(wrong_args()),
        },
        "ECHO" if argn == 2 => Reply::Bulk(args[1].clone()),
        "SELECT" if argn == 2 => match args[1].as_slice() {
            b"0" => Reply::ok(),
            _ => return Err(Reply::err("DB index is out of range (tandem has database 0 only)")),
        },
        "CLIENT" if argn >= 2 => client(state, args)?,
        "CONFIG" if argn >= 3 && args[1].eq_ignore_ascii_case(b"GET") => {
            // No Redis configuration to show: each parameter asked for by
            // name with an empty value (redis-benchmark asks for `save` and
            // `appendonly`), nothing for patterns.
            let named = args[2..].iter().filter(|a| !a.iter().any(|c| b"*?[".contains(c)));
            Reply::Map(named.map(|a| (Reply::Bulk(a.clone()), Reply::bulk(""))).collect())
        }
        "CONFIG" if argn >= 2 => {
            return Err(Reply::err("CONFIG: only CONFIG GET is answered (with empty values)"))
        }
        "ECHO" | "SELECT" | "CLIENT" | "CONFIG" => return Err(wrong_args()),
        _ => return Ok(Answer::Pass),
    };
    Ok(Answer::Reply(reply))
}

fn wrong_pass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

fn hello(
    state: &mut ConnState,
    args: &[Vec<u8>],
    key_ok: impl Fn(&[u8]) -> bool,
) -> Result<Reply, Reply> {
    let mut proto = if state.resp3 { 3 } else { 2 };
    let mut i = 1;
    if let Some(v) = args.get(1) {
        proto = match v.as_slice() {
            b"2" => 2,
            b"3" => 3,
            _ => return Err(Reply::Error("NOPROTO unsupported protocol version".into())),
        };
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match String::from_utf8_lossy(&args[i]).to_ascii_uppercase().as_str() {
            "AUTH" if i + 2 < args.len() => {
                if !key_ok(&args[i + 2]) {
                    return Err(wrong_pass());
                }
                state.authed = true;
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                name = Some(String::from_utf8_lossy(&args[i + 1]).into_owned());
                i += 2;
            }
            _ => return Err(Reply::err("syntax error in HELLO option")),
        }
    }
    if !state.authed {
        return Err(Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        ));
    }
    state.resp3 = proto == 3;
    if name.is_some() {
        state.name = name;
    }
    let s = |v: &str| Reply::bulk(v.as_bytes());
    Ok(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_VERSION)),
        (s("proto"), Reply::Int(proto)),
        (s("id"), Reply::Int(state.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ]))
}

fn client(state: &mut ConnState, args: &[Vec<u8>]) -> Result<Reply, Reply> {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
    Ok(match (sub.as_str(), args.len()) {
        ("SETNAME", 3) => {
            state.name = Some(String::from_utf8_lossy(&args[2]).into_owned());
            Reply::ok()
        }
        ("GETNAME", 2) => state.name.clone().map_or(Reply::Nil, Reply::bulk),
        ("ID", 2) => Reply::Int(state.id as i64),
        ("SETINFO", 4) => Reply::ok(),
        _ => {
            return Err(Reply::err(format!(
                "unknown subcommand or wrong number of arguments for 'CLIENT|{sub}'"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn nothing_but_auth_before_authentication() {
        let mut st = ConnState::default();
        let key_ok = |k: &[u8]| k == b"secret";
        let noauth =
            |a: Answer| matches!(a, Answer::Reply(Reply::Error(e)) if e.starts_with("NOAUTH"));
        assert!(noauth(answer(&mut st, &args(&["GET", "k"]), key_ok)));
        assert!(noauth(answer(&mut st, &args(&["PING"]), key_ok)));
        assert!(noauth(answer(&mut st, &args(&["HELLO", "3"]), key_ok)));
        assert!(
            matches!(answer(&mut st, &args(&["AUTH", "nope"]), key_ok), Answer::Reply(Reply::Error(e)) if e.starts_with("WRONGPASS"))
        );
        assert_eq!(answer(&mut st, &args(&["QUIT"]), key_ok), Answer::Close(Reply::ok()));
        assert!(!st.authed);
        let hello = answer(
            &mut st,
            &args(&["HELLO", "3", "AUTH", "default", "secret", "SETNAME", "c"]),
            key_ok,
        );
        assert!(matches!(hello, Answer::Reply(Reply::Map(_))));
        assert!(st.authed && st.resp3);
        assert_eq!(st.name.as_deref(), Some("c"));
        assert_eq!(answer(&mut st, &args(&["GET", "k"]), key_ok), Answer::Pass);
        assert_eq!(answer(&mut st, &args(&["SELECT", "0"]), key_ok), Answer::Reply(Reply::ok()));
        assert!(matches!(
            answer(&mut st, &args(&["SELECT", "1"]), key_ok),
            Answer::Reply(Reply::Error(_))
        ));
    }
}
