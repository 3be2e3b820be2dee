//! What a region needs before it may start, checked before anything is opened:
//! a node that cannot do its job does not start half-configured (DESIGN.md).
//! Each refusal names what is missing and every way to supply it; the binary
//! exits 2 on them.

use std::path::Path;

use tandem_config::Config;

use tandem_engine::analytics::Pseudonymizer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error(
        "region `{region}` cannot start: {detail}. TLS is on by default: create the \
         deployment's certificates with `tandem certs init --config <file>` (they go to {dir}; \
         `tandem up` does this itself), or start with --insecure for a local experiment \
         without TLS or authentication."
    )]
    Certificates { region: String, dir: String, detail: String },
    #[error("region `{region}` cannot start: its API keys file is unreadable: {detail}")]
    ApiKeys { region: String, detail: String },
    #[error(
        "region `{region}` cannot start: the deployment has {regions} regions and this node has \
         no replication secret to authenticate to its peers. Supply it in one of these ways: \
         `[replication] secret = \"...\"` in the config file; the environment variable \
         TANDEM_REPLICATION_SECRET; or the file {file} (one line, mode 0600). `tandem up` \
         creates that file for its regions."
    )]
    MissingReplicationSecret { region: String, regions: usize, file: String },
    #[error(transparent)]
    PseudonymKey(Box<MissingPseudonymKey>),
}

/// A jurisdiction whose analytics projections have no usable pseudonym key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "region `{region}` cannot start: entity types {entities} have analytics projections, \
     which need jurisdiction {jurisdiction}'s pseudonym key, and {problem}. Set the \
     environment variable {variable} (named by `[jurisdictions.{jurisdiction}] \
     pseudonym_key_env`) to 64 hex digits, the same for every region of {jurisdiction}; \
     `tandem up` generates one into {file}."
)]
pub struct MissingPseudonymKey {
    pub region: String,
    pub entities: String,
    pub jurisdiction: String,
    pub variable: String,
    pub problem: &'static str,
    pub file: String,
}

/// How the binary asks a node to secure itself.
#[derive(Debug, Clone)]
pub enum SecurityOptions {
    /// `--insecure`: no TLS, no API keys; the shared secret between regions.
    Insecure { replication_secret: Option<String> },
    /// TLS with the certificates in `certs_dir`, API keys from `api_keys`.
    Tls { certs_dir: std::path::PathBuf, api_keys: std::path::PathBuf },
}

/// Load what this region needs to authenticate, or refuse to start.
pub fn security(
    config: &Config,
    region: &str,
    data_dir: &Path,
    opts: &SecurityOptions,
) -> Result<crate::auth::Security, StartupError> {
    use std::sync::Arc;
    match opts {
        SecurityOptions::Insecure { replication_secret } => {
            check_replication_secret(config, region, replication_secret.as_deref(), data_dir)?;
            Ok(crate::auth::Security::Insecure { replication_secret: replication_secret.clone() })
        }
        SecurityOptions::Tls { certs_dir, api_keys } => {
            let refused = |detail: String| StartupError::Certificates {
                region: region.to_owned(),
                dir: certs_dir.display().to_string(),
                detail,
            };
            let files = tandem_http::tls::TlsFiles::new(certs_dir, region);
            let tls = tandem_http::tls::Tls::load(files).map_err(|e| refused(e.to_string()))?;
            let jurisdiction = config.jurisdiction_of(region).unwrap_or("").to_owned();
            let expected =
                tandem_http::identity::Identity::Region { name: region.to_owned(), jurisdiction };
            let own = tls.own_identity();
            if own != expected {
                return Err(refused(format!(
                    "its certificate names {} instead of {}",
                    own.describe(),
                    expected.describe()
                )));
            }
            let keys = match tandem_http::api_keys::ApiKeys::load(api_keys) {
                Ok(k) => k,
                Err(tandem_http::api_keys::ApiKeysError::Read { .. }) if !api_keys.exists() => {
                    tracing::warn!(path = %api_keys.display(), "no API keys file: clients reach this region only through the router");
                    tandem_http::api_keys::ApiKeys::none(api_keys)
                }
                Err(e) => {
                    return Err(StartupError::ApiKeys {
                        region: region.to_owned(),
                        detail: e.to_string(),
                    })
                }
            };
            Ok(crate::auth::Security::Tls { tls: Arc::new(tls), api_keys: Arc::new(keys) })
        }
    }
}

