//! The stability horizon is safe: whenever a region's horizon says every
//! region has applied origin `o`'s log up to `s`, every region's durable
//! direct cursor into `o` (and `o`'s own durable position) was at least `s`
//! at that moment. Checked at every recorded tick, against the positions
//! the simulation recorded beside it (`history::Event::Horizon`).

use std::collections::BTreeSet;

use crate::check::Violation;
use crate::history::{Event, History};

pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // The first breach of each (region, origin, lagging region) is enough.
    let mut seen = BTreeSet::new();
    for e in &history.events {
        let Event::Horizon { at_ms, region, horizon, applied } = e else { continue };
        for (origin, seq) in horizon {
            for ((p, o), at) in applied {
                if o == origin && at < seq && seen.insert((region, origin, p)) {
                    out.push(Violation {
                        invariant: "stability",
                        record: None,
                        detail: format!(
                            "at {at_ms} ms {region}'s horizon says every region applied {origin} \
                             up to {seq}, but {p} had applied it up to {at}"
                        ),
                    });
                }
            }
        }
    }
    out
}
