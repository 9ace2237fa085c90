//! Resolve: a `VouchrsGateway` spec plus the tier table becomes checked, concrete values that
//! the builders turn into objects without further decisions.
//!
//! Everything the API server's schema and CEL rules could not check is checked here, so a
//! bad spec stops before any child is written and is reported as `InvalidSpec`. The proxy
//! config is built from the proxy's own type and passed through its own `validate()`.

use std::collections::BTreeMap;
use std::time::Duration;

use vouchrs_proxy::config::{
    AuthPrefix, CookieName, HumanDuration, PathRule, ProxyConfig, PublicUrl, StoreKind, UpstreamUrl,
};

use crate::api::{MAX_NAME_LEN, VouchrsGateway};
use crate::error::InvalidSpec;
use crate::quantity;
use crate::tier::{TARGET_CPU_UTILIZATION, TARGET_MEMORY_UTILIZATION, Tier};

/// The image used when a gateway names none.
pub const DEFAULT_PROXY_IMAGE: &str = concat!("vouchrs/vouchrs-proxy:", env!("CARGO_PKG_VERSION"));

/// How long `/readyz` reports 503 after SIGTERM before the listener closes: long enough for
/// endpoint removal to reach kube-proxy and ingress controllers.
pub const DRAIN_DELAY_SECS: u64 = 5;

/// Variables the operator sets itself; `overrides.env` may not set them.
pub const RESERVED_ENV: [&str; 5] = [
    "SESSION_DURATION_HOURS",
    "SESSION_REFRESH_HOURS",
    "TOKIO_WORKER_THREADS",
    "RUST_LOG",
    "VOUCHRS_CONFIG",
];

/// Operator-wide settings that shape every gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proxy_image: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
        }
    }
}

/// Fixed replicas or an autoscaler's bounds and targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    Fixed {
        replicas: i32,
    },
    Autoscaled {
        min: i32,
        max: i32,
        cpu_percent: i32,
        memory_percent: i32,
    },
}

impl Scaling {
    pub fn min_replicas(self) -> i32 {
        match self {
            Scaling::Fixed { replicas } => replicas,
            Scaling::Autoscaled { min, .. } => min,
        }
    }

    /// A disruption budget only makes sense when one pod may go while another serves.
    pub fn wants_pdb(self) -> bool {
        self.min_replicas() >= 2
    }
}

/// Container requests and limits, as quantity text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub request_cpu: String,
    pub request_memory: String,
    pub limit_cpu: String,
    pub limit_memory: String,
}

/// A gateway spec made concrete.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub name: String,
    pub namespace: String,
    pub tier: Tier,
    pub scaling: Scaling,
    pub resources: Resources,
    pub worker_threads: u16,
    pub image: String,
    pub extra_env: Vec<(String, String)>,
    pub proxy: ProxyConfig,
    /// Extra labels of the ServiceMonitor and PrometheusRule, when monitoring is enabled.
    pub monitoring: Option<BTreeMap<String, String>>,
}

impl Resolved {
    /// One session lifetime, in seconds: how long retired cookie keys stay in the ring.
    pub fn session_lifetime_secs(&self) -> i64 {
        i64::from(self.proxy.session.duration_hours) * 3600
    }
}

/// Checks the spec and fills in the tier's defaults.
pub fn resolve(gw: &VouchrsGateway, settings: &Settings) -> Result<Resolved, InvalidSpec> {
    let name = gw.metadata.name.clone().unwrap_or_default();
    let dns_label = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !dns_label {
        return Err(InvalidSpec::new(
            "metadata.name",
            format!(
                "must be a DNS label of at most {MAX_NAME_LEN} characters starting with a letter"
            ),
        ));
    }
    let namespace = gw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let spec = &gw.spec;
    let tier = spec.tier;
    let overrides = spec.overrides.clone().unwrap_or_default();

    let resources = resources(tier, &overrides)?;
    let limit_millis = quantity::cpu_millis(&resources.limit_cpu).unwrap_or(1000);
    let worker_threads = quantity::worker_threads(limit_millis);
    let scaling = scaling(tier, &overrides)?;
    let proxy = proxy_config(gw, worker_threads)?;

    let mut extra_env = Vec::new();
    for var in overrides.env.iter().flatten() {
        if RESERVED_ENV.contains(&var.name.as_str()) {
            return Err(InvalidSpec::new(
                "spec.overrides.env",
                format!("{} is set by the operator from the spec", var.name),
            ));
        }
        if extra_env.iter().any(|(n, _)| *n == var.name) {
            return Err(InvalidSpec::new(
                "spec.overrides.env",
                format!("{} is set twice", var.name),
            ));
        }
        extra_env.push((var.name.clone(), var.value.clone()));
    }

    Ok(Resolved {
        name,
        namespace,
        tier,
        scaling,
        resources,
        worker_threads,
        image: overrides
            .image
            .clone()
            .unwrap_or_else(|| settings.proxy_image.clone()),
        extra_env,
        proxy,
        monitoring: spec
            .monitoring
            .as_ref()
            .filter(|m| m.enabled == Some(true))
            .map(|m| m.labels.clone().unwrap_or_default()),
    })
}

