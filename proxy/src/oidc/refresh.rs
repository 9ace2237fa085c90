//! Refreshing provider tokens before the access token expires.
//!
//! Parallel requests of one session must not refresh twice: with refresh-token rotation the
//! second attempt would fail and end the session. So refreshes are keyed by refresh token:
//! the first request runs it, the others await the same result, and requests that still
//! carry the previous cookie within a short grace window get that result too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::{OAuth2TokenResponse, RefreshToken, TokenResponse};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;

use super::{LoginError, Oidc};
use crate::session::{ProviderTokens, Session};

/// How long the previous cookie keeps yielding the refreshed session.
const GRACE: Duration = Duration::from_secs(30);
/// Refresh this long before the access token expires.
pub const REFRESH_AHEAD_SECS: u64 = 30;

/// The outcome of one refresh, filled in by the first request that runs it.
type Shared = Arc<AsyncMutex<Option<Refreshed>>>;

#[derive(Default)]
pub struct Refreshes {
    in_flight: Mutex<HashMap<String, (Instant, Shared)>>,
}

impl Refreshes {
    fn cell(&self, refresh_token: &str) -> Shared {
        // Invariant: the lock is never held across an await or a panic-prone call.
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (started, _)| started.elapsed() < GRACE);
        map.entry(refresh_token.to_owned())
            .or_insert_with(|| (Instant::now(), Arc::default()))
            .1
            .clone()
    }
}

/// True when the session's access token is about to expire and it can be refreshed.
pub fn due(session: &Session, now: u64) -> bool {
    session.tokens.as_ref().is_some_and(|t| {
        t.refresh_token.is_some() && now + REFRESH_AHEAD_SECS >= t.access_expires_at
    })
}

/// What a refresh came to.
#[derive(Debug, Clone)]
pub enum Refreshed {
    /// New tokens (and possibly new claims): reseal the session.
    Renewed(Session),
    /// The provider refused (revoked or expired refresh token, a bad ID token, access
    /// denied): the session ends.
    Ended,
    /// The provider could not be reached: keep the session as it is and try again later, so
    /// an identity-provider outage never logs everyone out.
    Unavailable,
}

impl Oidc {
    /// Refreshes `session`'s tokens; parallel callers with the same refresh token share one
    /// attempt and its outcome.
    pub async fn refresh(&self, session: &Session, now: u64) -> Refreshed {
        let Some(tokens) = session.tokens.as_ref() else {
            return Refreshed::Ended;
        };
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            return Refreshed::Ended;
        };
        let cell = self.refreshes.cell(&refresh_token);
        // Later requests wait here for the first one's result.
        let mut outcome = cell.lock().await;
        if let Some(done) = outcome.as_ref() {
            return done.clone();
        }
        let result = match self.refresh_once(session, &refresh_token, now).await {
            Ok(renewed) => Refreshed::Renewed(renewed),
            Err(LoginError::ProviderUnavailable(error)) => {
                tracing::warn!(%error, "token refresh postponed: provider unavailable");
                Refreshed::Unavailable
            }
            Err(error) => {
                tracing::warn!(reason = error.label(), %error, "token refresh refused; session ended");
                Refreshed::Ended
            }
        };
        let label = match result {
            Refreshed::Renewed(_) => "refreshed",
            Refreshed::Ended => "refresh_failed",
            Refreshed::Unavailable => "refresh_postponed",
        };
        crate::metrics::METRICS.login(&tokens.provider, label);
        *outcome = Some(result.clone());
        result
    }

    async fn refresh_once(
        &self,
        session: &Session,
        refresh_token: &str,
        now: u64,
    ) -> Result<Session, LoginError> {
        // Invariant: `refresh` only calls this for sessions with tokens.
        let tokens = session.tokens.as_ref().ok_or(LoginError::UnknownProvider)?;
        let (provider, client) = self.client_for(&tokens.provider, now).await?;
        let refresh_token = RefreshToken::new(refresh_token.to_owned());
        let response = client
            .exchange_refresh_token(&refresh_token)
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The provider answered and said no: the refresh token is done for.
                openidconnect::RequestTokenError::ServerResponse(_) => {
                    LoginError::Exchange(crate::error_chain(&e))
                }
                // No usable answer (unreachable, timeout, a 5xx page): try again later.
                _ => LoginError::ProviderUnavailable(crate::error_chain(&e)),
            })?;

        let mut renewed = session.clone();
        if let Some(id_token) = response.id_token() {
            // A new ID token may carry new groups: verify it and apply the rules again.
            let claims = self.verify(provider, id_token, None, now).await?;
            if claims.get("sub").and_then(Value::as_str) != Some(session.user.as_str()) {
                return Err(LoginError::IdToken(
                    "refresh returned another subject".into(),
                ));
            }
            let (email, groups) = self.admitted(provider, &claims, Some(session))?;
            renewed.email = email;
            renewed.groups = groups;
        }
        renewed.tokens = Some(ProviderTokens {
            provider: tokens.provider.clone(),
            refresh_token: response
                .refresh_token()
                .map(|t| t.secret().clone())
                .or(Some(refresh_token.into_secret())),
            access_expires_at: now + response.expires_in().map_or(3600, |d| d.as_secs()),
            id_token: match (&tokens.id_token, response.id_token()) {
                (Some(_), Some(new)) => Some(new.to_string()),
                (old, _) => old.clone(),
            },
        });
        renewed.issued_at = now;
        Ok(renewed)
    }
}
