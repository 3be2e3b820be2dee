//! Faults and operator actions on a running deployment: cut, heal and slow
//! directed links (`*` matches every region), `kill -9`, stop and start
//! processes, drain and restore regions at the router, isolate and rejoin a
//! region, undo all of it at once; and running `tandem` commands against
//! the deployment. The `try_` forms answer `Err` instead of panicking, for a
//! fault schedule that must go on when one step fails.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Deployment, Runner};
use crate::http::{Answer, Method};
use crate::process::Output;

impl Deployment {
    // ---- links ----------------------------------------------------------------

    /// Cut (`cut`) or heal (`heal`) the directed link carrying `from`'s
    /// changes to `to`: open connections close and new ones are refused.
    pub fn try_link(&self, from: &str, to: &str, action: &str) -> Result<(), String> {
        match &self.runner {
            Runner::Up(up) => {
                up.post(&self.control_http, &format!("/v1/links/{from}/{to}/{action}"), None)
            }
            Runner::Direct(direct) => direct.link(from, to, action),
        }
    }

    pub fn cut(&self, from: &str, to: &str) {
        self.try_link(from, to, "cut").unwrap_or_else(|e| panic!("cut {from}->{to}: {e}"));
    }

    pub fn heal(&self, from: &str, to: &str) {
        self.try_link(from, to, "heal").unwrap_or_else(|e| panic!("heal {from}->{to}: {e}"));
    }

