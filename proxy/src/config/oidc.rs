//! Config of OpenID Connect login and of who may get in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::values::{EmailAddress, EmailDomain, HumanDuration, ProviderName, ProviderUrl};

/// Login through OpenID Connect providers, several at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Providers, listed on the sign-in page in this order.
    pub providers: Vec<OidcProvider>,
    /// How long a started login may take before its state expires.
    pub login_timeout: HumanDuration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            login_timeout: HumanDuration::secs(600),
        }
    }
}

/// Quirks of well-known providers (see the README's provider section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Generic,
    /// Adds `access_type=offline` and `prompt=consent` when refresh is on.
    Google,
    /// Microsoft Entra ID: a `{tenantid}` issuer template for multi-tenant apps; refuses logins
    /// whose groups overflowed into `_claim_names` (groups overage) rather than guessing.
    Entra,
    /// Sign in with Apple: `form_post` callback, client secret is an ES256 JWT made from a
    /// `.p8` key (`apple_*` settings).
    Apple,
}

/// How the provider returns the authorization code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// A redirect with `?code=…&state=…` (GET).
    #[default]
    Query,
    /// An auto-submitted form (POST), as Apple requires.
    FormPost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short id used in URLs, cookies and metrics (`[a-z0-9-]`, at most 32).
    pub name: ProviderName,
    /// Text of the sign-in button; defaults to the name.
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub kind: ProviderKind,
    /// Issuer URL; its `/.well-known/openid-configuration` is read unless every endpoint
    /// below is given. `https://` (or `http://` on loopback, for development).
    pub issuer: ProviderUrl,
    #[serde(default)]
    pub authorization_endpoint: Option<ProviderUrl>,
    #[serde(default)]
    pub token_endpoint: Option<ProviderUrl>,
    #[serde(default)]
    pub jwks_uri: Option<ProviderUrl>,
    #[serde(default)]
    pub end_session_endpoint: Option<ProviderUrl>,
    pub client_id: String,
    /// File holding the client secret (a mounted Secret). One secret source is required,
    /// except for Apple, whose secret is made from `apple_private_key_file`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Extra query parameters of the authorization request (e.g. `hd`, `prompt`).
    #[serde(default)]
    pub extra_auth_params: BTreeMap<String, String>,
    #[serde(default)]
    pub response_mode: ResponseMode,
    /// Keep the refresh token (sealed in the cookie) and refresh before the access token
    /// expires; a failed refresh ends the session.
    #[serde(default)]
    pub refresh: bool,
    /// The ID token claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Apple: the developer team id, the key id and the `.p8` private key file.
    #[serde(default)]
    pub apple_team_id: Option<String>,
    #[serde(default)]
    pub apple_key_id: Option<String>,
    #[serde(default)]
    pub apple_private_key_file: Option<PathBuf>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

impl OidcProvider {
    pub fn display_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.name.as_str())
    }
}

/// Who may get in once authenticated. Empty lists admit every authenticated user; otherwise
/// a user needs a listed email, a listed domain or a listed group (any one of them), and
/// every required claim.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRules {
    pub allowed_emails: Vec<EmailAddress>,
    /// Exact domains (no subdomains): `example.com` admits `a@example.com` only.
    pub allowed_domains: Vec<EmailDomain>,
    pub allowed_groups: Vec<String>,
    /// ID token claims that must equal these values (strings, or arrays containing them).
    pub required_claims: BTreeMap<String, String>,
}
