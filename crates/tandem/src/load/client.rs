//! The client side of a run: one pooled keep-alive HTTP client shared by
//! every task, the closed loop of one client task (its own key sequence, an
//! optional pace, one request in flight, a time-out per request, a pause after
//! a transport error), and the preflight request that fails the command at
//! once on an unreachable target or a workload the entity type does not take.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use super::plan::Plan;
use super::report::Tally;

/// A request without an answer after this long counts as failed (status 0).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Pause of a client after a transport error, so that a dead target does not
/// turn the loop into a busy spin of connection attempts.
const ERROR_BACKOFF_MS: u64 = 10;
/// Connect timeout of the HTTP connector.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Longest response body quoted in a preflight error.
const ERROR_BODY_QUOTED_MAX: usize = 512;

/// The generator that picks keys. Each client task has its own, seeded from
/// its index, so a run's key sequence per task is reproducible and tasks do
/// not walk the same keys in lockstep. rand's `ChaCha8Rng`: a named generator
/// whose stream for a seed rand keeps across releases.
#[derive(Debug)]
struct KeyRng(ChaCha8Rng);

impl KeyRng {
    fn for_task(task: usize) -> KeyRng {
        KeyRng(ChaCha8Rng::seed_from_u64(task as u64))
    }

    /// A key in `0..keys`.
    fn key(&mut self, keys: u64) -> u64 {
        assert!(keys > 0, "keys must be positive");
        self.0.random_range(0..keys)
    }
}

pub(super) type HttpClient = tandem_http::client::HttpClient<Full<Bytes>>;

/// One pooled client for every task (TLS per `connection`, no Nagle: one
/// small request at a time per connection).
pub(super) fn http_client(connection: &crate::connect::Connection, clients: usize) -> HttpClient {
    connection.client(tandem_http::client::ClientLimits {
        connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
        pool_idle_timeout: Duration::from_secs(90),
        pool_max_idle_per_host: clients,
    })
}

/// Sends one request and reads the whole answer (so the connection goes
/// back to the pool). `Ok((status, body))`, or the transport error.
async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One closed-loop client: send, wait for the answer, send the next, until
/// `deadline`. A request still in flight at the deadline is abandoned and not
/// counted, so the measured window is exactly `measure_from..deadline`.
pub(super) async fn client_loop(
    client: HttpClient,
    plan: std::sync::Arc<Plan>,
    task: usize,
    measure_from: Instant,
    deadline: Instant,
) -> Tally {
    let mut rng = KeyRng::for_task(task);
    let mut tally = Tally::new();
    let request_timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    loop {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let request = plan.request(rng.key(plan.keys));
        let give_up_at = deadline.min(started + request_timeout);
        let outcome = tokio::time::timeout_at(give_up_at, send(&client, request)).await;
        let finished = Instant::now();
        let measured = finished >= measure_from;
        match outcome {
            Err(_elapsed) if finished >= deadline => break,
            Err(_elapsed) => {
                if measured {
                    tally.record_no_answer();
                }
            }
            Ok(Err(_transport)) => {
                if measured {
                    tally.record_no_answer();
                }
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
            }
            Ok(Ok((status, _body))) => {
                if measured {
                    tally.record_answer(status, finished - started);
                }
            }
        }
        if let Some(interval) = plan.interval {
            tokio::time::sleep_until((started + interval).min(deadline)).await;
        }
    }
    tally
}

/// One request before the run, so that an unreachable target or a workload
/// the entity type does not take (409 `wrong_merge_type`, 404
/// `unknown_entity`, 422 `unknown_subject`) fails the command at once with the
/// server's own message instead of producing a report full of errors.
pub(super) async fn preflight(client: &HttpClient, plan: &Plan) -> anyhow::Result<()> {
    let request = plan.request(0);
    let uri = request.uri().clone();
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let (status, body) = tokio::time::timeout(timeout, send(client, request))
        .await
        .with_context(|| format!("no answer from {uri} within {REQUEST_TIMEOUT_MS} ms"))?
        .with_context(|| format!("cannot reach {}", plan.base))?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body);
        let quoted: String = body.chars().take(ERROR_BODY_QUOTED_MAX).collect();
        bail!(
            "{} {uri} answered {status}: {quoted} (does --workload {:?} fit --entity {:?}?)",
            plan.workload.method(),
            plan.workload.name(),
            plan.entity
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_in_range_and_differ_per_task() {
        let take = |task: usize| -> Vec<u64> {
            let mut rng = KeyRng::for_task(task);
            (0..1000).map(|_| rng.key(100)).collect()
        };
        assert_eq!(take(0), take(0));
        assert_ne!(take(0), take(1));
        assert!(take(3).iter().all(|k| *k < 100));
        // Spread: 1000 draws over 100 keys hit most of them.
        let mut seen = take(7);
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 90, "only {} distinct keys", seen.len());
    }
}