    /// Cut both directions between two regions.
    pub fn partition(&self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Set the one-way latency of the directed link `from -> to` (`tandem up`).
    pub fn try_latency(&self, from: &str, to: &str, ms: u64) -> Result<(), String> {
        let Runner::Up(up) = &self.runner else {
            return Err("separate nodes have no link latency".into());
        };
        let body = json!({ "latency_ms": ms });
        up.post(&self.control_http, &format!("/v1/links/{from}/{to}/latency"), Some(&body))
    }

    // ---- processes ------------------------------------------------------------

    /// `kill` (SIGKILL; answers once it is gone), `stop` (SIGTERM) or `start`
    /// a process (a region, or `router`); `start` answers once it is healthy.
    pub fn try_process(&self, process: &str, action: &str) -> Result<(), String> {
        match &self.runner {
            Runner::Up(up) => {
                up.post(&self.control_http, &format!("/v1/processes/{process}/{action}"), None)
            }
            Runner::Direct(direct) => direct.process(process, action),
        }
    }

    /// `kill -9` a process and wait until it is gone.
    pub fn kill(&self, process: &str) {
        self.try_process(process, "kill").unwrap_or_else(|e| panic!("kill {process}: {e}"));
    }

    /// Stop a process gracefully (SIGTERM) and wait until it has exited.
    pub fn stop_process(&self, process: &str) {
        self.try_process(process, "stop").unwrap_or_else(|e| panic!("stop {process}: {e}"));
    }

    /// Start a stopped process again on its data and wait until it is healthy.
    pub fn start_region(&self, process: &str) {
        self.try_process(process, "start").unwrap_or_else(|e| panic!("start {process}: {e}"));
        if self.regions.contains_key(process) {
            self.wait_healthy(process);
        }
    }

    /// Wait until a region answers `/healthz` with 200; panics when its
    /// process exits first or the start time-out passes.
    pub fn wait_healthy(&self, region: &str) {
        let url = format!("{}/healthz", self.url(region));
        let started = Instant::now();
        loop {
            if let Ok(a) = self.try_call(Method::GET, &url, None, &[]) {
                if a.status == 200 {
                    return;
                }
            }
            let exited = match &self.runner {
                Runner::Up(up) => up.exited(),
                Runner::Direct(direct) => direct.exited(region),
            };
            if let Some(exit) = exited {
                panic!("{region} exited ({exit}) before it became healthy\n{}", self.logs());
            }
            let timeout = self.settings.limits.start;
            if started.elapsed() > timeout {
                panic!("{region} not healthy within {timeout:?}\n{}", self.logs());
            }
            std::thread::sleep(self.settings.limits.poll);
        }
    }

    // ---- the router's admin API -----------------------------------------------

    /// `POST /v1/admin/regions/{region}/{drain|restore}` with `token`.
    pub fn router_admin(&self, region: &str, action: &str, token: Option<&str>) -> Answer {
        let url = format!("{}/v1/admin/regions/{region}/{action}", self.router());
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        // Only the credentials given: not the operator's certificate.
        self.anonymous_http.call(Method::POST, &url, None, &headers)
    }

    /// [`Deployment::router_admin`] with the admin token; `Err` unless 200.
    pub fn try_router_admin(&self, region: &str, action: &str) -> Result<(), String> {
        let url = format!("{}/v1/admin/regions/{region}/{action}", self.router());
        self.try_admin(&url, &format!("{action} {region}")).map(|_| ())
    }

    pub fn drain(&self, region: &str) {
        let a = self.router_admin(region, "drain", Some(self.admin_token()));
        assert_eq!(a.status, 200, "drain {region}: {a}");
    }

    pub fn restore(&self, region: &str) {
        let a = self.router_admin(region, "restore", Some(self.admin_token()));
        assert_eq!(a.status, 200, "restore {region}: {a}");
    }

    // ---- a region's admin API -------------------------------------------------

    /// `POST /v1/admin/{isolate|rejoin}` at a region (stop or resume all of
    /// its replication without stopping the process); the answer's body.
    pub fn try_node_admin(&self, region: &str, action: &str) -> Result<Value, String> {
        let url = format!("{}/v1/admin/{action}", self.url(region));
        self.try_admin(&url, &format!("{action} {region}"))
    }

    pub fn admin(&self, region: &str, action: &str) -> Value {
        self.try_node_admin(region, action).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_admin(&self, url: &str, what: &str) -> Result<Value, String> {
        let auth = format!("Bearer {}", self.admin_token());
        match self.try_call(Method::POST, url, None, &[("authorization", &auth)]) {
            Ok(a) if a.status == 200 => Ok(a.body),
            Ok(a) => Err(format!("{what}: {a}")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    // ---- undoing every fault --------------------------------------------------

    /// Heal every link at its configured latency, start what is stopped,
    /// restore every drain and rejoin every isolated region.
    pub fn heal_everything(&self) -> Result<(), String> {
        self.try_link("*", "*", "heal")?;
        let names = self.region_names();
        for a in &names {
            for b in names.iter().filter(|b| *b != a) {
                self.try_latency(a, b, self.config.link_latency_ms(a, b))?;
            }
        }
        for (name, running) in self.running() {
            if !running {
                self.try_process(&name, "start")?;
            }
        }
        if !self.wait_until(Duration::from_secs(30), || self.router_sees_every_region()) {
            return Err("the router does not see every region up after healing".into());
        }
        for r in &names {
            self.try_router_admin(r, "restore")?;
            self.try_node_admin(r, "rejoin")?;
        }
        Ok(())
    }

    // ---- commands -------------------------------------------------------------

    /// Run `tandem ARGS` to completion with the deployment's environment (the
    /// admin token and the builder's variables) plus `env` (`None` removes a
    /// variable); its output is kept under the deployment's directory.
    pub fn cli(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let n = self.cli_runs.fetch_add(1, Ordering::SeqCst) + 1;
        let mut cmd = self.settings.bin.command();
        cmd.args(args).env("TANDEM_ADMIN_TOKEN", self.admin_token());
        for (k, v) in self
            .settings
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .chain(env.iter().copied())
        {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = self.root.join(format!("cli-{n}.out"));
        let err = self.root.join(format!("cli-{n}.err"));
        crate::process::run_logged(cmd, &out, &err, self.settings.limits.cli)
    }
}
