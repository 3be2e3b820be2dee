//! TLS for tests, as an operator sets it up: the deployment's certificates
//! made by the binary itself (`tandem certs init`), an API keys file with the
//! kit's key, and client configurations that trust the deployment's CA and
//! present a holder's certificate (the operator's, a region's) or none. The
//! kit's clients verify servers by address (every certificate carries the
//! loopback address it listens on), as `curl --cacert` does.

use std::path::Path;
use std::sync::Arc;

use crate::process::Tandem;

/// The key every deployment of the kit accepts (named `default`).
pub const API_KEY: &str = "test-api-key-0123456789abcdef";

/// `tandem certs init --config F --dir D`: a CA and every holder's certificate.
pub fn init_certs(bin: &Tandem, config: &Path, dir: &Path) {
    let out = bin
        .command()
        .arg("certs")
        .arg("init")
        .arg("--config")
        .arg(config)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run tandem certs init");
    assert!(
        out.status.success(),
        "tandem certs init: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An API keys file holding the kit's key as `default`.
pub fn write_api_keys(path: &Path) {
    std::fs::write(path, format!("default {API_KEY}\n")).expect("write the API keys file");
}

/// A client configuration that trusts the CA in `certs_dir` and presents
/// `holder`'s certificate (`operator`, `router`, a region), or none.
pub fn client_config(certs_dir: &Path, holder: Option<&str>) -> rustls::ClientConfig {
    // The operator's files give the roots when no holder is presented.
    let files = tandem_http::tls::TlsFiles::new(certs_dir, holder.unwrap_or("operator"));
    let m = tandem_http::tls::Material::load(&files)
        .unwrap_or_else(|e| panic!("the deployment's TLS files: {e}"));
    match holder {
        Some(_) => m.client_config().unwrap_or_else(|e| panic!("client TLS: {e}")),
        None => rustls::ClientConfig::builder_with_provider(tandem_http::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(Arc::clone(&m.roots))
            .with_no_client_auth(),
    }
}

/// A raw connection to a process of `d` (TLS unless it runs `--insecure`,
/// with the kit's CA and no certificate), for bytes the HTTP clients would
/// not send.
pub fn connect(d: &crate::Deployment, addr: &str) -> RawStream {
    let tcp = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(15))).expect("read time-out");
    if d.insecure() {
        return RawStream::Plain(tcp);
    }
    let config = Arc::new(client_config(&d.certs_dir(), None));
    let ip: std::net::SocketAddr = addr.parse().expect("an address");
    let name = rustls::pki_types::ServerName::IpAddress(ip.ip().into());
    let conn = rustls::ClientConnection::new(config, name).expect("a TLS client");
    RawStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

/// The errors of a socket whose peer has already closed it.
fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), NotConnected | BrokenPipe | ConnectionReset | ConnectionAborted)
}

/// A plain or TLS byte stream.
pub enum RawStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl RawStream {
    /// No more bytes from this side (TLS: close_notify, then a TCP half-close).
    /// The server may have closed the connection already (a fatal protocol
    /// error closes it at once), so a reset or an unconnected socket here is
    /// not a failure: what the server said is still there to read.
    pub fn half_close(&mut self) {
        let done = match self {
            RawStream::Plain(s) => s.shutdown(std::net::Shutdown::Write),
            RawStream::Tls(s) => {
                s.conn.send_close_notify();
                use std::io::Write;
                s.flush().and_then(|()| s.sock.shutdown(std::net::Shutdown::Write))
            }
        };
        match done {
            Ok(()) => {}
            Err(e) if closed_by_peer(&e) => {}
            Err(e) => panic!("half-close: {e}"),
        }
    }
}

impl std::io::Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Plain(s) => s.read(buf),
            RawStream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Plain(s) => s.write(buf),
            RawStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            RawStream::Plain(s) => s.flush(),
            RawStream::Tls(s) => s.flush(),
        }
    }
}
