//! Sessions and identity through the real binary: who gets in, what the upstream is told,
//! what never reaches it, renewal and key rotation.

mod common;

use std::time::{Duration, Instant};

use http::StatusCode;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, SESSION_COOKIE, client, get, key_line, now};

#[tokio::test]
async fn the_upstream_sees_our_identity_and_never_a_spoofed_one() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let r = get(
        &c,
        &proxy.url("/whoami"),
        &[
            (
                "cookie",
                &format!("theme=dark; {cookie}; lang=en; vouchrs_session_oidc=x"),
            ),
            ("x-auth-request-user", "mallory"),
            ("x_auth_request_email", "mallory@evil.example"),
            ("X-AUTH-REQUEST-GROUPS", "admins"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("host", "app.example.com"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_saw("x-auth-request-user"), ["alice"]);
    assert_eq!(
        r.upstream_saw("x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(r.upstream_saw("x-auth-request-groups"), ["dev,ops"]);
    assert!(r.upstream_saw("x_auth_request_email").is_empty());
    assert_eq!(r.upstream_saw("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.upstream_saw("x-forwarded-host"), ["app.example.com"]);
    assert_eq!(r.upstream_saw("x-forwarded-proto"), ["http"]);
    assert!(r.upstream_saw("forwarded").is_empty());
    assert_eq!(r.upstream_saw("host"), ["app.example.com"]);
    assert_eq!(
        r.upstream_saw("cookie"),
        ["theme=dark; lang=en"],
        "our cookies stay with us"
    );
}

#[tokio::test]
async fn trusted_proxies_may_forward_client_addresses() {
    let upstream = TestUpstream::start().await;
    let extra = Extra {
        server: "trusted_proxies = [\"127.0.0.0/8\"]",
        ..Extra::default()
    };
    let proxy = Proxy::start(&upstream.url(), extra);
    let cookie = proxy.cookie_for("alice");
    let r = get(
        &client(),
        &proxy.url("/"),
        &[
            ("cookie", &cookie),
            ("x-forwarded-for", "203.0.113.5"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        r.upstream_saw("x-forwarded-for"),
        ["203.0.113.5, 127.0.0.1"]
    );
    assert_eq!(r.upstream_saw("x-forwarded-proto"), ["https"]);
}

#[tokio::test]
async fn without_a_session_browsers_are_redirected_and_api_clients_get_401() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let c = client();
    let browser = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let r = get(&c, &proxy.url("/app/page?x=1&y=%2F"), &browser).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.headers["location"],
        "/auth/sign_in?rd=/app/page%3Fx%3D1%26y%3D%252F"
    );

    let r = get(
        &c,
        &proxy.url("/api/items"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert_eq!(
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn broken_cookies_count_as_no_session() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let c = client();
    let valid = proxy.cookie_for("alice");
    let value = valid.split_once('=').unwrap().1;
    let mut tampered = value.as_bytes().to_vec();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let expired = {
        let sealer = proxy.sealer();
        let mut s = sealer.start("alice".into(), None, vec![], "test".into(), now() - 100_000);
        s.expires_at = now() - 1;
        s
    };
    let cases = [
        format!("{SESSION_COOKIE}={}", String::from_utf8(tampered).unwrap()),
        format!("{SESSION_COOKIE}={}", &value[..value.len() / 2]),
        format!("{SESSION_COOKIE}=garbage!!"),
        format!("{SESSION_COOKIE}="),
        format!("{SESSION_COOKIE}={}", "A".repeat(7000)),
        format!("vouchrs_session={value}"),
        proxy.cookie_with(&expired),
    ];
    for cookie in &cases {
        let r = get(&c, &proxy.url("/"), &[("cookie", cookie)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{cookie:.60}");
    }
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("vouchrs_session_validations_total{outcome=\"invalid\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vouchrs_session_validations_total{outcome=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vouchrs_session_validations_total{outcome=\"absent\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn skip_auth_matches_only_canonical_paths() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let c = client();
    for open in ["/public/app.js", "/public/my%20file.css"] {
        let r = get(&c, &proxy.url(open), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{open}");
        assert!(r.upstream_saw("x-auth-request-user").is_empty());
    }
    for closed in [
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public;x/../admin",
        "/public//x",
        "/publicx",
    ] {
        let r = get(&c, &proxy.url(closed), &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{closed}");
    }
}

#[tokio::test]
async fn old_sessions_are_renewed_on_the_way_back() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let sealer = proxy.sealer();
    let three_hours_ago = now() - 3 * 3600;
    let old = sealer.start("alice".into(), None, vec![], "test".into(), three_hours_ago);
    let c = client();
    let r = get(&c, &proxy.url("/"), &[("cookie", &proxy.cookie_with(&old))]).await;
    assert_eq!(r.status, StatusCode::OK);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with(SESSION_COOKIE), "{set}");
    assert!(
        set.contains("; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax; Secure"),
        "{set}"
    );
    let renewed = sealer
        .open(
            set.split(';').next().unwrap().split_once('=').unwrap().1,
            now(),
        )
        .unwrap();
    assert!(renewed.issued_at >= now() - 5);
    assert_eq!(renewed.auth_time, three_hours_ago);

    let fresh = proxy.cookie_for("bob");
    let r = get(&c, &proxy.url("/"), &[("cookie", &fresh)]).await;
    assert!(
        r.headers.get("set-cookie").is_none(),
        "a fresh session is left alone"
    );
}

#[tokio::test]
async fn key_files_rotate_without_logging_anyone_out_and_removal_is_enforced() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let c = client();
    let old_cookie = proxy.cookie_for("alice");
    assert_eq!(
        get(&c, &proxy.url("/"), &[("cookie", &old_cookie)])
            .await
            .status,
        StatusCode::OK
    );

    // Rotate: a new first key, the old one kept. The old cookie (cached) still works.
    let old_ring = std::fs::read_to_string(&proxy.keyring_path).unwrap();
    let new_key = key_line("k2");
    std::fs::write(&proxy.keyring_path, format!("{new_key}\n{old_ring}")).unwrap();
    let new_cookie = proxy.cookie_for("bob");
    let until = Instant::now() + Duration::from_secs(30); // a bound, not a speed check: CI machines are busy
    while get(&c, &proxy.url("/"), &[("cookie", &new_cookie)])
        .await
        .status
        != StatusCode::OK
    {
        assert!(Instant::now() < until, "new key never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&c, &proxy.url("/"), &[("cookie", &old_cookie)])
            .await
            .status,
        StatusCode::OK
    );

    // Prune the old key: its cookie stops working even though it was cached.
    std::fs::write(&proxy.keyring_path, format!("{new_key}\n")).unwrap();
    let until = Instant::now() + Duration::from_secs(30); // a bound, not a speed check: CI machines are busy
    while get(&c, &proxy.url("/"), &[("cookie", &old_cookie)])
        .await
        .status
        != StatusCode::UNAUTHORIZED
    {
        assert!(Instant::now() < until, "removed key still opens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&c, &proxy.url("/"), &[("cookie", &new_cookie)])
            .await
            .status,
        StatusCode::OK
    );

    // A broken key file is refused and the current keys stay in force.
    std::fs::write(&proxy.keyring_path, "not a key ring").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(&c, &proxy.url("/"), &[("cookie", &new_cookie)])
            .await
            .status,
        StatusCode::OK
    );
    assert!(proxy.log().contains("new key ring refused"));
}

#[tokio::test]
async fn userinfo_reports_the_session_and_auth_routes_never_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let c = client();
    let cookie = proxy.cookie_for("alice");
    let r = get(&c, &proxy.url("/auth/userinfo"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["email"], "alice@example.com");
    assert_eq!(
        get(&c, &proxy.url("/auth/userinfo"), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&c, &proxy.url("/auth/nope"), &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_no_secrets() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let sealed = cookie.split_once('=').unwrap().1;
    let c = client();
    get(
        &c,
        &proxy.url("/secret-page?token=hunter2"),
        &[("cookie", &cookie)],
    )
    .await;
    get(
        &c,
        &proxy.url("/other"),
        &[("cookie", "vouchrs_session=junk")],
    )
    .await;
    let until = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = proxy.log();
        if log.matches("vouchrs::access").count() >= 2 || Instant::now() > until {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("vouchrs::access"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    assert_eq!(access[0]["path"], "/secret-page");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["session"], "valid");
    for secret in [sealed, "hunter2", "junk"] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
}
