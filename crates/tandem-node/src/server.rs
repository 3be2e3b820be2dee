//! Starting and stopping a region: open the store, start the writer, bind the
//! listener (served by `tandem_http`, with its connection and header limits),
//! serve until shutdown, then let in-flight requests and the last commit batch
//! finish before returning.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tandem_clock::{HlcClock, SystemTime};
use tandem_config::Config;
use tandem_store::{MemoryStore, RedbStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Security;
use crate::conflicts::ConflictLog;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::replication::Replication;
pub use crate::startup::SecurityOptions;
use crate::writer::{self, WriterConfig, WriterSinks};
use tandem_engine::link::LinkState;
use tandem_engine::{Engine, Path, Timings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Redb,
    Memory,
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub config: Config,
    pub region: String,
    /// Overrides the region's `listen` address (e.g. port 0 in tests).
    pub listen: Option<SocketAddr>,
    /// Overrides `deployment.data_dir`.
    pub data_dir: Option<PathBuf>,
    pub clock_skew_ms: i64,
    pub backend: StoreBackend,
    pub admin_token: Option<String>,
    /// TLS and the API keys, or `--insecure` with the replication secret.
    pub security: SecurityOptions,
    /// Base URLs of peers, overriding their configured addresses (e.g. the
    /// latency proxies of `tandem up`).
    pub peer_urls: BTreeMap<String, String>,
    /// Test-only: see `WriterConfig::unsafe_ack_before_commit`.
    pub unsafe_ack_before_commit: bool,
}

/// Run one region until `shutdown` resolves. Prints
/// `tandem node <region> listening on http://<addr>` on stdout once bound.
pub async fn run(
    opts: NodeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let region_cfg = opts
        .config
        .region(&opts.region)
        .with_context(|| format!("region `{}` is not in the config", opts.region))?
        .clone();
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| opts.config.deployment.data_dir.clone());
    let security = crate::startup::security(&opts.config, &opts.region, &data_dir, &opts.security)?;
    let pseudonymizer = crate::startup::pseudonymizer(
        &opts.config,
        &opts.region,
        &region_cfg.jurisdiction,
        &data_dir,
        |var| std::env::var(var).ok(),
    )?;
    let disk = Arc::new(match opts.backend {
        StoreBackend::Redb => {
            let dir = data_dir.join(&opts.region);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            crate::disk::DiskGuard::open(&dir, now_wall_ms())
        }
        StoreBackend::Memory => crate::disk::DiskGuard::disabled(),
    });
    let store: Arc<dyn Store> = match opts.backend {
        StoreBackend::Redb => {
            let store = RedbStore::open(&data_dir, &opts.region)
                .with_context(|| format!("opening the store under {}", data_dir.display()))?;
            store.set_checkpoint_bytes(opts.config.node.wal_checkpoint_bytes);
            Arc::new(store)
        }
        StoreBackend::Memory => Arc::new(MemoryStore::new()),
    };
    let time = Arc::new(SystemTime::with_skew_ms(opts.clock_skew_ms));
    let clock = Arc::new(HlcClock::new(time, opts.config.node.max_clock_offset_ms));
    let metrics = Arc::new(Metrics::new(&opts.region, &opts.config));
    let config = Arc::new(opts.config.clone());
    let conflicts = Arc::new(ConflictLog::new(opts.config.node.conflicts_kept));
    let durable_seq = Arc::new(watch::channel(store.durable_seq()?).0);
    let actor = match store.incarnation()? {
        Some(n) => format!("{}+{n}", opts.region),
        None => opts.region.clone(),
    };
    let mut engine = Engine::new(config.clone(), &opts.region, &actor);
    engine.pseudonymizer = pseudonymizer;
    engine.sealer = sealer_from_env(&opts.config, &region_cfg.jurisdiction);
    let engine = Arc::new(engine);
    let (writer, writer_thread) = writer::spawn(
        store.clone(),
        engine.clone(),
        clock.clone(),
        WriterSinks {
            metrics: metrics.clone(),
            conflicts: conflicts.clone(),
            durable_seq: durable_seq.clone(),
            disk: disk.clone(),
        },
        WriterConfig {
            queue_len: opts.config.node.write_queue_len,
            batch_max: opts.config.node.commit_batch_max,
            unsafe_ack_before_commit: opts.unsafe_ack_before_commit,
        },
    );
    let now_ms = clock.physical_ms();
    let mut links = BTreeMap::new();
    let mut peer_urls = BTreeMap::new();
    // A lone region (`--insecure` without a secret) does not replicate: it
    // has no links to report.
    let replicates = !matches!(security, Security::Insecure { replication_secret: None });
    let scheme = if security.is_tls() { "https" } else { "http" };
    let peers = opts.config.regions.iter().filter(|r| r.name != opts.region && replicates);
    for peer in peers {
        let cursor = store.cursor(&Path::Direct.cursor_key(&peer.name))?.seq;
        links.insert(peer.name.clone(), std::sync::Mutex::new(LinkState::new(now_ms, cursor)));
        let url = opts
            .peer_urls
            .get(&peer.name)
            .cloned()
            .unwrap_or_else(|| format!("{scheme}://{}", peer.listen));
        peer_urls.insert(peer.name.clone(), url.trim_end_matches('/').to_owned());
    }
    let links_names: Vec<String> = links.keys().cloned().collect();
    let replication = Replication {
        isolated: watch::channel(false).0,
        durable_seq,
        links,
        peer_urls,
        clients: tandem_http::client::Clients::new(
            security.tls(),
            tandem_http::client::ClientLimits {
                connect_timeout: Timings::from_config(&opts.config.replication).connect_timeout,
                pool_idle_timeout: std::time::Duration::from_secs(30),
                pool_max_idle_per_host: 4,
            },
        ),
        timings: Timings::from_config(&opts.config.replication),
        own_have: store.own_have()?,
        stability: std::sync::Mutex::new({
            let mut s = tandem_engine::stability::Stability::new(
                &opts.region,
                // The regions it replicates with, and itself.
                links_names.into_iter().chain([opts.region.clone()]),
            );
            let retention = opts.config.replication.peer_retention.as_millis();
            s.set_retention(u64::try_from(retention).unwrap_or(u64::MAX), clock.physical_ms());
            s
        }),
        resyncs: std::sync::Mutex::default(),
    };
    let audit = match opts.backend {
        StoreBackend::Redb => crate::audit::AuditLog::open(
            &data_dir.join(&opts.region),
            opts.config.audit.segment_bytes,
        )
        .context("opening the audit log (run `tandem audit verify` to see what is wrong)")?,
        StoreBackend::Memory => crate::audit::AuditLog::disabled(),
    };
    let node = Arc::new(Node {
        audit,
        budgets: Default::default(),
        config,
        region: opts.region.clone(),
        jurisdiction: region_cfg.jurisdiction.clone(),
        store,
        engine,
        writer,
        clock,
        metrics,
        conflicts,
        replication,
        shutdown: watch::channel(false).0,
        ready: std::sync::atomic::AtomicBool::new(false),
        started: Instant::now(),
        admin_token: opts.admin_token.clone(),
        drain: tandem_http::DrainGate::default(),
        disk,
        security,
        data_dir,
    });

    let addr = opts.listen.unwrap_or(region_cfg.listen);
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(region = %opts.region, %local, "node listening");
    // Bound before the listening line, so that whoever waits for it can connect.
    let resp = match region_cfg.resp_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (resp_listen)"))?,
        ),
        None => None,
    };
    println!("tandem node {} listening on {scheme}://{local}", opts.region);
    if let Some(resp) = &resp {
        let tls = if node.security.is_tls() { "TLS" } else { "plaintext" };
        println!("tandem node {} speaking RESP on {} ({tls})", opts.region, resp.local_addr()?);
    }

    let mut tasks = crate::replication::receiver::start(&node);
    if let Some(resp) = resp {
        tasks.push(tokio::spawn(crate::resp::serve(node.clone(), resp)));
    }
    tasks.push(tokio::spawn(watch_disk(node.clone())));
    tasks.push(tokio::spawn(crate::compaction::run(node.clone())));
    tasks.push(tokio::spawn(crate::audit_upkeep::run(node.clone())));
    tasks.push(tokio::spawn(crate::reload::watch(node.clone())));
    let app = crate::api::router(node.clone());
    let stopping = node.clone();
    let shutdown = async move {
        shutdown.await;
        // End long-lived replication streams and loops, so that graceful
        // shutdown only waits for ordinary requests.
        stopping.shutdown.send_replace(true);
    };
    let limits = tandem_http::ServeLimits {
        connections_max: opts.config.node.max_connections,
        head_timeout: opts.config.node.header_read_timeout,
        idle_timeout: opts.config.node.idle_timeout,
        ..tandem_http::ServeLimits::default()
    };
    let tls = node.security.tls();
    tandem_http::serve(listener, app, limits, tls, shutdown).await?;
    tracing::info!("stopped accepting requests; finishing the last commits");
    for t in tasks {
        if tokio::time::timeout(std::time::Duration::from_secs(5), t).await.is_err() {
            tracing::warn!("a replication task did not stop in time");
        }
    }
    drop(node);
    tokio::task::spawn_blocking(move || writer_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    tracing::info!("node stopped cleanly");
    Ok(())
}

fn now_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How often a region whose disk is full looks for space again.
const DISK_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// While the disk is full: reopen the store if a failed commit closed it, and
/// take writes again once there is room. Ends at shutdown.
async fn watch_disk(node: Arc<Node>) {
    let mut shutdown = node.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DISK_RECHECK) => {}
            _ = shutdown.changed() => return,
        }
        if !node.disk.is_full() {
            continue;
        }
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || match n.store.recover() {
            Ok(()) => {
                n.disk.try_resume(n.store.pending_bytes());
            }
            Err(e) => tracing::warn!(error = %e, "the store cannot be reopened yet"),
        })
        .await;
    }
}

/// The keys of the transfers out of `jurisdiction`, from the variables the
/// config names; a transfer without a usable key keeps its data withheld.
fn sealer_from_env(config: &Config, jurisdiction: &str) -> tandem_engine::seal::Sealer {
    let (sealer, missing) =
        tandem_engine::seal::Sealer::from_keys(config, jurisdiction, |var| std::env::var(var).ok());
    for (to, key_env) in missing {
        tracing::warn!(
            %to,
            %key_env,
            "transfer declared but its key is missing or not 64 hex digits: personal data stays withheld"
        );
    }
    sealer
}
