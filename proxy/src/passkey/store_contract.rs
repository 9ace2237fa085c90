//! What every [`CredentialStore`] must do, as one function that tests run against each
//! implementation: the file store in its unit tests, the Kubernetes store against a real API
//! server (`operator/tests/passkey_store.rs`). Public (hidden from the docs) so that tests in
//! other crates can call it; it panics on the first broken promise.

use super::store::{CredentialStore, StoreError, StoredCredential};

/// A passkey as webauthn-rs serializes one (an ES256 key; the bytes need not verify here).
pub fn fixture_passkey() -> webauthn_rs::prelude::Passkey {
    // Invariant: a constant webauthn-rs 0.6 reads (checked by every test that uses it).
    serde_json::from_value(serde_json::json!({"cred": {
        "cred_id": "AAEC", "cred": {"type_": "ES256", "key": {"EC_EC2": {"curve": "SECP256R1",
        "x": vec![1u8; 32], "y": vec![2u8; 32]}}}, "counter": 0, "transports": null, "user_verified": true,
        "backup_eligible": false, "backup_state": false, "registration_policy": "required",
        "extensions": {"cred_protect": "NotRequested", "hmac_create_secret": "NotRequested",
        "appid": "NotRequested", "cred_props": "Ignored"}, "attestation": {"data": "None",
        "metadata": "None"}, "attestation_format": "none"}}))
    .expect("the fixture passkey is what webauthn-rs serializes")
}

/// A credential of `user` with id `id`, created at `created`.
pub fn credential(
    id: &str,
    user: &str,
    created: u64,
    invitation: Option<&str>,
) -> StoredCredential {
    StoredCredential {
        id: id.to_owned(),
        user: user.to_owned(),
        email: Some(format!("{user}@Example.com")),
        groups: vec!["staff".to_owned()],
        user_handle: "00000000-0000-0000-0000-0000000000aa".to_owned(),
        name: format!("key {id}"),
        created,
        last_used: None,
        invitation: invitation.map(str::to_owned),
        passkey: fixture_passkey(),
    }
}

/// Runs the contract on an empty `store`; ids and invitations are prefixed with `tag`, so
/// several runs can share a backend.
pub fn check(store: &dyn CredentialStore, tag: &str) {
    let (c1, c2, c3) = (format!("{tag}c1"), format!("{tag}c2"), format!("{tag}c3"));
    let (alice, invitation) = (format!("{tag}alice"), format!("{tag}inv"));
    assert!(!store.contains(&c1) && store.get(&c1).is_none());

    // Added credentials are readable at once, by id, user (oldest first) and email.
    store
        .add(credential(&c2, &alice, 20, Some(&invitation)))
        .unwrap();
    store.add(credential(&c1, &alice, 10, None)).unwrap();
    assert!(store.contains(&c1) && store.contains(&c2));
    assert_eq!(
        store.get(&c2).unwrap().invitation.as_deref(),
        Some(invitation.as_str())
    );
    let ids = |list: Vec<StoredCredential>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(store.for_user(&alice)), [c1.clone(), c2.clone()]);
    assert_eq!(
        ids(store.for_email(&format!("{alice}@EXAMPLE.COM"))),
        [c1.clone(), c2.clone()],
        "email lookups ignore case"
    );
    assert!(store.for_user(&format!("{tag}bob")).is_empty());

    // A known credential id and a used invitation are refused, and leave nothing behind.
    assert!(matches!(
        store.add(credential(&c1, &alice, 30, None)),
        Err(StoreError::Duplicate)
    ));
    assert!(store.invitation_used(&invitation));
    assert!(!store.invitation_used(&format!("{tag}unused")));
    assert!(matches!(
        store.add(credential(&c3, &alice, 30, Some(&invitation))),
        Err(StoreError::InvitationUsed)
    ));
    assert!(!store.contains(&c3));

    // Updates (after a login) are kept; an unknown credential cannot be updated.
    let mut used = store.get(&c1).unwrap();
    used.last_used = Some(99);
    store.update(used).unwrap();
    assert_eq!(store.get(&c1).unwrap().last_used, Some(99));
    assert!(matches!(
        store.update(credential(&c3, &alice, 30, None)),
        Err(StoreError::NotFound)
    ));

    // Only the owner removes a credential; removal is at once; the invitation stays used.
    assert!(matches!(
        store.remove(&format!("{tag}bob"), &c1),
        Err(StoreError::NotFound)
    ));
    store.remove(&alice, &c1).unwrap();
    assert!(!store.contains(&c1));
    assert!(matches!(
        store.remove(&alice, &c1),
        Err(StoreError::NotFound)
    ));
    store.remove(&alice, &c2).unwrap();
    assert!(store.for_user(&alice).is_empty());
    assert!(
        store.invitation_used(&invitation),
        "removing the passkey must not make its invitation usable again"
    );
}
