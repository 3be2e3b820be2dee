//! Expiry with active-active rules (issue 18, item 4), on real processes
//! with redis-cli: a deadline set in one region holds in every region (HLC
//! times); an expired record reads as absent everywhere (RESP, HTTP, SCAN,
//! DBSIZE, digests) without any replicated delete; concurrent EXPIREs in two
//! isolated regions converge to the longest, PERSIST beats a concurrent
//! EXPIRE, a concurrent write that keeps the expiry does not bring an
//! expired record back, and a concurrent SET (which clears it) does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_testkit::config::ALL;
use tandem_testkit::{Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn cli() -> Option<PathBuf> {
    tandem_testkit::tools::require("redis-cli", "Debian's `redis-tools`")
}

fn r(cli: &Path, d: &Deployment, region: &str, args: &[&str]) -> String {
    let port = d.config().region(region).and_then(|r| r.resp_listen).expect("resp_listen").port();
    let out = Command::new(cli)
        .args(["--tls", "--cacert", d.certs_dir().join("ca.pem").to_str().unwrap()])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-a", tandem_testkit::tls::API_KEY, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.strip_suffix('\n').unwrap_or(&said).to_owned()
}

fn int(s: &str) -> i64 {
    s.parse().unwrap_or_else(|_| panic!("not an integer: {s:?}"))
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_seq(d: &Deployment, region: &str) -> u64 {
    d.status(region)["log"]["last_seq"].as_u64().expect("log.last_seq")
}

#[test]
fn a_deadline_holds_in_every_region_and_an_expired_record_is_absent_everywhere() {
    let Some(cli) = cli() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-expiry-").without_router().start();
    let t = d.converge_timeout();
    let at = |region: &str, args: &[&str]| r(&cli, &d, region, args);

    assert_eq!(at("eu-west", &["SET", "key:e", "v", "EX", "3"]), "OK");
    assert!((1..=3).contains(&int(&at("eu-west", &["TTL", "key:e"]))));
    d.wait_value(&ALL, "key", "e", Some(&json!("v")), t);
    for region in ALL {
        let pttl = int(&at(region, &["PTTL", "key:e"]));
        assert!((1..=3000).contains(&pttl), "{region}: {pttl}");
    }
    let logged = ALL.map(|region| last_seq(&d, region));
    wait("key:e to expire", Duration::from_secs(6), || {
        ALL.iter().all(|region| at(region, &["GET", "key:e"]).is_empty())
    });
    for region in ALL {
        assert_eq!(at(region, &["EXISTS", "key:e"]), "0", "{region}");
        assert_eq!(at(region, &["TTL", "key:e"]), "-2", "{region}");
        assert_eq!(d.value(region, "key", "e"), None, "{region}: HTTP reads it as absent");
        assert!(!at(region, &["--scan", "--pattern", "key:*"]).contains("key:e"));
        assert_eq!(at(region, &["DBSIZE"]), "0", "{region}");
    }
    let after = ALL.map(|region| last_seq(&d, region));
    assert_eq!(logged, after, "expiry logs no delete anywhere");
    let digests: Vec<String> = ALL.iter().map(|region| d.digest(region, "key").0).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert_eq!(d.digest("eu-west", "key").1, 0);

    // The other commands, and what a SET does to an expiry.
    assert_eq!(at("eu-west", &["EXPIRE", "key:none", "10"]), "0", "absent: nothing to expire");
    assert_eq!(at("eu-west", &["SET", "key:k", "1", "PX", "60000"]), "OK");
    assert_eq!(at("eu-west", &["SET", "key:k", "2", "KEEPTTL"]), "OK");
    assert!(int(&at("eu-west", &["PTTL", "key:k"])) > 50_000, "KEEPTTL keeps it");
    assert_eq!(at("eu-west", &["SET", "key:k", "3"]), "OK");
    assert_eq!(at("eu-west", &["TTL", "key:k"]), "-1", "SET clears it");
    assert_eq!(at("eu-west", &["PERSIST", "key:k"]), "0", "nothing to persist");
    let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let at_ms = (unix_ms.as_millis() + 90_000).to_string();
    assert_eq!(at("eu-west", &["PEXPIREAT", "key:k", &at_ms]), "1");
    assert!(int(&at("eu-west", &["TTL", "key:k"])) > 80);
    assert_eq!(at("eu-west", &["PERSIST", "key:k"]), "1");
    assert_eq!(at("eu-west", &["TTL", "key:k"]), "-1");
    assert_eq!(at("eu-west", &["EXPIRE", "key:k", "-1"]), "1", "a past deadline expires at once");
    assert_eq!(at("eu-west", &["GET", "key:k"]), "");
    assert!(at("eu-west", &["SET", "key:k", "1", "EX", "0"]).contains("invalid expire time"));
    assert!(at("eu-west", &["EXPIRE", "counter:c", "5"]).starts_with("WRONGTYPE"));
    assert!(at("eu-west", &["EXPIRE", "key:k", "5", "NX"]).contains("not supported"));
    // A SET of an expired record starts it again, without the old expiry.
    assert_eq!(at("eu-west", &["SET", "key:e", "again", "KEEPTTL"]), "OK");
    assert_eq!(at("eu-west", &["TTL", "key:e"]), "-1");
    d.wait_value(&ALL, "key", "e", Some(&json!("again")), t);
}

#[test]
fn concurrent_expiry_changes_converge_by_the_active_active_rules() {
    let Some(cli) = cli() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-expiry-cc-").without_router().start();
    let t = d.converge_timeout();
    let at = |region: &str, args: &[&str]| r(&cli, &d, region, args);
    for key in ["c", "p", "k"] {
        assert_eq!(at("eu-west", &["SET", &format!("key:{key}"), "v1"]), "OK");
        d.wait_value(&ALL, "key", key, Some(&json!("v1")), t);
    }
    // A SET clears the expiry it has seen: key:s has one everywhere.
    assert_eq!(at("eu-west", &["SET", "key:s", "v1", "EX", "1000"]), "OK");
    d.wait_value(&ALL, "key", "s", Some(&json!("v1")), t);

    // us-east on its own: neither side sees the other's changes.
    d.admin("us-east", "isolate");
    assert_eq!(at("eu-west", &["EXPIRE", "key:c", "100"]), "1");
    assert_eq!(at("us-east", &["EXPIRE", "key:c", "1000"]), "1");
    assert_eq!(at("eu-west", &["EXPIRE", "key:p", "100"]), "1");
    assert_eq!(at("us-east", &["PERSIST", "key:p"]), "0", "us-east has no expiry to remove");
    assert_eq!(at("us-east", &["EXPIRE", "key:p", "500"]), "1");
    assert_eq!(at("us-east", &["PERSIST", "key:p"]), "1");
    assert_eq!(at("eu-west", &["EXPIRE", "key:k", "2"]), "1");
    assert_eq!(at("us-east", &["SET", "key:k", "v2", "KEEPTTL"]), "OK");
    assert_eq!(at("eu-west", &["EXPIRE", "key:s", "2"]), "1");
    assert_eq!(at("us-east", &["SET", "key:s", "v2"]), "OK");
    std::thread::sleep(Duration::from_millis(2500));
    d.admin("us-east", "rejoin");

    let settled = |key: &str, want: &dyn Fn(&str) -> bool| {
        wait(&format!("key:{key} to settle"), t, || {
            ALL.iter().all(|region| want(&at(region, &["PTTL", &format!("key:{key}")])))
        });
    };
    // The longest of two concurrent deadlines, everywhere.
    settled("c", &|pttl| int(pttl) > 900_000);
    // PERSIST beats a concurrent EXPIRE.
    settled("p", &|pttl| pttl == "-1");
    // A write that kept the expiry does not bring the record back...
    settled("k", &|pttl| pttl == "-2");
    for region in ALL {
        assert_eq!(at(region, &["GET", "key:k"]), "", "{region}");
    }
    // ...a concurrent SET, which clears the expiry, keeps its own value.
    settled("s", &|pttl| pttl == "-1");
    d.wait_value(&ALL, "key", "s", Some(&json!("v2")), t);
    let digests: Vec<String> = ALL.iter().map(|region| d.digest(region, "key").0).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}
