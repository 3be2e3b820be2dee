//! `lww-fields`: an object whose fields are independent last-writer-wins
//! registers, so concurrent updates of different fields both survive. A field
//! set to null is removed; deleting the record removes every field it has seen
//! (a concurrent write of a field the delete had not seen survives it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tandem_clock::{Hlc, VersionVector};

use crate::register::{Register, Version};
use crate::Stamp;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwFields {
    fields: BTreeMap<String, Register>,
}

impl LwwFields {
    /// Everything this record has seen: the join of every field's vector. Every
    /// write takes its dot from here, so dots are unique across fields.
    pub fn version(&self) -> VersionVector {
        let mut out = VersionVector::new();
        for reg in self.fields.values() {
            out.join(&reg.vv());
        }
        out
    }

    /// Set (`Some`) or remove (`None`) fields in one write: one dot for all.
    pub fn write(&mut self, changes: &BTreeMap<String, Option<String>>, region: &str, hlc: Hlc) {
        self.write_as(changes, region, Stamp::new(hlc, region));
    }

    /// As `write`, with the dot named by `actor` and the given stamp.
    pub fn write_as(
        &mut self,
        changes: &BTreeMap<String, Option<String>>,
        actor: &str,
        stamp: Stamp,
    ) {
        let mut clock = self.version();
        let dot = clock.increment(actor);
        for (name, value) in changes {
            let reg = self.fields.entry(name.clone()).or_default();
            let mut vv = reg.vv();
            vv.set(actor, dot);
            reg.write(Version { vv, stamp: stamp.clone(), value: value.clone() });
        }
    }

    /// Remove every field seen so far.
    pub fn delete(&mut self, region: &str, hlc: Hlc) {
        self.delete_as(region, Stamp::new(hlc, region));
    }

    pub fn delete_as(&mut self, actor: &str, stamp: Stamp) {
        let all: BTreeMap<String, Option<String>> =
            self.fields.keys().map(|k| (k.clone(), None)).collect();
        if all.is_empty() {
            return;
        }
        self.write_as(&all, actor, stamp);
    }

    pub fn merge(&mut self, other: &LwwFields) -> bool {
        let mut changed = false;
        for (name, reg) in &other.fields {
            changed |= self.fields.entry(name.clone()).or_default().merge(reg);
        }
        changed
    }

    /// Live fields and their values (JSON text).
    pub fn live(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().filter_map(|(k, r)| r.value().map(|v| (k.as_str(), v)))
    }

    /// Only the fields `names` (as they are here): a delta of a change to
    /// them, which merges like the whole record (fields are independent).
    pub fn part<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> LwwFields {
        let fields = names
            .into_iter()
            .filter_map(|n| self.fields.get(n).map(|r| (n.clone(), r.clone())))
            .collect();
        LwwFields { fields }
    }

    pub fn fields(&self) -> &BTreeMap<String, Register> {
        &self.fields
    }

    /// The greatest stamp among visible versions (live or removed fields).
    pub fn stamp(&self) -> Option<&Stamp> {
        self.fields.values().filter_map(|r| r.winner().map(|v| &v.stamp)).max()
    }
}
