//! Reconcile scenarios against the fake API server: each asserts the exact conversation.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::Recorder;

use super::*;
use crate::builders::fixtures::gateway;
use crate::fake_api::{self, Call, Shared};
use crate::tier::Tier;

fn fixed_now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap()
}

fn context(client: Client) -> Context {
    let recorder = Recorder::new(client.clone(), "vouchrs-operator".into());
    Context::new(
        client,
        recorder,
        Settings::default(),
        Arc::new(Metrics::default()),
        fixed_now,
    )
}

/// Runs one reconcile of `gw` against `state` and returns the calls it made.
async fn run(
    state: &Shared,
    client: &Client,
    gw: &VouchrsGateway,
) -> (Result<Action, Error>, Vec<Call>) {
    fake_api::take_calls(state);
    let result = reconcile_gateway(gw, &context(client.clone())).await;
    (result, fake_api::take_calls(state))
}

fn shorts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::short).collect()
}

fn staging() -> VouchrsGateway {
    let mut gw = gateway(Tier::Staging);
    gw.metadata.generation = Some(1);
    gw
}

const FIRST_STAGING: [&str; 12] = [
    "GET secrets/shop-vouchrs-keys",
    "POST shop/secrets",
    "PATCH configmaps/shop-vouchrs-config",
    "PATCH serviceaccounts/shop-vouchrs",
    "PATCH roles/shop-vouchrs",
    "PATCH rolebindings/shop-vouchrs",
    "GET deployments/shop-vouchrs",
    "PATCH deployments/shop-vouchrs",
    "PATCH services/shop-vouchrs",
    "PATCH horizontalpodautoscalers/shop-vouchrs",
    "PATCH poddisruptionbudgets/shop-vouchrs",
    "PATCH vouchrsgateways/shop/status",
];

