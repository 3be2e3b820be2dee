//! The engine's typed errors. `StoreError`: what a store can answer (the node
//! turns it into 503 or 507, the replication loops retry). `Refusal`: why a
//! region refuses a client's write; every variant says enough for the API to
//! answer with the contract's code, and the residency ones name the reason
//! that `residency_denials_total{reason}` counts. Broken invariants are not
//! errors: they are assertions.

/// What a store backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("data file has format version {found}, this build reads version {expected}; refusing to open it")]
    IncompatibleFormat { found: u64, expected: u64 },
    #[error("data directory belongs to region `{found}`, not `{expected}`")]
    WrongRegion { found: String, expected: String },
    #[error("cannot decode stored {what}: {message}")]
    Decode { what: &'static str, message: String },
    /// The disk has no room for the write: nothing of it is durable, the
    /// store is back at its last commit after `Store::recover`, and writes
    /// may succeed once space returns.
    #[error("no space left for the store: {0}")]
    Full(String),
    /// A sync or a write failed for another reason: what the operating system
    /// holds of the file is unknown afterwards (the PostgreSQL fsync lesson),
    /// so the process must stop and recover from disk on restart.
    #[error("storage I/O failed, the store must be recovered from disk: {0}")]
    Fatal(String),
    /// Closed after a failed write, until `Store::recover` reopens it.
    #[error("the store is closed after a failed write and reopens once it can")]
    Closed,
}

/// Why a region refuses a local write. Nothing is stored for a refused write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("`{entity}` is a `{kind}` type; operation `{op}` does not apply to it")]
    WrongMergeType { entity: String, kind: tandem_merge::MergeKind, op: &'static str },
    #[error("`{entity}` is an analytics projection: it is derived from its source and cannot be written")]
    ReadOnlyProjection { entity: String },
    #[error("subject `{subject}` is not registered; PUT /v1/subjects/{subject} first")]
    UnknownSubject { subject: String },
    #[error("`{entity}` records of subject `{subject}` are personal data of {theirs}; region {region} is in {here}")]
    ResidencyViolation {
        entity: String,
        subject: String,
        region: String,
        here: String,
        theirs: String,
        home: String,
    },
    #[error("`{entity}` writes of subject `{subject}` go to its home region {home}")]
    Misdirected { entity: String, subject: String, home: String },
    #[error("subject `{subject}` is homed in {home} ({from}); moving it to {to} would take its personal data out of {from}")]
    CrossJurisdictionMove { subject: String, home: String, from: String, to: String },
    #[error("`{entity}` has an analytics projection but this region has no pseudonym key")]
    NoPseudonymKey { entity: String },
    #[error("{0}")]
    InvalidOp(String),
    #[error("the `{entity}` record would be {bytes} bytes, over the record limit of {limit} bytes ([replication] batch_bytes_max: a record's whole state must fit one replication batch); nothing was written")]
    RecordTooLarge { entity: String, bytes: usize, limit: usize },
}

impl Refusal {
    /// The HTTP status and error code of the contract (DESIGN.md).
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Refusal::WrongMergeType { .. } => (409, "wrong_merge_type"),
            Refusal::ReadOnlyProjection { .. } => (403, "read_only_projection"),
            Refusal::UnknownSubject { .. } => (422, "unknown_subject"),
            Refusal::ResidencyViolation { .. } => (403, "residency_violation"),
            Refusal::Misdirected { .. } => (421, "misdirected_write"),
            Refusal::CrossJurisdictionMove { .. } => (409, "cross_jurisdiction_move"),
            Refusal::NoPseudonymKey { .. } => (503, "unavailable"),
            Refusal::InvalidOp(_) => (400, "bad_request"),
            Refusal::RecordTooLarge { .. } => (413, "payload_too_large"),
        }
    }

    /// The `reason` label of `residency_denials_total`, for the refusals it counts.
    pub fn residency_reason(&self) -> Option<&'static str> {
        match self {
            Refusal::UnknownSubject { .. } => Some("unknown_subject"),
            Refusal::ResidencyViolation { .. } => Some("write_outside_jurisdiction"),
            Refusal::Misdirected { .. } => Some("misdirected_write"),
            _ => None,
        }
    }

    /// The subject's home region, for the refusals that name it.
    pub fn home_region(&self) -> Option<&str> {
        match self {
            Refusal::ResidencyViolation { home, .. }
            | Refusal::Misdirected { home, .. }
            | Refusal::CrossJurisdictionMove { home, .. } => Some(home),
            _ => None,
        }
    }
}

impl From<tandem_merge::MergeError> for Refusal {
    fn from(e: tandem_merge::MergeError) -> Self {
        use tandem_merge::MergeError as M;
        match e {
            M::WrongMergeType { kind, op } => {
                Refusal::WrongMergeType { entity: String::new(), kind, op }
            }
            M::KindMismatch { local, .. } => {
                Refusal::WrongMergeType { entity: String::new(), kind: local, op: "merge" }
            }
            M::CounterOverflow => Refusal::InvalidOp("counter would overflow".into()),
            M::InvalidOp(m) => Refusal::InvalidOp(m.to_owned()),
            // Local writes apply operations, never deltas.
            M::NotYet => unreachable!("a local write merged a delta"),
        }
    }
}
