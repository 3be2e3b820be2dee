//! Convergence and durability as a test observes them: waits until regions
//! show a value or equal digests (explaining, on time-out, what each region
//! holds and how its links stand), which regions may hold a record, and the
//! acknowledged-write check against every one of them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::data::Digest;
use super::Deployment;
use crate::acked::{final_of, History, Key, Lost};

impl Deployment {
    /// Wait until every one of `regions` shows `expected` for a record
    /// (`None`: answers 404); answers how long it took.
    pub fn wait_value(
        &self,
        regions: &[&str],
        entity: &str,
        id: &str,
        expected: Option<&Value>,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        let there = || regions.iter().all(|r| self.value(r, entity, id).as_ref() == expected);
        if self.wait_until(timeout, there) {
            return started.elapsed();
        }
        let seen: Vec<String> =
            regions.iter().map(|r| format!("{r}: {:?}", self.value(r, entity, id))).collect();
        panic!(
            "{entity}/{id} is not {expected:?} everywhere after {timeout:?}:\n{}\n{}",
            seen.join("\n"),
            self.link_report()
        );
    }

    /// Wait until `region` holds a record (any value).
    pub fn wait_present(&self, region: &str, entity: &str, id: &str) {
        let timeout = self.settings.limits.converge;
        assert!(
            self.wait_until(timeout, || self.value(region, entity, id).is_some()),
            "{entity}/{id} never reached {region} within {timeout:?}"
        );
    }

    /// Wait until `regions` hold equal digests of `entity`; answers how long
    /// it took. On time-out, panics with every region's digest and link status.
    pub fn wait_converged(&self, entity: &str, regions: &[&str], timeout: Duration) -> Duration {
        let started = Instant::now();
        let equal = || {
            let digests: Vec<(String, u64)> =
                regions.iter().map(|r| self.digest(r, entity)).collect();
            digests.windows(2).all(|w| w[0] == w[1])
        };
        if self.wait_until(timeout, equal) {
            return started.elapsed();
        }
        let seen: Vec<String> =
            regions.iter().map(|r| format!("{r}: {:?}", self.digest(r, entity))).collect();
        panic!(
            "`{entity}` did not converge within {timeout:?} across {regions:?}:\n{}\n{}",
            seen.join("\n"),
            self.link_report()
        );
    }

    /// Wait until every region is connected to each of its peers and none
    /// reports a breached lag budget (a deployment at rest).
    pub fn wait_quiet(&self, timeout: Duration) {
        let peers = self.regions.len() - 1;
        let quiet = |region: &str| {
            let s = self.status(region);
            let no_breach = s["budgets"]
                .as_object()
                .is_some_and(|b| !b.is_empty() && b.values().all(|c| c["breached"] == false));
            let linked = s["peers"]
                .as_array()
                .is_some_and(|p| p.len() == peers && p.iter().all(|p| p["connected"] == true));
            no_breach && linked
        };
        self.wait_for("every region connected, no budget breached", timeout, || {
            self.regions.keys().all(|r| quiet(r))
        });
    }

    /// The regions that may hold a record: every region, or for a personal
    /// type the regions of its subject's jurisdiction (read from the subject
    /// registry of the first region).
    pub fn holders(&self, entity: &str, id: &str) -> Vec<&str> {
        let names = self.region_names();
        if !self.config.entity(entity).is_some_and(|e| e.personal) {
            return names;
        }
        let Some(subject) = tandem_config::subject_of(id) else { return names };
        let a = self.get(names[0], &format!("/v1/subjects/{subject}"));
        assert_eq!(a.status, 200, "the jurisdiction of subject {subject}: {a}");
        let j = a.body["jurisdiction"].as_str().expect("jurisdiction").to_owned();
        names.into_iter().filter(|r| self.jurisdiction_of(r) == j).collect()
    }

    /// The groups of regions that must hold equal digests of `entity` once
    /// replication caught up: every region, or each jurisdiction's regions for
    /// a personal type.
    pub fn digest_groups(&self, entity: &str) -> Vec<Vec<&str>> {
        let names = self.region_names();
        if !self.config.entity(entity).is_some_and(|e| e.personal) {
            return vec![names];
        }
        let js: std::collections::BTreeSet<&str> =
            names.iter().map(|r| self.jurisdiction_of(r)).collect();
        js.iter()
            .map(|j| names.iter().copied().filter(|r| self.jurisdiction_of(r) == *j).collect())
            .collect()
    }

    /// `Ok` when every group of every entity type (and the subject registry)
    /// holds equal digests; otherwise what differs.
    pub fn convergence(&self) -> Result<(), String> {
        let mut entities: Vec<&str> = self.config.entities.keys().map(String::as_str).collect();
        entities.push("_subject");
        let mut diff = String::new();
        for e in &entities {
            for group in self.digest_groups(e) {
                let ds: Vec<(&str, Digest)> =
                    group.iter().map(|r| (*r, self.try_digest(r, Some(e)))).collect();
                let first = &ds[0].1;
                if first.is_err() || ds.iter().any(|(_, d)| d != first) {
                    let _ = writeln!(diff, "{e}: {ds:?}");
                }
            }
        }
        if diff.is_empty() {
            Ok(())
        } else {
            Err(diff)
        }
    }

    /// Wait (polling every `poll`) until [`Deployment::convergence`] holds;
    /// how long it took, or the differences seen last and the link report.
    pub fn wait_all_converged(
        &self,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            match self.convergence() {
                Ok(()) => return Ok(started.elapsed()),
                Err(diff) => last = diff,
            }
            std::thread::sleep(poll);
        }
        Err(format!("no convergence within {timeout:?}:\n{last}{}", self.link_report()))
    }

    /// One line per region and peer: connected, cursor, queue, last error.
    pub fn link_report(&self) -> String {
        let mut out = String::new();
        for region in self.region_names() {
            let url = format!("{}/v1/status", self.url(region));
            let status = match self.try_call(crate::http::Method::GET, &url, None, &[]) {
                Ok(a) if a.status == 200 => a.body,
                _ => {
                    let _ = writeln!(out, "{region}: no status");
                    continue;
                }
            };
            for p in status["peers"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "{region} <- {}: connected={} cursor={} peer_last_seq={} queue={} forwarded={} error={}",
                    p["peer"], p["connected"], p["cursor"], p["peer_last_seq"], p["queue_depth"],
                    p["forwarded"], p["last_error"]
                );
            }
        }
        out
    }

    /// Every acknowledged write of `history` that some region allowed to
    /// hold its record does not reflect (empty: nothing lost anywhere).
    pub fn check_acked(&self, history: &History) -> Vec<Lost> {
        history.check(|key: &Key| {
            self.holders(&key.entity, &key.id)
                .into_iter()
                .map(|region| {
                    let url = format!("{}/v1/records/{}/{}", self.url(region), key.entity, key.id);
                    let fin = self
                        .try_call(crate::http::Method::GET, &url, None, &[])
                        .map_err(|e| format!("GET: {e}"))
                        .and_then(|a| final_of(&a));
                    (region.to_owned(), fin)
                })
                .collect()
        })
    }
}
