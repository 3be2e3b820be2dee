//! The deployment's secrets: the admin token, the replication secret (for
//! `--insecure`), one pseudonym key per jurisdiction and the API keys file. Each comes from the environment (the
//! replication secret also from the config) when it is set there; otherwise
//! it is read from its file next to the data, or created there on the first
//! start (32 random bytes from the OS as hex, mode 0600), so that a restarted
//! deployment keeps its secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tandem_config::Config;

/// 32 random bytes from the OS (rand's `SysRng`, i.e. getrandom), as hex.
pub fn random_token() -> anyhow::Result<String> {
    use rand::TryRng;
    let mut b = [0u8; 32];
    rand::rngs::SysRng.try_fill_bytes(&mut b)?;
    Ok(hex::encode(b))
}

/// Read a secret file, or create it (mode 0600) with a fresh random token.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_owned());
        }
    }
    let token = random_token()?;
    write_secret(path, &token)?;
    Ok(token)
}

/// The data plane's API keys file: kept when it exists, else created (mode
/// 0600) with one key named `default`.
pub(super) fn api_keys(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    write_secret(path, &format!("default {}\n", random_token()?))
}

/// Create or replace `path` with `text`, readable by its owner only.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The secrets a deployment's processes get through their environment.
pub(super) struct Secrets {
    pub(super) admin_token: String,
    /// `<data_dir>/admin.token`; `None` when the token is `TANDEM_ADMIN_TOKEN`'s.
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) replication_secret: String,
    /// Jurisdiction → (the variable its regions read their key from, the key).
    pub(super) pseudonym_keys: BTreeMap<String, (String, String)>,
}

impl Secrets {
    /// Each secret from the environment (or the config), else from its file
    /// under `data_dir`, created on the first start.
    pub(super) fn resolve(config: &Config, data_dir: &Path) -> anyhow::Result<Secrets> {
        let token_path = data_dir.join("admin.token");
        let token_from_env =
            std::env::var("TANDEM_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty());
        let admin_token = match &token_from_env {
            Some(t) => t.trim().to_owned(),
            None => secret_file(&token_path)?,
        };
        let secret = match (&config.replication.secret, std::env::var("TANDEM_REPLICATION_SECRET"))
        {
            (Some(s), _) => s.clone(),
            (None, Ok(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => secret_file(&data_dir.join("replication.secret"))?,
        };

        // One pseudonym key per jurisdiction, generated once and kept next to the
        // data; each region gets only its own jurisdiction's.
        let mut pseudonym_keys: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (j, jc) in &config.jurisdictions {
            let Some(var) = &jc.pseudonym_key_env else { continue };
            let key = match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
                _ => secret_file(&data_dir.join(format!("pseudonym-{j}.key")))?,
            };
            pseudonym_keys.insert(j.clone(), (var.clone(), key));
        }
        Ok(Secrets {
            admin_token,
            admin_token_file: token_from_env.is_none().then_some(token_path),
            replication_secret: secret,
            pseudonym_keys,
        })
    }
}
