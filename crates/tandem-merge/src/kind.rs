//! The names of the five merge strategies, as they appear in the config and the API.

use serde::{Deserialize, Serialize};

/// How concurrent writes of an entity type merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MergeKind {
    /// Last writer wins on causality first, HLC then region name for concurrent writes.
    #[serde(rename = "lww")]
    Lww,
    /// The `lww` rule applied per field.
    #[serde(rename = "lww-fields")]
    LwwFields,
    #[serde(rename = "g-counter")]
    GCounter,
    #[serde(rename = "pn-counter")]
    PnCounter,
    /// Add-wins observed-remove set of strings.
    #[serde(rename = "or-set")]
    OrSet,
}

impl MergeKind {
    pub const ALL: [MergeKind; 5] = [
        MergeKind::Lww,
        MergeKind::LwwFields,
        MergeKind::GCounter,
        MergeKind::PnCounter,
        MergeKind::OrSet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MergeKind::Lww => "lww",
            MergeKind::LwwFields => "lww-fields",
            MergeKind::GCounter => "g-counter",
            MergeKind::PnCounter => "pn-counter",
            MergeKind::OrSet => "or-set",
        }
    }

    /// Whether a record of this kind can be deleted.
    pub fn supports_delete(self) -> bool {
        matches!(self, MergeKind::Lww | MergeKind::LwwFields | MergeKind::OrSet)
    }
}

impl std::fmt::Display for MergeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown merge type `{0}` (expected one of: lww, lww-fields, g-counter, pn-counter, or-set)"
)]
pub struct UnknownMergeKind(pub String);

impl std::str::FromStr for MergeKind {
    type Err = UnknownMergeKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MergeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownMergeKind(s.to_owned()))
    }
}
