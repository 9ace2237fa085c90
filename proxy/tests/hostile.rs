//! Hostile input against the real binary, one test per attack class, many cases each. Every
//! test checks what the real upstream received (targets, headers, request count), not only the
//! status the attacker saw, so an implementation that lets an attack through fails here.
//! Requests are written as raw bytes over TCP where a well-behaved client would refuse to
//! send them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use common::upstream::TestUpstream;
use common::{Extra, Proxy, SESSION_COOKIE, raw_request};

const IDENTITY: [&str; 3] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
];

/// One parsed HTTP/1.1 response from raw bytes: status, lowercase headers, body (de-chunked).
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn parse(text: &str) -> Option<Self> {
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            let mut out = Vec::new();
            let mut rest = rest;
            while let Some((size, tail)) = rest.split_once("\r\n") {
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(tail.get(..size)?.as_bytes());
                rest = tail.get(size + 2..)?;
            }
            out
        } else {
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(rest.len());
            rest.as_bytes()[..len.min(rest.len())].to_vec()
        };
        Some(Self {
            status,
            headers,
            body,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The upstream echo's list of `(name, value)` it received.
    fn upstream_headers(&self) -> Vec<(String, String)> {
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)));
        json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_owned(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn send_raw(addr: SocketAddr, request: &str) -> Option<RawReply> {
    let text = raw_request(addr, request).unwrap();
    if std::env::var_os("HOSTILE_DEBUG").is_some() {
        eprintln!("{request:?}\n=> {text:?}");
    }
    RawReply::parse(&text)
}

/// The ways an upstream server or framework may read a path: WHATWG (`\` is `/`, `%2e` is
/// `.`), everything decoded first (`%2F` is `/`), `;` parameters dropped (servlet
/// containers), overlong UTF-8 taken for ASCII (old decoders). Returns each reading's path.
fn upstream_readings(target: &str) -> Vec<String> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_str(path).decode_utf8_lossy().into_owned();
    let no_params: String = path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/");
    let overlong = path
        .to_ascii_lowercase()
        .replace("%c0%ae", ".")
        .replace("%c0%af", "/")
        .replace("%e0%80%ae", ".");
    [path.to_owned(), decoded, no_params, overlong]
        .iter()
        .map(|p| {
            let url = url::Url::parse(&format!("http://upstream{p}"));
            url.map(|u| {
                percent_decode_str(u.path())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|_| "(unparsable)".into())
        })
        .collect()
}

#[test]
fn upstream_readings_catch_the_classic_bypasses() {
    // The checker itself: each of these must be read as outside /public/ by some reading.
    for bypass in [
        "/public/../admin",
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public;x/../admin",
        "/public/%c0%ae%c0%ae/admin",
        "/public\\..\\admin",
    ] {
        assert!(
            upstream_readings(bypass)
                .iter()
                .any(|p| !p.starts_with("/public/")),
            "{bypass}"
        );
    }
    assert!(
        upstream_readings("/public/a%20b.css")
            .iter()
            .all(|p| p.starts_with("/public/"))
    );
}

/// Path normalization against skip-auth rules: without a session, only a path that every
/// plausible upstream reads as under `/public/` may reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_skip_authentication() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let hostile = [
        // dot segments, plain and encoded in every case
        "/public/../admin",
        "/public/./../admin",
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/%2e%2e%2fadmin",
        "/public/%252e%252e/admin",
        "/public/%252e%252e%252fadmin",
        // empty segments and leading double slashes
        "/public//../admin",
        "//public/../admin",
        "/public/x//..//..//admin",
        // backslashes, raw and encoded
        "/public\\..\\admin",
        "/public/..\\admin",
        "/public/%5c..%5cadmin",
        "/public/%5C../admin",
        // `;` path parameters
        "/public;/../admin",
        "/public;x=1/../admin",
        "/public/..;/admin",
        "/public/%3b/../admin",
        // fragments and encoded fragments / queries
        "/public/x#/../../admin",
        "/public/x%23/../../admin",
        "/public/%3f/../../admin",
        "/public/..%3f/admin",
        // overlong and invalid UTF-8
        "/public/%c0%ae%c0%ae/admin",
        "/public/%c0%ae%c0%ae%c0%afadmin",
        "/public/%e0%80%ae%e0%80%ae/admin",
        "/public/%c0%2e%c0%2e/admin",
        "/public/%ff/../admin",
        // control characters and NUL
        "/public/%00/../admin",
        "/public/%09/../admin",
        "/public/%0d%0a/../admin",
        // near misses of the rule
        "/publicx/admin",
        "/PUBLIC/x",
        "/public",
        "/admin?/public/",
        "/admin#/public/",
        // absolute-form targets naming another path
        "http://app.example.com/public/../admin",
        "http://app.example.com/public/%2e%2e/admin",
    ];
    for target in hostile {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        let reply = send_raw(proxy.addr, &request);
        if let Some(reply) = reply.filter(|r| r.status == 200) {
            let user = reply
                .upstream_headers()
                .into_iter()
                .any(|(k, _)| IDENTITY.contains(&k.replace('_', "-").as_str()));
            assert!(!user, "{target}: an identity header without a session");
        }
    }
    // Controls, so the check below is not vacuous: canonical public paths do get through.
    for open in [
        "/public/app.js",
        "/public/my%20file.css",
        "/public/caf%C3%A9",
    ] {
        let reply = send_raw(
            proxy.addr,
            &format!("GET {open} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{open}");
    }
    let targets = upstream.targets.lock().unwrap().clone();
    for control in [
        "/public/app.js",
        "/public/my%20file.css",
        "/public/caf%C3%A9",
    ] {
        assert!(
            targets.iter().any(|t| t == control),
            "{control}: {targets:?}"
        );
    }
    for target in &targets {
        for reading in upstream_readings(target) {
            assert!(
                reading.starts_with("/public/"),
                "{target} reached the upstream without a session and reads as {reading}"
            );
        }
    }
    assert!(hostile.len() >= 40);
}

