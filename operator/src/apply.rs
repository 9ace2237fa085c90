//! The API calls a reconcile makes, each a small function: the key Secret (create once,
//! replace only to rotate or prune), server-side apply of every other child with one field
//! manager per kind, the replicas hand-over to an HPA, and deleting children the spec no
//! longer needs.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::builders::secret::{self, KeysPlan};
use crate::builders::{Children, Names, monitoring};
use crate::conditions::MonitoringState;
use crate::error::Error;
use crate::keyring::Key;
use crate::resolve::{Resolved, Scaling};

/// Field manager of the Deployment apply (also checked for `spec.replicas` ownership).
pub const DEPLOYMENT_MANAGER: &str = "vouchrs-operator/deployment";
/// Field manager that keeps `spec.replicas` while the HPA takes it over.
pub const HANDOVER_MANAGER: &str = "vouchrs-operator/replicas-handover";
/// Field manager recorded when the key Secret is created or rotated.
pub const KEYS_MANAGER: &str = "vouchrs-operator/keys";

/// The key Secret after this reconcile, and whether a rotation happened.
pub struct Keys {
    pub secret: Secret,
    pub rotated: bool,
}

/// Creates the key Secret if absent; rotates or prunes it when due; otherwise only reads.
pub async fn ensure_keys(
    client: &Client,
    r: &Resolved,
    owner: &Option<OwnerReference>,
    requested_token: Option<&str>,
    now: (i64, &str),
    fresh: Key,
) -> Result<Keys, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let name = Names::new(&r.name).secret;
    let existing = api.get_opt(&name).await.map_err(|source| Error::Read {
        kind: "Secret",
        source,
    })?;
    let plan = secret::plan(r, owner, existing.as_ref(), requested_token, now, || fresh)
        .map_err(Error::DamagedKeys)?;
    let params = PostParams {
        field_manager: Some(KEYS_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match plan {
        KeysPlan::Keep => Ok(Keys {
            // Invariant: Keep is only planned for an existing Secret.
            secret: existing.unwrap_or_default(),
            rotated: false,
        }),
        KeysPlan::Create(new) => match api.create(&params, &new).await {
            Ok(secret) => Ok(Keys {
                secret,
                rotated: false,
            }),
            // Another writer created it since we looked: theirs stands, never ours.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let secret = api.get(&name).await.map_err(|source| Error::Read {
                    kind: "Secret",
                    source,
                })?;
                Ok(Keys {
                    secret,
                    rotated: false,
                })
            }
            Err(e) => Err(Error::WriteKeys(e)),
        },
        KeysPlan::Replace(new) => {
            let rotated = new.metadata.annotations != existing.and_then(|s| s.metadata.annotations);
            let secret = api
                .replace(&name, &params, &new)
                .await
                .map_err(Error::WriteKeys)?;
            Ok(Keys { secret, rotated })
        }
    }
}

/// Applies every child and returns the Deployment as the API server now has it.
pub async fn apply_children(
    client: &Client,
    r: &Resolved,
    children: &Children,
) -> Result<Deployment, Error> {
    let ns = &r.namespace;
    apply(
        client,
        ns,
        &children.config_map,
        "vouchrs-operator/configmap",
    )
    .await?;
    apply(
        client,
        ns,
        &children.service_account,
        "vouchrs-operator/serviceaccount",
    )
    .await?;
    apply(client, ns, &children.role, "vouchrs-operator/role").await?;
    apply(
        client,
        ns,
        &children.role_binding,
        "vouchrs-operator/rolebinding",
    )
    .await?;
    if matches!(r.scaling, Scaling::Autoscaled { .. }) {
        hand_replicas_to_hpa(client, r).await?;
    }
    let deployment = apply(client, ns, &children.deployment, DEPLOYMENT_MANAGER).await?;
    apply(client, ns, &children.service, "vouchrs-operator/service").await?;
    if let Some(hpa) = &children.hpa {
        apply(client, ns, hpa, "vouchrs-operator/hpa").await?;
    }
    if let Some(pdb) = &children.pdb {
        apply(client, ns, pdb, "vouchrs-operator/pdb").await?;
    }
    Ok(deployment)
}

