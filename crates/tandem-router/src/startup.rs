//! Start-up: `run` builds the router's state (a region state per configured
//! region, pooled upstream clients, the home cache), starts one probe loop
//! per region, binds the listener and serves the route table until shutdown,
//! within the connection and time limits of `tandem_http::serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::{any, get, post};
use axum::Router;
use tandem_config::Config;

use crate::cache::HomeCache;
use crate::health::{self, RegionState};
use crate::metrics::RouterMetrics;
use crate::state::{RouterSecurity, RouterState};
use crate::{data_plane, errors, operations};

/// Subjects kept in the home-region cache.
pub const HOME_CACHE_CAPACITY: usize = 100_000;
/// Concurrent client connections to the router.
pub const MAX_CONNECTIONS: usize = 4096;
/// Idle pooled connections kept per region.
const POOL_IDLE_PER_REGION_MAX: usize = 256;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RouterOptions {
    pub config: Config,
    /// Overrides `router.listen`.
    pub listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub security: RouterSecurity,
}

pub async fn run(
    opts: RouterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(opts.config);
    let tls = opts.security.tls();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = tandem_http::client::ClientLimits {
        connect_timeout: config.router.probe_timeout,
        pool_idle_timeout: POOL_IDLE_TIMEOUT,
        pool_max_idle_per_host: POOL_IDLE_PER_REGION_MAX,
    };
    let clients = tandem_http::client::Clients::new(tls.clone(), limits);
    let probe_clients = tandem_http::client::Clients::new(
        tls.clone(),
        tandem_http::client::ClientLimits { pool_max_idle_per_host: 2, ..limits },
    );
    let regions = config
        .regions
        .iter()
        .map(|r| RegionState {
            name: r.name.clone(),
            jurisdiction: r.jurisdiction.clone(),
            url: format!("{scheme}://{}", r.listen),
            up: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            writable: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            probed: AtomicBool::new(false),
        })
        .collect();
    let default_region =
        config.router.default_region.clone().unwrap_or_else(|| config.regions[0].name.clone());
    let state = Arc::new(RouterState {
        cache: HomeCache::new(config.router.home_cache_ttl, HOME_CACHE_CAPACITY),
        config: config.clone(),
        regions,
        ready: tokio::sync::watch::channel(false).0,
        started: Instant::now(),
        drain: tandem_http::DrainGate::default(),
        default_region,
        clients,
        probe_clients,
        metrics: RouterMetrics::new(&config),
        admin_token: opts.admin_token,
        security: opts.security,
    });
    let probes: Vec<_> = (0..state.regions.len())
        .map(|i| tokio::spawn(health::probe_loop(state.clone(), i)))
        .collect();

    // Bound before the HTTP listener is announced: a taken port fails the
    // start, not a router that already said it was listening.
    let resp_listener = match config.router.resp_listen {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (router.resp_listen)"))?,
        ),
    };
    let addr = opts.listen.unwrap_or(config.router.listen);
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    println!("tandem router listening on {scheme}://{local}");
    tracing::info!(%local, "router listening");
    let limits = tandem_http::ServeLimits {
        connections_max: MAX_CONNECTIONS,
        head_timeout: config.router.header_read_timeout,
        idle_timeout: config.router.idle_timeout,
        ..Default::default()
    };
    let resp = match resp_listener {
        None => None,
        Some(l) => {
            let how = if tls.is_some() { "TLS" } else { "plaintext" };
            println!("tandem router speaking RESP on {} ({how})", l.local_addr()?);
            Some(tokio::spawn(crate::resp::serve(state.clone(), l)))
        }
    };
    let reload = tokio::spawn(crate::reload::watch(state.clone()));
    tandem_http::serve(listener, routes(state), limits, tls, shutdown).await?;
    reload.abort();
    if let Some(r) = resp {
        r.abort();
    }
    for p in probes {
        p.abort();
    }
    Ok(())
}

/// The route table: the operations plane and the data plane of DESIGN.md.
/// The data plane needs an API key (with TLS); see `auth`.
fn routes(state: Arc<RouterState>) -> Router {
    let data = Router::new()
        .route("/v1/records/{entity}", any(data_plane::scan))
        .route("/v1/records/{entity}/{id}", any(data_plane::record))
        .route("/v1/records/{entity}/{id}/ops", any(data_plane::record))
        .route("/v1/subjects/{subject}", any(data_plane::subject))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard_data_plane,
        ));
    Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/metrics", get(operations::metrics))
        .route("/v1/routes", get(operations::routes))
        .route("/v1/admin/regions/{region}/{action}", post(operations::admin))
        .merge(data)
        .fallback(|| async { errors::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { errors::method_not_allowed() })
        .with_state(state)
}
