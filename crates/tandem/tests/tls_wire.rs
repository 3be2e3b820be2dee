//! TLS on the wire, on real deployments (`tandem up`, TLS on as by default):
//!
//! - every byte `tandem up --capture-dir` records on every link, in both
//!   directions, is a TLS record, and no record value (EU personal or
//!   public) appears in any capture while the stores hold them all;
//! - the handshake refuses a certificate from another CA (either side), an
//!   expired one and a revoked one, and a plaintext client gets no answer;
//! - a revoked region's open replication stream ends on reload and it cannot
//!   reconnect, while the other regions go on replicating;
//! - a certificate issued again (`tandem certs issue`) is served without a
//!   restart;
//! - `tandem up` creates the certificates and the API keys, says where they
//!   are, and the data plane takes that key and nothing else.
//!
//! Raw connections here are rustls client connections over std sockets, so
//! that each test sees the handshake's own error (the alert the server sent).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::search::{contains, unique_tag};
use tandem_testkit::{Method, Tandem};

const TANDEM: Tandem = Tandem::at(env!("CARGO_BIN_EXE_tandem"));
/// How long a reload (at most a second after the files change) may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest TLS record on the wire (2^14 plaintext + 256 of expansion).
const TLS_RECORD_MAX: usize = 16_384 + 256;

#[test]
fn captured_links_are_tls_records_holding_no_value() {
    let d = TANDEM.deployment().prefix("tandem-tls-capture-").capture().start();
    let tag = unique_tag();
    d.register("tls-anna", "eu-west");
    let eu_marker = format!("EUTLS{tag}");
    let public_marker = format!("PUBTLS{tag}");
    for i in 0..20 {
        let personal = json!({"value": format!("{eu_marker}-{i}")});
        d.direct_ok(
            Method::PUT,
            "eu-west",
            &format!("/v1/records/credential/tls-anna:{i}"),
            &personal,
        );
        let public = json!({"value": format!("{public_marker}-{i}")});
        d.direct_ok(Method::PUT, "us-east", &format!("/v1/records/article/tls-{i}"), &public);
    }
    // And one through the router, whose forwarded writes cross the links too.
    let routed = json!({"value": format!("{public_marker}-routed")});
    d.routed_ok(Method::PUT, "/v1/records/article/tls-routed", &routed, "eu-west");
    // The values crossed the links: the stores hold them.
    let eu_value = json!(format!("{eu_marker}-19"));
    let public_value = json!(format!("{public_marker}-19"));
    let timeout = d.converge_timeout();
    d.wait_value(&["eu-west", "eu-central"], "credential", "tls-anna:19", Some(&eu_value), timeout);
    d.wait_value(&d.region_names(), "article", "tls-19", Some(&public_value), timeout);
    d.wait_quiet(timeout);

    let dir = d.capture_dir().expect("capturing").to_owned();
    let files = files_under(&dir);
    let streams: Vec<&PathBuf> =
        files.iter().filter(|p| p.starts_with(dir.join("streams"))).collect();
    assert!(streams.len() >= 6, "every link has its connections recorded: {files:#?}");
    let (mut records, mut application_data) = (0usize, 0usize);
    for f in &streams {
        let bytes = std::fs::read(f).expect("read a capture");
        let parsed = tls_records(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        records += parsed.len();
        application_data += parsed.iter().filter(|t| **t == 0x17).count();
    }
    assert!(application_data > 40, "the writes crossed as application data ({records} records)");
    for f in &files {
        let bytes = std::fs::read(f).expect("read a capture");
        for marker in [&eu_marker, &public_marker] {
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "{} holds {marker} in the clear",
                f.display()
            );
        }
    }
    eprintln!(
        "{} capture files, {records} TLS records ({application_data} application data), no value in any",
        files.len()
    );
}

