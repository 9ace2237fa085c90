//! Pure builders: [`Resolved`] values in, Kubernetes objects out, one file per kind.
//!
//! Nothing here talks to the API server or reads the clock, so every child can be tested
//! (and rendered by `vouchrs-operator render`) without a cluster. Names and labels are
//! derived from the gateway's name only, never from its spec, so selectors stay stable when
//! the tier or anything else changes.

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod monitoring;
pub mod pdb;
pub mod rbac;
pub mod secret;
pub mod service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::VouchrsGateway;
use crate::resolve::Resolved;

/// Who manages the children (the `app.kubernetes.io/managed-by` label).
pub const MANAGER: &str = "vouchrs-operator";

/// Paths and ports inside the proxy container (what `vouchrs-proxy` expects).
pub const CONFIG_DIR: &str = "/etc/vouchrs";
pub const CONFIG_FILE: &str = "proxy.toml";
pub const CONFIG_PATH: &str = "/etc/vouchrs/proxy.toml";
pub const KEYS_DIR: &str = "/etc/vouchrs/keys";
pub const KEYRING_KEY: &str = "keyring";
pub const HTTP_PORT: i32 = 8080;
pub const ADMIN_PORT: i32 = 9090;
pub const SERVICE_PORT: i32 = 80;

/// Names of a gateway's children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Deployment, Service, HPA, PDB, ServiceAccount, Role and RoleBinding.
    pub workload: String,
    pub config_map: String,
    pub secret: String,
}

impl Names {
    pub fn new(gateway: &str) -> Self {
        Self {
            workload: format!("{gateway}-vouchrs"),
            config_map: format!("{gateway}-vouchrs-config"),
            secret: format!("{gateway}-vouchrs-keys"),
        }
    }
}

/// Labels on every child; the first two are also the pod selector.
pub fn labels(gateway: &str) -> BTreeMap<String, String> {
    let mut labels = selector(gateway);
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels.insert("app.kubernetes.io/part-of".into(), "vouchrs".into());
    labels
}

/// The pod selector: identity only, so it never changes for the life of the gateway.
pub fn selector(gateway: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vouchrs-proxy".into()),
        ("app.kubernetes.io/instance".into(), gateway.into()),
    ])
}

/// The controller owner reference to the gateway, when it has a uid (it has none in
/// `render`, which works without a cluster).
pub fn owner(gw: &VouchrsGateway) -> Option<OwnerReference> {
    let mut owner = gw.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// Metadata for a child named `name`.
pub fn meta(r: &Resolved, name: &str, owner: &Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(r.namespace.clone()),
        labels: Some(labels(&r.name)),
        owner_references: owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Every child except the key Secret (which is created once, never applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
    pub service: Service,
    /// Present when the gateway autoscales.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Present when at least two pods always run.
    pub pdb: Option<PodDisruptionBudget>,
    /// ServiceMonitor and PrometheusRule, present when the gateway asks for monitoring
    /// (applied only where the cluster serves `monitoring.coreos.com/v1`).
    pub monitoring: Option<Monitoring>,
}

/// The Prometheus Operator objects of a gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    pub service_monitor: kube::api::DynamicObject,
    pub prometheus_rule: kube::api::DynamicObject,
}

/// Builds every applied child of a resolved gateway.
pub fn build(r: &Resolved, owner: &Option<OwnerReference>) -> Children {
    let config_map = configmap::build(r, owner);
    let config_hash = configmap::hash(&config_map);
    Children {
        service_account: rbac::service_account(r, owner),
        role: rbac::role(r, owner),
        role_binding: rbac::role_binding(r, owner),
        deployment: deployment::build(r, owner, &config_hash),
        service: service::build(r, owner),
        hpa: hpa::build(r, owner),
        pdb: pdb::build(r, owner),
        monitoring: r.monitoring.as_ref().map(|extra| Monitoring {
            service_monitor: monitoring::service_monitor(r, extra, owner),
            prometheus_rule: monitoring::prometheus_rule(r, extra, owner),
        }),
        config_map,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Gateways for builder tests.
    use crate::api::{VouchrsGateway, VouchrsGatewaySpec};
    use crate::resolve::{Resolved, Settings, resolve};
    use crate::tier::Tier;

    pub fn gateway(tier: Tier) -> VouchrsGateway {
        let spec: VouchrsGatewaySpec = serde_json::from_value(serde_json::json!({
            "tier": tier,
            "upstream": { "url": "http://app.shop.svc:8080" },
            "publicUrl": "https://shop.example.com",
        }))
        .unwrap();
        let mut gw = VouchrsGateway::new("shop", spec);
        gw.metadata.namespace = Some("shop".into());
        gw.metadata.uid = Some("uid-1".into());
        gw
    }

    pub fn resolved(tier: Tier) -> Resolved {
        resolve(&gateway(tier), &Settings::default()).unwrap()
    }
}
