//! Who may get in: the allow-lists of the config applied to an authenticated identity.
//! Pure and cheap; checked at login (with every ID token claim) and whenever a session cookie
//! is opened (with what the session holds).

use serde_json::{Map, Value};

use crate::config::{AccessRules, EmailAddress};

/// Why an authenticated user was turned away (shown to them on the 403 page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("this account is not on the allow-list")]
    NotListed,
    #[error("the provider has not verified this account's email address")]
    EmailUnverified,
    #[error("a required claim is missing or has another value")]
    ClaimMismatch,
}

impl Denied {
    pub fn label(self) -> &'static str {
        match self {
            Self::NotListed => "not_listed",
            Self::EmailUnverified => "email_unverified",
            Self::ClaimMismatch => "claim_mismatch",
        }
    }
}

impl AccessRules {
    fn lists_anyone(&self) -> bool {
        !self.allowed_emails.is_empty()
            || !self.allowed_domains.is_empty()
            || !self.allowed_groups.is_empty()
    }

    /// Checks an identity: any allow-list match admits (when lists are set).
    pub fn admits(&self, email: Option<&EmailAddress>, groups: &[String]) -> Result<(), Denied> {
        if !self.lists_anyone() {
            return Ok(());
        }
        let by_email = email.is_some_and(|e| {
            self.allowed_emails.contains(e)
                || self
                    .allowed_domains
                    .iter()
                    .any(|d| d.as_str() == e.domain())
        });
        let by_group = groups.iter().any(|g| self.allowed_groups.contains(g));
        if by_email || by_group {
            Ok(())
        } else {
            Err(Denied::NotListed)
        }
    }

    /// Checks the required claims of an ID token: each must equal the value, or be an array
    /// holding it.
    pub fn claims_match(&self, claims: &Map<String, Value>) -> Result<(), Denied> {
        let matches = |name: &String, want: &String| match claims.get(name) {
            Some(Value::String(s)) => s == want,
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(want)),
            Some(Value::Bool(b)) => b.to_string() == *want,
            _ => false,
        };
        if self
            .required_claims
            .iter()
            .all(|(name, want)| matches(name, want))
        {
            Ok(())
        } else {
            Err(Denied::ClaimMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmailDomain;

    fn rules() -> AccessRules {
        AccessRules {
            allowed_emails: vec![EmailAddress::parse("boss@partner.org").unwrap()],
            allowed_domains: vec![EmailDomain::parse("example.com").unwrap()],
            allowed_groups: vec!["ops".into()],
            required_claims: [("tid".to_owned(), "t1".to_owned())].into(),
        }
    }

    fn email(text: &str) -> EmailAddress {
        EmailAddress::parse(text).unwrap()
    }

    #[test]
    fn any_list_admits() {
        let r = rules();
        assert_eq!(r.admits(Some(&email("a@example.com")), &[]), Ok(()));
        assert_eq!(r.admits(Some(&email("BOSS@partner.org")), &[]), Ok(()));
        assert_eq!(r.admits(None, &["ops".into()]), Ok(()));
        assert_eq!(
            r.admits(Some(&email("a@sub.example.com")), &[]),
            Err(Denied::NotListed),
            "no subdomains"
        );
        assert_eq!(
            r.admits(Some(&email("a@example.com.evil.org")), &[]),
            Err(Denied::NotListed)
        );
        assert_eq!(
            r.admits(Some(&email("other@partner.org")), &["dev".into()]),
            Err(Denied::NotListed)
        );
        assert_eq!(r.admits(None, &[]), Err(Denied::NotListed));
        assert_eq!(
            AccessRules::default().admits(None, &[]),
            Ok(()),
            "no lists: every authenticated user"
        );
    }

    #[test]
    fn required_claims_must_all_match() {
        let r = rules();
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            r.claims_match(&claims(serde_json::json!({"tid": "t1"}))),
            Ok(())
        );
        assert_eq!(
            r.claims_match(&claims(serde_json::json!({"tid": ["t0", "t1"]}))),
            Ok(())
        );
        assert_eq!(
            r.claims_match(&claims(serde_json::json!({"tid": "t2"}))),
            Err(Denied::ClaimMismatch)
        );
        assert_eq!(
            r.claims_match(&claims(serde_json::json!({}))),
            Err(Denied::ClaimMismatch)
        );
    }
}
