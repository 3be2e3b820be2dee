//! The Redis protocol front end (RESP2 and RESP3) of a region, on
//! `resp_listen`: TLS 1.3 with the region's certificate when TLS is on, and
//! then `AUTH <api key>` (or `HELLO 3 AUTH <user> <api key>`) before any
//! other command. Each connection reads what its client sent, parses every
//! complete command (at most [`PIPELINE_MAX`] per round), queues their
//! writes in the region's writer in order (so a pipeline shares group
//! commits), and writes the replies in order once every write is durable.
//! A command that reads waits for the writes before it in its pipeline, so
//! it sees them. Limits: [`ARGS_MAX`] arguments, bulk strings up to
//! `node.max_body_bytes`, inline lines up to [`INLINE_BYTES_MAX`],
//! `node.max_connections` connections, `node.idle_timeout` of silence; a
//! protocol error is answered and the connection closed.

pub use tandem_resp::codec;
mod commands;
mod expiry;
mod keys;
mod multi;
mod scan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use tandem_resp::conn::{Answer, ConnState};

use self::codec::{Args, Limits, Reply};
use self::commands::{Later, Step};
use crate::auth::Security;
use crate::node::Node;

/// Commands parsed and answered per round of one connection.
pub const PIPELINE_MAX: usize = 1024;
/// Most arguments of one command (an SADD of 1,000 members, an MSET of
/// 1,000 pairs).
pub const ARGS_MAX: usize = 4096;
/// Longest inline command.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;
pub use tandem_resp::conn::REDIS_VERSION;

/// What a region's connections share.
#[derive(Default)]
pub struct Shared {
    cursors: Arc<Mutex<scan::Cursors>>,
    next_id: AtomicU64,
}

/// One connection's state.
pub struct Session {
    conn: ConnState,
    shared: Arc<Shared>,
    /// The router's connection (its certificate, or `--insecure`): already
    /// authenticated, and may mark failovers.
    router: bool,
    /// The home region the current command's writes stand in for.
    failover_for: Option<String>,
    /// Between MULTI and EXEC.
    multi: Option<multi::Multi>,
    /// While EXEC runs: the transaction's writes, each with where its
    /// acknowledgement goes.
    txn: Option<Vec<TxnWrite>>,
}

type TxnWrite = (
    tandem_engine::write::LocalWrite,
    tokio::sync::oneshot::Sender<Result<tandem_engine::write::Ack, crate::error::ApiError>>,
);

/// Serve RESP on `listener` until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let shared = Arc::new(Shared::default());
    let permits = Arc::new(Semaphore::new(node.config.node.max_connections));
    let mut stop = node.shutdown.subscribe();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("never closed"),
            () = stopped(&mut stop) => return,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let (node, shared) = (node.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match node.security.tls() {
                None => connection(&node, shared, stream, true).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
                    let timeout = node.config.node.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let router = from_router(&s);
                            connection(&node, shared, s, router).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "RESP TLS handshake refused"),
                        Err(_) => tracing::debug!("RESP TLS handshake did not finish in time"),
                    }
                }
            }
        });
    }
}

/// Whether a TLS client presented the router's certificate.
fn from_router(s: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> bool {
    let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
    cert.is_some_and(|c| {
        tandem_http::identity::identity_of_certificate(c).0
            == tandem_http::identity::Identity::Router
    })
}

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

fn limits(node: &Node) -> Limits {
    let body = node.config.node.max_body_bytes;
    Limits {
        bulk_bytes_max: body,
        args_max: ARGS_MAX,
        inline_bytes_max: INLINE_BYTES_MAX,
        command_bytes_max: body.saturating_mul(2).max(INLINE_BYTES_MAX),
    }
}

enum Slot {
    Ready(Reply),
    Waiting(Later),
}

async fn settle(slots: &mut [Slot]) {
    for slot in slots.iter_mut() {
        if let Slot::Waiting(_) = slot {
            let Slot::Waiting(later) = std::mem::replace(slot, Slot::Ready(Reply::Nil)) else {
                unreachable!()
            };
            *slot = Slot::Ready(later.resolve().await);
        }
    }
}

/// The metric label of a command: its name when tandem answers it.
fn command_label(name: &[u8]) -> &'static str {
    let name = String::from_utf8_lossy(name).to_lowercase();
    COMMANDS.iter().find(|(c, _)| *c == name).map_or("unknown", |(c, _)| c)
}

