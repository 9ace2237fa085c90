//! The proxy's ServiceAccount, and a Role that lets it read only its own ConfigMap and key
//! Secret (the proxy reads both as mounted files). With passkeys on, the Role also grants the
//! passkey store (`VouchrsPasskey` objects: read, watch and write; `VouchrsInvitation`: read
//! and create) and the pods mount the token (see the deployment builder). Those rules name no
//! objects: credential objects are created by the proxy under names the operator cannot know.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Names, meta};
use crate::resolve::Resolved;

pub fn service_account(r: &Resolved, owner: &Option<OwnerReference>) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(r, &Names::new(&r.name).workload, owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub fn role(r: &Resolved, owner: &Option<OwnerReference>) -> Role {
    let names = Names::new(&r.name);
    let read = |resource: &str, name: &str| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_owned()]),
        resource_names: Some(vec![name.to_owned()]),
        verbs: vec!["get".to_owned(), "watch".to_owned()],
        ..PolicyRule::default()
    };
    let mut rules = vec![
        read("configmaps", &names.config_map),
        read("secrets", &names.secret),
    ];
    if r.proxy.passkeys.enabled {
        rules.extend(passkey_rules());
    }
    Role {
        metadata: meta(r, &names.workload, owner),
        rules: Some(rules),
    }
}

/// What the Kubernetes passkey store does: a watch of the gateway's credentials, create on
/// registration, patch after a login, delete on removal; invitations are looked up and
/// created once. The operator's ClusterRole (`config/rbac`) holds the same verbs, as RBAC
/// requires of whoever grants them.
pub fn passkey_rules() -> [PolicyRule; 2] {
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![crate::api::GROUP.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    [
        rule(
            "vouchrspasskeys",
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        rule("vouchrsinvitations", &["get", "create"]),
    ]
}

pub fn role_binding(r: &Resolved, owner: &Option<OwnerReference>) -> RoleBinding {
    let name = Names::new(&r.name).workload;
    RoleBinding {
        metadata: meta(r, &name, owner),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(r.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    #[test]
    fn role_reads_only_the_gateways_own_objects() {
        let r = resolved(Tier::Staging);
        let role = role(&r, &None);
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        for rule in &rules {
            assert_eq!(rule.verbs, ["get", "watch"]);
            assert_eq!(rule.resource_names.as_ref().unwrap().len(), 1);
        }
        assert_eq!(
            rules[1].resource_names.as_ref().unwrap()[0],
            "shop-vouchrs-keys"
        );
        let binding = role_binding(&r, &None);
        assert_eq!(binding.role_ref.name, "shop-vouchrs");
        assert_eq!(
            binding.subjects.unwrap()[0].namespace.as_deref(),
            Some("shop")
        );
        assert_eq!(
            service_account(&r, &None).automount_service_account_token,
            Some(false)
        );
    }

    #[test]
    fn with_passkeys_the_role_grants_the_passkey_store_and_nothing_else() {
        let mut r = resolved(Tier::Staging);
        r.proxy.passkeys.enabled = true;
        let rules = role(&r, &None).rules.unwrap();
        assert_eq!(rules.len(), 4);
        let passkeys = &rules[2];
        assert_eq!(
            passkeys.api_groups.as_deref(),
            Some(&["vouchrs.app".to_owned()][..])
        );
        assert_eq!(
            passkeys.resources.as_deref(),
            Some(&["vouchrspasskeys".to_owned()][..])
        );
        assert_eq!(
            passkeys.verbs,
            [
                "get", "list", "watch", "create", "update", "patch", "delete"
            ]
        );
        assert!(passkeys.resource_names.is_none());
        assert_eq!(
            rules[3].resources.as_ref().unwrap()[0],
            "vouchrsinvitations"
        );
        assert_eq!(rules[3].verbs, ["get", "create"]);
        assert!(
            rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")),
            "no wildcards"
        );
    }

    /// RBAC refuses to let the operator grant a verb it does not hold itself: every passkey
    /// rule of the proxy's Role must be in `config/rbac/cluster_role.yaml`.
    #[test]
    fn the_operator_holds_every_verb_it_grants_for_passkeys() {
        let text = include_str!("../../../config/rbac/cluster_role.yaml");
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let held = docs[0]["rules"].as_array().unwrap();
        for rule in passkey_rules() {
            let resource = &rule.resources.as_ref().unwrap()[0];
            for verb in &rule.verbs {
                assert!(
                    held.iter().any(|h| {
                        let has = |key: &str, want: &str| {
                            h[key].as_array().unwrap().iter().any(|v| v == want)
                        };
                        has("apiGroups", "vouchrs.app")
                            && has("resources", resource)
                            && has("verbs", verb)
                    }),
                    "the operator's ClusterRole lacks {verb} on {resource}"
                );
            }
        }
    }
}
