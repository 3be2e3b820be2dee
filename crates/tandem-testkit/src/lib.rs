//! The test kit of tandem's multi-process tests: everything a test in
//! `crates/tandem/tests` needs to run the real `tandem` binary on loopback
//! and judge what it did, one idea per module.
//!
//! - [`ports`]: free loopback ports for the fixed listen addresses of a config;
//! - [`process`]: the binary under test ([`Tandem`]), child processes with
//!   their output in files, signals, and one-shot command runs;
//! - [`endpoint`]: one process's HTTP surface, answered as `(status, JSON)`;
//! - [`node`]: one `tandem node` on its own data directory, killed and
//!   restarted on the same data;
//! - [`http`]: a blocking client whose answers are status, headers and JSON;
//! - [`config`]: the configuration a test deployment starts from;
//! - [`deployment`]: a whole deployment (`tandem up` with or without the
//!   router, or separate `tandem node` processes behind link proxies) with
//!   its faults, data-plane helpers and waits;
//! - [`waits`]: polling until a predicate holds, with a deadline;
//! - [`metrics`]: Prometheus text, parsed into samples;
//! - [`search`]: unique markers and raw byte searches over files;
//! - [`refusals`]: requests that must be refused and change nothing;
//! - [`acked`]: the one acknowledged-write checker (DESIGN.md invariant 2);
//! - [`tls`]: the deployment's certificates and API key, and TLS clients.
//!
//! Deployments and nodes run with TLS and authentication on, as in
//! production; a test asks for `--insecure` only where it needs plaintext
//! (raw HTTP bytes on a socket, the wire-level residency search).
//!
//! The kit panics with a message that says what it was doing whenever a step
//! fails: a test is a straight line of steps, and a failed step ends it.
//! Operations that a test drives while faults may make them fail (the fault
//! test's control calls) have `try_` forms that answer `Result`.

pub mod acked;
pub mod config;
pub mod deployment;
pub mod endpoint;
pub mod http;
pub mod load;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod process;
pub mod refusals;
pub mod search;
pub mod tls;
pub mod tools;
pub mod waits;

pub use deployment::{Builder, Deployment, Limits, CONVERGE_TIMEOUT};
pub use endpoint::Endpoint;
pub use http::{error_code, Answer, Client, Method};
pub use node::Node;
pub use process::{Output, Served, Tandem};
pub use waits::{wait_for, wait_until};
