//! How the control API holds up against clients that do not behave: at most
//! `api.max_connections` connections at once, a TLS handshake and a request head within
//! [`HEAD_TIMEOUT`], a keep-alive connection with no request and no traffic closed after
//! [`IDLE_TIMEOUT`], and every connection's work — the handshake included — in a task of its own,
//! so that one slow client never holds up the accept loop.
//!
//! At the limit, a new connection takes the place of the oldest one that is not being answered
//! (one that has sent nothing, or sits idle between requests); when every connection is being
//! answered, the new one is closed at accept — never queued. So a flood of idle connections can
//! neither exhaust the process's descriptors nor keep `/healthz` from answering.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Time for a TLS handshake, and for a request's head (a connection that sends nothing at all is
/// closed after it).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in flight and no traffic is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a connection checks whether it has been idle too long.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (`api.max_connections`).
    pub max_connections: usize,
    /// TLS handshake and request head.
    pub head: Duration,
    /// Idle keep-alive.
    pub idle: Duration,
}

/// A listener of either kind.
pub enum Listener {
    /// A unix socket.
    Unix(UnixListener),
    /// TCP, served plain (loopback) or with TLS.
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

/// A connection's byte stream, whatever it came in on.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Accepted, not yet served: the raw stream and, for TLS, the acceptor that must shake hands.
enum Accepted {
    Ready(Box<dyn Stream>),
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok(Accepted::Ready(Box::new(s)))
            }
            Listener::Tcp(l, None) => {
                let (s, _) = l.accept().await?;
                Ok(Accepted::Ready(Box::new(s)))
            }
            Listener::Tcp(l, Some(acceptor)) => {
                let (s, _) = l.accept().await?;
                Ok(Accepted::Tls(s, acceptor.clone()))
            }
        }
    }
}

/// Serves `app` on `listener` until `stop`: each connection in its own task, within `limits`.
pub async fn serve(listener: Listener, app: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Open::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or a connection reset before accept: never a busy loop.
                tracing::warn!(error = %e, "the control API could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // The evicted connection's place passes to the new one at once (the evicted
                // task forgets its permit as it ends): a flood of connections is accepted at
                // the pace of accept, not of closing.
                let place = open.evict_oldest_idle().then(|| {
                    slots.add_permits(1);
                    slots.clone().try_acquire_owned().ok()
                });
                match place.flatten() {
                    Some(slot) => slot,
                    None => {
                        refuse(accepted, limits);
                        continue;
                    }
                }
            }
        };
        let (app, stop) = (app.clone(), stop.clone());
        let (id, activity, evict) = open.register();
        let open = open.clone();
        tokio::spawn(async move {
            let slot = slot;
            metrics::gauge!("gradient_connector_api_connections").increment(1.0);
            let served = async {
                if let Some(stream) = handshake(accepted, limits.head).await {
                    connection(stream, app, activity, limits, stop).await;
                }
            };
            tokio::select! {
                _ = served => {}
                _ = evict.cancelled() => {
                    tracing::debug!("control API connection closed to make room for a new one");
                }
            }
            if evict.is_cancelled() {
                // Its place went to the connection that evicted it.
                slot.forget();
            }
            open.forget(id);
            metrics::gauge!("gradient_connector_api_connections").decrement(1.0);
        });
    }
}

/// Closes a connection at accept: every place is taken by a connection being answered.
fn refuse(accepted: Accepted, limits: Limits) {
    metrics::counter!("gradient_connector_api_connections_refused_total").increment(1);
    tracing::debug!(
        max_connections = limits.max_connections,
        "control API connection refused: every one of api.max_connections is being answered"
    );
    drop(accepted);
}

/// The connections being served, oldest first, with what each is doing and how to close it.
#[derive(Clone, Default)]
struct Open {
    inner: Arc<std::sync::Mutex<OpenInner>>,
}

