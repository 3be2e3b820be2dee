//! The commands, by merge type: what each one reads or queues, and how its
//! reply is made. A write is queued in the region's writer as soon as it is
//! parsed ([`Step::Later`]), so the commands of one pipeline share group
//! commits; its reply is made only from the durable write's acknowledgement
//! (what it found and left, decided inside the writer's batch, so INCR's
//! total and SADD's count are exact under concurrent clients).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tandem_engine::write::{Ack, LocalWrite};
use tandem_engine::StoredRecord;
use tandem_merge::{MergeKind, Op, State};

use super::codec::{Args, Reply};
use super::keys::{self, error_reply, integer, json_text, redis_bytes, Family, Target};
use super::{connection_commands, Session};
use crate::api::records::{ELEMENT_LEN_MAX, OP_ELEMENTS_MAX, PATCH_FIELDS_MAX};
use crate::error::ApiError;
use crate::node::Node;

type Wait = Pin<Box<dyn Future<Output = Result<Ack, ApiError>> + Send>>;

/// What a command gives its connection.
pub enum Step {
    Now(Reply),
    /// Writes queued in order; the reply once they are durable.
    Later(Later),
    /// Reply, then close the connection (QUIT).
    Close(Reply),
}

pub struct Later {
    waits: Vec<Wait>,
    finish: Finish,
}

/// How the acknowledgements of a command's writes become its reply.
#[derive(Debug, Clone, Copy)]
pub(super) enum Finish {
    Ok,
    /// SET ... GET: the value found.
    Previous,
    /// SET NX/XX without GET: OK when applied, nil when not.
    OkIfApplied,
    /// SETNX, HSETNX: 1 when applied.
    AppliedFlag,
    /// Members added or removed (SADD, SREM, HSET, HDEL, DEL).
    Count,
    /// A counter's total (INCR...).
    Total,
    /// PERSIST: 1 when an expiry was there and is gone.
    Persisted,
}

impl Later {
    pub async fn resolve(self) -> Reply {
        let mut acks = Vec::with_capacity(self.waits.len());
        for w in self.waits {
            match w.await {
                Ok(a) => acks.push(a),
                Err(e) => return error_reply(&e),
            }
        }
        let first = &acks[0].outcome;
        match self.finish {
            Finish::Ok => Reply::ok(),
            Finish::Previous => {
                first.previous.as_deref().map_or(Reply::Nil, |v| Reply::Bulk(redis_bytes(v)))
            }
            Finish::OkIfApplied => {
                if first.applied {
                    Reply::ok()
                } else {
                    Reply::Nil
                }
            }
            Finish::AppliedFlag => Reply::Int(i64::from(first.applied)),
            Finish::Count => {
                Reply::Int(acks.iter().map(|a| a.outcome.members_changed as i64).sum())
            }
            Finish::Total => first.total.map_or(Reply::Nil, Reply::Int),
            Finish::Persisted => {
                Reply::Int(i64::from(first.applied && first.expiry_before_ms.is_some()))
            }
        }
    }
}

/// Commands answered in pipeline order without waiting for earlier writes:
/// writes of keys that name their entity. Every other command first waits
/// for the writes before it, so it reads what they wrote.
pub fn queues_without_reading(name: &[u8]) -> bool {
    const WRITES: [&str; 18] = [
        "SET",
        "SETNX",
        "MSET",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "SADD",
        "SREM",
        "HSET",
        "HMSET",
        "HSETNX",
        "HDEL",
        "PING",
        "EXPIRE",
        "PEXPIRE",
        "EXPIREAT",
        "PEXPIREAT",
    ];
    WRITES.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(name))
}

pub(super) fn arity(args: &Args, min: usize, even_tail: bool) -> Result<(), Reply> {
    let bad = args.len() < min || (even_tail && !(args.len() - min).is_multiple_of(2));
    if bad {
        let name = String::from_utf8_lossy(&args[0]).to_lowercase();
        return Err(Reply::err(format!("wrong number of arguments for '{name}' command")));
    }
    Ok(())
}

