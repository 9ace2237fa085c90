//! The request path, top to bottom in one place. Each stage is one call; the comment on it
//! says why it sits where it does.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::auth_routes::AuthRoutes;
use crate::config::{AccessRules, EmailAddress, PathRule, ProxyConfig};
use crate::metrics::{METRICS, SessionOutcome, UpstreamFailure};
use crate::oidc::refresh::{self, Refreshed};
use crate::session::cache::ValidatedCookies;
use crate::session::{Rejected, Session, SessionSealer};
use crate::upstream::{Upstream, UpstreamClient};
use crate::web::cookies::{self, CookieNames, ScannedCookies};
use crate::web::headers::{self, HeaderRules, IdentityValues, Peer};
use crate::web::path;
use crate::web::respond::{self, ProxyBody, Refusal};

/// A session that opened, with its identity headers built once and cached with it.
pub struct Identity {
    pub session: Session,
    pub headers: IdentityValues,
}

impl Identity {
    /// `None` when a claim cannot be a header value (then the session is treated as invalid).
    fn new(session: Session) -> Option<Self> {
        let header = |text: &str| HeaderValue::from_str(text).ok();
        let headers = IdentityValues {
            user: header(&session.user)?,
            email: match &session.email {
                Some(email) => Some(header(email)?),
                None => None,
            },
            groups: match session.groups.is_empty() {
                true => None,
                false => Some(header(&session.groups.join(","))?),
            },
        };
        Some(Self { session, headers })
    }
}

/// Everything a request needs, built once at startup and shared by all connections.
pub struct Gateway {
    sealer: SessionSealer,
    validated: ValidatedCookies<Identity>,
    cookie_names: CookieNames,
    header_rules: HeaderRules,
    upstream: Upstream,
    auth: AuthRoutes,
    access: AccessRules,
    skip_auth: Vec<PathRule>,
    access_log: bool,
}

impl Gateway {
    pub fn new(
        config: &ProxyConfig,
        sealer: SessionSealer,
        upstream: Upstream,
        auth: AuthRoutes,
    ) -> Self {
        Self {
            validated: ValidatedCookies::new(u64::from(config.session.cache_kib) * 1024),
            cookie_names: auth.names.clone(),
            header_rules: HeaderRules::new(
                &config.identity_headers,
                config.server.trusted_proxies.clone(),
            ),
            access: config.access.clone(),
            skip_auth: config.auth.skip_auth.clone(),
            access_log: config.runtime.access_log,
            sealer,
            upstream,
            auth,
        }
    }

    pub fn passkeys(&self) -> Option<&Arc<crate::passkey::Passkeys>> {
        self.auth.passkeys.as_ref()
    }

    pub fn header_rules(&self) -> &HeaderRules {
        &self.header_rules
    }

    /// The shared upstream settings; each serving thread takes its own client from them.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Handles one request from a client, forwarding through this thread's `pool`.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        pool: &UpstreamClient,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path_for_log = self.access_log.then(|| req.uri().path().to_owned());

        let (response, outcome) = self.route(req, peer, pool).await;

