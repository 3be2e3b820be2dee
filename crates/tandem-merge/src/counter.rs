//! Counters: `g-counter` (increments only) and `pn-counter` (increments and
//! decrements as two grow-only halves). Each region owns one slot per half and
//! only ever raises its own slot; merge takes the per-slot maximum. Concurrent
//! increments are never a conflict: both always count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
/// A grow-only counter: one slot per region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GCounter {
    slots: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("counter slot would overflow")]
pub struct CounterOverflow;

impl GCounter {
    pub fn increment(&mut self, region: &str, by: u64) -> Result<(), CounterOverflow> {
        let slot = self.slots.entry(region.to_owned()).or_insert(0);
        let next = slot.checked_add(by).filter(|n| *n <= i64::MAX as u64).ok_or(CounterOverflow)?;
        *slot = next;
        Ok(())
    }

    pub fn merge(&mut self, other: &GCounter) -> bool {
        let mut changed = false;
        for (region, &n) in &other.slots {
            let slot = self.slots.entry(region.clone()).or_insert(0);
            if n > *slot {
                *slot = n;
                changed = true;
            }
        }
        changed
    }

    /// Sum of all slots (wide, so many regions near the limit cannot overflow).
    pub fn total(&self) -> i128 {
        self.slots.values().map(|&n| n as i128).sum()
    }

    /// Slots as a version vector: what each region has contributed.
    pub fn slots(&self) -> impl Iterator<Item = (&str, u64)> {
        self.slots.iter().map(|(r, &n)| (r.as_str(), n))
    }
}

/// A counter that goes both ways: increments and decrements kept apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    pub(crate) incr: GCounter,
    pub(crate) decr: GCounter,
}

impl PnCounter {
    pub fn increment(&mut self, region: &str, by: u64) -> Result<(), CounterOverflow> {
        self.incr.increment(region, by)
    }

    pub fn decrement(&mut self, region: &str, by: u64) -> Result<(), CounterOverflow> {
        self.decr.increment(region, by)
    }

    pub fn merge(&mut self, other: &PnCounter) -> bool {
        let a = self.incr.merge(&other.incr);
        let b = self.decr.merge(&other.decr);
        a || b
    }

    pub fn total(&self) -> i128 {
        self.incr.total() - self.decr.total()
    }
}
