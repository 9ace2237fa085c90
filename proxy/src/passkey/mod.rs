//! Passkeys (WebAuthn) with webauthn-rs: registration and login ceremonies, verified against
//! stored public keys. Knows nothing of HTTP; [`routes`] carries these steps over the wire.
//!
//! Each ceremony is a pair of types consumed in order: `start_*` returns the browser's options
//! and a pending ceremony (sealed into a short-lived cookie, so it is bound to the browser that
//! started it), and `finish_*` consumes that pending ceremony with the browser's answer. A
//! ceremony id is remembered when finished, so the same pending cookie is refused a second time
//! in this process, whatever the outcome.

pub mod file_store;
pub mod invite;
#[cfg(feature = "kubernetes")]
pub mod kube_objects;
#[cfg(feature = "kubernetes")]
pub mod kube_store;
mod relying_party;
pub mod routes;
pub mod store;
// Test support only: the contract every store keeps, for the unit tests here and the
// Kubernetes store's tests against an API server (not in the default binary).
#[cfg(any(test, feature = "kubernetes"))]
#[doc(hidden)]
pub mod store_contract;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Credential, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, WebauthnError,
};
use webauthn_rs_core::proto::{AuthenticationState, RegistrationState};

use crate::config::{AccessRules, EmailAddress, ProxyConfig};
use crate::session::{Session, SessionSealer};
use invite::{Invitation, InviteError};
use relying_party::RelyingParty;
use store::{CredentialStore, StoreError, StoredCredential};

/// Why a ceremony failed. Each has a fixed metric label and a sentence for the user; details
/// go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("no session or invitation")]
    NotAllowed,
    #[error("no ceremony in progress in this browser, or it expired")]
    NoCeremony,
    #[error("this ceremony was already finished")]
    Replayed,
    #[error("the browser's answer is not well-formed")]
    Malformed,
    #[error("verification failed: {0}")]
    Verification(WebauthnError),
    #[error("signature counter went backwards: possible cloned authenticator")]
    CounterRegressed,
    #[error("unknown or removed credential")]
    UnknownCredential,
    #[error("access denied: {0}")]
    Denied(crate::access::Denied),
    #[error("invitation: {0}")]
    Invitation(InviteError),
    #[error("the invitation was already used")]
    InvitationUsed,
    #[error("this passkey is already registered")]
    Duplicate,
    #[error("credential store: {0}")]
    Store(String),
    #[error("webauthn: {0}")]
    Internal(WebauthnError),
}

impl PasskeyError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::NoCeremony => "no_ceremony",
            Self::Replayed => "replayed",
            Self::Malformed => "malformed",
            Self::Verification(_) => "verification_failed",
            Self::CounterRegressed => "counter_regressed",
            Self::UnknownCredential => "unknown_credential",
            Self::Denied(_) => "denied",
            Self::Invitation(InviteError::Expired) => "invitation_expired",
            Self::Invitation(InviteError::Invalid) => "invitation_invalid",
            Self::InvitationUsed => "invitation_used",
            Self::Duplicate => "duplicate",
            Self::Store(_) => "store_error",
            Self::Internal(_) => "internal",
        }
    }

    /// The sentence shown to the user.
    pub fn message(&self) -> &'static str {
        match self {
            Self::NotAllowed => "Sign in first, or open your invitation link, to add a passkey.",
            Self::NoCeremony | Self::Replayed => {
                "This passkey request expired or was started in another browser. Please try again."
            }
            Self::Malformed | Self::Verification(_) | Self::CounterRegressed => {
                "That passkey could not be verified."
            }
            Self::UnknownCredential => {
                "That passkey is not registered here (or was removed). Use another way to sign in."
            }
            Self::Denied(_) => "Your account is not allowed to use this application.",
            Self::Invitation(InviteError::Expired) => {
                "This invitation has expired. Ask for a new one."
            }
            Self::Invitation(InviteError::Invalid) => "This invitation link is not valid.",
            Self::InvitationUsed => "This invitation was already used. Ask for a new one.",
            Self::Duplicate => "This passkey is already registered.",
            Self::Store(_) | Self::Internal(_) => {
                "Passkeys are not available right now. Please try again shortly."
            }
        }
    }

    /// Client-side faults are 4xx; the rest 5xx.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Internal(_))
    }
}

