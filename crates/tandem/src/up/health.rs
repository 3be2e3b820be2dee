//! Health waits of `tandem up`: a process counts as started once it serves
//! and is really that process (its `/healthz` names it, its child has not
//! exited) and is usable (a region caught up with its peers, the router
//! seeing every region up). Over TLS with the operator's certificate (each
//! process verified by its role's name), or plain with `--insecure`; every
//! call bounded.

use std::time::Duration;

use serde_json::Value;

use super::deployment::Deployment;

/// The largest health or routes answer read (they are a few hundred bytes).
const ANSWER_MAX_BYTES: usize = 64 * 1024;

pub(super) type HttpClient = tandem_http::client::HttpClient<http_body_util::Empty<bytes::Bytes>>;
pub(super) type HealthClients = tandem_http::client::Clients<http_body_util::Empty<bytes::Bytes>>;

/// The clients of the health waits: the operator's certificate when TLS is
/// on (`tls`), plain HTTP with `--insecure`.
pub(super) fn health_clients(tls: Option<std::sync::Arc<tandem_http::tls::Tls>>) -> HealthClients {
    tandem_http::client::Clients::new(
        tls,
        tandem_http::client::ClientLimits {
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 2,
        },
    )
}

/// Wait until `name` serves at `url` and it is really that process: its
/// `/healthz` names the region (or says it is the router), and the child has
/// not exited (another process holding the port must not pass for it).
pub(super) async fn wait_ours(
    d: &Deployment,
    name: &str,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = &d.health_client(name);
    let deadline = tokio::time::Instant::now() + timeout;
    let uri: hyper::Uri = format!("{url}/healthz").parse()?;
    loop {
        {
            let mut procs = d.procs.lock().expect("procs");
            let p = procs.get_mut(name).expect("known process");
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                p.child = None;
                anyhow::bail!("{name} exited during start-up ({status}); see its log lines above");
            }
        }
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
        {
            if resp.status().is_success() {
                let body = tandem_http::client::body_bytes(resp, ANSWER_MAX_BYTES).await;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let ours =
                    if name == "router" { v["role"] == "router" } else { v["region"] == name };
                if !ours {
                    anyhow::bail!("{url} answers, but it is not {name}: is another deployment using the port?");
                }
                // Usable, not just alive: a region has caught up with its
                // peers, and the router sees every region up.
                let usable = if name == "router" {
                    router_sees_all_up(client, url).await
                } else {
                    v["ready"] != Value::Bool(false)
                };
                if usable {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn router_sees_all_up(client: &HttpClient, url: &str) -> bool {
    let Ok(uri) = format!("{url}/v1/routes").parse::<hyper::Uri>() else { return false };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await else {
        return false;
    };
    let body = tandem_http::client::body_bytes(resp, ANSWER_MAX_BYTES).await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v["regions"].as_array().is_some_and(|rs| rs.iter().all(|r| r["up"] == true))
}

/// Wait until a process serves and, for a region, is ready (caught up).
pub(super) async fn wait_healthy(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let uri: hyper::Uri = format!("{url}/healthz").parse()?;
    loop {
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
        {
            if resp.status().is_success() {
                let body = tandem_http::client::body_bytes(resp, ANSWER_MAX_BYTES).await;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["ready"] != Value::Bool(false) {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not healthy after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
