//! Upgrading a region's data file written by an earlier tandem, in place, when
//! the node opens it. Layout 1 is a redb 2 file, which redb 4 cannot open (its
//! file format and its encoding of tuple keys changed); layout 2 is redb 4
//! with a persisted `next_seq`. The upgrade copies every table into a new redb
//! 4 file (values are unchanged: their format tag stays 1), then swaps the
//! files with two renames and keeps the old one as `tandem.redb.layout1`, to
//! be deleted by the operator once satisfied. A crash between the renames is
//! finished on the next open; a crash before them leaves the old file as it
//! was and the copy is made again.

use std::path::Path;

use redb2::ReadableTable as _;

use crate::backend_error::OrBackend;
use crate::redb_store::{CURSORS, LAYOUT_VERSION, LOG, META, RECORDS};
use crate::StoreError;

/// The region's data file.
pub const DATA_FILE: &str = "tandem.redb";
/// The new file while it is being written.
const UPGRADING_FILE: &str = "tandem.redb.upgrading";
/// The layout-1 file, kept after an upgrade.
pub const LAYOUT_1_FILE: &str = "tandem.redb.layout1";

const RECORDS_V1: redb2::TableDefinition<(&str, &str), &[u8]> =
    redb2::TableDefinition::new("records");
const LOG_V1: redb2::TableDefinition<u64, &[u8]> = redb2::TableDefinition::new("log");
const CURSORS_V1: redb2::TableDefinition<&str, &[u8]> = redb2::TableDefinition::new("cursors");
const META_V1: redb2::TableDefinition<&str, &[u8]> = redb2::TableDefinition::new("meta");

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    pub records: u64,
    pub log_entries: u64,
}

/// Upgrade the data file in `dir` (a region's directory) to the current
/// layout if it is of an earlier one. `Ok(None)`: nothing to do.
pub fn upgrade_in_place(dir: &Path, region: &str) -> Result<Option<Upgraded>, StoreError> {
    let path = dir.join(DATA_FILE);
    let upgrading = dir.join(UPGRADING_FILE);
    let kept = dir.join(LAYOUT_1_FILE);
    if !path.exists() && upgrading.exists() && kept.exists() {
        // The copy was complete and the old file moved aside: finish.
        std::fs::rename(&upgrading, &path).bk()?;
        sync_dir(dir)?;
        return Ok(None);
    }
    if !path.exists() || !is_layout_1(&path)? {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&upgrading);
    let done = copy_layout_1(&path, &upgrading, region)?;
    std::fs::rename(&path, &kept).bk()?;
    std::fs::rename(&upgrading, &path).bk()?;
    sync_dir(dir)?;
    tracing::warn!(
        records = done.records,
        log_entries = done.log_entries,
        kept = %kept.display(),
        "upgraded the data file from layout 1 (redb 2) to layout {LAYOUT_VERSION} (redb 4); the old file is kept and may be deleted"
    );
    Ok(Some(done))
}

/// A redb 2 file: redb 4 says it needs an upgrade.
fn is_layout_1(path: &Path) -> Result<bool, StoreError> {
    match redb::Builder::new().open(path) {
        Ok(_) => Ok(false),
        Err(redb::DatabaseError::UpgradeRequired(_)) => Ok(true),
        Err(e) => Err(StoreError::Backend(format!("open {}: {e}", path.display()))),
    }
}

fn copy_layout_1(from: &Path, to: &Path, region: &str) -> Result<Upgraded, StoreError> {
    let src = redb2::Database::open(from).bk()?;
    let read = src.begin_read().bk()?;
    let meta_v1 = read.open_table(META_V1).bk()?;
    let meta_u64 = |key: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta_v1.get(key).bk()?.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
    };
    match meta_u64("format_version")? {
        Some(1) => {}
        found => {
            return Err(StoreError::IncompatibleFormat { found: found.unwrap_or(0), expected: 1 })
        }
    }
    let owner =
        meta_v1.get("region").bk()?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
    if let Some(owner) = owner.filter(|o| o != region) {
        return Err(StoreError::WrongRegion { found: owner, expected: region.to_owned() });
    }
    let floor = meta_u64("seq_floor")?;
    let own_have = meta_u64("own_have")?;

    let dst = redb::Database::create(to).bk()?;
    let mut write = dst.begin_write().bk()?;
    write.set_durability(redb::Durability::Immediate).bk()?;
    let mut done = Upgraded { records: 0, log_entries: 0 };
    {
        let mut records = write.open_table(RECORDS).bk()?;
        for item in read.open_table(RECORDS_V1).bk()?.iter().bk()? {
            let (k, v) = item.bk()?;
            records.insert(k.value(), v.value()).bk()?;
            done.records += 1;
        }
        let mut log = write.open_table(LOG).bk()?;
        let mut last = 0;
        for item in read.open_table(LOG_V1).bk()?.iter().bk()? {
            let (k, v) = item.bk()?;
            last = k.value();
            log.insert(last, v.value()).bk()?;
            done.log_entries += 1;
        }
        let mut cursors = write.open_table(CURSORS).bk()?;
        for item in read.open_table(CURSORS_V1).bk()?.iter().bk()? {
            let (k, v) = item.bk()?;
            cursors.insert(k.value(), v.value()).bk()?;
        }
        let mut meta = write.open_table(META).bk()?;
        meta.insert("format_version", LAYOUT_VERSION.to_le_bytes().as_slice()).bk()?;
        meta.insert("region", region.as_bytes()).bk()?;
        // Layout 1 numbered from the last entry, or the restore's floor.
        let next = (last + 1).max(floor.unwrap_or(0));
        meta.insert("next_seq", next.to_le_bytes().as_slice()).bk()?;
        if let Some(f) = floor {
            meta.insert("incarnation", f.to_le_bytes().as_slice()).bk()?;
        }
        if let Some(h) = own_have {
            meta.insert("own_have", h.to_le_bytes().as_slice()).bk()?;
        }
    }
    write.commit().bk()?;
    Ok(done)
}

/// Make the names in `dir` (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Backend(format!("sync {}: {e}", dir.display())))
}