impl From<StoreError> for PasskeyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Duplicate => Self::Duplicate,
            StoreError::InvitationUsed => Self::InvitationUsed,
            StoreError::NotFound => Self::UnknownCredential,
            StoreError::Io(text) => Self::Store(text),
        }
    }
}

/// Who a new passkey will belong to: the logged-in user, or the invited address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    pub user: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub invitation: Option<String>,
}

impl Owner {
    pub fn from_session(session: &Session) -> Self {
        Self {
            user: session.user.clone(),
            email: session.email.clone(),
            groups: session.groups.clone(),
            invitation: None,
        }
    }

    pub fn from_invitation(invitation: &Invitation) -> Self {
        Self {
            user: invitation.email.clone(),
            email: Some(invitation.email.clone()),
            groups: Vec::new(),
            invitation: Some(invitation.id.clone()),
        }
    }
}

/// A registration in progress, sealed into its cookie.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingRegistration {
    id: String,
    owner: Owner,
    name: String,
    user_handle: String,
    /// webauthn-rs-core's state as JSON (its serde form is made for self-describing formats).
    state: String,
    expires_at: u64,
}

/// A login in progress, sealed into its cookie.
#[derive(Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    id: String,
    /// Discoverable (usernameless) or allow-listed for an email hint.
    discoverable: bool,
    state: String,
    pub return_to: String,
    expires_at: u64,
}

/// A verified login: the session to seal.
pub struct LoggedIn {
    pub session: Session,
    pub return_to: String,
}

/// Passkey ceremonies against one credential store.
pub struct Passkeys {
    relying_party: RelyingParty,
    store: Arc<dyn CredentialStore>,
    access: AccessRules,
    timeout: u64,
    max_invitation_ttl: u64,
    /// Ceremony ids already finished: a pending cookie used twice is refused.
    finished: Cache<String, ()>,
}

/// Why passkeys could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum PasskeySetupError {
    #[error("passkeys: {0}")]
    Webauthn(WebauthnError),
    #[error("passkeys.store_file: {0}")]
    Store(StoreError),
    #[error("passkeys.store = \"kubernetes\": {0}")]
    Kubernetes(String),
}

impl Passkeys {
    /// `None` when passkeys are off.
    pub fn from_config(
        config: &ProxyConfig,
        store: Arc<dyn CredentialStore>,
    ) -> Result<Option<Self>, PasskeySetupError> {
        let p = &config.passkeys;
        let Some(public_url) = config.server.public_url.as_ref().filter(|_| p.enabled) else {
            return Ok(None);
        };
        // Invariant: PublicUrl only holds an absolute http(s) URL.
        let origin = Url::parse(public_url.as_str())
            .map_err(|_| PasskeySetupError::Webauthn(WebauthnError::Configuration))?;
        let rp_id = p.effective_rp_id(public_url);
        let relying_party = RelyingParty::new(&rp_id, &p.rp_name, &origin, p.user_verification)
            .map_err(PasskeySetupError::Webauthn)?;
        Ok(Some(Self {
            relying_party,
            store,
            access: config.access.clone(),
            timeout: p.ceremony_timeout.0.as_secs(),
            max_invitation_ttl: p.invitation_max_ttl.0.as_secs(),
            finished: Cache::new(65_536),
        }))
    }

