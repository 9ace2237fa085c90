//! Prometheus metrics as plain atomics, rendered to text on scrape. Labels are fixed enums
//! (status class, session outcome, error kind): never a user, a path or anything a client
//! chooses, so cardinality is bounded by construction.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What the request's session cookie turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Valid,
    Expired,
    Invalid,
    Absent,
    /// A valid session of a user the access rules do not admit.
    Denied,
}

impl SessionOutcome {
    const ALL: [Self; 5] = [
        Self::Valid,
        Self::Expired,
        Self::Invalid,
        Self::Absent,
        Self::Denied,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
            Self::Absent => "absent",
            Self::Denied => "denied",
        }
    }
}

/// Why the upstream gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Protocol,
}

impl UpstreamFailure {
    const ALL: [Self; 3] = [Self::Connect, Self::Timeout, Self::Protocol];
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }
}

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Login outcomes by provider. Providers come from the config and outcomes from a fixed set,
/// so the label space is bounded; a lock is fine at login rates.
type LoginCounts = std::sync::Mutex<Vec<((String, &'static str), u64)>>;

pub struct Metrics {
    logins: LoginCounts,
    /// Passkey registrations by outcome (a fixed set of labels from `passkey::PasskeyError`).
    passkey_registrations: std::sync::Mutex<Vec<(&'static str, u64)>>,
    responses: [AtomicU64; 5],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros_sum: AtomicU64,
    sessions: [AtomicU64; 5],
    session_cache_hits: AtomicU64,
    sessions_renewed: AtomicU64,
    upstream_failures: [AtomicU64; 3],
    connections_open: AtomicI64,
    connections_refused: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // Used only as an array initializer.
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process-wide metrics.
pub static METRICS: Metrics = Metrics {
    logins: std::sync::Mutex::new(Vec::new()),
    passkey_registrations: std::sync::Mutex::new(Vec::new()),
    responses: [ZERO; 5],
    latency_buckets: [ZERO; BUCKETS.len()],
    latency_count: ZERO,
    latency_micros_sum: ZERO,
    sessions: [ZERO; 5],
    session_cache_hits: ZERO,
    sessions_renewed: ZERO,
    upstream_failures: [ZERO; 3],
    connections_open: AtomicI64::new(0),
    connections_refused: ZERO,
};

impl Metrics {
    pub fn response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_micros_sum
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    pub fn session(&self, outcome: SessionOutcome, cache_hit: bool) {
        self.sessions[outcome as usize].fetch_add(1, Relaxed);
        if cache_hit {
            self.session_cache_hits.fetch_add(1, Relaxed);
        }
    }

    pub fn session_renewed(&self) {
        self.sessions_renewed.fetch_add(1, Relaxed);
    }

    pub fn upstream_failure(&self, failure: UpstreamFailure) {
        self.upstream_failures[failure as usize].fetch_add(1, Relaxed);
    }

    /// Counts a login step for `provider` (`started`, `success`, or a failure label).
    /// Callers pass a configured provider name or `unknown`, never a client's text.
    pub fn login(&self, provider: &str, outcome: &'static str) {
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        match logins
            .iter_mut()
            .find(|((p, o), _)| p == provider && *o == outcome)
        {
            Some((_, n)) => *n += 1,
            None => logins.push(((provider.to_owned(), outcome), 1)),
        }
    }

    /// Counts a passkey registration step (`started`, `success`, or a failure label).
    pub fn passkey_registration(&self, outcome: &'static str) {
        let mut counts = self
            .passkey_registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => counts.push((outcome, 1)),
        }
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        header(
            w,
            "vouchrs_http_responses_total",
            "counter",
            "Responses sent, by status class.",
        );
        for (i, count) in self.responses.iter().enumerate() {
            let _ = writeln!(
                w,
                "vouchrs_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                count.load(Relaxed)
            );
        }
        header(
            w,
            "vouchrs_http_request_duration_seconds",
            "histogram",
            "Time from request head to response head.",
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(
                w,
                "vouchrs_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.latency_count.load(Relaxed);
        let _ = writeln!(
            w,
            "vouchrs_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
        );
        let sum = self.latency_micros_sum.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(w, "vouchrs_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(w, "vouchrs_http_request_duration_seconds_count {total}");
        header(
            w,
            "vouchrs_session_validations_total",
            "counter",
            "Session cookie checks, by outcome.",
        );
        for outcome in SessionOutcome::ALL {
            let n = self.sessions[outcome as usize].load(Relaxed);
            let _ = writeln!(
                w,
                "vouchrs_session_validations_total{{outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        counter(
            w,
            "vouchrs_session_cache_hits_total",
            "Valid sessions served from the validated-cookie cache.",
            &self.session_cache_hits,
        );
        counter(
            w,
            "vouchrs_sessions_renewed_total",
            "Sessions re-sealed by sliding renewal.",
            &self.sessions_renewed,
        );
        header(
            w,
            "vouchrs_upstream_failures_total",
            "counter",
            "Requests the upstream did not answer, by kind.",
        );
        for failure in UpstreamFailure::ALL {
            let n = self.upstream_failures[failure as usize].load(Relaxed);
            let _ = writeln!(
                w,
                "vouchrs_upstream_failures_total{{kind=\"{}\"}} {n}",
                failure.label()
            );
        }
        header(
            w,
            "vouchrs_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(
            w,
            "vouchrs_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        counter(
            w,
            "vouchrs_connections_refused_total",
            "Client connections closed at once because the limit was reached.",
            &self.connections_refused,
        );
        header(
            w,
            "vouchrs_logins_total",
            "counter",
            "Login steps by provider and outcome.",
        );
        for ((provider, outcome), n) in self.logins.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let _ = writeln!(
                w,
                "vouchrs_logins_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            w,
            "vouchrs_passkey_registrations_total",
            "counter",
            "Passkey registration steps by outcome (logins are in vouchrs_logins_total, provider=\"passkey\").",
        );
        for (outcome, n) in self
            .passkey_registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                w,
                "vouchrs_passkey_registrations_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        process_metrics(w);
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(w: &mut String, name: &str, help: &str, value: &AtomicU64) {
    header(w, name, "counter", help);
    let _ = writeln!(w, "{name} {}", value.load(Relaxed));
}

/// CPU, memory and file descriptors from `/proc/self` (Linux), in the standard names.
fn process_metrics(w: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) start at state, field 3.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    const TICKS_PER_SEC: f64 = 100.0; // USER_HZ on every Linux we target.
    const PAGE: f64 = 4096.0;
    header(
        w,
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time.",
    );
    let _ = writeln!(
        w,
        "process_cpu_seconds_total {}",
        (field(14) + field(15)) / TICKS_PER_SEC
    );
    header(
        w,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
    );
    let _ = writeln!(w, "process_resident_memory_bytes {}", field(24) * PAGE);
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(w, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(w, "process_open_fds {}", fds.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_fixed_labels() {
        METRICS.response(200, Duration::from_micros(300));
        METRICS.response(502, Duration::from_millis(30));
        METRICS.session(SessionOutcome::Invalid, false);
        let text = METRICS.render();
        for needle in [
            "vouchrs_http_responses_total{class=\"2xx\"}",
            "vouchrs_http_request_duration_seconds_bucket{le=\"0.0005\"}",
            "vouchrs_http_request_duration_seconds_bucket{le=\"+Inf\"}",
            "vouchrs_session_validations_total{outcome=\"invalid\"}",
            "vouchrs_upstream_failures_total{kind=\"timeout\"} ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
        let plus_inf: u64 = text
            .lines()
            .find(|l| l.starts_with("vouchrs_http_request_duration_seconds_bucket{le=\"+Inf\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!(plus_inf >= 2);
    }
}
