//! A router that has just started knows nothing about its regions until its
//! first probes come back. Here two regions are up (the router reaches them
//! through a proxy that takes 250 ms to open each connection, so the first
//! probes are still out when the first requests arrive) and one (us-east) is
//! a blackhole that accepts connections and never answers, and the router
//! probes only every 2 s: from the moment its port accepts, `/healthz`
//! answers 503 until every region has been probed once, then 200; writes for
//! subjects homed on live regions all succeed (they wait for the first probes
//! instead of failing), and subjects homed on the dead region get 503 within
//! the probe timeout. The processes run `--insecure` (the proxies see plain
//! bytes); start-up does not depend on TLS.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_testkit::config::{example_text, TEST_PSEUDONYM_KEYS};
use tandem_testkit::ports::free_ports;
use tandem_testkit::{error_code, Endpoint, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));

#[test]
fn a_starting_router_waits_for_its_first_probes_instead_of_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let blackhole = Blackhole::start();
    let ports = free_ports(6);
    let (eu_west, eu_central, router) = (ports[0], ports[1], ports[2]);
    let slow_west = SlowProxy::start(eu_west);
    let slow_central = SlowProxy::start(eu_central);
    let config = example_text()
        .replace("127.0.0.1:7101", &slow_west.addr.to_string())
        .replace("127.0.0.1:7102", &slow_central.addr.to_string())
        .replace("127.0.0.1:7103", &blackhole.addr.to_string())
        .replace("127.0.0.1:7100", &format!("127.0.0.1:{router}"))
        .replace("127.0.0.1:7110", &format!("127.0.0.1:{}", ports[3]))
        .replace("127.0.0.1:7111", &format!("127.0.0.1:{}", ports[4]))
        .replace("127.0.0.1:7112", &format!("127.0.0.1:{}", ports[5]))
        .replace("probe_interval = \"200ms\"", "probe_interval = \"2s\"");
    assert!(config.contains("probe_interval = \"2s\""), "the example's probe interval moved");
    let config_path = dir.path().join("tandem.toml");
    std::fs::write(&config_path, &config).unwrap();
    let config = config_path.to_str().expect("a UTF-8 path");
    let env = [
        ("TANDEM_REPLICATION_SECRET", "router-start-test"),
        ("TANDEM_ADMIN_TOKEN", "router-start-admin"),
        TEST_PSEUDONYM_KEYS[0],
    ];
    let node = |region: &str| {
        let (listen, peer) = match region {
            "eu-west" => (eu_west, format!("eu-central=http://127.0.0.1:{eu_central}")),
            _ => (eu_central, format!("eu-west=http://127.0.0.1:{eu_west}")),
        };
        let listen = format!("127.0.0.1:{listen}");
        let data = dir.path().join("data").display().to_string();
        let args = ["node", "--config", config, "--region", region, "--listen", &listen];
        TANDEM.serve(
            &[&args[..], &["--peer-url", &peer, "--data-dir", &data, "--insecure"]].concat(),
            &env,
        )
    };
    let _nodes = [node("eu-west"), node("eu-central")];
    // Healthy and ready (a region that cannot reach a peer waits out its
    // grace period before it calls itself ready).
    for port in [eu_west, eu_central] {
        wait_ready(&format!("http://127.0.0.1:{port}"));
    }

    // Subjects homed on the dead region, registered before the router starts
    // (the registry is everywhere, so a live region knows their home).
    let west = Endpoint::new(&format!("http://127.0.0.1:{eu_west}"));
    for i in 0..3 {
        let body = br#"{"home_region":"us-east"}"#.to_vec();
        let (status, answer) = west.raw("PUT", &format!("/v1/subjects/dead{i}"), body);
        assert_eq!(status, 200, "{answer}");
    }

    // The router prints its listening line right after it binds, while its
    // first probes are still out: requests start from that moment.
    let router_process = TANDEM.serve(&["router", "--config", config, "--insecure"], &env);
    let r = router_process.url().to_owned();
    assert!(r.ends_with(&format!(":{router}")), "{r}");

    // Health while starting: 503 with a reason, then 200.
    let (first, body) = router_process.get("/healthz");
    assert_eq!(first, 503, "a router that has not probed its regions is not healthy: {body}");
    assert_eq!(error_code(&body), "starting");
    assert!(body["reason"].as_str().unwrap().contains("us-east"), "{body}");

    // Writes from the first moment. Homed on the dead region: 503 within the
    // probe timeout (500 ms), even for the first requests.
    let dead = std::thread::spawn({
        let r = r.clone();
        move || {
            let router = Endpoint::new(&r);
            (0..3)
                .map(|i| {
                    let sent = Instant::now();
                    let body = br#"{"fields":{"name":"x"}}"#.to_vec();
                    let path = format!("/v1/records/profile/dead{i}:main");
                    let (status, answer) = router.raw("PATCH", &path, body);
                    (status, answer, sent.elapsed())
                })
                .collect::<Vec<_>>()
        }
    });
    // Nothing homed on a live region is refused.
    for i in 0..20 {
        let home = if i % 2 == 0 { "eu-west" } else { "eu-central" };
        let (status, answer) =
            router_process.put(&format!("/v1/subjects/live{i}"), &json!({ "home_region": home }));
        assert_eq!(status, 200, "live{i} homed in {home}: {answer}");
    }
    let (status, answer) = router_process.raw(
        "PATCH",
        "/v1/records/profile/live0:main",
        br#"{"fields":{"name":"Ana"}}"#.to_vec(),
    );
    assert_eq!(status, 200, "{answer}");
    for (status, answer, took) in dead.join().unwrap() {
        assert_eq!((status, error_code(&answer)), (503, "no_region_available"), "{answer}");
        assert!(took < Duration::from_millis(1_500), "a dead-homed write took {took:?}");
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok((200, _)) = router_process.try_request("GET", "/healthz", None) {
            break;
        }
        assert!(Instant::now() < deadline, "the router never became healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_ready(base: &str) {
    let node = Endpoint::new(base);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(node.try_request("GET", "/healthz", None), Ok((200, h)) if h["ready"] == true) {
        assert!(Instant::now() < deadline, "{base} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forwards to a local port, 250 ms after each connection opens (a far
/// region: the router's first probe of it takes that long).
struct SlowProxy {
    addr: SocketAddr,
}

impl SlowProxy {
    fn start(port: u16) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(250));
                    let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    let mut from_client = client.try_clone().unwrap();
                    let mut to_upstream = upstream.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from_client, &mut to_upstream);
                        let _ = to_upstream.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut from_upstream, mut to_client) = (upstream, client);
                    let _ = std::io::copy(&mut from_upstream, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        SlowProxy { addr }
    }
}

/// Accepts connections and never answers, like a hung host.
struct Blackhole {
    addr: SocketAddr,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Blackhole { addr }
    }
}
