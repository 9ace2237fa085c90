//! Passkeys with the Kubernetes credential store, end to end: the proxy binary built with the
//! `kubernetes` feature, a real control plane (etcd + kube-apiserver from `hack/k8s/`, the
//! CRDs from `crds/`), the real OpenID provider and headless Chromium with its virtual
//! authenticator. A passkey registered in the browser becomes a `VouchrsPasskey` object;
//! `kubectl delete` of it ends the session started with it on the next request.
//!
//! Only built with the feature (`cargo test --workspace` turns it on through the operator's
//! dev-dependency, or `cargo test -p vouchrs-proxy --features kubernetes`). The proxy talks to
//! the API server as the cluster admin here: what the proxy's own Role allows is tested in
//! `operator/tests/passkey_store.rs`.
#![cfg(feature = "kubernetes")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::oidc::{OidcProvider, run_browser};
use common::upstream::TestUpstream;
use common::{Extra, Proxy, free_port};

const SECRET: &str = "client-secret-for-tests";
const NS: &str = "shop";
/// A generous bound for a deletion to reach the proxy's watch (not a speed check).
const PROPAGATE: Duration = Duration::from_secs(30);

fn repo(path: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// etcd + kube-apiserver from `hack/k8s/start.sh`, stopped on drop.
struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start() -> Self {
        // build.sh returns at once when the binaries are cached (.ci/run builds them first).
        let built = Command::new("bash")
            .arg(repo("hack/k8s/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(built.status.success(), "hack/k8s/build.sh failed");
        let bin = PathBuf::from(
            String::from_utf8_lossy(&built.stdout)
                .lines()
                .last()
                .unwrap()
                .trim(),
        );
        let started = Command::new("bash")
            .arg(repo("hack/k8s/start.sh"))
            .env("VOUCHRS_K8S_BIN", &bin)
            .env_remove("VOUCHRS_K8S_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "hack/k8s/start.sh failed:\n{}",
            String::from_utf8_lossy(&started.stderr)
        );
        let env: std::collections::BTreeMap<String, String> =
            String::from_utf8_lossy(&started.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
                .collect();
        let plane = Self {
            dir: PathBuf::from(&env["VOUCHRS_K8S_DIR"]),
            kubeconfig: PathBuf::from(&env["KUBECONFIG"]),
            bin,
        };
        plane.kubectl_ok(&[
            "apply",
            "--server-side",
            "-k",
            repo("crds").to_str().unwrap(),
        ]);
        plane.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/vouchrspasskeys.vouchrs.app",
            "crd/vouchrsinvitations.vouchrs.app",
        ]);
        plane.kubectl_ok(&["create", "namespace", NS]);
        plane
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The passkey objects in the namespace, as JSON.
    fn passkeys(&self) -> Vec<Value> {
        let list: Value = serde_json::from_str(&self.kubectl_ok(&[
            "get",
            "vouchrspasskeys",
            "-n",
            NS,
            "-o",
            "json",
        ]))
        .unwrap();
        list["items"].as_array().unwrap().clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut stop = Command::new("bash");
        stop.arg(repo("hack/k8s/stop.sh")).arg(&self.dir);
        if std::thread::panicking() {
            stop.env("VOUCHRS_K8S_KEEP_DIR", "1");
            eprintln!("control plane stopped, logs kept in {}", self.dir.display());
        }
        let _ = stop.stdin(Stdio::null()).status();
    }
}

async fn browser(proxy: &Proxy, args: &[&str]) -> Value {
    let (ok, out) = run_browser(args).await;
    assert!(ok, "{args:?}: {out}\n--- proxy log ---\n{}", proxy.log());
    out
}

fn upstream_saw(out: &Value, header: &str) -> Vec<String> {
    let echo: Value = serde_json::from_str(out["bodyText"].as_str().unwrap()).unwrap();
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == header)
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passkey_kept_in_kubernetes_signs_in_and_kubectl_delete_ends_its_session() {
    let plane = ControlPlane::start();
    let upstream = TestUpstream::start().await;
    let port = free_port();
    let base = format!("http://localhost:{port}");
    let idp = OidcProvider::start(json!({
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
            "alice": {"sub": "u-alice", "email": "alice@example.com", "email_verified": true, "name": "Alice"},
        },
    }));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let tail = format!(
        "[[oidc.providers]]\nname = \"test\"\ndisplay_name = \"Test test\"\nissuer = \"{}\"\n\
         client_id = \"vouchrs\"\nclient_secret_file = \"{}\"\nscopes = [\"openid\", \"email\"]\n\
         [passkeys]\nenabled = true\nstore = \"kubernetes\"\ngateway = \"shop\"\n\
         namespace = \"{NS}\"\nkubeconfig = \"{}\"\n",
        idp.issuer,
        secret_file.display(),
        plane.kubeconfig.display()
    );
    let server = Box::leak(format!("public_url = \"{base}\"").into_boxed_str());
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server,
            tail,
            listen_port: Some(port),
            ..Extra::default()
        },
    );
    let jar = dir.path().join("browser.json");
    let jar = jar.to_str().unwrap();
    let authn = dir.path().join("authenticator.json");
    let authn = authn.to_str().unwrap();

    // OIDC login, then add a passkey: it becomes a VouchrsPasskey object of gateway shop.
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
    let out = browser(
        &proxy,
        &[
            "passkey-add",
            "--url",
            &format!("{base}/auth/passkey"),
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
    let objects = plane.passkeys();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = &objects[0];
    assert_eq!(object["spec"]["user"], "u-alice");
    assert_eq!(object["spec"]["name"], "Work laptop");
    assert_eq!(
        object["metadata"]["labels"]["app.kubernetes.io/instance"],
        "shop"
    );
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();

    // Sign out, sign in with the passkey alone; the login is recorded in the object.
    browser(
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
    let target = format!("{base}/app/after");
    let out = browser(
        &proxy,
        &[
            "passkey-login",
            "--start",
            &target,
            "--state",
            jar,
            "--authenticator",
            authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "navigated", "{out}");
    assert_eq!(upstream_saw(&out, "x-auth-request-user"), ["u-alice"]);
    assert!(plane.passkeys()[0]["spec"]["lastUsed"].is_string());

    // `kubectl delete` revokes it: the session it started is refused once the watch has
    // told the proxy (polled with a generous bound), and so is the next passkey login.
    plane.kubectl_ok(&["delete", "vouchrspasskey", &name, "-n", NS]);
    let deleted = Instant::now();
    let deadline = deleted + PROPAGATE;
    loop {
        let out = browser(&proxy, &["visit", "--url", &target, "--state", jar]).await;
        let url = out["finalUrl"].as_str().unwrap();
        if url.starts_with(&format!("{base}/auth/sign_in")) {
            // A figure for the report, not an assertion.
            eprintln!(
                "session refused {:.1}s after kubectl delete (one browser run per poll)",
                deleted.elapsed().as_secs_f64()
            );
            break;
        }
        assert_eq!(url, target, "{out}");
        assert!(
            Instant::now() < deadline,
            "the session outlived its deleted passkey:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = browser(
        &proxy,
        &[
            "passkey-login",
            "--start",
            &target,
            "--state",
            jar,
            "--authenticator",
            authn,
        ],
    )
    .await;
    assert_eq!(out["outcome"], "error", "{out}");
    assert!(
        out["passkeyError"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{out}"
    );
}
