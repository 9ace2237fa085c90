//! Where to send a user after login: only a same-site relative path, else `/`.
//!
//! Browsers are generous when they read a `Location`: they drop tabs and newlines, turn `\`
//! into `/`, and read `//host` as another site. So a return path is accepted only when it is
//! plain printable ASCII, starts with exactly one `/`, and has no `\` anywhere. Anything else
//! becomes `/`: a hostile value never fails loudly, it just loses its effect.

use percent_encoding::percent_decode_str;

/// A return path that is safe to put in `Location` on our own origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

const MAX_LEN: usize = 2048;

impl ReturnTo {
    /// Validates `raw` as it arrived in a query (still percent-encoded once).
    pub fn from_query_value(raw: &str) -> Self {
        match percent_decode_str(raw).decode_utf8() {
            Ok(decoded) => Self::from_path(&decoded),
            Err(_) => Self::root(),
        }
    }

    /// Validates an already decoded path-and-query.
    pub fn from_path(path: &str) -> Self {
        let bytes = path.as_bytes();
        let safe = !path.is_empty()
            && path.len() <= MAX_LEN
            && bytes[0] == b'/'
            && bytes.get(1).is_none_or(|b| *b != b'/')
            && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\');
        if safe {
            Self(path.to_owned())
        } else {
            Self::root()
        }
    }

    pub fn root() -> Self {
        Self("/".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_survive() {
        for ok in [
            "/",
            "/app",
            "/app/page?x=1&y=2",
            "/a/@evil.com",
            "/a%2F%2Fb",
            "/search?q=//x",
        ] {
            assert_eq!(ReturnTo::from_path(ok).as_str(), ok);
        }
        assert_eq!(
            ReturnTo::from_query_value("%2Fapp%3Fx%3D1").as_str(),
            "/app?x=1"
        );
    }

    /// Hostile values by category, each combined with several hosts and encodings: every one
    /// must land on a same-site path (one leading `/`, no second `/` or `\`) or on `/`.
    #[test]
    fn a_generated_table_of_hostile_values_never_leaves_the_site() {
        let hosts = [
            "evil.com",
            "evil.com:443",
            "127.0.0.1",
            "[::1]",
            "xn--e1awd7f.com",
            "evil.com%2F",
        ];
        let templates: &[&str] = &[
            // absolute and scheme-relative
            "https://{h}",
            "http://{h}/path",
            "HTTPS://{h}",
            "javascript:alert(1)//{h}",
            "data:text/html,{h}",
            "//{h}",
            "///{h}",
            "////{h}",
            "/\\{h}",
            "\\\\{h}",
            "\\/{h}",
            "/\\/{h}",
            // encoded and double-encoded slashes and backslashes
            "%2F%2F{h}",
            "%2F%5C{h}",
            "%5C%5C{h}",
            "%252F%252F{h}",
            "/%2F{h}%2F..",
            "%2f%2f{h}",
            // control and whitespace characters browsers strip
            "/\t/{h}",
            "/\n/{h}",
            "/\r/{h}",
            "%09//{h}",
            "/%09/{h}",
            "/%0a/{h}",
            " //{h}",
            "/ /{h}",
            "%00//{h}",
            "\u{0000}//{h}",
            // userinfo tricks
            "https://app.example.com@{h}",
            "//app.example.com@{h}",
            "https:{h}",
            "https:/{h}",
            // unicode look-alikes of `/` and `.`
            "\u{ff0f}\u{ff0f}{h}",
            "/\u{ff0f}{h}",
            "\u{2215}\u{2215}{h}",
            "/\u{3002}{h}",
            // dot segments that would climb out of the path or fold into `//`
            "/..//{h}",
            "/.//{h}",
            "/a/../..//{h}",
            "/%2e%2e//{h}",
            "/.%2e/%2F{h}",
            // nested redirect parameters
            "https://{h}/?rd=/",
            "//{h}?next=/app",
            "%2F%2F{h}%3Frd%3D%2F",
        ];
        let mut checked = 0;
        for template in templates {
            for host in hosts {
                let raw = template.replace("{h}", host);
                for candidate in [ReturnTo::from_path(&raw), ReturnTo::from_query_value(&raw)] {
                    let path = candidate.as_str();
                    let b = path.as_bytes();
                    let same_site = b[0] == b'/'
                        && b.get(1).is_none_or(|c| *c != b'/' && *c != b'\\')
                        && !path.contains('\\')
                        && path.bytes().all(|c| c.is_ascii_graphic());
                    assert!(same_site, "{raw:?} became {path:?}");
                    if !raw.starts_with('/') || raw.starts_with("//") || raw.starts_with("/\\") {
                        assert_eq!(path, "/", "{raw:?} must fall back to the root");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 400, "{checked} cases");
    }
}
