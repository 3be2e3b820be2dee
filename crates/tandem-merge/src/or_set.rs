//! `or-set`: an add-wins observed-remove set of strings, kept as an ORSWOT
//! (observed-remove set without tombstones). Each add tags the element with a
//! fresh dot `(region, counter)`; a remove drops the dots it has observed; the
//! causal context (a version vector) remembers which dots were seen, so a merge
//! can tell "removed here" from "not yet seen here". Metadata is bounded: at most
//! one dot per region per live element, and one counter per region.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tandem_clock::VersionVector;

use crate::delta::{NotYet, OrSetDelta, SetChange};

type Dot = (String, u64);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    entries: BTreeMap<String, BTreeSet<Dot>>,
    clock: VersionVector,
}

impl OrSet {
    pub fn add(&mut self, elements: &[String], region: &str) {
        for e in elements {
            let counter = self.clock.increment(region);
            let dots = self.entries.entry(e.clone()).or_default();
            // Every dot this replica holds for `e` is observed by the new add.
            dots.clear();
            dots.insert((region.to_owned(), counter));
        }
    }

    /// Remove observed elements. Returns false when none of them was present.
    pub fn remove(&mut self, elements: &[String], region: &str) -> bool {
        let mut any = false;
        for e in elements {
            any |= self.entries.remove(e).is_some();
        }
        if any {
            // A remove is an event too: it advances the context so the record's
            // version shows it (and a concurrent re-add is told apart from it).
            self.clock.increment(region);
        }
        any
    }

    pub fn clear(&mut self, region: &str) -> bool {
        let all: Vec<String> = self.entries.keys().cloned().collect();
        self.remove(&all, region)
    }

    pub fn merge(&mut self, other: &OrSet) -> bool {
        let mut changed = false;
        // Elements held here: keep a dot if the other side holds it too or has
        // never seen it; take the other side's dots this side has not seen.
        self.entries.retain(|e, mine| {
            let theirs = other.entries.get(e);
            let before = mine.len();
            mine.retain(|(r, c)| {
                theirs.is_some_and(|t| t.contains(&(r.clone(), *c))) || !other.clock.contains(r, *c)
            });
            changed |= mine.len() != before;
            if let Some(theirs) = theirs {
                for (r, c) in theirs {
                    if !self.clock.contains(r, *c) && mine.insert((r.clone(), *c)) {
                        changed = true;
                    }
                }
            }
            !mine.is_empty()
        });
        // Elements only the other side holds: take the dots not seen here.
        for (e, theirs) in &other.entries {
            if self.entries.contains_key(e) {
                continue;
            }
            let fresh: BTreeSet<Dot> =
                theirs.iter().filter(|(r, c)| !self.clock.contains(r, *c)).cloned().collect();
            if !fresh.is_empty() {
                changed = true;
                self.entries.insert(e.clone(), fresh);
            }
        }
        if !self.clock.dominates_or_equals(&other.clock) {
            self.clock.join(&other.clock);
            changed = true;
        }
        changed
    }

    /// Apply a change made at another replica (see `crate::delta`): exactly
    /// the merge of that replica's whole state after the change, provided
    /// this replica has seen everything the change had seen; `NotYet`
    /// otherwise, and nothing changes. Returns whether anything changed.
    pub fn apply_delta(&mut self, d: &OrSetDelta) -> Result<bool, NotYet> {
        let (seen, last) = (self.clock.get(&d.actor), d.last());
        if seen >= last {
            return Ok(false); // this change, and what it had seen, are here
        }
        if !self.clock.dominates_or_equals(&d.base) {
            return Err(NotYet);
        }
        // Having seen its context, this replica has seen every earlier
        // change of the actor, and none of this one.
        assert_eq!(seen + 1, d.first, "dots of one actor are seen in order");
        // The change observed exactly the dots of its context: those go,
        // dots added concurrently (not in the context) stay.
        let unobserved = |dots: &mut BTreeSet<Dot>| dots.retain(|(r, c)| !d.base.contains(r, *c));
        match &d.change {
            SetChange::Add(elements) => {
                // An element added twice in one change keeps its last dot.
                let mut dot_of: BTreeMap<&String, u64> = BTreeMap::new();
                for (i, e) in elements.iter().enumerate() {
                    dot_of.insert(e, d.first + i as u64);
                }
                for (e, counter) in dot_of {
                    let dots = self.entries.entry(e.clone()).or_default();
                    unobserved(dots);
                    dots.insert((d.actor.clone(), counter));
                }
            }
            SetChange::Remove(elements) => {
                for e in elements {
                    if let Some(dots) = self.entries.get_mut(e) {
                        unobserved(dots);
                        if dots.is_empty() {
                            self.entries.remove(e);
                        }
                    }
                }
            }
        }
        self.clock.set(&d.actor, last);
        Ok(true)
    }

    /// Only `elements` (those present), with the whole causal context.
    pub fn only(&self, elements: &[String]) -> OrSet {
        let entries = elements
            .iter()
            .filter_map(|e| self.entries.get(e).map(|dots| (e.clone(), dots.clone())))
            .collect();
        OrSet { entries, clock: self.clock.clone() }
    }

    pub fn elements(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, element: &str) -> bool {
        self.entries.contains_key(element)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn version(&self) -> VersionVector {
        self.clock.clone()
    }

    /// Dots held for live elements (for bounded-metadata checks).
    pub fn dot_count(&self) -> usize {
        self.entries.values().map(BTreeSet::len).sum()
    }
}
