//! One `tandem node` process on a loopback port with its own temporary
//! directory (config, data, stdout and stderr logs): started on a config
//! text and a region, `kill -9`ed, stopped with SIGTERM, and started again
//! on the same data. Its requests answer `(status, JSON body)`, the shape the
//! single-node tests assert on.
//!
//! The node runs without an admin token or a replication secret: a lone
//! region that never talks to whatever may listen on its peers' configured
//! ports.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use crate::http::{self, Client, Method};
use crate::process::{Proc, Tandem};

/// How long a node may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request time-out of the node's HTTP client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One `tandem node` and its directory; killed when dropped.
pub struct Node {
    bin: Tandem,
    dir: tempfile::TempDir,
    region: String,
    extra_args: Vec<String>,
    proc: Option<Proc>,
    url: String,
    http: Client,
}

impl Tandem {
    /// Write `config_toml` to a temporary directory and start `region` of it
    /// on `127.0.0.1:0` with its data under `<tempdir>/data`.
    pub fn node(self, config_toml: &str, region: &str, extra_args: &[&str]) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("tandem-test-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::write(dir.path().join("tandem.toml"), config_toml).expect("write the config");
        let mut node = Node {
            bin: self,
            dir,
            region: region.to_owned(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            proc: None,
            url: String::new(),
            http: Client::new(REQUEST_TIMEOUT),
        };
        node.spawn();
        node
    }
}

impl Node {
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
        self.proc.as_ref().expect("the node is running").id()
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        self.proc.take().expect("the node is running").kill9();
    }

    /// SIGTERM and wait up to `timeout` for the process to exit. Returns its
    /// exit status and how long it took; panics (after SIGKILL) on time-out.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        match self.proc.take().expect("the node is running").terminate(timeout) {
            Ok(done) => done,
            Err(still_running) => {
                drop(still_running);
                panic!(
                    "the node did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Start the process again on the same config and data directory (the
    /// port may change). The previous process must have stopped.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    fn spawn(&mut self) {
        let mut cmd = self.bin.command();
        cmd.arg("node")
            .arg("--config")
            .arg(self.dir.path().join("tandem.toml"))
            .args(["--region", &self.region, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args)
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env_remove("TANDEM_REPLICATION_SECRET");
        let stdout = self.dir.path().join("stdout.log");
        let mut proc = Proc::spawn(cmd, &stdout, &self.stderr_path());
        let first = match proc.first_line(START_TIMEOUT) {
            Ok(line) => line,
            Err(why) => {
                drop(proc);
                panic!("tandem node {} {why}; stderr:\n{}", self.region, self.stderr())
            }
        };
        let prefix = format!("tandem node {} listening on ", self.region);
        let Some(url) = first.trim_end().strip_prefix(&prefix) else {
            drop(proc);
            panic!("unexpected first stdout line {first:?}; stderr:\n{}", self.stderr());
        };
        assert!(url.starts_with("http://127.0.0.1:"), "listening on {url}");
        self.url = url.to_owned();
        self.proc = Some(proc);
    }

    /// Send a request with an optional raw body; answer the status and the
    /// body as JSON (`Value::Null` when empty, a JSON string when not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.raw_opt(method, path, body.map(|b| b.as_bytes().to_vec()))
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
        self.raw_opt(method, path, Some(body))
    }

    fn raw_opt(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        self.http.send(http::method(method), &url, body).pair()
    }

    /// GET answering the status and the body as text (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let res = self.http.inner().get(&url).send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status().as_u16();
        (status, res.text().expect("read the body"))
    }

    /// The full answer to a GET (status, headers, body).
    pub fn answer(&self, path: &str) -> http::Answer {
        self.call(Method::GET, path, None)
    }

    /// One request with an optional JSON body, answered in full.
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> http::Answer {
        self.http.call(method, &format!("{}{path}", self.url), body, &[])
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
                assert_eq!(http::error_code(&body), "not_found", "{body}");
                None
            }
            _ => panic!("GET {entity}/{id}: {status} {body}"),
        }
    }
}
