//! The write-ahead log in front of the redb file (store layout 3,
//! docs/STORAGE.md). A commit is one frame appended to `tandem.wal` and
//! fdatasynced: once that returns, the batch is durable. The redb store then
//! applies the same bytes with `Durability::None` (visible to readers, not
//! synced), and a checkpoint (a durable redb commit that moves
//! `meta.wal_epoch` on) lets the log start again, empty, under the new epoch.
//!
//! On open, the frames of the epoch redb names are applied again. That is
//! idempotent: redb holds the last checkpoint plus a prefix of the frames
//! since (records and cursors take their last value, log entries are
//! rewritten with the same bytes), so replaying every frame in order ends in
//! the state the last acknowledged commit left. A frame whose length or
//! checksum does not hold (a write torn by a crash) ends the log, and the file
//! is cut there. A header of another epoch (a crash between a checkpoint and
//! the reset of the log) means the log holds nothing redb lacks.
//!
//! File: header = magic `TNDMWAL1`, epoch (u64 LE); then frames = body length
//! (u32 LE), CRC-32 of the body (u32 LE), body. Body = first sequence number
//! (u64 LE), put count (u32 LE), cursor count (u32 LE), per put the entity,
//! the id, the tagged record and the tagged log entry, then per cursor its
//! key and tagged value; every string and value as a u32 LE length and bytes.

use std::io;
use std::ops::Range;

use redb::StorageBackend;

const MAGIC: &[u8; 8] = b"TNDMWAL1";
const HEADER_LEN: u64 = 16;
const FRAME_HEAD_LEN: usize = 8;
/// A length above this is a torn length field, not a frame (a batch is
/// bounded far below it by the writer's limits).
const FRAME_LEN_MAX: usize = 1 << 30;

/// The log file: where the next frame goes and the epoch its header names.
pub(crate) struct Wal {
    backend: Box<dyn StorageBackend>,
    epoch: u64,
    /// Header and whole frames: where the next frame is written.
    len: u64,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("epoch", &self.epoch).field("len", &self.len).finish()
    }
}

/// A put as a frame holds it: byte ranges of the frame's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutRanges {
    pub entity: Range<usize>,
    pub id: Range<usize>,
    pub record: Range<usize>,
    pub entry: Range<usize>,
}

/// One batch as the log holds it, over the bytes of its body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FrameIndex {
    pub first_seq: u64,
    pub puts: Vec<PutRanges>,
    /// (key, value) ranges.
    pub cursors: Vec<(Range<usize>, Range<usize>)>,
}

impl FrameIndex {
    /// The sequence number after this frame's puts.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.puts.len() as u64
    }
}

/// Builds a frame in a reused buffer: puts first, then cursors; `finish`
/// fills in the counts, the length and the checksum.
pub(crate) struct FrameBuilder<'b> {
    buf: &'b mut Vec<u8>,
    index: FrameIndex,
}

impl<'b> FrameBuilder<'b> {
    /// Where the put and cursor counts sit in the frame.
    const COUNTS_AT: usize = FRAME_HEAD_LEN + 8;

    pub fn new(buf: &'b mut Vec<u8>, first_seq: u64) -> FrameBuilder<'b> {
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_HEAD_LEN]);
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&[0; 8]);
        FrameBuilder { buf, index: FrameIndex { first_seq, ..FrameIndex::default() } }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Range<usize> {
        let len = u32::try_from(bytes.len()).expect("a value under 4 GiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        start..self.buf.len()
    }

    /// A value encoded in place, behind its length.
    fn encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        encode(self.buf);
        let len = u32::try_from(self.buf.len() - start).expect("a value under 4 GiB");
        self.buf[len_at..start].copy_from_slice(&len.to_le_bytes());
        start..self.buf.len()
    }

    /// A record's new state and its log entry, each encoded into the frame.
    pub fn put(
        &mut self,
        entity: &str,
        id: &str,
        record: impl FnOnce(&mut Vec<u8>),
        entry: impl FnOnce(&mut Vec<u8>),
    ) {
        assert!(self.index.cursors.is_empty(), "a frame's puts come before its cursors");
        let entity = self.bytes(entity.as_bytes());
        let id = self.bytes(id.as_bytes());
        let record = self.encoded(record);
        let entry = self.encoded(entry);
        self.index.puts.push(PutRanges { entity, id, record, entry });
    }

    pub fn cursor(&mut self, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        let key = self.bytes(key.as_bytes());
        let value = self.encoded(value);
        self.index.cursors.push((key, value));
    }

    /// Fill in the head; the buffer is then the whole frame.
    pub fn finish(self) -> FrameIndex {
        let puts = u32::try_from(self.index.puts.len()).expect("under 4 G puts");
        let cursors = u32::try_from(self.index.cursors.len()).expect("under 4 G cursors");
        let at = Self::COUNTS_AT;
        self.buf[at..at + 4].copy_from_slice(&puts.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&cursors.to_le_bytes());
        let body = &self.buf[FRAME_HEAD_LEN..];
        let len = u32::try_from(body.len()).expect("a frame under 4 GiB");
        let sum = crc32fast::hash(body);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&sum.to_le_bytes());
        self.index
    }
}

