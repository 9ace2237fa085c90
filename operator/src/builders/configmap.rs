//! The ConfigMap holding `proxy.toml`, rendered by the proxy's own `ProxyConfig::to_toml`, and
//! the hash of it that the Deployment carries so that a config change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};

use super::{CONFIG_FILE, meta};
use crate::resolve::Resolved;

pub fn build(r: &Resolved, owner: &Option<OwnerReference>) -> ConfigMap {
    let names = super::Names::new(&r.name);
    ConfigMap {
        metadata: meta(r, &names.config_map, owner),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            r.proxy.to_toml(),
        )])),
        ..ConfigMap::default()
    }
}

/// A short, stable digest of the ConfigMap's data (SHA-256, so it does not change between
/// operator builds the way `std`'s hasher may).
pub fn hash(config_map: &ConfigMap) -> String {
    let mut digest = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        digest.update(key.as_bytes());
        digest.update([0]);
        digest.update(value.as_bytes());
        digest.update([0]);
    }
    digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;
    use vouchrs_proxy::config::ProxyConfig;

    #[test]
    fn rendered_config_is_what_the_proxy_parses_and_accepts() {
        for tier in Tier::ALL {
            let r = resolved(tier);
            let cm = build(&r, &None);
            let text = &cm.data.as_ref().unwrap()[CONFIG_FILE];
            let parsed = ProxyConfig::parse(text).unwrap();
            parsed.validate().unwrap();
            assert_eq!(parsed, r.proxy);
            assert_eq!(parsed.upstream.url.to_string(), "http://app.shop.svc:8080");
            assert_eq!(parsed.server.drain_delay.0.as_secs(), 5);
            assert_eq!(parsed.runtime.worker_threads, Some(r.worker_threads));
            assert!(
                parsed.session.secure,
                "https public URL makes cookies secure"
            );
            assert_eq!(
                parsed.session.keyring_file.to_str(),
                Some("/etc/vouchrs/keys/keyring")
            );
        }
    }

    #[test]
    fn passkeys_render_the_kubernetes_store_of_this_gateway() {
        use crate::builders::fixtures::gateway;
        use crate::resolve::{Settings, resolve};
        use vouchrs_proxy::config::{StoreKind, UserVerification};

        let mut gw = gateway(Tier::Staging);
        gw.spec.passkeys = Some(crate::api::PasskeysSpec {
            enabled: Some(true),
            rp_id: Some("example.com".into()),
            rp_name: Some("Shop".into()),
            user_verification: Some(UserVerification::Preferred),
        });
        let r = resolve(&gw, &Settings::default()).unwrap();
        let cm = build(&r, &None);
        let parsed = ProxyConfig::parse(&cm.data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        parsed.validate().unwrap();
        let p = &parsed.passkeys;
        assert!(p.enabled);
        assert_eq!(p.store, StoreKind::Kubernetes);
        assert_eq!(
            (p.gateway.as_deref(), p.namespace.as_deref()),
            (Some("shop"), Some("shop"))
        );
        assert_eq!(
            p.kubeconfig, None,
            "in the cluster: the pod's service account"
        );
        assert_eq!(
            (p.rp_id.as_deref(), p.rp_name.as_str()),
            (Some("example.com"), "Shop")
        );
        assert_eq!(p.user_verification, UserVerification::Preferred);
        assert_eq!(
            parsed.server.public_url.as_ref().map(|u| u.as_str()),
            Some("https://shop.example.com")
        );
        let pod = crate::builders::deployment::build(&r, &None, "h")
            .spec
            .template
            .spec
            .unwrap();
        assert_eq!(pod.automount_service_account_token, Some(true));

        // Off (or a parent domain that is not one) changes nothing / is refused.
        let off = build(&resolved(Tier::Staging), &None);
        assert!(!off.data.unwrap()[CONFIG_FILE].contains("passkeys"));
        gw.spec.passkeys.as_mut().unwrap().rp_id = Some("other.com".into());
        let err = resolve(&gw, &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("passkeys.rp_id"), "{err}");
    }

    #[test]
    fn hash_follows_the_config_only() {
        let a = build(&resolved(Tier::Staging), &None);
        let mut r = resolved(Tier::Staging);
        assert_eq!(hash(&a), hash(&build(&r, &None)));
        r.proxy.session.duration_hours = 8;
        assert_ne!(hash(&a), hash(&build(&r, &None)));
        assert_eq!(hash(&a).len(), 16);
    }
}
