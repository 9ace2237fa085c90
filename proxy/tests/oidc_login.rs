//! OIDC login end to end: the real binary, a real OpenID provider (`oidc-provider`) and a real
//! browser (headless Chromium). Screenshots land in `proxy/tests/oidc/artifacts/`.

mod common;

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use common::oidc::{OidcProvider, artifacts_dir, run_browser};
use common::upstream::TestUpstream;
use common::{Extra, Proxy, client, free_port, get};

const SECRET: &str = "client-secret-for-tests";

/// A provider with a refresh-token client, a form_post client, and accounts for each case.
fn provider(port: u16) -> OidcProvider {
    OidcProvider::start(provider_config(port))
}

/// The config of [`provider`], for a proxy on `port`.
fn provider_config(port: u16) -> Value {
    let base = format!("http://localhost:{port}");
    let client = |id: &str| {
        json!({
            "client_id": id,
            "client_secret": SECRET,
            "redirect_uris": [format!("{base}/auth/oauth2/callback")],
            "post_logout_redirect_uris": [format!("{base}/auth/signed_out")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        })
    };
    json!({
        "clients": [client("vouchrs"), client("vouchrs-form-post")],
        "accounts": {
            "alice": {"sub": "u-alice", "email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": ["staff", "admins"]},
            "mallory": {"sub": "u-mallory", "email": "mallory@evil.example", "email_verified": true, "groups": []},
            "unverified": {"sub": "u-eve", "email": "eve@example.com", "email_verified": false, "groups": ["staff"]},
        },
        "ttl": {"AccessToken": 40},
        "rotateRefreshToken": true,
    })
}

/// A proxy on `port` with both clients configured and an allow-list of example.com.
fn proxy(upstream: &TestUpstream, port: u16, issuer: &str, extra_oidc: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap().keep();
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let provider = |name: &str, client_id: &str, more: &str| {
        format!(
            "[[oidc.providers]]\nname = \"{name}\"\ndisplay_name = \"Test {name}\"\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\n\
             client_secret_file = \"{}\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\nrefresh = true\n{more}\n",
            secret_file.display()
        )
    };
    let tail = format!(
        "{}{}[oidc]\n{extra_oidc}\n[access]\nallowed_domains = [\"example.com\"]\n",
        provider("test", "vouchrs", ""),
        provider(
            "formpost",
            "vouchrs-form-post",
            "response_mode = \"form_post\""
        ),
    );
    let server = Box::leak(format!("public_url = \"http://localhost:{port}\"").into_boxed_str());
    Proxy::start(
        &upstream.url(),
        Extra {
            server,
            tail,
            listen_port: Some(port),
            ..Extra::default()
        },
    )
}

fn upstream_saw(body_text: &str, header: &str) -> Vec<String> {
    let echo: Value =
        serde_json::from_str(body_text).unwrap_or_else(|e| panic!("{e}: {body_text}"));
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == header)
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_logs_in_refreshes_and_logs_out() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let proxy = proxy(&upstream, port, &idp.issuer, "");
    let state = tempfile::tempdir().unwrap();
    let jar = state.path().join("browser.json");
    let jar = jar.to_str().unwrap();
    let base = format!("http://localhost:{port}");
    let shots = artifacts_dir();
    let sign_in_png = shots.join("sign-in.png");

    // Protected URL → sign-in page → provider login form → back to the original URL.
    let start = format!("{base}/app/page?x=1");
    let shot = sign_in_png.display().to_string();
    let (ok, out) = run_browser(&[
        "login",
        "--start",
        &start,
        "--user",
        "alice",
        "--provider-button",
        "Test test",
        "--state",
        jar,
        "--screenshot-signin",
        &shot,
    ])
    .await;
    assert!(ok, "{out}\n{}", proxy.log());
    assert_eq!(out["finalUrl"], start);
    assert_eq!(out["status"], 200);
    assert_eq!(out["loginFormShown"], true);
    let body = out["bodyText"].as_str().unwrap();
    assert_eq!(upstream_saw(body, "x-auth-request-user"), ["u-alice"]);
    assert_eq!(
        upstream_saw(body, "x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(
        upstream_saw(body, "x-auth-request-groups"),
        ["staff,admins"]
    );
    assert!(
        upstream_saw(body, "cookie")
            .iter()
            .all(|c| !c.contains("vouchrs_session"))
    );
    let cookies = out["cookies"].as_array().unwrap();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "__Host-vouchrs_session")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert!(
        !cookies
            .iter()
            .any(|c| c["name"] == "__Host-vouchrs_session_login"),
        "login state is single-use"
    );
    assert!(std::fs::metadata(&sign_in_png).is_ok_and(|m| m.len() > 1000));

    // The provider's access token lives 40 s; the proxy refreshes 30 s ahead, so a visit
    // after 11 s refreshes without a visible redirect.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let again = format!("{base}/app/again");
    let (ok, out) = run_browser(&["visit", "--url", &again, "--state", jar]).await;
    assert!(ok, "{out}");
    assert_eq!(out["status"], 200);
    assert_eq!(
        out["navigations"].as_array().unwrap().len(),
        1,
        "no redirect: {out}"
    );
    assert_eq!(
        upstream_saw(out["bodyText"].as_str().unwrap(), "x-auth-request-user"),
        ["u-alice"]
    );
    let stats = idp.test_endpoint("/test/stats").await;
    assert!(
        stats["grants"]["refresh_token"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        proxy
            .metrics()
            .contains("vouchrs_logins_total{provider=\"test\",outcome=\"refreshed\"}")
    );

    // Sign out: our cookies go, the provider session ends, the next visit must sign in again.
    let sign_out = format!("{base}/auth/oauth2/sign_out");
    let (ok, out) = run_browser(&["logout", "--url", &sign_out, "--state", jar]).await;
    assert!(ok, "{out}");
    assert_eq!(out["finalUrl"], format!("{base}/auth/signed_out"));
    assert!(
        !out["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "__Host-vouchrs_session")
    );
    assert_eq!(
        idp.test_endpoint("/test/sessions").await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (_, out) = run_browser(&["visit", "--url", &again, "--state", jar]).await;
    assert!(
        out["finalUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/auth/sign_in?rd=")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_outside_the_rules_see_a_403_naming_their_account() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let proxy = proxy(&upstream, port, &idp.issuer, "");
    let base = format!("http://localhost:{port}");
    let denied_png = artifacts_dir().join("denied.png");
    for (user, needle) in [
        ("mallory", "mallory@evil.example"),
        ("unverified", "not verified"),
    ] {
        let start = format!("{base}/app");
        let shot = denied_png.display().to_string();
        let (ok, out) = run_browser(&[
            "login",
            "--start",
            &start,
            "--user",
            user,
            "--provider-button",
            "Test test",
            "--screenshot-final",
            &shot,
        ])
        .await;
        assert!(ok, "{out}");
        assert_eq!(out["status"], 403, "{user}: {out}");
        let text = out["bodyText"].as_str().unwrap();
        assert!(
            text.contains("Access denied") && text.contains(needle),
            "{user}: {text}"
        );
        assert!(
            !out["cookies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "__Host-vouchrs_session")
        );
    }
    assert!(std::fs::metadata(&denied_png).is_ok_and(|m| m.len() > 1000));
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("vouchrs_logins_total{provider=\"test\",outcome=\"denied\"} 2"),
        "{metrics}"
    );
    assert_eq!(
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn form_post_providers_log_in_with_a_post_callback() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let _proxy = proxy(&upstream, port, &idp.issuer, "");
    let start = format!("http://localhost:{port}/fp");
    let (ok, out) = run_browser(&[
        "login",
        "--start",
        &start,
        "--user",
        "alice",
        "--provider-button",
        "Test formpost",
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out["finalUrl"], start);
    assert_eq!(out["status"], 200);
    let posted = out["navigations"].as_array().unwrap().iter().any(|n| {
        n["method"] == "POST" && n["url"].as_str().unwrap().contains("/auth/oauth2/callback")
    });
    assert!(posted, "the callback arrived as a POST: {out}");
}

/// The callback refuses what a browser did not start: another browser's response, a tampered
/// or replayed state, a missing or expired login cookie.
#[tokio::test(flavor = "multi_thread")]
async fn callbacks_are_bound_to_the_browser_and_single_use() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let proxy = proxy(&upstream, port, &idp.issuer, "login_timeout = \"20s\"");
    let c = client();
    let base = format!("http://localhost:{port}");

    // This client starts a login and keeps the login cookie to itself.
    let r = get(&c, &proxy.url("/auth/sign_in?provider=test&rd=/after"), &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let authorize = r.headers["location"].to_str().unwrap().to_owned();
    assert!(
        authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="),
        "{authorize}"
    );
    let login_cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(login_cookie.starts_with("__Host-vouchrs_session_login="));

    // A browser without that cookie finishes at the provider: the proxy refuses its callback.
    let (ok, out) = run_browser(&[
        "login", "--start", &authorize, "--home", &base, "--user", "alice",
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out["status"], 400, "{out}");
    assert!(
        out["bodyText"]
            .as_str()
            .unwrap()
            .contains("another browser")
    );
    let callback = out["navigations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["url"].as_str().unwrap().to_owned())
        .find(|u| u.contains("/auth/oauth2/callback?"))
        .expect("callback URL");
    let path = callback.strip_prefix(&base).unwrap().to_owned();

    // Tampered state, with the right cookie: refused, and it does not burn the real state.
    let tampered = path.replacen("state=", "state=x", 1);
    let r = get(&c, &proxy.url(&tampered), &[("cookie", &login_cookie)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // No cookie at all: refused.
    assert_eq!(
        get(&c, &proxy.url(&path), &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    // The browser that started it: signed in, sent to its return path, login cookie cleared.
    let r = get(&c, &proxy.url(&path), &[("cookie", &login_cookie)]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", proxy.log());
    assert_eq!(r.headers["location"], "/after");
    let set: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set.iter().any(|c| c.starts_with("__Host-vouchrs_session=")
            && !c.starts_with("__Host-vouchrs_session=;"))
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Host-vouchrs_session_login=;") && c.contains("Max-Age=0"))
    );
    // The same response again: single use.
    let r = get(&c, &proxy.url(&path), &[("cookie", &login_cookie)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let metrics = proxy.metrics();
    for outcome in ["state_expired", "state_mismatch", "replayed", "success"] {
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")),
            "{outcome}: {metrics}"
        );
    }

    // Hostile return paths collapse to "/" even for a signed-in user.
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-vouchrs_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    for rd in [
        "//evil.com",
        "/%2F%2Fevil.com%2F..",
        "https://evil.com",
        "/\\evil.com",
        "%2F%2Fevil.com",
    ] {
        let r = get(
            &c,
            &proxy.url(&format!("/auth/sign_in?rd={rd}")),
            &[("cookie", session)],
        )
        .await;
        let location = r.headers["location"].to_str().unwrap();
        assert!(
            location == "/" || (location.starts_with('/') && !location.starts_with("//")),
            "{rd} → {location}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_login_cookie_is_refused_and_unknown_providers_are_listed_back() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let proxy = proxy(&upstream, port, &idp.issuer, "login_timeout = \"1s\"");
    let c = client();
    let r = get(&c, &proxy.url("/auth/sign_in?provider=test"), &[]).await;
    let login_cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let location = r.headers["location"].to_str().unwrap();
    let state = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(
        &c,
        &proxy.url(&format!("/auth/oauth2/callback?code=abc&state={state}")),
        &[("cookie", &login_cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.body).contains("took too long"));

    let r = get(&c, &proxy.url("/auth/sign_in?provider=nope"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let page = String::from_utf8_lossy(&r.body);
    assert!(page.contains("Continue with Test test") && page.contains("does not exist"));
    assert!(
        proxy
            .metrics()
            .contains("vouchrs_logins_total{provider=\"unknown\",outcome=\"unknown_provider\"} 1")
    );
}

/// The provider goes down: signed-in users keep working, a new sign-in gets the sign-in page
/// with a readable error (502), and sign-in works again once the provider is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_outage_keeps_sessions_and_shows_an_error_at_sign_in() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let idp_port: u16 = idp.issuer.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = proxy(&upstream, port, &idp.issuer, "");
    let c = client();
    let session = proxy.cookie_for("alice");
    let html = ("accept", "text/html");

    // Nothing has asked the provider for its metadata yet; now it is gone.
    drop(idp);
    let r = get(&c, &proxy.url("/app"), &[("cookie", &session)]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "an existing session keeps working"
    );
    assert_eq!(r.upstream_saw("x-auth-request-user"), ["alice"]);

    let r = get(
        &c,
        &proxy.url("/auth/sign_in?provider=test&rd=/app"),
        &[html],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", proxy.log());
    let page = String::from_utf8_lossy(&r.body);
    assert!(
        page.contains("cannot be reached right now"),
        "a readable error on the sign-in page: {page}"
    );
    assert!(
        !r.headers.contains_key("location"),
        "no redirect into the outage"
    );
    // Counted under its reason (the log line is written asynchronously; the counter is not).
    let metrics = proxy.metrics();
    assert!(
        metrics
            .contains("vouchrs_logins_total{provider=\"test\",outcome=\"provider_unavailable\"} 1"),
        "{metrics}"
    );

    // The provider comes back on the same address: sign-in goes through to it again.
    let _idp = OidcProvider::start_on(provider_config(port), idp_port);
    let r = get(&c, &proxy.url("/auth/sign_in?provider=test&rd=/app"), &[]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", proxy.log());
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("http://localhost:{idp_port}/auth?")),
        "{:?}",
        r.headers["location"]
    );
    let r = get(&c, &proxy.url("/app"), &[("cookie", &session)]).await;
    assert_eq!(r.status, StatusCode::OK);
}
