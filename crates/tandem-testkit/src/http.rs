//! A blocking HTTP client for tests whose every answer is an [`Answer`]: the
//! status, the headers and the body as JSON (a JSON string when the body is
//! not JSON, null when it is empty), so that a test can assert on any of
//! them and print the whole answer when an assertion fails.

use std::time::Duration;

pub use reqwest::Method;
use serde_json::Value;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// A header as text, `None` when absent (or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Tandem-Region`: who served a routed request.
    pub fn region(&self) -> Option<&str> {
        self.header("x-tandem-region")
    }

    /// `X-Tandem-Route`: `home`, `failover` or `nearest`.
    pub fn route(&self) -> Option<&str> {
        self.header("x-tandem-route")
    }

    /// `error.code` of an error answer ("" otherwise).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `(status, body)`, the shape most single-node tests assert on.
    pub fn pair(self) -> (u16, Value) {
        (self.status, self.body)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(r) = self.region() {
            write!(f, " region={r}")?;
        }
        if let Some(r) = self.route() {
            write!(f, " route={r}")?;
        }
        write!(f, " {}", self.body)
    }
}

/// A blocking client with a per-request time-out (loopback only: no proxy).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(timeout: Duration) -> Client {
        Client::build(reqwest::blocking::Client::builder().timeout(timeout))
    }

    /// With a separate, shorter bound on connecting (to a killed region).
    pub fn with_connect_timeout(timeout: Duration, connect: Duration) -> Client {
        Client::build(
            reqwest::blocking::Client::builder().timeout(timeout).connect_timeout(connect),
        )
    }

    /// Over TLS with `tls` (see [`crate::tls::client_config`]), sending
    /// `Authorization: <auth>` on every request that names none of its own.
    pub fn tls(
        timeout: Duration,
        connect: Option<Duration>,
        tls: rustls::ClientConfig,
        auth: Option<&str>,
    ) -> Client {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(c) = connect {
            builder = builder.connect_timeout(c);
        }
        Client::build(builder.tls_backend_preconfigured(tls).default_headers(auth_header(auth)))
    }

    /// Plain HTTP, sending `Authorization: <auth>` on every request that
    /// names none of its own (the control API of `tandem up`).
    pub fn plain_with_auth(timeout: Duration, connect: Option<Duration>, auth: &str) -> Client {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(c) = connect {
            builder = builder.connect_timeout(c);
        }
        Client::build(builder.default_headers(auth_header(Some(auth))))
    }

    fn build(builder: reqwest::blocking::ClientBuilder) -> Client {
        // reqwest's own TLS uses the process default provider: the one the
        // product uses (ring), installed once.
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        Client { http: builder.no_proxy().build().expect("build the HTTP client") }
    }

    /// The underlying client, for requests the helpers do not cover (raw
    /// header bytes, query strings of other services).
    pub fn inner(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// One request with an optional JSON body; `Err` only on a transport
    /// error (refused, reset, timed out).
    pub fn try_call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<Answer> {
        self.try_send(method, url, body.map(|b| b.to_string().into_bytes()), headers)
    }

    /// One request whose body is exactly these bytes (sent as JSON).
    pub fn try_send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<Answer> {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes()?;
        Ok(Answer { status, headers, body: parse_body(&bytes) })
    }

    /// [`Client::try_call`] that panics on a transport error.
    pub fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.try_call(method.clone(), url, body, headers)
            .unwrap_or_else(|e| panic!("{method} {url}: {}", causes(&e)))
    }

    /// [`Client::try_send`] that panics on a transport error.
    pub fn send(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Answer {
        self.try_send(method.clone(), url, body, &[])
            .unwrap_or_else(|e| panic!("{method} {url}: {}", causes(&e)))
    }

    /// GET a text body (e.g. `/metrics`) that must answer 2xx.
    pub fn text(&self, url: &str) -> String {
        let resp =
            self.http.get(url).send().unwrap_or_else(|e| panic!("GET {url}: {}", causes(&e)));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.text().unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
    }
}

/// An error with every cause, innermost last (reqwest's own message only
/// says "error sending request").
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn auth_header(auth: Option<&str>) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(a) = auth {
        let value = reqwest::header::HeaderValue::from_str(a).expect("an authorization value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    headers
}

/// Assert an answer's status, the region that served it and the route the
/// router took (`X-Tandem-Region`, `X-Tandem-Route`).
#[track_caller]
pub fn assert_routed(a: &Answer, status: u16, region: &str, route: &str, what: &str) {
    assert_eq!(
        (a.status, a.region(), a.route()),
        (status, Some(region), Some(route)),
        "{what}: {a}"
    );
}

/// A method by name (`"PUT"`).
pub fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap_or_else(|_| panic!("not a method: {name}"))
}

/// A body as JSON: `Value::Null` when empty, a JSON string when it is not JSON.
pub fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The `error.code` of an error body; panics when the body is not an API
/// error with a message (DESIGN.md: `{"error": {"code", "message"}}`).
pub fn error_code(body: &Value) -> &str {
    let code =
        body["error"]["code"].as_str().unwrap_or_else(|| panic!("not a JSON API error: {body}"));
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an API error carries a message: {body}"
    );
    code
}
