//! Encryption at rest of what the cluster stores in Redis that must stay secret (private keys,
//! ACME account keys, orders in progress): ChaCha20-Poly1305 (ring) with a random 96-bit nonce
//! per value and the Redis key name as associated data, so a value copied under another name
//! does not open. Text form: `v1:` + base64(nonce ‖ ciphertext ‖ tag).

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The cluster's data key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never goes to logs.
        f.write_str("Sealer(..)")
    }
}

const PREFIX: &str = "v1:";

impl Sealer {
    /// From exactly 32 key bytes.
    pub fn new(key: &[u8]) -> Result<Sealer, String> {
        if key.len() != 32 {
            return Err(format!("the key must be 32 bytes, not {}", key.len()));
        }
        let k = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "unusable key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(k),
            rng: SystemRandom::new(),
        })
    }

    /// Reads a key written as base64 (standard or URL alphabet) or 64 hex digits.
    pub fn parse(text: &str) -> Result<Sealer, String> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .map_err(|_| {
                    "not base64 or hex (make one with `head -c 32 /dev/urandom | base64`)"
                        .to_string()
                })?
        };
        Sealer::new(&bytes)
    }

    /// Encrypts `plain`, bound to `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "no randomness".to_string())?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Decrypts what `seal` wrote for the same `name`.
    pub fn open(&self, name: &str, text: &str) -> Result<Vec<u8>, String> {
        let b64 = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("{name}: not an encrypted value"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("{name}: {e}"))?;
        if raw.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(format!("{name}: truncated value"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| format!("{name}: nonce"))?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| {
                format!("{name}: cannot decrypt (another encryption key, or altered in Redis)")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_bound_to_name_and_key() {
        let s = Sealer::parse(&"ab".repeat(32)).expect("hex key");
        let v = s.seal("cong:cert:a", b"secret key").expect("seal");
        assert!(v.starts_with("v1:"));
        assert!(!v.contains("secret"));
        assert_eq!(s.open("cong:cert:a", &v).expect("open"), b"secret key");
        // Another name, another key, or a flipped byte: refused.
        assert!(s.open("cong:cert:b", &v).is_err());
        let other = Sealer::new(&[7u8; 32]).expect("key");
        assert!(other.open("cong:cert:a", &v).is_err());
        let mut bad = v.clone().into_bytes();
        let last = bad.len() - 3;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(s
            .open("cong:cert:a", &String::from_utf8(bad).unwrap())
            .is_err());
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(v, s.seal("cong:cert:a", b"secret key").expect("seal"));
        assert!(Sealer::parse("dG9vIHNob3J0").is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(Sealer::parse(&b64).is_ok());
    }
}
