//! One process's HTTP surface as the single-process tests drive it: a base
//! URL and a client whose requests answer `(status, JSON body)` (`Value::Null`
//! when empty, a JSON string when not JSON), plus the few reads those tests
//! share (digest, log position, a record's value), and the check that a
//! refused request changed nothing it can see. A [`crate::Node`] and a
//! [`crate::process::Served`] process are endpoints.

use std::time::Duration;

use serde_json::Value;

use crate::http::{self, Answer, Client, Method};

/// Per-request time-out of an endpoint's client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A base URL (`https://127.0.0.1:PORT`, or `http://` with `--insecure`)
/// and a client.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    http: Client,
}

impl Endpoint {
    /// A plain-HTTP endpoint.
    pub fn new(url: &str) -> Endpoint {
        Endpoint { url: url.to_owned(), http: Client::new(REQUEST_TIMEOUT) }
    }

    /// An endpoint reached with `http` (e.g. a TLS client of [`Client::tls`]).
    pub fn with_client(url: &str, http: Client) -> Endpoint {
        Endpoint { url: url.to_owned(), http }
    }

    /// The client of its requests.
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn set_url(&mut self, url: &str) {
        url.clone_into(&mut self.url);
    }

    /// A request with an optional raw body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.raw_opt(method, path, body.map(|b| b.as_bytes().to_vec()))
    }

    /// A request that may fail in transport (refused, reset): `Err` then.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<(u16, Value)> {
        let url = format!("{}{path}", self.url);
        self.http.try_send(http::method(method), &url, body, &[]).map(Answer::pair)
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
    pub fn answer(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None)
    }

    /// One request with an optional JSON body, answered in full.
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
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

    /// What a refused request must not change: the digest of all state, the
    /// log position and the raw answers for some records.
    pub fn snapshot(&self, watched: &[&str]) -> Snapshot {
        Snapshot {
            digest: self.digest(),
            last_seq: self.last_seq(),
            records: watched
                .iter()
                .map(|p| {
                    let (s, b) = self.get(p);
                    ((*p).to_owned(), s, b)
                })
                .collect(),
        }
    }

    /// Send a request that must be refused with `status` and `code` (and a
    /// message), and check that nothing of [`Endpoint::snapshot`] changed;
    /// answers the error body.
    #[track_caller]
    pub fn refused(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        status: u16,
        code: &str,
        watched: &[&str],
    ) -> Value {
        let before = self.snapshot(watched);
        let (got, answer) = match body {
            Some(b) => self.raw(method, path, b.to_vec()),
            None => self.request(method, path, None),
        };
        let shown = String::from_utf8_lossy(body.unwrap_or_default());
        let shown: String = shown.chars().take(120).collect();
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} with body {shown:?}: {answer}"
        );
        http::error_code(&answer);
        let after = self.snapshot(watched);
        assert_eq!(
            before, after,
            "{method} {path} with body {shown:?} was refused but changed state"
        );
        answer
    }
}

/// What [`Endpoint::refused`] compares before and after.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub digest: String,
    pub last_seq: u64,
    pub records: Vec<(String, u16, Value)>,
}

/// A write that must have succeeded at `region`, and the shape of its answer
/// (`{"region","hlc","version"}`); answers the body.
#[track_caller]
pub fn written(answer: (u16, Value), region: &str) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 200, "write refused: {body}");
    assert_eq!(body["region"], region, "{body}");
    assert!(body["hlc"]["wall_ms"].as_u64().is_some(), "{body}");
    assert!(body["version"][region].as_u64().is_some(), "{body}");
    body
}

/// `/v1/records/{entity}/{id}`.
pub fn rec(entity: &str, id: &str) -> String {
    format!("/v1/records/{entity}/{id}")
}

/// `/v1/records/{entity}/{id}/ops`.
pub fn ops(entity: &str, id: &str) -> String {
    format!("/v1/records/{entity}/{id}/ops")
}
