//! The simulated router: its view of region health (probes every 200 ms; down
//! after three failures in a row, up after one success; every region down
//! after a restart until probed), its drain flags, and the walk of the
//! router's data plane over the product's own decisions: `needs_home`, the
//! home lookup order, `decide` (with the simulation's `RouterFaults`), and
//! `retry::after_refused` when the chosen region refuses the connection.

use std::collections::{BTreeMap, BTreeSet};

use tandem_config::{Config, EntityConfig};
use tandem_router::decide::{self, Decision, Kind, RegionView};
use tandem_router::faults::{decide_with, RouterFaults};
use tandem_router::home_lookup::lookup_order;
use tandem_router::retry::{self, AfterRefused};

use crate::history::RouteRecord;
use crate::Mutation;

/// `router.probe_interval` of the example.
pub const PROBE_INTERVAL_MS: u64 = 200;

#[derive(Debug, Clone, Default)]
struct Health {
    up: bool,
    failures: u32,
}

pub struct RouterSim {
    pub up: bool,
    health: BTreeMap<String, Health>,
    pub drained: BTreeSet<String>,
    pub next_probe_ms: u64,
    threshold: u32,
}

/// Where a routed request ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Send it to `region`.
    To { region: String, failover_for: Option<String> },
    /// The router answers itself.
    Answer { status: u16, code: &'static str },
}

impl RouterSim {
    pub fn new(config: &Config) -> RouterSim {
        RouterSim {
            up: true,
            health: config
                .regions
                .iter()
                .map(|r| (r.name.clone(), Health { up: true, failures: 0 }))
                .collect(),
            drained: BTreeSet::new(),
            next_probe_ms: 0,
            threshold: config.router.probe_failure_threshold,
        }
    }

    /// A restarted router knows nothing: every region is down until probed,
    /// and drains (kept in memory only) are gone.
    pub fn restart(&mut self) {
        self.up = true;
        for h in self.health.values_mut() {
            *h = Health::default();
        }
        self.drained.clear();
    }

    /// One round of probes against the regions' true state.
    pub fn probe(&mut self, actually_up: &BTreeMap<String, bool>) {
        let threshold = self.threshold;
        for (name, h) in &mut self.health {
            if actually_up[name] {
                h.up = true;
                h.failures = 0;
            } else {
                h.failures += 1;
                if h.failures >= threshold {
                    h.up = false;
                }
            }
        }
    }

    fn failure(&mut self, name: &str) {
        let threshold = self.threshold;
        let h = self.health.get_mut(name).expect("known region");
        h.failures += 1;
        if h.failures >= threshold {
            h.up = false;
        }
    }

    fn views(&self, config: &Config, caller: &str) -> Vec<RegionView> {
        config
            .regions
            .iter()
            .map(|r| RegionView {
                name: r.name.clone(),
                jurisdiction: r.jurisdiction.clone(),
                up: self.health[&r.name].up,
                drained: self.drained.contains(&r.name),
                writable: true,
                distance_ms: if r.name == caller {
                    0
                } else {
                    config.link_latency_ms(caller, &r.name).max(1)
                },
            })
            .collect()
    }

    /// Route one request. `home_in(region)` is that region's registry answer
    /// for the subject (`None`: not registered there); `actually_up` is the
    /// truth the router only learns by trying.
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &mut self,
        config: &Config,
        caller: &str,
        kind: Kind,
        entity: &EntityConfig,
        subject: Option<&str>,
        home_in: &dyn Fn(&str) -> Option<String>,
        actually_up: &BTreeMap<String, bool>,
        mutation: Mutation,
    ) -> (Routed, RouteRecord) {
        let mut views = self.views(config, caller);
        let available =
            views.iter().filter(|v| v.up && !v.drained).map(|v| v.name.clone()).collect();
        let mut record =
            RouteRecord { region: None, route: "none", failover_for: None, home: None, available };
        let mut home = None;
        if decide::needs_home(kind, entity) && subject.is_some() {
            // `lookup_home`: the nearest regions the router believes up, in turn.
            let mut unknown = false;
            for c in lookup_order(&views) {
                if !actually_up[&c.name] {
                    continue;
                }
                match home_in(&c.name) {
                    Some(h) => {
                        home = Some(h);
                        break;
                    }
                    None => unknown = true,
                }
            }
            if home.is_none() && !unknown {
                return (Routed::Answer { status: 503, code: "no_region_available" }, record);
            }
        }
        record.home = home.clone();
        let request = decide::Request { kind, entity: Some(entity), home_region: home.as_deref() };
        let faults = RouterFaults { route_anywhere: mutation == Mutation::RouteAnywhere };
        let decided = |views: &[RegionView]| decide_with(&request, views, faults);
        let mut decision = decided(&views);
        let mut refused: Vec<String> = Vec::new();
        loop {
            record.available =
                views.iter().filter(|v| v.up && !v.drained).map(|v| v.name.clone()).collect();
            match decision {
                Decision::Send { region, route, failover_for } => {
                    record.region = Some(region.clone());
                    record.route = route.as_str();
                    record.failover_for = failover_for.clone();
                    if actually_up[&region] {
                        return (Routed::To { region, failover_for }, record);
                    }
                    // Connection refused: the request never reached it.
                    self.failure(&region);
                    refused.push(region);
                    let names: Vec<&str> = refused.iter().map(String::as_str).collect();
                    match retry::after_refused(&names, &views, decided) {
                        AfterRefused::Retry { region, route, failover_for } => {
                            for v in views.iter_mut().filter(|v| names.contains(&v.name.as_str())) {
                                v.up = false;
                            }
                            decision = Decision::Send { region, route, failover_for };
                        }
                        AfterRefused::Relay => {
                            return (
                                Routed::Answer { status: 502, code: "upstream_unavailable" },
                                record,
                            )
                        }
                    }
                }
                Decision::NoRegionAvailable { .. } => {
                    record.region = None;
                    record.route = "none";
                    return (Routed::Answer { status: 503, code: "no_region_available" }, record);
                }
                Decision::UnknownSubject => {
                    return (Routed::Answer { status: 422, code: "unknown_subject" }, record);
                }
            }
        }
    }
}
