//! Data residency in the bytes, proven end to end on the real binary: after a
//! long mixed workload with failovers no EU personal value or record key is in
//! us-east's files, replication traffic, audit log or log lines; a declared
//! transfer basis moves personal data only as ciphertext; and `tandem audit
//! verify` catches a tampered audit log. Each test runs its own `tandem up`
//! deployment of the example config (router included) on free loopback ports.
//!
//! The two tests that search the replication traffic for markers run with
//! `--insecure`, so that the bytes on the wire are the plaintext the senders
//! filtered: with TLS on (the default) the links carry only TLS records, and
//! `tls_wire.rs` shows that no marker is readable there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::config::{ALL, EU};
use tandem_testkit::http::assert_routed;
use tandem_testkit::search::{files_under, find_in_files, unique_tag};
use tandem_testkit::{
    metrics, wait_until, Builder, Deployment, Method, Output, Tandem, CONVERGE_TIMEOUT,
};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// Writer threads of the mixed workload of the residency sweep.
const WORKERS: usize = 4;
/// Length of the mixed workload.
const WORKLOAD: Duration = Duration::from_secs(12);
/// The transfer key of the sealed-transfer test (32 bytes as 64 hex digits).
const TRANSFER_KEY: &str = "8f4e2a9c1b7d3e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
const TRANSFER_KEY_ENV: &str = "TANDEM_TRANSFER_KEY_EU_US";

#[test]
fn no_eu_personal_data_in_us_after_mixed_workload_with_failovers() {
    let d = deployment().insecure().capture().start();
    let tag = unique_tag();
    for i in 0..4 {
        d.register(&format!("eus{i}"), EU[i % 2]);
    }
    for i in 0..2 {
        d.register(&format!("uss{i}"), "us-east");
    }
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let deadline = started + WORKLOAD;
    let steps = std::thread::scope(|s| {
        for worker in 0..WORKERS {
            let (d, tag, tally) = (&d, tag.as_str(), &tally);
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((worker as u64 + 1) * 0x1000_0001));
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    workload_step(d, tag, worker, n, &mut rng, tally);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        chaos(&d, deadline)
    });
    let tally = tally.into_inner().expect("tally");
    eprintln!(
        "mixed workload: {:?}, fault steps {steps:?}\nanswers: {:#?}",
        started.elapsed(),
        tally.answers
    );
    assert!(tally.violations.is_empty(), "the router misrouted:\n{}", tally.violations.join("\n"));
    assert!(tally.eu_acked.len() >= 50, "too few EU writes acknowledged: {}", tally.eu_acked.len());
    let failovers =
        metrics::sum(&d.metrics_at(d.router()), "router_requests_total", &[("route", "failover")]);
    assert!(failovers >= 1.0, "the workload never failed over");

    // Let the EU converge, so the EU markers are in eu-central's store.
    for entity in ["credential", "profile", "cart", "balance", "article"] {
        let regions: &[&str] = if entity == "article" { &ALL } else { &EU };
        let equal = || {
            let digests: Vec<_> = regions.iter().map(|r| d.digest(r, entity)).collect();
            digests.windows(2).all(|w| w[0] == w[1])
        };
        assert!(wait_until(CONVERGE_TIMEOUT, equal), "{entity} did not converge");
    }
    // Through the API: us-east holds personal records of US subjects only.
    for entity in ["credential", "profile", "cart", "balance"] {
        let r = d.direct(
            Method::GET,
            "us-east",
            &format!("/v1/records/{entity}?limit=1000"),
            None,
            &[],
        );
        assert_eq!(r.status, 200, "{r}");
        for rec in r.body["records"].as_array().expect("records") {
            let id = rec["id"].as_str().expect("id");
            assert!(id.starts_with("uss"), "us-east holds {entity}/{id}");
        }
    }
    let us_audit_api = serde_json::to_string(&d.audit("us-east")).expect("audit encodes");
    d.stop();

    let needles = vec![format!("EUVAL{tag}"), format!("EUKEY{tag}")];
    // us-east: every file of its data directory, every byte of every link
    // into or out of it, its audit log as served, and its log lines.
    let us_files = files_under(&d.data_dir().join("us-east"));
    let names: Vec<String> = us_files.iter().map(|p| p.display().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with("audit.jsonl")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("audit.head")), "{names:?}");
    let us_links = capture_files(&d, |n| n.ends_with("-us-east.bin") || n.starts_with("us-east-"));
    assert_eq!(us_links.len(), 4, "{us_links:?}");
    let mut searched = us_files.clone();
    searched.extend(us_links.iter().cloned());
    let hits = find_in_files(&searched, &needles);
    assert!(hits.is_empty(), "EU personal data outside the EU: {hits:?}");
    for n in &needles {
        assert!(!us_audit_api.contains(n.as_str()), "{n} in us-east's /v1/audit");
    }
    let log = d.log_text();
    for line in log.lines().filter(|l| l.starts_with("[us-east]")) {
        assert!(!needles.iter().any(|n| line.contains(n.as_str())), "in us-east's log: {line}");
    }

    // Positive controls: the same search finds what must be there.
    let us_markers = vec![format!("USVAL{tag}"), format!("PUBVAL{tag}")];
    let found = find_in_files(&us_files, &us_markers);
    assert!(
        found.iter().any(|(_, n)| n == &us_markers[0]),
        "US values not found in us-east's files"
    );
    let inbound = capture_files(&d, |n| n.ends_with("-us-east.bin"));
    let found = find_in_files(&inbound, &us_markers[1..]);
    assert!(!found.is_empty(), "public values not found in us-east's inbound captures");
    let mut eu_side = files_under(&d.data_dir().join("eu-central"));
    eu_side.extend(capture_files(&d, |n| n == "eu-west-eu-central.bin"));
    let found = find_in_files(&eu_side, &needles);
    assert!(found.len() >= 2, "EU markers not found on the EU side: {found:?}");
    let sample: Vec<String> = tally.eu_acked.iter().take(5).cloned().collect();
    assert!(
        !find_in_files(&eu_side, &sample).is_empty(),
        "no acknowledged EU value found on the EU side"
    );

    // The audit logs: eu-west withheld personal records from us-east and never
    // served it any; every chain verifies.
    let eu_west = audit_file(&d, "eu-west");
    let to_us: Vec<&Value> = eu_west.iter().filter(|e| e["peer"] == "us-east").collect();
    let withheld: u64 = to_us
        .iter()
        .flat_map(|e| e["withheld"].as_object().into_iter().flatten())
        .map(|(_, n)| n.as_u64().expect("count"))
        .sum();
    assert!(withheld > 0, "eu-west's audit log shows nothing withheld from us-east");
    for region in ALL {
        for e in audit_file(&d, region) {
            let crosses = e["peer_jurisdiction"] != if region == "us-east" { "US" } else { "EU" };
            if crosses {
                assert_eq!(e["personal"], 0, "{region} served personal records across: {e}");
                assert_eq!(e["encrypted"], false, "{e}");
            }
        }
        let out = audit_verify(&d, region);
        assert!(out.success(), "audit of {region}: {}", out.stderr);
    }
    eprintln!(
        "searched {} us-east files and {} link captures; eu-west withheld {withheld} records from us-east in {} audit entries",
        us_files.len(),
        us_links.len(),
        to_us.len()
    );
}

