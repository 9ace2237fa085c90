//! A bounded cache of recently opened cookies, so a browser's next request with the same
//! cookie skips base64, AES-GCM and decoding.
//!
//! Why a hit cannot be forged: the key is the whole cookie value, compared byte for byte.
//! Hashing only picks the bucket, and hashes just the value's tail — the AES-GCM tag, random
//! per cookie — so a lookup costs a short hash plus one comparison. To hit, a client must
//! present exactly a value that opened before, which is what holding the cookie means anyway.
//! Only values that opened are ever inserted, so crafted values cannot crowd a bucket.
//! Entries remember the key-ring generation and the session expiry, so a removed key or an
//! expired session is never served from here.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, Equivalent, Weighter};

/// Bytes of the value's end that are hashed: the base64 of the 16-byte tag and a little more.
const HASHED_TAIL: usize = 24;

fn hash_tail<H: Hasher>(value: &str, state: &mut H) {
    let bytes = value.as_bytes();
    bytes[bytes.len().saturating_sub(HASHED_TAIL)..].hash(state);
}

/// A stored cookie value: equal by the whole value, hashed by its tail.
#[derive(PartialEq, Eq)]
struct CookieKey(Box<str>);

impl Hash for CookieKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(&self.0, state);
    }
}

/// A borrowed value to look up, hashed and compared the same way as [`CookieKey`].
struct Lookup<'a>(&'a str);

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(self.0, state);
    }
}

impl Equivalent<CookieKey> for Lookup<'_> {
    fn equivalent(&self, key: &CookieKey) -> bool {
        *key.0 == *self.0
    }
}

struct Entry<V> {
    expires_at: u64,
    generation: u64,
    value: Arc<V>,
}

// Manual: cloning shares the Arc, so `V` itself need not be Clone.
impl<V> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Self {
            expires_at: self.expires_at,
            generation: self.generation,
            value: self.value.clone(),
        }
    }
}

/// Charges each entry for its cookie bytes plus a fixed allowance for the value.
#[derive(Clone)]
struct ByCookieLength;

const ENTRY_OVERHEAD: u64 = 256;

impl<V> Weighter<CookieKey, Entry<V>> for ByCookieLength {
    fn weight(&self, key: &CookieKey, _: &Entry<V>) -> u64 {
        key.0.len() as u64 + ENTRY_OVERHEAD
    }
}

type CookieCache<V> = Cache<
    CookieKey,
    Entry<V>,
    ByCookieLength,
    DefaultHashBuilder,
    DefaultLifecycle<CookieKey, Entry<V>>,
>;

/// Recently validated cookie values and what they opened to.
pub struct ValidatedCookies<V> {
    cache: Option<CookieCache<V>>,
}

impl<V> ValidatedCookies<V> {
    /// A cache holding about `max_bytes` of entries; `0` disables it.
    pub fn new(max_bytes: u64) -> Self {
        let cache = (max_bytes > 0).then(|| {
            let estimated = (max_bytes / (ENTRY_OVERHEAD + 300)).max(16) as usize;
            Cache::with(
                estimated,
                max_bytes,
                ByCookieLength,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        Self { cache }
    }

    /// The value `cookie` opened to, if it is cached, unexpired at `now`, and was opened
    /// under the key ring of `generation`.
    pub fn get(&self, cookie: &str, now: u64, generation: u64) -> Option<Arc<V>> {
        let entry = self.cache.as_ref()?.get(&Lookup(cookie))?;
        (entry.generation == generation && now < entry.expires_at).then_some(entry.value)
    }

    /// Remembers that `cookie` opened, under ring `generation`, to `value` valid until `expires_at`.
    pub fn insert(&self, cookie: &str, generation: u64, expires_at: u64, value: Arc<V>) {
        if let Some(cache) = &self.cache {
            cache.insert(
                CookieKey(cookie.into()),
                Entry {
                    expires_at,
                    generation,
                    value,
                },
            );
        }
    }

    /// Entries held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_exact_value_generation_and_time() {
        let cache = ValidatedCookies::new(64 * 1024);
        cache.insert("abc", 7, 100, Arc::new("alice"));
        assert_eq!(cache.get("abc", 99, 7).as_deref(), Some(&"alice"));
        assert!(cache.get("abd", 99, 7).is_none(), "another value");
        assert!(cache.get("ab", 99, 7).is_none(), "a prefix");
        assert!(cache.get("abc", 99, 8).is_none(), "after a key ring change");
        let long = format!("{}{}", "x".repeat(300), "tail-of-the-value-0123456789");
        cache.insert(&long, 7, 100, Arc::new("bob"));
        let same_tail = format!("{}{}", "y".repeat(300), "tail-of-the-value-0123456789");
        assert!(
            cache.get(&same_tail, 99, 7).is_none(),
            "same tail, other value"
        );
        assert_eq!(cache.get(&long, 99, 7).as_deref(), Some(&"bob"));
        assert!(cache.get("abc", 100, 7).is_none(), "after expiry");
    }

    #[test]
    fn memory_stays_bounded() {
        let cache = ValidatedCookies::new(64 * 1024);
        for i in 0..10_000 {
            cache.insert(&format!("{i:0>300}"), 1, u64::MAX, Arc::new(i));
        }
        let max_entries = 64 * 1024 / (300 + ENTRY_OVERHEAD as usize);
        assert!(cache.len() <= max_entries + 1, "{} entries", cache.len());
        assert!(cache.len() > max_entries / 2, "{} entries", cache.len());
    }

    #[test]
    fn zero_bytes_disables_the_cache() {
        let cache = ValidatedCookies::new(0);
        cache.insert("abc", 1, u64::MAX, Arc::new(1));
        assert!(cache.get("abc", 0, 1).is_none());
    }
}
