//! Sessions: who the user is and until when, sealed into a cookie value.
//!
//! This module is the only one that turns session values into cookie text and back; it knows
//! nothing of HTTP headers. Time is always passed in (`now` in Unix seconds), which keeps tests
//! and fuzzing deterministic.

pub mod cache;
pub mod envelope;
pub mod keyring;

use serde::{Deserialize, Serialize};

use envelope::Unsealed;
use keyring::{KeyRing, SharedKeyRing};

/// The identity a cookie carries. Kept small: a typical session seals to ~250 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Stable user id (the ID token's `sub`, or the passkey's user).
    pub user: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// How the user logged in, e.g. `oidc:google` or `passkey`.
    pub method: String,
    /// When the user logged in.
    pub auth_time: u64,
    /// When this cookie was sealed (renewal restarts it).
    pub issued_at: u64,
    /// After this second the cookie is refused.
    pub expires_at: u64,
    /// What an OIDC login keeps for refresh and logout; `None` for other logins.
    pub tokens: Option<ProviderTokens>,
}

impl Session {
    /// The credential a passkey session was started with (`method` is `passkey:ID`). Kept in
    /// `method` so the sealed layout, and every cookie already issued, stays as it was.
    pub fn passkey_credential(&self) -> Option<&str> {
        self.method.strip_prefix("passkey:")
    }
}

/// Provider tokens sealed into an OIDC session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTokens {
    /// The provider that issued them.
    pub provider: String,
    /// Present when refresh is enabled and the provider issued one.
    pub refresh_token: Option<String>,
    /// When the access token expires: refresh is due shortly before.
    pub access_expires_at: u64,
    /// Kept only when the provider supports RP-initiated logout (`id_token_hint`).
    pub id_token: Option<String>,
}

/// Why a cookie gave no session. `Invalid` covers every failure to open, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("session expired")]
    Expired,
    #[error("session cookie invalid")]
    Invalid,
}

impl From<Unsealed> for Rejected {
    fn from(_: Unsealed) -> Self {
        Rejected::Invalid
    }
}

/// Lifetimes from the config (`SESSION_DURATION_HOURS`, `SESSION_REFRESH_HOURS`).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub duration_secs: u64,
    pub refresh_secs: u64,
}

impl Lifetimes {
    pub fn from_hours(duration_hours: u32, refresh_hours: u32) -> Self {
        Self {
            duration_secs: u64::from(duration_hours) * 3600,
            refresh_secs: u64::from(refresh_hours) * 3600,
        }
    }
}

/// Seals and opens session cookies with the live key ring.
#[derive(Clone)]
pub struct SessionSealer {
    ring: SharedKeyRing,
    cookie_name: String,
    lifetimes: Lifetimes,
}

