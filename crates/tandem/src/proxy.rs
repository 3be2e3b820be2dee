//! Simulated links for `tandem up`: a TCP proxy per directed replication path
//! that delays every byte by the link's one-way latency, in both directions,
//! and can cut the link (close its connections and refuse new ones) and heal
//! it. This kernel has no netem, so the network faults are made here.
//!
//! With a capture, every byte that crosses a link is recorded twice: into
//! `<dir>/<from>-<to>.bin` (both directions and every connection, in the
//! order read: what a search for a marker reads), and per connection and
//! direction into `<dir>/streams/<from>-<to>-<n>-{request,response}.bin`,
//! each a byte stream as one end sent it (so that a test can parse it, e.g.
//! as TLS records).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Chunks in flight per direction of one connection (bounded memory).
const IN_FLIGHT_CHUNKS_MAX: usize = 1024;
const CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Live controls of one simulated link.
#[derive(Debug)]
pub struct LinkControl {
    pub latency_ms: AtomicU64,
    /// Every byte that crosses the link (for residency tests).
    capture: Option<Capture>,
    cut: AtomicBool,
    /// Bumped on every cut, so open connections close.
    generation: watch::Sender<u64>,
}

impl LinkControl {
    #[cfg(test)]
    pub fn new(latency_ms: u64) -> Arc<Self> {
        Self::with_capture(latency_ms, None)
    }

    pub fn with_capture(latency_ms: u64, capture: Option<Capture>) -> Arc<Self> {
        Arc::new(LinkControl {
            latency_ms: AtomicU64::new(latency_ms),
            capture,
            cut: AtomicBool::new(false),
            generation: watch::channel(0).0,
        })
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Where a link's bytes are recorded.
#[derive(Debug)]
pub struct Capture {
    all: std::sync::Mutex<std::fs::File>,
    streams: std::path::PathBuf,
    link: String,
    connections: AtomicU64,
}

impl Capture {
    /// Record link `link` (`<from>-<to>`) under `dir`.
    pub fn create(dir: &std::path::Path, link: &str) -> std::io::Result<Capture> {
        let streams = dir.join("streams");
        std::fs::create_dir_all(&streams)?;
        Ok(Capture {
            all: std::sync::Mutex::new(std::fs::File::create(dir.join(format!("{link}.bin")))?),
            streams,
            link: link.to_owned(),
            connections: AtomicU64::new(0),
        })
    }

    /// The two stream files of a new connection.
    fn connection(&self) -> [Option<std::fs::File>; 2] {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        ["request", "response"].map(|side| {
            std::fs::File::create(self.streams.join(format!("{}-{n}-{side}.bin", self.link))).ok()
        })
    }

    fn record(&self, stream: &mut Option<std::fs::File>, bytes: &[u8]) {
        use std::io::Write;
        let _ = self.all.lock().expect("capture lock").write_all(bytes);
        if let Some(f) = stream {
            let _ = f.write_all(bytes);
        }
    }
}

/// Start a proxy on a free loopback port forwarding to `upstream`.
pub async fn start(upstream: SocketAddr, control: Arc<LinkControl>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if control.is_cut() {
                drop(client);
                continue;
            }
            let control = control.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server, control).await;
            });
        }
    });
    Ok(addr)
}

async fn relay(client: TcpStream, server: TcpStream, control: Arc<LinkControl>) {
    let mut cut = control.generation.subscribe();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let [request, response] = match &control.capture {
        Some(c) => c.connection(),
        None => [None, None],
    };
    let up = pump(cr, sw, control.clone(), request);
    let down = pump(sr, cw, control.clone(), response);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.changed() => {}
    }
}

/// Copy one direction, delaying each chunk by the link latency, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<LinkControl>,
    mut stream: Option<std::fs::File>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT_CHUNKS_MAX);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(c) = &control.capture {
                        c.record(&mut stream, &buf[..n]);
                    }
                    let due = Instant::now()
                        + Duration::from_millis(control.latency_ms.load(Ordering::Relaxed));
                    if tx.send((due, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 16];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let control = LinkControl::new(30);
        let addr = start(echo_addr, control.clone()).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let t = std::time::Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        assert!(t.elapsed() >= Duration::from_millis(60), "one-way latency applies both ways");
        control.cut();
        let mut b = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "a cut closes open connections");
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), c2.read(&mut b)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "a cut link refuses new connections");
        control.heal();
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        c3.write_all(b"pong").await.unwrap();
        c3.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
    }
}
