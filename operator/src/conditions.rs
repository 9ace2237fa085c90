//! Status as a pure function: what the gateway's status should say, given what the last
//! reconcile saw, and which events a change of it deserves.
//!
//! A condition's `lastTransitionTime` moves only when its `status` changes, and the status is
//! written only when it differs from the stored one, so a status write never triggers an
//! endless chain of reconciles. Events fire on transitions, never on repeats.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::api::{ConditionType, VouchrsGateway, VouchrsGatewayStatus};
use crate::error::{Error, InvalidSpec};

/// One condition as decided, before timestamps.
struct Verdict {
    kind: ConditionType,
    status: bool,
    reason: &'static str,
    message: String,
}

/// An event to publish: type, reason, note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// Status after a successful apply, from the Deployment the API server returned.
pub fn applied(
    gw: &VouchrsGateway,
    deployment: &Deployment,
    endpoint: String,
    keys_rotated_at: Option<String>,
    now: Time,
) -> VouchrsGatewayStatus {
    let ds = deployment.status.clone().unwrap_or_default();
    let ready = ds.ready_replicas.unwrap_or(0);
    let available = ds.available_replicas.unwrap_or(0);
    let total = ds.replicas.unwrap_or(0);
    let updated = ds.updated_replicas.unwrap_or(0);
    let wanted = deployment.spec.replicas.unwrap_or(total.max(1));
    let seen = ds.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let rolled_out = seen && updated >= wanted && total == updated && available >= updated;
    let verdicts = [
        if available > 0 {
            verdict(
                ConditionType::Ready,
                true,
                "Available",
                format!("{available} proxy pod(s) available"),
            )
        } else {
            verdict(
                ConditionType::Ready,
                false,
                "NoAvailablePods",
                format!("0 of {wanted} proxy pods available"),
            )
        },
        if rolled_out {
            verdict(
                ConditionType::Progressing,
                false,
                "RolloutComplete",
                "all proxy pods run the current spec".into(),
            )
        } else {
            verdict(
                ConditionType::Progressing,
                true,
                "RollingOut",
                format!("{updated} of {wanted} proxy pods updated"),
            )
        },
        verdict(
            ConditionType::Degraded,
            false,
            "Reconciled",
            "all children applied".into(),
        ),
    ];
    let mut status = with_conditions(gw, &verdicts, now);
    status.replicas = Some(total);
    status.ready_replicas = Some(ready);
    status.endpoint = Some(endpoint);
    status.keys_rotated_at = keys_rotated_at;
    status
}

/// What became of a gateway's monitoring objects in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitoringState {
    /// The gateway does not ask for monitoring: no `Monitoring` condition.
    Off,
    /// ServiceMonitor and PrometheusRule applied.
    Applied,
    /// The cluster does not serve the Prometheus Operator's kinds; nothing was applied.
    CrdsMissing,
}

/// Condition reason when the Prometheus Operator's CRDs are missing.
pub const MONITORING_UNAVAILABLE: &str = "PrometheusOperatorMissing";

/// `status` with the `Monitoring` condition for `state` (removed when monitoring is off).
pub fn with_monitoring(
    mut status: VouchrsGatewayStatus,
    state: &MonitoringState,
    generation: Option<i64>,
    now: Time,
) -> VouchrsGatewayStatus {
    let verdict = match state {
        MonitoringState::Off => {
            status
                .conditions
                .retain(|c| c.type_ != ConditionType::Monitoring.as_str());
            return status;
        }
        MonitoringState::Applied => verdict(
            ConditionType::Monitoring,
            true,
            "Applied",
            "ServiceMonitor and PrometheusRule applied".into(),
        ),
        MonitoringState::CrdsMissing => verdict(
            ConditionType::Monitoring,
            false,
            MONITORING_UNAVAILABLE,
            "the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule: install the Prometheus Operator (the gateway is retried every 15 minutes), or scrape the Service's admin port (9090, /metrics) another way".into(),
        ),
    };
    merge(&mut status, &[verdict], generation, now);
    status
}

/// Status for a spec that cannot run: nothing was applied.
pub fn invalid(gw: &VouchrsGateway, error: &InvalidSpec, now: Time) -> VouchrsGatewayStatus {
    let message = error.to_string();
    let verdicts = [
        verdict(ConditionType::Ready, false, "InvalidSpec", message.clone()),
        verdict(
            ConditionType::Progressing,
            false,
            "InvalidSpec",
            "waiting for a spec change".into(),
        ),
        verdict(ConditionType::Degraded, true, "InvalidSpec", message),
    ];
    with_conditions(gw, &verdicts, now)
}

