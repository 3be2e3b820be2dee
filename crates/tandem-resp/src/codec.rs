//! The Redis protocol's wire format, both ways, bounded: requests as RESP
//! arrays of bulk strings (what every client sends) or inline commands (what
//! a person types into `telnet`), and replies in RESP2 or RESP3. The parser
//! is pure: it takes the bytes buffered so far and answers a command and how
//! many bytes it used, "not complete yet", or an error that closes the
//! connection. Every length is checked against [`Limits`] before anything is
//! buffered for it, so a hostile header (`*2147483648`, `$99999999999`) costs
//! nothing.

/// Bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (an argument).
    pub bulk_bytes_max: usize,
    /// Most arguments of one command, its name included.
    pub args_max: usize,
    /// Longest inline command line.
    pub inline_bytes_max: usize,
    /// Most bytes one command may take on the wire.
    pub command_bytes_max: usize,
}

/// Why a request cannot be read: the connection is answered with the error
/// and closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    ArrayLength,
    #[error("Protocol error: too many arguments in a command (at most {0})")]
    TooManyArgs(usize),
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: a bulk string is longer than the limit of {0} bytes")]
    BulkTooLong(usize),
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: a bulk string does not end with CRLF")]
    BulkEnd,
    #[error("Protocol error: too big inline request (at most {0} bytes)")]
    InlineTooLong(usize),
    #[error("Protocol error: unbalanced quotes in request")]
    Quotes,
    #[error("Protocol error: a command is longer than the limit of {0} bytes")]
    CommandTooLong(usize),
}

/// A command's arguments, its name first.
pub type Args = Vec<Vec<u8>>;

/// Parse one command from the front of `buf`: `Ok(Some((args, used)))`,
/// `Ok(None)` when more bytes are needed, or the error that ends the
/// connection. An empty command (`*0`, a blank line) parses as no arguments.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Args, usize)>, ProtocolError> {
    let result = match buf.first() {
        None => return Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    };
    match result {
        Ok(None) if buf.len() > limits.command_bytes_max => {
            Err(ProtocolError::CommandTooLong(limits.command_bytes_max))
        }
        other => other,
    }
}

/// Parse every complete command at the front of `buf` (at most `max`), and
/// take them out of it; empty commands are skipped. A protocol error ends
/// the round with the reply that answers it (the connection then closes).
pub fn parse_round(buf: &mut Vec<u8>, limits: &Limits, max: usize) -> (Vec<Args>, Option<Reply>) {
    let mut commands = Vec::new();
    let mut used = 0;
    let mut fatal = None;
    while commands.len() < max {
        match parse(&buf[used..], limits) {
            Ok(Some((args, n))) => {
                used += n;
                if !args.is_empty() {
                    commands.push(args);
                }
            }
            Ok(None) => break,
            Err(e) => {
                fatal = Some(Reply::err(e.to_string()));
                break;
            }
        }
    }
    buf.drain(..used);
    (commands, fatal)
}

/// The line starting at `at`, without its CRLF, and where the next starts;
/// `None` when it is not complete. Header lines are short: one longer than
/// 32 bytes is a protocol error, not a reason to buffer more.
fn header_line(buf: &[u8], at: usize) -> Option<Result<(&[u8], usize), ()>> {
    let rest = &buf[at..];
    match rest.iter().take(34).position(|&b| b == b'\r') {
        Some(i) if i > 32 => Some(Err(())),
        Some(i) => match rest.get(i + 1) {
            None => None,
            Some(b'\n') => Some(Ok((&rest[..i], at + i + 2))),
            Some(_) => Some(Err(())),
        },
        None if rest.len() > 33 => Some(Err(())),
        None => None,
    }
}

fn number(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_array(buf: &[u8], limits: &Limits) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some(head) = header_line(buf, 1) else { return Ok(None) };
    let (digits, mut at) = head.map_err(|()| ProtocolError::ArrayLength)?;
    let n = number(digits).ok_or(ProtocolError::ArrayLength)?;
    if n <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    if n as u64 > limits.args_max as u64 {
        return Err(ProtocolError::TooManyArgs(limits.args_max));
    }
    let mut args = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedBulk(other as char)),
        }
        let Some(head) = header_line(buf, at + 1) else { return Ok(None) };
        let (digits, start) = head.map_err(|()| ProtocolError::BulkLength)?;
        let len = number(digits).filter(|l| *l >= 0).ok_or(ProtocolError::BulkLength)?;
        if len as u64 > limits.bulk_bytes_max as u64 {
            return Err(ProtocolError::BulkTooLong(limits.bulk_bytes_max));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BulkEnd);
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<(Args, usize)>, ProtocolError> {
    let Some(nl) = buf.iter().take(limits.inline_bytes_max + 1).position(|&b| b == b'\n') else {
        if buf.len() > limits.inline_bytes_max {
            return Err(ProtocolError::InlineTooLong(limits.inline_bytes_max));
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args = split_inline(line)?;
    if args.len() > limits.args_max {
        return Err(ProtocolError::TooManyArgs(limits.args_max));
    }
    Ok(Some((args, nl + 1)))
}

/// Split an inline line at spaces, with "double" and 'single' quotes.
fn split_inline(line: &[u8]) -> Result<Args, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ProtocolError::Quotes),
                        Some(&c) if c == q => break,
                        Some(b'\\') if q == b'"' && i + 1 < line.len() => {
                            arg.push(line[i + 1]);
                            i += 2;
                        }
                        Some(&c) => {
                            arg.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::Quotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// A reply, encoded as RESP2 or RESP3 (maps, sets, booleans and null have
/// their own RESP3 types and fall back to arrays, integers and `$-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(&'static str),
    /// An error line: its first word is the code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Set(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Bool(bool),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK")
    }

    pub fn err(message: impl Into<String>) -> Reply {
        Reply::Error(format!("ERR {}", message.into()))
    }

    pub fn bulk(text: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(text.into())
    }

    pub fn encode(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            // An error is one line: a message never breaks the framing.
            Reply::Error(e) => {
                let clean: Vec<u8> =
                    e.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect();
                line(out, b'-', &clean);
            }
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|r| r.encode(out, resp3));
            }
            Reply::Set(items) => {
                line(out, if resp3 { b'~' } else { b'*' }, items.len().to_string().as_bytes());
                items.iter().for_each(|r| r.encode(out, resp3));
            }
            Reply::Map(pairs) => {
                let n = if resp3 { pairs.len() } else { 2 * pairs.len() };
                line(out, if resp3 { b'%' } else { b'*' }, n.to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Reply::Bool(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
            }
            Reply::Bool(b) => line(out, b':', if *b { b"1" } else { b"0" }),
        }
    }
}

