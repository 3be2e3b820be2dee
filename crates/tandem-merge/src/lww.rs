//! `lww`: a whole-value last-writer-wins register with deletes. Causality decides
//! first (see `register`); HLC time and then region name only break ties between
//! truly concurrent writes.

use serde::{Deserialize, Serialize};
use tandem_clock::{Hlc, VersionVector};

use crate::register::{Register, Version};
use crate::Stamp;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww {
    register: Register,
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
