//! The config parser: TOML text, environment overrides, validation.
//!
//! Input: `env selector (1) | TOML text`. Properties: a config that loads renders back to TOML
//! that loads to the same config (the operator writes the proxy's ConfigMap that way), and
//! everything the proxy builds from it with an `expect` (header names, cookie names, the
//! sign-in redirect) builds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchrs_proxy::config::ProxyConfig;
use vouchrs_proxy::web::cookies::{self, CookieNames};
use vouchrs_proxy::web::headers::HeaderRules;
use vouchrs_proxy::web::respond::sign_in_redirect;

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // A few environment overrides, chosen by the first byte.
    let env = |var: &str| -> Option<String> {
        match (selector % 4, var) {
            (1, "SESSION_DURATION_HOURS") => Some("1".into()),
            (2, "SESSION_REFRESH_HOURS") => Some(" 7 ".into()),
            (3, "TOKIO_WORKER_THREADS") => Some("0".into()),
            _ => None,
        }
    };
    let Ok(config) = ProxyConfig::load(text, env) else {
        return;
    };
    assert!(config.session.duration_hours >= 1);
    assert!(config.session.refresh_hours <= config.session.duration_hours);
    assert!(config.server.max_connections >= 1);
    assert_ne!(config.runtime.worker_threads, Some(0));

    let rendered = config.to_toml();
    let again = ProxyConfig::load(&rendered, |_| None)
        .unwrap_or_else(|e| panic!("rendered config does not load: {e}\n{rendered}"));
    assert_eq!(
        again, config,
        "the rendered config loads differently:\n{rendered}"
    );

    let rules = HeaderRules::new(
        &config.identity_headers,
        config.server.trusted_proxies.clone(),
    );
    let _ = rules.peer("192.0.2.1".parse().unwrap(), "http");
    let names = CookieNames::new(config.session.cookie_name.as_str(), config.session.secure);
    let _ = cookies::session_set_cookies(&names, "abc", 60, 2);
    assert_eq!(names.session, config.session_cookie_name());
    let _ = sign_in_redirect(config.auth.prefix.as_str(), "/a?b=c");
});
