//! `VouchrsPasskey` objects and the credentials they hold, and how watch events change the
//! in-memory index: the pure half of the Kubernetes store ([`super::kube_store`]), tested
//! without a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;

use super::store::{Contents, Index, StoreError, StoredCredential};
use crate::crd::{VouchrsPasskey, VouchrsPasskeySpec, passkey_object_name};

/// Applies one watch event to the index; `listing` buffers a re-list until it is complete.
/// Returns true when a complete list was just applied.
pub fn apply(
    index: &Index,
    gateway: &str,
    listing: &mut Vec<StoredCredential>,
    event: Event<VouchrsPasskey>,
) -> bool {
    match event {
        Event::Init => listing.clear(),
        Event::InitApply(object) => listing.extend(from_object(gateway, &object)),
        Event::InitDone => {
            let credentials = std::mem::take(listing);
            let used_invitations = credentials
                .iter()
                .filter_map(|c| c.invitation.clone())
                .collect();
            index.replace(&Contents {
                credentials,
                used_invitations,
            });
            return true;
        }
        Event::Apply(object) => {
            if let Some(credential) = from_object(gateway, &object) {
                index.insert(credential);
            }
        }
        Event::Delete(object) => {
            if from_object(gateway, &object).is_some() {
                index.remove(&object.spec.credential_id);
            }
        }
    }
    false
}

/// The credential an object holds, if it is a well-formed one of ours: its name must be the
/// one derived from its credential id, so no two objects can claim the same credential.
pub fn from_object(gateway: &str, object: &VouchrsPasskey) -> Option<StoredCredential> {
    let spec = &object.spec;
    let name = object.metadata.name.as_deref().unwrap_or_default();
    if name != passkey_object_name(gateway, &spec.credential_id) {
        tracing::warn!(
            object = name,
            "ignoring a VouchrsPasskey whose name does not match its credential id"
        );
        return None;
    }
    let passkey = match serde_json::from_value(spec.passkey.clone()) {
        Ok(passkey) => passkey,
        Err(error) => {
            tracing::warn!(object = name, %error, "ignoring a VouchrsPasskey whose passkey is not readable");
            return None;
        }
    };
    Some(StoredCredential {
        id: spec.credential_id.clone(),
        user: spec.user.clone(),
        email: spec.email.clone(),
        groups: spec.groups.clone(),
        user_handle: spec.user_handle.clone(),
        name: spec.name.clone(),
        created: seconds(&spec.created),
        last_used: spec.last_used.as_ref().map(seconds),
        invitation: spec.invitation.clone(),
        passkey,
    })
}

/// The spec of a credential's object.
pub fn to_spec(credential: &StoredCredential) -> Result<VouchrsPasskeySpec, StoreError> {
    Ok(VouchrsPasskeySpec {
        credential_id: credential.id.clone(),
        user: credential.user.clone(),
        email: credential.email.clone(),
        groups: credential.groups.clone(),
        user_handle: credential.user_handle.clone(),
        name: credential.name.clone(),
        created: time(credential.created),
        last_used: credential.last_used.map(time),
        invitation: credential.invitation.clone(),
        passkey: serde_json::to_value(&credential.passkey)
            .map_err(|e| StoreError::Io(format!("cannot encode a passkey: {e}")))?,
    })
}

pub fn time(unix_seconds: u64) -> Time {
    let seconds = i64::try_from(unix_seconds).unwrap_or(i64::MAX);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::MAX))
}

fn seconds(time: &Time) -> u64 {
    u64::try_from(time.0.as_second()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passkey::store::fixture_passkey;

    fn credential(id: &str, invitation: Option<&str>) -> StoredCredential {
        StoredCredential {
            id: id.into(),
            user: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["staff".into()],
            user_handle: "00000000-0000-0000-0000-000000000001".into(),
            name: "laptop".into(),
            created: 1_700_000_000,
            last_used: Some(1_700_000_500),
            invitation: invitation.map(str::to_owned),
            passkey: fixture_passkey(),
        }
    }

    fn object(gateway: &str, credential: &StoredCredential) -> VouchrsPasskey {
        let mut object = VouchrsPasskey::new(
            &passkey_object_name(gateway, &credential.id),
            to_spec(credential).unwrap(),
        );
        object.metadata.namespace = Some("shop".into());
        object
    }

    #[test]
    fn a_credential_survives_the_round_trip_through_its_object() {
        let original = credential("AAEC", Some("inv"));
        let back = from_object("shop", &object("shop", &original)).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&original).unwrap()
        );
        // Through JSON as the API server stores it, too.
        let json = serde_json::to_string(&object("shop", &original)).unwrap();
        let parsed: VouchrsPasskey = serde_json::from_str(&json).unwrap();
        assert!(from_object("shop", &parsed).is_some());
        assert!(json.contains("\"created\":\"2023-11-14T22:13:20Z\""));
    }

    #[test]
    fn objects_with_a_foreign_name_or_an_unreadable_passkey_are_ignored() {
        let c = credential("AAEC", None);
        assert!(
            from_object("other", &object("shop", &c)).is_none(),
            "named for another gateway"
        );
        let mut broken = object("shop", &c);
        broken.spec.passkey = serde_json::json!({"cred": "nonsense"});
        assert!(from_object("shop", &broken).is_none());
    }

    #[test]
    fn watch_events_keep_the_index_and_a_relist_replaces_it() {
        let index = Index::default();
        let mut listing = Vec::new();
        let (a, b) = (credential("a", Some("inv-a")), credential("b", None));
        assert!(!apply(&index, "shop", &mut listing, Event::Init));
        assert!(!apply(
            &index,
            "shop",
            &mut listing,
            Event::InitApply(object("shop", &a))
        ));
        assert!(
            !index.contains("a"),
            "nothing is served before the list is complete"
        );
        assert!(apply(&index, "shop", &mut listing, Event::InitDone));
        assert!(index.contains("a") && index.invitation_used("inv-a"));

        apply(
            &index,
            "shop",
            &mut listing,
            Event::Apply(object("shop", &b)),
        );
        assert!(index.contains("b"));
        apply(
            &index,
            "shop",
            &mut listing,
            Event::Delete(object("shop", &a)),
        );
        assert!(!index.contains("a"));

        // A re-list after a broken watch: the index keeps serving until it is complete,
        // then holds exactly what was listed.
        apply(&index, "shop", &mut listing, Event::Init);
        apply(
            &index,
            "shop",
            &mut listing,
            Event::InitApply(object("shop", &a)),
        );
        assert!(index.contains("b") && !index.contains("a"));
        apply(&index, "shop", &mut listing, Event::InitDone);
        assert!(index.contains("a") && !index.contains("b"));
    }
}
