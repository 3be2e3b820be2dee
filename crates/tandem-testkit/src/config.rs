//! The configuration a test deployment starts from: a config (the built-in
//! example unless a test brings its own) with every listen address moved to
//! a free loopback port and its data under the test's own directory, so that
//! tests run in parallel without sharing a port or a byte of state.

use std::net::SocketAddr;
use std::path::Path;

use tandem_config::Config;

use crate::ports::free_ports;

/// The example deployment's regions.
pub const ALL: [&str; 3] = ["eu-west", "eu-central", "us-east"];
/// The example's regions of the EU jurisdiction.
pub const EU: [&str; 2] = ["eu-west", "eu-central"];

/// Pseudonym keys for the example's jurisdictions (64 hex digits each), for
/// processes that start without `tandem up` generating them.
pub const TEST_PSEUDONYM_KEYS: [(&str, &str); 2] = [
    ("TANDEM_PSEUDONYM_KEY_EU", "1111111111111111111111111111111111111111111111111111111111111111"),
    ("TANDEM_PSEUDONYM_KEY_US", "2222222222222222222222222222222222222222222222222222222222222222"),
];

/// The built-in example deployment (the same text `tandem config example`
/// prints).
pub fn example_text() -> &'static str {
    tandem_config::EXAMPLE_TOML
}

/// A config from TOML text; panics with the reason when it is not valid.
pub fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("the test config is not valid: {e}"))
}

/// `config` with every region and the router on free loopback ports and
/// its data under `data_dir`.
pub fn on_free_ports(mut config: Config, data_dir: &Path) -> Config {
    let n = config.regions.len();
    let ports = free_ports(2 * n + 2);
    for (i, region) in config.regions.iter_mut().enumerate() {
        region.listen = SocketAddr::from(([127, 0, 0, 1], ports[i]));
        if region.resp_listen.is_some() {
            region.resp_listen = Some(SocketAddr::from(([127, 0, 0, 1], ports[n + i])));
        }
    }
    config.router.listen = SocketAddr::from(([127, 0, 0, 1], ports[2 * n]));
    if config.router.resp_listen.is_some() {
        config.router.resp_listen = Some(SocketAddr::from(([127, 0, 0, 1], ports[2 * n + 1])));
    }
    config.deployment.data_dir = data_dir.to_owned();
    config
}

/// The example on free ports with its data under `data_dir`, as TOML text
/// (for a config file that no deployment serves).
pub fn example_on_free_ports(data_dir: &Path) -> String {
    to_text(&on_free_ports(Config::example(), data_dir))
}

/// Set the one-way latency of the link between `a` and `b`.
pub fn set_latency(config: &mut Config, a: &str, b: &str, ms: u64) {
    let link = config
        .links
        .iter_mut()
        .find(|l| {
            (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
        })
        .unwrap_or_else(|| panic!("no link between {a} and {b}"));
    link.latency_ms = ms;
}

/// The TOML text of a config.
pub fn to_text(config: &Config) -> String {
    toml::to_string(config).expect("the config encodes")
}