/// Run one command (between MULTI and EXEC: queue it).
pub async fn execute(node: &Arc<Node>, session: &mut Session, args: Args) -> Step {
    let control = ["EXEC", "DISCARD", "MULTI", "QUIT"];
    if session.multi.is_some()
        && !control.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(&args[0]))
    {
        return super::multi::queue(session, &args);
    }
    match run(node, session, &args).await {
        Ok(step) => step,
        Err(reply) => Step::Now(reply),
    }
}

/// `TANDEM FAILOVER <home> <command...>`: the router runs a command whose
/// writes stand in for the home region it names (what `X-Tandem-Failover`
/// is on HTTP); taken only on the router's connection (or with
/// `--insecure`), like that header.
async fn tandem(node: &Arc<Node>, session: &mut Session, args: &Args) -> Result<Step, Reply> {
    let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase());
    if sub.as_deref() != Some("FAILOVER") || args.len() < 4 {
        return Err(Reply::err("TANDEM takes FAILOVER <home region> <command...>"));
    }
    if !session.router {
        return Err(Reply::err("TANDEM FAILOVER is taken only from the router"));
    }
    let inner: Args = args[3..].to_vec();
    if inner[0].eq_ignore_ascii_case(b"TANDEM") {
        return Err(Reply::err("TANDEM FAILOVER does not nest"));
    }
    session.failover_for = Some(String::from_utf8_lossy(&args[2]).into_owned());
    let step = Box::pin(run(node, session, &inner)).await;
    session.failover_for = None;
    step
}

/// `run`, boxed: EXEC runs its queued commands through it.
pub fn run_boxed<'a>(
    node: &'a Arc<Node>,
    session: &'a mut Session,
    args: &'a Args,
) -> Pin<Box<dyn Future<Output = Result<Step, Reply>> + Send + 'a>> {
    Box::pin(run(node, session, args))
}

