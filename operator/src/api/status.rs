//! The `status` of a `VouchrsGateway`: what the operator last did and what it saw.
//!
//! Conditions follow the Kubernetes convention (a list-map keyed by `type`, so server-side
//! apply merges them per type) and reuse `meta/v1` `Condition`, the type `kubectl wait
//! --for=condition=Ready` understands.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed and did for this gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VouchrsGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` (serving), `Progressing` (a rollout is under way), `Degraded` (the last
    /// reconcile failed or the spec is invalid), and with `spec.monitoring` enabled
    /// `Monitoring` (ServiceMonitor and PrometheusRule applied, or why not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Proxy pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Proxy pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// In-cluster URL of the gateway's Service, for an Ingress or Gateway route to point at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// When the cookie keys were last rotated (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_rotated_at: Option<String>,
}

/// The condition types the operator maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
    Monitoring,
}

impl ConditionType {
    pub const ALL: [ConditionType; 4] = [
        Self::Ready,
        Self::Progressing,
        Self::Degraded,
        Self::Monitoring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Monitoring => "Monitoring",
        }
    }
}

impl VouchrsGatewayStatus {
    /// The condition of the given type, if set.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == kind.as_str())
    }
}
