//! `lww`: a whole-value last-writer-wins register with deletes. Causality decides
//! first (see `register`); HLC time and then region name only break ties between
//! truly concurrent writes.

use serde::{Deserialize, Serialize};
use tandem_clock::{Hlc, VersionVector};

use crate::register::{Register, Version};
use crate::Stamp;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww {
    pub(crate) register: Register,
}

impl Lww {
    /// Write a value (JSON text) or, with `None`, delete. `actor` names the
    /// dot (a region's incarnation); `stamp` orders concurrent writes.
    pub fn write_as(&mut self, value: Option<String>, actor: &str, stamp: Stamp) {
        let mut vv = self.register.vv();
        vv.increment(actor);
        self.register.write(Version { vv, stamp, value });
    }

    pub fn write(&mut self, value: Option<String>, region: &str, hlc: Hlc) {
        self.write_as(value, region, Stamp::new(hlc, region));
    }

    /// A register holding one version with a vector chosen by the caller (used
    /// for opaque sealed copies, whose order is the origin's log order).
    pub fn with_version(vv: VersionVector, stamp: Stamp, value: String) -> Lww {
        let mut register = Register::default();
        register.write(Version { vv, stamp, value: Some(value) });
        Lww { register }
    }

    pub fn merge(&mut self, other: &Lww) -> bool {
        self.register.merge(&other.register)
    }

    pub fn value(&self) -> Option<&str> {
        self.register.value()
    }

    pub fn version(&self) -> VersionVector {
        self.register.vv()
    }

    /// Stamp of the visible version.
    pub fn stamp(&self) -> Option<&Stamp> {
        self.register.winner().map(|v| &v.stamp)
    }

    pub fn register(&self) -> &Register {
        &self.register
    }
}

/// An `lww` record with an expiry (Redis `EXPIRE`, `SET ... EX`): the value
/// register and a second register of deadlines (HLC wall-clock ms as text;
/// `None` is "no expiry"), merged causally like the value. A causally later
/// change of the expiry replaces the earlier one; among concurrent ones, no
/// expiry beats every deadline (`PERSIST`, or a `SET` that cleared it), else
/// the latest deadline wins (Redis Active-Active's rule). Both registers
/// take their dots from one vector, so a dot is never handed out twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwExpiring {
    pub lww: Lww,
    expiry: Register,
}

/// What a write does to an expiring record's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryChange {
    Keep,
    Clear,
    At(u64),
}

impl From<Lww> for LwwExpiring {
    fn from(lww: Lww) -> LwwExpiring {
        LwwExpiring { lww, expiry: Register::default() }
    }
}

impl LwwExpiring {
    /// Write the value (`Some(None)` deletes, `None` keeps it) and change the
    /// expiry, as one write with one new dot.
    pub fn write_as(
        &mut self,
        value: Option<Option<String>>,
        expiry: ExpiryChange,
        actor: &str,
        stamp: Stamp,
    ) {
        let mut vv = self.version();
        vv.increment(actor);
        if let Some(value) = value {
            self.lww.register.write(Version { vv: vv.clone(), stamp: stamp.clone(), value });
        }
        let deadline = match expiry {
            ExpiryChange::Keep => return,
            ExpiryChange::Clear => None,
            ExpiryChange::At(ms) => Some(ms.to_string()),
        };
        self.expiry.write(Version { vv, stamp, value: deadline });
    }

    pub fn merge(&mut self, other: &LwwExpiring) -> bool {
        let value = self.lww.merge(&other.lww);
        let expiry = self.expiry.merge(&other.expiry);
        value || expiry
    }

    /// Everything both registers have seen.
    pub fn version(&self) -> VersionVector {
        let mut vv = self.lww.version();
        vv.join(&self.expiry.vv());
        vv
    }

    /// Whether an expiry was ever set or cleared.
    pub fn has_expiry(&self) -> bool {
        !self.expiry.versions().is_empty()
    }

    /// The deadline in HLC wall-clock ms, `None` when the record does not
    /// expire.
    pub fn deadline_ms(&self) -> Option<u64> {
        let versions = self.expiry.versions();
        if versions.iter().any(|v| v.value.is_none()) {
            return None;
        }
        versions.iter().filter_map(|v| v.value.as_deref()?.parse().ok()).max()
    }
}
