//! The pulling side of replication: per peer, a loop that holds the direct
//! stream open and applies its batches, and a loop that asks for forwarded
//! changes; plus the ticker that publishes lag and backlog. Each loop backs off
//! exponentially on errors, stops while the region is isolated, and ends at
//! shutdown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tandem_engine::apply::RemoteBatch;
use tandem_engine::protocol::{frame_bytes_max, Path, PEER_HEADER};
use tandem_engine::receive::{classes_of, coalesce, forward_have};
use tandem_engine::wire::{self, ForwardRequest, ForwardResponse, Frame, FrameDecoder};

use crate::api::AppState;
use crate::metrics::{PeerClassLabels, PeerLabels};

/// The largest refusal body of a peer that is read (an error message).
const REFUSAL_MAX_BYTES: usize = 64 * 1024;

type HttpClient = tandem_http::client::HttpClient<Full<Bytes>>;

/// The pooled client for `peer`, verifying it by its region's name.
pub(super) fn client_for(node: &AppState, peer: &str) -> HttpClient {
    node.replication.clients.get(&tandem_http::identity::region_server_name(peer))
}

/// Start every replication loop of this region.
pub fn start(node: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for peer in node.replication.links.keys() {
        tasks.push(tokio::spawn(direct_loop(node.clone(), peer.clone())));
        tasks.push(tokio::spawn(forward_loop(node.clone(), peer.clone())));
    }
    tasks.push(tokio::spawn(metrics_loop(node.clone())));
    tasks.push(tokio::spawn(super::ack::run(node.clone())));
    tasks
}

fn shutting_down(node: &AppState) -> bool {
    *node.shutdown.borrow()
}

/// Sleep, waking early at shutdown or when isolation changes.
async fn pause(node: &AppState, d: Duration) {
    let mut shutdown = node.shutdown.subscribe();
    let mut isolated = node.replication.isolated.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
        _ = isolated.changed() => {}
    }
}

/// Why a pull from a peer failed. Only `PeerIsolated` changes what happens
/// next (the peer will rejoin: keep asking at the heartbeat rate); the rest
/// back off and are shown in `/v1/status` as the link's last error.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(String),
    #[error("the peer is isolated")]
    PeerIsolated,
    #[error("{status}: {body}")]
    Refused { status: u16, body: String },
    #[error("no frame within the link timeout")]
    Silent,
    #[error("stream ended")]
    Ended,
    #[error("stream: {0}")]
    Stream(String),
    #[error("body: {0}")]
    Body(String),
    #[error(transparent)]
    Wire(#[from] tandem_engine::wire::WireError),
    #[error("expected {expected}, the stream is from {sender}")]
    WrongSender { expected: String, sender: String },
    #[error("apply: {0}")]
    Apply(String),
    /// A delta needs changes this region has not applied yet (they come by
    /// another path): pull it again shortly (`tandem_merge::delta`).
    #[error("a delta waits for changes not applied here yet")]
    Waiting,
}

/// A peer's refusal, by its status and error code.
fn refusal(status: hyper::StatusCode, body: &[u8]) -> PullError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    if status == hyper::StatusCode::SERVICE_UNAVAILABLE && code.as_deref() == Some("isolated") {
        return PullError::PeerIsolated;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    PullError::Refused { status: status.as_u16(), body: text }
}

async fn direct_loop(node: AppState, peer: String) {
    let t = node.replication.timings.clone();
    let mut backoff = t.backoff_min;
    while !shutting_down(&node) {
        if node.replication.is_isolated() {
            node.replication.link(&peer).on_down("isolated".into());
            pause(&node, t.heartbeat).await;
            continue;
        }
        match run_stream(&node, &peer, &client_for(&node, &peer)).await {
            Ok(()) => backoff = t.backoff_min,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "direct stream from peer failed");
                // An isolated peer answers at once and will rejoin: keep asking
                // at the heartbeat rate so catch-up starts right after rejoin.
                let isolated_peer = matches!(e, PullError::PeerIsolated);
                if matches!(e, PullError::Waiting) {
                    // The link is fine: ask again soon, from before the delta.
                    pause(&node, t.backoff_min).await;
                    backoff = t.backoff_min;
                    continue;
                }
                node.replication.link(&peer).on_down(e.to_string());
                pause(&node, if isolated_peer { t.heartbeat } else { backoff }).await;
                backoff =
                    if isolated_peer { t.backoff_min } else { (backoff * 2).min(t.backoff_max) };
            }
        }
    }
}

