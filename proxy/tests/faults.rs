//! Faults on the proxy side, with the real binary: an upstream that resets mid-response,
//! closes without answering, is slow or is down gets the right status and leaks nothing
//! (open connections and descriptors return to their baseline); key rotation and SIGTERM
//! under a steady client loop fail no request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, client, get, key_line, raw_request};

/// How a misbehaving upstream treats each request it reads.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Sends a head promising 1 MiB, a little body, then a TCP reset.
    ResetMidBody,
    /// Resets before sending anything.
    ResetBeforeHead,
    /// Closes cleanly without answering.
    CloseSilently,
    /// Sends half a response head, then closes.
    HalfHead,
}

/// A raw TCP upstream that misbehaves the same way on every connection. This is a real
/// server over TCP; only its bytes are scripted, because no real application resets on cue.
async fn misbehaving_upstream(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                match how {
                    Misbehaviour::ResetMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                            .await;
                        let _ = stream.write_all(&[b'x'; 4096]).await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = stream.set_zero_linger();
                    }
                    Misbehaviour::ResetBeforeHead => {
                        let _ = stream.set_zero_linger();
                    }
                    Misbehaviour::CloseSilently => {}
                    Misbehaviour::HalfHead => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                    }
                }
                drop(stream);
            });
        }
    });
    addr
}

