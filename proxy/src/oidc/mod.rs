//! OpenID Connect login: the authorization code flow with PKCE (S256), `state` and `nonce`
//! kept in a short-lived sealed cookie bound to the browser, ID tokens verified (signature
//! against the provider's JWKS, `iss`, `aud`, `exp`, `iat`, `nonce`; fail closed), refresh,
//! and RP-initiated logout.
//!
//! The steps are types consumed in order: [`Oidc::start`] makes a [`PendingLogin`] (sealed
//! into a cookie), and [`Oidc::finish`] consumes it with the callback into a [`Session`].

mod apple;
pub mod http;
mod provider;
pub mod refresh;

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    Scope, TokenResponse,
};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::config::{AccessRules, EmailAddress, ProviderKind, ProxyConfig, ResponseMode};
use crate::session::{ProviderTokens, Session, SessionSealer};
use crate::web::redirect::ReturnTo;
use http::ProviderHttp;
pub use provider::{Provider, ProviderSetupError};
pub use refresh::Refreshes;

/// A login in progress, sealed into the `…_login` cookie between sign-in and callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub expires_at: u64,
}

/// What the provider sent back to the callback (query for GET, form for `form_post`).
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// Why a login did not produce a session. Each has a fixed metric label and user message;
/// provider-side details go to the log, never to the page.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("unknown provider")]
    UnknownProvider,
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    #[error("no login in progress in this browser, or it expired")]
    StateExpired,
    #[error("state does not match this browser's login")]
    StateMismatch,
    #[error("this login response was already used")]
    Replayed,
    #[error("the provider refused: {0}")]
    ProviderError(String),
    #[error("code exchange failed: {0}")]
    Exchange(String),
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("access denied for {account}: {reason}")]
    Denied {
        account: String,
        reason: crate::access::Denied,
    },
}

impl LoginError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::ProviderUnavailable(_) => "provider_unavailable",
            Self::StateExpired => "state_expired",
            Self::StateMismatch => "state_mismatch",
            Self::Replayed => "replayed",
            Self::ProviderError(_) => "provider_error",
            Self::Exchange(_) => "exchange_failed",
            Self::IdToken(_) => "id_token_invalid",
            Self::Denied { .. } => "denied",
        }
    }

    /// The sentence shown on the sign-in page.
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "That sign-in method does not exist. Choose one below.",
            Self::ProviderUnavailable(_) => {
                "The identity provider cannot be reached right now. Please try again shortly."
            }
            Self::StateExpired => {
                "Your sign-in took too long or was started in another browser. Please start again."
            }
            Self::StateMismatch | Self::Replayed => {
                "That sign-in response is not valid for this browser. Please start again."
            }
            Self::ProviderError(_) => {
                "The identity provider did not sign you in. Please try again."
            }
            Self::Exchange(_) | Self::IdToken(_) => {
                "The identity provider's answer could not be verified. Please try again."
            }
            Self::Denied { .. } => "Your account is not allowed to use this application.",
        }
    }
}

/// All configured providers and the state shared by their logins.
pub struct Oidc {
    providers: Vec<Arc<Provider>>,
    http: ProviderHttp,
    access: AccessRules,
    login_timeout: u64,
    /// States already used at the callback: a response replayed in this process is refused.
    used_states: Cache<String, ()>,
    pub refreshes: Refreshes,
}

/// Leeway for clocks between us and the provider.
const CLOCK_SKEW_SECS: u64 = 60;

impl Oidc {
    pub fn new(
        config: &ProxyConfig,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ProviderSetupError> {
        let public = config.server.public_url.as_ref().map_or("", |u| u.as_str());
        let redirect_uri = format!("{public}{}/oauth2/callback", config.auth.prefix.as_str());
        let providers = config
            .oidc
            .providers
            .iter()
            .map(|p| Provider::new(p.clone(), &redirect_uri).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            providers,
            http: ProviderHttp::new(tls, Duration::from_secs(10)),
            access: config.access.clone(),
            login_timeout: config.oidc.login_timeout.0.as_secs(),
            used_states: Cache::new(65_536),
            refreshes: Refreshes::default(),
        })
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers
            .iter()
            .find(|p| p.config.name.as_str() == name)
    }

    pub fn access(&self) -> &AccessRules {
        &self.access
    }

