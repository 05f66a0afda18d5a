//! Bounded listeners: serve HTTP/1 connections from a TCP or Unix listener without
//! letting one client (or a flood of them) take the daemon's file descriptors or CPU.
//!
//! [`serve`] runs one accept loop with, per listener ([`Limits`]):
//! - a cap on concurrent connections (a semaphore). When the cap is reached the loop stops
//!   calling `accept`: new connections wait in the kernel's listen backlog and are served
//!   in arrival order as slots free. Accepting and closing at once would spend an fd and a
//!   syscall per attempt under a flood and give a legitimate client nothing better than a
//!   reset; waiting costs the daemon nothing.
//! - a header-read timeout (hyper's `header_read_timeout`), which hyper also starts while a
//!   keep-alive connection sits idle between requests: it is the slowloris bound and the
//!   idle timeout at once.
//! - a bounded read buffer (`max_buf_size`): request line plus headers cannot exceed it.
//! - a total request timeout: from the request head to the response head, which covers
//!   reading the body (handlers read it before they answer). On expiry the client gets 408.
//! - for handlers that read a body, [`Paced`]: a minimum average pace after a grace period.
//! - accept errors backed off ([`Backoff`]): out of fds or memory (EMFILE, ENFILE, ENOBUFS,
//!   ENOMEM) pause with a doubling delay up to one second, anything else pauses briefly;
//!   the warning is logged at most once per interval with the count suppressed
//!   ([`LogEvery`]). Without the pause a listener whose backlog holds a connection it
//!   cannot accept is always readable, and the loop spins.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bounds of one listener. Pick them per listener: a public TCP port gets a small cap
/// and short timeouts, the owner-only RPC socket a larger cap.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Names the listener in logs ("webhook", "metrics", "rpc socket", ...).
    pub name: &'static str,
    /// Concurrent connections; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Time to receive a whole request head, and the longest a kept-alive connection may
    /// sit idle before its next request.
    pub header_timeout: Duration,
    /// Time from a request head to its response head (covers reading the body); `None`
    /// for listeners whose calls may legitimately take long.
    pub request_timeout: Option<Duration>,
    /// Read buffer bound, so the most a request head may take (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// How often an accept failure or "at the cap" is logged at most.
    pub log_interval: Duration,
}

impl Limits {
    /// Defaults for a listener anyone on the network may reach.
    pub fn public(name: &'static str, max_connections: usize) -> Limits {
        Limits {
            name,
            max_connections: max_connections.max(1),
            header_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            max_header_bytes: 16 * 1024,
            log_interval: Duration::from_secs(10),
        }
    }
}

/// `want`, but never more than `1/share` of this process's soft `RLIMIT_NOFILE`, so a flood
/// on one listener leaves fds for the others (and for supervised processes' pipes).
pub fn fd_budget(want: usize, share: usize) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return want.max(1);
    }
    fd_budget_for(want, share, lim.rlim_cur)
}

fn fd_budget_for(want: usize, share: usize, nofile: u64) -> usize {
    let cap = (nofile / share.max(1) as u64).max(1);
    want.min(usize::try_from(cap).unwrap_or(usize::MAX)).max(1)
}

/// The listen backlog of [`bind_tcp`]: connections beyond a listener's cap wait here,
/// costing the daemon no fd (the kernel bounds it by `net.core.somaxconn`). The usual 128
/// would make a legitimate client behind a small flood retry its SYN for seconds.
pub const BACKLOG: u32 = 1024;

/// Bind a TCP listener on `addr` (`host:port`, first address that binds) with [`BACKLOG`].
pub async fn bind_tcp(addr: &str) -> io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        match sock.bind(a) {
            Ok(()) => return sock.listen(BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} resolves to no address"))))
}

/// A listener [`serve`] can accept from.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    type Peer: Send + 'static;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Peer)>>;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Peer)>> {
        tokio::net::TcpListener::poll_accept(self, cx)
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, Self::Peer)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
    }
}