fn resources(tier: Tier, overrides: &crate::api::Overrides) -> Result<Resources, InvalidSpec> {
    let t = tier.spec();
    let over = overrides.resources.clone().unwrap_or_default();
    let requests = over.requests.unwrap_or_default();
    let limits = over.limits.unwrap_or_default();
    let r = Resources {
        request_cpu: requests.cpu.unwrap_or_else(|| t.request_cpu.to_owned()),
        request_memory: requests
            .memory
            .unwrap_or_else(|| t.request_memory.to_owned()),
        limit_cpu: limits.cpu.unwrap_or_else(|| t.limit_cpu.to_owned()),
        limit_memory: limits.memory.unwrap_or_else(|| t.limit_memory.to_owned()),
    };
    let cpu = |field: &str, text: &str| {
        quantity::cpu_millis(text)
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                InvalidSpec::new(
                    field,
                    format!("`{text}` is not a CPU quantity like 500m or 2"),
                )
            })
    };
    let mem = |field: &str, text: &str| {
        quantity::memory_bytes(text)
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                InvalidSpec::new(
                    field,
                    format!("`{text}` is not a memory quantity like 256Mi"),
                )
            })
    };
    let base = "spec.overrides.resources";
    let req_cpu = cpu(&format!("{base}.requests.cpu"), &r.request_cpu)?;
    let lim_cpu = cpu(&format!("{base}.limits.cpu"), &r.limit_cpu)?;
    let req_mem = mem(&format!("{base}.requests.memory"), &r.request_memory)?;
    let lim_mem = mem(&format!("{base}.limits.memory"), &r.limit_memory)?;
    if req_cpu > lim_cpu {
        return Err(InvalidSpec::new(
            base,
            format!(
                "CPU request {} exceeds limit {}",
                r.request_cpu, r.limit_cpu
            ),
        ));
    }
    if req_mem > lim_mem {
        return Err(InvalidSpec::new(
            base,
            format!(
                "memory request {} exceeds limit {}",
                r.request_memory, r.limit_memory
            ),
        ));
    }
    Ok(r)
}

fn scaling(tier: Tier, overrides: &crate::api::Overrides) -> Result<Scaling, InvalidSpec> {
    let t = tier.spec();
    let min = overrides.min_replicas.unwrap_or(t.min_replicas);
    let max = overrides.max_replicas.unwrap_or(t.max_replicas.max(min));
    if min < 1 || min > max {
        return Err(InvalidSpec::new(
            "spec.overrides",
            format!("replicas must satisfy 1 <= minReplicas ({min}) <= maxReplicas ({max})"),
        ));
    }
    if min == max {
        return Ok(Scaling::Fixed { replicas: min });
    }
    let percent = |field: &str, value: Option<i32>, default: i32| {
        let v = value.unwrap_or(default);
        if (10..=100).contains(&v) {
            Ok(v)
        } else {
            Err(InvalidSpec::new(
                field,
                format!("{v} is not between 10 and 100"),
            ))
        }
    };
    Ok(Scaling::Autoscaled {
        min,
        max,
        cpu_percent: percent(
            "spec.overrides.targetCpuUtilization",
            overrides.target_cpu_utilization,
            TARGET_CPU_UTILIZATION,
        )?,
        memory_percent: percent(
            "spec.overrides.targetMemoryUtilization",
            overrides.target_memory_utilization,
            TARGET_MEMORY_UTILIZATION,
        )?,
    })
}

