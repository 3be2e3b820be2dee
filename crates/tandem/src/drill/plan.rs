//! What the drill knows before it starts: the phase lengths (short, production,
//! scaled), the deployment's shape as the config describes it (regions,
//! jurisdictions, entity policies, router and region URLs), and the routing
//! facts derived from it that the checks rely on: which regions may hold a
//! record, which regions survive the target, and whether a request is routed
//! by its subject's home or by the caller's location. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_config::{Config, ConflictPolicy, MergeKind, WritePolicy};

/// How the target region is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drain it at the router and stop its replication; the process keeps running.
    Isolate,
    /// Kill its process (SIGKILL through the `tandem up` control API).
    Kill,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Isolate => "isolate",
            Mode::Kill => "kill",
        }
    }
}

/// Named phase lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimingsPreset {
    /// The whole drill in about a minute (local deployments, CI).
    Short,
    /// The reference article's schedule: 15, 5, 20, 10, 10 and 30 minutes.
    Production,
}

/// How long each phase lasts; restoration and post-drill end as soon as their
/// work is done and these are their caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    pub pre: Duration,
    pub isolation: Duration,
    pub observation: Duration,
    pub validation: Duration,
    pub restoration_max: Duration,
    pub post_max: Duration,
    /// How long the pre-drill checks may take to turn green (a deployment
    /// that just started needs a moment to connect its links).
    pub checks_wait: Duration,
}

/// Smallest length of any phase whatever the scale, so that a scaled-down
/// drill still gives the deployment time to answer.
pub const PHASE_MIN: Duration = Duration::from_millis(500);

impl Timings {
    pub fn preset(p: TimingsPreset) -> Timings {
        let s = Duration::from_secs;
        match p {
            TimingsPreset::Short => Timings {
                pre: s(3),
                isolation: s(2),
                observation: s(15),
                validation: s(8),
                restoration_max: s(20),
                post_max: s(15),
                checks_wait: s(10),
            },
            TimingsPreset::Production => Timings {
                pre: s(15 * 60),
                isolation: s(5 * 60),
                observation: s(20 * 60),
                validation: s(10 * 60),
                restoration_max: s(10 * 60),
                post_max: s(30 * 60),
                checks_wait: s(15 * 60),
            },
        }
    }

    /// Every phase multiplied by `factor` (at least [`PHASE_MIN`] each).
    pub fn scaled(self, factor: f64) -> Timings {
        assert!(factor.is_finite() && factor > 0.0, "phase scale must be positive");
        let f = |d: Duration| d.mul_f64(factor).max(PHASE_MIN);
        Timings {
            pre: f(self.pre),
            isolation: f(self.isolation),
            observation: f(self.observation),
            validation: f(self.validation),
            restoration_max: f(self.restoration_max),
            post_max: f(self.post_max),
            checks_wait: f(self.checks_wait),
        }
    }

    /// The planned length of phase `i` (0-based, in drill order).
    pub fn of_phase(&self, i: usize) -> Duration {
        [
            self.pre,
            self.isolation,
            self.observation,
            self.validation,
            self.restoration_max,
            self.post_max,
        ][i]
    }
}

