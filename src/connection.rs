//! One caller connection around hyper: the cap on connections open at once, the deadline
//! for the bytes that decide its HTTP version, the write timeout on its answers, and
//! the calls in flight on it (so an idle one can be closed).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::hubspot::error_body::ErrorBody;

/// What an HTTP/2 connection starts with; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a refused connection may take to receive its 503 before it is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Binds `addr` with room for `backlog` connections not yet accepted.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restart must not wait out the old process's TIME_WAIT sockets.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The cap on caller connections open at once (`[server] max_connections`).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCap {
    open: Arc<Semaphore>,
    max: usize,
}

impl ConnectionCap {
    pub(crate) fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A seat for one more connection, held for its life; `None` when all are taken.
    pub(crate) fn seat(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// Answers a connection over the cap with a 503 and closes it, without reading its
    /// request: it was never taken on, so nothing of it reached HubSpot.
    pub(crate) fn refuse(&self, mut stream: TcpStream) {
        let message = format!(
            "hubgate has {} caller connections open, its limit ([server] max_connections); nothing was sent to HubSpot, retry shortly or reuse connections",
            self.max
        );
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let json = ErrorBody {
            message: &message,
            category: "HUBGATE_TOO_MANY_CONNECTIONS",
            correlation_id: &correlation_id,
            policy_name: None,
        }
        .to_json();
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json;charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nx-should-retry: true\r\nx-request-id: {correlation_id}\r\nconnection: close\r\n\r\n",
            json.len()
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_WRITE, async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(&json).await?;
                stream.shutdown().await?;
                // Read what the caller sent until it closes: closing with unread bytes
                // would reset the connection and could destroy the answer in flight.
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// The calls in flight on one connection.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

impl Activity {
    /// Counts a call in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveCall {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        ActiveCall(self.clone())
    }

    /// Completes once no call has been in flight for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so a call beginning in between wakes it.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                if tokio::time::timeout(idle, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One call in flight on its connection, for as long as it lives.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

pin_project_lite::pin_project! {
    /// A call's future, counted in flight on its connection until it completes. Its
    /// answer's body may still be streaming then; closing an idle connection is graceful
    /// (HTTP/2 GOAWAY, HTTP/1.1 after the answer), so that is never cut.
    pub(crate) struct Counted<F> {
        #[pin]
        call: F,
        active: Option<ActiveCall>,
    }
}

impl<F> Counted<F> {
    pub(crate) fn new(call: F, active: ActiveCall) -> Counted<F> {
        Counted {
            call,
            active: Some(active),
        }
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.call.poll(cx));
        this.active.take();
        Poll::Ready(output)
    }
}

/// Reads the first bytes of `stream`, enough to tell HTTP/2's preface from HTTP/1, within
/// `within`: hyper's version detection has no timer, so a caller that sends nothing (or
/// one byte of the preface) would otherwise hold its connection forever. `None` when the
/// time ran out or the caller closed first.
pub(crate) async fn read_opening(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut opening = Vec::with_capacity(H2_PREFACE.len());
    let reading = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        while opening.len() < H2_PREFACE.len() {
            let n = stream
                .read(&mut buf[..H2_PREFACE.len() - opening.len()])
                .await
                .ok()?;
            if n == 0 {
                return None;
            }
            opening.extend_from_slice(&buf[..n]);
            if !H2_PREFACE.starts_with(&opening) {
                break;
            }
        }
        Some(())
    };
    tokio::time::timeout(within, reading).await.ok()??;
    Some(opening)
}

/// A caller's socket as hyper sees it: the opening bytes already read are served first,
/// and a write the caller leaves pending for `write_timeout` fails, which ends the
/// connection and drops the answer (and the upstream stream it reads from).
#[derive(Debug)]
pub(crate) struct CallerIo {
    opening: Vec<u8>,
    served: usize,
    stream: TcpStream,
    write_timeout: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CallerIo {
    pub(crate) fn new(stream: TcpStream, opening: Vec<u8>, write_timeout: Duration) -> CallerIo {
        CallerIo {
            opening,
            served: 0,
            stream,
            write_timeout,
            stalled_since: None,
        }
    }

    /// `poll`'s result, unless the socket has accepted nothing for `write_timeout`.
    fn within_write_timeout<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the caller read none of its answer for {} ms ([server] response_write_timeout_ms)",
                    timeout.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CallerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.served < this.opening.len() {
            let rest = &this.opening[this.served..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.served += n;
            if this.served == this.opening.len() {
                this.opening = Vec::new();
                this.served = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CallerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.within_write_timeout(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.within_write_timeout(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.within_write_timeout(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.within_write_timeout(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_opening_is_read_until_the_version_is_known_and_served_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut caller = TcpStream::connect(addr).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        caller.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let opening = read_opening(&mut accepted, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            &opening[..1],
            b"G",
            "one byte that is not the preface decides"
        );
        let mut io = CallerIo::new(accepted, opening, Duration::from_secs(5));
        let mut line = [0u8; 16];
        io.read_exact(&mut line).await.unwrap();
        assert_eq!(
            &line, b"GET / HTTP/1.1\r\n",
            "nothing lost, nothing reordered"
        );

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        silent.write_all(b"PRI").await.unwrap();
        assert!(
            read_opening(&mut accepted, Duration::from_millis(100))
                .await
                .is_none(),
            "part of the preface, then nothing: the deadline ends it"
        );
    }
}
