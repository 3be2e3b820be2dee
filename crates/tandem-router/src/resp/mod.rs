//! The router's Redis protocol front end, on `[router] resp_listen`: TLS
//! with the router's certificate when TLS is on, `AUTH <api key>` first,
//! then every data command routed like the HTTP data plane (`plan`) and
//! relayed to the region's `resp_listen` over a connection of this client's
//! own (`upstream`), so a client's commands to one region keep their order
//! and its pipelines stay pipelines: consecutive commands for one region are
//! sent as one burst. The caller's location is the connection setting
//! `TANDEM CLIENT-REGION <region>` (the router's `default_region` until
//! set), as `X-Tandem-Client-Region` is on HTTP. MULTI ... EXEC is queued
//! here and sent whole to the one region every queued key routes to;
//! transactions whose keys route to different regions are refused. Limits:
//! [`PIPELINE_MAX`] commands per round, [`ARGS_MAX`] arguments, bulk strings
//! up to `router.max_body_bytes`, [`MULTI_QUEUED_MAX`] queued commands,
//! `router.idle_timeout` of silence, replies up to
//! [`upstream::REPLY_BYTES_MAX`].

mod plan;
mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tandem_resp::codec::{self, Args, Limits, Reply};
use tandem_resp::command::{self, Class};
use tandem_resp::conn::{Answer, ConnState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use self::plan::Routed;
use self::upstream::{ConnectError, Upstream};
use crate::decide::Route;
use crate::metrics::RequestLabels;
use crate::retry::{self, AfterRefused};
use crate::state::{RouterSecurity, RouterState};

/// Commands parsed and answered per round of one connection.
pub const PIPELINE_MAX: usize = 1024;
/// Most arguments of one command.
pub const ARGS_MAX: usize = 4096;
/// Longest inline command.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;
/// Most commands queued between MULTI and EXEC.
pub const MULTI_QUEUED_MAX: usize = 1024;

/// One client connection.
struct Session {
    conn: ConnState,
    client_region: String,
    /// Between MULTI and EXEC: the queued commands, and whether one was refused.
    multi: Option<(Vec<Args>, bool)>,
    upstreams: HashMap<String, Upstream>,
}

/// Serve RESP on `listener` until the task is aborted.
pub async fn serve(s: Arc<RouterState>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(crate::startup::MAX_CONNECTIONS));
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (s, id) = (s.clone(), ids.fetch_add(1, Ordering::Relaxed) + 1);
        tokio::spawn(async move {
            let _permit = permit;
            match s.security.tls() {
                None => connection(&s, stream, id).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
                    let timeout = s.config.router.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => connection(&s, tls_stream, id).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "RESP TLS handshake refused"),
                        Err(_) => tracing::debug!("RESP TLS handshake did not finish in time"),
                    }
                }
            }
        });
    }
}

