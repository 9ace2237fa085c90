//! The Prometheus Operator's kinds (`monitoring.coreos.com/v1`) for a gateway that asks for
//! monitoring: a ServiceMonitor scraping the proxy Service's `admin` port, and a
//! PrometheusRule with the alerts of `config/monitoring/vouchrs-rules.yaml` scoped to the
//! gateway. The operator has no Rust types for these kinds (no extra crate): they are
//! [`DynamicObject`]s described by an [`ApiResource`].
//!
//! Scoping: the rules file is written fleet-wide. For one gateway, every series selector in
//! every expression gets matchers: the proxy's own series (`vouchrs_*`, `process_*`)
//! `namespace` and `gateway` (the ServiceMonitor's relabelings set `gateway` and `tier`);
//! the cAdvisor and kube-state-metrics series (`container_*`, `kube_*`) `namespace` and the
//! gateway's pod names. So one PrometheusRule per gateway never alerts twice on the same
//! series.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, TypeMeta};
use serde_json::{Value, json};

use super::{Names, labels, meta, selector};
use crate::resolve::Resolved;

/// The alert rules, fleet-wide: the single source of truth, also shipped as a plain rules
/// file and (see [`fleet_prometheus_rule`]) as `config/monitoring/prometheusrule.yaml`.
pub const RULES_YAML: &str = include_str!("../../../config/monitoring/vouchrs-rules.yaml");

/// The API group and version of the Prometheus Operator's kinds.
pub const GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// Metric name prefixes of series scraped from the proxy (labelled `namespace`, `gateway`).
const PROXY_PREFIXES: [&str; 2] = ["vouchrs_", "process_"];
/// Metric name prefixes of cAdvisor and kube-state-metrics series (labelled `namespace`, `pod`).
const POD_PREFIXES: [&str; 2] = ["container_", "kube_"];

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".to_owned(),
        version: "v1".to_owned(),
        api_version: GROUP_VERSION.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

pub fn service_monitor_resource() -> ApiResource {
    resource("ServiceMonitor", "servicemonitors")
}

pub fn prometheus_rule_resource() -> ApiResource {
    resource("PrometheusRule", "prometheusrules")
}

fn object(ar: &ApiResource, metadata: ObjectMeta, spec: Value) -> DynamicObject {
    DynamicObject {
        types: Some(TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        }),
        metadata,
        data: json!({ "spec": spec }),
    }
}

/// Our labels over the user's extra ones (ours win: they are how the children are found).
fn monitoring_meta(
    r: &Resolved,
    extra: &BTreeMap<String, String>,
    owner: &Option<OwnerReference>,
) -> ObjectMeta {
    let mut metadata = meta(r, &Names::new(&r.name).workload, owner);
    let mut all = extra.clone();
    all.extend(labels(&r.name));
    metadata.labels = Some(all);
    metadata
}

/// The ServiceMonitor: the gateway's Service, port `admin`, `/metrics`, with `gateway` and
/// `tier` target labels (the dashboard's and the alerts' grouping labels).
pub fn service_monitor(
    r: &Resolved,
    extra: &BTreeMap<String, String>,
    owner: &Option<OwnerReference>,
) -> DynamicObject {
    let spec = json!({
        "selector": { "matchLabels": selector(&r.name) },
        "namespaceSelector": { "matchNames": [r.namespace] },
        "endpoints": [{
            "port": "admin",
            "path": "/metrics",
            "scheme": "http",
            "relabelings": [
                { "action": "replace", "targetLabel": "gateway", "replacement": r.name },
                { "action": "replace", "targetLabel": "tier", "replacement": r.tier.as_str() },
            ],
        }],
    });
    object(
        &service_monitor_resource(),
        monitoring_meta(r, extra, owner),
        spec,
    )
}

/// The PrometheusRule of one gateway: the rules file with every selector scoped to it.
pub fn prometheus_rule(
    r: &Resolved,
    extra: &BTreeMap<String, String>,
    owner: &Option<OwnerReference>,
) -> DynamicObject {
    let proxy = format!("namespace=\"{}\",gateway=\"{}\"", r.namespace, r.name);
    let pods = format!(
        "namespace=\"{}\",pod=~\"{}-[a-z0-9]+-[a-z0-9]+\"",
        r.namespace,
        Names::new(&r.name).workload
    );
    let mut groups = rule_groups();
    for rule in groups
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter_map(|g| g.get_mut("rules")?.as_array_mut())
        .flatten()
    {
        if let Some(expr) = rule.get("expr").and_then(Value::as_str) {
            rule["expr"] = Value::String(scope_expr(expr, &proxy, &pods));
        }
    }
    object(
        &prometheus_rule_resource(),
        monitoring_meta(r, extra, owner),
        json!({ "groups": groups }),
    )
}