#[derive(Default)]
struct OpenInner {
    next: u64,
    by_age: std::collections::BTreeMap<u64, (Activity, CancellationToken)>,
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self) -> (u64, Activity, CancellationToken) {
        let mut o = self.lock();
        let id = o.next;
        o.next += 1;
        let (activity, evict) = (Activity::new(), CancellationToken::new());
        o.by_age.insert(id, (activity.clone(), evict.clone()));
        (id, activity, evict)
    }

    fn forget(&self, id: u64) {
        self.lock().by_age.remove(&id);
    }

    /// Closes the oldest connection that is not being answered; false when there is none.
    fn evict_oldest_idle(&self) -> bool {
        let mut o = self.lock();
        let idle = o
            .by_age
            .iter()
            .find(|(_, (a, e))| !a.answering() && !e.is_cancelled())
            .map(|(id, _)| *id);
        match idle.and_then(|id| o.by_age.remove(&id)) {
            Some((_, evict)) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// The TLS handshake, within `limit`; a plain stream as it is.
async fn handshake(accepted: Accepted, limit: Duration) -> Option<Box<dyn Stream>> {
    match accepted {
        Accepted::Ready(s) => Some(s),
        Accepted::Tls(tcp, acceptor) => {
            match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        }
    }
}

/// One connection: HTTP/1.1 with the head timeout, closed when idle too long or at `stop`.
async fn connection(
    stream: Box<dyn Stream>,
    app: Router,
    activity: Activity,
    limits: Limits,
    stop: CancellationToken,
) {
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = TowerToHyperService::new(app);
    let in_flight = activity.clone();
    let counted = hyper::service::service_fn(move |req: Request<Incoming>| {
        let request = InFlight::enter(&in_flight);
        let answer = hyper::service::Service::call(&service, req);
        async move {
            let _request = request;
            answer.await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head)
        .keep_alive(true)
        .serve_connection(io, counted);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "control API connection ended");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(IDLE_CHECK.min(limits.idle)) => {
                if activity.idle_for() >= limits.idle {
                    tracing::debug!("control API connection idle for {} s: closed", limits.idle.as_secs());
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
#[derive(Clone)]
struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether one of its requests is being answered.
    fn answering(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long nothing has happened: zero while a request is being answered (a long answer,
    /// such as a `sync` that waits for its run, is not idleness).
    fn idle_for(&self) -> Duration {
        if self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request being answered (counted while it lives).
struct InFlight(Activity);

impl InFlight {
    fn enter(a: &Activity) -> InFlight {
        a.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes every byte it moves in its connection's [`Activity`].
struct Watched {
    inner: Box<dyn Stream>,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n";

    /// A listener on 127.0.0.1 serving `/healthz` and a `/hang` that never answers, within
    /// `max_connections`; returns its address.
    async fn start(max_connections: usize) -> (std::net::SocketAddr, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/hang", get(std::future::pending::<&'static str>));
        let stop = CancellationToken::new();
        let limits = Limits {
            max_connections,
            head: HEAD_TIMEOUT,
            idle: IDLE_TIMEOUT,
        };
        tokio::spawn(serve(Listener::Tcp(l, None), app, limits, stop.clone()));
        (addr, stop)
    }

    /// Reads until the server closes; returns what it sent.
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn healthz_answers(addr: std::net::SocketAddr) -> bool {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GET_HEALTHZ).await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
        let (addr, _stop) = start(4).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = tokio::time::Instant::now();
        let got = until_closed(&mut s).await;
        let took = t.elapsed();
        assert!(
            (HEAD_TIMEOUT..HEAD_TIMEOUT + Duration::from_secs(1)).contains(&took),
            "closed after {took:?}: {got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (addr, _stop) = start(4).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(GET_HEALTHZ).await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let t = tokio::time::Instant::now();
        until_closed(&mut s).await;
        let took = t.elapsed();
        // The head timeout may close it first (hyper arms it for the next request's head); it is
        // never kept open longer than the idle timeout and its check interval.
        assert!(took <= IDLE_TIMEOUT + IDLE_CHECK, "kept {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_an_idle_connection_makes_room_and_busy_ones_refuse_the_new() {
        let (addr, _stop) = start(2).await;
        // Two connections that send nothing take both places …
        let mut idle_a = TcpStream::connect(addr).await.unwrap();
        let _idle_b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // … and a health check still answers: the oldest idle one is closed for it.
        assert!(healthz_answers(addr).await);
        assert_eq!(
            until_closed(&mut idle_a).await,
            "",
            "the oldest idle one went"
        );

        // Two requests being answered hold both places: a third connection is closed at accept.
        let (addr, _stop) = start(2).await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /hang HTTP/1.1\r\nhost: t\r\n\r\n")
                .await
                .unwrap();
            busy.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(GET_HEALTHZ).await;
        assert_eq!(until_closed(&mut third).await, "", "refused, not queued");
    }
}
