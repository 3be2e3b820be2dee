//! The retry after a refused upstream connection: a pure function of the
//! regions the router knows, the regions that refused this request, and the
//! decision the request was routed by. A refused connection means the region
//! never saw the request, so it is safe to send it elsewhere; the probes
//! notice a killed region only after a few failures, and until then this
//! retry keeps requests from failing.
//!
//! Rules:
//! - every region that refused is taken as down for the rest of this request
//!   (later requests follow the probes), and the same decision is made again
//!   over what is left, so the retry obeys that decision's rules: a record
//!   with a home never leaves its jurisdiction, a pinned write fails over to a
//!   region of the home's jurisdiction and is marked for it;
//! - the retry never goes back to a region that refused;
//! - a request is sent at most `SENDS_MAX` (2) times: after a second refusal
//!   the refusal is relayed rather than walking the whole deployment;
//! - when the decision has nowhere left to send it, the refusal is relayed
//!   (502 `upstream_unavailable`), not turned into a 503.

use crate::decide::{Decision, RegionView, Route};

/// Sends of one request: the first, and one retry after a refused connection.
pub const SENDS_MAX: usize = 2;

/// What to do once a connection has been refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRefused {
    /// Send the request once more, to `region`.
    Retry { region: String, route: Route, failover_for: Option<String> },
    /// Answer with the refusal.
    Relay,
}

