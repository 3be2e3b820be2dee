//! The drill's measurements, computed from timestamped events only (pure, no
//! I/O): how each answered request is classed on the timeline, Time-to-Detect
//! (isolation to the first alert the deployment raised itself), Time-to-Route
//! (isolation to the first request for the target's traffic served by a
//! surviving region), the max replication lag over time, and whether a
//! conflict is explained by a routing switch of the drill (its two versions
//! were written on either side of the drain, kill or restore, in different
//! regions) rather than by a routing fault; and whether a request was served,
//! or refused, where the routing and residency rules allow.

use serde::Serialize;

use super::detail::describe_request;
use super::journal::RequestRecord;
use super::plan::Topology;

/// How an answered request looks on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Served where it normally is.
    Ok,
    /// Served by a surviving region in place of the target (or routed `failover`).
    Failover,
    /// Refused on purpose: 503 `no_region_available` or `reads_halted`.
    Refused,
    /// Anything else: no answer, a 5xx, an unexpected 4xx.
    Error,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Ok, Class::Failover, Class::Refused, Class::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Failover => "failover",
            Class::Refused => "refused",
            Class::Error => "error",
        }
    }
}

/// Whether this request is part of the target's traffic: with every region
/// available, the target is the one that serves it.
pub fn target_bound(rec: &RequestRecord, target: &str) -> bool {
    rec.normal == target
}

/// A read of a record that is not there (yet) is a served read, not an error.
pub fn served(rec: &RequestRecord) -> bool {
    rec.ok()
        || (rec.status == Some(404) && !rec.is_write() && rec.error.as_deref() == Some("not_found"))
}

pub fn classify(rec: &RequestRecord, target: &str) -> Class {
    if rec.refused() {
        return Class::Refused;
    }
    if !served(rec) {
        return Class::Error;
    }
    let elsewhere = rec.region.as_deref().is_some_and(|r| r != target);
    if rec.route.as_deref() == Some("failover") || (target_bound(rec, target) && elsewhere) {
        Class::Failover
    } else {
        Class::Ok
    }
}

/// Time-to-Route: from `t_iso` to the answer of the first request of the
/// target's traffic, sent after `t_iso`, that a surviving region served
/// (answered 2xx, or 404 for a read of a record it does not hold).
/// Returns the seconds and a description of that request.
pub fn time_to_route(records: &[RequestRecord], target: &str, t_iso: f64) -> Option<(f64, String)> {
    records
        .iter()
        .filter(|r| r.sent_s >= t_iso && served(r) && target_bound(r, target))
        .filter(|r| r.region.as_deref().is_some_and(|g| g != target))
        .min_by(|a, b| a.done_s.total_cmp(&b.done_s))
        .map(|r| {
            (
                (r.done_s - t_iso).max(0.0),
                format!(
                    "{} {}/{} from {} served by {} (route {})",
                    r.op,
                    r.entity,
                    r.id,
                    r.caller,
                    r.region.as_deref().unwrap_or("?"),
                    r.route.as_deref().unwrap_or("?")
                ),
            )
        })
}

/// Whether a refusal of this request is what the rules require: its
/// subject's jurisdiction has no region left once `target` is out.
pub fn refusal_expected(topo: &Topology, target: &str, r: &RequestRecord) -> bool {
    if r.error.as_deref() == Some("reads_halted") && !r.is_write() {
        return true;
    }
    let Some(home) = r.home.as_deref() else { return false };
    let Some(e) = topo.entity(&r.entity) else { return false };
    let j = topo.jurisdiction_of(home);
    e.routed_by_home(r.is_write())
        && j == topo.jurisdiction_of(target)
        && topo.jurisdiction_peers(target).is_empty()
}

