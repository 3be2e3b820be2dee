//! The drill's report: the `report.json` shape of DESIGN.md (target, mode,
//! verdict, TTD, TTR, phases with their named checks, writes, conflicts,
//! residency, max lag, findings), the verdict rule, and `report.md`, a
//! readable summary with the same tables. Pure: building and rendering only.

use serde::Serialize;

/// One named check of a phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check { name: name.into(), ok, detail: detail.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Seconds since the drill started (for the timeline).
    pub offset_seconds: f64,
    pub duration_seconds: f64,
    pub checks: Vec<Check>,
}

impl PhaseReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Writes {
    pub attempted: u64,
    pub acknowledged: u64,
    pub verified: u64,
    pub lost: u64,
    /// Lost writes missing from every region that may hold them; the rest
    /// of `lost` are missing from some regions only.
    pub lost_everywhere: u64,
    pub lost_keys: Vec<String>,
    /// Attempted writes with no usable answer (timeouts, upstream errors).
    pub unknown_outcome: u64,
    /// Attempted writes refused with an answer (503 no_region_available, 4xx).
    pub rejected: u64,
}

/// Requests by timeline class.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Requests {
    pub total: u64,
    pub ok: u64,
    pub failover: u64,
    pub refused: u64,
    pub error: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: String,
    pub verdict: String,
    pub ttd_seconds: Option<f64>,
    /// The alert that fired first.
    pub ttd_alert: Option<String>,
    pub ttr_seconds: Option<f64>,
    /// The first request of the target's traffic served elsewhere.
    pub ttr_request: Option<String>,
    pub started_at: String,
    pub duration_seconds: f64,
    pub timings: String,
    pub phases: Vec<PhaseReport>,
    pub writes: Writes,
    pub requests: Requests,
    pub conflicts_during_restoration: u64,
    /// Conflicts during restoration per acknowledged write of the drill.
    pub conflict_rate_during_restoration: f64,
    pub residency_violations: u64,
    pub max_replication_lag_seconds: f64,
    pub findings: Vec<String>,
}

/// `fail` when a write was lost, residency was violated or any check failed.
pub fn verdict(phases: &[PhaseReport], writes: &Writes, residency_violations: u64) -> &'static str {
    if writes.lost > 0 || residency_violations > 0 || phases.iter().any(|p| !p.ok()) {
        "fail"
    } else {
        "pass"
    }
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |s| format!("{s:.2} s"))
}