/// Status after a failed reconcile: `Degraded` with the error's fixed reason; the rest kept.
pub fn failed(gw: &VouchrsGateway, error: &Error, now: Time) -> VouchrsGatewayStatus {
    let verdicts = [verdict(
        ConditionType::Degraded,
        true,
        error.condition_reason(),
        error.to_string(),
    )];
    with_conditions(gw, &verdicts, now)
}

/// The events that going from `old` to `new` deserves.
pub fn transitions(
    old: Option<&VouchrsGatewayStatus>,
    new: &VouchrsGatewayStatus,
) -> Vec<Transition> {
    let get = |s: Option<&VouchrsGatewayStatus>, kind| {
        s.and_then(|s| s.condition(kind))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut out = Vec::new();
    let (ready_was, ready_now) = (
        get(old, ConditionType::Ready),
        get(Some(new), ConditionType::Ready),
    );
    if let Some((status, reason)) = &ready_now {
        let was_true = ready_was.as_ref().is_some_and(|(s, _)| s == "True");
        if status == "True" && !was_true {
            out.push(event(EventType::Normal, "Ready", new, ConditionType::Ready));
        } else if status == "False" && was_true && reason != "InvalidSpec" {
            out.push(event(
                EventType::Warning,
                "NotReady",
                new,
                ConditionType::Ready,
            ));
        }
    }
    let (degraded_was, degraded_now) = (
        get(old, ConditionType::Degraded),
        get(Some(new), ConditionType::Degraded),
    );
    if let Some((status, reason)) = &degraded_now
        && status == "True"
        && degraded_was.as_ref() != degraded_now.as_ref()
    {
        let reason = if reason == "InvalidSpec" {
            "InvalidSpec"
        } else {
            "ReconcileFailed"
        };
        out.push(event(
            EventType::Warning,
            reason,
            new,
            ConditionType::Degraded,
        ));
    }
    let (monitoring_was, monitoring_now) = (
        get(old, ConditionType::Monitoring),
        get(Some(new), ConditionType::Monitoring),
    );
    if let Some((status, _)) = &monitoring_now
        && status == "False"
        && monitoring_was.as_ref() != monitoring_now.as_ref()
    {
        out.push(event(
            EventType::Warning,
            "MonitoringUnavailable",
            new,
            ConditionType::Monitoring,
        ));
    }
    if new.keys_rotated_at.is_some()
        && old.and_then(|o| o.keys_rotated_at.as_ref()) != new.keys_rotated_at.as_ref()
    {
        out.push(Transition {
            type_: EventType::Normal,
            reason: "KeysRotated",
            note: "a new cookie key seals from now on; older keys still open".into(),
        });
    }
    out
}

fn event(
    type_: EventType,
    reason: &'static str,
    status: &VouchrsGatewayStatus,
    kind: ConditionType,
) -> Transition {
    let note = status
        .condition(kind)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Transition {
        type_,
        reason,
        note,
    }
}

fn verdict(kind: ConditionType, status: bool, reason: &'static str, message: String) -> Verdict {
    Verdict {
        kind,
        status,
        reason,
        message,
    }
}

/// The gateway's current status with `verdicts` merged in: a condition keeps its
/// `lastTransitionTime` unless its status flips.
fn with_conditions(gw: &VouchrsGateway, verdicts: &[Verdict], now: Time) -> VouchrsGatewayStatus {
    let mut status = gw.status.clone().unwrap_or_default();
    let generation = gw.metadata.generation;
    status.observed_generation = generation;
    merge(&mut status, verdicts, generation, now);
    status
}

fn merge(
    status: &mut VouchrsGatewayStatus,
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: Time,
) {
    for v in verdicts {
        let text = if v.status { "True" } else { "False" };
        let since = match status.condition(v.kind) {
            Some(old) if old.status == text => old.last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: v.kind.as_str().to_owned(),
            status: text.to_owned(),
            reason: v.reason.to_owned(),
            message: v.message.clone(),
            observed_generation: generation,
            last_transition_time: since,
        };
        match status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(slot) => *slot = condition,
            None => status.conditions.push(condition),
        }
    }
    // A fixed order, so that equal statuses compare equal.
    status.conditions.sort_by_key(|c| {
        ConditionType::ALL
            .iter()
            .position(|k| k.as_str() == c.type_)
    });
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
