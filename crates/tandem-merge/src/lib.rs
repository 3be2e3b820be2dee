//! Merge types: how concurrent versions of a record become one. Each type is a
//! state-based CRDT whose merge is commutative, associative and idempotent, and
//! every merge reports whether it resolved a conflict so the node can count it.
//!
//! - `lww` and each field of `lww-fields` are multi-value registers: causality
//!   (version vectors) decides; only concurrent versions fall back to
//!   hybrid-logical-clock order, then region name.
//! - `g-counter` and `pn-counter` keep one slot per region.
//! - `or-set` is an add-wins ORSWOT: dots and a causal context, no tombstones.
//!
//! Big `or-set` and `lww-fields` records ship deltas to peers (`delta`).

mod conflict;
mod counter;
mod delta;
mod kind;
mod lww;
mod lww_fields;
mod or_set;
mod register;
mod stamp;
mod state;

pub use conflict::{
    possible_conflicts, Conflict, ConflictSide, ConflictType, MergeOutcome, Resolution, Winner,
};
pub use counter::{CounterOverflow, GCounter, PnCounter};
pub use delta::{ships_whole, NotYet, OrSetDelta, SetChange, DELTA_MEMBERS_MIN, DELTA_TAGS};
pub use kind::{MergeKind, UnknownMergeKind};
pub use lww::{ExpiryChange, Lww, LwwExpiring};
pub use lww_fields::LwwFields;
pub use or_set::OrSet;
pub use register::{Register, Version};
pub use stamp::Stamp;
pub use state::{MergeError, Op, State};
