//! What a run measured: each client task's [`Tally`] (an HDR histogram of
//! latencies, answers by HTTP status), merged into the [`LoadReport`] over
//! the measured window, and the report printed as text or as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::StatusCode;

/// Highest latency the histograms track; slower requests are clamped to it.
/// Above the request timeout, so a recorded latency is never clamped.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
const LATENCY_SIGFIG: u8 = 3;
/// The key `status_counts` uses for a request that got no HTTP answer.
pub const STATUS_NO_RESPONSE: u16 = 0;

/// What a run measured, over the measured window only (warm-up excluded).
#[derive(serde::Serialize, Debug)]
pub struct LoadReport {
    pub clients: usize,
    /// Length of the measured window.
    pub duration_secs: f64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    /// Requests answered otherwise, timed out, or failed in transport.
    pub requests_failed: u64,
    /// `requests_ok / duration_secs`.
    pub throughput_per_sec: f64,
    /// Latency percentiles over every request that got an answer.
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Answers by HTTP status; `0` counts requests with no answer (connection
    /// error or timeout).
    pub status_counts: BTreeMap<u16, u64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// What one client task measured after warm-up.
#[derive(Debug)]
pub(super) struct Tally {
    latency_us: Histogram<u64>,
    requests_ok: u64,
    requests_failed: u64,
    status_counts: BTreeMap<u16, u64>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            latency_us: new_histogram(),
            requests_ok: 0,
            requests_failed: 0,
            status_counts: BTreeMap::new(),
        }
    }

    pub(super) fn merge(&mut self, other: &Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms made by new_histogram share bounds");
        self.requests_ok += other.requests_ok;
        self.requests_failed += other.requests_failed;
        for (status, count) in &other.status_counts {
            *self.status_counts.entry(*status).or_insert(0) += count;
        }
    }

    pub(super) fn record_answer(&mut self, status: StatusCode, latency: Duration) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(latency_us.max(1));
        if status.is_success() {
            self.requests_ok += 1;
        } else {
            self.requests_failed += 1;
        }
        *self.status_counts.entry(status.as_u16()).or_insert(0) += 1;
    }

    pub(super) fn record_no_answer(&mut self) {
        self.requests_failed += 1;
        *self.status_counts.entry(STATUS_NO_RESPONSE).or_insert(0) += 1;
    }

    /// The report over a measured window of length `window`.
    pub(super) fn report(&self, clients: usize, window: Duration) -> LoadReport {
        let duration_secs = window.as_secs_f64();
        assert!(duration_secs > 0.0, "the measured window is never empty");
        let ms = |us: u64| us as f64 / 1000.0;
        let quantile = |q: f64| {
            if self.latency_us.is_empty() {
                0.0
            } else {
                ms(self.latency_us.value_at_quantile(q))
            }
        };
        LoadReport {
            clients,
            duration_secs,
            requests_ok: self.requests_ok,
            requests_failed: self.requests_failed,
            throughput_per_sec: self.requests_ok as f64 / duration_secs,
            latency_ms_p50: quantile(0.50),
            latency_ms_p90: quantile(0.90),
            latency_ms_p99: quantile(0.99),
            latency_ms_max: if self.latency_us.is_empty() {
                0.0
            } else {
                ms(self.latency_us.max())
            },
            status_counts: self.status_counts.clone(),
        }
    }
}

/// The report as text, or as one JSON object on stdout when `json`.
pub fn print(report: &LoadReport, json: bool) {
    if json {
        let text = serde_json::to_string_pretty(report).expect("a report serializes");
        println!("{text}");
    } else {
        print!("{}", render_text(report));
    }
}

