//! The key ring: the AES-256-GCM keys that seal and open session cookies.
//!
//! The first key seals; every key opens. Rotation is "prepend a new key, drop the oldest one
//! after a session lifetime", so nobody is logged out. The ring is read from a file (a mounted
//! Secret) and re-read when the file changes; a broken new file is refused and the old ring
//! stays in force.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aes_gcm::{Aes256Gcm, KeyInit};
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The length of every key: AES-256.
pub const KEY_BYTES: usize = 32;

/// A key's name as written in the ring and in every cookie it sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyId(Box<str>);

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        let valid = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if valid {
            Ok(Self(text.into()))
        } else {
            Err(KeyRingError::BadId(text.chars().take(40).collect()))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key ring text was refused. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("the key ring has no keys")]
    Empty,
    #[error("line {0}: expected `KEY_ID BASE64URL_KEY`")]
    Malformed(usize),
    #[error("key id `{0}` must be 1-32 letters, digits, `.`, `_` or `-`")]
    BadId(String),
    #[error("line {0}: the key must be {KEY_BYTES} bytes in unpadded base64url")]
    BadKey(usize),
    #[error("key id `{0:?}` appears twice")]
    Duplicate(KeyId),
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A parsed ring of keys, newest (sealing) first.
pub struct KeyRing {
    keys: Vec<(KeyId, Aes256Gcm)>,
    /// Distinguishes rings over the process lifetime, so caches can tell a stale entry.
    generation: u64,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl KeyRing {
    /// Parses `ID KEY` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        let mut keys: Vec<(KeyId, Aes256Gcm)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let mut fields = line.split_whitespace();
            let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(KeyRingError::Malformed(number));
            };
            let id = KeyId::parse(id)?;
            let bytes = URL_SAFE_NO_PAD
                .decode(key)
                .map_err(|_| KeyRingError::BadKey(number))?;
            let cipher =
                Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyRingError::BadKey(number))?;
            if keys.iter().any(|(known, _)| *known == id) {
                return Err(KeyRingError::Duplicate(id));
            }
            keys.push((id, cipher));
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(Self {
            keys,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Reads and parses a key ring file.
    pub fn read(path: &Path) -> Result<Self, KeyRingError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyRingError::Io {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text)
    }

    /// The key that seals new cookies.
    pub fn sealing_key(&self) -> (&KeyId, &Aes256Gcm) {
        let (id, cipher) = &self.keys[0]; // Invariant: parse refuses an empty ring.
        (id, cipher)
    }

    /// The key named in a cookie, if the ring still holds it.
    pub fn opening_key(&self, id: &[u8]) -> Option<&Aes256Gcm> {
        self.keys
            .iter()
            .find(|(known, _)| known.as_bytes() == id)
            .map(|(_, cipher)| cipher)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|(id, _)| id)
    }
}

/// A fresh random key as a ring line: `ID BASE64URL`.
pub fn generate_line(id: &KeyId) -> Result<String, getrandom::Error> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key)?;
    Ok(format!("{id:?} {}", URL_SAFE_NO_PAD.encode(key)))
}

/// The live ring, swapped atomically when the file changes.
pub type SharedKeyRing = Arc<ArcSwap<KeyRing>>;

/// Polls `path` every `every` and swaps in a changed, valid ring. Polling (rather than inotify)
/// follows the symlink swap Kubernetes uses to update a mounted Secret in place.
pub async fn watch_file(path: PathBuf, ring: SharedKeyRing, every: Duration) {
    let mut last = tokio::fs::read(&path).await.ok();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(now) = tokio::fs::read(&path).await else {
            tracing::warn!(path = %path.display(), "key ring file unreadable; keeping the current keys");
            continue;
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        match std::str::from_utf8(&now)
            .map_err(|_| KeyRingError::Malformed(0))
            .and_then(KeyRing::parse)
        {
            Ok(new) => {
                let ids: Vec<_> = new.ids().map(|id| format!("{id:?}")).collect();
                tracing::info!(keys = ?ids, "key ring reloaded");
                ring.store(Arc::new(new));
            }
            Err(error) => {
                tracing::error!(%error, "new key ring refused; keeping the current keys");
            }
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> String {
        generate_line(&KeyId::parse(id).unwrap()).unwrap()
    }

    #[test]
    fn first_key_seals_and_all_open() {
        let text = format!("# rotated\n{}\n\n{}\n", line("new"), line("old"));
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(ring.sealing_key().0.as_bytes(), b"new");
        assert!(ring.opening_key(b"old").is_some());
        assert!(ring.opening_key(b"gone").is_none());
    }

    #[test]
    fn broken_rings_are_refused_without_echoing_keys() {
        let short = "k1 AAAA";
        let cases = [
            ("", "no keys"),
            ("k1", "line 1"),
            (short, "32 bytes"),
            ("bad/id AAAA", "key id"),
        ];
        for (text, expected) in cases {
            let err = KeyRing::parse(text).err().expect(text).to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("AAAA"));
        }
        let dup = format!("{}\n{}", line("k"), line("k"));
        assert!(matches!(
            KeyRing::parse(&dup),
            Err(KeyRingError::Duplicate(_))
        ));
    }

    #[test]
    fn each_ring_has_its_own_generation() {
        let text = line("k");
        let a = KeyRing::parse(&text).unwrap();
        let b = KeyRing::parse(&text).unwrap();
        assert_ne!(a.generation(), b.generation());
    }
}