/// Whether a served request was served where the rules allow.
pub fn permitted(topo: &Topology, r: &RequestRecord) -> bool {
    let Some(region) = r.region.as_deref() else { return true };
    let Some(e) = topo.entity(&r.entity) else { return true };
    let Some(home) = r.home.as_deref() else { return true };
    let same_j = topo.jurisdiction_of(region) == topo.jurisdiction_of(home);
    if e.personal && !same_j {
        return false;
    }
    if r.is_write() && e.pinned {
        return region == home || (r.route.as_deref() == Some("failover") && same_j);
    }
    true
}

/// Acknowledged writes served where they must not be, and refusals that
/// say the router sent a write to the wrong region.
pub fn landing_violations(topo: &Topology, records: &[&RequestRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.is_write())
        .filter(|r| {
            (r.ok() && !permitted(topo, r))
                || matches!(r.error.as_deref(), Some("residency_violation" | "misdirected_write"))
        })
        .map(|r| describe_request(r))
        .collect()
}

/// One link as a region reported it in `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSample {
    pub peer: String,
    pub connected: bool,
    pub queue_depth: u64,
    /// The worst lag of any data class from this peer, seconds.
    pub lag_seconds: f64,
}

/// A region's `/v1/status` at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSample {
    pub isolated: bool,
    /// Data classes whose lag budget is breached.
    pub breached: Vec<String>,
    pub peers: Vec<PeerSample>,
}

/// A region as the router's `/v1/routes` showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSample {
    pub region: String,
    pub up: bool,
    pub drained: bool,
}

/// One round of the monitor: the router's view and every region's status
/// (`None` where it did not answer).
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub t: f64,
    pub routes: Option<Vec<RouteSample>>,
    pub regions: Vec<(String, Option<NodeSample>)>,
}

impl Tick {
    pub fn node(&self, region: &str) -> Option<&NodeSample> {
        self.regions.iter().find(|(r, _)| r == region).and_then(|(_, s)| s.as_ref())
    }

    /// The worst lag any region reported for any link in this round.
    pub fn max_lag(&self) -> Option<f64> {
        self.regions
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .flat_map(|s| s.peers.iter().map(|p| p.lag_seconds))
            .reduce(f64::max)
    }
}

/// Time-to-Detect: from `t_iso` to the first alert the deployment raised
/// itself: the router marking the target down, or a lag budget breached on
/// a surviving region. Returns the seconds and what fired.
pub fn time_to_detect(ticks: &[Tick], target: &str, t_iso: f64) -> Option<(f64, String)> {
    for tick in ticks.iter().filter(|t| t.t >= t_iso) {
        let down = tick
            .routes
            .as_ref()
            .and_then(|rs| rs.iter().find(|r| r.region == target))
            .is_some_and(|r| !r.up);
        if down {
            return Some((tick.t - t_iso, format!("router marked {target} down")));
        }
        for (region, sample) in &tick.regions {
            if region == target {
                continue;
            }
            if let Some(class) = sample.as_ref().and_then(|s| s.breached.first()) {
                return Some((
                    tick.t - t_iso,
                    format!("lag budget `{class}` breached on {region}"),
                ));
            }
        }
    }
    None
}

/// `(t, max lag)` of every round where some region answered.
pub fn lag_series(ticks: &[Tick]) -> Vec<(f64, f64)> {
    ticks.iter().filter_map(|t| Some((t.t, t.max_lag()?))).collect()
}

/// One version of a conflicting record: where and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub origin: String,
    pub wall_ms: u64,
}

/// A conflict as `/v1/conflicts` showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictSeen {
    pub region: String,
    pub entity: String,
    pub id: String,
    pub detected_at_ms: u64,
    pub local: Side,
    pub remote: Side,
}

impl ConflictSeen {
    /// Parse one entry of `/v1/conflicts` seen at `region`.
    pub fn from_json(region: &str, v: &serde_json::Value) -> Option<ConflictSeen> {
        let side = |s: &serde_json::Value| {
            Some(Side {
                origin: s["origin"].as_str()?.to_owned(),
                wall_ms: s["hlc"]["wall_ms"].as_u64()?,
            })
        };
        Some(ConflictSeen {
            region: region.to_owned(),
            entity: v["entity"].as_str()?.to_owned(),
            id: v["id"].as_str()?.to_owned(),
            detected_at_ms: v["detected_at_ms"].as_u64()?,
            local: side(&v["local"])?,
            remote: side(&v["remote"])?,
        })
    }
}

