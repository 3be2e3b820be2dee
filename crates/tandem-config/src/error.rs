//! The one error type of this crate: why a configuration was refused, always
//! naming the offending key so an operator can find it in the file.

/// Why a configuration was refused.
///
/// Every variant names the offending key in dotted TOML notation
/// (`entities.profile.merge`, `regions[1].jurisdiction`) so that the message
/// alone is enough to find the problem in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML, or does not fit the schema (unknown key,
    /// missing key, wrong type, bad duration, unknown merge type, ...).
    #[error("{}", display_parse(.key.as_deref(), .message, *.line, *.column))]
    Parse {
        /// The offending key, when it could be located (`None` for TOML syntax errors
        /// that are not inside a key/value pair).
        key: Option<String>,
        /// What is wrong, without the source text.
        message: String,
        /// 1-based line of the problem in the source, 0 when unknown.
        line: usize,
        /// 1-based column of the problem in the source, 0 when unknown.
        column: usize,
    },
    /// The TOML fits the schema but breaks a rule of the deployment
    /// (duplicate region, unknown data class, zero limit, ...).
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// A validation error for `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.into(), message: message.into() }
    }

    /// The offending key, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } => key.as_deref(),
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

fn display_parse(key: Option<&str>, message: &str, line: usize, column: usize) -> String {
    let location =
        if line == 0 { String::new() } else { format!(" (line {line}, column {column})") };
    match key {
        Some(key) => format!("{key}: {message}{location}"),
        None if line == 0 => format!("invalid TOML: {message}"),
        None => format!("invalid TOML at line {line}, column {column}: {message}"),
    }
}
