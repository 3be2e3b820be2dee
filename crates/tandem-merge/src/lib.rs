//! Merge types: how concurrent versions of a record become one. Each type is a
//! state-based CRDT whose merge is commutative, associative and idempotent, and
//! every merge reports whether it resolved a conflict so the node can count it.

mod kind;

pub use kind::{MergeKind, UnknownMergeKind};
