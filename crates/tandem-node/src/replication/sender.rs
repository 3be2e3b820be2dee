//! The serving side of replication: the direct stream of this region's own
//! changes and the forwarding endpoint for changes received from third regions.
//! Both authenticate the peer, refuse while the region is isolated, filter by
//! residency, and bound what they send (entries and bytes per batch).

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tandem_engine::LogEntry;

use crate::api::AppState;
use crate::audit::Flow;
use crate::error::ApiError;
use crate::validate::read_body;
use axum::Extension;
use tandem_engine::protocol::{DIRECT_SCAN_MAX, FORWARD_SCAN_MAX};
use tandem_engine::serve::{ForwardAsk, Served};
use tandem_engine::wire::{self, ForwardRequest, ForwardResponse, Frame};
use tandem_http::identity::Peer;

/// The peer region calling (its certificate, see `auth::peer_region`), while
/// this region is not isolated.
pub fn authenticate(node: &AppState, headers: &HeaderMap, peer: &Peer) -> Result<String, ApiError> {
    let name = crate::auth::peer_region(node, headers, peer)?;
    if node.replication.is_isolated() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "isolated",
            "this region is isolated and exchanges nothing with peers",
        ));
    }
    Ok(name)
}

/// The peer region calling a replication endpoint, with its connection's
/// identity (see `authenticate`).
pub fn calling_peer(
    node: &AppState,
    headers: &HeaderMap,
    connection: Option<Extension<Peer>>,
) -> Result<(String, Peer), ApiError> {
    let connection = connection.map(|Extension(p)| p).unwrap_or_default();
    let name = authenticate(node, headers, &connection)?;
    Ok((name, connection))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    after: u64,
}

