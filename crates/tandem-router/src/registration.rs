//! Where a subject registration (`PUT /v1/subjects/{subject}`) goes: a pure
//! function of the home region it asks for, the subject's current home, and
//! the regions the router knows. Reads of the registry go to the nearest
//! region like public data (it is replicated everywhere); a registration is
//! routed like a pinned write, so that the home knows the subject before its
//! first pinned write arrives there.
//!
//! Rules:
//! - a move goes to the subject's current home, which knows the subject and
//!   refuses a move out of its jurisdiction (409 `cross_jurisdiction_move`);
//!   a new subject goes to the home it asks for;
//! - that home if it can take writes, else the nearest region of its
//!   jurisdiction that can (route `failover`, but without the failover marker:
//!   the registry takes writes in any region);
//! - with none left in that jurisdiction, or when the request names no region
//!   of the deployment, the nearest region that takes writes: any region
//!   refuses a malformed registration with a clear error, and takes a valid one.

use crate::decide::{self, Decision, Kind, RegionView, Route};

/// Decide where a registration goes. `requested`: the `home_region` of its
/// body when that names a region of the deployment; `current`: the subject's
/// home today (`None` when it is not registered).
pub fn decide(requested: Option<&str>, current: Option<&str>, regions: &[RegionView]) -> Decision {
    let anywhere = || decide::nearest(regions, Kind::Write, None, None);
    let Some(requested) = requested else { return anywhere() };
    let target = current.unwrap_or(requested);
    let Some(home) = regions.iter().find(|r| r.name == target) else { return anywhere() };
    if home.available(Kind::Write) {
        return Decision::Send {
            region: home.name.clone(),
            route: Route::Home,
            failover_for: None,
        };
    }
    match decide::nearest(regions, Kind::Write, Some(&home.jurisdiction), Some(target)) {
        Decision::Send { region, .. } => {
            Decision::Send { region, route: Route::Failover, failover_for: None }
        }
        _ => anywhere(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tandem_config::Config;

    /// The example's regions as seen from `caller`; `down` are down or drained.
    fn view(caller: &str, down: &[&str]) -> Vec<RegionView> {
        let c = Config::example();
        c.regions
            .iter()
            .map(|r| RegionView {
                name: r.name.clone(),
                jurisdiction: r.jurisdiction.clone(),
                up: !down.contains(&r.name.as_str()),
                drained: false,
                writable: true,
                distance_ms: if r.name == caller {
                    0
                } else {
                    c.link_latency_ms(caller, &r.name).max(1)
                },
            })
            .collect()
    }

    fn send(region: &str, route: Route) -> Decision {
        Decision::Send { region: region.into(), route, failover_for: None }
    }

    #[test]
    fn table() {
        // (caller, requested home, current home, down, then)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str], Decision);
        let cases: Vec<Case> = vec![
            // A new subject goes to the home it asks for, wherever the caller is.
            ("us-east", Some("eu-central"), None, &[], send("eu-central", Route::Home)),
            ("eu-west", Some("us-east"), None, &[], send("us-east", Route::Home)),
            // A move goes to the current home, which judges it.
            ("eu-west", Some("us-east"), Some("eu-central"), &[], send("eu-central", Route::Home)),
            ("us-east", Some("eu-central"), Some("eu-west"), &[], send("eu-west", Route::Home)),
            // Home down: its jurisdiction, unmarked.
            ("us-east", Some("eu-west"), None, &["eu-west"], send("eu-central", Route::Failover)),
            (
                "us-east",
                Some("us-east"),
                Some("eu-west"),
                &["eu-west"],
                send("eu-central", Route::Failover),
            ),
            // Its jurisdiction down: the nearest region that takes writes.
            (
                "us-east",
                Some("eu-west"),
                None,
                &["eu-west", "eu-central"],
                send("us-east", Route::Nearest),
            ),
            ("eu-central", Some("us-east"), None, &["us-east"], send("eu-central", Route::Nearest)),
            // No region named: the nearest one refuses it.
            ("eu-central", None, None, &[], send("eu-central", Route::Nearest)),
            ("eu-central", None, None, &["eu-central"], send("eu-west", Route::Nearest)),
            ("eu-central", None, Some("us-east"), &[], send("eu-central", Route::Nearest)),
            // A current home the deployment no longer has: the nearest.
            ("eu-west", Some("eu-west"), Some("ap-south"), &[], send("eu-west", Route::Nearest)),
            // Nothing up at all.
            (
                "eu-west",
                Some("eu-west"),
                None,
                &["eu-west", "eu-central", "us-east"],
                Decision::NoRegionAvailable { jurisdiction: None },
            ),
        ];
        for (caller, requested, current, down, want) in cases {
            let got = decide(requested, current, &view(caller, down));
            assert_eq!(
                got, want,
                "{caller} requested={requested:?} current={current:?} down={down:?}"
            );
        }
    }

    #[test]
    fn a_full_home_sends_the_registration_to_its_jurisdiction() {
        let mut regions = view("us-east", &[]);
        regions.iter_mut().find(|r| r.name == "eu-west").unwrap().writable = false;
        assert_eq!(decide(Some("eu-west"), None, &regions), send("eu-central", Route::Failover));
    }

    proptest! {
        /// A registration is never marked as a failover, goes only to a region
        /// that takes writes, and goes to the target's jurisdiction whenever a
        /// region there takes writes.
        #[test]
        fn registrations_go_home_first(
            caller in 0..3usize, requested in 0..4usize, current in 0..4usize,
            up in proptest::collection::vec(any::<bool>(), 3),
            drained in proptest::collection::vec(any::<bool>(), 3),
            writable in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let c = Config::example();
            let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
            let mut regions = view(names[caller], &[]);
            for (i, r) in regions.iter_mut().enumerate() {
                (r.up, r.drained, r.writable) = (up[i], drained[i], writable[i]);
            }
            // Index 3: none (no region named, or not registered).
            let requested = names.get(requested).copied();
            let current = names.get(current).copied();
            let decision = decide(requested, current, &regions);
            let target = requested.map(|r| current.unwrap_or(r));
            match decision {
                Decision::Send { region, route, failover_for } => {
                    prop_assert_eq!(failover_for, None);
                    let r = regions.iter().find(|r| r.name == region).unwrap();
                    prop_assert!(r.available(Kind::Write));
                    if let Some(t) = target {
                        let t_view = regions.iter().find(|r| r.name == t).unwrap();
                        let in_j = regions.iter().any(|r| r.available(Kind::Write) && r.jurisdiction == t_view.jurisdiction);
                        if t_view.available(Kind::Write) {
                            prop_assert_eq!((region.as_str(), route), (t, Route::Home));
                        } else if in_j {
                            prop_assert_eq!(&r.jurisdiction, &t_view.jurisdiction);
                            prop_assert_eq!(route, Route::Failover);
                        }
                    }
                }
                Decision::NoRegionAvailable { .. } => {
                    prop_assert!(!regions.iter().any(|r| r.available(Kind::Write)));
                }
                Decision::UnknownSubject => prop_assert!(false, "a registration creates its subject"),
            }
        }
    }
}