/// A multi-region deployment needs the replication credential; a single
/// region needs none.
pub fn check_replication_secret(
    config: &Config,
    region: &str,
    secret: Option<&str>,
    data_dir: &Path,
) -> Result<(), StartupError> {
    if config.regions.len() > 1 && secret.is_none_or(|s| s.trim().is_empty()) {
        return Err(StartupError::MissingReplicationSecret {
            region: region.to_owned(),
            regions: config.regions.len(),
            file: data_dir.join("replication.secret").display().to_string(),
        });
    }
    Ok(())
}

/// This jurisdiction's pseudonym key, required when any entity type has an
/// analytics projection. `lookup` reads an environment variable.
pub fn pseudonymizer(
    config: &Config,
    region: &str,
    jurisdiction: &str,
    data_dir: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Pseudonymizer>, StartupError> {
    let projected: Vec<&str> = config
        .entities
        .iter()
        .filter(|(_, e)| e.analytics.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let var = config.jurisdictions.get(jurisdiction).and_then(|j| j.pseudonym_key_env.clone());
    let value = var.as_deref().and_then(&lookup);
    let key = value.as_deref().and_then(Pseudonymizer::from_hex);
    if projected.is_empty() || key.is_some() {
        return Ok(key);
    }
    Err(StartupError::PseudonymKey(Box::new(MissingPseudonymKey {
        region: region.to_owned(),
        entities: projected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
        jurisdiction: jurisdiction.to_owned(),
        variable: var.unwrap_or_else(|| format!("TANDEM_PSEUDONYM_KEY_{jurisdiction}")),
        problem: if value.is_some() {
            "the key given is not 64 hex digits"
        } else {
            "it is not set"
        },
        file: data_dir.join(format!("pseudonym-{jurisdiction}.key")).display().to_string(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_region_node_needs_its_secret_and_a_lone_region_does_not() {
        let c = Config::example();
        let dir = Path::new("/data");
        let e = check_replication_secret(&c, "eu-west", None, dir).unwrap_err();
        let text = e.to_string();
        for way in ["[replication] secret", "TANDEM_REPLICATION_SECRET", "/data/replication.secret"]
        {
            assert!(text.contains(way), "{text} names {way}");
        }
        assert!(check_replication_secret(&c, "eu-west", Some(" "), dir).is_err());
        assert!(check_replication_secret(&c, "eu-west", Some("s"), dir).is_ok());
        let mut alone = c.clone();
        alone.regions.truncate(1);
        assert!(check_replication_secret(&alone, "eu-west", None, dir).is_ok());
    }

    #[test]
    fn projections_need_a_well_formed_key() {
        let c = Config::example();
        let dir = Path::new("/data");
        let none = |_: &str| None;
        let e = pseudonymizer(&c, "eu-west", "EU", dir, none).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("TANDEM_PSEUDONYM_KEY_EU") && text.contains("not set"), "{text}");
        let bad = |_: &str| Some("xyz".to_owned());
        let text = pseudonymizer(&c, "eu-west", "EU", dir, bad).unwrap_err().to_string();
        assert!(text.contains("not 64 hex digits"), "{text}");
        let good = |_: &str| Some("ab".repeat(32));
        assert!(pseudonymizer(&c, "eu-west", "EU", dir, good).unwrap().is_some());
        let mut plain = c.clone();
        for e in plain.entities.values_mut() {
            e.analytics = None;
        }
        assert!(pseudonymizer(&plain, "eu-west", "EU", dir, none).unwrap().is_none());
    }
}
