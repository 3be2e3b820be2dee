//! A write's stamp: its hybrid-logical-clock time and origin region. Stamps order
//! concurrent writes (HLC first, region name as the tie-break); they never decide
//! between writes that are causally ordered.

use serde::{Deserialize, Serialize};
use tandem_clock::Hlc;

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: Hlc,
    pub origin: String,
}

impl Stamp {
    pub fn new(hlc: Hlc, origin: &str) -> Self {
        Stamp { hlc, origin: origin.to_owned() }
    }

    /// Keep the larger of two stamps (a join-semilattice on `(hlc, origin)`).
    pub fn join(&mut self, other: &Stamp) {
        if other > self {
            *self = other.clone();
        }
    }
}