    /// Starts a login: the provider URL to send the browser to, and the pending state to seal.
    pub async fn start(
        &self,
        provider: &str,
        return_to: ReturnTo,
        now: u64,
    ) -> Result<(String, PendingLogin), LoginError> {
        let provider = self.provider(provider).ok_or(LoginError::UnknownProvider)?;
        let discovered = provider
            .discovered(&self.http)
            .await
            .map_err(LoginError::ProviderUnavailable)?;
        let config = &provider.config;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .add_scopes(
                config
                    .scopes
                    .iter()
                    .filter(|s| *s != "openid")
                    .map(|s| Scope::new(s.clone())),
            );
        if config.response_mode == ResponseMode::FormPost {
            request = request.add_extra_param("response_mode", "form_post");
        }
        if config.kind == ProviderKind::Google && config.refresh {
            request = request
                .add_extra_param("access_type", "offline")
                .add_extra_param("prompt", "consent");
        }
        for (name, value) in &config.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state, nonce) = request.url();
        let pending = PendingLogin {
            provider: config.name.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to: return_to.as_str().to_owned(),
            expires_at: now + self.login_timeout,
        };
        Ok((url.to_string(), pending))
    }

    /// Finishes a login from the callback: checks the state against this browser's pending
    /// login, exchanges the code, verifies the ID token and applies the access rules.
    pub async fn finish(
        &self,
        sealer: &SessionSealer,
        pending: Option<PendingLogin>,
        callback: Callback,
        now: u64,
    ) -> Result<(Session, ReturnTo), LoginError> {
        let pending = pending
            .filter(|p| now < p.expires_at)
            .ok_or(LoginError::StateExpired)?;
        let state = callback.state.unwrap_or_default();
        if !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(LoginError::StateMismatch);
        }
        if self.used_states.get(&pending.state).is_some() {
            return Err(LoginError::Replayed);
        }
        self.used_states.insert(pending.state.clone(), ());
        if let Some(error) = callback.error {
            return Err(LoginError::ProviderError(error.chars().take(64).collect()));
        }
        let code = callback
            .code
            .ok_or_else(|| LoginError::ProviderError("no code".into()))?;
        let (provider, client) = self.client_for(&pending.provider, now).await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Exchange(crate::error_chain(&e)))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| LoginError::IdToken("no ID token in the response".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = self.verify(provider, id_token, Some(&nonce), now).await?;
        let session = self.session_from(
            sealer,
            provider,
            &claims,
            &tokens,
            id_token.to_string(),
            now,
        )?;
        Ok((session, ReturnTo::from_path(&pending.return_to)))
    }

    /// Verifies an ID token (re-fetching the JWKS once if it names an unknown key) and returns
    /// all of its claims. With `nonce` `None` (refresh), a nonce must be absent or is ignored.
    async fn verify(
        &self,
        provider: &Provider,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: Option<&Nonce>,
        now: u64,
    ) -> Result<Map<String, Value>, LoginError> {
        let mut refetched = false;
        loop {
            let discovered = provider
                .discovered(&self.http)
                .await
                .map_err(LoginError::ProviderUnavailable)?;
            let entra_template = provider.config.kind == ProviderKind::Entra
                && discovered.metadata.issuer().as_str().contains("{tenantid}");
            let verifier = discovered
                .client
                .id_token_verifier()
                .require_issuer_match(!entra_template)
                .set_issue_time_verifier_fn(move |iat| {
                    let iat = iat.timestamp().max(0) as u64;
                    if iat > now + CLOCK_SKEW_SECS {
                        Err("issued in the future".into())
                    } else {
                        Ok(())
                    }
                });
            let result = match nonce {
                Some(nonce) => id_token.claims(&verifier, nonce).map(|_| ()),
                None => id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {
                    let claims = payload(&id_token.to_string())
                        .ok_or_else(|| LoginError::IdToken("payload".into()))?;
                    if entra_template {
                        let tid = claims.get("tid").and_then(Value::as_str).unwrap_or("");
                        let want = discovered
                            .metadata
                            .issuer()
                            .as_str()
                            .replace("{tenantid}", tid);
                        if tid.is_empty()
                            || claims.get("iss").and_then(Value::as_str) != Some(want.as_str())
                        {
                            return Err(LoginError::IdToken(
                                "issuer does not match the tenant".into(),
                            ));
                        }
                    }
                    return Ok(claims);
                }
                Err(openidconnect::ClaimsVerificationError::SignatureVerification(e))
                    if !refetched =>
                {
                    // Keys rotate: an unknown key id is worth one fresh look at the JWKS.
                    refetched = true;
                    if !provider.refresh_jwks(&self.http).await {
                        return Err(LoginError::IdToken(e.to_string()));
                    }
                }
                Err(e) => return Err(LoginError::IdToken(e.to_string())),
            }
        }
    }

    /// Turns verified claims into a session, applying the access rules.
    fn session_from(
        &self,
        sealer: &SessionSealer,
        provider: &Provider,
        claims: &Map<String, Value>,
        tokens: &openidconnect::core::CoreTokenResponse,
        id_token: String,
        now: u64,
    ) -> Result<Session, LoginError> {
        let config = &provider.config;
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let (email, groups) = self.admitted(provider, claims, None)?;
        let mut session = sealer.start(user, email, groups, format!("oidc:{}", config.name), now);
        session.tokens = Some(ProviderTokens {
            provider: config.name.to_string(),
            refresh_token: tokens
                .refresh_token()
                .filter(|_| config.refresh)
                .map(|t| t.secret().clone()),
            access_expires_at: now + tokens.expires_in().map_or(3600, |d| d.as_secs()),
            id_token: provider.end_session_endpoint().map(|_| id_token),
        });
        Ok(session)
    }

    /// The email and groups in verified claims, once the access rules admit them. On refresh,
    /// `known` is the current session: claims a refreshed ID token leaves out are kept from it.
    fn admitted(
        &self,
        provider: &Provider,
        claims: &Map<String, Value>,
        known: Option<&Session>,
    ) -> Result<(Option<String>, Vec<String>), LoginError> {
        let config = &provider.config;
        let raw_email = claims
            .get("email")
            .and_then(Value::as_str)
            .or_else(|| known.and_then(|s| s.email.as_deref()));
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let account: String = raw_email.unwrap_or(sub).chars().take(254).collect();
        let deny = |reason| LoginError::Denied {
            account: account.clone(),
            reason,
        };
        // An email kept from the session (a refreshed token without one) was vouched for at login.
        let verified = match claims.get("email") {
            None if known.is_some() => Verified::Yes,
            _ => email_verified(config.kind, claims),
        };
        if verified == Verified::No {
            return Err(deny(crate::access::Denied::EmailUnverified));
        }
        // A malformed email is treated as no email: it can match no allow-list entry.
        let email = raw_email.and_then(|e| EmailAddress::parse(e).ok());
        if config.kind == ProviderKind::Entra
            && claims
                .get("_claim_names")
                .and_then(|n| n.get(&config.groups_claim))
                .is_some()
        {
            // Groups overage: the list lives behind Microsoft Graph. Refuse rather than
            // admit or deny on a partial list.
            return Err(LoginError::IdToken(
                "groups overage: assign fewer groups or use app roles".into(),
            ));
        }
        let groups: Vec<String> = match claims.get(&config.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => known.map(|s| s.groups.clone()).unwrap_or_default(),
        };
        let groups = forwardable_groups(groups);
        self.access.claims_match(claims).map_err(deny)?;
        // Only an email the provider vouches for matches the allow-lists or reaches the
        // upstream: at many providers anyone can type any address into an account (nOAuth).
        let unvouched = email.is_some() && verified == Verified::Unknown;
        let email = email.filter(|_| verified == Verified::Yes);
        self.access
            .admits(email.as_ref(), &groups)
            .map_err(|reason| match reason {
                crate::access::Denied::NotListed if unvouched => {
                    deny(crate::access::Denied::EmailUnverified)
                }
                _ => deny(reason),
            })?;
        Ok((email.map(|e| e.as_str().to_owned()), groups))
    }

    /// A provider by name, with a client ready for its token endpoint.
    async fn client_for(
        &self,
        name: &str,
        now: u64,
    ) -> Result<(&Arc<Provider>, provider::OidcClient), LoginError> {
        let provider = self.provider(name).ok_or(LoginError::UnknownProvider)?;
        let discovered = provider
            .discovered(&self.http)
            .await
            .map_err(LoginError::ProviderUnavailable)?;
        let client = provider
            .token_client(&discovered, now)
            .map_err(LoginError::Exchange)?;
        Ok((provider, client))
    }

    /// Where to send the browser after our cookies are cleared: the provider's end-session
    /// endpoint with `id_token_hint` when it has one, else `None`.
    pub fn logout_url(&self, session: &Session, post_logout_redirect: &str) -> Option<String> {
        let tokens = session.tokens.as_ref()?;
        let provider = self.provider(&tokens.provider)?;
        let endpoint = provider.end_session_endpoint()?;
        let hint = tokens.id_token.as_deref()?;
        let encode = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        Some(format!(
            "{endpoint}{separator}id_token_hint={}&post_logout_redirect_uri={}&client_id={}",
            encode(hint),
            encode(post_logout_redirect),
            encode(&provider.config.client_id)
        ))
    }
}