/// Counts an open connection while it lives.
struct Open<'a>(&'a Node);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.metrics.resp_connections.dec();
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    node: &Arc<Node>,
    shared: Arc<Shared>,
    mut stream: S,
    router: bool,
) {
    node.metrics.resp_connections.inc();
    let _open = Open(node);
    let limits = limits(node);
    let idle = node.config.node.idle_timeout;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let authed = !node.security.is_tls() || router;
    let conn = ConnState { authed, id, ..ConnState::default() };
    let mut session = Session { conn, shared, router, failover_for: None, multi: None, txn: None };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (commands, fatal) = codec::parse_round(&mut buf, &limits, PIPELINE_MAX);
        if commands.is_empty() && fatal.is_none() {
            match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        }
        let mut slots = Vec::with_capacity(commands.len() + 1);
        let mut names = Vec::with_capacity(commands.len());
        let mut close = false;
        for args in commands {
            names.push(command_label(&args[0]));
            if !commands::queues_without_reading(&args[0]) {
                settle(&mut slots).await;
            }
            match commands::execute(node, &mut session, args).await {
                Step::Now(r) => slots.push(Slot::Ready(r)),
                Step::Later(l) => slots.push(Slot::Waiting(l)),
                Step::Close(r) => {
                    slots.push(Slot::Ready(r));
                    close = true;
                    break;
                }
            }
        }
        settle(&mut slots).await;
        if let Some(r) = fatal {
            slots.push(Slot::Ready(r));
            close = true;
        }
        out.clear();
        for (i, slot) in slots.iter().enumerate() {
            if let Slot::Ready(r) = slot {
                r.encode(&mut out, session.conn.resp3);
                let outcome = match r {
                    Reply::Error(e) => e.split(' ').next().unwrap_or("ERR").to_owned(),
                    _ => "ok".to_owned(),
                };
                let command = names.get(i).copied().unwrap_or("protocol").to_owned();
                let labels = crate::metrics::RespLabels { command, outcome };
                node.metrics.resp_commands.get_or_create(&labels).inc();
            }
        }
        let send = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        let written = tokio::time::timeout(idle, send).await;
        if !matches!(written, Ok(Ok(()))) || close {
            let _ = tokio::time::timeout(idle, stream.shutdown()).await;
            return;
        }
    }
}

fn api_key_ok(node: &Node, key: &[u8]) -> bool {
    match &node.security {
        Security::Insecure { .. } => true,
        Security::Tls { api_keys, .. } => {
            std::str::from_utf8(key).is_ok_and(|k| api_keys.check(k).is_some())
        }
    }
}

/// Connection commands (and the authentication gate before every other
/// command, `tandem_resp::conn`); `None` for the data commands.
pub(crate) async fn connection_commands(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &Args,
) -> Result<Option<Step>, Reply> {
    match tandem_resp::conn::answer(&mut session.conn, args, |k| api_key_ok(node, k)) {
        Answer::Reply(r) => return Ok(Some(Step::Now(r))),
        Answer::Close(r) => return Ok(Some(Step::Close(r))),
        Answer::Pass => {}
    }
    Ok(match name {
        "COMMAND" => Some(Step::Now(command_info(args))),
        "INFO" => Some(Step::Now(Reply::Bulk(info(node, args).await?.into_bytes()))),
        _ => None,
    })
}

/// The commands tandem answers, with their Redis arity (negative: at least).
const COMMANDS: &[(&str, i64)] = &[
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("mget", -2),
    ("mset", -3),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("type", 2),
    ("incr", 2),
    ("incrby", 3),
    ("decr", 2),
    ("decrby", 3),
    ("sadd", -3),
    ("srem", -3),
    ("smembers", 2),
    ("sismember", 3),
    ("smismember", -3),
    ("scard", 2),
    ("hset", -4),
    ("hmset", -4),
    ("hget", 3),
    ("hmget", -3),
    ("hgetall", 2),
    ("hdel", -3),
    ("hlen", 2),
    ("hexists", 3),
    ("hkeys", 2),
    ("hvals", 2),
    ("scan", -2),
    ("dbsize", 1),
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("select", 2),
    ("hello", -1),
    ("auth", -2),
    ("client", -2),
    ("command", -1),
    ("info", -1),
    ("config", -2),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("multi", 1),
    ("exec", 1),
    ("discard", 1),
    ("tandem", -4),
];

fn command_info(args: &Args) -> Reply {
    let entry = |(name, arity): &(&str, i64)| {
        Reply::Array(vec![
            Reply::bulk(*name),
            Reply::Int(*arity),
            Reply::Set(Vec::new()),
            Reply::Int(1),
            Reply::Int(1),
            Reply::Int(1),
        ])
    };
    let sub = args.get(1).map(|s| String::from_utf8_lossy(s).to_ascii_uppercase());
    match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(entry).collect()),
        Some("COUNT") => Reply::Int(COMMANDS.len() as i64),
        Some("INFO") => Reply::Array(
            args[2..]
                .iter()
                .map(|n| {
                    let n = String::from_utf8_lossy(n).to_lowercase();
                    COMMANDS.iter().find(|(c, _)| *c == n).map_or(Reply::Nil, entry)
                })
                .collect(),
        ),
        // No command documentation to give (redis-cli asks at start).
        Some(_) => Reply::Map(Vec::new()),
    }
}

async fn info(node: &Arc<Node>, args: &Args) -> Result<String, Reply> {
    let want = |s: &str| {
        args.len() < 2
            || args[1..].iter().any(|a| {
                let a = String::from_utf8_lossy(a).to_ascii_lowercase();
                a == s || a == "all" || a == "everything" || a == "default"
            })
    };
    let mut out = String::new();
    if want("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\ntandem_version:{}\r\ntandem_region:{}\r\ntandem_jurisdiction:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            node.region,
            node.jurisdiction,
            node.started.elapsed().as_secs()
        ));
    }
    if want("replication") {
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
        out.push_str(&format!("tandem_peers:{}\r\n\r\n", node.replication.links.len()));
    }
    if want("keyspace") {
        let n = scan::count(node).await?;
        out.push_str(&format!("# Keyspace\r\ndb0:keys={n},expires=0,avg_ttl=0\r\n"));
    }
    Ok(out)
}
