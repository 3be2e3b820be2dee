//! The bodies of tandem's fuzz targets, one function per target, each taking
//! the fuzzer's bytes. What they hold the product to: no panic, no unbounded
//! allocation (run with `-malloc_limit_mb`, see docs/TESTING.md), and the
//! target's own properties:
//!
//! - `wire_frames`: the replication wire decoder (`FrameDecoder`,
//!   `decode_message` of `Frame`, `ForwardRequest`, `ForwardResponse`) never
//!   holds more than one frame, and whatever it accepts re-encodes to a
//!   message that decodes to the same value;
//! - `config_toml`: `Config::from_toml_str` either refuses a document or
//!   accepts one whose re-serialization (what `tandem up` writes for its
//!   processes) parses back to the same config;
//! - `node_http`: a whole node (`tandem_node::run` with the in-memory store,
//!   in this process, on loopback): any method, path, headers and body get
//!   an answer that is not a 5xx other than the documented 503s, and every
//!   error answer is the JSON error object with a code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tandem_config::Config;
use tandem_node::replication::wire::{
    self, decode_message, encode_message, ForwardRequest, ForwardResponse, Frame, FrameDecoder,
};

/// The frame limit the fuzzed decoder runs with (small, so that the limit
/// itself is exercised).
const FRAME_MAX: usize = 64 * 1024;

pub fn wire_frames(data: &[u8]) {
    // The first byte sets the chunk size the stream arrives in.
    let (chunk, rest) = match data.split_first() {
        Some((c, rest)) => ((*c as usize).max(1), rest),
        None => return,
    };
    let mut decoder = FrameDecoder::new(FRAME_MAX);
    'stream: for part in rest.chunks(chunk) {
        decoder.push(part);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => round_trip(&frame),
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
        assert!(
            decoder.buffered() <= FRAME_MAX + 4 + chunk,
            "the decoder holds {} bytes, more than one frame",
            decoder.buffered()
        );
    }
    if let Ok(f) = decode_message::<Frame>(rest, FRAME_MAX) {
        round_trip(&f);
    }
    if let Ok(r) = decode_message::<ForwardRequest>(rest, FRAME_MAX) {
        round_trip(&r);
    }
    if let Ok(r) = decode_message::<ForwardResponse>(rest, FRAME_MAX) {
        round_trip(&r);
    }
}

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode_message(value);
    let again: T = decode_message(&bytes, usize::MAX).expect("a re-encoded message decodes");
    assert_eq!(&again, value, "a decoded message must survive a round trip");
    let _ = wire::WIRE_VERSION;
}

pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::from_toml_str(text) else { return };
    // `tandem up` hands its processes `toml::to_string(&config)`.
    let written = toml::to_string(&config).expect("an accepted config serializes");
    let reread = Config::from_toml_str(&written)
        .unwrap_or_else(|e| panic!("an accepted config must re-read: {e}\n{written}"));
    assert_eq!(reread, config, "the config changed on its way through TOML:\n{written}");
}

// ---- the node in-process ----------------------------------------------------

const ADMIN_TOKEN: &str = "fuzz-admin";
const SECRET: &str = "fuzz-secret";
/// Requests served by one node before it is replaced (its store only grows).
const REQUESTS_PER_NODE: u64 = 20_000;

struct Node {
    addr: SocketAddr,
    served: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    node: Mutex<Node>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let node = start_node(&rt);
        Harness { rt, node: Mutex::new(node) }
    })
}

