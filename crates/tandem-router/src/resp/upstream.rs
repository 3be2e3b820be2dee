//! One RESP connection from the router to a region's `resp_listen`: TLS with
//! the router's certificate (the region takes it as authenticated and lets
//! it mark failovers, as on HTTP), commands written as one burst, replies
//! read back framed but not decoded, so they are relayed byte for byte.
//! Every read and write has the router's `upstream_timeout`; a connection
//! that failed once is dropped, never reused.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::state::RouterState;

/// Largest reply relayed from a region (an SMEMBERS of a big set).
pub const REPLY_BYTES_MAX: usize = 64 << 20;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Upstream {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// The protocol version this connection speaks (HELLO sent for it).
    resp3: bool,
    timeout: Duration,
}

/// Why a region could not be reached.
#[derive(Debug)]
pub enum ConnectError {
    /// The region never saw anything: safe to send elsewhere.
    Refused(String),
    /// The region has no `resp_listen`.
    NoListener,
}

/// Open a connection to `region`'s RESP listener.
pub async fn connect(s: &RouterState, region: &str) -> Result<Upstream, ConnectError> {
    let addr =
        s.config.region(region).and_then(|r| r.resp_listen).ok_or(ConnectError::NoListener)?;
    let refused = |e: String| ConnectError::Refused(format!("{region} is unreachable: {e}"));
    let wait = s.config.router.probe_timeout;
    let tcp = match tokio::time::timeout(wait, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(refused(e.to_string())),
        Err(_) => return Err(refused("connect timed out".into())),
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match s.security.tls() {
        None => Box::new(tcp),
        Some(tls) => {
            let name = ServerName::try_from(tandem_http::identity::region_server_name(region))
                .map_err(|e| refused(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.client());
            match tokio::time::timeout(wait, connector.connect(name, tcp)).await {
                Ok(Ok(t)) => Box::new(t),
                Ok(Err(e)) => return Err(refused(format!("TLS: {e}"))),
                Err(_) => return Err(refused("the TLS handshake timed out".into())),
            }
        }
    };
    Ok(Upstream {
        stream,
        buf: Vec::with_capacity(16 * 1024),
        resp3: false,
        timeout: s.config.router.upstream_timeout,
    })
}

impl Upstream {
    /// Send `wire` (`n` commands) and read `n` replies, speaking `resp3`.
    /// On failure, the replies read so far and why the rest are missing.
    pub async fn exchange(
        &mut self,
        wire: &[u8],
        n: usize,
        resp3: bool,
    ) -> Result<Vec<Vec<u8>>, (Vec<Vec<u8>>, String)> {
        let hello = self.resp3 != resp3;
        let mut out = Vec::with_capacity(wire.len() + 16);
        if hello {
            tandem_resp::codec::encode_command(
                &[&b"HELLO"[..], if resp3 { b"3" } else { b"2" }],
                &mut out,
            );
        }
        out.extend_from_slice(wire);
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err((Vec::new(), format!("sending failed: {e}"))),
            Err(_) => return Err((Vec::new(), "sending timed out".into())),
        }
        if hello {
            self.next_reply().await.map_err(|e| (Vec::new(), e))?;
            self.resp3 = resp3;
        }
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            match self.next_reply().await {
                Ok(r) => replies.push(r),
                Err(e) => return Err((replies, e)),
            }
        }
        Ok(replies)
    }

    async fn next_reply(&mut self) -> Result<Vec<u8>, String> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tandem_resp::frame::reply_len(&self.buf, REPLY_BYTES_MAX) {
                Ok(Some(len)) => return Ok(self.buf.drain(..len).collect()),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err("the region closed the connection".into()),
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Ok(Err(e)) => return Err(format!("reading failed: {e}")),
                Err(_) => return Err("the region did not answer in time".into()),
            }
        }
    }
}
