//! Just enough of Kubernetes quantities to reason about CPU and memory: a CPU quantity in
//! millicores (for worker threads and request ≤ limit checks) and memory in bytes.
//!
//! The manifests keep the text the user or the tier wrote; these values are only compared.

/// A CPU quantity in millicores: `"500m"` → 500, `"2"` → 2000, `"1.5"` → 1500.
pub fn cpu_millis(text: &str) -> Option<u64> {
    if let Some(millis) = text.strip_suffix('m') {
        return digits(millis);
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || (whole.is_empty() && frac.is_empty()) {
        return None;
    }
    let whole = if whole.is_empty() { 0 } else { digits(whole)? };
    let frac_millis = if frac.is_empty() {
        0
    } else {
        digits(frac)? * 10u64.pow(3 - frac.len() as u32)
    };
    whole.checked_mul(1000)?.checked_add(frac_millis)
}

/// A memory quantity in bytes: `"128Mi"`, `"1Gi"`, `"512M"`, `"1000"`.
pub fn memory_bytes(text: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return digits(number)?.checked_mul(factor);
        }
    }
    digits(text)
}

/// Tokio worker threads for a CPU limit: one per whole core, rounding up, at least one.
pub fn worker_threads(cpu_limit_millis: u64) -> u16 {
    let cores = cpu_limit_millis.div_ceil(1000).max(1);
    u16::try_from(cores).unwrap_or(u16::MAX)
}

fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpu_millis("50m"), Some(50));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("0.25"), Some(250));
        for bad in ["", "m", "1.2345", "-1", "1e3", "two", "."] {
            assert_eq!(cpu_millis(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("128Mi"), Some(128 << 20));
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("512M"), Some(512_000_000));
        assert_eq!(memory_bytes("1000"), Some(1000));
        for bad in ["", "Mi", "1.5Gi", "12X"] {
            assert_eq!(memory_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn worker_threads_round_the_cpu_limit_up() {
        assert_eq!(worker_threads(200), 1);
        assert_eq!(worker_threads(1000), 1);
        assert_eq!(worker_threads(1500), 2);
        assert_eq!(worker_threads(8000), 8);
        assert_eq!(worker_threads(0), 1);
    }
}
