//! Outbound HTTP: one pooled client per peer a process talks to, over TLS
//! with the process's own certificate when TLS is on. A client verifies the
//! server by the name of the role it expects (`identity::region_server_name`,
//! `identity::ROUTER_SERVER_NAME`), whatever address it dials, so a latency
//! proxy in between or a certificate of another region is caught at the
//! handshake. `Clients` keeps them, and builds them again once the TLS
//! configuration was reloaded, so connections made after a rotation use the
//! new certificate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls::Tls;

/// A pooled HTTP client; TLS or plain by the URL's scheme.
pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// How a client's connections are made and pooled.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

/// The server names of a deployment's processes by the address a client
/// dials (`host:port`), for a tool that talks to several of them through
/// one client; an address not in the table is verified by its host.
#[derive(Debug, Clone, Default)]
pub struct ServerNames(BTreeMap<String, String>);

impl ServerNames {
    pub fn new() -> ServerNames {
        ServerNames::default()
    }

    /// Verify the server at `authority` (`host:port`) as `server_name`.
    pub fn insert(&mut self, authority: impl Into<String>, server_name: impl Into<String>) {
        self.0.insert(authority.into(), server_name.into());
    }
}

impl hyper_rustls::ResolveServerName for ServerNames {
    fn resolve(
        &self,
        uri: &hyper::Uri,
    ) -> Result<ServerName<'static>, Box<dyn std::error::Error + Sync + Send>> {
        let authority = uri.authority().map(axum::http::uri::Authority::as_str).unwrap_or("");
        let name = match self.0.get(authority) {
            Some(n) => n.as_str(),
            None => uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']'),
        };
        Ok(ServerName::try_from(name.to_owned())?)
    }
}

/// A client for the server named `server_name`: over TLS with `config`, or
/// plain (`config` `None`, for `--insecure`).
pub fn client<B>(
    config: Option<&ClientConfig>,
    server_name: &str,
    limits: ClientLimits,
) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let name = ServerName::try_from(server_name.to_owned()).expect("a valid server name");
    build(config, FixedServerNameResolver::new(name), limits)
}

/// A client for every server in `names` (by the address dialled): over TLS
/// with `config`, or plain (`config` `None`).
pub fn client_for<B>(
    config: Option<&ClientConfig>,
    names: ServerNames,
    limits: ClientLimits,
) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    build(config, names, limits)
}

fn build<B>(
    config: Option<&ClientConfig>,
    resolver: impl hyper_rustls::ResolveServerName + Send + Sync + 'static,
    limits: ClientLimits,
) -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(limits.connect_timeout));
    http.enforce_http(false);
    let connector = match config {
        Some(c) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(c.clone())
            .https_only()
            .with_server_name_resolver(resolver)
            .enable_http1()
            .wrap_connector(http),
        None => {
            // Plain http URLs only (the TLS settings are never used).
            let empty = ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("the provider supports the defaults")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(empty)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        }
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(limits.pool_idle_timeout)
        .pool_max_idle_per_host(limits.pool_max_idle_per_host)
        .build(connector)
}

/// The clients of one process, by server name, rebuilt after a TLS reload.
pub struct Clients<B> {
    tls: Option<Arc<Tls>>,
    limits: ClientLimits,
    built: Mutex<Built<B>>,
}

/// The clients built for one TLS configuration (`None`: plain), by server name.
struct Built<B> {
    config: Option<Arc<ClientConfig>>,
    by_server_name: BTreeMap<String, HttpClient<B>>,
}

impl<B> Clients<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    pub fn new(tls: Option<Arc<Tls>>, limits: ClientLimits) -> Self {
        Clients {
            tls,
            limits,
            built: Mutex::new(Built { config: None, by_server_name: BTreeMap::new() }),
        }
    }

    /// Whether connections are TLS (`https://` URLs) or plain.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client for the server named `server_name`.
    pub fn get(&self, server_name: &str) -> HttpClient<B> {
        let current = self.tls.as_ref().map(|t| t.client());
        let mut built = self.built.lock().expect("clients lock");
        let same = match (&built.config, &current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            built.by_server_name.clear();
            built.config = current.clone();
        }
        built
            .by_server_name
            .entry(server_name.to_owned())
            .or_insert_with(|| client(current.as_deref(), server_name, self.limits))
            .clone()
    }
}

/// At most `max` bytes of a response's body (for error and health answers,
/// which are small); what does not arrive or is longer reads as empty.
pub async fn body_bytes<B>(resp: hyper::Response<B>, max: usize) -> bytes::Bytes
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    http_body_util::Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}
