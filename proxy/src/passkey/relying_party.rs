//! The WebAuthn relying party: the four ceremony steps on webauthn-rs-core, with the
//! user-verification policy of the config.
//!
//! webauthn-rs's passkey calls hard-code "user verification required". These make the same
//! requests (its algorithms and extensions) but with the configured policy, and ask for a
//! discoverable credential so that login needs no username. The policy travels in the sealed
//! ceremony state, and webauthn-rs-core enforces it when the browser answers. It also enforces
//! the policy a credential was registered under: a passkey registered with verification must
//! keep verifying, whatever the config says later.

use webauthn_rs::prelude::{
    COSEAlgorithm, CreationChallengeResponse, Credential, CredentialID, Passkey,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
    WebauthnBuilder, WebauthnError,
};
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticationResult, AuthenticationState, CredProtect,
    CredentialProtectionPolicy, RegistrationState, RequestAuthenticationExtensions,
    RequestRegistrationExtensions, UserVerificationPolicy,
};

use crate::config::UserVerification;

/// How long the browser may wait for the authenticator (the ceremony cookie lives longer).
const AUTHENTICATOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub struct RelyingParty {
    core: WebauthnCore,
    policy: UserVerificationPolicy,
}

impl RelyingParty {
    /// `rp_id` must be the origin's host or a parent domain of it.
    pub fn new(
        rp_id: &str,
        rp_name: &str,
        origin: &Url,
        user_verification: UserVerification,
    ) -> Result<Self, WebauthnError> {
        // webauthn-rs's builder holds the rp id check; its core is what we drive.
        WebauthnBuilder::new(rp_id, origin)?;
        let core = WebauthnCore::new_unsafe_experts_only(
            rp_name,
            rp_id,
            vec![origin.clone()],
            AUTHENTICATOR_TIMEOUT,
            Some(false),
            Some(false),
        );
        let policy = match user_verification {
            UserVerification::Required => UserVerificationPolicy::Required,
            UserVerification::Preferred => UserVerificationPolicy::Preferred,
        };
        Ok(Self { core, policy })
    }

    /// Options for `navigator.credentials.create()`, and the state to check the answer with.
    pub fn start_registration(
        &self,
        user_handle: Uuid,
        label: &str,
        exclude: Vec<CredentialID>,
    ) -> Result<(CreationChallengeResponse, RegistrationState), WebauthnError> {
        let required = self.policy == UserVerificationPolicy::Required;
        let extensions = RequestRegistrationExtensions {
            // Ask the authenticator to guard the credential with verification when we require
            // it, without failing authenticators that cannot (as webauthn-rs does).
            cred_protect: required.then_some(CredProtect {
                credential_protection_policy: CredentialProtectionPolicy::UserVerificationRequired,
                enforce_credential_protection_policy: Some(false),
            }),
            uvm: Some(true),
            cred_props: Some(true),
            min_pin_length: None,
            hmac_create_secret: None,
        };
        let builder = self
            .core
            .new_challenge_register_builder(user_handle.as_bytes(), label, label)?
            .attestation(AttestationConveyancePreference::None)
            .credential_algorithms(COSEAlgorithm::secure_algs())
            .require_resident_key(true)
            .authenticator_attachment(None)
            .user_verification_policy(self.policy)
            .reject_synchronised_authenticators(false)
            .exclude_credentials(Some(exclude))
            .extensions(Some(extensions));
        self.core.generate_challenge_register(builder)
    }

    /// Verifies a new credential: origin, rp id, challenge, flags, attestation format.
    pub fn finish_registration(
        &self,
        answer: &RegisterPublicKeyCredential,
        state: &RegistrationState,
    ) -> Result<Passkey, WebauthnError> {
        self.core
            .register_credential(answer, state, None)
            .map(Passkey::from)
    }

    /// Options for `navigator.credentials.get()`: allow-listed to `credentials`, or
    /// discoverable (the browser offers whatever passkeys it has here) when there are none.
    pub fn start_login(
        &self,
        credentials: Vec<Credential>,
    ) -> Result<(RequestChallengeResponse, AuthenticationState), WebauthnError> {
        let discoverable = credentials.is_empty();
        let builder = self
            .core
            .new_challenge_authenticate_builder(credentials, Some(self.policy))?
            .extensions(Some(RequestAuthenticationExtensions {
                appid: None,
                uvm: Some(true),
                hmac_get_secret: None,
            }))
            // A synced passkey may become backup eligible later; a discoverable login has no
            // stored flags to upgrade in its state.
            .allow_backup_eligible_upgrade(!discoverable);
        self.core.generate_challenge_authenticate(builder)
    }

    /// Verifies an assertion: origin, rp id, challenge, signature, flags, counter. With the
    /// credential a discoverable login found; an allow-listed login uses those it offered.
    pub fn finish_login(
        &self,
        answer: &PublicKeyCredential,
        state: &AuthenticationState,
        discovered: Option<&Credential>,
    ) -> Result<AuthenticationResult, WebauthnError> {
        match discovered {
            Some(credential) => self
                .core
                .authenticate_single_credential(answer, state, credential),
            None => self.core.authenticate_credential(answer, state),
        }
    }
}
