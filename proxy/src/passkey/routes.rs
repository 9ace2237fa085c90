//! `/auth/passkey/...`: the passkey pages and the JSON endpoints their script calls. Each
//! ceremony's pending state rides in its own short-lived sealed cookie, cleared when the
//! ceremony finishes, whatever the outcome.
//!
//! State-changing routes are POSTs that must come from our own origin: browsers send `Origin`
//! on them, and a cross-site one is refused (the `Lax` cookies would not ride along anyway).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Owner, PasskeyError, Passkeys, PendingLogin, PendingRegistration};
use crate::auth_routes::{AuthRoutes, redirect};
use crate::gateway::Identity;
use crate::metrics::METRICS;
use crate::web::cookies::{self, SameSite};
use crate::web::redirect::ReturnTo;
use crate::web::respond::{self, ProxyBody, Refusal};

type Reply = http::Response<ProxyBody>;

/// The browser side: the WebAuthn API calls and the readable errors. Served as a file so the
/// pages' CSP can stay free of inline script.
const SCRIPT: &str = include_str!("passkey.js");
/// Largest JSON or form body read (a credential with attestation is a few KiB).
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize, Default)]
struct RegisterStart {
    #[serde(default)]
    name: String,
    #[serde(default)]
    invitation: Option<String>,
}

#[derive(Deserialize, Default)]
struct LoginStart {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    rd: Option<String>,
}

impl AuthRoutes {
    fn registration_cookie(&self) -> String {
        format!("{}_pkreg", self.names.session)
    }

    fn passkey_login_cookie(&self) -> String {
        format!("{}_pklogin", self.names.session)
    }

