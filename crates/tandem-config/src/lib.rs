//! Deployment configuration for tandem: the TOML schema with its defaults,
//! `validate()` that refuses a bad deployment naming the offending key, and the
//! built-in example deployment. Pure: it parses from `&str` and does no I/O.

mod config;
pub mod duration;
mod error;
mod parse;
mod subject;
mod validate;

pub use config::{
    reference_lag_budgets, AnalyticsProjection, AuditConfig, Config, ConflictPolicy, DataClass,
    DeploymentConfig, EntityConfig, JurisdictionConfig, LinkConfig, NodeConfig, OnBreach,
    RegionConfig, ReplicationConfig, RespConfig, RouterConfig, TransferConfig, WritePolicy,
};
pub use error::ConfigError;
pub use subject::{rest_of, subject_of};
pub use tandem_merge::MergeKind;

/// The built-in example deployment, printed verbatim by `tandem config example`
/// and used by `tandem up` without `--config`.
pub const EXAMPLE_TOML: &str = include_str!("example.toml");

#[cfg(test)]
mod tests;
