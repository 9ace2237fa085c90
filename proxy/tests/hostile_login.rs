//! Hostile input at login, against the real binary and the real OpenID provider
//! (`oidc-provider`, which signs every ID token these tests use): email claim tricks, session
//! fixation and login CSRF, and cross-site sign-out. One test per class, many cases each.
//!
//! Most cases log in over plain HTTP ([`HttpBrowser`]: the provider's login form is a plain
//! form POST), which walks the whole code flow (PKCE, code exchange, ID token verification)
//! many times faster than Chromium; the cross-site cases that depend on what a browser sends
//! (`SameSite`, `Origin`, fetch metadata) run in the real headless Chromium.

mod common;

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use common::oidc::{HttpBrowser, OidcProvider, run_browser};
use common::upstream::TestUpstream;
use common::{Extra, Proxy, SESSION_COOKIE, free_port};

const SECRET: &str = "client-secret-for-tests";
const LOGIN_COOKIE: &str = "__Host-vouchrs_session_login";

/// The provider's client accepts callbacks to every proxy port in `ports`.
fn provider_config(ports: &[u16], accounts: Value) -> Value {
    let uris: Vec<String> = ports
        .iter()
        .map(|p| format!("http://localhost:{p}/auth/oauth2/callback"))
        .collect();
    let logout: Vec<String> = ports
        .iter()
        .map(|p| format!("http://localhost:{p}/auth/signed_out"))
        .collect();
    json!({
        "clients": [{
            "client_id": "vouchrs",
            "client_secret": SECRET,
            "redirect_uris": uris,
            "post_logout_redirect_uris": logout,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "accounts": accounts,
    })
}

/// A proxy on `port` with one provider named `test` and the `[access]` lines given.
fn proxy(upstream: &TestUpstream, port: u16, issuer: &str, access: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap().keep();
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let tail = format!(
        "[[oidc.providers]]\nname = \"test\"\ndisplay_name = \"Test test\"\nissuer = \"{issuer}\"\n\
         client_id = \"vouchrs\"\nclient_secret_file = \"{}\"\n\
         scopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n[access]\n{access}\n",
        secret_file.display()
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

const LISTS: &str = "allowed_domains = [\"example.com\"]\nallowed_emails = [\"alice@partner.org\"]";

/// Logs in as `user` through the real provider; returns the callback's reply.
async fn log_in(b: &mut HttpBrowser, base: &str, user: &str) -> common::Reply {
    let callback = b
        .authorize(
            &format!("{base}/auth/sign_in?provider=test&rd=/whoami"),
            user,
        )
        .await;
    assert!(
        callback.starts_with(&format!("{base}/auth/oauth2/callback?")),
        "{user}: {callback}"
    );
    b.get(&callback).await
}

/// Header values the echo upstream received, after checking none holds a control byte.
fn upstream_saw(reply: &common::Reply, name: &str) -> Vec<String> {
    for pair in reply.json()["headers"].as_array().unwrap() {
        let value = pair[1].as_str().unwrap();
        assert!(
            !value.bytes().any(|b| b.is_ascii_control() && b != b'\t'),
            "the upstream got a control byte in {pair}"
        );
    }
    reply.upstream_saw(name)
}

/// One hostile (or legitimate) `email` claim.
struct Case {
    email: Option<Value>,
    /// `None`: no `email_verified` claim at all.
    verified: Option<Value>,
    /// The `X-Auth-Request-Email` expected when the allow-lists admit it; `None`: refused.
    listed: Option<&'static str>,
    /// A claim of the wrong JSON type: the token response fails to parse at the code exchange
    /// (`400`) everywhere.
    ill_typed: bool,
}

impl Case {
    /// What `email_verified` says: a boolean, or Apple's and Cognito's `"true"`/`"false"`.
    fn vouches(&self) -> Option<bool> {
        match self.verified.as_ref()? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

fn cases() -> Vec<Case> {
    let ok = |email: &str, header: &'static str| Case {
        email: Some(json!(email)),
        verified: Some(json!(true)),
        listed: Some(header),
        ill_typed: false,
    };
    let refused = |email: &str| Case {
        email: Some(json!(email)),
        verified: Some(json!(true)),
        listed: None,
        ill_typed: false,
    };
    let verified_as = |verified: Option<Value>| {
        let mut case = Case {
            email: Some(json!("alice@example.com")),
            verified,
            listed: None,
            ill_typed: false,
        };
        case.ill_typed =
            case.vouches().is_none() && case.verified.as_ref().is_some_and(|v| !v.is_null());
        if case.vouches() == Some(true) {
            case.listed = Some("alice@example.com");
        }
        case
    };
    vec![
        // Legitimately listed: matching is case-insensitive (README), the header is lowercase.
        ok("alice@example.com", "alice@example.com"),
        ok("ALICE@EXAMPLE.COM", "alice@example.com"),
        ok("alice@Example.Com", "alice@example.com"),
        ok("Alice@PARTNER.org", "alice@partner.org"),
        // One `@`: a mailbox at example.com, whatever its local part looks like.
        ok("evil.com@example.com", "evil.com@example.com"),
        // Several `@`.
        refused("alice@example.com@evil.com"),
        refused("alice@partner.org@evil.com"),
        refused("alice@evil.com@example.com"),
        refused("alice%40example.com@evil.com"),
        refused("alice@evil.com%40example.com"),
        // Quoted local parts, comments, display names, angle brackets, lists.
        refused("\"alice@example.com\"@evil.com"),
        refused("\"alice\"@example.com"),
        refused("alice@evil.com(@example.com)"),
        refused("alice(comment)@example.com"),
        refused("alice@evil.com (alice@example.com)"),
        refused("Alice <alice@example.com>"),
        refused("<alice@example.com>"),
        refused("mailto:alice@example.com"),
        refused("alice@example.com,evil@evil.com"),
        refused("evil@evil.com,alice@example.com"),
        // Whitespace, trailing dots, neighbours of the listed domain.
        refused(" alice@example.com"),
        refused("alice@example.com "),
        refused("alice @example.com"),
        refused("alice@ example.com"),
        refused("alice@example.com\t"),
        refused("alice@example.com."),
        refused("alice@.example.com"),
        refused("alice@sub.example.com"),
        refused("alice@example.com.evil.com"),
        refused("alice@evil-example.com"),
        refused("alice@example.co"),
        refused("alice@[127.0.0.1]"),
        // Unicode look-alikes and IDN: Cyrillic а, its punycode, full-width and ideographic
        // dots (IDNA maps them to `.`), zero-width and soft-hyphen padding, dotted İ.
        refused("alice@ex\u{430}mple.com"),
        refused("alice@xn--exmple-4nf.com"),
        refused("\u{430}lice@example.com"),
        refused("alice@example\u{ff0e}com"),
        refused("alice@example\u{3002}com"),
        refused("alice\u{200b}@example.com"),
        refused("alice@exam\u{ad}ple.com"),
        refused("AL\u{130}CE@EXAMPLE.COM"),
        refused("alice\u{ff20}example.com"),
        // Control bytes: header injection into X-Auth-Request-Email.
        refused("alice@example.com\r\nX-Auth-Request-User: admin"),
        refused("alice@example.com\nx-auth-request-groups: admins"),
        refused("alice@example.com\r"),
        refused("alice@example.com\0"),
        refused("alice@evil.com\0@example.com"),
        refused("alice@example.com\0.evil.com"),
        // `email_verified` says no, or does not say yes.
        verified_as(Some(json!(false))),
        verified_as(None),
        verified_as(Some(Value::Null)),
        // Apple's and Cognito's strings say the same as booleans.
        verified_as(Some(json!("false"))),
        verified_as(Some(json!("true"))),
        // Not a boolean: other strings, numbers, lists.
        verified_as(Some(json!("TRUE"))),
        verified_as(Some(json!(1))),
        verified_as(Some(json!("yes"))),
        verified_as(Some(json!([true]))),
        // Not a string, or no email at all.
        Case {
            email: Some(json!(["alice@example.com"])),
            verified: Some(json!(true)),
            listed: None,
            ill_typed: true,
        },
        Case {
            email: Some(json!({"address": "alice@example.com"})),
            verified: Some(json!(true)),
            listed: None,
            ill_typed: true,
        },
        Case {
            email: None,
            verified: Some(json!(true)),
            listed: None,
            ill_typed: false,
        },
    ]
}

/// Every `email` trick through the real provider, against allow-lists of the domain
/// `example.com` and the address `alice@partner.org`: only the legitimate ones get in, with the
/// normalized address as `X-Auth-Request-Email`. A second proxy without allow-lists admits
/// every user not refused by `email_verified: false`: the upstream then gets the address only
/// when the provider vouches for it and it parses, and never a header with a control byte.
#[tokio::test(flavor = "multi_thread")]
async fn email_claim_tricks_never_pass_the_allow_lists() {
    let cases = cases();
    let mut accounts = serde_json::Map::new();
    for (i, case) in cases.iter().enumerate() {
        let mut claims = json!({"sub": format!("u-{i}"), "groups": []});
        if let Some(email) = &case.email {
            claims["email"] = email.clone();
        }
        if let Some(verified) = &case.verified {
            claims["email_verified"] = verified.clone();
        }
        accounts.insert(format!("c{i}"), claims);
    }
    let upstream = TestUpstream::start().await;
    let (listed_port, open_port) = (free_port(), free_port());
    let idp = OidcProvider::start(provider_config(
        &[listed_port, open_port],
        Value::Object(accounts),
    ));
    let listed = proxy(&upstream, listed_port, &idp.issuer, LISTS);
    let _open = proxy(&upstream, open_port, &idp.issuer, "");
    let mut admitted = 0;
    for (i, case) in cases.iter().enumerate() {
        let user = format!("c{i}");
        let claim = case.email.as_ref().map(Value::to_string);
        let what = format!("{user} email={claim:?} verified={:?}", case.verified);

        // With the allow-lists.
        let base = format!("http://localhost:{listed_port}");
        let mut b = HttpBrowser::new();
        let before = upstream.arrived.load(Ordering::SeqCst);
        let reply = log_in(&mut b, &base, &user).await;
        match case.listed {
            Some(header) => {
                admitted += 1;
                assert_eq!(reply.status, StatusCode::FOUND, "{what}: {reply:?}");
                let page = b.get(&format!("{base}/whoami")).await;
                assert_eq!(page.status, StatusCode::OK, "{what}");
                assert_eq!(
                    upstream_saw(&page, "x-auth-request-email"),
                    [header],
                    "{what}"
                );
                assert_eq!(
                    upstream_saw(&page, "x-auth-request-user"),
                    [format!("u-{i}")]
                );
            }
            None => {
                let refusal = if case.ill_typed {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(
                    reply.status,
                    refusal,
                    "{what} got in: {reply:?}\n{}",
                    listed.log()
                );
                assert!(b.cookie(SESSION_COOKIE).is_none(), "{what}: a session");
                let page = b.get(&format!("{base}/whoami")).await;
                assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(
                    upstream.arrived.load(Ordering::SeqCst),
                    before,
                    "{what} reached the upstream"
                );
            }
        }

        // Without allow-lists: anyone not marked unverified; the email only if vouched for
        // and well-formed.
        let base = format!("http://localhost:{open_port}");
        let mut b = HttpBrowser::new();
        let reply = log_in(&mut b, &base, &user).await;
        if case.ill_typed {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {reply:?}");
            continue;
        }
        if case.vouches() == Some(false) {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {reply:?}");
            continue;
        }
        assert_eq!(reply.status, StatusCode::FOUND, "{what}: {reply:?}");
        let page = b.get(&format!("{base}/whoami")).await;
        assert_eq!(page.status, StatusCode::OK, "{what}: {page:?}");
        assert_eq!(
            upstream_saw(&page, "x-auth-request-user"),
            [format!("u-{i}")]
        );
        let email = upstream_saw(&page, "x-auth-request-email");
        let vouched = case.vouches() == Some(true);
        let parsed = case
            .email
            .as_ref()
            .and_then(Value::as_str)
            .filter(|_| vouched)
            .and_then(|e| vouchrs_proxy::config::EmailAddress::parse(e).ok());
        match parsed {
            Some(e) => assert_eq!(email, [e.as_str()], "{what}"),
            None => assert!(email.is_empty(), "{what}: {email:?}"),
        }
    }
    assert_eq!(admitted, 6, "the legitimate cases are counted");
    assert_eq!(cases.len(), 59, "cases counted for SECURITY.md");
    let ill_typed = cases.iter().filter(|c| c.ill_typed).count();
    let metrics = listed.metrics();
    for (outcome, count) in [
        ("denied", cases.len() - admitted - ill_typed),
        ("exchange_failed", ill_typed),
    ] {
        assert!(
            metrics.contains(&format!(
                "vouchrs_logins_total{{provider=\"test\",outcome=\"{outcome}\"}} {count}"
            )),
            "{outcome} {count}: {metrics}"
        );
    }
}

/// A logged-in browser as `user`, and its session cookie value.
async fn signed_in(base: &str, user: &str) -> (HttpBrowser, String) {
    let mut b = HttpBrowser::new();
    let reply = log_in(&mut b, base, user).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{user}: {reply:?}");
    let session = b.cookie(SESSION_COOKIE).expect("a session").to_owned();
    (b, session)
}

/// Who the upstream is told the browser is (`None`: not signed in).
async fn whoami(b: &mut HttpBrowser, base: &str) -> Option<String> {
    let page = b.get(&format!("{base}/whoami")).await;
    if page.status != StatusCode::OK {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{page:?}");
        return None;
    }
    let users = upstream_saw(&page, "x-auth-request-user");
    assert!(users.len() <= 1, "{users:?}");
    users.into_iter().next()
}

fn fixation_accounts() -> Value {
    json!({
        "alice": {"sub": "u-alice", "email": "alice@example.com", "email_verified": true},
        "mallory": {"sub": "u-mallory", "email": "mallory@example.com", "email_verified": true},
    })
}

/// Session fixation and login CSRF, with a real provider: cookies planted before login are
/// replaced, an attacker's authorization response (code and state) delivered to a victim's
/// browser is refused in every form, a cross-site request cannot finish a sign-in without the
/// user, and sign-out is neither a GET nor a POST another site can make.
#[tokio::test(flavor = "multi_thread")]
async fn session_fixation_and_login_csrf_are_refused() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = OidcProvider::start(provider_config(&[port], fixation_accounts()));
    let proxy = proxy(&upstream, port, &idp.issuer, LISTS);
    let base = format!("http://localhost:{port}");
    let sign_in = format!("{base}/auth/sign_in?provider=test&rd=/whoami");
    let mut cases = 0;

    // 1. Fixation: whatever session cookies a victim's browser holds before login (planted by
    //    an attacker: a real session of the attacker, one minted for the victim, garbage,
    //    stale chunks, look-alike names), the login replaces them with a fresh session.
    let (_, mallory_session) = signed_in(&base, "mallory").await;
    let minted = proxy.cookie_for("u-alice");
    let minted = minted.split_once('=').unwrap().1.to_owned();
    let chunk = |i: usize| format!("{SESSION_COOKIE}_{i}");
    let planted: Vec<Vec<(String, String)>> = vec![
        vec![(SESSION_COOKIE.into(), mallory_session.clone())],
        vec![(SESSION_COOKIE.into(), minted.clone())],
        vec![(SESSION_COOKIE.into(), "garbage".into())],
        vec![(SESSION_COOKIE.into(), String::new())],
        vec![
            (chunk(0), mallory_session[..40].to_owned()),
            (chunk(1), mallory_session[40..].to_owned()),
            (chunk(2), "stale".into()),
        ],
        vec![
            (SESSION_COOKIE.into(), mallory_session.clone()),
            (chunk(0), "x".into()),
            (chunk(1), "y".into()),
        ],
        vec![("vouchrs_session".into(), mallory_session.clone())],
        vec![("__Secure-vouchrs_session".into(), mallory_session.clone())],
        vec![("__host-vouchrs_session".into(), mallory_session.clone())],
    ];
    for cookies in &planted {
        cases += 1;
        let mut victim = HttpBrowser::new();
        for (name, value) in cookies {
            victim.set_cookie(name, value);
        }
        let reply = log_in(&mut victim, &base, "alice").await;
        assert_eq!(reply.status, StatusCode::FOUND, "{cookies:?}: {reply:?}");
        let fresh = victim.cookie(SESSION_COOKIE).expect("a session").to_owned();
        assert!(
            cookies.iter().all(|(_, v)| *v != fresh),
            "{cookies:?}: a planted value was kept"
        );
        for i in 0..3 {
            assert!(
                victim.cookie(&chunk(i)).is_none(),
                "{cookies:?}: chunk {i} left"
            );
        }
        // Only our exact name is ours: a look-alike stays with the browser (the proxy never
        // reads it), the identity is the victim's own.
        assert_eq!(whoami(&mut victim, &base).await.as_deref(), Some("u-alice"));
    }

    // 2. Login CSRF: the attacker signs in at the provider and delivers the authorization
    //    response (code, state) to the victim instead of using it.
    let mut attacker = HttpBrowser::new();
    let attacker_callback = attacker.authorize(&sign_in, "mallory").await;
    let attacker_login = attacker.cookie(LOGIN_COOKIE).unwrap().to_owned();
    let refused = |reply: &common::Reply, what: &str| {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {reply:?}");
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let ours = set.starts_with(&format!("{SESSION_COOKIE}="));
            let clears = set.starts_with(&format!("{SESSION_COOKIE}=;"));
            assert!(!ours || clears, "{what}: {set}");
        }
    };
    // A victim with no login in progress.
    let mut victim = HttpBrowser::new();
    refused(&victim.get(&attacker_callback).await, "no login cookie");
    assert_eq!(whoami(&mut victim, &base).await, None);
    // A victim with a login of their own in progress (another state).
    let mut victim = HttpBrowser::new();
    let started = victim.get(&sign_in).await;
    assert_eq!(started.status, StatusCode::FOUND);
    assert!(victim.cookie(LOGIN_COOKIE).is_some());
    refused(&victim.get(&attacker_callback).await, "own login cookie");
    assert_eq!(whoami(&mut victim, &base).await, None);
    // A victim already signed in keeps their own identity.
    let (mut victim, own) = signed_in(&base, "alice").await;
    refused(&victim.get(&attacker_callback).await, "signed in");
    assert_eq!(victim.cookie(SESSION_COOKIE), Some(own.as_str()));
    assert_eq!(whoami(&mut victim, &base).await.as_deref(), Some("u-alice"));
    cases += 3;
    // The attacker's login cookie planted under names a sibling site could set, or in another
    // of our cookie slots (each sealed value is bound to its cookie name).
    for name in [
        "vouchrs_session_login",
        "__Secure-vouchrs_session_login",
        "__host-vouchrs_session_login",
        "__Host-vouchrs_session_login_0",
        "__Host-vouchrs_session_pklogin",
        "__Host-vouchrs_session",
    ] {
        cases += 1;
        let mut victim = HttpBrowser::new();
        victim.set_cookie(name, &attacker_login);
        refused(&victim.get(&attacker_callback).await, name);
        assert_eq!(whoami(&mut victim, &base).await, None, "{name}");
    }
    // The victim's own authorization response with another browser's login cookie.
    let mut victim = HttpBrowser::new();
    let victim_callback = victim.authorize(&sign_in, "alice").await;
    victim.set_cookie(LOGIN_COOKIE, &attacker_login);
    refused(
        &victim.get(&victim_callback).await,
        "another browser's cookie",
    );
    assert_eq!(whoami(&mut victim, &base).await, None);
    cases += 1;
    // The control: in the browser that started it, the attacker's response was good (and the
    // refusals above did not use it up).
    let reply = attacker.get(&attacker_callback).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert_eq!(
        whoami(&mut attacker, &base).await.as_deref(),
        Some("u-mallory")
    );

    // 3. Sign-in started by another site. POST is no route; a cross-site GET only leads to
    //    the provider, whose login form needs the user.
    let cross = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ];
    let mut victim = HttpBrowser::new();
    let reply = victim
        .request(Method::POST, &sign_in, &cross, "provider=test")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(victim.cookie(LOGIN_COOKIE).is_none());
    let reply = victim.request(Method::GET, &sign_in, &cross[..1], "").await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let mut url = HttpBrowser::location(&sign_in, &reply).unwrap();
    let page = loop {
        let page = victim.get(&url).await;
        match HttpBrowser::location(&url, &page) {
            Some(next) => url = next,
            None => break page,
        }
    };
    assert!(
        url.starts_with(&idp.issuer) && url.contains("/interaction/"),
        "{url}"
    );
    assert!(String::from_utf8_lossy(&page.body).contains("op-login"));
    assert!(victim.cookie(SESSION_COOKIE).is_none());
    // With a live provider session, it can only sign the user in as themselves (as visiting
    // any protected page would).
    let (mut victim, _) = signed_in(&base, "alice").await;
    victim
        .cookies
        .retain(|(n, _)| !n.starts_with("__Host-vouchrs"));
    let reply = victim.request(Method::GET, &sign_in, &cross[..1], "").await;
    let authorize = HttpBrowser::location(&sign_in, &reply).unwrap();
    let callback = victim.sign_in_at_provider(&authorize, "nobody").await;
    assert_eq!(victim.get(&callback).await.status, StatusCode::FOUND);
    assert_eq!(whoami(&mut victim, &base).await.as_deref(), Some("u-alice"));
    cases += 3;

    // 4. Sign-out: the GET only shows a confirmation; a POST from another site is refused
    //    (even if a browser sent the cookie along); our own page's POST signs out.
    let (mut victim, own) = signed_in(&base, "alice").await;
    let sign_out = format!("{base}/auth/oauth2/sign_out");
    let page = victim.get(&sign_out).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers.get("set-cookie").is_none());
    assert!(String::from_utf8_lossy(&page.body).contains("method=\"post\""));
    cases += 1;
    let ours = base.as_str();
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        &[("sec-fetch-site", "cross-site"), ("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://app.localhost"),
        ],
        &[("sec-fetch-site", "cross-site"), ("origin", ours)],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", "http://localhost")],
        &[("origin", &format!("https://localhost:{port}"))],
        &[("origin", &format!("{ours}.evil.example"))],
    ] {
        cases += 1;
        let reply = victim
            .request(
                Method::POST,
                &sign_out,
                &[
                    headers,
                    &[("content-type", "application/x-www-form-urlencoded")],
                ]
                .concat(),
                "",
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{headers:?}: {reply:?}"
        );
        assert!(
            reply.headers.get("set-cookie").is_none(),
            "{headers:?}: {reply:?}"
        );
        assert_eq!(victim.cookie(SESSION_COOKIE), Some(own.as_str()));
        assert_eq!(whoami(&mut victim, &base).await.as_deref(), Some("u-alice"));
    }
    let reply = victim
        .request(
            Method::POST,
            &sign_out,
            &[("sec-fetch-site", "same-origin"), ("origin", ours)],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{reply:?}");
    assert!(victim.cookie(SESSION_COOKIE).is_none());
    assert_eq!(whoami(&mut victim, &base).await, None);
    assert_eq!(cases, 33, "cases counted for SECURITY.md");
}

/// Serves fixed HTML pages at `http://127.0.0.1:PORT/NAME`: another site than
/// `http://localhost:…` for Chromium, so its requests to the proxy are cross-site.
async fn evil_site(pages: Vec<(&'static str, String)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut head = vec![0; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n]).to_string();
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let (status, body) = pages
                    .iter()
                    .find(|(name, _)| path == format!("/{name}"))
                    .map_or(("404 Not Found", String::new()), |(_, body)| {
                        ("200 OK", body.clone())
                    });
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

/// The same attacks from a real page of another site in headless Chromium, with the cookies
/// a browser really sends (`SameSite=Lax`) and the fetch metadata it really adds: a form that
/// auto-posts to sign-out, and a page that sends the browser to the attacker's authorization
/// response. The signed-in user stays signed in, as themselves.
#[tokio::test(flavor = "multi_thread")]
async fn another_site_cannot_sign_a_browser_out_or_in() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = OidcProvider::start(provider_config(&[port], fixation_accounts()));
    let _proxy = proxy(&upstream, port, &idp.issuer, LISTS);
    let base = format!("http://localhost:{port}");
    let mut attacker = HttpBrowser::new();
    let attacker_callback = attacker
        .authorize(
            &format!("{base}/auth/sign_in?provider=test&rd=/whoami"),
            "mallory",
        )
        .await;
    let evil = evil_site(vec![
        (
            "sign-out",
            format!(
                "<form id=f method=post action=\"{base}/auth/oauth2/sign_out\"></form>\
                 <script>document.getElementById('f').submit()</script>"
            ),
        ),
        (
            "sign-in",
            format!("<script>location.href = {:?}</script>", attacker_callback),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("victim.json");
    let jar = jar.to_str().unwrap();
    let whoami = format!("{base}/whoami");
    let (ok, out) = run_browser(&[
        "login", "--start", &whoami, "--user", "alice", "--state", jar,
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out["status"], 200, "{out}");

    for page in ["sign-out", "sign-in"] {
        let (ok, out) =
            run_browser(&["visit", "--url", &format!("{evil}/{page}"), "--state", jar]).await;
        assert!(ok, "{page}: {out}");
        let last = out["navigations"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert!(
            last["url"].as_str().unwrap().starts_with(&base),
            "{page}: the browser reached the proxy: {out}"
        );
        let want = if page == "sign-out" { 403 } else { 400 };
        assert_eq!(last["status"], want, "{page}: {out}");
        let (ok, out) = run_browser(&["visit", "--url", &whoami, "--state", jar]).await;
        assert!(ok, "{out}");
        assert_eq!(out["finalUrl"], whoami, "{page}: signed out: {out}");
        assert_eq!(out["status"], 200, "{page}: {out}");
        let echo: Value = serde_json::from_str(out["bodyText"].as_str().unwrap()).unwrap();
        let users: Vec<_> = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0] == "x-auth-request-user")
            .collect();
        assert_eq!(
            users,
            [&json!(["x-auth-request-user", "u-alice"])],
            "{page}"
        );
    }
}

/// Group and subject claims that do not fit an identity header as they are: a `,` inside a
/// group name (an upstream that splits the list would read `staff,admins` as `admins`),
/// control bytes (header injection), and non-ASCII names (legitimate: `Ärzte`, which must
/// not make the session unusable). Whoever signs in is signed in; the upstream gets only
/// groups that read back as themselves.
#[tokio::test(flavor = "multi_thread")]
async fn group_and_subject_claims_cannot_forge_header_items() {
    let accounts = json!({
        "g1": {"sub": "u-g1", "groups": ["staff,admins"]},
        "g2": {"sub": "u-g2", "groups": ["staff", "admins, root", "ops"]},
        "g3": {"sub": "u-g3", "groups": ["ops\r\nx-auth-request-user: admin", "ops"]},
        "g4": {"sub": "u-g4", "groups": ["\u{c4}rzte", "staff"]},
        "g5": {"sub": "u-\u{e4}", "groups": ["staff"]},
        "g6": {"sub": "u-g6", "groups": ["", "staff\0", " ,", "dev"]},
    });
    let expected: [(&str, &str, Option<&str>); 6] = [
        ("g1", "u-g1", None),
        ("g2", "u-g2", Some("staff,ops")),
        ("g3", "u-g3", Some("ops")),
        ("g4", "u-g4", Some("\u{c4}rzte,staff")),
        ("g5", "u-\u{e4}", Some("staff")),
        ("g6", "u-g6", Some("dev")),
    ];
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = OidcProvider::start(provider_config(&[port], accounts));
    let proxy = proxy(&upstream, port, &idp.issuer, "");
    let base = format!("http://localhost:{port}");
    for (login, user, groups) in expected {
        let mut b = HttpBrowser::new();
        let reply = log_in(&mut b, &base, login).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{login}: {reply:?}");
        let page = b.get(&format!("{base}/whoami")).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{login}: {page:?}\n{}",
            proxy.log()
        );
        assert_eq!(
            upstream_saw(&page, "x-auth-request-user"),
            [user],
            "{login}"
        );
        let want: Vec<&str> = groups.into_iter().collect();
        assert_eq!(
            upstream_saw(&page, "x-auth-request-groups"),
            want,
            "{login}"
        );
    }
}
