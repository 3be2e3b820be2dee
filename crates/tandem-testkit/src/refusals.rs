//! Requests that must be refused and change nothing. A [`Case`] is one
//! request (method, URL, headers as raw bytes, body) and the status and error
//! code it must get; [`run_cases`] sends every case to a running deployment
//! and checks that each got its answer with a JSON error message, and that
//! nothing stored changed anywhere: every region's digest, log position and
//! isolation, and the router's drain flags ([`Stored`]).
//! [`truncated_on_the_wire`] sends a body cut off before its `Content-Length`.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{self, Client, Method};
use crate::waits::wait_until;
use crate::Deployment;

/// One request and the answer it must get.
pub struct Case {
    pub what: String,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
    pub status: u16,
    pub code: &'static str,
    /// Whose certificate the request presents (none by default).
    pub holder: Option<&'static str>,
}

pub fn case(
    what: &str,
    method: &'static str,
    url: String,
    body: Option<&[u8]>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what: what.to_owned(),
        method,
        url,
        headers: Vec::new(),
        body: body.map(<[u8]>::to_vec),
        status,
        code,
        holder: None,
    }
}

impl Case {
    pub fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Case {
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }

    /// Present `holder`'s certificate (`operator`, `router`, a region).
    pub fn as_holder(mut self, holder: &'static str) -> Case {
        self.holder = Some(holder);
        self
    }
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
pub struct Stored {
    pub regions: Vec<(String, Value, u64, bool)>,
    pub drained: Vec<(String, bool)>,
}

/// The client of the cases (a generous time-out: some bodies are large):
/// the kit's API key, and no certificate, so that a case without a token
/// has no credential for admin calls.
pub fn client(d: &Deployment) -> Client {
    if d.insecure() {
        return Client::new(Duration::from_secs(15));
    }
    let tls = crate::tls::client_config(&d.certs_dir(), None);
    let auth = format!("Bearer {}", crate::tls::API_KEY);
    Client::tls(Duration::from_secs(15), None, tls, Some(&auth))
}

fn get_json(http: &Client, url: &str) -> Value {
    let a = http.call(Method::GET, url, None, &[]);
    assert!((200..300).contains(&a.status), "GET {url}: {a}");
    a.body
}

pub fn stored(d: &Deployment, http: &Client) -> Stored {
    let regions = d
        .region_names()
        .into_iter()
        .map(|r| {
            let digest = get_json(http, &format!("{}/v1/digest", d.url(r)));
            let status = get_json(http, &format!("{}/v1/status", d.url(r)));
            (
                r.to_owned(),
                json!({ "digest": digest["digest"], "records": digest["records"] }),
                status["log"]["last_seq"].as_u64().expect("last_seq"),
                status["isolated"] == true,
            )
        })
        .collect();
    let routes = get_json(http, &format!("{}/v1/routes", d.router()));
    let drained = routes["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| (r["region"].as_str().unwrap_or("").to_owned(), r["drained"] == true))
        .collect();
    Stored { regions, drained }
}

/// Wait until replication of the set-up writes has settled (two equal
/// snapshots in a row), so that later snapshots compare like with like.
pub fn settled(d: &Deployment, http: &Client) -> Stored {
    let mut last = stored(d, http);
    let ok = wait_until(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(600));
        let now = stored(d, http);
        let same = now == last;
        last = now;
        same
    });
    assert!(ok, "the deployment did not settle: {last:?}");
    last
}

/// Send every case; each must get its status and code and change nothing.
pub fn run_cases(d: &Deployment, cases: Vec<Case>) {
    let http = client(d);
    let before = settled(d, &http);
    let mut wrong = Vec::new();
    let mut holders: std::collections::BTreeMap<&str, Client> = Default::default();
    for c in &cases {
        let via = match c.holder {
            Some(h) if !d.insecure() => holders.entry(h).or_insert_with(|| {
                d.client_as(Some(h), Some(&format!("Bearer {}", crate::tls::API_KEY)))
            }),
            _ => &http,
        };
        let mut req = via.inner().request(http::method(c.method), &c.url);
        for (k, v) in &c.headers {
            req =
                req.header(*k, reqwest::header::HeaderValue::from_bytes(v).expect("header value"));
        }
        if let Some(b) = &c.body {
            req = req.body(b.clone());
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{}: {}", c.what, http::causes(&e)));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let code = body["error"]["code"].as_str().unwrap_or("");
        let has_message = body["error"]["message"].is_string();
        if (status, code) != (c.status, c.code) || !has_message {
            wrong.push(format!(
                "{}: {} {} answered {status} {:?}, expected {} {}",
                c.what,
                c.method,
                c.url,
                &text[..text.len().min(300)],
                c.status,
                c.code
            ));
        }
    }
    let after = stored(d, &http);
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_eq!(before, after, "a refused request changed what is stored");
}

/// Send a request whose body ends before its `Content-Length` (the client
/// half-closes), and check the answer and that nothing changed.
pub fn truncated_on_the_wire(d: &Deployment, base: &str, path: &str, status: u16, code: &str) {
    let http = client(d);
    let before = stored(d, &http);
    let addr = base.trim_start_matches("http://").trim_start_matches("https://");
    let mut s = crate::tls::connect(d, addr);
    let body = br#"{"value": "cut"#;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::tls::API_KEY,
        body.len() + 100
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    s.half_close();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or("");
    let json_body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(json_body.trim()).unwrap_or(Value::Null);
    assert!(
        status_line.contains(&format!(" {status} ")) && v["error"]["code"] == code,
        "a truncated body at {base}{path} must answer {status} {code}, got: {text}"
    );
    assert_eq!(stored(d, &http), before, "a truncated request changed what is stored");
}
