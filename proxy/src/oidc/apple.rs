//! Sign in with Apple's client secret: not a fixed string but an ES256-signed JWT made from the
//! developer's `.p8` key, valid for at most six months. We sign a short-lived one per token
//! request, so no long-lived secret exists anywhere.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;

use crate::config::OidcProvider;

const APPLE_AUDIENCE: &str = "https://appleid.apple.com";
/// Lifetime of each client secret we sign.
const SECRET_LIFETIME_SECS: u64 = 300;

fn signing_key(config: &OidcProvider) -> Result<SigningKey, String> {
    let path = config
        .apple_private_key_file
        .as_ref()
        .ok_or("apple_private_key_file is not set")?;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("apple_private_key_file {}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
        format!(
            "apple_private_key_file {}: not a P-256 PKCS#8 key",
            path.display()
        )
    })
}

/// Fails at startup when the key is missing or unreadable.
pub fn check_key(config: &OidcProvider) -> Result<(), String> {
    signing_key(config).map(|_| ())
}

/// A client secret JWT for Apple's token endpoint, issued at `now`.
pub fn client_secret(config: &OidcProvider, now: u64) -> Result<String, String> {
    let key = signing_key(config)?;
    let header = serde_json::json!({ "alg": "ES256", "kid": config.apple_key_id });
    let claims = serde_json::json!({
        "iss": config.apple_team_id,
        "iat": now,
        "exp": now + SECRET_LIFETIME_SECS,
        "aud": APPLE_AUDIENCE,
        "sub": config.client_id,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    #[test]
    fn the_secret_is_a_verifiable_es256_jwt() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AuthKey.p8");
        std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let toml = format!(
            "name = \"apple\"\nkind = \"apple\"\nissuer = \"https://appleid.apple.com\"\nclient_id = \"com.example.web\"\n\
             apple_team_id = \"TEAM123\"\napple_key_id = \"KEY456\"\napple_private_key_file = \"{}\"\n",
            path.display()
        );
        let config: OidcProvider = toml::from_str(&toml).unwrap();
        let jwt = client_secret(&config, 1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "TEAM123");
        assert_eq!(claims["sub"], "com.example.web");
        assert_eq!(claims["aud"], APPLE_AUDIENCE);
        assert_eq!(claims["exp"], 1_800_000_000u64 + SECRET_LIFETIME_SECS);
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let verifying = VerifyingKey::from(&key);
        assert!(
            verifying
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .is_ok()
        );
    }
}
