//! The proxy's ServiceAccount, and a Role that lets it read only its own ConfigMap and key
//! Secret. The pods do not mount the token yet (the proxy reads both as files); passkeys will
//! add `VouchrsPasskey` rules here and turn the token on.

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
    Role {
        metadata: meta(r, &names.workload, owner),
        rules: Some(vec![
            read("configmaps", &names.config_map),
            read("secrets", &names.secret),
        ]),
    }
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
}
