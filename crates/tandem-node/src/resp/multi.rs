//! MULTI ... EXEC on one region: the queued commands run at EXEC, their
//! writes are collected instead of queued one by one, and go to the writer
//! as one transaction (`Writer::submit_transaction`): one commit, all of
//! them or none (the engine undoes the transaction's puts at the first
//! refusal: another region's pinned record, a residency rule). Errors at
//! queue time (an unknown command) discard the transaction at EXEC
//! (`-EXECABORT`, as Redis does); an error while EXEC runs the commands
//! (WRONGTYPE, a bad argument) or a refusal of a write answers EXEC with
//! that error, and nothing is stored.
//!
//! Reads run at EXEC before the writes are committed, so a command that
//! must read a key written earlier in the same transaction (GET, DEL,
//! EXISTS... after SET of that key) is refused: it would not see that
//! write. Writes that need no read (SET, INCR, SADD, HSET...) may touch the
//! same key any number of times; each is decided inside the writer's batch
//! over the ones before it. WATCH is refused: with every region taking
//! writes, "unchanged since WATCH" cannot be promised.

use std::collections::BTreeSet;
use std::sync::Arc;

use tandem_resp::command::{self, Access, Class};

use super::codec::{Args, Reply};
use super::commands::{self, Step};
use super::keys::error_reply;
use super::Session;
use crate::node::Node;

/// Most commands queued between MULTI and EXEC.
pub const MULTI_QUEUED_MAX: usize = 1024;

/// The transaction state of a connection.
#[derive(Default)]
pub struct Multi {
    queued: Vec<Args>,
    /// A command was refused while queueing: EXEC discards the transaction.
    refused: bool,
}

/// Queue a command between MULTI and EXEC.
pub fn queue(session: &mut Session, args: &Args) -> Step {
    let multi = session.multi.as_mut().expect("in MULTI");
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    let reply = if matches!(command::classify(args), Class::Unknown | Class::Transaction) {
        multi.refused = true;
        Reply::err(format!("'{name}' cannot be queued in a transaction"))
    } else if multi.queued.len() >= MULTI_QUEUED_MAX {
        multi.refused = true;
        Reply::err(format!("at most {MULTI_QUEUED_MAX} commands in one transaction"))
    } else {
        multi.queued.push(args.clone());
        Reply::Simple("QUEUED")
    };
    Step::Now(reply)
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
pub async fn command(node: &Arc<Node>, session: &mut Session, name: &str) -> Result<Step, Reply> {
    match name {
        "MULTI" if session.multi.is_some() => Err(Reply::err("MULTI calls can not be nested")),
        "MULTI" => {
            session.multi = Some(Multi::default());
            Ok(Step::Now(Reply::ok()))
        }
        "DISCARD" => match session.multi.take() {
            Some(_) => Ok(Step::Now(Reply::ok())),
            None => Err(Reply::err("DISCARD without MULTI")),
        },
        "EXEC" => exec(node, session).await,
        _ => Err(Reply::err(
            "WATCH is not supported: tandem's records may change in every region at once (docs/OPERATIONS.md, Redis protocol)",
        )),
    }
}

async fn exec(node: &Arc<Node>, session: &mut Session) -> Result<Step, Reply> {
    let Some(multi) = session.multi.take() else {
        return Err(Reply::err("EXEC without MULTI"));
    };
    if multi.refused {
        return Err(Reply::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    reads_after_writes(&multi.queued)?;
    session.txn = Some(Vec::new());
    let mut steps = Vec::with_capacity(multi.queued.len());
    for args in &multi.queued {
        let step = commands::run_boxed(node, session, args).await;
        match step {
            Ok(Step::Now(Reply::Error(e))) | Err(Reply::Error(e)) => {
                session.txn = None;
                return Err(Reply::Error(e));
            }
            Ok(step) => steps.push(step),
            Err(other) => {
                session.txn = None;
                return Err(other);
            }
        }
    }
    let writes = session.txn.take().unwrap_or_default();
    if !writes.is_empty() {
        let (writes, waiting): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        let committed = node.writer.submit_transaction(writes).map_err(|e| error_reply(&e))?;
        let acks = committed.await.map_err(|e| error_reply(&e))?;
        assert_eq!(acks.len(), waiting.len(), "one acknowledgement per write");
        for (tx, ack) in waiting.into_iter().zip(acks) {
            let _ = tx.send(Ok(ack));
        }
    }
    let mut replies = Vec::with_capacity(steps.len());
    for step in steps {
        replies.push(match step {
            Step::Now(r) | Step::Close(r) => r,
            Step::Later(later) => later.resolve().await,
        });
    }
    Ok(Step::Now(Reply::Array(replies)))
}

/// Refuse a transaction in which a command must read a key that an earlier
/// command writes (see the module paragraph).
fn reads_after_writes(queued: &[Args]) -> Result<(), Reply> {
    let mut written: BTreeSet<&[u8]> = BTreeSet::new();
    for args in queued {
        // The router's failover marker wraps the command it marks.
        let inner = match args.first() {
            Some(t) if t.eq_ignore_ascii_case(b"TANDEM") && args.len() > 3 => &args[3..],
            _ => &args[..],
        };
        let Class::Keys { access, keys, .. } = command::classify(inner) else { continue };
        let blind = commands::queues_without_reading(&inner[0]);
        if let Some(k) = keys.iter().find(|k| !blind && written.contains(*k)) {
            return Err(Reply::Error(format!(
                "EXECABORT Transaction discarded: '{}' reads `{}`, which an earlier command of the transaction writes; a transaction's reads see the records as they were before it",
                String::from_utf8_lossy(&inner[0]).to_lowercase(),
                String::from_utf8_lossy(k)
            )));
        }
        if access == Access::Write {
            written.extend(keys);
        }
    }
    Ok(())
}
