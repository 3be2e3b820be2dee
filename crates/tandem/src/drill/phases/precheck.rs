//! The pre-drill checks that need no traffic and change nothing: every
//! region and the router healthy, the router's routes as the config says,
//! no region isolated, replication lag below 5 s on every link, the admin
//! token accepted (by calls that are no-ops), and in kill mode the control
//! API of `tandem up` reachable. A failure here stops the drill before it
//! touches the target.

use serde_json::Value;
use tandem_config::Config;

use super::predrill::PRE_LAG_MAX_S;
use crate::drill::deployment::{Deployment, CALL_TIMEOUT};
use crate::drill::detail::join_or;
use crate::drill::http::Answer;
use crate::drill::monitor;
use crate::drill::plan::{Mode, Topology};
use crate::drill::report::Check;

/// Every static check, in the order the report lists them.
pub(super) async fn static_checks(dep: &Deployment, config: &Config, mode: Mode) -> Vec<Check> {
    let mut checks = Vec::new();
    let regions = dep.topo.region_names();
    let mut unhealthy = Vec::new();
    for r in &regions {
        if !dep.healthy(r).await {
            unhealthy.push(r.clone());
        }
    }
    checks.push(Check::new(
        "every region healthy",
        unhealthy.is_empty(),
        if unhealthy.is_empty() {
            format!("/healthz answered by {}", regions.join(", "))
        } else {
            format!("no /healthz from {}", unhealthy.join(", "))
        },
    ));
    match dep.routes().await {
        None => checks.push(Check::new(
            "router sees every region up, none drained",
            false,
            format!("no /v1/routes from the router at {}", dep.topo.router_url),
        )),
        Some(v) => {
            let samples = monitor::route_samples(&v).unwrap_or_default();
            let bad: Vec<String> = samples
                .iter()
                .filter(|r| !r.up || r.drained)
                .map(|r| format!("{} (up {}, drained {})", r.region, r.up, r.drained))
                .collect();
            checks.push(Check::new(
                "router sees every region up, none drained",
                bad.is_empty() && samples.len() == regions.len(),
                join_or(&bad, &format!("{} regions up", samples.len())),
            ));
            let mismatches = routes_mismatches(&dep.topo, config, &v);
            checks.push(Check::new(
                "router routes as configured",
                mismatches.is_empty(),
                join_or(
                    &mismatches,
                    "regions, jurisdictions, default region and entity policies match the config",
                ),
            ));
        }
    }
    let mut isolated = Vec::new();
    let mut lagging = Vec::new();
    let mut worst = (0.0f64, String::new());
    for r in &regions {
        let Some(sample) = dep.status(r).await.as_ref().and_then(monitor::node_sample) else {
            lagging.push(format!("{r}: no /v1/status"));
            continue;
        };
        if sample.isolated {
            isolated.push(r.clone());
        }
        for p in &sample.peers {
            if !p.connected || p.lag_seconds >= PRE_LAG_MAX_S {
                lagging.push(format!(
                    "{}→{r}: {} lag {:.2} s",
                    p.peer,
                    if p.connected { "connected" } else { "not connected" },
                    p.lag_seconds
                ));
            }
            if p.lag_seconds >= worst.0 {
                worst = (p.lag_seconds, format!("{}→{r}", p.peer));
            }
        }
    }
    checks.push(Check::new(
        "no region isolated",
        isolated.is_empty(),
        join_or(&isolated.iter().map(|r| format!("{r} is isolated")).collect::<Vec<_>>(), "none"),
    ));
    checks.push(Check::new(
        "replication lag below 5 s on every link",
        lagging.is_empty(),
        join_or(&lagging, &format!("worst {:.2} s ({})", worst.0, worst.1)),
    ));
    checks.push(token_check(dep, &isolated).await);
    if mode == Mode::Kill {
        checks.push(control_check(dep).await);
    }
    checks
}

