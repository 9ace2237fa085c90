//! The per-request work of the proxy, measured piece by piece:
//! - `session/open_cold`: base64 + AES-256-GCM + decode of a typical session cookie (target ≤ 1 µs)
//! - `session/open_cached`: the same cookie found in the validated-cookie cache (target ≤ 50 ns)
//! - `session/seal`: sealing a fresh session (target ≤ 2 µs)
//! - `headers/browser_request`: everything done to the headers of a typical browser request
//!   (15 headers, 4 cookies): find our cookie, cache lookup, strip our cookie, strip spoofed and
//!   hop-by-hop headers, add identity and forwarding headers (target ≤ 500 ns)
//! - `headers/browser_request_as_parsed`: the same on a map built as hyper builds it, in small
//!   batches (see [`AS_SERVED`])
//!
//! Run: `cargo bench -p vouchrs-benches --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use vouchrs_proxy::config::IdentityHeaders;
use vouchrs_proxy::session::cache::ValidatedCookies;
use vouchrs_proxy::session::keyring::{KeyId, KeyRing, generate_line};
use vouchrs_proxy::session::{Lifetimes, Session, SessionSealer};
use vouchrs_proxy::web::cookies::{self, CookieNames};
use vouchrs_proxy::web::headers::{HeaderRules, IdentityValues};

const NOW: u64 = 1_800_000_000;
const COOKIE_NAME: &str = "__Host-vouchrs_session";

fn sealer() -> SessionSealer {
    let lines: Vec<String> = ["k2", "k1"]
        .iter()
        .map(|id| generate_line(&KeyId::parse(id).unwrap()).unwrap())
        .collect();
    let ring = KeyRing::parse(&lines.join("\n")).unwrap();
    SessionSealer::new(
        Arc::new(ArcSwap::from_pointee(ring)),
        COOKIE_NAME.into(),
        Lifetimes::from_hours(24, 2),
    )
}

fn typical_session(sealer: &SessionSealer) -> Session {
    sealer.start(
        "00u1a2b3c4d5e6f7g8h9".into(),
        Some("jane.doe@example.com".into()),
        vec!["engineering".into(), "on-call".into(), "vpn-users".into()],
        "oidc:corp".into(),
        NOW,
    )
}

fn browser_headers(session_cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |k: &str, v: &str| {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        )
    };
    add("host", "app.example.com");
    add(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    );
    add(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    );
    add("accept-language", "en-GB,en;q=0.9");
    add("accept-encoding", "gzip, deflate, br, zstd");
    add("referer", "https://app.example.com/dashboard");
    add("connection", "keep-alive");
    add("upgrade-insecure-requests", "1");
    add("sec-fetch-dest", "document");
    add("sec-fetch-mode", "navigate");
    add("sec-fetch-site", "same-origin");
    add("sec-fetch-user", "?1");
    add(
        "sec-ch-ua",
        "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
    );
    add("priority", "u=0, i");
    add(
        "cookie",
        &format!(
            "_ga=GA1.1.123456789.1700000000; theme=dark; {COOKIE_NAME}={session_cookie}; csrftoken=abcdef0123456789"
        ),
    );
    h
}

fn identity_of(s: &Session) -> IdentityValues {
    IdentityValues {
        user: HeaderValue::from_str(&s.user).unwrap(),
        email: s
            .email
            .as_deref()
            .map(|e| HeaderValue::from_str(e).unwrap()),
        groups: Some(HeaderValue::from_str(&s.groups.join(",")).unwrap()),
    }
}

fn sessions(c: &mut Criterion) {
    let sealer = sealer();
    let session = typical_session(&sealer);
    let sealed = sealer.seal(&session);
    println!("typical sealed session: {} characters", sealed.len());

    let mut group = c.benchmark_group("session");
    group.bench_function("open_cold", |b| {
        b.iter(|| sealer.open(black_box(&sealed), NOW).unwrap())
    });
    let cache = ValidatedCookies::new(4 << 20);
    let generation = sealer.ring().generation();
    cache.insert(
        &sealed,
        generation,
        session.expires_at,
        Arc::new(identity_of(&session)),
    );
    group.bench_function("open_cached", |b| {
        b.iter(|| cache.get(black_box(&sealed), NOW, generation).unwrap())
    });
    group.bench_function("seal", |b| b.iter(|| sealer.seal(black_box(&session))));
    group.finish();
}

