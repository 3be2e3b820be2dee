//! Anti-entropy repair, the I/O side (`tandem_engine::repair` decides): a
//! peer serves the digest tree and the full states of what both regions may
//! hold (`POST /v1/replication/digests`, `POST /v1/replication/states`,
//! peers only, not while isolated), and `repair_with` pulls from one peer
//! what differs: top digests, the leaves under the tops that differ, the
//! records of the leaves that differ, merged through the writer like any
//! replicated batch (`Path::Repair`: what changes is logged as this region's
//! own, so it streams on to every peer). Every request and answer is bounded;
//! each request scans the store once (a repair is an operator's tool, not a
//! loop).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_engine::apply::RemoteBatch;
use tandem_engine::protocol::Path;
use tandem_engine::repair::{
    self, differing, DigestRequest, DigestResponse, RepairReport, StatesRequest, StatesResponse,
    Tree, LEAVES_PER_REQUEST_MAX, STATES_PAGE_MAX, TOPS_PER_REQUEST_MAX,
};
use tandem_engine::{wire, LogEntry};
use tandem_http::identity::Peer;

use crate::api::AppState;
use crate::error::ApiError;
use crate::validate::read_body;

/// Largest digest or states request body.
const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// The tree of what this region holds that `peer` may hold too.
fn tree_for(node: &AppState, peer: &str) -> Result<Tree, ApiError> {
    let mut tree = Tree::default();
    node.store
        .for_each(&mut |entity, id, rec| {
            if repair::shared(&node.config, &node.region, peer, entity) {
                tree.add(entity, id, &rec.state);
            }
        })
        .map_err(|e| crate::writer::store_error(&e))?;
    Ok(tree)
}

async fn decode<T: DeserializeOwned>(node: &AppState, body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, REQUEST_BYTES_MAX, &node.drain).await?;
    wire::decode_message(&bytes, REQUEST_BYTES_MAX)
        .map_err(|e| ApiError::bad_request(format!("bad repair request: {e}")))
}

fn message<T: Serialize>(msg: &T) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/x-tandem")], wire::encode_message(msg))
        .into_response()
}

/// `POST /v1/replication/digests`.
pub async fn digests(
    State(node): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<Peer>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (peer, _) = super::sender::calling_peer(&node, &headers, connection)?;
    let req: DigestRequest = decode(&node, body).await?;
    if req.tops.len() > TOPS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {TOPS_PER_REQUEST_MAX} tops per request, got {}",
            req.tops.len()
        )));
    }
    let n = node.clone();
    let tree = tokio::task::spawn_blocking(move || tree_for(&n, &peer))
        .await
        .map_err(|e| ApiError::unavailable(format!("digest task: {e}")))??;
    let digests = if req.tops.is_empty() {
        tree.tops()
    } else {
        req.tops.iter().flat_map(|t| tree.leaves_under(*t)).collect()
    };
    Ok(message(&DigestResponse { digests }))
}

/// `POST /v1/replication/states`.
pub async fn states(
    State(node): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<Peer>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (peer, _) = super::sender::calling_peer(&node, &headers, connection)?;
    let req: StatesRequest = decode(&node, body).await?;
    if req.leaves.len() > LEAVES_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {LEAVES_PER_REQUEST_MAX} leaves per request, got {}",
            req.leaves.len()
        )));
    }
    let limit = (req.limit as usize).clamp(1, STATES_PAGE_MAX);
    let bytes_max = node.config.replication.batch_bytes_max;
    let n = node.clone();
    let page = tokio::task::spawn_blocking(move || {
        let leaves: std::collections::BTreeSet<u16> = req.leaves.iter().copied().collect();
        let mut found = Vec::new();
        n.store
            .for_each(&mut |entity, id, rec| {
                let past = |(e, i): &(String, String)| (entity, id) > (e.as_str(), i.as_str());
                if leaves.contains(&repair::leaf_of(entity, id))
                    && req.after.as_ref().is_none_or(past)
                    && repair::shared(&n.config, &n.region, &peer, entity)
                {
                    found.push((entity.to_owned(), id.to_owned(), rec.state.clone()));
                }
            })
            .map_err(|e| crate::writer::store_error(&e))?;
        found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let (mut records, mut bytes) = (Vec::new(), 0usize);
        let mut next = None;
        for r in found {
            let size = tandem_engine::encode(&r.2).len() + r.0.len() + r.1.len();
            if records.len() >= limit || (!records.is_empty() && bytes + size > bytes_max) {
                next = records.last().map(|(e, i, _): &(String, String, _)| (e.clone(), i.clone()));
                break;
            }
            bytes += size;
            records.push(r);
        }
        Ok::<_, ApiError>(StatesResponse { records, next })
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("states task: {e}")))??;
    Ok(message(&page))
}

