//! `tandem drill` end to end: each test starts its own `tandem up` of the
//! example deployment (every listen address moved to a free loopback port,
//! data in a temporary directory, the control API on a random port), runs a
//! scaled-down drill against it with the real binary, and reads the report.
//! Four drills must pass (isolate and kill, of a region that has a peer in
//! its jurisdiction and of one that has none); a kill drill of a region that
//! acknowledges writes before they are durable must fail and name the lost
//! writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::acked::{self, History, Key, Write};
use tandem_testkit::{config, process, Deployment, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
const ADMIN_TOKEN: &str = "drill-test-admin-token";
/// Phase lengths are the short timings times this.
const PHASE_SCALE: &str = "0.5";
/// A scaled-down drill takes about 25 s; anything past this is hung.
const DRILL_TIMEOUT: Duration = Duration::from_secs(150);
const PHASES: [&str; 6] =
    ["pre-drill", "isolation", "observation", "validation", "restoration", "post-drill"];

/// Every check that failed, for the assertion message.
fn failed_checks(report: &Value) -> Vec<String> {
    report["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ok"] != true)
                .map(move |c| format!("{}: {}: {}", p["name"], c["name"], c["detail"]))
        })
        .collect()
}

#[test]
fn isolate_us_east_passes() {
    assert_passed(&deployment(None), "us-east", "isolate");
}

#[test]
fn kill_us_east_passes() {
    assert_passed(&deployment(None), "us-east", "kill");
}

#[test]
fn isolate_eu_west_passes() {
    assert_passed(&deployment(None), "eu-west", "isolate");
}

#[test]
fn kill_eu_west_passes() {
    assert_passed(&deployment(None), "eu-west", "kill");
}

/// eu-west answers writes 300 ms before they are durable; killing it loses
/// the acknowledged writes of the batch in flight, which the steady writers
/// of the workload always have there. The drill must say so.
#[test]
fn kill_of_a_lying_region_fails_and_names_the_lost_writes() {
    let d = deployment(Some("eu-west"));
    let (code, report, out) = drill(&d, "eu-west", "kill");
    assert_eq!(code, 1, "the drill must find the problem: {:#}", report["findings"]);
    assert_eq!(report["verdict"], "fail");
    let lost = report["writes"]["lost"].as_u64().unwrap();
    assert!(lost > 0, "{:#}", report["writes"]);
    // Gone for good, not only late somewhere.
    assert!(report["writes"]["lost_everywhere"].as_u64().unwrap() > 0, "{:#}", report["writes"]);
    let keys: Vec<&str> = report["writes"]["lost_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(!keys.is_empty());
    // At least one lost record had writes acknowledged by eu-west itself.
    let history = journal(&d, &out);
    let by_eu_west =
        history.acked_by("eu-west").iter().any(|k| keys.contains(&k.to_string().as_str()));
    assert!(by_eu_west, "no lost key was written at eu-west: {keys:?}");
    // The kit's checker, reading every region that may hold each record, finds
    // the loss too.
    let lost = d.check_acked(&history);
    assert!(!lost.is_empty(), "the drill lost {keys:?}, the kit's checker nothing");
    eprintln!("the kit's checker finds {} contradictions, e.g. {:?}", lost.len(), lost.first());
    assert!(
        report["findings"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().contains("lost")),
        "{:#}",
        report["findings"]
    );
}

/// Nothing listens at the config's addresses: the pre-drill checks fail, the
/// drill exits 2 and says why in its report, having touched nothing.
#[test]
fn drill_without_a_deployment_cannot_run() {
    let dir = tempfile::Builder::new().prefix("tandem-drill-").tempdir().expect("tempdir");
    let config = dir.path().join("tandem.toml");
    let text = config::example_on_free_ports(&dir.path().join("data"));
    std::fs::write(&config, text).expect("write the config");
    // Without the deployment's certificates it cannot even connect, and
    // says where it looked and how to run without TLS.
    let (code, report, _, output) =
        run_drill(dir.path(), &config, &["--target", "eu-west", "--mode", "isolate"]);
    assert_eq!(code, 2, "{output}");
    assert!(report.is_none(), "{output}");
    assert!(output.contains("certs") && output.contains("--insecure"), "{output}");

    let (code, report, _, output) =
        run_drill(dir.path(), &config, &["--target", "eu-west", "--mode", "isolate", "--insecure"]);
    assert_eq!(code, 2, "{output}");
    let report = report.expect("a report of the failed pre-drill checks");
    assert_eq!(report["verdict"], "fail");
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "{phases:#?}");
    assert_eq!(phases[0]["name"], "pre-drill");
    let failed = failed_checks(&report);
    assert!(failed.iter().any(|c| c.contains("every region healthy")), "{failed:#?}");
    assert_eq!(report["writes"]["attempted"], 0, "nothing was written");

    // An unknown target is refused before anything runs.
    let (code, report, _, output) =
        run_drill(dir.path(), &config, &["--target", "mars-1", "--mode", "kill"]);
    assert_eq!(code, 2, "{output}");
    assert!(report.is_none());
    assert!(output.contains("mars-1"), "{output}");
}