/// How the router's `/v1/routes` differs from what the config says.
fn routes_mismatches(topo: &Topology, config: &Config, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let default =
        config.router.default_region.clone().unwrap_or_else(|| config.regions[0].name.clone());
    if v["default_region"].as_str() != Some(default.as_str()) {
        out.push(format!("default region {} (config: {default})", v["default_region"]));
    }
    let listed = v["regions"].as_array().cloned().unwrap_or_default();
    if listed.len() != topo.regions.len() {
        out.push(format!("{} regions (config: {})", listed.len(), topo.regions.len()));
    }
    for r in &topo.regions {
        match listed.iter().find(|x| x["region"] == r.name.as_str()) {
            None => out.push(format!("region {} missing", r.name)),
            Some(x) => {
                if x["jurisdiction"] != r.jurisdiction.as_str() || x["url"] != r.url.as_str() {
                    out.push(format!(
                        "region {}: {} at {} (config: {} at {})",
                        r.name, x["jurisdiction"], x["url"], r.jurisdiction, r.url
                    ));
                }
            }
        }
    }
    for e in &topo.entities {
        let x = &v["entities"][&e.name];
        let writes = if e.pinned { "home-region" } else { "any-region" };
        if x["personal"] != e.personal || x["subjects"] != e.subjects || x["writes"] != writes {
            out.push(format!("entity {}: router has {x}", e.name));
        }
    }
    out
}

/// The admin token works at the router and at the target, by calls that are no-ops.
async fn token_check(dep: &Deployment, isolated: &[String]) -> Check {
    let name = "admin token accepted by the router and the target";
    let Some(token) = dep.admin_token.as_deref() else {
        return Check::new(name, false, "no admin token: set TANDEM_ADMIN_TOKEN or pass --data-dir of the deployment (admin.token)");
    };
    // An unknown region is refused after the token is checked: 404 means accepted.
    let url = format!("{}/v1/admin/regions/drill-token-check/drain", dep.topo.router_url);
    let router = dep.http.admin_post(&url, Some(token), CALL_TIMEOUT).await;
    let router_ok = matches!(&router, Ok(a) if a.status == 404);
    // Rejoin is a no-op on a region that is not isolated.
    let node_ok = if isolated.contains(&dep.target) {
        false
    } else {
        let url = format!("{}/v1/admin/rejoin", dep.region_url(&dep.target));
        matches!(dep.http.admin_post(&url, Some(token), CALL_TIMEOUT).await, Ok(a) if a.ok())
    };
    let describe = |r: &Result<Answer, String>| match r {
        Ok(a) => format!("{}", a.status),
        Err(e) => e.clone(),
    };
    Check::new(
        name,
        router_ok && node_ok,
        format!(
            "router {}, {} {}",
            if router_ok { "accepts it".into() } else { format!("answered {}", describe(&router)) },
            dep.target,
            if node_ok { "accepts it" } else { "refused it or is isolated" }
        ),
    )
}

/// Kill mode needs the control API, and the target's process running under it.
async fn control_check(dep: &Deployment) -> Check {
    let name = "control API reachable and the target's process running";
    let Some(control) = dep.control.as_deref() else {
        return Check::new(name, false, "kill mode needs the control API of `tandem up`: no up.json in the data directory (pass --data-dir)");
    };
    let Some(v) = dep.control_deployment().await else {
        return Check::new(name, false, format!("no answer from {control}/v1/deployment"));
    };
    let running = v["processes"][&dep.target]["running"].as_bool() == Some(true);
    Check::new(name, running, format!("{control}: {} running {running}", dep.target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `/v1/routes` as a router running `config` answers it.
    fn routes_of(topo: &Topology, default_region: &str) -> Value {
        json!({
            "default_region": default_region,
            "regions": topo.regions.iter().map(|r| json!({
                "region": r.name, "jurisdiction": r.jurisdiction, "url": r.url, "up": true, "drained": false,
            })).collect::<Vec<_>>(),
            "entities": topo.entities.iter().map(|e| (e.name.clone(), json!({
                "personal": e.personal,
                "subjects": e.subjects,
                "writes": if e.pinned { "home-region" } else { "any-region" },
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }

    #[test]
    fn routes_are_compared_with_the_config() {
        let config = Config::example();
        let topo = Topology::from_config(&config);
        let default = config.router.default_region.clone().unwrap_or("eu-west".into());
        let routes = routes_of(&topo, &default);
        assert_eq!(routes_mismatches(&topo, &config, &routes), Vec::<String>::new());

        let mut moved = routes.clone();
        moved["regions"][2]["jurisdiction"] = json!("EU");
        moved["entities"]["credential"]["writes"] = json!("any-region");
        let found = routes_mismatches(&topo, &config, &moved);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("region us-east: \"EU\""), "{found:?}");
        assert!(found[1].starts_with("entity credential: router has"), "{found:?}");

        let mut missing = routes;
        missing["regions"].as_array_mut().unwrap().pop();
        let found = routes_mismatches(&topo, &config, &missing);
        assert_eq!(found, vec!["2 regions (config: 3)", "region us-east missing"]);
    }
}
