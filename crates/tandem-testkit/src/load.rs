//! `tandem load` from a test: counter increments over `load:<n>` ids of an
//! entity at a plaintext (`--insecure`) target for a number of seconds; the
//! writes acknowledged. It fails the test on any refused write.

use serde_json::Value;

use crate::process::Tandem;

/// Increments of `entity` over `keys` ids from `clients` clients at `url`
/// for `secs` seconds: how many were acknowledged.
pub fn increments(bin: Tandem, url: &str, entity: &str, keys: u64, clients: u64, secs: u64) -> u64 {
    let out = bin
        .command()
        .args(["load", "--target", url, "--insecure", "--workload", "incr", "--entity", entity])
        .args(["--keys", &keys.to_string(), "--clients", &clients.to_string()])
        .args(["--warmup-secs", "0", "--duration-secs", &secs.to_string(), "--json"])
        .output()
        .expect("run tandem load");
    assert!(out.status.success(), "tandem load: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["requests_failed"], Value::from(0), "{report}");
    report["requests_ok"].as_u64().expect("requests_ok")
}
