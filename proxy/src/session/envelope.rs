//! The sealed cookie envelope. Knows bytes and keys, nothing of HTTP.
//!
//! Layout before base64url (no padding):
//!
//! ```text
//! version (1) | key id length (1) | key id | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! The associated data is `version | key id length | key id | cookie name`, so a value cut
//! from one cookie does not open under another name, and the header cannot be edited.
//! Every failure is the same opaque [`Unsealed::Invalid`]: no oracle for an attacker.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::keyring::KeyRing;

/// The only envelope version so far.
pub const VERSION: u8 = 1;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Longest cookie value we try to open; browsers cap a cookie near 4 KiB anyway.
pub const MAX_SEALED_CHARS: usize = 8 * 1024;
const MAX_DECODED: usize = MAX_SEALED_CHARS / 4 * 3;
/// Room for the associated data: header plus the longest cookie name we accept.
const MAX_AAD: usize = 2 + 32 + 128;

/// A value that did not open. Deliberately says nothing about why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error("not a valid sealed value")]
    Invalid,
}

/// Seals `plaintext` with the ring's sealing key, bound to `cookie_name`.
pub fn seal(ring: &KeyRing, cookie_name: &str, plaintext: &[u8]) -> String {
    let (id, cipher) = ring.sealing_key();
    let id = id.as_bytes();
    let mut nonce = [0u8; NONCE_BYTES];
    // A random 96-bit nonce per seal. The thread-local CSPRNG (ChaCha, seeded and reseeded from
    // the OS) saves a system call per seal; 2^32 seals per key stay far from a collision.
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);

    let mut out = Vec::with_capacity(2 + id.len() + NONCE_BYTES + plaintext.len() + TAG_BYTES);
    out.push(VERSION);
    out.push(id.len() as u8); // KeyId is at most 32 bytes.
    out.extend_from_slice(id);
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);

    let mut aad = [0u8; MAX_AAD];
    let aad = associated_data(&mut aad, &out[..2 + id.len()], cookie_name);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[body_start..])
        // Invariant: AES-GCM only refuses messages over 64 GiB.
        .expect("AES-GCM seals any cookie-sized message");
    out.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(out)
}

/// Opens a sealed value into `scratch`, returning the plaintext slice.
/// `scratch` must hold at least [`MAX_DECODED`] bytes; [`open`] provides one on the stack.
fn open_into<'a>(
    ring: &KeyRing,
    cookie_name: &str,
    sealed: &str,
    scratch: &'a mut [u8],
) -> Result<&'a [u8], Unsealed> {
    if sealed.len() > MAX_SEALED_CHARS {
        return Err(Unsealed::Invalid);
    }
    let len = URL_SAFE_NO_PAD
        .decode_slice(sealed, scratch)
        .map_err(|_| Unsealed::Invalid)?;
    let bytes = &mut scratch[..len];
    let [version, id_len, rest @ ..] = bytes else {
        return Err(Unsealed::Invalid);
    };
    let id_len = *id_len as usize;
    if *version != VERSION || rest.len() < id_len + NONCE_BYTES + TAG_BYTES {
        return Err(Unsealed::Invalid);
    }
    let header_len = 2 + id_len;
    let (header, rest) = bytes.split_at_mut(header_len);
    let (nonce, rest) = rest.split_at_mut(NONCE_BYTES);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);

    let cipher = ring.opening_key(&header[2..]).ok_or(Unsealed::Invalid)?;
    let mut aad = [0u8; MAX_AAD];
    let aad = associated_data(&mut aad, header, cookie_name);
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, body, Tag::from_slice(tag))
        .map_err(|_| Unsealed::Invalid)?;
    Ok(body)
}

/// Opens a sealed value and hands the plaintext to `read`, without allocating.
pub fn open<T>(
    ring: &KeyRing,
    cookie_name: &str,
    sealed: &str,
    read: impl FnOnce(&[u8]) -> Result<T, Unsealed>,
) -> Result<T, Unsealed> {
    let mut scratch = [0u8; MAX_DECODED];
    read(open_into(ring, cookie_name, sealed, &mut scratch)?)
}

fn associated_data<'a>(buf: &'a mut [u8; MAX_AAD], header: &[u8], cookie_name: &str) -> &'a [u8] {
    let name = cookie_name.as_bytes();
    let name = &name[..name.len().min(MAX_AAD - header.len())];
    buf[..header.len()].copy_from_slice(header);
    buf[header.len()..header.len() + name.len()].copy_from_slice(name);
    &buf[..header.len() + name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::keyring::{KeyId, generate_line};

    fn ring(ids: &[&str]) -> KeyRing {
        let lines: Vec<String> = ids
            .iter()
            .map(|id| generate_line(&KeyId::parse(id).unwrap()).unwrap())
            .collect();
        KeyRing::parse(&lines.join("\n")).unwrap()
    }

    fn open_vec(ring: &KeyRing, name: &str, sealed: &str) -> Result<Vec<u8>, Unsealed> {
        open(ring, name, sealed, |p| Ok(p.to_vec()))
    }

    #[test]
    fn seals_and_opens() {
        let r = ring(&["k1"]);
        let sealed = seal(&r, "c", b"hello");
        assert_eq!(open_vec(&r, "c", &sealed).unwrap(), b"hello");
        assert_ne!(seal(&r, "c", b"hello"), sealed, "fresh nonce per seal");
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let r = ring(&["k1"]);
        let mut raw = URL_SAFE_NO_PAD
            .decode(seal(&r, "c", b"some session payload"))
            .unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x01;
            assert_eq!(
                open_vec(&r, "c", &URL_SAFE_NO_PAD.encode(&raw)),
                Err(Unsealed::Invalid),
                "byte {i}"
            );
            raw[i] ^= 0x01;
        }
        for cut in 0..raw.len() {
            assert_eq!(
                open_vec(&r, "c", &URL_SAFE_NO_PAD.encode(&raw[..cut])),
                Err(Unsealed::Invalid)
            );
        }
    }

    #[test]
    fn wrong_name_key_or_version_is_refused() {
        let r = ring(&["k1"]);
        let sealed = seal(&r, "c", b"x");
        assert_eq!(open_vec(&r, "other", &sealed), Err(Unsealed::Invalid));
        assert_eq!(
            open_vec(&ring(&["k1"]), "c", &sealed),
            Err(Unsealed::Invalid),
            "same id, other key"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        raw[0] = 2;
        assert_eq!(
            open_vec(&r, "c", &URL_SAFE_NO_PAD.encode(&raw)),
            Err(Unsealed::Invalid)
        );
    }

    #[test]
    fn garbage_and_huge_values_are_refused() {
        let r = ring(&["k1"]);
        for junk in [
            "",
            "=",
            "!!!!",
            "AAAA",
            &"A".repeat(MAX_SEALED_CHARS),
            &"A".repeat(MAX_SEALED_CHARS + 1),
        ] {
            assert_eq!(open_vec(&r, "c", junk), Err(Unsealed::Invalid));
        }
    }
}
