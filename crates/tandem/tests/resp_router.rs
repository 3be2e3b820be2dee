//! The Redis protocol through the router, and MULTI/EXEC (issue 18, item 5),
//! on real processes with redis-cli and redis-py: the router routes each
//! command like the HTTP data plane (a pinned write to its subject's home, a
//! failover inside the jurisdiction when the home is drained, personal
//! records inside their jurisdiction, the rest to the caller's nearest
//! region, set per connection with `TANDEM CLIENT-REGION`), refuses
//! commands and transactions whose keys route to different regions, and
//! relays the regions' errors; a transaction on a node commits all its
//! writes or none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use tandem_testkit::{metrics, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn router_port(d: &Deployment) -> u16 {
    d.config().router.resp_listen.expect("router.resp_listen").port()
}

fn region_port(d: &Deployment, region: &str) -> u16 {
    d.config().region(region).and_then(|r| r.resp_listen).expect("resp_listen").port()
}

/// redis-cli on one connection to `port`, one command per line of `lines`;
/// its output, one reply (or array element) per line.
fn session(cli: &Path, d: &Deployment, port: u16, lines: &[&str]) -> String {
    let ca = d.certs_dir().join("ca.pem");
    let mut child = Command::new(cli)
        .args(["--tls", "--cacert", ca.to_str().expect("utf-8 path"), "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-a", tandem_testkit::tls::API_KEY, "--no-auth-warning"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let mut input = lines.join("\n");
    input.push('\n');
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.strip_suffix('\n').unwrap_or(&said).to_owned()
}

fn cli() -> Option<PathBuf> {
    tandem_testkit::tools::require("redis-cli", "Debian's `redis-tools`")
}

/// `tandem_resp_commands_total{command, outcome="ok"}` at a region.
fn served(d: &Deployment, region: &str, command: &str) -> f64 {
    let labels = [("command", command), ("outcome", "ok")];
    metrics::first(&d.metrics(region), "tandem_resp_commands_total", &labels).unwrap_or(0.0)
}

#[test]
fn the_router_routes_each_command_like_the_http_data_plane() {
    let Some(cli) = cli() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-router-").start();
    let port = router_port(&d);
    let at = |lines: &[&str]| session(&cli, &d, port, lines);

    // Authentication first, as on a node.
    let bare = Command::new(&cli)
        .args(["--tls", "--cacert", d.certs_dir().join("ca.pem").to_str().unwrap()])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "GET", "key:x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bare.stdout).starts_with("NOAUTH"), "{bare:?}");

    // Public records go to the caller's nearest region: the router's default
    // (us-east), or the region the connection says it is in.
    let us_before = served(&d, "us-east", "set");
    assert_eq!(at(&["SET key:r1 one", "GET key:r1"]), "OK\none");
    assert!(served(&d, "us-east", "set") >= us_before + 1.0);
    let eu_before = served(&d, "eu-central", "set");
    let said = at(&[
        "TANDEM CLIENT-REGION",
        "TANDEM CLIENT-REGION eu-central",
        "TANDEM CLIENT-REGION",
        "SET key:r2 two",
        "TANDEM CLIENT-REGION mars",
    ]);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[..4], ["us-east", "OK", "eu-central", "OK"], "{said}");
    assert!(lines[4].contains("not a region"), "{said}");
    assert!(served(&d, "eu-central", "set") >= eu_before + 1.0);

    // A pinned personal write goes to its subject's home, wherever the
    // caller is (straight to us-east it is a residency refusal).
    d.register("alice", "eu-west");
    d.register("bob", "us-east");
    d.wait_subject_everywhere("alice", "eu-west");
    d.wait_subject_everywhere("bob", "us-east");
    let direct = session(&cli, &d, region_port(&d, "us-east"), &["SET credential:alice:pw s1"]);
    assert!(direct.starts_with("RESIDENCY"), "{direct}");
    assert_eq!(at(&["SET credential:alice:pw s1", "GET credential:alice:pw"]), "OK\ns1");
    assert_eq!(d.value("eu-west", "credential", "alice:pw"), Some(json!("s1")));
    // Keys that route to different regions are refused whole.
    let cross = at(&["MGET credential:alice:pw credential:bob:pw"]);
    assert!(cross.starts_with("CROSSREGION"), "{cross}");
    assert!(at(&["GET credential:nobody:pw"]).starts_with("RESIDENCY"), "unknown subject");

    // With alice's home drained, her pinned write fails over inside the EU,
    // marked for eu-west, which only the router's connection may do.
    d.drain("eu-west");
    assert_eq!(at(&["SET credential:alice:pw2 s2"]), "OK");
    assert_eq!(d.value("eu-central", "credential", "alice:pw2"), Some(json!("s2")));
    let failovers = metrics::first(
        &d.metrics_at(d.router()),
        "router_failovers_total",
        &[("from", "eu-west"), ("to", "eu-central")],
    );
    assert!(failovers >= Some(1.0), "{failovers:?}");
    let forged = session(
        &cli,
        &d,
        region_port(&d, "eu-central"),
        &["TANDEM FAILOVER eu-west SET credential:alice:pw3 s3"],
    );
    assert!(forged.contains("only from the router"), "{forged}");
    // With no EU region left, an EU subject's write has nowhere to go.
    d.drain("eu-central");
    let none = at(&["SET credential:alice:pw4 s4"]);
    assert!(none.starts_with("NOREGION"), "{none}");
    d.restore("eu-west");
    d.restore("eu-central");

    // A transaction goes whole to the one region its keys route to.
    let tx = at(&["MULTI", "SET credential:alice:t1 a", "SET credential:alice:t2 b", "EXEC"]);
    assert_eq!(tx, "OK\nQUEUED\nQUEUED\nOK\nOK", "{tx}");
    assert_eq!(d.value("eu-west", "credential", "alice:t2"), Some(json!("b")));
    let tx = at(&["MULTI", "SET credential:alice:t3 a", "SET credential:bob:t3 b", "EXEC"]);
    assert!(tx.lines().last().unwrap().starts_with("CROSSREGION"), "{tx}");
    assert_eq!(d.value("eu-west", "credential", "alice:t3"), None);
    assert!(at(&["EXEC"]).contains("EXEC without MULTI"));

    // A pipeline of 1,000 commands through the router: every reply, in order.
    let mut input = Vec::new();
    for _ in 0..1000 {
        input.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$14\r\ncounter:routed\r\n");
    }
    let ca = d.certs_dir().join("ca.pem");
    let mut child = Command::new(&cli)
        .args(["--tls", "--cacert", ca.to_str().unwrap(), "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-a", tandem_testkit::tls::API_KEY, "--no-auth-warning"])
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("errors: 0, replies: 1000"), "{said}");
    assert_eq!(at(&["GET counter:routed"]), "1000");
    let routed = metrics::first(
        &d.metrics_at(d.router()),
        "router_requests_total",
        &[("region", "us-east"), ("route", "nearest"), ("outcome", "ok")],
    );
    assert!(routed >= Some(1000.0), "{routed:?}");
}

