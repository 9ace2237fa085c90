//! The admin listener: `/healthz` (alive), `/readyz` (ready; 503 once draining), `/metrics`
//! and `/ping`. Kept apart from application traffic so probes and scrapes never shadow an
//! application path and are not exposed on the public port.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::METRICS;

/// Flipped once when shutdown starts; readiness reads it.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serves the admin routes until the process exits.
pub async fn serve(listener: TcpListener, draining: Draining) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &draining);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, draining: &Draining) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" | "/livez" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/ping" => (StatusCode::OK, "text/plain", "OK".into()),
        "/readyz" if draining.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".into()),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            METRICS.render(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
