//! Lag budgets of a running deployment, end to end: under `tandem up` with a
//! link cut, the credentials lag budget breaches within its 5 s budget plus
//! one evaluation interval and clears once the link heals; a `financial` read
//! of a record from the lagging region is refused at that node with 503
//! `reads_halted` and served fresh through the router. (`prometheus.rs` checks
//! the alert rules and the dashboard against what the processes export.)
//!
//! Each test runs its own `tandem up` (example config, free loopback ports,
//! its own temporary data directory), so the tests run in parallel.

use std::time::{Duration, Instant};

use serde_json::json;
use tandem_testkit::{config, metrics, Builder, Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// The node's budget evaluation period (`tandem_node::budget::EVALUATION_INTERVAL`).
const EVALUATION_INTERVAL: Duration = Duration::from_millis(200);
/// The replication heartbeat: the last frame before a cut is at most this old.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// The example's credentials budget.
const CREDENTIALS_BUDGET: Duration = Duration::from_secs(5);
/// Slack for polling and scheduling on a loaded machine.
const POLL_MARGIN: Duration = Duration::from_secs(1);
/// How long a deployment (or Prometheus) may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of a fast-moving state.
const FAST_POLL: Duration = Duration::from_millis(50);

#[test]
fn credentials_budget_breaches_within_budget_and_clears() {
    let up = deployment().without_router().start();
    up.wait_quiet(START_TIMEOUT);
    let breached_gauge = |text: &str| {
        metrics::sum(text, "replication_lag_budget_breached", &[("data_class", "credentials")])
    };
    let gauge_only = |text: &str| text.contains("replication_lag_budget_breached{");
    assert!(gauge_only(&up.metrics("us-east")), "the breach gauge is exported at rest");

    // The lag clock starts at the last frame from eu-west, at most one
    // heartbeat before the cut; the node sees it within one evaluation.
    let deadline = CREDENTIALS_BUDGET + EVALUATION_INTERVAL + POLL_MARGIN;
    let not_before = CREDENTIALS_BUDGET - HEARTBEAT - Duration::from_millis(250);
    let cut_at = Instant::now();
    up.cut("eu-west", "us-east");
    let (mut status_at, mut gauge_at) = (None, None);
    while status_at.is_none() || gauge_at.is_none() {
        let elapsed = cut_at.elapsed();
        let status = up.status("us-east");
        let budget = &status["budgets"]["credentials"];
        let text = up.metrics("us-east");
        let in_status = budget["breached"] == true;
        let in_gauge = breached_gauge(&text) == 1.0;
        if in_status || in_gauge {
            assert!(
                elapsed >= not_before,
                "credentials breached after only {elapsed:?} (budget 5 s): {budget}"
            );
        }
        if in_status && status_at.is_none() {
            status_at = Some(elapsed);
            assert_eq!(budget["lagging_peers"], json!(["eu-west"]), "{budget}");
            assert_eq!(budget["max_lag_seconds"], json!(5.0), "{budget}");
            assert_eq!(budget["on_breach"], "alert", "{budget}");
            // Only the class whose budget is exceeded: financial allows 30 s.
            assert_eq!(status["budgets"]["financial"]["breached"], false, "{status}");
        }
        if in_gauge && gauge_at.is_none() {
            gauge_at = Some(elapsed);
        }
        assert!(
            elapsed <= deadline,
            "credentials not breached {elapsed:?} after the cut (status at {status_at:?}, \
             gauge at {gauge_at:?}): {budget}"
        );
        std::thread::sleep(FAST_POLL);
    }
    let (status_at, gauge_at) = (status_at.expect("seen"), gauge_at.expect("seen"));
    eprintln!("credentials breached {status_at:?} (status) / {gauge_at:?} (gauge) after the cut");
    // The other regions still hear eu-west: no breach there.
    for region in ["eu-west", "eu-central"] {
        let budgets = &up.status(region)["budgets"];
        assert_eq!(budgets["credentials"]["breached"], false, "{region}: {budgets}");
    }
    up.wait_for("the breach is logged", Duration::from_secs(5), || {
        up.log_text().lines().any(|l| {
            l.starts_with("[us-east]")
                && l.contains("lag budget breached")
                && l.contains("credentials")
        })
    });

    let healed_at = Instant::now();
    up.heal("eu-west", "us-east");
    up.wait_for("the breach clears after the heal", Duration::from_secs(6), || {
        up.status("us-east")["budgets"]["credentials"]["breached"] == false
            && breached_gauge(&up.metrics("us-east")) == 0.0
    });
    eprintln!("credentials breach cleared {:?} after the heal", healed_at.elapsed());
    up.wait_for("the end of the breach is logged", Duration::from_secs(5), || {
        up.log_text()
            .lines()
            .any(|l| l.starts_with("[us-east]") && l.contains("lag back under budget"))
    });
}

#[test]
fn financial_reads_halted_and_served_fresh_through_router() {
    const BUDGET: Duration = Duration::from_secs(2);
    let old = "max_lag = \"30s\"\non_breach = \"halt-cross-region-reads\"";
    let text = config::example_text();
    assert!(text.contains(old), "the example's financial budget changed");
    let text = text.replace(old, "max_lag = \"2s\"\non_breach = \"halt-cross-region-reads\"");
    let up = deployment().config_text(&text).start();
    up.wait_quiet(START_TIMEOUT);
    let router = up.router();
    let from_eu_central = [("x-tandem-client-region", "eu-central")];
    let balance = "/v1/records/balance/alice:acct";

    // alice lives in eu-west, bob in eu-central; registrations go home.
    for (subject, home) in [("alice", "eu-west"), ("bob", "eu-central")] {
        let a = up.call_ok(
            Method::PUT,
            &format!("{router}/v1/subjects/{subject}"),
            &json!({"home_region": home}),
            &[],
        );
        assert_eq!(a.region(), Some(home), "{}", a.body);
    }
    let a = up.call_ok(
        Method::POST,
        &format!("{router}{balance}/ops"),
        &json!({"op": "incr", "by": 100}),
        &from_eu_central,
    );
    assert_eq!(a.region(), Some("eu-west"), "a pinned write goes home: {}", a.body);
    up.call_ok(
        Method::POST,
        &format!("{router}/v1/records/balance/bob:acct/ops"),
        &json!({"op": "incr", "by": 7}),
        &from_eu_central,
    );
    up.call_ok(
        Method::PUT,
        &format!("{router}/v1/records/credential/alice:pw"),
        &json!({"value": {"hash": "h1"}}),
        &[],
    );
    let at_eu_central = |path: &str| up.get("eu-central", path);
    up.wait_for("eu-central has alice's balance and credential", Duration::from_secs(10), || {
        let b = at_eu_central(balance);
        let c = at_eu_central("/v1/records/credential/alice:pw");
        b.status == 200 && b.body["value"] == json!(100) && c.status == 200
    });

    let cut_at = Instant::now();
    up.cut("eu-west", "eu-central");
    let a = up.call_ok(
        Method::POST,
        &format!("{router}{balance}/ops"),
        &json!({"op": "incr", "by": 23}),
        &from_eu_central,
    );
    assert_eq!(a.region(), Some("eu-west"), "{}", a.body);
    // Within the budget a stale read is still served.
    let stale = at_eu_central(balance);
    if cut_at.elapsed() < BUDGET - HEARTBEAT {
        assert_eq!((stale.status, &stale.body["value"]), (200, &json!(100)), "{}", stale.body);
    }

    // Past the budget, eu-central refuses reads of records from eu-west.
    let mut refused = at_eu_central(balance);
    while refused.status != 503 {
        assert_eq!(refused.status, 200, "{}", refused.body);
        assert!(
            cut_at.elapsed() < BUDGET + EVALUATION_INTERVAL + POLL_MARGIN * 2,
            "reads not halted {:?} after the cut",
            cut_at.elapsed()
        );
        std::thread::sleep(FAST_POLL);
        refused = at_eu_central(balance);
    }
    let halted_after = cut_at.elapsed();
    eprintln!(
        "financial reads of eu-west records halted at eu-central {halted_after:?} after the cut"
    );
    assert!(halted_after >= BUDGET - HEARTBEAT, "halted after only {halted_after:?}");
    assert_eq!(refused.body["error"]["code"], "reads_halted", "{}", refused.body);
    assert_eq!(refused.body["error"]["fresh_region"], "eu-west", "{}", refused.body);
    // eu-central's own records of the class are still served there.
    let own = at_eu_central("/v1/records/balance/bob:acct");
    assert_eq!((own.status, &own.body["value"]), (200, &json!(7)), "{}", own.body);

    // The router reads it where it is fresh: eu-central first (nearest), then eu-west.
    let refused_before = metrics::sum(
        &up.metrics_at(router),
        "router_requests_total",
        &[("region", "eu-central"), ("outcome", "server_error")],
    );
    let fresh = up.call(Method::GET, &format!("{router}{balance}"), None, &from_eu_central);
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.body["value"], json!(123), "the latest value: {}", fresh.body);
    assert_eq!(fresh.region(), Some("eu-west"));
    assert!(fresh.headers.get("x-tandem-fresh-region").is_none(), "internal header leaked");
    let refused_after = metrics::sum(
        &up.metrics_at(router),
        "router_requests_total",
        &[("region", "eu-central"), ("outcome", "server_error")],
    );
    assert_eq!(refused_after, refused_before + 1.0, "the router asked eu-central first");

    // The read check measures the lag when asked; /v1/status shows the last
    // evaluation, at most one interval old.
    up.wait_for("eu-central reports the financial breach", EVALUATION_INTERVAL * 5, || {
        up.status("eu-central")["budgets"]["financial"]["breached"] == true
    });
    let status = up.status("eu-central");
    let financial = &status["budgets"]["financial"];
    assert_eq!(financial["on_breach"], "halt-cross-region-reads", "{financial}");
    assert_eq!(financial["lagging_peers"], json!(["eu-west"]), "{financial}");

    // A class whose action is `alert` is not halted, even in breach (5 s).
    up.wait_for("the credentials budget breaches at eu-central", Duration::from_secs(8), || {
        up.status("eu-central")["budgets"]["credentials"]["breached"] == true
    });
    let cred = at_eu_central("/v1/records/credential/alice:pw");
    assert_eq!(cred.status, 200, "alert-only classes are still served: {}", cred.body);

    up.heal("eu-west", "eu-central");
    up.wait_for("eu-central serves the fresh balance again", Duration::from_secs(10), || {
        let b = at_eu_central(balance);
        b.status == 200 && b.body["value"] == json!(123)
    });
    up.wait_for("the financial breach clears", Duration::from_secs(5), || {
        up.status("eu-central")["budgets"]["financial"]["breached"] == false
    });
}

/// The example deployment under `tandem up`, router included.
fn deployment() -> Builder {
    TANDEM.deployment().prefix("tandem-mon-")
}
