//! The `VouchrsGateway` custom resource (`vouchrs.app/v1alpha1`): what a platform team writes.
//!
//! Every field carries a doc comment, which becomes its `kubectl explain` text. The schema is
//! kept structural and small: plain strings, signed integers, no embedded pod templates, no
//! `null` in enums. Cross-field checks that the API server can do run there as CEL rules; what
//! CEL cannot check (quantities, durations, the proxy's own newtypes) is checked by
//! [`crate::resolve`] and reported as `Ready=False` with reason `InvalidSpec`.
//!
//! Later stages add top-level `providers` (OIDC, client secrets by Secret reference) and
//! `access` sections beside `session`, `auth` and `passkeys`; nothing here needs to move for
//! them.

mod status;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use status::{ConditionType, VouchrsGatewayStatus};

pub use crate::tier::Tier;

/// The API group of every Vouchrs resource.
pub const GROUP: &str = "vouchrs.app";

/// Longest gateway name: children are named `NAME-vouchrs-config` and the like, and the
/// Service name (`NAME-vouchrs`) must stay a 63-character DNS label.
pub const MAX_NAME_LEN: usize = 50;

/// The desired gateway: a scale tier, the application, the public URL, sessions, and
/// optional overrides of what the tier decides.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vouchrs.app",
    version = "v1alpha1",
    kind = "VouchrsGateway",
    namespaced,
    status = "VouchrsGatewayStatus",
    shortname = "vgw",
    category = "vouchrs",
    doc = "A Vouchrs gateway: login in front of one application, run as a fleet of stateless authenticating reverse proxies sized by a scale tier.",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier", description = "Scale tier"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the gateway serves traffic"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready proxy pods"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "In-cluster address of the gateway",
        priority = 1
    ),
    validation = Rule::new("self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 50 characters starting with a letter (children append -vouchrs-config)")
)]
#[serde(rename_all = "camelCase")]
pub struct VouchrsGatewaySpec {
    /// Scale tier, from the deployment guide: development, staging, production-small,
    /// production-medium, production-large or production-enterprise. It sets the pod
    /// resources and the autoscaling bounds; `overrides` can change either.
    pub tier: Tier,

    /// The application behind the gateway.
    pub upstream: UpstreamSpec,

    /// The URL users open in their browser, e.g. `https://app.example.com`. An `https` URL
    /// makes session cookies `Secure` with the `__Host-` prefix.
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''")
        .message("publicUrl must be an absolute http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub public_url: String,

    /// Session cookie settings. Omitted: 24 h sessions renewed after 2 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionSpec>,

    /// Which paths need a session and where the proxy's own routes live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// CIDRs of proxies or load balancers whose `X-Forwarded-*` headers are believed, e.g.
    /// the ingress controller's pod range. Omitted: nobody's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("trustedProxies must be CIDRs like 10.0.0.0/8"))]
    pub trusted_proxies: Option<Vec<String>>,

    /// Log filter of the proxy (`RUST_LOG`), e.g. `info` or `vouchrs_proxy=debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub log_level: Option<String>,

    /// Changes to what the tier decides: replica bounds, autoscaling targets, resources,
    /// image and extra environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Overrides>,

    /// Prometheus Operator integration: a ServiceMonitor for the proxy's `/metrics` and a
    /// PrometheusRule with the deployment guide's alerts, both scoped to this gateway.
    /// Omitted: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// Passkey (WebAuthn) login. Credentials are kept as `VouchrsPasskey` objects in the
    /// gateway's namespace (`kubectl get vouchrspasskeys`; `kubectl delete` revokes one on
    /// every replica); the proxy's Role then grants them and its pods mount a service account
    /// token. Omitted: no passkeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkeys: Option<PasskeysSpec>,
}

/// Passkey login (the proxy's `[passkeys]` section; the store is always Kubernetes here).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PasskeysSpec {
    /// Offer passkeys on the sign-in page and let signed-in or invited users register them.
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Relying party id: the domain passkeys are bound to. Default: the host of
    /// `publicUrl`; may be a parent domain of it. Changing it makes every registered passkey
    /// unusable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub rp_id: Option<String>,

    /// Name authenticators show next to the passkey. Default `Vouchrs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub rp_name: Option<String>,

    /// `required` (default): every registration and login must verify the user (PIN,
    /// fingerprint, face). `preferred`: also accept authenticators that only test presence;
    /// a passkey registered with verification must keep using it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_verification: Option<vouchrs_proxy::config::UserVerification>,
}

