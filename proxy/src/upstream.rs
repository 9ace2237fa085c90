//! The connection pool to the application: HTTP/1.1 keep-alive over TCP or rustls, with a
//! connect timeout (→ 502) and a response-head timeout (→ 504). Bodies stream both ways.
//!
//! [`Upstream`] is the shared part (where requests go); each serving thread takes its own
//! [`UpstreamClient`] from it, so a pooled connection is only ever driven by the thread that
//! opened it and a request never waits for a wake-up on another core.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::UpstreamConfig;
use crate::metrics::UpstreamFailure;

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
    pool_idle_timeout: Duration,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    pass_host_header: bool,
    response_timeout: Duration,
}

/// One serving thread's connection pool to the upstream. Cheap to clone (the pool is shared
/// by the clones); use it only on the thread it was made for.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    response_timeout: Duration,
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
        Ok(Self {
            connector,
            pool_idle_timeout: config.pool_idle_timeout.0,
            scheme: if config.url.https {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            // Invariant: an Authority is valid header text.
            host: HeaderValue::from_str(authority.as_str()).expect("authority is header text"),
            authority,
            pass_host_header: config.pass_host_header,
            response_timeout: config.response_timeout.0,
        })
    }

    /// A new, empty connection pool, for one serving thread.
    pub fn client(&self) -> UpstreamClient {
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(1024)
            .build(self.connector.clone());
        UpstreamClient {
            client,
            response_timeout: self.response_timeout,
        }
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
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        // Invariant: scheme, authority and path were each valid on their own.
        *req.uri_mut() = Uri::from_parts(parts).expect("valid parts");
        *req.version_mut() = Version::HTTP_11;
    }
}

impl UpstreamClient {
    /// Sends a retargeted request and waits for the response head.
    pub async fn send(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Err(e)) if e.is_connect() => {
                tracing::warn!(error = %crate::error_chain(&e), "upstream connect failed");
                Err(UpstreamFailure::Connect)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "upstream request failed");
                Err(UpstreamFailure::Protocol)
            }
            Ok(Ok(response)) => Ok(response),
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
