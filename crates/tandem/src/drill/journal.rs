//! The drill's record of what happened: its clock (seconds since the drill
//! started, with the wall-clock time of that start for RFC 3339 stamps) and
//! the journal of every request the workload and the checks sent through the
//! router — when, what, to whom, and how it was answered. Acknowledged writes
//! are the journal's writes answered 2xx; the verification, the measurements
//! and the timeline are all computed from it afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Seconds since the drill started, and the wall-clock time of that start.
#[derive(Debug, Clone, Copy)]
pub struct DrillClock {
    start: Instant,
    pub start_unix_ms: u64,
}

impl DrillClock {
    pub fn start() -> DrillClock {
        let start_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        DrillClock { start: Instant::now(), start_unix_ms }
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Wall-clock milliseconds of drill time `t` (to compare with HLC stamps).
    pub fn unix_ms_at(&self, t: f64) -> u64 {
        self.start_unix_ms + (t.max(0.0) * 1000.0) as u64
    }
}

/// What a write did to its record, so that it can be checked afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WriteOp {
    /// `lww` put of `value` (field `None`) or `lww-fields` patch of one field.
    Set { field: Option<String>, value: u64 },
    /// Counter increment.
    Incr { by: u64 },
    /// Or-set add of one element.
    Add { element: String },
}

/// Whether a write took effect, as far as the client can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOutcome {
    /// Answered 2xx: it must survive.
    Acked,
    /// Refused with an answer that says nothing was written.
    Rejected,
    /// No answer, or an answer that cannot say (timeout, upstream error).
    Unknown,
}

/// One request and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Drill time the request was sent and answered (or given up), seconds.
    pub sent_s: f64,
    pub done_s: f64,
    pub entity: String,
    pub id: String,
    /// `put`, `patch`, `incr`, `add`, `get`, or a check's own name.
    pub op: String,
    /// `X-Tandem-Client-Region` of the request.
    pub caller: String,
    /// The home region of the record's subject (types with subjects).
    pub home: Option<String>,
    /// The region that serves this request when every region is available.
    pub normal: String,
    /// HTTP status; `None` when there was no answer.
    pub status: Option<u16>,
    /// `X-Tandem-Region` and `X-Tandem-Route` of the answer.
    pub region: Option<String>,
    pub route: Option<String>,
    /// The error code of an error answer, or the transport error.
    pub error: Option<String>,
    pub write: Option<WriteOp>,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn is_write(&self) -> bool {
        self.write.is_some()
    }

    /// A 503 saying no region may serve it (or reads of a lagging class are halted):
    /// the deployment refused on purpose, nothing was written.
    pub fn refused(&self) -> bool {
        self.status == Some(503)
            && matches!(self.error.as_deref(), Some("no_region_available" | "reads_halted"))
    }

    pub fn write_outcome(&self) -> WriteOutcome {
        match self.status {
            Some(s) if (200..300).contains(&s) => WriteOutcome::Acked,
            None | Some(500 | 502 | 504) => WriteOutcome::Unknown,
            // A node answers `overloaded` also when a queued write outlived the
            // request time-out: it may still commit.
            Some(503) if self.error.as_deref() == Some("overloaded") => WriteOutcome::Unknown,
            Some(_) => WriteOutcome::Rejected,
        }
    }
}

/// Live counters for the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub ok: AtomicU64,
    pub failover: AtomicU64,
    pub refused: AtomicU64,
    pub error: AtomicU64,
    pub acked: AtomicU64,
}

impl Counters {
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "ok {} failover {} refused {} error {} | writes acked {}",
            g(&self.ok),
            g(&self.failover),
            g(&self.refused),
            g(&self.error),
            g(&self.acked)
        )
    }
}

/// Every request of the drill, in the order they were answered.
#[derive(Debug, Default)]
pub struct Journal {
    records: Mutex<Vec<RequestRecord>>,
    pub counters: Counters,
}

impl Journal {
    pub fn push(&self, rec: RequestRecord, class: super::measure::Class) {
        use super::measure::Class;
        let c = &self.counters;
        match class {
            Class::Ok => c.ok.fetch_add(1, Ordering::Relaxed),
            Class::Failover => c.failover.fetch_add(1, Ordering::Relaxed),
            Class::Refused => c.refused.fetch_add(1, Ordering::Relaxed),
            Class::Error => c.error.fetch_add(1, Ordering::Relaxed),
        };
        if rec.is_write() && rec.ok() {
            c.acked.fetch_add(1, Ordering::Relaxed);
        }
        self.records.lock().expect("journal lock").push(rec);
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.lock().expect("journal lock").clone()
    }
}
