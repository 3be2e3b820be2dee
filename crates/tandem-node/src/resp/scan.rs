//! SCAN and DBSIZE over every entity type. Clients treat SCAN's cursor as a
//! number (redis-py parses it as one), while tandem's scans resume after a
//! record id, so a cursor is a random number naming `(entity, after id)` in
//! a bounded table shared by the region's connections: the oldest of
//! [`CURSORS_MAX`] cursors is forgotten first, and a forgotten cursor is an
//! error, never a silent restart. Every record present for the whole scan is
//! returned (ids are visited in order, a resumed scan starts after the last
//! id returned); keys are always `<entity>:<id>`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::codec::{Args, Reply};
use super::keys::{error_reply, glob, type_name};
use crate::node::Node;

/// Cursors kept per region.
pub const CURSORS_MAX: usize = 4096;
/// Records examined per SCAN call by default.
pub const COUNT_DEFAULT: usize = 10;

#[derive(Default)]
pub struct Cursors {
    open: BTreeMap<u64, (usize, String)>,
    order: VecDeque<u64>,
    next: u64,
}

impl Cursors {
    fn open(&mut self, at: (usize, String)) -> u64 {
        // Numbers that do not repeat soon and are not guessable in order.
        self.next = self.next.wrapping_add(0x9E37_79B9_7F4A_7C15) | 1;
        let n = self.next & (i64::MAX as u64);
        if self.order.len() == CURSORS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.open.remove(&old);
            }
        }
        self.open.insert(n, at);
        self.order.push_back(n);
        n
    }
}

pub async fn scan(
    node: &Arc<Node>,
    cursors: &Arc<Mutex<Cursors>>,
    args: &Args,
) -> Result<Reply, Reply> {
    let cursor: u64 = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let (mut pattern, mut count, mut kind) = (None, COUNT_DEFAULT, None);
    let mut opts = args[2..].chunks(2);
    for pair in opts.by_ref() {
        let [opt, value] = pair else { return Err(Reply::err("syntax error")) };
        match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                let max = node.config.node.scan_limit_max;
                count = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| Reply::err(format!("COUNT must be 1 to {max}")))?;
            }
            "TYPE" => kind = Some(String::from_utf8_lossy(value).to_ascii_lowercase()),
            _ => return Err(Reply::err("syntax error")),
        }
    }
    let (mut entity_index, mut after) = if cursor == 0 {
        (0, None)
    } else {
        let at = cursors.lock().expect("cursor lock").open.get(&cursor).cloned();
        let (e, a) =
            at.ok_or_else(|| Reply::err("invalid cursor: unknown or expired, start again from 0"))?;
        (e, Some(a))
    };
    let entities: Vec<(String, tandem_merge::MergeKind)> =
        node.config.entities.iter().map(|(n, c)| (n.clone(), c.merge)).collect();
    let mut keys = Vec::new();
    let mut examined = 0;
    let now_ms = node.now_ms();
    while examined < count && entity_index < entities.len() {
        let (entity, merge) = &entities[entity_index];
        let store = node.store.clone();
        let (e, a, limit) = (entity.clone(), after.clone(), count - examined);
        let page = tokio::task::spawn_blocking(move || store.scan(&e, a.as_deref(), limit))
            .await
            .map_err(|_| Reply::err("the scan failed"))?
            .map_err(|e| error_reply(&crate::writer::store_error(&e)))?;
        examined += page.len();
        let type_ok = kind.as_deref().is_none_or(|k| k == type_name(*merge));
        for (id, rec) in &page {
            let key = format!("{entity}:{id}");
            if type_ok
                && rec.state.is_live_at(now_ms)
                && pattern.as_deref().is_none_or(|p| glob(p, key.as_bytes()))
            {
                keys.push(Reply::bulk(key));
            }
        }
        if page.len() < limit {
            entity_index += 1;
            after = None;
        } else {
            after = page.last().map(|(id, _)| id.clone());
        }
    }
    let next = if entity_index >= entities.len() {
        0
    } else {
        let at = (entity_index, after.unwrap_or_default());
        cursors.lock().expect("cursor lock").open(at)
    };
    Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)]))
}

/// Records present (and not expired) in the region (a full pass over the store).
pub async fn count(node: &Arc<Node>) -> Result<i64, Reply> {
    let (store, config, now_ms) = (node.store.clone(), node.config.clone(), node.now_ms());
    tokio::task::spawn_blocking(move || {
        let mut n = 0i64;
        store
            .for_each(&mut |entity, _, rec| {
                let listed = config.entities.contains_key(entity);
                n += i64::from(listed && rec.state.is_live_at(now_ms));
            })
            .map(|()| n)
    })
    .await
    .map_err(|_| Reply::err("the count failed"))?
    .map_err(|e| error_reply(&crate::writer::store_error(&e)))
}