/// Waits (bounded) until no client connection is open and the descriptor count is back at
/// `baseline` (pooled upstream connections to a dead upstream must be gone too).
async fn settles(proxy: &Proxy, baseline: usize) -> (i64, usize) {
    for _ in 0..100 {
        let state = (proxy.metric("vouchrs_connections_open"), proxy.open_fds());
        if state.0 == 0 && state.1 <= baseline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (proxy.metric("vouchrs_connections_open"), proxy.open_fds())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_get_the_right_status_and_leak_nothing() {
    let cases = [
        (Misbehaviour::ResetBeforeHead, Some(StatusCode::BAD_GATEWAY)),
        (Misbehaviour::CloseSilently, Some(StatusCode::BAD_GATEWAY)),
        (Misbehaviour::HalfHead, Some(StatusCode::BAD_GATEWAY)),
        // The head was already forwarded: the client sees 200 and then a cut body.
        (Misbehaviour::ResetMidBody, None),
    ];
    let mut survived = 0;
    for (how, status) in cases {
        let upstream = misbehaving_upstream(how).await;
        let proxy = Proxy::start(&format!("http://{upstream}"), Extra::default());
        let cookie = proxy.cookie_for("alice");
        // Warm up, then take the baseline.
        let _ = raw_request(
            proxy.addr,
            "GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = proxy.open_fds();
        let c = client();
        for _ in 0..30 {
            let request = http::Request::get(proxy.url("/big"))
                .header("cookie", &cookie)
                .header("accept", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let response = c.request(request).await.unwrap();
            match status {
                Some(expected) => {
                    assert_eq!(response.status(), expected);
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(json["error"], "bad_gateway");
                }
                None => {
                    assert_eq!(response.status(), StatusCode::OK);
                    let body = response.into_body().collect().await;
                    assert!(
                        body.is_err(),
                        "a cut upstream body must not look complete to the client"
                    );
                }
            }
            survived += 1;
        }
        drop(c);
        let (open, fds) = settles(&proxy, baseline).await;
        assert_eq!(open, 0, "client connections left open");
        assert!(fds <= baseline, "descriptors: {fds} now, {baseline} before");
        // And the proxy itself is fine.
        let ping = raw_request(
            proxy.addr,
            "GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    }
    assert_eq!(survived, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_dead_upstreams_leak_nothing() {
    // Slow: past the response timeout, 504, many times, then back to baseline.
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            upstream: "response_timeout = \"300ms\"".into(),
            ..Extra::default()
        },
    );
    let cookie = proxy.cookie_for("alice");
    let _ = raw_request(
        proxy.addr,
        "GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = proxy.open_fds();
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (c, url, cookie) = (c.clone(), proxy.url("/delay?ms=2000"), cookie.clone());
        tasks.push(tokio::spawn(async move {
            get(&c, &url, &[("cookie", &cookie)]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    drop(c);
    // The upstream finishes its sleeps; the proxy dropped those connections.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (open, fds) = settles(&proxy, baseline).await;
    assert_eq!(open, 0);
    assert!(
        fds <= baseline,
        "slow upstream: {fds} descriptors, {baseline} before"
    );
    assert_eq!(
        proxy.metric("vouchrs_upstream_failures_total{kind=\"timeout\"}"),
        40
    );

    // Down: nothing listens, 502 every time, nothing accumulates.
    let dead = common::free_port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{dead}"), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let _ = raw_request(
        proxy.addr,
        "GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = proxy.open_fds();
    let c = client();
    for _ in 0..100 {
        let r = get(&c, &proxy.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    }
    drop(c);
    let (open, fds) = settles(&proxy, baseline).await;
    assert_eq!(open, 0);
    assert!(
        fds <= baseline,
        "dead upstream: {fds} descriptors, {baseline} before"
    );
}

/// Sends requests in a loop on `workers` tasks until `stop`; returns (ok, failed) counts.
fn client_loop(
    workers: usize,
    url: String,
    cookie: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (url, cookie, stop, ok, failures) = (
                url.clone(),
                cookie.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    let request = http::Request::get(&url)
                        .header("cookie", &cookie)
                        .header("accept", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap();
                    match c.request(request).await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let body = r.into_body().collect().await;
                            match body {
                                Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("body: {e}"));
                                    0
                                }
                            };
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(format!("error: {e:?}")),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let failures = failures.lock().unwrap().clone();
        (ok.load(Ordering::SeqCst), failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_fails_no_request() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    // A session sealed by the first key, used throughout.
    let cookie = proxy.cookie_for("alice");
    let first = std::fs::read_to_string(&proxy.keyring_path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = client_loop(4, proxy.url("/app"), cookie.clone(), stop.clone());

    // Rotate five times: a new key in front, the first one kept; written the way a mounted
    // Secret changes (a new file renamed over the old one), and once in place.
    let mut ring = first.clone();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        ring = format!("{}\n{ring}", key_line(&format!("r{i}")));
        if i % 2 == 0 {
            let tmp = proxy.keyring_path.with_extension("new");
            std::fs::write(&tmp, &ring).unwrap();
            std::fs::rename(&tmp, &proxy.keyring_path).unwrap();
        } else {
            std::fs::write(&proxy.keyring_path, &ring).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A session sealed by the newest key opens too: the rotation really happened.
    let newest = proxy.cookie_for("bob");
    let r = get(&client(), &proxy.url("/app"), &[("cookie", &newest)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_saw("x-auth-request-user"), ["bob"]);
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok > 50,
        "only {ok} requests made it into the rotation window"
    );
    assert!(
        proxy.log().matches("key ring reloaded").count() >= 3,
        "{}",
        proxy.log()
    );
    eprintln!("key rotation under load: {ok} requests, 0 failed, 5 rotations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request() {
    let upstream = TestUpstream::start().await;
    let mut proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "drain_delay = \"1s\"",
            ..Extra::default()
        },
    );
    let cookie = proxy.cookie_for("alice");
    let stop = Arc::new(AtomicBool::new(false));
    // The load balancer's part: stop sending once readiness turns 503 (within the drain
    // delay), as Kubernetes endpoints do.
    let watcher = {
        let (stop, admin) = (stop.clone(), proxy.admin);
        tokio::spawn(async move {
            loop {
                let ready = tokio::task::spawn_blocking(move || {
                    raw_request(
                        admin,
                        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                })
                .await
                .unwrap();
                if !ready.is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let load = client_loop(4, proxy.url("/delay?ms=20"), cookie, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.sigterm();
    watcher.await.unwrap();
    let (ok, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests");
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
    eprintln!("SIGTERM under load: {ok} requests, 0 failed");
}