/// Identity header smuggling: whatever spelling, repetition or framing the client uses, the
/// upstream sees our identity headers exactly once with our values, or none without a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_cannot_be_smuggled() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let injections = [
        "x-auth-request-user: mallory",
        "X-Auth-Request-User: mallory",
        "X-AUTH-REQUEST-USER: mallory",
        "x-AuTh-ReQuEsT-uSeR: mallory",
        "x_auth_request_user: mallory",
        "X_Auth_Request_User: mallory",
        "x-auth_request-user: mallory",
        "x_auth-request_user: mallory",
        "x-auth-request-user: mallory\r\nx-auth-request-user: eve",
        "x-auth-request-user: alice, mallory",
        "x-auth-request-user: mallory\r\nX_AUTH_REQUEST_USER: eve",
        "x-auth-request-email: mallory@evil.example",
        "x_auth_request_email: mallory@evil.example",
        "X-Auth-Request-Groups: admins",
        "x_auth_request_groups: admins",
        "x-auth-request-groups: admins\r\nx-auth-request-groups: root",
        // obsolete line folding: a continuation line that looks like a header
        "X-Note: hi\r\n x-auth-request-user: mallory",
        "X-Note: hi\r\n\tx-auth-request-user: mallory",
        "x-auth-request-user:\r\n mallory",
        // whitespace and odd bytes around the name
        " x-auth-request-user: mallory",
        "\tx-auth-request-user: mallory",
        "x-auth-request-user : mallory",
        "x-auth-request-user\t: mallory",
        "x-auth-request-user:mallory",
        "x-auth-request-user:\tmallory\t",
        // the header named in Connection, to be dropped as hop-by-hop and re-added by a
        // careless proxy after ours
        "Connection: x-auth-request-user\r\nx-auth-request-user: mallory",
        "Connection: keep-alive, X_Auth_Request_User\r\nX_Auth_Request_User: mallory",
    ];
    let mut checked = 0;
    for injection in injections {
        for (path, with_session) in [("/app", true), ("/public/x", false)] {
            let cookie_line = if with_session {
                format!("Cookie: {cookie}\r\n")
            } else {
                String::new()
            };
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{cookie_line}{injection}\r\nConnection: close\r\n\r\n"
            );
            let Some(reply) = send_raw(proxy.addr, &request) else {
                continue; // closed without an answer: nothing reached the upstream
            };
            if reply.status != 200 {
                assert!(
                    (400..500).contains(&reply.status),
                    "{injection:?}: {}",
                    reply.status
                );
                continue;
            }
            let seen = reply.upstream_headers();
            for (i, ours) in IDENTITY.iter().enumerate() {
                let values: Vec<&str> = seen
                    .iter()
                    .filter(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case(ours))
                    .map(|(_, v)| v.as_str())
                    .collect();
                let expected: &[&str] = match (with_session, i) {
                    (false, _) => &[],
                    (true, 0) => &["alice"],
                    (true, 1) => &["alice@example.com"],
                    (true, _) => &["dev,ops"],
                };
                assert_eq!(values, expected, "{injection:?} on {path}");
            }
            // Nothing of mallory's reached the upstream in any header (folded ones included).
            assert!(
                !seen.iter().any(|(_, v)| v.contains("mallory")),
                "{injection:?} on {path}: {seen:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} cases reached the upstream");
}

