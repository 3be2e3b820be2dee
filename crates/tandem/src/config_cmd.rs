//! `tandem config example|check`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tandem_config::{Config, EXAMPLE_TOML};

pub fn example() -> anyhow::Result<ExitCode> {
    print!("{EXAMPLE_TOML}");
    Ok(ExitCode::SUCCESS)
}

pub fn check(file: &Path) -> anyhow::Result<ExitCode> {
    match load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} regions, {} entity types, {} data classes)",
                file.display(),
                cfg.regions.len(),
                cfg.entities.len(),
                cfg.data_classes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("tandem: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Read and validate a config file, or the built-in example when `None`.
pub fn load(file: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file {}", file.display()))?;
    Config::from_toml_str(&text).with_context(|| format!("invalid config {}", file.display()))
}

pub fn load_or_example(file: Option<&Path>) -> anyhow::Result<Config> {
    match file {
        Some(f) => load(f),
        None => Ok(Config::example()),
    }
}
