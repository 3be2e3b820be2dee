//! The simulated deployment: the example config (three regions, EU and US),
//! optionally with a fourth region `us-west` so that both jurisdictions can
//! fail over, with small replication batches so that batching is exercised;
//! the subjects and their home regions; and the entity types the workload
//! writes (every merge type, personal and pinned or not).

use std::sync::Arc;

use tandem_config::{Config, LinkConfig, RegionConfig};

use crate::rng::Rng;

/// A subject and its home region (fixed for the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub home: String,
    pub jurisdiction: String,
}

#[derive(Debug, Clone)]
pub struct World {
    /// Shared, so that handing it around is cheap.
    pub config: Arc<Config>,
    /// Region names, in config order.
    pub regions: Vec<String>,
    pub subjects: Vec<Subject>,
    /// Entity types the workload writes, in name order.
    pub entities: Vec<String>,
}

/// Entity types of the example config the workload uses: every merge type;
/// personal + pinned, personal + any region, pinned only, neither. The
/// analytics projection (`subscription`) needs a pseudonym key and is left out.
pub const ENTITIES: [&str; 9] = [
    "article",
    "balance",
    "cart",
    "credential",
    "likes",
    "page_views",
    "profile",
    "settings",
    "tags",
];

impl World {
    pub fn new(rng: &mut Rng, four_regions: bool) -> World {
        let mut config = Config::example();
        if four_regions {
            config.regions.push(RegionConfig {
                name: "us-west".into(),
                jurisdiction: "US".into(),
                listen: "127.0.0.1:7104".parse().expect("address"),
                resp_listen: None,
            });
            for (other, ms) in [("us-east", 30), ("eu-west", 70), ("eu-central", 75)] {
                config
                    .links
                    .push(LinkConfig { between: ["us-west".into(), other.into()], latency_ms: ms });
            }
        }
        // Small batches, so that a catch-up takes several of them.
        config.replication.batch_max = rng.range(2, 16) as usize;
        config.validate().expect("the simulated deployment is valid");
        let regions: Vec<String> = config.regions.iter().map(|r| r.name.clone()).collect();
        let mut subjects = Vec::new();
        for (prefix, j) in [("e", "EU"), ("u", "US")] {
            let homes: Vec<String> = config.regions_in(j).map(|r| r.name.clone()).collect();
            for i in 0..2 {
                let home = rng.pick(&homes).clone();
                subjects.push(Subject {
                    name: format!("{prefix}{i}"),
                    home,
                    jurisdiction: j.to_owned(),
                });
            }
        }
        for e in ENTITIES {
            assert!(config.entity(e).is_some(), "the example config has `{e}`");
        }
        World {
            config: Arc::new(config),
            regions,
            subjects,
            entities: ENTITIES.iter().map(std::string::ToString::to_string).collect(),
        }
    }

    pub fn jurisdiction_of(&self, region: &str) -> &str {
        self.config.jurisdiction_of(region).expect("known region")
    }

    pub fn subject(&self, name: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.name == name)
    }

    /// Whether `region` may hold record `entity/id`: personal records only in
    /// their subject's jurisdiction, everything else everywhere.
    pub fn may_hold(&self, region: &str, entity: &str, id: &str) -> bool {
        let Some(cfg) = self.config.entity(entity) else { return true };
        if !cfg.personal {
            return true;
        }
        let subject = tandem_config::subject_of(id).and_then(|s| self.subject(s));
        subject.is_some_and(|s| s.jurisdiction == self.jurisdiction_of(region))
    }
}
