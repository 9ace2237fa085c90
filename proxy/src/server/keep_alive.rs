//! Plain HTTP/1.1 keep-alive connections that hold no buffers while idle.
//!
//! hyper keeps a read and a write buffer (about 16 KiB) for the whole life of a connection,
//! so 10,000 idle keep-alive connections would cost some 230 MB. Here hyper serves a
//! connection only while requests are coming: once it has sat between requests for a while
//! (`RELEASE_AFTER`), the socket tells hyper "end of stream", hyper finishes (flushing what
//! it has) and hands the socket back, and the connection waits for its next request holding
//! the socket alone. The next request starts a fresh hyper connection on the same socket.
//! A busy connection keeps its hyper connection from one request to the next, as before.
//!
//! It is safe because hyper itself decides whether a connection may be reused: the end of
//! stream is only faked after a response hyper has fully written, with no byte read since.
//! A request with a body or an upgrade makes the connection "sticky" (served by one hyper
//! connection to the end, as before), so the end of stream is never faked in the middle of a
//! body hyper is still draining, and the socket is never reused out of step with the framing.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a connection sits between requests before hyper lets go of it: one to two of
/// these. Short enough that idle browser and ingress connections cost only their socket,
/// long enough that a connection carrying steady traffic keeps its hyper connection.
pub const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// What one hyper connection's worth of requests has shown so far, shared by its service
/// (which sees requests and responses) and its socket (which sees reads and writes).
#[derive(Default)]
pub struct Cycle {
    state: AtomicU8,
    answers: AtomicU32,
}

/// A response has ended and no byte has arrived since.
const ANSWERED: u8 = 1;
/// ... and hyper has written all of it out: the client is between requests.
const FLUSHED: u8 = 2;
/// A request had a body or asked for an upgrade: never fake the end of stream.
const STICKY: u8 = 4;
/// The end of stream is faked from now on: hyper's shutdown must leave the socket open.
const RELEASED: u8 = 8;

impl Cycle {
    /// Called by the service as a request comes in.
    pub fn request_started<B: Body>(&self, req: &Request<B>) {
        let sticky = !req.body().is_end_stream()
            || req.headers().contains_key(hyper::header::UPGRADE)
            || req.method() == Method::CONNECT;
        self.update(|state| {
            let state = state & !(ANSWERED | FLUSHED);
            if sticky { state | STICKY } else { state }
        });
    }

    fn response_ended(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.update(|state| (state | ANSWERED) & !FLUSHED);
    }

    /// hyper asks the socket to flush only once its own buffer is empty.
    fn flushed(&self) {
        self.update(|state| match state & ANSWERED {
            0 => state,
            _ => state | FLUSHED,
        });
    }

    fn writing(&self) {
        self.update(|state| state & !FLUSHED);
    }

    fn bytes_arrived(&self) {
        self.update(|state| state & !(ANSWERED | FLUSHED));
    }

    fn between_requests(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (ANSWERED | FLUSHED | STICKY) == ANSWERED | FLUSHED
    }

    fn sticky(&self) -> bool {
        self.state.load(Ordering::Relaxed) & STICKY != 0
    }

    fn release(&self) {
        self.update(|state| state | RELEASED);
    }

    fn released(&self) -> bool {
        self.state.load(Ordering::Relaxed) & RELEASED != 0
    }

    /// One thread reads and writes a cycle at a time (its connection's); the atomics are
    /// only there because hyper wants the service to be `Send`.
    fn update(&self, change: impl FnOnce(u8) -> u8) {
        let state = self.state.load(Ordering::Relaxed);
        let changed = change(state);
        if changed != state {
            self.state.store(changed, Ordering::Relaxed);
        }
    }
}