        METRICS.response(response.status().as_u16(), started.elapsed());
        if let Some(path) = path_for_log {
            // Path only: queries can carry tokens, and cookies never appear here.
            tracing::info!(
                target: "vouchrs::access",
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                session = outcome.label(),
                peer = %peer.addr,
            );
        }
        response
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        pool: &UpstreamClient,
    ) -> (Response<ProxyBody>, SessionOutcome) {
        let now = unix_now();
        let html = respond::wants_html(req.headers());

        // Compatibility route of the original Vouchrs; answered before any session work.
        if req.uri().path() == "/ping" {
            return (plain(StatusCode::OK, "OK"), SessionOutcome::Absent);
        }

        // Read our cookies once: the session to open, and whether the Cookie header must change.
        let scanned = cookies::scan(req.headers(), &self.cookie_names);
        let (mut identity, mut outcome, cache_hit) = self.open_session(&scanned, now);
        // A passkey session lives only as long as its credential: one removed (or passkeys
        // turned off) ends it here, before anything else sees the identity.
        let mut end_session = false;
        if identity
            .as_ref()
            .is_some_and(|i| !self.credential_live(&i.session))
        {
            (identity, outcome, end_session) = (None, SessionOutcome::Invalid, true);
        }
        let chunks = scanned.chunk_count();
        let strip_cookies = scanned.needs_rewrite;
        METRICS.session(outcome, cache_hit);

        // Provider tokens about to expire are refreshed first, so the upstream never sees an
        // identity the provider no longer vouches for. A refused refresh ends the session; an
        // unreachable provider leaves it as it is.
        let mut reseal: Option<Session> = None;
        if let Some(current) = identity.as_ref().filter(|i| refresh::due(&i.session, now)) {
            // Boxed, like the auth routes below: hyper keeps one allocation the size of this
            // request future for every open connection, idle ones included, so the rare OIDC
            // paths (token requests, JWKS fetches) must not be inlined into it.
            match Box::pin(self.auth.oidc.refresh(&current.session, now)).await {
                Refreshed::Renewed(session) => match Identity::new(session) {
                    Some(refreshed) => {
                        reseal = Some(refreshed.session.clone());
                        identity = Some(Arc::new(refreshed));
                    }
                    None => {
                        (identity, outcome, end_session) = (None, SessionOutcome::Invalid, true)
                    }
                },
                Refreshed::Ended => {
                    (identity, outcome, end_session) = (None, SessionOutcome::Expired, true)
                }
                Refreshed::Unavailable => {}
            }
        }

        // Our own routes live under the auth prefix and never reach the upstream.
        if self.is_auth_route(req.uri().path()) {
            return (
                Box::pin(self.auth.handle(req, identity.as_deref(), chunks, now)).await,
                outcome,
            );
        }

        // A valid session of someone the access rules do not admit (any more): 403.
        if outcome == SessionOutcome::Denied {
            let account = scanned_account(identity.as_deref());
            return (
                self.auth.templates.denied(
                    &self.auth.prefix,
                    &account,
                    "this account is not on the allow-list",
                ),
                outcome,
            );
        }

        // No session: only canonical paths matching a skip rule go on, without identity.
        if identity.is_none() && !self.skips_auth(req.uri().path()) {
            let mut response = if html && matches!(*req.method(), Method::GET | Method::HEAD) {
                let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
                respond::sign_in_redirect(&self.auth.prefix, target)
            } else {
                Refusal::Unauthenticated.respond(html)
            };
            if end_session {
                for value in cookies::clear_session(&self.cookie_names, chunks) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            return (response, outcome);
        }

        // Our cookies never reach the upstream; the rest of the Cookie header does.
        if strip_cookies {
            match cookies::upstream_cookie(req.headers(), &self.cookie_names) {
                Some(value) => req.headers_mut().insert(header::COOKIE, value),
                None => req.headers_mut().remove(header::COOKIE),
            };
        }

        // A WebSocket handshake keeps its Upgrade through the header rules below.
        let upgrade = websocket_upgrade(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));

        // Identity and forwarding headers: spoofed ones out, ours in.
        self.header_rules.prepare_request(
            req.headers_mut(),
            peer,
            identity.as_ref().map(|i| &i.headers),
        );
        if let Some(protocol) = upgrade {
            req.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            req.headers_mut().insert(header::UPGRADE, protocol);
        }

        // Forward; the upstream's answer streams back as it arrives.
        self.upstream.retarget(&mut req);
        let mut response = match pool.send(req).await {
            Ok(response) => response,
            Err(failure) => {
                METRICS.upstream_failure(failure);
                let refusal = match failure {
                    UpstreamFailure::Timeout => Refusal::GatewayTimeout,
                    _ => Refusal::BadGateway,
                };
                return (refusal.respond(html), outcome);
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client)) = (switching, client_upgrade) {
            splice_upgrade(client, hyper::upgrade::on(&mut response));
        }
        headers::prepare_response(response.headers_mut(), switching);
        let mut response = response.map(Either::Left);

        // A refreshed session, or one old enough for sliding renewal, gets a fresh cookie.
        let reseal = reseal.or_else(|| {
            identity
                .as_ref()
                .and_then(|i| self.sealer.renewal(&i.session, now))
        });
        if let Some(session) = reseal {
            let sealed = self.sealer.seal(&session);
            let max_age = session.expires_at.saturating_sub(now);
            for value in cookies::session_set_cookies(&self.cookie_names, &sealed, max_age, chunks)
            {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            METRICS.session_renewed();
        }
        (response, outcome)
    }

    /// Opens the first session cookie that is valid, consulting the cache first. Returns the
    /// identity, the outcome for metrics, and whether the cache answered. A denied session
    /// comes back with its identity so the 403 page can name the account.
    fn open_session(
        &self,
        scanned: &ScannedCookies<'_>,
        now: u64,
    ) -> (Option<Arc<Identity>>, SessionOutcome, bool) {
        let ring = self.sealer.ring();
        let generation = ring.generation();
        let mut outcome = SessionOutcome::Absent;
        for value in scanned.session_values() {
            if let Some(hit) = self.validated.get(&value, now, generation) {
                return (Some(hit), SessionOutcome::Valid, true);
            }
            match self.sealer.open_with(&ring, &value, now) {
                Ok(session) => {
                    let Some(identity) = Identity::new(session) else {
                        outcome = SessionOutcome::Invalid;
                        continue;
                    };
                    let email = identity
                        .session
                        .email
                        .as_deref()
                        .and_then(|e| EmailAddress::parse(e).ok());
                    if self
                        .access
                        .admits(email.as_ref(), &identity.session.groups)
                        .is_err()
                    {
                        return (Some(Arc::new(identity)), SessionOutcome::Denied, false);
                    }
                    let identity = Arc::new(identity);
                    self.validated.insert(
                        &value,
                        generation,
                        identity.session.expires_at,
                        identity.clone(),
                    );
                    return (Some(identity), SessionOutcome::Valid, false);
                }
                Err(Rejected::Expired) => outcome = SessionOutcome::Expired,
                Err(Rejected::Invalid) if outcome == SessionOutcome::Absent => {
                    outcome = SessionOutcome::Invalid
                }
                Err(Rejected::Invalid) => {}
            }
        }
        (None, outcome, false)
    }

    /// False for a passkey session whose credential is gone; true for any other session.
    /// An in-memory lookup, done on cache hits too.
    fn credential_live(&self, session: &Session) -> bool {
        match session.passkey_credential() {
            None => true,
            Some(id) => self.auth.passkeys.as_ref().is_some_and(|p| p.is_live(id)),
        }
    }

    fn is_auth_route(&self, path: &str) -> bool {
        path.strip_prefix(self.auth.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn skips_auth(&self, raw_path: &str) -> bool {
        path::canonical(raw_path)
            .is_some_and(|p| self.skip_auth.iter().any(|rule| rule.matches(&p)))
    }
}

fn scanned_account(identity: Option<&Identity>) -> String {
    identity.map_or_else(String::new, |i| {
        i.session
            .email
            .clone()
            .unwrap_or_else(|| i.session.user.clone())
    })
}

/// The requested protocol when this is an HTTP/1.1 `Connection: upgrade` request.
fn websocket_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if wants && req.version() == http::Version::HTTP_11 {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Joins the client's and the upstream's upgraded connections and copies both ways.
fn splice_upgrade(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
            tracing::debug!("upgrade abandoned by one side");
            return;
        };
        let _ =
            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream))
                .await;
    });
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    respond::page(status, "text/plain; charset=utf-8", text.to_owned())
}

/// Seconds since the Unix epoch; the only clock the request path reads.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
