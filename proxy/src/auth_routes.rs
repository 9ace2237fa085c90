//! The proxy's own routes under the auth prefix: sign-in, the OIDC callback, sign-out,
//! signed-out and userinfo. They never reach the upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::gateway::Identity;
use crate::metrics::METRICS;
use crate::oidc::{Callback, LoginError, Oidc, PendingLogin};
use crate::pages::Templates;
use crate::session::{Session, SessionSealer};
use crate::web::cookies::{self, CookieNames, SameSite};
use crate::web::redirect::ReturnTo;
use crate::web::respond::{self, ProxyBody, Refusal};

/// Largest `form_post` callback body we read.
const MAX_FORM: usize = 16 * 1024;

pub struct AuthRoutes {
    pub prefix: String,
    pub public_url: String,
    pub oidc: Arc<Oidc>,
    pub sealer: SessionSealer,
    pub names: CookieNames,
    pub templates: Templates,
    /// `None` when passkeys are off.
    pub passkeys: Option<Arc<crate::passkey::Passkeys>>,
}

type Reply = Response<ProxyBody>;

impl AuthRoutes {
    fn login_cookie(&self) -> String {
        format!("{}_login", self.names.session)
    }

    /// Serves `route` (the path after the prefix).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        identity: Option<&Identity>,
        chunks: usize,
        now: u64,
    ) -> Reply {
        let route = req.uri().path()[self.prefix.len()..].to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        match (req.method().clone(), route.as_str()) {
            (Method::GET | Method::HEAD, "/sign_in") => self.sign_in(&query, identity, now).await,
            (Method::GET | Method::POST, "/oauth2/callback") => {
                self.callback(req, chunks, now).await
            }
            (Method::GET | Method::HEAD, "/oauth2/sign_out") => {
                self.templates.sign_out(&self.prefix)
            }
            (Method::POST, "/oauth2/sign_out") => {
                // Another site must not sign our users out (login-state CSRF): only our own
                // pages' forms may, which browsers mark as same-origin.
                if !self.same_origin(&req) {
                    return Refusal::CrossSite.respond(respond::wants_html(req.headers()));
                }
                self.sign_out(identity.map(|i| &i.session), chunks)
            }
            (Method::GET | Method::HEAD, "/signed_out") => self.templates.signed_out(&self.prefix),
            (Method::GET | Method::HEAD, "/userinfo") => userinfo(identity),
            (_, r) if r == "/passkey" || r.starts_with("/passkey/") => match &self.passkeys {
                Some(passkeys) => {
                    let rest = &r["/passkey".len()..];
                    self.passkey(passkeys, req, identity, rest, chunks, now)
                        .await
                }
                None => Refusal::NotFound.respond(respond::wants_html(req.headers())),
            },
            _ => Refusal::NotFound.respond(respond::wants_html(req.headers())),
        }
    }

    fn providers(&self) -> Vec<(&str, &str)> {
        self.oidc
            .providers()
            .iter()
            .map(|p| (p.config.name.as_str(), p.config.display_name()))
            .collect()
    }

    /// Without `provider`: the sign-in page. With it: off to the provider.
    async fn sign_in(&self, query: &str, identity: Option<&Identity>, now: u64) -> Reply {
        let param = |key: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let return_to = param("rd").map_or_else(ReturnTo::root, |rd| ReturnTo::from_path(&rd));
        let Some(provider) = param("provider") else {
            if identity.is_some() && param("rd").is_some() {
                return redirect(return_to.as_str());
            }
            return self.templates.sign_in(
                &self.prefix,
                &self.providers(),
                return_to.as_str(),
                None,
            );
        };
        match self.oidc.start(&provider, return_to.clone(), now).await {
            Ok((url, pending)) => {
                let mut reply = redirect(&url);
                let form_post = self.oidc.provider(&provider).is_some_and(|p| {
                    p.config.response_mode == crate::config::ResponseMode::FormPost
                });
                // A form_post callback is a cross-site POST: only SameSite=None cookies ride along.
                let same_site = if form_post {
                    SameSite::None
                } else {
                    SameSite::Lax
                };
                let max_age = pending.expires_at.saturating_sub(now);
                let value = self.sealer.seal_value(&self.login_cookie(), &pending);
                let cookie = cookies::set_cookie_with(
                    &self.names,
                    &self.login_cookie(),
                    &value,
                    max_age,
                    same_site,
                );
                reply.headers_mut().append(header::SET_COOKIE, cookie);
                METRICS.login(&provider, "started");
                reply
            }
            Err(error) => {
                let known = if self.oidc.provider(&provider).is_some() {
                    provider.as_str()
                } else {
                    "unknown"
                };
                self.login_failed(known, error, return_to.as_str())
            }
        }
    }

    async fn callback(&self, req: Request<Incoming>, chunks: usize, now: u64) -> Reply {
        let login_cookie = self.login_cookie();
        let pending: Option<PendingLogin> = cookies::find(req.headers(), &login_cookie)
            .and_then(|value| self.sealer.open_value(&login_cookie, value).ok());
        let provider = pending
            .as_ref()
            .map_or("unknown".to_owned(), |p| p.provider.clone());
        let callback = match read_callback(req).await {
            Ok(callback) => callback,
            Err(reply) => return reply,
        };
        let mut reply = match self.oidc.finish(&self.sealer, pending, callback, now).await {
            Ok((session, return_to)) => {
                METRICS.login(&provider, "success");
                tracing::info!(provider = %provider, method = %session.method, "login");
                let mut reply = redirect(return_to.as_str());
                // A fresh session cookie replaces whatever was there: no session fixation.
                let sealed = self.sealer.seal(&session);
                let max_age = session.expires_at.saturating_sub(now);
                for value in cookies::session_set_cookies(&self.names, &sealed, max_age, chunks) {
                    reply.headers_mut().append(header::SET_COOKIE, value);
                }
                reply
            }
            Err(error) => self.login_failed(&provider, error, "/"),
        };
        // The pending login is single-use whatever happened.
        let clear = cookies::set_cookie_with(&self.names, &login_cookie, "", 0, SameSite::Lax);
        reply.headers_mut().append(header::SET_COOKIE, clear);
        reply
    }

    fn login_failed(&self, provider: &str, error: LoginError, return_to: &str) -> Reply {
        let label = error.label();
        METRICS.login(provider, label);
        tracing::warn!(provider, reason = label, %error, "login failed");
        match &error {
            LoginError::Denied { account, reason } => {
                self.templates
                    .denied(&self.prefix, account, &reason.to_string())
            }
            _ => {
                let mut reply = self.templates.sign_in(
                    &self.prefix,
                    &self.providers(),
                    return_to,
                    Some(error.message()),
                );
                if matches!(error, LoginError::ProviderUnavailable(_)) {
                    *reply.status_mut() = StatusCode::BAD_GATEWAY;
                }
                reply
            }
        }
    }

    /// A POST from our own origin. Fetch metadata (`Sec-Fetch-Site`), when sent, must say
    /// same-origin; `Origin` must be ours, or `null` (what a form POST from our own
    /// `no-referrer` pages carries) when fetch metadata vouches for it. Ours is `public_url`,
    /// or without one the request's own `Host`.
    pub(crate) fn same_origin<B>(&self, req: &Request<B>) -> bool {
        let site = req.headers().get("sec-fetch-site");
        let origin = req.headers().get(header::ORIGIN);
        let ours = |origin: &HeaderValue| {
            if !self.public_url.is_empty() {
                return origin.as_bytes() == self.public_url.as_bytes();
            }
            let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
            let origin = origin.as_bytes();
            let authority = origin
                .strip_prefix(b"https://")
                .or_else(|| origin.strip_prefix(b"http://"));
            authority.is_some() && authority == host
        };
        match (site, origin) {
            (Some(site), _) if site != "same-origin" && site != "none" => false,
            (_, Some(origin)) if ours(origin) => true,
            (Some(_), Some(origin)) => origin == "null",
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    /// Clears our cookies, then continues with the provider's logout where it has one.
    fn sign_out(&self, session: Option<&Session>, chunks: usize) -> Reply {
        let signed_out = format!("{}{}/signed_out", self.public_url, self.prefix);
        let target = session.and_then(|s| self.oidc.logout_url(s, &signed_out));
        let mut reply = redirect(
            target
                .as_deref()
                .unwrap_or(&format!("{}/signed_out", self.prefix)),
        );
        for value in cookies::clear_session(&self.names, chunks) {
            reply.headers_mut().append(header::SET_COOKIE, value);
        }
        if session.is_some() {
            tracing::info!(provider_logout = target.is_some(), "sign out");
        }
        reply
    }
}

/// The callback's parameters: the query for GET, the form body for `form_post`.
async fn read_callback(req: Request<Incoming>) -> Result<Callback, Reply> {
    let parse = |bytes: &[u8]| {
        let mut callback = Callback::default();
        for (key, value) in form_urlencoded::parse(bytes) {
            let slot = match key.as_ref() {
                "code" => &mut callback.code,
                "state" => &mut callback.state,
                "error" => &mut callback.error,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        callback
    };
    if req.method() != Method::POST {
        return Ok(parse(req.uri().query().unwrap_or("").as_bytes()));
    }
    let body: Bytes = match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Refusal::NotFound.respond(true)),
    };
    Ok(parse(&body))
}

fn userinfo(identity: Option<&Identity>) -> Reply {
    let Some(identity) = identity else {
        return Refusal::Unauthenticated.respond(false);
    };
    let s = &identity.session;
    let body = serde_json::json!({
        "user": s.user,
        "email": s.email,
        "groups": s.groups,
        "method": s.method,
        "auth_time": s.auth_time,
        "expires_at": s.expires_at,
    });
    respond::page(StatusCode::OK, "application/json", body.to_string())
}

/// A `302` to a URL we built or validated.
pub fn redirect(location: &str) -> Reply {
    let mut reply = respond::page(StatusCode::FOUND, "text/html; charset=utf-8", String::new());
    match HeaderValue::from_str(location) {
        Ok(value) => reply.headers_mut().insert(header::LOCATION, value),
        Err(_) => reply
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/")),
    };
    reply
}