#[tokio::test]
async fn first_reconcile_creates_everything() {
    let gw = staging();
    let (client, state) = fake_api::start(&gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    assert_eq!(shorts(&calls), FIRST_STAGING);
    for call in calls.iter().filter(|c| c.method == Method::PATCH) {
        assert!(
            call.manager
                .as_deref()
                .unwrap()
                .starts_with("vouchrs-operator/"),
            "{call:?}"
        );
        assert!(
            call.path.ends_with("/status")
                || call.body.as_ref().unwrap()["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        );
    }
    let deployment = &calls[7].body.as_ref().unwrap()["spec"];
    assert!(
        deployment.get("replicas").is_none(),
        "the HPA owns replicas"
    );
    let status = fake_api::gateway(&state, &gw).status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status
            .condition(crate::api::ConditionType::Ready)
            .unwrap()
            .reason,
        "NoAvailablePods"
    );
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://shop-vouchrs.shop.svc:80")
    );
}

#[tokio::test]
async fn second_reconcile_with_the_same_input_writes_nothing_new() {
    let gw = staging();
    let (client, state) = fake_api::start(&gw);
    let (_, first) = run(&state, &client, &gw).await;
    let gw = fake_api::gateway(&state, &gw);
    let (result, second) = run(&state, &client, &gw).await;
    assert!(result.is_ok());
    // Reads, and applies identical to the first ones: no create, replace, delete, status
    // write or event.
    let expected: Vec<&str> = FIRST_STAGING
        .iter()
        .copied()
        .filter(|c| !c.starts_with("POST") && !c.ends_with("/status"))
        .collect();
    assert_eq!(shorts(&second), expected);
    let applies = |calls: &[Call]| -> Vec<(String, Option<String>, Option<serde_json::Value>)> {
        calls
            .iter()
            .filter(|c| c.method == Method::PATCH)
            .map(|c| (c.path.clone(), c.manager.clone(), c.body.clone()))
            .filter(|(p, _, _)| !p.ends_with("/status"))
            .collect()
    };
    assert_eq!(applies(&first), applies(&second));
}

#[tokio::test]
async fn a_tier_change_updates_resources_and_deletes_what_is_no_longer_needed() {
    let gw = staging();
    let (client, state) = fake_api::start(&gw);
    run(&state, &client, &gw).await.0.unwrap();
    let mut gw = fake_api::gateway(&state, &gw);
    gw.spec.tier = Tier::Development;
    gw.metadata.generation = Some(2);
    fake_api::put_gateway(&state, &gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert!(result.is_ok());
    assert_eq!(
        shorts(&calls),
        [
            "GET secrets/shop-vouchrs-keys",
            "PATCH configmaps/shop-vouchrs-config",
            "PATCH serviceaccounts/shop-vouchrs",
            "PATCH roles/shop-vouchrs",
            "PATCH rolebindings/shop-vouchrs",
            "PATCH deployments/shop-vouchrs",
            "PATCH services/shop-vouchrs",
            "GET horizontalpodautoscalers/shop-vouchrs",
            "DELETE horizontalpodautoscalers/shop-vouchrs",
            "GET poddisruptionbudgets/shop-vouchrs",
            "DELETE poddisruptionbudgets/shop-vouchrs",
            "PATCH vouchrsgateways/shop/status",
        ]
    );
    let spec = &calls[5].body.as_ref().unwrap()["spec"];
    assert_eq!(spec["replicas"], 1);
    let resources = &spec["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        serde_json::json!({"cpu": "50m", "memory": "32Mi"})
    );
    assert_eq!(
        resources["limits"],
        serde_json::json!({"cpu": "200m", "memory": "128Mi"})
    );
    assert!(fake_api::object(&state, "horizontalpodautoscalers/shop-vouchrs").is_none());
}

#[tokio::test]
async fn switching_to_autoscaling_hands_replicas_over_first() {
    let mut gw = gateway(Tier::Development);
    gw.metadata.generation = Some(1);
    let (client, state) = fake_api::start(&gw);
    run(&state, &client, &gw).await.0.unwrap();
    let mut gw = fake_api::gateway(&state, &gw);
    gw.spec.tier = Tier::Staging;
    let (_, calls) = run(&state, &client, &gw).await;
    let handover = calls
        .iter()
        .position(|c| c.manager.as_deref() == Some(apply::HANDOVER_MANAGER))
        .unwrap();
    let ours = calls
        .iter()
        .position(|c| c.manager.as_deref() == Some(apply::DEPLOYMENT_MANAGER))
        .unwrap();
    assert!(
        handover < ours,
        "the count must be held before our apply drops it"
    );
    assert_eq!(
        calls[handover].body.as_ref().unwrap()["spec"],
        serde_json::json!({"replicas": 2})
    );
    assert!(
        calls[ours].body.as_ref().unwrap()["spec"]
            .get("replicas")
            .is_none()
    );
}

#[tokio::test]
async fn the_secret_is_never_rewritten_and_rotates_only_on_request() {
    let gw = staging();
    let (client, state) = fake_api::start(&gw);
    run(&state, &client, &gw).await.0.unwrap();
    let keys_before = fake_api::object(&state, "secrets/shop-vouchrs-keys").unwrap();
    for _ in 0..2 {
        let gw = fake_api::gateway(&state, &gw);
        let (_, calls) = run(&state, &client, &gw).await;
        assert!(
            !calls
                .iter()
                .any(|c| c.path.contains("/secrets") && c.is_write()),
            "{calls:?}"
        );
    }
    assert_eq!(
        fake_api::object(&state, "secrets/shop-vouchrs-keys").unwrap(),
        keys_before
    );

    let mut gw = fake_api::gateway(&state, &gw);
    gw.metadata.annotations = Some(BTreeMap::from([(
        crate::api::ROTATE_KEYS_ANNOTATION.to_owned(),
        "2025-06".to_owned(),
    )]));
    fake_api::put_gateway(&state, &gw);
    let (_, calls) = run(&state, &client, &gw).await;
    let writes: Vec<String> = calls
        .iter()
        .filter(|c| c.path.contains("/secrets") && c.is_write())
        .map(Call::short)
        .collect();
    assert_eq!(writes, ["PUT secrets/shop-vouchrs-keys"]);
    let events: Vec<&Call> = calls
        .iter()
        .filter(|c| c.path.contains("/events"))
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body.as_ref().unwrap()["reason"], "KeysRotated");
    let secret = fake_api::object(&state, "secrets/shop-vouchrs-keys").unwrap();
    let ring =
        String::from_utf8(base64_decode(secret["data"]["keyring"].as_str().unwrap())).unwrap();
    assert_eq!(ring.lines().count(), 2, "the old key still opens");

    let gw = fake_api::gateway(&state, &gw);
    let (_, calls) = run(&state, &client, &gw).await;
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("/secrets") && c.is_write()),
        "same token, no second rotation"
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_only_status_and_one_event() {
    let mut gw = staging();
    gw.spec.upstream.connect_timeout = Some("soon".into());
    let (client, state) = fake_api::start(&gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert_eq!(result.unwrap(), Action::await_change(), "no hot retry");
    assert_eq!(
        shorts(&calls),
        ["PATCH vouchrsgateways/shop/status", "POST shop/events"]
    );
    let event = calls[1].body.as_ref().unwrap();
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    let gw = fake_api::gateway(&state, &gw);
    let ready = gw
        .status
        .as_ref()
        .unwrap()
        .condition(crate::api::ConditionType::Ready)
        .unwrap()
        .clone();
    assert_eq!(ready.reason, "InvalidSpec");
    let (_, again) = run(&state, &client, &gw).await;
    assert!(
        again.is_empty(),
        "nothing changed, nothing written: {again:?}"
    );
}

#[tokio::test]
async fn a_gateway_being_deleted_gets_no_calls() {
    let mut gw = staging();
    gw.metadata.deletion_timestamp = Some(Time(fixed_now()));
    let (client, state) = fake_api::start(&gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(calls.is_empty(), "{calls:?}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn monitored() -> VouchrsGateway {
    let mut gw = staging();
    gw.spec.monitoring = Some(crate::api::MonitoringSpec {
        enabled: Some(true),
        labels: Some(BTreeMap::from([("release".to_owned(), "kps".to_owned())])),
    });
    gw
}

/// Makes the fake server serve the Prometheus Operator's kinds.
fn install_prometheus_operator(state: &Shared) {
    state.lock().unwrap().objects.insert(
        "/apis/monitoring.coreos.com/v1".to_owned(),
        serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "monitoring.coreos.com/v1",
            "resources": [
                {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true, "kind": "ServiceMonitor", "verbs": ["get", "patch"]},
                {"name": "prometheusrules", "singularName": "prometheusrule", "namespaced": true, "kind": "PrometheusRule", "verbs": ["get", "patch"]},
            ],
        }),
    );
}

fn monitoring_condition(state: &Shared, gw: &VouchrsGateway) -> Option<(String, String)> {
    fake_api::gateway(state, gw)
        .status?
        .condition(crate::api::ConditionType::Monitoring)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn without_the_prometheus_operator_monitoring_is_reported_not_failed() {
    let gw = monitored();
    let (client, state) = fake_api::start(&gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert_eq!(result.unwrap(), Action::requeue(RESYNC));
    let monitoring: Vec<String> = shorts(&calls)
        .into_iter()
        .filter(|c| c.contains("monitoring.coreos.com"))
        .collect();
    assert_eq!(
        monitoring,
        ["GET monitoring.coreos.com/v1"],
        "discovery only"
    );
    assert_eq!(
        monitoring_condition(&state, &gw),
        Some(("False".into(), "PrometheusOperatorMissing".into()))
    );
    let status = fake_api::gateway(&state, &gw).status.unwrap();
    let degraded = status
        .condition(crate::api::ConditionType::Degraded)
        .unwrap();
    assert_eq!(degraded.status, "False", "the gateway itself is fine");
    let events: Vec<&str> = calls
        .iter()
        .filter(|c| c.path.contains("/events"))
        .map(|c| c.body.as_ref().unwrap()["reason"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["MonitoringUnavailable"]);
}

#[tokio::test]
async fn with_the_prometheus_operator_monitoring_is_applied_then_removed_when_disabled() {
    let gw = monitored();
    let (client, state) = fake_api::start(&gw);
    install_prometheus_operator(&state);
    let (result, calls) = run(&state, &client, &gw).await;
    assert!(result.is_ok());
    let tail: Vec<String> = shorts(&calls)
        .into_iter()
        .skip_while(|c| !c.contains("monitoring.coreos.com"))
        .take(3)
        .collect();
    assert_eq!(
        tail,
        [
            "GET monitoring.coreos.com/v1",
            "PATCH servicemonitors/shop-vouchrs",
            "PATCH prometheusrules/shop-vouchrs",
        ]
    );
    let sm = fake_api::object(&state, "servicemonitors/shop-vouchrs").unwrap();
    assert_eq!(sm["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    let rule = fake_api::object(&state, "prometheusrules/shop-vouchrs").unwrap();
    assert!(
        rule["spec"]["groups"][0]["rules"][0]["expr"]
            .as_str()
            .unwrap()
            .contains("namespace=\"shop\",gateway=\"shop\"")
    );
    assert_eq!(
        monitoring_condition(&state, &gw),
        Some(("True".into(), "Applied".into()))
    );

    // Turned off: ours are deleted, and the condition goes away.
    let mut gw = fake_api::gateway(&state, &gw);
    gw.spec.monitoring = None;
    fake_api::put_gateway(&state, &gw);
    let (result, calls) = run(&state, &client, &gw).await;
    assert!(result.is_ok());
    let deletes: Vec<String> = calls
        .iter()
        .filter(|c| c.method == Method::DELETE)
        .map(Call::short)
        .collect();
    assert_eq!(
        deletes,
        [
            "DELETE servicemonitors/shop-vouchrs",
            "DELETE prometheusrules/shop-vouchrs"
        ]
    );
    assert!(fake_api::object(&state, "servicemonitors/shop-vouchrs").is_none());
    assert_eq!(monitoring_condition(&state, &gw), None);

    // And a gateway that never had monitoring costs no monitoring call at all.
    let gw = fake_api::gateway(&state, &gw);
    let (_, calls) = run(&state, &client, &gw).await;
    assert!(
        !calls
            .iter()
            .any(|c| c.path.contains("monitoring.coreos.com")),
        "{calls:?}"
    );
}
