//! The routing decision: a pure function of the request kind, the entity's
//! policy, the subject's home region, the caller's region, each region's
//! health and drain state, and the jurisdictions. No I/O, so every rule is
//! covered by table-driven and property tests.
//!
//! Rules:
//! - writes of pinned (`home-region`) types go to the subject's home region;
//!   if it is down or drained, to the nearest healthy region of the same
//!   jurisdiction (a failover, marked for the node); with none left, 503.
//!   Never another jurisdiction.
//! - personal records (reads, and writes of `any-region` types) go to the
//!   nearest healthy region of the subject's jurisdiction: a roaming EU user
//!   calling from the US reads and writes in the EU;
//! - everything else goes to the nearest healthy region to the caller;
//! - a region that cannot write (its store is full) is healthy for reads but
//!   not for writes: writes go elsewhere by the same rules.
//!
//! So a request needs its subject's home region (`needs_home`) exactly when
//! its type has subjects and it is either personal or a pinned write; for any
//! other request the router does not look the home up, and the decision is
//! the same whatever the home would have been.

use tandem_config::{EntityConfig, WritePolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// What the router knows of one region at the time of the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionView {
    pub name: String,
    pub jurisdiction: String,
    pub up: bool,
    pub drained: bool,
    /// False while the region's store cannot take writes (it still serves reads).
    pub writable: bool,
    /// One-way latency from the caller's region (ms); 0 for the caller's own.
    pub distance_ms: u64,
}

impl RegionView {
    /// Whether the region may take a request of this kind.
    pub fn available(&self, kind: Kind) -> bool {
        self.up && !self.drained && (kind == Kind::Read || self.writable)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Home,
    Failover,
    Nearest,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Home => "home",
            Route::Failover => "failover",
            Route::Nearest => "nearest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send to `region`; `failover_for` is the home region the write stands in for.
    Send { region: String, route: Route, failover_for: Option<String> },
    /// No region that may take the request is available.
    NoRegionAvailable { jurisdiction: Option<String> },
    /// The entity needs a subject's home region and the subject is unknown.
    UnknownSubject,
}

pub struct Request<'a> {
    pub kind: Kind,
    /// `None` for requests that are not about a typed record (subjects, scans of
    /// non-personal types are passed with their entity).
    pub entity: Option<&'a EntityConfig>,
    /// The subject's home region, when the entity has subjects and it is known.
    pub home_region: Option<&'a str>,
}

/// Whether routing a request of this kind on this type needs the subject's
/// home region: personal records stay in the home's jurisdiction, and pinned
/// writes go to the home itself.
pub fn needs_home(kind: Kind, entity: &EntityConfig) -> bool {
    entity.subjects && (entity.personal || pinned_write(kind, entity))
}

/// A write of a type whose writes are pinned to the subject's home region.
fn pinned_write(kind: Kind, entity: &EntityConfig) -> bool {
    kind == Kind::Write && entity.writes == WritePolicy::HomeRegion
}

/// Decide where a request goes. `regions` holds every region of the deployment.
pub fn decide(req: &Request<'_>, regions: &[RegionView]) -> Decision {
    let kind = req.kind;
    let Some(entity) = req.entity else { return nearest(regions, kind, None, None) };
    if !needs_home(kind, entity) {
        return nearest(regions, kind, None, None);
    }
    let pinned = pinned_write(kind, entity);
    let Some(home) = req.home_region else { return Decision::UnknownSubject };
    let Some(home_view) = regions.iter().find(|r| r.name == home) else {
        return Decision::UnknownSubject;
    };
    let jurisdiction = home_view.jurisdiction.as_str();
    if pinned {
        if home_view.available(kind) {
            return Decision::Send {
                region: home.to_owned(),
                route: Route::Home,
                failover_for: None,
            };
        }
        return match nearest(regions, kind, Some(jurisdiction), Some(home)) {
            Decision::Send { region, .. } => Decision::Send {
                region,
                route: Route::Failover,
                failover_for: Some(home.to_owned()),
            },
            other => other,
        };
    }
    // Personal data: anywhere in its jurisdiction, nearest first.
    match nearest(regions, kind, Some(jurisdiction), None) {
        Decision::Send { region, .. } if region == home => {
            Decision::Send { region, route: Route::Home, failover_for: None }
        }
        other => other,
    }
}

