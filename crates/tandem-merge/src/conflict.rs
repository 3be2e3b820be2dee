//! What a merge reports: whether it resolved a conflict (two versions of a record
//! where neither causally precedes the other and whose values differ), of which
//! type, how it was resolved, and both versions for `GET /v1/conflicts`.

use serde::{Deserialize, Serialize};

use crate::Stamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConflictType {
    /// Two concurrent writes of the whole value (`lww`).
    ConcurrentWrite,
    /// A write concurrent with a delete (`lww`).
    UpdateDelete,
    /// Concurrent writes of the same field with different values (`lww-fields`).
    ConcurrentFieldWrite,
    /// Concurrent updates of a record that merged without losing either
    /// (different fields of `lww-fields`, concurrent `or-set` changes).
    ConcurrentUpdate,
}

impl ConflictType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictType::ConcurrentWrite => "concurrent_write",
            ConflictType::UpdateDelete => "update_delete",
            ConflictType::ConcurrentFieldWrite => "concurrent_field_write",
            ConflictType::ConcurrentUpdate => "concurrent_update",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resolution {
    /// The version with the later hybrid-logical-clock time won.
    HlcWins,
    /// Equal HLC times; the greater region name won.
    RegionTiebreak,
    /// Different fields changed concurrently: both changes were kept.
    FieldsMerged,
    /// Set changes merged; an add concurrent with a remove of the same element wins.
    AddWins,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::HlcWins => "hlc_wins",
            Resolution::RegionTiebreak => "region_tiebreak",
            Resolution::FieldsMerged => "fields_merged",
            Resolution::AddWins => "add_wins",
        }
    }
}

/// Every (type, resolution) a conflict of a record of `kind` can be reported
/// as (counters never conflict). Metrics are declared with these at zero, so
/// an alert's rate sees the first conflict, and dashboards see the family.
pub fn possible_conflicts(kind: crate::MergeKind) -> &'static [(ConflictType, Resolution)] {
    use ConflictType as T;
    use Resolution as R;
    match kind {
        crate::MergeKind::Lww => &[
            (T::ConcurrentWrite, R::HlcWins),
            (T::ConcurrentWrite, R::RegionTiebreak),
            (T::UpdateDelete, R::HlcWins),
            (T::UpdateDelete, R::RegionTiebreak),
        ],
        crate::MergeKind::LwwFields => &[
            (T::ConcurrentFieldWrite, R::HlcWins),
            (T::ConcurrentFieldWrite, R::RegionTiebreak),
            (T::ConcurrentUpdate, R::FieldsMerged),
        ],
        crate::MergeKind::OrSet => &[(T::ConcurrentUpdate, R::AddWins)],
        crate::MergeKind::GCounter | crate::MergeKind::PnCounter => &[],
    }
}

/// Which version a conflict's resolution kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Winner {
    Local,
    Remote,
    /// Neither as it was: the result combines both.
    Merged,
}

impl Winner {
    pub fn as_str(self) -> &'static str {
        match self {
            Winner::Local => "local",
            Winner::Remote => "remote",
            Winner::Merged => "merged",
        }
    }
}

/// One side of a conflict as it was before the merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictSide {
    pub stamp: Stamp,
    /// Materialized value as JSON text; `None` when absent or deleted.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub conflict_type: ConflictType,
    pub resolution: Resolution,
    /// For `lww-fields`: the field whose concurrent writes were resolved.
    pub field: Option<String>,
    pub local: ConflictSide,
    pub remote: ConflictSide,
    pub winner: Winner,
    /// The merged value as JSON text.
    pub merged: Option<String>,
}

impl Conflict {
    /// The stamp of the older of the two conflicting writes (for the conflict age).
    pub fn older(&self) -> &Stamp {
        std::cmp::min(&self.local.stamp, &self.remote.stamp)
    }
}

/// The result of merging a remote state into a local one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The local state changed.
    pub changed: bool,
    /// Set when the two versions were concurrent and different.
    pub conflict: Option<Conflict>,
}
