//! Metric scrapes: the Prometheus (OpenMetrics) text a node or the router
//! serves at `/metrics`, parsed into samples, and a sample looked up by name
//! and labels. A lookup names only the labels it cares about: a sample
//! matches when it carries each of them with that value. And the other side
//! of a scrape: what families it exposes, and which metric names a PromQL
//! expression (an alert rule, a dashboard query) selects.

use std::collections::{BTreeMap, BTreeSet};

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

/// What a `/metrics` output exposes: sample names and `# TYPE` families.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: BTreeSet<String>,
    pub families: BTreeMap<String, String>,
}

impl Exposition {
    pub fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    self.families.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                self.samples.insert(line[..end].to_owned());
            }
        }
    }

    /// Whether a name used in a query is exposed: as a sample, as a `# TYPE`
    /// line, as a counter's `_total` sample name, or as a histogram's series.
    pub fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.contains_key(name) {
            return true;
        }
        if let Some(family) = name.strip_suffix("_total") {
            if self.families.get(family).is_some_and(|k| k == "counter") {
                return true;
            }
        }
        ["_bucket", "_count", "_sum"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| self.families.get(family).is_some_and(|k| k == "histogram"))
        })
    }
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, aggregation modifiers, keywords, label names or label values.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 27] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "atan2",
        // Aggregations, which a `by` clause may separate from their `(`.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skip from an opening bracket to its closing one, over quoted strings.
    let skip_to = |mut i: usize, close: char| -> usize {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '"' || c == '\'' {
            i = skip_to(i + 1, c);
        } else if c == '$' {
            // A Grafana variable such as $__rate_interval.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number (1e-9, 0.001) or a duration (5m).
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = chars.get(j) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) && called {
                i = skip_to(j + 1, ')');
            } else if !called && !KEYWORDS.contains(&ident.to_ascii_lowercase().as_str()) {
                names.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
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