/// Forwarding headers from a peer that is not a trusted proxy: replaced by what the proxy
/// itself knows, in every spelling, including headers some frameworks route by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_untrusted_peers_are_replaced() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let spoofs = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("x-forwarded-for", "6.6.6.6, 127.0.0.1"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-FORWARDED-FOR", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("x_forwarded_proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("x_forwarded_host", "evil.example"),
        ("X-Forwarded-Port", "6666"),
        ("X_Forwarded_Port", "6666"),
        ("X-Forwarded-Prefix", "/evil"),
        ("x_forwarded_prefix", "/evil"),
        ("X-Real-IP", "6.6.6.6"),
        ("x_real_ip", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
        ("FORWARDED", "for=\"[2001:db8::6]\""),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("x_original_url", "/admin"),
    ];
    let mut cases = 0;
    for (name, value) in spoofs {
        for twice in [false, true] {
            let extra = if twice {
                format!("{name}: {value}\r\n{name}: {value}\r\n")
            } else {
                format!("{name}: {value}\r\n")
            };
            let request = format!(
                "GET /app HTTP/1.1\r\nHost: app.example.com\r\nCookie: {cookie}\r\n{extra}Connection: close\r\n\r\n"
            );
            let reply = send_raw(proxy.addr, &request).unwrap();
            assert_eq!(reply.status, 200, "{name}");
            let seen = reply.upstream_headers();
            let get = |n: &str| -> Vec<&str> {
                seen.iter()
                    .filter(|(k, _)| k.replace('_', "-") == n)
                    .map(|(_, v)| v.as_str())
                    .collect()
            };
            assert_eq!(get("x-forwarded-for"), ["127.0.0.1"], "{name}: {value}");
            assert_eq!(get("x-forwarded-proto"), ["http"], "{name}: {value}");
            assert_eq!(
                get("x-forwarded-host"),
                ["app.example.com"],
                "{name}: {value}"
            );
            for gone in [
                "x-forwarded-port",
                "x-forwarded-prefix",
                "x-real-ip",
                "forwarded",
                "x-original-url",
                "x-rewrite-url",
            ] {
                assert!(get(gone).is_empty(), "{name}: {value} left {gone}");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 38);
}

/// Host header attacks on the sign-in redirect and on the return after sign-in: the
/// `Location` is always a path on our own site, whatever Host or target the client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_attacks_do_not_steer_redirects() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let on_site = |location: &str| {
        let base = url::Url::parse("https://app.example.com/").unwrap();
        let resolved = base.join(location).unwrap();
        resolved.host_str() == Some("app.example.com")
            && !location.starts_with("//")
            && !location.contains('\\')
            && location.starts_with('/')
    };
    let heads = [
        "Host: evil.example",
        "Host: evil.example:443",
        "Host: app.example.com@evil.example",
        "Host: evil.example/app",
        "Host: app.example.com\r\nHost: evil.example",
        "Host: app.example.com\r\nX-Forwarded-Host: evil.example",
        "Host: app.example.com\r\nForwarded: host=evil.example",
        "Host: app.example.com\r\nX-Forwarded-Proto: javascript",
        "Host: app.example.com\r\nX-Original-URL: //evil.example",
        "Host: [::1]",
        "Host: ",
    ];
    let targets = [
        "/app",
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "http://evil.example/app",
        "https://evil.example/",
        "/app?rd=https://evil.example",
        "/%2F%2Fevil.example",
    ];
    let mut cases = 0;
    for head in heads {
        for target in targets {
            let request = format!(
                "GET {target} HTTP/1.1\r\n{head}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
            );
            let Some(reply) = send_raw(proxy.addr, &request) else {
                continue;
            };
            if reply.status == 400 {
                continue;
            }
            assert_eq!(reply.status, 302, "{head:?} {target}");
            let location = reply.header("location").unwrap();
            assert!(on_site(location), "{head:?} {target} -> {location}");
            assert!(location.starts_with("/auth/sign_in?rd="), "{location}");
            let resolved = url::Url::parse("https://app.example.com/")
                .unwrap()
                .join(location)
                .unwrap();
            assert_eq!(resolved.path(), "/auth/sign_in", "{location}");
            cases += 1;
        }
    }
    // After sign-in (a session present), `rd` decides where the user goes: never off-site.
    let rds = [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "https:evil.example",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%09/evil.example",
        "%09//evil.example",
        "/%0a/evil.example",
        "%20//evil.example",
        "javascript:alert(1)",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "//%65vil.example",
        "/\u{ff0f}evil.example",
    ];
    for rd in rds {
        let rd = percent_encoding::utf8_percent_encode(rd, percent_encoding::CONTROLS).to_string();
        let request = format!(
            "GET /auth/sign_in?rd={rd} HTTP/1.1\r\nHost: evil.example\r\nCookie: {cookie}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        );
        let Some(reply) = send_raw(proxy.addr, &request) else {
            continue;
        };
        if let Some(location) = reply.header("location") {
            assert!(on_site(location), "rd={rd} -> {location}");
            assert!(!location.contains("evil.example"), "rd={rd} -> {location}");
        } else {
            assert!(reply.status < 500, "rd={rd}: {}", reply.status);
        }
        cases += 1;
    }
    assert!(cases >= 80, "{cases}");
    assert_eq!(upstream.arrived.load(Ordering::SeqCst), 0);
}

