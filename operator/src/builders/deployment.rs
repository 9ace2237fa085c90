//! The proxy Deployment: tier resources, the deployment guide's security context, probes on
//! the admin port, the seed's environment variables, and the config hash that rolls the pods
//! when `proxy.toml` changes.
//!
//! `replicas` is set only for fixed-size gateways: while an HPA owns scaling, a `replicas`
//! field in our apply would fight it on every reconcile. Cookie key rotation does not roll
//! the pods: the Secret is mounted as a directory (no `subPath`), the kubelet refreshes it,
//! and the proxy re-reads the key ring when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADMIN_PORT, CONFIG_FILE, CONFIG_PATH, HTTP_PORT, KEYS_DIR, Names, labels, meta, selector,
};
use crate::resolve::{Resolved, Scaling};

/// Pod template annotation carrying [`super::configmap::hash`].
pub const CONFIG_HASH_ANNOTATION: &str = "vouchrs.app/config-hash";
/// The non-root user and group of the deployment guide.
pub const RUN_AS: i64 = 1000;
/// Seconds beyond the proxy's drain delay and shutdown grace before the kubelet kills it.
const KILL_MARGIN_SECS: i64 = 5;

pub fn build(r: &Resolved, owner: &Option<OwnerReference>, config_hash: &str) -> Deployment {
    let names = Names::new(&r.name);
    let replicas = match r.scaling {
        Scaling::Fixed { replicas } => Some(replicas),
        Scaling::Autoscaled { .. } => None,
    };
    Deployment {
        metadata: meta(r, &names.workload, owner),
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector(&r.name)),
                ..LabelSelector::default()
            },
            // Never below the current capacity during a rollout: surge first, then retire.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".to_owned())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&r.name)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(r, &names)),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// Seconds the kubelet waits after SIGTERM: the proxy's drain delay (readiness off while
/// still serving) plus its shutdown grace (in-flight requests), plus a margin.
pub fn termination_grace_secs(r: &Resolved) -> i64 {
    let server = &r.proxy.server;
    let secs = server.drain_delay.0.as_secs() + server.shutdown_grace.0.as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX / 2) + KILL_MARGIN_SECS
}

fn pod_spec(r: &Resolved, names: &Names) -> PodSpec {
    PodSpec {
        service_account_name: Some(names.workload.clone()),
        // Only the passkey store talks to the API server; without it no token is mounted.
        automount_service_account_token: Some(r.proxy.passkeys.enabled),
        termination_grace_period_seconds: Some(termination_grace_secs(r)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            // Lets the non-root user read the 0440 key files.
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(r)],
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names.config_map.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "keys".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names.secret.clone()),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

fn container(r: &Resolved) -> Container {
    let session = &r.proxy.session;
    let mut env = vec![
        env("SESSION_DURATION_HOURS", session.duration_hours.to_string()),
        env("SESSION_REFRESH_HOURS", session.refresh_hours.to_string()),
        env("TOKIO_WORKER_THREADS", r.worker_threads.to_string()),
        env("RUST_LOG", r.proxy.runtime.log_filter.clone()),
    ];
    env.extend(r.extra_env.iter().map(|(k, v)| self::env(k, v.clone())));
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    Container {
        name: "proxy".to_owned(),
        image: Some(r.image.clone()),
        args: Some(vec!["--config".to_owned(), CONFIG_PATH.to_owned()]),
        ports: Some(vec![port("http", HTTP_PORT), port("admin", ADMIN_PORT)]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(
                &r.resources.request_cpu,
                &r.resources.request_memory,
            )),
            limits: Some(quantities(
                &r.resources.limit_cpu,
                &r.resources.limit_memory,
            )),
            ..ResourceRequirements::default()
        }),
        // Liveness is lenient (a busy proxy is not a dead one); readiness is quick, so a
        // draining pod leaves the endpoints within a few seconds.
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 1)),
        security_context: Some(security_context()),
        volume_mounts: Some(vec![
            // subPath is fine for the config: a change rolls the pods through the hash.
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_PATH.to_owned(),
                sub_path: Some(CONFIG_FILE.to_owned()),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            // A whole-directory mount, so key rotations reach running pods.
            VolumeMount {
                name: "keys".to_owned(),
                mount_path: KEYS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The deployment guide's container security context, verbatim.
pub fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

#[cfg(test)]
#[path = "deployment_tests.rs"]
mod tests;
