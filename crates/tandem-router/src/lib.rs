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
//! `operations` is the router's own plane; `resp` routes the Redis protocol
//! by the same decisions; `body`, `errors` and `metrics` are
//! what those share.

mod auth;
mod body;
pub mod cache;
mod data_plane;
pub mod decide;
mod errors;
pub mod faults;
pub mod fresh_read;
pub mod health;
pub mod home_lookup;
pub mod metrics;
mod operations;
pub mod registration;
mod reload;
mod resp;
pub mod retry;
mod startup;
pub mod state;
mod upstream;

pub use startup::{run, RouterOptions};
pub use state::RouterSecurity;
/// The contract's header names, defined once with the rest of the protocol.
pub use tandem_engine::protocol::{
    CLIENT_REGION_HEADER, FAILOVER_HEADER, REGION_HEADER, ROUTE_HEADER,
};