async fn run(node: &Arc<Node>, session: &mut Session, args: &Args) -> Result<Step, Reply> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    if let Some(step) = connection_commands(node, session, &name, args).await? {
        return Ok(step);
    }
    let now = |r: Reply| Ok(Step::Now(r));
    match name.as_str() {
        "GET" => {
            arity(args, 2, false)?;
            let t = keys::split(node, &args[1], Some(Family::Strings))?.remove(0);
            if !(Family::Strings.accepts(t.kind) || Family::Counters.accepts(t.kind)) {
                return Err(keys::wrong_type(&t));
            }
            let rec = read(node, &t).await?;
            now(string_reply(rec))
        }
        "MGET" => {
            arity(args, 2, false)?;
            let mut out = Vec::new();
            for key in &args[1..] {
                let t = keys::split(node, key, Some(Family::Strings))?.remove(0);
                let rec = if t.kind == MergeKind::Lww || Family::Counters.accepts(t.kind) {
                    read(node, &t).await?
                } else {
                    None
                };
                out.push(string_reply(rec));
            }
            now(Reply::Array(out))
        }
        "SET" => super::expiry::set(node, session, args),
        "SETNX" => {
            arity(args, 3, false)?;
            let t = keys::target(node, &args[1], Family::Strings)?;
            no_false_lock(node, &t, "SETNX")?;
            let op = Op::Put(json_text(&args[2])?);
            queue(node, session, vec![conditional(&t, op, Some(false))], Finish::AppliedFlag)
        }
        "MSET" => {
            arity(args, 3, true)?;
            let mut writes = Vec::new();
            for pair in args[1..].chunks(2) {
                let t = keys::target(node, &pair[0], Family::Strings)?;
                writes.push(LocalWrite::new(&t.entity, &t.id, Op::Put(json_text(&pair[1])?)));
            }
            queue(node, session, writes, Finish::Ok)
        }
        "DEL" | "UNLINK" => {
            arity(args, 2, false)?;
            let mut writes = Vec::new();
            for key in &args[1..] {
                let Some(t) = present_target(node, key).await? else { continue };
                if matches!(t.kind, MergeKind::GCounter | MergeKind::PnCounter) {
                    return Err(Reply::err(format!(
                        "`{}` is a counter: counters keep every increment and cannot be deleted",
                        t.entity
                    )));
                }
                writes.push(LocalWrite::new(&t.entity, &t.id, Op::Delete));
            }
            if writes.is_empty() {
                return now(Reply::Int(0));
            }
            queue(node, session, writes, Finish::Count)
        }
        "EXISTS" => {
            arity(args, 2, false)?;
            let mut n = 0;
            for key in &args[1..] {
                n += i64::from(present_target(node, key).await?.is_some());
            }
            now(Reply::Int(n))
        }
        "TYPE" => {
            arity(args, 2, false)?;
            let t = present_target(node, &args[1]).await?;
            now(Reply::Simple(t.map_or("none", |t| keys::type_name(t.kind))))
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => counter(node, session, &name, args),
        "SADD" | "SREM" => {
            arity(args, 3, false)?;
            let t = keys::target(node, &args[1], Family::Sets)?;
            let elements = members(&args[2..])?;
            let op = if name == "SADD" { Op::Add(elements) } else { Op::Remove(elements) };
            queue(node, session, vec![LocalWrite::new(&t.entity, &t.id, op)], Finish::Count)
        }
        "SMEMBERS" | "SCARD" | "SISMEMBER" | "SMISMEMBER" => set_read(node, &name, args).await,
        "HSET" | "HMSET" => {
            arity(args, 4, true)?;
            let t = keys::target(node, &args[1], Family::Hashes)?;
            let mut changes = std::collections::BTreeMap::new();
            for pair in args[2..].chunks(2) {
                changes.insert(field(&pair[0])?, Some(json_text(&pair[1])?));
            }
            if changes.len() > PATCH_FIELDS_MAX {
                return Err(Reply::err(format!("at most {PATCH_FIELDS_MAX} fields per command")));
            }
            let finish = if name == "HSET" { Finish::Count } else { Finish::Ok };
            queue(
                node,
                session,
                vec![LocalWrite::new(&t.entity, &t.id, Op::Patch(changes))],
                finish,
            )
        }
        "HSETNX" => {
            arity(args, 4, false)?;
            if args.len() > 4 {
                return Err(Reply::err("wrong number of arguments for 'hsetnx' command"));
            }
            let t = keys::target(node, &args[1], Family::Hashes)?;
            no_false_lock(node, &t, "HSETNX")?;
            let name = field(&args[2])?;
            let changes = [(name.clone(), Some(json_text(&args[3])?))].into();
            let w = LocalWrite {
                only_if_member_absent: Some(name),
                ..LocalWrite::new(&t.entity, &t.id, Op::Patch(changes))
            };
            queue(node, session, vec![w], Finish::AppliedFlag)
        }
        "HDEL" => {
            arity(args, 3, false)?;
            let t = keys::target(node, &args[1], Family::Hashes)?;
            let mut changes = std::collections::BTreeMap::new();
            for f in &args[2..] {
                changes.insert(field(f)?, None);
            }
            if changes.len() > PATCH_FIELDS_MAX {
                return Err(Reply::err(format!("at most {PATCH_FIELDS_MAX} fields per command")));
            }
            queue(
                node,
                session,
                vec![LocalWrite::new(&t.entity, &t.id, Op::Patch(changes))],
                Finish::Count,
            )
        }
        "HGET" | "HMGET" | "HGETALL" | "HLEN" | "HEXISTS" | "HKEYS" | "HVALS" => {
            hash_read(node, &name, args).await
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            super::expiry::expire(node, session, &name, args)
        }
        "TTL" | "PTTL" | "PERSIST" => {
            super::expiry::ttl_or_persist(node, session, &name, args).await
        }
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => {
            super::multi::command(node, session, &name).await
        }
        "SCAN" => {
            arity(args, 2, false)?;
            super::scan::scan(node, &session.shared.cursors, args).await.map(Step::Now)
        }
        "DBSIZE" => now(Reply::Int(super::scan::count(node).await?)),
        "TANDEM" => tandem(node, session, args).await,
        _ => Err(unknown(args)),
    }
}

fn string_reply(rec: Option<StoredRecord>) -> Reply {
    let value = rec.and_then(|r| r.state.value_json());
    value.map_or(Reply::Nil, |v| Reply::Bulk(redis_bytes(&v)))
}