#[test]
fn sealed_transfer_under_a_legal_basis() {
    let transfer = format!(
        "[[transfers]]\nfrom = \"EU\"\nto = \"US\"\nlegal_basis = \"SCC 2021/914\"\nkey_env = \"{TRANSFER_KEY_ENV}\"\n"
    );
    let d = deployment()
        .insecure()
        .capture()
        .extra_toml(&transfer)
        .env(TRANSFER_KEY_ENV, TRANSFER_KEY)
        .start();
    // Only the EU regions hold the key.
    for process in ["eu-west", "eu-central", "us-east", "router"] {
        let has = d.env_names(process).iter().any(|k| k == TRANSFER_KEY_ENV);
        assert_eq!(has, EU.contains(&process), "{process} holding {TRANSFER_KEY_ENV}: {has}");
    }
    let tag = unique_tag();
    d.register("sue", "eu-west");
    let val = |i: u32| format!("EUVAL{tag}-{i}");
    let key = |i: u32| format!("sue:EUKEY{tag}-{i}");
    let r = d.put_routed("credential", &key(1), &val(1), "us-east");
    assert_routed(&r, 200, "eu-west", "home", "credential");
    let fields = json!({"fields": {"email": val(2)}});
    let r = d.routed(
        Method::PATCH,
        &format!("/v1/records/profile/{}", key(2)),
        Some(&fields),
        "us-east",
    );
    assert_routed(&r, 200, "eu-west", "home", "profile");
    let add = json!({"op": "add", "elements": [val(3)]});
    let r =
        d.routed(Method::POST, &format!("/v1/records/cart/{}/ops", key(3)), Some(&add), "us-east");
    assert_eq!(r.status, 200, "cart: {r}");
    d.wait_value(&["eu-central"], "credential", &key(1), Some(&json!(val(1))), CONVERGE_TIMEOUT);

    // us-east receives opaque sealed copies, one per record, and serves none of it.
    let sealed = || d.digest("us-east", "_sealed").1 >= 3;
    assert!(
        wait_until(CONVERGE_TIMEOUT, sealed),
        "us-east holds {} sealed copies, not 3",
        d.digest("us-east", "_sealed").1
    );
    assert_eq!(d.digest("eu-central", "_sealed").1, 0, "sealed copies stay out of the EU");
    assert_eq!(
        d.value("us-east", "credential", &key(1)),
        None,
        "personal record in clear at us-east"
    );
    assert_eq!(d.value("us-east", "profile", &key(2)), None);
    assert_eq!(d.value("us-east", "cart", &key(3)), None);
    let r = d.direct(Method::GET, "us-east", "/v1/records/_sealed?limit=10", None, &[]);
    assert_eq!(r.status, 404, "sealed copies are served at us-east: {r}");
    let r = d.routed(Method::GET, &format!("/v1/records/credential/{}", key(1)), None, "us-east");
    assert_routed(&r, 200, "eu-west", "home", "the personal record read from the US");
    assert_eq!(r.body["value"], json!(val(1)));

    // eu-west audited the encrypted flow.
    let audit = d.audit("eu-west");
    let sealed_batch = audit.iter().find(|e| {
        e["kind"] == "batch_served"
            && e["peer"] == "us-east"
            && e["encrypted"] == true
            && e["personal"].as_u64().unwrap_or(0) > 0
    });
    assert!(sealed_batch.is_some(), "no encrypted batch to us-east in eu-west's audit: {audit:#?}");
    let us_audit_api = serde_json::to_string(&d.audit("us-east")).expect("audit encodes");
    d.stop();

    let needles = vec![format!("EUVAL{tag}"), format!("EUKEY{tag}")];
    let us_files = files_under(&d.data_dir().join("us-east"));
    let us_links = capture_files(&d, |n| n.ends_with("-us-east.bin") || n.starts_with("us-east-"));
    let mut searched = us_files.clone();
    searched.extend(us_links.iter().cloned());
    let hits = find_in_files(&searched, &needles);
    assert!(hits.is_empty(), "EU personal data in clear outside the EU: {hits:?}");
    for n in &needles {
        assert!(!us_audit_api.contains(n.as_str()), "{n} in us-east's /v1/audit");
    }
    assert!(!d.log_text().contains(TRANSFER_KEY), "the transfer key was logged");
    // Positive controls: the ciphertext and its legal basis did cross and were
    // stored; the plaintext is on the EU side.
    let crossed = find_in_files(&us_links, &["SCC 2021/914".to_owned()]);
    assert!(!crossed.is_empty(), "no sealed copy crossed to us-east");
    let stored = find_in_files(&us_files, &["ciphertext".to_owned()]);
    assert!(!stored.is_empty(), "no sealed copy stored at us-east");
    let eu_link = capture_files(&d, |f| f == "eu-west-eu-central.bin");
    let found = find_in_files(&eu_link, &needles);
    assert_eq!(found.len(), needles.len(), "EU markers not on the EU link: {found:?}");
}

