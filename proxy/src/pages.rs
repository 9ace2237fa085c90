//! The HTML pages the proxy shows people: sign-in, access denied, sign-out confirmation and
//! signed-out. Plain HTML and inline CSS (no JavaScript, so OIDC works without it), labelled
//! controls, visible focus, AA contrast. Everything user- or provider-supplied is escaped.
//!
//! Branding: with `auth.templates_dir`, a file `sign_in.html`, `denied.html`, `sign_out.html`
//! or `signed_out.html` there replaces the built-in body of that page; `{{content}}` in it
//! is replaced by the page's generated content (messages, buttons, forms).

use std::fmt::Write;
use std::path::Path;

use http::StatusCode;

use crate::web::respond::{ProxyBody, page};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f5f7;color:#1b1d21;margin:0}\
main{max-width:26rem;margin:10vh auto;background:#fff;border-radius:12px;padding:2rem;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin:0 0 1rem}p{line-height:1.5}\
.button{display:block;width:100%;box-sizing:border-box;margin:.6rem 0;padding:.75rem 1rem;border-radius:8px;border:1px solid #1f4fd1;\
background:#1f4fd1;color:#fff;font-size:1rem;text-align:center;text-decoration:none;cursor:pointer}\
.button.secondary{background:#fff;color:#1f4fd1}\
.button:focus-visible,a:focus-visible{outline:3px solid #f2b01e;outline-offset:2px}\
.error{background:#fdecea;color:#8a1c13;border-radius:8px;padding:.75rem 1rem}\
.note{color:#4a4f57;font-size:.9rem}";

/// Loaded once at startup: the built-in or branded shell of each page.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    sign_in: Option<String>,
    denied: Option<String>,
    sign_out: Option<String>,
    signed_out: Option<String>,
    /// Show the passkey button on the sign-in page.
    pub passkeys: bool,
}

impl Templates {
    /// Reads any branded templates present in `dir`.
    pub fn load(dir: Option<&Path>) -> std::io::Result<Self> {
        let Some(dir) = dir else {
            return Ok(Self::default());
        };
        let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        Ok(Self {
            sign_in: read("sign_in.html")?,
            denied: read("denied.html")?,
            sign_out: read("sign_out.html")?,
            signed_out: read("signed_out.html")?,
            passkeys: false,
        })
    }

    fn render(&self, branded: &Option<String>, title: &str, content: &str) -> String {
        match branded {
            Some(template) => template.replace("{{content}}", content),
            None => format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
                 <title>{title}</title><style>{STYLE}</style></head><body><main>{content}</main></body></html>"
            ),
        }
    }

    /// The sign-in page: one button per provider, an optional error above them.
    pub fn sign_in(
        &self,
        prefix: &str,
        providers: &[(&str, &str)],
        return_to: &str,
        error: Option<&str>,
    ) -> Response {
        let mut c = String::from("<h1>Sign in</h1>");
        if let Some(error) = error {
            let _ = write!(c, "<p class=\"error\" role=\"alert\">{}</p>", escape(error));
        }
        if providers.is_empty() {
            c.push_str("<p>No sign-in method is configured for this application.</p>");
        }
        for (name, display) in providers {
            let _ = write!(
                c,
                "<a class=\"button\" href=\"{prefix}/sign_in?provider={}&amp;rd={}\">Continue with {}</a>",
                encode(name),
                encode(return_to),
                escape(display)
            );
        }
        if self.passkeys {
            // Hidden until the script runs: without JavaScript there is no passkey login.
            let _ = write!(
                c,
                "<form data-passkey-login data-rd=\"{}\" hidden>\
                 <label for=\"pk-email\" class=\"note\">Email (optional, for a passkey without a saved account)</label>\
                 <input id=\"pk-email\" name=\"email\" type=\"email\" autocomplete=\"username webauthn\">\
                 <button class=\"button secondary\" type=\"submit\">Sign in with a passkey</button></form>\
                 <p class=\"error\" role=\"alert\" tabindex=\"-1\" data-passkey-error hidden></p>\
                 <script src=\"{prefix}/passkey/passkey.js\" defer></script>",
                escape(return_to)
            );
        }
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let reply = html(status, self.render(&self.sign_in, "Sign in", &c));
        if self.passkeys {
            return with_own_scripts(reply);
        }
        reply
    }

    /// The 403 page: which account was refused, why, and how to sign out.
    pub fn denied(&self, prefix: &str, account: &str, reason: &str) -> Response {
        let c = format!(
            "<h1>Access denied</h1><p>You signed in as <strong>{}</strong>, and {}.</p>\
             <p>To use another account, sign out first.</p>\
             <form method=\"post\" action=\"{prefix}/oauth2/sign_out\"><button class=\"button\" type=\"submit\">Sign out</button></form>",
            escape(account),
            escape(reason)
        );
        html(
            StatusCode::FORBIDDEN,
            self.render(&self.denied, "Access denied", &c),
        )
    }

    /// GET of the sign-out route: a confirmation form that POSTs back.
    pub fn sign_out(&self, prefix: &str) -> Response {
        let c = format!(
            "<h1>Sign out?</h1><p>You will be signed out of this application and, where supported, of your identity provider.</p>\
             <form method=\"post\" action=\"{prefix}/oauth2/sign_out\"><button class=\"button\" type=\"submit\">Sign out</button></form>\
             <a class=\"button secondary\" href=\"/\">Cancel</a>"
        );
        html(StatusCode::OK, self.render(&self.sign_out, "Sign out", &c))
    }

    pub fn signed_out(&self, prefix: &str) -> Response {
        let c = format!(
            "<h1>Signed out</h1><p>You are signed out.</p><a class=\"button\" href=\"{prefix}/sign_in\">Sign in again</a>"
        );
        html(
            StatusCode::OK,
            self.render(&self.signed_out, "Signed out", &c),
        )
    }
}

impl Templates {
    /// A logged-in user's passkeys: name, created, last used, a remove button each, and a
    /// form to add one.
    pub fn passkey_list(
        &self,
        prefix: &str,
        account: &str,
        list: &[crate::passkey::store::StoredCredential],
        error: Option<&str>,
    ) -> Response {
        let mut c = format!(
            "<h1>Your passkeys</h1><p class=\"note\">Signed in as <strong>{}</strong>.</p>",
            escape(account)
        );
        if let Some(error) = error {
            let _ = write!(c, "<p class=\"error\" role=\"alert\">{}</p>", escape(error));
        }
        if list.is_empty() {
            c.push_str("<p>You have no passkeys yet.</p>");
        } else {
            c.push_str("<table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Created</th><th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"note\">Action</span></th></tr></thead><tbody>");
            for p in list {
                let _ = write!(
                    c,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"{prefix}/passkey/remove\">\
                     <input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" aria-label=\"Remove passkey {}\">Remove</button></form></td></tr>",
                    escape(&p.name),
                    utc_minute(p.created),
                    p.last_used.map_or_else(|| "never".to_owned(), utc_minute),
                    escape(&p.id),
                    escape(&p.name),
                );
            }
            c.push_str("</tbody></table>");
        }
        c.push_str(&register_form(prefix, "", "Add a passkey"));
        let _ = write!(
            c,
            "<a class=\"button secondary\" href=\"/\">Back to the application</a>"
        );
        with_own_scripts(html(StatusCode::OK, self.render(&None, "Passkeys", &c)))
    }

    /// An invitation: register a passkey for `email`.
    pub fn passkey_invitation(&self, prefix: &str, email: &str, token: &str) -> Response {
        let mut c = format!(
            "<h1>Create your passkey</h1><p>This invitation lets you create a passkey for <strong>{}</strong>. \
             You can then sign in with it, without a password.</p>",
            escape(email)
        );
        c.push_str(&register_form(prefix, token, "Create passkey"));
        with_own_scripts(html(
            StatusCode::OK,
            self.render(&None, "Create your passkey", &c),
        ))
    }

    /// A short page with one message (a refused invitation).
    pub fn passkey_message(&self, prefix: &str, status: StatusCode, message: &str) -> Response {
        let c = format!(
            "<h1>Passkey</h1><p class=\"error\" role=\"alert\">{}</p><a class=\"button\" href=\"{prefix}/sign_in\">Sign in</a>",
            escape(message)
        );
        html(status, self.render(&None, "Passkey", &c))
    }
}

/// The add-a-passkey form; the script does the WebAuthn call on submit.
fn register_form(prefix: &str, invitation: &str, label: &str) -> String {
    let data = if invitation.is_empty() {
        String::new()
    } else {
        format!(" data-invitation=\"{}\"", escape(invitation))
    };
    format!(
        "<form data-passkey-register{data}><label for=\"pk-name\">Passkey name</label>\
         <input id=\"pk-name\" name=\"name\" maxlength=\"64\" value=\"Passkey\" required>\
         <button class=\"button\" type=\"submit\">{label}</button></form>\
         <p class=\"error\" role=\"alert\" tabindex=\"-1\" data-passkey-error hidden></p>\
         <script src=\"{prefix}/passkey/passkey.js\" defer></script>"
    )
}

/// Pages that load our passkey script: the usual CSP plus our own origin's scripts and
/// fetches. Still no inline script.
fn with_own_scripts(mut reply: Response) -> Response {
    reply.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    reply
}

/// `2026-12-04 06:35 UTC` from Unix seconds.
fn utc_minute(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil-from-days (Howard Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02} UTC")
}

type Response = http::Response<ProxyBody>;

fn html(status: StatusCode, body: String) -> Response {
    page(status, "text/html; charset=utf-8", body)
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_sign_in_page_lists_providers_and_escapes_everything() {
        let t = Templates::default();
        let r = t.sign_in(
            "/auth",
            &[("corp", "Corp <SSO>"), ("google", "Google")],
            "/a?b=1",
            Some("Bad & sad"),
        );
        assert_eq!(r.status(), 400);
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let text = body(r).await;
        assert!(text.contains("href=\"/auth/sign_in?provider=corp&amp;rd=%2Fa%3Fb%3D1\""));
        assert!(text.contains("Continue with Corp &lt;SSO&gt;"));
        assert!(text.contains("role=\"alert\">Bad &amp; sad</p>"));
        assert!(text.contains("<html lang=\"en\">"));
    }

    #[tokio::test]
    async fn the_denied_page_names_the_account_safely() {
        let r = Templates::default().denied(
            "/auth",
            "<script>x</script>@evil",
            "it is not on the allow-list",
        );
        assert_eq!(r.status(), 403);
        let text = body(r).await;
        assert!(text.contains("&lt;script&gt;x&lt;/script&gt;@evil"));
        assert!(!text.contains("<script>"));
        assert!(text.contains("action=\"/auth/oauth2/sign_out\""));
    }

    #[tokio::test]
    async fn passkey_pages_load_our_script_only_and_escape_names() {
        let t = Templates {
            passkeys: true,
            ..Templates::default()
        };
        let r = t.sign_in("/auth", &[("a", "A")], "/x", None);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"));
        assert_eq!(script_src, Some("script-src 'self'"), "{csp}");
        let text = body(r).await;
        assert!(text.contains("<script src=\"/auth/passkey/passkey.js\" defer></script>"));
        assert!(text.contains("data-rd=\"/x\""));
        assert_eq!(text.matches("<script").count(), 1, "no inline script");

        let passkey = crate::passkey::store::fixture_passkey();
        let stored = crate::passkey::store::StoredCredential {
            id: "AAEC".into(),
            user: "u".into(),
            email: None,
            groups: vec![],
            user_handle: String::new(),
            name: "<img src=x>".into(),
            created: 1_796_358_900,
            last_used: None,
            invitation: None,
            passkey,
        };
        let text = body(t.passkey_list("/auth", "a@example.com", &[stored], None)).await;
        assert!(text.contains("&lt;img src=x&gt;") && !text.contains("<img"));
        assert!(text.contains("2026-12-04 04:35 UTC") && text.contains("never"));
        assert!(text.contains("action=\"/auth/passkey/remove\""));
    }

    #[tokio::test]
    async fn branded_templates_wrap_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sign_in.html"),
            "<html><body class=brand>{{content}}</body></html>",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let text = body(t.sign_in("/auth", &[("a", "A")], "/", None)).await;
        assert!(text.starts_with("<html><body class=brand><h1>Sign in</h1>"));
        let default = body(t.signed_out("/auth")).await;
        assert!(
            default.contains("<main>"),
            "pages without a template keep the built-in shell"
        );
    }
}
