//! The command line's config checks and the node's bounded write queue:
//! `tandem config check` exits non-zero with a message naming the key for each
//! kind of bad config, and 0 for the example; a node whose write queue is full
//! answers 503 `overloaded` at once instead of buffering without bound.

use tandem_testkit::{config, Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn config_check_names_the_problem_and_exits_non_zero() {
    let example = tandem_config::EXAMPLE_TOML;
    let (code, text) = check(example);
    assert_eq!(code, 0, "{text}");
    let cases: Vec<(String, &str)> = vec![
        (example.replacen("merge = \"lww-fields\"", "merge = \"lwww\"", 1), "merge"),
        (
            example.replacen("data_class = \"credentials\"", "data_class = \"nope\"", 1),
            "data_class",
        ),
        (example.replacen("name = \"eu-central\"", "name = \"eu-west\"", 1), "regions"),
        (example.replacen("127.0.0.1:7102", "127.0.0.1:7101", 1), "listen"),
        (example.replacen("jurisdiction = \"US\"", "jurisdiction = \"\"", 1), "jurisdiction"),
        (example.replacen("max_lag = \"5s\"", "max_lag = \"5 parsecs\"", 1), "max_lag"),
        (
            example.replacen(
                "data_class = \"analytics\"\npersonal = false\nwrites = \"any-region\"",
                "data_class = \"analytics\"\npersonal = false\nwrites = \"home-region\"",
                1,
            ),
            "entities.page_views.writes",
        ),
        (example.replacen("[deployment]", "[deployment]\nunknown_key = 1", 1), "unknown_key"),
        ("this is [not toml".to_string(), "TOML"),
    ];
    for (text_in, key) in cases {
        assert_ne!(text_in, example, "the edit for {key} must change the example");
        let (code, out) = check(&text_in);
        assert_eq!(code, 2, "a bad config must fail ({key}): {out}");
        assert!(out.contains(key), "the message must name {key:?}: {out}");
    }
    let missing = TANDEM.run(&["config", "check", "/nonexistent/x.toml"]);
    assert_ne!(missing.code, Some(0));
    assert!(missing.stderr.contains("/nonexistent/x.toml"));
}

#[test]
fn a_full_write_queue_answers_503_overloaded() {
    // One queued write at a time and one write per commit: concurrent clients
    // fill the queue while a commit waits for its fsync.
    let config = config::example_text()
        .replace("write_queue_len = 4096", "write_queue_len = 1")
        .replace("commit_batch_max = 1024", "commit_batch_max = 1");
    assert!(
        config.contains("write_queue_len = 1\n") || config.contains("write_queue_len = 1 "),
        "edit applied"
    );
    let node = TANDEM.node(&config, "eu-west", &[]);
    let url = node.url().to_owned();
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|t| {
                let url = url.clone();
                let client = node.http().clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..20 {
                        let url = format!("{url}/v1/records/likes/k{t}-{i}/ops");
                        let body = br#"{"op":"incr","by":1}"#.to_vec();
                        let a = client.send(Method::POST, &url, Some(body));
                        out.push((a.status, a.code().to_owned()));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let overloaded = statuses.iter().filter(|(s, c)| *s == 503 && c == "overloaded").count();
    assert_eq!(ok + overloaded, statuses.len(), "only 200 or 503 overloaded: {statuses:?}");
    assert!(overloaded > 0, "a full queue must refuse writes");
    assert!(ok > 0, "the node keeps serving");
    // Refused writes changed nothing: exactly the acknowledged increments are stored.
    let mut stored = 0;
    for t in 0..32 {
        for i in 0..20 {
            if let Some(v) = node.value("likes", &format!("k{t}-{i}")) {
                stored += v.as_i64().unwrap();
            }
        }
    }
    assert_eq!(stored as usize, ok);
}

/// `tandem config check` of a config text: its exit code and output.
fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployment.toml");
    std::fs::write(&file, text).unwrap();
    let out = TANDEM.run(&["config", "check", file.to_str().expect("a UTF-8 path")]);
    (out.code.unwrap_or(-1), out.text())
}
