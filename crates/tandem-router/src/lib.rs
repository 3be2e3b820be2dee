//! The global routing layer (what GeoDNS or anycast plus an edge home-region
//! lookup do in production): it sends each request to the region that may
//! serve it (`decide`), probes region health, honours drains, and proxies over
//! pooled connections with bounded bodies and upstream time-outs.

pub mod cache;
pub mod decide;
pub mod fresh_read;
pub mod health;
pub mod metrics;
pub mod registration;
pub mod retry;
pub mod server;

pub use server::{run, RouterOptions};