    pub fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.store
    }

    pub fn max_invitation_ttl(&self) -> u64 {
        self.max_invitation_ttl
    }

    /// The per-request revocation check: does a passkey session's credential still exist?
    pub fn is_live(&self, credential: &str) -> bool {
        self.store.contains(credential)
    }

    /// Opens an invitation token and checks that it was not used.
    pub fn open_invitation(
        &self,
        sealer: &SessionSealer,
        token: &str,
        now: u64,
    ) -> Result<Invitation, PasskeyError> {
        let invitation = Invitation::open(sealer, token, now).map_err(PasskeyError::Invitation)?;
        if self.store.invitation_used(&invitation.id) {
            return Err(PasskeyError::InvitationUsed);
        }
        Ok(invitation)
    }

    /// Starts registering a passkey named `name` for `owner`.
    pub fn start_registration(
        &self,
        owner: Owner,
        name: &str,
        now: u64,
    ) -> Result<(CreationChallengeResponse, PendingRegistration), PasskeyError> {
        let existing = self.store.for_user(&owner.user);
        // One user handle per user, so an authenticator keeps one passkey per user here.
        let user_handle = match existing.first() {
            Some(c) => Uuid::parse_str(&c.user_handle)
                .map_err(|_| PasskeyError::Store("a stored user handle is not a UUID".into()))?,
            None => Uuid::from_bytes(random_bytes()),
        };
        let exclude = existing
            .iter()
            .map(|c| c.passkey.cred_id().clone())
            .collect();
        let label = owner.email.clone().unwrap_or_else(|| owner.user.clone());
        let (options, state) = self
            .relying_party
            .start_registration(user_handle, &label, exclude)
            .map_err(PasskeyError::Internal)?;
        let pending = PendingRegistration {
            id: random_id(),
            owner,
            name: clean_name(name),
            user_handle: user_handle.to_string(),
            state: to_json(&state)?,
            expires_at: now + self.timeout,
        };
        Ok((options, pending))
    }

    /// Verifies the browser's new credential and stores it.
    pub fn finish_registration(
        &self,
        pending: Option<PendingRegistration>,
        answer: &[u8],
        now: u64,
    ) -> Result<StoredCredential, PasskeyError> {
        let pending = self.take(pending, |p| (&p.id, p.expires_at), now)?;
        let state: RegistrationState =
            serde_json::from_str(&pending.state).map_err(|_| PasskeyError::NoCeremony)?;
        let answer: RegisterPublicKeyCredential =
            serde_json::from_slice(answer).map_err(|_| PasskeyError::Malformed)?;
        let passkey = self
            .relying_party
            .finish_registration(&answer, &state)
            .map_err(PasskeyError::Verification)?;
        if let Some(invitation) = &pending.owner.invitation {
            // Checked again under the store's lock by `add`; this only gives an early answer.
            if self.store.invitation_used(invitation) {
                return Err(PasskeyError::InvitationUsed);
            }
        }
        let credential = StoredCredential {
            id: URL_SAFE_NO_PAD.encode(passkey.cred_id()),
            user: pending.owner.user,
            email: pending.owner.email,
            groups: pending.owner.groups,
            user_handle: pending.user_handle,
            name: pending.name,
            created: now,
            last_used: None,
            invitation: pending.owner.invitation,
            passkey,
        };
        self.store.add(credential.clone())?;
        Ok(credential)
    }

    /// Starts a login: allow-listed for `email` when it has passkeys, else discoverable.
    pub fn start_login(
        &self,
        email: Option<&str>,
        return_to: &str,
        now: u64,
    ) -> Result<(RequestChallengeResponse, PendingLogin), PasskeyError> {
        let known = email
            .map(|e| self.store.for_email(e.trim()))
            .unwrap_or_default();
        let discoverable = known.is_empty();
        let allowed = known.into_iter().map(|c| Credential::from(c.passkey));
        let (options, state) = self
            .relying_party
            .start_login(allowed.collect())
            .map_err(PasskeyError::Internal)?;
        let pending = PendingLogin {
            id: random_id(),
            discoverable,
            state: to_json(&state)?,
            return_to: return_to.to_owned(),
            expires_at: now + self.timeout,
        };
        Ok((options, pending))
    }

    /// Verifies an assertion against the stored public key, checks the counter and the
    /// access rules, records the use, and makes the session.
    pub fn finish_login(
        &self,
        sealer: &SessionSealer,
        pending: Option<PendingLogin>,
        answer: &[u8],
        now: u64,
    ) -> Result<LoggedIn, PasskeyError> {
        let pending = self.take(pending, |p| (&p.id, p.expires_at), now)?;
        let answer: PublicKeyCredential =
            serde_json::from_slice(answer).map_err(|_| PasskeyError::Malformed)?;
        let id = URL_SAFE_NO_PAD.encode(answer.get_credential_id());
        let mut stored = self.store.get(&id).ok_or(PasskeyError::UnknownCredential)?;
        let state: AuthenticationState =
            serde_json::from_str(&pending.state).map_err(|_| PasskeyError::NoCeremony)?;
        let discovered = if pending.discoverable {
            // The user handle the authenticator returned must be the one we registered.
            let handle = answer
                .get_user_unique_id()
                .and_then(|bytes| Uuid::from_slice(bytes).ok())
                .ok_or(PasskeyError::Verification(
                    WebauthnError::InvalidUserUniqueId,
                ))?;
            if handle.to_string() != stored.user_handle {
                return Err(PasskeyError::UnknownCredential);
            }
            Some(Credential::from(stored.passkey.clone()))
        } else {
            None
        };
        let result = self
            .relying_party
            .finish_login(&answer, &state, discovered.as_ref())
            .map_err(|error| match error {
                WebauthnError::CredentialPossibleCompromise => PasskeyError::CounterRegressed,
                other => PasskeyError::Verification(other),
            })?;
        let email = stored
            .email
            .as_deref()
            .and_then(|e| EmailAddress::parse(e).ok());
        self.access
            .admits(email.as_ref(), &stored.groups)
            .map_err(PasskeyError::Denied)?;
        stored.passkey.update_credential(&result);
        stored.last_used = Some(now);
        self.store.update(stored.clone())?;
        let session = sealer.start(
            stored.user,
            stored.email,
            stored.groups,
            format!("passkey:{id}"),
            now,
        );
        Ok(LoggedIn {
            session,
            return_to: pending.return_to,
        })
    }

    /// Consumes a pending ceremony: present, not expired, and never finished before.
    fn take<T>(
        &self,
        pending: Option<T>,
        id_and_expiry: impl Fn(&T) -> (&String, u64),
        now: u64,
    ) -> Result<T, PasskeyError> {
        let pending = pending.ok_or(PasskeyError::NoCeremony)?;
        let (id, expires_at) = id_and_expiry(&pending);
        if now >= expires_at {
            return Err(PasskeyError::NoCeremony);
        }
        if self.finished.get(id).is_some() {
            return Err(PasskeyError::Replayed);
        }
        self.finished.insert(id.clone(), ());
        Ok(pending)
    }
}