/// `tandem_node::run` on a free loopback port with the in-memory store: the
/// real router, handlers, writer and replication endpoints.
fn start_node(rt: &tokio::runtime::Runtime) -> Node {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr")
    };
    let mut config = Config::example();
    // Peers that never answer: the pull loops back off quietly.
    let peer_urls: BTreeMap<String, String> = config
        .regions
        .iter()
        .filter(|r| r.name != "eu-west")
        .map(|r| (r.name.clone(), "http://127.0.0.1:9".to_string()))
        .collect();
    config.replication.backoff_max = std::time::Duration::from_secs(60);
    // No pseudonym key here: without projections the node needs none.
    for e in config.entities.values_mut() {
        e.analytics = None;
    }
    let opts = tandem_node::NodeOptions {
        config,
        region: "eu-west".into(),
        listen: Some(addr),
        data_dir: Some(std::env::temp_dir()),
        clock_skew_ms: 0,
        backend: tandem_node::StoreBackend::Memory,
        admin_token: Some(ADMIN_TOKEN.into()),
        replication_secret: Some(SECRET.into()),
        peer_urls,
        unsafe_ack_before_commit: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        if let Err(e) = tandem_node::run(opts, async {
            let _ = stopped.await;
        })
        .await
        {
            panic!("the fuzzed node failed: {e:#}");
        }
    });
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(started.elapsed().as_secs() < 30, "the node did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Node { addr, served: 0, stop: Some(stop) }
}

const METHODS: [&str; 6] = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"];
const PATHS: [&str; 16] = [
    "/v1/records/article/a",
    "/v1/records/profile/al:a",
    "/v1/records/settings/al:a",
    "/v1/records/likes/a/ops",
    "/v1/records/tags/a/ops",
    "/v1/records/cart/al:a/ops",
    "/v1/records/balance/al:a/ops",
    "/v1/records/article",
    "/v1/subjects/al",
    "/v1/replication/forward",
    "/v1/replication/stream",
    "/v1/admin/isolate",
    "/v1/admin/rejoin",
    "/v1/digest",
    "/v1/audit",
    "/v1/conflicts",
];

/// Input layout: byte 0 picks the method, byte 1 the path (or, past the
/// table, the path is taken from the input up to a NUL), byte 2's bits add
/// headers (admin token, replication secret and peer, a failover marker, a
/// query string from the input); the rest is the body.
pub fn node_http(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let method = METHODS[data[0] as usize % METHODS.len()];
    let flags = data[2];
    let mut rest = &data[3..];
    let path: String = if (data[1] as usize) < PATHS.len() * 8 {
        let base = PATHS[data[1] as usize % PATHS.len()];
        if flags & 0x10 != 0 {
            let (q, body) = split_nul(rest);
            rest = body;
            format!("{base}?{}", encode_target(q))
        } else {
            base.to_string()
        }
    } else {
        let (p, body) = split_nul(rest);
        rest = body;
        format!("/{}", encode_target(p))
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    if flags & 1 != 0 {
        head.push_str(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    }
    if flags & 2 != 0 {
        head.push_str(&format!("Authorization: Bearer {SECRET}\r\n"));
    }
    if flags & 4 != 0 {
        let peer = if flags & 8 != 0 { "us-east" } else { "eu-west" };
        head.push_str(&format!("X-Tandem-Peer: {peer}\r\n"));
    }
    if flags & 0x20 != 0 {
        head.push_str("X-Tandem-Failover: eu-central\r\n");
    }
    if flags & 0x40 != 0 {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", rest.len()));
    let h = harness();
    let addr = {
        let mut node = h.node.lock().expect("node");
        node.served += 1;
        if node.served > REQUESTS_PER_NODE {
            if let Some(stop) = node.stop.take() {
                let _ = stop.send(());
            }
            *node = start_node(&h.rt);
        }
        node.addr
    };
    let streaming = path.starts_with("/v1/replication/stream");
    let mut s = TcpStream::connect(addr).expect("connect to the node");
    let wait = std::time::Duration::from_millis(if streaming { 300 } else { 20_000 });
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(rest).expect("write body");
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    if read.is_err() && streaming {
        // An open stream: it never ends by itself.
        return;
    }
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") || method == "HEAD" {
        return;
    }
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    if status >= 500 {
        let allowed = matches!(code.as_deref(), Some("overloaded" | "unavailable" | "isolated"));
        assert!(allowed, "{method} {path}: {status} {body}");
    }
    if status >= 400 {
        assert!(code.is_some(), "{method} {path}: {status} without a JSON error: {body:?}");
    }
}

/// The fuzzer's bytes as a valid request target: bytes HTTP allows there
/// stay, everything else is percent-encoded. (An invalid request line is
/// refused by the HTTP parser before the node sees it, with a bare 400.)
fn encode_target(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