#[test]
fn audit_verify_detects_tampering() {
    let d = deployment().start();
    d.register("tom", "eu-west");
    for i in 0..4 {
        let r = d.put_routed("credential", &format!("tom:k{i}"), &format!("v{i}"), "eu-west");
        assert_routed(&r, 200, "eu-west", "home", "credential");
        let r = d.put_routed("article", &format!("a{i}"), "public", "eu-west");
        assert_routed(&r, 200, "eu-west", "nearest", "article");
        d.wait_value(
            &["eu-central"],
            "credential",
            &format!("tom:k{i}"),
            Some(&json!(format!("v{i}"))),
            CONVERGE_TIMEOUT,
        );
        d.wait_value(
            &["us-east"],
            "article",
            &format!("a{i}"),
            Some(&json!("public")),
            CONVERGE_TIMEOUT,
        );
    }
    d.stop();

    let path = d.data_dir().join("eu-west").join("audit.jsonl");
    let original = std::fs::read_to_string(&path).expect("eu-west's audit log");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 4, "too few audit entries to tamper with: {}", lines.len());
    let verify = |expect_ok: bool, what: &str| -> String {
        let out = audit_verify(&d, "eu-west");
        let text = out.text();
        let want = if expect_ok { Some(0) } else { Some(1) };
        assert_eq!(out.code, want, "{what}: {text}");
        text
    };
    let write = |text: String| std::fs::write(&path, text).expect("rewrite the audit log");
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    verify(true, "the untouched log");
    // `--data-dir` names the same directory explicitly.
    let data_dir = d.data_dir().to_str().expect("a UTF-8 path");
    let args = ["audit", "verify", "--config", d.config_arg(), "--region", "eu-west"];
    let out = TANDEM.run(&[&args[..], &["--data-dir", data_dir]].concat());
    assert!(out.success(), "{}", out.stderr);

    // A changed count, in a middle entry.
    let (i, bumped) = lines
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, l)| Some((i, bump_count(l)?)))
        .expect("an entry with record counts");
    let mut modified = lines.clone();
    modified[i] = &bumped;
    write(join(&modified));
    let text = verify(false, "a modified entry");
    assert!(text.contains(&format!("line {}", i + 1)), "the message names no line: {text}");
    write(original.clone());
    verify(true, "the restored log");

    // A removed entry.
    let mut removed = lines.clone();
    removed.remove(1);
    write(join(&removed));
    let text = verify(false, "a removed entry");
    assert!(text.contains("line 2"), "the message names no line: {text}");

    // Two entries swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    write(join(&swapped));
    let text = verify(false, "swapped entries");
    assert!(text.contains("line 2"), "the message names no line: {text}");

    // The newest entry cut off.
    write(join(&lines[..lines.len() - 1]));
    verify(false, "a truncated log");

    write(original);
    verify(true, "the restored log");
    for region in ["eu-central", "us-east"] {
        let out = audit_verify(&d, region);
        assert!(out.success(), "{region}: {}", out.stderr);
    }
}

