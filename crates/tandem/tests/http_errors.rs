//! Every error the node and the router give has the contract's JSON body,
//! including those the HTTP stack makes before any handler runs: a URI over
//! the limit (414, ours at 8 KiB and hyper's own past 64 KiB), a header
//! section over the limit (431, ours at 32 KiB and hyper's own past its
//! 128 KiB buffer), a malformed request line (400) and a request head that
//! does not arrive in time (408). And a client that writes its whole 8 MiB
//! body before it reads anything still gets the 413, because the rest of an
//! oversized body is drained first; 50 such clients at once leave the node
//! healthy. The node and router run `--insecure` so that the test can write
//! raw bytes; the HTTP stack under TLS is the same (tls_wire.rs covers what
//! TLS adds).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_testkit::config::example_text;
use tandem_testkit::{Served, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn protocol_errors_have_json_bodies_at_node_and_router() {
    let config = short_timeouts(example_text());
    let node = TANDEM.node(&config, "eu-west", &["--insecure"]);
    let dir = tempfile::tempdir().unwrap();
    let router = start_router(&config, dir.path());
    for base in [node.url().to_owned(), router.url().to_owned()] {
        let addr = base.trim_start_matches("http://").to_owned();
        let long_path = |n: usize| format!("/v1/records/article/{}", "a".repeat(n));
        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            ("a 10 KiB URI", get(&long_path(10 * 1024), ""), 414, "uri_too_long"),
            ("a 70 KiB URI", get(&long_path(70 * 1024), ""), 414, "uri_too_long"),
            ("40 KiB of headers", get("/healthz", &header(40 * 1024)), 431, "headers_too_large"),
            ("200 KiB of headers", get("/healthz", &header(200 * 1024)), 431, "headers_too_large"),
            ("a malformed request line", b"GARBAGE\r\n\r\n".to_vec(), 400, "bad_request"),
            ("a bad version", b"GET / HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(), 400, "bad_request"),
        ];
        for (what, request, status, code) in cases {
            let (got, body) = exchange(&addr, &request, Duration::ZERO);
            assert_eq!((got, code_of(&body)), (status, code), "{what} at {base}: {body}");
        }
        // A head that never completes: 408 after the header read timeout (1 s here).
        let started = Instant::now();
        let (got, body) =
            exchange(&addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n", Duration::from_millis(1));
        assert_eq!((got, code_of(&body)), (408, "request_timeout"), "at {base}: {body}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // A normal request on a fresh connection still works.
        let (got, _) = exchange(&addr, &get("/healthz", ""), Duration::ZERO);
        assert!(got == 200 || got == 503, "{got}");
    }
}

#[test]
fn clients_that_write_the_whole_oversized_body_first_see_the_413() {
    let config = example_text();
    let node = TANDEM.node(config, "eu-west", &["--insecure"]);
    let dir = tempfile::tempdir().unwrap();
    let router = start_router(config, dir.path());
    let body_len = 8 * 1024 * 1024;
    for base in [node.url().to_owned(), router.url().to_owned()] {
        let addr = base.trim_start_matches("http://").to_owned();
        let (status, body) = write_all_then_read(&addr, body_len);
        assert_eq!((status, code_of(&body)), (413, "payload_too_large"), "at {base}: {body}");
    }
    // 50 at once: each ends (with the 413 or, past the drain limits, a close),
    // and the node stays healthy and takes writes.
    let addr = node.url().trim_start_matches("http://").to_owned();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                std::panic::catch_unwind(|| write_all_then_read(&addr, body_len)).ok()
            })
        })
        .collect();
    let answered =
        clients.into_iter().filter_map(|c| c.join().unwrap()).filter(|(s, _)| *s == 413).count();
    assert!(answered > 0, "no client of 50 saw its 413");
    let (status, health) = node.get("/healthz");
    assert_eq!(status, 200, "{health}");
    let (status, body) =
        node.put("/v1/records/article/after-the-flood", &serde_json::json!({ "value": 1 }));
    assert_eq!(status, 200, "{body}");
    eprintln!("{answered} of 50 concurrent oversized clients saw the 413");
}

/// The example with 1 s header read timeouts at node and router.
fn short_timeouts(config: &str) -> String {
    let out = config.replacen("header_read_timeout = \"10s\"", "header_read_timeout = \"1s\"", 2);
    assert_eq!(
        out.matches("header_read_timeout = \"1s\"").count(),
        2,
        "the example's timeouts moved"
    );
    out
}

fn start_router(config: &str, dir: &std::path::Path) -> Served {
    let path = dir.join("tandem.toml");
    // The example's fixed RESP port would be shared by routers of parallel tests.
    let resp = format!("127.0.0.1:{}", tandem_testkit::ports::free_port());
    std::fs::write(&path, config.replace("127.0.0.1:7110", &resp)).unwrap();
    let path = path.to_str().expect("a UTF-8 path");
    let router =
        TANDEM.serve(&["router", "--config", path, "--listen", "127.0.0.1:0", "--insecure"], &[]);
    assert!(router.stderr().contains("WARNING: --insecure"), "{}", router.stderr());
    router
}

fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

fn header(len: usize) -> String {
    format!("x-padding: {}\r\n", "p".repeat(len))
}

/// Send `request` (then wait `linger`, with the connection open) and read the
/// whole answer: (status, JSON body).
fn exchange(addr: &str, request: &[u8], linger: Duration) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may answer and close before it has read all of a huge head.
    let _ = s.write_all(request);
    std::thread::sleep(linger);
    read_answer(&mut s)
}

/// Send a PUT with an `len`-byte body in full, and only then read the answer.
fn write_all_then_read(addr: &str, len: usize) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "PUT /v1/records/article/big HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        s.write_all(&chunk[..n]).expect("the server reads the whole body before it answers");
        sent += n;
    }
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    assert!(
        head.to_ascii_lowercase().contains("content-type: application/json"),
        "not JSON: {head}"
    );
    (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())))
}

fn code_of(body: &Value) -> &str {
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    body["error"]["code"].as_str().unwrap_or("<none>")
}
