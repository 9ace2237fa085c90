//! Soak: the real binary under a fixed request rate for a while, sampling its resident memory
//! and open descriptors. CI runs a short version (20 s); the long one is
//!
//! ```text
//! VOUCHRS_SOAK_SECS=600 VOUCHRS_SOAK_RATE=200 cargo test -p vouchrs-proxy --release \
//!     --test soak -- --nocapture
//! ```
//!
//! It reports the samples and fails only on growth far beyond noise (a leak), never on speed:
//! after the first fifth of the run (warm-up: allocator arenas, cache, pools), resident memory
//! may not grow by more than 50 % + 16 MiB (the validated-cookie cache alone may take its
//! `cache_kib`, 4 MiB by default, as fresh sessions arrive), no client connection may stay open
//! once the client has gone, and descriptors may not grow by more than the idle upstream pool
//! (32: at most 32 requests are in flight).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, client, get};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn soak_at_a_fixed_rate_shows_no_growth() {
    let secs = env_number("VOUCHRS_SOAK_SECS", 20);
    let rate = env_number("VOUCHRS_SOAK_RATE", 200);
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let pid = proxy.child.id();
    // A mix: a few long-lived users (cache hits), fresh sessions (cache misses), no session,
    // a public path, and a 64 KiB download.
    let users: Vec<String> = (0..20)
        .map(|i| proxy.cookie_for(&format!("user{i}")))
        .collect();
    let sealer = proxy.sealer();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let c = client();
    // At most 32 requests in flight: a stalled machine queues them instead of opening more
    // connections, so descriptor counts measure leaks, not bursts.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(32));

    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        if started.elapsed() >= next_sample {
            samples.push((started.elapsed().as_secs(), rss_kib(pid), fds(pid)));
            next_sample += Duration::from_secs(2);
        }
        let (url, cookie, expect) = match sent % 10 {
            0 => {
                let s = sealer.start(
                    format!("fresh{sent}"),
                    None,
                    vec![],
                    "soak".into(),
                    common::now(),
                );
                (
                    proxy.url("/app"),
                    format!("{}={}", common::SESSION_COOKIE, sealer.seal(&s)),
                    StatusCode::OK,
                )
            }
            1 => (proxy.url("/app"), String::new(), StatusCode::UNAUTHORIZED),
            2 => (proxy.url("/public/x"), String::new(), StatusCode::OK),
            3 => (
                proxy.url("/download?bytes=65536"),
                users[0].clone(),
                StatusCode::OK,
            ),
            n => (
                proxy.url("/app?n=1"),
                users[(sent as usize * 7 + n as usize) % users.len()].clone(),
                StatusCode::OK,
            ),
        };
        sent += 1;
        let (c, ok, failed) = (c.clone(), ok.clone(), failed.clone());
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        tokio::spawn(async move {
            let _permit = permit;
            let headers: Vec<(&str, &str)> = if cookie.is_empty() {
                vec![("accept", "application/json")]
            } else {
                vec![("cookie", cookie.as_str())]
            };
            let r = get(&c, &url, &headers).await;
            if r.status == expect {
                ok.fetch_add(1, Ordering::SeqCst);
            } else {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // Wait for the last requests, then close the client's idle connections: what stays open
    // in the proxy now is its idle upstream pool (at most the 32 in flight) and leaks.
    let _all = in_flight.acquire_many(32).await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_secs(1)).await;
    samples.push((started.elapsed().as_secs(), rss_kib(pid), fds(pid)));
    let open: i64 = proxy
        .metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("vouchrs_connections_open ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();

    eprintln!(
        "soak: {secs} s at {rate}/s: {sent} sent, {} ok, {} failed",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    eprintln!("soak: second  rss_kib  fds");
    for (t, rss, fd) in &samples {
        eprintln!("soak: {t:>6}  {rss:>7}  {fd:>3}");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the soak"
    );
    assert_eq!(
        open, 0,
        "client connections still open after the client left"
    );
    let warm = samples.len() / 5;
    let (_, rss_warm, fd_warm) = samples[warm.max(1)];
    let (_, rss_end, fd_end) = *samples.last().unwrap();
    let peak_rss = samples[warm.max(1)..].iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "soak: rss after warm-up {rss_warm} KiB, at the end {rss_end} KiB (peak {peak_rss}); fds {fd_warm} -> {fd_end}"
    );
    assert!(
        rss_end <= rss_warm + rss_warm / 2 + 16 * 1024,
        "resident memory grew from {rss_warm} KiB to {rss_end} KiB"
    );
    assert!(
        fd_end <= fd_warm + 32,
        "descriptors grew from {fd_warm} to {fd_end}"
    );
}