fn limits(s: &RouterState) -> Limits {
    let body = s.config.router.max_body_bytes;
    Limits {
        bulk_bytes_max: body,
        args_max: ARGS_MAX,
        inline_bytes_max: INLINE_BYTES_MAX,
        command_bytes_max: body.saturating_mul(2).max(INLINE_BYTES_MAX),
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    s: &Arc<RouterState>,
    mut stream: S,
    id: u64,
) {
    let limits = limits(s);
    let idle = s.config.router.idle_timeout;
    let authed = matches!(s.security, RouterSecurity::Insecure);
    let mut session = Session {
        conn: ConnState { authed, id, ..ConnState::default() },
        client_region: s.default_region.clone(),
        multi: None,
        upstreams: HashMap::new(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
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
        s.wait_ready().await;
        let (mut out, mut close) = round(s, &mut session, commands).await;
        if let Some(r) = fatal {
            r.encode(&mut out, session.conn.resp3);
            close = true;
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

/// A command on its way to a region.
struct Forward {
    slot: usize,
    routed: Routed,
    args: Args,
    /// For EXEC: the transaction's commands, sent between MULTI and EXEC.
    queued: Vec<Args>,
}

impl Forward {
    fn new(slot: usize, routed: Routed, args: Args) -> Forward {
        Forward { slot, routed, args, queued: Vec::new() }
    }

    /// The same command for another destination.
    fn to(&self, routed: Routed) -> Forward {
        Forward { slot: self.slot, routed, args: self.args.clone(), queued: self.queued.clone() }
    }

    fn is_exec(&self) -> bool {
        self.args[0].eq_ignore_ascii_case(b"EXEC")
    }
}

/// Answer one round of commands, in order: the replies' bytes, and whether
/// to close the connection.
async fn round(s: &RouterState, session: &mut Session, commands: Vec<Args>) -> (Vec<u8>, bool) {
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); commands.len()];
    let mut burst: Vec<Forward> = Vec::new();
    let mut close = false;
    for (slot, args) in commands.into_iter().enumerate() {
        let local = match local(s, session, &args) {
            Some(local) => local,
            None => match routed(s, session, slot, args).await {
                Ok(f) => {
                    if burst.first().is_some_and(|b| b.routed.region != f.routed.region) {
                        flush(s, session, std::mem::take(&mut burst), &mut replies).await;
                    }
                    burst.push(f);
                    continue;
                }
                Err(reply) => Answer::Reply(reply),
            },
        };
        // A local answer may change what later commands are sent with
        // (HELLO's protocol, the client region): what is queued goes first.
        flush(s, session, std::mem::take(&mut burst), &mut replies).await;
        let resp3 = session.conn.resp3;
        match local {
            Answer::Reply(r) => r.encode(&mut replies[slot], resp3),
            Answer::Close(r) => {
                r.encode(&mut replies[slot], resp3);
                replies.truncate(slot + 1);
                close = true;
                break;
            }
            Answer::Pass => unreachable!("a local answer"),
        }
    }
    if !close {
        flush(s, session, burst, &mut replies).await;
    }
    (replies.concat(), close)
}

/// A command routed, or EXEC with the transaction it ends: sent whole to
/// the one region every queued key routes to (commands without keys go
/// with the rest).
async fn routed(
    s: &RouterState,
    session: &mut Session,
    slot: usize,
    args: Args,
) -> Result<Forward, Reply> {
    let caller = session.client_region.clone();
    if !args[0].eq_ignore_ascii_case(b"EXEC") {
        return Ok(Forward::new(slot, plan::route(s, &caller, &args).await?, args));
    }
    let (queued, refused) = session.multi.take().expect("EXEC is routed only in MULTI");
    if refused {
        return Err(Reply::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    let mut chosen: Option<Routed> = None;
    for q in queued.iter().filter(|q| has_keys(q)) {
        let r = plan::route(s, &caller, q).await?;
        match &chosen {
            Some(c) if c.region != r.region || c.failover_for != r.failover_for => {
                return Err(Reply::Error(format!(
                    "CROSSREGION Transaction discarded: its keys are served by different regions ({} and {}); a transaction commits in one region",
                    c.region, r.region
                )));
            }
            Some(_) => {}
            None => chosen = Some(r),
        }
    }
    let routed = match chosen {
        Some(r) => r,
        None => plan::route(s, &caller, &args).await?,
    };
    Ok(Forward { queued, ..Forward::new(slot, routed, args) })
}

fn has_keys(args: &Args) -> bool {
    matches!(command::classify(args), Class::Keys { keys, .. } if !keys.is_empty())
}

/// What the router answers itself: connection commands, the client region,
/// INFO, and the queueing of a transaction; `None` for commands to route.
fn local(s: &RouterState, session: &mut Session, args: &Args) -> Option<Answer> {
    let key_ok = |k: &[u8]| match &s.security {
        RouterSecurity::Insecure => true,
        RouterSecurity::Tls { api_keys, .. } => {
            std::str::from_utf8(k).is_ok_and(|k| api_keys.check(k).is_some())
        }
    };
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    if session.multi.is_some() && !matches!(name.as_str(), "EXEC" | "DISCARD" | "MULTI") {
        return Some(queue_in_multi(session, args));
    }
    match tandem_resp::conn::answer(&mut session.conn, args, key_ok) {
        Answer::Pass => {}
        other => return Some(other),
    }
    let reply = match name.as_str() {
        "TANDEM" => client_region(s, session, args),
        "INFO" => Reply::Bulk(info(s, session).into_bytes()),
        "MULTI" if session.multi.is_some() => Reply::err("MULTI calls can not be nested"),
        "MULTI" => {
            session.multi = Some((Vec::new(), false));
            Reply::ok()
        }
        "DISCARD" => match session.multi.take() {
            Some(_) => Reply::ok(),
            None => Reply::err("DISCARD without MULTI"),
        },
        "EXEC" if session.multi.is_none() => Reply::err("EXEC without MULTI"),
        // EXEC is routed: `round` sends the whole transaction.
        "EXEC" => return None,
        "WATCH" | "UNWATCH" => Reply::err(
            "WATCH is not supported: tandem's records may change in every region at once (docs/OPERATIONS.md, Redis protocol)",
        ),
        _ => return None,
    };
    Some(Answer::Reply(reply))
}

fn queue_in_multi(session: &mut Session, args: &Args) -> Answer {
    let (queued, refused) = session.multi.as_mut().expect("in MULTI");
    let class = command::classify(args);
    let reply = if matches!(class, Class::Unknown | Class::Transaction) {
        *refused = true;
        Reply::err(format!(
            "'{}' cannot be queued in a transaction",
            String::from_utf8_lossy(&args[0]).to_lowercase()
        ))
    } else if queued.len() >= MULTI_QUEUED_MAX {
        *refused = true;
        Reply::err(format!("at most {MULTI_QUEUED_MAX} commands in one transaction"))
    } else {
        queued.push(args.clone());
        Reply::Simple("QUEUED")
    };
    Answer::Reply(reply)
}

/// `TANDEM CLIENT-REGION [<region>]`: where this client is, for routing.
fn client_region(s: &RouterState, session: &mut Session, args: &Args) -> Reply {
    let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
    match (sub.as_deref(), args.get(2), args.len()) {
        (Some("CLIENT-REGION"), None, 2) => Reply::bulk(session.client_region.as_bytes()),
        (Some("CLIENT-REGION"), Some(r), 3) => {
            let r = String::from_utf8_lossy(r).into_owned();
            if s.config.region(&r).is_none() {
                return Reply::err(format!("`{r}` is not a region of this deployment"));
            }
            session.client_region = r;
            Reply::ok()
        }
        _ => Reply::err("the router takes TANDEM CLIENT-REGION [<region>]"),
    }
}

fn info(s: &RouterState, session: &Session) -> String {
    format!(
        "# Server\r\nredis_version:{}\r\nredis_mode:standalone\r\ntandem_version:{}\r\ntandem_role:router\r\ntandem_client_region:{}\r\nuptime_in_seconds:{}\r\n\r\n",
        tandem_resp::conn::REDIS_VERSION,
        env!("CARGO_PKG_VERSION"),
        session.client_region,
        s.started.elapsed().as_secs()
    )
}

/// The wire form of a command for `routed`: marked as a failover for the
/// home region when the decision says so (honoured only on the router's
/// connection, like `X-Tandem-Failover`).
fn wire(args: &Args, routed: &Routed, out: &mut Vec<u8>) {
    match &routed.failover_for {
        None => codec::encode_command(args, out),
        Some(home) => {
            let mut wrapped: Vec<&[u8]> = vec![b"TANDEM", b"FAILOVER", home.as_bytes()];
            wrapped.extend(args.iter().map(Vec::as_slice));
            codec::encode_command(&wrapped, out);
        }
    }
}

/// Send a burst of commands for one region and put each reply in its slot;
/// after a refused connection each command is decided again (`retry`).
async fn flush(
    s: &RouterState,
    session: &mut Session,
    burst: Vec<Forward>,
    replies: &mut [Vec<u8>],
) {
    let Some(first) = burst.first() else { return };
    let region = first.routed.region.clone();
    match send(s, session, &region, &burst).await {
        Ok(answers) => {
            for (f, answer) in burst.iter().zip(answers) {
                replies[f.slot] = after_answer(s, session, f, answer).await;
            }
        }
        Err(ConnectError::NoListener) => {
            for f in &burst {
                replies[f.slot] = error_bytes(
                    session,
                    format!("NOREGION {region} has no resp_listen configured"),
                );
            }
        }
        Err(ConnectError::Refused(why)) => {
            tracing::info!(%region, "RESP connection refused: deciding again");
            for f in &burst {
                replies[f.slot] = retry_one(s, session, f, &region, &why).await;
            }
        }
    }
}

/// The region's replies to a burst, in order (each one an error when the
/// connection broke before it).
async fn send(
    s: &RouterState,
    session: &mut Session,
    region: &str,
    burst: &[Forward],
) -> Result<Vec<Vec<u8>>, ConnectError> {
    let mut wire_bytes = Vec::new();
    let mut n = 0;
    for f in burst {
        n += exec_wire(f, &mut wire_bytes);
    }
    if !session.upstreams.contains_key(region) {
        let up = upstream::connect(s, region).await?;
        session.upstreams.insert(region.to_owned(), up);
    }
    let up = session.upstreams.get_mut(region).expect("just connected");
    let resp3 = session.conn.resp3;
    let answers = match up.exchange(&wire_bytes, n, resp3).await {
        Ok(a) => a,
        Err((mut got, why)) => {
            session.upstreams.remove(region);
            tracing::warn!(%region, %why, "RESP connection to a region failed");
            let broke = format!(
                "ERR the connection to {region} broke before it answered ({why}); a write may or may not have been applied"
            );
            while got.len() < n {
                got.push(error_bytes(session, broke.clone()));
            }
            got
        }
    };
    Ok(collapse(burst, answers))
}

/// Commands a forward puts on the wire: the command, or for EXEC the whole
/// transaction (MULTI, the queued commands, EXEC).
fn exec_wire(f: &Forward, out: &mut Vec<u8>) -> usize {
    if !f.is_exec() {
        wire(&f.args, &f.routed, out);
        return 1;
    }
    codec::encode_command(&[&b"MULTI"[..]], out);
    for args in &f.queued {
        wire(args, &f.routed, out);
    }
    codec::encode_command(&[&b"EXEC"[..]], out);
    f.queued.len() + 2
}

/// One reply per forward: a transaction's MULTI and QUEUED replies are the
/// router's to read, its EXEC reply the client's.
fn collapse(burst: &[Forward], answers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut answers = answers.into_iter();
    let mut out = Vec::with_capacity(burst.len());
    for f in burst {
        let take = if f.is_exec() { f.queued.len() + 2 } else { 1 };
        let mut last = None;
        for _ in 0..take {
            last = answers.next();
        }
        out.push(last.unwrap_or_default());
    }
    out
}

fn error_bytes(session: &Session, line: String) -> Vec<u8> {
    let mut out = Vec::new();
    Reply::Error(line).encode(&mut out, session.conn.resp3);
    out
}

/// Count a relayed reply; a MISDIRECTED answer forgets the cached home, a
/// READSHALTED answer to a read is read again where the record is fresh.
async fn after_answer(
    s: &RouterState,
    session: &mut Session,
    f: &Forward,
    answer: Vec<u8>,
) -> Vec<u8> {
    if let Some(home) = &f.routed.failover_for {
        let labels =
            crate::metrics::FailoverLabels { from: home.clone(), to: f.routed.region.clone() };
        s.metrics.failovers.get_or_create(&labels).inc();
    }
    let outcome = if answer.first() == Some(&b'-') { "client_error" } else { "ok" };
    let labels = RequestLabels::new(&f.routed.region, f.routed.route.as_str(), outcome);
    s.metrics.requests.get_or_create(&labels).inc();
    if answer.starts_with(b"-MISDIRECTED ") {
        if let Some(subject) = &f.routed.subject {
            s.cache.forget(subject);
        }
    }
    let fresh = answer
        .strip_prefix(b"-READSHALTED ")
        .and_then(|rest| rest.split(|&b| b == b' ').next())
        .map(|r| String::from_utf8_lossy(r).into_owned());
    let Some(fresh) = fresh else { return answer };
    let views = s.views(&session.client_region);
    let Some(fresh) = crate::fresh_read::redirect(f.routed.kind, &f.routed.region, &fresh, &views)
    else {
        return answer;
    };
    let routed = Routed {
        region: fresh.to_owned(),
        route: Route::Home,
        failover_for: None,
        ..f.routed.clone()
    };
    let again = f.to(routed);
    match send(s, session, fresh, std::slice::from_ref(&again)).await {
        Ok(mut a) => a.pop().unwrap_or(answer),
        // The fresh region never saw the read: the halted answer says why.
        Err(_) => answer,
    }
}

/// A command whose region refused the connection, decided again over the
/// regions left, and sent once more (at most `retry::SENDS_MAX` sends).
async fn retry_one(
    s: &RouterState,
    session: &mut Session,
    f: &Forward,
    refused: &str,
    why: &str,
) -> Vec<u8> {
    let unreachable = |session: &Session| error_bytes(session, format!("NOREGION {why}"));
    let views = s.views(&session.client_region);
    let next = retry::after_refused(&[refused], &views, |r| f.routed.decide(r));
    let AfterRefused::Retry { region, route, failover_for } = next else {
        return unreachable(session);
    };
    let routed = Routed { region: region.clone(), route, failover_for, ..f.routed.clone() };
    let again = f.to(routed);
    match send(s, session, &region, std::slice::from_ref(&again)).await {
        Ok(mut a) => a.pop().unwrap_or_else(|| unreachable(session)),
        Err(_) => unreachable(session),
    }
}