/// Decide whether and where to send a request again. `refused` lists the
/// regions whose connection was refused for this request so far, in order (at
/// least one); `decide` is the decision the request was routed by.
pub fn after_refused(
    refused: &[&str],
    regions: &[RegionView],
    decide: impl Fn(&[RegionView]) -> Decision,
) -> AfterRefused {
    assert!(!refused.is_empty(), "a retry follows a refusal");
    if refused.len() >= SENDS_MAX {
        return AfterRefused::Relay;
    }
    let left: Vec<RegionView> = regions
        .iter()
        .map(|r| RegionView { up: r.up && !refused.contains(&r.name.as_str()), ..r.clone() })
        .collect();
    match decide(&left) {
        Decision::Send { region, route, failover_for } => {
            assert!(!refused.contains(&region.as_str()), "the decision sent to a down region");
            AfterRefused::Retry { region, route, failover_for }
        }
        Decision::NoRegionAvailable { .. } | Decision::UnknownSubject => AfterRefused::Relay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{decide, Kind, Request};
    use proptest::prelude::*;
    use tandem_config::Config;

    /// The example's regions as seen from `caller`, every one up and undrained
    /// except those listed.
    fn view(caller: &str, down: &[&str], drained: &[&str]) -> Vec<RegionView> {
        let c = Config::example();
        c.regions
            .iter()
            .map(|r| RegionView {
                name: r.name.clone(),
                jurisdiction: r.jurisdiction.clone(),
                up: !down.contains(&r.name.as_str()),
                drained: drained.contains(&r.name.as_str()),
                writable: true,
                distance_ms: if r.name == caller {
                    0
                } else {
                    c.link_latency_ms(caller, &r.name).max(1)
                },
            })
            .collect()
    }

    fn retry(region: &str, route: Route, failover_for: Option<&str>) -> AfterRefused {
        AfterRefused::Retry {
            region: region.into(),
            route,
            failover_for: failover_for.map(Into::into),
        }
    }

    #[test]
    fn table() {
        let c = Config::example();
        // (caller, kind, entity, home, drained, refused, then)
        type Case<'a> =
            (&'a str, Kind, &'a str, Option<&'a str>, &'a [&'a str], &'a [&'a str], AfterRefused);
        let cases: Vec<Case> = vec![
            // A pinned write refused at home fails over inside the jurisdiction, marked.
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &[],
                &["eu-west"],
                retry("eu-central", Route::Failover, Some("eu-west")),
            ),
            // ... and is relayed when the other EU region is drained: never to the US.
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &["eu-central"],
                &["eu-west"],
                AfterRefused::Relay,
            ),
            // A failover that is refused too is not tried a third time.
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &[],
                &["eu-west", "eu-central"],
                AfterRefused::Relay,
            ),
            // The only US region refused: a US subject's write has nowhere to go.
            (
                "eu-west",
                Kind::Write,
                "profile",
                Some("us-east"),
                &[],
                &["us-east"],
                AfterRefused::Relay,
            ),
            // A personal read goes to the next region of its jurisdiction.
            (
                "eu-west",
                Kind::Read,
                "profile",
                Some("eu-west"),
                &[],
                &["eu-west"],
                retry("eu-central", Route::Nearest, None),
            ),
            // Public data goes to the next nearest region, anywhere.
            (
                "us-east",
                Kind::Write,
                "article",
                None,
                &[],
                &["us-east"],
                retry("eu-west", Route::Nearest, None),
            ),
            (
                "us-east",
                Kind::Read,
                "likes",
                None,
                &["eu-west"],
                &["us-east"],
                retry("eu-central", Route::Nearest, None),
            ),
            // Pinned non-personal (settings) writes fail over in the jurisdiction too.
            (
                "us-east",
                Kind::Write,
                "settings",
                Some("eu-central"),
                &[],
                &["eu-central"],
                retry("eu-west", Route::Failover, Some("eu-central")),
            ),
        ];
        for (caller, kind, entity, home, drained, refused, want) in cases {
            let req = Request { kind, entity: Some(c.entity(entity).unwrap()), home_region: home };
            let got = after_refused(refused, &view(caller, &[], drained), |r| decide(&req, r));
            assert_eq!(got, want, "{caller} {kind:?} {entity} home={home:?} refused={refused:?}");
        }
    }

    #[test]
    fn an_unknown_subject_is_relayed() {
        let c = Config::example();
        let req = Request { kind: Kind::Write, entity: c.entity("credential"), home_region: None };
        let regions = view("eu-west", &[], &[]);
        assert_eq!(after_refused(&["eu-west"], &regions, |r| decide(&req, r)), AfterRefused::Relay);
    }

    proptest! {
        /// Whatever the health, drain state, caller and refusals: the retry is
        /// the same decision over the regions left, never goes back to a region
        /// that refused, never leaves a homed record's jurisdiction, and comes
        /// at most once.
        #[test]
        fn retries_stay_in_the_rules(
            caller in 0..3usize, home in 0..3usize, entity in 0..9usize,
            up in proptest::collection::vec(any::<bool>(), 3),
            drained in proptest::collection::vec(any::<bool>(), 3),
            refused in proptest::collection::vec(0..3usize, 1..4), write in any::<bool>(),
        ) {
            let c = Config::example();
            let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
            let (ename, ecfg) = c.entities.iter().nth(entity).unwrap();
            let down: Vec<&str> = names.iter().zip(&up).filter(|(_, u)| !**u).map(|(n, _)| *n).collect();
            let dr: Vec<&str> = names.iter().zip(&drained).filter(|(_, d)| **d).map(|(n, _)| *n).collect();
            let regions = view(names[caller], &down, &dr);
            let kind = if write { Kind::Write } else { Kind::Read };
            let req = Request { kind, entity: Some(ecfg), home_region: Some(names[home]) };
            let refused: Vec<&str> = refused.iter().map(|i| names[*i]).collect();
            let home_j = c.jurisdiction_of(names[home]).unwrap();
            match after_refused(&refused, &regions, |r| decide(&req, r)) {
                AfterRefused::Retry { region, route, failover_for } => {
                    prop_assert_eq!(refused.len(), 1, "{}: retried after a second refusal", ename);
                    prop_assert!(!refused.contains(&region.as_str()), "{ename}: back to a refused region");
                    let r = regions.iter().find(|r| r.name == region).unwrap();
                    prop_assert!(r.available(kind), "{ename}: retried at an unavailable region");
                    if crate::decide::needs_home(kind, ecfg) {
                        prop_assert_eq!(c.jurisdiction_of(&region).unwrap(), home_j, "{} left its jurisdiction", ename);
                    }
                    if route == Route::Failover {
                        prop_assert_eq!(failover_for.as_deref(), Some(names[home]));
                    }
                }
                AfterRefused::Relay => {
                    let left_allowed = regions.iter().any(|r| {
                        r.available(kind)
                            && !refused.contains(&r.name.as_str())
                            && (!crate::decide::needs_home(kind, ecfg) || r.jurisdiction == home_j)
                    });
                    prop_assert!(refused.len() >= SENDS_MAX || !left_allowed, "{ename}: relayed although a permitted region was left");
                }
            }
        }
    }
}
