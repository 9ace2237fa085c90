//! The cookie key Secret and the pure decision of what to do with it.
//!
//! The Secret is never server-side applied: an apply carries the full desired content, and
//! the desired content of a key is random, so every reconcile would regenerate it and log
//! everyone out. Instead it is created once if absent, and afterwards only replaced (with the
//! read `resourceVersion` as a precondition) to prepend a requested key or prune a retired one.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{KEYRING_KEY, Names, meta};
use crate::keyring::{Key, KeyRing, KeyRingError};
use crate::resolve::Resolved;

/// The rotation token last acted on (copied from the gateway's `vouchrs.app/rotate-keys`).
pub const ROTATION_TOKEN_ANNOTATION: &str = "vouchrs.app/rotation-token";
/// When that rotation happened (RFC 3339).
pub const ROTATED_AT_ANNOTATION: &str = "vouchrs.app/keys-rotated-at";

/// What the reconcile should do with the key Secret.
#[derive(Debug, Clone, PartialEq)]
pub enum KeysPlan {
    /// No Secret yet: create this one.
    Create(Secret),
    /// Rotate or prune: replace the Secret with this one (same resourceVersion).
    Replace(Secret),
    /// Leave it alone.
    Keep,
}

/// Decides about the key Secret. `fresh` makes a new key and is only called when one is
/// needed; `now_secs` and `now_rfc3339` are the same instant.
pub fn plan(
    r: &Resolved,
    owner: &Option<OwnerReference>,
    existing: Option<&Secret>,
    requested_token: Option<&str>,
    (now_secs, now_rfc3339): (i64, &str),
    fresh: impl FnOnce() -> Key,
) -> Result<KeysPlan, KeyRingError> {
    let Some(existing) = existing else {
        // A token present at creation is recorded as handled: there is nothing to rotate yet.
        let ring = KeyRing::single(fresh());
        return Ok(KeysPlan::Create(build(
            r,
            owner,
            &ring,
            requested_token,
            None,
        )));
    };
    let mut ring = KeyRing::parse(&keyring_text(existing).unwrap_or_default())?;
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let mut token = annotations
        .get(ROTATION_TOKEN_ANNOTATION)
        .map(String::as_str);
    let mut rotated_at = annotations.get(ROTATED_AT_ANNOTATION).map(String::as_str);
    let mut changed = false;
    if let Some(requested) = requested_token.filter(|t| Some(*t) != token) {
        ring.rotate(fresh());
        token = Some(requested);
        rotated_at = Some(now_rfc3339);
        changed = true;
    }
    changed |= ring.prune(now_secs, r.session_lifetime_secs()) > 0;
    if !changed {
        return Ok(KeysPlan::Keep);
    }
    let mut secret = build(r, owner, &ring, token, rotated_at);
    secret.metadata.resource_version = existing.metadata.resource_version.clone();
    Ok(KeysPlan::Replace(secret))
}

/// When the next key will be due for pruning (Unix seconds), to requeue in time.
pub fn next_prune_at(r: &Resolved, secret: &Secret) -> Option<i64> {
    let ring = KeyRing::parse(&keyring_text(secret)?).ok()?;
    ring.next_prune_at(r.session_lifetime_secs())
}