/// Applies the gateway's ServiceMonitor and PrometheusRule where the cluster serves the
/// Prometheus Operator's kinds (API discovery of `monitoring.coreos.com/v1`), and deletes
/// ours when the gateway stops asking for them. Without the CRDs nothing is written and the
/// state says so: the gateway itself is not failed for it.
pub async fn monitoring(
    client: &Client,
    r: &Resolved,
    children: &Children,
    was_applied: bool,
    owner_uid: Option<&str>,
) -> Result<MonitoringState, Error> {
    let sm = monitoring::service_monitor_resource();
    let pr = monitoring::prometheus_rule_resource();
    let Some(wanted) = &children.monitoring else {
        // Only a gateway whose status says we applied them has anything to delete; the
        // others cost no call (and need no discovery).
        if was_applied && let Some(uid) = owner_uid {
            let name = Names::new(&r.name).workload;
            for ar in [&sm, &pr] {
                delete_dynamic_if_owned(client, r, ar, &name, uid).await?;
            }
        }
        return Ok(MonitoringState::Off);
    };
    let served = match client
        .list_api_group_resources(monitoring::GROUP_VERSION)
        .await
    {
        Ok(list) => [&sm, &pr]
            .iter()
            .all(|ar| list.resources.iter().any(|res| res.name == ar.plural)),
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(source) => {
            return Err(Error::Read {
                kind: "APIResourceList",
                source,
            });
        }
    };
    if !served {
        return Ok(MonitoringState::CrdsMissing);
    }
    for (ar, object, manager) in [
        (
            &sm,
            &wanted.service_monitor,
            "vouchrs-operator/servicemonitor",
        ),
        (
            &pr,
            &wanted.prometheus_rule,
            "vouchrs-operator/prometheusrule",
        ),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &r.namespace, ar);
        let name = object.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: if ar.kind == "ServiceMonitor" {
                "ServiceMonitor"
            } else {
                "PrometheusRule"
            },
            source,
        })?;
    }
    Ok(MonitoringState::Applied)
}

async fn delete_dynamic_if_owned(
    client: &Client,
    r: &Resolved,
    ar: &ApiResource,
    name: &str,
    uid: &str,
) -> Result<(), Error> {
    let kind = if ar.kind == "ServiceMonitor" {
        "ServiceMonitor"
    } else {
        "PrometheusRule"
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &r.namespace, ar);
    let existing = match api.get_opt(name).await {
        Ok(existing) => existing,
        // The CRDs are gone, and with them the objects.
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(source) => return Err(Error::Read { kind, source }),
    };
    let Some(existing) = existing else {
        return Ok(());
    };
    if !existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid)
    {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete { kind, source }),
    }
}

/// Deletes the HPA and PDB when the spec no longer wants them (only ours, by owner uid).
pub async fn clean_up(
    client: &Client,
    r: &Resolved,
    children: &Children,
    owner_uid: Option<&str>,
) -> Result<(), Error> {
    let Some(uid) = owner_uid else {
        return Ok(());
    };
    let name = Names::new(&r.name).workload;
    if children.hpa.is_none() {
        delete_if_owned::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(
            client, r, &name, uid,
        )
        .await?;
    }
    if children.pdb.is_none() {
        delete_if_owned::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(client, r, &name, uid)
            .await?;
    }
    Ok(())
}

/// Before applying a Deployment without `replicas`, make sure dropping the field does not
/// reset the fleet to one pod: if our apply owns `spec.replicas` (the gateway ran fixed
/// replicas), a second manager first applies the current count, so the field survives our
/// manager letting go, and the HPA takes it from there.
async fn hand_replicas_to_hpa(client: &Client, r: &Resolved) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &r.namespace);
    let name = Names::new(&r.name).workload;
    let Some(current) = api.get_opt(&name).await.map_err(|source| Error::Read {
        kind: "Deployment",
        source,
    })?
    else {
        return Ok(());
    };
    if !owns_replicas(&current, DEPLOYMENT_MANAGER) {
        return Ok(());
    }
    let replicas = current
        .spec
        .replicas
        .unwrap_or(1)
        .max(r.scaling.min_replicas());
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": r.namespace },
        "spec": { "replicas": replicas },
    });
    api.patch(
        &name,
        &PatchParams::apply(HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Deployment",
        source,
    })?;
    Ok(())
}

/// Whether `manager`'s apply owns `spec.replicas`.
pub fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.operation.as_deref() == Some("Apply")
                && entry
                    .fields_v1
                    .as_ref()
                    .and_then(|f| f.0.get("f:spec"))
                    .and_then(|spec| spec.get("f:replicas"))
                    .is_some()
        })
}

async fn apply<K>(client: &Client, ns: &str, object: &K, manager: &str) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: <K as k8s_openapi::Resource>::KIND,
        source,
    })
}

async fn delete_if_owned<K>(
    client: &Client,
    r: &Resolved,
    name: &str,
    uid: &str,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let api: Api<K> = Api::namespaced(client.clone(), &r.namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Read { kind, source })?
    else {
        return Ok(());
    };
    let ours = existing
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid);
    if !ours {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete { kind, source }),
    }
}