/// Accept from `listener` until `shutdown` resolves, serving each connection with the
/// service `make(peer)` returns, within `limits`. On shutdown, stops accepting and asks
/// open connections to finish their current request and close (it does not wait for them).
pub async fn serve<L, F, S, B>(listener: L, limits: Limits, make: F, shutdown: impl Future<Output = ()>)
where
    L: Listener,
    F: Fn(L::Peer) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + From<String> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut backoff = Backoff::default();
    let mut accept_log = LogEvery::new(limits.log_interval);
    let mut full_log = LogEvery::new(limits.log_interval);
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0
            && let Some(suppressed) = full_log.hit(Instant::now())
        {
            tracing::warn!(
                listener = limits.name,
                max = limits.max_connections,
                suppressed,
                "{}: {} connections open, at the cap; new ones wait in the listen backlog until one closes",
                limits.name,
                limits.max_connections
            );
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = std::future::poll_fn(|cx| listener.poll_accept(cx)) => r,
            () = &mut shutdown => break,
        };
        let (io, peer) = match accepted {
            Ok(x) => {
                backoff.reset();
                x
            }
            Err(e) => {
                let pause = backoff.next(&e);
                if let Some(suppressed) = accept_log.hit(Instant::now()) {
                    tracing::warn!(
                        listener = limits.name,
                        error = %e,
                        suppressed,
                        pause_ms = pause.as_millis() as u64,
                        "{}: accept failed: {e}; pausing {} ms before the next accept{}",
                        limits.name,
                        pause.as_millis(),
                        if is_resource(&e) {
                            " (out of file descriptors or memory: raise LimitNOFILE or lower the load)"
                        } else {
                            ""
                        }
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let svc = Timed { inner: make(peer), timeout: limits.request_timeout };
        let limits = limits.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = limits.name, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
}

/// The request timeout around a service: 408 with a reason when it expires.
struct Timed<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Timed<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: From<String>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let fut = self.inner.call(req);
        let timeout = self.timeout;
        Box::pin(async move {
            let Some(limit) = timeout else { return fut.await.map_err(Into::into) };
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => {
                    let mut resp = Response::new(B::from(format!(
                        "request not complete within {} s: send the whole request at once\n",
                        limit.as_secs()
                    )));
                    *resp.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
                    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    Ok(resp)
                }
            }
        })
    }
}