/// A response body that tells the cycle when hyper is done with it (ended, or never polled
/// because it was empty: hyper drops it either way once the response is written).
pub struct Tracked<B> {
    inner: B,
    cycle: Arc<Cycle>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, cycle: Arc<Cycle>) -> Self {
        Self { inner, cycle }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.cycle.response_ended();
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket as hyper sees it: first any bytes a previous hyper connection read
/// ahead, then the socket; once released, an end of stream, and a shutdown that leaves the
/// socket open.
struct Releasing {
    stream: TcpStream,
    read_ahead: Bytes,
    cycle: Arc<Cycle>,
}

impl AsyncRead for Releasing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead.split_to(n));
            self.cycle.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
        if self.cycle.released() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.cycle.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Releasing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cycle.writing();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cycle.writing();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cycle.flushed();
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cycle.released() {
            // hyper has flushed everything before asking; the socket stays open for the
            // next request.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on `stream` until the client closes, the connection stays idle for
/// `idle_timeout`, hyper closes it (an error, `Connection: close`, an upgrade), or `drain`
/// turns true. `service` makes the service for one hyper connection from its cycle; hyper
/// lets go of the socket after `release_after` to twice that between requests.
pub async fn serve<S, B, F>(
    mut stream: TcpStream,
    builder: &http1::Builder,
    idle_timeout: Duration,
    release_after: Duration,
    mut drain: watch::Receiver<bool>,
    mut service: F,
) where
    F: FnMut(Arc<Cycle>) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked<B>>> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut read_ahead = Bytes::new();
    loop {
        if read_ahead.is_empty() {
            // Idle: this task holds the socket and nothing else.
            tokio::select! {
                ready = tokio::time::timeout(idle_timeout, stream.readable()) => {
                    if !matches!(ready, Ok(Ok(()))) {
                        return;
                    }
                }
                () = super::until_draining(&mut drain) => return,
            }
        }
        let cycle = Arc::new(Cycle::default());
        let io = Releasing {
            stream,
            read_ahead,
            cycle: cycle.clone(),
        };
        // Boxed: it lives only while requests come, the task that waits between them does not
        // carry its size.
        let mut connection = Box::new(
            builder
                .serve_connection(TokioIo::new(io), service(cycle.clone()))
                .with_upgrades(),
        );

        let mut draining = pin!(super::until_draining(&mut drain));
        let mut drained = false;
        let mut tick = pin!(tokio::time::sleep(release_after));
        let mut ticking = true;
        let mut answers_at_tick = 0;
        let served = std::future::poll_fn(|cx| {
            if !drained && draining.as_mut().poll(cx).is_ready() {
                drained = true;
                Pin::new(&mut *connection).graceful_shutdown();
            }
            loop {
                if let Poll::Ready(served) = Pin::new(&mut *connection).poll(cx) {
                    return Poll::Ready(served);
                }
                if !ticking || tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Between requests since the last tick: let hyper go (it reads an end of
                // stream when polled again, at the top of this loop).
                let answers = cycle.answers.load(Ordering::Relaxed);
                if cycle.between_requests() && answers == answers_at_tick {
                    cycle.release();
                }
                answers_at_tick = answers;
                // A request in progress is looked at again less often; a sticky connection
                // never lets go, so it needs no more ticks.
                ticking = !cycle.sticky();
                let wait = match cycle.between_requests() {
                    true => release_after,
                    false => release_after * 10,
                };
                tick.as_mut().reset(Instant::now() + wait);
            }
        })
        .await;

        if let Err(error) = served {
            tracing::debug!(%error, "client connection ended with an error");
            return;
        }
        // `None`: upgraded, the socket now belongs to the upgrade.
        let Some(parts) = (*connection).into_parts() else {
            return;
        };
        let io = parts.io.into_inner();
        if !io.cycle.released() || drained {
            return;
        }
        stream = io.stream;
        super::trim::note_release();
        // Even empty, the `Bytes` hyper hands back keeps its whole read buffer alive.
        read_ahead = match parts.read_buf.is_empty() {
            true => Bytes::new(),
            false => parts.read_buf,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const BIG: usize = 8 << 20;
    /// Shorter than in service, so the tests wait less.
    const RELEASE: Duration = Duration::from_millis(10);
    /// Long enough for a connection to be let go.
    const IDLE: Duration = Duration::from_millis(60);

    /// Connections served by `serve` with a service that answers with the request path
    /// (without reading any request body). Returns the address, how many hyper connections
    /// the sockets have needed so far, and the drain switch.
    async fn start() -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let made = Arc::new(AtomicUsize::new(0));
        let (drain, draining) = watch::channel(false);
        let counter = made.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (counter, draining) = (counter.clone(), draining.clone());
                tokio::spawn(async move {
                    let mut builder = http1::Builder::new();
                    builder.timer(hyper_util::rt::TokioTimer::new());
                    let service = |cycle: Arc<Cycle>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        service_fn(move |req: Request<Incoming>| {
                            cycle.request_started(&req);
                            let body = match req.uri().path() {
                                "/big" => Bytes::from(vec![b'x'; BIG]),
                                path => Bytes::from(path.to_owned()),
                            };
                            let slow = req.uri().path() == "/slow";
                            let response =
                                Response::new(Tracked::new(Full::new(body), cycle.clone()));
                            async move {
                                if slow {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        })
                    };
                    let idle_timeout = Duration::from_secs(5);
                    serve(stream, &builder, idle_timeout, RELEASE, draining, service).await;
                });
            }
        });
        (addr, made, drain)
    }

    /// Reads until `count` whole responses have arrived (or the peer closes); returns their
    /// bodies in order.
    async fn responses(stream: &mut TcpStream, count: usize) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut buf = Vec::new();
        while bodies.len() < count {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("response in time")
                .unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some((body, rest)) = split_response(&buf) {
                bodies.push(body);
                buf = rest;
            }
        }
        bodies
    }

    fn split_response(buf: &[u8]) -> Option<(String, Vec<u8>)> {
        let text = std::str::from_utf8(buf).ok()?;
        let end = text.find("\r\n\r\n")? + 4;
        let head = text[..end].to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .split("content-length: ")
            .nth(1)?
            .split("\r\n")
            .next()?
            .parse()
            .ok()?;
        let body = text.get(end..end + length)?.to_owned();
        Some((body, buf[end + length..].to_vec()))
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    #[tokio::test]
    async fn between_requests_the_socket_is_all_that_is_kept() {
        let (addr, made, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        for path in ["/a", "/b", "/c"] {
            client.write_all(get(path).as_bytes()).await.unwrap();
            assert_eq!(responses(&mut client, 1).await, [path]);
            // Let the connection go idle before the next request.
            tokio::time::sleep(IDLE).await;
        }
        // A fresh hyper connection per request: none outlived its response.
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn back_to_back_requests_share_one_hyper_connection() {
        let (addr, made, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        for path in ["/a", "/b", "/c"] {
            client.write_all(get(path).as_bytes()).await.unwrap();
            assert_eq!(responses(&mut client, 1).await, [path]);
        }
        assert_eq!(made.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (addr, _, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let both = get("/first") + &get("/second");
        client.write_all(both.as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 2).await, ["/first", "/second"]);
        client.write_all(get("/third").as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/third"]);
    }

    #[tokio::test]
    async fn a_request_head_in_pieces_is_read_whole() {
        let (addr, _, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(get("/warm").as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/warm"]);
        let head = get("/split");
        let (one, two) = head.split_at(9);
        client.write_all(one.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(two.as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/split"]);
    }

    /// The service answers before reading the body; the body, arriving later, looks like a
    /// request. It must be drained as the body it is, never served.
    #[tokio::test]
    async fn an_unread_body_is_never_taken_for_a_request() {
        let (addr, _, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let smuggled = get("/smuggled");
        let post = format!(
            "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            smuggled.len()
        );
        client.write_all(post.as_bytes()).await.unwrap();
        let mut answered = responses(&mut client, 1).await;
        assert_eq!(answered, ["/post"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The connection may have been closed instead of drained; both are safe.
        let _ = client.write_all(smuggled.as_bytes()).await;
        let _ = client.write_all(get("/after").as_bytes()).await;
        answered.extend(responses(&mut client, 1).await);
        assert!(!answered.iter().any(|b| b == "/smuggled"), "{answered:?}");
    }

    #[tokio::test]
    async fn a_request_with_a_body_keeps_its_hyper_connection() {
        let (addr, made, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let post = "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
        client.write_all(post.as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/post"]);
        tokio::time::sleep(IDLE).await;
        client.write_all(get("/next").as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/next"]);
        assert_eq!(made.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_client_that_asks_to_close_is_closed() {
        let (addr, _, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let close = "GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        client.write_all(close.as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/bye"]);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest));
        assert_eq!(read.await.expect("closed in time").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_large_response_is_flushed_whole_before_the_socket_is_released() {
        let (addr, made, _drain) = start().await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(get("/big").as_bytes()).await.unwrap();
        // More than the socket buffers hold: hyper is still flushing when the body ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let big = responses(&mut client, 1).await;
        assert_eq!(big[0].len(), BIG);
        tokio::time::sleep(IDLE).await;
        client.write_all(get("/after").as_bytes()).await.unwrap();
        assert_eq!(responses(&mut client, 1).await, ["/after"]);
        assert_eq!(made.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn draining_closes_idle_connections_and_lets_a_request_finish() {
        let (addr, _, drain) = start().await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(get("/idle").as_bytes()).await.unwrap();
        assert_eq!(responses(&mut idle, 1).await, ["/idle"]);
        tokio::time::sleep(IDLE).await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(get("/slow").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        drain.send_replace(true);
        assert_eq!(responses(&mut busy, 1).await, ["/slow"]);
        for mut closed in [idle, busy] {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), closed.read_to_end(&mut rest));
            assert_eq!(read.await.expect("closed in time").unwrap(), 0);
        }
    }
}
