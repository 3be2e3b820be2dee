//! Where a RESP command goes: the keys it names (`tandem_resp::command`)
//! become the same routing decision an HTTP request on those records gets
//! (`decide`): a pinned write to its subject's home (or a failover inside
//! the home's jurisdiction), personal records inside their jurisdiction,
//! everything else to the nearest region to the caller. A command whose keys
//! would go to different regions is refused (`-CROSSREGION`, like Redis
//! Cluster's `-CROSSSLOT`): no command is split across regions.

use tandem_config::EntityConfig;
use tandem_resp::codec::Reply;
use tandem_resp::command::{self, Access, Class, Family};

use crate::decide::{self, Decision, Kind, RegionView, Route};
use crate::home_lookup::lookup_home;
use crate::metrics::RequestLabels;
use crate::state::RouterState;

/// A command's destination, with what it was decided on (to decide again
/// after a refused connection).
#[derive(Debug, Clone)]
pub struct Routed {
    pub region: String,
    pub route: Route,
    pub failover_for: Option<String>,
    pub kind: Kind,
    pub entity: Option<EntityConfig>,
    pub home: Option<String>,
    /// The subject whose home was looked up (its cached home is forgotten
    /// when the region answers MISDIRECTED).
    pub subject: Option<String>,
}

impl Routed {
    /// The decision this command was routed by, over any view of the regions.
    pub fn decide(&self, regions: &[RegionView]) -> Decision {
        let request = decide::Request {
            kind: self.kind,
            entity: self.entity.as_ref(),
            home_region: self.home.as_deref(),
        };
        decide::decide(&request, regions)
    }
}

/// Route a data command (connection commands are answered before this).
pub async fn route(s: &RouterState, caller: &str, args: &[Vec<u8>]) -> Result<Routed, Reply> {
    let regions = s.views(caller);
    match command::classify(args) {
        Class::Keys { access, family, keys } if !keys.is_empty() => {
            let kind = match access {
                Access::Read => Kind::Read,
                Access::Write => Kind::Write,
            };
            let mut first: Option<Routed> = None;
            for key in keys {
                let r = route_key(s, &regions, kind, family, key).await?;
                match &first {
                    None => first = Some(r),
                    Some(f) if f.region == r.region && f.failover_for == r.failover_for => {}
                    Some(f) => {
                        return Err(Reply::Error(format!(
                            "CROSSREGION the keys of this command are served by different regions ({} and {}); send them in separate commands",
                            f.region, r.region
                        )))
                    }
                }
            }
            Ok(first.expect("at least one key"))
        }
        // SCAN, DBSIZE, COMMAND, unknown commands and missing keys: the
        // nearest region answers (or refuses) them.
        _ => decided(&regions, Kind::Read, None, None, None),
    }
}

async fn route_key(
    s: &RouterState,
    regions: &[RegionView],
    kind: Kind,
    family: Option<Family>,
    key: &[u8],
) -> Result<Routed, Reply> {
    let key = std::str::from_utf8(key).map_err(|_| Reply::err("keys must be UTF-8 text"))?;
    let nearest = || decided(regions, kind, None, None, None);
    // A key without ':' in several default entities (DEL, EXISTS, TYPE):
    // routed by the first; the region tries each.
    let Some((entity, id)) = command::candidates(key, family, &s.config.resp).into_iter().next()
    else {
        return nearest();
    };
    // Unknown entity, or an id without its subject: the region refuses it.
    let Some(cfg) = s.config.entity(&entity).cloned() else { return nearest() };
    let subject = cfg.subjects.then(|| tandem_config::subject_of(&id).map(str::to_owned)).flatten();
    if cfg.subjects && subject.is_none() {
        return nearest();
    }
    let home = match (&subject, decide::needs_home(kind, &cfg)) {
        (Some(subject), true) => lookup_home(s, subject, regions).await.map_err(|_| {
            Reply::Error("NOREGION cannot look up the subject's home region".into())
        })?,
        _ => None,
    };
    let routed = decided(regions, kind, Some(cfg), home, subject.clone());
    if let Err(Reply::Error(e)) = &routed {
        if e.starts_with("RESIDENCY") {
            count(s, "unknown_subject");
            return Err(Reply::Error(format!(
                "RESIDENCY subject `{}` is not registered; register it first (PUT /v1/subjects/{})",
                subject.as_deref().unwrap_or_default(),
                subject.as_deref().unwrap_or_default()
            )));
        }
        count(s, "no_region");
    }
    routed
}

fn decided(
    regions: &[RegionView],
    kind: Kind,
    entity: Option<EntityConfig>,
    home: Option<String>,
    subject: Option<String>,
) -> Result<Routed, Reply> {
    let mut routed = Routed {
        region: String::new(),
        route: Route::Nearest,
        failover_for: None,
        kind,
        entity,
        home,
        subject,
    };
    match routed.decide(regions) {
        Decision::Send { region, route, failover_for } => {
            routed.region = region;
            routed.route = route;
            routed.failover_for = failover_for;
            Ok(routed)
        }
        Decision::NoRegionAvailable { jurisdiction } => {
            let where_ = jurisdiction.map(|j| format!(" in {j}")).unwrap_or_default();
            Err(Reply::Error(format!("NOREGION no healthy region{where_} may serve this command")))
        }
        Decision::UnknownSubject => Err(Reply::Error("RESIDENCY unknown subject".into())),
    }
}

fn count(s: &RouterState, outcome: &str) {
    s.metrics.requests.get_or_create(&RequestLabels::new("none", "none", outcome)).inc();
}
