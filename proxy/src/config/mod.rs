//! The proxy's configuration: one type, read from a TOML file, then overridden by the seed's
//! environment variables. The operator renders this same type into the proxy's ConfigMap, so
//! this module depends on nothing heavier than serde and toml.
//!
//! Loading is a pure function of the file text and an environment lookup, so tests pass a
//! map instead of touching the process environment.

mod oidc;
mod passkeys;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use oidc::{AccessRules, OidcConfig, OidcProvider, ProviderKind, ResponseMode};
pub use passkeys::{PasskeysConfig, StoreKind, UserVerification};
pub use values::{AuthPrefix, CookieName, HeaderNameText, HumanDuration, PathRule, UpstreamUrl};
pub use values::{EmailAddress, EmailDomain, ProviderName, ProviderUrl, PublicUrl};

/// Everything `vouchrs-proxy` needs to run. Every section but `upstream` has defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Listeners, limits and timeouts on the client side.
    #[serde(default)]
    pub server: ServerConfig,
    /// The application behind the proxy.
    pub upstream: UpstreamConfig,
    /// Session cookies and the keys that seal them.
    #[serde(default)]
    pub session: SessionConfig,
    /// Which requests need a session and where the proxy's own routes live.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Names of the identity headers sent to the upstream.
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    /// Threads and logging.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// OpenID Connect providers for login.
    #[serde(default)]
    pub oidc: OidcConfig,
    /// Who may get in, checked at login and whenever a session is opened.
    #[serde(default)]
    pub access: AccessRules,
    /// Passkey (WebAuthn) login; off by default. Omitted from rendered TOML while default.
    #[serde(default, skip_serializing_if = "PasskeysConfig::is_default")]
    pub passkeys: PasskeysConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address for application traffic.
    pub listen: SocketAddr,
    /// Where users reach the gateway (`https://app.example.com`); required for OIDC login,
    /// whose redirect URI is `PUBLIC_URL/auth/oauth2/callback`.
    pub public_url: Option<PublicUrl>,
    /// Address for `/healthz`, `/readyz`, `/metrics` and `/ping`, kept off the public
    /// listener so that nothing of ours shadows an application path.
    pub admin_listen: SocketAddr,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// Open client connections at most; further ones are closed at once.
    pub max_connections: u32,
    /// Bytes of request line plus headers at most; more gets `431`.
    pub max_header_bytes: u32,
    /// Time a client has to send a complete request head. On HTTP/1.1 keep-alive
    /// connections it also bounds the idle wait for the next request.
    pub header_read_timeout: HumanDuration,
    /// After SIGTERM, how long `/readyz` reports 503 while still accepting, so that load
    /// balancers stop sending before the listener closes.
    pub drain_delay: HumanDuration,
    /// After the listener closes, how long in-flight requests may take to finish.
    pub shutdown_grace: HumanDuration,
    /// Peers whose `X-Forwarded-*` headers are believed. Empty: nobody's.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port` of the application (no path).
    pub url: UpstreamUrl,
    /// Time to open a TCP (and TLS) connection to the upstream; past it: `502`.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time for the upstream to send its response head; past it: `504`.
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: HumanDuration,
    /// Idle pooled upstream connections are closed after this long.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub pool_idle_timeout: HumanDuration,
    /// Pass the client's `Host` header on (true) or send the upstream's own (false).
    #[serde(default = "defaults::yes")]
    pub pass_host_header: bool,
    /// Extra PEM CA certificates to trust for an `https://` upstream.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Base cookie name. With `secure = true` the cookie is `__Host-NAME`.
    pub cookie_name: CookieName,
    /// Mark cookies `Secure` and use the `__Host-` prefix. Turn off only for plain-HTTP
    /// development on a host other than localhost.
    pub secure: bool,
    /// Session lifetime since its last renewal (`SESSION_DURATION_HOURS`).
    pub duration_hours: u32,
    /// A session older than this is re-sealed with a fresh lifetime on its next request
    /// (`SESSION_REFRESH_HOURS`).
    pub refresh_hours: u32,
    /// Key ring file (a mounted Secret): one `ID BASE64URL-32-BYTES` per line; the first key
    /// seals, every key opens. Re-read when it changes.
    pub keyring_file: PathBuf,
    /// How often the key ring file is checked for changes.
    pub keyring_poll: HumanDuration,
    /// Memory for recently validated cookies, in KiB (0 turns the cache off).
    pub cache_kib: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Prefix of the proxy's own routes (`/auth/sign_in`, `/auth/oauth2/callback`, ...).
    pub prefix: AuthPrefix,
    /// Paths served without a session, matched on the normalized path.
    pub skip_auth: Vec<PathRule>,
    /// Branded page templates (`sign_in.html`, `denied.html`, `sign_out.html`,
    /// `signed_out.html`, each with a `{{content}}` placeholder).
    pub templates_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    /// Header carrying the user's id (the token's `sub` or the passkey user).
    pub user: HeaderNameText,
    /// Header carrying the user's email, when known.
    pub email: HeaderNameText,
    /// Header carrying the user's groups, comma-separated.
    pub groups: HeaderNameText,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Serving threads (`TOKIO_WORKER_THREADS`), each with its own single-threaded runtime,
    /// listening socket and upstream pool; unset: one per core this process may use (CPU
    /// affinity and cgroup quota included).
    pub worker_threads: Option<u16>,
    /// tracing filter (`RUST_LOG`), e.g. `info` or `vouchrs_proxy=debug`.
    pub log_filter: String,
    /// `json` (default) or `text`.
    pub log_format: LogFormat,
    /// One log line per request.
    pub access_log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// A config that cannot run, naming the key (or variable) at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl ProxyConfig {
    /// Parses TOML, applies environment overrides from `env`, and validates.
    pub fn load(
        toml_text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::parse(toml_text)?;
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML alone (no environment, no cross-field checks).
    pub fn parse(toml_text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(toml_text)
            .map_err(|e| ConfigError::new("(file)", e.message().to_owned()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".to_owned()
            } else {
                key
            };
            ConfigError::new(key, e.into_inner().message().to_owned())
        })
    }

    /// Renders the config as TOML (the operator writes this into the proxy's ConfigMap).
    pub fn to_toml(&self) -> String {
        // Invariant: every field is a plain TOML value, so serialization cannot fail.
        toml::to_string(self).expect("ProxyConfig always serializes to TOML")
    }

    /// The seed's environment variables win over the file.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn number<T: std::str::FromStr>(var: &str, value: &str) -> Result<T, ConfigError> {
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(var, format!("`{value}` is not a whole number")))
        }
        if let Some(v) = env("SESSION_DURATION_HOURS") {
            self.session.duration_hours = number("SESSION_DURATION_HOURS", &v)?;
        }
        if let Some(v) = env("SESSION_REFRESH_HOURS") {
            self.session.refresh_hours = number("SESSION_REFRESH_HOURS", &v)?;
        }
        if let Some(v) = env("TOKIO_WORKER_THREADS") {
            self.runtime.worker_threads = Some(number("TOKIO_WORKER_THREADS", &v)?);
        }
        if let Some(v) = env("RUST_LOG") {
            self.runtime.log_filter = v;
        }
        Ok(())
    }

    /// Checks that span fields. Single values were checked when parsed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        if s.duration_hours == 0 {
            return Err(ConfigError::new(
                "session.duration_hours",
                "must be at least 1",
            ));
        }
        if s.refresh_hours > s.duration_hours {
            return Err(ConfigError::new(
                "session.refresh_hours",
                format!(
                    "{} is longer than session.duration_hours ({}): sessions would expire before renewal",
                    s.refresh_hours, s.duration_hours
                ),
            ));
        }
        if self.runtime.worker_threads == Some(0) {
            return Err(ConfigError::new(
                "runtime.worker_threads",
                "must be at least 1",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if !(8192..=1 << 20).contains(&self.server.max_header_bytes) {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        if self.server.listen == self.server.admin_listen {
            return Err(ConfigError::new(
                "server.admin_listen",
                "must differ from server.listen",
            ));
        }
        self.validate_oidc()?;
        self.passkeys
            .validate(self.server.public_url.as_ref())
            .map_err(|(key, reason)| ConfigError::new(key, reason))?;
        let names = &self.identity_headers;
        if names.user == names.email || names.user == names.groups || names.email == names.groups {
            return Err(ConfigError::new(
                "identity_headers",
                "the three names must differ",
            ));
        }
        Ok(())
    }

    fn validate_oidc(&self) -> Result<(), ConfigError> {
        let providers = &self.oidc.providers;
        if !providers.is_empty() && self.server.public_url.is_none() {
            return Err(ConfigError::new(
                "server.public_url",
                "is required when OIDC providers are configured (it makes the redirect URI)",
            ));
        }
        for (i, p) in providers.iter().enumerate() {
            let key = |field: &str| format!("oidc.providers[{i}].{field}");
            if providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("`{}` is used twice", p.name),
                ));
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return Err(ConfigError::new(key("scopes"), "must include \"openid\""));
            }
            let endpoints = [&p.authorization_endpoint, &p.token_endpoint, &p.jwks_uri];
            let given = endpoints.iter().filter(|e| e.is_some()).count();
            if given != 0 && given != 3 {
                return Err(ConfigError::new(
                    key("authorization_endpoint"),
                    "give authorization_endpoint, token_endpoint and jwks_uri together, or none (discovery)",
                ));
            }
            let secrets = usize::from(p.client_secret_file.is_some())
                + usize::from(p.client_secret_env.is_some());
            if p.kind == ProviderKind::Apple {
                let apple = [&p.apple_team_id, &p.apple_key_id]
                    .iter()
                    .all(|v| v.is_some());
                if !apple || p.apple_private_key_file.is_none() {
                    return Err(ConfigError::new(
                        key("apple_private_key_file"),
                        "Apple needs apple_team_id, apple_key_id and apple_private_key_file",
                    ));
                }
            } else if secrets != 1 {
                return Err(ConfigError::new(
                    key("client_secret_file"),
                    "give exactly one of client_secret_file and client_secret_env",
                ));
            }
        }
        Ok(())
    }

    /// The session cookie's full name, with the `__Host-` prefix when cookies are secure.
    pub fn session_cookie_name(&self) -> String {
        let base = self.session.cookie_name.as_str();
        if self.session.secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }
}