fn unknown(args: &Args) -> Reply {
    let shown: String = String::from_utf8_lossy(&args[0]).chars().take(64).collect();
    let mut rest = String::new();
    for a in args.iter().skip(1).take(8) {
        let a: String = String::from_utf8_lossy(a).chars().take(32).collect();
        rest.push_str(&format!("'{a}' "));
    }
    Reply::err(format!("unknown command '{shown}', with args beginning with: {rest}"))
}

/// INCR, INCRBY, DECR, DECRBY: the total after this write, exact.
fn counter(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &Args,
) -> Result<Step, Reply> {
    let by_arg = name.ends_with("BY");
    let want = if by_arg { 3 } else { 2 };
    arity(args, want, false)?;
    if args.len() > want {
        let name = name.to_lowercase();
        return Err(Reply::err(format!("wrong number of arguments for '{name}' command")));
    }
    let t = keys::target(node, &args[1], Family::Counters)?;
    let by = if by_arg { integer(&args[2])? } else { 1 };
    let by = if name.starts_with("DECR") {
        by.checked_neg().ok_or_else(|| Reply::err("increment or decrement would overflow"))?
    } else {
        by
    };
    let op = match by {
        0 => return Err(Reply::err("an increment of 0 changes nothing; tandem refuses it")),
        n if n > 0 => Op::Incr(n.unsigned_abs()),
        _ if t.kind == MergeKind::GCounter => {
            return Err(Reply::err(format!("`{}` is a g-counter: it only grows", t.entity)));
        }
        n => Op::Decr(n.unsigned_abs()),
    };
    queue(node, session, vec![LocalWrite::new(&t.entity, &t.id, op)], Finish::Total)
}

async fn set_read(node: &Arc<Node>, name: &str, args: &Args) -> Result<Step, Reply> {
    arity(args, if name == "SMEMBERS" || name == "SCARD" { 2 } else { 3 }, false)?;
    let t = keys::target(node, &args[1], Family::Sets)?;
    let state = read(node, &t).await?.map(|r| r.state);
    let set = match &state {
        Some(State::OrSet { set, .. }) => Some(set),
        _ => None,
    };
    let has = |m: &[u8]| {
        let m = std::str::from_utf8(m);
        Reply::Int(i64::from(set.is_some_and(|s| m.is_ok_and(|m| s.contains(m)))))
    };
    Ok(Step::Now(match name {
        "SMEMBERS" => {
            let members = set.into_iter().flat_map(tandem_merge::OrSet::elements);
            Reply::Set(members.map(Reply::bulk).collect())
        }
        "SCARD" => Reply::Int(set.map_or(0, |s| s.len() as i64)),
        "SISMEMBER" => has(&args[2]),
        _ => Reply::Array(args[2..].iter().map(|m| has(m)).collect()),
    }))
}

async fn hash_read(node: &Arc<Node>, name: &str, args: &Args) -> Result<Step, Reply> {
    let min = if matches!(name, "HGET" | "HEXISTS" | "HMGET") { 3 } else { 2 };
    arity(args, min, false)?;
    let t = keys::target(node, &args[1], Family::Hashes)?;
    let state = read(node, &t).await?.map(|r| r.state);
    let fields: Vec<(&str, &str)> = match &state {
        Some(State::LwwFields(f)) => f.live().collect(),
        _ => Vec::new(),
    };
    let get = |f: &[u8]| fields.iter().find(|(k, _)| k.as_bytes() == f).map(|(_, v)| *v);
    let val = |v: &str| Reply::Bulk(redis_bytes(v));
    let opt = |v: Option<&str>| v.map_or(Reply::Nil, val);
    Ok(Step::Now(match name {
        "HGET" => opt(get(&args[2])),
        "HMGET" => Reply::Array(args[2..].iter().map(|f| opt(get(f))).collect()),
        "HEXISTS" => Reply::Int(i64::from(get(&args[2]).is_some())),
        "HLEN" => Reply::Int(fields.len() as i64),
        "HKEYS" => Reply::Array(fields.iter().map(|(k, _)| Reply::bulk(*k)).collect()),
        "HVALS" => Reply::Array(fields.iter().map(|(_, v)| val(v)).collect()),
        _ => Reply::Map(fields.iter().map(|(k, v)| (Reply::bulk(*k), val(v))).collect()),
    }))
}

