//! Condition and event rules.

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::builders::fixtures::gateway;
use crate::tier::Tier;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn deployment(available: i32) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(2),
        updated_replicas: Some(2),
        ready_replicas: Some(available),
        available_replicas: Some(available),
        ..DeploymentStatus::default()
    });
    d
}

#[test]
fn transition_time_moves_only_when_the_status_flips() {
    let mut gw = gateway(Tier::Staging);
    gw.metadata.generation = Some(1);
    let first = applied(&gw, &deployment(0), "e".into(), None, at(100));
    gw.status = Some(first.clone());
    let second = applied(&gw, &deployment(0), "e".into(), None, at(200));
    assert_eq!(
        first, second,
        "same observation, same status: nothing to write"
    );
    gw.status = Some(second);
    let third = applied(&gw, &deployment(2), "e".into(), None, at(300));
    let ready = third.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), &ready.last_transition_time),
        ("True", &at(300))
    );
    let degraded = third.condition(ConditionType::Degraded).unwrap();
    assert_eq!(degraded.last_transition_time, at(100));
    assert_eq!(third.ready_replicas, Some(2));
}

#[test]
fn events_fire_on_transitions_only() {
    let mut gw = gateway(Tier::Staging);
    let not_ready = applied(&gw, &deployment(0), "e".into(), None, at(1));
    assert!(
        transitions(None, &not_ready).is_empty(),
        "a new gateway that is not ready yet is no news"
    );
    gw.status = Some(not_ready.clone());
    let ready = applied(&gw, &deployment(2), "e".into(), None, at(2));
    let events = transitions(Some(&not_ready), &ready);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].type_, events[0].reason),
        (EventType::Normal, "Ready")
    );
    assert!(transitions(Some(&ready), &ready).is_empty());
}

#[test]
fn an_invalid_spec_warns_once() {
    let gw = gateway(Tier::Staging);
    let error = InvalidSpec::new("spec.upstream.connectTimeout", "`soon` is not a duration");
    let status = invalid(&gw, &error, at(1));
    let ready = status.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(ready.message.contains("connectTimeout"));
    let events = transitions(gw.status.as_ref(), &status);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].type_, events[0].reason),
        (EventType::Warning, "InvalidSpec")
    );
    assert!(transitions(Some(&status), &status).is_empty());
}

#[test]
fn a_failure_marks_degraded_and_keeps_ready() {
    let mut gw = gateway(Tier::Staging);
    gw.status = Some(applied(&gw, &deployment(2), "e".into(), None, at(1)));
    let status = failed(&gw, &Error::Random("no entropy".into()), at(2));
    assert_eq!(
        status.condition(ConditionType::Ready).unwrap().status,
        "True"
    );
    let degraded = status.condition(ConditionType::Degraded).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NoRandomness")
    );
    let events = transitions(gw.status.as_ref(), &status);
    assert_eq!(events[0].reason, "ReconcileFailed");
}
