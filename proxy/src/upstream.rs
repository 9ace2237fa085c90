//! The connection pool to the application: HTTP/1.1 keep-alive over TCP or rustls, with a
//! connect timeout (→ 502) and a response-head timeout (→ 504). Bodies stream both ways.
//!
//! [`Upstream`] is the shared part (where requests go); each serving thread takes its own
//! [`UpstreamClient`] from it, so a pooled connection is only ever driven by the thread that
//! opened it and a request never waits for a wake-up on another core.
//!
//! The pool is a stack of hyper `SendRequest` handles, one per idle connection. A connection
//! goes back on the stack when its response body has been read to the end (see [`Body`]),
//! which is what hyper-util's pooled client does with a task spawned per request; here it
//! costs a push.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tower_service::Service;

use crate::config::UpstreamConfig;
use crate::metrics::UpstreamFailure;

/// Idle connections kept per serving thread, at most.
const MAX_IDLE: usize = 1024;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("upstream.url: `{0}` is not a valid authority")]
    Authority(String),
    #[error("upstream.ca_file: {0}")]
    CaFile(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where requests go and how to connect there; shared by all serving threads.
pub struct Upstream {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    target: Uri,
    host: HeaderValue,
    pass_host_header: bool,
    pool_idle_timeout: Duration,
    response_timeout: Duration,
}

/// One serving thread's connections to the upstream. Cheap to clone (the clones share the
/// pool); use it only on the thread it was made for.
#[derive(Clone)]
pub struct UpstreamClient(Arc<Pool>);

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    target: Uri,
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
    response_timeout: Duration,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let authority: Authority = config
            .url
            .authority
            .parse()
            .map_err(|_| UpstreamSetupError::Authority(config.url.authority.clone()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.0));

        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let scheme = if config.url.https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Ok(Self {
            connector,
            // Invariant: a scheme and a valid authority make a valid URI.
            target: Uri::builder()
                .scheme(scheme)
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .expect("scheme and authority"),
            // Invariant: an Authority is valid header text.
            host: HeaderValue::from_str(authority.as_str()).expect("authority is header text"),
            pass_host_header: config.pass_host_header,
            pool_idle_timeout: config.pool_idle_timeout.0,
            response_timeout: config.response_timeout.0,
        })
    }

    /// A new, empty connection pool, for one serving thread.
    pub fn client(&self) -> UpstreamClient {
        UpstreamClient(Arc::new(Pool {
            connector: self.connector.clone(),
            target: self.target.clone(),
            idle: Mutex::new(Vec::new()),
            idle_timeout: self.pool_idle_timeout,
            response_timeout: self.response_timeout,
        }))
    }

    /// Points the request at the upstream (same path and query, byte for byte), as HTTP/1.1.
    pub fn retarget(&self, req: &mut Request<Incoming>) {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/2 clients send the host as `:authority`; an HTTP/1.1 upstream needs `Host`.
        let client_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let host = match client_host {
            Some(host) if self.pass_host_header => host,
            _ => self.host.clone(),
        };
        req.headers_mut().insert(header::HOST, host);
        // Origin form (`/path?query`): the pool's connections already lead to the upstream.
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
    }
}

impl UpstreamClient {
    /// Sends a retargeted request and waits for the response head.
    pub async fn send(&self, req: Request<Incoming>) -> Result<Response<Body>, UpstreamFailure> {
        match tokio::time::timeout(self.0.response_timeout, self.exchange(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(result) => result,
        }
    }

    /// Closes connections idle for longer than `pool_idle_timeout`; runs as long as the
    /// serving thread's runtime does.
    pub async fn close_idle(self) {
        let timeout = self.0.idle_timeout;
        let mut ticker = tokio::time::interval(timeout.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.0
                .lock()
                .retain(|idle| idle.since.elapsed() < timeout && !idle.sender.is_closed());
        }
    }

    async fn exchange(&self, req: Request<Incoming>) -> Result<Response<Body>, UpstreamFailure> {
        let (mut sender, reused) = match self.checkout().await {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(req).await {
            Ok(response) => response,
            // A kept-alive connection the upstream closed before our request went out: the
            // request is untouched, so it goes once more on a new connection.
            Err(mut error) if reused && error.message().is_some() => {
                let req = error.take_message().expect("checked above");
                sender = self.connect().await?;
                sender.try_send_request(req).await.map_err(|e| {
                    tracing::warn!(error = %crate::error_chain(e.error()), "upstream request failed");
                    UpstreamFailure::Protocol
                })?
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(error.error()), "upstream request failed");
                return Err(UpstreamFailure::Protocol);
            }
        };
        let pool = self.0.clone();
        Ok(response.map(|inner| Body {
            inner,
            check_in: Some((sender, pool)),
        }))
    }

    /// The most recently used idle connection that is still open, once it can take a request.
    async fn checkout(&self) -> Option<SendRequest<Incoming>> {
        loop {
            let mut sender = {
                let mut idle = self.0.lock();
                loop {
                    let candidate = idle.pop()?;
                    if candidate.since.elapsed() < self.0.idle_timeout
                        && !candidate.sender.is_closed()
                    {
                        break candidate.sender;
                    }
                }
            };
            // Checked in as its response body ended; hyper may not have marked it idle yet.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamFailure> {
        let failed = |error: &dyn std::error::Error| {
            tracing::warn!(error = %crate::error_chain(error), "upstream connect failed");
            UpstreamFailure::Connect
        };
        let io = self
            .0
            .connector
            .clone()
            .call(self.0.target.clone())
            .await
            .map_err(|e| failed(&*e))?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| failed(&e))?;
        // Spawned on this thread's runtime: the connection never leaves it.
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list stays consistent whatever a panicking holder did: every push and pop is whole.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upstream response body, streamed as it arrives. Its connection goes back to the pool
/// once the body has been read to the end; a body dropped half-read takes its connection
/// with it (hyper closes it).
pub struct Body {
    inner: Incoming,
    check_in: Option<(SendRequest<Incoming>, Arc<Pool>)>,
}

impl Body {
    fn check_in(&mut self) {
        let Some((sender, pool)) = self.check_in.take() else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let mut idle = pool.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.check_in(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.check_in(),
            Some(Err(_)) => self.check_in = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may never be polled.
        if self.inner.is_end_stream() {
            self.check_in();
        }
    }
}

/// Web PKI roots plus, optionally, the CA certificates in `ca_file`.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, UpstreamSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let unreadable = |e: rustls::pki_types::pem::Error| {
            UpstreamSetupError::CaFile(format!("{}: {e}", path.display()))
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
            roots.add(cert.map_err(unreadable)?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
