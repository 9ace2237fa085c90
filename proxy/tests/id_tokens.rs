//! ID token verification against tokens no real provider would send: wrong nonce, audience,
//! issuer or signature, expired, issued in the future, unknown key. A real OpenID provider
//! (see `oidc_login.rs`) only signs good tokens, so this test serves its own: a minimal
//! provider in-process (discovery, JWKS, token endpoint) signing ES256 tokens it is told to
//! spoil. The proxy under test is the real binary.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, client, free_port, get};

/// Turns good claims into the token to hand out.
type SpoilFn = Box<dyn FnOnce(Value) -> Spoil>;

/// What the token endpoint hands out next.
#[derive(Clone)]
struct Spoil {
    claims: Value,
    kid: &'static str,
    /// Sign with a key that is not in the JWKS.
    foreign_key: bool,
}

struct FakeIdp {
    issuer: String,
    next: Arc<Mutex<Option<Spoil>>>,
    /// Key id the JWKS publishes (changed to test re-fetching).
    published_kid: Arc<Mutex<&'static str>>,
}

impl FakeIdp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        let key = SigningKey::random(&mut rand_core::OsRng);
        let foreign = SigningKey::random(&mut rand_core::OsRng);
        let next: Arc<Mutex<Option<Spoil>>> = Arc::default();
        let published_kid = Arc::new(Mutex::new("k1"));
        let state = (
            issuer.clone(),
            key,
            foreign,
            next.clone(),
            published_kid.clone(),
        );
        tokio::spawn(async move {
            let state = Arc::new(state);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (issuer, key, foreign, next, kid) = &*state;
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => json!({
                                "issuer": issuer,
                                "authorization_endpoint": format!("{issuer}/auth"),
                                "token_endpoint": format!("{issuer}/token"),
                                "jwks_uri": format!("{issuer}/jwks"),
                                "response_types_supported": ["code"],
                                "subject_types_supported": ["public"],
                                "id_token_signing_alg_values_supported": ["ES256"],
                            }),
                            "/jwks" => {
                                let point = key.verifying_key().to_encoded_point(false);
                                json!({"keys": [{
                                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                                    "kid": *kid.lock().unwrap(),
                                    "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                                    "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
                                }]})
                            }
                            "/token" => {
                                let spoil =
                                    next.lock().unwrap().clone().expect("a token was prepared");
                                let signer = if spoil.foreign_key { foreign } else { key };
                                json!({
                                    "access_token": "opaque", "token_type": "Bearer", "expires_in": 3600,
                                    "id_token": jwt(signer, spoil.kid, &spoil.claims),
                                })
                            }
                            _ => json!({}),
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            issuer,
            next,
            published_kid,
        }
    }
}

fn jwt(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// Runs one login: sign-in, then a callback whose code yields `spoil(good_claims)`.
async fn login_with(
    proxy: &Proxy,
    idp: &FakeIdp,
    spoil: impl FnOnce(Value) -> Spoil,
) -> (StatusCode, String) {
    let c = client();
    let r = get(&c, &proxy.url("/auth/sign_in?provider=fake&rd=/done"), &[]).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", proxy.log());
    let location = r.headers["location"].to_str().unwrap().to_owned();
    let param = |k: &str| {
        location
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    let (state, nonce) = (param("state"), param("nonce"));
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let now = common::now();
    let good = json!({
        "iss": idp.issuer, "aud": "vouchrs", "sub": "u-1", "email": "ann@example.com", "email_verified": true,
        "nonce": nonce, "iat": now, "exp": now + 300, "groups": ["staff"],
    });
    *idp.next.lock().unwrap() = Some(spoil(good));
    let r = get(
        &c,
        &proxy.url(&format!("/auth/oauth2/callback?code=c&state={state}")),
        &[("cookie", &cookie)],
    )
    .await;
    let location = r
        .headers
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status, location)
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_verified_id_token_starts_a_session() {
    let upstream = TestUpstream::start().await;
    let idp = FakeIdp::start().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    let tail = format!(
        "[[oidc.providers]]\nname = \"fake\"\nissuer = \"{}\"\nclient_id = \"vouchrs\"\nclient_secret_file = \"{}\"\n",
        idp.issuer,
        dir.path().join("secret").display()
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
    let good = |claims| Spoil {
        claims,
        kid: "k1",
        foreign_key: false,
    };

    // The control: a good token signs the user in.
    assert_eq!(
        login_with(&proxy, &idp, good).await,
        (StatusCode::FOUND, "/done".to_owned())
    );

    let now = common::now();
    let spoiled: Vec<(&str, SpoilFn)> = vec![
        (
            "wrong nonce",
            Box::new(move |c| good(with(c, "nonce", json!("not-the-nonce")))),
        ),
        (
            "no nonce",
            Box::new(move |mut c: Value| {
                c.as_object_mut().unwrap().remove("nonce");
                good(c)
            }),
        ),
        (
            "wrong audience",
            Box::new(move |c| good(with(c, "aud", json!("someone-else")))),
        ),
        (
            "wrong issuer",
            Box::new(move |c| good(with(c, "iss", json!("http://localhost:1")))),
        ),
        (
            "expired",
            Box::new(move |c| good(with(c, "exp", json!(now - 10)))),
        ),
        (
            "issued in the future",
            Box::new(move |c| good(with(c, "iat", json!(now + 3600)))),
        ),
        (
            "signed by another key",
            Box::new(|c| Spoil {
                claims: c,
                kid: "k1",
                foreign_key: true,
            }),
        ),
        (
            "unknown key id",
            Box::new(|c| Spoil {
                claims: c,
                kid: "k-unknown",
                foreign_key: false,
            }),
        ),
    ];
    let count = spoiled.len();
    for (case, spoil) in spoiled {
        let (status, _) = login_with(&proxy, &idp, spoil).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case} was accepted");
    }
    let metrics = proxy.metrics();
    let expected =
        format!("vouchrs_logins_total{{provider=\"fake\",outcome=\"id_token_invalid\"}} {count}");
    assert!(metrics.contains(&expected), "{metrics}");

    // Keys rotate: a token under a newly published key id is accepted after one JWKS re-fetch
    // (allowed 30 s after the last fetch, so wait that out first).
    *idp.published_kid.lock().unwrap() = "k2";
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    let rotated = |claims| Spoil {
        claims,
        kid: "k2",
        foreign_key: false,
    };
    assert_eq!(
        login_with(&proxy, &idp, rotated).await,
        (StatusCode::FOUND, "/done".to_owned()),
        "{}",
        proxy.log()
    );
}
