//! A deployment under `tandem up`: one process that starts every region (and
//! the router, unless told otherwise) and serves a control API on a random
//! port, named in `<data_dir>/up.json` once every process is healthy.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Settings;
use crate::http::{Client, Method};
use crate::process::Proc;

/// How `tandem up` is started, beyond the config.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpArgs {
    pub router: bool,
    pub capture_dir: Option<PathBuf>,
    pub clock_skew_ms: Vec<(String, i64)>,
    pub unsafe_ack_region: Option<String>,
    pub extra: Vec<String>,
}

pub(crate) struct UpRunner {
    proc: Mutex<Option<Proc>>,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control: String,
    /// Everything `tandem up` and its processes print.
    pub log: PathBuf,
}

impl UpRunner {
    /// Start `tandem up` and wait for its summary; `Err` with the log when it
    /// exits or times out first (everything it started is stopped).
    pub fn start(
        s: &Settings,
        args: &UpArgs,
        config_path: &Path,
        data_dir: &Path,
        root: &Path,
    ) -> Result<UpRunner, String> {
        let log = root.join("up.log");
        let mut cmd = s.bin.command();
        cmd.arg("up").arg("--config").arg(config_path).args(["--control", "127.0.0.1:0"]);
        if !args.router {
            cmd.arg("--no-router");
        }
        if let Some(c) = &args.capture_dir {
            cmd.arg("--capture-dir").arg(c);
        }
        for (region, ms) in &args.clock_skew_ms {
            cmd.arg(format!("--clock-skew={region}={ms}"));
        }
        if let Some(r) = &args.unsafe_ack_region {
            cmd.args(["--unsafe-ack-region", r]);
        }
        if s.insecure {
            cmd.arg("--insecure");
        }
        cmd.args(&args.extra);
        super::builder::apply_env(&mut cmd, s);
        let mut proc = Proc::spawn(cmd, &log, &log);
        let summary = data_dir.join("up.json");
        let started = Instant::now();
        let control = loop {
            let parsed = std::fs::read(&summary)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["control"].as_str().map(str::to_owned));
            if let Some(control) = parsed {
                break control;
            }
            let exited = proc.exited();
            if exited.is_some() || started.elapsed() > s.limits.start {
                if !proc.stop(s.limits.stop) {
                    crate::process::kill_orphans(root);
                }
                let why = exited.map_or_else(
                    || format!("no up.json within {:?}", s.limits.start),
                    |e| e.to_string(),
                );
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("tandem up did not come up ({why}):\n{text}"));
            }
            std::thread::sleep(s.limits.poll);
        };
        Ok(UpRunner { proc: Mutex::new(Some(proc)), control, log })
    }

    /// SIGTERM `tandem up` (it stops its regions) and wait; false when it had
    /// to be SIGKILLed.
    pub fn stop(&self, timeout: Duration) -> bool {
        let proc = self.proc.lock().expect("up").take();
        proc.is_none_or(|p| p.stop(timeout))
    }

    /// How `tandem up` exited, if it did.
    pub fn exited(&self) -> Option<String> {
        let mut proc = self.proc.lock().expect("up");
        proc.as_mut()?.exited().map(|s| format!("tandem up: {s}"))
    }

    /// `POST` to the control API; `Err` says what went wrong.
    pub fn post(&self, http: &Client, path: &str, body: Option<&Value>) -> Result<(), String> {
        let url = format!("{}{path}", self.control);
        let a = http
            .try_call(Method::POST, &url, body, &[])
            .map_err(|e| format!("POST {path}: {e}"))?;
        if (200..300).contains(&a.status) {
            Ok(())
        } else {
            Err(format!("POST {path}: {a}"))
        }
    }

    /// `GET /v1/deployment`: every process by name, with `pid` and `running`.
    pub fn processes(&self, http: &Client) -> Result<serde_json::Map<String, Value>, String> {
        let url = format!("{}/v1/deployment", self.control);
        let a =
            http.try_call(Method::GET, &url, None, &[]).map_err(|e| format!("GET {url}: {e}"))?;
        match a.body["processes"].as_object() {
            Some(p) if a.status == 200 => Ok(p.clone()),
            _ => Err(format!("GET /v1/deployment: {a}")),
        }
    }
}