/// 128 random bits, base64url.
pub fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes
}

fn to_json<T: Serialize>(value: &T) -> Result<String, PasskeyError> {
    serde_json::to_string(value).map_err(|_| PasskeyError::Internal(WebauthnError::Configuration))
}

/// A passkey label: printable, trimmed, at most 64 characters, never empty.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_owned();
    if cleaned.is_empty() {
        "Passkey".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passkey::file_store::FileStore;
    use crate::session::tests::{ring_text, sealer};
    use webauthn_rs_core::proto::{ResidentKeyRequirement, UserVerificationPolicy};

    const NOW: u64 = 1_800_000_000;

    fn passkeys(dir: &std::path::Path) -> Passkeys {
        passkeys_with(dir, "")
    }

    fn passkeys_with(dir: &std::path::Path, settings: &str) -> Passkeys {
        let config = ProxyConfig::parse(&format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [passkeys]\nenabled = true\nstore_file = \"{}\"\n{settings}",
            dir.join("p.json").display()
        ))
        .unwrap();
        let store = Arc::new(FileStore::open(&dir.join("p.json")).unwrap());
        Passkeys::from_config(&config, store).unwrap().unwrap()
    }

    #[test]
    fn ceremonies_are_single_use_expire_and_refuse_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = passkeys(dir.path());
        let s = sealer(&ring_text(&["k1"]));

        // No pending ceremony (no cookie, or one that did not open): refused.
        let err = p.finish_login(&s, None, b"{}", NOW).err().unwrap();
        assert_eq!(err.label(), "no_ceremony");

        // Expired: refused even before the answer is looked at.
        let (_, pending) = p.start_login(None, "/", NOW).unwrap();
        assert!(pending.discoverable);
        let late = NOW + 300;
        let err = p
            .finish_login(&s, Some(pending), b"{}", late)
            .err()
            .unwrap();
        assert_eq!(err.label(), "no_ceremony");

        // A garbage answer burns the ceremony: the same pending state is refused next time.
        let (_, pending) = p.start_login(None, "/", NOW).unwrap();
        let again: PendingLogin =
            serde_json::from_str(&serde_json::to_string(&pending).unwrap()).unwrap();
        let err = p
            .finish_login(&s, Some(pending), b"not json", NOW)
            .err()
            .unwrap();
        assert_eq!(err.label(), "malformed");
        let err = p.finish_login(&s, Some(again), b"{}", NOW).err().unwrap();
        assert_eq!(err.label(), "replayed");

        // Registration ceremonies alike; and the options ask for a discoverable credential.
        let owner = Owner {
            user: "u".into(),
            email: Some("u@example.com".into()),
            groups: vec![],
            invitation: None,
        };
        let (options, pending) = p.start_registration(owner, "\u{7}Laptop\n", NOW).unwrap();
        assert_eq!(pending.name, "Laptop");
        let selection = options.public_key.authenticator_selection.unwrap();
        assert!(selection.require_resident_key);
        assert_eq!(
            selection.resident_key,
            Some(ResidentKeyRequirement::Required)
        );
        let err = p
            .finish_registration(Some(pending), b"{}", NOW)
            .err()
            .unwrap();
        assert_eq!(err.label(), "malformed");
        assert!(p.store().for_user("u").is_empty());
    }

    #[test]
    fn the_user_verification_policy_reaches_both_ceremonies() {
        let owner = || Owner {
            user: "u".into(),
            email: None,
            groups: vec![],
            invitation: None,
        };
        for (settings, policy) in [
            ("", UserVerificationPolicy::Required),
            (
                "user_verification = \"required\"\n",
                UserVerificationPolicy::Required,
            ),
            (
                "user_verification = \"preferred\"\n",
                UserVerificationPolicy::Preferred,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = passkeys_with(dir.path(), settings);
            let (create, _) = p.start_registration(owner(), "Key", NOW).unwrap();
            let selection = create.public_key.authenticator_selection.unwrap();
            assert_eq!(selection.user_verification, policy, "{settings}");
            let (get, pending) = p.start_login(None, "/", NOW).unwrap();
            assert_eq!(get.public_key.user_verification, policy, "{settings}");
            // A click, not autofill: no conditional mediation.
            assert!(get.mediation.is_none());
            // The policy is sealed into the ceremony with the challenge: webauthn-rs-core
            // checks the answer against it.
            assert!(pending.state.contains(&format!(
                "\"policy\":{}",
                serde_json::to_string(&policy).unwrap()
            )));
        }
        let dir = tempfile::tempdir().unwrap();
        let bad = ProxyConfig::parse(&format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [passkeys]\nenabled = true\nstore_file = \"{}\"\nuser_verification = \"discouraged\"\n",
            dir.path().join("p.json").display()
        ));
        assert!(bad.is_err(), "only required and preferred are offered");
    }
}
