//! A region whose disk fills up (a 24 MiB tmpfs the test mounts, so this needs
//! root; CI runs as root): the first write that does not fit answers 507
//! `insufficient_storage` and nothing is acknowledged that is not stored;
//! acknowledged writes stay readable while the disk is full; `/healthz` says
//! the region cannot write; writes are accepted again by themselves once space
//! is freed; and after a `kill -9` every acknowledged write is there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, error_code, request, Process};
use serde_json::{json, Value};

#[test]
fn a_full_disk_answers_507_keeps_reads_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(24) else { return };
    // Room the test takes away first and gives back at the end.
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![1u8; 6 * 1024 * 1024]).expect("write the filler");
    let mut node = start_node(&disk.path);
    let http = client();
    let value = "v".repeat(2_000);

    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let id = format!("a{}", acked.len());
        let body = json!({ "value": { "n": acked.len(), "pad": value } }).to_string();
        let (status, answer) = request(
            &http,
            &node.url,
            "PUT",
            &format!("/v1/records/article/{id}"),
            Some(body.into_bytes()),
        );
        match status {
            200 => acked.push(id),
            507 => {
                assert_eq!(error_code(&answer), "insufficient_storage");
                refused = Some(id);
                break;
            }
            other => panic!("write {id}: unexpected {other} {answer}"),
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(acked.len() > 100, "only {} writes fitted on 18 MiB", acked.len());

    // Full: writes refused, reads served, health says so.
    let (status, health) = request(&http, &node.url, "GET", "/healthz", None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["writable"], false);
    assert_eq!(health["error"]["code"], "insufficient_storage");
    let (status, answer) = request(
        &http,
        &node.url,
        "PUT",
        "/v1/records/article/while-full",
        Some(br#"{"value":1}"#.to_vec()),
    );
    assert_eq!((status, error_code(&answer)), (507, "insufficient_storage"));
    let (_, status_doc) = request(&http, &node.url, "GET", "/v1/status", None);
    assert_eq!(status_doc["storage"]["full"], true, "{status_doc}");
    for id in &acked {
        let (status, rec) =
            request(&http, &node.url, "GET", &format!("/v1/records/article/{id}"), None);
        assert_eq!(status, 200, "acknowledged {id} is readable while the disk is full: {rec}");
    }
    let (status, _) =
        request(&http, &node.url, "GET", &format!("/v1/records/article/{refused}"), None);
    assert_eq!(status, 404, "the refused write left nothing");
    let metrics = http.get(format!("{}/metrics", node.url)).send().unwrap().text().unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("tandem_storage_full{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // Space returns: writes are taken again without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) = request(
            &http,
            &node.url,
            "PUT",
            "/v1/records/article/after",
            Some(br#"{"value":"after"}"#.to_vec()),
        );
        if status == 200 {
            break;
        }
        assert_eq!(status, 507, "{answer}");
        assert!(Instant::now() < deadline, "writes did not resume after space was freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    acked.push("after".into());
    let (status, health) = request(&http, &node.url, "GET", "/healthz", None);
    assert_eq!((status, health["writable"].clone()), (200, Value::Bool(true)), "{health}");

    // Nothing acknowledged is lost, across a kill -9.
    node.kill9();
    let node = start_node(&disk.path);
    for id in &acked {
        let (status, _) =
            request(&http, &node.url, "GET", &format!("/v1/records/article/{id}"), None);
        assert_eq!(status, 200, "acknowledged {id} survived the full disk and a kill -9");
    }
}

/// A tmpfs of `mib` MiB, unmounted when dropped. `None` (with a notice) when
/// this process may not mount one, unless CI is set: then it fails.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> Option<SmallDisk> {
        let dir =
            tempfile::Builder::new().prefix("tandem-small-disk-").tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a tmpfs (run as root)"
            );
            eprintln!("skipping: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `tandem node` (eu-west of the example, alone: its peers point at a closed
/// port) with its data on `disk`.
fn start_node(disk: &Path) -> Process {
    let config = disk.join("tandem.toml");
    std::fs::write(&config, common::example_config()).expect("write the config");
    let args = [
        "node",
        "--region",
        "eu-west",
        "--listen",
        "127.0.0.1:0",
        "--peer-url",
        "eu-central=http://127.0.0.1:9",
        "--peer-url",
        "us-east=http://127.0.0.1:9",
    ];
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--config".into(), config.display().to_string()]);
    args.extend(["--data-dir".into(), disk.join("data").display().to_string()]);
    Process::start(
        &args,
        &[
            ("TANDEM_REPLICATION_SECRET", "full-disk-test".into()),
            ("TANDEM_PSEUDONYM_KEY_EU", "11".repeat(32)),
        ],
    )
}
