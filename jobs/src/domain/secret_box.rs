//! Webhook signing secrets as the database holds them: sealed with a key the database
//! does not hold, so a copy of the database alone cannot sign.
//!
//! The cipher is XChaCha20-Poly1305 (an AEAD: a changed byte, another key or another
//! associated datum fails to open rather than yielding garbage), keyed with the 32
//! bytes of `CRONFLOW_SECRET_KEY`. Its 24-byte nonces are random, so sealing the same
//! secret twice gives two different texts and nonces need no bookkeeping.
//!
//! The stored form is text that says what it is: [`SEALED_PREFIX`] (`enc:v1:`) followed
//! by the base64 of nonce, ciphertext and tag. The associated datum is the webhook's id:
//! a sealed secret copied to another subscription's row does not open there. A future
//! scheme gets a new version (`enc:v2:`), and texts of the old one stay readable.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;

/// The start of every sealed secret (scheme and version); a stored secret without it is
/// one written before secrets were sealed.
pub const SEALED_PREFIX: &str = "enc:v1:";
/// Bytes of key the cipher takes.
pub const KEY_LEN: usize = 32;
/// Bytes of the random nonce before each ciphertext.
const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag after each ciphertext.
const TAG_LEN: usize = 16;

/// The key that seals and opens stored secrets. It never prints (`Debug` shows `***`),
/// and the cipher wipes it from memory when dropped.
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Why a text is not a key. The message never repeats the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    /// Neither 64 hex digits nor base64.
    #[error(
        "not a key: write 32 random bytes as base64 (e.g. the output of `openssl rand -base64 32`) or as 64 hex digits"
    )]
    Unreadable,
    /// Decoded, but not to 32 bytes.
    #[error(
        "{0} bytes where a key has 32: write 32 random bytes as base64 (e.g. the output of `openssl rand -base64 32`) or as 64 hex digits"
    )]
    WrongLength(usize),
}

/// Why a stored secret does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The text does not start with [`SEALED_PREFIX`] (not sealed, or another scheme).
    #[error("not a sealed secret")]
    NotSealed,
    /// The part after the prefix is not base64, or too short to hold a nonce and a tag.
    #[error("a malformed sealed secret")]
    Malformed,
    /// Authentication failed: another key, another webhook's row, or changed bytes.
    #[error("the sealed secret does not open with this key (another key, another row, or changed bytes)")]
    Rejected,
}

impl SecretKey {
    /// A key written as 64 hex digits or as base64 (standard or URL-safe alphabet,
    /// padded or not) of exactly 32 bytes. Blanks around it are ignored.
    pub fn parse(text: &str) -> Result<Self, SecretKeyError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| SecretKeyError::Unreadable)?
        } else {
            decode_base64(text).ok_or(SecretKeyError::Unreadable)?
        };
        if bytes.len() != KEY_LEN {
            return Err(SecretKeyError::WrongLength(bytes.len()));
        }
        XChaCha20Poly1305::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| SecretKeyError::WrongLength(bytes.len()))
    }

    /// A new random key, written in base64: the form [`SecretKey::parse`] reads (and a
    /// generated key file holds).
    pub fn generate_text() -> String {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// `plain` sealed for the row of `webhook_id`: `enc:v1:` + base64 of a fresh random
    /// nonce, the ciphertext and its tag.
    pub fn seal(&self, webhook_id: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: webhook_id.as_bytes(),
                },
            )
            // Fails only for a message of more than 256 GiB.
            .expect("a secret is far below the cipher's length limit");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// The secret that [`SecretKey::seal`] sealed into `stored` for `webhook_id`.
    pub fn open(&self, webhook_id: &str, stored: &str) -> Result<String, OpenError> {
        let encoded = stored.strip_prefix(SEALED_PREFIX).ok_or(OpenError::NotSealed)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let plain = self
            .0
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: webhook_id.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Rejected)?;
        // Sealed from a `&str`, and authenticated: not UTF-8 means not ours.
        String::from_utf8(plain).map_err(|_| OpenError::Rejected)
    }
}

