//! Metric scrapes: the Prometheus (OpenMetrics) text a node or the router
//! serves at `/metrics`, parsed into samples, and a sample looked up by name
//! and labels. A lookup names only the labels it cares about: a sample
//! matches when it carries each of them with that value.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels.iter().all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Every sample of a scrape (comments, `# TYPE` lines and unparsable lines
/// are skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
}

/// The sum of every sample of `name` that carries all of `labels` (0 when
/// there is none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text).iter().filter(|s| s.matches(name, labels)).map(|s| s.value).sum()
}

/// The value of the first sample of `name` that carries all of `labels`.
pub fn first(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).into_iter().find(|s| s.matches(name, labels)).map(|s| s.value)
}

/// `name{k="v",...} value [timestamp]`.
fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// The labels after `{`, up to the closing `}`, and what follows it. Values
/// are quoted and may hold escaped quotes, commas and braces.
fn parse_labels(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start_matches([',', ' ']);
        if let Some(after) = trimmed.strip_prefix('}') {
            return Some((out, after));
        }
        let (key, after) = trimmed.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, n)| n)),
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_owned(), value);
        rest = &after[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE replication_writes counter\n\
        replication_writes_total{entity_type=\"article\",region=\"eu-west\"} 7\n\
        replication_writes_total{entity_type=\"likes\",region=\"eu-west\"} 4\n\
        odd_total{path=\"a,b}\\\"c\"} 2 1700000000\n\
        plain 1.5\n\
        bucket{le=\"+Inf\"} 3\n# EOF\n";

    #[test]
    fn samples_by_name_and_labels() {
        assert_eq!(sum(TEXT, "replication_writes_total", &[]), 11.0);
        assert_eq!(sum(TEXT, "replication_writes_total", &[("entity_type", "likes")]), 4.0);
        assert_eq!(sum(TEXT, "replication_writes_total", &[("entity_type", "nope")]), 0.0);
        assert_eq!(first(TEXT, "odd_total", &[("path", "a,b}\"c")]), Some(2.0));
        assert_eq!(first(TEXT, "plain", &[]), Some(1.5));
        assert_eq!(first(TEXT, "bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(first(TEXT, "absent", &[]), None);
        assert_eq!(samples(TEXT).len(), 5);
    }
}
