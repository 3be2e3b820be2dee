//! Below hyper, one per connection: the answers hyper would give with an
//! empty body, given in the contract's JSON shape instead, and the time limits
//! hyper does not answer.
//!
//! hyper answers a request it cannot parse (400), a URI over its limit (414)
//! and a head larger than its buffer (431) by itself, with an empty body, and
//! closes the connection. `ConnIo` sees every byte hyper writes: when hyper
//! writes such an answer while no request of this connection is being served
//! (only then can it be hyper's own: a handler's answer is written while its
//! request is in flight), it writes the same status with a JSON body instead.
//! hyper's own answers are recognised exactly by their shape: a whole head of
//! `connection: close`, `content-length: 0` and `date` and nothing else.
//!
//! Time limits: a request head that has started must be complete within
//! `head_timeout` (then 408 in JSON and the connection closes); a keep-alive
//! connection that sends nothing for `idle_timeout` is closed quietly, so idle
//! clients cannot hold the connection slots.
//!
//! Every connection closes lingering: it sends its end of the stream, then
//! reads and throws away what the client still sends (at most
//! `LINGER_BYTES_MAX`, for at most `LINGER_TIME`), because closing a socket
//! with unread input makes the kernel reset it, and a reset destroys the
//! answer before a client that is still sending its body has read it (an
//! answer given before the body was read: 413, 503, our own 400/414/431).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::error::{protocol_error, raw_response};

/// What the service tells the connection wrapper: how many requests it was
/// handed and how many of their answers are finished.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    requests: AtomicU64,
    answered: AtomicU64,
}

impl ConnShared {
    /// A request head was parsed and handed to the service.
    pub(crate) fn request_started(self: &Arc<Self>) -> AnswerGuard {
        self.requests.fetch_add(1, Ordering::SeqCst);
        AnswerGuard(self.clone())
    }

    /// True when every request handed to the service has been answered, so
    /// the connection is between requests.
    fn idle(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == self.answered.load(Ordering::SeqCst)
    }
}

/// Counts a request as answered when dropped (after hyper has finished with
/// its response body, or when the request was abandoned).
#[derive(Debug)]
pub(crate) struct AnswerGuard(Arc<ConnShared>);

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// Most bytes read and thrown away while closing (the largest body a client
/// may still be sending that we let it finish).
const LINGER_BYTES_MAX: usize = crate::body::DRAIN_BYTES_MAX as usize;
/// Longest wait for the client's end of the stream while closing.
const LINGER_TIME: Duration = crate::body::DRAIN_TIME_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Between requests, nothing received yet.
    Idle,
    /// Part of a request head received.
    Head,
}

