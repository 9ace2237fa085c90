//! Passkeys end to end: the real binary, the real OpenID provider (`oidc-provider`) and a
//! real headless Chromium whose DevTools virtual authenticator (CTAP2, internal transport,
//! resident keys, user verification on) holds the passkeys. Nothing is mocked.
//!
//! The negative cases use assertions the browser's authenticator really made (scenario
//! `passkey-capture`: made, never submitted, each with its own ceremony cookie), which this
//! test then replays or alters byte by byte before sending them over HTTP.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use common::oidc::{OidcProvider, run_browser};
use common::upstream::TestUpstream;
use common::{Extra, Proxy, Reply, TestClient, client, free_port};

const SECRET: &str = "client-secret-for-tests";

fn provider(port: u16) -> OidcProvider {
    let base = format!("http://localhost:{port}");
    OidcProvider::start(json!({
        "clients": [{
            "client_id": "vouchrs",
            "client_secret": SECRET,
            "redirect_uris": [format!("{base}/auth/oauth2/callback")],
            "post_logout_redirect_uris": [format!("{base}/auth/signed_out")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "accounts": {
            "alice": {"sub": "u-alice", "email": "alice@example.com", "email_verified": true, "name": "Alice", "groups": ["staff", "admins"]},
        },
    }))
}

/// A proxy on `port` with one OIDC provider (when given), passkeys on, and an allow-list of
/// example.com.
fn proxy(upstream: &TestUpstream, port: u16, issuer: Option<&str>) -> Proxy {
    proxy_with_store(upstream, port, issuer, None, "").0
}

/// [`proxy`] with a credential store file written beforehand and more `[passkeys]`
/// settings; also returns the store's path.
fn proxy_with_store(
    upstream: &TestUpstream,
    port: u16,
    issuer: Option<&str>,
    store: Option<Value>,
    settings: &str,
) -> (Proxy, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let store_file = dir.join("passkeys.json");
    if let Some(store) = store {
        std::fs::write(&store_file, store.to_string()).unwrap();
    }
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let oidc = issuer.map_or(String::new(), |issuer| {
        format!(
            "[[oidc.providers]]\nname = \"test\"\ndisplay_name = \"Test test\"\nissuer = \"{issuer}\"\nclient_id = \"vouchrs\"\n\
             client_secret_file = \"{}\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n",
            secret_file.display()
        )
    });
    let tail = format!(
        "{oidc}[access]\nallowed_domains = [\"example.com\"]\n\
         [passkeys]\nenabled = true\nrp_name = \"Vouchrs tests\"\nstore_file = \"{}\"\n{settings}",
        store_file.display()
    );
    let server = Box::leak(format!("public_url = \"http://localhost:{port}\"").into_boxed_str());
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server,
            tail,
            listen_port: Some(port),
            ..Extra::default()
        },
    );
    (proxy, store_file)
}

fn upstream_saw(out: &Value, header: &str) -> Vec<String> {
    let body = out["bodyText"].as_str().unwrap();
    let echo: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == header)
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect()
}

