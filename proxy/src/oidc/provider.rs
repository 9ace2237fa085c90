//! One configured provider: its endpoints (discovered lazily and cached, so the proxy starts
//! and existing sessions keep working while a provider is down), its JWKS (re-fetched when a
//! token names an unknown key), and its client credentials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use openidconnect::core::{CoreClient, CoreJsonWebKeySet};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    ProviderMetadataWithLogout, RedirectUrl,
};
use tokio::sync::Mutex;

use super::http::ProviderHttp;
use crate::config::{OidcProvider, ProviderKind};

/// The client type for a provider built from (discovered or configured) metadata.
pub type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What a provider told us about itself.
pub struct Discovered {
    pub metadata: ProviderMetadataWithLogout,
    pub client: OidcClient,
    fetched_at: Instant,
}

/// How often a provider's JWKS may be re-fetched because of an unknown key id.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Discovered metadata is re-read after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);

pub struct Provider {
    pub config: OidcProvider,
    secret: Option<ClientSecret>,
    redirect_uri: RedirectUrl,
    discovered: ArcSwapOption<Discovered>,
    /// One discovery at a time.
    refreshing: Mutex<()>,
}

/// Why a provider's secret could not be loaded at startup.
#[derive(Debug, thiserror::Error)]
#[error("oidc provider `{provider}`: {reason}")]
pub struct ProviderSetupError {
    pub provider: String,
    pub reason: String,
}

impl Provider {
    pub fn new(config: OidcProvider, redirect_uri: &str) -> Result<Self, ProviderSetupError> {
        let fail = |reason: String| ProviderSetupError {
            provider: config.name.to_string(),
            reason,
        };
        let secret = if let Some(path) = &config.client_secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("client_secret_file {}: {e}", path.display())))?;
            Some(ClientSecret::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        } else if let Some(var) = &config.client_secret_env {
            let value = std::env::var(var)
                .map_err(|_| fail(format!("client_secret_env: ${var} is not set")))?;
            Some(ClientSecret::new(value))
        } else {
            None
        };
        if config.kind == ProviderKind::Apple {
            super::apple::check_key(&config).map_err(fail)?;
        }
        let redirect_uri = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| fail(format!("redirect URI: {e}")))?;
        Ok(Self {
            config,
            secret,
            redirect_uri,
            discovered: ArcSwapOption::empty(),
            refreshing: Mutex::new(()),
        })
    }

    /// The provider's metadata and client, discovering them on first use.
    pub async fn discovered(&self, http: &ProviderHttp) -> Result<Arc<Discovered>, String> {
        if let Some(d) = self.discovered.load_full()
            && d.fetched_at.elapsed() < METADATA_TTL
        {
            return Ok(d);
        }
        let _one = self.refreshing.lock().await;
        if let Some(d) = self.discovered.load_full()
            && d.fetched_at.elapsed() < METADATA_TTL
        {
            return Ok(d);
        }
        let metadata = self.fetch_metadata(http).await?;
        let jwks: CoreJsonWebKeySet = http.get_json(metadata.jwks_uri().as_str()).await?;
        let discovered = Arc::new(self.build(metadata.set_jwks(jwks))?);
        self.discovered.store(Some(discovered.clone()));
        tracing::info!(provider = %self.config.name, "provider metadata loaded");
        Ok(discovered)
    }

    /// Re-fetches the JWKS after a token named a key we do not know (keys rotate), at most
    /// every 30 s. Returns true when new keys were loaded.
    pub async fn refresh_jwks(&self, http: &ProviderHttp) -> bool {
        let _one = self.refreshing.lock().await;
        let Some(current) = self.discovered.load_full() else {
            return false;
        };
        if current.fetched_at.elapsed() < JWKS_REFETCH_EVERY {
            return false;
        }
        let Ok(jwks) = http
            .get_json::<CoreJsonWebKeySet>(current.metadata.jwks_uri().as_str())
            .await
        else {
            return false;
        };
        match self.build(current.metadata.clone().set_jwks(jwks)) {
            Ok(d) => {
                self.discovered.store(Some(Arc::new(d)));
                tracing::info!(provider = %self.config.name, "provider keys re-fetched");
                true
            }
            Err(_) => false,
        }
    }

    async fn fetch_metadata(
        &self,
        http: &ProviderHttp,
    ) -> Result<ProviderMetadataWithLogout, String> {
        let c = &self.config;
        let metadata: ProviderMetadataWithLogout = match (
            &c.authorization_endpoint,
            &c.token_endpoint,
            &c.jwks_uri,
        ) {
            (Some(auth), Some(token), Some(jwks)) => {
                // Explicit endpoints: the same document discovery would have returned.
                let doc = serde_json::json!({
                    "issuer": c.issuer.as_str(),
                    "authorization_endpoint": auth.as_str(),
                    "token_endpoint": token.as_str(),
                    "jwks_uri": jwks.as_str(),
                    "end_session_endpoint": c.end_session_endpoint.as_ref().map(|e| e.as_str()),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256", "PS256", "RS384", "ES384", "RS512", "EdDSA"],
                });
                serde_json::from_value(doc).map_err(|e| format!("endpoints: {e}"))?
            }
            _ => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    c.issuer.as_str().trim_end_matches('/')
                );
                http.get_json(&url).await?
            }
        };
        // Discovery must describe the configured issuer (Entra's multi-tenant documents say
        // `{tenantid}`; the ID token's issuer is then checked against its `tid`).
        let issuer = metadata.issuer().as_str().trim_end_matches('/');
        let configured = c.issuer.as_str().trim_end_matches('/');
        let entra_template = c.kind == ProviderKind::Entra && issuer.contains("{tenantid}");
        if issuer != configured && !entra_template {
            return Err(format!(
                "discovery names issuer `{issuer}`, not the configured `{configured}`"
            ));
        }
        Ok(metadata)
    }

    fn build(&self, metadata: ProviderMetadataWithLogout) -> Result<Discovered, String> {
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(self.redirect_uri.clone());
        Ok(Discovered {
            metadata,
            client,
            fetched_at: Instant::now(),
        })
    }

    /// The client secret for a token request (Apple's is a fresh signed JWT).
    pub fn token_client(&self, discovered: &Discovered, now: u64) -> Result<OidcClient, String> {
        if self.config.kind != ProviderKind::Apple {
            return Ok(discovered.client.clone());
        }
        let secret = super::apple::client_secret(&self.config, now)?;
        Ok(discovered
            .client
            .clone()
            .set_client_secret(ClientSecret::new(secret)))
    }

    pub fn end_session_endpoint(&self) -> Option<String> {
        let discovered = self.discovered.load_full()?;
        discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|u| u.url().to_string())
    }
}
