//! Deliberate bugs, for the deterministic simulation only: it passes a
//! `Faults` with one of them set to show that its checker catches each class
//! of bug in the real engine, with a reproducible seed. The node always runs
//! with `Faults::NONE`; no config key or command-line flag reaches this.

/// Which step of the engine to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Remote apply replaces the local state with a remote one whose stamp is
    /// newer instead of merging (a whole-state last-writer-wins "merge").
    pub merge_overwrites: bool,
    /// The direct stream serves a region's own changes without the residency
    /// filter (the receiver still refuses what it may not hold).
    pub skip_residency_when_serving: bool,
    /// Remote apply stores what this region may not hold.
    pub skip_residency_when_applying: bool,
    /// A batch's writes are acknowledged before the batch is durable.
    pub ack_before_durable: bool,
    /// The stability horizon evicts regions silent for 2 s, without the
    /// resync that must come with an eviction.
    pub horizon_ignores_silent_regions: bool,
}

impl Faults {
    /// The engine as it is.
    pub const NONE: Faults = Faults {
        merge_overwrites: false,
        skip_residency_when_serving: false,
        skip_residency_when_applying: false,
        ack_before_durable: false,
        horizon_ignores_silent_regions: false,
    };
}