/// The nearest available region, optionally inside one jurisdiction and
/// excluding one region. Ties go to the smaller name, so decisions are stable.
pub(crate) fn nearest(
    regions: &[RegionView],
    kind: Kind,
    jurisdiction: Option<&str>,
    except: Option<&str>,
) -> Decision {
    regions
        .iter()
        .filter(|r| r.available(kind))
        .filter(|r| jurisdiction.is_none_or(|j| r.jurisdiction == j))
        .filter(|r| except.is_none_or(|x| r.name != x))
        .min_by(|a, b| (a.distance_ms, &a.name).cmp(&(b.distance_ms, &b.name)))
        .map(|r| Decision::Send {
            region: r.name.clone(),
            route: Route::Nearest,
            failover_for: None,
        })
        .unwrap_or(Decision::NoRegionAvailable { jurisdiction: jurisdiction.map(str::to_owned) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tandem_config::Config;

    /// Regions of the example as seen from `caller`, with states.
    fn view(caller: &str, down: &[&str], drained: &[&str]) -> Vec<RegionView> {
        view_full(caller, down, drained, &[])
    }

    /// `full`: regions whose store cannot take writes.
    fn view_full(caller: &str, down: &[&str], drained: &[&str], full: &[&str]) -> Vec<RegionView> {
        let c = Config::example();
        c.regions
            .iter()
            .map(|r| RegionView {
                name: r.name.clone(),
                jurisdiction: r.jurisdiction.clone(),
                up: !down.contains(&r.name.as_str()),
                drained: drained.contains(&r.name.as_str()),
                writable: !full.contains(&r.name.as_str()),
                distance_ms: if r.name == caller {
                    0
                } else {
                    c.link_latency_ms(caller, &r.name).max(1)
                },
            })
            .collect()
    }

    fn send(region: &str, route: Route, failover_for: Option<&str>) -> Decision {
        Decision::Send { region: region.into(), route, failover_for: failover_for.map(Into::into) }
    }

    #[test]
    fn table() {
        let c = Config::example();
        let e = |n: &str| c.entity(n).unwrap();
        let none = Decision::NoRegionAvailable { jurisdiction: Some("EU".into()) };
        #[rustfmt::skip]
        type Case<'a> = (&'a str, Kind, &'a str, Option<&'a str>, &'a [&'a str], &'a [&'a str], Decision);
        let cases: Vec<Case> = vec![
            // pinned personal write: home, failover inside EU, then 503
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &[],
                &[],
                send("eu-west", Route::Home, None),
            ),
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &[],
                &["eu-west"],
                send("eu-central", Route::Failover, Some("eu-west")),
            ),
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &["eu-west"],
                &[],
                send("eu-central", Route::Failover, Some("eu-west")),
            ),
            (
                "us-east",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &["eu-west"],
                &["eu-central"],
                none.clone(),
            ),
            (
                "eu-west",
                Kind::Write,
                "credential",
                Some("eu-west"),
                &["eu-west", "eu-central"],
                &[],
                none.clone(),
            ),
            ("eu-west", Kind::Write, "credential", None, &[], &[], Decision::UnknownSubject),
            // US subject: us-east is the only US region
            (
                "eu-west",
                Kind::Write,
                "profile",
                Some("us-east"),
                &["us-east"],
                &[],
                Decision::NoRegionAvailable { jurisdiction: Some("US".into()) },
            ),
            // personal reads: nearest region of the jurisdiction, even for a roaming caller
            (
                "us-east",
                Kind::Read,
                "credential",
                Some("eu-west"),
                &[],
                &[],
                send("eu-west", Route::Home, None),
            ),
            (
                "us-east",
                Kind::Read,
                "profile",
                Some("eu-central"),
                &[],
                &[],
                send("eu-west", Route::Nearest, None),
            ),
            (
                "eu-central",
                Kind::Read,
                "profile",
                Some("eu-west"),
                &[],
                &[],
                send("eu-central", Route::Nearest, None),
            ),
            (
                "us-east",
                Kind::Read,
                "profile",
                Some("eu-west"),
                &["eu-west", "eu-central"],
                &[],
                none.clone(),
            ),
            // personal any-region writes (cart): nearest in the jurisdiction
            (
                "us-east",
                Kind::Write,
                "cart",
                Some("eu-central"),
                &[],
                &[],
                send("eu-west", Route::Nearest, None),
            ),
            (
                "eu-central",
                Kind::Write,
                "cart",
                Some("eu-west"),
                &[],
                &[],
                send("eu-central", Route::Nearest, None),
            ),
            // pinned but not personal (settings): home; reads anywhere
            (
                "us-east",
                Kind::Write,
                "settings",
                Some("eu-west"),
                &[],
                &[],
                send("eu-west", Route::Home, None),
            ),
            (
                "us-east",
                Kind::Read,
                "settings",
                Some("eu-west"),
                &[],
                &[],
                send("us-east", Route::Nearest, None),
            ),
            // public data: nearest to the caller
            (
                "us-east",
                Kind::Write,
                "article",
                None,
                &[],
                &[],
                send("us-east", Route::Nearest, None),
            ),
            (
                "us-east",
                Kind::Write,
                "article",
                None,
                &["us-east"],
                &[],
                send("eu-west", Route::Nearest, None),
            ),
            (
                "eu-central",
                Kind::Read,
                "likes",
                None,
                &[],
                &["eu-central"],
                send("eu-west", Route::Nearest, None),
            ),
        ];
        for (caller, kind, entity, home, down, drained, want) in cases {
            let req = Request { kind, entity: Some(e(entity)), home_region: home };
            let got = decide(&req, &view(caller, down, drained));
            assert_eq!(
                got, want,
                "{caller} {kind:?} {entity} home={home:?} down={down:?} drained={drained:?}"
            );
        }
    }

    #[test]
    fn a_full_region_serves_reads_and_sends_writes_elsewhere() {
        let c = Config::example();
        let e = |n: &str| c.entity(n).unwrap();
        let regions = view_full("eu-west", &[], &[], &["eu-west"]);
        let decide_for = |kind, entity, home| {
            decide(&Request { kind, entity: Some(e(entity)), home_region: home }, &regions)
        };
        assert_eq!(
            decide_for(Kind::Write, "credential", Some("eu-west")),
            send("eu-central", Route::Failover, Some("eu-west"))
        );
        assert_eq!(
            decide_for(Kind::Read, "credential", Some("eu-west")),
            send("eu-west", Route::Home, None)
        );
        assert_eq!(
            decide_for(Kind::Write, "article", None),
            send("eu-central", Route::Nearest, None)
        );
        assert_eq!(decide_for(Kind::Read, "article", None), send("eu-west", Route::Nearest, None));
        // The only US region full: US pinned writes have nowhere to go.
        let regions = view_full("us-east", &[], &[], &["us-east"]);
        let req =
            Request { kind: Kind::Write, entity: Some(e("profile")), home_region: Some("us-east") };
        assert_eq!(
            decide(&req, &regions),
            Decision::NoRegionAvailable { jurisdiction: Some("US".into()) }
        );
    }

    /// An entity of the example's shape with the given routing policy.
    fn policy(subjects: bool, personal: bool, writes: WritePolicy) -> EntityConfig {
        let mut e = Config::example().entity("profile").unwrap().clone();
        (e.subjects, e.personal, e.writes) = (subjects, personal, writes);
        e
    }

    #[test]
    fn which_requests_need_the_home_region() {
        use WritePolicy::{AnyRegion as Any, HomeRegion as Pinned};
        // (subjects, personal, writes, kind, needs the home)
        let cases = [
            (true, true, Pinned, Kind::Write, true),
            (true, true, Pinned, Kind::Read, true),
            (true, true, Any, Kind::Write, true),
            (true, true, Any, Kind::Read, true),
            (true, false, Pinned, Kind::Write, true),
            (true, false, Pinned, Kind::Read, false),
            (true, false, Any, Kind::Write, false),
            (true, false, Any, Kind::Read, false),
            // Without subjects there is no home to look up, whatever the policy.
            (false, true, Pinned, Kind::Write, false),
            (false, true, Pinned, Kind::Read, false),
            (false, true, Any, Kind::Write, false),
            (false, true, Any, Kind::Read, false),
            (false, false, Pinned, Kind::Write, false),
            (false, false, Pinned, Kind::Read, false),
            (false, false, Any, Kind::Write, false),
            (false, false, Any, Kind::Read, false),
        ];
        for (subjects, personal, writes, kind, want) in cases {
            let e = policy(subjects, personal, writes);
            assert_eq!(
                needs_home(kind, &e),
                want,
                "subjects={subjects} personal={personal} writes={writes:?} {kind:?}"
            );
        }
        // The example's types, as the router sees them.
        let c = Config::example();
        let needs = |kind, n: &str| needs_home(kind, c.entity(n).unwrap());
        assert!(needs(Kind::Write, "credential") && needs(Kind::Read, "credential"));
        assert!(needs(Kind::Write, "settings") && !needs(Kind::Read, "settings"));
        assert!(!needs(Kind::Write, "article") && !needs(Kind::Read, "likes"));
    }

    proptest! {
        /// Whatever the health, drain state and caller: a record with a home
        /// region never leaves its jurisdiction, and a pinned write goes home
        /// whenever home is available.
        #[test]
        fn never_outside_the_jurisdiction(
            caller in 0..3usize, home in 0..3usize, entity in 0..9usize,
            up in proptest::collection::vec(any::<bool>(), 3), drained in proptest::collection::vec(any::<bool>(), 3),
            full in proptest::collection::vec(any::<bool>(), 3), write in any::<bool>(),
        ) {
            let c = Config::example();
            let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
            let (ename, ecfg) = c.entities.iter().nth(entity).unwrap();
            let down: Vec<&str> = names.iter().zip(&up).filter(|(_, u)| !**u).map(|(n, _)| *n).collect();
            let dr: Vec<&str> = names.iter().zip(&drained).filter(|(_, d)| **d).map(|(n, _)| *n).collect();
            let fl: Vec<&str> = names.iter().zip(&full).filter(|(_, f)| **f).map(|(n, _)| *n).collect();
            let regions = view_full(names[caller], &down, &dr, &fl);
            let kind = if write { Kind::Write } else { Kind::Read };
            let req = Request { kind, entity: Some(ecfg), home_region: Some(names[home]) };
            let home_j = c.jurisdiction_of(names[home]).unwrap();
            let pinned = write && ecfg.writes == WritePolicy::HomeRegion;
            let restricted = ecfg.subjects && (ecfg.personal || pinned);
            match decide(&req, &regions) {
                Decision::Send { region, route, failover_for } => {
                    let r = regions.iter().find(|r| r.name == region).unwrap();
                    prop_assert!(r.available(kind), "{ename}: sent to an unavailable region");
                    if restricted {
                        prop_assert_eq!(c.jurisdiction_of(&region).unwrap(), home_j, "{} left its jurisdiction", ename);
                    }
                    if route == Route::Failover {
                        prop_assert_eq!(failover_for.as_deref(), Some(names[home]));
                    }
                    let home_ok = up[home] && !drained[home] && !(write && full[home]);
                    if pinned && home_ok {
                        prop_assert_eq!(region.as_str(), names[home]);
                        prop_assert_eq!(route, Route::Home);
                    }
                }
                Decision::NoRegionAvailable { .. } => {
                    let any_in_j = regions.iter().any(|r| r.available(kind) && (r.jurisdiction == home_j || !restricted));
                    prop_assert!(!any_in_j, "refused although a permitted region was available");
                }
                Decision::UnknownSubject => prop_assert!(false, "home was given"),
            }
        }

        /// The home lookup may be skipped exactly when `needs_home` says so: a
        /// request that needs it is refused without it, and any other request
        /// is decided the same whatever home is given.
        #[test]
        fn the_home_matters_only_when_needed(
            caller in 0..3usize, home in 0..3usize,
            subjects in any::<bool>(), personal in any::<bool>(), pinned in any::<bool>(),
            up in proptest::collection::vec(any::<bool>(), 3), drained in proptest::collection::vec(any::<bool>(), 3),
            write in any::<bool>(),
        ) {
            let c = Config::example();
            let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
            let down: Vec<&str> = names.iter().zip(&up).filter(|(_, u)| !**u).map(|(n, _)| *n).collect();
            let dr: Vec<&str> = names.iter().zip(&drained).filter(|(_, d)| **d).map(|(n, _)| *n).collect();
            let regions = view(names[caller], &down, &dr);
            let writes = if pinned { WritePolicy::HomeRegion } else { WritePolicy::AnyRegion };
            let e = policy(subjects, personal, writes);
            let kind = if write { Kind::Write } else { Kind::Read };
            let without = decide(&Request { kind, entity: Some(&e), home_region: None }, &regions);
            let with = decide(&Request { kind, entity: Some(&e), home_region: Some(names[home]) }, &regions);
            if needs_home(kind, &e) {
                prop_assert_eq!(without, Decision::UnknownSubject);
            } else {
                prop_assert_eq!(without, with);
            }
        }
    }
}
