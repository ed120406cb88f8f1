//! API keys: a scope, a public id, and a secret token that is shown once and stored only
//! as its SHA-256 hash (the token has 160+ bits of entropy, so a fast hash is enough).

use crate::domain::ids::ApiKeyId;
use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key's token starts with this, so leaked keys are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "cf_";
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read (GET) everything except the audit stream.
    Read,
    /// Read the audit stream only (for SIEMs).
    Audit,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading ordinary resources.
    Read,
    /// Reading the audit stream.
    Audit,
    /// Changing anything.
    Write,
}

impl Scope {
    /// The stored and displayed form.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Read => "read",
            Scope::Audit => "audit",
        }
    }
    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Scope::Admin),
            "read" => Some(Scope::Read),
            "audit" => Some(Scope::Audit),
            _ => None,
        }
    }
    /// Whether a key of this scope may perform an operation needing `access`.
    pub fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Scope::Admin, _) | (Scope::Read, Access::Read) | (Scope::Audit, Access::Audit)
        )
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// Public id (`key_…`).
    pub id: ApiKeyId,
    /// A label chosen by whoever created it.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A freshly generated key: the only moment its token exists in clear.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key as it will be stored.
    pub key: ApiKey,
    /// The bearer token to hand to the user once: `cf_<id part>_<secret>`.
    pub token: String,
    /// Hex SHA-256 of `token`, the stored form.
    pub token_hash: String,
}

impl NewApiKey {
    /// Generates a key with a random secret.
    pub fn generate(name: &str, scope: Scope, now: DateTime<Utc>) -> Self {
        let id = ApiKeyId::generate();
        let mut rng = rand::rng();
        let secret: String = (0..SECRET_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        let id_part = id.as_str().trim_start_matches(ApiKeyId::PREFIX);
        let token = format!("{TOKEN_PREFIX}{id_part}_{secret}");
        Self {
            token_hash: hash_token(&token),
            key: ApiKey {
                id,
                name: name.to_owned(),
                scope,
                created_at: now,
            },
            token,
        }
    }
}

/// The id a token claims to belong to, if it has the shape of a CronFlow key.
pub fn key_id_of_token(token: &str) -> Option<ApiKeyId> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id_part, _secret) = rest.split_once('_')?;
    ApiKeyId::parse(&format!("{}{id_part}", ApiKeyId::PREFIX))
}

/// Hex SHA-256 of a token: the form in which tokens are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `stored_hash`, compared in constant time.
pub fn token_matches(token: &str, stored_hash: &str) -> bool {
    hash_token(token).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_names_its_key_and_matches_its_hash() {
        let k = NewApiKey::generate("ci", Scope::Read, Utc::now());
        assert_eq!(key_id_of_token(&k.token), Some(k.key.id.clone()));
        assert!(token_matches(&k.token, &k.token_hash));
        assert!(!token_matches(&format!("{}x", k.token), &k.token_hash));
    }

    #[test]
    fn scopes_allow_what_they_say() {
        assert!(Scope::Admin.allows(Access::Write));
        assert!(Scope::Read.allows(Access::Read));
        assert!(!Scope::Read.allows(Access::Write));
        assert!(!Scope::Read.allows(Access::Audit));
        assert!(Scope::Audit.allows(Access::Audit));
        assert!(!Scope::Audit.allows(Access::Read));
    }
}