/// One request to `peer`, its answer decoded.
async fn ask<Q: Serialize, A: DeserializeOwned>(
    node: &AppState,
    peer: &str,
    path: &str,
    req: &Q,
) -> Result<A, String> {
    let client = super::receiver::client_for(node, peer);
    super::receiver::post_message(node, peer, &client, path, req)
        .await
        .map_err(|e| format!("{peer}: {path}: {e}"))
}

/// Pull from `peer` every record of what both may hold that differs here,
/// and merge it.
pub async fn repair_with(node: &AppState, peer: &str) -> Result<RepairReport, String> {
    if node.replication.is_isolated() {
        return Err("this region is isolated: rejoin it before a repair".into());
    }
    let n = node.clone();
    let p = peer.to_owned();
    let mine = tokio::task::spawn_blocking(move || tree_for(&n, &p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.message)?;
    let theirs: DigestResponse =
        ask(node, peer, "/v1/replication/digests", &DigestRequest { tops: vec![] }).await?;
    let tops: Vec<u8> =
        differing(&mine.tops(), &theirs.digests).into_iter().map(|t| t as u8).collect();
    let mut report =
        RepairReport { peer: peer.to_owned(), tops_differing: tops.len(), ..Default::default() };
    let mut leaves = Vec::new();
    for chunk in tops.chunks(TOPS_PER_REQUEST_MAX) {
        let theirs: DigestResponse =
            ask(node, peer, "/v1/replication/digests", &DigestRequest { tops: chunk.to_vec() })
                .await?;
        for (i, top) in chunk.iter().enumerate() {
            let slice =
                theirs.digests.get(i * repair::FANOUT..(i + 1) * repair::FANOUT).unwrap_or(&[]);
            for leaf in differing(&mine.leaves_under(*top), slice) {
                leaves.push((u16::from(*top) << 8) | leaf as u16);
            }
        }
    }
    report.leaves_differing = leaves.len();
    let limit = STATES_PAGE_MAX as u32;
    for chunk in leaves.chunks(LEAVES_PER_REQUEST_MAX) {
        let mut after = None;
        loop {
            let req = StatesRequest { leaves: chunk.to_vec(), after: after.clone(), limit };
            let page: StatesResponse = ask(node, peer, "/v1/replication/states", &req).await?;
            report.records_received += page.records.len() as u64;
            let now = node.now_ms();
            let entries = page
                .records
                .into_iter()
                .map(|(entity, id, state)| LogEntry {
                    seq: 0,
                    origin: peer.to_owned(),
                    origin_seq: 0,
                    committed_at_ms: now,
                    logged_at_ms: now,
                    entity,
                    id,
                    state,
                })
                .collect();
            let batch = RemoteBatch {
                peer: peer.to_owned(),
                path: Path::Repair,
                entries,
                continues_from: 0,
                next_seq: 0,
            };
            let applied = node.writer.apply(batch).await.map_err(|e| e.message)?;
            report.records_changed += applied.changed as u64;
            report.records_refused += applied.refused.len() as u64;
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    tracing::info!(
        %peer,
        tops = report.tops_differing,
        leaves = report.leaves_differing,
        received = report.records_received,
        changed = report.records_changed,
        "repair from peer done"
    );
    Ok(report)
}
