//! The path normalization that skip-auth rules match against.
//!
//! Property: when `canonical` accepts a request path, a WHATWG URL parser (the normalization
//! most servers and frameworks approximate) resolves that path to the same decoded path, so a
//! rule never matches one spelling while the upstream serves another. The canonical path never
//! holds dot or empty segments, `\`, `;`, `%` or control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use vouchrs_proxy::config::PathRule;
use vouchrs_proxy::web::path::canonical;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Only what hyper would hand the gateway as a request path.
    let Ok(pq) = http::uri::PathAndQuery::try_from(text) else {
        return;
    };
    let raw = pq.path();
    let Some(decoded) = canonical(raw) else {
        return;
    };
    assert!(decoded.starts_with('/'));
    assert!(!decoded.contains("//"), "{raw:?} -> {decoded:?}");
    assert!(
        !decoded.contains(['\\', ';', '%', '#', '?']),
        "{raw:?} -> {decoded:?}"
    );
    assert!(!decoded.chars().any(char::is_control), "{raw:?}");
    assert!(decoded.split('/').all(|s| s != "." && s != ".."), "{raw:?}");

    let url = url::Url::parse(&format!("http://upstream{raw}")).expect("a valid path parses");
    let served = percent_decode_str(url.path()).decode_utf8_lossy();
    assert_eq!(
        served, decoded,
        "skip-auth saw {decoded:?}, a normalizing server serves {served:?}"
    );

    // A prefix rule matches the path the server serves exactly when it matches ours.
    let rule = PathRule::try_from("/public/*".to_owned()).expect("a valid rule");
    assert_eq!(rule.matches(&decoded), rule.matches(&served));
});