fn proxy_config(gw: &VouchrsGateway, worker_threads: u16) -> Result<ProxyConfig, InvalidSpec> {
    let spec = &gw.spec;
    // Start from the proxy's own defaults (it has no constructor; parsing a minimal file is
    // the one way to get them without copying them here).
    let mut config = ProxyConfig::parse("[upstream]\nurl = \"http://upstream.invalid\"\n")
        .map_err(|e| InvalidSpec::new("(proxy defaults)", e.to_string()))?;

    let https = if let Some(rest) = spec.public_url.strip_prefix("https://") {
        !rest.is_empty()
    } else if let Some(rest) = spec.public_url.strip_prefix("http://") {
        if rest.is_empty() {
            return Err(InvalidSpec::new("spec.publicUrl", "has no host"));
        }
        false
    } else {
        return Err(InvalidSpec::new(
            "spec.publicUrl",
            "must start with http:// or https://",
        ));
    };

    config.upstream.url = UpstreamUrl::try_from(spec.upstream.url.clone())
        .map_err(|e| InvalidSpec::new("spec.upstream.url", e))?;
    let duration = |field: &str, text: &Option<String>, into: &mut HumanDuration| {
        if let Some(text) = text {
            *into =
                HumanDuration::try_from(text.clone()).map_err(|e| InvalidSpec::new(field, e))?;
        }
        Ok::<_, InvalidSpec>(())
    };
    duration(
        "spec.upstream.connectTimeout",
        &spec.upstream.connect_timeout,
        &mut config.upstream.connect_timeout,
    )?;
    duration(
        "spec.upstream.responseTimeout",
        &spec.upstream.response_timeout,
        &mut config.upstream.response_timeout,
    )?;

    config.server.drain_delay = HumanDuration(Duration::from_secs(DRAIN_DELAY_SECS));
    for cidr in spec.trusted_proxies.iter().flatten() {
        let net = cidr.parse().map_err(|_| {
            InvalidSpec::new("spec.trustedProxies", format!("`{cidr}` is not a CIDR"))
        })?;
        config.server.trusted_proxies.push(net);
    }

    let session = spec.session.clone().unwrap_or_default();
    config.session.secure = https;
    if let Some(hours) = session.duration_hours {
        config.session.duration_hours = u32::try_from(hours)
            .map_err(|_| InvalidSpec::new("spec.session.durationHours", "must be positive"))?;
    }
    if let Some(hours) = session.refresh_hours {
        config.session.refresh_hours = u32::try_from(hours)
            .map_err(|_| InvalidSpec::new("spec.session.refreshHours", "must not be negative"))?;
    }
    if let Some(name) = session.cookie_name {
        config.session.cookie_name = CookieName::try_from(name)
            .map_err(|e| InvalidSpec::new("spec.session.cookieName", e))?;
    }

    let auth = spec.auth.clone().unwrap_or_default();
    if let Some(prefix) = auth.prefix {
        config.auth.prefix =
            AuthPrefix::try_from(prefix).map_err(|e| InvalidSpec::new("spec.auth.prefix", e))?;
    }
    for rule in auth.skip_auth.into_iter().flatten() {
        let rule =
            PathRule::try_from(rule).map_err(|e| InvalidSpec::new("spec.auth.skipAuth", e))?;
        config.auth.skip_auth.push(rule);
    }

    if let Some(passkeys) = spec.passkeys.as_ref().filter(|p| p.enabled == Some(true)) {
        let namespace = gw.metadata.namespace.as_deref().unwrap_or("default");
        passkeys_config(
            &mut config,
            passkeys,
            &spec.public_url,
            gw.metadata.name.as_deref().unwrap_or_default(),
            namespace,
        )?;
    }

    config.runtime.worker_threads = Some(worker_threads);
    if let Some(level) = &spec.log_level {
        config.runtime.log_filter = level.clone();
    }
    config
        .validate()
        .map_err(|e| InvalidSpec::new(format!("proxy config {}", e.key), e.reason))?;
    Ok(config)
}

/// Passkeys in a cluster: credentials in `VouchrsPasskey` objects of this gateway, in its
/// namespace, through the pod's service account; the origin is the public URL.
fn passkeys_config(
    config: &mut ProxyConfig,
    spec: &crate::api::PasskeysSpec,
    public_url: &str,
    gateway: &str,
    namespace: &str,
) -> Result<(), InvalidSpec> {
    config.server.public_url =
        Some(PublicUrl::parse(public_url).map_err(|e| InvalidSpec::new("spec.publicUrl", e))?);
    let passkeys = &mut config.passkeys;
    passkeys.enabled = true;
    passkeys.store = StoreKind::Kubernetes;
    passkeys.gateway = Some(gateway.to_owned());
    passkeys.namespace = Some(namespace.to_owned());
    passkeys.rp_id = spec.rp_id.clone();
    if let Some(name) = &spec.rp_name {
        passkeys.rp_name = name.clone();
    }
    if let Some(policy) = spec.user_verification {
        passkeys.user_verification = policy;
    }
    Ok(())
}
