//! The request path as skip-auth rules see it.
//!
//! Auth bypasses in the peers came from matching one spelling of a path while the upstream
//! served another (`/public/..%2Fadmin`, `/public;x/../admin`, `/public//..`). So a rule is
//! only ever matched against a *canonical* path: percent-decoded, valid UTF-8, with no dot or
//! empty segments, no `\`, `;`, encoded `/`, control characters or leftover `%`. A path that
//! is not canonical never skips authentication; it still reaches the upstream, authenticated.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The decoded path if it is canonical, else `None`.
pub fn canonical(raw_path: &str) -> Option<Cow<'_, str>> {
    if !raw_path.starts_with('/') || raw_path.contains(['\\', ';', '#']) {
        return None;
    }
    // Encoded slashes and backslashes mean different paths to different servers.
    let lower_has = |needle: &str| raw_path.to_ascii_lowercase().contains(needle);
    if raw_path.contains('%') && (lower_has("%2f") || lower_has("%5c")) {
        return None;
    }
    let decoded = percent_decode_str(raw_path).decode_utf8().ok()?;
    let clean = !decoded.contains('%') // double encoding
        && !decoded.contains(['\\', ';', '#', '?'])
        && !decoded.chars().any(char::is_control)
        && !decoded.contains("//")
        && decoded.split('/').all(|segment| segment != "." && segment != "..");
    clean.then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_decode() {
        assert_eq!(
            canonical("/static/app.js").as_deref(),
            Some("/static/app.js")
        );
        assert_eq!(
            canonical("/static/my%20file.css").as_deref(),
            Some("/static/my file.css")
        );
        assert_eq!(canonical("/static/").as_deref(), Some("/static/"));
        assert_eq!(canonical("/").as_deref(), Some("/"));
        assert_eq!(canonical("/caf%C3%A9").as_deref(), Some("/café"));
    }

    #[test]
    fn ambiguous_paths_are_not_canonical() {
        let hostile = [
            "/static/..%2Fadmin",
            "/static/%2e%2e/admin",
            "/static/%2E%2E%2Fadmin",
            "/static/../admin",
            "/static/./app.js",
            "/static//app.js",
            "//static/app.js",
            "/static\\..\\admin",
            "/static/%5c../admin",
            "/static;x/../admin",
            "/static/app.js;jsessionid=1",
            "/static/%252e%252e/admin",
            "/static/%00",
            "/static/%0d%0a",
            "/static/%c0%ae%c0%ae/admin",
            "/static/%ff",
            "/static/%",
            "/static/%2",
            "/static/x%3Fy",
            "/static/x%23y",
            "static/app.js",
            "",
        ];
        for path in hostile {
            assert_eq!(canonical(path), None, "{path}");
        }
    }
}