/// The six phases, in order, as named in the report.
pub const PHASES: [&str; 6] =
    ["pre-drill", "isolation", "observation", "validation", "restoration", "post-drill"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    pub name: String,
    pub jurisdiction: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityInfo {
    pub name: String,
    pub merge: MergeKind,
    pub personal: bool,
    pub subjects: bool,
    /// Writes go to the subject's home region (`writes = "home-region"`).
    pub pinned: bool,
    /// `conflicts = "never"`.
    pub conflicts_never: bool,
    /// Written only by the regions themselves (the target of another type's
    /// analytics projection): clients may read it, not write it.
    pub projection: bool,
}

impl EntityInfo {
    /// Whether the router routes this request by the subject's home region
    /// (rather than by the caller's location); mirrors the router's rule.
    pub fn routed_by_home(&self, write: bool) -> bool {
        self.subjects && (self.personal || (write && self.pinned))
    }
}

/// The deployment as the drill sees it.
#[derive(Debug, Clone)]
pub struct Topology {
    pub regions: Vec<RegionInfo>,
    pub router_url: String,
    pub entities: Vec<EntityInfo>,
    /// One-way latency between two regions (ms), by `(a, b)` with `a < b`.
    pub latency_ms: BTreeMap<(String, String), u64>,
}

impl Topology {
    pub fn from_config(config: &Config) -> Topology {
        let projections: Vec<&str> = config
            .entities
            .values()
            .filter_map(|e| e.analytics.as_ref().map(|a| a.into.as_str()))
            .collect();
        Topology {
            regions: config
                .regions
                .iter()
                .map(|r| RegionInfo {
                    name: r.name.clone(),
                    jurisdiction: r.jurisdiction.clone(),
                    url: format!("http://{}", r.listen),
                })
                .collect(),
            router_url: format!("http://{}", config.router.listen),
            entities: config
                .entities
                .iter()
                .map(|(name, e)| EntityInfo {
                    name: name.clone(),
                    merge: e.merge,
                    personal: e.personal,
                    subjects: e.subjects,
                    pinned: e.writes == WritePolicy::HomeRegion,
                    conflicts_never: e.conflicts == ConflictPolicy::Never,
                    projection: projections.contains(&name.as_str()),
                })
                .collect(),
            latency_ms: config
                .regions
                .iter()
                .flat_map(|a| config.regions.iter().map(move |b| (a, b)))
                .filter(|(a, b)| a.name < b.name)
                .map(|(a, b)| {
                    ((a.name.clone(), b.name.clone()), config.link_latency_ms(&a.name, &b.name))
                })
                .collect(),
        }
    }

    /// The same topology reached over `scheme` (`https`, or `http` for a
    /// deployment run with `--insecure`).
    pub fn with_scheme(mut self, scheme: &str) -> Topology {
        let swap = |url: &mut String| {
            if let Some(rest) = url.strip_prefix("http://") {
                *url = format!("{scheme}://{rest}");
            }
        };
        self.regions.iter_mut().for_each(|r| swap(&mut r.url));
        swap(&mut self.router_url);
        self
    }

    /// How far `to` is from a caller in `from` (0 for the caller's own region).
    pub fn distance_ms(&self, from: &str, to: &str) -> u64 {
        if from == to {
            return 0;
        }
        let key = if from < to {
            (from.to_owned(), to.to_owned())
        } else {
            (to.to_owned(), from.to_owned())
        };
        self.latency_ms.get(&key).copied().unwrap_or(0).max(1)
    }

    /// The region that serves a request when every region is available: the
    /// subject's home for a pinned write, the nearest region of the subject's
    /// jurisdiction for personal records, the nearest region otherwise
    /// (ties to the smaller name). The drill's own statement of the routing
    /// contract, used to tell which requests are the target's traffic.
    pub fn normal_region(
        &self,
        entity: &EntityInfo,
        write: bool,
        home: Option<&str>,
        caller: &str,
    ) -> String {
        let nearest = |candidates: Vec<&RegionInfo>| {
            candidates
                .into_iter()
                .min_by(|a, b| {
                    (self.distance_ms(caller, &a.name), &a.name)
                        .cmp(&(self.distance_ms(caller, &b.name), &b.name))
                })
                .map(|r| r.name.clone())
        };
        let by_home = entity.routed_by_home(write);
        match home.filter(|_| by_home) {
            Some(h) if write && entity.pinned => h.to_owned(),
            Some(h) => {
                let j = self.jurisdiction_of(h).unwrap_or_default();
                nearest(self.regions.iter().filter(|r| r.jurisdiction == j).collect())
                    .unwrap_or_else(|| h.to_owned())
            }
            None => nearest(self.regions.iter().collect()).unwrap_or_else(|| caller.to_owned()),
        }
    }

    pub fn region(&self, name: &str) -> Option<&RegionInfo> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn entity(&self, name: &str) -> Option<&EntityInfo> {
        self.entities.iter().find(|e| e.name == name)
    }

    pub fn jurisdiction_of(&self, region: &str) -> Option<&str> {
        self.region(region).map(|r| r.jurisdiction.as_str())
    }

    pub fn region_names(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }

    /// Every region but the target.
    pub fn survivors(&self, target: &str) -> Vec<String> {
        self.regions.iter().filter(|r| r.name != target).map(|r| r.name.clone()).collect()
    }

    /// Regions of the same jurisdiction as `region`, other than it.
    pub fn jurisdiction_peers(&self, region: &str) -> Vec<String> {
        let j = self.jurisdiction_of(region);
        self.regions
            .iter()
            .filter(|r| r.name != region && Some(r.jurisdiction.as_str()) == j)
            .map(|r| r.name.clone())
            .collect()
    }

    /// Regions that may hold a record of `entity` whose subject (if any) is
    /// homed in `home`: the home's jurisdiction for personal types, every
    /// region otherwise.
    pub fn holders(&self, entity: &str, home: Option<&str>) -> Vec<String> {
        let personal = self.entity(entity).is_some_and(|e| e.personal);
        match (personal, home.and_then(|h| self.jurisdiction_of(h))) {
            (true, Some(j)) => self
                .regions
                .iter()
                .filter(|r| r.jurisdiction == j)
                .map(|r| r.name.clone())
                .collect(),
            _ => self.region_names(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_scale() {
        let short = Timings::preset(TimingsPreset::Short);
        let total: Duration = (0..6).map(|i| short.of_phase(i)).sum();
        assert!(total <= Duration::from_secs(65), "the short drill is about a minute: {total:?}");
        let prod = Timings::preset(TimingsPreset::Production);
        assert_eq!(prod.observation, Duration::from_secs(20 * 60));
        let half = short.scaled(0.5);
        assert_eq!(half.observation, Duration::from_millis(7_500));
        assert_eq!(short.scaled(0.001).pre, PHASE_MIN);
    }

    #[test]
    fn example_topology() {
        let t = Topology::from_config(&Config::example());
        assert_eq!(t.survivors("us-east"), vec!["eu-west", "eu-central"]);
        assert!(t.jurisdiction_peers("us-east").is_empty());
        assert_eq!(t.jurisdiction_peers("eu-west"), vec!["eu-central"]);
        assert_eq!(t.holders("credential", Some("eu-west")), vec!["eu-west", "eu-central"]);
        assert_eq!(t.holders("credential", Some("us-east")), vec!["us-east"]);
        assert_eq!(t.holders("settings", Some("us-east")).len(), 3);
        assert_eq!(t.holders("article", None).len(), 3);
        let cred = t.entity("credential").unwrap();
        assert!(cred.pinned && cred.conflicts_never && cred.routed_by_home(false));
        let settings = t.entity("settings").unwrap();
        assert!(settings.routed_by_home(true) && !settings.routed_by_home(false));
        assert!(!t.entity("article").unwrap().routed_by_home(true));
        assert!(t.entity("subscription_stats").unwrap().projection);
        assert!(!t.entity("subscription").unwrap().projection);
        let cart = t.entity("cart").unwrap();
        assert!(cart.routed_by_home(true));
        // A roaming EU subject writing from the US lands in the nearest EU region.
        assert_eq!(t.normal_region(cart, true, Some("eu-central"), "us-east"), "eu-west");
        assert_eq!(t.normal_region(cart, true, Some("eu-west"), "eu-central"), "eu-central");
        assert_eq!(t.normal_region(cred, true, Some("eu-west"), "us-east"), "eu-west");
        assert_eq!(t.normal_region(settings, false, Some("us-east"), "eu-central"), "eu-central");
        assert_eq!(t.normal_region(t.entity("article").unwrap(), true, None, "us-east"), "us-east");
        assert_eq!(t.distance_ms("us-east", "eu-central"), 45);
    }
}
