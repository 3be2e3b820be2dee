//! What a sender serves: its own changes on the direct stream (filtered,
//! sealed, bounded), third regions' changes by forwarding.

mod support;

use std::collections::BTreeMap;

use support::{put, Region};
use tandem_engine::serve::ForwardAsk;
use tandem_engine::{Faults, LogPage, Path, Store};
use tandem_merge::Op;

fn eu_with_personal_data() -> Region {
    let west = Region::new("eu-west");
    west.register("alice", "eu-west");
    west.write("credential", "alice:pw", put("\"MARKER\"")).unwrap();
    west.write("article", "a", put("1")).unwrap();
    west
}

#[test]
fn the_direct_stream_serves_own_changes_the_peer_may_hold() {
    let west = eu_with_personal_data();
    let log = west.log();
    let to_us = west.engine.serve_direct("us-east", log.clone().into(), 0, 1 << 20);
    let ids: Vec<&str> = to_us.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["alice", "a"], "the credential is withheld");
    assert_eq!(to_us.next_seq, 3, "the batch covers what was skipped");
    assert_eq!(to_us.withheld, BTreeMap::from([("credential".to_owned(), 1)]));
    let to_eu = west.engine.serve_direct("eu-central", log.into(), 0, 1 << 20);
    assert_eq!(to_eu.entries.len(), 3);
    assert!(to_eu.withheld.is_empty());
}

#[test]
fn a_relayed_change_is_not_on_the_direct_stream() {
    let us = Region::new("us-east");
    us.write("article", "u", put("1")).unwrap();
    let west = Region::new("eu-west");
    west.apply("us-east", Path::Direct, us.log(), 1);
    let served = west.engine.serve_direct("eu-central", west.log().into(), 0, 1 << 20);
    assert!(served.entries.is_empty());
    assert_eq!(served.next_seq, 1);
}

#[test]
fn batches_are_bounded_in_bytes_but_always_carry_one_entry() {
    let west = Region::new("eu-west");
    for i in 0..10 {
        west.write("article", &format!("a{i}"), put(&format!("\"{}\"", "x".repeat(500)))).unwrap();
    }
    let log = west.log();
    let small = west.engine.serve_direct("eu-central", log.clone().into(), 0, 1);
    assert_eq!((small.entries.len(), small.next_seq), (1, 1));
    let some = west.engine.serve_direct("eu-central", log.into(), 0, 2_000);
    assert!(some.entries.len() > 1 && some.entries.len() < 10, "{}", some.entries.len());
    assert_eq!(some.next_seq, some.entries.last().unwrap().seq);
}

#[test]
fn a_declared_transfer_sends_a_sealed_copy_instead() {
    let mut config = tandem_config::Config::example();
    config.transfers.push(tandem_config::TransferConfig {
        from: "EU".into(),
        to: "US".into(),
        legal_basis: "SCC".into(),
        key_env: "K".into(),
    });
    let mut west = Region::with_config(config.clone(), "eu-west");
    let (sealer, missing) =
        tandem_engine::seal::Sealer::from_keys(&config, "EU", |_| Some("ab".repeat(32)));
    assert!(missing.is_empty());
    west.engine.sealer = sealer;
    west.register("alice", "eu-west");
    west.write("credential", "alice:pw", put("\"MARKER\"")).unwrap();
    let served = west.engine.serve_direct("us-east", west.log().into(), 0, 1 << 20);
    assert_eq!(served.entries.len(), 2);
    let sealed = &served.entries[1];
    assert_eq!(sealed.entity, tandem_engine::seal::SEALED_ENTITY);
    assert!(!format!("{sealed:?}").contains("MARKER") && !sealed.id.contains("alice"));
    assert!(served.withheld.is_empty(), "sent sealed, not withheld");
}