/// A request to a peer: it names this region (the peer checks the name
/// against the certificate); with `--insecure`, the shared secret proves it.
pub(super) fn request(
    node: &AppState,
    method: &str,
    url: &str,
    body: Bytes,
) -> hyper::Request<Full<Bytes>> {
    let mut b =
        hyper::Request::builder().method(method).uri(url).header(PEER_HEADER, node.region.as_str());
    if let crate::auth::Security::Insecure { replication_secret: Some(secret) } = &node.security {
        b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"));
    }
    b.body(Full::new(body)).expect("valid request")
}

/// Batches of one direct stream handed to the writer and not yet durable. A
/// receiver that fell behind decodes and plans the next batches while the
/// oldest is in its fsync; each names where it continues from, so one that
/// follows a batch that stopped (a waiting delta, a failed commit) is not
/// applied (`ApplyReport::gap`).
const APPLIES_IN_FLIGHT_MAX: usize = 8;

/// A batch of the direct stream being applied, with what its report is read with.
struct InFlight {
    received: Instant,
    /// Each data class's longest wait in the sender's log.
    classes: Vec<(String, u64)>,
    committed_at_ms: Vec<u64>,
    sender_last_seq: u64,
}

type Applying = futures_util::future::BoxFuture<
    'static,
    (InFlight, Result<tandem_engine::apply::ApplyReport, crate::error::ApiError>),
>;

async fn run_stream(node: &AppState, peer: &str, client: &HttpClient) -> Result<(), PullError> {
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let result = pump_stream(node, peer, client, &mut in_flight).await;
    // What was handed over is applied anyway: read its reports, so the
    // link's cursor is where the store's is when the stream starts again.
    while let Some(done) = futures_util::StreamExt::next(&mut in_flight).await {
        let _ = settle(node, peer, done);
    }
    result
}

/// Read a finished apply's report into the link's state; `Waiting` when the
/// stream must start again from the store's cursor.
fn settle(
    node: &AppState,
    peer: &str,
    (batch, report): (InFlight, Result<tandem_engine::apply::ApplyReport, crate::error::ApiError>),
) -> Result<(), PullError> {
    let report = report.map_err(|e| PullError::Apply(e.message))?;
    audit_refused(node, peer, &report);
    let apply_ms = batch.received.elapsed().as_millis() as u64;
    let now = node.now_ms();
    let mut link = node.replication.link(peer);
    if !report.gap {
        // The link's round trip, measured at this stream's hello.
        let half_rtt_ms = link.rtt_ms / 2;
        for (class, waited_ms) in batch.classes {
            link.record_sample(&class, waited_ms + half_rtt_ms + apply_ms, now);
        }
        link.applied_total += batch.committed_at_ms.len() as u64;
        for c in batch.committed_at_ms {
            link.record_commit_to_apply(now.saturating_sub(c));
        }
    }
    link.on_frame(now, report.cursor, batch.sender_last_seq);
    if report.waiting || report.gap {
        return Err(PullError::Waiting);
    }
    Ok(())
}