impl SessionSealer {
    pub fn new(ring: SharedKeyRing, cookie_name: String, lifetimes: Lifetimes) -> Self {
        Self {
            ring,
            cookie_name,
            lifetimes,
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The ring in force now (cheap: an atomic load).
    pub fn ring(&self) -> arc_swap::Guard<std::sync::Arc<KeyRing>> {
        self.ring.load()
    }

    /// Starts a session for `user` at `now`, lasting the configured duration.
    pub fn start(
        &self,
        user: String,
        email: Option<String>,
        groups: Vec<String>,
        method: String,
        now: u64,
    ) -> Session {
        Session {
            user,
            email,
            groups,
            method,
            auth_time: now,
            issued_at: now,
            expires_at: now + self.lifetimes.duration_secs,
            tokens: None,
        }
    }

    /// The cookie value for `session`.
    pub fn seal(&self, session: &Session) -> String {
        self.seal_value(&self.cookie_name, session)
    }

    /// Seals any small value (login state, ceremony state) for the cookie `cookie_name`.
    pub fn seal_value<T: Serialize>(&self, cookie_name: &str, value: &T) -> String {
        // Invariant: postcard serializes plain structs of strings and integers into a Vec.
        let bytes = postcard::to_allocvec(value).expect("value serializes");
        envelope::seal(&self.ring.load(), cookie_name, &bytes)
    }

    /// Opens a value sealed by [`seal_value`](Self::seal_value) for the same cookie name.
    pub fn open_value<T: serde::de::DeserializeOwned>(
        &self,
        cookie_name: &str,
        sealed: &str,
    ) -> Result<T, Rejected> {
        Ok(envelope::open(
            &self.ring.load(),
            cookie_name,
            sealed,
            |plain| postcard::from_bytes(plain).map_err(|_| Unsealed::Invalid),
        )?)
    }

    /// Opens a cookie value at `now` with the ring in force.
    pub fn open(&self, sealed: &str, now: u64) -> Result<Session, Rejected> {
        self.open_with(&self.ring.load(), sealed, now)
    }

    /// Opens a cookie value at `now` with a given ring (callers that cache by ring generation
    /// load the ring once and use it for both).
    pub fn open_with(&self, ring: &KeyRing, sealed: &str, now: u64) -> Result<Session, Rejected> {
        let session: Session = envelope::open(ring, &self.cookie_name, sealed, |plain| {
            postcard::from_bytes(plain).map_err(|_| Unsealed::Invalid)
        })?;
        if now >= session.expires_at {
            return Err(Rejected::Expired);
        }
        Ok(session)
    }

    /// A renewed copy when the session is older than the refresh interval (sliding renewal),
    /// or `None` when it is fresh enough.
    pub fn renewal(&self, session: &Session, now: u64) -> Option<Session> {
        let age = now.saturating_sub(session.issued_at);
        (age >= self.lifetimes.refresh_secs).then(|| Session {
            issued_at: now,
            expires_at: now + self.lifetimes.duration_secs,
            ..session.clone()
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keyring::{KeyId, generate_line};
    use std::sync::Arc;

    pub fn ring_text(ids: &[&str]) -> String {
        ids.iter()
            .map(|id| generate_line(&KeyId::parse(id).unwrap()).unwrap() + "\n")
            .collect()
    }

    pub fn sealer(ring_text: &str) -> SessionSealer {
        let ring = Arc::new(arc_swap::ArcSwap::from_pointee(
            KeyRing::parse(ring_text).unwrap(),
        ));
        SessionSealer::new(
            ring,
            "__Host-vouchrs_session".into(),
            Lifetimes::from_hours(24, 2),
        )
    }

    const NOW: u64 = 1_800_000_000;

    fn alice(s: &SessionSealer) -> Session {
        s.start(
            "alice".into(),
            Some("alice@example.com".into()),
            vec!["dev".into(), "ops".into()],
            "oidc:test".into(),
            NOW,
        )
    }

    #[test]
    fn a_session_round_trips_and_stays_compact() {
        let s = sealer(&ring_text(&["k1"]));
        let session = alice(&s);
        let sealed = s.seal(&session);
        assert!(sealed.len() < 300, "{} chars", sealed.len());
        assert_eq!(s.open(&sealed, NOW + 10).unwrap(), session);
    }

    #[test]
    fn expiry_is_enforced_inside_the_seal() {
        let s = sealer(&ring_text(&["k1"]));
        let sealed = s.seal(&alice(&s));
        assert_eq!(s.open(&sealed, NOW + 24 * 3600 - 1).map(|_| ()), Ok(()));
        assert_eq!(s.open(&sealed, NOW + 24 * 3600), Err(Rejected::Expired));
    }

    #[test]
    fn rotation_keeps_old_cookies_and_removal_ends_them() {
        let old = ring_text(&["k1"]);
        let s = sealer(&old);
        let sealed_with_k1 = s.seal(&alice(&s));

        // Rotate: a new key in front, the old one still listed.
        let rotated = format!("{}{}", ring_text(&["k2"]), old);
        s.ring.store(Arc::new(KeyRing::parse(&rotated).unwrap()));
        assert!(
            s.open(&sealed_with_k1, NOW).is_ok(),
            "rotated key still opens"
        );
        let sealed_with_k2 = s.seal(&alice(&s));
        assert!(s.open(&sealed_with_k2, NOW).is_ok());

        // Prune k1: its cookies are gone, k2's live on.
        let pruned: String = rotated.lines().next().unwrap().to_owned();
        s.ring.store(Arc::new(KeyRing::parse(&pruned).unwrap()));
        assert_eq!(s.open(&sealed_with_k1, NOW), Err(Rejected::Invalid));
        assert!(s.open(&sealed_with_k2, NOW).is_ok());
    }

    #[test]
    fn a_cookie_under_another_name_does_not_open() {
        let text = ring_text(&["k1"]);
        let s = sealer(&text);
        let sealed = s.seal(&alice(&s));
        let other = SessionSealer::new(s.ring.clone(), "vouchrs_session".into(), s.lifetimes);
        assert_eq!(other.open(&sealed, NOW), Err(Rejected::Invalid));
    }

    #[test]
    fn valid_ciphertext_of_a_non_session_is_invalid() {
        let s = sealer(&ring_text(&["k1"]));
        let sealed = envelope::seal(&s.ring.load(), s.cookie_name(), b"\xff\xff\xff");
        assert_eq!(s.open(&sealed, NOW), Err(Rejected::Invalid));
    }

    #[test]
    fn renewal_slides_after_the_refresh_interval() {
        let s = sealer(&ring_text(&["k1"]));
        let session = alice(&s);
        assert!(s.renewal(&session, NOW + 2 * 3600 - 1).is_none());
        let renewed = s.renewal(&session, NOW + 2 * 3600).unwrap();
        assert_eq!(renewed.issued_at, NOW + 2 * 3600);
        assert_eq!(renewed.expires_at, NOW + 26 * 3600);
        assert_eq!(renewed.auth_time, NOW);
    }
}