#[test]
fn a_broken_filter_leaks_personal_data() {
    let mut west = eu_with_personal_data();
    west.engine.faults = Faults { skip_residency_when_serving: true, ..Faults::NONE };
    let served = west.engine.serve_direct("us-east", west.log().into(), 0, 1 << 20);
    assert!(served.entries.iter().any(|e| e.entity == "credential"));
}

#[test]
fn forwarding_serves_third_regions_changes_the_peer_lacks_once_they_are_old_enough() {
    let us = Region::new("us-east");
    us.write("article", "u1", put("1")).unwrap();
    us.write("article", "u2", put("2")).unwrap();
    let central = Region::new("eu-central");
    central.apply("us-east", Path::Direct, us.log(), 2);
    central.write("likes", "own", Op::Incr(1)).unwrap();
    let log = central.log();
    let logged = log[0].logged_at_ms;
    let have = BTreeMap::new();
    let ask = |have, now_ms, limit| ForwardAsk { have, after: 0, limit, now_ms, delay_ms: 500 };
    let young = central.engine.serve_forward(
        "eu-west",
        ask(&have, logged + 10, 10),
        log.clone().into(),
        1 << 20,
    );
    assert!(young.entries.is_empty() && young.next_seq == 0, "wait for the direct path");
    let old = central.engine.serve_forward(
        "eu-west",
        ask(&have, logged + 600, 10),
        log.clone().into(),
        1 << 20,
    );
    let ids: Vec<&str> = old.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2"], "not the sender's own");
    assert_eq!(old.next_seq, 3);
    let limited = central.engine.serve_forward(
        "eu-west",
        ask(&have, logged + 600, 1),
        log.clone().into(),
        1 << 20,
    );
    assert_eq!((limited.entries.len(), limited.next_seq), (1, 1));
    let has_u1 = BTreeMap::from([("us-east".to_owned(), 1u64)]);
    let rest = central.engine.serve_forward(
        "eu-west",
        ask(&has_u1, logged + 600, 10),
        log.clone().into(),
        1 << 20,
    );
    assert_eq!(rest.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["u2"]);
    let to_origin =
        central.engine.serve_forward("us-east", ask(&have, logged + 600, 10), log.into(), 1 << 20);
    assert!(to_origin.entries.is_empty(), "a region has its own changes");
}

#[test]
fn an_empty_page_keeps_the_cursor_where_it_was() {
    let west = Region::new("eu-west");
    assert_eq!(
        west.engine.serve_direct("eu-central", LogPage::default(), 41, 1 << 20).next_seq,
        41
    );
    let have = BTreeMap::new();
    let ask = ForwardAsk { have: &have, after: 17, limit: 10, now_ms: 0, delay_ms: 0 };
    assert_eq!(
        west.engine.serve_forward("eu-central", ask, LogPage::default(), 1 << 20).next_seq,
        17
    );
}

#[test]
fn only_own_changes_count_as_withheld_and_only_they_are_sealed() {
    let mut config = tandem_config::Config::example();
    config.transfers.push(tandem_config::TransferConfig {
        from: "EU".into(),
        to: "US".into(),
        legal_basis: "SCC".into(),
        key_env: "K".into(),
    });
    let central = Region::with_config(config.clone(), "eu-central");
    central.register("alice", "eu-west");
    central.write_as("credential", "alice:pw", put("\"x\""), Some("eu-west")).unwrap();
    let mut west = Region::with_config(config.clone(), "eu-west");
    west.engine.sealer =
        tandem_engine::seal::Sealer::from_keys(&config, "EU", |_| Some("ab".repeat(32))).0;
    west.apply("eu-central", Path::Direct, central.log(), 2);
    // Relayed personal data is neither sent, nor sealed, nor counted as withheld here.
    let served = west.engine.serve_direct("us-east", west.log().into(), 0, 1 << 20);
    assert!(served.entries.iter().all(|e| e.entity == "_subject"), "{:?}", served.entries);
    assert!(served.withheld.is_empty());
    // An own change the peer may hold goes in clear, even with a transfer declared.
    west.write("article", "a", put("1")).unwrap();
    let to_eu = west.engine.serve_direct("eu-central", west.log().into(), 0, 1 << 20);
    assert!(to_eu.entries.iter().all(|e| e.entity != tandem_engine::seal::SEALED_ENTITY));
}

