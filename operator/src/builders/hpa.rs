//! The HorizontalPodAutoscaler (autoscaling/v2): CPU and memory targets in percent of the
//! requests, with the deployment guide's pacing: scale out once load has lasted 30 s, scale in
//! only after 5 minutes of low use, and then gently (a flapping fleet drops keep-alive
//! connections for nothing).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Names, meta};
use crate::resolve::{Resolved, Scaling};

/// Seconds of sustained load before scaling out (the guide's "30 seconds sustained load").
pub const SCALE_UP_WINDOW_SECS: i32 = 30;
/// Seconds of low use before scaling in (the guide's "5 minutes low utilization").
pub const SCALE_DOWN_WINDOW_SECS: i32 = 300;

pub fn build(r: &Resolved, owner: &Option<OwnerReference>) -> Option<HorizontalPodAutoscaler> {
    let Scaling::Autoscaled {
        min,
        max,
        cpu_percent,
        memory_percent,
    } = r.scaling
    else {
        return None;
    };
    let name = Names::new(&r.name).workload;
    let resource = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: resource.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let policy = |type_: &str, value: i32, period_seconds: i32| HPAScalingPolicy {
        type_: type_.to_owned(),
        value,
        period_seconds,
    };
    Some(HorizontalPodAutoscaler {
        metadata: meta(r, &name, owner),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name,
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![
                resource("cpu", cpu_percent),
                resource("memory", memory_percent),
            ]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_up: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(SCALE_UP_WINDOW_SECS),
                    // Double, or add four pods, every 15 s: whichever is more.
                    policies: Some(vec![policy("Percent", 100, 15), policy("Pods", 4, 15)]),
                    select_policy: Some("Max".to_owned()),
                    ..HPAScalingRules::default()
                }),
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(SCALE_DOWN_WINDOW_SECS),
                    // At most a fifth of the fleet per minute.
                    policies: Some(vec![policy("Percent", 20, 60)]),
                    select_policy: Some("Max".to_owned()),
                    ..HPAScalingRules::default()
                }),
            }),
        },
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    #[test]
    fn development_runs_fixed_replicas() {
        assert!(build(&resolved(Tier::Development), &None).is_none());
    }

    #[test]
    fn every_other_tier_autoscales_within_its_bounds_at_the_seed_targets() {
        let expected = [
            (Tier::Staging, 2, 4),
            (Tier::ProductionSmall, 2, 10),
            (Tier::ProductionMedium, 3, 20),
            (Tier::ProductionLarge, 4, 40),
            (Tier::ProductionEnterprise, 6, 60),
        ];
        for (tier, min, max) in expected {
            let hpa = build(&resolved(tier), &None).unwrap();
            let spec = hpa.spec;
            assert_eq!(
                (spec.min_replicas, spec.max_replicas),
                (Some(min), max),
                "{tier}"
            );
            assert_eq!(spec.scale_target_ref.name, "shop-vouchrs");
            assert_eq!(spec.scale_target_ref.kind, "Deployment");
            let targets: Vec<(String, Option<i32>)> = spec
                .metrics
                .unwrap()
                .into_iter()
                .map(|m| {
                    let r = m.resource.unwrap();
                    (r.name, r.target.average_utilization)
                })
                .collect();
            assert_eq!(
                targets,
                [("cpu".into(), Some(60)), ("memory".into(), Some(70))]
            );
            let behavior = spec.behavior.unwrap();
            assert_eq!(
                behavior.scale_up.unwrap().stabilization_window_seconds,
                Some(30)
            );
            assert_eq!(
                behavior.scale_down.unwrap().stabilization_window_seconds,
                Some(300)
            );
        }
    }
}
