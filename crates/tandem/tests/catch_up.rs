//! Regions that fall behind catch up (DESIGN.md invariant 2): an isolated
//! region and a region killed with SIGKILL (receiver or writer) under load
//! catch up without losing or duplicating an acknowledged write, as the
//! kit's acknowledged-write checker judges at every region; the lag an
//! isolated region reports grows, then recovers. Each test runs its own
//! deployment, so the tests run in parallel.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::acked::{self, History, Key, Outcome, Write};
use tandem_testkit::config::{ALL, EU};
use tandem_testkit::{wait_until, Deployment, Tandem, CONVERGE_TIMEOUT};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn isolated_region_catches_up_without_loss_or_duplication() {
    let started = Instant::now();
    let d = up();
    d.admin("us-east", "isolate");
    let stop = AtomicBool::new(false);
    let acked: Vec<Mutex<Acked>> = ALL.iter().map(|_| Mutex::new(Acked::default())).collect();
    let (lag_early, lag_late) = std::thread::scope(|s| {
        for (region, acked) in ALL.iter().zip(&acked) {
            let (d, stop) = (&d, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    d.op(region, "likes", "iso", json!({"op": "incr", "by": 1}));
                    acked.lock().unwrap().likes += 1;
                    d.op(region, "page_views", "iso", json!({"op": "incr", "by": 2}));
                    acked.lock().unwrap().page_views += 2;
                    let element = format!("{region}-{i}");
                    d.op(region, "tags", "iso", json!({"op": "add", "elements": [element]}));
                    acked.lock().unwrap().tags.push(element);
                    d.put_record(region, "article", &format!("iso-{region}"), json!(i));
                    acked.lock().unwrap().last_article = Some(i);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        // eu-west's writes reach eu-central, not the isolated us-east.
        std::thread::sleep(Duration::from_millis(300));
        d.put_record("eu-west", "article", "probe", json!("while us-east is isolated"));
        d.wait_value(
            &["eu-central"],
            "article",
            "probe",
            Some(&json!("while us-east is isolated")),
            CONVERGE_TIMEOUT,
        );
        let lag_early = credentials_lag(&d, "us-east");
        std::thread::sleep(Duration::from_millis(1500));
        let lag_late = credentials_lag(&d, "us-east");
        assert_eq!(
            d.value("us-east", "article", "probe"),
            None,
            "an isolated region received a change"
        );
        (lag_early, lag_late)
    });
    assert!(
        lag_late > lag_early && lag_late >= 1.5,
        "us-east's lag did not grow: {lag_early} then {lag_late}"
    );
    let acked: Vec<Acked> = acked.into_iter().map(|m| m.into_inner().unwrap()).collect();
    let (west, central, east) = (&acked[0], &acked[1], &acked[2]);
    // Before rejoining: us-east counts only its own increments, the EU regions
    // only theirs.
    assert_eq!(d.value("us-east", "likes", "iso"), Some(json!(east.likes)));
    d.wait_value(&EU, "likes", "iso", Some(&json!(west.likes + central.likes)), CONVERGE_TIMEOUT);

    d.admin("us-east", "rejoin");
    let t = Instant::now();
    let likes: u64 = acked.iter().map(|a| a.likes).sum();
    let page_views: u64 = acked.iter().map(|a| a.page_views).sum();
    let tags: Vec<String> = acked.iter().flat_map(|a| a.tags.clone()).collect();
    d.wait_value(&ALL, "likes", "iso", Some(&json!(likes)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "page_views", "iso", Some(&json!(page_views)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "tags", "iso", Some(&set_of(&tags)), CONVERGE_TIMEOUT);
    for (region, a) in ALL.iter().zip(&acked) {
        let last = a.last_article.expect("every region wrote");
        d.wait_value(
            &ALL,
            "article",
            &format!("iso-{region}"),
            Some(&json!(last)),
            CONVERGE_TIMEOUT,
        );
    }
    d.wait_value(
        &ALL,
        "article",
        "probe",
        Some(&json!("while us-east is isolated")),
        CONVERGE_TIMEOUT,
    );
    for entity in ["likes", "page_views", "tags", "article"] {
        d.wait_converged(entity, &ALL, CONVERGE_TIMEOUT);
    }
    let caught_up_in = t.elapsed();
    assert!(
        wait_until(CONVERGE_TIMEOUT, || credentials_lag(&d, "us-east") < 1.0),
        "us-east's lag did not recover: {}",
        credentials_lag(&d, "us-east")
    );
    eprintln!(
        "isolated_region_catches_up: {likes} likes, {} elements; lag {lag_early:.2}s -> {lag_late:.2}s; caught up in {caught_up_in:?}; total {:?}",
        tags.len(),
        started.elapsed()
    );
}

#[test]
fn kill9_mid_replication_loses_nothing() {
    let started = Instant::now();
    let d = up();

    // The receiver dies mid-stream and comes back: it ends with exactly what
    // eu-west acknowledged, nothing lost, nothing applied twice.
    let receiver = with_load(&d, "k9a", |more_acked| {
        more_acked(20);
        d.kill("us-east");
        more_acked(20);
        d.start_region("us-east");
        more_acked(20);
    });
    let (likes, tags, article) =
        (Key::new("likes", "k9a"), Key::new("tags", "k9a"), Key::new("article", "k9a"));
    let (receiver_likes, receiver_tags) =
        (Tally::of(&receiver, &likes), Tally::of(&receiver, &tags));
    assert!(
        receiver_likes.unknown == 0 && receiver_tags.unknown == 0 && receiver.refused() == 0,
        "eu-west failed writes while us-east was killed: {receiver_likes:?} {receiver_tags:?}"
    );
    let t = Instant::now();
    let receiver_article = Tally::of(&receiver, &article);
    d.wait_value(&ALL, "likes", "k9a", Some(&json!(receiver_likes.acked)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "tags", "k9a", Some(&set_of(&receiver_tags.elements)), CONVERGE_TIMEOUT);
    d.wait_value(&ALL, "article", "k9a", Some(&json!(receiver_article.last)), CONVERGE_TIMEOUT);
    let receiver_caught_up = t.elapsed();

    // The writer dies mid-load and comes back: every acknowledged write is
    // everywhere; an unanswered one may or may not have landed.
    let writer = with_load(&d, "k9b", |more_acked| {
        more_acked(20);
        d.kill("eu-west");
        std::thread::sleep(Duration::from_millis(300));
        d.start_region("eu-west");
        more_acked(20);
    });
    let t = Instant::now();
    for entity in ["likes", "tags", "article"] {
        d.wait_converged(entity, &ALL, CONVERGE_TIMEOUT);
    }
    let (likes, tags, article) =
        (Key::new("likes", "k9b"), Key::new("tags", "k9b"), Key::new("article", "k9b"));
    let writer_likes = Tally::of(&writer, &likes);
    assert!(
        wait_until(CONVERGE_TIMEOUT, || lost(&d, &writer, &likes).is_empty()),
        "likes/k9b outside [{}, {}]: {:?}",
        writer_likes.acked,
        writer_likes.acked + writer_likes.unknown,
        lost(&d, &writer, &likes)
    );
    let writer_tags = Tally::of(&writer, &tags);
    assert!(
        wait_until(CONVERGE_TIMEOUT, || lost(&d, &writer, &tags).is_empty()),
        "tags/k9b lost an acknowledged element or holds one never written: acked {:?}, unknown {}, {:?}",
        writer_tags.elements,
        writer_tags.unknown,
        lost(&d, &writer, &tags)
    );
    let writer_article = Tally::of(&writer, &article);
    let last_acked = writer_article.last.expect("an acknowledged article write");
    for region in ALL {
        let v = d.value(region, "article", "k9b").and_then(|v| v.as_u64()).expect("article/k9b");
        let lost_here: Vec<_> =
            lost(&d, &writer, &article).into_iter().filter(|l| l.region == region).collect();
        assert!(
            v >= last_acked && writer_article.attempted.contains(&v) && lost_here.is_empty(),
            "article/k9b at {region} is {v}; last acknowledged {last_acked}: {lost_here:?}"
        );
    }
    for entity in ["likes", "tags", "article"] {
        d.wait_converged(entity, &ALL, CONVERGE_TIMEOUT);
    }
    eprintln!(
        "kill9_mid_replication: receiver kill: {} writes, caught up in {receiver_caught_up:?}; writer kill: {} acked, {} unknown, {} refused, converged in {:?}; total {:?}",
        receiver_likes.acked,
        writer_likes.acked,
        writer_likes.unknown,
        writer.refused(),
        t.elapsed(),
        started.elapsed()
    );
}

/// The writer's commits are pipelined (a batch is decided while the one
/// before it is in its fsync), and replication must still never run ahead
/// of the disk: eu-west is killed under 16 concurrent clients, and at that
/// moment no peer holds a position in eu-west's log beyond what eu-west has
/// after its restart (a peer ahead would skip the numbers eu-west hands out
/// again); every acknowledged write is then at every region.
#[test]
fn kill9_under_pipelined_load_leaves_no_peer_ahead_of_the_disk() {
    let d = up();
    let stop = AtomicBool::new(false);
    let history = Mutex::new(History::new());
    let acked = || history.lock().unwrap().acked();
    let peers_cursor = std::thread::scope(|s| {
        for t in 0..16 {
            let (d, stop, history) = (&d, &stop, &history);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("pipe{t}-{}", i % 50);
                    let w = if i.is_multiple_of(2) {
                        Write::Incr(1)
                    } else {
                        Write::Add(format!("t{t}e{i}"))
                    };
                    let entity = if i.is_multiple_of(2) { "likes" } else { "tags" };
                    let (method, path, body) = acked::request_of(entity, &key, Some(&w));
                    let url = format!("{}{path}", d.url("eu-west"));
                    let outcome = acked::outcome_of(&d.try_call(method, &url, body.as_ref(), &[]));
                    let shape = acked::shape_of(d.config(), entity);
                    let failed = matches!(outcome, Outcome::Refused | Outcome::Unknown);
                    history.lock().unwrap().record(Key::new(entity, &key), shape, w, outcome);
                    if failed {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        assert!(
            wait_until(CONVERGE_TIMEOUT, || acked() >= 2_000),
            "eu-west acknowledged {}",
            acked()
        );
        d.kill("eu-west");
        // What the peers hold of eu-west's log (once what was on the wire
        // has landed), before it comes back.
        std::thread::sleep(Duration::from_millis(500));
        let cursors: Vec<(String, u64)> = ["eu-central", "us-east"]
            .iter()
            .map(|p| (p.to_string(), cursor_of(&d, p, "eu-west")))
            .collect();
        stop.store(true, Ordering::SeqCst);
        cursors
    });
    d.start_region("eu-west");
    let durable = d.status("eu-west")["log"]["last_seq"].as_u64().expect("last_seq");
    for (peer, cursor) in &peers_cursor {
        assert!(
            cursor <= &durable,
            "{peer} holds eu-west's log up to {cursor}, eu-west has {durable} after the crash"
        );
    }
    let history = history.into_inner().unwrap();
    for entity in ["likes", "tags"] {
        d.wait_converged(entity, &ALL, CONVERGE_TIMEOUT);
    }
    let lost = d.check_acked(&history);
    assert!(lost.is_empty(), "{} acknowledged writes lost, e.g. {:?}", lost.len(), lost.first());
    eprintln!(
        "pipelined kill: {} acknowledged writes, eu-west durable to {durable} after restart, peers at {peers_cursor:?}",
        history.acked()
    );
}

/// The position in `of`'s log that `region` has applied.
fn cursor_of(d: &Deployment, region: &str, of: &str) -> u64 {
    let status = d.status(region);
    let peers = status["peers"].as_array().expect("peers");
    let p = peers.iter().find(|p| p["peer"] == of).expect("the peer");
    p["cursor"].as_u64().expect("cursor")
}

fn set_of<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    let sorted: BTreeSet<&String> = items.into_iter().collect();
    json!(sorted)
}

/// The largest `credentials` lag a region reports over its peers.
fn credentials_lag(d: &Deployment, region: &str) -> f64 {
    d.status(region)["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["classes"]["credentials"]["lag_seconds"].as_f64().expect("lag_seconds"))
        .fold(0.0, f64::max)
}

/// Sets a flag when dropped, so that a panicking test still stops its load
/// threads (a scope waits for them).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What one writer thread got acknowledged.
#[derive(Debug, Default)]
struct Acked {
    likes: u64,
    page_views: u64,
    tags: Vec<String>,
    last_article: Option<u64>,
}

/// Write to eu-west until `stop` (an increment, an element, a value, each
/// answered before the next is sent), recording each write in `history`.
fn write_to_eu_west(d: &Deployment, key: &str, stop: &AtomicBool, history: &Mutex<History>) {
    let writes = |i: u64| {
        [
            ("likes", Write::Incr(1)),
            ("tags", Write::Add(format!("e{i}"))),
            ("article", Write::Put(json!(i))),
        ]
    };
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for (entity, w) in writes(i) {
            let (method, path, body) = acked::request_of(entity, key, Some(&w));
            let url = format!("{}{path}", d.url("eu-west"));
            let outcome = acked::outcome_of(&d.try_call(method, &url, body.as_ref(), &[]));
            let shape = acked::shape_of(d.config(), entity);
            history.lock().unwrap().record(Key::new(entity, key), shape, w, outcome);
        }
        let refused = history.lock().unwrap().refused();
        i += 1;
        // Pace the load; back off a little while the region is down.
        std::thread::sleep(Duration::from_millis(if refused > 0 { 20 } else { 5 }));
    }
}

/// Run the eu-west writer while `fault` runs; answers its history.
/// `fault` gets a function that waits for `n` more acknowledged increments,
/// so that each fault lands mid-load however slow the machine is.
fn with_load(d: &Deployment, key: &str, fault: impl FnOnce(&dyn Fn(u64))) -> History {
    let stop = AtomicBool::new(false);
    let history = Mutex::new(History::new());
    let likes = Key::new("likes", key);
    std::thread::scope(|s| {
        s.spawn(|| write_to_eu_west(d, key, &stop, &history));
        let _stop = StopOnDrop(&stop);
        let more_acked = |n: u64| {
            let target = Tally::of(&history.lock().unwrap(), &likes).acked + n;
            let reached = wait_until(CONVERGE_TIMEOUT, || {
                Tally::of(&history.lock().unwrap(), &likes).acked >= target
            });
            assert!(
                reached,
                "eu-west acknowledged fewer than {n} writes: {:?}",
                Tally::of(&history.lock().unwrap(), &likes)
            );
        };
        fault(&more_acked);
    });
    history.into_inner().unwrap()
}

/// What the history says of one record written by one client: acknowledged
/// increments, elements and the last acknowledged value; writes of unknown
/// outcome; every value that was attempted and may have landed.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    unknown: u64,
    elements: Vec<String>,
    last: Option<u64>,
    attempted: Vec<u64>,
}

impl Tally {
    fn of(history: &History, key: &Key) -> Tally {
        let mut t = Tally::default();
        for w in history.writes(key) {
            let acked = matches!(w.outcome, Outcome::Acked { .. });
            let maybe = acked || w.outcome == Outcome::Unknown;
            t.unknown += u64::from(w.outcome == Outcome::Unknown);
            match &w.write {
                Write::Incr(by) if acked => t.acked += by,
                Write::Add(e) if acked => t.elements.push(e.clone()),
                Write::Put(v) if maybe => {
                    let v = v.as_u64().expect("a number");
                    t.attempted.push(v);
                    if acked {
                        t.last = Some(v);
                    }
                }
                _ => {}
            }
        }
        t
    }
}

/// What the kit's checker finds missing of one record's acknowledged writes,
/// at every region.
fn lost(d: &Deployment, history: &History, key: &Key) -> Vec<acked::Lost> {
    d.check_acked(&history.only(key))
}

/// The example deployment under `tandem up`, without the router.
fn up() -> Deployment {
    TANDEM.deployment().prefix("tandem-repl-").without_router().start()
}
