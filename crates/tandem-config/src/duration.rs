//! Durations in the config file: human-readable strings ("500ms", "5s", "2m",
//! "15min") parsed and printed with `humantime`, for `#[serde(with = "...")]`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Prints a duration the way it is written in the file (`5s`, `2m`, `1m 30s`).
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// Reads a duration string; the error quotes the bad value. The key is added
/// by the caller from the error's position in the file.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"500ms\", \"5s\", \"2m\" or \"15min\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        humantime::parse_duration(value).map_err(|err| {
            E::custom(format!(
                "invalid duration {value:?}: {err} (write e.g. \"500ms\", \"5s\", \"2m\", \"15min\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_humantime() {
        for text in ["500ms", "5s", "2m", "15m", "1h 30m", "1m 30s 250ms"] {
            let parsed = humantime::parse_duration(text).unwrap();
            let printed = humantime::format_duration(parsed).to_string();
            assert_eq!(humantime::parse_duration(&printed).unwrap(), parsed, "{text}");
        }
        assert_eq!(humantime::parse_duration("15min").unwrap(), Duration::from_secs(900));
    }
}
