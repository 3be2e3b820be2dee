//! Acknowledgements between regions, for the stability horizon
//! (`tandem_engine::stability`): every `ACK_INTERVAL` this region sends each
//! peer its durable direct cursors and durable log position
//! (`POST /v1/replication/ack`), takes its own snapshot and publishes the
//! horizon's age. A peer's report is taken only from its certificate's
//! identity, like every replication call, and not while this region is
//! isolated. Reports are kept in memory: after a restart the horizon starts
//! again from the peers' next reports. A peer silent for longer than
//! `[replication] peer_retention` is evicted from the horizon; when its
//! reports come back, this region resyncs from it by anti-entropy
//! (`repair::repair_with`), and it does the same towards this region.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use bytes::Bytes;
use http_body_util::BodyExt;
use tandem_engine::stability::{Report, ACK_INTERVAL};
use tandem_engine::wire;
use tandem_http::identity::Peer;

use crate::api::AppState;
use crate::error::ApiError;
use crate::validate::read_body;

/// Largest acknowledgement accepted: a cursor per region, far below this.
const ACK_BYTES_MAX: usize = 64 * 1024;

/// `POST /v1/replication/ack`: a peer's durable positions.
pub async fn receive(
    State(node): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<Peer>>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (peer, _) = super::sender::calling_peer(&node, &headers, connection)?;
    let bytes = read_body(body, ACK_BYTES_MAX, &node.drain).await?;
    let report: Report = wire::decode_message(&bytes, ACK_BYTES_MAX)
        .map_err(|e| ApiError::bad_request(format!("bad acknowledgement: {e}")))?;
    let now = node.now_ms();
    node.replication.stability.lock().expect("stability lock").report(&peer, report, now);
    Ok(StatusCode::NO_CONTENT)
}

/// This region's own report: the durable direct cursor into each peer's log
/// and its newest durable position.
pub fn own_report(node: &AppState) -> Report {
    let cursors = node
        .replication
        .links
        .iter()
        .map(|(p, l)| (p.clone(), l.lock().expect("link lock").cursor))
        .collect();
    Report { cursors, durable_seq: *node.replication.durable_seq.borrow() }
}

/// The acknowledgement loop: tick the horizon, publish its age, send the
/// report to every peer.
pub async fn run(node: AppState) {
    let started_ms = node.now_ms();
    let mut shutdown = node.shutdown.subscribe();
    let mut evicted: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ACK_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let own = own_report(&node);
        let now = node.now_ms();
        let (age_ms, now_evicted) = {
            let mut s = node.replication.stability.lock().expect("stability lock");
            s.tick(&own, now);
            // Before a first horizon: as old as the process.
            (s.age_ms(now).unwrap_or(now.saturating_sub(started_ms)), s.evicted(now))
        };
        node.metrics.stability_horizon_age_seconds.set(age_ms as f64 / 1000.0);
        node.metrics.stability_evicted_peers.set(now_evicted.len() as i64);
        for peer in now_evicted.iter().filter(|p| !evicted.contains(p)) {
            tracing::warn!(%peer, "peer silent past replication.peer_retention: evicted from the stability horizon; it is resynced when it returns");
        }
        // A peer back from eviction: resync by anti-entropy (it does the
        // same towards this region), while streaming goes on.
        for peer in evicted.iter().filter(|p| !now_evicted.contains(p)) {
            tokio::spawn(resync(node.clone(), peer.clone()));
        }
        evicted = now_evicted;
        if node.replication.is_isolated() {
            continue;
        }
        let body = Bytes::from(wire::encode_message(&own));
        let sends = node.replication.links.keys().map(|peer| send(&node, peer, body.clone()));
        futures_util::future::join_all(sends).await;
    }
}

/// The anti-entropy resync with a peer back from eviction.
async fn resync(node: AppState, peer: String) {
    tracing::info!(%peer, "peer back after eviction: resyncing by anti-entropy");
    let started = std::time::Instant::now();
    match super::repair::repair_with(&node, &peer).await {
        Ok(r) => {
            let ms = started.elapsed().as_millis() as u64;
            node.metrics.peer_resyncs.inc();
            tracing::info!(%peer, received = r.records_received, changed = r.records_changed, ms, "resync after eviction done");
            node.replication.resyncs.lock().expect("resyncs lock").insert(peer, (r, ms));
        }
        Err(e) => {
            // The horizon is held by the peer again; `tandem repair` can
            // run the resync by hand.
            tracing::warn!(%peer, error = %e, "resync after eviction failed; run tandem repair");
        }
    }
}

async fn send(node: &AppState, peer: &str, body: Bytes) {
    let url = format!("{}/v1/replication/ack", node.replication.peer_urls[peer]);
    let client = super::receiver::client_for(node, peer);
    let timeout = node.replication.timings.link_timeout.min(Duration::from_secs(5));
    let sent = tokio::time::timeout(
        timeout,
        client.request(super::receiver::request(node, "POST", &url, body)),
    )
    .await;
    match sent {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            tracing::debug!(%peer, %status, "acknowledgement refused");
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "acknowledgement not sent"),
        Err(_) => tracing::debug!(%peer, "acknowledgement timed out"),
    }
}
