//! `tandem drill` end to end: each test starts its own `tandem up` of the
//! example deployment (every listen address moved to a free loopback port,
//! data in a temporary directory, the control API on a random port), runs a
//! scaled-down drill against it with the real binary, and reads the report.
//! Four drills must pass (isolate and kill, of a region that has a peer in
//! its jurisdiction and of one that has none); a kill drill of a region that
//! acknowledges writes before they are durable must fail and name the lost
//! writes.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const ADMIN_TOKEN: &str = "drill-test-admin-token";
/// Phase lengths are the short timings times this.
const PHASE_SCALE: &str = "0.5";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A scaled-down drill takes about 25 s; anything past this is hung.
const DRILL_TIMEOUT: Duration = Duration::from_secs(150);
const PHASES: [&str; 6] =
    ["pre-drill", "isolation", "observation", "validation", "restoration", "post-drill"];

/// A running `tandem up`; dropping it stops every process it started.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Child,
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// The example deployment with its four listen addresses moved to free
/// ports and its data under `data_dir`.
fn config_text(data_dir: &Path) -> String {
    let ports = free_ports(4);
    let mut text = tandem_config::EXAMPLE_TOML.to_owned();
    for (i, port) in ports.iter().enumerate() {
        let fixed = format!("127.0.0.1:{}", 7100 + i);
        assert!(text.contains(&fixed), "the example listens on {fixed}");
        text = text.replace(&fixed, &format!("127.0.0.1:{port}"));
    }
    assert!(text.contains("data_dir = \"./data\""));
    text.replace(
        "data_dir = \"./data\"",
        &format!("data_dir = {:?}", data_dir.display().to_string()),
    )
}

impl Deployment {
    fn start(extra: &[&str]) -> Deployment {
        let mut last_log = String::new();
        // A freed port can be taken by another process before `up` binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("tandem-drill-").tempdir().expect("tempdir");
            let data = dir.path().join("data");
            let config = dir.path().join("tandem.toml");
            std::fs::write(&config, config_text(&data)).expect("write the config");
            let log = dir.path().join("up.log");
            let out = File::create(&log).expect("create the log");
            let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
                .arg("up")
                .arg("--config")
                .arg(&config)
                .args(["--control", "127.0.0.1:0"])
                .args(extra)
                .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::from(out.try_clone().expect("clone")))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("spawn tandem up");
            let started = Instant::now();
            loop {
                if data.join("up.json").exists() {
                    return Deployment { dir, config, child };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if started.elapsed() > START_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("tandem up did not start:\n{last_log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Run a drill; returns its exit code, its report and its output directory.
    fn drill(&self, target: &str, mode: &str) -> (i32, Value, PathBuf) {
        let (code, report, out, log) =
            run_drill(self.dir.path(), &self.config, &["--target", target, "--mode", mode]);
        let report = report.unwrap_or_else(|| panic!("no report.json:\n{log}\n{}", self.log()));
        (code, report, out)
    }
}

/// `tandem drill --config CONFIG --out DIR/drill-N ARGS --phase-scale`; returns
/// the exit code, the report (if one was written), the output directory and
/// the drill's output.
fn run_drill(dir: &Path, config: &Path, args: &[&str]) -> (i32, Option<Value>, PathBuf, String) {
    let name = args.join("-").replace("--", "");
    let out = dir.join(format!("drill-{name}"));
    let log_path = dir.join(format!("drill-{name}.log"));
    let log = File::create(&log_path).expect("create the drill log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("drill")
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--phase-scale", PHASE_SCALE])
        .arg("--out")
        .arg(&out)
        .env("TANDEM_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn tandem drill");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the drill") {
            break s;
        }
        if started.elapsed() > DRILL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the drill did not finish within {DRILL_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!("--- drill {args:?} ({:.1} s) ---\n{output}", started.elapsed().as_secs_f64());
    let report = std::fs::read(out.join("report.json"))
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("report.json is JSON"));
    (status.code().unwrap_or(-1), report, out, output)
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// The drill passed, and its three outputs are there and complete.
fn assert_passed(d: &Deployment, target: &str, mode: &str) {
    let (code, report, out) = d.drill(target, mode);
    let failed = failed_checks(&report);
    assert_eq!(
        code,
        0,
        "drill {target} {mode} exited {code}; failed checks: {failed:#?}\nfindings: {:#}\n{}",
        report["findings"],
        d.log()
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
}

#[test]
fn isolate_us_east_passes() {
    assert_passed(&Deployment::start(&[]), "us-east", "isolate");
}

#[test]
fn kill_us_east_passes() {
    assert_passed(&Deployment::start(&[]), "us-east", "kill");
}

#[test]
fn isolate_eu_west_passes() {
    assert_passed(&Deployment::start(&[]), "eu-west", "isolate");
}

#[test]
fn kill_eu_west_passes() {
    assert_passed(&Deployment::start(&[]), "eu-west", "kill");
}

/// eu-west answers writes 300 ms before they are durable; killing it loses
/// the acknowledged writes of the batch in flight, which the steady writers
/// of the workload always have there. The drill must say so.
#[test]
fn kill_of_a_lying_region_fails_and_names_the_lost_writes() {
    let d = Deployment::start(&["--unsafe-ack-region", "eu-west"]);
    let (code, report, out) = d.drill("eu-west", "kill");
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
    let journal = std::fs::read_to_string(out.join("requests.jsonl")).expect("requests.jsonl");
    let by_eu_west = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a journal line"))
        .filter(|r| r["region"] == "eu-west" && r["status"] == 200 && !r["write"].is_null())
        .any(|r| {
            keys.contains(
                &format!("{}/{}", r["entity"].as_str().unwrap(), r["id"].as_str().unwrap())
                    .as_str(),
            )
        });
    assert!(by_eu_west, "no lost key was written at eu-west: {keys:?}");
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
    std::fs::write(&config, config_text(&dir.path().join("data"))).expect("write the config");
    let (code, report, _, output) =
        run_drill(dir.path(), &config, &["--target", "eu-west", "--mode", "isolate"]);
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