pub(crate) struct ConnIo<S> {
    inner: S,
    shared: Arc<ConnShared>,
    head_timeout: Duration,
    idle_timeout: Duration,
    /// `requests` when last looked at: a change means a new request began.
    requests_seen: u64,
    /// Bytes arrived since the last request began.
    head_started: bool,
    timer: Option<(Waiting, Pin<Box<Sleep>>)>,
    /// An answer of our own being written, and how much of it is out.
    own: Option<(Vec<u8>, usize)>,
    /// After an answer of our own: reads see the end, hyper's writes vanish.
    closing: bool,
    /// While closing: until when to linger, and how many more bytes to discard.
    linger: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<S> ConnIo<S> {
    pub(crate) fn new(
        inner: S,
        shared: Arc<ConnShared>,
        head_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        ConnIo {
            inner,
            shared,
            head_timeout,
            idle_timeout,
            requests_seen: 0,
            head_started: false,
            timer: None,
            own: None,
            closing: false,
            linger: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    fn answer(&mut self, status: StatusCode) {
        let (code, message) = protocol_error(status);
        self.own = Some((raw_response(status, code, message), 0));
        self.closing = true;
        self.timer = None;
    }

    /// Write out our own answer, if any.
    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.own {
            if *done == bytes.len() {
                self.own = None;
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// The status of an answer hyper writes by itself, if `buf` is one.
    fn own_answer_of_hyper(&self, buf: &[u8]) -> Option<StatusCode> {
        if !self.shared.idle() {
            return None;
        }
        hyper_error_status(buf)
    }
}

/// The status of `buf` when it is exactly an answer hyper gives by itself to
/// a request it refused to parse.
fn hyper_error_status(buf: &[u8]) -> Option<StatusCode> {
    if buf.len() > 512 || !buf.starts_with(b"HTTP/1.1 ") || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?;
    let status = match &text[9..12] {
        "400" => StatusCode::BAD_REQUEST,
        "414" => StatusCode::URI_TOO_LONG,
        "431" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let mut lines = text[..text.len() - 4].split("\r\n");
    lines.next()?;
    let mut names: Vec<String> = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        let expected = match name.as_str() {
            "connection" => value.trim() == "close",
            "content-length" => value.trim() == "0",
            "date" => true,
            _ => false,
        };
        if !expected {
            return None;
        }
        names.push(name);
    }
    names.sort();
    (names == ["connection", "content-length", "date"]).then_some(status)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing {
            // Our answer goes out first; then hyper sees the end of the stream.
            ready!(this.poll_own(cx))?;
            return Poll::Ready(Ok(()));
        }
        let requests = this.shared.requests.load(Ordering::SeqCst);
        if requests != this.requests_seen {
            this.requests_seen = requests;
            this.head_started = false;
            this.timer = None;
        }
        let idle = this.shared.idle();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if idle && buf.filled().len() > before && !this.head_started {
                    this.head_started = true;
                    this.timer = None;
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if !idle {
            // A request is being served: its own time limits apply.
            this.timer = None;
            return Poll::Pending;
        }
        let waiting = if this.head_started { Waiting::Head } else { Waiting::Idle };
        if this.timer.as_ref().is_none_or(|(w, _)| *w != waiting) {
            let after = match waiting {
                Waiting::Idle => this.idle_timeout,
                Waiting::Head => this.head_timeout,
            };
            this.timer = Some((waiting, Box::pin(tokio::time::sleep(after))));
        }
        let (_, timer) = this.timer.as_mut().expect("set above");
        ready!(timer.as_mut().poll(cx));
        match waiting {
            // Quietly: hyper takes the end of the stream between requests as a close.
            Waiting::Idle => Poll::Ready(Ok(())),
            Waiting::Head => {
                this.answer(StatusCode::REQUEST_TIMEOUT);
                ready!(this.poll_own(cx))?;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.closing {
            match this.own_answer_of_hyper(buf) {
                Some(status) => this.answer(status),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        ready!(this.poll_own(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.closing {
            let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]).unwrap_or(&[]);
            match this.own_answer_of_hyper(first) {
                Some(status) if first.len() == total => this.answer(status),
                _ => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        ready!(this.poll_own(cx))?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_own(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_own(cx))?;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), LINGER_BYTES_MAX));
        }
        let (timer, left) = this.linger.as_mut().expect("set above");
        let mut scratch = [0u8; 8192];
        loop {
            if *left == 0 || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *left = left.saturating_sub(buf.filled().len()),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_exactly_the_answers_hyper_gives_by_itself() {
        let own = |s: &str| hyper_error_status(s.as_bytes());
        let date = "date: Tue, 01 Dec 2026 16:54:02 GMT";
        assert_eq!(
            own(&format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            Some(StatusCode::URI_TOO_LONG)
        );
        assert_eq!(
            own(&format!("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(
            own(&format!("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            Some(StatusCode::BAD_REQUEST)
        );
        // A handler's answers never match: they carry a body and a type.
        assert_eq!(
            own(&format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            None
        );
        assert_eq!(
            own(&format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            None
        );
        assert_eq!(
            own(&format!("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n")),
            None
        );
        assert_eq!(
            own(&format!("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n\r\n{{}}")),
            None
        );
        assert_eq!(own("{\"error\":1}"), None);
    }
}
