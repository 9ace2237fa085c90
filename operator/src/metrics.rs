//! Prometheus metrics of the operator, served on the admin port at `/metrics`.
//!
//! Label values come from fixed sets only (error metric labels, tier names), so the number of
//! series is bounded whatever the cluster holds.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::tier::Tier;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

/// The operator's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    gateways: Family<TierLabel, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vouchrs_operator");
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        // 1 ms .. ~16 s
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let gateways = Family::<TierLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles failed, by reason",
            failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconcile",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "gateways",
            "VouchrsGateways known, by tier",
            gateways.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            gateways,
            leader,
        }
    }
}

impl Metrics {
    /// Records one reconcile's outcome and time.
    pub fn reconciled(&self, elapsed: Duration, outcome: Result<(), &Error>) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Err(error) = outcome {
            self.failures
                .get_or_create(&ReasonLabel {
                    reason: error.metric_label(),
                })
                .inc();
        }
    }

    /// Sets the per-tier gateway counts (from the controller's cache, at scrape time).
    pub fn set_gateways(&self, tiers: impl IntoIterator<Item = Tier>) {
        let mut counts = [0i64; Tier::ALL.len()];
        for tier in tiers {
            counts[tier as usize] += 1;
        }
        for tier in Tier::ALL {
            self.gateways
                .get_or_create(&TierLabel {
                    tier: tier.as_str(),
                })
                .set(counts[tier as usize]);
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Invariant: writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode into String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_by_fixed_reason_and_gateways_by_tier() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(3), Ok(()));
        m.reconciled(Duration::from_millis(3), Err(&Error::MissingNamespace));
        m.set_gateways([Tier::Staging, Tier::Staging, Tier::Development]);
        let text = m.encode();
        assert!(
            text.contains("vouchrs_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "vouchrs_operator_reconcile_failures_total{reason=\"missing_namespace\"} 1"
            )
        );
        assert!(text.contains("vouchrs_operator_gateways{tier=\"staging\"} 2"));
        assert!(text.contains("vouchrs_operator_gateways{tier=\"production-large\"} 0"));
        assert!(text.contains("vouchrs_operator_reconcile_duration_seconds_count 2"));
    }
}