/// The groups that can go upstream as items of one comma-separated header, each reading back
/// as itself: a name with a `,` (`staff,admins` would read as `admins` to an upstream that
/// splits the list), a control byte, or nothing but whitespace is dropped, before the
/// allow-lists see it, so what admits a user is what the upstream is told.
fn forwardable_groups(groups: Vec<String>) -> Vec<String> {
    let before = groups.len();
    let kept: Vec<String> = groups
        .into_iter()
        .filter(|g| !g.trim().is_empty() && !g.contains(',') && !g.chars().any(char::is_control))
        .collect();
    if kept.len() < before {
        tracing::warn!(
            dropped = before - kept.len(),
            "group names with a comma or control characters dropped"
        );
    }
    kept
}

/// Whether the provider vouches for the `email` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    Yes,
    /// Refused outright (`email_verified: false`).
    No,
    /// Not said (claim missing, or not a boolean):
    /// the email is dropped (no allow-list match, no `X-Auth-Request-Email`); groups and the
    /// subject still count.
    Unknown,
}

/// Reads `email_verified`: a boolean, or the strings `"true"`/`"false"` that Apple and Cognito
/// send (as `openidconnect` accepts them at the code exchange); anything else vouches for
/// nothing. Entra sends no `email_verified`; its optional `xms_edov` claim ("email domain owner
/// verified") vouches instead.
fn email_verified(kind: ProviderKind, claims: &Map<String, Value>) -> Verified {
    let read = |name: &str| match claims.get(name) {
        Some(Value::Bool(true)) => Verified::Yes,
        Some(Value::Bool(false)) => Verified::No,
        Some(Value::String(text)) if text == "true" => Verified::Yes,
        Some(Value::String(text)) if text == "false" => Verified::No,
        _ => Verified::Unknown,
    };
    match read("email_verified") {
        // `xms_edov: false` only says Entra cannot vouch: the email stays unlisted, no more.
        Verified::Unknown if kind == ProviderKind::Entra && read("xms_edov") == Verified::Yes => {
            Verified::Yes
        }
        verdict => verdict,
    }
}

