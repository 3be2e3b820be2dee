//! Lag budgets per data class (the reference article's table by default): the
//! node evaluates, every `EVALUATION_INTERVAL`, each class's lag from every
//! peer against its `max_lag`, and carries out `on_breach`:
//!
//! - `alert` and `warn`: `replication_lag_budget_breached{data_class}` is 1, a
//!   log line at error or warn level marks the start and the end of the breach,
//!   and `/v1/status` shows it;
//! - `halt-cross-region-reads`: as `alert`, and reads of that class for
//!   records whose last write came from a lagging peer are refused with 503
//!   `reads_halted` naming the region where they are fresh, so the router can
//!   read them there.
//!
//! A breach clears by itself once the lag is back under budget.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tandem_config::{Config, OnBreach};

/// How often budgets are evaluated.
pub const EVALUATION_INTERVAL: Duration = Duration::from_millis(200);

/// The state of one data class's budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BudgetState {
    pub breached: bool,
    /// Local time (ms) the current breach started.
    pub since_ms: Option<u64>,
    /// The worst lag over all peers, in seconds.
    pub lag_seconds: f64,
    pub max_lag_seconds: f64,
    pub on_breach: &'static str,
    /// Peers whose lag exceeds the budget.
    pub lagging_peers: Vec<String>,
}

/// A change of a class's state, for the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Breached { class: String, on_breach: OnBreach, lag_seconds: f64, peers: Vec<String> },
    Cleared { class: String, on_breach: OnBreach, lasted_ms: u64 },
}

/// Evaluate every class from the current lags (`lags[peer][class]`, seconds).
/// Pure: returns the new states and the transitions from `previous`.
pub fn evaluate(
    config: &Config,
    lags: &BTreeMap<String, BTreeMap<String, f64>>,
    previous: &BTreeMap<String, BudgetState>,
    now_ms: u64,
) -> (BTreeMap<String, BudgetState>, Vec<Transition>) {
    let mut states = BTreeMap::new();
    let mut transitions = Vec::new();
    for (class, budget) in &config.data_classes {
        let max = budget.max_lag.as_secs_f64();
        let mut worst = 0.0f64;
        let mut lagging = Vec::new();
        for (peer, by_class) in lags {
            let lag = by_class.get(class).copied().unwrap_or(0.0);
            worst = worst.max(lag);
            if lag > max {
                lagging.push(peer.clone());
            }
        }
        let breached = !lagging.is_empty();
        let before = previous.get(class);
        let was = before.is_some_and(|b| b.breached);
        let since_ms = match (breached, was) {
            (true, true) => before.and_then(|b| b.since_ms),
            (true, false) => {
                transitions.push(Transition::Breached {
                    class: class.clone(),
                    on_breach: budget.on_breach,
                    lag_seconds: worst,
                    peers: lagging.clone(),
                });
                Some(now_ms)
            }
            (false, true) => {
                let started = before.and_then(|b| b.since_ms).unwrap_or(now_ms);
                transitions.push(Transition::Cleared {
                    class: class.clone(),
                    on_breach: budget.on_breach,
                    lasted_ms: now_ms.saturating_sub(started),
                });
                None
            }
            (false, false) => None,
        };
        states.insert(
            class.clone(),
            BudgetState {
                breached,
                since_ms,
                lag_seconds: worst,
                max_lag_seconds: max,
                on_breach: budget.on_breach.as_str(),
                lagging_peers: lagging,
            },
        );
    }
    (states, transitions)
}

/// Log a transition at the level its action calls for.
pub fn log(t: &Transition) {
    match t {
        Transition::Breached { class, on_breach: OnBreach::Warn, lag_seconds, peers } => {
            tracing::warn!(data_class = %class, lag_seconds, ?peers, "lag budget breached");
        }
        Transition::Breached { class, on_breach, lag_seconds, peers } => {
            tracing::error!(data_class = %class, action = on_breach.as_str(), lag_seconds, ?peers, "lag budget breached");
        }
        Transition::Cleared { class, on_breach: OnBreach::Warn, lasted_ms } => {
            tracing::warn!(data_class = %class, lasted_ms, "lag back under budget");
        }
        Transition::Cleared { class, lasted_ms, .. } => {
            tracing::error!(data_class = %class, lasted_ms, "lag back under budget");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lags(pairs: &[(&str, &str, f64)]) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for (peer, class, lag) in pairs {
            out.entry(peer.to_string()).or_default().insert(class.to_string(), *lag);
        }
        out
    }

    #[test]
    fn breaches_and_clears_per_class() {
        let c = Config::example();
        let (s1, t1) = evaluate(&c, &lags(&[("us-east", "credentials", 1.0)]), &BTreeMap::new(), 0);
        assert!(t1.is_empty());
        assert!(!s1["credentials"].breached);
        let (s2, t2) = evaluate(
            &c,
            &lags(&[("us-east", "credentials", 5.5), ("us-east", "financial", 5.5)]),
            &s1,
            1_000,
        );
        assert!(s2["credentials"].breached, "5.5 s is over the 5 s credentials budget");
        assert!(!s2["financial"].breached, "but under the 30 s financial budget");
        assert_eq!(s2["credentials"].lagging_peers, vec!["us-east".to_string()]);
        assert!(matches!(&t2[..], [Transition::Breached { class, .. }] if class == "credentials"));
        let (s3, t3) = evaluate(&c, &lags(&[("us-east", "credentials", 7.0)]), &s2, 2_000);
        assert!(t3.is_empty(), "a continuing breach is not a new transition");
        assert_eq!(s3["credentials"].since_ms, Some(1_000));
        let (s4, t4) = evaluate(&c, &lags(&[("us-east", "credentials", 0.1)]), &s3, 9_000);
        assert!(!s4["credentials"].breached);
        assert_eq!(
            t4,
            vec![Transition::Cleared {
                class: "credentials".into(),
                on_breach: OnBreach::Alert,
                lasted_ms: 8_000
            }]
        );
    }
}
