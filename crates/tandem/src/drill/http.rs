//! The drill's HTTP client: one pooled hyper client over the operator's
//! connection (TLS, the operator certificate, the API key on every call that
//! names no credential of its own), every call bounded by a time-out, answers reduced to what the drill records (status, the router's
//! `X-Tandem-Region` and `X-Tandem-Route`, the JSON body and its error code).
//! A call that gets no answer is an `Err` with the reason: for a write that
//! means "attempted, outcome unknown".

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::Value;

/// Largest answer body read (a scan page of 1000 records is far smaller).
pub const BODY_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Connect time-out: a dead region refuses at once on loopback, a remote one
/// that does not answer within this is as good as down for the drill.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `X-Tandem-Region`: who served it (router answers only).
    pub region: Option<String>,
    /// `X-Tandem-Route`: home, failover or nearest (router answers only).
    pub route: Option<String>,
    /// The body as JSON; a JSON string when it is not JSON.
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `error.code` of an error answer.
    pub fn error_code(&self) -> Option<String> {
        self.body["error"]["code"].as_str().map(str::to_owned)
    }
}

#[derive(Clone)]
pub struct Http {
    client: tandem_http::client::HttpClient<Full<Bytes>>,
    /// For `http://` URLs: `tandem up`'s control API (plain HTTP on loopback,
    /// behind the admin token) and deployments run with `--insecure`.
    plain: tandem_http::client::HttpClient<Full<Bytes>>,
    /// `Bearer <api key>`, sent unless a call brings its own authorization.
    data_auth: Option<std::sync::Arc<str>>,
}

impl Http {
    pub fn new(connection: &crate::connect::Connection) -> Http {
        Http {
            client: connection.client(crate::connect::limits(CONNECT_TIMEOUT)),
            plain: tandem_http::client::client_for(
                None,
                Default::default(),
                crate::connect::limits(CONNECT_TIMEOUT),
            ),
            data_auth: connection.data_auth.as_deref().map(std::sync::Arc::from),
        }
    }

    /// One request. `headers` are added as given; `body` is sent as JSON.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut builder = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some(auth) = &self.data_auth {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                builder = builder.header("authorization", &**auth);
            }
        }
        let bytes = match body {
            Some(b) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b).expect("a Value always encodes"))
            }
            None => Bytes::new(),
        };
        let req = builder.body(Full::new(bytes)).map_err(|e| format!("bad request: {e}"))?;
        let fut = async {
            let client = if url.starts_with("https://") { &self.client } else { &self.plain };
            let resp = client.request(req).await.map_err(|e| transport_error(&e))?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            let region = header("x-tandem-region");
            let route = header("x-tandem-route");
            let body = http_body_util::Limited::new(resp.into_body(), BODY_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("answer broken off: {e}"))?
                .to_bytes();
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            Ok(Answer { status, region, route, body })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, String> {
        self.call(Method::GET, url, &[], None, timeout).await
    }

    /// GET a plain-text body (Prometheus metrics).
    pub async fn get_text(&self, url: &str, timeout: Duration) -> Result<String, String> {
        let a = self.get(url, timeout).await?;
        if !a.ok() {
            return Err(format!("{url} answered {}", a.status));
        }
        Ok(match a.body {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// POST an admin action with the bearer token.
    pub async fn admin_post(
        &self,
        url: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
        self.call(Method::POST, url, &headers, None, timeout).await
    }
}

/// The innermost cause of a transport error (hyper's outer message is generic).
fn transport_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