#[test]
fn handshakes_refuse_other_cas_expired_certificates_and_plaintext() {
    let d = TANDEM.deployment().prefix("tandem-tls-handshake-").without_router().start();
    let addr = host(d.url("eu-west"));
    let certs = d.certs_dir();
    let stream = "/v1/replication/stream?after=0";

    // The positive control: eu-central's own certificate gets the stream.
    let ok = exchange(&addr, client(&certs, Some(holder(&certs, "eu-central"))), stream, 1)
        .expect("eu-central's certificate is accepted");
    assert!(ok.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&ok));

    // Other CAs, with certificates of the same holder names: one of another
    // deployment (another CA name: unknown), and an impostor CA of the same
    // name as ours (its signatures do not verify).
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let renamed = text.replacen("name = \"example\"", "name = \"elsewhere\"", 1);
    assert_ne!(text, renamed, "the config names its deployment");
    let other_config = d.root().join("elsewhere.toml");
    std::fs::write(&other_config, renamed).unwrap();
    let elsewhere = d.root().join("elsewhere-ca");
    tandem_testkit::tls::init_certs(&TANDEM, &other_config, &elsewhere);
    let impostor = d.root().join("impostor-ca");
    tandem_testkit::tls::init_certs(&TANDEM, d.config_path(), &impostor);
    for (other, server_alert, client_error) in
        [(&elsewhere, "UnknownCA", "UnknownIssuer"), (&impostor, "DecryptError", "BadSignature")]
    {
        let err = exchange(&addr, client(&certs, Some(holder(other, "eu-central"))), stream, 0)
            .expect_err("a certificate of another CA is refused");
        assert!(err.contains(server_alert), "{}: {err}", other.display());
        // ... and a client that trusts only the other CA does not trust eu-west.
        let err = exchange(&addr, client(other, None), "/healthz", 0)
            .expect_err("eu-west's certificate is not the other CA's");
        assert!(err.contains(client_error), "{}: {err}", other.display());
    }

    // An expired certificate of the right CA, naming eu-central.
    let expired = expired_region_cert(&certs, d.root(), "eu-central", "EU");
    let err = exchange(&addr, client(&certs, Some(expired)), stream, 0)
        .expect_err("an expired certificate is refused");
    assert!(err.contains("CertificateExpired") || err.contains("BadCertificate"), "{err}");

    // Plaintext: no HTTP answer at all, and the connection ends.
    for base in [d.url("eu-west"), d.url("us-east")] {
        let addr = host(base);
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plaintext at {addr} got {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(!contains(&answer, b"\"region\""), "plaintext at {addr} got health data");
    }
    // The refusals left the region serving its peers.
    assert!(
        exchange(&addr, client(&certs, Some(holder(&certs, "eu-central"))), "/healthz", 1).is_ok()
    );
}

#[test]
fn a_revoked_region_is_cut_off_and_cannot_reconnect() {
    let d = TANDEM.deployment().prefix("tandem-tls-revoke-").without_router().start();
    let certs = d.certs_dir();
    let addr = host(d.url("eu-west"));
    // An open stream with us-east's certificate, read until it ends.
    let us_east = holder(&certs, "us-east");
    let reader = {
        let config = client(&certs, Some(us_east.clone()));
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut conn =
                open(&addr, config, "/v1/replication/stream?after=0", Duration::from_secs(60))
                    .expect("the stream opens before the revocation");
            let mut head = [0u8; 12];
            conn.read_exact(&mut head).expect("the answer starts");
            assert_eq!(&head, b"HTTP/1.1 200", "the stream was served");
            let mut buf = [0u8; 8192];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {}
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!reader.is_finished(), "the stream stays open before the revocation");
    let revoked_at = Instant::now();
    let out =
        d.cli(&["certs", "revoke", "--name", "us-east", "--dir", certs.to_str().unwrap()], &[]);
    assert!(out.success(), "{}", out.text());
    assert!(out.text().contains("revoked us-east"), "{}", out.text());

    // The open stream ends at the reload.
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    while !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "us-east's stream is still open {RELOAD_TIMEOUT:?} after the revocation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = reader.join().expect("the reader");
    eprintln!("us-east's open stream ended {:?} after the revocation", ended - revoked_at);
    // A new handshake with the revoked certificate fails, everywhere, once
    // each region has reloaded (each watches the files on its own timer).
    for region in ["eu-west", "eu-central"] {
        let a = host(d.url(region));
        let attempt = || {
            let config = client(&certs, Some(us_east.clone()));
            exchange(&a, config, "/v1/replication/stream?after=0", 0)
        };
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        let err = loop {
            match attempt() {
                Err(e) => break e,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(_) => {
                    panic!("{region} still accepts the revoked certificate {RELOAD_TIMEOUT:?} on")
                }
            }
        };
        assert!(
            err.contains("CertificateRevoked") || err.contains("BadCertificate"),
            "{region}: {err}"
        );
    }
    // Public data written now reaches eu-central and not us-east.
    let tag = unique_tag();
    let value = json!(format!("after-revoke-{tag}"));
    d.direct_ok(
        Method::PUT,
        "eu-west",
        "/v1/records/article/after-revoke",
        &json!({"value": value}),
    );
    d.wait_value(&["eu-central"], "article", "after-revoke", Some(&value), d.converge_timeout());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.value("us-east", "article", "after-revoke"),
        None,
        "us-east still pulls after its revocation"
    );
}