/// What the mixed workload saw.
#[derive(Default)]
struct Tally {
    /// `"<kind> <status> <code>"` → count.
    answers: BTreeMap<String, u64>,
    /// EU personal marker values that were acknowledged.
    eu_acked: Vec<String>,
    /// Anything a router must never do.
    violations: Vec<String>,
}

/// A small xorshift generator: the workload is varied but needs no crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One step of the mixed workload through the router.
fn workload_step(
    d: &Deployment,
    tag: &str,
    worker: usize,
    n: u64,
    rng: &mut Rng,
    tally: &Mutex<Tally>,
) {
    let client = ALL[rng.below(3) as usize];
    let eu_subject = format!("eus{}", rng.below(4));
    let us_subject = format!("uss{}", rng.below(2));
    // EU markers: values and the non-subject part of record ids.
    let eu_val = format!("EUVAL{tag}-{worker}-{n}");
    let eu_key = format!("EUKEY{tag}-{worker}-{n}");
    let (kind, r) = match rng.below(9) {
        0 => ("eu", d.put_routed("credential", &format!("{eu_subject}:{eu_key}"), &eu_val, client)),
        1 => {
            let path = format!("/v1/records/profile/{eu_subject}:{eu_key}");
            let body = json!({"fields": {"name": eu_val, "email": format!("{eu_val}@example.eu")}});
            ("eu", d.routed(Method::PATCH, &path, Some(&body), client))
        }
        2 => {
            // Roaming personal data: one cart per subject, many elements.
            let path = format!("/v1/records/cart/{eu_subject}:cart/ops");
            (
                "eu",
                d.routed(
                    Method::POST,
                    &path,
                    Some(&json!({"op": "add", "elements": [eu_val]})),
                    client,
                ),
            )
        }
        3 => {
            let path = format!("/v1/records/balance/{eu_subject}:{eu_key}/ops");
            ("eu", d.routed(Method::POST, &path, Some(&json!({"op": "incr", "by": 5})), client))
        }
        4 => {
            let id = format!("{us_subject}:USKEY{tag}-{worker}-{n}");
            ("us", d.put_routed("credential", &id, &format!("USVAL{tag}-{worker}-{n}"), client))
        }
        5 => (
            "public",
            d.put_routed(
                "article",
                &format!("art-{worker}-{n}"),
                &format!("PUBVAL{tag}-{worker}-{n}"),
                client,
            ),
        ),
        6 => {
            let path = format!("/v1/records/likes/post-{}/ops", rng.below(5));
            ("public", d.routed(Method::POST, &path, Some(&json!({"op": "incr", "by": 1})), client))
        }
        7 => {
            // Pinned but not personal: may go anywhere, so no EU marker in it.
            let path = format!("/v1/records/settings/{eu_subject}:prefs");
            (
                "public",
                d.routed(
                    Method::PATCH,
                    &path,
                    Some(&json!({"fields": {"theme": format!("t{n}")}})),
                    client,
                ),
            )
        }
        _ => {
            let path = format!("/v1/records/cart/{eu_subject}:cart");
            ("eu-read", d.routed(Method::GET, &path, None, client))
        }
    };
    let mut t = tally.lock().expect("tally");
    *t.answers.entry(format!("{kind} {} {}", r.status, r.code())).or_default() += 1;
    let served = r.region().unwrap_or("");
    let bad = match (kind, r.status) {
        (_, 403) => Some("refused for residency: the router sent it to the wrong jurisdiction"),
        ("eu" | "eu-read", _) if served == "us-east" => {
            Some("EU personal request served by us-east")
        }
        ("us", 200) if served != "us-east" => Some("US personal write served outside the US"),
        ("eu" | "us" | "public", 200 | 502 | 503 | 504) => None,
        ("eu-read", 200 | 404 | 502 | 503 | 504) => None,
        _ => Some("unexpected answer"),
    };
    if let Some(why) = bad {
        t.violations.push(format!("{why}: {kind} from {client}: {r}"));
    }
    if kind == "eu" && r.status == 200 {
        t.eu_acked.push(eu_val);
    }
}

