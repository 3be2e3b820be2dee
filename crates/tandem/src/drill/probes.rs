//! The Time-to-Route probes: from the isolation on, reads of records that
//! only the target serves while every region is up, sent in turn through the
//! router as a caller in the target's region until a surviving region serves
//! one. They never write; their answers go to the journal like any other
//! request, so Time-to-Route is measured from the journal afterwards.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;

use super::plan::Topology;
use super::workload::{execute, Ctx, OpSpec, Subject};

/// Pause between two Time-to-Route probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The Time-to-Route probes: reads that only the target serves while every
/// region is up — a personal record of one of its subjects (when the target
/// has a peer in its jurisdiction), and a record of a type without
/// subjects — each from a caller in the target's region. They never write.
pub fn probe_specs(topo: &Topology, subjects: &[Subject], run: &str, target: &str) -> Vec<OpSpec> {
    let mut out = Vec::new();
    let subject = subjects.iter().find(|s| s.home == target);
    let personal = topo.entities.iter().find(|e| e.personal && e.subjects && !e.projection);
    if let (Some(s), Some(e), false) =
        (subject, personal, topo.jurisdiction_peers(target).is_empty())
    {
        let id = format!("{}:ttr-probe", s.name);
        out.push(OpSpec {
            method: Method::GET,
            path: format!("/v1/records/{}/{id}", e.name),
            body: None,
            entity: e.name.clone(),
            id,
            op: "probe".into(),
            home: Some(s.home.clone()),
            write: None,
        });
    }
    if let Some(e) = topo.entities.iter().find(|e| !e.subjects && !e.projection) {
        let id = format!("drill-{run}-ttr-probe");
        out.push(OpSpec {
            method: Method::GET,
            path: format!("/v1/records/{}/{id}", e.name),
            body: None,
            entity: e.name.clone(),
            id,
            op: "probe".into(),
            home: None,
            write: None,
        });
    }
    out
}

/// Send the probes in turn every [`PROBE_INTERVAL`] until one is served by a
/// region other than the target, or until drill time `until_s`.
pub async fn probe_until_rerouted(ctx: Arc<Ctx>, specs: Vec<OpSpec>, until_s: f64) {
    if specs.is_empty() {
        return;
    }
    let target = ctx.target.clone();
    for spec in specs.iter().cycle() {
        if ctx.clock.now() > until_s {
            return;
        }
        let (rec, _) = execute(&ctx, &target, spec).await;
        if super::measure::served(&rec) && rec.region.as_deref().is_some_and(|r| r != target) {
            return;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::workload::subjects;
    use tandem_config::Config;

    #[test]
    fn probes_are_the_targets_reads() {
        let topo = Topology::from_config(&Config::example());
        let subjects = subjects("r1", &topo);
        let eu = probe_specs(&topo, &subjects, "r1", "eu-west");
        assert_eq!(eu.len(), 2);
        assert_eq!(eu[0].home.as_deref(), Some("eu-west"));
        assert!(eu.iter().all(|p| p.method == Method::GET && p.write.is_none()));
        // us-east has no peer in the US: its subjects' data cannot be served elsewhere.
        let us = probe_specs(&topo, &subjects, "r1", "us-east");
        assert_eq!(us.len(), 1);
        assert_eq!(us[0].home, None);
    }
}
