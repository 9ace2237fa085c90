//! Accepting client connections: a connection limit, optional TLS with ALPN, HTTP/1.1 and
//! HTTP/2 on one port, and a graceful drain when asked to stop.
//!
//! Thread per core, like nginx's worker processes: each serving thread runs its own
//! single-threaded runtime with its own listening socket on the shared port (`SO_REUSEPORT`,
//! the kernel spreads new connections over them) and its own upstream pool, so a request
//! is read, forwarded and answered on one thread, with no hand-off between cores.
//!
//! Plain HTTP/1.1 connections let go of hyper (and its buffers) while idle (`keep_alive`), so
//! an idle keep-alive connection costs little more than its socket.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{ServerConfig, TlsFiles};
use crate::gateway::Gateway;
use crate::metrics::METRICS;
use crate::upstream::UpstreamClient;
use crate::web::headers::Peer;
use crate::web::respond::ProxyBody;
use keep_alive::Tracked;

mod keep_alive;
pub(crate) mod trim;

/// Why TLS could not be set up from the configured files.
#[derive(Debug, thiserror::Error)]
#[error("server.tls: {0}")]
pub struct TlsSetupError(String);

/// A rustls acceptor offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsSetupError> {
    let fail = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        TlsSetupError(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| fail(&files.cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&files.cert_file, &e))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| fail(&files.key_file, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsSetupError(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `listener` on the current (single-threaded) runtime until `stop` turns true, then
/// lets open connections finish for up to `shutdown_grace`. Returns false when connections
/// were still open as the grace ran out. `limit` is shared by all serving threads.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    config: &ServerConfig,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let builders = Arc::new(Builders::new(config));
    // This thread's own pool: its connections are driven by this runtime only.
    let pool = gateway.upstream().client();
    tokio::spawn(pool.clone().close_idle());
    // Every connection task holds a receiver: draining flips it, then waits for them all.
    let (drain, draining) = watch::channel(false);
    let scheme = if tls.is_some() { "https" } else { "http" };

    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        // Over the limit: close at once rather than queue work we cannot do.
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            METRICS.connection_refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = Handler {
            peer: Arc::new(gateway.header_rules().peer(addr.ip(), scheme)),
            gateway: gateway.clone(),
            pool: pool.clone(),
        };
        let (builders, draining, tls) = (builders.clone(), draining.clone(), tls.clone());
        let task = async move {
            METRICS.connection_opened();
            match tls {
                None => serve_plain(stream, &builders, handler, draining).await,
                // Boxed, like every path but the plain one, so that an idle plain connection's
                // task is no bigger than what it holds (the socket) needs.
                Some(acceptor) => {
                    Box::pin(serve_tls(stream, acceptor, &builders, handler, draining)).await
                }
            }
            METRICS.connection_closed();
            drop(permit);
        };
        tokio::spawn(task);
    }

    drop(listener);
    drop(draining);
    tracing::info!(
        connections = drain.receiver_count(),
        "listener closed; draining"
    );
    drain.send_replace(true);
    tokio::time::timeout(config.shutdown_grace.0, drain.closed())
        .await
        .is_ok()
}

/// What every request on one client connection needs.
#[derive(Clone)]
struct Handler {
    gateway: Arc<Gateway>,
    peer: Arc<Peer>,
    pool: UpstreamClient,
}

impl Handler {
    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + use<> {
        let Handler {
            gateway,
            peer,
            pool,
        } = self.clone();
        // Boxed: hyper keeps one allocation the size of this future for as long as it serves
        // the connection; boxing the request's work leaves only a few pointers in it.
        async move { Ok(Box::pin(gateway.handle(req, &peer, &pool)).await) }
    }
}