/// Whether an accept error means the process (or system) is out of fds or memory.
pub fn is_resource(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The pause after a failed accept: out of resources, 10 ms doubling up to 1 s (until an
/// accept succeeds); any other error (a connection reset before we took it, ...), 10 ms.
#[derive(Debug, Default)]
pub struct Backoff {
    resource_failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn next(&mut self, e: &io::Error) -> Duration {
        if !is_resource(e) {
            return Self::FIRST;
        }
        let pause = Self::FIRST.saturating_mul(1 << self.resource_failures.min(16)).min(Self::MAX);
        self.resource_failures = self.resource_failures.saturating_add(1);
        pause
    }

    pub fn reset(&mut self) {
        self.resource_failures = 0;
    }
}

/// At most one log line per interval: [`LogEvery::hit`] says whether to log now and how
/// many hits were suppressed since the last line.
#[derive(Debug)]
pub struct LogEvery {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogEvery {
    pub fn new(interval: Duration) -> LogEvery {
        LogEvery { interval, last: None, suppressed: 0 }
    }

    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A request body sent too slowly (see [`Paced`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "request body too slow: {received} bytes in {elapsed_ms} ms, below {min_bytes_per_sec} bytes/s; send the body at once"
)]
pub struct TooSlow {
    pub received: u64,
    pub elapsed_ms: u64,
    pub min_bytes_per_sec: u64,
}

/// A minimum body pace: after `grace`, at least `min_bytes_per_sec` on average.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub grace: Duration,
    pub min_bytes_per_sec: u64,
}

/// A body that fails with [`TooSlow`] when the client falls below its [`Pace`]: the next
/// bytes are due by `start + grace + received / rate`.
pub struct Paced<B> {
    inner: B,
    pace: Pace,
    start: tokio::time::Instant,
    received: u64,
    due: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Pace) -> Paced<B> {
        let start = tokio::time::Instant::now();
        Paced { inner, pace, start, received: 0, due: Box::pin(tokio::time::sleep_until(start + pace.grace)) }
    }

    fn deadline(&self) -> tokio::time::Instant {
        let rate = self.pace.min_bytes_per_sec.max(1);
        self.start + self.pace.grace + Duration::from_secs_f64(self.received as f64 / rate as f64)
    }
}

impl<B> Body for Paced<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += hyper::body::Buf::remaining(d) as u64;
                    let due = this.deadline();
                    this.due.as_mut().reset(due);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.due.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TooSlow {
                    received: this.received,
                    elapsed_ms: this.start.elapsed().as_millis() as u64,
                    min_bytes_per_sec: this.pace.min_bytes_per_sec,
                })))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn resource_errors_back_off_doubling_to_one_second_and_reset() {
        let mut b = Backoff::default();
        let pauses: Vec<u128> = (0..10).map(|_| b.next(&emfile()).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.next(&io::Error::from_raw_os_error(libc::ENFILE)), Backoff::MAX);
        }
        b.reset();
        assert_eq!(b.next(&io::Error::from_raw_os_error(libc::ENOBUFS)), Backoff::FIRST);
        assert_eq!(b.next(&io::Error::from_raw_os_error(libc::ENOMEM)), Duration::from_millis(20));
    }

    #[test]
    fn other_errors_pause_briefly_and_do_not_grow() {
        let mut b = Backoff::default();
        for _ in 0..20 {
            assert_eq!(b.next(&io::Error::from_raw_os_error(libc::ECONNABORTED)), Backoff::FIRST);
        }
        assert!(!is_resource(&io::Error::other("x")));
    }

    #[test]
    fn logs_once_per_interval_with_the_count_suppressed() {
        let mut l = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.hit(t0), Some(0));
        for i in 1..=999 {
            assert_eq!(l.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.hit(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(l.hit(t0 + Duration::from_secs(11)), None);
        assert_eq!(l.hit(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn fd_budget_stays_a_share_of_the_limit() {
        assert_eq!(fd_budget_for(32, 8, 256), 32);
        assert_eq!(fd_budget_for(32, 8, 128), 16);
        assert_eq!(fd_budget_for(512, 4, 256), 64);
        assert_eq!(fd_budget_for(32, 8, 3), 1);
        assert!(fd_budget(32, 8) >= 1);
    }

    /// `n` chunks of `size` bytes, one every `every`.
    struct Drip {
        size: usize,
        left: usize,
        every: Duration,
        tick: Pin<Box<tokio::time::Sleep>>,
    }

    impl Drip {
        fn new(size: usize, every: Duration, n: usize) -> Drip {
            Drip { size, left: n, every, tick: Box::pin(tokio::time::sleep(every)) }
        }
    }

    impl Body for Drip {
        type Data = hyper::body::Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, io::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            std::task::ready!(self.tick.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + self.every;
            self.tick.as_mut().reset(next);
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(hyper::body::Bytes::from(vec![b'x'; self.size])))))
        }
    }

    #[tokio::test]
    async fn a_body_below_the_pace_fails_and_one_above_it_completes() {
        use http_body_util::BodyExt;
        let pace = Pace { grace: Duration::from_millis(300), min_bytes_per_sec: 1000 };

        // 10 bytes every 50 ms (200 B/s): below 1000 B/s once the grace is used up.
        let started = Instant::now();
        let slow = Drip::new(10, Duration::from_millis(50), 1000);
        let Err(err) = Paced::new(slow, pace).collect().await else { panic!("a body below the pace completed") };
        let slow = err.downcast_ref::<TooSlow>().expect("a TooSlow error");
        assert!(slow.received < 200, "{slow}");
        assert!(started.elapsed() < Duration::from_secs(2), "failed late: {:?}", started.elapsed());

        // 200 bytes every 50 ms (4000 B/s) stays ahead of 1000 B/s.
        let body =
            Paced::new(Drip::new(200, Duration::from_millis(50), 10), pace).collect().await.expect("fast enough");
        assert_eq!(body.to_bytes().len(), 2000);
    }
}
