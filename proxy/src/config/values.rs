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

/// Implements serde's string form for a newtype with `parse` and `as_str`.
macro_rules! text_newtype {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A provider's short name: `[a-z0-9-]`, 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);
text_newtype!(ProviderName);

impl ProviderName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "`{text}` must be 1-32 lowercase letters, digits or `-`"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute URL the proxy talks to or sends browsers to: `https://`, or `http://` on a
/// loopback host for development. No user info, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderUrl(String);
text_newtype!(ProviderUrl);

impl ProviderUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| {
                text.strip_prefix("http://")
                    .filter(|rest| is_loopback_authority(rest))
            })
            .ok_or_else(|| format!("`{text}` must be https:// (http:// only on localhost)"))?;
        let authority = rest.split('/').next().unwrap_or("");
        let valid = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            && rest
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"?#@\\".contains(&b));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "`{text}` must be scheme://host[:port][/path] with no user info, query or fragment"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Where users reach the gateway, e.g. `https://app.example.com` (no path): the base of the
/// OIDC redirect URI and of absolute links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicUrl(String);
text_newtype!(PublicUrl);

impl PublicUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.strip_suffix('/').unwrap_or(text);
        let url = ProviderUrl::parse(trimmed)?;
        if url.0.splitn(4, '/').nth(3).is_some() {
            return Err(format!("`{text}` must have no path"));
        }
        Ok(Self(url.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email domain in lowercase ASCII (IDNs in punycode): dot-separated labels of letters,
/// digits and inner hyphens, at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailDomain(String);
text_newtype!(EmailDomain);

impl EmailDomain {
    pub fn parse(text: &str) -> Result<Self, String> {
        let labels: Vec<&str> = text.split('.').collect();
        let valid = text.len() <= 253
            && labels.len() >= 2
            && labels.iter().all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if valid {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{text}` is not a plain email domain (ASCII labels, punycode for IDNs)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address parsed strictly: exactly one `@`, an unquoted ASCII local part of the
/// common characters with no empty dot segments, and an [`EmailDomain`]. Quoted local parts,
/// comments, percent-encoding, whitespace and non-ASCII look-alikes are refused, not guessed at.
/// Stored in lowercase, so comparisons are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);
text_newtype!(EmailAddress);

impl EmailAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = || {
            Err(format!(
                "`{}` is not a plain email address",
                text.escape_debug()
            ))
        };
        let mut parts = text.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return refuse();
        };
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&'*+/=?^_`{|}~.-".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        match (local_ok, EmailDomain::parse(domain)) {
            (true, Ok(domain)) => Ok(Self(format!("{}@{}", local.to_ascii_lowercase(), domain.0))),
            _ => refuse(),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn domain(&self) -> &str {
        // Invariant: parse guarantees exactly one `@`.
        self.0.rsplit('@').next().unwrap_or("")
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

    #[test]
    fn emails_are_parsed_strictly() {
        let ok = EmailAddress::parse("Alice.B+tag@Example.COM").unwrap();
        assert_eq!(ok.as_str(), "alice.b+tag@example.com");
        assert_eq!(ok.domain(), "example.com");
        let hostile = [
            "a@b@example.com",
            "\"a@b\"@example.com",
            "alice@example.com.",
            "alice@example..com",
            "alice@-example.com",
            "alice%40evil.com@example.com",
            "alice@exa%6dple.com",
            "alice @example.com",
            "alice@example.com ",
            "alice@exаmple.com",
            "alice@localhost",
            ".alice@example.com",
            "al..ice@example.com",
            "alice(comment)@example.com",
            "alice@[127.0.0.1]",
            "alice@example.com\n",
            "@example.com",
            "alice@",
            "",
        ];
        for text in hostile {
            assert!(EmailAddress::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn provider_urls_need_https_except_on_loopback() {
        for ok in [
            "https://idp.example.com",
            "https://login.microsoftonline.com/common/v2.0",
            "http://localhost:4000",
            "http://127.0.0.1:9/x",
        ] {
            assert!(ProviderUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://localhost.evil.com",
            "https://u@idp",
            "https://idp/?q",
            "ftp://x",
        ] {
            assert!(ProviderUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(PublicUrl::parse("https://app.example.com/").is_ok());
        assert!(PublicUrl::parse("https://app.example.com/app").is_err());
    }
}
