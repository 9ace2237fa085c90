//! Reading our cookies out of `Cookie` headers, and writing `Set-Cookie`. Knows nothing of
//! crypto: values go in and out as text.
//!
//! "Our" cookies are the configured base name and `BASE_anything`, with or without a
//! `__Host-`/`__Secure-` prefix, in any letter case. All of them are removed before a request
//! goes upstream.

use http::header::{COOKIE, HeaderMap, HeaderValue};

/// Longest cookie value we write; a session that seals longer is split into chunks
/// `NAME_0`, `NAME_1`, ... (browsers keep about 4 KiB per cookie).
pub const CHUNK_CHARS: usize = 3800;
/// At most this many chunks are read or written.
pub const MAX_CHUNKS: usize = 8;
/// At most this many same-named session cookies are tried (cookie tossing sends several).
pub const MAX_CANDIDATES: usize = 4;

/// The names we own, decided once from the config.
#[derive(Debug, Clone)]
pub struct CookieNames {
    /// The session cookie's full name, e.g. `__Host-vouchrs_session`.
    pub session: String,
    /// The base name without prefix, e.g. `vouchrs_session`.
    base: String,
    secure: bool,
}

impl CookieNames {
    pub fn new(base: &str, secure: bool) -> Self {
        let session = if secure {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        };
        Self {
            session,
            base: base.to_owned(),
            secure,
        }
    }

    /// True for every cookie name in our family.
    fn is_ours(&self, name: &[u8]) -> bool {
        // Upstream parsers that trim Unicode or Latin-1 whitespace (`\u{a0}` in JavaScript's
        // `trim`) would read `\xa0__Host-NAME` as our cookie: such names are ours too.
        // Found by the session_cookie fuzz target (issue 8).
        let name = trim_non_token(name);
        let unprefixed = strip_prefix_ignore_case(name, b"__host-")
            .or_else(|| strip_prefix_ignore_case(name, b"__secure-"))
            .unwrap_or(name);
        // Case-insensitive: a look-alike of ours is stripped too, never forwarded.
        let base = self.base.as_bytes();
        strip_prefix_ignore_case(unprefixed, base)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'_')
    }

    fn chunk_index(&self, name: &[u8]) -> Option<usize> {
        let rest = name
            .strip_prefix(self.session.as_bytes())?
            .strip_prefix(b"_")?;
        match rest {
            [digit @ b'0'..=b'9'] => Some(usize::from(digit - b'0')).filter(|i| *i < MAX_CHUNKS),
            _ => None,
        }
    }
}

/// What the request's `Cookie` headers hold for us.
#[derive(Debug, Default)]
pub struct ScannedCookies<'a> {
    /// Whole session cookie values, in the order the browser sent them.
    candidates: [Option<&'a str>; MAX_CANDIDATES],
    chunks: [Option<&'a str>; MAX_CHUNKS],
    /// The `Cookie` header sent upstream must differ from the one received.
    pub needs_rewrite: bool,
}

impl<'a> ScannedCookies<'a> {
    /// Session values to try, first the whole ones, then the chunks joined (if any).
    pub fn session_values(&self) -> impl Iterator<Item = std::borrow::Cow<'a, str>> + '_ {
        let whole = self
            .candidates
            .iter()
            .flatten()
            .map(|v| std::borrow::Cow::Borrowed(*v));
        let joined = self.joined_chunks().map(std::borrow::Cow::Owned);
        whole.chain(joined)
    }

    /// Number of chunk cookies present, so a rewrite can expire the ones no longer needed.
    pub fn chunk_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_some()).count()
    }

    fn joined_chunks(&self) -> Option<String> {
        let present = self.chunks.iter().take_while(|c| c.is_some()).count();
        (present > 0).then(|| self.chunks[..present].iter().flatten().copied().collect())
    }
}

/// Scans every `Cookie` header once, without allocating.
pub fn scan<'a>(headers: &'a HeaderMap, names: &CookieNames) -> ScannedCookies<'a> {
    let mut found = ScannedCookies::default();
    let mut header_count = 0;
    for value in headers.get_all(COOKIE) {
        header_count += 1;
        for (name, val, _) in pairs(value.as_bytes()) {
            if !names.is_ours(name) {
                continue;
            }
            found.needs_rewrite = true;
            let Ok(val) = std::str::from_utf8(val) else {
                continue;
            };
            if name == names.session.as_bytes() {
                if let Some(slot) = found.candidates.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(val);
                }
            } else if let Some(i) = names.chunk_index(name) {
                found.chunks[i].get_or_insert(val);
            }
        }
    }
    // Several Cookie headers (HTTP/2 splits them) become one for an HTTP/1.1 upstream.
    found.needs_rewrite |= header_count > 1;
    found
}