#[test]
fn a_certificate_issued_again_is_served_without_a_restart() {
    let d = TANDEM.deployment().prefix("tandem-tls-rotate-").without_router().start();
    let certs = d.certs_dir();
    let addr = host(d.url("eu-west"));
    let pid = d.processes()["eu-west"];
    let before = served_serial(&addr, &certs);
    let out = d.cli(
        &[
            "certs",
            "issue",
            "--config",
            d.config_arg(),
            "--dir",
            certs.to_str().unwrap(),
            "--region",
            "eu-west",
        ],
        &[],
    );
    assert!(out.success(), "{}", out.text());
    let rotated = d.wait_for("eu-west serves its new certificate", RELOAD_TIMEOUT, || {
        served_serial(&addr, &certs) != before
    });
    eprintln!("the new certificate was served {rotated:?} after it was issued");
    assert_eq!(d.processes()["eu-west"], pid, "eu-west was not restarted");
    // New connections in both directions use it: replication goes on.
    let tag = unique_tag();
    for (from, to) in [("eu-central", "eu-west"), ("eu-west", "eu-central")] {
        let id = format!("rotated-{from}-{tag}");
        let value = json!(format!("from {from}"));
        d.direct_ok(
            Method::PUT,
            from,
            &format!("/v1/records/article/{id}"),
            &json!({"value": value}),
        );
        d.wait_value(&[to], "article", &id, Some(&value), d.converge_timeout());
    }
    // The operator's tools connect with the new chain too.
    let status = d.cli(&["status", "--config", d.config_arg()], &[]);
    assert!(status.success(), "{}", status.text());
}

#[test]
fn tandem_up_creates_the_certificates_and_an_api_key_and_says_where() {
    let d = TANDEM.deployment().prefix("tandem-tls-up-").keys_from_up().start();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(d.data_dir().join("up.json")).unwrap()).unwrap();
    let keys_file = PathBuf::from(summary["api_keys_file"].as_str().expect("api_keys_file"));
    let ca_file = PathBuf::from(summary["ca_file"].as_str().expect("ca_file"));
    assert_eq!(keys_file, d.data_dir().join("api-keys"));
    assert_eq!(ca_file, d.certs_dir().join("ca.pem"));
    let log = std::fs::read_to_string(d.root().join("up.log")).expect("up.log");
    for needle in [keys_file.display().to_string(), ca_file.display().to_string()] {
        assert!(log.contains(&needle), "tandem up names {needle}:\n{log}");
    }
    // Keys are private; the certificates every holder needs are there.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&keys_file), 0o600);
    let mut names = vec!["ca", "router", "operator"];
    names.extend(d.region_names());
    for name in names {
        assert!(d.certs_dir().join(format!("{name}.pem")).exists(), "{name}.pem");
        if name != "ca" {
            assert_eq!(mode(&d.certs_dir().join(format!("{name}.key"))), 0o600, "{name}.key");
        }
    }
    // The key it made is the one the data plane takes, and nothing else is.
    let text = std::fs::read_to_string(&keys_file).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("default "))
        .expect("a `default` key")
        .trim()
        .to_owned();
    assert!(key.len() >= 32, "a long random key");
    assert_ne!(key, tandem_testkit::tls::API_KEY);
    let url = format!("{}/v1/records/article/up-key", d.router());
    let body = json!({"value": "with up's key"});
    let with_key = d.client_as(None, Some(&format!("Bearer {key}")));
    assert_eq!(with_key.call(Method::PUT, &url, Some(&body), &[]).status, 200);
    let (status, answer) = d.anonymous_http().call(Method::PUT, &url, Some(&body), &[]).pair();
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unauthorized")), "{answer}");
    let wrong = d.client_as(None, Some(&format!("Bearer {}", tandem_testkit::tls::API_KEY)));
    assert_eq!(wrong.call(Method::PUT, &url, Some(&body), &[]).status, 401);
    assert!(!d.log_text().contains(&key), "the API key was logged");
}

