//! The process as an operator sees it: config checks, admin routes, graceful shutdown.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, binary, client, get, raw_request};

fn check_config(toml: &str, keyring: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let keyring_path = dir.path().join("keyring");
    if let Some(text) = keyring {
        std::fs::write(&keyring_path, text).unwrap();
    }
    let toml = toml.replace("KEYRING", &keyring_path.display().to_string());
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(binary())
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_key() {
    let ok = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[session]\nkeyring_file = \"KEYRING\"\n";
    let key = common::key_line("k1");
    assert_eq!(check_config(ok, Some(&key)).0, 0);

    let cases = [
        (
            ok.replace("http://127", "ftp://127"),
            Some(key.as_str()),
            "upstream.url",
        ),
        (
            ok.to_owned() + "refresh_hours = 48\n",
            Some(key.as_str()),
            "session.refresh_hours",
        ),
        (
            ok.to_owned() + "colour = \"blue\"\n",
            Some(key.as_str()),
            "colour",
        ),
        (ok.to_owned(), None, "session.keyring_file"),
        (ok.to_owned(), Some("k1 tooshort"), "session.keyring_file"),
    ];
    for (toml, keyring, key_name) in cases {
        let (code, text) = check_config(&toml, keyring);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains(key_name), "expected {key_name} in: {text}");
        assert!(
            !text.contains("tooshort"),
            "key material is never echoed: {text}"
        );
    }
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/proxy.example.toml");
    let toml = std::fs::read_to_string(example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring");
    std::fs::write(&keyring, common::key_line("dev")).unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        toml.replace("/tmp/vouchrs-dev/keyring", &keyring.display().to_string()),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keygen_prints_a_usable_key_line() {
    let out = Command::new(binary())
        .args(["keygen", "--id", "rot-2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(vouchrs_proxy::session::keyring::KeyRing::parse(&line).is_ok());
    assert!(line.starts_with("rot-2 "));
    let bad = Command::new(binary())
        .args(["keygen", "--id", "bad id"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn admin_routes_report_health_readiness_and_metrics() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    assert_eq!(
        get(&client(), &proxy.url("/x"), &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::OK
    );
    for (path, expect) in [("/healthz", "ok"), ("/readyz", "ready"), ("/ping", "OK")] {
        let r = raw_request(
            proxy.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains(expect),
            "{path}: {r}"
        );
    }
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("vouchrs_http_responses_total{class=\"2xx\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vouchrs_session_validations_total{outcome=\"valid\"} 1"));
    // The public port keeps application paths for the application.
    let r = get(&client(), &proxy.url("/metrics"), &[("cookie", &cookie)]).await;
    assert!(
        r.json()["target"] == "/metrics",
        "/metrics on the public port belongs to the upstream"
    );
}

#[tokio::test]
async fn sigterm_lets_a_hundred_in_flight_requests_finish() {
    let upstream = TestUpstream::start().await;
    let extra = Extra {
        server: "drain_delay = \"300ms\"",
        ..Extra::default()
    };
    let mut proxy = Proxy::start(&upstream.url(), extra);
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let mut requests = Vec::new();
    for _ in 0..100 {
        let (c, url, cookie) = (c.clone(), proxy.url("/delay?ms=1500"), cookie.clone());
        requests.push(tokio::spawn(async move {
            get(&c, &url, &[("cookie", &cookie)]).await.status
        }));
    }
    let until = Instant::now() + Duration::from_secs(20);
    while upstream.arrived.load(Ordering::SeqCst) < 100 {
        assert!(
            Instant::now() < until,
            "only {} arrived",
            upstream.arrived.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.sigterm();

    // Readiness turns 503 while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = raw_request(
        proxy.admin,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");

    let mut ok = 0;
    for r in requests {
        if r.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Images cannot be built here (no container engine), so check that what the Dockerfile
/// names exists: the package and binary, the default config path, and the default ports.
#[test]
fn the_dockerfile_names_what_the_workspace_builds() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile.proxy"))
            .unwrap();
    assert!(dockerfile.contains("-p vouchrs-proxy"));
    assert!(dockerfile.contains("release/vouchrs-proxy"));
    let defaults = vouchrs_proxy::config::ServerConfig::default();
    let expose = format!(
        "EXPOSE {} {}",
        defaults.listen.port(),
        defaults.admin_listen.port()
    );
    assert!(dockerfile.contains(&expose), "expected `{expose}`");
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("/etc/vouchrs/proxy.toml"),
        "the image's CMD matches the default config path"
    );
    assert!(dockerfile.contains("\"--config\", \"/etc/vouchrs/proxy.toml\""));
    assert!(dockerfile.contains("USER 1000:1000"), "the seed's uid");
}

#[tokio::test]
async fn minted_sessions_open_at_the_proxy() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let out = Command::new(binary())
        .args([
            "mint-session",
            "--user",
            "demo",
            "--email",
            "demo@example.com",
            "--groups",
            "a,b",
            "--config",
        ])
        .arg(proxy.dir.path().join("proxy.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cookie = String::from_utf8(out.stdout).unwrap();
    let r = get(&client(), &proxy.url("/"), &[("cookie", cookie.trim())]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_saw("x-auth-request-groups"), ["a,b"]);
}

#[test]
fn the_kubernetes_store_refuses_to_start_without_its_feature_or_a_cluster() {
    // Built without the `kubernetes` feature the proxy has no client and says so; built with
    // it (`cargo test --workspace` unifies it in), an unreadable kubeconfig stops it the same
    // way. Either way it never falls back to another store.
    let toml = "[server]\npublic_url = \"https://app.example.com\"\n\
                [upstream]\nurl = \"http://127.0.0.1:3000\"\n\
                [session]\nkeyring_file = \"KEYRING\"\n\
                [passkeys]\nenabled = true\nstore = \"kubernetes\"\ngateway = \"shop\"\n\
                kubeconfig = \"/nonexistent/kubeconfig\"\n";
    let (code, text) = check_config(toml, Some(&common::key_line("k1")));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("passkeys.store = \"kubernetes\""), "{text}");
    let why = if cfg!(feature = "kubernetes") {
        "/nonexistent/kubeconfig"
    } else {
        "built without the `kubernetes` cargo feature"
    };
    assert!(text.contains(why), "expected {why} in: {text}");
}
