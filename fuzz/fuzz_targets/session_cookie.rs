//! The session cookie opener: `Cookie` header scan, envelope, postcard decoding and expiry,
//! with the time passed in.
//!
//! Input: `mode (1) | now (8, little endian) | text`.
//! - mode even: `text` is a `Cookie` header; every session value found is opened. A session
//!   that opens must not be expired at `now`, must not open under another key with the same
//!   id or under another cookie name (so it was sealed by our key for this cookie), and must
//!   survive a reseal.
//! - mode odd: `text` is a plaintext; sealed and opened it must come back unchanged, and any
//!   flipped bit or cut must be refused.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vouchrs_fuzz::{OTHER_KEY, REAL_KEY, SESSION_COOKIE, ring, sealer};
use vouchrs_proxy::session::envelope;
use vouchrs_proxy::session::{Rejected, SessionSealer};
use vouchrs_proxy::web::cookies::{self, CookieNames};

struct Sealers {
    real: SessionSealer,
    other_key: SessionSealer,
    other_name: SessionSealer,
    names: CookieNames,
}

fn sealers() -> &'static Sealers {
    static SEALERS: std::sync::OnceLock<Sealers> = std::sync::OnceLock::new();
    SEALERS.get_or_init(|| Sealers {
        real: sealer(REAL_KEY, SESSION_COOKIE),
        other_key: sealer(OTHER_KEY, SESSION_COOKIE),
        other_name: sealer(REAL_KEY, "__Host-vouchrs_session_oidc"),
        names: CookieNames::new("vouchrs_session", true),
    })
}

fn open_header(header: &[u8], now: u64) {
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let mut headers = HeaderMap::new();
    // Several Cookie headers (HTTP/2 splits them): one per line of the input.
    for line in value.as_bytes().split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    let s = sealers();
    let scanned = cookies::scan(&headers, &s.names);
    assert!(scanned.chunk_count() <= cookies::MAX_CHUNKS);
    for candidate in scanned.session_values() {
        match s.real.open(&candidate, now) {
            Ok(session) => {
                assert!(now < session.expires_at, "an expired session opened");
                assert_eq!(
                    s.other_key.open(&candidate, now).map(|_| ()),
                    Err(Rejected::Invalid),
                    "a value opened under a key that did not seal it"
                );
                assert_eq!(
                    s.other_name
                        .open_value::<vouchrs_proxy::session::Session>(
                            "__Host-vouchrs_session_oidc",
                            &candidate
                        )
                        .map(|_| ()),
                    Err(Rejected::Invalid),
                    "a value opened under another cookie name"
                );
                let resealed = s.real.seal(&session);
                assert_eq!(s.real.open(&resealed, now).as_ref(), Ok(&session));
            }
            Err(Rejected::Expired | Rejected::Invalid) => {}
        }
    }
    // Whatever the header held, none of our cookies goes upstream.
    if let Some(upstream) = cookies::upstream_cookie(&headers, &s.names) {
        let text = String::from_utf8_lossy(upstream.as_bytes()).to_ascii_lowercase();
        for pair in text.split(';') {
            let name = pair.split('=').next().unwrap_or("").trim();
            let bare = name
                .strip_prefix("__host-")
                .or_else(|| name.strip_prefix("__secure-"))
                .unwrap_or(name);
            let ours = bare
                .strip_prefix("vouchrs_session")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'));
            assert!(
                !ours || !pair.contains('='),
                "our cookie {name:?} went upstream"
            );
        }
    }
}

fn seal_and_tamper(plaintext: &[u8], selector: u64) {
    let ring = ring(REAL_KEY);
    let sealed = envelope::seal(&ring, SESSION_COOKIE, plaintext);
    let opened = envelope::open(&ring, SESSION_COOKIE, &sealed, |p| Ok(p.to_vec()));
    if sealed.len() > envelope::MAX_SEALED_CHARS {
        assert!(opened.is_err(), "an over-long value opened");
        return;
    }
    assert_eq!(opened.as_deref(), Ok(plaintext));
    let mut raw = URL_SAFE_NO_PAD
        .decode(&sealed)
        .expect("we sealed base64url");
    let bit = (selector % (raw.len() as u64 * 8)) as usize;
    raw[bit / 8] ^= 1 << (bit % 8);
    let flipped = URL_SAFE_NO_PAD.encode(&raw);
    assert!(
        envelope::open(&ring, SESSION_COOKIE, &flipped, |_| Ok(())).is_err(),
        "flipped bit {bit} opened"
    );
    raw[bit / 8] ^= 1 << (bit % 8);
    let cut = (selector as usize) % raw.len();
    let truncated = URL_SAFE_NO_PAD.encode(&raw[..cut]);
    assert!(
        envelope::open(&ring, SESSION_COOKIE, &truncated, |_| Ok(())).is_err(),
        "cut at {cut} opened"
    );
}

fuzz_target!(|data: &[u8]| {
    let [mode, n0, n1, n2, n3, n4, n5, n6, n7, rest @ ..] = data else {
        return;
    };
    let now = u64::from_le_bytes([*n0, *n1, *n2, *n3, *n4, *n5, *n6, *n7]);
    if mode % 2 == 0 {
        open_header(rest, now);
    } else {
        seal_and_tamper(rest, now);
    }
});
