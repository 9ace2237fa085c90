//! Harness for the integration tests: starts the real `vouchrs-proxy` binary on loopback ports
//! with a generated key ring, mints sessions through the library (login flows come later),
//! and sends requests with a plain hyper client.
#![allow(dead_code)] // Each test file uses a different part.

pub mod oidc;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use vouchrs_proxy::session::keyring::{KeyId, KeyRing, generate_line};
use vouchrs_proxy::session::{Lifetimes, Session, SessionSealer};

pub const SESSION_COOKIE: &str = "__Host-vouchrs_session";

/// Extra TOML lines per config section.
#[derive(Default, Clone)]
pub struct Extra {
    pub server: &'static str,
    pub upstream: String,
    pub session: &'static str,
    pub auth: &'static str,
    /// Whole tables appended at the end (`[[oidc.providers]]`, `[access]`, ...).
    pub tail: String,
    /// Listen on this port (tests that must know it before starting, e.g. redirect URIs).
    pub listen_port: Option<u16>,
}

pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub keyring_path: PathBuf,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vouchrs-proxy")
}

pub fn key_line(id: &str) -> String {
    generate_line(&KeyId::parse(id).unwrap()).unwrap()
}

impl Proxy {
    /// Writes a config for `upstream_url`, starts the binary and waits for `/readyz`.
    pub fn start(upstream_url: &str, extra: Extra) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keyring_path = dir.path().join("keyring");
        std::fs::write(&keyring_path, key_line("k1") + "\n").unwrap();
        let port = extra.listen_port.unwrap_or_else(free_port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\nshutdown_grace = \"10s\"\n{}\n\
             [upstream]\nurl = \"{upstream_url}\"\n{}\n\
             [session]\nkeyring_file = \"{}\"\nkeyring_poll = \"100ms\"\n{}\n\
             [auth]\nskip_auth = [\"/public/*\"]\n{}\n\
             [runtime]\nworker_threads = 2\nlog_filter = \"info\"\n{}\n",
            extra.server,
            extra.upstream,
            keyring_path.display(),
            extra.session,
            extra.auth,
            extra.tail,
        );
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap();
        let mut proxy = Self {
            child,
            addr,
            admin,
            dir,
            keyring_path,
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("proxy exited with {status}: {}", self.log());
            }
            if raw_request(
                self.admin,
                "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("proxy never became ready: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A sealer over the key ring file as it is now.
    pub fn sealer(&self) -> SessionSealer {
        let ring = KeyRing::read(&self.keyring_path).unwrap();
        SessionSealer::new(
            Arc::new(arc_swap::ArcSwap::from_pointee(ring)),
            SESSION_COOKIE.into(),
            Lifetimes::from_hours(24, 2),
        )
    }

    /// A `Cookie` header value carrying a fresh session for `user`.
    pub fn cookie_for(&self, user: &str) -> String {
        let sealer = self.sealer();
        let session = sealer.start(
            user.into(),
            Some(format!("{user}@example.com")),
            vec!["dev".into(), "ops".into()],
            "test".into(),
            now(),
        );
        format!("{SESSION_COOKIE}={}", sealer.seal(&session))
    }

    pub fn cookie_with(&self, session: &Session) -> String {
        format!("{SESSION_COOKIE}={}", self.sealer().seal(session))
    }

    pub fn metrics(&self) -> String {
        raw_request(
            self.admin,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
    }

    /// The value of one series, named as `/metrics` prints it (labels included).
    pub fn metric(&self, name: &str) -> i64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    /// Open file descriptors of the proxy process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Peak resident memory of the proxy process, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("proxy did not exit in {within:?}: {}", self.log());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends raw bytes and reads until the server closes (or 5 s pass).
pub fn raw_request(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    raw_bytes(addr, request.as_bytes())
}

pub fn raw_bytes(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request)?;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Values of a header the upstream echo saw.
    pub fn upstream_saw(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(client, Method::GET, url, headers).await
}