fn headers(c: &mut Criterion) {
    let sealer = sealer();
    let session = typical_session(&sealer);
    let sealed = sealer.seal(&session);
    let generation = sealer.ring().generation();
    let cache = ValidatedCookies::new(4 << 20);
    cache.insert(
        &sealed,
        generation,
        session.expires_at,
        Arc::new(identity_of(&session)),
    );
    let names = CookieNames::new("vouchrs_session", true);
    let rules = HeaderRules::new(&IdentityHeaders::default(), Vec::new());
    let peer = rules.peer("203.0.113.7".parse().unwrap(), "https");
    let template = browser_headers(&sealed);

    // What `Gateway::route` does to the headers of a proxied request.
    let route = |headers: &mut HeaderMap| {
        let scanned = cookies::scan(headers, &names);
        let identity = scanned
            .session_values()
            .find_map(|v| cache.get(&v, NOW, generation))
            .unwrap();
        let rewrite = scanned.needs_rewrite;
        if rewrite {
            match cookies::upstream_cookie(headers, &names) {
                Some(v) => headers.insert(COOKIE, v),
                None => headers.remove(COOKIE),
            };
        }
        rules.prepare_request(headers, &peer, Some(&identity));
    };
    c.bench_function("headers/browser_request", |b| {
        b.iter_batched_ref(|| template.clone(), route, BatchSize::SmallInput)
    });
    c.bench_function("headers/browser_request_as_parsed", |b| {
        b.iter_batched_ref(|| as_parsed(&template), route, AS_SERVED)
    });
}

/// Inputs per timed batch for the `as_parsed` variants. `SmallInput` makes a tenth of a
/// sample's iterations at once (thousands of maps, megabytes), so the routine reads maps that
/// left the caches and allocates on pages the allocator has just handed back to the kernel
/// (page faults in `perf`). A proxy frees each request's headers and reuses that memory for
/// the next; 64 maps fit in L2, like a request just parsed.
const AS_SERVED: BatchSize = BatchSize::NumIterations(64);

/// The headers as hyper's HTTP/1 parser hands them over: a map reserved for the header count
/// and filled by `append` (a clone has no spare room, so the first insert regrows it).
fn as_parsed(template: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.reserve(template.len());
    for (name, value) in template {
        h.append(name.clone(), value.clone());
    }
    h
}

/// The pieces of `headers/browser_request`, to see where the time goes.
fn header_pieces(c: &mut Criterion) {
    let sealer = sealer();
    let session = typical_session(&sealer);
    let sealed = sealer.seal(&session);
    let names = CookieNames::new("vouchrs_session", true);
    let rules = HeaderRules::new(&IdentityHeaders::default(), Vec::new());
    let peer = rules.peer("203.0.113.7".parse().unwrap(), "https");
    let template = browser_headers(&sealed);
    let identity = identity_of(&session);
    let mut group = c.benchmark_group("header_pieces");
    group.bench_function("clone_only", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| black_box(h.len()),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("scan", |b| {
        b.iter(|| cookies::scan(black_box(&template), &names).needs_rewrite)
    });
    group.bench_function("upstream_cookie", |b| {
        b.iter(|| cookies::upstream_cookie(black_box(&template), &names))
    });
    // The whole minus `prepare_request`: the cookie work on a fresh copy of the headers.
    group.bench_function("cookies_on_copy", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| {
                let scanned = cookies::scan(headers, &names);
                let found = scanned.session_values().next().is_some();
                if scanned.needs_rewrite {
                    match cookies::upstream_cookie(headers, &names) {
                        Some(v) => headers.insert(COOKIE, v),
                        None => headers.remove(COOKIE),
                    };
                }
                found
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("prepare_request", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| rules.prepare_request(h, &peer, Some(&identity)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("prepare_request_as_parsed", |b| {
        b.iter_batched_ref(
            || as_parsed(&template),
            |h| rules.prepare_request(h, &peer, Some(&identity)),
            AS_SERVED,
        )
    });
    group.finish();
}

criterion_group!(benches, sessions, headers, header_pieces);
criterion_main!(benches);
