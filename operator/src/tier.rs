//! Scale tiers: the deployment guide's requests and limits, and our replica bounds.
//!
//! Requests and limits are the seed's table, verbatim. The replica bounds are ours; the
//! reasoning, per tier, is in the comment on [`TIERS`]. The autoscaler aims for 60 % CPU and
//! 70 % memory of the *requests* (the seed's HPA), so a pod's share of a tier's load at target
//! is `0.6 × CPU request`. We size with 10,000 requests per second per core, 40 % of the
//! seed's unmeasured "25,000+ RPS per core", until our own load harness gives a figure.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A scale tier, chosen in `spec.tier`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Local development and tests; under 100 RPS. One pod, no autoscaling.
    Development,
    /// Integration testing and staging; 100-1,000 RPS.
    Staging,
    /// Small production; 1,000-5,000 RPS.
    ProductionSmall,
    /// Medium production; 5,000-25,000 RPS.
    ProductionMedium,
    /// Large production; 25,000-100,000 RPS.
    ProductionLarge,
    /// Enterprise scale; 100,000+ RPS.
    ProductionEnterprise,
}

/// What a tier decides. Quantities are kept as the seed wrote them, so the rendered manifests
/// read like the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSpec {
    pub tier: Tier,
    pub request_memory: &'static str,
    pub request_cpu: &'static str,
    pub limit_memory: &'static str,
    pub limit_cpu: &'static str,
    /// Fewest pods. With `min_replicas == max_replicas` the tier runs fixed replicas, no HPA.
    pub min_replicas: i32,
    pub max_replicas: i32,
}

/// Seed HPA targets, in percent of the requests.
pub const TARGET_CPU_UTILIZATION: i32 = 60;
pub const TARGET_MEMORY_UTILIZATION: i32 = 70;

/// The tier table.
///
/// | tier | req mem / cpu | lim mem / cpu | min | max | per pod at 60 % | max capacity |
/// |---|---|---|---|---|---|---|
/// | development | 32Mi / 50m | 128Mi / 200m | 1 | 1 | (limit 0.2 core ≈ 2,000) | < 100 RPS needs one pod |
/// | staging | 64Mi / 100m | 256Mi / 500m | 2 | 4 | 600 RPS | 2,400 RPS |
/// | production-small | 128Mi / 200m | 512Mi / 1000m | 2 | 10 | 1,200 RPS | 12,000 RPS |
/// | production-medium | 256Mi / 500m | 1Gi / 2000m | 3 | 20 | 3,000 RPS | 60,000 RPS |
/// | production-large | 512Mi / 1000m | 2Gi / 4000m | 4 | 40 | 6,000 RPS | 240,000 RPS |
/// | production-enterprise | 1Gi / 2000m | 4Gi / 8000m | 6 | 60 | 12,000 RPS | 720,000 RPS |
///
/// Why these bounds:
/// - **Minimums.** Development runs one pod: it is cheap and nobody pages for it. Every other
///   tier runs at least two, so a node drain or a crash never takes the gateway down and a
///   PodDisruptionBudget can exist (it needs two). Medium takes three and large four so that
///   losing one pod costs at most a third (a quarter) of capacity while the rest absorb it;
///   enterprise takes six, two per zone in a three-zone cluster.
/// - **Maximums** give about twice the tier's top load at the 60 % target (the seed's
///   "2x headroom"): staging 1,000 RPS → 4 pods (2,400 RPS), small 5,000 → 10 (12,000),
///   medium 25,000 → 20 (60,000; also the seed's HPA maximum), large 100,000 → 40 (240,000).
///   Enterprise is open-ended above 100,000 RPS; 60 pods cover 720,000 RPS, and larger fleets
///   should raise `overrides.maxReplicas` knowingly rather than by default.
/// - The limits allow bursts well above the request (4-5x CPU), so real capacity before the
///   autoscaler reacts is larger than the table says.
#[rustfmt::skip]
pub const TIERS: [TierSpec; 6] = [
    TierSpec { tier: Tier::Development, request_memory: "32Mi", request_cpu: "50m", limit_memory: "128Mi", limit_cpu: "200m", min_replicas: 1, max_replicas: 1 },
    TierSpec { tier: Tier::Staging, request_memory: "64Mi", request_cpu: "100m", limit_memory: "256Mi", limit_cpu: "500m", min_replicas: 2, max_replicas: 4 },
    TierSpec { tier: Tier::ProductionSmall, request_memory: "128Mi", request_cpu: "200m", limit_memory: "512Mi", limit_cpu: "1000m", min_replicas: 2, max_replicas: 10 },
    TierSpec { tier: Tier::ProductionMedium, request_memory: "256Mi", request_cpu: "500m", limit_memory: "1Gi", limit_cpu: "2000m", min_replicas: 3, max_replicas: 20 },
    TierSpec { tier: Tier::ProductionLarge, request_memory: "512Mi", request_cpu: "1000m", limit_memory: "2Gi", limit_cpu: "4000m", min_replicas: 4, max_replicas: 40 },
    TierSpec { tier: Tier::ProductionEnterprise, request_memory: "1Gi", request_cpu: "2000m", limit_memory: "4Gi", limit_cpu: "8000m", min_replicas: 6, max_replicas: 60 },
];

impl Tier {
    pub const ALL: [Tier; 6] = [
        Tier::Development,
        Tier::Staging,
        Tier::ProductionSmall,
        Tier::ProductionMedium,
        Tier::ProductionLarge,
        Tier::ProductionEnterprise,
    ];

    /// This tier's row of [`TIERS`].
    pub fn spec(self) -> &'static TierSpec {
        // Invariant: TIERS lists every variant once, in declaration order (tested below).
        &TIERS[self as usize]
    }

    /// The name as written in `spec.tier` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Development => "development",
            Tier::Staging => "staging",
            Tier::ProductionSmall => "production-small",
            Tier::ProductionMedium => "production-medium",
            Tier::ProductionLarge => "production-large",
            Tier::ProductionEnterprise => "production-enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_variant() {
        for tier in Tier::ALL {
            assert_eq!(tier.spec().tier, tier);
        }
    }

    #[test]
    fn bounds_are_sane() {
        for t in TIERS {
            assert!(
                1 <= t.min_replicas && t.min_replicas <= t.max_replicas,
                "{:?}",
                t.tier
            );
            if t.tier != Tier::Development {
                assert!(
                    t.min_replicas >= 2,
                    "{:?} must survive losing a pod",
                    t.tier
                );
            }
        }
    }

    #[test]
    fn names_match_serde() {
        for tier in Tier::ALL {
            let json = serde_json::to_value(tier).unwrap();
            assert_eq!(json, tier.as_str());
        }
    }
}
