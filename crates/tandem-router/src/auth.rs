//! Who may use the router: with TLS (the default) every data-plane call
//! needs an API key (`Authorization: Bearer <key>`, from `<data_dir>/api-keys`),
//! compared in constant time; a wrong or missing key is 401 `unauthorized`,
//! counted in `router_auth_refusals_total{reason}`. The router then calls the
//! regions with its own certificate, never with the client's key. Admin
//! calls take the admin token or the operator's certificate
//! (`operations::admin`). With `--insecure` the data plane is open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::errors;
use crate::state::{RouterSecurity, RouterState};

pub async fn guard_data_plane(
    State(s): State<Arc<RouterState>>,
    req: Request,
    next: Next,
) -> Response {
    let RouterSecurity::Tls { api_keys, .. } = &s.security else { return next.run(req).await };
    let reason = match tandem_http::bearer(req.headers()) {
        Some(key) if api_keys.check(key).is_some() => return next.run(req).await,
        Some(_) => "wrong_api_key",
        None => "missing_api_key",
    };
    s.metrics
        .auth_refusals
        .get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() })
        .inc();
    errors::unauthorized_with(match reason {
        "wrong_api_key" => "the API key is not one of this deployment's",
        _ => "an API key is needed: Authorization: Bearer <key>",
    })
}