/// Plain HTTP: HTTP/2 with prior knowledge opens with its preface (`PRI * HTTP/2.0`), which
/// no HTTP/1 request starts with; everything else is HTTP/1.1, served so that an idle
/// keep-alive connection holds no buffers.
async fn serve_plain(
    stream: TcpStream,
    builders: &Builders,
    handler: Handler,
    draining: watch::Receiver<bool>,
) {
    let mut first = [0u8; 2];
    let n = match tokio::time::timeout(builders.idle_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    if first[..n] == b"PR"[..n] {
        return Box::pin(serve_auto(stream, &builders.auto, handler, draining)).await;
    }
    let service = |cycle: Arc<keep_alive::Cycle>| {
        let handler = &handler;
        service_fn(move |req: Request<Incoming>| {
            cycle.request_started(&req);
            let cycle = cycle.clone();
            let response = handler.handle(req);
            async move { Ok::<_, Infallible>(response.await?.map(|b| Tracked::new(b, cycle))) }
        })
    };
    keep_alive::serve(
        stream,
        &builders.http1,
        builders.idle_timeout,
        keep_alive::RELEASE_AFTER,
        draining,
        service,
    )
    .await;
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    builders: &Builders,
    handler: Handler,
    draining: watch::Receiver<bool>,
) {
    match tokio::time::timeout(builders.idle_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_auto(stream, &builders.auto, handler, draining).await,
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// TLS (HTTP/2 or HTTP/1.1 by ALPN) and HTTP/2 with prior knowledge: one hyper connection
/// for the life of the client connection.
async fn serve_auto<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    handler: Handler,
    mut draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handler.handle(req));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = until_draining(&mut draining) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "client connection ended with an error");
    }
}

/// Returns once the serving thread starts draining (or is gone).
async fn until_draining(draining: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the connection task.
    let _ = draining.wait_for(|draining| *draining).await;
}

/// hyper's settings for client connections, made once per serving thread.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    /// How long a connection may sit without a request (and a TLS handshake may take).
    idle_timeout: Duration,
}

impl Builders {
    fn new(config: &ServerConfig) -> Self {
        let idle_timeout = config.header_read_timeout.0;
        let max_buf = config.max_header_bytes as usize;
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle_timeout)
            .max_buf_size(max_buf)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes)
            .max_concurrent_streams(256)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(idle_timeout)
            .max_buf_size(max_buf)
            .keep_alive(true);
        Self {
            auto,
            http1,
            idle_timeout,
        }
    }
}

/// How many serving threads to run when the config does not say: the cores this process may
/// use (CPU affinity and cgroup CPU quota included, so a pod limited to 200m gets one).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`, one per serving thread.
/// With port 0 the first socket picks the port and the others join it. Each socket is
/// non-blocking, ready for `TcpListener::from_std` on its thread's runtime.
pub fn bind_shared(
    addr: std::net::SocketAddr,
    count: usize,
    key: &str,
) -> io::Result<Vec<std::net::TcpListener>> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{key} = {addr}: {e}"));
    if addr.port() != 0 {
        // `SO_REUSEPORT` would let us join a port another process (a second proxy started by
        // mistake, say) already listens on, and split its traffic. A plain bind first fails
        // on any listener there, as a bind without it always did.
        probe_free(addr).map_err(named)?;
    }
    let mut bound_to = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = tcp_socket(bound_to).map_err(named)?;
        socket.set_reuse_port(true).map_err(named)?;
        socket.set_nonblocking(true).map_err(named)?;
        socket.bind(&bound_to.into()).map_err(named)?;
        socket.listen(1024).map_err(named)?;
        let listener = std::net::TcpListener::from(socket);
        bound_to = listener.local_addr().map_err(named)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails with `AddrInUse` when something listens on `addr`.
fn probe_free(addr: std::net::SocketAddr) -> io::Result<()> {
    tcp_socket(addr)?.bind(&addr.into())
}

/// A TCP socket for `addr` with `SO_REUSEADDR`, as tokio's `TcpListener::bind` makes: a
/// restart may rebind at once, connections of a previous run in TIME_WAIT do not count.
fn tcp_socket(addr: std::net::SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Binds a listener, naming the config key in the error.
pub async fn bind(addr: std::net::SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{key} = {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_listeners_join_the_port_the_first_one_picked() {
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 3, "server.listen").unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    }

    #[test]
    fn a_port_held_without_reuseport_is_refused_with_the_setting_named() {
        // Another program's plain listener: we must not share its port.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let error = bind_shared(addr, 2, "server.listen").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().starts_with("server.listen = "), "{error}");
    }

    #[test]
    fn a_second_proxy_cannot_join_a_port_we_serve() {
        let ours = bind_shared("127.0.0.1:0".parse().unwrap(), 2, "server.listen").unwrap();
        let addr = ours[0].local_addr().unwrap();
        let error = bind_shared(addr, 2, "server.listen").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        // Once we are gone the port is free again.
        drop(ours);
        assert_eq!(bind_shared(addr, 2, "server.listen").unwrap().len(), 2);
    }

    #[test]
    fn at_least_one_listener() {
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 0, "server.listen").unwrap();
        assert_eq!(listeners.len(), 1);
    }
}
