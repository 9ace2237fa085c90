//! Config of passkey (WebAuthn) login: the relying party, where credentials are kept, and how
//! long ceremonies and invitations may live.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::values::{HumanDuration, PublicUrl};

/// Passkey login and registration. Off unless `enabled = true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeysConfig {
    /// Offer passkeys on the sign-in page and serve `/auth/passkey/...`. Needs
    /// `server.public_url`, whose origin is the only one assertions are accepted from.
    pub enabled: bool,
    /// Relying party id: the domain passkeys are bound to. Default: the host of
    /// `server.public_url`. May be a parent domain of it (`example.com` for
    /// `https://app.example.com`) so that passkeys work across its subdomains. Changing it
    /// makes every registered passkey unusable.
    pub rp_id: Option<String>,
    /// Name authenticators show next to the passkey.
    pub rp_name: String,
    /// The credential store file (public keys only; no secrets). Written atomically, shared
    /// safely by processes on one machine.
    pub store_file: PathBuf,
    /// How long a started registration or login may take.
    pub ceremony_timeout: HumanDuration,
    /// Longest lifetime `vouchrs-proxy invite --ttl` accepts.
    pub invitation_max_ttl: HumanDuration,
}

impl Default for PasskeysConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rp_id: None,
            rp_name: "Vouchrs".to_owned(),
            store_file: PathBuf::from("/var/lib/vouchrs/passkeys.json"),
            ceremony_timeout: HumanDuration::secs(300),
            invitation_max_ttl: HumanDuration::secs(7 * 24 * 3600),
        }
    }
}

impl PasskeysConfig {
    /// True when nothing differs from the defaults (then the section is not rendered).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The relying party id in force: the configured one or the public URL's host.
    pub fn effective_rp_id(&self, public_url: &PublicUrl) -> String {
        self.rp_id
            .clone()
            .unwrap_or_else(|| host_of(public_url).to_owned())
    }

    /// Cross-field checks; `key` errors name the setting at fault.
    pub fn validate(&self, public_url: Option<&PublicUrl>) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        let Some(public_url) = public_url else {
            return Err((
                "server.public_url",
                "is required when passkeys are enabled (it is the origin passkeys are bound to)"
                    .to_owned(),
            ));
        };
        let host = host_of(public_url);
        if let Some(rp_id) = &self.rp_id {
            let valid = !rp_id.is_empty()
                && rp_id.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !valid {
                return Err((
                    "passkeys.rp_id",
                    format!("`{rp_id}` is not a lowercase domain name"),
                ));
            }
            if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
                return Err((
                    "passkeys.rp_id",
                    format!(
                        "`{rp_id}` must be the host of server.public_url (`{host}`) or a parent domain of it"
                    ),
                ));
            }
        }
        if self.ceremony_timeout.0.as_secs() < 30 || self.ceremony_timeout.0.as_secs() > 3600 {
            return Err((
                "passkeys.ceremony_timeout",
                "must be between 30s and 1h".to_owned(),
            ));
        }
        if self.invitation_max_ttl.0.as_secs() == 0 {
            return Err((
                "passkeys.invitation_max_ttl",
                "must be longer than zero".to_owned(),
            ));
        }
        if self.rp_name.trim().is_empty() {
            return Err(("passkeys.rp_name", "must not be empty".to_owned()));
        }
        Ok(())
    }
}

/// The host of a validated public URL (`scheme://host[:port]`).
fn host_of(url: &PublicUrl) -> &str {
    let rest = url.as_str().split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> PublicUrl {
        PublicUrl::parse(text).unwrap()
    }

    #[test]
    fn the_rp_id_defaults_to_the_public_host_and_may_be_a_parent() {
        let on = PasskeysConfig {
            enabled: true,
            ..PasskeysConfig::default()
        };
        assert_eq!(
            on.effective_rp_id(&url("http://localhost:8080")),
            "localhost"
        );
        assert!(on.validate(Some(&url("https://app.example.com"))).is_ok());
        let parent = PasskeysConfig {
            rp_id: Some("example.com".into()),
            ..on.clone()
        };
        assert!(
            parent
                .validate(Some(&url("https://app.example.com")))
                .is_ok()
        );
        for bad in ["other.com", "ample.com", "Example.com", ""] {
            let c = PasskeysConfig {
                rp_id: Some(bad.into()),
                ..on.clone()
            };
            let err = c
                .validate(Some(&url("https://app.example.com")))
                .unwrap_err();
            assert_eq!(err.0, "passkeys.rp_id", "{bad}");
        }
        assert_eq!(on.validate(None).unwrap_err().0, "server.public_url");
        assert!(
            PasskeysConfig::default().validate(None).is_ok(),
            "off: no checks"
        );
    }
}
