//! A region whose disk fills up (a 24 MiB tmpfs the test mounts, so this needs
//! root; CI runs as root): the first write that does not fit answers 507
//! `insufficient_storage` and nothing is acknowledged that is not stored;
//! acknowledged writes stay readable while the disk is full; `/healthz` says
//! the region cannot write; writes are accepted again by themselves once space
//! is freed; and after a `kill -9` every acknowledged write is there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::config::{example_text, TEST_PSEUDONYM_KEYS};
use tandem_testkit::{error_code, Served, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn a_full_disk_answers_507_keeps_reads_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(24) else { return };
    // Room the test takes away first and gives back at the end.
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![1u8; 6 * 1024 * 1024]).expect("write the filler");
    let mut node = start_node(&disk.path);
    let value = "v".repeat(2_000);

    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let id = format!("a{}", acked.len());
        let body = json!({ "value": { "n": acked.len(), "pad": value } }).to_string();
        let (status, answer) =
            node.raw("PUT", &format!("/v1/records/article/{id}"), body.into_bytes());
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
    let (status, health) = node.request("GET", "/healthz", None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["writable"], false);
    assert_eq!(health["error"]["code"], "insufficient_storage");
    let (status, answer) =
        node.raw("PUT", "/v1/records/article/while-full", br#"{"value":1}"#.to_vec());
    assert_eq!((status, error_code(&answer)), (507, "insufficient_storage"));
    let (_, status_doc) = node.request("GET", "/v1/status", None);
    assert_eq!(status_doc["storage"]["full"], true, "{status_doc}");
    for id in &acked {
        let (status, rec) = node.request("GET", &format!("/v1/records/article/{id}"), None);
        assert_eq!(status, 200, "acknowledged {id} is readable while the disk is full: {rec}");
    }
    let (status, _) = node.request("GET", &format!("/v1/records/article/{refused}"), None);
    assert_eq!(status, 404, "the refused write left nothing");
    let (_, metrics) = node.get_text("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("tandem_storage_full{") && l.ends_with(" 1")),
        "{metrics}\n{}",
        node.stderr()
    );

    // Space returns: writes are taken again without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, answer) =
            node.raw("PUT", "/v1/records/article/after", br#"{"value":"after"}"#.to_vec());
        if status == 200 {
            break;
        }
        assert_eq!(status, 507, "{answer}");
        assert!(Instant::now() < deadline, "writes did not resume after space was freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    acked.push("after".into());
    let (status, health) = node.request("GET", "/healthz", None);
    assert_eq!((status, health["writable"].clone()), (200, Value::Bool(true)), "{health}");

    // Nothing acknowledged is lost, across a kill -9.
    node.kill9();
    let node = start_node(&disk.path);
    for id in &acked {
        let (status, _) = node.request("GET", &format!("/v1/records/article/{id}"), None);
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
/// port) with its data on `disk`, without TLS (this test is about the disk).
fn start_node(disk: &Path) -> Served {
    let config = disk.join("tandem.toml");
    std::fs::write(&config, example_text()).expect("write the config");
    let config = config.display().to_string();
    let data = disk.join("data").display().to_string();
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
        "--config",
        &config,
        "--data-dir",
        &data,
        "--insecure",
    ];
    TANDEM.serve(&args, &[("TANDEM_REPLICATION_SECRET", "full-disk-test"), TEST_PSEUDONYM_KEYS[0]])
}