#[test]
fn forward_batches_are_bounded_in_bytes_too() {
    let us = Region::new("us-east");
    for i in 0..6 {
        us.write("article", &format!("u{i}"), put(&format!("\"{}\"", "y".repeat(400)))).unwrap();
    }
    let central = Region::new("eu-central");
    central.apply("us-east", Path::Direct, us.log(), 6);
    let have = BTreeMap::new();
    let ask = ForwardAsk { have: &have, after: 0, limit: 100, now_ms: u64::MAX / 2, delay_ms: 0 };
    let one = central.engine.serve_forward("eu-west", ask, central.log().into(), 1);
    assert_eq!((one.entries.len(), one.next_seq), (1, 1), "always one entry");
    let some = central.engine.serve_forward("eu-west", ask, central.log().into(), 1_500);
    assert!(some.entries.len() > 1 && some.entries.len() < 6, "{}", some.entries.len());
}

/// Read by head (`log_page` with the engine's scans), a sender serves
/// exactly what it serves from the whole log, and covers as much of it.
#[test]
fn pages_read_by_head_serve_what_the_whole_log_serves() {
    let us = Region::new("us-east");
    let central = Region::new("eu-central");
    for i in 0..6 {
        us.write("article", &format!("u{i}"), put("1")).unwrap();
        central.write("likes", &format!("c{i}"), Op::Incr(1)).unwrap();
    }
    central.register("alice", "eu-central");
    central.write("credential", "alice:pw", put("\"s\"")).unwrap();
    central.apply("us-east", Path::Direct, us.log(), 6);
    central.write("likes", "late", Op::Incr(1)).unwrap();
    let log = central.log();
    let store = &central.store;
    for peer in ["eu-west", "us-east"] {
        for after in [0, 3, 8, log.len() as u64] {
            for limit in [1, 2, 100] {
                let scanned =
                    store.log_page(after, 100, limit, &mut central.engine.direct_scan()).unwrap();
                let whole: Vec<_> = log.iter().filter(|e| e.seq > after).cloned().collect();
                let by_head = central.engine.serve_direct(peer, scanned, after, 1 << 20);
                let all = central.engine.serve_direct(peer, whole.into(), after, 1 << 20);
                let at = format!("{peer} after {after} limit {limit}");
                if limit == 100 {
                    assert_eq!((&by_head.entries, by_head.next_seq), (&all.entries, all.next_seq));
                    continue;
                }
                // A short page is a prefix, and covers exactly up to its last entry.
                assert_eq!(by_head.entries, all.entries[..by_head.entries.len()], "{at}");
                assert_eq!(by_head.entries.len(), limit.min(all.entries.len()), "{at}");
                if let Some(last) = by_head.entries.last() {
                    assert_eq!(by_head.next_seq, last.seq, "{at}");
                }
            }
        }
    }
    let logged = log.last().unwrap().logged_at_ms;
    let have = BTreeMap::new();
    for (now_ms, limit) in [(logged, 10), (logged + 600, 10), (logged + 600, 2)] {
        let ask = ForwardAsk { have: &have, after: 0, limit, now_ms, delay_ms: 500 };
        let limit = central.engine.forward_limit(&ask);
        let scanned = store
            .log_page(0, 100, limit, &mut central.engine.forward_scan("eu-west", ask))
            .unwrap();
        let by_head = central.engine.serve_forward("eu-west", ask, scanned, 1 << 20);
        let all = central.engine.serve_forward("eu-west", ask, log.clone().into(), 1 << 20);
        assert_eq!((by_head.entries, by_head.next_seq), (all.entries, all.next_seq), "{now_ms}");
    }
}
