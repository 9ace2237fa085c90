//! The one place that turns a refusal into what the client sees: a small HTML page for
//! browsers, JSON for API clients, with the status each refusal declares here.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Every response body: streamed from the upstream, or one of ours.
pub type ProxyBody = Either<crate::upstream::Body, Full<Bytes>>;

/// Why the proxy answers instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid session, and the client is an API client.
    Unauthenticated,
    /// The upstream could not be reached (connect failure, reset, protocol error).
    BadGateway,
    /// The upstream did not send a response head in time.
    GatewayTimeout,
    /// A route under the auth prefix that does not exist (yet).
    NotFound,
    /// The proxy is shutting down or not ready.
    Unavailable,
    /// A state-changing request from another site (CSRF).
    CrossSite,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::CrossSite => StatusCode::FORBIDDEN,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
            Self::NotFound => "not_found",
            Self::Unavailable => "unavailable",
            Self::CrossSite => "cross_origin",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::Unauthenticated => "Sign in to continue.",
            Self::BadGateway => "The application could not be reached. Please try again shortly.",
            Self::GatewayTimeout => {
                "The application took too long to answer. Please try again shortly."
            }
            Self::NotFound => "There is nothing here.",
            Self::Unavailable => "The service is not available right now.",
            Self::CrossSite => "Cross-site request refused.",
        }
    }

    /// The response: HTML when the client asked for it, else JSON.
    pub fn respond(self, html: bool) -> Response<ProxyBody> {
        let (content_type, body) = if html {
            let body = format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title>\
                 <meta name=\"viewport\" content=\"width=device-width\"></head>\
                 <body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem\">\
                 <h1>{status}</h1><p>{message}</p></body></html>",
                status = self.status(),
                message = self.message()
            );
            ("text/html; charset=utf-8", body)
        } else {
            let body = format!(
                "{{\"error\":\"{}\",\"message\":\"{}\"}}",
                self.code(),
                self.message()
            );
            ("application/json", body)
        };
        let mut response = page(self.status(), content_type, body);
        if self == Self::Unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// A response of ours with the security headers every page gets.
pub fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

/// A `302` to the sign-in page that brings the user back to `path_and_query` afterwards.
pub fn sign_in_redirect(auth_prefix: &str, path_and_query: &str) -> Response<ProxyBody> {
    // Everything but unreserved characters and `/` is encoded, so `rd` is one query value.
    const RD: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    let location = format!(
        "{auth_prefix}/sign_in?rd={}",
        utf8_percent_encode(path_and_query, RD)
    );
    let mut response = page(StatusCode::FOUND, "text/html; charset=utf-8", String::new());
    // Invariant: the prefix is a checked plain path and the rest is percent-encoded ASCII.
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ASCII location"),
    );
    response
}

/// Browsers say they accept HTML; API clients and scripts do not.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_declare_status_and_format() {
        let r = Refusal::GatewayTimeout.respond(false);
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = Refusal::BadGateway.respond(true);
        assert_eq!(r.status(), 502);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn the_return_url_is_one_encoded_value() {
        let r = sign_in_redirect("/auth", "/a b?x=1&rd=https://evil#f");
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()[header::LOCATION],
            "/auth/sign_in?rd=/a%20b%3Fx%3D1%26rd%3Dhttps%3A//evil%23f"
        );
    }
}
