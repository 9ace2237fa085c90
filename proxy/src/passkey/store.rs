//! The credential store: registered passkeys (public keys and counters, never secrets) and
//! the invitations already used, behind one trait so that a file on one machine
//! ([`super::file_store`]) and Kubernetes custom resources (`kube_store`, cargo feature
//! `kubernetes`) can hold them.
//!
//! Every implementation keeps an in-memory index: the request path asks it whether a passkey
//! session's credential still exists (one uncontended read lock and a hash lookup), so a
//! removed credential ends its sessions on the very next request.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::Passkey;

/// One registered passkey and whose it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    /// The credential id, base64url without padding.
    pub id: String,
    /// The user id sent upstream (the OIDC `sub`, or the invited email).
    pub user: String,
    pub email: Option<String>,
    /// Groups as they were when the passkey was registered.
    pub groups: Vec<String>,
    /// The WebAuthn user handle (a random UUID per user) the authenticator keeps.
    pub user_handle: String,
    /// The label the user gave it.
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    pub last_used: Option<u64>,
    /// The invitation it was registered with, if any.
    pub invitation: Option<String>,
    /// The public key, algorithm and signature counter, as webauthn-rs keeps them.
    pub passkey: Passkey,
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this credential is already registered")]
    Duplicate,
    #[error("this invitation was already used")]
    InvitationUsed,
    #[error("no such credential")]
    NotFound,
    #[error("credential store I/O: {0}")]
    Io(String),
}

/// What every store offers. Reads come from memory (the store's [`Index`]); writes are
/// durable when they return.
pub trait CredentialStore: Send + Sync {
    /// The in-memory index the reads below come from.
    fn index(&self) -> &Index;

    /// True while the credential exists: the per-request revocation check.
    fn contains(&self, id: &str) -> bool {
        self.index().contains(id)
    }
    fn get(&self, id: &str) -> Option<StoredCredential> {
        self.index().get(id)
    }
    /// The credentials of `user`, oldest first.
    fn for_user(&self, user: &str) -> Vec<StoredCredential> {
        self.index().select(|c| c.user == user)
    }
    /// The credentials registered for `email` (case-insensitive), oldest first.
    fn for_email(&self, email: &str) -> Vec<StoredCredential> {
        self.index().select(|c| {
            c.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }
    fn invitation_used(&self, invitation: &str) -> bool;
    /// Adds a credential; refuses a known credential id or an already used invitation, and
    /// records the invitation as used in the same write.
    fn add(&self, credential: StoredCredential) -> Result<(), StoreError>;
    /// Replaces a credential after a login (counter, last used).
    fn update(&self, credential: StoredCredential) -> Result<(), StoreError>;
    /// Removes `user`'s credential `id`; `NotFound` when it is not theirs or not there.
    fn remove(&self, user: &str, id: &str) -> Result<(), StoreError>;
}

/// The durable content of a store, also its file format.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Contents {
    pub credentials: Vec<StoredCredential>,
    #[serde(default)]
    pub used_invitations: BTreeSet<String>,
}

impl Contents {
    /// Applies `add` to plain contents (shared by every store).
    pub fn add(&mut self, credential: StoredCredential) -> Result<(), StoreError> {
        if self.credentials.iter().any(|c| c.id == credential.id) {
            return Err(StoreError::Duplicate);
        }
        if let Some(invitation) = &credential.invitation
            && !self.used_invitations.insert(invitation.clone())
        {
            return Err(StoreError::InvitationUsed);
        }
        self.credentials.push(credential);
        Ok(())
    }

    pub fn update(&mut self, credential: StoredCredential) -> Result<(), StoreError> {
        let slot = self
            .credentials
            .iter_mut()
            .find(|c| c.id == credential.id)
            .ok_or(StoreError::NotFound)?;
        *slot = credential;
        Ok(())
    }

    pub fn remove(&mut self, user: &str, id: &str) -> Result<(), StoreError> {
        let before = self.credentials.len();
        self.credentials.retain(|c| !(c.id == id && c.user == user));
        if self.credentials.len() == before {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

/// The in-memory index every store reads from.
#[derive(Default)]
pub struct Index {
    inner: RwLock<(HashMap<String, StoredCredential>, BTreeSet<String>)>,
}

impl Index {
    /// Replaces the whole index (after a load or a write).
    pub fn replace(&self, contents: &Contents) {
        let map = contents
            .credentials
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) =
            (map, contents.used_invitations.clone());
    }

    /// Adds or replaces one credential (and marks its invitation used).
    pub fn insert(&self, credential: StoredCredential) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(invitation) = &credential.invitation {
            inner.1.insert(invitation.clone());
        }
        inner.0.insert(credential.id.clone(), credential);
    }

    /// Drops one credential; its invitation stays used.
    pub fn remove(&self, id: &str) -> Option<StoredCredential> {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(id)
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, (HashMap<String, StoredCredential>, BTreeSet<String>)> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.read().0.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<StoredCredential> {
        self.read().0.get(id).cloned()
    }

    pub fn select(&self, keep: impl Fn(&StoredCredential) -> bool) -> Vec<StoredCredential> {
        let mut found: Vec<_> = self
            .read()
            .0
            .values()
            .filter(|c| keep(c))
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        found
    }

    pub fn invitation_used(&self, invitation: &str) -> bool {
        self.read().1.contains(invitation)
    }
}

#[cfg(test)]
pub(crate) use super::store_contract::fixture_passkey;