/// `SET NX` on a type any region may write would succeed in two regions at
/// once: refused there; on pinned types (one writer region) it works.
pub(super) fn no_false_lock(node: &Node, t: &Target, what: &str) -> Result<(), Reply> {
    let cfg = node.entity(&t.entity).map_err(|e| error_reply(&e))?;
    if cfg.writes != tandem_config::WritePolicy::HomeRegion {
        return Err(Reply::err(format!(
            "{what} is refused on `{}`: its records may be written in every region at once (writes = \"any-region\"), so \"only if absent\" could succeed in two regions; use a type with writes = \"home-region\"",
            t.entity
        )));
    }
    Ok(())
}

pub(super) fn conditional(t: &Target, op: Op, only_if_present: Option<bool>) -> LocalWrite {
    LocalWrite { only_if_present, ..LocalWrite::new(&t.entity, &t.id, op) }
}

pub(super) fn queue(
    node: &Arc<Node>,
    session: &mut Session,
    writes: Vec<LocalWrite>,
    finish: Finish,
) -> Result<Step, Reply> {
    let mut waits: Vec<Wait> = Vec::with_capacity(writes.len());
    for mut w in writes {
        w.failover_for.clone_from(&session.failover_for);
        if let Some(txn) = session.txn.as_mut() {
            // Inside EXEC: collected, and committed with the transaction.
            let (tx, rx) = tokio::sync::oneshot::channel();
            txn.push((w, tx));
            waits.push(Box::pin(async move {
                rx.await.unwrap_or_else(|_| {
                    Err(ApiError::unavailable("the transaction was not committed"))
                })
            }));
            continue;
        }
        waits.push(Box::pin(node.writer.submit(w).map_err(|e| error_reply(&e))?));
    }
    Ok(Step::Later(Later { waits, finish }))
}

fn field(arg: &[u8]) -> Result<String, Reply> {
    let f = keys::utf8(arg, "field names")?;
    if f.is_empty() || f.len() > ELEMENT_LEN_MAX {
        return Err(Reply::err(format!("field names must be 1 to {ELEMENT_LEN_MAX} bytes")));
    }
    Ok(f)
}

fn members(args: &[Vec<u8>]) -> Result<Vec<String>, Reply> {
    if args.len() > OP_ELEMENTS_MAX {
        return Err(Reply::err(format!("at most {OP_ELEMENTS_MAX} members per command")));
    }
    args.iter()
        .map(|m| {
            let m = keys::utf8(m, "set members")?;
            if m.is_empty() || m.len() > ELEMENT_LEN_MAX {
                return Err(Reply::err(format!(
                    "set members must be 1 to {ELEMENT_LEN_MAX} bytes"
                )));
            }
            Ok(m)
        })
        .collect()
}

/// Read a record (a point read, `Node::read_point`), with the lag-budget
/// read check.
pub(super) async fn read(node: &Arc<Node>, t: &Target) -> Result<Option<StoredRecord>, Reply> {
    let rec = node
        .read_point(&t.entity, &t.id)
        .map_err(|e| error_reply(&crate::writer::store_error(&e)))?;
    let Some(rec) = rec else { return Ok(None) };
    if !rec.state.is_live_at(node.now_ms()) {
        return Ok(None);
    }
    let cfg = node.entity(&t.entity).map_err(|e| error_reply(&e))?;
    node.check_read_fresh(cfg, &rec.state.stamp().origin).map_err(|e| error_reply(&e))?;
    Ok(Some(rec))
}

/// The record a key names that is present: `<entity>:<id>` itself, or for a
/// key without ':' the first default entity holding it.
async fn present_target(node: &Arc<Node>, key: &[u8]) -> Result<Option<Target>, Reply> {
    for t in keys::split(node, key, None)? {
        if read(node, &t).await?.is_some() {
            return Ok(Some(t));
        }
    }
    Ok(None)
}
