//! The real binary forwarding to a real upstream over TCP: what goes through unchanged,
//! streaming, HTTP/2, WebSocket, limits and upstream failures.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use common::upstream::{TestUpstream, Zeros};
use common::{Extra, Proxy, client, get, raw_request, send};

#[tokio::test]
async fn method_path_and_query_reach_the_upstream_byte_for_byte() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let target = "/a%2Fb/c%20d/%E2%9C%93?z=1&a=2&a=1&x=%26%3D";
    for method in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let r = send(
            &c,
            method.clone(),
            &proxy.url(target),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let echo = r.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["target"], target);
        assert_eq!(echo["version"], "HTTP/1.1");
    }
}

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_without_buffering() {
    const SIZE: usize = 50 * 1024 * 1024;
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");

    let upload_client: Client<_, Zeros> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::put(proxy.url("/upload"))
        .header("cookie", &cookie)
        .body(Zeros { left: SIZE })
        .unwrap();
    let response = upload_client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["bytes"], SIZE);
    assert!(
        echo["frames"].as_u64().unwrap() > 10,
        "arrived in pieces: {echo}"
    );

    let c = client();
    let request = Request::get(proxy.url(&format!("/download?bytes={SIZE}")))
        .header("cookie", &cookie)
        .body(Default::default())
        .unwrap();
    let response = c.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["transfer-encoding"],
        "chunked",
        "chunked framing passes through"
    );
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(received, SIZE);

    // A proxy that buffered a body whole would have peaked above 50 MB.
    let peak = proxy.peak_rss_kib();
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn http2_clients_are_served_over_prior_knowledge() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let h2: common::TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let r = get(
        &h2,
        &proxy.url("/h2?x=1"),
        &[("cookie", &cookie), ("cookie", "app=1")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let echo = r.json();
    assert_eq!(echo["version"], "HTTP/1.1", "the upstream side is HTTP/1.1");
    assert_eq!(echo["target"], "/h2?x=1");
    assert_eq!(
        r.upstream_saw("host"),
        [proxy.addr.to_string()],
        "`:authority` became Host"
    );
    assert_eq!(
        r.upstream_saw("cookie"),
        ["app=1"],
        "split cookie headers joined, ours removed"
    );
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            proxy.addr
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "world"] {
        ws.send(text.into()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap(), text);
    }

    // Without a session the handshake is refused, not upgraded.
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", proxy.addr),
    )
    .unwrap();
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn repeated_set_cookie_and_redirects_come_back_untouched() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let r = get(&c, &proxy.url("/cookies"), &[("cookie", &cookie)]).await;
    let set: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["a=1; Path=/", "b=2; Path=/; HttpOnly", "c=3"]);

    let r = get(&c, &proxy.url("/redirect"), &[("cookie", &cookie)]).await;
    assert_eq!(
        r.status,
        StatusCode::FOUND,
        "redirects are the client's to follow"
    );
    assert_eq!(r.headers["location"], "/elsewhere");
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_proxy_stays_up() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "max_header_bytes = 16384",
            ..Extra::default()
        },
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let reply = raw_request(proxy.addr, &huge).unwrap();
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let many = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "Cookie: x=1\r\n".repeat(2000)
    );
    let reply = raw_request(proxy.addr, &many).unwrap();
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    let ok = raw_request(
        proxy.addr,
        "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn dead_upstream_is_502_and_slow_upstream_is_504() {
    let dead_port = common::free_port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{dead_port}"), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let r = get(
        &c,
        &proxy.url("/"),
        &[("cookie", &cookie), ("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&r.body).contains("<h1>502 Bad Gateway</h1>"));
    let r = get(
        &c,
        &proxy.url("/"),
        &[("cookie", &cookie), ("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "bad_gateway");

    let upstream = TestUpstream::start().await;
    let extra = Extra {
        upstream: "response_timeout = \"500ms\"".into(),
        ..Extra::default()
    };
    let proxy = Proxy::start(&upstream.url(), extra);
    let cookie = proxy.cookie_for("alice");
    let r = get(&c, &proxy.url("/delay?ms=3000"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "gateway_timeout");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("vouchrs_upstream_failures_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );
    // The next request on a healthy path still works.
    let r = get(&c, &proxy.url("/delay?ms=1"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn https_with_alpn_serves_http2_and_http1() {
    let upstream = TestUpstream::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let extra = Extra {
        server: Box::leak(server.into_boxed_str()),
        ..Extra::default()
    };
    let proxy = Proxy::start(&upstream.url(), extra);
    let cookie = proxy.cookie_for("alice");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!("https://localhost:{}/tls", proxy.addr.port());
    for (http2, version) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        let connector = if http2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let c: Client<_, http_body_util::Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let request = Request::get(&url)
            .header("cookie", &cookie)
            .body(Default::default())
            .unwrap();
        let response = c.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version, "ALPN picked {version:?}");
        let echo: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        let proto = echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "x-forwarded-proto")
            .unwrap()[1]
            .clone();
        assert_eq!(proto, "https");
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    use std::io::{Read, Write};
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "header_read_timeout = \"1s\"",
            ..Extra::default()
        },
    );
    let mut slow = std::net::TcpStream::connect(proxy.addr).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    // The server gives up on the unfinished head (hyper answers 408 or just closes).
    let read = slow.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "connection was not closed by the server: {read:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn the_connection_limit_holds_and_frees_up() {
    use std::io::Read;
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "max_connections = 2",
            ..Extra::default()
        },
    );
    let first = std::net::TcpStream::connect(proxy.addr).unwrap();
    let _second = std::net::TcpStream::connect(proxy.addr).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = std::net::TcpStream::connect(proxy.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        third.read(&mut buf).unwrap_or(0),
        0,
        "over the limit: closed at once"
    );
    assert!(
        proxy
            .metrics()
            .contains("vouchrs_connections_refused_total 1")
    );

    drop(first);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = raw_request(
            proxy.addr,
            "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "a freed slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_and_never_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let cases = [
        "GARBAGE\r\n\r\n".to_owned(),
        "GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n".to_owned(),
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
        ),
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
    ];
    for request in &cases {
        let reply = raw_request(proxy.addr, request).unwrap();
        assert!(reply.starts_with("HTTP/1.1 4"), "{request:?} got {reply:?}");
    }
    assert_eq!(
        upstream.arrived.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let upstream =
        TestUpstream::start_tls(&cert.cert.pem(), &cert.signing_key.serialize_pem()).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();

    let trusted = Extra {
        upstream: format!("ca_file = \"{}\"", ca.display()),
        ..Extra::default()
    };
    let proxy = Proxy::start(&url, trusted);
    let cookie = proxy.cookie_for("alice");
    let c = client();
    let r = get(&c, &proxy.url("/over-tls"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", proxy.log());
    assert_eq!(r.json()["target"], "/over-tls");

    // Without the CA the self-signed upstream is refused: fail closed with 502.
    let proxy = Proxy::start(&url, Extra::default());
    let cookie = proxy.cookie_for("alice");
    let r = get(&c, &proxy.url("/over-tls"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

/// A raw HTTP/1.1 keep-alive upstream answering `ok` to every request, counting the
/// connections it accepted and the ones the proxy closed.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counters = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counters.0.fetch_add(1, Ordering::SeqCst);
            let closed = counters.1.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    // Bodiless requests only: each head ends one request.
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_then_closed_when_idle() {
    use std::io::{Read, Write};
    let (upstream, accepted, closed) = counting_upstream().await;
    let proxy = Proxy::start(
        &format!("http://{upstream}"),
        Extra {
            upstream: "pool_idle_timeout = \"1s\"".into(),
            ..Extra::default()
        },
    );
    let cookie = proxy.cookie_for("alice");
    // One client connection is served by one thread, so its requests share one upstream
    // connection, taken back into the pool as each response ends.
    let addr = proxy.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\n\r\n");
        let mut answers = Vec::new();
        for _ in 0..20 {
            client.write_all(request.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"\r\n\r\nok") {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "the proxy closed the client connection");
                got.extend_from_slice(&buf[..n]);
            }
            answers.push(String::from_utf8_lossy(&got).into_owned());
        }
        answers
    })
    .await
    .unwrap();
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    // Idle past pool_idle_timeout: the pool closes it (bounded wait, no timing asserted).
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        1,
        "idle upstream connection left open"
    );
}
