//! The HTTP client the OIDC library uses to reach providers (discovery, JWKS, tokens):
//! hyper over rustls, with a timeout and a cap on response size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::{HttpRequest, HttpResponse};

/// Provider responses are small JSON documents; anything larger is refused.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProviderHttpError {
    #[error("provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("provider unreachable: {0}")]
    Transport(String),
    #[error("provider response unreadable or over 1 MiB")]
    Body,
}

#[derive(Clone)]
pub struct ProviderHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl ProviderHttp {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// One request, as the `openidconnect` crate hands it over.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ProviderHttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| ProviderHttpError::Timeout(self.timeout))?
            .map_err(|e| ProviderHttpError::Transport(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(self.timeout, Limited::new(body, MAX_RESPONSE).collect())
            .await
            .map_err(|_| ProviderHttpError::Timeout(self.timeout))?
            .map_err(|_| ProviderHttpError::Body)?;
        Ok(http::Response::from_parts(parts, body.to_bytes().to_vec()))
    }

    /// GETs a JSON document.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let response = self.send(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        serde_json::from_slice(response.body()).map_err(|e| format!("{url}: {e}"))
    }
}

/// The `openidconnect` crate sends its requests through this.
impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, ProviderHttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
