//! Opening the data file and replaying its log: `open_database` checks (or
//! sets) the layout and the owning region, `replay` applies the frames of the
//! current epoch again, and `apply_frame` is the one code path by which a
//! frame's bytes reach redb, for a commit as for a replay.

use std::io;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::backend::{is_no_space, BackendFactory, Failures, TrackedBackend};
use super::{CURSORS, LAYOUT_VERSION, LOG, META, RECORDS};
use crate::backend_error::{backend, OrBackend};
use crate::wal::{FrameIndex, Wal};
use crate::StoreError;
use std::sync::Arc;

/// An I/O error of the log as the store's error.
pub(super) fn wal_error(e: &io::Error, doing: &str) -> StoreError {
    if is_no_space(e) {
        StoreError::Full(format!("write-ahead log: {doing}: {e}"))
    } else {
        StoreError::Fatal(format!("write-ahead log: {doing}: {e}"))
    }
}

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, StoreError> {
    std::str::from_utf8(bytes).map_err(|e| StoreError::Decode { what, message: e.to_string() })
}

/// Apply one frame (its bytes in `bytes`) in the write transaction `txn`:
/// the same code for a commit and for a replay at open. `next_seq` only ever
/// moves forward, so replaying a frame redb already holds changes nothing.
pub(super) fn apply_frame(
    txn: &redb::WriteTransaction,
    bytes: &[u8],
    frame: &FrameIndex,
) -> Result<(), StoreError> {
    let mut records = txn.open_table(RECORDS).bk()?;
    let mut log = txn.open_table(LOG).bk()?;
    for (i, put) in frame.puts.iter().enumerate() {
        let entity = utf8(&bytes[put.entity.clone()], "entity")?;
        let id = utf8(&bytes[put.id.clone()], "id")?;
        // An empty record: put again later in the same frame, which stores it.
        if !put.record.is_empty() {
            records.insert((entity, id), &bytes[put.record.clone()]).bk()?;
        }
        log.insert(frame.first_seq + i as u64, &bytes[put.entry.clone()]).bk()?;
    }
    let mut cursors = txn.open_table(CURSORS).bk()?;
    for (key, value) in &frame.cursors {
        cursors.insert(utf8(&bytes[key.clone()], "cursor key")?, &bytes[value.clone()]).bk()?;
    }
    let mut meta = txn.open_table(META).bk()?;
    if frame.next_seq() > next_seq(&meta)? {
        meta.insert("next_seq", frame.next_seq().to_le_bytes().as_slice()).bk()?;
    }
    Ok(())
}

/// Replay the log of `db`: its frames of the epoch redb names, applied again
/// without a sync (they are durable in the log; the next checkpoint puts them
/// in the data file), and the log goes on after the last whole frame. So
/// opening, or reopening after a failed write, needs no room on the disk
/// beyond what redb buffers. Returns the log and the next sequence number.
pub(super) fn replay(db: &Database, open_wal: &BackendFactory) -> Result<(Wal, u64), StoreError> {
    let epoch = {
        let txn = db.begin_read().bk()?;
        meta_u64(&txn.open_table(META).bk()?, "wal_epoch")?.unwrap_or(0)
    };
    let backend = open_wal().map_err(|e| StoreError::Backend(format!("open the log: {e}")))?;
    let (mut wal, found) =
        Wal::open(backend, epoch).map_err(|e| StoreError::Backend(format!("read the log: {e}")))?;
    if !found.header_ok {
        // A new log (a new or upgraded directory), or one of the epoch
        // before the last checkpoint, which the data file holds entirely.
        wal.reset(epoch).map_err(|e| wal_error(&e, "start"))?;
    } else if found.torn_bytes > 0 {
        wal.cut_tail().map_err(|e| wal_error(&e, "cut a torn tail"))?;
    }
    let mut txn = db.begin_write().bk()?;
    txn.set_durability(Durability::None).bk()?;
    for frame in &found.frames {
        apply_frame(&txn, &found.bytes, frame)?;
    }
    let next = next_seq(&txn.open_table(META).bk()?)?;
    txn.commit().bk()?;
    if !found.frames.is_empty() || found.torn_bytes > 0 {
        tracing::info!(
            frames = found.frames.len(),
            torn_bytes = found.torn_bytes,
            "replayed the write-ahead log (a torn tail is a write that was never acknowledged)"
        );
    }
    Ok((wal, next))
}

/// Open the database and check (or set) its layout version and owner.
pub(super) fn open_database(
    open_backend: &BackendFactory,
    failures: &Arc<Failures>,
    region: &str,
) -> Result<Database, StoreError> {
    let inner = open_backend().map_err(|e| StoreError::Backend(format!("open: {e}")))?;
    let tracked = TrackedBackend::new(inner, failures.clone());
    let db = redb::Builder::new().create_with_backend(tracked).map_err(|e| match e {
        redb::DatabaseError::UpgradeRequired(v) => StoreError::Backend(format!(
            "the data file is in redb file format {v}, which this build cannot open; start the \
             node on it so that it upgrades the file first (see docs/STORAGE.md)"
        )),
        other => backend(other),
    })?;
    let txn = db.begin_write().bk()?;
    {
        txn.open_table(RECORDS).bk()?;
        txn.open_table(LOG).bk()?;
        txn.open_table(CURSORS).bk()?;
        let mut meta = txn.open_table(META).bk()?;
        match meta_u64(&meta, "format_version")? {
            // Layout 2 is layout 3 with an empty log.
            Some(2) => {
                meta.insert("format_version", LAYOUT_VERSION.to_le_bytes().as_slice()).bk()?;
            }
            Some(v) if v != LAYOUT_VERSION => {
                return Err(StoreError::IncompatibleFormat { found: v, expected: LAYOUT_VERSION })
            }
            Some(_) => {}
            None => {
                meta.insert("format_version", LAYOUT_VERSION.to_le_bytes().as_slice()).bk()?;
                meta.insert("next_seq", 1u64.to_le_bytes().as_slice()).bk()?;
            }
        }
        let owner =
            meta.get("region").bk()?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match owner {
            Some(r) if r != region => {
                return Err(StoreError::WrongRegion { found: r, expected: region.to_owned() })
            }
            Some(_) => {}
            None => {
                meta.insert("region", region.as_bytes()).bk()?;
            }
        }
    }
    txn.commit().bk()?;
    Ok(db)
}

pub(crate) fn meta_u64<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(t.get(key).bk()?.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

pub(super) fn next_seq<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
) -> Result<u64, StoreError> {
    Ok(meta_u64(t, "next_seq")?.expect("layout 2 always has next_seq"))
}
