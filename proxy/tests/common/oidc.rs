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

/// A browser without a browser: a cookie jar and a hyper client that walk the authorization
/// code flow over plain HTTP against the real provider (its login form is a plain form POST).
/// Nothing is skipped: the provider checks PKCE and issues the code, the proxy exchanges it
/// and verifies the ID token. Much faster than Chromium for tests with many logins.
/// Cookies are kept by name only (domain and path ignored), as one `localhost` jar.
pub struct HttpBrowser {
    client: super::TestClient,
    pub cookies: Vec<(String, String)>,
}

impl Default for HttpBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpBrowser {
    pub fn new() -> Self {
        Self {
            client: super::client(),
            cookies: Vec::new(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_owned(), value.to_owned()));
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, reply: &super::Reply) {
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap_or_default();
            let mut parts = set.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let attrs = parts.collect::<Vec<_>>().join(";").to_ascii_lowercase();
            self.cookies.retain(|(n, _)| n != name.trim());
            let cleared = value.is_empty() || attrs.contains("max-age=0") || attrs.contains("1970");
            if !cleared {
                self.cookies
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }

    /// One request to `url` (`http://localhost:PORT/...`), sent to 127.0.0.1 with the jar's
    /// cookies and `extra` headers; `Set-Cookie`s go into the jar.
    pub async fn request(
        &mut self,
        method: http::Method,
        url: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> super::Reply {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let host = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        let target = format!(
            "http://127.0.0.1:{}{}{query}",
            parsed.port().unwrap(),
            parsed.path()
        );
        let mut builder = http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", host);
        if !self.cookies.is_empty() {
            builder = builder.header("cookie", self.cookie_header());
        }
        for (k, v) in extra {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        use http_body_util::BodyExt;
        let reply = super::Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        };
        self.remember(&reply);
        reply
    }

    pub async fn get(&mut self, url: &str) -> super::Reply {
        self.request(http::Method::GET, url, &[], "").await
    }

    /// Where a redirect reply points, resolved against `url`.
    pub fn location(url: &str, reply: &super::Reply) -> Option<String> {
        let location = reply.headers.get("location")?.to_str().ok()?;
        Some(url::Url::parse(url).ok()?.join(location).ok()?.to_string())
    }

    /// Starts a login at the proxy (`/auth/sign_in?provider=…`) and signs in at the provider
    /// as `user`. Returns the callback URL the provider sent the browser to, NOT yet visited
    /// (so a test can deliver it elsewhere).
    pub async fn authorize(&mut self, sign_in_url: &str, user: &str) -> String {
        let reply = self.get(sign_in_url).await;
        assert_eq!(reply.status, http::StatusCode::FOUND, "{reply:?}");
        let authorize = Self::location(sign_in_url, &reply).expect("redirect to the provider");
        self.sign_in_at_provider(&authorize, user).await
    }

    /// Follows the provider's redirects from `authorize`, posts its login form as `user`, and
    /// returns the URL it finally redirects to outside the provider (the callback).
    pub async fn sign_in_at_provider(&mut self, authorize: &str, user: &str) -> String {
        let provider_origin = {
            let u = url::Url::parse(authorize).unwrap();
            format!("http://{}:{}", u.host_str().unwrap(), u.port().unwrap())
        };
        let mut url = authorize.to_owned();
        for _ in 0..10 {
            if !url.starts_with(&provider_origin) {
                return url;
            }
            let path = url::Url::parse(&url).unwrap().path().to_owned();
            let reply = if path.starts_with("/interaction/") {
                let body = format!("username={}&password=x", urlencode(user));
                self.request(
                    http::Method::POST,
                    &format!("{provider_origin}{path}/login"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    &body,
                )
                .await
            } else {
                self.get(&url).await
            };
            match Self::location(&url, &reply) {
                Some(next) => url = next,
                None => panic!(
                    "the provider stopped at {url} with {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ),
            }
        }
        panic!("too many redirects at the provider from {authorize}");
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl std::fmt::Debug for super::Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}