/// Reads a frame body, `bytes[at..end]` of the whole file; the ranges it
/// answers index the whole file. `None` when the body does not parse.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let next = self.at.checked_add(n).filter(|&e| e <= self.end)?;
        let r = self.at..next;
        self.at = next;
        Some(r)
    }

    fn u32(&mut self) -> Option<u32> {
        let r = self.take(4)?;
        Some(u32::from_le_bytes(self.bytes[r].try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        let r = self.take(8)?;
        Some(u64::from_le_bytes(self.bytes[r].try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Range<usize>> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// The index of the frame body `bytes[start..end]`.
fn parse_body(bytes: &[u8], start: usize, end: usize) -> Option<FrameIndex> {
    let mut r = Reader { bytes, at: start, end };
    let body_len = end - start;
    let first_seq = r.u64()?;
    let n_puts = r.u32()? as usize;
    let n_cursors = r.u32()? as usize;
    let mut puts = Vec::with_capacity(n_puts.min(body_len / 16));
    for _ in 0..n_puts {
        puts.push(PutRanges {
            entity: r.bytes()?,
            id: r.bytes()?,
            record: r.bytes()?,
            entry: r.bytes()?,
        });
    }
    let mut cursors = Vec::with_capacity(n_cursors.min(body_len / 8));
    for _ in 0..n_cursors {
        cursors.push((r.bytes()?, r.bytes()?));
    }
    (r.at == end).then_some(FrameIndex { first_seq, puts, cursors })
}

/// What the log held when it was opened.
pub(crate) struct Recovered {
    /// The whole file as read.
    pub bytes: Vec<u8>,
    /// The frames of the expected epoch, in order (ranges into `bytes`).
    pub frames: Vec<FrameIndex>,
    /// Bytes past the last whole frame (a torn write), dropped.
    pub torn_bytes: u64,
    /// The header names the expected epoch (otherwise the log is reset).
    pub header_ok: bool,
}

impl Wal {
    /// Open the log on `backend` and read the frames written under `epoch`.
    pub fn open(backend: Box<dyn StorageBackend>, epoch: u64) -> io::Result<(Wal, Recovered)> {
        let file_len = backend.len()?;
        let len = usize::try_from(file_len).map_err(io::Error::other)?;
        let mut bytes = vec![0; len];
        backend.read(0, &mut bytes)?;
        let mut frames = Vec::new();
        let mut end = 0usize;
        let header_ok = bytes.len() >= HEADER_LEN as usize
            && &bytes[..8] == MAGIC
            && bytes[8..16] == epoch.to_le_bytes();
        if header_ok {
            end = HEADER_LEN as usize;
            while let Some(frame) = next_frame(&bytes, end) {
                end = frame.1;
                frames.push(frame.0);
            }
        }
        let torn_bytes = if header_ok { file_len - end as u64 } else { 0 };
        let wal = Wal { backend, epoch, len: end as u64 };
        Ok((wal, Recovered { bytes, frames, torn_bytes, header_ok }))
    }

    /// Start the log again, empty, under `epoch` (after a checkpoint made
    /// everything in it durable in redb).
    pub fn reset(&mut self, epoch: u64) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&epoch.to_le_bytes());
        self.backend.set_len(0)?;
        self.backend.write(0, &header)?;
        self.backend.sync_data()?;
        self.epoch = epoch;
        self.len = HEADER_LEN;
        Ok(())
    }

    /// Cut what follows the last whole frame (a torn write found by `open`).
    pub fn cut_tail(&mut self) -> io::Result<()> {
        self.backend.set_len(self.len)?;
        self.backend.sync_data()
    }

    /// Append a whole frame (as `FrameBuilder` left it) and make it durable.
    /// On an error the file is cut back to before the frame (best effort:
    /// an unsynced tail is dropped by the next open anyway).
    pub fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        let written = self.backend.write(self.len, frame).and_then(|()| self.backend.sync_data());
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.backend.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Take back the last frame, `frame_len` bytes, durably (its batch was
    /// not applied and is refused).
    pub fn unappend(&mut self, frame_len: u64) -> io::Result<()> {
        let len = self.len - frame_len;
        self.backend.set_len(len)?;
        self.backend.sync_data()?;
        self.len = len;
        Ok(())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes in the log (header included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Frames written since the last reset.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN
    }
}

/// The frame at `at` and where the next one starts; `None` at the end or at a
/// torn or corrupt frame.
fn next_frame(bytes: &[u8], at: usize) -> Option<(FrameIndex, usize)> {
    let head = bytes.get(at..at + FRAME_HEAD_LEN)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len > FRAME_LEN_MAX {
        return None;
    }
    let start = at + FRAME_HEAD_LEN;
    let body = bytes.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != sum {
        return None;
    }
    Some((parse_body(bytes, start, start + len)?, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone)]
    struct Mem(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl StorageBackend for Mem {
        fn len(&self) -> io::Result<u64> {
            Ok(self.0.lock().unwrap().len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            let b = self.0.lock().unwrap();
            out.copy_from_slice(&b[offset as usize..offset as usize + out.len()]);
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            let mut b = self.0.lock().unwrap();
            let end = offset as usize + data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
    }

    fn frame(buf: &mut Vec<u8>, first_seq: u64, ids: &[&str]) -> FrameIndex {
        let mut f = FrameBuilder::new(buf, first_seq);
        for id in ids {
            f.put(
                "notes",
                id,
                |b| b.extend_from_slice(b"rec"),
                |b| b.extend_from_slice(id.as_bytes()),
            );
        }
        f.cursor("peer:us-east", |b| b.push(7));
        f.finish()
    }

    fn text(bytes: &[u8], r: &Range<usize>) -> String {
        String::from_utf8(bytes[r.clone()].to_vec()).unwrap()
    }

    #[test]
    fn frames_read_back_in_order_and_a_torn_tail_ends_the_log() {
        let mem = Mem::default();
        let (mut wal, rec) = Wal::open(Box::new(mem.clone()), 3).unwrap();
        assert!(rec.frames.is_empty());
        wal.reset(3).unwrap();
        let mut buf = Vec::new();
        frame(&mut buf, 1, &["a", "b"]);
        wal.append(&buf).unwrap();
        frame(&mut buf, 3, &[]);
        wal.append(&buf).unwrap();
        // A torn third frame: half of it reached the disk.
        frame(&mut buf, 3, &["c"]);
        let whole = wal.len();
        mem.write(whole, &buf[..buf.len() / 2]).unwrap();

        let (mut wal, rec) = Wal::open(Box::new(mem.clone()), 3).unwrap();
        assert_eq!(rec.frames.len(), 2);
        assert_eq!(wal.len(), whole);
        assert_eq!(rec.torn_bytes, (buf.len() / 2) as u64);
        assert_eq!(rec.frames[0].next_seq(), 3);
        assert_eq!(rec.frames[1].next_seq(), 3);
        let ids: Vec<String> =
            rec.frames[0].puts.iter().map(|p| text(&rec.bytes, &p.entry)).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(rec.frames[1].cursors.len(), 1);
        assert_eq!(text(&rec.bytes, &rec.frames[1].cursors[0].0), "peer:us-east");
        assert_eq!(rec.bytes[rec.frames[1].cursors[0].1.clone()], [7]);
        wal.cut_tail().unwrap();
        assert_eq!(mem.len().unwrap(), whole);
    }

    #[test]
    fn a_flipped_byte_or_another_epoch_hides_the_frames() {
        let mem = Mem::default();
        let (mut wal, _) = Wal::open(Box::new(mem.clone()), 1).unwrap();
        wal.reset(1).unwrap();
        let mut buf = Vec::new();
        frame(&mut buf, 1, &["a"]);
        wal.append(&buf).unwrap();
        assert_eq!(Wal::open(Box::new(mem.clone()), 2).unwrap().1.frames.len(), 0);
        let last = mem.len().unwrap() - 1;
        let mut byte = [0u8];
        mem.read(last, &mut byte).unwrap();
        mem.write(last, &[byte[0] ^ 1]).unwrap();
        let (_, rec) = Wal::open(Box::new(mem), 1).unwrap();
        assert!(rec.frames.is_empty());
        assert!(rec.torn_bytes > 0);
    }

    #[test]
    fn unappend_takes_the_last_frame_back() {
        let mem = Mem::default();
        let (mut wal, _) = Wal::open(Box::new(mem.clone()), 0).unwrap();
        wal.reset(0).unwrap();
        let mut buf = Vec::new();
        frame(&mut buf, 1, &["a"]);
        wal.append(&buf).unwrap();
        wal.append(&buf).unwrap();
        wal.unappend(buf.len() as u64).unwrap();
        assert_eq!(Wal::open(Box::new(mem), 0).unwrap().1.frames.len(), 1);
    }
}
