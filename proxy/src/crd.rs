//! The custom resources the Kubernetes credential store keeps (`vouchrs.app/v1alpha1`), one
//! Rust type shared by the proxy (which reads and writes them) and the operator (which
//! generates their CRD into `crds/vouchrspasskey.yaml`). Built with the `crd` feature only:
//! kube's derive and k8s-openapi's types, no client.
//!
//! - `VouchrsPasskey`: one registered passkey (public key and counter, never a secret).
//!   `kubectl delete vouchrspasskey NAME` revokes it on every replica.
//! - `VouchrsInvitation`: an invitation that was used. Its name is derived from the
//!   invitation id, so a second registration with the same invitation, on any replica, is a
//!   create conflict (409) at the API server: single use needs no lock. It is its own object,
//!   not a field of the credential, so that deleting the passkey does not make the invitation
//!   usable again.
//!
//! Object names are `pk-` / `inv-` and a SHA-256 of the gateway and the id in hex: always a
//! DNS-safe name whatever bytes the id holds, and distinct per gateway. The ids themselves
//! live in the spec.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label naming the gateway an object belongs to (the one the operator puts on every
/// child of a gateway); the store watches only objects carrying its gateway's value.
pub const GATEWAY_LABEL: &str = "app.kubernetes.io/instance";

/// One registered passkey of a Vouchrs gateway.
// Several `printcolumn(...)` entries share `type_ = "string"`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vouchrs.app",
    version = "v1alpha1",
    kind = "VouchrsPasskey",
    namespaced,
    category = "vouchrs",
    doc = "A passkey (WebAuthn public key credential) registered with a Vouchrs gateway, written by the proxy. Delete it to revoke the passkey and end the sessions started with it.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.user",
        description = "User id sent upstream"
    ),
    printcolumn(
        name = "Passkey",
        type_ = "string",
        json_path = ".spec.name",
        description = "The name the user gave the passkey"
    ),
    printcolumn(
        name = "Created",
        type_ = "date",
        json_path = ".spec.created",
        description = "When it was registered"
    ),
    printcolumn(
        name = "Last Used",
        type_ = "date",
        json_path = ".spec.lastUsed",
        description = "Last sign-in with it"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VouchrsPasskeySpec {
    /// The WebAuthn credential id, base64url without padding.
    pub credential_id: String,
    /// The user id sent upstream (the OIDC subject, or the invited email address).
    pub user: String,
    /// The user's email address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's groups when the passkey was registered.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The WebAuthn user handle (a random UUID per user) the authenticator keeps.
    pub user_handle: String,
    /// The name the user gave the passkey.
    pub name: String,
    /// When it was registered.
    pub created: Time,
    /// Last sign-in with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// The invitation it was registered with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
    /// The public key, algorithm and signature counter as webauthn-rs serializes them.
    #[schemars(schema_with = "opaque_object")]
    pub passkey: serde_json::Value,
}

/// An invitation that was used to register a passkey (single use across replicas).
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vouchrs.app",
    version = "v1alpha1",
    kind = "VouchrsInvitation",
    namespaced,
    category = "vouchrs",
    doc = "A used invitation of a Vouchrs gateway, written by the proxy: an invitation is good for one registration. Safe to delete once the invitation has expired.",
    printcolumn(
        name = "Used",
        type_ = "date",
        json_path = ".spec.used",
        description = "When it was used"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VouchrsInvitationSpec {
    /// The invitation id.
    pub invitation_id: String,
    /// When it was used.
    pub used: Time,
}

/// The object name of credential `id` of `gateway`.
pub fn passkey_object_name(gateway: &str, id: &str) -> String {
    format!("pk-{}", digest(gateway, id))
}

/// The object name of the record of invitation `id` of `gateway`.
pub fn invitation_object_name(gateway: &str, id: &str) -> String {
    format!("inv-{}", digest(gateway, id))
}

fn digest(gateway: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(gateway.as_bytes());
    // A separator no gateway name contains, so (gw, id) pairs cannot collide by shifting.
    hash.update([0]);
    hash.update(id.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// webauthn-rs's own serialization: kept as-is rather than mirrored in the schema, so a
/// webauthn-rs upgrade cannot make stored passkeys invalid objects.
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The public key, algorithm and signature counter as webauthn-rs serializes them.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_labels_distinct_per_gateway() {
        let name = passkey_object_name("shop", "A_b-c/+=\u{e9}");
        assert_eq!(name.len(), 3 + 64);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert_ne!(name, passkey_object_name("shop2", "A_b-c/+=\u{e9}"));
        assert_ne!(name, passkey_object_name("shop", "A_b-c/+="));
        assert_ne!(
            passkey_object_name("a", "bc"),
            passkey_object_name("ab", "c")
        );
        assert!(invitation_object_name("shop", "x").starts_with("inv-"));
    }
}