async fn post(
    client: &TestClient,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = Request::builder().method(Method::POST).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Runs a scenario and insists it succeeded.
async fn browser(proxy: &Proxy, args: &[&str]) -> Value {
    let (ok, out) = run_browser(args).await;
    assert!(ok, "{args:?}: {out}\n--- proxy log ---\n{}", proxy.log());
    out
}

/// Edits one base64url field of a captured credential's response.
/// Signs in with the passkey of `authenticator` (a virtual authenticator's state file),
/// starting at `target`, in the browser profile `state`.
async fn passkey_login(proxy: &Proxy, target: &str, state: &str, authenticator: &str) -> Value {
    let args = ["passkey-login", "--start", target, "--state", state];
    browser(
        proxy,
        &[&args[..], &["--authenticator", authenticator]].concat(),
    )
    .await
}

/// The invitation link `vouchrs-proxy invite` prints for `email`.
fn invite(proxy: &Proxy, email: &str, ttl: &str) -> String {
    let config = proxy.dir.path().join("proxy.toml");
    let output = std::process::Command::new(common::binary())
        .args(["--config", config.to_str().unwrap()])
        .args(["invite", "--email", email, "--ttl", ttl])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn alter(credential: &Value, field: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Value {
    let mut credential = credential.clone();
    let mut bytes = URL_SAFE_NO_PAD
        .decode(credential["response"][field].as_str().unwrap())
        .unwrap();
    edit(&mut bytes);
    credential["response"][field] = json!(URL_SAFE_NO_PAD.encode(bytes));
    credential
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_user_adds_a_passkey_signs_in_with_it_alone_and_loses_it_on_removal() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let idp = provider(port);
    let proxy = proxy(&upstream, port, Some(&idp.issuer));
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("browser.json");
    let jar = jar.to_str().unwrap();
    let authn = dir.path().join("authenticator.json");
    let authn = authn.to_str().unwrap();
    let base = format!("http://localhost:{port}");
    let http = client();

    // 1. OIDC login with the real provider.
    let out = browser(
        &proxy,
        &[
            "login",
            "--start",
            &format!("{base}/app/first"),
            "--user",
            "alice",
            "--provider-button",
            "Test test",
            "--state",
            jar,
        ],
    )
    .await;
    assert_eq!(upstream_saw(&out, "x-auth-request-user"), ["u-alice"]);

    // 2. Add a passkey on the passkeys page; the page then lists it.
    let passkey_page = format!("{base}/auth/passkey");
    let out = browser(
        &proxy,
        &[
            "passkey-add",
            "--url",
            &passkey_page,
            "--name",
            "Work laptop",
            "--state",
            jar,
            "--authenticator",
            authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(
        out["authenticatorCredentials"], 1,
        "a resident key was made"
    );
    let listed = out["bodyText"].as_str().unwrap();
    assert!(
        listed.contains("Work laptop") && listed.contains("never"),
        "{listed}"
    );
    assert!(
        out["consoleErrors"].as_array().unwrap().is_empty(),
        "CSP or script errors: {out}"
    );

    // 3. Sign out everywhere (our cookie and the provider's session).
    let out = browser(
        &proxy,
        &[
            "logout",
            "--url",
            &format!("{base}/auth/oauth2/sign_out"),
            "--state",
            jar,
        ],
    )
    .await;
    assert_eq!(out["finalUrl"], format!("{base}/auth/signed_out"));

    // 4. Sign in with the passkey alone (discoverable: no name typed) and reach the upstream.
    let target = format!("{base}/app/after?x=1");
    let out = passkey_login(&proxy, &target, jar, authn).await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(out["finalUrl"], target);
    assert_eq!(upstream_saw(&out, "x-auth-request-user"), ["u-alice"]);
    assert_eq!(
        upstream_saw(&out, "x-auth-request-email"),
        ["alice@example.com"]
    );
    assert_eq!(
        upstream_saw(&out, "x-auth-request-groups"),
        ["staff,admins"]
    );
    assert!(
        upstream_saw(&out, "cookie")
            .iter()
            .all(|c| !c.contains("vouchrs_session")),
        "our cookies never reach the upstream"
    );
    let out = browser(
        &proxy,
        &[
            "visit",
            "--url",
            &format!("{base}/auth/userinfo"),
            "--state",
            jar,
        ],
    )
    .await;
    let info: Value = serde_json::from_str(out["bodyText"].as_str().unwrap()).unwrap();
    assert!(
        info["method"].as_str().unwrap().starts_with("passkey:"),
        "{info}"
    );

    // 4b. With an email hint the ceremony is allow-listed; it signs in too.
    let fresh = dir.path().join("fresh.json");
    let out = browser(
        &proxy,
        &[
            "passkey-login",
            "--start",
            &target,
            "--email",
            "alice@example.com",
            "--state",
            fresh.to_str().unwrap(),
            "--authenticator",
            authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(upstream_saw(&out, "x-auth-request-user"), ["u-alice"]);

    // 5. Negative cases on real assertions (see the module doc).
    let out = browser(
        &proxy,
        &[
            "passkey-capture",
            "--url",
            &format!("{base}/auth/sign_in"),
            "--count",
            "7",
            "--authenticator",
            authn,
        ],
    )
    .await;
    let captured = out["captured"].as_array().unwrap().clone();
    assert_eq!(captured.len(), 7);
    let finish = format!("{base}/auth/passkey/login/finish");
    let send = |i: usize, credential: Value| {
        let cookie = &captured[i]["cookie"];
        let cookie = format!(
            "{}={}",
            cookie["name"].as_str().unwrap(),
            cookie["value"].as_str().unwrap()
        );
        let http = http.clone();
        let finish = finish.clone();
        let host = format!("localhost:{port}");
        async move {
            post(
                &http,
                &finish,
                &[
                    ("cookie", &cookie),
                    ("content-type", "application/json"),
                    ("host", &host),
                ],
                credential.to_string(),
            )
            .await
        }
    };
    let refused = |reply: &Reply, code: &str| {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        assert_eq!(reply.json()["error"], code, "{:?}", reply.body);
        assert!(reply.headers.get_all("set-cookie").iter().all(|c| {
            !c.to_str().unwrap().starts_with("__Host-vouchrs_session=")
                || c.to_str().unwrap().starts_with("__Host-vouchrs_session=;")
        }));
    };
    let credential = |i: usize| captured[i]["credential"].clone();

    // Tampered clientDataJSON: one byte of the challenge changed.
    let tampered = alter(&credential(0), "clientDataJSON", |bytes| {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let at = text.find("\"challenge\":\"").unwrap() + 13;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    });
    refused(&send(0, tampered).await, "verification_failed");
    // Another origin in clientDataJSON (what a phishing site's page would produce).
    let other_origin = alter(&credential(1), "clientDataJSON", |bytes| {
        let text = String::from_utf8(bytes.clone()).unwrap();
        *bytes = text
            .replace(&format!("http://localhost:{port}"), "https://evil.example")
            .into_bytes();
    });
    refused(&send(1, other_origin).await, "verification_failed");
    // Another rp id: the first byte of authenticatorData's rpIdHash changed.
    let other_rp = alter(&credential(2), "authenticatorData", |bytes| {
        bytes[0] ^= 0x01
    });
    refused(&send(2, other_rp).await, "verification_failed");
    // Tampered authenticator data: the signature counter (bytes 33..37) raised.
    let bumped = alter(&credential(3), "authenticatorData", |bytes| {
        bytes[36] ^= 0x40
    });
    refused(&send(3, bumped).await, "verification_failed");
    // The control: an untouched capture signs in, so the refusals above were the edits'.
    let ok = send(5, credential(5)).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}\n{}", ok.body, proxy.log());
    assert!(
        ok.headers.get_all("set-cookie").iter().any(|c| {
            c.to_str().unwrap().starts_with("__Host-vouchrs_session=") && c.len() > 60
        })
    );
    // Replayed: the same assertion with the same ceremony cookie again.
    refused(&send(5, credential(5)).await, "replayed");
    // Replayed under a new ceremony (a ceremony cookie another browser or tab started):
    // its challenge differs, so the signature does not cover it.
    refused(&send(6, credential(5)).await, "verification_failed");
    // A genuine, untouched assertion made before the control one: its signature counter is
    // behind the stored one, as a cloned authenticator's would be.
    refused(&send(4, credential(4)).await, "counter_regressed");

    // Cross-site POSTs are refused before anything else.
    let cross = post(
        &http,
        &format!("{base}/auth/passkey/login/start"),
        &[
            ("origin", "https://evil.example"),
            ("content-type", "application/json"),
            ("host", &format!("localhost:{port}")),
        ],
        "{}",
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);

    // 6. Remove the passkey while signed in with it: that very session ends at once.
    let out = browser(
        &proxy,
        &["passkey-remove", "--url", &passkey_page, "--state", jar],
    )
    .await;
    assert!(
        out["finalUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/auth/sign_in")),
        "{out}"
    );
    let out = browser(
        &proxy,
        &[
            "visit",
            "--url",
            &target,
            "--state",
            fresh.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out["finalUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/auth/sign_in")),
        "other sessions of it too: {out}"
    );
    assert!(
        !out["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "__Host-vouchrs_session"),
        "the dead session cookie is cleared: {out}"
    );

    // 7. The authenticator still holds the key, but the next passkey login is refused.
    let out = passkey_login(&proxy, &target, jar, authn).await;
    assert_eq!(out["outcome"], "error", "{out}");
    assert!(
        out["passkeyError"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{out}"
    );

    let metrics = proxy.metrics();
    for line in [
        "vouchrs_passkey_registrations_total{outcome=\"success\"} 1",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"success\"} 3",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"replayed\"} 1",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"verification_failed\"} 5",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"unknown_credential\"} 1",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"counter_regressed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_registers_one_passkey_once() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let proxy = proxy(&upstream, port, None);
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("browser.json");
    let jar = jar.to_str().unwrap();
    let authn = dir.path().join("authenticator.json");
    let authn = authn.to_str().unwrap();
    let base = format!("http://localhost:{port}");
    let http = client();
    let host = format!("localhost:{port}");

    // Nobody registers anonymously: no session, no invitation.
    let start = format!("{base}/auth/passkey/register/start");
    let anonymous = post(
        &http,
        &start,
        &[("content-type", "application/json"), ("host", &host)],
        "{}",
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"], "not_allowed");
    // Forged and expired invitations are refused.
    let forged = post(
        &http,
        &start,
        &[("content-type", "application/json"), ("host", &host)],
        r#"{"invitation":"AQJrMQ"}"#,
    )
    .await;
    assert_eq!(forged.json()["error"], "invitation_invalid");
    let (_, expired) = vouchrs_proxy::passkey::invite::Invitation::create(
        &proxy.sealer(),
        "late@example.com",
        60,
        common::now() - 61,
    );
    let expired = post(
        &http,
        &start,
        &[("content-type", "application/json"), ("host", &host)],
        json!({"invitation": expired}).to_string(),
    )
    .await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    assert_eq!(expired.json()["error"], "invitation_expired");

    // `vouchrs-proxy invite` prints the link.
    let link = invite(&proxy, "bob@example.com", "24h");
    assert!(
        link.starts_with(&format!("{base}/auth/passkey/invite?token=")),
        "{link}"
    );

    // The invitation page registers a passkey, then sends the user to sign in.
    let out = browser(
        &proxy,
        &[
            "passkey-add",
            "--url",
            &link,
            "--state",
            jar,
            "--authenticator",
            authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert!(
        out["finalUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/auth/sign_in")),
        "{out}"
    );

    // Used once: the link is dead now.
    let out = browser(&proxy, &["visit", "--url", &link]).await;
    assert_eq!(out["status"], 403);
    assert!(
        out["bodyText"].as_str().unwrap().contains("already used"),
        "{out}"
    );

    // Sign in with the passkey alone; the upstream sees the invited identity.
    let target = format!("{base}/app/bob");
    let out = passkey_login(&proxy, &target, jar, authn).await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(out["finalUrl"], target);
    assert_eq!(
        upstream_saw(&out, "x-auth-request-user"),
        ["bob@example.com"]
    );
    assert_eq!(
        upstream_saw(&out, "x-auth-request-email"),
        ["bob@example.com"]
    );

    // Remove it: this session ends, and the next passkey login is refused.
    let out = browser(
        &proxy,
        &[
            "passkey-remove",
            "--url",
            &format!("{base}/auth/passkey"),
            "--state",
            jar,
        ],
    )
    .await;
    assert!(
        out["finalUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/auth/sign_in")),
        "{out}"
    );
    let out = passkey_login(&proxy, &target, jar, authn).await;
    assert_eq!(out["outcome"], "error", "{out}");
    assert!(
        out["passkeyError"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{out}"
    );

    // Users outside the access rules may hold an invitation but never get in with it.
    let link = invite(&proxy, "eve@evil.example", "1h");
    let eve = dir.path().join("eve.json");
    let eve_authn = dir.path().join("eve-authenticator.json");
    let (eve, eve_authn) = (eve.to_str().unwrap(), eve_authn.to_str().unwrap());
    let out = browser(
        &proxy,
        &[
            "passkey-add",
            "--url",
            &link,
            "--state",
            eve,
            "--authenticator",
            eve_authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    let out = passkey_login(&proxy, &target, eve, eve_authn).await;
    assert_eq!(out["outcome"], "error", "{out}");
    assert!(
        out["passkeyError"]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{out}"
    );
}

/// Runs a scenario with the authenticator kept in `authn`, which cannot verify the user.
async fn no_uv(proxy: &Proxy, args: &[&str], jar: &str, authn: &str) -> Value {
    let more = [
        "--state",
        jar,
        "--authenticator",
        authn,
        "--without-user-verification",
    ];
    browser(proxy, &[args, &more[..]].concat()).await
}

/// Carol's passkey login at the proxy on `port`, with the key that cannot verify. With the
/// email hint: Chromium keeps such a key's discoverable credential from being listed without
/// it (credProtect), as real keys do.
async fn carol_signs_in(proxy: &Proxy, port: u16, jar: &str, authn: &str) -> Value {
    let target = format!("http://localhost:{port}/app/carol");
    let login = ["passkey-login", "--start", &target];
    no_uv(
        proxy,
        &[&login[..], &["--email", "carol@example.com"]].concat(),
        jar,
        authn,
    )
    .await
}

/// An authenticator that cannot verify the user (a simple security key), behind a client that
/// asks for no verification whatever the server wants: `preferred` lets it register and sign
/// in; `required` (the default) refuses both, on the server, for the same credential.
#[tokio::test(flavor = "multi_thread")]
async fn the_user_verification_policy_decides_about_keys_that_cannot_verify() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (jar, authn) = (path("browser.json"), path("authenticator.json"));
    // `preferred`: the key registers through an invitation and signs in alone.
    let port = free_port();
    let (preferred, store_file) = proxy_with_store(
        &upstream,
        port,
        None,
        None,
        "user_verification = \"preferred\"\n",
    );
    let link = invite(&preferred, "carol@example.com", "1h");
    let out = no_uv(&preferred, &["passkey-add", "--url", &link], &jar, &authn).await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    let stored: Value = serde_json::from_slice(&std::fs::read(&store_file).unwrap()).unwrap();
    let out = carol_signs_in(&preferred, port, &jar, &authn).await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(
        upstream_saw(&out, "x-auth-request-email"),
        ["carol@example.com"]
    );
    drop(preferred);

    // `required`, with the same credential store: the server refuses that key's assertion,
    // and a new registration with it.
    let port = free_port();
    let (required, _) = proxy_with_store(&upstream, port, None, Some(stored), "");
    let out = carol_signs_in(&required, port, &jar, &authn).await;
    assert_eq!(out["outcome"], "error", "{out}");
    let refused = "That passkey could not be verified.";
    assert_eq!(out["passkeyError"], refused, "{out}");
    let link = invite(&required, "dave@example.com", "1h");
    let out = no_uv(&required, &["passkey-add", "--url", &link], &jar, &authn).await;
    assert_eq!(out["outcome"], "error", "{out}");
    assert_eq!(out["passkeyError"], refused, "{out}");
    let metrics = required.metrics();
    for line in [
        "vouchrs_passkey_registrations_total{outcome=\"verification_failed\"} 1",
        "vouchrs_logins_total{provider=\"passkey\",outcome=\"verification_failed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // The log says why (the user sees only the sentence above).
    let log = required.log();
    let why = "The user verified bit is not set, and required by policy";
    assert_eq!(log.matches(why).count(), 2, "{log}");
}

/// A stored credential as the file store keeps it (the key bytes need not verify: these
/// requests are refused before any signature is checked).
fn stored_credential(id: &str, user: &str) -> Value {
    json!({
        "id": id, "user": user, "email": format!("{user}@example.com"), "groups": [],
        "user_handle": "00000000-0000-0000-0000-000000000000", "name": "laptop",
        "created": 1, "last_used": null, "invitation": null,
        "passkey": {"cred": {
            "cred_id": "AAEC", "cred": {"type_": "ES256", "key": {"EC_EC2": {"curve": "SECP256R1",
            "x": vec![1u8; 32], "y": vec![2u8; 32]}}}, "counter": 0, "transports": null,
            "user_verified": true, "backup_eligible": false, "backup_state": false,
            "registration_policy": "required",
            "extensions": {"cred_protect": "NotRequested", "hmac_create_secret": "NotRequested",
            "appid": "NotRequested", "cred_props": "Ignored"},
            "attestation": {"data": "None", "metadata": "None"}, "attestation_format": "none"}},
    })
}

/// Hostile requests to every passkey endpoint, over raw HTTP against the real binary: wrong
/// content types, malformed and deeply nested JSON, oversized bodies, ceremony cookies that are
/// garbage or under look-alike names, tampered invitation tokens, another user's credential id
/// on the remove endpoint (IDOR), and cross-site POSTs. None gets further than a 4xx, none
/// changes the store, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn passkey_endpoints_refuse_hostile_requests() {
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let store =
        json!({"credentials": [stored_credential("cred-alice", "alice")], "used_invitations": []});
    let (proxy, store_file) = proxy_with_store(&upstream, port, None, Some(store), "");
    let http = client();
    let base = format!("http://localhost:{port}");
    let host = format!("localhost:{port}");
    let url = |route: &str| proxy.url(&format!("/auth/passkey{route}"));
    let json_type = ("content-type", "application/json");
    let stored = || std::fs::read_to_string(&store_file).unwrap();
    let cases = std::cell::Cell::new(0);
    let expect = |reply: &Reply, status: StatusCode, code: &str, what: &str| {
        cases.set(cases.get() + 1);
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        if !code.is_empty() {
            assert_eq!(reply.json()["error"], code, "{what}: {:?}", reply.body);
        }
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
            assert!(value.is_empty(), "{what}: a cookie was set: {set}");
        }
    };

    // Wrong content types on the JSON endpoints (a cross-site form can send only these).
    for route in ["/login/start", "/register/start"] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("text/json"),
        ] {
            let mut headers = vec![("host", host.as_str())];
            headers.extend(content_type.map(|t| ("content-type", t)));
            let reply = post(
                &http,
                &url(route),
                &headers,
                r#"{"email":"alice@example.com"}"#,
            )
            .await;
            expect(
                &reply,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "malformed",
                &format!("{route} {content_type:?}"),
            );
        }
    }

    // Malformed JSON.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let nested = format!("{}1{}", r#"{"a":"#.repeat(3_000), "}".repeat(3_000));
    let deep_object = format!("{{\"email\":{nested},\"invitation\":{nested}}}");
    let malformed: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        // (`[]` is the defaults in serde's sequence form for a struct: valid, not listed.)
        b"\"x\"".to_vec(),
        b"{\"email\":5,\"name\":5}".to_vec(),
        b"{\"rd\":{\"a\":1},\"invitation\":{\"a\":1}}".to_vec(),
        b"{\"email\":\"a\0b\"}\0".to_vec(),
        b"{\"email\":\"\xff\xfe\",\"name\":\"\xff\xfe\"}".to_vec(),
        b"{\"email\":\"\\ud800\",\"name\":\"\\ud800\"}".to_vec(),
        deep.clone().into_bytes(),
        deep_object.into_bytes(),
    ];
    for route in ["/login/start", "/register/start"] {
        for body in &malformed {
            let reply = post(
                &http,
                &url(route),
                &[("host", &host), json_type],
                body.clone(),
            )
            .await;
            let what = format!(
                "{route} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(20)])
            );
            expect(&reply, StatusCode::BAD_REQUEST, "malformed", &what);
        }
    }
    // Finish steps without a ceremony, with garbage, or with a ceremony cookie under a
    // look-alike name or from the other ceremony (sealed values are bound to their name).
    let (_, started) = {
        let r = post(
            &http,
            &url("/login/start"),
            &[("host", &host), json_type],
            "{}",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
        (r, set.split(';').next().unwrap().to_owned())
    };
    let ceremony = started.split_once('=').unwrap().1.to_owned();
    for (route, cookie) in [
        ("/login/finish", String::new()),
        (
            "/login/finish",
            "__Host-vouchrs_session_pklogin=garbage".to_owned(),
        ),
        (
            "/login/finish",
            format!("vouchrs_session_pklogin={ceremony}"),
        ),
        (
            "/login/finish",
            format!("__Secure-vouchrs_session_pklogin={ceremony}"),
        ),
        (
            "/login/finish",
            format!("__Host-vouchrs_session_pkreg={ceremony}"),
        ),
        (
            "/register/finish",
            format!("__Host-vouchrs_session_pkreg={ceremony}"),
        ),
        ("/register/finish", String::new()),
    ] {
        for body in [&b"{}"[..], b"garbage", deep.as_bytes()] {
            let mut headers = vec![("host", host.as_str()), json_type];
            if !cookie.is_empty() {
                headers.push(("cookie", cookie.as_str()));
            }
            let reply = post(&http, &url(route), &headers, body.to_vec()).await;
            assert!(
                reply.status == StatusCode::BAD_REQUEST,
                "{route} {cookie}: {:?}",
                reply.body
            );
            expect(
                &reply,
                StatusCode::BAD_REQUEST,
                "",
                &format!("{route} {cookie}"),
            );
        }
    }

    // Oversized bodies: refused with 413 after 64 KiB, on every endpoint.
    let alice = proxy.cookie_for("alice");
    for route in [
        "/login/start",
        "/register/start",
        "/login/finish",
        "/register/finish",
        "/remove",
    ] {
        let headers = [
            ("host", host.as_str()),
            json_type,
            ("cookie", alice.as_str()),
        ];
        // A client of its own each time: the proxy closes these connections after answering,
        // and a pooled one would fail the next request.
        let reply = post(&client(), &url(route), &headers, vec![b' '; 64 * 1024 + 1]).await;
        expect(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("{route} 64 KiB + 1"),
        );
        // 1 MiB: the proxy answers 413 after 64 KiB and closes; the client may still be
        // sending and then sees the connection reset instead of the answer. Either is a
        // refusal; a 2xx or a dead proxy is not.
        let mut builder = Request::builder().method(Method::POST).uri(url(route));
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let big = builder.body(Full::new(Bytes::from(vec![b' '; 1024 * 1024])));
        if let Ok(response) = client().request(big.unwrap()).await {
            assert_eq!(
                response.status(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "{route} 1 MiB"
            );
        }
        cases.set(cases.get() + 1);
    }

    // IDOR: another signed-in user removing alice's credential by its id.
    for user in ["bob", "Alice", "alice ", "u-alice"] {
        let cookie = proxy.cookie_for(user);
        let reply = post(
            &http,
            &url("/remove"),
            &[
                ("host", &host),
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "id=cred-alice",
        )
        .await;
        cases.set(cases.get() + 1);
        assert_eq!(reply.status, StatusCode::OK, "{user}: {:?}", reply.body);
        assert!(
            String::from_utf8_lossy(&reply.body).contains("role=\"alert\""),
            "{user}: an error is shown"
        );
        assert!(
            stored().contains("cred-alice"),
            "{user} removed alice's passkey"
        );
    }
    // Without a session at all.
    let reply = post(&http, &url("/remove"), &[("host", &host)], "id=cred-alice").await;
    expect(
        &reply,
        StatusCode::UNAUTHORIZED,
        "",
        "remove without a session",
    );

    // Cross-site POSTs on every route, even with alice's own cookie attached.
    for route in [
        "/login/start",
        "/login/finish",
        "/register/start",
        "/register/finish",
        "/remove",
    ] {
        for headers in [
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ][..],
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://app.localhost"),
            ],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "cross-site"), ("origin", base.as_str())],
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
        ] {
            let mut all = headers.to_vec();
            all.extend([
                ("host", host.as_str()),
                ("cookie", alice.as_str()),
                json_type,
            ]);
            let reply = post(&http, &url(route), &all, "id=cred-alice").await;
            expect(
                &reply,
                StatusCode::FORBIDDEN,
                "cross_origin",
                &format!("{route} {headers:?}"),
            );
        }
    }
    assert!(stored().contains("cred-alice"));

    // Tampered invitation tokens: every edit is refused, on the page and at registration.
    let (_, token) = vouchrs_proxy::passkey::invite::Invitation::create(
        &proxy.sealer(),
        "carol@example.com",
        3600,
        common::now(),
    );
    let mut tampered: Vec<String> = Vec::new();
    for at in [0, 5, token.len() / 2, token.len() - 1] {
        let mut bytes = token.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        tampered.push(String::from_utf8(bytes).unwrap());
    }
    tampered.extend([
        token[..token.len() - 1].to_owned(),
        format!("{token}A"),
        token.to_ascii_uppercase(),
        format!("{token}="),
        format!(" {token}"),
        alice.split_once('=').unwrap().1.to_owned(),
        ceremony.clone(),
        String::new(),
        "A".repeat(10_000),
    ]);
    for bad in &tampered {
        let reply = post(
            &http,
            &url("/register/start"),
            &[("host", &host), json_type],
            json!({"invitation": bad}).to_string(),
        )
        .await;
        expect(
            &reply,
            StatusCode::FORBIDDEN,
            "invitation_invalid",
            &format!("invitation {bad:.20}"),
        );
        let page = common::get(
            &http,
            &format!(
                "{}?token={}",
                url("/invite"),
                url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
            ),
            &[("host", &host)],
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "invite page {bad:.20}");
    }
    // The control: the untouched token opens a registration ceremony.
    let reply = post(
        &http,
        &url("/register/start"),
        &[("host", &host), json_type],
        json!({"invitation": token}).to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    // The owner (same origin) can remove it: the refusals above were about who and where.
    let reply = post(
        &http,
        &url("/remove"),
        &[
            ("host", &host),
            ("cookie", &alice),
            ("origin", &base),
            ("sec-fetch-site", "same-origin"),
        ],
        "id=cred-alice",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{:?}", reply.body);
    assert!(!stored().contains("cred-alice"));
    // Still serving, with nothing sent upstream.
    assert_eq!(
        common::get(&http, &proxy.url("/auth/sign_in"), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    println!("hostile passkey cases: {}", cases.get());
}