/// The `Cookie` header for the upstream: every cookie but ours, joined into one header.
/// `None` when nothing is left to send.
pub fn upstream_cookie(headers: &HeaderMap, names: &CookieNames) -> Option<HeaderValue> {
    let total: usize = headers.get_all(COOKIE).iter().map(|v| v.len() + 2).sum();
    let mut kept: Vec<u8> = Vec::with_capacity(total);
    for value in headers.get_all(COOKIE) {
        for (name, _, pair) in pairs(value.as_bytes()) {
            if names.is_ours(name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    if kept.is_empty() {
        return None;
    }
    // `kept` holds bytes of valid header values joined by "; ", so this only re-checks them.
    // Boxed first: `Bytes` takes a vector with spare capacity only by allocating a header.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(kept.into_boxed_slice())).ok()
}

/// `Set-Cookie` values that store `sealed` as the session (one cookie, or chunks when it is
/// long), lasting `max_age` seconds, and expire chunks left over from before.
pub fn session_set_cookies(
    names: &CookieNames,
    sealed: &str,
    max_age: u64,
    old_chunks: usize,
) -> Vec<HeaderValue> {
    let mut out = Vec::with_capacity(1 + old_chunks);
    let mut written = 0;
    if sealed.len() <= CHUNK_CHARS {
        out.push(set_cookie(names, &names.session, sealed, max_age));
    } else {
        for (i, chunk) in sealed
            .as_bytes()
            .chunks(CHUNK_CHARS)
            .take(MAX_CHUNKS)
            .enumerate()
        {
            // Invariant: sealed values are base64url, so any byte split is valid UTF-8.
            let chunk = std::str::from_utf8(chunk).unwrap_or_default();
            out.push(set_cookie(
                names,
                &format!("{}_{i}", names.session),
                chunk,
                max_age,
            ));
            written += 1;
        }
        out.push(set_cookie(names, &names.session, "", 0));
    }
    for i in written..old_chunks.max(written) {
        out.push(set_cookie(names, &format!("{}_{i}", names.session), "", 0));
    }
    out
}

/// A `Set-Cookie` that removes the session cookie and its chunks.
pub fn clear_session(names: &CookieNames, chunks: usize) -> Vec<HeaderValue> {
    let mut out = vec![set_cookie(names, &names.session, "", 0)];
    out.extend((0..chunks).map(|i| set_cookie(names, &format!("{}_{i}", names.session), "", 0)));
    out
}

/// The `SameSite` attribute of a cookie we set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (a GET login callback), not on their POSTs.
    Lax,
    /// Sent on cross-site POSTs too (a `form_post` login callback). Requires `Secure`.
    None,
}

/// One `Set-Cookie` value with our fixed attributes: `Path=/` (required by `__Host-`),
/// `HttpOnly`, `SameSite=Lax`, and `Secure` when configured.
pub fn set_cookie(names: &CookieNames, name: &str, value: &str, max_age: u64) -> HeaderValue {
    set_cookie_with(names, name, value, max_age, SameSite::Lax)
}

/// [`set_cookie`] with another `SameSite`; `None` always adds `Secure`, as browsers require.
pub fn set_cookie_with(
    names: &CookieNames,
    name: &str,
    value: &str,
    max_age: u64,
    same_site: SameSite,
) -> HeaderValue {
    let (same_site, secure) = match same_site {
        SameSite::Lax => ("Lax", if names.secure { "; Secure" } else { "" }),
        SameSite::None => ("None", "; Secure"),
    };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    );
    // Invariant: names are checked at config load and values are base64url or empty.
    HeaderValue::from_str(&text).expect("cookie text is a valid header value")
}

/// The first value of the cookie named exactly `name`.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| pairs(value.as_bytes()))
        .find(|(n, _, _)| *n == name.as_bytes())
        .and_then(|(_, value, _)| std::str::from_utf8(value).ok())
}

/// `(name, value, whole pair)` of one `Cookie` header, trimmed; pairs without `=` are skipped.
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    // memchr finds `;` and `=` many bytes at a time: a sealed session is hundreds of bytes
    // long and this runs twice per request (scan, then the upstream's Cookie header).
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let text = rest?;
        let (pair, tail) = match memchr::memchr(b';', text) {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        rest = tail;
        Some(pair)
    })
    .filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = memchr::memchr(b'=', pair)?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii(), pair))
    })
}

