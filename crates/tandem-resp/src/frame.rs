//! Reply framing, for a process that relays replies it did not make (the
//! router relays a region's replies byte for byte): where one complete reply
//! ends in a buffer, for every RESP2 and RESP3 type, without building it.
//! Bounded like the request parser: aggregates may nest at most
//! [`DEPTH_MAX`] deep, a reply may take at most `reply_bytes_max` bytes, and
//! a header line longer than 32 bytes is an error, so a broken or hostile
//! upstream costs a bounded amount of memory and is then disconnected.

/// Deepest nesting of aggregates (arrays, maps, sets, pushes) followed.
pub const DEPTH_MAX: usize = 32;

/// Why bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a RESP reply: unexpected type byte {0:#04x}")]
    Type(u8),
    #[error("not a RESP reply: a bad length or header line")]
    Header,
    #[error("a reply nests deeper than {DEPTH_MAX}")]
    TooDeep,
    #[error("a reply is longer than the limit of {0} bytes")]
    TooLong(usize),
}

/// The length of the complete reply at the front of `buf`, `Ok(None)` while
/// it is not all there.
pub fn reply_len(buf: &[u8], reply_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    // Elements still to read at each open aggregate level.
    let mut pending: Vec<u64> = Vec::new();
    let mut at = 0usize;
    loop {
        if at > reply_bytes_max {
            return Err(FrameError::TooLong(reply_bytes_max));
        }
        let Some(&kind) = buf.get(at) else { return Ok(None) };
        let Some(line) = header_line(buf, at + 1)? else {
            return Ok(None);
        };
        let (body, next) = line;
        at = next;
        let mut children: u64 = 0;
        match kind {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let n = number(body)?;
                if n >= 0 {
                    let n = usize::try_from(n).map_err(|_| FrameError::Header)?;
                    if n > reply_bytes_max {
                        return Err(FrameError::TooLong(reply_bytes_max));
                    }
                    let end = at + n;
                    if buf.len() < end + 2 {
                        return if end > reply_bytes_max {
                            Err(FrameError::TooLong(reply_bytes_max))
                        } else {
                            Ok(None)
                        };
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(FrameError::Header);
                    }
                    at = end + 2;
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = number(body)?;
                if n > 0 {
                    let n = u64::try_from(n).map_err(|_| FrameError::Header)?;
                    children = if matches!(kind, b'%' | b'|') { n * 2 } else { n };
                    if children > reply_bytes_max as u64 {
                        return Err(FrameError::TooLong(reply_bytes_max));
                    }
                }
            }
            other => return Err(FrameError::Type(other)),
        }
        // An attribute (`|`) is followed by the reply it annotates.
        let extra = u64::from(kind == b'|');
        if children + extra > 0 {
            if pending.len() >= DEPTH_MAX {
                return Err(FrameError::TooDeep);
            }
            if let Some(top) = pending.last_mut() {
                *top -= 1;
            }
            pending.push(children + extra);
            continue;
        }
        // One element done: close every level it completes.
        match pending.last_mut() {
            None => return Ok(Some(at)),
            Some(top) => *top -= 1,
        }
        while pending.last() == Some(&0) {
            pending.pop();
        }
        if pending.is_empty() {
            return Ok(Some(at));
        }
    }
}

/// The header line after the type byte at `at`: its body and where the next
/// starts; `None` while incomplete.
#[allow(clippy::type_complexity)]
fn header_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.iter().take(4096).position(|&b| b == b'\r') {
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], at + i + 2))),
            Some(_) => Err(FrameError::Header),
        },
        // Simple strings and errors may be long; 4 KiB is more than any
        // error tandem writes.
        None if rest.len() >= 4096 => Err(FrameError::Header),
        None => Ok(None),
    }
}

fn number(digits: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or(FrameError::Header)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::Reply;

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            Just(Reply::ok()),
            "[a-z ]{0,12}".prop_map(|e| Reply::Error(format!("ERR {e}"))),
            any::<i64>().prop_map(Reply::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Reply::Bulk),
            Just(Reply::Nil),
            any::<bool>().prop_map(Reply::Bool),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Reply::Array),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Reply::Set),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Reply::Map),
            ]
        })
    }

    #[test]
    fn every_type_is_framed() {
        for wire in [
            &b"+OK\r\n"[..],
            b"-ERR no\r\n",
            b":42\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"(12345678901234567890\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"%1\r\n+a\r\n:1\r\n",
            b"|1\r\n+key\r\n+v\r\n:5\r\n",
            b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n",
        ] {
            let mut buf = wire.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(reply_len(&buf, 1024), Ok(Some(wire.len())), "{wire:?}");
        }
    }

    #[test]
    fn hostile_replies_are_bounded() {
        assert_eq!(reply_len(b"$99999999\r\n", 1024), Err(FrameError::TooLong(1024)));
        assert_eq!(reply_len(b"*2147483648\r\n", 1024), Err(FrameError::TooLong(1024)));
        assert_eq!(reply_len(&b"*1\r\n".repeat(40), 1 << 20), Err(FrameError::TooDeep));
        assert_eq!(reply_len(b"?x\r\n", 1024), Err(FrameError::Type(b'?')));
        assert_eq!(reply_len(b"$2\r\nabcd", 1024), Err(FrameError::Header));
        assert_eq!(reply_len(b":x\r", 1024), Ok(None));
    }

    proptest! {
        /// Every reply the codec encodes is framed exactly, in both protocol
        /// versions, and every prefix of it waits for more.
        #[test]
        fn encoded_replies_frame_exactly(r in reply(), resp3 in any::<bool>()) {
            let mut wire = Vec::new();
            r.encode(&mut wire, resp3);
            for cut in 0..wire.len() {
                prop_assert_eq!(reply_len(&wire[..cut], 1 << 20), Ok(None));
            }
            prop_assert_eq!(reply_len(&wire, 1 << 20), Ok(Some(wire.len())));
        }

        #[test]
        fn junk_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = reply_len(&junk, 1024);
        }
    }
}