/// Table cells must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `report.md`: the summary, the phases, every check, the findings.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let push = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    push(&mut out, format!("# Failover drill: {} ({})", r.target, r.mode));
    push(&mut out, String::new());
    push(
        &mut out,
        format!(
            "**Verdict: {}** — started {}, {:.1} s, {} timings.",
            r.verdict.to_uppercase(),
            r.started_at,
            r.duration_seconds,
            r.timings
        ),
    );
    push(&mut out, String::new());
    push(&mut out, "| measure | value |".into());
    push(&mut out, "|---|---|".into());
    let rows = [
        (
            "Time-to-Detect",
            format!(
                "{}{}",
                secs(r.ttd_seconds),
                r.ttd_alert.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
            ),
        ),
        (
            "Time-to-Route",
            format!(
                "{}{}",
                secs(r.ttr_seconds),
                r.ttr_request.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
            ),
        ),
        ("writes attempted", r.writes.attempted.to_string()),
        ("writes acknowledged", r.writes.acknowledged.to_string()),
        ("writes verified", r.writes.verified.to_string()),
        (
            "writes lost",
            format!("{} ({} missing from every region)", r.writes.lost, r.writes.lost_everywhere),
        ),
        ("writes with unknown outcome", r.writes.unknown_outcome.to_string()),
        (
            "conflicts during restoration",
            format!(
                "{} (rate {:.4}%)",
                r.conflicts_during_restoration,
                r.conflict_rate_during_restoration * 100.0
            ),
        ),
        ("residency violations", r.residency_violations.to_string()),
        ("max replication lag", format!("{:.2} s", r.max_replication_lag_seconds)),
        (
            "requests",
            format!(
                "{} (ok {}, failover {}, refused {}, error {})",
                r.requests.total,
                r.requests.ok,
                r.requests.failover,
                r.requests.refused,
                r.requests.error
            ),
        ),
    ];
    for (k, v) in rows {
        push(&mut out, format!("| {k} | {} |", cell(&v)));
    }
    push(&mut out, String::new());
    push(&mut out, "## Phases".into());
    push(&mut out, String::new());
    push(&mut out, "| phase | started | duration | checks |".into());
    push(&mut out, "|---|---|---|---|".into());
    for p in &r.phases {
        let failed = p.checks.iter().filter(|c| !c.ok).count();
        push(
            &mut out,
            format!(
                "| {} | {} | {:.1} s | {} passed, {} failed |",
                p.name,
                p.started_at,
                p.duration_seconds,
                p.checks.len() - failed,
                failed
            ),
        );
    }
    for p in &r.phases {
        push(&mut out, String::new());
        push(&mut out, format!("### {}", p.name));
        push(&mut out, String::new());
        push(&mut out, "| check | ok | detail |".into());
        push(&mut out, "|---|---|---|".into());
        for c in &p.checks {
            push(
                &mut out,
                format!(
                    "| {} | {} | {} |",
                    cell(&c.name),
                    if c.ok { "yes" } else { "**NO**" },
                    cell(&c.detail)
                ),
            );
        }
    }
    push(&mut out, String::new());
    push(&mut out, "## Findings".into());
    push(&mut out, String::new());
    if r.findings.is_empty() {
        push(&mut out, "None.".into());
    }
    for f in &r.findings {
        push(&mut out, format!("- {f}"));
    }
    if !r.writes.lost_keys.is_empty() {
        push(&mut out, String::new());
        push(&mut out, "## Lost writes".into());
        push(&mut out, String::new());
        for k in &r.writes.lost_keys {
            push(&mut out, format!("- `{k}`"));
        }
    }
    push(&mut out, String::new());
    push(
        &mut out,
        "The timeline is in `timeline.svg`; the machine-readable report in `report.json`.".into(),
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Report {
        let phase = |name: &str, off: f64, ok: bool| PhaseReport {
            name: name.into(),
            started_at: rfc3339(1_700_000_000_000 + (off * 1000.0) as u64),
            offset_seconds: off,
            duration_seconds: 2.0,
            checks: vec![Check::new("a | check", ok, "detail\nmore")],
        };
        Report {
            target: "eu-west".into(),
            mode: "isolate".into(),
            verdict: "pass".into(),
            ttd_seconds: Some(5.1),
            ttd_alert: Some("lag budget `credentials` breached on eu-central".into()),
            ttr_seconds: Some(0.05),
            ttr_request: None,
            started_at: rfc3339(1_700_000_000_000),
            duration_seconds: 12.0,
            timings: "short".into(),
            phases: super::super::plan::PHASES
                .iter()
                .enumerate()
                .map(|(i, n)| phase(n, i as f64 * 2.0, true))
                .collect(),
            writes: Writes { attempted: 10, acknowledged: 9, verified: 9, ..Writes::default() },
            requests: Requests { total: 12, ok: 8, failover: 2, refused: 1, error: 1 },
            conflicts_during_restoration: 0,
            conflict_rate_during_restoration: 0.0,
            residency_violations: 0,
            max_replication_lag_seconds: 6.5,
            findings: vec!["one <finding> & more".into()],
        }
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn verdict_rule() {
        let r = sample();
        assert_eq!(verdict(&r.phases, &r.writes, 0), "pass");
        assert_eq!(verdict(&r.phases, &r.writes, 1), "fail");
        let lost = Writes { lost: 1, ..r.writes.clone() };
        assert_eq!(verdict(&r.phases, &lost, 0), "fail");
        let mut phases = r.phases.clone();
        phases[3].checks.push(Check::new("x", false, ""));
        assert_eq!(verdict(&phases, &r.writes, 0), "fail");
    }

    #[test]
    fn json_has_the_contract_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in [
            "target",
            "mode",
            "verdict",
            "ttd_seconds",
            "ttr_seconds",
            "phases",
            "writes",
            "conflicts_during_restoration",
            "residency_violations",
            "max_replication_lag_seconds",
            "findings",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["attempted", "acknowledged", "verified", "lost", "lost_keys"] {
            assert!(v["writes"].get(k).is_some(), "missing writes.{k}");
        }
        for k in ["name", "started_at", "duration_seconds", "checks"] {
            assert!(v["phases"][0].get(k).is_some(), "missing phases[].{k}");
        }
        assert_eq!(v["phases"][0]["checks"][0]["ok"], true);
    }

    #[test]
    fn markdown_has_the_tables() {
        let md = markdown(&sample());
        assert!(md.contains("**Verdict: PASS**"));
        for p in super::super::plan::PHASES {
            assert!(md.contains(&format!("### {p}")), "{p}");
        }
        assert!(md.contains("a \\| check"), "pipes are escaped");
        assert!(!md.contains("detail\nmore"), "newlines stay inside a cell");
        assert!(md.contains("5.10 s (lag budget"));
    }
}
