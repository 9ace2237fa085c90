//! The admin port: `/livez` (the process answers), `/readyz` (initialised: leading with a
//! synced cache, or standing by) and `/metrics` (Prometheus text). Plain HTTP/1.1 on its own
//! port, kept apart from anything a gateway serves.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the admin endpoints report.
pub struct Admin {
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Refreshes gauges computed from the controller's cache, just before a scrape.
    pub before_scrape: Box<dyn Fn(&Metrics) + Send + Sync>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            metrics,
            before_scrape: Box::new(|_| {}),
        }
    }

    /// The response for `path`: status, content type, body.
    pub fn respond(&self, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/livez" => (StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => {
                (StatusCode::OK, TEXT, "ok\n".into())
            }
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "starting\n".into()),
            "/metrics" => {
                (self.before_scrape)(&self.metrics);
                (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.metrics.encode(),
                )
            }
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
        }
    }
}

/// Serves the admin endpoints on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    admin: Arc<Admin>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    // The bound address, so that port 0 (tests, the local demo) can be found in the log.
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin endpoints listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (status, content_type, body) = admin.respond(request.uri().path());
                let response = Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body)));
                async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag_and_metrics_are_served() {
        let admin = Admin::new(Arc::new(Metrics::default()));
        assert_eq!(admin.respond("/livez").0, StatusCode::OK);
        assert_eq!(admin.respond("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        admin.ready.store(true, Ordering::Relaxed);
        assert_eq!(admin.respond("/readyz").0, StatusCode::OK);
        let (status, _, body) = admin.respond("/metrics");
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("vouchrs_operator_reconciles_total"));
        assert_eq!(admin.respond("/other").0, StatusCode::NOT_FOUND);
    }
}
