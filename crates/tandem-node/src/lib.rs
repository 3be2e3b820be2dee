//! One region of tandem, the runtime: the HTTP data plane and operations
//! plane over a durable store, the group-commit writer and the replication
//! loops, all carrying out the decisions of `tandem_engine`. `server::run` is
//! the entry point; `tandem node` is a thin wrapper around it.

pub mod api;
pub mod audit;
pub mod audit_upkeep;
pub mod auth;
pub mod backup;
pub mod budget;
pub mod compaction;
pub mod conflicts;
pub mod disk;
pub mod error;
pub mod metrics;
pub mod node;
pub mod reload;
pub mod replication;
pub mod resp;
pub mod server;
pub mod startup;
pub mod validate;
pub mod writer;

pub use error::ApiError;
pub use server::{run, NodeOptions, SecurityOptions, StoreBackend};
pub use startup::StartupError;