/// `name` without leading and trailing bytes that cannot be part of a cookie name token:
/// ASCII whitespace and controls, and every non-ASCII byte.
fn trim_non_token(name: &[u8]) -> &[u8] {
    let junk = |b: &u8| *b >= 0x80 || b.is_ascii_whitespace() || b.is_ascii_control();
    let start = name.iter().position(|b| !junk(b)).unwrap_or(name.len());
    let end = name.iter().rposition(|b| !junk(b)).map_or(start, |i| i + 1);
    &name[start..end]
}

fn strip_prefix_ignore_case<'a>(name: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    fn names() -> CookieNames {
        CookieNames::new("vouchrs_session", true)
    }

    #[test]
    fn finds_our_session_and_strips_every_family_member() {
        let h = headers(&[
            "theme=dark; __Host-vouchrs_session=SEALED; vouchrs_session_oidc=x; __secure-VOUCHRS_SESSION=y; app=1",
        ]);
        let scan = scan(&h, &names());
        assert_eq!(scan.session_values().collect::<Vec<_>>(), ["SEALED"]);
        assert!(scan.needs_rewrite);
        assert_eq!(upstream_cookie(&h, &names()).unwrap(), "theme=dark; app=1");
    }

    #[test]
    fn leaves_other_cookies_alone_without_rewriting() {
        let h = headers(&["vouchrs=1; vouchrs_sessionx=2; session=3"]);
        let scan = scan(&h, &names());
        assert!(!scan.needs_rewrite);
        assert_eq!(scan.session_values().count(), 0);
    }

    #[test]
    fn several_headers_are_joined_and_tossed_cookies_all_tried() {
        let h = headers(&[
            "__Host-vouchrs_session=A",
            "a=1",
            "__Host-vouchrs_session=B; b=2",
        ]);
        let scan = scan(&h, &names());
        assert_eq!(scan.session_values().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(upstream_cookie(&h, &names()).unwrap(), "a=1; b=2");
        assert!(upstream_cookie(&headers(&["__Host-vouchrs_session=A"]), &names()).is_none());
    }

    #[test]
    fn long_sessions_are_chunked_and_joined_back() {
        let sealed = "x".repeat(CHUNK_CHARS * 2 + 10);
        let set = session_set_cookies(&names(), &sealed, 60, 0);
        assert_eq!(set.len(), 4, "three chunks and a cleared whole cookie");
        let cookie_header: Vec<String> = set[..3]
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        let h = headers(&[&cookie_header.join("; ")]);
        let scan = scan(&h, &names());
        assert_eq!(scan.chunk_count(), 3);
        assert_eq!(scan.session_values().collect::<Vec<_>>(), [sealed]);
    }

    #[test]
    fn a_short_session_expires_old_chunks() {
        let set = session_set_cookies(&names(), "short", 60, 2);
        let texts: Vec<_> = set.iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert!(texts[0].starts_with(
            "__Host-vouchrs_session=short; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        ));
        assert!(texts[1].starts_with("__Host-vouchrs_session_0=; Path=/; Max-Age=0"));
        assert!(texts[2].starts_with("__Host-vouchrs_session_1=;"));
    }

    #[test]
    fn names_padded_with_non_ascii_whitespace_are_ours() {
        // Regression for the session_cookie fuzz target: `\u{a0}\u{a0}__Host-vouchrs_session`
        // went upstream, where a parser that trims Unicode whitespace reads our name.
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(
                b"a=1; \xc2\xa0\xc2\xa0__Host-vouchrs_session=x; \xa0vouchrs_session_0\xa0=y; b\xa0=2",
            )
            .unwrap(),
        );
        let up = upstream_cookie(&h, &names()).unwrap();
        assert_eq!(up.as_bytes(), b"a=1; b\xa0=2");
        assert_eq!(
            scan(&h, &names()).session_values().count(),
            0,
            "padded names are stripped, never opened"
        );
    }

    #[test]
    fn malformed_pairs_are_skipped() {
        let h = headers(&[";;novalue; =x; __Host-vouchrs_session = V ;"]);
        assert_eq!(
            scan(&h, &names()).session_values().collect::<Vec<_>>(),
            ["V"]
        );
    }
}
