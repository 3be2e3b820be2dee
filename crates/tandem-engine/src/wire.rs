//! The replication wire format: versioned postcard, framed by a length prefix.
//! A frame is `u32 little-endian length | version byte | postcard payload`.
//! Decoding is bounded: a frame longer than the receiver's limit is refused
//! before anything is allocated for it, and a frame of another version is
//! refused rather than misread.

use std::collections::BTreeMap;

use crate::model::LogEntry;
use bytes::{Buf, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Version of the replication protocol. Bump it on any change of these types.
pub const WIRE_VERSION: u8 = 1;

/// What a sender streams to a receiver pulling its own changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame of a stream (lets the receiver measure the round trip).
    Hello { sender: String, sender_now_ms: u64, sender_last_seq: u64 },
    /// Changes, in log order. `next_seq` is the log position the batch covers
    /// up to (entries the receiver may not hold were skipped, not sent).
    Batch { sender_now_ms: u64, next_seq: u64, sender_last_seq: u64, entries: Vec<LogEntry> },
    /// Nothing new; the receiver's cursor may move to `next_seq`.
    Heartbeat { sender_now_ms: u64, next_seq: u64, sender_last_seq: u64 },
}

/// A receiver's request for changes that the sender received from third regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Position in the sender's log to continue after.
    pub after: u64,
    /// Per-origin high-water marks: the receiver already has every change of
    /// `origin` up to this origin sequence number that it may hold.
    pub have: BTreeMap<String, u64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardResponse {
    pub sender_now_ms: u64,
    pub next_seq: u64,
    pub sender_last_seq: u64,
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("wire version {found}, this build speaks version {expected}")]
    Version { found: u8, expected: u8 },
    #[error("empty message")]
    Empty,
    #[error("cannot decode message: {0}")]
    Decode(String),
}

/// Encode a message: version byte, then postcard.
pub fn encode_message<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_extend(msg, vec![WIRE_VERSION]).expect("encoding to a Vec cannot fail")
}

/// Decode a message written by [`encode_message`].
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge { len: bytes.len(), max });
    }
    let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version { found: version, expected: WIRE_VERSION });
    }
    postcard::from_bytes(rest).map_err(|e| WireError::Decode(e.to_string()))
}

/// Encode one frame with its length prefix.
pub fn encode_frame(frame: &Frame) -> Bytes {
    let body = encode_message(frame);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Splits a byte stream into frames, holding at most one frame's bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), max_frame_bytes }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame_bytes {
            return Err(WireError::TooLarge { len, max: self.max_frame_bytes });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len);
        decode_message(&body, self.max_frame_bytes).map(Some)
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tandem_clock::Hlc;
    use tandem_merge::{MergeKind, Op, State};

    fn entry(seq: u64) -> LogEntry {
        let mut state = State::new(MergeKind::PnCounter);
        state.apply(&Op::Incr(seq + 1), "eu-west", Hlc::new(seq, 0)).unwrap();
        LogEntry {
            seq,
            origin: "eu-west".into(),
            origin_seq: seq,
            committed_at_ms: 1,
            logged_at_ms: 2,
            entity: "likes".into(),
            id: format!("k{seq}"),
            state,
        }
    }

    #[test]
    fn frames_round_trip_in_any_split() {
        let frames = vec![
            Frame::Hello { sender: "eu-west".into(), sender_now_ms: 5, sender_last_seq: 9 },
            Frame::Batch {
                sender_now_ms: 6,
                next_seq: 3,
                sender_last_seq: 9,
                entries: vec![entry(1), entry(3)],
            },
            Frame::Heartbeat { sender_now_ms: 7, next_seq: 9, sender_last_seq: 9 },
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode_frame(f).to_vec()).collect();
        for chunk in [1, 3, 7, 64, bytes.len()] {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for part in bytes.chunks(chunk) {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let msg = encode_message(&ForwardRequest { after: 1, have: BTreeMap::new(), limit: 5 });
        assert!(decode_message::<ForwardRequest>(&msg, msg.len()).is_ok(), "exactly the limit");
        assert!(decode_message::<ForwardRequest>(&msg, msg.len() - 1).is_err());
        let frame =
            encode_frame(&Frame::Heartbeat { sender_now_ms: 1, next_seq: 2, sender_last_seq: 3 });
        let body_len = frame.len() - 4;
        let mut d = FrameDecoder::new(body_len);
        d.push(&frame[..frame.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None), "waits for the rest");
        assert_eq!(d.buffered(), frame.len() - 1);
        d.push(&frame[frame.len() - 1..]);
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Heartbeat { next_seq: 2, .. }))));
        let mut tight = FrameDecoder::new(body_len - 1);
        tight.push(&frame);
        assert!(matches!(tight.next_frame(), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn oversized_and_foreign_frames_are_refused() {
        let mut d = FrameDecoder::new(16);
        d.push(&(1_000_000u32).to_le_bytes());
        assert_eq!(d.next_frame(), Err(WireError::TooLarge { len: 1_000_000, max: 16 }));
        let mut msg = encode_message(&ForwardRequest { after: 1, have: BTreeMap::new(), limit: 5 });
        msg[0] = 9;
        assert_eq!(
            decode_message::<ForwardRequest>(&msg, 1024),
            Err(WireError::Version { found: 9, expected: WIRE_VERSION })
        );
        assert_eq!(decode_message::<ForwardRequest>(&[], 1024), Err(WireError::Empty));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = FrameDecoder::new(4096);
            d.push(&bytes);
            for _ in 0..8 {
                match d.next_frame() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            let _ = decode_message::<ForwardRequest>(&bytes, 4096);
            let _ = decode_message::<Frame>(&bytes, 4096);
        }
    }
}