    /// Serves `route`, the path after `/auth/passkey`.
    pub(crate) async fn passkey(
        &self,
        passkeys: &Passkeys,
        req: Request<Incoming>,
        identity: Option<&Identity>,
        route: &str,
        chunks: usize,
        now: u64,
    ) -> Reply {
        let method = req.method().clone();
        if method == Method::POST && !self.same_origin(&req) {
            return json_error(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "Cross-site request refused.",
            );
        }
        match (method, route) {
            (Method::GET | Method::HEAD, "/passkey.js") => script(),
            (Method::GET | Method::HEAD, "" | "/") => self.manage(passkeys, identity, None),
            (Method::GET | Method::HEAD, "/invite") => {
                let token = query_param(req.uri().query(), "token").unwrap_or_default();
                match passkeys.open_invitation(&self.sealer, &token, now) {
                    Ok(invitation) => {
                        self.templates
                            .passkey_invitation(&self.prefix, &invitation.email, &token)
                    }
                    Err(error) => {
                        METRICS.passkey_registration(error.label());
                        tracing::warn!(reason = error.label(), "invitation refused");
                        self.templates.passkey_message(
                            &self.prefix,
                            StatusCode::FORBIDDEN,
                            error.message(),
                        )
                    }
                }
            }
            (Method::POST, "/register/start") => {
                let body: RegisterStart = match read_json(req).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                self.register_start(passkeys, identity, body, now)
            }
            (Method::POST, "/register/finish") => {
                let cookie = self.registration_cookie();
                let pending: Option<PendingRegistration> = cookies::find(req.headers(), &cookie)
                    .and_then(|v| self.sealer.open_value(&cookie, v).ok());
                let mut reply = match read_body(req).await {
                    Ok(body) => match passkeys.finish_registration(pending, &body, now) {
                        Ok(credential) => {
                            METRICS.passkey_registration("success");
                            tracing::info!(
                                invited = credential.invitation.is_some(),
                                "passkey registered"
                            );
                            let next = if credential.invitation.is_some() {
                                format!("{}/sign_in", self.prefix)
                            } else {
                                format!("{}/passkey", self.prefix)
                            };
                            json_ok(serde_json::json!({"ok": true, "redirect": next}))
                        }
                        Err(error) => {
                            failed(error, "registration", |l| METRICS.passkey_registration(l))
                        }
                    },
                    Err(reply) => reply,
                };
                self.clear(&mut reply, &cookie);
                reply
            }
            (Method::POST, "/login/start") => {
                let body: LoginStart = match read_json(req).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                let return_to = body
                    .rd
                    .as_deref()
                    .map_or_else(ReturnTo::root, ReturnTo::from_path);
                match passkeys.start_login(body.email.as_deref(), return_to.as_str(), now) {
                    Ok((options, pending)) => {
                        METRICS.login("passkey", "started");
                        let cookie = self.passkey_login_cookie();
                        self.with_ceremony(options, &cookie, &pending, passkeys)
                    }
                    Err(error) => failed(error, "login", |l| METRICS.login("passkey", l)),
                }
            }
            (Method::POST, "/login/finish") => {
                let cookie = self.passkey_login_cookie();
                let pending: Option<PendingLogin> = cookies::find(req.headers(), &cookie)
                    .and_then(|v| self.sealer.open_value(&cookie, v).ok());
                let mut reply = match read_body(req).await {
                    Ok(body) => match passkeys.finish_login(&self.sealer, pending, &body, now) {
                        Ok(logged_in) => {
                            METRICS.login("passkey", "success");
                            tracing::info!(method = "passkey", "login");
                            let mut reply = json_ok(
                                serde_json::json!({"ok": true, "redirect": logged_in.return_to}),
                            );
                            // A fresh session cookie replaces whatever was there: no fixation.
                            let session = logged_in.session;
                            let sealed = self.sealer.seal(&session);
                            let max_age = session.expires_at.saturating_sub(now);
                            for value in
                                cookies::session_set_cookies(&self.names, &sealed, max_age, chunks)
                            {
                                reply.headers_mut().append(header::SET_COOKIE, value);
                            }
                            reply
                        }
                        Err(error) => failed(error, "login", |l| METRICS.login("passkey", l)),
                    },
                    Err(reply) => reply,
                };
                self.clear(&mut reply, &cookie);
                reply
            }
            (Method::POST, "/remove") => {
                let Some(identity) = identity else {
                    return Refusal::Unauthenticated.respond(true);
                };
                let body = match read_body(req).await {
                    Ok(body) => body,
                    Err(reply) => return reply,
                };
                let id = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "id")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                match passkeys.store().remove(&identity.session.user, &id) {
                    Ok(()) => {
                        tracing::info!("passkey removed");
                        let mut reply = redirect(&format!("{}/passkey", self.prefix));
                        *reply.status_mut() = StatusCode::SEE_OTHER;
                        reply
                    }
                    Err(error) => {
                        let error = PasskeyError::from(error);
                        tracing::warn!(reason = error.label(), %error, "passkey removal failed");
                        self.manage(passkeys, Some(identity), Some(error.message()))
                    }
                }
            }
            _ => Refusal::NotFound.respond(respond::wants_html(req.headers())),
        }
    }

    fn register_start(
        &self,
        passkeys: &Passkeys,
        identity: Option<&Identity>,
        body: RegisterStart,
        now: u64,
    ) -> Reply {
        // Nobody registers anonymously: a session, or an unused, unexpired invitation.
        let owner = match (&body.invitation, identity) {
            (Some(token), _) => match passkeys.open_invitation(&self.sealer, token, now) {
                Ok(invitation) => Owner::from_invitation(&invitation),
                Err(error) => {
                    return failed(error, "registration", |l| METRICS.passkey_registration(l));
                }
            },
            (None, Some(identity)) => Owner::from_session(&identity.session),
            (None, None) => {
                return failed(PasskeyError::NotAllowed, "registration", |l| {
                    METRICS.passkey_registration(l)
                });
            }
        };
        match passkeys.start_registration(owner, &body.name, now) {
            Ok((options, pending)) => {
                METRICS.passkey_registration("started");
                self.with_ceremony(options, &self.registration_cookie(), &pending, passkeys)
            }
            Err(error) => failed(error, "registration", |l| METRICS.passkey_registration(l)),
        }
    }

    /// The browser's options as JSON, with the pending ceremony sealed into `cookie`.
    fn with_ceremony<O: serde::Serialize, P: serde::Serialize>(
        &self,
        options: O,
        cookie: &str,
        pending: &P,
        passkeys: &Passkeys,
    ) -> Reply {
        let Ok(body) = serde_json::to_value(&options) else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Please try again.",
            );
        };
        let mut reply = json_ok(body);
        let value = self.sealer.seal_value(cookie, pending);
        let set =
            cookies::set_cookie_with(&self.names, cookie, &value, passkeys.timeout, SameSite::Lax);
        reply.headers_mut().append(header::SET_COOKIE, set);
        reply
    }

    fn clear(&self, reply: &mut Reply, cookie: &str) {
        let clear = cookies::set_cookie_with(&self.names, cookie, "", 0, SameSite::Lax);
        reply.headers_mut().append(header::SET_COOKIE, clear);
    }

    /// The logged-in user's passkeys, with add and remove; the sign-in page for anyone else.
    fn manage(
        &self,
        passkeys: &Passkeys,
        identity: Option<&Identity>,
        error: Option<&str>,
    ) -> Reply {
        let Some(identity) = identity else {
            return respond::sign_in_redirect(&self.prefix, &format!("{}/passkey", self.prefix));
        };
        let session = &identity.session;
        let account = session.email.as_deref().unwrap_or(&session.user);
        let list = passkeys.store().for_user(&session.user);
        self.templates
            .passkey_list(&self.prefix, account, &list, error)
    }
}

/// Logs a failed step, counts it, and answers with its status and sentence.
fn failed(error: PasskeyError, step: &'static str, count: impl FnOnce(&'static str)) -> Reply {
    let label = error.label();
    count(label);
    if matches!(error, PasskeyError::CounterRegressed) {
        tracing::error!(
            step,
            reason = label,
            "passkey signature counter went backwards: refused"
        );
    } else {
        tracing::warn!(step, reason = label, %error, "passkey ceremony failed");
    }
    let status = match &error {
        PasskeyError::NotAllowed => StatusCode::UNAUTHORIZED,
        PasskeyError::Denied(_) | PasskeyError::InvitationUsed | PasskeyError::Invitation(_) => {
            StatusCode::FORBIDDEN
        }
        e if e.is_server_fault() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    json_error(status, label, error.message())
}

fn json_ok(body: serde_json::Value) -> Reply {
    respond::page(StatusCode::OK, "application/json", body.to_string())
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"error": code, "message": message});
    respond::page(status, "application/json", body.to_string())
}

fn script() -> Reply {
    let mut reply = respond::page(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        SCRIPT.to_owned(),
    );
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    reply
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "Request too large.",
        )),
    }
}

/// A JSON body; an empty one is the type's default. JSON only, which a cross-site form
/// cannot send without a CORS preflight we never answer.
async fn read_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, Reply> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "malformed",
            "JSON expected.",
        ));
    }
    let body = read_body(req).await?;
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|_| json_error(StatusCode::BAD_REQUEST, "malformed", "Malformed request."))
}
