//! The validated run: the workload shapes (one write request per workload,
//! its method, path and body) and the [`Plan`] a run follows, derived from
//! the arguments with every limit checked and every error naming its flag.
//! Pure: nothing here sends anything.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Uri};

use super::LoadArgs;

/// Most concurrent clients (each one holds a connection).
pub const CLIENTS_MAX: usize = 4096;
/// Largest `--value-bytes`: a node refuses bodies above 1 MiB by default anyway.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most distinct record ids.
pub const KEYS_MAX: u64 = 1 << 32;
/// Longest measured run, one day.
pub const DURATION_SECS_MAX: u64 = 24 * 60 * 60;
/// Longest warm-up, one hour.
pub const WARMUP_SECS_MAX: u64 = 60 * 60;
/// Longest entity type name, as in the configuration.
const ENTITY_NAME_LEN_MAX: usize = 64;

/// The write a workload sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Put,
    Incr,
    Patch,
    Add,
}

impl Workload {
    fn parse(name: &str) -> anyhow::Result<Workload> {
        match name {
            "put" => Ok(Workload::Put),
            "incr" => Ok(Workload::Incr),
            "patch" => Ok(Workload::Patch),
            "add" => Ok(Workload::Add),
            other => bail!("--workload: unknown workload {other:?}; use put, incr, patch or add"),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Incr => "incr",
            Workload::Patch => "patch",
            Workload::Add => "add",
        }
    }

    pub(super) fn method(self) -> Method {
        match self {
            Workload::Put => Method::PUT,
            Workload::Patch => Method::PATCH,
            Workload::Incr | Workload::Add => Method::POST,
        }
    }

    /// What follows `/v1/records/{entity}/{id}` in the path.
    fn path_suffix(self) -> &'static str {
        match self {
            Workload::Put | Workload::Patch => "",
            Workload::Incr | Workload::Add => "/ops",
        }
    }

    /// The request body: the same for every request of a run, so that the
    /// generator spends its time waiting on the target, not serializing.
    fn body(self, value_bytes: usize) -> Bytes {
        let value = "x".repeat(value_bytes);
        let body = match self {
            Workload::Put => serde_json::json!({ "value": value }),
            Workload::Incr => serde_json::json!({ "op": "incr", "by": 1 }),
            Workload::Patch => serde_json::json!({ "fields": { "v": value } }),
            Workload::Add => serde_json::json!({ "op": "add", "elements": [value] }),
        };
        Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
    }
}

/// A validated run: everything a client task needs, derived from `LoadArgs`.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) workload: Workload,
    /// `scheme://authority` of the target, without a trailing `/`.
    pub(super) base: String,
    pub(super) entity: String,
    pub(super) keys: u64,
    body: Bytes,
    pub(super) clients: usize,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    /// Pause between one client's request starts, when a rate is set.
    pub(super) interval: Option<Duration>,
    /// `Authorization` of every request (`Bearer <api key>`).
    pub(super) auth: Option<String>,
}

impl Plan {
    pub(super) fn from_args(args: &LoadArgs) -> anyhow::Result<Plan> {
        let workload = Workload::parse(&args.workload)?;
        let base = parse_target(&args.target)?;
        if args.clients == 0 || args.clients > CLIENTS_MAX {
            bail!("--clients: {} is out of range; use 1 to {CLIENTS_MAX}", args.clients);
        }
        if args.duration_secs == 0 || args.duration_secs > DURATION_SECS_MAX {
            bail!(
                "--duration-secs: {} is out of range; use 1 to {DURATION_SECS_MAX}",
                args.duration_secs
            );
        }
        if args.warmup_secs > WARMUP_SECS_MAX {
            bail!(
                "--warmup-secs: {} is out of range; use 0 to {WARMUP_SECS_MAX}",
                args.warmup_secs
            );
        }
        if args.keys == 0 || args.keys > KEYS_MAX {
            bail!("--keys: {} is out of range; use 1 to {KEYS_MAX}", args.keys);
        }
        if args.value_bytes > VALUE_BYTES_MAX {
            bail!(
                "--value-bytes: {} is out of range; use 0 to {VALUE_BYTES_MAX} (1 MiB)",
                args.value_bytes
            );
        }
        let entity_ok = !args.entity.is_empty()
            && args.entity.len() <= ENTITY_NAME_LEN_MAX
            && args
                .entity
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !entity_ok {
            bail!(
                "--entity: invalid entity name {:?}; use 1 to {ENTITY_NAME_LEN_MAX} of a-z, 0-9 and '_'",
                args.entity
            );
        }
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));
        Ok(Plan {
            interval,
            auth: None,
            workload,
            base,
            entity: args.entity.clone(),
            keys: args.keys,
            body: workload.body(args.value_bytes),
            clients: args.clients,
            warmup: Duration::from_secs(args.warmup_secs),
            duration: Duration::from_secs(args.duration_secs),
        })
    }

    fn uri(&self, key: u64) -> Uri {
        let uri = format!(
            "{}/v1/records/{}/load:{key}{}",
            self.base,
            self.entity,
            self.workload.path_suffix()
        );
        // The base and entity were validated and the id is `load:<digits>`.
        uri.parse().expect("a validated plan makes valid URIs")
    }

    pub(super) fn request(&self, key: u64) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.workload.method())
            .uri(self.uri(key))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            builder = builder.header(hyper::header::AUTHORIZATION, auth);
        }
        builder.body(Full::new(self.body.clone())).expect("a validated plan makes valid requests")
    }
}

