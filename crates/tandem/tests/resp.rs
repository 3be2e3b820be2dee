//! The Redis protocol front end on real processes with real clients (issue
//! 18): redis-cli (Debian `redis-tools`) over TLS with an API key drives
//! every command family, WRONGTYPE, residency and misdirected errors, and a
//! pipeline of 1,000 commands that lands in a few group commits; redis-py
//! (PyPI `redis`, from `TANDEM_PYTHON`'s environment) speaks RESP3 and
//! pipelines; raw bytes show that hostile input (an oversized bulk, a
//! 2^31-element header, a truncated frame, 10,000 pipelined commands
//! without reading) is answered with an error or a closed connection and
//! stores nothing; and `kill -9` of a region under pipelined INCR and SADD
//! load loses none of the writes whose replies its clients had read.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use tandem_testkit::config::ALL;
use tandem_testkit::{metrics, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

fn tool(name: &str) -> Option<PathBuf> {
    tandem_testkit::tools::require(name, "Debian's `redis-tools`")
}

fn resp_port(d: &Deployment, region: &str) -> u16 {
    d.config().region(region).and_then(|r| r.resp_listen).expect("resp_listen").port()
}

/// redis-cli against `region`'s RESP port, over TLS with the kit's API key.
fn redis_cli(cli: &PathBuf, d: &Deployment, region: &str, args: &[&str]) -> Command {
    let ca = d.certs_dir().join("ca.pem");
    let mut cmd = Command::new(cli);
    cmd.args(["--tls", "--cacert", ca.to_str().expect("utf-8 path"), "-h", "127.0.0.1"])
        .args(["-p", &resp_port(d, region).to_string()])
        .args(["-a", tandem_testkit::tls::API_KEY, "--no-auth-warning"])
        .args(args);
    cmd
}

fn run(cli: &PathBuf, d: &Deployment, region: &str, args: &[&str]) -> String {
    let out = redis_cli(cli, d, region, args).output().expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.strip_suffix('\n').unwrap_or(&said).to_owned()
}

#[test]
fn redis_cli_drives_every_command_family_with_tandem_merge_types_and_rules() {
    let Some(cli) = tool("redis-cli") else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-cli-").start();
    let r = |args: &[&str]| run(&cli, &d, "eu-west", args);

    // Authentication: nothing without an API key, a wrong one is refused.
    let ca = d.certs_dir().join("ca.pem");
    let port = resp_port(&d, "eu-west").to_string();
    let bare = Command::new(&cli)
        .args(["--tls", "--cacert", ca.to_str().unwrap(), "-h", "127.0.0.1", "-p", &port, "PING"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bare.stdout).starts_with("NOAUTH"), "{bare:?}");
    let mut wrong = Command::new(&cli);
    wrong.args(["--tls", "--cacert", ca.to_str().unwrap(), "-h", "127.0.0.1", "-p", &port]);
    let wrong = wrong.args(["-a", "not-a-key", "--no-auth-warning", "PING"]).output().unwrap();
    let wrong = format!(
        "{}{}",
        String::from_utf8_lossy(&wrong.stdout),
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(wrong.contains("WRONGPASS"), "{wrong}");
    assert_eq!(r(&["PING"]), "PONG");

    // lww strings.
    assert_eq!(r(&["SET", "key:a", "hello world"]), "OK");
    assert_eq!(r(&["GET", "key:a"]), "hello world");
    assert_eq!(r(&["SET", "key:a", "again", "GET"]), "hello world");
    assert_eq!(r(&["GET", "key:missing"]), "");
    assert_eq!(r(&["MSET", "key:m1", "1", "key:m2", "two"]), "OK");
    assert_eq!(r(&["MGET", "key:m1", "key:m2", "key:none"]), "1\ntwo\n");
    assert_eq!(r(&["SET", "key:m2", "x", "XX"]), "OK");
    assert_eq!(r(&["SET", "key:new", "x", "XX"]), "");
    assert!(r(&["SET", "key:b", "v", "NX"]).contains("any-region"), "no false locks");
    assert_eq!(r(&["EXISTS", "key:a", "key:none", "key:m1"]), "2");
    // Counters keep every increment.
    assert_eq!(r(&["INCR", "counter:c"]), "1");
    assert_eq!(r(&["INCRBY", "counter:c", "5"]), "6");
    assert_eq!(r(&["DECR", "counter:c"]), "5");
    assert_eq!(r(&["DECRBY", "counter:c", "2"]), "3");
    assert_eq!(r(&["GET", "counter:c"]), "3");
    // or-set, with a key without ':' in the [resp] sets entity.
    assert_eq!(r(&["SADD", "myset", "a", "b", "c"]), "3");
    assert_eq!(r(&["SADD", "myset", "a", "d"]), "1");
    assert_eq!(r(&["SREM", "myset", "b", "zz"]), "1");
    assert_eq!(r(&["SCARD", "myset"]), "3");
    assert_eq!(r(&["SISMEMBER", "myset", "a"]), "1");
    assert_eq!(r(&["SMISMEMBER", "myset", "a", "b"]), "1\n0");
    assert_eq!(r(&["SMEMBERS", "set:myset"]), "a\nc\nd");
    // lww-fields hashes.
    assert_eq!(r(&["HSET", "myhash", "f1", "v1", "f2", "v2"]), "2");
    assert_eq!(r(&["HSET", "myhash", "f1", "w1"]), "0");
    assert_eq!(r(&["HGET", "myhash", "f1"]), "w1");
    assert_eq!(r(&["HMGET", "myhash", "f1", "nope"]), "w1\n");
    assert_eq!(r(&["HGETALL", "myhash"]), "f1\nw1\nf2\nv2");
    assert_eq!(r(&["HLEN", "myhash"]), "2");
    assert_eq!(r(&["HEXISTS", "myhash", "f2"]), "1");
    assert_eq!(r(&["HDEL", "myhash", "f2", "nope"]), "1");
    // Types, WRONGTYPE, unknown commands.
    assert_eq!(r(&["TYPE", "key:a"]), "string");
    assert_eq!(r(&["TYPE", "myset"]), "set");
    assert_eq!(r(&["TYPE", "myhash"]), "hash");
    assert_eq!(r(&["TYPE", "key:none"]), "none");
    for wrong in [
        &["SADD", "key:a", "x"][..],
        &["INCR", "key:a"],
        &["GET", "set:myset"],
        &["HGET", "set:myset", "f"],
    ] {
        assert!(r(wrong).starts_with("WRONGTYPE"), "{wrong:?}: {}", r(wrong));
    }
    assert!(r(&["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert!(r(&["GET", "nosuchtype:x"]).contains("unknown entity type"));
    // SCAN and DBSIZE over every type; keys are <entity>:<id>.
    let scanned = run(&cli, &d, "eu-west", &["--scan", "--pattern", "key:*"]);
    let mut keys: Vec<&str> = scanned.lines().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["key:a", "key:m1", "key:m2"]);
    let (mut cursor, mut all, mut calls) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let page = r(&["SCAN", &cursor, "COUNT", "1"]);
        let mut lines = page.lines();
        cursor = lines.next().expect("a cursor").to_owned();
        all.extend(lines.map(str::to_owned));
        calls += 1;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(calls >= 6, "COUNT 1 pages one record at a time");
    assert_eq!(r(&["DBSIZE"]), "6");
    // DEL, also of a key without ':' (found in its default entity).
    assert_eq!(r(&["DEL", "key:a", "myset", "key:none"]), "2");
    assert_eq!(r(&["EXISTS", "key:a", "myset"]), "0");

    // What RESP wrote is what HTTP and the other regions see.
    let t = d.converge_timeout();
    d.wait_value(&ALL, "key", "m2", Some(&json!("x")), t);
    d.wait_value(&ALL, "counter", "c", Some(&json!(3)), t);
    d.wait_value(&ALL, "hash", "myhash", Some(&json!({"f1": "w1"})), t);
    d.wait_value(&ALL, "set", "myset", None, t);
    assert_eq!(run(&cli, &d, "us-east", &["GET", "counter:c"]), "3");

    // Residency and pinning, as on the HTTP plane.
    d.register("alice", "eu-west");
    let us = run(&cli, &d, "us-east", &["SET", "credential:alice:pw", "secret"]);
    assert!(us.starts_with("RESIDENCY"), "{us}");
    let eu2 = run(&cli, &d, "eu-central", &["SET", "credential:alice:pw", "secret"]);
    assert!(eu2.starts_with("MISDIRECTED eu-west"), "{eu2}");
    assert_eq!(r(&["SET", "credential:alice:pw", "secret", "NX"]), "OK", "pinned: NX works");
    assert_eq!(r(&["SET", "credential:alice:pw", "other", "NX"]), "");
    assert_eq!(r(&["SETNX", "credential:alice:pw", "other"]), "0");
    assert_eq!(r(&["GET", "credential:alice:pw"]), "secret");
    // HSETNX: per field, on a pinned type; refused where any region writes.
    assert_eq!(r(&["HSETNX", "profile:alice", "name", "Alice"]), "1");
    assert_eq!(r(&["HSETNX", "profile:alice", "name", "Eve"]), "0", "the field is set");
    assert_eq!(r(&["HSETNX", "profile:alice", "email", "a@x"]), "1", "another field");
    assert_eq!(r(&["HGET", "profile:alice", "name"]), "Alice");
    assert!(r(&["HSETNX", "myhash", "f9", "v"]).contains("any-region"), "no false locks");
    assert_eq!(r(&["HEXISTS", "myhash", "f9"]), "0");

    // A pipeline of 1,000 commands: every reply, and group commits.
    let commits = |d: &Deployment| {
        metrics::first(&d.metrics("eu-west"), "tandem_commit_batch_writes_count", &[])
            .unwrap_or(0.0)
    };
    let before = commits(&d);
    let mut input = Vec::new();
    for _ in 0..1000 {
        input.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$14\r\ncounter:piped1\r\n");
    }
    let mut child = redis_cli(&cli, &d, "eu-west", &["--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("errors: 0, replies: 1000"), "{said}");
    assert_eq!(r(&["GET", "counter:piped1"]), "1000");
    let used = commits(&d) - before;
    assert!(used <= 250.0, "1,000 pipelined writes took {used} commits");
    let m = d.metrics("eu-west");
    let count = |command: &str, outcome: &str| {
        let labels = [("command", command), ("outcome", outcome)];
        metrics::first(&m, "tandem_resp_commands_total", &labels).unwrap_or(0.0)
    };
    assert!(count("incr", "ok") >= 1000.0, "{m}");
    assert!(count("sadd", "WRONGTYPE") >= 1.0);
    assert!(count("unknown", "ERR") >= 1.0);
}

#[test]
fn redis_py_speaks_resp3_and_pipelines() {
    let Some(python) = tandem_testkit::tools::python_with_redis() else { return };
    let d = TANDEM.deployment().prefix("tandem-resp-py-").without_router().start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/resp_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--port", &resp_port(&d, "eu-west").to_string()])
        .args(["--ca", d.certs_dir().join("ca.pem").to_str().unwrap()])
        .args(["--key", tandem_testkit::tls::API_KEY])
        .output()
        .expect("run python");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("redis-py: all checks passed"), "{said}");
    d.wait_value(&ALL, "counter", "py", Some(&json!(1000)), d.converge_timeout());
}

/// Send bytes, then read until the server closes or goes quiet.
fn exchange(d: &Deployment, bytes: &[u8]) -> String {
    let addr = format!("127.0.0.1:{}", resp_port(d, "eu-west"));
    let mut s = tandem_testkit::tls::connect(d, &addr);
    let auth = format!("AUTH {}\r\n", tandem_testkit::tls::API_KEY);
    s.write_all(auth.as_bytes()).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.flush();
    // No more from this side: the server answers what it has, then closes.
    s.half_close();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn hostile_input_is_answered_with_an_error_or_a_closed_connection_and_stores_nothing() {
    let d = TANDEM.deployment().prefix("tandem-resp-hostile-").without_router().start();
    let got = exchange(&d, b"*3\r\n$3\r\nSET\r\n$7\r\nkey:big\r\n$99999999999\r\n");
    assert!(got.starts_with("+OK\r\n-ERR Protocol error: a bulk string is longer"), "{got}");
    let got = exchange(&d, b"*2147483648\r\n");
    assert!(got.contains("-ERR Protocol error: too many arguments"), "{got}");
    let got = exchange(&d, b"*3\r\n$3\r\nSET\r\n$9\r\nkey:trunc\r\n$5\r\nab");
    assert!(
        got.starts_with("+OK\r\n") && got.len() == 5,
        "a truncated frame is not a command: {got}"
    );
    let got = exchange(&d, b"*1\r\n$4\r\nPING\r\nxx\r\n");
    assert!(got.contains("+PONG"), "{got}");
    let got = exchange(&d, &[b'x'; 70 * 1024]);
    assert!(got.contains("-ERR Protocol error: too big inline request"), "{got}");
    // 10,000 pipelined commands sent before reading a reply: all answered.
    let mut many = Vec::new();
    for i in 0..10_000 {
        let key = format!("key:p{}", i % 100);
        many.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
        );
    }
    many.extend_from_slice(b"QUIT\r\n");
    let got = exchange(&d, &many);
    assert_eq!(got.matches("+OK\r\n").count(), 10_002, "AUTH, 10,000 SETs and QUIT");
    for id in ["big", "trunc"] {
        assert_eq!(d.value("eu-west", "key", id), None, "{id} was stored");
    }
    assert_eq!(d.value("eu-west", "key", "p7"), Some(json!("v")));
}

/// A command as a RESP array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// One client of the kill test: pipelines of INCRs and SADDs, recording
/// what was acknowledged, until the connection breaks.
fn acked_writes(d: &Deployment, client: usize) -> (u64, Vec<String>) {
    use std::io::BufRead;
    let addr = format!("127.0.0.1:{}", resp_port(d, "eu-west"));
    let mut s = std::io::BufReader::new(tandem_testkit::tls::connect(d, &addr));
    let auth = format!("AUTH {}\r\n", tandem_testkit::tls::API_KEY);
    s.get_mut().write_all(auth.as_bytes()).unwrap();
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    let (mut increments, mut members) = (0u64, Vec::new());
    for round in 0.. {
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for i in 0..8 {
            let m = format!("m-{client}-{round}-{i}");
            batch.extend_from_slice(&command(&["INCR", "counter:k9"]));
            batch.extend_from_slice(&command(&["SADD", "set:k9", &m]));
            sent.push(m);
        }
        if s.get_mut().write_all(&batch).is_err() {
            break;
        }
        for m in sent {
            for kind in ["incr", "sadd"] {
                line.clear();
                match s.read_line(&mut line) {
                    Ok(n) if n > 0 && line.starts_with(':') => {}
                    _ => return (increments, members),
                }
                if kind == "incr" {
                    increments += 1;
                } else {
                    members.push(m.clone());
                }
            }
        }
    }
    (increments, members)
}

#[test]
fn kill_9_under_pipelined_load_loses_no_acknowledged_write() {
    let d = TANDEM.deployment().prefix("tandem-resp-kill-").without_router().start();
    let results = std::thread::scope(|scope| {
        let d = &d;
        let running: Vec<_> = (0..4).map(|c| scope.spawn(move || acked_writes(d, c))).collect();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        d.kill("eu-west");
        running.into_iter().map(|t| t.join().expect("client")).collect::<Vec<_>>()
    });
    let increments: u64 = results.iter().map(|(n, _)| n).sum();
    let members: Vec<&String> = results.iter().flat_map(|(_, m)| m).collect();
    assert!(increments > 100, "the load ran ({increments} acknowledged increments)");
    d.start_region("eu-west");
    let total = d.value("eu-west", "counter", "k9").and_then(|v| v.as_u64()).unwrap_or(0);
    assert!(total >= increments, "{increments} increments acknowledged, {total} after the restart");
    let held = d.value("eu-west", "set", "k9").unwrap_or_default();
    let held: Vec<&str> =
        held.as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    let lost: Vec<&&String> = members.iter().filter(|m| !held.contains(&m.as_str())).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged members lost, e.g. {:?}",
        lost.len(),
        members.len(),
        lost.first()
    );
}