/// Slack around a routing switch for a request that was already on its way.
pub const SWITCH_SLACK_MS: u64 = 500;

/// Whether a conflict is explained by one of the drill's routing switches
/// (unix ms): the two versions come from different regions, the older one
/// was written in the `window_ms` before the switch (so it may not have
/// replicated when the traffic moved) and the newer one after it.
pub fn explained_by_switch(c: &ConflictSeen, switches_ms: &[u64], window_ms: u64) -> bool {
    if c.local.origin == c.remote.origin {
        return false;
    }
    let (older, newer) = if c.local.wall_ms <= c.remote.wall_ms {
        (&c.local, &c.remote)
    } else {
        (&c.remote, &c.local)
    };
    switches_ms.iter().any(|&s| {
        older.wall_ms + window_ms >= s
            && older.wall_ms <= s + SWITCH_SLACK_MS
            && newer.wall_ms + SWITCH_SLACK_MS >= s
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn rec(
        sent: f64,
        home: Option<&str>,
        caller: &str,
        status: Option<u16>,
        region: Option<&str>,
        route: Option<&str>,
    ) -> RequestRecord {
        RequestRecord {
            normal: home.unwrap_or(caller).to_owned(),
            sent_s: sent,
            done_s: sent + 0.01,
            entity: "credential".into(),
            id: "s:cred".into(),
            op: "put".into(),
            caller: caller.into(),
            home: home.map(Into::into),
            status,
            region: region.map(Into::into),
            route: route.map(Into::into),
            error: None,
            write: None,
        }
    }

    #[test]
    fn classes() {
        let t = "eu-west";
        assert_eq!(
            classify(&rec(0.0, Some(t), "us-east", Some(200), Some(t), Some("home")), t),
            Class::Ok
        );
        assert_eq!(
            classify(
                &rec(0.0, Some(t), "us-east", Some(200), Some("eu-central"), Some("failover")),
                t
            ),
            Class::Failover
        );
        assert_eq!(
            classify(&rec(0.0, None, t, Some(200), Some("eu-central"), Some("nearest")), t),
            Class::Failover,
            "a caller in the target's region served elsewhere"
        );
        assert_eq!(
            classify(&rec(0.0, None, "us-east", Some(200), Some("us-east"), Some("nearest")), t),
            Class::Ok
        );
        let mut refused = rec(0.0, Some("us-east"), "us-east", Some(503), None, None);
        refused.error = Some("no_region_available".into());
        assert_eq!(classify(&refused, "us-east"), Class::Refused);
        assert_eq!(classify(&rec(0.0, Some(t), t, None, None, None), t), Class::Error);
        let mut missing = rec(0.0, Some(t), t, Some(404), Some(t), Some("home"));
        missing.error = Some("not_found".into());
        assert_eq!(
            classify(&missing, t),
            Class::Ok,
            "a read of a record not replicated yet is served"
        );
        missing.write = Some(super::super::journal::WriteOp::Incr { by: 1 });
        assert_eq!(classify(&missing, t), Class::Error);
    }

    #[test]
    fn ttr_is_the_first_rerouted_success_sent_after_isolation() {
        let t = "eu-west";
        let records = vec![
            // Before isolation: served by the target.
            rec(9.0, Some(t), t, Some(200), Some(t), Some("home")),
            // Sent before isolation, answered after by someone else: not counted.
            rec(9.99, Some(t), t, Some(200), Some("eu-central"), Some("failover")),
            // After: an error while the router has not noticed yet.
            rec(10.1, Some(t), t, Some(502), Some(t), Some("home")),
            // Another region's subject: not the target's traffic.
            rec(10.2, Some("us-east"), "us-east", Some(200), Some("us-east"), Some("home")),
            rec(10.6, Some(t), "us-east", Some(200), Some("eu-central"), Some("failover")),
            rec(10.4, None, t, Some(200), Some("eu-central"), Some("nearest")),
        ];
        let (ttr, what) = time_to_route(&records, t, 10.0).unwrap();
        assert!((ttr - 0.41).abs() < 1e-9, "{ttr}");
        assert!(what.contains("served by eu-central"), "{what}");
        assert!(time_to_route(&records[..4], t, 10.0).is_none());
        // A probe read of a record the surviving region does not hold was routed there.
        let mut probe = rec(10.3, Some(t), t, Some(404), Some("eu-central"), Some("nearest"));
        probe.error = Some("not_found".into());
        let mut with_probe = records.clone();
        with_probe.push(probe);
        let (ttr, _) = time_to_route(&with_probe, t, 10.0).unwrap();
        assert!((ttr - 0.31).abs() < 1e-9, "{ttr}");
    }

    fn tick(t: f64, target_up: bool, breached_on: Option<&str>, lag: f64) -> Tick {
        let node = |b: bool| NodeSample {
            isolated: false,
            breached: if b { vec!["credentials".into()] } else { vec![] },
            peers: vec![PeerSample {
                peer: "x".into(),
                connected: true,
                queue_depth: 0,
                lag_seconds: lag,
            }],
        };
        Tick {
            t,
            routes: Some(vec![RouteSample {
                region: "eu-west".into(),
                up: target_up,
                drained: false,
            }]),
            regions: vec![
                ("eu-west".into(), Some(node(true))),
                ("eu-central".into(), Some(node(breached_on == Some("eu-central")))),
            ],
        }
    }

    #[test]
    fn ttd_is_the_first_alert_after_isolation() {
        // The target's own breach does not count: it is the isolated one.
        let ticks = vec![
            tick(4.0, false, None, 0.1),
            tick(10.0, true, None, 0.1),
            tick(12.5, true, Some("eu-central"), 5.2),
            tick(13.0, false, None, 0.1),
        ];
        let (ttd, what) = time_to_detect(&ticks, "eu-west", 10.0).unwrap();
        assert!((ttd - 2.5).abs() < 1e-9);
        assert!(what.contains("credentials") && what.contains("eu-central"), "{what}");
        let (ttd, what) = time_to_detect(&ticks[3..], "eu-west", 10.0).unwrap();
        assert_eq!(ttd, 3.0);
        assert!(what.contains("down"));
        assert!(time_to_detect(&ticks[1..2], "eu-west", 10.0).is_none());
        assert_eq!(lag_series(&ticks).iter().map(|p| p.1).fold(0.0, f64::max), 5.2);
    }

    fn conflict(a: (&str, u64), b: (&str, u64)) -> ConflictSeen {
        ConflictSeen {
            region: "eu-central".into(),
            entity: "credential".into(),
            id: "s:c".into(),
            detected_at_ms: 0,
            local: Side { origin: a.0.into(), wall_ms: a.1 },
            remote: Side { origin: b.0.into(), wall_ms: b.1 },
        }
    }

    #[test]
    fn conflicts_across_a_switch_are_explained() {
        let kill = 100_000;
        // Written by the target just before it died, then at the failover region.
        assert!(explained_by_switch(
            &conflict(("eu-central", 108_000), ("eu-west", 99_990)),
            &[kill],
            2_000
        ));
        // Written long before the switch: it had time to replicate.
        assert!(!explained_by_switch(
            &conflict(("eu-central", 108_000), ("eu-west", 90_000)),
            &[kill],
            2_000
        ));
        // Both versions far from any switch.
        assert!(!explained_by_switch(
            &conflict(("eu-central", 50_000), ("eu-west", 50_010)),
            &[kill],
            2_000
        ));
        // Same origin cannot be a routing conflict.
        assert!(!explained_by_switch(
            &conflict(("eu-west", 99_000), ("eu-west", 101_000)),
            &[kill],
            2_000
        ));
        // The restore switch explains the other direction.
        assert!(explained_by_switch(
            &conflict(("eu-west", 150_020), ("eu-central", 149_990)),
            &[kill, 150_000],
            2_000
        ));
    }

    #[test]
    fn conflict_from_json() {
        let v = serde_json::json!({
            "entity": "credential", "id": "a:b", "detected_at_ms": 5,
            "local": {"hlc": {"wall_ms": 1, "logical": 0}, "origin": "eu-west", "value": 1},
            "remote": {"hlc": {"wall_ms": 2, "logical": 0}, "origin": "eu-central", "value": 2},
        });
        let c = ConflictSeen::from_json("eu-west", &v).unwrap();
        assert_eq!(c.remote, Side { origin: "eu-central".into(), wall_ms: 2 });
    }

    /// A write of `entity` for a subject homed in `home`, answered 200 by `region`.
    fn write(entity: &str, home: &str, region: &str, route: &str) -> RequestRecord {
        let mut r = rec(0.0, Some(home), home, Some(200), Some(region), Some(route));
        r.entity = entity.into();
        r.write = Some(crate::drill::journal::WriteOp::Incr { by: 1 });
        r
    }

    #[test]
    fn writes_land_where_the_rules_allow() {
        let topo = Topology::from_config(&tandem_config::Config::example());
        // Pinned and personal: at home, or failed over inside the jurisdiction.
        assert!(permitted(&topo, &write("credential", "eu-west", "eu-west", "home")));
        assert!(permitted(&topo, &write("credential", "eu-west", "eu-central", "failover")));
        assert!(!permitted(&topo, &write("credential", "eu-west", "eu-central", "nearest")));
        assert!(!permitted(&topo, &write("credential", "eu-west", "us-east", "failover")));
        // Personal, roaming: anywhere in the jurisdiction, never outside it.
        assert!(permitted(&topo, &write("cart", "eu-west", "eu-central", "nearest")));
        assert!(!permitted(&topo, &write("cart", "eu-west", "us-east", "nearest")));
        // Pinned, not personal: at home or failed over; reads anywhere.
        assert!(!permitted(&topo, &write("settings", "us-east", "eu-west", "nearest")));
        let mut read = write("settings", "us-east", "eu-west", "nearest");
        read.write = None;
        assert!(permitted(&topo, &read));

        let bad = write("credential", "eu-west", "us-east", "failover");
        let mut misdirected = write("credential", "eu-west", "eu-central", "home");
        misdirected.status = Some(421);
        misdirected.error = Some("misdirected_write".into());
        let fine = write("credential", "eu-west", "eu-west", "home");
        let found = landing_violations(&topo, &[&bad, &misdirected, &fine]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("by us-east (failover)"), "{found:?}");
    }

    #[test]
    fn refusals_are_expected_only_when_the_jurisdiction_is_gone() {
        let topo = Topology::from_config(&tandem_config::Config::example());
        let mut refused = write("credential", "us-east", "us-east", "home");
        refused.status = Some(503);
        refused.region = None;
        refused.error = Some("no_region_available".into());
        // us-east is the only region of the US; eu-west has a peer in the EU.
        assert!(refusal_expected(&topo, "us-east", &refused));
        assert!(!refusal_expected(&topo, "eu-west", &refused));
        let eu = RequestRecord { home: Some("eu-west".into()), ..refused.clone() };
        assert!(!refusal_expected(&topo, "eu-west", &eu));
        // Not routed by home: a caller's own region refusing is not the rules.
        let likes = RequestRecord { entity: "likes".into(), ..refused.clone() };
        assert!(!refusal_expected(&topo, "us-east", &likes));
        // Reads of a lagging class may be halted anywhere.
        let halted =
            RequestRecord { write: None, error: Some("reads_halted".into()), ..eu.clone() };
        assert!(refusal_expected(&topo, "eu-west", &halted));
    }
}