/// `GET /v1/replication/stream?after=SEQ`: this region's own changes, streamed.
pub async fn stream(
    State(node): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<Peer>>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (peer, connection) = calling_peer(&node, &headers, connection)?;
    let Query(q) = query?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(produce(node, peer, connection.serial, q.after, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-tandem-frames")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn produce(
    node: AppState,
    peer: String,
    serial: Option<Vec<u8>>,
    after: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let repl = &node.replication;
    // A certificate revoked while its stream is open: the stream ends at the
    // reload that revokes it, and the next handshake is refused.
    let mut revoked_rx = node.security.tls().map(|t| t.revoked());
    let revoked = |rx: &Option<tokio::sync::watch::Receiver<_>>| -> bool {
        match (rx, &serial) {
            (Some(rx), Some(s)) => {
                let set: &std::sync::Arc<std::collections::BTreeSet<Vec<u8>>> = &rx.borrow();
                set.contains(s)
            }
            _ => false,
        }
    };
    let mut last_seq_rx = repl.durable_seq.subscribe();
    let mut isolated_rx = repl.isolated.subscribe();
    let mut cursor = after;
    let hello = Frame::Hello {
        sender: node.region.clone(),
        sender_now_ms: node.now_ms(),
        sender_last_seq: *last_seq_rx.borrow(),
    };
    if tx.send(wire::encode_frame(&hello)).await.is_err() {
        return;
    }
    let batch_max = node.config.replication.batch_max;
    let bytes_max = node.config.replication.batch_bytes_max;
    let mut shutdown_rx = node.shutdown.subscribe();
    loop {
        // Isolation and shutdown end the stream, so graceful shutdown does not
        // wait on a peer's long-lived request.
        if repl.is_isolated() || *shutdown_rx.borrow() {
            return;
        }
        if revoked(&revoked_rx) {
            tracing::warn!(%peer, "the peer's certificate was revoked: its stream ends");
            return;
        }
        let last = *last_seq_rx.borrow_and_update();
        if cursor < last {
            let (store, engine) = (node.store.clone(), node.engine.clone());
            let from = cursor;
            let read =
                move || store.log_page(from, DIRECT_SCAN_MAX, batch_max, &mut engine.direct_scan());
            let page = match tokio::task::spawn_blocking(read).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, %peer, "reading the log for a peer failed");
                    return;
                }
                Err(_) => return,
            };
            let Served { entries: selected, next_seq, withheld } =
                node.engine.serve_direct(&peer, page, cursor, bytes_max);
            count_withheld(&node, &withheld);
            if audit_flow(&node, &peer, &selected, withheld).is_err() && !selected.is_empty() {
                // Every flow is audited: one that cannot be is not made. The
                // peer reconnects and asks again.
                return;
            }
            let frame = if selected.is_empty() {
                Frame::Heartbeat { sender_now_ms: node.now_ms(), next_seq, sender_last_seq: last }
            } else {
                Frame::Batch {
                    sender_now_ms: node.now_ms(),
                    next_seq,
                    sender_last_seq: last.max(next_seq),
                    entries: selected,
                }
            };
            cursor = next_seq;
            let bytes = wire::encode_frame(&frame);
            if matches!(frame, Frame::Batch { .. }) {
                sent_bytes(&node, &peer, "direct", bytes.len());
            }
            if tx.send(bytes).await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = last_seq_rx.changed() => if changed.is_err() { return },
            _ = isolated_rx.changed() => {}
            _ = async {
                match revoked_rx.as_mut() {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            _ = shutdown_rx.changed() => {}
            _ = tokio::time::sleep(repl.timings.heartbeat) => {
                let beat = Frame::Heartbeat { sender_now_ms: node.now_ms(), next_seq: cursor, sender_last_seq: last };
                if tx.send(wire::encode_frame(&beat)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Own changes withheld from a peer for residency.
fn count_withheld(node: &AppState, withheld: &BTreeMap<String, u64>) {
    let n: u64 = withheld.values().sum();
    if n > 0 {
        node.metrics
            .residency_denials
            .get_or_create(&crate::metrics::ReasonLabels { reason: "replication_withheld".into() })
            .inc_by(n);
    }
}

/// Record a flow to `peer` in the audit log.
fn audit_flow(
    node: &AppState,
    peer: &str,
    sent: &[LogEntry],
    withheld: BTreeMap<String, u64>,
) -> Result<(), crate::audit::AuditError> {
    if sent.is_empty() && withheld.is_empty() {
        return Ok(());
    }
    let mut records: BTreeMap<String, u64> = BTreeMap::new();
    let mut personal = 0;
    let mut encrypted = false;
    for e in sent {
        *records.entry(e.entity.clone()).or_insert(0) += 1;
        let sealed = e.entity == tandem_engine::seal::SEALED_ENTITY;
        encrypted |= sealed;
        if sealed || node.config.entity(&e.entity).is_some_and(|c| c.personal) {
            personal += 1;
        }
    }
    let flow = Flow {
        kind: if sent.is_empty() { "flow_refused" } else { "batch_served" },
        peer: peer.to_owned(),
        peer_jurisdiction: node.config.jurisdiction_of(peer).unwrap_or("").to_owned(),
        records,
        personal,
        encrypted,
        withheld,
        detail: String::new(),
    };
    node.audit.append(flow, node.now_ms())
}

/// `POST /v1/replication/forward`: changes of third regions the peer lacks.
pub async fn forward(
    State(node): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<Peer>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (peer, _) = calling_peer(&node, &headers, connection)?;
    let bytes = read_body(body, node.config.node.max_body_bytes, &node.drain).await?;
    let req: ForwardRequest = wire::decode_message(&bytes, node.config.node.max_body_bytes)
        .map_err(|e| ApiError::bad_request(format!("bad forward request: {e}")))?;
    let bytes_max = node.config.replication.batch_bytes_max;
    let now = node.now_ms();
    let delay_ms = node.replication.timings.forward_delay.as_millis() as u64;
    let (store, engine, to) = (node.store.clone(), node.engine.clone(), peer.clone());
    // Read and decided off the async threads: the page, then the batch of it.
    let served = tokio::task::spawn_blocking(move || {
        let ask = ask_of(&req, now, delay_ms);
        let limit = engine.forward_limit(&ask);
        let mut scan = engine.forward_scan(&to, ask);
        let page = store.log_page(req.after, FORWARD_SCAN_MAX, limit, &mut scan)?;
        Ok::<_, tandem_engine::StoreError>(engine.serve_forward(&to, ask, page, bytes_max))
    })
    .await
    .expect("log read task");
    let Served { entries, next_seq, .. } = served.map_err(|e| crate::writer::store_error(&e))?;
    audit_flow(&node, &peer, &entries, BTreeMap::new()).map_err(|e| {
        ApiError::unavailable(format!("cannot write the audit log ({e}): nothing forwarded"))
    })?;
    let resp = ForwardResponse {
        sender_now_ms: now,
        next_seq,
        sender_last_seq: *node.replication.durable_seq.borrow(),
        entries,
    };
    let bytes = wire::encode_message(&resp);
    if !resp.entries.is_empty() {
        sent_bytes(&node, &peer, "forward", bytes.len());
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-tandem")], bytes).into_response())
}

/// What a forward request asks, read at `now_ms`.
fn ask_of(req: &ForwardRequest, now_ms: u64, delay_ms: u64) -> ForwardAsk<'_> {
    ForwardAsk { have: &req.have, after: req.after, limit: req.limit as usize, now_ms, delay_ms }
}

/// Count the bytes of a batch of changes sent to `peer`.
fn sent_bytes(node: &AppState, peer: &str, path: &str, n: usize) {
    let labels = crate::metrics::PeerPathLabels { peer: peer.to_owned(), path: path.to_owned() };
    node.metrics.replication_sent_bytes.get_or_create(&labels).inc_by(n as u64);
}