/// A command as a client sends it: an array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    line(out, b'*', args.len().to_string().as_bytes());
    for a in args {
        let a = a.as_ref();
        line(out, b'$', a.len().to_string().as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn line(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Limits =
        Limits { bulk_bytes_max: 64, args_max: 8, inline_bytes_max: 64, command_bytes_max: 512 };

    #[test]
    fn arrays_and_inline_commands_parse() {
        let (args, used) =
            parse(b"*2\r\n$3\r\nGET\r\n$5\r\nkey:a\r\nrest", &LIMITS).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"key:a".to_vec()]);
        assert_eq!(used, 24);
        let (args, used) = parse(b"set k \"a b\\\"\" 'c d'\r\nPING", &LIMITS).unwrap().unwrap();
        assert_eq!(args, vec![b"set".to_vec(), b"k".to_vec(), b"a b\"".to_vec(), b"c d".to_vec()]);
        assert_eq!(used, 21);
        assert_eq!(parse(b"*0\r\n", &LIMITS).unwrap(), Some((vec![], 4)));
        assert_eq!(parse(b"\r\n", &LIMITS).unwrap(), Some((vec![], 2)));
    }

    #[test]
    fn hostile_headers_are_refused_before_anything_is_buffered() {
        assert_eq!(parse(b"*2147483648\r\n", &LIMITS), Err(ProtocolError::TooManyArgs(8)));
        assert_eq!(parse(b"*1\r\n$99999999999\r\n", &LIMITS), Err(ProtocolError::BulkTooLong(64)));
        assert_eq!(parse(b"*1\r\n$-5\r\n", &LIMITS), Err(ProtocolError::BulkLength));
        assert_eq!(parse(b"*x\r\n", &LIMITS), Err(ProtocolError::ArrayLength));
        assert_eq!(parse(b"*1\r\n+OK\r\n", &LIMITS), Err(ProtocolError::ExpectedBulk('+')));
        assert_eq!(parse(b"*1\r\n$2\r\nabcd", &LIMITS), Err(ProtocolError::BulkEnd));
        assert_eq!(parse(&[b'*'; 40], &LIMITS), Err(ProtocolError::ArrayLength));
        assert_eq!(parse(&[b'a'; 65], &LIMITS), Err(ProtocolError::InlineTooLong(64)));
        assert_eq!(parse(b"set 'a\r\n", &LIMITS), Err(ProtocolError::Quotes));
    }

    #[test]
    fn a_round_takes_complete_commands_up_to_its_bound() {
        let mut buf = b"PING\r\n\r\nPING\r\nPING\r\n*1\r\n$4\r\nPI".to_vec();
        let (commands, fatal) = parse_round(&mut buf, &LIMITS, 2);
        assert_eq!((commands.len(), fatal), (2, None));
        let (commands, fatal) = parse_round(&mut buf, &LIMITS, 8);
        assert_eq!((commands.len(), fatal), (1, None));
        assert_eq!(buf, b"*1\r\n$4\r\nPI", "the partial command waits");
        buf.extend_from_slice(b"NG\r\n*x\r\n");
        let (commands, fatal) = parse_round(&mut buf, &LIMITS, 8);
        assert_eq!(commands.len(), 1);
        assert!(fatal.is_some_and(|r| matches!(r, Reply::Error(e) if e.contains("multibulk"))));
    }

    #[test]
    fn replies_encode_in_both_versions() {
        let r = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        let (mut two, mut three) = (Vec::new(), Vec::new());
        r.encode(&mut two, false);
        r.encode(&mut three, true);
        assert_eq!(two, b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(three, b"%1\r\n$1\r\na\r\n:1\r\n");
        let mut e = Vec::new();
        Reply::err("two\r\nlines").encode(&mut e, false);
        assert_eq!(e, b"-ERR two  lines\r\n");
    }

    proptest! {
        /// Every prefix of a valid command is "not complete yet", the whole
        /// parses back to the arguments, and arbitrary bytes never panic.
        #[test]
        fn prefixes_wait_and_the_whole_parses(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut wire = Vec::new();
            encode_command(&args, &mut wire);
            for cut in 0..wire.len() {
                prop_assert_eq!(parse(&wire[..cut], &LIMITS), Ok(None));
            }
            prop_assert_eq!(parse(&wire, &LIMITS), Ok(Some((args, wire.len()))));
            let _ = parse(&junk, &LIMITS);
        }
    }
}
