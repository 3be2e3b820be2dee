//! One `tandem node` process on a loopback port with its own temporary
//! directory (config, data, stdout and stderr logs): started on a config
//! text and a region, `kill -9`ed, stopped with SIGTERM, and started again
//! on the same data. It is an [`Endpoint`]: its requests answer
//! `(status, JSON body)`, the shape the single-node tests assert on.
//!
//! The node is a lone region of a multi-region deployment: it has the
//! certificates (made by `tandem certs init` in its directory), the API
//! keys, the replication secret and the pseudonym keys it needs to start,
//! but its peers' addresses point at a closed port, so it never talks to
//! whatever may listen on their configured ports; it runs without an admin
//! token, and the test's client presents the operator's certificate and the
//! kit's API key. With `--insecure` among its arguments it runs plaintext.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::process::{Proc, Tandem};

/// How long a node may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
pub use crate::endpoint::REQUEST_TIMEOUT;

/// One `tandem node` and its directory; killed when dropped.
pub struct Node {
    bin: Tandem,
    dir: tempfile::TempDir,
    region: String,
    extra_args: Vec<String>,
    proc: Option<Proc>,
    endpoint: Endpoint,
    /// Started with `--insecure`: plaintext, no certificates.
    insecure: bool,
}

/// A node's requests are its endpoint's.
impl std::ops::Deref for Node {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Tandem {
    /// Write `config_toml` to a temporary directory and start `region` of it
    /// on `127.0.0.1:0` with its data under `<tempdir>/data`.
    pub fn node(self, config_toml: &str, region: &str, extra_args: &[&str]) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("tandem-test-")
            .tempdir()
            .expect("create a temporary directory");
        let config = dir.path().join("tandem.toml");
        // Fixed RESP ports (the example's 7111...) would collide between
        // tests running at once: each gets a free one.
        let config_toml: String = config_toml
            .lines()
            .map(|line| match line.trim_start().strip_prefix("resp_listen = \"127.0.0.1:") {
                Some(_) => format!("resp_listen = \"127.0.0.1:{}\"\n", crate::ports::free_port()),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&config, &config_toml).expect("write the config");
        let insecure = extra_args.contains(&"--insecure");
        let endpoint = if insecure {
            Endpoint::new("")
        } else {
            let certs = dir.path().join("data").join("certs");
            crate::tls::init_certs(&self, &config, &certs);
            crate::tls::write_api_keys(&dir.path().join("data").join("api-keys"));
            let tls = crate::tls::client_config(&certs, Some("operator"));
            let auth = format!("Bearer {}", crate::tls::API_KEY);
            Endpoint::with_client(
                "",
                crate::http::Client::tls(REQUEST_TIMEOUT, None, tls, Some(&auth)),
            )
        };
        let mut node = Node {
            bin: self,
            dir,
            region: region.to_owned(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            proc: None,
            endpoint,
            insecure,
        };
        node.spawn();
        node
    }
}

impl Node {
    /// `https`, or `http` for a node started with `--insecure`.
    pub fn scheme(&self) -> &'static str {
        if self.insecure {
            "http"
        } else {
            "https"
        }
    }

    /// The node reached by a client with the kit's API key but no
    /// certificate (the operator's is what the node's own endpoint presents).
    pub fn anonymous(&self) -> Endpoint {
        if self.insecure {
            return Endpoint::new(self.url());
        }
        let tls = crate::tls::client_config(&self.certs_dir(), None);
        let auth = format!("Bearer {}", crate::tls::API_KEY);
        Endpoint::with_client(
            self.url(),
            crate::http::Client::tls(REQUEST_TIMEOUT, None, tls, Some(&auth)),
        )
    }

    /// Its certificates directory (`<data_dir>/certs`).
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir().join("certs")
    }

    /// The region it runs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Register `subject` with its home region (at this node) before writing
    /// its records.
    #[track_caller]
    pub fn register(&self, subject: &str, home_region: &str) {
        let body = serde_json::json!({ "home_region": home_region });
        crate::endpoint::written(self.put(&format!("/v1/subjects/{subject}"), &body), &self.region);
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

    /// `--peer-url` for every other region, towards a port nothing listens on.
    fn lone_peer_urls(&self) -> Vec<String> {
        let scheme = self.scheme();
        let text = std::fs::read_to_string(self.dir.path().join("tandem.toml")).expect("config");
        crate::config::parse(&text)
            .regions
            .iter()
            .filter(|r| r.name != self.region)
            .flat_map(|r| ["--peer-url".to_owned(), format!("{}={scheme}://127.0.0.1:9", r.name)])
            .collect()
    }

    fn spawn(&mut self) {
        let mut cmd = self.bin.command();
        cmd.arg("node")
            .arg("--config")
            .arg(self.dir.path().join("tandem.toml"))
            .args(["--region", &self.region, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(self.lone_peer_urls())
            .args(&self.extra_args)
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env("TANDEM_REPLICATION_SECRET", "lone-node-secret")
            .envs(crate::config::TEST_PSEUDONYM_KEYS);
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
        let expected = format!("{}://127.0.0.1:", self.scheme());
        assert!(url.starts_with(&expected), "listening on {url}");
        self.endpoint.set_url(url);
        self.proc = Some(proc);
    }
}
