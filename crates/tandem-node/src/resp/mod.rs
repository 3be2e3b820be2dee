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

pub mod codec;
mod commands;
mod keys;
mod scan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
/// The `redis_version` reported (the command set follows Redis 7).
pub const REDIS_VERSION: &str = "7.2.0";

/// What a region's connections share.
#[derive(Default)]
pub struct Shared {
    cursors: Arc<Mutex<scan::Cursors>>,
    next_id: AtomicU64,
}

/// One connection's state.
pub struct Session {
    resp3: bool,
    authed: bool,
    name: Option<String>,
    id: u64,
    shared: Arc<Shared>,
}

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
                None => connection(&node, shared, stream).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
                    let timeout = node.config.node.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(&node, shared, s).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "RESP TLS handshake refused"),
                        Err(_) => tracing::debug!("RESP TLS handshake did not finish in time"),
                    }
                }
            }
        });
    }
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
) {
    node.metrics.resp_connections.inc();
    let _open = Open(node);
    let limits = limits(node);
    let idle = node.config.node.idle_timeout;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let authed = !node.security.is_tls();
    let mut session = Session { resp3: false, authed, name: None, id, shared };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut commands: Vec<Args> = Vec::new();
        let mut used = 0;
        let mut fatal = None;
        while commands.len() < PIPELINE_MAX {
            match codec::parse(&buf[used..], &limits) {
                Ok(Some((args, n))) => {
                    used += n;
                    if !args.is_empty() {
                        commands.push(args);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(Reply::err(e.to_string()));
                    break;
                }
            }
        }
        buf.drain(..used);
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
                r.encode(&mut out, session.resp3);
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

fn wrong_pass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Connection commands (and the authentication gate before every other
/// command); `None` for the data commands.
pub(crate) async fn connection_commands(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &Args,
) -> Result<Option<Step>, Reply> {
    let argn = args.len();
    let wrong_args =
        || Reply::err(format!("wrong number of arguments for '{}' command", name.to_lowercase()));
    let step = match name {
        "AUTH" => {
            let key = match argn {
                2 => &args[1],
                3 => &args[2],
                _ => return Err(wrong_args()),
            };
            if !api_key_ok(node, key) {
                return Err(wrong_pass());
            }
            session.authed = true;
            Step::Now(Reply::ok())
        }
        "HELLO" => return hello(node, session, args).map(Some),
        "QUIT" => Step::Close(Reply::ok()),
        _ if !session.authed => {
            return Err(Reply::Error("NOAUTH Authentication required.".into()));
        }
        "PING" => match argn {
            1 => Step::Now(Reply::Simple("PONG")),
            2 => Step::Now(Reply::Bulk(args[1].clone())),
            _ => return Err(wrong_args()),
        },
        "ECHO" if argn == 2 => Step::Now(Reply::Bulk(args[1].clone())),
        "SELECT" if argn == 2 => match args[1].as_slice() {
            b"0" => Step::Now(Reply::ok()),
            _ => return Err(Reply::err("DB index is out of range (tandem has database 0 only)")),
        },
        "CLIENT" if argn >= 2 => client(session, args)?,
        "COMMAND" => Step::Now(command_info(args)),
        "CONFIG" if argn >= 3 && args[1].eq_ignore_ascii_case(b"GET") => {
            // No Redis configuration to show: each parameter asked for by
            // name with an empty value (redis-benchmark asks for `save` and
            // `appendonly`), nothing for patterns.
            let named = args[2..].iter().filter(|a| !a.iter().any(|c| b"*?[".contains(c)));
            Step::Now(Reply::Map(
                named.map(|a| (Reply::Bulk(a.clone()), Reply::bulk(""))).collect(),
            ))
        }
        "CONFIG" if argn >= 2 => {
            return Err(Reply::err("CONFIG: only CONFIG GET is answered (with empty values)"))
        }
        "INFO" => Step::Now(Reply::Bulk(info(node, args).await?.into_bytes())),
        "ECHO" | "SELECT" | "CLIENT" | "CONFIG" => return Err(wrong_args()),
        _ => return Ok(None),
    };
    Ok(Some(step))
}

fn hello(node: &Arc<Node>, session: &mut Session, args: &Args) -> Result<Step, Reply> {
    let mut proto = if session.resp3 { 3 } else { 2 };
    let mut i = 1;
    if let Some(v) = args.get(1) {
        proto = match v.as_slice() {
            b"2" => 2,
            b"3" => 3,
            _ => return Err(Reply::Error("NOPROTO unsupported protocol version".into())),
        };
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match String::from_utf8_lossy(&args[i]).to_ascii_uppercase().as_str() {
            "AUTH" if i + 2 < args.len() => {
                if !api_key_ok(node, &args[i + 2]) {
                    return Err(wrong_pass());
                }
                session.authed = true;
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                name = Some(String::from_utf8_lossy(&args[i + 1]).into_owned());
                i += 2;
            }
            _ => return Err(Reply::err("syntax error in HELLO option")),
        }
    }
    if !session.authed {
        return Err(Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        ));
    }
    session.resp3 = proto == 3;
    if name.is_some() {
        session.name = name;
    }
    let s = |v: &str| Reply::bulk(v.as_bytes());
    Ok(Step::Now(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_VERSION)),
        (s("proto"), Reply::Int(proto)),
        (s("id"), Reply::Int(session.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ])))
}

fn client(session: &mut Session, args: &Args) -> Result<Step, Reply> {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
    Ok(Step::Now(match (sub.as_str(), args.len()) {
        ("SETNAME", 3) => {
            session.name = Some(String::from_utf8_lossy(&args[2]).into_owned());
            Reply::ok()
        }
        ("GETNAME", 2) => session.name.clone().map_or(Reply::Nil, Reply::bulk),
        ("ID", 2) => Reply::Int(session.id as i64),
        ("SETINFO", 4) => Reply::ok(),
        _ => {
            return Err(Reply::err(format!(
                "unknown subcommand or wrong number of arguments for 'CLIENT|{sub}'"
            )))
        }
    }))
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
