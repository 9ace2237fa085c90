//! What the fuzz targets share: fixed key rings (fuzzing must be deterministic) and the
//! properties that more than one target checks.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vouchrs_proxy::session::keyring::KeyRing;
use vouchrs_proxy::session::{Lifetimes, SessionSealer};

/// The session cookie name the targets use (the default with `secure = true`).
pub const SESSION_COOKIE: &str = "__Host-vouchrs_session";
/// The key id of both rings below: the same id with another key must not open anything.
pub const KEY_ID: &str = "fz";

/// A ring with one key whose 32 bytes are all `byte`, under [`KEY_ID`].
pub fn ring(byte: u8) -> KeyRing {
    let line = format!("{KEY_ID} {}", URL_SAFE_NO_PAD.encode([byte; 32]));
    KeyRing::parse(&line).expect("a well-formed ring line")
}

/// A sealer over [`ring`]`(byte)` for [`SESSION_COOKIE`] (or another name).
pub fn sealer(byte: u8, cookie: &str) -> SessionSealer {
    SessionSealer::new(
        Arc::new(arc_swap::ArcSwap::from_pointee(ring(byte))),
        cookie.to_owned(),
        Lifetimes::from_hours(24, 2),
    )
}

/// The key byte of the ring that seals the seeds (and that every target opens with).
pub const REAL_KEY: u8 = 0x42;
/// Another key under the same id: a value it opens was not sealed by [`REAL_KEY`].
pub const OTHER_KEY: u8 = 0x43;

/// True when `text` is a path a browser resolves on our own origin: one leading `/`, no
/// `//` or `/\` start, plain printable ASCII, and, resolved by a WHATWG URL parser (what
/// browsers use) against our origin, still on our origin.
pub fn stays_on_site(text: &str) -> bool {
    let b = text.as_bytes();
    let syntactic = b.first() == Some(&b'/')
        && b.get(1).is_none_or(|c| *c != b'/' && *c != b'\\')
        && !text.contains('\\')
        && b.iter().all(|c| c.is_ascii_graphic());
    let base = url::Url::parse("https://app.example.com/base/").expect("a valid base URL");
    let resolved = base.join(text);
    syntactic
        && resolved.is_ok_and(|u| {
            u.scheme() == "https"
                && u.host_str() == Some("app.example.com")
                && u.port().is_none()
                && u.username().is_empty()
                && u.password().is_none()
        })
}
