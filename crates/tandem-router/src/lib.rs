//! The global routing layer (what GeoDNS or anycast plus an edge home-region
//! lookup do in production): it sends each request to the region that may
//! serve it, probes region health, honours drains, and proxies over pooled
//! connections with bounded bodies and upstream time-outs.
//!
//! The decisions are pure functions with their rules in their own `//!`
//! paragraph: where a request goes (`decide`), where a subject registration
//! goes (`registration`), the retry after a refused connection (`retry`) and
//! the fresh-read redirect (`fresh_read`). The rest carries them out:
//! `startup` builds the `state` and serves; `data_plane` turns a request into
//! a decision and walks it; `upstream` is one exchange with a region;
//! `home_lookup` asks the registry (through `cache`); `health` probes;
//! `operations` is the router's own plane; `body`, `errors` and `metrics` are
//! what those share.

mod body;
pub mod cache;
mod data_plane;
pub mod decide;
mod errors;
pub mod fresh_read;
pub mod health;
mod home_lookup;
pub mod metrics;
mod operations;
pub mod registration;
pub mod retry;
mod startup;
pub mod state;
mod upstream;

pub use startup::{run, RouterOptions};

/// The caller's region (default: `router.default_region`); passed on upstream.
pub const CLIENT_REGION_HEADER: &str = "x-tandem-client-region";
/// On every routed response: the region that served it.
pub const REGION_HEADER: &str = "x-tandem-region";
/// On every routed response: `home`, `failover` or `nearest`.
pub const ROUTE_HEADER: &str = "x-tandem-route";
/// On a write sent away from its subject's home: that home region.
pub const FAILOVER_HEADER: &str = "x-tandem-failover";