/// The drill passed, and its three outputs are there and complete.
fn assert_passed(d: &Deployment, target: &str, mode: &str) {
    let (code, report, out) = drill(d, target, mode);
    let failed = failed_checks(&report);
    assert_eq!(
        code,
        0,
        "drill {target} {mode} exited {code}; failed checks: {failed:#?}\nfindings: {:#}\n{}",
        report["findings"],
        d.log_text()
    );
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["target"], target);
    assert_eq!(report["mode"], mode);
    assert_eq!(report["writes"]["lost"], 0, "{:#}", report["writes"]);
    assert!(report["writes"]["acknowledged"].as_u64().unwrap() > 100, "{:#}", report["writes"]);
    assert_eq!(report["writes"]["verified"], report["writes"]["acknowledged"]);
    assert_eq!(report["residency_violations"], 0);
    let ttd = report["ttd_seconds"].as_f64().expect("ttd_seconds");
    let ttr = report["ttr_seconds"].as_f64().expect("ttr_seconds");
    assert!(ttd >= 0.0, "{ttd}");
    assert!(ttr < 5.0, "TTR {ttr} s");
    assert!(report["max_replication_lag_seconds"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> =
        report["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, PHASES);
    for p in report["phases"].as_array().unwrap() {
        assert!(p["started_at"].as_str().unwrap().ends_with('Z'), "{p}");
        assert!(p["duration_seconds"].as_f64().unwrap() >= 0.0);
        assert!(!p["checks"].as_array().unwrap().is_empty(), "{p}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("**Verdict: PASS**"), "{md}");
    let svg = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    assert_eq!(svg.matches('<').count(), svg.matches('>').count(), "balanced angle brackets");
    for p in PHASES {
        assert!(md.contains(&format!("### {p}")), "report.md lacks {p}");
        assert!(svg.contains(p), "timeline.svg lacks {p}");
    }
    // The kit's checker agrees: every acknowledged write of the journal is
    // in every region that may hold its record.
    let lost = d.check_acked(&journal(d, &out));
    assert!(lost.is_empty(), "the drill passed, but the kit's checker finds {lost:#?}");
}

/// The example deployment under `tandem up` (its replication secret
/// generated by `up`), `liar` acknowledging writes before they are durable.
fn deployment(liar: Option<&str>) -> Deployment {
    let mut b = TANDEM
        .deployment()
        .prefix("tandem-drill-")
        .admin_token(ADMIN_TOKEN)
        .replication_secret(None)
        .env_remove("RUST_LOG")
        // A freed port can be taken by another process before `up` binds it.
        .start_attempts(3);
    if let Some(region) = liar {
        b = b.lying_region(region);
    }
    b.start()
}

/// Run a drill against `d`; returns its exit code, its report and its output
/// directory.
fn drill(d: &Deployment, target: &str, mode: &str) -> (i32, Value, PathBuf) {
    let (code, report, out, log) =
        run_drill(d.root(), d.config_path(), &["--target", target, "--mode", mode]);
    let report = report.unwrap_or_else(|| panic!("no report.json:\n{log}\n{}", d.log_text()));
    (code, report, out)
}

/// `tandem drill --config CONFIG --out DIR/drill-N ARGS --phase-scale`; returns
/// the exit code, the report (if one was written), the output directory and
/// the drill's output.
fn run_drill(dir: &Path, config: &Path, args: &[&str]) -> (i32, Option<Value>, PathBuf, String) {
    let name = args.join("-").replace("--", "");
    let out = dir.join(format!("drill-{name}"));
    let log = dir.join(format!("drill-{name}.log"));
    let mut cmd = TANDEM.command();
    cmd.arg("drill")
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--phase-scale", PHASE_SCALE])
        .arg("--out")
        .arg(&out)
        .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN);
    let started = Instant::now();
    let output = process::run_logged(cmd, &log, &log, DRILL_TIMEOUT);
    eprintln!(
        "--- drill {args:?} ({:.1} s) ---\n{}",
        started.elapsed().as_secs_f64(),
        output.stdout
    );
    let report = std::fs::read(out.join("report.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("report.json is JSON"));
    (output.code.unwrap_or(-1), report, out, output.stdout)
}

/// The drill's journal (`requests.jsonl`) as a history of acknowledged
/// writes: an answer 2xx is acknowledged by the region that served it (the
/// journal keeps no version), no answer or a 5xx may have applied it.
fn journal(d: &Deployment, out: &Path) -> History {
    let text = std::fs::read_to_string(out.join("requests.jsonl")).expect("requests.jsonl");
    let mut history = History::new();
    for r in text.lines().map(|l| serde_json::from_str::<Value>(l).expect("a journal line")) {
        let w = &r["write"];
        let write = match w["kind"].as_str() {
            None => continue,
            Some("set") => match w["field"].as_str() {
                None => Write::Put(w["value"].clone()),
                Some(f) => Write::Patch([(f.to_owned(), w["value"].clone())].into_iter().collect()),
            },
            Some("incr") => Write::Incr(w["by"].as_u64().expect("by")),
            Some("add") => Write::Add(w["element"].as_str().expect("element").to_owned()),
            Some(other) => panic!("a journal write of kind {other}: {r}"),
        };
        let (entity, id) = (r["entity"].as_str().expect("entity"), r["id"].as_str().expect("id"));
        let status = r["status"].as_u64().map(|s| s as u16);
        let code = r["error"].as_str().unwrap_or("");
        let outcome = acked::outcome_of_status(status, code, &json!({ "region": r["region"] }));
        history.record(Key::new(entity, id), acked::shape_of(d.config(), entity), write, outcome);
    }
    history
}