/// The claims of a JWT whose signature was already verified.
fn payload(jwt: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let middle = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(middle.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: ProviderKind, claims: Value) -> Verified {
        email_verified(kind, claims.as_object().unwrap())
    }

    #[test]
    fn only_true_vouches_for_an_email() {
        let generic = ProviderKind::Generic;
        for (claims, want) in [
            (serde_json::json!({"email_verified": true}), Verified::Yes),
            (serde_json::json!({"email_verified": "true"}), Verified::Yes),
            (serde_json::json!({"email_verified": false}), Verified::No),
            (serde_json::json!({"email_verified": "false"}), Verified::No),
            (
                serde_json::json!({"email_verified": "TRUE"}),
                Verified::Unknown,
            ),
            (
                serde_json::json!({"email_verified": " true"}),
                Verified::Unknown,
            ),
            (serde_json::json!({}), Verified::Unknown),
            (
                serde_json::json!({"email_verified": null}),
                Verified::Unknown,
            ),
            (serde_json::json!({"email_verified": 1}), Verified::Unknown),
            (
                serde_json::json!({"email_verified": "yes"}),
                Verified::Unknown,
            ),
            (
                serde_json::json!({"email_verified": [true]}),
                Verified::Unknown,
            ),
            (serde_json::json!({"xms_edov": true}), Verified::Unknown),
        ] {
            assert_eq!(verdict(generic, claims.clone()), want, "{claims}");
        }
        let entra = ProviderKind::Entra;
        assert_eq!(
            verdict(entra, serde_json::json!({"xms_edov": true})),
            Verified::Yes
        );
        assert_eq!(
            verdict(entra, serde_json::json!({"xms_edov": false})),
            Verified::Unknown
        );
        assert_eq!(verdict(entra, serde_json::json!({})), Verified::Unknown);
        assert_eq!(
            verdict(
                entra,
                serde_json::json!({"email_verified": false, "xms_edov": true})
            ),
            Verified::No
        );
    }
}
