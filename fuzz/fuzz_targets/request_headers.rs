//! Request header processing as the gateway does it: cookie scan and rewrite, then identity
//! header stripping and forwarding headers.
//!
//! Input: `flags (1) | lines "name: value" separated by \n`. Flag bit 0: the peer is a trusted
//! proxy; bit 1: the request has a session (identity); bit 2: the peer is IPv6.
//! Properties: the upstream sees our identity headers exactly as we set them (no spoofed value
//! in any spelling, none at all without a session), no hop-by-hop header, no header the client
//! named in `Connection`, from an untrusted peer no forwarding header but ours (with the
//! peer's address), and none of our cookies; every other cookie pair is kept.
#![no_main]

use std::net::IpAddr;

use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vouchrs_proxy::config::IdentityHeaders;
use vouchrs_proxy::web::cookies::{self, CookieNames};
use vouchrs_proxy::web::headers::{HeaderRules, IdentityValues};

const IDENTITY: [&str; 3] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
];
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];
const SPOOFABLE: [&str; 6] = [
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
];

fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

/// Our cookie family; names padded with bytes that cannot be in a cookie name (non-ASCII,
/// whitespace, controls) count too, as some upstream parsers trim them.
fn is_our_cookie(name: &str) -> bool {
    let name = name
        .trim_matches(|c: char| !c.is_ascii() || c.is_ascii_whitespace() || c.is_ascii_control())
        .to_ascii_lowercase();
    let bare = name
        .strip_prefix("__host-")
        .or_else(|| name.strip_prefix("__secure-"))
        .unwrap_or(&name);
    bare.strip_prefix("vouchrs_session")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

/// `name=value` pairs of Cookie headers, as the proxy reads them (pairs without `=` skipped).
fn cookie_pairs<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<String> {
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(|p| String::from_utf8_lossy(p.trim_ascii()).into_owned())
        .filter(|p| p.contains('='))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let (trusted, with_identity, v6) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    let mut headers = HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let received = headers.clone();

    let addr: IpAddr = if v6 {
        "2001:db8::7".parse().unwrap()
    } else {
        "192.0.2.7".parse().unwrap()
    };
    let trusted_nets = if trusted {
        vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
    } else {
        vec![]
    };
    let rules = HeaderRules::new(&IdentityHeaders::default(), trusted_nets);
    let peer = rules.peer(addr, "https");
    assert_eq!(peer.trusted, trusted);

    // Cookies first, as the gateway does.
    let names = CookieNames::new("vouchrs_session", true);
    let scanned = cookies::scan(&headers, &names);
    for value in scanned.session_values() {
        let value = value.into_owned();
        let seen = received.get_all(COOKIE).iter().any(|h| {
            String::from_utf8_lossy(h.as_bytes())
                .contains(value.get(..value.len().min(64)).unwrap_or(""))
        });
        assert!(seen, "a session value that was not in any Cookie header");
    }
    if scanned.needs_rewrite {
        match cookies::upstream_cookie(&headers, &names) {
            Some(v) => headers.insert(COOKIE, v),
            None => headers.remove(COOKIE),
        };
    }
    let sent = cookie_pairs(headers.get_all(COOKIE).iter());
    for pair in &sent {
        let name = pair.split('=').next().unwrap_or("");
        assert!(!is_our_cookie(name), "our cookie {name:?} went upstream");
    }
    let kept = cookie_pairs(received.get_all(COOKIE).iter())
        .into_iter()
        .filter(|p| !is_our_cookie(p.split('=').next().unwrap_or("")))
        .count();
    assert_eq!(sent.len(), kept, "other cookies were lost");

    let identity = IdentityValues {
        user: HeaderValue::from_static("alice"),
        email: Some(HeaderValue::from_static("alice@example.com")),
        groups: None,
    };
    rules.prepare_request(&mut headers, &peer, with_identity.then_some(&identity));

    // Identity: exactly ours, in every spelling.
    for (i, ours) in IDENTITY.iter().enumerate() {
        let values: Vec<_> = headers
            .iter()
            .filter(|(n, _)| dashed(n.as_str()) == *ours)
            .map(|(_, v)| v.clone())
            .collect();
        let expected: Vec<HeaderValue> = match (with_identity, i) {
            (false, _) | (true, 2) => vec![],
            (true, 0) => vec![identity.user.clone()],
            (true, _) => vec![identity.email.clone().unwrap()],
        };
        assert_eq!(values, expected, "{ours}");
    }
    // Hop-by-hop headers, and those the client named in Connection, are gone.
    let named: Vec<String> = received
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| HeaderName::from_bytes(t.as_bytes()).is_ok())
        .filter(|t| !["close", "keep-alive", "upgrade"].contains(&t.as_str()))
        .filter(|t| !IDENTITY.contains(&t.as_str()))
        .filter(|t| !t.starts_with("x-forwarded-"))
        .collect();
    for name in headers.keys() {
        let n = dashed(name.as_str());
        assert!(
            !HOP_BY_HOP.contains(&n.as_str()),
            "hop-by-hop {name} went upstream"
        );
        assert!(
            !named.contains(&name.as_str().to_owned()),
            "{name} was named in Connection"
        );
    }
    // Forwarding headers.
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1);
    let xff = xff[0].to_str().expect("ASCII");
    let peer_text = addr.to_string();
    if trusted {
        assert!(xff.ends_with(&peer_text), "{xff}");
    } else {
        assert_eq!(xff, peer_text);
        for name in headers.keys() {
            let n = dashed(name.as_str());
            assert!(
                !SPOOFABLE.contains(&n.as_str()),
                "spoofed {name} went upstream"
            );
            let ours = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
            if name.as_str() != n && ours.contains(&n.as_str()) {
                panic!("underscore variant {name} went upstream");
            }
        }
        assert_eq!(
            headers
                .get_all("x-forwarded-proto")
                .iter()
                .collect::<Vec<_>>(),
            ["https"]
        );
        let host: Vec<_> = headers.get_all("host").iter().take(1).collect();
        let xfh: Vec<_> = headers.get_all("x-forwarded-host").iter().collect();
        assert_eq!(
            xfh, host,
            "x-forwarded-host is the Host the client sent, or absent"
        );
    }
});