/// What the operator creates for Prometheus (needs the Prometheus Operator's CRDs,
/// `monitoring.coreos.com/v1`; without them the `Monitoring` condition says so).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a ServiceMonitor (scraping the Service's `admin` port, adding `gateway` and
    /// `tier` labels) and a PrometheusRule (the alerts of `config/monitoring`) for this
    /// gateway. Default false; turning it off deletes both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Extra labels on the ServiceMonitor and PrometheusRule, for a Prometheus whose
    /// `serviceMonitorSelector`/`ruleSelector` need them (e.g. `release: kube-prometheus-stack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// Where the proxy forwards authenticated requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// `http://host:port` or `https://host:port` of the application, without a path; in the
    /// cluster usually `http://SERVICE.NAMESPACE.svc:PORT`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[A-Za-z0-9.\\\\[\\\\]:-]+/?$')")
        .message("upstream.url must be http(s)://host[:port] with no path, query or user info"))]
    #[schemars(length(max = 512))]
    pub url: String,

    /// Time to open a connection to the application, e.g. `5s`. Past it the client gets 502.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub connect_timeout: Option<String>,

    /// Time for the application to send its response head, e.g. `60s`. Past it: 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub response_timeout: Option<String>,
}

/// Session cookie settings (the proxy's `[session]` section).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.refreshHours) || (has(self.durationHours) ? self.refreshHours <= self.durationHours : self.refreshHours <= 24)")
    .message("session.refreshHours must not exceed session.durationHours (default 24)"))]
pub struct SessionSpec {
    /// Session lifetime in hours since its last renewal (`SESSION_DURATION_HOURS`). Retired
    /// cookie keys stay readable this long after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8760))]
    pub duration_hours: Option<i32>,

    /// A session older than this many hours is renewed on its next request
    /// (`SESSION_REFRESH_HOURS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 8760))]
    pub refresh_hours: Option<i32>,

    /// Base cookie name (letters, digits, `_`, `-`); `__Host-` is prepended for https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub cookie_name: Option<String>,
}

/// Authentication routing (the proxy's `[auth]` section).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Path prefix of the proxy's own routes (`/auth/sign_in`, `/auth/oauth2/callback`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 128))]
    pub prefix: Option<String>,

    /// Paths served without a session: exact (`/health`) or a prefix (`/static/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub skip_auth: Option<Vec<String>>,
}

/// Changes to the tier's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas")
    .message("overrides.minReplicas must not exceed overrides.maxReplicas"))]
pub struct Overrides {
    /// Fewest proxy pods. Setting it above the tier's maximum raises the maximum with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: Option<i32>,

    /// Most proxy pods. The gateway autoscales when this exceeds the minimum and runs a
    /// fixed number of pods otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,

    /// Average CPU use, in percent of the CPU request, that the autoscaler aims for (60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: Option<i32>,

    /// Average memory use, in percent of the memory request, that the autoscaler aims for (70).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 100))]
    pub target_memory_utilization: Option<i32>,

    /// Container resources instead of the tier's; any value left out keeps the tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceOverrides>,

    /// Proxy image instead of the operator's default, e.g. `registry.example/vouchrs-proxy:1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Extra environment variables for the proxy container. The variables the operator
    /// derives from the spec (`SESSION_*`, `TOKIO_WORKER_THREADS`, `RUST_LOG`) are refused:
    /// set them through their fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(e, !(e.name in ['SESSION_DURATION_HOURS', 'SESSION_REFRESH_HOURS', 'TOKIO_WORKER_THREADS', 'RUST_LOG', 'VOUCHRS_CONFIG']))")
            .message("overrides.env must not set variables the operator derives from the spec")
    )]
    pub env: Option<Vec<EnvVar>>,
}

/// Requests and limits, each `cpu` and `memory` as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceOverrides {
    /// What the scheduler reserves; the autoscaler's percentages are of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    /// The most the container may use. The CPU limit sets the proxy's worker threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

/// A CPU and a memory quantity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    /// CPU, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub cpu: Option<String>,
    /// Memory, e.g. `256Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub memory: Option<String>,
}

/// One environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("env names are letters, digits and _"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Variable value.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// The annotation that asks for a cookie key rotation: set it to any new token (a date, a
/// counter); each new value prepends one fresh key.
pub const ROTATE_KEYS_ANNOTATION: &str = "vouchrs.app/rotate-keys";

impl VouchrsGateway {
    /// The rotation token the user asked for, if any.
    pub fn rotation_request(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(ROTATE_KEYS_ANNOTATION)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }
}