#[test]
fn redis_py_through_the_router() {
    let Some(python) = tandem_testkit::tools::python_with_redis() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-router-py-").start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/resp_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--port", &router_port(&d).to_string()])
        .args(["--ca", d.certs_dir().join("ca.pem").to_str().unwrap()])
        .args(["--key", tandem_testkit::tls::API_KEY])
        .output()
        .expect("run python");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("redis-py: all checks passed"), "{said}");
    // Served by the router's default region, replicated everywhere.
    d.wait_value(
        &["eu-west", "us-east"],
        "counter",
        "py",
        Some(&json!(1000)),
        d.converge_timeout(),
    );
}

#[test]
fn a_transaction_on_a_node_commits_all_of_its_writes_or_none() {
    let Some(cli) = cli() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-multi-").without_router().start();
    let at = |region: &str, lines: &[&str]| session(&cli, &d, region_port(&d, region), lines);
    d.register("alice", "eu-west");
    d.wait_subject_everywhere("alice", "eu-west");

    let tx = at(
        "eu-west",
        &[
            "MULTI",
            "SET key:t1 a",
            "INCR counter:t",
            "INCR counter:t",
            "SADD set:t x y",
            "HSET hash:t f v",
            "SET credential:alice:t secret",
            "EXEC",
        ],
    );
    assert_eq!(
        tx, "OK\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nOK\n1\n2\n2\n1\nOK",
        "{tx}"
    );
    assert_eq!(at("eu-west", &["GET counter:t", "SCARD set:t"]), "2\n2");

    // At eu-central, alice's pinned record is another region's: the whole
    // transaction is refused and nothing of it is stored.
    let tx = at(
        "eu-central",
        &["MULTI", "SET key:none1 a", "INCR counter:none", "SET credential:alice:t x", "EXEC"],
    );
    assert!(tx.lines().last().unwrap().starts_with("MISDIRECTED eu-west"), "{tx}");
    assert_eq!(at("eu-central", &["EXISTS key:none1 counter:none"]), "0");
    assert_eq!(d.value("eu-central", "key", "none1"), None);
    // An error while EXEC runs its commands (WRONGTYPE) stores nothing.
    let tx = at("eu-west", &["MULTI", "SET key:none2 a", "SADD key:t1 x", "EXEC"]);
    assert!(tx.lines().last().unwrap().starts_with("WRONGTYPE"), "{tx}");
    assert_eq!(d.value("eu-west", "key", "none2"), None);
    // A command refused while queueing discards the transaction.
    let tx = at("eu-west", &["MULTI", "SET key:none3 a", "FLUSHALL", "EXEC"]);
    assert!(tx.lines().last().unwrap().starts_with("EXECABORT"), "{tx}");
    assert_eq!(d.value("eu-west", "key", "none3"), None);
    // A read of a key the transaction wrote before it would not see that write.
    let tx = at("eu-west", &["MULTI", "SET key:none4 a", "GET key:none4", "EXEC"]);
    assert!(tx.lines().last().unwrap().contains("earlier command"), "{tx}");
    assert_eq!(d.value("eu-west", "key", "none4"), None);
    // DISCARD, nesting and WATCH.
    assert_eq!(at("eu-west", &["MULTI", "SET key:none5 a", "DISCARD"]), "OK\nQUEUED\nOK");
    assert_eq!(d.value("eu-west", "key", "none5"), None);
    assert!(at("eu-west", &["MULTI", "MULTI"]).contains("nested"));
    assert!(at("eu-west", &["WATCH key:t1"]).contains("not supported"));
    // What a transaction wrote replicates like any write.
    let t = d.converge_timeout();
    d.wait_value(&tandem_testkit::config::ALL, "counter", "t", Some(&json!(2)), t);
    d.wait_value(&tandem_testkit::config::EU, "credential", "alice:t", Some(&json!("secret")), t);
}
