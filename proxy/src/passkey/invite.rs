//! Invitations: a signed, expiring token that lets its holder register one passkey for one
//! email address, made by `vouchrs-proxy invite`.
//!
//! The token is sealed (AES-256-GCM) with the session key ring under a name no cookie uses,
//! so it cannot be forged or edited without the keys and does not reveal its contents. It is
//! single-use because a registration records its id in the credential store, in the same
//! write that adds the passkey.

use serde::{Deserialize, Serialize};

use crate::session::SessionSealer;

/// The associated data that binds a sealed value to being an invitation.
const SEAL_NAME: &str = "vouchrs-passkey-invitation";

/// What an invitation grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Random, 128 bits, base64url: recorded when used.
    pub id: String,
    /// The identity the passkey will carry (user id and email).
    pub email: String,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    #[error("the invitation is not valid")]
    Invalid,
    #[error("the invitation has expired")]
    Expired,
}

impl Invitation {
    /// A new invitation for `email` valid for `ttl_secs` from `now`, and its token.
    pub fn create(sealer: &SessionSealer, email: &str, ttl_secs: u64, now: u64) -> (Self, String) {
        let invitation = Self {
            id: super::random_id(),
            email: email.to_ascii_lowercase(),
            expires_at: now.saturating_add(ttl_secs),
        };
        let token = sealer.seal_value(SEAL_NAME, &invitation);
        (invitation, token)
    }

    /// Opens a token at `now`. Whether it was used is the store's to say.
    pub fn open(sealer: &SessionSealer, token: &str, now: u64) -> Result<Self, InviteError> {
        let invitation: Self = sealer
            .open_value(SEAL_NAME, token)
            .map_err(|_| InviteError::Invalid)?;
        if now >= invitation.expires_at {
            return Err(InviteError::Expired);
        }
        Ok(invitation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{ring_text, sealer};

    #[test]
    fn an_invitation_opens_until_it_expires_and_only_with_our_keys() {
        let s = sealer(&ring_text(&["k1"]));
        let (made, token) = Invitation::create(&s, "Bob@Example.com", 3600, 1000);
        assert_eq!(made.email, "bob@example.com");
        assert_eq!(Invitation::open(&s, &token, 4599), Ok(made));
        assert_eq!(
            Invitation::open(&s, &token, 4600),
            Err(InviteError::Expired)
        );
        let other = sealer(&ring_text(&["k1"]));
        assert_eq!(
            Invitation::open(&other, &token, 1000),
            Err(InviteError::Invalid)
        );
        // A session cookie is no invitation, even though the same keys sealed it.
        let session = s.start("u".into(), None, vec![], "m".into(), 1000);
        assert_eq!(
            Invitation::open(&s, &s.seal(&session), 1000),
            Err(InviteError::Invalid)
        );
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Invitation::open(&s, std::str::from_utf8(&tampered).unwrap(), 1000),
            Err(InviteError::Invalid)
        );
    }
}