/// The Secret holding `ring`.
pub fn build(
    r: &Resolved,
    owner: &Option<OwnerReference>,
    ring: &KeyRing,
    token: Option<&str>,
    rotated_at: Option<&str>,
) -> Secret {
    let mut metadata = meta(r, &Names::new(&r.name).secret, owner);
    let mut annotations = BTreeMap::new();
    if let Some(token) = token {
        annotations.insert(ROTATION_TOKEN_ANNOTATION.to_owned(), token.to_owned());
    }
    if let Some(at) = rotated_at {
        annotations.insert(ROTATED_AT_ANNOTATION.to_owned(), at.to_owned());
    }
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            KEYRING_KEY.to_owned(),
            ByteString(ring.render().into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn keyring_text(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(KEYRING_KEY)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    const DAY: i64 = 24 * 3600;

    fn ring_of(s: &Secret) -> KeyRing {
        KeyRing::parse(&keyring_text(s).unwrap()).unwrap()
    }

    fn created(plan: KeysPlan) -> Secret {
        match plan {
            KeysPlan::Create(s) => s,
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn absent_secret_is_created_with_one_key() {
        let r = resolved(Tier::Staging);
        let s = created(
            plan(&r, &None, None, Some("t0"), (100, "x"), || {
                Key::new(100, [1; 32])
            })
            .unwrap(),
        );
        assert_eq!(ring_of(&s).ids().collect::<Vec<_>>(), ["k100"]);
        assert_eq!(s.metadata.name.as_deref(), Some("shop-vouchrs-keys"));
        // The token present at creation counts as handled.
        assert_eq!(
            s.metadata.annotations.unwrap()[ROTATION_TOKEN_ANNOTATION],
            "t0"
        );
    }

    #[test]
    fn existing_secret_is_kept_and_never_regenerated() {
        let r = resolved(Tier::Staging);
        let s =
            created(plan(&r, &None, None, None, (100, "x"), || Key::new(100, [1; 32])).unwrap());
        let again = plan(&r, &None, Some(&s), None, (200, "y"), || {
            panic!("no new key wanted")
        });
        assert_eq!(again.unwrap(), KeysPlan::Keep);
    }

    #[test]
    fn a_new_token_prepends_a_key_once() {
        let r = resolved(Tier::Staging);
        let mut s =
            created(plan(&r, &None, None, None, (100, "x"), || Key::new(100, [1; 32])).unwrap());
        s.metadata.resource_version = Some("7".into());
        let KeysPlan::Replace(rotated) =
            plan(&r, &None, Some(&s), Some("2025-01"), (500, "T500"), || {
                Key::new(500, [2; 32])
            })
            .unwrap()
        else {
            panic!("expected a rotation")
        };
        assert_eq!(
            ring_of(&rotated).ids().collect::<Vec<_>>(),
            ["k500", "k100"]
        );
        assert_eq!(rotated.metadata.resource_version.as_deref(), Some("7"));
        let notes = rotated.metadata.annotations.clone().unwrap();
        assert_eq!(
            (
                notes[ROTATION_TOKEN_ANNOTATION].as_str(),
                notes[ROTATED_AT_ANNOTATION].as_str()
            ),
            ("2025-01", "T500")
        );
        // The same token again does nothing.
        let again = plan(
            &r,
            &None,
            Some(&rotated),
            Some("2025-01"),
            (600, "y"),
            || panic!("no key"),
        );
        assert_eq!(again.unwrap(), KeysPlan::Keep);
        assert_eq!(next_prune_at(&r, &rotated), Some(500 + DAY));
    }

    #[test]
    fn retired_keys_are_pruned_after_a_session_lifetime() {
        let r = resolved(Tier::Staging);
        let mut ring = KeyRing::single(Key::new(0, [1; 32]));
        ring.rotate(Key::new(1000, [2; 32]));
        let s = build(&r, &None, &ring, Some("t"), Some("then"));
        let keep = plan(
            &r,
            &None,
            Some(&s),
            Some("t"),
            (1000 + DAY - 1, "x"),
            || panic!("no key"),
        );
        assert_eq!(keep.unwrap(), KeysPlan::Keep);
        let KeysPlan::Replace(pruned) =
            plan(&r, &None, Some(&s), Some("t"), (1000 + DAY, "x"), || {
                panic!("no key")
            })
            .unwrap()
        else {
            panic!("expected pruning")
        };
        assert_eq!(ring_of(&pruned).ids().collect::<Vec<_>>(), ["k1000"]);
        assert_eq!(
            pruned.metadata.annotations.unwrap()[ROTATED_AT_ANNOTATION],
            "then"
        );
    }

    #[test]
    fn a_damaged_secret_is_an_error_not_a_regeneration() {
        let r = resolved(Tier::Staging);
        let mut s = build(
            &r,
            &None,
            &KeyRing::single(Key::new(1, [1; 32])),
            None,
            None,
        );
        s.data = Some(BTreeMap::from([(
            KEYRING_KEY.to_owned(),
            ByteString(b"garbage".to_vec()),
        )]));
        assert!(plan(&r, &None, Some(&s), None, (1, "x"), || panic!("no key")).is_err());
    }
}
