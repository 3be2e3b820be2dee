//! A multi-value register: the state behind `lww` and each field of `lww-fields`.
//!
//! It keeps every version that no other version causally follows (the "siblings",
//! at most one per region that wrote concurrently), each with its version vector.
//! A write made after seeing all siblings replaces them, whatever the clocks say.
//! The visible value is the sibling with the greatest stamp (HLC, then region
//! name): that is the last-writer-wins fallback for truly concurrent writes.
//! Keeping the siblings, rather than only the winner, is what makes the merge
//! associative: a single register that kept only the winner and the joined
//! vector would let a causally overwritten write resurface depending on the
//! order merges happen in.

use serde::{Deserialize, Serialize};
use tandem_clock::{Causality, VersionVector};

use crate::Stamp;

/// One version of a register. `value` is canonical JSON text; `None` is a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub vv: VersionVector,
    pub stamp: Stamp,
    pub value: Option<String>,
}

impl Version {
    fn order_key(&self) -> (&Stamp, &Option<String>) {
        (&self.stamp, &self.value)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// An antichain under causal order, sorted by stamp; the last one is visible.
    versions: Vec<Version>,
}

impl Register {
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The visible version: the greatest stamp among the siblings.
    pub fn winner(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The visible value (`None` when never written or deleted).
    pub fn value(&self) -> Option<&str> {
        self.winner().and_then(|v| v.value.as_deref())
    }

    /// The join of every sibling's vector: everything this register has seen.
    pub fn vv(&self) -> VersionVector {
        let mut out = VersionVector::new();
        for v in &self.versions {
            out.join(&v.vv);
        }
        out
    }

    /// Install a local write. Its vector must follow every sibling: the caller
    /// builds it from `vv()` (or a larger record clock) plus a new dot.
    pub fn write(&mut self, version: Version) {
        for v in &self.versions {
            assert_eq!(
                version.vv.compare(&v.vv),
                Causality::After,
                "a local write must causally follow every sibling"
            );
        }
        self.versions.clear();
        self.versions.push(version);
    }

    /// Merge another replica's register into this one. Returns true when the
    /// state changed.
    pub fn merge(&mut self, other: &Register) -> bool {
        let mut all: Vec<Version> = Vec::with_capacity(self.versions.len() + other.versions.len());
        all.extend(self.versions.iter().cloned());
        for v in &other.versions {
            if let Some(i) = all.iter().position(|x| x.vv == v.vv) {
                // Equal vectors name the same write, as long as no actor ever
                // reuses a dot. Should one (a region wiped and restarted empty
                // instead of restored), keep the greater version on both sides
                // so replicas still converge, rather than take the node down.
                if all[i] != *v && v.order_key() > all[i].order_key() {
                    all[i] = v.clone();
                }
            } else {
                all.push(v.clone());
            }
        }
        let survivors: Vec<Version> = all
            .iter()
            .filter(|v| !all.iter().any(|w| w.vv.compare(&v.vv) == Causality::After))
            .cloned()
            .collect();
        let mut survivors = survivors;
        survivors.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let changed = survivors != self.versions;
        self.versions = survivors;
        debug_assert!(self.is_antichain());
        changed
    }

    fn is_antichain(&self) -> bool {
        self.versions.iter().enumerate().all(|(i, a)| {
            self.versions.iter().skip(i + 1).all(|b| a.vv.compare(&b.vv) == Causality::Concurrent)
        })
    }
}
