//! A small real upstream for the integration tests: an HTTP/1.1 server on a loopback port
//! that echoes what it received, streams large bodies, sleeps, redirects, sets cookies and
//! echoes WebSocket messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A body of `left` zero bytes, sent in 64 KiB frames without a known length (chunked).
pub struct Zeros {
    pub left: usize,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        const CHUNK: usize = 64 * 1024;
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }
}

pub type UpstreamBody = Either<Full<Bytes>, Zeros>;

pub struct TestUpstream {
    pub addr: SocketAddr,
    /// Requests that have arrived (counted before any delay), for in-flight tests.
    pub arrived: Arc<AtomicUsize>,
    /// The request target of every request that arrived, in order (hostile-input tests check
    /// what got through, not only the status the client saw).
    pub targets: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// The same upstream over TLS with `cert_pem`/`key_pem` (HTTP/1.1 only).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let counter = arrived.clone();
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = targets.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(req.uri().to_string());
                        counter.fetch_add(1, Ordering::SeqCst);
                        handle(req)
                    });
                    let builder = http1::Builder::new();
                    let _ = match tls {
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await
                        }
                    };
                });
            }
        });
        Self {
            addr,
            arrived,
            targets,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn json(value: serde_json::Value) -> Response<UpstreamBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<UpstreamBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match path.as_str() {
        "/upload" => {
            let mut total = 0usize;
            let mut frames = 0usize;
            while let Some(frame) = req.body_mut().frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    total += data.len();
                    frames += 1;
                }
            }
            json(serde_json::json!({ "bytes": total, "frames": frames }))
        }
        "/download" => {
            let n = query_param(&req, "bytes").unwrap_or(0) as usize;
            Response::new(Either::Right(Zeros { left: n }))
        }
        "/delay" => {
            tokio::time::sleep(Duration::from_millis(query_param(&req, "ms").unwrap_or(0))).await;
            json(serde_json::json!({ "slept": true }))
        }
        "/cookies" => {
            let mut r = json(serde_json::json!({}));
            for c in ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3"] {
                r.headers_mut()
                    .append(header::SET_COOKIE, c.parse().unwrap());
            }
            r
        }
        "/redirect" => {
            let mut r = json(serde_json::json!({}));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut()
                .insert(header::LOCATION, "/elsewhere".parse().unwrap());
            r
        }
        "/ws" => return Ok(websocket_echo(&mut req)),
        _ => {
            // Echo: method, raw target, version and every header (repeats included).
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body_len = req
                .body_mut()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            json(serde_json::json!({
                "method": req.method().as_str(),
                "target": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
                "body_len": body_len,
            }))
        }
    };
    Ok(response)
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<UpstreamBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .cloned()
        .unwrap_or(header::HeaderValue::from_static(""));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                let _ = ws.send(msg).await;
            }
        }
    });
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, "upgrade".parse().unwrap());
    h.insert(header::UPGRADE, "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    r
}
