//! Expiry on `lww` records (`SET ... EX|PX|EXAT|PXAT|KEEPTTL`, `EXPIRE`,
//! `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `TTL`, `PTTL`, `PERSIST`). A
//! deadline is an HLC wall-clock time in ms (this region's clock when the
//! command arrives, plus the TTL), so regions agree on it within the clock
//! offset bound. The merge rules are `tandem_merge::LwwExpiring`'s: a
//! causally later change wins, among concurrent ones no expiry beats every
//! deadline, else the latest deadline wins; `SET` without `KEEPTTL` clears
//! the expiry it has seen. An expired record reads as absent everywhere
//! (GET, EXISTS, SCAN, DBSIZE, HTTP, digests) without any replicated
//! delete; its state stays as a marker, like a delete's.

use std::sync::Arc;

use tandem_merge::{MergeKind, Op};

use super::codec::{Args, Reply};
use super::commands::{arity, conditional, no_false_lock, queue, read, Finish, Step};
use super::keys::{self, integer, json_text, Family};
use super::Session;
use crate::node::Node;

/// The HLC wall-clock time now, in ms.
fn now_ms(node: &Node) -> u64 {
    node.clock.now().wall_ms
}

/// `now + amount` (seconds or ms) or the absolute time, as a deadline in ms;
/// a deadline in the past expires the record at once, as in Redis.
fn deadline(node: &Node, amount: i64, in_ms: bool, absolute: bool) -> Result<u64, Reply> {
    let ms = if in_ms { Some(amount) } else { amount.checked_mul(1000) };
    let ms = ms.ok_or_else(|| Reply::err("invalid expire time"))?;
    let at = if absolute {
        Some(ms)
    } else {
        i64::try_from(now_ms(node)).ok().and_then(|n| n.checked_add(ms))
    };
    let at = at.ok_or_else(|| Reply::err("invalid expire time"))?;
    Ok(u64::try_from(at).unwrap_or(0))
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].
pub fn set(node: &Arc<Node>, session: &mut Session, args: &Args) -> Result<Step, Reply> {
    arity(args, 3, false)?;
    let t = keys::target(node, &args[1], Family::Strings)?;
    let (mut only_if_present, mut get) = (None, false);
    let mut expiry: Option<Result<u64, ()>> = None; // Err: KEEPTTL
    let mut i = 3;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "NX" if only_if_present.is_none() => only_if_present = Some(false),
            "XX" if only_if_present.is_none() => only_if_present = Some(true),
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => expiry = Some(Err(())),
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() && i + 1 < args.len() => {
                let n = integer(&args[i + 1])?;
                if n <= 0 {
                    return Err(Reply::err("invalid expire time in 'set' command"));
                }
                let in_ms = opt.starts_with('P');
                expiry = Some(Ok(deadline(node, n, in_ms, opt.ends_with("AT"))?));
                i += 1;
            }
            _ => return Err(Reply::err("syntax error")),
        }
        i += 1;
    }
    if only_if_present == Some(false) {
        no_false_lock(node, &t, "SET NX")?;
    }
    let value = json_text(&args[2])?;
    let op = match expiry {
        None => Op::Put(value),
        Some(Err(())) => Op::PutKeepExpiry(value),
        Some(Ok(at)) => Op::PutExpiring(value, at),
    };
    let finish = match (get, only_if_present) {
        (true, _) => Finish::Previous,
        (false, Some(_)) => Finish::OkIfApplied,
        (false, None) => Finish::Ok,
    };
    queue(node, session, vec![conditional(&t, op, only_if_present)], finish)
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key n: 1 when the record was
/// there (decided in the writer's batch), 0 when not.
pub fn expire(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &Args,
) -> Result<Step, Reply> {
    arity(args, 3, false)?;
    if args.len() > 3 {
        return Err(Reply::err(format!(
            "{name} options (NX, XX, GT, LT) are not supported (docs/OPERATIONS.md, Redis protocol)"
        )));
    }
    let t = expiring_target(node, &args[1])?;
    let at = deadline(node, integer(&args[2])?, name.starts_with('P'), name.ends_with("AT"))?;
    queue(node, session, vec![conditional(&t, Op::Expire(at), Some(true))], Finish::AppliedFlag)
}

/// TTL and PTTL (-2: absent or expired, -1: no expiry), PERSIST.
pub async fn ttl_or_persist(
    node: &Arc<Node>,
    session: &mut Session,
    name: &str,
    args: &Args,
) -> Result<Step, Reply> {
    arity(args, 2, false)?;
    if args.len() > 2 {
        return Err(Reply::err(format!(
            "wrong number of arguments for '{}' command",
            name.to_lowercase()
        )));
    }
    let t = expiring_target(node, &args[1])?;
    let rec = read(node, &t).await?;
    let deadline = rec.as_ref().and_then(|r| r.state.expires_at_ms());
    if name == "PERSIST" {
        if deadline.is_none() {
            return Ok(Step::Now(Reply::Int(0)));
        }
        return queue(
            node,
            session,
            vec![conditional(&t, Op::Persist, Some(true))],
            Finish::Persisted,
        );
    }
    let left_ms = match (&rec, deadline) {
        (None, _) => return Ok(Step::Now(Reply::Int(-2))),
        (Some(_), None) => return Ok(Step::Now(Reply::Int(-1))),
        (Some(_), Some(at)) => at.saturating_sub(node.now_ms()),
    };
    let left = if name == "TTL" { left_ms.div_ceil(1000) } else { left_ms };
    Ok(Step::Now(Reply::Int(i64::try_from(left).unwrap_or(i64::MAX))))
}

/// The `lww` record a key names; expiry is for `lww` records only.
fn expiring_target(node: &Node, key: &[u8]) -> Result<keys::Target, Reply> {
    let t = keys::split(node, key, Some(Family::Strings))?.remove(0);
    if t.kind != MergeKind::Lww {
        return Err(Reply::Error(format!(
            "WRONGTYPE expiry applies to lww records only: `{}` records merge as `{}`",
            t.entity, t.kind
        )));
    }
    Ok(t)
}