/// The fault script of the mixed workload: drains, link cuts, a kill.
fn chaos(d: &Deployment, deadline: Instant) -> Vec<String> {
    let steps: [(&str, &dyn Fn()); 8] = [
        ("drain eu-west", &|| d.drain("eu-west")),
        ("restore eu-west", &|| d.restore("eu-west")),
        ("cut eu-west->us-east (us-east gets eu-west's changes forwarded)", &|| {
            d.cut("eu-west", "us-east");
        }),
        ("heal eu-west->us-east; cut eu-west->eu-central", &|| {
            d.heal("eu-west", "us-east");
            d.cut("eu-west", "eu-central");
        }),
        ("heal eu-west->eu-central; partition eu-central/us-east; drain eu-central", &|| {
            d.heal("eu-west", "eu-central");
            d.cut("eu-central", "us-east");
            d.cut("us-east", "eu-central");
            d.drain("eu-central");
        }),
        ("heal everything; restore eu-central", &|| {
            d.heal("*", "*");
            d.restore("eu-central");
        }),
        ("kill eu-west", &|| d.kill("eu-west")),
        ("start eu-west", &|| d.start_region("eu-west")),
    ];
    let mut done = Vec::new();
    for (name, step) in steps.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        step();
        done.push((*name).to_owned());
        std::thread::sleep(Duration::from_millis(1200));
    }
    // Leave everything whole whatever step the clock stopped at.
    if !d.processes().contains_key("eu-west") {
        d.start_region("eu-west");
    }
    d.heal("*", "*");
    for region in ALL {
        d.restore(region);
    }
    done
}

/// The whole-link captures `<from>-<to>.bin` whose names match `pred`.
fn capture_files(d: &Deployment, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let dir = d.capture_dir().expect("capturing");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the capture directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    files.sort();
    files
}

/// Entries of a region's audit log, read from its file (after the stop).
fn audit_file(d: &Deployment, region: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(d.data_dir().join(region).join("audit.jsonl"))
        .unwrap_or_else(|e| panic!("audit log of {region}: {e}"));
    text.lines().map(|l| serde_json::from_str(l).expect("an audit entry")).collect()
}

fn audit_verify(d: &Deployment, region: &str) -> Output {
    TANDEM.run(&["audit", "verify", "--config", d.config_arg(), "--region", region])
}

/// The example deployment under `tandem up`, router included.
fn deployment() -> Builder {
    TANDEM.deployment().prefix("tandem-res-")
}

/// `"records":{"<entity>":N` → N+1 in one audit line (`None` without records).
fn bump_count(line: &str) -> Option<String> {
    let start = line.find("\"records\":{\"")? + "\"records\":{\"".len();
    let colon = start + line[start..].find("\":")? + 2;
    let digits = line[colon..].chars().take_while(char::is_ascii_digit).count();
    let n: u64 = line[colon..colon + digits].parse().ok()?;
    Some(format!("{}{}{}", &line[..colon], n + 1, &line[colon + digits..]))
}
