//! How the operator tools (`status`, `drill`, `backup`, `restore`, `load`)
//! reach a deployment: over TLS 1.3, trusting the deployment's `ca.pem`,
//! presenting the operator's certificate (which the nodes accept for the
//! operations endpoints that hold record values), verifying each process by
//! the name of its role rather than by address, and sending an API key on
//! data-plane calls. With `--insecure` (for a deployment started with it):
//! plain HTTP and no credentials.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tandem_config::Config;
use tandem_http::client::{ClientLimits, HttpClient, ServerNames};
use tandem_http::identity;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The deployment runs with `--insecure`: plain HTTP, no credentials.
    #[arg(long)]
    pub insecure: bool,
    /// Where `ca.pem` and the operator's `operator.pem`/`operator.key` are
    /// (default `<data_dir>/certs`).
    #[arg(long)]
    pub certs_dir: Option<PathBuf>,
    /// The API key for data-plane calls (default: the key named `default`,
    /// else the first, in `<data_dir>/api-keys`).
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// What a tool connects with.
pub struct Connection {
    pub scheme: &'static str,
    tls: Option<Arc<tandem_http::tls::Tls>>,
    names: ServerNames,
    /// `Bearer <api key>` for data-plane calls.
    pub data_auth: Option<String>,
}

impl Connection {
    /// The operator's credentials for the deployment of `config` whose files
    /// are under `data_dir`.
    pub fn open(
        args: &ConnectArgs,
        config: &Config,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Connection> {
        let mut names = ServerNames::new();
        for r in &config.regions {
            names.insert(r.listen.to_string(), identity::region_server_name(&r.name));
        }
        names.insert(config.router.listen.to_string(), identity::ROUTER_SERVER_NAME);
        if args.insecure {
            return Ok(Connection { scheme: "http", tls: None, names, data_auth: None });
        }
        let certs = args.certs_dir.clone().unwrap_or_else(|| crate::certs_cmd::certs_dir(data_dir));
        let tls = tandem_http::tls::Tls::load(tandem_http::tls::TlsFiles::new(&certs, "operator"))
            .with_context(|| {
                format!(
                    "the operator's certificate in {} (or --insecure for a deployment started with it)",
                    certs.display()
                )
            })?;
        let key = match &args.api_key {
            Some(k) => Some(k.trim().to_owned()),
            None => default_api_key(&crate::node_cmd::api_keys_file(data_dir))?,
        };
        Ok(Connection {
            scheme: "https",
            tls: Some(Arc::new(tls)),
            names,
            data_auth: key.map(|k| format!("Bearer {k}")),
        })
    }

    /// A pooled client for every process of the deployment.
    pub fn client<B>(&self, limits: ClientLimits) -> HttpClient<B>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
    {
        let config = self.tls.as_ref().map(|t| t.client());
        tandem_http::client::client_for(config.as_deref(), self.names.clone(), limits)
    }

    /// The base URL of a process listening on `addr`.
    pub fn url(&self, addr: std::net::SocketAddr) -> String {
        format!("{}://{addr}", self.scheme)
    }
}

/// The key named `default` in the API keys file, else its first; `None`
/// when there is no file.
fn default_api_key(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let keys = tandem_http::api_keys::parse(&path.display().to_string(), &text)?;
    Ok(keys.iter().find(|(n, _)| n == "default").or(keys.first()).map(|(_, k)| k.clone()))
}

/// The usual limits of a tool's client.
pub fn limits(connect_timeout: std::time::Duration) -> ClientLimits {
    ClientLimits {
        connect_timeout,
        pool_idle_timeout: std::time::Duration::from_secs(30),
        pool_max_idle_per_host: 64,
    }
}

/// One admin call (the admin token; the operator's certificate with TLS)
/// with an empty body: the answer's status and body. `doing` names the call
/// in the error when the region does not answer.
pub async fn admin_call(
    connection: &Connection,
    method: hyper::Method,
    url: &str,
    token: &str,
    doing: &str,
) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let client: tandem_http::client::HttpClient<http_body_util::Empty<bytes::Bytes>> =
        connection.client(limits(std::time::Duration::from_secs(5)));
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::new())?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("{doing} at {url}: is the region running?"))?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}