fn render_text(report: &LoadReport) -> String {
    let statuses: Vec<String> = report
        .status_counts
        .iter()
        .map(|(status, count)| match *status {
            STATUS_NO_RESPONSE => format!("no answer: {count}"),
            status => format!("{status}: {count}"),
        })
        .collect();
    format!(
        "clients      {}\n\
         duration     {:.1} s\n\
         requests     {} ok, {} failed\n\
         throughput   {:.1} req/s\n\
         latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n\
         statuses     {}\n",
        report.clients,
        report.duration_secs,
        report.requests_ok,
        report.requests_failed,
        report.throughput_per_sec,
        report.latency_ms_p50,
        report.latency_ms_p90,
        report.latency_ms_p99,
        report.latency_ms_max,
        if statuses.is_empty() { "none".to_string() } else { statuses.join(", ") },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_from_a_tally() {
        let mut tally = Tally::new();
        // 100 answers: 1 ms .. 100 ms, the last 10 of them 503s.
        for ms in 1..=100u64 {
            let status = if ms > 90 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            tally.record_answer(status, Duration::from_millis(ms));
        }
        tally.record_no_answer();
        let report = tally.report(4, Duration::from_secs(2));
        assert_eq!(report.clients, 4);
        assert_eq!(report.duration_secs, 2.0);
        assert_eq!(report.requests_ok, 90);
        assert_eq!(report.requests_failed, 11);
        assert_eq!(report.throughput_per_sec, 45.0);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(near(report.latency_ms_p50, 50.0), "{}", report.latency_ms_p50);
        assert!(near(report.latency_ms_p90, 90.0), "{}", report.latency_ms_p90);
        assert!(near(report.latency_ms_p99, 99.0), "{}", report.latency_ms_p99);
        assert!(near(report.latency_ms_max, 100.0), "{}", report.latency_ms_max);
        let want: BTreeMap<u16, u64> = [(0, 1), (200, 90), (503, 10)].into_iter().collect();
        assert_eq!(report.status_counts, want);
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        a.record_answer(StatusCode::OK, Duration::from_micros(300));
        b.record_answer(StatusCode::OK, Duration::from_micros(700));
        b.record_answer(StatusCode::CONFLICT, Duration::from_micros(500));
        a.merge(&b);
        let report = a.report(2, Duration::from_secs(1));
        assert_eq!(report.requests_ok, 2);
        assert_eq!(report.requests_failed, 1);
        assert_eq!(report.status_counts[&200], 2);
        assert_eq!(report.status_counts[&409], 1);
        assert!((report.latency_ms_max - 0.7).abs() < 0.001);
    }

    #[test]
    fn empty_report_has_zero_latencies_and_sub_microsecond_is_one() {
        let report = Tally::new().report(1, Duration::from_secs(1));
        assert_eq!(report.requests_ok, 0);
        assert_eq!(report.latency_ms_p50, 0.0);
        assert_eq!(report.latency_ms_max, 0.0);
        assert_eq!(report.throughput_per_sec, 0.0);

        let mut tally = Tally::new();
        tally.record_answer(StatusCode::OK, Duration::from_nanos(10));
        tally.record_answer(StatusCode::OK, Duration::from_secs(3600));
        let report = tally.report(1, Duration::from_secs(1));
        assert_eq!(report.latency_ms_p50, 0.001);
        // Clamped to the histogram's top, within its precision.
        let top_ms = LATENCY_US_MAX as f64 / 1000.0;
        assert!((report.latency_ms_max - top_ms).abs() <= top_ms * 0.001);
    }

    #[test]
    fn report_serializes_with_the_contract_names() {
        let mut tally = Tally::new();
        tally.record_answer(StatusCode::OK, Duration::from_millis(1));
        let json = serde_json::to_value(tally.report(16, Duration::from_secs(10))).unwrap();
        for key in [
            "clients",
            "duration_secs",
            "requests_ok",
            "requests_failed",
            "throughput_per_sec",
            "latency_ms_p50",
            "latency_ms_p90",
            "latency_ms_p99",
            "latency_ms_max",
        ] {
            assert!(json.get(key).is_some(), "no {key} in {json}");
        }
        assert_eq!(json["status_counts"]["200"], 1);
        let text = render_text(&tally.report(16, Duration::from_secs(10)));
        assert!(text.contains("200: 1"), "{text}");
    }
}
