//! Router metrics of the contract: `router_requests_total{region, route,
//! outcome}`, `router_region_up{region}`, `router_failovers_total{from, to}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub region: String,
    pub route: String,
    pub outcome: String,
}

impl RequestLabels {
    pub fn new(region: &str, route: &str, outcome: &str) -> Self {
        RequestLabels { region: region.into(), route: route.into(), outcome: outcome.into() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub from: String,
    pub to: String,
}

pub struct RouterMetrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub region_up: Family<RegionLabels, Gauge>,
    pub failovers: Family<FailoverLabels, Counter>,
    pub home_lookups: Family<RequestLabels, Counter>,
    /// Data-plane calls refused for want of an API key.
    pub auth_refusals: Family<ReasonLabels, Counter>,
}

impl RouterMetrics {
    /// The router's metrics, with the series the contract names declared at
    /// zero: every region's up gauge, and a failover counter for every pair
    /// of regions of one jurisdiction (the only failovers there can be).
    pub fn new(config: &tandem_config::Config) -> Self {
        let m = Self::empty();
        for from in &config.regions {
            let _ = m.region_up.get_or_create(&RegionLabels { region: from.name.clone() });
            for to in config
                .regions
                .iter()
                .filter(|t| t.name != from.name && t.jurisdiction == from.jurisdiction)
            {
                let _ = m.failovers.get_or_create(&FailoverLabels {
                    from: from.name.clone(),
                    to: to.name.clone(),
                });
            }
        }
        m
    }

    fn empty() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let region_up = Family::<RegionLabels, Gauge>::default();
        let failovers = Family::<FailoverLabels, Counter>::default();
        let home_lookups = Family::<RequestLabels, Counter>::default();
        let auth_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "router_requests",
            "Requests routed, by region, route and outcome",
            requests.clone(),
        );
        registry.register(
            "router_region_up",
            "1 while the router considers a region healthy",
            region_up.clone(),
        );
        registry.register(
            "router_failovers",
            "Pinned writes sent to a region other than home",
            failovers.clone(),
        );
        registry.register(
            "router_home_lookups",
            "Home-region lookups, by region asked, route (cache or lookup) and outcome",
            home_lookups.clone(),
        );
        registry.register(
            "router_auth_refusals",
            "Data-plane calls refused for want of an API key, by reason",
            auth_refusals.clone(),
        );
        RouterMetrics { registry, requests, region_up, failovers, home_lookups, auth_refusals }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("write to String");
        out
    }
}