/// `https://host:port[/]` to `https://host:port` (or `http://`).
fn parse_target(target: &str) -> anyhow::Result<String> {
    let uri: Uri = target.parse().with_context(|| format!("--target: {target:?} is not a URL"))?;
    let Some(scheme @ ("http" | "https")) = uri.scheme_str() else {
        bail!("--target: {target:?} must start with https:// (or http://)");
    };
    let Some(authority) = uri.authority() else {
        bail!("--target: {target:?} has no host");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--target: {target:?} must be a base URL without a path, e.g. http://127.0.0.1:7101");
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn args(target: &str) -> LoadArgs {
        LoadArgs {
            target: target.to_string(),
            clients: 16,
            duration_secs: 10,
            warmup_secs: 1,
            workload: "put".to_string(),
            entity: "article".to_string(),
            keys: 10_000,
            value_bytes: 100,
            json: false,
            rate: 0,
            config: None,
            connect: Default::default(),
        }
    }

    fn refused(args: &LoadArgs, needle: &str) {
        let err = Plan::from_args(args).expect_err("should be refused");
        let text = format!("{err:#}");
        assert!(text.contains(needle), "{text:?} does not name {needle:?}");
    }

    // ---- argument validation ---------------------------------------------

    #[test]
    fn defaults_make_a_plan() {
        let plan = Plan::from_args(&args("http://127.0.0.1:7101")).unwrap();
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!(plan.base, "http://127.0.0.1:7101");
        assert_eq!(plan.clients, 16);
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.warmup, Duration::from_secs(1));
    }

    #[test]
    fn target_trailing_slash_is_dropped() {
        let plan = Plan::from_args(&args("http://localhost:7100/")).unwrap();
        assert_eq!(plan.base, "http://localhost:7100");
    }

    #[test]
    fn refuses_bad_targets() {
        refused(&args("127.0.0.1:7101"), "must start with https://");
        refused(&args("ftp://127.0.0.1:7101"), "must start with https://");
        assert_eq!(
            Plan::from_args(&args("https://127.0.0.1:7100/")).unwrap().base,
            "https://127.0.0.1:7100"
        );
        refused(&args("http://127.0.0.1:7101/v1"), "without a path");
        refused(&args("not a url"), "not a URL");
    }

    #[test]
    fn refuses_out_of_range_numbers() {
        let mut a = args("http://127.0.0.1:7101");
        a.clients = 0;
        refused(&a, "--clients");
        a.clients = CLIENTS_MAX + 1;
        refused(&a, "--clients");
        a.clients = CLIENTS_MAX;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.value_bytes = VALUE_BYTES_MAX + 1;
        refused(&a, "--value-bytes");
        a.value_bytes = VALUE_BYTES_MAX;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.duration_secs = 0;
        refused(&a, "--duration-secs");
        a.duration_secs = DURATION_SECS_MAX + 1;
        refused(&a, "--duration-secs");

        let mut a = args("http://127.0.0.1:7101");
        a.warmup_secs = WARMUP_SECS_MAX + 1;
        refused(&a, "--warmup-secs");
        a.warmup_secs = 0;
        Plan::from_args(&a).unwrap();

        let mut a = args("http://127.0.0.1:7101");
        a.keys = 0;
        refused(&a, "--keys");
        a.keys = KEYS_MAX + 1;
        refused(&a, "--keys");
    }

    #[test]
    fn refuses_unknown_workloads_and_bad_entities() {
        let mut a = args("http://127.0.0.1:7101");
        a.workload = "get".to_string();
        refused(&a, "--workload");
        let mut a = args("http://127.0.0.1:7101");
        for bad in ["", "Article", "a/b", "a b", &"a".repeat(65)] {
            a.entity = bad.to_string();
            refused(&a, "--entity");
        }
    }

    // ---- requests per workload -------------------------------------------

    fn body_json(workload: Workload, value_bytes: usize) -> serde_json::Value {
        serde_json::from_slice(&workload.body(value_bytes)).unwrap()
    }

    #[test]
    fn bodies_follow_the_http_api() {
        let value = "x".repeat(5);
        assert_eq!(body_json(Workload::Put, 5), serde_json::json!({ "value": value }));
        assert_eq!(body_json(Workload::Incr, 5), serde_json::json!({ "op": "incr", "by": 1 }));
        assert_eq!(body_json(Workload::Patch, 5), serde_json::json!({ "fields": { "v": value } }));
        assert_eq!(
            body_json(Workload::Add, 5),
            serde_json::json!({ "op": "add", "elements": [value] })
        );
    }

    #[test]
    fn put_body_carries_value_bytes() {
        let body = Workload::Put.body(100);
        // {"value":"<100 x>"}
        assert_eq!(body.len(), 100 + r#"{"value":""}"#.len());
        assert_eq!(Workload::Put.body(0).as_ref(), br#"{"value":""}"#);
    }

    #[test]
    fn requests_per_workload() {
        let cases = [
            ("put", Method::PUT, "/v1/records/article/load:42"),
            ("patch", Method::PATCH, "/v1/records/article/load:42"),
            ("incr", Method::POST, "/v1/records/article/load:42/ops"),
            ("add", Method::POST, "/v1/records/article/load:42/ops"),
        ];
        for (workload, method, path) in cases {
            let mut a = args("http://127.0.0.1:7101/");
            a.workload = workload.to_string();
            let plan = Plan::from_args(&a).unwrap();
            let request = plan.request(42);
            assert_eq!(request.method(), method, "{workload}");
            assert_eq!(request.uri().path(), path, "{workload}");
            assert_eq!(request.uri().authority().unwrap().as_str(), "127.0.0.1:7101");
            assert_eq!(request.headers()[hyper::header::CONTENT_TYPE], "application/json");
        }
    }
}
