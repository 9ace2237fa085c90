//! Deployment builder tests: the seed's numbers, exactly.

use super::*;
use crate::builders::fixtures::{gateway, resolved};
use crate::resolve::{Settings, resolve};
use crate::tier::Tier;

fn container_of(d: &Deployment) -> &Container {
    &d.spec.template.spec.as_ref().unwrap().containers[0]
}

fn env_of(d: &Deployment, name: &str) -> Option<String> {
    container_of(d)
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn every_tier_gets_exactly_the_seed_resources_and_threads() {
    // (tier, requests mem/cpu, limits mem/cpu, worker threads = ceil(limit cores))
    let seed = [
        (Tier::Development, "32Mi", "50m", "128Mi", "200m", "1"),
        (Tier::Staging, "64Mi", "100m", "256Mi", "500m", "1"),
        (
            Tier::ProductionSmall,
            "128Mi",
            "200m",
            "512Mi",
            "1000m",
            "1",
        ),
        (Tier::ProductionMedium, "256Mi", "500m", "1Gi", "2000m", "2"),
        (Tier::ProductionLarge, "512Mi", "1000m", "2Gi", "4000m", "4"),
        (
            Tier::ProductionEnterprise,
            "1Gi",
            "2000m",
            "4Gi",
            "8000m",
            "8",
        ),
    ];
    for (tier, req_mem, req_cpu, lim_mem, lim_cpu, threads) in seed {
        let d = build(&resolved(tier), &None, "h");
        let res = container_of(&d).resources.clone().unwrap();
        let q = |m: &BTreeMap<String, Quantity>, k: &str| m[k].0.clone();
        let requests = res.requests.unwrap();
        let limits = res.limits.unwrap();
        assert_eq!(
            (
                q(&requests, "memory"),
                q(&requests, "cpu"),
                q(&limits, "memory"),
                q(&limits, "cpu")
            ),
            (
                req_mem.into(),
                req_cpu.into(),
                lim_mem.into(),
                lim_cpu.into()
            ),
            "{tier}"
        );
        assert_eq!(
            env_of(&d, "TOKIO_WORKER_THREADS").as_deref(),
            Some(threads),
            "{tier}"
        );
    }
}

#[test]
fn worker_threads_follow_an_overridden_cpu_limit() {
    let mut gw = gateway(Tier::Staging);
    gw.spec.overrides = Some(
        serde_json::from_value(serde_json::json!({
            "resources": { "limits": { "cpu": "2500m" } }
        }))
        .unwrap(),
    );
    let r = resolve(&gw, &Settings::default()).unwrap();
    assert_eq!(r.worker_threads, 3);
    let d = build(&r, &None, "h");
    assert_eq!(env_of(&d, "TOKIO_WORKER_THREADS").as_deref(), Some("3"));
    assert_eq!(r.proxy.runtime.worker_threads, Some(3));
}

#[test]
fn seed_environment_and_config_agree() {
    let d = build(&resolved(Tier::Staging), &None, "h");
    assert_eq!(env_of(&d, "SESSION_DURATION_HOURS").as_deref(), Some("24"));
    assert_eq!(env_of(&d, "SESSION_REFRESH_HOURS").as_deref(), Some("2"));
    assert_eq!(env_of(&d, "RUST_LOG").as_deref(), Some("info"));
    assert_eq!(
        container_of(&d).args.as_deref(),
        Some(&["--config".to_owned(), "/etc/vouchrs/proxy.toml".to_owned()][..])
    );
}

#[test]
fn runs_with_the_seed_security_context() {
    let d = build(&resolved(Tier::ProductionSmall), &None, "h");
    let sc = container_of(&d).security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.run_as_group, Some(1000));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(1000));
}

#[test]
fn probes_hit_the_admin_port_and_grace_covers_the_drain() {
    let r = resolved(Tier::ProductionSmall);
    let d = build(&r, &None, "h");
    let c = container_of(&d);
    let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let port = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .port
        .clone();
    assert_eq!(port, IntOrString::String("admin".into()));
    let admin = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("admin"));
    assert_eq!(admin.unwrap().container_port, 9090);
    let grace = d
        .spec
        .template
        .spec
        .unwrap()
        .termination_grace_period_seconds
        .unwrap();
    let server = &r.proxy.server;
    let drain = (server.drain_delay.0 + server.shutdown_grace.0).as_secs() as i64;
    assert!(grace > drain, "grace {grace} must exceed drain {drain}");
}

#[test]
fn replicas_only_without_an_autoscaler() {
    let fixed = build(&resolved(Tier::Development), &None, "h");
    assert_eq!(fixed.spec.replicas, Some(1));
    for tier in &Tier::ALL[1..] {
        let d = build(&resolved(*tier), &None, "h");
        assert_eq!(d.spec.replicas, None, "{tier}");
    }
}

#[test]
fn labels_and_selector_do_not_follow_the_spec() {
    let a = build(&resolved(Tier::Development), &None, "one");
    let mut gw = gateway(Tier::ProductionLarge);
    gw.spec.log_level = Some("debug".into());
    gw.spec.session =
        Some(serde_json::from_value(serde_json::json!({"durationHours": 8})).unwrap());
    let b = build(&resolve(&gw, &Settings::default()).unwrap(), &None, "two");
    let parts = |d: &Deployment| {
        let spec = d.spec.clone();
        (
            d.metadata.labels.clone(),
            spec.selector,
            spec.template.metadata.unwrap().labels,
        )
    };
    assert_eq!(parts(&a), parts(&b));
    let hash = |d: &Deployment| {
        d.spec
            .clone()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!((hash(&a), hash(&b)), ("one".into(), "two".into()));
}

#[test]
fn mounts_config_file_and_key_directory() {
    let d = build(&resolved(Tier::Staging), &None, "h");
    let mounts = container_of(&d).volume_mounts.clone().unwrap();
    assert_eq!(mounts[0].mount_path, "/etc/vouchrs/proxy.toml");
    assert_eq!(mounts[1].mount_path, "/etc/vouchrs/keys");
    assert_eq!(
        mounts[1].sub_path, None,
        "a subPath mount would never see rotated keys"
    );
    let volumes = d.spec.template.spec.unwrap().volumes.unwrap();
    assert_eq!(
        volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
        Some("shop-vouchrs-keys")
    );
}
