//! The operator's errors. Each variant has a fixed metric label, so the failure counter's
//! cardinality is bounded by this enum and never by error text.

use crate::keyring::KeyRingError;

/// A spec the API server accepted but the operator cannot run: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidSpec {
    pub field: String,
    pub reason: String,
}

impl InvalidSpec {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reported on the gateway's status; never retried until the spec changes.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] InvalidSpec),

    /// The gateway has no namespace (the CRD is namespaced, so only a hand-built object).
    #[error("the gateway has no namespace")]
    MissingNamespace,

    /// Reading a child or the key Secret failed.
    #[error("reading {kind} failed: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },

    /// Server-side apply of a child failed.
    #[error("applying {kind} failed: {source}")]
    Apply {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },

    /// Deleting a child the spec no longer needs failed.
    #[error("deleting {kind} failed: {source}")]
    Delete {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },

    /// Creating or rotating the cookie key Secret failed.
    #[error("writing the key Secret failed: {0}")]
    WriteKeys(#[source] kube::Error),

    /// The existing key Secret cannot be read as a key ring. It is left alone: regenerating
    /// it would log every user out.
    #[error("the key Secret is damaged and was left untouched: {0}")]
    DamagedKeys(#[source] KeyRingError),

    /// No randomness for a new key.
    #[error("no randomness for a new cookie key: {0}")]
    Random(String),

    /// Writing the gateway's status failed.
    #[error("writing status failed: {0}")]
    Status(#[source] kube::Error),

    /// Publishing an event failed.
    #[error("publishing an event failed: {0}")]
    Event(#[source] kube::Error),

    /// Leader election could not talk to the API server.
    #[error("leader election failed: {0}")]
    Lease(#[source] kube::Error),
}

impl Error {
    /// The fixed label for `vouchrs_operator_reconcile_failures_total{reason=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingNamespace => "missing_namespace",
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::WriteKeys(_) => "write_keys",
            Error::DamagedKeys(_) => "damaged_keys",
            Error::Random(_) => "random",
            Error::Status(_) => "status",
            Error::Event(_) => "event",
            Error::Lease(_) => "lease",
        }
    }

    /// The condition reason shown on the gateway (CamelCase, fixed per variant).
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingNamespace => "MissingNamespace",
            Error::Read { .. } => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::WriteKeys(_) => "KeyWriteFailed",
            Error::DamagedKeys(_) => "DamagedKeys",
            Error::Random(_) => "NoRandomness",
            Error::Status(_) => "StatusFailed",
            Error::Event(_) => "EventFailed",
            Error::Lease(_) => "LeaseFailed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_snake_case_and_reasons_camel_case() {
        let errors = [
            Error::InvalidSpec(InvalidSpec::new("spec.tier", "x")),
            Error::MissingNamespace,
            Error::DamagedKeys(KeyRingError::Empty),
            Error::Random("x".into()),
        ];
        for e in errors {
            let label = e.metric_label();
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            let reason = e.condition_reason();
            assert!(reason.bytes().all(|b| b.is_ascii_alphabetic()), "{reason}");
            assert!(reason.as_bytes()[0].is_ascii_uppercase());
        }
    }
}
