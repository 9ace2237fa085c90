//! The JavaScript harness from `proxy/tests/oidc/`: a real OpenID provider (npm
//! `oidc-provider`) and a real headless Chromium driven by `playwright-core`.
//! Install both with `bash .ci/install-test-deps.sh`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Where screenshots are kept after the run (ignored by git).
pub fn artifacts_dir() -> PathBuf {
    let dir = harness_dir().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn require_harness() {
    assert!(
        harness_dir().join("node_modules/oidc-provider").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the OIDC harness is not installed: run `bash .ci/install-test-deps.sh`"
    );
}

pub struct OidcProvider {
    child: Child,
    pub issuer: String,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts `provider.mjs` with `config` (clients, accounts, ttl, rotateRefreshToken).
    pub fn start(config: serde_json::Value) -> Self {
        Self::start_on(config, 0)
    }

    /// [`OidcProvider::start`] on `port` (0: a free one), e.g. to bring a stopped one back.
    pub fn start_on(config: serde_json::Value, port: u16) -> Self {
        require_harness();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("provider.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("provider.log")).unwrap();
        let mut child = Command::new("node")
            .arg(harness_dir().join("provider.mjs"))
            .arg("--config")
            .arg(&config_path)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("node is installed");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("provider printed READY");
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .expect("READY line")
            .to_owned();
        Self {
            child,
            issuer,
            _dir: dir,
        }
    }

    /// `GET /test/...` on the provider (sessions, stats).
    pub async fn test_endpoint(&self, path: &str) -> serde_json::Value {
        let port: u16 = self.issuer.rsplit(':').next().unwrap().parse().unwrap();
        let url = format!("http://127.0.0.1:{port}{path}");
        super::get(
            &super::client(),
            &url,
            &[("host", &format!("localhost:{port}"))],
        )
        .await
        .json()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one `browser.mjs` scenario; returns its exit success and its JSON output.
pub fn browser(args: &[&str]) -> (bool, serde_json::Value) {
    require_harness();
    let out = Command::new("node")
        .arg(harness_dir().join("browser.mjs"))
        .args(args)
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.mjs printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

/// [`browser`] on a blocking thread, so the test's runtime keeps serving meanwhile.
pub async fn run_browser(args: &[&str]) -> (bool, serde_json::Value) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        browser(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("browser thread")
}
