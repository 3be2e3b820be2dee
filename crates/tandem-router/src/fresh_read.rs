//! The fresh-read redirect: a pure function of the request kind, the region
//! that answered, the region its answer names, and the regions the router
//! knows. A region whose `halt-cross-region-reads` lag budget is breached
//! refuses reads of records from the regions it lags behind with 503
//! `reads_halted`, naming `fresh_region`, where the record is fresh; the
//! router reads it there instead of relaying the refusal.
//!
//! Rules:
//! - only reads are redirected (a write is never sent twice);
//! - only to a region of the deployment that is available for reads (up and
//!   not drained), and never back to the region that answered;
//! - once: the redirected answer is relayed whatever it says, except that a
//!   refused connection (the fresh region never saw the request) relays the
//!   `reads_halted` answer, which tells the caller why it got nothing.

use crate::decide::{Kind, RegionView};

/// Where to read again after `answered_by` answered `reads_halted` naming
/// `fresh_region`; `None`: relay that answer.
pub fn redirect<'a>(
    kind: Kind,
    answered_by: &str,
    fresh_region: &'a str,
    regions: &[RegionView],
) -> Option<&'a str> {
    let fresh = regions.iter().find(|r| r.name == fresh_region)?;
    (kind == Kind::Read && fresh.name != answered_by && fresh.available(Kind::Read))
        .then_some(fresh_region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(name: &str, up: bool, drained: bool, writable: bool) -> RegionView {
        RegionView {
            name: name.into(),
            jurisdiction: "EU".into(),
            up,
            drained,
            writable,
            distance_ms: 1,
        }
    }

    #[test]
    fn table() {
        // (kind, answered by, fresh region, its state: up, drained, writable, then)
        let cases = [
            (Kind::Read, "eu-central", "eu-west", (true, false, true), Some("eu-west")),
            // A full store still serves reads.
            (Kind::Read, "eu-central", "eu-west", (true, false, false), Some("eu-west")),
            (Kind::Read, "eu-central", "eu-west", (false, false, true), None),
            (Kind::Read, "eu-central", "eu-west", (true, true, true), None),
            // The answering region names itself: nothing fresher to ask.
            (Kind::Read, "eu-west", "eu-west", (true, false, true), None),
            // Writes are never sent twice.
            (Kind::Write, "eu-central", "eu-west", (true, false, true), None),
            // A name outside the deployment is not followed.
            (Kind::Read, "eu-central", "mars-1", (true, false, true), None),
        ];
        for (kind, answered_by, fresh, (up, drained, writable), want) in cases {
            let regions =
                [region("eu-west", up, drained, writable), region("eu-central", true, false, true)];
            assert_eq!(
                redirect(kind, answered_by, fresh, &regions),
                want,
                "{kind:?} answered by {answered_by}, fresh at {fresh} up={up} drained={drained}"
            );
        }
    }

    proptest! {
        /// A redirect is always a read, to the named region, available for
        /// reads, other than the one that answered; and every such case is
        /// redirected.
        #[test]
        fn redirects_only_reads_to_an_available_other_region(
            write in any::<bool>(), answered in 0..3usize, fresh in 0..4usize,
            up in proptest::collection::vec(any::<bool>(), 3),
            drained in proptest::collection::vec(any::<bool>(), 3),
            writable in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let names = ["eu-west", "eu-central", "us-east", "nowhere"];
            let regions: Vec<RegionView> =
                (0..3).map(|i| region(names[i], up[i], drained[i], writable[i])).collect();
            let kind = if write { Kind::Write } else { Kind::Read };
            let got = redirect(kind, names[answered], names[fresh], &regions);
            let allowed = !write && fresh != answered && fresh < 3 && up[fresh] && !drained[fresh];
            prop_assert_eq!(got, allowed.then_some(names[fresh]));
        }
    }
}
