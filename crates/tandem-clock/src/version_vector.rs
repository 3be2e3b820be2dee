//! Version vectors: one counter per region, counting the writes of that region a
//! version has seen. Comparing two vectors tells whether one version causally
//! precedes the other or whether they are concurrent; that comparison, not wall
//! time, decides which write wins.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The causal relation between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// `self` happened before `other` (other has seen everything self has, and more).
    Before,
    /// `self` happened after `other`.
    After,
    Equal,
    /// Neither has seen the other.
    Concurrent,
}

/// A version vector: region name to the number of that region's writes seen.
/// Zero entries are never stored, so equal vectors are equal maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<String, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, region: &str) -> u64 {
        self.0.get(region).copied().unwrap_or(0)
    }

    /// Set one region's counter (a zero removes the entry).
    pub fn set(&mut self, region: &str, counter: u64) {
        if counter == 0 {
            self.0.remove(region);
        } else {
            self.0.insert(region.to_owned(), counter);
        }
    }

    /// Count one more write of `region`, returning its new counter.
    pub fn increment(&mut self, region: &str) -> u64 {
        let slot = self.0.entry(region.to_owned()).or_insert(0);
        *slot = slot.checked_add(1).expect("version vector counter overflow");
        *slot
    }

    /// Pointwise maximum: the smallest vector that has seen both.
    pub fn join(&mut self, other: &VersionVector) {
        for (region, &counter) in &other.0 {
            let slot = self.0.entry(region.clone()).or_insert(0);
            if counter > *slot {
                *slot = counter;
            }
        }
    }

    pub fn joined(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.clone();
        out.join(other);
        out
    }

    /// True when this vector has seen the dot `(region, counter)`.
    pub fn contains(&self, region: &str, counter: u64) -> bool {
        self.get(region) >= counter
    }

    /// True when every counter of `other` is at most the one here.
    pub fn dominates_or_equals(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(r, &c)| self.get(r) >= c)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        let ge = self.dominates_or_equals(other);
        let le = other.dominates_or_equals(self);
        match (ge, le) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// The partial order as `Option<Ordering>` (None when concurrent).
    pub fn partial_cmp_causal(&self, other: &VersionVector) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Equal => Some(Ordering::Equal),
            Causality::Concurrent => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(r, &c)| (r.as_str(), c))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all counters: how many writes this version has seen.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl FromIterator<(String, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (r, c) in iter {
            v.set(&r, c);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs.iter().map(|(r, c)| (r.to_string(), *c)).collect()
    }

    #[test]
    fn compares_causally() {
        let a = vv(&[("eu", 1)]);
        let b = vv(&[("eu", 2)]);
        let c = vv(&[("us", 1)]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert_eq!(b.joined(&c).compare(&c), Causality::After);
        assert_eq!(VersionVector::new().compare(&a), Causality::Before);
    }

    #[test]
    fn zero_entries_do_not_count() {
        let mut a = vv(&[("eu", 0)]);
        assert_eq!(a, VersionVector::new());
        a.increment("eu");
        assert!(a.contains("eu", 1));
        assert!(!a.contains("eu", 2));
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "d"]),
            0u64..5,
            0..4,
        )
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert_eq!(a.joined(&b), b.joined(&a));
            prop_assert_eq!(a.joined(&b).joined(&c), a.joined(&b.joined(&c)));
            prop_assert_eq!(a.joined(&a), a.clone());
            let j = a.joined(&b);
            prop_assert!(j.dominates_or_equals(&a) && j.dominates_or_equals(&b));
        }

        #[test]
        fn compare_is_antisymmetric(a in arb_vv(), b in arb_vv()) {
            let flipped = match a.compare(&b) {
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                x => x,
            };
            prop_assert_eq!(b.compare(&a), flipped);
            prop_assert_eq!(a.compare(&b) == Causality::Equal, a == b);
        }
    }
}