/// Our cookie family, as the proxy defines it: the base name and `BASE_*`, with or without a
/// `__Host-`/`__Secure-` prefix, in any case.
fn is_our_cookie(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let bare = name
        .strip_prefix("__host-")
        .or_else(|| name.strip_prefix("__secure-"))
        .unwrap_or(&name);
    bare.strip_prefix("vouchrs_session")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

/// Cookie tossing: a sibling subdomain can set `vouchrs_session` (or a look-alike) but not
/// `__Host-vouchrs_session`. A valid session sealed for someone else under any look-alike
/// name, before or after the real cookie, must never become the identity, and a tossed
/// cookie must not hide the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_tossing_does_not_switch_or_hide_the_session() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let alice = proxy.cookie_for("alice");
    let mallory_value = proxy
        .cookie_for("mallory")
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let look_alikes = [
        "vouchrs_session",
        "__host-vouchrs_session",
        "__HOST-vouchrs_session",
        "__Secure-vouchrs_session",
        "__secure-vouchrs_session",
        "__Host-VOUCHRS_SESSION",
        "__Host-vouchrs_session_oidc",
        "__Host-vouchrs_session_9",
        "__Host-vouchrs_session_x",
        "__Host-vouchrs_sessio",
        "__Host_vouchrs_session",
    ];
    let mut cases = 0;
    for name in look_alikes {
        let tossed = format!("{name}={mallory_value}");
        for header in [
            format!("Cookie: {tossed}; {alice}"),
            format!("Cookie: {alice}; {tossed}"),
            format!("Cookie: {tossed}\r\nCookie: {alice}"),
            format!("Cookie: {tossed}"),
        ] {
            let alone = !header.contains(&alice);
            let request = format!(
                "GET /app HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json\r\n{header}\r\nConnection: close\r\n\r\n"
            );
            let reply = send_raw(proxy.addr, &request).unwrap();
            if alone {
                assert_eq!(reply.status, 401, "{name} alone made a session");
            } else {
                assert_eq!(reply.status, 200, "{name} hid the real cookie");
                let seen = reply.upstream_headers();
                let user: Vec<_> = seen
                    .iter()
                    .filter(|(k, _)| k == "x-auth-request-user")
                    .map(|(_, v)| v.as_str())
                    .collect();
                assert_eq!(user, ["alice"], "{header}");
                // Family members are ours and stay with us; other look-alikes are the
                // application's cookies and pass.
                for (_, cookie) in seen.iter().filter(|(k, _)| k == "cookie") {
                    for pair in cookie.split(';') {
                        let name = pair.split('=').next().unwrap_or("");
                        assert!(!is_our_cookie(name), "{name} went upstream: {header}");
                    }
                }
            }
            cases += 1;
        }
    }
    // Several cookies under the real name: garbage ones tossed in front do not hide the
    // valid one (up to the candidate limit).
    for garbage in ["x", "AAAA", "", "%00", &"A".repeat(500)] {
        let header = format!("{SESSION_COOKIE}={garbage}; {SESSION_COOKIE}={garbage}; {alice}");
        let reply = send_raw(
            proxy.addr,
            &format!(
                "GET /app HTTP/1.1\r\nHost: a\r\nCookie: {header}\r\nConnection: close\r\n\r\n"
            ),
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{garbage:?}");
        cases += 1;
    }
    assert_eq!(cases, 49);
}

/// Many or huge cookies: the session is still found, other cookies reach the upstream
/// unchanged, ours never do, over-large heads get `431`, and the proxy stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_and_huge_cookies_are_handled() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let alice = proxy.cookie_for("alice");
    let others: Vec<String> = (0..300).map(|i| format!("c{i}=v{i}")).collect();
    let mut cases = 0;

    // 300 small cookies around the session, in one header and in 300 headers.
    let one_header = format!(
        "Cookie: {}; {alice}; {}",
        others[..150].join("; "),
        others[150..].join("; ")
    );
    // 90 Cookie headers (hyper's parser takes at most 100 header lines).
    let many_headers: String = others[..90]
        .iter()
        .map(|c| format!("Cookie: {c}\r\n"))
        .collect::<String>()
        + &format!("Cookie: {alice}\r\n")
        + &format!("Cookie: {}", others[90..].join("; "));
    for header in [one_header, many_headers] {
        let reply = send_raw(
            proxy.addr,
            &format!("GET /app HTTP/1.1\r\nHost: a\r\n{header}\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert_eq!(reply.status, 200);
        let seen = reply.upstream_headers();
        let cookie: Vec<_> = seen.iter().filter(|(k, _)| k == "cookie").collect();
        assert_eq!(cookie.len(), 1, "joined into one header");
        assert_eq!(cookie[0].1, others.join("; "));
        cases += 1;
    }

    // Huge values of ours: refused as sessions, never forwarded, never a crash.
    let huge_ours = [
        format!("{SESSION_COOKIE}={}", "A".repeat(9000)),
        format!("{SESSION_COOKIE}={}", "A".repeat(60_000)),
        (0..8)
            .map(|i| format!("{SESSION_COOKIE}_{i}={}", "B".repeat(3800)))
            .collect::<Vec<_>>()
            .join("; "),
        (0..20)
            .map(|i| format!("{SESSION_COOKIE}_{}={}", i % 10, "C".repeat(100)))
            .collect::<Vec<_>>()
            .join("; "),
        (0..200)
            .map(|_| format!("{SESSION_COOKIE}=xyz"))
            .collect::<Vec<_>>()
            .join("; "),
    ];
    for header in &huge_ours {
        for path in ["/app", "/public/x"] {
            let reply = send_raw(
                proxy.addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nCookie: keep=1; {header}\r\nConnection: close\r\n\r\n"
                ),
            )
            .unwrap();
            match (path, reply.status) {
                ("/app", status) => assert!(status == 401 || status == 431, "{status}"),
                (_, 200) => {
                    let seen = reply.upstream_headers();
                    let cookie: Vec<_> = seen.iter().filter(|(k, _)| k == "cookie").collect();
                    assert_eq!(cookie.len(), 1);
                    assert_eq!(
                        cookie[0].1, "keep=1",
                        "only the foreign cookie goes upstream"
                    );
                }
                (_, status) => assert_eq!(status, 431),
            }
            cases += 1;
        }
    }

    // Past max_header_bytes or the header line limit: 431, and the proxy still serves.
    let too_many_lines: String = others.iter().map(|c| format!("Cookie: {c}\r\n")).collect();
    for size in [70_000, 200_000, 1_000_000, 0] {
        let header = match size {
            0 => too_many_lines.trim_end().to_owned(),
            n => format!("Cookie: big={}", "x".repeat(n)),
        };
        let reply = raw_request(
            proxy.addr,
            &format!("GET /app HTTP/1.1\r\nHost: a\r\n{header}\r\n\r\n"),
        )
        .unwrap_or_default();
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
            "{}",
            &reply[..reply.len().min(80)]
        );
        cases += 1;
    }
    let reply = send_raw(
        proxy.addr,
        &format!("GET /app HTTP/1.1\r\nHost: a\r\nCookie: {alice}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert!(cases >= 15);
}

/// Request smuggling: ambiguous framing either gets `400` or is resolved one way (RFC 9112
/// §6.3: `Transfer-Encoding` wins, `Content-Length` is dropped, the connection closes), and
/// the upstream never receives framing it could read differently: no request with both
/// headers, no `_` spelling of either, and never the request hidden in the body (which
/// carries no cookie: the proxy would answer it `401` itself, so only an upstream-side
/// desync could deliver it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_refused() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), Extra::default());
    let cookie = proxy.cookie_for("alice");
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let chunked_body = format!("0\r\n\r\n{smuggled}");
    // (framing, must be refused with 400)
    let framings: Vec<(String, bool)> = vec![
        // CL.TE and TE.CL
        (
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked",
                chunked_body.len()
            ),
            false,
        ),
        (
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}",
                chunked_body.len()
            ),
            false,
        ),
        (
            "Content-Length: 4\r\nTransfer-Encoding: chunked".into(),
            false,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\nContent-Length: 5".into(),
            false,
        ),
        // Transfer-Encoding that does not end in chunked, or is obfuscated
        ("Transfer-Encoding: xchunked".into(), true),
        ("Transfer-Encoding: chunked, identity".into(), true),
        ("Transfer-Encoding: identity".into(), true),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity".into(),
            true,
        ),
        ("Transfer-Encoding: \"chunked\"".into(), true),
        (
            "Transfer-Encoding: identity, chunked\r\nContent-Length: 3".into(),
            false,
        ),
        ("Transfer-Encoding : chunked".into(), true),
        (" Transfer-Encoding: chunked".into(), true),
        (
            "Transfer-Encoding: chunked\r\n Content-Length: 3".into(),
            true,
        ),
        (
            "Transfer-Encoding:\tchunked\r\nContent-Length: 3".into(),
            false,
        ),
        // `_` spellings some servers read as the real header
        (
            "Transfer_Encoding: chunked\r\nContent-Length: 3".into(),
            false,
        ),
        (
            "Content_Length: 3\r\nTransfer-Encoding: chunked".into(),
            false,
        ),
        ("Content_Length: 40\r\nContent-Length: 3".into(), false),
        // conflicting or malformed Content-Length
        ("Content-Length: 3\r\nContent-Length: 40".into(), true),
        ("Content-Length: 3, 40".into(), true),
        ("Content-Length: +3".into(), true),
        ("Content-Length: -1".into(), true),
        ("Content-Length: 0x3".into(), true),
        ("Content-Length: 3 3".into(), true),
        ("Content-Length: 99999999999999999999999".into(), true),
        // TE on HTTP/1.0 is refused by the parser as well (checked below with 1.0)
    ];
    let mut cases = 0;
    for (framing, must_refuse) in &framings {
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let before = upstream.targets.lock().unwrap().len();
            let body = if framing.contains("chunked") {
                chunked_body.clone()
            } else {
                format!("abc{smuggled}")
            };
            let request = format!(
                "POST /app {version}\r\nHost: a\r\nCookie: {cookie}\r\n{framing}\r\n\r\n{body}"
            );
            let reply = raw_request(proxy.addr, &request).unwrap();
            let first = RawReply::parse(&reply);
            let targets = upstream.targets.lock().unwrap()[before..].to_vec();
            assert!(
                !targets.iter().any(|t| t.contains("smuggled")),
                "{framing:?}: the smuggled request reached the upstream: {targets:?}"
            );
            assert!(targets.len() <= 1, "{framing:?}: {targets:?}");
            let te_on_10 = version == "HTTP/1.0" && framing.contains("Transfer-Encoding:");
            if *must_refuse || te_on_10 {
                assert_eq!(
                    first.as_ref().map(|r| r.status),
                    Some(400),
                    "{framing:?} {version}: {reply}"
                );
                assert!(
                    targets.is_empty(),
                    "{framing:?} {version} reached the upstream"
                );
            }
            if let Some(reply) = first.filter(|r| r.status == 200) {
                let seen = reply.upstream_headers();
                let framing_headers: Vec<&String> = seen
                    .iter()
                    .map(|(k, _)| k)
                    .filter(|k| {
                        let dashed = k.replace('_', "-");
                        dashed == "transfer-encoding" || dashed == "content-length"
                    })
                    .collect();
                assert!(
                    framing_headers.len() <= 1 && framing_headers.iter().all(|k| !k.contains('_')),
                    "{framing:?}: the upstream got ambiguous framing {framing_headers:?}"
                );
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 2 * framings.len());
    // The proxy is fine afterwards.
    let reply = send_raw(
        proxy.addr,
        &format!("GET /app HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
}

/// Slowloris: connections that dribble their request head, or never send one, are closed by
/// the server once the header read timeout passes, and meanwhile others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_while_others_are_served() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "header_read_timeout = \"1s\"",
            ..Extra::default()
        },
    );
    let cookie = proxy.cookie_for("alice");
    let starts: [&[u8]; 5] = [
        b"",
        b"G",
        b"GET / HTTP/1.1\r\n",
        b"GET /app HTTP/1.1\r\nHost: a\r\nX-Slow: ",
        b"POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n",
    ];
    let mut slow: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        for start in starts {
            let mut s = TcpStream::connect(proxy.addr).unwrap();
            s.write_all(start).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            slow.push(s);
        }
    }
    // Dribble a byte per 200 ms to each (each byte arrives well within the timeout; only the
    // whole head is late) and serve a normal client meanwhile.
    let mut closed = vec![false; slow.len()];
    let mut served = 0;
    for round in 0..60 {
        for (i, s) in slow.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let _ = s.write_all(b"a");
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => closed[i] = true,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                    closed[i] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed[i] = true,
                Err(_) => {}
            }
        }
        if round % 5 == 0 {
            let reply = send_raw(
                proxy.addr,
                &format!(
                    "GET /app HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
                ),
            )
            .unwrap();
            assert_eq!(reply.status, 200);
            served += 1;
        }
        if closed.iter().all(|c| *c) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed.iter().all(|c| *c),
        "{} of {} slow connections still open after 60 rounds",
        closed.iter().filter(|c| !**c).count(),
        closed.len()
    );
    assert!(served >= 1);
    // None of the slow requests reached the upstream.
    let targets = upstream.targets.lock().unwrap().clone();
    assert!(targets.iter().all(|t| t == "/app"), "{targets:?}");
    assert_eq!(targets.len(), served);
}

