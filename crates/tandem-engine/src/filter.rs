//! Which changes a sender serves to which receiver. Pure functions of the
//! config and the log entry, so they can be tested exhaustively:
//!
//! - residency: a personal record is served only to regions of the
//!   jurisdiction it was written in (a node accepts a personal write only in
//!   its subject's jurisdiction, so the origin's jurisdiction is the record's);
//! - direct stream: a sender streams the changes that originated with it;
//! - forwarding: a sender forwards changes of third regions that the receiver
//!   does not already have (per-origin high-water marks), once they are older
//!   than the forward delay, so that in steady state every change crosses each
//!   link once, directly from its origin.

use std::collections::BTreeMap;

use crate::model::{LogEntry, LogHead};
use tandem_config::Config;

/// Why a change is not served to a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Personal data of another jurisdiction.
    Residency,
}

/// Whether `receiver` may hold the record of this log entry.
pub fn may_hold(config: &Config, receiver: &str, entry: &LogEntry) -> Result<(), Withheld> {
    may_hold_change(config, receiver, &entry.entity, &entry.origin)
}

/// Whether `receiver` may hold a record of `entity` changed at `origin`.
pub fn may_hold_change(
    config: &Config,
    receiver: &str,
    entity: &str,
    origin: &str,
) -> Result<(), Withheld> {
    if entity == crate::seal::SEALED_ENTITY {
        // Sealed copies are for the other jurisdictions; the source has the data.
        return match (config.jurisdiction_of(origin), config.jurisdiction_of(receiver)) {
            (Some(h), Some(t)) if h != t => Ok(()),
            _ => Err(Withheld::Residency),
        };
    }
    let Some(entity) = config.entity(entity) else {
        // Tandem's own entities (the subject registry) go everywhere.
        return Ok(());
    };
    if !entity.personal {
        return Ok(());
    }
    let home = config.jurisdiction_of(origin);
    let there = config.jurisdiction_of(receiver);
    match (home, there) {
        (Some(h), Some(t)) if h == t => Ok(()),
        _ => Err(Withheld::Residency),
    }
}

/// Whether a change belongs in the direct stream from `sender` to `receiver`.
pub fn direct(config: &Config, sender: &str, receiver: &str, entry: &LogEntry) -> bool {
    entry.origin == sender && may_hold(config, receiver, entry).is_ok()
}

/// What to do with one log entry when serving a forward request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardDecision {
    Send,
    Skip,
    /// Too recent to forward yet: stop here and let the direct path deliver it.
    Wait,
}

pub fn forward(
    config: &Config,
    sender: &str,
    receiver: &str,
    have: &BTreeMap<String, u64>,
    entry: &LogHead<'_>,
    now_ms: u64,
    forward_delay_ms: u64,
) -> ForwardDecision {
    if entry.origin == sender {
        return ForwardDecision::Skip;
    }
    // A receiver has its own changes, except after a restore from a backup:
    // then it says how far its own changes go, and the newer ones come back.
    let covered = match have.get(entry.origin) {
        Some(&hwm) => entry.origin_seq <= hwm,
        None => entry.origin == receiver,
    };
    if covered {
        return ForwardDecision::Skip;
    }
    if may_hold_change(config, receiver, entry.entity, entry.origin).is_err() {
        return ForwardDecision::Skip;
    }
    if entry.logged_at_ms.saturating_add(forward_delay_ms) > now_ms {
        return ForwardDecision::Wait;
    }
    ForwardDecision::Send
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_clock::Hlc;
    use tandem_merge::{MergeKind, Op, State};

    fn entry(entity: &str, id: &str, origin: &str, origin_seq: u64, logged_at_ms: u64) -> LogEntry {
        let mut state = State::new(MergeKind::Lww);
        state.apply(&Op::Put("1".into()), origin, Hlc::new(1, 0)).unwrap();
        LogEntry {
            seq: 1,
            origin: origin.into(),
            origin_seq,
            committed_at_ms: logged_at_ms,
            logged_at_ms,
            entity: entity.into(),
            id: id.into(),
            state,
        }
    }

    #[test]
    fn personal_records_stay_in_their_jurisdiction() {
        let c = Config::example();
        let eu_personal = entry("credential", "alice:pw", "eu-west", 1, 0);
        assert_eq!(may_hold(&c, "eu-central", &eu_personal), Ok(()));
        assert_eq!(may_hold(&c, "us-east", &eu_personal), Err(Withheld::Residency));
        let us_personal = entry("profile", "bob:main", "us-east", 1, 0);
        assert_eq!(may_hold(&c, "eu-west", &us_personal), Err(Withheld::Residency));
        let public = entry("article", "a", "eu-west", 1, 0);
        assert_eq!(may_hold(&c, "us-east", &public), Ok(()));
        let subject = entry("_subject", "alice", "eu-west", 1, 0);
        assert_eq!(may_hold(&c, "us-east", &subject), Ok(()));
        // Forwarding never launders residency: an EU record forwarded by an EU
        // region is still withheld from the US.
        assert!(!direct(&c, "eu-central", "us-east", &eu_personal));
        let have = BTreeMap::new();
        assert_eq!(
            forward(&c, "eu-central", "us-east", &have, &eu_personal.head(), 10_000, 100),
            ForwardDecision::Skip
        );
    }

    #[test]
    fn sealed_copies_go_only_to_other_jurisdictions() {
        let c = Config::example();
        let sealed = entry(crate::seal::SEALED_ENTITY, "h", "eu-west", 1, 0);
        assert_eq!(may_hold(&c, "us-east", &sealed), Ok(()));
        assert_eq!(may_hold(&c, "eu-central", &sealed), Err(Withheld::Residency));
    }

    #[test]
    fn forwarding_skips_what_the_receiver_has_and_waits_for_the_direct_path() {
        let c = Config::example();
        let e = entry("article", "a", "us-east", 7, 1_000);
        let mut have = BTreeMap::new();
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &have, &e.head(), 1_050, 100),
            ForwardDecision::Wait
        );
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &have, &e.head(), 1_100, 100),
            ForwardDecision::Send
        );
        have.insert("us-east".to_string(), 7);
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &have, &e.head(), 1_100, 100),
            ForwardDecision::Skip
        );
        // Own and receiver-origin changes never go through forwarding.
        assert_eq!(
            forward(&c, "us-east", "eu-west", &BTreeMap::new(), &e.head(), 9_999, 0),
            ForwardDecision::Skip
        );
        assert_eq!(
            forward(&c, "eu-central", "us-east", &BTreeMap::new(), &e.head(), 9_999, 0),
            ForwardDecision::Skip
        );
        assert!(direct(&c, "us-east", "eu-west", &e));
        assert!(!direct(&c, "eu-central", "eu-west", &e));
        // A receiver restored from a backup gets its own newer changes back.
        let own = entry("article", "b", "eu-west", 9, 0);
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &BTreeMap::new(), &own.head(), 9_999, 0),
            ForwardDecision::Skip
        );
        let restored = BTreeMap::from([("eu-west".to_string(), 5u64)]);
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &restored, &own.head(), 9_999, 0),
            ForwardDecision::Send
        );
        let current = BTreeMap::from([("eu-west".to_string(), 9u64)]);
        assert_eq!(
            forward(&c, "eu-central", "eu-west", &current, &own.head(), 9_999, 0),
            ForwardDecision::Skip
        );
    }
}
