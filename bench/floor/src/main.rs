//! `http-floor`: the HTTP floor of `bench/run`. It serves the one route a
//! counter increment takes on a tandem node, `POST /v1/records/{entity}/{id}/ops`,
//! parses the body into the same shape the node's handler does (the `op`
//! tag with `incr`/`decr`/`add`/`remove`, unknown fields refused) and answers
//! with a body of the node's size and shape (`{"region","hlc","version"}`),
//! but stores nothing, logs nothing and counts nothing. What a tandem node
//! does per write above this server's cost is what the node itself costs;
//! the ratio node/floor is the figure issue 15 sets goals for.
//!
//! Same runtime as `tandem node` (tokio multi-thread, one worker per core) and
//! the same HTTP stack (axum 0.8 over hyper 1). Plain HTTP only: it is the
//! floor of the `--insecure` figures.
//!
//!     http-floor --listen 127.0.0.1:0    prints `http-floor listening on http://ADDR`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The node's operation body (`tandem-node/src/api/records.rs`, `OpBody`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum OpBody {
    Incr { by: u64 },
    Decr { by: u64 },
    Add { elements: Vec<String> },
    Remove { elements: Vec<String> },
}

#[derive(Serialize)]
struct Hlc {
    wall_ms: u64,
    logical: u64,
}

/// The node's answer to a write: `{"region","hlc","version"}`.
#[derive(Serialize)]
struct WriteResponse {
    region: &'static str,
    hlc: Hlc,
    version: std::collections::BTreeMap<&'static str, u64>,
}

/// The sum of every operation's amount, so that answers differ like the
/// node's do and the parsed body is used; the only state the floor keeps.
type Counter = Arc<AtomicU64>;

async fn post_ops(
    State(counter): State<Counter>,
    Path((_entity, _id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<WriteResponse>, StatusCode> {
    let op: OpBody = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let amount = match &op {
        OpBody::Incr { by } | OpBody::Decr { by } => *by,
        OpBody::Add { elements } | OpBody::Remove { elements } => elements.len() as u64,
    };
    let seq = counter.fetch_add(amount, Ordering::Relaxed) + amount;
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Json(WriteResponse {
        region: "eu-west",
        hlc: Hlc { wall_ms, logical: 0 },
        version: [("eu-west", seq)].into_iter().collect(),
    }))
}

fn listen_arg() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--listen"), Some(addr), None) => {
            addr.parse().map_err(|e| format!("--listen {addr}: {e}"))
        }
        (None, None, None) => Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
        _ => Err("usage: http-floor [--listen ADDR]".into()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let addr = match listen_arg() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http-floor: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/v1/records/{entity}/{id}/ops", post(post_ops))
        .with_state(Counter::default());
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http-floor: bind {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().expect("a bound listener has an address");
    // No Nagle, as the node's listener (tandem-http's serve.rs).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("http-floor listening on http://{local}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        eprintln!("http-floor: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