// ---- helpers ----------------------------------------------------------------

/// `127.0.0.1:PORT` of an `https://` URL.
fn host(url: &str) -> String {
    url.trim_start_matches("https://").to_owned()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read a capture directory") {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The content types of the TLS records `bytes` consists of; an error names
/// the first byte that is not a record header. The last record may be cut
/// off (a connection still open when the file was read).
fn tls_records(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = &bytes[at..bytes.len().min(at + 5)];
        if head.len() < 5 {
            break;
        }
        let (kind, version, len) =
            (head[0], [head[1], head[2]], u16::from_be_bytes([head[3], head[4]]) as usize);
        if !(0x14..=0x17).contains(&kind)
            || !(version == [3, 3] || version == [3, 1])
            || len > TLS_RECORD_MAX
        {
            return Err(format!("byte {at} is no TLS record header: {head:02x?}"));
        }
        types.push(kind);
        at += 5 + len;
    }
    Ok(types)
}

/// A holder's certificate and key as rustls takes them.
#[derive(Clone)]
struct Holder {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

fn holder(dir: &Path, name: &str) -> Holder {
    use rustls::pki_types::pem::PemObject;
    let cert = dir.join(format!("{name}.pem"));
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("a PEM file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key")))
        .expect("a key");
    Holder { chain, key: Arc::new(key) }
}

/// A TLS 1.3 client that trusts `ca_dir/ca.pem` and presents `holder`.
fn client(ca_dir: &Path, holder: Option<Holder>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::CertificateDer::pem_file_iter(ca_dir.join("ca.pem")).expect("ca.pem")
    {
        roots.add(c.expect("a CA certificate")).expect("a usable CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(tandem_http::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    Arc::new(match holder {
        Some(h) => {
            builder.with_client_auth_cert(h.chain, h.key.clone_key()).expect("a client certificate")
        }
        None => builder.with_no_client_auth(),
    })
}

/// A TLS connection to `addr` (checked against its IP name) that has sent
/// `GET path`; the handshake's error as text.
fn open(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    read_timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(read_timeout)).unwrap();
    let ip: std::net::SocketAddr = addr.parse().expect("an address");
    let name = rustls::pki_types::ServerName::IpAddress(ip.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Send `GET path` and read the answer: its first bytes once at least
/// `want` arrived (0: read to the end), or the TLS error. An answer of no
/// bytes at all, with no error, is an error too.
fn exchange(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    want: usize,
) -> Result<Vec<u8>, String> {
    let mut s = open(addr, config, path, Duration::from_secs(15))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if want > 0 && got.len() >= want {
                    break;
                }
            }
            Err(e) => return Err(format!("{e} (after {} bytes)", got.len())),
        }
    }
    if got.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(got)
}

/// The serial number of the certificate `addr` serves.
fn served_serial(addr: &str, certs: &Path) -> Vec<u8> {
    let mut s =
        open(addr, client(certs, None), "/healthz", Duration::from_secs(15)).expect("connect");
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("an answer");
    let der = s.conn.peer_certificates().expect("a server certificate")[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("an X.509 certificate");
    cert.raw_serial().to_vec()
}

/// A certificate of the deployment's CA for `region` that expired a year
/// ago, written to `<root>/expired/<region>.{pem,key}`.
fn expired_region_cert(certs: &Path, root: &Path, region: &str, jurisdiction: &str) -> Holder {
    let ca_cert = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).expect("the CA");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, region);
    for uri in [
        tandem_http::identity::region_uri(region),
        tandem_http::identity::jurisdiction_uri(jurisdiction),
    ] {
        p.subject_alt_names.push(rcgen::SanType::URI(uri.as_str().try_into().unwrap()));
    }
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2025, 1, 1);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).expect("sign");
    let dir = root.join("expired");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{region}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{region}.key")), key.serialize_pem()).unwrap();
    holder(&dir, region)
}
