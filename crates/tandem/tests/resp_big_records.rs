//! Big records (issue 18, item 7), on real processes with redis-cli: a set
//! grown to 100,000 members and a hash of 10,000 fields replicate each
//! further SADD and HSET as a delta (bytes per change bounded, measured by
//! the senders' `tandem_replication_sent_bytes_total`), converge with equal
//! digests, and keep converging when a delta reaches a region before a
//! change it depends on (a cut link: the dependency comes by forwarding and
//! the delta waits for it). A write that would take a record over the
//! record limit is refused and stores nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tandem_testkit::config::ALL;
use tandem_testkit::{Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn cli() -> Option<PathBuf> {
    tandem_testkit::tools::require("redis-cli", "Debian's `redis-tools`")
}

/// redis-cli against `region`, `args` as one command, or each line of
/// `stdin` as a command; its output.
fn r(cli: &Path, d: &Deployment, region: &str, args: &[&str], stdin: Option<&str>) -> String {
    let port = d.config().region(region).and_then(|r| r.resp_listen).expect("resp_listen").port();
    let mut child = Command::new(cli)
        .args(["--tls", "--cacert", d.certs_dir().join("ca.pem").to_str().unwrap()])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-a", tandem_testkit::tls::API_KEY, "--no-auth-warning"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or("").as_bytes()).expect("write commands");
    drop(input);
    let out = child.wait_with_output().expect("redis-cli output");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.strip_suffix('\n').unwrap_or(&said).to_owned()
}

/// Bytes of changes `region` sent to its peers (direct and forward).
fn sent_bytes(d: &Deployment, region: &str) -> f64 {
    tandem_testkit::metrics::sum(&d.metrics(region), "tandem_replication_sent_bytes_total", &[])
}

fn total_sent(d: &Deployment) -> f64 {
    ALL.iter().map(|region| sent_bytes(d, region)).sum()
}

fn wait_count(cli: &Path, d: &Deployment, what: &[&str], want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for region in ALL {
        loop {
            let got = r(cli, d, region, what, None);
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "{region}: {what:?} is {got}, not {want}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn same_digests(d: &Deployment, entity: &str) {
    let digests: Vec<(String, u64)> = ALL.iter().map(|region| d.digest(region, entity)).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{entity}: {digests:?}");
}

/// `n` commands, one per line, made by `line(i)`.
fn lines(n: usize, line: impl Fn(usize) -> String) -> String {
    (0..n).map(|i| line(i) + "\n").collect()
}

#[test]
fn big_sets_and_hashes_replicate_each_change_as_a_delta_and_converge() {
    let started = Instant::now();
    let phase = |what: &str| println!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());
    let Some(cli) = cli() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-big-").without_router().start();
    let t = d.converge_timeout() * 4;
    let at = |region: &str, args: &[&str], stdin: Option<&str>| r(&cli, &d, region, args, stdin);

    // 100,000 members, 1,000 per SADD; 10,000 fields, 500 per HSET.
    let build = lines(100, |c| {
        let members: Vec<String> =
            (0..1000).map(|i| format!("member-{:06}", c * 1000 + i)).collect();
        format!("SADD set:big {}", members.join(" "))
    });
    at("eu-west", &[], Some(&build));
    let fields = lines(20, |c| {
        let pairs: Vec<String> = (0..500).map(|i| format!("f{:05} v", c * 500 + i)).collect();
        format!("HSET hash:big {}", pairs.join(" "))
    });
    at("eu-west", &[], Some(&fields));
    wait_count(&cli, &d, &["SCARD", "set:big"], "100000", t);
    wait_count(&cli, &d, &["HLEN", "hash:big"], "10000", t);
    phase("built 100,000 members and 10,000 fields");
    same_digests(&d, "set");
    let whole_bytes = 100_000 * "member-000000".len();

    // 50 more members one SADD at a time, 50 fields one HSET at a time.
    let before = total_sent(&d);
    at("eu-west", &[], Some(&lines(50, |i| format!("SADD set:big extra-{i:04}"))));
    at("eu-west", &[], Some(&lines(50, |i| format!("HSET hash:big g{i:04} w"))));
    wait_count(&cli, &d, &["SCARD", "set:big"], "100050", t);
    wait_count(&cli, &d, &["HLEN", "hash:big"], "10050", t);
    phase("50 SADDs and 50 HSETs replicated");
    let per_change = (total_sent(&d) - before) / 100.0;
    println!("{per_change:.0} bytes sent per SADD or HSET (to two peers), whole set {whole_bytes}");
    // Each change goes to two peers (direct) and may be forwarded: a few
    // hundred bytes, where the whole set is over a megabyte.
    assert!(per_change < 2048.0, "{per_change} bytes per change: not a delta");
    same_digests(&d, "set");
    same_digests(&d, "hash");

    // A delta before the change it depends on: eu-central's SREM reaches
    // us-east only through eu-west's forwarding, while eu-west's SADD (made
    // after seeing it) comes straight to us-east, and waits for it.
    d.partition("eu-central", "us-east");
    assert_eq!(at("eu-central", &["SREM", "set:big", "member-000007"], None), "1");
    let deadline = Instant::now() + t;
    while at("eu-west", &["SISMEMBER", "set:big", "member-000007"], None) != "0" {
        assert!(Instant::now() < deadline, "eu-west never saw the SREM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(at("eu-west", &["SADD", "set:big", "after-the-srem"], None), "1");
    wait_count(&cli, &d, &["SCARD", "set:big"], "100050", t);
    assert_eq!(at("us-east", &["SISMEMBER", "set:big", "member-000007"], None), "0");
    assert_eq!(at("us-east", &["SISMEMBER", "set:big", "after-the-srem"], None), "1");
    same_digests(&d, "set");
    phase("the waiting delta converged");
    d.heal("eu-central", "us-east");
    d.heal("us-east", "eu-central");

    // Concurrent changes in every region converge.
    std::thread::scope(|s| {
        for region in ALL {
            let script =
                lines(10, |i| format!("SADD set:big {region}-{i}\nHSET hash:big {region}-{i} x"));
            let (cli, d) = (&cli, &d);
            s.spawn(move || r(cli, d, region, &[], Some(&script)));
        }
    });
    wait_count(&cli, &d, &["SCARD", "set:big"], "100080", t);
    wait_count(&cli, &d, &["HLEN", "hash:big"], "10080", t);
    phase("concurrent writers converged");
    same_digests(&d, "set");
    same_digests(&d, "hash");
}

#[test]
fn a_write_over_the_record_limit_is_refused_and_stores_nothing() {
    let Some(cli) = cli() else { return };
    // A small batch limit makes the record limit small.
    let mut config = tandem_config::Config::example();
    config.replication.batch_bytes_max = 65536;
    let d =
        TANDEM.deployment().prefix("tandem-resp-limit-").config(config).without_router().start();
    let at = |args: &[&str], stdin: Option<&str>| r(&cli, &d, "eu-west", args, stdin);
    let members = |from: usize, n: usize| -> String {
        (from..from + n).map(|i| format!("member-{i:06}")).collect::<Vec<_>>().join(" ")
    };
    let twice =
        format!("SADD set:capped {}\nSADD set:capped {}\n", members(0, 1000), members(1000, 1000));
    assert_eq!(at(&[], Some(&twice)), "1000\n1000");
    let refused = at(&[], Some(&format!("SADD set:capped {}\n", members(2000, 1000))));
    assert!(refused.contains("over the record limit"), "{refused}");
    assert_eq!(at(&["SCARD", "set:capped"], None), "2000", "nothing stored");
    let elements: Vec<String> = (0..1000).map(|i| format!("x{i:06}")).collect();
    let body = serde_json::json!({"op": "add", "elements": elements});
    let a = d.direct(
        tandem_testkit::Method::POST,
        "eu-west",
        "/v1/records/set/capped/ops",
        Some(&body),
        &[],
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "payload_too_large", "{}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("record limit"), "{}", a.body);
    assert_eq!(at(&["SCARD", "set:capped"], None), "2000", "nothing stored");
}
