//! A small harness for the multi-process tests: `Node` runs the real `tandem
//! node` binary on a loopback port with its own temporary data directory, can
//! kill it (`kill -9`), stop it gracefully (SIGTERM) and start it again on the
//! same data, and offers blocking HTTP helpers that answer `(status, JSON body)`.
//! Each test binary uses a different subset of it.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request time-out of the harness's HTTP client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The built-in example deployment (the same text `tandem config example` prints).
pub fn example_config() -> &'static str {
    tandem_config::EXAMPLE_TOML
}

/// One `tandem node` process and the temporary directory holding its config,
/// data and stderr log. The process is killed when the `Node` is dropped.
pub struct Node {
    dir: tempfile::TempDir,
    region: String,
    extra_args: Vec<String>,
    child: Option<Child>,
    url: String,
    http: reqwest::blocking::Client,
}

impl Node {
    /// Write `config_toml` to a temporary directory and start `region` of it on
    /// `127.0.0.1:0` with its data under `<tempdir>/data`.
    pub fn start(config_toml: &str, region: &str, extra_args: &[&str]) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("tandem-test-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::write(dir.path().join("tandem.toml"), config_toml).expect("write the config");
        let mut node = Node {
            dir,
            region: region.to_owned(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            url: String::new(),
            http: client(),
        };
        node.spawn();
        node
    }

    /// `http://127.0.0.1:PORT` of the running process.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Everything the node (all its runs) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The process id of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        child.kill().expect("SIGKILL the node");
        child.wait().expect("reap the node");
    }

    /// SIGTERM and wait up to `timeout` for the process to exit. Returns its
    /// exit status and how long it took; panics (after SIGKILL) on time-out.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("the node is running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        loop {
            if let Some(exit) = child.try_wait().expect("poll the node") {
                return (exit, started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the process again on the same config and data directory (the port
    /// may change). The previous process must have stopped.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    /// `--peer-url` for every other region, towards a port nothing listens on.
    fn lone_peer_urls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("tandem.toml")).expect("config");
        let config = tandem_config::Config::from_toml_str(&text).expect("a valid config");
        config
            .regions
            .iter()
            .filter(|r| r.name != self.region)
            .flat_map(|r| ["--peer-url".to_owned(), format!("{}=http://127.0.0.1:9", r.name)])
            .collect()
    }

    fn spawn(&mut self) {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open the stderr log");
        let config = self.dir.path().join("tandem.toml");
        let data = self.data_dir();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("node")
            .arg("--config")
            .arg(&config)
            .args(["--region", &self.region, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(&self.extra_args)
            // A lone region of a multi-region deployment: it has the
            // replication secret it needs to start, but its peers' addresses
            // point at a closed port, so it never talks to whatever may listen
            // on their configured ports.
            .args(self.lone_peer_urls())
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env("TANDEM_REPLICATION_SECRET", "lone-node-secret")
            .env("TANDEM_PSEUDONYM_KEY_EU", "11".repeat(32))
            .env("TANDEM_PSEUDONYM_KEY_US", "22".repeat(32))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn tandem node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so that the node never writes into a closed pipe.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tandem node {} printed no listening line within {START_TIMEOUT:?}; stderr:\n{}",
                    self.region,
                    self.stderr()
                );
            }
        };
        let prefix = format!("tandem node {} listening on ", self.region);
        let Some(url) = first.trim_end().strip_prefix(&prefix) else {
            let _ = child.kill();
            let exit = child.wait();
            panic!(
                "unexpected first stdout line {first:?} (exit: {exit:?}); stderr:\n{}",
                self.stderr()
            );
        };
        assert!(url.starts_with("http://127.0.0.1:"), "listening on {url}");
        self.url = url.to_owned();
        self.child = Some(child);
    }

    /// Send a request with an optional raw body; answer the status and the body
    /// as JSON (`Value::Null` when empty, a JSON string when it is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        request(&self.http, &self.url, method, path, body.map(|b| b.as_bytes().to_vec()))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("PUT", path, Some(&body.to_string()))
    }

    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("PATCH", path, Some(&body.to_string()))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.request("DELETE", path, None)
    }

    /// A request whose body is exactly these bytes (malformed JSON, huge bodies).
    pub fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        request(&self.http, &self.url, method, path, Some(body))
    }

    /// GET answering the status and the body as text (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().expect("read the body"))
    }

    /// The digest of all materialized state (`GET /v1/digest`).
    pub fn digest(&self) -> String {
        let (status, body) = self.get("/v1/digest");
        assert_eq!(status, 200, "digest: {body}");
        body["digest"].as_str().expect("digest is a string").to_owned()
    }

    /// `log.last_seq` of `GET /v1/status`.
    pub fn last_seq(&self) -> u64 {
        let (status, body) = self.get("/v1/status");
        assert_eq!(status, 200, "status: {body}");
        body["log"]["last_seq"].as_u64().expect("last_seq")
    }

    /// The materialized value of a record, `None` when it answers 404.
    pub fn value(&self, entity: &str, id: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/v1/records/{entity}/{id}"));
        match status {
            200 => Some(body["value"].clone()),
            404 => {
                assert_eq!(error_code(&body), "not_found", "{body}");
                None
            }
            _ => panic!("GET {entity}/{id}: {status} {body}"),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking HTTP client for tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build an HTTP client")
}

/// Send one request on `client`; panics on a transport error.
pub fn request(
    client: &reqwest::blocking::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    try_request(client, base, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Send one request on `client`; a transport error (refused, reset) is `Err`.
pub fn try_request(
    client: &reqwest::blocking::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(body) = body {
        req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    }
    let res = req.send()?;
    let status = res.status().as_u16();
    let bytes = res.bytes()?;
    Ok((status, parse_body(&bytes)))
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The `error.code` of an error body; panics when the body is not an API error.
pub fn error_code(body: &Value) -> &str {
    let code =
        body["error"]["code"].as_str().unwrap_or_else(|| panic!("not a JSON API error: {body}"));
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an API error carries a message: {body}"
    );
    code
}

/// A `tandem` process started with arbitrary arguments (`tandem router`, or a
/// node with options `Node` does not take), killed when dropped.
pub struct Process {
    child: Child,
    /// What it printed after `listening on `.
    pub url: String,
}

impl Process {
    /// Run `tandem <args>` with `env` and wait for its `listening on <url>` line.
    pub fn start(args: &[String], env: &[(&str, String)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tandem");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read the listening line");
        // Keep draining, so the process never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let url =
            line.split("listening on ").nth(1).map(|u| u.trim().to_owned()).unwrap_or_else(|| {
                panic!("`tandem {}` printed no listening line: {line:?}", args.join(" "))
            });
        Process { child, url }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
