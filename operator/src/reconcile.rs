//! The reconcile: resolve → keys → build → apply → clean up → status. It only orchestrates;
//! decisions live in [`crate::resolve`], [`crate::builders`] and [`crate::conditions`], and the
//! API calls in [`crate::apply`].
//!
//! "Nothing to do" means: the key Secret is only read, children are server-side applied with
//! byte-identical bodies (the API server stores nothing new for those), and the status and
//! events are not written. A gateway being deleted gets no call at all; an invalid spec gets
//! a status and a Warning event, and waits for a spec change instead of retrying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{ConditionType, VouchrsGateway, VouchrsGatewayStatus};
use crate::apply;
use crate::builders::{self, secret, service};
use crate::conditions;
use crate::error::Error;
use crate::keyring::Key;
use crate::metrics::Metrics;
use crate::resolve::{Settings, resolve};

/// Field manager of status writes.
pub const STATUS_MANAGER: &str = "vouchrs-operator/status";
/// Requeue period when nothing else is due: drift is corrected by watches, this is a backstop.
pub const RESYNC: Duration = Duration::from_secs(15 * 60);
/// First and largest retry delay after a transient failure, per gateway.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The clock, passed in so tests are deterministic.
    pub now: fn() -> Timestamp,
    /// Consecutive failures per gateway (`namespace/name`), for per-object backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        settings: Settings,
        metrics: Arc<Metrics>,
        now: fn() -> Timestamp,
    ) -> Self {
        Self {
            client,
            recorder,
            settings,
            metrics,
            now,
            failures: Mutex::default(),
        }
    }

    fn failure_count(&self, key: &str, failed: bool) -> u32 {
        // A poisoned lock only means another reconcile panicked; the counts are still usable.
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = map.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            map.remove(key);
            0
        }
    }
}

/// The controller's reconcile: records metrics around [`reconcile_gateway`].
pub async fn reconcile(gw: Arc<VouchrsGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_gateway(&gw, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().map(|_| ()));
    let key = format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any());
    ctx.failure_count(&key, result.is_err());
    result
}

/// The controller's error policy: exponential backoff per gateway, 5 s doubling to 5 min.
pub fn error_policy(gw: Arc<VouchrsGateway>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", gw.namespace().unwrap_or_default(), gw.name_any());
    let n = ctx.failure_count(&key, true).saturating_sub(1).min(16);
    let delay = BACKOFF_MIN.saturating_mul(1 << n).min(BACKOFF_MAX);
    tracing::warn!(gateway = %key, reason = error.metric_label(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One reconcile of one gateway.
pub async fn reconcile_gateway(gw: &VouchrsGateway, ctx: &Context) -> Result<Action, Error> {
    // Owner references let the garbage collector remove the children; writing now would
    // only race it.
    if gw.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = gw.namespace().ok_or(Error::MissingNamespace)?;
    let now = (ctx.now)();
    let resolved = match resolve(gw, &ctx.settings) {
        Ok(resolved) => resolved,
        Err(invalid) => {
            tracing::info!(gateway = %gw.name_any(), %namespace, error = %invalid, "invalid spec");
            publish(ctx, gw, conditions::invalid(gw, &invalid, Time(now))).await?;
            return Ok(Action::await_change());
        }
    };
    match converge(gw, ctx, &resolved, now).await {
        Ok(action) => Ok(action),
        Err(error) => {
            // Best effort: the error itself is what the controller backs off on.
            let _ = publish(ctx, gw, conditions::failed(gw, &error, Time(now))).await;
            Err(error)
        }
    }
}

async fn converge(
    gw: &VouchrsGateway,
    ctx: &Context,
    resolved: &crate::resolve::Resolved,
    now: Timestamp,
) -> Result<Action, Error> {
    let owner = builders::owner(gw);
    let fresh = Key::generate(now.as_second()).map_err(Error::Random)?;
    let stamp = now.to_string();
    let keys = apply::ensure_keys(
        &ctx.client,
        resolved,
        &owner,
        gw.rotation_request(),
        (now.as_second(), &stamp),
        fresh,
    )
    .await?;
    let children = builders::build(resolved, &owner);
    let deployment = apply::apply_children(&ctx.client, resolved, &children).await?;
    apply::clean_up(&ctx.client, resolved, &children, gw.meta().uid.as_deref()).await?;
    let monitoring_was_applied = gw
        .status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Monitoring))
        .is_some_and(|c| c.status == "True");
    let monitoring = apply::monitoring(
        &ctx.client,
        resolved,
        &children,
        monitoring_was_applied,
        gw.meta().uid.as_deref(),
    )
    .await?;

    let rotated_at = keys
        .secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(secret::ROTATED_AT_ANNOTATION).cloned());
    let status = conditions::applied(
        gw,
        &deployment,
        service::endpoint(resolved),
        rotated_at,
        Time(now),
    );
    let status = conditions::with_monitoring(status, &monitoring, gw.meta().generation, Time(now));
    publish(ctx, gw, status).await?;

    // Come back when the oldest retired key is due for pruning, if that is sooner.
    let prune_in = secret::next_prune_at(resolved, &keys.secret)
        .map(|at| Duration::from_secs(u64::try_from(at - now.as_second()).unwrap_or(0).max(1)));
    Ok(Action::requeue(prune_in.map_or(RESYNC, |d| d.min(RESYNC))))
}

/// Writes `status` if it differs from the stored one, then publishes the events its
/// transitions deserve.
async fn publish(
    ctx: &Context,
    gw: &VouchrsGateway,
    status: VouchrsGatewayStatus,
) -> Result<(), Error> {
    if gw.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<VouchrsGateway> =
        Api::namespaced(ctx.client.clone(), &gw.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": VouchrsGateway::api_version(&()),
        "kind": VouchrsGateway::kind(&()),
        "status": status,
    });
    api.patch_status(
        &gw.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    let reference = gw.object_ref(&());
    for t in conditions::transitions(gw.status.as_ref(), &status) {
        let event = Event {
            type_: t.type_,
            reason: t.reason.to_owned(),
            note: Some(t.note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        ctx.recorder
            .publish(&event, &reference)
            .await
            .map_err(Error::Event)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