/// The fleet-wide PrometheusRule of `config/monitoring/prometheusrule.yaml` (no namespace:
/// apply it where your Prometheus looks for rules). Not for use together with
/// `spec.monitoring` on gateways, which would alert twice.
pub fn fleet_prometheus_rule() -> DynamicObject {
    let metadata = ObjectMeta {
        name: Some("vouchrs".to_owned()),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "vouchrs".to_owned()),
            ("app.kubernetes.io/part-of".to_owned(), "vouchrs".to_owned()),
        ])),
        ..ObjectMeta::default()
    };
    object(
        &prometheus_rule_resource(),
        metadata,
        json!({ "groups": rule_groups() }),
    )
}

/// The `groups` of the rules file.
pub fn rule_groups() -> Value {
    // Invariant: the embedded file is valid YAML (promtool and the tests below check it).
    let file: Value = serde_yaml_ng::from_str(RULES_YAML).expect("vouchrs-rules.yaml parses");
    file["groups"].clone()
}

/// Adds `proxy` matchers to every selector of a proxy metric in `expr` and `pods` matchers
/// to every selector of a cAdvisor or kube-state-metrics metric. String literals and label
/// matchers are left as they are.
pub fn scope_expr(expr: &str, proxy: &str, pods: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = String::with_capacity(expr.len() + 64);
    let mut i = 0;
    let mut braces = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            // A string literal, copied as is (backslash escapes except in raw strings).
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '\\' && c != '`' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if chars[i - 1] == c {
                    break;
                }
            }
            continue;
        }
        match c {
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            _ => {}
        }
        let starts_ident =
            (c.is_ascii_alphabetic() || c == '_' || c == ':') && (i == 0 || !ident(chars[i - 1]));
        if braces > 0 || !starts_ident {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        out.push_str(&name);
        let matchers = if PROXY_PREFIXES.iter().any(|p| name.starts_with(p)) {
            proxy
        } else if POD_PREFIXES.iter().any(|p| name.starts_with(p)) {
            pods
        } else {
            continue;
        };
        if chars.get(i) == Some(&'{') {
            let empty = chars[i + 1..]
                .iter()
                .find(|c| !c.is_whitespace())
                .is_some_and(|c| *c == '}');
            out.push('{');
            out.push_str(matchers);
            if !empty {
                out.push(',');
            }
            braces += 1;
            i += 1;
        } else {
            out.push('{');
            out.push_str(matchers);
            out.push('}');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ADMIN_PORT;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    const FLEET_FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/monitoring/prometheusrule.yaml"
    );

    /// The YAML of `config/monitoring/prometheusrule.yaml`.
    fn fleet_yaml() -> String {
        format!(
            "# Generated from vouchrs-rules.yaml (the source of truth); do not edit. Regenerate:\n\
             #   VOUCHRS_BLESS=1 cargo test -p vouchrs-operator prometheusrule_file\n\
             # The same alerts for every gateway, for clusters that do not set spec.monitoring\n\
             # (which creates one scoped PrometheusRule per gateway instead; never use both).\n{}",
            serde_yaml_ng::to_string(&fleet_prometheus_rule()).unwrap()
        )
    }

    #[test]
    fn prometheusrule_file_matches_the_rules_file() {
        let expected = fleet_yaml();
        if std::env::var_os("VOUCHRS_BLESS").is_some() {
            std::fs::write(FLEET_FILE, &expected).unwrap();
        }
        let on_disk = std::fs::read_to_string(FLEET_FILE).unwrap_or_default();
        assert!(
            on_disk == expected,
            "config/monitoring/prometheusrule.yaml is stale: run `VOUCHRS_BLESS=1 cargo test -p vouchrs-operator prometheusrule_file`"
        );
        // And it is the same groups, semantically.
        let file: Value = serde_yaml_ng::from_str(&on_disk).unwrap();
        assert_eq!(file["spec"]["groups"], rule_groups());
    }

    #[test]
    fn every_alert_has_a_summary_a_description_and_a_runbook_section() {
        let runbook =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbook.md"))
                .unwrap()
                .to_lowercase();
        let groups = rule_groups();
        let rules: Vec<&Value> = groups
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), 8);
        for rule in rules {
            let name = rule["alert"].as_str().unwrap();
            let a = &rule["annotations"];
            assert!(
                a["summary"].is_string() && a["description"].is_string(),
                "{name}"
            );
            let url = a["runbook_url"].as_str().unwrap();
            let anchor = name.to_lowercase();
            assert!(
                url.ends_with(&format!("runbook.md#{anchor}")),
                "{name}: {url}"
            );
            assert!(
                runbook.contains(&format!("## {anchor}")),
                "docs/runbook.md has no section {name}"
            );
            assert!(
                ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap())
            );
        }
    }

    #[test]
    fn scoping_adds_matchers_to_every_selector_and_nothing_else() {
        let p = "namespace=\"ns\",gateway=\"gw\"";
        let k = "namespace=\"ns\",pod=~\"gw-vouchrs-x\"";
        assert_eq!(
            scope_expr(
                "sum(rate(vouchrs_http_responses_total{class=\"5xx\"}[5m])) / sum(rate(vouchrs_http_responses_total[5m]))",
                p,
                k
            ),
            "sum(rate(vouchrs_http_responses_total{namespace=\"ns\",gateway=\"gw\",class=\"5xx\"}[5m])) / sum(rate(vouchrs_http_responses_total{namespace=\"ns\",gateway=\"gw\"}[5m]))"
        );
        assert_eq!(
            scope_expr(
                "label_replace(max by (pod, container) (container_memory_working_set_bytes{}), \"gateway\", \"$1\", \"pod\", \"(.+)-vouchrs_x-kube_y\")",
                p,
                k
            ),
            "label_replace(max by (pod, container) (container_memory_working_set_bytes{namespace=\"ns\",pod=~\"gw-vouchrs-x\"}), \"gateway\", \"$1\", \"pod\", \"(.+)-vouchrs_x-kube_y\")"
        );
        assert_eq!(
            scope_expr("up{job=\"process_x\"} + process_open_fds", p, k),
            "up{job=\"process_x\"} + process_open_fds{namespace=\"ns\",gateway=\"gw\"}"
        );
    }

    #[test]
    fn the_gateway_rule_scopes_every_expression() {
        let r = resolved(Tier::Staging);
        let rule = prometheus_rule(&r, &BTreeMap::new(), &None);
        assert_eq!(
            rule.types.as_ref().unwrap().api_version,
            "monitoring.coreos.com/v1"
        );
        assert_eq!(rule.types.as_ref().unwrap().kind, "PrometheusRule");
        assert_eq!(rule.metadata.name.as_deref(), Some("shop-vouchrs"));
        let groups = rule.data["spec"]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 3);
        let mut selectors = 0;
        for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
            let expr = rule["expr"].as_str().unwrap();
            for metric in [
                "vouchrs_http_responses_total",
                "vouchrs_http_request_duration_seconds_bucket",
                "vouchrs_logins_total",
            ] {
                selectors += expr.matches(&format!("{metric}{{")).count();
                assert_eq!(
                    expr.matches(&format!("{metric}{{")).count(),
                    expr.matches(&format!("{metric}{{namespace=\"shop\",gateway=\"shop\""))
                        .count(),
                    "{expr}"
                );
            }
            for metric in [
                "container_memory_working_set_bytes",
                "container_cpu_usage_seconds_total",
                "kube_pod_container_resource_limits",
            ] {
                selectors += expr.matches(&format!("{metric}{{")).count();
                assert_eq!(
                    expr.matches(&format!("{metric}{{")).count(),
                    expr.matches(&format!(
                        "{metric}{{namespace=\"shop\",pod=~\"shop-vouchrs-[a-z0-9]+-[a-z0-9]+\","
                    ))
                    .count(),
                    "{expr}"
                );
            }
        }
        assert_eq!(selectors, 14, "every selector of every alert was seen");
    }

    #[test]
    fn the_service_monitor_scrapes_the_admin_port_with_gateway_and_tier_labels() {
        let r = resolved(Tier::ProductionSmall);
        let extra = BTreeMap::from([
            ("release".to_owned(), "kube-prometheus-stack".to_owned()),
            ("app.kubernetes.io/name".to_owned(), "not-ours".to_owned()),
        ]);
        let sm = service_monitor(&r, &extra, &Some(OwnerReference::default()));
        assert_eq!(sm.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(sm.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(sm.metadata.owner_references.as_ref().unwrap().len(), 1);
        let labels = sm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["release"], "kube-prometheus-stack");
        assert_eq!(
            labels["app.kubernetes.io/name"], "vouchrs-proxy",
            "ours win"
        );
        let spec = &sm.data["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"],
            serde_json::to_value(selector("shop")).unwrap()
        );
        assert_eq!(spec["namespaceSelector"]["matchNames"], json!(["shop"]));
        let endpoint = &spec["endpoints"][0];
        assert_eq!(endpoint["port"], "admin");
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(
            endpoint["relabelings"],
            json!([
                { "action": "replace", "targetLabel": "gateway", "replacement": "shop" },
                { "action": "replace", "targetLabel": "tier", "replacement": "production-small" },
            ])
        );
        // The Service does expose a port named admin.
        let svc = super::super::service::build(&r, &None);
        assert!(
            svc.spec
                .unwrap()
                .ports
                .unwrap()
                .iter()
                .any(|p| p.name.as_deref() == Some("admin") && p.port == ADMIN_PORT)
        );
    }
}