/// Whether `stored` is in the sealed form (as opposed to a secret stored in clear by a
/// CronFlow older than sealing).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// Base64 in either alphabet, with or without padding.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "wh_01KB0000000000000000000001";
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn key() -> SecretKey {
        SecretKey::parse(&SecretKey::generate_text()).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_to_itself_and_does_not_contain_it() {
        let key = key();
        let sealed = key.seal(HOOK, SECRET);
        assert!(sealed.starts_with("enc:v1:") && is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains(SECRET) && !sealed.contains("C2FVsBQIhrsc"));
        assert_eq!(key.open(HOOK, &sealed).unwrap(), SECRET);
        assert_ne!(key.seal(HOOK, SECRET), sealed, "a fresh nonce each time");
    }

    #[test]
    fn another_key_does_not_open_it() {
        let sealed = key().seal(HOOK, SECRET);
        assert_eq!(key().open(HOOK, &sealed), Err(OpenError::Rejected));
    }

    #[test]
    fn another_webhook_id_does_not_open_it() {
        let key = key();
        let sealed = key.seal(HOOK, SECRET);
        assert_eq!(
            key.open("wh_01KB0000000000000000000002", &sealed),
            Err(OpenError::Rejected)
        );
    }

    #[test]
    fn any_changed_byte_makes_it_fail_to_open() {
        let key = key();
        let sealed = key.seal(HOOK, SECRET);
        let bytes = STANDARD.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0x01;
            let text = format!("{SEALED_PREFIX}{}", STANDARD.encode(&changed));
            assert_eq!(key.open(HOOK, &text), Err(OpenError::Rejected), "byte {i}");
        }
        let truncated = format!("{SEALED_PREFIX}{}", STANDARD.encode(&bytes[..bytes.len() - 1]));
        assert_eq!(key.open(HOOK, &truncated), Err(OpenError::Rejected));
    }

    #[test]
    fn texts_that_are_not_sealed_secrets_are_told_apart() {
        let key = key();
        assert_eq!(key.open(HOOK, SECRET), Err(OpenError::NotSealed));
        assert_eq!(key.open(HOOK, "enc:v2:AAAA"), Err(OpenError::NotSealed));
        assert_eq!(key.open(HOOK, "enc:v1:not base64!"), Err(OpenError::Malformed));
        assert_eq!(key.open(HOOK, "enc:v1:AAAA"), Err(OpenError::Malformed));
        assert!(!is_sealed(SECRET));
    }

    #[test]
    fn keys_are_read_from_base64_or_hex_of_32_bytes() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let by_hex = SecretKey::parse(&hex::encode(&bytes)).unwrap();
        let by_base64 = SecretKey::parse(&format!(" {}\n", STANDARD.encode(&bytes))).unwrap();
        let by_url_safe =
            SecretKey::parse(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)).unwrap();
        let sealed = by_hex.seal(HOOK, SECRET);
        assert_eq!(by_base64.open(HOOK, &sealed).unwrap(), SECRET);
        assert_eq!(by_url_safe.open(HOOK, &sealed).unwrap(), SECRET);
        assert_eq!(SecretKey::generate_text().len(), 44);
    }

    #[test]
    fn a_bad_key_is_refused_without_being_repeated() {
        let short = STANDARD.encode([7u8; 16]);
        let e = SecretKey::parse(&short).unwrap_err();
        assert_eq!(e, SecretKeyError::WrongLength(16));
        assert!(!e.to_string().contains(&short), "{e}");
        assert_eq!(
            SecretKey::parse("hunter2!").unwrap_err(),
            SecretKeyError::Unreadable
        );
        assert!(SecretKey::parse("").is_err());
        assert!(SecretKey::parse(&"g".repeat(64)).is_err());
        assert_eq!(format!("{:?}", key()), "SecretKey(***)");
    }
}
