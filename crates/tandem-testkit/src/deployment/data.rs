//! The data plane and the read-only operations plane of a deployment, as a
//! test drives them: requests straight at a region or through the router
//! (with the caller's region), writes that must succeed, records, scans,
//! digests, audit logs, conflicts, status and metrics, subjects, and the
//! router's view of the regions.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::Deployment;
use crate::http::{Answer, Client, Method};

/// A digest and its record count, or why they are not known.
pub type Digest = Result<(String, u64), String>;

/// A deployment is also its HTTP client: `d.call(..)` and `d.try_call(..)`
/// are [`Client::call`] and [`Client::try_call`] with its time-outs.
impl std::ops::Deref for Deployment {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.http
    }
}

impl Deployment {
    // ---- requests -------------------------------------------------------------

    /// A request straight at a region.
    pub fn direct(
        &self,
        method: Method,
        region: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.call(method, &format!("{}{path}", self.url(region)), body, headers)
    }

    /// `GET` at a region.
    pub fn get(&self, region: &str, path: &str) -> Answer {
        self.direct(Method::GET, region, path, None, &[])
    }

    /// A request through the router from a caller in `client_region`.
    pub fn routed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        client_region: &str,
    ) -> Answer {
        let url = format!("{}{path}", self.router());
        self.call(method, &url, body, &[("x-tandem-client-region", client_region)])
    }

    /// A request that must answer 200.
    pub fn call_ok(
        &self,
        method: Method,
        url: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let a = self.call(method.clone(), url, Some(body), headers);
        assert_eq!(a.status, 200, "{method} {url} {headers:?} with {body}: {a}");
        a
    }

    /// A write straight at a region that must answer 200.
    pub fn direct_ok(&self, method: Method, region: &str, path: &str, body: &Value) -> Answer {
        self.call_ok(method, &format!("{}{path}", self.url(region)), body, &[])
    }

    /// A write through the router that must answer 200.
    pub fn routed_ok(&self, method: Method, path: &str, body: &Value, client: &str) -> Answer {
        let url = format!("{}{path}", self.router());
        self.call_ok(method, &url, body, &[("x-tandem-client-region", client)])
    }

    /// `PUT /v1/records/{entity}/{id}` (lww) through the router from a
    /// caller in `client_region`.
    pub fn put_routed(&self, entity: &str, id: &str, value: &str, client_region: &str) -> Answer {
        let path = format!("/v1/records/{entity}/{id}");
        self.routed(Method::PUT, &path, Some(&json!({ "value": value })), client_region)
    }

    /// `PUT /v1/records/{entity}/{id}` (lww) at a region; answers
    /// `{"region","hlc","version"}`.
    pub fn put_record(&self, region: &str, entity: &str, id: &str, value: Value) -> Value {
        let path = format!("/v1/records/{entity}/{id}");
        self.direct_ok(Method::PUT, region, &path, &json!({ "value": value })).body
    }

    /// `PATCH /v1/records/{entity}/{id}` (lww-fields) at a region.
    pub fn patch_record(&self, region: &str, entity: &str, id: &str, fields: Value) -> Value {
        let path = format!("/v1/records/{entity}/{id}");
        self.direct_ok(Method::PATCH, region, &path, &json!({ "fields": fields })).body
    }

    /// `POST /v1/records/{entity}/{id}/ops` (counters, or-set) at a region.
    pub fn op(&self, region: &str, entity: &str, id: &str, op: Value) -> Value {
        self.direct_ok(Method::POST, region, &format!("/v1/records/{entity}/{id}/ops"), &op).body
    }

    // ---- reads ----------------------------------------------------------------

    /// The materialized value of a record at a region; `None` on 404.
    pub fn value(&self, region: &str, entity: &str, id: &str) -> Option<Value> {
        let a = self.get(region, &format!("/v1/records/{entity}/{id}"));
        match a.status {
            200 => Some(a.body["value"].clone()),
            404 => None,
            _ => panic!("GET {entity}/{id} at {region}: {a}"),
        }
    }

    /// `GET /v1/digest[?entity=E]` at a region: the digest and the number of
    /// records, or why they are not known.
    pub fn try_digest(&self, region: &str, entity: Option<&str>) -> Digest {
        let path = entity.map_or("/v1/digest".to_owned(), |e| format!("/v1/digest?entity={e}"));
        let url = format!("{}{path}", self.url(region));
        let a = self.try_call(Method::GET, &url, None, &[]).map_err(|e| e.to_string())?;
        if a.status != 200 {
            return Err(format!("digest {entity:?} at {region}: {a}"));
        }
        Ok((
            a.body["digest"].as_str().unwrap_or("").to_owned(),
            a.body["records"].as_u64().unwrap_or(0),
        ))
    }

    /// The digest of one entity type at a region, and its record count.
    pub fn digest(&self, region: &str, entity: &str) -> (String, u64) {
        self.try_digest(region, Some(entity)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The digest of a region's whole store, and its record count.
    pub fn store_digest(&self, region: &str) -> (String, u64) {
        self.try_digest(region, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every record of `entity` a region serves (all scan pages).
    pub fn scan(&self, region: &str, entity: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/records/{entity}?limit=1000&after={a}"),
                None => format!("/v1/records/{entity}?limit=1000"),
            };
            let a = self.get(region, &path);
            assert_eq!(a.status, 200, "scan {entity} at {region}: {a}");
            out.extend(a.body["records"].as_array().expect("records").iter().cloned());
            match a.body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// Every entry of a region's audit log, through `GET /v1/audit`.
    pub fn audit(&self, region: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().expect("seq"));
            let a = self.get(region, &format!("/v1/audit?after={after}&limit=1000"));
            assert_eq!(a.status, 200, "audit of {region}: {a}");
            let page = a.body["entries"].as_array().expect("entries").clone();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// `GET /v1/status` of a region.
    pub fn status(&self, region: &str) -> Value {
        let a = self.get(region, "/v1/status");
        assert_eq!(a.status, 200, "status of {region}: {a}");
        a.body
    }

    /// `GET /v1/conflicts?limit=1000` of a region, newest first.
    pub fn conflicts(&self, region: &str) -> Vec<Value> {
        let a = self.get(region, "/v1/conflicts?limit=1000");
        assert_eq!(a.status, 200, "conflicts of {region}: {a}");
        a.body["conflicts"].as_array().expect("conflicts").clone()
    }

    /// The Prometheus text of a region.
    pub fn metrics(&self, region: &str) -> String {
        self.metrics_at(self.url(region))
    }

    /// The Prometheus text at `base` (a region's or the router's URL).
    pub fn metrics_at(&self, base: &str) -> String {
        self.http.text(&format!("{base}/metrics"))
    }

    // ---- subjects -------------------------------------------------------------

    /// Register a subject (through the router when there is one, else at its
    /// home region) and wait until every region knows it.
    pub fn register(&self, subject: &str, home: &str) {
        let path = format!("/v1/subjects/{subject}");
        let body = json!({ "home_region": home });
        match self.router {
            Some(_) => self.routed_ok(Method::PUT, &path, &body, home),
            None => self.direct_ok(Method::PUT, home, &path, &body),
        };
        self.wait_subject_everywhere(subject, home);
    }

    /// Wait until every region's registry says `subject` is homed at `home`.
    pub fn wait_subject_everywhere(&self, subject: &str, home: &str) {
        let timeout = self.settings.limits.converge;
        let known = || {
            self.region_names().iter().all(|r| {
                let a = self.get(r, &format!("/v1/subjects/{subject}"));
                a.status == 200 && a.body["home_region"] == home
            })
        };
        assert!(
            self.wait_until(timeout, known),
            "subject {subject} is not homed at {home} everywhere after {timeout:?}"
        );
    }

    // ---- the router's view ----------------------------------------------------

    /// `GET /v1/routes` of the router.
    pub fn routes(&self) -> Value {
        let a = self.call(Method::GET, &format!("{}/v1/routes", self.router()), None, &[]);
        assert_eq!(a.status, 200, "GET /v1/routes: {a}");
        a.body
    }

    /// The router's view of one region (`up`, `drained`, ...).
    pub fn route_of(&self, region: &str) -> Value {
        let routes = self.routes();
        routes["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .find(|r| r["region"] == region)
            .unwrap_or_else(|| panic!("no {region} in {routes}"))
            .clone()
    }

    /// Whether the router answers and sees every region up.
    pub fn router_sees_every_region(&self) -> bool {
        let url = format!("{}/v1/routes", self.router());
        self.try_call(Method::GET, &url, None, &[]).is_ok_and(|a| {
            a.body["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
        })
    }

    // ---- processes ------------------------------------------------------------

    /// Pids of the running processes (regions and router), by name.
    pub fn processes(&self) -> BTreeMap<String, u32> {
        self.process_table().into_iter().filter_map(|(n, (pid, _))| Some((n, pid?))).collect()
    }

    /// Whether each process is running.
    pub fn running(&self) -> BTreeMap<String, bool> {
        self.process_table().into_iter().map(|(n, (_, running))| (n, running)).collect()
    }

    fn process_table(&self) -> BTreeMap<String, (Option<u32>, bool)> {
        match &self.runner {
            super::Runner::Up(up) => up
                .processes(&self.control_http)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|(n, p)| {
                    let pid = p["pid"].as_u64().map(|p| p as u32);
                    (n, (pid, p["running"] == true))
                })
                .collect(),
            super::Runner::Direct(direct) => direct.processes(),
        }
    }

    /// The names of the environment variables of a running process.
    pub fn env_names(&self, process: &str) -> BTreeSet<String> {
        let pid =
            *self.processes().get(process).unwrap_or_else(|| panic!("{process} is not running"));
        crate::process::env_names(pid)
    }
}