/// A connection flood past `server.max_connections`: the limit holds (never more open than
/// allowed), the excess is refused at once, the proxy stays up and serves afterwards, and
/// its descriptors return to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_at_the_limit() {
    let upstream = TestUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        Extra {
            server: "max_connections = 16\nheader_read_timeout = \"30s\"",
            ..Extra::default()
        },
    );
    let cookie = proxy.cookie_for("alice");
    let ping =
        format!("GET /app HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");
    assert_eq!(send_raw(proxy.addr, &ping).unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = proxy.open_fds();

    let mut held = Vec::new();
    for i in 0..400 {
        if let Ok(mut s) = TcpStream::connect(proxy.addr) {
            // Half start a request and stall, half send nothing.
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /app HTTP/1.1\r\nHost: a\r\n");
            }
            held.push(s);
        }
        if i % 100 == 99 {
            let open = proxy.metric("vouchrs_connections_open");
            assert!(open <= 16, "{open} connections open past a limit of 16");
        }
    }
    // Let the proxy accept what is still in its backlog.
    for _ in 0..50 {
        if proxy.metric("vouchrs_connections_refused_total") >= 400 - 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = proxy.metric("vouchrs_connections_refused_total");
    assert!(refused >= 400 - 16, "{refused} refused");
    assert!(proxy.metric("vouchrs_connections_open") <= 16);
    drop(held);

    // Served again once the flood is gone, and nothing leaked.
    let mut served = false;
    for _ in 0..100 {
        if send_raw(proxy.addr, &ping).is_some_and(|r| r.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the proxy never served again: {}", proxy.log());
    for _ in 0..100 {
        if proxy.metric("vouchrs_connections_open") == 0 && proxy.open_fds() <= baseline + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.metric("vouchrs_connections_open"), 0);
    // 400 client connections came and went; at most the upstream pool may hold one or two
    // more idle connections than before.
    assert!(
        proxy.open_fds() <= baseline + 2,
        "descriptors: {} now, {baseline} before",
        proxy.open_fds()
    );
}
