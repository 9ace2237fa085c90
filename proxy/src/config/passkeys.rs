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
    /// Whether the authenticator must verify the user (PIN, fingerprint, face) at
    /// registration and at every login: `required` (the default: a passkey alone is then two
    /// factors) or `preferred` (also accepts authenticators that only test presence, such as
    /// simple security keys; a passkey registered with verification must keep using it).
    pub user_verification: UserVerification,
    /// Where credentials are kept: `file` (`store_file`, the default) or `kubernetes`
    /// (`VouchrsPasskey` objects in the gateway's namespace; needs a proxy built with the
    /// `kubernetes` cargo feature).
    pub store: StoreKind,
    /// The credential store file (public keys only; no secrets). Written atomically, shared
    /// safely by processes on one machine.
    pub store_file: PathBuf,
    /// `kubernetes` store: the gateway whose passkeys this proxy reads and writes (objects
    /// labelled `app.kubernetes.io/instance=GATEWAY`). Required with that store.
    pub gateway: Option<String>,
    /// `kubernetes` store: the namespace of the objects. Default: the pod's own (in the
    /// cluster), else the kubeconfig context's.
    pub namespace: Option<String>,
    /// `kubernetes` store: a kubeconfig file to use instead of the pod's service account
    /// (outside a cluster, and in tests). Default: in-cluster config, else `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// How long a started registration or login may take.
    pub ceremony_timeout: HumanDuration,
    /// Longest lifetime `vouchrs-proxy invite --ttl` accepts.
    pub invitation_max_ttl: HumanDuration,
}

/// Where passkey credentials are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One JSON file (`store_file`): a single machine.
    #[default]
    File,
    /// `VouchrsPasskey` custom resources, read through a watch: every replica of a gateway.
    Kubernetes,
}

/// Whether authenticators must verify the user (PIN, fingerprint, face) at passkey
/// registration and login: `required` (default) or `preferred` (presence-only keys too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    /// Every registration and login must verify the user; others are refused.
    #[default]
    Required,
    /// Ask for verification, accept presence alone from authenticators that cannot verify.
    Preferred,
}

impl Default for PasskeysConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rp_id: None,
            rp_name: "Vouchrs".to_owned(),
            user_verification: UserVerification::Required,
            store: StoreKind::File,
            store_file: PathBuf::from("/var/lib/vouchrs/passkeys.json"),
            gateway: None,
            namespace: None,
            kubeconfig: None,
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
        if self.store == StoreKind::Kubernetes {
            match self.gateway.as_deref() {
                None => {
                    return Err((
                        "passkeys.gateway",
                        "is required when passkeys.store = \"kubernetes\"".to_owned(),
                    ));
                }
                Some(name) if !is_dns_label(name) => {
                    return Err((
                        "passkeys.gateway",
                        format!("`{name}` is not a lowercase DNS label"),
                    ));
                }
                Some(_) => {}
            }
            if let Some(ns) = self.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
                return Err((
                    "passkeys.namespace",
                    format!("`{ns}` is not a lowercase DNS label"),
                ));
            }
        }
        if self.rp_name.trim().is_empty() {
            return Err(("passkeys.rp_name", "must not be empty".to_owned()));
        }
        Ok(())
    }
}

/// A Kubernetes namespace or label value we accept: a lowercase RFC 1123 label.
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
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

    #[test]
    fn the_kubernetes_store_needs_a_gateway_name() {
        let public = url("https://app.example.com");
        let kube = PasskeysConfig {
            enabled: true,
            store: StoreKind::Kubernetes,
            ..PasskeysConfig::default()
        };
        assert_eq!(
            kube.validate(Some(&public)).unwrap_err().0,
            "passkeys.gateway"
        );
        let named = PasskeysConfig {
            gateway: Some("shop".into()),
            ..kube.clone()
        };
        assert!(named.validate(Some(&public)).is_ok());
        for (bad, key) in [
            (("Shop", None), "passkeys.gateway"),
            (("shop", Some("ns_1")), "passkeys.namespace"),
        ] {
            let c = PasskeysConfig {
                gateway: Some(bad.0.into()),
                namespace: bad.1.map(str::to_owned),
                ..kube.clone()
            };
            assert_eq!(c.validate(Some(&public)).unwrap_err().0, key);
        }
        let parsed: PasskeysConfig =
            toml::from_str("enabled = true\nstore = \"kubernetes\"\ngateway = \"shop\"\n").unwrap();
        assert_eq!(parsed.store, StoreKind::Kubernetes);
        assert!(toml::from_str::<PasskeysConfig>("store = \"etcd\"\n").is_err());
    }
}
