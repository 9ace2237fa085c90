//! The cookie key ring as the operator keeps it: the text the proxy reads from its mounted
//! Secret (`KEY_ID BASE64URL_32_BYTES` per line, the first line seals, every line opens),
//! plus the rules for rotating and pruning it.
//!
//! Key ids are `k` and the Unix second the key was made (`k1733250000`), so the ring itself
//! records when each key started sealing, and pruning needs no other bookkeeping. A key stops
//! sealing when the next one is prepended; cookies it sealed live at most one session lifetime
//! after that, so it is dropped once that lifetime has passed. Time is passed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes per key (AES-256).
pub const KEY_BYTES: usize = 32;

/// Why a key ring text was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("the key ring has no keys")]
    Empty,
    #[error("line {0} is not `KEY_ID BASE64URL_KEY` with a valid id and a 32-byte key")]
    Malformed(usize),
    #[error("key id on line {0} appears twice")]
    Duplicate(usize),
}

/// One key: its id and its base64url text (kept as text: the operator never uses keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    encoded: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    /// A new key made at `now_secs` from 32 random bytes.
    pub fn new(now_secs: i64, bytes: [u8; KEY_BYTES]) -> Self {
        Self {
            id: format!("k{now_secs}"),
            encoded: URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    /// A new key from the operating system's randomness.
    pub fn generate(now_secs: i64) -> Result<Self, String> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Self::new(now_secs, bytes))
    }

    /// The Unix second this key started sealing, when its id says so.
    pub fn created_secs(&self) -> Option<i64> {
        let digits = self.id.strip_prefix('k')?;
        let digits = digits.split_once('-').map_or(digits, |(d, _)| d);
        digits.parse().ok()
    }
}

/// Keys, newest (sealing) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(key: Key) -> Self {
        Self { keys: vec![key] }
    }

    /// Parses the proxy's format: blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(encoded), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(KeyRingError::Malformed(n + 1));
            };
            let id_ok = (1..=32).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            let key_ok = URL_SAFE_NO_PAD
                .decode(encoded)
                .is_ok_and(|k| k.len() == KEY_BYTES);
            if !id_ok || !key_ok {
                return Err(KeyRingError::Malformed(n + 1));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyRingError::Duplicate(n + 1));
            }
            keys.push(Key {
                id: id.to_owned(),
                encoded: encoded.to_owned(),
            });
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(Self { keys })
    }

    /// The text the proxy reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for key in &self.keys {
            out.push_str(&key.id);
            out.push(' ');
            out.push_str(&key.encoded);
            out.push('\n');
        }
        out
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Puts `key` first: it seals from now on, every older key still opens. An id clash
    /// (two rotations in one second) gets a `-N` suffix.
    pub fn rotate(&mut self, mut key: Key) {
        let base = key.id.clone();
        let mut n = 2;
        while self.keys.iter().any(|k| k.id == key.id) {
            key.id = format!("{base}-{n}");
            n += 1;
        }
        self.keys.insert(0, key);
    }

    /// Drops keys whose sealing ended more than `lifetime_secs` before `now_secs`. Returns
    /// how many were dropped. The sealing key is never dropped, and a key is kept when its
    /// successor's age is unknown (an id not made by us).
    pub fn prune(&mut self, now_secs: i64, lifetime_secs: i64) -> usize {
        let before = self.keys.len();
        let retire_at: Vec<Option<i64>> = self.retirements(lifetime_secs);
        let mut index = 0;
        self.keys.retain(|_| {
            let keep = retire_at[index].is_none_or(|at| now_secs < at);
            index += 1;
            keep
        });
        before - self.keys.len()
    }

    /// The next Unix second at which [`prune`](Self::prune) would drop a key, if any.
    pub fn next_prune_at(&self, lifetime_secs: i64) -> Option<i64> {
        self.retirements(lifetime_secs).into_iter().flatten().min()
    }

    /// For each key, when it may be dropped: one lifetime after its successor was made.
    fn retirements(&self, lifetime_secs: i64) -> Vec<Option<i64>> {
        let mut out = vec![None];
        for pair in self.keys.windows(2) {
            out.push(pair[0].created_secs().map(|s| s + lifetime_secs));
        }
        out.truncate(self.keys.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn key(secs: i64, fill: u8) -> Key {
        Key::new(secs, [fill; KEY_BYTES])
    }

    #[test]
    fn renders_what_it_parses() {
        let mut ring = KeyRing::single(key(1000, 1));
        ring.rotate(key(2000, 2));
        let text = ring.render();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("k2000 "));
        assert_eq!(KeyRing::parse(&text).unwrap(), ring);
    }

    #[test]
    fn refuses_broken_rings_without_echoing_keys() {
        assert_eq!(KeyRing::parse("# only\n"), Err(KeyRingError::Empty));
        assert_eq!(
            KeyRing::parse("k1 short\n"),
            Err(KeyRingError::Malformed(1))
        );
        let one = key(1, 1).encoded;
        assert_eq!(
            KeyRing::parse(&format!("a {one}\na {one}\n")),
            Err(KeyRingError::Duplicate(2))
        );
        assert_eq!(
            KeyRing::parse(&format!("bad/id {one}\n")),
            Err(KeyRingError::Malformed(1))
        );
    }

    #[test]
    fn rotation_in_the_same_second_gets_a_distinct_id() {
        let mut ring = KeyRing::single(key(5, 1));
        ring.rotate(key(5, 2));
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k5-2", "k5"]);
        assert_eq!(ring.keys[0].created_secs(), Some(5));
    }

    #[test]
    fn old_keys_live_one_session_lifetime_after_their_successor() {
        let lifetime = 24 * HOUR;
        let mut ring = KeyRing::single(key(0, 1));
        ring.rotate(key(10 * HOUR, 2));
        assert_eq!(ring.next_prune_at(lifetime), Some(34 * HOUR));
        assert_eq!(ring.prune(34 * HOUR - 1, lifetime), 0);
        assert_eq!(ring.prune(34 * HOUR, lifetime), 1);
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k36000"]);
        // The sealing key is never pruned, however old.
        assert_eq!(ring.prune(1000 * HOUR, lifetime), 0);
        assert_eq!(ring.next_prune_at(lifetime), None);
    }

    #[test]
    fn keys_after_a_foreign_successor_are_kept() {
        let one = key(1, 1).encoded;
        let mut ring = KeyRing::parse(&format!("mine {one}\nk1 {one}\n")).unwrap();
        assert_eq!(ring.prune(i64::MAX / 2, HOUR), 0);
    }

    #[test]
    fn generated_keys_differ() {
        let a = Key::generate(1).unwrap();
        let b = Key::generate(1).unwrap();
        assert_ne!(a.encoded, b.encoded);
        assert!(KeyRing::parse(&KeyRing::single(a).render()).is_ok());
    }
}
