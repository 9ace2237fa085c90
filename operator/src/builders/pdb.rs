//! The PodDisruptionBudget: voluntary disruptions (node drains, cluster upgrades) take one
//! proxy pod at a time. Only built when at least two pods always run; with one, a budget would
//! either block every drain or protect nothing.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Names, meta, selector};
use crate::resolve::Resolved;

pub fn build(r: &Resolved, owner: &Option<OwnerReference>) -> Option<PodDisruptionBudget> {
    if !r.scaling.wants_pdb() {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: meta(r, &Names::new(&r.name).workload, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&r.name)),
                ..LabelSelector::default()
            }),
            // Unready pods may always be evicted: they serve nothing, and a stuck rollout
            // must not block a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    #[test]
    fn only_when_two_pods_always_run() {
        assert!(build(&resolved(Tier::Development), &None).is_none());
        for tier in &Tier::ALL[1..] {
            let pdb = build(&resolved(*tier), &None).unwrap();
            let spec = pdb.spec.unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(
                spec.selector.unwrap().match_labels.unwrap(),
                selector("shop")
            );
        }
    }
}