mod defaults {
    use super::HumanDuration;
    pub fn connect_timeout() -> HumanDuration {
        HumanDuration::secs(5)
    }
    pub fn response_timeout() -> HumanDuration {
        HumanDuration::secs(60)
    }
    pub fn pool_idle_timeout() -> HumanDuration {
        HumanDuration::secs(90)
    }
    pub fn yes() -> bool {
        true
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: None,
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            tls: None,
            max_connections: 25_000,
            max_header_bytes: 32 * 1024,
            header_read_timeout: HumanDuration::secs(30),
            drain_delay: HumanDuration::secs(0),
            shutdown_grace: HumanDuration::secs(25),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: CookieName::try_from("vouchrs_session".to_owned()).expect("valid"),
            secure: true,
            duration_hours: 24,
            refresh_hours: 2,
            keyring_file: PathBuf::from("/etc/vouchrs/keys/keyring"),
            keyring_poll: HumanDuration::secs(5),
            cache_kib: 4096,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            prefix: AuthPrefix::try_from("/auth".to_owned()).expect("valid"),
            skip_auth: Vec::new(),
            templates_dir: None,
        }
    }
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        let name = |n: &str| HeaderNameText::try_from(n.to_owned()).expect("valid");
        Self {
            user: name("X-Auth-Request-User"),
            email: name("X-Auth-Request-Email"),
            groups: name("X-Auth-Request-Groups"),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: None,
            log_filter: "info".to_owned(),
            log_format: LogFormat::Json,
            access_log: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn minimal_config_gets_the_seed_defaults() {
        let c = ProxyConfig::load(MINIMAL, env(&[])).unwrap();
        assert_eq!(c.session.duration_hours, 24);
        assert_eq!(c.session.refresh_hours, 2);
        assert_eq!(c.session_cookie_name(), "__Host-vouchrs_session");
        assert_eq!(c.identity_headers.user.as_str(), "x-auth-request-user");
        assert!(c.server.trusted_proxies.is_empty());
    }

    #[test]
    fn seed_environment_variables_override_the_file() {
        let c = ProxyConfig::load(
            MINIMAL,
            env(&[
                ("SESSION_DURATION_HOURS", "8"),
                ("SESSION_REFRESH_HOURS", "1"),
                ("TOKIO_WORKER_THREADS", "3"),
                ("RUST_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.session.duration_hours, 8);
        assert_eq!(c.session.refresh_hours, 1);
        assert_eq!(c.runtime.worker_threads, Some(3));
        assert_eq!(c.runtime.log_filter, "debug");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases = [
            ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url"),
            (
                "[upstream]\nurl = \"http://a\"\n[session]\nduration_hours = \"x\"\n",
                "session.duration_hours",
            ),
            (
                "[upstream]\nurl = \"http://a\"\n[server]\nheader_read_timeout = \"soon\"\n",
                "server.header_read_timeout",
            ),
            (
                "[upstream]\nurl = \"http://a\"\n[auth]\nskip_auth = [\"/ok\", \"/*\"]\n",
                "auth.skip_auth[1]",
            ),
            (
                "[upstream]\nurl = \"http://a\"\n[session]\nrefresh_hours = 30\n",
                "session.refresh_hours",
            ),
            ("[upstream]\nurl = \"http://a\"\n[sesion]\n", "sesion"),
            ("", "(top level)"),
            ("[upstream\n", "(file)"),
        ];
        for (text, key) in cases {
            let err = ProxyConfig::load(text, env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{text:?} gave {err}");
            assert!(!err.reason.is_empty());
        }
        let err = ProxyConfig::load(MINIMAL, env(&[("SESSION_REFRESH_HOURS", "two")])).unwrap_err();
        assert_eq!(err.key, "SESSION_REFRESH_HOURS");
    }

    #[test]
    fn oidc_providers_are_checked_as_a_whole() {
        let provider = "[[oidc.providers]]\nname = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"c\"\n";
        let with_url = |extra: &str| {
            format!(
                "[server]\npublic_url = \"https://app.example.com\"\n{MINIMAL}{provider}{extra}"
            )
        };
        let ok = ProxyConfig::load(&with_url("client_secret_env = \"S\"\n"), env(&[])).unwrap();
        assert_eq!(ok.oidc.providers[0].scopes, ["openid", "email", "profile"]);
        let cases = [
            (
                format!("{MINIMAL}{provider}client_secret_env = \"S\"\n"),
                "server.public_url",
            ),
            (with_url(""), "oidc.providers[0].client_secret_file"),
            (
                with_url("client_secret_env = \"S\"\nclient_secret_file = \"/f\"\n"),
                "oidc.providers[0].client_secret_file",
            ),
            (
                with_url("client_secret_env = \"S\"\nscopes = [\"email\"]\n"),
                "oidc.providers[0].scopes",
            ),
            (
                with_url("client_secret_env = \"S\"\ntoken_endpoint = \"https://x/t\"\n"),
                "oidc.providers[0].authorization_endpoint",
            ),
            (
                with_url("kind = \"apple\"\n"),
                "oidc.providers[0].apple_private_key_file",
            ),
            (
                with_url("client_secret_env = \"S\"\n").replace("https://sso", "http://sso"),
                "oidc.providers[0].issuer",
            ),
            (
                with_url("client_secret_env = \"S\"\n")
                    .replace("name = \"corp\"", "name = \"Corp\""),
                "oidc.providers[0].name",
            ),
            (
                with_url("client_secret_env = \"S\"\n[access]\nallowed_emails = [\"a@b@c.com\"]\n"),
                "access.allowed_emails[0]",
            ),
        ];
        for (text, key) in cases {
            let err = ProxyConfig::load(&text, env(&[])).unwrap_err();
            assert_eq!(err.key, key, "{text}\n{err}");
        }
        let twice =
            with_url("client_secret_env = \"S\"\n") + provider + "client_secret_env = \"S\"\n";
        assert_eq!(
            ProxyConfig::load(&twice, env(&[])).unwrap_err().key,
            "oidc.providers[1].name"
        );
    }

    #[test]
    fn rendering_round_trips() {
        let mut c = ProxyConfig::load(MINIMAL, env(&[])).unwrap();
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.auth.skip_auth = vec![PathRule::try_from("/static/*".to_owned()).unwrap()];
        let again = ProxyConfig::load(&c.to_toml(), env(&[])).unwrap();
        assert_eq!(c, again);
    }
}
