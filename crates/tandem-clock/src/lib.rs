//! Time for tandem: the hybrid logical clock that orders concurrent writes and the
//! version vectors that decide causality. Pure code with an injectable time source,
//! so every decision here can be property-tested and simulated.

mod hlc;
mod version_vector;

pub use hlc::{
    ClockError, Hlc, HlcClock, ManualTime, SystemTime, TimeSource, DEFAULT_MAX_OFFSET_MS,
};
pub use version_vector::{Causality, VersionVector};
