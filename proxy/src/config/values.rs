//! Newtypes for config values: each can only hold a valid value, so the rest of the proxy
//! never re-checks them, and a bad value fails at load time naming its key.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written the human way in TOML (`"5s"`, `"250ms"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        humantime::parse_duration(&text)
            .map(Self)
            .map_err(|e| format!("`{text}` is not a duration like \"5s\" or \"250ms\": {e}"))
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

/// An HTTP header name as configured (kept in lowercase, the form HTTP/2 requires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderNameText(String);

impl HeaderNameText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HeaderNameText {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if valid {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{text}` is not a header name (letters, digits and `-`, at most 64)"
            ))
        }
    }
}

impl From<HeaderNameText> for String {
    fn from(h: HeaderNameText) -> String {
        h.0
    }
}

/// The base name of our cookies. The session cookie carries it (with the `__Host-` prefix
/// when cookies are secure); login-state cookies of later stages are `NAME_suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CookieName(String);

impl CookieName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CookieName {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = (1..=40).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !text.to_ascii_lowercase().starts_with("__");
        if valid {
            Ok(Self(text))
        } else {
            Err(format!(
                "`{text}` is not a cookie name (1-40 letters, digits, `_` or `-`, not starting with `__`: the prefix is added for you)"
            ))
        }
    }
}

impl From<CookieName> for String {
    fn from(c: CookieName) -> String {
        c.0
    }
}

/// Where the application lives: `http://` or `https://`, a host, an optional port, no path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpstreamUrl {
    text: String,
    pub https: bool,
    /// `host:port` or `host` as written.
    pub authority: String,
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{text}` must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let valid = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !valid {
            return Err(format!(
                "`{text}` must be scheme://host[:port] with no path, query or user info"
            ));
        }
        Ok(Self {
            authority: authority.to_owned(),
            https,
            text,
        })
    }
}

impl From<UpstreamUrl> for String {
    fn from(u: UpstreamUrl) -> String {
        u.text
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The path prefix under which the proxy serves its own routes (`/auth/sign_in`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuthPrefix(String);

impl AuthPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AuthPrefix {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = text.len() >= 2
            && text.starts_with('/')
            && !text.ends_with('/')
            && !text.contains("//")
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            && !text.split('/').any(|seg| seg == "." || seg == "..");
        if valid {
            Ok(Self(text))
        } else {
            Err(format!(
                "`{text}` must be a plain absolute path like \"/auth\" with no trailing slash"
            ))
        }
    }
}

impl From<AuthPrefix> for String {
    fn from(p: AuthPrefix) -> String {
        p.0
    }
}

/// A path that skips authentication: `"/exact"` or a prefix `"/static/*"`. It is matched
/// against the normalized request path only (see `path.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathRule {
    text: String,
}

impl PathRule {
    /// True when `path` (already normalized) is covered by this rule.
    pub fn matches(&self, path: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.text,
        }
    }
}

impl TryFrom<String> for PathRule {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let body = text.strip_suffix('*').unwrap_or(&text);
        let valid = body.starts_with('/')
            && !body.contains('*')
            && !body.contains("//")
            && !body.split('/').any(|seg| seg == "." || seg == "..")
            && body.bytes().all(|b| b.is_ascii_graphic() && !b"%?#\\;".contains(&b))
            // "/*" would switch authentication off for everything: say so explicitly instead.
            && body != "/";
        if valid {
            Ok(Self { text })
        } else {
            Err(format!(
                "`{text}` must be a decoded absolute path (\"/health\") or prefix (\"/static/*\"); no `%`, `?`, `#`, `\\`, `;`, dot segments, and not \"/*\""
            ))
        }
    }
}

impl From<PathRule> for String {
    fn from(p: PathRule) -> String {
        p.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        let d = HumanDuration::try_from("1m 30s".to_owned()).unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        assert_eq!(String::from(d), "1m 30s");
        assert!(HumanDuration::try_from("soon".to_owned()).is_err());
    }

    #[test]
    fn header_names_are_lowercased_and_checked() {
        let h = HeaderNameText::try_from("X-Auth-Request-User".to_owned()).unwrap();
        assert_eq!(h.as_str(), "x-auth-request-user");
        for bad in ["", "X Auth", "X_Auth", "X:Auth"] {
            assert!(HeaderNameText::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_urls_have_no_path() {
        let u = UpstreamUrl::try_from("https://app.internal:8443/".to_owned()).unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "app.internal:8443");
        for bad in [
            "ftp://x",
            "http://",
            "http://a/b",
            "http://u@h",
            "http://h?q",
        ] {
            assert!(UpstreamUrl::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_rules_match_exact_or_prefix() {
        let exact = PathRule::try_from("/health".to_owned()).unwrap();
        assert!(exact.matches("/health"));
        assert!(!exact.matches("/health/x"));
        let prefix = PathRule::try_from("/static/*".to_owned()).unwrap();
        assert!(prefix.matches("/static/app.js"));
        assert!(!prefix.matches("/staticx"));
        for bad in ["/*", "static", "/a/../b", "/a%2f", "/a;b", "/a*b", "/a\\b"] {
            assert!(PathRule::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn cookie_names_leave_prefixes_to_us() {
        assert!(CookieName::try_from("vouchrs_session".to_owned()).is_ok());
        for bad in ["", "__Host-x", "a b", "a;b"] {
            assert!(CookieName::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