async fn pump_stream(
    node: &AppState,
    peer: &str,
    client: &HttpClient,
    in_flight: &mut futures_util::stream::FuturesOrdered<Applying>,
) -> Result<(), PullError> {
    use futures_util::StreamExt;
    let t = &node.replication.timings;
    let base = &node.replication.peer_urls[peer];
    let cursor = node.replication.link(peer).cursor;
    let url = format!("{base}/v1/replication/stream?after={cursor}");
    let sent = Instant::now();
    let resp = tokio::time::timeout(
        t.link_timeout,
        client.request(request(node, "GET", &url, Bytes::new())),
    )
    .await
    .map_err(|_| PullError::Timeout)?
    .map_err(|e| PullError::Connect(e.to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = tandem_http::client::body_bytes(resp, REFUSAL_MAX_BYTES).await;
        return Err(refusal(status, &body));
    }
    let mut body = resp.into_body();
    let frame_max = frame_bytes_max(&node.config.replication);
    let mut decoder = FrameDecoder::new(frame_max);
    assert!(frame_max > 0);
    let mut persisted_at = Instant::now();
    // Where the last batch handed over ends: the next continues from there.
    // It starts at the stored cursor, which heartbeats may have left behind
    // the link's (they persist it at most once a second).
    let mut handed_over = node
        .store
        .cursor(&Path::Direct.cursor_key(peer))
        .map_err(|e| PullError::Apply(e.to_string()))?
        .seq
        .min(cursor);
    let idle = t.idle_timeout();
    let mut isolated = node.replication.isolated.subscribe();
    let mut shutdown = node.shutdown.subscribe();
    loop {
        if shutting_down(node) || node.replication.is_isolated() {
            return Ok(());
        }
        let next = tokio::select! {
            // A full pipeline reads nothing more until its oldest batch is durable.
            r = tokio::time::timeout(idle, body.frame()), if in_flight.len() < APPLIES_IN_FLIGHT_MAX => r,
            Some(done) = in_flight.next() => {
                settle(node, peer, done)?;
                persisted_at = Instant::now();
                continue;
            }
            // Isolation and shutdown take effect at once, not at the next frame.
            _ = isolated.changed() => continue,
            _ = shutdown.changed() => continue,
        };
        let chunk = match next {
            Err(_) => return Err(PullError::Silent),
            Ok(None) => return Err(PullError::Ended),
            Ok(Some(Err(e))) => return Err(PullError::Stream(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        if node.replication.is_isolated() {
            return Ok(());
        }
        let Some(data) = chunk.data_ref() else { continue };
        decoder.push(data);
        // Take whatever else has already arrived, without waiting, so that a
        // receiver that fell behind applies many frames in one commit instead
        // of one commit per frame (bounded by the frame limit).
        while decoder.buffered() < frame_max {
            use futures_util::FutureExt;
            match body.frame().now_or_never() {
                Some(Some(Ok(more))) => {
                    if let Some(d) = more.data_ref() {
                        decoder.push(d);
                    }
                }
                _ => break,
            }
        }
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
        for frame in coalesce(frames, node.config.replication.batch_max.saturating_mul(8)) {
            match frame {
                Frame::Hello { sender, sender_last_seq, .. } => {
                    if sender != peer {
                        return Err(PullError::WrongSender { expected: peer.to_owned(), sender });
                    }
                    let mut link = node.replication.link(peer);
                    link.rtt_ms = sent.elapsed().as_millis() as u64;
                    link.connected = true;
                    link.sender_last_seq = sender_last_seq;
                }
                Frame::Batch { sender_now_ms, next_seq, sender_last_seq, entries } => {
                    // Waiting time on the sender's clock: each entry is stamped
                    // with its frame's send time by `coalesce` (sender_now_ms
                    // here is the last frame's).
                    let batch = InFlight {
                        received: Instant::now(),
                        classes: classes_of(&node.config, &entries, sender_now_ms),
                        committed_at_ms: entries.iter().map(|e| e.committed_at_ms).collect(),
                        sender_last_seq,
                    };
                    let applying = node
                        .writer
                        .submit_apply(RemoteBatch {
                            peer: peer.to_owned(),
                            path: Path::Direct,
                            entries,
                            continues_from: handed_over,
                            next_seq,
                        })
                        .await
                        .map_err(|e| PullError::Apply(e.message))?;
                    handed_over = next_seq;
                    in_flight
                        .push_back(Box::pin(async move { (batch, applying.await) }) as Applying);
                }
                Frame::Heartbeat { next_seq, sender_last_seq, .. } => {
                    // The sender has nothing newer: let what is in flight land
                    // first, so the cursor only moves over what is durable.
                    while let Some(done) = in_flight.next().await {
                        settle(node, peer, done)?;
                        persisted_at = Instant::now();
                    }
                    let behind = node.replication.link(peer).cursor < next_seq;
                    if behind && persisted_at.elapsed() >= Duration::from_secs(1) {
                        // Persist cursor moves over changes that were not for us,
                        // at most once a second.
                        node.writer
                            .apply(RemoteBatch {
                                peer: peer.to_owned(),
                                path: Path::Direct,
                                entries: Vec::new(),
                                continues_from: 0,
                                next_seq,
                            })
                            .await
                            .map_err(|e| PullError::Apply(e.message))?;
                        persisted_at = Instant::now();
                        handed_over = handed_over.max(next_seq);
                    }
                    node.replication.link(peer).on_frame(node.now_ms(), next_seq, sender_last_seq);
                }
            }
        }
    }
}

async fn forward_loop(node: AppState, peer: String) {
    let t = node.replication.timings.clone();
    let mut after = node.store.cursor(&Path::Forward.cursor_key(&peer)).map(|c| c.seq).unwrap_or(0);
    let mut backoff = t.backoff_min;
    while !shutting_down(&node) {
        if node.replication.is_isolated() {
            pause(&node, t.heartbeat).await;
            continue;
        }
        match forward_once(&node, &peer, &client_for(&node, &peer), after).await {
            Ok((next, more)) => {
                after = next;
                backoff = t.backoff_min;
                if !more {
                    pause(&node, t.forward_interval).await;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "forward pull from peer failed");
                pause(&node, backoff).await;
                backoff = (backoff * 2).min(t.backoff_max);
            }
        }
    }
}

/// POST one message to a peer's replication endpoint `path` and decode its
/// answer (bounded by the frame limit); a refusal by its status and code.
pub(super) async fn post_message<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
    node: &AppState,
    peer: &str,
    client: &HttpClient,
    path: &str,
    req: &Q,
) -> Result<A, PullError> {
    let url = format!("{}{path}", node.replication.peer_urls[peer]);
    let body = wire::encode_message(req);
    let t = &node.replication.timings;
    let resp = tokio::time::timeout(
        t.link_timeout * 4,
        client.request(request(node, "POST", &url, body.into())),
    )
    .await
    .map_err(|_| PullError::Timeout)?
    .map_err(|e| PullError::Connect(e.to_string()))?;
    let status = resp.status();
    let max = frame_bytes_max(&node.config.replication);
    let limited = http_body_util::Limited::new(resp.into_body(), max);
    let bytes = limited.collect().await.map_err(|e| PullError::Body(e.to_string()))?.to_bytes();
    if !status.is_success() {
        return Err(refusal(status, &bytes));
    }
    Ok(wire::decode_message(&bytes, max)?)
}

/// One forward pull. Returns the new cursor and whether more may be waiting.
async fn forward_once(
    node: &AppState,
    peer: &str,
    client: &HttpClient,
    after: u64,
) -> Result<(u64, bool), PullError> {
    let cursors = super::ack::own_report(node).cursors;
    let have = forward_have(cursors, &node.region, node.replication.own_have);
    let limit = node.config.replication.batch_max as u32;
    let req = ForwardRequest { after, have, limit };
    let resp: ForwardResponse =
        post_message(node, peer, client, "/v1/replication/forward", &req).await?;
    if node.replication.is_isolated() {
        return Ok((after, false));
    }
    if resp.next_seq <= after && resp.entries.is_empty() {
        return Ok((after, false));
    }
    let n = resp.entries.len();
    let mut full = n >= limit as usize;
    let report = node
        .writer
        .apply(RemoteBatch {
            peer: peer.to_owned(),
            path: Path::Forward,
            entries: resp.entries,
            continues_from: after,
            next_seq: resp.next_seq,
        })
        .await
        .map_err(|e| PullError::Apply(e.message))?;
    audit_refused(node, peer, &report);
    node.replication.link(peer).forwarded_total += report.changed as u64;
    if report.gap {
        // The durable cursor is behind what this loop asked from: ask from it.
        return Ok((report.cursor, true));
    }
    // A delta waits for changes not here yet: ask again after the interval.
    full &= !report.waiting;
    Ok((report.cursor.max(after), full))
}

/// Publish lag and backlog gauges a few times a second.
async fn metrics_loop(node: AppState) {
    let timeout_ms = node.replication.timings.link_timeout.as_millis() as u64;
    while !shutting_down(&node) {
        let now = node.now_ms();
        let mut lags: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for (peer, link) in &node.replication.links {
            let link = link.lock().expect("link lock");
            node.metrics
                .queue_depth
                .get_or_create(&PeerLabels { peer: peer.clone() })
                .set(link.queue_depth() as i64);
            for class in node.config.data_classes.keys() {
                let lag = link.lag_seconds(class, now, timeout_ms);
                node.metrics
                    .lag_seconds
                    .get_or_create(&PeerClassLabels {
                        peer: peer.clone(),
                        data_class: class.clone(),
                    })
                    .set(lag);
                lags.entry(peer.clone()).or_default().insert(class.clone(), lag);
            }
        }
        let previous = node.budgets.lock().expect("budgets lock").clone();
        let (states, transitions) = crate::budget::evaluate(&node.config, &lags, &previous, now);
        for t in &transitions {
            crate::budget::log(t);
        }
        for (class, state) in &states {
            node.metrics
                .lag_budget_breached
                .get_or_create(&crate::metrics::ClassLabels { data_class: class.clone() })
                .set(state.breached as i64);
        }
        *node.budgets.lock().expect("budgets lock") = states;
        let mut shutdown = node.shutdown.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(crate::budget::EVALUATION_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Record changes a peer sent that this region refused to store.
fn audit_refused(node: &AppState, peer: &str, report: &tandem_engine::apply::ApplyReport) {
    if report.refused.is_empty() {
        return;
    }
    let mut withheld = BTreeMap::new();
    for (e, _id) in &report.refused {
        *withheld.entry(e.clone()).or_insert(0u64) += 1;
    }
    let flow = crate::audit::Flow {
        kind: "inbound_refused",
        peer: peer.to_owned(),
        peer_jurisdiction: node.config.jurisdiction_of(peer).unwrap_or("").to_owned(),
        withheld,
        ..Default::default()
    };
    // Nothing was stored either way; a failure is logged by the audit log.
    let _ = node.audit.append(flow, node.now_ms());
}
